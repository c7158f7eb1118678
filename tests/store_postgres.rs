//! `hivegate serve --database-url`: the real binary keeps its durable state in Postgres.
//!
//! A serve on a fresh database (its own, from `common::postgres`; the test skips with a
//! message when there is no server, unless `HIVEGATE_REQUIRE_POSTGRES=1`) pairs an
//! operator device and runs the shipped brain (builtin model, offline) through
//! `hivegate agent`; the pairing and the sessions are then read from Postgres directly.
//! A second serve, on the same database but another state directory (so nothing can
//! come from files), still knows the device and the sessions. The URL carries a
//! password (the test server ignores it) that must never be printed or logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::ws::{assert_paired, cli_call, pair_operator, TOKEN};
use common::wsclient::Identity;
use serde_json::{json, Value};

const PASSWORD: &str = "pw-never-shown-7f3a";
const WAIT: Duration = Duration::from_secs(60);

/// A running `hivegate serve`, killed however the test ends.
struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
    out: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// `serve --database-url URL` with its state directory `state` in `dir`, once it says
    /// where it listens and which store it uses.
    async fn start(dir: &Path, name: &str, url: &str) -> Serve {
        let out = dir.join(format!("{name}.out"));
        let log = dir.join(format!("{name}.log"));
        let child = common::hivegate_in(dir)
            .env("HOME", dir)
            .env("HIVEGATE_STATE_DIR", dir.join(name))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .args(["serve", "--bind", "127.0.0.1:0", "--token", TOKEN, "--database-url", url])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut serve = Serve { child, addr: ([127, 0, 0, 1], 0).into(), out, log };
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(&serve.out).unwrap_or_default();
            if text.contains("store: ") {
                let addr = text.split_whitespace().find_map(|w| w.strip_prefix("http://")).unwrap();
                serve.addr = addr.parse().unwrap();
                return serve;
            }
            let exited = serve.child.try_wait().unwrap();
            assert!(exited.is_none(), "serve exited {exited:?}: {}", serve.output());
            assert!(Instant::now() < deadline, "serve did not start: {}", serve.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read(&self.out), read(&self.log))
    }

    /// SIGTERM, and the exit status once it is gone.
    async fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM: {}", self.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (status.code(), self.output())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hivegate agent --agent brain --message M --json` against `serve`, bounded.
async fn run_brain(dir: &Path, serve: &Serve, message: &str) -> Value {
    let url = format!("ws://{}", serve.addr);
    let mut command = common::hivegate_in(dir);
    command.env("HOME", dir).args(["agent", "--agent", "brain", "--message", message, "--json"]);
    command.args(["--url", &url, "--token", TOKEN]).stdin(Stdio::null());
    let output = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("hivegate agent did not finish")
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{}", serve.output());
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("no JSON from agent ({e}): {stderr}"))
}

/// The session keys `sessions.list` shows.
async fn listed_sessions(serve: &Serve) -> Vec<String> {
    let listed = cli_call(serve.addr, &["operator.read"], "sessions.list", json!({})).await.unwrap();
    let sessions = listed["sessions"].as_array().unwrap_or_else(|| panic!("{listed}"));
    sessions.iter().filter_map(|s| s["key"].as_str().map(str::to_string)).collect()
}

#[actix_rt::test]
async fn serve_keeps_pairing_and_sessions_in_postgres_and_finds_them_after_a_restart() {
    let Some(db) = TestDatabase::create("serve_keeps_pairing_and_sessions_in_postgres") else { return };
    let url = db.url.replacen("://hivegate@", &format!("://hivegate:{PASSWORD}@"), 1);
    assert!(url.contains(PASSWORD), "the test server's URL names the user hivegate: {}", db.url);
    let dir = tempfile::tempdir().unwrap();

    let first = Serve::start(dir.path(), "state-1", &url).await;
    let shown = hivegate::store::redact(&url);
    assert!(first.output().contains(&format!("store: Postgres at {shown}")), "{}", first.output());
    let device = Identity::generate();
    pair_operator(first.addr, &device, &["operator.read"]).await;
    let answer = run_brain(dir.path(), &first, "count the files").await;
    assert_eq!(answer["status"], "ok", "{answer}");

    // In Postgres, as written: the pairing book, the sessions, the brain's transcript.
    let (pairing, stored, messages) = db.with_client(|pg| {
        let pairing: String = pg.query_one("SELECT json FROM snapshots WHERE name = 'pairing'", &[]).unwrap().get(0);
        let rows = pg.query("SELECT key, status FROM sessions ORDER BY pos", &[]).unwrap();
        let stored: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let sql = "SELECT COUNT(*) FROM messages WHERE session_key = 'agent:brain:main'";
        let messages: i64 = pg.query_one(sql, &[]).unwrap().get(0);
        (pairing, stored, messages)
    });
    assert!(pairing.contains(&device.device_id), "{pairing}");
    assert_eq!(stored.first(), Some(&("agent:brain:main".to_string(), "idle".to_string())), "{stored:?}");
    assert!(messages >= 2, "the brain's transcript has {messages} messages");
    let before = listed_sessions(&first).await;
    assert!(before.contains(&"agent:brain:main".to_string()), "{before:?}");

    let (code, output) = first.stop().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(!output.contains(PASSWORD), "the password was shown:\n{output}");

    // Another state directory: what the second gateway knows comes from Postgres.
    let second = Serve::start(dir.path(), "state-2", &url).await;
    assert_paired(second.addr, &device).await;
    let after = listed_sessions(&second).await;
    assert_eq!(after, before);
    let (code, output) = second.stop().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(!output.contains(PASSWORD), "the password was shown:\n{output}");
}
