//! RPC methods of authenticated connections: one function per method, dispatched from
//! [`Call`]. Every call is checked here, against the caller's live grant and the one
//! authorization table: a connection whose device was revoked or removed has no grant
//! left, even for requests it queued before the revoke. Then what only the hub knows is
//! checked (the caller must hold every scope of a grant it approves, rotates, revokes or
//! removes; a result must come from the invoked node). Methods that change the pairing
//! book answer only after the change is committed ([`Hub::commit`]).

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::invoke::{Caller, Origin};
use super::{now_ms, Call, Hub};
use crate::pairing::PairingEvent;
use crate::protocol::{
    error_codes, to_value, DeviceTokenParams, DeviceTokenRevokeResult, DeviceTokenRotateResult, ErrorShape,
    NodeEventParams, NodeEventResult, NodeInvokeParams, NodeInvokeResultParams, NodeListEntry, NodeListResult,
    RequestIdParams, Role,
};
use crate::scope::ScopeSet;
use crate::scope::{authorize, Denied};

type Reply = Result<Value, ErrorShape>;

/// Advertised in hello-ok `features.methods`.
pub const METHODS: &[&str] = &[
    "health",
    "status",
    "device.pair.list",
    "device.pair.approve",
    "device.pair.reject",
    "device.pair.remove",
    "device.token.rotate",
    "device.token.revoke",
    "node.list",
    "node.describe",
    "node.invoke",
    "node.invoke.result",
    "node.event",
    "node.pair.list",
    "node.pair.approve",
    "node.pair.reject",
    "node.runnerInventory.update",
    "node.skills.update",
    "node.pluginTools.update",
    "sessions.list",
    "agent",
    "agent.wait",
    "sessions.abort",
    "sessions.steer",
    "chat.abort",
    "agents.list",
    "models.list",
    "chat.history",
    "sessions.reset",
    "sessions.delete",
    "runs.list",
    "runs.show",
];

/// The methods that change the pairing book; they answer after the commit.
const MUTATIONS: &[&str] = &[
    "device.pair.approve",
    "device.pair.reject",
    "device.pair.remove",
    "device.token.rotate",
    "device.token.revoke",
    "node.pair.approve",
    "node.pair.reject",
];

/// Advertised in hello-ok `features.events`.
pub const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "shutdown",
    "device.pair.requested",
    "device.pair.resolved",
    "node.pair.requested",
    "node.pair.resolved",
    "node.invoke.request",
    "agent",
    "chat",
    "sessions.changed",
];

fn params<T: DeserializeOwned>(method: &str, value: Value) -> Result<T, ErrorShape> {
    serde_json::from_value(value).map_err(|e| ErrorShape::invalid_request(format!("invalid params for {method}: {e}")))
}

fn value<T: serde::Serialize>(payload: &T) -> Reply {
    to_value(payload).map_err(|e| e.to_error_shape())
}

impl Hub {
    fn caller_scopes(&self, conn_id: u64) -> ScopeSet {
        self.conns.get(&conn_id).map_or(ScopeSet::EMPTY, |c| c.scopes)
    }

    fn caller_node(&self, conn_id: u64) -> Result<String, ErrorShape> {
        self.conns
            .get(&conn_id)
            .filter(|c| c.role == Role::Node)
            .and_then(|c| c.device_id.clone())
            .ok_or_else(|| ErrorShape::invalid_request("only a node connection may call this method"))
    }

    /// Methods answered from the hub's own state without changing the pairing book.
    fn call_local(&mut self, conn_id: u64, method: &str, p: Value) -> Reply {
        match method {
            "health" => Ok(self.health()),
            "status" => Ok(self.status()),
            "device.pair.list" => self.device_pair_list(),
            "node.list" => value(&NodeListResult { ts: now_ms(), nodes: self.node_entries() }),
            "node.describe" => self.node_describe(params::<NodeIdParams>(method, p)?.node_id),
            "node.pair.list" => value(&self.door.pairing().book.node_pair_list(now_ms())),
            "node.event" => self.node_event(params(method, p)?),
            "node.runnerInventory.update" => self.node_gated(conn_id, json!({})),
            "node.skills.update" => self.node_echo(conn_id, "skills", p),
            "node.pluginTools.update" => self.node_echo(conn_id, "tools", p),
            "node.invoke.result" => self.invoke_result(conn_id, params::<NodeInvokeResultParams>(method, p)?),
            other => Err(ErrorShape::invalid_request(format!("unknown method: {}", crate::protocol::clip(other)))),
        }
    }

