//! MCP servers no one here wrote, over stdio, through the real runtime:
//! `@modelcontextprotocol/server-filesystem` (npm) and `mcp-server-time` (PyPI),
//! installed by `scripts/mcp-test-servers` (which `.ci/run` runs first). A scripted fake
//! model calls their tools by the names the gateway offers (`server__tool`); the tests
//! check what the model was offered, what came back, that an agent gets only the tools
//! its definition allows, and that a server that crashed is started again.
//!
//! Without the servers installed these tests say so and skip, unless
//! `HIVEGATE_REQUIRE_MCP=1` (CI), where a missing server fails them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{call, tool_results, FakeModels, Reply};
use hivegate::config::{Config, Limits};
use hivegate::gateway::{Outcome, StartMain};
use hivegate::model::openai::CompletionRequest;
use hivegate::model::{Api, Provider};
use hivegate::runtime::Runtime;
use hivegate::tools::mcp::{ServerConfig, Transport};
use serde_json::{json, Value};

/// The installed servers' executables: (filesystem, time).
fn servers() -> Option<(PathBuf, PathBuf)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mcp-test-servers");
    let required = std::env::var("HIVEGATE_REQUIRE_MCP").is_ok_and(|v| v == "1");
    let output = std::process::Command::new(&script).arg("--print").output();
    let found = output.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let path = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).map(PathBuf::from);
        Some((path("filesystem=")?, path("time=")?))
    });
    match found {
        Some(paths) => Some(paths),
        None if required => panic!("MCP test servers are not installed: run scripts/mcp-test-servers"),
        None => {
            eprintln!("SKIPPED: MCP test servers not installed (run scripts/mcp-test-servers)");
            None
        }
    }
}

/// How long a run that uses MCP servers may take at most.
const MCP_WAIT: Duration = Duration::from_secs(90);

fn stdio(name: &str, command: &Path, args: &[&str]) -> ServerConfig {
    ServerConfig {
        name: name.into(),
        transport: Transport::Stdio {
            command: command.display().to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
        },
        call_timeout: Duration::from_secs(30),
    }
}

async fn gateway(fake: &FakeModels, mcp: Vec<ServerConfig>, agent_files: &[&str]) -> Runtime {
    let mut config = Config {
        bind: ([127, 0, 0, 1], 0).into(),
        limits: Limits::default(),
        state_dir: PathBuf::new(),
        mcp_servers: mcp,
        ..Config::default()
    };
    config.providers.insert("fake", Provider::new(Api::OpenAiCompletions, fake.url.clone(), Some("test-key".into())));
    Runtime::start(&config, common::agents(agent_files)).await.unwrap()
}

/// One call of `tool` with `args` in this run (a main session keeps its earlier runs'
/// messages: only those after the run's task count), then an answer quoting its result.
fn call_once(request: &CompletionRequest, tool: &str, args: Value) -> Reply {
    let task = request.messages.iter().rposition(|m| m.role == "user").unwrap_or(0);
    let this_run = CompletionRequest { messages: request.messages[task..].to_vec(), ..request.clone() };
    match tool_results(&this_run).last() {
        None => Reply::Calls(vec![call(&format!("c{}", request.messages.len()), tool, args)]),
        Some((_, result)) => Reply::Text(result.to_string()),
    }
}

fn offered<'a>(request: &'a CompletionRequest, name: &str) -> Option<&'a Value> {
    request.tools.iter().find(|t| t.function.name == name).map(|t| &t.function.parameters)
}

