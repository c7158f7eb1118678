//! The store's behaviour, on both backends: each test in [`on_both_backends!`] runs
//! once on SQLite (a temporary directory) and once on Postgres (a database of its own,
//! [`super::testdb`]; skipped with a message when there is no server). Tests of one
//! backend's own machinery follow, and the Postgres ones are in `postgres/tests.rs`.

use super::sqlite::Sqlite;
use super::testdb::TestDatabase;
use super::*;
use crate::gateway::Outcome;
use crate::keys::RunId;
use crate::model::{ModelRef, Usage};

/// A fresh, empty database of one backend for one test.
pub(super) enum Fresh {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl Fresh {
    fn sqlite() -> Fresh {
        Fresh::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres(test: &str) -> Option<Fresh> {
        TestDatabase::create(test).map(Fresh::Postgres)
    }

    /// A connection to it (migrating it the first time); several may be open at once.
    fn open(&self) -> Box<dyn Backend> {
        match self {
            Fresh::Sqlite(dir) => open(dir.path(), None).unwrap(),
            Fresh::Postgres(db) => open(Path::new("/nonexistent"), Some(&db.url)).unwrap(),
        }
    }
}

/// Each named test (a function taking a [`Fresh`] database) as a `#[test]` on each
/// backend: `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test]
            fn $test() {
                super::$test(&super::Fresh::sqlite());
            })*
        }
        mod on_postgres {
            $(#[test]
            fn $test() {
                if let Some(db) = super::Fresh::postgres(stringify!($test)) {
                    super::$test(&db);
                }
            })*
        }
    };
}

on_both_backends!(
    a_start_finds_running_runs_with_transcripts_tool_results_children_and_undelivered_results,
    a_result_counts_as_delivered_only_with_the_message_that_carries_it,
    the_writer_commits_what_is_queued_and_flush_waits_for_it,
    a_start_is_counted_before_anything_runs_a_clean_stop_resets_it_and_old_history_is_pruned,
    a_main_session_started_again_begins_a_new_conversation_and_moves_to_the_newest,
    follow_ups_and_new_grants_are_recorded_and_forgotten_sessions_leave_nothing,
    snapshots_are_replaced_whole,
);

pub(super) fn main_row(key: &str, run: &str) -> SessionRow {
    let grant = Grant { scopes: 3, max_depth: 2, deadline_ms: Some(now_ms() + 60_000), ..Grant::default() };
    let run = RunRow {
        run_id: run.into(),
        task: "plan".into(),
        model: ModelRef::parse("fake/brain").unwrap(),
        started_at_ms: now_ms(),
    };
    SessionRow::main(key.into(), "brain".into(), grant, run)
}

pub(super) fn child_row(key: &str, parent: &str, parent_run: &str, run: &str, call: &str) -> SessionRow {
    let mut row = main_row(key, run);
    row.parent = Some(parent.into());
    row.agent_id = "executor".into();
    row.label = Some("part".into());
    row.spawned.stays = false;
    row.spawned.model_explicit = true;
    row.spawned.parent_run_id = Some(parent_run.into());
    row.spawned.call_id = Some(call.into());
    row.run.task = "do part".into();
    row
}

pub(super) fn user(text: &str) -> Message {
    Message::User { content: text.into() }
}

pub(super) fn messages(key: &str, run: &str, first_seq: u32, texts: &[&str], delivers: Vec<(u32, &str)>) -> Record {
    Record::Messages(Box::new(Journaled {
        key: key.into(),
        run_id: run.into(),
        first_seq,
        messages: texts.iter().map(|t| user(t)).collect(),
        delivers: delivers.into_iter().map(|(s, id)| (s, RunId::from(id))).collect(),
    }))
}

pub(super) fn ended(key: &str, run: &str, parent: Option<(&str, &str)>) -> Record {
    Record::RunEnded(Box::new(RunEnd {
        key: key.into(),
        run_id: run.into(),
        outcome: Outcome::Ok,
        text: format!("answer of {key}"),
        usage: Usage::tokens(10, 5),
        ended_at_ms: now_ms(),
        idle: false,
        forget: false,
        announce: parent.map(|(p, prun)| Announce {
            id: run.into(),
            parent: p.into(),
            parent_run_id: prun.into(),
            text: format!("[completion of {run}]"),
        }),
    }))
}

pub(super) const MAIN: &str = "agent:brain:main";
pub(super) const C1: &str = "agent:executor:subagent:1";
pub(super) const C2: &str = "agent:executor:subagent:2";