    /// Methods that change the pairing book ([`MUTATIONS`]): the change made in memory
    /// and what to do once it is committed.
    fn call_mutation(&mut self, conn_id: u64, method: &str, p: Value) -> Result<Change, ErrorShape> {
        let caller = self.caller_scopes(conn_id);
        // Counted before the change: a connect decided once it is in the book counts it.
        self.door.pairing().changed();
        match method {
            "device.pair.approve" => params(method, p).and_then(|p| self.device_pair_approve(caller, p)),
            "device.pair.reject" => params(method, p).and_then(|p| self.device_pair_reject(p)),
            "device.pair.remove" => {
                params::<DeviceIdParams>(method, p).and_then(|p| self.device_pair_remove(caller, p.device_id))
            }
            "device.token.rotate" => params(method, p).and_then(|p| self.device_token_rotate(caller, p)),
            "device.token.revoke" => params(method, p).and_then(|p| self.device_token_revoke(caller, p)),
            "node.pair.approve" => params(method, p).and_then(|p| self.node_pair_approve(caller, p)),
            "node.pair.reject" => params(method, p).and_then(|p| self.node_pair_reject(p)),
            other => Err(ErrorShape::invalid_request(format!("unknown method: {}", crate::protocol::clip(other)))),
        }
    }

    /// Commit a change, then broadcast its events, close what it closes and answer.
    fn finish_change(&mut self, change: Change, ctx: &mut Context<Self>) -> ResponseActFuture<Self, Reply> {
        if let Some((device_id, _, _)) = &change.close {
            // Its authority is going: a connect of it decided on a socket's thread before
            // this change must not be admitted after it.
            self.door.pairing().revoke(device_id);
        }
        let saved = self.commit(ctx, move |hub, saved| match saved {
            Ok(()) => {
                hub.broadcast(&change.events);
                if let Some((device_id, role, reason)) = &change.close {
                    hub.close_device(device_id, *role, reason);
                }
                Ok(change.reply)
            }
            Err(e) => Err(not_saved(&e)),
        });
        Box::pin(fut::wrap_future(saved).map(|r, _, _| r.unwrap_or_else(|_| Err(not_saved("the store went away")))))
    }

    fn status(&self) -> Value {
        let list = self.door.pairing().book.device_pair_list(now_ms());
        json!({
            "runtimeVersion": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptimeMs": self.door.started.elapsed().as_millis() as u64,
            "sessions": {"live": self.stats.live_sessions(), "spawns": self.stats.spawns()},
            "devices": {"paired": list.paired.len(), "pending": list.pending.len()},
            "nodes": {"connected": self.nodes.len()},
            "connections": self.conns.len(),
        })
    }

    fn device_pair_list(&self) -> Reply {
        let mut list = self.door.pairing().book.device_pair_list(now_ms());
        for row in &mut list.paired {
            row.connected = Some(self.conns.values().any(|c| c.device_id.as_deref() == Some(row.device_id.as_str())));
        }
        value(&list)
    }

    fn device_pair_approve(&mut self, caller: ScopeSet, p: RequestIdParams) -> Result<Change, ErrorShape> {
        let now = now_ms();
        let outcome = self.door.pairing().book.approve(&p.request_id, caller, now).map_err(|e| e.to_error_shape())?;
        let device = self.door.pairing().book.device_row(&outcome.device.device_id, now);
        Ok(Change::new(json!({"requestId": outcome.request_id, "device": device}), outcome.events))
    }

    fn device_pair_reject(&mut self, p: RequestIdParams) -> Result<Change, ErrorShape> {
        let outcome = self.door.pairing().book.reject(&p.request_id, now_ms()).map_err(|e| e.to_error_shape())?;
        let reply = json!({"requestId": outcome.request.request_id, "deviceId": outcome.request.device_id, "decision": "rejected"});
        Ok(Change::new(reply, outcome.events))
    }

    fn device_pair_remove(&mut self, caller: ScopeSet, device_id: String) -> Result<Change, ErrorShape> {
        let outcome = self.door.pairing().book.remove_device(&device_id, caller).map_err(|e| e.to_error_shape())?;
        let reply = json!({"deviceId": outcome.device.device_id, "removed": true});
        Ok(Change::new(reply, Vec::new()).closing(device_id, None, "device removed"))
    }

