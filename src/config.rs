//! Configuration: the raw TOML shape (serde, `deny_unknown_fields`) validated once into
//! [`Config`]. This module reads the runtime's settings from the environment: provider
//! API keys (by the variable each provider names), the gateway token
//! (`HIVEGATE_GATEWAY_TOKEN` unless `gateway.token_env` names another),
//! `HIVEGATE_STATE_DIR`, `HIVEGATE_DATABASE_URL`, `HIVEGATE_CONFIG` and `HOME`. Elsewhere
//! only [`crate::telemetry`] (`RUST_LOG`, `OTEL_*`), `hivegate worker`
//! (`HIVEGATE_GATEWAY_KEY`) and the work tools, which pass an allowed few on to the
//! processes they start, read it.
//!
//! ```toml
//! [gateway]
//! bind = "127.0.0.1:18789"
//! agents_dir = "agents"
//! token_env = "HIVEGATE_GATEWAY_TOKEN"    # shared operator/node token, from the environment
//! state_dir = "/var/lib/hivegate"         # $HIVEGATE_STATE_DIR wins; default ~/.hivegate
//! allowed_origins = ["https://control.example"]   # browser origins allowed to connect
//! max_payload_bytes = 26214400            # largest frame after hello-ok (policy.maxPayload)
//! max_buffered_bytes = 52428800           # unread output before a slow-consumer close
//! max_preauth_connections = 256           # unauthenticated sockets at once, in all
//! max_preauth_connections_per_address = 32
//! default_agent = "brain"                 # what an operator's `agent` runs when it names none
//! shutdown_grace_seconds = 30             # SIGTERM: how long runs get to reach a step boundary
//! threads = 4                  # session threads and HTTP workers; default: one per core
//!
//! [store]                      # default: SQLite in state_dir (hivegate.sqlite3)
//! url = "postgres://hivegate:PASSWORD@db.example:5432/hivegate"   # Postgres instead;
//!                              # HIVEGATE_DATABASE_URL overrides it, and `serve
//!                              # --database-url` both. No TLS yet: sslmode=disable|prefer
//!
//! [recovery]                   # runs left running by a crash or a stop resume at the next start
//! stale_after_seconds = 86400  # a run started longer ago than this is finalized `interrupted`
//! max_resumes = 3              # resumed this often without progress: tombstoned (`error`)
//! max_delivery_attempts = 3    # a child's result delivered again at most this often
//!
//! [workspace]
//! root = "/srv/project"        # where work tools act; default: `run`/`demo` the current
//!                              # directory, `serve` the `workspace` directory in state_dir
//!
//! [mcp_servers.fs]            # an MCP server shared by every session (started on first use)
//! command = "npx"              # stdio; or url = "http://host/mcp" (streamable HTTP)
//! args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/project"]
//! env = { }                    # added to the reduced environment exec gets
//! timeout_seconds = 60         # one call's limit
//!
//! [pairing]
//! auto_approve_local = false   # silently pair devices on a direct loopback connection
//!
//! [limits]
//! max_spawn_depth = 3
//! max_children_per_session = 64
//! max_concurrent_model_calls = 32
//! max_sessions = 4096
//! max_retained_sessions = 10000    # ended sessions kept for history and trees
//! default_run_timeout_seconds = 600
//! model_request_timeout_seconds = 300
//! max_model_response_bytes = 8388608  # a provider's answer beyond this fails the call
//! max_retry_wait_seconds = 60         # a longer Retry-After fails over instead of waiting
//! model_idle_timeout_seconds = 180    # a provider silent this long fails the call
//!
//! [providers.cherry-nvidia]
//! base_url = "https://example.invalid/v1"
//! api_key_env = "CHERRY_API_KEY"
//! api = "openai-completions"          # or "anthropic-messages"
//! max_retries = 3                     # on 429, 408, 5xx and transport errors
//! stream = true                       # server-sent events; false asks for one JSON answer
//! max_tokens = 8192                   # the answer bound the anthropic-messages API requires
//! ca_file = "certs/provider-ca.pem"   # optional: PEM CA certificates trusted for this
//!                                     # provider only (relative to this file)
//!
//! [providers.cherry-nvidia.models."qwen/qwen3-235b-a22b"]
//! input_per_mtok = 0.2                # USD per million tokens
//! output_per_mtok = 0.6
//! cached_input_per_mtok = 0.05        # optional
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::pricing::{Price, Pricing};
use crate::model::retry::RetryPolicy;
use crate::model::{Api, Provider, Providers, TrustedCa};
pub use crate::store::DatabaseUrl;

