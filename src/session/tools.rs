//! Agent tools: names, JSON schemas offered to the model, argument parsing and
//! execution.
//!
//! Every call is checked three ways before it runs: the tool exists, the agent's
//! definition allows it, and the session's capability satisfies the scope the one
//! authorization table ([`crate::scope::required_scope`]) names for it. Bad arguments
//! become a tool error the model can read and correct, never a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Recipient};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::agent::AgentDef;
use crate::capability::Capability;
use crate::gateway::{
    Gateway, GatewayError, GetHistory, Kill, ListSessions, Outcome, SendOutcome, SendTo, SessionEvent, SessionInfo,
    Spawn, SpawnReply, SpawnRequest, Stats, Status, WaitRun,
};
use crate::hub::InvokeNode;
use crate::keys::RunId;
use crate::keys::SessionKey;
use crate::model::{ToolCall, ToolSpec};
use crate::protocol::NodeInvokeParams;
use crate::scope::authorize;
use crate::tools::exec::ExecLimits;
use crate::tools::WorkTool;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    SessionsSpawn,
    SessionsYield,
    SessionsList,
    SessionsHistory,
    SessionsSend,
    Subagents,
    NodesInvoke,
    /// A work tool (`read`, `write`, `edit`, `ls`, `glob`, `grep`, `exec`): [`crate::tools`].
    Work(WorkTool),
}

/// The session tools; the work tools are [`WorkTool::ALL`].
const ALL: [Tool; 7] = [
    Tool::SessionsSpawn,
    Tool::SessionsYield,
    Tool::SessionsList,
    Tool::SessionsHistory,
    Tool::SessionsSend,
    Tool::Subagents,
    Tool::NodesInvoke,
];

/// The known tool names, for error messages.
pub fn names() -> String {
    let work = WorkTool::ALL.into_iter().map(Tool::Work);
    ALL.into_iter().chain(work).map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::SessionsSpawn => "sessions_spawn",
            Tool::SessionsYield => "sessions_yield",
            Tool::SessionsList => "sessions_list",
            Tool::SessionsHistory => "sessions_history",
            Tool::SessionsSend => "sessions_send",
            Tool::Subagents => "subagents",
            Tool::NodesInvoke => "nodes_invoke",
            Tool::Work(tool) => tool.name(),
        }
    }

    pub fn parse(name: &str) -> Option<Tool> {
        ALL.into_iter().find(|t| t.name() == name).or_else(|| WorkTool::parse(name).map(Tool::Work))
    }

    pub fn spec(self) -> ToolSpec {
        let (description, parameters) = match self {
            Tool::Work(tool) => return tool.spec(),
            Tool::SessionsSpawn => (
                "Start a subagent on a task. Returns at once with {status:\"accepted\", runId, childSessionKey, resolvedModel} or {status:\"forbidden\"|\"error\", error}; the child's result arrives later as a message. Use sessions_yield to wait.",
                json!({"type": "object", "required": ["task"], "properties": {
                    "task": {"type": "string", "description": "what the subagent should do"},
                    "label": {"type": "string"},
                    "taskName": {"type": "string", "description": "a handle for the task; the label when none is given"},
                    "mode": {"type": "string", "enum": ["run", "session"], "description": "run (default): the child ends with its first answer; session: it stays for follow-ups you send it with sessions_send, until your run ends"},
                    "context": {"type": "string", "enum": ["isolated", "fork"], "description": "isolated (default): the child gets only its task; fork: it also gets a copy of this conversation"},
                    "expectsCompletionMessage": {"type": "boolean"},
                    "agentId": {"type": "string", "description": "which agent definition to run"},
                    "model": {"type": "string", "description": "provider/model override; used strictly or the spawn fails"},
                    "runTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0},
                    "thinking": {"type": "string", "description": "the child's reasoning level: off, minimal, low, medium, high or xhigh"},
                    "cleanup": {"type": "string", "enum": ["keep", "delete"]}}}),
            ),
            Tool::SessionsYield => (
                "Wait until a subagent finishes (returns at once if a result is already waiting or none are running). Results arrive as messages.",
                json!({"type": "object", "additionalProperties": false, "properties": {}}),
            ),
            Tool::SessionsList => (
                "List the sessions in your subtree with their status and outcome.",
                json!({"type": "object", "additionalProperties": false, "properties": {}}),
            ),
            Tool::SessionsHistory => (
                "Read the transcript of a session in your subtree.",
                json!({"type": "object", "additionalProperties": false, "required": ["sessionKey"], "properties": {
                    "sessionKey": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}}}),
            ),
            Tool::SessionsSend => (
                "Send a message to a session in your subtree; it sees it on its next turn.",
                json!({"type": "object", "additionalProperties": false, "required": ["sessionKey", "message"], "properties": {
                    "sessionKey": {"type": "string"}, "message": {"type": "string"}}}),
            ),
            Tool::Subagents => (
                "Your subagents (your subtree): list them as tasks (taskId is the spawn's runId); wait for 1-32 of them (taskIds, timeoutSeconds 0-60, default 30; a wait that expires reports them still running and does not stop them); cancel (or kill) one with its subtree by taskId or target (task id, session key or label); steer one with a message.",
                json!({"type": "object", "additionalProperties": false, "properties": {
                    "action": {"type": "string", "enum": ["list", "wait", "cancel", "kill", "steer"], "default": "list"},
                    "taskId": {"type": "string"}, "target": {"type": "string"},
                    "taskIds": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_WAIT_TASKS},
                    "timeoutSeconds": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
                    "recentMinutes": {"type": "integer", "minimum": 1},
                    "message": {"type": "string"}}}),
            ),
            Tool::NodesInvoke => (
                "Run an approved command on a paired node (a program on another machine) and return its answer.",
                json!({"type": "object", "additionalProperties": false, "required": ["nodeId", "command"], "properties": {
                    "nodeId": {"type": "string"}, "command": {"type": "string", "description": "for example system.which"},
                    "params": {"type": "object"}, "timeoutMs": {"type": "integer", "minimum": 1}}}),
            ),
        };
        ToolSpec { name: self.name().into(), description: description.into(), parameters }
    }
}

