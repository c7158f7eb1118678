//! Durable state: the Store, the only writer of the database in the state directory.
//!
//! The Store is an actor in the plain sense: one thread owning the database
//! connection, with a mailbox of commands. It is a thread of its own rather than an
//! actix `SyncArbiter` actor because it commits in groups: it takes whatever is queued
//! (up to [`MAX_BATCH`] records at a time) and writes it in one transaction, which a
//! `SyncArbiter` handler, seeing one message at a time, cannot do. Senders never wait
//! for the disk: the gateway and the sessions queue [`Record`]s through a [`Journal`]
//! (a lock and a push; the writer is woken once per group, not per record), and only
//! operator-driven changes (the pairing book), transcript reads and shutdown's
//! [`Store::flush`] wait for an answer.
//!
//! Backends implement [`Backend`]: [`sqlite::Sqlite`] is the embedded default, one
//! file in the state directory; [`postgres::Postgres`] holds the same tables in a
//! Postgres database that several processes (and machines) can share, chosen with a
//! database URL ([`open`]). Both are driven by the same writer, and share how rows
//! become domain values ([`columns`]). [`recovery`] turns what a start finds
//! ([`Durable`]) into what to do, as a pure function.

mod columns;
pub mod database_url;
pub mod postgres;
pub mod records;
pub mod recovery;
pub mod sqlite;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::keys::SessionKey;
use crate::model::Message;
pub use database_url::{redact, DatabaseUrl};
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
    #[error("the state database {path} has schema version {found}, newer than this hivegate understands ({known}); upgrade hivegate")]
    TooNew { path: String, found: i64, known: i64 },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("invalid database URL {url}: {why}")]
    DatabaseUrl { url: String, why: String },
    #[error("the database URL {url} asks for TLS (sslmode={mode}), which hivegate does not support yet for Postgres; \
             connect over a trusted network or a local socket with sslmode=disable, or through a TLS tunnel beside hivegate")]
    TlsUnsupported { url: String, mode: String },
    /// Opening a connection failed (at start, or again after a lost one). `message` is
    /// what the driver said (with its causes), without the password. The driver's
    /// errors here are not `source`s: their causes are in the message already, and
    /// would be said twice by a printer of causes.
    #[error("cannot connect to the state database {url}: {message}")]
    Connect { url: String, message: String, error: ::postgres::Error },
    #[error("state database error: {}", postgres::describe(.0))]
    Postgres(::postgres::Error),
    #[error("cannot migrate the state database {url} to schema version {version} ({name}): {message}")]
    Migration { url: String, version: i64, name: &'static str, message: String },
    #[error("cannot encode state: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the state database holds something this hivegate cannot read ({0}); restore a backup or move the state directory away")]
    Corrupt(String),
    #[error("the store is closed")]
    Closed,
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> StoreError {
        StoreError::Postgres(e)
    }
}

impl StoreError {
    /// A failure that may pass: the database is busy or locked by another process, the
    /// disk is full, or an I/O error; for Postgres, also a lost or refused connection,
    /// a server shutting down or out of resources, a serialization failure or deadlock
    /// ([`postgres::is_transient`]).
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen)
            }
            // Whatever keeps a connection from being made is about the server or the
            // network, never the records: they wait.
            StoreError::Connect { .. } => true,
            StoreError::Postgres(e) => postgres::is_transient(e),
            _ => false,
        }
    }
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
    /// Count this start against every run left running and every result not yet
    /// delivered, before any of them is touched: a start that crashes is counted too.
    fn count_start(&mut self) -> Result<(), StoreError>;
    /// Forget sessions that are not running (ended, and idle ones too) beyond the newest
    /// `keep`, with their transcripts, and results delivered or given up on whose
    /// parent is no longer kept.
    fn prune(&mut self, keep: usize) -> Result<(), StoreError>;
}

/// The writer drives a boxed backend as it drives a concrete one: one virtual call per
/// batch.
impl Backend for Box<dyn Backend> {
    fn apply(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        (**self).apply(batch)
    }
    fn save_snapshot(&mut self, name: &str, version: u32, json: &str) -> Result<(), StoreError> {
        (**self).save_snapshot(name, version, json)
    }
    fn load_snapshot(&self, name: &str) -> Result<Option<(u32, String)>, StoreError> {
        (**self).load_snapshot(name)
    }
    fn load(&self, recent: usize) -> Result<Durable, StoreError> {
        (**self).load(recent)
    }
    fn transcript(&self, key: &SessionKey) -> Result<Vec<Message>, StoreError> {
        (**self).transcript(key)
    }
    fn count_start(&mut self) -> Result<(), StoreError> {
        (**self).count_start()
    }
    fn prune(&mut self, keep: usize) -> Result<(), StoreError> {
        (**self).prune(keep)
    }
}

