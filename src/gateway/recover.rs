//! Picking up after a restart: what the store found ([`Durable`]) and what the pure
//! recovery functions ([`crate::store::recovery`]) decided, performed by the gateway.
//!
//! - Sessions that were not running come back as ended records, for history (`runs`,
//!   `sessions list`, `chat.history`; transcripts are read from the store on demand).
//! - Each run left `running` is resumed, ancestors first (a child's capability is
//!   derived again from its parent's, through `attenuate`): a session actor starts from
//!   its journaled transcript. Or it is finalized with its outcome, recorded and
//!   announced like any other end.
//! - Each announcement recorded and not delivered goes again to its resumed parent,
//!   or is marked undeliverable and noted on the parent for the operator.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::{Gateway, Outcome, SessionEntry, SpawnReply, Status};
use crate::capability::{micro_usd, AttenuateRequest, Budgets, Capability};
use crate::gateway::{Completes, ContextMode, SpawnMode};
use crate::keys::{RunId, SessionKey};
use crate::scope::ScopeSet;
use crate::session::{opening, tools, ChildEnded, Restored, Session, OPENING};
use crate::store::recovery::{self, Decision, Delivery, Policy};
use crate::store::{now_ms, Child, Durable, Record, StoredSession, StoredStatus};

/// Resume or finalize what a previous run of the gateway left.
#[derive(Message)]
#[rtype(result = "Recovered")]
pub struct Recover {
    pub durable: Durable,
    pub policy: Policy,
}

/// What recovery did, for the log and `hivegate serve`'s first lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Recovered {
    pub resumed: usize,
    pub finalized: usize,
    pub redelivered: usize,
    pub undeliverable: usize,
    /// Ended sessions brought back for history.
    pub restored: usize,
    /// Running sessions left to the workers that hold them.
    pub on_workers: usize,
}

impl Handler<Recover> for Gateway {
    type Result = MessageResult<Recover>;

    fn handle(&mut self, msg: Recover, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.recover(msg.durable, msg.policy, ctx))
    }
}