fn a_start_finds_running_runs_with_transcripts_tool_results_children_and_undelivered_results(fresh: &Fresh) {
    let mut db = fresh.open();
    db.apply(&[
        Record::SessionStarted(Box::new(main_row(MAIN, "r0"))),
        messages(MAIN, "r0", 0, &["system", "plan"], vec![]),
        Record::SessionStarted(Box::new(child_row(C1, MAIN, "r0", "r1", "call-1"))),
        Record::ToolResult(Box::new(ToolResultRow {
            key: MAIN.into(),
            call_id: "call-1".into(),
            content: "{\"status\":\"accepted\"}".into(),
        })),
        Record::SessionStarted(Box::new(child_row(C2, MAIN, "r0", "r2", "call-2"))),
        Record::Used(Box::new(UsedRow {
            key: MAIN.into(),
            usage: Usage::tokens(7, 3),
            model: ModelRef::parse("fake/other").unwrap(),
        })),
        ended(C1, "r1", Some((MAIN, "r0"))),
        ended(C2, "r2", Some((MAIN, "r0"))),
    ])
    .unwrap();
    // The parent takes c1's result into its transcript: delivered in the same batch.
    db.apply(&[messages(MAIN, "r0", 2, &["[completion of r1]"], vec![(2, "r1")])]).unwrap();
    let state = db.load(100).unwrap();
    let summary: Vec<(String, StoredStatus, Option<Outcome>)> =
        state.sessions.iter().map(|s| (s.row.key.to_string(), s.status, s.outcome)).collect();
    assert_eq!(
        summary,
        vec![
            (MAIN.to_string(), StoredStatus::Running, None),
            (C1.to_string(), StoredStatus::Ended, Some(Outcome::Ok)),
            (C2.to_string(), StoredStatus::Ended, Some(Outcome::Ok)),
        ]
    );
    let main = &state.sessions[0];
    assert_eq!((main.usage, main.row.run.model.to_string()), (Usage::tokens(7, 3), "fake/other".to_string()));
    assert_eq!(
        main.row,
        SessionRow {
            run: RunRow { model: ModelRef::parse("fake/other").unwrap(), ..main.row.run.clone() },
            ..main_row(MAIN, "r0")
        }
        .clone_with_started(&main.row)
    );
    let transcript: Vec<(Message, Option<RunId>)> =
        state.transcripts[&SessionKey::from(MAIN)].iter().map(|m| (m.message.clone(), m.delivers.clone())).collect();
    assert_eq!(
        transcript,
        vec![(user("system"), None), (user("plan"), None), (user("[completion of r1]"), Some("r1".into()))]
    );
    assert_eq!(state.tool_results[&SessionKey::from(MAIN)]["call-1"], "{\"status\":\"accepted\"}");
    let children: Vec<(String, Option<String>)> =
        state.children[&SessionKey::from(MAIN)].iter().map(|c| (c.key.to_string(), c.call_id.clone())).collect();
    assert_eq!(children, vec![(C1.into(), Some("call-1".into())), (C2.into(), Some("call-2".into()))]);
    // c1's result was delivered; c2's is still owed.
    let owed: Vec<(String, String, u32)> =
        state.outbox.iter().map(|p| (p.announce.id.to_string(), p.announce.text.clone(), p.attempts)).collect();
    assert_eq!(owed, vec![("r2".to_string(), "[completion of r2]".to_string(), 0)]);
}

impl SessionRow {
    /// This row with `other`'s start time (set from the clock when each was made).
    fn clone_with_started(&self, other: &SessionRow) -> SessionRow {
        let mut row = self.clone();
        row.run.started_at_ms = other.run.started_at_ms;
        row.spawned.grant.deadline_ms = other.spawned.grant.deadline_ms;
        row
    }
}

fn a_result_counts_as_delivered_only_with_the_message_that_carries_it(fresh: &Fresh) {
    let mut db = fresh.open();
    db.apply(&[
        Record::SessionStarted(Box::new(main_row(MAIN, "r0"))),
        messages(MAIN, "r0", 0, &["plan"], vec![]),
        Record::SessionStarted(Box::new(child_row(C1, MAIN, "r0", "r1", "call-1"))),
        Record::SessionStarted(Box::new(child_row(C2, MAIN, "r0", "r2", "call-2"))),
        ended(C1, "r1", Some((MAIN, "r0"))),
        ended(C2, "r2", Some((MAIN, "r0"))),
        messages(MAIN, "r0", 1, &["[completion of r1]"], vec![(1, "r1")]),
    ])
    .unwrap();
    // A message journaled again at a taken position (a bug, or a replay) is not
    // written, so the result it claims to carry is still owed.
    db.apply(&[messages(MAIN, "r0", 1, &["[completion of r2]"], vec![(1, "r2")])]).unwrap();
    assert_eq!(db.transcript(&MAIN.into()).unwrap(), vec![user("plan"), user("[completion of r1]")]);
    let owed: Vec<String> = db.load(10).unwrap().outbox.iter().map(|p| p.announce.id.to_string()).collect();
    assert_eq!(owed, vec!["r2".to_string()]);
}