    fn device_token_rotate(&mut self, caller: ScopeSet, p: DeviceTokenParams) -> Result<Change, ErrorShape> {
        let issued = self
            .door
            .pairing()
            .book
            .rotate_token(&p.device_id, p.role, caller, now_ms())
            .map_err(|e| e.to_error_shape())?;
        // The old token is dead: its connections go, and the device picks up the new
        // token in its next hello-ok. The operator never sees the value.
        let reply = to_value(&DeviceTokenRotateResult {
            device_id: issued.device_id,
            role: issued.role,
            scopes: issued.scopes.names().into_iter().map(String::from).collect(),
            rotated_at_ms: issued.issued_at_ms,
            token: None,
        })
        .map_err(|e| e.to_error_shape())?;
        Ok(Change::new(reply, Vec::new()).closing(p.device_id, Some(p.role), "device token rotated"))
    }

    fn device_token_revoke(&mut self, caller: ScopeSet, p: DeviceTokenParams) -> Result<Change, ErrorShape> {
        let outcome = self
            .door
            .pairing()
            .book
            .revoke_token(&p.device_id, p.role, caller, now_ms())
            .map_err(|e| e.to_error_shape())?;
        let reply = to_value(&DeviceTokenRevokeResult {
            device_id: outcome.device_id,
            role: outcome.role,
            revoked_at_ms: outcome.revoked_at_ms,
        })
        .map_err(|e| e.to_error_shape())?;
        Ok(Change::new(reply, Vec::new()).closing(p.device_id, Some(p.role), "device token revoked"))
    }

    /// Every node the hub knows: approved surfaces, pending ones, and connected nodes.
    fn node_entries(&self) -> Vec<NodeListEntry> {
        let mut ids: Vec<String> = self.nodes.keys().cloned().collect();
        for row in self.door.pairing().book.node_pair_list(now_ms()).paired {
            ids.push(row.node_id);
        }
        ids.sort();
        ids.dedup();
        ids.iter().map(|id| self.node_entry(id)).collect()
    }

    fn node_entry(&self, node_id: &str) -> NodeListEntry {
        let pairing = self.door.pairing();
        let surface = pairing.book.node_surface(node_id);
        let pending = pairing.book.node_pending_for(node_id);
        let conn = self.nodes.get(node_id).and_then(|c| self.conns.get(c));
        let device = pairing.book.device(node_id);
        let declared = pending.map(|p| &p.declaration);
        NodeListEntry {
            node_id: node_id.to_string(),
            display_name: surface
                .and_then(|s| s.display_name.clone())
                .or_else(|| device.and_then(|d| d.display_name.clone())),
            platform: surface.and_then(|s| s.platform.clone()).or_else(|| device.and_then(|d| d.platform.clone())),
            version: surface.and_then(|s| s.version.clone()).or_else(|| declared.and_then(|d| d.version.clone())),
            client_id: surface.and_then(|s| s.client_id.clone()).or_else(|| device.map(|d| d.client_id.clone())),
            client_mode: surface.and_then(|s| s.client_mode.clone()).or_else(|| device.map(|d| d.client_mode.clone())),
            device_family: surface
                .and_then(|s| s.device_family.clone())
                .or_else(|| device.and_then(|d| d.device_family.clone())),
            remote_ip: conn.map(|c| c.remote_ip.clone()),
            caps: surface.map(|s| s.caps.iter().cloned().collect()).unwrap_or_default(),
            commands: surface.map(|s| s.commands.iter().cloned().collect()).unwrap_or_default(),
            session_host: Some(false),
            node_plugin_tools: Some(Vec::new()),
            path_env: None,
            approval_state: Some(if surface.is_some() { "approved" } else { "pending" }.to_string()),
            connected_at_ms: conn.map(|c| c.connected_at_ms),
            last_connected_at_ms: conn.map(|c| c.connected_at_ms),
            last_seen_at_ms: device.and_then(|d| d.last_seen_at_ms),
            last_seen_reason: Some("connect".to_string()),
            approved_at_ms: surface.map(|s| s.approved_at_ms),
            paired: device.is_some(),
            connected: conn.is_some(),
        }
    }

    fn node_describe(&self, node_id: String) -> Reply {
        if self.door.pairing().book.device(&node_id).is_none() && !self.nodes.contains_key(&node_id) {
            return Err(ErrorShape::invalid_request(format!("unknown node {node_id}; see `hivegate nodes list`")));
        }
        value(&self.node_entry(&node_id))
    }

    fn node_pair_approve(&mut self, caller: ScopeSet, p: RequestIdParams) -> Result<Change, ErrorShape> {
        let outcome =
            self.door.pairing().book.approve_node(&p.request_id, caller, now_ms()).map_err(|e| e.to_error_shape())?;
        Ok(Change::new(json!({"requestId": outcome.request_id, "node": outcome.node.to_row()}), outcome.events))
    }

