//! The real [`ModelClient`]: one `reqwest::Client` per provider, posting each call to the
//! provider of its model ref, in that provider's API ([`Api`]).
//!
//! Connections: each provider's client keeps its own pool (so a provider's `ca_file` is
//! trusted for that provider alone). Over TLS the client offers HTTP/2 and HTTP/1.1 by
//! ALPN; a provider that picks h2 gets one connection that every session's calls share
//! as streams, so a child's first call rides the connection its parent's calls opened
//! instead of paying a TCP and TLS handshake. Idle connections are kept
//! ([`POOL_IDLE_TIMEOUT`]) and, on h2, pinged while idle so a connection a NAT or the
//! provider dropped is found by a ping rather than by a child's first call. Over
//! HTTP/1.1 (plain `http://` providers, the builtin one, TLS providers without h2) a
//! connection carries one call at a time: an idle one is reused, and children whose
//! first calls overlap need a connection each, which no pool can avoid. Opening
//! connections ahead of a spawn was considered and left out: it would only move the
//! same connect about a millisecond earlier (a spawn reaches the child's first
//! call that fast on loopback), and on h2 the parent's connection is already there.
//!
//! A call runs on its session's arbiter, its socket reads included. Running every call
//! on a runtime of its own was tried for spawns under load (`hivegate bench`: 1,000
//! sessions streaming, 5,000 chunks a second per session thread) and left out: the
//! loaded spawn p99 stayed where it was (four interleaved runs each, 21-38 µs on the
//! arbiters, 29-34 µs on a runtime of their own, at 312f3a3), while it would add a
//! thread hop to every call's start and end. So the reads on the session's thread are
//! not what raises that p99; the likelier cause is the two cores it shares with the
//! loopback provider's thread and the kernel's loopback work.
//!
//! The request body is serialized once per call and reused by every attempt. A streamed
//! answer (`text/event-stream`) is read by [`super::stream::read`] with the decoder of
//! the API kind; any other successful answer is read whole as the API's JSON response
//! (so a server that ignores `stream: true` still works).
//!
//! A semaphore caps concurrent model calls process-wide (`limits.max_concurrent_model_calls`);
//! a call waiting for a permit holds nothing else. Dropping the returned future (a
//! killed session) drops the request: the connection is abandoned and the permit
//! released. `in_flight` counts calls between start and drop so tests and status can
//! see that kills really abort calls.
//!
//! Failed calls are retried by the rules of [`super::retry`] (429, 408, 5xx and transport
//! errors, backoff with jitter, never sooner than `Retry-After`); each retry is a notice
//! in the response (or in [`ModelError::Retried`]). No permit is held while waiting to
//! retry.
//!
//! A streamed answer's body is read to its end after the end marker (briefly:
//! [`drain`]), so an HTTP/1.1 connection is reused rather than closed.
//!
//! Response bodies are read chunk by chunk and refused past
//! `limits.max_model_response_bytes` (a provider that never stops sending fails the call
//! with [`ModelError::TooLarge`] instead of growing memory without bound).
//!
//! Each call's outcome and time, its retries included, are counted in the runtime's
//! metrics ([`CallTimer`]); a call dropped by a kill is counted `cancelled`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;

use super::anthropic::{self, MessagesRequest, MessagesResponse};
use super::openai::stream::ChunkDecoder;
use super::openai::{CompletionRequest, CompletionResponse, ErrorBody};
use super::retry::{self, Decision, Failure};
use super::stream::{self, Draft, Fault};
use super::{Api, ChatRequest, ChatResponse, ModelClient, ModelError, ModelRef, Provider, Providers};
use crate::config::Limits;
use crate::telemetry::metrics::{CallTimer, Metrics};

/// How long an idle connection to a provider is kept for the next call.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often an idle h2 connection is pinged, and how long a ping may go unanswered
/// before the connection is dropped from the pool.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HttpModelClient {
    /// One client, and so one connection pool, per provider name.
    http: Arc<BTreeMap<String, reqwest::Client>>,
    providers: Arc<Providers>,
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    max_response_bytes: usize,
    idle_timeout: Duration,
    /// The whole call's bound (reqwest enforces it); kept to name it when it fires.
    request_timeout: Duration,
    /// Where each call's outcome and time are counted.
    metrics: Option<Arc<Metrics>>,
}

