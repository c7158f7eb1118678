//! Compatibility with the real OpenClaw 2026.9.6 clients (installed by
//! `../shared/tools/openclaw-client`): the headless node host pairs with `hivegate serve`,
//! is approved with `hivegate devices approve` and `hivegate nodes approve`, answers
//! `hivegate nodes invoke`, stays paired across a restart of the server, and the real
//! operator CLI lists the same devices. And the seed's flow: the real `openclaw agent`
//! runs a brain whose model spawns executors the OpenClaw way (`mode: "run"`, a model
//! override on a second provider), gets the tree's answer, and the operator calls
//! around runs (`agent.wait`, `sessions.list`, `sessions.abort`) work through
//! `openclaw gateway call`.
//!
//! The client needs Node.js from the npm registry; `.ci/run` installs it first and sets
//! `HIVEGATE_REQUIRE_OPENCLAW=1`, which turns a missing client into a failure. Without
//! that variable a machine without `../shared` skips this test with a message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

const TOKEN: &str = "hivegate-openclaw-test-token";
/// Bound on each wait for the real client (it backs off up to 30 s between reconnects).
const WAIT: Duration = Duration::from_secs(90);

fn openclaw_client() -> Option<PathBuf> {
    let path = std::env::var_os("HIVEGATE_OPENCLAW_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/openclaw-client"));
    path.is_file().then_some(path)
}

/// Where the wrapper keeps the installed client. It defaults to a folder under `$HOME`,
/// which [`openclaw`] points at the CLI's own state, so it is named explicitly: else
/// every CLI run would install the client again.
fn client_dir() -> PathBuf {
    std::env::var_os("OPENCLAW_CLIENT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/hivegate-openclaw"))
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hivegate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hivegate"));
    command.current_dir(std::env::temp_dir()).env_remove("HIVEGATE_CONFIG");
    command
}

/// `hivegate serve` on `port` (0: any) with its own state dir; returns the process and
/// the port it listens on.
fn serve(state: &Path, port: u16) -> (Running, u16) {
    serve_with(hivegate(), state, port)
}

