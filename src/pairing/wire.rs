//! Conversions from the book's records to the wire rows of `device.pair.list`,
//! `device.pair.approve`, `node.pair.list` and `node.pair.approve` (trace §4, §5, §7).
//! Token values never appear; only token metadata does.

use super::book::PairingBook;
use super::records::{NodeSurface, PairedDevice, PendingDeviceRequest, PendingNodeRequest};
use super::PENDING_TTL_MS;
use crate::protocol::{
    DevicePairList, DevicePairedRow, DevicePendingRow, DeviceTokenRow, NodePairList, NodePairedRow, NodePendingRow,
    NodeSurfaceRow, PairingReason, PendingNodeSurfaceRow,
};
use crate::scope::{Scope, ScopeSet};

fn names(scopes: ScopeSet) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_string()).collect()
}

fn live(ts: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(ts) <= PENDING_TTL_MS
}

impl PairingBook {
    /// `device.pair.list`: live pending requests (oldest first) and paired devices.
    pub fn device_pair_list(&self, now_ms: u64) -> DevicePairList {
        let mut pending: Vec<&PendingDeviceRequest> = self.pending.values().filter(|p| live(p.ts, now_ms)).collect();
        pending.sort_by_key(|p| p.ts);
        DevicePairList {
            pending: pending.into_iter().map(|p| self.pending_row(p)).collect(),
            paired: self.devices.values().map(|d| self.paired_row(d, now_ms)).collect(),
        }
    }

    /// The paired row of one device (the `device` of an approve result).
    pub fn device_row(&self, device_id: &str, now_ms: u64) -> Option<DevicePairedRow> {
        self.devices.get(device_id).map(|d| self.paired_row(d, now_ms))
    }

    pub(super) fn pending_row(&self, request: &PendingDeviceRequest) -> DevicePendingRow {
        DevicePendingRow {
            request_id: request.request_id.clone(),
            device_id: request.device_id.clone(),
            public_key: request.public_key.clone(),
            display_name: request.display_name.clone(),
            platform: request.platform.clone(),
            device_family: request.device_family.clone(),
            client_id: Some(request.client_id.clone()),
            client_mode: Some(request.client_mode.clone()),
            role: request.role,
            roles: vec![request.role],
            scopes: names(request.scopes),
            remote_ip: request.remote_ip.clone(),
            silent: false,
            is_repair: request.reason != PairingReason::NotPaired,
            ts: request.ts,
        }
    }

    fn paired_row(&self, device: &PairedDevice, now_ms: u64) -> DevicePairedRow {
        let tokens = self
            .tokens
            .values()
            .filter(|t| t.device_id == device.device_id)
            .map(|t| DeviceTokenRow {
                role: t.role,
                scopes: names(t.scopes),
                created_at_ms: t.created_at_ms,
                rotated_at_ms: t.rotated_at_ms,
                revoked_at_ms: t.revoked_at_ms,
            })
            .collect();
        let pending_node_surface =
            self.node_pending_for(&device.device_id).filter(|p| live(p.ts, now_ms)).map(|p| PendingNodeSurfaceRow {
                request_id: p.request_id.clone(),
                revision: None,
                display_name: p.declaration.display_name.clone(),
                platform: p.declaration.platform.clone(),
                version: p.declaration.version.clone(),
                device_family: p.declaration.device_family.clone(),
                caps: p.declaration.caps.iter().cloned().collect(),
                commands: p.declaration.commands.iter().cloned().collect(),
                silent: false,
                ts: p.ts,
            });
        DevicePairedRow {
            device_id: device.device_id.clone(),
            public_key: device.public_key.clone(),
            display_name: device.display_name.clone(),
            platform: device.platform.clone(),
            device_family: device.device_family.clone(),
            client_id: Some(device.client_id.clone()),
            client_mode: Some(device.client_mode.clone()),
            role: device.roles.iter().next().copied(),
            roles: device.roles.iter().copied().collect(),
            scopes: names(device.scopes),
            approved_via: Some(device.approved_via.as_str().to_string()),
            node_surface: self.node_surfaces.get(&device.device_id).map(surface_row),
            pending_node_surface,
            created_at_ms: device.created_at_ms,
            approved_at_ms: device.approved_at_ms,
            remote_ip: device.remote_ip.clone(),
            last_seen_at_ms: device.last_seen_at_ms,
            last_seen_reason: None,
            connected: None,
            tokens,
        }
    }

    /// `node.pair.list`: live pending surfaces (oldest first) and approved surfaces.
    pub fn node_pair_list(&self, now_ms: u64) -> NodePairList {
        let mut pending: Vec<&PendingNodeRequest> = self.node_pending.values().filter(|p| live(p.ts, now_ms)).collect();
        pending.sort_by_key(|p| p.ts);
        NodePairList {
            pending: pending.into_iter().map(|p| self.node_pending_row(p)).collect(),
            paired: self.node_surfaces.values().map(node_row).collect(),
        }
    }

    pub(super) fn node_pending_row(&self, request: &PendingNodeRequest) -> NodePendingRow {
        let d = &request.declaration;
        let required = self.node_policy.required_approve_scopes(&d.commands);
        NodePendingRow {
            request_id: request.request_id.clone(),
            node_id: d.node_id.clone(),
            client_id: d.client_id.clone(),
            client_mode: d.client_mode.clone(),
            display_name: d.display_name.clone(),
            platform: d.platform.clone(),
            version: d.version.clone(),
            device_family: d.device_family.clone(),
            caps: d.caps.iter().cloned().collect(),
            commands: d.commands.iter().cloned().collect(),
            required_approve_scopes: required.into_iter().map(|s: Scope| s.as_str().to_string()).collect(),
            remote_ip: d.remote_ip.clone(),
            silent: None,
            ts: request.ts,
        }
    }
}

fn surface_row(surface: &NodeSurface) -> NodeSurfaceRow {
    NodeSurfaceRow {
        display_name: surface.display_name.clone(),
        version: surface.version.clone(),
        caps: surface.caps.iter().cloned().collect(),
        commands: surface.commands.iter().cloned().collect(),
        created_at_ms: surface.created_at_ms,
        approved_at_ms: surface.approved_at_ms,
        session_host: None,
    }
}

impl NodeSurface {
    /// The `node` of a `node.pair.approve` result; a paired row of `node.pair.list`.
    pub fn to_row(&self) -> NodePairedRow {
        node_row(self)
    }
}

fn node_row(surface: &NodeSurface) -> NodePairedRow {
    NodePairedRow {
        node_id: surface.node_id.clone(),
        client_id: surface.client_id.clone(),
        client_mode: surface.client_mode.clone(),
        display_name: surface.display_name.clone(),
        platform: surface.platform.clone(),
        version: surface.version.clone(),
        device_family: surface.device_family.clone(),
        caps: surface.caps.iter().cloned().collect(),
        commands: surface.commands.iter().cloned().collect(),
        created_at_ms: surface.created_at_ms,
        approved_at_ms: surface.approved_at_ms,
        last_seen_at_ms: None,
        last_seen_reason: None,
    }
}
