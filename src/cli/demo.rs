//! `hivegate demo`: the main job. Starts a gateway in-process with the builtin offline
//! provider, gives the brain a task of N subtasks (each executor splits again while the
//! tree is shallower than D), waits for the whole tree and reports it.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::{load_agents, print_json};
use crate::agent::Agents;
use crate::config::Config;
use crate::gateway::{StartMain, WaitRun};
use crate::report::{OutcomeCounts, TreeReport};
use crate::runtime::Runtime;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The task for the brain; it is split into --executors subtasks.
    #[arg(long, default_value = "survey the hivegate runtime and report what each part does")]
    task: String,
    /// Executors the brain spawns (one per subtask).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    executors: u32,
    /// Depth of the tree below the brain: with D > 1 every executor above the last level spawns --fanout executors again.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    depth: u32,
    /// Children per non-leaf executor when --depth > 1.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    fanout: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Print one JSON object instead of the tree.
    #[arg(long)]
    json: bool,
    /// The directory the agents' work tools (read, write, edit, ls, glob, grep, exec) act
    /// in; nothing outside it is reachable. Default: [workspace] root, else the current directory.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
}

/// The brain's task: one line per subtask, each carrying the split marker the builtin
/// executor understands (see `model::builtin`).
fn brain_task(args: &DemoArgs) -> String {
    let marker = match args.depth {
        1 => String::new(),
        d => format!(" [split {} x{}]", args.fanout, d - 1),
    };
    (1..=args.executors).map(|i| format!("{} (part {i} of {}){marker}\n", args.task.trim(), args.executors)).collect()
}

/// Sessions in the full tree: 1 + N + N·F + … + N·F^(D-1).
fn expected_sessions(args: &DemoArgs) -> u64 {
    (0..args.depth)
        .fold((1u64, u64::from(args.executors)), |(total, level), _| (total + level, level * u64::from(args.fanout)))
        .0
}

/// Raise whatever limit the requested tree would hit (limits only ever go up), and
/// say each change, so the demo never fails inside its own accepted ranges and never
/// changes a limit silently.
fn fit_limits(args: &DemoArgs, config: &mut Config, agents: &mut Agents) -> Vec<String> {
    let mut changed = Vec::new();
    let widest = args.executors.max(args.fanout) as usize;
    let limits = &mut config.limits;
    let mut raise = |name: &str, current: &mut usize, needed: usize| {
        if *current < needed {
            changed.push(format!("limits.{name} {current} → {needed}"));
            *current = needed;
        }
    };
    raise("max_children_per_session", &mut limits.max_children_per_session, widest);
    raise("max_sessions", &mut limits.max_sessions, expected_sessions(args).min(usize::MAX as u64) as usize);
    if limits.max_spawn_depth < args.depth {
        changed.push(format!("limits.max_spawn_depth {} → {}", limits.max_spawn_depth, args.depth));
        limits.max_spawn_depth = args.depth;
    }
    changed.extend(agents.raise_subagent_limits("brain", args.executors as usize, args.depth));
    changed.extend(agents.raise_subagent_limits("executor", args.fanout as usize, args.depth));
    changed
}

pub async fn run(config_path: Option<PathBuf>, args: DemoArgs) -> anyhow::Result<i32> {
    let timeout = crate::config::timeout_from_secs(args.timeout).map_err(|e| anyhow::anyhow!("--timeout {e}"))?;
    let mut config = Config::load(config_path.as_deref())?;
    config.bind = ([127, 0, 0, 1], 0).into();
    // Ephemeral: this command pairs nothing and must not touch the durable state.
    config.state_dir = PathBuf::new();
    super::choose_workspace(args.workspace.clone(), &mut config, std::env::current_dir()?, false)?;
    let mut agents = load_agents(&config)?;
    let limits_raised = fit_limits(&args, &mut config, &mut agents);
    let runtime = Runtime::start(&config, agents).await?;
    if !args.json {
        eprintln!(
            "hivegate demo: brain + {} executors, depth {}, builtin provider at http://{}",
            args.executors, args.depth, runtime.http_addr
        );
        if !limits_raised.is_empty() {
            eprintln!("limits raised to fit this tree: {}", limits_raised.join(", "));
        }
    }
    let started = Instant::now();
    let run = runtime
        .gateway
        .send(StartMain {
            agent_id: "brain".into(),
            task: brain_task(&args),
            run_timeout: Some(timeout),
            budget_tokens: None,
            budget_usd: None,
            run_id: None,
            session_key: None,
        })
        .await??;
    let summary = runtime.gateway.send(WaitRun { run_id: run.run_id }).await??.await?;
    let elapsed = started.elapsed();
    let root = runtime.registry.tree(&run.session_key).ok_or_else(|| anyhow::anyhow!("the brain session vanished"))?;
    let outcomes = OutcomeCounts::of(&root);
    let (cost_usd, cost_on_root_model_usd) = crate::report::costs(&root, &config.pricing);
    let report = TreeReport {
        sessions: outcomes.total(),
        outcomes,
        spawn_latency_us: runtime.stats.spawn_latency(),
        pairing_requests: runtime.stats.pairing_requests(),
        refused_spawns: runtime.stats.spawns_refused(),
        limits_raised,
        elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        tokens: crate::report::tree_tokens(&root),
        cost_usd,
        cost_on_root_model_usd,
        final_answer: summary.text,
        root,
    };
    if args.json {
        print_json(&report)?;
    } else {
        print!("{}", report.render());
    }
    let expected = expected_sessions(&args);
    if report.sessions as u64 != expected && !args.json {
        eprintln!("hivegate demo: the tree has {} of the {expected} sessions asked for", report.sessions);
    }
    let ok = report.all_ok() && report.sessions as u64 == expected;
    runtime.shutdown().await?;
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(executors: u32, depth: u32, fanout: u32) -> DemoArgs {
        DemoArgs { task: "t".into(), executors, depth, fanout, timeout: 1.0, json: false, workspace: None }
    }

    #[test]
    fn limits_are_raised_to_fit_the_tree_and_each_change_is_said() {
        let mut config = Config::default();
        let mut agents = Agents::shipped().unwrap();
        let changed = fit_limits(&args(1000, 8, 2), &mut config, &mut agents);
        assert_eq!(config.limits.max_children_per_session, 1000);
        assert_eq!(config.limits.max_spawn_depth, 8);
        assert_eq!(agents.get("brain").unwrap().subagents.max_children, Some(1000));
        assert_eq!(agents.get("brain").unwrap().subagents.max_depth, Some(8));
        assert!(changed.contains(&"limits.max_children_per_session 64 → 1000".to_string()), "{changed:?}");
        assert!(changed.contains(&"agent brain subagents.max_depth 4 → 8".to_string()), "{changed:?}");
        let mut config = Config::default();
        let mut agents = Agents::shipped().unwrap();
        assert!(fit_limits(&args(4, 1, 2), &mut config, &mut agents).is_empty(), "the defaults fit a small tree");
    }

    #[test]
    fn tree_sizes_and_tasks() {
        assert_eq!(expected_sessions(&args(4, 1, 2)), 5);
        assert_eq!(expected_sessions(&args(50, 2, 2)), 151);
        assert_eq!(brain_task(&args(2, 2, 3)), "t (part 1 of 2) [split 3 x1]\nt (part 2 of 2) [split 3 x1]\n");
    }
}
