//! Spawning is a message: it opens no socket and creates no pairing state, with the
//! WebSocket gateway (hub, store, HTTP listener) running in the same process. This test

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! counts the process's sockets, so it lives alone in its own test binary (tests in one
//! binary share the process and run in parallel).

fn socket_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[actix_rt::test]
async fn a_spawn_opens_no_socket_and_creates_no_pairing_state() {
    let mut harness = hivegate::bench::SpawnHarness::start().await.unwrap();
    let before = socket_count();
    harness.burst(200).await.unwrap();
    assert_eq!(harness.singles(50).await.unwrap().len(), 50);
    assert_eq!(socket_count(), before, "spawning must not open sockets");
    assert_eq!(harness.runtime().stats.pairing_requests(), 0);
    // The WebSocket gateway is running in this process, and spawning touched none of it.
    let pairing = harness.runtime().hub.send(hivegate::hub::CountPairing).await.unwrap();
    assert_eq!(pairing, hivegate::hub::PairingCounts { paired: 0, pending: 0, connections: 0 });
    assert_eq!(harness.runtime().registry.running(), 251);
    harness.shutdown().await.unwrap();
}
