//! Runs for operators, as the OpenClaw CLI drives them (`../shared/docs/openclaw-agent-flow.md`):
//! `agent` starts a run and answers twice with the request's id, first the accepted ack,
//! then the final result when the run ends; `agent.wait` waits for a run; `sessions.abort`
//! and `chat.abort` abort a session's running run with its whole tree; `sessions.steer`
//! gives a session a message from the operator (seen on its next turn).
//!
//! One difference from OpenClaw, on purpose: a run is the whole tree, so the final
//! result comes when the root's run ends (its answer with no child still pending), and
//! the CLI prints the tree's answer rather than the parent's first turn.
//!
//! Idempotency: the request's `idempotencyKey` is the run id. A repeat while the run is
//! active answers `in_flight`; a repeat after it ended answers the remembered final
//! result (once, with no new run). [`RunBook`] remembers the last [`REMEMBERED`] ended
//! runs; a key older than that is refused by the gateway if it still knows the run.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{now_ms, Hub, Outbound};
use crate::gateway::{Abort, ForgetSession, GatewayError, Outcome, RunSummary, SendTo, StartMain, WaitRun};
use crate::keys::{RunId, SessionKey};
use crate::protocol::{error_codes, ErrorShape};

type Reply = Result<Value, ErrorShape>;

/// Ended runs whose final results are remembered for repeats.
pub const REMEMBERED: usize = 4096;

