//! Node command surfaces: the second pairing layer (trace §0.5, §5). A paired node's
//! declared commands are unusable until an operator approves them with
//! `node.pair.approve`; until then the gated node RPCs answer `UNAVAILABLE` and the
//! node retries. The approval needs `operator.pairing` plus `operator.admin` when any
//! command is exec-class (`system.*`: `system.run`, `system.which`, ...), else plus
//! `operator.write` (trace §11.2). Local auto-approval never applies here (trace §9).
//!
//! The [`NodeCommandPolicy`] decides which declared commands are even offered for
//! approval; by default it drops the families OpenClaw 2026.9.6 dropped in the trace
//! (`dir.*`, `file.*`, `workspace.*`: 21 declared, 13 kept, §5.2).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::book::PairingBook;
use super::events::PairingEvent;
use super::records::{NodeDeclaration, NodeSurface, PendingNodeRequest};
use super::tokens::new_request_id;
use super::PairingError;
use crate::protocol::{error_codes, ConnectParams, Decision, ErrorShape, NodePairResolved, Role};
use crate::scope::{Scope, ScopeSet};

/// Which declared commands can be approved, and which need `operator.admin`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCommandPolicy {
    /// Commands starting with one of these are never offered or approved.
    pub denied_prefixes: Vec<String>,
    /// Commands starting with one of these need `operator.admin` to approve.
    pub admin_prefixes: Vec<String>,
}

impl Default for NodeCommandPolicy {
    fn default() -> Self {
        Self::observed_openclaw()
    }
}

impl NodeCommandPolicy {
    /// What OpenClaw 2026.9.6 did in the trace.
    pub fn observed_openclaw() -> Self {
        NodeCommandPolicy {
            denied_prefixes: vec!["dir.".into(), "file.".into(), "workspace.".into()],
            admin_prefixes: vec!["system.".into()],
        }
    }

    /// Offers every declared command; `system.*` still needs admin.
    pub fn allow_all() -> Self {
        NodeCommandPolicy { denied_prefixes: Vec::new(), admin_prefixes: vec!["system.".into()] }
    }

    pub fn admits(&self, command: &str) -> bool {
        !self.denied_prefixes.iter().any(|p| command.starts_with(p.as_str()))
    }

    pub fn needs_admin(&self, command: &str) -> bool {
        self.admin_prefixes.iter().any(|p| command.starts_with(p.as_str()))
    }

    /// `requiredApproveScopes`, in OpenClaw's order: pairing, then admin or write.
    pub fn required_approve_scopes(&self, commands: &BTreeSet<String>) -> Vec<Scope> {
        let mut scopes = vec![Scope::OperatorPairing];
        if commands.iter().any(|c| self.needs_admin(c)) {
            scopes.push(Scope::OperatorAdmin);
        } else if !commands.is_empty() {
            scopes.push(Scope::OperatorWrite);
        }
        scopes
    }

    /// The declaration of a node connect, with denied commands removed.
    pub fn declaration(&self, node_id: &str, params: &ConnectParams, remote_ip: Option<&str>) -> NodeDeclaration {
        let list = |items: &Option<Vec<String>>| -> BTreeSet<String> { items.iter().flatten().cloned().collect() };
        NodeDeclaration {
            node_id: node_id.to_string(),
            display_name: params.client.display_name.clone(),
            platform: Some(params.client.platform.clone()),
            version: Some(params.client.version.clone()),
            device_family: params.client.device_family.clone(),
            client_id: Some(params.client.id.clone()),
            client_mode: Some(params.client.mode.clone()),
            caps: list(&params.caps),
            commands: list(&params.commands).into_iter().filter(|c| self.admits(c)).collect(),
            remote_ip: remote_ip.map(str::to_string),
        }
    }
}

/// Where a node's command surface stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeSurfaceStatus {
    /// Approved commands are usable; a wider surface may be waiting.
    Approved { pending_request_id: Option<String> },
    /// Nothing approved yet; gated RPCs answer `UNAVAILABLE`.
    Pending { request_id: String },
    /// The node never declared a surface (or it was removed).
    Undeclared,
}

