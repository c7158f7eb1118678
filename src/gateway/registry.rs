//! The session and run registry: who exists, who is whose child, what state each is in.
//!
//! Shared as `Arc<Registry>` so HTTP handlers and reports can read it from any thread;
//! the gateway's shards are its only writers, each of the trees it owns
//! ([`SessionEntry::shard`]). Entries stay after a run ends (unless the spawn
//! asked for `cleanup: delete`), so trees, histories and outcomes remain inspectable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use dashmap::DashMap;
use serde::Serialize;

use super::messages::{Cleanup, Outcome, SessionInfo, SUMMARY_CHARS};
use crate::capability::Capability;
use crate::keys::{RunId, SessionKey};
use crate::model::{Message, ModelRef, Usage};
use crate::session::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    /// Between runs: a main session, or a `mode: "session"` child waiting for a follow-up.
    Idle,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Idle => "idle",
            Status::Ended => "ended",
        }
    }
}

pub struct SessionEntry {
    pub key: SessionKey,
    pub agent_id: Arc<str>,
    pub model: ModelRef,
    pub parent: Option<SessionKey>,
    pub label: Option<String>,
    pub run_id: RunId,
    pub status: Status,
    pub outcome: Option<Outcome>,
    pub cleanup: Cleanup,
    /// Stays idle after an ok run, for more runs: main sessions, and `mode: "session"`
    /// children (until their parent's run ends).
    pub stays: bool,
    pub started_at: Instant,
    pub usage: Usage,
    pub children: Vec<SessionKey>,
    pub active_children: usize,
    pub capability: Capability,
    pub addr: Option<Addr<Session>>,
    /// What most sessions never have while they run: out of line, so that a running
    /// session's entry stays in 256 bytes ([`SessionEntry::past_mut`] makes it).
    pub(super) past: Option<Box<Past>>,
    /// Follow-ups this `session` child has taken (each is a run under the same run id;
    /// its end is announced under its own key, [`SessionEntry::announce_id`]).
    pub follow_ups: u32,
    /// The gateway shard (and so the thread) its tree lives on; a child's is its parent's.
    pub shard: u16,
}

/// Notices kept per session; later ones are counted in the last.
pub const MAX_NOTICES: usize = 16;

/// The part of an entry a session gains after it starts: its last run's end, and the
/// notices about it.
#[derive(Default)]
pub struct Past {
    pub ended_at: Option<Instant>,
    pub final_text: Option<String>,
    /// Kept after the actor stops, for `sessions_history`.
    pub transcript: Option<Vec<Message>>,
    /// What the operator should know about this session beyond its outcome (a refused
    /// spawn, ...), at most [`MAX_NOTICES`] of them.
    pub notices: Vec<String>,
}

impl SessionEntry {
    /// A session starting its run now, with defaults: no parent, label or actor, kept
    /// after its run (`cleanup: keep`), not staying for more runs. Callers set what
    /// differs with struct update syntax.
    pub fn running(
        key: SessionKey,
        agent_id: Arc<str>,
        model: ModelRef,
        run_id: RunId,
        capability: Capability,
        shard: u16,
    ) -> SessionEntry {
        SessionEntry {
            key,
            agent_id,
            model,
            parent: None,
            label: None,
            run_id,
            status: Status::Running,
            outcome: None,
            cleanup: Cleanup::Keep,
            stays: false,
            started_at: Instant::now(),
            usage: Usage::default(),
            children: Vec::new(),
            active_children: 0,
            capability,
            addr: None,
            past: None,
            follow_ups: 0,
            shard,
        }
    }

    /// Clear what belonged to the last run, for a new run of an idle session (its
    /// status is set through [`Registry::set_status`], which keeps the count).
    pub fn clear_last_run(&mut self) {
        self.outcome = None;
        // Usage is the run's (a tree's figures are its run's), as `run` reports them.
        self.usage = Usage::default();
        self.started_at = Instant::now();
        if let Some(past) = &mut self.past {
            past.ended_at = None;
            past.final_text = None;
            // The live actor holds the transcript now; the snapshot was the last run's.
            past.transcript = None;
        }
        // A run ends only after its children have, so the new run starts with none.
        self.children.clear();
        self.active_children = 0;
    }

    /// The out-of-line part, made on first use.
    pub fn past_mut(&mut self) -> &mut Past {
        self.past.get_or_insert_with(Box::default)
    }

    pub fn ended_at(&self) -> Option<Instant> {
        self.past.as_ref().and_then(|p| p.ended_at)
    }

    /// The last run's final text, once it has ended.
    pub fn final_text(&self) -> Option<&str> {
        self.past.as_ref().and_then(|p| p.final_text.as_deref())
    }

    /// The transcript kept after the actor stopped.
    pub fn transcript(&self) -> Option<&Vec<Message>> {
        self.past.as_ref().and_then(|p| p.transcript.as_ref())
    }

