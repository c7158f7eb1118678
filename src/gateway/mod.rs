//! The gateway: root actor of a process. It owns the session registry, the run registry,
//! the limits and the capability authority, and it is the only way one session reaches
//! another.
//!
//! Spawning is a message: a session sends [`Spawn`] with its own capability; the gateway
//! runs the pure [`spawn::plan`] (limits, policy, model, attenuation), starts the child
//! actor on the parent's arbiter (the shard's: a tree lives on one thread) with the
//! narrowed capability inside the child's initial state, registers it and answers at
//! once. When a run ends ([`RunEnded`] from the session, or a kill), [`Gateway::end_run`]
//! records the outcome, revokes the run's capability (an idle `session` child keeps its
//! own until its parent's run ends), kills the subtree, and announces the outcome and
//! final text to the parent. Handlers are thin: unpack, call a plain function, perform the effects.
//!
//! Every change of a session's life is journaled to the store as it happens (a
//! session started, a run started or ended with its announcement, usage), without
//! waiting for the disk; [`recover`] picks the journal up at the next start.

pub mod events;
pub mod messages;
mod operator;
mod recover;
pub mod registry;
pub mod remote;
pub mod shards;
pub mod spawn;
pub mod stats;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

pub use events::{Events, SessionEvent};
pub use messages::*;
pub use registry::{Registry, SessionEntry, Status, TreeNode};
pub use stats::Stats;

use crate::agent::Agents;
use crate::capability::{micro_usd, Authority, Budgets, Capability};
use crate::config::Limits;
use crate::keys::{RunId, SessionKey};
use crate::model::pricing::Pricing;
use crate::model::{Message as ChatMessage, ModelClient, Usage};
use crate::scope::authorize;
use crate::session::{
    Announcement, ChildEnded, Deliver, GetTranscript, Pause, Session, SessionInit, Shared, StartRun, Terminate,
};
use crate::store::{Announce, Grant, Journal, Record, RunEnd, RunRow, RunStart, SessionRow, Spawned, Store, UsedRow};
use crate::tools::workspace::Workspace;
pub use recover::{Recover, Recovered};
use shards::Across;
pub use shards::{GatewayHandle, Route};

pub struct Gateway {
    agents: Arc<Agents>,
    limits: Limits,
    authority: Authority,
    registry: Arc<Registry>,
    model: Arc<dyn ModelClient>,
    stats: Arc<Stats>,
    /// This shard's number, recorded on every session it starts ([`shards`]).
    shard: u16,
    /// What every shard sees: waiters, retention, the stopping flags.
    across: Arc<Across>,
    /// Where sessions' `nodes_invoke` goes (the hub), when external nodes are served.
    nodes: Option<Recipient<crate::hub::InvokeNode>>,
    /// Prices per model; sessions charge each call's cost with them.
    pricing: Arc<Pricing>,
    /// Session starts, notices and ends, for whoever watches.
    events: Events,
    /// Where the sessions' lives are recorded, and read back for history.
    journal: Journal,
    store: Option<Store>,
    /// What every session shares, made once the gateway has an address.
    shared: Option<Arc<Shared>>,
    /// Main sessions' workspace; their children's are it or directories inside it.
    workspace: Option<Workspace>,
    /// The MCP servers every session shares.
    mcp: Arc<crate::tools::mcp::McpServers>,
    /// Sessions on other processes: the gateway's work queue, or this worker's claims.
    remote: Option<Arc<remote::Remote>>,
}

impl Gateway {
    pub fn new(agents: Arc<Agents>, limits: Limits, model: Arc<dyn ModelClient>) -> Gateway {
        Gateway {
            agents,
            limits,
            authority: Authority::new(),
            registry: Arc::new(Registry::default()),
            model,
            stats: Arc::new(Stats::default()),
            shard: 0,
            across: Arc::default(),
            nodes: None,
            pricing: Arc::default(),
            events: Events::default(),
            journal: Journal::discard(),
            store: None,
            shared: None,
            workspace: None,
            mcp: Arc::default(),
            remote: None,
        }
    }

    /// Place spawns on workers (a gateway with a work queue), or run claimed sessions
    /// (a worker).
    pub fn with_remote(mut self, remote: Arc<remote::Remote>) -> Gateway {
        self.remote = Some(remote);
        self
    }

