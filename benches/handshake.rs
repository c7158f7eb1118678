//! A paired node's full handshake on loopback: TCP connect, WebSocket upgrade,
//! `connect.challenge`, v3-signed `connect` with the device token, Ed25519 verify and
//! token check in the gateway, `hello-ok`.
//!
//!     cargo bench --bench handshake
//!
//! The harness (`hivegate::bench::handshake`) is shared with `hivegate bench`, which
//! prints p50/p99 (`--handshakes N` of them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hivegate::bench::handshake::HandshakeHarness;

fn handshake(c: &mut Criterion) {
    // As the binary runs (see `hivegate::memory`).
    hivegate::memory::small_pages();
    let system = actix_rt::System::new();
    let harness = system.block_on(HandshakeHarness::start()).expect("start the handshake harness");
    c.bench_function("handshake/device_token", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += harness.handshake().await.unwrap();
                }
                total
            })
        })
    });
    system.block_on(harness.shutdown()).unwrap();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