/// The name of the builtin offline provider; its base URL is the gateway's own.
pub const BUILTIN_PROVIDER: &str = "builtin";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    pairing: RawPairing,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    recovery: RawRecovery,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    workspace: RawWorkspace,
    #[serde(default)]
    mcp_servers: BTreeMap<String, RawMcpServer>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcpServer {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    url: Option<String>,
    timeout_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecovery {
    stale_after_seconds: Option<f64>,
    max_resumes: Option<u32>,
    max_delivery_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    bind: Option<String>,
    agents_dir: Option<PathBuf>,
    token_env: Option<String>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    max_payload_bytes: Option<usize>,
    max_buffered_bytes: Option<usize>,
    max_preauth_connections: Option<usize>,
    max_preauth_connections_per_address: Option<usize>,
    default_agent: Option<String>,
    shutdown_grace_seconds: Option<f64>,
    threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPairing {
    #[serde(default)]
    auto_approve_local: bool,
}

/// Secrets are the wire's type: `Debug` redacts them and there is no `PartialEq`, so
/// they are only compared in constant time (`hub::auth::secrets_match`).
pub use crate::protocol::Secret;

/// The longest run timeout anything may ask for (a model, the CLI or the config).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Seconds as a positive, finite duration no longer than [`MAX_TIMEOUT`]; the error says
/// what was wrong. The one conversion for every timeout that comes from outside, so no
/// value can overflow a `Duration` or an `Instant`.
pub fn timeout_from_secs(seconds: f64) -> Result<Duration, String> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("must be a positive number of seconds, got {seconds}"));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d <= MAX_TIMEOUT => Ok(d),
        _ => Err(format!("must be at most {} seconds, got {seconds}", MAX_TIMEOUT.as_secs())),
    }
}

/// The environment variable with the Postgres URL of the durable store.
pub const DATABASE_URL_ENV: &str = "HIVEGATE_DATABASE_URL";

/// The default environment variable for the gateway token.
pub const TOKEN_ENV: &str = "HIVEGATE_GATEWAY_TOKEN";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_spawn_depth: Option<u32>,
    max_children_per_session: Option<usize>,
    max_concurrent_model_calls: Option<usize>,
    max_sessions: Option<usize>,
    max_retained_sessions: Option<usize>,
    default_run_timeout_seconds: Option<f64>,
    model_request_timeout_seconds: Option<f64>,
    max_model_response_bytes: Option<usize>,
    max_retry_wait_seconds: Option<f64>,
    model_idle_timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    base_url: String,
    api_key_env: Option<String>,
    /// Retries of a failed call (429, 408, 5xx, transport) before giving up.
    max_retries: Option<u32>,
    /// Prices by model (the part after `provider/`), USD per million tokens.
    #[serde(default)]
    models: BTreeMap<String, RawPrice>,
    #[serde(default = "default_api")]
    api: Api,
    stream: Option<bool>,
    max_tokens: Option<u32>,
    /// A PEM file of CA certificates to trust for this provider (a private CA).
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: Option<f64>,
}

fn default_api() -> Api {
    Api::OpenAiCompletions
}

/// A provider's `ca_file`, read and parsed: relative paths are relative to the config
/// file, and the file must hold at least one PEM certificate.
fn trusted_ca(name: &str, base_url: &str, origin: &str, file: PathBuf) -> Result<TrustedCa, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid(format!("providers.{name}.ca_file {why}"));
    if !base_url.starts_with("https://") {
        return Err(invalid(format!(
            "is set but base_url {base_url} is not https://; a CA is only used for TLS, so remove ca_file or use https"
        )));
    }
    let path = match Path::new(origin).parent() {
        Some(dir) if file.is_relative() && !dir.as_os_str().is_empty() => dir.join(file),
        _ => file,
    };
    let shown = path.display();
    let pem = std::fs::read(&path)
        .map_err(|e| invalid(format!("{shown} cannot be read ({e}); give the path of the provider's CA in PEM")))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| invalid(format!("{shown} is not PEM ({e}); give the provider's CA certificate in PEM")))?;
    if certificates.is_empty() {
        return Err(invalid(format!(
            "{shown} holds no certificate; give a PEM file with a -----BEGIN CERTIFICATE----- block"
        )));
    }
    Ok(TrustedCa { path, certificates })
}