    /// Count into `metrics` (the runtime's, shared with the model client and `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<crate::telemetry::Metrics>) -> Gateway {
        self.stats = Arc::new(Stats::with_metrics(metrics));
        self
    }

    /// Give sessions the gateway's MCP servers.
    pub fn with_mcp(mut self, mcp: Arc<crate::tools::mcp::McpServers>) -> Gateway {
        self.mcp = mcp;
        self
    }

    /// Give main sessions `workspace` for their work tools.
    pub fn with_workspace(mut self, workspace: Option<Workspace>) -> Gateway {
        self.workspace = workspace;
        self
    }

    /// Journal to `store`, and read ended sessions' transcripts back from it.
    pub fn with_store(mut self, store: Store) -> Gateway {
        self.journal = store.journal();
        self.store = Some(store);
        self
    }

    /// What sessions share (built on first use, when the gateway has an address).
    fn shared(&mut self, ctx: &Context<Self>) -> Arc<Shared> {
        self.shared
            .get_or_insert_with(|| {
                Arc::new(Shared {
                    gateway: ctx.address(),
                    models: self.model.clone(),
                    pricing: self.pricing.clone(),
                    stats: self.stats.clone(),
                    nodes: self.nodes.clone(),
                    events: self.events.clone(),
                    journal: self.journal.clone(),
                    exec_limits: Arc::default(),
                    mcp: self.mcp.clone(),
                })
            })
            .clone()
    }

    /// Where session events are broadcast; subscribe before starting runs to see them all.
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    fn emit_started(&self, key: &SessionKey) {
        self.events.emit(|| match self.registry.get(key) {
            Some(e) => SessionEvent::Started {
                session_key: key.clone(),
                run_id: e.run_id.clone(),
                parent: e.parent.clone(),
                agent_id: e.agent_id.to_string(),
                model: e.model.clone(),
                label: e.label.clone(),
            },
            None => SessionEvent::Noticed { session_key: key.clone(), notice: "started and already gone".into() },
        });
    }

    fn emit_ended(&self, key: &SessionKey, outcome: Outcome, text: &str) {
        self.events.emit(|| {
            let entry = self.registry.get(key);
            SessionEvent::Ended {
                session_key: key.clone(),
                run_id: entry.as_ref().map(|e| e.run_id.clone()).unwrap_or_default(),
                outcome,
                error: (outcome != Outcome::Ok).then(|| text.lines().next().unwrap_or_default().to_string()),
                duration_ms: entry.as_ref().map_or(0.0, |e| e.duration().as_secs_f64() * 1000.0),
                tokens: entry.as_ref().map_or(0, |e| e.usage.total()),
                cost_usd: entry.as_ref().and_then(|e| e.usage.known_cost()),
            }
        });
    }

    /// Price model calls with `pricing`.
    pub fn with_pricing(mut self, pricing: Arc<Pricing>) -> Gateway {
        self.pricing = pricing;
        self
    }

    /// Give sessions a way to invoke commands on paired nodes.
    pub fn with_nodes(mut self, nodes: Recipient<crate::hub::InvokeNode>) -> Gateway {
        self.nodes = Some(nodes);
        self
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn init(
        &mut self,
        key: SessionKey,
        run_id: RunId,
        agent: &Arc<crate::agent::AgentDef>,
        capability: Capability,
        task: String,
        ctx: &Context<Self>,
    ) -> SessionInit {
        let key_is_main = key.is_main();
        SessionInit {
            key,
            run_id,
            agent: agent.clone(),
            model: agent.model.clone(),
            may_fall_back: true,
            capability,
            task,
            shared: self.shared(ctx),
            stays: key_is_main,
            history: None,
            thinking: None,
            restored: None,
            trace: None,
        }
    }

    fn start_child(
        &mut self,
        plan: spawn::SpawnPlan,
        call_id: Option<Box<str>>,
        trace: Option<crate::telemetry::TraceParent>,
        ctx: &Context<Self>,
    ) -> SpawnReply {
        let reply = SpawnReply::Accepted {
            run_id: plan.run_id.clone(),
            child_session_key: plan.key.clone(),
            resolved_model: plan.model.clone(),
            mode: plan.mode,
            context: plan.context(),
            expects_completion_message: Completes,
        };
        let stays = plan.mode == SpawnMode::Session;
        let queued = match plan.agent.placement {
            crate::agent::Placement::Local => None,
            crate::agent::Placement::Worker => match self.work_token(&plan) {
                Ok(token) => Some(token),
                Err(error) => return SpawnReply::Error { error },
            },
        };
        self.journal.record(Record::SessionStarted(Box::new(SessionRow {
            key: plan.key.clone(),
            parent: Some(plan.parent.clone()),
            agent_id: plan.agent.id.clone(),
            label: plan.label.clone(),
            spawned: Spawned {
                model_explicit: plan.model_explicit,
                thinking: plan.thinking,
                cleanup: plan.cleanup,
                stays,
                forked: plan.history.is_some(),
                grant: grant(&plan.capability, None, plan.agent.budget_usd.map(micro_usd)),
                parent_run_id: Some(plan.parent_run_id.clone()),
                call_id: call_id.map(String::from),
                workspace: plan.workspace.clone(),
            },
            run: RunRow {
                run_id: plan.run_id.clone(),
                task: plan.task.clone(),
                model: plan.model.clone(),
                started_at_ms: crate::store::now_ms(),
            },
        })));
        let addr = match queued {
            Some(token) => {
                let work = crate::store::QueuedWork { key: plan.key.clone(), agent_id: plan.agent.id.clone(), token };
                // A worker waits for it: committed now, with the session's row before it.
                self.journal.record_now(Record::Queued(Box::new(work)));
                None
            }
            None => {
                let mut init = self.init(
                    plan.key.clone(),
                    plan.run_id.clone(),
                    &plan.agent,
                    plan.capability.clone(),
                    plan.task,
                    ctx,
                );
                init.model = plan.model.clone();
                init.stays = stays;
                init.history = plan.history;
                init.thinking = plan.thinking;
                init.trace = trace;
                if plan.model_explicit {
                    // Strict: a model the spawn named is used or the child fails, never replaced.
                    init.may_fall_back = false;
                }
                Some(Session::new(init).start())
            }
        };
        let on_worker = addr.is_none();
        self.registry.insert(SessionEntry {
            parent: Some(plan.parent.clone()),
            label: plan.label,
            cleanup: plan.cleanup,
            stays,
            addr,
            ..SessionEntry::running(
                plan.key.clone(),
                plan.agent.id.clone(),
                plan.model,
                plan.run_id,
                plan.capability,
                self.shard,
            )
        });
        if on_worker {
            self.registry.set_placement(&plan.key, remote::QUEUED);
        }
        if let Some(mut parent) = self.registry.get_mut(&plan.parent) {
            parent.children.push(plan.key.clone());
            parent.active_children += 1;
        }
        self.emit_started(&plan.key);
        self.stats.record_spawn(&plan.agent.id);
        reply
    }

    fn mint_main_capability(&self, key: &SessionKey, agent: &crate::agent::AgentDef, msg: &StartMain) -> Capability {
        let max_depth = self.limits.max_spawn_depth.min(agent.subagents.max_depth.unwrap_or(u32::MAX));
        let timeout = msg.run_timeout.unwrap_or(self.limits.default_run_timeout).min(crate::config::MAX_TIMEOUT);
        let deadline = Instant::now() + timeout;
        // The run's cost budget and the agent's, whichever is smaller.
        let usd = match (msg.budget_usd, agent.budget_usd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let budgets = Budgets { tokens: msg.budget_tokens, micro_usd: usd.map(micro_usd) };
        self.authority.mint_root(key.clone(), agent.scopes, max_depth, Some(deadline), budgets, self.workspace.clone())
    }

    fn start_main(&mut self, msg: StartMain, ctx: &Context<Self>) -> Result<RunStarted, GatewayError> {
        if self.across.shutting_down() {
            return Err(GatewayError::ShuttingDown);
        }
        let agent =
            self.agents.get(&msg.agent_id).cloned().ok_or_else(|| GatewayError::UnknownAgent(msg.agent_id.clone()))?;
        let key = match &msg.session_key {
            Some(key) if !key.is_main_of(&agent.id) => {
                return Err(GatewayError::BadSessionKey { key: key.to_string(), agent_id: agent.id.to_string() })
            }
            Some(key) => key.clone(),
            None => SessionKey::main(&agent.id),
        };
        let run_id = match &msg.run_id {
            Some(id) if self.registry.session_of_run(id).is_some() => return Err(GatewayError::RunIdTaken(id.clone())),
            Some(id) => id.clone(),
            None => RunId::new(),
        };
        let capability = self.mint_main_capability(&key, &agent, &msg);
        // Nothing is spent yet: what remains is the budget.
        let grant = grant(&capability, msg.budget_tokens, capability.remaining_cost());
        let run = RunRow {
            run_id: run_id.clone(),
            task: msg.task.clone(),
            model: agent.model.clone(),
            started_at_ms: crate::store::now_ms(),
        };
        let existing = self.registry.get(&key).map(|e| (e.status, e.addr.clone()));
        match existing {
            Some((Status::Running, _)) => return Err(GatewayError::Busy(key)),
            // An idle actor that died before its SessionGone arrived is replaced below.
            Some((Status::Idle, Some(addr))) if addr.connected() => {
                let (session, grant) = (key.clone(), Some(grant));
                self.journal.record(Record::RunStarted(Box::new(RunStart { key: session, run, grant, follow_up: 0 })));
                self.restart_main(&key, run_id.clone(), capability.clone());
                addr.do_send(StartRun { run_id: run_id.clone(), capability, task: msg.task });
                self.emit_started(&key);
                return Ok(RunStarted { session_key: key, run_id });
            }
            _ => self.registry.remove(&key),
        }
        let row = SessionRow::main(key.clone(), agent.id.clone(), grant, run);
        self.journal.record(Record::SessionStarted(Box::new(row)));
        let addr =
            Session::new(self.init(key.clone(), run_id.clone(), &agent, capability.clone(), msg.task, ctx)).start();
        self.registry.insert(SessionEntry {
            stays: true,
            addr: Some(addr),
            ..SessionEntry::running(
                key.clone(),
                agent.id.clone(),
                agent.model.clone(),
                run_id.clone(),
                capability,
                self.shard,
            )
        });
        self.emit_started(&key);
        Ok(RunStarted { session_key: key, run_id })
    }

    /// An idle main session takes a new run with a fresh capability.
    fn restart_main(&self, key: &SessionKey, run_id: RunId, capability: Capability) {
        self.registry.add_run(run_id.clone(), key.clone());
        let previous = self.registry.get_mut(key).map(|mut entry| {
            self.registry.set_status(&mut entry, Status::Running);
            entry.capability = capability;
            entry.clear_last_run();
            std::mem::replace(&mut entry.run_id, run_id)
        });
        if let Some(previous) = previous {
            self.registry.forget_run(&previous);
        }
    }

    /// Keep at most `limits.max_retained_sessions` ended sessions (oldest go first), so a
    /// long-running gateway's registry does not grow with every run.
    fn retain_ended(&mut self, key: &SessionKey) {
        let mut ended = self.across.ended();
        ended.push_back(key.clone());
        while ended.len() > self.limits.max_retained_sessions {
            if let Some(oldest) = ended.pop_front() {
                if self.registry.get(&oldest).is_some_and(|e| e.status == Status::Ended) {
                    self.registry.remove(&oldest);
                }
            }
        }
    }

    /// Record the end of `key`'s run `run_id` (first report wins), revoke its capability
    /// (unless it is a `session` child staying idle), kill its running subtree, announce
    /// to the parent and wake waiters.
    fn end_run(
        &mut self,
        key: &SessionKey,
        run_id: &RunId,
        outcome: Outcome,
        text: String,
        usage: Usage,
        transcript: Option<Vec<ChatMessage>>,
    ) {
        self.end_run_as(key, run_id, outcome, text, usage, transcript, None);
    }

    /// [`Gateway::end_run`]; `from_worker`: the run ended on the worker that held it,
    /// which recorded the end and its announcement (this text) already.
    #[allow(clippy::too_many_arguments)]
    fn end_run_as(
        &mut self,
        key: &SessionKey,
        run_id: &RunId,
        outcome: Outcome,
        text: String,
        usage: Usage,
        transcript: Option<Vec<ChatMessage>>,
        from_worker: Option<String>,
    ) {
        let (parent, label, children, addr, capability, cleanup, runtime, stop_actor, announce_id, spent) = {
            let Some(mut entry) = self.registry.get_mut(key) else {
                return;
            };
            if entry.status != Status::Running || &entry.run_id != run_id {
                return;
            }
            // A main session or a `mode: "session"` child that finished ok stays idle for
            // its next run; anything else stops.
            let stop_actor = !(entry.stays && outcome == Outcome::Ok);
            self.registry.set_status(&mut entry, if stop_actor { Status::Ended } else { Status::Idle });
            entry.outcome = Some(outcome);
            let past = entry.past_mut();
            past.ended_at = Some(Instant::now());
            past.final_text = Some(text.clone());
            if transcript.is_some() {
                past.transcript = transcript;
            }
            let addr = if stop_actor { entry.addr.take() } else { entry.addr.clone() };
            (
                entry.parent.clone(),
                entry.label.clone(),
                entry.children.clone(),
                addr,
                entry.capability.clone(),
                entry.cleanup,
                entry.duration(),
                stop_actor,
                entry.announce_id(),
                // What its model calls cost, as counted when each answered (a killed
                // run reports none of its own).
                entry.usage,
            )
        };
        // An idle `session` child keeps its capability for follow-ups (its parent's end
        // revokes it with the parent's); a main session gets a fresh one per run.
        if stop_actor || parent.is_none() {
            capability.revoke();
        }
        // The outcome and the announcement it makes are recorded together, before the
        // parent can hear of it: the parent's transcript is journaled after this.
        // Where the parent stands. A child killed with its parent's run has nobody to
        // tell: nothing is rendered or kept. A result for a parent whose run has ended
        // is kept, marked undeliverable and noted on the parent.
        let parent_state = parent.as_ref().and_then(|p| self.registry.get(p).map(|e| (e.run_id.clone(), e.status)));
        let told = match (&parent, parent_state) {
            (Some(p), Some((run, status))) if status == Status::Running || outcome != Outcome::Killed => {
                Some((p, run, status == Status::Running))
            }
            _ => None,
        };
        let rendered = told.as_ref().map(|_| {
            if let Some(text) = &from_worker {
                return text.clone();
            }
            Announcement {
                child: key.clone(),
                run_id: run_id.clone(),
                label,
                outcome,
                text: text.clone(),
                runtime,
                usage,
            }
            .render()
        });
        let announce = told.as_ref().zip(rendered.as_ref()).map(|((p, run, _), text)| Announce {
            id: announce_id.clone(),
            parent: (*p).clone(),
            parent_run_id: run.clone(),
            text: text.clone(),
        });
        let undeliverable = told.filter(|(_, _, running)| !running).map(|(p, _, _)| {
            let reason = format!(
                "the result of {announce_id} ({}) was not delivered: its parent's run had ended",
                outcome.as_str()
            );
            tracing::warn!(parent = %p, "{reason}");
            if let Some(mut entry) = self.registry.get_mut(p) {
                entry.notice(reason.clone());
            }
            reason
        });
        if from_worker.is_none() {
            if self.registry.placement(key).is_some() {
                // It ended here, not on its worker: the worker stops it. Before the end
                // itself, which closes its row in the work queue.
                self.journal.record(Record::Revoked { key: key.clone() });
            }
            self.journal.record(Record::RunEnded(Box::new(RunEnd {
                key: key.clone(),
                run_id: run_id.clone(),
                outcome,
                text: text.clone(),
                usage: spent,
                ended_at_ms: crate::store::now_ms(),
                idle: !stop_actor,
                forget: stop_actor && cleanup == Cleanup::Delete && parent.is_some(),
                announce,
            })));
        }
        self.release(key);
        if let Some(reason) = undeliverable {
            self.journal.record(Record::Undeliverable { id: announce_id.clone(), reason: reason.into() });
        }
        self.emit_ended(key, outcome, &text);
        // Only kept sessions count towards retention; `cleanup: delete` ones go below.
        if stop_actor && cleanup == Cleanup::Keep {
            self.retain_ended(key);
        }
        if let (Some(addr), true) = (&addr, outcome == Outcome::Killed || outcome == Outcome::Interrupted) {
            addr.do_send(Terminate);
        }
        for child in children {
            let state = self.registry.get(&child).map(|c| (c.status, c.run_id.clone()));
            match state {
                Some((Status::Running, child_run)) => self.end_run(
                    &child,
                    &child_run,
                    Outcome::Killed,
                    format!("killed: parent {key} ended ({})", outcome.as_str()),
                    Usage::default(),
                    None,
                ),
                // A `session` child waiting for follow-ups goes with its parent's run.
                Some((Status::Idle, _)) => self.stop_idle(&child),
                _ => {}
            }
        }
        if let Some(parent_key) = &parent {
            self.announce(parent_key, rendered.map(|text| ChildEnded { id: announce_id, text }));
            if cleanup == Cleanup::Delete {
                self.registry.remove(key);
                // A parent being torn down drops its whole list at once; pruning it
                // child by child would cost O(children) per child.
                if let Some(mut p) = self.registry.get_mut(parent_key).filter(|p| p.status == Status::Running) {
                    p.children.retain(|c| c != key);
                }
            }
        }
        let summary = RunSummary { run_id: run_id.clone(), session_key: key.clone(), outcome, text, usage };
        for waiter in self.across.waiters().remove(run_id).unwrap_or_default() {
            let _ = waiter.send(summary.clone());
        }
    }

    /// Count a child's end on its parent and tell the parent if it is running. A parent
    /// whose run has ended is not told: the result is kept as undeliverable instead
    /// ([`Gateway::end_run`]); the outcome stays in the registry either way.
    fn announce(&self, parent: &SessionKey, announcement: Option<ChildEnded>) {
        self.tell(parent, announcement, true);
    }

    /// Deliver to a running parent; `counted`: the child was counted among its active
    /// children (a result delivered again after a restart was not).
    fn tell(&self, parent: &SessionKey, announcement: Option<ChildEnded>, counted: bool) {
        let target = {
            let Some(mut entry) = self.registry.get_mut(parent) else {
                return;
            };
            if counted {
                entry.active_children = entry.active_children.saturating_sub(1);
            }
            if entry.status != Status::Running {
                return;
            }
            entry.addr.clone()
        };
        if let (Some(addr), Some(announcement)) = (target, announcement) {
            addr.do_send(announcement);
        }
    }

    /// Check a session caller's capability and that `target` is in its subtree.
    fn visible(&self, caller: &Option<Capability>, operation: &str, target: &SessionKey) -> Result<(), GatewayError> {
        let Some(cap) = caller else { return Ok(()) };
        cap.check(Instant::now())?;
        authorize(cap.scopes(), false, operation)?;
        if self.registry.in_subtree(cap.principal(), target) {
            Ok(())
        } else {
            Err(GatewayError::NotVisible { target: target.clone() })
        }
    }

    fn kill(&mut self, msg: Kill) -> Result<usize, GatewayError> {
        self.visible(&msg.caller, "subagents", &msg.target)?;
        if msg.caller.as_ref().is_some_and(|c| c.principal() == &msg.target) {
            return Err(GatewayError::NotVisible { target: msg.target });
        }
        let run = self.registry.get(&msg.target).map(|e| (e.status, e.run_id.clone()));
        let Some((status, run_id)) = run else {
            return Err(GatewayError::NoSuchSession(msg.target));
        };
        let before = self.registry.running();
        let by = msg.caller.as_ref().map_or_else(|| "the operator".to_string(), |c| c.principal().to_string());
        if status == Status::Running {
            self.end_run(&msg.target, &run_id, Outcome::Killed, format!("killed by {by}"), Usage::default(), None);
        } else if status == Status::Idle {
            self.stop_idle(&msg.target);
        }
        Ok(before - self.registry.running())
    }

    /// A refused spawn is said: counted, and noted on the parent for its tree.
    fn refused(&self, parent: &SessionKey, reply: &SpawnReply) {
        let reason = match reply {
            SpawnReply::Forbidden { error, .. } | SpawnReply::Error { error } => error.as_str(),
            SpawnReply::Accepted { .. } => return,
        };
        self.stats.record_spawn_refused();
        let notice = format!("spawn refused: {reason}");
        self.events.emit(|| SessionEvent::Noticed { session_key: parent.clone(), notice: notice.clone() });
        if let Some(mut entry) = self.registry.get_mut(parent) {
            entry.notice(notice);
        }
    }

    /// A session actor is gone. If it never reported the end of its run (it stopped
    /// some other way, or panicked), the run ends here with an error, so nothing waits
    /// on it forever; an idle main session that died is marked ended, so the next task
    /// starts a new one.
    fn session_gone(&mut self, msg: SessionGone) {
        if self.across.pausing() {
            // Stopped for a restart: its run stays `running` in the store.
            return;
        }
        let state = self.registry.get(&msg.key).map(|e| (e.status, e.run_id.clone()));
        match state {
            Some((Status::Running, run_id)) if run_id == msg.run_id => {
                tracing::error!(session = %msg.key, "session actor stopped without reporting the end of its run");
                self.end_run(
                    &msg.key,
                    &run_id,
                    Outcome::Error,
                    "the session actor stopped without reporting the end of its run".into(),
                    Usage::default(),
                    None,
                );
            }
            Some((Status::Idle, _)) => self.stop_idle(&msg.key),
            _ => {}
        }
    }

    /// A follow-up for an idle `mode: "session"` child: a new run with the same run id
    /// (its task id) and capability. Only its parent may give one, so the parent is the
    /// one waiting for its end again.
    fn follow_up(
        &mut self,
        caller: &Option<Capability>,
        target: &SessionKey,
        addr: Addr<Session>,
        text: String,
    ) -> Result<SendOutcome, GatewayError> {
        let (parent, run_id, capability) = {
            let entry = self.registry.get(target).ok_or_else(|| GatewayError::NoSuchSession(target.clone()))?;
            (entry.parent.clone(), entry.run_id.clone(), entry.capability.clone())
        };
        let parent = parent.ok_or_else(|| GatewayError::Ended(target.clone()))?;
        if caller.as_ref().map(|c| c.principal()) != Some(&parent) {
            return Err(GatewayError::NotParent { target: target.clone(), parent });
        }
        if self.across.shutting_down() {
            return Err(GatewayError::ShuttingDown);
        }
        capability.check(Instant::now())?;
        // A follow-up runs the child again: the limits a spawn meets apply.
        let (parent_agent, active) = self
            .registry
            .get(&parent)
            .map(|p| (p.agent_id.clone(), p.active_children))
            .ok_or_else(|| GatewayError::NoSuchSession(parent.clone()))?;
        let agent = self.agents.get(&parent_agent).ok_or(GatewayError::UnknownAgent(parent_agent.to_string()))?;
        spawn::room(&self.registry, &self.limits, &agent.subagents, active)
            .map_err(|hit| GatewayError::Limit(hit.error))?;
        if let Some(mut entry) = self.registry.get_mut(target) {
            self.registry.set_status(&mut entry, Status::Running);
            entry.clear_last_run();
            entry.follow_ups += 1;
            let run = RunRow {
                run_id: run_id.clone(),
                task: text.clone(),
                model: entry.model.clone(),
                started_at_ms: crate::store::now_ms(),
            };
            let follow_up = entry.follow_ups;
            let start = RunStart { key: target.clone(), run, grant: None, follow_up };
            self.journal.record(Record::RunStarted(Box::new(start)));
        }
        if let Some(mut entry) = self.registry.get_mut(&parent) {
            entry.active_children += 1;
        }
        addr.do_send(StartRun { run_id: run_id.clone(), capability, task: text });
        self.emit_started(target);
        Ok(SendOutcome::Resumed { run_id })
    }

    /// Stop an idle session (a main session, or a `session` child waiting for
    /// follow-ups): its actor goes, its capability is revoked (an idle child's was kept
    /// for its follow-ups), and its record joins the retained ended ones.
    fn stop_idle(&mut self, key: &SessionKey) {
        let keep = {
            let Some(mut entry) = self.registry.get_mut(key).filter(|e| e.status == Status::Idle) else { return };
            self.registry.set_status(&mut entry, Status::Ended);
            self.journal.record(Record::Stopped { key: key.clone() });
            entry.capability.revoke();
            if let Some(addr) = entry.addr.take() {
                addr.do_send(Terminate);
            }
            entry.cleanup == Cleanup::Keep
        };
        if keep {
            self.retain_ended(key);
        }
    }
}

impl Actor for Gateway {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bursts of spawns queue here rather than parking every sender.
        ctx.set_mailbox_capacity(1 << 20);
        // One shard per session thread: this one keeps its thread's heap returning what
        // the store and others free for it while its sessions sit parked. The timer
        // would keep the shard alive; it stops, as it would without it, once nothing
        // can reach it.
        ctx.run_interval(crate::memory::GIVE_BACK_EVERY, |gateway, ctx| {
            if ctx.connected() {
                crate::memory::give_back();
                gateway.stats.record_give_back(gateway.shard);
            } else {
                ctx.stop();
            }
        });
    }
}

