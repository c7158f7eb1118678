//! Starting a gateway: the public HTTP server (WebSocket endpoint, health, metrics) with
//! one worker per thread, the builtin provider on its own private loopback listener, the
//! model client with every configured provider plus `builtin` (holding that listener's
//! secret), the Store on its own thread with the pairing book loaded from it, the
//! gateway's shards on their own arbiters, one per thread, where the sessions run
//! ([`crate::gateway::shards`]), and the hub on the current arbiter, apart from the
//! sessions; then recovery resumes what the last process left running.
//! Used by every command that runs sessions (`demo`, `run`, `serve`, `worker`), the tests
//! and the benches, so they all run the same wiring.
//!
//! Must be called from inside a running actix `System`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use crate::agent::Agents;
use crate::config::{Config, BUILTIN_PROVIDER};
use crate::gateway::remote::Remote;
use crate::gateway::{Gateway, GatewayHandle, Recover, Recovered, Registry, Stats};
use crate::http::{routes, worker_routes, HttpState, HttpStateSlot};
use crate::hub::door::Door;
use crate::hub::{Hub, HubConfig, StopConnections, PAIRING_SNAPSHOT};
use crate::model::builtin::Bounds;
use crate::model::server::BuiltinServer;
use crate::model::{Api, HttpModelClient, ModelClient, Provider};
use crate::pairing::{NodeCommandPolicy, PairingBook, PairingState, SilentApproval};
use crate::protocol::Policy;
use crate::store::{self, Backend, Store};
use crate::telemetry::Metrics;
use crate::tools::workspace::Workspace;
use crate::worker::token::GatewayKey;
use crate::ws::gate::PreAuthGate;
use crate::ws::WsState;

pub struct Runtime {
    pub gateway: GatewayHandle,
    pub hub: Addr<Hub>,
    /// The session threads, one gateway shard on each.
    arbiters: Vec<Arbiter>,
    store: Store,
    /// What recovery did at start-up.
    pub recovered: Recovered,
    /// How long a shutdown waits for sessions to reach a step boundary.
    grace: std::time::Duration,
    pub registry: Arc<Registry>,
    pub stats: Arc<Stats>,
    /// Session starts, notices and ends as they happen.
    pub events: crate::gateway::Events,
    /// Where the HTTP server listens.
    pub http_addr: SocketAddr,
    /// Main sessions' workspace, when there is one.
    pub workspace: Option<Workspace>,
    /// Model calls in flight through the HTTP model client.
    pub model_calls_in_flight: Arc<AtomicUsize>,
    server: actix_web::dev::ServerHandle,
    /// The builtin provider's private listener, when this runtime serves it.
    builtin: Option<BuiltinServer>,
    /// The ephemeral state directory, when the config asked for one; removed on drop.
    _temp_state: Option<tempfile::TempDir>,
    /// What the store held at start-up, until recovery takes it.
    durable: Option<store::Durable>,
    /// The store is shared with other processes (Postgres): a stop leaves runs to resume.
    shared_store: bool,
    /// The gateway's listener for sessions on workers, when it has a work queue.
    listener: Option<crate::worker::Background>,
    /// The public key workers verify this gateway's spawns with, when it has a work queue.
    pub gateway_key: Option<String>,
}

/// What a process is: the gateway, or a worker that runs the sessions it claims.
#[derive(Clone, Default)]
pub enum Role {
    #[default]
    Gateway,
    /// Recovers nothing (the gateway does); runs what its claimer hands it.
    Worker(Arc<crate::gateway::remote::Held>),
}

impl Runtime {
    /// Start with the real HTTP model client.
    pub async fn start(config: &Config, agents: Agents) -> anyhow::Result<Runtime> {
        Runtime::start_as(config, agents, Role::Gateway).await
    }

