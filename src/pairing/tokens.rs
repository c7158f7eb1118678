//! Device tokens: minting (32 random bytes, unpadded base64url), constant-time
//! verification against the stored hash, rotation and revocation, plus the random
//! request ids. Randomness comes from the OS (`OsRng`, via `try_fill_bytes`), so an
//! entropy failure is an error value, never a panic.

use rand::rngs::OsRng;
use rand::RngCore;

use super::book::check_approver;
use super::book::PairingBook;
use super::identity::encode_base64url;
use super::records::{DeviceToken, TokenHash};
use super::PairingError;
use crate::protocol::{Role, Secret};
use crate::scope::ScopeSet;

/// Length of a device token before encoding (43 base64url characters).
pub const TOKEN_BYTES: usize = 32;

/// A freshly minted token. The plaintext exists only in this value.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub device_id: String,
    pub role: Role,
    pub token: Secret,
    pub scopes: ScopeSet,
    pub issued_at_ms: u64,
}

/// What a valid device token authorizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    pub scopes: ScopeSet,
    pub issued_at_ms: u64,
}

/// A revoked token; the shell closes live connections that authenticated with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeOutcome {
    pub device_id: String,
    pub role: Role,
    pub revoked_at_ms: u64,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PairingError> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| PairingError::Randomness(e.to_string()))?;
    Ok(bytes)
}

/// A random (v4) UUID string for request ids.
pub(super) fn new_request_id() -> Result<String, PairingError> {
    Ok(uuid::Builder::from_random_bytes(random_bytes::<16>()?).into_uuid().to_string())
}

pub(super) fn mint_token_value() -> Result<Secret, PairingError> {
    Ok(Secret::new(encode_base64url(&random_bytes::<TOKEN_BYTES>()?)))
}

impl PairingBook {
    /// Checks `token` against the stored hash of (device, role) in constant time.
    /// Unknown devices, revoked tokens and wrong values all give the same error.
    pub fn verify_device_token(&self, device_id: &str, role: Role, token: &str) -> Result<TokenGrant, PairingError> {
        let record = self.tokens.get(&(device_id.to_string(), role));
        let stored = record.and_then(|r| r.hash);
        // Hash and compare even when nothing is stored, so timing does not tell which.
        let matches = stored.unwrap_or_else(TokenHash::placeholder).matches(token) && stored.is_some();
        match record {
            Some(record) if matches => Ok(TokenGrant { scopes: record.scopes, issued_at_ms: record.issued_at_ms() }),
            _ => Err(PairingError::DeviceTokenMismatch),
        }
    }

    /// Replaces the (device, role) token with a new one; the old value stops working.
    /// The role must be approved for the device.
    /// Mints a new token for (device, role). The caller must hold every scope the token
    /// grants (the rule approval follows), so nobody rotates a grant wider than its own.
    pub fn rotate_token(
        &mut self,
        device_id: &str,
        role: Role,
        caller: ScopeSet,
        now_ms: u64,
    ) -> Result<IssuedToken, PairingError> {
        let scopes = self.token_scopes_for(device_id, role)?;
        check_approver(caller, scopes)?;
        let token = mint_token_value()?;
        let key = (device_id.to_string(), role);
        let created_at_ms = self.tokens.get(&key).map(|t| t.created_at_ms).unwrap_or(now_ms);
        self.tokens.insert(
            key,
            DeviceToken {
                device_id: device_id.to_string(),
                role,
                scopes,
                hash: Some(TokenHash::of(token.expose())),
                created_at_ms,
                rotated_at_ms: Some(now_ms),
                revoked_at_ms: None,
                delivered: false,
            },
        );
        Ok(IssuedToken { device_id: device_id.to_string(), role, token, scopes, issued_at_ms: now_ms })
    }

    /// Invalidates the (device, role) token. The device stays paired; a shared-secret
    /// connect is still allowed but gets no new token until [`Self::rotate_token`].
    /// The caller must hold every scope the token grants.
    pub fn revoke_token(
        &mut self,
        device_id: &str,
        role: Role,
        caller: ScopeSet,
        now_ms: u64,
    ) -> Result<RevokeOutcome, PairingError> {
        check_approver(caller, self.token_scopes_for(device_id, role)?)?;
        let key = (device_id.to_string(), role);
        match self.tokens.get_mut(&key) {
            Some(token) if token.is_live() => {
                token.hash = None;
                token.revoked_at_ms = Some(now_ms);
                token.delivered = false;
                Ok(RevokeOutcome { device_id: device_id.to_string(), role, revoked_at_ms: now_ms })
            }
            _ => Err(PairingError::NoLiveToken { device_id: device_id.to_string(), role }),
        }
    }

    /// Stores a minted token for an approved (device, role), marked undelivered.
    pub(super) fn store_token(
        &mut self,
        device_id: &str,
        role: Role,
        token: Secret,
        now_ms: u64,
    ) -> Result<IssuedToken, PairingError> {
        let scopes = self.token_scopes_for(device_id, role)?;
        self.tokens.insert(
            (device_id.to_string(), role),
            DeviceToken {
                device_id: device_id.to_string(),
                role,
                scopes,
                hash: Some(TokenHash::of(token.expose())),
                created_at_ms: now_ms,
                rotated_at_ms: None,
                revoked_at_ms: None,
                delivered: false,
            },
        );
        Ok(IssuedToken { device_id: device_id.to_string(), role, token, scopes, issued_at_ms: now_ms })
    }

    /// Operator tokens carry the device's approved scopes; node tokens none.
    fn token_scopes_for(&self, device_id: &str, role: Role) -> Result<ScopeSet, PairingError> {
        let device = self
            .devices
            .get(device_id)
            .ok_or_else(|| PairingError::UnknownDevice { device_id: device_id.to_string() })?;
        if !device.roles.contains(&role) {
            return Err(PairingError::RoleNotApproved { device_id: device_id.to_string(), role });
        }
        Ok(match role {
            Role::Operator => device.scopes,
            Role::Node => ScopeSet::EMPTY,
        })
    }
}
