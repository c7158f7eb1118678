//! The handshake benchmark harness, shared by `hivegate bench` (`--handshakes N`) and
//! `benches/handshake.rs`: a paired node's full handshake on loopback. TCP connect,
//! WebSocket upgrade, `connect.challenge`, a v3-signed `connect` carrying the device
//! token, Ed25519 verification and token check in the gateway, `hello-ok` back.
//!
//! Setup (untimed) pairs a device the way a real node does: it asks, an operator
//! approves over the socket, and the node takes its device token from hello-ok.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use crate::agent::Agents;
use crate::client::OperatorClient;
use crate::config::{Config, Secret};
use crate::runtime::Runtime;

const TOKEN: &str = "bench-token";

/// A node's device identity: an Ed25519 key and the id derived from it.
#[derive(Clone)]
pub struct Device {
    key: SigningKey,
    id: String,
    public_key: String,
}

impl Device {
    pub fn generate() -> Device {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let raw = key.verifying_key().to_bytes();
        let id = Sha256::digest(raw).iter().map(|b| format!("{b:02x}")).collect();
        Device { key, id, public_key: URL_SAFE_NO_PAD.encode(raw) }
    }

    /// A node `connect` answering `challenge`, authenticated by `auth` (whose token is
    /// `token`, signed in the v3 layout).
    fn connect(&self, challenge: &Value, auth: &Value, token: &str) -> anyhow::Result<String> {
        let nonce = challenge["payload"]["nonce"].as_str().context("challenge without nonce")?;
        let ts = challenge["payload"]["ts"].as_u64().context("challenge without ts")?;
        let signed = format!("v3|{}|node-host|node|node||{ts}|{token}|{nonce}|linux|linux", self.id);
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(signed.as_bytes()).to_bytes());
        Ok(json!({"type": "req", "id": "1:bench", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4,
            "client": {"id": "node-host", "version": "bench", "platform": "linux", "deviceFamily": "Linux", "mode": "node"},
            "role": "node", "scopes": [], "caps": [], "commands": [], "auth": auth,
            "device": {"id": self.id, "publicKey": self.public_key, "signature": signature, "signedAt": ts, "nonce": nonce}}})
        .to_string())
    }
}

async fn next_text<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await.ok_or_else(|| anyhow!("the gateway closed the socket"))?? {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Close(close) => bail!("the gateway closed the socket: {close:?}"),
            _ => {}
        }
    }
}

/// One handshake; returns the `connect` response and the time to it.
pub async fn handshake(url: &str, device: &Device, auth: &Value, token: &str) -> anyhow::Result<(Value, Duration)> {
    exchange(url, |challenge| device.connect(challenge, auth, token)).await
}

/// A handshake's shape from the client's side: connect and upgrade, read the server's
/// first frame, `answer` it, read the response; timed to the response.
pub async fn exchange(
    url: &str,
    answer: impl FnOnce(&Value) -> anyhow::Result<String>,
) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let first = next_text(&mut ws).await?;
    ws.send(Message::Text(answer(&first)?)).await?;
    let response = next_text(&mut ws).await?;
    let elapsed = started.elapsed();
    let _ = ws.close(None).await;
    Ok((response, elapsed))
}

/// One client's handshake, answered or refused: what [`sequential`] and [`concurrent`]
/// time.
pub trait Client: Clone + Send + Sync + 'static {
    fn handshake(&self) -> impl std::future::Future<Output = anyhow::Result<Duration>> + Send + '_;
}

/// `n` handshakes one after another, each timed, from a client thread of its own (a
/// node is another process: its socket and signing work stays off the gateway's
/// threads, as far as two cores allow).
pub async fn sequential<C: Client>(client: C, n: usize) -> anyhow::Result<Vec<Duration>> {
    on_client_thread(async move {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            samples.push(client.handshake().await?);
        }
        Ok(samples)
    })
    .await
}

