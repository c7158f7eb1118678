//! Capabilities: the only module that can construct one.
//!
//! A [`Capability`] says who may do what, for how long and at what cost: a principal
//! (session key), a [`ScopeSet`], a spawn depth and maximum depth, an optional deadline,
//! an optional token budget, and a link into a revocation tree. Its fields are private;
//! outside this module a capability comes from [`Authority::mint_root`] (the gateway's
//! roots), from [`Capability::attenuate`], the one narrowing function, or from what
//! was decided before: [`Authority::adopt`] (a worker takes the grant the gateway
//! attenuated for it, narrowing it further) and [`Authority::ended`] (revoked, for a
//! restored record; it grants nothing). A child
//! therefore never holds a scope its parent lacks, never outlives its parent's deadline,
//! never goes deeper than its parent's maximum depth and never spends more than its
//! parent has left.
//!
//! Revocation: every capability owns a node in a revocation tree. Revoking marks the
//! node and all its descendants (work proportional to the subtree, done once); checking
//! reads one atomic flag, so [`Capability::check`] is O(1) whatever the depth. Creating
//! a child and revoking its parent are serialised by the parent's lock, so a child
//! minted from a revoked parent is impossible.
//!
//! Capabilities are cheap to clone (one `Arc`) and travel inside actor messages.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::keys::SessionKey;
use crate::scope::{Scope, ScopeSet};
use crate::tools::workspace::Workspace;

/// Why a capability could not be used or narrowed. Messages name the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("capability of {0} has been revoked")]
    Revoked(SessionKey),
    #[error("capability of {0} has expired (deadline passed)")]
    Expired(SessionKey),
    #[error("scope escalation refused: parent lacks {missing:?}")]
    ScopeEscalation { missing: ScopeSet },
    #[error("max spawn depth reached (maxSpawnDepth={max}); a child would be at depth {depth}")]
    DepthExceeded { depth: u32, max: u32 },
    #[error("requested max depth {requested} exceeds the parent's max depth {parent}")]
    MaxDepthEscalation { requested: u32, parent: u32 },
    #[error("requested deadline is later than the parent's deadline")]
    DeadlineBeyondParent,
    #[error("token budget exceeded: requested {requested}, parent has {remaining} left")]
    BudgetExceeded { requested: u64, remaining: u64 },
    #[error("token budget exhausted")]
    BudgetExhausted,
    #[error("token budget exceeded: {used} tokens used of {limit}")]
    BudgetOverrun { used: u64, limit: u64 },
    #[error("cost budget exceeded: ${:.6} spent of ${:.6}", *.used as f64 / 1e6, *.limit as f64 / 1e6)]
    CostOverrun { used: u64, limit: u64 },
    #[error("workspace escalation refused: {requested} is not inside the parent's workspace{}", .parent.as_deref().map(|p| format!(" {p}")).unwrap_or_else(|| " (the parent has none)".into()))]
    WorkspaceEscalation { requested: String, parent: Option<String> },
}

/// What a child asks for. Fields left `None` inherit the parent's value.
#[derive(Clone, Debug)]
pub struct AttenuateRequest {
    pub principal: SessionKey,
    pub scopes: ScopeSet,
    pub max_depth: Option<u32>,
    pub deadline: Option<Instant>,
    pub budget_tokens: Option<u64>,
    /// A cost budget in micro-USD; `None` inherits what the parent has left.
    pub budget_micro_usd: Option<u64>,
    /// The child's workspace: the parent's or a directory inside it. `None` inherits.
    pub workspace: Option<Workspace>,
}

/// What a root may spend: tokens and cost (micro-USD), each optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    pub tokens: Option<u64>,
    pub micro_usd: Option<u64>,
}

/// USD as whole micro-dollars (what cost budgets count), rounded up, saturating.
pub fn micro_usd(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1_000_000.0).ceil().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// An unforgeable, narrowing-only grant of authority.
#[derive(Clone)]
pub struct Capability(Arc<Inner>);

struct Inner {
    principal: SessionKey,
    scopes: ScopeSet,
    depth: u32,
    max_depth: u32,
    deadline: Option<Instant>,
    budget: Option<Arc<Budget>>,
    /// The cost budget, in micro-USD.
    cost: Option<Arc<Budget>>,
    /// The directory the work tools are confined to; none, no work tool has a place
    /// to act.
    workspace: Option<Workspace>,
    /// Inline, not behind its own `Arc`: a capability and its node live and die
    /// together, and one allocation per session less is what a parked session saves.
    revocation: RevocationNode,
}