/// Runtime limits. Every one is finite; exceeding one gives an error naming it.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_spawn_depth: u32,
    pub max_children_per_session: usize,
    pub max_concurrent_model_calls: usize,
    pub max_sessions: usize,
    /// Ended sessions kept in the registry (for history and trees); oldest go first.
    pub max_retained_sessions: usize,
    pub default_run_timeout: Duration,
    pub model_request_timeout: Duration,
    /// A provider's response body beyond this many bytes fails the call.
    pub max_model_response_bytes: usize,
    /// A `Retry-After` longer than this is not waited for: the call fails (over).
    pub max_retry_wait: Duration,
    /// A provider that sends nothing for this long (no bytes, not even a keep-alive)
    /// fails the call.
    pub model_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_spawn_depth: 3,
            max_children_per_session: 64,
            max_concurrent_model_calls: 32,
            max_sessions: 4096,
            max_retained_sessions: 10_000,
            default_run_timeout: Duration::from_secs(600),
            model_request_timeout: Duration::from_secs(300),
            max_model_response_bytes: 8 * 1024 * 1024,
            max_retry_wait: Duration::from_secs(60),
            model_idle_timeout: Duration::from_secs(180),
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// `None`: use the agents compiled into the binary.
    pub agents_dir: Option<PathBuf>,
    pub limits: Limits,
    /// Configured providers, without `builtin` (added when its server is up).
    pub providers: Providers,
    /// The shared gateway token; `None` means token auth is off (only device tokens).
    pub gateway_token: Option<Secret>,
    /// Prices per model, from `[providers.NAME.models."MODEL"]`.
    pub pricing: Pricing,
    /// Where durable state (the SQLite database) lives. Empty means a fresh temporary
    /// directory owned by the runtime and removed with it (demo, run, tests).
    pub state_dir: PathBuf,
    /// The Postgres database that holds the durable state instead of SQLite in
    /// `state_dir` (`[store] url`, `HIVEGATE_DATABASE_URL`, `serve --database-url`);
    /// `None`: SQLite. Its `Debug` hides the password.
    pub store_url: Option<DatabaseUrl>,
    /// Browser `Origin`s allowed to open the WebSocket besides the gateway's own (its
    /// dashboard's); any other Origin is refused.
    pub allowed_origins: Vec<String>,
    /// Silently pair new devices that connect directly over loopback (off by default).
    pub auto_approve_local: bool,
    /// WebSocket bounds: frame size after hello-ok, unread output, unauthenticated sockets.
    pub sockets: SocketLimits,
    /// The agent an operator's `agent` request runs when it names none.
    pub default_agent: String,
    /// On SIGTERM or Ctrl-C, how long running sessions get to reach a step boundary.
    pub shutdown_grace: Duration,
    /// What recovery resumes and what it finalizes.
    pub recovery: crate::store::recovery::Policy,
    /// The directory main sessions' work tools act in (`[workspace] root`); `None`: the
    /// command's default (`run` and `demo`: the current directory; `serve`: `workspace`
    /// in the state directory). Without one, no session has a workspace.
    pub workspace: Option<PathBuf>,
    /// `[mcp_servers.NAME]`: tool servers shared by every session.
    pub mcp_servers: Vec<crate::tools::mcp::ServerConfig>,
    /// Session threads (each runs whole trees: one gateway shard on its own arbiter)
    /// and HTTP workers; one per core unless `gateway.threads` says otherwise.
    pub threads: usize,
}

/// Bounds on what WebSocket peers can make the gateway hold.
#[derive(Clone, Debug, PartialEq)]
pub struct SocketLimits {
    /// The largest frame after hello-ok (advertised as `policy.maxPayload`).
    pub max_payload_bytes: usize,
    /// Output a peer has not read beyond this closes it 1008 "slow consumer"
    /// (advertised as `policy.maxBufferedBytes`).
    pub max_buffered_bytes: usize,
    pub max_preauth_connections: usize,
    pub max_preauth_connections_per_address: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_payload_bytes: crate::protocol::DEFAULT_MAX_PAYLOAD_BYTES as usize,
            max_buffered_bytes: crate::protocol::DEFAULT_MAX_BUFFERED_BYTES as usize,
            max_preauth_connections: crate::ws::gate::DEFAULT_MAX_PREAUTH,
            max_preauth_connections_per_address: crate::ws::gate::DEFAULT_MAX_PREAUTH_PER_ADDRESS,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 18789)),
            agents_dir: None,
            limits: Limits::default(),
            providers: Providers::default(),
            pricing: Pricing::default(),
            gateway_token: None,
            state_dir: PathBuf::from(".hivegate"),
            store_url: None,
            allowed_origins: Vec::new(),
            auto_approve_local: false,
            sockets: SocketLimits::default(),
            default_agent: "brain".into(),
            shutdown_grace: Duration::from_secs(30),
            recovery: crate::store::recovery::Policy::default(),
            workspace: None,
            mcp_servers: Vec::new(),
            threads: default_threads(),
        }
    }
}

/// Threads at most `gateway.threads` may ask for.
pub const MAX_THREADS: usize = 256;

/// One per core this process may use (1 when that cannot be told).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS)
}