impl Handler<Spawn> for Gateway {
    type Result = MessageResult<Spawn>;

    fn handle(&mut self, msg: Spawn, ctx: &mut Self::Context) -> Self::Result {
        if self.across.shutting_down() {
            return MessageResult(SpawnReply::Error { error: GatewayError::ShuttingDown.to_string() });
        }
        let cx = spawn::SpawnContext {
            registry: &self.registry,
            agents: &self.agents,
            limits: &self.limits,
            models: &*self.model,
            workers: self.remote.as_ref().is_some_and(|r| r.queues()),
        };
        MessageResult(match spawn::plan(&cx, &msg.parent, msg.request, msg.history, Instant::now()) {
            Ok(plan) => {
                let reply = self.start_child(plan, msg.call_id, msg.trace, ctx);
                self.stats.record_spawn_latency(msg.sent_at.elapsed());
                reply
            }
            Err(refused) => {
                self.refused(msg.parent.principal(), &refused);
                refused
            }
        })
    }
}

impl Handler<StartMain> for Gateway {
    type Result = ResponseFuture<Result<RunStarted, GatewayError>>;

    /// Answered once the run's start is on disk: an operator told a run id can always
    /// wait for it, even across a crash (a spawn does not wait: its parent's journal
    /// covers it).
    fn handle(&mut self, msg: StartMain, ctx: &mut Self::Context) -> Self::Result {
        let started = self.start_main(msg, ctx);
        let flush = started.is_ok().then(|| self.store.as_ref().map(Store::flush)).flatten();
        Box::pin(async move {
            if let Some(flush) = flush {
                flush.await;
            }
            started
        })
    }
}

