//! The operator WebSocket client behind `hivegate devices` and `hivegate nodes`. It talks to a
//! running gateway the way the OpenClaw operator CLI does: one WebSocket per RPC. It waits for the
//! server's `connect.challenge`, sends `connect` (role `operator`, the least scopes the call needs,
//! the shared token, no device identity), waits for `hello-ok`, sends the one request, skips
//! events until that request's response, then ends with an empty close frame. All waits share one
//! deadline. The token goes into the `connect` frame only: it is never printed, logged or put
//! into an error.

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The gateway protocol version this client speaks (`minProtocol = maxProtocol`).
pub const PROTOCOL_VERSION: u32 = 4;
/// How long one call may take end to end unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the server's close frame after we are done or were refused.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Who the client says it is in `connect.client`. OpenClaw's CLI connects as `cli`; for
/// `nodes approve` it connects as a backend client named `gateway:<method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientIdentity {
    #[default]
    Cli,
    Backend,
}

/// Where in the exchange something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Challenge,
    Handshake,
    Response,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "opening the websocket",
            Stage::Challenge => "waiting for the connect challenge",
            Stage::Handshake => "waiting for hello-ok",
            Stage::Response => "waiting for the response",
        })
    }
}

/// A close frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason.is_empty() {
            true => write!(f, "close {}", self.code),
            false => write!(f, "close {} \"{}\"", self.code, self.reason),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid gateway url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("cannot connect to the gateway at {url} ({reason}); is it running? start it with `hivegate serve` or pass --url")]
    Connect { url: String, reason: String },
    #[error("the gateway refused the connection: {code}: {message}{}; {}", close_suffix(.close), handshake_hint(.code, .message, .details))]
    HandshakeRefused { code: String, message: String, details: Value, close: Option<CloseInfo> },
    #[error("the gateway closed the connection while {stage}{}; check the gateway log", close_suffix(.close))]
    Closed { stage: Stage, close: Option<CloseInfo> },
    #[error("{method} failed: {code}: {message}")]
    Rpc { method: String, code: String, message: String, details: Value },
    #[error("timed out after {:.1} s while {stage} on {url}; check the gateway is healthy or raise --timeout", .after.as_secs_f64())]
    Timeout { url: String, stage: Stage, after: Duration },
    #[error("bad frame from the gateway while {stage}: {reason}")]
    BadFrame { stage: Stage, reason: String },
    #[error("websocket error while {stage}: {reason}")]
    Transport { stage: Stage, reason: String },
}

fn close_suffix(close: &Option<CloseInfo>) -> String {
    close.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

fn handshake_hint(code: &str, message: &str, details: &Value) -> &'static str {
    let detail = details.get("code").and_then(Value::as_str).unwrap_or_default();
    let message = message.to_ascii_lowercase();
    if message.contains("protocol") || detail.contains("PROTOCOL") {
        "this client speaks gateway protocol 4; upgrade the older side"
    } else if code == "NOT_PAIRED" || detail == "PAIRING_REQUIRED" {
        "this client is not paired; pass the gateway's shared token with --token"
    } else if code.starts_with("AUTH") || detail.starts_with("AUTH") || message.contains("token") {
        "check --token (default: the gateway token from the config or HIVEGATE_GATEWAY_TOKEN)"
    } else {
        "check --token and the gateway log"
    }
}

/// One operator connection recipe: where, with which token, how long. Each [`OperatorClient::call`]
/// opens its own socket.
#[derive(Clone)]
pub struct OperatorClient {
    url: String,
    token: Option<String>,
    timeout: Duration,
    identity: ClientIdentity,
}

impl fmt::Debug for OperatorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorClient")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("identity", &self.identity)
            .finish()
    }
}

