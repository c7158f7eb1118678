//! What the runtime adds to one model call, the model's own time left out:
//!
//! - `encode/*`: a domain request (system prompt, a 12-message transcript with tool calls
//!   and results, 6 tool specs) to the body bytes sent, per API kind.
//! - `decode/*`: a real provider's streamed answer (the golden fixtures
//!   `openai-tool-call.sse` and `anthropic-tool-use.sse`) from bytes to the domain
//!   response, through the SSE parser and the API's decoder.
//! - `round_trip/*`: `HttpModelClient::complete` against a loopback server that answers
//!   at once with the same recorded stream: request built, bytes on the wire, the answer
//!   read and decoded; the HTTP exchange on loopback is included.
//!
//!     cargo bench --bench model_call

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use hivegate::config::Limits;
use hivegate::model::anthropic::stream::EventDecoder;
use hivegate::model::anthropic::MessagesRequest;
use hivegate::model::openai::stream::ChunkDecoder;
use hivegate::model::openai::CompletionRequest;
use hivegate::model::stream::{read, Bounds, Draft};
use hivegate::model::{
    Api, ChatRequest, HttpModelClient, Message, ModelClient, ModelRef, Provider, Providers, ToolCall, ToolSpec,
};

const OPENAI_STREAM: &str = include_str!("../tests/fixtures/sse/openai-tool-call.sse");
const ANTHROPIC_STREAM: &str = include_str!("../tests/fixtures/sse/anthropic-tool-use.sse");
const BOUNDS: Bounds = Bounds { max_bytes: 8 << 20, idle: Duration::from_secs(60) };

fn request(model: &str) -> ChatRequest {
    let spec = |name: &'static str| ToolSpec {
        name: name.into(),
        description: "a tool the model may call, described in a sentence or two as real tools are".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"task": {"type": "string"}, "label": {"type": "string"}}, "required": ["task"]}),
    };
    let mut messages = vec![
        Message::System { content: "You plan the work and delegate each part to an executor. ".repeat(20) },
        Message::User { content: "Build the report: gather the figures, check them, write it up.".into() },
    ];
    for i in 0..5 {
        messages.push(Message::Assistant {
            content: Some(format!("Delegating part {i}.").into()),
            tool_calls: vec![ToolCall {
                id: format!("call_{i}"),
                name: "sessions_spawn".into(),
                arguments: format!("{{\"task\":\"part {i} of the report\",\"label\":\"part-{i}\"}}"),
            }],
            reasoning: None,
        });
        messages.push(Message::Tool {
            call_id: format!("call_{i}"),
            content: format!("{{\"status\":\"accepted\",\"childSessionKey\":\"agent:exec:subagent:{i}\"}}"),
        });
    }
    ChatRequest {
        model: ModelRef::parse(model).unwrap(),
        messages,
        tools: Arc::from(
            ["sessions_spawn", "sessions_yield", "sessions_list", "sessions_history", "sessions_send", "subagents"]
                .map(spec),
        ),
        stream_to: None,
        thinking: None,
    }
}

fn chunks(body: &'static str) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Unpin {
    // Roughly as the network delivers them: a few events per read.
    futures_util::stream::iter(body.as_bytes().chunks(512).map(|c| Ok(Bytes::from_static(c))).collect::<Vec<_>>())
}

fn encode(c: &mut Criterion) {
    let openai = request("cheap/qwen");
    let anthropic = request("claude/claude-sonnet");
    c.bench_function("encode/openai", |b| b.iter(|| serde_json::to_vec(&CompletionRequest::new(&openai, true))));
    c.bench_function("encode/anthropic", |b| {
        b.iter(|| serde_json::to_vec(&MessagesRequest::new(&anthropic, 8192, true)))
    });
}

fn decode(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    c.bench_function("decode/openai_stream", |b| {
        b.to_async(&rt)
            .iter(|| async { read(chunks(OPENAI_STREAM), ChunkDecoder, Draft::new(None), BOUNDS).await.unwrap() })
    });
    c.bench_function("decode/anthropic_stream", |b| {
        b.to_async(&rt).iter(|| async {
            read(chunks(ANTHROPIC_STREAM), EventDecoder::default(), Draft::new(None), BOUNDS).await.unwrap()
        })
    });
}

/// A loopback provider answering every call at once with the recorded stream.
fn serve() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            use actix_web::{web, App, HttpResponse, HttpServer};
            let answer = |body: &'static str| {
                move || async move { HttpResponse::Ok().content_type("text/event-stream").body(body) }
            };
            let server = HttpServer::new(move || {
                App::new()
                    .route("/v1/chat/completions", web::post().to(answer(OPENAI_STREAM)))
                    .route("/v1/messages", web::post().to(answer(ANTHROPIC_STREAM)))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
            tx.send(format!("http://{}/v1", server.addrs()[0])).unwrap();
            server.run().await.unwrap();
        })
    });
    rx.recv().unwrap()
}

fn round_trip(c: &mut Criterion) {
    // As the binary runs (see `hivegate::memory`).
    hivegate::memory::small_pages();
    let url = serve();
    let mut providers = Providers::default();
    providers.insert("cheap", Provider::new(Api::OpenAiCompletions, url.clone(), Some("k".into())));
    providers.insert("claude", Provider::new(Api::AnthropicMessages, url, Some("k".into())));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(async { HttpModelClient::new(providers, &Limits::default()).unwrap() });
    for (name, model) in [("round_trip/openai", "cheap/qwen"), ("round_trip/anthropic", "claude/claude-sonnet")] {
        let request = request(model);
        c.bench_function(name, |b| b.to_async(&rt).iter(|| async { client.complete(request.clone()).await.unwrap() }));
    }
}

criterion_group!(benches, encode, decode, round_trip);
criterion_main!(benches);
