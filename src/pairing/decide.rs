//! The connect decision for a device whose identity verified: allowed (with a
//! [`Grant`]), or pairing required (with the pending request), or silently approved
//! when policy and locality allow.
//!
//! Token delivery: the book keeps only hashes, so it cannot resend a token. A token is
//! therefore `delivered` once it went out in a hello-ok or the device presented it. A
//! connect authenticated by the shared secret gets a fresh token in its hello-ok when
//! the current one was never delivered (for example the one minted at approval), and
//! none otherwise; a connect authenticated by its device token gets that token echoed.

use super::book::{resolved, PairingBook};
use super::events::PairingEvent;
use super::identity::{normalize_metadata, VerifiedDevice};
use super::records::{ApprovedVia, PendingDeviceRequest};
use super::tokens::{mint_token_value, new_request_id, IssuedToken, TokenGrant};
use super::PairingError;
use crate::protocol::{
    AuthMethod, Close, Decision, ErrorShape, HelloAuth, PairingReason, PairingRequiredDetails, Role, Secret,
};
use crate::scope::{Scope, ScopeSet};

/// How the connect authenticated, as the shell established it.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// The shell verified the shared gateway token or password.
    SharedSecret,
    /// `auth.deviceToken`, to be checked by the book.
    DeviceToken(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::SharedSecret => f.write_str("SharedSecret"),
            Credential::DeviceToken(_) => f.write_str("DeviceToken(<redacted>)"),
        }
    }
}

/// Where the socket comes from, as the shell judged it: direct loopback means a
/// loopback peer with no Forwarded / X-Forwarded-* / X-Real-IP headers and no browser
/// Origin (a disallowed one is refused before the upgrade; an allowed one counts as
/// remote).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    DirectLoopback,
    Remote,
}

/// Silent approval policy. Off unless configured; never applies to remote sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SilentApproval {
    #[default]
    Off,
    /// Approve pairing requests from direct loopback connects without an operator.
    LocalOnly,
}

#[derive(Clone, Copy, Debug)]
pub struct ConnectContext<'a> {
    pub credential: Credential<'a>,
    pub locality: Locality,
    pub silent: SilentApproval,
    pub remote_ip: Option<&'a str>,
}

/// What an allowed connect holds.
#[derive(Clone, Debug)]
pub struct Grant {
    pub device_id: String,
    pub role: Role,
    /// Requested scopes that the approved set satisfies; never more.
    pub scopes: ScopeSet,
    /// The same scopes as names, in request order, for `hello-ok.auth.scopes`.
    pub scope_names: Vec<String>,
    pub auth_method: AuthMethod,
    /// The token for `hello-ok.auth.deviceToken`: new, or the one the device presented.
    pub device_token: Option<IssuedToken>,
}

impl Grant {
    /// `hello-ok.auth`.
    pub fn hello_auth(&self) -> HelloAuth {
        HelloAuth {
            method: Some(self.auth_method),
            role: self.role,
            scopes: self.scope_names.clone(),
            device_token: self.device_token.as_ref().map(|t| t.token.clone()),
            issued_at_ms: self.device_token.as_ref().map(|t| t.issued_at_ms),
        }
    }
}

/// The device must wait for an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingRequired {
    pub reason: PairingReason,
    pub request: PendingDeviceRequest,
    /// False when an identical request was refreshed.
    pub created: bool,
    /// The request this one replaced, if any.
    pub superseded: Option<String>,
}

impl PairingRequired {
    pub fn details(&self) -> PairingRequiredDetails {
        PairingRequiredDetails::new(self.reason, &self.request.request_id, &self.request.device_id, self.request.role)
    }

    /// `NOT_PAIRED` with `details.code = PAIRING_REQUIRED` and `wait_then_retry`.
    pub fn to_error_shape(&self) -> ErrorShape {
        self.details().to_error_shape()
    }

    /// `1008 "pairing required: … (requestId: …)"`.
    pub fn close(&self) -> Close {
        Close::pairing_required(self.reason.message(), &self.request.request_id)
    }
}

#[derive(Clone, Debug)]
pub enum ConnectDecision {
    Allowed(Grant),
    PairingRequired(PairingRequired),
}

#[derive(Clone, Debug)]
pub struct ConnectOutcome {
    pub decision: ConnectDecision,
    pub events: Vec<PairingEvent>,
}

