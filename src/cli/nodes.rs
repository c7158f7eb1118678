//! `hivegate nodes`: list connected and paired nodes, approve or reject their command surfaces,
//! describe one and invoke a command on it, through the operator client ([`crate::client`]) with
//! the scopes `openclaw nodes` asks for. `--node` takes an id or a name: a name is resolved
//! through `node.list` the way OpenClaw resolves it (id, then remote IP, then display name or
//! id prefix; a connected node wins a tie). `--params` is checked before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::devices::{age, finish, list, now_ms, rows, short, table, text, yes_no, GatewayArgs, PAIRING};
use crate::client::{ClientIdentity, OperatorClient};

const READ: &[&str] = &["operator.read"];
const WRITE: &[&str] = &["operator.write"];
const APPROVE: &[&str] = &["operator.pairing", "operator.admin"];
/// The transport waits this much longer than the node is given.
const INVOKE_GRACE: Duration = Duration::from_secs(10);

/// Bad `--node` or `--params` input, found before or instead of calling the gateway.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeInputError {
    #[error("--params is not valid json ({0}); pass an object such as '{{\"bins\":[\"sh\"]}}'")]
    ParamsNotJson(String),
    #[error("--params must be a json object, not {0}; pass an object such as '{{}}'")]
    ParamsNotObject(&'static str),
    #[error("--node is empty; pass a node id or name (see `hivegate nodes list`)")]
    EmptyNode,
    #[error("unknown node {query:?} (known: {known}); see `hivegate nodes list`")]
    UnknownNode { query: String, known: String },
    #[error("ambiguous node {query:?} (matches: {matches}); pass the node id instead")]
    AmbiguousNode { query: String, matches: String },
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(subcommand)]
    command: NodesCommand,
}

#[derive(Debug, Subcommand)]
enum NodesCommand {
    /// List known nodes: id, name, platform, connected, commands.
    List,
    /// List node command surfaces waiting for approval.
    Pending,
    /// Approve a node's pending command surface (needs operator.pairing and operator.admin).
    Approve { request_id: String },
    /// Reject a node's pending command surface.
    Reject { request_id: String },
    /// Show one node.
    Describe {
        /// Node id or name.
        #[arg(long)]
        node: String,
    },
    /// Invoke a command on a node and print what it returned.
    Invoke {
        /// Node id or name.
        #[arg(long)]
        node: String,
        /// The node command, e.g. system.which.
        #[arg(long)]
        command: String,
        /// The command's parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// How long the node may take, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
        invoke_timeout: u64,
        /// Idempotency key (default: a fresh UUID); a repeat within minutes returns the first result.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

pub async fn run(config_path: Option<PathBuf>, args: NodesArgs) -> anyhow::Result<i32> {
    let json = args.gateway.json;
    let client = args.gateway.client(config_path.as_deref())?;
    let pending_hint = Some("run `hivegate nodes pending` for the current request ids".to_string());
    match args.command {
        NodesCommand::List => {
            let result = client.call(READ, "node.list", json!({})).await;
            let result = result.map(|payload| json!({ "nodes": rows(&payload["nodes"]).collect::<Vec<_>>() }));
            finish(json, result, render_nodes, None)
        }
        NodesCommand::Pending => {
            let result = client.call(PAIRING, "node.pair.list", json!({})).await;
            let result = result.map(|payload| json!({ "pending": pending_rows(&payload) }));
            finish(json, result, |p| render_pending(p, now_ms()), None)
        }
        NodesCommand::Approve { request_id } => {
            let client = client.with_identity(ClientIdentity::Backend);
            let result = client.call(APPROVE, "node.pair.approve", json!({ "requestId": request_id })).await;
            let human = |p: &Value| format!("approved node {} (request {request_id})", text(&p["node"]["nodeId"]));
            finish(json, result, human, pending_hint)
        }
        NodesCommand::Reject { request_id } => {
            let result = client.call(PAIRING, "node.pair.reject", json!({ "requestId": request_id })).await;
            finish(json, result, |_| format!("rejected node pairing request {request_id}"), pending_hint)
        }
        NodesCommand::Describe { node } => {
            let node_id = match node_id(&client, &node).await? {
                Ok(id) => id,
                Err(refused) => return Ok(refused),
            };
            let result = client.call(READ, "node.describe", json!({ "nodeId": node_id })).await;
            finish(json, result, pretty, None)
        }
        NodesCommand::Invoke { node, command, params, invoke_timeout, idempotency_key } => {
            let params = parse_params(&params)?;
            let node_id = match node_id(&client, &node).await? {
                Ok(id) => id,
                Err(refused) => return Ok(refused),
            };
            let invoke = json!({
                "nodeId": node_id,
                "command": command,
                "params": params,
                "idempotencyKey": idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                "timeoutMs": invoke_timeout,
            });
            let transport = client.timeout().max(Duration::from_millis(invoke_timeout) + INVOKE_GRACE);
            let result = client.with_timeout(transport).call(WRITE, "node.invoke", invoke).await;
            finish(json, result, |p| pretty(p.get("payload").unwrap_or(p)), None)
        }
    }
}

/// `--params` as the JSON object `node.invoke` forwards to the node.
fn parse_params(raw: &str) -> Result<Value, NodeInputError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| NodeInputError::ParamsNotJson(e.to_string()))?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Array(_) => Err(NodeInputError::ParamsNotObject("an array")),
        Value::String(_) => Err(NodeInputError::ParamsNotObject("a string")),
        Value::Number(_) => Err(NodeInputError::ParamsNotObject("a number")),
        Value::Bool(_) => Err(NodeInputError::ParamsNotObject("a boolean")),
        Value::Null => Err(NodeInputError::ParamsNotObject("null")),
    }
}

