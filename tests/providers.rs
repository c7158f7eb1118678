//! Providers that behave like real ones: 429 with `Retry-After`, 503, errors that must
//! not be retried, a default model that always fails (fallback) and an explicit spawn
//! model that must not fall back. The scripted fake provider, the real HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{agents, announcements, call, FakeModels, Reply};
use hivegate::config::{Config, Limits};
use hivegate::gateway::{Outcome, RunSummary, StartMain};
use hivegate::model::pricing::Price;
use hivegate::model::retry::RetryPolicy;
use hivegate::model::{Api, Provider};
use hivegate::runtime::Runtime;
use serde_json::json;

fn config(fake: &FakeModels, retry: RetryPolicy) -> Config {
    let mut config = Config {
        bind: ([127, 0, 0, 1], 0).into(),
        limits: Limits::default(),
        state_dir: "".into(),
        ..Config::default()
    };
    config.providers.insert(
        "fake",
        Provider { retry, ..Provider::new(Api::OpenAiCompletions, fake.url.clone(), Some("k".into())) },
    );
    config
}

/// A strong model for the boss and a cheap one for workers.
const STRONG: Price = Price { input_per_mtok: 10.0, output_per_mtok: 30.0, cached_input_per_mtok: None };
const CHEAP: Price = Price { input_per_mtok: 0.1, output_per_mtok: 0.3, cached_input_per_mtok: None };

fn priced(fake: &FakeModels) -> Config {
    let mut config = config(fake, RetryPolicy::default());
    config.pricing.insert("fake/boss", STRONG);
    config.pricing.insert("fake/worker", CHEAP);
    config
}

async fn start(fake: &FakeModels, retry: RetryPolicy, agent_files: &[&str]) -> Runtime {
    Runtime::start(&config(fake, retry), agents(agent_files)).await.unwrap()
}

async fn run(runtime: &Runtime, agent: &str) -> RunSummary {
    common::run_to_end(runtime, StartMain::new(agent, "go")).await
}

const BOSS: &str = "id = \"boss\"\nmodel = \"fake/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"worker\"]\n";
const WORKER: &str = "id = \"worker\"\nmodel = \"fake/worker\"\nfallbacks = [\"fake/backup\"]\n";

/// The boss spawns one worker (with `spawn` as its arguments), waits, and reports what
/// it heard.
fn boss_script(spawn: serde_json::Value) -> impl Fn(&hivegate::model::openai::CompletionRequest) -> Reply {
    move |request| {
        if !common::has_tool_call(request, "sessions_spawn") {
            Reply::Calls(vec![call("s", "sessions_spawn", spawn.clone()), call("y", "sessions_yield", json!({}))])
        } else if announcements(request).is_empty() {
            Reply::Calls(vec![call("y2", "sessions_yield", json!({}))])
        } else {
            Reply::Text(announcements(request).join("\n"))
        }
    }
}

/// A boss that spawns one worker, and a worker that answers at once.
fn boss_and_worker() -> FakeModels {
    let boss = boss_script(json!({"task": "work", "agentId": "worker"}));
    FakeModels::start(move |request| match request.model.as_str() {
        "worker" => Reply::Text("worked".into()),
        _ => boss(request),
    })
}

/// Like [`boss_and_worker`], but the boss's first call gets a 503 and the worker's first
/// call a 429 with `Retry-After: 1`.
fn flaky_boss_and_worker() -> FakeModels {
    let (boss_calls, worker_calls) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let boss = boss_script(json!({"task": "work", "agentId": "worker"}));
    FakeModels::start(move |request| match request.model.as_str() {
        "boss" if boss_calls.fetch_add(1, Ordering::SeqCst) == 0 => Reply::Status(503, None),
        "worker" if worker_calls.fetch_add(1, Ordering::SeqCst) == 0 => Reply::Status(429, Some("1")),
        "worker" => Reply::Text("worked".into()),
        _ => boss(request),
    })
}

