//! Token delivery, rotation, revocation, removal, rejection and state export.

use super::testkit::{allowed, paired, remote, required, TestDevice, NOW};
use super::*;
use crate::protocol::{AuthMethod, Decision, PairingReason, Role};
use crate::scope::ScopeSet;

const READ: &str = "operator.read";

fn pairing() -> ScopeSet {
    ScopeSet::EMPTY.with(crate::scope::Scope::OperatorPairing)
}

#[test]
fn hello_tokens_are_fresh_when_undelivered_echoed_when_presented_and_omitted_otherwise() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let approved = paired(&mut book, &device, Role::Node, &[]);
    let minted_at_approval = approved.issued.unwrap();

    let first = allowed(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW + 10).unwrap());
    assert_eq!(first.auth_method, AuthMethod::Token);
    let delivered = first.device_token.clone().expect("undelivered token is replaced and sent");
    assert_ne!(delivered.token.expose(), minted_at_approval.token.expose());
    assert!(book.verify_device_token(&device.id, Role::Node, minted_at_approval.token.expose()).is_err());
    let auth = serde_json::to_value(first.hello_auth()).unwrap();
    assert_eq!(auth["method"], "token");
    assert_eq!(auth["role"], "node");
    assert_eq!(auth["deviceToken"], delivered.token.expose());
    assert_eq!(auth["issuedAtMs"], NOW + 10);

    let second = allowed(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW + 20).unwrap());
    assert!(second.device_token.is_none(), "a delivered token is not resent");

    let ctx = ConnectContext { credential: Credential::DeviceToken(delivered.token.expose()), ..remote() };
    let third = allowed(book.decide_connect(&device.verified(Role::Node, &[]), &ctx, NOW + 30).unwrap());
    assert_eq!(third.auth_method, AuthMethod::DeviceToken);
    assert_eq!(third.device_token.map(|t| t.token.expose().to_string()), Some(delivered.token.expose().to_string()));
    assert_eq!(third.scopes, ScopeSet::EMPTY);
}

#[test]
fn a_wrong_device_token_is_an_auth_error_not_a_pairing_request() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let ctx = ConnectContext { credential: Credential::DeviceToken("forged"), ..remote() };
    let err = book.decide_connect(&device.verified(Role::Node, &[]), &ctx, NOW).unwrap_err();
    assert_eq!(err, PairingError::DeviceTokenMismatch);
    assert_eq!(err.to_error_shape().detail_code(), Some("AUTH_DEVICE_TOKEN_MISMATCH"));
    paired(&mut book, &device, Role::Node, &[]);
    assert!(book.decide_connect(&device.verified(Role::Node, &[]), &ctx, NOW).is_err());
    assert!(book.device_pair_list(NOW).pending.is_empty());
}

#[test]
fn rotate_replaces_and_revoke_kills_the_token() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired(&mut book, &device, Role::Node, &[]);
    let token =
        allowed(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap()).device_token.unwrap();
    let rotated = book.rotate_token(&device.id, Role::Node, pairing(), NOW + 1).unwrap();
    assert!(book.verify_device_token(&device.id, Role::Node, token.token.expose()).is_err());
    assert_eq!(book.verify_device_token(&device.id, Role::Node, rotated.token.expose()).unwrap().issued_at_ms, NOW + 1);
    assert_eq!(
        book.rotate_token(&device.id, Role::Operator, pairing(), NOW).unwrap_err(),
        PairingError::RoleNotApproved { device_id: device.id.clone(), role: Role::Operator }
    );

    let revoked = book.revoke_token(&device.id, Role::Node, pairing(), NOW + 2).unwrap();
    assert_eq!(revoked, RevokeOutcome { device_id: device.id.clone(), role: Role::Node, revoked_at_ms: NOW + 2 });
    assert!(book.verify_device_token(&device.id, Role::Node, rotated.token.expose()).is_err());
    assert!(matches!(book.revoke_token(&device.id, Role::Node, pairing(), NOW), Err(PairingError::NoLiveToken { .. })));
    let grant = allowed(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW + 3).unwrap());
    assert!(grant.device_token.is_none(), "no new token after a revoke until a rotate");
    assert_eq!(book.device_row(&device.id, NOW).unwrap().tokens[0].revoked_at_ms, Some(NOW + 2));
}

