//! Recovery decisions as pure functions: what a start found in the store → what to do.
//!
//! - [`decide`]: each run left `running` is resumed, or finalized with a clear outcome:
//!   its agent is gone, its parent did not resume, it was resumed too often without
//!   progress (tombstoned), it is older than the stale window, or its deadline passed.
//! - [`unanswered`]: the tool calls of a resumed session's last turn that have no
//!   result in its transcript: a recorded result is used (the call never runs again), a
//!   spawn whose child was recorded gets its acceptance, an idempotent (read-only) call
//!   runs again, and any other call is answered as interrupted.
//! - [`deliveries`]: each announcement not yet delivered goes again to its resumed
//!   parent; after too many attempts the parent gets only a note that it could not be
//!   delivered; with no parent running that run it is marked undeliverable. Either
//!   way the operator sees it.

use std::collections::{HashMap, HashSet};

use crate::gateway::Outcome;
use crate::keys::{RunId, SessionKey};
use crate::model::{Message, ToolCall};

use super::records::{Pending, StoredSession, StoredStatus};

/// Recovery's bounds, from `[recovery]` in the config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// A run started longer ago than this is not resumed.
    pub stale_after_ms: u64,
    /// A run started again this many times without progress is tombstoned.
    pub max_resumes: u32,
    /// An announcement is delivered at most this many times by recovery.
    pub max_delivery_attempts: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { stale_after_ms: 24 * 3600 * 1000, max_resumes: 3, max_delivery_attempts: 3 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Resume,
    Finalize { outcome: Outcome, reason: String },
}

/// For every session whose run was running, in the order given: resume or finalize.
pub fn decide(
    sessions: &[StoredSession],
    agent_known: impl Fn(&str) -> bool,
    now_ms: u64,
    policy: &Policy,
) -> Vec<(SessionKey, Decision)> {
    let by_key: HashMap<&SessionKey, &StoredSession> = sessions.iter().map(|s| (&s.row.key, s)).collect();
    let mut decided: HashMap<SessionKey, Decision> = HashMap::new();
    let mut order = Vec::new();
    for session in sessions.iter().filter(|s| s.status == StoredStatus::Running) {
        // Ancestors first, so a child sees its parent's decision.
        let mut chain = vec![session];
        while let Some(parent) = chain.last().and_then(|s| s.row.parent.as_ref()).and_then(|p| by_key.get(p)) {
            if decided.contains_key(&parent.row.key) || parent.status != StoredStatus::Running {
                break;
            }
            chain.push(parent);
        }
        for s in chain.into_iter().rev() {
            if decided.contains_key(&s.row.key) {
                continue;
            }
            let decision = decide_one(s, &by_key, &decided, &agent_known, now_ms, policy);
            decided.insert(s.row.key.clone(), decision.clone());
            order.push((s.row.key.clone(), decision));
        }
    }
    order
}

fn decide_one(
    s: &StoredSession,
    by_key: &HashMap<&SessionKey, &StoredSession>,
    decided: &HashMap<SessionKey, Decision>,
    agent_known: &impl Fn(&str) -> bool,
    now_ms: u64,
    policy: &Policy,
) -> Decision {
    let finalize = |outcome, reason: String| Decision::Finalize { outcome, reason };
    if !agent_known(&s.row.agent_id) {
        return finalize(
            Outcome::Error,
            format!("agent '{}' is no longer defined; the run was not resumed", s.row.agent_id),
        );
    }
    if let Some(parent) = &s.row.parent {
        let parent_run = by_key.get(parent).filter(|p| p.status == StoredStatus::Running).map(|p| &p.row.run.run_id);
        let resumes = matches!(decided.get(parent), Some(Decision::Resume));
        if !resumes || parent_run != s.row.spawned.parent_run_id.as_ref() {
            return finalize(Outcome::Killed, format!("killed: its parent {parent} did not resume after the restart"));
        }
    }
    if s.resumes >= policy.max_resumes {
        return finalize(
            Outcome::Error,
            format!(
                "tombstoned: the gateway stopped {} times while resuming this run, with no progress; it is not resumed again (recovery.max_resumes)",
                s.resumes
            ),
        );
    }
    if now_ms.saturating_sub(s.row.run.started_at_ms) > policy.stale_after_ms {
        return finalize(
            Outcome::Interrupted,
            format!(
                "interrupted: the run started more than {} s before the restart (recovery.stale_after_seconds)",
                policy.stale_after_ms / 1000
            ),
        );
    }
    if s.row.spawned.grant.deadline_ms.is_some_and(|d| d <= now_ms) {
        return finalize(Outcome::Timeout, "timed out: its deadline passed while the gateway was down".into());
    }
    Decision::Resume
}