#[test]
fn a_write_cut_off_mid_transaction_leaves_every_complete_message_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Sqlite::open(dir.path()).unwrap();
    let committed: Vec<String> = (0..10).map(|i| format!("committed {i}")).collect();
    let texts: Vec<&str> = committed.iter().map(String::as_str).collect();
    db.apply(&[Record::SessionStarted(Box::new(main_row(MAIN, "r0"))), messages(MAIN, "r0", 0, &texts, vec![])])
        .unwrap();
    // A large batch in progress: a tiny page cache makes SQLite spill its pages into
    // the WAL before the commit, as a crash mid-write would leave them.
    let conn = db.connection();
    conn.pragma_update(None, "cache_size", 1).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    let big = "x".repeat(4000);
    for seq in 10..400 {
        conn.execute(
            "INSERT INTO messages (session_key, seq, run_id, json, reasoning_json, announce_id) VALUES (?1, ?2, 'r0', ?3, NULL, NULL)",
            rusqlite::params![MAIN, seq, format!("{{\"role\":\"user\",\"content\":\"{big}\"}}")],
        )
        .unwrap();
    }
    // The crash: the files as they are now, with the transaction open.
    let crashed = tempfile::tempdir().unwrap();
    for name in [DB_FILE.to_string(), format!("{DB_FILE}-wal")] {
        std::fs::copy(dir.path().join(&name), crashed.path().join(&name)).unwrap();
    }
    let wal = std::fs::metadata(crashed.path().join(format!("{DB_FILE}-wal"))).unwrap().len();
    assert!(wal > 400_000, "the open transaction spilled into the WAL ({wal} bytes)");
    let reopened = Sqlite::open(crashed.path()).unwrap();
    let transcript = reopened.transcript(&MAIN.into()).unwrap();
    assert_eq!(transcript, committed.iter().map(|t| user(t)).collect::<Vec<_>>());
}

#[test]
fn version_1_databases_are_migrated_keeping_their_snapshots_and_newer_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE snapshots (name TEXT PRIMARY KEY, version INTEGER NOT NULL, json TEXT NOT NULL,
                                     updated_at_ms INTEGER NOT NULL);
             INSERT INTO snapshots VALUES ('pairing', 1, '{\"a\":1}', 0);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let mut db = Sqlite::open(dir.path()).unwrap();
    assert_eq!(db.load_snapshot("pairing").unwrap(), Some((1, "{\"a\":1}".to_string())));
    db.save_snapshot("pairing", 2, "{\"a\":2}").unwrap();
    db.apply(&[Record::SessionStarted(Box::new(main_row(MAIN, "r0")))]).unwrap();
    let version: i64 = db.connection().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, sqlite::SCHEMA_VERSION);
    db.connection().pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let err = Sqlite::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("schema version 99, newer than this hivegate understands (2)"), "{err}");
}

fn the_writer_commits_what_is_queued_and_flush_waits_for_it(fresh: &Fresh) {
    let store = Store::start(fresh.open(), "test".into()).unwrap();
    let journal = store.journal();
    journal.record(Record::SessionStarted(Box::new(main_row(MAIN, "r0"))));
    for i in 0..1000u32 {
        journal.record(messages(MAIN, "r0", i, &[&format!("m{i}")], vec![]));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store.flush());
    assert_eq!(runtime.block_on(store.transcript(MAIN.into())).unwrap().len(), 1000);
    runtime.block_on(store.save_snapshot("pairing", 1, "{}".into())).unwrap();
    let reader = fresh.open();
    assert_eq!(reader.transcript(&MAIN.into()).unwrap().len(), 1000);
    assert_eq!(reader.load_snapshot("pairing").unwrap(), Some((1, "{}".to_string())));
}

