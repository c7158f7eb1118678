//! The agent loop as a pure state machine: transcript, inbox of inter-session messages,
//! children in flight, and what to do next. The session actor feeds it events (model
//! answered, tools finished, child ended, message delivered) and performs the [`Next`]
//! it returns. Unit tests drive it without a runtime.
//!
//! Rules that keep results from being lost:
//! - inter-session messages (child results, sends, steers) go to the inbox and are
//!   appended to the transcript right before the next model call, after any tool results
//!   (so every tool call is answered before anything else follows it);
//! - `sessions_yield` is answered at once when a result is waiting or no child is
//!   running, else parked until the next child result or message;
//! - a final answer given while children still run is kept, and the session waits; the
//!   next child result starts another turn, so the model always sees every result;
//! - a child's result carries its idempotency key (the child's run id): a second
//!   delivery of the same key is dropped, and each delivered one is remembered with the
//!   transcript position it took, for the journal.

use std::collections::VecDeque;

use serde_json::json;

use super::tools::ToolOutput;
use crate::gateway::Outcome;
use crate::keys::RunId;
use crate::model::{ChatResponse, Message, ToolCall, Usage};
use crate::store::recovery::CallAction;

/// A runaway model (tool calls forever) ends with an error after this many turns.
pub const MAX_TURNS: u32 = 200;

#[derive(Debug, PartialEq)]
pub enum Next {
    CallModel,
    RunTools(Vec<ToolCall>),
    /// Nothing to do until a child result or message arrives.
    Wait,
    Finish(Outcome, String),
}

/// The turn is held inline by its session's actor task, which tokio allocates in steps
/// of 128 bytes: what a session parked on its first model call never uses (mail,
/// announcements, a parked yield, usage) is boxed in [`Later`], made on first use.
#[derive(Debug, Default)]
pub struct Turn {
    transcript: Vec<Message>,
    later: Option<Box<Later>>,
    spawned: u32,
    ended: u32,
    turns: u32,
    waiting_for_children: bool,
}

/// What a turn needs once the model has answered or a message has come.
#[derive(Debug, Default)]
struct Later {
    /// Messages for the next turn, with the announcement each one is (if any).
    inbox: VecDeque<(String, Option<RunId>)>,
    /// Announcements taken into the transcript, with the position each took.
    delivered: Vec<(u32, RunId)>,
    parked_yield: Option<String>,
    usage: Usage,
}

impl Turn {
    pub fn new(system_prompt: String) -> Turn {
        // Room for exactly the system prompt and the task: most sessions of a burst
        // are parked on their first model call with nothing more, and a grown list
        // (room for four) would double what a parked session's transcript costs.
        let mut turn = Turn { transcript: Vec::with_capacity(2), ..Turn::default() };
        if !system_prompt.trim().is_empty() {
            turn.transcript.push(Message::System { content: system_prompt });
        }
        turn
    }

    /// Start from an inherited conversation (a `context: "fork"` child), after the
    /// system prompt.
    pub fn inherit(&mut self, history: &[Message]) {
        self.transcript.extend_from_slice(history);
    }

    /// Begin a run with a task; returns the first step.
    pub fn start(&mut self, task: String) -> Next {
        self.transcript.push(Message::User { content: task });
        self.turns = 0;
        if let Some(later) = &mut self.later {
            later.usage = Usage::default();
        }
        self.waiting_for_children = false;
        // A new run's children are new; earlier runs' announcements stay in order.
        self.spawned = 0;
        self.ended = 0;
        Next::CallModel
    }

    /// A run as journaled before a restart: its transcript, the announcements in it,
    /// how many children the current run spawned and how many of their ends it has
    /// seen, and what it has used.
    pub fn restore(
        transcript: Vec<Message>,
        delivered: Vec<(u32, RunId)>,
        children: (usize, usize),
        usage: Usage,
    ) -> Turn {
        let (spawned, ended) = children;
        let later = Later { delivered, usage, ..Later::default() };
        Turn {
            transcript,
            later: Some(Box::new(later)),
            spawned: count(spawned),
            ended: count(ended),
            ..Turn::default()
        }
    }