impl Capability {
    /// The one narrowing function: derive a child capability, or say which limit refused.
    pub fn attenuate(&self, request: AttenuateRequest) -> Result<Capability, CapabilityError> {
        let parent = &*self.0;
        let missing = request.scopes.minus(parent.scopes);
        if !missing.is_empty() {
            return Err(CapabilityError::ScopeEscalation { missing });
        }
        let depth = parent.depth + 1;
        if depth > parent.max_depth {
            return Err(CapabilityError::DepthExceeded { depth, max: parent.max_depth });
        }
        let max_depth = match request.max_depth {
            Some(requested) if requested > parent.max_depth => {
                return Err(CapabilityError::MaxDepthEscalation { requested, parent: parent.max_depth })
            }
            Some(requested) => requested,
            None => parent.max_depth,
        };
        let deadline = match (request.deadline, parent.deadline) {
            (Some(child), Some(limit)) if child > limit => return Err(CapabilityError::DeadlineBeyondParent),
            (Some(child), _) => Some(child),
            (None, inherited) => inherited,
        };
        let budget = Budget::derive(parent.budget.as_ref(), request.budget_tokens)?;
        let cost = Budget::derive(parent.cost.as_ref(), request.budget_micro_usd)?;
        let workspace = match (request.workspace, &parent.workspace) {
            (None, inherited) => inherited.clone(),
            (Some(child), Some(limit)) if limit.contains(&child) => Some(child),
            (Some(child), limit) => {
                return Err(CapabilityError::WorkspaceEscalation {
                    requested: child.root().display().to_string(),
                    parent: limit.as_ref().map(|l| l.root().display().to_string()),
                })
            }
        };
        let child = Inner {
            principal: request.principal,
            scopes: request.scopes,
            depth,
            max_depth,
            deadline,
            budget,
            cost,
            workspace,
            revocation: RevocationNode::default(),
        };
        parent.revocation.adopt(child).map(Capability).ok_or_else(|| CapabilityError::Revoked(parent.principal.clone()))
    }

    /// Is this capability usable now? O(1): one flag and one clock comparison.
    pub fn check(&self, now: Instant) -> Result<(), CapabilityError> {
        if self.0.revocation.revoked.load(Ordering::Acquire) {
            return Err(CapabilityError::Revoked(self.0.principal.clone()));
        }
        match self.0.deadline {
            Some(deadline) if now >= deadline => Err(CapabilityError::Expired(self.0.principal.clone())),
            _ => Ok(()),
        }
    }

    /// Revoke this capability and everything derived from it.
    pub fn revoke(&self) {
        self.0.revocation.revoke();
    }

    pub fn is_revoked(&self) -> bool {
        self.0.revocation.revoked.load(Ordering::Acquire)
    }

    pub fn principal(&self) -> &SessionKey {
        &self.0.principal
    }

    pub fn scopes(&self) -> ScopeSet {
        self.0.scopes
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.0.scopes.satisfies(scope)
    }

    pub fn depth(&self) -> u32 {
        self.0.depth
    }

    pub fn workspace(&self) -> Option<&Workspace> {
        self.0.workspace.as_ref()
    }

