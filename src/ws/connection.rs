//! One WebSocket connection: framing, the handshake timer, per-connection `seq`, ticks
//! and pings. Decisions belong elsewhere: frames are parsed by `protocol`, the connect
//! is decided by the hub's door (pairing book, rate limits; [`crate::hub::door`]) on this
//! socket's own thread, and every request is authorized by the hub against the
//! connection's live grant. The hub hears of a connect only to take the connection in,
//! or to save first what the decision changed.
//!
//! Phases: the server speaks first (`connect.challenge`); the first frame must be a
//! `connect` (pre-auth frames are capped at 64 KiB while they are read, close 1009
//! above); no connect within [`HANDSHAKE_TIMEOUT`] closes 1000 "handshake timeout". A
//! refused connect gets its error response, then the close the refusal names. After
//! hello-ok the frame limit becomes `maxPayload` and the connection gives back its
//! pre-auth place ([`super::gate`]); a bad frame gets `INVALID_REQUEST` and the socket
//! stays open. Output that the peer does not read piles up to `maxBufferedBytes`, then
//! the socket closes 1008 "slow consumer" ([`super::socket`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{CloseReason, Frame, Message, ProtocolError};
use serde_json::Value;

use super::gate::PreAuth;
use super::socket::{FrameLimit, Writer};
use crate::hub::auth::Peer;
use crate::hub::door::{ConnectRequest, Decision, Door};
use crate::hub::{now_ms, Admit, Call, Disconnected, Hello, Hub, Outbound, Settle};
use crate::protocol::{
    close_reasons, negotiate_protocol, parse_client_frame, parse_connect_frame, ChallengePayload, Close, ErrorShape,
    EventFrame, Frame as WireFrame, ResponseFrame, TickPayload, DEFAULT_TICK_INTERVAL_MS, MAX_PREAUTH_PAYLOAD_BYTES,
};
use crate::telemetry::{Handshake, OpenSocket};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

enum Phase {
    AwaitingConnect,
    Authenticating,
    Ready,
    Closing,
}

/// What a connection is given at the upgrade.
pub struct ConnectionInit {
    pub conn_id: u64,
    pub hub: Addr<Hub>,
    pub door: Arc<Door>,
    pub peer: Peer,
    pub writer: Writer,
    pub limit: FrameLimit,
    /// The frame limit after hello-ok (`maxPayload`).
    pub max_payload: usize,
    pub preauth: PreAuth,
    /// Counts this socket as open until the actor goes.
    pub open: OpenSocket,
}

/// Requests one connection may have unanswered at once. Each can park work on the hub
/// for minutes (an `agent.wait`, a `node.invoke`), so beyond this a request is refused
/// at once, retryable, instead of queued without bound.
pub const MAX_IN_FLIGHT: usize = 256;

pub struct Connection {
    conn_id: u64,
    hub: Addr<Hub>,
    door: Arc<Door>,
    peer: Peer,
    nonce: String,
    phase: Phase,
    seq: u64,
    writer: Writer,
    limit: FrameLimit,
    max_payload: usize,
    preauth: Option<PreAuth>,
    open: OpenSocket,
    /// Requests the hub has not answered yet, with the later answers to the same id
    /// that arrived first (an `agent` run that ended before its accepted ack reached
    /// this actor): they go out after the first answer, in order.
    answering: HashMap<String, Vec<Result<Value, ErrorShape>>>,
}

impl Connection {
    pub fn new(init: ConnectionInit) -> Connection {
        Connection {
            conn_id: init.conn_id,
            hub: init.hub,
            door: init.door,
            peer: init.peer,
            nonce: uuid::Uuid::new_v4().to_string(),
            phase: Phase::AwaitingConnect,
            seq: 0,
            writer: init.writer,
            limit: init.limit,
            max_payload: init.max_payload,
            preauth: Some(init.preauth),
            open: init.open,
            answering: HashMap::new(),
        }
    }

    /// The server speaks first: the challenge is queued as the actor is made, inside the
    /// upgrade handler, so it leaves in the same write as the 101 response (queued from
    /// `started`, it went in a second segment and cost the peer a second wake-up).
    pub fn greet(&mut self, ctx: &mut Context<Self>) {
        let challenge = ChallengePayload { nonce: self.nonce.clone(), ts: now_ms(), capabilities: None };
        match EventFrame::from_payload(&challenge) {
            Ok(frame) => self.event(frame, false, ctx),
            Err(_) => self.close(Close::internal_error(), ctx),
        }
    }

