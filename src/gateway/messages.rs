//! Messages to and from the gateway actor, and the domain values they carry.
//!
//! Commands are imperatives (`Spawn`, `Kill`, `StartMain`), events are past tense
//! (`RunEnded`). A session's authority travels with it: every command from a session
//! carries the session's [`Capability`], which the gateway checks before acting.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::capability::Capability;
use crate::keys::{RunId, SessionKey};
use crate::model::{Message as ChatMessage, ModelRef, Usage};

/// How a run ended. Typed supervision: the gateway decides what follows from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Killed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What happens to a child session's record after it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    #[default]
    Keep,
    Delete,
}

/// The arguments of `sessions_spawn`, as the model writes them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpawnRequest {
    pub task: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub run_timeout_seconds: Option<f64>,
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
}

/// The immediate answer to a spawn; serialised as the `sessions_spawn` tool result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum SpawnReply {
    #[serde(rename_all = "camelCase")]
    Accepted { run_id: RunId, child_session_key: SessionKey, resolved_model: ModelRef },
    /// Refused by policy or a limit; `limit`/`value` name the limit when one was hit.
    Forbidden {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<u64>,
    },
    /// The request itself was bad (empty task, unknown agent, unusable model).
    Error { error: String },
}

impl SpawnReply {
    pub fn limit(limit: &'static str, value: u64, error: String) -> SpawnReply {
        SpawnReply::Forbidden { error, limit: Some(limit), value: Some(value) }
    }

    pub fn forbidden(error: String) -> SpawnReply {
        SpawnReply::Forbidden { error, limit: None, value: None }
    }
}

/// A session asks for a child.
#[derive(Message)]
#[rtype(result = "SpawnReply")]
pub struct Spawn {
    pub parent: Capability,
    pub request: SpawnRequest,
    /// When the parent sent it; the gateway records sent → child started → ack as the
    /// spawn latency.
    pub sent_at: std::time::Instant,
}

/// Start a task on the main session of an agent (created on first use).
#[derive(Message)]
#[rtype(result = "Result<RunStarted, GatewayError>")]
pub struct StartMain {
    pub agent_id: String,
    pub task: String,
    pub run_timeout: Option<Duration>,
    pub budget_tokens: Option<u64>,
    /// A cost budget for the whole tree, in USD.
    pub budget_usd: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStarted {
    pub session_key: SessionKey,
    pub run_id: RunId,
}

/// A session's run finished on its own (ok, error, timeout).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunEnded {
    pub key: SessionKey,
    pub run_id: RunId,
    pub outcome: Outcome,
    pub text: String,
    pub usage: Usage,
    pub transcript: Vec<ChatMessage>,
}

/// A session actor is gone (sent from its drop, so also after a panic). The gateway
/// ends the run if the session never reported its end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionGone {
    pub key: SessionKey,
    pub run_id: RunId,
}

/// A session's model call ended: what it spent (counted at once, so a session killed
/// later still shows it), what the operator should know (retries, a fallback), and the
/// model the session now runs on if that changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ModelCalled {
    pub key: SessionKey,
    pub usage: Usage,
    pub notices: Vec<String>,
    pub model: Option<ModelRef>,
}

/// Kill a session and its whole subtree. `caller: None` is the operator (the process
/// owner); a session may only kill inside its own subtree.
#[derive(Message)]
#[rtype(result = "Result<usize, GatewayError>")]
pub struct Kill {
    pub caller: Option<Capability>,
    pub target: SessionKey,
}

/// List the sessions visible to the caller (its subtree; everything for the operator).
#[derive(Message)]
#[rtype(result = "Result<Vec<SessionInfo>, GatewayError>")]
pub struct ListSessions {
    pub caller: Option<Capability>,
}

/// A session's transcript.
#[derive(Message)]
#[rtype(result = "Result<Vec<ChatMessage>, GatewayError>")]
pub struct GetHistory {
    pub caller: Option<Capability>,
    pub target: SessionKey,
}

/// Deliver a message to a session: a running session sees it on its next turn, an idle
/// main session starts a run with it.
#[derive(Message)]
#[rtype(result = "Result<SendOutcome, GatewayError>")]
pub struct SendTo {
    pub caller: Option<Capability>,
    pub target: SessionKey,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum SendOutcome {
    Delivered,
    #[serde(rename_all = "camelCase")]
    Started {
        run_id: RunId,
    },
}

/// Resolve when the run ends (at once if it already has).
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<RunSummary>, GatewayError>")]
pub struct WaitRun {
    pub run_id: RunId,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run_id: RunId,
    pub session_key: SessionKey,
    pub outcome: Outcome,
    pub text: String,
    pub usage: Usage,
}

/// Stop everything: kill every running session, then answer.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// A row of `sessions_list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_key: SessionKey,
    pub agent_id: String,
    pub model: ModelRef,
    pub parent: Option<SessionKey>,
    pub label: Option<String>,
    pub depth: u32,
    pub status: &'static str,
    pub outcome: Option<Outcome>,
    pub run_id: RunId,
    pub active_children: usize,
    pub usage: Usage,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown agent '{0}'")]
    UnknownAgent(String),
    #[error("no session {0}")]
    NoSuchSession(SessionKey),
    #[error("no run {0}")]
    NoSuchRun(RunId),
    #[error("session {target} is outside the caller's tree; a session can only reach its own subtree")]
    NotVisible { target: SessionKey },
    #[error("session {0} has ended and takes no more messages")]
    Ended(SessionKey),
    #[error("session {0} is busy with a run; wait for it or send to it")]
    Busy(SessionKey),
    #[error("{0}")]
    Capability(#[from] crate::capability::CapabilityError),
    #[error("{0}")]
    Denied(#[from] crate::scope::Denied),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}
