//! Node invokes: `node.invoke` from an operator (or `nodes_invoke` from a session) goes
//! out to the node as event `node.invoke.request`, and the node's `node.invoke.result`
//! comes back to the waiting caller. Each invoke has a deadline; the socket it went out
//! on closing fails it at once; a repeated `idempotencyKey` for the same node and
//! command within ten minutes returns the first result instead of running the command
//! again (and only after the command is checked as approved, like any invoke).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{now_ms, Hub, Outbound};
use crate::protocol::{
    error_codes, ErrorShape, EventFrame, NodeInvokeParams, NodeInvokeRequest, NodeInvokeResponse,
    NodeInvokeResultParams,
};

pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
pub const MAX_TIMEOUT_MS: u64 = 10 * 60_000;
const IDEMPOTENCY_TTL_MS: u64 = 10 * 60_000;

type Reply = Result<Value, ErrorShape>;

struct Pending {
    node_id: String,
    /// The connection the request went out on.
    conn_id: u64,
    command: String,
    reply: oneshot::Sender<Reply>,
}

/// (node id, command, idempotency key): a key is only ever replayed for the same
/// command on the same node.
type DoneKey = (String, String, String);

#[derive(Default)]
pub(crate) struct Invokes {
    pending: HashMap<String, Pending>,
    done: HashMap<DoneKey, (u64, Value)>,
}

impl Invokes {
    /// A connection closed: every invoke sent on it fails now, not at its deadline,
    /// even when the node has already reconnected on another socket.
    pub(crate) fn fail_conn(&mut self, conn_id: u64) {
        let ids: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.conn_id == conn_id).map(|(id, _)| id.clone()).collect();
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                let message = format!("node {} disconnected before answering {}", p.node_id, p.command);
                let _ = p.reply.send(Err(ErrorShape::new(error_codes::UNAVAILABLE, message)));
            }
        }
    }

    fn cached(&mut self, key: Option<&DoneKey>, now: u64) -> Option<Value> {
        self.done.retain(|_, (at, _)| now.saturating_sub(*at) < IDEMPOTENCY_TTL_MS);
        key.and_then(|k| self.done.get(k)).map(|(_, v)| v.clone())
    }
}

/// A session's `nodes_invoke` (its capability was checked by the tool layer).
#[derive(Message)]
#[rtype(result = "Result<Value, ErrorShape>")]
pub struct InvokeNode(pub NodeInvokeParams);

impl Hub {
    pub(crate) fn invoke(&mut self, params: NodeInvokeParams) -> ResponseActFuture<Self, Reply> {
        if let Err(e) = self.check_approved(&params) {
            return Box::pin(fut::ready(Err(e)));
        }
        let key = params.idempotency_key.clone().map(|k| (params.node_id.clone(), params.command.clone(), k));
        if let Some(first) = self.invokes.cached(key.as_ref(), now_ms()) {
            return Box::pin(fut::ready(Ok(first)));
        }
        let started = match self.send_invoke(&params) {
            Ok(started) => started,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let (invoke_id, timeout_ms, receiver) = started;
        let (node, command) = (params.node_id.clone(), params.command.clone());
        let wait = tokio::time::timeout(Duration::from_millis(timeout_ms), receiver);
        Box::pin(wait.into_actor(self).map(move |result, hub, _| {
            hub.invokes.pending.remove(&invoke_id);
            let reply = match result {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(ErrorShape::new(error_codes::UNAVAILABLE, "the invoke was dropped")),
                Err(_) => Err(ErrorShape::new(
                    error_codes::UNAVAILABLE,
                    format!("node {node} did not answer {command} within {timeout_ms} ms"),
                )
                .with_retryable(true)),
            };
            if let (Ok(value), Some(key)) = (&reply, key) {
                hub.invokes.done.insert(key, (now_ms(), value.clone()));
            }
            reply
        }))
    }

    fn check_approved(&self, params: &NodeInvokeParams) -> Result<(), ErrorShape> {
        let node = &params.node_id;
        if !self.book.is_command_approved(node, &params.command) {
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
            Pending { node_id: node.clone(), conn_id, command: params.command.clone(), reply },
        );
        Ok((invoke_id, timeout_ms, receiver))
    }

    /// `node.invoke.result` from the node on connection `conn_id`.
    pub(crate) fn invoke_result(&mut self, conn_id: u64, result: NodeInvokeResultParams) -> Reply {
        let caller = self.conns.get(&conn_id).and_then(|c| c.device_id.clone());
        let Some(invoked) = self.invokes.pending.get(&result.id).map(|p| p.node_id.clone()) else {
            return Err(ErrorShape::invalid_request(format!(
                "unknown invoke id {} (it may have timed out)",
                result.id
            )));
        };
        // Both the claimed node id and the caller must be the node the invoke went to;
        // anyone else's answer is refused and the invoke keeps waiting for the real one.
        if caller.as_deref() != Some(invoked.as_str()) || result.node_id != invoked {
            return Err(ErrorShape::invalid_request("node.invoke.result must come from the node that was invoked"));
        }
        let Some(pending) = self.invokes.pending.remove(&result.id) else {
            return Err(ErrorShape::invalid_request(format!("unknown invoke id {}", result.id)));
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
        self.invoke(msg.0)
    }
}
