use serde_json::{json, Value};

use super::*;
use crate::gateway::{Outcome, SessionEvent, TreeNode};
use crate::model::{ModelRef, Usage};

fn started(key: &str, parent: Option<&str>, agent: &str, label: Option<&str>) -> SessionEvent {
    SessionEvent::Started {
        session_key: key.into(),
        run_id: format!("run-{key}").as_str().into(),
        parent: parent.map(Into::into),
        agent_id: agent.into(),
        model: ModelRef::parse(&format!("builtin/{agent}")).unwrap(),
        label: label.map(Into::into),
    }
}

fn ended(key: &str, outcome: Outcome, error: Option<&str>, duration_ms: f64, tokens: u64) -> SessionEvent {
    SessionEvent::Ended {
        session_key: key.into(),
        run_id: format!("run-{key}").as_str().into(),
        outcome,
        error: error.map(Into::into),
        duration_ms,
        tokens,
        cost_usd: None,
    }
}

const ROOT: &str = "agent:brain:main";
const A: &str = "agent:executor:subagent:0000000000aaaaaa";
const B: &str = "agent:executor:subagent:0000000000bbbbbb";

#[test]
fn a_runs_events_become_a_tree_whose_statuses_change_as_sessions_end() {
    let mut tree = LiveTree::default();
    tree.apply(&started(ROOT, None, "brain", None), 1_000);
    tree.apply(&started(A, Some(ROOT), "executor", Some("alpha")), 1_100);
    tree.apply(&started(B, Some(ROOT), "executor", None), 1_200);
    let usage = Usage { prompt_tokens: 30, completion_tokens: 12, cost_usd: 0.0021, ..Usage::default() };
    tree.apply(&SessionEvent::Used { session_key: A.into(), run_id: "run-a".into(), usage }, 1_300);
    assert_eq!(
        tree.lines(2_000, 0, 0),
        [
            "agent:brain:main  brain  builtin/brain  running  1.0 s  0 tok",
            "├── agent:executor:…00aaaaaa \"alpha\"  executor  builtin/executor  running  0.9 s  42 tok  $0.0021",
            "└── agent:executor:…00bbbbbb  executor  builtin/executor  running  0.8 s  0 tok",
            "sessions: 3 (running 3)   tokens: 42   cost: $0.0021   elapsed: 1.0 s",
        ]
    );
    tree.apply(&ended(A, Outcome::Ok, None, 1_500.0, 50), 2_600);
    tree.apply(&ended(B, Outcome::Error, Some("provider said no\nmore"), 1_000.0, 7), 2_200);
    tree.apply(&ended(ROOT, Outcome::Ok, None, 1_700.0, 90), 2_700);
    assert_eq!(
        tree.lines(9_000, 0, 0),
        [
            "agent:brain:main  brain  builtin/brain  ok  1.7 s  90 tok",
            "├── agent:executor:…00aaaaaa \"alpha\"  executor  builtin/executor  ok  1.5 s  50 tok",
            "└── agent:executor:…00bbbbbb  executor  builtin/executor  error  1.0 s  7 tok  ! provider said no",
            "sessions: 3 (ok 2, not ok 1)   tokens: 147   elapsed: 1.7 s",
        ]
    );
    assert_eq!(tree.counts().running, 0);
    assert_eq!(tree.root_key(), Some(ROOT));
}

/// The `agent` events of the WebSocket protocol, as `hub::live` sends them.
fn agent_event(run: &str, key: &str, spawned_by: Option<&str>, stream: &str, data: Value) -> Value {
    let mut payload = json!({"runId": run, "sessionKey": key, "agentId": key.split(':').nth(1).unwrap(),
        "stream": stream, "data": data, "seq": 1, "ts": 0});
    if let Some(parent) = spawned_by {
        payload["spawnedBy"] = json!(parent);
    }
    json!({"type": "event", "event": "agent", "payload": payload})
}