impl Handler<RunEnded> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, _: &mut Self::Context) {
        self.end_run(&msg.key, &msg.run_id, msg.outcome, msg.text, msg.usage, Some(msg.transcript));
    }
}

impl Handler<SessionGone> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: SessionGone, _: &mut Self::Context) {
        self.session_gone(msg);
    }
}

impl Handler<ModelCalled> for Gateway {
    type Result = ();

    fn handle(&mut self, msg: ModelCalled, _: &mut Self::Context) {
        if let Some(mut entry) = self.registry.get_mut(&msg.key) {
            entry.usage.add(msg.usage);
            if msg.usage != Usage::default() {
                let (key, run_id, usage) = (&msg.key, &entry.run_id, entry.usage);
                self.events.emit(|| SessionEvent::Used { session_key: key.clone(), run_id: run_id.clone(), usage });
            }
            for notice in msg.notices {
                // The same notice again (a provider that never reports usage) says nothing new.
                if entry.notices().contains(&notice) {
                    continue;
                }
                let key = &msg.key;
                self.events.emit(|| SessionEvent::Noticed { session_key: key.clone(), notice: notice.clone() });
                entry.notice(notice);
            }
            let model_changed = msg.model.is_some();
            if let Some(model) = msg.model {
                entry.model = model;
            }
            if msg.usage != Usage::default() || model_changed {
                self.journal.record(Record::Used(Box::new(UsedRow {
                    key: msg.key.clone(),
                    usage: entry.usage,
                    model: entry.model.clone(),
                })));
            }
        }
    }
}

