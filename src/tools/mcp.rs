//! MCP servers: tool servers declared once in the config and shared by every session
//! of the gateway, through the official Rust SDK (`rmcp`).
//!
//! A server is started on first use (the first model call of a session whose agent
//! allows it, which needs its tool list), over stdio (a child process) or streamable
//! HTTP. Its tools are offered to the model as `server__tool` with the server's own
//! schemas. A call has a timeout; its result is cut to [`MAX_RESULT_BYTES`], said when
//! cut. A server that stopped (crashed, or closed its end) is started again at the next
//! use; a call it was answering fails with an error that says so (it is not repeated:
//! it may have done its work). A stdio server's environment is the same reduced one
//! `exec` gets, plus what its config's `env` gives, so no gateway secret reaches it by
//! accident.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::exec::ALLOWED_ENV;
use crate::model::ToolSpec;

/// How an exposed tool name joins server and tool.
pub const SEPARATOR: &str = "__";
/// The most text of one tool result that reaches the model.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// How long a server may take to start and list its tools.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// An error's text from a server, at most this long.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;
/// The most tools of one server offered to the model, and the longest description and
/// schema of one: a server's list goes into every request of the agents that use it.
pub const MAX_TOOLS: usize = 128;
pub const MAX_DESCRIPTION_BYTES: usize = 2 * 1024;
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// A call's timeout when the server's config gives none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One `[mcp_servers.NAME]` of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub name: String,
    pub transport: Transport,
    pub call_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Transport {
    /// A child process speaking MCP on its stdin and stdout.
    Stdio { command: String, args: Vec<String>, env: BTreeMap<String, String> },
    /// Streamable HTTP at this URL.
    Http { url: String },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum McpError {
    #[error("no MCP server '{0}' is configured")]
    Unknown(String),
    #[error("MCP server '{server}' could not start: {reason}")]
    Start { server: String, reason: String },
    #[error("MCP server '{server}' has no tool '{tool}'; it has: {available}")]
    NoSuchTool { server: String, tool: String, available: String },
    #[error("MCP server '{server}' did not answer {tool} within {seconds} s")]
    Timeout { server: String, tool: String, seconds: u64 },
    #[error("MCP server '{server}' failed on {tool}: {reason}; it is started again at its next use")]
    Stopped { server: String, tool: String, reason: String },
    #[error("MCP server '{server}' refused {tool}: {reason}")]
    Refused { server: String, tool: String, reason: String },
}

/// Which servers' tools an agent may call: `mcp:NAME` (all of a server's tools) or
/// `NAME__tool` (one), from its `[tools] allow`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowed {
    /// (server, one tool or all of them)
    entries: Vec<(String, Option<String>)>,
    /// `[tools] deny` entries: never allowed, whatever `allow` says.
    denied: Vec<(String, Option<String>)>,
    /// Servers named in `[tools] delegate`: the agent holds `mcp.call` to pass on, and
    /// calls none of their tools itself.
    delegated: Vec<String>,
}

impl Allowed {
    /// An `allow` entry naming MCP tools, or `None` for any other name.
    pub fn entry(name: &str) -> Option<(String, Option<String>)> {
        match name.strip_prefix("mcp:") {
            Some(server) => Some((server.to_string(), None)),
            None => split_name(name).map(|(server, tool)| (server.to_string(), Some(tool.to_string()))),
        }
    }

    pub fn push(&mut self, entry: (String, Option<String>)) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    pub fn deny(&mut self, entry: (String, Option<String>)) {
        self.denied.push(entry);
    }

    pub fn delegate(&mut self, server: String) {
        self.delegated.push(server);
    }

    /// Nothing allowed or delegated: the agent needs no `mcp.call`.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.delegated.is_empty()
    }

    /// The servers whose tools it may call, once each.
    pub fn servers(&self) -> Vec<&str> {
        let mut servers: Vec<&str> = self.entries.iter().map(|(s, _)| s.as_str()).collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }

    /// Every server its definition names (allowed, denied or delegated): each must be
    /// configured.
    pub fn named(&self) -> impl Iterator<Item = &str> {
        let listed = self.entries.iter().chain(&self.denied).map(|(s, _)| s.as_str());
        listed.chain(self.delegated.iter().map(String::as_str))
    }

    pub fn allows(&self, server: &str, tool: &str) -> bool {
        let matches = |(s, t): &(String, Option<String>)| s == server && t.as_deref().is_none_or(|t| t == tool);
        self.entries.iter().any(matches) && !self.denied.iter().any(matches)
    }

    /// How the definition names them, for messages.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(s, t)| t.as_ref().map_or_else(|| format!("mcp:{s}"), |t| format!("{s}{SEPARATOR}{t}")))
            .collect()
    }
}

/// One tool of a server, as the model sees it.
#[derive(Clone, Debug)]
pub struct McpTool {
    /// The server's own name for it.
    pub name: String,
    pub spec: ToolSpec,
}

/// The servers of a gateway.
#[derive(Default)]
pub struct McpServers {
    servers: BTreeMap<String, Server>,
    /// Each agent's whole tool list (its own tools and its servers'), made once.
    specs: DashMap<Arc<str>, Arc<[ToolSpec]>>,
}

