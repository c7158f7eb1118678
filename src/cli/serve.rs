//! `hivegate serve`: the gateway as a server until Ctrl-C, then the one shutdown path.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::load_agents;
use crate::config::Config;
use crate::runtime::Runtime;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address (default: gateway.bind from the config, 127.0.0.1:18789).
    #[arg(long)]
    bind: Option<SocketAddr>,
}

pub async fn run(config_path: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(config_path.as_deref())?;
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if config.gateway_token.is_none() && !config.bind.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without a gateway token: anyone who can reach it would be trusted. \
             Set one (export HIVEGATE_GATEWAY_TOKEN=$(openssl rand -hex 24), or name another variable with \
             [gateway] token_env), or bind to loopback (--bind 127.0.0.1:18789)",
            config.bind
        );
    }
    if config.gateway_token.is_none() {
        tracing::warn!(
            "no gateway token (set HIVEGATE_GATEWAY_TOKEN): any local process on loopback is trusted as the owner, \
             and remote devices can only ask to be paired"
        );
    }
    let agents = load_agents(&config)?;
    let runtime = Runtime::start(&config, agents).await?;
    tracing::info!(addr = %runtime.http_addr, "gateway listening");
    println!("hivegate listening on http://{} (WebSocket gateway at /, health at /health)", runtime.http_addr);
    stop_signal().await?;
    tracing::info!("shutting down");
    runtime.shutdown().await?;
    Ok(0)
}

/// Ctrl-C or SIGTERM (what service managers and `kill` send).
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = actix_rt::signal::unix::signal(actix_rt::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = actix_rt::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        actix_rt::signal::ctrl_c().await
    }
}
