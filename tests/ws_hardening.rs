//! The WebSocket side attacked: oversized pre-auth frames, floods of unauthenticated
//! sockets, peers that stop reading, lockouts of paired devices by anonymous clients,
//! grants wider than the operator's, pairing answers before the disk, requests queued
//! before a revoke, idempotency keys reused, and node invokes outliving their session.
//! Each test fails without its fix. A real gateway on 127.0.0.1:0, a Rust client (and
//! raw TCP where the client would be too polite).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::ws::*;
use common::wsclient::{ConnectOptions, Identity, Tamper, WsClient};
use common::{agents, call, FakeModels, Reply, WAIT};
use futures_util::{SinkExt, StreamExt};
use hivegate::config::Config;
use hivegate::gateway::{Kill, StartMain};
use hivegate::runtime::Runtime;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket upgrade by hand; returns the socket after the 101 and the server's first
/// frame (the challenge) as raw bytes.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// Read server frames until a close; returns its code and reason.
async fn raw_close(tcp: &mut TcpStream) -> (u16, String) {
    loop {
        let mut header = [0u8; 2];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut header)).await.expect("no close in time").unwrap();
        let len = match header[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                tcp.read_exact(&mut ext).await.unwrap();
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                tcp.read_exact(&mut ext).await.unwrap();
                u64::from_be_bytes(ext)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        tcp.read_exact(&mut payload).await.unwrap();
        if header[0] & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
        }
    }
}

async fn start_with(edit: impl FnOnce(&mut Config)) -> Runtime {
    let mut config = config(PathBuf::new());
    edit(&mut config);
    Runtime::start(&config, agents(&[])).await.unwrap()
}

