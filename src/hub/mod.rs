//! The hub: the gateway's side of everything outside the process. One actor owns the
//! live WebSocket connections and which node is on which, the node invokes in flight,
//! and every change to the pairing book (persisted through the Store after each). The
//! book and the failed-auth rate limiter sit behind the [`door`], which the sockets'
//! threads share to decide connects without a round trip to this actor.
//!
//! Connection actors (`ws/`, one per socket, on the HTTP workers' threads) do framing,
//! timers and `seq`; they ask the door to decide their connect, then the hub to
//! [`Admit`] them (or to [`Settle`] what the decision changed) and to [`Call`] methods, and the hub
//! pushes [`Outbound`] events and closes back to them. In-process sessions never come
//! here to spawn: only their `nodes_invoke` tool does, through [`InvokeNode`], checked
//! against their capability first like every tool.

pub mod auth;
mod catalog;
pub mod door;
mod invoke;
mod live;
mod methods;
pub mod ratelimit;
mod runs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::gateway::{GatewayHandle, Stats};
use crate::pairing::{Audience, PairingBook, PairingEvent, STATE_VERSION};
use crate::protocol::{Close, ErrorShape, EventFrame, HelloOk, Role, ShutdownPayload};
use crate::scope::{Scope, ScopeSet};
use crate::store::Store;
use door::{Door, Entry, Pending};
pub use invoke::InvokeNode;

/// The name of the pairing snapshot in the store.
pub const PAIRING_SNAPSHOT: &str = "pairing";

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the hub sends a connection actor.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum Outbound {
    /// `broadcast` events get the connection's next `seq`; targeted ones get none.
    Event {
        frame: EventFrame,
        broadcast: bool,
    },
    Close(Close),
    /// A late answer to a request already acknowledged (the final `res` of `agent`).
    Response {
        id: String,
        reply: Result<Value, ErrorShape>,
    },
}

/// A connect the door accepted with nothing to save: the connection joins the live
/// state (sent before its hello-ok, so it is here before any request it makes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Admit(pub Entry);

/// A connect whose decision changed the pairing book: saved first, then answered.
#[derive(Message)]
#[rtype(result = "Result<Hello, Refusal>")]
pub struct Settle(pub Pending);

#[derive(Debug)]
pub struct Hello {
    pub payload: HelloOk,
    pub role: Role,
    pub scopes: ScopeSet,
}

#[derive(Debug)]
pub struct Refusal {
    pub error: Box<ErrorShape>,
    pub close: Close,
}

impl Refusal {
    /// The pairing change this connect made could not be saved (and was rolled back).
    fn not_saved(reason: &str) -> Refusal {
        let message = format!("the gateway could not save its pairing state ({reason}); try again");
        Refusal {
            error: Box::new(ErrorShape::new(crate::protocol::error_codes::UNAVAILABLE, &message).with_retryable(true)),
            close: Close::internal_error(),
        }
    }

    /// The connect was decided before the pairing book changed under it (its device's
    /// authority taken away, or a rollback): it is not admitted, and the client connects
    /// again against the book as it is now.
    fn stale() -> Refusal {
        let message = "the pairing state changed while this connect was decided; connect again";
        Refusal {
            error: Box::new(ErrorShape::new(crate::protocol::error_codes::UNAVAILABLE, message).with_retryable(true)),
            close: Close::auth_changed(),
        }
    }
}

/// A method call from an authenticated connection; the hub authorizes it against the
/// connection's live grant (`methods.rs`).
#[derive(Message)]
#[rtype(result = "Result<Value, ErrorShape>")]
pub struct Call {
    pub conn_id: u64,
    /// The request's id, for answers sent after the first (`agent`'s final result).
    pub request_id: String,
    pub method: String,
    pub params: Value,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected {
    pub conn_id: u64,
}

/// Tell every connection the gateway is stopping, then close them (1012).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct StopConnections;

/// How many devices are paired / pending (for status and tests).
#[derive(Message)]
#[rtype(result = "PairingCounts")]
pub struct CountPairing;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingCounts {
    pub paired: usize,
    pub pending: usize,
    pub connections: usize,
}

pub(crate) struct Conn {
    outbox: Recipient<Outbound>,
    role: Role,
    scopes: ScopeSet,
    device_id: Option<String>,
    connected_at_ms: u64,
    remote_ip: String,
    /// The pairing changes its connect decision saw ([`door::Pairing::changes`]).
    seen_changes: u64,
}

impl Conn {
    /// Whether this connection gets the live view of runs (an operator with read scope).
    fn reads_runs(&self) -> bool {
        self.role == Role::Operator && self.scopes.satisfies(Scope::OperatorRead)
    }

