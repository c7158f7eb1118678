//! Streamed answers and the Anthropic API, end to end.
//!
//! Golden fixtures of real providers' streams (`tests/fixtures/sse/`): transcripts taken
//! from providers' SDK test suites, each naming its source in its leading `: source:`
//! comment, with the meaning worked out by hand in `<name>.expected.json` (with the
//! notices the answer calls for, such as a cut at the token limit). Each must
//! parse, fed whole and fed one byte at a time, to exactly that domain response. Two
//! artifacts of how the sources store streams are undone before parsing, and only these:
//! a recorder that kept only the `data:` payloads also dropped the closing
//! `data: [DONE]` (put back), and a file without its final newline has lost the blank
//! line that ends its last event (put back).
//!
//! Then the real HTTP client against the scripted fake provider, streaming in both API
//! kinds: what is asked for, what is published as it arrives, and each way a stream
//! fails (an error event, a cut, a stall) with its retry rule. Last, `hivegate run`, the
//! binary, with an Anthropic brain driving OpenAI-compatible executors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use hivegate::model::anthropic::stream::EventDecoder;
use hivegate::model::openai::stream::ChunkDecoder;
use hivegate::model::stream::{read, Bounds, Draft};
use hivegate::model::{ChatResponse, ToolCall, Usage};
use serde_json::Value;

const BOUNDS: Bounds = Bounds { max_bytes: 1 << 20, idle: Duration::from_secs(5) };

struct Fixture {
    name: String,
    api: String,
    body: String,
    expected: ChatResponse,
}

fn expected(doc: &Value) -> ChatResponse {
    let usage = &doc["usage"];
    let tokens = |field: &str| usage[field].as_u64().unwrap();
    ChatResponse {
        reasoning: None,
        content: doc["content"].as_str().map(str::to_string),
        tool_calls: doc["toolCalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ToolCall {
                id: c["id"].as_str().unwrap().into(),
                name: c["name"].as_str().unwrap().into(),
                arguments: c["arguments"].as_str().unwrap().into(),
            })
            .collect(),
        usage: Usage {
            cached_prompt_tokens: tokens("cachedPromptTokens"),
            ..Usage::tokens(tokens("promptTokens"), tokens("completionTokens"))
        },
        notices: doc["notices"]
            .as_array()
            .map(|n| n.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
    }
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sse");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".sse").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let mut body = std::fs::read_to_string(dir.join(format!("{name}.sse"))).unwrap();
            let line = |key: &str| body.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).map(str::to_string);
            assert!(line(": source: ").is_some_and(|s| !s.is_empty()), "{name} names no source");
            let api = line(": api: ").unwrap_or_else(|| panic!("{name} names no api"));
            if !body.ends_with("\n\n") {
                body.push_str(if body.ends_with('\n') { "\n" } else { "\n\n" });
            }
            if api == "openai-completions" && !body.lines().any(|l| l.trim_end() == "data: [DONE]") {
                body.push_str("data: [DONE]\n\n");
            }
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap())
                    .unwrap();
            Fixture { name, api, body, expected: expected(&doc) }
        })
        .collect()
}

async fn parse(name: &str, api: &str, chunks: Vec<Bytes>) -> ChatResponse {
    let body = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let result = match api {
        "openai-completions" => read(body, ChunkDecoder, Draft::new(None), BOUNDS).await,
        "anthropic-messages" => read(body, EventDecoder::default(), Draft::new(None), BOUNDS).await,
        other => panic!("unknown api {other}"),
    };
    result.unwrap_or_else(|failed| panic!("{name}: {failed:?}"))
}

#[tokio::test]
async fn real_provider_streams_parse_to_their_expected_responses() {
    let fixtures = fixtures();
    let apis: std::collections::BTreeSet<&str> = fixtures.iter().map(|f| f.api.as_str()).collect();
    assert_eq!(apis.into_iter().collect::<Vec<_>>(), ["anthropic-messages", "openai-completions"]);
    assert!(fixtures.len() >= 6, "only {} fixtures", fixtures.len());
    for fixture in &fixtures {
        let whole = parse(&fixture.name, &fixture.api, vec![Bytes::from(fixture.body.clone())]).await;
        assert_eq!(whole, fixture.expected, "{} fed whole", fixture.name);
        let bytewise = fixture.body.bytes().map(|b| Bytes::from(vec![b])).collect();
        assert_eq!(
            parse(&fixture.name, &fixture.api, bytewise).await,
            fixture.expected,
            "{} fed byte by byte",
            fixture.name
        );
    }
}

// ---- the real client against the fake provider ----