impl NodeSurfaceStatus {
    /// The `UNAVAILABLE` error for gated node RPCs (`node.runnerInventory.update`) while
    /// nothing is approved. The message reaches the node's log verbatim.
    pub fn unavailable_error(&self) -> Option<ErrorShape> {
        match self {
            NodeSurfaceStatus::Pending { request_id } => Some(
                ErrorShape::new(
                    error_codes::UNAVAILABLE,
                    format!(
                        "node command surface is waiting for operator approval; approve it with \
                         `hivegate nodes approve {request_id}` and this node retries on its own"
                    ),
                )
                .with_details(serde_json::json!({ "code": "NODE_SURFACE_PENDING", "requestId": request_id })),
            ),
            NodeSurfaceStatus::Approved { .. } | NodeSurfaceStatus::Undeclared => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSurfaceOutcome {
    pub status: NodeSurfaceStatus,
    pub superseded: Option<String>,
    pub events: Vec<PairingEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeApproveOutcome {
    pub request_id: String,
    pub node: NodeSurface,
    pub events: Vec<PairingEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRejectOutcome {
    pub request: PendingNodeRequest,
    pub events: Vec<PairingEvent>,
}

impl PairingBook {
    pub fn node_policy(&self) -> &NodeCommandPolicy {
        &self.node_policy
    }

    pub fn node_surface(&self, node_id: &str) -> Option<&NodeSurface> {
        self.node_surfaces.get(node_id)
    }

    pub fn node_pending_for(&self, node_id: &str) -> Option<&PendingNodeRequest> {
        self.node_pending.values().find(|p| p.declaration.node_id == node_id)
    }

    /// Whether `command` is in the node's approved surface.
    pub fn is_command_approved(&self, node_id: &str, command: &str) -> bool {
        self.node_surfaces.get(node_id).is_some_and(|s| s.commands.contains(command))
    }

    /// Records what a node declared at connect. Covered by the approved surface:
    /// approved. Otherwise an identical pending request is refreshed, or a new one
    /// supersedes it. The node must be paired for the node role.
    pub fn declare_node_surface(
        &mut self,
        mut declaration: NodeDeclaration,
        now_ms: u64,
    ) -> Result<NodeSurfaceOutcome, PairingError> {
        self.expire(now_ms);
        let node_id = declaration.node_id.clone();
        let device =
            self.devices.get(&node_id).ok_or_else(|| PairingError::UnknownDevice { device_id: node_id.clone() })?;
        if !device.roles.contains(&Role::Node) {
            return Err(PairingError::RoleNotApproved { device_id: node_id, role: Role::Node });
        }
        declaration.commands.retain(|c| self.node_policy.admits(c));
        let trivial = declaration.commands.is_empty() && declaration.caps.is_empty();
        let covered = match self.node_surfaces.get(&node_id) {
            Some(s) => declaration.commands.is_subset(&s.commands) && declaration.caps.is_subset(&s.caps),
            None => trivial,
        };
        if covered {
            self.node_pending.retain(|_, p| p.declaration.node_id != node_id);
            let surface =
                self.node_surfaces.entry(node_id.clone()).or_insert_with(|| surface_from(&declaration, now_ms));
            surface.display_name.clone_from(&declaration.display_name);
            surface.version.clone_from(&declaration.version);
            let status = NodeSurfaceStatus::Approved { pending_request_id: None };
            return Ok(NodeSurfaceOutcome { status, superseded: None, events: Vec::new() });
        }
        let (request_id, superseded, events) = self.open_node_request(declaration, now_ms)?;
        let status = match self.node_surfaces.contains_key(&node_id) {
            true => NodeSurfaceStatus::Approved { pending_request_id: Some(request_id) },
            false => NodeSurfaceStatus::Pending { request_id },
        };
        Ok(NodeSurfaceOutcome { status, superseded, events })
    }

    fn open_node_request(
        &mut self,
        declaration: NodeDeclaration,
        now_ms: u64,
    ) -> Result<(String, Option<String>, Vec<PairingEvent>), PairingError> {
        let existing = self.node_pending_for(&declaration.node_id).map(|p| p.request_id.clone());
        if let Some(pending) = self.node_pending.get_mut(existing.as_deref().unwrap_or("")) {
            let same =
                pending.declaration.commands == declaration.commands && pending.declaration.caps == declaration.caps;
            if same {
                pending.ts = now_ms;
                pending.declaration = declaration;
                return Ok((pending.request_id.clone(), None, Vec::new()));
            }
        }
        let request =
            PendingNodeRequest { request_id: new_request_id()?, declaration, created_at_ms: now_ms, ts: now_ms };
        let superseded = existing.and_then(|id| self.node_pending.remove(&id)).map(|old| old.request_id);
        let events = vec![PairingEvent::NodePairRequested(self.node_pending_row(&request))];
        let request_id = request.request_id.clone();
        self.node_pending.insert(request_id.clone(), request);
        Ok((request_id, superseded, events))
    }

    /// The status for a gated node RPC. A pending request counts this as a retry
    /// (refreshing its expiry), as the node retries while it waits.
    pub fn node_surface_status(&mut self, node_id: &str, now_ms: u64) -> NodeSurfaceStatus {
        self.expire(now_ms);
        let pending = self.node_pending.values_mut().find(|p| p.declaration.node_id == node_id).map(|p| {
            p.ts = now_ms;
            p.request_id.clone()
        });
        match (self.node_surfaces.contains_key(node_id), pending) {
            (true, pending_request_id) => NodeSurfaceStatus::Approved { pending_request_id },
            (false, Some(request_id)) => NodeSurfaceStatus::Pending { request_id },
            (false, None) => NodeSurfaceStatus::Undeclared,
        }
    }

    /// Approves a pending surface; the approver must satisfy `requiredApproveScopes`.
    pub fn approve_node(
        &mut self,
        request_id: &str,
        approver: ScopeSet,
        now_ms: u64,
    ) -> Result<NodeApproveOutcome, PairingError> {
        self.expire(now_ms);
        let request = self.node_pending.get(request_id).ok_or(PairingError::UnknownRequest)?;
        let required = self.node_policy.required_approve_scopes(&request.declaration.commands);
        if let Some(missing) = required.into_iter().find(|s| !approver.satisfies(*s)) {
            return Err(PairingError::NodeApprovalDenied { missing });
        }
        let request = self.node_pending.remove(request_id).ok_or(PairingError::UnknownRequest)?;
        let node_id = request.declaration.node_id.clone();
        let mut surface = surface_from(&request.declaration, now_ms);
        if let Some(old) = self.node_surfaces.get(&node_id) {
            surface.created_at_ms = old.created_at_ms;
        }
        self.node_surfaces.insert(node_id.clone(), surface.clone());
        let events = vec![node_resolved(&request, Decision::Approved, now_ms)];
        Ok(NodeApproveOutcome { request_id: request.request_id, node: surface, events })
    }

    /// Rejects a pending surface; the approved one, if any, stays.
    pub fn reject_node(&mut self, request_id: &str, now_ms: u64) -> Result<NodeRejectOutcome, PairingError> {
        self.expire(now_ms);
        let request = self.node_pending.remove(request_id).ok_or(PairingError::UnknownRequest)?;
        let events = vec![node_resolved(&request, Decision::Rejected, now_ms)];
        Ok(NodeRejectOutcome { request, events })
    }
}

fn surface_from(declaration: &NodeDeclaration, now_ms: u64) -> NodeSurface {
    NodeSurface {
        node_id: declaration.node_id.clone(),
        display_name: declaration.display_name.clone(),
        platform: declaration.platform.clone(),
        version: declaration.version.clone(),
        device_family: declaration.device_family.clone(),
        client_id: declaration.client_id.clone(),
        client_mode: declaration.client_mode.clone(),
        caps: declaration.caps.clone(),
        commands: declaration.commands.clone(),
        created_at_ms: now_ms,
        approved_at_ms: now_ms,
    }
}

fn node_resolved(request: &PendingNodeRequest, decision: Decision, now_ms: u64) -> PairingEvent {
    PairingEvent::NodePairResolved(NodePairResolved {
        request_id: request.request_id.clone(),
        node_id: request.declaration.node_id.clone(),
        decision,
        ts: now_ms,
    })
}