    /// Who this connection acts as, for per-caller state (idempotency).
    fn caller(&self) -> invoke::Caller {
        match &self.device_id {
            Some(id) => invoke::Caller::Device(id.clone()),
            None => invoke::Caller::Owner,
        }
    }
}

pub struct HubConfig {
    /// What an `agent` request runs when it names no agent.
    pub default_agent: String,
    /// Session events, shown live to operators while any is connected (`live.rs`).
    pub events: crate::gateway::Events,
}

pub struct Hub {
    config: HubConfig,
    /// The pairing book and the limiter (shared with the sockets' threads), and how a
    /// connect is decided.
    door: Arc<Door>,
    /// The book as last committed to the store; a failed write rolls back to it.
    saved: PairingBook,
    store: Store,
    gateway: GatewayHandle,
    stats: Arc<Stats>,
    conns: HashMap<u64, Conn>,
    /// Connected nodes: node id → connection id (the newest).
    nodes: HashMap<String, u64>,
    invokes: invoke::Invokes,
    /// Operators' runs by idempotency key (`runs.rs`).
    runs: runs::RunBook,
    /// The live view, followed only while an operator is connected, so a gateway
    /// nobody watches builds no events.
    live: live::LiveView,
    watching: Option<SpawnHandle>,
    /// Taken when the first such operator is admitted, before [`Watch`] is handled: a
    /// request of theirs already queued behind the admission (a run it starts) must
    /// not go unseen.
    subscribing: Option<crate::gateway::events::Subscription>,
    me: Option<Addr<Hub>>,
    /// Connections among `conns` that get the live view ([`Conn::reads_runs`]).
    operators: usize,
    /// The pairing changes on disk: those the last successful commit wrote.
    saved_changes: u64,
}

impl Hub {
    pub fn new(config: HubConfig, door: Arc<Door>, store: Store, gateway: GatewayHandle, stats: Arc<Stats>) -> Hub {
        let saved = door.pairing().book.clone();
        Hub {
            config,
            saved,
            door,
            store,
            gateway,
            stats,
            conns: HashMap::new(),
            nodes: HashMap::new(),
            invokes: invoke::Invokes::default(),
            runs: runs::RunBook::default(),
            live: live::LiveView::default(),
            watching: None,
            subscribing: None,
            me: None,
            operators: 0,
            saved_changes: 0,
        }
    }

    /// Commit the pairing book to the store, then call `finish` with the outcome; what
    /// depends on the change (the answer, events, closes) happens in `finish`, after the
    /// commit. The hub handles no other message until the store answers, so changes
    /// commit in order, and a failed write rolls the book back to the last committed
    /// state, so memory never says more than the disk. A rollback also undoes what
    /// sockets decided meanwhile; their decisions are stale by then ([`door`]).
    fn commit<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        finish: impl FnOnce(&mut Hub, Result<(), String>) -> T + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        // What is written, and so what the book rolls back to once it is: sockets'
        // threads may change the book while the store writes.
        let (written, written_changes) = {
            let pairing = self.door.pairing();
            (pairing.book.clone(), pairing.changes())
        };
        let json = match serde_json::to_string(&written.export()) {
            Ok(json) => json,
            Err(e) => {
                self.roll_back();
                let _ = tx.send(finish(self, Err(format!("cannot encode the pairing state: {e}"))));
                return rx;
            }
        };
        let save = self.store.save_snapshot(PAIRING_SNAPSHOT, STATE_VERSION, json);
        ctx.wait(save.into_actor(self).map(move |result, hub, _| {
            let result = result.map_err(|e| e.to_string());
            match &result {
                Ok(()) => {
                    hub.saved = written;
                    hub.saved_changes = written_changes;
                }
                Err(e) => {
                    tracing::error!(error = %e, "pairing change not saved; rolled back");
                    hub.roll_back();
                }
            }
            let _ = tx.send(finish(hub, result));
        }));
        rx
    }

