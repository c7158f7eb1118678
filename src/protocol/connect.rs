//! The handshake: the server's `connect.challenge` event and the client's `connect`
//! params. Client input tolerates unknown fields (serde ignores them), so a newer
//! client that adds fields still connects; optional fields stay `Option` so that a
//! re-serialized frame has the same shape the client sent (trace §3, §4.1, §5.3, §8.2).
//! Secrets (`auth.*`) are wrapped in [`Secret`], which never prints its value.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::frame::EventPayload;

/// A credential string. `Debug` prints `<redacted>`; there is deliberately no
/// `PartialEq`, so secrets are only ever compared in constant time by their owner.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plaintext, for signing payloads, hashing, or writing into a frame.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The connection role. OpenClaw defaults a missing role to `operator`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Operator,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payload of the first frame on every socket, `event connect.challenge` (trace §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChallengePayload {
    /// A fresh UUID per connection; the client signs it and echoes it in `device.nonce`.
    pub nonce: String,
    /// Server clock in epoch ms; the node host signs it as `device.signedAt`.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

impl EventPayload for ChallengePayload {
    const EVENT: &'static str = "connect.challenge";
}

/// `connect` params.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    pub min_protocol: u32,
    pub max_protocol: u32,
    pub client: ClientInfo,
    #[serde(default)]
    pub role: Role,
    /// Requested scopes as sent, in order (the signature covers them joined by `,`).
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Map<String, Value>>,
    /// The node host's `PATH` (trace §3), shown again in `node.list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceProof>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ConnectAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// `connect.client`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// `node-host`, `cli`, `gateway-client`, ...
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub version: String,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// `node`, `cli`, `backend`, `ui`, ...
    pub mode: String,
    /// Stable per node install, fresh per CLI connection; never the device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// `connect.device`: the signed device identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProof {
    /// Lowercase hex SHA-256 of the raw 32-byte public key.
    pub id: String,
    /// Unpadded base64url of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// Unpadded base64url of the 64-byte signature.
    pub signature: String,
    pub signed_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `connect.auth`: at most one of these is normally present.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl ConnectAuth {
    /// The token slot of the signed device payload: the first present of `token`,
    /// `deviceToken`, `bootstrapToken`, else empty.
    pub fn signed_token(&self) -> &str {
        [&self.token, &self.device_token, &self.bootstrap_token]
            .into_iter()
            .flatten()
            .map(Secret::expose)
            .next()
            .unwrap_or("")
    }
}

impl ConnectParams {
    /// See [`ConnectAuth::signed_token`]; empty without an `auth` block.
    pub fn signed_token(&self) -> &str {
        self.auth.as_ref().map(ConnectAuth::signed_token).unwrap_or("")
    }
}