/// The longest `agent.wait` (and its default).
const MAX_WAIT: Duration = Duration::from_secs(600);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AgentParams {
    message: String,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    session_key: Option<String>,
    idempotency_key: Option<String>,
    /// Seconds; 0 or absent means the configured default.
    #[serde(default)]
    timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaitParams {
    run_id: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct SessionsAbortParams {
    key: String,
}

#[derive(Deserialize)]
struct SteerParams {
    key: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatAbortParams {
    session_key: String,
    #[serde(default)]
    run_id: Option<String>,
}

/// What is known of an operator's run.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Active { session_key: SessionKey, agent_id: String },
    Ended(Value),
}

/// Runs started by `agent`, by idempotency key, with a bound on the ended ones kept.
#[derive(Debug, Default)]
pub(super) struct RunBook {
    runs: HashMap<String, Known>,
    ended: VecDeque<String>,
}

impl RunBook {
    fn get(&self, key: &str) -> Option<&Known> {
        self.runs.get(key)
    }

    fn active(&mut self, key: String, session_key: SessionKey, agent_id: String) {
        self.runs.insert(key, Known::Active { session_key, agent_id });
    }

    /// A run that did not start after all.
    fn forget(&mut self, key: &str) {
        if matches!(self.runs.get(key), Some(Known::Active { .. })) {
            self.runs.remove(key);
        }
    }

    fn ended(&mut self, key: String, result: Value) {
        if self.ended.len() >= REMEMBERED {
            if let Some(oldest) = self.ended.pop_front() {
                self.runs.remove(&oldest);
            }
        }
        self.ended.push_back(key.clone());
        self.runs.insert(key, Known::Ended(result));
    }
}

pub(super) fn invalid(method: &str, e: impl std::fmt::Display) -> ErrorShape {
    ErrorShape::invalid_request(format!("invalid {method} params: {e}"))
}

pub(super) fn gateway_error(e: GatewayError) -> ErrorShape {
    ErrorShape::invalid_request(e.to_string())
}

pub(super) fn unavailable(_: MailboxError) -> ErrorShape {
    ErrorShape::new(error_codes::UNAVAILABLE, "the gateway is not running").with_retryable(true)
}

/// `agent`'s final result for an ended run, in the shape the CLI reads: `status`
/// (`ok`, `error`, or `timeout` for a run that timed out or was aborted), `summary`, and
/// `result.payloads[].text`, the answer it prints.
pub fn final_result(summary: &RunSummary, agent_id: &str, duration_ms: u64) -> Value {
    let (status, text, stop_reason) = match summary.outcome {
        Outcome::Ok => ("ok", "completed", "stop"),
        Outcome::Error => ("error", summary.text.lines().next().unwrap_or("error"), "error"),
        Outcome::Timeout => ("timeout", "timed out", "timeout"),
        Outcome::Killed | Outcome::Interrupted => {
            return json!({"runId": summary.run_id, "status": "timeout", "summary": "aborted", "stopReason": "rpc"})
        }
    };
    let usage = &summary.usage;
    json!({
        "runId": summary.run_id,
        "status": status,
        "summary": text,
        "result": {
            "payloads": [{"text": summary.text, "mediaUrl": null}],
            "meta": {
                "durationMs": duration_ms,
                "aborted": false,
                "stopReason": stop_reason,
                "finalAssistantVisibleText": summary.text,
                "agentMeta": {
                    "sessionId": summary.session_key,
                    "sessionKey": summary.session_key,
                    "agentId": agent_id,
                    "usage": {
                        "input": usage.prompt_tokens,
                        "output": usage.completion_tokens,
                        "cacheRead": usage.cached_prompt_tokens,
                        "total": usage.total(),
                        "cost": {"total": usage.known_cost()},
                    },
                },
            },
        },
    })
}

/// `agent.wait`'s answer for an ended run, from its final result.
fn wait_result(run_id: &str, result: &Value) -> Value {
    let status = match result["status"].as_str() {
        Some("ok") => "ok",
        Some("timeout") if result["summary"] == "aborted" => "error",
        Some("timeout") => "timeout",
        _ => "error",
    };
    let stop_reason = result["result"]["meta"]["stopReason"].as_str().or(result["stopReason"].as_str());
    let text = result["result"]["payloads"][0]["text"].clone();
    json!({
        "runId": run_id,
        "status": status,
        "endedAt": now_ms(),
        "stopReason": stop_reason,
        "terminalReply": {"disposition": "visible", "text": text},
    })
}

impl Hub {
    /// `agent`: the accepted ack now, the final result (same request id) when the run ends.
    pub(super) fn agent(&mut self, conn_id: u64, request_id: String, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: AgentParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("agent", e)))),
        };
        let Some(key) = p.idempotency_key.filter(|k| !k.trim().is_empty() && k.len() <= 200) else {
            let e = "must have required property 'idempotencyKey' (at most 200 characters)";
            return Box::pin(fut::ready(Err(invalid("agent", e))));
        };
        match self.runs.get(&key) {
            Some(Known::Active { session_key, agent_id }) => {
                let answer =
                    json!({"runId": key, "status": "in_flight", "sessionKey": session_key, "agentId": agent_id});
                return Box::pin(fut::ready(Ok(answer)));
            }
            Some(Known::Ended(result)) => return Box::pin(fut::ready(Ok(result.clone()))),
            None => {}
        }
        let session_key = p.session_key.filter(|k| !k.is_empty()).map(|k| SessionKey::from(k.as_str()));
        // The agent: named, or the session key's, or the configured default.
        let agent_id = p
            .agent_id
            .filter(|a| !a.is_empty())
            .or_else(|| session_key.as_ref().and_then(|k| k.as_str().split(':').nth(1)).map(str::to_string))
            .unwrap_or_else(|| self.config.default_agent.clone());
        let run_timeout = match p.timeout.filter(|t| *t != 0.0).map(crate::config::timeout_from_secs) {
            Some(Err(e)) => return Box::pin(fut::ready(Err(invalid("agent", format!("timeout {e}"))))),
            Some(Ok(t)) => Some(t),
            None => None,
        };
        let start = StartMain {
            agent_id: agent_id.clone(),
            task: p.message,
            run_timeout,
            budget_tokens: None,
            budget_usd: None,
            run_id: Some(RunId::from(key.as_str())),
            session_key,
        };
        // Known as active before the gateway answers, so a repeat arriving meanwhile
        // answers `in_flight` instead of racing this one to the gateway.
        let provisional = start.session_key.clone().unwrap_or_else(|| SessionKey::main(&agent_id));
        self.runs.active(key.clone(), provisional, agent_id.clone());
        let started = self.gateway.send(start);
        let accepted_at = now_ms();
        Box::pin(fut::wrap_future(started).map(move |result, act: &mut Hub, ctx| {
            let run = match result.map_err(unavailable).and_then(|r| r.map_err(gateway_error)) {
                Ok(run) => run,
                Err(e) => {
                    act.runs.forget(&key);
                    return Err(e);
                }
            };
            act.runs.active(key.clone(), run.session_key.clone(), agent_id.clone());
            act.finish_when_ended(conn_id, request_id, key.clone(), agent_id.clone(), ctx);
            Ok(json!({
                "runId": run.run_id,
                "sessionKey": run.session_key,
                "agentId": agent_id,
                "status": "accepted",
                "acceptedAt": accepted_at,
            }))
        }))
    }

    /// Wait for the run, remember its final result, and send it to the caller if it is
    /// still connected.
    fn finish_when_ended(
        &self,
        conn_id: u64,
        request_id: String,
        key: String,
        agent_id: String,
        ctx: &mut Context<Hub>,
    ) {
        let wait = self.gateway.send(WaitRun { run_id: RunId::from(key.as_str()) });
        let started = std::time::Instant::now();
        ctx.spawn(fut::wrap_future(async move { wait.await.ok()?.ok()?.await.ok() }).map(
            move |summary: Option<RunSummary>, act: &mut Hub, _| {
                let result = match summary {
                    Some(summary) => final_result(&summary, &agent_id, started.elapsed().as_millis() as u64),
                    None => {
                        json!({"runId": key, "status": "error", "summary": "the gateway stopped before the run ended"})
                    }
                };
                act.runs.ended(key, result.clone());
                if let Some(conn) = act.conns.get(&conn_id) {
                    conn.outbox.do_send(Outbound::Response { id: request_id, reply: Ok(result) });
                }
            },
        ));
    }

    /// `agent.wait {runId, timeoutMs}`: the run's end, or `status: "timeout"` when it does
    /// not end in time (or is unknown), as OpenClaw answers.
    pub(super) fn agent_wait(&mut self, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: WaitParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("agent.wait", e)))),
        };
        let timeout = p.timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis);
        if timeout > MAX_WAIT {
            let e = format!("timeoutMs must be at most {}", MAX_WAIT.as_millis());
            return Box::pin(fut::ready(Err(invalid("agent.wait", e))));
        }
        if let Some(Known::Ended(result)) = self.runs.get(&p.run_id) {
            return Box::pin(fut::ready(Ok(wait_result(&p.run_id, result))));
        }
        let wait = self.gateway.send(WaitRun { run_id: RunId::from(p.run_id.as_str()) });
        let run_id = p.run_id;
        Box::pin(fut::wrap_future(async move {
            let ended = async { wait.await.ok()?.ok()?.await.ok() };
            match tokio::time::timeout(timeout, ended).await {
                Ok(Some(summary)) => Ok(wait_result(&run_id, &final_result(&summary, "", 0))),
                Ok(None) => {
                    // Unknown to the gateway: as OpenClaw, a timeout once the wait is up.
                    tokio::time::sleep(timeout).await;
                    Ok(json!({"runId": run_id, "status": "timeout"}))
                }
                Err(_) => Ok(json!({"runId": run_id, "status": "timeout"})),
            }
        }))
    }

    /// `sessions.abort {key}`: abort the session's running run and its tree.
    pub(super) fn sessions_abort(&mut self, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: SessionsAbortParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("sessions.abort", e)))),
        };
        let abort = self.gateway.send(Abort { target: SessionKey::from(p.key.as_str()), run_id: None });
        Box::pin(fut::wrap_future(async move {
            match abort.await.map_err(unavailable)? {
                Ok(Some(run_id)) => Ok(json!({"ok": true, "abortedRunId": run_id, "status": "aborted"})),
                Ok(None) | Err(GatewayError::NoSuchSession(_)) => {
                    Ok(json!({"ok": true, "abortedRunId": null, "status": "no-active-run"}))
                }
                Err(e) => Err(gateway_error(e)),
            }
        }))
    }

    /// `sessions.steer {key, message}`: deliver the operator's message to the session (a
    /// running one reads it on its next turn; an idle one takes it as the next run, as
    /// `sessions_send` does). Answers `{ok, key, status}` (`delivered`, `started` or
    /// `resumed`, with the `runId` of a new run).
    pub(super) fn sessions_steer(&mut self, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: SteerParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("sessions.steer", e)))),
        };
        if p.message.trim().is_empty() {
            return Box::pin(fut::ready(Err(invalid("sessions.steer", "the message is empty"))));
        }
        let send =
            self.gateway.send(SendTo { caller: None, target: SessionKey::from(p.key.as_str()), text: p.message });
        Box::pin(fut::wrap_future(async move {
            let outcome = send.await.map_err(unavailable)?.map_err(gateway_error)?;
            let mut reply = json!({"ok": true, "key": p.key});
            if let (Value::Object(reply), Ok(Value::Object(outcome))) = (&mut reply, serde_json::to_value(&outcome)) {
                reply.extend(outcome);
            }
            Ok(reply)
        }))
    }

    /// `sessions.reset {key}` and `sessions.delete {key}`: forget a session that is not
    /// running (an idle main session starts its next run fresh). A running one is
    /// refused: abort it first.
    pub(super) fn sessions_forget(&mut self, method: &'static str, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: SessionsAbortParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid(method, e)))),
        };
        let forget = self.gateway.send(ForgetSession { target: SessionKey::from(p.key.as_str()) });
        let done = if method == "sessions.reset" { "reset" } else { "deleted" };
        Box::pin(fut::wrap_future(async move {
            match forget.await.map_err(unavailable)? {
                Ok(true) => Ok(json!({"ok": true, "key": p.key, "status": done})),
                Ok(false) => Ok(json!({"ok": true, "key": p.key, "status": "not-found"})),
                Err(GatewayError::Busy(key)) => Err(ErrorShape::invalid_request(format!(
                    "session {key} is running; abort it first (sessions.abort)"
                ))),
                Err(e) => Err(gateway_error(e)),
            }
        }))
    }

    /// `chat.abort {sessionKey, runId?}`: the same, answered as OpenClaw's chat does.
    pub(super) fn chat_abort(&mut self, params: Value) -> ResponseActFuture<Self, Reply> {
        let p: ChatAbortParams = match serde_json::from_value(params) {
            Ok(p) => p,
            Err(e) => return Box::pin(fut::ready(Err(invalid("chat.abort", e)))),
        };
        let target = SessionKey::from(p.session_key.as_str());
        let abort = self.gateway.send(Abort { target, run_id: p.run_id.as_deref().map(RunId::from) });
        Box::pin(fut::wrap_future(async move {
            match abort.await.map_err(unavailable)? {
                Ok(Some(run_id)) => Ok(json!({"ok": true, "aborted": true, "runIds": [run_id]})),
                Ok(None) | Err(GatewayError::NoSuchSession(_)) => {
                    Ok(json!({"ok": true, "aborted": false, "runIds": []}))
                }
                Err(e) => Err(gateway_error(e)),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Usage;

    fn summary(outcome: Outcome, text: &str) -> RunSummary {
        RunSummary {
            run_id: "r1".into(),
            session_key: "agent:brain:main".into(),
            outcome,
            text: text.into(),
            usage: Usage::tokens(10, 5),
        }
    }

    #[test]
    fn final_results_say_the_outcome_as_the_cli_reads_it() {
        let ok = final_result(&summary(Outcome::Ok, "the answer"), "brain", 12);
        assert_eq!((ok["status"].as_str(), ok["summary"].as_str()), (Some("ok"), Some("completed")));
        assert_eq!(ok["result"]["payloads"], json!([{"text": "the answer", "mediaUrl": null}]));
        assert_eq!(ok["result"]["meta"]["agentMeta"]["usage"]["total"], 15);
        let error = final_result(&summary(Outcome::Error, "model call failed: HTTP 500\nmore"), "brain", 1);
        assert_eq!(
            (error["status"].as_str(), error["summary"].as_str()),
            (Some("error"), Some("model call failed: HTTP 500"))
        );
        let killed = final_result(&summary(Outcome::Killed, "killed"), "brain", 1);
        assert_eq!(killed, json!({"runId": "r1", "status": "timeout", "summary": "aborted", "stopReason": "rpc"}));
        assert_eq!(wait_result("r1", &killed)["status"], "error");
        assert_eq!(wait_result("r1", &ok)["terminalReply"]["text"], "the answer");
    }

    #[test]
    fn the_run_book_forgets_the_oldest_ended_runs_past_its_bound() {
        let mut book = RunBook::default();
        book.active("a".into(), "agent:b:main".into(), "b".into());
        assert!(matches!(book.get("a"), Some(Known::Active { .. })));
        for i in 0..=REMEMBERED {
            book.ended(format!("k{i}"), json!(i));
        }
        assert_eq!(book.get("k0"), None);
        assert_eq!(book.get("k1"), Some(&Known::Ended(json!(1))));
        assert!(matches!(book.get("a"), Some(Known::Active { .. })), "active runs are never forgotten");
        assert_eq!(book.runs.len(), REMEMBERED + 1);
    }
}
