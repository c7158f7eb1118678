//! Models: the [`ModelClient`] seam, domain message types, model refs and providers.
//!
//! Domain types ([`Message`], [`ChatRequest`], [`ChatResponse`]) are what sessions speak,
//! whatever the provider's API. Each API kind keeps its wire types and their conversions
//! in its own module: [`openai`] (chat completions) and [`anthropic`] (messages), each with
//! a `stream` submodule that turns its server-sent events into a [`stream::Draft`] of the
//! domain response. [`stream`] drives any of them over a response body (bounded in bytes
//! and in idle time). [`HttpModelClient`] is the real implementation: a
//! `reqwest::Client` (a connection pool) per provider, a global limit on concurrent
//! calls, and the provider registry. [`builtin`] is the offline provider's
//! deterministic logic and [`server`] serves it over HTTP, so sessions reach it through
//! the same reqwest path as any provider. [`retry`] decides when a failed call is tried
//! again and [`pricing`] what a call cost; both are pure.

pub mod anthropic;
pub mod builtin;
mod client;
pub mod openai;
pub mod pricing;
pub mod retry;
pub mod server;
pub mod stream;
pub mod thinking;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use client::HttpModelClient;

/// `provider/model`, split at the first `/`: `cherry-nvidia/qwen/qwen3-235b-a22b` is
/// provider `cherry-nvidia`, model `qwen/qwen3-235b-a22b`. At most [`MAX_MODEL_REF`]
/// bytes and no control characters: a model's spawn arguments name one, and it goes
/// into logs, the store (Postgres refuses a NUL in text) and providers' requests.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    full: Arc<str>,
    split: usize,
}

/// The longest model ref, in bytes.
pub const MAX_MODEL_REF: usize = 256;

impl ModelRef {
    pub fn parse(s: &str) -> Result<ModelRef, ModelError> {
        let s = s.trim();
        let sane = s.len() <= MAX_MODEL_REF && !s.chars().any(char::is_control);
        match s.find('/') {
            Some(split) if sane && split > 0 && split + 1 < s.len() => Ok(ModelRef { full: s.into(), split }),
            _ => Err(ModelError::BadModelRef(crate::protocol::clip(&s.escape_debug().to_string()))),
        }
    }

    pub fn provider(&self) -> &str {
        &self.full[..self.split]
    }

    pub fn model(&self) -> &str {
        &self.full[self.split + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.full, f)
    }
}

impl Serialize for ModelRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ModelRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One message of a transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        /// Boxed text (16 bytes, not 24), so that with the boxed reasoning an assistant
        /// turn is no larger than a tool result and messages keep their size.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Box<str>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        /// The provider's reasoning behind this turn, sent back with it and never shown
        /// (boxed: most turns have none, and every message is as large as this variant).
        #[serde(default, skip_serializing)]
        reasoning: Option<Box<Vec<Reasoning>>>,
    },
    Tool {
        call_id: String,
        content: String,
    },
}

/// Reasoning blocks as a turn keeps them: none at all for most turns.
pub fn boxed(reasoning: Vec<Reasoning>) -> Option<Box<Vec<Reasoning>>> {
    (!reasoning.is_empty()).then(|| Box::new(reasoning))
}

/// A block of a model's reasoning as the provider returned it: Anthropic's `thinking`
/// (with the signature that lets it be sent back) or `redacted_thinking`. The API wants
/// it back unchanged with the turn that made it when that turn called tools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reasoning {
    Thought { text: String, signature: String },
    Redacted { data: String },
}

/// A tool call as the model made it; `arguments` is the raw JSON text the model wrote,
/// parsed (and possibly rejected) by the tool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A tool offered to the model: name, description, JSON schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolSpec {
    /// Static for the built-in tools; an MCP server's tools are named at run time.
    pub name: std::borrow::Cow<'static, str>,
    pub description: std::borrow::Cow<'static, str>,
    pub parameters: serde_json::Value,
}

#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub model: ModelRef,
    pub messages: Vec<Message>,
    pub tools: Arc<[ToolSpec]>,
    /// Where the answer's text goes as it streams in, if anywhere.
    pub stream_to: Option<Arc<dyn TextSink>>,
    /// The reasoning level the spawn asked for ([`thinking`] says what each API does).
    pub thinking: Option<thinking::Thinking>,
}

/// Receives a streamed answer's text as it arrives, piece by piece (the operator's
/// view, an agent's event stream). Called on the model call's task: it must not block.
pub trait TextSink: Send + Sync + fmt::Debug {
    fn text(&self, delta: &str);
}

/// What calls spent: tokens as the provider reported them, and their cost where the
/// model has a price ([`pricing`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens the provider served from its cache (part of `prompt_tokens`).
    #[serde(default)]
    pub cached_prompt_tokens: u64,
    /// USD, summed over the priced calls.
    #[serde(default)]
    pub cost_usd: f64,
    /// Calls on models without a price: while any, the cost is not known.
    #[serde(default)]
    pub unpriced_calls: u32,
}

