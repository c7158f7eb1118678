//! Node payloads: the invoke round trip (trace §6), the node's own reporting RPCs
//! (§5.1), `node.list` (§7) and the command-surface pairing RPCs `node.pair.*` (§5.2,
//! §5.3).
//!
//! Invoke crosses a representation boundary: the operator sends `params` as an object,
//! the node receives it as the JSON string `paramsJSON` and answers with the string
//! `payloadJSON`, and the operator gets both the parsed `payload` and `payloadJSON`.
//! [`NodeInvokeRequest::forward`] and [`NodeInvokeResponse::from_result`] do those
//! conversions so the shell does not.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::frame::EventPayload;
use super::ProtocolError;

/// `node.invoke` params from an operator (`operator.write`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInvokeParams {
    pub node_id: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Event `node.invoke.request`, to the node's socket only (no `seq`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInvokeRequest {
    /// A gateway-generated UUID, not the operator's request id.
    pub id: String,
    pub node_id: String,
    pub command: String,
    #[serde(rename = "paramsJSON", default, skip_serializing_if = "Option::is_none")]
    pub params_json: Option<String>,
    /// The remaining budget (trace: 14994 of 15000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl NodeInvokeRequest {
    /// Builds the event from the operator's params: `params` becomes the string
    /// `paramsJSON`, and `timeoutMs` becomes what is left of the budget.
    pub fn forward(
        invoke_id: &str,
        params: &NodeInvokeParams,
        remaining_ms: Option<u64>,
    ) -> Result<Self, ProtocolError> {
        let params_json = match &params.params {
            Some(value) => Some(serde_json::to_string(value).map_err(|e| ProtocolError::Encode(e.to_string()))?),
            None => None,
        };
        Ok(NodeInvokeRequest {
            id: invoke_id.to_string(),
            node_id: params.node_id.clone(),
            command: params.command.clone(),
            params_json,
            timeout_ms: remaining_ms.or(params.timeout_ms),
            idempotency_key: params.idempotency_key.clone(),
        })
    }
}

impl EventPayload for NodeInvokeRequest {
    const EVENT: &'static str = "node.invoke.request";
}

/// Event `node.invoke.cancel`, to the node's socket only: the caller of an invoke is
/// gone (its session was killed), so the node may stop the command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInvokeCancel {
    pub invoke_id: String,
}

impl EventPayload for NodeInvokeCancel {
    const EVENT: &'static str = "node.invoke.cancel";
}

/// The error a node reports in a failed `node.invoke.result`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInvokeError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `node.invoke.result` params, from the node; answer `{ok:true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInvokeResultParams {
    pub id: String,
    pub node_id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(rename = "payloadJSON", default, skip_serializing_if = "Option::is_none")]
    pub payload_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<NodeInvokeError>,
}

/// `{ok:true}`: the gateway's answer to `node.invoke.result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkAck {
    pub ok: bool,
}

/// The operator's `node.invoke` result once the node answered with `ok: true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInvokeResponse {
    pub ok: bool,
    pub node_id: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(rename = "payloadJSON", default, skip_serializing_if = "Option::is_none")]
    pub payload_json: Option<String>,
}

impl NodeInvokeResponse {
    /// Parses the node's `payloadJSON` into `payload` (or keeps an inline `payload`).
    pub fn from_result(result: &NodeInvokeResultParams, command: &str) -> Result<Self, ProtocolError> {
        let payload = match (&result.payload_json, &result.payload) {
            (Some(text), _) => Some(serde_json::from_str(text).map_err(|e| ProtocolError::InvalidParams {
                id: result.id.clone(),
                method: "node.invoke.result".to_string(),
                reason: format!("payloadJSON is not json: {e}"),
            })?),
            (None, inline) => inline.clone(),
        };
        Ok(NodeInvokeResponse {
            ok: result.ok,
            node_id: result.node_id.clone(),
            command: command.to_string(),
            payload,
            payload_json: result.payload_json.clone(),
        })
    }
}

/// `node.event` params from the node, e.g. `node.host.stats` every 60 s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEventParams {
    pub event: String,
    #[serde(rename = "payloadJSON", default, skip_serializing_if = "Option::is_none")]
    pub payload_json: Option<String>,
}

/// `node.event` result as OpenClaw sends it: `{ok, event, handled, reason}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEventResult {
    pub ok: bool,
    pub event: String,
    pub handled: bool,
    pub reason: String,
}

/// A pending row of `node.pair.list`; also the `node.pair.requested` payload. The CLI
/// drops rows without `requestId`/`nodeId` and connects with `requiredApproveScopes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePendingRow {
    pub request_id: String,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
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
    pub required_approve_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent: Option<bool>,
    pub ts: u64,
}

impl EventPayload for NodePendingRow {
    const EVENT: &'static str = "node.pair.requested";
}

/// A paired row of `node.pair.list`; also `node` in the approve result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePairedRow {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
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
    pub created_at_ms: u64,
    pub approved_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_reason: Option<String>,
}

/// `node.pair.list` result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePairList {
    #[serde(default)]
    pub pending: Vec<NodePendingRow>,
    #[serde(default)]
    pub paired: Vec<NodePairedRow>,
}

/// `node.pair.approve` result; the CLI prints it verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePairApproveResult {
    pub request_id: String,
    pub node: NodePairedRow,
}

/// `node.pair.reject` result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePairRejectResult {
    pub request_id: String,
    pub node_id: String,
}

/// One entry of `node.list`. The CLI matches `--node` against `nodeId`, then
/// `remoteIp`, then `displayName`, preferring `connected: true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeListEntry {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default)]
    pub caps: Vec<String>,
    /// Approved commands only.
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_host: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_plugin_tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_env: Option<String>,
    /// `approved` or `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connected_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at_ms: Option<u64>,
    pub paired: bool,
    pub connected: bool,
}

/// `node.list` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeListResult {
    pub ts: u64,
    pub nodes: Vec<NodeListEntry>,
}