/// The node id for `--node`: a 64-hex id as is, anything else through `node.list`. The inner
/// `Err` is the exit code of a gateway refusal, already printed.
async fn node_id(client: &OperatorClient, query: &str) -> anyhow::Result<Result<String, i32>> {
    let query = query.trim();
    if is_node_id(query) {
        return Ok(Ok(query.to_ascii_lowercase()));
    }
    match client.call(READ, "node.list", json!({})).await {
        Ok(payload) => {
            let nodes: Vec<&Value> = rows(&payload["nodes"]).collect();
            Ok(Ok(resolve_node(&nodes, query)?))
        }
        Err(err) => finish(false, Err(err), |_| String::new(), None).map(Err),
    }
}

fn is_node_id(query: &str) -> bool {
    query.len() == 64 && query.bytes().all(|b| b.is_ascii_hexdigit())
}

/// OpenClaw's `--node` matching: exact `nodeId`, else exact `remoteIp`, else the best of a
/// normalized display name (preferred) or an id prefix of at least 6 characters. Among several
/// matches the connected ones win; more than one left is ambiguous.
fn resolve_node(nodes: &[&Value], query: &str) -> Result<String, NodeInputError> {
    let query = query.trim();
    if query.is_empty() {
        return Err(NodeInputError::EmptyNode);
    }
    let id = |n: &Value| n["nodeId"].as_str().unwrap_or_default().to_string();
    let nodes: Vec<&Value> = nodes.iter().copied().filter(|n| !id(n).is_empty()).collect();
    let mut matches: Vec<&Value> = nodes.iter().copied().filter(|n| id(n) == query).collect();
    if matches.is_empty() {
        matches = nodes.iter().copied().filter(|n| n["remoteIp"].as_str() == Some(query)).collect();
    }
    if matches.is_empty() {
        let key = node_key(query);
        let score = |n: &Value| match n["displayName"].as_str().map(node_key) {
            Some(name) if !name.is_empty() && name == key => 2,
            _ if query.len() >= 6 && id(n).starts_with(query) => 1,
            _ => 0,
        };
        let best = nodes.iter().map(|n| score(n)).max().unwrap_or(0);
        matches = nodes.iter().copied().filter(|n| best > 0 && score(n) == best).collect();
    }
    let label = |n: &Value| match n["displayName"].as_str() {
        Some(name) if !name.is_empty() => format!("{name} [{}]", id(n)),
        _ => id(n),
    };
    if matches.is_empty() {
        let known: Vec<String> = nodes.iter().map(|n| label(n)).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        return Err(NodeInputError::UnknownNode { query: query.to_string(), known });
    }
    let connected: Vec<&Value> = matches.iter().copied().filter(|n| n["connected"] == Value::Bool(true)).collect();
    let matches = if connected.is_empty() { matches } else { connected };
    match matches.as_slice() {
        [only] => Ok(id(only)),
        _ => {
            let matches = matches.iter().map(|n| label(n)).collect::<Vec<_>>().join(", ");
            Err(NodeInputError::AmbiguousNode { query: query.to_string(), matches })
        }
    }
}

/// A display name as a lookup key: lowercase, runs of other characters as one `-`.
fn node_key(name: &str) -> String {
    let mut key = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        match c.is_alphanumeric() {
            true => key.push(c),
            false if !key.is_empty() && !key.ends_with('-') => key.push('-'),
            false => {}
        }
    }
    key.trim_end_matches('-').to_string()
}

/// Pending rows with both a `requestId` and a `nodeId` (OpenClaw drops the others).
fn pending_rows(payload: &Value) -> Vec<Value> {
    rows(&payload["pending"]).filter(|r| r["requestId"].is_string() && r["nodeId"].is_string()).cloned().collect()
}

fn render_nodes(payload: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(&payload["nodes"])
        .map(|n| {
            let commands = n["commands"].as_array().map_or(0, Vec::len).to_string();
            vec![text(&n["nodeId"]), text(&n["displayName"]), text(&n["platform"]), yes_no(&n["connected"]), commands]
        })
        .collect();
    match rows.is_empty() {
        true => "No nodes.".to_string(),
        false => table(&["NODE", "NAME", "PLATFORM", "CONNECTED", "COMMANDS"], &rows).trim_end().to_string(),
    }
}