    /// Start as `role`, with the real HTTP model client.
    pub async fn start_as(config: &Config, agents: Agents, role: Role) -> anyhow::Result<Runtime> {
        let (server, http_addr, state) = start_http(config.bind, config.threads, &role)?;
        let builtin = BuiltinServer::start(Bounds::of(&config.limits))?;
        let mut providers = config.providers.clone();
        providers.insert(
            BUILTIN_PROVIDER,
            // The builtin answers at once, whole: it does not stream.
            Provider {
                stream: false,
                ..Provider::new(Api::OpenAiCompletions, builtin.base_url(), Some(builtin.secret.expose().to_string()))
            },
        );
        let metrics = Arc::new(Metrics::new(agents.iter().map(|a| a.id.clone())));
        let client = HttpModelClient::new(providers, &config.limits)?.with_metrics(metrics.clone());
        let in_flight = client.in_flight();
        let wiring = Wiring { model: Arc::new(client), in_flight, metrics, server, http_addr, state, role };
        let mut runtime = Runtime::assemble(config, agents, wiring)?;
        runtime.builtin = Some(builtin);
        runtime.recover(config).await?;
        Ok(runtime)
    }

    /// Start with another model client (benches measure the runtime alone this way).
    pub async fn start_with_model(
        config: &Config,
        agents: Agents,
        model: Arc<dyn ModelClient>,
    ) -> anyhow::Result<Runtime> {
        Runtime::start_with_model_as(config, agents, model, Role::Gateway).await
    }

    /// Start as `role` with another model client.
    pub async fn start_with_model_as(
        config: &Config,
        agents: Agents,
        model: Arc<dyn ModelClient>,
        role: Role,
    ) -> anyhow::Result<Runtime> {
        let (server, http_addr, state) = start_http(config.bind, config.threads, &role)?;
        let metrics = Arc::new(Metrics::new(agents.iter().map(|a| a.id.clone())));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let wiring = Wiring { model, in_flight, metrics, server, http_addr, state, role };
        let mut runtime = Runtime::assemble(config, agents, wiring)?;
        runtime.recover(config).await?;
        Ok(runtime)
    }

    /// Resume or finalize the runs the last process left, and bring its recent
    /// sessions back for history.
    async fn recover(&mut self, config: &Config) -> anyhow::Result<()> {
        let Some(durable) = self.durable.take() else { return Ok(()) };
        let policy = config.recovery;
        self.recovered = self.gateway.send(Recover { durable, policy }).await.context("the gateway did not start")?;
        let r = &self.recovered;
        if r.resumed + r.finalized + r.redelivered + r.undeliverable > 0 {
            tracing::info!(
                resumed = r.resumed,
                finalized = r.finalized,
                redelivered = r.redelivered,
                undeliverable = r.undeliverable,
                "recovered the runs the last gateway left"
            );
        }
        Ok(())
    }

