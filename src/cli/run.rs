//! `hivegate run --agent brain "task"`: one task on a main session against the
//! configured providers (the builtin one is always there), then the tree and the answer.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::{load_agents, print_json};
use crate::config::Config;
use crate::gateway::{StartMain, WaitRun};
use crate::report::{OutcomeCounts, TreeReport};
use crate::runtime::Runtime;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent whose main session runs the task.
    #[arg(long, default_value = "brain")]
    agent: String,
    /// Run timeout in seconds (default: limits.default_run_timeout_seconds).
    #[arg(long, allow_negative_numbers = true)]
    timeout: Option<f64>,
    /// Token budget for the whole tree.
    #[arg(long)]
    budget: Option<u64>,
    /// Cost budget for the whole tree, in USD (needs prices for its models).
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    budget_usd: Option<f64>,
    /// Print one JSON object instead of the tree.
    #[arg(long)]
    json: bool,
    /// Print each session's start, notices (retries, fallbacks) and end to stderr as they
    /// happen. Default: on when stderr is a terminal.
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// Print no progress lines.
    #[arg(long)]
    no_progress: bool,
    /// The directory the agents' work tools (read, write, edit, ls, glob, grep, exec) act
    /// in; nothing outside it is reachable. Default: [workspace] root, else the current directory.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// The task.
    task: String,
}

pub async fn run(config_path: Option<PathBuf>, args: RunArgs) -> anyhow::Result<i32> {
    let run_timeout = match args.timeout {
        Some(seconds) => Some(crate::config::timeout_from_secs(seconds).map_err(|e| anyhow::anyhow!("--timeout {e}"))?),
        None => None,
    };
    if let Some(usd) = args.budget_usd.filter(|usd| !(usd.is_finite() && *usd > 0.0)) {
        anyhow::bail!("--budget-usd must be a positive number of USD, got {usd}");
    }
    if args.task.trim().is_empty() {
        anyhow::bail!("the task is empty; say what the agent should do");
    }
    let mut config = Config::load(config_path.as_deref())?;
    config.bind = ([127, 0, 0, 1], 0).into();
    // Ephemeral: this command pairs nothing and must not touch the durable state.
    config.state_dir = PathBuf::new();
    super::choose_workspace(args.workspace.clone(), &mut config, std::env::current_dir()?, false)?;
    let agents = load_agents(&config)?;
    if agents.get(&args.agent).is_none() {
        anyhow::bail!("unknown agent '{}'; defined agents: {}", args.agent, agents.ids().join(", "));
    }
    // Configuration problems are said before any call is made: every model the tree may
    // use must have a configured provider and, where it names one, its API key.
    for (agent, model) in agents.models_of_tree(&args.agent) {
        if model.provider() != crate::config::BUILTIN_PROVIDER {
            config.providers.resolve(model).map_err(|e| anyhow::anyhow!("agent '{agent}': {e}"))?;
        }
    }
    let runtime = Runtime::start(&config, agents).await?;
    let progress = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    if let Some(workspace) = runtime.workspace.as_ref().filter(|_| progress) {
        eprintln!("workspace: {} (the agents' work tools act only inside it)", workspace.root().display());
    }
    let printer = progress.then(|| actix_rt::spawn(print_progress(runtime.events.subscribe())));
    let started = Instant::now();
    let start = StartMain {
        agent_id: args.agent.clone(),
        task: args.task,
        run_timeout,
        budget_tokens: args.budget,
        budget_usd: args.budget_usd,
        run_id: None,
        session_key: None,
    };
    let run = runtime.gateway.send(start).await??;
    let summary = runtime.gateway.send(WaitRun { run_id: run.run_id }).await??.await?;
    if let Some(printer) = printer {
        // The root's end was broadcast before the wait was answered: the printer stops
        // after printing it (bounded, in case the broadcast lagged past it).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), printer).await;
    }
    let root = runtime.registry.tree(&run.session_key).ok_or_else(|| anyhow::anyhow!("the session vanished"))?;
    let outcomes = OutcomeCounts::of(&root);
    let (cost_usd, cost_on_root_model_usd) = crate::report::costs(&root, &config.pricing);
    let report = TreeReport {
        sessions: outcomes.total(),
        outcomes,
        spawn_latency_us: runtime.stats.spawn_latency(),
        pairing_requests: runtime.stats.pairing_requests(),
        refused_spawns: runtime.stats.spawns_refused(),
        limits_raised: Vec::new(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        tokens: crate::report::tree_tokens(&root),
        cost_usd,
        cost_on_root_model_usd,
        final_answer: summary.text.clone(),
        root,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.render());
    }
    runtime.shutdown().await?;
    Ok(if report.all_ok() { 0 } else { 1 })
}

/// Print session events on stderr until a root session (one without a parent) ends.
async fn print_progress(mut events: crate::gateway::events::Subscription) {
    use crate::gateway::SessionEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut roots = std::collections::HashSet::new();
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Some(line) = crate::report::progress_line(&event) {
                    eprintln!("{line}");
                }
                match &event {
                    SessionEvent::Started { session_key, parent: None, .. } => {
                        roots.insert(session_key.clone());
                    }
                    SessionEvent::Ended { session_key, .. } if roots.contains(session_key) => return,
                    _ => {}
                }
            }
            Err(RecvError::Lagged(skipped)) => eprintln!("… {skipped} events skipped (too many to show)"),
            Err(RecvError::Closed) => return,
        }
    }
}
