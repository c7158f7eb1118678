//! `exec`: run one shell command in the session's workspace and return its output.
//!
//! The arguments use OpenClaw's names (`command`, `workdir`, `timeout` in seconds); the
//! OpenClaw parameters this runtime does not offer (`background`, `yieldMs`, `pty`,
//! `env`, `elevated`, `host`, ...) are refused by name rather than ignored, so the
//! model learns what exec can do here. The command runs as `/bin/sh -c` with stdin on
//! `/dev/null`, in the directory the caller resolved and confined (the workspace check
//! is not done here), with an environment cleared down to [`ALLOWED_ENV`] (and
//! hivegate's own unreadable to it: [`super::hide_from_children`]) so no hivegate
//! secret reaches it, and in a process group of its own. That group is the unit of
//! cleanup: when the command ends, times out, or the future is dropped (the session was
//! killed), [`ProcessGroup`] sends SIGKILL to the whole group, so background jobs and
//! grandchildren die with it (one that leaves the group, by `setsid`, escapes it); exec
//! runs in the foreground only. stdout and stderr are
//! read concurrently until EOF, each kept up to a byte cap and counted beyond it, so a
//! chatty command never blocks on a full pipe. A non-zero exit, a signal or a timeout
//! is a normal result with `"status": "error"` (as OpenClaw's `failed`) and an `error`
//! line saying what happened; `ToolError` is kept for calls that could not run at all.
//! This is not a sandbox: the command has the runtime's user rights.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::ToolError;

/// The environment variables a command inherits from the runtime; everything else
/// (gateway tokens, provider API keys) is removed.
pub const ALLOWED_ENV: [&str; 11] =
    ["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR"];

/// The longest command accepted, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

const SHELL: &str = "/bin/sh";
const SUPPORTED: &str = "command, workdir (relative to the workspace), timeout (seconds)";
/// OpenClaw's exec parameters (docs/tools/exec.md) that this runtime does not offer.
const OPENCLAW_ONLY: [&str; 22] = [
    "env",
    "yieldMs",
    "background",
    "pty",
    "host",
    "security",
    "ask",
    "node",
    "elevated",
    "sshTarget",
    "sshIdentity",
    "sshShell",
    "containerContext",
    "containerSshTarget",
    "containerSshIdentity",
    "containerName",
    "containerShell",
    "k8sContext",
    "k8sNamespace",
    "k8sPod",
    "k8sContainer",
    "k8sShell",
];
/// How long to wait for a killed shell to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(5);
/// How long to keep reading after the group is killed; only a process that left the
/// group (`setsid`) can hold the pipes open longer.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The arguments of an `exec` call.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawExecArgs")]
pub struct ExecArgs {
    pub command: String,
    /// Relative to the workspace; the caller resolves and confines it into `cwd`.
    pub workdir: Option<String>,
    /// Seconds, as in OpenClaw; fractions allowed.
    pub timeout: Option<f64>,
}

/// What the model sent: the supported fields plus everything else, so refusals can
/// name OpenClaw's parameters (`deny_unknown_fields` would list them as expected).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExecArgs {
    command: String,
    workdir: Option<String>,
    timeout: Option<f64>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

impl TryFrom<RawExecArgs> for ExecArgs {
    type Error = String;

    fn try_from(raw: RawExecArgs) -> Result<Self, String> {
        // `null` asks for nothing, as an absent field.
        let refused: Vec<String> = raw
            .rest
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, _)| match key.as_str() {
                "cwd" => "`cwd` (use `workdir`)".to_string(),
                "timeoutSec" => "`timeoutSec` (use `timeout`)".to_string(),
                key if OPENCLAW_ONLY.contains(&key) => format!("`{key}`"),
                key => format!("`{key}` (unknown)"),
            })
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "exec does not support {}: it runs one command in the foreground, in the session's workspace, \
                 without a terminal, extra environment or another host; supported parameters: {SUPPORTED}",
                refused.join(", ")
            ));
        }
        Ok(ExecArgs { command: raw.command, workdir: raw.workdir, timeout: raw.timeout })
    }
}

/// The operator's bounds on one call.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecLimits {
    /// Used when the call gives no `timeout`.
    pub default_timeout: Duration,
    /// A larger requested `timeout` is lowered to this, and the result says so.
    pub max_timeout: Duration,
    /// Kept of stdout and of stderr each; the rest is read, counted and dropped.
    pub max_output_bytes: usize,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(600),
            max_output_bytes: 64 * 1024,
        }
    }
}

