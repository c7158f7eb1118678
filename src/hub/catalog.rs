//! What operators read about the gateway: a session's conversation (`chat.history`) and
//! the agent catalog (`agents.list`, `models.list`), in the shapes the OpenClaw CLI
//! reads; and hivegate's own `runs.list` (each main session's latest run) and
//! `runs.show` (a run's tree, as `run --json` prints it).

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::runs::{gateway_error, invalid, unavailable};
use super::Hub;
use crate::gateway::{AgentInfo, GetHistory, ListAgents, ListSessions, Outcome, SessionInfo, ShowRun};
use crate::keys::RunId;
use crate::keys::SessionKey;
use crate::model::Message;
use crate::protocol::ErrorShape;

type Reply = Result<Value, ErrorShape>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryParams {
    session_key: String,
    #[serde(default)]
    limit: Option<usize>,
}

/// A transcript message in the shape of OpenClaw's `chat.history`.
fn history_message(message: &Message) -> Value {
    match message {
        Message::System { content } => json!({"role": "system", "content": content}),
        Message::User { content } => json!({"role": "user", "content": content}),
        Message::Assistant { content, tool_calls, .. } => {
            let text = content.iter().map(|t| json!({"type": "text", "text": t}));
            let calls = tool_calls.iter().map(|c| {
                let arguments = serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| json!(c.arguments));
                json!({"type": "toolCall", "id": c.id, "name": c.name, "arguments": arguments})
            });
            json!({"role": "assistant", "content": text.chain(calls).collect::<Vec<_>>()})
        }
        Message::Tool { call_id, content } => {
            json!({"role": "toolResult", "toolCallId": call_id, "content": [{"type": "text", "text": content}]})
        }
    }
}

/// A `sessions.list` row.
fn session_row(s: &SessionInfo) -> Value {
    let mut row = serde_json::to_value(s).unwrap_or_default();
    let status = match (s.status, s.outcome) {
        ("running", _) => "running",
        (_, Some(Outcome::Ok) | None) => "done",
        (_, Some(Outcome::Killed | Outcome::Interrupted)) => "killed",
        (_, Some(Outcome::Timeout)) => "timeout",
        (_, Some(Outcome::Error)) => "failed",
    };
    let running = s.status == "running";
    let extra = json!({
        "key": s.session_key, "sessionId": s.session_key, "kind": "direct",
        "classification": if s.parent.is_some() { "subagent" } else { "main" }, "isMain": s.parent.is_none(),
        "isBackground": s.parent.is_some(), "status": status, "startedAt": s.started_at_ms, "endedAt": s.ended_at_ms,
        "updatedAt": s.ended_at_ms.unwrap_or(s.started_at_ms),
        "runtimeMs": s.ended_at_ms.map(|end| end.saturating_sub(s.started_at_ms)), "lastRunId": s.run_id,
        "modelProvider": s.model.provider(), "model": s.model.model(), "inputTokens": s.usage.prompt_tokens,
        "outputTokens": s.usage.completion_tokens, "totalTokens": s.usage.total(),
        "estimatedCostUsd": s.usage.known_cost(), "hasActiveRun": running,
        "activeRunIds": if running { vec![&s.run_id] } else { vec![] },
        "abortedLastRun": matches!(s.outcome, Some(Outcome::Killed | Outcome::Interrupted)),
        "spawnedBy": s.parent, "parentSessionKey": s.parent, "spawnDepth": s.depth,
    });
    if let (Value::Object(row), Value::Object(extra)) = (&mut row, extra) {
        row.extend(extra);
    }
    row
}

/// `agents.list` as the CLI reads it (it checks `--agent` against `agents[].id`).
pub fn agents_list(agents: &[AgentInfo], default_id: &str) -> Value {
    let ownership = if agents.len() == 1 { "sole" } else { "explicit" };
    let entries: Vec<Value> = agents
        .iter()
        .map(|a| {
            json!({
                "id": a.id,
                "description": a.description,
                "model": {"primary": a.model, "fallbacks": a.fallbacks},
                "thinkingLevels": [{"id": "off", "label": "off"}],
                "thinkingOptions": ["off"],
                "thinkingDefault": "off",
            })
        })
        .collect();
    json!({"defaultId": default_id, "ownership": ownership, "selectionRequired": agents.len() > 1,
        "mainKey": "main", "scope": "per-sender", "agents": entries})
}

