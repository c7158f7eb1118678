//! Device identity verification for a `connect` that carries a `device` block.
//!
//! The checks run in OpenClaw's order and stop at the first failure: the public key
//! decodes to 32 raw bytes, `device.id` is the lowercase hex SHA-256 of those bytes,
//! `signedAt` is within two minutes of the gateway clock, `nonce` is the challenge's,
//! and the Ed25519 signature verifies over the v3 payload, else over the v2 payload.
//! Each failure is a [`DeviceAuthError`] that carries OpenClaw's message, `details.code`
//! and `details.reason`, so the shell answers and closes without choosing texts.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::protocol::{detail_codes, Close, ConnectParams, DeviceProof, ErrorShape, Role};
use crate::scope::ScopeSet;

/// Largest accepted |now - signedAt|.
pub const MAX_SIGNATURE_SKEW_MS: u64 = 120_000;

/// Base64url that accepts input with or without padding (clients send none).
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a device block was refused. Messages are OpenClaw's wire texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    #[error("device identity required")]
    Missing,
    #[error("device public key invalid")]
    PublicKeyInvalid,
    #[error("device identity mismatch")]
    IdentityMismatch,
    #[error("device signature expired")]
    SignatureExpired,
    #[error("device nonce required")]
    NonceRequired,
    #[error("device nonce mismatch")]
    NonceMismatch,
    #[error("device signature invalid")]
    SignatureInvalid,
}

impl DeviceAuthError {
    /// `error.details.code`.
    pub fn detail_code(self) -> &'static str {
        match self {
            DeviceAuthError::Missing => detail_codes::DEVICE_IDENTITY_REQUIRED,
            DeviceAuthError::PublicKeyInvalid => detail_codes::DEVICE_AUTH_PUBLIC_KEY_INVALID,
            DeviceAuthError::IdentityMismatch => detail_codes::DEVICE_AUTH_DEVICE_ID_MISMATCH,
            DeviceAuthError::SignatureExpired => detail_codes::DEVICE_AUTH_SIGNATURE_EXPIRED,
            DeviceAuthError::NonceRequired => detail_codes::DEVICE_AUTH_NONCE_REQUIRED,
            DeviceAuthError::NonceMismatch => detail_codes::DEVICE_AUTH_NONCE_MISMATCH,
            DeviceAuthError::SignatureInvalid => detail_codes::DEVICE_AUTH_SIGNATURE_INVALID,
        }
    }

    /// `error.details.reason`, stable across OpenClaw versions.
    pub fn detail_reason(self) -> &'static str {
        match self {
            DeviceAuthError::Missing => "device-identity-missing",
            DeviceAuthError::PublicKeyInvalid => "device-public-key",
            DeviceAuthError::IdentityMismatch => "device-id-mismatch",
            DeviceAuthError::SignatureExpired => "device-signature-stale",
            DeviceAuthError::NonceRequired => "device-nonce-missing",
            DeviceAuthError::NonceMismatch => "device-nonce-mismatch",
            DeviceAuthError::SignatureInvalid => "device-signature",
        }
    }

    /// The `res ok:false` error: `INVALID_REQUEST`, the message, `{code, reason}`.
    pub fn to_error_shape(self) -> ErrorShape {
        ErrorShape::invalid_request(self.to_string())
            .with_details(serde_json::json!({ "code": self.detail_code(), "reason": self.detail_reason() }))
    }

    /// Close 1008 with the message as reason.
    pub fn close(self) -> Close {
        Close::policy(&self.to_string())
    }
}

/// Which signed payload layout verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureVersion {
    V3,
    V2,
}

/// A device whose identity and signature checked out, with what it asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDevice {
    pub device_id: String,
    /// Unpadded base64url of the raw key, as sent.
    pub public_key: String,
    pub signature_version: SignatureVersion,
    pub signed_at_ms: u64,
    pub client_id: String,
    pub client_mode: String,
    pub display_name: Option<String>,
    /// As sent (not normalized); compare with [`normalize_metadata`].
    pub platform: Option<String>,
    pub device_family: Option<String>,
    pub role: Role,
    /// Requested scope names in request order, known or not.
    pub requested_scope_names: Vec<String>,
    /// The known scopes among them; unknown names are never granted.
    pub requested_scopes: ScopeSet,
}

/// The fields a device signs, in payload order.
#[derive(Clone, Copy, Debug)]
pub struct SignedFields<'a> {
    pub device_id: &'a str,
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: &'a str,
    pub scopes: &'a [String],
    pub signed_at_ms: u64,
    pub token: &'a str,
    pub nonce: &'a str,
    pub platform: &'a str,
    pub device_family: &'a str,
}

