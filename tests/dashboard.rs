//! The web dashboard (`/ui`) in a real browser, and `hivegate dashboard`.
//!
//! Each browser test starts the real `hivegate serve` (the binary, on 127.0.0.1:0, with a
//! gateway token) whose provider is the scripted fake model server of tests/common: a
//! brain spawns a lead and executors; executors told to be `slow` and the brain and
//! leads after their spawns never get an answer, so they stay running until killed;
//! `quick` ones end ok, `fail` ones get an HTTP 400 and end failed. Headless Chromium
//! (`cdp.rs`) opens the link `hivegate dashboard` prints, and the test reads the page's
//! DOM over the DevTools protocol, polling until a deadline (no timed assertions), and
//! clicks the way a user does. What the page claims is checked against the gateway over
//! its own protocol.
//!
//! Without Chromium the browser tests print SKIPPED and pass, unless
//! `HIVEGATE_REQUIRE_CHROMIUM=1` (CI, after `scripts/chromium`). With
//! `HIVEGATE_SCREENSHOT=path.png` the live-tree test saves a screenshot of the dashboard
//! (the README's docs/dashboard.png).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "dashboard/cdp.rs"]
mod cdp;
mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ws::{cli_call, TOKEN};
use common::wsclient::{ConnectOptions, Identity, WsClient};
use common::{call, tool_results, FakeModels, Reply};
use hivegate::model::openai::CompletionRequest;
use serde_json::{json, Value};

const KEY_ENV: &str = "HIVEGATE_DASHBOARD_TEST_KEY";
const UI_WAIT: Duration = Duration::from_secs(30);
const BIG_WAIT: Duration = Duration::from_secs(120);

/// The first user message: the task.
fn task(request: &CompletionRequest) -> String {
    request.messages.iter().find(|m| m.role == "user").and_then(|m| m.content.clone()).unwrap_or_default()
}

fn spawn(n: usize, label: &str, agent: &str, task: &str) -> (String, String, String) {
    call(&format!("spawn-{n}"), "sessions_spawn", json!({"task": task, "label": label, "agentId": agent}))
}

/// What the brain and leads spawn for a task: `tree` (a lead with three slow
/// executors, a slow, a quick and a failing executor), `wide N M` (N leads of M slow
/// executors each), `fan M NAME` (M slow executors labelled NAME-i).
fn spawns_for(task: &str) -> Vec<(String, String, String)> {
    let words: Vec<&str> = task.split_whitespace().collect();
    match words.as_slice() {
        ["tree", ..] => vec![
            spawn(0, "alpha", "lead", "fan 3 alpha"),
            spawn(1, "beta", "executor", "slow beta"),
            spawn(2, "gamma", "executor", "quick gamma"),
            spawn(3, "delta", "executor", "fail delta"),
        ],
        ["wide", leads, each, ..] => (0..leads.parse().unwrap())
            .map(|i| spawn(i, &format!("wave-{i}"), "lead", &format!("fan {each} wave-{i}")))
            .collect(),
        ["fan", count, name, ..] => (1..=count.parse().unwrap())
            .map(|i| spawn(i, &format!("{name}-{i}"), "executor", &format!("slow {name}-{i}")))
            .collect(),
        _ => Vec::new(),
    }
}

fn script(request: &CompletionRequest) -> Reply {
    let task = task(request);
    match request.model.as_str() {
        "brain" | "lead" if tool_results(request).is_empty() => {
            Reply::WithUsage(Box::new(Reply::Calls(spawns_for(&task))), 1800, 420)
        }
        "executor" if task.starts_with("quick") => {
            Reply::WithUsage(Box::new(Reply::Text(format!("report: {task} - done."))), 900, 160)
        }
        "executor" if task.starts_with("fail") => Reply::Status(400, None),
        _ => Reply::Hang,
    }
}

