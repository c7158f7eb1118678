//! Streamed answers: a response body of server-sent events (parsed by `sse-stream`, an
//! incremental parser whose work is linear in the bytes it is given) fed to the
//! [`Decoder`] of the provider's API kind, which builds a [`Draft`] of the domain
//! response.
//!
//! [`read`] bounds what a provider can do to the caller: the body's bytes count against
//! the response cap as they arrive, before any parsing (so one endless line is refused
//! too), and a body silent for longer than the idle timeout fails instead of hanging
//! (silence is measured on bytes, so `:` keep-alive comments count as life). A draft
//! holds at most [`MAX_TOOL_CALLS`] tool calls.
//!
//! (`eventsource-stream` was the first choice; it copies its buffer's remainder for every
//! line, so a provider sending megabytes of empty lines held a thread for a minute, and
//! it panics on a body that starts with a byte-order mark.) An answer is
//! complete only when its API's end marker arrives (`data: [DONE]`, `message_stop`); a
//! stream that ends before it fails, since its answer may be cut short. The draft
//! remembers whether any output arrived, so the retry policy never repeats a call that
//! has started answering, and passes text on to the request's [`TextSink`] as it comes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sse_stream::SseByteStream;

use super::{ChatResponse, Reasoning, TextSink, ToolCall, Usage};

/// A domain response being assembled from deltas.
#[derive(Debug, Default)]
pub struct Draft {
    content: String,
    /// Tool calls by the provider's index, in order of first appearance.
    calls: Vec<DraftCall>,
    usage: Usage,
    reasoning: Vec<Reasoning>,
    sink: Option<Arc<dyn TextSink>>,
    stop_reason: Option<String>,
}

#[derive(Debug)]
struct DraftCall {
    index: u32,
    id: String,
    name: String,
    arguments: String,
}

impl Draft {
    pub fn new(sink: Option<Arc<dyn TextSink>>) -> Draft {
        Draft { sink, ..Draft::default() }
    }

    /// Append answer text, and pass it on to the sink.
    pub fn text(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        self.content.push_str(delta);
        if let Some(sink) = &self.sink {
            sink.text(delta);
        }
    }

    /// Merge a tool-call delta into the call with this index: the id and name are set
    /// when given (usually in the first delta only), argument text is appended. A delta
    /// bringing another id than its index's call has starts a new call (servers that
    /// send each call whole and leave out `index`).
    pub fn tool_call(
        &mut self,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) -> Result<(), Fault> {
        let id = id.filter(|s| !s.is_empty());
        // Deltas come for the newest call almost always: search from the end.
        let found = self.calls.iter().rposition(|c| c.index == index);
        let at = match found {
            Some(at) if id.is_none_or(|id| self.calls[at].id.is_empty() || self.calls[at].id == id) => at,
            _ if self.calls.len() >= MAX_TOOL_CALLS => {
                return Err(Fault::Decode(format!("more than {MAX_TOOL_CALLS} tool calls in one answer")))
            }
            _ => {
                let call = DraftCall { index, id: String::new(), name: String::new(), arguments: String::new() };
                self.calls.push(call);
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        if let Some(id) = id {
            id.clone_into(&mut call.id);
        }
        if let Some(name) = name.filter(|s| !s.is_empty()) {
            name.clone_into(&mut call.name);
        }
        if let Some(arguments) = arguments {
            call.arguments.push_str(arguments);
        }
        Ok(())
    }

    /// Give the call with this index `arguments` if it received none.
    pub fn default_arguments(&mut self, index: u32, arguments: &str) {
        if let Some(call) = self.calls.iter_mut().rev().find(|c| c.index == index && c.arguments.is_empty()) {
            arguments.clone_into(&mut call.arguments);
        }
    }

    /// The provider's reason for ending the answer (`stop`, `length`, `max_tokens`, …).
    pub fn stopped(&mut self, reason: &str) {
        self.stop_reason = Some(reason.to_string());
    }

    /// A finished block of the model's reasoning (kept, never shown).
    pub fn reasoned(&mut self, block: Reasoning) {
        self.reasoning.push(block);
    }

    pub fn usage_mut(&mut self) -> &mut Usage {
        &mut self.usage
    }

    /// Whether any output (text or a tool call) has arrived.
    pub fn started(&self) -> bool {
        !self.content.is_empty() || !self.calls.is_empty()
    }

    /// The finished response; tool calls in index order.
    pub fn finish(self) -> Result<ChatResponse, Fault> {
        let mut calls = self.calls;
        // Stable: calls sharing an index keep their order of arrival.
        calls.sort_by_key(|c| c.index);
        let tool_calls = calls
            .into_iter()
            .map(|c| match c.name.is_empty() {
                true => Err(Fault::Decode(format!("tool call {} has no name", c.index))),
                false => Ok(ToolCall {
                    id: if c.id.is_empty() { format!("call_{}", c.index) } else { c.id },
                    name: c.name,
                    arguments: c.arguments,
                }),
            })
            .collect::<Result<_, _>>()?;
        let response = ChatResponse {
            content: (!self.content.is_empty()).then_some(self.content),
            tool_calls,
            reasoning: super::boxed(self.reasoning),
            usage: self.usage,
            notices: Vec::new(),
        };
        Ok(response.with_answer_notices(self.stop_reason.as_deref()))
    }
}

/// Tool calls one answer may carry; more is not a plausible answer.
pub const MAX_TOOL_CALLS: usize = 256;

/// What one event meant for the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    More,
    /// The API's end marker: the answer is complete.
    Done,
}

/// One API kind's reading of its events.
pub trait Decoder {
    /// Apply one event's data to the draft (both APIs name an event's kind inside its
    /// data, so the SSE event name is not needed).
    fn event(&mut self, draft: &mut Draft, data: &str) -> Result<Flow, Fault>;
}

/// Why a stream did not give a whole answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// More bytes than the response cap.
    TooLarge,
    /// The connection failed.
    Transport(String),
    /// No bytes for this long.
    Idle(Duration),
    /// The body ended before the end marker.
    Ended,
    /// The provider sent an error event.
    Provider(String),
    /// An event that is not what the API promises.
    Decode(String),
}

