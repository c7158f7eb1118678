//! Shared test helpers: a scripted fake model server that records every request, and a
//! gateway wired to it.
//!
//! The fake server is a real actix-web HTTP server on 127.0.0.1:0 speaking both API
//! kinds: OpenAI chat completions (`/v1/chat/completions`) and Anthropic Messages
//! (`/v1/messages`), each as one JSON answer or as server-sent events, as the request's
//! `stream` asks. A script decides each answer from the request (stateless, like the
//! builtin provider); Anthropic requests are shown to it translated into the OpenAI
//! shape, so one script serves both, and recorded raw (headers and body) as well.
//! `Reply::Hang` never answers; `Reply::Delayed` answers after a while. (actix-web
//! does not drop a handler when its client disconnects, so aborted calls are observed
//! on the client side, through the model client's in-flight gauge.)

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod otlp;
pub mod postgres;
pub mod ws;
pub mod wsclient;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use hivegate::agent::{self, Agents};
use hivegate::config::{Config, Limits};
use hivegate::model::openai::{
    Choice, CompletionRequest, CompletionResponse, WireFunctionCall, WireMessage, WireToolCall, WireUsage,
};
use hivegate::model::{Api, Provider};
use hivegate::runtime::Runtime;
use serde_json::Value;
use tokio::sync::mpsc;

/// Every wait in a test is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub enum Reply {
    Text(String),
    /// Tool calls as (id, name, raw argument text).
    Calls(Vec<(String, String, String)>),
    Hang,
    /// Another reply, reporting this usage (prompt, completion tokens).
    WithUsage(Box<Reply>, u64, u64),
    /// A 200 whose body never ends.
    Endless,
    /// An error status with the API's error body, and `Retry-After` if given.
    Status(u16, Option<&'static str>),
    /// An error status whose error body says this.
    StatusSaying(u16, String),
    /// Streamed: this text, then an error event instead of the end.
    StreamError(String),
    /// Streamed: this text, then the body ends without the end marker.
    StreamCut(String),
    /// Streamed: this text, then nothing, forever.
    StreamStall(String),
    /// Another reply, after this long (the request is recorded at once). Inside
    /// `WithUsage`, not around it.
    Delayed(Duration, Box<Reply>),
}

/// One Anthropic request as it arrived.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A tool call with JSON arguments.
pub fn call(id: &str, name: &str, args: Value) -> (String, String, String) {
    (id.to_string(), name.to_string(), args.to_string())
}

type Script = dyn Fn(&CompletionRequest) -> Reply + Send + Sync;

pub struct FakeModels {
    pub url: String,
    pub requests: Arc<Mutex<Vec<CompletionRequest>>>,
    /// When each request arrived, by model.
    pub arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
    pub events: mpsc::UnboundedReceiver<String>,
    /// Anthropic requests, raw.
    pub anthropic: Arc<Mutex<Vec<RawRequest>>>,
    handle: actix_web::dev::ServerHandle,
}

struct State {
    script: Box<Script>,
    requests: Arc<Mutex<Vec<CompletionRequest>>>,
    arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
    events: mpsc::UnboundedSender<String>,
    anthropic: Arc<Mutex<Vec<RawRequest>>>,
}

/// What the script answered, with the usage to report.
struct Scripted {
    reply: Reply,
    usage: (u64, u64),
}

fn record(state: &State, request: &CompletionRequest) -> Scripted {
    let model = request.model.clone();
    state.requests.lock().unwrap().push(request.clone());
    state.arrivals.lock().unwrap().push((model.clone(), std::time::Instant::now()));
    let _ = state.events.send(model);
    match (state.script)(request) {
        Reply::WithUsage(inner, prompt, completion) => Scripted { reply: *inner, usage: (prompt, completion) },
        reply => Scripted { reply, usage: (10, 5) },
    }
}

