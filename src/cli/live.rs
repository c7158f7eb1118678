//! The live tree `hivegate run` and `hivegate agent` draw on a terminal while a run goes
//! on. [`LiveTree`] is pure: it is fed session events (the gateway's own
//! `SessionEvent`s for `run`, the `agent` events of the WebSocket protocol for
//! `agent`), keeps each session's agent, label, model, status, times, tokens and cost,
//! and renders the tree to lines that fit a screen (ended leaves folded, then "… N
//! more" when it is still too tall); `feed.rs` turns each kind of event into its calls.
//! [`Screen`] turns lines into the bytes that redraw
//! them in place; [`Throttle`] bounds how often that happens. The I/O around them (the
//! terminal's size, signals, writing) is in `term.rs`.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::report::short_key;

/// Sessions followed at once; later ones are counted, not shown.
pub const MAX_NODES: usize = 100_000;
/// The least time between two redraws (at most ten a second).
pub const REDRAW_GAP_MS: u64 = 100;

/// What is known of one session.
#[derive(Clone, Debug, PartialEq)]
struct Node {
    agent: String,
    label: Option<String>,
    model: String,
    run_id: Option<String>,
    parent: Option<String>,
    children: Vec<String>,
    /// `running`, or how the run ended (`ok`, `error`, `timeout`, `killed`, `interrupted`).
    status: String,
    error: Option<String>,
    started_ms: u64,
    ended_ms: Option<u64>,
    tokens: u64,
    cost_usd: Option<f64>,
}

/// A session as it starts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Start {
    pub key: String,
    pub parent: Option<String>,
    pub agent: String,
    pub model: String,
    pub label: Option<String>,
    pub run_id: Option<String>,
}

/// Sessions by key, with their tree.
#[derive(Debug, Default)]
pub struct LiveTree {
    nodes: HashMap<String, Node>,
    roots: Vec<String>,
    /// Draw only the tree whose root runs this run (a gateway's socket carries every run).
    root_run: Option<String>,
    /// Sessions past [`MAX_NODES`], not followed.
    unfollowed: u64,
    /// Events a slow reader lost (said in the footer).
    lost: u64,
}

/// Sessions by status, in a tree or a part of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub running: usize,
    pub ok: usize,
    /// Ended any other way.
    pub failed: usize,
}

impl Counts {
    fn add(&mut self, status: &str) {
        match status {
            "running" => self.running += 1,
            "ok" => self.ok += 1,
            _ => self.failed += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.running + self.ok + self.failed
    }
}

/// One line of the body before it is written out.
enum Row<'a> {
    Node {
        prefix: String,
        key: &'a str,
    },
    /// Ended leaves of one parent shown as one line.
    Folded {
        prefix: String,
        counts: Counts,
    },
}

impl LiveTree {
    /// A view of the tree whose root session runs `run_id` (others are kept, not drawn).
    pub fn for_run(run_id: &str) -> LiveTree {
        LiveTree { root_run: Some(run_id.to_string()), ..LiveTree::default() }
    }

    /// A session started a run (a new session, or a new run of a known one).
    pub fn started(&mut self, start: Start, now_ms: u64) {
        if let Some(node) = self.nodes.get(&start.key).filter(|_| start.parent.is_some()) {
            let placed =
                node.parent.as_ref().and_then(|p| self.nodes.get(p)).is_some_and(|p| p.children.contains(&start.key));
            if node.parent != start.parent || !placed {
                self.move_under(&start.key, start.parent.as_deref());
            }
        }
        if let Some(node) = self.nodes.get_mut(&start.key) {
            node.status = "running".into();
            node.error = None;
            node.started_ms = now_ms;
            node.ended_ms = None;
            node.tokens = 0;
            node.cost_usd = None;
            node.model = start.model;
            if start.run_id.is_some() {
                node.run_id = start.run_id;
            }
            if start.label.is_some() {
                node.label = start.label;
            }
            return;
        }
        if self.nodes.len() >= MAX_NODES {
            self.unfollowed += 1;
            return;
        }
        match start.parent.as_ref().and_then(|p| self.nodes.get_mut(p)) {
            Some(parent) => parent.children.push(start.key.clone()),
            None => self.roots.push(start.key.clone()),
        }
        // Sessions whose start came before this one's (their parent's) go under it.
        let orphans: Vec<String> = self
            .roots
            .iter()
            .filter(|r| self.nodes.get(*r).is_some_and(|n| n.parent.as_deref() == Some(start.key.as_str())))
            .cloned()
            .collect();
        let node = Node {
            agent: start.agent,
            label: start.label,
            model: start.model,
            run_id: start.run_id,
            parent: start.parent,
            children: Vec::new(),
            status: "running".into(),
            error: None,
            started_ms: now_ms,
            ended_ms: None,
            tokens: 0,
            cost_usd: None,
        };
        let key = start.key;
        self.nodes.insert(key.clone(), node);
        for orphan in orphans {
            self.move_under(&orphan, Some(&key));
        }
    }

