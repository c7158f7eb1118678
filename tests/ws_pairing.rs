//! Pairing over the WebSocket, end to end: scope upgrades, approvers, superseded
//! requests, revoked tokens, state surviving a restart, and node invokes from operators
//! and from sessions. A real gateway on 127.0.0.1:0 and a Rust client that speaks the
//! protocol (`common/wsclient.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::ws::*;
use common::wsclient::{ConnectOptions, Identity, WsClient};
use common::{agents, call, tool_results, FakeModels, Reply, WAIT};
use hivegate::config::Config;
use hivegate::gateway::{Outcome, StartMain, WaitRun};
use hivegate::runtime::Runtime;
use serde_json::json;
use sha2::Digest as _;

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
    // ...but only for the same command on the same node, and never past the approval check.
    let other_command = json!({"nodeId": id, "command": "system.run", "params": {}, "idempotencyKey": "which-1"});
    assert_eq!(operator.call("node.invoke", other_command).await.unwrap_err()["code"], "FORBIDDEN");
    let other_node =
        json!({"nodeId": "no-such-node", "command": "system.which", "params": {}, "idempotencyKey": "which-1"});
    assert_eq!(operator.call("node.invoke", other_node).await.unwrap_err()["code"], "FORBIDDEN");

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
    let agent = "id = \"ops\"\nmodel = \"fake/ops\"\n[tools]\nallow = [\"nodes_invoke\"]\n";
    let runtime = start_with_fake(&fake, &[agent]).await;
    let (mut node, _) = paired_node(runtime.http_addr, &device, &["system.which"]).await;

    let start = StartMain {
        agent_id: "ops".into(),
        task: "where is sh?".into(),
        run_timeout: None,
        budget_tokens: None,
        budget_usd: None,
        run_id: None,
        session_key: None,
    };
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

#[actix_rt::test]
async fn without_a_gateway_token_a_revoked_device_is_locked_out() {
    let config = Config { gateway_token: None, ..config(PathBuf::new()) };
    let runtime = Runtime::start(&config, agents(&[])).await.unwrap();
    let addr = runtime.http_addr;
    let device = Identity::generate();
    let signature_only = || ConnectOptions { token: None, ..ConnectOptions::node(&device, "") };
    let request_id = request_pairing(addr, &[], &signature_only(), "not-paired").await;
    // With no token configured, the owner's CLI on direct loopback needs none either.
    let owner = ConnectOptions { token: None, ..ConnectOptions::cli("", &["operator.pairing"]) };
    let mut cli = WsClient::connected(addr, &[], &owner).await;
    cli.call("device.pair.approve", json!({"requestId": request_id})).await.unwrap();

    // The first connect picks up the token minted at approval...
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let hello = node.connect(&signature_only()).await.unwrap();
    let token = hello["auth"]["deviceToken"].as_str().unwrap().to_string();
    node.close().await;
    // ...after which the signature alone is not enough, and the token is.
    let (error, close) = refused(addr, &[], &signature_only()).await;
    assert_eq!((&error["details"]["code"], close.0), (&json!("AUTH_TOKEN_MISSING"), 1008), "{error}");
    let with_token = || signature_only().with_device_token(&token);
    WsClient::connected(addr, &[], &with_token()).await.close().await;

    // Revoked: neither the token nor the bare signature gets in.
    cli.call("device.token.revoke", json!({"deviceId": device.device_id, "role": "node"})).await.unwrap();
    let (error, close) = refused(addr, &[], &with_token()).await;
    assert_eq!((&error["details"]["code"], close.0), (&json!("AUTH_DEVICE_TOKEN_MISMATCH"), 1008), "{error}");
    let (error, _) = refused(addr, &[], &signature_only()).await;
    assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISSING", "{error}");
    runtime.shutdown().await.unwrap();
}