/// The reply to send, once its delay (if any) has passed.
async fn after_delay(mut reply: Reply) -> Reply {
    while let Reply::Delayed(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    reply
}

/// Answers common to both APIs (or `None` to render the reply in the API's shape).
async fn common_reply(reply: &Reply, error_body: impl Fn(u16, &str) -> Value) -> Option<HttpResponse> {
    match reply {
        Reply::Hang => {
            futures_util::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Endless => {
            let chunk = web::Bytes::from(vec![b' '; 64 * 1024]);
            let body = futures_util::stream::repeat_with(move || Ok::<_, actix_web::Error>(chunk.clone()));
            Some(HttpResponse::Ok().content_type("application/json").streaming(body))
        }
        Reply::WithUsage(..) => panic!("WithUsage inside WithUsage"),
        Reply::Status(status, retry_after) => {
            let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).unwrap());
            if let Some(after) = retry_after {
                response.insert_header(("retry-after", *after));
            }
            Some(response.json(error_body(*status, &format!("scripted {status}"))))
        }
        Reply::StatusSaying(status, message) => Some(
            HttpResponse::build(actix_web::http::StatusCode::from_u16(*status).unwrap())
                .json(error_body(*status, message)),
        ),
        _ => None,
    }
}

/// Text in three pieces (at char boundaries), as a stream would carry it.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// Server-sent events: the events, then (for `StreamStall`) silence.
fn sse(events: Vec<String>, stall: bool) -> HttpResponse {
    let events = futures_util::stream::iter(events.into_iter().map(|e| Ok::<_, std::io::Error>(web::Bytes::from(e))));
    let body: futures_util::stream::LocalBoxStream<'static, Result<web::Bytes, std::io::Error>> = match stall {
        true => Box::pin(futures_util::StreamExt::chain(events, futures_util::stream::pending())),
        false => Box::pin(events),
    };
    HttpResponse::Ok().content_type("text/event-stream").streaming(body)
}

async fn complete(state: web::Data<State>, body: web::Json<CompletionRequest>) -> HttpResponse {
    let request = body.into_inner();
    let Scripted { reply, usage: (prompt, completion) } = record(&state, &request);
    let reply = after_delay(reply).await;
    let error = |_: u16, message: &str| serde_json::json!({"error": {"message": message, "type": "scripted"}});
    if let Some(response) = common_reply(&reply, error).await {
        return response;
    }
    let usage = WireUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: 0,
        prompt_tokens_details: None,
    };
    if request.stream {
        return openai_stream(reply, usage);
    }
    let message = match reply {
        Reply::Text(text) => WireMessage::text("assistant", &text),
        Reply::Calls(calls) => WireMessage {
            role: "assistant".into(),
            content: None,
            tool_calls: Some(
                calls
                    .into_iter()
                    .map(|(id, name, args)| WireToolCall {
                        id,
                        kind: "function".into(),
                        function: WireFunctionCall { name, arguments: args },
                    })
                    .collect(),
            ),
            tool_call_id: None,
        },
        _ => panic!("a streaming reply to a request that did not ask for a stream"),
    };
    HttpResponse::Ok().json(CompletionResponse {
        id: "fake".into(),
        object: "chat.completion".into(),
        model: request.model,
        choices: vec![Choice { index: 0, message, finish_reason: Some("stop".into()) }],
        usage: Some(usage),
    })
}

