//! Node invokes: `node.invoke` from an operator (or `nodes_invoke` from a session) goes
//! out to the node as event `node.invoke.request`, and the node's `node.invoke.result`
//! comes back to the waiting caller.
//!
//! Every invoke ends, and promptly: at its deadline; at once when the socket it went
//! out on closes; and at once when its caller goes away (a killed session drops its
//! tool future, an operator's socket closes), in which case the node is told with
//! `node.invoke.cancel`. Idempotency: a repeated `idempotencyKey` from the same caller
//! for the same node, command and params within ten minutes returns the first result
//! instead of running the command again (only after the command is checked as approved,
//! like any invoke); the same key with other params is an error, and another caller's
//! key is never seen.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::{now_ms, Hub, Outbound};
use crate::protocol::{
    error_codes, ErrorShape, EventFrame, NodeInvokeCancel, NodeInvokeParams, NodeInvokeRequest, NodeInvokeResponse,
    NodeInvokeResultParams,
};

pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
pub const MAX_TIMEOUT_MS: u64 = 10 * 60_000;
const IDEMPOTENCY_TTL_MS: u64 = 10 * 60_000;
/// Cached results kept at most; the oldest go first.
const MAX_CACHED_RESULTS: usize = 4096;

type Reply = Result<Value, ErrorShape>;

/// Who asked for an invoke: a paired device, the loopback owner, or a session. Only the
/// same caller ever sees a cached result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    Device(String),
    /// A connection without a device identity (the owner's CLI).
    Owner,
    Session(crate::keys::SessionKey),
}

struct Pending {
    node_id: String,
    /// The connection the request went out on.
    conn_id: u64,
    command: String,
    /// The connection that asked, when an operator did.
    caller_conn: Option<u64>,
    /// Its idempotency slot, freed when the invoke ends.
    key: Option<DoneKey>,
    reply: oneshot::Sender<Reply>,
}

/// (caller, node id, command, idempotency key).
type DoneKey = (Caller, String, String, String);

struct Done {
    at_ms: u64,
    params_digest: [u8; 32],
    value: Value,
}

#[derive(Default)]
pub(crate) struct Invokes {
    pending: HashMap<String, Pending>,
    done: HashMap<DoneKey, Done>,
}

impl Invokes {
    /// A connection closed: every invoke sent on it fails now, not at its deadline,
    /// even when the node has already reconnected on another socket; every invoke it
    /// asked for is cancelled.
    pub(crate) fn fail_conn(&mut self, conn_id: u64) -> Vec<(u64, String)> {
        let ids: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.conn_id == conn_id).map(|(id, _)| id.clone()).collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                let message = format!("node {} disconnected before answering {}", p.node_id, p.command);
                let _ = p.reply.send(Err(ErrorShape::new(error_codes::UNAVAILABLE, message)));
            }
        }
        let asked: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.caller_conn == Some(conn_id)).map(|(id, _)| id.clone()).collect();
        asked.into_iter().filter_map(|id| self.pending.remove(&id).map(|p| (p.conn_id, id))).collect()
    }

    fn cached(&mut self, key: Option<&DoneKey>, digest: &[u8; 32], now: u64) -> Result<Option<Value>, ErrorShape> {
        self.done.retain(|_, d| now.saturating_sub(d.at_ms) < IDEMPOTENCY_TTL_MS);
        let Some(done) = key.and_then(|k| self.done.get(k)) else { return Ok(None) };
        if &done.params_digest != digest {
            return Err(ErrorShape::invalid_request(
                "idempotencyKey was already used with other params for this node and command; use a new key",
            ));
        }
        Ok(Some(done.value.clone()))
    }

    fn in_flight(&self, key: &DoneKey) -> bool {
        self.pending.values().any(|p| p.key.as_ref() == Some(key))
    }

    fn remember(&mut self, key: DoneKey, digest: [u8; 32], value: Value) {
        if self.done.len() >= MAX_CACHED_RESULTS {
            if let Some(oldest) = self.done.iter().min_by_key(|(_, d)| d.at_ms).map(|(k, _)| k.clone()) {
                self.done.remove(&oldest);
            }
        }
        self.done.insert(key, Done { at_ms: now_ms(), params_digest: digest, value });
    }
}

/// SHA-256 of the params as canonical JSON (serde_json sorts object keys).
fn digest(params: &Option<Value>) -> [u8; 32] {
    let text = params.as_ref().map(Value::to_string).unwrap_or_default();
    Sha256::digest(text.as_bytes()).into()
}