/// `models.list`: every model an agent may use, once, and whether it can be called.
pub fn models_list(agents: &[AgentInfo]) -> Value {
    let mut seen = std::collections::BTreeMap::new();
    for agent in agents {
        for model in std::iter::once(&agent.model).chain(&agent.fallbacks).chain(&agent.subagent_model) {
            let unavailable = agent.unavailable.iter().find(|(m, _)| m == model).map(|(_, why)| why.clone());
            seen.entry(model.to_string()).or_insert((model.clone(), unavailable));
        }
    }
    let models: Vec<Value> = seen
        .into_values()
        .map(|(model, unavailable)| {
            let mut entry = json!({"id": model.model(), "name": model.model(), "provider": model.provider(),
                "reasoning": false, "thinkingLevels": [{"id": "off", "label": "off"}], "thinkingDefault": "off",
                "available": unavailable.is_none()});
            if let Some(why) = unavailable {
                entry["unavailableReason"] = Value::from(why);
            }
            entry
        })
        .collect();
    json!({"models": models})
}

impl Hub {
    /// `chat.history {sessionKey, limit?}`: the session's conversation, the last `limit`
    /// messages (1 to 1000; 1000 by default).
    pub(super) fn chat_history(&mut self, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: HistoryParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("chat.history", e)))),
        };
        let limit = match p.limit {
            Some(limit) if !(1..=1000).contains(&limit) => {
                return Box::pin(fut::ready(Err(invalid("chat.history", "limit must be from 1 to 1000"))))
            }
            limit => limit.unwrap_or(1000),
        };
        let target = SessionKey::from(p.session_key.as_str());
        let history = self.gateway.send(GetHistory { caller: None, target: target.clone() });
        Box::pin(fut::wrap_future(async move {
            let transcript = history.await.map_err(unavailable)?.map_err(gateway_error)?;
            // The system prompt is the agent's, not part of the conversation.
            let conversation: Vec<&Message> =
                transcript.iter().filter(|m| !matches!(m, Message::System { .. })).collect();
            let skip = conversation.len().saturating_sub(limit);
            let messages: Vec<Value> = conversation[skip..].iter().map(|m| history_message(m)).collect();
            Ok(json!({"sessionKey": target, "sessionId": target, "messages": messages,
                "totalMessages": conversation.len(), "hasMore": skip > 0}))
        }))
    }

    /// `agents.list` and `models.list`.
    pub(super) fn catalog(&mut self, method: &'static str) -> ResponseActFuture<Self, Reply> {
        let list = self.gateway.send(ListAgents);
        let default_id = self.config.default_agent.clone();
        Box::pin(fut::wrap_future(async move {
            let agents = list.await.map_err(unavailable)?;
            Ok(match method {
                "agents.list" => agents_list(&agents, &default_id),
                _ => models_list(&agents),
            })
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunParams {
    run_id: String,
}

impl Hub {
    /// Every session, as the operator (the process owner) sees them.
    fn all_sessions(&self) -> impl std::future::Future<Output = Result<Vec<SessionInfo>, ErrorShape>> + 'static {
        let list = self.gateway.send(ListSessions { caller: None });
        async move { list.await.map_err(unavailable)?.map_err(gateway_error) }
    }

    /// `sessions.list`: every session, newest first, each row with hivegate's fields and
    /// the OpenClaw names its CLI reads (`../shared/docs/openclaw-agent-flow.md` §6.2).
    pub(super) fn sessions_list(&mut self) -> ResponseActFuture<Self, Reply> {
        let list = self.all_sessions();
        Box::pin(fut::wrap_future(async move {
            let mut sessions = list.await?;
            sessions.sort_by_key(|s| std::cmp::Reverse(s.started_at_ms));
            let rows: Vec<Value> = sessions.iter().map(session_row).collect();
            Ok(json!({"count": rows.len(), "totalCount": rows.len(), "hasMore": false, "nextOffset": null,
                "sessions": rows}))
        }))
    }

    /// `runs.list`: the latest run of each main session (a root of a tree).
    pub(super) fn runs_list(&mut self) -> ResponseActFuture<Self, Reply> {
        let list = self.all_sessions();
        Box::pin(fut::wrap_future(async move {
            let sessions = list.await?;
            let runs: Vec<Value> = sessions
                .into_iter()
                .filter(|s| s.parent.is_none())
                .map(|s| {
                    json!({"runId": s.run_id, "sessionKey": s.session_key, "agentId": s.agent_id,
                        "status": s.status, "outcome": s.outcome})
                })
                .collect();
            Ok(json!({"runs": runs}))
        }))
    }

    /// `runs.show {runId}`: the run's tree with its final answer.
    pub(super) fn runs_show(&mut self, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: RunParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("runs.show", e)))),
        };
        let show = self.gateway.send(ShowRun { run_id: RunId::from(p.run_id.as_str()) });
        Box::pin(fut::wrap_future(async move { show.await.map_err(unavailable)?.map_err(gateway_error) }))
    }
}
