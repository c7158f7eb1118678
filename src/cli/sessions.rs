//! `hivegate sessions` and `hivegate runs`: the sessions and runs of a running gateway,
//! through the operator client with the scopes the OpenClaw CLI asks for (read to list,
//! write to abort and wait, admin to reset).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::devices::{finish, rows, table, text, GatewayArgs};

const READ: &[&str] = &["operator.read"];
const WRITE: &[&str] = &["operator.write"];
const ADMIN: &[&str] = &["operator.admin"];

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(subcommand)]
    command: SessionsCommand,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions: key, agent, model, status, outcome, tokens.
    List,
    /// A session's conversation (the last --limit messages).
    History {
        key: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Abort a session's running run and its whole tree.
    Abort { key: String },
    /// Forget a session that is not running; a main session's next run starts fresh.
    Reset { key: String },
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// The latest run of each main session: run id, session, agent, status, outcome.
    List,
    /// A run's tree (as `hivegate run --json` prints it) and its final answer.
    Show { run_id: String },
    /// Wait for a run to end (at most --wait seconds) and print how it ended.
    Wait {
        run_id: String,
        /// Seconds to wait (at most 600).
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

fn render_sessions(payload: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(&payload["sessions"])
        .map(|s| {
            vec![
                text(&s["sessionKey"]),
                text(&s["agentId"]),
                format!("{}/{}", text(&s["modelProvider"]), text(&s["model"])),
                text(&s["status"]),
                text(&s["outcome"]),
                s["totalTokens"].as_u64().unwrap_or(0).to_string(),
                s["placement"].as_str().unwrap_or("local").to_string(),
            ]
        })
        .collect();
    table(&["SESSION", "AGENT", "MODEL", "STATUS", "OUTCOME", "TOKENS", "RUNS ON"], &rows)
}

fn render_history(payload: &Value) -> String {
    rows(&payload["messages"])
        .map(|m| {
            let content = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .map(|p| match p["type"].as_str() {
                        Some("text") => text(&p["text"]),
                        Some("toolCall") => format!("[{} {}]", text(&p["name"]), p["arguments"]),
                        _ => p.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.to_string(),
            };
            format!("{}: {content}", text(&m["role"]))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn run_sessions(config_path: Option<PathBuf>, args: SessionsArgs) -> anyhow::Result<i32> {
    let client = args.gateway.client(config_path.as_deref())?;
    let json = args.gateway.json;
    match args.command {
        SessionsCommand::List => {
            finish(json, client.call(READ, "sessions.list", json!({})).await, render_sessions, None)
        }
        SessionsCommand::History { key, limit } => {
            let result = client.call(READ, "chat.history", json!({"sessionKey": key, "limit": limit})).await;
            finish(json, result, render_history, None)
        }
        SessionsCommand::Abort { key } => {
            let result = client.call(WRITE, "sessions.abort", json!({ "key": key })).await;
            finish(
                json,
                result,
                |p| match p["abortedRunId"].as_str() {
                    Some(run) => format!("aborted run {run} of {key} and its tree"),
                    None => format!("{key} has no running run"),
                },
                None,
            )
        }
        SessionsCommand::Reset { key } => {
            let result = client.call(ADMIN, "sessions.reset", json!({ "key": key })).await;
            finish(json, result, |p| format!("{key}: {}", text(&p["status"])), None)
        }
    }
}

pub async fn run_runs(config_path: Option<PathBuf>, args: RunsArgs) -> anyhow::Result<i32> {
    let json = args.gateway.json;
    match args.command {
        RunsCommand::List => {
            let client = args.gateway.client(config_path.as_deref())?;
            let render = |p: &Value| {
                let rows: Vec<Vec<String>> = rows(&p["runs"])
                    .map(|r| {
                        vec![
                            text(&r["runId"]),
                            text(&r["sessionKey"]),
                            text(&r["agentId"]),
                            text(&r["status"]),
                            text(&r["outcome"]),
                        ]
                    })
                    .collect();
                table(&["RUN", "SESSION", "AGENT", "STATUS", "OUTCOME"], &rows)
            };
            finish(json, client.call(READ, "runs.list", json!({})).await, render, None)
        }
        RunsCommand::Show { run_id } => {
            let client = args.gateway.client(config_path.as_deref())?;
            let render = |p: &Value| {
                let mut lines = Vec::new();
                let mut stack = vec![(&p["root"], 0usize)];
                while let Some((node, depth)) = stack.pop() {
                    lines.push(format!(
                        "{}{}  {}  {}  {}",
                        "  ".repeat(depth),
                        text(&node["sessionKey"]),
                        text(&node["agentId"]),
                        text(&node["model"]),
                        text(&node["outcome"])
                    ));
                    let children: Vec<&Value> = rows(&node["children"]).collect();
                    stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
                }
                format!("{}\n\nfinal answer:\n{}", lines.join("\n"), text(&p["finalAnswer"]))
            };
            let result = client.call(READ, "runs.show", json!({ "runId": run_id })).await;
            finish(json, result, render, Some("see `hivegate runs list` for the runs the gateway keeps".into()))
        }
        RunsCommand::Wait { run_id, wait } => {
            if wait > 600 {
                eprintln!("error: --wait must be at most 600 seconds");
                return Ok(2);
            }
            // The transport waits a little longer than the gateway is asked to.
            let gateway_args =
                GatewayArgs::new(args.gateway.url().cloned(), args.gateway.token().cloned(), json, (wait + 10) * 1000);
            let client = gateway_args.client(config_path.as_deref())?;
            let result = client.call(WRITE, "agent.wait", json!({"runId": run_id, "timeoutMs": wait * 1000})).await;
            let ended_ok = result.as_ref().is_ok_and(|p| p["status"] == "ok");
            let code = finish(
                json,
                result,
                |p| match p["status"].as_str() {
                    Some("timeout") => format!("run {run_id} has not ended (or is unknown) after {wait} s"),
                    Some(status) => format!("run {run_id} ended {status}: {}", text(&p["terminalReply"]["text"])),
                    None => format!("run {run_id}: {p}"),
                },
                None,
            )?;
            Ok(if code == 0 && !ended_ok { 1 } else { code })
        }
    }
}