    /// Put a known session under `parent` (its start was seen before its parent's).
    fn move_under(&mut self, key: &str, parent: Option<&str>) {
        let Some(new_parent) = parent.filter(|p| *p != key && self.nodes.contains_key(*p)) else { return };
        self.roots.retain(|r| r != key);
        if let Some(old) = self.nodes.get(key).and_then(|n| n.parent.clone()) {
            if let Some(old) = self.nodes.get_mut(&old) {
                old.children.retain(|c| c != key);
            }
        }
        if let Some(node) = self.nodes.get_mut(key) {
            node.parent = Some(new_parent.to_string());
        }
        if let Some(p) = self.nodes.get_mut(new_parent) {
            p.children.push(key.to_string());
        }
    }

    /// The run's usage so far.
    pub fn used(&mut self, key: &str, tokens: u64, cost_usd: Option<f64>) {
        if let Some(node) = self.nodes.get_mut(key) {
            node.tokens = tokens;
            node.cost_usd = cost_usd;
        }
    }

    /// The session now runs on `model` (a fallback took over).
    pub fn model(&mut self, key: &str, model: &str) {
        if let Some(node) = self.nodes.get_mut(key) {
            node.model = model.to_string();
        }
    }

    /// A session's run ended `status` after `duration_ms`.
    pub fn ended(&mut self, key: &str, status: &str, error: Option<&str>, duration_ms: Option<f64>, now_ms: u64) {
        if let Some(node) = self.nodes.get_mut(key) {
            node.status = status.to_string();
            node.error = error.map(str::to_string);
            if let Some(ms) = duration_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
                node.started_ms = now_ms.saturating_sub(ms as u64);
            }
            node.ended_ms = Some(now_ms.max(node.started_ms));
        }
    }

    /// Events were lost on the way (the view may be behind until it is loaded again).
    pub fn lost(&mut self, events: u64) {
        self.lost = self.lost.saturating_add(events);
    }

    /// The key of the drawn root: the session running the followed run, else the first.
    pub fn root_key(&self) -> Option<&str> {
        self.shown_roots().next()
    }

    fn shown_roots(&self) -> impl Iterator<Item = &str> {
        self.roots.iter().map(String::as_str).filter(|key| match &self.root_run {
            Some(run) => self.nodes.get(*key).and_then(|n| n.run_id.as_deref()) == Some(run.as_str()),
            None => true,
        })
    }

    /// Sessions of the drawn trees by status.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        let mut stack: Vec<&str> = self.shown_roots().collect();
        while let Some(key) = stack.pop() {
            if let Some(node) = self.nodes.get(key) {
                counts.add(&node.status);
                stack.extend(node.children.iter().map(String::as_str));
            }
        }
        counts
    }

    /// The drawn trees and a summary line, at most `rows - 1` lines (so the screen does
    /// not scroll under them) of at most `cols - 1` characters; `rows` or `cols` 0: no
    /// bound.
    pub fn lines(&self, now_ms: u64, rows: usize, cols: usize) -> Vec<String> {
        let budget = if rows == 0 { usize::MAX } else { rows.saturating_sub(2).max(1) };
        let mut rows_out = self.rows(false);
        if rows_out.len() > budget {
            rows_out = self.rows(true);
        }
        let mut lines: Vec<String> = Vec::new();
        let hidden = rows_out.len().saturating_sub(budget);
        let shown = if hidden > 0 { budget.saturating_sub(1) } else { rows_out.len() };
        for row in &rows_out[..shown] {
            lines.push(self.row_line(row, now_ms));
        }
        if hidden > 0 {
            let mut more = Counts::default();
            for row in &rows_out[shown..] {
                match row {
                    Row::Node { key, .. } => more.add(self.nodes.get(*key).map_or("ok", |n| n.status.as_str())),
                    Row::Folded { counts, .. } => {
                        more.running += counts.running;
                        more.ok += counts.ok;
                        more.failed += counts.failed;
                    }
                }
            }
            lines.push(format!("… {} more ({})", more.total(), describe(&more)));
        }
        lines.push(self.footer(now_ms));
        if cols > 0 {
            for line in &mut lines {
                cut(line, cols - 1);
            }
        }
        lines
    }

    /// The body in tree order; with `fold`, each parent's ended leaves are one line.
    fn rows(&self, fold: bool) -> Vec<Row<'_>> {
        let mut rows = Vec::new();
        for root in self.shown_roots() {
            self.node_rows(root, String::new(), String::new(), fold, &mut rows);
        }
        rows
    }

    fn node_rows<'a>(&'a self, key: &'a str, first: String, rest: String, fold: bool, rows: &mut Vec<Row<'a>>) {
        let Some(node) = self.nodes.get(key) else { return };
        rows.push(Row::Node { prefix: first, key });
        let ended_leaf = |k: &String| self.nodes.get(k).is_some_and(|n| n.children.is_empty() && n.status != "running");
        let folded: Vec<&String> = node.children.iter().filter(|k| fold && ended_leaf(k)).collect();
        // One ended leaf stays as it is: its own line is no taller than the fold's.
        let fold_here = folded.len() >= 2;
        let mut kids: Vec<Option<&str>> = Vec::new();
        for child in &node.children {
            match fold_here && ended_leaf(child) {
                true if kids.contains(&None) => {}
                true => kids.push(None),
                false => kids.push(Some(child.as_str())),
            }
        }
        for (i, kid) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            let (branch, indent) = if last { ("└── ", "    ") } else { ("├── ", "│   ") };
            match kid {
                Some(child) => self.node_rows(child, format!("{rest}{branch}"), format!("{rest}{indent}"), fold, rows),
                None => {
                    let mut counts = Counts::default();
                    for k in &folded {
                        counts.add(self.nodes.get(*k).map_or("ok", |n| n.status.as_str()));
                    }
                    rows.push(Row::Folded { prefix: format!("{rest}{branch}"), counts });
                }
            }
        }
    }

    fn row_line(&self, row: &Row<'_>, now_ms: u64) -> String {
        match row {
            Row::Folded { prefix, counts } => format!("{prefix}… {} ended ({})", counts.total(), describe(counts)),
            Row::Node { prefix, key } => match self.nodes.get(*key) {
                Some(node) => format!("{prefix}{}", node_line(key, node, now_ms)),
                None => format!("{prefix}{key}"),
            },
        }
    }

    fn footer(&self, now_ms: u64) -> String {
        let counts = self.counts();
        let mut tokens = 0u64;
        // What is known so far: a session with no priced call yet adds nothing.
        let mut cost = 0.0;
        let mut started = None::<u64>;
        // The end of the latest session, or now while one runs.
        let mut last = 0u64;
        let mut stack: Vec<&str> = self.shown_roots().collect();
        while let Some(key) = stack.pop() {
            if let Some(node) = self.nodes.get(key) {
                tokens = tokens.saturating_add(node.tokens);
                cost += node.cost_usd.unwrap_or(0.0);
                started = Some(started.map_or(node.started_ms, |s| s.min(node.started_ms)));
                last = last.max(node.ended_ms.unwrap_or(now_ms));
                stack.extend(node.children.iter().map(String::as_str));
            }
        }
        let mut line = format!("sessions: {} ({})   tokens: {tokens}", counts.total(), describe(&counts));
        if cost > 0.0 {
            let _ = write!(line, "   cost: ${cost:.4}");
        }
        if let Some(started) = started {
            let _ = write!(line, "   elapsed: {}", seconds(last.saturating_sub(started)));
        }
        if self.unfollowed > 0 {
            let _ = write!(line, "   ({} sessions not shown)", self.unfollowed);
        }
        if self.lost > 0 {
            let _ = write!(line, "   ({} events lost)", self.lost);
        }
        line
    }
}

