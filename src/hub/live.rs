//! The live view operators get: session events turned into OpenClaw's `agent` and
//! `chat` events (`../shared/docs/openclaw-agent-flow.md` §3.2–3.3), broadcast to every
//! operator connection with read scope as they happen, with no subscription request.
//!
//! Per run: `agent` `lifecycle` `start` (with the spawn's `label`, hivegate's addition)
//! and `model` when a session starts, `assistant` (cumulative `text` and its `delta`)
//! mirrored by a `chat` `delta` as the answer streams, `item` for each tool call's start
//! and end (a spawn's `title` is its label), `usage` after each model call, `lifecycle`
//! `end` and a `chat` `final` when it ends. Every `agent` payload carries the run's own
//! counter `seq`; child runs carry `spawnedBy`. [`LiveView`] is pure: the hub feeds it
//! events and sends what it returns.
//!
//! When the view falls behind the gateway (a burst of spawns overflows the event
//! channel), the events it lost are gone; the hub then sends [`RESYNC_EVENT`] so that
//! clients keeping a picture of the sessions (the dashboard) reload `sessions.list`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::gateway::{Outcome, SessionEvent};
use crate::keys::{RunId, SessionKey};

/// Runs followed at once; past this, new runs are not shown (their sessions still run).
pub const MAX_RUNS: usize = 16_384;
/// Streamed text kept per run for the cumulative `text`; past it only deltas are sent.
pub const MAX_TEXT: usize = 256 * 1024;
/// Sent to operators when the live view lost events: `{reason, missed}`.
pub const RESYNC_EVENT: &str = "sessions.changed";

struct RunView {
    session_key: SessionKey,
    agent_id: String,
    parent: Option<SessionKey>,
    seq: u64,
    text: String,
    started_ms: u64,
}

#[derive(Default)]
pub struct LiveView {
    runs: HashMap<RunId, RunView>,
}

