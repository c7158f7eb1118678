//! What happens to sessions, as it happens: a broadcast any number of watchers can
//! subscribe to (`hivegate run`'s progress lines today). Events are built only while
//! someone listens, so an unwatched gateway pays one atomic load per event; a watcher
//! that falls behind loses the oldest events and is told how many.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use super::messages::Outcome;
use crate::keys::{RunId, SessionKey};
use crate::model::{ModelRef, TextSink};

/// Events kept for a slow watcher before the oldest are dropped.
pub const CAPACITY: usize = 1024;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SessionEvent {
    #[serde(rename_all = "camelCase")]
    Started {
        session_key: SessionKey,
        run_id: RunId,
        parent: Option<SessionKey>,
        agent_id: String,
        model: ModelRef,
        label: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Noticed { session_key: SessionKey, notice: String },
    /// A tool call began (`title` names what it acts on: a spawn's label, a target).
    #[serde(rename_all = "camelCase")]
    ToolStarted { session_key: SessionKey, run_id: RunId, call_id: String, name: String, title: Option<String> },
    /// A tool call answered; `error` when its result was a refusal or an error.
    #[serde(rename_all = "camelCase")]
    ToolEnded { session_key: SessionKey, run_id: RunId, call_id: String, name: String, error: Option<String> },
    /// The run's usage so far, after each model call.
    #[serde(rename_all = "camelCase")]
    Used { session_key: SessionKey, run_id: RunId, usage: crate::model::Usage },
    /// A piece of a model's answer, as it streams in.
    #[serde(rename_all = "camelCase")]
    Streamed { session_key: SessionKey, run_id: RunId, text: String },
    #[serde(rename_all = "camelCase")]
    Ended {
        session_key: SessionKey,
        run_id: RunId,
        outcome: Outcome,
        /// The first line of the final text when not ok.
        error: Option<String>,
        duration_ms: f64,
        tokens: u64,
        cost_usd: Option<f64>,
    },
}

/// The sending side, owned by the gateway and held by every session: one pointer, so
/// a spawn pays one reference count for it.
#[derive(Clone, Debug, Default)]
pub struct Events(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    sender: broadcast::Sender<SessionEvent>,
    /// Live subscriptions, counted here so that emitting to nobody costs one atomic
    /// load (the channel's own count takes a lock).
    watchers: AtomicUsize,
    /// Those of them that want streamed text too (it is many events per call, so
    /// lifecycle watchers do not cause it).
    text_watchers: AtomicUsize,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            sender: broadcast::channel(CAPACITY).0,
            watchers: AtomicUsize::new(0),
            text_watchers: AtomicUsize::new(0),
        }
    }
}

/// One watcher's stream of events; dropping it stops the events being built for it.
pub struct Subscription {
    receiver: broadcast::Receiver<SessionEvent>,
    events: Events,
    with_text: bool,
}

impl Subscription {
    /// The next event; `Err(Lagged(n))` when `n` were dropped because this watcher fell
    /// behind.
    pub async fn recv(&mut self) -> Result<SessionEvent, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<SessionEvent, broadcast::error::TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.events.0.watchers.fetch_sub(1, Ordering::AcqRel);
        if self.with_text {
            self.events.0.text_watchers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Events {
    /// Sessions' starts, notices and ends. [`SessionEvent::Streamed`] arrives too while
    /// another watcher asks for it; skip it.
    pub fn subscribe(&self) -> Subscription {
        self.subscription(false)
    }

    /// All events, streamed answer text included.
    pub fn subscribe_with_text(&self) -> Subscription {
        self.subscription(true)
    }

    fn subscription(&self, with_text: bool) -> Subscription {
        self.0.watchers.fetch_add(1, Ordering::AcqRel);
        if with_text {
            self.0.text_watchers.fetch_add(1, Ordering::AcqRel);
        }
        Subscription { receiver: self.0.sender.subscribe(), events: self.clone(), with_text }
    }

    /// Send the event `make` builds, if anyone is listening.
    pub fn emit(&self, make: impl FnOnce() -> SessionEvent) {
        if self.watched() {
            let _ = self.0.sender.send(make());
        }
    }

    /// Whether anyone is listening.
    pub fn watched(&self) -> bool {
        self.0.watchers.load(Ordering::Acquire) > 0
    }

    /// A sink publishing a session's streamed answer text, made only while someone
    /// watches (a call started unwatched streams to nobody, at no cost).
    pub fn text_sink(&self, session_key: &SessionKey, run_id: &RunId) -> Option<Arc<dyn TextSink>> {
        (self.0.text_watchers.load(Ordering::Acquire) > 0).then(|| {
            let sink = StreamedText { events: self.clone(), session_key: session_key.clone(), run_id: run_id.clone() };
            Arc::new(sink) as _
        })
    }
}

/// Publishes text deltas as [`SessionEvent::Streamed`].
#[derive(Debug)]
struct StreamedText {
    events: Events,
    session_key: SessionKey,
    run_id: RunId,
}

impl TextSink for StreamedText {
    fn text(&self, delta: &str) {
        self.events.emit(|| SessionEvent::Streamed {
            session_key: self.session_key.clone(),
            run_id: self.run_id.clone(),
            text: delta.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn events_are_built_only_while_someone_watches() {
        let events = Events::default();
        let mut built = 0;
        events.emit(|| {
            built += 1;
            SessionEvent::Noticed { session_key: "k".into(), notice: "n".into() }
        });
        assert_eq!(built, 0);
        let mut watcher = events.subscribe();
        events.emit(|| SessionEvent::Noticed { session_key: "k".into(), notice: "seen".into() });
        assert_eq!(
            watcher.recv().await.unwrap(),
            SessionEvent::Noticed { session_key: "k".into(), notice: "seen".into() }
        );
        drop(watcher);
        let mut built = 0;
        events.emit(|| {
            built += 1;
            SessionEvent::Noticed { session_key: "k".into(), notice: "n".into() }
        });
        assert_eq!(built, 0);
    }
}