#[test]
fn agent_events_build_the_followed_runs_tree_only() {
    let mut tree = LiveTree::for_run("r1");
    let start = |at: u64| json!({"phase": "start", "startedAt": at});
    let model = json!({"phase": "model", "provider": "cheap", "model": "qwen/q3"});
    for frame in [
        agent_event("other", "agent:brain:k9", None, "lifecycle", start(500)),
        agent_event("r1", ROOT, None, "lifecycle", start(1_000)),
        agent_event("r1", ROOT, None, "lifecycle", model.clone()),
        agent_event("r2", A, Some(ROOT), "lifecycle", start(1_100)),
        agent_event("r2", A, Some(ROOT), "lifecycle", model),
        agent_event("r2", A, Some(ROOT), "usage", json!({"totalTokens": 15, "costUsd": 0.5})),
        json!({"type": "event", "event": "chat", "payload": {"sessionKey": ROOT}}),
        json!({"type": "event", "event": "tick", "payload": {}}),
    ] {
        tree.apply_agent(&frame, 1_200);
    }
    assert_eq!(
        tree.lines(1_500, 0, 0),
        [
            "agent:brain:main  brain  cheap/qwen/q3  running  0.5 s  0 tok",
            "└── agent:executor:…00aaaaaa  executor  cheap/qwen/q3  running  0.4 s  15 tok  $0.5000",
            "sessions: 2 (running 2)   tokens: 15   cost: $0.5000   elapsed: 0.5 s",
        ],
        "the other run of the gateway is not drawn"
    );
    let end = |reason: &str, aborted: bool| {
        json!({"phase": "end", "startedAt": 1_100, "endedAt": 3_100, "aborted": aborted, "stopReason": reason,
            "error": "aborted by the operator"})
    };
    tree.apply_agent(&agent_event("r2", A, Some(ROOT), "lifecycle", end("rpc", true)), 3_100);
    tree.apply_agent(&agent_event("r1", ROOT, None, "lifecycle", end("rpc", true)), 3_200);
    let lines = tree.lines(5_000, 0, 0);
    assert_eq!(lines[0], "agent:brain:main  brain  cheap/qwen/q3  killed  2.0 s  0 tok  ! aborted by the operator");
    assert_eq!(tree.root_key(), Some(ROOT));
    assert_eq!(tree.counts(), Counts { running: 0, ok: 0, failed: 2 });
}

#[test]
fn a_session_seen_before_its_parent_goes_under_it_once_the_parent_is_known() {
    let mut tree = LiveTree::for_run("r1");
    let start = json!({"phase": "start", "startedAt": 0});
    tree.apply_agent(&agent_event("r2", A, Some(ROOT), "lifecycle", start.clone()), 0);
    assert_eq!(tree.counts().total(), 0, "its run's root is not known yet");
    tree.apply_agent(&agent_event("r1", ROOT, None, "lifecycle", start), 0);
    assert_eq!(tree.counts().total(), 2);
    assert!(tree.lines(0, 0, 0)[1].starts_with("└── agent:executor:…00aaaaaa"));
    // A tree loaded from the gateway puts a session where the gateway has it.
    let shown = json!({"sessionKey": ROOT, "agentId": "brain", "model": "p/m", "durationMs": 5.0, "children": [
        {"sessionKey": B, "agentId": "executor", "model": "p/m", "outcome": "ok", "label": "b", "children": [
            {"sessionKey": A, "agentId": "executor", "model": "p/m", "outcome": "killed", "children": []}]}]});
    assert!(tree.load_json(&shown, Some("r1"), 10));
    let lines = tree.lines(10, 0, 0);
    assert_eq!(lines[1], "└── agent:executor:…00bbbbbb \"b\"  executor  p/m  ok  0.0 s  0 tok");
    assert_eq!(lines[2], "    └── agent:executor:…00aaaaaa  executor  p/m  killed  0.0 s  0 tok");
    assert!(!tree.load_json(&json!({"nothing": 1}), None, 10));
}

fn wide_tree(children: usize, running: usize) -> LiveTree {
    let mut tree = LiveTree::default();
    tree.apply(&started(ROOT, None, "brain", None), 0);
    for i in 0..children {
        let key = format!("agent:executor:subagent:{i:016x}");
        tree.apply(&started(&key, Some(ROOT), "executor", None), 0);
        if i >= running {
            tree.apply(&ended(&key, Outcome::Ok, None, 10.0, 1), 10);
        }
    }
    tree
}