    /// Go on from a restored transcript: answer or re-run the last turn's calls that
    /// have no result, then do what the transcript's end calls for.
    pub fn resume(&mut self, calls: Vec<CallAction>) -> Next {
        let mut rerun = Vec::new();
        for action in calls {
            match action {
                CallAction::Answer { call_id, content } => self.transcript.push(Message::Tool { call_id, content }),
                CallAction::Rerun(call) => rerun.push(call),
            }
        }
        if !rerun.is_empty() {
            return Next::RunTools(rerun);
        }
        match self.transcript.last() {
            // A final answer given while children ran: wait for them, or it was the end.
            Some(Message::Assistant { content, tool_calls, .. }) if tool_calls.is_empty() => {
                if self.active_children() > 0 {
                    self.waiting_for_children = true;
                    Next::Wait
                } else {
                    Next::Finish(Outcome::Ok, content.as_deref().unwrap_or_default().to_string())
                }
            }
            // A model call was in flight (or about to be): ask again.
            _ => Next::CallModel,
        }
    }

    /// The announcements delivered at transcript positions `from` and after.
    pub fn delivered_from(&self, from: u32) -> Vec<(u32, RunId)> {
        match &self.later {
            Some(later) => later.delivered.iter().filter(|(seq, _)| *seq >= from).cloned().collect(),
            None => Vec::new(),
        }
    }

    fn later(&mut self) -> &mut Later {
        self.later.get_or_insert_with(Box::default)
    }

    fn inbox_len(&self) -> usize {
        self.later.as_ref().map_or(0, |later| later.inbox.len())
    }

    pub fn transcript(&self) -> &[Message] {
        &self.transcript
    }

    pub fn take_transcript(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.transcript)
    }

    /// Tokens spent in the current run.
    pub fn usage(&self) -> Usage {
        self.later.as_ref().map_or_else(Usage::default, |later| later.usage)
    }

    pub fn active_children(&self) -> usize {
        self.spawned.saturating_sub(self.ended) as usize
    }

    /// The messages for the next model call, with the inbox appended.
    pub fn request_messages(&mut self) -> Vec<Message> {
        if let Some(later) = &mut self.later {
            while let Some((content, id)) = later.inbox.pop_front() {
                if let Some(id) = id {
                    later.delivered.push((self.transcript.len() as u32, id));
                }
                self.transcript.push(Message::User { content });
            }
        }
        self.transcript.clone()
    }

    pub fn on_response(&mut self, response: ChatResponse) -> Next {
        self.later().usage.add(response.usage);
        self.turns += 1;
        let has_calls = !response.tool_calls.is_empty();
        self.transcript.push(Message::Assistant {
            content: response.content.as_deref().map(Box::from),
            tool_calls: response.tool_calls.clone(),
            reasoning: response.reasoning,
        });
        if has_calls {
            if self.turns >= MAX_TURNS {
                return Next::Finish(
                    Outcome::Error,
                    format!("turn limit reached ({MAX_TURNS} model turns without a final answer)"),
                );
            }
            return Next::RunTools(response.tool_calls);
        }
        if self.active_children() > 0 || self.inbox_len() > 0 {
            self.waiting_for_children = self.inbox_len() == 0;
            return if self.waiting_for_children { Next::Wait } else { Next::CallModel };
        }
        Next::Finish(Outcome::Ok, response.content.unwrap_or_default())
    }

    pub fn on_tool_results(&mut self, results: Vec<(String, ToolOutput)>) -> Next {
        let mut yield_call = None;
        for (call_id, output) in results {
            let value = match output {
                ToolOutput::Done(value) => value,
                ToolOutput::Spawned(value) => {
                    self.spawned = self.spawned.saturating_add(1);
                    value
                }
                ToolOutput::Yield if yield_call.is_none() => {
                    yield_call = Some(call_id);
                    continue;
                }
                ToolOutput::Yield => {
                    json!({"status": "error", "error": "sessions_yield was already called in this turn"})
                }
            };
            self.transcript.push(Message::Tool { call_id, content: value.to_string() });
        }
        match yield_call {
            Some(call_id) if self.inbox_len() == 0 && self.active_children() > 0 => {
                self.later().parked_yield = Some(call_id);
                Next::Wait
            }
            Some(call_id) => {
                self.answer_yield(call_id);
                Next::CallModel
            }
            None => Next::CallModel,
        }
    }

    /// A child ended; its announcement is queued for the next turn, unless this key
    /// was delivered already (then nothing changes).
    pub fn on_child_ended(&mut self, id: RunId, announcement: String) -> Next {
        let seen = self.later.as_ref().is_some_and(|later| {
            later.delivered.iter().any(|(_, d)| *d == id) || later.inbox.iter().any(|(_, d)| d.as_ref() == Some(&id))
        });
        if seen {
            return Next::Wait;
        }
        self.ended = self.ended.saturating_add(1);
        self.queue(announcement, Some(id))
    }

    /// A message from another session (or the operator) arrived.
    pub fn on_message(&mut self, text: String) -> Next {
        self.queue(text, None)
    }

    fn queue(&mut self, text: String, id: Option<RunId>) -> Next {
        let later = self.later();
        later.inbox.push_back((text, id));
        if let Some(call_id) = later.parked_yield.take() {
            self.answer_yield(call_id);
            return Next::CallModel;
        }
        if std::mem::take(&mut self.waiting_for_children) {
            return Next::CallModel;
        }
        Next::Wait
    }

    fn answer_yield(&mut self, call_id: String) {
        let content =
            json!({"status": "yielded", "resultsWaiting": self.inbox_len(), "activeChildren": self.active_children()});
        self.transcript.push(Message::Tool { call_id, content: content.to_string() });
    }
}

