//! End-to-end tests of the runtime core: a real gateway, real session actors, model calls

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! over HTTP to a scripted fake provider that records what it was sent.

mod common;

use std::time::Instant;

use common::{agent_toml, announcements, call, gateway, has_tool_call, tool_results, FakeModels, Reply, WAIT};
use hivegate::config::Limits;
use hivegate::gateway::{
    GatewayError, GetHistory, Kill, Outcome, RunSummary, Spawn, SpawnReply, SpawnRequest, StartMain, WaitRun,
};
use hivegate::keys::{RunId, SessionKey};
use hivegate::runtime::Runtime;
use serde_json::{json, Value};

fn start(agent: &str) -> StartMain {
    StartMain::new(agent, "go")
}

async fn wait_run(runtime: &Runtime, run_id: RunId) -> RunSummary {
    let receiver = runtime.gateway.send(WaitRun { run_id }).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, receiver).await.expect("run did not end in time").unwrap()
}

fn spawn(parent: &hivegate::capability::Capability, agent: &str) -> Spawn {
    Spawn {
        parent: parent.clone(),
        request: SpawnRequest { task: "work".into(), agent_id: Some(agent.into()), ..SpawnRequest::default() },
        sent_at: Instant::now(),
        history: None,
        call_id: None,
        trace: None,
    }
}

fn capability_of(runtime: &Runtime, key: &SessionKey) -> hivegate::capability::Capability {
    runtime.registry.get(key).unwrap().capability.clone()
}

