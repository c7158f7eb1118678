//! The session actor: one per session, main or subagent, running the agent loop.
//!
//! The actor is a shell around the pure [`turn::Turn`]: it performs what the turn asks
//! (call the model, run tools, finish) and feeds back what happened. Model calls and tool
//! batches run as futures spawned into the actor's context, so stopping the actor (a
//! kill) drops them: an in-flight HTTP request is aborted, not awaited. The run's
//! deadline is a context timer that ends the run `timeout`. A session never reaches
//! another session directly; everything goes through the gateway, carrying this
//! session's capability.

pub mod announce;
pub mod tools;
pub mod turn;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::agent::AgentDef;
use crate::capability::{micro_usd, Capability};
use crate::gateway::{Events, Gateway, ModelCalled, Outcome, RunEnded, SessionGone, Stats};
use crate::keys::{RunId, SessionKey};
use crate::model::pricing::Pricing;
use crate::model::thinking::Thinking;
use crate::model::{ChatRequest, Message, ModelClient, ModelRef, Usage};
pub use announce::Announcement;
use tools::{ToolEnv, ToolOutput};
use turn::{Next, Turn};

/// Everything a session starts with; the capability arrives here, inside the spawn.
pub struct SessionInit {
    pub key: SessionKey,
    pub run_id: RunId,
    pub agent: Arc<AgentDef>,
    pub model: ModelRef,
    /// Fall back through the agent's `fallbacks` when `model` fails after its retries;
    /// false for a model a spawn named, which is strict.
    pub may_fall_back: bool,
    pub capability: Capability,
    pub task: String,
    pub gateway: Addr<Gateway>,
    pub models: Arc<dyn ModelClient>,
    pub pricing: Arc<Pricing>,
    pub stats: Arc<Stats>,
    pub nodes: Option<Recipient<crate::hub::InvokeNode>>,
    /// Where streamed answer text is published.
    pub events: Events,
    /// Stay idle after an ok run for more runs (main sessions, `mode: "session"` children).
    pub stays: bool,
    /// The parent's conversation, for a `context: "fork"` child.
    pub history: Option<Arc<[Message]>>,
    /// The reasoning level the spawn asked for.
    pub thinking: Option<Thinking>,
}

pub struct Session {
    key: SessionKey,
    run_id: RunId,
    agent: Arc<AgentDef>,
    model: ModelRef,
    /// The next of the agent's fallbacks to try; `None` when none may be tried.
    next_fallback: Option<u8>,
    capability: Capability,
    gateway: Addr<Gateway>,
    models: Arc<dyn ModelClient>,
    pricing: Arc<Pricing>,
    stats: Arc<Stats>,
    nodes: Option<Recipient<crate::hub::InvokeNode>>,
    events: Events,
    turn: Turn,
    pending_task: Option<String>,
    deadline_timer: Option<SpawnHandle>,
    finished: bool,
    stays: bool,
    thinking: Option<Thinking>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildEnded(pub Announcement);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub from: String,
    pub text: String,
}

/// Stop now; the gateway has already recorded the outcome.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Terminate;

#[derive(Message)]
#[rtype(result = "Vec<Message>")]
pub struct GetTranscript;

/// A new run for an idle session (a main session's next task, a `session` child's
/// follow-up).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartRun {
    pub run_id: RunId,
    pub capability: Capability,
    pub task: String,
}

impl Session {
    pub fn new(init: SessionInit) -> Session {
        let system = format!(
            "{}\n\nYou are session {} (agent {}, depth {}).",
            init.agent.system_prompt.trim_end(),
            init.key,
            init.agent.id,
            init.capability.depth()
        );
        let mut turn = Turn::new(&system);
        let mut task = init.task;
        if let Some(history) = &init.history {
            turn.inherit(history);
            task = format!(
                "[Subagent Context] You are running as a subagent (depth {}). Complete the current [Subagent Task]; the inherited conversation is background context, not your assignment.\n\n[Subagent Task]\n\n{task}",
                init.capability.depth()
            );
        }
        Session {
            turn,
            key: init.key,
            run_id: init.run_id,
            agent: init.agent,
            model: init.model,
            next_fallback: init.may_fall_back.then_some(0),
            capability: init.capability,
            gateway: init.gateway,
            models: init.models,
            pricing: init.pricing,
            stats: init.stats,
            nodes: init.nodes,
            events: init.events,
            pending_task: Some(task),
            deadline_timer: None,
            finished: false,
            stays: init.stays,
            thinking: init.thinking,
        }
    }