impl OperatorClient {
    /// A client for `url` (`ws://host:port/`). An empty token counts as none.
    pub fn new(url: impl Into<String>, token: Option<String>) -> Result<OperatorClient, ClientError> {
        let url = url.into();
        if !url.starts_with("ws://") {
            let reason = match url.starts_with("wss://") {
                true => "wss:// is not supported by this build; use ws:// (loopback or an ssh tunnel)",
                false => "expected ws://host:port/",
            };
            return Err(ClientError::InvalidUrl { url, reason });
        }
        let token = token.filter(|t| !t.is_empty());
        Ok(OperatorClient { url, token, timeout: DEFAULT_TIMEOUT, identity: ClientIdentity::Cli })
    }

    /// The deadline for a whole call: connect, handshake, request and response.
    pub fn with_timeout(mut self, timeout: Duration) -> OperatorClient {
        self.timeout = timeout;
        self
    }

    pub fn with_identity(mut self, identity: ClientIdentity) -> OperatorClient {
        self.identity = identity;
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Open a socket, authenticate as an operator holding `scopes`, call `method` with
    /// `params`, close, and return the response payload (`null` if the server sent none).
    pub async fn call(&self, scopes: &[&str], method: &str, params: Value) -> Result<Value, ClientError> {
        tracing::debug!(url = %self.url, method, ?scopes, "gateway call");
        let mut conversation = self.open().await?;
        let result = conversation.run(scopes, method, params, None).await;
        conversation.close().await;
        result.map(|(first, _)| first)
    }

    /// A socket to the gateway, with the whole call's deadline starting now.
    async fn open(&self) -> Result<Conversation<'_>, ClientError> {
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, tokio_tungstenite::connect_async(self.url.as_str())).await {
            Err(_) => Err(self.timed_out(Stage::Connect)),
            Ok(Err(e)) => Err(ClientError::Connect { url: self.url.clone(), reason: e.to_string() }),
            Ok(Ok((ws, _response))) => Ok(Conversation { ws, deadline, client: self }),
        }
    }

    /// [`call`](Self::call) for a method that answers twice (`agent`): the first answer
    /// and, when it says `status: "accepted"`, the final one with the same id. Events
    /// after the request and before the final answer go to `on_event` (those before the
    /// first answer too: a run's first events come before its ack).
    pub async fn call_final(
        &self,
        scopes: &[&str],
        method: &str,
        params: Value,
        on_event: &mut dyn FnMut(&Value),
    ) -> Result<(Value, Value), ClientError> {
        let mut conversation = self.open().await?;
        let result = conversation.run(scopes, method, params, Some(on_event)).await;
        conversation.close().await;
        result
    }

    fn timed_out(&self, stage: Stage) -> ClientError {
        ClientError::Timeout { url: self.url.clone(), stage, after: self.timeout }
    }

    /// The `connect` request, as the OpenClaw CLI sends it.
    fn connect_frame(&self, id: &str, instance_id: &str, scopes: &[&str], method: &str) -> Result<String, ClientError> {
        let (platform, device_family) = platform_identity(std::env::consts::OS);
        let (client_id, mode, display_name) = match self.identity {
            ClientIdentity::Cli => ("cli", "cli", None),
            ClientIdentity::Backend => ("gateway-client", "backend", Some(format!("gateway:{method}"))),
        };
        let params = ConnectParams {
            min_protocol: PROTOCOL_VERSION,
            max_protocol: PROTOCOL_VERSION,
            client: ClientInfo {
                id: client_id,
                display_name,
                version: env!("CARGO_PKG_VERSION"),
                platform,
                device_family,
                mode,
                instance_id,
            },
            caps: [],
            auth: self.token.as_deref().map(|token| Auth { token }),
            role: "operator",
            scopes,
        };
        encode(&Request { kind: "req", id, method: "connect", params }, Stage::Handshake)
    }
}

/// The platform and device family the OpenClaw client reports for a Rust `std::env::consts::OS`.
fn platform_identity(os: &'static str) -> (&'static str, Option<&'static str>) {
    match os {
        "macos" => ("macos", Some("Mac")),
        "windows" => ("windows", Some("Windows")),
        "linux" => ("linux", Some("Linux")),
        other => (other, None),
    }
}

