//! The Postgres backend: the SQLite backend's tables and rules in a database that
//! several processes can share (a gateway, and later workers on other machines).
//!
//! The schema is [`super::sqlite`]'s (see its module doc for what each table holds),
//! created by the numbered SQL files in `migrations/postgres/` ([`migrate`]), with a
//! `sessions.pos` serial column standing for SQLite's rowid (the order sessions were
//! written in, for "the newest N"). The semantics are the same statement for statement:
//! `INSERT OR IGNORE` is `ON CONFLICT DO NOTHING`, `INSERT OR REPLACE` an upsert that
//! resets every other column and takes a new position, and a result is delivered only in
//! the transaction that writes the parent's message carrying it. Every batch is one
//! transaction. The exceptions are Postgres's own: sessions placed on workers
//! (`sessions.placement`, which the upsert leaves as it was) are not counted by a
//! gateway's start, and a run on a worker ends once, whoever says so first.
//!
//! The client is the synchronous `postgres` crate: the store's writer is a plain thread
//! owning one connection, as with SQLite. Statements are prepared once per connection.
//! A lost connection (a server restart, a terminated backend, a network cut) is dropped
//! and made again by the next call; the errors that say so are transient
//! ([`is_transient`]), so the writer keeps its records and retries. What may be shown
//! of the URL is [`super::redact`]'s form, never the password.
//!
//! Postgres text cannot hold the NUL character, which SQLite's can: a NUL in free text
//! (a task, an answer, a tool result, a reason) is stored as U+FFFD. JSON columns are
//! unaffected (JSON escapes it).

pub mod migrate;
mod read;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Statement, Transaction};
use read::Reader;

use super::columns::{self, corrupt, SpawnJson};
use super::database_url::{without, DatabaseUrl};
use super::records::*;
use super::{now_ms, Backend, StoreError};
use crate::keys::{RunId, SessionKey};
use crate::model::Message;

/// How long making a connection may take, unless the URL says (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long is probed, so a dead peer is found in about a minute
/// rather than TCP's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// One session's journal, as [`Postgres::journal`] reads it.
#[derive(Debug, Default)]
pub struct SessionJournal {
    pub usage: crate::model::Usage,
    pub transcript: Vec<StoredMessage>,
    pub tool_results: HashMap<String, String>,
}

pub struct Postgres {
    config: postgres::Config,
    /// The URL as it may be shown.
    shown: String,
    /// The connection, when there is one; a lost one is dropped and made again by the
    /// next call. In a lock because reads take `&self` ([`Backend`]) and a call made
    /// inside an async runtime runs on a thread of its own ([`Postgres::with_conn`]);
    /// it is never contended (the start reads and prunes before the writer's thread
    /// exists, and from then on only that thread uses the backend).
    conn: Mutex<Option<Conn>>,
}

/// One connection with the statements prepared on it.
struct Conn {
    client: Client,
    prepared: Prepared,
}

impl Postgres {
    /// Connect to the database at `url` (a `postgres://` or `postgresql://` URL) and
    /// migrate it to this hivegate's schema.
    pub fn connect(url: &str) -> Result<Postgres, StoreError> {
        let url = DatabaseUrl::parse(url)?;
        let shown = url.redacted();
        let mut config = postgres::Config::from_str(url.expose())
            .map_err(|e| StoreError::DatabaseUrl { url: shown.clone(), why: without(&describe(&e), url.expose()) })?;
        // `DatabaseUrl::parse` refused every mode that asks for TLS; what is left
        // allows plaintext, and plaintext is what there is.
        config.ssl_mode(SslMode::Disable);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hivegate");
        }
        config.keepalives_idle(KEEPALIVE_IDLE);
        let db = Postgres { config, shown, conn: Mutex::new(None) };
        db.with_conn(|conn| migrate::migrate(&mut conn.client, &db.shown).map(|_| ()))?;
        Ok(db)
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// What a session's earlier runs left: its usage, transcript and recorded tool
    /// results (a worker claiming a session resumes it from these).
    pub fn journal(&self, key: &SessionKey) -> Result<SessionJournal, StoreError> {
        self.read(|r| {
            let usage = r
                .query_opt("SELECT usage_json FROM sessions WHERE key = $1", &[&key.as_str()])?
                .map(|row| row.try_get::<_, String>(0))
                .transpose()?
                .map(|json| serde_json::from_str(&json).unwrap_or_default())
                .unwrap_or_default();
            Ok(SessionJournal { usage, transcript: r.messages(key)?, tool_results: r.tool_results(key)? })
        })
    }

