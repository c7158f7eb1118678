//! `hivegate demo`: the main job. Starts a gateway in-process with the builtin offline
//! provider, gives the brain a task of N subtasks (each executor splits again while the
//! tree is shallower than D), waits for the whole tree and reports it. Without `--task`,
//! subtask i is a report on the workspace's i-th file (the builtin executor reads it
//! with `read` and reports its line count and first line).

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
    /// The task for the brain; it is split into --executors subtasks. Default: a report
    /// on one file of the workspace per subtask (its first files by name, up to 32, each
    /// at most 256 KiB), then a survey of the runtime for subtasks beyond them.
    #[arg(long)]
    task: Option<String>,
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

/// What a subtask beyond the workspace's files asks, without `--task`.
const SURVEY: &str = "survey the hivegate runtime and report what each part does";
/// Files of the workspace the default task names, and the largest one named.
const MAX_FILES: usize = 32;
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// The brain's task: one line per subtask, each carrying the split marker the builtin
/// executor understands (see `model::builtin`). Without `--task`, subtask i names the
/// i-th of `files` in backticks.
fn brain_task(args: &DemoArgs, files: &[String]) -> String {
    let marker = match args.depth {
        1 => String::new(),
        d => format!(" [split {} x{}]", args.fanout, d - 1),
    };
    let n = args.executors;
    (1..=n)
        .map(|i| {
            let what = match (&args.task, files.get(i as usize - 1)) {
                (Some(task), _) => task.trim().to_string(),
                (None, Some(file)) => format!("report on `{file}`"),
                (None, None) => SURVEY.to_string(),
            };
            format!("{what} (part {i} of {n}){marker}\n")
        })
        .collect()
}

/// The workspace's first regular, visible files by name (at most [`MAX_FILES`], each at
/// most [`MAX_FILE_BYTES`]): what the default task reports on.
fn workspace_files(root: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut files: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() <= MAX_FILE_BYTES))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.') && !name.contains('`') && !name.contains(char::is_whitespace))
        .collect();
    files.sort();
    files.truncate(MAX_FILES);
    files
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
    config.store_url = None;
    super::choose_workspace(args.workspace.clone(), &mut config, std::env::current_dir()?, false)?;
    let mut agents = load_agents(&config)?;
    let limits_raised = fit_limits(&args, &mut config, &mut agents);
    let runtime = Runtime::start(&config, agents).await?;
    let files = match (&args.task, &runtime.workspace) {
        (None, Some(workspace)) => workspace_files(workspace.root()),
        _ => Vec::new(),
    };
    if !args.json {
        eprintln!(
            "hivegate demo: brain + {} executors, depth {}, builtin provider at http://{}",
            args.executors, args.depth, runtime.http_addr
        );
        if !limits_raised.is_empty() {
            eprintln!("limits raised to fit this tree: {}", limits_raised.join(", "));
        }
        if let Some(workspace) = runtime.workspace.as_ref().filter(|_| args.task.is_none()) {
            match files.len() {
                0 => eprintln!(
                    "workspace {}: no files to report on; the executors survey the runtime",
                    workspace.root().display()
                ),
                n => eprintln!(
                    "workspace {}: the executors report on {} of its files",
                    workspace.root().display(),
                    n.min(args.executors as usize)
                ),
            }
        }
    }
    let started = Instant::now();
    let run = runtime
        .gateway
        .send(StartMain {
            agent_id: "brain".into(),
            task: brain_task(&args, &files),
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
        out!("{}", report.render());
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
        DemoArgs { task: Some("t".into()), executors, depth, fanout, timeout: 1.0, json: false, workspace: None }
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
        assert_eq!(brain_task(&args(2, 2, 3), &[]), "t (part 1 of 2) [split 3 x1]\nt (part 2 of 2) [split 3 x1]\n");
        let default = DemoArgs { task: None, ..args(3, 1, 2) };
        assert_eq!(
            brain_task(&default, &["a.txt".into(), "b.md".into()]),
            format!("report on `a.txt` (part 1 of 3)\nreport on `b.md` (part 2 of 3)\n{SURVEY} (part 3 of 3)\n")
        );
    }
}
