//! The door: a socket's `connect` decided on the socket's own thread.
//!
//! The pairing book and the failed-auth rate limiter sit behind one lock ([`Pairing`])
//! that the hub and the sockets' threads share. A connection actor asks the door with
//! the device block it has already verified; the door runs the one connect decision
//! ([`super::auth::Authenticator`]) under the lock and says what follows:
//!
//! - **Nothing to save** (a paired device with its token, the owner's CLI): the
//!   connection tells the hub to [`super::Admit`] it and answers hello-ok at once. The
//!   hub, asleep on its own thread, is not on the path; that round trip was about a
//!   quarter of a handshake.
//! - **A refusal with nothing to save**: answered at once.
//! - **A change to save** (a pairing request, a silent approval, a freshly minted
//!   device token, a node's new command surface): the hub commits it first and only
//!   then answers, as before ([`super::Settle`]).
//!
//! A decision is stamped with the lock's epoch, which moves on whenever the hub takes a
//! device's authority away (the device removed, a token of it rotated or revoked) or
//! rolls the book back after a failed write. A decision that reaches the hub after its
//! own device lost authority, or after any rollback, may rest on what is no longer true,
//! so the hub closes (or refuses) it instead of admitting it, and the client connects
//! again against the book as it is now. Other devices' changes leave it alone: what a
//! decision changed in the book stays there and is saved with the next commit.
//!
//! Every change that must be saved is counted ([`Pairing::changed`]), and a connection
//! remembers the count its decision saw. A rollback closes the connections that saw a
//! change the store then failed to write (another socket's, or an operator's), and
//! leaves the rest alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix::Recipient;
use serde_json::Value;

use super::auth::{Authenticator, Peer, Refused};
use super::ratelimit::RateLimiter;
use super::{now_ms, Conn, Hello, Outbound, Refusal};
use crate::config::Secret;
use crate::gateway::Stats;
use crate::pairing::{DeviceAuthError, PairingBook, PairingEvent, SilentApproval, VerifiedDevice};
use crate::protocol::{
    AuthMethod, ConnectParams, Features, HelloAuth, HelloOk, Policy, Role, ServerInfo, Snapshot, StateVersion,
};

/// What the hub and the sockets' threads share under one lock.
pub struct Pairing {
    pub book: PairingBook,
    pub limiter: RateLimiter,
    /// Moves on with every change that takes authority away, and with every rollback.
    epoch: u64,
    /// The epoch of the last rollback.
    rolled_back: u64,
    /// Per device, the epoch its authority was last taken away in. One entry per device
    /// an operator has removed or whose token was rotated or revoked since start.
    revoked: HashMap<String, u64>,
    /// Changes made to the book that must be saved, counted since start.
    changes: u64,
}

impl Pairing {
    fn new(book: PairingBook) -> Pairing {
        Pairing { book, limiter: RateLimiter::default(), epoch: 0, rolled_back: 0, revoked: HashMap::new(), changes: 0 }
    }

    /// The book is changing in a way that must be saved (counted before or as it
    /// changes, under the same lock as the change or an earlier one).
    pub fn changed(&mut self) {
        self.changes += 1;
    }

    /// Changes made so far: what a decision saw, and what a commit writes.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// `device_id`'s authority is going (removed, or a token rotated or revoked):
    /// decisions about it taken before now may rest on what is gone.
    pub fn revoke(&mut self, device_id: &str) {
        self.epoch += 1;
        self.revoked.insert(device_id.to_string(), self.epoch);
    }

    /// The book went back to what was last written: every decision taken before now may
    /// rest on a change that is gone.
    pub fn rolled_back(&mut self) {
        self.epoch += 1;
        self.rolled_back = self.epoch;
    }