    fn open(&self) -> Result<Conn, StoreError> {
        let client = self.config.connect(NoTls).map_err(|source| {
            let mut message = describe(&source);
            if let Some(password) = self.config.get_password() {
                let password = String::from_utf8_lossy(password);
                if password.len() >= 2 {
                    message = message.replace(&*password, "***");
                }
            }
            StoreError::Connect { url: self.shown.clone(), message, error: source }
        })?;
        Ok(Conn { client, prepared: Prepared::default() })
    }

    /// Run `f` on the connection, making one first if there is none (or it was lost).
    /// A connection that was kept from before and turns out lost (the server restarted
    /// or dropped it meanwhile) is replaced and `f` runs once more on the new one; a
    /// new connection lost at once is dropped, for the next call to replace.
    ///
    /// The client blocks on an async runtime of its own, which cannot be done from a
    /// thread already inside one (a start-up runs inside the actix system): such a call
    /// runs on a short-lived thread instead. The writer's thread is never inside one.
    fn with_conn<T: Send>(&self, f: impl FnMut(&mut Conn) -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.with_conn_here(f);
        }
        std::thread::scope(|scope| {
            let call = std::thread::Builder::new()
                .name("hivegate-store-call".into())
                .spawn_scoped(scope, || self.with_conn_here(f));
            match call {
                Ok(call) => call.join().unwrap_or(Err(StoreError::Closed)),
                Err(_) => Err(StoreError::Closed),
            }
        })
    }

    fn with_conn_here<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut kept = true;
        loop {
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                *slot = None;
                *slot = Some(self.open()?);
                kept = false;
            }
            let Some(conn) = slot.as_mut() else { return Err(StoreError::Closed) };
            let result = f(conn);
            let lost = match &result {
                Ok(_) => false,
                Err(StoreError::Postgres(e)) => connection_lost(e) || conn.client.is_closed(),
                Err(_) => conn.client.is_closed(),
            };
            if !lost {
                return result;
            }
            *slot = None;
            if !kept {
                return result;
            }
            tracing::info!(url = %self.shown, "the connection to the state database was lost; connecting again");
        }
    }

    /// A consistent read: one read-only snapshot of the database for all of `f`.
    fn read<T: Send>(&self, mut f: impl FnMut(&mut Reader) -> Result<T, StoreError> + Send) -> Result<T, StoreError> {
        self.with_conn(|conn| {
            let tx = conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let mut reader = Reader { tx, prepared: &mut conn.prepared };
            let value = f(&mut reader)?;
            reader.tx.commit()?;
            Ok(value)
        })
    }

    /// Write in one transaction.
    fn write(&self, mut f: impl FnMut(&mut Statements) -> Result<(), StoreError> + Send) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.client.transaction()?;
            let mut statements = Statements { tx, prepared: &mut conn.prepared };
            f(&mut statements)?;
            statements.tx.commit()?;
            Ok(())
        })
    }
}

/// Closing a client blocks on its runtime too: inside another runtime, it is closed on
/// a thread of its own.
impl Drop for Postgres {
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(conn) = conn {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::scope(|scope| {
                    let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(conn));
                });
            }
        }
    }
}

impl Backend for Postgres {
    fn apply(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        let now = now_ms();
        self.write(|st| {
            for record in batch {
                apply_one(st, record, now)?;
            }
            Ok(())
        })
    }

