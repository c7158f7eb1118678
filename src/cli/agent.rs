//! `hivegate agent`: run a task on a running gateway, as `openclaw agent` does. One
//! `agent` request with a fresh idempotency key (which is the run's id); the gateway
//! answers `accepted`, streams the run's events, and answers again with the tree's final
//! result when the root's run ends. The events draw the live tree when stdout is a
//! terminal, else they are lines on stderr when that is one. `--no-wait` prints the run
//! id and session key at once instead. Ctrl-C aborts the run's tree on the gateway
//! (`sessions.abort` of its root session), prints the tree as far as it got and exits
//! 130; a second Ctrl-C exits at once.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::devices::GatewayArgs;
use super::live::LiveTree;
use super::term::{self, Interrupts, Painter};
use crate::client::{ClientError, OperatorClient};
use crate::report::short_key;

const WRITE: &[&str] = &["operator.write"];
const READ: &[&str] = &["operator.read"];
/// The transport waits this much longer than the run may take.
const GRACE_SECS: u64 = 30;
/// How long an aborted run may take to end before the tree is printed as it is.
const ABORT_GRACE: Duration = Duration::from_secs(10);
/// How long asking for the run's final tree may take.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The task.
    #[arg(long)]
    message: String,
    /// The agent to run (default: the gateway's [gateway] default_agent).
    #[arg(long)]
    agent: Option<String>,
    /// The main session to run in: `agent:<id>:<name>`, or a bare name scoped to --agent.
    #[arg(long)]
    session_key: Option<String>,
    /// Seconds the run may take (default 600; the gateway's limits apply too).
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Print {"runId", "sessionKey"} as soon as the run is accepted, and exit.
    #[arg(long)]
    no_wait: bool,
    /// Print the final result as JSON.
    #[arg(long)]
    json: bool,
    /// Gateway WebSocket URL (default: ws://<gateway.bind from the config>/).
    #[arg(long, value_name = "WS_URL")]
    url: Option<String>,
    /// Shared gateway token (default: the configured one, sent only to the configured gateway).
    #[arg(long)]
    token: Option<String>,
}

/// The full session key for `--session-key`, or why not.
fn session_key(key: Option<&str>, agent: Option<&str>) -> Result<Option<String>, String> {
    match (key, agent) {
        (None, _) => Ok(None),
        (Some(key), _) if key.starts_with("agent:") => Ok(Some(key.to_string())),
        (Some(name), Some(agent)) => Ok(Some(format!("agent:{agent}:{name}"))),
        (Some(name), None) => {
            Err(format!("--session-key {name} is a bare name; pass --agent too, or a full key agent:<id>:{name}"))
        }
    }
}

/// One line for an event worth showing while waiting, if any.
fn event_line(frame: &Value) -> Option<String> {
    let payload = frame.get("payload")?;
    if frame.get("event")?.as_str()? != "agent" {
        return None;
    }
    let who = short_key(payload.get("sessionKey")?.as_str()?);
    let data = payload.get("data")?;
    match (payload.get("stream")?.as_str()?, data.get("phase").and_then(Value::as_str)) {
        ("lifecycle", Some("start")) => Some(format!("+ {who}")),
        ("lifecycle", Some("end")) => {
            Some(format!("- {who}  {}", data.get("stopReason").and_then(Value::as_str).unwrap_or("?")))
        }
        ("assistant", _) => Some(format!("· {who}  {}", data.get("delta")?.as_str()?.replace('\n', " "))),
        ("item", Some("start")) => {
            let title = data.get("title").and_then(Value::as_str).map(|t| format!("  {t}")).unwrap_or_default();
            Some(format!("· {who}  {}{title}", data.get("name")?.as_str()?))
        }
        ("item", Some("end")) if data.get("status")? == "failed" => Some(format!(
            "· {who}  {} failed: {}",
            data.get("name")?.as_str()?,
            data.get("error").and_then(Value::as_str).unwrap_or("?")
        )),
        _ => None,
    }
}

