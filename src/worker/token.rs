//! The work token: a spawn placed on workers, as the gateway decided and attenuated it,
//! signed with the gateway's Ed25519 key. It travels in the work queue's row; a worker
//! verifies it with the gateway's public key before it starts (or resumes) the session,
//! so a row written by anyone else grants nothing.
//!
//! Wire form: `base64url(json) "." base64url(signature over the json bytes)`.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::keys::{RunId, SessionKey};
use crate::store::Grant;

/// The file in the state directory holding the gateway's signing key (32 raw bytes).
pub const KEY_FILE: &str = "gateway-signing.key";
/// The longest token a worker reads (a task is bounded by the model's answer size).
pub const MAX_TOKEN_BYTES: usize = 4 << 20;

/// A spawn for a worker: everything it needs to start the session, and nothing more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkToken {
    pub key: SessionKey,
    pub run_id: RunId,
    pub parent: SessionKey,
    pub parent_run_id: RunId,
    pub agent_id: String,
    pub model: String,
    #[serde(default)]
    pub model_explicit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The attenuated authority: the worker's capability is made from this alone.
    pub grant: Grant,
    /// When the gateway signed it, Unix milliseconds.
    pub issued_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the work token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the work token's signature is not the gateway's")]
    BadSignature,
    #[error("the work token is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the gateway key {0}")]
    Key(String),
}

/// The gateway's signing key.
pub struct GatewayKey(SigningKey);

impl GatewayKey {
    /// The key in `state_dir`, made (readable by this user only) on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<GatewayKey, TokenError> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    TokenError::Key(format!("file {} is not 32 bytes; move it away to make a new key", path.display()))
                })?;
                Ok(GatewayKey(SigningKey::from_bytes(&seed)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
                write_private(&path, &key.to_bytes())
                    .map_err(|e| TokenError::Key(format!("file {} cannot be written: {e}", path.display())))?;
                Ok(GatewayKey(key))
            }
            Err(e) => Err(TokenError::Key(format!("file {} cannot be read: {e}", path.display()))),
        }
    }

    /// A key that lives only as long as this process (ephemeral state directories).
    pub fn ephemeral() -> GatewayKey {
        GatewayKey(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// The public key as workers are given it: unpadded base64url of its 32 bytes.
    pub fn public(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.verifying_key().as_bytes())
    }

    pub fn sign(&self, token: &WorkToken) -> Result<String, TokenError> {
        let json = serde_json::to_vec(token)?;
        let signature = self.0.sign(&json);
        Ok(format!("{}.{}", URL_SAFE_NO_PAD.encode(&json), URL_SAFE_NO_PAD.encode(signature.to_bytes())))
    }
}

/// A public key as [`GatewayKey::public`] writes it.
pub fn parse_public(text: &str) -> Result<VerifyingKey, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| TokenError::Key("is not unpadded base64url".into()))?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| TokenError::Key("is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| TokenError::Key("is not an Ed25519 public key".into()))
}

/// The token's spawn, if `key` signed exactly these bytes.
pub fn verify(key: &VerifyingKey, wire: &str) -> Result<WorkToken, TokenError> {
    if wire.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("too long"));
    }
    let (json, signature) = wire.split_once('.').ok_or(TokenError::Malformed("no signature"))?;
    let json = URL_SAFE_NO_PAD.decode(json).map_err(|_| TokenError::Malformed("the payload is not base64url"))?;
    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
    let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed("the signature's length"))?;
    key.verify(&json, &signature).map_err(|_| TokenError::BadSignature)?;
    Ok(serde_json::from_slice(&json)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> WorkToken {
        WorkToken {
            key: "agent:brain:main:subagent:executor:1".into(),
            run_id: "r1".into(),
            parent: "agent:brain:main".into(),
            parent_run_id: "r0".into(),
            agent_id: "executor".into(),
            model: "builtin/executor".into(),
            model_explicit: false,
            thinking: None,
            task: "count".into(),
            label: None,
            grant: Grant { scopes: 3, depth: 1, max_depth: 1, ..Grant::default() },
            issued_at_ms: 1,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_any_change_or_other_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = GatewayKey::load_or_create(dir.path()).unwrap();
        let again = GatewayKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public(), again.public(), "the key is kept in the state directory");
        let public = parse_public(&key.public()).unwrap();
        let wire = key.sign(&token()).unwrap();
        assert_eq!(verify(&public, &wire).unwrap(), token());

        // A worker given a row with a widened grant: the signature no longer matches.
        let (json, sig) = wire.split_once('.').unwrap();
        let mut forged: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(json).unwrap()).unwrap();
        forged["grant"]["maxDepth"] = 9.into();
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap()));
        assert!(matches!(verify(&public, &forged), Err(TokenError::BadSignature)));
        let other = GatewayKey::ephemeral().sign(&token()).unwrap();
        assert!(matches!(verify(&public, &other), Err(TokenError::BadSignature)));
        assert!(matches!(verify(&public, "garbage"), Err(TokenError::Malformed(_))));
        assert!(parse_public("short").is_err());
    }
}
