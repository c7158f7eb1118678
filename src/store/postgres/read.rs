//! The Postgres backend's reads: what a start loads and a transcript, each inside one
//! read-only snapshot ([`super::Postgres`] opens it), decoded as the SQLite backend
//! decodes the same columns ([`crate::store::columns`]).

use std::collections::{HashMap, HashSet};

use postgres::{Row, Transaction};

use super::{count, Params, Prepared};
use crate::keys::{RunId, SessionKey};
use crate::store::columns::{self, SessionColumns};
use crate::store::records::*;
use crate::store::StoreError;

/// A read-only snapshot with the connection's prepared statements.
pub(super) struct Reader<'a> {
    pub(super) tx: Transaction<'a>,
    pub(super) prepared: &'a mut Prepared,
}

impl Reader<'_> {
    fn query(&mut self, sql: &'static str, params: Params) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepared.get(&mut self.tx, sql)?;
        Ok(self.tx.query(&statement, params)?)
    }

    pub(super) fn query_opt(&mut self, sql: &'static str, params: Params) -> Result<Option<Row>, StoreError> {
        let statement = self.prepared.get(&mut self.tx, sql)?;
        Ok(self.tx.query_opt(&statement, params)?)
    }

    pub(super) fn sessions(&mut self, recent: usize) -> Result<Vec<StoredSession>, StoreError> {
        let rows = self.query(
            "SELECT key, parent, agent_id, parent_run_id, spawn_json, run_id, task, model, status, outcome,
                    final_text, usage_json, started_at_ms, ended_at_ms, resumes, follow_ups, follow_up_task
             FROM sessions
             WHERE status = 'running' OR pos IN (SELECT pos FROM sessions ORDER BY pos DESC LIMIT $1)
             ORDER BY pos",
            &[&(recent.min(i64::MAX as usize) as i64)],
        )?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let columns = SessionColumns {
                key: row.try_get(0)?,
                parent: row.try_get(1)?,
                agent_id: row.try_get(2)?,
                parent_run_id: row.try_get(3)?,
                spawn_json: row.try_get(4)?,
                run_id: row.try_get(5)?,
                task: row.try_get(6)?,
                model: row.try_get(7)?,
                status: row.try_get(8)?,
                outcome: row.try_get(9)?,
                final_text: row.try_get(10)?,
                usage_json: row.try_get(11)?,
                started_at_ms: row.try_get(12)?,
                ended_at_ms: row.try_get(13)?,
                resumes: count(row.try_get(14)?, "a session's resumes")?,
                follow_ups: count(row.try_get(15)?, "a session's follow-ups")?,
                follow_up_task: row.try_get(16)?,
            };
            sessions.push(columns.into_stored()?);
        }
        Ok(sessions)
    }

    pub(super) fn messages(&mut self, key: &SessionKey) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = self.query(
            "SELECT run_id, json, reasoning_json, announce_id, seq FROM messages WHERE session_key = $1 ORDER BY seq",
            &[&key.as_str()],
        )?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let (run_id, json): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
            let (reasoning, announce): (Option<&str>, Option<&str>) = (row.try_get(2)?, row.try_get(3)?);
            let seq = count(row.try_get(4)?, "a message's position")?;
            messages.push(columns::stored_message(seq, run_id, json, reasoning, announce)?);
        }
        Ok(messages)
    }

    /// The children spawned in each of `runs`, oldest first, by parent run: one scan
    /// at a start (no index on the spawn path).
    pub(super) fn children(&mut self, runs: &HashSet<RunId>) -> Result<HashMap<RunId, Vec<Child>>, StoreError> {
        let mut children: HashMap<RunId, Vec<Child>> = HashMap::new();
        if runs.is_empty() {
            return Ok(children);
        }
        let rows = self.query(
            "SELECT parent_run_id, key, spawn_json, run_id, model, follow_ups FROM sessions
             WHERE parent_run_id IS NOT NULL ORDER BY pos",
            &[],
        )?;
        for row in rows {
            let parent_run = RunId::from(row.try_get::<_, &str>(0)?);
            if !runs.contains(&parent_run) {
                continue;
            }
            let (key, spawn, run_id, model): (&str, &str, &str, &str) =
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
            let follow_ups = count(row.try_get(5)?, "a session's follow-ups")?;
            children.entry(parent_run).or_default().push(columns::child(key, spawn, run_id, model, follow_ups)?);
        }
        Ok(children)
    }

    /// Where the sessions placed on workers run or ran, by key.
    pub(super) fn placed(&mut self) -> Result<HashMap<SessionKey, String>, StoreError> {
        let rows = self.query("SELECT key, placement FROM sessions WHERE placement <> 'local'", &[])?;
        rows.iter().map(|row| Ok((SessionKey::from(row.try_get::<_, &str>(0)?), row.try_get(1)?))).collect()
    }

    pub(super) fn tool_results(&mut self, key: &SessionKey) -> Result<HashMap<String, String>, StoreError> {
        let rows = self.query("SELECT call_id, content FROM tool_results WHERE session_key = $1", &[&key.as_str()])?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    pub(super) fn outbox(&mut self) -> Result<Vec<Pending>, StoreError> {
        let rows = self.query(
            "SELECT id, parent_key, parent_run_id, text, attempts FROM outbox
             WHERE delivered_at_ms IS NULL AND undeliverable IS NULL ORDER BY created_at_ms, id",
            &[],
        )?;
        // One whose parent already holds it cannot be here (the message that carries it
        // marks it delivered in the same transaction), and the parent's turn drops a
        // second delivery by its key anyway.
        rows.iter()
            .map(|row| {
                Ok(Pending {
                    announce: Announce {
                        id: RunId::from(row.try_get::<_, &str>(0)?),
                        parent: SessionKey::from(row.try_get::<_, &str>(1)?),
                        parent_run_id: RunId::from(row.try_get::<_, &str>(2)?),
                        text: row.try_get(3)?,
                    },
                    attempts: count(row.try_get(4)?, "a result's delivery attempts")?,
                })
            })
            .collect()
    }
}
