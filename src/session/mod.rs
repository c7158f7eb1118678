//! The session actor: one per session, main or subagent, running the agent loop.
//!
//! The actor is a shell around the pure [`turn::Turn`]: it performs what the turn asks
//! (call the model, run tools, finish) and feeds back what happened. Model calls and tool
//! batches run as futures spawned into the actor's context, so stopping the actor (a
//! kill) drops them: an in-flight HTTP request is aborted, not awaited. The run's
//! deadline is a context timer that ends the run `timeout`. A session never reaches
//! another session directly; everything goes through the gateway, carrying this
//! session's capability.
//!
//! Durability: at every step boundary the session journals the transcript messages it
//! has not journaled yet (before it calls the model, before it runs tools, before it
//! reports its end), and each tool result as soon as the tool returns. A session
//! restarted after a crash ([`Restored`]) starts from its journaled transcript.

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
use crate::store::recovery::CallAction;
use crate::store::{Journal, Journaled, Record, ToolResultRow};
use crate::telemetry::{genai, SessionTrace};
pub use announce::Announcement;
use tools::{ToolEnv, ToolOutput};
use turn::{Next, Turn};

/// What every session of a gateway shares, behind one reference count: a spawn clones
/// one pointer, and a parked session holds one.
pub struct Shared {
    pub gateway: Addr<Gateway>,
    pub models: Arc<dyn ModelClient>,
    pub pricing: Arc<Pricing>,
    pub stats: Arc<Stats>,
    pub nodes: Option<Recipient<crate::hub::InvokeNode>>,
    /// Where streamed answer text is published.
    pub events: Events,
    /// Where transcripts and tool results are recorded.
    pub journal: Journal,
    /// `exec`'s timeouts and output cap.
    pub exec_limits: Arc<crate::tools::exec::ExecLimits>,
    /// The gateway's MCP servers.
    pub mcp: Arc<crate::tools::mcp::McpServers>,
}

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
    pub shared: Arc<Shared>,
    /// Stay idle after an ok run for more runs (main sessions, `mode: "session"` children).
    pub stays: bool,
    /// The parent's conversation, for a `context: "fork"` child.
    pub history: Option<Arc<[Message]>>,
    /// The reasoning level the spawn asked for.
    pub thinking: Option<Thinking>,
    /// A run resumed after a restart, instead of `task`.
    pub restored: Option<Box<Restored>>,
    /// The parent's run span, when traces are exported.
    pub trace: Option<crate::telemetry::TraceParent>,
}

/// A run picked up again after a restart: its journaled transcript, the announcements
/// already in it, its children so far, its usage, and what to do about the calls of
/// its last turn that have no result ([`crate::store::recovery::unanswered`]).
pub struct Restored {
    pub transcript: Vec<Message>,
    pub delivered: Vec<(u32, RunId)>,
    /// The current run's children: spawned, and ended as far as the transcript shows.
    pub children: (usize, usize),
    /// The journal position of the transcript's first message minus its index (the
    /// journal may have gaps where a write was lost).
    pub seq_offset: u32,
    pub usage: Usage,
    pub calls: Vec<CallAction>,
    /// The run's task when the journal does not show the run begun (its first
    /// message was not written before the crash): the run begins with it.
    pub begin: Option<String>,
}

pub struct Session {
    key: SessionKey,
    run_id: RunId,
    agent: Arc<AgentDef>,
    model: ModelRef,
    /// The next of the agent's fallbacks to try; `None` when none may be tried.
    next_fallback: Option<u8>,
    capability: Capability,
    shared: Arc<Shared>,
    /// Its first run's task is in the transcript already when the actor starts
    /// ([`Session::new`] begins the turn, so the task is not held twice): `begun` says
    /// the run is to begin then.
    turn: Turn,
    begun: bool,
    /// Set for a restored run until it starts.
    /// (A boxed slice, not a `Vec`: every session holds this field inline in its actor's
    /// task, which tokio allocates in 128-byte steps.)
    restored_calls: Option<Box<[CallAction]>>,
    /// The run's deadline timer and its length in seconds (kept here, not in the timer's
    /// closure: a closure that captures nothing is not allocated).
    deadline_timer: Option<(SpawnHandle, f64)>,
    /// Transcript messages already sent to the journal.
    journaled: u32,
    /// A message's journal position is its transcript index plus this.
    seq_offset: u32,
    finished: bool,
    stays: bool,
    /// Stop at the next step boundary (a graceful shutdown): the run stays `running`
    /// in the store and resumes at the next start.
    pausing: bool,
    /// A model call or a tool batch is under way.
    in_flight: bool,
    thinking: Option<Thinking>,
    /// Its spans; empty unless traces are exported (`crate::telemetry::genai`).
    trace: SessionTrace,
}