struct Server {
    config: ServerConfig,
    running: Mutex<Option<Arc<Running>>>,
}

struct Running {
    client: RunningService<RoleClient, ()>,
    tools: Arc<[McpTool]>,
}

impl McpServers {
    pub fn new(configs: Vec<ServerConfig>) -> McpServers {
        let servers = configs
            .into_iter()
            .map(|config| (config.name.clone(), Server { config, running: Mutex::new(None) }))
            .collect();
        McpServers { servers, specs: DashMap::new() }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    pub fn is_configured(&self, name: &str) -> bool {
        self.servers.contains_key(name)
    }

    /// An agent's tool list once it is known (see [`McpServers::load_specs`]).
    pub fn specs(&self, agent: &str) -> Option<Arc<[ToolSpec]>> {
        self.specs.get(agent).map(|s| s.clone())
    }

    /// Start the servers an agent uses, and remember its tool list: its own tools,
    /// then each allowed server tool.
    pub async fn load_specs(&self, agent: &crate::agent::AgentDef) -> Result<Arc<[ToolSpec]>, McpError> {
        let mut specs: Vec<ToolSpec> = agent.tool_specs.to_vec();
        for server in agent.mcp.servers() {
            // An allow-list entry may name a server this config does not have: checked
            // when the agents are loaded, and here again for a gateway built by hand.
            let running = self.running(server).await?;
            specs.extend(running.tools.iter().filter(|t| agent.mcp.allows(server, &t.name)).map(|t| t.spec.clone()));
        }
        let specs: Arc<[ToolSpec]> = specs.into();
        self.specs.insert(agent.id.clone(), specs.clone());
        Ok(specs)
    }

    /// Call `tool` of `server` with `arguments` (a JSON object).
    pub async fn call(&self, server: &str, tool: &str, arguments: Value) -> Result<Value, McpError> {
        let config = &self.server(server)?.config;
        let running = self.running(server).await?;
        if !running.tools.iter().any(|t| t.name == tool) {
            let names = running.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
            let available = cut_to(names, MAX_ERROR_BYTES).0;
            return Err(McpError::NoSuchTool { server: server.into(), tool: tool.into(), available });
        }
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(McpError::Refused {
                    server: server.into(),
                    tool: tool.into(),
                    reason: format!("arguments must be a JSON object, not {other}"),
                })
            }
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let call = running.client.call_tool(params);
        let result = match tokio::time::timeout(config.call_timeout, call).await {
            Err(_) => {
                // A server that does not answer in time may be stuck: the next use starts
                // a fresh one.
                self.forget(server, &running).await;
                let seconds = config.call_timeout.as_secs();
                return Err(McpError::Timeout { server: server.into(), tool: tool.into(), seconds });
            }
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                let reason = cut_to(e.message.to_string(), MAX_ERROR_BYTES).0;
                return Err(McpError::Refused { server: server.into(), tool: tool.into(), reason });
            }
            Ok(Err(e)) => {
                self.forget(server, &running).await;
                let reason = cut_to(e.to_string(), MAX_ERROR_BYTES).0;
                return Err(McpError::Stopped { server: server.into(), tool: tool.into(), reason });
            }
            Ok(Ok(result)) => result,
        };
        let (text, truncated) =
            cut_to(result.content.iter().map(describe).collect::<Vec<_>>().join("\n"), MAX_RESULT_BYTES);
        let status = if result.is_error == Some(true) { "error" } else { "ok" };
        let mut value = json!({"status": status, "content": text});
        if status == "error" {
            value["error"] = json!(format!("{server}{SEPARATOR}{tool} reported an error"));
        }
        if truncated {
            value["truncated"] = json!(true);
            value["note"] = json!(format!("the result was cut at {} KiB", MAX_RESULT_BYTES / 1024));
        }
        Ok(value)
    }

    fn server(&self, name: &str) -> Result<&Server, McpError> {
        self.servers.get(name).ok_or_else(|| McpError::Unknown(name.into()))
    }

    /// The server running, started (again) if it is not.
    async fn running(&self, name: &str) -> Result<Arc<Running>, McpError> {
        let server = self.server(name)?;
        let mut running = server.running.lock().await;
        // A server that exited closes its end: the service loop stops (the transport is
        // closed) without the service itself being cancelled, so both are looked at.
        if let Some(live) = running.as_ref().filter(|r| !r.client.is_closed() && !r.client.peer().is_transport_closed())
        {
            return Ok(live.clone());
        }
        let started = tokio::time::timeout(START_TIMEOUT, start(&server.config))
            .await
            .map_err(|_| McpError::Start {
                server: name.into(),
                reason: format!("it did not answer within {} s", START_TIMEOUT.as_secs()),
            })?
            .map_err(|reason| McpError::Start { server: name.into(), reason: cut_to(reason, MAX_ERROR_BYTES).0 })?;
        let started = Arc::new(started);
        *running = Some(started.clone());
        Ok(started)
    }

    /// Drop a server that failed, if it is still the one running.
    async fn forget(&self, name: &str, failed: &Arc<Running>) {
        if let Ok(server) = self.server(name) {
            let mut running = server.running.lock().await;
            if running.as_ref().is_some_and(|r| Arc::ptr_eq(r, failed)) {
                *running = None;
            }
        }
    }
}

