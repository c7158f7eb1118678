//! Test helpers: real Ed25519 devices that sign connects the way the node host does.

use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;

use super::identity::{device_id_for_public_key, encode_base64url, verify_device, SignedFields, VerifiedDevice};
use super::{
    ApproveOutcome, ConnectContext, ConnectDecision, ConnectOutcome, Credential, Grant, Locality, PairingBook,
    PairingEvent, PairingRequired, SilentApproval,
};
use crate::protocol::{ClientInfo, ConnectAuth, ConnectParams, DeviceProof, Role, Secret};
use crate::scope::{Scope, ScopeSet};

/// The challenge of trace §2.
pub const NONCE: &str = "c447e068-83de-45a5-9061-2a1396e195f3";
pub const NOW: u64 = 1_795_490_205_211;
pub const ADMIN_APPROVER: [Scope; 1] = [Scope::OperatorAdmin];

pub struct TestDevice {
    pub key: SigningKey,
    pub id: String,
    pub public_key: String,
}

impl TestDevice {
    pub fn random() -> Self {
        Self::from_key(SigningKey::generate(&mut OsRng))
    }

    pub fn from_seed(seed: u8) -> Self {
        Self::from_key(SigningKey::from_bytes(&[seed; 32]))
    }

    fn from_key(key: SigningKey) -> Self {
        let raw = key.verifying_key().to_bytes();
        TestDevice { id: device_id_for_public_key(&raw), public_key: encode_base64url(&raw), key }
    }

    /// Unsigned connect params of a node host (or operator) with this device.
    pub fn params(&self, role: Role, scopes: &[&str], auth: Option<ConnectAuth>) -> ConnectParams {
        ConnectParams {
            min_protocol: 4,
            max_protocol: 4,
            client: ClientInfo {
                id: "node-host".into(),
                display_name: Some("vm".into()),
                version: "2026.9.6".into(),
                platform: "linux".into(),
                device_family: Some("Linux".into()),
                mode: "node".into(),
                instance_id: None,
            },
            role,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            caps: None,
            commands: None,
            permissions: None,
            path_env: None,
            device: Some(DeviceProof {
                id: self.id.clone(),
                public_key: self.public_key.clone(),
                signature: String::new(),
                signed_at: NOW,
                nonce: Some(NONCE.into()),
            }),
            auth,
            locale: None,
            user_agent: None,
        }
    }

    /// Signs the v3 payload of `params` in place.
    pub fn sign_v3(&self, params: &mut ConnectParams) {
        self.sign_with(params, |fields| fields.v3());
    }

    pub fn sign_v2(&self, params: &mut ConnectParams) {
        self.sign_with(params, |fields| fields.v2());
    }

    fn sign_with(&self, params: &mut ConnectParams, payload: impl Fn(&SignedFields<'_>) -> String) {
        let Some(device) = params.device.clone() else {
            return;
        };
        let text = payload(&SignedFields::from_connect(params, &device));
        let signature = encode_base64url(&self.key.sign(text.as_bytes()).to_bytes());
        if let Some(device) = params.device.as_mut() {
            device.signature = signature;
        }
    }

    /// A signed, verified connect with the shared token.
    pub fn verified(&self, role: Role, scopes: &[&str]) -> VerifiedDevice {
        let auth = ConnectAuth { token: Some(Secret::new("shared")), ..ConnectAuth::default() };
        let mut params = self.params(role, scopes, Some(auth));
        self.sign_v3(&mut params);
        verify_device(&params, NONCE, NOW).expect("test device verifies")
    }
}

pub fn set(scopes: &[Scope]) -> ScopeSet {
    scopes.iter().copied().collect()
}

/// A shared-secret connect from a remote socket, no silent approval.
pub fn remote() -> ConnectContext<'static> {
    ConnectContext {
        credential: Credential::SharedSecret,
        locality: Locality::Remote,
        silent: SilentApproval::Off,
        remote_ip: Some("10.0.0.7"),
    }
}

pub fn required(outcome: ConnectOutcome) -> (PairingRequired, Vec<PairingEvent>) {
    match outcome.decision {
        ConnectDecision::PairingRequired(required) => (required, outcome.events),
        ConnectDecision::Allowed(grant) => panic!("expected pairing required, got {grant:?}"),
    }
}

pub fn allowed(outcome: ConnectOutcome) -> Grant {
    match outcome.decision {
        ConnectDecision::Allowed(grant) => grant,
        ConnectDecision::PairingRequired(required) => panic!("expected allowed, got {required:?}"),
    }
}

/// Pairs `device` for `role` with `scopes`, approved by an admin.
pub fn paired(book: &mut PairingBook, device: &TestDevice, role: Role, scopes: &[&str]) -> ApproveOutcome {
    let (req, _) = required(book.decide_connect(&device.verified(role, scopes), &remote(), NOW).unwrap());
    book.approve(&req.request.request_id, set(&ADMIN_APPROVER), NOW).unwrap()
}
