//! The `hello-ok` payload: the successful response to `connect`.
//!
//! The real clients do no schema validation of it (trace §11.1); they read `protocol`,
//! `policy.tickIntervalMs`, `auth.{role, scopes, deviceToken}` and
//! `features.capabilities`. The rest mirrors what OpenClaw sends so other OpenClaw
//! clients see familiar shapes; OpenClaw-only extras (`snapshot.sessionDefaults`,
//! `policy.attachments`, `pluginSurfaceUrls`, ...) are not modelled and are dropped
//! when a captured hello-ok is decoded.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::connect::{Role, Secret};
use super::frame::StateVersion;
use super::version::SERVER_PROTOCOL;

/// Default `policy` values, as OpenClaw 2026.9.6 sends them.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 25 * 1024 * 1024;
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 50 * 1024 * 1024;
pub const DEFAULT_TICK_INTERVAL_MS: u64 = 30_000;

/// The literal `"hello-ok"` in `payload.type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloOkTag {
    #[default]
    #[serde(rename = "hello-ok")]
    HelloOk,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HelloOk {
    #[serde(rename = "type")]
    pub kind: HelloOkTag,
    pub protocol: u32,
    pub server: ServerInfo,
    pub features: Features,
    pub snapshot: Snapshot,
    pub auth: HelloAuth,
    pub policy: Policy,
}

impl HelloOk {
    /// A hello-ok for protocol 4 with the default policy.
    pub fn new(server: ServerInfo, features: Features, snapshot: Snapshot, auth: HelloAuth) -> Self {
        HelloOk {
            kind: HelloOkTag::HelloOk,
            protocol: SERVER_PROTOCOL,
            server,
            features,
            snapshot,
            auth,
            policy: Policy::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub version: String,
    /// Unique per connection.
    pub conn_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// Unique per gateway process start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub methods: Vec<String>,
    pub events: Vec<String>,
    /// Handed to the node runtime; `[]` is fine.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// OpenClaw sends the gateway's own entry plus one per connected node to read,
    /// write and admin operators (trace §4.1); hivegate sends it empty to everyone.
    pub presence: Vec<Value>,
    /// Same shape as the `health` RPC payload.
    pub health: Value,
    pub state_version: StateVersion,
    pub uptime_ms: u64,
}

/// How this connect authenticated, echoed in `hello-ok.auth.method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// The shared gateway token (`auth.token`).
    Token,
    /// A device token minted at pairing (`auth.deviceToken`).
    DeviceToken,
    Password,
    BootstrapToken,
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AuthMethod>,
    pub role: Role,
    /// The scopes this socket holds; what RPC dispatch enforces.
    pub scopes: Vec<String>,
    /// The device token for `role`; the node persists it (trace §5.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub max_payload: u64,
    pub max_buffered_bytes: u64,
    /// Drives the client's watchdog: it closes 4000 after 2 x this without a frame.
    pub tick_interval_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_payload: DEFAULT_MAX_PAYLOAD_BYTES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            tick_interval_ms: DEFAULT_TICK_INTERVAL_MS,
        }
    }
}
