//! The browser tests of tests/dashboard.rs: a live tree, a kill from the page, steer,
//! pairing, a wrong token, and a 1,000-session tree.

use super::*;

/// The page opened from `hivegate dashboard`'s link follows a tree as it runs, shows
/// each session's label, agent, model, status, tokens and why it failed, loses the token
/// from the address bar, kills a subtree with two clicks, steers a session, and approves
/// a pairing request that arrives while it is open.
#[actix_rt::test]
async fn the_dashboard_follows_a_live_tree_and_kills_a_subtree() {
    let Some(browser) = browser().await else { return };
    let server = Server::start().await;
    let link = server.link().await;
    assert_eq!(link, format!("http://{}/ui#token={TOKEN}", server.addr));
    let page = browser.page().await;
    page.goto(&link).await;
    page.wait_for("the page to connect", "document.querySelector('#conn').dataset.state === 'ready'", UI_WAIT).await;
    // The token left the address bar (and the history entry) at once; the tab keeps it.
    let location = page.eval("[location.href, location.hash, sessionStorage.getItem('hivegate.token')]").await;
    assert_eq!(location, json!([format!("http://{}/ui", server.addr), "", TOKEN]));

    // The tree appears as it runs: pushed events, no reload of the list after the first.
    server.start_run("main", "tree").await;
    let settled = "rows.alpha && rows['alpha-3'] === 'running' && rows.gamma === 'done' && rows.delta === 'failed'";
    let rows = page.wait_for("the live tree", &rows_when(settled), UI_WAIT).await;
    assert_eq!(
        rows,
        json!({"main": "running", "alpha": "running", "alpha-1": "running", "alpha-2": "running",
            "alpha-3": "running", "beta": "running", "gamma": "done", "delta": "failed"})
    );
    assert_eq!(page.eval("window.hivegate.stats.reloads").await, json!(1), "updates came as events");
    let delta = row_selector(&page, "delta").await;
    let cells =
        page.eval(&format!("[...document.querySelector({}).children].map(c => c.textContent)", json!(delta))).await;
    assert_eq!(
        cells.as_array().unwrap()[1..4],
        [json!("executor"), json!("fake/executor"), json!("failed")],
        "{cells}"
    );
    assert!(cells[8].as_str().unwrap().contains("400"), "the reason a session failed: {cells}");
    let gamma = row_selector(&page, "gamma").await;
    let gamma_cells =
        page.eval(&format!("[...document.querySelector({}).children].map(c => c.textContent)", json!(gamma))).await;
    assert_eq!((&gamma_cells[5], &gamma_cells[6]), (&json!("1.1k"), &json!("$0.00028")), "{gamma_cells}");
    // Elapsed time ticks in the page for running sessions.
    let beta = row_selector(&page, "beta").await;
    let elapsed = format!("document.querySelector({}).children[4].textContent", json!(beta));
    let before = page.eval(&elapsed).await;
    page.wait_for("beta's elapsed time to move on", &format!("{elapsed} !== {before}"), UI_WAIT).await;

    // A session's transcript on click.
    page.click(&delta).await;
    page.wait_for(
        "delta's transcript",
        "document.querySelector('#transcript').textContent.includes('fail delta') || null",
        UI_WAIT,
    )
    .await;

    // Kill alpha's subtree from its row: the first click arms, the second kills.
    let alpha = row_selector(&page, "alpha").await;
    let kill = format!("{alpha} .kill");
    page.click(&kill).await;
    page.wait_for(
        "the kill to ask again",
        &format!("document.querySelector({}).textContent === 'Kill tree?'", json!(kill)),
        UI_WAIT,
    )
    .await;
    page.click(&kill).await;
    let killed = "rows.alpha === 'killed' && ['alpha-1', 'alpha-2', 'alpha-3'].every(k => rows[k] === 'killed')";
    let rows = page.wait_for("alpha's subtree to show killed", &rows_when(killed), UI_WAIT).await;
    assert_eq!((&rows["beta"], &rows["main"]), (&json!("running"), &json!("running")), "{rows}");
    let statuses = server.statuses().await;
    for (name, status) in [
        ("alpha", "killed"),
        ("alpha-1", "killed"),
        ("alpha-2", "killed"),
        ("alpha-3", "killed"),
        ("beta", "running"),
        ("gamma", "done"),
        ("delta", "failed"),
        ("agent:brain:main", "running"),
    ] {
        assert_eq!(statuses.get(name).map(String::as_str), Some(status), "{name} over the gateway: {statuses:?}");
    }

    // Steer beta from its detail panel.
    page.click(&beta).await;
    page.click("#steer-text").await;
    page.type_text("wrap up now").await;
    page.click("#steer button").await;
    page.wait_for(
        "the steer to be delivered",
        "document.querySelector('#notice').textContent.includes('delivered') || null",
        UI_WAIT,
    )
    .await;

    // A node asks to pair while the page is open: it shows up, live.
    let node = Identity::generate();
    let mut socket = WsClient::open(server.addr, &[]).await.unwrap();
    let refused = socket.connect(&ConnectOptions::node(&node, TOKEN)).await.unwrap_err();
    assert_eq!(refused["details"]["code"], "PAIRING_REQUIRED", "{refused}");
    let request = refused["details"]["requestId"].as_str().unwrap().to_string();
    let approve = format!("#pending button.approve[data-request-id={}]", json!(request));
    page.wait_for("the pairing request", &format!("document.querySelector({}) !== null", json!(approve)), UI_WAIT)
        .await;
    if let Ok(path) = std::env::var("HIVEGATE_SCREENSHOT") {
        page.click(&delta).await;
        page.wait_for(
            "delta's details",
            "document.querySelector('#transcript').textContent.includes('fail delta') || null",
            UI_WAIT,
        )
        .await;
        std::fs::write(&path, page.screenshot(1440, 900).await).unwrap();
        eprintln!("screenshot saved to {path}");
    }
    page.click(&approve).await;
    let paired = format!(
        "document.querySelector('#devices').textContent.includes('test-node') && !document.querySelector({})",
        json!(approve)
    );
    page.wait_for("the device to be paired", &paired, UI_WAIT).await;
    let list = cli_call(server.addr, &["operator.pairing"], "device.pair.list", json!({})).await.unwrap();
    assert_eq!(list["paired"][0]["deviceId"], node.device_id.as_str(), "{list}");

    // A reload reconnects with the token the tab kept, the URL still without it.
    page.reload().await;
    page.wait_for("the tree after a reload", &rows_when("rows.alpha === 'killed' && rows.beta === 'running'"), UI_WAIT)
        .await;
    assert_eq!(page.eval("location.hash").await, json!(""));
    eprintln!("chromium pid {} and server pid {} end with the test", browser.pid(), server.child.id());
}

