use super::*;
use crate::gateway::Cleanup;
use crate::model::{ModelRef, Usage};
use crate::store::records::{Announce, Grant, RunRow, SessionRow, Spawned};

const NOW: u64 = 1_800_000_000_000;

fn session(key: &str, parent: Option<(&str, &str)>, run: &str, status: StoredStatus) -> StoredSession {
    StoredSession {
        row: SessionRow {
            key: key.into(),
            parent: parent.map(|(p, _)| p.into()),
            agent_id: "executor".into(),
            label: None,
            spawned: Spawned {
                model_explicit: false,
                thinking: None,
                cleanup: Cleanup::Keep,
                stays: false,
                forked: false,
                grant: Grant { deadline_ms: Some(NOW + 60_000), ..Grant::default() },
                parent_run_id: parent.map(|(_, r)| r.into()),
                call_id: None,
                workspace: None,
            },
            run: RunRow {
                run_id: run.into(),
                task: "t".into(),
                model: ModelRef::parse("fake/m").unwrap(),
                started_at_ms: NOW - 5_000,
            },
        },
        status,
        outcome: None,
        final_text: None,
        usage: Usage::default(),
        ended_at_ms: None,
        resumes: 0,
        follow_ups: 0,
        follow_up_task: None,
    }
}

fn resume() -> Decision {
    Decision::Resume
}

#[test]
fn running_trees_resume_and_every_bound_finalizes_with_its_reason() {
    use StoredStatus::*;
    let mut tombstoned = session("agent:x:main", None, "r-t", Running);
    tombstoned.resumes = 3;
    let mut stale = session("agent:y:main", None, "r-s", Running);
    stale.row.run.started_at_ms = NOW - 2 * 24 * 3600 * 1000;
    let mut late = session("agent:z:main", None, "r-l", Running);
    late.row.spawned.grant.deadline_ms = Some(NOW - 1);
    let mut gone = session("agent:w:main", None, "r-g", Running);
    gone.row.agent_id = "deleted".into();
    let sessions = vec![
        // Listed child first: the parent is still decided first.
        session("agent:brain:main:c1", Some(("agent:brain:main", "r0")), "r1", Running),
        session("agent:brain:main", None, "r0", Running),
        session("agent:brain:main:c2", Some(("agent:brain:main", "r0")), "r2", Ended),
        // A child of an earlier run of its parent, left running: killed.
        session("agent:brain:main:old", Some(("agent:brain:main", "r-before")), "r3", Running),
        tombstoned,
        session("agent:x:main:c", Some(("agent:x:main", "r-t")), "r4", Running),
        stale,
        late,
        gone,
    ];
    let decided = decide(&sessions, |agent| agent != "deleted", NOW, &Policy::default());
    let outcome = |d: &Decision| match d {
        Decision::Resume => "resume".to_string(),
        Decision::Finalize { outcome, reason } => format!("{}: {reason}", outcome.as_str()),
    };
    let got: Vec<(String, String)> = decided.iter().map(|(k, d)| (k.to_string(), outcome(d))).collect();
    let expected = vec![
        ("agent:brain:main", outcome(&resume())),
        ("agent:brain:main:c1", outcome(&resume())),
        ("agent:brain:main:old", "killed: killed: its parent agent:brain:main did not resume after the restart".into()),
        ("agent:x:main", "error: tombstoned: the gateway stopped 3 times while resuming this run, with no progress; it is not resumed again (recovery.max_resumes)".into()),
        ("agent:x:main:c", "killed: killed: its parent agent:x:main did not resume after the restart".into()),
        ("agent:y:main", "interrupted: interrupted: the run started more than 86400 s before the restart (recovery.stale_after_seconds)".into()),
        ("agent:z:main", "timeout: timed out: its deadline passed while the gateway was down".into()),
        ("agent:w:main", "error: agent 'deleted' is no longer defined; the run was not resumed".into()),
    ];
    let expected: Vec<(String, String)> = expected.into_iter().map(|(k, d)| (k.to_string(), d)).collect();
    assert_eq!(got, expected);
}

fn call(id: &str, name: &str, args: &str) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments: args.into() }
}

#[test]
fn a_cut_off_turn_uses_what_was_recorded_reruns_only_what_only_reads_and_says_the_rest_was_interrupted() {
    let calls = vec![
        call("done", "sessions_send", "{}"),
        call("rec", "nodes_invoke", "{}"),
        call("spawned", "sessions_spawn", "{}"),
        call("lost-spawn", "sessions_spawn", "{}"),
        call("list", "sessions_list", "{}"),
        call("invoke", "nodes_invoke", "{}"),
    ];
    let transcript = vec![
        Message::User { content: "task".into() },
        Message::Assistant { content: None, tool_calls: calls.clone(), reasoning: None },
        Message::Tool { call_id: "done".into(), content: "{\"status\":\"ok\"}".into() },
    ];
    // The turn is at index 1, journal position 1 + 5; an earlier turn's `list` (same
    // call id, another position) is not this one's.
    let recorded = HashMap::from([
        ("6:rec".to_string(), "{\"answer\":1}".to_string()),
        ("2:list".to_string(), "{\"old\":1}".to_string()),
    ]);
    let spawned = HashMap::from([("6:spawned".to_string(), "{\"status\":\"accepted\"}".to_string())]);
    let actions = unanswered(&transcript, 5, &recorded, &spawned, |c| c.name == "sessions_list");
    assert_eq!(
        actions,
        vec![
            CallAction::Answer { call_id: "rec".into(), content: "{\"answer\":1}".into() },
            CallAction::Answer { call_id: "spawned".into(), content: "{\"status\":\"accepted\"}".into() },
            CallAction::Answer { call_id: "lost-spawn".into(), content: interrupted_result("sessions_spawn") },
            CallAction::Rerun(calls[4].clone()),
            CallAction::Answer { call_id: "invoke".into(), content: interrupted_result("nodes_invoke") },
        ]
    );
    assert!(interrupted_result("sessions_spawn").contains("no child runs for it"));
    assert!(interrupted_result("nodes_invoke").contains("may or may not have taken effect"));
    // A turn whose calls all have results, or a transcript ending in a user message,
    // leaves nothing to do.
    let mut answered = transcript.clone();
    answered.truncate(1);
    assert_eq!(unanswered(&answered, 5, &recorded, &spawned, |_| true), vec![]);
}

#[test]
fn undelivered_results_go_to_their_resumed_parent_a_bounded_number_of_times() {
    let pending = |id: &str, parent: &str, run: &str, attempts| Pending {
        announce: Announce { id: id.into(), parent: parent.into(), parent_run_id: run.into(), text: "t".into() },
        attempts,
    };
    let outbox = vec![
        pending("a", "agent:brain:main", "r0", 0),
        pending("b", "agent:brain:main", "r0", 3),
        pending("c", "agent:brain:main", "r-before", 0),
        pending("d", "agent:gone:main", "r9", 0),
    ];
    let resumed = HashMap::from([(SessionKey::from("agent:brain:main"), RunId::from("r0"))]);
    let got = deliveries(&outbox, &resumed, &Policy::default());
    assert_eq!(
        got,
        vec![
            ("a".into(), Delivery::Redeliver),
            (
                "b".into(),
                Delivery::GiveUp(
                    "not delivered to agent:brain:main after 3 attempts (recovery.max_delivery_attempts)".into()
                )
            ),
            ("c".into(), Delivery::Undeliverable("its parent agent:brain:main is no longer running that run".into())),
            ("d".into(), Delivery::Undeliverable("its parent agent:gone:main is no longer running that run".into())),
        ]
    );
}
