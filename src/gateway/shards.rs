//! The gateway on every core: one [`Gateway`] actor per session thread (a *shard*), each
//! on its own arbiter, all sharing one registry, authority, journal and limits.
//!
//! A tree lives on one shard: a main session starts on the shard its key hashes to
//! ([`home`]), and every session it spawns starts on the same arbiter, so a spawn stays
//! a same-thread message from the parent to its shard and on to the new child. Each
//! session records its shard ([`super::SessionEntry::shard`]); whatever reaches the
//! gateway from outside (the hub, the CLI, tests) goes through a [`GatewayHandle`],
//! which sends it to the shard owning the session or run it names. So each tree's
//! changes happen on one thread in order, as they did when there was one gateway,
//! and the trees of different main sessions run in parallel.
//!
//! What the shards share beyond the registry is here ([`Across`]): run waiters,
//! retention of ended sessions, and the stopping flags. `maxSessions` is checked
//! against the shared running count, so shards spawning at the same instant may pass
//! it by at most one session each.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::dev::{Request, ToEnvelope};
use actix::prelude::*;
use tokio::sync::oneshot;

use super::messages::*;
use super::{Gateway, Recover, Registry};
use crate::keys::{RunId, SessionKey};

/// Which shard a message belongs to.
pub enum Route<'a> {
    /// The shard owning this session's tree (its home shard when it is not registered).
    Session(&'a SessionKey),
    /// The main session of this agent.
    MainOf(&'a str),
    /// The shard owning the session running this run.
    Run(&'a RunId),
    /// Not about one tree: the first shard answers.
    Any,
}

/// A gateway message that names the tree it is about.
pub trait Routed {
    fn route(&self) -> Route<'_>;
}

/// The gateway as the rest of the process sees it: every shard's address and the
/// registry that says which owns what. Cheap to clone.
#[derive(Clone)]
pub struct GatewayHandle {
    shards: Arc<[Addr<Gateway>]>,
    registry: Arc<Registry>,
}

impl GatewayHandle {
    pub fn new(shards: Vec<Addr<Gateway>>, registry: Arc<Registry>) -> GatewayHandle {
        GatewayHandle { shards: shards.into(), registry }
    }

    /// Send `msg` to the shard it belongs to and wait for its answer.
    pub fn send<M>(&self, msg: M) -> Request<Gateway, M>
    where
        M: Message + Routed + Send + 'static,
        M::Result: Send,
        Gateway: Handler<M>,
        <Gateway as Actor>::Context: ToEnvelope<Gateway, M>,
    {
        self.shard_for(msg.route()).send(msg)
    }

    /// Send `msg` to the shard it belongs to, not waiting.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Routed + Send + 'static,
        M::Result: Send,
        Gateway: Handler<M>,
        <Gateway as Actor>::Context: ToEnvelope<Gateway, M>,
    {
        self.shard_for(msg.route()).do_send(msg)
    }

    /// Every shard's address, the first being the one that recovers and answers
    /// messages about no particular tree.
    pub fn shards(&self) -> &[Addr<Gateway>] {
        &self.shards
    }

    /// Stop every shard's trees (see [`Shutdown`]); answers how many runs were
    /// running, over all shards.
    pub async fn shutdown(&self, resume_later: bool) -> usize {
        let mut running = 0;
        for shard in self.shards.iter() {
            running += shard.send(Shutdown { resume_later }).await.unwrap_or(0);
        }
        running
    }

    fn shard_for(&self, route: Route<'_>) -> &Addr<Gateway> {
        let n = self.shards.len();
        let index = match route {
            Route::Session(key) => self.registry.shard_of(key).map_or_else(|| home(key, n), usize::from),
            Route::MainOf(agent_id) => {
                let key = SessionKey::main(agent_id);
                self.registry.shard_of(&key).map_or_else(|| home(&key, n), usize::from)
            }
            Route::Run(run_id) => {
                self.registry.session_of_run(run_id).and_then(|key| self.registry.shard_of(&key)).map_or(0, usize::from)
            }
            Route::Any => 0,
        };
        &self.shards[index.min(n - 1)]
    }
}

/// The shard a new main session starts on: a hash of its key, so every message about
/// one key reaches the same shard even before the session exists.
pub fn home(key: &SessionKey, shards: usize) -> usize {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

/// What every shard shares beyond the registry.
#[derive(Default)]
pub(super) struct Across {
    waiters: Mutex<HashMap<RunId, Vec<oneshot::Sender<RunSummary>>>>,
    /// Ended sessions, oldest first, for bounded retention.
    ended: Mutex<VecDeque<SessionKey>>,
    shutting_down: AtomicBool,
    /// Stopping to resume later: sessions that stop now keep their runs `running`.
    pausing: AtomicBool,
}

impl Across {
    pub(super) fn waiters(&self) -> MutexGuard<'_, HashMap<RunId, Vec<oneshot::Sender<RunSummary>>>> {
        // A shard that panicked while holding the lock left a usable map behind.
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn ended(&self) -> MutexGuard<'_, VecDeque<SessionKey>> {
        self.ended.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(super) fn pausing(&self) -> bool {
        self.pausing.load(Ordering::Acquire)
    }

    pub(super) fn stop(&self, resume_later: bool) {
        if resume_later {
            self.pausing.store(true, Ordering::Release);
        }
        self.shutting_down.store(true, Ordering::Release);
    }
}

impl Gateway {
    /// Shard `shard` of this gateway: the same shared state, its own address.
    pub fn shard(&self, shard: u16) -> Gateway {
        Gateway {
            agents: self.agents.clone(),
            limits: self.limits.clone(),
            authority: self.authority.clone(),
            registry: self.registry.clone(),
            model: self.model.clone(),
            stats: self.stats.clone(),
            shard,
            across: self.across.clone(),
            nodes: self.nodes.clone(),
            pricing: self.pricing.clone(),
            events: self.events.clone(),
            journal: self.journal.clone(),
            store: self.store.clone(),
            shared: None,
            workspace: self.workspace.clone(),
            mcp: self.mcp.clone(),
            remote: self.remote.clone(),
        }
    }

    /// Start `arbiters.len()` shards, one on each arbiter.
    pub fn start_shards(self, arbiters: &[ArbiterHandle]) -> GatewayHandle {
        let registry = self.registry.clone();
        let shards = arbiters
            .iter()
            .enumerate()
            .map(|(i, arbiter)| {
                let shard = self.shard(i as u16);
                Gateway::start_in_arbiter(arbiter, move |_| shard)
            })
            .collect();
        GatewayHandle::new(shards, registry)
    }
}

macro_rules! routed {
    ($($message:ty => |$m:ident| $route:expr;)*) => {
        $(impl Routed for $message {
            fn route(&self) -> Route<'_> {
                let $m = self;
                $route
            }
        })*
    };
}

routed! {
    Spawn => |m| Route::Session(m.parent.principal());
    StartMain => |m| match &m.session_key {
        Some(key) => Route::Session(key),
        None => Route::MainOf(&m.agent_id),
    };
    Kill => |m| Route::Session(&m.target);
    Abort => |m| Route::Session(&m.target);
    ForgetSession => |m| Route::Session(&m.target);
    SendTo => |m| Route::Session(&m.target);
    GetHistory => |m| Route::Session(&m.target);
    WaitRun => |m| Route::Run(&m.run_id);
    ShowRun => |m| Route::Run(&m.run_id);
    RunEnded => |m| Route::Session(&m.key);
    SessionGone => |m| Route::Session(&m.key);
    ModelCalled => |m| Route::Session(&m.key);
    ListSessions => |m| match &m.caller {
        Some(cap) => Route::Session(cap.principal()),
        None => Route::Any,
    };
    ListAgents => |_m| Route::Any;
    Recover => |_m| Route::Any;
    super::remote::RemoteEnded => |m| Route::Session(&m.parent);
    super::remote::Placed => |m| Route::Session(&m.key);
    super::remote::Claimed => |m| Route::Session(&m.token.parent);
    super::remote::Forfeit => |m| Route::Session(&m.key);
}
