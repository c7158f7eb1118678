use super::*;

/// Every test's bound on a whole run; reaching it is a failure, not a timing check.
const BOUND: Duration = Duration::from_secs(120);

fn args(command: &str) -> ExecArgs {
    ExecArgs { command: command.to_string(), workdir: None, timeout: None }
}

async fn exec(dir: &Path, args: &ExecArgs, limits: &ExecLimits) -> Value {
    let mut result = tokio::time::timeout(BOUND, run(dir, args, limits)).await.unwrap().unwrap();
    result.as_object_mut().unwrap().remove("durationMs").expect("a duration");
    result
}

/// Whether `pid` is gone (or a zombie nobody reaps), polling for at most 10 s.
async fn gone(pid: i32) -> bool {
    for _ in 0..200 {
        // SAFETY: signal 0 only checks that the process exists.
        let missing = unsafe { libc::kill(pid, 0) } == -1;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if missing || zombie {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The pids written, one a line, to `path` once it is complete (at most 10 s).
async fn pids(path: &Path, count: usize) -> Vec<i32> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|line| line.trim().parse().ok()).collect();
        if pids.len() == count {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never held {count} pids", path.display());
}

#[tokio::test]
async fn returns_output_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ExecLimits::default();
    let failed = exec(dir.path(), &args("echo hello; echo oops >&2; exit 3"), &limits).await;
    assert_eq!(
        failed,
        json!({"status": "error", "exitCode": 3, "signal": null, "stdout": "hello\n", "stderr": "oops\n",
            "truncated": false, "stdoutBytes": 6, "stderrBytes": 5, "timedOut": false,
            "timeoutSeconds": 60.0, "timeoutCapped": false, "error": "command exited with code 3"})
    );
    let ok = exec(dir.path(), &args("printf hi"), &limits).await;
    assert_eq!(
        ok,
        json!({"status": "ok", "exitCode": 0, "signal": null, "stdout": "hi", "stderr": "",
            "truncated": false, "stdoutBytes": 2, "stderrBytes": 0, "timedOut": false,
            "timeoutSeconds": 60.0, "timeoutCapped": false})
    );
}

#[tokio::test]
async fn runs_in_the_given_directory() {
    let dir = tempfile::tempdir().unwrap();
    let result = exec(dir.path(), &args("pwd -P"), &ExecLimits::default()).await;
    let expected = format!("{}\n", dir.path().canonicalize().unwrap().display());
    assert_eq!(result["stdout"], json!(expected));
}

#[tokio::test]
async fn environment_keeps_only_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let parent = [("PATH", "/usr/bin:/bin"), ("HIVEGATE_GATEWAY_TOKEN", "s3cret"), ("OPENAI_API_KEY", "sk-x")]
        .map(|(name, value)| (OsString::from(name), OsString::from(value)));
    let result = tokio::time::timeout(BOUND, run_with_env(dir.path(), &args("env"), &ExecLimits::default(), parent))
        .await
        .unwrap()
        .unwrap();
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.lines().any(|line| line == "PATH=/usr/bin:/bin"), "{stdout}");
    assert!(!stdout.contains("s3cret") && !stdout.contains("sk-x"), "{stdout}");
    // The real environment: cargo's test variables (CARGO_*) must not leak either.
    let real = exec(dir.path(), &args("env"), &ExecLimits::default()).await;
    let shell_own = ["PWD", "OLDPWD", "SHLVL", "_"];
    for line in real["stdout"].as_str().unwrap().lines() {
        let name = line.split('=').next().unwrap_or_default();
        assert!(ALLOWED_ENV.contains(&name) || shell_own.contains(&name), "leaked {name}");
    }
}

#[tokio::test]
async fn output_is_capped_and_counted_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ExecLimits { max_output_bytes: 1000, ..ExecLimits::default() };
    let command = "yes | head -c 10000000; yes e | head -c 3000000 >&2";
    let result = exec(dir.path(), &args(command), &limits).await;
    assert_eq!(result["stdout"], json!("y\n".repeat(500)));
    assert_eq!(result["stderr"], json!("e\n".repeat(500)));
    assert_eq!(
        (&result["status"], &result["truncated"], &result["stdoutBytes"], &result["stderrBytes"]),
        (&json!("ok"), &json!(true), &json!(10_000_000), &json!(3_000_000))
    );
}

#[tokio::test]
async fn timeout_is_capped_and_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ExecLimits { max_timeout: Duration::from_secs(2), ..ExecLimits::default() };
    let command = "sleep 100 & echo $! > bg.pid; sleep 100";
    let result = exec(dir.path(), &ExecArgs { timeout: Some(3600.0), ..args(command) }, &limits).await;
    assert_eq!(
        result,
        json!({"status": "error", "exitCode": null, "signal": 9, "stdout": "", "stderr": "",
            "truncated": false, "stdoutBytes": 0, "stderrBytes": 0, "timedOut": true,
            "timeoutSeconds": 2.0, "timeoutCapped": true,
            "error": "command timed out after 2 s and was killed with everything it started \
                (the requested timeout was lowered to the maximum)"})
    );
    let grandchild = pids(&dir.path().join("bg.pid"), 1).await[0];
    assert!(gone(grandchild).await, "background sleep {grandchild} survived the timeout");
}

