//! The device pairing rules, driven without any runtime.

use super::testkit::{allowed, paired, remote, required, set, TestDevice, ADMIN_APPROVER, NOW};
use super::*;
use crate::protocol::{Decision, PairingReason, Role};
use crate::scope::{Scope, ScopeSet};

const READ: &str = "operator.read";
const WRITE: &str = "operator.write";

#[test]
fn an_unknown_device_gets_a_not_paired_request_and_a_requested_event() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let (req, events) = required(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap());
    assert_eq!(req.reason, PairingReason::NotPaired);
    assert!(req.created);
    assert_eq!(req.request.device_id, device.id);
    assert_eq!(req.request.remote_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name(), "device.pair.requested");
    assert_eq!(events[0].audience(), Audience::PairingOperators);
    let shape = serde_json::to_value(req.to_error_shape()).unwrap();
    assert_eq!(
        shape,
        serde_json::json!({
            "code": "NOT_PAIRED",
            "message": "pairing required: device is not approved yet",
            "retryable": true,
            "details": {
                "code": "PAIRING_REQUIRED", "reason": "not-paired", "requestId": req.request.request_id,
                "recommendedNextStep": "wait_then_retry", "pauseReconnect": false,
                "remediationHint": "Approve this device from the pending pairing requests.",
                "deviceId": device.id, "requestedRole": "node"
            }
        })
    );
    let close = req.close();
    assert_eq!(close.code, 1008);
    assert_eq!(
        close.reason,
        format!("pairing required: device is not approved yet (requestId: {})", req.request.request_id)
    );
}

#[test]
fn the_same_ask_refreshes_the_request_and_a_different_one_supersedes_it() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let (first, _) = required(book.decide_connect(&device.verified(Role::Operator, &[READ]), &remote(), NOW).unwrap());
    let (again, events) =
        required(book.decide_connect(&device.verified(Role::Operator, &[READ]), &remote(), NOW + 1_000).unwrap());
    assert_eq!(again.request.request_id, first.request.request_id);
    assert_eq!(again.request.ts, NOW + 1_000);
    assert!(!again.created && events.is_empty());

    let (wider, events) = required(
        book.decide_connect(&device.verified(Role::Operator, &[READ, WRITE]), &remote(), NOW + 2_000).unwrap(),
    );
    assert_ne!(wider.request.request_id, first.request.request_id);
    assert_eq!(wider.superseded.as_deref(), Some(first.request.request_id.as_str()));
    assert_eq!(wider.request.scopes, set(&[Scope::OperatorRead, Scope::OperatorWrite]));
    assert_eq!(events.len(), 1);
    assert!(book.pending_request(&first.request.request_id).is_none());

    let (as_node, _) =
        required(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW + 3_000).unwrap());
    assert_ne!(as_node.request.request_id, wider.request.request_id);
    assert_eq!(book.device_pair_list(NOW + 3_000).pending.len(), 1);
}

#[test]
fn pending_requests_expire_five_minutes_after_the_last_retry() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let verified = device.verified(Role::Node, &[]);
    let (first, _) = required(book.decide_connect(&verified, &remote(), NOW).unwrap());
    let (kept, _) = required(book.decide_connect(&verified, &remote(), NOW + 4 * 60_000).unwrap());
    assert_eq!(kept.request.request_id, first.request.request_id);
    let late = NOW + 4 * 60_000 + PENDING_TTL_MS + 1;
    assert!(book.device_pair_list(late).pending.is_empty());
    assert_eq!(
        book.approve(&first.request.request_id, set(&ADMIN_APPROVER), late).unwrap_err(),
        PairingError::UnknownRequest
    );
    let (fresh, _) = required(book.decide_connect(&verified, &remote(), late).unwrap());
    assert_ne!(fresh.request.request_id, first.request.request_id);
}

#[test]
fn approving_a_node_needs_only_pairing_and_mints_a_token_stored_as_a_hash() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let (req, _) = required(book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap());
    let denied = book.approve(&req.request.request_id, set(&[Scope::OperatorRead]), NOW).unwrap_err();
    assert_eq!(denied, PairingError::ApprovalDenied { missing: Scope::OperatorPairing });
    let outcome = book.approve(&req.request.request_id, set(&[Scope::OperatorPairing]), NOW + 5).unwrap();
    assert_eq!(outcome.device.roles.iter().copied().collect::<Vec<_>>(), vec![Role::Node]);
    assert_eq!(outcome.device.approved_via, ApprovedVia::Owner);
    let token = outcome.issued.expect("a node token is minted");
    assert_eq!(token.token.expose().len(), 43);
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(
        outcome.events[0],
        PairingEvent::DevicePairResolved(crate::protocol::DevicePairResolved {
            request_id: req.request.request_id.clone(),
            device_id: device.id.clone(),
            decision: Decision::Approved,
            ts: NOW + 5,
        })
    );
    assert!(book.verify_device_token(&device.id, Role::Node, token.token.expose()).is_ok());
    let exported = serde_json::to_string(&book.export()).unwrap();
    assert!(!exported.contains(token.token.expose()), "only hashes are stored");
    let row = book.device_row(&device.id, NOW).unwrap();
    assert_eq!(row.tokens.len(), 1);
    assert_eq!(row.approved_via.as_deref(), Some("owner"));
}

