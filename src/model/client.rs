//! The real [`ModelClient`]: one shared `reqwest::Client` posting OpenAI chat
//! completions to the provider of each model ref.
//!
//! A semaphore caps concurrent model calls process-wide (`limits.max_concurrent_model_calls`);
//! a call waiting for a permit holds nothing else. Dropping the returned future (a
//! killed session) drops the request: the connection is abandoned and the permit
//! released. `in_flight` counts calls between start and drop so tests and status can
//! see that kills really abort calls.
//!
//! Response bodies are read chunk by chunk and refused past
//! `limits.max_model_response_bytes` (a provider that never stops sending fails the call
//! with [`ModelError::TooLarge`] instead of growing memory without bound).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::openai::{CompletionRequest, CompletionResponse, ErrorBody};
use super::{ChatRequest, ChatResponse, ModelClient, ModelError, ModelRef, Providers};
use crate::config::Limits;

#[derive(Clone)]
pub struct HttpModelClient {
    http: reqwest::Client,
    providers: Arc<Providers>,
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    max_response_bytes: usize,
}

impl HttpModelClient {
    pub fn new(providers: Providers, limits: &Limits) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(limits.model_request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(HttpModelClient {
            http,
            providers: Arc::new(providers),
            permits: Arc::new(Semaphore::new(limits.max_concurrent_model_calls.max(1))),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_response_bytes: limits.max_model_response_bytes,
        })
    }

    /// Model calls started and not yet finished or dropped.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
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

impl ModelClient for HttpModelClient {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        let this = self.clone();
        async move {
            let _in_flight = InFlight::enter(&this.in_flight);
            let provider_name = request.model.provider().to_string();
            let provider = this.providers.resolve(&request.model)?.clone();
            let body = CompletionRequest::from(&request);
            let _permit = this.permits.acquire().await.map_err(|_| ModelError::Transport {
                provider: provider_name.clone(),
                message: "the model client is shutting down".into(),
            })?;
            let url = format!("{}/chat/completions", provider.base_url.trim_end_matches('/'));
            let mut call = this.http.post(url).json(&body);
            if let Some(key) = &provider.api_key {
                call = call.bearer_auth(key);
            }
            let transport =
                |e: reqwest::Error| ModelError::Transport { provider: provider_name.clone(), message: e.to_string() };
            let response = call.send().await.map_err(transport)?;
            let status = response.status();
            let bytes =
                read_capped(response, this.max_response_bytes).await.map_err(|e| e.into_model_error(&provider_name))?;
            if !status.is_success() {
                let message = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.error.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(300).collect());
                return Err(ModelError::Http { provider: provider_name, status: status.as_u16(), message });
            }
            serde_json::from_slice::<CompletionResponse>(&bytes)
                .map_err(|e| ModelError::Decode { provider: provider_name.clone(), message: e.to_string() })?
                .into_domain(&provider_name)
        }
        .boxed()
    }

    fn check_model(&self, model: &ModelRef) -> Result<(), ModelError> {
        self.providers.resolve(model).map(|_| ())
    }
}
