//! Failed-authentication rate limiting, per remote address and credential kind.
//!
//! OpenClaw's numbers: 10 failures within 60 s lock that (address, kind) out for 5
//! minutes. Direct loopback connections without a browser `Origin` are exempt (the
//! machine's owner must always be able to get in); anything else is counted. Pure and
//! clock-injected, so tests drive it without waiting.

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
}

#[derive(Default)]
struct Entry {
    failures: Vec<u64>,
    locked_until: Option<u64>,
}

#[derive(Default)]
pub struct RateLimiter {
    entries: HashMap<(IpAddr, CredentialKind), Entry>,
}

impl RateLimiter {
    /// `Err(retry_after_ms)` while `(ip, kind)` is locked out.
    pub fn check(&self, ip: IpAddr, kind: CredentialKind, now_ms: u64) -> Result<(), u64> {
        match self.entries.get(&(ip, kind)).and_then(|e| e.locked_until) {
            Some(until) if until > now_ms => Err(until - now_ms),
            _ => Ok(()),
        }
    }

    /// Record a failure; returns `Some(retry_after_ms)` when this one triggers a lockout.
    pub fn fail(&mut self, ip: IpAddr, kind: CredentialKind, now_ms: u64) -> Option<u64> {
        self.prune(now_ms);
        let entry = self.entries.entry((ip, kind)).or_default();
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
    pub fn succeed(&mut self, ip: IpAddr, kind: CredentialKind) {
        if let Some(entry) = self.entries.get_mut(&(ip, kind)) {
            entry.failures.clear();
        }
    }

    /// Drop entries with nothing left to remember, so the map cannot grow without bound.
    fn prune(&mut self, now_ms: u64) {
        if self.entries.len() < 1024 {
            return;
        }
        self.entries.retain(|_, e| {
            e.locked_until.is_some_and(|u| u > now_ms)
                || e.failures.iter().any(|t| now_ms.saturating_sub(*t) < WINDOW_MS)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_lock_out_for_five_minutes() {
        let ip: IpAddr = [10, 0, 0, 7].into();
        let other: IpAddr = [10, 0, 0, 8].into();
        let mut limiter = RateLimiter::default();
        for i in 0..9 {
            assert_eq!(limiter.fail(ip, CredentialKind::SharedToken, 1000 + i), None);
        }
        assert_eq!(limiter.fail(ip, CredentialKind::SharedToken, 2000), Some(LOCKOUT_MS));
        assert_eq!(limiter.check(ip, CredentialKind::SharedToken, 2000), Err(LOCKOUT_MS));
        assert_eq!(limiter.check(ip, CredentialKind::SharedToken, 2000 + LOCKOUT_MS - 1), Err(1));
        assert_eq!(limiter.check(ip, CredentialKind::SharedToken, 2000 + LOCKOUT_MS), Ok(()));
        assert_eq!(limiter.check(ip, CredentialKind::DeviceToken, 2000), Ok(()), "kinds are separate");
        assert_eq!(limiter.check(other, CredentialKind::SharedToken, 2000), Ok(()), "addresses are separate");
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let ip: IpAddr = [10, 0, 0, 7].into();
        let mut limiter = RateLimiter::default();
        for i in 0..20 {
            assert_eq!(limiter.fail(ip, CredentialKind::SharedToken, i * WINDOW_MS / 8), None);
        }
    }
}
