//! Benchmark harnesses, shared by `hivegate bench` and the criterion benches, so both
//! report the same path:
//! - [`spawn`]: in-process spawns, bursts and trees on a parked model (`benches/spawn.rs`);
//! - [`floor`]: the same shape of work with raw actix (actors for spawns, actix-web's
//!   WebSocket for handshakes) and no hivegate code;
//! - [`handshake`]: a paired node's handshake, one at a time and 1,000 at once
//!   (`benches/handshake.rs`);
//! - [`load`]: spawn latency while 1,000 sessions stream from a loopback provider;
//! - [`connections`]: the parent's spawn → each child's first model request bytes, over
//!   TLS with h2 and over HTTP/1.1 (`benches/first_request.rs`);
//! - [`placement`]: the same for a child placed on a worker process against one in the
//!   gateway's (`benches/placement.rs`, needs Postgres).
//!
//! [`run`] (`hivegate bench`) measures all but the last two in one process and one run,
//! so each figure can be read against the floor beside it and against the issue's
//! targets ([`Target`]); those two are criterion benches of their own.

pub mod connections;
pub mod floor;
pub mod handshake;
pub mod load;
pub mod placement;
pub mod spawn;

use std::time::Duration;

use serde::Serialize;

use crate::gateway::stats::Percentiles;
pub use spawn::{ParkedModel, SpawnHarness};

/// Sessions in the small and the large burst, in a tree, and streaming under load;
/// handshakes at once. Fixed, because the report's field names say them.
pub const BURST: usize = 10_000;
pub const BIG_BURST: usize = 100_000;
pub const TREE: usize = 10_000;
pub const STREAMS: usize = 1_000;
pub const CONCURRENT_HANDSHAKES: usize = 1_000;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Single spawns to time (reset every 1,000).
    pub spawns: usize,
    /// Sequential handshakes to time; 0 skips every handshake figure.
    pub handshakes: usize,
    /// Measure spawn latency under streaming load.
    pub load: bool,
    /// Measure the 100,000-session burst (and memory on it).
    pub big_burst: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { spawns: 10_000, handshakes: 2_000, load: true, big_burst: true }
    }
}

