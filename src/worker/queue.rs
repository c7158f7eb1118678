//! The work queue in Postgres: the SQL of queueing, claiming, renewing, revoking and
//! finishing sessions placed on workers, on a plain synchronous connection.
//!
//! Table `work` (migration `0002_work.sql`): one row per session placed on workers, with
//! the signed spawn (`token`), who holds it (`worker`) until when (`lease_until`, by the
//! database's clock, so machines' clocks do not matter), how often it was claimed, and
//! whether it was revoked or is done. Claims take rows with `FOR UPDATE SKIP LOCKED`, so
//! workers never wait for each other. Channels (`NOTIFY`, sent at commit):
//! - [`WORK`]: a row was queued (payload: its agent id). Wakes idle workers.
//! - [`REVOKE`]: a session on a worker ended on the gateway (payload: its key).
//! - [`CLAIMED`]: a worker claimed a session (payload: `key TAB worker id`).
//! - [`OUTBOX`]: a session on a worker ended and its announcement is in the outbox
//!   (payload: its key). Wakes the gateway's listener.

use std::time::Duration;

use postgres::{Client, Transaction};

use crate::gateway::Outcome;
use crate::keys::{RunId, SessionKey};
use crate::model::Usage;
use crate::store::Record;

pub const WORK: &str = "hivegate_work";
pub const REVOKE: &str = "hivegate_revoke";
pub const CLAIMED: &str = "hivegate_claimed";
pub const OUTBOX: &str = "hivegate_outbox";

