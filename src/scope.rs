//! Scopes and the one authorization table.
//!
//! A [`Scope`] is a named permission; a [`ScopeSet`] is a small bit set of them, cheap to
//! copy and to intersect (capabilities narrow by intersection). [`required_scope`] is the
//! single table that says which scope an operation needs, for WebSocket RPC methods and
//! in-process agent tools alike, and [`authorize`] is the single check every caller goes
//! through. Implications live in [`ScopeSet::satisfies`]: `operator.admin` satisfies every
//! scope and `operator.write` satisfies `operator.read`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One permission. Operator scopes are OpenClaw's; `agent.spawn` (creating subagents)
/// and the `workspace.*` scopes (reading, changing and running commands in a
/// workspace) are hivegate's tool permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    OperatorRead,
    OperatorWrite,
    OperatorAdmin,
    OperatorApprovals,
    OperatorPairing,
    AgentSpawn,
    WorkspaceRead,
    WorkspaceWrite,
    WorkspaceExec,
    /// Calling the tools of the gateway's MCP servers.
    McpCall,
}

impl Scope {
    pub const ALL: [Scope; 10] = [
        Scope::OperatorRead,
        Scope::OperatorWrite,
        Scope::OperatorAdmin,
        Scope::OperatorApprovals,
        Scope::OperatorPairing,
        Scope::AgentSpawn,
        Scope::WorkspaceRead,
        Scope::WorkspaceWrite,
        Scope::WorkspaceExec,
        Scope::McpCall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OperatorRead => "operator.read",
            Scope::OperatorWrite => "operator.write",
            Scope::OperatorAdmin => "operator.admin",
            Scope::OperatorApprovals => "operator.approvals",
            Scope::OperatorPairing => "operator.pairing",
            Scope::AgentSpawn => "agent.spawn",
            Scope::WorkspaceRead => "workspace.read",
            Scope::WorkspaceWrite => "workspace.write",
            Scope::WorkspaceExec => "workspace.exec",
            Scope::McpCall => "mcp.call",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes as a bit set. `Copy`, so narrowing costs nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u16);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);

    pub fn all() -> ScopeSet {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn with(self, scope: Scope) -> ScopeSet {
        ScopeSet(self.0 | scope.bit())
    }

    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn intersect(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    /// The scopes in `self` that are not in `other`.
    pub fn minus(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set as stored (the store records a session's grant).
    pub fn bits(self) -> u16 {
        self.0
    }

    /// A stored set read back; bits no scope has are dropped. A set grants nothing by
    /// itself: only a capability built through `attenuate` or `mint_root` does.
    pub fn from_bits(bits: u16) -> ScopeSet {
        ScopeSet(bits & ScopeSet::all().0)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Whether holding `self` is enough for an operation that needs `needed`, with the
    /// implications: admin satisfies everything, write satisfies read.
    pub fn satisfies(self, needed: Scope) -> bool {
        self.contains(needed)
            || self.contains(Scope::OperatorAdmin)
            || (needed == Scope::OperatorRead && self.contains(Scope::OperatorWrite))
    }

    /// Parses scope names; unknown names are returned separately so callers decide
    /// whether to refuse or ignore them.
    pub fn parse_lenient<'a, I: IntoIterator<Item = &'a str>>(names: I) -> (ScopeSet, Vec<&'a str>) {
        let mut set = ScopeSet::EMPTY;
        let mut unknown = Vec::new();
        for name in names {
            match Scope::parse(name) {
                Some(scope) => set = set.with(scope),
                None => unknown.push(name),
            }
        }
        (set, unknown)
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(ScopeSet::EMPTY, ScopeSet::with)
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::as_str)).finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Scope::as_str))
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names
            .iter()
            .map(|n| Scope::parse(n).ok_or_else(|| serde::de::Error::custom(format!("unknown scope '{n}'"))))
            .collect()
    }
}

/// What an operation needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone authenticated (the caller's own yield, for example).
    Nothing,
    Scope(Scope),
    /// Only a connection with role `node`.
    NodeRole,
}

