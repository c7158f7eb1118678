//! Durable runs end to end: the real `hivegate serve` is killed (SIGKILL) or stopped
//! (SIGTERM) in the middle of a 20-executor tree and restarted on the same state
//! directory; the tree must finish as if nothing had happened.
//!
//! The harness ([`Harness`]): a temp directory with a config file (`[gateway]
//! state_dir`, the agents directory, provider `fake` = the scripted fake model server of
//! `common`, in this process) and two agents: `brain` on `fake/brain`, which may spawn
//! `executor` on `fake/executor`. Every gateway of a test is a new `serve` process on
//! the same config and state directory, on a fresh loopback port with a shared token;
//! its stdout and stderr go to files in the temp directory (the log is shown when a
//! test fails). The operator commands (`agent`, `runs wait|show`, `sessions list`) are
//! the binary too, with `--url` and `--token`.
//!
//! The fake's script is stateless; it decides from the request ([`script`]). The brain
//! answers after [`BRAIN_DELAY`] (results arriving meanwhile wait in its inbox):
//! - brain, no tool result yet: 20 `sessions_spawn` calls (`spawn-N`, task `part N`,
//!   label `part-N`);
//! - brain, once its completion events hold the results of all 20 parts: `all 20 done`;
//! - brain, a part whose every spawn was answered but not `accepted` (interrupted by a
//!   crash, say) and whose result has not come: spawn it again (`respawn-N-K`, at most
//!   [`MAX_SPAWNS_PER_PART`] spawns of a part), as a model would;
//! - brain otherwise: one `sessions_yield` (`yield-<results seen>-<tool messages>`, so
//!   no two calls share an id);
//! - executor: `result of part N` for its task `part N`, after a delay (1 s + 50 ms × N,
//!   so at any moment some children have answered and others are mid-call; 20 s while
//!   [`Harness::slow`] is set).
//!
//! What a tree must look like after any crash ([`assert_tree_ended_ok`]): `runs wait`
//! says ok, `runs show` has the 20 children (one per part, each ok), the brain's last
//! request holds every part's result exactly once and answers each of its tool calls
//! exactly once with exactly 20 accepted spawns, and `sessions list` shows nothing still
//! running. Every wait is bounded; the kill points are chosen by what the fake has
//! seen, never by how fast the gateway is. Where the test thread would be too late, a
//! [`Tripwire`] in the script kills the gateway as a request arrives, before answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::{call, tool_results, FakeModels, Reply};
use hivegate::model::openai::CompletionRequest;
use serde_json::{json, Value};

const PARTS: usize = 20;
const TOKEN: &str = "durable-test-token";
const KEY_ENV: &str = "HIVEGATE_DURABLE_TEST_KEY";
/// A part spawned this many times without being accepted is not spawned again.
const MAX_SPAWNS_PER_PART: usize = 3;
/// The bound on waiting for anything the gateway does.
const WAIT: Duration = Duration::from_secs(30);
/// How long the brain thinks before each answer: results that arrive meanwhile wait in
/// its inbox, ended but not yet in its transcript.
const BRAIN_DELAY: Duration = Duration::from_millis(300);
/// Sessions each worker runs at once: fewer than the tree's 20, so both take part.
const WORKER_SLOTS: usize = 12;

/// How long the executor working on part `n` takes to answer.
fn executor_delay(n: usize, slow: bool) -> Duration {
    match slow {
        true => Duration::from_secs(20),
        false => Duration::from_millis(1000 + 50 * n as u64),
    }
}