impl Gateway {
    fn recover(&mut self, mut durable: Durable, policy: Policy, ctx: &Context<Self>) -> Recovered {
        let mut report = Recovered::default();
        let now = now_ms();
        let decisions = recovery::decide(&durable.sessions, |id| self.agents.get(id).is_some(), now, &policy);
        // Every session is registered first, oldest first (a parent before its
        // children), so trees are whole; running ones get their actor below.
        let sessions = std::mem::take(&mut durable.sessions);
        let mut running: HashMap<SessionKey, StoredSession> = HashMap::new();
        // What ended children spent, to charge to their resumed parent's budgets.
        let mut spent = Vec::new();
        for session in sessions {
            let placed = durable.placed.get(&session.row.key).cloned();
            let key = session.row.key.clone();
            if session.status == StoredStatus::Running {
                self.insert_stored(&session, Status::Running, now);
                running.insert(session.row.key.clone(), session);
            } else {
                if let (Some(parent), Some(run)) = (&session.row.parent, &session.row.spawned.parent_run_id) {
                    spent.push((parent.clone(), run.clone(), session.usage));
                }
                self.restore_ended(session, now);
                report.restored += 1;
            }
            if let Some(placed) = placed {
                self.registry.set_placement(&key, &placed);
            }
        }
        let mut resumed: HashMap<SessionKey, RunId> = HashMap::new();
        let mut finalize = Vec::new();
        for (key, decision) in decisions {
            let Some(session) = running.remove(&key) else { continue };
            let run_id = session.row.run.run_id.clone();
            let usage = session.usage;
            if durable.placed.contains_key(&key) {
                // Its worker runs it (or one will claim it): it stays running here and
                // its end comes through the database, as long as its parent resumed.
                // Never resumed here: its agent runs on workers.
                match &session.row.parent {
                    Some(parent) if resumed.contains_key(parent) => report.on_workers += 1,
                    parent => {
                        let parent = parent.as_ref().map_or_else(String::new, |p| p.to_string());
                        let reason = format!("killed: its parent {parent} did not resume after the restart");
                        finalize.push((key, run_id, (Outcome::Killed, reason), usage));
                    }
                }
                continue;
            }
            let decision = match decision {
                Decision::Resume => match self.resume(session, &mut durable, now, ctx) {
                    Ok(()) => {
                        resumed.insert(key, run_id);
                        report.resumed += 1;
                        continue;
                    }
                    Err(reason) => (Outcome::Error, reason),
                },
                Decision::Finalize { outcome, reason } => (outcome, reason),
            };
            finalize.push((key, run_id, decision, usage));
        }
        for (parent, run, usage) in spent {
            let cap = self
                .registry
                .get(&parent)
                .filter(|p| p.run_id == run && p.addr.is_some())
                .map(|p| p.capability.clone());
            if let Some(cap) = cap {
                let _ = cap.charge(usage.total());
                let _ = cap.charge_cost(micro_usd(usage.cost_usd));
            }
        }
        for (key, run_id, (outcome, reason), usage) in finalize {
            tracing::warn!(session = %key, run = %run_id, outcome = outcome.as_str(), "{reason}");
            self.end_run(&key, &run_id, outcome, reason, usage, None);
            report.finalized += 1;
        }
        for (pending, (id, delivery)) in
            durable.outbox.iter().zip(recovery::deliveries(&durable.outbox, &resumed, &policy))
        {
            let parent = &pending.announce.parent;
            match delivery {
                Delivery::Redeliver => {
                    self.tell(parent, Some(ChildEnded { id, text: pending.announce.text.clone() }), false);
                    report.redelivered += 1;
                }
                Delivery::GiveUp(reason) => {
                    tracing::warn!(parent = %parent, announcement = %id, "{reason}");
                    if let Some(mut entry) = self.registry.get_mut(parent) {
                        entry.notice(format!("the result of {id} was not delivered: {reason}"));
                    }
                    let text = format!("[the result of subagent run {id} could not be delivered: {reason}]");
                    self.journal.record(Record::Undeliverable { id: id.clone(), reason: reason.into() });
                    self.tell(parent, Some(ChildEnded { id, text }), false);
                    report.undeliverable += 1;
                }
                Delivery::Undeliverable(reason) => {
                    tracing::warn!(parent = %parent, announcement = %id, "{reason}");
                    if let Some(mut entry) = self.registry.get_mut(parent) {
                        entry.notice(format!("the result of {id} was not delivered: {reason}"));
                    }
                    self.journal.record(Record::Undeliverable { id, reason: reason.into() });
                    report.undeliverable += 1;
                }
            }
        }
        report
    }

    /// Start a session actor again from its journal. Fails (with why) only when its
    /// capability cannot be derived again.
    fn resume(
        &mut self,
        session: StoredSession,
        durable: &mut Durable,
        now: u64,
        ctx: &Context<Self>,
    ) -> Result<(), String> {
        let row = &session.row;
        let agent =
            self.agents.get(&row.agent_id).cloned().ok_or_else(|| format!("agent '{}' is gone", row.agent_id))?;
        let capability = self.restore_capability(&session, agent.scopes, now)?;
        self.resume_with(session, agent, capability, durable, ctx);
        Ok(())
    }

