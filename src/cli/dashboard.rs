//! `hivegate dashboard`: the link that opens a running gateway's web dashboard (`/ui`,
//! [`crate::ui`]) already signed in: `http://host:port/ui#token=...`. The gateway and
//! token are found as the other client commands find them (`--url`/`--token`, else the
//! config's bind address and gateway token). The token rides in the URL fragment, which
//! a browser never sends to a server; the page moves it to the tab's session storage and
//! clears it from the address bar. Before printing, the link is checked: the gateway
//! must answer on that URL and accept that token (`--no-check` skips it).
//!
//! Exit codes: 0 the link was printed; 1 there is no token, or the gateway is not
//! reachable or refused the token; 2 bad input (flags, config, URL).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::devices::GatewayArgs;
use crate::client::OperatorClient;

#[derive(Debug, Args)]
#[command(
    after_help = "Example: xdg-open \"$(hivegate dashboard)\" (--help says more)",
    after_long_help = "The dashboard (served by `hivegate serve` at /ui) shows the session tree live: each session's \
        agent, label, model, status, elapsed time, tokens and cost, and why it failed; a session's transcript on click; \
        kill and steer; pending device pairing requests with approve and reject.\n\n\
        The link carries the gateway token after `#` (http://127.0.0.1:18789/ui#token=...): browsers never send that \
        part to a server, and the page keeps it for its tab only. Open it in a browser on the gateway's machine (or \
        through an ssh tunnel): the gateway grants the page operator scopes only on a direct loopback connection \
        with the token. The gateway and token come from --url/--token, else from the config (gateway.bind and the \
        gateway token, HIVEGATE_GATEWAY_TOKEN by default). The link is checked first (the gateway answers and accepts \
        the token) unless --no-check is given.\n\n\
        Exit codes: 0 printed; 1 no token, or the gateway is unreachable or refused the token; 2 bad input.\n\n\
        Example: xdg-open \"$(hivegate dashboard)\""
)]
pub struct DashboardArgs {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Print the link without checking that the gateway answers and accepts the token.
    #[arg(long)]
    no_check: bool,
}

/// The dashboard link for the gateway WebSocket `ws_url`: same host and port over
/// http(s), path `/ui`, the token form-encoded in the fragment.
pub fn dashboard_link(ws_url: &str, token: &str) -> Result<String, String> {
    let mut url = url::Url::parse(ws_url).map_err(|e| format!("invalid gateway url {ws_url:?}: {e}"))?;
    let scheme = match url.scheme() {
        "ws" => "http",
        "wss" => "https",
        other => return Err(format!("invalid gateway url {ws_url:?}: expected ws:// or wss://, not {other}://")),
    };
    url.set_scheme(scheme).map_err(|()| format!("invalid gateway url {ws_url:?}"))?;
    url.set_path("/ui");
    url.set_query(None);
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    url.set_fragment(Some(&format!("token={encoded}")));
    Ok(url.to_string())
}

pub async fn run(config_path: Option<PathBuf>, args: DashboardArgs) -> anyhow::Result<i32> {
    let (url, token) = args.gateway.target(config_path.as_deref())?;
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        eprintln!(
            "hivegate: the dashboard needs the gateway token, and none is configured: start the gateway with one \
             (export HIVEGATE_GATEWAY_TOKEN=$(openssl rand -hex 24), then `hivegate serve`) and run this command \
             with the same variable, or pass --token"
        );
        return Ok(1);
    };
    let link = match dashboard_link(&url, &token) {
        Ok(link) => link,
        Err(e) => {
            eprintln!("hivegate: {e}");
            return Ok(2);
        }
    };
    if !args.no_check {
        let client =
            OperatorClient::new(url.clone(), Some(token))?.with_timeout(Duration::from_millis(args.gateway.timeout));
        if let Err(e) = client.call(&["operator.read"], "health", json!({})).await {
            eprintln!("hivegate: {e}");
            return Ok(1);
        }
    }
    if args.gateway.json {
        super::print_json(&json!({"url": link, "gatewayUrl": url, "checked": !args.no_check}))?;
    } else {
        outln!("{link}");
        if std::io::stderr().is_terminal() {
            eprintln!("open it in a browser on this machine; the token after '#' stays in the browser");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_the_gateways_own_page_with_the_token_in_the_fragment() {
        assert_eq!(dashboard_link("ws://127.0.0.1:18789/", "t0k"), Ok("http://127.0.0.1:18789/ui#token=t0k".into()));
        assert_eq!(dashboard_link("wss://gw.example/", "a"), Ok("https://gw.example/ui#token=a".into()));
        // Characters that mean something in a fragment or to URLSearchParams are encoded.
        assert_eq!(
            dashboard_link("ws://[::1]:9/x?y=1", "a+b&c=d #e"),
            Ok("http://[::1]:9/ui#token=a%2Bb%26c%3Dd+%23e".into())
        );
        assert!(dashboard_link("http://127.0.0.1:1/", "t").unwrap_err().contains("expected ws:// or wss://"));
        assert!(dashboard_link("not a url", "t").is_err());
    }
}
