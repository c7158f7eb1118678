//! The operator client against a fake WebSocket server that checks every frame.
use super::*;
use serde_json::json;
use tokio::net::TcpListener;

type ServerSocket = WebSocketStream<TcpStream>;
const WAIT: Duration = Duration::from_secs(5);

/// A fake gateway accepting one connection and running `script` on it; returns its url.
async fn fake_gateway<F, Fut, T>(script: F) -> (String, tokio::task::JoinHandle<T>)
where
    F: FnOnce(ServerSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        script(ws).await
    });
    (url, task)
}

async fn send(ws: &mut ServerSocket, frame: Value) {
    ws.send(Message::Text(frame.to_string())).await.unwrap();
}

async fn recv(ws: &mut ServerSocket) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn challenge() -> Value {
    json!({"type": "event", "event": "connect.challenge", "payload": {"nonce": "n-1", "ts": 1795490205211_u64}})
}

/// Challenge, hello-ok, then `events` and `answer(request_id)`; returns (connect, request, final close).
async fn happy_script(
    mut ws: ServerSocket,
    events: Vec<Value>,
    answer: fn(&str) -> Value,
) -> (Value, Value, Option<Message>) {
    send(&mut ws, challenge()).await;
    let connect = recv(&mut ws).await;
    let id = connect["id"].clone();
    send(&mut ws, json!({"type": "res", "id": id, "ok": true, "payload": {"type": "hello-ok", "protocol": 4}})).await;
    let request = recv(&mut ws).await;
    for event in events {
        send(&mut ws, event).await;
    }
    send(&mut ws, answer(request["id"].as_str().unwrap())).await;
    let close = tokio::time::timeout(WAIT, ws.next()).await.unwrap().map(|m| m.unwrap());
    (connect, request, close)
}