    /// Queue a message; a peer that lets more than `maxBufferedBytes` pile up is closed.
    fn write(&mut self, message: Message, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        if let Err(slow) = self.writer.send(message) {
            tracing::warn!(conn = self.conn_id, buffered = slow.buffered, "closing a slow consumer");
            self.phase = Phase::Closing;
            self.writer.abort(Close::policy(close_reasons::SLOW_CONSUMER).code, close_reasons::SLOW_CONSUMER);
            ctx.stop();
        }
    }

    fn send(&mut self, frame: WireFrame, ctx: &mut Context<Self>) {
        match frame.encode() {
            Ok(text) => self.write(Message::Text(text.into()), ctx),
            Err(e) => tracing::error!(conn = self.conn_id, error = %e, "cannot encode frame"),
        }
    }

    fn respond(&mut self, id: &str, reply: Result<Value, ErrorShape>, ctx: &mut Context<Self>) {
        let frame = match reply {
            Ok(payload) => ResponseFrame::success(id, payload),
            Err(error) => ResponseFrame::failure(id, error),
        };
        self.send(WireFrame::Response(frame), ctx);
    }

    fn event(&mut self, frame: EventFrame, broadcast: bool, ctx: &mut Context<Self>) {
        let frame = if broadcast {
            self.seq += 1;
            frame.with_seq(self.seq)
        } else {
            frame
        };
        self.send(WireFrame::Event(frame), ctx);
    }

