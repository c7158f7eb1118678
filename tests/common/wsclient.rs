//! A WebSocket test client that speaks the gateway protocol the way the OpenClaw clients
//! do: it opens `ws://addr/` (optionally with extra upgrade headers such as `Origin` or
//! `X-Forwarded-For`), reads the `connect.challenge`, sends a `connect` as an operator or
//! a node, with or without a device block signed in the v3 layout, and then makes calls.
//! Every read is bounded by [`WAIT`]; a test that waits too long fails, it never hangs.
//!
//! [`Tamper`] breaks one part of the device proof on purpose (clock, nonce, signature,
//! device id) so refusal tests can send exactly one defect.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

/// The protocol version the 2026.9.6 clients send.
pub const PROTOCOL: u32 = 4;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// An Ed25519 device identity, as a client install keeps it.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    /// Lowercase hex SHA-256 of the raw public key.
    pub device_id: String,
    /// Unpadded base64url of the raw public key.
    pub public_key: String,
}

impl Identity {
    pub fn generate() -> Identity {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let raw = key.verifying_key().to_bytes();
        let device_id = Sha256::digest(raw).iter().map(|b| format!("{b:02x}")).collect();
        Identity { public_key: URL_SAFE_NO_PAD.encode(raw), device_id, key }
    }

    /// Unpadded base64url Ed25519 signature of `payload`.
    pub fn sign(&self, payload: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes())
    }
}

/// One deliberate defect in the device proof.
#[derive(Clone, Debug, Default)]
pub struct Tamper {
    /// Added to `signedAt` (and signed as such).
    pub signed_at_shift_ms: i64,
    /// Sent and signed instead of the challenge nonce.
    pub nonce: Option<String>,
    /// Flip a bit of the signature.
    pub corrupt_signature: bool,
    /// Sent and signed as `device.id` instead of the key's id.
    pub device_id: Option<String>,
}