pub async fn run(config_path: Option<PathBuf>, args: AgentArgs) -> anyhow::Result<i32> {
    let timeout = match crate::config::timeout_from_secs(args.timeout) {
        Ok(timeout) => timeout,
        Err(e) => {
            eprintln!("error: --timeout {e}");
            return Ok(2);
        }
    };
    let session_key = match session_key(args.session_key.as_deref(), args.agent.as_deref()) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let wait_ms = (timeout.as_secs() + GRACE_SECS) * 1000;
    let gateway = GatewayArgs::new(args.url, args.token, args.json, wait_ms);
    let client = gateway.client(config_path.as_deref())?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut params = json!({"message": args.message, "timeout": timeout.as_secs_f64(), "idempotencyKey": run_id});
    if let Some(agent) = &args.agent {
        params["agentId"] = json!(agent);
    }
    if let Some(key) = &session_key {
        params["sessionKey"] = json!(key);
    }
    if args.no_wait {
        let ack = match client.call(WRITE, "agent", params).await {
            Ok(ack) => ack,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        };
        outln!("{}", serde_json::to_string_pretty(&json!({"runId": ack["runId"], "sessionKey": ack["sessionKey"]}))?);
        return Ok(0);
    }
    let live = !args.json && std::io::stdout().is_terminal();
    let lines = !args.json && !live && std::io::stderr().is_terminal();
    let followed = follow(&client, params, &run_id, session_key, live, lines).await?;
    let Followed { result, interrupted, mut painter } = followed;
    if live || (interrupted && !args.json) {
        // The tree as the gateway has it at the end: the events of the last sessions to
        // end may come after the final answer, on a socket that is closed by then.
        let shown = client.clone().with_timeout(SHOW_TIMEOUT).call(READ, "runs.show", json!({"runId": run_id})).await;
        if let Some(root) = shown.as_ref().ok().and_then(|s| s.get("root")) {
            painter.tree.load_json(root, Some(&run_id), term::now_ms());
        }
    }
    if interrupted {
        let out = result.and_then(Result::ok).map(|(_, out)| out);
        return print_interrupted(out, &run_id, args.json, live, &mut painter);
    }
    painter.leave();
    match result {
        Some(Ok((_, out))) => print_result(&out, args.json),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            Ok(1)
        }
        None => {
            eprintln!("error: the gateway did not answer");
            Ok(1)
        }
    }
}

