//! Device pairing as pure logic: identity verification ([`verify_device`]) and the
//! [`PairingBook`], the state machine of paired devices, pending requests, device
//! tokens and node command surfaces. Nothing here does I/O or reads a clock: every
//! operation takes `now_ms`, mutates the book, and returns an outcome value that also
//! lists the [`PairingEvent`]s to broadcast. The connection shell performs those
//! effects; the store persists [`PairingState`] (or the records one by one).
//!
//! Authority only narrows. A connect is granted the requested scopes that the device's
//! approved set satisfies, never more; asking for more opens a `scope-upgrade` request
//! while the old grant keeps working. An approver can grant only scopes it holds
//! itself (with [`ScopeSet::satisfies`](crate::scope::ScopeSet::satisfies) semantics).
//! A pending request never widens in place: a different role, scope set, key or
//! platform supersedes it under a new request id. Silent approval is an explicit policy
//! input and applies only to direct loopback connects.
//!
//! Errors: [`DeviceAuthError`] for the identity checks, [`PairingError`] for the book.

mod book;
mod decide;
mod events;
mod identity;
mod nodes;
mod records;
mod state;
mod tokens;
mod wire;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests_book;
#[cfg(test)]
mod tests_identity;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_nodes;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_wire;

pub use book::{ApproveOutcome, PairingBook, RejectOutcome, RemoveOutcome};
pub use decide::{
    ConnectContext, ConnectDecision, ConnectOutcome, Credential, Grant, Locality, PairingRequired, SilentApproval,
};
pub use events::{Audience, PairingEvent};
pub use identity::{
    decode_base64url, device_id_for_public_key, encode_base64url, normalize_metadata, verify_device, DeviceAuthError,
    SignatureVersion, SignedFields, VerifiedDevice, MAX_SIGNATURE_SKEW_MS,
};
pub use nodes::{NodeApproveOutcome, NodeCommandPolicy, NodeRejectOutcome, NodeSurfaceOutcome, NodeSurfaceStatus};
pub use records::{
    ApprovedVia, DeviceToken, NodeDeclaration, NodeSurface, PairedDevice, PendingDeviceRequest, PendingNodeRequest,
    TokenHash,
};
pub use state::{PairingState, STATE_VERSION};
pub use tokens::{IssuedToken, RevokeOutcome, TokenGrant, TOKEN_BYTES};

use crate::protocol::{detail_codes, error_codes, ErrorShape, Role};
use crate::scope::Scope;

/// A pending request expires this long after its last retry.
pub const PENDING_TTL_MS: u64 = 5 * 60 * 1000;

/// Refusals from the pairing book.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// OpenClaw's exact text; the CLI prints "No pending device request matches" on it.
    #[error("unknown requestId")]
    UnknownRequest,
    #[error("unknown device {device_id}; list devices with device.pair.list")]
    UnknownDevice { device_id: String },
    /// Contains "device pairing approval denied", which makes the OpenClaw CLI retry
    /// the approval with `operator.admin` (trace §4.2).
    #[error("device pairing approval denied: approver lacks {missing}; approve from a connection that holds it")]
    ApprovalDenied { missing: Scope },
    #[error("node pairing approval denied: approver lacks {missing}; approve from a connection that holds it")]
    NodeApprovalDenied { missing: Scope },
    #[error("device {device_id} is not approved for role {role}; approve a role upgrade first")]
    RoleNotApproved { device_id: String, role: Role },
    #[error("device {device_id} has no live {role} token; rotate to issue a new one")]
    NoLiveToken { device_id: String, role: Role },
    #[error("device token mismatch; rotate the token with device.token.rotate or pair again")]
    DeviceTokenMismatch,
    #[error("could not read secure randomness ({0}); check the os entropy source")]
    Randomness(String),
    #[error("invalid pairing state: {0}; restore a valid export")]
    InvalidState(String),
}

impl PairingError {
    /// The error to put in the failed response.
    pub fn to_error_shape(&self) -> ErrorShape {
        let shape = match self {
            PairingError::Randomness(_) | PairingError::InvalidState(_) => {
                ErrorShape::new(error_codes::UNAVAILABLE, self.to_string()).with_retryable(true)
            }
            _ => ErrorShape::invalid_request(self.to_string()),
        };
        match self {
            PairingError::ApprovalDenied { missing } | PairingError::NodeApprovalDenied { missing } => shape
                .with_details(
                    serde_json::json!({ "code": detail_codes::MISSING_SCOPE, "missingScope": missing.as_str() }),
                ),
            PairingError::DeviceTokenMismatch => {
                shape.with_details(serde_json::json!({ "code": detail_codes::AUTH_DEVICE_TOKEN_MISMATCH }))
            }
            _ => shape,
        }
    }
}