/// Append `n` in decimal, without the formatting machinery (once per spawn).
fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// How many messages [`opening`] makes: the system prompt and the task.
pub const OPENING: u32 = 2;

/// The first messages of a session that did not fork, as it made them: what recovery
/// puts back before its journaled transcript (which starts after them).
pub fn opening(key: &SessionKey, agent: &AgentDef, capability: &Capability, task: String) -> Vec<Message> {
    let (mut turn, task) = Session::first_turn(key, agent, capability, task, None);
    let mut messages = turn.take_transcript();
    messages.push(Message::User { content: task });
    messages
}

/// A child's end, as its completion event, with the idempotency key (the child's run
/// id) that keeps a second delivery out of the transcript.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildEnded {
    pub id: RunId,
    pub text: String,
}

/// Stop at the next step boundary without ending the run (graceful shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause;

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
        let pending_task;
        let mut restored_calls = None;
        let mut seq_offset = 0;
        let forked = init.history.is_some();
        let mut turn = match init.restored {
            Some(restored) => {
                let Restored { transcript, delivered, children, usage, calls, seq_offset: offset, begin } = *restored;
                restored_calls = Some(calls.into_boxed_slice());
                seq_offset = offset;
                pending_task = begin;
                Turn::restore(transcript, delivered, children, usage)
            }
            None => {
                let (turn, task) =
                    Session::first_turn(&init.key, &init.agent, &init.capability, init.task, init.history);
                pending_task = Some(task);
                turn
            }
        };
        let journaled = match (&restored_calls, forked) {
            // A restored transcript is journaled already.
            (Some(_), _) => turn.transcript().len() as u32,
            // A child's system prompt and task ([`opening`]) are made again from its
            // record, so a spawn journals nothing of its own. A fork's inherited
            // conversation cannot be made again, and a main session's first task is
            // not its run's once it has had more runs: those are journaled.
            (None, false) if !init.key.is_main() => OPENING,
            (None, _) => 0,
        };
        // The run's first step is taken when the actor starts; its task goes into the
        // transcript now.
        let begun = match pending_task {
            Some(task) => {
                let _ = turn.start(task);
                true
            }
            None => false,
        };
        Session {
            journaled,
            seq_offset,
            turn,
            key: init.key,
            run_id: init.run_id,
            agent: init.agent,
            model: init.model,
            next_fallback: init.may_fall_back.then_some(0),
            capability: init.capability,
            shared: init.shared,
            begun,
            restored_calls,
            deadline_timer: None,
            finished: false,
            stays: init.stays,
            pausing: false,
            in_flight: false,
            thinking: init.thinking,
            trace: SessionTrace::new(init.trace),
        }
    }

    /// A new session's turn (its system prompt, a fork's inherited conversation) and
    /// its first task. The system prompt is never empty.
    fn first_turn(
        key: &SessionKey,
        agent: &AgentDef,
        capability: &Capability,
        task: String,
        history: Option<Arc<[Message]>>,
    ) -> (Turn, String) {
        // Appended rather than formatted: this runs once per spawn.
        let prompt = agent.system_prompt.trim_end();
        let mut system = String::with_capacity(prompt.len() + key.as_str().len() + agent.id.len() + 48);
        system.push_str(prompt);
        system.push_str("\n\nYou are session ");
        system.push_str(key.as_str());
        system.push_str(" (agent ");
        system.push_str(&agent.id);
        system.push_str(", depth ");
        push_decimal(&mut system, capability.depth());
        system.push_str(").");
        let mut turn = Turn::new(system);
        let mut task = task;
        if let Some(history) = &history {
            turn.inherit(history);
            task = format!(
                "[Subagent Context] You are running as a subagent (depth {}). Complete the current [Subagent Task]; the inherited conversation is background context, not your assignment.\n\n[Subagent Task]\n\n{task}",
                capability.depth()
            );
        }
        (turn, task)
    }

    fn begin(&mut self, task: String, ctx: &mut Context<Self>) {
        let next = self.turn.start(task);
        self.run_from(next, ctx);
    }

    /// A run whose task is in the turn already goes on with `next`.
    fn run_from(&mut self, next: Next, ctx: &mut Context<Self>) {
        self.finished = false;
        self.arm_deadline(ctx);
        self.trace.run_started(&self.agent, &self.key, &self.run_id, &self.model);
        self.step(next, ctx);
    }

    /// Pick a restored run up where its journal ends.
    fn resume(&mut self, calls: Vec<CallAction>, ctx: &mut Context<Self>) {
        self.arm_deadline(ctx);
        self.trace.run_started(&self.agent, &self.key, &self.run_id, &self.model);
        let next = self.turn.resume(calls);
        self.step(next, ctx);
    }

    fn arm_deadline(&mut self, ctx: &mut Context<Self>) {
        if let Some(deadline) = self.capability.deadline() {
            let after = deadline.saturating_duration_since(Instant::now());
            let timer = ctx.run_later(after, |act, ctx| {
                let secs = act.deadline_timer.map_or(0.0, |(_, secs)| secs);
                act.finish(Outcome::Timeout, format!("timed out after {secs:.1} s"), ctx)
            });
            self.deadline_timer = Some((timer, after.as_secs_f64()));
        }
    }

    /// Send the transcript messages not journaled yet, with the announcements among them.
    fn journal(&mut self) {
        let transcript = self.turn.transcript();
        let from = self.journaled as usize;
        if from >= transcript.len() {
            return;
        }
        let offset = self.seq_offset;
        let delivers = self.turn.delivered_from(from as u32).into_iter().map(|(i, id)| (i + offset, id)).collect();
        self.shared.journal.record(Record::Messages(Box::new(Journaled {
            key: self.key.clone(),
            run_id: self.run_id.clone(),
            first_seq: self.journaled + offset,
            messages: transcript[from..].to_vec(),
            delivers,
        })));
        self.journaled = transcript.len() as u32;
    }

    fn step(&mut self, next: Next, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        if self.pausing && !self.in_flight {
            match next {
                Next::Finish(..) => {}
                // The model's calls are not started while stopping: its answer is not
                // journaled, and after the restart the model is asked again.
                Next::RunTools(_) => return self.pause_now(ctx),
                Next::CallModel | Next::Wait => {
                    self.journal();
                    return self.pause_now(ctx);
                }
            }
        }
        self.journal();
        match next {
            Next::CallModel => self.call_model(ctx),
            Next::RunTools(calls) => self.run_tools(calls, ctx),
            Next::Wait => {}
            Next::Finish(outcome, text) => self.finish(outcome, text, ctx),
        }
    }

    /// Stop at a step boundary with the run still `running` in the store.
    fn pause_now(&mut self, ctx: &mut Context<Self>) {
        self.finished = true;
        ctx.stop();
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
        let tools = match self.agent.mcp.is_empty() {
            true => self.agent.tool_specs.clone(),
            false => match self.shared.mcp.specs(&self.agent.id) {
                Some(tools) => tools,
                None => return self.load_mcp_tools(ctx),
            },
        };
        let messages = self.turn.request_messages();
        // The announcements just taken into the transcript are delivered once journaled.
        self.journal();
        let request = ChatRequest {
            model: self.model.clone(),
            messages,
            tools,
            stream_to: self.shared.events.text_sink(&self.key, &self.run_id),
            thinking: self.thinking,
        };
        self.trace.chat_started(&self.key, &self.model);
        let call = self.shared.models.complete(request);
        self.in_flight = true;
        ctx.spawn(call.into_actor(self).map(move |result, act, ctx| match result {
            Ok(mut response) => {
                act.in_flight = false;
                act.shared.pricing.charge(&act.model, &mut response.usage);
                act.shared.stats.metrics().model_used(&act.model, &response.usage);
                act.trace.chat_ended(&act.model, Ok(&response.usage));
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
                act.in_flight = false;
                let (e, notices) = e.into_parts();
                act.trace.chat_ended(&act.model, Err(&e));
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

    /// The first model call of an agent with MCP servers waits for them to start and
    /// list their tools (once per agent and gateway), then is made; a server that
    /// cannot start ends the run with the reason.
    fn load_mcp_tools(&mut self, ctx: &mut Context<Self>) {
        let (mcp, agent) = (self.shared.mcp.clone(), self.agent.clone());
        self.in_flight = true;
        let load = async move { mcp.load_specs(&agent).await };
        ctx.spawn(load.into_actor(self).map(|result, act, ctx| {
            act.in_flight = false;
            match result {
                // Through `step`, so a pause that came meanwhile is honoured.
                Ok(_) => act.step(Next::CallModel, ctx),
                // Stopping: the run resumes at the next start, which tries again.
                Err(_) if act.pausing => act.step(Next::CallModel, ctx),
                Err(e) => act.finish(Outcome::Error, e.to_string(), ctx),
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
            self.shared.gateway.do_send(ModelCalled { key: self.key.clone(), usage, notices, model });
        }
    }

    fn run_tools(&mut self, calls: Vec<crate::model::ToolCall>, ctx: &mut Context<Self>) {
        // A spawn that may ask for `context: "fork"` gets the conversation so far (copied
        // only then; the exact check is the spawn's).
        let forks = calls.iter().any(|c| c.name == "sessions_spawn" && c.arguments.contains("fork"));
        // The journal position of the turn that made these calls: with the call id, what
        // the journal records each result under (call ids repeat across turns).
        let transcript = self.turn.transcript();
        let at = transcript.iter().rposition(|m| matches!(m, Message::Assistant { .. })).unwrap_or(0);
        let env = ToolEnv {
            turn: at as u32 + self.seq_offset,
            history: forks.then(|| turn::forked(self.turn.transcript()).into()),
            gateway: self.shared.gateway.clone(),
            nodes: self.shared.nodes.clone(),
            capability: self.capability.clone(),
            agent: self.agent.clone(),
            stats: self.shared.stats.clone(),
            exec_limits: self.shared.exec_limits.clone(),
            mcp: self.shared.mcp.clone(),
            trace: self.trace.children_parent(),
        };
        let (shared, key, run_id) = (self.shared.clone(), self.key.clone(), self.run_id.clone());
        let batch = async move {
            let mut results: Vec<(String, ToolOutput)> = Vec::with_capacity(calls.len());
            for call in calls {
                shared.events.emit(|| tools::started(&key, &run_id, &call));
                let span = genai::tool_started(env.trace.as_ref(), &key, &call);
                let output = tools::execute(&env, &call).await;
                genai::tool_ended(span, &output);
                shared.events.emit(|| tools::ended(&key, &run_id, &call, &output));
                // Recorded at once: a restart after this point never runs the call again.
                if let Some(content) = output.recorded() {
                    let call_id = tools::journal_id(env.turn, &call.id);
                    let row = ToolResultRow { key: key.clone(), call_id, content };
                    shared.journal.record(Record::ToolResult(Box::new(row)));
                }
                results.push((call.id, output));
            }
            results
        };
        self.in_flight = true;
        ctx.spawn(batch.into_actor(self).map(|results, act, ctx| {
            act.in_flight = false;
            let next = act.turn.on_tool_results(results);
            act.step(next, ctx);
        }));
    }

    fn finish(&mut self, outcome: Outcome, text: String, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some((timer, _)) = self.deadline_timer.take() {
            ctx.cancel_future(timer);
        }
        let stays = self.stays && outcome == Outcome::Ok;
        self.trace.run_ended(outcome.as_str(), &self.turn.usage(), &self.model);
        self.journal();
        let transcript = if stays { self.turn.transcript().to_vec() } else { self.turn.take_transcript() };
        self.shared.gateway.do_send(RunEnded {
            key: self.key.clone(),
            run_id: self.run_id.clone(),
            outcome,
            text,
            usage: self.turn.usage(),
            transcript,
        });
        // Mirrors the gateway: only a session that stays and finished ok waits for more
        // (and not while the gateway is stopping).
        if !stays || self.pausing {
            ctx.stop();
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.shared.stats.session_started(&self.agent.id);
        if std::mem::take(&mut self.begun) {
            self.run_from(Next::CallModel, ctx);
        } else if let Some(calls) = self.restored_calls.take() {
            self.resume(calls.into_vec(), ctx);
        }
        self.restored_calls = None;
    }
}

/// However the actor ends (stopped, killed, or its task panicked and was dropped), it
/// is counted out, and the gateway hears of it unless it already reported its run's
/// end and does not stay for more runs (an idle main session or `session` child may
/// die too).
impl Drop for Session {
    fn drop(&mut self) {
        self.shared.stats.session_stopped(&self.agent.id);
        if !self.finished || self.stays || self.pausing {
            self.shared.gateway.do_send(SessionGone { key: self.key.clone(), run_id: self.run_id.clone() });
        }
    }
}

impl Handler<ChildEnded> for Session {
    type Result = ();

    fn handle(&mut self, msg: ChildEnded, ctx: &mut Self::Context) {
        let next = self.turn.on_child_ended(msg.id, msg.text);
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

impl Handler<Pause> for Session {
    type Result = ();

    fn handle(&mut self, _: Pause, ctx: &mut Self::Context) {
        self.pausing = true;
        // Waiting for a child or a message is a step boundary already.
        if !self.in_flight {
            self.journal();
            self.pause_now(ctx);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{Authority, Budgets};
    use crate::scope::ScopeSet;

    #[test]
    fn the_opening_is_the_prompt_then_who_the_session_is_then_its_task() {
        let text = "id = \"executor\"\nmodel = \"p/m\"\nprompt = \"Do the work.  \\n\"\n";
        let agent = crate::agent::parse("executor", text, |_: &str| Ok(String::new())).unwrap();
        let key = SessionKey::main("executor");
        let cap = Authority::new().mint_root(key.clone(), ScopeSet::EMPTY, 3, None, Budgets::default(), None);
        let messages = opening(&key, &agent, &cap, "count files".into());
        assert_eq!(
            messages,
            vec![
                Message::System {
                    content: "Do the work.\n\nYou are session agent:executor:main (agent executor, depth 0).".into()
                },
                Message::User { content: "count files".into() },
            ]
        );
    }

    #[test]
    fn depths_are_written_in_decimal() {
        for n in [0, 7, 10, 305, u32::MAX] {
            let mut out = String::from("depth ");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("depth {n}"));
        }
    }
}
