//! Server events other than the challenge and node invoke: keepalive, shutdown, the
//! pairing notifications, and the details object of a `PAIRING_REQUIRED` error.
//!
//! `device.pair.requested` and `node.pair.requested` carry the same row that the
//! corresponding `*.pair.list` returns under `pending`, so those rows (in
//! `devices.rs` / `node.rs`) implement [`EventPayload`] themselves.

use serde::{Deserialize, Serialize};

use super::connect::Role;
use super::frame::{detail_codes, error_codes, ErrorShape, EventPayload};

/// `tick {ts}`, with `seq`, every `policy.tickIntervalMs` on each connection's own timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickPayload {
    pub ts: u64,
}

impl EventPayload for TickPayload {
    const EVENT: &'static str = "tick";
}

/// `shutdown {reason}`, sent just before close 1012 (trace §8.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownPayload {
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_expected_ms: Option<u64>,
}

impl ShutdownPayload {
    /// The text OpenClaw sends on SIGTERM.
    pub fn gateway_stopping() -> Self {
        ShutdownPayload { reason: "gateway stopping".to_string(), restart_expected_ms: None }
    }
}

impl EventPayload for ShutdownPayload {
    const EVENT: &'static str = "shutdown";
}

/// How a pairing request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approved,
    Rejected,
}

/// `device.pair.resolved`, broadcast to pairing operators before the approve response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePairResolved {
    pub request_id: String,
    pub device_id: String,
    pub decision: Decision,
    pub ts: u64,
}

impl EventPayload for DevicePairResolved {
    const EVENT: &'static str = "device.pair.resolved";
}

/// `node.pair.resolved`: to operators (with `seq`) and to the node's own socket
/// (without); the node retries its gated requests at once when `nodeId` is its own
/// id and `decision == "approved"` (trace §5.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePairResolved {
    pub request_id: String,
    pub node_id: String,
    pub decision: Decision,
    pub ts: u64,
}

impl EventPayload for NodePairResolved {
    const EVENT: &'static str = "node.pair.resolved";
}

/// `node.runnerInventory.changed {nodeId}`: OpenClaw sends it to operators on surface
/// approval. hivegate defines it and does not send it yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRunnerInventoryChanged {
    pub node_id: String,
}

impl EventPayload for NodeRunnerInventoryChanged {
    const EVENT: &'static str = "node.runnerInventory.changed";
}

/// Why a device must (re-)pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairingReason {
    NotPaired,
    RoleUpgrade,
    ScopeUpgrade,
    MetadataUpgrade,
}

impl PairingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PairingReason::NotPaired => "not-paired",
            PairingReason::RoleUpgrade => "role-upgrade",
            PairingReason::ScopeUpgrade => "scope-upgrade",
            PairingReason::MetadataUpgrade => "metadata-upgrade",
        }
    }

    /// The error message (and close reason prefix) for this reason. Each starts with
    /// `pairing required`; the not-paired text is OpenClaw's own (trace §3).
    pub fn message(self) -> &'static str {
        match self {
            PairingReason::NotPaired => "pairing required: device is not approved yet",
            PairingReason::RoleUpgrade => "pairing required: device is not approved for this role yet",
            PairingReason::ScopeUpgrade => "pairing required: requested scopes are not approved yet",
            PairingReason::MetadataUpgrade => "pairing required: device platform changed and needs approval",
        }
    }
}

/// The only next step hivegate recommends: keep reconnecting with backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecommendedNextStep {
    #[serde(rename = "wait_then_retry")]
    WaitThenRetry,
}

/// The literal `"PAIRING_REQUIRED"` in `details.code`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairingRequiredCode {
    #[default]
    #[serde(rename = "PAIRING_REQUIRED")]
    PairingRequired,
}

/// `error.details` of a `NOT_PAIRED` connect failure.
///
/// Without `recommendedNextStep: "wait_then_retry"` (or `pauseReconnect: false`) the
/// OpenClaw node host stops reconnecting until it is restarted (trace §0.4, §3); the
/// constructor sets both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequiredDetails {
    pub code: PairingRequiredCode,
    pub reason: PairingReason,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_next_step: Option<RecommendedNextStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reconnect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_role: Option<Role>,
}

impl PairingRequiredDetails {
    pub fn new(reason: PairingReason, request_id: &str, device_id: &str, requested_role: Role) -> Self {
        PairingRequiredDetails {
            code: PairingRequiredCode::PairingRequired,
            reason,
            request_id: request_id.to_string(),
            recommended_next_step: Some(RecommendedNextStep::WaitThenRetry),
            pause_reconnect: Some(false),
            remediation_hint: Some("Approve this device from the pending pairing requests.".to_string()),
            device_id: Some(device_id.to_string()),
            requested_role: Some(requested_role),
        }
    }

    /// The whole `NOT_PAIRED` error: message from the reason, `retryable: true`.
    pub fn to_error_shape(&self) -> ErrorShape {
        let details = serde_json::to_value(self).unwrap_or_else(|_| self.minimal_details());
        ErrorShape::new(error_codes::NOT_PAIRED, self.reason.message()).with_details(details).with_retryable(true)
    }

    fn minimal_details(&self) -> serde_json::Value {
        serde_json::json!({
            "code": detail_codes::PAIRING_REQUIRED,
            "reason": self.reason.as_str(),
            "requestId": self.request_id,
        })
    }
}