    pub fn max_depth(&self) -> u32 {
        self.0.max_depth
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// Tokens left, `None` when unlimited.
    pub fn remaining_budget(&self) -> Option<u64> {
        self.0.budget.as_ref().map(|b| b.remaining())
    }

    /// Record spent tokens against this capability and every ancestor budget; an error
    /// when the charge took one of them past its limit.
    pub fn charge(&self, tokens: u64) -> Result<(), CapabilityError> {
        match &self.0.budget {
            Some(budget) => budget.charge(tokens),
            None => Ok(()),
        }
    }

    /// Cost left in micro-USD, `None` when unlimited.
    pub fn remaining_cost(&self) -> Option<u64> {
        self.0.cost.as_ref().map(|b| b.remaining())
    }

    /// Record spent micro-USD like [`Self::charge`] records tokens.
    pub fn charge_cost(&self, micro_usd: u64) -> Result<(), CapabilityError> {
        match &self.0.cost {
            Some(budget) => budget.charge(micro_usd).map_err(|e| match e {
                CapabilityError::BudgetOverrun { used, limit } => CapabilityError::CostOverrun { used, limit },
                other => other,
            }),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capability")
            .field("principal", &self.0.principal)
            .field("scopes", &self.0.scopes)
            .field("depth", &self.0.depth)
            .field("max_depth", &self.0.max_depth)
            .field("remaining_budget", &self.remaining_budget())
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

/// Mints root capabilities. It holds no state; each gateway shard holds its own copy (in
/// a worker's process too).
#[derive(Debug, Default, Clone)]
pub struct Authority {
    _private: (),
}

impl Authority {
    pub fn new() -> Authority {
        Authority { _private: () }
    }

    /// A root capability for a main session: depth 0.
    pub fn mint_root(
        &self,
        principal: SessionKey,
        scopes: ScopeSet,
        max_depth: u32,
        deadline: Option<Instant>,
        budgets: Budgets,
        workspace: Option<Workspace>,
    ) -> Capability {
        Authority::unparented(principal, scopes, (0, max_depth), deadline, budgets, workspace)
    }

    /// A capability with no parent in this process (its budgets are its own), at
    /// `depth` with room down to `max_depth`: a main session's, or a worker's session's.
    fn unparented(
        principal: SessionKey,
        scopes: ScopeSet,
        (depth, max_depth): (u32, u32),
        deadline: Option<Instant>,
        budgets: Budgets,
        workspace: Option<Workspace>,
    ) -> Capability {
        let root = |limit| Arc::new(Budget { limit, used: AtomicU64::new(0), parent: None });
        Capability(Arc::new(Inner {
            principal,
            scopes,
            depth,
            max_depth,
            deadline,
            budget: budgets.tokens.map(root),
            cost: budgets.micro_usd.map(root),
            workspace,
            revocation: RevocationNode::default(),
        }))
    }
}

impl Authority {
    /// The capability of a session a worker runs, from the grant the gateway signed
    /// ([`crate::worker::token`]): at the grant's depth, never deeper, with no more than
    /// the grant's scopes (and the agent's, `agent_scopes`), deadline and budgets. The
    /// gateway attenuated the grant from the parent's capability; this only adopts it in
    /// the worker's process, narrowing it further where the worker knows better.
    pub fn adopt(
        &self,
        principal: SessionKey,
        grant: &crate::store::Grant,
        agent_scopes: ScopeSet,
        now_ms: u64,
        workspace: Option<Workspace>,
    ) -> Capability {
        let deadline =
            grant.deadline_ms.map(|ms| Instant::now() + std::time::Duration::from_millis(ms.saturating_sub(now_ms)));
        Authority::unparented(
            principal,
            ScopeSet::from_bits(grant.scopes).intersect(agent_scopes),
            (grant.depth, grant.max_depth.min(grant.depth)),
            deadline,
            Budgets { tokens: grant.budget_tokens, micro_usd: grant.budget_micro_usd },
            workspace,
        )
    }

    /// A capability for the record of a session that ended before this process
    /// started (restored for history), at its depth in its tree: revoked from the
    /// start, it grants nothing.
    pub fn ended(&self, principal: SessionKey) -> Capability {
        let depth = principal.depth();
        let revocation = RevocationNode::default();
        revocation.revoked.store(true, Ordering::Release);
        Capability(Arc::new(Inner {
            principal,
            scopes: ScopeSet::EMPTY,
            workspace: None,
            depth,
            max_depth: depth,
            deadline: None,
            budget: None,
            cost: None,
            revocation,
        }))
    }
}

/// A token budget; spending is charged up the chain so a parent's limit covers its
/// whole subtree.
struct Budget {
    limit: u64,
    used: AtomicU64,
    parent: Option<Arc<Budget>>,
}

impl Budget {
    fn own_remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::Acquire))
    }

    fn remaining(&self) -> u64 {
        let mut remaining = self.own_remaining();
        let mut next = self.parent.as_ref();
        while let Some(budget) = next {
            remaining = remaining.min(budget.own_remaining());
            next = budget.parent.as_ref();
        }
        remaining
    }

    fn derive(parent: Option<&Arc<Budget>>, requested: Option<u64>) -> Result<Option<Arc<Budget>>, CapabilityError> {
        let limit = match (parent.map(|p| p.remaining()), requested) {
            (None, None) => return Ok(None),
            (None, Some(requested)) => requested,
            (Some(0), _) => return Err(CapabilityError::BudgetExhausted),
            (Some(remaining), Some(requested)) if requested > remaining => {
                return Err(CapabilityError::BudgetExceeded { requested, remaining })
            }
            (Some(_), Some(requested)) => requested,
            (Some(remaining), None) => remaining,
        };
        Ok(Some(Arc::new(Budget { limit, used: AtomicU64::new(0), parent: parent.cloned() })))
    }

    /// Charge this budget and every ancestor. Saturating: token counts come from
    /// providers, and a huge one must exhaust the budget, never wrap it around.
    fn charge(&self, tokens: u64) -> Result<(), CapabilityError> {
        let mut exceeded = None;
        let mut next = Some(self);
        while let Some(budget) = next {
            let before =
                budget.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_add(tokens)));
            let used = before.unwrap_or_else(|v| v).saturating_add(tokens);
            if used > budget.limit && exceeded.is_none() {
                exceeded = Some(CapabilityError::BudgetOverrun { used, limit: budget.limit });
            }
            next = budget.parent.as_deref();
        }
        exceeded.map_or(Ok(()), Err)
    }
}