    fn begin(&mut self, task: String, ctx: &mut Context<Self>) {
        self.finished = false;
        if let Some(deadline) = self.capability.deadline() {
            let after = deadline.saturating_duration_since(Instant::now());
            self.deadline_timer = Some(ctx.run_later(after, move |act, ctx| {
                act.finish(Outcome::Timeout, format!("timed out after {:.1} s", after.as_secs_f64()), ctx)
            }));
        }
        let next = self.turn.start(task);
        self.step(next, ctx);
    }

    fn step(&mut self, next: Next, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        match next {
            Next::CallModel => self.call_model(ctx),
            Next::RunTools(calls) => self.run_tools(calls, ctx),
            Next::Wait => {}
            Next::Finish(outcome, text) => self.finish(outcome, text, ctx),
        }
    }

    fn call_model(&mut self, ctx: &mut Context<Self>) {
        if let Err(e) = self.capability.check(Instant::now()) {
            return self.finish(Outcome::Error, e.to_string(), ctx);
        }
        if self.capability.remaining_budget() == Some(0) {
            return self.finish(Outcome::Error, "token budget exhausted".into(), ctx);
        }
        if self.capability.remaining_cost() == Some(0) {
            return self.finish(Outcome::Error, "cost budget exhausted".into(), ctx);
        }
        let request = ChatRequest {
            model: self.model.clone(),
            messages: self.turn.request_messages(),
            tools: self.agent.tool_specs.clone(),
            stream_to: self.events.text_sink(&self.key, &self.run_id),
            thinking: self.thinking,
        };
        let call = self.models.complete(request);
        ctx.spawn(call.into_actor(self).map(move |result, act, ctx| match result {
            Ok(mut response) => {
                act.pricing.charge(&act.model, &mut response.usage);
                act.called(response.usage, std::mem::take(&mut response.notices), None);
                let (spent, cost) = (response.usage.total(), response.usage.cost_usd);
                let next = act.turn.on_response(response);
                // A call that takes the tree past its budget ends the run here: its
                // tool calls are not run and no further call is made.
                if let Err(e) = act.capability.charge(spent) {
                    return act.finish(Outcome::Error, format!("{e} (this call used {spent} tokens)"), ctx);
                }
                if let Err(e) = act.capability.charge_cost(micro_usd(cost)) {
                    return act.finish(Outcome::Error, format!("{e} (this call cost ${cost:.6})"), ctx);
                }
                act.step(next, ctx);
            }
            Err(e) => {
                let (e, notices) = e.into_parts();
                act.called(Usage::default(), notices, None);
                match act.take_fallback() {
                    Some(next) => {
                        let notice = format!("fell back from {} to {next}: {}", act.model, e.short_reason());
                        act.called(Usage::default(), vec![notice], Some(next.clone()));
                        act.model = next;
                        act.call_model(ctx);
                    }
                    None => act.finish(Outcome::Error, format!("model call failed: {e}"), ctx),
                }
            }
        }));
    }

    /// The next fallback model of the agent, if one may still be tried.
    fn take_fallback(&mut self) -> Option<ModelRef> {
        let at = self.next_fallback?;
        let model = self.agent.fallbacks.get(usize::from(at)).cloned()?;
        self.next_fallback = at.checked_add(1);
        Some(model)
    }

