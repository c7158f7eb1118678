//! The floor: the same shape of work as a spawn, and as a handshake, with no hivegate
//! code in it, measured in the same run so every figure can be read as a ratio on
//! whatever machine runs it.
//!
//! **Spawns.** A raw actix actor stands in for the gateway: it takes a spawn message, starts a child
//! actor on its own arbiter and keeps its address (as the registry does), and answers
//! with an ack. The child notes, from its `started` hook, that it runs. One measured
//! spawn is request → child started → note → ack, on one session thread, like
//! [`super::spawn`]'s.
//!
//! **Handshakes** ([`handshakes`]). A raw actix-web server with as many workers as the
//! gateway's, speaking WebSocket with actix-http's codec: at the upgrade it queues a
//! first text frame (as the gateway queues its challenge), and it answers each text
//! frame with one. The handshake harness's own client, on its own thread, connects,
//! upgrades, reads the first frame, sends one and reads the answer. What the gateway
//! adds on top is the protocol: the client's signature, its verification, the pairing
//! decision, and the frames' JSON.

use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};

/// The stand-in gateway.
struct Starter {
    noted: mpsc::UnboundedSender<()>,
    children: Vec<Addr<Child>>,
}

impl Actor for Starter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
    }
}

struct Child {
    noted: mpsc::UnboundedSender<()>,
}

impl Actor for Child {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        let _ = self.noted.send(());
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct StartChild;

impl Handler<StartChild> for Starter {
    type Result = usize;

    fn handle(&mut self, _: StartChild, _: &mut Self::Context) -> usize {
        self.children.push(Child { noted: self.noted.clone() }.start());
        self.children.len()
    }
}

/// Let every child go.
#[derive(Message)]
#[rtype(result = "()")]
struct Clear;

impl Handler<Clear> for Starter {
    type Result = ();

