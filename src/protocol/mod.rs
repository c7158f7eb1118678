//! Wire types of the OpenClaw-compatible gateway protocol: serde only, no actix, no
//! I/O. Every type here is what goes over the socket, named after its JSON; domain
//! types (pairing records, scope sets) live in `pairing` and convert into these.
//!
//! Layout: [`frame`](Frame) has the three frame shapes, the error shape and the code
//! constants; `close` the close codes; `connect` the challenge and the connect params;
//! `hello` the `hello-ok` payload; `events` keepalive, shutdown, pairing events and the
//! `PAIRING_REQUIRED` details; `devices` and `node` the RPC payloads the real clients
//! use; `parse` and `version` the pure handshake checks; `error` [`ProtocolError`].
//!
//! Input from clients tolerates unknown fields (serde's default), so newer clients keep
//! working; output omits absent optional fields rather than sending `null`.

mod close;
mod connect;
mod devices;
mod error;
mod events;
mod frame;
mod hello;
mod node;
mod parse;
mod version;

pub use close::{close_codes, close_reasons, Close, MAX_CLOSE_REASON_BYTES};
pub use connect::{ChallengePayload, ClientInfo, ConnectAuth, ConnectParams, DeviceProof, Role, Secret};
pub use devices::{
    DeviceIdParams, DevicePairApproveResult, DevicePairList, DevicePairRejectResult, DevicePairedRow, DevicePendingRow,
    DeviceTokenParams, DeviceTokenRevokeResult, DeviceTokenRotateResult, DeviceTokenRow, NodeSurfaceRow,
    PendingNodeSurfaceRow, RequestIdParams,
};
pub use error::ProtocolError;
pub use events::{
    Decision, DevicePairResolved, NodePairResolved, NodeRunnerInventoryChanged, PairingReason, PairingRequiredCode,
    PairingRequiredDetails, RecommendedNextStep, ShutdownPayload, TickPayload,
};
pub use frame::{
    clip, clip_to, detail_codes, error_codes, to_value, ErrorShape, EventFrame, EventPayload, Frame, RequestFrame,
    ResponseFrame, StateVersion,
};
pub use hello::{
    AuthMethod, Features, HelloAuth, HelloOk, HelloOkTag, Policy, ServerInfo, Snapshot, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_TICK_INTERVAL_MS,
};
pub use node::{
    NodeEventParams, NodeEventResult, NodeInvokeCancel, NodeInvokeError, NodeInvokeParams, NodeInvokeRequest,
    NodeInvokeResponse, NodeInvokeResultParams, NodeListEntry, NodeListResult, NodePairApproveResult, NodePairList,
    NodePairRejectResult, NodePairedRow, NodePendingRow, OkAck,
};
pub use parse::{
    check_preauth_size, parse_client_frame, parse_connect_frame, parse_frame, ConnectRequest, MAX_PREAUTH_PAYLOAD_BYTES,
};
pub use version::{negotiate_protocol, LEGACY_NODE_PROTOCOL, SERVER_PROTOCOL};
