//! Benchmark harnesses, shared by `hivegate bench` and the criterion benches, so both
//! report the same path. This file: spawn (`benches/spawn.rs`); [`handshake`]: the
//! pairing handshake (`benches/handshake.rs`).
//!
//! It measures the runtime alone: a gateway with a [`ParkedModel`] (records that a call
//! was made, never answers), a parent main session parked on its first model call, and
//! spawns sent exactly as a session's `sessions_spawn` sends them. One measured spawn is
//! the whole path: spawn request → limits and attenuation → child actor started on the
//! parent's arbiter with its capability → the child's first model call (proof it is
//! running with what it was given) → ack received by the caller.

pub mod connections;
pub mod handshake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::agent::{self, Agents};
use crate::capability::Capability;
use crate::config::{Config, Limits};
use crate::gateway::stats::Percentiles;
use crate::gateway::{Cleanup, Kill, Spawn, SpawnReply, SpawnRequest, StartMain};
use crate::model::{ChatRequest, ChatResponse, ModelClient, ModelError, ModelRef};
use crate::runtime::Runtime;

/// A model that notes each call and never answers.
pub struct ParkedModel {
    calls: mpsc::UnboundedSender<()>,
}

impl ModelClient for ParkedModel {
    fn complete(&self, _: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        let _ = self.calls.send(());
        futures_util::future::pending().boxed()
    }

    fn check_model(&self, _: &ModelRef) -> Result<(), ModelError> {
        Ok(())
    }
}

const PARENT: &str = "id = \"bench-parent\"\nmodel = \"parked/parent\"\n[tools]\nallow = [\"sessions_spawn\"]\n[subagents]\nallow_agents = [\"bench-child\"]\n";
const CHILD: &str = "id = \"bench-child\"\nmodel = \"parked/child\"\n";

pub struct SpawnHarness {
    runtime: Runtime,
    calls: mpsc::UnboundedReceiver<()>,
    parent: Capability,
}

impl SpawnHarness {
    /// Start a gateway (inside a running actix System) with a parked parent session.
    pub async fn start() -> anyhow::Result<SpawnHarness> {
        let mut agents = Agents::default();
        let no_prompt = |_: &str| Ok(String::new());
        agents.insert(agent::parse("bench-parent", PARENT, no_prompt)?);
        agents.insert(agent::parse("bench-child", CHILD, no_prompt)?);
        let config = Config {
            bind: ([127, 0, 0, 1], 0).into(),
            limits: Limits { max_children_per_session: usize::MAX, max_sessions: usize::MAX, ..Limits::default() },
            state_dir: std::path::PathBuf::new(),
            ..Config::default()
        };
        let (tx, calls) = mpsc::unbounded_channel();
        let runtime = Runtime::start_with_model(&config, agents, Arc::new(ParkedModel { calls: tx })).await?;
        let mut calls = calls;
        let parent = start_parent(&runtime, &mut calls).await?;
        Ok(SpawnHarness { runtime, calls, parent })
    }

    fn request(&self) -> Spawn {
        Spawn {
            parent: self.parent.clone(),
            request: SpawnRequest {
                task: "bench".into(),
                agent_id: Some("bench-child".into()),
                cleanup: Some(Cleanup::Delete),
                ..SpawnRequest::default()
            },
            sent_at: Instant::now(),
            history: None,
            call_id: None,
            trace: None,
        }
    }

    /// One spawn, timed from request to the child running and the ack received.
    pub async fn spawn_one(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let reply = self.runtime.gateway.send(self.request()).await?;
        accepted(reply)?;
        self.calls.recv().await.ok_or_else(|| anyhow::anyhow!("child never ran"))?;
        Ok(started.elapsed())
    }

