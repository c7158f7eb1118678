//! The full pairing handshake of an already paired node, on loopback: TCP connect,
//! WebSocket upgrade, `connect.challenge`, a v3-signed `connect` carrying the device
//! token, Ed25519 verification and token check in the gateway, `hello-ok` back.
//!
//!     cargo bench --bench handshake
//!
//! Setup (untimed) pairs a device the way a real node does: it asks, an operator
//! approves over the socket, and the node picks up its device token from hello-ok.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use hivegate::agent::Agents;
use hivegate::client::OperatorClient;
use hivegate::config::{Config, Secret};
use hivegate::runtime::Runtime;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "bench-token";

struct Device {
    key: SigningKey,
    id: String,
    public_key: String,
}

impl Device {
    fn new() -> Device {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let raw = key.verifying_key().to_bytes();
        let id = Sha256::digest(raw).iter().map(|b| format!("{b:02x}")).collect();
        Device { key, id, public_key: URL_SAFE_NO_PAD.encode(raw) }
    }

    /// A node `connect` answering `challenge`, authenticated by `auth`.
    fn connect(&self, challenge: &Value, auth: Value, token: &str) -> String {
        let nonce = challenge["payload"]["nonce"].as_str().unwrap();
        let ts = challenge["payload"]["ts"].as_u64().unwrap();
        let signed = format!("v3|{}|node-host|node|node||{ts}|{token}|{nonce}|linux|linux", self.id);
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(signed.as_bytes()).to_bytes());
        json!({"type": "req", "id": "1:bench", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "node-host", "version": "bench", "platform": "linux", "deviceFamily": "Linux", "mode": "node"},
            "role": "node", "scopes": [], "caps": [], "commands": [], "auth": auth,
            "device": {"id": self.id, "publicKey": self.public_key, "signature": signature, "signedAt": ts, "nonce": nonce}}})
        .to_string()
    }
}

/// One handshake; returns the `connect` response and the time it took.
async fn handshake(url: &str, device: &Device, auth: Value, token: &str) -> (Value, Duration) {
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let challenge: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected the challenge, got {other:?}"),
    };
    ws.send(Message::Text(device.connect(&challenge, auth, token))).await.unwrap();
    let response: Value = loop {
        if let Message::Text(text) = ws.next().await.unwrap().unwrap() {
            break serde_json::from_str(&text).unwrap();
        }
    };
    let elapsed = started.elapsed();
    let _ = ws.close(None).await;
    (response, elapsed)
}

/// Pair `device` and return its device token.
async fn pair(url: &str, device: &Device) -> String {
    let (refused, _) = handshake(url, device, json!({"token": TOKEN}), TOKEN).await;
    let request_id = refused["error"]["details"]["requestId"].as_str().unwrap().to_string();
    let operator = OperatorClient::new(url, Some(TOKEN.to_string())).unwrap();
    operator.call(&["operator.pairing"], "device.pair.approve", json!({"requestId": request_id})).await.unwrap();
    let (hello, _) = handshake(url, device, json!({"token": TOKEN}), TOKEN).await;
    hello["payload"]["auth"]["deviceToken"].as_str().expect("a device token in hello-ok").to_string()
}

fn handshake_bench(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let config = Config {
        bind: ([127, 0, 0, 1], 0).into(),
        gateway_token: Some(Secret::new(TOKEN)),
        state_dir: std::path::PathBuf::new(),
        ..Config::default()
    };
    let runtime = system.block_on(Runtime::start(&config, Agents::shipped().unwrap())).unwrap();
    let url = format!("ws://{}/", runtime.http_addr);
    let device = Device::new();
    let token = system.block_on(pair(&url, &device));
    let auth = json!({"deviceToken": token});

    c.bench_function("handshake/device_token", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (hello, elapsed) = handshake(&url, &device, auth.clone(), &token).await;
                    assert_eq!(hello["ok"], true, "{hello}");
                    total += elapsed;
                }
                total
            })
        })
    });
    system.block_on(runtime.shutdown()).unwrap();
}

criterion_group!(benches, handshake_bench);
criterion_main!(benches);
