//! The three frame shapes (`req`, `res`, `event`), the error shape carried by failed
//! responses, and the string constants for error codes and `details.code` values.
//!
//! Payloads stay `serde_json::Value` at this level: a frame is routed by `method` or
//! `event` before its payload is decoded into one of the typed payloads in the sibling
//! modules. Outgoing event payloads implement [`EventPayload`], which ties each payload
//! type to its event name so a shell cannot send a tick payload under another name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ProtocolError;

/// Top-level `error.code` values. OpenClaw 2026.9.6 only emits the first five on the
/// paths the real clients take (trace §3, §4.2, §5.1); `FORBIDDEN` is hivegate's code for
/// a missing scope (protocol.md).
pub mod error_codes {
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const NOT_PAIRED: &str = "NOT_PAIRED";
    pub const NOT_LINKED: &str = "NOT_LINKED";
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    pub const AGENT_TIMEOUT: &str = "AGENT_TIMEOUT";
    pub const FORBIDDEN: &str = "FORBIDDEN";
}

/// `error.details.code` values: the machine-readable reason inside an error.
pub mod detail_codes {
    pub const PAIRING_REQUIRED: &str = "PAIRING_REQUIRED";
    /// Trace §5.1: transient node-side error with `retryable: true`.
    pub const PAIRING_CHANGED: &str = "PAIRING_CHANGED";
    pub const MISSING_SCOPE: &str = "MISSING_SCOPE";
    pub const AUTH_TOKEN_MISSING: &str = "AUTH_TOKEN_MISSING";
    pub const AUTH_TOKEN_MISMATCH: &str = "AUTH_TOKEN_MISMATCH";
    pub const AUTH_PASSWORD_MISSING: &str = "AUTH_PASSWORD_MISSING";
    pub const AUTH_PASSWORD_MISMATCH: &str = "AUTH_PASSWORD_MISMATCH";
    pub const AUTH_BOOTSTRAP_TOKEN_INVALID: &str = "AUTH_BOOTSTRAP_TOKEN_INVALID";
    pub const AUTH_DEVICE_TOKEN_MISMATCH: &str = "AUTH_DEVICE_TOKEN_MISMATCH";
    /// A credential over its budget (shared-secret, device-signature and device-token
    /// failures, new pairing requests); send with `retryAfterMs`.
    pub const AUTH_RATE_LIMITED: &str = "AUTH_RATE_LIMITED";
    pub const DEVICE_IDENTITY_REQUIRED: &str = "DEVICE_IDENTITY_REQUIRED";
    pub const DEVICE_AUTH_NONCE_REQUIRED: &str = "DEVICE_AUTH_NONCE_REQUIRED";
    pub const DEVICE_AUTH_NONCE_MISMATCH: &str = "DEVICE_AUTH_NONCE_MISMATCH";
    pub const DEVICE_AUTH_SIGNATURE_INVALID: &str = "DEVICE_AUTH_SIGNATURE_INVALID";
    pub const DEVICE_AUTH_SIGNATURE_EXPIRED: &str = "DEVICE_AUTH_SIGNATURE_EXPIRED";
    pub const DEVICE_AUTH_DEVICE_ID_MISMATCH: &str = "DEVICE_AUTH_DEVICE_ID_MISMATCH";
    pub const DEVICE_AUTH_PUBLIC_KEY_INVALID: &str = "DEVICE_AUTH_PUBLIC_KEY_INVALID";
}

/// Any frame, discriminated by its `type` field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Frame {
    #[serde(rename = "req")]
    Request(RequestFrame),
    #[serde(rename = "res")]
    Response(ResponseFrame),
    #[serde(rename = "event")]
    Event(EventFrame),
}

impl Frame {
    /// Encodes the frame as the text of one WebSocket message.
    pub fn encode(&self) -> Result<String, ProtocolError> {
        serde_json::to_string(self).map_err(|e| ProtocolError::Encode(e.to_string()))
    }
}