impl LiveView {
    /// The events (name, payload) `event` becomes, at time `now_ms`.
    pub fn translate(&mut self, event: SessionEvent, now_ms: u64) -> Vec<(&'static str, Value)> {
        // A run that started while nobody watched (or before the view was reset) is
        // picked up by its later events, so its end is still shown.
        match &event {
            SessionEvent::Streamed { session_key, run_id, .. }
            | SessionEvent::ToolStarted { session_key, run_id, .. }
            | SessionEvent::ToolEnded { session_key, run_id, .. }
            | SessionEvent::Used { session_key, run_id, .. }
            | SessionEvent::Ended { session_key, run_id, .. } => self.pick_up(run_id, session_key, now_ms),
            SessionEvent::Started { .. } | SessionEvent::Noticed { .. } => {}
        }
        match event {
            SessionEvent::Started { session_key, run_id, parent, agent_id, model, label } => {
                if self.runs.len() >= MAX_RUNS {
                    return Vec::new();
                }
                let view = RunView { session_key, agent_id, parent, seq: 0, text: String::new(), started_ms: now_ms };
                self.runs.insert(run_id.clone(), view);
                let model = json!({"phase": "model", "provider": model.provider(), "model": model.model()});
                let mut start = json!({"phase": "start", "startedAt": now_ms});
                if let Some(label) = label {
                    start["label"] = json!(label);
                }
                vec![self.agent(&run_id, "lifecycle", start, now_ms), self.agent(&run_id, "lifecycle", model, now_ms)]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            SessionEvent::Streamed { run_id, text, .. } => {
                let Some(view) = self.runs.get_mut(&run_id) else { return Vec::new() };
                if view.text.len() + text.len() <= MAX_TEXT {
                    view.text.push_str(&text);
                }
                let cumulative = view.text.clone();
                let Some(agent) = self.agent(&run_id, "assistant", json!({"text": cumulative, "delta": text}), now_ms)
                else {
                    return Vec::new();
                };
                let chat = self.chat(&run_id, json!({"state": "delta", "deltaText": text}), &cumulative, now_ms);
                vec![agent].into_iter().chain(chat).collect()
            }
            SessionEvent::Ended { run_id, outcome, error, .. } => {
                let Some(started_ms) = self.runs.get(&run_id).map(|v| v.started_ms) else { return Vec::new() };
                let (stop_reason, aborted) = match outcome {
                    Outcome::Ok => ("stop", false),
                    Outcome::Error => ("error", false),
                    Outcome::Timeout => ("timeout", false),
                    Outcome::Killed | Outcome::Interrupted => ("rpc", true),
                };
                let mut end = json!({"phase": "end", "startedAt": started_ms, "endedAt": now_ms,
                    "aborted": aborted, "stopReason": stop_reason});
                if let Some(error) = error {
                    end["error"] = Value::from(error);
                }
                let text = self.runs.get(&run_id).map(|v| v.text.clone()).unwrap_or_default();
                let events: Vec<_> = self
                    .agent(&run_id, "lifecycle", end, now_ms)
                    .into_iter()
                    .chain(self.chat(&run_id, json!({"state": "final", "stopReason": stop_reason}), &text, now_ms))
                    .collect();
                self.runs.remove(&run_id);
                events
            }
            SessionEvent::ToolStarted { run_id, call_id, name, title, .. } => {
                let mut data = json!({"itemId": format!("tool:{call_id}"), "toolCallId": call_id, "name": name,
                    "kind": "tool", "phase": "start", "status": "running", "startedAt": now_ms});
                match (title, name == "sessions_spawn") {
                    (Some(label), true) => {
                        data["title"] = json!(format!("Sub-agent {label}"));
                        data["meta"] = json!(label);
                    }
                    (Some(title), false) => data["title"] = json!(title),
                    (None, _) => {}
                }
                self.agent(&run_id, "item", data, now_ms).into_iter().collect()
            }
            SessionEvent::ToolEnded { run_id, call_id, name, error, .. } => {
                let mut data = json!({"itemId": format!("tool:{call_id}"), "toolCallId": call_id, "name": name,
                    "kind": "tool", "phase": "end", "status": if error.is_some() { "failed" } else { "completed" },
                    "endedAt": now_ms});
                if let Some(error) = error {
                    data["error"] = json!(error);
                }
                self.agent(&run_id, "item", data, now_ms).into_iter().collect()
            }
            SessionEvent::Used { run_id, usage, .. } => {
                let mut data = json!({"inputTokens": usage.prompt_tokens, "outputTokens": usage.completion_tokens,
                    "totalTokens": usage.total()});
                if let Some(cost) = usage.known_cost() {
                    data["costUsd"] = json!(cost);
                }
                self.agent(&run_id, "usage", data, now_ms).into_iter().collect()
            }
            SessionEvent::Noticed { .. } => Vec::new(),
        }
    }

    /// Follow `run_id` from here on if it is not followed yet (its parent unknown).
    fn pick_up(&mut self, run_id: &RunId, session_key: &SessionKey, now_ms: u64) {
        if self.runs.len() >= MAX_RUNS || self.runs.contains_key(run_id) {
            return;
        }
        let agent_id = session_key.as_str().strip_prefix("agent:").and_then(|rest| rest.split(':').next());
        let view = RunView {
            session_key: session_key.clone(),
            agent_id: agent_id.unwrap_or_default().to_string(),
            parent: None,
            seq: 0,
            text: String::new(),
            started_ms: now_ms,
        };
        self.runs.insert(run_id.clone(), view);
    }

    /// An `agent` event of the run, with the run's next `seq`.
    fn agent(&mut self, run_id: &RunId, stream: &str, data: Value, now_ms: u64) -> Option<(&'static str, Value)> {
        let view = self.runs.get_mut(run_id)?;
        view.seq += 1;
        let mut payload = json!({"runId": run_id, "sessionKey": view.session_key, "agentId": view.agent_id,
            "stream": stream, "data": data, "seq": view.seq, "ts": now_ms});
        if let Some(parent) = &view.parent {
            payload["spawnedBy"] = json!(parent);
        }
        Some(("agent", payload))
    }

    /// The `chat` event mirroring the run's last `agent` event (same `seq`).
    fn chat(&self, run_id: &RunId, mut fields: Value, text: &str, now_ms: u64) -> Option<(&'static str, Value)> {
        let view = self.runs.get(run_id)?;
        let message = json!({"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": now_ms});
        fields["runId"] = json!(run_id);
        fields["sessionKey"] = json!(view.session_key);
        fields["agentId"] = json!(view.agent_id);
        fields["seq"] = json!(view.seq);
        fields["message"] = message;
        if let Some(parent) = &view.parent {
            fields["spawnedBy"] = json!(parent);
        }
        Some(("chat", fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelRef;

    #[test]
    fn a_run_becomes_lifecycle_assistant_and_chat_events_in_order() {
        let mut live = LiveView::default();
        let run: RunId = "r1".into();
        let started = SessionEvent::Started {
            session_key: "agent:exec:subagent:x".into(),
            run_id: run.clone(),
            parent: Some("agent:brain:main".into()),
            agent_id: "exec".into(),
            model: ModelRef::parse("cheap/qwen/q3").unwrap(),
            label: Some("lint".into()),
        };
        let events = live.translate(started, 100);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].1["data"], json!({"phase": "start", "startedAt": 100, "label": "lint"}));
        assert_eq!(events[1].1["data"], json!({"phase": "model", "provider": "cheap", "model": "qwen/q3"}));
        assert_eq!(
            (events[1].1["seq"].clone(), events[1].1["spawnedBy"].clone()),
            (json!(2), json!("agent:brain:main"))
        );
        let streamed = |text: &str| SessionEvent::Streamed {
            session_key: "agent:exec:subagent:x".into(),
            run_id: run.clone(),
            text: text.into(),
        };
        live.translate(streamed("hel"), 101);
        let events = live.translate(streamed("lo"), 102);
        assert_eq!(events[0].1["data"], json!({"text": "hello", "delta": "lo"}));
        assert_eq!(
            (events[1].0, events[1].1["deltaText"].clone(), events[1].1["seq"].clone()),
            ("chat", json!("lo"), json!(4))
        );
        let ended = SessionEvent::Ended {
            session_key: "agent:exec:subagent:x".into(),
            run_id: run.clone(),
            outcome: Outcome::Killed,
            error: Some("aborted by the operator".into()),
            duration_ms: 2.0,
            tokens: 0,
            cost_usd: None,
        };
        let events = live.translate(ended, 103);
        assert_eq!(events[0].1["data"]["phase"], "end");
        assert_eq!(
            (events[0].1["data"]["aborted"].clone(), events[0].1["data"]["stopReason"].clone()),
            (json!(true), json!("rpc"))
        );
        assert_eq!(events[1].1["message"]["content"][0]["text"], "hello");
        assert!(live.runs.is_empty(), "an ended run is forgotten");
        // A run first seen mid-way (started while nobody watched) is followed from there.
        let late = live.translate(streamed("late"), 104);
        assert_eq!((late[0].1["data"]["text"].clone(), late[0].1["agentId"].clone()), (json!("late"), json!("exec")));
    }
}