/// After a Ctrl-C: the final answer if one came (`--json`), else the tree as far as it
/// got; exit 130.
fn print_interrupted(
    out: Option<Value>,
    run_id: &str,
    json: bool,
    live: bool,
    painter: &mut Painter,
) -> anyhow::Result<i32> {
    match (json, live) {
        (true, _) => {
            let out = out.unwrap_or(json!({"runId": run_id, "status": "aborted"}));
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
        (false, true) => painter.leave(),
        (false, false) => {
            for line in painter.tree.lines(term::now_ms(), 0, 0) {
                outln!("{line}");
            }
        }
    }
    eprintln!("interrupted: the run's tree was aborted");
    Ok(term::INTERRUPTED)
}

/// The final answer: as JSON, or its text; exit 0 when the run ended ok.
fn print_result(out: &Value, json: bool) -> anyhow::Result<i32> {
    let ok = out.get("status").and_then(Value::as_str) == Some("ok");
    if json {
        outln!("{}", serde_json::to_string_pretty(out)?);
    } else {
        let texts: Vec<&str> = out
            .pointer("/result/payloads")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        match texts.is_empty() {
            true => outln!("{}", out.get("summary").and_then(Value::as_str).unwrap_or("no answer")),
            false => outln!("{}", texts.join("\n")),
        }
        if !ok {
            eprintln!("the run ended {}", out.get("status").and_then(Value::as_str).unwrap_or("without a status"));
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// What following a run came to.
struct Followed {
    /// The `agent` call's answers (`None`: given up on after an abort).
    result: Option<Result<(Value, Value), ClientError>>,
    interrupted: bool,
    painter: Painter,
}

/// Start the run and follow it to its end, drawing its tree (`live`) or printing event
/// lines (`lines`). The first Ctrl-C aborts the tree and waits (bounded) for the end;
/// the second exits.
async fn follow(
    client: &OperatorClient,
    params: Value,
    run_id: &str,
    session_key: Option<String>,
    live: bool,
    lines: bool,
) -> anyhow::Result<Followed> {
    let mut interrupts = Interrupts::new()?;
    let painter = Rc::new(RefCell::new(Painter::new(LiveTree::for_run(run_id), live)));
    let (result, interrupted) = {
        let seen = painter.clone();
        let mut on_event = move |frame: &Value| {
            if let Some(line) = event_line(frame).filter(|_| lines) {
                eprintln!("{line}");
            }
            let mut painter = seen.borrow_mut();
            painter.tree.apply_agent(frame, term::now_ms());
            painter.draw();
        };
        let call = client.call_final(WRITE, "agent", params, &mut on_event);
        tokio::pin!(call);
        let mut tick = tokio::time::interval(term::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut give_up: Option<tokio::time::Instant> = None;
        let result = loop {
            let deadline = give_up.unwrap_or_else(|| tokio::time::Instant::now() + ABORT_GRACE);
            tokio::select! {
                result = &mut call => break Some(result),
                _ = tick.tick() => painter.borrow_mut().draw(),
                () = interrupts.next() => {
                    if give_up.is_some() {
                        term::exit_now(live);
                    }
                    give_up = Some(tokio::time::Instant::now() + ABORT_GRACE);
                    let root = painter.borrow().tree.root_key().map(str::to_string).or(session_key.clone());
                    let note = "interrupted: aborting the run's tree (Ctrl-C again exits at once)";
                    match live {
                        true => painter.borrow_mut().note(note.into()),
                        false => eprintln!("{note}"),
                    }
                    actix_rt::spawn(abort(client.clone(), run_id.to_string(), root));
                }
                () = tokio::time::sleep_until(deadline), if give_up.is_some() => break None,
            }
        };
        (result, give_up.is_some())
    };
    let painter = Rc::try_unwrap(painter)
        .map(RefCell::into_inner)
        .map_err(|_| anyhow::anyhow!("the live view is still in use"))?;
    Ok(Followed { result, interrupted, painter })
}

/// Abort the run's tree: `sessions.abort` of its root session (found from the run when
/// no event named it yet).
async fn abort(client: OperatorClient, run_id: String, root: Option<String>) {
    let root = match root {
        Some(root) => Ok(root),
        None => client.call(READ, "runs.show", json!({"runId": run_id})).await.and_then(|shown| {
            let key = shown.pointer("/root/sessionKey").and_then(Value::as_str).map(str::to_string);
            key.ok_or_else(|| ClientError::BadFrame {
                stage: crate::client::Stage::Response,
                reason: "runs.show named no root session".into(),
            })
        }),
    };
    let aborted = match root {
        Ok(key) => client.call(WRITE, "sessions.abort", json!({"key": key})).await,
        Err(e) => Err(e),
    };
    if let Err(e) = aborted {
        eprintln!("error: could not abort the run: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_session_keys_are_scoped_to_the_agent() {
        assert_eq!(session_key(Some("k1"), Some("brain")), Ok(Some("agent:brain:k1".into())));
        assert_eq!(session_key(Some("agent:x:k"), None), Ok(Some("agent:x:k".into())));
        assert!(session_key(Some("k1"), None).unwrap_err().contains("pass --agent"));
        assert_eq!(session_key(None, None), Ok(None));
    }
}
