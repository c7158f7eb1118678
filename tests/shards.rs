//! Sessions on every core: each main session's tree lives on the shard its key hashes
//! to, on that shard's thread, and messages from outside reach it there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hivegate::agent::Agents;
use hivegate::bench::spawn::{add_agents, bench_config};
use hivegate::gateway::shards::home;
use hivegate::gateway::{Cleanup, Kill, Spawn, SpawnReply, SpawnRequest, StartMain};
use hivegate::keys::SessionKey;
use hivegate::model::{ChatRequest, ChatResponse, Message, ModelClient, ModelError, ModelRef};
use hivegate::runtime::Runtime;
use tokio::sync::mpsc;

/// Notes which thread each session's model call was made on, and never answers.
struct Threads {
    seen: Arc<Mutex<HashMap<String, ThreadId>>>,
    calls: mpsc::UnboundedSender<()>,
}

impl ModelClient for Threads {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        let Some(Message::System { content }) = request.messages.first() else { panic!("no system prompt") };
        let key = content.split("You are session ").nth(1).unwrap().split(' ').next().unwrap().to_string();
        self.seen.lock().unwrap().insert(key, std::thread::current().id());
        self.calls.send(()).unwrap();
        futures_util::future::pending().boxed()
    }

    fn check_model(&self, _: &ModelRef) -> Result<(), ModelError> {
        Ok(())
    }
}

#[actix_rt::test]
async fn each_tree_runs_on_its_main_sessions_shard_thread_and_outside_messages_reach_it() {
    const THREADS: usize = 3;
    let mut agents = Agents::default();
    add_agents(&mut agents).unwrap();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let (calls, mut called) = mpsc::unbounded_channel();
    let mut config = bench_config();
    config.threads = THREADS;
    let model = Threads { seen: seen.clone(), calls };
    let runtime = Runtime::start_with_model(&config, agents, Arc::new(model)).await.unwrap();
    assert_eq!((runtime.session_threads().len(), runtime.gateway.shards().len()), (THREADS, THREADS));

    let mut roots = Vec::new();
    for i in 0..12 {
        let key = SessionKey::from(format!("agent:bench-parent:k{i}").as_str());
        let start = StartMain { session_key: Some(key.clone()), ..StartMain::new("bench-parent", "spawn") };
        runtime.gateway.send(start).await.unwrap().unwrap();
        called.recv().await.unwrap();
        let shard = runtime.registry.shard_of(&key).unwrap();
        assert_eq!(usize::from(shard), home(&key, THREADS), "{key} starts on its home shard");
        // A spawn sent from outside is routed by its parent, and the child joins the tree.
        let parent = runtime.registry.get(&key).unwrap().capability.clone();
        let request = SpawnRequest {
            task: "work".into(),
            agent_id: Some("bench-node".into()),
            cleanup: Some(Cleanup::Keep),
            ..SpawnRequest::default()
        };
        let spawn =
            Spawn { parent, request, sent_at: std::time::Instant::now(), history: None, call_id: None, trace: None };
        let SpawnReply::Accepted { child_session_key: child, .. } = runtime.gateway.send(spawn).await.unwrap() else {
            panic!("spawn refused")
        };
        called.recv().await.unwrap();
        assert_eq!(runtime.registry.shard_of(&child), Some(shard), "{child} is on its parent's shard");
        roots.push((key, child, shard));
    }

    // A tree runs on one thread, and each shard on its own.
    let seen = seen.lock().unwrap().clone();
    let mut thread_of_shard: HashMap<u16, ThreadId> = HashMap::new();
    for (root, child, shard) in &roots {
        let thread = seen[root.as_str()];
        assert_eq!(seen[child.as_str()], thread, "{child} runs on its parent's thread");
        assert_eq!(*thread_of_shard.entry(*shard).or_insert(thread), thread, "shard {shard} is one thread");
    }
    let threads: HashSet<ThreadId> = thread_of_shard.values().copied().collect();
    assert_eq!(threads.len(), thread_of_shard.len(), "shards do not share a thread");
    assert!(thread_of_shard.len() > 1, "twelve main sessions all hashed to one shard: {thread_of_shard:?}");
    assert!(!threads.contains(&std::thread::current().id()), "no session runs on the caller's thread");

    // A kill from outside reaches every tree, whichever shard owns it.
    for (root, _, _) in &roots {
        let killed = runtime.gateway.send(Kill { caller: None, target: root.clone() }).await.unwrap().unwrap();
        assert_eq!(killed, 2, "{root} and its child");
    }
    assert_eq!(runtime.registry.running(), 0);
    assert!(runtime.stats.wait_all_stopped(std::time::Duration::from_secs(10)).await);
    runtime.shutdown().await.unwrap();
}

/// Each shard gives back what other threads freed for its thread (`memory::give_back`,
/// whose effect on the allocator `tests/memory.rs` proves): the timer that does it runs
/// on every shard, not only on some. (That each shard has a thread of its own is the
/// test above.)
#[actix_rt::test]
async fn every_shard_gives_freed_memory_back() {
    const THREADS: usize = 3;
    let mut config = bench_config();
    config.threads = THREADS;
    let (model, _calls) = hivegate::bench::spawn::ParkedModel::new();
    let runtime = Runtime::start_with_model(&config, Agents::default(), Arc::new(model)).await.unwrap();
    let deadline = std::time::Instant::now() + hivegate::memory::GIVE_BACK_EVERY * 10;
    let mut counts = runtime.stats.give_backs();
    while !(counts.len() == THREADS && counts.iter().all(|&n| n >= 2)) {
        assert!(std::time::Instant::now() < deadline, "not every shard gave memory back twice: {counts:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        counts = runtime.stats.give_backs();
    }
    runtime.shutdown().await.unwrap();
}