    fn save_snapshot(&mut self, name: &str, version: u32, json: &str) -> Result<(), StoreError> {
        self.write(|st| {
            st.exec(
                "INSERT INTO snapshots (name, version, json, updated_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, json = excluded.json,
                                                  updated_at_ms = excluded.updated_at_ms",
                &[&name, &i64::from(version), &text(json), &(now_ms() as i64)],
            )?;
            Ok(())
        })
    }

    fn load_snapshot(&self, name: &str) -> Result<Option<(u32, String)>, StoreError> {
        self.read(|r| {
            let row = r.query_opt("SELECT version, json FROM snapshots WHERE name = $1", &[&name])?;
            row.map(|row| Ok((count(row.try_get(0)?, "a snapshot's version")?, row.try_get(1)?))).transpose()
        })
    }

    fn load(&self, recent: usize) -> Result<Durable, StoreError> {
        self.read(|r| {
            let mut state = Durable { sessions: r.sessions(recent)?, ..Durable::default() };
            let running: Vec<(SessionKey, RunId)> = state
                .sessions
                .iter()
                .filter(|s| s.status == StoredStatus::Running)
                .map(|s| (s.row.key.clone(), s.row.run.run_id.clone()))
                .collect();
            let runs: HashSet<RunId> = running.iter().map(|(_, run)| run.clone()).collect();
            let mut children = r.children(&runs)?;
            for (key, run_id) in running {
                state.transcripts.insert(key.clone(), r.messages(&key)?);
                state.tool_results.insert(key.clone(), r.tool_results(&key)?);
                state.children.insert(key, children.remove(&run_id).unwrap_or_default());
            }
            state.outbox = r.outbox()?;
            let loaded: HashSet<&SessionKey> = state.sessions.iter().map(|s| &s.row.key).collect();
            let placed = r.placed()?.into_iter().filter(|(key, _)| loaded.contains(key)).collect();
            state.placed = placed;
            Ok(state)
        })
    }

    fn transcript(&self, key: &SessionKey) -> Result<Vec<Message>, StoreError> {
        self.read(|r| {
            let stored = r.messages(key)?;
            let mut transcript = Vec::with_capacity(stored.len() + 1);
            // A child's opening is not journaled (it is made again from its record): its
            // task is, to a reader, the first message.
            if stored.first().is_none_or(|m| m.seq > 0) {
                let row =
                    r.query_opt("SELECT task FROM sessions WHERE key = $1 AND parent IS NOT NULL", &[&key.as_str()])?;
                if let Some(row) = row {
                    transcript.push(Message::User { content: row.try_get(0)? });
                }
            }
            transcript.extend(stored.into_iter().map(|m| m.message));
            Ok(transcript)
        })
    }

    fn count_start(&mut self) -> Result<(), StoreError> {
        self.write(|st| {
            // Sessions on workers are not started by a gateway's start.
            st.exec("UPDATE sessions SET resumes = resumes + 1 WHERE status = 'running' AND placement = 'local'", &[])?;
            st.exec(
                "UPDATE outbox SET attempts = attempts + 1 WHERE delivered_at_ms IS NULL AND undeliverable IS NULL",
                &[],
            )?;
            Ok(())
        })
    }

    fn prune(&mut self, keep: usize) -> Result<(), StoreError> {
        self.write(|st| {
            let keep = keep.min(i64::MAX as usize) as i64;
            let oldest: Option<i64> = st
                .query_one(
                    "SELECT MIN(pos) FROM (SELECT pos FROM sessions ORDER BY pos DESC LIMIT $1) AS kept",
                    &[&keep],
                )?
                .try_get(0)?;
            if let Some(oldest) = oldest {
                st.exec(
                    "DELETE FROM messages WHERE session_key IN
                       (SELECT key FROM sessions WHERE pos < $1 AND status != 'running')",
                    &[&oldest],
                )?;
                st.exec(
                    "DELETE FROM tool_results WHERE session_key IN
                       (SELECT key FROM sessions WHERE pos < $1 AND status != 'running')",
                    &[&oldest],
                )?;
                st.exec("DELETE FROM sessions WHERE pos < $1 AND status != 'running'", &[&oldest])?;
            }
            // Results that arrived, or were given up on, for sessions no longer kept.
            st.exec(
                "DELETE FROM outbox WHERE (delivered_at_ms IS NOT NULL OR undeliverable IS NOT NULL)
                   AND parent_key NOT IN (SELECT key FROM sessions)",
                &[],
            )?;
            Ok(())
        })
    }
}

