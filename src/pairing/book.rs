//! [`PairingBook`]: paired devices, pending requests and tokens, and the operator side
//! of pairing (approve, reject, remove, expiry). The connect decision lives in
//! `decide.rs`, tokens in `tokens.rs`, node surfaces in `nodes.rs`, wire rows in
//! `wire.rs`; all of them are `impl PairingBook` blocks over the fields here.

use std::collections::{BTreeMap, BTreeSet};

use super::events::PairingEvent;
use super::nodes::NodeCommandPolicy;
use super::records::{ApprovedVia, DeviceToken, NodeSurface, PairedDevice, PendingDeviceRequest, PendingNodeRequest};
use super::tokens::{mint_token_value, IssuedToken};
use super::{PairingError, PENDING_TTL_MS};
use crate::protocol::{Decision, DevicePairResolved, Role};
use crate::scope::{Scope, ScopeSet};

/// The pairing state. Plain data plus the node command policy (configuration).
#[derive(Clone, Debug, Default)]
pub struct PairingBook {
    pub(super) devices: BTreeMap<String, PairedDevice>,
    pub(super) tokens: BTreeMap<(String, Role), DeviceToken>,
    /// By request id.
    pub(super) pending: BTreeMap<String, PendingDeviceRequest>,
    /// By node id (= device id).
    pub(super) node_surfaces: BTreeMap<String, NodeSurface>,
    /// By request id.
    pub(super) node_pending: BTreeMap<String, PendingNodeRequest>,
    pub(super) node_policy: NodeCommandPolicy,
}

