//! Shared test helpers: a scripted fake OpenAI-compatible model server that records
//! every request, and a gateway wired to it.
//!
//! The fake server is a real actix-web HTTP server on 127.0.0.1:0. A script decides each
//! answer from the request (stateless, like the builtin provider); `Reply::Hang` never
//! answers. (actix-web does not drop a handler when its client disconnects, so aborted
//! calls are observed on the client side, through the model client's in-flight gauge.)

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
    /// An error status with an OpenAI-style error body, and `Retry-After` if given.
    Status(u16, Option<&'static str>),
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
    handle: actix_web::dev::ServerHandle,
}

struct State {
    script: Box<Script>,
    requests: Arc<Mutex<Vec<CompletionRequest>>>,
    arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>>,
    events: mpsc::UnboundedSender<String>,
}

async fn complete(state: web::Data<State>, body: web::Json<CompletionRequest>) -> HttpResponse {
    let request = body.into_inner();
    let model = request.model.clone();
    state.requests.lock().unwrap().push(request.clone());
    state.arrivals.lock().unwrap().push((model.clone(), std::time::Instant::now()));
    let _ = state.events.send(model.clone());
    let mut usage =
        WireUsage { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15, prompt_tokens_details: None };
    let mut reply = (state.script)(&request);
    if let Reply::WithUsage(inner, prompt, completion) = reply {
        usage = WireUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: 0,
            prompt_tokens_details: None,
        };
        reply = *inner;
    }
    let message = match reply {
        Reply::Hang => {
            futures_util::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Endless => {
            let chunk = web::Bytes::from(vec![b' '; 64 * 1024]);
            let body = futures_util::stream::repeat_with(move || Ok::<_, actix_web::Error>(chunk.clone()));
            return HttpResponse::Ok().content_type("application/json").streaming(body);
        }
        Reply::WithUsage(..) => panic!("WithUsage inside WithUsage"),
        Reply::Status(status, retry_after) => {
            let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(after) = retry_after {
                response.insert_header(("retry-after", after));
            }
            let body = serde_json::json!({"error": {"message": format!("scripted {status}"), "type": "scripted"}});
            return response.json(body);
        }
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
    };
    HttpResponse::Ok().json(CompletionResponse {
        id: "fake".into(),
        object: "chat.completion".into(),
        model,
        choices: vec![Choice { index: 0, message, finish_reason: Some("stop".into()) }],
        usage: Some(usage),
    })
}

impl FakeModels {
    pub fn start(script: impl Fn(&CompletionRequest) -> Reply + Send + Sync + 'static) -> FakeModels {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (tx, events) = mpsc::unbounded_channel();
        let state = web::Data::new(State {
            script: Box::new(script),
            requests: requests.clone(),
            arrivals: arrivals.clone(),
            events: tx,
        });
        let server = HttpServer::new(move || {
            App::new().app_data(state.clone()).route("/v1/chat/completions", web::post().to(complete))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}/v1", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeModels { url, requests, arrivals, events, handle }
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
    config.providers.insert(
        "fake",
        Provider {
            base_url: fake.url.clone(),
            api_key: Some("test-key".into()),
            api_key_env: None,
            api: Api::OpenAiCompletions,
            retry: Default::default(),
        },
    );
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

/// Start `start` and wait (bounded) for the run's summary.
pub async fn run_to_end(runtime: &Runtime, start: hivegate::gateway::StartMain) -> hivegate::gateway::RunSummary {
    let run = runtime.gateway.send(start).await.unwrap().unwrap();
    let ended = runtime.gateway.send(hivegate::gateway::WaitRun { run_id: run.run_id }).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, ended).await.expect("the run did not end").unwrap()
}
