//! The spawn decision, as a plain function: check the parent's capability, the policy and
//! every limit, resolve the agent and model, and attenuate the capability. The gateway
//! actor performs the effects (start the child, register it) only for an accepted plan.

use std::sync::Arc;
use std::time::Instant;

use super::messages::{Cleanup, ContextMode, SpawnMode, SpawnReply, SpawnRequest};
use super::registry::{Registry, Status};
use crate::agent::{AgentDef, Agents, Placement};
use crate::capability::{AttenuateRequest, Capability, CapabilityError};
use crate::config::Limits;
use crate::keys::{RunId, SessionKey};
use crate::model::{Message, ModelClient, ModelRef};
use crate::scope::authorize;
use crate::tools::workspace::Workspace;

/// Everything needed to start an accepted child.
pub struct SpawnPlan {
    pub key: SessionKey,
    pub run_id: RunId,
    pub parent: SessionKey,
    /// The parent's run the child belongs to (recorded with the child).
    pub parent_run_id: RunId,
    pub agent: Arc<AgentDef>,
    pub model: ModelRef,
    /// The spawn named the model: it is used strictly, with no fallback.
    pub model_explicit: bool,
    pub capability: Capability,
    pub task: String,
    pub label: Option<String>,
    pub cleanup: Cleanup,
    pub mode: SpawnMode,
    pub thinking: Option<crate::model::thinking::Thinking>,
    /// The parent's conversation the child starts with (`context: "fork"`), else `None`.
    pub history: Option<Arc<[Message]>>,
    /// The child's own workspace when `cwd` narrowed its parent's (recorded with it).
    pub workspace: Option<Box<str>>,
}

impl SpawnPlan {
    pub fn context(&self) -> ContextMode {
        if self.history.is_some() {
            ContextMode::Fork
        } else {
            ContextMode::Isolated
        }
    }
}

pub struct SpawnContext<'a> {
    pub registry: &'a Registry,
    pub agents: &'a Agents,
    pub limits: &'a Limits,
    pub models: &'a dyn ModelClient,
    /// Spawns can be placed on workers (the store is Postgres, with a work queue).
    pub workers: bool,
}

pub fn plan(
    cx: &SpawnContext,
    parent: &Capability,
    request: SpawnRequest,
    history: Option<Arc<[Message]>>,
    now: Instant,
) -> Result<SpawnPlan, SpawnReply> {
    parent.check(now).map_err(|e| SpawnReply::forbidden(e.to_string()))?;
    authorize(parent.scopes(), false, "sessions_spawn").map_err(|e| SpawnReply::forbidden(e.to_string()))?;
    if let Some(error) = request.refusal() {
        return Err(SpawnReply::Error { error });
    }
    let task = request.task.trim();
    if task.is_empty() {
        return Err(SpawnReply::Error { error: "task must be a non-empty string".into() });
    }
    let history = match (request.forks(), history) {
        (false, _) => None,
        (true, Some(history)) => Some(history),
        (true, None) => {
            return Err(SpawnReply::Error { error: "context \"fork\" needs the parent's conversation".into() })
        }
    };
    let parent_key = parent.principal();
    let (parent_agent_id, active_children, parent_run_id) = match cx.registry.get(parent_key) {
        Some(entry) if entry.status == Status::Running => {
            (entry.agent_id.clone(), entry.active_children, entry.run_id.clone())
        }
        _ => return Err(SpawnReply::Error { error: format!("parent session {parent_key} is not running") }),
    };
    let parent_agent = cx.agents.get(&parent_agent_id).ok_or_else(|| SpawnReply::Error {
        error: format!("agent '{parent_agent_id}' of the parent is not defined"),
    })?;
    let policy = &parent_agent.subagents;

    // No agentId (OpenClaw prompts seldom name one): the policy's default, else the one
    // agent the parent may spawn, else the parent's own agent, as OpenClaw does.
    let only_allowed = match policy.allow_agents.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    };
    let agent_id =
        request.agent_id.as_deref().or(policy.default_agent.as_deref()).or(only_allowed).unwrap_or(&parent_agent.id);
    let agent = cx.agents.get(agent_id).ok_or_else(|| SpawnReply::Error {
        error: format!("unknown agent '{agent_id}'; defined agents: {}", cx.agents.ids().join(", ")),
    })?;
    if !policy.allow_agents.iter().any(|a| a == agent_id) {
        return Err(SpawnReply::Forbidden {
            error: format!(
                "agent '{}' may not spawn '{agent_id}'; allowed: [{}]",
                parent_agent.id,
                policy.allow_agents.join(", ")
            ),
            limit: Some("allowAgents"),
            value: None,
        });
    }

    let on_worker = agent.placement == Placement::Worker;
    if on_worker {
        placeable(cx, agent_id, &request, history.is_some())?;
    }

    room(cx.registry, cx.limits, policy, active_children)
        .map_err(|hit| SpawnReply::limit(hit.limit, hit.value, hit.error))?;

    let model = resolve_model(cx, &request, policy.model.as_ref(), agent)?;
    let timeout = match request.run_timeout_seconds {
        Some(s) => crate::config::timeout_from_secs(s)
            .map_err(|e| SpawnReply::Error { error: format!("runTimeoutSeconds {e}") })?,
        None => policy.run_timeout.unwrap_or(cx.limits.default_run_timeout),
    };
    // Never later than the parent's deadline; checked, so no timeout can overflow.
    let deadline = match (now.checked_add(timeout), parent.deadline()) {
        (Some(own), Some(limit)) => own.min(limit),
        (Some(own), None) => own,
        (None, Some(limit)) => limit,
        (None, None) => now + crate::config::MAX_TIMEOUT,
    };

    let workspace = match request.cwd.as_deref() {
        None => None,
        Some(cwd) => Some(child_workspace(parent, cwd)?),
    };
    let (key, run_id) = parent_key.child(agent_id);
    // A session on a worker spawns nothing: its tree would live on a machine whose
    // crash the gateway cannot see. Its capability stops at its own depth.
    let max_depth = match (agent.subagents.max_depth, on_worker) {
        (_, true) => Some((parent.depth() + 1).min(parent.max_depth())),
        (Some(d), false) => Some(d.min(parent.max_depth())),
        (None, false) => None,
    };
    let capability = parent
        .attenuate(AttenuateRequest {
            principal: key.clone(),
            scopes: parent.scopes().intersect(agent.scopes),
            max_depth,
            deadline: Some(deadline),
            budget_tokens: None,
            // An agent's own cost budget, narrowed to what the parent has left.
            budget_micro_usd: agent
                .budget_usd
                .map(crate::capability::micro_usd)
                .map(|own| parent.remaining_cost().map_or(own, |left| own.min(left))),
            workspace: workspace.clone(),
        })
        .map_err(refusal)?;
    Ok(SpawnPlan {
        key,
        run_id,
        parent: parent_key.clone(),
        parent_run_id,
        agent: agent.clone(),
        model,
        model_explicit: request.model.is_some(),
        capability,
        task: task.to_string(),
        mode: request.spawn_mode(),
        history,
        thinking: request.thinking().ok().flatten(),
        label: request.label.or(request.task_name).filter(|l| !l.trim().is_empty()),
        cleanup: request.cleanup.unwrap_or_default(),
        workspace: workspace.map(|w| w.root().display().to_string().into_boxed_str()),
    })
}