impl Config {
    /// Load `path`, or `HIVEGATE_CONFIG`, or `./hivegate.toml` if present, else defaults.
    /// With no agents_dir configured, the `agents/` beside the config file is used, else
    /// the one in the working directory.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, |var| std::env::var(var).ok())
    }

    /// [`Config::load`], with `env` looking up the environment's variables (a map in tests).
    pub fn load_with_env(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (text, origin) = match Config::file(path) {
            Some(p) => (read(&p)?, p),
            None => (String::new(), "<defaults>".into()),
        };
        let state_dir_from_env = env("HIVEGATE_STATE_DIR").is_some_and(|d| !d.is_empty());
        let mut config = Config::from_toml(&text, &origin.display().to_string(), env)?;
        // Paths in a config file are relative to the file, wherever the command runs; a
        // config file's own `agents/` beside it is found the same way. (A path from the
        // environment is the environment's: relative to the working directory.)
        let base = origin.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf);
        if let Some(base) = base.as_ref().filter(|_| !state_dir_from_env && config.state_dir.is_relative()) {
            config.state_dir = base.join(&config.state_dir);
        }
        config.agents_dir = match (config.agents_dir.take(), &base) {
            (Some(dir), Some(base)) if dir.is_relative() => Some(base.join(dir)),
            (Some(dir), _) => Some(dir),
            (None, Some(base)) if base.join("agents").is_dir() => Some(base.join("agents")),
            (None, _) if Path::new("agents").is_dir() => Some("agents".into()),
            (None, _) => None,
        };
        config.workspace = match (config.workspace.take(), &base) {
            (Some(dir), Some(base)) if dir.is_relative() => Some(base.join(dir)),
            (workspace, _) => workspace,
        };
        if let Some(dir) = config.agents_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(ConfigError::Invalid(format!(
                "gateway.agents_dir {} is not a directory (from {})",
                dir.display(),
                origin.display()
            )));
        }
        Ok(config)
    }

    /// The file [`Config::load`] reads: `path`, or `HIVEGATE_CONFIG`, or `./hivegate.toml`
    /// if present; `None` means the built-in defaults.
    pub fn file(path: Option<&Path>) -> Option<PathBuf> {
        let env_path = std::env::var_os("HIVEGATE_CONFIG").map(PathBuf::from);
        match path.map(Path::to_path_buf).or(env_path) {
            Some(p) => Some(p),
            None if Path::new("hivegate.toml").is_file() => Some("hivegate.toml".into()),
            None => None,
        }
    }

    /// Parse and validate; `env` looks up environment variables (a map in tests).
    pub fn from_toml(text: &str, origin: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_string(), message: e.to_string() })?;
        let defaults = Config::default();
        let sockets = validate_sockets(&raw.gateway)?;
        let bind = match raw.gateway.bind {
            Some(b) => b.parse().map_err(|_| ConfigError::Invalid(format!("gateway.bind '{b}' is not host:port")))?,
            None => defaults.bind,
        };
        let limits = validate_limits(raw.limits)?;
        let recovery = validate_recovery(&raw.recovery)?;
        let shutdown_grace = match raw.gateway.shutdown_grace_seconds {
            Some(0.0) => Duration::ZERO,
            Some(s) => {
                timeout_from_secs(s).map_err(|e| ConfigError::Invalid(format!("gateway.shutdown_grace_seconds {e}")))?
            }
            None => defaults.shutdown_grace,
        };
        let threads = match raw.gateway.threads {
            Some(n) if (1..=MAX_THREADS).contains(&n) => n,
            Some(n) => {
                return Err(ConfigError::Invalid(format!(
                    "gateway.threads must be between 1 and {MAX_THREADS}, got {n}"
                )))
            }
            None => defaults.threads,
        };
        let mut providers = Providers::default();
        let mut pricing = Pricing::default();
        for (name, p) in raw.providers {
            for (model, price) in &p.models {
                let valid = |v: f64| v.is_finite() && v >= 0.0;
                if ![price.input_per_mtok, price.output_per_mtok]
                    .into_iter()
                    .chain(price.cached_input_per_mtok)
                    .all(valid)
                {
                    return Err(ConfigError::Invalid(format!(
                        "providers.{name}.models.\"{model}\": prices must be non-negative numbers (USD per million tokens)"
                    )));
                }
                let price = Price {
                    input_per_mtok: price.input_per_mtok,
                    output_per_mtok: price.output_per_mtok,
                    cached_input_per_mtok: price.cached_input_per_mtok,
                };
                pricing.insert(&format!("{name}/{model}"), price);
            }
            if name == BUILTIN_PROVIDER {
                return Err(ConfigError::Invalid(
                    "provider name 'builtin' is reserved for the offline provider".into(),
                ));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "providers.{name}.base_url must start with http:// or https://"
                )));
            }
            let api_key = p.api_key_env.as_deref().and_then(&env).filter(|k| !k.is_empty());
            let retry = RetryPolicy {
                max_retries: p.max_retries.unwrap_or(RetryPolicy::default().max_retries),
                max_wait: limits.max_retry_wait,
                ..RetryPolicy::default()
            };
            if p.max_tokens == Some(0) {
                return Err(ConfigError::Invalid(format!("providers.{name}.max_tokens must be at least 1")));
            }
            let ca = p.ca_file.map(|file| trusted_ca(&name, &p.base_url, origin, file)).transpose()?;
            providers.insert(
                name,
                Provider {
                    ca,
                    api_key_env: p.api_key_env,
                    retry,
                    stream: p.stream.unwrap_or(true),
                    max_tokens: p.max_tokens.unwrap_or(crate::model::DEFAULT_MAX_TOKENS),
                    ..Provider::new(p.api, p.base_url, api_key)
                },
            );
        }
        let token_env = raw.gateway.token_env.as_deref().unwrap_or(TOKEN_ENV);
        let gateway_token = env(token_env).filter(|t| !t.is_empty()).map(Secret::new);
        let state_dir = match (raw.gateway.state_dir, env("HIVEGATE_STATE_DIR").filter(|d| !d.is_empty())) {
            (_, Some(dir)) => PathBuf::from(dir),
            (Some(dir), None) => dir,
            (None, None) => env("HOME").map(|home| Path::new(&home).join(".hivegate")).unwrap_or(defaults.state_dir),
        };
        let store_url = match env(DATABASE_URL_ENV).filter(|u| !u.is_empty()) {
            Some(url) => {
                Some(DatabaseUrl::parse(&url).map_err(|e| ConfigError::Invalid(format!("{DATABASE_URL_ENV}: {e}")))?)
            }
            None => raw
                .store
                .url
                .map(|url| DatabaseUrl::parse(&url).map_err(|e| ConfigError::Invalid(format!("store.url: {e}"))))
                .transpose()?,
        };
        Ok(Config {
            bind,
            store_url,
            agents_dir: raw.gateway.agents_dir,
            limits,
            providers,
            pricing,
            gateway_token,
            state_dir,
            allowed_origins: raw.gateway.allowed_origins,
            default_agent: raw.gateway.default_agent.unwrap_or_else(|| "brain".into()),
            auto_approve_local: raw.pairing.auto_approve_local,
            sockets,
            shutdown_grace,
            recovery,
            workspace: raw.workspace.root,
            mcp_servers: validate_mcp(raw.mcp_servers)?,
            threads,
        })
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })
}

