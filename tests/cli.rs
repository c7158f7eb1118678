//! The binary as a user runs it: `demo` (the README's main job), `run`, `serve`, and
//! clear errors on bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

fn hivegate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hivegate"));
    // Run from an empty directory so no local hivegate.toml or agents/ is picked up, and
    // keep durable state out of $HOME.
    let state = std::env::temp_dir().join(format!("hivegate-cli-test-{}", std::process::id()));
    command
        .current_dir(std::env::temp_dir())
        .env_remove("HIVEGATE_CONFIG")
        .env_remove("HIVEGATE_GATEWAY_TOKEN")
        .env("HIVEGATE_STATE_DIR", state);
    command
}

fn collect(node: &Value, out: &mut Vec<Value>) {
    out.push(node.clone());
    for child in node["children"].as_array().unwrap() {
        collect(child, out);
    }
}

#[test]
fn demo_runs_a_two_level_tree_offline_with_every_session_ok() {
    let output = hivegate().args(["demo", "--executors", "50", "--depth", "2", "--json"]).output().unwrap();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["sessions"], 151);
    assert_eq!(report["pairingRequests"], 0);
    assert!(report["elapsedMs"].as_f64().unwrap() > 0.0);
    let latency = &report["spawnLatencyUs"];
    assert_eq!(latency["samples"], 150);
    assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    let mut nodes = Vec::new();
    collect(&report["root"], &mut nodes);
    assert_eq!(nodes.len(), 151);
    assert!(nodes.iter().all(|n| n["outcome"] == "ok"), "every session ends ok");
    let root = &report["root"];
    assert_eq!((root["agentId"].as_str(), root["model"].as_str()), (Some("brain"), Some("builtin/brain")));
    assert_eq!(root["children"].as_array().unwrap().len(), 50);
    for node in &nodes[1..] {
        assert_eq!((node["agentId"].as_str(), node["model"].as_str()), (Some("executor"), Some("builtin/executor")));
    }
    let grandchildren: usize =
        root["children"].as_array().unwrap().iter().map(|c| c["children"].as_array().unwrap().len()).sum();
    assert_eq!(grandchildren, 100);
    assert!(report["finalAnswer"].as_str().unwrap().starts_with("summary of 50 results"));
}