impl Handler<Kill> for Gateway {
    type Result = Result<usize, GatewayError>;

    fn handle(&mut self, msg: Kill, _: &mut Self::Context) -> Self::Result {
        self.kill(msg)
    }
}

impl Handler<ListSessions> for Gateway {
    type Result = Result<Vec<SessionInfo>, GatewayError>;

    fn handle(&mut self, msg: ListSessions, _: &mut Self::Context) -> Self::Result {
        let Some(cap) = &msg.caller else {
            return Ok(self.registry.list());
        };
        self.visible(&msg.caller, "sessions_list", cap.principal())?;
        let mut keys = self.registry.descendants(cap.principal());
        keys.insert(0, cap.principal().clone());
        Ok(keys.iter().filter_map(|k| self.registry.get(k).map(|e| self.registry.info(&e))).collect())
    }
}

impl Handler<GetHistory> for Gateway {
    type Result = ResponseFuture<Result<Vec<ChatMessage>, GatewayError>>;

    fn handle(&mut self, msg: GetHistory, _: &mut Self::Context) -> Self::Result {
        let found = self.visible(&msg.caller, "sessions_history", &msg.target).and_then(|()| {
            let entry =
                self.registry.get(&msg.target).ok_or_else(|| GatewayError::NoSuchSession(msg.target.clone()))?;
            Ok((entry.addr.clone(), entry.transcript().cloned()))
        });
        let store = self.store.clone();
        Box::pin(async move {
            match found? {
                (_, Some(transcript)) => Ok(transcript),
                (Some(addr), None) => addr.send(GetTranscript).await.map_err(|_| GatewayError::Ended(msg.target)),
                // A session restored from the store (it ended before this start).
                (None, None) => match store {
                    Some(store) => store.transcript(msg.target).await.map_err(|e| GatewayError::Store(e.to_string())),
                    None => Ok(Vec::new()),
                },
            }
        })
    }
}