fn apply_one(st: &mut Statements, record: &Record, now: u64) -> Result<(), StoreError> {
    apply_own(st, record, now)?;
    // The work queue's part of the same record, in the same transaction.
    crate::worker::queue::apply(&mut st.tx, record)?;
    Ok(())
}

fn apply_own(st: &mut Statements, record: &Record, now: u64) -> Result<(), StoreError> {
    match record {
        // The work queue's alone ([`crate::worker::queue::apply`]).
        Record::Queued(_) | Record::Revoked { .. } => {}
        Record::SessionStarted(row) => {
            let key = row.key.as_str();
            // A new actor for a main session that had one before (started again after
            // a restart or a reset) begins a new conversation. (A child's key is new.)
            if row.parent.is_none() {
                st.exec("DELETE FROM messages WHERE session_key = $1", &[&key])?;
                st.exec("DELETE FROM tool_results WHERE session_key = $1", &[&key])?;
            }
            // SQLite's INSERT OR REPLACE: every column not given goes back to its
            // default, and the row takes a new position.
            st.exec(
                "INSERT INTO sessions (key, parent, agent_id, parent_run_id, spawn_json, run_id, task, model, status,
                     started_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9)
                 ON CONFLICT (key) DO UPDATE SET pos = DEFAULT, parent = excluded.parent,
                     agent_id = excluded.agent_id, parent_run_id = excluded.parent_run_id,
                     spawn_json = excluded.spawn_json, run_id = excluded.run_id, task = excluded.task,
                     model = excluded.model, status = excluded.status, outcome = DEFAULT, final_text = DEFAULT,
                     usage_json = DEFAULT, started_at_ms = excluded.started_at_ms, ended_at_ms = DEFAULT,
                     resumes = DEFAULT, follow_ups = DEFAULT, follow_up_task = DEFAULT",
                &[
                    &key,
                    &row.parent.as_ref().map(|p| p.as_str()),
                    &text(&row.agent_id),
                    &row.spawned.parent_run_id.as_ref().map(|r| r.as_str()),
                    &serde_json::to_string(&SpawnJson::of(row))?,
                    &row.run.run_id.as_str(),
                    &text(&row.run.task),
                    &row.run.model.to_string(),
                    &(row.run.started_at_ms as i64),
                ],
            )?;
        }
        Record::RunStarted(start) => {
            let RunStart { key, run, grant, follow_up } = &**start;
            // A follow-up runs again under its spawn's run id and keeps its first task
            // (a child's opening is made again from it).
            st.exec(
                "UPDATE sessions SET task = CASE WHEN run_id = $2 THEN task ELSE $3 END, run_id = $2, model = $4,
                     status = 'running', outcome = NULL, final_text = NULL, ended_at_ms = NULL,
                     started_at_ms = $5, resumes = 0, follow_ups = $6,
                     follow_up_task = CASE WHEN run_id = $2 THEN $3 ELSE NULL END,
                     usage_json = CASE WHEN run_id = $2 THEN usage_json ELSE '{}' END
                 WHERE key = $1",
                &[
                    &key.as_str(),
                    &run.run_id.as_str(),
                    &text(&run.task),
                    &run.model.to_string(),
                    &(run.started_at_ms as i64),
                    &i64::from(*follow_up),
                ],
            )?;
            if let Some(grant) = grant {
                let row = st.query_opt("SELECT spawn_json FROM sessions WHERE key = $1", &[&key.as_str()])?;
                if let Some(row) = row {
                    let json: String = row.try_get(0)?;
                    let mut spawn = SpawnJson::parse(&json)?;
                    spawn.grant = *grant;
                    st.exec(
                        "UPDATE sessions SET spawn_json = $2 WHERE key = $1",
                        &[&key.as_str(), &serde_json::to_string(&spawn)?],
                    )?;
                }
            }
        }
        Record::Messages(journaled) => {
            let Journaled { key, run_id, first_seq, messages, delivers } = &**journaled;
            let delivered: HashMap<u32, &str> = delivers.iter().map(|(s, id)| (*s, id.as_str())).collect();
            for (i, message) in messages.iter().enumerate() {
                let seq = first_seq + i as u32;
                st.exec(
                    "INSERT INTO messages (session_key, seq, run_id, json, reasoning_json, announce_id)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[
                        &key.as_str(),
                        &i64::from(seq),
                        &run_id.as_str(),
                        &serde_json::to_string(message)?,
                        &columns::reasoning_json(message)?,
                        &delivered.get(&seq).copied(),
                    ],
                )?;
            }
            // Delivered only if the message that carries it is in the transcript (a
            // message already at its position is never replaced).
            for (seq, id) in delivers {
                st.exec(
                    "UPDATE outbox SET delivered_at_ms = $2 WHERE id = $1 AND delivered_at_ms IS NULL
                       AND EXISTS (SELECT 1 FROM messages WHERE session_key = $3 AND seq = $4 AND announce_id = $1)",
                    &[&id.as_str(), &(now as i64), &key.as_str(), &i64::from(*seq)],
                )?;
            }
            // Progress: a resumed run that moves on is no longer suspected of crashing.
            st.exec("UPDATE sessions SET resumes = 0 WHERE key = $1 AND resumes > 0", &[&key.as_str()])?;
        }
        Record::ToolResult(row) => {
            let ToolResultRow { key, call_id, content } = &**row;
            st.exec(
                "INSERT INTO tool_results (session_key, call_id, content) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&key.as_str(), &text(call_id), &text(content)],
            )?;
        }
        Record::Used(row) => {
            let UsedRow { key, usage, model } = &**row;
            st.exec(
                "UPDATE sessions SET usage_json = $2, model = $3 WHERE key = $1",
                &[&key.as_str(), &serde_json::to_string(usage)?, &model.to_string()],
            )?;
        }
        Record::RunEnded(end) if end.forget => {
            // `cleanup: delete`: the rows go, so they are not brought up to date first;
            // only the result stays, in the outbox, until its parent has it.
            insert_announce(st, end.announce.as_ref(), now)?;
            forget_session(st, end.key.as_str())?;
        }
        Record::RunEnded(end) => {
            let status = if end.idle { StoredStatus::Idle } else { StoredStatus::Ended };
            // A session on a worker ends once: the gateway (a kill) and its worker (its
            // own end, or stopping what was revoked) may both say so, and the first wins.
            st.exec(
                "UPDATE sessions SET status = $3, outcome = $4, final_text = $5, usage_json = $6, ended_at_ms = $7
                 WHERE key = $1 AND run_id = $2 AND (placement = 'local' OR status = 'running')",
                &[
                    &end.key.as_str(),
                    &end.run_id.as_str(),
                    &status.as_str(),
                    &end.outcome.as_str(),
                    &text(&end.text),
                    &serde_json::to_string(&end.usage)?,
                    &(end.ended_at_ms as i64),
                ],
            )?;
            insert_announce(st, end.announce.as_ref(), now)?;
        }
        Record::Stopped { key } => {
            st.exec("UPDATE sessions SET status = 'ended' WHERE key = $1 AND status = 'idle'", &[&key.as_str()])?;
        }
        Record::Undeliverable { id, reason } => {
            st.exec("UPDATE outbox SET undeliverable = $2 WHERE id = $1", &[&id.as_str(), &text(reason)])?;
        }
        Record::StoppedCleanly => {
            st.exec("UPDATE sessions SET resumes = 0 WHERE status = 'running'", &[])?;
            st.exec("UPDATE outbox SET attempts = 0 WHERE delivered_at_ms IS NULL", &[])?;
        }
        Record::Forgotten { keys } => {
            for key in keys.iter() {
                forget_session(st, key.as_str())?;
                st.exec("DELETE FROM outbox WHERE parent_key = $1", &[&key.as_str()])?;
            }
        }
    }
    Ok(())
}