/// [`serve`] from a prepared command (its working directory, its environment).
fn serve_with(mut command: Command, state: &Path, port: u16) -> (Running, u16) {
    let mut child = command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("HIVEGATE_GATEWAY_TOKEN", TOKEN)
        .env("HIVEGATE_STATE_DIR", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("hivegate serve did not start");
    let addr = line.split_whitespace().find(|w| w.starts_with("http://")).expect("no address printed");
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    (Running(child), port)
}

fn stop(mut server: Running) {
    // SIGTERM: the gateway's own shutdown path (shutdown event, close 1012).
    let _ = Command::new("kill").arg(server.0.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if server.0.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("hivegate serve did not stop on SIGTERM");
}

/// `hivegate <args> --url … --token … --json`, parsed.
fn cli(port: u16, args: &[&str]) -> Value {
    let url = format!("ws://127.0.0.1:{port}");
    let output = hivegate().args(args).args(["--url", &url, "--token", TOKEN, "--json"]).output().unwrap();
    assert!(output.status.success(), "hivegate {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Poll (bounded) until `found` returns something.
fn wait_for<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn node_host(client: &Path, state: &Path, port: u16, log: &Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(client)
        .args(["node", "run", "--host", "127.0.0.1", "--port", &port.to_string()])
        .env("OPENCLAW_GATEWAY_TOKEN", TOKEN)
        .env("OPENCLAW_STATE_DIR", state)
        .current_dir(state)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Running(child)
}

fn connected_node(port: u16, node_id: &str) -> Option<Value> {
    let nodes = cli(port, &["nodes", "list"]);
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| {
            n["nodeId"] == node_id && n["connected"] == true && n["commands"].as_array().is_some_and(|c| !c.is_empty())
        })
        .cloned()
}

#[test]
fn the_real_openclaw_node_host_pairs_is_invoked_and_survives_a_restart() {
    let Some(client) = openclaw_client() else {
        assert!(std::env::var_os("HIVEGATE_REQUIRE_OPENCLAW").is_none(), "the OpenClaw reference client is required");
        eprintln!("SKIPPED: ../shared/tools/openclaw-client not found (set HIVEGATE_OPENCLAW_CLIENT)");
        return;
    };
    // Install first (bounded by the script's own npm timeouts), so the waits below time
    // the protocol, not a download.
    let install = Command::new(&client).arg("--install-only").stdout(Stdio::null()).status().unwrap();
    assert!(install.success(), "installing the OpenClaw client failed");
    let dir = tempfile::tempdir().unwrap();
    let (gateway_state, node_state, operator_state) =
        (dir.path().join("gw"), dir.path().join("node"), dir.path().join("op"));
    for d in [&gateway_state, &node_state, &operator_state] {
        std::fs::create_dir_all(d).unwrap();
    }
    let node_log = dir.path().join("node.log");
    let (server, port) = serve(&gateway_state, 0);
    let _node = node_host(&client, &node_state, port, &node_log);
    let context = || std::fs::read_to_string(&node_log).unwrap_or_default();

    // 1. The node asks to pair; it shows up as a pending request.
    let pending = wait_for("the node's pairing request", || {
        cli(port, &["devices", "list"])["pending"].as_array().and_then(|p| p.first().cloned())
    });
    assert_eq!(
        (pending["role"].as_str(), pending["clientId"].as_str()),
        (Some("node"), Some("node-host")),
        "{pending}"
    );
    let device_id = pending["deviceId"].as_str().unwrap().to_string();
    let approved = cli(port, &["devices", "approve", pending["requestId"].as_str().unwrap()]);
    assert_eq!(approved["device"]["deviceId"], device_id.as_str());

    // 2. It reconnects by itself and declares its commands; approve them.
    let surface = wait_for("the node's command surface request", || {
        cli(port, &["nodes", "pending"])["pending"].as_array().and_then(|p| p.first().cloned())
    });
    assert_eq!(surface["nodeId"], device_id.as_str());
    cli(port, &["nodes", "approve", surface["requestId"].as_str().unwrap()]);
    let node = wait_for("the node connected with approved commands", || connected_node(port, &device_id));
    assert!(node["commands"].as_array().unwrap().iter().any(|c| c == "system.which"), "{node}");

    // 3. The real node answers an invoke.
    let answer = cli(
        port,
        &["nodes", "invoke", "--node", &device_id, "--command", "system.which", "--params", r#"{"bins":["sh"]}"#],
    );
    assert_eq!(answer["ok"], true, "{answer}\n{}", context());
    let sh = answer["payload"]["bins"]["sh"].as_str().unwrap_or_default();
    assert!(sh.ends_with("/sh"), "{answer}");

    // 4. The real operator CLI sees the same paired device.
    let output: Output = Command::new(&client)
        .args(["devices", "list", "--url", &format!("ws://127.0.0.1:{port}"), "--token", TOKEN, "--json"])
        .env("OPENCLAW_STATE_DIR", &operator_state)
        .current_dir(&operator_state)
        .output()
        .unwrap();
    assert!(output.status.success(), "openclaw devices list: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let listed: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let paired: Vec<&str> =
        listed["paired"].as_array().unwrap().iter().filter_map(|d| d["deviceId"].as_str()).collect();
    assert_eq!(paired, vec![device_id.as_str()]);
    assert_eq!(listed["pending"].as_array().map(Vec::len), Some(0));

    // 5. Restart the gateway on the same port and state: the node comes back paired,
    //    with no new pairing request.
    stop(server);
    let (_server, _) = serve(&gateway_state, port);
    wait_for("the node to reconnect after the restart", || connected_node(port, &device_id));
    let devices = cli(port, &["devices", "list"]);
    assert_eq!(devices["pending"].as_array().map(Vec::len), Some(0), "{devices}");
    assert_eq!(devices["paired"][0]["deviceId"], device_id.as_str());
    let again = cli(
        port,
        &["nodes", "invoke", "--node", &device_id, "--command", "system.which", "--params", r#"{"bins":["sh"]}"#],
    );
    assert_eq!(again["payload"]["bins"]["sh"].as_str(), Some(sh));
}

/// The real OpenClaw CLI (`openclaw <args>`) against the gateway at `port`, as a remote
/// gateway with the shared token, with its own state: (exit code, stdout JSON, stderr).
fn openclaw(client: &Path, state: &Path, port: u16, args: &[&str]) -> (Option<i32>, Value, String) {
    let output = Command::new(client)
        .args(args)
        .env("HOME", state)
        .env("OPENCLAW_CLIENT_DIR", client_dir())
        .env("OPENCLAW_HOME", state)
        .env("OPENCLAW_STATE_DIR", state)
        .env("OPENCLAW_CONFIG_PATH", state.join("openclaw.json"))
        .env("OPENCLAW_GATEWAY_URL", format!("ws://127.0.0.1:{port}"))
        .env("OPENCLAW_GATEWAY_TOKEN", TOKEN)
        .env("OPENCLAW_DISABLE_BONJOUR", "1")
        .env("OPENCLAW_NO_RESPAWN", "1")
        .env("OPENCLAW_SKIP_CHANNELS", "1")
        .env("OPENCLAW_OFFLINE", "1")
        .env("OPENCLAW_NO_AUTO_UPDATE", "1")
        .current_dir(state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout.find('{').and_then(|at| serde_json::from_str(&stdout[at..]).ok()).unwrap_or(Value::Null);
    (output.status.code(), json, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The brain answers its first call with OpenClaw-style spawns on an override model,
/// yields until both executors reported, then gives the final answer. `HANG` never ends.
fn seed_script(request: &hivegate::model::openai::CompletionRequest) -> common::Reply {
    use common::{announcements, call, Reply};
    let task = request.messages.iter().find(|m| m.role == "user").and_then(|m| m.content.clone()).unwrap_or_default();
    match request.model.as_str() {
        "qwen/qwen3-235b-a22b" => Reply::Text("done (child)".into()),
        _ if task.contains("HANG") => Reply::Hang,
        _ if !common::has_tool_call(request, "sessions_spawn") => Reply::Calls(
            (0..2)
                .map(|i| {
                    let args = json!({"task": format!("bench child {i}: reply with the word done."),
                        "label": format!("bench-{i}"), "mode": "run",
                        "model": "cherry-nvidia/qwen/qwen3-235b-a22b"});
                    call(&format!("call_{i}"), "sessions_spawn", args)
                })
                .chain([call("call_y", "sessions_yield", json!({}))])
                .collect(),
        ),
        _ if announcements(request).len() < 2 => Reply::Calls(vec![call("call_y2", "sessions_yield", json!({}))]),
        _ => Reply::Text("All children reported. Final answer: done.".into()),
    }
}

#[actix_rt::test]
async fn the_seed_flow_runs_through_the_real_openclaw_cli() {
    let Some(client) = openclaw_client() else {
        assert!(std::env::var_os("HIVEGATE_REQUIRE_OPENCLAW").is_none(), "the OpenClaw reference client is required");
        eprintln!("SKIPPED: ../shared/tools/openclaw-client not found (set HIVEGATE_OPENCLAW_CLIENT)");
        return;
    };
    let installed = tokio::task::spawn_blocking({
        let client = client.clone();
        move || Command::new(client).arg("--install-only").stdout(Stdio::null()).status().unwrap()
    });
    assert!(installed.await.unwrap().success(), "installing the OpenClaw client failed");
    let fake = common::FakeModels::start(seed_script);
    let dir = tempfile::tempdir().unwrap();
    let (gateway_dir, cli_state) = (dir.path().join("gateway"), dir.path().join("cli"));
    std::fs::create_dir_all(gateway_dir.join("agents")).unwrap();
    std::fs::create_dir_all(&cli_state).unwrap();
    let providers = format!(
        "[providers.fake]\nbase_url = \"{url}\"\napi_key_env = \"FAKE_KEY\"\n\
         [providers.cherry-nvidia]\nbase_url = \"{url}\"\napi_key_env = \"FAKE_KEY\"\n",
        url = fake.url
    );
    std::fs::write(gateway_dir.join("hivegate.toml"), providers).unwrap();
    std::fs::write(
        gateway_dir.join("agents/brain.toml"),
        "id = \"brain\"\nmodel = \"fake/planner\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\n\
         [subagents]\nallow_agents = [\"executor\"]\n",
    )
    .unwrap();
    std::fs::write(gateway_dir.join("agents/executor.toml"), "id = \"executor\"\nmodel = \"fake/exec\"\n").unwrap();
    let mut command = hivegate();
    command.current_dir(&gateway_dir).env("FAKE_KEY", "sk-fake");
    let (server, port) = serve_with(command, &gateway_dir, 0);

    let run = |args: Vec<String>| {
        let (client, state) = (client.clone(), cli_state.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            openclaw(&client, &state, port, &args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // 1. openclaw agent: the final answer of the whole tree, exit 0.
    let (code, answer, stderr) =
        run(args(&["agent", "--agent", "brain", "--message", "SPAWN_BENCH n=2", "--json"])).await.unwrap();
    let planner = fake.requests_for("planner");
    let first_results = planner.get(1).map(common::tool_results);
    assert_eq!(code, Some(0), "{answer}\n{stderr}\nspawn results: {first_results:?}");
    assert_eq!(answer["status"], "ok", "{answer}");
    assert_eq!(answer["result"]["payloads"][0]["text"], "All children reported. Final answer: done.");
    let run_id = answer["runId"].as_str().unwrap().to_string();
    // Every executor ran on the override model; the agent's own model was never asked.
    assert_eq!(fake.requests_for("qwen/qwen3-235b-a22b").len(), 2);
    assert!(fake.requests_for("exec").is_empty());
    let spawn_results = common::tool_results(&fake.requests_for("planner")[1]);
    assert_eq!(spawn_results[0].1["status"], "accepted", "{spawn_results:?}");
    assert_eq!(spawn_results[0].1["mode"], "run");

    // 2. The calls around runs, through openclaw gateway call.
    let wait = format!("{{\"runId\":\"{run_id}\",\"timeoutMs\":2000}}");
    let (code, waited, _) = run(args(&["gateway", "call", "agent.wait", "--params", &wait, "--json"])).await.unwrap();
    assert_eq!((code, waited["status"].clone()), (Some(0), json!("ok")), "{waited}");
    assert_eq!(waited["terminalReply"]["text"], "All children reported. Final answer: done.");
    let (code, sessions, _) = run(args(&["gateway", "call", "sessions.list", "--json"])).await.unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(3), "{sessions}");
    let history = json!({"sessionKey": "agent:brain:main", "limit": 2}).to_string();
    let (code, history, _) =
        run(args(&["gateway", "call", "chat.history", "--params", &history, "--json"])).await.unwrap();
    assert_eq!((code, history["hasMore"].clone()), (Some(0), json!(true)), "{history}");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[1]["role"], "assistant", "{history}");
    assert_eq!(messages[1]["content"][0]["text"], "All children reported. Final answer: done.", "{history}");
    // Each child's end reached the brain as OpenClaw's completion event.
    let announced = &messages[0]["content"];
    let announced = announced.as_str().or_else(|| announced[0]["text"].as_str()).unwrap_or_default();
    assert!(announced.starts_with("[Internal task completion event]\nsource: subagent\n"), "{history}");
    assert!(announced.contains("\nstatus: completed; ready for parent review\n"), "{history}");
    // openclaw gateway probe: the token-holding owner on loopback gets the scope it asks for.
    let (code, probe, stderr) = run(args(&["gateway", "probe", "--json", "--port", &port.to_string()])).await.unwrap();
    assert_eq!(probe["targets"][0]["auth"]["scopes"], json!(["operator.read"]), "{code:?} {probe}\n{stderr}");
    assert_eq!(probe["targets"][0]["auth"]["capability"], "read_only", "{probe}");

    // 3. A run that hangs, started without waiting, is aborted with its tree.
    let slow =
        json!({"message": "HANG", "agentId": "brain", "sessionKey": "agent:brain:slow", "idempotencyKey": "k-slow"});
    let (code, ack, _) =
        run(args(&["gateway", "call", "agent", "--params", &slow.to_string(), "--json"])).await.unwrap();
    assert_eq!(
        (code, ack["status"].clone(), ack["runId"].clone()),
        (Some(0), json!("accepted"), json!("k-slow")),
        "{ack}"
    );
    let (_, repeat, _) =
        run(args(&["gateway", "call", "agent", "--params", &slow.to_string(), "--json"])).await.unwrap();
    assert_eq!(repeat["status"], "in_flight", "{repeat}");
    let abort = json!({"key": "agent:brain:slow"}).to_string();
    let (code, aborted, _) =
        run(args(&["gateway", "call", "sessions.abort", "--params", &abort, "--json"])).await.unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(aborted, json!({"ok": true, "abortedRunId": "k-slow", "status": "aborted"}));
    let wait = json!({"runId": "k-slow", "timeoutMs": 5000}).to_string();
    let (_, waited, _) = run(args(&["gateway", "call", "agent.wait", "--params", &wait, "--json"])).await.unwrap();
    assert_eq!((waited["status"].clone(), waited["stopReason"].clone()), (json!("error"), json!("rpc")), "{waited}");
    let (_, idle, _) = run(args(&["gateway", "call", "sessions.abort", "--params", &abort, "--json"])).await.unwrap();
    assert_eq!(idle, json!({"ok": true, "abortedRunId": null, "status": "no-active-run"}));

    // 4. No pairing happened: the CLI and the executors needed none.
    let devices = tokio::task::spawn_blocking(move || cli(port, &["devices", "list"])).await.unwrap();
    assert_eq!(devices["pending"].as_array().map(Vec::len), Some(0), "{devices}");
    assert_eq!(devices["paired"].as_array().map(Vec::len), Some(0), "{devices}");
    stop(server);
    fake.stop().await;
}
