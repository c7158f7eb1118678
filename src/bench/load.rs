//! Spawn latency under load: the spawn benchmark's parent, while at least 1,000 other
//! main sessions stream model output from a loopback provider through the real HTTP
//! model client (SSE parsing, events to the operator's view, one chunk per session every
//! [`CHUNK_EVERY`]). The same runtime measures idle, then loaded, then idle again once
//! the streams are stopped, so the p99s compare like for like; the verdict divides by
//! the lower idle p99, so that one noisy idle window cannot pass it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use futures_util::future::BoxFuture;

use super::spawn::{add_agents, bench_config, ParkedModel, SpawnHarness};
use crate::agent::{self, Agents};
use crate::gateway::{Kill, StartMain};
use crate::keys::SessionKey;
use crate::model::{
    Api, ChatRequest, ChatResponse, HttpModelClient, ModelClient, ModelError, ModelRef, Provider, Providers,
};
use crate::runtime::Runtime;

/// How often each streaming session receives a chunk.
pub const CHUNK_EVERY: Duration = Duration::from_millis(100);

const STREAMER: &str = "id = \"streamer\"\nmodel = \"stream/tokens\"\n";
const CHUNK: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"token \"}}]}\n\n";

/// What the load benchmark measured.
pub struct UnderLoad {
    /// Single spawns before the streams start, nanoseconds.
    pub idle_ns: Vec<u64>,
    /// Single spawns while they stream, nanoseconds.
    pub loaded_ns: Vec<u64>,
    /// Single spawns once the streaming sessions are stopped, nanoseconds.
    pub idle_after_ns: Vec<u64>,
    /// Streams open at the provider, the fewest seen while measuring.
    pub streaming_sessions: usize,
}

/// `spawns` single spawns idle, then `spawns` more while `streams` sessions stream, then
/// `spawns` more once those sessions are stopped.
pub async fn measure(spawns: usize, streams: usize, mut progress: impl FnMut(&str)) -> anyhow::Result<UnderLoad> {
    let server = StreamServer::start()?;
    let mut config = bench_config();
    config.limits.max_concurrent_model_calls = streams + 64;
    let mut providers = Providers::default();
    providers.insert("stream", Provider::new(Api::OpenAiCompletions, server.base_url(), Some("bench".into())));
    let http = HttpModelClient::new(providers, &config.limits)?;
    let (parked, calls) = ParkedModel::new();
    let mut agents = Agents::default();
    add_agents(&mut agents)?;
    agents.insert(agent::parse("streamer", STREAMER, |_: &str| Ok(String::new()))?);
    let model = Split { parked, http };
    let runtime = Runtime::start_with_model(&config, agents, Arc::new(model)).await?;
    let mut harness = SpawnHarness::on(runtime, calls).await?;
    let idle_ns = super::singles(&mut harness, spawns).await?;

    progress(&format!("{streams} sessions streaming"));
    let gateway = harness.runtime().gateway.clone();
    let streamer = |i: usize| SessionKey::from(format!("agent:streamer:s{i}").as_str());
    let starts = (0..streams)
        .map(|i| gateway.send(StartMain { session_key: Some(streamer(i)), ..StartMain::new("streamer", "stream") }));
    for started in futures_util::future::join_all(starts).await {
        started??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.active() < streams {
        if Instant::now() > deadline {
            anyhow::bail!("only {} of {streams} sessions began streaming within 60 s", server.active());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The parent alone is this harness's; the streaming sessions are others'.
    harness.keep_others(harness.runtime().stats.live_sessions().saturating_sub(1));
    let before = server.active();
    progress(&format!("{spawns} spawns under load"));
    let loaded_ns = super::singles(&mut harness, spawns).await?;
    let streaming_sessions = before.min(server.active());

    progress(&format!("{streams} streaming sessions stopped; {spawns} spawns idle again"));
    let kills = (0..streams).map(|i| gateway.send(Kill { caller: None, target: streamer(i) }));
    for killed in futures_util::future::join_all(kills).await {
        killed??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.active() > 0 || harness.runtime().stats.live_sessions() > 1 {
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} streams and {} sessions still open 60 s after the streaming sessions were stopped",
                server.active(),
                harness.runtime().stats.live_sessions()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness.keep_others(0);
    let idle_after_ns = super::singles(&mut harness, spawns).await?;
    harness.shutdown().await?;
    server.handle.stop(false).await;
    Ok(UnderLoad { idle_ns, loaded_ns, idle_after_ns, streaming_sessions })
}

/// `parked/*` models park (the spawn benchmark's), the rest go over HTTP.
struct Split {
    parked: ParkedModel,
    http: HttpModelClient,
}

impl ModelClient for Split {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, ModelError>> {
        match request.model.provider() {
            "parked" => self.parked.complete(request),
            _ => self.http.complete(request),
        }
    }

    fn check_model(&self, model: &ModelRef) -> Result<(), ModelError> {
        match model.provider() {
            "parked" => Ok(()),
            _ => self.http.check_model(model),
        }
    }
}

/// An OpenAI-compatible provider on loopback whose every answer streams forever.
struct StreamServer {
    addr: std::net::SocketAddr,
    active: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl StreamServer {
    fn start() -> anyhow::Result<StreamServer> {
        let active = Arc::new(AtomicUsize::new(0));
        let counted = active.clone();
        let server = HttpServer::new(move || {
            App::new().app_data(web::Data::new(counted.clone())).route("/chat/completions", web::post().to(stream))
        })
        .workers(1)
        .disable_signals()
        .backlog(4096)
        .max_connections(65_536)
        .bind(("127.0.0.1", 0))
        .context("cannot listen for the loopback provider")?;
        let addr = *server.addrs().first().context("the loopback provider bound no address")?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(StreamServer { addr, active, handle })
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// Counts a stream while its body lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn stream(active: web::Data<Arc<AtomicUsize>>) -> HttpResponse {
    active.fetch_add(1, Ordering::AcqRel);
    let open = Open(active.get_ref().clone());
    let body = futures_util::stream::unfold(open, |open| async move {
        tokio::time::sleep(CHUNK_EVERY).await;
        Some((Ok::<_, std::io::Error>(web::Bytes::from_static(CHUNK)), open))
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(body)
}