/// An operator's `agent` request, as the OpenClaw CLI sends it: the accepted ack, the
/// final result with the same id when the run ends, and meanwhile the run's `agent` and
/// `chat` events on every operator connection (here a passive observer too). A repeat
/// of the key answers the remembered result; bad params are refused by name.
#[actix_rt::test]
async fn an_agent_request_is_acknowledged_streamed_to_operators_and_answered_at_the_end() {
    let fake = FakeModels::start(|_| Reply::Text("the answer".into()));
    let runtime = start_with_fake(&fake, &["id = \"worker\"\nmodel = \"fake/worker\"\n"]).await;
    let addr = runtime.http_addr;
    let mut observer = cli(addr, &["operator.read"]).await;
    let mut caller = cli(addr, &["operator.write"]).await;
    let params = json!({"message": "go", "agentId": "worker", "sessionKey": "agent:worker:k1",
        "deliver": false, "timeout": 600, "idempotencyKey": "k1"});
    caller.send_json(&json!({"type": "req", "id": "r1", "method": "agent", "params": params})).await;
    let mut responses = Vec::new();
    let mut seen = Vec::new();
    while responses.len() < 2 {
        let frame = caller.next_frame().await;
        match frame["type"].as_str() {
            Some("res") => {
                assert_eq!(frame["id"], "r1");
                responses.push(frame["payload"].clone());
            }
            _ => seen.push(frame),
        }
    }
    let ack = &responses[0];
    assert_eq!(
        (&ack["status"], &ack["runId"], &ack["sessionKey"]),
        (&json!("accepted"), &json!("k1"), &json!("agent:worker:k1"))
    );
    let result = &responses[1];
    assert_eq!((&result["runId"], &result["status"]), (&json!("k1"), &json!("ok")));
    assert_eq!(result["result"]["payloads"], json!([{"text": "the answer", "mediaUrl": null}]));
    // The observer saw the run: lifecycle, the streamed answer, the end, with chat mirrors.
    let mut shape = Vec::new();
    while shape.last().map(|(e, s): &(String, String)| (e.as_str(), s.as_str())) != Some(("chat", "final")) {
        let event = observer.next_frame().await;
        assert!(event["seq"].is_u64(), "broadcast events carry the connection's seq: {event}");
        let payload = &event["payload"];
        assert_eq!((&payload["runId"], &payload["sessionKey"]), (&json!("k1"), &json!("agent:worker:k1")));
        let kind = match event["event"].as_str().unwrap() {
            "agent" if payload["stream"] == "lifecycle" => payload["data"]["phase"].as_str().unwrap().to_string(),
            "agent" => payload["stream"].as_str().unwrap().to_string(),
            _ => payload["state"].as_str().unwrap().to_string(),
        };
        shape.push((event["event"].as_str().unwrap().to_string(), kind));
    }
    let shape: Vec<(&str, &str)> = shape.iter().map(|(e, k)| (e.as_str(), k.as_str())).collect();
    // The fake streams the answer in three pieces: three assistant events, each mirrored.
    let streamed = [("agent", "assistant"), ("chat", "delta")].repeat(3);
    let expected: Vec<(&str, &str)> = [("agent", "start"), ("agent", "model")]
        .into_iter()
        .chain(streamed)
        .chain([("agent", "usage"), ("agent", "end"), ("chat", "final")])
        .collect();
    assert_eq!(shape, expected);
    // A repeat after the end: the same result, once, with no new model call.
    let calls = fake.requests_for("worker").len();
    assert_eq!(caller.call("agent", params.clone()).await.unwrap(), *result);
    assert_eq!(fake.requests_for("worker").len(), calls);
    // The session's conversation, as chat.history gives it.
    let history = caller.call("chat.history", json!({"sessionKey": "agent:worker:k1", "limit": 2})).await.unwrap();
    assert_eq!(
        history["messages"],
        json!([{"role": "user", "content": "go"}, {"role": "assistant", "content": [{"type": "text", "text": "the answer"}]}])
    );
    let too_many = caller.call("chat.history", json!({"sessionKey": "agent:worker:k1", "limit": 5000})).await;
    assert!(too_many.unwrap_err()["message"].as_str().unwrap().contains("limit must be from 1 to 1000"));
    // Reset forgets the session (admin, as OpenClaw's session maintenance); the next
    // history has nothing, and deleting it again finds nothing.
    let admin = &["operator.admin"];
    let reset = cli_call(addr, admin, "sessions.reset", json!({"key": "agent:worker:k1"})).await.unwrap();
    assert_eq!(reset, json!({"ok": true, "key": "agent:worker:k1", "status": "reset"}));
    let gone = caller.call("chat.history", json!({"sessionKey": "agent:worker:k1"})).await.unwrap_err();
    assert_eq!(gone["message"], "no session agent:worker:k1");
    let again = cli_call(addr, admin, "sessions.delete", json!({"key": "agent:worker:k1"})).await.unwrap();
    assert_eq!(again["status"], "not-found");
    // Bad params are refused by name.
    let no_key = caller.call("agent", json!({"message": "go"})).await.unwrap_err();
    assert!(no_key["message"].as_str().unwrap().contains("idempotencyKey"), "{no_key}");
    let bad_key = json!({"message": "go", "agentId": "worker", "sessionKey": "agent:other:x", "idempotencyKey": "k2"});
    let bad = caller.call("agent", bad_key).await.unwrap_err();
    assert_eq!(
        bad["message"],
        "session key 'agent:other:x' is not a main session of agent 'worker'; expected agent:worker:<name>"
    );
    // The same key twice back to back: one run, and the repeat answers in_flight. (The
    // hub counts the run active from the moment it asks the gateway, so a repeat that
    // arrives before the gateway answered cannot start a second one; this test does
    // not force that interleaving.)
    let twice = json!({"message": "go", "agentId": "worker", "sessionKey": "agent:worker:k9", "idempotencyKey": "k9"});
    for id in ["t1", "t2"] {
        caller.send_json(&json!({"type": "req", "id": id, "method": "agent", "params": twice})).await;
    }
    let mut first = std::collections::HashMap::new();
    while first.len() < 2 {
        let frame = caller.next_frame().await;
        if frame["type"] == "res" {
            first.entry(frame["id"].as_str().unwrap().to_string()).or_insert(frame);
        }
    }
    let statuses: Vec<&serde_json::Value> = ["t1", "t2"].iter().map(|id| &first[*id]["payload"]["status"]).collect();
    assert_eq!(statuses, [&json!("accepted"), &json!("in_flight")], "{first:?}");
    // With no operator connected the hub stops following session events, so an
    // unwatched gateway builds none.
    assert!(runtime.events.watched());
    observer.close().await;
    caller.close().await;
    let stopped = tokio::time::timeout(WAIT, async {
        while runtime.events.watched() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(stopped.await.is_ok(), "the hub still watches session events with no operator connected");
    // An operator that may not read runs (pairing only) does not start it again.
    let mut approver = cli(addr, &["operator.pairing"]).await;
    assert_eq!(approver.call("device.pair.list", json!({})).await.unwrap()["pending"], json!([]));
    assert!(!runtime.events.watched(), "a pairing-only operator made the hub follow session events");
    approver.close().await;
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// Operators see a run's tool calls as `item` events (a spawn titled with its label, a
/// refused call `failed` with its error), its usage after each model call, and the
/// child's own run with `spawnedBy`.
#[actix_rt::test]
async fn operators_see_tool_items_usage_and_the_childs_run() {
    let fake = FakeModels::start(|r| match (r.model.as_str(), tool_results(r).len()) {
        ("leaf", _) => Reply::Text("leaf done".into()),
        (_, 0) => Reply::Calls(vec![
            call("s1", "sessions_spawn", json!({"task": "dig", "label": "c1", "agentId": "leaf"})),
            call("bad", "nodes_invoke", json!({})),
            call("y", "sessions_yield", json!({})),
        ]),
        _ => Reply::Text("all done".into()),
    });
    let boss = "id = \"boss\"\nmodel = \"fake/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"leaf\"]\n";
    let runtime = start_with_fake(&fake, &[boss, "id = \"leaf\"\nmodel = \"fake/leaf\"\n"]).await;
    let mut observer = cli(runtime.http_addr, &["operator.read"]).await;
    let run = runtime.gateway.send(StartMain::new("boss", "go")).await.unwrap().unwrap();
    let mut events = Vec::new();
    loop {
        let event = observer.next_frame().await;
        let payload = event["payload"].clone();
        let root_final =
            event["event"] == "chat" && payload["state"] == "final" && payload["runId"] == json!(run.run_id);
        if event["event"] == "agent" {
            events.push(payload);
        }
        if root_final {
            break;
        }
    }
    let items: Vec<&serde_json::Value> = events.iter().filter(|e| e["stream"] == "item").map(|e| &e["data"]).collect();
    let brief: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["phase"].as_str().unwrap(), d["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        brief,
        [
            ("sessions_spawn", "start", "running"),
            ("sessions_spawn", "end", "completed"),
            ("nodes_invoke", "start", "running"),
            ("nodes_invoke", "end", "failed"),
            ("sessions_yield", "start", "running"),
            ("sessions_yield", "end", "completed"),
        ]
    );
    assert_eq!(
        (&items[0]["title"], &items[0]["meta"], &items[0]["itemId"]),
        (&json!("Sub-agent c1"), &json!("c1"), &json!("tool:s1"))
    );
    assert!(items[3]["error"].as_str().unwrap().contains("nodes_invoke is not available"), "{}", items[3]);
    // The child's run, attributed to the parent.
    let child: Vec<&serde_json::Value> = events.iter().filter(|e| e["spawnedBy"] == "agent:boss:main").collect();
    assert!(child.iter().any(|e| e["data"]["phase"] == "start") && child.iter().any(|e| e["data"]["phase"] == "end"));
    // Usage after each of the parent's two model calls, cumulative.
    let usage: Vec<u64> = events
        .iter()
        .filter(|e| e["stream"] == "usage" && e["sessionKey"] == "agent:boss:main")
        .map(|e| e["data"]["totalTokens"].as_u64().unwrap())
        .collect();
    assert_eq!(usage.len(), 2, "{usage:?}");
    assert!(usage[0] > 0 && usage[1] > usage[0], "{usage:?}");
    let ended = runtime.gateway.send(WaitRun { run_id: run.run_id }).await.unwrap().unwrap();
    assert_eq!(tokio::time::timeout(WAIT, ended).await.unwrap().unwrap().outcome, Outcome::Ok);
    observer.close().await;
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// agents.list and models.list as the CLI reads them (a subagent default model is one
/// of the models), and chat.abort of a running child: it ends `killed` and its parent
/// hears of it at once.
#[actix_rt::test]
async fn agents_and_models_are_listed_and_chat_abort_stops_a_running_child() {
    let fake = FakeModels::start(|r| match (r.model.as_str(), tool_results(r).len()) {
        ("cheap", _) => Reply::Hang,
        (_, 0) => Reply::Calls(vec![
            call("s1", "sessions_spawn", json!({"task": "dig", "label": "c1", "agentId": "leaf"})),
            call("y", "sessions_yield", json!({})),
        ]),
        _ => Reply::Text("parent saw the abort".into()),
    });
    let boss = "id = \"boss\"\nmodel = \"fake/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"leaf\"]\nmodel = \"fake/cheap\"\n";
    let runtime = start_with_fake(&fake, &[boss, "id = \"leaf\"\nmodel = \"fake/leaf\"\n"]).await;
    let mut operator = cli(runtime.http_addr, &["operator.read", "operator.write"]).await;
    let agents = operator.call("agents.list", json!({})).await.unwrap();
    let ids: Vec<&str> = agents["agents"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"boss") && ids.contains(&"leaf"), "{agents}");
    let models = operator.call("models.list", json!({})).await.unwrap();
    let listed: Vec<String> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m["provider"].as_str().unwrap(), m["id"].as_str().unwrap()))
        .collect();
    assert!(["fake/boss", "fake/leaf", "fake/cheap"].iter().all(|m| listed.iter().any(|l| l == m)), "{models}");

    let run = runtime.gateway.send(StartMain::new("boss", "go")).await.unwrap().unwrap();
    let child = loop {
        let frame = operator.next_frame().await;
        if frame["payload"]["spawnedBy"] == "agent:boss:main" {
            break frame["payload"]["sessionKey"].as_str().unwrap().to_string();
        }
    };
    let aborted = operator.call("chat.abort", json!({"sessionKey": child})).await.unwrap();
    assert_eq!((&aborted["ok"], &aborted["aborted"]), (&json!(true), &json!(true)), "{aborted}");
    let ended = runtime.gateway.send(WaitRun { run_id: run.run_id }).await.unwrap().unwrap();
    let summary = tokio::time::timeout(WAIT, ended).await.unwrap().unwrap();
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "parent saw the abort"));
    let child = runtime.registry.get(&child.as_str().into()).map(|e| e.outcome);
    assert_eq!(child, Some(Some(Outcome::Killed)));
    // Nothing left to abort.
    let again = operator.call("chat.abort", json!({"sessionKey": "agent:boss:main"})).await.unwrap();
    assert_eq!(again, json!({"ok": true, "aborted": false, "runIds": []}));
    operator.close().await;
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}