/// `n` handshakes started at once from a client thread of their own; timed until the
/// last one is answered. Fails unless every one succeeds.
pub async fn concurrent<C: Client>(client: C, n: usize) -> anyhow::Result<Duration> {
    on_client_thread(async move {
        let started = Instant::now();
        let one = |_| async {
            client.handshake().await?;
            anyhow::Ok(started.elapsed())
        };
        let all = futures_util::future::join_all((0..n).map(one)).await;
        all.into_iter().try_fold(Duration::ZERO, |last, took| took.map(|t| last.max(t)))
    })
    .await
}

/// A paired node with its device token.
#[derive(Clone)]
struct PairedNode {
    url: String,
    device: Device,
    auth: Value,
    token: String,
}

impl Client for PairedNode {
    /// Fails unless it ends in hello-ok.
    async fn handshake(&self) -> anyhow::Result<Duration> {
        let (hello, elapsed) = handshake(&self.url, &self.device, &self.auth, &self.token).await?;
        if hello["ok"] != true {
            bail!("handshake refused: {hello}");
        }
        Ok(elapsed)
    }
}

/// A gateway with one paired node, ready to time its handshakes.
pub struct HandshakeHarness {
    runtime: Runtime,
    node: PairedNode,
}

impl HandshakeHarness {
    /// Start a gateway (inside a running actix System) and pair a device with it.
    pub async fn start() -> anyhow::Result<HandshakeHarness> {
        HandshakeHarness::start_for(0).await
    }

    /// Start a gateway that lets `concurrent` handshakes from loopback be in flight at
    /// once (beyond the default bound on unauthenticated sockets per address, which
    /// would otherwise refuse most of them), and pair a device with it.
    pub async fn start_for(concurrent: usize) -> anyhow::Result<HandshakeHarness> {
        let mut config = Config {
            bind: ([127, 0, 0, 1], 0).into(),
            gateway_token: Some(Secret::new(TOKEN)),
            state_dir: std::path::PathBuf::new(),
            ..Config::default()
        };
        let sockets = &mut config.sockets;
        sockets.max_preauth_connections = sockets.max_preauth_connections.max(concurrent + 16);
        sockets.max_preauth_connections_per_address = sockets.max_preauth_connections_per_address.max(concurrent + 16);
        let runtime = Runtime::start(&config, Agents::shipped()?).await?;
        let url = format!("ws://{}/", runtime.http_addr);
        let device = Device::generate();
        let shared = json!({"token": TOKEN});
        let (refused, _) = handshake(&url, &device, &shared, TOKEN).await?;
        let request_id =
            refused["error"]["details"]["requestId"].as_str().context("no pairing request in the refusal")?.to_string();
        let operator = OperatorClient::new(&url, Some(TOKEN.to_string()))?;
        operator.call(&["operator.pairing"], "device.pair.approve", json!({"requestId": request_id})).await?;
        let (hello, _) = handshake(&url, &device, &shared, TOKEN).await?;
        let token =
            hello["payload"]["auth"]["deviceToken"].as_str().context("no device token in hello-ok")?.to_string();
        let node = PairedNode { url, device, auth: json!({"deviceToken": token}), token };
        Ok(HandshakeHarness { runtime, node })
    }

    /// One timed handshake with the device token; fails unless it ends in hello-ok.
    pub async fn handshake(&self) -> anyhow::Result<Duration> {
        self.node.handshake().await
    }

    /// `n` handshakes one after another, each timed, from a client thread of its own.
    pub async fn sequential(&self, n: usize) -> anyhow::Result<Vec<Duration>> {
        sequential(self.node.clone(), n).await
    }

    /// `n` handshakes started at once from a client thread of their own; timed until
    /// the last hello-ok. Fails unless every one ends in hello-ok.
    pub async fn concurrent(&self, n: usize) -> anyhow::Result<Duration> {
        concurrent(self.node.clone(), n).await
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.runtime.shutdown().await.map(drop)
    }
}

/// Run `job` on a thread of its own and wait for its answer.
async fn on_client_thread<T: Send + 'static>(
    job: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let client = actix::Arbiter::new();
    let (done, result) = tokio::sync::oneshot::channel();
    client.spawn(async move {
        let _ = done.send(job.await);
    });
    let answer = result.await.context("the client thread stopped");
    client.stop();
    answer?
}
