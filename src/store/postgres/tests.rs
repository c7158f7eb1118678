//! The Postgres backend's own machinery, on a real server ([`crate::store::testdb`];
//! each test skips with a message when there is none): migrations (again, at once,
//! newer than the binary), a lost connection under the writer, and passwords kept out
//! of everything shown. Its behaviour is tested with SQLite's in `store/tests.rs`.

use super::migrate::{self, Migration, MIGRATIONS};
use super::*;
use crate::store::testdb::TestDatabase;
use crate::store::tests::{main_row, messages, user, MAIN};
use crate::store::Store;

fn schema_versions(db: &TestDatabase) -> Vec<i64> {
    let mut client = db.client().unwrap();
    let rows = client.query("SELECT version FROM schema_migrations ORDER BY version", &[]).unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn migrations_applied_twice_are_a_no_op() {
    let Some(db) = TestDatabase::create("migrations_applied_twice_are_a_no_op") else { return };
    let mut first = Postgres::connect(&db.url).unwrap();
    first.save_snapshot("pairing", 1, "{}").unwrap();
    let mut client = db.client().unwrap();
    assert_eq!(migrate::migrate(&mut client, "test").unwrap(), Vec::<i64>::new());
    drop(Postgres::connect(&db.url).unwrap());
    assert_eq!(schema_versions(&db), (1..=migrate::latest()).collect::<Vec<_>>());
    assert_eq!(first.load_snapshot("pairing").unwrap(), Some((1, "{}".to_string())));
}

#[test]
fn processes_migrating_at_once_all_succeed_and_each_migration_is_applied_once() {
    let Some(db) = TestDatabase::create("processes_migrating_at_once") else { return };
    let url = db.url.clone();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Postgres::connect(&url).map(|_| ()).map_err(|e| e.to_string()))
        })
        .collect();
    for start in starts {
        start.join().unwrap().unwrap();
    }
    assert_eq!(schema_versions(&db), (1..=migrate::latest()).collect::<Vec<_>>());
}

#[test]
fn a_new_migration_is_one_more_line_and_a_database_newer_than_the_binary_is_refused() {
    let Some(db) = TestDatabase::create("a_database_newer_than_the_binary") else { return };
    drop(Postgres::connect(&db.url).unwrap());
    let mut with_next = MIGRATIONS.to_vec();
    let next = migrate::latest() + 1;
    with_next.push(Migration { version: next, name: "9999_test", sql: "ALTER TABLE sessions ADD COLUMN extra TEXT;" });
    let mut client = db.client().unwrap();
    assert_eq!(migrate::migrate_to(&mut client, "test", &with_next).unwrap(), vec![next]);
    client.batch_execute("UPDATE sessions SET extra = 'x'").unwrap();
    let err = Postgres::connect(&db.url).err().unwrap().to_string();
    let shown = crate::store::redact(&db.url);
    assert_eq!(
        err,
        format!(
            "the state database {shown} has schema version {next}, newer than this hivegate understands ({}); upgrade hivegate",
            migrate::latest()
        )
    );
}

/// Terminate every connection this hivegate has to `db` (as a server restart would).
fn terminate_hivegate_connections(db: &TestDatabase) -> usize {
    let mut admin = db.admin().unwrap();
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hivegate'",
            &[&db.name],
        )
        .unwrap();
    rows.len()
}

#[test]
fn a_lost_connection_is_transient_and_replaced_by_the_next_call() {
    let Some(db) = TestDatabase::create("a_lost_connection_is_transient") else { return };
    // What a lost connection looks like to the client, however the timing falls.
    let mut client = db.client().unwrap();
    client.batch_execute("SET application_name = 'hivegate'").unwrap();
    assert_eq!(terminate_hivegate_connections(&db), 1);
    let lost = client.batch_execute("SELECT 1").err().unwrap();
    assert!(is_transient(&lost) && StoreError::Postgres(lost).is_transient());
    // The backend replaces a connection lost since its last call, and carries on.
    let mut pg = Postgres::connect(&db.url).unwrap();
    pg.apply(&[Record::SessionStarted(Box::new(main_row(MAIN, "r0")))]).unwrap();
    assert_eq!(terminate_hivegate_connections(&db), 1);
    pg.apply(&[messages(MAIN, "r0", 0, &["a"], vec![])]).unwrap();
    assert_eq!(terminate_hivegate_connections(&db), 1);
    assert_eq!(pg.transcript(&MAIN.into()).unwrap(), vec![user("a")]);
}