/// A running `hivegate serve` on the fake models; killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _fake: FakeModels,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Server {
        let fake = FakeModels::start(script);
        let dir = tempfile::tempdir().unwrap();
        let agents = dir.path().join("agents");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let spawner = |id: &str, model: &str, allow: &str| {
            format!(
                "id = \"{id}\"\nmodel = \"fake/{model}\"\nprompt = \"You are the {id}.\"\n[tools]\n\
                 allow = [\"sessions_spawn\", \"sessions_yield\", \"subagents\"]\n\
                 [subagents]\nallow_agents = [{allow}]\nmax_children = 300\n"
            )
        };
        std::fs::write(agents.join("brain.toml"), spawner("brain", "brain", "\"lead\", \"executor\"")).unwrap();
        std::fs::write(agents.join("lead.toml"), spawner("lead", "lead", "\"executor\"")).unwrap();
        std::fs::write(
            agents.join("executor.toml"),
            "id = \"executor\"\nmodel = \"fake/executor\"\nprompt = \"You are an executor.\"\n[tools]\nallow = []\n",
        )
        .unwrap();
        let price = |model: &str, input: f64, output: f64| {
            format!("[providers.fake.models.\"{model}\"]\ninput_per_mtok = {input}\noutput_per_mtok = {output}\n")
        };
        let config = format!(
            "[gateway]\nstate_dir = \"{}\"\nagents_dir = \"agents\"\n[limits]\nmax_children_per_session = 300\n\
             [providers.fake]\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n{}{}{}",
            dir.path().join("state").display(),
            fake.url,
            price("brain", 3.0, 15.0),
            price("lead", 1.0, 5.0),
            price("executor", 0.2, 0.6),
        );
        std::fs::write(dir.path().join("hivegate.toml"), config).unwrap();
        let out = dir.path().join("serve.out");
        let log = dir.path().join("serve.log");
        let child = hivegate(&dir)
            .args(["serve", "--bind", "127.0.0.1:0", "--token", TOKEN])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, addr: ([127, 0, 0, 1], 0).into(), dir, _fake: fake };
        let deadline = Instant::now() + UI_WAIT;
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(addr) = text.split_whitespace().find_map(|w| w.strip_prefix("http://")) {
                server.addr = addr.trim_end_matches('/').parse().unwrap();
                return server;
            }
            let exited = server.child.try_wait().unwrap();
            assert!(exited.is_none(), "serve exited {exited:?}: {}", std::fs::read_to_string(&log).unwrap());
            assert!(Instant::now() < deadline, "serve did not say where it listens");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// `hivegate dashboard <args>` against this gateway, bounded.
    async fn dashboard(&self, args: &[&str]) -> Output {
        let mut command = hivegate(&self.dir);
        command.arg("dashboard").args(args).stdin(Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output());
        tokio::time::timeout(UI_WAIT, output).await.expect("hivegate dashboard did not end").unwrap().unwrap()
    }

    /// The link `hivegate dashboard` prints for this gateway (checked: exit 0).
    async fn link(&self) -> String {
        let output = self.dashboard(&["--url", &self.ws_url(), "--token", TOKEN]).await;
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Start a run of the brain on `task` in session `agent:brain:<key>`.
    async fn start_run(&self, key: &str, task: &str) {
        let params = json!({"message": task, "agentId": "brain", "sessionKey": format!("agent:brain:{key}"),
            "idempotencyKey": format!("run-{key}")});
        let ack = cli_call(self.addr, &["operator.write"], "agent", params).await.unwrap();
        assert_eq!(ack["status"], "accepted", "{ack}");
    }

    /// `sessions.list` over the gateway: label (or key) → status.
    async fn statuses(&self) -> std::collections::BTreeMap<String, String> {
        let list = cli_call(self.addr, &["operator.read"], "sessions.list", json!({})).await.unwrap();
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let name = s["label"].as_str().or(s["sessionKey"].as_str()).unwrap().to_string();
                (name, s["status"].as_str().unwrap().to_string())
            })
            .collect()
    }
}

/// The binary in the server's directory, with nothing from the environment that could
/// point it elsewhere.
fn hivegate(dir: &tempfile::TempDir) -> Command {
    let mut command = common::hivegate_in(dir.path());
    command.env("HOME", dir.path().join("home")).env(KEY_ENV, "test-key").env("NO_COLOR", "1");
    command
}