#[actix_rt::test]
async fn a_503_and_a_429_with_retry_after_are_retried_and_said() {
    let fake = flaky_boss_and_worker();
    let runtime = start(&fake, RetryPolicy::default(), &[BOSS, WORKER]).await;
    let summary = run(&runtime, "boss").await;
    assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);
    assert!(
        summary.text.contains("\nstatus: completed; ready for parent review\n") && summary.text.contains("worked"),
        "{}",
        summary.text
    );
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    assert_eq!(tree.notices.len(), 1, "{:?}", tree.notices);
    assert!(tree.notices[0].starts_with("fake/boss failed with HTTP 503; retry 1 of 3 after "), "{:?}", tree.notices);
    assert_eq!(
        tree.children[0].notices,
        vec!["fake/worker failed with HTTP 429; retry 1 of 3 after 1.0 s".to_string()]
    );
    let worker = fake.arrivals_for("worker");
    assert_eq!(worker.len(), 2);
    assert!(worker[1] - worker[0] >= Duration::from_secs(1), "retried {:?} after the 429", worker[1] - worker[0]);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn other_4xx_answers_are_not_retried() {
    let fake = FakeModels::start(|_| Reply::Status(400, None));
    let runtime = start(&fake, RetryPolicy::default(), &[WORKER]).await;
    let summary = run(&runtime, "worker").await;
    // The default model failed without a retry, then its fallback (also 400) did.
    assert_eq!(summary.outcome, Outcome::Error);
    assert_eq!(summary.text, "model call failed: provider fake answered HTTP 400: scripted 400");
    assert_eq!((fake.requests_for("worker").len(), fake.requests_for("backup").len()), (1, 1));
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// A provider's own words reach the parent's model as the child's final text: cut to
/// 300 characters, however long the error body's message.
#[actix_rt::test]
async fn a_providers_long_error_message_is_cut() {
    let fake = FakeModels::start(|_| Reply::StatusSaying(400, "overloaded ".repeat(100_000)));
    let runtime = start(&fake, RetryPolicy::default(), &[WORKER]).await;
    let summary = run(&runtime, "worker").await;
    assert_eq!(summary.outcome, Outcome::Error);
    let said = summary.text.strip_prefix("model call failed: provider fake answered HTTP 400: ").unwrap();
    assert_eq!((said.chars().count(), said.ends_with('…')), (301, true), "{}", summary.text);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn a_default_model_that_always_fails_runs_on_its_fallback_with_a_notice() {
    let fake = FakeModels::start(|request| match request.model.as_str() {
        "worker" => Reply::Status(503, None),
        _ => Reply::Text(format!("answered by {}", request.model)),
    });
    let quick = RetryPolicy { max_retries: 1, base: Duration::from_millis(20), ..RetryPolicy::default() };
    let runtime = start(&fake, quick, &[WORKER]).await;
    let summary = run(&runtime, "worker").await;
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "answered by backup"));
    assert_eq!(fake.requests_for("worker").len(), 2, "one retry before failing over");
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    assert_eq!(tree.model.as_str(), "fake/backup", "the tree shows the model that answered");
    assert_eq!(tree.notices.len(), 2, "{:?}", tree.notices);
    assert!(tree.notices[0].starts_with("fake/worker failed with HTTP 503; retry 1 of 1 after "));
    assert_eq!(tree.notices[1], "fell back from fake/worker to fake/backup: HTTP 503");
    // The main session's next run starts on its own model again, not the fallback.
    let again = run(&runtime, "worker").await;
    assert_eq!((again.outcome, again.text.as_str()), (Outcome::Ok, "answered by backup"));
    assert_eq!(fake.requests_for("worker").len(), 4);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn a_model_named_by_the_spawn_is_strict_and_never_falls_back() {
    let boss = boss_script(json!({"task": "work", "agentId": "worker", "model": "fake/worker"}));
    let fake = FakeModels::start(move |request| match request.model.as_str() {
        "worker" => Reply::Status(503, None),
        "backup" => Reply::Text("should not be asked".into()),
        _ => boss(request),
    });
    let quick = RetryPolicy { max_retries: 1, base: Duration::from_millis(20), ..RetryPolicy::default() };
    let runtime = start(&fake, quick, &[BOSS, WORKER]).await;
    let summary = run(&runtime, "boss").await;
    assert_eq!(summary.outcome, Outcome::Ok);
    assert!(
        summary.text.contains("\nstatus: failed: model call failed: ")
            && summary.text.contains("provider fake answered HTTP 503: scripted 503"),
        "{}",
        summary.text
    );
    assert!(fake.requests_for("backup").is_empty(), "no silent switch");
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    let child = &tree.children[0];
    assert_eq!(child.error.as_deref(), Some("model call failed: provider fake answered HTTP 503: scripted 503"));
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn each_node_costs_its_calls_times_the_configured_prices_and_the_tree_sums_them() {
    let fake = boss_and_worker();
    let config = priced(&fake);
    let runtime = Runtime::start(&config, agents(&[BOSS, WORKER])).await.unwrap();
    let summary = run(&runtime, "boss").await;
    assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    // The fake reports 10 prompt and 5 completion tokens per call.
    let per_call = |p: Price| (10.0 * p.input_per_mtok + 5.0 * p.output_per_mtok) / 1e6;
    let boss_cost = fake.requests_for("boss").len() as f64 * per_call(STRONG);
    let worker_cost = fake.requests_for("worker").len() as f64 * per_call(CHEAP);
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    assert!(close(tree.cost_usd, boss_cost), "{:?} vs {boss_cost}", tree.cost_usd);
    assert!(close(tree.children[0].cost_usd, worker_cost), "{:?} vs {worker_cost}", tree.children[0].cost_usd);
    let (total, on_root) = hivegate::report::costs(&tree, &config.pricing);
    assert!(close(total, boss_cost + worker_cost));
    let worker_on_root = fake.requests_for("worker").len() as f64 * per_call(STRONG);
    assert!(close(on_root, boss_cost + worker_on_root), "{on_root:?}");
    // A model without a price makes the cost unknown, not zero.
    let mut unpriced = config.clone();
    unpriced.pricing = Default::default();
    let runtime2 = Runtime::start(&unpriced, agents(&[BOSS, WORKER])).await.unwrap();
    let summary = run(&runtime2, "boss").await;
    let tree = runtime2.registry.tree(&summary.session_key).unwrap();
    assert_eq!((tree.cost_usd, hivegate::report::costs(&tree, &unpriced.pricing)), (None, (None, None)));
    runtime.shutdown().await.unwrap();
    runtime2.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn a_cost_budget_ends_the_tree_that_exceeds_it() {
    let fake = boss_and_worker();
    let config = priced(&fake);
    let runtime = Runtime::start(&config, agents(&[BOSS, WORKER])).await.unwrap();
    let start = StartMain {
        agent_id: "boss".into(),
        task: "go".into(),
        run_timeout: None,
        budget_tokens: None,
        budget_usd: Some(0.0001),
        run_id: None,
        session_key: None,
    };
    let summary = common::run_to_end(&runtime, start).await;
    assert_eq!(summary.outcome, Outcome::Error);
    assert_eq!(summary.text, "cost budget exceeded: $0.000250 spent of $0.000100 (this call cost $0.000250)");
    assert_eq!(fake.requests_for("boss").len(), 1);
    assert!(fake.requests_for("worker").is_empty(), "the spawn that call asked for was not made");
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// `hivegate run`, the binary, against the fake provider: the brain's first call gets a
/// 503 and the executor's first call a 429 with `Retry-After: 1`; the tree still ends ok
/// (exit 0), the retries are notices, and each node's cost is its calls times its price.
#[actix_rt::test]
async fn hivegate_run_rides_out_a_503_and_a_429_and_reports_cost() {
    let fake = flaky_boss_and_worker();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[providers.fake]\nbase_url = \"{}\"\napi_key_env = \"FAKE_KEY\"\n\
         [providers.fake.models.boss]\ninput_per_mtok = 10.0\noutput_per_mtok = 30.0\n\
         [providers.fake.models.worker]\ninput_per_mtok = 0.1\noutput_per_mtok = 0.3\n",
        fake.url
    );
    std::fs::write(dir.path().join("hivegate.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/boss.toml"), BOSS).unwrap();
    std::fs::write(dir.path().join("agents/worker.toml"), WORKER).unwrap();
    let report = common::run_binary_json(dir.path(), &[("FAKE_KEY", "sk-fake")], &["--agent", "boss", "go"]).await;
    assert_eq!(report["outcomes"]["ok"], 2);
    let root = &report["root"];
    assert!(root["notices"][0].as_str().unwrap().starts_with("fake/boss failed with HTTP 503; retry 1 of 3"));
    assert_eq!(root["children"][0]["notices"], json!(["fake/worker failed with HTTP 429; retry 1 of 3 after 1.0 s"]));
    let worker = fake.arrivals_for("worker");
    assert!(worker[1] - worker[0] >= Duration::from_secs(1));
    // 10 prompt + 5 completion tokens per answered call; the failed calls cost nothing.
    let answered = |model: &str| (fake.requests_for(model).len() - 1) as f64;
    let boss_cost = answered("boss") * (10.0 * 10.0 + 5.0 * 30.0) / 1e6;
    let worker_cost = answered("worker") * (10.0 * 0.1 + 5.0 * 0.3) / 1e6;
    let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-12;
    assert!(close(&root["costUsd"], boss_cost), "{}", root["costUsd"]);
    assert!(close(&root["children"][0]["costUsd"], worker_cost));
    assert!(close(&report["costUsd"], boss_cost + worker_cost));
    let worker_on_boss_model = answered("worker") * (10.0 * 10.0 + 5.0 * 30.0) / 1e6;
    assert!(close(&report["costOnRootModelUsd"], boss_cost + worker_on_boss_model));
    fake.stop().await;
}