/// A session's `nodes_invoke` (its capability was checked by the tool layer). The tool
/// keeps the sender of `caller_gone`; when the session is killed its tool future is
/// dropped, the receiver wakes, and the invoke is cancelled at once.
#[derive(Message)]
#[rtype(result = "Result<Value, ErrorShape>")]
pub struct InvokeNode {
    pub params: NodeInvokeParams,
    pub session: crate::keys::SessionKey,
    pub caller_gone: oneshot::Receiver<()>,
}

/// Where an invoke came from.
pub(crate) struct Origin {
    pub caller: Caller,
    pub caller_conn: Option<u64>,
    /// Resolves when the caller no longer waits for the answer.
    pub caller_gone: Option<oneshot::Receiver<()>>,
}

enum Ended {
    Answered(Reply),
    Dropped,
    TimedOut,
    CallerGone,
}

impl Hub {
    pub(crate) fn invoke(&mut self, params: NodeInvokeParams, origin: Origin) -> ResponseActFuture<Self, Reply> {
        if let Err(e) = self.check_approved(&params) {
            return Box::pin(fut::ready(Err(e)));
        }
        let digest = digest(&params.params);
        let key = params
            .idempotency_key
            .clone()
            .map(|k| (origin.caller.clone(), params.node_id.clone(), params.command.clone(), k));
        match self.invokes.cached(key.as_ref(), &digest, now_ms()) {
            Ok(Some(first)) => return Box::pin(fut::ready(Ok(first))),
            Err(e) => return Box::pin(fut::ready(Err(e))),
            Ok(None) => {}
        }
        if key.as_ref().is_some_and(|k| self.invokes.in_flight(k)) {
            let message = "an invoke with this idempotencyKey is still running; wait for its answer";
            return Box::pin(fut::ready(Err(ErrorShape::new(error_codes::UNAVAILABLE, message).with_retryable(true))));
        }
        let (invoke_id, timeout_ms, receiver) = match self.send_invoke(&params, origin.caller_conn, key.clone()) {
            Ok(started) => started,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let (node, command) = (params.node_id.clone(), params.command.clone());
        let caller_gone = origin.caller_gone;
        let wait = async move {
            let gone = async {
                match caller_gone {
                    Some(gone) => {
                        let _ = gone.await;
                    }
                    None => futures_util::future::pending::<()>().await,
                }
            };
            tokio::select! {
                answer = receiver => answer.map_or(Ended::Dropped, Ended::Answered),
                () = tokio::time::sleep(Duration::from_millis(timeout_ms)) => Ended::TimedOut,
                () = gone => Ended::CallerGone,
            }
        };
        Box::pin(wait.into_actor(self).map(move |ended, hub, _| {
            let pending = hub.invokes.pending.remove(&invoke_id);
            let reply = match ended {
                Ended::Answered(reply) => reply,
                Ended::Dropped => Err(ErrorShape::new(error_codes::UNAVAILABLE, "the invoke was dropped")),
                Ended::TimedOut => Err(ErrorShape::new(
                    error_codes::UNAVAILABLE,
                    format!("node {node} did not answer {command} within {timeout_ms} ms"),
                )
                .with_retryable(true)),
                Ended::CallerGone => {
                    if let Some(p) = pending {
                        hub.cancel_on_node(p.conn_id, &invoke_id);
                    }
                    Err(ErrorShape::new(error_codes::UNAVAILABLE, "the caller went away; the invoke was cancelled"))
                }
            };
            if let (Ok(value), Some(key)) = (&reply, key) {
                hub.invokes.remember(key, digest, value.clone());
            }
            reply
        }))
    }

    /// Tell the node (on the socket the request went out on) that nobody waits any more.
    pub(crate) fn cancel_on_node(&self, conn_id: u64, invoke_id: &str) {
        let Some(conn) = self.conns.get(&conn_id) else { return };
        match EventFrame::from_payload(&NodeInvokeCancel { invoke_id: invoke_id.to_string() }) {
            Ok(frame) => conn.outbox.do_send(Outbound::Event { frame, broadcast: false }),
            Err(e) => tracing::error!(error = %e, "cannot encode node.invoke.cancel"),
        }
    }

    fn check_approved(&self, params: &NodeInvokeParams) -> Result<(), ErrorShape> {
        let node = &params.node_id;
        if !self.door.pairing().book.is_command_approved(node, &params.command) {
            let message = format!(
                "command {} is not approved for node {node}; approve its commands with `hivegate nodes approve`",
                params.command
            );
            return Err(ErrorShape::new(error_codes::FORBIDDEN, message)
                .with_details(serde_json::json!({"code": "COMMAND_NOT_APPROVED"})));
        }
        Ok(())
    }

    fn send_invoke(
        &mut self,
        params: &NodeInvokeParams,
        caller_conn: Option<u64>,
        key: Option<DoneKey>,
    ) -> Result<(String, u64, oneshot::Receiver<Reply>), ErrorShape> {
        let node = &params.node_id;
        let conn_id = *self.nodes.get(node).filter(|id| self.conns.contains_key(id)).ok_or_else(|| {
            ErrorShape::new(
                error_codes::UNAVAILABLE,
                format!("node {node} is not connected; see `hivegate nodes list`"),
            )
        })?;
        let conn = self
            .conns
            .get(&conn_id)
            .ok_or_else(|| ErrorShape::new(error_codes::UNAVAILABLE, "node connection gone"))?;
        let timeout_ms = params.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).clamp(1, MAX_TIMEOUT_MS);
        let invoke_id = uuid::Uuid::new_v4().to_string();
        let request =
            NodeInvokeRequest::forward(&invoke_id, params, Some(timeout_ms)).map_err(|e| e.to_error_shape())?;
        let frame = EventFrame::from_payload(&request).map_err(|e| e.to_error_shape())?;
        conn.outbox.do_send(Outbound::Event { frame, broadcast: false });
        let (reply, receiver) = oneshot::channel();
        self.invokes.pending.insert(
            invoke_id.clone(),
            Pending { node_id: node.clone(), conn_id, command: params.command.clone(), caller_conn, key, reply },
        );
        Ok((invoke_id, timeout_ms, receiver))
    }