/// A wrong token: an error, no sessions, no retry loop, the token gone from the URL;
/// then the right token typed into the form connects.
#[actix_rt::test]
async fn a_wrong_token_shows_an_error_and_no_sessions() {
    let Some(browser) = browser().await else { return };
    let server = Server::start().await;
    server.start_run("main", "tree").await;
    let page = browser.page().await;
    page.goto(&format!("http://{}/ui#token=not-the-token", server.addr)).await;
    let error = page
        .wait_for(
            "the refusal",
            "!document.querySelector('#error').hidden && document.querySelector('#error').textContent",
            UI_WAIT,
        )
        .await;
    assert!(error.as_str().unwrap().contains("gateway token mismatch"), "{error}");
    let state = page
        .eval(
            "[document.querySelectorAll('#tree li').length, document.querySelector('#main').hidden, \
             document.querySelector('#login').hidden, document.querySelector('#conn').dataset.state, \
             location.href.includes('not-the-token'), sessionStorage.getItem('hivegate.token')]",
        )
        .await;
    assert_eq!(state, json!([0, true, false, "refused", false, null]));
    // The right token through the form.
    page.click("#token").await;
    page.type_text(TOKEN).await;
    page.click("#login button").await;
    page.wait_for("the tree after signing in", &rows_when("rows.gamma === 'done' && rows.delta === 'failed'"), UI_WAIT)
        .await;
    assert_eq!(page.eval("document.querySelector('#error').hidden").await, json!(true));
}

/// A tree of 1,000 running sessions, spawned while the page watches, shows every node;
/// killing its root shows all 1,000 killed. What it took is printed, not asserted.
#[actix_rt::test]
async fn a_thousand_session_tree_shows_every_node() {
    let Some(browser) = browser().await else { return };
    let server = Server::start().await;
    let page = browser.page().await;
    page.goto(&server.link().await).await;
    page.wait_for("the page to connect", "document.querySelector('#conn').dataset.state === 'ready'", UI_WAIT).await;
    let started = Instant::now();
    let started_ms = common::wsclient::now_ms();
    // 1 brain + 9 leads × 110 executors = 1,000 sessions.
    server.start_run("big", "wide 9 110").await;
    let count = "document.querySelectorAll('#tree li[data-status=running]').length === 1000";
    page.wait_for("1,000 running sessions", count, BIG_WAIT).await;
    let shown = started.elapsed();
    let stats = page.eval("JSON.stringify(window.hivegate.stats)").await;
    let list = cli_call(server.addr, &["operator.read"], "sessions.list", json!({})).await.unwrap();
    let rows = list["sessions"].as_array().unwrap();
    assert_eq!(rows.iter().filter(|s| s["status"] == "running").count(), 1000);
    let last_start = rows.iter().filter_map(|s| s["startedAtMs"].as_u64()).max().unwrap();
    let parsed: Value = serde_json::from_str(stats.as_str().unwrap()).unwrap();
    let since = |ms: u64| ms.saturating_sub(started_ms) as f64 / 1000.0;
    eprintln!(
        "after the run started: the gateway started the last of 1,000 sessions at {:.1} s, its last event reached \
         the page at {:.1} s, the page showed all 1,000 at {:.1} s; page stats {}",
        since(last_start),
        since(parsed["tree"]["lastEventAt"].as_u64().unwrap_or(0)),
        shown.as_secs_f64(),
        stats.as_str().unwrap()
    );
    let started = Instant::now();
    let aborted =
        cli_call(server.addr, &["operator.write"], "sessions.abort", json!({"key": "agent:brain:big"})).await.unwrap();
    assert_eq!(aborted["status"], "aborted", "{aborted}");
    let all_killed = "document.querySelectorAll('#tree li[data-status=killed]').length === 1000";
    page.wait_for("1,000 killed sessions", all_killed, BIG_WAIT).await;
    let stats = page.eval("JSON.stringify(window.hivegate.stats)").await;
    eprintln!(
        "1,000 kills shown {:.1} s after the abort; page stats {}",
        started.elapsed().as_secs_f64(),
        stats.as_str().unwrap()
    );
}