pub use crate::hub::now_ms;

enum Command {
    Record(Record),
    /// Boxed: a queue slot is as large as the largest command.
    Snapshot(Box<(&'static str, u32, String)>, oneshot::Sender<Result<(), StoreError>>),
    Transcript {
        key: SessionKey,
        done: oneshot::Sender<Result<Vec<Message>, StoreError>>,
    },
    Flush(oneshot::Sender<()>),
}

/// The writer's mailbox: a locked list and a condition variable, not a channel. A
/// channel wakes its sleeping receiver on every send (a system call on the sender's
/// thread); here only the first record after the writer went to sleep wakes it, and
/// the writer then waits [`GROUP_WINDOW`] to gather the rest, so a spawn costs an
/// uncontended lock and a push.
struct Mailbox {
    state: Mutex<Queued>,
    wake: Condvar,
}

#[derive(Default)]
struct Queued {
    items: Vec<Command>,
    /// The writer waits for something to do; the next item must wake it.
    sleeping: bool,
    /// Something waits for an answer: no gathering.
    urgent: bool,
    /// Every [`Store`] handle is gone: write what is left and stop.
    closed: bool,
}

/// The writer commits once records stop arriving for this long...
pub const GROUP_WINDOW: Duration = Duration::from_millis(2);
/// ... or once the oldest queued record has waited this long. A burst of spawns is
/// written after it (or every `MAX_LAG` during a long one), not while it runs: the
/// writer's work competes with the spawning thread for the machine.
pub const MAX_LAG: Duration = Duration::from_millis(100);

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, command: Command, urgent: bool) {
        let mut queued = self.lock();
        if queued.closed {
            // The process is stopping (or this is a journal to nowhere): nothing more
            // is written, and a request's answer says the store is closed.
            return;
        }
        queued.items.push(command);
        queued.urgent |= urgent;
        if std::mem::take(&mut queued.sleeping) || urgent {
            self.wake.notify_one();
        }
    }
}

/// Where records go: a cheap clone held by the gateway and every session.
#[derive(Clone)]
pub struct Journal(Arc<Mailbox>);

impl Journal {
    /// Queue a fact; it is committed with whatever else is queued. Never blocks on
    /// the disk.
    pub fn record(&self, record: Record) {
        self.0.push(Command::Record(record), false);
    }

    /// Queue a fact that another process waits for (a spawn queued for workers): the
    /// writer commits it at once, with whatever else is queued, instead of gathering
    /// for [`GROUP_WINDOW`].
    pub fn record_now(&self, record: Record) {
        self.0.push(Command::Record(record), true);
    }

    /// A journal whose records go nowhere (unit tests of actors that need one).
    pub fn discard() -> Journal {
        let mailbox = Mailbox { state: Mutex::new(Queued { closed: true, ..Queued::default() }), wake: Condvar::new() };
        Journal(Arc::new(mailbox))
    }
}

/// The handle to the writer thread; when the last one goes, the writer commits what
/// is queued and stops.
#[derive(Clone)]
pub struct Store {
    mailbox: Arc<Mailbox>,
    _open: Arc<Open>,
}

/// Dropped with the last [`Store`] handle: closes the mailbox.
struct Open(Arc<Mailbox>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

impl Store {
    /// Start the writer thread on `backend`.
    pub fn start(backend: impl Backend, path: String) -> std::io::Result<Store> {
        let mailbox = Arc::new(Mailbox { state: Mutex::default(), wake: Condvar::new() });
        let writer = mailbox.clone();
        std::thread::Builder::new().name("hivegate-store".into()).spawn(move || write_loop(backend, &writer, &path))?;
        Ok(Store { _open: Arc::new(Open(mailbox.clone())), mailbox })
    }

    pub fn journal(&self) -> Journal {
        Journal(self.mailbox.clone())
    }

    /// Replace the snapshot `name`; resolves once it is committed.
    pub fn save_snapshot(
        &self,
        name: &'static str,
        version: u32,
        json: String,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let (done, answer) = oneshot::channel();
        self.mailbox.push(Command::Snapshot(Box::new((name, version, json)), done), true);
        async move { answer.await.map_err(|_| StoreError::Closed)? }
    }

    /// A session's transcript as committed (everything queued before is included).
    pub fn transcript(&self, key: SessionKey) -> impl Future<Output = Result<Vec<Message>, StoreError>> + 'static {
        let (done, answer) = oneshot::channel();
        self.mailbox.push(Command::Transcript { key, done }, true);
        async move { answer.await.map_err(|_| StoreError::Closed)? }
    }

    /// Resolves once everything queued before it is committed.
    pub fn flush(&self) -> impl Future<Output = ()> + 'static {
        let (done, answer) = oneshot::channel();
        self.mailbox.push(Command::Flush(done), true);
        async move {
            let _ = answer.await;
        }
    }
}

