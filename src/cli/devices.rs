//! `hivegate devices`: list, approve, reject and remove device pairings and rotate or revoke
//! device tokens on a running gateway through the operator client ([`crate::client`]), one
//! WebSocket per RPC with the least scope each call needs, as `openclaw devices` does. Also holds
//! the connection flags, exit-code mapping and table rendering that `hivegate nodes` shares.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{ClientError, OperatorClient};
use crate::config::Config;

pub(super) const PAIRING: &[&str] = &["operator.pairing"];
const ADMIN: &[&str] = &["operator.admin"];

/// How to reach the gateway; shared by `hivegate devices` and `hivegate nodes`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Gateway WebSocket URL (default: ws://<gateway.bind from the config>/).
    #[arg(long, global = true, value_name = "WS_URL")]
    url: Option<String>,
    /// Shared gateway token. Default: the configured gateway token, sent only to the
    /// configured gateway; a --url for any other gateway needs an explicit --token
    /// (`--token ''` for none).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print the gateway's response payload as JSON.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Deadline for each gateway call, in milliseconds.
    #[arg(long, global = true, value_name = "MS", default_value_t = 30_000)]
    pub(super) timeout: u64,
}

impl GatewayArgs {
    pub(super) fn url(&self) -> Option<&String> {
        self.url.as_ref()
    }

    pub(super) fn token(&self) -> Option<&String> {
        self.token.as_ref()
    }

    /// Flags built by a command that names its own (`agent`, whose `--timeout` is the run's).
    pub(super) fn new(url: Option<String>, token: Option<String>, json: bool, timeout_ms: u64) -> GatewayArgs {
        GatewayArgs { url, token, json, timeout: timeout_ms }
    }

    /// The client these flags describe; the config is read only for what the flags leave out.
    pub(super) fn client(&self, config_path: Option<&Path>) -> anyhow::Result<OperatorClient> {
        let (url, token) = self.target(config_path)?;
        Ok(OperatorClient::new(url, token)?.with_timeout(Duration::from_millis(self.timeout)))
    }

    /// The gateway URL and the token to send it: the flags, else the config.
    pub(super) fn target(&self, config_path: Option<&Path>) -> anyhow::Result<(String, Option<String>)> {
        let config = match (&self.url, &self.token) {
            (Some(_), Some(_)) => None,
            _ => Some(Config::load(config_path)?),
        };
        let url = match (&self.url, &config) {
            (Some(url), _) => url.clone(),
            (None, Some(config)) => default_url(config.bind),
            (None, None) => anyhow::bail!("no gateway url; pass --url ws://host:port/"),
        };
        let token = match (&self.token, &config) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(config)) => configured_token_for(&url, config)?,
            (None, None) => None,
        };
        Ok((url, token))
    }
}

/// The configured gateway token, if `url` is the configured gateway. The token is never
/// sent anywhere else: another URL gets it only through an explicit `--token`.
fn configured_token_for(url: &str, config: &Config) -> anyhow::Result<Option<String>> {
    let Some(token) = &config.gateway_token else { return Ok(None) };
    if same_gateway(url, config.bind) {
        return Ok(Some(token.expose().to_string()));
    }
    anyhow::bail!(
        "--url {url} is not the configured gateway ({}); the configured gateway token is only sent there. \
         Pass --token for this gateway (--token '' to connect without one)",
        default_url(config.bind)
    )
}

/// Whether `url` points at the gateway listening on `bind` (loopback names count as the
/// same host for a loopback or wildcard bind).
fn same_gateway(url: &str, bind: SocketAddr) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return false };
    if parsed.scheme() != "ws" || parsed.port_or_known_default() != Some(bind.port()) {
        return false;
    }
    let host_ip = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain("localhost")) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return false,
    };
    let bind_ip = bind.ip();
    host_ip == bind_ip || (host_ip.is_loopback() && (bind_ip.is_loopback() || bind_ip.is_unspecified()))
}

/// `ws://` + the bind address; a wildcard bind is reached on loopback.
fn default_url(bind: SocketAddr) -> String {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("ws://{}/", SocketAddr::new(ip, bind.port()))
}

/// Print a command's result and return its exit code: 0 ok, 1 when the gateway refused (the
/// handshake or the RPC; an "unknown requestId" gets the hint). Other failures (no gateway, timeout, bad frame) go up as errors (exit 2).
pub(super) fn finish(
    json: bool,
    result: Result<Value, ClientError>,
    human: impl FnOnce(&Value) -> String,
    unknown_request_hint: Option<String>,
) -> anyhow::Result<i32> {
    match result {
        Ok(payload) if json => super::print_json(&payload).map(|()| 0),
        Ok(payload) => {
            outln!("{}", human(&payload));
            Ok(0)
        }
        Err(ClientError::Rpc { code, message, .. }) => {
            eprintln!("hivegate: {code}: {message}");
            if let Some(hint) =
                unknown_request_hint.filter(|_| message.to_ascii_lowercase().contains("unknown requestid"))
            {
                eprintln!("hivegate: {hint}");
            }
            Ok(1)
        }
        Err(err @ ClientError::HandshakeRefused { .. }) => {
            eprintln!("hivegate: {err}");
            Ok(1)
        }
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(subcommand)]
    command: DevicesCommand,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// List pending pairing requests and paired devices.
    List,
    /// Approve a pending pairing request (retries with operator.admin when the gateway asks for it).
    Approve { request_id: String },
    /// Reject a pending pairing request.
    Reject { request_id: String },
    /// Remove a paired device.
    Remove { device_id: String },
    /// Mint a new token for a paired device's role (the old one stops working).
    Rotate {
        #[arg(long = "device")]
        device_id: String,
        #[arg(long)]
        role: String,
    },
    /// Revoke a paired device's token for a role; its live connections with that token close.
    Revoke {
        #[arg(long = "device")]
        device_id: String,
        #[arg(long)]
        role: String,
    },
}