#[actix_rt::test]
async fn a_preauth_frame_is_refused_from_its_header_before_its_payload_is_read() {
    let runtime = start().await;
    let mut tcp = raw_upgrade(runtime.http_addr).await;
    // A masked text frame announcing 24 MiB; only its first kilobyte is ever sent. The
    // old reader buffered up to 25 MiB before looking and would wait here forever.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(24u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[b'x'; 1024]);
    tcp.write_all(&frame).await.unwrap();
    assert_eq!(raw_close(&mut tcp).await, (1009, "preauth payload too large".to_string()));
    assert_alive(runtime.http_addr).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn unauthenticated_sockets_are_capped_per_address_with_a_clear_close() {
    let runtime = start_with(|c| {
        c.sockets.max_preauth_connections_per_address = 2;
        c.sockets.max_preauth_connections = 100;
    })
    .await;
    let addr = runtime.http_addr;
    let idle_a = WsClient::open(addr, &[]).await.unwrap();
    let mut idle_b = WsClient::open(addr, &[]).await.unwrap();
    let (mut third, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.unwrap();
    let first = tokio::time::timeout(WAIT, third.next()).await.unwrap().unwrap().unwrap();
    let Message::Close(Some(close)) = first else { panic!("expected a close, got {first:?}") };
    assert_eq!(
        (u16::from(close.code), close.reason.as_ref()),
        (1013, "too many unauthenticated connections from this address (2); try again later")
    );
    // A socket that authenticates gives its place back.
    idle_b.connect(&ConnectOptions::cli(TOKEN, &["operator.read"])).await.unwrap();
    let mut again = WsClient::open(addr, &[]).await.unwrap();
    again.connect(&ConnectOptions::cli(TOKEN, &["operator.read"])).await.unwrap();
    drop(idle_a);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_peer_that_stops_reading_is_closed_as_a_slow_consumer() {
    const LIMIT: usize = 1 << 20;
    let runtime = start_with(|c| c.sockets.max_buffered_bytes = LIMIT).await;
    let addr = runtime.http_addr;
    // A client with a tiny receive buffer that sends requests whose answers echo their
    // 256 KiB ids, and does not read until it has sent them all.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await.unwrap();
    let challenge: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    let nonce = challenge["payload"]["nonce"].as_str().unwrap();
    let connect = json!({"type": "req", "id": "c", "method": "connect",
                         "params": ConnectOptions::cli(TOKEN, &["operator.read"]).params(nonce)});
    ws.send(Message::Text(connect.to_string())).await.unwrap();
    let hello: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(hello["payload"]["policy"]["maxBufferedBytes"], LIMIT, "the limit is advertised");
    const REQUESTS: usize = 64;
    for i in 0..REQUESTS {
        let id = format!("{i}:{}", "x".repeat(256 * 1024));
        let request = json!({"type": "req", "id": id, "method": "health", "params": {}});
        tokio::time::timeout(WAIT, ws.send(Message::Text(request.to_string()))).await.unwrap().unwrap();
    }
    let mut answered = 0;
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("no close in time") {
            Some(Ok(Message::Text(_))) => answered += 1,
            Some(Ok(Message::Close(Some(close)))) => break (u16::from(close.code), close.reason.into_owned()),
            Some(Ok(_)) => {}
            other => panic!("expected the slow-consumer close, got {other:?} after {answered} answers"),
        }
    };
    assert_eq!(close, (1008, "slow consumer".to_string()));
    assert!(answered < REQUESTS, "all {answered} answers were buffered");
    assert_alive(addr).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn anonymous_failures_from_a_shared_address_cannot_lock_out_a_paired_device() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let (node, token) = paired_node(addr, &device, &[]).await;
    node.close().await;
    // Behind a same-host proxy everyone is 127.0.0.1 and remote. An attacker spends
    // every anonymous budget of that address: bad signatures, bad shared tokens, and
    // fresh keys asking to pair.
    let attacker = Identity::generate();
    let bad_signature =
        ConnectOptions::node(&attacker, TOKEN).tamper(Tamper { corrupt_signature: true, ..Tamper::default() });
    for _ in 0..10 {
        let (error, _) = refused(addr, &[FORWARDED], &bad_signature).await;
        assert_eq!(error["details"]["code"], "DEVICE_AUTH_SIGNATURE_INVALID", "{error}");
    }
    let (error, _) = refused(addr, &[FORWARDED], &bad_signature).await;
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED", "the signature budget still holds: {error}");
    for _ in 0..10 {
        request_pairing(addr, &[FORWARDED], &ConnectOptions::node(&Identity::generate(), TOKEN), "not-paired").await;
    }
    let (error, _) = refused(addr, &[FORWARDED], &ConnectOptions::node(&Identity::generate(), TOKEN)).await;
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED", "{error}");
    for _ in 0..10 {
        refused(addr, &[FORWARDED], &ConnectOptions::cli("wrong", &["operator.read"])).await;
    }
    let (error, _) = refused(addr, &[FORWARDED], &ConnectOptions::cli(TOKEN, &["operator.read"])).await;
    assert_eq!(error["details"]["code"], "AUTH_RATE_LIMITED", "the shared-token budget still holds: {error}");

    // The paired node, from the same address, with its device token (and the shared
    // token too, as the node host sends it) still gets in.
    let by_token = ConnectOptions::node(&device, TOKEN).with_device_token(&token);
    let mut client = WsClient::open(addr, &[FORWARDED]).await.unwrap();
    let hello = client.connect(&by_token).await.unwrap();
    assert_eq!(hello["auth"]["method"], "device-token", "{hello}");
    let both = ConnectOptions { token: Some(TOKEN.into()), ..by_token.clone() };
    let mut client2 = WsClient::open(addr, &[FORWARDED]).await.unwrap();
    let hello = client2.connect(&both).await.unwrap();
    assert_eq!(hello["type"], "hello-ok");
    client.close().await;
    client2.close().await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn managing_a_device_needs_every_scope_of_its_grant() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let admin = Identity::generate();
    pair_operator(addr, &admin, &["operator.admin"]).await;
    let mut live = WsClient::connected(addr, &[], &ConnectOptions::operator(&admin, TOKEN, &["operator.admin"])).await;
    let denied = |scope: &str| {
        json!({"code": "INVALID_REQUEST", "message": format!("device pairing approval denied: approver lacks {scope}; approve from a connection that holds it"),
               "details": {"code": "MISSING_SCOPE", "missingScope": scope}})
    };
    let target = json!({"deviceId": admin.device_id, "role": "operator"});
    for method in ["device.token.rotate", "device.token.revoke"] {
        let error = cli_call(addr, &["operator.pairing"], method, target.clone()).await.unwrap_err();
        assert_eq!(error, denied("operator.admin"), "{method}");
    }
    let remove = json!({"deviceId": admin.device_id});
    let error = cli_call(addr, &["operator.pairing"], "device.pair.remove", remove.clone()).await.unwrap_err();
    assert_eq!(error, denied("operator.admin"));
    // Nothing happened: still paired, and its socket is still open and authorized.
    assert_paired(addr, &admin).await;
    assert_eq!(live.call("health", json!({})).await.unwrap()["ok"], true);
    // With the scope, it works.
    cli_call(addr, &["operator.pairing", "operator.admin"], "device.pair.remove", remove).await.unwrap();
    assert_eq!(live.expect_close().await, (1008, "device removed".to_string()));
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_pairing_change_is_answered_only_once_it_is_on_disk() {
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&config(state.path().to_path_buf()), agents(&[])).await.unwrap();
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let options = ConnectOptions::node(&device, TOKEN);
    let request_id = request_pairing(addr, &[], &options, "not-paired").await;

    // Another process holds the database's write lock: the approval cannot commit.
    let db = rusqlite::Connection::open(state.path().join(hivegate::store::DB_FILE)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let error = approve(addr, &request_id, &["operator.pairing"]).await.unwrap_err();
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("the change could not be saved (") && message.ends_with("nothing was changed"));
    assert_eq!(error["retryable"], true);
    // Rolled back: what memory says is what the disk says.
    assert_eq!(pending(addr).await.len(), 1);
    assert!(paired_ids(addr).await.is_empty());
    let (refusal, _) = refused(addr, &[], &options).await;
    assert_eq!(refusal["code"], "NOT_PAIRED");

    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    approve(addr, &request_id, &["operator.pairing"]).await.unwrap();
    runtime.shutdown().await.unwrap();
    let runtime = Runtime::start(&config(state.path().to_path_buf()), agents(&[])).await.unwrap();
    assert_paired(runtime.http_addr, &device).await;
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn requests_queued_before_a_revoke_do_not_run_with_the_old_scopes() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    pair_operator(addr, &device, &["operator.pairing"]).await;
    let options = ConnectOptions::operator(&device, TOKEN, &["operator.pairing"]);
    let mut client = WsClient::open(addr, &[]).await.unwrap();
    let hello = client.connect(&options).await.unwrap();
    let conn_id: u64 = hello["server"]["connId"].as_str().unwrap().rsplit('-').next().unwrap().parse().unwrap();
    let params = json!({"deviceId": device.device_id, "role": "operator"});
    cli_call(addr, &["operator.pairing"], "device.token.revoke", params).await.unwrap();
    // A request this connection queued before its close reached it: it must not run.
    let queued =
        hivegate::hub::Call { conn_id, request_id: "q".into(), method: "device.pair.list".into(), params: json!({}) };
    let reply = runtime.hub.send(queued).await.unwrap();
    assert_eq!(
        reply.unwrap_err(),
        serde_json::from_value(json!({"code": "UNAVAILABLE",
            "message": "this connection is no longer authorized (its device was revoked, removed or disconnected)"}))
        .unwrap()
    );
    assert_eq!(client.expect_close().await, (1008, "device token revoked".to_string()));
    runtime.shutdown().await.unwrap();
}

/// Each `agent.wait` for a run nobody knows waits out its timeout on the hub; one
/// connection may have 256 requests unanswered, and the next is refused at once.
#[actix_rt::test]
async fn a_connection_may_have_256_requests_unanswered_and_no_more() {
    let runtime = start().await;
    let mut operator = cli(runtime.http_addr, &["operator.read", "operator.write"]).await;
    let wait = |i: usize| {
        json!({"type": "req", "id": format!("w{i}"), "method": "agent.wait",
               "params": {"runId": format!("nobody-{i}"), "timeoutMs": 60_000}})
    };
    operator.send_together(&(0..=256).map(wait).collect::<Vec<_>>()).await;
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            let frame = operator.next_frame().await;
            if frame["type"] == "res" {
                return frame;
            }
        }
    })
    .await
    .expect("no answer while 256 waits are out");
    assert_eq!(refused["id"], "w256", "{refused}");
    assert_eq!(refused["error"]["code"], "UNAVAILABLE", "{refused}");
    assert_eq!(refused["error"]["retryable"], true, "{refused}");
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn idempotency_keys_are_per_caller_and_bound_to_their_params() {
    let runtime = start().await;
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let id = device.device_id.clone();
    let (mut node, _) = paired_node(addr, &device, &["system.which"]).await;
    let answer = |n: u64| json!({"n": n});
    let mut answered = 0;
    let mut operator = cli(addr, &["operator.write"]).await;
    let sh = json!({"nodeId": id, "command": "system.which", "params": {"bins": ["sh"]}, "idempotencyKey": "k"});
    let (first, _) = tokio::join!(operator.call("node.invoke", sh.clone()), async {
        answered += 1;
        answer_invoke(&mut node, &id, &answer(1)).await
    });
    assert_eq!(first.unwrap()["payload"], answer(1));
    // The same key with other params is refused, not answered with the first result.
    let rm = json!({"nodeId": id, "command": "system.which", "params": {"bins": ["rm"]}, "idempotencyKey": "k"});
    let error = operator.call("node.invoke", rm).await.unwrap_err();
    assert_eq!(
        error,
        json!({"code": "INVALID_REQUEST", "message": "idempotencyKey was already used with other params for this node and command; use a new key"})
    );
    assert_eq!(operator.call("node.invoke", sh.clone()).await.unwrap()["payload"], answer(1), "a true repeat");
    // Another caller who knows the key gets its own invoke, not the first caller's result.
    let other = Identity::generate();
    pair_operator(addr, &other, &["operator.write"]).await;
    let mut stranger =
        WsClient::connected(addr, &[], &ConnectOptions::operator(&other, TOKEN, &["operator.write"])).await;
    let (theirs, _) = tokio::join!(stranger.call("node.invoke", sh), async {
        answered += 1;
        answer_invoke(&mut node, &id, &answer(2)).await
    });
    assert_eq!(theirs.unwrap()["payload"], answer(2));
    assert_eq!(answered, 2);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn killing_a_session_cancels_its_node_invoke_at_once() {
    let device = Identity::generate();
    let node_id = device.device_id.clone();
    let script_node = node_id.clone();
    let fake = FakeModels::start(move |_| {
        Reply::Calls(vec![call(
            "which",
            "nodes_invoke",
            json!({"nodeId": script_node, "command": "system.which", "params": {}, "timeoutMs": 600_000}),
        )])
    });
    let agent = "id = \"ops\"\nmodel = \"fake/ops\"\n[tools]\nallow = [\"nodes_invoke\"]\n";
    let runtime = start_with_fake(&fake, &[agent]).await;
    let (mut node, _) = paired_node(runtime.http_addr, &device, &["system.which"]).await;
    let start = StartMain {
        agent_id: "ops".into(),
        task: "which".into(),
        run_timeout: None,
        budget_tokens: None,
        budget_usd: None,
        run_id: None,
        session_key: None,
    };
    let run = runtime.gateway.send(start).await.unwrap().unwrap();
    let request = node.wait_event("node.invoke.request").await;
    let invoke_id = request["payload"]["id"].clone();
    runtime.gateway.send(Kill { caller: None, target: run.session_key }).await.unwrap().unwrap();
    // The node hears at once that nobody waits any more (not after 10 minutes)...
    let cancel = node.wait_event("node.invoke.cancel").await;
    assert_eq!(cancel, json!({"type": "event", "event": "node.invoke.cancel", "payload": {"invokeId": invoke_id}}));
    // ...and the hub no longer holds the invoke.
    let late = json!({"id": invoke_id, "nodeId": node_id, "ok": true, "payloadJSON": "{}"});
    let error = node.call("node.invoke.result", late).await.unwrap_err();
    assert!(error["message"].as_str().unwrap().starts_with("unknown invoke id"), "{error}");
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}