#[test]
fn approval_denied_names_the_missing_scope_and_keeps_the_request() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let (req, _) =
        required(book.decide_connect(&device.verified(Role::Operator, &[READ, WRITE]), &remote(), NOW).unwrap());
    let approver = set(&[Scope::OperatorPairing, Scope::OperatorRead]);
    let err = book.approve(&req.request.request_id, approver, NOW).unwrap_err();
    assert_eq!(err, PairingError::ApprovalDenied { missing: Scope::OperatorWrite });
    assert!(err.to_string().contains("device pairing approval denied"), "the cli retries with admin on this text");
    assert!(err.to_string().contains("operator.write"));
    assert_eq!(err.to_error_shape().code, "INVALID_REQUEST");
    assert!(book.pending_request(&req.request.request_id).is_some());
    let ok = book.approve(&req.request.request_id, set(&[Scope::OperatorPairing, Scope::OperatorWrite]), NOW);
    assert!(ok.is_ok(), "write satisfies read");
}

#[test]
fn unknown_request_ids_use_openclaws_text() {
    let mut book = PairingBook::default();
    let err = book.approve("nope", ScopeSet::all(), NOW).unwrap_err();
    assert_eq!(err.to_string(), "unknown requestId");
    assert_eq!(book.reject("nope", NOW).unwrap_err(), PairingError::UnknownRequest);
}

#[test]
fn scope_upgrades_wait_while_the_old_grant_keeps_working() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired(&mut book, &device, Role::Operator, &[READ]);
    let first = allowed(book.decide_connect(&device.verified(Role::Operator, &[READ]), &remote(), NOW).unwrap());
    let token = first.device_token.unwrap();

    let (req, _) =
        required(book.decide_connect(&device.verified(Role::Operator, &[READ, WRITE]), &remote(), NOW).unwrap());
    assert_eq!(req.reason, PairingReason::ScopeUpgrade);
    assert!(book.device_pair_list(NOW).pending[0].is_repair);
    let old = allowed(book.decide_connect(&device.verified(Role::Operator, &[READ]), &remote(), NOW + 1).unwrap());
    assert_eq!(old.scopes, set(&[Scope::OperatorRead]));

    let outcome =
        book.approve(&req.request.request_id, set(&[Scope::OperatorPairing, Scope::OperatorWrite]), NOW + 2).unwrap();
    assert!(outcome.issued.is_none(), "the live operator token keeps working");
    assert_eq!(outcome.device.scopes, set(&[Scope::OperatorRead, Scope::OperatorWrite]));
    let grant = book.verify_device_token(&device.id, Role::Operator, token.token.expose()).unwrap();
    assert_eq!(grant.scopes, set(&[Scope::OperatorRead, Scope::OperatorWrite]));
    let ctx = ConnectContext { credential: Credential::DeviceToken(token.token.expose()), ..remote() };
    let upgraded =
        allowed(book.decide_connect(&device.verified(Role::Operator, &[WRITE, READ]), &ctx, NOW + 3).unwrap());
    assert_eq!(upgraded.scope_names, vec![WRITE, READ], "names keep the request order");
}

#[test]
fn grants_never_exceed_the_approved_set_and_unknown_scopes_are_ignored() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired(&mut book, &device, Role::Operator, &["operator.admin"]);
    let grant = allowed(
        book.decide_connect(&device.verified(Role::Operator, &[READ, "operator.talk.secrets"]), &remote(), NOW)
            .unwrap(),
    );
    assert_eq!(grant.scopes, set(&[Scope::OperatorRead]), "admin satisfies read; unknown names are dropped");
    assert_eq!(grant.scope_names, vec![READ]);

    let other = TestDevice::random();
    paired(&mut book, &other, Role::Operator, &[READ]);
    let (req, _) =
        required(book.decide_connect(&other.verified(Role::Operator, &["operator.admin"]), &remote(), NOW).unwrap());
    assert_eq!(req.reason, PairingReason::ScopeUpgrade);
}

#[test]
fn role_and_metadata_changes_need_approval() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired(&mut book, &device, Role::Node, &[]);
    let (req, _) = required(book.decide_connect(&device.verified(Role::Operator, &[]), &remote(), NOW).unwrap());
    assert_eq!(req.reason, PairingReason::RoleUpgrade);
    assert_eq!(req.details().requested_role, Some(Role::Operator));

    let mut moved = device.verified(Role::Node, &[]);
    moved.device_family = Some(" LINUX ".into());
    assert!(matches!(book.decide_connect(&moved, &remote(), NOW).unwrap().decision, ConnectDecision::Allowed(_)));
    moved.platform = Some("darwin".into());
    let (req, _) = required(book.decide_connect(&moved, &remote(), NOW).unwrap());
    assert_eq!(req.reason, PairingReason::MetadataUpgrade);
    book.approve(&req.request.request_id, set(&[Scope::OperatorPairing]), NOW).unwrap();
    assert_eq!(book.device(&device.id).unwrap().platform.as_deref(), Some("darwin"));
}

#[test]
fn silent_approval_is_only_for_direct_loopback_when_enabled() {
    let device = TestDevice::random();
    let verified = device.verified(Role::Node, &[]);
    let local = |silent| ConnectContext { locality: Locality::DirectLoopback, silent, ..remote() };

    let mut book = PairingBook::default();
    let remote_on = ConnectContext { silent: SilentApproval::LocalOnly, ..remote() };
    required(book.decide_connect(&verified, &remote_on, NOW).unwrap());
    required(book.decide_connect(&verified, &local(SilentApproval::Off), NOW).unwrap());

    let outcome = book.decide_connect(&verified, &local(SilentApproval::LocalOnly), NOW).unwrap();
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(outcome.events[0].name(), "device.pair.resolved");
    let grant = allowed(outcome);
    assert!(grant.device_token.is_some());
    assert_eq!(book.device(&device.id).unwrap().approved_via, ApprovedVia::Silent);
    assert!(book.device_pair_list(NOW).pending.is_empty(), "the pending request was resolved");
}
