//! Agent definitions: data files in `agents/`, validated once into [`AgentDef`].
//!
//! One TOML file per agent: id, description, model, fallbacks, a system prompt file,
//! allowed and denied tools, and a subagent policy (which agents it may spawn, the
//! default child model, max depth, max children, run timeout). The shipped `brain` and
//! `executor` are also compiled in, so the demo runs from any directory.
//!
//! A file in `agents/` overrides the shipped agent of the same id field by field: a file
//! with just `model = "..."` named `executor.toml` is the shipped executor on that model.
//! Its id is its `id` field, else its file stem. Tables (`[tools]`, `[subagents]`) merge
//! key by key; any other value replaces the shipped one (`prompt` replaces a shipped
//! `prompt_file` and the other way round). An agent that is not shipped needs its own
//! `model`; its tools and subagent policy default to none.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{ModelRef, ToolSpec};
use crate::scope::{required_scope, Requirement, ScopeSet};
use crate::session::tools::{self, Tool};
use crate::tools::mcp::Allowed;

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
    #[serde(default)]
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
    /// Where its sessions run: `local` (default) or `worker`.
    #[serde(default)]
    placement: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    /// Tools this agent does not call itself but whose authority its subagents may
    /// get from it (a brain that lets its executors run `exec`): their scopes are in
    /// this agent's capability, their tools are not offered to its model.
    #[serde(default)]
    delegate: Vec<String>,
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
    pub id: Arc<str>,
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
    /// The MCP servers' tools it may call (`mcp:NAME`, `NAME__tool` in `[tools] allow`).
    pub mcp: crate::tools::mcp::Allowed,
    pub subagents: SubagentPolicy,
    /// Where its sessions run when spawned: in this process, or on a worker process
    /// that claims them from the shared database ([`crate::worker`]).
    pub placement: Placement,
}

/// Where an agent's spawned sessions run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// In the gateway's process (the default).
    #[default]
    Local,
    /// On a `hivegate worker` process, claimed from the Postgres work queue.
    Worker,
}