    /// Tell the gateway what a call spent and what the operator should see of it.
    fn called(&self, usage: Usage, notices: Vec<String>, model: Option<ModelRef>) {
        if usage != Usage::default() || !notices.is_empty() || model.is_some() {
            self.gateway.do_send(ModelCalled { key: self.key.clone(), usage, notices, model });
        }
    }

    fn run_tools(&mut self, calls: Vec<crate::model::ToolCall>, ctx: &mut Context<Self>) {
        // A spawn that may ask for `context: "fork"` gets the conversation so far (copied
        // only then; the exact check is the spawn's).
        let forks = calls.iter().any(|c| c.name == "sessions_spawn" && c.arguments.contains("fork"));
        let env = ToolEnv {
            history: forks.then(|| turn::forked(self.turn.transcript()).into()),
            gateway: self.gateway.clone(),
            nodes: self.nodes.clone(),
            capability: self.capability.clone(),
            agent: self.agent.clone(),
            stats: self.stats.clone(),
        };
        let (events, key, run_id) = (self.events.clone(), self.key.clone(), self.run_id.clone());
        let batch = async move {
            let mut results: Vec<(String, ToolOutput)> = Vec::with_capacity(calls.len());
            for call in calls {
                events.emit(|| tools::started(&key, &run_id, &call));
                let output = tools::execute(&env, &call).await;
                events.emit(|| tools::ended(&key, &run_id, &call, &output));
                results.push((call.id, output));
            }
            results
        };
        ctx.spawn(batch.into_actor(self).map(|results, act, ctx| {
            let next = act.turn.on_tool_results(results);
            act.step(next, ctx);
        }));
    }

    fn finish(&mut self, outcome: Outcome, text: String, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some(timer) = self.deadline_timer.take() {
            ctx.cancel_future(timer);
        }
        let stays = self.stays && outcome == Outcome::Ok;
        let transcript = if stays { self.turn.transcript().to_vec() } else { self.turn.take_transcript() };
        self.gateway.do_send(RunEnded {
            key: self.key.clone(),
            run_id: self.run_id.clone(),
            outcome,
            text,
            usage: self.turn.usage(),
            transcript,
        });
        // Mirrors the gateway: only a session that stays and finished ok waits for more.
        if !stays {
            ctx.stop();
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.stats.session_started();
        if let Some(task) = self.pending_task.take() {
            self.begin(task, ctx);
        }
    }
}

/// However the actor ends (stopped, killed, or its task panicked and was dropped), it
/// is counted out, and the gateway hears of it unless it already reported its run's
/// end and was not a main session (an idle main session may die too).
impl Drop for Session {
    fn drop(&mut self) {
        self.stats.session_stopped();
        if !self.finished || self.stays {
            self.gateway.do_send(SessionGone { key: self.key.clone(), run_id: self.run_id.clone() });
        }
    }
}

impl Handler<ChildEnded> for Session {
    type Result = ();

    fn handle(&mut self, msg: ChildEnded, ctx: &mut Self::Context) {
        let next = self.turn.on_child_ended(msg.0.render());
        self.step(next, ctx);
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let next = self.turn.on_message(format!("[message from {}]\n{}", msg.from, msg.text));
        self.step(next, ctx);
    }
}

impl Handler<Terminate> for Session {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Self::Context) {
        self.finished = true;
        ctx.stop();
    }
}

impl Handler<GetTranscript> for Session {
    type Result = MessageResult<GetTranscript>;

    fn handle(&mut self, _: GetTranscript, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.turn.transcript().to_vec())
    }
}

impl Handler<StartRun> for Session {
    type Result = ();

    fn handle(&mut self, msg: StartRun, ctx: &mut Self::Context) {
        self.run_id = msg.run_id;
        self.capability = msg.capability;
        // A main session's new run starts on the agent's own model again, with all its
        // fallbacks; a `session` child's follow-up goes on with the model it ended on
        // (the spawn's, or the fallback it had moved to).
        if self.key.is_main() {
            self.model = self.agent.model.clone();
            self.next_fallback = Some(0);
        }
        self.begin(msg.task, ctx);
    }
}
