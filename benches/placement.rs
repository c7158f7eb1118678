//! Spawn → the child's first model request with the child placed on a worker against in
//! the gateway's process, in one run (`hivegate::bench::placement`):
//!
//!     cargo bench --bench placement
//!
//! Needs Postgres: `HIVEGATE_TEST_DATABASE_URL`, else the project's own
//! `scripts/postgres start`. Each run measures in a fresh database it makes there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

const TREES: usize = 200;

fn main() {
    // As the binary runs (see `hivegate::memory`).
    hivegate::memory::small_pages();
    let base = match std::env::var("HIVEGATE_TEST_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres");
            let out = std::process::Command::new(script).arg("start").output().expect("scripts/postgres runs");
            assert!(out.status.success(), "scripts/postgres start: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    };
    let name = format!("hg_bench_{}", std::process::id());
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("the database answers");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let url = match base.rfind('/') {
        Some(at) => format!("{}/{name}", &base[..at]),
        None => panic!("no database name in {base}"),
    };
    let system = actix_rt::System::new();
    let figures = system.block_on(hivegate::bench::placement::measure(&url, TREES));
    let _ = admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"));
    let figures = figures.expect("measure");
    let (local, worker) = (figures.median_local(), figures.median_worker());
    let p90 = |mut v: Vec<Duration>| {
        v.sort_unstable();
        v.get(v.len() * 9 / 10).copied().unwrap_or_default()
    };
    println!(
        "spawn → first model request over {TREES} trees: local median {local:?} (p90 {:?}), worker median {worker:?} (p90 {:?}), worker/local {:.1}×",
        p90(figures.local.clone()),
        p90(figures.worker.clone()),
        worker.as_secs_f64() / local.as_secs_f64().max(1e-9)
    );
}