/// A session's rows: its transcript, its tool results and itself.
fn forget_session(st: &mut Statements, key: &str) -> Result<(), StoreError> {
    st.exec("DELETE FROM messages WHERE session_key = $1", &[&key])?;
    st.exec("DELETE FROM tool_results WHERE session_key = $1", &[&key])?;
    st.exec("DELETE FROM sessions WHERE key = $1", &[&key])?;
    Ok(())
}

/// A child's result on its way to its parent, kept until delivered.
fn insert_announce(st: &mut Statements, announce: Option<&Announce>, now: u64) -> Result<(), StoreError> {
    let Some(a) = announce else { return Ok(()) };
    st.exec(
        "INSERT INTO outbox (id, parent_key, parent_run_id, text, created_at_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        &[&a.id.as_str(), &a.parent.as_str(), &a.parent_run_id.as_str(), &text(&a.text), &(now as i64)],
    )?;
    Ok(())
}

/// Free text as Postgres can hold it: NUL, which it cannot, becomes U+FFFD.
fn text(s: &str) -> Cow<'_, str> {
    match s.contains('\0') {
        true => Cow::Owned(s.replace('\0', "\u{FFFD}")),
        false => Cow::Borrowed(s),
    }
}

/// A stored count (version, sequence number, attempts) as the domain's `u32`.
fn count(value: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(what, format!("{value} is not a count")))
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The statements prepared on one connection, by the SQL text's address and length:
/// each is a literal of this file, so the address names it, and finding one costs no
/// hashing of the text.
#[derive(Default)]
struct Prepared(HashMap<(usize, usize), Statement>);

