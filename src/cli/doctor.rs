//! `hivegate doctor`: checks the setup as `serve` and `run` would use it and says, for
//! each check, ok, warn or fail and what to fix: the config file parses and validates,
//! the agents load and name configured providers, each provider's API key variable is
//! set (the secret is never printed) and its base URL answers HTTP, the state directory
//! is writable, the port is free or held by a hivegate, the MCP servers start and list
//! their tools. Each check's verdict is a pure function of what was probed; the probes
//! (bounded in time, run at once) are thin around them. Exit 0 when nothing failed
//! (warnings allowed), 1 when something did, 2 on bad input (the config itself).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::config::{Config, BUILTIN_PROVIDER};
use crate::tools::mcp::ServerConfig;

#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 when every check is ok (warnings allowed), 1 when a check failed, \
                        2 when the config cannot be read or is invalid. Secrets are never printed: a key \
                        check says only whether its variable is set.")]
pub struct DoctorArgs {
    /// Print the checks as one JSON object: {ok, exitCode, counts, checks: [{name, status, detail, fix}]}.
    #[arg(long)]
    json: bool,
    /// Seconds a provider's base URL and the port's /health may take to answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    timeout: f64,
    /// Seconds an MCP server may take to start and list its tools.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    mcp_timeout: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status: Level::Ok, detail: detail.into(), fix: None }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), status: Level::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), status: Level::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ok: bool,
    pub exit_code: i32,
    pub counts: Counts,
    pub checks: Vec<Check>,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
}

impl Report {
    /// The report of `checks`; `bad_input` when the config itself could not be used.
    pub fn new(checks: Vec<Check>, bad_input: bool) -> Report {
        let mut counts = Counts::default();
        for check in &checks {
            match check.status {
                Level::Ok => counts.ok += 1,
                Level::Warn => counts.warn += 1,
                Level::Fail => counts.fail += 1,
            }
        }
        let exit_code = match (bad_input, counts.fail) {
            (true, _) => 2,
            (false, 0) => 0,
            (false, _) => 1,
        };
        Report { ok: exit_code == 0, exit_code, counts, checks }
    }

    /// One line per check (its fix under it), then the counts.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!("{:<4}  {:<width$}  {}\n", check.status.as_str(), check.name, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("{:<4}  {:<width$}  fix: {fix}\n", "", ""));
            }
        }
        let c = &self.counts;
        let warnings = if c.warn == 1 { "warning" } else { "warnings" };
        out.push_str(&format!("\n{} ok, {} {warnings}, {} failed\n", c.ok, c.warn, c.fail));
        out
    }
}

/// What a provider's base URL did when asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Reach {
    /// It answered with this HTTP status (any answer means it is there).
    Answered(u16),
    TimedOut,
    /// It could not be reached: why.
    Unreachable(String),
}

/// What was found on the gateway's port.
#[derive(Clone, Debug, PartialEq)]
pub enum Port {
    /// Port 0: any free port is taken at start.
    Any,
    Free,
    /// A hivegate holds it (its /health answered) with this version.
    Hivegate(String),
    /// Something else holds it (what it answered, or that it did not).
    Taken(String),
    /// It cannot be listened on: why.
    Refused(String),
}

/// What was found where the state directory should be.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Writable,
    /// It does not exist yet; its nearest existing parent is writable.
    Creatable(PathBuf),
    NotADirectory,
    /// It (or its nearest existing parent) is not writable: which, and why.
    NotWritable(PathBuf, String),
}

/// The config file check; `origin` is the file read, `None` for the defaults.
pub fn config_check(origin: Option<&Path>, loaded: Result<(), String>) -> Check {
    let what = origin.map_or_else(|| "built-in defaults (no config file)".to_string(), |p| p.display().to_string());
    match loaded {
        Ok(()) => Check::ok("config", format!("{what} parses and is valid")),
        Err(e) => Check::fail(
            "config",
            e,
            "correct the file as the error says (the keys are in the README's configuration section), or point --config at another",
        ),
    }
}