#[derive(Serialize)]
struct Request<'a, P> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    method: &'a str,
    params: P,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectParams<'a> {
    min_protocol: u32,
    max_protocol: u32,
    client: ClientInfo<'a>,
    caps: [&'static str; 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Auth<'a>>,
    role: &'static str,
    scopes: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientInfo<'a> {
    id: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    version: &'static str,
    platform: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_family: Option<&'static str>,
    mode: &'static str,
    instance_id: &'a str,
}

#[derive(Serialize)]
struct Auth<'a> {
    token: &'a str,
}

fn encode<T: Serialize>(frame: &T, stage: Stage) -> Result<String, ClientError> {
    serde_json::to_string(frame).map_err(|e| ClientError::BadFrame { stage, reason: format!("cannot encode: {e}") })
}

/// `(code, message, details)` of a `res` frame's `error`, with placeholders when missing.
fn wire_error(frame: &Value) -> (String, String, Value) {
    let error = frame.get("error").unwrap_or(&Value::Null);
    let text = |key: &str, default: &str| error.get(key).and_then(Value::as_str).unwrap_or(default).to_string();
    (text("code", "UNKNOWN"), text("message", "no message"), error.get("details").cloned().unwrap_or(Value::Null))
}

/// One socket's exchange: challenge, connect, one request.
struct Conversation<'a> {
    ws: Socket,
    deadline: Instant,
    client: &'a OperatorClient,
}

