//! The gateway's WebSocket refusals at the handshake, end to end: a real gateway on
//! 127.0.0.1:0 and a Rust client that speaks the protocol (`common/wsclient.rs`).
//!
//! Every refusal is checked for its whole error response and its close, then that the
//! gateway still serves the machine's owner (a trusted CLI connection gets hello-ok and
//! answers `health`) and, where a device was paired before, that it is still paired.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::agents;
use common::ws::*;
use common::wsclient::{ConnectOptions, Identity, Tamper, WsClient};
use hivegate::runtime::Runtime;
use serde_json::json;
use tokio_tungstenite::tungstenite;

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

/// A request read together with the connect finds the hub knowing the connection (the
/// connection tells the hub before it handles another frame), not refused as from a
/// connection the hub has never seen.
#[actix_rt::test]
async fn a_request_sent_with_the_connect_is_answered_as_the_connected_client() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    for round in 0..20 {
        let mut client = WsClient::open(addr, &[]).await.unwrap();
        let connect = ConnectOptions::cli(TOKEN, &["operator.read"]).params(&client.nonce);
        client
            .send_together(&[
                json!({"type": "req", "id": "1:connect", "method": "connect", "params": connect}),
                json!({"type": "req", "id": "2:sessions.list", "method": "sessions.list", "params": {}}),
            ])
            .await;
        let hello = client.next_frame().await;
        assert_eq!((hello["id"].as_str(), hello["ok"].as_bool()), (Some("1:connect"), Some(true)), "{hello}");
        assert_eq!(hello["payload"]["type"], "hello-ok", "{hello}");
        let listed = client.next_frame().await;
        assert_eq!(listed["id"], "2:sessions.list", "round {round}: {listed}");
        assert_eq!(listed["ok"], true, "round {round}: refused as from an unknown connection: {listed}");
        client.close().await;
    }
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
    let mut probe = ConnectOptions::cli(TOKEN, &["operator.read"]);
    probe.client_mode = "probe".into();
    let cases: [(&[(&'static str, &str)], ConnectOptions); 3] =
        [(&[FORWARDED], ConnectOptions::cli(TOKEN, &["operator.admin"])), (&[], ui), (&[FORWARDED], probe.clone())];
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
    // So does `openclaw gateway probe` (client `cli` in mode `probe`).
    let mut prober = WsClient::open(addr, &[]).await.unwrap();
    let hello = prober.connect(&probe).await.unwrap();
    assert_eq!(hello["auth"], json!({"method": "token", "role": "operator", "scopes": ["operator.read"]}));
    assert_eq!(prober.call("health", json!({})).await.unwrap()["ok"], true);
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
async fn a_remote_peer_cannot_flood_the_book_with_pairing_requests() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    for _ in 0..10 {
        let options = ConnectOptions::node(&Identity::generate(), TOKEN);
        request_pairing(addr, &[FORWARDED], &options, "not-paired").await;
    }
    let (error, close) = refused(addr, &[FORWARDED], &ConnectOptions::node(&Identity::generate(), TOKEN)).await;
    assert_eq!((&error["details"]["code"], close.0), (&json!("AUTH_RATE_LIMITED"), 1008), "{error}");
    assert_eq!(pending(addr).await.len(), 10);
    // The owner still pairs new devices from this machine.
    request_pairing(addr, &[], &ConnectOptions::node(&Identity::generate(), TOKEN), "not-paired").await;
    runtime.shutdown().await.unwrap();
}