/// What a tool call produced.
#[derive(Debug, PartialEq)]
pub enum ToolOutput {
    Done(Value),
    /// A child was accepted; the session now waits for one more result.
    Spawned(Value),
    /// `sessions_yield`: the session decides when to answer it.
    Yield,
}

impl ToolOutput {
    /// The result as the journal records it; `sessions_yield` has none (the session
    /// answers it when a result arrives).
    pub fn recorded(&self) -> Option<String> {
        match self {
            ToolOutput::Done(value) | ToolOutput::Spawned(value) => Some(value.to_string()),
            ToolOutput::Yield => None,
        }
    }
}

/// How the journal names a call: its turn's position and its id (providers reuse ids
/// like `call_0` in every turn).
pub fn journal_id(turn: u32, call_id: &str) -> String {
    format!("{turn}:{call_id}")
}

/// Whether running `call` again changes nothing (it only reads or waits), so a call
/// cut off by a restart is run again rather than answered as interrupted.
pub fn idempotent(call: &ToolCall) -> bool {
    match Tool::parse(&call.name) {
        Some(Tool::SessionsYield | Tool::SessionsList | Tool::SessionsHistory) => true,
        Some(Tool::Work(tool)) => tool.idempotent(),
        Some(Tool::Subagents) => {
            let action = serde_json::from_str::<SubagentsArgs>(&call.arguments).map(|a| a.action);
            matches!(action, Ok(Action::List | Action::Wait))
        }
        _ => false,
    }
}