#[test]
fn a_tree_taller_than_the_screen_folds_ended_leaves_then_says_how_many_more() {
    // 3 running and 40 ended children: the ended ones fold into one line.
    let lines = wide_tree(43, 3).lines(100, 10, 0);
    assert_eq!(
        lines,
        [
            "agent:brain:main  brain  builtin/brain  running  0.1 s  0 tok",
            "├── agent:executor:…00000000  executor  builtin/executor  running  0.1 s  0 tok",
            "├── agent:executor:…00000001  executor  builtin/executor  running  0.1 s  0 tok",
            "├── agent:executor:…00000002  executor  builtin/executor  running  0.1 s  0 tok",
            "└── … 40 ended (ok 40)",
            "sessions: 44 (running 4, ok 40)   tokens: 40   elapsed: 0.1 s",
        ]
    );
    // 20 running: still too tall for 10 rows, so the rest is counted.
    let lines = wide_tree(43, 20).lines(100, 10, 0);
    assert_eq!(lines.len(), 9, "{lines:#?}");
    assert_eq!(lines[7], "… 37 more (running 14, ok 23)");
    assert!(lines[8].starts_with("sessions: 44 (running 21, ok 23)"), "{lines:#?}");
    // A screen too small for anything but the footer still shows one row.
    assert_eq!(wide_tree(3, 3).lines(100, 1, 0).len(), 2);
}

#[test]
fn lines_are_cut_to_the_screen_width() {
    let lines = wide_tree(1, 1).lines(100, 0, 21);
    assert_eq!(lines[0], "agent:brain:main  b…");
    assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:#?}");
}

#[test]
fn a_lost_view_is_loaded_again_from_the_registrys_tree() {
    let node = |key: &str, outcome: Option<Outcome>, children: Vec<TreeNode>| TreeNode {
        session_key: key.into(),
        agent_id: key.split(':').nth(1).unwrap().into(),
        model: ModelRef::parse("builtin/x").unwrap(),
        label: None,
        outcome,
        status: if outcome.is_some() { "ended" } else { "running" },
        duration_ms: 500.0,
        tokens: 3,
        cost_usd: None,
        usage: Usage::default(),
        error: None,
        notices: Vec::new(),
        placement: "local".into(),
        children,
    };
    let mut tree = LiveTree::default();
    tree.apply(&started(ROOT, None, "brain", None), 0);
    tree.lost(12);
    tree.load(&node(ROOT, None, vec![node(A, Some(Outcome::Killed), vec![])]), 1_000);
    assert_eq!(
        tree.lines(1_000, 0, 0),
        [
            "agent:brain:main  brain  builtin/x  running  0.5 s  3 tok",
            "└── agent:executor:…00aaaaaa  executor  builtin/x  killed  0.5 s  3 tok",
            "sessions: 2 (running 1, not ok 1)   tokens: 6   elapsed: 0.5 s   (12 events lost)",
        ]
    );
}

#[test]
fn frames_redraw_in_place_and_the_cursor_comes_back() {
    let mut screen = Screen::default();
    let lines = |n: usize| (0..n).map(|i| format!("line {i}")).collect::<Vec<_>>();
    assert_eq!(screen.frame(&lines(2)), "\x1b[?25lline 0\x1b[K\nline 1\x1b[K\n\x1b[J");
    assert_eq!(screen.frame(&lines(1)), "\x1b[2A\rline 0\x1b[K\n\x1b[J");
    assert_eq!(screen.clear(), "\x1b[1A\r\x1b[J\x1b[?25h");
    assert_eq!(screen.clear(), "", "nothing drawn, nothing to undo");
    screen.frame(&lines(3));
    assert_eq!(screen.leave(), "\x1b[?25h");
}

#[test]
fn redraws_are_at_most_ten_a_second() {
    let mut throttle = Throttle::default();
    assert!(throttle.ready(5_000), "the first at once");
    assert!(!throttle.ready(5_050));
    assert!(!throttle.ready(5_099));
    assert!(throttle.ready(5_100));
    let drawn = (5_101..6_101).filter(|ms| throttle.ready(*ms)).count();
    assert_eq!(drawn, 10);
}
