//! The spawn harness: a gateway with a [`ParkedModel`] (records that a call was made,
//! never answers) and a parent main session parked on its first model call; spawns are
//! sent exactly as a session's `sessions_spawn` sends them, from the parent's own
//! session thread to its gateway shard. One measured spawn is the whole path: spawn
//! request → limits and attenuation → child actor started on the parent's arbiter with
//! its capability → the child's first model call (proof it is running with what it was
//! given) → ack received by the caller.
//!
//! The measuring code runs on the parent's thread ([`Spawner`], moved there for each
//! job), so no cross-thread wake-up is counted that a real parent would not pay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::agent::{self, Agents};
use crate::capability::Capability;
use crate::config::{Config, Limits};
use crate::gateway::{Cleanup, Gateway, Kill, Registry, Spawn, SpawnReply, SpawnRequest, StartMain};
use crate::model::{ChatRequest, ChatResponse, ModelClient, ModelError, ModelRef};
use crate::runtime::Runtime;

/// A model that notes each call and never answers.
pub struct ParkedModel {
    calls: mpsc::UnboundedSender<()>,
}

impl ParkedModel {
    /// The model and where its calls are noted.
    pub fn new() -> (ParkedModel, mpsc::UnboundedReceiver<()>) {
        let (calls, noted) = mpsc::unbounded_channel();
        (ParkedModel { calls }, noted)
    }
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

/// The parent: spawns leaves (`bench-child`) and tree nodes (`bench-node`).
const PARENT: &str = "id = \"bench-parent\"\nmodel = \"parked/parent\"\n[tools]\nallow = [\"sessions_spawn\"]\n[subagents]\nallow_agents = [\"bench-child\", \"bench-node\"]\n";
/// A leaf: no tools.
const CHILD: &str = "id = \"bench-child\"\nmodel = \"parked/child\"\n";
/// A tree node: may spawn more of itself.
const NODE: &str = "id = \"bench-node\"\nmodel = \"parked/node\"\n[tools]\nallow = [\"sessions_spawn\"]\n[subagents]\nallow_agents = [\"bench-node\"]\n";

/// The deepest tree the harness builds.
pub const MAX_TREE_DEPTH: usize = 8;

/// The bench agents, added to `agents`.
pub fn add_agents(agents: &mut Agents) -> anyhow::Result<()> {
    let no_prompt = |_: &str| Ok(String::new());
    agents.insert(agent::parse("bench-parent", PARENT, no_prompt)?);
    agents.insert(agent::parse("bench-child", CHILD, no_prompt)?);
    agents.insert(agent::parse("bench-node", NODE, no_prompt)?);
    Ok(())
}

/// A config for benchmarks: loopback on an ephemeral port, no limit on sessions,
/// children or depth that a benchmark would reach, an ephemeral state directory.
pub fn bench_config() -> Config {
    Config {
        bind: ([127, 0, 0, 1], 0).into(),
        limits: Limits {
            max_children_per_session: usize::MAX,
            max_sessions: usize::MAX,
            max_spawn_depth: MAX_TREE_DEPTH as u32,
            ..Limits::default()
        },
        state_dir: std::path::PathBuf::new(),
        ..Config::default()
    }
}

pub struct SpawnHarness {
    runtime: Runtime,
    /// Away on the parent's thread while a job runs.
    spawner: Option<Spawner>,
    /// Session actors of others (not this parent's tree) that a reset leaves alone.
    others: usize,
}

impl SpawnHarness {
    /// Start a gateway (inside a running actix System) with a parked parent session.
    pub async fn start() -> anyhow::Result<SpawnHarness> {
        let mut agents = Agents::default();
        add_agents(&mut agents)?;
        let (model, calls) = ParkedModel::new();
        let runtime = Runtime::start_with_model(&bench_config(), agents, Arc::new(model)).await?;
        SpawnHarness::on(runtime, calls).await
    }

    /// Run the harness on `runtime`, whose model notes `bench-*` agents' calls in `calls`.
    pub async fn on(runtime: Runtime, mut calls: mpsc::UnboundedReceiver<()>) -> anyhow::Result<SpawnHarness> {
        let others = runtime.stats.live_sessions();
        let parent = start_parent(&runtime, &mut calls).await?;
        let spawner = Spawner::new(&runtime, parent, calls)?;
        Ok(SpawnHarness { runtime, spawner: Some(spawner), others })
    }

