//! `hivegate serve`: the gateway as a server until Ctrl-C or SIGTERM, then the one
//! shutdown path. Runs survive both a stop and a crash: the next `serve` on the same
//! state directory (or the same Postgres database, with `--database-url`) resumes them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use super::load_agents;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::store::DatabaseUrl;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen, as OpenClaw's `gateway run --bind` takes it: `loopback`
    /// (127.0.0.1), `lan` (0.0.0.0, needs a gateway token), an IP address, or IP:PORT.
    /// Default: gateway.bind from the config, 127.0.0.1:18789.
    #[arg(long)]
    bind: Option<Bind>,
    /// The port to listen on (overrides the port of --bind and of the config).
    #[arg(long)]
    port: Option<u16>,
    /// The shared gateway token. Prefer HIVEGATE_GATEWAY_TOKEN: a command line is visible
    /// to every local user in the process list.
    #[arg(long)]
    token: Option<String>,
    /// The directory the agents' work tools (read, write, edit, ls, glob, grep, exec) act
    /// in; nothing outside it is reachable. Default: [workspace] root, else the workspace directory in the state directory.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Keep the durable state (pairing, sessions, transcripts, results owed) in this
    /// Postgres database instead of SQLite in the state directory:
    /// postgres://USER:PASSWORD@HOST:PORT/DB (sslmode=disable or prefer; no TLS yet).
    /// Default: HIVEGATE_DATABASE_URL, else [store] url, else SQLite. Prefer the
    /// variable for a URL with a password: a command line is visible to every local
    /// user in the process list.
    #[arg(long, value_name = "URL")]
    database_url: Option<DatabaseUrl>,
}

/// A `--bind` value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bind {
    Ip(IpAddr),
    Addr(SocketAddr),
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Bind, String> {
        match s {
            "loopback" => Ok(Bind::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))),
            "lan" => Ok(Bind::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            _ => s.parse().map(Bind::Addr).or_else(|_| s.parse().map(Bind::Ip)).map_err(|_| {
                format!("'{s}' is not loopback, lan, an IP address or IP:PORT (for example 127.0.0.1:18789)")
            }),
        }
    }
}

pub async fn run(config_path: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(config_path.as_deref())?;
    match args.bind {
        Some(Bind::Addr(addr)) => config.bind = addr,
        Some(Bind::Ip(ip)) => config.bind.set_ip(ip),
        None => {}
    }
    if let Some(port) = args.port {
        config.bind.set_port(port);
    }
    if let Some(url) = args.database_url {
        config.store_url = Some(url);
    }
    if let Some(token) = args.token {
        if token.is_empty() {
            anyhow::bail!("--token is empty; give the shared gateway token, or leave the flag out");
        }
        config.gateway_token = Some(crate::config::Secret::new(token));
    }
    super::refuse_open_bind(&config, "bind to loopback (--bind 127.0.0.1:18789)")?;
    if config.gateway_token.is_none() {
        tracing::warn!(
            "no gateway token (set HIVEGATE_GATEWAY_TOKEN): any local process on loopback is trusted as the owner, \
             and remote devices can only ask to be paired"
        );
    }
    let default_workspace = config.state_dir.join("workspace");
    super::choose_workspace(args.workspace, &mut config, default_workspace, true)?;
    let agents = load_agents(&config)?;
    let store = crate::store::location(&config.state_dir, config.store_url.as_ref().map(DatabaseUrl::expose));
    let kind = if config.store_url.is_some() { "Postgres" } else { "SQLite" };
    tracing::info!(store = %store, "opening the {kind} store");
    let runtime = Runtime::start(&config, agents).await?;
    tracing::info!(addr = %runtime.http_addr, store = %store, "gateway listening");
    say(format_args!(
        "hivegate listening on http://{} (WebSocket gateway at /, health at /health, dashboard at /ui: `hivegate dashboard` prints its link)",
        runtime.http_addr
    ));
    // After the first line: scripts read where it listens from that one.
    say(format_args!("store: {kind} at {store}"));
    if let Some(key) = &runtime.gateway_key {
        say(format_args!("workers: hivegate worker --database-url ... --gateway-key {key}"));
    }
    if let Some(workspace) = &runtime.workspace {
        say(format_args!("workspace: {} (work tools act only inside it)", workspace.root().display()));
    }
    let r = &runtime.recovered;
    if r.resumed + r.finalized + r.redelivered + r.undeliverable > 0 {
        say(format_args!(
            "recovered from the last run on this store ({}): {} runs resumed, {} finalized, {} results delivered again, {} undeliverable",
            store,
            r.resumed,
            r.finalized,
            r.redelivered,
            r.undeliverable
        ));
    }
    stop_signal().await?;
    tracing::info!("shutting down");
    say_err(format_args!(
        "shutting down: new runs are refused; running sessions get up to {} s to reach a step boundary",
        config.shutdown_grace.as_secs_f64()
    ));
    let resume = runtime.shutdown().await?;
    if resume > 0 {
        say_err(format_args!("stopped; {resume} runs resume when `hivegate serve` starts again on {store}"));
    }
    Ok(0)
}

/// A status line on stdout. A server keeps serving when whoever started it stopped
/// reading (a closed pipe): `println!` would panic and take the gateway down.
pub(super) fn say(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// The same on stderr.
pub(super) fn say_err(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Ctrl-C or SIGTERM (what service managers and `kill` send).
pub(super) async fn stop_signal() -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_takes_openclaw_words_addresses_and_ip_port() {
        assert_eq!("loopback".parse(), Ok(Bind::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))));
        assert_eq!("lan".parse(), Ok(Bind::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))));
        assert_eq!("10.0.0.2".parse(), Ok(Bind::Ip("10.0.0.2".parse().unwrap())));
        assert_eq!("127.0.0.1:9".parse(), Ok(Bind::Addr("127.0.0.1:9".parse().unwrap())));
        assert!("everywhere".parse::<Bind>().unwrap_err().contains("is not loopback, lan"));
    }
}
