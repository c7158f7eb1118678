//! Executors on worker processes, with Postgres as the system of record and the work
//! queue.
//!
//! - [`token`]: the signed spawn a queued row carries.
//! - [`queue`]: the SQL of the queue.
//! - [`claimer`]: a worker's thread that claims rows (woken by `NOTIFY`), renews their
//!   leases, and stops what was revoked or lost; it hands each claimed session to the
//!   worker's own gateway ([`crate::gateway::remote::Claimed`]).
//! - [`listener`]: the gateway's thread that reads the ends of sessions on workers from
//!   the outbox (woken by `NOTIFY`, and every [`POLL`] in case a notification was lost
//!   with a connection) and hands them to the gateway
//!   ([`crate::gateway::remote::RemoteEnded`]).
//!
//! Both are plain threads with their own connection (the `postgres` crate's blocking
//! client): waiting for notifications is a blocking read, and neither may hold up a
//! session thread. A lost connection is opened again, with growing pauses.

pub mod queue;
pub mod token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use crate::gateway::remote::{Claimed, Forfeit, Held, Placed, RemoteEnded};
use crate::gateway::{GatewayHandle, Kill};

/// How often the gateway's listener reads the outbox without being woken.
pub const POLL: Duration = Duration::from_secs(1);
/// The longest a thread waits for a notification before it looks at its own state.
const TICK: Duration = Duration::from_millis(100);
/// The default lease: a worker killed mid-run is noticed this long after its last
/// renewal (renewed every third of it).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// A background thread with a stop flag; stopped (and joined) on drop.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(name: &str, body: impl FnOnce(&AtomicBool) + Send + 'static) -> std::io::Result<Background> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(&flag))?;
        Ok(Background { stop, thread: Some(thread) })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keep a connection up while `stop` is not set: `serve` runs on each new one until it