/// `{type:"req", id, method, params?}`. Ids are opaque strings (`"<n>:<uuid>"` from the
/// OpenClaw clients) that the response echoes unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl RequestFrame {
    /// Decodes `params` into a typed value; absent params decode as `{}`.
    pub fn params_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        let params = self.params.clone().unwrap_or_else(|| Value::Object(Default::default()));
        serde_json::from_value(params).map_err(|e| ProtocolError::InvalidParams {
            id: self.id.clone(),
            method: self.method.clone(),
            reason: e.to_string(),
        })
    }
}

/// `{type:"res", id, ok, payload?, error?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorShape>,
}

impl ResponseFrame {
    pub fn success(id: impl Into<String>, payload: Value) -> Self {
        ResponseFrame { id: id.into(), ok: true, payload: Some(payload), error: None }
    }

    /// Encodes a typed payload into a successful response.
    pub fn success_with<T: Serialize>(id: impl Into<String>, payload: &T) -> Result<Self, ProtocolError> {
        Ok(Self::success(id, to_value(payload)?))
    }

    /// The text of a successful response with a typed payload, written in one pass
    /// rather than through a `Value` tree: the same frame [`Frame::encode`] writes for
    /// [`ResponseFrame::success_with`], key order inside the payload aside. hello-ok,
    /// a few kilobytes on every handshake, goes out this way: built as a tree and then
    /// written it cost 52,000 instructions (callgrind) of the 578,000 a connect takes
    /// on the socket's thread, written directly 27,000.
    pub fn encode_success<T: Serialize>(id: &str, payload: &T) -> Result<String, ProtocolError> {
        #[derive(Serialize)]
        struct Success<'a, T> {
            #[serde(rename = "type")]
            kind: &'static str,
            id: &'a str,
            ok: bool,
            payload: &'a T,
        }
        serde_json::to_string(&Success { kind: "res", id, ok: true, payload })
            .map_err(|e| ProtocolError::Encode(e.to_string()))
    }

    pub fn failure(id: impl Into<String>, error: ErrorShape) -> Self {
        ResponseFrame { id: id.into(), ok: false, payload: None, error: Some(error) }
    }
}

/// `{type:"event", event, payload?, seq?, stateVersion?}`. `seq` is a per-connection
/// counter on broadcast events only (trace §2); targeted events carry none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFrame {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<StateVersion>,
}

impl EventFrame {
    /// A targeted event (no `seq`) from a typed payload.
    pub fn from_payload<P: EventPayload>(payload: &P) -> Result<Self, ProtocolError> {
        Ok(EventFrame {
            event: P::EVENT.to_string(),
            payload: Some(to_value(payload)?),
            seq: None,
            state_version: None,
        })
    }

    /// Marks the event as a broadcast with this connection's next sequence number.
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }
}

/// `{presence, health}` counters, in `hello-ok.snapshot` (OpenClaw also puts them on
/// `health` events, which hivegate does not send).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateVersion {
    pub presence: u64,
    pub health: u64,
}

/// Client text echoed back in an error (a method name, an id), cut to at most 128
/// characters so that an error never amplifies what the client sent.
pub fn clip(text: &str) -> String {
    clip_to(text, 128)
}

/// `text` cut to at most `max` characters, saying so with `…`.
pub fn clip_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A payload that is always sent under one event name.
pub trait EventPayload: Serialize {
    const EVENT: &'static str;
}

/// `{code, message, details?, retryable?, retryAfterMs?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorShape {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorShape {
            code: code.to_string(),
            message: message.into(),
            details: None,
            retryable: None,
            retry_after_ms: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(error_codes::INVALID_REQUEST, message)
    }

    /// `FORBIDDEN` with `details {code:"MISSING_SCOPE", missingScope}` (protocol.md).
    pub fn missing_scope(scope: &str) -> Self {
        Self::new(error_codes::FORBIDDEN, format!("missing scope: {scope}"))
            .with_details(serde_json::json!({ "code": detail_codes::MISSING_SCOPE, "missingScope": scope }))
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The `details.code` string, when the details carry one.
    pub fn detail_code(&self) -> Option<&str> {
        self.details.as_ref()?.get("code")?.as_str()
    }
}

/// Serializes a payload; our own payload types never fail, but the error stays typed.
pub fn to_value<T: Serialize>(payload: &T) -> Result<Value, ProtocolError> {
    serde_json::to_value(payload).map_err(|e| ProtocolError::Encode(e.to_string()))
}
