//! Identity checks with real Ed25519 keys, plus the trace's real keys (§3, §9).

use super::identity::*;
use super::testkit::{TestDevice, NONCE, NOW};
use crate::protocol::{ConnectAuth, Role, Secret};
use crate::scope::Scope;

fn signed(device: &TestDevice, auth: Option<ConnectAuth>) -> crate::protocol::ConnectParams {
    let mut params = device.params(Role::Node, &[], auth);
    device.sign_v3(&mut params);
    params
}

fn shared() -> Option<ConnectAuth> {
    Some(ConnectAuth { token: Some(Secret::new("shared-token")), ..ConnectAuth::default() })
}

#[test]
fn a_node_host_style_v3_signature_verifies() {
    let device = TestDevice::random();
    let verified = verify_device(&signed(&device, shared()), NONCE, NOW).unwrap();
    assert_eq!(verified.signature_version, SignatureVersion::V3);
    assert_eq!(verified.device_id, device.id);
    assert_eq!(verified.role, Role::Node);
    assert_eq!(verified.device_family.as_deref(), Some("Linux"));
}

#[test]
fn a_v2_signature_is_accepted_as_v2() {
    let device = TestDevice::random();
    let mut params = device.params(Role::Operator, &["operator.read", "operator.write"], shared());
    device.sign_v2(&mut params);
    let verified = verify_device(&params, NONCE, NOW).unwrap();
    assert_eq!(verified.signature_version, SignatureVersion::V2);
    assert_eq!(verified.requested_scope_names, vec!["operator.read", "operator.write"]);
    assert!(verified.requested_scopes.contains(Scope::OperatorWrite));
}

#[test]
fn the_signed_layout_matches_the_trace_capture() {
    // signature-check.jsonl, manual-approval conn 1, with the token and nonce placeholders.
    let scopes: Vec<String> = Vec::new();
    let fields = SignedFields {
        device_id: "ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89",
        client_id: "node-host",
        client_mode: "node",
        role: "node",
        scopes: &scopes,
        signed_at_ms: 1795490205211,
        token: "<token>",
        nonce: "<nonce>",
        platform: "linux",
        device_family: "Linux",
    };
    assert_eq!(
        fields.v3(),
        "v3|ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89|node-host|node|node||1795490205211|<token>|<nonce>|linux|linux"
    );
    assert_eq!(
        fields.v2(),
        "v2|ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89|node-host|node|node||1795490205211|<token>|<nonce>"
    );
}

#[test]
fn the_trace_device_ids_are_the_sha256_of_their_keys() {
    for (public_key, id) in [
        (
            "2Sp6H__LSUugvs4OLOYwZFVR96W8Hjs94iknYkH87Fs",
            "ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89",
        ),
        (
            "SQb2PeTenP4qnAeCI7TN8UMsnOZTCS0ows9sJuwkP6M",
            "c68c36ae7dfc29efa0a1d13418f12613a964a77d86e16a1839ef6fe0c987ad2e",
        ),
    ] {
        let raw = decode_base64url(public_key).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(device_id_for_public_key(&raw), id);
    }
}

#[test]
fn the_token_slot_takes_token_then_device_token_then_bootstrap() {
    let device = TestDevice::random();
    let cases = [
        (
            ConnectAuth { token: Some(Secret::new("t")), device_token: Some(Secret::new("d")), ..Default::default() },
            "t",
        ),
        (
            ConnectAuth {
                device_token: Some(Secret::new("d")),
                bootstrap_token: Some(Secret::new("b")),
                ..Default::default()
            },
            "d",
        ),
        (
            ConnectAuth {
                bootstrap_token: Some(Secret::new("b")),
                password: Some(Secret::new("p")),
                ..Default::default()
            },
            "b",
        ),
        (ConnectAuth { password: Some(Secret::new("p")), ..Default::default() }, ""),
    ];
    for (auth, expected) in cases {
        let params = signed(&device, Some(auth));
        assert_eq!(params.signed_token(), expected);
        assert!(verify_device(&params, NONCE, NOW).is_ok());
    }
    assert_eq!(signed(&device, None).signed_token(), "");
}

#[test]
fn platform_and_family_are_trimmed_and_lowercased_before_signing() {
    let device = TestDevice::random();
    let mut params = signed(&device, shared());
    params.client.platform = "  LINUX ".into();
    params.client.device_family = Some("linux".into());
    assert_eq!(verify_device(&params, NONCE, NOW).map(|v| v.signature_version), Ok(SignatureVersion::V3));
    params.client.platform = "darwin".into();
    assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::SignatureInvalid));
}

#[test]
fn a_device_id_that_is_not_the_key_hash_is_refused() {
    let device = TestDevice::random();
    let other = TestDevice::random();
    let mut params = signed(&device, shared());
    if let Some(d) = params.device.as_mut() {
        d.id = other.id.clone();
    }
    assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::IdentityMismatch));
    if let Some(d) = params.device.as_mut() {
        d.id = device.id.to_uppercase();
    }
    assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::IdentityMismatch));
}