impl std::error::Error for Fault {}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::TooLarge => f.write_str("the answer passed the response size cap"),
            Fault::Transport(e) => write!(f, "the connection failed: {e}"),
            Fault::Idle(after) => {
                write!(f, "no data for {:.1} s (limits.model_idle_timeout_seconds)", after.as_secs_f64())
            }
            Fault::Ended => f.write_str("the stream ended before its end marker; the answer may be cut short"),
            Fault::Provider(e) => write!(f, "error event: {e}"),
            Fault::Decode(e) => write!(f, "bad event: {e}"),
        }
    }
}

/// How much a stream may send, and how long it may be silent.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_bytes: usize,
    pub idle: Duration,
}

/// A stream that failed, and whether output had started before it did.
#[derive(Debug)]
pub struct Failed {
    pub fault: Fault,
    pub output_started: bool,
}

/// Read `body` to the end marker through `decoder`.
pub async fn read<S, E, D>(body: S, mut decoder: D, mut draft: Draft, bounds: Bounds) -> Result<ChatResponse, Failed>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
    D: Decoder,
{
    let mut events = std::pin::pin!(SseByteStream::new(bounded(body, bounds)));
    loop {
        let fault = match events.next().await {
            None => Fault::Ended,
            Some(Err(sse_stream::Error::Body(e))) => match e.downcast::<Fault>() {
                Ok(fault) => *fault,
                Err(e) => Fault::Transport(e.to_string()),
            },
            Some(Err(e)) => Fault::Decode(e.to_string()),
            // A block with no data (only an id, a retry or an event name) carries nothing.
            Some(Ok(sse_stream::Sse { data: None, .. })) => continue,
            Some(Ok(sse_stream::Sse { data: Some(data), .. })) => match decoder.event(&mut draft, &data) {
                Ok(Flow::More) => continue,
                Ok(Flow::Done) => {
                    let started = draft.started();
                    return draft.finish().map_err(|fault| Failed { fault, output_started: started });
                }
                Err(fault) => fault,
            },
        };
        return Err(Failed { fault, output_started: draft.started() });
    }
}

/// The body's chunks, failing past `max_bytes` in all or after `idle` without one.
fn bounded<S, E>(body: S, bounds: Bounds) -> impl Stream<Item = Result<Bytes, Fault>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    futures_util::stream::unfold(Some((body, 0usize)), move |state| async move {
        let (mut body, seen) = state?;
        let item = match tokio::time::timeout(bounds.idle, body.next()).await {
            Err(_) => Err(Fault::Idle(bounds.idle)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => Err(Fault::Transport(e.to_string())),
            Ok(Some(Ok(chunk))) => match seen.saturating_add(chunk.len()) {
                total if total > bounds.max_bytes => Err(Fault::TooLarge),
                total => return Some((Ok(chunk), Some((body, total)))),
            },
        };
        Some((item, None))
    })
}

#[cfg(test)]
mod tests;