/// A parent that spawns one child per entry of `children` (agent, extra args), then
/// yields until every accepted child has reported, then echoes what it saw.
fn planner(
    children: Vec<(&'static str, Value)>,
) -> impl Fn(&hivegate::model::openai::CompletionRequest) -> Option<Reply> {
    move |request| {
        if !has_tool_call(request, "sessions_spawn") {
            let calls = children
                .iter()
                .enumerate()
                .map(|(i, (agent, extra))| {
                    let mut args = json!({"task": format!("task {i}"), "agentId": agent, "label": format!("c{i}")});
                    args.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
                    call(&format!("spawn{i}"), "sessions_spawn", args)
                })
                .collect();
            return Some(Reply::Calls(calls));
        }
        let accepted = tool_results(request).iter().filter(|(_, v)| v["status"] == "accepted").count();
        let seen = announcements(request);
        if seen.len() < accepted {
            return Some(Reply::Calls(vec![call(
                &format!("yield{}", request.messages.len()),
                "sessions_yield",
                json!({}),
            )]));
        }
        Some(Reply::Text(format!("saw: {}", seen.join(" | "))))
    }
}

#[actix_rt::test]
async fn killing_a_root_kills_every_descendant_and_aborts_their_model_calls() {
    let root_plan = planner(vec![("mid", json!({}))]);
    let mid_plan = planner(vec![("leaf", json!({})), ("leaf", json!({}))]);
    let mut fake = FakeModels::start(move |r| match r.model.as_str() {
        "root" => root_plan(r).unwrap(),
        "mid" => mid_plan(r).unwrap(),
        _ => Reply::Hang,
    });
    let agents =
        [agent_toml("root", "root", &["mid"]), agent_toml("mid", "mid", &["leaf"]), agent_toml("leaf", "leaf", &[])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    fake.wait_for_request("leaf").await;
    fake.wait_for_request("leaf").await;
    assert_eq!(runtime.registry.running(), 4);
    // Both leaves hang mid-call (the parents' own calls may be in flight too).
    assert!(runtime.model_calls_in_flight.load(std::sync::atomic::Ordering::Acquire) >= 2);

    let killed = runtime.gateway.send(Kill { caller: None, target: run.session_key.clone() }).await.unwrap().unwrap();
    assert_eq!(killed, 4);
    assert_eq!(wait_run(&runtime, run.run_id).await.outcome, Outcome::Killed);
    assert!(runtime.stats.wait_all_stopped(WAIT).await, "session actors still alive");
    // The leaves' HTTP requests were dropped with their actors, not left running.
    assert_eq!(common::calls_in_flight_settled(&runtime).await, 0);
    let sessions = runtime.registry.list();
    assert_eq!(sessions.len(), 4);
    for session in &sessions {
        assert_eq!((session.status, session.outcome), ("ended", Some(Outcome::Killed)), "{}", session.session_key);
    }
    assert_eq!(runtime.registry.running(), 0);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn a_child_whose_model_never_answers_times_out_and_the_parent_is_told() {
    let root_plan = planner(vec![("leaf", json!({"runTimeoutSeconds": 0.3}))]);
    let fake = FakeModels::start(move |r| if r.model == "root" { root_plan(r).unwrap() } else { Reply::Hang });
    let agents = [agent_toml("root", "root", &["leaf"]), agent_toml("leaf", "leaf", &[])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let summary = wait_run(&runtime, run.run_id).await;
    let child = runtime.registry.list().into_iter().find(|s| s.parent.is_some()).unwrap();
    assert_eq!(child.outcome, Some(Outcome::Timeout));
    assert_eq!(summary.outcome, Outcome::Ok);
    let seen = summary.text.strip_prefix("saw: ").unwrap();
    assert!(seen.starts_with("[Internal task completion event]\nsource: subagent\n"), "{seen}");
    for line in [
        format!("session_key: {}", child.session_key),
        "task: c0".into(),
        "status: timed out: timed out after 0.3 s".into(),
    ] {
        assert!(seen.lines().any(|l| l == line), "{line} in {seen}");
    }
    assert!(seen.contains("<prompt-data>\n(no output)\n</prompt-data>\n\nStats: runtime "), "{seen}");
    assert_eq!(common::calls_in_flight_settled(&runtime).await, 0);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn spawns_beyond_the_limits_are_refused_naming_the_limit() {
    let fake = FakeModels::start(|_| Reply::Hang);
    let agents =
        [agent_toml("root", "root", &["leaf"]), agent_toml("leaf", "leaf", &["leaf"]), agent_toml("other", "o", &[])];
    let limits = Limits { max_spawn_depth: 1, max_children_per_session: 2, ..Limits::default() };
    let runtime = gateway(&fake, limits, &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let root = capability_of(&runtime, &run.session_key);

    let mut children = Vec::new();
    for _ in 0..2 {
        match runtime.gateway.send(spawn(&root, "leaf")).await.unwrap() {
            SpawnReply::Accepted { child_session_key, resolved_model, run_id, .. } => {
                assert_eq!(resolved_model.as_str(), "fake/leaf");
                // A child's one run is named by the uuid its key ends with.
                let uuid = child_session_key.as_str().rsplit(':').next().unwrap();
                assert_eq!((run_id.as_str(), uuid.len()), (uuid, 36));
                children.push(child_session_key);
            }
            other => panic!("expected accepted, got {other:?}"),
        }
    }
    let third = runtime.gateway.send(spawn(&root, "leaf")).await.unwrap();
    assert_eq!(
        serde_json::to_value(third).unwrap(),
        json!({"status": "forbidden", "limit": "maxChildrenPerSession", "value": 2,
               "error": "max active children reached (maxChildrenPerSession=2); wait for a child to finish"})
    );
    let child = capability_of(&runtime, &children[0]);
    // A child cannot reach its parent or its sibling: both exist, neither is in its subtree.
    for target in [run.session_key.clone(), children[1].clone()] {
        let history = GetHistory { caller: Some(child.clone()), target: target.clone() };
        assert_eq!(runtime.gateway.send(history).await.unwrap(), Err(GatewayError::NotVisible { target }));
    }
    // A model-supplied timeout too large for a Duration or an Instant is refused, and
    // the gateway keeps serving.
    for seconds in [1e30, 1e19, f64::NAN, -1.0] {
        let mut huge = spawn(&child, "leaf");
        huge.request.run_timeout_seconds = Some(seconds);
        let reply = runtime.gateway.send(huge).await.unwrap();
        assert!(
            matches!(&reply, SpawnReply::Error { error } if error.starts_with("runTimeoutSeconds must be")),
            "{reply:?}"
        );
    }
    let too_deep = runtime.gateway.send(spawn(&child, "leaf")).await.unwrap();
    assert_eq!(
        serde_json::to_value(too_deep).unwrap(),
        json!({"status": "forbidden", "limit": "maxSpawnDepth", "value": 1,
               "error": "max spawn depth reached (maxSpawnDepth=1); a child would be at depth 2"})
    );
    let not_allowed = runtime.gateway.send(spawn(&child, "other")).await.unwrap();
    assert_eq!(
        serde_json::to_value(not_allowed).unwrap(),
        json!({"status": "forbidden", "limit": "allowAgents", "error": "agent 'leaf' may not spawn 'other'; allowed: [leaf]"})
    );
    let unknown = runtime.gateway.send(spawn(&root, "ghost")).await.unwrap();
    assert_eq!(unknown, SpawnReply::Error { error: "unknown agent 'ghost'; defined agents: leaf, other, root".into() });
    // A killed parent's capability can no longer spawn: revocation reaches the holder.
    runtime.gateway.send(Kill { caller: None, target: run.session_key.clone() }).await.unwrap().unwrap();
    let after_kill = runtime.gateway.send(spawn(&root, "leaf")).await.unwrap();
    assert_eq!(after_kill, SpawnReply::forbidden(format!("capability of {} has been revoked", run.session_key)));
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn an_explicit_model_override_reaches_the_provider_or_fails_the_spawn() {
    let root_plan = planner(vec![
        ("leaf", json!({"model": "fake/special/model-v2"})),
        ("leaf", json!({"model": "nosuch/m"})),
        ("leaf", json!({"model": "no-slash"})),
    ]);
    let fake = FakeModels::start(move |r| match r.model.as_str() {
        "root" => root_plan(r).unwrap(),
        _ => Reply::Text("leaf done".into()),
    });
    let agents = [agent_toml("root", "root", &["leaf"]), agent_toml("leaf", "leaf", &[])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let summary = wait_run(&runtime, run.run_id).await;
    assert_eq!(summary.outcome, Outcome::Ok);

    let overridden = fake.requests_for("special/model-v2");
    assert_eq!(overridden.len(), 1, "the override must reach the provider exactly once");
    assert!(fake.requests_for("leaf").is_empty(), "the agent's default model must not be used");
    let child = runtime.registry.list().into_iter().find(|s| s.parent.is_some()).unwrap();
    assert_eq!(child.model.as_str(), "fake/special/model-v2");

    let second_turn = &fake.requests_for("root")[1];
    let results = tool_results(second_turn);
    assert_eq!(
        results[0].1,
        json!({"status": "accepted", "runId": child.run_id, "childSessionKey": child.session_key,
               "resolvedModel": "fake/special/model-v2", "mode": "run", "context": "isolated",
               "expectsCompletionMessage": true})
    );
    assert_eq!(
        results[1].1,
        json!({"status": "error", "error": "model 'nosuch/m' cannot be used: unknown provider 'nosuch' in model 'nosuch/m'; configured providers: builtin, fake"})
    );
    assert_eq!(
        results[2].1,
        json!({"status": "error", "error": "model override cannot be used: bad model ref 'no-slash': expected provider/model, for example builtin/executor"})
    );
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn bad_tool_arguments_become_tool_errors_the_model_can_read() {
    let fake = FakeModels::start(|r| {
        if tool_results(r).is_empty() {
            Reply::Calls(vec![
                call("a", "sessions_spawn", json!({"tsk": "x"})),
                ("b".into(), "sessions_spawn".into(), "{\"task\": ".into()),
                call("c", "rm_rf", json!({})),
                call("d", "sessions_history", json!({"sessionKey": 5})),
                call("e", "sessions_spawn", json!({"task": "   "})),
            ])
        } else {
            Reply::Text("recovered".into())
        }
    });
    let agents = [agent_toml("root", "root", &["root"])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let summary = wait_run(&runtime, run.run_id).await;
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "recovered"));
    let errors: Vec<(String, String)> = tool_results(&fake.requests_for("root")[1])
        .into_iter()
        .map(|(id, v)| (id, v["error"].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        ("a", "tsk is not a sessions_spawn parameter"),
        ("b", "invalid arguments for sessions_spawn: EOF while parsing a value at line 1 column 9"),
        ("c", "unknown tool 'rm_rf'; available: sessions_spawn, sessions_yield, sessions_list, sessions_history, sessions_send, subagents"),
        ("d", "invalid arguments for sessions_history: invalid type: integer `5`, expected a string at line 1 column 15"),
        ("e", "task must be a non-empty string"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(errors, expected);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// The id of the last tool call the model made, which tells a stateless script where
/// the conversation is.
fn last_call_id(request: &hivegate::model::openai::CompletionRequest) -> Option<String> {
    request.messages.iter().rev().find_map(|m| m.tool_calls.as_ref()?.last().map(|c| c.id.clone()))
}

#[actix_rt::test]
async fn session_tools_list_read_steer_wait_and_cancel_within_the_callers_subtree() {
    let fake = FakeModels::start(|r| {
        if r.model != "root" {
            return Reply::Hang;
        }
        match last_call_id(r).as_deref() {
            None => Reply::Calls(vec![call(
                "spawn",
                "sessions_spawn",
                json!({"task": "dig", "agentId": "leaf", "label": "w1"}),
            )]),
            Some("spawn") => {
                let child = tool_results(r)[0].1["childSessionKey"].as_str().unwrap().to_string();
                let task = tool_results(r)[0].1["runId"].clone();
                Reply::Calls(vec![
                    call("list", "sessions_list", json!({})),
                    call("history", "sessions_history", json!({"sessionKey": child})),
                    call("steer", "subagents", json!({"action": "steer", "target": "w1", "message": "focus"})),
                    call("sublist", "subagents", json!({"action": "list"})),
                    call("foreign", "sessions_send", json!({"sessionKey": "agent:other:main", "message": "hi"})),
                    call("wait1", "subagents", json!({"action": "wait", "taskIds": [task, task], "timeoutSeconds": 1})),
                    call("wait0", "subagents", json!({"action": "wait", "taskIds": ["nope"]})),
                ])
            }
            Some("wait0") => Reply::Calls(vec![
                call("cancel", "subagents", json!({"action": "cancel", "taskId": "w1"})),
                call("wait2", "subagents", json!({"action": "wait", "taskIds": ["w1"], "timeoutSeconds": 90})),
                call("kill", "subagents", json!({"action": "kill", "target": "w1"})),
                call("wait", "sessions_yield", json!({})),
            ]),
            _ => Reply::Text(format!("done: {}", announcements(r).join(" | "))),
        }
    });
    let agents = [agent_toml("root", "root", &["leaf"]), agent_toml("leaf", "leaf", &[])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let summary = wait_run(&runtime, run.run_id).await;
    let child = runtime.registry.list().into_iter().find(|s| s.parent.is_some()).unwrap();
    assert_eq!(child.outcome, Some(Outcome::Killed));
    let seen = summary.text.strip_prefix("done: ").unwrap();
    let announced = [
        format!("session_key: {}", child.session_key),
        "task: w1".into(),
        "status: failed: subagent run terminated (killed by agent:root:main)".into(),
    ];
    for line in announced {
        assert!(seen.lines().any(|l| l == line), "{line} in {seen}");
    }

    let requests = fake.requests_for("root");
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[2]).into_iter().collect();
    let listed: Vec<&str> =
        results["list"]["sessions"].as_array().unwrap().iter().map(|s| s["sessionKey"].as_str().unwrap()).collect();
    assert_eq!(listed, vec!["agent:root:main", child.session_key.as_str()]);
    let history = results["history"]["messages"].as_array().unwrap();
    assert_eq!(history.last().unwrap(), &json!({"role": "user", "content": "dig"}));
    assert_eq!(results["steer"], json!({"status": "delivered"}));
    let tasks = results["sublist"]["tasks"].as_array().unwrap();
    assert_eq!(
        (tasks.len(), tasks[0]["label"].as_str(), tasks[0]["status"].as_str(), &tasks[0]["taskId"]),
        (1, Some("w1"), Some("running"), &json!(child.run_id))
    );
    assert_eq!((results["sublist"]["action"].as_str(), &results["sublist"]["active"]), (Some("list"), &json!(1)));
    // The wait expires: the task is still running, said so, and not stopped.
    let wait1 = &results["wait1"];
    assert_eq!((wait1["reason"].as_str(), wait1["tasks"][0]["status"].as_str()), (Some("timeout"), Some("running")));
    assert_eq!(wait1["tasks"].as_array().unwrap().len(), 1, "a repeated id is one task");
    assert!(wait1["notes"][0].as_str().unwrap().starts_with("still running after 1 s"), "{wait1}");
    assert_eq!(
        (results["wait0"]["reason"].as_str(), &results["wait0"]["unavailable"]),
        (Some("unavailable"), &json!(["nope"]))
    );
    assert_eq!(
        results["foreign"],
        json!({"status": "error", "error": "session agent:other:main is outside the caller's tree; a session can only reach its own subtree"})
    );
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[3]).into_iter().collect();
    assert_eq!(
        results["cancel"],
        json!({"status": "cancelled", "taskId": child.run_id, "sessionKey": child.session_key, "found": true, "cancelled": true, "killed": 1})
    );
    let wait2 = &results["wait2"];
    assert_eq!(
        (wait2["reason"].as_str(), wait2["tasks"][0]["status"].as_str()),
        (Some("completed"), Some("cancelled"))
    );
    assert_eq!(wait2["completed"], json!([child.run_id]));
    assert_eq!(wait2["notes"], json!(["timeoutSeconds 90 was capped at 60"]));
    assert_eq!(results["kill"]["reason"], "the task already ended (killed)");
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn ended_sessions_are_retained_up_to_the_limit_and_a_reused_main_starts_clean() {
    let root_plan = planner((0..5).map(|_| ("leaf", json!({}))).collect());
    let fake = FakeModels::start(move |r| match r.model.as_str() {
        "root" => root_plan(r).unwrap(),
        _ => Reply::Text("leaf done".into()),
    });
    let agents = [agent_toml("root", "root", &["leaf"]), agent_toml("leaf", "leaf", &[])];
    let limits = Limits { max_retained_sessions: 3, ..Limits::default() };
    let runtime = gateway(&fake, limits, &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let first = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    assert_eq!(wait_run(&runtime, first.run_id.clone()).await.outcome, Outcome::Ok);
    // Five children ended; three are kept, plus the idle main session.
    assert_eq!(runtime.registry.len(), 4);

    let second = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    assert_eq!(second.session_key, first.session_key, "the idle main session is reused");
    let summary = wait_run(&runtime, second.run_id.clone()).await;
    assert_eq!(summary.outcome, Outcome::Ok);
    let tree = runtime.registry.tree(&second.session_key).unwrap();
    // Its figures are this run's too, not the session's since the first run.
    assert_eq!(tree.tokens, summary.usage.total());
    // The scripted model sees the first run's spawns in the reused transcript and spawns
    // nothing this time; the tree must not show the first run's children either.
    assert_eq!(tree.children.len(), 0, "the tree shows this run's children only");
    assert_eq!(
        runtime.gateway.send(WaitRun { run_id: first.run_id.clone() }).await.unwrap().err(),
        Some(GatewayError::NoSuchRun(first.run_id))
    );
    assert_eq!(runtime.registry.len(), 4);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// A running session cannot be forgotten; aborted, it can, with its subtree.
#[actix_rt::test]
async fn a_session_is_forgotten_only_once_it_is_not_running() {
    use hivegate::gateway::{Abort, ForgetSession};
    let fake = FakeModels::start(|_| Reply::Hang);
    let runtime = gateway(&fake, Limits::default(), &["id = \"slow\"\nmodel = \"fake/slow\"\n"]).await;
    let run = runtime.gateway.send(start("slow")).await.unwrap().unwrap();
    let key = run.session_key.clone();
    let busy = runtime.gateway.send(ForgetSession { target: key.clone() }).await.unwrap();
    assert_eq!(busy, Err(hivegate::gateway::GatewayError::Busy(key.clone())));
    let aborted = runtime.gateway.send(Abort { target: key.clone(), run_id: None }).await.unwrap().unwrap();
    assert_eq!(aborted, Some(run.run_id.clone()));
    assert_eq!(wait_run(&runtime, run.run_id).await.outcome, Outcome::Killed);
    assert_eq!(runtime.gateway.send(ForgetSession { target: key.clone() }).await.unwrap(), Ok(true));
    assert!(runtime.registry.get(&key).is_none());
    assert_eq!(runtime.gateway.send(ForgetSession { target: key }).await.unwrap(), Ok(false));
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

#[actix_rt::test]
async fn a_session_mode_child_forked_from_its_parent_thinks_takes_a_follow_up_and_goes_with_its_parent() {
    let fake = FakeModels::start(|r| {
        if r.model == "leaf" {
            let users = r.messages.iter().filter(|m| m.role == "user").count();
            return Reply::Text(format!("answer {users}"));
        }
        match last_call_id(r).as_deref() {
            None => Reply::Calls(vec![
                call("bad", "sessions_spawn", json!({"task": "x", "mode": "session", "cleanup": "delete"})),
                call(
                    "spawn",
                    "sessions_spawn",
                    json!({"task": "dig", "label": "s1", "mode": "session", "context": "fork", "thinking": "high"}),
                ),
                call("y1", "sessions_yield", json!({})),
            ]),
            Some("y1") => {
                let child = tool_results(r).iter().find(|(id, _)| id == "spawn").unwrap().1["childSessionKey"].clone();
                Reply::Calls(vec![
                    call("more", "sessions_send", json!({"sessionKey": child, "message": "more please"})),
                    call("y2", "sessions_yield", json!({})),
                ])
            }
            _ => Reply::Text(format!("done: {}", announcements(r).join(" | "))),
        }
    });
    let agents = [agent_toml("root", "root", &["leaf"]), agent_toml("leaf", "leaf", &[])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let summary = wait_run(&runtime, run.run_id).await;
    assert_eq!(summary.outcome, Outcome::Ok, "{}", summary.text);

    let requests = fake.requests_for("root");
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[1]).into_iter().collect();
    assert_eq!(results["bad"]["error"], "cleanup \"delete\" is not supported: a mode \"session\" child is kept for follow-ups; it goes when its parent's run ends");
    assert_eq!(
        (results["spawn"]["mode"].as_str(), results["spawn"]["context"].as_str()),
        (Some("session"), Some("fork"))
    );
    let task_id = results["spawn"]["runId"].clone();
    let results_notes = results["spawn"]["notes"].clone();
    // The follow-up resumes the same task, and the parent waits for it again.
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[2]).into_iter().collect();
    assert_eq!(results["more"], json!({"status": "resumed", "runId": task_id}));
    let seen = summary.text.strip_prefix("done: ").unwrap();
    assert_eq!(seen.matches("[Internal task completion event]").count(), 2, "{seen}");
    // Each announce counts its own run's tokens (the follow-up's are not added to the first's).
    let tokens: Vec<&str> = seen.split("Stats: runtime ").skip(1).map(|s| s.split(" • ").nth(1).unwrap()).collect();
    assert_eq!(tokens.len(), 2, "{seen}");
    assert!(tokens[0].starts_with("tokens ") && tokens[0] != "tokens unknown", "{seen}");
    assert_eq!(tokens[0].split(" (").next(), tokens[1].split(" (").next(), "{seen}");
    // Forked: the parent's task before the child's own, which says it is a subagent's.
    let child = fake.requests_for("leaf");
    assert_eq!(child.len(), 2);
    // The spawn's thinking level reaches the provider as its reasoning setting.
    assert_eq!(child[0].reasoning_effort.as_deref(), Some("high"));
    assert_eq!((requests[0].reasoning_effort.as_deref(), results_notes), (None, Value::Null));
    let users: Vec<&str> =
        child[0].messages.iter().filter(|m| m.role == "user").map(|m| m.content.as_deref().unwrap()).collect();
    assert_eq!(users[0], "go");
    assert!(users[1].starts_with("[Subagent Context] You are running as a subagent (depth 1)."), "{}", users[1]);
    assert!(users[1].ends_with("[Subagent Task]\n\ndig"), "{}", users[1]);
    assert!(seen.contains("answer 2") && seen.contains("answer 3"), "{seen}");
    assert_eq!(child[1].messages.iter().rfind(|m| m.role == "user").unwrap().content.as_deref(), Some("more please"));
    // The child stayed idle between its runs and went when its parent's run ended.
    let child = runtime.registry.list().into_iter().find(|s| s.parent.is_some()).unwrap();
    assert_eq!(
        (child.status, child.outcome, child.run_id.as_str()),
        ("ended", Some(Outcome::Ok), task_id.as_str().unwrap())
    );
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// A follow-up runs a `session` child again, so the children limit applies to it as to
/// a spawn; an idle `session` child can be cancelled; and when the parent's run ends its
/// idle children's actors stop. A `subagents wait` ends when its task does.
#[actix_rt::test]
async fn follow_ups_meet_the_children_limit_and_idle_session_children_can_be_cancelled() {
    let fake = FakeModels::start(|r| {
        if r.model == "leaf" {
            return Reply::Text("leaf answer".into());
        }
        let results = tool_results(r);
        let key = |id: &str| results.iter().find(|(c, _)| c == id).map(|(_, v)| v["childSessionKey"].clone());
        match last_call_id(r).as_deref() {
            None => Reply::Calls(vec![
                call(
                    "s1",
                    "sessions_spawn",
                    json!({"task": "a", "label": "one", "agentId": "leaf", "mode": "session"}),
                ),
                call("w", "subagents", json!({"action": "wait", "taskIds": ["one"], "timeoutSeconds": 60})),
                call("y1", "sessions_yield", json!({})),
            ]),
            Some("y1") => Reply::Calls(vec![
                call(
                    "s2",
                    "sessions_spawn",
                    json!({"task": "b", "label": "two", "agentId": "leaf", "mode": "session"}),
                ),
                call("y2", "sessions_yield", json!({})),
            ]),
            Some("y2") => Reply::Calls(vec![
                call("more1", "sessions_send", json!({"sessionKey": key("s1"), "message": "again"})),
                call("more2", "sessions_send", json!({"sessionKey": key("s2"), "message": "again"})),
                call("y3", "sessions_yield", json!({})),
            ]),
            Some("y3") => Reply::Calls(vec![call("cancel", "subagents", json!({"action": "cancel", "taskId": "two"}))]),
            _ => Reply::Text("done".into()),
        }
    });
    let root = format!("{}max_children = 1\n", agent_toml("root", "root", &["leaf"]));
    let agents = [root, agent_toml("leaf", "leaf", &[])];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let summary = wait_run(&runtime, run.run_id).await;
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "done"));
    let requests = fake.requests_for("root");
    // The wait ended when the child answered, not at its timeout.
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[1]).into_iter().collect();
    assert_eq!(
        (&results["w"]["reason"], &results["w"]["tasks"][0]["status"]),
        (&json!("completed"), &json!("completed"))
    );
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[3]).into_iter().collect();
    assert_eq!(results["more1"]["status"], "resumed", "{results:?}");
    assert_eq!(
        results["more2"],
        json!({"status": "error", "error": "max active children reached (maxChildrenPerSession=1); wait for a child to finish"})
    );
    let results: std::collections::HashMap<String, Value> = tool_results(&requests[4]).into_iter().collect();
    assert_eq!((&results["cancel"]["status"], &results["cancel"]["cancelled"]), (&json!("cancelled"), &json!(true)));
    assert_eq!(fake.requests_for("leaf").len(), 3, "one follow-up ran, the refused one did not");
    // Both children ended; only the idle root's actor is left.
    let children: Vec<_> = runtime.registry.list().into_iter().filter(|s| s.parent.is_some()).collect();
    assert!(children.iter().all(|c| c.status == "ended"), "{children:?}");
    for _ in 0..100 {
        if runtime.stats.live_sessions() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(runtime.stats.live_sessions(), 1);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// A main session's second run whose task message was not journaled before a crash
/// (the journal holds only the first run) begins with its task after the restart; it
/// does not end at once with the first run's answer.
#[actix_rt::test]
async fn a_run_whose_first_message_was_lost_begins_with_its_task_after_a_restart() {
    use hivegate::gateway::Recover;
    use hivegate::keys::RunId;
    use hivegate::model::{Message, ModelRef, Usage};
    use hivegate::store::{
        recovery::Policy, Durable, Grant, RunRow, SessionRow, StoredMessage, StoredSession, StoredStatus,
    };
    let fake = FakeModels::start(|r| {
        let last = r.messages.iter().rev().find(|m| m.role == "user").and_then(|m| m.content.clone());
        Reply::Text(format!("answer to {}", last.unwrap_or_default()))
    });
    let runtime = gateway(&fake, Limits::default(), &[&agent_toml("root", "root", &[])]).await;
    let key = SessionKey::from("agent:root:main");
    let message = |seq: u32, run: &str, message: Message| StoredMessage {
        seq,
        run_id: RunId::from(run),
        message,
        delivers: None,
    };
    let session = StoredSession {
        row: SessionRow::main(
            key.clone(),
            "root".into(),
            Grant { scopes: hivegate::scope::ScopeSet::all().bits(), max_depth: 2, ..Grant::default() },
            RunRow {
                run_id: RunId::from("second"),
                task: "second task".into(),
                model: ModelRef::parse("fake/root").unwrap(),
                started_at_ms: hivegate::store::now_ms(),
            },
        ),
        status: StoredStatus::Running,
        outcome: None,
        final_text: None,
        usage: Usage::default(),
        ended_at_ms: None,
        resumes: 0,
        follow_ups: 0,
        follow_up_task: None,
    };
    let durable = Durable {
        sessions: vec![session],
        transcripts: [(
            key.clone(),
            vec![
                message(0, "first", Message::System { content: "system".into() }),
                message(1, "first", Message::User { content: "first task".into() }),
                message(
                    2,
                    "first",
                    Message::Assistant {
                        content: Some("answer to first task".into()),
                        tool_calls: vec![],
                        reasoning: None,
                    },
                ),
            ],
        )]
        .into(),
        ..Durable::default()
    };
    let recovered = runtime.gateway.send(Recover { durable, policy: Policy::default() }).await.unwrap();
    assert_eq!(recovered.resumed, 1);
    let summary = wait_run(&runtime, RunId::from("second")).await;
    assert_eq!((summary.outcome, summary.text.as_str()), (Outcome::Ok, "answer to second task"));
    let request = fake.requests_for("root").pop().unwrap();
    let users: Vec<String> =
        request.messages.iter().filter(|m| m.role == "user").filter_map(|m| m.content.clone()).collect();
    assert_eq!(users, vec!["first task".to_string(), "second task".to_string()]);
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}

/// An agent placed on workers cannot be spawned by a gateway without a work queue
/// (SQLite): the spawn is refused saying why, never run here instead.
#[actix_rt::test]
async fn a_spawn_placed_on_workers_is_refused_without_a_work_queue() {
    let fake = FakeModels::start(|_| Reply::Hang);
    let remote = format!("placement = \"worker\"\n{}", agent_toml("remote", "remote", &[]));
    let agents = [agent_toml("root", "root", &["remote"]), remote];
    let runtime = gateway(&fake, Limits::default(), &agents.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let run = runtime.gateway.send(start("root")).await.unwrap().unwrap();
    let root = capability_of(&runtime, &run.session_key);
    let refused = runtime.gateway.send(spawn(&root, "remote")).await.unwrap();
    assert_eq!(
        refused,
        SpawnReply::Error {
            error: "agent 'remote' runs on workers (placement = \"worker\"): this gateway has no worker queue; \
                    serve it with --database-url postgres://..."
                .into()
        }
    );
    assert_eq!(runtime.registry.list().len(), 1, "no child was made");
    runtime.shutdown().await.unwrap();
    fake.stop().await;
}
