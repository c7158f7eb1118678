//! Helpers for the WebSocket tests: a gateway with the shared token and one allowed
//! origin, trusted CLI connections, and pairing a device the way real clients do.

use std::net::SocketAddr;
use std::path::PathBuf;

use hivegate::config::{Config, Secret};
use hivegate::runtime::Runtime;
use serde_json::{json, Value};

use super::agents;
use super::wsclient::{ConnectOptions, Identity, WsClient};

pub const TOKEN: &str = "tok";
/// A loopback socket carrying this header is not local.
pub const FORWARDED: (&str, &str) = ("x-forwarded-for", "203.0.113.7");

pub fn config(state_dir: PathBuf) -> Config {
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
pub async fn start() -> Runtime {
    Runtime::start(&config(PathBuf::new()), agents(&[])).await.unwrap()
}

/// A trusted CLI connection: direct loopback, shared token, no device identity.
pub async fn cli(addr: SocketAddr, scopes: &[&str]) -> WsClient {
    WsClient::connected(addr, &[], &ConnectOptions::cli(TOKEN, scopes)).await
}

/// One RPC on its own trusted CLI connection, as the OpenClaw CLI does it.
pub async fn cli_call(addr: SocketAddr, scopes: &[&str], method: &str, params: Value) -> Result<Value, Value> {
    let mut client = cli(addr, scopes).await;
    let reply = client.call(method, params).await;
    client.close().await;
    reply
}

/// The gateway still serves its owner.
pub async fn assert_alive(addr: SocketAddr) {
    let health = cli_call(addr, &["operator.read"], "health", json!({})).await.unwrap();
    assert_eq!(health["ok"], true, "{health}");
}

pub async fn pair_list(addr: SocketAddr) -> Value {
    cli_call(addr, &["operator.pairing"], "device.pair.list", json!({})).await.unwrap()
}

pub async fn paired_ids(addr: SocketAddr) -> Vec<String> {
    let list = pair_list(addr).await;
    list["paired"].as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_string()).collect()
}

pub async fn assert_paired(addr: SocketAddr, device: &Identity) {
    assert!(paired_ids(addr).await.contains(&device.device_id), "device {} lost its pairing", device.device_id);
}

/// Pending requests as (requestId, deviceId, scopes).
pub async fn pending(addr: SocketAddr) -> Vec<(String, String, Value)> {
    let list = pair_list(addr).await;
    list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["requestId"].as_str().unwrap().into(), p["deviceId"].as_str().unwrap().into(), p["scopes"].clone()))
        .collect()
}

/// Connect and expect a refusal: the error response and the close that follows.
pub async fn refused(
    addr: SocketAddr,
    headers: &[(&'static str, &str)],
    options: &ConnectOptions,
) -> (Value, (u16, String)) {
    let mut client = WsClient::open(addr, headers).await.unwrap();
    let error = client.connect(options).await.expect_err("the connect should be refused");
    let close = client.expect_close().await;
    (error, close)
}

pub fn missing_scope(scope: &str) -> Value {
    json!({"code": "FORBIDDEN", "message": format!("missing scope: {scope}"),
           "details": {"code": "MISSING_SCOPE", "missingScope": scope}})
}

/// The whole `NOT_PAIRED` error of a connect that needs (re-)pairing.
pub fn pairing_required(reason: &str, request_id: &str, device: &Identity, role: &str) -> Value {
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
pub async fn request_pairing(
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

pub async fn approve(addr: SocketAddr, request_id: &str, approver: &[&str]) -> Result<Value, Value> {
    cli_call(addr, approver, "device.pair.approve", json!({"requestId": request_id})).await
}

/// Pair `device` as an operator holding `scopes`.
pub async fn pair_operator(addr: SocketAddr, device: &Identity, scopes: &[&str]) {
    let options = ConnectOptions::operator(device, TOKEN, scopes);
    let request_id = request_pairing(addr, &[], &options, "not-paired").await;
    let approver: Vec<&str> = std::iter::once("operator.pairing").chain(scopes.iter().copied()).collect();
    approve(addr, &request_id, &approver).await.unwrap();
}

/// Pair `device` as a node, connect it declaring `commands` and approve them. Returns
/// the live node connection and the device token from its hello-ok.
pub async fn paired_node(addr: SocketAddr, device: &Identity, commands: &[&str]) -> (WsClient, String) {
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

/// A gateway (shared token, one allowed origin) whose provider `fake` is the fake model
/// server, with agents from TOML snippets.
pub async fn start_with_fake(fake: &super::FakeModels, agent_files: &[&str]) -> Runtime {
    let mut config = config(PathBuf::new());
    config.providers.insert(
        "fake",
        hivegate::model::Provider::new(hivegate::model::Api::OpenAiCompletions, fake.url.clone(), Some("k".into())),
    );
    Runtime::start(&config, agents(agent_files)).await.unwrap()
}

/// Wait for the node's next invoke request, answer it with `payload`, and return the
/// request event.
pub async fn answer_invoke(node: &mut WsClient, node_id: &str, payload: &Value) -> Value {
    let request = node.wait_event("node.invoke.request").await;
    let result =
        json!({"id": request["payload"]["id"], "nodeId": node_id, "ok": true, "payloadJSON": payload.to_string()});
    assert_eq!(node.call("node.invoke.result", result).await.unwrap(), json!({"ok": true}));
    request
}