use common::{agents, announcements, call, FakeModels, Reply, WAIT};
use hivegate::config::{Config, Limits};
use hivegate::gateway::{Outcome, RunSummary, SessionEvent, StartMain};
use hivegate::model::retry::RetryPolicy;
use hivegate::model::{Api, Provider};
use hivegate::runtime::Runtime;
use serde_json::json;

const BOSS: &str = "id = \"boss\"\nmodel = \"claude/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"worker\"]\n";
const WORKER: &str = "id = \"worker\"\nmodel = \"fake/worker\"\n";

/// Providers `fake` (OpenAI) and `claude` (Anthropic), both on the fake server.
fn config(fake: &FakeModels, stream: bool, limits: Limits) -> Config {
    let mut config = Config { bind: ([127, 0, 0, 1], 0).into(), limits, state_dir: "".into(), ..Config::default() };
    let quick = RetryPolicy { max_retries: 1, base: Duration::from_millis(20), ..RetryPolicy::default() };
    let provider =
        |api| Provider { stream, retry: quick, ..Provider::new(api, fake.url.clone(), Some("sk-test".into())) };
    config.providers.insert("fake", provider(Api::OpenAiCompletions));
    config.providers.insert("claude", provider(Api::AnthropicMessages));
    config
}

async fn run(runtime: &Runtime, agent: &str) -> RunSummary {
    common::run_to_end(runtime, StartMain::new(agent, "go")).await
}

/// The boss (on `claude/boss`) spawns one worker, waits, and reports what it heard.
fn boss_and_worker(worker: impl Fn() -> Reply + Send + Sync + 'static) -> FakeModels {
    FakeModels::start(move |request| match request.model.as_str() {
        "worker" => worker(),
        _ if !common::has_tool_call(request, "sessions_spawn") => Reply::Calls(vec![
            call("toolu_s", "sessions_spawn", json!({"task": "work", "agentId": "worker"})),
            call("toolu_y", "sessions_yield", json!({})),
        ]),
        _ if announcements(request).is_empty() => Reply::Calls(vec![call("toolu_y2", "sessions_yield", json!({}))]),
        _ => Reply::Text(announcements(request).join("\n")),
    })
}

#[actix_rt::test]
async fn streamed_calls_ask_for_usage_and_publish_their_text_as_it_arrives() {
    let fake = FakeModels::start(|_| Reply::Text("alpha beta gamma delta".into()));
    let runtime = Runtime::start(&config(&fake, true, Limits::default()), agents(&[WORKER])).await.unwrap();
    let mut lifecycle = runtime.events.subscribe();
    let mut watcher = runtime.events.subscribe_with_text();
    let summary = run(&runtime, "worker").await;
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "alpha beta gamma delta"));
    let request = &fake.requests_for("worker")[0];
    assert!(request.stream);
    assert_eq!(request.stream_options, Some(hivegate::model::openai::StreamOptions { include_usage: true }));
    // The usage came from the stream's usage-only last chunk.
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    assert_eq!((tree.usage.prompt_tokens, tree.usage.completion_tokens), (10, 5));
    let mut pieces = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, watcher.recv()).await.unwrap().unwrap() {
            SessionEvent::Streamed { session_key, text, .. } => {
                assert_eq!(session_key, summary.session_key);
                pieces.push(text);
            }
            SessionEvent::Ended { .. } => break,
            _ => {}
        }
    }
    assert_eq!(pieces, ["alpha be", "ta gamma", " delta"], "three pieces, in order, as they arrived");
    // The lifecycle watcher sees them too (one channel), but a gateway with only
    // lifecycle watchers builds none: drop the text watcher and run again.
    drop(watcher);
    while lifecycle.try_recv().is_ok() {}
    run(&runtime, "worker").await;
    let mut seen = Vec::new();
    while let Ok(event) = lifecycle.try_recv() {
        assert!(!matches!(event, SessionEvent::Streamed { .. }), "{event:?}");
        seen.push(event);
    }
    // The run itself was seen (so the loop above had something to check).
    assert!(seen.iter().any(|e| matches!(e, SessionEvent::Started { .. })), "{seen:?}");
    assert!(seen.iter().any(|e| matches!(e, SessionEvent::Ended { .. })), "{seen:?}");
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn stream_false_asks_for_one_json_answer() {
    let fake = boss_and_worker(|| Reply::Text("worked".into()));
    let runtime = Runtime::start(&config(&fake, false, Limits::default()), agents(&[BOSS, WORKER])).await.unwrap();
    let summary = run(&runtime, "boss").await;
    assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);
    assert!(summary.text.contains("worked"));
    assert!(fake.requests.lock().unwrap().iter().all(|r| !r.stream && r.stream_options.is_none()));
    assert!(fake.anthropic.lock().unwrap().iter().all(|r| r.body.get("stream").is_none()));
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    let boss_calls = fake.requests_for("boss").len() as u64;
    assert_eq!((tree.usage.prompt_tokens, tree.usage.completion_tokens), (10 * boss_calls, 5 * boss_calls));
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// The notices an answer calls for reach the session's tree through the real client: a
/// provider that reports no usage is said, once however many calls it answers.
#[actix_rt::test]
async fn an_answer_without_usage_is_noticed_once_per_session() {
    for model in ["fake/boss", "claude/boss"] {
        let boss = format!("id = \"boss\"\nmodel = \"{model}\"\n[tools]\nallow = [\"sessions_yield\"]\n");
        let fake = FakeModels::start(|r| {
            let reply = match common::tool_results(r).len() {
                0 => Reply::Calls(vec![call("y", "sessions_yield", json!({}))]),
                _ => Reply::Text("done".into()),
            };
            Reply::WithUsage(Box::new(reply), 0, 0)
        });
        let runtime = Runtime::start(&config(&fake, true, Limits::default()), agents(&[&boss])).await.unwrap();
        let summary = run(&runtime, "boss").await;
        assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "done"), "{model}");
        assert_eq!(fake.requests_for("boss").len(), 2, "{model}");
        let tree = runtime.registry.tree(&summary.session_key).unwrap();
        assert_eq!(
            tree.notices,
            ["the provider reported no token usage for this call; token and cost budgets do not count it"],
            "{model}"
        );
        runtime.shutdown().await.unwrap();
        fake.stop().await;
    }
}

