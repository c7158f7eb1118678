//! hivegate: an actor-based agent runtime. A main session (the "brain") plans on a strong
//! model and spawns subagent sessions (the "executors") that run on cheaper models.
//! Spawning is a message inside the process: the gateway narrows the parent's capability
//! and hands it to the child in that message. Nothing internal pairs, opens a socket or
//! asks for a scope upgrade.
//!
//! Supervision tree (one process):
//!
//! ```text
//! Gateway shards, one per session thread (arbiter), sharing the      gateway/
//!   registry, limits and capability authority; a tree lives on one   gateway/shards.rs
//! ├── Session actors, in a tree by spawn lineage                     session/
//! │     agent:<agentId>:main
//! │     agent:<agentId>:subagent:<uuid>                     (depth 1)
//! │     agent:<agentId>:subagent:<uuid>:subagent:<uuid>     (depth 2) ...
//! └── Model client: per-provider reqwest::Client, provider registry  model/
//! Hub (external side, system thread: pairing book, connections,      hub/
//!   node invokes)
//! ├── Connection actors, one per WebSocket (operator or node)        ws/
//! └── Store (its own thread): the only writer of SQLite; commits       store/
//!     the sessions' journal in groups, off the spawn path
//! HTTP server (actix-web, public port, a worker per thread):         http.rs
//!   WebSocket at /, /health,
//!   the dashboard's page at /ui (assets compiled in)                  ui/
//!   /metrics (Prometheus, behind the gateway token)                  telemetry/
//! Builtin provider (its own loopback listener, per-process secret)    model/server.rs
//! MCP servers (child processes or HTTP, shared, started on first use) tools/mcp.rs
//! With Postgres: the gateway's listener (ends of sessions on workers) worker/
//! ```
//!
//! A `hivegate worker` process runs the same tree of actors, recovers nothing, and
//! claims the sessions placed on workers from the shared database (`worker/`).
//!
//! Sessions never pair or open sockets: a subagent's capability arrives inside the spawn
//! message. Only programs outside the process go through `ws/` and `hub/`.
//!
//! Layout:
//! - `main.rs` / [`cli`]: parse the command line, run a command (`cli/live.rs`: the live
//!   tree `run` and `agent` draw on a terminal, pure; `cli/term.rs`: the terminal and
//!   Ctrl-C around it; `cli/doctor.rs`: the setup checks).
//! - [`config`]: raw TOML → validated [`config::Config`]; the only reader of the environment.
//! - [`scope`]: scopes and the one authorization table.
//! - [`capability`]: the only constructor of [`capability::Capability`]; `attenuate` narrows.
//! - [`gateway`]: the root actor, its messages, the registry, the spawn decision, what
//!   operators ask of it (`gateway/operator.rs`), its shards on every core and the
//!   handle that routes to them (`gateway/shards.rs`), and the
//!   broadcast of session events (`gateway/events.rs`).
//! - [`session`]: the session actor shell, its pure turn state machine, its tool
//!   dispatch (`session/tools.rs`: the session tools, and the gates every call passes).
//! - [`tools`]: the work tools: workspace confinement (`tools/workspace.rs`), the file
//!   tools (`tools/fs/`), `exec` (`tools/exec/`), and MCP servers through rmcp
//!   (`tools/mcp.rs`).
//! - [`model`]: the `ModelClient` seam and domain types; wire types per API kind
//!   (`model/openai/`, `model/anthropic/`, each with its stream decoder), the SSE driver
//!   (`model/stream.rs`), the retry decision (`model/retry.rs`), prices
//!   (`model/pricing.rs`), the builtin offline provider.
//! - [`agent`]: agent definitions (data in `agents/`).
//! - [`protocol`]: OpenClaw-compatible wire types only (serde, no actix, no I/O).
//! - [`pairing`]: device identity checks and the pairing book, a pure state machine.
//! - [`hub`]: the actor owning the pairing book, live connections and node invokes, and
//!   operators' runs as the OpenClaw CLI drives them (`hub/runs.rs`: `agent` with its two
//!   answers, `agent.wait`, aborts; `hub/live.rs`: runs shown live as `agent`/`chat`
//!   events; `hub/catalog.rs`: `chat.history`, `agents.list`, `models.list`).
//! - [`ui`]: the dashboard at `/ui`, a static page compiled in that speaks the operator
//!   protocol over the gateway's own WebSocket (live session tree, kill, steer, pairing).
//! - [`ws`]: the WebSocket byte streams (frame limits, output limits) and the
//!   connection actor; the only module that speaks WebSocket.
//! - [`store`]: the Store (a writer thread behind a channel), the [`store::Backend`]
//!   trait with its SQLite default (`store/sqlite.rs`) and Postgres (`store/postgres.rs`,
//!   migrations in `migrations/postgres/`), the records the runtime journals,
//!   and recovery decisions as pure functions (`store/recovery.rs`); the gateway performs
//!   them at start (`gateway/recover.rs`).
//! - [`client`]: the operator WebSocket client behind `hivegate devices`, `nodes`, `agent`,
//!   `sessions` and `runs`.
//! - [`worker`]: sessions on other machines: the signed spawn a worker runs
//!   (`worker/token.rs`), the Postgres work queue (`worker/queue.rs`), a worker's claimer
//!   and the gateway's listener (threads with their own connections); the gateway's
//!   side of it is `gateway/remote.rs`, the command `cli/worker.rs`.
//! - [`runtime`]: starts the HTTP server, model client, store, gateway and hub together,
//!   as a gateway or as a worker ([`runtime::Role`]).
//! - [`report`]: the session tree and latency figures printed by `demo` and `run`.
//! - [`bench`]: the benchmark harnesses shared by `hivegate bench` and `benches/`: spawns,
//!   bursts and trees, raw actix's floor beside them, handshakes, spawns under load.
//! - [`memory`]: the allocator (mimalloc), the process's pages (no transparent huge
//!   pages: `main` turns them off), and session threads handing back what others freed.
//! - [`telemetry`]: logging setup, the Prometheus series behind `/metrics`, and
//!   OpenTelemetry GenAI spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_*` asks.

pub mod agent;
pub mod bench;
pub mod capability;
pub mod cli;
pub mod client;
pub mod config;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod keys;
pub mod memory;
pub mod model;
pub mod pairing;
pub mod protocol;
pub mod report;
pub mod runtime;
pub mod scope;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod ui;
pub mod worker;
pub mod ws;