/// Token counts come from providers, so they are untrusted: all arithmetic on them
/// saturates (a provider claiming `u64::MAX` tokens exhausts any budget, and never
/// wraps one back to plenty).
impl Usage {
    pub fn tokens(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage { prompt_tokens, completion_tokens, ..Usage::default() }
    }

    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.cached_prompt_tokens = self.cached_prompt_tokens.saturating_add(other.cached_prompt_tokens);
        self.cost_usd += other.cost_usd;
        self.unpriced_calls = self.unpriced_calls.saturating_add(other.unpriced_calls);
    }

    /// The cost, when every call was priced.
    pub fn known_cost(&self) -> Option<f64> {
        (self.unpriced_calls == 0).then_some(self.cost_usd)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    /// The provider's reasoning blocks, kept with the turn for the next request (boxed:
    /// a call in flight holds room for its response).
    pub reasoning: Option<Box<Vec<Reasoning>>>,
    pub usage: Usage,
    /// What happened on the way (retries taken), for the session's notices. Empty, and
    /// so free, on the usual path.
    pub notices: Vec<String>,
}

/// A notice for an answer the provider cut at its token limit (OpenAI's
/// `finish_reason: "length"`, Anthropic's `stop_reason: "max_tokens"`).
pub fn cut_notice(stop_reason: &str) -> Option<String> {
    matches!(stop_reason, "length" | "max_tokens").then(|| {
        format!("the answer was cut at the provider's token limit (stop reason {stop_reason}); it may be incomplete")
    })
}

/// A notice for an answer without token counts: budgets cannot count it.
pub fn unmetered_notice(usage: &Usage) -> Option<String> {
    (usage.total() == 0).then(|| {
        "the provider reported no token usage for this call; token and cost budgets do not count it".to_string()
    })
}

impl ChatResponse {
    /// Add the notices the answer itself calls for (cut short, no usage).
    pub fn with_answer_notices(mut self, stop_reason: Option<&str>) -> ChatResponse {
        self.notices.extend(stop_reason.and_then(cut_notice));
        self.notices.extend(unmetered_notice(&self.usage));
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("bad model ref '{0}': expected provider/model, for example builtin/executor")]
    BadModelRef(String),
    #[error("unknown provider '{provider}' in model '{model}'; configured providers: {known}")]
    UnknownProvider { provider: String, model: String, known: String },
    #[error("provider '{provider}' needs its API key in the environment variable {env}")]
    MissingApiKey { provider: String, env: String },
    #[error("provider {provider} answered HTTP {status}: {message}")]
    Http { provider: String, status: u16, message: String },
    #[error("could not reach provider {provider}: {message}")]
    Transport { provider: String, message: String },
    #[error("provider {provider} sent a response this runtime cannot read: {message}")]
    Decode { provider: String, message: String },
    #[error("provider {provider} sent a response larger than {limit} bytes (limits.max_model_response_bytes)")]
    TooLarge { provider: String, limit: usize },
    /// A streamed answer that failed part way: an error event, an early end, a stall.
    #[error("provider {provider}'s stream failed: {message}")]
    Stream { provider: String, message: String },
    /// The last failure after retries; `notices` says what was tried.
    #[error("{last}")]
    Retried { last: Box<ModelError>, notices: Vec<String> },
}

impl ModelError {
    /// A few words for a notice: `HTTP 503`, or the whole message for anything else.
    pub fn short_reason(&self) -> String {
        match self {
            ModelError::Http { status, .. } => format!("HTTP {status}"),
            ModelError::Stream { message, .. } => format!("a broken stream ({message})"),
            ModelError::Retried { last, .. } => last.short_reason(),
            other => other.to_string(),
        }
    }

    /// The error itself and the notices of the retries before it.
    pub fn into_parts(self) -> (ModelError, Vec<String>) {
        match self {
            ModelError::Retried { last, notices } => (*last, notices),
            other => (other, Vec::new()),
        }
    }
}

/// The seam between sessions and model providers. The real implementation is
/// [`HttpModelClient`]; benches plug in their own to measure the runtime alone.
pub trait ModelClient: Send + Sync + 'static {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>>;

    /// Fails when a spawn names a model this client cannot serve, so an explicit model
    /// override is refused at spawn time instead of silently replaced.
    fn check_model(&self, model: &ModelRef) -> Result<(), ModelError>;
}

/// The wire API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Api {
    /// `POST {base_url}/chat/completions`, bearer key.
    #[serde(rename = "openai-completions")]
    OpenAiCompletions,
    /// `POST {base_url}/messages`, `x-api-key` and `anthropic-version`.
    #[serde(rename = "anthropic-messages")]
    AnthropicMessages,
}

