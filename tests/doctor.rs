//! `hivegate doctor` as a user runs it: a good setup is all ok (exit 0); a provider
//! whose key variable is unset and whose base URL is a closed loopback port, an MCP
//! server that cannot start and a port held by something else each fail, named, with a
//! fix (exit 1); a port held by a running hivegate is fine; a bad config file is exit 2.
//! The provider is a loopback HTTP listener in the test answering 404 to anything (any
//! answer counts as reachable). Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const KEY_ENV: &str = "HIVEGATE_DOCTOR_TEST_KEY";
const SECRET: &str = "doctor-test-secret-value";

/// A loopback HTTP server answering 404 to every request; its base URL.
fn http_404() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read(&mut [0u8; 4096]);
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    url
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The installed `mcp-server-time`, if `scripts/mcp-test-servers` installed it.
fn time_server() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mcp-test-servers");
    let output = Command::new(script).arg("--print").output().ok().filter(|o| o.status.success());
    let found = output.and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix("time=").map(PathBuf::from))
    });
    if found.is_none() {
        if std::env::var("HIVEGATE_REQUIRE_MCP").is_ok_and(|v| v == "1") {
            panic!("MCP test servers are not installed: run scripts/mcp-test-servers");
        }
        eprintln!("mcp-server-time not installed: the good setup is checked without an MCP server");
    }
    found
}

/// A directory with `config` as hivegate.toml and agent `solo` on `model`.
fn setup(config: &str, model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hivegate.toml"), config).unwrap();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    std::fs::write(dir.path().join("agents/solo.toml"), format!("id = \"solo\"\nmodel = \"{model}\"\n")).unwrap();
    dir
}

fn hivegate(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hivegate"));
    command
        .current_dir(dir)
        .env("HOME", dir)
        .env("HIVEGATE_GATEWAY_TOKEN", "doctor-test-token")
        .env(KEY_ENV, SECRET)
        .env_remove("HIVEGATE_CONFIG")
        .env_remove("HIVEGATE_STATE_DIR")
        .stdin(Stdio::null());
    command
}

/// `hivegate doctor <args>` in `dir`, bounded.
fn doctor(dir: &Path, args: &[&str]) -> Output {
    let mut child =
        hivegate(dir).arg("doctor").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "doctor did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The checks of `doctor --json`, by name: (status, detail).
fn checks(output: &Output) -> Vec<(String, String, String)> {
    let report: Value = serde_json::from_slice(&output.stdout).expect("doctor --json prints one JSON object");
    assert_eq!(report["exitCode"].as_i64(), output.status.code().map(i64::from), "{report}");
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (text("name"), text("status"), text("detail"))
        })
        .collect()
}

