//! RPC methods of authenticated connections: one function per method, dispatched from
//! [`Call`]. Scopes were already checked against the one authorization table by the
//! connection actor; what is checked here is what only the hub knows (an approver can
//! grant only scopes it holds, a result must come from the invoked node).

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{now_ms, Call, Hub};
use crate::gateway::{ListSessions, StartMain};
use crate::protocol::{
    error_codes, to_value, DeviceTokenParams, DeviceTokenRevokeResult, DeviceTokenRotateResult, ErrorShape,
    NodeEventParams, NodeEventResult, NodeInvokeParams, NodeInvokeResultParams, NodeListEntry, NodeListResult,
    RequestIdParams, Role,
};
use crate::scope::ScopeSet;

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

    /// Methods answered from the hub's own state.
    fn call_local(&mut self, conn_id: u64, method: &str, p: Value) -> Reply {
        match method {
            "health" => Ok(self.health()),
            "status" => Ok(self.status()),
            "device.pair.list" => self.device_pair_list(),
            "device.pair.approve" => self.device_pair_approve(conn_id, params(method, p)?),
            "device.pair.reject" => self.device_pair_reject(params(method, p)?),
            "device.pair.remove" => self.device_pair_remove(params::<DeviceIdParams>(method, p)?.device_id),
            "device.token.rotate" => self.device_token_rotate(params(method, p)?),
            "device.token.revoke" => self.device_token_revoke(params(method, p)?),
            "node.list" => value(&NodeListResult { ts: now_ms(), nodes: self.node_entries() }),
            "node.describe" => self.node_describe(params::<NodeIdParams>(method, p)?.node_id),
            "node.pair.list" => value(&self.book.node_pair_list(now_ms())),
            "node.pair.approve" => self.node_pair_approve(conn_id, params(method, p)?),
            "node.pair.reject" => self.node_pair_reject(params(method, p)?),
            "node.event" => self.node_event(params(method, p)?),
            "node.runnerInventory.update" => self.node_gated(conn_id, json!({})),
            "node.skills.update" => self.node_echo(conn_id, "skills", p),
            "node.pluginTools.update" => self.node_echo(conn_id, "tools", p),
            "node.invoke.result" => self.invoke_result(conn_id, params::<NodeInvokeResultParams>(method, p)?),
            other => Err(ErrorShape::invalid_request(format!("unknown method: {other}"))),
        }
    }

    fn status(&self) -> Value {
        let list = self.book.device_pair_list(now_ms());
        json!({
            "runtimeVersion": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptimeMs": self.started.elapsed().as_millis() as u64,
            "sessions": {"live": self.stats.live_sessions(), "spawns": self.stats.spawns()},
            "devices": {"paired": list.paired.len(), "pending": list.pending.len()},
            "nodes": {"connected": self.nodes.len()},
            "connections": self.conns.len(),
        })
    }

    fn device_pair_list(&self) -> Reply {
        let mut list = self.book.device_pair_list(now_ms());
        for row in &mut list.paired {
            row.connected = Some(self.conns.values().any(|c| c.device_id.as_deref() == Some(row.device_id.as_str())));
        }
        value(&list)
    }

    fn device_pair_approve(&mut self, conn_id: u64, p: RequestIdParams) -> Reply {
        let now = now_ms();
        let outcome =
            self.book.approve(&p.request_id, self.caller_scopes(conn_id), now).map_err(|e| e.to_error_shape())?;
        self.persist();
        self.broadcast(&outcome.events);
        let device = self.book.device_row(&outcome.device.device_id, now);
        Ok(json!({"requestId": outcome.request_id, "device": device}))
    }

    fn device_pair_reject(&mut self, p: RequestIdParams) -> Reply {
        let outcome = self.book.reject(&p.request_id, now_ms()).map_err(|e| e.to_error_shape())?;
        self.persist();
        self.broadcast(&outcome.events);
        Ok(
            json!({"requestId": outcome.request.request_id, "deviceId": outcome.request.device_id, "decision": "rejected"}),
        )
    }

    fn device_pair_remove(&mut self, device_id: String) -> Reply {
        let outcome = self.book.remove_device(&device_id).map_err(|e| e.to_error_shape())?;
        self.persist();
        self.close_device(&device_id, None, "device removed");
        Ok(json!({"deviceId": outcome.device.device_id, "removed": true}))
    }

    fn device_token_rotate(&mut self, p: DeviceTokenParams) -> Reply {
        let issued = self.book.rotate_token(&p.device_id, p.role, now_ms()).map_err(|e| e.to_error_shape())?;
        self.persist();
        // The old token is dead: its connections go, and the device picks up the new
        // token in its next hello-ok. The operator never sees the value.
        self.close_device(&p.device_id, Some(p.role), "device token rotated");
        value(&DeviceTokenRotateResult {
            device_id: issued.device_id,
            role: issued.role,
            scopes: issued.scopes.names().into_iter().map(String::from).collect(),
            rotated_at_ms: issued.issued_at_ms,
            token: None,
        })
    }

    fn device_token_revoke(&mut self, p: DeviceTokenParams) -> Reply {
        let outcome = self.book.revoke_token(&p.device_id, p.role, now_ms()).map_err(|e| e.to_error_shape())?;
        self.persist();
        self.close_device(&p.device_id, Some(p.role), "device token revoked");
        value(&DeviceTokenRevokeResult {
            device_id: outcome.device_id,
            role: outcome.role,
            revoked_at_ms: outcome.revoked_at_ms,
        })
    }

    /// Every node the hub knows: approved surfaces, pending ones, and connected nodes.
    fn node_entries(&self) -> Vec<NodeListEntry> {
        let mut ids: Vec<String> = self.nodes.keys().cloned().collect();
        for row in self.book.node_pair_list(now_ms()).paired {
            ids.push(row.node_id);
        }
        ids.sort();
        ids.dedup();
        ids.iter().map(|id| self.node_entry(id)).collect()
    }

    fn node_entry(&self, node_id: &str) -> NodeListEntry {
        let surface = self.book.node_surface(node_id);
        let pending = self.book.node_pending_for(node_id);
        let conn = self.nodes.get(node_id).and_then(|c| self.conns.get(c));
        let device = self.book.device(node_id);
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
        if self.book.device(&node_id).is_none() && !self.nodes.contains_key(&node_id) {
            return Err(ErrorShape::invalid_request(format!("unknown node {node_id}; see `hivegate nodes list`")));
        }
        value(&self.node_entry(&node_id))
    }

    fn node_pair_approve(&mut self, conn_id: u64, p: RequestIdParams) -> Reply {
        let outcome = self
            .book
            .approve_node(&p.request_id, self.caller_scopes(conn_id), now_ms())
            .map_err(|e| e.to_error_shape())?;
        self.persist();
        self.broadcast(&outcome.events);
        Ok(json!({"requestId": outcome.request_id, "node": outcome.node.to_row()}))
    }

    fn node_pair_reject(&mut self, p: RequestIdParams) -> Reply {
        let outcome = self.book.reject_node(&p.request_id, now_ms()).map_err(|e| e.to_error_shape())?;
        self.persist();
        self.broadcast(&outcome.events);
        Ok(json!({"requestId": outcome.request.request_id, "decision": "rejected"}))
    }

    fn node_event(&self, p: NodeEventParams) -> Reply {
        value(&NodeEventResult { ok: true, event: p.event, handled: true, reason: "updated".into() })
    }

    /// Node updates that need an approved command surface.
    fn node_gated(&mut self, conn_id: u64, extra: Value) -> Reply {
        let node_id = self.caller_node(conn_id)?;
        if let Some(error) = self.book.node_surface_status(&node_id, now_ms()).unavailable_error() {
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentParams {
    #[serde(default)]
    agent_id: Option<String>,
    message: String,
}

impl Handler<Call> for Hub {
    type Result = ResponseActFuture<Self, Reply>;

    fn handle(&mut self, msg: Call, _: &mut Self::Context) -> Self::Result {
        match msg.method.as_str() {
            "node.invoke" => match params::<NodeInvokeParams>("node.invoke", msg.params) {
                Ok(p) => self.invoke(p),
                Err(e) => Box::pin(fut::ready(Err(e))),
            },
            "sessions.list" => {
                let list = self.gateway.send(ListSessions { caller: None });
                Box::pin(fut::wrap_future(async move {
                    let sessions =
                        list.await.map_err(unavailable)?.map_err(|e| ErrorShape::invalid_request(e.to_string()))?;
                    Ok(json!({"sessions": sessions}))
                }))
            }
            "agent" => match params::<AgentParams>("agent", msg.params) {
                Ok(p) => {
                    let start = StartMain {
                        agent_id: p.agent_id.unwrap_or_else(|| "brain".into()),
                        task: p.message,
                        run_timeout: None,
                        budget_tokens: None,
                    };
                    let started = self.gateway.send(start);
                    Box::pin(fut::wrap_future(async move {
                        let run = started
                            .await
                            .map_err(unavailable)?
                            .map_err(|e| ErrorShape::invalid_request(e.to_string()))?;
                        Ok(json!({"status": "accepted", "runId": run.run_id, "sessionKey": run.session_key}))
                    }))
                }
                Err(e) => Box::pin(fut::ready(Err(e))),
            },
            method => {
                let reply = self.call_local(msg.conn_id, method, msg.params);
                Box::pin(fut::ready(reply))
            }
        }
    }
}

fn unavailable(_: MailboxError) -> ErrorShape {
    ErrorShape::new(error_codes::UNAVAILABLE, "the gateway is not running")
}
