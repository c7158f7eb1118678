//! The command line: one file per command. `main.rs` parses [`Cli`] and calls [`run`].

/// A line of a command's output on stdout (`println!` arguments). A reader that has
/// gone (`hivegate demo | head -1`) ends the command with status 1 and nothing more
/// said, where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The same without the newline (`print!` arguments).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out(format_args!($($arg)*))
    };
}

mod agent;
mod bench;
mod dashboard;
mod demo;
mod devices;
mod doctor;
mod live;
mod nodes;
mod run;
mod serve;
mod sessions;
mod term;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::agent::Agents;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "hivegate",
    version,
    about = "An actor-based agent runtime: a brain session plans and spawns executor subagents in-process, \
             with capabilities handed over by message (no pairing, no sockets, microsecond spawns).",
    after_help = "Start with `hivegate demo`: a brain/executor tree on the builtin offline provider, no API key needed."
)]
pub struct Cli {
    /// Config file (TOML). Default: $HIVEGATE_CONFIG, else ./hivegate.toml if present, else built-in defaults.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a brain/executor tree offline on the builtin provider and print the tree and spawn latency.
    Demo(demo::DemoArgs),
    /// Run the gateway as a server: the OpenClaw-compatible WebSocket for nodes and operators, /health, and the dashboard at /ui.
    Serve(serve::ServeArgs),
    /// Run one task on a main session against the configured providers; print the tree and the answer.
    Run(run::RunArgs),
    /// Measure spawns, bursts, trees, memory, handshakes and spawns under load, each beside raw
    /// actix doing the same (the floor), against the scale targets. Runs its own loopback
    /// gateways on a parked model: the config file is not read.
    Bench(bench::BenchArgs),
    /// Run a task on a running gateway (as `openclaw agent` does) and print its answer.
    Agent(agent::AgentArgs),
    /// Sessions of a running gateway: list, history, abort, reset.
    Sessions(sessions::SessionsArgs),
    /// Runs of a running gateway: list them, show one's tree, wait for one to end.
    Runs(sessions::RunsArgs),
    /// Manage device pairing on a running gateway: list, approve, reject, remove; rotate or revoke tokens.
    Devices(devices::DevicesArgs),
    /// Manage nodes on a running gateway: list, approve their commands, describe, invoke a command.
    Nodes(nodes::NodesArgs),
    /// Print the link that opens a running gateway's web dashboard (/ui), signed in with its token.
    Dashboard(dashboard::DashboardArgs),
    /// Check the setup and say what to fix: config, agents, providers' keys and reachability,
    /// the state directory, the port, the MCP servers.
    Doctor(doctor::DoctorArgs),
    /// Run sessions placed on workers (placement = "worker"): claim them from the gateway's
    /// Postgres work queue and run them here, on any machine that reaches the database.
    Worker(worker::WorkerArgs),
}

/// Run a parsed command inside a fresh actix System. Returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let system = actix_rt::System::new();
    match cli.command {
        Command::Demo(args) => system.block_on(demo::run(cli.config, args)),
        Command::Serve(args) => system.block_on(serve::run(cli.config, args)),
        Command::Run(args) => system.block_on(run::run(cli.config, args)),
        Command::Bench(args) => system.block_on(bench::run(args)),
        Command::Devices(args) => system.block_on(devices::run(cli.config, args)),
        Command::Agent(args) => system.block_on(agent::run(cli.config, args)),
        Command::Sessions(args) => system.block_on(sessions::run_sessions(cli.config, args)),
        Command::Runs(args) => system.block_on(sessions::run_runs(cli.config, args)),
        Command::Nodes(args) => system.block_on(nodes::run(cli.config, args)),
        Command::Dashboard(args) => system.block_on(dashboard::run(cli.config, args)),
        Command::Doctor(args) => system.block_on(doctor::run(cli.config, args)),
        Command::Worker(args) => system.block_on(worker::run(cli.config, args)),
    }
}

/// Where main sessions' work tools act: `--workspace`, else `[workspace] root`, else
/// `default` (created when missing, for `serve`'s directory in the state directory).
fn choose_workspace(flag: Option<PathBuf>, config: &mut Config, default: PathBuf, create: bool) -> anyhow::Result<()> {
    let root = match flag.or_else(|| config.workspace.take()) {
        Some(dir) => dir,
        None => {
            if create {
                std::fs::create_dir_all(&default)
                    .map_err(|e| anyhow::anyhow!("cannot create the workspace {}: {e}", default.display()))?;
            }
            default
        }
    };
    config.workspace = Some(root);
    Ok(())
}

/// The agents from the configured directory, else the ones compiled in.
/// A gateway or worker listening off loopback with no gateway token would trust whoever
/// reaches it (its `/metrics` included, which only a token guards): refused, saying what
/// to do instead (`loopback`: how this command stays on loopback).
fn refuse_open_bind(config: &Config, loopback: &str) -> anyhow::Result<()> {
    if config.gateway_token.is_none() && !config.bind.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without a gateway token: anyone who can reach it would be trusted. \
             Set one (export HIVEGATE_GATEWAY_TOKEN=$(openssl rand -hex 24), or name another variable with \
             [gateway] token_env), or {loopback}",
            config.bind
        );
    }
    Ok(())
}

fn load_agents(config: &Config) -> anyhow::Result<Agents> {
    let agents = match &config.agents_dir {
        Some(dir) => Agents::load_dir(dir)?,
        None => Agents::shipped()?,
    };
    // An agent's `mcp:NAME` must name a configured server: said now, not at its first call.
    for agent in agents.iter() {
        for server in agent.mcp.named() {
            if !config.mcp_servers.iter().any(|s| s.name == server) {
                let configured: Vec<&str> = config.mcp_servers.iter().map(|s| s.name.as_str()).collect();
                anyhow::bail!(
                    "agent '{}' allows tools of MCP server '{server}', which is not configured (configured: [{}]); add [mcp_servers.{server}] to the config",
                    agent.id,
                    configured.join(", ")
                );
            }
        }
    }
    Ok(agents)
}

/// Print as pretty JSON.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Write a command's output ([`out!`], [`outln!`]). Output that cannot be written
/// ends the process with status 1: quietly when the reader has gone (a closed pipe is
/// the reader's choice), saying why otherwise. `serve` does not use this: a gateway
/// keeps serving when its stdout closes ([`serve`]'s `say`).
pub(crate) fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("hivegate: cannot write the output: {e}");
        }
        std::process::exit(1);
    }
}