impl Conversation<'_> {
    /// The exchange; with `follow`, an `accepted` answer is followed by the final one.
    async fn run(
        &mut self,
        scopes: &[&str],
        method: &str,
        params: Value,
        follow: Option<&mut dyn FnMut(&Value)>,
    ) -> Result<(Value, Value), ClientError> {
        self.await_challenge().await?;
        let connect_id = format!("1:{}", uuid::Uuid::new_v4());
        let instance_id = uuid::Uuid::new_v4().to_string();
        let frame = self.client.connect_frame(&connect_id, &instance_id, scopes, method)?;
        self.send(frame, Stage::Handshake).await?;
        let hello = self.await_response(&connect_id, Stage::Handshake, None).await?;
        if hello.get("ok").and_then(Value::as_bool) != Some(true) {
            let (code, message, details) = wire_error(&hello);
            let close = self.await_close().await;
            return Err(ClientError::HandshakeRefused { code, message, details, close });
        }
        let request_id = format!("2:{}", uuid::Uuid::new_v4());
        let frame = encode(&Request { kind: "req", id: &request_id, method, params }, Stage::Response)?;
        self.send(frame, Stage::Response).await?;
        let payload = |response: &Value| match response.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(response.get("payload").cloned().unwrap_or(Value::Null)),
            _ => {
                let (code, message, details) = wire_error(response);
                Err(ClientError::Rpc { method: method.to_string(), code, message, details })
            }
        };
        // A followed run's first events (its root's start) come before the ack.
        let mut follow = follow;
        let first = payload(&self.await_response(&request_id, Stage::Response, follow.as_deref_mut()).await?)?;
        let Some(on_event) = follow.filter(|_| first.get("status").and_then(Value::as_str) == Some("accepted")) else {
            return Ok((first.clone(), first));
        };
        loop {
            let frame = self.read(Stage::Response).await?;
            match frame.get("type").and_then(Value::as_str) {
                Some("res") if frame.get("id").and_then(Value::as_str) == Some(&request_id) => {
                    return Ok((first, payload(&frame)?));
                }
                Some("event") => on_event(&frame),
                _ => tracing::debug!("skipping an unrelated frame"),
            }
        }
    }

    /// The server speaks first; a challenge without a nonce is refused as OpenClaw does.
    async fn await_challenge(&mut self) -> Result<(), ClientError> {
        loop {
            let frame = self.read(Stage::Challenge).await?;
            if frame.get("type").and_then(Value::as_str) != Some("event")
                || frame.get("event").and_then(Value::as_str) != Some("connect.challenge")
            {
                tracing::debug!("ignoring a frame before the connect challenge");
                continue;
            }
            let nonce = frame.pointer("/payload/nonce").and_then(Value::as_str).unwrap_or_default();
            if nonce.trim().is_empty() {
                let reason = "connect challenge missing nonce";
                let close = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                let _ = self.ws.close(Some(close)).await;
                return Err(ClientError::BadFrame { stage: Stage::Challenge, reason: reason.to_string() });
            }
            return Ok(());
        }
    }

    /// The `res` frame with `id`; other responses are skipped, and events (ticks, pairing
    /// broadcasts) too unless `on_event` takes them.
    async fn await_response<'e>(
        &mut self,
        id: &str,
        stage: Stage,
        mut on_event: Option<&mut (dyn FnMut(&Value) + 'e)>,
    ) -> Result<Value, ClientError> {
        loop {
            let frame = self.read(stage).await?;
            match frame.get("type").and_then(Value::as_str) {
                Some("res") if frame.get("id").and_then(Value::as_str) == Some(id) => {
                    if !frame.get("ok").is_some_and(Value::is_boolean) {
                        return Err(ClientError::BadFrame { stage, reason: "response without a boolean ok".into() });
                    }
                    return Ok(frame);
                }
                Some("event") => match on_event.as_deref_mut() {
                    Some(on_event) => on_event(&frame),
                    None => {
                        let event = frame.get("event").and_then(Value::as_str).unwrap_or_default();
                        tracing::debug!(event, "skipping event");
                    }
                },
                _ => tracing::debug!("skipping an unrelated frame"),
            }
        }
    }

    /// The next JSON object from the server, bounded by the call's deadline.
    async fn read(&mut self, stage: Stage) -> Result<Value, ClientError> {
        loop {
            let message = match tokio::time::timeout_at(self.deadline, self.ws.next()).await {
                Err(_) => return Err(self.client.timed_out(stage)),
                Ok(None) => return Err(ClientError::Closed { stage, close: None }),
                Ok(Some(Err(e))) => return Err(ClientError::Transport { stage, reason: e.to_string() }),
                Ok(Some(Ok(message))) => message,
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Binary(bytes) => String::from_utf8(bytes)
                    .map_err(|_| ClientError::BadFrame { stage, reason: "binary frame is not utf-8".into() })?,
                Message::Close(frame) => return Err(ClientError::Closed { stage, close: frame.map(close_info) }),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| ClientError::BadFrame { stage, reason: format!("not json: {e}") })?;
            if !value.is_object() {
                return Err(ClientError::BadFrame { stage, reason: "frame is not a json object".into() });
            }
            return Ok(value);
        }
    }

    async fn send(&mut self, text: String, stage: Stage) -> Result<(), ClientError> {
        match tokio::time::timeout_at(self.deadline, self.ws.send(Message::Text(text))).await {
            Err(_) => Err(self.client.timed_out(stage)),
            Ok(Err(e)) => Err(ClientError::Transport { stage, reason: e.to_string() }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// After a refusal the server closes (1008, 1002 …); wait briefly to report its code and reason.
    async fn await_close(&mut self) -> Option<CloseInfo> {
        let until = self.deadline.min(Instant::now() + CLOSE_GRACE);
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(close_info),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// End with an empty close frame, as the OpenClaw CLI does, and drain the echo briefly.
    async fn close(mut self) {
        let drain = async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

fn close_info(frame: CloseFrame<'_>) -> CloseInfo {
    CloseInfo { code: u16::from(frame.code), reason: frame.reason.into_owned() }
}

#[cfg(test)]
mod tests;
