//! Agent tools: names, JSON schemas offered to the model, argument parsing and
//! execution.
//!
//! Every call is checked three ways before it runs: the tool exists, the agent's
//! definition allows it, and the session's capability satisfies the scope the one
//! authorization table ([`crate::scope::required_scope`]) names for it. Bad arguments
//! become a tool error the model can read and correct, never a crash.

use std::sync::Arc;
use std::time::Instant;

use actix::{Addr, Recipient};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::agent::AgentDef;
use crate::capability::Capability;
use crate::gateway::{
    Gateway, GatewayError, GetHistory, Kill, ListSessions, SendTo, Spawn, SpawnReply, SpawnRequest, Stats,
};
use crate::hub::InvokeNode;
use crate::keys::SessionKey;
use crate::model::{ToolCall, ToolSpec};
use crate::protocol::NodeInvokeParams;
use crate::scope::authorize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    SessionsSpawn,
    SessionsYield,
    SessionsList,
    SessionsHistory,
    SessionsSend,
    Subagents,
    NodesInvoke,
}

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
    ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
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
        }
    }

    pub fn parse(name: &str) -> Option<Tool> {
        ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn spec(self) -> ToolSpec {
        let (description, parameters) = match self {
            Tool::SessionsSpawn => (
                "Start a subagent on a task. Returns at once with {status:\"accepted\", runId, childSessionKey, resolvedModel} or {status:\"forbidden\"|\"error\", error}; the child's result arrives later as a message. Use sessions_yield to wait.",
                json!({"type": "object", "required": ["task"], "properties": {
                    "task": {"type": "string", "description": "what the subagent should do"},
                    "label": {"type": "string"},
                    "taskName": {"type": "string", "description": "a handle for the task; the label when none is given"},
                    "mode": {"type": "string", "enum": ["run"], "description": "run: the child ends with its first answer"},
                    "context": {"type": "string", "enum": ["isolated"]},
                    "expectsCompletionMessage": {"type": "boolean"},
                    "agentId": {"type": "string", "description": "which agent definition to run"},
                    "model": {"type": "string", "description": "provider/model override; used strictly or the spawn fails"},
                    "runTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0},
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
                "Manage your subagents: list them, kill one (and its subtree) or steer one with a message. target is a session key or label.",
                json!({"type": "object", "additionalProperties": false, "required": ["action"], "properties": {
                    "action": {"type": "string", "enum": ["list", "kill", "steer"]},
                    "target": {"type": "string"}, "message": {"type": "string"}}}),
            ),
            Tool::NodesInvoke => (
                "Run an approved command on a paired node (a program on another machine) and return its answer.",
                json!({"type": "object", "additionalProperties": false, "required": ["nodeId", "command"], "properties": {
                    "nodeId": {"type": "string"}, "command": {"type": "string", "description": "for example system.which"},
                    "params": {"type": "object"}, "timeoutMs": {"type": "integer", "minimum": 1}}}),
            ),
        };
        ToolSpec { name: self.name(), description, parameters }
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

/// What a session's tools act with.
pub struct ToolEnv {
    pub gateway: Addr<Gateway>,
    /// The hub, when this process serves external nodes.
    pub nodes: Option<Recipient<InvokeNode>>,
    pub capability: Capability,
    pub agent: Arc<AgentDef>,
    pub stats: Arc<Stats>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Action {
    List,
    Kill,
    Steer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubagentsArgs {
    action: Action,
    target: Option<String>,
    message: Option<String>,
}

fn error(message: impl std::fmt::Display) -> ToolOutput {
    ToolOutput::Done(json!({"status": "error", "error": message.to_string()}))
}

fn args<T: for<'de> Deserialize<'de>>(tool: Tool, raw: &str) -> Result<T, ToolOutput> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| error(format!("invalid arguments for {}: {e}", tool.name())))
}

/// Run one tool call.
pub async fn execute(env: &ToolEnv, call: &ToolCall) -> ToolOutput {
    match check(env, call) {
        Ok(tool) => dispatch(env, tool, &call.arguments).await.unwrap_or_else(|refusal| refusal),
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

fn available(agent: &AgentDef) -> String {
    agent.tools.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

async fn dispatch(env: &ToolEnv, tool: Tool, raw: &str) -> Result<ToolOutput, ToolOutput> {
    match tool {
        Tool::SessionsSpawn => spawn(env, args(tool, raw)?).await,
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

async fn spawn(env: &ToolEnv, request: SpawnRequest) -> Result<ToolOutput, ToolOutput> {
    let reply = env
        .gateway
        .send(Spawn { parent: env.capability.clone(), request, sent_at: Instant::now() })
        .await
        .map_err(|_| error("the gateway is not running"))?;
    let accepted = matches!(reply, SpawnReply::Accepted { .. });
    let value = serde_json::to_value(&reply).map_err(error)?;
    Ok(if accepted { ToolOutput::Spawned(value) } else { ToolOutput::Done(value) })
}

async fn send(env: &ToolEnv, target: SessionKey, text: String) -> Result<ToolOutput, ToolOutput> {
    let outcome = ask(env, SendTo { caller: Some(env.capability.clone()), target, text }).await?;
    Ok(ToolOutput::Done(serde_json::to_value(outcome).map_err(error)?))
}

async fn subagents(env: &ToolEnv, a: SubagentsArgs) -> Result<ToolOutput, ToolOutput> {
    let me = env.capability.principal().clone();
    let children: Vec<_> = ask(env, ListSessions { caller: Some(env.capability.clone()) })
        .await?
        .into_iter()
        .filter(|s| s.session_key != me)
        .collect();
    let target = || {
        let wanted = a
            .target
            .as_deref()
            .ok_or_else(|| error("subagents kill and steer need a target (session key or label)"))?;
        children
            .iter()
            .find(|s| s.session_key.as_str() == wanted || s.label.as_deref() == Some(wanted))
            .map(|s| s.session_key.clone())
            .ok_or_else(|| error(format!("no subagent '{wanted}' in your subtree")))
    };
    match a.action {
        Action::List => Ok(ToolOutput::Done(json!({"status": "ok", "subagents": children}))),
        Action::Kill => {
            let killed = ask(env, Kill { caller: Some(env.capability.clone()), target: target()? }).await?;
            Ok(ToolOutput::Done(json!({"status": "ok", "killed": killed})))
        }
        Action::Steer => {
            let message = a.message.clone().ok_or_else(|| error("subagents steer needs a message"))?;
            send(env, target()?, message).await
        }
    }
}

async fn ask<M, T>(env: &ToolEnv, message: M) -> Result<T, ToolOutput>
where
    M: actix::Message<Result = Result<T, GatewayError>> + Send + 'static,
    T: Send + 'static,
    Gateway: actix::Handler<M>,
{
    env.gateway.send(message).await.map_err(|_| error("the gateway is not running"))?.map_err(error)
}