#[test]
fn reject_and_remove() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let (req, _) = required(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap());
    let rejected = book.reject(&req.request.request_id, NOW + 1).unwrap();
    assert_eq!(rejected.events[0].name(), "device.pair.resolved");
    assert!(matches!(&rejected.events[0], PairingEvent::DevicePairResolved(r) if r.decision == Decision::Rejected));
    assert!(book.device_pair_list(NOW).pending.is_empty());

    paired(&mut book, &device, Role::Node, &[]);
    let removed = book.remove_device(&device.id, pairing()).unwrap();
    assert_eq!(removed.revoked_roles, vec![Role::Node]);
    assert!(book.device(&device.id).is_none());
    let (again, _) = required(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap());
    assert_eq!(again.reason, PairingReason::NotPaired);
    assert!(matches!(book.remove_device("nope", pairing()), Err(PairingError::UnknownDevice { .. })));
}

#[test]
fn token_and_device_management_needs_every_scope_of_the_grant() {
    use crate::scope::Scope;
    let mut book = PairingBook::default();
    let admin_device = TestDevice::random();
    paired(&mut book, &admin_device, Role::Operator, &["operator.admin"]);
    let id = &admin_device.id;
    let denied = PairingError::ApprovalDenied { missing: Scope::OperatorAdmin };
    assert_eq!(book.rotate_token(id, Role::Operator, pairing(), NOW).unwrap_err(), denied);
    assert_eq!(book.revoke_token(id, Role::Operator, pairing(), NOW).unwrap_err(), denied);
    assert_eq!(book.remove_device(id, pairing()).unwrap_err(), denied);
    assert!(book.device(id).is_some() && book.verify_device_token(id, Role::Operator, "x").is_err());
    let no_pairing = ScopeSet::EMPTY.with(Scope::OperatorRead);
    assert_eq!(
        book.remove_device(id, no_pairing).unwrap_err(),
        PairingError::ApprovalDenied { missing: Scope::OperatorPairing }
    );
    let admin = pairing().with(Scope::OperatorAdmin);
    book.rotate_token(id, Role::Operator, admin, NOW).unwrap();
    book.revoke_token(id, Role::Operator, admin, NOW).unwrap();
    book.remove_device(id, admin).unwrap();
}

#[test]
fn the_whole_state_exports_and_imports_through_json() {
    let mut book = PairingBook::default();
    let a = TestDevice::random();
    let b = TestDevice::random();
    paired(&mut book, &a, Role::Operator, &[READ]);
    required(book.decide_connect(&b.verified(Role::Node, &[]), &remote(), NOW).unwrap());
    let state = book.export();
    let json = serde_json::to_string(&state).unwrap();
    let back: PairingState = serde_json::from_str(&json).unwrap();
    let restored = PairingBook::import(back, NodeCommandPolicy::default()).unwrap();
    assert_eq!(restored.export(), state);
    assert_eq!(restored.device_pair_list(NOW), book.device_pair_list(NOW));

    let mut bad = state.clone();
    bad.version = 9;
    assert!(matches!(PairingBook::import(bad, NodeCommandPolicy::default()), Err(PairingError::InvalidState(_))));
    let mut dup = state.clone();
    dup.devices.push(dup.devices[0].clone());
    assert!(PairingBook::import(dup, NodeCommandPolicy::default()).is_err());
    let mut orphan = state;
    orphan.devices.clear();
    let err = PairingBook::import(orphan, NodeCommandPolicy::default()).unwrap_err();
    assert!(err.to_string().starts_with("invalid pairing state: token for"));
}

#[test]
fn pairing_events_become_event_frames_without_seq() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let (_, events) = required(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap());
    let frame = events[0].to_frame().unwrap();
    assert_eq!(frame.event, "device.pair.requested");
    assert_eq!(frame.seq, None);
    let payload = frame.payload.unwrap();
    assert_eq!(payload["deviceId"], device.id);
    assert_eq!(payload["roles"], serde_json::json!(["node"]));
    assert_eq!(payload["isRepair"], false);
}