fn validate_sockets(raw: &RawGateway) -> Result<SocketLimits, ConfigError> {
    let d = SocketLimits::default();
    let at_least = |name: &str, v: Option<usize>, min: usize, default: usize| match v {
        Some(v) if v < min => Err(ConfigError::Invalid(format!("gateway.{name} must be at least {min}"))),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let preauth = crate::protocol::MAX_PREAUTH_PAYLOAD_BYTES;
    Ok(SocketLimits {
        max_payload_bytes: at_least("max_payload_bytes", raw.max_payload_bytes, preauth, d.max_payload_bytes)?,
        max_buffered_bytes: at_least("max_buffered_bytes", raw.max_buffered_bytes, preauth, d.max_buffered_bytes)?,
        max_preauth_connections: at_least(
            "max_preauth_connections",
            raw.max_preauth_connections,
            1,
            d.max_preauth_connections,
        )?,
        max_preauth_connections_per_address: at_least(
            "max_preauth_connections_per_address",
            raw.max_preauth_connections_per_address,
            1,
            d.max_preauth_connections_per_address,
        )?,
    })
}

fn validate_mcp(raw: BTreeMap<String, RawMcpServer>) -> Result<Vec<crate::tools::mcp::ServerConfig>, ConfigError> {
    use crate::tools::mcp::{ServerConfig, Transport, DEFAULT_CALL_TIMEOUT, SEPARATOR};
    let mut servers = Vec::new();
    for (name, server) in raw {
        let invalid = |what: String| ConfigError::Invalid(format!("mcp_servers.{name}: {what}"));
        if name.is_empty()
            || name.contains(SEPARATOR)
            || name.starts_with('_')
            || name.ends_with('_')
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "a server name is letters, digits, '-' and '_', without '{SEPARATOR}' and not starting or ending with '_' (its tools are named NAME{SEPARATOR}TOOL)"
            )));
        }
        let transport = match (server.command, server.url) {
            (Some(command), None) if !command.trim().is_empty() => {
                Transport::Stdio { command, args: server.args, env: server.env }
            }
            (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                if !server.args.is_empty() || !server.env.is_empty() {
                    return Err(invalid("args and env are for a command; a url server takes neither".into()));
                }
                Transport::Http { url }
            }
            (None, Some(url)) => return Err(invalid(format!("url must be http:// or https://, got {url:?}"))),
            _ => return Err(invalid("give exactly one of command (stdio) or url (streamable HTTP)".into())),
        };
        let call_timeout = match server.timeout_seconds {
            Some(seconds) => timeout_from_secs(seconds).map_err(|e| invalid(format!("timeout_seconds {e}")))?,
            None => DEFAULT_CALL_TIMEOUT,
        };
        servers.push(ServerConfig { name, transport, call_timeout });
    }
    Ok(servers)
}

