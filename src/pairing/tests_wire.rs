//! The book's wire rows against the rows OpenClaw sent in the trace: ids, keys and
//! times are copied over from the capture, then the whole values must be equal.

use serde_json::{json, Value};

use super::testkit::{TestDevice, NOW};
use super::*;
use crate::protocol::Role;
use crate::scope::Scope;

fn fixture(text: &str) -> Value {
    serde_json::from_str::<Value>(text).unwrap()["frame"]["payload"].clone()
}

fn local_no_ip() -> ConnectContext<'static> {
    ConnectContext { remote_ip: None, ..super::testkit::remote() }
}

fn with(mut ours: Value, trace: &Value, keys: &[&str]) -> Value {
    for key in keys {
        ours[*key] = trace[*key].clone();
    }
    ours
}

#[test]
fn device_rows_match_the_trace() {
    let pending_list = fixture(include_str!("../../tests/fixtures/good_res_device_pair_list_pending.json"));
    let approved = fixture(include_str!("../../tests/fixtures/good_res_device_pair_approve.json"));
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let outcome = book.decide_connect(&device.verified(Role::Node, &[]), &local_no_ip(), NOW).unwrap();
    let ConnectDecision::PairingRequired(req) = outcome.decision else { panic!("expected pairing required") };

    let ours = serde_json::to_value(book.device_pair_list(NOW)).unwrap();
    let trace_row = &pending_list["pending"][0];
    let row = with(ours["pending"][0].clone(), trace_row, &["requestId", "deviceId", "publicKey", "ts"]);
    assert_eq!(json!({"pending": [row], "paired": []}), pending_list);

    let outcome = book.approve(&req.request.request_id, [Scope::OperatorPairing].into_iter().collect(), NOW).unwrap();
    let ours = serde_json::to_value(book.device_row(&device.id, NOW).unwrap()).unwrap();
    let trace_device = &approved["device"];
    let mut row = with(ours, trace_device, &["deviceId", "publicKey", "createdAtMs", "approvedAtMs", "tokens"]);
    assert_eq!(row["tokens"][0]["role"], "node");
    row.as_object_mut().unwrap().remove("lastSeenAtMs");
    assert_eq!(json!({"requestId": approved["requestId"], "device": row}), approved);
    assert_eq!(outcome.events[0].name(), "device.pair.resolved");
}

#[test]
fn node_rows_match_the_trace() {
    let list = fixture(include_str!("../../tests/fixtures/good_res_node_pair_list.json"));
    let approved = fixture(include_str!("../../tests/fixtures/good_res_node_pair_approve.json"));
    let connect: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/good_connect_node_shared_token.json")).unwrap();
    let params: crate::protocol::ConnectParams = serde_json::from_value(connect["frame"]["params"].clone()).unwrap();

    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let outcome = book.decide_connect(&device.verified(Role::Node, &[]), &local_no_ip(), NOW).unwrap();
    let ConnectDecision::PairingRequired(req) = outcome.decision else { panic!("expected pairing required") };
    book.approve(&req.request.request_id, [Scope::OperatorPairing].into_iter().collect(), NOW).unwrap();
    let declaration = book.node_policy().declaration(&device.id, &params, None);
    let request_id = match book.declare_node_surface(declaration, NOW).unwrap().status {
        NodeSurfaceStatus::Pending { request_id } => request_id,
        other => panic!("expected pending, got {other:?}"),
    };

    let ours = serde_json::to_value(book.node_pair_list(NOW)).unwrap();
    let row = with(ours["pending"][0].clone(), &list["pending"][0], &["requestId", "nodeId", "ts"]);
    assert_eq!(json!({"pending": [row], "paired": []}), list);

    let outcome = book.approve_node(&request_id, Scope::ALL.into_iter().collect(), NOW).unwrap();
    let ours = serde_json::to_value(outcome.node.to_row()).unwrap();
    let trace_node = &approved["node"];
    let row = with(ours, trace_node, &["nodeId", "createdAtMs", "approvedAtMs", "lastSeenAtMs", "lastSeenReason"]);
    assert_eq!(json!({"requestId": approved["requestId"], "node": row}), approved);
}