    fn handle(&mut self, _: Clear, _: &mut Self::Context) {
        self.children = Vec::new();
    }
}

/// What the floor measured.
pub struct Floor {
    /// Single spawn-and-ack latencies, nanoseconds.
    pub singles_ns: Vec<u64>,
    pub burst_10k: Duration,
    /// RSS per parked child over a burst of `memory_sessions`, when /proc tells.
    pub bytes_per_session: Option<f64>,
}

/// Measure on a fresh arbiter: the memory of a burst of `memory_sessions`, then
/// `singles` spawns one after another (children let go every 1,000, as the spawn
/// benchmark resets), and a burst of 10,000.
pub async fn measure(singles: usize, memory_sessions: usize) -> anyhow::Result<Floor> {
    let arbiter = Arbiter::new();
    let (done, result) = oneshot::channel();
    arbiter.spawn(async move {
        let _ = done.send(run(singles, memory_sessions).await);
    });
    let floor = result.await.context("the floor's thread stopped")?;
    arbiter.stop();
    floor
}

async fn run(singles: usize, memory_sessions: usize) -> anyhow::Result<Floor> {
    let (noted, mut notes) = mpsc::unbounded_channel();
    let starter = Starter { noted, children: Vec::new() }.start();
    // Memory first: a later burst no larger than the 10,000 one would reuse what that
    // one freed and show almost no growth.
    let before = crate::memory::resident_bytes();
    burst(&starter, &mut notes, memory_sessions).await?;
    let after = crate::memory::resident_bytes();
    starter.send(Clear).await?;
    let mut singles_ns = Vec::with_capacity(singles);
    for i in 0..singles {
        if i > 0 && i % 1000 == 0 {
            starter.send(Clear).await?;
        }
        let started = Instant::now();
        starter.send(StartChild).await?;
        notes.recv().await.context("a child never ran")?;
        singles_ns.push(started.elapsed().as_nanos() as u64);
    }
    starter.send(Clear).await?;
    let burst_10k = burst(&starter, &mut notes, 10_000).await?;
    starter.send(Clear).await?;
    Ok(Floor { singles_ns, burst_10k, bytes_per_session: super::per_session(before, after, memory_sessions) })
}

async fn burst(starter: &Addr<Starter>, notes: &mut mpsc::UnboundedReceiver<()>, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let pending: Vec<_> = (0..n).map(|_| starter.send(StartChild)).collect();
    for ack in pending {
        ack.await?;
    }
    for _ in 0..n {
        notes.recv().await.context("a child never ran")?;
    }
    Ok(started.elapsed())
}

/// The handshake floor's figures.
pub struct HandshakeFloor {
    pub singles: Vec<Duration>,
    pub concurrent: Duration,
}

/// `singles` handshakes one after another, then `concurrent` at once, against a raw
/// actix-web WebSocket server with `workers` workers.
pub async fn handshakes(workers: usize, singles: usize, concurrent: usize) -> anyhow::Result<HandshakeFloor> {
    let server = actix_web::HttpServer::new(|| actix_web::App::new().route("/", actix_web::web::get().to(echo)))
        .workers(workers.max(1))
        .disable_signals()
        .backlog(4096)
        .client_disconnect_timeout(Duration::ZERO)
        .bind(("127.0.0.1", 0))
        .context("cannot listen for the handshake floor")?;
    let addr = *server.addrs().first().context("the handshake floor bound no address")?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let client = RawClient(format!("ws://{addr}/"));
    let measured = async {
        let singles = super::handshake::sequential(client.clone(), singles).await?;
        let concurrent = super::handshake::concurrent(client, concurrent).await?;
        anyhow::Ok(HandshakeFloor { singles, concurrent })
    }
    .await;
    handle.stop(false).await;
    measured
}

/// The floor's client: the handshake's exchange with an empty JSON object each way.
#[derive(Clone)]
struct RawClient(String);

impl super::handshake::Client for RawClient {
    async fn handshake(&self) -> anyhow::Result<Duration> {
        let (answer, took) = super::handshake::exchange(&self.0, |_| Ok("{}".to_string())).await?;
        anyhow::ensure!(answer == serde_json::json!({}), "the floor answered {answer}");
        Ok(took)
    }
}

/// The floor's WebSocket endpoint: a first frame queued at the upgrade, then one text
/// frame for each text frame received, until the client closes.
async fn echo(req: actix_web::HttpRequest, mut payload: actix_web::web::Payload) -> actix_web::HttpResponse {
    use actix_http::ws::{hash_key, Codec, Frame, Message};
    use bytes::BytesMut;
    use futures_util::StreamExt;
    use tokio_util::codec::{Decoder, Encoder};

    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return actix_web::HttpResponse::from_error(e);
    }
    let key = req.headers().get(actix_web::http::header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
    let accept = hash_key(key);
    let (out, body) = mpsc::unbounded_channel::<Result<bytes::Bytes, actix_web::Error>>();
    let mut codec = Codec::new();
    let send = move |codec: &mut Codec, message: Message| {
        let mut buf = BytesMut::new();
        codec.encode(message, &mut buf).is_ok() && out.send(Ok(buf.freeze())).is_ok()
    };
    send(&mut codec, Message::Text("{}".into()));
    actix_rt::spawn(async move {
        let mut read = BytesMut::new();
        while let Some(Ok(chunk)) = payload.next().await {
            read.extend_from_slice(&chunk);
            while let Ok(Some(frame)) = codec.decode(&mut read) {
                let message = match frame {
                    Frame::Text(_) => Message::Text("{}".into()),
                    Frame::Close(reason) => {
                        send(&mut codec, Message::Close(reason));
                        return;
                    }
                    _ => continue,
                };
                if !send(&mut codec, message) {
                    return;
                }
            }
        }
    });
    let body = futures_util::stream::unfold(body, |mut body| async move { body.recv().await.map(|b| (b, body)) });
    let mut response = actix_web::HttpResponse::build(actix_web::http::StatusCode::SWITCHING_PROTOCOLS);
    response.upgrade("websocket");
    if let Ok(value) = actix_web::http::header::HeaderValue::from_bytes(&accept) {
        response.insert_header((actix_web::http::header::SEC_WEBSOCKET_ACCEPT, value));
    }
    response.streaming(body)
}