    fn assemble(config: &Config, agents: Agents, wiring: Wiring) -> anyhow::Result<Runtime> {
        let Wiring { model, in_flight, metrics, server, http_addr, state, role } = wiring;
        let temp_state = if config.state_dir.as_os_str().is_empty() { Some(tempfile::tempdir()?) } else { None };
        let state_dir = temp_state.as_ref().map_or(config.state_dir.as_path(), |t| t.path());
        let store_url = config.store_url.as_ref().map(store::DatabaseUrl::expose);
        let mut db = store::open(state_dir, store_url)?;
        let book = load_pairing(&db)?;
        let durable = match role {
            Role::Gateway => {
                db.prune(config.limits.max_retained_sessions)?;
                let durable = db.load(config.limits.max_retained_sessions)?;
                // Counted on disk before anything resumes: a start that crashes counts.
                db.count_start()?;
                Some(durable)
            }
            // A worker recovers nothing: the gateway does.
            Role::Worker(_) => None,
        };
        let store = Store::start(db, store::location(state_dir, store_url))?;
        // The hub's address exists before the hub, so the gateway can be built first.
        let hub_ctx = actix::Context::<Hub>::new();
        let hub_addr = hub_ctx.address();
        let workspace = config
            .workspace
            .as_deref()
            .map(|dir| {
                Workspace::open(dir).map_err(|e| anyhow::anyhow!("the workspace {} cannot be used: {e}", dir.display()))
            })
            .transpose()?;
        let gateway = Gateway::new(Arc::new(agents), config.limits.clone(), model)
            .with_metrics(metrics)
            .with_workspace(workspace.clone())
            .with_mcp(Arc::new(crate::tools::mcp::McpServers::new(config.mcp_servers.clone())))
            .with_nodes(hub_addr.clone().recipient())
            .with_pricing(Arc::new(config.pricing.clone()))
            .with_store(store.clone());
        let store_url = config.store_url.as_ref().map(|u| u.expose().to_string());
        let (gateway, public_key) = match (&role, &store_url) {
            (Role::Worker(held), _) => (gateway.with_remote(Arc::new(Remote::worker(held.clone()))), None),
            (Role::Gateway, Some(_)) => {
                let key = GatewayKey::load_or_create(state_dir)?;
                let public = key.public();
                (gateway.with_remote(Arc::new(Remote::gateway(key))), Some(public))
            }
            (Role::Gateway, None) => (gateway, None),
        };
        let registry = gateway.registry();
        let stats = gateway.stats();
        let events = gateway.events();
        let arbiters: Vec<Arbiter> = (0..config.threads.max(1)).map(|_| Arbiter::new()).collect();
        let handles: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
        let gateway = gateway.start_shards(&handles);
        let listener = match (store_url, &public_key) {
            (Some(url), Some(public)) => {
                let shown = crate::store::redact(&url);
                Some(crate::worker::listener(url, shown, gateway.clone(), public.clone())?)
            }
            _ => None,
        };
        let silent = if config.auto_approve_local { SilentApproval::LocalOnly } else { SilentApproval::Off };
        let policy = Policy {
            max_payload: config.sockets.max_payload_bytes as u64,
            max_buffered_bytes: config.sockets.max_buffered_bytes as u64,
            ..Policy::default()
        };
        let door = Arc::new(Door::new(config.gateway_token.clone(), silent, policy, book, stats.clone()));
        let hub_config = HubConfig { default_agent: config.default_agent.clone(), events: events.clone() };
        let hub = hub_ctx.run(Hub::new(hub_config, door.clone(), store.clone(), gateway.clone(), stats.clone()));
        state.fill(HttpState {
            registry: registry.clone(),
            stats: stats.clone(),
            started: Instant::now(),
            token: config.gateway_token.clone(),
            ws: WsState {
                sockets: stats.metrics().sockets().clone(),
                hub: hub.clone(),
                door,
                allowed_origins: config.allowed_origins.clone(),
                gate: PreAuthGate::new(
                    config.sockets.max_preauth_connections,
                    config.sockets.max_preauth_connections_per_address,
                ),
                max_payload: config.sockets.max_payload_bytes,
                max_buffered: config.sockets.max_buffered_bytes,
            },
        });
        Ok(Runtime {
            gateway,
            hub,
            arbiters,
            store,
            recovered: Recovered::default(),
            durable,
            shared_store: config.store_url.is_some(),
            listener,
            gateway_key: public_key,
            workspace,
            grace: config.shutdown_grace,
            registry,
            stats,
            events,
            http_addr,
            model_calls_in_flight: in_flight,
            server,
            builtin: None,
            _temp_state: temp_state,
        })
    }

