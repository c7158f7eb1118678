//! Metrics and traces through the binary: `hivegate serve` on an ephemeral port with a
//! gateway token and the builtin provider. `/metrics` is refused without the token,
//! serves the `hivegate_*` series with the values a small tree leaves, and stays free of
//! session keys and run ids after a 10,101-session tree; spans reach a local OTLP/HTTP
//! receiver (`http/json`) as GenAI `invoke_agent`, `chat` and `execute_tool` spans, one
//! trace per tree, flushed by serve's graceful shutdown and by `run`'s exit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::otlp::{Receiver, Span};
use common::ws::{refused, request_pairing};
use common::wsclient::{ConnectOptions, Identity, WsClient};
use serde_json::{json, Value};

const TOKEN: &str = "telemetry-test-token";

/// The binary, from an empty directory, with no telemetry or gateway settings inherited.
fn hivegate(dir: &std::path::Path) -> Command {
    let mut command = common::hivegate_in(dir);
    command.env("HIVEGATE_STATE_DIR", dir.join("state")).env_remove("RUST_LOG");
    command
}

/// A child process killed and reaped however the test ends.
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `hivegate serve` on 127.0.0.1:0 with the token, once it says where it listens.
    async fn start(mut command: Command) -> Server {
        command.args(["serve", "--bind", "127.0.0.1:0", "--token", TOKEN]).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(30), line).await.unwrap().unwrap().unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap();
        Server { child, addr: url.trim_start_matches("http://").parse().unwrap() }
    }

    async fn metrics(&self, authorization: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("http://{}/metrics", self.addr));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = tokio::time::timeout(common::WAIT, request.send()).await.unwrap().unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn scrape(&self) -> String {
        let (status, text) = self.metrics(Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, 200, "{text}");
        text
    }

    /// SIGTERM, then wait (bounded) for the exit code.
    async fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "hivegate serve did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `name{labels} value` lines of the exposition, as (name{labels}, value).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn sample(text: &str, series: &str) -> f64 {
    *samples(text).get(series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Every label value in the exposition.
fn label_values(text: &str) -> HashSet<String> {
    let mut values = HashSet::new();
    for series in samples(text).keys() {
        let Some((_, labels)) = series.split_once('{') else { continue };
        for pair in labels.trim_end_matches('}').split(',').filter(|p| !p.is_empty()) {
            let (_, value) = pair.split_once('=').unwrap();
            values.insert(value.trim_matches('"').to_string());
        }
    }
    values
}

/// Run `message` on `agent`'s main session through an operator socket: the accepted ack,
/// then the final answer (`agent` answers twice with the request's id).
async fn run_tree(operator: &mut WsClient, agent: &str, message: &str) -> Value {
    let ack = operator
        .call("agent", json!({"message": message, "agentId": agent, "idempotencyKey": format!("run-{agent}")}))
        .await
        .unwrap();
    assert_eq!(ack["status"], "accepted", "{ack}");
    loop {
        let frame = operator.next_frame().await;
        if frame["type"] == "res" {
            assert_eq!(frame["ok"], true, "{frame}");
            return frame["payload"].clone();
        }
    }
}

#[actix_rt::test]
async fn metrics_need_the_token_and_count_a_small_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(hivegate(dir.path())).await;
    // Refused without the token, with a wrong one and with another scheme; said clearly.
    for (authorization, error) in [
        (None, "unauthorized: /metrics needs the gateway token, sent as 'Authorization: Bearer <token>'"),
        (Some("Bearer wrong-token"), "unauthorized: gateway token mismatch"),
        (
            Some("Basic dGVsZW1ldHJ5"),
            "unauthorized: /metrics needs the gateway token, sent as 'Authorization: Bearer <token>'",
        ),
    ] {
        let (status, body) = server.metrics(authorization).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"ok": false, "error": error}));
    }
    let before = server.scrape().await;
    assert_eq!(sample(&before, "hivegate_spawns_total{agent=\"executor\"}"), 0.0);
    assert_eq!(sample(&before, "hivegate_websocket_connections"), 0.0);

    // One operator runs a two-executor tree; a wrong token and an unknown node are refused.
    let scopes = ["operator.read", "operator.write"];
    let mut operator = WsClient::connected(server.addr, &[], &ConnectOptions::cli(TOKEN, &scopes)).await;
    let done = run_tree(&mut operator, "brain", "alpha; beta").await;
    assert_eq!(done["status"], "ok", "{done}");
    let (error, _) = refused(server.addr, &[], &ConnectOptions::cli("wrong-token", &scopes)).await;
    assert_eq!(error["details"]["code"], "AUTH_TOKEN_MISMATCH", "{error}");
    request_pairing(server.addr, &[], &ConnectOptions::node(&Identity::generate(), TOKEN), "not-paired").await;

    let sessions = operator.call("sessions.list", json!({})).await.unwrap()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let history = operator.call("chat.history", json!({"sessionKey": "agent:brain:main"})).await.unwrap();
    let brain_calls = history["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "assistant").count();
    // The sockets refused above are gone once their actors have stopped.
    let deadline = Instant::now() + common::WAIT;
    let text = loop {
        let text = server.scrape().await;
        if sample(&text, "hivegate_websocket_connections") == 1.0 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let tokens = |model: &str, field: &str| -> f64 {
        sessions.iter().filter(|s| s["model"] == model).map(|s| s[field].as_f64().unwrap()).sum()
    };
    let mut expected = BTreeMap::from([
        ("hivegate_spawns_total{agent=\"brain\"}".to_string(), 0.0),
        ("hivegate_spawns_total{agent=\"executor\"}".to_string(), 2.0),
        ("hivegate_spawns_total{agent=\"other\"}".to_string(), 0.0),
        ("hivegate_spawn_duration_seconds_count".to_string(), 2.0),
        // The brain's main session stays for its next task; the executors have gone.
        ("hivegate_sessions_active{agent=\"brain\"}".to_string(), 1.0),
        ("hivegate_sessions_active{agent=\"executor\"}".to_string(), 0.0),
        ("hivegate_sessions_active{agent=\"other\"}".to_string(), 0.0),
        (
            "hivegate_model_calls_total{provider=\"builtin\",model=\"brain\",outcome=\"ok\"}".to_string(),
            brain_calls as f64,
        ),
        ("hivegate_model_calls_total{provider=\"builtin\",model=\"executor\",outcome=\"ok\"}".to_string(), 2.0),
        (
            "hivegate_model_call_duration_seconds_count{provider=\"builtin\",model=\"brain\"}".to_string(),
            brain_calls as f64,
        ),
        ("hivegate_model_call_duration_seconds_count{provider=\"builtin\",model=\"executor\"}".to_string(), 2.0),
        // The builtin provider is free.
        ("hivegate_model_cost_usd_total{provider=\"builtin\",model=\"brain\"}".to_string(), 0.0),
        ("hivegate_model_cost_usd_total{provider=\"builtin\",model=\"executor\"}".to_string(), 0.0),
        ("hivegate_handshakes_total{outcome=\"accepted\"}".to_string(), 1.0),
        ("hivegate_handshakes_total{outcome=\"refused\"}".to_string(), 1.0),
        ("hivegate_handshakes_total{outcome=\"pairing_required\"}".to_string(), 1.0),
        ("hivegate_handshakes_total{outcome=\"rate_limited\"}".to_string(), 0.0),
        ("hivegate_handshakes_total{outcome=\"invalid\"}".to_string(), 0.0),
        ("hivegate_handshakes_total{outcome=\"timeout\"}".to_string(), 0.0),
        ("hivegate_pairing_events_total{event=\"device.pair.requested\"}".to_string(), 1.0),
        ("hivegate_pairing_events_total{event=\"device.pair.resolved\"}".to_string(), 0.0),
        ("hivegate_pairing_events_total{event=\"node.pair.requested\"}".to_string(), 0.0),
        ("hivegate_pairing_events_total{event=\"node.pair.resolved\"}".to_string(), 0.0),
        ("hivegate_pairing_events_total{event=\"other\"}".to_string(), 0.0),
        ("hivegate_websocket_connections".to_string(), 1.0),
    ]);
    for model in ["brain", "executor"] {
        for (kind, field) in [("input", "inputTokens"), ("output", "outputTokens")] {
            let series =
                format!("hivegate_model_tokens_total{{provider=\"builtin\",model=\"{model}\",type=\"{kind}\"}}");
            expected.insert(series, tokens(model, field));
        }
    }
    let got = samples(&text);
    let got: BTreeMap<String, f64> =
        expected.keys().map(|k| (k.clone(), got.get(k).copied().unwrap_or(f64::NAN))).collect();
    assert_eq!(got, expected, "{text}");
    assert!(tokens("executor", "inputTokens") > 0.0);
    for name in [
        "hivegate_spawns_total",
        "hivegate_spawn_duration_seconds",
        "hivegate_sessions_active",
        "hivegate_model_calls_total",
        "hivegate_model_call_duration_seconds",
        "hivegate_model_tokens_total",
        "hivegate_model_cost_usd_total",
        "hivegate_handshakes_total",
        "hivegate_pairing_events_total",
        "hivegate_websocket_connections",
    ] {
        let family = name.trim_end_matches("_total");
        assert!(text.contains(&format!("# HELP {family} ")), "{family} has help: {text}");
    }
    operator.close().await;
    assert_eq!(server.stop().await, Some(0));
}

/// A tree of 10,101 sessions (an executor splitting 100 ways, twice) leaves `/metrics`
/// with bounded labels only: none is a session key or a run id.
#[actix_rt::test]
async fn metrics_hold_no_session_key_or_run_id_after_ten_thousand_sessions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/executor.toml"), "[subagents]\nmax_children = 100\n").unwrap();
    std::fs::write(
        dir.path().join("hivegate.toml"),
        "[limits]\nmax_children_per_session = 100\nmax_sessions = 20000\nmax_retained_sessions = 20000\n",
    )
    .unwrap();
    let server = Server::start(hivegate(dir.path())).await;
    let url = format!("ws://{}", server.addr);
    let ops = |args: &[&str]| {
        let mut command = hivegate(dir.path());
        command.args(args).args(["--url", &url, "--token", TOKEN, "--json"]);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let run = ops(&["agent", "--agent", "executor", "--message", "survey [split 100 x2]", "--timeout", "300"]);
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let text = server.scrape().await;
    assert_eq!(sample(&text, "hivegate_spawns_total{agent=\"executor\"}"), 10_100.0, "{text}");
    // 10,000 leaves answer at once; the 101 that spawn call at least twice (spawn, summary).
    let calls = sample(&text, "hivegate_model_calls_total{provider=\"builtin\",model=\"executor\",outcome=\"ok\"}");
    assert!(calls >= 10_202.0, "{calls}");

    let listed = tokio::time::timeout(Duration::from_secs(120), ops(&["sessions", "list"])).await.unwrap().unwrap();
    assert_eq!(listed.status.code(), Some(0), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 10_101);
    let labels = label_values(&text);
    let allowed: HashSet<String> = [
        "brain",
        "executor",
        "other",
        "builtin",
        "ok",
        "cancelled",
        "input",
        "output",
        "accepted",
        "refused",
        "pairing_required",
        "rate_limited",
        "invalid",
        "timeout",
        "device.pair.requested",
        "device.pair.resolved",
        "node.pair.requested",
        "node.pair.resolved",
        "+Inf",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let unexpected: Vec<&String> =
        labels.iter().filter(|v| !allowed.contains(*v) && v.parse::<f64>().is_err()).collect();
    assert!(unexpected.is_empty(), "label values outside the bounded sets: {unexpected:?}");
    for session in sessions {
        for field in ["sessionKey", "runId"] {
            let value = session[field].as_str().unwrap();
            assert!(!text.contains(value), "{field} {value} in /metrics");
        }
    }
    assert_eq!(server.stop().await, Some(0));
}

/// The spans of a brain with two executors: one trace, executors under the brain's run,
/// model calls and spawns under their session's run, with the GenAI attributes.
fn check_tree(spans: &[Span], brain_key: &str) {
    let named = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let brains = named("invoke_agent brain");
    assert_eq!(brains.len(), 1, "{spans:#?}");
    let brain = &brains[0];
    assert_eq!(brain.parent, "", "the brain's run is the root");
    assert_eq!(brain.attributes["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(brain.attributes["gen_ai.agent.name"], "brain");
    assert_eq!(brain.attributes["gen_ai.agent.id"], "brain");
    assert_eq!(brain.attributes["gen_ai.conversation.id"], brain_key);
    assert_eq!(brain.attributes["gen_ai.provider.name"], "builtin");
    assert_eq!(brain.attributes["gen_ai.request.model"], "brain");
    assert_eq!(brain.attributes["hivegate.outcome"], "ok");
    let executors = named("invoke_agent executor");
    assert_eq!(executors.len(), 2, "{spans:#?}");
    for executor in &executors {
        assert_eq!((&executor.trace, &executor.parent), (&brain.trace, &brain.id), "{executor:?}");
        assert_eq!(executor.attributes["gen_ai.agent.name"], "executor");
        assert!(executor.attributes["gen_ai.conversation.id"]
            .as_str()
            .unwrap()
            .starts_with("agent:executor:subagent:"));
    }
    let runs: Vec<&Span> = std::iter::once(brain).chain(&executors).collect();
    let chats: Vec<Span> = spans.iter().filter(|s| s.name.starts_with("chat ")).cloned().collect();
    for run in &runs {
        let calls: Vec<&Span> = chats.iter().filter(|c| c.parent == run.id).collect();
        assert!(!calls.is_empty(), "{run:?} made model calls");
        let model = run.attributes["gen_ai.request.model"].as_str().unwrap();
        for call in &calls {
            assert_eq!(call.name, format!("chat {model}"));
            assert_eq!(call.trace, brain.trace);
            assert_eq!(call.kind, json!(3), "client: {call:?}");
            for (key, value) in [
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.provider.name", json!("builtin")),
                ("gen_ai.request.model", json!(model)),
                ("gen_ai.response.model", json!(model)),
                ("gen_ai.conversation.id", run.attributes["gen_ai.conversation.id"].clone()),
                ("gen_ai.usage.cost", json!(0.0)),
            ] {
                assert_eq!(call.attributes.get(key), Some(&value), "{key}: {call:?}");
            }
            assert!(call.int("gen_ai.usage.input_tokens") > 0 && call.int("gen_ai.usage.output_tokens") > 0);
        }
        // A run's usage is its calls'.
        for key in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
            assert_eq!(run.int(key), calls.iter().map(|c| c.int(key)).sum::<i64>(), "{key}: {run:?}");
        }
    }
    assert_eq!(chats.len(), chats.iter().filter(|c| runs.iter().any(|r| r.id == c.parent)).count());
    let spawns = named("execute_tool sessions_spawn");
    assert_eq!(spawns.len(), 2, "{spans:#?}");
    for spawn in &spawns {
        assert_eq!((&spawn.trace, &spawn.parent), (&brain.trace, &brain.id));
        assert_eq!(spawn.attributes["gen_ai.operation.name"], "execute_tool");
        assert_eq!(spawn.attributes["gen_ai.tool.name"], "sessions_spawn");
        assert_eq!(spawn.attributes["gen_ai.conversation.id"], brain_key);
        assert!(spawn.attributes["gen_ai.tool.call.id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}

fn otlp(command: &mut Command, receiver: &Receiver) {
    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url).env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
}

/// `serve`: spans of a tree run by an operator go out by serve's graceful shutdown at
/// the latest (nothing waits for the batch timer).
#[actix_rt::test]
async fn spans_of_a_tree_reach_an_otlp_receiver_from_serve() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut command = hivegate(dir.path());
    otlp(&mut command, &receiver);
    let server = Server::start(command).await;
    let scopes = ["operator.read", "operator.write"];
    let mut operator = WsClient::connected(server.addr, &[], &ConnectOptions::cli(TOKEN, &scopes)).await;
    let done = run_tree(&mut operator, "brain", "alpha; beta").await;
    assert_eq!(done["status"], "ok", "{done}");
    operator.close().await;
    assert_eq!(server.stop().await, Some(0));
    check_tree(&receiver.spans(), "agent:brain:main");
    receiver.handle.stop(true).await;
}

/// `run` exports its tree's spans before it exits.
#[actix_rt::test]
async fn run_flushes_its_spans_at_exit() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut command = hivegate(dir.path());
    otlp(&mut command, &receiver);
    command.args(["run", "--json", "alpha; beta"]);
    let output = tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || command.output()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    check_tree(&receiver.spans(), report["root"]["sessionKey"].as_str().unwrap());
    receiver.handle.stop(true).await;
}

/// gRPC is refused with a reason, and the command still runs.
#[test]
fn grpc_is_refused_with_a_reason_and_the_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let output = hivegate(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .args(["run", "--json", "alpha"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: hivegate exports traces over HTTP only"),
        "{stderr}"
    );
}