/// `agent:brain:main "label"  brain  builtin/brain  running  1.2 s  340 tok  $0.0012`.
fn node_line(key: &str, node: &Node, now_ms: u64) -> String {
    let label = node.label.as_deref().map(|l| format!(" \"{l}\"")).unwrap_or_default();
    let model = if node.model.is_empty() { "?" } else { node.model.as_str() };
    let elapsed = node.ended_ms.unwrap_or(now_ms).saturating_sub(node.started_ms);
    let mut line = format!(
        "{}{label}  {}  {model}  {}  {}  {} tok",
        short_key(key),
        node.agent,
        node.status,
        seconds(elapsed),
        node.tokens
    );
    if let Some(cost) = node.cost_usd {
        let _ = write!(line, "  ${cost:.4}");
    }
    if let Some(error) = &node.error {
        let _ = write!(line, "  ! {}", error.lines().next().unwrap_or_default());
    }
    line
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn describe(counts: &Counts) -> String {
    let mut parts = Vec::new();
    for (n, what) in [(counts.running, "running"), (counts.ok, "ok"), (counts.failed, "not ok")] {
        if n > 0 {
            parts.push(format!("{what} {n}"));
        }
    }
    parts.join(", ")
}

/// Cut `line` to `max` characters, the last one an ellipsis when cut.
fn cut(line: &mut String, max: usize) {
    if let Some((at, _)) = line.char_indices().nth(max) {
        let keep = line[..at].char_indices().last().map_or(0, |(i, _)| i);
        line.truncate(keep);
        line.push('…');
    }
}

mod feed;
mod screen;

pub use screen::{Screen, Throttle};

#[cfg(test)]
mod tests;
