//! WebSocket close codes and reason texts the gateway uses, as values a shell can send
//! as is. A close reason is limited to 123 bytes by RFC 6455, so [`Close::policy`]
//! truncates longer texts at a character boundary.

/// Close status codes.
pub mod close_codes {
    /// Normal closure; also the handshake timeout.
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL_MISMATCH: u16 = 1002;
    /// Policy violation: auth failure, device checks, pairing required, slow consumer,
    /// a first frame that is not `connect`. (A browser Origin that is not allowed gets
    /// HTTP 403 before the upgrade, not this.)
    pub const POLICY: u16 = 1008;
    pub const PREAUTH_TOO_LARGE: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Gateway shutdown or restart (trace §8.1), after the `shutdown` event.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Sent by the client, never the gateway, after two missed ticks.
    pub const TICK_TIMEOUT: u16 = 4000;
    /// The shared secret was rotated; live connections must re-authenticate.
    pub const AUTH_CHANGED: u16 = 4001;
}

/// Fixed close reason texts.
pub mod close_reasons {
    pub const PROTOCOL_MISMATCH: &str = "protocol mismatch";
    pub const PREAUTH_TOO_LARGE: &str = "preauth payload too large";
    pub const SERVICE_RESTART: &str = "service restart";
    pub const AUTH_CHANGED: &str = "gateway auth changed";
    pub const HANDSHAKE_TIMEOUT: &str = "handshake timeout";
    pub const INVALID_HANDSHAKE: &str = "invalid handshake";
    pub const SLOW_CONSUMER: &str = "slow consumer";
    pub const ORIGIN_NOT_ALLOWED: &str = "origin not allowed";
    pub const TICK_TIMEOUT: &str = "tick timeout";
    pub const INTERNAL_ERROR: &str = "internal error";
    /// Every pairing close reason starts with this (the node host matches on it).
    pub const PAIRING_REQUIRED_PREFIX: &str = "pairing required";
}

/// Longest close reason RFC 6455 allows (125-byte control payload minus the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A close frame to send: status code and reason text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    pub fn new(code: u16, reason: &str) -> Self {
        Close { code, reason: truncate_reason(reason) }
    }

    pub fn normal() -> Self {
        Self::new(close_codes::NORMAL, "")
    }

    pub fn handshake_timeout() -> Self {
        Self::new(close_codes::NORMAL, close_reasons::HANDSHAKE_TIMEOUT)
    }

    pub fn protocol_mismatch() -> Self {
        Self::new(close_codes::PROTOCOL_MISMATCH, close_reasons::PROTOCOL_MISMATCH)
    }

    /// 1008 with a free-form reason (usually the error message just sent).
    pub fn policy(reason: &str) -> Self {
        Self::new(close_codes::POLICY, reason)
    }

    pub fn preauth_too_large() -> Self {
        Self::new(close_codes::PREAUTH_TOO_LARGE, close_reasons::PREAUTH_TOO_LARGE)
    }

    pub fn service_restart() -> Self {
        Self::new(close_codes::SERVICE_RESTART, close_reasons::SERVICE_RESTART)
    }

    pub fn auth_changed() -> Self {
        Self::new(close_codes::AUTH_CHANGED, close_reasons::AUTH_CHANGED)
    }

    pub fn internal_error() -> Self {
        Self::new(close_codes::INTERNAL_ERROR, close_reasons::INTERNAL_ERROR)
    }

    /// `1008 "<message> (requestId: <id>)"`, as in trace §3.
    pub fn pairing_required(message: &str, request_id: &str) -> Self {
        Self::policy(&format!("{message} (requestId: {request_id})"))
    }
}

fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON_BYTES {
        return reason.to_string();
    }
    let mut end = MAX_CLOSE_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_close_matches_the_trace() {
        let close = Close::pairing_required(
            "pairing required: device is not approved yet",
            "a2afb3d2-1b96-483c-b922-8a2a130b25d2",
        );
        assert_eq!(
            close,
            Close {
                code: 1008,
                reason:
                    "pairing required: device is not approved yet (requestId: a2afb3d2-1b96-483c-b922-8a2a130b25d2)"
                        .to_string()
            }
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let close = Close::policy(&long);
        assert!(close.reason.len() <= MAX_CLOSE_REASON_BYTES);
        assert_eq!(close.reason, "é".repeat(61));
    }
}