pub async fn run(config_path: Option<PathBuf>, args: DevicesArgs) -> anyhow::Result<i32> {
    let client = args.gateway.client(config_path.as_deref())?;
    let json = args.gateway.json;
    let list_hint = Some("run `hivegate devices list` for the current request ids".to_string());
    match args.command {
        DevicesCommand::List => {
            let result = client.call(PAIRING, "device.pair.list", json!({})).await;
            finish(json, result, |p| render_list(p, now_ms()), None)
        }
        DevicesCommand::Approve { request_id } => {
            let result = approve(&client, &request_id).await;
            let human =
                |p: &Value| format!("approved device {} (request {request_id})", text(&p["device"]["deviceId"]));
            finish(json, result, human, list_hint)
        }
        DevicesCommand::Reject { request_id } => {
            let result = client.call(PAIRING, "device.pair.reject", json!({ "requestId": request_id })).await;
            finish(json, result, |_| format!("rejected pairing request {request_id}"), list_hint)
        }
        DevicesCommand::Remove { device_id } => {
            let result =
                with_admin_retry(&client, PAIRING, "device.pair.remove", json!({ "deviceId": device_id })).await;
            finish(json, result, |_| format!("removed device {device_id}"), None)
        }
        DevicesCommand::Rotate { device_id, role } => {
            let params = json!({ "deviceId": device_id, "role": role });
            let result = with_admin_retry(&client, token_scopes(&role), "device.token.rotate", params).await;
            let human = |p: &Value| {
                let shown = if p.get("token").is_some() { " (--json shows the new token)" } else { "" };
                format!("rotated the {role} token of device {device_id}{shown}")
            };
            finish(json, result, human, None)
        }
        DevicesCommand::Revoke { device_id, role } => {
            let params = json!({ "deviceId": device_id, "role": role });
            let result = with_admin_retry(&client, token_scopes(&role), "device.token.revoke", params).await;
            finish(json, result, |_| format!("revoked the {role} token of device {device_id}"), None)
        }
    }
}

/// `device.pair.approve` with `operator.pairing`, then once more with `operator.admin` when the
/// gateway says the approval needs more (approving a node-role device does in OpenClaw).
async fn approve(client: &OperatorClient, request_id: &str) -> Result<Value, ClientError> {
    with_admin_retry(client, PAIRING, "device.pair.approve", json!({ "requestId": request_id })).await
}

/// Call with the least scopes, then once more adding `operator.admin` when the gateway says
/// the grant being touched needs it (the caller must hold every scope of a grant it approves,
/// rotates, revokes or removes).
async fn with_admin_retry(
    client: &OperatorClient,
    scopes: &[&str],
    method: &str,
    params: Value,
) -> Result<Value, ClientError> {
    match client.call(scopes, method, params.clone()).await {
        Err(err) if needs_admin_retry(&err) && !scopes.contains(&"operator.admin") => {
            let mut wider = scopes.to_vec();
            wider.push("operator.admin");
            client.call(&wider, method, params).await
        }
        other => other,
    }
}

/// Managing an operator token needs `operator.pairing`; any other role's token needs
/// `operator.admin`, which is what OpenClaw's CLI asks for (its gateway denies less).
fn token_scopes(role: &str) -> &'static [&'static str] {
    match role {
        "operator" => PAIRING,
        _ => ADMIN,
    }
}

fn needs_admin_retry(err: &ClientError) -> bool {
    matches!(err, ClientError::Rpc { message, .. }
        if message.to_ascii_lowercase().contains("device pairing approval denied"))
}

/// The two tables of `devices list`.
fn render_list(payload: &Value, now_ms: u64) -> String {
    let pending: Vec<Vec<String>> = rows(&payload["pending"])
        .map(|r| {
            let age = r["ts"].as_u64().map(|ts| age(now_ms.saturating_sub(ts))).unwrap_or_else(|| "-".into());
            vec![
                text(&r["requestId"]),
                short(&text(&r["deviceId"])),
                roles(r),
                list(&r["scopes"]),
                text(&r["displayName"]),
                age,
            ]
        })
        .collect();
    let paired: Vec<Vec<String>> = rows(&payload["paired"])
        .map(|d| {
            vec![text(&d["deviceId"]), roles(d), list(&d["scopes"]), text(&d["displayName"]), yes_no(&d["connected"])]
        })
        .collect();
    let mut out = String::new();
    match pending.is_empty() {
        true => out.push_str("Pending: none\n"),
        false => {
            out.push_str("Pending:\n");
            out.push_str(&table(&["REQUEST", "DEVICE", "ROLE", "SCOPES", "NAME", "AGE"], &pending));
        }
    }
    match paired.is_empty() {
        true => out.push_str("\nPaired: none"),
        false => {
            out.push_str("\nPaired:\n");
            out.push_str(table(&["DEVICE", "ROLES", "SCOPES", "NAME", "CONNECTED"], &paired).trim_end());
        }
    }
    out
}

