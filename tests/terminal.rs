//! The live terminal view of `hivegate run` and `hivegate agent`, as a person sees it:
//! the real binary with a pseudo-terminal (`openpty`) as its stdout, its output read by
//! a thread until the terminal closes. On a terminal the tree is redrawn in place
//! (cursor up, lines cleared) with statuses that change as sessions end; piped, the
//! output is the plain report it always was. Ctrl-C (SIGINT, sent by PID) kills the
//! tree, prints the partial tree and exits 130.
//!
//! Runs that must stay running until the signal use the scripted fake model server of
//! `common` (in this process): the brain spawns two executors, then every call hangs.
//! Every wait is bounded; nothing is timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{call, tool_results, FakeModels, Reply};
use hivegate::model::openai::CompletionRequest;
use serde_json::{json, Value};

/// The bound on every wait.
const WAIT: Duration = Duration::from_secs(60);
const KEY_ENV: &str = "HIVEGATE_TERMINAL_TEST_KEY";
const TOKEN: &str = "terminal-test-token";

/// A pseudo-terminal of `rows` × `cols`: (the side we read, the side the child writes).
fn open_pty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors through the pointers and reads the size.
    let status = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(status, 0, "openpty failed: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// A child whose stdout is a terminal, and what it wrote there so far.
struct OnTerminal {
    child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: tempfile::NamedTempFile,
}

impl OnTerminal {
    fn spawn(command: &mut Command) -> OnTerminal {
        let (master, slave) = open_pty(30, 160);
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let child =
            command.stdin(Stdio::null()).stdout(Stdio::from(slave)).stderr(stderr.reopen().unwrap()).spawn().unwrap();
        // Our copy of the terminal's side went with the command's Stdio; once the child
        // exits, reads end (EIO).
        let screen = Arc::new(Mutex::new(Vec::new()));
        let seen = screen.clone();
        let reader = std::thread::spawn(move || {
            let mut master = std::fs::File::from(master);
            let mut chunk = [0u8; 4096];
            while let Ok(n) = master.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        OnTerminal { child, screen, reader: Some(reader), stderr }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).to_string()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Wait (bounded) until the screen's bytes satisfy `done`.
    async fn until(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.text()) {
            let exited = self.child.id();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (pid {exited}); screen:\n{}\nstderr:\n{}",
                self.text(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn interrupt(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    }

    /// Wait (bounded) for the exit, then for the last bytes: the exit code and the screen.
    async fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the command did not exit; screen:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let reader = self.reader.take().unwrap();
        let deadline = Instant::now() + WAIT;
        while !reader.is_finished() {
            assert!(Instant::now() < deadline, "the terminal did not close");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reader.join().unwrap();
        (status.code(), self.text(), self.stderr())
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hivegate(dir: &Path) -> Command {
    let mut command = common::hivegate_in(dir);
    command.env("HOME", dir).env(KEY_ENV, "test-key");
    command
}

/// Where the cursor moves up over the last frame: `ESC [ n A`.
fn cursor_ups(text: &str) -> usize {
    text.match_indices("\x1b[")
        .filter(|(at, m)| {
            let rest = &text[at + m.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            digits > 0 && rest[digits..].starts_with('A')
        })
        .count()
}

#[actix_rt::test]
async fn run_on_a_terminal_redraws_its_tree_live_and_ends_with_the_final_tree() {
    let dir = tempfile::tempdir().unwrap();
    let run = OnTerminal::spawn(hivegate(dir.path()).args(["run", "alpha; beta"]));
    let (code, screen, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{screen}\n{stderr}");
    assert!(screen.starts_with("\x1b[?25l"), "the cursor is hidden while the tree is drawn: {screen:?}");
    let running = screen.find("agent:brain:main  brain  builtin/brain  running").expect(&screen);
    let ok = screen.find("agent:brain:main  brain  builtin/brain  ok").expect(&screen);
    assert!(running < ok, "the root's line goes from running to ok: {screen:?}");
    assert!(cursor_ups(&screen) >= 1, "the frame is redrawn in place: {screen:?}");
    assert!(screen.contains("\x1b[K"), "lines are cleared as they are drawn: {screen:?}");
    // The live frame is erased and the report takes its place, cursor shown again.
    let report = &screen[screen.rfind("\x1b[?25h").expect("the cursor comes back") + "\x1b[?25h".len()..];
    assert!(!report.contains('\x1b'), "the report is plain: {report:?}");
    let lines: Vec<&str> = report.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].starts_with("agent:brain:main  brain  builtin/brain  ok"), "{report}");
    assert!(
        lines[1].starts_with("├── agent:executor:") && lines[1].contains("\"part 1\"  executor  builtin/executor  ok")
    );
    assert!(
        lines[2].starts_with("└── agent:executor:") && lines[2].contains("\"part 2\"  executor  builtin/executor  ok")
    );
    assert!(report.contains("sessions: 3 (ok 3, error 0, timeout 0, killed 0, running 0)"), "{report}");
    assert!(report.contains("final answer:\r\nsummary of 2 results for 'alpha; beta'"), "{report}");
    assert!(stderr.is_empty(), "no progress lines beside the live tree: {stderr}");
}

#[test]
fn piped_output_is_the_plain_report_without_escape_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let output = hivegate(dir.path()).args(["run", "alpha; beta"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(stdout.starts_with("agent:brain:main  brain  builtin/brain  ok"), "{stdout}");
}

/// The brain spawns two executors (labels `left`, `right`) and then waits forever, as do
/// the executors: the tree runs until it is killed.
fn held(request: &CompletionRequest) -> Reply {
    match (request.model.as_str(), tool_results(request).is_empty()) {
        ("brain", true) => Reply::Calls(
            ["left", "right"]
                .iter()
                .map(|label| {
                    call(
                        &format!("spawn-{label}"),
                        "sessions_spawn",
                        json!({"task": format!("hold {label}"),
                        "label": label, "agentId": "executor"}),
                    )
                })
                .collect(),
        ),
        _ => Reply::Hang,
    }
}

/// A directory with a config naming the fake as provider `fake`, and the two agents.
fn held_tree(fake: &FakeModels) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents");
    std::fs::create_dir(&agents).unwrap();
    std::fs::write(
        agents.join("brain.toml"),
        "id = \"brain\"\nmodel = \"fake/brain\"\nprompt = \"You are the brain.\"\n[tools]\n\
         allow = [\"sessions_spawn\", \"sessions_yield\"]\n[subagents]\nallow_agents = [\"executor\"]\n",
    )
    .unwrap();
    std::fs::write(
        agents.join("executor.toml"),
        "id = \"executor\"\nmodel = \"fake/executor\"\nprompt = \"You execute.\"\n[tools]\nallow = []\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("hivegate.toml"),
        format!(
            "[gateway]\nstate_dir = \"{}\"\n[providers.fake]\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n",
            dir.path().join("state").display(),
            fake.url
        ),
    )
    .unwrap();
    dir
}

/// Both executors have asked their model (so the whole tree is running).
async fn until_executors_call(fake: &mut FakeModels) {
    fake.wait_for_request("executor").await;
    fake.wait_for_request("executor").await;
}

#[actix_rt::test]
async fn ctrl_c_during_run_kills_the_tree_prints_it_and_exits_130() {
    let mut fake = FakeModels::start(held);
    let dir = held_tree(&fake);
    let run = OnTerminal::spawn(hivegate(dir.path()).args(["run", "hold the line"]));
    until_executors_call(&mut fake).await;
    run.until("the whole tree running on screen", |s| s.contains("sessions: 3 (running 3)")).await;
    let screen = run.text();
    assert!(screen.contains("\"left\"  executor  fake/executor  running"), "{screen}");
    assert!(screen.contains("\"right\"  executor  fake/executor  running"), "{screen}");
    run.interrupt();
    let (code, screen, stderr) = run.finish().await;
    assert_eq!(code, Some(130), "{screen}\n{stderr}");
    let report = &screen[screen.rfind("\x1b[?25h").expect("the cursor comes back") + "\x1b[?25h".len()..];
    let lines: Vec<&str> = report.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines[0].starts_with("agent:brain:main  brain  fake/brain  killed"), "{report}");
    assert!(report.contains("killed by the operator"), "{report}");
    assert_eq!(lines.iter().filter(|l| l.contains("executor  fake/executor  killed")).count(), 2, "{report}");
    assert!(report.contains("sessions: 3 (ok 0, error 0, timeout 0, killed 3, running 0)"), "{report}");
    assert!(stderr.contains("interrupted: the tree was killed (3 sessions killed)"), "{stderr}");
    fake.stop().await;
}

#[actix_rt::test]
async fn ctrl_c_during_a_piped_run_prints_the_plain_partial_tree_and_exits_130() {
    let mut fake = FakeModels::start(held);
    let dir = held_tree(&fake);
    let run = hivegate(dir.path())
        .args(["run", "hold the line"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until_executors_call(&mut fake).await;
    let pid = run.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let output = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || run.wait_with_output()))
        .await
        .expect("run did not exit")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(stdout.starts_with("agent:brain:main  brain  fake/brain  killed"), "{stdout}");
    assert!(stdout.contains("killed 3, running 0"), "{stdout}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("interrupted: killing the tree"), "{stderr}");
    fake.stop().await;
}

#[actix_rt::test]
async fn ctrl_c_during_agent_aborts_the_tree_on_the_gateway_and_exits_130() {
    let mut fake = FakeModels::start(held);
    let dir = held_tree(&fake);
    let out = dir.path().join("serve.out");
    let mut serve = hivegate(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0", "--token", TOKEN])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let url = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(addr) = text.split_whitespace().find_map(|w| w.strip_prefix("http://")) {
            break format!("ws://{addr}");
        }
        assert!(serve.try_wait().unwrap().is_none() && Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let agent = OnTerminal::spawn(hivegate(dir.path()).args([
        "agent",
        "--url",
        &url,
        "--token",
        TOKEN,
        "--agent",
        "brain",
        "--message",
        "hold the line",
    ]));
    until_executors_call(&mut fake).await;
    agent.until("the whole tree running on screen", |s| s.contains("sessions: 3 (running 3)")).await;
    agent.interrupt();
    let (code, screen, stderr) = agent.finish().await;
    assert_eq!(code, Some(130), "{screen}\n{stderr}");
    assert!(stderr.contains("interrupted: the run's tree was aborted"), "{stderr}");
    // The last frame stays: the root and both executors killed.
    let last = &screen[screen.rfind("agent:brain:main  brain").unwrap()..];
    assert!(last.starts_with("agent:brain:main  brain  fake/brain  killed"), "{screen}");
    assert_eq!(last.matches("executor  fake/executor  killed").count(), 2, "{screen}");
    assert!(screen.ends_with("\x1b[?25h"), "the cursor comes back: {screen:?}");
    // On the gateway, nothing of the tree is still running.
    let mut list = hivegate(dir.path());
    list.args(["sessions", "list", "--url", &url, "--token", TOKEN, "--json"]);
    let listed = tokio::task::spawn_blocking(move || list.output().unwrap()).await.unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{listed}");
    assert!(sessions.iter().all(|s| s["status"] != "running"), "{listed}");
    let _ = serve.kill();
    let _ = serve.wait();
    fake.stop().await;
}