/// The writer: sleep until something is queued, gather until records stop coming for
/// [`GROUP_WINDOW`] or for at most [`MAX_LAG`] (not at all when something waits for an
/// answer), then commit the records in groups of at most [`MAX_BATCH`] and answer the
/// rest, in order.
fn write_loop(mut backend: impl Backend, mailbox: &Mailbox, path: &str) {
    // However the writer ends (a panic in the database code included), the mailbox
    // closes and whatever waits for an answer is told the store is closed.
    struct CloseOnExit<'a>(&'a Mailbox);
    impl Drop for CloseOnExit<'_> {
        fn drop(&mut self) {
            let mut queued = self.0.lock();
            queued.closed = true;
            queued.items.clear();
        }
    }
    let _close = CloseOnExit(mailbox);
    // Two lists trade places: the writer drains one while senders fill the other, so
    // after the first burst the queue has its capacity and a push never reallocates
    // (a burst of 10,000 spawns otherwise regrows it from nothing, leaving every
    // smaller copy behind in the heap).
    let mut items: Vec<Command> = Vec::new();
    loop {
        {
            let mut queued = mailbox.lock();
            while queued.items.is_empty() && !queued.closed {
                queued.sleeping = true;
                queued = mailbox.wake.wait(queued).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            queued.sleeping = false;
            let first = std::time::Instant::now();
            while !queued.urgent && !queued.closed && first.elapsed() < MAX_LAG {
                let before = queued.items.len();
                queued = mailbox
                    .wake
                    .wait_timeout(queued, GROUP_WINDOW)
                    .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
                if queued.items.len() == before {
                    break;
                }
            }
            queued.urgent = false;
            if queued.items.is_empty() && queued.closed {
                return;
            }
            std::mem::swap(&mut queued.items, &mut items);
        }
        let mut batch = Vec::new();
        for command in items.drain(..) {
            match command {
                Command::Record(record) => {
                    batch.push(record);
                    if batch.len() >= MAX_BATCH {
                        commit(&mut backend, &mut batch, path);
                    }
                }
                other => {
                    commit(&mut backend, &mut batch, path);
                    answer(&mut backend, other, path);
                }
            }
        }
        commit(&mut backend, &mut batch, path);
        // What a burst far beyond the usual grew is not kept for ever.
        items.shrink_to(KEPT_QUEUE);
    }
}

/// The most queue slots kept between groups (about 650 KB each list).
const KEPT_QUEUE: usize = 16 * 1024;

/// Write a batch. A failure the database may get over (busy, full, an I/O error) is
/// retried, with growing pauses, until it succeeds: nothing queued is dropped, and
/// later records wait behind it, so what is on disk is always a prefix of what was
/// sent. A batch the database refuses outright is written record by record, and only
/// a record it refuses is dropped, said in the log.
fn commit(backend: &mut impl Backend, batch: &mut Vec<Record>, path: &str) {
    if batch.is_empty() {
        return;
    }
    let mut pause = Duration::from_millis(50);
    loop {
        match backend.apply(batch) {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                tracing::error!(path, error = %e, records = batch.len(), retry_in_ms = pause.as_millis() as u64,
                    "state write failed; retrying (the records wait in memory)");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(path, error = %e, records = batch.len(), "state write refused; writing record by record");
                for record in batch.iter() {
                    if let Err(e) = backend.apply(std::slice::from_ref(record)) {
                        tracing::error!(path, error = %e, record = record.kind(), "a record was refused and is not durable");
                    }
                }
                break;
            }
        }
    }
    batch.clear();
}

fn answer(backend: &mut impl Backend, command: Command, path: &str) {
    match command {
        Command::Record(_) => {}
        Command::Snapshot(snapshot, done) => {
            let (name, version, json) = *snapshot;
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

/// Open the durable store: the Postgres database at `url` when one is given (a
/// `postgres://` or `postgresql://` URL; anything else is refused), else the embedded
/// SQLite database in `state_dir`. Either is migrated to this hivegate's schema first.
pub fn open(state_dir: &Path, url: Option<&str>) -> Result<Box<dyn Backend>, StoreError> {
    Ok(match url {
        Some(url) => Box::new(postgres::Postgres::connect(url)?),
        None => Box::new(sqlite::Sqlite::open(state_dir)?),
    })
}

/// Where [`open`] keeps the state, as it may be shown: the SQLite file, or the database
/// URL without its password.
pub fn location(state_dir: &Path, url: Option<&str>) -> String {
    match url {
        Some(url) => redact(url),
        None => state_dir.join(DB_FILE).display().to_string(),
    }
}

/// Also the integration tests' helper (`tests/common/postgres.rs`), which uses more of it.
#[cfg(test)]
#[allow(dead_code)]
mod testdb;
#[cfg(test)]
mod tests;
