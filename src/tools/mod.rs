//! Work tools: what an executor uses to act on its workspace.
//!
//! [`workspace`] confines every path to a session's workspace root (a pure lexical check,
//! then the file system's own answer for symlinks); [`fs`] holds `read`, `write`,
//! `edit`, `ls`, `glob` and `grep`; [`exec`] runs a shell command in the workspace with a
//! timeout, an output cap, a clean environment and its own process group. [`WorkTool`]
//! is their registry: name, schema, scope (in [`crate::scope::required_scope`], the one
//! table) and runner.
//!
//! Nothing here knows sessions or actors: the session's tool dispatch
//! (`session::tools`) checks the agent's definition and the capability's scopes, takes
//! the workspace from the capability, and calls [`run`]. The file tools block on the
//! disk, so they run on tokio's blocking pool, never on a session's thread; `exec` is a
//! child process awaited in the session's own tool future, so killing the session drops
//! the future and the process group with it.

pub mod exec;
pub mod fs;
pub mod mcp;
pub mod workspace;

/// Make this process unreadable to the processes its tools start. `exec`'s shells and
/// stdio MCP servers run as hivegate's own user, and a process may read the
/// `/proc/<pid>/environ` and memory of another of its user: there sit the provider keys
/// and the gateway token, whatever `exec` clears from its children's environment (an
/// exec of `cat /proc/$PPID/environ` printed them all). Linux's `PR_SET_DUMPABLE` 0 gives
/// those files to root and refuses ptrace; a child is dumpable again once it execs, so
/// the tools' own processes are unchanged. Called first thing in `main`. Whether it took;
/// elsewhere than Linux, nothing is done. (A process running as root reads them anyway.)
pub fn hide_from_children() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain syscall with integer arguments; it touches no memory of ours.
        unsafe {
            libc::prctl(
                libc::PR_SET_DUMPABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::model::ToolSpec;
use exec::ExecLimits;
use workspace::Workspace;

/// Why a work tool refused or failed; the message is what the model reads.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ToolError {
    /// The path leaves the workspace (by `..`, an absolute path or a symlink).
    #[error("path '{path}' is outside the workspace")]
    OutsideWorkspace { path: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// The work tools, by the names OpenClaw gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkTool {
    Read,
    Write,
    Edit,
    Ls,
    Glob,
    Grep,
    Exec,
}

impl WorkTool {
    pub const ALL: [WorkTool; 7] =
        [WorkTool::Read, WorkTool::Write, WorkTool::Edit, WorkTool::Ls, WorkTool::Glob, WorkTool::Grep, WorkTool::Exec];

    pub fn name(self) -> &'static str {
        match self {
            WorkTool::Read => "read",
            WorkTool::Write => "write",
            WorkTool::Edit => "edit",
            WorkTool::Ls => "ls",
            WorkTool::Glob => "glob",
            WorkTool::Grep => "grep",
            WorkTool::Exec => "exec",
        }
    }

    pub fn parse(name: &str) -> Option<WorkTool> {
        WorkTool::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Only reads: a call cut off by a restart is run again rather than answered as
    /// interrupted.
    pub fn idempotent(self) -> bool {
        matches!(self, WorkTool::Read | WorkTool::Ls | WorkTool::Glob | WorkTool::Grep)
    }

    pub fn spec(self) -> ToolSpec {
        let path = |what: &str| json!({"type": "string", "description": format!("{what}, relative to the workspace (or absolute inside it)")});
        let (description, parameters) = match self {
            WorkTool::Read => (
                "Read a text file of your workspace, with line numbers. Long files come in pages: offset (first line, 1-based) and limit (lines).",
                json!({"type": "object", "additionalProperties": false, "required": ["path"], "properties": {
                    "path": path("the file"),
                    "offset": {"type": "integer", "minimum": 1},
                    "limit": {"type": "integer", "minimum": 1, "maximum": fs::READ_MAX_LINES}}}),
            ),
            WorkTool::Write => (
                "Create or replace a file of your workspace with content (missing parent directories are created).",
                json!({"type": "object", "additionalProperties": false, "required": ["path", "content"], "properties": {
                    "path": path("the file"), "content": {"type": "string"}}}),
            ),
            WorkTool::Edit => (
                "Replace exact text in a file of your workspace. oldText must occur exactly once, unless replaceAll is true.",
                json!({"type": "object", "additionalProperties": false, "required": ["path", "oldText", "newText"], "properties": {
                    "path": path("the file"), "oldText": {"type": "string", "minLength": 1},
                    "newText": {"type": "string"}, "replaceAll": {"type": "boolean", "default": false}}}),
            ),
            WorkTool::Ls => (
                "List a directory of your workspace (directories end with /).",
                json!({"type": "object", "additionalProperties": false, "properties": {
                    "path": path("the directory (default: the workspace)"),
                    "limit": {"type": "integer", "minimum": 1, "maximum": fs::LIST_MAX_ENTRIES}}}),
            ),
            WorkTool::Glob => (
                "Find files of your workspace by glob pattern, for example src/**/*.rs.",
                json!({"type": "object", "additionalProperties": false, "required": ["pattern"], "properties": {
                    "pattern": {"type": "string"}, "path": path("where to search (default: the workspace)"),
                    "limit": {"type": "integer", "minimum": 1, "maximum": fs::LIST_MAX_ENTRIES}}}),
            ),
            WorkTool::Grep => (
                "Search the files of your workspace for a regular expression; matches come as path:line: text.",
                json!({"type": "object", "additionalProperties": false, "required": ["pattern"], "properties": {
                    "pattern": {"type": "string"}, "path": path("a file or directory (default: the workspace)"),
                    "glob": {"type": "string", "description": "only files matching this glob, for example *.rs"},
                    "ignoreCase": {"type": "boolean"}, "literal": {"type": "boolean", "description": "pattern is plain text"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": fs::GREP_MAX_MATCHES}}}),
            ),
            WorkTool::Exec => (
                "Run a shell command (sh -c) in your workspace and get its exit code and output. It is killed at its timeout.",
                exec::parameters(&ExecLimits::default()),
            ),
        };
        ToolSpec { name: self.name().into(), description: description.into(), parameters }
    }
}

/// Run one call of `tool` with its raw JSON arguments in `workspace`.
pub async fn run(tool: WorkTool, workspace: &Workspace, raw: &str, limits: &ExecLimits) -> Result<Value, ToolError> {
    match tool {
        WorkTool::Read => file_tool(tool, workspace, raw, fs::read).await,
        WorkTool::Write => file_tool(tool, workspace, raw, fs::write).await,
        WorkTool::Edit => file_tool(tool, workspace, raw, fs::edit).await,
        WorkTool::Ls => file_tool(tool, workspace, raw, fs::ls).await,
        WorkTool::Glob => file_tool(tool, workspace, raw, fs::glob).await,
        WorkTool::Grep => file_tool(tool, workspace, raw, fs::grep).await,
        WorkTool::Exec => {
            let a: exec::ExecArgs = args(tool, raw)?;
            let cwd = match a.workdir.as_deref() {
                Some(dir) => workspace.narrow(dir)?.root().to_path_buf(),
                None => workspace.root().to_path_buf(),
            };
            exec::run(&cwd, &a, limits).await
        }
    }
}

fn args<T: DeserializeOwned>(tool: WorkTool, raw: &str) -> Result<T, ToolError> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| ToolError::Invalid(format!("invalid arguments for {}: {e}", tool.name())))
}

/// A file tool on the blocking pool, its arguments parsed first: the disk never stalls
/// a session's thread.
async fn file_tool<A: DeserializeOwned + Send + 'static>(
    tool: WorkTool,
    workspace: &Workspace,
    raw: &str,
    run: fn(&Workspace, A) -> Result<Value, ToolError>,
) -> Result<Value, ToolError> {
    let (a, ws) = (args(tool, raw)?, workspace.clone());
    tokio::task::spawn_blocking(move || run(&ws, a))
        .await
        .map_err(|e| ToolError::Invalid(format!("the tool stopped unexpectedly: {e}")))?
}
