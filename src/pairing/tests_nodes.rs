//! Node command-surface approval (trace §5.2, §5.3, §9).

use std::collections::BTreeSet;

use super::testkit::{remote, set, TestDevice, NOW};
use super::*;
use crate::protocol::{ConnectParams, Decision, Role};
use crate::scope::Scope;

/// The 21 commands the node host declared (trace §3).
const DECLARED: [&str; 21] = [
    "browser.proxy",
    "browser.proxy.upload.v1",
    "desktop.stream",
    "dir.fetch",
    "dir.list",
    "file.create",
    "file.fetch",
    "file.stat",
    "file.write",
    "fs.listDir",
    "mcp.tools.call.v1",
    "ollama.chat",
    "ollama.models",
    "system.execApprovals.get",
    "system.execApprovals.set",
    "system.run",
    "system.run.prepare",
    "system.which",
    "terminal.upload",
    "workspace.memory",
    "workspace.skills",
];

/// The 13 the gateway kept (trace §5.2).
const KEPT: [&str; 13] = [
    "browser.proxy",
    "browser.proxy.upload.v1",
    "desktop.stream",
    "fs.listDir",
    "mcp.tools.call.v1",
    "ollama.chat",
    "ollama.models",
    "system.execApprovals.get",
    "system.execApprovals.set",
    "system.run",
    "system.run.prepare",
    "system.which",
    "terminal.upload",
];

fn node_params(device: &TestDevice, commands: &[&str]) -> ConnectParams {
    let mut params = device.params(Role::Node, &[], None);
    params.caps = Some(["browser", "file", "local-inference", "mcp", "system"].map(String::from).to_vec());
    params.commands = Some(commands.iter().map(|c| c.to_string()).collect());
    params
}

fn paired_node(book: &mut PairingBook, device: &TestDevice) {
    let outcome = book.decide_connect(&device.verified(Role::Node, &[]), &remote(), NOW).unwrap();
    let ConnectDecision::PairingRequired(req) = outcome.decision else { panic!("expected pairing required") };
    book.approve(&req.request.request_id, set(&[Scope::OperatorPairing]), NOW).unwrap();
}

fn declare(book: &mut PairingBook, device: &TestDevice, commands: &[&str], now: u64) -> NodeSurfaceOutcome {
    let declaration = book.node_policy().clone().declaration(&device.id, &node_params(device, commands), None);
    book.declare_node_surface(declaration, now).unwrap()
}

fn pending_id(status: &NodeSurfaceStatus) -> String {
    match status {
        NodeSurfaceStatus::Pending { request_id } => request_id.clone(),
        NodeSurfaceStatus::Approved { pending_request_id: Some(id) } => id.clone(),
        other => panic!("expected a pending surface, got {other:?}"),
    }
}

#[test]
fn the_default_policy_keeps_the_thirteen_commands_of_the_trace() {
    let device = TestDevice::random();
    let declaration =
        NodeCommandPolicy::default().declaration(&device.id, &node_params(&device, &DECLARED), Some("127.0.0.1"));
    let kept: BTreeSet<String> = KEPT.iter().map(|c| c.to_string()).collect();
    assert_eq!(declaration.commands, kept);
    assert_eq!(
        NodeCommandPolicy::default().required_approve_scopes(&declaration.commands),
        vec![Scope::OperatorPairing, Scope::OperatorAdmin]
    );
    assert_eq!(
        NodeCommandPolicy::allow_all().declaration(&device.id, &node_params(&device, &DECLARED), None).commands.len(),
        21
    );
}

#[test]
fn a_declared_surface_is_pending_until_an_admin_approves_it() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired_node(&mut book, &device);
    let outcome = declare(&mut book, &device, &DECLARED, NOW);
    let request_id = pending_id(&outcome.status);
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(outcome.events[0].name(), "node.pair.requested");
    assert!(!book.is_command_approved(&device.id, "system.which"));

    let status = book.node_surface_status(&device.id, NOW + 1);
    let error = status.unavailable_error().unwrap();
    assert_eq!(error.code, "UNAVAILABLE");
    assert!(error.message.contains(&request_id));

    let list = book.node_pair_list(NOW + 1);
    assert_eq!(list.pending.len(), 1);
    assert_eq!(list.pending[0].required_approve_scopes, vec!["operator.pairing", "operator.admin"]);
    assert_eq!(list.pending[0].commands, KEPT.to_vec());

    let denied = book.approve_node(&request_id, set(&[Scope::OperatorPairing, Scope::OperatorWrite]), NOW + 2);
    assert_eq!(denied.unwrap_err(), PairingError::NodeApprovalDenied { missing: Scope::OperatorAdmin });
    let approved =
        book.approve_node(&request_id, set(&[Scope::OperatorPairing, Scope::OperatorAdmin]), NOW + 3).unwrap();
    assert_eq!(approved.node.commands.len(), 13);
    let PairingEvent::NodePairResolved(resolved) = &approved.events[0] else { panic!("expected node.pair.resolved") };
    assert_eq!((resolved.decision, resolved.node_id.as_str()), (Decision::Approved, device.id.as_str()));
    assert_eq!(approved.events[0].audience(), Audience::PairingOperatorsAndNode { node_id: device.id.clone() });
    assert!(book.is_command_approved(&device.id, "system.which"));
    assert!(!book.is_command_approved(&device.id, "file.fetch"), "filtered commands are never usable");
    assert_eq!(book.node_surface_status(&device.id, NOW + 4), NodeSurfaceStatus::Approved { pending_request_id: None });
    let row = book.device_row(&device.id, NOW + 4).unwrap();
    assert_eq!(row.node_surface.map(|s| s.commands.len()), Some(13));
}

