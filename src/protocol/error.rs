//! [`ProtocolError`]: everything that can be wrong with a frame before any domain logic
//! runs. Each variant knows the error response to send (when the request id is known)
//! and the close frame that follows, so the connection shell does not decide either.

use super::close::Close;
use super::frame::ErrorShape;
use super::version::SERVER_PROTOCOL;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid frame: not valid json ({reason}); send one json object per text frame")]
    NotJson { reason: String },
    #[error("invalid frame: expected a json object with a `type` field")]
    NotAnObject,
    #[error("invalid frame: {reason}")]
    Malformed { reason: String },
    #[error("invalid frame: missing string field `type`; use req, res or event")]
    MissingType,
    #[error("invalid frame: unknown type `{kind}`; use req, res or event")]
    UnknownType { kind: String },
    #[error("invalid frame: clients send `req` frames, got `{kind}`")]
    UnexpectedType { kind: String },
    #[error("invalid request frame: missing string field `id`")]
    MissingId,
    #[error("invalid request frame: missing string field `method`")]
    MissingMethod { id: String },
    #[error("invalid handshake: first request must be `connect`, got `{method}`; send connect first")]
    FirstRequestNotConnect { id: String, method: String },
    #[error("invalid {method} params: {reason}")]
    InvalidParams { id: String, method: String, reason: String },
    #[error("preauth payload too large: {len} bytes exceeds {limit}; send a smaller connect frame")]
    PreauthPayloadTooLarge { len: usize, limit: usize },
    #[error("protocol mismatch: client speaks {min}..={max}, server speaks {server}; upgrade the client")]
    ProtocolMismatch { min: u32, max: u32, server: u32 },
    #[error("could not encode frame: {0}")]
    Encode(String),
}

impl ProtocolError {
    /// The request id to answer, when the frame got far enough to have one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ProtocolError::MissingMethod { id }
            | ProtocolError::FirstRequestNotConnect { id, .. }
            | ProtocolError::InvalidParams { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The `error` of the `res ok:false` to send before closing (all `INVALID_REQUEST`).
    /// A protocol mismatch carries `details.expectedProtocol`; the node host falls back
    /// to protocol 3 only when it reads 3 there (trace §0.1).
    pub fn to_error_shape(&self) -> ErrorShape {
        let shape = ErrorShape::invalid_request(self.to_string());
        match self {
            ProtocolError::ProtocolMismatch { min, max, server } => shape.with_details(serde_json::json!({
                "code": "PROTOCOL_MISMATCH",
                "expectedProtocol": server,
                "minProtocol": min,
                "maxProtocol": max,
            })),
            _ => shape,
        }
    }

    /// The close frame that ends the connection when this happens before `hello-ok`.
    /// After the handshake, answer with [`Self::to_error_shape`] and keep the socket.
    pub fn close(&self) -> Close {
        match self {
            ProtocolError::PreauthPayloadTooLarge { .. } => Close::preauth_too_large(),
            ProtocolError::ProtocolMismatch { .. } => Close::protocol_mismatch(),
            ProtocolError::Encode(_) => Close::internal_error(),
            _ => Close::policy(super::close::close_reasons::INVALID_HANDSHAKE),
        }
    }

    pub(crate) fn mismatch(min: u32, max: u32) -> Self {
        ProtocolError::ProtocolMismatch { min, max, server: SERVER_PROTOCOL }
    }
}