/// The agents check: they load, and every model they name is on a configured provider.
pub fn agents_check(ids: Result<Vec<String>, String>, unconfigured: &[(String, String)]) -> Check {
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => return Check::fail("agents", e, "correct the agent file the error names"),
    };
    match unconfigured.first() {
        None => Check::ok("agents", format!("{} agents load: {}", ids.len(), ids.join(", "))),
        Some((agent, model)) => {
            let provider = model.split('/').next().unwrap_or_default();
            Check::fail(
                "agents",
                format!("agent '{agent}' uses model {model}, but no provider '{provider}' is configured"),
                format!("add [providers.{provider}] with base_url (and api_key_env) to the config, or change the agent's model"),
            )
        }
    }
}

/// The key check of provider `name`: its variable (if it names one) must be set;
/// `used` says whether an agent's model is on it (unused: a warning only).
pub fn key_check(name: &str, key_env: Option<&str>, key_set: bool, used: bool) -> Check {
    let check = format!("provider {name} key");
    match (key_env, key_set) {
        (None, _) => Check::ok(check, "no api_key_env: the provider is called without a key"),
        (Some(var), true) => Check::ok(check, format!("{var} is set")),
        (Some(var), false) => {
            let detail = format!("{var} is not set (or is empty)");
            let fix = format!("export {var}=<the API key for {name}> before starting hivegate");
            match used {
                true => Check::fail(check, detail, fix),
                false => Check::warn(check, format!("{detail}; no agent uses {name} now"), fix),
            }
        }
    }
}

/// The reachability check of provider `name` at `url`.
pub fn reach_check(name: &str, url: &str, reach: &Reach, timeout: Duration) -> Check {
    let check = format!("provider {name} reachable");
    let fix = format!("check providers.{name}.base_url and the network (a proxy, a firewall, the service being up)");
    match reach {
        Reach::Answered(status) => Check::ok(check, format!("{url} answered (HTTP {status})")),
        Reach::TimedOut => {
            Check::fail(check, format!("cannot reach {url}: no answer within {:.1} s", timeout.as_secs_f64()), fix)
        }
        Reach::Unreachable(why) => Check::fail(check, format!("cannot reach {url}: {why}"), fix),
    }
}

/// The port check for `bind`.
pub fn port_check(bind: SocketAddr, port: &Port) -> Check {
    let fix =
        format!("stop what listens on {bind}, or choose another port (gateway.bind in the config, or serve --port)");
    match port {
        Port::Any => Check::ok("port", format!("{bind}: port 0, any free port is taken at start")),
        Port::Free => Check::ok("port", format!("{bind} is free")),
        Port::Hivegate(version) => {
            Check::ok("port", format!("{bind} is held by a running hivegate {version} (its /health answers)"))
        }
        Port::Taken(what) => Check::fail("port", format!("{bind} is in use by something else: {what}"), fix),
        Port::Refused(why) => Check::fail("port", format!("cannot listen on {bind}: {why}"), fix),
    }
}

/// The gateway token check: needed to listen beyond loopback.
pub fn token_check(bind: SocketAddr, has_token: bool) -> Check {
    match (has_token, bind.ip().is_loopback()) {
        (true, _) => Check::ok("gateway token", "a shared gateway token is configured"),
        (false, true) => Check::warn(
            "gateway token",
            format!("no gateway token: on {bind} any local process is trusted as the owner"),
            "export HIVEGATE_GATEWAY_TOKEN=$(openssl rand -hex 24) (or name another variable with [gateway] token_env)",
        ),
        (false, false) => Check::fail(
            "gateway token",
            format!("no gateway token, and {bind} is not loopback: serve refuses to start"),
            "export HIVEGATE_GATEWAY_TOKEN=$(openssl rand -hex 24), or bind to 127.0.0.1",
        ),
    }
}