fn a_start_is_counted_before_anything_runs_a_clean_stop_resets_it_and_old_history_is_pruned(fresh: &Fresh) {
    let mut db = fresh.open();
    let mut records = vec![Record::SessionStarted(Box::new(main_row(MAIN, "r0")))];
    for i in 0..5 {
        let key = format!("agent:executor:subagent:old{i}");
        records.push(Record::SessionStarted(Box::new(child_row(&key, MAIN, "r0", &format!("o{i}"), "c"))));
        records.push(ended(&key, &format!("o{i}"), None));
        records.push(messages(&key, &format!("o{i}"), 2, &["work"], vec![]));
    }
    records.push(Record::SessionStarted(Box::new(child_row(C1, MAIN, "r0", "r1", "call-1"))));
    records.push(ended(C1, "r1", Some((MAIN, "r0"))));
    db.apply(&records).unwrap();
    db.count_start().unwrap();
    db.count_start().unwrap();
    let state = db.load(100).unwrap();
    assert_eq!(state.sessions[0].resumes, 2);
    assert_eq!(state.outbox[0].attempts, 2);
    db.apply(&[Record::StoppedCleanly]).unwrap();
    let state = db.load(100).unwrap();
    assert_eq!((state.sessions[0].resumes, state.outbox[0].attempts), (0, 0));
    // Keep the newest two: c1 and the newest old one; the running main session stays.
    db.prune(2).unwrap();
    let kept: Vec<String> = db.load(100).unwrap().sessions.iter().map(|s| s.row.key.to_string()).collect();
    assert_eq!(kept, vec![MAIN.to_string(), "agent:executor:subagent:old4".to_string(), C1.to_string()]);
    assert_eq!(db.transcript(&"agent:executor:subagent:old0".into()).unwrap(), vec![]);
    // An ended child's history starts with its task (its opening is not journaled).
    assert_eq!(db.transcript(&"agent:executor:subagent:old4".into()).unwrap(), vec![user("do part"), user("work")]);
}

fn a_main_session_started_again_begins_a_new_conversation_and_moves_to_the_newest(fresh: &Fresh) {
    let mut db = fresh.open();
    db.apply(&[
        Record::SessionStarted(Box::new(main_row(MAIN, "r0"))),
        messages(MAIN, "r0", 0, &["system", "plan"], vec![]),
        Record::ToolResult(Box::new(ToolResultRow { key: MAIN.into(), call_id: "c".into(), content: "x".into() })),
        Record::Used(Box::new(UsedRow {
            key: MAIN.into(),
            usage: Usage::tokens(7, 3),
            model: ModelRef::parse("fake/brain").unwrap(),
        })),
        Record::RunEnded(Box::new(RunEnd { idle: true, ..run_end(MAIN, "r0") })),
        Record::SessionStarted(Box::new(child_row(C1, MAIN, "r0", "r1", "call-1"))),
        ended(C1, "r1", None),
        Record::SessionStarted(Box::new(child_row(C2, MAIN, "r0", "r2", "call-2"))),
        ended(C2, "r2", None),
    ])
    .unwrap();
    let before: Vec<String> = db.load(2).unwrap().sessions.iter().map(|s| s.row.key.to_string()).collect();
    assert_eq!(before, vec![C1.to_string(), C2.to_string()]);
    // Started again (after a reset, say): a new conversation, and the newest session.
    db.apply(&[Record::SessionStarted(Box::new(main_row(MAIN, "r9")))]).unwrap();
    let state = db.load(2).unwrap();
    let keys: Vec<String> = state.sessions.iter().map(|s| s.row.key.to_string()).collect();
    assert_eq!(keys, vec![C2.to_string(), MAIN.to_string()]);
    let main = &state.sessions[1];
    assert_eq!(
        (main.status, main.outcome, main.final_text.clone(), main.usage, main.row.run.run_id.to_string()),
        (StoredStatus::Running, None, None, Usage::default(), "r9".to_string())
    );
    assert_eq!(state.transcripts[&SessionKey::from(MAIN)], vec![]);
    assert!(state.tool_results[&SessionKey::from(MAIN)].is_empty());
}

fn run_end(key: &str, run: &str) -> RunEnd {
    let Record::RunEnded(end) = ended(key, run, None) else { unreachable!() };
    *end
}

