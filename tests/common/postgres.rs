//! TEMPORARY (replaced by the pg branch's helper at merge).
use std::time::Duration;

pub struct TestDatabase {
    pub url: String,
}

impl TestDatabase {
    pub async fn create(what: &str) -> Option<TestDatabase> {
        let Ok(base) = std::env::var("HIVEGATE_TEST_DATABASE_URL") else {
            eprintln!("skipping {what}: no HIVEGATE_TEST_DATABASE_URL");
            return None;
        };
        let name = format!("hg_{}_{}", std::process::id(), rand_suffix());
        let base2 = base.clone();
        let name2 = name.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&base2, postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {name2}")).unwrap();
        })
        .await
        .unwrap();
        let _ = Duration::ZERO;
        let url = match base.rfind('/') {
            Some(at) => format!("{}/{name}", &base[..at]),
            None => base,
        };
        Some(TestDatabase { url })
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    h.finish() % 1_000_000_000
}
