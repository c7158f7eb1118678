//! The hub: the gateway's side of everything outside the process. One actor owns the
//! pairing book (persisted through the Store after every change), the live WebSocket
//! connections and which node is on which, the node invokes in flight and the
//! failed-auth rate limiter.
//!
//! Connection actors (`ws/`, one per socket, on the HTTP workers' threads) do framing,
//! timers and `seq`; they ask the hub to [`Connect`] and to [`Call`] methods, and the hub
//! pushes [`Outbound`] events and closes back to them. In-process sessions never come
//! here to spawn: only their `nodes_invoke` tool does, through [`InvokeNode`], checked
//! against their capability first like every tool.

pub mod auth;
mod catalog;
mod invoke;
mod live;
mod methods;
pub mod ratelimit;
mod runs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::config::Secret;
use crate::gateway::{GatewayHandle, Stats};
use crate::pairing::{Audience, PairingBook, PairingEvent, SilentApproval, STATE_VERSION};
use crate::protocol::{
    AuthMethod, Close, ConnectParams, ErrorShape, EventFrame, Features, HelloOk, Role, ServerInfo, ShutdownPayload,
    Snapshot, StateVersion,
};
use crate::scope::{Scope, ScopeSet};
use crate::store::Store;
use auth::{Authenticator, Peer};
pub use invoke::InvokeNode;
use ratelimit::RateLimiter;

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

/// A socket's `connect`, after framing and version checks.
#[derive(Message)]
#[rtype(result = "Result<Hello, Refusal>")]
pub struct Connect {
    pub conn_id: u64,
    pub params: ConnectParams,
    /// The device block checked against the socket's nonce, when there is one.
    pub verified: Option<Result<crate::pairing::VerifiedDevice, crate::pairing::DeviceAuthError>>,
    pub peer: Peer,
    pub protocol: u32,
    pub outbox: Recipient<Outbound>,
}

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
    pub gateway_token: Option<Secret>,
    pub silent: SilentApproval,
    /// Advertised in hello-ok; the connection actors enforce it.
    pub policy: crate::protocol::Policy,
    /// What an `agent` request runs when it names no agent.
    pub default_agent: String,
    /// Session events, shown live to operators while any is connected (`live.rs`).
    pub events: crate::gateway::Events,
}

pub struct Hub {
    config: HubConfig,
    book: PairingBook,
    /// The book as last committed to the store; a failed write rolls back to it.
    saved: PairingBook,
    store: Store,
    gateway: GatewayHandle,
    stats: Arc<Stats>,
    limiter: RateLimiter,
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
    me: Option<Addr<Hub>>,
    /// Connections among `conns` that get the live view ([`Conn::reads_runs`]).
    operators: usize,
    started: Instant,
    boot_id: String,
}

