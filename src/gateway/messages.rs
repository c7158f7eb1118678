//! Messages to and from the gateway actor, and the domain values they carry.
//!
//! Commands are imperatives (`Spawn`, `Kill`, `StartMain`), events are past tense
//! (`RunEnded`). A session's authority travels with it: every command from a session
//! carries the session's [`Capability`], which the gateway checks before acting.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::capability::Capability;
use crate::keys::{RunId, SessionKey};
use crate::model::thinking::Thinking;
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

/// The arguments of `sessions_spawn`, as the model writes them: OpenClaw 2026.9's
/// parameter set, so a prompt written for OpenClaw's spawn tool works unchanged. What
/// hivegate honours is typed here; what it reads but does not do (`unsupported`) and any
/// other name (`unknown`) make [`SpawnRequest::refusal`] name the parameter and why.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnRequest {
    /// Required; checked with the rest, so a misspelt name is named instead of `task`.
    #[serde(default)]
    pub task: String,
    #[serde(default)]
    pub label: Option<String>,
    /// OpenClaw's stable handle for the task; the label when none is given.
    #[serde(default)]
    pub task_name: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub run_timeout_seconds: Option<f64>,
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
    /// `run` (the default): the child ends with its first answer; `session`: it stays
    /// for follow-ups (`sessions_send`) until its parent's run ends.
    #[serde(default)]
    pub mode: Option<String>,
    /// `isolated` (the default): the child starts with only its task; `fork`: with a
    /// copy of the parent's conversation before it.
    #[serde(default)]
    pub context: Option<String>,
    /// The parent is told when the child ends; hivegate always does, so only `false`
    /// changes nothing but is accepted.
    #[serde(default)]
    pub expects_completion_message: Option<bool>,
    /// A reasoning level (`off` … `xhigh`, [`Thinking`]): `reasoning_effort` for chat
    /// completions, a thinking budget for Anthropic Messages.
    #[serde(default)]
    pub thinking: Option<serde_json::Value>,
    /// `runtime`, `thread`, `sandbox` and the other OpenClaw parameters: honoured only in
    /// the value that means what hivegate does anyway.
    #[serde(default)]
    pub runtime: Option<String>,
    #[serde(default)]
    pub thread: Option<serde_json::Value>,
    #[serde(default)]
    pub sandbox: Option<String>,
    /// The child's workspace: a directory inside the parent's (relative to it, or
    /// absolute inside it); the parent's when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// OpenClaw parameters that need what hivegate does not have (a project checkout, a
/// chat thread, session resumption, visibility groups).
const NOT_SUPPORTED: &[(&str, &str)] = &[
    ("resumeSessionId", "hivegate does not resume ended sessions"),
    ("streamTo", "streamed output goes to the gateway's event stream, not to a chosen target"),
    ("projectId", "hivegate has no projects"),
    ("projectGitUrl", "hivegate has no project checkouts"),
    ("worktree", "hivegate has no git worktrees"),
    ("worktreeName", "hivegate has no git worktrees"),
    ("worktreeBaseRef", "hivegate has no git worktrees"),
    ("visible", "hivegate has no chat surface to show a session on"),
    ("group", "hivegate has no session groups"),
];

impl SpawnRequest {
    /// Why this spawn asks for something hivegate does not do, naming the parameter; or
    /// `None` when everything it asks for is honoured.
    pub fn refusal(&self) -> Option<String> {
        let refused = |param: &str, value: &str, why: &str| Some(format!("{param} {value} is not supported: {why}"));
        match self.mode.as_deref() {
            None | Some("run") => {}
            Some("session") if self.cleanup == Some(Cleanup::Delete) => {
                return refused(
                    "cleanup",
                    "\"delete\"",
                    "a mode \"session\" child is kept for follow-ups; it goes when its parent's run ends",
                )
            }
            Some("session") => {}
            Some(other) => return refused("mode", &format!("{other:?}"), "mode is \"run\" or \"session\""),
        }
        match self.context.as_deref() {
            None | Some("isolated") | Some("fork") => {}
            Some(other) => return refused("context", &format!("{other:?}"), "context is \"isolated\" or \"fork\""),
        }
        match self.runtime.as_deref() {
            None | Some("subagent") => {}
            Some(other) => {
                return refused("runtime", &format!("{other:?}"), "hivegate runs subagents only (no ACP harness)")
            }
        }
        match &self.thread {
            None | Some(serde_json::Value::Bool(false)) | Some(serde_json::Value::Null) => {}
            Some(_) => return refused("thread", "binding", "hivegate has no chat threads to bind a child to"),
        }
        if let Err(why) = self.thinking() {
            return Some(why);
        }
        if self.sandbox.as_deref() == Some("require") {
            return refused("sandbox", "\"require\"", "hivegate has no sandbox; executors run in the gateway");
        }
        let mut other = self.other.keys();
        other.next().map(|name| match NOT_SUPPORTED.iter().find(|(n, _)| n == name) {
            Some((_, why)) => format!("{name} is not supported: {why}"),
            None => format!("{name} is not a sessions_spawn parameter"),
        })
    }

