//! No secret in any log, at the most verbose level: the real binary serves, pairs a
//! node, rotates its token and calls a provider with `RUST_LOG=trace`, and nothing it
//! (or the operator CLI) prints contains the gateway token, a device token or the API
//! key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wsclient::{ConnectOptions, Identity, WsClient};
use common::{FakeModels, Reply, WAIT};

const GATEWAY_TOKEN: &str = "gw-token-6f1d0c2e9b8a7f3e5d4c";
const API_KEY: &str = "sk-test-key-4b7e9a1c3d5f7b9e";

fn hivegate(dir: &Path, log: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hivegate"));
    let out = std::fs::File::create(dir.join(format!("{log}.out"))).unwrap();
    let err = std::fs::File::create(dir.join(format!("{log}.err"))).unwrap();
    command
        .current_dir(dir)
        .env_remove("HIVEGATE_CONFIG")
        .env("RUST_LOG", "trace")
        .env("HIVEGATE_GATEWAY_TOKEN", GATEWAY_TOKEN)
        .env("HIVEGATE_STATE_DIR", dir.join("state"))
        .env("FAKE_KEY", API_KEY)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    command
}

/// `hivegate serve` on an ephemeral port; its address from its banner. The caller kills
/// and waits for the child.
#[allow(clippy::zombie_processes)]
async fn serve(dir: &Path) -> (Child, SocketAddr) {
    let child = hivegate(dir, "serve").args(["serve", "--bind", "127.0.0.1:0"]).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::fs::read_to_string(dir.join("serve.out")).unwrap_or_default();
        if let Some(url) = out.split_whitespace().find(|w| w.starts_with("http://")) {
            return (child, url.trim_start_matches("http://").parse().unwrap());
        }
        if tokio::time::Instant::now() >= deadline {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cli(dir: &Path, log: &str, addr: SocketAddr, args: &[&str]) {
    let url = format!("ws://{addr}/");
    let mut command = hivegate(dir, log);
    command.args(args).args(["--url", &url, "--token", GATEWAY_TOKEN]);
    let status = tokio::task::spawn_blocking(move || command.status()).await.unwrap().unwrap();
    assert!(status.success(), "hivegate {args:?} failed; see {log}.err");
}

#[actix_rt::test]
async fn pairing_rotation_and_provider_calls_log_no_secret_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = serve(dir.path()).await;

    // Pair a node, as the node host does, and approve it with the CLI.
    let device = Identity::generate();
    let options = ConnectOptions::node(&device, GATEWAY_TOKEN);
    let mut first = WsClient::open(addr, &[]).await.unwrap();
    let request_id = first.connect(&options).await.unwrap_err()["details"]["requestId"].as_str().unwrap().to_string();
    cli(dir.path(), "approve", addr, &["devices", "approve", &request_id]).await;
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let hello = node.connect(&options).await.unwrap();
    let device_token = hello["auth"]["deviceToken"].as_str().unwrap().to_string();
    node.close().await;

    // Rotate its token; the node picks up the new one on its next connect.
    cli(dir.path(), "rotate", addr, &["devices", "rotate", "--device", &device.device_id, "--role", "node"]).await;
    let mut node = WsClient::open(addr, &[]).await.unwrap();
    let hello = node.connect(&options).await.unwrap();
    let rotated = hello["auth"]["deviceToken"].as_str().unwrap().to_string();
    assert_ne!(rotated, device_token);
    node.close().await;
    cli(dir.path(), "list", addr, &["devices", "list", "--json"]).await;

    // Provider calls with an API key, through `hivegate run`.
    let fake = FakeModels::start(|_| Reply::Text("done".into()));
    let config = format!(
        "[providers.fake]\nbase_url = \"{}\"\napi_key_env = \"FAKE_KEY\"\n[gateway]\nagents_dir = \"agents\"\n",
        fake.url
    );
    std::fs::write(dir.path().join("hivegate.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/solo.toml"), "id = \"solo\"\nmodel = \"fake/solo\"\n").unwrap();
    let mut run = hivegate(dir.path(), "run");
    run.args(["run", "--agent", "solo", "say done"]);
    let status = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || run.status())).await.unwrap();
    assert!(status.unwrap().unwrap().success(), "hivegate run failed; see run.err");
    assert_eq!(fake.requests_for("solo").len(), 1, "the provider was called");
    fake.stop().await;

    server.kill().unwrap();
    server.wait().unwrap();
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "out" || e == "err") {
            logs.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    assert!(logs.contains("TRACE") && logs.contains("DEBUG"), "the logs are at the most verbose level");
    for (name, secret) in [
        ("gateway token", GATEWAY_TOKEN),
        ("API key", API_KEY),
        ("device token", &device_token),
        ("rotated token", &rotated),
    ] {
        assert!(!logs.contains(secret), "the {name} appears in the logs");
    }
}

/// A process of hivegate's own user, which is what `exec`'s shells and stdio MCP
/// servers are, cannot read the gateway's environment, where the token and the provider
/// keys sit. The real binary serves, and `cat /proc/<pid>/environ` as the same user is
/// refused while `/proc/<pid>/status` is not. Run as root, both run as `nobody`, since
/// root reads any process's files.
#[test]
fn the_gateways_environment_is_unreadable_to_a_process_of_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // SAFETY: geteuid reads the process's user id; it cannot fail or touch memory.
    let root = unsafe { libc::geteuid() } == 0;
    let as_user = |program: &str| {
        let mut command = Command::new(if root { "setpriv" } else { program });
        if root {
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
        }
        command
    };
    let out = std::fs::File::create(dir.path().join("serve.out")).unwrap();
    let err = std::fs::File::create(dir.path().join("serve.err")).unwrap();
    let mut server = as_user(env!("CARGO_BIN_EXE_hivegate"))
        .current_dir(dir.path())
        .env_remove("HIVEGATE_CONFIG")
        .env("HIVEGATE_GATEWAY_TOKEN", GATEWAY_TOKEN)
        .env("FAKE_KEY", API_KEY)
        .env("HIVEGATE_STATE_DIR", dir.path().join("state"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.path().join("serve.out")).unwrap_or_default().contains("http://") {
        if std::time::Instant::now() >= deadline || server.try_wait().unwrap().is_some() {
            let _ = server.kill();
            let _ = server.wait();
            panic!("serve did not start: {}", std::fs::read_to_string(dir.path().join("serve.err")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = server.id();
    let read = |file: &str| as_user("cat").arg(format!("/proc/{pid}/{file}")).output().unwrap();
    let (status, environ) = (read("status"), read("environ"));
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(status.status.success(), "the same user sees the process: {}", String::from_utf8_lossy(&status.stderr));
    let shown = String::from_utf8_lossy(&environ.stdout);
    assert!(!environ.status.success(), "its environment was readable ({} bytes)", shown.len());
    assert!(!shown.contains(GATEWAY_TOKEN) && !shown.contains(API_KEY), "a secret was read");
}
