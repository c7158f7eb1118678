//! `hivegate run --agent brain "task"`: one task on a main session against the
//! configured providers (the builtin one is always there), then the tree and the answer.
//! On a terminal the tree is drawn live while it runs (`live.rs`); otherwise progress
//! lines go to stderr when asked (`--progress`), or when stderr is a terminal. Ctrl-C kills the tree, prints what it got to and exits
//! 130; a second Ctrl-C exits at once.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::mpsc;

use super::live::LiveTree;
use super::term::{self, Interrupts, Painter};
use super::{load_agents, print_json};
use crate::config::Config;
use crate::gateway::registry::Registry;
use crate::gateway::{Kill, RunSummary, StartMain, WaitRun};
use crate::keys::SessionKey;
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
    /// happen, instead of the live tree. Default: the live tree when stdout is a
    /// terminal (and not --json), else these lines when stderr is a terminal.
    #[arg(long, overrides_with = "no_progress")]
    progress: bool,
    /// Print no progress lines and no live tree.
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
    config.store_url = None;
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
    let mut interrupts = Interrupts::new()?;
    let runtime = Runtime::start(&config, agents).await?;
    let live = !args.json && !args.progress && !args.no_progress && std::io::stdout().is_terminal();
    let progress = !args.no_progress && (args.progress || (!live && std::io::stderr().is_terminal()));
    if let Some(workspace) = runtime.workspace.as_ref().filter(|_| progress) {
        eprintln!("workspace: {} (the agents' work tools act only inside it)", workspace.root().display());
    }
    let printer = progress.then(|| actix_rt::spawn(print_progress(runtime.events.subscribe())));
    let (painter, paint_commands) = match live {
        true => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(actix_rt::spawn(paint(runtime.events.subscribe(), runtime.registry.clone(), rx))), Some(tx))
        }
        false => (None, None),
    };
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
    let mut ended = runtime.gateway.send(WaitRun { run_id: run.run_id }).await??;
    let summary = tokio::select! {
        summary = &mut ended => Some(summary?),
        () = interrupts.next() => None,
    };
    let interrupted = summary.is_none();
    let summary = match summary {
        Some(summary) => Some(summary),
        None => {
            let note = "interrupted: killing the tree (Ctrl-C again exits at once)";
            match &paint_commands {
                Some(tx) => {
                    let _ = tx.send(Paint::Note(note.into()));
                }
                None => eprintln!("{note}"),
            }
            kill_tree(&runtime, &run.session_key, ended, &mut interrupts, live).await
        }
    };
    if let (Some(painter), Some(tx)) = (painter, paint_commands) {
        let _ = tx.send(Paint::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(1), painter).await;
    }
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
        final_answer: summary.map(|s| s.text).unwrap_or_default(),
        root,
    };
    if args.json {
        print_json(&report)?;
    } else {
        out!("{}", report.render());
    }
    runtime.shutdown().await?;
    if interrupted {
        eprintln!("interrupted: the tree was killed ({} sessions killed)", report.outcomes.killed);
        return Ok(term::INTERRUPTED);
    }
    Ok(if report.all_ok() { 0 } else { 1 })
}

/// How long a killed tree may take to end before the report is printed anyway.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// What the live tree's painter is told.
enum Paint {
    Note(String),
    Stop,
}

/// Draw the live tree from the gateway's events until told to stop, then erase it. When
/// events were lost, the tree is loaded again from the registry.
async fn paint(
    mut events: crate::gateway::events::Subscription,
    registry: Arc<Registry>,
    mut commands: mpsc::UnboundedReceiver<Paint>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut painter = Painter::new(LiveTree::default(), true);
    let mut tick = tokio::time::interval(term::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut open = true;
    loop {
        tokio::select! {
            event = events.recv(), if open => match event {
                Ok(event) => painter.tree.apply(&event, term::now_ms()),
                Err(RecvError::Lagged(skipped)) => {
                    painter.tree.lost(skipped);
                    let root = painter.tree.root_key().map(SessionKey::from);
                    if let Some(root) = root.and_then(|key| registry.tree(&key)) {
                        painter.tree.load(&root, term::now_ms());
                    }
                }
                Err(RecvError::Closed) => open = false,
            },
            _ = tick.tick() => {}
            command = commands.recv() => match command {
                Some(Paint::Note(note)) => painter.note(note),
                Some(Paint::Stop) | None => break,
            },
        }
        painter.draw();
    }
    painter.clear();
}

/// Kill the tree under `root` (the first Ctrl-C) and wait, bounded, for its run to end;
/// a second Ctrl-C exits at once.
async fn kill_tree(
    runtime: &Runtime,
    root: &SessionKey,
    ended: tokio::sync::oneshot::Receiver<RunSummary>,
    interrupts: &mut Interrupts,
    live: bool,
) -> Option<RunSummary> {
    if let Err(e) = runtime.gateway.send(Kill { caller: None, target: root.clone() }).await {
        tracing::warn!("could not ask the gateway to kill the tree: {e}");
    }
    tokio::select! {
        summary = ended => summary.ok(),
        () = tokio::time::sleep(KILL_GRACE) => None,
        () = interrupts.next() => term::exit_now(live),
    }
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
