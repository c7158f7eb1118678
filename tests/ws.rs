//! The gateway's WebSocket refusals and pairing, end to end: a real gateway on
//! 127.0.0.1:0 and a Rust client that speaks the protocol (`common/wsclient.rs`).
//!
//! Every refusal is checked for its whole error response and its close, then that the
//! gateway still serves the machine's owner (a trusted CLI connection gets hello-ok and
//! answers `health`) and, where a device was paired before, that it is still paired.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::wsclient::{ConnectOptions, Identity, Tamper, WsClient};
use common::{agents, call, tool_results, FakeModels, Reply, WAIT};
use hivegate::config::{Config, Secret};
use hivegate::gateway::{Outcome, StartMain, WaitRun};
use hivegate::model::{Api, Provider};
use hivegate::runtime::Runtime;
use serde_json::{json, Value};
use sha2::Digest as _;
use tokio_tungstenite::tungstenite;

const TOKEN: &str = "tok";
/// A loopback socket carrying this header is not local.
const FORWARDED: (&str, &str) = ("x-forwarded-for", "203.0.113.7");

fn config(state_dir: PathBuf) -> Config {
    Config {
        bind: ([127, 0, 0, 1], 0).into(),
        gateway_token: Some(Secret::new(TOKEN)),
        allowed_origins: vec!["https://ok.example".into()],
        auto_approve_local: false,
        state_dir,
        ..Config::default()
    }
}

/// A gateway with the shared token, one allowed origin, no local auto-approval and an
/// ephemeral state directory.
async fn start() -> Runtime {
    Runtime::start(&config(PathBuf::new()), agents(&[])).await.unwrap()
}

/// A trusted CLI connection: direct loopback, shared token, no device identity.
async fn cli(addr: SocketAddr, scopes: &[&str]) -> WsClient {
    WsClient::connected(addr, &[], &ConnectOptions::cli(TOKEN, scopes)).await
}

/// One RPC on its own trusted CLI connection, as the OpenClaw CLI does it.
async fn cli_call(addr: SocketAddr, scopes: &[&str], method: &str, params: Value) -> Result<Value, Value> {
    let mut client = cli(addr, scopes).await;
    let reply = client.call(method, params).await;
    client.close().await;
    reply
}

/// The gateway still serves its owner.
async fn assert_alive(addr: SocketAddr) {
    let health = cli_call(addr, &["operator.read"], "health", json!({})).await.unwrap();
    assert_eq!(health["ok"], true, "{health}");
}

async fn pair_list(addr: SocketAddr) -> Value {
    cli_call(addr, &["operator.pairing"], "device.pair.list", json!({})).await.unwrap()
}

async fn paired_ids(addr: SocketAddr) -> Vec<String> {
    let list = pair_list(addr).await;
    list["paired"].as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_string()).collect()
}

async fn assert_paired(addr: SocketAddr, device: &Identity) {
    assert!(paired_ids(addr).await.contains(&device.device_id), "device {} lost its pairing", device.device_id);
}

/// Pending requests as (requestId, deviceId, scopes).
async fn pending(addr: SocketAddr) -> Vec<(String, String, Value)> {
    let list = pair_list(addr).await;
    list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["requestId"].as_str().unwrap().into(), p["deviceId"].as_str().unwrap().into(), p["scopes"].clone()))
        .collect()
}