/// What a session's tools act with.
pub struct ToolEnv {
    /// The journal position of the model turn that made the calls.
    pub turn: u32,
    pub gateway: Addr<Gateway>,
    /// The hub, when this process serves external nodes.
    pub nodes: Option<Recipient<InvokeNode>>,
    pub capability: Capability,
    pub agent: Arc<AgentDef>,
    pub stats: Arc<Stats>,
    /// The session's conversation, when a spawn of this batch may fork it.
    pub history: Option<Arc<[crate::model::Message]>>,
    /// `exec`'s timeouts and output cap.
    pub exec_limits: Arc<ExecLimits>,
    /// The gateway's MCP servers (`server__tool` calls).
    pub mcp: Arc<crate::tools::mcp::McpServers>,
    /// The run's span, when traces are exported: tool calls and children hang under it.
    pub trace: Option<crate::telemetry::TraceParent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HistoryArgs {
    session_key: String,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendArgs {
    session_key: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InvokeArgs {
    node_id: String,
    command: String,
    params: Option<Value>,
    timeout_ms: Option<u64>,
}

/// `subagents` actions: OpenClaw 2026.9's `list`, `wait` and `cancel`, and the older
/// `kill` (the same as `cancel`) and `steer` that prompts still use.
#[derive(Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Action {
    #[default]
    List,
    Wait,
    Cancel,
    Kill,
    Steer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubagentsArgs {
    #[serde(default)]
    action: Action,
    /// A session key, label or task id (the spawn's `runId`).
    target: Option<String>,
    task_id: Option<String>,
    task_ids: Option<Vec<String>>,
    timeout_seconds: Option<u64>,
    recent_minutes: Option<u64>,
    message: Option<String>,
}

fn error(message: impl std::fmt::Display) -> ToolOutput {
    ToolOutput::Done(json!({"status": "error", "error": message.to_string()}))
}

fn args<T: for<'de> Deserialize<'de>>(tool: Tool, raw: &str) -> Result<T, ToolOutput> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| error(format!("invalid arguments for {}: {e}", tool.name())))
}

/// The event of a tool call beginning, titled by what it acts on.
pub fn started(key: &SessionKey, run_id: &RunId, call: &ToolCall) -> SessionEvent {
    let args: Value = serde_json::from_str(&call.arguments).unwrap_or_default();
    let title = ["label", "taskName", "target", "taskId", "sessionKey", "command"]
        .iter()
        .find_map(|field| args[*field].as_str())
        .map(String::from);
    SessionEvent::ToolStarted {
        session_key: key.clone(),
        run_id: run_id.clone(),
        call_id: call.id.clone(),
        name: call.name.clone(),
        title,
    }
}

/// The event of a tool call answered; a refusal or an error carries its message.
pub fn ended(key: &SessionKey, run_id: &RunId, call: &ToolCall, output: &ToolOutput) -> SessionEvent {
    let error = match output {
        ToolOutput::Done(value) if value["status"] == "error" || value["status"] == "forbidden" => {
            Some(value["error"].as_str().unwrap_or("failed").to_string())
        }
        _ => None,
    };
    SessionEvent::ToolEnded {
        session_key: key.clone(),
        run_id: run_id.clone(),
        call_id: call.id.clone(),
        name: call.name.clone(),
        error,
    }
}

/// Run one tool call.
pub async fn execute(env: &ToolEnv, call: &ToolCall) -> ToolOutput {
    if Tool::parse(&call.name).is_none() {
        if let Some((server, tool)) = crate::tools::mcp::split_name(&call.name) {
            return mcp(env, server, tool, call).await.unwrap_or_else(|refusal| refusal);
        }
    }
    match check(env, call) {
        Ok(tool) => dispatch(env, tool, call).await.unwrap_or_else(|refusal| refusal),
        Err(refusal) => refusal,
    }
}

fn check(env: &ToolEnv, call: &ToolCall) -> Result<Tool, ToolOutput> {
    let tool = Tool::parse(&call.name)
        .ok_or_else(|| error(format!("unknown tool '{}'; available: {}", call.name, available(&env.agent))))?;
    if !env.agent.has_tool(tool) {
        return Err(error(format!(
            "tool {} is not available to agent '{}'; available: {}",
            tool.name(),
            env.agent.id,
            available(&env.agent)
        )));
    }
    env.capability.check(Instant::now()).map_err(error)?;
    authorize(env.capability.scopes(), false, tool.name()).map_err(error)?;
    Ok(tool)
}

/// A call of an MCP server's tool: allowed by the agent's definition (`mcp:server` or
/// the tool by name), with the `mcp.call` scope, then made.
async fn mcp(env: &ToolEnv, server: &str, tool: &str, call: &ToolCall) -> Result<ToolOutput, ToolOutput> {
    if !env.agent.mcp.allows(server, tool) {
        return Err(error(format!(
            "tool {} is not available to agent '{}'; available: {}",
            call.name,
            env.agent.id,
            available(&env.agent)
        )));
    }
    env.capability.check(Instant::now()).map_err(error)?;
    authorize(env.capability.scopes(), false, "mcp").map_err(error)?;
    let raw = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
    let arguments: Value =
        serde_json::from_str(raw).map_err(|e| error(format!("invalid arguments for {}: {e}", call.name)))?;
    env.mcp.call(server, tool, arguments).await.map(ToolOutput::Done).map_err(error)
}

fn available(agent: &AgentDef) -> String {
    let tools = agent.tools.iter().map(|t| t.name().to_string());
    tools.chain(agent.mcp.describe()).collect::<Vec<_>>().join(", ")
}

async fn dispatch(env: &ToolEnv, tool: Tool, call: &ToolCall) -> Result<ToolOutput, ToolOutput> {
    let raw = call.arguments.as_str();
    match tool {
        Tool::SessionsSpawn => spawn(env, args(tool, raw)?, &call.id).await,
        Tool::SessionsYield => args::<NoArgs>(tool, raw).map(|_| ToolOutput::Yield),
        Tool::SessionsList => {
            args::<NoArgs>(tool, raw)?;
            let sessions = ask(env, ListSessions { caller: Some(env.capability.clone()) }).await?;
            Ok(ToolOutput::Done(json!({"status": "ok", "sessions": sessions})))
        }
        Tool::SessionsHistory => {
            let a: HistoryArgs = args(tool, raw)?;
            let target = SessionKey::from(a.session_key.as_str());
            let mut messages = ask(env, GetHistory { caller: Some(env.capability.clone()), target }).await?;
            if let Some(limit) = a.limit {
                messages.drain(..messages.len().saturating_sub(limit));
            }
            Ok(ToolOutput::Done(json!({"status": "ok", "sessionKey": a.session_key, "messages": messages})))
        }
        Tool::SessionsSend => {
            let a: SendArgs = args(tool, raw)?;
            send(env, SessionKey::from(a.session_key.as_str()), a.message).await
        }
        Tool::Subagents => subagents(env, args(tool, raw)?).await,
        Tool::NodesInvoke => invoke(env, args(tool, raw)?).await,
        Tool::Work(work) => {
            let workspace = env
                .capability
                .workspace()
                .ok_or_else(|| error(format!("{} needs a workspace and this session has none", work.name())))?;
            let value = crate::tools::run(work, workspace, raw, &env.exec_limits).await.map_err(error)?;
            Ok(ToolOutput::Done(value))
        }
    }
}

async fn invoke(env: &ToolEnv, a: InvokeArgs) -> Result<ToolOutput, ToolOutput> {
    let nodes = env.nodes.as_ref().ok_or_else(|| error("no node gateway is running in this process"))?;
    let params = NodeInvokeParams {
        node_id: a.node_id,
        command: a.command,
        params: a.params,
        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
        timeout_ms: a.timeout_ms,
    };
    // Held until the answer comes: if this session is killed, the tool future (and
    // this sender) is dropped, and the hub cancels the invoke on the node at once.
    let (_waiting, caller_gone) = tokio::sync::oneshot::channel::<()>();
    let invoke = InvokeNode { params, session: env.capability.principal().clone(), caller_gone };
    match nodes.send(invoke).await.map_err(|_| error("the node gateway is not running"))? {
        Ok(answer) => Ok(ToolOutput::Done(answer)),
        Err(e) => Err(error(format!("{}: {}", e.code, e.message))),
    }
}

async fn spawn(env: &ToolEnv, request: SpawnRequest, call_id: &str) -> Result<ToolOutput, ToolOutput> {
    let spawn = Spawn {
        parent: env.capability.clone(),
        request,
        sent_at: Instant::now(),
        history: env.history.clone(),
        call_id: Some(journal_id(env.turn, call_id).into()),
        trace: env.trace.clone(),
    };
    let reply = env.gateway.send(spawn).await.map_err(|_| error("the gateway is not running"))?;
    let accepted = matches!(reply, SpawnReply::Accepted { .. });
    let value = serde_json::to_value(&reply).map_err(error)?;
    Ok(if accepted { ToolOutput::Spawned(value) } else { ToolOutput::Done(value) })
}

async fn send(env: &ToolEnv, target: SessionKey, text: String) -> Result<ToolOutput, ToolOutput> {
    let outcome = ask(env, SendTo { caller: Some(env.capability.clone()), target, text }).await?;
    let resumed = matches!(outcome, SendOutcome::Resumed { .. });
    let value = serde_json::to_value(outcome).map_err(error)?;
    // A resumed `session` child will announce its end again: this session waits for it.
    Ok(if resumed { ToolOutput::Spawned(value) } else { ToolOutput::Done(value) })
}

/// Tasks one `subagents wait` may name.
pub const MAX_WAIT_TASKS: usize = 32;
/// The longest `subagents wait` (30 s when none is asked for).
pub const MAX_WAIT_SECONDS: u64 = 60;
const DEFAULT_WAIT_SECONDS: u64 = 30;
/// How far back `subagents list` shows ended tasks by default (OpenClaw's default).
const DEFAULT_RECENT_MINUTES: u64 = 30;

async fn subagents(env: &ToolEnv, a: SubagentsArgs) -> Result<ToolOutput, ToolOutput> {
    match a.action {
        Action::List => {
            let recent = a.recent_minutes.unwrap_or(DEFAULT_RECENT_MINUTES).max(1).saturating_mul(60_000);
            let cutoff = crate::hub::now_ms().saturating_sub(recent);
            let tasks: Vec<Value> = children(env)
                .await?
                .iter()
                .filter(|s| s.ended_at_ms.is_none_or(|ended| ended >= cutoff))
                .map(task)
                .collect();
            let active = tasks.iter().filter(|t| t["status"] == "running").count();
            Ok(ToolOutput::Done(json!({"status": "ok", "action": "list",
                "callerSessionKey": env.capability.principal(), "total": tasks.len(), "active": active, "tasks": tasks})))
        }
        Action::Wait => wait(env, a).await,
        Action::Cancel | Action::Kill => {
            let wanted = a.task_id.as_deref().or(a.target.as_deref());
            let wanted = wanted.ok_or_else(|| error("subagents cancel needs a taskId (or target)"))?;
            let listed = children(env).await?;
            let target = find(&listed, wanted)?;
            // An idle `session` child can be cancelled too; only an ended one cannot.
            if target.status == Status::Ended.as_str() {
                let ended = target.outcome.map_or("ended", Outcome::as_str);
                return Ok(ToolOutput::Done(json!({"status": "error", "taskId": target.run_id, "found": true,
                    "cancelled": false, "reason": format!("the task already ended ({ended})")})));
            }
            let caller = Some(env.capability.clone());
            let killed = ask(env, Kill { caller, target: target.session_key.clone() }).await?;
            Ok(ToolOutput::Done(json!({"status": "cancelled", "taskId": target.run_id,
                "sessionKey": target.session_key, "found": true, "cancelled": true, "killed": killed})))
        }
        Action::Steer => {
            let wanted = a.target.as_deref().or(a.task_id.as_deref());
            let wanted =
                wanted.ok_or_else(|| error("subagents steer needs a target (task id, session key or label)"))?;
            let message = a.message.ok_or_else(|| error("subagents steer needs a message"))?;
            let target = find(&children(env).await?, wanted)?.session_key.clone();
            send(env, target, message).await
        }
    }
}

/// `subagents wait`: until one of the tasks ends, or the timeout. It never stops a task
/// and never takes its result: each still arrives as a completion message.
async fn wait(env: &ToolEnv, a: SubagentsArgs) -> Result<ToolOutput, ToolOutput> {
    let mut ids = a.task_ids.unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    if ids.is_empty() || ids.len() > MAX_WAIT_TASKS {
        return Err(error(format!("subagents wait needs 1 to {MAX_WAIT_TASKS} taskIds; got {}", ids.len())));
    }
    let asked = a.timeout_seconds.unwrap_or(DEFAULT_WAIT_SECONDS);
    let timeout = asked.min(MAX_WAIT_SECONDS);
    let mut notes = Vec::new();
    if asked > MAX_WAIT_SECONDS {
        notes.push(format!("timeoutSeconds {asked} was capped at {MAX_WAIT_SECONDS}"));
    }
    let before = children(env).await?;
    let unavailable: Vec<&String> = ids.iter().filter(|id| find(&before, id).is_err()).collect();
    let running: Vec<RunId> = ids
        .iter()
        .filter_map(|id| find(&before, id).ok())
        .filter(|s| s.status == Status::Running.as_str())
        .map(|s| s.run_id.clone())
        .collect();
    if unavailable.is_empty() && running.len() == ids.len() {
        // One waiter per running task; the first end (or the timeout) ends the wait.
        let mut waits = Vec::with_capacity(running.len());
        for run_id in running {
            waits.push(Box::pin(ask(env, WaitRun { run_id }).await?));
        }
        let first = futures_util::future::select_all(waits);
        let _ = tokio::time::timeout(Duration::from_secs(timeout), first).await;
    }
    let after = children(env).await?;
    let tasks: Vec<Value> = ids.iter().filter_map(|id| find(&after, id).ok()).map(task).collect();
    let completed: Vec<&Value> = tasks.iter().filter(|t| t["status"] != "running").map(|t| &t["taskId"]).collect();
    let reason = match (unavailable.is_empty(), completed.is_empty()) {
        (false, _) => "unavailable",
        (true, false) => "completed",
        (true, true) => "timeout",
    };
    if reason == "timeout" {
        notes.push(format!(
            "still running after {timeout} s: the wait ended, the tasks did not; their results arrive as messages"
        ));
    }
    let mut out = json!({"status": "ok", "action": "wait", "reason": reason, "tasks": tasks, "completed": completed});
    if !unavailable.is_empty() {
        out["unavailable"] = json!(unavailable);
    }
    if !notes.is_empty() {
        out["notes"] = json!(notes);
    }
    Ok(ToolOutput::Done(out))
}

/// The caller's subtree without the caller.
async fn children(env: &ToolEnv) -> Result<Vec<SessionInfo>, ToolOutput> {
    let me = env.capability.principal();
    let all = ask(env, ListSessions { caller: Some(env.capability.clone()) }).await?;
    Ok(all.into_iter().filter(|s| &s.session_key != me).collect())
}

/// A subagent by task id (its run), session key or label.
fn find<'a>(children: &'a [SessionInfo], wanted: &str) -> Result<&'a SessionInfo, ToolOutput> {
    children
        .iter()
        .find(|s| s.run_id.as_str() == wanted || s.session_key.as_str() == wanted || s.label.as_deref() == Some(wanted))
        .ok_or_else(|| error(format!("no subagent task '{wanted}' in your subtree")))
}