/// A reader that goes away before the output comes (`hivegate demo | head -0`) ends
/// the command with status 1 and nothing on stderr but what it said before; `println!`
/// used to panic there, with a backtrace.
#[test]
fn a_closed_stdout_ends_a_command_quietly_with_status_1() {
    let mut child = hivegate()
        .args(["demo", "--json", "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("hivegate demo did not end after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = said.join().unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert!(!said.contains("cannot write the output"), "a closed pipe is not an error to report: {said}");
}

#[test]
fn demo_prints_the_tree_for_people() {
    let output = hivegate().arg("demo").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let tree: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(tree.len(), 5, "{text}");
    assert!(tree[0].starts_with("agent:brain:main  brain  builtin/brain  ok"), "{text}");
    assert!(tree[1..].iter().all(|l| l.contains("executor  builtin/executor  ok")), "{text}");
    assert!(text.contains("spawn latency (4 spawns): p50"), "{text}");
    assert!(text.contains("pairing requests: 0"), "{text}");
}

#[test]
fn run_answers_a_task_with_the_builtin_brain() {
    let output =
        hivegate().args(["run", "--agent", "brain", "--json", "check the logs; fix the bug"]).output().unwrap();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["sessions"], 3);
    let answer = report["finalAnswer"].as_str().unwrap();
    assert!(answer.starts_with("summary of 2 results for 'check the logs; fix the bug'"), "{answer}");
    assert!(
        answer.contains("report: check the logs - done.") && answer.contains("report: fix the bug - done."),
        "{answer}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    for (args, expected) in [
        (vec!["run", "--agent", "nobody", "x"], "unknown agent 'nobody'; defined agents: brain, executor"),
        (vec!["run", "   "], "the task is empty"),
        (vec!["demo", "--executors", "0"], "0 is not in 1..=10000"),
        (vec!["--config", "/nonexistent/hivegate.toml", "demo"], "cannot read config file /nonexistent/hivegate.toml"),
        (
            vec!["run", "--timeout", "1e30", "x"],
            "--timeout must be at most 2592000 seconds, got 1000000000000000000000000000000",
        ),
        (vec!["run", "--timeout", "nan", "x"], "--timeout must be a positive number of seconds"),
        (vec!["run", "--budget-usd", "-1", "x"], "--budget-usd must be a positive number of USD, got -1"),
        (vec!["serve", "--bind", "0.0.0.0:0"], "refusing to listen on 0.0.0.0:0 without a gateway token"),
        // A worker's port serves /metrics too: refused before it looks for its database.
        (
            vec!["worker", "--database-url", "postgres://hg@127.0.0.1:1/none", "--bind", "0.0.0.0:0"],
            "refusing to listen on 0.0.0.0:0 without a gateway token",
        ),
    ] {
        let output = hivegate().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} should fail as bad input");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[actix_rt::test]
async fn serve_answers_health_and_keeps_the_builtin_provider_off_its_port() {
    let (child, url) = serve(&["--bind", "127.0.0.1:0"]).await;
    let http = reqwest::Client::new();
    let health: Value = http.get(format!("{url}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["ok"], true);
    // The builtin provider is not on the public port: not as JSON, not as the
    // "simple" cross-site POST a web page can send.
    for (content_type, body) in [
        (
            "application/json",
            r#"{"model":"executor","messages":[{"role":"user","content":"x [split 4294967295 x1]"}]}"#,
        ),
        ("text/plain", r#"{"model":"executor","messages":[{"role":"user","content":"x [split 4294967295 x1]"}]}"#),
    ] {
        let response = http
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", content_type)
            .header("origin", "https://evil.example")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{content_type}");
    }
    let health: Value = http.get(format!("{url}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["ok"], true, "still alive");
    drop(child);
}

/// A gateway whose starter stopped reading its output keeps serving: its status lines
/// go to a closed pipe (a `println!` there used to panic and take the gateway down).
#[actix_rt::test]
async fn serve_keeps_serving_when_its_stdout_is_closed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = KillOnDrop(
        hivegate()
            .args(["serve", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    drop(child.0.stdout.take());
    // The log line "gateway listening" comes just before the status lines: once it is
    // seen, they have been written (to the closed pipe). The rest of the log is drained.
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let (seen, listening) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut seen = Some(seen);
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("gateway listening") {
                if let Some(seen) = seen.take() {
                    let _ = seen.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), listening).await.unwrap().unwrap();
    let health: Value = reqwest::get(format!("http://127.0.0.1:{port}/health")).await.unwrap().json().await.unwrap();
    assert_eq!(health["ok"], true);
    // A gateway that lost its stdout still stops cleanly when asked: exit 0 (it used to
    // panic at its first status line, exit 101).
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "hivegate serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "hivegate serve failed after its stdout was closed");
}

/// `hivegate serve <args>`, once it says where it listens: the process and its http:// URL.
async fn serve(args: &[&str]) -> (KillOnDrop, String) {
    let mut child =
        KillOnDrop(hivegate().arg("serve").args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line).await.unwrap().unwrap().unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
    (child, url)
}

/// A child process that is killed and reaped however the test ends, so a failing
/// assertion leaves no server behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Held by the tests that load both cores for seconds (a 1,000-executor demo, the
/// bench's bursts and 1,000 handshakes at once), so they do not run at the same time:
/// together, on a 2-core machine, a debug build's bench saw upgrade requests wait past
/// the HTTP server's 5 s request timeout (408) in one CI run of many.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn demo_fits_its_limits_to_the_tree_it_was_asked_for() {
    let _heavy = HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for (args, sessions) in [
        (vec!["demo", "--executors", "100", "--json"], 101),
        (vec!["demo", "--executors", "2", "--depth", "8", "--fanout", "2", "--json"], 511),
        (vec!["demo", "--executors", "1000", "--json"], 1001),
    ] {
        let output = hivegate().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["sessions"], sessions, "{args:?}");
        assert_eq!(report["outcomes"]["ok"], sessions, "{args:?}");
        assert_eq!(report["refusedSpawns"], 0, "{args:?}");
        assert!(!report["limitsRaised"].as_array().unwrap().is_empty(), "raised limits are said: {args:?}");
    }
}

#[test]
fn a_refused_spawn_is_said_and_the_exit_code_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents");
    std::fs::create_dir(&agents).unwrap();
    std::fs::write(
        agents.join("brain.toml"),
        "id = \"brain\"\nmodel = \"builtin/brain\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = []\n",
    )
    .unwrap();
    std::fs::write(agents.join("executor.toml"), "id = \"executor\"\nmodel = \"builtin/executor\"\n").unwrap();
    let output = hivegate().current_dir(dir.path()).args(["run", "one; two"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("· spawn refused: agent 'brain' may not spawn 'executor'; allowed: []"), "{stdout}");
    assert!(stdout.contains("refused spawns: 2"), "{stdout}");
}

#[test]
fn the_configured_token_is_never_sent_to_another_gateway() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let other = format!("ws://{}/", listener.local_addr().unwrap());
    let output = hivegate()
        .env("HIVEGATE_GATEWAY_TOKEN", "configured-secret")
        .args(["devices", "list", "--url", &other])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("--url {other} is not the configured gateway")), "{stderr}");
    assert!(stderr.contains("Pass --token for this gateway"), "{stderr}");
    assert!(!stderr.contains("configured-secret"));
    assert!(listener.accept().is_err(), "nothing may connect to the other gateway");
}

#[test]
fn a_missing_api_key_is_configuration_said_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let config = format!(
        "[providers.cherry]\nbase_url = \"http://{}/v1\"\napi_key_env = \"CHERRY_TEST_KEY\"\n",
        listener.local_addr().unwrap()
    );
    std::fs::write(dir.path().join("hivegate.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/solo.toml"), "id = \"solo\"\nmodel = \"cherry/qwen/qwen3\"\n").unwrap();
    let output = hivegate()
        .current_dir(dir.path())
        .env_remove("CHERRY_TEST_KEY")
        .args(["run", "--agent", "solo", "hello"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("agent 'solo': provider 'cherry' needs its API key in the environment variable CHERRY_TEST_KEY"),
        "{stderr}"
    );
    assert!(listener.accept().is_err(), "no call was made");
}

#[test]
fn run_prints_progress_on_stderr_and_keeps_stdout_json() {
    let output = hivegate().args(["run", "--progress", "--json", "alpha; beta"]).output().unwrap();
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(report["sessions"], 3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("+ ")).count(), 3, "{stderr}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("- ") && l.contains("  ok  ")).count(), 3, "{stderr}");
    let workspace = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    assert_eq!(lines[0], format!("workspace: {} (the agents' work tools act only inside it)", workspace.display()));
    assert!(lines[1].starts_with("+ agent:brain:main  brain  builtin/brain"), "{stderr}");
    assert!(lines.last().unwrap().starts_with("- agent:brain:main  ok  "), "the root ends last: {stderr}");
    let quiet = hivegate().args(["run", "--json", "alpha"]).output().unwrap();
    assert!(quiet.stderr.is_empty(), "no progress when stderr is not a terminal");
}

/// `hivegate serve` with OpenClaw's flags (`--bind loopback --port 0 --token`), then
/// `hivegate agent` against it: the final answer of the whole tree, and `--no-wait`.
#[actix_rt::test]
async fn hivegate_agent_runs_a_task_on_a_running_gateway() {
    let (child, http_url) = serve(&["--bind", "loopback", "--port", "0", "--token", "agent-test-token"]).await;
    let addr = http_url.strip_prefix("http://").unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{http_url}");
    let url = format!("ws://{addr}");
    let agent = |extra: &[&str]| {
        let mut command = hivegate();
        command.args(["agent", "--url", &url, "--token", "agent-test-token", "--agent", "brain"]).args(extra);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let output = agent(&["--message", "alpha; beta", "--json"]).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "ok");
    let text = result["result"]["payloads"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("summary of 2 results for 'alpha; beta'"), "{text}");
    // The same (default) session's next run answers its own task, not the first one.
    let output = agent(&["--message", "epsilon", "--json"]).await.unwrap();
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let text = result["result"]["payloads"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("summary of 1 results for 'epsilon'"), "{text}");
    // Plain output is the answer itself.
    let output = agent(&["--message", "gamma", "--session-key", "k2"]).await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("summary of 1 results for 'gamma'"));
    // --no-wait: the run's id and session at once.
    let output = agent(&["--message", "delta", "--session-key", "k3", "--no-wait"]).await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let ack: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ack["sessionKey"], "agent:brain:k3");
    assert!(ack["runId"].as_str().is_some_and(|id| !id.is_empty()), "{ack}");
    // The run started without waiting ends ok; the sessions commands see it all.
    let ops = |args: &[&str]| {
        let mut command = hivegate();
        command.args(args).args(["--url", &url, "--token", "agent-test-token", "--json"]);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let run_id = ack["runId"].as_str().unwrap().to_string();
    let output = ops(&["runs", "wait", &run_id, "--wait", "20"]).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let waited: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(waited["status"], "ok");
    // runs list has every main session's latest run; runs show gives its tree as run --json.
    let runs: Value = serde_json::from_slice(&ops(&["runs", "list"]).await.unwrap().stdout).unwrap();
    assert!(runs["runs"].as_array().unwrap().iter().any(|r| r["runId"] == run_id.as_str()), "{runs}");
    let shown: Value = serde_json::from_slice(&ops(&["runs", "show", &run_id]).await.unwrap().stdout).unwrap();
    assert_eq!((&shown["root"]["sessionKey"], &shown["root"]["outcome"]), (&json!("agent:brain:k3"), &json!("ok")));
    assert_eq!(shown["root"]["children"].as_array().map(Vec::len), Some(1), "{shown}");
    assert!(shown["finalAnswer"].as_str().unwrap().starts_with("summary of 1 results for 'delta'"));
    assert_eq!(shown["outcomes"]["ok"], 2);
    let listed: Value = serde_json::from_slice(&ops(&["sessions", "list"]).await.unwrap().stdout).unwrap();
    let keys: Vec<&str> =
        listed["sessions"].as_array().unwrap().iter().filter_map(|s| s["sessionKey"].as_str()).collect();
    for main in ["agent:brain:main", "agent:brain:k2", "agent:brain:k3"] {
        assert!(keys.contains(&main), "{main} in {keys:?}");
    }
    // Rows carry OpenClaw's names too (key, classification, status, modelProvider/model).
    let k3 = listed["sessions"].as_array().unwrap().iter().find(|s| s["key"] == "agent:brain:k3").unwrap();
    assert_eq!(
        (&k3["classification"], &k3["status"], &k3["modelProvider"], &k3["model"], &k3["hasActiveRun"]),
        (&json!("main"), &json!("done"), &json!("builtin"), &json!("brain"), &json!(false)),
        "{k3}"
    );
    assert_eq!(listed["count"], listed["sessions"].as_array().unwrap().len(), "{listed}");
    let history: Value =
        serde_json::from_slice(&ops(&["sessions", "history", "agent:brain:k2"]).await.unwrap().stdout).unwrap();
    assert_eq!(history["messages"][0], serde_json::json!({"role": "user", "content": "gamma"}));
    let idle: Value =
        serde_json::from_slice(&ops(&["sessions", "abort", "agent:brain:k3"]).await.unwrap().stdout).unwrap();
    assert_eq!(idle["status"], "no-active-run");
    let reset: Value =
        serde_json::from_slice(&ops(&["sessions", "reset", "agent:brain:k3"]).await.unwrap().stdout).unwrap();
    assert_eq!(reset["status"], "reset");
    let output = ops(&["runs", "wait", "no-such-run", "--wait", "1"]).await.unwrap();
    assert_eq!(output.status.code(), Some(1), "a run that is not known to have ended ok is exit 1");
    let waited: Value = serde_json::from_slice(&output.stdout).expect("the wait's answer, as JSON");
    assert_eq!(waited, json!({"runId": "no-such-run", "status": "timeout"}));
    // A bare session key needs an agent: bad input, exit 2.
    let mut command = hivegate();
    command.args(["agent", "--url", &url, "--token", "x", "--message", "m", "--session-key", "k"]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    drop(child);
}

/// `demo` does real work: each executor reports on a file of its workspace, and what it
/// says (line count, first line) is what the file holds; beyond the files, it surveys.
#[test]
fn demo_reports_true_facts_about_the_files_of_its_workspace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "first of a\nsecond\nthird\n").unwrap();
    std::fs::write(dir.path().join("b.md"), "# title of b\n").unwrap();
    std::fs::write(dir.path().join(".hidden"), "not reported\n").unwrap();
    let output = hivegate().current_dir(dir.path()).args(["demo", "--executors", "3", "--json"]).output().unwrap();
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let answer = report["finalAnswer"].as_str().unwrap();
    let mut lines: Vec<&str> = answer.lines().skip(1).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "- part 1: report: report on `a.txt` (part 1 of 3) - `a.txt` has 3 lines; the first is \"first of a\".",
            "- part 2: report: report on `b.md` (part 2 of 3) - `b.md` has 1 line: \"# title of b\".",
            "- part 3: report: survey the hivegate runtime and report what each part does (part 3 of 3) - done.",
        ]
    );
}

