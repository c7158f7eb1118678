//! A fresh Postgres database for each test, on the server the tests share.
//!
//! The server is `HIVEGATE_TEST_DATABASE_URL` when that is set, else the one
//! `scripts/postgres start` runs (started once per test process, bounded). When there
//! is none, a test that asked for a database prints why it skips and gets `None`;
//! with `HIVEGATE_REQUIRE_POSTGRES=1` (CI) it fails instead. Each [`TestDatabase`] is a
//! database of its own (`hg_…`), so tests run in parallel, dropped when it goes.
//!
//! Shared by the library's unit tests (`crate::store::testdb`) and the integration
//! tests (`tests/common/postgres.rs` includes this file), so it uses only `std`, the
//! `postgres` crate and `tempfile`.

use std::io::Read as _;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server's URL, when the tests are given one.
pub const URL_ENV: &str = "HIVEGATE_TEST_DATABASE_URL";
/// `1`: a test that cannot have a database fails rather than skips.
pub const REQUIRE_ENV: &str = "HIVEGATE_REQUIRE_POSTGRES";
/// How long `scripts/postgres start` may take (the first one may install PostgreSQL).
const START_WAIT: Duration = Duration::from_secs(600);

/// A database of its own for one test, dropped with this value.
pub struct TestDatabase {
    /// Its URL (the server's, with this database's name).
    pub url: String,
    /// Its name.
    pub name: String,
    /// The server's URL, for dropping it.
    server: String,
}

impl TestDatabase {
    /// A new, empty database for `test`; `None` (having said why) when there is no
    /// server and none is required.
    pub fn create(test: &str) -> Option<TestDatabase> {
        match off_runtime(|| server().and_then(|server| create_on(&server))) {
            Ok(db) => Some(db),
            Err(why) if required() => panic!("{test} needs Postgres ({REQUIRE_ENV}=1) and has none: {why}"),
            Err(why) => {
                eprintln!(
                    "skipping {test}: no Postgres ({why}); run scripts/postgres start or set {URL_ENV}, and {REQUIRE_ENV}=1 to fail instead"
                );
                None
            }
        }
    }

    /// An administrator's connection to the server (not to this database).
    pub fn admin(&self) -> Result<postgres::Client, String> {
        connect(&self.server)
    }

    /// A connection to this database.
    pub fn client(&self) -> Result<postgres::Client, String> {
        connect(&self.url)
    }

    /// `f` with a connection to this database, on a thread of its own: the client
    /// cannot be used (nor dropped) on a thread inside an async runtime, such as an
    /// `#[actix_rt::test]`'s.
    pub fn with_client<T: Send>(&self, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
        off_runtime(|| match self.client() {
            Ok(mut client) => f(&mut client),
            Err(e) => panic!("{e}"),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (&self.server, &self.name);
        off_runtime(|| {
            if let Ok(mut admin) = connect(server) {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        });
    }
}

/// `f` on a thread of its own (the blocking client refuses to run inside an async
/// runtime).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// The server's URL: found once per process.
fn server() -> Result<String, String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(URL_ENV) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start_script(),
        })
        .clone()
}

/// `scripts/postgres start`, bounded: the URL it prints.
fn start_script() -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");
    let log = tempfile::tempfile().map_err(|e| format!("cannot make a temporary file: {e}"))?;
    let mut out = tempfile::tempfile().map_err(|e| format!("cannot make a temporary file: {e}"))?;
    let mut err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(script)
        .arg("start")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let deadline = Instant::now() + START_WAIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{script} start did not finish within {START_WAIT:?}"));
            }
            Err(e) => return Err(format!("cannot wait for {script}: {e}")),
        }
    };
    let read = |file: &mut std::fs::File| {
        use std::io::Seek as _;
        let mut text = String::new();
        let _ = file.seek(std::io::SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text));
        text
    };
    let (stdout, stderr) = (read(&mut out), read(&mut err));
    if !status.success() {
        let said = stderr.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
        return Err(format!("{script} start failed ({status}): {said}"));
    }
    let url = stdout.trim();
    if !url.starts_with("postgres://") {
        return Err(format!("{script} start printed {url:?}, not a postgres:// URL"));
    }
    Ok(url.to_string())
}

fn create_on(server: &str) -> Result<TestDatabase, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("hg_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut admin = connect(server)?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .map_err(|e| format!("cannot create a database: {e:?}"))?;
    Ok(TestDatabase { url: database_url(server, &name), name, server: server.to_string() })
}

/// A connection, bounded in time.
fn connect(url: &str) -> Result<postgres::Client, String> {
    let mut config = postgres::Config::from_str(url).map_err(|e| format!("bad test database URL: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.connect(postgres::NoTls).map_err(|e| format!("cannot connect to the test server: {e:?}"))
}

/// `server` with its database name replaced by `name` (its query kept).
pub fn database_url(server: &str, name: &str) -> String {
    let (main, query) = match server.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (server, None),
    };
    let authority_from = main.find("://").map_or(0, |at| at + 3);
    let host_from = main[authority_from..].rfind('@').map_or(authority_from, |at| authority_from + at + 1);
    let host_end = main[host_from..].find('/').map_or(main.len(), |at| host_from + at);
    let mut url = format!("{}/{name}", &main[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}