fn follow_ups_and_new_grants_are_recorded_and_forgotten_sessions_leave_nothing(fresh: &Fresh) {
    let mut db = fresh.open();
    let mut child = child_row(C1, MAIN, "r0", "r1", "call-1");
    child.spawned.stays = true;
    db.apply(&[
        Record::SessionStarted(Box::new(main_row(MAIN, "r0"))),
        Record::SessionStarted(Box::new(child)),
        messages(C1, "r1", 1, &["done"], vec![]),
        Record::ToolResult(Box::new(ToolResultRow { key: C1.into(), call_id: "t".into(), content: "y".into() })),
        Record::RunEnded(Box::new(RunEnd { idle: true, ..run_end(C1, "r1") })),
    ])
    .unwrap();
    // A follow-up: the same run again, numbered, keeping its first task.
    let wider = Grant { scopes: 7, depth: 1, max_depth: 2, ..Grant::default() };
    let run = RunRow { task: "more".into(), ..main_row(C1, "r1").run };
    db.apply(&[Record::RunStarted(Box::new(RunStart { key: C1.into(), run, grant: Some(wider), follow_up: 1 }))])
        .unwrap();
    let state = db.load(10).unwrap();
    let c1 = state.sessions.iter().find(|s| s.row.key.as_str() == C1).unwrap();
    assert_eq!(
        (c1.status, c1.row.run.task.as_str(), c1.follow_up_task.as_deref(), c1.follow_ups, c1.row.spawned.grant),
        (StoredStatus::Running, "do part", Some("more"), 1, wider)
    );
    assert_eq!(state.children[&SessionKey::from(MAIN)][0].follow_ups, 1);
    // An idle session stopped is ended; a result given up on is no longer owed.
    db.apply(&[
        Record::RunEnded(Box::new(RunEnd { idle: true, ..run_end(C1, "r1") })),
        Record::Stopped { key: C1.into() },
        Record::SessionStarted(Box::new(child_row(C2, MAIN, "r0", "r2", "call-2"))),
        ended(C2, "r2", Some((MAIN, "r0"))),
        Record::Undeliverable { id: "r2".into(), reason: "gone".into() },
    ])
    .unwrap();
    let state = db.load(10).unwrap();
    assert_eq!(state.sessions.iter().find(|s| s.row.key.as_str() == C1).unwrap().status, StoredStatus::Ended);
    assert_eq!(state.outbox, vec![]);
    // Forgotten: the sessions, their transcripts and tool results, and what they were owed.
    db.apply(&[
        Record::SessionStarted(Box::new(child_row("agent:executor:subagent:3", MAIN, "r0", "r3", "c3"))),
        ended("agent:executor:subagent:3", "r3", Some((MAIN, "r0"))),
        Record::Forgotten { keys: vec![SessionKey::from(C1), SessionKey::from(MAIN)].into_boxed_slice() },
    ])
    .unwrap();
    let state = db.load(10).unwrap();
    let keys: Vec<String> = state.sessions.iter().map(|s| s.row.key.to_string()).collect();
    assert_eq!(keys, vec![C2.to_string(), "agent:executor:subagent:3".to_string()]);
    assert_eq!((db.transcript(&C1.into()).unwrap(), state.outbox), (vec![], vec![]));
}

fn snapshots_are_replaced_whole(fresh: &Fresh) {
    let mut db = fresh.open();
    assert_eq!(db.load_snapshot("pairing").unwrap(), None);
    db.save_snapshot("pairing", 1, "{\"a\":1}").unwrap();
    db.save_snapshot("pairing", 2, "{\"b\":2}").unwrap();
    db.save_snapshot("other", u32::MAX, "[]").unwrap();
    assert_eq!(db.load_snapshot("pairing").unwrap(), Some((2, "{\"b\":2}".to_string())));
    assert_eq!(fresh.open().load_snapshot("other").unwrap(), Some((u32::MAX, "[]".to_string())));
}

#[test]
fn a_url_that_is_not_postgres_is_refused_and_no_url_opens_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(dir.path(), Some("sqlite:///tmp/x.db")).err().unwrap().to_string();
    assert!(err.starts_with("invalid database URL sqlite://…: it must start with postgres://"), "{err}");
    assert!(!dir.path().join(DB_FILE).exists());
    open(dir.path(), None).unwrap().apply(&[Record::StoppedCleanly]).unwrap();
    assert!(dir.path().join(DB_FILE).exists());
    assert_eq!(location(dir.path(), None), dir.path().join(DB_FILE).display().to_string());
    assert_eq!(location(dir.path(), Some("postgres://u:pw12@h/d")), "postgres://u:***@h/d");
}

#[test]
fn a_queued_record_takes_a_small_slot() {
    // A burst of spawns queues one record each until the writer takes them.
    assert_eq!((std::mem::size_of::<Record>(), std::mem::size_of::<Command>()), (40, 40));
}
