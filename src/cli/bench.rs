//! `hivegate bench`: spawn latency, bursts, trees, memory, handshakes and spawns under
//! load, each beside raw actix doing the same (the floor), measured by the harnesses
//! the criterion benches use (see `crate::bench`). Progress goes to stderr.

use clap::Args;

use super::print_json;
use crate::bench::{BenchReport, Options, BIG_BURST, BURST, CONCURRENT_HANDSHAKES, STREAMS, TREE};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Single spawns to time (the floor times as many).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    spawns: u64,
    /// Sequential paired-node handshakes over loopback WebSocket to time (the floor times
    /// as many); 0 skips every handshake figure, the 1,000 at once included.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    handshakes: u64,
    /// Skip spawns under load (1,000 sessions streaming from a loopback provider).
    #[arg(long)]
    no_load: bool,
    /// Skip the 100,000-session burst (memory is then measured on the 10,000 one).
    #[arg(long)]
    no_big_burst: bool,
    /// Exit 1 when a target of the scale issue is missed (the report says which).
    #[arg(long)]
    check: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let options = Options {
        spawns: args.spawns as usize,
        handshakes: args.handshakes as usize,
        load: !args.no_load,
        big_burst: !args.no_big_burst,
    };
    let report = crate::bench::run(options, |step| eprintln!("bench: {step}")).await?;
    let missed = report.targets.iter().filter(|t| !t.met).count();
    if args.json {
        print_json(&report)?;
    } else {
        print_human(&report);
    }
    if missed > 0 {
        eprintln!("bench: {missed} of {} targets missed", report.targets.len());
    }
    Ok(if args.check && missed > 0 { 1 } else { 0 })
}

fn print_human(r: &BenchReport) {
    let f = &r.floor;
    outln!("{} session threads; the floor is raw actix doing the same work in this run\n", r.threads);
    outln!("{:<58} {:>12} {:>12} {:>7}", "", "hivegate", "floor", "ratio");
    let row = |what: &str, value: f64, floor: Option<f64>, unit: &str| match floor {
        Some(fl) => outln!("{what:<58} {:>9.2} {unit:<2} {:>9.2} {unit:<2} {:>6.2}×", value, fl, value / fl),
        None => outln!("{what:<58} {:>9.2} {unit:<2}", value),
    };
    row(&format!("spawn p50 ({} samples)", r.spawn.samples), r.spawn.p50_us, Some(f.spawn_p50_us), "µs");
    row("spawn p99", r.spawn.p99_us, Some(f.spawn_p99_us), "µs");
    row(&format!("burst of {BURST}"), r.burst.sessions10k_ms, Some(f.burst10k_ms), "ms");
    if let Some(ms) = r.burst.sessions100k_ms {
        row(&format!("burst of {BIG_BURST}"), ms, None, "ms");
    }
    row(&format!("tree of {TREE}, depth 1"), r.tree.depth1_ms, None, "ms");
    row(&format!("tree of {TREE}, depth 5"), r.tree.depth5_ms, None, "ms");
    if let Some(bytes) = r.memory.bytes_per_session {
        row(&format!("memory per parked session (RSS over {})", r.memory.sessions), bytes, f.bytes_per_session, "B");
    }
    if let Some(bytes) = r.memory.at_burst_end_bytes_per_session {
        row("  read at the burst's end (store backlog included)", bytes, None, "B");
    }
    if let Some(h) = &r.handshake {
        row(&format!("paired-node handshake p50 ({} samples)", h.samples), h.p50_us, f.handshake_p50_us, "µs");
        row("paired-node handshake p99", h.p99_us, f.handshake_p99_us, "µs");
        row(
            &format!("{CONCURRENT_HANDSHAKES} handshakes at once"),
            h.concurrent1000_ms,
            f.handshake_concurrent1000_ms,
            "ms",
        );
    }
    if let Some(l) = &r.under_load {
        row("spawn p99, idle before the streams", l.idle_before_p99_us, None, "µs");
        row("spawn p99, idle after them", l.idle_after_p99_us, None, "µs");
        row(
            &format!("spawn p99, {} sessions streaming (of {STREAMS})", l.streaming_sessions),
            l.spawn_p99_us,
            None,
            "µs",
        );
    }
    outln!("\ntargets:");
    for t in &r.targets {
        let mark = if t.met { "ok  " } else { "MISS" };
        outln!("  {mark} {:<32} {:>10.2} {:<5} (at most {})", t.name, t.value, t.unit, t.limit);
    }
}
