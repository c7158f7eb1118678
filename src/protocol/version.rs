//! Protocol version negotiation as a pure function. hivegate speaks 4, the version of
//! the 2026.9.6 clients (trace §0.1), and still accepts 3 from nodes, whose older hosts
//! send `minProtocol = maxProtocol = 3`. Operators get 4 or a mismatch.

use super::connect::Role;
use super::ProtocolError;

/// The version hivegate speaks and puts in `hello-ok.protocol`.
pub const SERVER_PROTOCOL: u32 = 4;
/// The older version still accepted from `role: "node"` connections.
pub const LEGACY_NODE_PROTOCOL: u32 = 3;

/// Picks the version for a client range `[min, max]`: 4 when the range contains it,
/// else 3 for nodes whose range contains 3, else a mismatch (close 1002).
pub fn negotiate_protocol(min: u32, max: u32, role: Role) -> Result<u32, ProtocolError> {
    let offers = |v: u32| min <= v && v <= max;
    if offers(SERVER_PROTOCOL) {
        Ok(SERVER_PROTOCOL)
    } else if role == Role::Node && offers(LEGACY_NODE_PROTOCOL) {
        Ok(LEGACY_NODE_PROTOCOL)
    } else {
        Err(ProtocolError::mismatch(min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_four_when_offered() {
        assert_eq!(negotiate_protocol(4, 4, Role::Node), Ok(4));
        assert_eq!(negotiate_protocol(3, 5, Role::Operator), Ok(4));
        assert_eq!(negotiate_protocol(1, 9, Role::Node), Ok(4));
    }

    #[test]
    fn accepts_three_for_nodes_only() {
        assert_eq!(negotiate_protocol(3, 3, Role::Node), Ok(3));
        assert_eq!(negotiate_protocol(2, 3, Role::Node), Ok(3));
        assert_eq!(
            negotiate_protocol(3, 3, Role::Operator),
            Err(ProtocolError::ProtocolMismatch { min: 3, max: 3, server: 4 })
        );
    }

    #[test]
    fn rejects_ranges_without_a_spoken_version() {
        assert!(negotiate_protocol(5, 6, Role::Node).is_err());
        assert!(negotiate_protocol(2, 2, Role::Node).is_err());
        assert!(negotiate_protocol(4, 3, Role::Node).is_err(), "an empty range offers nothing");
        let err = ProtocolError::mismatch(5, 5);
        assert_eq!(err.close().code, 1002);
        assert_eq!(err.close().reason, "protocol mismatch");
        assert_eq!(err.to_error_shape().details.and_then(|d| d.get("expectedProtocol").cloned()), Some(4.into()));
    }
}