fn render_pending(payload: &Value, now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = rows(&payload["pending"])
        .map(|r| {
            let age = r["ts"].as_u64().map(|ts| age(now_ms.saturating_sub(ts))).unwrap_or_else(|| "-".into());
            let commands = r["commands"].as_array().map_or(0, Vec::len).to_string();
            let scopes = list(&r["requiredApproveScopes"]);
            vec![text(&r["requestId"]), short(&text(&r["nodeId"])), text(&r["displayName"]), commands, scopes, age]
        })
        .collect();
    match rows.is_empty() {
        true => "No pending node pairing requests.".to_string(),
        false => {
            let headers = ["REQUEST", "NODE", "NAME", "COMMANDS", "APPROVE SCOPES", "AGE"];
            table(&headers, &rows).trim_end().to_string()
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89";
    const ID_B: &str = "bb44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89";

    fn node(id: &str, name: &str, connected: bool) -> Value {
        json!({"nodeId": id, "displayName": name, "connected": connected, "remoteIp": "10.0.0.7"})
    }

    fn resolve(nodes: &[Value], query: &str) -> Result<String, NodeInputError> {
        resolve_node(&nodes.iter().collect::<Vec<_>>(), query)
    }

    #[test]
    fn node_resolution_tries_id_ip_name_then_prefix_and_prefers_connected() {
        let nodes = [node(ID_A, "Build Box", false), node(ID_B, "vm", true)];
        assert_eq!(resolve(&nodes, ID_A), Ok(ID_A.to_string()));
        assert_eq!(resolve(&nodes, "build-box"), Ok(ID_A.to_string()), "names match normalized");
        assert_eq!(resolve(&nodes, "  VM "), Ok(ID_B.to_string()));
        assert_eq!(resolve(&nodes, "ac44c9"), Ok(ID_A.to_string()), "an id prefix of 6+ characters");
        assert_eq!(resolve(&nodes, "10.0.0.7"), Ok(ID_B.to_string()), "same ip: the connected node wins");
        let twins = [node(ID_A, "vm", false), node(ID_B, "vm", true)];
        assert_eq!(resolve(&twins, "vm"), Ok(ID_B.to_string()));
    }

    #[test]
    fn node_resolution_reports_unknown_ambiguous_and_empty() {
        let nodes = [node(ID_A, "vm", true), node(ID_B, "vm", true)];
        let err = resolve(&nodes, "vm").unwrap_err();
        assert!(matches!(&err, NodeInputError::AmbiguousNode { matches, .. } if matches.contains(ID_B)), "{err}");
        let err = resolve(&nodes, "ac44").unwrap_err();
        let known = format!("vm [{ID_A}], vm [{ID_B}]");
        assert_eq!(err, NodeInputError::UnknownNode { query: "ac44".into(), known });
        assert_eq!(
            resolve(&[], "x").unwrap_err().to_string(),
            "unknown node \"x\" (known: none); see `hivegate nodes list`"
        );
        assert_eq!(resolve(&nodes, " "), Err(NodeInputError::EmptyNode));
    }

    #[test]
    fn only_64_hex_characters_skip_the_node_list() {
        assert!(is_node_id(ID_A) && is_node_id(&ID_A.to_ascii_uppercase()));
        assert!(!is_node_id("vm") && !is_node_id(&ID_A[..63]) && !is_node_id(&format!("{}z", &ID_A[..63])));
    }

    #[test]
    fn params_must_be_a_json_object() {
        assert_eq!(parse_params(r#"{"bins":["sh"]}"#), Ok(json!({"bins": ["sh"]})));
        assert_eq!(parse_params("{}"), Ok(json!({})));
        assert!(matches!(parse_params("{bins:"), Err(NodeInputError::ParamsNotJson(_))));
        assert_eq!(parse_params("[1]"), Err(NodeInputError::ParamsNotObject("an array")));
        assert_eq!(
            parse_params("null").unwrap_err().to_string(),
            "--params must be a json object, not null; pass an object such as '{}'"
        );
    }

    #[test]
    fn node_keys_are_lowercase_with_single_dashes() {
        assert_eq!(node_key("  Build  Box (2) "), "build-box-2");
        assert_eq!(node_key("--"), "");
    }

    #[test]
    fn pending_drops_rows_without_ids_and_renders_a_table() {
        let payload = json!({"pending": [
            {"requestId": "ce85156a", "nodeId": ID_A, "displayName": "vm", "commands": ["system.which"],
             "requiredApproveScopes": ["operator.pairing", "operator.admin"], "ts": 0},
            {"requestId": "no-node"}
        ]});
        let pending = pending_rows(&payload);
        assert_eq!(pending.len(), 1);
        let expected = "\
REQUEST   NODE           NAME  COMMANDS  APPROVE SCOPES                   AGE
ce85156a  ac44c9ac84bf…  vm    1         operator.pairing,operator.admin  5s ago";
        assert_eq!(render_pending(&json!({ "pending": pending }), 5_000), expected);
        assert_eq!(render_nodes(&json!({"nodes": []})), "No nodes.");
    }
}
