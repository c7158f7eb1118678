//! Parsing client text frames. Parsing goes through `serde_json::Value` first so that
//! each structural problem gets its own precise error (not JSON, not an object, no
//! `type`, no `id`, no `method`) instead of serde's generic message; only `params` are
//! decoded by serde, and serde's message is kept there because it names the field.

use serde_json::Value;

use super::connect::ConnectParams;
use super::frame::{Frame, RequestFrame};
use super::ProtocolError;

/// Frames before `hello-ok` are capped at 64 KiB (close 1009 beyond).
pub const MAX_PREAUTH_PAYLOAD_BYTES: usize = 64 * 1024;

/// A parsed `connect` request: its id (to answer) and typed params.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    pub id: String,
    pub params: ConnectParams,
}

/// Refuses a pre-auth frame longer than [`MAX_PREAUTH_PAYLOAD_BYTES`].
pub fn check_preauth_size(len: usize) -> Result<(), ProtocolError> {
    if len > MAX_PREAUTH_PAYLOAD_BYTES {
        return Err(ProtocolError::PreauthPayloadTooLarge { len, limit: MAX_PREAUTH_PAYLOAD_BYTES });
    }
    Ok(())
}

/// Parses any frame (used for server frames in tests and tools).
pub fn parse_frame(text: &str) -> Result<Frame, ProtocolError> {
    let value = parse_object(text)?;
    match frame_type(&value)? {
        "req" => Ok(Frame::Request(request_from_value(value)?)),
        "res" | "event" => {
            serde_json::from_value(value).map_err(|e| ProtocolError::Malformed { reason: e.to_string() })
        }
        other => Err(ProtocolError::UnknownType { kind: other.to_string() }),
    }
}

/// Parses a frame from a client after the handshake: clients only send `req`.
pub fn parse_client_frame(text: &str) -> Result<RequestFrame, ProtocolError> {
    let value = parse_object(text)?;
    match frame_type(&value)? {
        "req" => request_from_value(value),
        kind @ ("res" | "event") => Err(ProtocolError::UnexpectedType { kind: kind.to_string() }),
        other => Err(ProtocolError::UnknownType { kind: other.to_string() }),
    }
}

/// Parses the first client frame: size-checked, a `req` with method `connect`, and
/// params that decode as [`ConnectParams`]. Version negotiation is a separate step
/// ([`super::negotiate_protocol`]) because it needs the parsed role.
pub fn parse_connect_frame(text: &str) -> Result<ConnectRequest, ProtocolError> {
    check_preauth_size(text.len())?;
    let request = parse_client_frame(text)?;
    if request.method != "connect" {
        return Err(ProtocolError::FirstRequestNotConnect { id: request.id, method: request.method });
    }
    let params = match request.params {
        Some(params @ Value::Object(_)) => params,
        Some(_) => return Err(invalid_connect(&request.id, "params must be an object")),
        None => return Err(invalid_connect(&request.id, "missing params")),
    };
    let params = serde_json::from_value(params).map_err(|e| invalid_connect(&request.id, &e.to_string()))?;
    Ok(ConnectRequest { id: request.id, params })
}

fn invalid_connect(id: &str, reason: &str) -> ProtocolError {
    ProtocolError::InvalidParams { id: id.to_string(), method: "connect".to_string(), reason: reason.to_string() }
}

fn parse_object(text: &str) -> Result<Value, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProtocolError::NotJson { reason: e.to_string() })?;
    if !value.is_object() {
        return Err(ProtocolError::NotAnObject);
    }
    Ok(value)
}

fn frame_type(value: &Value) -> Result<&str, ProtocolError> {
    value.get("type").and_then(Value::as_str).ok_or(ProtocolError::MissingType)
}

fn request_from_value(mut value: Value) -> Result<RequestFrame, ProtocolError> {
    let id = match value.get("id").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => return Err(ProtocolError::MissingId),
    };
    let method = match value.get("method").and_then(Value::as_str) {
        Some(method) => method.to_string(),
        None => return Err(ProtocolError::MissingMethod { id }),
    };
    let params = value.get_mut("params").map(Value::take).filter(|p| !p.is_null());
    Ok(RequestFrame { id, method, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preauth_limit_is_inclusive() {
        assert_eq!(check_preauth_size(MAX_PREAUTH_PAYLOAD_BYTES), Ok(()));
        let err = check_preauth_size(MAX_PREAUTH_PAYLOAD_BYTES + 1);
        assert_eq!(err, Err(ProtocolError::PreauthPayloadTooLarge { len: 65537, limit: 65536 }));
    }

    #[test]
    fn oversized_connect_closes_1009_before_parsing() {
        let text = format!("{{\"type\":\"req\",\"pad\":\"{}\"}}", "x".repeat(MAX_PREAUTH_PAYLOAD_BYTES));
        let err = parse_connect_frame(&text).err();
        let close = err.as_ref().map(ProtocolError::close);
        assert_eq!(close.map(|c| (c.code, c.reason)), Some((1009, "preauth payload too large".to_string())));
    }

    #[test]
    fn client_frames_must_be_requests() {
        let err = parse_client_frame(r#"{"type":"res","id":"1","ok":true}"#);
        assert_eq!(err, Err(ProtocolError::UnexpectedType { kind: "res".to_string() }));
    }

    use proptest::prelude::*;

    /// Any JSON value, up to a small depth: the shapes a hostile client can send.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("id".to_string()),
                        Just("method".to_string()),
                        Just("params".to_string()),
                        Just("minProtocol".to_string()),
                        Just("client".to_string()),
                        Just("device".to_string()),
                        Just("auth".to_string()),
                        ".{0,8}"
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever text arrives, parsing answers with a frame or an error that knows
        /// its close; it never panics.
        #[test]
        fn random_text_never_panics(text in ".{0,300}") {
            if let Err(e) = parse_connect_frame(&text) {
                let close = e.close();
                prop_assert!([1002, 1008, 1009].contains(&close.code), "{close:?}");
                let _ = e.to_error_shape();
            }
            let _ = parse_client_frame(&text);
            let _ = parse_frame(&text);
        }

        /// Random JSON shaped like frames, with `req`/`connect` often present.
        #[test]
        fn random_frames_never_panic(mut value in json_value(), req in any::<bool>(), connect in any::<bool>()) {
            if let (true, Value::Object(map)) = (req, &mut value) {
                map.insert("type".into(), Value::from("req"));
                map.insert("id".into(), Value::from("1"));
                if connect {
                    map.insert("method".into(), Value::from("connect"));
                }
            }
            let text = value.to_string();
            match parse_connect_frame(&text) {
                Ok(request) => prop_assert_eq!(request.id, "1"),
                Err(e) => {
                    let _ = (e.close(), e.to_error_shape(), e.request_id());
                }
            }
            let _ = parse_client_frame(&text);
        }
    }

    #[test]
    fn null_params_read_as_absent() {
        let frame = parse_client_frame(r#"{"type":"req","id":"2:x","method":"health","params":null}"#);
        assert_eq!(frame.map(|f| f.params), Ok(None));
    }
}