impl PairingBook {
    /// The decision for a connect whose device identity verified. A device-token
    /// credential that does not verify is an error (`AUTH_DEVICE_TOKEN_MISMATCH`).
    pub fn decide_connect(
        &mut self,
        device: &VerifiedDevice,
        ctx: &ConnectContext<'_>,
        now_ms: u64,
    ) -> Result<ConnectOutcome, PairingError> {
        self.expire(now_ms);
        let presented = match ctx.credential {
            Credential::DeviceToken(token) => {
                Some((token, self.verify_device_token(&device.device_id, device.role, token)?))
            }
            Credential::SharedSecret => None,
        };
        let Some(reason) = self.upgrade_reason(device) else {
            let grant = self.allow(device, ctx, presented, now_ms)?;
            return Ok(ConnectOutcome { decision: ConnectDecision::Allowed(grant), events: Vec::new() });
        };
        if ctx.silent == SilentApproval::LocalOnly && ctx.locality == Locality::DirectLoopback {
            return self.approve_silently(device, reason, ctx, presented, now_ms);
        }
        let (required, events) = self.require_pairing(device, reason, ctx, now_ms)?;
        Ok(ConnectOutcome { decision: ConnectDecision::PairingRequired(required), events })
    }

    /// Why this device cannot connect as asked, checked in protocol.md's order.
    fn upgrade_reason(&self, device: &VerifiedDevice) -> Option<PairingReason> {
        let Some(paired) = self.devices.get(&device.device_id) else {
            return Some(PairingReason::NotPaired);
        };
        let same = |a: &Option<String>, b: &Option<String>| {
            normalize_metadata(a.as_deref().unwrap_or("")) == normalize_metadata(b.as_deref().unwrap_or(""))
        };
        if paired.public_key != device.public_key {
            Some(PairingReason::NotPaired)
        } else if !paired.roles.contains(&device.role) {
            Some(PairingReason::RoleUpgrade)
        } else if !device.requested_scopes.iter().all(|s| paired.scopes.satisfies(s)) {
            Some(PairingReason::ScopeUpgrade)
        } else if !same(&paired.platform, &device.platform) || !same(&paired.device_family, &device.device_family) {
            Some(PairingReason::MetadataUpgrade)
        } else {
            None
        }
    }

    fn allow(
        &mut self,
        device: &VerifiedDevice,
        ctx: &ConnectContext<'_>,
        presented: Option<(&str, TokenGrant)>,
        now_ms: u64,
    ) -> Result<Grant, PairingError> {
        let paired = self
            .devices
            .get_mut(&device.device_id)
            .ok_or_else(|| PairingError::UnknownDevice { device_id: device.device_id.clone() })?;
        paired.last_seen_at_ms = Some(now_ms);
        if let Some(ip) = ctx.remote_ip {
            paired.remote_ip = Some(ip.to_string());
        }
        if device.display_name.is_some() {
            paired.display_name.clone_from(&device.display_name);
        }
        let limit = presented.map(|(_, grant)| grant.scopes);
        let (scopes, scope_names) = granted_scopes(&device.requested_scope_names, paired.scopes, limit);
        let key = (device.device_id.clone(), device.role);
        let (auth_method, device_token) = match presented {
            Some((value, grant)) => {
                if let Some(token) = self.tokens.get_mut(&key) {
                    token.delivered = true;
                }
                let echoed = IssuedToken {
                    device_id: device.device_id.clone(),
                    role: device.role,
                    token: Secret::new(value),
                    scopes: grant.scopes,
                    issued_at_ms: grant.issued_at_ms,
                };
                (AuthMethod::DeviceToken, Some(echoed))
            }
            None => (AuthMethod::Token, self.token_for_hello(&device.device_id, device.role, now_ms)?),
        };
        Ok(Grant {
            device_id: device.device_id.clone(),
            role: device.role,
            scopes,
            scope_names,
            auth_method,
            device_token,
        })
    }

