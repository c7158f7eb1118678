//! T0 (the parent's session gets its `sessions_spawn` answer) → each child's first model
//! request arriving at a loopback provider, for trees of 1, 5 and 8 children, and how
//! many connections the children had to open. Over TLS (h2 by ALPN, a certificate made
//! at start and trusted through the provider's `ca`), streamed as real providers are
//! asked; then plain HTTP/1.1 for comparison.
//!
//!     cargo bench --bench first_request
//!
//! The harness is `hivegate::bench::connections`. Criterion times T0 → the last child's
//! first request per tree; the medians printed first are over 30 trees per case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use hivegate::bench::connections::{measure, Setup, Transport};

const CHILDREN: [usize; 3] = [1, 5, 8];

fn print_medians(system: &actix_rt::SystemRunner) {
    for transport in [Transport::Tls, Transport::Plain] {
        for children in CHILDREN {
            let setup = Setup { transport, stream: true, children, trees: 30 };
            let figures = system.block_on(measure(setup)).expect("measure");
            let version = figures.trees.first().map(|t| t.version.clone()).unwrap_or_default();
            println!(
                "{transport:?} {version} N={children}: T0→first request median {:?}, T0→last child's first request median {:?}, connections opened for children median {}, connections per tree median {}",
                figures.median_first_request(),
                figures.median_last_first_request(),
                figures.median_opened_for_children(),
                figures.median_connections(),
            );
        }
    }
}

fn first_request(c: &mut Criterion) {
    // As the binary runs (see `hivegate::memory`).
    hivegate::memory::small_pages();
    let system = actix_rt::System::new();
    print_medians(&system);
    let mut group = c.benchmark_group("first_request");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for children in CHILDREN {
        group.bench_function(format!("tls_h2_last_of_{children}"), |b| {
            b.iter_custom(|iters| {
                let setup = Setup { transport: Transport::Tls, stream: true, children, trees: iters as usize };
                let figures = system.block_on(measure(setup)).expect("measure");
                figures.trees.iter().filter_map(|t| t.first_requests.iter().max()).sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, first_request);
criterion_main!(benches);
