//! `hivegate agent`: run a task on a running gateway, as `openclaw agent` does. One
//! `agent` request with a fresh idempotency key; the gateway answers `accepted`, streams
//! the run's events (shown on stderr when it is a terminal), and answers again with the
//! tree's final result when the root's run ends. `--no-wait` prints the run id and
//! session key at once instead.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use super::devices::GatewayArgs;
use crate::report::short_key;

const WRITE: &[&str] = &["operator.write"];
/// The transport waits this much longer than the run may take.
const GRACE_SECS: u64 = 30;

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
    let mut params = json!({"message": args.message, "timeout": timeout.as_secs_f64(),
        "idempotencyKey": uuid::Uuid::new_v4().to_string()});
    if let Some(agent) = &args.agent {
        params["agentId"] = json!(agent);
    }
    if let Some(key) = session_key {
        params["sessionKey"] = json!(key);
    }
    let result = if args.no_wait {
        client.call(WRITE, "agent", params).await.map(|ack| {
            let out = json!({"runId": ack["runId"], "sessionKey": ack["sessionKey"]});
            (ack, out)
        })
    } else {
        let show = !args.json && std::io::stderr().is_terminal();
        let mut on_event = |frame: &Value| {
            if let Some(line) = event_line(frame).filter(|_| show) {
                eprintln!("{line}");
            }
        };
        client.call_final(WRITE, "agent", params, &mut on_event).await
    };
    let (_, out) = match result {
        Ok(answers) => answers,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let ok = args.no_wait || out.get("status").and_then(Value::as_str) == Some("ok");
    if args.json || args.no_wait {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let texts: Vec<&str> = out
            .pointer("/result/payloads")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        match texts.is_empty() {
            true => println!("{}", out.get("summary").and_then(Value::as_str).unwrap_or("no answer")),
            false => println!("{}", texts.join("\n")),
        }
        if !ok {
            eprintln!("the run ended {}", out.get("status").and_then(Value::as_str).unwrap_or("without a status"));
        }
    }
    Ok(if ok { 0 } else { 1 })
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
