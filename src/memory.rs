//! The process's memory: mimalloc as the allocator, on small pages.
//!
//! mimalloc: a session's life is many small allocations made and freed on one thread,
//! which glibc's malloc spends a fifth of a spawn on (perf). Every binary, test and
//! bench linking this crate uses it.
//!
//! Transparent huge pages are off for the gateway process ([`small_pages`], first thing
//! in `main`). mimalloc asks the kernel for huge pages on its arenas, and a huge page
//! is zeroed whole on its first touch and stays resident while any session on it
//! lives. On the project's 2-core VM, where a huge page's first touch costs about five
//! times its small pages, `hivegate bench` timed a 100,000-session burst at 1.2–1.5 s
//! with them and 0.64–0.76 s without (the kernel's time in the burst went from 1.2–1.4 s
//! to 0.3–0.4 s), and a parked session read 1,251–1,294 B with them, 1,219–1,222 B
//! without. Spawns while 1,000 sessions stream may pay for it in TLB misses: their p99
//! read 23–36 µs without them against 15–24 µs with them in five runs of 3f11258, and
//! 25–37 against 21–32 µs in four runs each once [`give_back`] was in place. Commands the process starts
//! (`exec`, MCP servers) inherit the setting, which survives `fork` and `exec`. Giving
//! it back would take a `pre_exec` hook, and a hook makes the standard library fork the
//! whole gateway instead of using `posix_spawn`: copying a large gateway's page tables
//! on the session thread, tens of milliseconds at a few hundred megabytes, for every
//! `exec` call.
//!
//! Memory another thread frees (the store thread drops the spawns' journal records a
//! session thread allocated) goes back to the allocating thread's heap, and mimalloc
//! only looks at it when that thread allocates again. A session thread whose sessions
//! all sit parked on their model calls allocates nothing, so it would hold what a burst
//! freed for ever. Each gateway shard therefore calls [`give_back`] on its thread every
//! [`GIVE_BACK_EVERY`]. With the store's records freed while the spawning thread sat
//! idle, a parked session's resident memory read about 2,000 B without it and 1,200 B
//! with it, a quarter to half a second after the records went. Calls took 3–360 µs in
//! a bench run, all but one: the one after a tree of 100,000 sessions ended took 29 ms, the kernel
//! taking back about 100 MB, which mimalloc otherwise does on that thread's next
//! allocation of a fresh page once its purge delay has passed. `tests/memory.rs` proves
//! what the call does to the allocator; `tests/shards.rs` that every shard makes it
//! (each counts its calls in [`crate::gateway::Stats::give_backs`]).

use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often a session thread hands the allocator what others freed for it.
pub const GIVE_BACK_EVERY: Duration = Duration::from_secs(1);

/// Collect what other threads freed into this thread's heap and return empty pages,
/// so the allocator can give them to the system after its purge delay. Not forced:
/// it does what mimalloc does itself every so many allocations, for a thread that is
/// not allocating.
pub fn give_back() {
    // SAFETY: `mi_collect` takes no pointer; it collects the calling thread's heap and
    // runs mimalloc's process-wide purge of expired ranges, under mimalloc's own locks.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// The process's resident set size (`VmRSS`, whatever the page size), from /proc
/// (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Turn transparent huge pages off for this process (Linux's `PR_SET_THP_DISABLE`,
/// which is what mimalloc's own `allow_thp = 0` does at its start, done here because
/// mimalloc starts before `main` can set its options). Applies to every page the
/// process touches from now on, whatever was asked of the kernel before. Whether it
/// took; elsewhere than Linux, nothing to do.
pub fn small_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain syscall with integer arguments; it touches no memory of ours.
        unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What `/proc/<pid>/status` says of transparent huge pages for that process.
    fn thp_enabled(status: &str) -> &str {
        status.lines().find_map(|line| line.strip_prefix("THP_enabled:")).unwrap_or("(missing)").trim()
    }

    #[tokio::test]
    async fn the_process_and_what_it_runs_are_on_small_pages() {
        assert!(small_pages());
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert_eq!(thp_enabled(&own), "0");
        // Inherited through fork and exec (see the module's doc for why it stays so).
        let child = tokio::process::Command::new("cat").arg("/proc/self/status").output().await.unwrap();
        assert_eq!(thp_enabled(&String::from_utf8_lossy(&child.stdout)), "0");
    }
}
