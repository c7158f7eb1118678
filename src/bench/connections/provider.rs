//! A loopback provider for connection measurements: OpenAI chat completions on
//! `127.0.0.1:0`, over TLS with a certificate made at start (offering h2 and HTTP/1.1 by
//! ALPN, as real providers do) or over plain HTTP/1.1. It numbers the connections it
//! accepts (a TLS connection is counted once its handshake is done) and records, for
//! every request, its model, when it arrived and on which connection.
//!
//! It plays one tree: the parent's first call is answered with `children`
//! `sessions_spawn` calls and a `sessions_yield`; the parent yields until it has heard
//! from every child, then answers in text; each child answers in text at once. Each
//! answer is one JSON body or a stream of server-sent events, as the request asks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use serde_json::{json, Value};

use crate::model::openai::CompletionRequest;
use crate::model::TrustedCa;

/// The model ref the parent agent uses, and its children's.
pub const PARENT_MODEL: &str = "parent";
pub const CHILD_MODEL: &str = "child";
/// A child's whole answer.
pub const CHILD_ANSWER: &str = "child done";

/// How the provider is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS with ALPN `h2` and `http/1.1`.
    Tls,
    /// Plain HTTP/1.1.
    Plain,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub model: String,
    pub at: Instant,
    /// The connection it came on, numbered from 1 in order of acceptance.
    pub connection: u64,
    /// The HTTP version it was sent with.
    pub version: String,
}

/// A running loopback provider.
pub struct LoopbackProvider {
    /// The provider's base URL (`https://127.0.0.1:PORT/v1` or `http://…`).
    pub base_url: String,
    /// The certificate a client must trust to reach it over TLS, in PEM (`None` over
    /// plain HTTP).
    pub ca_pem: Option<String>,
    connections: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    handle: actix_web::dev::ServerHandle,
}

struct State {
    children: usize,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

/// The number a connection was given when it was accepted.
#[derive(Clone, Copy)]
struct Connection(u64);

impl LoopbackProvider {
    /// Start on `127.0.0.1:0`, playing parents that spawn `children` each. Must run
    /// inside an actix System.
    pub fn start(transport: Transport, children: usize) -> anyhow::Result<LoopbackProvider> {
        let connections = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State { children, arrivals: arrivals.clone() });
        let counter = connections.clone();
        let server = HttpServer::new(move || {
            App::new().app_data(state.clone()).route("/v1/chat/completions", web::post().to(complete))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(move |_, extensions| {
            extensions.insert(Connection(counter.fetch_add(1, Ordering::AcqRel) + 1));
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("cannot bind a loopback port")?;
        let addr: SocketAddr = listener.local_addr()?;
        let (server, base_url, ca) = match transport {
            Transport::Plain => (server.listen(listener)?, format!("http://{addr}/v1"), None),
            Transport::Tls => {
                let (config, ca) = tls_config()?;
                (server.listen_rustls_0_23(listener, config)?, format!("https://{addr}/v1"), Some(ca))
            }
        };
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(LoopbackProvider { base_url, ca_pem: ca, connections, arrivals, handle })
    }

    /// Its certificate as a [`TrustedCa`], for a provider config built in code.
    pub fn trusted_ca(&self) -> anyhow::Result<Option<TrustedCa>> {
        let Some(pem) = &self.ca_pem else { return Ok(None) };
        let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())?;
        Ok(Some(TrustedCa { path: "<generated>".into(), certificates }))
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    /// The requests that arrived since the last call, in order of arrival.
    pub fn take_arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().map(|mut a| std::mem::take(&mut *a)).unwrap_or_default()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A server config with a fresh self-signed certificate for `127.0.0.1` and
/// `localhost`, and that certificate in PEM, for clients to trust.
fn tls_config() -> anyhow::Result<(rustls::ServerConfig, String)> {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .context("cannot make a self-signed certificate")?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)?;
    Ok((config, made.cert.pem()))
}

async fn complete(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return HttpResponse::BadRequest().body(format!("not a chat completions request: {e}")),
    };
    let connection = req.conn_data::<Connection>().map_or(0, |c| c.0);
    let version = format!("{:?}", req.version());
    if let Ok(mut arrivals) = state.arrivals.lock() {
        arrivals.push(Arrival { model: request.model.clone(), at, connection, version });
    }
    let reply = match request.model.as_str() {
        PARENT_MODEL => parent_reply(&request, state.children),
        _ => Reply::Text(CHILD_ANSWER.into()),
    };
    match request.stream {
        true => HttpResponse::Ok().content_type("text/event-stream").streaming(events(&reply)),
        false => HttpResponse::Ok().json(whole(&request.model, &reply)),
    }
}

enum Reply {
    Text(String),
    /// Tool calls as (id, name, arguments).
    Calls(Vec<(String, &'static str, Value)>),
}

/// Spawn every child and yield; yield until all have been heard from; then say so.
fn parent_reply(request: &CompletionRequest, children: usize) -> Reply {
    let spawned = request.messages.iter().any(|m| m.role == "tool");
    // The task is the first user message; each child's announcement is another.
    let heard = request.messages.iter().filter(|m| m.role == "user").count().saturating_sub(1);
    match (spawned, heard >= children) {
        (false, _) => {
            let spawn = |i: usize| {
                (format!("spawn-{i}"), "sessions_spawn", json!({"task": format!("part {i}"), "agentId": "conn-child"}))
            };
            let mut calls: Vec<_> = (0..children).map(spawn).collect();
            calls.push(("yield-0".into(), "sessions_yield", json!({})));
            Reply::Calls(calls)
        }
        (true, false) => Reply::Calls(vec![(format!("yield-{heard}"), "sessions_yield", json!({}))]),
        (true, true) => Reply::Text(format!("heard from {heard} children")),
    }
}

fn tool_calls(calls: &[(String, &'static str, Value)]) -> Vec<Value> {
    let call = |(i, (id, name, args)): (usize, &(String, &str, Value))| json!({"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}});
    calls.iter().enumerate().map(call).collect()
}

fn whole(model: &str, reply: &Reply) -> Value {
    let message = match reply {
        Reply::Text(text) => json!({"role": "assistant", "content": text}),
        Reply::Calls(calls) => json!({"role": "assistant", "content": null, "tool_calls": tool_calls(calls)}),
    };
    json!({
        "id": "loopback", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })
}

/// The answer as events, one body chunk each (chunked over HTTP/1.1, as providers send).
fn events(reply: &Reply) -> impl futures_util::Stream<Item = Result<web::Bytes, std::convert::Infallible>> {
    let delta = match reply {
        Reply::Text(text) => json!({"role": "assistant", "content": text}),
        Reply::Calls(calls) => json!({"role": "assistant", "tool_calls": tool_calls(calls)}),
    };
    let chunks = [
        json!({"choices": [{"index": 0, "delta": delta}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
    ];
    let mut events: Vec<_> = chunks.iter().map(|c| Ok(web::Bytes::from(format!("data: {c}\n\n")))).collect();
    events.push(Ok(web::Bytes::from_static(b"data: [DONE]\n\n")));
    futures_util::stream::iter(events)
}