/// The connect frame with its random parts checked and blanked.
fn normalized(mut connect: Value) -> Value {
    let id = connect["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("1:") && uuid::Uuid::parse_str(&id[2..]).is_ok(), "connect id {id}");
    let instance = connect["params"]["client"]["instanceId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(instance).is_ok());
    connect["id"] = json!("<id>");
    connect["params"]["client"]["instanceId"] = json!("<uuid>");
    connect
}

fn expected_client(id: &str, mode: &str, display_name: Option<&str>) -> Value {
    let (platform, family) = platform_identity(std::env::consts::OS);
    let mut client = json!({"id": id, "version": env!("CARGO_PKG_VERSION"), "platform": platform,
                            "mode": mode, "instanceId": "<uuid>"});
    if let Some(family) = family {
        client["deviceFamily"] = json!(family);
    }
    if let Some(name) = display_name {
        client["displayName"] = json!(name);
    }
    client
}

fn ok_list(id: &str) -> Value {
    json!({"type": "res", "id": id, "ok": true, "payload": {"pending": [], "paired": []}})
}

#[tokio::test]
async fn a_call_sends_the_openclaw_cli_connect_frame_then_the_request_and_closes() {
    let (url, server) = fake_gateway(|ws| happy_script(ws, vec![], ok_list)).await;
    let client = OperatorClient::new(url, Some("s3cret".into())).unwrap();
    let payload = client.call(&["operator.pairing"], "device.pair.list", json!({})).await.unwrap();
    assert_eq!(payload, json!({"pending": [], "paired": []}));
    let (connect, request, close) = server.await.unwrap();
    let expected = json!({"type": "req", "id": "<id>", "method": "connect", "params": {
        "minProtocol": 4, "maxProtocol": 4, "client": expected_client("cli", "cli", None), "caps": [],
        "auth": {"token": "s3cret"}, "role": "operator", "scopes": ["operator.pairing"]}});
    assert_eq!(normalized(connect), expected);
    let request_id = request["id"].as_str().unwrap().to_string();
    assert!(request_id.starts_with("2:") && uuid::Uuid::parse_str(&request_id[2..]).is_ok());
    assert_eq!(request, json!({"type": "req", "id": request_id, "method": "device.pair.list", "params": {}}));
    assert_eq!(close, Some(Message::Close(None)), "the cli ends with an empty close frame");
}

#[tokio::test]
async fn without_a_token_auth_is_omitted_and_the_backend_identity_names_the_method() {
    let (url, server) = fake_gateway(|ws| happy_script(ws, vec![], ok_list)).await;
    let client = OperatorClient::new(url, Some(String::new())).unwrap().with_identity(ClientIdentity::Backend);
    client.call(&["operator.pairing", "operator.admin"], "node.pair.approve", json!({"requestId": "r"})).await.unwrap();
    let (connect, _, _) = server.await.unwrap();
    let client = expected_client("gateway-client", "backend", Some("gateway:node.pair.approve"));
    let expected = json!({"type": "req", "id": "<id>", "method": "connect", "params": {
        "minProtocol": 4, "maxProtocol": 4, "client": client, "caps": [], "role": "operator",
        "scopes": ["operator.pairing", "operator.admin"]}});
    assert_eq!(normalized(connect), expected);
}

#[tokio::test]
async fn events_before_the_response_are_skipped() {
    let events = vec![
        json!({"type": "event", "event": "tick", "payload": {"ts": 1}, "seq": 1}),
        json!({"type": "event", "event": "device.pair.resolved", "payload": {"requestId": "r"}, "seq": 2}),
        json!({"type": "res", "id": "9:other", "ok": false, "error": {"code": "X", "message": "not ours"}}),
    ];
    let answer = |id: &str| json!({"type": "res", "id": id, "ok": true, "payload": {"requestId": "r"}});
    let (url, server) = fake_gateway(move |ws| happy_script(ws, events, answer)).await;
    let client = OperatorClient::new(url, Some("t".into())).unwrap();
    let payload = client.call(&["operator.admin"], "device.pair.approve", json!({"requestId": "r"})).await.unwrap();
    assert_eq!(payload, json!({"requestId": "r"}));
    server.await.unwrap();
}

#[tokio::test]
async fn an_rpc_error_keeps_code_message_and_details() {
    let answer = |id: &str| {
        json!({"type": "res", "id": id, "ok": false, "error": {"code": "FORBIDDEN", "message": "missing scope",
               "details": {"code": "MISSING_SCOPE", "missingScope": "operator.admin"}}})
    };
    let (url, server) = fake_gateway(move |ws| happy_script(ws, vec![], answer)).await;
    let client = OperatorClient::new(url, Some("t".into())).unwrap();
    let err = client.call(&["operator.pairing"], "device.pair.approve", json!({})).await.unwrap_err();
    match &err {
        ClientError::Rpc { method, code, message, details } => {
            assert_eq!(
                (method.as_str(), code.as_str(), message.as_str()),
                ("device.pair.approve", "FORBIDDEN", "missing scope")
            );
            assert_eq!(details, &json!({"code": "MISSING_SCOPE", "missingScope": "operator.admin"}));
        }
        other => panic!("expected an rpc error, got {other:?}"),
    }
    assert_eq!(err.to_string(), "device.pair.approve failed: FORBIDDEN: missing scope");
    server.await.unwrap();
}

#[tokio::test]
async fn a_refused_handshake_reports_the_error_and_the_1008_close() {
    let (url, server) = fake_gateway(|mut ws| async move {
        send(&mut ws, challenge()).await;
        let connect = recv(&mut ws).await;
        let error = json!({"code": "NOT_PAIRED", "message": "pairing required: device is not approved yet",
                           "details": {"code": "PAIRING_REQUIRED", "requestId": "r-1"}});
        send(&mut ws, json!({"type": "res", "id": connect["id"], "ok": false, "error": error})).await;
        let reason = "pairing required: device is not approved yet (requestId: r-1)";
        ws.close(Some(CloseFrame { code: CloseCode::Policy, reason: reason.into() })).await.unwrap();
    })
    .await;
    let client = OperatorClient::new(url, Some("wrong-token".into())).unwrap();
    let err = client.call(&["operator.read"], "node.list", json!({})).await.unwrap_err();
    match &err {
        ClientError::HandshakeRefused { code, details, close, .. } => {
            assert_eq!(code, "NOT_PAIRED");
            assert_eq!(details["requestId"], "r-1");
            let reason = "pairing required: device is not approved yet (requestId: r-1)".to_string();
            assert_eq!(close, &Some(CloseInfo { code: 1008, reason }));
        }
        other => panic!("expected a handshake refusal, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("NOT_PAIRED") && text.contains("close 1008"), "{text}");
    assert!(!text.contains("wrong-token") && !format!("{client:?}").contains("wrong-token"));
    server.await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_challenges_times_out_within_the_deadline() {
    let (url, server) = fake_gateway(|mut ws| async move {
        let _ = tokio::time::timeout(WAIT, ws.next()).await;
    })
    .await;
    let client = OperatorClient::new(url, None).unwrap().with_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = client.call(&["operator.read"], "node.list", json!({})).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { stage: Stage::Challenge, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded: {:?}", started.elapsed());
    server.await.unwrap();
}

#[tokio::test]
async fn a_challenge_without_a_nonce_is_refused_with_1008() {
    let (url, server) = fake_gateway(|mut ws| async move {
        send(&mut ws, json!({"type": "event", "event": "connect.challenge", "payload": {"ts": 1}})).await;
        tokio::time::timeout(WAIT, ws.next()).await.unwrap().map(|m| m.unwrap())
    })
    .await;
    let err = OperatorClient::new(url, None).unwrap().call(&[], "health", json!({})).await.unwrap_err();
    assert!(matches!(err, ClientError::BadFrame { stage: Stage::Challenge, .. }), "{err:?}");
    let reason = "connect challenge missing nonce";
    let expected = Message::Close(Some(CloseFrame { code: CloseCode::Policy, reason: reason.into() }));
    assert_eq!(server.await.unwrap(), Some(expected));
}

#[tokio::test]
async fn nothing_listening_says_the_url_and_how_to_start_the_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    drop(listener);
    let err = OperatorClient::new(url.clone(), None).unwrap().call(&[], "health", json!({})).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::Connect { .. }) && text.contains(&url) && text.contains("hivegate serve"));
}

#[test]
fn platforms_are_reported_as_the_openclaw_client_reports_them() {
    assert_eq!(platform_identity("linux"), ("linux", Some("Linux")));
    assert_eq!(platform_identity("macos"), ("macos", Some("Mac")));
    assert_eq!(platform_identity("freebsd"), ("freebsd", None));
}

#[test]
fn only_ws_urls_are_accepted() {
    assert!(matches!(OperatorClient::new("http://x/", None), Err(ClientError::InvalidUrl { .. })));
    assert!(matches!(OperatorClient::new("wss://x/", None), Err(ClientError::InvalidUrl { .. })));
}
