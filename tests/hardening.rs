//! The runtime side attacked: the builtin provider reached from outside or asked for an
//! absurd fan-out, a provider that never stops sending, a provider that reports absurd
//! usage, and session actors that die without reporting their end. Each test fails
//! without its fix. Real gateway, real HTTP, the scripted fake provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{agent_toml, announcements, call, gateway, FakeModels, Reply};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hivegate::config::{Config, Limits};
use hivegate::gateway::{Outcome, StartMain};
use hivegate::model::{ChatRequest, ChatResponse, ModelClient, ModelError, ModelRef};
use hivegate::runtime::Runtime;
use serde_json::{json, Value};

async fn run(runtime: &Runtime, agent: &str, task: &str, budget: Option<u64>) -> hivegate::gateway::RunSummary {
    let start = StartMain {
        agent_id: agent.into(),
        task: task.into(),
        run_timeout: None,
        budget_tokens: budget,
        budget_usd: None,
        run_id: None,
        session_key: None,
    };
    common::run_to_end(runtime, start).await
}

#[actix_rt::test]
async fn the_builtin_provider_serves_only_its_gateway_and_refuses_absurd_fan_out() {
    let runtime = Runtime::start(
        &Config { state_dir: "".into(), bind: ([127, 0, 0, 1], 0).into(), ..Config::default() },
        hivegate::agent::Agents::shipped().unwrap(),
    )
    .await
    .unwrap();
    let (addr, secret) = runtime.builtin_provider().unwrap();
    assert_ne!(addr, runtime.http_addr, "its own listener, not the public port");
    assert!(addr.ip().is_loopback());
    let url = format!("http://{addr}/v1/chat/completions");
    let body = |task: &str| json!({"model": "executor", "messages": [{"role": "user", "content": task}]}).to_string();
    let http = reqwest::Client::new();
    let post = |auth: Option<&str>, content_type: &str, body: String| {
        let mut request = http.post(&url).header("content-type", content_type).body(body);
        if let Some(auth) = auth {
            request = request.bearer_auth(auth);
        }
        request.send()
    };
    assert_eq!(post(None, "application/json", body("x")).await.unwrap().status(), 401);
    assert_eq!(post(Some("guess"), "application/json", body("x")).await.unwrap().status(), 401);
    assert_eq!(post(Some(secret.expose()), "text/plain", body("x")).await.unwrap().status(), 415);
    let huge = post(Some(secret.expose()), "application/json", body("x [split 4294967295 x1]")).await.unwrap();
    assert_eq!(huge.status(), 400);
    let error: Value = huge.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "the task asks for 4294967295 subtasks; at most 64 (limits.max_children_per_session)"
    );
    let too_big = "y".repeat(hivegate::model::server::BODY_LIMIT + 1);
    assert_eq!(post(Some(secret.expose()), "application/json", body(&too_big)).await.unwrap().status(), 413);
    let fine = post(Some(secret.expose()), "application/json", body("count")).await.unwrap();
    assert_eq!(fine.status(), 200);
    // And the gateway's own sessions still reach it.
    let summary = run(&runtime, "brain", "alpha; beta", None).await;
    assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);
    runtime.shutdown().await.unwrap();
}