    /// `n` spawns sent at once; timed until every ack is back and every child runs.
    pub async fn burst(&mut self, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        // `Addr::send` enqueues at once; awaiting the acks in order keeps one waker
        // parked at a time instead of a 10,000-future join set measuring itself.
        let pending: Vec<_> = (0..n).map(|_| self.runtime.gateway.send(self.request())).collect();
        for reply in pending {
            accepted(reply.await?)?;
        }
        for _ in 0..n {
            self.calls.recv().await.ok_or_else(|| anyhow::anyhow!("child never ran"))?;
        }
        Ok(started.elapsed())
    }

    /// Kill the parent and its children (untimed) and start a fresh parent, so memory
    /// does not grow across benchmark iterations.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        self.runtime.gateway.send(Kill { caller: None, target: self.parent.principal().clone() }).await??;
        if !self.runtime.stats.wait_all_stopped(Duration::from_secs(30)).await {
            anyhow::bail!("sessions did not stop after the parent was killed");
        }
        self.parent = start_parent(&self.runtime, &mut self.calls).await?;
        Ok(())
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.runtime.shutdown().await.map(drop)
    }
}

/// Start the parked parent main session and return its capability.
async fn start_parent(runtime: &Runtime, calls: &mut mpsc::UnboundedReceiver<()>) -> anyhow::Result<Capability> {
    let start = StartMain {
        agent_id: "bench-parent".into(),
        task: "spawn".into(),
        run_timeout: None,
        budget_tokens: None,
        budget_usd: None,
        run_id: None,
        session_key: None,
    };
    let started = runtime.gateway.send(start).await??;
    calls.recv().await.ok_or_else(|| anyhow::anyhow!("the parent never called its model"))?;
    let entry = runtime.registry.get(&started.session_key).ok_or_else(|| anyhow::anyhow!("parent not registered"))?;
    Ok(entry.capability.clone())
}

fn accepted(reply: SpawnReply) -> anyhow::Result<()> {
    match reply {
        SpawnReply::Accepted { .. } => Ok(()),
        other => anyhow::bail!("spawn refused: {other:?}"),
    }
}

/// What `hivegate bench` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub spawn_us: Percentiles,
    pub burst_sessions: usize,
    pub burst_ms: f64,
    pub burst_us_per_spawn: f64,
    pub rss_bytes_per_session: Option<f64>,
    /// A paired node's full handshake on loopback, when measured.
    pub handshake_us: Option<Percentiles>,
}

/// `spawns` single spawns (reset every 1,000), one burst of `burst` sessions, then
/// `handshakes` device-token handshakes (none when 0).
pub async fn run(
    spawns: usize,
    burst: usize,
    handshakes: usize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<BenchReport> {
    let mut harness = SpawnHarness::start().await?;
    let mut samples = Vec::with_capacity(spawns);
    for i in 0..spawns {
        if i > 0 && i % 1000 == 0 {
            harness.reset().await?;
            progress(&format!("{i}/{spawns} single spawns"));
        }
        samples.push(harness.spawn_one().await?.as_nanos() as u64);
    }
    harness.reset().await?;
    progress(&format!("burst of {burst}"));
    let rss_before = rss_bytes();
    let elapsed = harness.burst(burst).await?;
    let rss_after = rss_bytes();
    harness.shutdown().await?;
    let handshake_us = match handshakes {
        0 => None,
        n => {
            progress(&format!("{n} handshakes"));
            let harness = handshake::HandshakeHarness::start().await?;
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                samples.push(harness.handshake().await?.as_nanos() as u64);
            }
            harness.shutdown().await?;
            Some(Percentiles::of_ns(samples))
        }
    };
    Ok(BenchReport {
        handshake_us,
        spawn_us: Percentiles::of_ns(samples),
        burst_sessions: burst,
        burst_ms: elapsed.as_secs_f64() * 1000.0,
        burst_us_per_spawn: elapsed.as_secs_f64() * 1e6 / burst.max(1) as f64,
        rss_bytes_per_session: rss_before
            .zip(rss_after)
            .map(|(before, after)| after.saturating_sub(before) as f64 / burst.max(1) as f64),
    })
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
