//! Reports for people and scripts: the session tree as text, and the summary object
//! `hivegate demo --json` / `hivegate run --json` print.

use std::fmt::Write as _;

use serde::Serialize;

use crate::gateway::stats::Percentiles;
use crate::gateway::{Outcome, TreeNode};
use crate::model::pricing::Pricing;

/// What `demo --json` and `run --json` print.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeReport {
    pub root: TreeNode,
    pub sessions: usize,
    pub outcomes: OutcomeCounts,
    pub spawn_latency_us: Percentiles,
    pub pairing_requests: u64,
    /// Spawns refused by policy or a limit; each is also a notice on its parent.
    pub refused_spawns: u64,
    /// Limits the command raised to fit what it was asked (said, never silent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits_raised: Vec<String>,
    pub elapsed_ms: f64,
    pub tokens: u64,
    /// The tree's cost in USD (null when a call was on a model without a price).
    pub cost_usd: Option<f64>,
    /// What the same tokens would have cost on the root's model: the saving the
    /// brain/executor pattern exists for.
    pub cost_on_root_model_usd: Option<f64>,
    pub final_answer: String,
}

/// The tree's cost, and what it would have been on the root's model alone.
pub fn costs(root: &TreeNode, pricing: &Pricing) -> (Option<f64>, Option<f64>) {
    let root_price = pricing.price(&root.model);
    let mut total = Some(0.0);
    let mut on_root = root_price.map(|_| 0.0);
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        total = total.zip(node.cost_usd).map(|(a, b)| a + b);
        on_root = on_root.zip(root_price).map(|(a, price)| a + price.cost(&node.usage));
        stack.extend(node.children.iter());
    }
    (total, on_root)
}

/// Tokens of the whole tree (saturating, like every sum of provider counts).
pub fn tree_tokens(node: &TreeNode) -> u64 {
    node.children.iter().map(tree_tokens).fold(node.tokens, u64::saturating_add)
}

fn usd(cost: Option<f64>) -> String {
    cost.map_or_else(|| "unknown (a model has no price)".to_string(), |c| format!("${c:.4}"))
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub ok: usize,
    pub error: usize,
    pub timeout: usize,
    pub killed: usize,
    pub interrupted: usize,
    pub running: usize,
}

impl OutcomeCounts {
    pub fn of(root: &TreeNode) -> OutcomeCounts {
        let mut counts = OutcomeCounts::default();
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            match node.outcome {
                Some(Outcome::Ok) => counts.ok += 1,
                Some(Outcome::Error) => counts.error += 1,
                Some(Outcome::Timeout) => counts.timeout += 1,
                Some(Outcome::Killed) => counts.killed += 1,
                Some(Outcome::Interrupted) => counts.interrupted += 1,
                None => counts.running += 1,
            }
            stack.extend(node.children.iter());
        }
        counts
    }

    pub fn total(&self) -> usize {
        self.ok + self.error + self.timeout + self.killed + self.interrupted + self.running
    }

    pub fn all_ok(&self) -> bool {
        self.ok == self.total()
    }
}

impl TreeReport {
    /// Everything went as asked: every session ended ok and no spawn was refused.
    pub fn all_ok(&self) -> bool {
        self.outcomes.all_ok() && self.refused_spawns == 0
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        render_node(&self.root, "", "", &mut out);
        let l = &self.spawn_latency_us;
        let o = &self.outcomes;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "sessions: {} (ok {}, error {}, timeout {}, killed {}, running {})   tokens: {}   elapsed: {:.1} ms",
            self.sessions, o.ok, o.error, o.timeout, o.killed, o.running, self.tokens, self.elapsed_ms
        );
        let _ = writeln!(
            out,
            "spawn latency ({} spawns): p50 {:.1} µs   p99 {:.1} µs   max {:.1} µs",
            l.samples, l.p50, l.p99, l.max
        );
        let _ = writeln!(
            out,
            "cost: {}   on the root's model alone: {}",
            usd(self.cost_usd),
            usd(self.cost_on_root_model_usd)
        );
        let _ = writeln!(out, "pairing requests: {}", self.pairing_requests);
        if self.refused_spawns > 0 {
            let _ = writeln!(out, "refused spawns: {} (see the notices in the tree)", self.refused_spawns);
        }
        let _ = writeln!(out, "\nfinal answer:\n{}", self.final_answer);
        out
    }
}

