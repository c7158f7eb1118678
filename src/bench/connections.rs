//! How soon a spawned child's first model request reaches its provider, and on which
//! connection (`benches/first_request.rs`).
//!
//! A tree runs through the real runtime and the real [`HttpModelClient`] against a
//! [`LoopbackProvider`] (TLS with h2 by ALPN, or plain HTTP/1.1): the parent's first
//! call is answered with `children` spawns. T0 is the moment the parent's session gets
//! that answer (the model client's future resolving with the `sessions_spawn` calls);
//! each child's figure is T0 → its first request arriving at the provider. Every tree
//! gets a fresh runtime and so a fresh connection pool: the parent's first call opens
//! the tree's first connection, and the figures show whether the children's first
//! requests ride it or open their own (the provider numbers its connections).

pub mod provider;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

pub use provider::{Arrival, LoopbackProvider, Transport};

use crate::agent::{self, Agents};
use crate::config::{Config, Limits};
use crate::gateway::{Outcome, RunSummary, StartMain, WaitRun};
use crate::model::{Api, ChatRequest, ChatResponse, HttpModelClient, ModelClient, ModelError, ModelRef, Provider};
use crate::runtime::Runtime;

/// The provider's name in the config.
pub const PROVIDER: &str = "loopback";
/// The parent agent: spawns children, yields until they answer.
pub const PARENT_AGENT: &str = "id = \"conn-parent\"\nmodel = \"loopback/parent\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"conn-child\"]\n";
/// The child agent: answers in text.
pub const CHILD_AGENT: &str = "id = \"conn-child\"\nmodel = \"loopback/child\"\n";
/// How long one tree may take.
const TREE_WAIT: Duration = Duration::from_secs(30);

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub transport: Transport,
    /// Ask for streamed answers (as real providers are asked).
    pub stream: bool,
    pub children: usize,
    pub trees: usize,
}

/// One tree's figures.
#[derive(Clone, Debug)]
pub struct Tree {
    /// T0 → each child's first request arriving, in order of arrival.
    pub first_requests: Vec<Duration>,
    /// Connections the provider accepted during the tree.
    pub connections: u64,
    /// Distinct connections the children's first requests came on that no request
    /// before T0 had used: what the children had to open.
    pub opened_for_children: usize,
    /// The HTTP version the children's first requests used.
    pub version: String,
}

/// Every tree of one [`Setup`].
#[derive(Clone, Debug)]
pub struct Figures {
    pub setup: Setup,
    pub trees: Vec<Tree>,
}

impl Figures {
    /// The median over every child of every tree of T0 → its first request.
    pub fn median_first_request(&self) -> Duration {
        median(self.trees.iter().flat_map(|t| t.first_requests.iter().copied()).collect())
    }

    /// The median over trees of T0 → the last child's first request.
    pub fn median_last_first_request(&self) -> Duration {
        median(self.trees.iter().filter_map(|t| t.first_requests.iter().max().copied()).collect())
    }

    /// The median over trees of connections opened for the children's first requests.
    pub fn median_opened_for_children(&self) -> usize {
        median(self.trees.iter().map(|t| t.opened_for_children).collect())
    }

    /// The median over trees of connections accepted in all.
    pub fn median_connections(&self) -> u64 {
        median(self.trees.iter().map(|t| t.connections).collect())
    }
}

pub(crate) fn median<T: Ord + Copy + Default>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Run `setup.trees` trees against a fresh loopback provider. Must run inside an actix
/// System.
pub async fn measure(setup: Setup) -> anyhow::Result<Figures> {
    let provider = LoopbackProvider::start(setup.transport, setup.children)?;
    let mut trees = Vec::with_capacity(setup.trees);
    for _ in 0..setup.trees {
        trees.push(tree(&provider, setup).await?);
    }
    provider.stop().await;
    Ok(Figures { setup, trees })
}