    fn node_pair_reject(&mut self, p: RequestIdParams) -> Result<Change, ErrorShape> {
        let outcome = self.door.pairing().book.reject_node(&p.request_id, now_ms()).map_err(|e| e.to_error_shape())?;
        Ok(Change::new(json!({"requestId": outcome.request.request_id, "decision": "rejected"}), outcome.events))
    }

    fn node_event(&self, p: NodeEventParams) -> Reply {
        value(&NodeEventResult { ok: true, event: p.event, handled: true, reason: "updated".into() })
    }

    /// Node updates that need an approved command surface.
    fn node_gated(&mut self, conn_id: u64, extra: Value) -> Reply {
        let node_id = self.caller_node(conn_id)?;
        if let Some(error) = self.door.pairing().book.node_surface_status(&node_id, now_ms()).unavailable_error() {
            return Err(error);
        }
        let mut reply = json!({"nodeId": node_id});
        if let (Some(reply), Value::Object(extra)) = (reply.as_object_mut(), extra) {
            reply.extend(extra);
        }
        Ok(reply)
    }

    fn node_echo(&self, conn_id: u64, field: &str, p: Value) -> Reply {
        let node_id = self.caller_node(conn_id)?;
        Ok(json!({"nodeId": node_id, field: p.get(field).cloned().unwrap_or_else(|| json!([]))}))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceIdParams {
    device_id: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeIdParams {
    node_id: String,
}

/// A pairing change made in memory, waiting for its commit.
struct Change {
    reply: Value,
    events: Vec<PairingEvent>,
    /// Connections to close once committed: (device, role or all, reason).
    close: Option<(String, Option<Role>, &'static str)>,
}

impl Change {
    fn new(reply: Value, events: Vec<PairingEvent>) -> Change {
        Change { reply, events, close: None }
    }

    fn closing(mut self, device_id: String, role: Option<Role>, reason: &'static str) -> Change {
        self.close = Some((device_id, role, reason));
        self
    }
}

fn not_saved(reason: &str) -> ErrorShape {
    ErrorShape::new(error_codes::UNAVAILABLE, format!("the change could not be saved ({reason}); nothing was changed"))
        .with_retryable(true)
}

/// The caller's live grant allows `method`: the connection is still known (not
/// revoked, removed or closed) and its scopes satisfy the one authorization table.
fn authorize_live(conn: Option<&super::Conn>, method: &str) -> Result<(), ErrorShape> {
    let conn = conn.ok_or_else(|| {
        ErrorShape::new(
            error_codes::UNAVAILABLE,
            "this connection is no longer authorized (its device was revoked, removed or disconnected)",
        )
    })?;
    authorize(conn.scopes, conn.role == Role::Node, method).map_err(|denied| match denied {
        Denied::MissingScope(scope) => ErrorShape::missing_scope(scope.as_str()),
        Denied::NodeRoleRequired => ErrorShape::invalid_request(denied.to_string()),
    })
}

impl Handler<Call> for Hub {
    type Result = ResponseActFuture<Self, Reply>;

    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) -> Self::Result {
        let conn = self.conns.get(&msg.conn_id);
        if let Err(e) = authorize_live(conn, &msg.method) {
            return Box::pin(fut::ready(Err(e)));
        }
        let caller = conn.map_or(Caller::Owner, super::Conn::caller);
        match msg.method.as_str() {
            "node.invoke" => match params::<NodeInvokeParams>("node.invoke", msg.params) {
                Ok(p) => self.invoke(p, Origin { caller, caller_conn: Some(msg.conn_id), caller_gone: None }),
                Err(e) => Box::pin(fut::ready(Err(e))),
            },
            "sessions.list" => self.sessions_list(),
            "agent" => self.agent(msg.conn_id, msg.request_id, msg.params),
            "agent.wait" => self.agent_wait(msg.params),
            "sessions.abort" => self.sessions_abort(msg.params),
            "sessions.steer" => self.sessions_steer(msg.params),
            "chat.abort" => self.chat_abort(msg.params),
            "agents.list" => self.catalog("agents.list"),
            "chat.history" => self.chat_history(msg.params),
            "runs.list" => self.runs_list(),
            "runs.show" => self.runs_show(msg.params),
            "sessions.reset" => self.sessions_forget("sessions.reset", msg.params),
            "sessions.delete" => self.sessions_forget("sessions.delete", msg.params),
            "models.list" => self.catalog("models.list"),
            method if MUTATIONS.contains(&method) => match self.call_mutation(msg.conn_id, method, msg.params) {
                Ok(change) => self.finish_change(change, ctx),
                Err(e) => Box::pin(fut::ready(Err(e))),
            },
            method => Box::pin(fut::ready(self.call_local(msg.conn_id, method, msg.params))),
        }
    }
}
