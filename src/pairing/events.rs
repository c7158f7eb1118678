//! [`PairingEvent`]: what the book asks the shell to broadcast. Each event carries its
//! wire payload and says who should receive it; the shell adds the per-connection
//! `seq` for broadcast copies and sends the node's own copy without one (trace §2).

use crate::protocol::{
    DevicePairResolved, DevicePendingRow, EventFrame, NodePairResolved, NodePendingRow, ProtocolError,
};

/// Who receives an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Operator connections holding `operator.pairing` (or `operator.admin`), with `seq`.
    PairingOperators,
    /// Those operators, and also the node's own socket, without `seq`.
    PairingOperatorsAndNode { node_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairingEvent {
    DevicePairRequested(DevicePendingRow),
    DevicePairResolved(DevicePairResolved),
    NodePairRequested(NodePendingRow),
    NodePairResolved(NodePairResolved),
}

impl PairingEvent {
    pub fn name(&self) -> &'static str {
        match self {
            PairingEvent::DevicePairRequested(_) => "device.pair.requested",
            PairingEvent::DevicePairResolved(_) => "device.pair.resolved",
            PairingEvent::NodePairRequested(_) => "node.pair.requested",
            PairingEvent::NodePairResolved(_) => "node.pair.resolved",
        }
    }

    pub fn audience(&self) -> Audience {
        match self {
            PairingEvent::NodePairResolved(resolved) => {
                Audience::PairingOperatorsAndNode { node_id: resolved.node_id.clone() }
            }
            _ => Audience::PairingOperators,
        }
    }

    /// The event frame without `seq`; add one per operator socket with `with_seq`.
    pub fn to_frame(&self) -> Result<EventFrame, ProtocolError> {
        match self {
            PairingEvent::DevicePairRequested(row) => EventFrame::from_payload(row),
            PairingEvent::DevicePairResolved(resolved) => EventFrame::from_payload(resolved),
            PairingEvent::NodePairRequested(row) => EventFrame::from_payload(row),
            PairingEvent::NodePairResolved(resolved) => EventFrame::from_payload(resolved),
        }
    }
}