#[test]
fn the_writer_keeps_its_records_while_the_database_is_unreachable_and_loses_nothing() {
    let Some(db) = TestDatabase::create("the_writer_survives") else { return };
    let store = Store::start(Postgres::connect(&db.url).unwrap(), crate::store::redact(&db.url)).unwrap();
    let journal = store.journal();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    journal.record(Record::SessionStarted(Box::new(main_row(MAIN, "r0"))));
    let mut expected = Vec::new();
    let mut admin = db.admin().unwrap();
    let allow = |admin: &mut postgres::Client, allowed: bool| {
        admin.batch_execute(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {allowed}", db.name)).unwrap();
    };
    for round in 0..3u32 {
        // As during a server restart: the writer's connection is dropped, and no new one
        // can be made for a while.
        allow(&mut admin, false);
        assert_eq!(terminate_hivegate_connections(&db), 1, "round {round}");
        for i in 0..50u32 {
            let seq = round * 50 + i;
            expected.push(user(&format!("m{seq}")));
            journal.record(messages(MAIN, "r0", seq, &[&format!("m{seq}")], vec![]));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        allow(&mut admin, true);
        let flushed =
            runtime.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(20), store.flush()).await });
        assert!(flushed.is_ok(), "round {round}: the writer did not commit within 20 s of the database coming back");
    }
    assert_eq!(runtime.block_on(store.transcript(MAIN.into())).unwrap(), expected);
    let fresh = Postgres::connect(&db.url).unwrap();
    assert_eq!(fresh.transcript(&MAIN.into()).unwrap(), expected);
}

#[test]
fn a_password_never_shows_in_errors_or_debug() {
    let secret = "hunter2-sekrit";
    // Nothing listens on port 1: connecting fails, and says where it tried.
    let url = format!("postgres://hivegate:{secret}@127.0.0.1:1/postgres?connect_timeout=2");
    let err = Postgres::connect(&url).err().unwrap();
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(
        shown.starts_with(
            "cannot connect to the state database postgres://hivegate:***@127.0.0.1:1/postgres?connect_timeout=2: error connecting to server: Connection refused"
        ),
        "{shown}"
    );
    assert!(err.is_transient());
    for text in [&shown, &debug] {
        assert!(!text.contains(secret), "{text}");
    }
    let Some(db) = TestDatabase::create("a_password_never_shows") else { return };
    // The test server trusts loopback, so a password is accepted and ignored.
    let with_password = db.url.replacen("://hivegate@", &format!("://hivegate:{secret}@"), 1);
    let mut pg = Postgres::connect(&with_password).unwrap();
    assert!(!pg.shown().contains(secret) && pg.shown().contains(":***@"), "{}", pg.shown());
    pg.save_snapshot("pairing", 1, "{}").unwrap();
    let mut client = db.client().unwrap();
    client.batch_execute("DROP TABLE snapshots").unwrap();
    let err = pg.save_snapshot("pairing", 2, "{}").err().unwrap();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(err.to_string().contains("relation \"snapshots\" does not exist (SQLSTATE 42P01)"), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn nul_in_free_text_is_stored_as_a_replacement_character() {
    let Some(db) = TestDatabase::create("nul_in_free_text") else { return };
    let mut pg = Postgres::connect(&db.url).unwrap();
    let mut row = main_row(MAIN, "r0");
    row.run.task = "a\0b".into();
    pg.apply(&[
        Record::SessionStarted(Box::new(row)),
        messages(MAIN, "r0", 0, &["c\0d"], vec![]),
        Record::ToolResult(Box::new(ToolResultRow { key: MAIN.into(), call_id: "t".into(), content: "e\0f".into() })),
    ])
    .unwrap();
    let state = pg.load(10).unwrap();
    assert_eq!(state.sessions[0].row.run.task, "a\u{FFFD}b");
    assert_eq!(pg.transcript(&MAIN.into()).unwrap(), vec![user("c\0d")]);
    assert_eq!(state.tool_results[&SessionKey::from(MAIN)]["t"], "e\u{FFFD}f");
}