    /// A fresh token when the device does not hold the current one; none when it does
    /// or when the token was revoked.
    fn token_for_hello(
        &mut self,
        device_id: &str,
        role: Role,
        now_ms: u64,
    ) -> Result<Option<IssuedToken>, PairingError> {
        let key = (device_id.to_string(), role);
        let needs_new = match self.tokens.get(&key) {
            None => true,
            Some(token) => token.is_live() && !token.delivered,
        };
        if !needs_new {
            return Ok(None);
        }
        let issued = self.store_token(device_id, role, mint_token_value()?, now_ms)?;
        if let Some(token) = self.tokens.get_mut(&key) {
            token.delivered = true;
        }
        Ok(Some(issued))
    }

    fn candidate_request(
        device: &VerifiedDevice,
        reason: PairingReason,
        ctx: &ConnectContext<'_>,
        request_id: String,
        now_ms: u64,
    ) -> PendingDeviceRequest {
        PendingDeviceRequest {
            request_id,
            device_id: device.device_id.clone(),
            public_key: device.public_key.clone(),
            display_name: device.display_name.clone(),
            platform: device.platform.clone(),
            device_family: device.device_family.clone(),
            client_id: device.client_id.clone(),
            client_mode: device.client_mode.clone(),
            role: device.role,
            scopes: device.requested_scopes,
            reason,
            remote_ip: ctx.remote_ip.map(str::to_string),
            created_at_ms: now_ms,
            ts: now_ms,
        }
    }

    /// Refreshes the device's identical pending request, or supersedes it with a new
    /// one. Never widens an existing request.
    fn require_pairing(
        &mut self,
        device: &VerifiedDevice,
        reason: PairingReason,
        ctx: &ConnectContext<'_>,
        now_ms: u64,
    ) -> Result<(PairingRequired, Vec<PairingEvent>), PairingError> {
        let candidate = Self::candidate_request(device, reason, ctx, String::new(), now_ms);
        let existing = self.pending_for_device(&device.device_id).map(|p| p.request_id.clone());
        if let Some(existing) = self.pending.get_mut(existing.as_deref().unwrap_or("")) {
            if existing.same_ask(&candidate) {
                existing.ts = now_ms;
                existing.reason = reason;
                existing.display_name = candidate.display_name;
                if candidate.remote_ip.is_some() {
                    existing.remote_ip = candidate.remote_ip;
                }
                let required = PairingRequired { reason, request: existing.clone(), created: false, superseded: None };
                return Ok((required, Vec::new()));
            }
        }
        let request = PendingDeviceRequest { request_id: new_request_id()?, ..candidate };
        let superseded = existing.and_then(|id| self.pending.remove(&id)).map(|old| old.request_id);
        self.pending.insert(request.request_id.clone(), request.clone());
        let events = vec![PairingEvent::DevicePairRequested(self.pending_row(&request))];
        Ok((PairingRequired { reason, request, created: true, superseded }, events))
    }

    fn approve_silently(
        &mut self,
        device: &VerifiedDevice,
        reason: PairingReason,
        ctx: &ConnectContext<'_>,
        presented: Option<(&str, TokenGrant)>,
        now_ms: u64,
    ) -> Result<ConnectOutcome, PairingError> {
        let request_id = match self.pending_for_device(&device.device_id) {
            Some(pending) => pending.request_id.clone(),
            None => new_request_id()?,
        };
        let request = Self::candidate_request(device, reason, ctx, request_id, now_ms);
        self.pending.retain(|_, p| p.device_id != device.device_id);
        self.apply_approval(&request, ApprovedVia::Silent, now_ms);
        let grant = self.allow(device, ctx, presented, now_ms)?;
        let events = vec![resolved(&request, Decision::Approved, now_ms)];
        Ok(ConnectOutcome { decision: ConnectDecision::Allowed(grant), events })
    }
}

/// Requested names (in order, deduplicated) whose scope `approved` satisfies, and
/// `limit` too when the connect used a device token.
fn granted_scopes(requested: &[String], approved: ScopeSet, limit: Option<ScopeSet>) -> (ScopeSet, Vec<String>) {
    let mut set = ScopeSet::EMPTY;
    let mut names = Vec::new();
    for scope in requested.iter().filter_map(|name| Scope::parse(name)) {
        let allowed = approved.satisfies(scope) && limit.is_none_or(|l| l.satisfies(scope));
        if allowed && !set.contains(scope) {
            set = set.with(scope);
            names.push(scope.as_str().to_string());
        }
    }
    (set, names)
}
