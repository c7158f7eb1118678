//! What placing a session on a worker costs: T0 (the parent's session gets its
//! `sessions_spawn` answer) → the child's first model request arriving at a loopback
//! provider, with the child in the gateway's process (`local`) and on a worker
//! (`worker`), in one run against one Postgres database (`benches/placement.rs`).
//!
//! Both run the same gateway (Postgres store, work queue) with the same parent; only
//! the child agent's placement differs. The worker is a second runtime in this process
//! with its own claimer and connections, as `hivegate worker` assembles it: between T0
//! and the request lie the spawn's group commit, the `NOTIFY`, the claim, the journal
//! read and the worker's session start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::connections::{figures, median, Stamped, CHILD_AGENT, PARENT_AGENT, PROVIDER};
use super::connections::{LoopbackProvider, Transport};
use crate::agent::{self, Agents, Placement};
use crate::config::{Config, Limits};
use crate::gateway::remote::Held;
use crate::gateway::Outcome;
use crate::model::{Api, HttpModelClient, Provider};
use crate::runtime::{Role, Runtime};
use crate::worker::{token, ClaimSettings};

/// One tree, on a main session of its own (a main session keeps its conversation, and
/// the provider spawns only for a parent that has not spawned yet).
async fn run(runtime: &Runtime, tree: usize) -> anyhow::Result<crate::gateway::RunSummary> {
    let key = crate::keys::SessionKey::from(format!("agent:conn-parent:tree{tree}").as_str());
    let start =
        crate::gateway::StartMain { session_key: Some(key), ..crate::gateway::StartMain::new("conn-parent", "go") };
    let run = runtime.gateway.send(start).await??;
    let ended = runtime.gateway.send(crate::gateway::WaitRun { run_id: run.run_id }).await??;
    Ok(tokio::time::timeout(Duration::from_secs(30), ended)
        .await
        .context("the measured tree did not end in time")??)
}

/// T0 → the child's first request, per tree, for each placement.
#[derive(Clone, Debug, Default)]
pub struct Placements {
    pub local: Vec<Duration>,
    pub worker: Vec<Duration>,
}

impl Placements {
    pub fn median_local(&self) -> Duration {
        median(self.local.clone())
    }

    pub fn median_worker(&self) -> Duration {
        median(self.worker.clone())
    }
}

/// `trees` one-child trees with each placement, against the (empty, migrated on first
/// use) database at `url`. Must run inside an actix System.
pub async fn measure(url: &str, trees: usize) -> anyhow::Result<Placements> {
    let provider = LoopbackProvider::start(Transport::Plain, 1)?;
    let local = placed(url, &provider, Placement::Local, trees).await?;
    let worker = placed(url, &provider, Placement::Worker, trees).await?;
    provider.stop().await;
    Ok(Placements { local, worker })
}

fn agents(placement: Placement) -> anyhow::Result<Agents> {
    let mut agents = Agents::default();
    let no_prompt = |_: &str| Ok(String::new());
    agents.insert(agent::parse("conn-parent", PARENT_AGENT, no_prompt)?);
    let child = match placement {
        Placement::Local => CHILD_AGENT.to_string(),
        Placement::Worker => format!("{CHILD_AGENT}placement = \"worker\"\n"),
    };
    agents.insert(agent::parse("conn-child", &child, no_prompt)?);
    Ok(agents)
}

async fn placed(
    url: &str,
    provider: &LoopbackProvider,
    placement: Placement,
    trees: usize,
) -> anyhow::Result<Vec<Duration>> {
    let config = Config {
        bind: ([127, 0, 0, 1], 0).into(),
        limits: Limits::default(),
        state_dir: std::path::PathBuf::new(),
        store_url: Some(crate::store::DatabaseUrl::parse(url)?),
        ..Config::default()
    };
    let mut providers = config.providers.clone();
    providers.insert(PROVIDER, Provider::new(Api::OpenAiCompletions, provider.base_url.clone(), Some("bench".into())));
    let spawned = Arc::new(Mutex::new(None));
    let client = HttpModelClient::new(providers.clone(), &config.limits)?;
    let model = Arc::new(Stamped { inner: client, spawned: spawned.clone() });
    let gateway = Runtime::start_with_model_as(&config, agents(placement)?, model, Role::Gateway).await?;
    let held = Arc::new(Held::default());
    let worker_model = Arc::new(HttpModelClient::new(providers, &config.limits)?);
    let worker =
        Runtime::start_with_model_as(&config, agents(placement)?, worker_model, Role::Worker(held.clone())).await?;
    let key = gateway.gateway_key.as_deref().context("the gateway has no work queue")?;
    let settings = ClaimSettings {
        url: url.to_string(),
        shown: crate::store::redact(url),
        worker: "bench".into(),
        agents: vec!["conn-child".into()],
        slots: 8,
        lease: crate::worker::DEFAULT_LEASE,
        gateway_key: token::parse_public(key)?,
    };
    let claimer = crate::worker::claimer(settings, worker.gateway.clone(), held)?;
    let mut firsts = Vec::with_capacity(trees);
    let mut failed = None;
    for tree in 0..trees {
        if let Ok(mut at) = spawned.lock() {
            *at = None;
        }
        provider.take_arrivals();
        match run(&gateway, tree).await {
            Ok(summary) if summary.outcome == Outcome::Ok => {}
            Ok(summary) => {
                failed = Some(anyhow::anyhow!("the measured tree ended {:?}: {}", summary.outcome, summary.text));
                break;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        let t0 = spawned.lock().ok().and_then(|t| *t).context("the parent's spawn answer was not seen")?;
        let tree = figures(t0, &provider.take_arrivals(), 0);
        firsts.extend(tree.first_requests.first().copied());
    }
    drop(claimer);
    worker.shutdown().await?;
    gateway.shutdown().await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(firsts),
    }
}