    /// The epoch a decision taken now is stamped with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a decision taken in `epoch` about `device_id` (none: a connect without a
    /// device) may rest on authority that is gone.
    pub fn stale(&self, epoch: u64, device_id: Option<&str>) -> bool {
        self.rolled_back > epoch || device_id.and_then(|d| self.revoked.get(d)).is_some_and(|&at| at > epoch)
    }
}

/// A socket's `connect`, with its device block verified against the socket's nonce.
pub struct ConnectRequest {
    pub conn_id: u64,
    pub params: ConnectParams,
    pub verified: Option<Result<VerifiedDevice, DeviceAuthError>>,
    pub peer: Peer,
    pub protocol: u32,
    pub outbox: Recipient<Outbound>,
}

/// An accepted connection, as the hub takes it in.
pub struct Entry {
    pub conn_id: u64,
    pub(super) conn: Conn,
    /// The pairing epoch the decision was taken in.
    pub epoch: u64,
}

/// What a connect decision asks of the connection. Returned once and matched at once;
/// the large variant is the hot path's, so it is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Nothing to save: admit it (through the hub) and answer hello-ok now.
    Admit(Entry, Hello),
    /// Refused with nothing to save: answer and close now.
    Refuse(Refusal),
    /// The decision changed the book: the hub saves it, then answers.
    Save(Pending),
}

/// A decision whose change the hub must commit before anyone hears of it.
pub enum Pending {
    /// Boxed: a change to save is the cold path.
    Accepted {
        entry: Entry,
        hello: Box<Hello>,
        events: Vec<PairingEvent>,
    },
    Refused {
        refusal: Refusal,
        events: Vec<PairingEvent>,
        epoch: u64,
    },
}

impl Pending {
    /// Whether the decision may rest on what is gone: an acceptance after its device
    /// lost authority or after a rollback; a refusal (it grants nothing) only after a
    /// rollback, which may have taken its pairing request away.
    pub fn stale(&self, pairing: &Pairing) -> bool {
        match self {
            Pending::Accepted { entry, .. } => entry.stale(pairing),
            Pending::Refused { epoch, .. } => pairing.stale(*epoch, None),
        }
    }
}

impl Entry {
    pub fn stale(&self, pairing: &Pairing) -> bool {
        pairing.stale(self.epoch, self.conn.device_id.as_deref())
    }
}

pub struct Door {
    gateway_token: Option<Secret>,
    silent: SilentApproval,
    /// Advertised in hello-ok; the connection actors enforce it.
    policy: Policy,
    pairing: Mutex<Pairing>,
    stats: Arc<Stats>,
    /// Kept by the hub (its connections and connected nodes), for hello-ok's health.
    connections: AtomicUsize,
    nodes: AtomicUsize,
    pub(super) started: Instant,
    boot_id: String,
}

