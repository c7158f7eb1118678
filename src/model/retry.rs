//! When to retry a model call, and how long to wait first: a pure function of the
//! failure, the attempt number and a jitter draw, so the rules are unit tested without
//! a clock or a network.
//!
//! Retried: HTTP 429, 408 and 5xx, and transport errors, as long as no output has been
//! received (a call that has streamed text or whose tool calls ran is never repeated).
//! Not retried: any other 4xx, a body that could not be decoded, a response over the
//! size cap. The wait is exponential backoff with jitter, and never shorter than the
//! provider's `Retry-After`; a `Retry-After` longer than the caller's patience
//! (`limits.max_retry_wait_seconds`) gives up at once, so the caller can fail over.

use std::time::{Duration, SystemTime};

/// Per provider: how many times to retry, and the backoff's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; doubled for each further retry.
    pub base: Duration,
    /// No backoff is longer than this (before `Retry-After`).
    pub max_backoff: Duration,
    /// A provider asking to wait longer than this is not waited for.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// What went wrong with one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status, when the provider answered with one.
    pub status: Option<u16>,
    /// The provider's `Retry-After`, already parsed.
    pub retry_after: Option<Duration>,
    /// Some output (streamed text, a tool call) was already received.
    pub output_started: bool,
    /// The connection failed or timed out without an HTTP status.
    pub transport: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry { after: Duration },
    /// Stop here; `why` says why no retry is taken.
    GiveUp { why: &'static str },
}

/// Whether a failure of this kind is worth another attempt at all.
pub fn retryable(failure: &Failure) -> bool {
    !failure.output_started
        && match failure.status {
            Some(status) => status == 429 || status == 408 || (500..600).contains(&status),
            None => failure.transport,
        }
}

/// Decide after attempt number `attempt` (0 for the first) failed. `jitter` is a draw
/// from `[0, 1)`: the backoff is spread over its upper half, so concurrent callers do
/// not retry in lockstep.
pub fn decide(policy: &RetryPolicy, attempt: u32, failure: &Failure, jitter: f64) -> Decision {
    if failure.output_started {
        return Decision::GiveUp { why: "output had already started" };
    }
    if !retryable(failure) {
        return Decision::GiveUp { why: "not a retryable failure" };
    }
    if attempt >= policy.max_retries {
        return Decision::GiveUp { why: "retries exhausted" };
    }
    if failure.retry_after.is_some_and(|wait| wait > policy.max_wait) {
        return Decision::GiveUp { why: "Retry-After is longer than limits.max_retry_wait_seconds" };
    }
    let exponential = policy.base.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX));
    let backoff = exponential.min(policy.max_backoff).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    Decision::Retry { after: backoff.max(failure.retry_after.unwrap_or_default()) }
}

/// A `Retry-After` header: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past means "now"; anything unreadable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> Failure {
        Failure { status: Some(status), retry_after: None, output_started: false, transport: false }
    }

    #[test]
    fn only_overload_timeouts_server_errors_and_transport_are_retried() {
        for status in [429, 408, 500, 502, 503, 504, 599] {
            assert!(retryable(&http(status)), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!retryable(&http(status)), "{status}");
        }
        let transport = Failure { status: None, retry_after: None, output_started: false, transport: true };
        assert!(retryable(&transport));
        let decode = Failure { transport: false, ..transport.clone() };
        assert!(!retryable(&decode));
        assert!(!retryable(&Failure { output_started: true, ..http(503) }));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy { max_retries: 10, ..RetryPolicy::default() };
        let waits: Vec<_> = (0..6)
            .map(|attempt| match decide(&policy, attempt, &http(503), 1.0) {
                Decision::Retry { after } => after.as_millis(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(decide(&policy, 0, &http(503), 0.0), Decision::Retry { after: Duration::from_millis(250) });
        let patient = RetryPolicy { max_retries: 100, ..policy };
        assert_eq!(decide(&patient, 40, &http(503), 1.0), Decision::Retry { after: Duration::from_secs(8) });
    }

    #[test]
    fn retry_after_is_a_floor_and_too_long_a_wait_gives_up_at_once() {
        let policy = RetryPolicy::default();
        let asked = Failure { retry_after: Some(Duration::from_secs(1)), ..http(429) };
        assert_eq!(decide(&policy, 0, &asked, 0.0), Decision::Retry { after: Duration::from_secs(1) });
        let long = Failure { retry_after: Some(Duration::from_secs(61)), ..http(429) };
        assert_eq!(
            decide(&policy, 0, &long, 0.0),
            Decision::GiveUp { why: "Retry-After is longer than limits.max_retry_wait_seconds" }
        );
    }

    #[test]
    fn no_retry_after_output_or_past_the_budget() {
        let policy = RetryPolicy::default();
        let started = Failure { output_started: true, ..http(503) };
        assert_eq!(decide(&policy, 0, &started, 0.5), Decision::GiveUp { why: "output had already started" });
        assert_eq!(decide(&policy, 3, &http(503), 0.5), Decision::GiveUp { why: "retries exhausted" });
        assert_eq!(decide(&policy, 0, &http(400), 0.5), Decision::GiveUp { why: "not a retryable failure" });
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
