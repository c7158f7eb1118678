//! One WebSocket connection: framing, the handshake timer, per-connection `seq`, ticks
//! and pings. Decisions belong elsewhere: frames are parsed by `protocol`, the connect
//! is decided by the hub (pairing book, rate limits), and every request is checked
//! against the one authorization table before the hub sees it.
//!
//! Phases: the server speaks first (`connect.challenge`); the first frame must be a
//! `connect` (pre-auth frames capped at 64 KiB, close 1009 above); no connect within
//! [`HANDSHAKE_TIMEOUT`] closes 1000 "handshake timeout". A refused connect gets its
//! error response, then the close the refusal names. After hello-ok, a bad frame gets
//! `INVALID_REQUEST` and the socket stays open.

use std::time::Duration;

use actix::prelude::*;
use actix_web_actors::ws;
use serde_json::Value;

use crate::hub::auth::Peer;
use crate::hub::{now_ms, Call, Connect, Disconnected, Hub, Outbound};
use crate::protocol::{
    negotiate_protocol, parse_client_frame, parse_connect_frame, ChallengePayload, Close, ErrorShape, EventFrame,
    Frame, ResponseFrame, Role, TickPayload, DEFAULT_TICK_INTERVAL_MS,
};
use crate::scope::{authorize, Denied, ScopeSet};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const PING_INTERVAL: Duration = Duration::from_secs(25);

enum Phase {
    AwaitingConnect,
    Authenticating,
    Ready { role: Role, scopes: ScopeSet },
    Closing,
}

pub struct Connection {
    conn_id: u64,
    hub: Addr<Hub>,
    peer: Peer,
    nonce: String,
    phase: Phase,
    seq: u64,
}

impl Connection {
    pub fn new(conn_id: u64, hub: Addr<Hub>, peer: Peer) -> Connection {
        Connection {
            conn_id,
            hub,
            peer,
            nonce: uuid::Uuid::new_v4().to_string(),
            phase: Phase::AwaitingConnect,
            seq: 0,
        }
    }

    fn send(&self, frame: Frame, ctx: &mut ws::WebsocketContext<Self>) {
        match frame.encode() {
            Ok(text) => ctx.text(text),
            Err(e) => tracing::error!(conn = self.conn_id, error = %e, "cannot encode frame"),
        }
    }

    fn respond(&self, id: &str, reply: Result<Value, ErrorShape>, ctx: &mut ws::WebsocketContext<Self>) {
        let frame = match reply {
            Ok(payload) => ResponseFrame::success(id, payload),
            Err(error) => ResponseFrame::failure(id, error),
        };
        self.send(Frame::Response(frame), ctx);
    }

    fn event(&mut self, frame: EventFrame, broadcast: bool, ctx: &mut ws::WebsocketContext<Self>) {
        let frame = if broadcast {
            self.seq += 1;
            frame.with_seq(self.seq)
        } else {
            frame
        };
        self.send(Frame::Event(frame), ctx);
    }

    fn close(&mut self, close: Close, ctx: &mut ws::WebsocketContext<Self>) {
        if matches!(self.phase, Phase::Closing) {
            return;
        }
        self.phase = Phase::Closing;
        ctx.close(Some(ws::CloseReason { code: ws::CloseCode::from(close.code), description: Some(close.reason) }));
        ctx.stop();
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match self.phase {
            Phase::AwaitingConnect => self.on_connect(text, ctx),
            Phase::Authenticating => {
                let id = parse_client_frame(text).map(|r| r.id).unwrap_or_default();
                self.respond(&id, Err(ErrorShape::invalid_request("wait for hello-ok before sending requests")), ctx);
            }
            Phase::Ready { role, scopes } => self.on_request(text, role, scopes, ctx),
            Phase::Closing => {}
        }
    }

