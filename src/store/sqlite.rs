//! The SQLite backend (bundled, WAL): the embedded default.
//!
//! Tables (schema version 2; version 1 had only `snapshots`):
//! - `snapshots(name, version, json, updated_at_ms)`: small named states rewritten
//!   whole (the pairing book).
//! - `sessions(key, parent, agent_id, parent_run_id, spawn_json, run_id, task, model,
//!   status, outcome, final_text, usage_json, started_at_ms, ended_at_ms, resumes,
//!   follow_ups, follow_up_task)`: one row per session with its current run (a main session's new run
//!   replaces the last one, as the registry does). One row and one index per spawn:
//!   the spawn path's share of the writer's time is what keeps a burst of spawns fast.
//! - `messages(session_key, seq, run_id, json, reasoning_json, announce_id)`: the
//!   append-only transcripts, one row per message. A message that carries an
//!   announcement names it (`announce_id`), and its outbox row is marked delivered only
//!   by the transaction that writes that message. No index keeps a second delivery out:
//!   the parent's turn drops it by its id ([`crate::session::ChildEnded`]).
//! - `tool_results(session_key, call_id, content)`: each tool result as soon as it is
//!   known, so a resumed run never runs a recorded call again.
//! - `outbox(id, parent_key, parent_run_id, text, …, delivered_at_ms, attempts,
//!   undeliverable)`: announcements, written with the child's end and marked delivered
//!   in the transaction that writes the parent's message.
//!
//! Every batch of records is one transaction: a crash keeps all of it or none of it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::columns::{self, SessionColumns, SpawnJson};
use super::records::*;
use super::{now_ms, Backend, StoreError, BUSY_TIMEOUT, DB_FILE};
use crate::keys::{RunId, SessionKey};
use crate::model::Message;

pub const SCHEMA_VERSION: i64 = 2;

/// Each schema version's migration from the one before, applied in order.
const MIGRATIONS: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS snapshots (
         name TEXT PRIMARY KEY,
         version INTEGER NOT NULL,
         json TEXT NOT NULL,
         updated_at_ms INTEGER NOT NULL
     );",
    "CREATE TABLE sessions (
         key TEXT PRIMARY KEY,
         parent TEXT,
         agent_id TEXT NOT NULL,
         parent_run_id TEXT,
         spawn_json TEXT NOT NULL,
         run_id TEXT NOT NULL,
         task TEXT NOT NULL,
         model TEXT NOT NULL,
         status TEXT NOT NULL,
         outcome TEXT,
         final_text TEXT,
         usage_json TEXT NOT NULL DEFAULT '{}',
         started_at_ms INTEGER NOT NULL,
         ended_at_ms INTEGER,
         resumes INTEGER NOT NULL DEFAULT 0,
         follow_ups INTEGER NOT NULL DEFAULT 0,
         follow_up_task TEXT
     );
     CREATE TABLE messages (
         session_key TEXT NOT NULL,
         seq INTEGER NOT NULL,
         run_id TEXT NOT NULL,
         json TEXT NOT NULL,
         reasoning_json TEXT,
         announce_id TEXT,
         PRIMARY KEY (session_key, seq)
     ) WITHOUT ROWID;
     CREATE TABLE tool_results (
         session_key TEXT NOT NULL,
         call_id TEXT NOT NULL,
         content TEXT NOT NULL,
         PRIMARY KEY (session_key, call_id)
     ) WITHOUT ROWID;
     CREATE TABLE outbox (
         id TEXT PRIMARY KEY,
         parent_key TEXT NOT NULL,
         parent_run_id TEXT NOT NULL,
         text TEXT NOT NULL,
         created_at_ms INTEGER NOT NULL,
         delivered_at_ms INTEGER,
         attempts INTEGER NOT NULL DEFAULT 0,
         undeliverable TEXT
     );",
];

pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    /// Open (creating if needed) the database in `state_dir` and migrate it to the
    /// current schema.
    pub fn open(state_dir: &Path) -> Result<Sqlite, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|source| StoreError::CreateDir { path: state_dir.display().to_string(), source })?;
        let path = state_dir.join(DB_FILE);
        let display = path.display().to_string();
        let conn = Connection::open(&path).map_err(|source| StoreError::Open { path: display.clone(), source })?;
        // Another process holding the write lock (a backup, a sqlite3 shell) makes a write
        // wait this long, then fail: the batch is rolled back, not hung.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Commits survive a crash of the process (what `kill -9` does); a power cut may
        // lose the last few, never corrupt the file.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every statement the writer runs stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path: display, found, known: SCHEMA_VERSION });
        }
        for (version, migration) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            conn.execute_batch(&format!("BEGIN; {migration} PRAGMA user_version = {}; COMMIT;", version + 1))?;
        }
        Ok(Sqlite { conn })
    }

    #[cfg(test)]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Backend for Sqlite {
    fn apply(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let mut statements = Statements { tx: &tx, prepared: Vec::new() };
        for record in batch {
            apply_one(&mut statements, record, now)?;
        }
        drop(statements);
        tx.commit()?;
        Ok(())
    }

    fn save_snapshot(&mut self, name: &str, version: u32, json: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        exec(
            &tx,
            "INSERT INTO snapshots (name, version, json, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET version = excluded.version, json = excluded.json,
                                             updated_at_ms = excluded.updated_at_ms",
            params![name, version, json, now_ms() as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn load_snapshot(&self, name: &str) -> Result<Option<(u32, String)>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT version, json FROM snapshots WHERE name = ?1", params![name], |row| {
                Ok((row.get::<_, u32>(0)?, row.get::<_, String>(1)?))
            })
            .optional()?)
    }

    fn load(&self, recent: usize) -> Result<Durable, StoreError> {
        let mut state = Durable { sessions: self.sessions(recent)?, ..Durable::default() };
        let running: Vec<(SessionKey, RunId)> = state
            .sessions
            .iter()
            .filter(|s| s.status == StoredStatus::Running)
            .map(|s| (s.row.key.clone(), s.row.run.run_id.clone()))
            .collect();
        let runs: HashSet<RunId> = running.iter().map(|(_, run)| run.clone()).collect();
        let mut children = self.children(&runs)?;
        for (key, run_id) in running {
            state.transcripts.insert(key.clone(), self.messages(&key)?);
            state.tool_results.insert(key.clone(), self.tool_results(&key)?);
            state.children.insert(key, children.remove(&run_id).unwrap_or_default());
        }
        state.outbox = self.outbox()?;
        Ok(state)
    }

    fn transcript(&self, key: &SessionKey) -> Result<Vec<Message>, StoreError> {
        let stored = self.messages(key)?;
        let mut transcript = Vec::with_capacity(stored.len() + 1);
        // A child's opening is not journaled (it is made again from its record): its
        // task is, to a reader, the first message.
        if stored.first().is_none_or(|m| m.seq > 0) {
            let task: Option<String> = self
                .conn
                .query_row(
                    "SELECT task FROM sessions WHERE key = ?1 AND parent IS NOT NULL",
                    params![key.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            transcript.extend(task.map(|content| Message::User { content }));
        }
        transcript.extend(stored.into_iter().map(|m| m.message));
        Ok(transcript)
    }

    fn count_start(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        exec(&tx, "UPDATE sessions SET resumes = resumes + 1 WHERE status = 'running'", [])?;
        exec(
            &tx,
            "UPDATE outbox SET attempts = attempts + 1 WHERE delivered_at_ms IS NULL AND undeliverable IS NULL",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn prune(&mut self, keep: usize) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let oldest_kept: Option<i64> = tx
            .query_row(
                "SELECT MIN(rowid) FROM (SELECT rowid FROM sessions ORDER BY rowid DESC LIMIT ?1)",
                params![keep.min(i64::MAX as usize) as i64],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if let Some(oldest) = oldest_kept {
            for sql in [
                "DELETE FROM messages WHERE session_key IN
                   (SELECT key FROM sessions WHERE rowid < ?1 AND status != 'running')",
                "DELETE FROM tool_results WHERE session_key IN
                   (SELECT key FROM sessions WHERE rowid < ?1 AND status != 'running')",
                "DELETE FROM sessions WHERE rowid < ?1 AND status != 'running'",
            ] {
                exec(&tx, sql, params![oldest])?;
            }
        }
        // Results that arrived, or were given up on, for sessions no longer kept.
        exec(
            &tx,
            "DELETE FROM outbox WHERE (delivered_at_ms IS NOT NULL OR undeliverable IS NOT NULL)
               AND parent_key NOT IN (SELECT key FROM sessions)",
            [],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn apply_one(st: &mut Statements, record: &Record, now: u64) -> Result<(), StoreError> {
    let tx = st.tx;
    match record {
        Record::SessionStarted(row) => {
            let s = &row.spawned;
            let spawn = SpawnJson::of(row);
            // A new actor for a main session that had one before (started again after
            // a restart or a reset) begins a new conversation. (A child's key is new.)
            if row.parent.is_none() {
                st.exec("DELETE FROM messages WHERE session_key = ?1", params![row.key.as_str()])?;
                st.exec("DELETE FROM tool_results WHERE session_key = ?1", params![row.key.as_str()])?;
            }
            st.exec(
                "INSERT OR REPLACE INTO sessions (key, parent, agent_id, parent_run_id, spawn_json, run_id, task,
                     model, status, started_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9)",
                params![
                    row.key.as_str(),
                    row.parent.as_ref().map(|p| p.as_str()),
                    row.agent_id,
                    s.parent_run_id.as_ref().map(|r| r.as_str()),
                    serde_json::to_string(&spawn)?,
                    row.run.run_id.as_str(),
                    row.run.task,
                    row.run.model.to_string(),
                    row.run.started_at_ms as i64,
                ],
            )?;
        }
        Record::RunStarted(start) => {
            let RunStart { key, run, grant, follow_up } = &**start;
            // A follow-up runs again under its spawn's run id and keeps its first task
            // (a child's opening is made again from it).
            st.exec(
                "UPDATE sessions SET task = CASE WHEN run_id = ?2 THEN task ELSE ?3 END, run_id = ?2, model = ?4,
                     status = 'running', outcome = NULL, final_text = NULL, ended_at_ms = NULL,
                     started_at_ms = ?5, resumes = 0, follow_ups = ?6,
                     follow_up_task = CASE WHEN run_id = ?2 THEN ?3 ELSE NULL END,
                     usage_json = CASE WHEN run_id = ?2 THEN usage_json ELSE '{}' END
                 WHERE key = ?1",
                params![
                    key.as_str(),
                    run.run_id.as_str(),
                    run.task,
                    run.model.to_string(),
                    run.started_at_ms as i64,
                    follow_up
                ],
            )?;
            if let Some(grant) = grant {
                let spawn_json: Option<String> = tx
                    .prepare_cached("SELECT spawn_json FROM sessions WHERE key = ?1")?
                    .query_row(params![key.as_str()], |r| r.get(0))
                    .optional()?;
                if let Some(json) = spawn_json {
                    let mut spawn = SpawnJson::parse(&json)?;
                    spawn.grant = *grant;
                    st.exec(
                        "UPDATE sessions SET spawn_json = ?2 WHERE key = ?1",
                        params![key.as_str(), serde_json::to_string(&spawn)?],
                    )?;
                }
            }
        }
        Record::Messages(journaled) => {
            let Journaled { key, run_id, first_seq, messages, delivers } = &**journaled;
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages (session_key, seq, run_id, json, reasoning_json, announce_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let delivered: HashMap<u32, &str> = delivers.iter().map(|(s, id)| (*s, id.as_str())).collect();
            for (i, message) in messages.iter().enumerate() {
                let seq = first_seq + i as u32;
                let announce = delivered.get(&seq).copied();
                let reasoning = columns::reasoning_json(message)?;
                insert.execute(params![
                    key.as_str(),
                    seq,
                    run_id.as_str(),
                    serde_json::to_string(message)?,
                    reasoning,
                    announce
                ])?;
            }
            // Delivered only if the message that carries it is in the transcript (a
            // message already at its position is never replaced).
            for (seq, id) in delivers {
                st.exec(
                    "UPDATE outbox SET delivered_at_ms = ?2 WHERE id = ?1 AND delivered_at_ms IS NULL
                       AND EXISTS (SELECT 1 FROM messages WHERE session_key = ?3 AND seq = ?4 AND announce_id = ?1)",
                    params![id.as_str(), now as i64, key.as_str(), seq],
                )?;
            }
            // Progress: a resumed run that moves on is no longer suspected of crashing.
            st.exec("UPDATE sessions SET resumes = 0 WHERE key = ?1 AND resumes > 0", params![key.as_str()])?;
        }
        Record::ToolResult(row) => {
            let ToolResultRow { key, call_id, content } = &**row;
            st.exec(
                "INSERT OR IGNORE INTO tool_results (session_key, call_id, content) VALUES (?1, ?2, ?3)",
                params![key.as_str(), call_id, content],
            )?;
        }
        Record::Used(row) => {
            let UsedRow { key, usage, model } = &**row;
            st.exec(
                "UPDATE sessions SET usage_json = ?2, model = ?3 WHERE key = ?1",
                params![key.as_str(), serde_json::to_string(usage)?, model.to_string()],
            )?;
        }
        Record::RunEnded(end) if end.forget => {
            // `cleanup: delete`: the rows go, so they are not brought up to date first;
            // only the result stays, in the outbox, until its parent has it.
            insert_announce(st, end.announce.as_ref(), now)?;
            let key = end.key.as_str();
            st.exec("DELETE FROM messages WHERE session_key = ?1", params![key])?;
            st.exec("DELETE FROM tool_results WHERE session_key = ?1", params![key])?;
            st.exec("DELETE FROM sessions WHERE key = ?1", params![key])?;
        }
        Record::RunEnded(end) => {
            let status = if end.idle { StoredStatus::Idle } else { StoredStatus::Ended };
            st.exec(
                "UPDATE sessions SET status = ?3, outcome = ?4, final_text = ?5, usage_json = ?6, ended_at_ms = ?7
                 WHERE key = ?1 AND run_id = ?2",
                params![
                    end.key.as_str(),
                    end.run_id.as_str(),
                    status.as_str(),
                    end.outcome.as_str(),
                    end.text,
                    serde_json::to_string(&end.usage)?,
                    end.ended_at_ms as i64
                ],
            )?;
            insert_announce(st, end.announce.as_ref(), now)?;
        }
        Record::Stopped { key } => {
            st.exec("UPDATE sessions SET status = 'ended' WHERE key = ?1 AND status = 'idle'", params![key.as_str()])?;
        }
        Record::Undeliverable { id, reason } => {
            st.exec("UPDATE outbox SET undeliverable = ?2 WHERE id = ?1", params![id.as_str(), &**reason])?;
        }
        Record::StoppedCleanly => {
            st.exec("UPDATE sessions SET resumes = 0 WHERE status = 'running'", [])?;
            st.exec("UPDATE outbox SET attempts = 0 WHERE delivered_at_ms IS NULL", [])?;
        }
        // The embedded store has no work queue: a spawn placed on workers is refused
        // before it is made (`spawn::plan`), so these never reach it.
        Record::Queued(_) | Record::Revoked { .. } => {}
        Record::Forgotten { keys } => {
            for key in keys.iter() {
                let key = key.as_str();
                st.exec("DELETE FROM messages WHERE session_key = ?1", params![key])?;
                st.exec("DELETE FROM tool_results WHERE session_key = ?1", params![key])?;
                st.exec("DELETE FROM sessions WHERE key = ?1", params![key])?;
                st.exec("DELETE FROM outbox WHERE parent_key = ?1", params![key])?;
            }
        }
    }
    Ok(())
}

/// A child's result on its way to its parent, kept until delivered.
fn insert_announce(st: &mut Statements, announce: Option<&Announce>, now: u64) -> Result<(), StoreError> {
    let Some(a) = announce else { return Ok(()) };
    st.exec(
        "INSERT OR IGNORE INTO outbox (id, parent_key, parent_run_id, text, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![a.id.as_str(), a.parent.as_str(), a.parent_run_id.as_str(), a.text, now as i64],
    )?;
    Ok(())
}

/// A batch's statements, each taken from the connection's cache once per batch: the
/// cache finds a statement by hashing its SQL text, which cost more than some of
/// these writes when done for every record (about 15% of the writer's work).
struct Statements<'t> {
    tx: &'t Transaction<'t>,
    /// By the SQL text's address and length: each statement is a literal of this file.
    prepared: Vec<((usize, usize), rusqlite::CachedStatement<'t>)>,
}

impl<'t> Statements<'t> {
    fn exec(&mut self, sql: &'static str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        let key = (sql.as_ptr() as usize, sql.len());
        let at = match self.prepared.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.prepared.push((key, self.tx.prepare_cached(sql)?));
                self.prepared.len() - 1
            }
        };
        Ok(self.prepared[at].1.execute(params)?)
    }
}

/// Run a statement through the connection's statement cache: parsing the SQL would
/// cost more than most of these writes.
fn exec(tx: &Transaction, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
    Ok(tx.prepare_cached(sql)?.execute(params)?)
}

impl Sqlite {
    fn sessions(&self, recent: usize) -> Result<Vec<StoredSession>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, parent, agent_id, parent_run_id, spawn_json, run_id, task, model, status, outcome,
                    final_text, usage_json, started_at_ms, ended_at_ms, resumes, follow_ups, follow_up_task
             FROM sessions
             WHERE status = 'running' OR rowid IN (SELECT rowid FROM sessions ORDER BY rowid DESC LIMIT ?1)
             ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![recent.min(i64::MAX as usize) as i64], |row| {
            Ok(SessionColumns {
                key: row.get(0)?,
                parent: row.get(1)?,
                agent_id: row.get(2)?,
                parent_run_id: row.get(3)?,
                spawn_json: row.get(4)?,
                run_id: row.get(5)?,
                task: row.get(6)?,
                model: row.get(7)?,
                status: row.get(8)?,
                outcome: row.get(9)?,
                final_text: row.get(10)?,
                usage_json: row.get(11)?,
                started_at_ms: row.get(12)?,
                ended_at_ms: row.get(13)?,
                resumes: row.get(14)?,
                follow_ups: row.get(15)?,
                follow_up_task: row.get(16)?,
            })
        })?;
        let mut sessions = Vec::new();
        for row in rows {
            sessions.push(row?.into_stored()?);
        }
        Ok(sessions)
    }

    fn messages(&self, key: &SessionKey) -> Result<Vec<StoredMessage>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, json, reasoning_json, announce_id, seq FROM messages WHERE session_key = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![key.as_str()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, u32>(4)?,
            ))
        })?;
        let mut messages = Vec::new();
        for row in rows {
            let (run_id, json, reasoning, announce, seq) = row?;
            messages.push(columns::stored_message(seq, &run_id, &json, reasoning.as_deref(), announce.as_deref())?);
        }
        Ok(messages)
    }

    /// The children spawned in each of `runs`, oldest first, by parent run: one scan
    /// at a start (no index on the spawn path).
    fn children(&self, runs: &HashSet<RunId>) -> Result<HashMap<RunId, Vec<Child>>, StoreError> {
        let mut children: HashMap<RunId, Vec<Child>> = HashMap::new();
        if runs.is_empty() {
            return Ok(children);
        }
        let mut stmt = self.conn.prepare(
            "SELECT parent_run_id, key, spawn_json, run_id, model, follow_ups FROM sessions
             WHERE parent_run_id IS NOT NULL ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, u32>(5)?,
            ))
        })?;
        for row in rows {
            let (parent_run, key, spawn, run_id, model, follow_ups) = row?;
            let parent_run = RunId::from(parent_run.as_str());
            if !runs.contains(&parent_run) {
                continue;
            }
            let child = columns::child(&key, &spawn, &run_id, &model, follow_ups)?;
            children.entry(parent_run).or_default().push(child);
        }
        Ok(children)
    }

    fn tool_results(&self, key: &SessionKey) -> Result<HashMap<String, String>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT call_id, content FROM tool_results WHERE session_key = ?1")?;
        let rows = stmt.query_map(params![key.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn outbox(&self) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, parent_key, parent_run_id, text, attempts FROM outbox
             WHERE delivered_at_ms IS NULL AND undeliverable IS NULL ORDER BY created_at_ms, id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(Pending {
                announce: Announce {
                    id: RunId::from(row.get::<_, String>(0)?.as_str()),
                    parent: SessionKey::from(row.get::<_, String>(1)?.as_str()),
                    parent_run_id: RunId::from(row.get::<_, String>(2)?.as_str()),
                    text: row.get(3)?,
                },
                attempts: row.get(4)?,
            })
        })?;
        // One whose parent already holds it cannot be here (the message that carries it
        // marks it delivered in the same transaction), and the parent's turn drops a
        // second delivery by its key anyway.
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
