//! Durable state: the Store, the only writer of the database in the state directory.
//!
//! The Store is an actor in the plain sense: one thread owning the database
//! connection, with a mailbox (a channel) of [`Command`]s. It is a thread of its own
//! rather than an actix `SyncArbiter` actor because it commits in groups: it takes
//! whatever is queued (up to [`MAX_BATCH`] records) and writes it in one transaction,
//! which a `SyncArbiter` handler, seeing one message at a time, cannot do. Senders
//! never wait for the disk: the gateway and the sessions send [`Record`]s through a
//! [`Journal`] (a channel send), and only operator-driven changes (the pairing book)
//! and shutdown's [`Store::flush`] wait for their commit.
//!
//! Backends implement [`Backend`]: [`sqlite::Sqlite`] is the embedded default; a
//! second database is a second implementation of the same trait, driven by the same
//! writer. [`recovery`] turns what a start finds ([`Durable`]) into what to do, as a
//! pure function.

pub mod records;
pub mod recovery;
pub mod sqlite;

use std::future::Future;
use std::path::Path;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::keys::SessionKey;
use crate::model::Message;
pub use records::*;

/// The database file inside the state directory.
pub const DB_FILE: &str = "hivegate.sqlite3";
/// How long a write waits for another holder of the database's write lock.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// The most records committed in one transaction.
pub const MAX_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot open the state database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("the state database {path} has schema version {found}, newer than this hivegate understands ({}); upgrade hivegate", sqlite::SCHEMA_VERSION)]
    TooNew { path: String, found: i64 },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot encode state: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the state database holds something this hivegate cannot read ({0}); restore a backup or move the state directory away")]
    Corrupt(String),
    #[error("the store is closed")]
    Closed,
}

/// What a durable state database does; the writer thread drives one.
pub trait Backend: Send + 'static {
    /// Write a batch of records in one transaction: all of it or none of it.
    fn apply(&mut self, batch: &[Record]) -> Result<(), StoreError>;
    /// Replace the named snapshot.
    fn save_snapshot(&mut self, name: &str, version: u32, json: &str) -> Result<(), StoreError>;
    /// A named snapshot: `(version, json)`.
    fn load_snapshot(&self, name: &str) -> Result<Option<(u32, String)>, StoreError>;
    /// What a start needs: running runs with their transcripts and tool results, the
    /// undelivered announcements, and up to `recent` more sessions for history.
    fn load(&self, recent: usize) -> Result<Durable, StoreError>;
    /// A session's whole transcript.
    fn transcript(&self, key: &SessionKey) -> Result<Vec<Message>, StoreError>;
}

pub use crate::hub::now_ms;

enum Command {
    Record(Record),
    Snapshot { name: &'static str, version: u32, json: String, done: oneshot::Sender<Result<(), StoreError>> },
    Transcript { key: SessionKey, done: oneshot::Sender<Result<Vec<Message>, StoreError>> },
    Flush(oneshot::Sender<()>),
}

/// Where records go: a cheap clone held by the gateway and every session.
#[derive(Clone)]
pub struct Journal(mpsc::Sender<Command>);

impl Journal {
    /// Queue a fact; it is committed with whatever else is queued. Never blocks.
    pub fn record(&self, record: Record) {
        // A closed store means the process is stopping; nothing can be written then.
        let _ = self.0.send(Command::Record(record));
    }

    /// A journal whose records go nowhere (unit tests of actors that need one).
    pub fn discard() -> Journal {
        let (tx, _) = mpsc::channel();
        Journal(tx)
    }
}

/// The handle to the writer thread.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
}

impl Store {
    /// Start the writer thread on `backend`.
    pub fn start(backend: impl Backend, path: String) -> std::io::Result<Store> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("hivegate-store".into()).spawn(move || write_loop(backend, rx, &path))?;
        Ok(Store { tx })
    }

    pub fn journal(&self) -> Journal {
        Journal(self.tx.clone())
    }

    /// Replace the snapshot `name`; resolves once it is committed.
    pub fn save_snapshot(
        &self,
        name: &'static str,
        version: u32,
        json: String,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let (done, answer) = oneshot::channel();
        let sent = self.tx.send(Command::Snapshot { name, version, json, done });
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// A session's transcript as committed (everything queued before is included).
    pub fn transcript(&self, key: SessionKey) -> impl Future<Output = Result<Vec<Message>, StoreError>> + 'static {
        let (done, answer) = oneshot::channel();
        let sent = self.tx.send(Command::Transcript { key, done });
        async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Resolves once everything queued before it is committed.
    pub fn flush(&self) -> impl Future<Output = ()> + 'static {
        let (done, answer) = oneshot::channel();
        let sent = self.tx.send(Command::Flush(done)).is_ok();
        async move {
            if sent {
                let _ = answer.await;
            }
        }
    }
}

/// The writer: take what is queued, commit records in groups, answer the rest in order.
fn write_loop(mut backend: impl Backend, rx: mpsc::Receiver<Command>, path: &str) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(record) => batch.push(record),
                other => {
                    commit(&mut backend, &mut batch, path);
                    answer(&mut backend, other, path);
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut backend, &mut batch, path);
    }
}

fn commit(backend: &mut impl Backend, batch: &mut Vec<Record>, path: &str) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = backend.apply(batch) {
        // Said loudly: these facts are not durable, and a crash now would lose them.
        tracing::error!(path, error = %e, records = batch.len(), "state write failed; these runs are not durable");
    }
    batch.clear();
}

fn answer(backend: &mut impl Backend, command: Command, path: &str) {
    match command {
        Command::Record(_) => {}
        Command::Snapshot { name, version, json, done } => {
            let result = backend.save_snapshot(name, version, &json);
            if let Err(e) = &result {
                tracing::error!(path, error = %e, "state write failed");
            }
            let _ = done.send(result);
        }
        Command::Transcript { key, done } => {
            let _ = done.send(backend.transcript(&key));
        }
        Command::Flush(done) => {
            let _ = done.send(());
        }
    }
}

/// Open the embedded database in `state_dir`.
pub fn open(state_dir: &Path) -> Result<sqlite::Sqlite, StoreError> {
    sqlite::Sqlite::open(state_dir)
}

#[cfg(test)]
mod tests;