/// The state directory check for `dir`.
pub fn state_check(dir: &Path, state: &State) -> Check {
    let name = "state directory";
    let shown = dir.display();
    let fix = format!(
        "create {shown} writable by this user, or choose another with [gateway] state_dir or HIVEGATE_STATE_DIR"
    );
    match state {
        State::Writable => Check::ok(name, format!("{shown} is writable")),
        State::Creatable(parent) => Check::ok(
            name,
            format!("{shown} does not exist yet; it is created at the first start ({} is writable)", parent.display()),
        ),
        State::NotADirectory => Check::fail(name, format!("{shown} is not a directory"), fix),
        State::NotWritable(at, why) => Check::fail(name, format!("{} is not writable: {why}", at.display()), fix),
    }
}

/// The check of MCP server `name`: it started and listed `tools` in time.
pub fn mcp_check(name: &str, listed: &Result<Vec<String>, String>) -> Check {
    let check = format!("mcp {name}");
    match listed {
        Ok(tools) if tools.is_empty() => Check::warn(
            check,
            "started, but offers no tool a model request can take",
            format!("check the server's own configuration (mcp_servers.{name})"),
        ),
        Ok(tools) => Check::ok(check, format!("started and listed {} tools", tools.len())),
        Err(why) => Check::fail(
            check,
            why.clone(),
            format!(
                "check mcp_servers.{name} (the command and its args, or the url), and that the server is installed"
            ),
        ),
    }
}

pub async fn run(config_path: Option<PathBuf>, args: DoctorArgs) -> anyhow::Result<i32> {
    let bound = |flag: &str, seconds: f64| {
        crate::config::timeout_from_secs(seconds).map_err(|e| anyhow::anyhow!("--{flag} {e}"))
    };
    let timeout = bound("timeout", args.timeout)?;
    let mcp_timeout = bound("mcp-timeout", args.mcp_timeout)?;
    let origin = Config::file(config_path.as_deref());
    let config = match Config::load(config_path.as_deref()) {
        Ok(config) => config,
        Err(e) => return print(&Report::new(vec![config_check(origin.as_deref(), Err(e.to_string()))], true), &args),
    };
    let mut checks = vec![config_check(origin.as_deref(), Ok(()))];
    let (agents_check, used) = check_agents(&config);
    checks.push(agents_check);
    checks.push(token_check(config.bind, config.gateway_token.is_some()));
    for (name, provider) in config.providers.iter() {
        let key_set = provider.api_key.is_some();
        checks.push(key_check(name, provider.api_key_env.as_deref(), key_set, used.iter().any(|u| u == name)));
    }
    checks.push(Check::ok(format!("provider {BUILTIN_PROVIDER}"), "offline and built in: nothing to check"));
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| anyhow::anyhow!("cannot make an HTTP client: {e}"))?;
    let reaches = futures_util::future::join_all(config.providers.iter().map(|(name, provider)| {
        let http = http.clone();
        async move { reach_check(name, &provider.base_url, &reach(&http, &provider.base_url).await, timeout) }
    }));
    let mcps = futures_util::future::join_all(
        config
            .mcp_servers
            .iter()
            .map(|server| async move { mcp_check(&server.name, &probe_mcp(server, mcp_timeout).await) }),
    );
    let (reaches, port, mcps) = tokio::join!(reaches, probe_port(&http, config.bind), mcps);
    checks.extend(reaches);
    checks.push(state_check(&config.state_dir, &probe_state(&config.state_dir)));
    checks.push(port_check(config.bind, &port));
    checks.extend(mcps);
    print(&Report::new(checks, false), &args)
}

