//! What the runtime tells the store, and what the store gives back at start-up.
//!
//! [`Record`]s are facts, sent fire-and-forget by the gateway and the sessions and
//! committed in groups by the store's writer; the senders never wait for the disk. They
//! are domain values (keys, messages, usage), serialised on the writer's thread, so a
//! spawn pays a lock, a push and a few reference-count bumps, not JSON encoding.
//! [`Durable`] is the whole state a start needs: runs that were running, their
//! transcripts and recorded tool results, undelivered announcements, and the recent
//! ended sessions for history.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::gateway::{Cleanup, Outcome};
use crate::keys::{RunId, SessionKey};
use crate::model::thinking::Thinking;
use crate::model::{Message, ModelRef, Usage};

/// The authority a session was granted, as recorded: enough to derive the same
/// capability again at recovery, through the same narrowing function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub scopes: u16,
    pub depth: u32,
    pub max_depth: u32,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_micro_usd: Option<u64>,
}

/// How a session was made: what recovery needs to start its actor again.
#[derive(Clone, Debug, PartialEq)]
pub struct Spawned {
    pub model_explicit: bool,
    pub thinking: Option<Thinking>,
    pub cleanup: Cleanup,
    pub stays: bool,
    /// Started with a copy of its parent's conversation (`context: "fork"`).
    pub forked: bool,
    pub grant: Grant,
    /// The parent's run this session was spawned in, and the tool call that did it.
    pub parent_run_id: Option<RunId>,
    pub call_id: Option<String>,
    /// Its own workspace (a directory inside its parent's, as `cwd` asked), when it
    /// has one apart from its parent's.
    pub workspace: Option<Box<str>>,
}

/// A new session with its first run.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    pub key: SessionKey,
    pub parent: Option<SessionKey>,
    pub agent_id: Arc<str>,
    pub label: Option<String>,
    pub spawned: Spawned,
    pub run: RunRow,
}

impl SessionRow {
    /// A main session's row: no parent, no spawn options, it stays for more runs.
    pub fn main(key: SessionKey, agent_id: Arc<str>, grant: Grant, run: RunRow) -> SessionRow {
        SessionRow {
            key,
            parent: None,
            agent_id,
            label: None,
            spawned: Spawned {
                model_explicit: false,
                thinking: None,
                cleanup: Cleanup::Keep,
                stays: true,
                forked: false,
                grant,
                parent_run_id: None,
                call_id: None,
                workspace: None,
            },
            run,
        }
    }
}

/// One run of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    pub run_id: RunId,
    pub task: String,
    pub model: ModelRef,
    pub started_at_ms: u64,
}

/// A child's outcome on its way to its parent: recorded with the child's end, in the
/// same transaction, and marked delivered by the transcript message it becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct Announce {
    /// The idempotency key: the child's run id.
    pub id: RunId,
    pub parent: SessionKey,
    pub parent_run_id: RunId,
    /// The completion event as the parent's model reads it.
    pub text: String,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEnd {
    pub key: SessionKey,
    pub run_id: RunId,
    pub outcome: Outcome,
    pub text: String,
    pub usage: Usage,
    pub ended_at_ms: u64,
    /// The session stays for more runs (an idle main session or `session` child).
    pub idle: bool,
    /// `cleanup: delete`: the session's rows go (its result stays in the outbox until
    /// delivered).
    pub forget: bool,
    pub announce: Option<Announce>,
}

/// A fact for the store. Every variant is at most a pointer or two keys, so a queued
/// record takes a small slot (a burst of spawns queues thousands of them).
#[derive(Debug)]
pub enum Record {
    SessionStarted(Box<SessionRow>),
    /// A new run of an existing session (a main session's next task, with its new
    /// grant), or a `session` child's follow-up (the same run id again, numbered).
    RunStarted(Box<RunStart>),
    /// Transcript messages, with the announcements among them.
    Messages(Box<Journaled>),
    /// One tool call's result, recorded as soon as the tool returned (before the batch
    /// it belongs to is done), so a resumed run never runs it again.
    ToolResult(Box<ToolResultRow>),
    /// The run's usage so far, and the model it now runs on.
    Used(Box<UsedRow>),
    RunEnded(Box<RunEnd>),
    /// An idle session was stopped (killed, reset, or its parent's run ended).
    Stopped {
        key: SessionKey,
    },
    /// An announcement that could not be delivered, with why; the operator sees it.
    Undeliverable {
        id: RunId,
        reason: Box<str>,
    },
    /// A session and its subtree were forgotten (`sessions.reset`/`delete`).
    Forgotten {
        keys: Box<[SessionKey]>,
    },
    /// The gateway stopped cleanly: what it left running was not a crash, so the
    /// counts of starts without progress begin again.
    StoppedCleanly,
    /// A session placed on workers, queued for one to claim (with its
    /// [`SessionStarted`](Record::SessionStarted), in the same transaction).
    Queued(Box<QueuedWork>),
    /// A session on a worker ended here (killed, or its parent's run ended): the worker
    /// holding it stops it.
    Revoked {
        key: SessionKey,
    },
}