fn openai_stream(reply: Reply, usage: WireUsage) -> HttpResponse {
    let data = |chunk: Value| format!("data: {chunk}\n\n");
    let text = |t: &str| {
        pieces(t).into_iter().map(|p| data(serde_json::json!({"choices": [{"index": 0, "delta": {"content": p}}]})))
    };
    let mut events =
        vec![data(serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))];
    let (end, stall) = match reply {
        Reply::Text(t) => {
            events.extend(text(&t));
            (true, false)
        }
        Reply::Calls(calls) => {
            for (index, (id, name, args)) in calls.into_iter().enumerate() {
                let start = serde_json::json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
                events.push(data(serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [start]}}]})));
                for piece in pieces(&args) {
                    let more = serde_json::json!({"index": index, "function": {"arguments": piece}});
                    events.push(data(serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})));
                }
            }
            (true, false)
        }
        Reply::StreamError(t) => {
            events.extend(text(&t));
            events
                .push(data(serde_json::json!({"error": {"message": "scripted stream error", "type": "server_error"}})));
            (false, false)
        }
        Reply::StreamCut(t) => {
            events.extend(text(&t));
            (false, false)
        }
        Reply::StreamStall(t) => {
            events.extend(text(&t));
            (false, true)
        }
        _ => unreachable!(),
    };
    if end {
        events.push(data(serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
        events.push(": keep-alive\n\n".to_string());
        events.push(data(serde_json::json!({"choices": [], "usage": usage})));
        events.push("data: [DONE]\n\n".to_string());
    }
    sse(events, stall)
}

/// An Anthropic request as the OpenAI-shaped request scripts read.
fn as_completion_request(body: &Value) -> CompletionRequest {
    let mut messages = Vec::new();
    if let Some(system) = body["system"].as_str() {
        messages.push(WireMessage::text("system", system));
    }
    for message in body["messages"].as_array().unwrap() {
        let role = message["role"].as_str().unwrap();
        let mut text = String::new();
        let mut calls = Vec::new();
        for block in message["content"].as_array().unwrap() {
            match block["type"].as_str().unwrap() {
                "text" => text.push_str(block["text"].as_str().unwrap()),
                "tool_use" => calls.push(WireToolCall {
                    id: block["id"].as_str().unwrap().into(),
                    kind: "function".into(),
                    function: WireFunctionCall {
                        name: block["name"].as_str().unwrap().into(),
                        arguments: block["input"].to_string(),
                    },
                }),
                // Reasoning is the provider's own; the scripts do not read it.
                "thinking" | "redacted_thinking" => {}
                "tool_result" => messages.push(WireMessage {
                    role: "tool".into(),
                    content: Some(block["content"].as_str().unwrap().into()),
                    tool_calls: None,
                    tool_call_id: Some(block["tool_use_id"].as_str().unwrap().into()),
                }),
                other => panic!("unexpected block {other}"),
            }
        }
        if !text.is_empty() || !calls.is_empty() {
            messages.push(WireMessage {
                role: role.into(),
                content: (!text.is_empty()).then_some(text),
                tool_calls: (!calls.is_empty()).then_some(calls),
                tool_call_id: None,
            });
        }
    }
    CompletionRequest {
        model: body["model"].as_str().unwrap().into(),
        messages,
        tools: vec![],
        stream: body["stream"].as_bool().unwrap_or(false),
        stream_options: None,
        reasoning_effort: None,
    }
}

/// The signature the fake gives a thinking block (the real API's is opaque).
fn fake_signature(thinking: &str) -> String {
    format!("sig-{}", thinking.len())
}

/// What the fake thinks when a request turns thinking on.
pub const FAKE_THOUGHT: &str = "weighing it";

/// The rules the real Messages API enforces on a transcript (it answers 400 otherwise).
fn messages_rule_broken(body: &Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    if messages.first().map(|m| &m["role"]) != Some(&Value::from("user")) {
        return Some("the first message must be a user message".into());
    }
    let thinking = body["thinking"]["type"] == "enabled";
    if thinking {
        let budget = body["thinking"]["budget_tokens"].as_u64().unwrap_or(0);
        if budget < 1024 || budget >= body["max_tokens"].as_u64().unwrap_or(0) {
            return Some("thinking.budget_tokens must be at least 1024 and less than max_tokens".into());
        }
    }
    for (i, message) in messages.iter().enumerate() {
        // With thinking on, an assistant turn that called tools must come back with the
        // thinking block it started with, unchanged (its signature checks that).
        let blocks = message["content"].as_array();
        let calls = blocks.into_iter().flatten().any(|b| b["type"] == "tool_use");
        let first = blocks.and_then(|b| b.first());
        let signed = first.is_some_and(|b| {
            b["type"] == "thinking"
                && b["signature"].as_str() == Some(&fake_signature(b["thinking"].as_str().unwrap_or_default()))
        });
        if thinking && message["role"] == "assistant" && calls && !signed {
            return Some("Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block".into());
        }
        if i > 0 && messages[i - 1]["role"] == message["role"] {
            return Some(format!("messages {i} and {} have the same role", i - 1));
        }
        let blocks = message["content"].as_array()?;
        if blocks.iter().any(|b| b["type"] == "text" && b["text"].as_str().is_none_or(|t| t.trim().is_empty())) {
            return Some("text content blocks must contain non-whitespace text".into());
        }
        let asked: Vec<&Value> = blocks.iter().filter(|b| b["type"] == "tool_use").map(|b| &b["id"]).collect();
        if asked.is_empty() {
            continue;
        }
        let next: Vec<&Value> =
            messages.get(i + 1).and_then(|m| m["content"].as_array()).into_iter().flatten().collect();
        let results: Vec<&Value> =
            next.iter().take_while(|b| b["type"] == "tool_result").map(|b| &b["tool_use_id"]).collect();
        if asked.iter().any(|id| !results.contains(id)) && i + 1 < messages.len() {
            return Some("tool_use ids were found without tool_result blocks immediately after".into());
        }
    }
    None
}

async fn messages(state: web::Data<State>, http: actix_web::HttpRequest, body: web::Json<Value>) -> HttpResponse {
    let body = body.into_inner();
    if let Some(rule) = messages_rule_broken(&body) {
        let error = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": rule}});
        return HttpResponse::BadRequest().json(error);
    }
    let headers = http
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    state.anthropic.lock().unwrap().push(RawRequest { headers, body: body.clone() });
    let request = as_completion_request(&body);
    let Scripted { reply, usage: (prompt, completion) } = record(&state, &request);
    let reply = after_delay(reply).await;
    let error = |status: u16, message: &str| {
        let kind = if status == 529 { "overloaded_error" } else { "api_error" };
        serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
    };
    if let Some(response) = common_reply(&reply, error).await {
        return response;
    }
    let (text, calls) = match &reply {
        Reply::Text(t) | Reply::StreamError(t) | Reply::StreamCut(t) | Reply::StreamStall(t) => (t.clone(), vec![]),
        Reply::Calls(calls) => (String::new(), calls.clone()),
        _ => unreachable!(),
    };
    let thinks = body["thinking"]["type"] == "enabled";
    if !request.stream {
        let mut content: Vec<Value> = Vec::new();
        if thinks {
            content.push(serde_json::json!({"type": "thinking", "thinking": FAKE_THOUGHT, "signature": fake_signature(FAKE_THOUGHT)}));
        }
        if !text.is_empty() {
            content.push(serde_json::json!({"type": "text", "text": text}));
        }
        for (id, name, args) in calls {
            let input: Value = serde_json::from_str(&args).unwrap();
            content.push(serde_json::json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        return HttpResponse::Ok().json(serde_json::json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": request.model,
            "content": content, "stop_reason": "end_turn",
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }));
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![event(
        "message_start",
        serde_json::json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant",
            "content": [], "model": request.model, "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
    )];
    events.push(event("ping", serde_json::json!({"type": "ping"})));
    let mut index = 0;
    if thinks {
        events.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}})));
        for piece in pieces(FAKE_THOUGHT) {
            events.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}})));
        }
        events.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": fake_signature(FAKE_THOUGHT)}})));
        events.push(event("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if !text.is_empty() {
        events.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
        for piece in pieces(&text) {
            events.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
        }
        events.push(event("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    for (id, name, args) in calls {
        events.push(event("content_block_start", serde_json::json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
        for piece in pieces(&args) {
            events.push(event("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
        }
        events.push(event("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    match reply {
        Reply::StreamError(_) => {
            events.push(event(
                "error",
                serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ));
            sse(events, false)
        }
        Reply::StreamCut(_) => sse(events, false),
        Reply::StreamStall(_) => sse(events, true),
        _ => {
            events.push(event("message_delta", serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": completion}})));
            events.push(event("message_stop", serde_json::json!({"type": "message_stop"})));
            sse(events, false)
        }
    }
}

impl FakeModels {
    pub fn start(script: impl Fn(&CompletionRequest) -> Reply + Send + Sync + 'static) -> FakeModels {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let anthropic = Arc::new(Mutex::new(Vec::new()));
        let (tx, events) = mpsc::unbounded_channel();
        let state = web::Data::new(State {
            script: Box::new(script),
            requests: requests.clone(),
            arrivals: arrivals.clone(),
            events: tx,
            anthropic: anthropic.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/v1/chat/completions", web::post().to(complete))
                .route("/v1/messages", web::post().to(messages))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}/v1", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeModels { url, requests, arrivals, events, anthropic, handle }
    }

    /// Wait (bounded) for the next request for `model`.
    pub async fn wait_for_request(&mut self, model: &str) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(seen) = self.events.recv().await {
                if seen == model {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "timed out waiting for a request for {model}");
    }

    /// When the requests for `model` arrived, in order.
    pub fn arrivals_for(&self, model: &str) -> Vec<std::time::Instant> {
        self.arrivals.lock().unwrap().iter().filter(|(m, _)| m == model).map(|(_, t)| *t).collect()
    }

    pub fn requests_for(&self, model: &str) -> Vec<CompletionRequest> {
        self.requests.lock().unwrap().iter().filter(|r| r.model == model).cloned().collect()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A gateway whose provider `fake` is the fake server, with agents from TOML snippets.
pub async fn gateway(fake: &FakeModels, limits: Limits, agent_files: &[&str]) -> Runtime {
    let mut config =
        Config { bind: ([127, 0, 0, 1], 0).into(), limits, state_dir: std::path::PathBuf::new(), ..Config::default() };
    config.providers.insert("fake", Provider::new(Api::OpenAiCompletions, fake.url.clone(), Some("test-key".into())));
    Runtime::start(&config, agents(agent_files)).await.unwrap()
}

pub fn agents(files: &[&str]) -> Agents {
    let mut agents = Agents::default();
    for text in files {
        agents.insert(agent::parse("test-agent", text, |_| Ok(String::new())).unwrap());
    }
    agents
}

/// An agent definition on model `fake/<model>` that may spawn `allow`.
pub fn agent_toml(id: &str, model: &str, allow: &[&str]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "id = \"{id}\"\nmodel = \"fake/{model}\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\", \"sessions_list\", \"sessions_history\", \"sessions_send\", \"subagents\"]\n[subagents]\nallow_agents = [{}]\n",
        allow.join(", ")
    )
}

/// Tool messages of a request, as (call id, parsed JSON content).
pub fn tool_results(request: &CompletionRequest) -> Vec<(String, Value)> {
    request
        .messages
        .iter()
        .filter(|m| m.role == "tool")
        .map(|m| {
            let content = m.content.clone().unwrap_or_default();
            (
                m.tool_call_id.clone().unwrap_or_default(),
                serde_json::from_str(&content).unwrap_or(Value::String(content)),
            )
        })
        .collect()
}

/// User messages after the first (inter-session messages).
pub fn announcements(request: &CompletionRequest) -> Vec<String> {
    request.messages.iter().filter(|m| m.role == "user").skip(1).filter_map(|m| m.content.clone()).collect()
}

pub fn has_tool_call(request: &CompletionRequest, name: &str) -> bool {
    request.messages.iter().flat_map(|m| m.tool_calls.iter().flatten()).any(|c| c.function.name == name)
}

/// The `hivegate` binary in `dir`, with nothing from the environment that could point
/// it at other state, another gateway or a trace exporter. Callers add what their test
/// sets (HOME, provider keys, log level).
pub fn hivegate_in(dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hivegate"));
    command.current_dir(dir);
    for var in [
        "HIVEGATE_CONFIG",
        "HIVEGATE_STATE_DIR",
        "HIVEGATE_GATEWAY_TOKEN",
        "HIVEGATE_DATABASE_URL",
        "OPENCLAW_GATEWAY_TOKEN",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
    ] {
        command.env_remove(var);
    }
    command
}

/// Model calls still in flight once they have had [`WAIT`] to finish: a session's call
/// is dropped on its own thread just after its actor reports it stopped.
pub async fn calls_in_flight_settled(runtime: &Runtime) -> usize {
    let in_flight = || runtime.model_calls_in_flight.load(std::sync::atomic::Ordering::Acquire);
    let deadline = std::time::Instant::now() + WAIT;
    while in_flight() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    in_flight()
}

/// Start `start` and wait (bounded by [`WAIT`]) for the run's summary.
pub async fn run_to_end(runtime: &Runtime, start: hivegate::gateway::StartMain) -> hivegate::gateway::RunSummary {
    run_to_end_within(runtime, start, WAIT).await
}

/// Start `start` and wait at most `wait` for the run's summary (runs that start
/// outside processes, such as MCP servers, need more than [`WAIT`] on a busy machine).
pub async fn run_to_end_within(
    runtime: &Runtime,
    start: hivegate::gateway::StartMain,
    wait: Duration,
) -> hivegate::gateway::RunSummary {
    let run = runtime.gateway.send(start).await.unwrap().unwrap();
    let ended = runtime.gateway.send(hivegate::gateway::WaitRun { run_id: run.run_id }).await.unwrap().unwrap();
    tokio::time::timeout(wait, ended).await.expect("the run did not end").unwrap()
}

/// `hivegate run --json <args>` (the binary) in `dir`, with `env`, bounded by [`WAIT`]:
/// the exit code must be 0; the printed report.
pub async fn run_binary_json(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    run_binary_json_within(dir, env, args, WAIT).await
}

/// [`run_binary_json`], bounded by `wait`.
pub async fn run_binary_json_within(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
    wait: Duration,
) -> Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hivegate"));
    command.current_dir(dir).env_remove("HIVEGATE_CONFIG").args(["run", "--json"]).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(wait, tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("hivegate run did not finish")
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}