    /// The spawn's mode, once [`SpawnRequest::refusal`] found nothing to refuse.
    pub fn spawn_mode(&self) -> SpawnMode {
        if self.mode.as_deref() == Some("session") {
            SpawnMode::Session
        } else {
            SpawnMode::Run
        }
    }

    /// Whether the child starts with a copy of the parent's conversation.
    pub fn forks(&self) -> bool {
        self.context.as_deref() == Some("fork")
    }

    /// The reasoning level asked for, or why it cannot be read.
    pub fn thinking(&self) -> Result<Option<Thinking>, String> {
        match &self.thinking {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Thinking::parse(text)
                .map(Some)
                .ok_or_else(|| format!("thinking {text:?} is not a level: one of {}", crate::model::thinking::LEVELS)),
            Some(other) => Err(format!("thinking {other} is not a level: one of {}", crate::model::thinking::LEVELS)),
        }
    }
}

/// The immediate answer to a spawn; serialised as the `sessions_spawn` tool result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum SpawnReply {
    #[serde(rename_all = "camelCase")]
    Accepted {
        run_id: RunId,
        child_session_key: SessionKey,
        resolved_model: ModelRef,
        /// As OpenClaw answers: the mode and context the child runs with, and that the
        /// parent is told at the end (a constant).
        mode: SpawnMode,
        context: ContextMode,
        expects_completion_message: Completes,
    },
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

/// How long a child lives: `run` ends it with its first answer; a `session` child stays
/// idle after an ok answer and takes follow-ups from its parent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpawnMode {
    #[default]
    Run,
    Session,
}

/// What a child starts with: only its task, or a copy of its parent's conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextMode {
    #[default]
    Isolated,
    Fork,
}

/// `true`: the parent is told when the child ends.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Completes;

impl Serialize for Completes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
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
    /// The parent's conversation so far, sent only when a spawn of its batch asks for
    /// `context: "fork"` ([`crate::session::turn::forked`]).
    pub history: Option<std::sync::Arc<[ChatMessage]>>,
    /// The parent's tool call that asked, recorded with the child so that recovery can
    /// answer that call with the child's acceptance.
    pub call_id: Option<Box<str>>,
    /// The parent's run span, when traces are exported: the child's is parented to it.
    pub trace: Option<crate::telemetry::TraceParent>,
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
    /// The run's id (an operator's idempotency key); a fresh one when `None`.
    pub run_id: Option<RunId>,
    /// The main session to run in (`agent:<agentId>:<name>`, created on first use);
    /// the agent's `agent:<agentId>:main` when `None`.
    pub session_key: Option<SessionKey>,
}

/// The agents this gateway runs, with the models each may use and whether the model
/// client can serve each (a provider and its API key are configured).
#[derive(Message)]
#[rtype(result = "Vec<AgentInfo>")]
pub struct ListAgents;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub id: String,
    pub description: String,
    pub model: ModelRef,
    pub fallbacks: Vec<ModelRef>,
    /// The model its subagents run on by default (`[subagents] model`), if set.
    pub subagent_model: Option<ModelRef>,
    /// The models above that cannot be called, with why.
    pub unavailable: Vec<(ModelRef, String)>,
}

impl StartMain {
    /// `task` on `agent_id`'s main session, with the configured limits and no budget.
    pub fn new(agent_id: impl Into<String>, task: impl Into<String>) -> StartMain {
        StartMain {
            agent_id: agent_id.into(),
            task: task.into(),
            run_timeout: None,
            budget_tokens: None,
            budget_usd: None,
            run_id: None,
            session_key: None,
        }
    }
}

/// Forget a session that is not running, with its ended subtree: an idle main session's
/// actor stops and its transcript goes, so the next run on its key starts fresh.
/// Answers whether there was anything to forget.
#[derive(Message)]
#[rtype(result = "Result<bool, GatewayError>")]
pub struct ForgetSession {
    pub target: SessionKey,
}

/// A run's tree as `run --json` shows it, with its final answer: the current run of its
/// session only (a main session keeps no older runs).
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, GatewayError>")]
pub struct ShowRun {
    pub run_id: RunId,
}