/// Start `config`'s server, list the tools it would offer (their exposed names), and
/// stop it: what `hivegate doctor` checks. The caller bounds the time it takes.
pub async fn probe(config: &ServerConfig) -> Result<Vec<String>, String> {
    let running = start(config).await?;
    let names = running.tools.iter().map(|t| t.spec.name.to_string()).collect();
    // Cancelling ends the service loop, whose transport then stops a stdio server.
    let _ = running.client.cancel().await;
    tokio::task::yield_now().await;
    Ok(names)
}

/// Connect to a server and list its tools.
async fn start(config: &ServerConfig) -> Result<Running, String> {
    let client = match &config.transport {
        Transport::Stdio { command, args, env } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).env_clear();
            for name in ALLOWED_ENV {
                if let Some(value) = std::env::var_os(name) {
                    cmd.env(name, value);
                }
            }
            cmd.envs(env);
            // The builder's own stderr setting wins over the command's.
            let (transport, _) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run {command}: {e}"))?;
            ().serve(transport).await.map_err(|e| e.to_string())?
        }
        Transport::Http { url } => {
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            ().serve(transport).await.map_err(|e| e.to_string())?
        }
    };
    let listed = client.list_all_tools().await.map_err(|e| format!("listing its tools failed: {e}"))?;
    let mut tools = Vec::new();
    for tool in listed {
        let exposed = format!("{}{SEPARATOR}{}", config.name, tool.name);
        let parameters = Value::Object((*tool.input_schema).clone());
        // Providers take tool names of letters, digits, '_' and '-', up to 64: a tool
        // named otherwise would make every request of its agents fail.
        let usable = exposed.len() <= 64 && exposed.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !usable || parameters.to_string().len() > MAX_SCHEMA_BYTES || tools.len() == MAX_TOOLS {
            tracing::warn!(server = %config.name, tool = %tool.name,
                "MCP tool not offered: its name, its schema or the count of tools is past what a model request takes");
            continue;
        }
        let description = tool.description.as_deref().unwrap_or_default().to_string();
        tools.push(McpTool {
            name: tool.name.to_string(),
            spec: ToolSpec {
                name: exposed.into(),
                description: cut_to(description, MAX_DESCRIPTION_BYTES).0.into(),
                parameters,
            },
        });
    }
    Ok(Running { client, tools: tools.into() })
}

/// `server__tool` split into its parts, when the name has that shape.
pub fn split_name(exposed: &str) -> Option<(&str, &str)> {
    exposed.split_once(SEPARATOR).filter(|(server, tool)| !server.is_empty() && !tool.is_empty())
}

/// A content block as text the model reads.
fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!("[image, {}]", image.mime_type),
        ContentBlock::Audio(audio) => format!("[audio, {}]", audio.mime_type),
        ContentBlock::Resource(resource) => serde_json::to_string(&resource.resource).unwrap_or_default(),
        ContentBlock::ResourceLink(link) => format!("[resource {}]", link.uri),
        _ => "[content of a kind hivegate does not show]".to_string(),
    }
}

/// `text` cut to `max` bytes on a character boundary; whether it was cut.
fn cut_to(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_names_split_at_the_first_separator() {
        assert_eq!(split_name("fs__read_text_file"), Some(("fs", "read_text_file")));
        assert_eq!(split_name("fs__a__b"), Some(("fs", "a__b")));
        assert_eq!(split_name("read"), None);
        assert_eq!(split_name("__x"), None);
        assert_eq!(split_name("fs__"), None);
    }

    #[test]
    fn deny_wins_over_a_whole_server_allowed() {
        let mut allowed = Allowed::default();
        allowed.push(Allowed::entry("mcp:fs").unwrap());
        allowed.push(Allowed::entry("time__get_current_time").unwrap());
        allowed.deny(Allowed::entry("fs__write_file").unwrap());
        allowed.delegate("web".into());
        assert!(allowed.allows("fs", "read_text_file"));
        assert!(!allowed.allows("fs", "write_file"));
        assert!(allowed.allows("time", "get_current_time") && !allowed.allows("time", "convert_time"));
        assert!(!allowed.allows("web", "fetch"), "a delegated server is not the agent's to call");
        assert_eq!(allowed.servers(), ["fs", "time"]);
        assert_eq!(allowed.named().collect::<Vec<_>>(), ["fs", "time", "fs", "web"]);
        assert_eq!(allowed.describe(), ["mcp:fs", "time__get_current_time"]);
    }

    #[test]
    fn results_are_cut_on_a_character_boundary() {
        let (text, cut_) = cut_to("é".repeat(MAX_RESULT_BYTES), MAX_RESULT_BYTES);
        assert!(cut_ && text.len() <= MAX_RESULT_BYTES && text.chars().all(|c| c == 'é'));
        assert_eq!(cut_to("short".into(), 10), ("short".into(), false));
    }
}
