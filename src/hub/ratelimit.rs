//! Failed-authentication rate limiting, per subject and credential kind.
//!
//! OpenClaw's numbers: 10 failures within 60 s lock that (subject, kind) out for 5
//! minutes. Budgets are separate so that nobody can spend someone else's: credentials
//! anyone can present (the shared token, a device signature, a new pairing request) are
//! counted per remote address, and a device token per device, which only the holder of
//! the device's key can reach (its signature is verified first). So an anonymous client
//! behind the same address (a same-host reverse proxy makes that everyone) cannot lock a
//! paired device out. Direct loopback connections without a browser `Origin` are exempt
//! (the machine's owner must always be able to get in). Pure and clock-injected, so
//! tests drive it without waiting; bounded in size.

use std::collections::HashMap;
use std::net::IpAddr;

pub const MAX_FAILURES: usize = 10;
pub const WINDOW_MS: u64 = 60_000;
pub const LOCKOUT_MS: u64 = 5 * 60_000;

/// Which credential failed: each kind has its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    SharedToken,
    DeviceToken,
    DeviceSignature,
    /// Not a failure as such: new pairing requests from one address are budgeted like
    /// failures, so nobody floods the book (and the disk) with fresh keys.
    PairingRequest,
}

/// Whose budget a failure is charged to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    Addr(IpAddr),
    /// A verified device id: only the holder of its key can fail for it.
    Device(String),
}

/// Entries remembered at most; beyond this the stalest go first.
pub const MAX_ENTRIES: usize = 16_384;

#[derive(Default)]
struct Entry {
    failures: Vec<u64>,
    locked_until: Option<u64>,
}

impl Entry {
    fn last_activity(&self) -> u64 {
        self.failures.last().copied().unwrap_or_default().max(self.locked_until.unwrap_or_default())
    }
}

#[derive(Default)]
pub struct RateLimiter {
    entries: HashMap<(Subject, CredentialKind), Entry>,
    /// The size at which the next prune runs (amortised: pruning is O(entries)).
    prune_at: usize,
}

impl RateLimiter {
    /// `Err(retry_after_ms)` while `(subject, kind)` is locked out.
    pub fn check(&self, subject: &Subject, kind: CredentialKind, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(&(subject.clone(), kind)).and_then(|e| e.locked_until) {
            Some(until) if until > now_ms => Err(until - now_ms),
            _ => Ok(()),
        }
    }

    /// Record a failure; returns `Some(retry_after_ms)` when this one triggers a lockout.
    pub fn fail(&mut self, subject: Subject, kind: CredentialKind, now_ms: u64) -> Option<u64> {
        self.prune(now_ms);
        let entry = self.entries.entry((subject, kind)).or_default();
        entry.failures.retain(|t| now_ms.saturating_sub(*t) < WINDOW_MS);
        entry.failures.push(now_ms);
        if entry.failures.len() >= MAX_FAILURES {
            entry.failures.clear();
            entry.locked_until = Some(now_ms + LOCKOUT_MS);
            return Some(LOCKOUT_MS);
        }
        None
    }

    /// A success clears the failure count (not an active lockout).
    pub fn succeed(&mut self, subject: &Subject, kind: CredentialKind) {
        if let Some(entry) = self.entries.get_mut(&(subject.clone(), kind)) {
            entry.failures.clear();
        }
    }

    /// Drop entries with nothing left to remember; past [`MAX_ENTRIES`] live ones, drop
    /// the stalest half, so the map cannot grow without bound.
    fn prune(&mut self, now_ms: u64) {
        if self.entries.len() < self.prune_at.max(1024) {
            return;
        }
        self.entries.retain(|_, e| {
            e.locked_until.is_some_and(|u| u > now_ms)
                || e.failures.iter().any(|t| now_ms.saturating_sub(*t) < WINDOW_MS)
        });
        if self.entries.len() >= MAX_ENTRIES {
            let mut activity: Vec<u64> = self.entries.values().map(Entry::last_activity).collect();
            let (_, median, _) = activity.select_nth_unstable(MAX_ENTRIES / 2);
            let cutoff = *median;
            self.entries.retain(|_, e| e.last_activity() > cutoff);
        }
        self.prune_at = (self.entries.len() * 2).clamp(1024, MAX_ENTRIES);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_lock_out_for_five_minutes() {
        let ip = Subject::Addr([10, 0, 0, 7].into());
        let other = Subject::Addr([10, 0, 0, 8].into());
        let mut limiter = RateLimiter::default();
        for i in 0..9 {
            assert_eq!(limiter.fail(ip.clone(), CredentialKind::SharedToken, 1000 + i), None);
        }
        assert_eq!(limiter.fail(ip.clone(), CredentialKind::SharedToken, 2000), Some(LOCKOUT_MS));
        assert_eq!(limiter.check(&ip, CredentialKind::SharedToken, 2000), Err(LOCKOUT_MS));
        assert_eq!(limiter.check(&ip, CredentialKind::SharedToken, 2000 + LOCKOUT_MS - 1), Err(1));
        assert_eq!(limiter.check(&ip, CredentialKind::SharedToken, 2000 + LOCKOUT_MS), Ok(()));
        assert_eq!(limiter.check(&ip, CredentialKind::DeviceToken, 2000), Ok(()), "kinds are separate");
        assert_eq!(limiter.check(&other, CredentialKind::SharedToken, 2000), Ok(()), "addresses are separate");
        let device = Subject::Device("d1".into());
        assert_eq!(limiter.check(&device, CredentialKind::SharedToken, 2000), Ok(()), "devices are separate");
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let ip = Subject::Addr([10, 0, 0, 7].into());
        let mut limiter = RateLimiter::default();
        for i in 0..20 {
            assert_eq!(limiter.fail(ip.clone(), CredentialKind::SharedToken, i * WINDOW_MS / 8), None);
        }
    }

    #[test]
    fn the_map_stays_bounded_under_a_flood_of_fresh_subjects() {
        let mut limiter = RateLimiter::default();
        for i in 0..(3 * MAX_ENTRIES as u64) {
            limiter.fail(Subject::Device(format!("d{i}")), CredentialKind::DeviceToken, 1000 + i);
        }
        assert!(limiter.len() <= MAX_ENTRIES, "{} entries", limiter.len());
    }
}