#[test]
fn a_good_setup_is_all_ok() {
    let port = closed_port();
    let mcp =
        time_server().map(|path| format!("[mcp_servers.time]\ncommand = \"{}\"\n", path.display())).unwrap_or_default();
    let config = format!(
        "[gateway]\nbind = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n\
         [providers.local]\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\n{mcp}",
        http_404()
    );
    let dir = setup(&config, "local/some-model");
    let output = doctor(dir.path(), &["--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let checks = checks(&output);
    let mut names: Vec<&str> = checks.iter().map(|(name, _, _)| name.as_str()).collect();
    names.sort_unstable();
    let mut expected = vec![
        "agents",
        "config",
        "gateway token",
        "port",
        "provider builtin",
        "provider local key",
        "provider local reachable",
        "state directory",
    ];
    if !mcp.is_empty() {
        expected.push("mcp time");
        expected.sort_unstable();
    }
    assert_eq!(names, expected);
    assert!(checks.iter().all(|(_, status, _)| status == "ok"), "{stdout}");
    let detail = |name: &str| checks.iter().find(|c| c.0 == name).unwrap().2.clone();
    assert_eq!(detail("provider local key"), format!("{KEY_ENV} is set"));
    assert!(detail("provider local reachable").ends_with("answered (HTTP 404)"), "{stdout}");
    assert_eq!(detail("port"), format!("127.0.0.1:{port} is free"));
    assert!(!stdout.contains(SECRET), "the key's value is never printed");
    // The same, for people: one line per check, then the counts.
    let plain = doctor(dir.path(), &[]);
    let text = String::from_utf8_lossy(&plain.stdout).to_string();
    assert_eq!(plain.status.code(), Some(0), "{text}");
    assert!(text.lines().take_while(|l| !l.is_empty()).all(|l| l.starts_with("ok  ")), "{text}");
    assert!(text.ends_with(&format!("{} ok, 0 warnings, 0 failed\n", expected.len())), "{text}");
    assert!(!text.contains(SECRET));
}

#[test]
fn an_unset_key_an_unreachable_provider_a_broken_mcp_server_and_a_taken_port_fail_by_name() {
    let dead = closed_port();
    // Something that is not a hivegate holds the gateway's port (it never answers).
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let config = format!(
        "[gateway]\nbind = \"127.0.0.1:{taken}\"\nstate_dir = \"state\"\n\
         [providers.cherry]\nbase_url = \"http://127.0.0.1:{dead}/v1\"\napi_key_env = \"HIVEGATE_DOCTOR_UNSET_KEY\"\n\
         [mcp_servers.broken]\ncommand = \"/nonexistent/mcp-server\"\n"
    );
    let dir = setup(&config, "cherry/qwen3");
    let plain = hivegate(dir.path())
        .env_remove("HIVEGATE_DOCTOR_UNSET_KEY")
        .args(["doctor", "--timeout", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plain.stdout).to_string();
    assert_eq!(plain.status.code(), Some(1), "{text}");
    for expected in [
        "fail  provider cherry key        HIVEGATE_DOCTOR_UNSET_KEY is not set (or is empty)",
        "fix: export HIVEGATE_DOCTOR_UNSET_KEY=<the API key for cherry> before starting hivegate",
        &format!("fail  provider cherry reachable  cannot reach http://127.0.0.1:{dead}/v1: Connection refused"),
        "fix: check providers.cherry.base_url",
        "fail  mcp broken                 cannot run /nonexistent/mcp-server",
        &format!("fail  port                       127.0.0.1:{taken} is in use by something else"),
        "ok    config ",
        "ok    agents ",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(text.ends_with("4 failed\n"), "{text}");
    let json = hivegate(dir.path())
        .env_remove("HIVEGATE_DOCTOR_UNSET_KEY")
        .args(["doctor", "--json", "--timeout", "2"])
        .output()
        .unwrap();
    let failed: Vec<String> =
        checks(&json).into_iter().filter(|(_, status, _)| status == "fail").map(|(name, _, _)| name).collect();
    assert_eq!(failed, ["provider cherry key", "provider cherry reachable", "port", "mcp broken"]);
    drop(squatter);
}

#[test]
fn a_port_held_by_a_running_hivegate_is_fine() {
    let port = closed_port();
    let config = format!("[gateway]\nbind = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\n");
    let dir = setup(&config, "builtin/executor");
    let out = dir.path().join("serve.out");
    let mut serve = hivegate(dir.path())
        .arg("serve")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("listening on") {
        assert!(serve.try_wait().unwrap().is_none() && Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = doctor(dir.path(), &["--json"]);
    let _ = serve.kill();
    let _ = serve.wait();
    let checks = checks(&output);
    let port_check = checks.iter().find(|c| c.0 == "port").unwrap();
    assert_eq!(port_check.1, "ok");
    assert!(port_check.2.starts_with(&format!("127.0.0.1:{port} is held by a running hivegate ")), "{port_check:?}");
    assert_eq!(output.status.code(), Some(0), "{checks:?}");
}

#[test]
fn a_bad_config_file_is_bad_input() {
    let dir = setup("[gateway]\nbnid = \"127.0.0.1:1\"\n", "builtin/executor");
    let output = doctor(dir.path(), &[]);
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.starts_with("fail  config  invalid config file hivegate.toml"), "{text}");
    assert!(text.contains("unknown field `bnid`"), "{text}");
    let json = doctor(dir.path(), &["--json"]);
    assert_eq!(json.status.code(), Some(2));
    assert_eq!(checks(&json)[0].1, "fail");
    let help = hivegate(dir.path()).args(["doctor", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(help.contains("Exit status: 0 when every check is ok"), "{help}");
    assert!(help.contains("--json"), "{help}");
}