    /// Deliver pairing events to their audience: operators holding `operator.pairing`
    /// (with `seq`) and, for node approvals, the node's own socket (without).
    fn broadcast(&self, events: &[PairingEvent]) {
        for event in events {
            self.stats.metrics().pairing_event(event.name());
            let frame = match event.to_frame() {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::error!(error = %e, event = event.name(), "cannot encode event");
                    continue;
                }
            };
            for conn in
                self.conns.values().filter(|c| c.role == Role::Operator && c.scopes.satisfies(Scope::OperatorPairing))
            {
                conn.outbox.do_send(Outbound::Event { frame: frame.clone(), broadcast: true });
            }
            if let Audience::PairingOperatorsAndNode { node_id } = event.audience() {
                if let Some(conn) = self.nodes.get(&node_id).and_then(|id| self.conns.get(id)) {
                    conn.outbox.do_send(Outbound::Event { frame, broadcast: false });
                }
            }
        }
    }

    /// Close every live connection of `device_id` (for `role`, or all roles). They lose
    /// their grant at once: requests they already queued find no connection here and
    /// are refused, instead of running with the old scopes.
    fn close_device(&mut self, device_id: &str, role: Option<Role>, reason: &str) {
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.device_id.as_deref() == Some(device_id) && role.is_none_or(|r| r == c.role))
            .map(|(id, _)| *id)
            .collect();
        for conn_id in gone {
            if let Some(conn) = self.conns.get(&conn_id) {
                conn.outbox.do_send(Outbound::Close(Close::policy(reason)));
            }
            self.forget_conn(conn_id);
        }
    }

    /// Drop a connection from the live state: its node registration, the invokes sent
    /// on it (failed) and the invokes it asked for (cancelled on their node).
    fn forget_conn(&mut self, conn_id: u64) {
        let Some(conn) = self.conns.remove(&conn_id) else {
            return;
        };
        if conn.reads_runs() {
            self.operators = self.operators.saturating_sub(1);
            self.operators_changed();
        }
        for (node_conn, invoke_id) in self.invokes.fail_conn(conn_id) {
            self.cancel_on_node(node_conn, &invoke_id);
        }
        let gone: Vec<String> = self.nodes.iter().filter(|(_, c)| **c == conn_id).map(|(n, _)| n.clone()).collect();
        for node_id in gone {
            // A node with another live socket stays connected through that one.
            let other = self
                .conns
                .iter()
                .find(|(_, c)| c.role == Role::Node && c.device_id.as_deref() == Some(node_id.as_str()))
                .map(|(id, _)| *id);
            match other {
                Some(other) => {
                    self.nodes.insert(node_id, other);
                }
                None => {
                    self.nodes.remove(&node_id);
                }
            }
        }
        self.door.count(self.conns.len(), self.nodes.len());
    }

    /// Back to the book as last written. Decisions taken since rest on nothing, and a
    /// connection whose decision saw a change that is not on disk (another socket's, or
    /// the one this commit failed to write) may hold authority from it: those are
    /// closed, and connect again against the book as it is now.
    fn roll_back(&mut self) {
        {
            let mut pairing = self.door.pairing();
            pairing.book = self.saved.clone();
            pairing.rolled_back();
        }
        let unsure: Vec<u64> =
            self.conns.iter().filter(|(_, c)| c.seen_changes > self.saved_changes).map(|(id, _)| *id).collect();
        for conn_id in unsure {
            if let Some(conn) = self.conns.get(&conn_id) {
                conn.outbox.do_send(Outbound::Close(Close::auth_changed()));
            }
            self.forget_conn(conn_id);
        }
    }

    fn health(&self) -> Value {
        self.door.health()
    }

    /// Save what a connect decided, then answer it: the connection joins the live state
    /// (or its refusal's events go out) only once the change is on disk. A decision from
    /// before a change that took authority away, or before a rollback, is refused
    /// unsaved; the client may connect again against the book as it is now.
    fn settle(&mut self, pending: Pending, ctx: &mut Context<Self>) -> ResponseActFuture<Self, Result<Hello, Refusal>> {
        let stale = pending.stale(&self.door.pairing());
        if stale {
            return Box::pin(fut::ready(Err(Refusal::stale())));
        }
        let saved = match pending {
            Pending::Refused { refusal, events, .. } => self.commit(ctx, move |hub, saved| match saved {
                Ok(()) => {
                    hub.broadcast(&events);
                    Err(refusal)
                }
                Err(e) => Err(Refusal::not_saved(&e)),
            }),
            Pending::Accepted { entry, hello, events } => self.commit(ctx, move |hub, saved| match saved {
                Ok(()) => {
                    hub.admit(entry.conn_id, entry.conn, &events);
                    Ok(*hello)
                }
                Err(e) => Err(Refusal::not_saved(&e)),
            }),
        };
        Box::pin(fut::wrap_future(saved).map(|r, _, _| r.unwrap_or_else(|_| Err(Refusal::not_saved("")))))
    }

    /// An accepted connection joins the live state; its events go out.
    fn admit(&mut self, conn_id: u64, conn: Conn, events: &[PairingEvent]) {
        if let (Role::Node, Some(node_id)) = (conn.role, &conn.device_id) {
            self.nodes.insert(node_id.clone(), conn_id);
        }
        if conn.reads_runs() {
            self.operators += 1;
        }
        if let Some(replaced) = self.conns.insert(conn_id, conn) {
            // Not expected (connection ids are unique); keep the count true anyway.
            self.operators = self.operators.saturating_sub(usize::from(replaced.reads_runs()));
        }
        self.door.count(self.conns.len(), self.nodes.len());
        self.operators_changed();
        self.broadcast(events);
    }

    /// Follow session events while an operator who may read runs is connected, and only
    /// then (a pairing-only operator does not make every session stream its text).
    fn operators_changed(&mut self) {
        let wanted = self.operators > 0;
        if wanted != self.watching.is_some() {
            if wanted && self.subscribing.is_none() {
                self.subscribing = Some(self.config.events.subscribe_with_text());
            }
            if let Some(me) = &self.me {
                me.do_send(Watch(wanted));
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.me = Some(ctx.address());
    }
}

/// Start (true) or stop following session events for the live view.
#[derive(Message)]
#[rtype(result = "()")]
struct Watch(bool);

impl Handler<Watch> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Watch, ctx: &mut Self::Context) {
        let wanted = msg.0 && self.operators > 0;
        let subscribed = self.subscribing.take();
        match (wanted, self.watching.take()) {
            (true, None) => {
                let subscription = subscribed.unwrap_or_else(|| self.config.events.subscribe_with_text());
                // `Err(missed)` when events were lost: runs whose end was among them would
                // stay in the view for good, so it starts afresh.
                let events = futures_util::stream::unfold(subscription, |mut sub| async move {
                    match sub.recv().await {
                        Ok(event) => Some((Ok(event), sub)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "the live view fell behind; events dropped");
                            Some((Err(n), sub))
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
                    }
                });
                self.watching = Some(ctx.add_stream(events));
            }
            (false, Some(handle)) => {
                ctx.cancel_future(handle);
                self.live = live::LiveView::default();
            }
            (_, handle) => self.watching = handle,
        }
    }
}