/// Chromium, or `None` (SKIPPED) when it is not installed and not required.
async fn browser() -> Option<cdp::Browser> {
    let Some(path) = cdp::find() else {
        assert!(
            std::env::var("HIVEGATE_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "HIVEGATE_REQUIRE_CHROMIUM=1 but chromium is not installed: run scripts/chromium (or set HIVEGATE_CHROMIUM)"
        );
        eprintln!(
            "SKIPPED: the dashboard browser tests need Chromium; run scripts/chromium to install Debian's chromium \
             (or set HIVEGATE_CHROMIUM to a Chromium binary)"
        );
        return None;
    };
    Some(cdp::Browser::launch(&path).await)
}

/// JavaScript: the tree's rows as `{label: status}` once `ready` (a JS condition on
/// `rows`) holds, else null.
fn rows_when(ready: &str) -> String {
    format!(
        "(() => {{ const rows = {{}}; for (const li of document.querySelectorAll('#tree li[data-key]')) \
         rows[li.querySelector(':scope > .row .label').textContent] = li.dataset.status; \
         return ({ready}) ? rows : null; }})()"
    )
}

/// CSS selector of the row (the `.row` element) labelled `label`.
async fn row_selector(page: &cdp::Page, label: &str) -> String {
    let find = format!(
        "(() => {{ for (const li of document.querySelectorAll('#tree li[data-key]')) \
         if (li.querySelector(':scope > .row .label').textContent === {}) return li.dataset.key; return null; }})()",
        json!(label)
    );
    let key = page.wait_for(&format!("a row labelled {label}"), &find, UI_WAIT).await;
    format!("li[data-key={}] > .row", json!(key.as_str().unwrap()))
}

#[path = "dashboard/browser.rs"]
mod browser_tests;

/// `/ui` is served with its policy headers, cached by ETag, and nothing else under it.
#[actix_rt::test]
async fn the_page_is_served_with_a_strict_policy() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let page = http.get(format!("http://{}/ui", server.addr)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |r: &reqwest::Response, name: &str| r.headers().get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let policy = header(&page, "content-security-policy");
    let socket = format!("connect-src 'self' ws://{0} wss://{0};", server.addr);
    assert!(policy.starts_with("default-src 'none'; script-src 'self';") && policy.contains(&socket), "{policy}");
    let body = page.text().await.unwrap();
    assert!(body.contains("<script type=\"module\" src=\"/ui/app.js\">"), "{body}");
    let script = http.get(format!("http://{}/ui/app.js", server.addr)).send().await.unwrap();
    assert_eq!(header(&script, "content-type"), "text/javascript; charset=utf-8");
    let etag = header(&script, "etag");
    let again = http.get(format!("http://{}/ui/app.js", server.addr)).header("if-none-match", &etag).send().await;
    assert_eq!(again.unwrap().status(), 304);
    let missing = http.get(format!("http://{}/ui/secrets.json", server.addr)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// `hivegate dashboard`: the checked link (plain and `--json`), and exit 1 when the
/// gateway is not there or refuses the token, or no token is known; 2 for bad input.
#[actix_rt::test]
async fn the_dashboard_command_prints_a_checked_link() {
    let server = Server::start().await;
    let url = server.ws_url();
    assert_eq!(server.link().await, format!("http://{}/ui#token={TOKEN}", server.addr));
    let output = server.dashboard(&["--url", &url, "--token", TOKEN, "--json"]).await;
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed,
        json!({"url": format!("http://{}/ui#token={TOKEN}", server.addr), "gatewayUrl": url, "checked": true})
    );
    let wrong = server.dashboard(&["--url", &url, "--token", "nope"]).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gateway token mismatch") && wrong.stdout.is_empty(), "{stderr}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gone = server.dashboard(&["--url", &format!("ws://{closed}/"), "--token", TOKEN]).await;
    assert_eq!(gone.status.code(), Some(1), "{}", String::from_utf8_lossy(&gone.stderr));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect to the gateway"));
    let unchecked = server.dashboard(&["--url", &format!("ws://{closed}/"), "--token", TOKEN, "--no-check"]).await;
    assert_eq!(String::from_utf8_lossy(&unchecked.stdout).trim(), format!("http://{closed}/ui#token={TOKEN}"));
    // No --token and no token in the config or environment: nothing to sign in with.
    let none = server.dashboard(&["--url", &url]).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("the dashboard needs the gateway token"));
    let bad = server.dashboard(&["--url", "http://127.0.0.1:1/", "--token", TOKEN, "--no-check"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let usage = server.dashboard(&["--frobnicate"]).await;
    assert_eq!(usage.status.code(), Some(2));
    let help = server.dashboard(&["--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("never send") && help.contains("Exit codes"), "{help}");
}