    fn close(&mut self, close: Close, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        self.phase = Phase::Closing;
        self.writer.close(close.code, &close.reason);
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::AwaitingConnect => self.on_connect(text, ctx),
            Phase::Authenticating => {
                let id = parse_client_frame(text).map(|r| r.id).unwrap_or_default();
                self.respond(&id, Err(ErrorShape::invalid_request("wait for hello-ok before sending requests")), ctx);
            }
            Phase::Ready => self.on_request(text, ctx),
            Phase::Closing => {}
        }
    }

    fn on_connect(&mut self, text: &str, ctx: &mut Context<Self>) {
        let request = match parse_connect_frame(text) {
            Ok(request) => request,
            Err(e) => {
                self.open.handshake(Handshake::Invalid);
                if let Some(id) = e.request_id() {
                    self.respond(id, Err(e.to_error_shape()), ctx);
                }
                return self.close(e.close(), ctx);
            }
        };
        let protocol =
            match negotiate_protocol(request.params.min_protocol, request.params.max_protocol, request.params.role) {
                Ok(protocol) => protocol,
                Err(e) => {
                    self.open.handshake(Handshake::Invalid);
                    self.respond(&request.id, Err(e.to_error_shape()), ctx);
                    return self.close(e.close(), ctx);
                }
            };
        self.phase = Phase::Authenticating;
        let id = request.id;
        // The signature is checked here, on this socket's worker thread, so a thousand
        // sockets connecting at once are not checked one by one on the hub's.
        let verified = request
            .params
            .device
            .as_ref()
            .map(|_| crate::pairing::verify_device(&request.params, &self.nonce, crate::hub::now_ms()));
        let decision = self.door.decide(ConnectRequest {
            conn_id: self.conn_id,
            params: request.params,
            verified,
            peer: self.peer.clone(),
            protocol,
            outbox: ctx.address().recipient(),
        });
        match decision {
            Decision::Admit(entry, hello) => {
                // Queued at the hub before hello-ok is written: the hub takes the
                // connection in before any request it makes (one sender's messages
                // arrive in order), and before anything another connection does once
                // this client has read hello-ok (a `node.list` that must show it, a
                // revocation that must find it). Told after hello-ok, the client gained
                // nothing measurable and lost that second guarantee.
                self.hub.do_send(Admit(entry));
                self.hello(&id, hello, ctx);
            }
            Decision::Refuse(refusal) => {
                self.respond(&id, Err(*refusal.error), ctx);
                self.close(refusal.close, ctx);
            }
            Decision::Save(pending) => {
                ctx.wait(self.hub.send(Settle(pending)).into_actor(self).map(move |result, act, ctx| match result {
                    Ok(Ok(hello)) => act.hello(&id, hello, ctx),
                    Ok(Err(refusal)) => {
                        act.respond(&id, Err(*refusal.error), ctx);
                        act.close(refusal.close, ctx);
                    }
                    Err(_) => act.close(Close::internal_error(), ctx),
                }));
            }
        }
    }

    /// Accepted: hello-ok, then the post-auth frame limit and the keepalive.
    fn hello(&mut self, id: &str, hello: Hello, ctx: &mut Context<Self>) {
        match ResponseFrame::encode_success(id, &hello.payload) {
            Ok(text) => self.write(Message::Text(text.into()), ctx),
            Err(e) => return self.close(e.close(), ctx),
        }
        self.phase = Phase::Ready;
        self.limit.set(self.max_payload);
        self.preauth = None;
        self.start_keepalive(ctx);
    }

    fn on_request(&mut self, text: &str, ctx: &mut Context<Self>) {
        let request = match parse_client_frame(text) {
            Ok(request) => request,
            Err(e) => {
                let id = e.request_id().unwrap_or_default().to_string();
                return self.respond(&id, Err(e.to_error_shape()), ctx);
            }
        };
        if request.method == "connect" {
            return self.respond(&request.id, Err(ErrorShape::invalid_request("already connected")), ctx);
        }
        if self.answering.len() >= MAX_IN_FLIGHT {
            let error = ErrorShape::new(
                crate::protocol::error_codes::UNAVAILABLE,
                format!("{MAX_IN_FLIGHT} requests on this connection are unanswered; wait for their answers"),
            );
            return self.respond(&request.id, Err(error.with_retryable(true)), ctx);
        }
        let call = Call {
            conn_id: self.conn_id,
            request_id: request.id.clone(),
            method: request.method,
            params: request.params.unwrap_or_else(|| Value::Object(Default::default())),
        };
        let id = request.id;
        self.answering.insert(id.clone(), Vec::new());
        ctx.spawn(self.hub.send(call).into_actor(self).map(move |result, act, ctx| {
            let reply = result.unwrap_or_else(|_| Err(ErrorShape::new("UNAVAILABLE", "the gateway is stopping")));
            act.respond(&id, reply, ctx);
            for later in act.answering.remove(&id).unwrap_or_default() {
                act.respond(&id, later, ctx);
            }
        }));
    }

    fn start_keepalive(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(DEFAULT_TICK_INTERVAL_MS), |act, ctx| {
            if let Ok(frame) = EventFrame::from_payload(&TickPayload { ts: now_ms() }) {
                act.event(frame, true, ctx);
            }
        });
        ctx.run_interval(PING_INTERVAL, |act, ctx| act.write(Message::Ping(bytes::Bytes::new()), ctx));
    }

    fn on_frame_error(&mut self, error: ProtocolError, ctx: &mut Context<Self>) {
        match error {
            ProtocolError::Overflow if self.preauth.is_some() => self.close(Close::preauth_too_large(), ctx),
            ProtocolError::Overflow => self.close(Close::new(1009, "frame too large"), ctx),
            e => {
                tracing::debug!(conn = self.conn_id, error = %e, "websocket protocol error");
                self.close(Close::new(1002, "websocket protocol error"), ctx);
            }
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_later(HANDSHAKE_TIMEOUT, |act, ctx| {
            if matches!(act.phase, Phase::AwaitingConnect | Phase::Authenticating) {
                act.open.handshake(Handshake::Timeout);
                act.close(Close::handshake_timeout(), ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // A socket that goes away without a close of ours still ends its output.
        self.writer.close_with(None);
        self.hub.do_send(Disconnected { conn_id: self.conn_id });
    }
}

impl Handler<Outbound> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Event { frame, broadcast } => {
                if matches!(self.phase, Phase::Ready) {
                    self.event(frame, broadcast, ctx);
                }
            }
            Outbound::Close(close) => self.close(close, ctx),
            Outbound::Response { id, reply } => {
                if let Some(later) = self.answering.get_mut(&id) {
                    later.push(reply);
                } else if matches!(self.phase, Phase::Ready) {
                    self.respond(&id, reply, ctx);
                }
            }
        }
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<Frame, ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(Frame::Text(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.close(Close::new(1007, "text frame is not valid utf-8"), ctx),
            },
            Ok(Frame::Ping(payload)) => self.write(Message::Pong(payload), ctx),
            Ok(Frame::Close(reason)) => {
                // Echo the client's close (an empty one too), then stop.
                self.phase = Phase::Closing;
                self.writer.close_with(reason.map(|r| CloseReason { code: r.code, description: r.description }));
                ctx.stop();
            }
            Ok(Frame::Binary(_)) => self.close(Close::new(1003, "binary frames are not supported"), ctx),
            Ok(Frame::Continuation(_)) => {
                self.close(Close::new(1003, "fragmented messages are not supported; send one text frame"), ctx)
            }
            Ok(Frame::Pong(_)) => {}
            Err(e) => self.on_frame_error(e, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The pre-auth frame limit, as the codec sees it.
pub const PREAUTH_FRAME_LIMIT: usize = MAX_PREAUTH_PAYLOAD_BYTES;