async fn answer(runtime: &Runtime, agent: &str) -> (Outcome, Value) {
    // A server's first start (Node or Python importing its SDK) can take many seconds
    // on a loaded machine; the calls themselves are bounded by `call_timeout`.
    let summary = common::run_to_end_within(runtime, StartMain::new(agent, "go"), MCP_WAIT).await;
    let text = summary.text.clone();
    (summary.outcome, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[actix_rt::test]
async fn an_executor_reads_a_file_through_the_filesystem_server_with_its_own_schema() {
    let Some((filesystem, _)) = servers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("notes.txt"), "first line\nsecond line\n").unwrap();
    let path = root.join("notes.txt").display().to_string();
    let fake = FakeModels::start(move |r| call_once(r, "fs__read_text_file", json!({"path": path})));
    let agent = "id = \"reader\"\nmodel = \"fake/reader\"\n[tools]\nallow = [\"mcp:fs\"]\n";
    let runtime = gateway(&fake, vec![stdio("fs", &filesystem, &[&root.display().to_string()])], &[agent]).await;
    let (outcome, result) = answer(&runtime, "reader").await;
    assert_eq!(outcome, Outcome::Ok, "{result}");
    assert_eq!(
        (result["status"].as_str(), result["content"].as_str()),
        (Some("ok"), Some("first line\nsecond line\n"))
    );
    // The model was offered the server's tools under the server's name, with its schema.
    let first = &fake.requests_for("reader")[0];
    let schema = offered(first, "fs__read_text_file").expect("fs__read_text_file was not offered");
    assert_eq!(schema["properties"]["path"]["type"], "string");
    assert_eq!(schema["required"], json!(["path"]));
    assert!(offered(first, "fs__write_file").is_some(), "mcp:fs offers all of the server's tools");
    fake.stop().await;
}

#[actix_rt::test]
async fn an_agent_gets_only_the_server_tools_it_names() {
    let Some((filesystem, time)) = servers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let target = root.join("made.txt");
    let args = json!({"path": target.display().to_string(), "content": "x"});
    let fake = FakeModels::start(move |r| call_once(r, "fs__write_file", args.clone()));
    let agent = "id = \"clock\"\nmodel = \"fake/clock\"\n[tools]\nallow = [\"time__get_current_time\"]\n";
    let servers = vec![stdio("fs", &filesystem, &[&root.display().to_string()]), stdio("time", &time, &[])];
    let runtime = gateway(&fake, servers, &[agent]).await;
    let (_, result) = answer(&runtime, "clock").await;
    assert_eq!(result["status"], "error");
    assert!(result["error"].as_str().unwrap().starts_with("tool fs__write_file is not available to agent 'clock'"));
    assert!(!target.exists(), "a tool the agent was not allowed ran");
    let offered_names: Vec<String> =
        fake.requests_for("clock")[0].tools.iter().map(|t| t.function.name.clone()).collect();
    assert_eq!(offered_names, vec!["time__get_current_time".to_string()]);
    fake.stop().await;
}

/// The crash test's server's local time zone, to find its process by.
const MARK: &str = "Pacific/Kiritimati";

#[actix_rt::test]
async fn the_time_server_answers_and_a_crashed_server_is_started_again() {
    let Some((_, time)) = servers() else { return };
    let fake = FakeModels::start(|r| call_once(r, "time__get_current_time", json!({"timezone": "UTC"})));
    let agent = "id = \"clock\"\nmodel = \"fake/clock\"\n[tools]\nallow = [\"mcp:time\"]\n";
    // A time zone no other test gives marks this test's server among the processes
    // (the other tests of this file run at the same time, with servers of their own).
    let runtime = gateway(&fake, vec![stdio("time", &time, &["--local-timezone", MARK])], &[agent]).await;
    let (outcome, result) = answer(&runtime, "clock").await;
    assert_eq!(outcome, Outcome::Ok);
    let now: Value = serde_json::from_str(result["content"].as_str().unwrap()).unwrap();
    assert_eq!(now["timezone"], "UTC", "{now}");

    // Kill the server (it is this process's child); the next use starts it again. A
    // call already on its way to the dead server may fail, saying so; at most one.
    let killed = kill_children_named(MARK);
    assert_eq!(killed, 1, "exactly one time server was running, found {killed}");
    let mut failures = Vec::new();
    for _ in 0..3 {
        let (_, result) = answer(&runtime, "clock").await;
        if result["status"] == "ok" {
            break;
        }
        failures.push(result["error"].to_string());
    }
    assert!(failures.len() <= 1, "{failures:?}");
    assert!(failures.iter().all(|f| f.contains("started again at its next use")), "{failures:?}");
    let (_, result) = answer(&runtime, "clock").await;
    assert_eq!(result["status"], "ok", "the server was not started again: {result}");
    assert_eq!(kill_children_named(MARK), 1, "the restarted server is running");
    fake.stop().await;
}

/// SIGKILL this process's children whose command line mentions `name`; how many.
fn kill_children_named(name: &str) -> usize {
    let me = std::process::id().to_string();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 4 of /proc/PID/stat (after the parenthesised command) is the parent.
        let parent = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1));
        let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
        if parent == Some(me.as_str()) && cmdline.contains(name) && !stat.contains(") Z ") {
            std::process::Command::new("kill").args(["-9", &pid]).status().unwrap();
            killed += 1;
        }
    }
    killed
}