fn validate_recovery(raw: &RawRecovery) -> Result<crate::store::recovery::Policy, ConfigError> {
    let d = crate::store::recovery::Policy::default();
    let stale_after_ms = match raw.stale_after_seconds {
        Some(s) => timeout_from_secs(s)
            .map_err(|e| ConfigError::Invalid(format!("recovery.stale_after_seconds {e}")))?
            .as_millis() as u64,
        None => d.stale_after_ms,
    };
    let at_least_one = |name: &str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(ConfigError::Invalid(format!("recovery.{name} must be at least 1"))),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    Ok(crate::store::recovery::Policy {
        stale_after_ms,
        max_resumes: at_least_one("max_resumes", raw.max_resumes, d.max_resumes)?,
        max_delivery_attempts: at_least_one(
            "max_delivery_attempts",
            raw.max_delivery_attempts,
            d.max_delivery_attempts,
        )?,
    })
}

fn validate_limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let positive = |name: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(ConfigError::Invalid(format!("limits.{name} must be at least 1"))),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let seconds = |name: &str, v: Option<f64>, default: Duration| match v {
        Some(s) => timeout_from_secs(s).map_err(|e| ConfigError::Invalid(format!("limits.{name} {e}"))),
        None => Ok(default),
    };
    Ok(Limits {
        max_spawn_depth: raw.max_spawn_depth.unwrap_or(d.max_spawn_depth),
        max_children_per_session: positive(
            "max_children_per_session",
            raw.max_children_per_session,
            d.max_children_per_session,
        )?,
        max_concurrent_model_calls: positive(
            "max_concurrent_model_calls",
            raw.max_concurrent_model_calls,
            d.max_concurrent_model_calls,
        )?,
        max_sessions: positive("max_sessions", raw.max_sessions, d.max_sessions)?,
        max_retained_sessions: positive("max_retained_sessions", raw.max_retained_sessions, d.max_retained_sessions)?,
        default_run_timeout: seconds(
            "default_run_timeout_seconds",
            raw.default_run_timeout_seconds,
            d.default_run_timeout,
        )?,
        model_request_timeout: seconds(
            "model_request_timeout_seconds",
            raw.model_request_timeout_seconds,
            d.model_request_timeout,
        )?,
        max_model_response_bytes: positive(
            "max_model_response_bytes",
            raw.max_model_response_bytes,
            d.max_model_response_bytes,
        )?,
        max_retry_wait: seconds("max_retry_wait_seconds", raw.max_retry_wait_seconds, d.max_retry_wait)?,
        model_idle_timeout: seconds(
            "model_idle_timeout_seconds",
            raw.model_idle_timeout_seconds,
            d.model_idle_timeout,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_take_keys_from_the_named_variable() {
        let text = "[providers.cherry-nvidia]\nbase_url = \"https://api.example/v1\"\napi_key_env = \"CHERRY_KEY\"\n";
        let config = Config::from_toml(text, "t", |v| (v == "CHERRY_KEY").then(|| "sk-1".to_string())).unwrap();
        let provider = config.providers.get("cherry-nvidia").unwrap();
        assert_eq!(provider.api_key.as_deref(), Some("sk-1"));
        assert_eq!((provider.api, provider.stream), (Api::OpenAiCompletions, true));
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn threads_default_to_the_cores_and_are_bounded() {
        let none = |_: &str| None;
        assert_eq!(Config::from_toml("", "t", none).unwrap().threads, default_threads());
        assert_eq!(Config::from_toml("[gateway]\nthreads = 3\n", "t", none).unwrap().threads, 3);
        for bad in ["0", "257"] {
            let err = Config::from_toml(&format!("[gateway]\nthreads = {bad}\n"), "t", none).unwrap_err().to_string();
            assert!(err.contains(&format!("gateway.threads must be between 1 and 256, got {bad}")), "{err}");
        }
    }

    #[test]
    fn a_config_files_agents_dir_is_relative_to_the_file_wherever_the_command_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("my-agents")).unwrap();
        let file = dir.path().join("hivegate.toml");
        std::fs::write(&file, "[gateway]\nagents_dir = \"my-agents\"\n").unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.agents_dir, Some(dir.path().join("my-agents")));
        // With no agents_dir, the agents/ beside the file is found.
        std::fs::create_dir(dir.path().join("agents")).unwrap();
        std::fs::write(&file, "").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().agents_dir, Some(dir.path().join("agents")));
        // A directory that is not there is said, not replaced by the shipped agents.
        std::fs::write(&file, "[gateway]\nagents_dir = \"nowhere\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("nowhere") && err.contains("is not a directory"), "{err}");
    }

    #[test]
    fn a_config_files_state_dir_is_relative_to_the_file_and_the_environments_to_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hivegate.toml");
        std::fs::write(&file, "[gateway]\nstate_dir = \"state\"\n").unwrap();
        let from_file = Config::load_with_env(Some(&file), |_| None).unwrap();
        assert_eq!(from_file.state_dir, dir.path().join("state"));
        let env = |var: &str| (var == "HIVEGATE_STATE_DIR").then(|| "elsewhere".to_string());
        assert_eq!(Config::load_with_env(Some(&file), env).unwrap().state_dir, PathBuf::from("elsewhere"));
        std::fs::write(&file, "[gateway]\nstate_dir = \"/var/lib/hg\"\n").unwrap();
        assert_eq!(Config::load_with_env(Some(&file), |_| None).unwrap().state_dir, PathBuf::from("/var/lib/hg"));
    }

    #[test]
    fn anthropic_providers_and_stream_opt_outs_are_read() {
        let text = "[providers.claude]\nbase_url = \"https://api.anthropic.com/v1\"\napi = \"anthropic-messages\"\n\
                    stream = false\nmax_tokens = 1024\n[limits]\nmodel_idle_timeout_seconds = 30\n";
        let config = Config::from_toml(text, "t", |_| None).unwrap();
        let provider = config.providers.get("claude").unwrap();
        assert_eq!((provider.api, provider.stream, provider.max_tokens), (Api::AnthropicMessages, false, 1024));
        assert_eq!(config.limits.model_idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_provider_ca_file_is_read_relative_to_the_config_file_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").unwrap();
        let origin = dir.path().join("hivegate.toml").display().to_string();
        let text = |url: &str, file: &str| format!("[providers.p]\nbase_url = \"{url}\"\nca_file = \"{file}\"\n");
        let config = Config::from_toml(&text("https://h/v1", "ca.pem"), &origin, |_| None).unwrap();
        let ca = config.providers.get("p").unwrap().ca.as_ref().unwrap();
        assert_eq!((ca.path.clone(), ca.certificates.len()), (dir.path().join("ca.pem"), 1));
        let missing = dir.path().join("missing.pem");
        for (url, file, why) in [
            (
                "http://h/v1",
                "ca.pem",
                "providers.p.ca_file is set but base_url http://h/v1 is not https://".to_string(),
            ),
            ("https://h/v1", "missing.pem", format!("providers.p.ca_file {} cannot be read", missing.display())),
            (
                "https://h/v1",
                "empty.pem",
                format!("providers.p.ca_file {} holds no certificate", dir.path().join("empty.pem").display()),
            ),
        ] {
            let err = Config::from_toml(&text(url, file), &origin, |_| None).unwrap_err().to_string();
            assert!(err.contains(&why), "{file}: {err}");
        }
    }

    #[test]
    fn mcp_servers_are_read_and_a_bad_one_is_named() {
        let config = Config::from_toml(
            "[mcp_servers.fs]\ncommand = \"npx\"\nargs = [\"-y\", \"server\"]\ntimeout_seconds = 5\n[mcp_servers.web]\nurl = \"http://127.0.0.1:9/mcp\"\n",
            "t",
            |_| None,
        )
        .unwrap();
        let names: Vec<&str> = config.mcp_servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fs", "web"]);
        assert_eq!(config.mcp_servers[0].call_timeout, Duration::from_secs(5));
        for (toml, why) in [
            ("[mcp_servers.a__b]\ncommand = \"x\"", "mcp_servers.a__b: a server name is"),
            ("[mcp_servers.x]\n", "mcp_servers.x: give exactly one of command"),
            ("[mcp_servers.x]\ncommand = \"a\"\nurl = \"http://h\"", "mcp_servers.x: give exactly one of command"),
            ("[mcp_servers.x]\nurl = \"ftp://h\"", "mcp_servers.x: url must be http"),
        ] {
            let err = Config::from_toml(toml, "t", |_| None).unwrap_err().to_string();
            assert!(err.contains(why), "{toml}: {err}");
        }
    }

    #[test]
    fn the_gateway_token_and_state_dir_come_from_the_environment() {
        let env = |v: &str| match v {
            "HIVEGATE_GATEWAY_TOKEN" => Some("t0k".to_string()),
            "HIVEGATE_STATE_DIR" => Some("/tmp/hg-state".to_string()),
            _ => None,
        };
        let config = Config::from_toml("", "t", env).unwrap();
        assert_eq!(config.gateway_token.as_ref().map(Secret::expose), Some("t0k"));
        assert_eq!(config.state_dir, PathBuf::from("/tmp/hg-state"));
        assert_eq!(format!("{:?}", config.gateway_token), "Some(Secret(<redacted>))");
        let home = |v: &str| (v == "HOME").then(|| "/home/u".to_string());
        assert_eq!(Config::from_toml("", "t", home).unwrap().state_dir, PathBuf::from("/home/u/.hivegate"));
    }

    #[test]
    fn the_store_url_comes_from_the_environment_over_the_file_and_hides_its_password() {
        let none = |_: &str| None;
        assert!(Config::from_toml("", "t", none).unwrap().store_url.is_none());
        let file = "[store]\nurl = \"postgres://hg:filepw12@db:5432/hivegate\"\n";
        let config = Config::from_toml(file, "t", none).unwrap();
        assert_eq!(config.store_url.as_ref().map(DatabaseUrl::expose), Some("postgres://hg:filepw12@db:5432/hivegate"));
        let env = |v: &str| (v == DATABASE_URL_ENV).then(|| "postgresql://hg:envpw123@other/hg".to_string());
        let config = Config::from_toml(file, "t", env).unwrap();
        assert_eq!(config.store_url.as_ref().map(DatabaseUrl::expose), Some("postgresql://hg:envpw123@other/hg"));
        let debug = format!("{config:?}");
        assert!(debug.contains("store_url: Some(DatabaseUrl(postgresql://hg:***@other/hg))"), "{debug}");
        assert!(!debug.contains("envpw123"), "{debug}");
        let empty = |v: &str| (v == DATABASE_URL_ENV).then(String::new);
        assert!(Config::from_toml(file, "t", empty).unwrap().store_url.is_some());
        for (text, env_url, expected) in [
            ("[store]\nurl = \"mysql://r:filepw12@h/d\"\n", None, "store.url: invalid database URL mysql://…"),
            ("", Some("sqlite:///tmp/x"), "HIVEGATE_DATABASE_URL: invalid database URL sqlite://…"),
            (
                "[store]\nurl = \"postgres://u:filepw12@h/d?sslmode=require\"\n",
                None,
                "store.url: the database URL postgres://u:***@h/d?sslmode=require asks for TLS",
            ),
            ("[store]\nuri = \"postgres://h/d\"\n", None, "unknown field `uri`"),
        ] {
            let env = |v: &str| if v == DATABASE_URL_ENV { env_url.map(str::to_string) } else { None };
            let err = Config::from_toml(text, "t", env).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("filepw12"), "{err}");
        }
    }

    #[test]
    fn prices_are_read_per_model_and_must_be_sane() {
        let text = "[providers.cheap]\nbase_url = \"https://x/v1\"\n[providers.cheap.models.\"qwen/qwen3\"]\ninput_per_mtok = 0.2\noutput_per_mtok = 0.6\n";
        let config = Config::from_toml(text, "t", |_| None).unwrap();
        let price = config.pricing.price(&crate::model::ModelRef::parse("cheap/qwen/qwen3").unwrap()).unwrap();
        assert_eq!((price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok), (0.2, 0.6, None));
        let bad = text.replace("0.6", "-1");
        let err = Config::from_toml(&bad, "t", |_| None).unwrap_err().to_string();
        assert!(err.contains("prices must be non-negative"), "{err}");
    }

    #[test]
    fn bad_config_is_refused_with_the_field_named() {
        let none = |_: &str| None;
        for (text, expected) in [
            ("[limits]\nmax_sessions = 0", "limits.max_sessions must be at least 1"),
            ("[limits]\ndefault_run_timeout_seconds = -1", "default_run_timeout_seconds must be a positive"),
            (
                "[limits]\ndefault_run_timeout_seconds = 1e30",
                "default_run_timeout_seconds must be at most 2592000 seconds",
            ),
            ("[gateway]\nbind = \"nope\"", "gateway.bind 'nope'"),
            ("[providers.builtin]\nbase_url = \"http://x\"", "reserved"),
            ("[providers.p]\nbase_url = \"ftp://x\"", "must start with http"),
            ("[limits]\nmax_sesions = 3", "unknown field"),
            ("[providers.p]\nbase_url = \"http://x\"\nmax_tokens = 0", "providers.p.max_tokens must be at least 1"),
            ("[providers.p]\nbase_url = \"http://x\"\napi = \"anthropic\"", "unknown variant"),
            ("[limits]\nmodel_idle_timeout_seconds = 0", "model_idle_timeout_seconds must be a positive"),
        ] {
            let err = Config::from_toml(text, "t", none).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