impl Prepared {
    fn get(&mut self, client: &mut impl GenericClient, sql: &'static str) -> Result<Statement, postgres::Error> {
        let key = (sql.as_ptr() as usize, sql.len());
        if let Some(statement) = self.0.get(&key) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(key, statement.clone());
        Ok(statement)
    }
}

/// A write transaction with the connection's prepared statements.
struct Statements<'a> {
    tx: Transaction<'a>,
    prepared: &'a mut Prepared,
}

impl Statements<'_> {
    fn exec(&mut self, sql: &'static str, params: Params) -> Result<u64, StoreError> {
        let statement = self.prepared.get(&mut self.tx, sql)?;
        Ok(self.tx.execute(&statement, params)?)
    }

    fn query_opt(&mut self, sql: &'static str, params: Params) -> Result<Option<Row>, StoreError> {
        let statement = self.prepared.get(&mut self.tx, sql)?;
        Ok(self.tx.query_opt(&statement, params)?)
    }

    fn query_one(&mut self, sql: &'static str, params: Params) -> Result<Row, StoreError> {
        let statement = self.prepared.get(&mut self.tx, sql)?;
        Ok(self.tx.query_one(&statement, params)?)
    }
}

/// A Postgres error as one line: the server's message with its SQLSTATE (and detail),
/// or the client's with its causes.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut line = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            line.push_str("; ");
            line.push_str(detail);
        }
        return line;
    }
    // The client's message says what failed; its causes say why. (The error is not a
    // `source` of the StoreError that carries it, so this is said once.)
    let mut line = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !line.ends_with(&said) {
            line.push_str(": ");
            line.push_str(&said);
        }
        cause = c.source();
    }
    line
}

/// Whether a failure may pass: a lost or refused connection (SQLSTATE class 08, a
/// closed client, an I/O error), the server shutting down or starting (57P01-57P03),
/// out of resources (class 53), a serialization failure (40001) or a deadlock (40P01).
pub fn is_transient(e: &postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
        }
        None => connection_lost(e),
    }
}

/// The connection cannot be used again: closed, an I/O error on it, or the server said
/// it is going away.
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests;