impl Handler<SendTo> for Gateway {
    type Result = Result<SendOutcome, GatewayError>;

    fn handle(&mut self, msg: SendTo, ctx: &mut Self::Context) -> Self::Result {
        self.visible(&msg.caller, "sessions_send", &msg.target)?;
        if self.across.shutting_down() {
            // A stopping session would drop the message with its inbox.
            return Err(GatewayError::ShuttingDown);
        }
        let state = self.registry.get(&msg.target).map(|e| (e.status, e.addr.clone(), e.agent_id.clone()));
        let from = msg.caller.as_ref().map_or_else(|| "operator".to_string(), |c| c.principal().to_string());
        match state {
            None => Err(GatewayError::NoSuchSession(msg.target)),
            Some((Status::Running | Status::Idle, None, _)) if self.registry.placement(&msg.target).is_some() => {
                Err(GatewayError::OnWorker(msg.target))
            }
            Some((Status::Running, Some(addr), _)) => {
                addr.do_send(Deliver { from, text: msg.text });
                Ok(SendOutcome::Delivered)
            }
            Some((Status::Idle, Some(addr), _)) if addr.connected() && !msg.target.is_main() => {
                self.follow_up(&msg.caller, &msg.target, addr, msg.text)
            }
            // An idle main session takes the message as its next run.
            Some((Status::Idle, Some(addr), agent_id)) if addr.connected() => {
                let start = StartMain { session_key: Some(msg.target), ..StartMain::new(&*agent_id, &msg.text) };
                self.start_main(start, ctx).map(|run| SendOutcome::Started { run_id: run.run_id })
            }
            Some(_) => Err(GatewayError::Ended(msg.target)),
        }
    }
}