impl Hub {
    pub fn new(config: HubConfig, book: PairingBook, store: Store, gateway: GatewayHandle, stats: Arc<Stats>) -> Hub {
        Hub {
            config,
            saved: book.clone(),
            book,
            store,
            gateway,
            stats,
            limiter: RateLimiter::default(),
            conns: HashMap::new(),
            nodes: HashMap::new(),
            invokes: invoke::Invokes::default(),
            runs: runs::RunBook::default(),
            live: live::LiveView::default(),
            watching: None,
            me: None,
            operators: 0,
            started: Instant::now(),
            boot_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Commit the pairing book to the store, then call `finish` with the outcome; what
    /// depends on the change (the answer, events, closes) happens in `finish`, after the
    /// commit. The hub handles no other message until the store answers, so changes
    /// commit in order, and a failed write rolls the book back to the last committed
    /// state, so memory never says more than the disk.
    fn commit<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        finish: impl FnOnce(&mut Hub, Result<(), String>) -> T + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let json = match serde_json::to_string(&self.book.export()) {
            Ok(json) => json,
            Err(e) => {
                self.book = self.saved.clone();
                let _ = tx.send(finish(self, Err(format!("cannot encode the pairing state: {e}"))));
                return rx;
            }
        };
        let save = self.store.save_snapshot(PAIRING_SNAPSHOT, STATE_VERSION, json);
        ctx.wait(save.into_actor(self).map(move |result, hub, _| {
            let result = result.map_err(|e| e.to_string());
            match &result {
                Ok(()) => hub.saved = hub.book.clone(),
                Err(e) => {
                    tracing::error!(error = %e, "pairing change not saved; rolled back");
                    hub.book = hub.saved.clone();
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
    }

    fn health(&self) -> Value {
        serde_json::json!({
            "ok": true,
            "ts": now_ms(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeMs": self.started.elapsed().as_millis() as u64,
            "connections": self.conns.len(),
            "nodes": {"connected": self.nodes.len()},
            "sessions": {"live": self.stats.live_sessions(), "spawns": self.stats.spawns()},
        })
    }

    fn hello(&self, conn_id: u64, protocol: u32, auth: crate::protocol::HelloAuth) -> HelloOk {
        let server = ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            conn_id: format!("{}-{conn_id}", self.boot_id),
            build_id: None,
            boot_id: Some(self.boot_id.clone()),
        };
        let features = Features {
            methods: methods::METHODS.iter().map(|m| m.to_string()).collect(),
            events: methods::EVENTS.iter().map(|e| e.to_string()).collect(),
            capabilities: Vec::new(),
        };
        let snapshot = Snapshot {
            presence: Vec::new(),
            health: self.health(),
            state_version: StateVersion { presence: 1, health: 1 },
            uptime_ms: self.started.elapsed().as_millis() as u64,
        };
        let mut hello = HelloOk::new(server, features, snapshot, auth);
        hello.protocol = protocol;
        hello.policy = self.config.policy.clone();
        hello
    }

    /// Decide a connect. What the decision changed in the pairing book (a pending
    /// request, a silent approval, a minted device token, a node's command surface) is
    /// committed before the client hears about it; the connection joins the live state
    /// only after that.
    fn connect(&mut self, msg: Connect, ctx: &mut Context<Self>) -> ResponseActFuture<Self, Result<Hello, Refusal>> {
        let now = now_ms();
        let mut authenticator = Authenticator {
            gateway_token: self.config.gateway_token.as_ref(),
            silent: self.config.silent,
            book: &mut self.book,
            limiter: &mut self.limiter,
        };
        let outcome = authenticator.authenticate_verified(&msg.params, msg.verified, &msg.peer, now);
        self.stats.metrics().handshake(crate::telemetry::Handshake::of(&outcome));
        let accepted = match outcome {
            Ok(accepted) => accepted,
            Err(refused) => {
                if refused.pairing_request {
                    self.stats.record_pairing_request();
                }
                if refused.events.is_empty() {
                    return Box::pin(fut::ready(Err(Refusal { error: refused.error, close: refused.close })));
                }
                let saved = self.commit(ctx, move |hub, saved| match saved {
                    Ok(()) => {
                        hub.broadcast(&refused.events);
                        Refusal { error: refused.error, close: refused.close }
                    }
                    Err(e) => Refusal::not_saved(&e),
                });
                return Box::pin(
                    fut::wrap_future(saved).map(|r, _, _| Err(r.unwrap_or_else(|_| Refusal::not_saved("")))),
                );
            }
        };
        // The stored book must change only for what has to survive a restart: pairing
        // events (a silent approval), a freshly minted device token and a node's new
        // command surface. An echoed token or a new last-seen time is not worth a disk
        // write on every connect.
        let auth = &accepted.hello_auth;
        let minted = auth.device_token.is_some() && auth.method != Some(AuthMethod::DeviceToken);
        let mut events = accepted.events;
        let mut changed = minted || !events.is_empty();
        if let (Role::Node, Some(node_id)) = (accepted.role, &accepted.device_id) {
            let declared = self.declare_node(node_id, &msg.params, &msg.peer, now);
            changed |= declared.changed;
            events.extend(declared.events);
        }
        let payload = self.hello(msg.conn_id, msg.protocol, accepted.hello_auth);
        let conn = Conn {
            outbox: msg.outbox,
            role: accepted.role,
            scopes: accepted.scopes,
            device_id: accepted.device_id,
            connected_at_ms: now,
            remote_ip: msg.peer.ip.to_string(),
        };
        let hello = Hello { payload, role: accepted.role, scopes: accepted.scopes };
        let conn_id = msg.conn_id;
        if !changed {
            self.admit(conn_id, conn, &events);
            return Box::pin(fut::ready(Ok(hello)));
        }
        let saved = self.commit(ctx, move |hub, saved| match saved {
            Ok(()) => {
                hub.admit(conn_id, conn, &events);
                Ok(hello)
            }
            Err(e) => Err(Refusal::not_saved(&e)),
        });
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
        self.operators_changed();
        self.broadcast(events);
    }

    /// Follow session events while an operator who may read runs is connected, and only
    /// then (a pairing-only operator does not make every session stream its text).
    fn operators_changed(&self) {
        let wanted = self.operators > 0;
        if wanted != self.watching.is_some() {
            if let Some(me) = &self.me {
                me.do_send(Watch(wanted));
            }
        }
    }

    /// A node connected: declare its command surface (a new or superseded surface
    /// request changes the book).
    fn declare_node(&mut self, node_id: &str, params: &ConnectParams, peer: &Peer, now: u64) -> Declared {
        let ip = peer.ip.to_string();
        let declaration = self.book.node_policy().declaration(node_id, params, Some(&ip));
        match self.book.declare_node_surface(declaration, now) {
            Ok(outcome) => {
                Declared { changed: !outcome.events.is_empty() || outcome.superseded.is_some(), events: outcome.events }
            }
            Err(e) => {
                tracing::warn!(node = node_id, error = %e, "node surface declaration refused");
                Declared { changed: false, events: Vec::new() }
            }
        }
    }
}

struct Declared {
    changed: bool,
    events: Vec<PairingEvent>,
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
        match (wanted, self.watching.take()) {
            (true, None) => {
                let subscription = self.config.events.subscribe_with_text();
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

impl Handler<Connect> for Hub {
    type Result = ResponseActFuture<Self, Result<Hello, Refusal>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) -> Self::Result {
        self.connect(msg, ctx)
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
        let list = self.book.device_pair_list(now_ms());
        MessageResult(PairingCounts {
            paired: list.paired.len(),
            pending: list.pending.len(),
            connections: self.conns.len(),
        })
    }
}