/// `hivegate bench --json` (small, and without the 100,000 burst a debug build would
/// take long over) reports every figure the scale issue names, each floor beside it,
/// and each target met or not; progress goes to stderr.
#[test]
fn bench_reports_every_figure_with_its_floor() {
    let _heavy = HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let output = hivegate()
        .args(["bench", "--json", "--spawns", "200", "--handshakes", "20", "--no-big-burst"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("bench: floor: raw actix-web WebSocket, 20 handshakes"), "stderr: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let figure = |path: &str| {
        let value = path.split('.').fold(&report, |node, key| &node[key]);
        let number = value.as_f64().unwrap_or_else(|| panic!("{path} is {value}, not a number"));
        // RSS growth may be nil when the burst reuses pages the floor's burst freed.
        let least = if path.starts_with("memory.") { 0.0 } else { f64::MIN_POSITIVE };
        assert!(number.is_finite() && number >= least, "{path} is {number}");
        number
    };
    for path in [
        "spawn.p50Us",
        "spawn.p99Us",
        "burst.sessions10kMs",
        "tree.depth1Ms",
        "tree.depth5Ms",
        "memory.bytesPerSession",
        "handshake.p50Us",
        "handshake.p99Us",
        "handshake.concurrent1000Ms",
        "underLoad.spawnP99Us",
        "underLoad.idleSpawnP99Us",
        "underLoad.idleBeforeP99Us",
        "underLoad.idleAfterP99Us",
        "floor.spawnP50Us",
        "floor.burst10kMs",
        "floor.handshakeP50Us",
        "floor.handshakeP99Us",
        "floor.handshakeConcurrent1000Ms",
    ] {
        figure(path);
    }
    assert_eq!(report["handshake"]["samples"], 20);
    assert!(figure("underLoad.streamingSessions") >= 1000.0, "{}", report["underLoad"]);
    let idle = figure("underLoad.idleBeforeP99Us").min(figure("underLoad.idleAfterP99Us"));
    assert_eq!(figure("underLoad.idleSpawnP99Us"), idle, "the target divides by the lower idle p99");
    assert!(report["burst"]["sessions100kMs"].is_null(), "the big burst was skipped");
    // The gateway's handshake does all the floor's does, and signs and checks on top.
    assert!(figure("handshake.p50Us") > figure("floor.handshakeP50Us"));
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 7, "{targets:?}");
    assert!(targets.iter().all(|t| t["met"].is_boolean() && t["value"].is_number()), "{targets:?}");
}
