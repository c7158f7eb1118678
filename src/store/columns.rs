//! How records become column values and stored rows become domain values again: the
//! part of the schema both backends share ([`super::sqlite`], [`super::postgres`]), so
//! a session written by one reads back the same from the other. The backends keep only
//! their SQL and their drivers' types.

use std::borrow::Cow;

use super::records::*;
use super::StoreError;
use crate::gateway::{Cleanup, Outcome};
use crate::keys::{RunId, SessionKey};
use crate::model::thinking::Thinking;
use crate::model::{Message, ModelRef, Reasoning, Usage};

/// How a session was spawned, as one column: read back only at a start. Written with
/// what it borrows from the record, and without the fields at their defaults (most of
/// them, for most sessions): this column is a large part of the writer's work per spawn.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SpawnJson<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_false")]
    model_explicit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thinking: Option<Cow<'a, str>>,
    cleanup: Cleanup,
    #[serde(default, skip_serializing_if = "is_false")]
    stays: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    forked: bool,
    pub(super) grant: Grant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workspace: Option<Cow<'a, str>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a> SpawnJson<'a> {
    /// The column of a new session's row.
    pub(super) fn of(row: &'a SessionRow) -> SpawnJson<'a> {
        let s = &row.spawned;
        SpawnJson {
            label: row.label.as_deref().map(Cow::Borrowed),
            model_explicit: s.model_explicit,
            thinking: s.thinking.map(|t| Cow::Borrowed(t.as_str())),
            cleanup: s.cleanup,
            stays: s.stays,
            forked: s.forked,
            grant: s.grant,
            call_id: s.call_id.as_deref().map(Cow::Borrowed),
            workspace: s.workspace.as_deref().map(Cow::Borrowed),
        }
    }

    pub(super) fn parse(json: &'a str) -> Result<SpawnJson<'a>, StoreError> {
        serde_json::from_str(json).map_err(|e| corrupt("a session's spawn record", e))
    }
}

/// A `sessions` row as read (every column of the SELECT both backends run at a start).
pub(super) struct SessionColumns {
    pub key: String,
    pub parent: Option<String>,
    pub agent_id: String,
    pub parent_run_id: Option<String>,
    pub spawn_json: String,
    pub run_id: String,
    pub task: String,
    pub model: String,
    pub status: String,
    pub outcome: Option<String>,
    pub final_text: Option<String>,
    pub usage_json: String,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub resumes: u32,
    pub follow_ups: u32,
    pub follow_up_task: Option<String>,
}

impl SessionColumns {
    pub(super) fn into_stored(self) -> Result<StoredSession, StoreError> {
        let model = ModelRef::parse(&self.model).map_err(|e| corrupt("a run's model", e))?;
        let spawn = SpawnJson::parse(&self.spawn_json)?;
        Ok(StoredSession {
            row: SessionRow {
                key: SessionKey::from(self.key.as_str()),
                parent: self.parent.as_deref().map(SessionKey::from),
                agent_id: self.agent_id.into(),
                label: spawn.label.map(Cow::into_owned),
                spawned: Spawned {
                    model_explicit: spawn.model_explicit,
                    thinking: spawn.thinking.as_deref().and_then(Thinking::parse),
                    cleanup: spawn.cleanup,
                    stays: spawn.stays,
                    forked: spawn.forked,
                    grant: spawn.grant,
                    parent_run_id: self.parent_run_id.as_deref().map(RunId::from),
                    call_id: spawn.call_id.map(Cow::into_owned),
                    workspace: spawn.workspace.map(|w| w.into_owned().into_boxed_str()),
                },
                run: RunRow {
                    run_id: RunId::from(self.run_id.as_str()),
                    task: self.task,
                    model,
                    started_at_ms: self.started_at_ms as u64,
                },
            },
            status: StoredStatus::parse(&self.status),
            outcome: self.outcome.as_deref().and_then(outcome_of),
            final_text: self.final_text,
            usage: serde_json::from_str::<Usage>(&self.usage_json).unwrap_or_default(),
            ended_at_ms: self.ended_at_ms.map(|e| e as u64),
            resumes: self.resumes,
            follow_ups: self.follow_ups,
            follow_up_task: self.follow_up_task,
        })
    }
}

/// A child as its parent's recovery needs it, from its `sessions` columns.
pub(super) fn child(
    key: &str,
    spawn_json: &str,
    run_id: &str,
    model: &str,
    follow_ups: u32,
) -> Result<Child, StoreError> {
    let spawn = SpawnJson::parse(spawn_json)?;
    Ok(Child {
        key: SessionKey::from(key),
        call_id: spawn.call_id.map(Cow::into_owned),
        run_id: RunId::from(run_id),
        model: ModelRef::parse(model).map_err(|e| corrupt("a run's model", e))?,
        stays: spawn.stays,
        forked: spawn.forked,
        follow_ups,
    })
}

/// A transcript message from its `messages` columns.
pub(super) fn stored_message(
    seq: u32,
    run_id: &str,
    json: &str,
    reasoning: Option<&str>,
    announce: Option<&str>,
) -> Result<StoredMessage, StoreError> {
    let mut message: Message = serde_json::from_str(json).map_err(|e| corrupt("a transcript message", e))?;
    if let (Message::Assistant { reasoning: slot, .. }, Some(r)) = (&mut message, reasoning) {
        let blocks: Vec<Reasoning> = serde_json::from_str(r).map_err(|e| corrupt("a turn's reasoning", e))?;
        *slot = crate::model::boxed(blocks);
    }
    Ok(StoredMessage { seq, run_id: RunId::from(run_id), message, delivers: announce.map(RunId::from) })
}

/// The `reasoning_json` column of a message.
pub(super) fn reasoning_json(message: &Message) -> Result<Option<String>, StoreError> {
    Ok(match message {
        Message::Assistant { reasoning: Some(r), .. } => Some(serde_json::to_string(&**r)?),
        _ => None,
    })
}

pub(super) fn outcome_of(s: &str) -> Option<Outcome> {
    Some(match s {
        "ok" => Outcome::Ok,
        "error" => Outcome::Error,
        "timeout" => Outcome::Timeout,
        "killed" => Outcome::Killed,
        "interrupted" => Outcome::Interrupted,
        _ => return None,
    })
}

/// A stored value that does not parse: the state was written by something else.
pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}