    /// Start a session actor from its journal with `capability` (derived again here,
    /// or adopted from a worker's signed grant).
    pub(super) fn resume_with(
        &mut self,
        session: StoredSession,
        agent: std::sync::Arc<crate::agent::AgentDef>,
        capability: Capability,
        durable: &mut Durable,
        ctx: &Context<Self>,
    ) {
        let row = &session.row;
        // What this run has spent counts against its budgets again.
        let _ = capability.charge(session.usage.total());
        let _ = capability.charge_cost(micro_usd(session.usage.cost_usd));
        let stored = durable.transcripts.remove(&row.key).unwrap_or_default();
        let children = durable.children.remove(&row.key).unwrap_or_default();
        let recorded = durable.tool_results.remove(&row.key).unwrap_or_default();
        // A main session's later run, or a follow-up, whose first message was not
        // journaled before the crash: it begins with its task on top of its transcript.
        let task = session.follow_up_task.clone().unwrap_or_else(|| row.run.task.clone());
        let begun = (row.parent.is_some() && session.follow_ups == 0)
            || stored.iter().any(|m| {
                m.run_id == row.run.run_id
                    && matches!(&m.message, crate::model::Message::User { content } if *content == task)
            });
        let begin = (!begun).then_some(task);
        let restored = stored.last().map(|last| last.seq + 1).map(|next_seq| {
            let ended = stored.iter().filter(|m| m.delivers.is_some() && m.run_id == row.run.run_id).count();
            // A session that did not fork journals after its opening, made again here.
            let mut transcript = match stored.first() {
                Some(first) if first.seq == OPENING => opening(&row.key, &agent, &capability, row.run.task.clone()),
                _ => Vec::new(),
            };
            // A lost write leaves a gap in the journal: positions go on after the last.
            let offset = next_seq.saturating_sub((transcript.len() + stored.len()) as u32);
            let delivered: Vec<(u32, RunId)> =
                stored.iter().filter_map(|m| m.delivers.clone().map(|id| (m.seq.saturating_sub(offset), id))).collect();
            transcript.extend(stored.into_iter().map(|m| m.message));
            let spawn_replies: HashMap<String, String> =
                children.iter().filter_map(|c| Some((c.call_id.clone()?, acceptance(c)))).collect();
            let calls = recovery::unanswered(&transcript, offset, &recorded, &spawn_replies, tools::idempotent);
            // Each child's spawn and each follow-up it took is one end to wait for.
            let spawned = children.iter().map(|c| 1 + c.follow_ups as usize).sum();
            let children = (spawned, ended);
            let usage = session.usage;
            Box::new(Restored { transcript, delivered, children, seq_offset: offset, usage, calls, begin })
        });
        let mut init =
            self.init(row.key.clone(), row.run.run_id.clone(), &agent, capability.clone(), row.run.task.clone(), ctx);
        init.model = row.run.model.clone();
        init.may_fall_back = !row.spawned.model_explicit;
        init.stays = row.spawned.stays;
        init.thinking = row.spawned.thinking;
        init.restored = restored;
        let addr = Session::new(init).start();
        if let Some(mut entry) = self.registry.get_mut(&row.key) {
            entry.capability = capability;
            entry.addr = Some(addr);
        }
        self.emit_started(&row.key);
        tracing::info!(session = %row.key, run = %row.run.run_id, "resumed from its journal");
    }

    /// The capability a resumed session had: a main session's minted again from its
    /// grant (narrowed to its agent's scopes today), a child's derived again from its
    /// resumed parent's through `attenuate`, the one narrowing function.
    fn restore_capability(
        &self,
        session: &StoredSession,
        agent_scopes: ScopeSet,
        now: u64,
    ) -> Result<Capability, String> {
        let grant = &session.row.spawned.grant;
        let scopes = ScopeSet::from_bits(grant.scopes).intersect(agent_scopes);
        let deadline = grant.deadline_ms.map(|d| Instant::now() + Duration::from_millis(d.saturating_sub(now)));
        let Some(parent) = &session.row.parent else {
            let budgets = Budgets { tokens: grant.budget_tokens, micro_usd: grant.budget_micro_usd };
            let workspace = self.workspace.clone();
            return Ok(self.authority.mint_root(
                session.row.key.clone(),
                scopes,
                grant.max_depth,
                deadline,
                budgets,
                workspace,
            ));
        };
        let parent_cap = self
            .registry
            .get(parent)
            .filter(|p| p.status == Status::Running)
            .map(|p| p.capability.clone())
            .ok_or_else(|| format!("killed: its parent {parent} did not resume after the restart"))?;
        // Its own workspace, checked again against its parent's as it stands now.
        let workspace = match (&session.row.spawned.workspace, parent_cap.workspace()) {
            (None, _) => None,
            (Some(dir), Some(parent_ws)) => Some(
                parent_ws
                    .narrow(dir)
                    .map_err(|e| format!("its workspace is no longer usable after the restart: {e}"))?,
            ),
            (Some(dir), None) => return Err(format!("its workspace {dir} is outside any workspace after the restart")),
        };
        // Stored in milliseconds: never later than the parent's, as when it was made.
        let deadline = match (deadline, parent_cap.deadline()) {
            (Some(own), Some(limit)) => Some(own.min(limit)),
            (own, limit) => own.or(limit),
        };
        parent_cap
            .attenuate(AttenuateRequest {
                principal: session.row.key.clone(),
                scopes,
                max_depth: Some(grant.max_depth.min(parent_cap.max_depth())),
                deadline,
                budget_tokens: None,
                budget_micro_usd: grant
                    .budget_micro_usd
                    .map(|own| parent_cap.remaining_cost().map_or(own, |left| own.min(left))),
                workspace,
            })
            .map_err(|e| format!("its capability could not be derived again after the restart: {e}"))
    }

