//! The records the pairing book keeps: plain serde structs, so a store can persist them
//! one by one or as a whole [`super::PairingState`]. Device tokens exist here only as
//! SHA-256 hashes ([`TokenHash`]); the plaintext leaves the book once, in the result of
//! the operation that minted it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::protocol::{PairingReason, Role};
use crate::scope::ScopeSet;

/// How a device came to be paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovedVia {
    /// An operator approved a pending request.
    Owner,
    /// Local auto-approval (policy [`super::SilentApproval::LocalOnly`]).
    Silent,
}

impl ApprovedVia {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovedVia::Owner => "owner",
            ApprovedVia::Silent => "silent",
        }
    }
}

/// A paired device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairedDevice {
    pub device_id: String,
    pub public_key: String,
    pub display_name: Option<String>,
    /// As the client sent them; compared after normalization.
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub client_id: String,
    pub client_mode: String,
    pub roles: BTreeSet<Role>,
    /// Approved operator scopes; a connect is granted at most these.
    pub scopes: ScopeSet,
    pub approved_via: ApprovedVia,
    pub created_at_ms: u64,
    pub approved_at_ms: u64,
    pub remote_ip: Option<String>,
    pub last_seen_at_ms: Option<u64>,
}

/// A SHA-256 hash of a device token, serialized as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// A hash no token has (SHA-256 never yields all zeros in practice), for dummy
    /// comparisons.
    pub(super) fn placeholder() -> Self {
        TokenHash([0; 32])
    }

    /// Constant-time check of a presented token against this hash.
    pub fn matches(&self, token: &str) -> bool {
        bool::from(TokenHash::of(token).0.ct_eq(&self.0))
    }

    fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TokenHash(bytes))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TokenHash::from_hex(&text).ok_or_else(|| serde::de::Error::custom("token hash must be 64 lowercase hex digits"))
    }
}

/// The device token of one (device, role).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceToken {
    pub device_id: String,
    pub role: Role,
    /// The scopes the token carries (empty for the node role).
    pub scopes: ScopeSet,
    /// `None` once revoked.
    pub hash: Option<TokenHash>,
    pub created_at_ms: u64,
    pub rotated_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// Whether the device is known to hold the current token (it was sent in a
    /// hello-ok, or the device presented it). An undelivered token is replaced by a
    /// fresh one at the next connect, since its plaintext is gone.
    pub delivered: bool,
}

impl DeviceToken {
    pub fn is_live(&self) -> bool {
        self.hash.is_some()
    }

    /// When the current value was issued (rotation time, else creation time).
    pub fn issued_at_ms(&self) -> u64 {
        self.rotated_at_ms.unwrap_or(self.created_at_ms)
    }
}

/// A device waiting for an operator, one per device at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingDeviceRequest {
    pub request_id: String,
    pub device_id: String,
    pub public_key: String,
    pub display_name: Option<String>,
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub client_id: String,
    pub client_mode: String,
    pub role: Role,
    /// The full scope set the device asked for; fixed for the life of the request.
    pub scopes: ScopeSet,
    pub reason: PairingReason,
    pub remote_ip: Option<String>,
    pub created_at_ms: u64,
    /// Last retry; the request expires [`super::PENDING_TTL_MS`] after it.
    pub ts: u64,
}

impl PendingDeviceRequest {
    /// True when `other` asks for exactly what this request asks for, so a retry
    /// refreshes it instead of superseding it.
    pub fn same_ask(&self, other: &PendingDeviceRequest) -> bool {
        self.role == other.role
            && self.scopes == other.scopes
            && self.public_key == other.public_key
            && super::identity::normalize_metadata(self.platform.as_deref().unwrap_or(""))
                == super::identity::normalize_metadata(other.platform.as_deref().unwrap_or(""))
            && super::identity::normalize_metadata(self.device_family.as_deref().unwrap_or(""))
                == super::identity::normalize_metadata(other.device_family.as_deref().unwrap_or(""))
    }
}

/// What a node declares at connect, after the command policy filtered it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDeclaration {
    pub node_id: String,
    pub display_name: Option<String>,
    pub platform: Option<String>,
    pub version: Option<String>,
    pub device_family: Option<String>,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub caps: BTreeSet<String>,
    pub commands: BTreeSet<String>,
    pub remote_ip: Option<String>,
}

/// A node's approved command surface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSurface {
    pub node_id: String,
    pub display_name: Option<String>,
    pub platform: Option<String>,
    pub version: Option<String>,
    pub device_family: Option<String>,
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub caps: BTreeSet<String>,
    pub commands: BTreeSet<String>,
    pub created_at_ms: u64,
    pub approved_at_ms: u64,
}

/// A node surface waiting for `node.pair.approve`, one per node at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingNodeRequest {
    pub request_id: String,
    pub declaration: NodeDeclaration,
    pub created_at_ms: u64,
    pub ts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hashes_round_trip_as_hex_and_compare_by_value() {
        let hash = TokenHash::of("secret");
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), hash);
        assert!(hash.matches("secret"));
        assert!(!hash.matches("secreT"));
        assert!(serde_json::from_str::<TokenHash>("\"zz\"").is_err());
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
    }
}