/// What a `connect` says.
#[derive(Clone)]
pub struct ConnectOptions {
    pub role: &'static str,
    pub client_id: String,
    pub client_mode: String,
    pub display_name: Option<String>,
    pub platform: String,
    pub device_family: Option<String>,
    pub scopes: Vec<String>,
    pub caps: Vec<String>,
    pub commands: Vec<String>,
    pub token: Option<String>,
    pub device_token: Option<String>,
    pub device: Option<Identity>,
    pub min_protocol: u32,
    pub max_protocol: u32,
    pub tamper: Tamper,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ConnectOptions {
    /// The operator CLI: `cli`/`cli`, the shared token, no device identity.
    pub fn cli(token: &str, scopes: &[&str]) -> ConnectOptions {
        ConnectOptions {
            role: "operator",
            client_id: "cli".into(),
            client_mode: "cli".into(),
            display_name: None,
            platform: "linux".into(),
            device_family: Some("Linux".into()),
            scopes: strings(scopes),
            caps: Vec::new(),
            commands: Vec::new(),
            token: Some(token.into()),
            device_token: None,
            device: None,
            min_protocol: PROTOCOL,
            max_protocol: PROTOCOL,
            tamper: Tamper::default(),
        }
    }

    /// An operator with a signed device identity and the shared token.
    pub fn operator(device: &Identity, token: &str, scopes: &[&str]) -> ConnectOptions {
        ConnectOptions { device: Some(device.clone()), ..ConnectOptions::cli(token, scopes) }
    }

    /// The node host: `node-host`/`node`, role node, no scopes, signed, shared token.
    pub fn node(device: &Identity, token: &str) -> ConnectOptions {
        ConnectOptions {
            role: "node",
            client_id: "node-host".into(),
            client_mode: "node".into(),
            display_name: Some("test-node".into()),
            scopes: Vec::new(),
            device: Some(device.clone()),
            ..ConnectOptions::cli(token, &[])
        }
    }

    pub fn commands(mut self, commands: &[&str]) -> ConnectOptions {
        self.commands = strings(commands);
        self
    }

    /// Authenticate with the device token only (no shared token), as a paired node does.
    pub fn with_device_token(mut self, token: &str) -> ConnectOptions {
        self.token = None;
        self.device_token = Some(token.into());
        self
    }

    pub fn tamper(mut self, tamper: Tamper) -> ConnectOptions {
        self.tamper = tamper;
        self
    }

    /// The `connect` params for a socket whose challenge nonce is `nonce`.
    pub fn params(&self, nonce: &str) -> Value {
        let mut params = json!({
            "minProtocol": self.min_protocol,
            "maxProtocol": self.max_protocol,
            "client": {"id": self.client_id, "version": "2026.9.6", "platform": self.platform, "mode": self.client_mode},
            "role": self.role,
            "scopes": self.scopes,
            "caps": self.caps,
        });
        if let Some(name) = &self.display_name {
            params["client"]["displayName"] = json!(name);
        }
        if let Some(family) = &self.device_family {
            params["client"]["deviceFamily"] = json!(family);
        }
        if !self.commands.is_empty() {
            params["commands"] = json!(self.commands);
        }
        let mut auth = json!({});
        if let Some(token) = &self.token {
            auth["token"] = json!(token);
        }
        if let Some(token) = &self.device_token {
            auth["deviceToken"] = json!(token);
        }
        if auth != json!({}) {
            params["auth"] = auth;
        }
        if let Some(device) = &self.device {
            params["device"] = self.device_block(device, nonce);
        }
        params
    }

    fn device_block(&self, device: &Identity, challenge: &str) -> Value {
        let device_id = self.tamper.device_id.clone().unwrap_or_else(|| device.device_id.clone());
        let signed_at = (now_ms() as i64 + self.tamper.signed_at_shift_ms) as u64;
        let nonce = self.tamper.nonce.clone().unwrap_or_else(|| challenge.to_string());
        let token = self.token.as_deref().or(self.device_token.as_deref()).unwrap_or("");
        let payload = format!(
            "v3|{device_id}|{}|{}|{}|{}|{signed_at}|{token}|{nonce}|{}|{}",
            self.client_id,
            self.client_mode,
            self.role,
            self.scopes.join(","),
            self.platform.trim().to_lowercase(),
            self.device_family.as_deref().unwrap_or("").trim().to_lowercase(),
        );
        let mut signature = device.sign(&payload);
        if self.tamper.corrupt_signature {
            let mut raw = URL_SAFE_NO_PAD.decode(&signature).unwrap();
            raw[10] ^= 0x01;
            signature = URL_SAFE_NO_PAD.encode(raw);
        }
        json!({"id": device_id, "publicKey": device.public_key, "signature": signature, "signedAt": signed_at, "nonce": nonce})
    }
}

/// One thing read from the socket.
#[derive(Debug)]
pub enum Incoming {
    Frame(Value),
    Closed(u16, String),
}

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The nonce of this socket's `connect.challenge`.
    pub nonce: String,
    /// Events read while waiting for something else, oldest first.
    pub events: VecDeque<Value>,
    next_id: u64,
}