/// Connect and expect a refusal: the error response and the close that follows.
async fn refused(
    addr: SocketAddr,
    headers: &[(&'static str, &str)],
    options: &ConnectOptions,
) -> (Value, (u16, String)) {
    let mut client = WsClient::open(addr, headers).await.unwrap();
    let error = client.connect(options).await.expect_err("the connect should be refused");
    let close = client.expect_close().await;
    (error, close)
}

fn missing_scope(scope: &str) -> Value {
    json!({"code": "FORBIDDEN", "message": format!("missing scope: {scope}"),
           "details": {"code": "MISSING_SCOPE", "missingScope": scope}})
}

/// The whole `NOT_PAIRED` error of a connect that needs (re-)pairing.
fn pairing_required(reason: &str, request_id: &str, device: &Identity, role: &str) -> Value {
    let message = match reason {
        "not-paired" => "pairing required: device is not approved yet",
        "scope-upgrade" => "pairing required: requested scopes are not approved yet",
        other => panic!("no message for {other}"),
    };
    json!({
        "code": "NOT_PAIRED",
        "message": message,
        "details": {
            "code": "PAIRING_REQUIRED", "reason": reason, "requestId": request_id,
            "recommendedNextStep": "wait_then_retry", "pauseReconnect": false,
            "remediationHint": "Approve this device from the pending pairing requests.",
            "deviceId": device.device_id, "requestedRole": role,
        },
        "retryable": true,
    })
}

/// Connect, expect `PAIRING_REQUIRED` for `reason` and close 1008 "pairing required …";
/// returns the request id.
async fn request_pairing(
    addr: SocketAddr,
    headers: &[(&'static str, &str)],
    options: &ConnectOptions,
    reason: &str,
) -> String {
    let (error, close) = refused(addr, headers, options).await;
    let request_id = error["details"]["requestId"].as_str().unwrap().to_string();
    let device = options.device.as_ref().unwrap();
    assert_eq!(error, pairing_required(reason, &request_id, device, options.role));
    let message = error["message"].as_str().unwrap();
    assert_eq!(close, (1008, format!("{message} (requestId: {request_id})")));
    request_id
}

async fn approve(addr: SocketAddr, request_id: &str, approver: &[&str]) -> Result<Value, Value> {
    cli_call(addr, approver, "device.pair.approve", json!({"requestId": request_id})).await
}

/// Pair `device` as an operator holding `scopes`.
async fn pair_operator(addr: SocketAddr, device: &Identity, scopes: &[&str]) {
    let options = ConnectOptions::operator(device, TOKEN, scopes);
    let request_id = request_pairing(addr, &[], &options, "not-paired").await;
    let approver: Vec<&str> = std::iter::once("operator.pairing").chain(scopes.iter().copied()).collect();
    approve(addr, &request_id, &approver).await.unwrap();
}

/// Pair `device` as a node, connect it declaring `commands` and approve them. Returns
/// the live node connection and the device token from its hello-ok.
async fn paired_node(addr: SocketAddr, device: &Identity, commands: &[&str]) -> (WsClient, String) {
    let options = ConnectOptions::node(device, TOKEN).commands(commands);
    let request_id = request_pairing(addr, &[], &options, "not-paired").await;
    let approved = approve(addr, &request_id, &["operator.pairing"]).await.unwrap();
    assert_eq!(approved["device"]["deviceId"], device.device_id.as_str());
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let hello = node.connect(&options).await.unwrap();
    let token = hello["auth"]["deviceToken"].as_str().expect("a paired node gets its device token").to_string();
    let issued = hello["auth"]["issuedAtMs"].clone();
    assert_eq!(
        hello["auth"],
        json!({"method": "token", "role": "node", "scopes": [], "deviceToken": token, "issuedAtMs": issued})
    );
    if !commands.is_empty() {
        let list = cli_call(addr, &["operator.pairing"], "node.pair.list", json!({})).await.unwrap();
        let request = list["pending"].as_array().unwrap().iter().find(|r| r["nodeId"] == device.device_id.as_str());
        let request = request.expect("the declared commands wait for approval");
        assert_eq!(request["commands"], json!(commands));
        assert_eq!(request["requiredApproveScopes"], json!(["operator.pairing", "operator.admin"]));
        let params = json!({"requestId": request["requestId"]});
        cli_call(addr, &["operator.pairing", "operator.admin"], "node.pair.approve", params).await.unwrap();
    }
    (node, token)
}

#[actix_rt::test]
async fn a_first_frame_that_is_not_connect_gets_invalid_request_and_close_1008() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let mut client = WsClient::open(addr, &[]).await.unwrap();
    client.send_json(&json!({"type": "req", "id": "1:health", "method": "health", "params": {}})).await;
    assert_eq!(
        client.next_frame().await,
        json!({"type": "res", "id": "1:health", "ok": false, "error": {"code": "INVALID_REQUEST",
               "message": "invalid handshake: first request must be `connect`, got `health`; send connect first"}})
    );
    assert_eq!(client.expect_close().await, (1008, "invalid handshake".to_string()));
    assert_alive(addr).await;

    // Not even JSON: nothing to answer, but the same close.
    let mut client = WsClient::open(addr, &[]).await.unwrap();
    client.send_text("hello?".into()).await;
    assert_eq!(client.expect_close().await, (1008, "invalid handshake".to_string()));
    assert_alive(addr).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn an_oversized_preauth_frame_closes_1009() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let mut client = WsClient::open(addr, &[]).await.unwrap();
    let pad = "x".repeat(70 * 1024);
    client.send_json(&json!({"type": "req", "id": "1:connect", "method": "connect", "params": {"pad": pad}})).await;
    assert_eq!(client.expect_close().await, (1009, "preauth payload too large".to_string()));
    assert_alive(addr).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_protocol_mismatch_names_the_expected_protocol_and_closes_1002() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    for version in [5, 3] {
        let mut options = ConnectOptions::cli(TOKEN, &["operator.read"]);
        (options.min_protocol, options.max_protocol) = (version, version);
        let (error, close) = refused(addr, &[], &options).await;
        let message =
            format!("protocol mismatch: client speaks {version}..={version}, server speaks 4; upgrade the client");
        assert_eq!(
            error,
            json!({"code": "INVALID_REQUEST", "message": message, "details": {"code": "PROTOCOL_MISMATCH",
                   "expectedProtocol": 4, "minProtocol": version, "maxProtocol": version}})
        );
        assert_eq!(close, (1002, "protocol mismatch".to_string()));
        assert_alive(addr).await;
    }
    // Protocol 3 is still spoken with nodes: this one gets as far as pairing.
    let node = Identity::generate();
    let mut options = ConnectOptions::node(&node, TOKEN);
    (options.min_protocol, options.max_protocol) = (3, 3);
    request_pairing(addr, &[], &options, "not-paired").await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_wrong_shared_token_is_refused_and_paired_devices_stay_paired() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    pair_operator(addr, &device, &["operator.read"]).await;
    let message = "unauthorized: gateway token mismatch";
    let expected = json!({"code": "INVALID_REQUEST", "message": message, "details": {"code": "AUTH_TOKEN_MISMATCH"}});
    for options in [
        ConnectOptions::cli("wrong", &["operator.read"]),
        ConnectOptions::operator(&device, "wrong", &["operator.read"]),
    ] {
        let (error, close) = refused(addr, &[], &options).await;
        assert_eq!(error, expected);
        assert_eq!(close, (1008, message.to_string()));
        assert_alive(addr).await;
        assert_paired(addr, &device).await;
    }
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn each_bad_device_proof_gets_its_detail_code_and_close_1008() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    pair_operator(addr, &device, &["operator.read"]).await;
    // A real nonce, but another socket's: a replayed proof.
    let other_socket = WsClient::open(addr, &[]).await.unwrap();
    let cases = [
        (
            Tamper { corrupt_signature: true, ..Tamper::default() },
            "device signature invalid",
            "DEVICE_AUTH_SIGNATURE_INVALID",
            "device-signature",
        ),
        (
            Tamper { signed_at_shift_ms: -121_000, ..Tamper::default() },
            "device signature expired",
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device-signature-stale",
        ),
        (
            Tamper { signed_at_shift_ms: 121_000, ..Tamper::default() },
            "device signature expired",
            "DEVICE_AUTH_SIGNATURE_EXPIRED",
            "device-signature-stale",
        ),
        (
            Tamper { nonce: Some(other_socket.nonce.clone()), ..Tamper::default() },
            "device nonce mismatch",
            "DEVICE_AUTH_NONCE_MISMATCH",
            "device-nonce-mismatch",
        ),
        (
            Tamper { nonce: Some(String::new()), ..Tamper::default() },
            "device nonce required",
            "DEVICE_AUTH_NONCE_REQUIRED",
            "device-nonce-missing",
        ),
        (
            Tamper { device_id: Some(Identity::generate().device_id), ..Tamper::default() },
            "device identity mismatch",
            "DEVICE_AUTH_DEVICE_ID_MISMATCH",
            "device-id-mismatch",
        ),
    ];
    for (tamper, message, code, reason) in cases {
        let options = ConnectOptions::operator(&device, TOKEN, &["operator.read"]).tamper(tamper.clone());
        let (error, close) = refused(addr, &[], &options).await;
        assert_eq!(
            error,
            json!({"code": "INVALID_REQUEST", "message": message, "details": {"code": code, "reason": reason}}),
            "{tamper:?}"
        );
        assert_eq!(close, (1008, message.to_string()), "{tamper:?}");
        assert_alive(addr).await;
        assert_paired(addr, &device).await;
    }
    // A node must prove a device identity at all.
    let mut unsigned = ConnectOptions::node(&device, TOKEN);
    unsigned.device = None;
    let (error, close) = refused(addr, &[], &unsigned).await;
    let message = "device identity required: a node must sign its connect with its device key";
    assert_eq!(
        error,
        json!({"code": "INVALID_REQUEST", "message": message, "details": {"code": "DEVICE_IDENTITY_REQUIRED"}})
    );
    assert_eq!(close, (1008, message.to_string()));
    assert_alive(addr).await;
    // The same device with an honest proof still gets in.
    let mut honest =
        WsClient::connected(addr, &[], &ConnectOptions::operator(&device, TOKEN, &["operator.read"])).await;
    assert_eq!(honest.call("health", json!({})).await.unwrap()["ok"], true);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn declared_scopes_are_not_granted_off_loopback_or_to_untrusted_clients() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let mut ui = ConnectOptions::cli(TOKEN, &["operator.admin"]);
    (ui.client_id, ui.client_mode) = ("openclaw-control-ui".into(), "ui".into());
    let cases: [(&[(&'static str, &str)], ConnectOptions); 2] =
        [(&[FORWARDED], ConnectOptions::cli(TOKEN, &["operator.admin"])), (&[], ui)];
    for (headers, options) in cases {
        let mut client = WsClient::open(addr, headers).await.unwrap();
        let hello = client.connect(&options).await.unwrap();
        assert_eq!(
            hello["auth"],
            json!({"method": "token", "role": "operator", "scopes": []}),
            "{}",
            options.client_id
        );
        assert_eq!(client.call("health", json!({})).await.unwrap_err(), missing_scope("operator.read"));
        client.close().await;
    }
    // The owner's CLI on direct loopback gets what it declared.
    let mut owner = cli(addr, &["operator.admin"]).await;
    assert_eq!(owner.call("health", json!({})).await.unwrap()["ok"], true);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_method_outside_the_connections_scopes_is_forbidden_and_the_socket_stays_open() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let mut reader = cli(addr, &["operator.read"]).await;
    assert_eq!(reader.call("device.pair.list", json!({})).await.unwrap_err(), missing_scope("operator.pairing"));
    let invoke = json!({"nodeId": "n", "command": "system.which", "idempotencyKey": "k"});
    assert_eq!(reader.call("node.invoke", invoke).await.unwrap_err(), missing_scope("operator.write"));
    assert_eq!(reader.call("config.set", json!({})).await.unwrap_err(), missing_scope("operator.admin"));
    assert_eq!(reader.call("health", json!({})).await.unwrap()["ok"], true);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_scope_upgrade_needs_pairing_while_the_old_grant_keeps_working() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let read = ConnectOptions::operator(&device, TOKEN, &["operator.read"]);
    let first_request = request_pairing(addr, &[], &read, "not-paired").await;
    approve(addr, &first_request, &["operator.pairing", "operator.read"]).await.unwrap();
    let mut client = WsClient::open(addr, &[]).await.unwrap();
    let hello = client.connect(&read).await.unwrap();
    assert_eq!((&hello["auth"]["method"], &hello["auth"]["scopes"]), (&json!("token"), &json!(["operator.read"])));
    assert!(hello["auth"]["deviceToken"].is_string(), "{hello}");
    client.close().await;

    let wider = ConnectOptions::operator(&device, TOKEN, &["operator.read", "operator.write"]);
    let upgrade = request_pairing(addr, &[], &wider, "scope-upgrade").await;
    assert_ne!(upgrade, first_request);
    let list = pair_list(addr).await;
    let row = &list["pending"][0];
    assert_eq!(
        (&row["requestId"], &row["scopes"], &row["isRepair"]),
        (&json!(upgrade), &json!(["operator.read", "operator.write"]), &json!(true))
    );

    let mut old_grant = WsClient::connected(addr, &[], &read).await;
    assert_eq!(old_grant.call("health", json!({})).await.unwrap()["ok"], true);
    assert_eq!(old_grant.call("node.invoke", json!({})).await.unwrap_err(), missing_scope("operator.write"));
    assert_alive(addr).await;
    assert_paired(addr, &device).await;

    // Once approved, the wider ask connects with what it asked for.
    approve(addr, &upgrade, &["operator.pairing", "operator.write"]).await.unwrap();
    let mut upgraded = WsClient::open(addr, &[]).await.unwrap();
    let hello = upgraded.connect(&wider).await.unwrap();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read", "operator.write"]));
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn an_approver_cannot_grant_a_scope_it_lacks_and_the_request_stays_pending() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let options = ConnectOptions::operator(&device, TOKEN, &["operator.read", "operator.admin"]);
    let request_id = request_pairing(addr, &[], &options, "not-paired").await;
    let error = approve(addr, &request_id, &["operator.pairing", "operator.read"]).await.unwrap_err();
    assert_eq!(
        error,
        json!({"code": "INVALID_REQUEST",
               "message": "device pairing approval denied: approver lacks operator.admin; approve from a connection that holds it",
               "details": {"code": "MISSING_SCOPE", "missingScope": "operator.admin"}})
    );
    assert_eq!(
        pending(addr).await,
        vec![(request_id.clone(), device.device_id.clone(), json!(["operator.read", "operator.admin"]))]
    );
    assert!(!paired_ids(addr).await.contains(&device.device_id));

    // An approver that holds admin can grant it.
    approve(addr, &request_id, &["operator.pairing", "operator.admin"]).await.unwrap();
    let mut admin = WsClient::open(addr, &[]).await.unwrap();
    let hello = admin.connect(&options).await.unwrap();
    assert_eq!(hello["auth"]["scopes"], json!(["operator.read", "operator.admin"]));
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_wider_re_request_supersedes_the_pending_one_instead_of_widening_it() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let mut watcher = cli(addr, &["operator.pairing"]).await;
    let device = Identity::generate();
    let narrow = ConnectOptions::operator(&device, TOKEN, &["operator.read"]);
    let wide = ConnectOptions::operator(&device, TOKEN, &["operator.read", "operator.write"]);

    let first = request_pairing(addr, &[], &narrow, "not-paired").await;
    assert_eq!(pending(addr).await, vec![(first.clone(), device.device_id.clone(), json!(["operator.read"]))]);
    let second = request_pairing(addr, &[], &wide, "not-paired").await;
    assert_ne!(second, first);
    let only_second = vec![(second.clone(), device.device_id.clone(), json!(["operator.read", "operator.write"]))];
    assert_eq!(pending(addr).await, only_second);
    // The same ask again refreshes the same request.
    assert_eq!(request_pairing(addr, &[], &wide, "not-paired").await, second);
    assert_eq!(pending(addr).await, only_second);

    // Pairing operators were told about each new request, in order.
    for expected in [&first, &second] {
        let event = watcher.wait_event("device.pair.requested").await;
        assert_eq!(event["payload"]["requestId"], expected.as_str());
        assert!(event["seq"].is_u64(), "{event}");
    }
    let error = approve(addr, &first, &["operator.pairing", "operator.write"]).await.unwrap_err();
    assert_eq!(error, json!({"code": "INVALID_REQUEST", "message": "unknown requestId"}));
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_revoked_device_token_closes_its_connection_and_stops_working() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let (first, token) = paired_node(addr, &device, &[]).await;
    first.close().await;

    let by_token = ConnectOptions::node(&device, TOKEN).with_device_token(&token);
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let hello = node.connect(&by_token).await.unwrap();
    let issued = hello["auth"]["issuedAtMs"].clone();
    assert_eq!(
        hello["auth"],
        json!({"method": "device-token", "role": "node", "scopes": [], "deviceToken": token, "issuedAtMs": issued})
    );

    let params = json!({"deviceId": device.device_id, "role": "node"});
    let revoked = cli_call(addr, &["operator.pairing"], "device.token.revoke", params).await.unwrap();
    assert_eq!(revoked, json!({"deviceId": device.device_id, "role": "node", "revokedAtMs": revoked["revokedAtMs"]}));
    assert_eq!(node.expect_close().await, (1008, "device token revoked".to_string()));

    let message = "device token mismatch; rotate the token with device.token.rotate or pair again";
    let (error, close) = refused(addr, &[], &by_token).await;
    assert_eq!(
        error,
        json!({"code": "INVALID_REQUEST", "message": message, "details": {"code": "AUTH_DEVICE_TOKEN_MISMATCH"}})
    );
    assert_eq!(close, (1008, message.to_string()));
    assert_alive(addr).await;
    assert_paired(addr, &device).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_foreign_origin_is_refused_at_the_upgrade_and_an_allowed_one_is_not() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    match WsClient::open(addr, &[("origin", "https://evil.example")]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert_eq!(response.body().as_deref(), Some(&b"origin not allowed"[..]));
        }
        Err(other) => panic!("expected HTTP 403, got {other}"),
        Ok(_) => panic!("a foreign origin was upgraded"),
    }
    assert_alive(addr).await;
    // An allowed browser gets in, but a browser is never the owner: no declared scopes.
    let mut browser = WsClient::open(addr, &[("origin", "https://ok.example")]).await.unwrap();
    let hello = browser.connect(&ConnectOptions::cli(TOKEN, &["operator.admin"])).await.unwrap();
    assert_eq!(hello["auth"], json!({"method": "token", "role": "operator", "scopes": []}));
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn local_auto_approval_never_applies_to_forwarded_or_browser_sockets() {
    let mut config = config(PathBuf::new());
    config.auto_approve_local = true;
    let runtime = Runtime::start(&config, agents(&[])).await.unwrap();
    let addr = runtime.http_addr;

    let local = Identity::generate();
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let hello = node.connect(&ConnectOptions::node(&local, TOKEN)).await.unwrap();
    assert_eq!((&hello["auth"]["method"], &hello["auth"]["role"]), (&json!("token"), &json!("node")));
    assert!(hello["auth"]["deviceToken"].is_string(), "{hello}");
    let list = pair_list(addr).await;
    let row = list["paired"].as_array().unwrap().iter().find(|d| d["deviceId"] == local.device_id.as_str()).unwrap();
    assert_eq!(row["approvedVia"], "silent");

    let proxied = Identity::generate();
    request_pairing(addr, &[FORWARDED], &ConnectOptions::node(&proxied, TOKEN), "not-paired").await;
    let browser = Identity::generate();
    let origin = ("origin", "https://ok.example");
    request_pairing(addr, &[origin], &ConnectOptions::node(&browser, TOKEN), "not-paired").await;
    let pending_devices: Vec<String> = pending(addr).await.into_iter().map(|(_, device, _)| device).collect();
    assert_eq!(pending_devices.len(), 2);
    assert!(pending_devices.contains(&proxied.device_id) && pending_devices.contains(&browser.device_id));
    assert_eq!(paired_ids(addr).await, vec![local.device_id.clone()]);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn ten_wrong_tokens_lock_out_a_remote_peer_but_not_the_owner() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let wrong = ConnectOptions::cli("wrong", &["operator.read"]);
    for attempt in 0..10 {
        let (error, close) = refused(addr, &[FORWARDED], &wrong).await;
        assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISMATCH", "attempt {attempt}: {error}");
        assert_eq!(close.0, 1008);
    }
    let (error, close) = refused(addr, &[FORWARDED], &ConnectOptions::cli(TOKEN, &["operator.read"])).await;
    let retry_after = error["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(retry_after > 290_000 && retry_after <= 300_000, "{error}");
    let message = "too many failed authentication attempts; try again later";
    assert_eq!(
        error,
        json!({"code": "UNAVAILABLE", "message": message, "details": {"code": "AUTH_RATE_LIMITED",
               "retryAfterMs": retry_after}, "retryable": true, "retryAfterMs": retry_after})
    );
    assert_eq!(close, (1008, message.to_string()));
    // The owner on direct loopback is exempt, even after failing itself.
    refused(addr, &[], &wrong).await;
    assert_alive(addr).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn pairing_and_approved_commands_survive_a_gateway_restart() {
    let state = tempfile::TempDir::new().unwrap();
    let config = config(state.path().to_path_buf());
    let runtime = Runtime::start(&config, agents(&[])).await.unwrap();
    let device = Identity::generate();
    let (mut node, token) = paired_node(runtime.http_addr, &device, &["system.which"]).await;
    runtime.shutdown().await.unwrap();
    assert_eq!(node.expect_close().await, (1012, "service restart".to_string()));
    let shutdown = node.wait_event("shutdown").await;
    assert_eq!(shutdown["payload"], json!({"reason": "gateway stopping"}));
    // The database holds the token's hash only, never the token itself.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(state.path()).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!stored.is_empty());
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(token.as_bytes()), "the plaintext device token is in the state directory");
    let hash: String = sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert!(contains(hash.as_bytes()), "the token's hash is stored");

    let runtime = Runtime::start(&config, agents(&[])).await.unwrap();
    let addr = runtime.http_addr;
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let options = ConnectOptions::node(&device, TOKEN).commands(&["system.which"]).with_device_token(&token);
    let hello = node.connect(&options).await.unwrap();
    assert_eq!((&hello["auth"]["method"], &hello["auth"]["role"]), (&json!("device-token"), &json!("node")));

    let list = cli_call(addr, &["operator.read"], "node.list", json!({})).await.unwrap();
    let nodes = list["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{list}");
    let entry = &nodes[0];
    assert_eq!(
        (&entry["nodeId"], &entry["paired"], &entry["connected"], &entry["approvalState"], &entry["commands"]),
        (&json!(device.device_id), &json!(true), &json!(true), &json!("approved"), &json!(["system.which"]))
    );
    assert_paired(addr, &device).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn node_invoke_goes_through_the_gateway_to_the_node_and_back() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let id = device.device_id.clone();
    let (mut node, _) = paired_node(addr, &device, &["system.which"]).await;
    let resolved = node.wait_event("node.pair.resolved").await;
    assert_eq!((&resolved["payload"]["nodeId"], &resolved["payload"]["decision"]), (&json!(id), &json!("approved")));
    assert!(resolved.get("seq").is_none(), "targeted at the node, without seq: {resolved}");

    let mut operator = cli(addr, &["operator.write"]).await;
    let answer = json!({"bins": {"sh": "/bin/sh"}});
    let params = json!({"nodeId": id, "command": "system.which", "params": {"bins": ["sh"]},
                        "idempotencyKey": "which-1", "timeoutMs": 5000});
    let (reply, request) = tokio::join!(operator.call("node.invoke", params.clone()), async {
        let request = node.wait_event("node.invoke.request").await;
        let result =
            json!({"id": request["payload"]["id"], "nodeId": id, "ok": true, "payloadJSON": answer.to_string()});
        assert_eq!(node.call("node.invoke.result", result).await.unwrap(), json!({"ok": true}));
        request
    });
    assert_eq!(
        request,
        json!({"type": "event", "event": "node.invoke.request", "payload": {"id": request["payload"]["id"],
               "nodeId": id, "command": "system.which", "paramsJSON": "{\"bins\":[\"sh\"]}", "timeoutMs": 5000,
               "idempotencyKey": "which-1"}})
    );
    let expected = json!({"ok": true, "nodeId": id, "command": "system.which", "payload": answer, "payloadJSON": answer.to_string()});
    assert_eq!(reply.unwrap(), expected);
    // The same idempotency key returns the first result without asking the node again.
    assert_eq!(operator.call("node.invoke", params).await.unwrap(), expected);

    let run =
        json!({"nodeId": id, "command": "system.run", "params": {"command": ["true"]}, "idempotencyKey": "run-1"});
    assert_eq!(
        operator.call("node.invoke", run).await.unwrap_err(),
        json!({"code": "FORBIDDEN", "details": {"code": "COMMAND_NOT_APPROVED"}, "message":
               format!("command system.run is not approved for node {id}; approve its commands with `hivegate nodes approve`")})
    );

    // A node that never answers: the short deadline wins.
    let quick =
        json!({"nodeId": id, "command": "system.which", "params": {}, "idempotencyKey": "which-2", "timeoutMs": 200});
    let (reply, _) = tokio::join!(operator.call("node.invoke", quick), node.wait_event("node.invoke.request"));
    assert_eq!(
        reply.unwrap_err(),
        json!({"code": "UNAVAILABLE", "message": format!("node {id} did not answer system.which within 200 ms"), "retryable": true})
    );

    // A node that goes away fails its invoke at once, not at the 60 s deadline.
    let slow = json!({"nodeId": id, "command": "system.which", "params": {}, "idempotencyKey": "which-3", "timeoutMs": 60_000});
    let (reply, _) = tokio::join!(operator.call("node.invoke", slow.clone()), async move {
        node.wait_event("node.invoke.request").await;
        node.close().await;
    });
    assert_eq!(
        reply.unwrap_err(),
        json!({"code": "UNAVAILABLE", "message": format!("node {id} disconnected before answering system.which")})
    );
    let gone = json!({"nodeId": id, "command": "system.which", "params": {}, "idempotencyKey": "which-4"});
    assert_eq!(
        operator.call("node.invoke", gone).await.unwrap_err(),
        json!({"code": "UNAVAILABLE", "message": format!("node {id} is not connected; see `hivegate nodes list`")})
    );
    assert_alive(addr).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn only_the_invoked_node_can_answer_an_invoke() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let (target, other) = (Identity::generate(), Identity::generate());
    let id = target.device_id.clone();
    let (mut node, _) = paired_node(addr, &target, &["system.which"]).await;
    let (mut impostor, _) = paired_node(addr, &other, &["system.which"]).await;
    let mut operator = cli(addr, &["operator.write"]).await;
    let answer = json!({"bins": {"sh": "/bin/sh"}});
    let params = json!({"nodeId": id, "command": "system.which", "params": {"bins": ["sh"]}, "timeoutMs": 5000});
    let (reply, _) = tokio::join!(operator.call("node.invoke", params), async {
        let request = node.wait_event("node.invoke.request").await;
        let invoke_id = request["payload"]["id"].clone();
        // Another paired node that learned the invoke id answers under its own id.
        let forged =
            json!({"id": invoke_id, "nodeId": other.device_id, "ok": true, "payloadJSON": "{\"forged\":true}"});
        assert_eq!(
            impostor.call("node.invoke.result", forged).await.unwrap_err(),
            json!({"code": "INVALID_REQUEST", "message": "node.invoke.result must come from the node that was invoked"})
        );
        let result = json!({"id": invoke_id, "nodeId": id, "ok": true, "payloadJSON": answer.to_string()});
        assert_eq!(node.call("node.invoke.result", result).await.unwrap(), json!({"ok": true}));
    });
    assert_eq!(
        reply.unwrap(),
        json!({"ok": true, "nodeId": id, "command": "system.which", "payload": answer, "payloadJSON": answer.to_string()})
    );
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_session_runs_an_approved_node_command_with_nodes_invoke() {
    let device = Identity::generate();
    let id = device.device_id.clone();
    let script_id = id.clone();
    let fake = FakeModels::start(move |request| {
        if tool_results(request).is_empty() {
            Reply::Calls(vec![
                call(
                    "which",
                    "nodes_invoke",
                    json!({"nodeId": script_id, "command": "system.which", "params": {"bins": ["sh"]}, "timeoutMs": 5000}),
                ),
                call("run", "nodes_invoke", json!({"nodeId": script_id, "command": "system.run", "params": {}})),
            ])
        } else {
            Reply::Text("done".into())
        }
    });
    let mut config = config(PathBuf::new());
    config.providers.insert(
        "fake",
        Provider {
            base_url: fake.url.clone(),
            api_key: Some("k".into()),
            api_key_env: None,
            api: Api::OpenAiCompletions,
        },
    );
    let agent = "id = \"ops\"\nmodel = \"fake/ops\"\n[tools]\nallow = [\"nodes_invoke\"]\n";
    let runtime = Runtime::start(&config, agents(&[agent])).await.unwrap();
    let (mut node, _) = paired_node(runtime.http_addr, &device, &["system.which"]).await;

    let start =
        StartMain { agent_id: "ops".into(), task: "where is sh?".into(), run_timeout: None, budget_tokens: None };
    let run = runtime.gateway.send(start).await.unwrap().unwrap();
    let ended = runtime.gateway.send(WaitRun { run_id: run.run_id }).await.unwrap().unwrap();
    let answer = json!({"bins": {"sh": "/bin/sh"}});
    let (summary, request) = tokio::join!(async { tokio::time::timeout(WAIT, ended).await.unwrap().unwrap() }, async {
        let request = node.wait_event("node.invoke.request").await;
        let result =
            json!({"id": request["payload"]["id"], "nodeId": id, "ok": true, "payloadJSON": answer.to_string()});
        node.call("node.invoke.result", result).await.unwrap();
        request
    });
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "done"));
    assert_eq!(
        (&request["payload"]["command"], &request["payload"]["paramsJSON"]),
        (&json!("system.which"), &json!("{\"bins\":[\"sh\"]}"))
    );
    let requests = fake.requests_for("ops");
    assert_eq!(requests.len(), 2);
    let results = tool_results(&requests[1]);
    let not_approved = format!(
        "FORBIDDEN: command system.run is not approved for node {id}; approve its commands with `hivegate nodes approve`"
    );
    assert_eq!(
        results,
        vec![
            (
                "which".to_string(),
                json!({"ok": true, "nodeId": id, "command": "system.which", "payload": answer, "payloadJSON": answer.to_string()})
            ),
            ("run".to_string(), json!({"status": "error", "error": not_approved})),
        ]
    );
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}