/// A child count as the turn keeps it (saturating: four billion children is no limit
/// any run reaches).
fn count(children: usize) -> u32 {
    u32::try_from(children).unwrap_or(u32::MAX)
}

/// The conversation a `context: "fork"` child inherits from `transcript`: everything
/// but the system prompt, with tool calls and results as plain text. The child has its
/// own tools (Anthropic refuses tool blocks a request does not define), and the
/// spawning turn's calls have no results yet (both APIs refuse unanswered calls).
pub fn forked(transcript: &[Message]) -> Vec<Message> {
    let mut history = Vec::with_capacity(transcript.len());
    for message in transcript {
        match message {
            Message::System { .. } => {}
            Message::User { .. } => history.push(message.clone()),
            Message::Assistant { content, tool_calls, .. } => {
                let mut text = content.as_deref().unwrap_or_default().to_string();
                for call in tool_calls {
                    let sep = if text.is_empty() { "" } else { "\n" };
                    text.push_str(&format!("{sep}[tool call {} {}: {}]", call.name, call.id, call.arguments));
                }
                if !text.trim().is_empty() {
                    history.push(Message::Assistant {
                        content: Some(text.into()),
                        tool_calls: Vec::new(),
                        reasoning: None,
                    });
                }
            }
            Message::Tool { call_id, content } => {
                history.push(Message::User { content: format!("[tool result {call_id}] {content}") })
            }
        }
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, name: &str) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments: "{}".into() }
    }

    fn answer(content: Option<&str>, calls: Vec<ToolCall>) -> ChatResponse {
        ChatResponse {
            reasoning: None,
            content: content.map(String::from),
            tool_calls: calls,
            usage: Usage::tokens(3, 2),
            notices: vec![],
        }
    }

    #[test]
    fn yield_parks_until_a_child_result_then_the_model_sees_it() {
        let mut turn = Turn::new("sys".into());
        assert_eq!(turn.start("task".into()), Next::CallModel);
        let calls = vec![call("s1", "sessions_spawn"), call("y", "sessions_yield")];
        assert_eq!(turn.on_response(answer(None, calls.clone())), Next::RunTools(calls));
        let results = vec![
            ("s1".to_string(), ToolOutput::Spawned(json!({"status": "accepted"}))),
            ("y".to_string(), ToolOutput::Yield),
        ];
        assert_eq!(turn.on_tool_results(results), Next::Wait);
        assert_eq!(turn.on_child_ended("r1".into(), "[subagent part 1 ok]\ndone".into()), Next::CallModel);
        let messages = turn.request_messages();
        let tail: Vec<_> = messages.iter().rev().take(2).collect();
        assert_eq!(tail[0], &Message::User { content: "[subagent part 1 ok]\ndone".into() });
        assert!(matches!(tail[1], Message::Tool { call_id, .. } if call_id == "y"));
        assert_eq!(turn.on_response(answer(Some("all done"), vec![])), Next::Finish(Outcome::Ok, "all done".into()));
        assert_eq!(turn.usage(), Usage::tokens(6, 4));
    }

    #[test]
    fn a_child_that_ends_before_its_spawn_is_recorded_is_not_lost() {
        let mut turn = Turn::new(String::new());
        turn.start("task".into());
        turn.on_response(answer(None, vec![call("s1", "sessions_spawn")]));
        assert_eq!(turn.on_child_ended("r1".into(), "[subagent early ok]\nfast".into()), Next::Wait);
        assert_eq!(turn.on_tool_results(vec![("s1".into(), ToolOutput::Spawned(json!({})))]), Next::CallModel);
        assert_eq!(turn.active_children(), 0);
        assert!(turn.request_messages().contains(&Message::User { content: "[subagent early ok]\nfast".into() }));
    }

    #[test]
    fn a_final_answer_with_children_running_waits_for_them() {
        let mut turn = Turn::new(String::new());
        turn.start("task".into());
        turn.on_response(answer(None, vec![call("s1", "sessions_spawn")]));
        assert_eq!(turn.on_tool_results(vec![("s1".into(), ToolOutput::Spawned(json!({})))]), Next::CallModel);
        assert_eq!(turn.on_response(answer(Some("premature"), vec![])), Next::Wait);
        assert_eq!(turn.on_child_ended("r1".into(), "[subagent x ok]\nr".into()), Next::CallModel);
        assert!(turn.request_messages().contains(&Message::User { content: "[subagent x ok]\nr".into() }));
        assert_eq!(turn.on_response(answer(Some("final"), vec![])), Next::Finish(Outcome::Ok, "final".into()));
    }

    #[test]
    fn a_fork_inherits_the_conversation_as_text_without_the_system_prompt() {
        let mut turn = Turn::new("sys".into());
        turn.start("task".into());
        turn.on_response(answer(Some("looking"), vec![call("l", "sessions_list")]));
        turn.on_tool_results(vec![("l".into(), ToolOutput::Done(json!({"status": "ok"})))]);
        turn.on_response(answer(None, vec![call("s", "sessions_spawn")]));
        let text = |role: &str, t: &str| match role {
            "user" => Message::User { content: t.into() },
            _ => Message::Assistant { content: Some(t.into()), tool_calls: vec![], reasoning: None },
        };
        assert_eq!(
            forked(turn.transcript()),
            vec![
                text("user", "task"),
                text("assistant", "looking\n[tool call sessions_list l: {}]"),
                text("user", "[tool result l] {\"status\":\"ok\"}"),
                text("assistant", "[tool call sessions_spawn s: {}]"),
            ]
        );
    }

    #[test]
    fn a_second_delivery_of_a_childs_end_is_dropped_by_its_key() {
        let mut turn = Turn::new(String::new());
        turn.start("task".into());
        turn.on_response(answer(None, vec![call("s1", "sessions_spawn")]));
        turn.on_tool_results(vec![("s1".into(), ToolOutput::Spawned(json!({})))]);
        assert_eq!(turn.on_response(answer(Some("waiting"), vec![])), Next::Wait);
        assert_eq!(turn.on_child_ended("r1".into(), "[r1 ended]".into()), Next::CallModel);
        // Again while queued, and again once in the transcript: nothing changes.
        assert_eq!(turn.on_child_ended("r1".into(), "[r1 ended]".into()), Next::Wait);
        let messages = turn.request_messages();
        assert_eq!(turn.on_child_ended("r1".into(), "[r1 ended]".into()), Next::Wait);
        assert_eq!(turn.request_messages(), messages);
        assert_eq!(messages.iter().filter(|m| **m == Message::User { content: "[r1 ended]".into() }).count(), 1);
        assert_eq!(turn.delivered_from(0), vec![(4, RunId::from("r1"))]);
        assert_eq!(turn.active_children(), 0);
    }

    #[test]
    fn yield_without_children_answers_at_once() {
        let mut turn = Turn::new(String::new());
        turn.start("task".into());
        turn.on_response(answer(None, vec![call("y", "sessions_yield")]));
        assert_eq!(turn.on_tool_results(vec![("y".into(), ToolOutput::Yield)]), Next::CallModel);
    }
}