impl HttpModelClient {
    pub fn new(providers: Providers, limits: &Limits) -> anyhow::Result<Self> {
        let http = providers
            .iter()
            .map(|(name, provider)| {
                let client = http_client(provider, limits)
                    .map_err(|e| anyhow::anyhow!("the HTTP client for provider {name} could not be built: {e}"))?;
                Ok((name.to_string(), client))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(HttpModelClient {
            http: Arc::new(http),
            providers: Arc::new(providers),
            permits: Arc::new(Semaphore::new(limits.max_concurrent_model_calls.max(1))),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_response_bytes: limits.max_model_response_bytes,
            idle_timeout: limits.model_idle_timeout,
            request_timeout: limits.model_request_timeout,
            metrics: None,
        })
    }

    /// Count every call's outcome and time in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Model calls started and not yet finished or dropped.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

/// A provider's client: its own keep-alive pool, h2 by ALPN over TLS (reqwest's
/// default with the `http2` feature; nothing here forces HTTP/1.1), and its `ca_file`.
fn http_client(provider: &Provider, limits: &Limits) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(limits.model_request_timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(64)
        .tcp_keepalive(Duration::from_secs(30))
        .http2_keep_alive_interval(H2_PING_INTERVAL)
        .http2_keep_alive_timeout(H2_PING_TIMEOUT)
        .http2_keep_alive_while_idle(true);
    for certificate in provider.ca.iter().flat_map(|ca| &ca.certificates) {
        builder = builder.add_root_certificate(certificate.clone());
    }
    builder.build()
}

/// Decrements the in-flight count however the call ends, including by being dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a body could not be read whole.
enum BodyError {
    TooLarge(usize),
    Transport(reqwest::Error),
}

impl BodyError {
    fn into_model_error(self, provider: &str) -> ModelError {
        match self {
            BodyError::TooLarge(limit) => ModelError::TooLarge { provider: provider.to_string(), limit },
            BodyError::Transport(e) => ModelError::Transport { provider: provider.to_string(), message: e.to_string() },
        }
    }
}

/// The body, chunk by chunk, refused as soon as it passes `limit` bytes (or announces
/// more in its Content-Length).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One failed attempt: the error to report, and what the retry policy needs to know.
struct Failed {
    error: ModelError,
    failure: Failure,
}

impl Failed {
    fn transport(error: ModelError) -> Failed {
        Failed { error, failure: Failure { status: None, retry_after: None, output_started: false, transport: true } }
    }

    fn final_(error: ModelError) -> Failed {
        Failed { error, failure: Failure { status: None, retry_after: None, output_started: false, transport: false } }
    }

    /// A stream that broke: retryable as a transport failure unless it was refused for
    /// size or sense, and never once output has started.
    fn stream(provider: &str, limit: usize, failed: stream::Failed) -> Failed {
        let transport = !matches!(failed.fault, Fault::Decode(_));
        let error = match failed.fault {
            Fault::TooLarge => return Failed::final_(BodyError::TooLarge(limit).into_model_error(provider)),
            fault => ModelError::Stream { provider: provider.to_string(), message: provider_text(&fault.to_string()) },
        };
        let failure = Failure { status: None, retry_after: None, output_started: failed.output_started, transport };
        Failed { error, failure }
    }
}

/// A call ready to send: where, and its body, serialized once for every attempt.
struct Prepared {
    url: String,
    body: Bytes,
}

impl Prepared {
    fn new(provider: &Provider, request: &ChatRequest) -> Result<Prepared, ModelError> {
        let base = provider.base_url.trim_end_matches('/');
        let (url, body) = match provider.api {
            Api::OpenAiCompletions => (
                format!("{base}/chat/completions"),
                serde_json::to_vec(&CompletionRequest::new(request, provider.stream)),
            ),
            Api::AnthropicMessages => (
                format!("{base}/messages"),
                serde_json::to_vec(&MessagesRequest::new(request, provider.max_tokens, provider.stream)),
            ),
        };
        let body = body.map_err(|e| ModelError::Decode {
            provider: request.model.provider().to_string(),
            message: format!("the request could not be encoded: {e}"),
        })?;
        Ok(Prepared { url, body: body.into() })
    }
}

impl HttpModelClient {
    /// One HTTP exchange with the provider, holding a concurrency permit for its length.
    async fn attempt(
        &self,
        name: &str,
        provider: &Provider,
        prepared: &Prepared,
        request: &ChatRequest,
    ) -> Result<ChatResponse, Failed> {
        let _permit = self.permits.acquire().await.map_err(|_| {
            Failed::final_(ModelError::Transport {
                provider: name.to_string(),
                message: "the model client is shutting down".into(),
            })
        })?;
        let Some(http) = self.http.get(name) else {
            return Err(Failed::final_(ModelError::Transport {
                provider: name.to_string(),
                message: "no HTTP client was built for this provider".into(),
            }));
        };
        let mut call = http
            .post(&prepared.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(prepared.body.clone());
        call = match (provider.api, &provider.api_key) {
            (Api::OpenAiCompletions, Some(key)) => call.bearer_auth(key),
            (Api::AnthropicMessages, key) => {
                let call = call.header("anthropic-version", anthropic::VERSION);
                match key {
                    Some(key) => call.header("x-api-key", key),
                    None => call,
                }
            }
            (Api::OpenAiCompletions, None) => call,
        };
        let limit = self.request_timeout;
        let transport = |e: reqwest::Error| {
            Failed::transport(ModelError::Transport {
                provider: name.to_string(),
                message: transport_message(&e, limit),
            })
        };
        let response = call.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() && is_event_stream(&response) {
            let bounds = stream::Bounds { max_bytes: self.max_response_bytes, idle: self.idle_timeout };
            let draft = Draft::new(request.stream_to.clone());
            let mut body = response.bytes_stream().map(move |chunk| chunk.map_err(|e| transport_message(&e, limit)));
            let read = match provider.api {
                Api::OpenAiCompletions => stream::read(&mut body, ChunkDecoder, draft, bounds).await,
                Api::AnthropicMessages => {
                    stream::read(&mut body, anthropic::stream::EventDecoder::default(), draft, bounds).await
                }
            };
            if read.is_ok() {
                drain(body).await;
            }
            return read.map_err(|failed| Failed::stream(name, bounds.max_bytes, failed));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        let bytes = read_capped(response, self.max_response_bytes).await.map_err(|e| match e {
            BodyError::Transport(e) => transport(e),
            too_large => Failed::final_(too_large.into_model_error(name)),
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| provider_text(&b.error.message))
                .unwrap_or_else(|_| provider_text(&String::from_utf8_lossy(&bytes)));
            let failure =
                Failure { status: Some(status.as_u16()), retry_after, output_started: false, transport: false };
            let error = ModelError::Http { provider: name.to_string(), status: status.as_u16(), message };
            return Err(Failed { error, failure });
        }
        let response = match provider.api {
            Api::OpenAiCompletions => serde_json::from_slice::<CompletionResponse>(&bytes)
                .map_err(|e| ModelError::Decode { provider: name.to_string(), message: e.to_string() })
                .and_then(|r| r.into_domain(name)),
            Api::AnthropicMessages => MessagesResponse::decode(&bytes, name),
        };
        if let (Ok(ChatResponse { content: Some(text), .. }), Some(sink)) = (&response, &request.stream_to) {
            sink.text(text);
        }
        response.map_err(Failed::final_)
    }
}

/// The most characters of a provider's own words (an error body, an error event) that a
/// failure carries: they become the run's final text, which the parent's model reads.
const MAX_PROVIDER_TEXT: usize = 300;

/// `text`, cut to [`MAX_PROVIDER_TEXT`] characters (saying so with `…`).
fn provider_text(text: &str) -> String {
    crate::protocol::clip_to(text, MAX_PROVIDER_TEXT)
}

/// How long, and how many bytes, the rest of a streamed body is read after its end
/// marker.
const DRAIN_WAIT: Duration = Duration::from_millis(50);
const DRAIN_BYTES: usize = 64 * 1024;

/// Read what follows a streamed answer's end marker (usually only the end of the body,
/// already on its way), so the connection goes back to the pool before the answer is
/// handed on: hyper closes an HTTP/1.1 connection whose body is dropped unread, and a
/// connection returned after the caller's next call has started is too late for it
/// (that call opens a new one). A body that goes on past the bounds is dropped, and its
/// connection with it.
async fn drain<S, E>(mut body: S)
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let rest = async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(chunk)) = body.next().await {
            match left.checked_sub(chunk.len()) {
                Some(still) => left = still,
                None => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_WAIT, rest).await;
}

/// A transport error's message; the whole call's timeout names its setting.
fn transport_message(e: &reqwest::Error, limit: Duration) -> String {
    if e.is_timeout() {
        format!("no complete answer within {:.1} s (limits.model_request_timeout_seconds)", limit.as_secs_f64())
    } else {
        e.to_string()
    }
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

impl ModelClient for HttpModelClient {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        let this = self.clone();
        async move {
            let _in_flight = InFlight::enter(&this.in_flight);
            let timer = CallTimer::start(this.metrics.clone(), &request.model);
            let result = this.call(&request).await;
            timer.stop(&result);
            result
        }
        .boxed()
    }

    fn check_model(&self, model: &ModelRef) -> Result<(), ModelError> {
        self.providers.resolve(model).map(|_| ())
    }
}

impl HttpModelClient {
    /// One call: its attempts, with retries as the policy decides.
    async fn call(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let name = request.model.provider().to_string();
        let provider = self.providers.resolve(&request.model)?.clone();
        let prepared = Prepared::new(&provider, request)?;
        let mut attempt = 0;
        let mut notices = Vec::new();
        loop {
            let failed = match self.attempt(&name, &provider, &prepared, request).await {
                Ok(mut response) => {
                    // The retries first, then what the answer itself calls for.
                    notices.append(&mut response.notices);
                    return Ok(ChatResponse { notices, ..response });
                }
                Err(failed) => failed,
            };
            match retry::decide(&provider.retry, attempt, &failed.failure, rand::random::<f64>()) {
                Decision::Retry { after } => {
                    attempt += 1;
                    notices.push(format!(
                        "{} failed with {}; retry {attempt} of {} after {:.1} s",
                        request.model,
                        failed.error.short_reason(),
                        provider.retry.max_retries,
                        after.as_secs_f64()
                    ));
                    tokio::time::sleep(after).await;
                }
                Decision::GiveUp { .. } if notices.is_empty() => return Err(failed.error),
                Decision::GiveUp { .. } => return Err(ModelError::Retried { last: Box::new(failed.error), notices }),
            }
        }
    }
}