#[test]
fn non_exec_commands_need_write_and_an_empty_surface_needs_nothing() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired_node(&mut book, &device);
    let request_id = pending_id(&declare(&mut book, &device, &["ollama.chat"], NOW).status);
    assert_eq!(book.node_pair_list(NOW).pending[0].required_approve_scopes, vec!["operator.pairing", "operator.write"]);
    assert!(book.approve_node(&request_id, set(&[Scope::OperatorPairing, Scope::OperatorWrite]), NOW).is_ok());

    let other = TestDevice::random();
    paired_node(&mut book, &other);
    let declaration = NodeDeclaration { node_id: other.id.clone(), ..NodeDeclaration::default() };
    let outcome = book.declare_node_surface(declaration, NOW).unwrap();
    assert_eq!(outcome.status, NodeSurfaceStatus::Approved { pending_request_id: None });
}

#[test]
fn redeclaring_refreshes_supersedes_or_is_covered() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired_node(&mut book, &device);
    let first = pending_id(&declare(&mut book, &device, &["ollama.chat"], NOW).status);
    let again = declare(&mut book, &device, &["ollama.chat"], NOW + 60_000);
    assert_eq!(pending_id(&again.status), first);
    assert!(again.events.is_empty());
    let wider = declare(&mut book, &device, &["ollama.chat", "system.run"], NOW + 61_000);
    let second = pending_id(&wider.status);
    assert_ne!(second, first);
    assert_eq!(wider.superseded, Some(first));
    book.approve_node(&second, set(&[Scope::OperatorAdmin]), NOW + 62_000).unwrap();

    let narrower = declare(&mut book, &device, &["system.run"], NOW + 63_000);
    assert_eq!(narrower.status, NodeSurfaceStatus::Approved { pending_request_id: None });
    let upgrade = declare(&mut book, &device, &["system.run", "terminal.upload"], NOW + 64_000);
    let upgrade_id = pending_id(&upgrade.status);
    assert!(matches!(upgrade.status, NodeSurfaceStatus::Approved { .. }), "the approved part stays usable");
    assert!(book.is_command_approved(&device.id, "system.run"));
    assert!(!book.is_command_approved(&device.id, "terminal.upload"));
    let rejected = book.reject_node(&upgrade_id, NOW + 65_000).unwrap();
    assert!(matches!(&rejected.events[0], PairingEvent::NodePairResolved(r) if r.decision == Decision::Rejected));
    assert!(book.is_command_approved(&device.id, "system.run"));
}

#[test]
fn gated_retries_keep_a_node_request_alive() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    paired_node(&mut book, &device);
    let request_id = pending_id(&declare(&mut book, &device, &["ollama.chat"], NOW).status);
    for minute in 1..=10 {
        let status = book.node_surface_status(&device.id, NOW + minute * 60_000);
        assert_eq!(status, NodeSurfaceStatus::Pending { request_id: request_id.clone() });
    }
    let silent_for_long = NOW + 10 * 60_000 + PENDING_TTL_MS + 1;
    assert_eq!(book.node_surface_status(&device.id, silent_for_long), NodeSurfaceStatus::Undeclared);
}

#[test]
fn only_paired_nodes_declare_surfaces() {
    let mut book = PairingBook::default();
    let device = TestDevice::random();
    let declaration = NodeDeclaration { node_id: device.id.clone(), ..NodeDeclaration::default() };
    assert!(matches!(book.declare_node_surface(declaration.clone(), NOW), Err(PairingError::UnknownDevice { .. })));
    let outcome = book.decide_connect(&device.verified(Role::Operator, &[]), &remote(), NOW).unwrap();
    let ConnectDecision::PairingRequired(req) = outcome.decision else { panic!("expected pairing required") };
    book.approve(&req.request.request_id, set(&[Scope::OperatorPairing]), NOW).unwrap();
    assert!(matches!(book.declare_node_surface(declaration, NOW), Err(PairingError::RoleNotApproved { .. })));
    assert_eq!(book.approve_node("nope", set(&[Scope::OperatorAdmin]), NOW).unwrap_err(), PairingError::UnknownRequest);
}