    pub fn notices(&self) -> &[String] {
        self.past.as_ref().map_or(&[], |p| &p.notices)
    }

    /// The idempotency key of this run's end: the run id, and for a follow-up its
    /// number too.
    pub fn announce_id(&self) -> RunId {
        match self.follow_ups {
            0 => self.run_id.clone(),
            n => RunId::from(format!("{}#{n}", self.run_id).as_str()),
        }
    }

    pub fn notice(&mut self, text: String) {
        let notices = &mut self.past_mut().notices;
        match notices.len() {
            n if n < MAX_NOTICES - 1 => notices.push(text),
            n if n == MAX_NOTICES - 1 => notices.push("1 more notice".to_string()),
            _ => {
                if let Some(last) = notices.last_mut() {
                    let more = last.split(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(1);
                    *last = format!("{} more notices", more + 1);
                }
            }
        }
    }
}

impl SessionEntry {
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            session_key: self.key.clone(),
            agent_id: self.agent_id.to_string(),
            model: self.model.clone(),
            parent: self.parent.clone(),
            label: self.label.clone(),
            depth: self.capability.depth(),
            status: self.status.as_str(),
            outcome: self.outcome,
            run_id: self.run_id.clone(),
            active_children: self.active_children,
            usage: self.usage,
            started_at_ms: unix_ms(self.started_at),
            ended_at_ms: self.ended_at().map(unix_ms),
            placement: "local".into(),
            summary: self
                .final_text()
                .map(|t| t.lines().next().unwrap_or_default().chars().take(SUMMARY_CHARS).collect()),
        }
    }

    pub fn duration(&self) -> Duration {
        self.ended_at().unwrap_or_else(Instant::now).saturating_duration_since(self.started_at)
    }
}

/// foldhash, seeded per process: a child's key holds its ancestors' (about 46 bytes a
/// level), and SipHash over a depth-5 key was most of a deep tree's extra cost.
type Hasher = foldhash::fast::RandomState;

#[derive(Default)]
pub struct Registry {
    /// Entries are boxed: a map keeps up to twice its length in slots, and a slot
    /// holding the whole entry (up to 256 bytes) would cost each session twice that.
    sessions: DashMap<SessionKey, Box<SessionEntry>, Hasher>,
    runs: DashMap<RunId, SessionKey, Hasher>,
    running: AtomicUsize,
    /// Where sessions placed on workers run (`worker` until one claims it, then
    /// `worker:<id>`); a session not here runs in this process. Apart from the entries,
    /// so a local session pays nothing for it.
    placed: DashMap<SessionKey, Arc<str>, Hasher>,
    /// How many sessions `placed` holds: a gateway with none (no workers) skips every
    /// lookup of it on the paths each session takes (its end, its removal).
    placed_count: AtomicUsize,
}

/// One session of a shard, as [`Registry::of_shard`] lists it.
pub struct ShardSession {
    pub key: SessionKey,
    pub root: bool,
    pub status: Status,
    pub run_id: RunId,
    pub addr: Option<Addr<Session>>,
}

/// A node of the session tree, for reports (`hivegate demo`, `run`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeNode {
    pub session_key: SessionKey,
    pub agent_id: String,
    pub model: ModelRef,
    pub label: Option<String>,
    pub outcome: Option<Outcome>,
    pub status: &'static str,
    pub duration_ms: f64,
    pub tokens: u64,
    /// USD, when every call of this session was on a priced model.
    pub cost_usd: Option<f64>,
    /// Tokens by kind and cost (what `tokens` and `cost_usd` summarise).
    pub usage: Usage,
    /// Why the session did not end ok (the first line of its final text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Where it runs: `local`, `worker`, or `worker:<id>` ([`SessionInfo::placement`]).
    pub placement: String,
    pub children: Vec<TreeNode>,
}

impl Registry {
    pub fn insert(&self, entry: SessionEntry) {
        self.runs.insert(entry.run_id.clone(), entry.key.clone());
        if entry.status == Status::Running {
            self.running.fetch_add(1, Ordering::AcqRel);
        }
        self.sessions.insert(entry.key.clone(), Box::new(entry));
    }

