//! Sessions on other processes: spawns placed on workers, from both ends.
//!
//! **On the gateway**, a spawn of an agent with `placement = "worker"` is decided and
//! attenuated by [`super::spawn::plan`] like any other; instead of starting an actor,
//! the gateway signs the result ([`crate::worker::token`]) and journals it as
//! [`Record::Queued`](crate::store::Record::Queued), committed with the session's row.
//! The registry keeps the session as running with no actor and its placement
//! (`worker`, then `worker:<id>` when [`Placed`] says who claimed it). Its end arrives
//! as [`RemoteEnded`], read from the outbox by [`crate::worker::listener`]; a kill, or its
//! parent's end, ends it here and journals
//! [`Record::Revoked`](crate::store::Record::Revoked) so its worker stops it.
//!
//! **On a worker**, the claimer ([`crate::worker::claimer`]) hands each claimed spawn to
//! the worker's own gateway as [`Claimed`]: the session starts from its journal (empty
//! the first time, its transcript and recorded tool results after another worker died)
//! with the capability adopted from the signed grant, under a stand-in for its parent
//! that lives on the gateway. Its end is recorded with its announcement in the outbox,
//! like a local child's; [`Held`] counts the worker's free slots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix::prelude::*;

use super::{Cleanup, Gateway, Outcome, SessionEntry, Status};
use crate::keys::{RunId, SessionKey};
use crate::model::Usage;
use crate::session::Terminate;
use crate::store::{Durable, RunRow, SessionRow, Spawned, StoredMessage, StoredSession, StoredStatus};
use crate::worker::token::{GatewayKey, WorkToken};

/// The placement of a session queued for a worker and not yet claimed.
pub const QUEUED: &str = "worker";

/// What a gateway or a worker needs to reach sessions on other processes.
pub struct Remote {
    /// The gateway's signing key: spawns placed on workers are queued, signed with it.
    key: Option<GatewayKey>,
    /// A worker's claims.
    held: Option<Arc<Held>>,
}

impl Remote {
    /// A gateway with a work queue.
    pub fn gateway(key: GatewayKey) -> Remote {
        Remote { key: Some(key), held: None }
    }

    /// A worker running the sessions it claims.
    pub fn worker(held: Arc<Held>) -> Remote {
        Remote { key: None, held: Some(held) }
    }

    /// Spawns placed on workers can be queued here.
    pub fn queues(&self) -> bool {
        self.key.is_some()
    }
}

/// The sessions a worker holds: what its claimer renews, and how many slots are free.
#[derive(Default)]
pub struct Held {
    keys: Mutex<HashSet<SessionKey>>,
    /// A session ended since the claimer last looked: a slot is free.
    freed: AtomicBool,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashSet<SessionKey>> {
        self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add(&self, key: SessionKey) {
        self.lock().insert(key);
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub fn keys(&self) -> Vec<SessionKey> {
        self.lock().iter().cloned().collect()
    }

    pub fn contains(&self, key: &SessionKey) -> bool {
        self.lock().contains(key)
    }

    /// Let `key` go; true if it was held.
    pub fn release(&self, key: &SessionKey) -> bool {
        let was = self.lock().remove(key);
        if was {
            self.freed.store(true, Ordering::Release);
        }
        was
    }

    /// Whether a slot was freed since the last call.
    pub fn take_freed(&self) -> bool {
        self.freed.swap(false, Ordering::AcqRel)
    }
}

/// A session on a worker ended (read from the outbox): `text` is its announcement as
/// recorded, for its parent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteEnded {
    /// The announcement's id: the child's run id.
    pub id: RunId,
    pub parent: SessionKey,
    pub text: String,
    /// The child, when its row is still there (`cleanup: delete` removes it).
    pub key: Option<SessionKey>,
    pub outcome: Outcome,
    pub final_text: String,
    pub usage: Usage,
}

/// A worker claimed a session: where it runs now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Placed {
    pub key: SessionKey,
    pub placement: String,
}

/// On a worker: run this claimed session, from its journal.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Claimed {
    /// Verified by the claimer against the gateway's public key.
    pub token: WorkToken,
    /// What the session's earlier holders spent and journaled (all empty the first time).
    pub usage: Usage,
    pub transcript: Vec<StoredMessage>,
    pub tool_results: HashMap<String, String>,
}

/// On a worker: another worker holds this session now (this one's lease lapsed); stop it
/// without recording an end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forfeit {
    pub key: SessionKey,
}

impl Gateway {
    /// The signed spawn for a worker, or why it cannot be made.
    pub(super) fn work_token(&self, plan: &super::spawn::SpawnPlan) -> Result<String, String> {
        let key = self.remote.as_ref().and_then(|r| r.key.as_ref()).ok_or_else(|| {
            format!("agent '{}' runs on workers, and this gateway has no worker queue", plan.agent.id)
        })?;
        let token = WorkToken {
            key: plan.key.clone(),
            run_id: plan.run_id.clone(),
            parent: plan.parent.clone(),
            parent_run_id: plan.parent_run_id.clone(),
            agent_id: plan.agent.id.to_string(),
            model: plan.model.to_string(),
            model_explicit: plan.model_explicit,
            thinking: plan.thinking.map(|t| t.as_str().to_string()),
            task: plan.task.clone(),
            label: plan.label.clone(),
            grant: super::grant(&plan.capability, None, plan.capability.remaining_cost()),
            issued_at_ms: crate::store::now_ms(),
        };
        key.sign(&token).map_err(|e| format!("the spawn could not be signed for a worker: {e}"))
    }