/// What a resumed session does about one call of its last turn.
#[derive(Clone, Debug, PartialEq)]
pub enum CallAction {
    /// Answer the model with this result, without running the call.
    Answer { call_id: String, content: String },
    /// Run the call again (it is idempotent).
    Rerun(ToolCall),
}

/// The result given for a call that was started and not recorded. A spawn is known
/// not to have happened when no child was recorded for it (the child's record is
/// always written before the spawn's answer).
pub fn interrupted_result(name: &str) -> String {
    let error = if name == "sessions_spawn" {
        "interrupted: the gateway restarted before this spawn was recorded; no child runs for it (spawn again if it is still needed)".to_string()
    } else {
        format!("interrupted: the gateway restarted while {name} ran; it was not run again and may or may not have taken effect")
    };
    serde_json::json!({"status": "error", "error": error}).to_string()
}

/// The calls of the transcript's last model turn that have no result after it.
/// `recorded`: tool results recorded by journal id (`journal_id(turn, call id)`, the
/// turn being that model turn's journal position, `seq_offset` plus its index);
/// `spawned`: the acceptance of each recorded child, by the same id.
pub fn unanswered(
    transcript: &[Message],
    seq_offset: u32,
    recorded: &HashMap<String, String>,
    spawned: &HashMap<String, String>,
    idempotent: impl Fn(&ToolCall) -> bool,
) -> Vec<CallAction> {
    let Some(at) = transcript.iter().rposition(|m| matches!(m, Message::Assistant { .. })) else { return Vec::new() };
    let Message::Assistant { tool_calls, .. } = &transcript[at] else { return Vec::new() };
    let answered: HashSet<&str> = transcript[at + 1..]
        .iter()
        .filter_map(|m| match m {
            Message::Tool { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    tool_calls
        .iter()
        .filter(|call| !answered.contains(call.id.as_str()))
        .map(|call| {
            let answer = |content: &String| CallAction::Answer { call_id: call.id.clone(), content: content.clone() };
            let id = crate::session::tools::journal_id(at as u32 + seq_offset, &call.id);
            match (recorded.get(&id), spawned.get(&id)) {
                (Some(content), _) | (None, Some(content)) => answer(content),
                (None, None) if idempotent(call) => CallAction::Rerun(call.clone()),
                (None, None) => answer(&interrupted_result(&call.name)),
            }
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    Redeliver,
    /// Delivery was tried too often: the parent is told only that the result could
    /// not be delivered (so it does not wait for it forever), and the operator is told.
    GiveUp(String),
    Undeliverable(String),
}

/// For each pending announcement: deliver it again to its resumed parent (in the run
/// it was for), or mark it undeliverable with why.
pub fn deliveries(outbox: &[Pending], resumed: &HashMap<SessionKey, RunId>, policy: &Policy) -> Vec<(RunId, Delivery)> {
    outbox
        .iter()
        .map(|p| {
            let a = &p.announce;
            let delivery = match resumed.get(&a.parent) {
                Some(run) if *run == a.parent_run_id && p.attempts < policy.max_delivery_attempts => {
                    Delivery::Redeliver
                }
                Some(run) if *run == a.parent_run_id => Delivery::GiveUp(format!(
                    "not delivered to {} after {} attempts (recovery.max_delivery_attempts)",
                    a.parent, p.attempts
                )),
                _ => Delivery::Undeliverable(format!("its parent {} is no longer running that run", a.parent)),
            };
            (a.id.clone(), delivery)
        })
        .collect()
}

#[cfg(test)]
mod tests;