#[test]
fn a_key_that_is_not_32_bytes_of_base64url_is_invalid() {
    let device = TestDevice::random();
    for bad in ["not base64!", "AAAA", ""] {
        let mut params = signed(&device, shared());
        if let Some(d) = params.device.as_mut() {
            d.public_key = bad.into();
        }
        assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::PublicKeyInvalid));
    }
}

#[test]
fn signed_at_must_be_within_two_minutes_either_way() {
    let device = TestDevice::random();
    let params = signed(&device, shared());
    assert!(verify_device(&params, NONCE, NOW + MAX_SIGNATURE_SKEW_MS).is_ok());
    assert!(verify_device(&params, NONCE, NOW - MAX_SIGNATURE_SKEW_MS).is_ok());
    assert_eq!(verify_device(&params, NONCE, NOW + MAX_SIGNATURE_SKEW_MS + 1), Err(DeviceAuthError::SignatureExpired));
    assert_eq!(verify_device(&params, NONCE, NOW - MAX_SIGNATURE_SKEW_MS - 1), Err(DeviceAuthError::SignatureExpired));
}

#[test]
fn the_nonce_must_be_present_and_be_the_challenge() {
    let device = TestDevice::random();
    let params = signed(&device, shared());
    assert_eq!(verify_device(&params, "another-nonce", NOW), Err(DeviceAuthError::NonceMismatch));
    for missing in [None, Some(String::new()), Some("  ".to_string())] {
        let mut params = params.clone();
        if let Some(d) = params.device.as_mut() {
            d.nonce = missing;
        }
        assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::NonceRequired));
    }
}

#[test]
fn a_signature_over_other_fields_or_garbage_is_invalid() {
    let device = TestDevice::random();
    let mut params = signed(&device, shared());
    params.scopes = vec!["operator.admin".into()];
    assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::SignatureInvalid));
    let mut params = signed(&device, shared());
    params.auth = Some(ConnectAuth { token: Some(Secret::new("other")), ..ConnectAuth::default() });
    assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::SignatureInvalid));
    for garbage in ["", "%%%", "AAAA"] {
        let mut params = signed(&device, shared());
        if let Some(d) = params.device.as_mut() {
            d.signature = garbage.into();
        }
        assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::SignatureInvalid));
    }
}

#[test]
fn checks_run_in_order_identity_then_time_then_nonce_then_signature() {
    let device = TestDevice::random();
    let mut params = signed(&device, shared());
    params.scopes = vec!["tampered".into()];
    assert_eq!(
        verify_device(&params, "wrong", NOW + 10 * MAX_SIGNATURE_SKEW_MS),
        Err(DeviceAuthError::SignatureExpired)
    );
    assert_eq!(verify_device(&params, "wrong", NOW), Err(DeviceAuthError::NonceMismatch));
    if let Some(d) = params.device.as_mut() {
        d.id = "00".repeat(32);
    }
    assert_eq!(
        verify_device(&params, "wrong", NOW + 10 * MAX_SIGNATURE_SKEW_MS),
        Err(DeviceAuthError::IdentityMismatch)
    );
}

#[test]
fn a_connect_without_device_block_is_missing_identity() {
    let device = TestDevice::random();
    let mut params = signed(&device, shared());
    params.device = None;
    assert_eq!(verify_device(&params, NONCE, NOW), Err(DeviceAuthError::Missing));
}

#[test]
fn failures_carry_openclaw_codes_reasons_and_close_1008() {
    let cases = [
        (
            DeviceAuthError::IdentityMismatch,
            "device identity mismatch",
            "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            "device-id-mismatch",
        ),
        (
            DeviceAuthError::SignatureExpired,
            "device signature expired",
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device-signature-stale",
        ),
        (DeviceAuthError::NonceRequired, "device nonce required", "DEVICE_AUTH_NONCE_REQUIRED", "device-nonce-missing"),
        (
            DeviceAuthError::NonceMismatch,
            "device nonce mismatch",
            "DEVICE_AUTH_NONCE_MISMATCH",
            "device-nonce-mismatch",
        ),
        (
            DeviceAuthError::SignatureInvalid,
            "device signature invalid",
            "DEVICE_AUTH_SIGNATURE_INVALID",
            "device-signature",
        ),
        (
            DeviceAuthError::PublicKeyInvalid,
            "device public key invalid",
            "DEVICE_AUTH_PUBLIC_KEY_INVALID",
            "device-public-key",
        ),
    ];
    for (error, message, code, reason) in cases {
        let shape = error.to_error_shape();
        assert_eq!(
            serde_json::to_value(&shape).unwrap(),
            serde_json::json!({"code": "INVALID_REQUEST", "message": message, "details": {"code": code, "reason": reason}})
        );
        assert_eq!((error.close().code, error.close().reason.as_str()), (1008, message));
    }
}