/// A stream's failure, in both API kinds: retried when nothing had been received (the
/// second attempt answers), never once text had arrived.
#[actix_rt::test]
async fn a_failed_stream_is_retried_only_before_any_output() {
    for model in ["fake/worker", "claude/worker"] {
        let worker = format!("id = \"worker\"\nmodel = \"{model}\"\n");
        for (reply, retried, error) in [
            (Reply::StreamError(String::new()), true, ""),
            (Reply::StreamCut(String::new()), true, ""),
            (Reply::StreamError("partial".into()), false, "error event: "),
            (Reply::StreamCut("partial".into()), false, "the stream ended before its end marker"),
        ] {
            let first = std::sync::Mutex::new(Some(reply));
            let fake = FakeModels::start(move |_| first.lock().unwrap().take().unwrap_or(Reply::Text("second".into())));
            let runtime = Runtime::start(&config(&fake, true, Limits::default()), agents(&[&worker])).await.unwrap();
            let summary = run(&runtime, "worker").await;
            let provider = model.split('/').next().unwrap();
            if retried {
                assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "second"), "{model}");
                let tree = runtime.registry.tree(&summary.session_key).unwrap();
                let notice = format!("{model} failed with a broken stream (");
                assert!(tree.notices[0].starts_with(&notice), "{model}: {:?}", tree.notices);
            } else {
                assert_eq!(summary.outcome, Outcome::Error, "{model}");
                let prefix = format!("model call failed: provider {provider}'s stream failed: {error}");
                assert!(summary.text.starts_with(&prefix), "{model}: {}", summary.text);
                assert_eq!(fake.requests_for("worker").len(), 1, "{model}: no retry after output");
            }
            runtime.shutdown().await.unwrap();
            fake.stop().await;
        }
    }
}