/// Print the report; a reader that went away (`| head`) is not a reason to panic.
fn print(report: &Report, args: &DoctorArgs) -> anyhow::Result<i32> {
    use std::io::Write as _;
    let text = match args.json {
        true => format!("{}\n", serde_json::to_string_pretty(report)?),
        false => report.render(),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(report.exit_code)
}

/// The agents check, and the providers the agents' models are on.
fn check_agents(config: &Config) -> (Check, Vec<String>) {
    let agents = match super::load_agents(config) {
        Ok(agents) => agents,
        Err(e) => return (agents_check(Err(format!("{e:#}")), &[]), Vec::new()),
    };
    let mut used: Vec<String> = Vec::new();
    let mut unconfigured = Vec::new();
    for agent in agents.iter() {
        let models = std::iter::once(&agent.model).chain(&agent.fallbacks).chain(&agent.subagents.model);
        for model in models.filter(|m| m.provider() != BUILTIN_PROVIDER) {
            match config.providers.get(model.provider()) {
                Some(_) => used.push(model.provider().to_string()),
                None => unconfigured.push((agent.id.to_string(), model.to_string())),
            }
        }
    }
    let ids = agents.ids().into_iter().map(str::to_string).collect();
    (agents_check(Ok(ids), &unconfigured), used)
}

/// Ask `url` anything: an answer of any status means it is reachable.
async fn reach(http: &reqwest::Client, url: &str) -> Reach {
    match http.get(url).send().await {
        Ok(response) => Reach::Answered(response.status().as_u16()),
        Err(e) if e.is_timeout() => Reach::TimedOut,
        Err(e) => Reach::Unreachable(root_cause(&e)),
    }
}

/// The innermost error's text ("Connection refused (os error 111)", not reqwest's
/// "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn probe_port(http: &reqwest::Client, bind: SocketAddr) -> Port {
    if bind.port() == 0 {
        return Port::Any;
    }
    match std::net::TcpListener::bind(bind) {
        Ok(_) => Port::Free,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let mut at = bind;
            if at.ip().is_unspecified() {
                at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            match http.get(format!("http://{at}/health")).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Option<serde_json::Value> = response.json().await.ok();
                    let version = body.as_ref().filter(|b| b.get("ok").is_some_and(serde_json::Value::is_boolean));
                    match version.and_then(|b| b.get("version")).and_then(serde_json::Value::as_str) {
                        Some(version) => Port::Hivegate(version.to_string()),
                        None => Port::Taken(format!("GET /health answered HTTP {status}, not as hivegate does")),
                    }
                }
                Err(e) => Port::Taken(format!("it does not answer GET /health over HTTP ({})", root_cause(&e))),
            }
        }
        Err(e) => Port::Refused(e.to_string()),
    }
}

fn probe_state(dir: &Path) -> State {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => State::NotADirectory,
        Ok(_) => match writable(dir) {
            Ok(()) => State::Writable,
            Err(why) => State::NotWritable(dir.to_path_buf(), why),
        },
        Err(_) => {
            let parent = dir
                .ancestors()
                .skip(1)
                .map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p })
                .find(|p| p.exists())
                .unwrap_or(Path::new("."));
            match writable(parent) {
                Ok(()) if parent.is_dir() => State::Creatable(parent.to_path_buf()),
                Ok(()) => State::NotADirectory,
                Err(why) => State::NotWritable(parent.to_path_buf(), why),
            }
        }
    }
}

/// Whether a file can be made in `dir` (it is removed at once).
fn writable(dir: &Path) -> Result<(), String> {
    tempfile::Builder::new().prefix(".hivegate-doctor-").tempfile_in(dir).map(drop).map_err(|e| e.to_string())
}

async fn probe_mcp(server: &ServerConfig, bound: Duration) -> Result<Vec<String>, String> {
    match tokio::time::timeout(bound, crate::tools::mcp::probe(server)).await {
        Ok(listed) => listed,
        Err(_) => Err(format!("did not start and list its tools within {:.0} s", bound.as_secs_f64())),
    }
}

#[cfg(test)]
mod tests;
