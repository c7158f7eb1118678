//! Export and import of the whole book as one serde value, [`PairingState`], for the
//! store to persist (as one JSON blob, or by writing each record list to its table).
//! Import validates cross-references so a damaged store is refused, not half-loaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::book::PairingBook;
use super::nodes::NodeCommandPolicy;
use super::records::{DeviceToken, NodeSurface, PairedDevice, PendingDeviceRequest, PendingNodeRequest};
use super::PairingError;

/// Version of the [`PairingState`] layout.
pub const STATE_VERSION: u32 = 1;

/// Everything the book knows, as plain records. Tokens are hashes only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingState {
    pub version: u32,
    pub devices: Vec<PairedDevice>,
    pub tokens: Vec<DeviceToken>,
    pub pending: Vec<PendingDeviceRequest>,
    pub node_surfaces: Vec<NodeSurface>,
    pub node_pending: Vec<PendingNodeRequest>,
}

impl PairingBook {
    pub fn export(&self) -> PairingState {
        PairingState {
            version: STATE_VERSION,
            devices: self.devices.values().cloned().collect(),
            tokens: self.tokens.values().cloned().collect(),
            pending: self.pending.values().cloned().collect(),
            node_surfaces: self.node_surfaces.values().cloned().collect(),
            node_pending: self.node_pending.values().cloned().collect(),
        }
    }

    /// Rebuilds a book from an export. Refuses duplicates and records that point at
    /// devices that are not paired.
    pub fn import(state: PairingState, node_policy: NodeCommandPolicy) -> Result<Self, PairingError> {
        if state.version != STATE_VERSION {
            return Err(invalid(format!("unsupported version {} (expected {STATE_VERSION})", state.version)));
        }
        let mut book = PairingBook::new(node_policy);
        book.devices = unique(state.devices, |d| d.device_id.clone(), "device")?;
        book.tokens = unique(state.tokens, |t| (t.device_id.clone(), t.role), "token")?;
        if let Some(token) =
            book.tokens.values().find(|t| !book.devices.get(&t.device_id).is_some_and(|d| d.roles.contains(&t.role)))
        {
            return Err(invalid(format!("token for {} role {} has no approved device", token.device_id, token.role)));
        }
        book.pending = unique(state.pending, |p| p.request_id.clone(), "pending request")?;
        book.node_surfaces = unique(state.node_surfaces, |s| s.node_id.clone(), "node surface")?;
        book.node_pending = unique(state.node_pending, |p| p.request_id.clone(), "node request")?;
        let orphan = book
            .node_surfaces
            .keys()
            .chain(book.node_pending.values().map(|p| &p.declaration.node_id))
            .find(|id| !book.devices.contains_key(*id));
        if let Some(id) = orphan {
            return Err(invalid(format!("node {id} is not a paired device")));
        }
        Ok(book)
    }
}

fn invalid(message: String) -> PairingError {
    PairingError::InvalidState(message)
}

fn unique<K: Ord + std::fmt::Debug, V>(
    items: Vec<V>,
    key: impl Fn(&V) -> K,
    what: &str,
) -> Result<BTreeMap<K, V>, PairingError> {
    let mut map = BTreeMap::new();
    for item in items {
        let k = key(&item);
        if map.contains_key(&k) {
            return Err(invalid(format!("duplicate {what} {k:?}")));
        }
        map.insert(k, item);
    }
    Ok(map)
}