/// The agents of a measured tree.
pub fn agents() -> anyhow::Result<Agents> {
    let mut agents = Agents::default();
    let no_prompt = |_: &str| Ok(String::new());
    agents.insert(agent::parse("conn-parent", PARENT_AGENT, no_prompt)?);
    agents.insert(agent::parse("conn-child", CHILD_AGENT, no_prompt)?);
    Ok(agents)
}

/// One tree on a fresh runtime (and so a fresh connection pool).
async fn tree(provider: &LoopbackProvider, setup: Setup) -> anyhow::Result<Tree> {
    let config = Config {
        bind: ([127, 0, 0, 1], 0).into(),
        limits: Limits::default(),
        state_dir: std::path::PathBuf::new(),
        ..Config::default()
    };
    let mut providers = config.providers.clone();
    let base = Provider::new(Api::OpenAiCompletions, provider.base_url.clone(), Some("bench".into()));
    providers.insert(PROVIDER, Provider { stream: setup.stream, ca: provider.trusted_ca()?, ..base });
    let spawned = Arc::new(Mutex::new(None));
    let client = HttpModelClient::new(providers, &config.limits)?;
    let model = Arc::new(Stamped { inner: client, spawned: spawned.clone() });
    let runtime = Runtime::start_with_model(&config, agents()?, model).await?;
    provider.take_arrivals();
    let before = provider.connections();
    let summary = run(&runtime).await;
    runtime.shutdown().await?;
    let summary = summary?;
    let expected = format!("heard from {} children", setup.children);
    if summary.outcome != Outcome::Ok || summary.text != expected {
        anyhow::bail!("the measured tree ended {:?}: {}", summary.outcome, summary.text);
    }
    let t0 = spawned.lock().ok().and_then(|t| *t).context("the parent's spawn answer was not seen")?;
    Ok(figures(t0, &provider.take_arrivals(), provider.connections() - before))
}

async fn run(runtime: &Runtime) -> anyhow::Result<RunSummary> {
    let run = runtime.gateway.send(StartMain::new("conn-parent", "go")).await??;
    let ended = runtime.gateway.send(WaitRun { run_id: run.run_id }).await??;
    Ok(tokio::time::timeout(TREE_WAIT, ended).await.context("the measured tree did not end in time")??)
}

/// The figures of one tree from what the provider saw.
pub fn figures(t0: Instant, arrivals: &[Arrival], connections: u64) -> Tree {
    let before_t0: Vec<u64> = arrivals.iter().filter(|a| a.at < t0).map(|a| a.connection).collect();
    // Every child request is a first request: a child answers in one call.
    let children: Vec<&Arrival> = arrivals.iter().filter(|a| a.model == provider::CHILD_MODEL).collect();
    let mut opened: Vec<u64> = children.iter().map(|a| a.connection).filter(|c| !before_t0.contains(c)).collect();
    opened.sort_unstable();
    opened.dedup();
    Tree {
        first_requests: children.iter().map(|a| a.at.saturating_duration_since(t0)).collect(),
        connections,
        opened_for_children: opened.len(),
        version: children.first().map(|a| a.version.clone()).unwrap_or_default(),
    }
}

/// The real model client, noting when an answer with `sessions_spawn` calls arrives.
pub(crate) struct Stamped {
    pub(crate) inner: HttpModelClient,
    pub(crate) spawned: Arc<Mutex<Option<Instant>>>,
}

impl ModelClient for Stamped {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        let spawned = self.spawned.clone();
        let call = self.inner.complete(request);
        async move {
            let response = call.await;
            if let Ok(answer) = &response {
                if answer.tool_calls.iter().any(|c| c.name == "sessions_spawn") {
                    if let Ok(mut at) = spawned.lock() {
                        at.get_or_insert_with(Instant::now);
                    }
                }
            }
            response
        }
        .boxed()
    }

    fn check_model(&self, model: &ModelRef) -> Result<(), ModelError> {
        self.inner.check_model(model)
    }
}