#[derive(Clone, Debug)]
pub struct ApproveOutcome {
    pub request_id: String,
    pub device: PairedDevice,
    /// A token minted for a role that had no live one. Its plaintext is returned only
    /// here; never send it to the approving operator (the device gets a fresh one in
    /// its next hello-ok, since this one is undelivered).
    pub issued: Option<IssuedToken>,
    pub events: Vec<PairingEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectOutcome {
    pub request: PendingDeviceRequest,
    pub events: Vec<PairingEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveOutcome {
    pub device: PairedDevice,
    /// Roles whose tokens died with the device: close connections that used them.
    pub revoked_roles: Vec<Role>,
}

impl PairingBook {
    pub fn new(node_policy: NodeCommandPolicy) -> Self {
        PairingBook { node_policy, ..PairingBook::default() }
    }

    pub fn device(&self, device_id: &str) -> Option<&PairedDevice> {
        self.devices.get(device_id)
    }

    pub fn token(&self, device_id: &str, role: Role) -> Option<&DeviceToken> {
        self.tokens.get(&(device_id.to_string(), role))
    }

    pub fn pending_request(&self, request_id: &str) -> Option<&PendingDeviceRequest> {
        self.pending.get(request_id)
    }

    /// The pending request of a device, if any (there is at most one).
    pub fn pending_for_device(&self, device_id: &str) -> Option<&PendingDeviceRequest> {
        self.pending.values().find(|p| p.device_id == device_id)
    }

    /// Drops device and node requests whose last retry is older than the TTL.
    /// Returns the dropped request ids. Deciding a connect and approving, rejecting or
    /// declaring requests call this first; token rotation and revocation and device
    /// removal touch no requests and do not.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let stale = |ts: u64| now_ms.saturating_sub(ts) > PENDING_TTL_MS;
        let mut dropped: Vec<String> =
            self.pending.values().filter(|p| stale(p.ts)).map(|p| p.request_id.clone()).collect();
        dropped.extend(self.node_pending.values().filter(|p| stale(p.ts)).map(|p| p.request_id.clone()));
        for id in &dropped {
            self.pending.remove(id);
            self.node_pending.remove(id);
        }
        dropped
    }

    /// Approves a pending device request. The approver must hold `operator.pairing`
    /// and satisfy every requested scope; the device's approved set becomes the union
    /// of what it had and what was requested.
    pub fn approve(
        &mut self,
        request_id: &str,
        approver: ScopeSet,
        now_ms: u64,
    ) -> Result<ApproveOutcome, PairingError> {
        self.expire(now_ms);
        let request = self.pending.get(request_id).ok_or(PairingError::UnknownRequest)?;
        check_approver(approver, request.scopes)?;
        let has_live_token =
            self.tokens.get(&(request.device_id.clone(), request.role)).is_some_and(DeviceToken::is_live);
        let value = if has_live_token { None } else { Some(mint_token_value()?) };
        let request = self.pending.remove(request_id).ok_or(PairingError::UnknownRequest)?;
        let device = self.apply_approval(&request, ApprovedVia::Owner, now_ms);
        let issued = match value {
            Some(value) => Some(self.store_token(&request.device_id, request.role, value, now_ms)?),
            None => None,
        };
        let events = vec![resolved(&request, Decision::Approved, now_ms)];
        Ok(ApproveOutcome { request_id: request.request_id, device, issued, events })
    }

    pub(super) fn apply_approval(
        &mut self,
        request: &PendingDeviceRequest,
        via: ApprovedVia,
        now_ms: u64,
    ) -> PairedDevice {
        let device = self.devices.entry(request.device_id.clone()).or_insert_with(|| PairedDevice {
            device_id: request.device_id.clone(),
            public_key: request.public_key.clone(),
            display_name: None,
            platform: None,
            device_family: None,
            client_id: request.client_id.clone(),
            client_mode: request.client_mode.clone(),
            roles: BTreeSet::new(),
            scopes: ScopeSet::EMPTY,
            approved_via: via,
            created_at_ms: now_ms,
            approved_at_ms: now_ms,
            remote_ip: None,
            last_seen_at_ms: None,
        });
        device.public_key.clone_from(&request.public_key);
        device.display_name.clone_from(&request.display_name);
        device.platform.clone_from(&request.platform);
        device.device_family.clone_from(&request.device_family);
        device.client_id.clone_from(&request.client_id);
        device.client_mode.clone_from(&request.client_mode);
        if request.remote_ip.is_some() {
            device.remote_ip.clone_from(&request.remote_ip);
        }
        device.roles.insert(request.role);
        device.scopes = device.scopes.union(request.scopes);
        device.approved_via = via;
        device.approved_at_ms = now_ms;
        let snapshot = device.clone();
        if let Some(token) = self.tokens.get_mut(&(request.device_id.clone(), Role::Operator)) {
            token.scopes = snapshot.scopes;
        }
        snapshot
    }

    /// Rejects a pending device request.
    pub fn reject(&mut self, request_id: &str, now_ms: u64) -> Result<RejectOutcome, PairingError> {
        self.expire(now_ms);
        let request = self.pending.remove(request_id).ok_or(PairingError::UnknownRequest)?;
        let events = vec![resolved(&request, Decision::Rejected, now_ms)];
        Ok(RejectOutcome { request, events })
    }

    /// Unpairs a device: its record, tokens, pending requests and node surface.
    /// Removes a paired device with its tokens, pending requests and node surface. The
    /// caller must hold every scope the device was granted, and what approving its
    /// command surface needed.
    pub fn remove_device(&mut self, device_id: &str, caller: ScopeSet) -> Result<RemoveOutcome, PairingError> {
        let device = self
            .devices
            .get(device_id)
            .ok_or_else(|| PairingError::UnknownDevice { device_id: device_id.to_string() })?;
        check_approver(caller, device.scopes)?;
        if let Some(surface) = self.node_surfaces.get(device_id) {
            let required = self.node_policy.required_approve_scopes(&surface.commands);
            if let Some(missing) = required.into_iter().find(|s| !caller.satisfies(*s)) {
                return Err(PairingError::ApprovalDenied { missing });
            }
        }
        let device = self
            .devices
            .remove(device_id)
            .ok_or_else(|| PairingError::UnknownDevice { device_id: device_id.to_string() })?;
        let revoked_roles = device
            .roles
            .iter()
            .copied()
            .filter(|role| self.tokens.remove(&(device_id.to_string(), *role)).is_some_and(|t| t.is_live()));
        let revoked_roles = revoked_roles.collect();
        self.pending.retain(|_, p| p.device_id != device_id);
        self.node_surfaces.remove(device_id);
        self.node_pending.retain(|_, p| p.declaration.node_id != device_id);
        Ok(RemoveOutcome { device, revoked_roles })
    }
}

pub(super) fn resolved(request: &PendingDeviceRequest, decision: Decision, now_ms: u64) -> PairingEvent {
    PairingEvent::DevicePairResolved(DevicePairResolved {
        request_id: request.request_id.clone(),
        device_id: request.device_id.clone(),
        decision,
        ts: now_ms,
    })
}

/// The approver must hold `operator.pairing` and satisfy each scope it grants.
pub(super) fn check_approver(approver: ScopeSet, granted: ScopeSet) -> Result<(), PairingError> {
    std::iter::once(Scope::OperatorPairing)
        .chain(granted.iter())
        .find(|scope| !approver.satisfies(*scope))
        .map_or(Ok(()), |missing| Err(PairingError::ApprovalDenied { missing }))
}