impl WsClient {
    /// Open `ws://addr/` with extra upgrade headers and read the challenge. The upgrade
    /// error (for example HTTP 403) is returned as is.
    pub async fn open(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Result<WsClient, tungstenite::Error> {
        let mut request = format!("ws://{addr}/").into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("timed out opening the websocket")?;
        let mut client = WsClient { ws, nonce: String::new(), events: VecDeque::new(), next_id: 0 };
        let challenge = client.next_frame().await;
        assert_eq!(
            (challenge["type"].as_str(), challenge["event"].as_str()),
            (Some("event"), Some("connect.challenge"))
        );
        assert!(challenge.get("seq").is_none(), "the challenge is targeted, without seq: {challenge}");
        assert!(challenge["payload"]["ts"].as_u64().is_some(), "{challenge}");
        client.nonce = challenge["payload"]["nonce"].as_str().unwrap().to_string();
        Ok(client)
    }

    /// Send `connect`; `Ok(hello-ok payload)` or `Err(error)`.
    pub async fn connect(&mut self, options: &ConnectOptions) -> Result<Value, Value> {
        let params = options.params(&self.nonce);
        self.request("connect", params).await
    }

    /// Open, connect, and expect hello-ok.
    pub async fn connected(addr: SocketAddr, headers: &[(&'static str, &str)], options: &ConnectOptions) -> WsClient {
        let mut client = WsClient::open(addr, headers).await.unwrap();
        let hello = client.connect(options).await.unwrap_or_else(|e| panic!("connect refused: {e}"));
        assert_eq!(hello["type"], "hello-ok", "{hello}");
        client
    }

    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(WAIT, self.ws.send(Message::Text(text))).await.expect("send timed out").unwrap();
    }

    pub async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Send `frames` in one write, so the gateway reads them together: a client that
    /// does not wait for one answer before it asks the next thing.
    pub async fn send_together(&mut self, frames: &[Value]) {
        for frame in frames {
            tokio::time::timeout(WAIT, self.ws.feed(Message::Text(frame.to_string())))
                .await
                .expect("send timed out")
                .unwrap();
        }
        tokio::time::timeout(WAIT, self.ws.flush()).await.expect("send timed out").unwrap();
    }

    /// Send a request and return its response, skipping (and keeping) events.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.request(method, params).await
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = format!("{}:{method}", self.next_id);
        self.send_json(&json!({"type": "req", "id": id, "method": method, "params": params})).await;
        loop {
            let frame = self.next_frame().await;
            match frame["type"].as_str() {
                Some("event") => self.events.push_back(frame),
                Some("res") if frame["id"] == id => {
                    return match frame["ok"].as_bool() {
                        Some(true) => Ok(frame["payload"].clone()),
                        _ => Err(frame["error"].clone()),
                    };
                }
                _ => panic!("unexpected frame while waiting for {id}: {frame}"),
            }
        }
    }

    /// The next event called `name` (from the kept events first); other events are kept.
    pub async fn wait_event(&mut self, name: &str) -> Value {
        if let Some(at) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(at).unwrap();
        }
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == "event" && frame["event"] == name {
                return frame;
            }
            assert_eq!(frame["type"], "event", "unexpected frame while waiting for event {name}: {frame}");
            self.events.push_back(frame);
        }
    }

    /// The next text frame or the close, within [`WAIT`]. Pings and pongs are skipped.
    pub async fn read(&mut self) -> Incoming {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match message {
                Some(Ok(Message::Text(text))) => return Incoming::Frame(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Incoming::Closed(u16::from(f.code), f.reason.into_owned()),
                        None => Incoming::Closed(1005, String::new()),
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("unexpected websocket message: {other:?}"),
            }
        }
    }

    /// The next text frame as JSON; a close instead fails the test.
    pub async fn next_frame(&mut self) -> Value {
        match self.read().await {
            Incoming::Frame(frame) => frame,
            Incoming::Closed(code, reason) => panic!("socket closed ({code} {reason:?}) while a frame was expected"),
        }
    }

    /// The close `(code, reason)`; events before it are kept, any other frame fails.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.read().await {
                Incoming::Closed(code, reason) => return (code, reason),
                Incoming::Frame(frame) if frame["type"] == "event" => self.events.push_back(frame),
                Incoming::Frame(frame) => panic!("expected a close, got {frame}"),
            }
        }
    }

    /// Close from our side, wait (bounded) for the server's echo, then drop the socket.
    /// (actix-web lingers up to its client-disconnect timeout for the client to hang up
    /// first, while tungstenite waits for the server: dropping ends that stand-off.)
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.ws.close(None)).await;
        let echo = tokio::time::timeout(WAIT, async {
            while let Some(Ok(message)) = self.ws.next().await {
                if message.is_close() {
                    return;
                }
            }
        });
        let _ = echo.await;
    }
}