/// Every `N` that follows `result of part ` in `text`.
fn parts_in(text: &str) -> Vec<usize> {
    text.match_indices("result of part ")
        .filter_map(|(at, m)| {
            let digits: String = text[at + m.len()..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The part a `sessions_spawn` call (or an executor's task) is about.
fn part_of_task(task: &str) -> Option<usize> {
    let at = task.rfind("part ")? + "part ".len();
    task[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

fn spawn_call(id: String, n: usize) -> (String, String, String) {
    call(
        &id,
        "sessions_spawn",
        json!({"task": format!("part {n}"), "label": format!("part-{n}"), "agentId": "executor"}),
    )
}

/// The parts whose results a request's completion events (user messages after the
/// first) hold, once each.
fn results_seen(request: &CompletionRequest) -> BTreeSet<usize> {
    let user = request.messages.iter().filter(|m| m.role == "user").skip(1);
    user.flat_map(|m| parts_in(m.content.as_deref().unwrap_or_default())).collect()
}

/// The brain's spawn calls so far, as (part, accepted).
fn spawns(request: &CompletionRequest) -> Vec<(usize, bool)> {
    let results = tool_results(request);
    let calls = request.messages.iter().flat_map(|m| m.tool_calls.iter().flatten());
    calls
        .filter(|c| c.function.name == "sessions_spawn")
        .filter_map(|c| {
            let args: Value = serde_json::from_str(&c.function.arguments).ok()?;
            let part = part_of_task(args["task"].as_str()?)?;
            let accepted = results.iter().any(|(id, r)| *id == c.id && r["status"] == "accepted");
            Some((part, accepted))
        })
        .collect()
}

fn brain(request: &CompletionRequest) -> Reply {
    let tool_messages = tool_results(request).len();
    if tool_messages == 0 {
        return Reply::Calls((0..PARTS).map(|n| spawn_call(format!("spawn-{n}"), n)).collect());
    }
    let seen = results_seen(request);
    if seen.len() == PARTS {
        return Reply::Text(format!("all {PARTS} done"));
    }
    let spawns = spawns(request);
    let respawn: Vec<_> = (0..PARTS)
        .filter(|n| !seen.contains(n))
        .filter_map(|n| {
            let tries = spawns.iter().filter(|(part, _)| *part == n).count();
            let accepted = spawns.iter().any(|(part, accepted)| *part == n && *accepted);
            (!accepted && tries < MAX_SPAWNS_PER_PART).then(|| spawn_call(format!("respawn-{n}-{tries}"), n))
        })
        .collect();
    if !respawn.is_empty() {
        return Reply::Calls(respawn);
    }
    Reply::Calls(vec![call(&format!("yield-{}-{tool_messages}", seen.len()), "sessions_yield", json!({}))])
}

fn executor_part(request: &CompletionRequest) -> usize {
    let task = request.messages.iter().find(|m| m.role == "user").and_then(|m| m.content.as_deref());
    task.and_then(part_of_task).expect("an executor's task names its part")
}

/// The fake's script; executors are slow while `slow` is set.
fn script(slow: Arc<AtomicBool>, tripwire: Tripwire) -> impl Fn(&CompletionRequest) -> Reply + Send + Sync + 'static {
    move |request| {
        tripwire.pull_if(request);
        match request.model.as_str() {
            "brain" => Reply::Delayed(BRAIN_DELAY, Box::new(brain(request))),
            "executor" => {
                let n = executor_part(request);
                let delay = executor_delay(n, slow.load(Ordering::SeqCst));
                Reply::Delayed(delay, Box::new(Reply::Text(format!("result of part {n}"))))
            }
            other => panic!("no script for model {other}"),
        }
    }
}

/// A SIGKILL the fake sends a gateway the moment that gateway asks a given model,
/// before answering it: closer to the gateway's own steps than the test thread gets.
#[derive(Clone, Default)]
struct Tripwire(Arc<Mutex<Option<Armed>>>);

/// The gateway a tripwire kills, and the model whose request pulls it.
type Armed = (Weak<Mutex<Child>>, &'static str);

impl Tripwire {
    fn arm(&self, gateway: &Gateway, model: &'static str) {
        *self.0.lock().unwrap() = Some((Arc::downgrade(&gateway.child), model));
    }

    fn pull_if(&self, request: &CompletionRequest) {
        let mut armed = self.0.lock().unwrap();
        if armed.as_ref().is_some_and(|(_, model)| *model == request.model) {
            let (process, _) = armed.take().unwrap();
            if let Some(process) = process.upgrade() {
                let _ = process.lock().unwrap().kill();
            }
        }
    }
}

/// A child process with its log (stderr), killed (SIGKILL) and reaped however the test
/// ends. [`Gateway`] and [`Worker`] are one of these with what each says where it serves.
struct Process {
    child: Arc<Mutex<Child>>,
    log: PathBuf,
}

impl Process {
    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    fn pid(&self) -> String {
        self.child.lock().unwrap().id().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`, and wait for the process to be gone.
    fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running `hivegate serve`.
struct Gateway {
    process: Process,
    /// `ws://127.0.0.1:PORT`
    url: String,
}

impl std::ops::Deref for Gateway {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl Gateway {
    /// Wait (at most `within`) for the process to end: its exit status.
    async fn ended(&self, within: Duration) -> std::process::ExitStatus {
        let mut status = None;
        let what = || format!("serve to end within {within:?}; its log:\n{}", self.log());
        until_within(within, what, || {
            status = self.process.exited();
            status.is_some()
        })
        .await;
        status.unwrap()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    config: PathBuf,
    fake: FakeModels,
    slow: Arc<AtomicBool>,
    tripwire: Tripwire,
    /// Gateways and workers started so far (each gets its own log files).
    started: usize,
}

/// A running `hivegate worker`.
struct Worker {
    process: Process,
    /// `http://127.0.0.1:PORT`, its health and metrics.
    http: String,
}

impl std::ops::Deref for Worker {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl Worker {
    /// The sessions of `agent` its /metrics says are running.
    async fn active(&self, agent: &str) -> usize {
        let text = reqwest::get(format!("{}/metrics", self.http)).await.unwrap().text().await.unwrap();
        let series = format!("hivegate_sessions_active{{agent=\"{agent}\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or_else(|| panic!("no {series}in {text}"));
        line.trim().parse().unwrap()
    }

    /// The sessions its log says it stopped because the gateway revoked them.
    fn revoked(&self) -> BTreeSet<String> {
        let log = self.log();
        let lines = log.lines().filter(|l| l.contains("revoked on the gateway; stopping it"));
        lines
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("session=")))
            .map(str::to_string)
            .collect()
    }
}

impl Harness {
    /// The config (plus `extra_gateway` lines in `[gateway]`), the agents, and the fake.
    fn new(extra_gateway: &str, slow: bool) -> Harness {
        Harness::with_store(extra_gateway, slow, None)
    }

    /// With Postgres at `database` as the store, and the executor placed on workers.
    fn on_workers(database: &str) -> Harness {
        Harness::with_store("", false, Some(database))
    }

    fn with_store(extra_gateway: &str, slow: bool, database: Option<&str>) -> Harness {
        let slow = Arc::new(AtomicBool::new(slow));
        let tripwire = Tripwire::default();
        let fake = FakeModels::start(script(slow.clone(), tripwire.clone()));
        let dir = tempfile::tempdir().unwrap();
        let agents = dir.path().join("agents");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(
            agents.join("brain.toml"),
            "id = \"brain\"\nmodel = \"fake/brain\"\nprompt = \"You are the brain.\"\n[tools]\n\
             allow = [\"sessions_spawn\", \"sessions_yield\", \"subagents\", \"sessions_list\"]\n\
             [subagents]\nallow_agents = [\"executor\"]\nmax_children = 32\n",
        )
        .unwrap();
        std::fs::write(
            agents.join("executor.toml"),
            format!(
                "id = \"executor\"\nmodel = \"fake/executor\"\nprompt = \"You are an executor.\"\n{}\
                 [tools]\nallow = []\n[subagents]\nallow_agents = []\n",
                if database.is_some() { "placement = \"worker\"\n" } else { "" }
            ),
        )
        .unwrap();
        let store = database.map_or_else(String::new, |url| format!("[store]\nurl = \"{url}\"\n"));
        let config = dir.path().join("hivegate.toml");
        let state = dir.path().join("state");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nstate_dir = \"{}\"\nagents_dir = \"agents\"\n{extra_gateway}\n\
                 [limits]\nmax_children_per_session = 32\n{store}\
                 [providers.fake]\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n",
                state.display(),
                fake.url
            ),
        )
        .unwrap();
        Harness { dir, config, fake, slow, tripwire, started: 0 }
    }

    /// The binary, in the temp dir, with HOME there and nothing from the environment
    /// that could point it at other state.
    fn hivegate(&self) -> Command {
        let mut command = common::hivegate_in(self.dir.path());
        command
            .env("HOME", self.dir.path().join("home"))
            .env(KEY_ENV, "test-key")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        command
    }

    /// `hivegate serve` on the harness's config and state dir, once it says where it listens.
    async fn serve(&mut self) -> Gateway {
        self.started += 1;
        let out = self.dir.path().join(format!("serve-{}.out", self.started));
        let log = self.dir.path().join(format!("serve-{}.log", self.started));
        let child = self
            .hivegate()
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--bind", "127.0.0.1:0", "--token", TOKEN])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let process = Process { child: Arc::new(Mutex::new(child)), log };
        let mut addr = None;
        until(
            || "serve to say where it listens".into(),
            || {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                addr = text.split_whitespace().find_map(|w| w.strip_prefix("http://")).map(str::to_string);
                let exited = process.exited();
                assert!(exited.is_none(), "serve exited {exited:?}: {}", process.log());
                addr.is_some()
            },
        )
        .await;
        Gateway { process, url: format!("ws://{}", addr.unwrap()) }
    }

    /// `hivegate worker --id <id>` on the harness's config (so its database, agents and
    /// provider), once it says it runs. Leases are short, so a killed worker's sessions
    /// are claimed again within seconds.
    async fn worker(&mut self, id: &str) -> Worker {
        self.started += 1;
        let out = self.dir.path().join(format!("worker-{id}-{}.out", self.started));
        let log = self.dir.path().join(format!("worker-{id}-{}.log", self.started));
        let child = self
            .hivegate()
            .arg("--config")
            .arg(&self.config)
            .args(["worker", "--id", id, "--slots", &WORKER_SLOTS.to_string(), "--lease-seconds", "2"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let process = Process { child: Arc::new(Mutex::new(child)), log };
        let mut http = None;
        until(
            || format!("worker {id} to say it runs"),
            || {
                let exited = process.exited();
                assert!(exited.is_none(), "worker exited {exited:?}: {}", process.log());
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                let said = text.lines().find(|l| l.starts_with(&format!("hivegate worker {id}:")));
                http =
                    said.and_then(|l| l.split_whitespace().find_map(|w| w.strip_suffix("/health")).map(str::to_string));
                http.is_some()
            },
        )
        .await;
        Worker { process, http: http.unwrap() }
    }

    /// A gateway and workers `w1` and `w2`, with the 20-part tree's executors all
    /// mid-call on them (each takes a second or more): the gateway, the workers, the run.
    async fn tree_on_two_workers(&mut self) -> (Gateway, Worker, Worker, String) {
        let gateway = self.serve().await;
        let w1 = self.worker("w1").await;
        let w2 = self.worker("w2").await;
        let run = self.start_run(&gateway, "twenty parts").await;
        self.until_executor_requests(PARTS, &gateway).await;
        (gateway, w1, w2, run)
    }

    /// Where each of the run's children runs or ran, as `sessions list` says.
    async fn placements(&self, gateway: &Gateway) -> BTreeMap<String, String> {
        let listed = self.json(gateway, &["sessions", "list", "--json"]).await;
        let rows = listed["sessions"].as_array().unwrap();
        rows.iter()
            .filter(|s| s["parentSessionKey"] == "agent:brain:main")
            .map(|s| (s["sessionKey"].as_str().unwrap().to_string(), s["placement"].as_str().unwrap().to_string()))
            .collect()
    }

    /// `hivegate <args> --url <gateway> --token <token>`, bounded.
    async fn command(&self, gateway: &Gateway, args: &[&str]) -> Output {
        let mut command = self.hivegate();
        command.args(args).args(["--url", &gateway.url, "--token", TOKEN]).stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output());
        tokio::time::timeout(Duration::from_secs(120), output).await.expect("the command did not end").unwrap().unwrap()
    }

    /// `command`, which must exit 0 and print JSON.
    async fn json(&self, gateway: &Gateway, args: &[&str]) -> Value {
        let output = self.command(gateway, args).await;
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stdout}{stderr}\ngateway log:\n{}", gateway.log());
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stderr}"))
    }

    /// `hivegate agent --agent brain --message M --no-wait --json`: the run's id.
    async fn start_run(&self, gateway: &Gateway, message: &str) -> String {
        let ack = self.json(gateway, &["agent", "--agent", "brain", "--message", message, "--no-wait", "--json"]).await;
        assert_eq!(ack["sessionKey"], "agent:brain:main", "{ack}");
        ack["runId"].as_str().unwrap().to_string()
    }

    fn requests(&self, model: &str) -> Vec<CompletionRequest> {
        self.fake.requests_for(model)
    }

    /// The requests for `model` with when each arrived, in order.
    fn arrivals(&self, model: &str) -> Vec<(CompletionRequest, Instant)> {
        let requests = self.fake.requests.lock().unwrap().clone();
        let arrivals = self.fake.arrivals.lock().unwrap().clone();
        requests.into_iter().zip(arrivals).filter(|(r, _)| r.model == model).map(|(r, (_, at))| (r, at)).collect()
    }

    /// When the first answer to an executor request from the `from`th on goes (or went) out.
    fn first_executor_answer(&self, from: usize) -> Option<Instant> {
        let slow = self.slow.load(Ordering::SeqCst);
        let executors = self.arrivals("executor").into_iter().skip(from);
        executors.map(|(request, at)| at + executor_delay(executor_part(&request), slow)).min()
    }

    /// Wait until the fake has seen `count` executor requests in all.
    async fn until_executor_requests(&self, count: usize, gateway: &Gateway) {
        let what =
            || format!("the fake to have seen {count} executor requests in all; gateway log:\n{}", gateway.log());
        until(what, || self.requests("executor").len() >= count).await;
    }

    /// Wait until the first answer to an executor request from `from` on has gone out.
    async fn until_an_executor_answered(&self, from: usize) {
        let answer = self.first_executor_answer(from).expect("an executor request to answer");
        let wait = answer.saturating_duration_since(Instant::now()) + Duration::from_millis(20);
        assert!(wait < WAIT, "no executor answers within {WAIT:?}");
        tokio::time::sleep(wait).await;
    }
}

/// Poll `done` every 10 ms until it holds; after [`WAIT`], panic saying `what` it waited for.
async fn until(what: impl Fn() -> String, done: impl FnMut() -> bool) {
    until_within(WAIT, what, done).await;
}

async fn until_within(within: Duration, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {}", what());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every node of a `runs show` tree below `node`.
fn descendants(node: &Value) -> Vec<&Value> {
    let children = node["children"].as_array().unwrap();
    children.iter().flat_map(|c| std::iter::once(c).chain(descendants(c))).collect()
}

/// The tree of `run` ended ok, with 20 ok children, and the brain saw each result once.
async fn assert_tree_ended_ok(harness: &Harness, gateway: &Gateway, run: &str) {
    let mut waited = harness.json(gateway, &["runs", "wait", run, "--wait", "60", "--json"]).await;
    assert!(waited.as_object_mut().unwrap().remove("endedAt").is_some_and(|t| t.is_u64()), "{waited}");
    let text = format!("all {PARTS} done");
    let terminal = json!({"disposition": "visible", "text": text});
    assert_eq!(waited, json!({"runId": run, "status": "ok", "stopReason": "stop", "terminalReply": terminal}));

    let shown = harness.json(gateway, &["runs", "show", run, "--json"]).await;
    let root = &shown["root"];
    assert_eq!(shown["runId"], run, "{shown}");
    assert_eq!(shown["finalAnswer"], text, "{shown}");
    assert_eq!(
        shown["outcomes"],
        json!({"ok": PARTS + 1, "error": 0, "timeout": 0, "killed": 0, "interrupted": 0, "running": 0}),
        "{shown}"
    );
    let root_fields = [&root["sessionKey"], &root["agentId"], &root["model"], &root["outcome"]];
    assert_eq!(root_fields, [&json!("agent:brain:main"), &json!("brain"), &json!("fake/brain"), &json!("ok")]);
    let children = root["children"].as_array().unwrap();
    let mut labels: Vec<&str> = children.iter().map(|c| c["label"].as_str().unwrap()).collect();
    labels.sort_unstable();
    let mut expected: Vec<String> = (0..PARTS).map(|n| format!("part-{n}")).collect();
    expected.sort_unstable();
    assert_eq!(labels, expected, "one child per part: {shown}");
    for child in children {
        let fields = [&child["agentId"], &child["model"], &child["outcome"], &child["status"], &child["children"]];
        assert_eq!(fields, [&json!("executor"), &json!("fake/executor"), &json!("ok"), &json!("ended"), &json!([])]);
    }
    let child_keys: BTreeSet<&str> = children.iter().map(|c| c["sessionKey"].as_str().unwrap()).collect();
    assert_eq!(child_keys.len(), PARTS, "20 distinct child sessions: {shown}");
    assert_eq!(descendants(root).len(), PARTS, "no grandchildren: {shown}");

    // The brain's last request (the one it answered `all 20 done`): every part's result
    // once, every tool call answered once, 20 spawns accepted.
    let brain = harness.requests("brain");
    let last = brain.last().unwrap();
    let mut results: Vec<usize> =
        last.messages.iter().flat_map(|m| parts_in(m.content.as_deref().unwrap_or_default())).collect();
    results.sort_unstable();
    assert_eq!(results, (0..PARTS).collect::<Vec<_>>(), "each result exactly once in the brain's last request");
    let mut called: Vec<&str> =
        last.messages.iter().flat_map(|m| m.tool_calls.iter().flatten()).map(|c| c.id.as_str()).collect();
    let mut answered: Vec<String> = tool_results(last).into_iter().map(|(id, _)| id).collect();
    called.sort_unstable();
    answered.sort_unstable();
    assert_eq!(called, answered, "every tool call answered exactly once");
    let accepted = spawns(last).iter().filter(|(_, accepted)| *accepted).count();
    assert_eq!(accepted, PARTS, "spawns accepted (run) as the brain saw them");

    // Nothing is left running: the brain and its 20 children, each done and ok.
    let listed = harness.json(gateway, &["sessions", "list", "--json"]).await;
    let rows = listed["sessions"].as_array().unwrap();
    for row in rows {
        let fields = [&row["status"], &row["outcome"], &row["hasActiveRun"]];
        assert_eq!(fields, [&json!("done"), &json!("ok"), &json!(false)], "{row}");
    }
    let main = rows.iter().filter(|s| s["parentSessionKey"].is_null()).map(|s| s["sessionKey"].as_str().unwrap());
    assert_eq!(main.collect::<Vec<_>>(), ["agent:brain:main"], "{listed}");
    let listed_children: BTreeSet<&str> = rows
        .iter()
        .filter(|s| s["parentSessionKey"] == "agent:brain:main")
        .map(|s| s["sessionKey"].as_str().unwrap())
        .collect();
    assert_eq!(listed_children, child_keys, "sessions list shows the tree's children: {listed}");
    assert_eq!(rows.len(), PARTS + 1, "{listed}");
}

/// The harness itself, with no crash: the tree ends ok (this passes without durability).
#[actix_rt::test]
async fn the_tree_ends_ok_without_a_crash() {
    let mut harness = Harness::new("", false);
    let gateway = harness.serve().await;
    let run = harness.start_run(&gateway, "twenty parts").await;
    assert_tree_ended_ok(&harness, &gateway, &run).await;
    assert_eq!(harness.requests("executor").len(), PARTS, "one call per executor");
}

/// The done-when: two `kill -9` mid-run (every child mid-call; then after the
/// restart, just as the first resumed children answer), and the tree ends as if not.
#[actix_rt::test]
async fn a_tree_survives_two_kill_9s_mid_run() {
    let mut harness = Harness::new("", false);
    let gateway = harness.serve().await;
    let run = harness.start_run(&gateway, "twenty parts").await;
    // All 20 calls seen, so every executor request from here on is a resumed child's.
    harness.until_executor_requests(PARTS, &gateway).await;
    gateway.kill();

    let before = harness.requests("executor").len();
    let gateway = harness.serve().await;
    harness.until_executor_requests(before + 1, &gateway).await;
    harness.until_an_executor_answered(before).await;
    gateway.kill();

    let gateway = harness.serve().await;
    assert_tree_ended_ok(&harness, &gateway, &run).await;
}

/// Killed during spawning: with the brain's first call in flight (its 20 spawns not yet
/// asked for), then after the restart from inside the fake the moment the first
/// executor call arrives (the spawns just acknowledged, perhaps not yet on disk).
#[actix_rt::test]
async fn a_tree_survives_kill_9s_during_spawning() {
    let mut harness = Harness::new("", false);
    let gateway = harness.serve().await;
    let run = harness.start_run(&gateway, "twenty parts").await;
    harness.fake.wait_for_request("brain").await;
    gateway.kill();

    let before = harness.requests("executor").len();
    let gateway = harness.serve().await;
    harness.tripwire.arm(&gateway, "executor");
    harness.until_executor_requests(before + 1, &gateway).await;
    gateway.ended(WAIT).await;
    drop(gateway);

    let gateway = harness.serve().await;
    assert_tree_ended_ok(&harness, &gateway, &run).await;
}

/// Killed with results ended but not delivered: once the brain's call after its first
/// result is in flight and more children have answered since (their results wait in
/// its inbox, not yet in its transcript), the other children still mid-call.
#[actix_rt::test]
async fn a_tree_survives_a_kill_9_between_a_childs_end_and_its_delivery() {
    let mut harness = Harness::new("", false);
    let gateway = harness.serve().await;
    let run = harness.start_run(&gateway, "twenty parts").await;
    let mut asked = None;
    let what = || format!("the brain's call with a first result; gateway log:\n{}", gateway.log());
    until(what, || {
        let brain = harness.arrivals("brain").into_iter();
        asked = brain.filter(|(r, _)| !results_seen(r).is_empty()).map(|(_, at)| at).next();
        asked.is_some()
    })
    .await;
    let kill_at = asked.unwrap() + BRAIN_DELAY / 2;
    tokio::time::sleep(kill_at.saturating_duration_since(Instant::now())).await;
    gateway.kill();

    let gateway = harness.serve().await;
    assert_tree_ended_ok(&harness, &gateway, &run).await;
}

/// SIGTERM with a tree running (executors far slower than the grace period): a new run
/// is refused with the documented error, the gateway exits 0 within the grace, and after
/// a restart the tree resumes and ends ok.
#[actix_rt::test]
async fn sigterm_refuses_new_runs_and_active_ones_resume_after_restart() {
    let grace = 3;
    let mut harness = Harness::new(&format!("shutdown_grace_seconds = {grace}"), true);
    let gateway = harness.serve().await;
    let run = harness.start_run(&gateway, "twenty parts").await;
    harness.until_executor_requests(PARTS, &gateway).await;

    let term = Command::new("kill").args(["-TERM", &gateway.pid()]).status().unwrap();
    assert!(term.success());
    // The shutdown has begun once serve says so; the gateway still answers meanwhile.
    let what = || format!("serve to log that it is shutting down:\n{}", gateway.log());
    until(what, || gateway.log().contains("shutting down")).await;
    let refused = harness
        .command(&gateway, &["agent", "--agent", "brain", "--session-key", "other", "--message", "late", "--json"])
        .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_ne!(refused.status.code(), Some(0), "a new run during shutdown is refused: {stderr}");
    assert!(stderr.contains("the gateway is shutting down"), "{stderr}\ngateway log:\n{}", gateway.log());

    // Stuck executors do not hold the shutdown past the grace period (give or take 10 s).
    let status = gateway.ended(Duration::from_secs(grace + 10)).await;
    assert_eq!(status.code(), Some(0), "serve exits 0 after SIGTERM:\n{}", gateway.log());

    harness.slow.store(false, Ordering::SeqCst);
    let gateway = harness.serve().await;
    assert_tree_ended_ok(&harness, &gateway, &run).await;
}

/// Skip (saying why) unless a Postgres for tests can be had; a fresh database in it.
async fn workers_database() -> Option<common::postgres::TestDatabase> {
    tokio::task::spawn_blocking(|| common::postgres::TestDatabase::create("tests/durable.rs (workers)")).await.unwrap()
}

/// The done-when for workers: a gateway and two `hivegate worker` processes run
/// a 20-executor tree placed on workers, both take part; one worker is killed (SIGKILL)
/// with its executors mid-call, and the tree still ends ok with every result delivered
/// to the brain exactly once: the other worker claims the dead one's sessions when their
/// leases lapse and runs them again from their journals.
#[actix_rt::test]
async fn a_tree_on_two_workers_survives_a_worker_kill_9() {
    let Some(database) = workers_database().await else { return };
    let mut harness = Harness::on_workers(&database.url);
    let (gateway, w1, w2, run) = harness.tree_on_two_workers().await;
    // A worker's port serves its health and metrics, and no WebSocket or dashboard:
    // operators and nodes connect to the gateway.
    let http = reqwest::Client::new();
    for (path, status) in [("/health", 200), ("/metrics", 200), ("/", 404), ("/ui", 404)] {
        let response = http
            .get(format!("{}{path}", w2.http))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "worker {path}");
    }
    let placed = harness.placements(&gateway).await;
    let on = |worker: &str| placed.values().filter(|p| *p == &format!("worker:{worker}")).count();
    assert_eq!(on("w1") + on("w2"), PARTS, "every child runs on a worker: {placed:?}");
    assert!(on("w1") > 0 && on("w2") > 0, "both workers take part: {placed:?}");
    let log = w1.log();
    w1.kill();

    assert_tree_ended_ok(&harness, &gateway, &run).await;
    assert!(harness.requests("executor").len() > PARTS, "w1's executors ran again on w2; w1's log:\n{log}");
    let placed = harness.placements(&gateway).await;
    assert!(placed.values().all(|p| p.starts_with("worker:")), "{placed:?}");
    assert!(placed.values().any(|p| p == "worker:w2"), "{placed:?}");
    // `runs show` says the same of each child, and that the brain ran on the gateway.
    let shown = harness.json(&gateway, &["runs", "show", &run, "--json"]).await;
    assert_eq!(shown["root"]["placement"], "local", "{shown}");
    for child in shown["root"]["children"].as_array().unwrap() {
        let key = child["sessionKey"].as_str().unwrap();
        assert_eq!(child["placement"].as_str(), placed.get(key).map(String::as_str), "{shown}");
    }
}

/// The gateway killed (SIGKILL) with the tree's executors mid-call on two workers, and
/// started again on the same database: the workers go on, their results wait in the
/// outbox, and the tree ends ok with every result delivered once.
#[actix_rt::test]
async fn a_tree_on_workers_survives_a_gateway_kill_9() {
    let Some(database) = workers_database().await else { return };
    let mut harness = Harness::on_workers(&database.url);
    let (gateway, _w1, _w2, run) = harness.tree_on_two_workers().await;
    gateway.kill();

    let gateway = harness.serve().await;
    assert_tree_ended_ok(&harness, &gateway, &run).await;
    assert_eq!(harness.requests("executor").len(), PARTS, "the workers ran each executor once");
}

/// Killing a tree reaches its sessions on workers: the operator aborts the brain with
/// its 20 executors mid-call (slow) on two workers; the gateway revokes each in the
/// database, the workers are told by NOTIFY and stop them, within seconds, long before
/// any executor would have answered.
#[actix_rt::test]
async fn killing_a_tree_stops_its_sessions_on_workers() {
    let Some(database) = workers_database().await else { return };
    let mut harness = Harness::with_store("", true, Some(&database.url));
    let (gateway, w1, w2, _run) = harness.tree_on_two_workers().await;
    let running = w1.active("executor").await + w2.active("executor").await;
    assert_eq!(running, PARTS, "the 20 executors run on the workers");

    let aborted = harness.command(&gateway, &["sessions", "abort", "agent:brain:main"]).await;
    assert_eq!(aborted.status.code(), Some(0), "{}", String::from_utf8_lossy(&aborted.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = w1.active("executor").await + w2.active("executor").await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} executors still run on the workers 10 s after the abort");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revoked: BTreeSet<String> = w1.revoked().union(&w2.revoked()).cloned().collect();
    assert_eq!(
        revoked.len(),
        PARTS,
        "each worker stopped its sessions as revoked: {revoked:?}\n{}\n{}",
        w1.log(),
        w2.log()
    );
    let placed = harness.placements(&gateway).await;
    assert_eq!(placed.len(), PARTS, "{placed:?}");
    assert_eq!(harness.requests("executor").len(), PARTS, "no executor ran again");
}

/// A row in the work queue that the gateway did not sign (written by anyone else with
/// access to the database) grants nothing: the worker refuses it, says why in the row
/// and its log, and runs nothing.
#[actix_rt::test]
async fn a_queued_spawn_the_gateway_did_not_sign_is_refused() {
    use hivegate::worker::token::{GatewayKey, WorkToken};
    let Some(database) = workers_database().await else { return };
    let mut harness = Harness::on_workers(&database.url);
    let gateway = harness.serve().await;
    let worker = harness.worker("w1").await;
    let forged = WorkToken {
        key: "agent:executor:subagent:forged".into(),
        run_id: "forged-run".into(),
        parent: "agent:brain:main".into(),
        parent_run_id: "none".into(),
        agent_id: "executor".into(),
        model: "fake/executor".into(),
        model_explicit: false,
        thinking: None,
        task: "part 1".into(),
        label: None,
        grant: hivegate::store::Grant { scopes: u16::MAX, depth: 1, max_depth: 9, ..Default::default() },
        issued_at_ms: 0,
    };
    let token = GatewayKey::ephemeral().sign(&forged).unwrap();
    let url = database.url.clone();
    let rejected = tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        db.execute(
            "INSERT INTO work (key, agent_id, token) VALUES ($1, 'executor', $2)",
            &[&forged.key.as_str(), &token],
        )
        .unwrap();
        db.execute("NOTIFY hivegate_work, 'executor'", &[]).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let row = db.query_one("SELECT rejected FROM work WHERE key = $1", &[&forged.key.as_str()]).unwrap();
            if let Some(why) = row.get::<_, Option<String>>(0) {
                return why;
            }
            assert!(Instant::now() < deadline, "the forged row was not refused");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(rejected, "the work token's signature is not the gateway's");
    assert!(worker.log().contains("refused a queued session"), "{}", worker.log());
    assert_eq!(worker.active("executor").await, 0);
    assert!(harness.requests("executor").is_empty(), "nothing ran");
    drop(gateway);
}