fn render_node(node: &TreeNode, first: &str, rest: &str, out: &mut String) {
    let outcome = node.outcome.map_or(node.status, Outcome::as_str);
    let label = node.label.as_deref().map(|l| format!(" \"{l}\"")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{first}{}{label}  {}  {}  {}  {:.1} ms  {} tok{}",
        short_key(node.session_key.as_str()),
        node.agent_id,
        node.model,
        outcome,
        node.duration_ms,
        node.tokens,
        node.cost_usd.map(|c| format!("  ${c:.4}")).unwrap_or_default()
    );
    let more = if node.children.is_empty() { "    " } else { "│   " };
    if let Some(error) = &node.error {
        let _ = writeln!(out, "{rest}{more}! {error}");
    }
    for notice in &node.notices {
        let _ = writeln!(out, "{rest}{more}· {notice}");
    }
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == node.children.len();
        let (branch, indent) = if last { ("└── ", "    ") } else { ("├── ", "│   ") };
        render_node(child, &format!("{rest}{branch}"), &format!("{rest}{indent}"), out);
    }
}

/// `agent:executor:subagent:1b2c…:subagent:9f8e…` → `agent:executor:…9f8e1234`: the
/// agent and the last eight hex digits are enough to tell siblings apart on screen.
pub fn short_key(key: &str) -> String {
    match key.rsplit_once(":subagent:") {
        Some((head, id)) => {
            let agent = head.split(':').nth(1).unwrap_or("?");
            format!("agent:{agent}:…{}", &id[id.len().saturating_sub(8)..])
        }
        None => key.to_string(),
    }
}

/// One progress line for a session event (what `run` prints on a terminal); none for
/// streamed text, usage and tool calls that went well.
pub fn progress_line(event: &crate::gateway::SessionEvent) -> Option<String> {
    use crate::gateway::SessionEvent;
    let line = match event {
        SessionEvent::Started { session_key, agent_id, model, label, .. } => {
            let label = label.as_deref().map(|l| format!(" \"{l}\"")).unwrap_or_default();
            format!("+ {}{label}  {agent_id}  {model}", short_key(session_key.as_str()))
        }
        SessionEvent::Noticed { session_key, notice } => format!("· {}  {notice}", short_key(session_key.as_str())),
        SessionEvent::Ended { session_key, outcome, error, duration_ms, tokens, cost_usd, .. } => {
            let cost = cost_usd.map(|c| format!("  ${c:.4}")).unwrap_or_default();
            let error = error.as_deref().map(|e| format!("  {e}")).unwrap_or_default();
            format!(
                "- {}  {}  {:.1} s  {tokens} tok{cost}{error}",
                short_key(session_key.as_str()),
                outcome.as_str(),
                duration_ms / 1000.0
            )
        }
        SessionEvent::ToolEnded { session_key, name, error: Some(error), .. } => {
            format!("· {}  {name} failed: {error}", short_key(session_key.as_str()))
        }
        SessionEvent::Streamed { .. }
        | SessionEvent::ToolStarted { .. }
        | SessionEvent::ToolEnded { .. }
        | SessionEvent::Used { .. } => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shortened_for_the_screen() {
        assert_eq!(short_key("agent:brain:main"), "agent:brain:main");
        assert_eq!(short_key("agent:executor:subagent:aaaa:subagent:0123456789abcdef"), "agent:executor:…89abcdef");
    }
}