/// A spawn placed on workers, as the work queue holds it.
#[derive(Debug)]
pub struct QueuedWork {
    pub key: SessionKey,
    pub agent_id: Arc<str>,
    /// The signed spawn ([`crate::worker::token`]).
    pub token: String,
}

#[derive(Debug)]
pub struct RunStart {
    pub key: SessionKey,
    pub run: RunRow,
    pub grant: Option<Grant>,
    pub follow_up: u32,
}

/// Transcript messages from `first_seq` on; `delivers` names the announcements (by
/// idempotency key) some of them are, each with its position.
#[derive(Debug)]
pub struct Journaled {
    pub key: SessionKey,
    pub run_id: RunId,
    pub first_seq: u32,
    pub messages: Vec<Message>,
    pub delivers: Vec<(u32, RunId)>,
}

#[derive(Debug)]
pub struct ToolResultRow {
    pub key: SessionKey,
    /// [`crate::session::tools::journal_id`]: the turn's position and the call id.
    pub call_id: String,
    pub content: String,
}

#[derive(Debug)]
pub struct UsedRow {
    pub key: SessionKey,
    pub usage: Usage,
    pub model: ModelRef,
}

impl Record {
    /// The record's name, for the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::SessionStarted(_) => "session started",
            Record::RunStarted(_) => "run started",
            Record::Messages(_) => "messages",
            Record::ToolResult(_) => "tool result",
            Record::Used(_) => "usage",
            Record::RunEnded(_) => "run ended",
            Record::Stopped { .. } => "session stopped",
            Record::Undeliverable { .. } => "undeliverable result",
            Record::Forgotten { .. } => "sessions forgotten",
            Record::StoppedCleanly => "clean stop",
            Record::Queued(_) => "queued for a worker",
            Record::Revoked { .. } => "revoked on its worker",
        }
    }
}

/// A session as stored, with its latest run.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSession {
    pub row: SessionRow,
    /// `running`, `ended` (with its outcome) or `idle`.
    pub status: StoredStatus,
    pub outcome: Option<Outcome>,
    pub final_text: Option<String>,
    pub usage: Usage,
    pub ended_at_ms: Option<u64>,
    /// Starts of this run after a restart with no transcript progress since.
    pub resumes: u32,
    /// Follow-ups a `session` child has taken in this run.
    pub follow_ups: u32,
    /// The message of its latest follow-up (its run's task is the spawn's).
    pub follow_up_task: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredStatus {
    Running,
    Idle,
    Ended,
}

impl StoredStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredStatus::Running => "running",
            StoredStatus::Idle => "idle",
            StoredStatus::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> StoredStatus {
        match s {
            "running" => StoredStatus::Running,
            "idle" => StoredStatus::Idle,
            _ => StoredStatus::Ended,
        }
    }
}

/// A transcript message as stored: its run, and the announcement it delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    /// Its position in the session's transcript.
    pub seq: u32,
    pub run_id: RunId,
    pub message: Message,
    pub delivers: Option<RunId>,
}

/// An announcement not yet delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub announce: Announce,
    pub attempts: u32,
}

/// Everything a start needs from the store.
#[derive(Debug, Default)]
pub struct Durable {
    /// Sessions whose run was running, and the most recent others (for history),
    /// oldest first.
    pub sessions: Vec<StoredSession>,
    /// Transcripts of the running ones.
    pub transcripts: HashMap<SessionKey, Vec<StoredMessage>>,
    /// Recorded tool results of the running ones, by call id.
    pub tool_results: HashMap<SessionKey, HashMap<String, String>>,
    /// Announcements recorded and not delivered.
    pub outbox: Vec<Pending>,
    /// Every child each running session spawned in its current run, oldest first.
    pub children: HashMap<SessionKey, Vec<Child>>,
    /// Where the loaded sessions placed on workers run or ran (`worker`, or
    /// `worker:<id>`); the others run in the gateway's process.
    pub placed: HashMap<SessionKey, String>,
}

/// A child as its parent's spawn call made it: what recovery answers that call with.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub key: SessionKey,
    pub call_id: Option<String>,
    pub run_id: RunId,
    pub model: ModelRef,
    pub stays: bool,
    pub forked: bool,
    /// Follow-ups it took (each one more end its parent waits for).
    pub follow_ups: u32,
}