impl Door {
    pub fn new(
        gateway_token: Option<Secret>,
        silent: SilentApproval,
        policy: Policy,
        book: PairingBook,
        stats: Arc<Stats>,
    ) -> Door {
        Door {
            gateway_token,
            silent,
            policy,
            pairing: Mutex::new(Pairing::new(book)),
            stats,
            connections: AtomicUsize::new(0),
            nodes: AtomicUsize::new(0),
            started: Instant::now(),
            boot_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The pairing book and the limiter. Held briefly: never across an await, never
    /// while taking it again.
    pub fn pairing(&self) -> MutexGuard<'_, Pairing> {
        // A panic while holding it leaves the book as the last complete change left it.
        self.pairing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decide a connect. The change it makes to the book, if any, is made here, under
    /// the lock; whether it must be saved before the client hears is what comes back.
    pub fn decide(&self, request: ConnectRequest) -> Decision {
        let now = now_ms();
        let mut guard = self.pairing();
        let pairing = &mut *guard;
        let epoch = pairing.epoch();
        let mut authenticator = Authenticator {
            gateway_token: self.gateway_token.as_ref(),
            silent: self.silent,
            book: &mut pairing.book,
            limiter: &mut pairing.limiter,
        };
        let outcome = authenticator.authenticate_verified(&request.params, request.verified, &request.peer, now);
        self.stats.metrics().handshake(crate::telemetry::Handshake::of(&outcome));
        let accepted = match outcome {
            Ok(accepted) => accepted,
            Err(refused) => {
                if !refused.events.is_empty() {
                    pairing.changed();
                }
                return self.refused(refused, epoch);
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
            let (node_changed, node_events) =
                declare_node(&mut pairing.book, node_id, &request.params, &request.peer, now);
            changed |= node_changed;
            events.extend(node_events);
        }
        if changed {
            pairing.changed();
        }
        let seen_changes = pairing.changes();
        drop(guard);
        let payload = self.hello(request.conn_id, request.protocol, accepted.hello_auth);
        let conn = Conn {
            outbox: request.outbox,
            role: accepted.role,
            scopes: accepted.scopes,
            device_id: accepted.device_id,
            connected_at_ms: now,
            remote_ip: request.peer.ip.to_string(),
            seen_changes,
        };
        let hello = Hello { payload, role: accepted.role, scopes: accepted.scopes };
        let entry = Entry { conn_id: request.conn_id, conn, epoch };
        if changed {
            Decision::Save(Pending::Accepted { entry, hello: Box::new(hello), events })
        } else {
            Decision::Admit(entry, hello)
        }
    }

    fn refused(&self, refused: Refused, epoch: u64) -> Decision {
        if refused.pairing_request {
            self.stats.record_pairing_request();
        }
        let refusal = Refusal { error: refused.error, close: refused.close };
        if refused.events.is_empty() {
            Decision::Refuse(refusal)
        } else {
            Decision::Save(Pending::Refused { refusal, events: refused.events, epoch })
        }
    }

    fn hello(&self, conn_id: u64, protocol: u32, auth: HelloAuth) -> HelloOk {
        let server = ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            conn_id: format!("{}-{conn_id}", self.boot_id),
            build_id: None,
            boot_id: Some(self.boot_id.clone()),
        };
        let features = Features {
            methods: super::methods::METHODS.iter().map(|m| m.to_string()).collect(),
            events: super::methods::EVENTS.iter().map(|e| e.to_string()).collect(),
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
        hello.policy = self.policy.clone();
        hello
    }

    /// The gateway's health, as the `health` method and hello-ok's snapshot show it.
    pub fn health(&self) -> Value {
        serde_json::json!({
            "ok": true,
            "ts": now_ms(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeMs": self.started.elapsed().as_millis() as u64,
            "connections": self.connections.load(Ordering::Relaxed),
            "nodes": {"connected": self.nodes.load(Ordering::Relaxed)},
            "sessions": {"live": self.stats.live_sessions(), "spawns": self.stats.spawns()},
        })
    }

    /// The hub's live counts changed.
    pub(super) fn count(&self, connections: usize, nodes: usize) {
        self.connections.store(connections, Ordering::Relaxed);
        self.nodes.store(nodes, Ordering::Relaxed);
    }
}

/// A node connected: declare its command surface. Whether that changed the book (a new
/// or superseded surface request), and the events it made.
fn declare_node(
    book: &mut PairingBook,
    node_id: &str,
    params: &ConnectParams,
    peer: &Peer,
    now: u64,
) -> (bool, Vec<PairingEvent>) {
    let ip = peer.ip.to_string();
    let declaration = book.node_policy().declaration(node_id, params, Some(&ip));
    match book.declare_node_surface(declaration, now) {
        Ok(outcome) => (!outcome.events.is_empty() || outcome.superseded.is_some(), outcome.events),
        Err(e) => {
            tracing::warn!(node = node_id, error = %e, "node surface declaration refused");
            (false, Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use actix::prelude::*;
    use tokio::sync::mpsc;

    use super::{ConnectRequest, Decision, Door, Entry, Pending};
    use crate::config::Secret;
    use crate::gateway::{Events, GatewayHandle, Registry, Stats};
    use crate::hub::auth::Peer;
    use crate::hub::{Admit, CountPairing, Hub, HubConfig, Outbound, Refusal, Settle};
    use crate::keys::SessionKey;
    use crate::model::Message;
    use crate::pairing::{Locality, PairingBook, SilentApproval};
    use crate::protocol::{close_codes, Close, ConnectParams, ErrorShape, Policy};
    use crate::store::{sqlite::Sqlite, Backend, Durable, Record, Store, StoreError};

    /// A connection's outbox: what the hub sends it, in order.
    struct Outbox(mpsc::UnboundedSender<Outbound>);

    impl Actor for Outbox {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Outbox {
        type Result = ();

        fn handle(&mut self, msg: Outbound, _: &mut Self::Context) {
            let _ = self.0.send(msg);
        }
    }

    /// SQLite whose snapshot writes fail while `failing` is set.
    struct Flaky {
        db: Sqlite,
        failing: Arc<AtomicBool>,
    }

    impl Backend for Flaky {
        fn apply(&mut self, batch: &[Record]) -> Result<(), StoreError> {
            self.db.apply(batch)
        }
        fn save_snapshot(&mut self, name: &str, version: u32, json: &str) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Sql(rusqlite::Error::InvalidQuery));
            }
            self.db.save_snapshot(name, version, json)
        }
        fn load_snapshot(&self, name: &str) -> Result<Option<(u32, String)>, StoreError> {
            self.db.load_snapshot(name)
        }
        fn load(&self, recent: usize) -> Result<Durable, StoreError> {
            self.db.load(recent)
        }
        fn transcript(&self, key: &SessionKey) -> Result<Vec<Message>, StoreError> {
            self.db.transcript(key)
        }
        fn count_start(&mut self) -> Result<(), StoreError> {
            self.db.count_start()
        }
        fn prune(&mut self, keep: usize) -> Result<(), StoreError> {
            self.db.prune(keep)
        }
    }

    struct Fixture {
        door: Arc<Door>,
        hub: Addr<Hub>,
        outbox: Addr<Outbox>,
        received: mpsc::UnboundedReceiver<Outbound>,
        failing: Arc<AtomicBool>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn start() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let failing = Arc::new(AtomicBool::new(false));
            let backend = Flaky { db: Sqlite::open(dir.path()).unwrap(), failing: failing.clone() };
            let store = Store::start(backend, "test".into()).unwrap();
            let stats = Arc::new(Stats::default());
            let book = PairingBook::default();
            let door = Door::new(Some(Secret::new("t")), SilentApproval::Off, Policy::default(), book, stats.clone());
            let door = Arc::new(door);
            let gateway = GatewayHandle::new(Vec::new(), Arc::new(Registry::default()));
            let config = HubConfig { default_agent: "main".into(), events: Events::default() };
            let hub = Hub::new(config, door.clone(), store, gateway, stats).start();
            let (sent, received) = mpsc::unbounded_channel();
            Fixture { door, hub, outbox: Outbox(sent).start(), received, failing, _dir: dir }
        }

        /// The operator CLI on loopback with the shared token: accepted, nothing to save.
        fn decide_cli(&self, conn_id: u64) -> Entry {
            let params: ConnectParams = serde_json::from_value(serde_json::json!({
                "minProtocol": 4, "maxProtocol": 4,
                "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
                "role": "operator", "scopes": ["operator.read"], "auth": {"token": "t"}
            }))
            .unwrap();
            let peer = Peer { ip: [127, 0, 0, 1].into(), locality: Locality::DirectLoopback, browser: false };
            let outbox = self.outbox.clone().recipient();
            let request = ConnectRequest { conn_id, params, verified: None, peer, protocol: 4, outbox };
            match self.door.decide(request) {
                Decision::Admit(entry, hello) => {
                    assert!(hello.scopes.satisfies(crate::scope::Scope::OperatorRead));
                    entry
                }
                _ => panic!("the owner's CLI was not admitted at once"),
            }
        }

        /// A decision taken in `epoch` that changed the book (here: a refusal with
        /// nothing in it), for the hub to commit.
        fn settle_decided_in(&self, epoch: u64) -> Request<Hub, Settle> {
            let refusal = Refusal { error: Box::new(ErrorShape::new("NOT_PAIRED", "x")), close: Close::policy("x") };
            self.hub.send(Settle(Pending::Refused { refusal, events: Vec::new(), epoch }))
        }

        fn settle(&self) -> Request<Hub, Settle> {
            let now = self.door.pairing().epoch();
            self.settle_decided_in(now)
        }

        async fn connections(&self) -> usize {
            self.hub.send(CountPairing).await.unwrap().connections
        }

        async fn expect_closed(&mut self) {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), self.received.recv());
            match next.await.expect("no close within 10 s") {
                Some(Outbound::Close(close)) => assert_eq!(close.code, close_codes::AUTH_CHANGED),
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }

    #[actix_rt::test]
    async fn a_connect_decided_before_its_device_lost_authority_is_closed_not_admitted() {
        let mut f = Fixture::start();
        // Another device's revocation leaves it alone.
        let entry = f.decide_cli(1);
        f.door.pairing().revoke("another-device");
        f.hub.send(Admit(entry)).await.unwrap();
        assert_eq!(f.connections().await, 1);
        assert_eq!(f.door.health()["connections"], 1);

        // Its own device's revocation, between the decision and the hub, closes it.
        let mut entry = f.decide_cli(2);
        entry.conn.device_id = Some("d1".into());
        f.door.pairing().revoke("d1");
        f.hub.send(Admit(entry)).await.unwrap();
        assert_eq!(f.connections().await, 1);
        f.expect_closed().await;

        // Decided after the revocation: taken in.
        let mut entry = f.decide_cli(3);
        entry.conn.device_id = Some("d1".into());
        f.hub.send(Admit(entry)).await.unwrap();
        assert_eq!(f.connections().await, 2);
        assert!(f.received.try_recv().is_err(), "an admitted connection was sent something");
    }

    #[actix_rt::test]
    async fn a_failed_pairing_write_closes_what_saw_the_unwritten_change() {
        let mut f = Fixture::start();
        let before = f.decide_cli(1);
        f.hub.send(Admit(before)).await.unwrap();
        assert!(f.settle().await.unwrap().is_err(), "a refusal stays a refusal");
        // Another socket changes the book (a silent approval, say); before the hub
        // writes it, a connect is decided against it and admitted.
        f.door.pairing().changed();
        let after = f.decide_cli(2);
        f.hub.send(Admit(after)).await.unwrap();
        let pending = f.decide_cli(3);
        let decided_in = f.door.pairing().epoch();
        assert_eq!(f.connections().await, 2);

        // The write fails: the book rolls back, and the connection that saw the change
        // may hold what was never written.
        f.failing.store(true, Ordering::SeqCst);
        let refused = f.settle().await.unwrap().unwrap_err();
        assert!(refused.error.message.contains("could not save"), "{}", refused.error.message);
        f.expect_closed().await;
        assert_eq!(f.connections().await, 1, "the one decided before the change stays");

        // Decided before the rollback: stale, whatever it was.
        f.failing.store(false, Ordering::SeqCst);
        f.hub.send(Admit(pending)).await.unwrap();
        f.expect_closed().await;
        assert_eq!(f.connections().await, 1);
        let stale = f.settle_decided_in(decided_in).await.unwrap().unwrap_err();
        assert!(stale.error.message.contains("changed while this connect was decided"), "{}", stale.error.message);
        assert!(f.received.try_recv().is_err(), "the surviving connection was sent something");
    }
}
