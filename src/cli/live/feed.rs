//! How events feed a [`LiveTree`]: the gateway's own session events (`hivegate run`),
//! the `agent` events of the WebSocket protocol (`hivegate agent`, shapes as
//! `hub::live` sends them), and the registry's tree when events were lost.

use serde::Deserialize;
use serde_json::Value;

use super::{LiveTree, Start};
use crate::gateway::{SessionEvent, TreeNode};

impl LiveTree {
    /// An in-process session event (`hivegate run`).
    pub fn apply(&mut self, event: &SessionEvent, now_ms: u64) {
        match event {
            SessionEvent::Started { session_key, run_id, parent, agent_id, model, label } => {
                let start = Start {
                    key: session_key.to_string(),
                    parent: parent.as_ref().map(ToString::to_string),
                    agent: agent_id.clone(),
                    model: model.to_string(),
                    label: label.clone(),
                    run_id: Some(run_id.to_string()),
                };
                self.started(start, now_ms);
            }
            SessionEvent::Used { session_key, usage, .. } => {
                self.used(session_key.as_str(), usage.total(), usage.known_cost());
            }
            SessionEvent::Ended { session_key, outcome, error, duration_ms, tokens, cost_usd, .. } => {
                self.used(session_key.as_str(), *tokens, *cost_usd);
                self.ended(session_key.as_str(), outcome.as_str(), error.as_deref(), Some(*duration_ms), now_ms);
            }
            SessionEvent::Noticed { .. }
            | SessionEvent::ToolStarted { .. }
            | SessionEvent::ToolEnded { .. }
            | SessionEvent::Streamed { .. } => {}
        }
    }

    /// A frame of the gateway's WebSocket (`hivegate agent`); anything but an `agent`
    /// event is ignored.
    pub fn apply_agent(&mut self, frame: &Value, now_ms: u64) {
        let Some(payload) =
            frame.get("payload").filter(|_| frame.get("event").and_then(Value::as_str) == Some("agent"))
        else {
            return;
        };
        let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
        let (Some(key), Some(stream)) = (text(payload, "sessionKey"), text(payload, "stream")) else { return };
        let data = payload.get("data").unwrap_or(&Value::Null);
        let at = |name: &str| data.get(name).and_then(Value::as_u64);
        match (stream.as_str(), data.get("phase").and_then(Value::as_str)) {
            ("lifecycle", Some("start")) => {
                let start = Start {
                    parent: text(payload, "spawnedBy"),
                    agent: text(payload, "agentId").unwrap_or_default(),
                    model: String::new(),
                    label: None,
                    run_id: text(payload, "runId"),
                    key,
                };
                self.started(start, at("startedAt").unwrap_or(now_ms));
            }
            ("lifecycle", Some("model")) => {
                let model = match (text(data, "provider"), text(data, "model")) {
                    (Some(provider), Some(model)) => format!("{provider}/{model}"),
                    (_, model) => model.unwrap_or_default(),
                };
                self.model(&key, &model);
            }
            ("lifecycle", Some("end")) => {
                let status = match (text(data, "stopReason").as_deref(), data.get("aborted").and_then(Value::as_bool)) {
                    (_, Some(true)) => "killed",
                    (Some("stop"), _) => "ok",
                    (Some("timeout"), _) => "timeout",
                    _ => "error",
                };
                let duration = at("startedAt").zip(at("endedAt")).map(|(s, e)| e.saturating_sub(s) as f64);
                self.ended(&key, status, data.get("error").and_then(Value::as_str), duration, now_ms);
            }
            ("usage", _) => {
                let tokens = at("totalTokens").unwrap_or(0);
                self.used(&key, tokens, data.get("costUsd").and_then(Value::as_f64));
            }
            _ => {}
        }
    }

    /// Load a tree as the registry has it (after events were lost).
    pub fn load(&mut self, root: &TreeNode, now_ms: u64) {
        if let Ok(shown) = serde_json::to_value(root) {
            self.load_json(&shown, None, now_ms);
        }
    }

    /// Load a tree as `runs.show` and `run --json` show it (`root`), its root running
    /// `run_id`. False when it is not such a tree.
    pub fn load_json(&mut self, root: &Value, run_id: Option<&str>, now_ms: u64) -> bool {
        match Shown::deserialize(root) {
            Ok(shown) => {
                self.load_node(&shown, None, run_id, now_ms);
                true
            }
            Err(_) => false,
        }
    }

    fn load_node(&mut self, node: &Shown, parent: Option<&str>, run_id: Option<&str>, now_ms: u64) {
        let start = Start {
            key: node.session_key.clone(),
            parent: parent.map(str::to_string),
            agent: node.agent_id.clone(),
            model: node.model.clone(),
            label: node.label.clone(),
            run_id: run_id.map(str::to_string),
        };
        self.started(start, now_ms.saturating_sub(node.duration_ms as u64));
        self.used(&node.session_key, node.tokens, node.cost_usd);
        if let Some(outcome) = &node.outcome {
            self.ended(&node.session_key, outcome, node.error.as_deref(), Some(node.duration_ms), now_ms);
        }
        for child in &node.children {
            self.load_node(child, Some(&node.session_key), None, now_ms);
        }
    }
}

/// A node of a shown tree ([`TreeNode`] as JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shown {
    session_key: String,
    agent_id: String,
    model: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    duration_ms: f64,
    #[serde(default)]
    tokens: u64,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    children: Vec<Shown>,
}
