//! Counters the gateway keeps for reports: spawn latency samples, spawns, live session
//! actors, pairing requests. Cheap to update from any thread. The same updates feed the
//! Prometheus series ([`crate::telemetry::Metrics`]), which everyone holding the stats
//! reaches through [`Stats::metrics`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::telemetry::Metrics;

/// Latency samples kept: the most recent ones, so a long-running gateway's memory does
/// not grow with every spawn.
pub const LATENCY_SAMPLES: usize = 1 << 16;

#[derive(Default)]
pub struct Stats {
    spawns: AtomicU64,
    live_sessions: AtomicUsize,
    pairing_requests: AtomicU64,
    spawns_refused: AtomicU64,
    spawn_latency_ns: Mutex<Vec<u64>>,
    /// Per shard, how many times its thread has given freed memory back
    /// ([`crate::memory::give_back`]): about once a second each.
    gave_back: Mutex<Vec<u64>>,
    all_stopped: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

/// Percentiles of a latency sample, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples_ns`, reported in µs.
    pub fn of_ns(mut samples_ns: Vec<u64>) -> Percentiles {
        if samples_ns.is_empty() {
            return Percentiles::default();
        }
        samples_ns.sort_unstable();
        let rank = |p: f64| {
            let index = ((p * samples_ns.len() as f64).ceil() as usize).clamp(1, samples_ns.len()) - 1;
            samples_ns[index] as f64 / 1000.0
        };
        Percentiles { samples: samples_ns.len(), p50: rank(0.50), p99: rank(0.99), max: rank(1.0) }
    }
}

impl Stats {
    /// Stats whose updates also feed `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Stats {
        Stats { metrics, ..Stats::default() }
    }

    /// The Prometheus series.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A subagent session of `agent` started.
    pub fn record_spawn(&self, agent: &Arc<str>) {
        self.spawns.fetch_add(1, Ordering::Relaxed);
        self.metrics.spawned(agent);
    }

    /// One spawn: request sent → child actor started with its capability → ack sent.
    /// Keeps the latest [`LATENCY_SAMPLES`] (a ring once full).
    pub fn record_spawn_latency(&self, elapsed: Duration) {
        self.metrics.spawn_latency(elapsed);
        let sample = elapsed.as_nanos() as u64;
        let spawns = self.spawns.load(Ordering::Relaxed) as usize;
        let mut samples = self.spawn_latency_ns.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < LATENCY_SAMPLES {
            samples.push(sample);
        } else {
            samples[spawns % LATENCY_SAMPLES] = sample;
        }
    }

    pub fn spawn_latency(&self) -> Percentiles {
        Percentiles::of_ns(self.spawn_latency_ns.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// `shard`'s thread gave back what was freed for it.
    pub fn record_give_back(&self, shard: u16) {
        let mut counts = self.gave_back.lock().unwrap_or_else(|p| p.into_inner());
        let shard = usize::from(shard);
        if counts.len() <= shard {
            counts.resize(shard + 1, 0);
        }
        counts[shard] += 1;
    }

    /// Per shard (by number), the times its thread gave memory back; a shard that never
    /// has is 0, or absent past the last one that has.
    pub fn give_backs(&self) -> Vec<u64> {
        self.gave_back.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record_spawn_refused(&self) {
        self.spawns_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Spawns refused by policy, a limit or a bad request.
    pub fn spawns_refused(&self) -> u64 {
        self.spawns_refused.load(Ordering::Relaxed)
    }

    pub fn spawns(&self) -> u64 {
        self.spawns.load(Ordering::Relaxed)
    }

    pub fn session_started(&self, agent: &Arc<str>) {
        self.live_sessions.fetch_add(1, Ordering::AcqRel);
        self.metrics.session_started(agent);
    }

    pub fn session_stopped(&self, agent: &Arc<str>) {
        self.metrics.session_stopped(agent);
        if self.live_sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_stopped.notify_waiters();
        }
    }

    /// Wait until no session actor is alive, at most `limit`. Returns whether they all
    /// stopped.
    pub async fn wait_all_stopped(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.all_stopped.notified();
            if self.live_sessions() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live_sessions() == 0;
            }
        }
    }

    /// Session actors currently alive (started and not yet stopped).
    pub fn live_sessions(&self) -> usize {
        self.live_sessions.load(Ordering::Acquire)
    }

    pub fn record_pairing_request(&self) {
        self.pairing_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Pairing requests created in this process (in-process spawns never create one).
    pub fn pairing_requests(&self) -> u64 {
        self.pairing_requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of_ns((1..=100).map(|i| i * 1000).collect());
        assert_eq!(p, Percentiles { samples: 100, p50: 50.0, p99: 99.0, max: 100.0 });
        assert_eq!(Percentiles::of_ns(vec![]), Percentiles::default());
    }

    #[test]
    fn latency_samples_stay_bounded() {
        let stats = Stats::default();
        let agent: Arc<str> = Arc::from("executor");
        for i in 0..(LATENCY_SAMPLES + 10) {
            stats.record_spawn(&agent);
            stats.record_spawn_latency(Duration::from_nanos(i as u64));
        }
        assert_eq!(stats.spawn_latency().samples, LATENCY_SAMPLES);
    }
}