/// A session event for the live view, or how many were lost.
type LiveEvent = Result<crate::gateway::SessionEvent, u64>;

impl StreamHandler<LiveEvent> for Hub {
    fn handle(&mut self, event: LiveEvent, _: &mut Self::Context) {
        let events = match event {
            Ok(event) => self.live.translate(event, now_ms()),
            Err(missed) => {
                self.live = live::LiveView::default();
                vec![(live::RESYNC_EVENT, serde_json::json!({"reason": "events-dropped", "missed": missed}))]
            }
        };
        for (name, payload) in events {
            let frame = EventFrame { event: name.to_string(), payload: Some(payload), seq: None, state_version: None };
            for conn in self.conns.values().filter(|c| c.reads_runs()) {
                conn.outbox.do_send(Outbound::Event { frame: frame.clone(), broadcast: true });
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        self.watching = None;
    }
}

impl Handler<Admit> for Hub {
    type Result = ();

    fn handle(&mut self, Admit(entry): Admit, _: &mut Self::Context) {
        let stale = entry.stale(&self.door.pairing());
        if stale {
            // Its device lost authority (or the book rolled back) after this connect was
            // decided: it may rest on a token that is gone. The client connects again.
            entry.conn.outbox.do_send(Outbound::Close(Close::auth_changed()));
            return;
        }
        self.admit(entry.conn_id, entry.conn, &[]);
    }
}

impl Handler<Settle> for Hub {
    type Result = ResponseActFuture<Self, Result<Hello, Refusal>>;

    fn handle(&mut self, Settle(pending): Settle, ctx: &mut Self::Context) -> Self::Result {
        self.settle(pending, ctx)
    }
}

impl Handler<Disconnected> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, _: &mut Self::Context) {
        self.forget_conn(msg.conn_id);
    }
}

impl Handler<StopConnections> for Hub {
    type Result = usize;

    fn handle(&mut self, _: StopConnections, _: &mut Self::Context) -> usize {
        let shutdown = EventFrame::from_payload(&ShutdownPayload::gateway_stopping());
        for conn in self.conns.values() {
            if let Ok(frame) = &shutdown {
                conn.outbox.do_send(Outbound::Event { frame: frame.clone(), broadcast: true });
            }
            conn.outbox.do_send(Outbound::Close(Close::service_restart()));
        }
        self.conns.len()
    }
}

impl Handler<CountPairing> for Hub {
    type Result = MessageResult<CountPairing>;

    fn handle(&mut self, _: CountPairing, _: &mut Self::Context) -> Self::Result {
        let list = self.door.pairing().book.device_pair_list(now_ms());
        MessageResult(PairingCounts {
            paired: list.paired.len(),
            pending: list.pending.len(),
            connections: self.conns.len(),
        })
    }
}
