//! Durable state: the Store actor, the only writer of the SQLite database in the state
//! directory. It runs on its own `SyncArbiter` thread, so disk I/O never blocks an
//! actor on the gateway's arbiter and never sits on the spawn path.
//!
//! Schema: `snapshots(name, version, json, updated_at_ms)`, one row per named state.
//! The pairing book (paired devices, pending requests, node surfaces, device tokens as
//! sha256 hashes) is small and changes only on operator action, so each change rewrites
//! its one row in a single transaction: a crash leaves either the old or the new state,
//! never a mix. The schema is versioned with SQLite's `user_version`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use rusqlite::{params, Connection, OptionalExtension};

/// The database file inside the state directory.
pub const DB_FILE: &str = "hivegate.sqlite3";
const SCHEMA_VERSION: i64 = 1;
/// How long a write waits for another holder of the database's write lock.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot open the state database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("the state database {path} has schema version {found}, newer than this hivegate understands ({SCHEMA_VERSION}); upgrade hivegate")]
    TooNew { path: String, found: i64 },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the store is closed")]
    Closed,
}

/// Open (creating if needed) the database in `state_dir` and bring its schema up to date.
pub fn open(state_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(state_dir)
        .map_err(|source| StoreError::CreateDir { path: state_dir.display().to_string(), source })?;
    let path = state_dir.join(DB_FILE);
    let display = path.display().to_string();
    let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: display.clone(), source })?;
    // Another process holding the write lock (a backup, a sqlite3 shell) makes a write
    // wait this long, then fail: the change is refused and rolled back, not hung.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { path: display, found });
    }
    if found < 1 {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS snapshots (
                 name TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 json TEXT NOT NULL,
                 updated_at_ms INTEGER NOT NULL
             );
             PRAGMA user_version = 1;",
        )?;
    }
    Ok(conn)
}

/// Read a named snapshot: `(version, json)`.
pub fn load_snapshot(conn: &Connection, name: &str) -> Result<Option<(u32, String)>, StoreError> {
    Ok(conn
        .query_row("SELECT version, json FROM snapshots WHERE name = ?1", params![name], |row| {
            Ok((row.get::<_, u32>(0)?, row.get::<_, String>(1)?))
        })
        .optional()?)
}

fn save_snapshot(conn: &mut Connection, name: &str, version: u32, json: &str) -> Result<(), StoreError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO snapshots (name, version, json, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET version = excluded.version, json = excluded.json,
                                         updated_at_ms = excluded.updated_at_ms",
        params![name, version, json, now],
    )?;
    tx.commit()?;
    Ok(())
}

/// The Store actor. Built around a connection opened (and checked) before start-up, so
/// a bad state directory fails `hivegate serve` at once with a clear message.
pub struct Store {
    conn: Option<Connection>,
    path: PathBuf,
}

impl Store {
    pub fn new(conn: Connection, state_dir: &Path) -> Store {
        Store { conn: Some(conn), path: state_dir.join(DB_FILE) }
    }

    /// Start the store on its own thread.
    pub fn start(conn: Connection, state_dir: &Path) -> Addr<Store> {
        let slot = std::sync::Mutex::new(Some(Store::new(conn, state_dir)));
        let path = state_dir.join(DB_FILE);
        SyncArbiter::start(1, move || {
            slot.lock().ok().and_then(|mut s| s.take()).unwrap_or_else(|| Store { conn: None, path: path.clone() })
        })
    }
}

impl Actor for Store {
    type Context = SyncContext<Self>;
}

/// Replace the snapshot called `name`.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SaveSnapshot {
    pub name: &'static str,
    pub version: u32,
    pub json: String,
}

impl Handler<SaveSnapshot> for Store {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: SaveSnapshot, _: &mut Self::Context) -> Self::Result {
        let conn = self.conn.as_mut().ok_or(StoreError::Closed)?;
        save_snapshot(conn, msg.name, msg.version, &msg.json).inspect_err(|e| {
            tracing::error!(path = %self.path.display(), error = %e, "state write failed");
        })
    }
}

/// Answered once every write sent before it is done (one thread, first in first out).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Store {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_survive_reopening_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(dir.path()).unwrap();
        assert_eq!(load_snapshot(&conn, "pairing").unwrap(), None);
        save_snapshot(&mut conn, "pairing", 1, "{\"a\":1}").unwrap();
        save_snapshot(&mut conn, "pairing", 2, "{\"a\":2}").unwrap();
        drop(conn);
        let conn = open(dir.path()).unwrap();
        assert_eq!(load_snapshot(&conn, "pairing").unwrap(), Some((2, "{\"a\":2}".to_string())));
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }
}