#[actix_rt::test]
async fn a_model_spawning_a_builtin_executor_with_an_absurd_split_gets_an_error_not_an_abort() {
    let fake = FakeModels::start(|request| {
        if announcements(request).is_empty() {
            Reply::Calls(vec![
                call("s", "sessions_spawn", json!({"task": "boom [split 4294967295 x1]", "model": "builtin/executor"})),
                call("y", "sessions_yield", json!({})),
            ])
        } else {
            Reply::Text(announcements(request).join("\n"))
        }
    });
    let brain = agent_toml("boss", "boss", &["boss"]);
    let runtime = gateway(&fake, Limits::default(), &[&brain]).await;
    let summary = run(&runtime, "boss", "go", None).await;
    assert_eq!(summary.outcome, Outcome::Ok);
    assert!(summary.text.starts_with("[Internal task completion event]\n"), "{}", summary.text);
    assert!(summary.text.contains("\ntask: subagent\nstatus: failed: model call failed: "), "{}", summary.text);
    assert!(
        summary.text.contains(
            "model call failed: provider builtin answered HTTP 400: the task asks for 4294967295 subtasks; at most 64 (limits.max_children_per_session)"
        ),
        "{}",
        summary.text
    );
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn a_provider_body_that_never_ends_fails_the_call_at_the_cap() {
    let fake = FakeModels::start(|_| Reply::Endless);
    let limits = Limits { max_model_response_bytes: 1 << 20, ..Limits::default() };
    let runtime = gateway(&fake, limits, &[&agent_toml("solo", "solo", &[])]).await;
    let summary = run(&runtime, "solo", "talk", None).await;
    assert_eq!(
        (summary.outcome, summary.text.as_str()),
        (
            Outcome::Error,
            "model call failed: provider fake sent a response larger than 1048576 bytes (limits.max_model_response_bytes)"
        )
    );
    assert_eq!(common::calls_in_flight_settled(&runtime).await, 0);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn absurd_usage_ends_the_run_at_the_budget_instead_of_wrapping_it() {
    let fake = FakeModels::start(|request| {
        if request.model == "boss"
            && announcements(request).is_empty()
            && !common::has_tool_call(request, "sessions_spawn")
        {
            let calls = Reply::Calls(vec![call("s", "sessions_spawn", json!({"task": "work"}))]);
            Reply::WithUsage(Box::new(calls), u64::MAX, 1)
        } else {
            Reply::WithUsage(Box::new(Reply::Text("done".into())), u64::MAX, u64::MAX)
        }
    });
    let brain = agent_toml("boss", "boss", &["boss"]);
    let runtime = gateway(&fake, Limits::default(), &[&brain]).await;
    // With a budget: the first charge exceeds it, the run ends there, and the spawn the
    // call asked for is never made.
    let summary = run(&runtime, "boss", "go", Some(1000)).await;
    assert_eq!(summary.outcome, Outcome::Error);
    assert_eq!(
        summary.text,
        format!("token budget exceeded: {} tokens used of 1000 (this call used {} tokens)", u64::MAX, u64::MAX)
    );
    assert_eq!(fake.requests_for("boss").len(), 1);
    assert_eq!(runtime.stats.spawns(), 0);
    assert_eq!((summary.usage.prompt_tokens, summary.usage.completion_tokens), (u64::MAX, 1));
    runtime.shutdown().await.unwrap();

    // Without a budget: the run finishes and every sum saturates (a debug build would
    // panic on overflow inside the session).
    let runtime = gateway(&fake, Limits::default(), &[&brain]).await;
    let summary = run(&runtime, "boss", "go", None).await;
    assert_eq!((summary.outcome, summary.usage.total()), (Outcome::Ok, u64::MAX), "{}", summary.text);
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    assert_eq!((tree.tokens, tree.children[0].tokens), (u64::MAX, u64::MAX));
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// A model client whose calls for `x/boom` panic inside the session actor.
struct Boom;

impl ModelClient for Boom {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        async move {
            if request.model.model() == "boom" {
                panic!("the model client blew up");
            }
            let spawned = request.messages.iter().any(|m| matches!(m, hivegate::model::Message::Tool { .. }));
            let announced =
                request.messages.iter().filter(|m| matches!(m, hivegate::model::Message::User { .. })).count() > 1;
            let tool_calls = if spawned {
                if announced {
                    vec![]
                } else {
                    vec![hivegate::model::ToolCall {
                        id: "y".into(),
                        name: "sessions_yield".into(),
                        arguments: "{}".into(),
                    }]
                }
            } else if request.model.model() == "boss" {
                let args = json!({"task": "explode", "model": "x/boom"}).to_string();
                vec![hivegate::model::ToolCall { id: "s".into(), name: "sessions_spawn".into(), arguments: args }]
            } else {
                vec![]
            };
            let last = request.messages.last().map(|m| format!("{m:?}")).unwrap_or_default();
            let content = tool_calls.is_empty().then_some(last);
            Ok(ChatResponse { content, tool_calls, ..ChatResponse::default() })
        }
        .boxed()
    }

    fn check_model(&self, _: &ModelRef) -> Result<(), ModelError> {
        Ok(())
    }
}

#[actix_rt::test]
async fn a_session_actor_that_dies_ends_its_run_and_its_parent_is_told() {
    let config = Config { state_dir: "".into(), bind: ([127, 0, 0, 1], 0).into(), ..Config::default() };
    let agents = common::agents(&[
        "id = \"boss\"\nmodel = \"x/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"boss\"]\n",
        "id = \"dud\"\nmodel = \"x/boom\"\n",
    ]);
    let runtime = Runtime::start_with_model(&config, agents, Arc::new(Boom)).await.unwrap();
    // A child dies mid-call: its run ends with an error and the parent hears of it
    // (before, the parent waited forever).
    let summary = run(&runtime, "boss", "go", None).await;
    assert_eq!(summary.outcome, Outcome::Ok);
    assert!(
        summary.text.contains("status: failed: the session actor stopped without reporting the end of its run"),
        "{}",
        summary.text
    );
    // A main session that dies: its run ends, and the next task starts a new session
    // instead of finding it busy forever.
    let dead = run(&runtime, "dud", "explode", None).await;
    assert_eq!(
        (dead.outcome, dead.text.as_str()),
        (Outcome::Error, "the session actor stopped without reporting the end of its run")
    );
    let again = run(&runtime, "dud", "explode again", None).await;
    assert_eq!(again.outcome, Outcome::Error);
    assert_eq!(runtime.stats.live_sessions(), 1, "only the idle boss main session is alive");
    runtime.shutdown().await.unwrap();
}
