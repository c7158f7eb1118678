//! What an operator sees of a gateway without reading its logs.
//!
//! **Metrics** ([`metrics`]): one [`Metrics`] per runtime, shared through
//! [`crate::gateway::Stats`], served at `GET /metrics` ([`crate::http`]) behind the
//! gateway token ([`scrape`]). Every series is named `hivegate_*`, and every label value
//! comes from a bounded set: agent ids from the config, providers from the config, model
//! names up to [`metrics::MAX_MODELS`] (later ones are counted as `other`), fixed
//! outcome words. Never a session key, run id or device id. Handles the spawn path uses
//! are resolved once per agent when the runtime starts, so a spawn pays an atomic add or
//! two.

pub mod metrics;
pub mod scrape;
pub mod sockets;

pub use metrics::Metrics;
pub use sockets::{Handshake, OpenSocket, SocketMetrics};

/// Why telemetry could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the metrics could not be encoded: {0}")]
    Encode(String),
}
