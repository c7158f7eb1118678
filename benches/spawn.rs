//! In-process spawn latency, measured end to end: spawn request → limits and
//! attenuation → child actor started on the parent's arbiter with its capability → the
//! child's first model call → ack, timed on the parent's own session thread. Plus a
//! burst of 10,000 sessions sent at once.
//!
//!     cargo bench --bench spawn
//!
//! The harness (`hivegate::bench`) is shared with `hivegate bench`, which prints p50/p99.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hivegate::bench::SpawnHarness;

fn spawn(c: &mut Criterion) {
    // As the binary runs (see `hivegate::memory`).
    hivegate::memory::small_pages();
    let system = actix_rt::System::new();
    let mut harness = system.block_on(SpawnHarness::start()).expect("start the spawn harness");

    let mut group = c.benchmark_group("spawn");
    group.throughput(Throughput::Elements(1));
    group.bench_function("in_process", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                // Runs of at most 10,000 keep the parent's child count (and memory) bounded.
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let run = left.min(10_000);
                    total += harness
                        .singles(run)
                        .await
                        .unwrap()
                        .iter()
                        .map(|&ns| Duration::from_nanos(ns))
                        .sum::<Duration>();
                    harness.reset().await.unwrap();
                    left -= run;
                }
                total
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("spawn");
    group.sample_size(10).throughput(Throughput::Elements(10_000));
    group.bench_function("burst_10k", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += harness.burst(10_000).await.unwrap();
                    harness.reset().await.unwrap();
                }
                total
            })
        })
    });
    group.finish();
    system.block_on(harness.shutdown()).unwrap();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