    /// Resolves once every record journaled before it is committed (benchmarks wait
    /// for it so a figure does not include the store's backlog).
    pub fn store_caught_up(&self) -> impl std::future::Future<Output = ()> + 'static {
        self.store.flush()
    }

    /// The session threads, in shard order (benchmarks run a parent's work on its own).
    pub fn session_threads(&self) -> Vec<ArbiterHandle> {
        self.arbiters.iter().map(Arbiter::handle).collect()
    }

    /// Where the builtin provider listens and the secret that opens it (only this
    /// process holds it; exposed for tests and diagnostics).
    pub fn builtin_provider(&self) -> Option<(SocketAddr, &crate::config::Secret)> {
        self.builtin.as_ref().map(|b| (b.addr, &b.secret))
    }

    /// The one shutdown path: refuse new runs, tell connections (shutdown event, close
    /// 1012), and stop the sessions, waiting for them at most the grace period; then
    /// flush the store and stop the HTTP server.
    ///
    /// With a state directory, sessions stop at their next step boundary and their runs
    /// stay `running` in the store, to resume at the next start; a session still inside
    /// a model call or a tool when the grace period ends resumes from its last step
    /// (the call is made again). With an ephemeral one (`demo`, `run`, tests), runs end
    /// `interrupted`. Answers how many runs will resume.
    pub async fn shutdown(self) -> anyhow::Result<usize> {
        // With a shared store, what runs here is resumed by the next start (or, on a
        // worker, by whichever worker claims it), never ended `interrupted`.
        let resume_later = self._temp_state.is_none() || self.shared_store;
        drop(self.listener);
        let running = self.gateway.shutdown(resume_later).await;
        let _ = self.hub.send(StopConnections).await;
        let all_stopped = self.stats.wait_all_stopped(self.grace).await;
        if resume_later {
            // Not a crash: the runs left running have not failed to resume.
            self.store.journal().record(store::Record::StoppedCleanly);
        }
        // Every record queued before this point is committed when this returns (a
        // store stuck on a full disk does not hold the process forever).
        if tokio::time::timeout(self.grace + std::time::Duration::from_secs(10), self.store.flush()).await.is_err() {
            tracing::error!("the store did not commit what was queued in time; the last records may be lost");
        }
        // The spans of the runs this stop ended go out before the process does.
        crate::telemetry::flush().await;
        self.server.stop(true).await;
        if let Some(builtin) = self.builtin {
            builtin.handle.stop(true).await;
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        if !all_stopped && !resume_later {
            anyhow::bail!("{} session actors still alive after the shutdown grace period", self.stats.live_sessions());
        }
        if !all_stopped {
            tracing::warn!(
                sessions = self.stats.live_sessions(),
                "sessions still inside a model call or a tool after gateway.shutdown_grace_seconds; they resume from their last step"
            );
        }
        Ok(if resume_later { running } else { 0 })
    }
}

/// The pairing book from the store, or an empty one on first start.
fn load_pairing(db: &impl Backend) -> anyhow::Result<PairingBook> {
    let policy = NodeCommandPolicy::default();
    let Some((_, json)) = db.load_snapshot(PAIRING_SNAPSHOT)? else { return Ok(PairingBook::new(policy)) };
    let state: PairingState = serde_json::from_str(&json).context("the stored pairing state is unreadable")?;
    PairingBook::import(state, policy).context("the stored pairing state is inconsistent")
}

/// What `start` and `start_with_model` hand to `assemble`.
struct Wiring {
    model: Arc<dyn ModelClient>,
    in_flight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    server: actix_web::dev::ServerHandle,
    http_addr: SocketAddr,
    state: HttpStateSlot,
    role: Role,
}

fn start_http(
    bind: SocketAddr,
    workers: usize,
    role: &Role,
) -> anyhow::Result<(actix_web::dev::ServerHandle, SocketAddr, HttpStateSlot)> {
    let slot = HttpStateSlot::default();
    let app_slot = slot.clone();
    let routes = match role {
        Role::Gateway => routes,
        Role::Worker(_) => worker_routes,
    };
    let server = HttpServer::new(move || App::new().app_data(web::Data::new(app_slot.clone())).configure(routes))
        .workers(workers.max(1))
        .disable_signals()
        .shutdown_timeout(2)
        // Once a WebSocket has closed, do not hold the connection open waiting for the
        // client to hang up first (tungstenite clients wait for the server).
        .client_disconnect_timeout(std::time::Duration::ZERO)
        .bind(bind)
        .with_context(|| format!("cannot listen on {bind}"))?;
    let addr = server.addrs().first().copied().context("the HTTP server bound no address")?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((handle, addr, slot))
}