impl Placement {
    pub fn parse(s: &str) -> Option<Placement> {
        match s {
            "local" => Some(Placement::Local),
            "worker" => Some(Placement::Worker),
            _ => None,
        }
    }
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
    /// The shipped agents, each overridden by a file of `dir` with its id, and every other
    /// agent file of `dir` (see the module docs).
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
        if paths.is_empty() {
            return Err(AgentError::Empty(dir.display().to_string()));
        }
        let mut agents = Agents::shipped()?;
        for path in paths {
            let name = path.display().to_string();
            let invalid = |message: String| AgentError::Invalid { path: name.clone(), message };
            let mut table: toml::Table = toml::from_str(&read(&path)?).map_err(|e| invalid(e.to_string()))?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let id = match table.get("id") {
                Some(toml::Value::String(id)) => id.clone(),
                Some(_) => return Err(invalid("id must be a string".into())),
                None => stem,
            };
            table.insert("id".into(), toml::Value::String(id.clone()));
            let merged = match shipped_table(&id) {
                Some(base) => overlay(base, table),
                None => table,
            };
            // Prompt files are looked up beside the agent file, then among the shipped ones.
            let prompt = |file: &str| {
                let beside = dir.join(file);
                match SHIPPED.iter().find(|(_, _, prompt_name, _)| *prompt_name == file) {
                    Some((_, _, _, text)) if !beside.is_file() => Ok(text.to_string()),
                    _ => read(&beside),
                }
            };
            let text = toml::to_string(&merged).map_err(|e| invalid(e.to_string()))?;
            agents.insert(parse(&name, &text, prompt)?);
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
        self.0.insert(agent.id.to_string(), Arc::new(agent));
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
            models.push((&*agent.id, &agent.model));
            models.extend(agent.fallbacks.iter().map(|m| (&*agent.id, m)));
            models.extend(agent.subagents.model.iter().map(|m| (&*agent.id, m)));
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

/// The shipped definition of agent `id`, as a TOML table.
fn shipped_table(id: &str) -> Option<toml::Table> {
    SHIPPED.iter().find_map(|(_, text, _, _)| {
        let table: toml::Table = toml::from_str(text).ok()?;
        (table.get("id").and_then(toml::Value::as_str) == Some(id)).then_some(table)
    })
}

/// `top` over `base`: tables merge key by key, anything else replaces.
fn overlay(mut base: toml::Table, top: toml::Table) -> toml::Table {
    // A prompt given one way replaces the shipped prompt given the other way.
    if top.contains_key("prompt") {
        base.remove("prompt_file");
    }
    if top.contains_key("prompt_file") {
        base.remove("prompt");
    }
    for (key, value) in top {
        match (base.remove(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => {
                base.insert(key, toml::Value::Table(overlay(below, above)));
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    base
}

/// Parse and validate one agent file; `prompt` reads a prompt file by name.
pub fn parse(
    path: &str,
    text: &str,
    prompt: impl Fn(&str) -> Result<String, AgentError>,
) -> Result<AgentDef, AgentError> {
    let invalid = |message: String| AgentError::Invalid { path: path.to_string(), message };
    let raw: RawAgent = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if raw.id.trim().is_empty() {
        return Err(invalid("id must be a non-empty string".into()));
    }
    let model_ref = |s: &str| ModelRef::parse(s).map_err(|e| invalid(e.to_string()));
    let system_prompt = match (&raw.prompt, &raw.prompt_file) {
        (Some(text), None) => text.clone(),
        (None, Some(file)) => prompt(file)?,
        (None, None) => String::new(),
        (Some(_), Some(_)) => return Err(invalid("set prompt or prompt_file, not both".into())),
    };
    let mut tools = Vec::new();
    let mut mcp = Allowed::default();
    for name in &raw.tools.allow {
        if let Some(entry) = Allowed::entry(name) {
            mcp.push(entry);
            continue;
        }
        let tool = Tool::parse(name)
            .ok_or_else(|| invalid(format!("unknown tool '{name}' in tools.allow; known: {}", tools::names())))?;
        if !raw.tools.deny.iter().any(|d| d == name) && !tools.contains(&tool) {
            tools.push(tool);
        }
    }
    if let Some(bad) = raw.tools.deny.iter().find(|d| Tool::parse(d).is_none() && Allowed::entry(d).is_none()) {
        return Err(invalid(format!("unknown tool '{bad}' in tools.deny; known: {}", tools::names())));
    }
    let mut delegated = Vec::new();
    for name in &raw.tools.deny {
        if let Some(entry) = Allowed::entry(name) {
            mcp.deny(entry);
        }
    }
    for name in &raw.tools.delegate {
        if let Some((server, _)) = Allowed::entry(name) {
            mcp.delegate(server);
            continue;
        }
        let tool = Tool::parse(name)
            .ok_or_else(|| invalid(format!("unknown tool '{name}' in tools.delegate; known: {}", tools::names())))?;
        delegated.push(tool);
    }
    let scopes = tools
        .iter()
        .chain(&delegated)
        .filter_map(|t| match required_scope(t.name()) {
            Requirement::Scope(scope) => Some(scope),
            _ => None,
        })
        .chain((!mcp.is_empty()).then_some(crate::scope::Scope::McpCall))
        .collect();
    let run_timeout = raw
        .subagents
        .run_timeout_seconds
        .map(crate::config::timeout_from_secs)
        .transpose()
        .map_err(|e| invalid(format!("subagents.run_timeout_seconds {e}")))?;
    Ok(AgentDef {
        tool_specs: tools.iter().map(|t| t.spec()).collect(),
        mcp,
        id: raw.id.into(),
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
        placement: match raw.placement.as_deref() {
            None => Placement::Local,
            Some(p) => Placement::parse(p)
                .ok_or_else(|| invalid(format!("placement must be \"local\" or \"worker\", got {p:?}")))?,
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

#[cfg(test)]
mod overlay_tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn a_file_with_just_a_model_overrides_the_shipped_agent_field_by_field() {
        let dir = dir_with(&[
            ("executor.toml", "model = \"cherry-nvidia/qwen/qwen3-235b-a22b\"\n"),
            ("researcher.toml", "model = \"cheap/r1\"\n[tools]\nallow = [\"sessions_list\"]\n"),
            ("brain.toml", "prompt = \"plan briefly\"\n[subagents]\nmax_children = 3\n"),
        ]);
        let agents = Agents::load_dir(dir.path()).unwrap();
        let shipped = Agents::shipped().unwrap();
        let executor = agents.get("executor").unwrap();
        let original = shipped.get("executor").unwrap();
        assert_eq!(executor.model.as_str(), "cherry-nvidia/qwen/qwen3-235b-a22b");
        assert_eq!((&executor.tools, &executor.system_prompt), (&original.tools, &original.system_prompt));
        let brain = agents.get("brain").unwrap();
        assert_eq!((brain.system_prompt.as_str(), brain.subagents.max_children), ("plan briefly", Some(3)));
        assert_eq!(brain.subagents.allow_agents, shipped.get("brain").unwrap().subagents.allow_agents);
        assert_eq!(brain.model, shipped.get("brain").unwrap().model);
        let researcher = agents.get("researcher").unwrap();
        assert_eq!((researcher.tools.clone(), researcher.subagents.allow_agents.len()), (vec![Tool::SessionsList], 0));
    }

    #[test]
    fn an_agent_that_is_not_shipped_needs_its_own_model() {
        let dir = dir_with(&[("reviewer.toml", "description = \"reviews\"\n")]);
        let err = Agents::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("reviewer.toml") && err.contains("missing field `model`"), "{err}");
        let dir = dir_with(&[("x.toml", "id = 3\nmodel = \"a/b\"\n")]);
        assert!(Agents::load_dir(dir.path()).unwrap_err().to_string().contains("id must be a string"));
    }
}