    /// An ended session, back as a record for history.
    fn restore_ended(&mut self, session: StoredSession, now: u64) {
        let keep = session.row.spawned.cleanup == super::Cleanup::Keep;
        let key = session.row.key.clone();
        self.insert_stored(&session, Status::Ended, now);
        if keep {
            self.across.ended().push_back(key);
        }
    }

    pub(super) fn insert_stored(&mut self, session: &StoredSession, status: Status, now: u64) {
        let capability = self.authority.ended(session.row.key.clone());
        self.insert_entry(entry_of(session, status, capability, now, self.shard));
    }

    /// Register an entry under its parent, if the parent is known.
    fn insert_entry(&mut self, entry: SessionEntry) {
        if let Some(parent) = &entry.parent {
            if let Some(mut p) = self.registry.get_mut(parent) {
                p.children.push(entry.key.clone());
                if entry.status == Status::Running {
                    p.active_children += 1;
                }
            }
        }
        self.registry.insert(entry);
    }
}

/// A registry entry for a stored session.
/// `shard`: the one recovering, which starts every resumed actor on its own thread.
fn entry_of(session: &StoredSession, status: Status, capability: Capability, now: u64, shard: u16) -> SessionEntry {
    let at = |ms: u64| {
        Instant::now().checked_sub(Duration::from_millis(now.saturating_sub(ms))).unwrap_or_else(Instant::now)
    };
    let row = &session.row;
    let mut entry = SessionEntry {
        parent: row.parent.clone(),
        label: row.label.clone(),
        status,
        outcome: if status == Status::Running { None } else { session.outcome.or(Some(Outcome::Interrupted)) },
        cleanup: row.spawned.cleanup,
        stays: row.spawned.stays,
        started_at: at(row.run.started_at_ms),
        usage: session.usage,
        follow_ups: session.follow_ups,
        ..SessionEntry::running(
            row.key.clone(),
            row.agent_id.clone(),
            row.run.model.clone(),
            row.run.run_id.clone(),
            capability,
            shard,
        )
    };
    if status != Status::Running {
        let past = entry.past_mut();
        past.ended_at = session.ended_at_ms.map(at);
        past.final_text = session.final_text.clone();
    }
    entry
}

/// The answer a child's spawn call got, for a call whose result was not recorded.
fn acceptance(child: &Child) -> String {
    let reply = SpawnReply::Accepted {
        run_id: child.run_id.clone(),
        child_session_key: child.key.clone(),
        resolved_model: child.model.clone(),
        mode: if child.stays { SpawnMode::Session } else { SpawnMode::Run },
        context: if child.forked { ContextMode::Fork } else { ContextMode::Isolated },
        expects_completion_message: Completes,
    };
    serde_json::to_string(&reply).unwrap_or_default()
}