/// A capability's node of the revocation tree: its own flag plus weak links to the
/// capabilities derived from it.
#[derive(Default)]
struct RevocationNode {
    revoked: AtomicBool,
    children: Mutex<Vec<Weak<Inner>>>,
}

impl RevocationNode {
    fn lock(&self) -> MutexGuard<'_, Vec<Weak<Inner>>> {
        self.children.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Link `child` below this node, or `None` when this node is revoked. Dead links are
    /// pruned when the list would grow, which keeps the cost amortised O(1); ended
    /// children's allocations, kept by their weak links, are freed at that prune (or with
    /// this node).
    fn adopt(&self, child: Inner) -> Option<Arc<Inner>> {
        let mut children = self.lock();
        if self.revoked.load(Ordering::Acquire) {
            return None;
        }
        if children.len() == children.capacity() {
            children.retain(|weak| weak.strong_count() > 0);
        }
        let child = Arc::new(child);
        children.push(Arc::downgrade(&child));
        Some(child)
    }

    fn revoke(&self) {
        let children = {
            let mut children = self.lock();
            self.revoked.store(true, Ordering::Release);
            std::mem::take(&mut *children)
        };
        for child in children.iter().filter_map(Weak::upgrade) {
            child.revocation.revoke();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn root(scopes: ScopeSet, max_depth: u32, budget: Option<u64>) -> Capability {
        Authority::new().mint_root(
            SessionKey::main("brain"),
            scopes,
            max_depth,
            None,
            Budgets { tokens: budget, micro_usd: None },
            None,
        )
    }

    fn request(principal: &str, scopes: ScopeSet) -> AttenuateRequest {
        AttenuateRequest {
            principal: principal.into(),
            scopes,
            max_depth: None,
            deadline: None,
            budget_tokens: None,
            budget_micro_usd: None,
            workspace: None,
        }
    }

    fn scope_set(bits: u16) -> ScopeSet {
        Scope::ALL.into_iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| s).collect()
    }

    #[test]
    fn revoking_a_parent_revokes_every_descendant() {
        let parent = root(ScopeSet::all(), 3, None);
        let child = parent.attenuate(request("c", ScopeSet::all())).unwrap();
        let grandchild = child.attenuate(request("g", ScopeSet::all())).unwrap();
        let now = Instant::now();
        assert!(grandchild.check(now).is_ok());
        parent.revoke();
        assert_eq!(grandchild.check(now), Err(CapabilityError::Revoked("g".into())));
        assert_eq!(child.check(now), Err(CapabilityError::Revoked("c".into())));
        assert_eq!(
            parent.attenuate(request("late", ScopeSet::all())).unwrap_err(),
            CapabilityError::Revoked(SessionKey::main("brain"))
        );
    }

    #[test]
    fn revoking_a_child_leaves_the_parent_and_siblings() {
        let parent = root(ScopeSet::all(), 3, None);
        let a = parent.attenuate(request("a", ScopeSet::all())).unwrap();
        let b = parent.attenuate(request("b", ScopeSet::all())).unwrap();
        a.revoke();
        let now = Instant::now();
        assert!(parent.check(now).is_ok());
        assert!(b.check(now).is_ok());
        assert!(a.check(now).is_err());
    }

    #[test]
    fn budgets_are_charged_up_the_chain() {
        let parent = root(ScopeSet::all(), 3, Some(100));
        let child = parent.attenuate(request("c", ScopeSet::all())).unwrap();
        assert_eq!(child.remaining_budget(), Some(100));
        child.charge(60).unwrap();
        assert_eq!(parent.remaining_budget(), Some(40));
        let sibling = parent.attenuate(AttenuateRequest { budget_tokens: Some(50), ..request("s", ScopeSet::all()) });
        assert_eq!(sibling.unwrap_err(), CapabilityError::BudgetExceeded { requested: 50, remaining: 40 });
        assert_eq!(child.charge(40), Ok(()), "spending exactly the budget is allowed");
        assert_eq!(child.remaining_budget(), Some(0));
        assert_eq!(child.charge(1), Err(CapabilityError::BudgetOverrun { used: 101, limit: 100 }));
    }

    #[test]
    fn a_huge_charge_exhausts_the_budget_instead_of_wrapping() {
        let parent = root(ScopeSet::all(), 3, Some(1000));
        let child = parent.attenuate(request("c", ScopeSet::all())).unwrap();
        child.charge(10).unwrap();
        let overrun = CapabilityError::BudgetOverrun { used: u64::MAX, limit: 1000 };
        assert_eq!(child.charge(u64::MAX), Err(overrun.clone()));
        assert_eq!(child.charge(u64::MAX), Err(overrun));
        assert_eq!((parent.remaining_budget(), child.remaining_budget()), (Some(0), Some(0)));
    }

    #[test]
    fn cost_budgets_are_charged_up_the_chain_like_tokens() {
        let parent = Authority::new().mint_root(
            SessionKey::main("brain"),
            ScopeSet::all(),
            3,
            None,
            Budgets { tokens: None, micro_usd: Some(micro_usd(0.01)) },
            None,
        );
        let child = parent.attenuate(request("c", ScopeSet::all())).unwrap();
        assert_eq!(child.remaining_cost(), Some(10_000));
        child.charge_cost(micro_usd(0.004)).unwrap();
        assert_eq!(parent.remaining_cost(), Some(6_000));
        let err = child.charge_cost(micro_usd(0.007)).unwrap_err();
        assert_eq!(err, CapabilityError::CostOverrun { used: 11_000, limit: 10_000 });
        assert_eq!(err.to_string(), "cost budget exceeded: $0.011000 spent of $0.010000");
        assert_eq!((micro_usd(-1.0), micro_usd(f64::NAN), micro_usd(1e-9)), (0, 0, 1));
    }

    #[test]
    fn deadlines_expire() {
        let now = Instant::now();
        let cap = Authority::new().mint_root(
            "k".into(),
            ScopeSet::all(),
            1,
            Some(now + Duration::from_secs(1)),
            Budgets::default(),
            None,
        );
        assert!(cap.check(now).is_ok());
        assert_eq!(cap.check(now + Duration::from_secs(2)), Err(CapabilityError::Expired("k".into())));
    }

    proptest! {
        /// Whatever a parent holds and a child asks for, an accepted child is never
        /// wider than its parent on any axis.
        #[test]
        fn attenuation_cannot_escalate(
            parent_bits in 0u16..512, child_bits in 0u16..512,
            parent_depth_chain in 0u32..4, parent_max in 0u32..6, child_max in proptest::option::of(0u32..8),
            parent_deadline_ms in proptest::option::of(1u64..10_000), child_deadline_ms in proptest::option::of(1u64..20_000),
            parent_budget in proptest::option::of(0u64..1000), spent in 0u64..1000, child_budget in proptest::option::of(0u64..2000),
        ) {
            let base = Instant::now();
            let mut parent = Authority::new().mint_root(
                "root".into(), scope_set(parent_bits), parent_max,
                parent_deadline_ms.map(|ms| base + Duration::from_millis(ms)),
                Budgets { tokens: parent_budget, micro_usd: parent_budget }, None);
            for i in 0..parent_depth_chain {
                match parent.attenuate(request(&format!("p{i}"), parent.scopes())) {
                    Ok(next) => parent = next,
                    Err(_) => break,
                }
            }
            let _ = parent.charge(spent);
            let remaining_before = parent.remaining_budget();
            let asked = AttenuateRequest {
                principal: "child".into(),
                scopes: scope_set(child_bits),
                max_depth: child_max,
                deadline: child_deadline_ms.map(|ms| base + Duration::from_millis(ms)),
                budget_tokens: child_budget,
                budget_micro_usd: child_budget,
                workspace: None,
            };
            let cost_before = parent.remaining_cost();
            if let Ok(child) = parent.attenuate(asked) {
                if let Some(remaining) = cost_before {
                    prop_assert!(child.remaining_cost().is_some_and(|b| b <= remaining));
                }
                prop_assert!(child.scopes().is_subset_of(parent.scopes()));
                prop_assert_eq!(child.depth(), parent.depth() + 1);
                prop_assert!(child.depth() <= parent.max_depth());
                prop_assert!(child.max_depth() <= parent.max_depth());
                if let Some(limit) = parent.deadline() {
                    prop_assert!(child.deadline().is_some_and(|d| d <= limit));
                }
                if let Some(remaining) = remaining_before {
                    prop_assert!(child.remaining_budget().is_some_and(|b| b <= remaining));
                }
                parent.revoke();
                prop_assert!(child.check(base).is_err());
            }
        }
    }
}
