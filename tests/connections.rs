//! Model connections that are already open: a tree's children ride the connection their
//! parent's calls opened. The real runtime and model client against the loopback
//! provider of `hivegate::bench::connections`, which numbers the connections it accepts:
//! over TLS (a certificate made at test time, trusted through the provider's `ca_file`)
//! the provider offers h2 by ALPN, and five children's concurrent first requests come
//! as streams on the parent's one connection. Over plain HTTP/1.1 a lone child's first
//! request reuses the parent's idle connection, streamed answers included.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use hivegate::bench::connections::provider::{Arrival, CHILD_ANSWER, CHILD_MODEL, PARENT_MODEL};
use hivegate::bench::connections::{agents, LoopbackProvider, Transport};
use hivegate::config::Config;
use hivegate::gateway::{Outcome, StartMain};
use hivegate::runtime::Runtime;

/// A runtime whose provider `loopback` is `provider`, configured as a user would: a TOML
/// file naming the provider's CA in a PEM file beside it.
async fn start(provider: &LoopbackProvider, dir: &std::path::Path) -> Runtime {
    let mut toml =
        format!("[gateway]\nbind = \"127.0.0.1:0\"\n[providers.loopback]\nbase_url = \"{}\"\n", provider.base_url);
    if let Some(pem) = &provider.ca_pem {
        std::fs::write(dir.join("loopback-ca.pem"), pem).unwrap();
        toml.push_str("ca_file = \"loopback-ca.pem\"\n");
    }
    let origin = dir.join("hivegate.toml").display().to_string();
    let mut config = Config::from_toml(&toml, &origin, |_| None).unwrap();
    config.state_dir = std::path::PathBuf::new();
    Runtime::start(&config, agents().unwrap()).await.unwrap()
}

/// Run the parent to its end; its summary and the children's answers, checked.
async fn run_tree(runtime: &Runtime, children: usize) {
    let summary = common::run_to_end(runtime, StartMain::new("conn-parent", "go")).await;
    assert_eq!(
        (summary.outcome, summary.text.as_str()),
        (Outcome::Ok, format!("heard from {children} children").as_str())
    );
    let tree = runtime.registry.tree(&summary.session_key).unwrap();
    let outcomes: Vec<_> = tree.children.iter().map(|c| (c.agent_id.as_str(), c.outcome)).collect();
    assert_eq!(outcomes, vec![("conn-child", Some(Outcome::Ok)); children]);
}

/// (model, connection, HTTP version) of each request, in order of arrival.
fn seen(arrivals: &[Arrival]) -> Vec<(&str, u64, &str)> {
    arrivals.iter().map(|a| (a.model.as_str(), a.connection, a.version.as_str())).collect()
}

#[actix_rt::test]
async fn five_children_first_requests_ride_the_parents_h2_connection() {
    let provider = LoopbackProvider::start(Transport::Tls, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(&provider, dir.path()).await;
    run_tree(&runtime, 5).await;
    let arrivals = provider.take_arrivals();
    let children: Vec<_> = seen(&arrivals).into_iter().filter(|(model, ..)| *model == CHILD_MODEL).collect();
    assert_eq!(children, vec![(CHILD_MODEL, 1, "HTTP/2.0"); 5], "{:?}", seen(&arrivals));
    assert_eq!(seen(&arrivals)[0], (PARENT_MODEL, 1, "HTTP/2.0"));
    assert!(arrivals.iter().all(|a| a.connection == 1), "{:?}", seen(&arrivals));
    assert_eq!(provider.connections(), 1, "one connection for the whole tree");
    runtime.shutdown().await.unwrap();
    provider.stop().await;
}

#[actix_rt::test]
async fn a_lone_childs_first_request_reuses_the_parents_idle_http1_connection() {
    let provider = LoopbackProvider::start(Transport::Plain, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(&provider, dir.path()).await;
    run_tree(&runtime, 1).await;
    let arrivals = provider.take_arrivals();
    assert_eq!(
        seen(&arrivals),
        vec![(PARENT_MODEL, 1, "HTTP/1.1"), (CHILD_MODEL, 1, "HTTP/1.1"), (PARENT_MODEL, 1, "HTTP/1.1")],
        "every call on the one connection, one after another"
    );
    assert_eq!(provider.connections(), 1);
    assert_eq!(CHILD_ANSWER, "child done");
    runtime.shutdown().await.unwrap();
    provider.stop().await;
}