/// The JSON schema offered to the model.
pub fn parameters(limits: &ExecLimits) -> Value {
    let timeout = format!(
        "seconds before the command and everything it started are killed (default {}, at most {})",
        limits.default_timeout.as_secs_f64(),
        limits.max_timeout.as_secs_f64()
    );
    json!({"type": "object", "additionalProperties": false, "required": ["command"], "properties": {
        "command": {"type": "string", "description": "shell command, run with /bin/sh -c"},
        "workdir": {"type": "string", "description": "directory relative to the workspace (default: its root)"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": timeout}}})
}

/// Run `args.command` in `cwd`, which the caller has already resolved from
/// `args.workdir` and confined to the workspace.
pub async fn run(cwd: &Path, args: &ExecArgs, limits: &ExecLimits) -> Result<Value, ToolError> {
    run_with_env(cwd, args, limits, std::env::vars_os()).await
}

/// [`run`] with the parent environment given, so tests need not change the process's.
async fn run_with_env(
    cwd: &Path,
    args: &ExecArgs,
    limits: &ExecLimits,
    parent_env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Value, ToolError> {
    check_command(&args.command)?;
    let (timeout, capped) = resolve_timeout(args.timeout, limits)?;
    let workdir = args.workdir.as_deref().unwrap_or(".");
    if !tokio::fs::metadata(cwd).await.is_ok_and(|meta| meta.is_dir()) {
        return Err(ToolError::Io {
            path: workdir.to_string(),
            message: "not a directory; give an existing directory as workdir".to_string(),
        });
    }
    let started = Instant::now();
    let mut child = shell(cwd, &args.command, allowed_env(parent_env))
        .spawn()
        .map_err(|e| ToolError::Io { path: SHELL.to_string(), message: format!("could not start the shell: {e}") })?;
    let mut group = ProcessGroup::of(&child)?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (Captured::default(), Captured::default());
    let cap = limits.max_output_bytes;
    let (waited, complete) = {
        let mut reading = pin!(async {
            tokio::join!(capture(stdout, cap, &mut out), capture(stderr, cap, &mut err));
        });
        let mut read = false;
        let waited = {
            let mut wait = pin!(tokio::time::timeout(timeout, child.wait()));
            loop {
                tokio::select! {
                    waited = &mut wait => break waited,
                    () = &mut reading, if !read => read = true,
                }
            }
        };
        // The shell is gone or out of time: take its background jobs with it.
        group.kill();
        if !read {
            read = tokio::time::timeout(DRAIN_GRACE, &mut reading).await.is_ok();
        }
        (waited, read)
    };
    let (status, timed_out) = match waited {
        Ok(Ok(status)) => (Some(status), false),
        Ok(Err(e)) => {
            return Err(ToolError::Io {
                path: SHELL.to_string(),
                message: format!("could not wait for the command: {e}"),
            })
        }
        Err(_) => (tokio::time::timeout(REAP_GRACE, child.wait()).await.ok().and_then(Result::ok), true),
    };
    group.release();
    let ended = Ended { status, timed_out, complete, timeout, capped, duration: started.elapsed() };
    Ok(report(&ended, &out, &err))
}

fn check_command(command: &str) -> Result<(), ToolError> {
    if command.trim().is_empty() {
        return Err(ToolError::Invalid("command is empty; give the shell command to run".to_string()));
    }
    if command.len() > MAX_COMMAND_BYTES {
        return Err(ToolError::Invalid(format!(
            "command is {} bytes, over the {MAX_COMMAND_BYTES}-byte limit; write a script file and run it",
            command.len()
        )));
    }
    if command.contains('\0') {
        return Err(ToolError::Invalid("command contains a NUL byte; remove it".to_string()));
    }
    Ok(())
}

/// The timeout to apply and whether the requested one was lowered to the maximum.
fn resolve_timeout(requested: Option<f64>, limits: &ExecLimits) -> Result<(Duration, bool), ToolError> {
    let max = limits.max_timeout;
    let Some(seconds) = requested else {
        return Ok((limits.default_timeout.min(max), false));
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(ToolError::Invalid(format!(
            "timeout {seconds} is not a positive number of seconds; give one up to {}",
            max.as_secs_f64()
        )));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(timeout) if timeout <= max => Ok((timeout, false)),
        _ => Ok((max, true)),
    }
}

/// The allow-listed part of the parent's environment.
fn allowed_env(parent: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    parent.into_iter().filter(|(name, _)| name.to_str().is_some_and(|name| ALLOWED_ENV.contains(&name))).collect()
}

fn shell(cwd: &Path, command: &str, env: Vec<(OsString, OsString)>) -> Command {
    let mut shell = Command::new(SHELL);
    shell
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    shell
}

/// The process group a spawned shell leads; SIGKILLed on [`ProcessGroup::kill`] and on
/// drop until released. Only a group this module created is ever signalled: its id is
/// the shell's pid (`process_group(0)`), never 0, 1 or negative.
struct ProcessGroup {
    id: Option<libc::pid_t>,
}

impl ProcessGroup {
    fn of(child: &Child) -> Result<Self, ToolError> {
        let id = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()).filter(|pid| *pid > 1);
        match id {
            Some(id) => Ok(ProcessGroup { id: Some(id) }),
            // Dropping the child kills the shell (`kill_on_drop`).
            None => Err(ToolError::Io {
                path: SHELL.to_string(),
                message: "the shell has no process id to track; run the command again".to_string(),
            }),
        }
    }

    fn kill(&self) {
        if let Some(id) = self.id {
            // SAFETY: killpg only sends a signal; `id` is a group this module created (> 1).
            // Called after the leader is reaped, the id stays reserved while any member
            // lives; an empty group's id is reused only after the pid space wraps.
            unsafe {
                libc::killpg(id, libc::SIGKILL);
            }
        }
    }

    /// The group was killed and the call is over: nothing is left to clean up.
    fn release(&mut self) {
        self.id = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One stream's output: its first bytes and how many there were in all.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    total: u64,
}

impl Captured {
    fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }

    /// Lossy UTF-8, without a character the cap cut in half.
    fn text(&self) -> String {
        let mut end = self.bytes.len();
        if self.truncated() {
            let tail = self.bytes.len().saturating_sub(3);
            if let Some(lead) = (tail..end).rev().find(|&i| self.bytes[i] & 0xC0 != 0x80) {
                let width = match self.bytes[lead] {
                    b if b >= 0xF0 => 4,
                    b if b >= 0xE0 => 3,
                    b if b >= 0xC0 => 2,
                    _ => 1,
                };
                if lead + width > end {
                    end = lead;
                }
            }
        }
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }
}

/// Read `pipe` to EOF, keeping up to `cap` bytes.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, cap: usize, into: &mut Captured) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        into.total += n as u64;
        let room = cap.saturating_sub(into.bytes.len()).min(n);
        into.bytes.extend_from_slice(&chunk[..room]);
    }
}

/// How a run ended.
struct Ended {
    status: Option<ExitStatus>,
    timed_out: bool,
    /// Both pipes were read to EOF.
    complete: bool,
    timeout: Duration,
    capped: bool,
    duration: Duration,
}

fn report(ended: &Ended, out: &Captured, err: &Captured) -> Value {
    let code = ended.status.and_then(|status| status.code());
    let signal = ended.status.and_then(|status| status.signal());
    let error = match (ended.timed_out, code, signal) {
        (true, ..) => Some(format!(
            "command timed out after {} s and was killed with everything it started{}",
            ended.timeout.as_secs_f64(),
            if ended.capped { " (the requested timeout was lowered to the maximum)" } else { "" }
        )),
        (false, Some(0), _) => None,
        (false, Some(code), _) => Some(format!("command exited with code {code}")),
        (false, None, Some(signal)) => Some(format!("command was killed by signal {signal}")),
        (false, None, None) => Some("command ended without an exit status".to_string()),
    };
    let mut result = json!({
        "status": if error.is_some() { "error" } else { "ok" },
        "exitCode": code,
        "signal": signal,
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated": out.truncated() || err.truncated() || !ended.complete,
        "stdoutBytes": out.total,
        "stderrBytes": err.total,
        "timedOut": ended.timed_out,
        "timeoutSeconds": ended.timeout.as_secs_f64(),
        "timeoutCapped": ended.capped,
        "durationMs": u64::try_from(ended.duration.as_millis()).unwrap_or(u64::MAX),
    });
    if let (Some(error), Some(fields)) = (error, result.as_object_mut()) {
        fields.insert("error".to_string(), Value::String(error));
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