/// A subagent as an OpenClaw task row.
fn task(s: &SessionInfo) -> Value {
    let status = match (s.status, s.outcome) {
        ("running", _) => "running",
        (_, Some(Outcome::Ok) | None) => "completed",
        (_, Some(Outcome::Timeout)) => "timed_out",
        (_, Some(Outcome::Killed)) => "cancelled",
        (_, Some(Outcome::Error | Outcome::Interrupted)) => "failed",
    };
    let mut row = json!({"taskId": s.run_id, "sessionKey": s.session_key, "runtime": "subagent", "status": status,
        "agentId": s.agent_id, "model": s.model, "parentSessionKey": s.parent, "startedAt": s.started_at_ms,
        "totalTokens": s.usage.total()});
    if let Some(label) = &s.label {
        row["label"] = json!(label);
    }
    if let Some(ended) = s.ended_at_ms {
        row["endedAt"] = json!(ended);
    }
    match (&s.summary, status) {
        (Some(summary), "completed") => row["terminalSummary"] = json!(summary),
        (Some(summary), "failed" | "timed_out" | "cancelled") => row["error"] = json!(summary),
        _ => {}
    }
    row
}

async fn ask<M, T>(env: &ToolEnv, message: M) -> Result<T, ToolOutput>
where
    M: actix::Message<Result = Result<T, GatewayError>> + Send + 'static,
    T: Send + 'static,
    Gateway: actix::Handler<M>,
{
    env.gateway.send(message).await.map_err(|_| error("the gateway is not running"))?.map_err(error)
}