impl Handler<WaitRun> for Gateway {
    type Result = Result<oneshot::Receiver<RunSummary>, GatewayError>;

    fn handle(&mut self, msg: WaitRun, _: &mut Self::Context) -> Self::Result {
        let key =
            self.registry.session_of_run(&msg.run_id).ok_or_else(|| GatewayError::NoSuchRun(msg.run_id.clone()))?;
        let entry = self.registry.get(&key).ok_or_else(|| GatewayError::NoSuchRun(msg.run_id.clone()))?;
        let (sender, receiver) = oneshot::channel();
        if entry.run_id != msg.run_id {
            return Err(GatewayError::NoSuchRun(msg.run_id));
        }
        match (entry.status, entry.outcome) {
            (Status::Running, _) => self.across.waiters().entry(msg.run_id).or_default().push(sender),
            (_, outcome) => {
                let _ = sender.send(RunSummary {
                    run_id: msg.run_id,
                    session_key: key.clone(),
                    outcome: outcome.unwrap_or(Outcome::Interrupted),
                    text: entry.final_text().unwrap_or_default().to_string(),
                    usage: entry.usage,
                });
            }
        }
        Ok(receiver)
    }
}

impl Handler<Shutdown> for Gateway {
    type Result = usize;

    /// Each shard stops the trees it owns; the runtime sends this to every shard and
    /// adds up what they answer.
    fn handle(&mut self, msg: Shutdown, _: &mut Self::Context) -> usize {
        self.across.stop(msg.resume_later);
        let sessions = self.registry.of_shard(self.shard);
        let running = sessions.iter().filter(|s| s.status == Status::Running).count();
        if msg.resume_later {
            for addr in sessions.iter().filter_map(|s| s.addr.as_ref()) {
                addr.do_send(Pause);
            }
            return running;
        }
        for root in sessions.iter().filter(|s| s.root) {
            if root.status == Status::Running {
                self.end_run(
                    &root.key,
                    &root.run_id,
                    Outcome::Interrupted,
                    "interrupted: gateway stopping".into(),
                    Usage::default(),
                    None,
                );
            } else {
                self.stop_idle(&root.key);
            }
        }
        running
    }
}

/// A capability's authority as the store records it.
fn grant(cap: &Capability, budget_tokens: Option<u64>, budget_micro_usd: Option<u64>) -> Grant {
    let now = (Instant::now(), crate::store::now_ms());
    Grant {
        scopes: cap.scopes().bits(),
        depth: cap.depth(),
        max_depth: cap.max_depth(),
        deadline_ms: cap
            .deadline()
            .map(|d| now.1.saturating_add(d.saturating_duration_since(now.0).as_millis() as u64)),
        budget_tokens,
        budget_micro_usd,
    }
}
