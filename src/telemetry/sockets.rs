//! The WebSocket side of the metrics: sockets open (`hivegate_websocket_connections`,
//! held by an [`OpenSocket`] guard in each connection actor) and what each connect came
//! to (`hivegate_handshakes_total{outcome}`): the hub's decision
//! ([`Handshake::of`]), or the connection's own refusal of a bad first frame or a
//! missing `connect`.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// What a WebSocket connect came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Accepted,
    /// An unknown device, or a known one asking for more: it must be approved.
    PairingRequired,
    /// Too many failed attempts from this address or device.
    RateLimited,
    /// Any other refusal: a bad token or signature, a node without an identity.
    Refused,
    /// The first frame was not a valid `connect`, or its protocol did not match.
    Invalid,
    /// No `connect` in time.
    Timeout,
}

impl Handshake {
    /// In declaration order (the counters' order).
    pub const ALL: [Handshake; 6] = [
        Handshake::Accepted,
        Handshake::PairingRequired,
        Handshake::RateLimited,
        Handshake::Refused,
        Handshake::Invalid,
        Handshake::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Handshake::Accepted => "accepted",
            Handshake::PairingRequired => "pairing_required",
            Handshake::RateLimited => "rate_limited",
            Handshake::Refused => "refused",
            Handshake::Invalid => "invalid",
            Handshake::Timeout => "timeout",
        }
    }

    /// The outcome of the hub's connect decision.
    pub fn of<A>(decision: &Result<A, crate::hub::auth::Refused>) -> Handshake {
        use crate::protocol::{detail_codes, error_codes};
        let Err(refused) = decision else { return Handshake::Accepted };
        let detail = refused.error.details.as_ref().and_then(|d| d.get("code")).and_then(|c| c.as_str());
        match (refused.error.code.as_str(), detail) {
            (error_codes::NOT_PAIRED, _) => Handshake::PairingRequired,
            (_, Some(detail_codes::AUTH_RATE_LIMITED)) => Handshake::RateLimited,
            _ => Handshake::Refused,
        }
    }
}

/// The WebSocket side's handles, for the upgrade handler and the connection actors.
#[derive(Clone)]
pub struct SocketMetrics {
    pub(super) open: Gauge,
    pub(super) handshakes: Arc<[Counter; 6]>,
}

impl SocketMetrics {
    /// A socket opened; it counts as open until the guard drops.
    pub fn open(&self) -> OpenSocket {
        self.open.inc();
        OpenSocket(self.clone())
    }

    pub fn handshake(&self, outcome: Handshake) {
        if let Some(counter) = self.handshakes.get(outcome as usize) {
            counter.inc();
        }
    }
}

/// An open WebSocket, as counted by `hivegate_websocket_connections`.
pub struct OpenSocket(SocketMetrics);

impl OpenSocket {
    pub fn handshake(&self, outcome: Handshake) {
        self.0.handshake(outcome);
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

    #[test]
    fn sockets_handshakes_and_pairing_events_are_counted() {
        let metrics = Metrics::default();
        let open = metrics.sockets().open();
        let other = metrics.sockets().open();
        drop(other);
        open.handshake(Handshake::Timeout);
        metrics.handshake(Handshake::Accepted);
        metrics.pairing_event("device.pair.requested");
        metrics.pairing_event("something.new");
        let text = metrics.encode().unwrap();
        assert!(text.contains("hivegate_websocket_connections 1\n"), "{text}");
        assert!(text.contains("hivegate_handshakes_total{outcome=\"timeout\"} 1\n"), "{text}");
        assert!(text.contains("hivegate_handshakes_total{outcome=\"accepted\"} 1\n"), "{text}");
        assert!(text.contains("hivegate_pairing_events_total{event=\"device.pair.requested\"} 1\n"), "{text}");
        assert!(text.contains("hivegate_pairing_events_total{event=\"other\"} 1\n"), "{text}");
        drop(open);
        assert!(metrics.encode().unwrap().contains("hivegate_websocket_connections 0\n"));
    }
}