impl<'a> SignedFields<'a> {
    /// The fields of a connect; the token is `auth.token ?? deviceToken ?? bootstrapToken ?? ""`.
    pub fn from_connect(params: &'a ConnectParams, device: &'a DeviceProof) -> Self {
        SignedFields {
            device_id: &device.id,
            client_id: &params.client.id,
            client_mode: &params.client.mode,
            role: params.role.as_str(),
            scopes: &params.scopes,
            signed_at_ms: device.signed_at,
            token: params.signed_token(),
            nonce: device.nonce.as_deref().unwrap_or(""),
            platform: &params.client.platform,
            device_family: params.client.device_family.as_deref().unwrap_or(""),
        }
    }

    /// `v2|deviceId|clientId|clientMode|role|scopes|signedAtMs|token|nonce`.
    pub fn v2(&self) -> String {
        format!(
            "v2|{}|{}|{}|{}|{}|{}|{}|{}",
            self.device_id,
            self.client_id,
            self.client_mode,
            self.role,
            self.scopes.join(","),
            self.signed_at_ms,
            self.token,
            self.nonce
        )
    }

    /// The v2 fields with `v3` and `|platform|deviceFamily` (trimmed, lowercased).
    pub fn v3(&self) -> String {
        let v2 = self.v2();
        let rest = v2.strip_prefix("v2").unwrap_or(&v2);
        format!("v3{rest}|{}|{}", normalize_metadata(self.platform), normalize_metadata(self.device_family))
    }
}

/// Trims and ASCII-lowercases platform/deviceFamily, as OpenClaw does ("Linux" -> "linux").
pub fn normalize_metadata(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

/// The device id of a raw public key: lowercase hex SHA-256.
pub fn device_id_for_public_key(raw: &[u8]) -> String {
    Sha256::digest(raw).iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpadded base64url, the encoding of keys, signatures and device tokens.
pub fn encode_base64url(bytes: &[u8]) -> String {
    B64URL_LENIENT.encode(bytes)
}

/// Decodes base64url with or without padding.
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    B64URL_LENIENT.decode(text).ok()
}

/// Verifies the device block of `params` against the challenge nonce sent on this
/// socket and the gateway clock. Without a device block: [`DeviceAuthError::Missing`];
/// call this only for connects that carry one or must carry one.
pub fn verify_device(
    params: &ConnectParams,
    challenge_nonce: &str,
    now_ms: u64,
) -> Result<VerifiedDevice, DeviceAuthError> {
    let device = params.device.as_ref().ok_or(DeviceAuthError::Missing)?;
    let raw_key: [u8; 32] = decode_base64url(&device.public_key)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(DeviceAuthError::PublicKeyInvalid)?;
    let key = VerifyingKey::from_bytes(&raw_key).map_err(|_| DeviceAuthError::PublicKeyInvalid)?;
    if device_id_for_public_key(&raw_key) != device.id {
        return Err(DeviceAuthError::IdentityMismatch);
    }
    if now_ms.abs_diff(device.signed_at) > MAX_SIGNATURE_SKEW_MS {
        return Err(DeviceAuthError::SignatureExpired);
    }
    match device.nonce.as_deref().map(str::trim) {
        None | Some("") => return Err(DeviceAuthError::NonceRequired),
        Some(nonce) if nonce != challenge_nonce => return Err(DeviceAuthError::NonceMismatch),
        Some(_) => {}
    }
    let signature = decode_base64url(&device.signature)
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(DeviceAuthError::SignatureInvalid)?;
    let fields = SignedFields::from_connect(params, device);
    let signature_version = if key.verify_strict(fields.v3().as_bytes(), &signature).is_ok() {
        SignatureVersion::V3
    } else if key.verify_strict(fields.v2().as_bytes(), &signature).is_ok() {
        SignatureVersion::V2
    } else {
        return Err(DeviceAuthError::SignatureInvalid);
    };
    let (requested_scopes, _unknown) = ScopeSet::parse_lenient(params.scopes.iter().map(String::as_str));
    Ok(VerifiedDevice {
        device_id: device.id.clone(),
        public_key: device.public_key.clone(),
        signature_version,
        signed_at_ms: device.signed_at,
        client_id: params.client.id.clone(),
        client_mode: params.client.mode.clone(),
        display_name: params.client.display_name.clone(),
        platform: Some(params.client.platform.clone()),
        device_family: params.client.device_family.clone(),
        role: params.role,
        requested_scope_names: params.scopes.clone(),
        requested_scopes,
    })
}