/// The queue's part of a batch, in the batch's transaction (called by the Postgres
/// backend for every record after its own writes).
pub fn apply(tx: &mut Transaction<'_>, record: &Record) -> Result<(), postgres::Error> {
    match record {
        Record::Queued(work) => {
            tx.execute(
                "INSERT INTO work (key, agent_id, token) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                &[&work.key.as_str(), &&*work.agent_id, &work.token],
            )?;
            tx.execute("UPDATE sessions SET placement = 'worker' WHERE key = $1", &[&work.key.as_str()])?;
            tx.execute("SELECT pg_notify($1, $2)", &[&WORK, &&*work.agent_id])?;
        }
        Record::Revoked { key } => {
            let revoked = tx.execute(
                "UPDATE work SET revoked_at = now() WHERE key = $1 AND done_at IS NULL AND revoked_at IS NULL",
                &[&key.as_str()],
            )?;
            if revoked > 0 {
                tx.execute("SELECT pg_notify($1, $2)", &[&REVOKE, &key.as_str()])?;
            }
        }
        Record::RunEnded(end) => {
            let done =
                tx.execute("UPDATE work SET done_at = now() WHERE key = $1 AND done_at IS NULL", &[&end.key.as_str()])?;
            if done > 0 {
                tx.execute("SELECT pg_notify($1, $2)", &[&OUTBOX, &end.key.as_str()])?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A row a worker claimed.
pub struct Claim {
    pub key: SessionKey,
    pub token: String,
    /// 1 the first time; more when an earlier holder's lease lapsed.
    pub claims: i32,
}

/// Claim up to `slots` rows of `agents` that nobody holds (never claimed, or their
/// holder's lease lapsed), oldest first, for `lease`; record where they run now and
/// tell the gateway. Never a row of `held` (what this worker runs), nor one whose lease
/// has not lapsed, even this worker's: a session that just ended here is not done until
/// its end is committed. (A worker started again under the same id takes its old rows
/// back once their leases lapse, as any worker would.)
pub fn claim(
    client: &mut Client,
    worker: &str,
    agents: &[String],
    held: &[SessionKey],
    slots: usize,
    lease: Duration,
) -> Result<Vec<Claim>, postgres::Error> {
    if slots == 0 {
        return Ok(Vec::new());
    }
    let held: Vec<&str> = held.iter().map(SessionKey::as_str).collect();
    let mut tx = client.transaction()?;
    let rows = tx.query(
        "UPDATE work w SET worker = $1, lease_until = now() + make_interval(secs => $2), claims = w.claims + 1
         FROM (SELECT key FROM work
               WHERE done_at IS NULL AND revoked_at IS NULL AND rejected IS NULL AND agent_id = ANY($3)
                 AND (worker IS NULL OR lease_until < now()) AND NOT (key = ANY($5))
               ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED) free
         WHERE w.key = free.key
         RETURNING w.key, w.token, w.claims",
        &[&worker, &lease.as_secs_f64(), &agents, &(slots as i64), &held],
    )?;
    let claims: Vec<Claim> = rows
        .iter()
        .map(|row| Claim { key: SessionKey::from(row.get::<_, &str>(0)), token: row.get(1), claims: row.get(2) })
        .collect();
    let placement = format!("worker:{worker}");
    for claim in &claims {
        tx.execute("UPDATE sessions SET placement = $2 WHERE key = $1", &[&claim.key.as_str(), &placement])?;
        let payload = format!("{}\t{worker}", claim.key);
        tx.execute("SELECT pg_notify($1, $2)", &[&CLAIMED, &payload])?;
    }
    tx.commit()?;
    Ok(claims)
}

/// What became of the rows a worker holds after renewing their leases.
#[derive(Debug, Default, PartialEq)]
pub struct Renewed {
    /// Revoked on the gateway: stop them (an end is recorded there already).
    pub revoked: Vec<SessionKey>,
    /// Held by another worker now, or done: stop them without recording anything.
    pub lost: Vec<SessionKey>,
}

/// Extend the leases of `held` for `lease`; say which are revoked or no longer this
/// worker's.
pub fn renew(
    client: &mut Client,
    worker: &str,
    held: &[SessionKey],
    lease: Duration,
) -> Result<Renewed, postgres::Error> {
    if held.is_empty() {
        return Ok(Renewed::default());
    }
    let keys: Vec<&str> = held.iter().map(SessionKey::as_str).collect();
    let rows = client.query(
        "UPDATE work SET lease_until = CASE WHEN worker = $1 AND done_at IS NULL AND revoked_at IS NULL
                                            THEN now() + make_interval(secs => $2) ELSE lease_until END
         WHERE key = ANY($3)
         RETURNING key, worker = $1 AND done_at IS NULL, revoked_at IS NOT NULL",
        &[&worker, &lease.as_secs_f64(), &keys],
    )?;
    let mut renewed = Renewed::default();
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        let key = SessionKey::from(row.get::<_, &str>(0));
        let (mine, revoked): (Option<bool>, bool) = (row.get(1), row.get(2));
        seen.insert(key.clone());
        if revoked {
            renewed.revoked.push(key);
        } else if mine != Some(true) {
            renewed.lost.push(key);
        }
    }
    // A row that is gone (its tree was forgotten) is no longer anybody's.
    renewed.lost.extend(held.iter().filter(|k| !seen.contains(*k)).cloned());
    Ok(renewed)
}

/// A row whose token did not verify: never claimed again, and why is kept for the
/// operator.
pub fn reject(client: &mut Client, key: &SessionKey, reason: &str) -> Result<(), postgres::Error> {
    client.execute("UPDATE work SET rejected = $2 WHERE key = $1", &[&key.as_str(), &reason])?;
    Ok(())
}

/// An announcement from a session on a worker, not yet delivered to its parent.
pub struct Ended {
    pub id: RunId,
    pub parent: SessionKey,
    pub text: String,
    pub key: SessionKey,
    pub outcome: Outcome,
    pub final_text: String,
    pub usage: Usage,
}

/// Every undelivered announcement of a session placed on workers.
pub fn ended(client: &mut Client) -> Result<Vec<Ended>, postgres::Error> {
    let rows = client.query(
        "SELECT o.id, o.parent_key, o.text, s.key, s.outcome, s.final_text, s.usage_json
         FROM outbox o JOIN sessions s ON s.run_id = o.id AND s.placement <> 'local'
         WHERE o.delivered_at_ms IS NULL AND o.undeliverable IS NULL
         ORDER BY o.created_at_ms LIMIT 10000",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|row| Ended {
            id: RunId::from(row.get::<_, &str>(0)),
            parent: SessionKey::from(row.get::<_, &str>(1)),
            text: row.get(2),
            key: SessionKey::from(row.get::<_, &str>(3)),
            outcome: row
                .get::<_, Option<&str>>(4)
                .and_then(|o| serde_json::from_value(serde_json::Value::String(o.to_string())).ok())
                .unwrap_or(Outcome::Error),
            final_text: row.get::<_, Option<String>>(5).unwrap_or_default(),
            usage: serde_json::from_str(row.get(6)).unwrap_or_default(),
        })
        .collect())
}

/// Publish the gateway's public key, for workers started without `--gateway-key`.
pub fn publish_key(client: &mut Client, public: &str) -> Result<(), postgres::Error> {
    client.execute(
        "INSERT INTO gateway_key (id, public_key) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, updated_at = now()",
        &[&public],
    )?;
    Ok(())
}

/// The public key the gateway published, if any.
pub fn published_key(client: &mut Client) -> Result<Option<String>, postgres::Error> {
    Ok(client.query_opt("SELECT public_key FROM gateway_key WHERE id = 1", &[])?.map(|row| row.get(0)))
}

/// `LISTEN` on `channels`.
pub fn listen(client: &mut Client, channels: &[&str]) -> Result<(), postgres::Error> {
    let sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
    client.batch_execute(&sql)
}
