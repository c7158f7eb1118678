//! What `hivegate::memory::give_back` is for, on the real allocator: memory a thread
//! allocated and another thread freed stays resident while the first thread sits idle,
//! and goes back to the system once it calls `give_back` (what each gateway shard does
//! every second, for sessions parked on their model calls). Alone in its binary, so the
//! process's resident size moves only with what this test does.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Allocated by the idle thread in small blocks, as a burst's journal records are.
const BLOCKS: usize = 200_000;
const BLOCK: usize = 256;
const ALLOCATED: u64 = (BLOCKS * BLOCK) as u64;

fn rss() -> u64 {
    hivegate::memory::resident_bytes().expect("a VmRSS line in /proc/self/status")
}

#[test]
fn memory_freed_for_an_idle_thread_goes_back_once_it_gives_it_back() {
    assert!(hivegate::memory::small_pages());
    let baseline = rss();
    let (blocks_out, blocks) = mpsc::channel::<Vec<Box<[u8; BLOCK]>>>();
    let (ask, asked) = mpsc::channel::<()>();
    let (answer, answered) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let made: Vec<Box<[u8; BLOCK]>> = (0..BLOCKS).map(|i| Box::new([i as u8; BLOCK])).collect();
        blocks_out.send(made).expect("the test waits for the blocks");
        // Idle from here on: it allocates nothing until asked to give back.
        for () in asked {
            hivegate::memory::give_back();
            answer.send(()).expect("the test waits for the answer");
        }
    });
    let made = blocks.recv_timeout(Duration::from_secs(30)).expect("the blocks");
    assert!(rss() >= baseline + ALLOCATED * 9 / 10, "the blocks are resident");
    drop(made);

    // Past mimalloc's purge delay (a second), the freed blocks are still held for
    // the idle thread that allocated them: the problem `give_back` is for. (Should a
    // later mimalloc give them back by itself, this fails, and `give_back` may no
    // longer be needed.)
    std::thread::sleep(Duration::from_millis(1_500));
    let held = rss();
    assert!(held >= baseline + ALLOCATED / 2, "freed for an idle thread: {held} resident, {baseline} before");

    // Each give_back collects them; the allocator returns the pages after its delay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = held;
    while now > baseline + ALLOCATED / 10 {
        assert!(Instant::now() < deadline, "still {now} resident 10 s after give_back began ({baseline} before)");
        ask.send(()).expect("the owner thread runs");
        answered.recv_timeout(Duration::from_secs(10)).expect("the owner thread answers");
        std::thread::sleep(Duration::from_millis(250));
        now = rss();
    }
    drop(ask);
    owner.join().expect("the owner thread ends");
}
