//! `hivegate bench`: in-process spawn latency and a burst of sessions, measured by the
//! same harness as `benches/spawn.rs` (see `crate::bench`).

use clap::Args;

use super::print_json;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Single spawns to time.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    spawns: u64,
    /// Sessions in the burst.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    burst: u64,
    /// Paired-node handshakes over loopback WebSocket to time (0 skips them).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    handshakes: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let json = args.json;
    let report = crate::bench::run(args.spawns as usize, args.burst as usize, args.handshakes as usize, |step| {
        if !json {
            eprintln!("bench: {step}");
        }
    })
    .await?;
    if json {
        print_json(&report)?;
        return Ok(0);
    }
    let s = &report.spawn_us;
    println!("in-process spawn ({} samples, request -> child running -> ack):", s.samples);
    println!("  p50 {:.2} µs   p99 {:.2} µs   max {:.1} µs", s.p50, s.p99, s.max);
    println!(
        "burst of {} sessions: {:.1} ms ({:.2} µs per spawn)",
        report.burst_sessions, report.burst_ms, report.burst_us_per_spawn
    );
    if let Some(bytes) = report.rss_bytes_per_session {
        println!("memory: {:.0} bytes RSS per session", bytes);
    }
    if let Some(h) = &report.handshake_us {
        println!(
            "paired-node handshake ({} samples, TCP + upgrade + challenge + Ed25519 verify + hello-ok):",
            h.samples
        );
        println!("  p50 {:.1} µs   p99 {:.1} µs   max {:.1} µs", h.p50, h.p99, h.max);
    }
    Ok(0)
}
