//! How many sockets may be unauthenticated at once, in all and per remote address.
//!
//! A socket holds a [`PreAuth`] from the upgrade until its `hello-ok` (or its end);
//! the gate refuses a new one past either cap, and the socket is closed with 1013 "try
//! again later" before any frame is read. With the 64 KiB pre-auth frame limit this
//! bounds what unauthenticated peers can make the server hold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Default caps (config: `[gateway] max_preauth_connections`, `..._per_address`).
pub const DEFAULT_MAX_PREAUTH: usize = 256;
pub const DEFAULT_MAX_PREAUTH_PER_ADDRESS: usize = 32;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_addr: HashMap<IpAddr, usize>,
}

/// The gate, shared by every HTTP worker.
#[derive(Clone, Debug)]
pub struct PreAuthGate {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_addr: usize,
}

/// Why a socket was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum GateRefusal {
    Total(usize),
    Address(usize),
}

impl GateRefusal {
    pub fn reason(&self) -> String {
        match self {
            GateRefusal::Total(max) => format!("too many unauthenticated connections ({max}); try again later"),
            GateRefusal::Address(max) => {
                format!("too many unauthenticated connections from this address ({max}); try again later")
            }
        }
    }
}

/// One unauthenticated socket's place; given back on drop.
#[derive(Debug)]
pub struct PreAuth {
    gate: PreAuthGate,
    ip: IpAddr,
}

impl PreAuthGate {
    pub fn new(max_total: usize, max_per_addr: usize) -> PreAuthGate {
        PreAuthGate { counts: Arc::default(), max_total, max_per_addr }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn enter(&self, ip: IpAddr) -> Result<PreAuth, GateRefusal> {
        let mut counts = self.lock();
        if counts.total >= self.max_total {
            return Err(GateRefusal::Total(self.max_total));
        }
        let here = counts.by_addr.entry(ip).or_default();
        if *here >= self.max_per_addr {
            return Err(GateRefusal::Address(self.max_per_addr));
        }
        *here += 1;
        counts.total += 1;
        Ok(PreAuth { gate: self.clone(), ip })
    }

    /// Unauthenticated sockets now (for tests and status).
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Default for PreAuthGate {
    fn default() -> Self {
        PreAuthGate::new(DEFAULT_MAX_PREAUTH, DEFAULT_MAX_PREAUTH_PER_ADDRESS)
    }
}

impl Drop for PreAuth {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_addr.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_addr.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_address_and_in_all_and_places_come_back() {
        let gate = PreAuthGate::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = gate.enter(a).unwrap();
        let _a2 = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), GateRefusal::Address(2));
        let _b1 = gate.enter(b).unwrap();
        assert_eq!(gate.enter(b).unwrap_err(), GateRefusal::Total(3));
        drop(a1);
        assert_eq!(gate.open(), 2);
        let _a3 = gate.enter(a).unwrap();
    }
}
