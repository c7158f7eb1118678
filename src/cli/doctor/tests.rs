use super::*;

#[test]
fn the_exit_code_is_0_with_warnings_1_with_a_failure_2_on_bad_input() {
    let ok = Check::ok("a", "fine");
    let warn = Check::warn("b", "hm", "do this");
    let fail = Check::fail("c", "broken", "do that");
    assert_eq!(Report::new(vec![ok.clone(), warn.clone()], false).exit_code, 0);
    assert_eq!(Report::new(vec![ok.clone(), warn.clone(), fail.clone()], false).exit_code, 1);
    let bad = Report::new(vec![fail], true);
    assert_eq!((bad.exit_code, bad.ok), (2, false));
    assert_eq!(
        Report::new(vec![ok, warn], false).render(),
        "ok    a  fine\nwarn  b  hm\n         fix: do this\n\n1 ok, 1 warning, 0 failed\n"
    );
}

#[test]
fn a_key_variable_is_named_never_its_value() {
    assert_eq!(
        key_check("cherry", Some("CHERRY_KEY"), true, true),
        Check::ok("provider cherry key", "CHERRY_KEY is set")
    );
    let missing = key_check("cherry", Some("CHERRY_KEY"), false, true);
    assert_eq!(
        (missing.status, missing.detail.as_str(), missing.fix.as_deref()),
        (
            Level::Fail,
            "CHERRY_KEY is not set (or is empty)",
            Some("export CHERRY_KEY=<the API key for cherry> before starting hivegate")
        )
    );
    assert_eq!(key_check("cherry", Some("CHERRY_KEY"), false, false).status, Level::Warn, "no agent uses it");
    assert_eq!(key_check("local", None, false, true).status, Level::Ok);
}

#[test]
fn any_http_answer_is_reachable_a_refusal_or_silence_is_not() {
    let bound = Duration::from_secs(2);
    let url = "http://127.0.0.1:9/v1";
    assert_eq!(reach_check("p", url, &Reach::Answered(404), bound).status, Level::Ok);
    let refused = reach_check("p", url, &Reach::Unreachable("Connection refused (os error 111)".into()), bound);
    assert_eq!(
        (refused.status, refused.detail.as_str()),
        (Level::Fail, "cannot reach http://127.0.0.1:9/v1: Connection refused (os error 111)")
    );
    assert_eq!(
        reach_check("p", url, &Reach::TimedOut, bound).detail,
        "cannot reach http://127.0.0.1:9/v1: no answer within 2.0 s"
    );
}

#[test]
fn the_port_may_be_free_or_a_hivegates() {
    let bind: SocketAddr = "127.0.0.1:18789".parse().unwrap();
    assert_eq!(port_check(bind, &Port::Free).status, Level::Ok);
    assert_eq!(port_check(bind, &Port::Any).status, Level::Ok);
    assert_eq!(
        port_check(bind, &Port::Hivegate("0.1.0".into())).detail,
        "127.0.0.1:18789 is held by a running hivegate 0.1.0 (its /health answers)"
    );
    assert_eq!(port_check(bind, &Port::Taken("HTTP 404".into())).status, Level::Fail);
    assert_eq!(port_check(bind, &Port::Refused("permission denied".into())).status, Level::Fail);
}

#[test]
fn no_token_is_a_warning_on_loopback_and_a_failure_beyond() {
    assert_eq!(token_check("127.0.0.1:1".parse().unwrap(), false).status, Level::Warn);
    assert_eq!(token_check("0.0.0.0:1".parse().unwrap(), false).status, Level::Fail);
    assert_eq!(token_check("0.0.0.0:1".parse().unwrap(), true).status, Level::Ok);
}

#[test]
fn the_state_directory_must_be_writable_or_creatable() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(probe_state(dir.path()), State::Writable);
    let deeper = dir.path().join("a/b");
    assert_eq!(probe_state(&deeper), State::Creatable(dir.path().to_path_buf()));
    assert_eq!(state_check(&deeper, &probe_state(&deeper)).status, Level::Ok);
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    assert_eq!(probe_state(&file), State::NotADirectory);
    assert_eq!(state_check(&file, &State::NotADirectory).status, Level::Fail);
    assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1, "the probe leaves nothing behind");
}

#[test]
fn agents_on_unconfigured_providers_fail_with_the_table_to_add() {
    let check = agents_check(Ok(vec!["solo".into()]), &[("solo".into(), "cherry/qwen/q3".into())]);
    assert_eq!(check.detail, "agent 'solo' uses model cherry/qwen/q3, but no provider 'cherry' is configured");
    assert!(check.fix.unwrap().starts_with("add [providers.cherry]"));
    assert_eq!(agents_check(Ok(vec!["a".into(), "b".into()]), &[]).detail, "2 agents load: a, b");
    assert_eq!(agents_check(Err("invalid agent file x".into()), &[]).status, Level::Fail);
}

#[test]
fn an_mcp_server_without_tools_is_a_warning() {
    assert_eq!(mcp_check("fs", &Ok(vec!["fs__read".into()])).detail, "started and listed 1 tools");
    assert_eq!(mcp_check("fs", &Ok(vec![])).status, Level::Warn);
    assert_eq!(mcp_check("fs", &Err("cannot run x".into())).status, Level::Fail);
}