#[actix_rt::test]
async fn a_stream_that_stalls_past_the_idle_timeout_fails_instead_of_hanging() {
    let fake = FakeModels::start(|_| Reply::StreamStall("thinking".into()));
    let limits = Limits { model_idle_timeout: Duration::from_millis(300), ..Limits::default() };
    let runtime = Runtime::start(&config(&fake, true, limits), agents(&[WORKER])).await.unwrap();
    let summary = run(&runtime, "worker").await;
    assert_eq!(summary.outcome, Outcome::Error);
    assert_eq!(
        summary.text,
        "model call failed: provider fake's stream failed: no data for 0.3 s (limits.model_idle_timeout_seconds)"
    );
    assert_eq!(fake.requests_for("worker").len(), 1, "text had arrived: not retried");
    assert_eq!(common::calls_in_flight_settled(&runtime).await, 0);
    runtime.shutdown().await.unwrap();
    // The whole call's bound, when it comes first, names its own setting.
    let limits = Limits { model_request_timeout: Duration::from_millis(400), ..Limits::default() };
    let runtime = Runtime::start(&config(&fake, true, limits), agents(&[WORKER])).await.unwrap();
    let summary = run(&runtime, "worker").await;
    assert_eq!(
        summary.text,
        "model call failed: provider fake's stream failed: the connection failed: no complete answer within 0.4 s (limits.model_request_timeout_seconds)"
    );
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn anthropic_requests_carry_its_headers_system_prompt_tools_and_tool_results() {
    let fake = boss_and_worker(|| Reply::Text("worked".into()));
    let runtime = Runtime::start(&config(&fake, true, Limits::default()), agents(&[BOSS, WORKER])).await.unwrap();
    let summary = run(&runtime, "boss").await;
    assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);
    let requests = fake.anthropic.lock().unwrap().clone();
    assert!(requests.len() >= 2);
    for request in &requests {
        assert_eq!(request.header("x-api-key"), Some("sk-test"));
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(request.header("authorization"), None);
        assert_eq!((request.body["model"].clone(), request.body["stream"].clone()), (json!("boss"), json!(true)));
        assert_eq!(request.body["max_tokens"], json!(hivegate::model::DEFAULT_MAX_TOKENS));
        assert!(request.body["system"].as_str().unwrap().contains("You are session agent:boss:main"));
        let tools: Vec<&str> =
            request.body["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(tools, ["sessions_spawn", "sessions_yield"]);
        assert_eq!(request.body["tools"][0]["input_schema"]["type"], "object");
        assert_eq!(request.body["messages"][0], json!({"role": "user", "content": [{"type": "text", "text": "go"}]}));
    }
    // The second call answers the first's tool calls with tool_result blocks, in a user turn.
    let second = &requests[1].body["messages"];
    assert_eq!(second[1]["role"], "assistant");
    assert_eq!(
        second[1]["content"][0],
        json!({"type": "tool_use", "id": "toolu_s", "name": "sessions_spawn", "input": {"task": "work", "agentId": "worker"}})
    );
    assert_eq!(second[2]["role"], "user");
    let blocks = second[2]["content"].as_array().unwrap();
    let results: Vec<&str> = blocks.iter().filter_map(|b| b["tool_use_id"].as_str()).collect();
    assert_eq!(results, ["toolu_s", "toolu_y"], "{blocks:?}");
    assert_eq!(second.as_array().unwrap().len(), 3, "{second:#}");
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// `hivegate run`, the binary: an Anthropic brain (streaming, priced) drives two
/// OpenAI-compatible executors (streaming, priced); every session ok, exit 0, each
/// node's cost its calls times its prices.
#[actix_rt::test]
async fn hivegate_run_with_an_anthropic_brain_and_openai_executors() {
    let fake = FakeModels::start(|request| match request.model.as_str() {
        "exec" => Reply::WithUsage(Box::new(Reply::Text("done".into())), 1000, 200),
        _ if !common::has_tool_call(request, "sessions_spawn") => Reply::WithUsage(
            Box::new(Reply::Calls(vec![
                call("toolu_1", "sessions_spawn", json!({"task": "one", "agentId": "exec"})),
                call("toolu_2", "sessions_spawn", json!({"task": "two", "agentId": "exec"})),
                call("toolu_3", "sessions_yield", json!({})),
            ])),
            3000,
            100,
        ),
        _ if announcements(request).len() < 2 => {
            Reply::WithUsage(Box::new(Reply::Calls(vec![call("toolu_4", "sessions_yield", json!({}))])), 3000, 10)
        }
        _ => Reply::WithUsage(Box::new(Reply::Text("both done".into())), 3000, 50),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[providers.claude]\nbase_url = \"{url}\"\napi = \"anthropic-messages\"\napi_key_env = \"CLAUDE_KEY\"\n\
         [providers.claude.models.\"claude-opus\"]\ninput_per_mtok = 15.0\noutput_per_mtok = 75.0\n\
         [providers.cheap]\nbase_url = \"{url}\"\napi_key_env = \"CHEAP_KEY\"\n\
         [providers.cheap.models.exec]\ninput_per_mtok = 0.2\noutput_per_mtok = 0.6\n",
        url = fake.url
    );
    std::fs::write(dir.path().join("hivegate.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    let brain = "id = \"brain\"\nmodel = \"claude/claude-opus\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"exec\"]\n";
    std::fs::write(dir.path().join("agents/brain.toml"), brain).unwrap();
    std::fs::write(dir.path().join("agents/exec.toml"), "id = \"exec\"\nmodel = \"cheap/exec\"\n").unwrap();
    let env = [("CLAUDE_KEY", "sk-ant-test"), ("CHEAP_KEY", "sk-cheap-test")];
    let report = common::run_binary_json(dir.path(), &env, &["--agent", "brain", "plan and delegate"]).await;
    assert_eq!(report["outcomes"]["ok"], 3, "{report:#}");
    assert_eq!(report["root"]["model"], "claude/claude-opus");
    let brain_calls = fake.requests_for("claude-opus").len();
    assert_eq!(brain_calls, fake.anthropic.lock().unwrap().len(), "every brain call went to /messages");
    assert!(fake.anthropic.lock().unwrap().iter().all(|r| r.header("x-api-key") == Some("sk-ant-test")));
    assert!(fake.requests_for("exec").iter().all(|r| r.stream), "executors streamed too");
    let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-12;
    let brain_cost: f64 = {
        // The first call: 3000 in, 100 out; each later one 3000 in and 10 or 50 out.
        let tree = &report["root"];
        let prompt = tree["usage"]["promptTokens"].as_f64().unwrap();
        let completion = tree["usage"]["completionTokens"].as_f64().unwrap();
        assert_eq!(prompt, 3000.0 * brain_calls as f64);
        (prompt * 15.0 + completion * 75.0) / 1e6
    };
    assert!(close(&report["root"]["costUsd"], brain_cost), "{}", report["root"]["costUsd"]);
    let exec_cost = (1000.0 * 0.2 + 200.0 * 0.6) / 1e6;
    for child in report["root"]["children"].as_array().unwrap() {
        assert_eq!(child["model"], "cheap/exec");
        assert!(close(&child["costUsd"], exec_cost), "{}", child["costUsd"]);
    }
    assert!(close(&report["costUsd"], brain_cost + 2.0 * exec_cost));
    let exec_on_brain_model = (1000.0 * 15.0 + 200.0 * 75.0) / 1e6;
    assert!(close(&report["costOnRootModelUsd"], brain_cost + 2.0 * exec_on_brain_model));
    fake.stop().await;
}

/// A spawn's thinking level on an Anthropic provider: the child's requests ask for a
/// thinking budget on top of max_tokens, and its signed thinking block goes back with
/// the turn that called a tool (the fake refuses the request otherwise, as the API does),
/// streamed and not.
#[actix_rt::test]
async fn thinking_on_anthropic_asks_a_budget_and_sends_the_signed_thought_back() {
    for stream in [true, false] {
        let fake = FakeModels::start(|request| match (request.model.as_str(), common::tool_results(request).len()) {
            ("thinker", 0) => Reply::Calls(vec![call("toolu_y", "sessions_yield", json!({}))]),
            ("thinker", _) => Reply::Text("thought it through".into()),
            (_, 0) => Reply::Calls(vec![
                call("toolu_s", "sessions_spawn", json!({"task": "think", "agentId": "thinker", "thinking": "high"})),
                call("toolu_y", "sessions_yield", json!({})),
            ]),
            _ => Reply::Text(announcements(request).join("\n")),
        });
        let boss = "id = \"boss\"\nmodel = \"claude/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"thinker\"]\n";
        let thinker = "id = \"thinker\"\nmodel = \"claude/thinker\"\n[tools]\nallow = [\"sessions_yield\"]\n";
        let runtime =
            Runtime::start(&config(&fake, stream, Limits::default()), agents(&[boss, thinker])).await.unwrap();
        let summary = run(&runtime, "boss").await;
        assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);
        assert!(summary.text.contains("thought it through"), "stream {stream}: {}", summary.text);
        let requests = fake.anthropic.lock().unwrap().clone();
        let thinker: Vec<&Value> = requests.iter().map(|r| &r.body).filter(|b| b["model"] == "thinker").collect();
        assert_eq!(thinker.len(), 2, "stream {stream}");
        for body in &thinker {
            assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 16384}));
            assert_eq!(body["max_tokens"], json!(hivegate::model::DEFAULT_MAX_TOKENS + 16384));
        }
        let replayed = &thinker[1]["messages"][1]["content"][0];
        assert_eq!(replayed["thinking"], common::FAKE_THOUGHT, "stream {stream}: {}", thinker[1]);
        // The boss asked for no level: no thinking, and its answer shows none.
        let boss_body = requests.iter().map(|r| &r.body).find(|b| b["model"] == "boss").unwrap();
        assert!(boss_body.get("thinking").is_none());
        assert!(!summary.text.contains(common::FAKE_THOUGHT));
        runtime.shutdown().await.unwrap();
        fake.stop().await;
    }
}