/// The one authorization table: operation name (RPC method or agent tool) to what it
/// needs. Agent tools map to the scope of the RPC method that does the same thing, so a
/// session and a WebSocket operator are held to the same rule. Unknown operations need
/// `operator.admin`.
pub fn required_scope(operation: &str) -> Requirement {
    use Requirement::{NodeRole, Nothing, Scope as S};
    match operation {
        // agent tools
        "sessions_spawn" => S(Scope::AgentSpawn),
        "sessions_list" | "sessions_history" => S(Scope::OperatorRead),
        "sessions_send" | "subagents" | "nodes_invoke" => S(Scope::OperatorWrite),
        "sessions_yield" => Nothing,
        "read" | "ls" | "glob" | "grep" => S(Scope::WorkspaceRead),
        "write" | "edit" => S(Scope::WorkspaceWrite),
        "exec" => S(Scope::WorkspaceExec),
        // any tool of an MCP server (`server__tool`)
        "mcp" => S(Scope::McpCall),
        // RPC methods
        "connect" => Nothing,
        "health" | "status" | "node.list" | "node.describe" | "sessions.list" | "sessions.get" | "chat.history"
        | "agents.list" | "models.list" | "last-heartbeat" | "system-presence" | "runs.list" | "runs.show" => {
            S(Scope::OperatorRead)
        }
        "agent" | "agent.wait" | "node.invoke" | "sessions.send" | "sessions.steer" | "sessions.abort"
        | "sessions.create" | "chat.send" | "chat.abort" => S(Scope::OperatorWrite),
        "device.pair.list"
        | "device.pair.approve"
        | "device.pair.reject"
        | "device.pair.remove"
        | "device.token.rotate"
        | "device.token.revoke"
        | "node.pair.list"
        | "node.pair.approve"
        | "node.pair.reject"
        | "node.rename" => S(Scope::OperatorPairing),
        "exec.approval.resolve" | "exec.approvals.get" => S(Scope::OperatorApprovals),
        "node.invoke.result"
        | "node.event"
        | "node.pending.pull"
        | "node.pending.ack"
        | "node.pending.drain"
        | "node.runnerInventory.update"
        | "node.skills.update"
        | "node.pluginTools.update" => NodeRole,
        _ => S(Scope::OperatorAdmin),
    }
}

/// Refusal from [`authorize`], naming what was missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing scope: {0}")]
    MissingScope(Scope),
    #[error("only node connections may call this method")]
    NodeRoleRequired,
}

/// The single check: may a caller holding `scopes` (with `is_node` role) perform
/// `operation`?
pub fn authorize(scopes: ScopeSet, is_node: bool, operation: &str) -> Result<(), Denied> {
    match required_scope(operation) {
        Requirement::Nothing => Ok(()),
        Requirement::NodeRole if is_node => Ok(()),
        Requirement::NodeRole => Err(Denied::NodeRoleRequired),
        Requirement::Scope(needed) if scopes.satisfies(needed) => Ok(()),
        Requirement::Scope(needed) => Err(Denied::MissingScope(needed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implications_follow_the_protocol_table() {
        let write = ScopeSet::EMPTY.with(Scope::OperatorWrite);
        assert_eq!(authorize(write, false, "health"), Ok(()));
        assert_eq!(authorize(write, false, "node.invoke"), Ok(()));
        assert_eq!(authorize(write, false, "device.pair.approve"), Err(Denied::MissingScope(Scope::OperatorPairing)));
        let admin = ScopeSet::EMPTY.with(Scope::OperatorAdmin);
        assert_eq!(authorize(admin, false, "device.pair.approve"), Ok(()));
        assert_eq!(authorize(admin, false, "some.unknown.method"), Ok(()));
        assert_eq!(authorize(write, false, "some.unknown.method"), Err(Denied::MissingScope(Scope::OperatorAdmin)));
        assert_eq!(authorize(admin, false, "node.invoke.result"), Err(Denied::NodeRoleRequired));
        assert_eq!(authorize(ScopeSet::EMPTY, true, "node.invoke.result"), Ok(()));
    }

    #[test]
    fn scope_sets_round_trip_through_json() {
        let set: ScopeSet = [Scope::OperatorRead, Scope::AgentSpawn].into_iter().collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["operator.read","agent.spawn"]"#);
        assert_eq!(serde_json::from_str::<ScopeSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<ScopeSet>(r#"["operator.root"]"#).is_err());
    }
}