    fn on_connect(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let request = match parse_connect_frame(text) {
            Ok(request) => request,
            Err(e) => {
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
                    self.respond(&request.id, Err(e.to_error_shape()), ctx);
                    return self.close(e.close(), ctx);
                }
            };
        self.phase = Phase::Authenticating;
        let id = request.id;
        let connect = Connect {
            conn_id: self.conn_id,
            params: request.params,
            nonce: self.nonce.clone(),
            peer: self.peer.clone(),
            protocol,
            outbox: ctx.address().recipient(),
        };
        ctx.wait(self.hub.send(connect).into_actor(self).map(move |result, act, ctx| match result {
            Ok(Ok(hello)) => {
                match ResponseFrame::success_with(&id, &hello.payload) {
                    Ok(frame) => act.send(Frame::Response(frame), ctx),
                    Err(e) => return act.close(e.close(), ctx),
                }
                act.phase = Phase::Ready { role: hello.role, scopes: hello.scopes };
                act.start_keepalive(ctx);
            }
            Ok(Err(refusal)) => {
                act.respond(&id, Err(*refusal.error), ctx);
                act.close(refusal.close, ctx);
            }
            Err(_) => act.close(Close::internal_error(), ctx),
        }));
    }

    fn on_request(&mut self, text: &str, role: Role, scopes: ScopeSet, ctx: &mut ws::WebsocketContext<Self>) {
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
        if let Err(denied) = authorize(scopes, role == Role::Node, &request.method) {
            let error = match denied {
                Denied::MissingScope(scope) => ErrorShape::missing_scope(scope.as_str()),
                Denied::NodeRoleRequired => ErrorShape::invalid_request(denied.to_string()),
            };
            return self.respond(&request.id, Err(error), ctx);
        }
        let call = Call {
            conn_id: self.conn_id,
            method: request.method,
            params: request.params.unwrap_or_else(|| Value::Object(Default::default())),
        };
        let id = request.id;
        ctx.spawn(self.hub.send(call).into_actor(self).map(move |result, act, ctx| {
            let reply = result.unwrap_or_else(|_| Err(ErrorShape::new("UNAVAILABLE", "the gateway is stopping")));
            act.respond(&id, reply, ctx);
        }));
    }

    fn start_keepalive(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.run_interval(Duration::from_millis(DEFAULT_TICK_INTERVAL_MS), |act, ctx| {
            if let Ok(frame) = EventFrame::from_payload(&TickPayload { ts: now_ms() }) {
                act.event(frame, true, ctx);
            }
        });
        ctx.run_interval(PING_INTERVAL, |_, ctx| ctx.ping(b""));
    }
}

impl Actor for Connection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let challenge = ChallengePayload { nonce: self.nonce.clone(), ts: now_ms(), capabilities: None };
        match EventFrame::from_payload(&challenge) {
            Ok(frame) => self.event(frame, false, ctx),
            Err(_) => return self.close(Close::internal_error(), ctx),
        }
        ctx.run_later(HANDSHAKE_TIMEOUT, |act, ctx| {
            if matches!(act.phase, Phase::AwaitingConnect | Phase::Authenticating) {
                act.close(Close::handshake_timeout(), ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.hub.do_send(Disconnected { conn_id: self.conn_id });
    }
}

impl Handler<Outbound> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Event { frame, broadcast } => {
                if matches!(self.phase, Phase::Ready { .. }) {
                    self.event(frame, broadcast, ctx);
                }
            }
            Outbound::Close(close) => self.close(close, ctx),
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Connection {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Close(reason)) => {
                // Echo the client's close (an empty one too), then stop.
                self.phase = Phase::Closing;
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Binary(_)) => self.close(Close::new(1003, "binary frames are not supported"), ctx),
            Ok(ws::Message::Continuation(_)) => {
                self.close(Close::new(1003, "fragmented messages are not supported; send one text frame"), ctx)
            }
            Ok(ws::Message::Pong(_) | ws::Message::Nop) => {}
            Err(ws::ProtocolError::Overflow) => self.close(Close::new(1009, "frame too large"), ctx),
            Err(e) => {
                tracing::debug!(conn = self.conn_id, error = %e, "websocket protocol error");
                self.close(Close::new(1002, "websocket protocol error"), ctx);
            }
        }
    }
}