#[tokio::test]
async fn background_jobs_die_when_the_command_ends() {
    let dir = tempfile::tempdir().unwrap();
    // The job holds stdout open: the call must still return once the shell exits.
    let result = exec(dir.path(), &args("sleep 100 & echo $! > bg.pid"), &ExecLimits::default()).await;
    assert_eq!((&result["status"], &result["timedOut"]), (&json!("ok"), &json!(false)));
    let job = pids(&dir.path().join("bg.pid"), 1).await[0];
    assert!(gone(job).await, "background sleep {job} outlived its command");
}

#[tokio::test]
async fn dropping_the_call_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let command = "sleep 100 & echo $! > pids.tmp; echo $$ >> pids.tmp; mv pids.tmp pids; sleep 100";
    let (call_args, limits) = (args(command), ExecLimits::default());
    let call = run(dir.path(), &call_args, &limits);
    // Once the pids are written, the call's future is dropped, as when a session is killed.
    let written = tokio::time::timeout(BOUND, async {
        tokio::select! {
            result = call => panic!("the command ended on its own: {result:?}"),
            pids = pids(&pid_file, 2) => pids,
        }
    });
    for pid in written.await.unwrap() {
        assert!(gone(pid).await, "process {pid} survived the dropped call");
    }
}

#[test]
fn openclaw_parameters_parse_and_the_others_are_refused() {
    let parsed: ExecArgs =
        serde_json::from_str(r#"{"command": "ls", "workdir": "src", "timeout": 5, "pty": null}"#).unwrap();
    assert_eq!(parsed, ExecArgs { command: "ls".into(), workdir: Some("src".into()), timeout: Some(5.0) });
    let refused = serde_json::from_str::<ExecArgs>(
        r#"{"command": "ls", "background": true, "pty": false, "cwd": "x", "colour": 1}"#,
    )
    .unwrap_err()
    .to_string();
    let expected = "exec does not support `background`, `colour` (unknown), `cwd` (use `workdir`), `pty`: \
        it runs one command in the foreground, in the session's workspace, without a terminal, extra \
        environment or another host; supported parameters: command, workdir (relative to the workspace), \
        timeout (seconds)";
    assert!(refused.starts_with(expected), "{refused}");
}

#[tokio::test]
async fn bad_calls_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ExecLimits::default();
    let refusal = |args: ExecArgs| {
        let dir = dir.path().to_path_buf();
        let limits = limits.clone();
        async move { run(&dir, &args, &limits).await.unwrap_err() }
    };
    assert_eq!(refusal(args(" ")).await, ToolError::Invalid("command is empty; give the shell command to run".into()));
    let long = "x".repeat(MAX_COMMAND_BYTES + 1);
    assert_eq!(
        refusal(args(&long)).await,
        ToolError::Invalid("command is 65537 bytes, over the 65536-byte limit; write a script file and run it".into())
    );
    assert_eq!(
        refusal(ExecArgs { timeout: Some(0.0), ..args("true") }).await,
        ToolError::Invalid("timeout 0 is not a positive number of seconds; give one up to 600".into())
    );
    let (nope, nope_args) = (dir.path().join("nope"), ExecArgs { workdir: Some("nope".into()), ..args("true") });
    assert_eq!(
        run(&nope, &nope_args, &limits).await.unwrap_err(),
        ToolError::Io { path: "nope".into(), message: "not a directory; give an existing directory as workdir".into() }
    );
}

#[test]
fn timeouts_default_and_cap() {
    let limits = ExecLimits::default();
    assert_eq!(resolve_timeout(None, &limits), Ok((Duration::from_secs(60), false)));
    assert_eq!(resolve_timeout(Some(1.5), &limits), Ok((Duration::from_millis(1500), false)));
    assert_eq!(resolve_timeout(Some(601.0), &limits), Ok((Duration::from_secs(600), true)));
    assert_eq!(resolve_timeout(Some(1e300), &limits), Ok((Duration::from_secs(600), true)));
    assert!(resolve_timeout(Some(-1.0), &limits).is_err());
}

#[test]
fn a_character_cut_by_the_cap_is_dropped() {
    let cut = Captured { bytes: "aé".as_bytes()[..2].to_vec(), total: 3 };
    assert_eq!(cut.text(), "a");
    let whole = Captured { bytes: "aé".as_bytes().to_vec(), total: 10 };
    assert_eq!(whole.text(), "aé");
    let invalid = Captured { bytes: vec![b'a', 0xFF], total: 2 };
    assert_eq!(invalid.text(), "a\u{FFFD}");
}