/// The answer length asked of APIs that require one (Anthropic's `max_tokens`).
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// A configured provider. The API key is read from the environment once, at config
/// load; `Debug` never shows it.
#[derive(Clone)]
pub struct Provider {
    pub base_url: String,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    pub api: Api,
    /// When and how often failed calls are retried.
    pub retry: retry::RetryPolicy,
    /// Ask for a streamed answer (server-sent events); on by default.
    pub stream: bool,
    /// The longest answer asked for, where the API requires a bound.
    pub max_tokens: u32,
    /// Certificates trusted for this provider besides the public roots (`ca_file`).
    pub ca: Option<TrustedCa>,
}

/// A private CA a provider's TLS certificate chains to: the PEM file it came from and
/// its certificates, trusted for that provider only.
#[derive(Clone)]
pub struct TrustedCa {
    pub path: std::path::PathBuf,
    pub certificates: Vec<reqwest::Certificate>,
}

impl fmt::Debug for TrustedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedCa").field("path", &self.path).field("certificates", &self.certificates.len()).finish()
    }
}

impl Provider {
    /// A provider with the defaults: streaming, [`DEFAULT_MAX_TOKENS`], default retries.
    pub fn new(api: Api, base_url: impl Into<String>, api_key: Option<String>) -> Provider {
        Provider {
            base_url: base_url.into(),
            api_key,
            api_key_env: None,
            api,
            retry: retry::RetryPolicy::default(),
            stream: true,
            max_tokens: DEFAULT_MAX_TOKENS,
            ca: None,
        }
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_env", &self.api_key_env)
            .field("api", &self.api)
            .field("retry", &self.retry)
            .field("stream", &self.stream)
            .field("max_tokens", &self.max_tokens)
            .field("ca", &self.ca)
            .finish()
    }
}

/// Providers by name.
#[derive(Clone, Debug, Default)]
pub struct Providers(BTreeMap<String, Provider>);

impl Providers {
    pub fn insert(&mut self, name: impl Into<String>, provider: Provider) {
        self.0.insert(name.into(), provider);
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.0.get(name)
    }

    /// Providers with their names, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Provider)> {
        self.0.iter().map(|(name, provider)| (name.as_str(), provider))
    }

    pub fn names(&self) -> String {
        self.0.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    /// The provider for `model`, ready to call, or why not.
    pub fn resolve(&self, model: &ModelRef) -> Result<&Provider, ModelError> {
        let provider = self.get(model.provider()).ok_or_else(|| ModelError::UnknownProvider {
            provider: model.provider().to_string(),
            model: model.to_string(),
            known: self.names(),
        })?;
        match (&provider.api_key, &provider.api_key_env) {
            (None, Some(env)) => {
                Err(ModelError::MissingApiKey { provider: model.provider().to_string(), env: env.clone() })
            }
            _ => Ok(provider),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every transcript message is as large as the largest variant, and a parked session
    /// holds a few: an assistant turn's text and reasoning are boxed so that it is no
    /// larger than a tool result (two strings and the tag).
    #[test]
    fn an_assistant_turn_does_not_make_messages_larger() {
        assert_eq!(std::mem::size_of::<Message>(), 56);
    }

    #[test]
    fn model_refs_split_at_the_first_slash() {
        let r = ModelRef::parse("cherry-nvidia/qwen/qwen3-235b-a22b").unwrap();
        assert_eq!((r.provider(), r.model()), ("cherry-nvidia", "qwen/qwen3-235b-a22b"));
        let r = ModelRef::parse("builtin/brain").unwrap();
        assert_eq!((r.provider(), r.model()), ("builtin", "brain"));
        for bad in ["", "brain", "/brain", "builtin/", " / "] {
            assert_eq!(ModelRef::parse(bad), Err(ModelError::BadModelRef(bad.trim().to_string())), "{bad:?}");
        }
        // No control characters (shown escaped), and no more than 256 bytes (shown cut).
        assert_eq!(ModelRef::parse("fake/x\0"), Err(ModelError::BadModelRef("fake/x\\0".to_string())));
        let long = format!("fake/{}", "m".repeat(MAX_MODEL_REF));
        let Err(ModelError::BadModelRef(shown)) = ModelRef::parse(&long) else { panic!("{long} was accepted") };
        assert_eq!(shown.chars().count(), 129);
        assert!(ModelRef::parse(&long[..MAX_MODEL_REF]).is_ok());
    }

    #[test]
    fn api_keys_never_show_in_debug() {
        let provider = Provider {
            api_key_env: Some("K".into()),
            ..Provider::new(Api::AnthropicMessages, "http://x", Some("sk-secret".into()))
        };
        assert!(!format!("{provider:?}").contains("sk-secret"));
    }
}