/// Whether a parent with `active_children` may have one more child running: within its
/// agent's and the gateway's children limit, and the gateway's sessions limit. A spawn
/// and a `session` child's follow-up both ask.
pub fn room(
    registry: &Registry,
    limits: &Limits,
    policy: &crate::agent::SubagentPolicy,
    active_children: usize,
) -> Result<(), LimitHit> {
    let max_children = limits.max_children_per_session.min(policy.max_children.unwrap_or(usize::MAX));
    if active_children >= max_children {
        return Err(LimitHit {
            limit: "maxChildrenPerSession",
            value: max_children as u64,
            error: format!(
                "max active children reached (maxChildrenPerSession={max_children}); wait for a child to finish"
            ),
        });
    }
    if registry.running() >= limits.max_sessions {
        let max = limits.max_sessions;
        return Err(LimitHit {
            limit: "maxSessions",
            value: max as u64,
            error: format!("max running sessions reached (maxSessions={max}); wait for sessions to finish"),
        });
    }
    Ok(())
}

/// Whether a spawn of `agent_id` (placed on workers) can go to a worker: the gateway
/// has a work queue, and the spawn asks for nothing a worker cannot do. Each refusal
/// says why.
fn placeable(cx: &SpawnContext, agent_id: &str, request: &SpawnRequest, forks: bool) -> Result<(), SpawnReply> {
    let refuse = |why: &str| {
        Err(SpawnReply::Error { error: format!("agent '{agent_id}' runs on workers (placement = \"worker\"): {why}") })
    };
    if !cx.workers {
        return refuse("this gateway has no worker queue; serve it with --database-url postgres://...");
    }
    if request.spawn_mode() == SpawnMode::Session {
        return refuse("mode \"session\" is not supported on workers; use mode \"run\"");
    }
    if forks {
        return refuse("context \"fork\" is not supported on workers; use context \"isolated\"");
    }
    if request.cwd.is_some() {
        return refuse("cwd is not supported on workers: a worker works in its own workspace");
    }
    Ok(())
}

/// A limit that refused work: its name, its value, and the message that says so.
pub struct LimitHit {
    pub limit: &'static str,
    pub value: u64,
    pub error: String,
}

/// Strict: an explicit model is used or the spawn fails; never a silent substitute.
fn resolve_model(
    cx: &SpawnContext,
    request: &SpawnRequest,
    policy_model: Option<&ModelRef>,
    agent: &AgentDef,
) -> Result<ModelRef, SpawnReply> {
    let model = match request.model.as_deref() {
        Some(explicit) => ModelRef::parse(explicit)
            .map_err(|e| SpawnReply::Error { error: format!("model override cannot be used: {e}") })?,
        None => policy_model.unwrap_or(&agent.model).clone(),
    };
    cx.models
        .check_model(&model)
        .map_err(|e| SpawnReply::Error { error: format!("model '{model}' cannot be used: {e}") })?;
    Ok(model)
}

fn refusal(error: CapabilityError) -> SpawnReply {
    match error {
        CapabilityError::DepthExceeded { depth, max } => SpawnReply::limit(
            "maxSpawnDepth",
            u64::from(max),
            format!("max spawn depth reached (maxSpawnDepth={max}); a child would be at depth {depth}"),
        ),
        other => SpawnReply::forbidden(other.to_string()),
    }
}

/// The workspace a spawn's `cwd` asks for: a directory inside the parent's, refused
/// (forbidden, with the reason) when it leaves it, is not a directory, or the parent
/// has no workspace.
fn child_workspace(parent: &Capability, cwd: &str) -> Result<Workspace, SpawnReply> {
    let forbidden = |error: String| SpawnReply::Forbidden { error, limit: Some("cwd"), value: None };
    let Some(workspace) = parent.workspace() else {
        return Err(forbidden(format!("cwd {cwd:?} refused: the parent session has no workspace")));
    };
    workspace.narrow(cwd).map_err(|e| forbidden(format!("cwd {cwd:?} refused: {e}")))
}