/// Abort a session's running run (and so its whole tree), if it has one; `run_id`,
/// when given, must be the run that is running. Answers the aborted run.
#[derive(Message)]
#[rtype(result = "Result<Option<RunId>, GatewayError>")]
pub struct Abort {
    pub target: SessionKey,
    pub run_id: Option<RunId>,
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
    /// An idle main session started a new run with the message.
    #[serde(rename_all = "camelCase")]
    Started {
        run_id: RunId,
    },
    /// An idle `mode: "session"` child took the message as a follow-up; its parent
    /// hears of its end again.
    #[serde(rename_all = "camelCase")]
    Resumed {
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

/// Stop everything; new runs, spawns and follow-ups are refused from now on
/// ([`GatewayError::ShuttingDown`]). With `resume_later`, every session stops at its next
/// step boundary with its run still `running` in the store, to resume at the next start;
/// without (an ephemeral state directory), every run ends `interrupted`. Answers how
/// many runs were running.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown {
    pub resume_later: bool,
}

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
    /// The current (or last) run's start and end, in Unix milliseconds.
    pub started_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// Where it runs: `local` (this process), `worker` (queued for a worker) or
    /// `worker:<id>` (claimed by that worker).
    pub placement: String,
    /// The first line of the run's final text (its answer, or why it failed), at most
    /// [`SUMMARY_CHARS`] characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// The longest [`SessionInfo::summary`].
pub const SUMMARY_CHARS: usize = 200;

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
    /// A limit refused the work; the text names the limit.
    #[error("{0}")]
    Limit(String),
    #[error("session {target} is waiting for a follow-up that only its parent {parent} can give")]
    NotParent { target: SessionKey, parent: SessionKey },
    #[error("session {0} is busy with a run; wait for it or send to it")]
    Busy(SessionKey),
    #[error("{0}")]
    Capability(#[from] crate::capability::CapabilityError),
    #[error("{0}")]
    Denied(#[from] crate::scope::Denied),
    #[error("the gateway is shutting down; try again once it has started again")]
    ShuttingDown,
    #[error("{0}")]
    Store(String),
    #[error("session {0} runs on a worker; messages to sessions on workers are not supported yet")]
    OnWorker(SessionKey),
    #[error("run id '{0}' is already used by an earlier run; pick another idempotency key")]
    RunIdTaken(RunId),
    #[error("session key '{key}' is not a main session of agent '{agent_id}'; expected agent:{agent_id}:<name>")]
    BadSessionKey { key: String, agent_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: serde_json::Value) -> SpawnRequest {
        serde_json::from_value(args).unwrap()
    }

    #[test]
    fn openclaw_spawn_arguments_are_read_and_what_is_not_done_is_refused_by_name() {
        let seed =
            parse(json!({"task": "t", "label": "l", "mode": "run", "model": "cherry-nvidia/qwen/qwen3-235b-a22b",
            "context": "isolated", "expectsCompletionMessage": true, "runtime": "subagent", "thread": false,
            "sandbox": "inherit", "runTimeoutSeconds": 30, "cleanup": "keep", "taskName": "t1"}));
        assert_eq!((seed.refusal(), seed.thinking()), (None, Ok(None)));
        assert_eq!(seed.run_timeout_seconds, Some(30.0));
        assert_eq!((seed.spawn_mode(), seed.forks()), (SpawnMode::Run, false));
        let kept = parse(json!({"task": "t", "mode": "session", "context": "fork"}));
        assert_eq!((kept.refusal(), kept.spawn_mode(), kept.forks()), (None, SpawnMode::Session, true));
        for (args, why) in [
            (
                json!({"task": "t", "mode": "forever"}),
                "mode \"forever\" is not supported: mode is \"run\" or \"session\"",
            ),
            (
                json!({"task": "t", "mode": "session", "cleanup": "delete"}),
                "cleanup \"delete\" is not supported: a mode \"session\" child is kept",
            ),
            (json!({"task": "t", "context": "shared"}), "context \"shared\" is not supported"),
            (json!({"task": "t", "runtime": "acp"}), "runtime \"acp\" is not supported: hivegate runs subagents only"),
            (json!({"task": "t", "thread": true}), "thread binding is not supported"),
            (
                json!({"task": "t", "sandbox": "require"}),
                "sandbox \"require\" is not supported: hivegate has no sandbox",
            ),
            (json!({"task": "t", "colour": "red"}), "colour is not a sessions_spawn parameter"),
        ] {
            let refusal = parse(args.clone()).refusal().unwrap_or_default();
            assert!(refusal.starts_with(why), "{args}: {refusal}");
        }
        let thinking = parse(json!({"task": "t", "thinking": "high"}));
        assert_eq!((thinking.refusal(), thinking.thinking()), (None, Ok(Some(Thinking::High))));
        let refusal = parse(json!({"task": "t", "thinking": "big"})).refusal().unwrap();
        assert_eq!(refusal, "thinking \"big\" is not a level: one of off, minimal, low, medium, high, xhigh");
    }
}
