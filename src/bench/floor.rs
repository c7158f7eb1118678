//! The floor: the same shape of work as a spawn with no hivegate code in it, measured in
//! the same run so every figure can be read as a ratio on whatever machine runs it.
//!
//! A raw actix actor stands in for the gateway: it takes a spawn message, starts a child
//! actor on its own arbiter and keeps its address (as the registry does), and answers
//! with an ack. The child notes, from its `started` hook, that it runs. One measured
//! spawn is request → child started → note → ack, on one session thread, like
//! [`super::spawn`]'s.

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
    let before = super::rss_bytes();
    burst(&starter, &mut notes, memory_sessions).await?;
    let after = super::rss_bytes();
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
