//! Agent definitions: data files in `agents/`, validated once into [`AgentDef`].
//!
//! One TOML file per agent: id, description, model, fallbacks, a system prompt file,
//! allowed and denied tools, and a subagent policy (which agents it may spawn, the
//! default child model, max depth, max children, run timeout). The shipped `brain` and
//! `executor` are also compiled in, so the demo runs from any directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{ModelRef, ToolSpec};
use crate::scope::{required_scope, Requirement, ScopeSet};
use crate::session::tools::{self, Tool};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read agent file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid agent file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("no agent definitions found in {0}")]
    Empty(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    #[serde(default)]
    description: String,
    model: String,
    #[serde(default)]
    fallbacks: Vec<String>,
    /// The most a session of this agent (with its subtree) may cost, in USD.
    budget_usd: Option<f64>,
    #[serde(default)]
    prompt_file: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    tools: RawTools,
    #[serde(default)]
    subagents: RawSubagents,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubagents {
    #[serde(default)]
    allow_agents: Vec<String>,
    default_agent: Option<String>,
    model: Option<String>,
    max_depth: Option<u32>,
    max_children: Option<usize>,
    run_timeout_seconds: Option<f64>,
}

/// A validated agent definition.
#[derive(Clone, Debug)]
pub struct AgentDef {
    pub id: String,
    pub description: String,
    pub model: ModelRef,
    pub fallbacks: Vec<ModelRef>,
    /// A cost budget in USD for each session of this agent and its subtree.
    pub budget_usd: Option<f64>,
    pub system_prompt: String,
    pub tools: Vec<Tool>,
    /// The tool specs offered to the model, built once.
    pub tool_specs: Arc<[ToolSpec]>,
    /// The scopes this agent's tools need; a session of it gets no more.
    pub scopes: ScopeSet,
    pub subagents: SubagentPolicy,
}

#[derive(Clone, Debug, Default)]
pub struct SubagentPolicy {
    pub allow_agents: Vec<String>,
    pub default_agent: Option<String>,
    pub model: Option<ModelRef>,
    pub max_depth: Option<u32>,
    pub max_children: Option<usize>,
    pub run_timeout: Option<Duration>,
}

impl AgentDef {
    pub fn has_tool(&self, tool: Tool) -> bool {
        self.tools.contains(&tool)
    }
}

/// The agents of a gateway, by id.
#[derive(Debug, Default)]
pub struct Agents(BTreeMap<String, Arc<AgentDef>>);

const SHIPPED: [(&str, &str, &str, &str); 2] = [
    ("brain.toml", include_str!("../agents/brain.toml"), "brain.md", include_str!("../agents/brain.md")),
    ("executor.toml", include_str!("../agents/executor.toml"), "executor.md", include_str!("../agents/executor.md")),
];

impl Agents {
    /// Every `*.toml` in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Agents, AgentError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|source| AgentError::Read { path: path.display().to_string(), source })
        };
        let entries =
            std::fs::read_dir(dir).map_err(|source| AgentError::Read { path: dir.display().to_string(), source })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut agents = Agents::default();
        for path in paths {
            let text = read(&path)?;
            let prompt = |file: &str| read(&dir.join(file));
            agents.insert(parse(&path.display().to_string(), &text, prompt)?);
        }
        if agents.0.is_empty() {
            return Err(AgentError::Empty(dir.display().to_string()));
        }
        Ok(agents)
    }

    /// The agents shipped with hivegate (`brain`, `executor`), compiled in.
    pub fn shipped() -> Result<Agents, AgentError> {
        let mut agents = Agents::default();
        for (name, text, prompt_name, prompt_text) in SHIPPED {
            let prompt = |file: &str| {
                if file == prompt_name {
                    Ok(prompt_text.to_string())
                } else {
                    Err(AgentError::Invalid { path: name.into(), message: format!("unknown prompt file {file}") })
                }
            };
            agents.insert(parse(name, text, prompt)?);
        }
        Ok(agents)
    }

    pub fn insert(&mut self, agent: AgentDef) {
        self.0.insert(agent.id.clone(), Arc::new(agent));
    }

    pub fn get(&self, id: &str) -> Option<&Arc<AgentDef>> {
        self.0.get(id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<AgentDef>> {
        self.0.values()
    }

    /// Agent `root` and every agent it may spawn, directly or through its children.
    pub fn reachable(&self, root: &str) -> Vec<&Arc<AgentDef>> {
        let mut seen: Vec<&Arc<AgentDef>> = Vec::new();
        let mut next = vec![root];
        while let Some(id) = next.pop() {
            if let Some(agent) = self.get(id).filter(|a| !seen.iter().any(|s| s.id == a.id)) {
                next.extend(agent.subagents.allow_agents.iter().map(String::as_str));
                seen.push(agent);
            }
        }
        seen
    }

    /// Every model `root`'s tree may call (default models, fallbacks, policy models).
    pub fn models_of_tree(&self, root: &str) -> Vec<(&str, &ModelRef)> {
        let mut models = Vec::new();
        for agent in self.reachable(root) {
            models.push((agent.id.as_str(), &agent.model));
            models.extend(agent.fallbacks.iter().map(|m| (agent.id.as_str(), m)));
            models.extend(agent.subagents.model.iter().map(|m| (agent.id.as_str(), m)));
        }
        models
    }

    /// Let agent `id` have at least `max_children` children and `max_depth` levels below
    /// it (limits only ever go up here). Returns what changed, for the caller to say.
    pub fn raise_subagent_limits(&mut self, id: &str, max_children: usize, max_depth: u32) -> Vec<String> {
        let Some(agent) = self.0.get_mut(id) else { return Vec::new() };
        let mut changed = Vec::new();
        let policy = &agent.subagents;
        let children = policy.max_children.filter(|m| *m < max_children);
        let depth = policy.max_depth.filter(|d| *d < max_depth);
        if children.is_none() && depth.is_none() {
            return changed;
        }
        let raised = Arc::make_mut(agent);
        if let Some(old) = children {
            raised.subagents.max_children = Some(max_children);
            changed.push(format!("agent {id} subagents.max_children {old} → {max_children}"));
        }
        if let Some(old) = depth {
            raised.subagents.max_depth = Some(max_depth);
            changed.push(format!("agent {id} subagents.max_depth {old} → {max_depth}"));
        }
        changed
    }
}

/// Parse and validate one agent file; `prompt` reads a prompt file by name.
pub fn parse(
    path: &str,
    text: &str,
    prompt: impl Fn(&str) -> Result<String, AgentError>,
) -> Result<AgentDef, AgentError> {
    let invalid = |message: String| AgentError::Invalid { path: path.to_string(), message };
    let raw: RawAgent = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let model_ref = |s: &str| ModelRef::parse(s).map_err(|e| invalid(e.to_string()));
    let system_prompt = match (&raw.prompt, &raw.prompt_file) {
        (Some(text), None) => text.clone(),
        (None, Some(file)) => prompt(file)?,
        (None, None) => String::new(),
        (Some(_), Some(_)) => return Err(invalid("set prompt or prompt_file, not both".into())),
    };
    let mut tools = Vec::new();
    for name in &raw.tools.allow {
        let tool = Tool::parse(name)
            .ok_or_else(|| invalid(format!("unknown tool '{name}' in tools.allow; known: {}", tools::names())))?;
        if !raw.tools.deny.iter().any(|d| d == name) && !tools.contains(&tool) {
            tools.push(tool);
        }
    }
    if let Some(bad) = raw.tools.deny.iter().find(|d| Tool::parse(d).is_none()) {
        return Err(invalid(format!("unknown tool '{bad}' in tools.deny; known: {}", tools::names())));
    }
    let scopes = tools
        .iter()
        .filter_map(|t| match required_scope(t.name()) {
            Requirement::Scope(scope) => Some(scope),
            _ => None,
        })
        .collect();
    let run_timeout = raw
        .subagents
        .run_timeout_seconds
        .map(crate::config::timeout_from_secs)
        .transpose()
        .map_err(|e| invalid(format!("subagents.run_timeout_seconds {e}")))?;
    Ok(AgentDef {
        tool_specs: tools.iter().map(|t| t.spec()).collect(),
        id: raw.id,
        description: raw.description,
        model: model_ref(&raw.model)?,
        fallbacks: raw.fallbacks.iter().map(|f| model_ref(f)).collect::<Result<_, _>>()?,
        budget_usd: match raw.budget_usd {
            Some(usd) if !(usd.is_finite() && usd > 0.0) => {
                return Err(invalid(format!("budget_usd must be a positive number of USD, got {usd}")))
            }
            other => other,
        },
        system_prompt,
        tools,
        scopes,
        subagents: SubagentPolicy {
            allow_agents: raw.subagents.allow_agents,
            default_agent: raw.subagents.default_agent,
            model: raw.subagents.model.as_deref().map(model_ref).transpose()?,
            max_depth: raw.subagents.max_depth,
            max_children: raw.subagents.max_children,
            run_timeout,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn shipped_agents_load_and_the_brain_may_spawn_executors() {
        let agents = Agents::shipped().unwrap();
        let brain = agents.get("brain").unwrap();
        assert_eq!(brain.model.as_str(), "builtin/brain");
        assert!(brain.has_tool(Tool::SessionsSpawn));
        assert!(brain.scopes.contains(Scope::AgentSpawn));
        assert_eq!(brain.subagents.allow_agents, vec!["executor".to_string()]);
        assert_eq!(agents.get("executor").unwrap().model.as_str(), "builtin/executor");
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        let no_prompt = |_: &str| Ok(String::new());
        let err = parse("x.toml", "id = \"x\"\nmodel = \"nomodel\"", no_prompt).unwrap_err();
        assert!(err.to_string().contains("bad model ref 'nomodel'"), "{err}");
        let err = parse("x.toml", "id = \"x\"\nmodel = \"a/b\"\n[tools]\nallow = [\"rm_rf\"]", no_prompt).unwrap_err();
        assert!(err.to_string().contains("unknown tool 'rm_rf'"), "{err}");
        let err = parse("x.toml", "id = \"x\"\nmodel = \"a/b\"\ncolour = 1", no_prompt).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