/// The objects of a JSON array (a missing array reads as empty).
pub(super) fn rows(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten().filter(|v| v.is_object())
}

/// A string field, or `-`.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "-".into(),
    }
}

/// A string array joined with commas, or `-`.
pub(super) fn list(value: &Value) -> String {
    let items: Vec<&str> = value.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    match items.is_empty() {
        true => "-".into(),
        false => items.join(","),
    }
}

pub(super) fn yes_no(value: &Value) -> String {
    match value.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

fn roles(row: &Value) -> String {
    match row["roles"].as_array().is_some_and(|r| !r.is_empty()) {
        true => list(&row["roles"]),
        false => text(&row["role"]),
    }
}

/// The first 12 characters of a long id.
pub(super) fn short(id: &str) -> String {
    match id.char_indices().nth(12) {
        Some((end, _)) => format!("{}…", &id[..end]),
        None => id.to_string(),
    }
}

pub(super) fn age(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Left-aligned columns separated by two spaces, one line per row.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_retry_happens_only_on_an_approval_denied_rpc_error() {
        let rpc = |message: &str| ClientError::Rpc {
            method: "device.pair.approve".into(),
            code: "INVALID_REQUEST".into(),
            message: message.into(),
            details: Value::Null,
        };
        assert!(needs_admin_retry(&rpc("device pairing approval denied")));
        assert!(needs_admin_retry(&rpc("Device Pairing Approval Denied: node role needs operator.admin")));
        assert!(!needs_admin_retry(&rpc("unknown requestId")));
        let refused = ClientError::HandshakeRefused {
            code: "INVALID_REQUEST".into(),
            message: "device pairing approval denied".into(),
            details: Value::Null,
            close: None,
        };
        assert!(!needs_admin_retry(&refused));
    }

    #[test]
    fn only_the_configured_gateway_counts_as_the_same_gateway() {
        let bind: SocketAddr = "127.0.0.1:18789".parse().unwrap();
        assert!(same_gateway("ws://127.0.0.1:18789/", bind));
        assert!(same_gateway("ws://localhost:18789", bind));
        assert!(same_gateway("ws://[::1]:18789/", bind));
        assert!(same_gateway("ws://127.0.0.1:18789/", "0.0.0.0:18789".parse().unwrap()));
        assert!(!same_gateway("ws://127.0.0.1:18790/", bind));
        assert!(!same_gateway("ws://evil.example:18789/", bind));
        assert!(!same_gateway("ws://10.0.0.5:18789/", bind));
        assert!(!same_gateway("ws://user@127.0.0.1.evil.example:18789/", bind));
        assert!(!same_gateway("not a url", bind));
    }

    #[test]
    fn token_management_asks_for_admin_unless_the_role_is_operator() {
        assert_eq!(token_scopes("operator"), ["operator.pairing"]);
        assert_eq!(token_scopes("node"), ["operator.admin"]);
    }

    #[test]
    fn the_default_url_is_the_bind_address_with_wildcards_on_loopback() {
        assert_eq!(default_url("127.0.0.1:18789".parse().unwrap()), "ws://127.0.0.1:18789/");
        assert_eq!(default_url("0.0.0.0:9000".parse().unwrap()), "ws://127.0.0.1:9000/");
        assert_eq!(default_url("[::]:9000".parse().unwrap()), "ws://[::1]:9000/");
    }

    #[test]
    fn devices_list_renders_pending_and_paired_tables() {
        let payload = json!({
            "pending": [{"requestId": "a2afb3d2-1b96-483c-b922-8a2a130b25d2",
                         "deviceId": "ac44c9ac84bf0c83249621990497691e9b3e9a879ba0870d767e18894cfc8b89",
                         "displayName": "vm", "role": "node", "roles": ["node"], "scopes": [], "ts": 1_000}],
            "paired": [{"deviceId": "d1", "roles": ["operator"], "scopes": ["operator.read", "operator.write"],
                        "connected": true}]
        });
        let expected = "\
Pending:
REQUEST                               DEVICE         ROLE  SCOPES  NAME  AGE
a2afb3d2-1b96-483c-b922-8a2a130b25d2  ac44c9ac84bf…  node  -       vm    2m ago

Paired:
DEVICE  ROLES     SCOPES                        NAME  CONNECTED
d1      operator  operator.read,operator.write  -     yes";
        assert_eq!(render_list(&payload, 121_000), expected);
        assert_eq!(render_list(&json!({}), 0), "Pending: none\n\nPaired: none");
    }
}
