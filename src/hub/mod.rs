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
mod invoke;
mod methods;
pub mod ratelimit;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::Value;

use crate::config::Secret;
use crate::gateway::{Gateway, Stats};
use crate::pairing::{Audience, PairingBook, PairingEvent, SilentApproval, STATE_VERSION};
use crate::protocol::{
    AuthMethod, Close, ConnectParams, ErrorShape, EventFrame, Features, HelloOk, Role, ServerInfo, ShutdownPayload,
    Snapshot, StateVersion,
};
use crate::scope::{Scope, ScopeSet};
use crate::store::{SaveSnapshot, Store};
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
}

/// A socket's `connect`, after framing and version checks.
#[derive(Message)]
#[rtype(result = "Result<Hello, Refusal>")]
pub struct Connect {
    pub conn_id: u64,
    pub params: ConnectParams,
    pub nonce: String,
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

/// A method call from an authenticated connection (already authorized by the scope
/// table in the connection actor).
#[derive(Message)]
#[rtype(result = "Result<Value, ErrorShape>")]
pub struct Call {
    pub conn_id: u64,
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

pub struct HubConfig {
    pub gateway_token: Option<Secret>,
    pub silent: SilentApproval,
}

pub struct Hub {
    config: HubConfig,
    book: PairingBook,
    store: Addr<Store>,
    gateway: Addr<Gateway>,
    stats: Arc<Stats>,
    limiter: RateLimiter,
    conns: HashMap<u64, Conn>,
    /// Connected nodes: node id → connection id (the newest).
    nodes: HashMap<String, u64>,
    invokes: invoke::Invokes,
    started: Instant,
    boot_id: String,
}

impl Hub {
    pub fn new(
        config: HubConfig,
        book: PairingBook,
        store: Addr<Store>,
        gateway: Addr<Gateway>,
        stats: Arc<Stats>,
    ) -> Hub {
        Hub {
            config,
            book,
            store,
            gateway,
            stats,
            limiter: RateLimiter::default(),
            conns: HashMap::new(),
            nodes: HashMap::new(),
            invokes: invoke::Invokes::default(),
            started: Instant::now(),
            boot_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Write the pairing book to the store (its own thread; never waited on here).
    fn persist(&self) {
        match serde_json::to_string(&self.book.export()) {
            Ok(json) => self.store.do_send(SaveSnapshot { name: PAIRING_SNAPSHOT, version: STATE_VERSION, json }),
            Err(e) => tracing::error!(error = %e, "cannot encode the pairing state"),
        }
    }

    /// Deliver pairing events to their audience: operators holding `operator.pairing`
    /// (with `seq`) and, for node approvals, the node's own socket (without).
    fn broadcast(&self, events: &[PairingEvent]) {
        for event in events {
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

    /// Close every live connection of `device_id` (for `role`, or all roles).
    fn close_device(&self, device_id: &str, role: Option<Role>, reason: &str) {
        for conn in self.conns.values() {
            if conn.device_id.as_deref() == Some(device_id) && role.is_none_or(|r| r == conn.role) {
                conn.outbox.do_send(Outbound::Close(Close::policy(reason)));
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
        hello
    }

    fn connect(&mut self, msg: Connect) -> Result<Hello, Refusal> {
        let now = now_ms();
        let mut authenticator = Authenticator {
            gateway_token: self.config.gateway_token.as_ref(),
            silent: self.config.silent,
            book: &mut self.book,
            limiter: &mut self.limiter,
        };
        let outcome = authenticator.authenticate(&msg.params, &msg.nonce, &msg.peer, now);
        match outcome {
            Err(refused) => {
                if refused.pairing_request {
                    self.stats.record_pairing_request();
                    // New pairing requests count against the address like failed
                    // attempts, so no one floods the book (and the disk) with fresh keys.
                    if !msg.peer.is_owner() {
                        self.limiter.fail(msg.peer.ip, ratelimit::CredentialKind::DeviceSignature, now);
                    }
                }
                if !refused.events.is_empty() {
                    self.persist();
                }
                self.broadcast(&refused.events);
                Err(Refusal { error: refused.error, close: refused.close })
            }
            Ok(accepted) => {
                // The stored book must change only for what has to survive a restart:
                // pairing events (a silent approval) and a freshly minted device token.
                // An echoed token or a new last-seen time is not worth a disk write on
                // every connect.
                let auth = &accepted.hello_auth;
                let minted = auth.device_token.is_some() && auth.method != Some(AuthMethod::DeviceToken);
                let mut changed = minted || !accepted.events.is_empty();
                let payload = self.hello(msg.conn_id, msg.protocol, accepted.hello_auth);
                if let (Role::Node, Some(node_id)) = (accepted.role, &accepted.device_id) {
                    changed |= self.register_node(node_id, &msg.params, &msg.peer, msg.conn_id, now);
                }
                self.conns.insert(
                    msg.conn_id,
                    Conn {
                        outbox: msg.outbox,
                        role: accepted.role,
                        scopes: accepted.scopes,
                        device_id: accepted.device_id,
                        connected_at_ms: now,
                        remote_ip: msg.peer.ip.to_string(),
                    },
                );
                if changed {
                    self.persist();
                }
                self.broadcast(&accepted.events);
                Ok(Hello { payload, role: accepted.role, scopes: accepted.scopes })
            }
        }
    }

    /// A node connected: note where it is and declare its command surface. Returns
    /// whether the declaration changed the book (a new or superseded surface request).
    fn register_node(&mut self, node_id: &str, params: &ConnectParams, peer: &Peer, conn_id: u64, now: u64) -> bool {
        self.nodes.insert(node_id.to_string(), conn_id);
        let ip = peer.ip.to_string();
        let declaration = self.book.node_policy().declaration(node_id, params, Some(&ip));
        match self.book.declare_node_surface(declaration, now) {
            Ok(outcome) => {
                self.broadcast(&outcome.events);
                !outcome.events.is_empty() || outcome.superseded.is_some()
            }
            Err(e) => {
                tracing::warn!(node = node_id, error = %e, "node surface declaration refused");
                false
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}

impl Handler<Connect> for Hub {
    type Result = Result<Hello, Refusal>;

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) -> Self::Result {
        self.connect(msg)
    }
}

impl Handler<Disconnected> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, _: &mut Self::Context) {
        if self.conns.remove(&msg.conn_id).is_some() {
            self.invokes.fail_conn(msg.conn_id);
            let gone: Vec<String> =
                self.nodes.iter().filter(|(_, c)| **c == msg.conn_id).map(|(n, _)| n.clone()).collect();
            for node_id in gone {
                // A node with another live socket stays connected through that one.
                let other = self
                    .conns
                    .iter()
                    .find(|(_, c)| c.role == Role::Node && c.device_id.as_deref() == Some(node_id.as_str()));
                match other.map(|(id, _)| *id) {
                    Some(conn_id) => {
                        self.nodes.insert(node_id, conn_id);
                    }
                    None => {
                        self.nodes.remove(&node_id);
                    }
                }
            }
        }
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