    /// `node.invoke.result` from the node on connection `conn_id`.
    pub(crate) fn invoke_result(&mut self, conn_id: u64, result: NodeInvokeResultParams) -> Reply {
        let caller = self.conns.get(&conn_id).and_then(|c| c.device_id.clone());
        let Some(invoked) = self.invokes.pending.get(&result.id).map(|p| p.node_id.clone()) else {
            return Err(ErrorShape::invalid_request(format!(
                "unknown invoke id {} (it may have timed out or been cancelled)",
                crate::protocol::clip(&result.id)
            )));
        };
        // Both the claimed node id and the caller must be the node the invoke went to;
        // anyone else's answer is refused and the invoke keeps waiting for the real one.
        if caller.as_deref() != Some(invoked.as_str()) || result.node_id != invoked {
            return Err(ErrorShape::invalid_request("node.invoke.result must come from the node that was invoked"));
        }
        let Some(pending) = self.invokes.pending.remove(&result.id) else {
            return Err(ErrorShape::invalid_request("unknown invoke id"));
        };
        let reply = if result.ok {
            NodeInvokeResponse::from_result(&result, &pending.command)
                .and_then(|r| crate::protocol::to_value(&r))
                .map_err(|e| e.to_error_shape())
        } else {
            let message = result
                .error
                .as_ref()
                .and_then(|e| e.message.clone())
                .unwrap_or_else(|| "the node reported a failure".into());
            Err(ErrorShape::new(error_codes::UNAVAILABLE, message))
        };
        let _ = pending.reply.send(reply);
        Ok(serde_json::json!({"ok": true}))
    }
}

impl Handler<InvokeNode> for Hub {
    type Result = ResponseActFuture<Self, Reply>;

    fn handle(&mut self, msg: InvokeNode, _: &mut Self::Context) -> Self::Result {
        let origin =
            Origin { caller: Caller::Session(msg.session), caller_conn: None, caller_gone: Some(msg.caller_gone) };
        self.invoke(msg.params, origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_results_are_per_caller_and_refuse_other_params() {
        let mut invokes = Invokes::default();
        let key = |caller: Caller| (caller, "n".to_string(), "system.which".to_string(), "k1".to_string());
        let a = digest(&Some(serde_json::json!({"bins": ["sh"]})));
        let b = digest(&Some(serde_json::json!({"bins": ["rm"]})));
        invokes.remember(key(Caller::Owner), a, serde_json::json!({"first": true}));
        let now = now_ms();
        assert_eq!(invokes.cached(Some(&key(Caller::Owner)), &a, now), Ok(Some(serde_json::json!({"first": true}))));
        let mismatch = invokes.cached(Some(&key(Caller::Owner)), &b, now).unwrap_err();
        assert!(mismatch.message.contains("other params"), "{}", mismatch.message);
        assert_eq!(invokes.cached(Some(&key(Caller::Device("d".into()))), &a, now), Ok(None));
        assert_eq!(invokes.cached(Some(&key(Caller::Owner)), &a, now + IDEMPOTENCY_TTL_MS), Ok(None), "expired");
    }

    #[test]
    fn digests_ignore_key_order() {
        let one: Value = serde_json::from_str(r#"{"a":1,"b":[1,2]}"#).unwrap();
        let two: Value = serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap();
        assert_eq!(digest(&Some(one)), digest(&Some(two)));
        assert_ne!(digest(&None), digest(&Some(Value::Null)));
    }
}
