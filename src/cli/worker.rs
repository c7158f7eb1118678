//! `hivegate worker`: a process, on any machine, that runs sessions placed on workers.
//! It claims them from the gateway's Postgres work queue, runs them with the same
//! runtime as the gateway, and records their transcripts and ends in the same database,
//! where the gateway picks them up ([`crate::worker`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::load_agents;
use super::serve::{say, say_err, stop_signal};
use crate::agent::Placement;
use crate::config::Config;
use crate::gateway::remote::Held;
use crate::runtime::{Role, Runtime};
use crate::store::{redact as redact_url, DatabaseUrl};
use crate::worker::{queue, token, ClaimSettings, DEFAULT_LEASE};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The gateway's Postgres database. Default: HIVEGATE_DATABASE_URL, else [store] url.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// This worker's name, shown as `worker:<id>` where its sessions are listed (give
    /// each worker its own). Default: the host name and process id.
    #[arg(long)]
    id: Option<String>,
    /// The agents whose sessions it runs, comma-separated. Default: every agent with
    /// placement = "worker".
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// How many sessions it runs at once.
    #[arg(long, default_value_t = 8)]
    slots: usize,
    /// How long a claim lasts without renewal (renewed every third of it): a worker that
    /// dies is replaced this long after its last renewal.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LEASE.as_secs_f64())]
    lease_seconds: f64,
    /// The gateway's public key (`hivegate serve` prints it): only spawns it signed are run.
    /// Default: HIVEGATE_GATEWAY_KEY, else the key the gateway published in the database
    /// (said on stderr).
    #[arg(long, value_name = "KEY")]
    gateway_key: Option<String>,
    /// Where its health and metrics endpoints listen. Default: a free loopback port. Off
    /// loopback it needs a gateway token (HIVEGATE_GATEWAY_TOKEN), as `serve` does.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// The directory its sessions' work tools act in. Default: [workspace] root, else none
    /// (no work tools).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
}

/// The most sessions one worker runs at once.
const MAX_SLOTS: usize = 4096;

pub async fn run(config_path: Option<PathBuf>, args: WorkerArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(config_path.as_deref())?;
    if let Some(url) = args.database_url {
        config.store_url = Some(DatabaseUrl::parse(&url)?);
    }
    let Some(url) = config.store_url.as_ref().map(|u| u.expose().to_string()) else {
        anyhow::bail!(
            "a worker needs the gateway's Postgres database: give --database-url postgres://..., \
             HIVEGATE_DATABASE_URL, or [store] url"
        );
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!("--database-url must be a postgres:// URL; got {}", redact_url(&url));
    }
    if !(1..=MAX_SLOTS).contains(&args.slots) {
        anyhow::bail!("--slots must be between 1 and {MAX_SLOTS}, got {}", args.slots);
    }
    if !(args.lease_seconds.is_finite() && (1.0..=3600.0).contains(&args.lease_seconds)) {
        anyhow::bail!("--lease-seconds must be between 1 and 3600, got {}", args.lease_seconds);
    }
    let worker = args.id.unwrap_or_else(default_id);
    if worker.is_empty() || worker.len() > 64 || !worker.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        anyhow::bail!("--id must be 1 to 64 letters, digits, '.', '_' or '-'; got {worker:?}");
    }
    config.bind = args.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    super::refuse_open_bind(&config, "leave --bind out (a free loopback port)")?;
    // Nothing of a worker's lives in a state directory: its state is the database's.
    config.state_dir = PathBuf::new();
    config.workspace = args.workspace.or(config.workspace.take());
    let agents = load_agents(&config)?;
    let chosen: Vec<String> = if args.agents.is_empty() {
        agents.iter().filter(|a| a.placement == Placement::Worker).map(|a| a.id.to_string()).collect()
    } else {
        args.agents
    };
    if chosen.is_empty() {
        anyhow::bail!("no agent has placement = \"worker\"; set it in an agent file, or name agents with --agents");
    }
    for id in &chosen {
        match agents.get(id) {
            None => anyhow::bail!("unknown agent '{id}' in --agents; defined agents: {}", agents.ids().join(", ")),
            Some(a) if a.placement != Placement::Worker => anyhow::bail!(
                "agent '{id}' has placement = \"local\": the gateway runs it itself and never queues it for workers"
            ),
            Some(_) => {}
        }
    }
    let shown = redact_url(&url);
    let gateway_key = match args.gateway_key.or_else(|| std::env::var("HIVEGATE_GATEWAY_KEY").ok()) {
        Some(key) => token::parse_public(&key).map_err(|e| anyhow::anyhow!("--gateway-key: {e}"))?,
        None => {
            let published = published(&url).await?;
            let Some(key) = published else {
                anyhow::bail!(
                    "the database at {shown} has no gateway key yet: start `hivegate serve --database-url ...` first, \
                     or pass --gateway-key"
                );
            };
            say_err(format_args!(
                "trusting the gateway key published in the database ({key}); pin it with --gateway-key"
            ));
            token::parse_public(&key).map_err(|e| anyhow::anyhow!("the published gateway key: {e}"))?
        }
    };
    let held = Arc::new(Held::default());
    let runtime = Runtime::start_as(&config, agents, Role::Worker(held.clone())).await?;
    let settings = ClaimSettings {
        url,
        shown: shown.clone(),
        worker: worker.clone(),
        agents: chosen.clone(),
        slots: args.slots,
        lease: Duration::from_secs_f64(args.lease_seconds),
        gateway_key,
    };
    let claimer = crate::worker::claimer(settings, runtime.gateway.clone(), held)?;
    say(format_args!(
        "hivegate worker {worker}: running [{}] with {} slots from {shown}; health at http://{}/health",
        chosen.join(", "),
        args.slots,
        runtime.http_addr
    ));
    stop_signal().await?;
    // No new claims; what runs stops at a step boundary and is claimed again (its
    // lease lapses, or this worker starts again under the same id).
    drop(claimer);
    say_err(format_args!("worker {worker} stopping: its sessions resume on the next worker to claim them"));
    runtime.shutdown().await?;
    Ok(0)
}

/// `host-pid`.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).take(48).collect();
    format!("{}-{}", if host.is_empty() { "worker" } else { &host }, std::process::id())
}

/// The key the gateway published, read off the session threads.
async fn published(url: &str) -> anyhow::Result<Option<String>> {
    let url = url.to_string();
    let shown = redact_url(&url);
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .map_err(|e| anyhow::anyhow!("cannot reach the database at {shown}: {e}"))?;
        queue::published_key(&mut client).map_err(|e| anyhow::anyhow!("reading the gateway key: {e}"))
    })
    .await?
}