    /// `n` single spawns, one after another, each timed from request to the child
    /// running and the ack received (nanoseconds).
    pub async fn singles(&mut self, n: usize) -> anyhow::Result<Vec<u64>> {
        self.on_parent_thread(move |mut s| {
            async move {
                let mut samples = Vec::with_capacity(n);
                for _ in 0..n {
                    match s.spawn_one().await {
                        Ok(took) => samples.push(took.as_nanos() as u64),
                        Err(e) => return (s, Err(e)),
                    }
                }
                (s, Ok(samples))
            }
            .boxed()
        })
        .await
    }

    /// `n` spawns sent at once; timed until every ack is back and every child runs.
    pub async fn burst(&mut self, n: usize) -> anyhow::Result<Duration> {
        self.on_parent_thread(move |mut s| {
            async move {
                let r = s.burst(n).await;
                (s, r)
            }
            .boxed()
        })
        .await
    }

    /// A tree of `total` sessions under the parent, `depth` levels deep (as even as
    /// [`tree_shape`] makes it), built a level at a time: every spawn of a level is sent
    /// with its parent node's capability, and the next level once all of them are
    /// acked; timed until every node runs.
    pub async fn tree(&mut self, total: usize, depth: usize) -> anyhow::Result<Duration> {
        self.on_parent_thread(move |mut s| {
            async move {
                let r = s.tree(total, depth).await;
                (s, r)
            }
            .boxed()
        })
        .await
    }

    async fn on_parent_thread<R: Send + 'static>(
        &mut self,
        job: impl FnOnce(Spawner) -> BoxFuture<'static, (Spawner, anyhow::Result<R>)> + Send + 'static,
    ) -> anyhow::Result<R> {
        let spawner = self.spawner.take().context("a previous job did not come back")?;
        let thread = spawner.thread.clone();
        let (done, result) = oneshot::channel();
        thread.spawn(async move {
            let _ = done.send(job(spawner).await);
        });
        let (spawner, result) = result.await.context("the session thread stopped")?;
        self.spawner = Some(spawner);
        result
    }