/// The whole case, through the binary and a `hivegate.toml`: a brain spawns two
/// executors; one reads a workspace file with `read`, the other reads the same file
/// through the filesystem MCP server the config declares; a read outside the workspace
/// is refused; nothing from outside reaches the model.
#[actix_rt::test]
async fn hivegate_run_reads_one_file_by_read_and_by_the_configured_mcp_server() {
    let Some((filesystem, _)) = servers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let (ws, outside) = (base.join("ws"), base.join("outside"));
    std::fs::create_dir_all(ws.join("agents")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(ws.join("notes.txt"), "alpha line\nbeta line\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "OUTSIDE-MARKER-93f1\n").unwrap();
    let notes = ws.join("notes.txt").display().to_string();
    let fake = FakeModels::start(move |r| {
        let task = r.messages.iter().find(|m| m.role == "user").and_then(|m| m.content.clone()).unwrap_or_default();
        let results = tool_results(r);
        match r.model.as_str() {
            "boss" if results.is_empty() => Reply::Calls(vec![
                call("s1", "sessions_spawn", json!({"task": "by read", "agentId": "worker"})),
                call("s2", "sessions_spawn", json!({"task": "by mcp", "agentId": "worker"})),
            ]),
            "boss" if common::announcements(r).len() < 2 => {
                Reply::Calls(vec![call(&format!("y{}", r.messages.len()), "sessions_yield", json!({}))])
            }
            "boss" => Reply::Text(common::announcements(r).join("\n---\n")),
            _ if task.starts_with("by read") => match results.len() {
                0 => Reply::Calls(vec![
                    call("r1", "read", json!({"path": "notes.txt"})),
                    call("r2", "read", json!({"path": "../outside/secret.txt"})),
                ]),
                _ => Reply::Text(results.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>().join("\n")),
            },
            _ => match results.len() {
                0 => Reply::Calls(vec![call("m1", "fs__read_text_file", json!({"path": notes}))]),
                _ => Reply::Text(results[0].1.to_string()),
            },
        }
    });
    let config = format!(
        "[providers.fake]\nbase_url = \"{}\"\napi_key_env = \"FAKE_KEY\"\n\
         [mcp_servers.fs]\ncommand = \"{}\"\nargs = [\"{}\"]\n",
        fake.url,
        filesystem.display(),
        ws.display()
    );
    std::fs::write(ws.join("hivegate.toml"), config).unwrap();
    std::fs::write(
        ws.join("agents/boss.toml"),
        "model = \"fake/boss\"\n[tools]\nallow = [\"sessions_spawn\", \"sessions_yield\"]\ndelegate = [\"read\", \"mcp:fs\"]\n[subagents]\nallow_agents = [\"worker\"]\n",
    )
    .unwrap();
    std::fs::write(ws.join("agents/worker.toml"), "model = \"fake/worker\"\n[tools]\nallow = [\"read\", \"mcp:fs\"]\n")
        .unwrap();
    let report =
        common::run_binary_json_within(&ws, &[("FAKE_KEY", "sk-fake")], &["--agent", "boss", "go"], MCP_WAIT).await;
    assert_eq!(report["outcomes"]["ok"], 3, "{report}");
    let answer = report["finalAnswer"].as_str().unwrap();
    // By read: the numbered lines; by the MCP server: the text itself.
    assert!(answer.contains("1\\talpha line\\n") && answer.contains("2\\tbeta line"), "{answer}");
    assert!(answer.contains("alpha line\\nbeta line\\n\",\"status\":\"ok\""), "{answer}");
    assert!(answer.contains("path '../outside/secret.txt' is outside the workspace"), "{answer}");
    let every_request =
        fake.requests.lock().unwrap().iter().map(|r| serde_json::to_string(r).unwrap()).collect::<String>();
    assert!(!every_request.contains("OUTSIDE-MARKER-93f1"), "something from outside the workspace reached the model");
    assert!(every_request.contains("fs__read_text_file"));
    fake.stop().await;
}