    /// A worker's session is done with (ended or forfeited): its slot is free.
    pub(super) fn release(&self, key: &SessionKey) {
        if let Some(held) = self.remote.as_ref().and_then(|r| r.held.as_ref()) {
            held.release(key);
        }
    }

    /// On a worker: start a claimed session under a stand-in for its parent.
    fn run_claimed(&mut self, msg: Claimed, ctx: &Context<Self>) -> Result<(), String> {
        let Claimed { token, usage, transcript, tool_results } = msg;
        let agent = self
            .agents
            .get(&token.agent_id)
            .cloned()
            .ok_or_else(|| format!("agent '{}' is not defined here", token.agent_id))?;
        let model = crate::model::ModelRef::parse(&token.model).map_err(|e| format!("model {}: {e}", token.model))?;
        if self.registry.get(&token.key).is_some_and(|e| e.status == Status::Running) {
            return Err(format!("session {} already runs here", token.key));
        }
        self.stand_in(&token.parent, &token.parent_run_id, &model);
        let session = StoredSession {
            row: SessionRow {
                key: token.key.clone(),
                parent: Some(token.parent.clone()),
                agent_id: agent.id.clone(),
                label: token.label.clone(),
                spawned: Spawned {
                    model_explicit: token.model_explicit,
                    thinking: token.thinking.as_deref().and_then(crate::model::thinking::Thinking::parse),
                    cleanup: Cleanup::Keep,
                    stays: false,
                    forked: false,
                    grant: token.grant,
                    parent_run_id: Some(token.parent_run_id.clone()),
                    call_id: None,
                    workspace: None,
                },
                run: RunRow {
                    run_id: token.run_id.clone(),
                    task: token.task.clone(),
                    model,
                    started_at_ms: token.issued_at_ms,
                },
            },
            status: StoredStatus::Running,
            outcome: None,
            final_text: None,
            usage,
            ended_at_ms: None,
            resumes: 0,
            follow_ups: 0,
            follow_up_task: None,
        };
        let now = crate::store::now_ms();
        // The worker's own workspace: paths on the gateway's machine mean nothing here.
        let capability =
            self.authority.adopt(token.key.clone(), &token.grant, agent.scopes, now, self.workspace.clone());
        capability.check(Instant::now()).map_err(|e| format!("its grant is no longer valid: {e}"))?;
        self.registry.remove(&token.key);
        self.insert_stored(&session, Status::Running, now);
        let mut durable = Durable::default();
        durable.transcripts.insert(token.key.clone(), transcript);
        durable.tool_results.insert(token.key.clone(), tool_results);
        self.resume_with(session, agent, capability, &mut durable, ctx);
        Ok(())
    }

    /// The parent of a claimed session, as the worker knows it: running, with no actor
    /// and no authority (its end is recorded for it on the gateway's side).
    fn stand_in(&mut self, parent: &SessionKey, run_id: &RunId, model: &crate::model::ModelRef) {
        if self.registry.get(parent).is_some_and(|p| &p.run_id == run_id && p.status == Status::Running) {
            return;
        }
        self.registry.remove(parent);
        self.registry.insert(SessionEntry {
            stays: true,
            ..SessionEntry::running(
                parent.clone(),
                "gateway".into(),
                model.clone(),
                run_id.clone(),
                self.authority.ended(parent.clone()),
                self.shard,
            )
        });
    }
}

impl Handler<RemoteEnded> for Gateway {
    type Result = ();

    /// End the child here and hand its recorded announcement to its parent, once: a
    /// child no longer running here (ended by a kill, or by recovery) is left alone,
    /// and the parent drops a second delivery of the same id anyway.
    fn handle(&mut self, msg: RemoteEnded, _: &mut Self::Context) {
        let Some(key) = msg.key.or_else(|| self.registry.session_of_run(&msg.id)) else { return };
        let running = self.registry.get(&key).is_some_and(|e| e.status == Status::Running && e.run_id == msg.id);
        if !running || self.registry.placement(&key).is_none() {
            return;
        }
        if let Some(mut entry) = self.registry.get_mut(&key) {
            entry.usage = msg.usage;
        }
        self.end_run_as(&key, &msg.id, msg.outcome, msg.final_text, msg.usage, None, Some(msg.text));
    }
}

impl Handler<Placed> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: Placed, _: &mut Self::Context) {
        if self.registry.placement(&msg.key).is_some() {
            self.registry.set_placement(&msg.key, &msg.placement);
        }
    }
}

impl Handler<Claimed> for Gateway {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Claimed, ctx: &mut Self::Context) -> Self::Result {
        let key = msg.token.key.clone();
        let started = self.run_claimed(msg, ctx);
        if let Err(e) = &started {
            // Its lease lapses and another worker tries.
            tracing::error!(session = %key, "a claimed session cannot start here: {e}");
            self.release(&key);
        }
        started
    }
}

impl Handler<Forfeit> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: Forfeit, _: &mut Self::Context) {
        let addr = self.registry.get_mut(&msg.key).and_then(|mut e| e.addr.take());
        self.registry.remove(&msg.key);
        self.release(&msg.key);
        if let Some(addr) = addr {
            addr.do_send(Terminate);
        }
    }
}