    /// Sessions with a run in progress.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn get(&self, key: &SessionKey) -> Option<dashmap::mapref::one::Ref<'_, SessionKey, Box<SessionEntry>>> {
        self.sessions.get(key)
    }

    pub fn get_mut(&self, key: &SessionKey) -> Option<dashmap::mapref::one::RefMut<'_, SessionKey, Box<SessionEntry>>> {
        self.sessions.get_mut(key)
    }

    pub fn session_of_run(&self, run_id: &RunId) -> Option<SessionKey> {
        self.runs.get(run_id).map(|k| k.clone())
    }

    pub fn remove(&self, key: &SessionKey) {
        if let Some((_, entry)) = self.sessions.remove(key) {
            self.runs.remove(&entry.run_id);
            if self.placed_count.load(Ordering::Acquire) > 0 && self.placed.remove(key).is_some() {
                self.placed_count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Mark `key` as running elsewhere: `worker`, or `worker:<id>` once claimed.
    pub fn set_placement(&self, key: &SessionKey, placement: &str) {
        if self.sessions.contains_key(key) && self.placed.insert(key.clone(), placement.into()).is_none() {
            self.placed_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Where `key` runs, when not in this process.
    pub fn placement(&self, key: &SessionKey) -> Option<Arc<str>> {
        if self.placed_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.placed.get(key).map(|p| p.clone())
    }

    /// A session's row for `sessions.list`, with where it runs.
    pub fn info(&self, entry: &SessionEntry) -> SessionInfo {
        let mut info = entry.info();
        if let Some(placed) = self.placed.get(&entry.key) {
            info.placement = placed.to_string();
        }
        info
    }

    /// Move a session to `status`, keeping the running count right.
    pub fn set_status(&self, entry: &mut SessionEntry, status: Status) {
        match (entry.status == Status::Running, status == Status::Running) {
            (false, true) => {
                self.running.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                self.running.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        entry.status = status;
    }

    /// Drop a finished run's id (a main session started another).
    pub fn forget_run(&self, run_id: &RunId) {
        self.runs.remove(run_id);
    }

    /// Register a new run id for an existing (main) session.
    pub fn add_run(&self, run_id: RunId, key: SessionKey) {
        self.runs.insert(run_id, key);
    }

    /// Is `target` the caller's own session or one of its descendants? Keys carry their
    /// lineage for subagents; for main sessions the parent links decide.
    pub fn in_subtree(&self, caller: &SessionKey, target: &SessionKey) -> bool {
        let mut current = Some(target.clone());
        while let Some(key) = current {
            if &key == caller {
                return true;
            }
            current = self.sessions.get(&key).and_then(|e| e.parent.clone());
        }
        false
    }

    /// Every session key in the subtree under `root` (not including `root`), each after
    /// its parent.
    pub fn descendants(&self, root: &SessionKey) -> Vec<SessionKey> {
        let mut out = Vec::new();
        let mut frontier = vec![root.clone()];
        while let Some(key) = frontier.pop() {
            if let Some(entry) = self.sessions.get(&key) {
                for child in &entry.children {
                    out.push(child.clone());
                    frontier.push(child.clone());
                }
            }
        }
        out
    }

    /// The shard that owns `key`'s tree, if `key` is registered.
    pub fn shard_of(&self, key: &SessionKey) -> Option<u16> {
        self.sessions.get(key).map(|e| e.shard)
    }

    /// `shard`'s sessions: key, whether it is a root, status, run id and actor.
    pub fn of_shard(&self, shard: u16) -> Vec<ShardSession> {
        self.sessions
            .iter()
            .filter(|e| e.shard == shard)
            .map(|e| ShardSession {
                key: e.key.clone(),
                root: e.parent.is_none(),
                status: e.status,
                run_id: e.run_id.clone(),
                addr: e.addr.clone(),
            })
            .collect()
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut rows: Vec<SessionInfo> = self.sessions.iter().map(|e| self.info(&e)).collect();
        rows.sort_by(|a, b| a.session_key.cmp(&b.session_key));
        rows
    }

    /// The tree under `root`, children in spawn order.
    pub fn tree(&self, root: &SessionKey) -> Option<TreeNode> {
        let (node, children) = {
            let entry = self.sessions.get(root)?;
            let node = TreeNode {
                session_key: entry.key.clone(),
                agent_id: entry.agent_id.to_string(),
                model: entry.model.clone(),
                label: entry.label.clone(),
                outcome: entry.outcome,
                status: entry.status.as_str(),
                duration_ms: entry.duration().as_secs_f64() * 1000.0,
                tokens: entry.usage.total(),
                cost_usd: entry.usage.known_cost(),
                usage: entry.usage,
                error: match entry.outcome {
                    Some(outcome) if outcome != Outcome::Ok => {
                        entry.final_text().and_then(|t| t.lines().next()).map(str::to_string)
                    }
                    _ => None,
                },
                notices: entry.notices().to_vec(),
                placement: self.placed.get(root).map_or_else(|| "local".to_string(), |p| p.to_string()),
                children: Vec::new(),
            };
            (node, entry.children.clone())
        };
        Some(TreeNode { children: children.iter().filter_map(|c| self.tree(c)).collect(), ..node })
    }
}

/// An instant as Unix milliseconds (by its distance from now).
fn unix_ms(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    crate::hub::now_ms().saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    /// A parked session's entry is one allocation of this size (boxed in the map):
    /// 256 bytes is an allocator size class, the next is 320 or 384. What only an
    /// ended or noted session needs lives in [`super::Past`].
    #[test]
    fn a_running_sessions_entry_fits_in_256_bytes() {
        assert!(std::mem::size_of::<super::SessionEntry>() <= 256, "{}", std::mem::size_of::<super::SessionEntry>());
    }
}
