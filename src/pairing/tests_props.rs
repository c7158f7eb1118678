//! Property tests: approval never grants a scope the approver lacks, grants never
//! exceed the approved set, and a pending request never widens in place.

use std::collections::HashMap;

use proptest::prelude::*;

use super::testkit::{remote, TestDevice, NOW};
use super::*;
use crate::protocol::Role;
use crate::scope::{Scope, ScopeSet};

/// The scopes whose bits are set, of the first eight.
fn scope_set(bits: u8) -> ScopeSet {
    Scope::ALL.iter().take(8).enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| *s).collect()
}

fn names(set: ScopeSet) -> Vec<&'static str> {
    set.iter().map(Scope::as_str).collect()
}

#[derive(Clone, Debug)]
enum Op {
    Connect { device: usize, node: bool, scopes: u8 },
    Approve { pick: usize, approver: u8 },
    Reject { pick: usize },
}

fn op() -> impl Strategy<Value = (Op, u64)> {
    let op = prop_oneof![
        3 => (0..3usize, any::<bool>(), any::<u8>()).prop_map(|(device, node, scopes)| Op::Connect { device, node, scopes }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, approver)| Op::Approve { pick, approver }),
        1 => any::<usize>().prop_map(|pick| Op::Reject { pick }),
    ];
    (op, 0..200_000u64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn approval_never_grants_a_scope_the_approver_lacks(initial in any::<u8>(), wanted in any::<u8>(), approver in any::<u8>(), pre_paired in any::<bool>()) {
        let mut book = PairingBook::default();
        let device = TestDevice::from_seed(7);
        let approver = scope_set(approver);
        if pre_paired {
            let outcome = book.decide_connect(&device.verified(Role::Operator, &names(scope_set(initial))), &remote(), NOW).unwrap();
            if let ConnectDecision::PairingRequired(req) = outcome.decision {
                book.approve(&req.request.request_id, ScopeSet::all(), NOW).unwrap();
            }
        }
        let before = book.device(&device.id).map(|d| d.scopes).unwrap_or_default();
        let outcome = book.decide_connect(&device.verified(Role::Operator, &names(scope_set(wanted))), &remote(), NOW).unwrap();
        let ConnectDecision::PairingRequired(req) = outcome.decision else {
            // Allowed: the request was already covered; nothing to approve.
            prop_assert!(scope_set(wanted).iter().all(|s| before.satisfies(s)));
            return Ok(());
        };
        match book.approve(&req.request.request_id, approver, NOW) {
            Ok(outcome) => {
                let added = outcome.device.scopes.minus(before);
                prop_assert!(added.iter().all(|s| approver.satisfies(s)), "granted {added:?} beyond approver {approver:?}");
                prop_assert!(approver.satisfies(Scope::OperatorPairing));
            }
            Err(PairingError::ApprovalDenied { missing }) => {
                prop_assert!(!approver.satisfies(missing));
                prop_assert_eq!(book.device(&device.id).map(|d| d.scopes).unwrap_or_default(), before);
                prop_assert!(book.pending_request(&req.request.request_id).is_some());
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn pending_requests_never_widen_and_grants_stay_within_approval(ops in proptest::collection::vec(op(), 1..30)) {
        let devices: Vec<TestDevice> = (1..=3).map(TestDevice::from_seed).collect();
        let mut book = PairingBook::default();
        let mut asked: HashMap<String, (String, Role, ScopeSet)> = HashMap::new();
        let mut now = NOW;
        for (op, delta) in ops {
            now += delta;
            match op {
                Op::Connect { device, node, scopes } => {
                    let role = if node { Role::Node } else { Role::Operator };
                    let verified = devices[device].verified(role, &names(scope_set(scopes)));
                    let outcome = book.decide_connect(&verified, &remote(), now).unwrap();
                    match outcome.decision {
                        ConnectDecision::Allowed(grant) => {
                            let approved = book.device(&verified.device_id).map(|d| d.scopes).unwrap_or_default();
                            prop_assert!(grant.scopes.iter().all(|s| approved.satisfies(s)));
                            prop_assert!(grant.scopes.is_subset_of(verified.requested_scopes));
                        }
                        ConnectDecision::PairingRequired(req) => {
                            prop_assert_eq!(req.request.scopes, verified.requested_scopes);
                            let entry = (verified.device_id.clone(), role, verified.requested_scopes);
                            let first = asked.entry(req.request.request_id.clone()).or_insert_with(|| entry.clone());
                            prop_assert_eq!(&*first, &entry, "request {} changed its ask", req.request.request_id);
                        }
                    }
                }
                Op::Approve { pick, approver } => {
                    book.expire(now);
                    let pending = book.export().pending;
                    if let Some(request) = pending.get(pick % pending.len().max(1)) {
                        let approver = scope_set(approver);
                        let before = book.device(&request.device_id).map(|d| d.scopes).unwrap_or_default();
                        if let Ok(outcome) = book.approve(&request.request_id, approver, now) {
                            prop_assert!(outcome.device.scopes.minus(before).iter().all(|s| approver.satisfies(s)));
                        }
                    }
                }
                Op::Reject { pick } => {
                    book.expire(now);
                    let pending = book.export().pending;
                    if let Some(request) = pending.get(pick % pending.len().max(1)) {
                        book.reject(&request.request_id, now).unwrap();
                    }
                }
            }
            for request in book.export().pending {
                let recorded = asked.get(&request.request_id);
                prop_assert_eq!(recorded, Some(&(request.device_id.clone(), request.role, request.scopes)));
            }
            let per_device = book.export().pending.iter().map(|p| p.device_id.clone()).collect::<std::collections::HashSet<_>>();
            prop_assert_eq!(per_device.len(), book.export().pending.len(), "one pending request per device");
        }
    }
}