/// fails; pauses grow from 100 ms to 5 s between attempts.
fn connected(
    url: &str,
    shown: &str,
    what: &str,
    stop: &AtomicBool,
    mut serve: impl FnMut(&mut Client) -> Result<(), String>,
) {
    let mut pause = Duration::from_millis(100);
    while !stop.load(Ordering::Acquire) {
        match Client::connect(url, NoTls) {
            Ok(mut client) => {
                pause = Duration::from_millis(100);
                match serve(&mut client) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(database = shown, error = %e, "the {what} stopped on a database error; connecting again")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(database = shown, error = %e, retry_in_ms = pause.as_millis() as u64, "the {what} cannot reach the database")
            }
        }
        // A stop is seen within a tick, whatever the pause.
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Wait at most `wait` for a notification, then take every one already here.
fn notifications(client: &mut Client, wait: Duration) -> Result<Vec<postgres::Notification>, postgres::Error> {
    let mut notes = client.notifications();
    let mut got: Vec<postgres::Notification> = notes.timeout_iter(wait).next()?.into_iter().collect();
    got.extend(notes.iter().collect::<Vec<_>>()?);
    Ok(got)
}

/// What a worker claims, and how.
#[derive(Clone)]
pub struct ClaimSettings {
    pub url: String,
    /// The URL as logs may show it (no password).
    pub shown: String,
    pub worker: String,
    pub agents: Vec<String>,
    pub slots: usize,
    pub lease: Duration,
    pub gateway_key: VerifyingKey,
}

/// Start a worker's claimer.
pub fn claimer(settings: ClaimSettings, gateway: GatewayHandle, held: Arc<Held>) -> std::io::Result<Background> {
    Background::spawn("hivegate-claimer", move |stop| {
        let (url, shown) = (settings.url.clone(), settings.shown.clone());
        connected(&url, &shown, "claimer", stop, |client| {
            // Journals are read through the store's own reader, on a connection of its own.
            let db = crate::store::postgres::Postgres::connect(&url).map_err(|e| e.to_string())?;
            claim_loop(client, &db, &settings, &gateway, &held, stop).map_err(|e| e.to_string())
        });
    })
}

fn claim_loop(
    client: &mut Client,
    db: &crate::store::postgres::Postgres,
    s: &ClaimSettings,
    gateway: &GatewayHandle,
    held: &Held,
    stop: &AtomicBool,
) -> Result<(), postgres::Error> {
    queue::listen(client, &[queue::WORK, queue::REVOKE])?;
    let renew_every = s.lease / 3;
    let mut renewed_at: Option<Instant> = None;
    let mut want = true;
    while !stop.load(Ordering::Acquire) {
        if renewed_at.is_none_or(|at| at.elapsed() >= renew_every) {
            let outcome = queue::renew(client, &s.worker, &held.keys(), s.lease)?;
            for key in outcome.revoked {
                tracing::info!(session = %key, "revoked on the gateway; stopping it");
                gateway.do_send(Kill { caller: None, target: key });
            }
            for key in outcome.lost {
                tracing::warn!(session = %key, "no longer held by this worker (its lease lapsed); stopping it");
                gateway.do_send(Forfeit { key });
            }
            renewed_at = Some(Instant::now());
            // Leases of dead workers lapse without a notification.
            want = true;
        }
        want |= held.take_freed();
        let free = s.slots.saturating_sub(held.count());
        if want && free > 0 {
            let claims = queue::claim(client, &s.worker, &s.agents, &held.keys(), free, s.lease)?;
            // A full batch may have left more behind.
            want = claims.len() == free;
            for claim in claims {
                take(client, db, s, gateway, held, claim)?;
            }
        }
        for note in notifications(client, TICK)? {
            match note.channel() {
                queue::WORK => want = true,
                queue::REVOKE => {
                    let key = crate::keys::SessionKey::from(note.payload());
                    if held.contains(&key) {
                        tracing::info!(session = %key, "revoked on the gateway; stopping it");
                        gateway.do_send(Kill { caller: None, target: key });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Verify a claimed row's token and hand the session to the worker's gateway.
fn take(
    client: &mut Client,
    db: &crate::store::postgres::Postgres,
    s: &ClaimSettings,
    gateway: &GatewayHandle,
    held: &Held,
    claim: queue::Claim,
) -> Result<(), postgres::Error> {
    let token = match token::verify(&s.gateway_key, &claim.token) {
        Ok(t) if t.key != claim.key => Err(format!("its token is for another session ({})", t.key)),
        Ok(t) if !s.agents.contains(&t.agent_id) => Err(format!("its token is for agent '{}'", t.agent_id)),
        Ok(t) => Ok(t),
        Err(e) => Err(e.to_string()),
    };
    let token = match token {
        Ok(token) => token,
        Err(reason) => {
            tracing::error!(session = %claim.key, "refused a queued session: {reason}");
            return queue::reject(client, &claim.key, &reason);
        }
    };
    match db.journal(&claim.key) {
        Ok(journal) => {
            let resumed = !journal.transcript.is_empty();
            tracing::info!(session = %claim.key, claims = claim.claims, resumed, "claimed");
            held.add(claim.key);
            let crate::store::postgres::SessionJournal { usage, transcript, tool_results } = journal;
            gateway.do_send(Claimed { token, usage, transcript, tool_results });
        }
        // Left to lapse: another worker (or this one, later) claims it again.
        Err(e) => tracing::error!(session = %claim.key, "a claimed session cannot start: {e}"),
    }
    Ok(())
}

/// Start the gateway's listener: the ends of sessions on workers, and where they run.
pub fn listener(url: String, shown: String, gateway: GatewayHandle, public_key: String) -> std::io::Result<Background> {
    Background::spawn("hivegate-listener", move |stop| {
        connected(&url, &shown, "listener", stop, |client| {
            listen_loop(client, &gateway, &public_key, stop).map_err(|e| e.to_string())
        });
    })
}

fn listen_loop(
    client: &mut Client,
    gateway: &GatewayHandle,
    public_key: &str,
    stop: &AtomicBool,
) -> Result<(), postgres::Error> {
    queue::publish_key(client, public_key)?;
    queue::listen(client, &[queue::OUTBOX, queue::CLAIMED])?;
    let mut read_at: Option<Instant> = None;
    let mut want = true;
    while !stop.load(Ordering::Acquire) {
        if want || read_at.is_none_or(|at| at.elapsed() >= POLL) {
            for end in queue::ended(client)? {
                gateway.do_send(RemoteEnded {
                    id: end.id,
                    parent: end.parent,
                    text: end.text,
                    key: Some(end.key),
                    outcome: end.outcome,
                    final_text: end.final_text,
                    usage: end.usage,
                });
            }
            read_at = Some(Instant::now());
            want = false;
        }
        for note in notifications(client, TICK)? {
            match note.channel() {
                queue::OUTBOX => want = true,
                queue::CLAIMED => {
                    if let Some((key, worker)) = note.payload().split_once('\t') {
                        let placement = format!("worker:{worker}");
                        gateway.do_send(Placed { key: key.into(), placement });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
