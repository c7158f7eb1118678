//! Payloads of the device pairing RPCs (`device.pair.*`, `device.token.*`) and the
//! `device.pair.requested` event. Field names follow trace §4.1, §4.2 and §7. The token
//! value never appears in these rows; only `tokens[].{role, scopes, createdAtMs}`.

use serde::{Deserialize, Serialize};

use super::connect::{Role, Secret};
use super::frame::EventPayload;

/// A pending row of `device.pair.list`; also the `device.pair.requested` payload. The
/// CLI reads `requestId`, `deviceId`, `role`/`roles`, `scopes` and `ts`; the rest is
/// for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePendingRow {
    pub request_id: String,
    pub device_id: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default)]
    pub silent: bool,
    /// True when the device was paired before (an upgrade request).
    #[serde(default)]
    pub is_repair: bool,
    /// Last retry, epoch ms; `devices approve --latest` picks the highest.
    pub ts: u64,
}

impl EventPayload for DevicePendingRow {
    const EVENT: &'static str = "device.pair.requested";
}

/// Token metadata in a paired row. Never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokenRow {
    pub role: Role,
    pub scopes: Vec<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

/// The approved command surface of a node, inside its paired device row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSurfaceRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub commands: Vec<String>,
    pub created_at_ms: u64,
    pub approved_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_host: Option<bool>,
}

/// A node surface awaiting `node.pair.approve`, inside its paired device row (§9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingNodeSurfaceRow {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub silent: bool,
    pub ts: u64,
}

/// A paired row of `device.pair.list`; also `device` in the approve result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePairedRow {
    pub device_id: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    /// The first approved role, for clients that read a single role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `owner` (an operator approved) or `silent` (local auto-approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_surface: Option<NodeSurfaceRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_node_surface: Option<PendingNodeSurfaceRow>,
    pub created_at_ms: u64,
    pub approved_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    #[serde(default)]
    pub tokens: Vec<DeviceTokenRow>,
}

/// `device.pair.list` result. A missing list reads as `[]` on the client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePairList {
    #[serde(default)]
    pub pending: Vec<DevicePendingRow>,
    #[serde(default)]
    pub paired: Vec<DevicePairedRow>,
}

/// `{requestId}`: params of `device.pair.approve/reject` and `node.pair.approve/reject`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIdParams {
    pub request_id: String,
}

/// `device.pair.approve` result; the CLI prints `device.deviceId`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePairApproveResult {
    pub request_id: String,
    pub device: DevicePairedRow,
}

/// `device.pair.reject` result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePairRejectResult {
    pub request_id: String,
    pub device_id: String,
}

/// `{deviceId}`: params and result of `device.pair.remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceIdParams {
    pub device_id: String,
}

/// Params of `device.token.rotate` and `device.token.revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokenParams {
    pub device_id: String,
    pub role: Role,
}

/// `device.token.rotate` result. hivegate never echoes `token`: the device takes its new
/// token from its next hello-ok.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokenRotateResult {
    pub device_id: String,
    pub role: Role,
    pub scopes: Vec<String>,
    pub rotated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

/// `device.token.revoke` result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokenRevokeResult {
    pub device_id: String,
    pub role: Role,
    pub revoked_at_ms: u64,
}