    /// Kill the parent and its children (untimed) and start a fresh parent, so memory
    /// does not grow across benchmark iterations.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        let mut spawner = self.spawner.take().context("a previous job did not come back")?;
        let parent = spawner.parent.principal().clone();
        self.runtime.gateway.send(Kill { caller: None, target: parent }).await??;
        self.wait_for_others().await?;
        let capability = start_parent(&self.runtime, &mut spawner.calls).await?;
        self.spawner = Some(Spawner::new(&self.runtime, capability, spawner.calls)?);
        Ok(())
    }

    /// Wait until only the sessions that were there before the parent are alive.
    async fn wait_for_others(&self) -> anyhow::Result<()> {
        let stats = &self.runtime.stats;
        if self.others == 0 {
            if stats.wait_all_stopped(Duration::from_secs(30)).await {
                return Ok(());
            }
            anyhow::bail!("sessions did not stop after the parent was killed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.live_sessions() > self.others {
            if Instant::now() > deadline {
                anyhow::bail!("sessions did not stop after the parent was killed");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Count the sessions alive now as others' (a reset waits for the rest to stop).
    pub fn keep_others(&mut self, others: usize) {
        self.others = others;
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.runtime.shutdown().await.map(drop)
    }
}

/// What a parent session holds to spawn: its shard, its capability, and where its
/// children's first model calls are noted. Moved to the parent's thread for each job.
pub struct Spawner {
    shard: Addr<Gateway>,
    thread: ArbiterHandle,
    parent: Capability,
    calls: mpsc::UnboundedReceiver<()>,
    registry: Arc<Registry>,
}

impl Spawner {
    fn new(runtime: &Runtime, parent: Capability, calls: mpsc::UnboundedReceiver<()>) -> anyhow::Result<Spawner> {
        let shard = runtime.registry.shard_of(parent.principal()).context("the parent is not registered")?;
        let shard = usize::from(shard);
        Ok(Spawner {
            shard: runtime.gateway.shards().get(shard).context("no such gateway shard")?.clone(),
            thread: runtime.session_threads().get(shard).context("no such session thread")?.clone(),
            parent,
            calls,
            registry: runtime.registry.clone(),
        })
    }

    fn request(&self, parent: &Capability, agent: &str) -> Spawn {
        Spawn {
            parent: parent.clone(),
            request: SpawnRequest {
                task: "bench".into(),
                agent_id: Some(agent.into()),
                cleanup: Some(Cleanup::Delete),
                ..SpawnRequest::default()
            },
            sent_at: Instant::now(),
            history: None,
            call_id: None,
            trace: None,
        }
    }

    async fn spawn_one(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let reply = self.shard.send(self.request(&self.parent, "bench-child")).await?;
        accepted(reply)?;
        self.calls.recv().await.ok_or_else(|| anyhow::anyhow!("child never ran"))?;
        Ok(started.elapsed())
    }

    async fn burst(&mut self, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        // `Addr::send` enqueues at once; awaiting the acks in order keeps one waker
        // parked at a time instead of a 10,000-future join set measuring itself.
        let pending: Vec<_> = (0..n).map(|_| self.shard.send(self.request(&self.parent, "bench-child"))).collect();
        for reply in pending {
            accepted(reply.await?)?;
        }
        self.wait_running(n).await?;
        Ok(started.elapsed())
    }

    async fn tree(&mut self, total: usize, depth: usize) -> anyhow::Result<Duration> {
        let shape = tree_shape(total, depth);
        let started = Instant::now();
        let mut parents = vec![self.parent.clone()];
        for (level, &count) in shape.iter().enumerate() {
            let pending: Vec<_> =
                (0..count).map(|i| self.shard.send(self.request(&parents[i % parents.len()], "bench-node"))).collect();
            let last = level + 1 == shape.len();
            let mut next = Vec::with_capacity(if last { 0 } else { count });
            for reply in pending {
                let key = accepted(reply.await?)?;
                if !last {
                    let entry = self.registry.get(&key).context("an accepted child is not registered")?;
                    next.push(entry.capability.clone());
                }
            }
            parents = next;
        }
        self.wait_running(total).await?;
        Ok(started.elapsed())
    }

    async fn wait_running(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.calls.recv().await.ok_or_else(|| anyhow::anyhow!("child never ran"))?;
        }
        Ok(())
    }
}

/// Sessions per level of a `total`-session tree `depth` levels deep: the smallest
/// branching factor b whose full tree holds `total`, full levels of b^i, and the last
/// level taking the rest.
pub fn tree_shape(total: usize, depth: usize) -> Vec<usize> {
    let depth = depth.clamp(1, MAX_TREE_DEPTH);
    let full = |b: usize| (1..=depth as u32).map(|i| b.saturating_pow(i)).fold(0usize, usize::saturating_add);
    let mut b = 1;
    while full(b) < total {
        b += 1;
    }
    let mut levels = Vec::with_capacity(depth);
    let mut left = total;
    for i in 1..=depth as u32 {
        let n = if i == depth as u32 { left } else { b.saturating_pow(i).min(left) };
        if n == 0 {
            break;
        }
        levels.push(n);
        left -= n;
    }
    levels
}

/// Start the parked parent main session and return its capability.
async fn start_parent(runtime: &Runtime, calls: &mut mpsc::UnboundedReceiver<()>) -> anyhow::Result<Capability> {
    let started = runtime.gateway.send(StartMain::new("bench-parent", "spawn")).await??;
    calls.recv().await.ok_or_else(|| anyhow::anyhow!("the parent never called its model"))?;
    let entry = runtime.registry.get(&started.session_key).ok_or_else(|| anyhow::anyhow!("parent not registered"))?;
    Ok(entry.capability.clone())
}

fn accepted(reply: SpawnReply) -> anyhow::Result<crate::keys::SessionKey> {
    match reply {
        SpawnReply::Accepted { child_session_key, .. } => Ok(child_session_key),
        other => anyhow::bail!("spawn refused: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::tree_shape;

    #[test]
    fn tree_shapes_hold_exactly_the_total() {
        assert_eq!(tree_shape(10_000, 1), vec![10_000]);
        assert_eq!(tree_shape(10_000, 5), vec![7, 49, 343, 2401, 7200]);
        assert_eq!(tree_shape(10, 5), vec![2, 4, 4]);
        assert_eq!(tree_shape(3, 2), vec![2, 1]);
        for depth in 1..=5 {
            assert_eq!(tree_shape(10_000, depth).iter().sum::<usize>(), 10_000);
        }
    }
}