/// What `hivegate bench --json` prints. Times in microseconds (`Us`) or milliseconds
/// (`Ms`); a figure that was not measured is `null`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// Single in-process spawns: request → child running with its capability → ack.
    pub spawn: SpawnFigures,
    pub burst: BurstFigures,
    /// A 10,000-session tree, one level deep and five.
    pub tree: TreeFigures,
    pub memory: MemoryFigures,
    pub handshake: Option<HandshakeFigures>,
    pub under_load: Option<LoadFigures>,
    /// Raw actix doing the same shape of work, in this run.
    pub floor: FloorFigures,
    /// Session threads (gateway shards) the runtime ran.
    pub threads: usize,
    /// Each target of the scale issue, met or not, on this run's figures.
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnFigures {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BurstFigures {
    /// 10,000 spawns sent at once, until every ack is back and every child runs.
    pub sessions10k_ms: f64,
    pub sessions100k_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeFigures {
    pub depth1_ms: f64,
    pub depth5_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFigures {
    /// RSS growth per parked session over the largest burst measured, read once the
    /// sessions are parked and the store has committed their spawns: what a parked
    /// session costs, not what is briefly in flight.
    pub bytes_per_session: Option<f64>,
    /// The same growth read the moment the burst's last child ran, with the spawns'
    /// journal records still queued for the store.
    pub at_burst_end_bytes_per_session: Option<f64>,
    /// Sessions that figure is over.
    pub sessions: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeFigures {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    /// 1,000 handshakes started at once, until the last hello-ok.
    pub concurrent1000_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadFigures {
    /// Spawn p99 while the sessions stream.
    pub spawn_p99_us: f64,
    /// Spawn p99 in the same runtime without them: the lower of the two below, what the
    /// target divides by.
    pub idle_spawn_p99_us: f64,
    /// Spawn p99 before the streams started.
    pub idle_before_p99_us: f64,
    /// Spawn p99 once the streaming sessions were stopped.
    pub idle_after_p99_us: f64,
    /// Sessions streaming from the loopback provider (the fewest seen while measuring).
    pub streaming_sessions: usize,
    /// How often each streaming session received a chunk.
    pub chunk_every_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FloorFigures {
    pub spawn_p50_us: f64,
    pub spawn_p99_us: f64,
    pub burst10k_ms: f64,
    pub bytes_per_session: Option<f64>,
    /// A raw actix-web WebSocket's handshake shape (upgrade, a frame each way), with
    /// the same client and as many samples; `null` when handshakes were skipped.
    pub handshake_p50_us: Option<f64>,
    pub handshake_p99_us: Option<f64>,
    pub handshake_concurrent1000_ms: Option<f64>,
}

/// One target: a figure, its limit, and whether this run met it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub name: &'static str,
    pub value: f64,
    pub limit: f64,
    pub unit: &'static str,
    pub met: bool,
}

impl Target {
    fn at_most(name: &'static str, value: f64, limit: f64, unit: &'static str) -> Target {
        Target { name, value, limit, unit, met: value <= limit }
    }
}

/// Measure everything `options` asks for, in one process, reporting each step.
pub async fn run(options: Options, mut progress: impl FnMut(&str)) -> anyhow::Result<BenchReport> {
    let memory_sessions = if options.big_burst { BIG_BURST } else { BURST };
    progress(&format!("floor: raw actix, {} spawns and a burst of {BURST}", options.spawns));
    let floor = floor::measure(options.spawns, memory_sessions).await?;
    let floor_spawn = Percentiles::of_ns(floor.singles_ns);

    let mut harness = SpawnHarness::start().await?;
    let threads = harness.runtime().session_threads().len();
    let (big_burst, big_memory) = if options.big_burst {
        progress(&format!("burst of {BIG_BURST}"));
        let (took, memory) = burst_memory(&mut harness, BIG_BURST).await?;
        harness.reset().await?;
        (Some(took), Some(memory))
    } else {
        (None, None)
    };
    progress(&format!("{} single spawns", options.spawns));
    let spawn = Percentiles::of_ns(singles(&mut harness, options.spawns).await?);
    progress(&format!("burst of {BURST}"));
    let (burst, memory) = burst_memory(&mut harness, BURST).await?;
    harness.reset().await?;
    let (rss_per_session, rss_at_burst_end) = big_memory.unwrap_or(memory);
    progress(&format!("trees of {TREE}, depth 1 and 5"));
    let depth1 = harness.tree(TREE, 1).await?;
    harness.reset().await?;
    let depth5 = harness.tree(TREE, 5).await?;
    harness.shutdown().await?;

    let (handshake, handshake_floor) = match options.handshakes {
        0 => (None, None),
        n => {
            progress(&format!("floor: raw actix-web WebSocket, {n} handshakes, then {CONCURRENT_HANDSHAKES} at once"));
            let workers = crate::config::Config::default().threads;
            let raw = floor::handshakes(workers, n, CONCURRENT_HANDSHAKES).await?;
            let raw_p = Percentiles::of_ns(raw.singles.iter().map(|d| d.as_nanos() as u64).collect());
            progress(&format!("{n} handshakes, then {CONCURRENT_HANDSHAKES} at once"));
            let harness = handshake::HandshakeHarness::start_for(CONCURRENT_HANDSHAKES).await?;
            let samples = harness.sequential(n).await?.iter().map(|d| d.as_nanos() as u64).collect();
            let concurrent = harness.concurrent(CONCURRENT_HANDSHAKES).await?;
            harness.shutdown().await?;
            let p = Percentiles::of_ns(samples);
            let figures = HandshakeFigures {
                samples: p.samples,
                p50_us: p.p50,
                p99_us: p.p99,
                concurrent1000_ms: ms(concurrent),
            };
            (Some(figures), Some((raw_p, ms(raw.concurrent))))
        }
    };
    let under_load = if options.load {
        progress(&format!("spawns idle, then under load ({STREAMS} sessions streaming)"));
        let spawns = options.spawns.clamp(1, 2_000);
        let load = load::measure(spawns, STREAMS, &mut progress).await?;
        let idle_before_p99_us = Percentiles::of_ns(load.idle_ns).p99;
        let idle_after_p99_us = Percentiles::of_ns(load.idle_after_ns).p99;
        Some(LoadFigures {
            spawn_p99_us: Percentiles::of_ns(load.loaded_ns).p99,
            idle_spawn_p99_us: idle_before_p99_us.min(idle_after_p99_us),
            idle_before_p99_us,
            idle_after_p99_us,
            streaming_sessions: load.streaming_sessions,
            chunk_every_ms: ms(load::CHUNK_EVERY),
        })
    } else {
        None
    };

    let mut report = BenchReport {
        spawn: SpawnFigures { samples: spawn.samples, p50_us: spawn.p50, p99_us: spawn.p99, max_us: spawn.max },
        burst: BurstFigures { sessions10k_ms: ms(burst), sessions100k_ms: big_burst.map(ms) },
        tree: TreeFigures { depth1_ms: ms(depth1), depth5_ms: ms(depth5) },
        memory: MemoryFigures {
            bytes_per_session: rss_per_session,
            at_burst_end_bytes_per_session: rss_at_burst_end,
            sessions: if options.big_burst { BIG_BURST } else { BURST },
        },
        handshake,
        under_load,
        floor: FloorFigures {
            spawn_p50_us: floor_spawn.p50,
            spawn_p99_us: floor_spawn.p99,
            burst10k_ms: ms(floor.burst_10k),
            bytes_per_session: floor.bytes_per_session,
            handshake_p50_us: handshake_floor.as_ref().map(|(p, _)| p.p50),
            handshake_p99_us: handshake_floor.as_ref().map(|(p, _)| p.p99),
            handshake_concurrent1000_ms: handshake_floor.map(|(_, at_once)| at_once),
        },
        threads,
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    Ok(report)
}

/// The scale issue's targets on a two-core machine, as ratios to this run's floor
/// where the issue states them so.
pub fn targets(r: &BenchReport) -> Vec<Target> {
    let mut t = vec![
        Target::at_most("spawn p50 / floor", r.spawn.p50_us / r.floor.spawn_p50_us, 1.5, "ratio"),
        Target::at_most("10k burst / floor", r.burst.sessions10k_ms / r.floor.burst10k_ms, 2.0, "ratio"),
        Target::at_most("depth-5 tree / depth-1", r.tree.depth5_ms / r.tree.depth1_ms, 1.5, "ratio"),
    ];
    if let Some(ms) = r.burst.sessions100k_ms {
        t.push(Target::at_most("100k burst", ms, 400.0, "ms"));
    }
    if let Some(bytes) = r.memory.bytes_per_session {
        t.push(Target::at_most("memory per session", bytes, 1536.0, "bytes"));
    }
    if let Some(h) = &r.handshake {
        t.push(Target::at_most("handshake p50", h.p50_us, 300.0, "µs"));
        t.push(Target::at_most("1,000 concurrent handshakes", h.concurrent1000_ms, 150.0, "ms"));
    }
    if let Some(l) = &r.under_load {
        t.push(Target::at_most("spawn p99 under load / idle", l.spawn_p99_us / l.idle_spawn_p99_us, 2.0, "ratio"));
    }
    t
}

/// `n` single spawns in runs of 1,000, the parent's tree reset between runs.
pub async fn singles(harness: &mut SpawnHarness, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(n);
    while samples.len() < n {
        let run = (n - samples.len()).min(1_000);
        samples.extend(harness.singles(run).await?);
        harness.reset().await?;
    }
    Ok(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A timed burst of `n`, and the RSS growth per session: parked (after the store has
/// caught up and the allocator has had three seconds to give back what it freed), and at
/// the burst's end.
async fn burst_memory(harness: &mut SpawnHarness, n: usize) -> anyhow::Result<(Duration, (Option<f64>, Option<f64>))> {
    let before = crate::memory::resident_bytes();
    let took = harness.burst(n).await?;
    let at_end = crate::memory::resident_bytes();
    tokio::time::timeout(STORE_CATCH_UP, harness.runtime().store_caught_up())
        .await
        .map_err(|_| anyhow::anyhow!("the store did not commit the burst's spawns within {STORE_CATCH_UP:?}"))?;
    // The allocator gives back freed pages some time after they are freed (its purge
    // delay is a second, and a session thread hands back what the store freed for it
    // on its next `memory::give_back`): the lowest reading over three seconds, every
    // session parked throughout.
    let mut parked = crate::memory::resident_bytes();
    for _ in 0..ALLOCATOR_SETTLE_READS {
        tokio::time::sleep(ALLOCATOR_SETTLE_EVERY).await;
        parked = parked.min(crate::memory::resident_bytes());
    }
    Ok((took, (per_session(before, parked, n), per_session(before, at_end, n))))
}

/// How long the store may take to commit a burst's spawns before the run fails.
const STORE_CATCH_UP: Duration = Duration::from_secs(60);
const ALLOCATOR_SETTLE_READS: usize = 60;
const ALLOCATOR_SETTLE_EVERY: Duration = Duration::from_millis(50);

/// RSS growth per session between two readings, when both were taken.
fn per_session(before: Option<u64>, after: Option<u64>, sessions: usize) -> Option<f64> {
    before.zip(after).map(|(before, after)| after.saturating_sub(before) as f64 / sessions.max(1) as f64)
}
