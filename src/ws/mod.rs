//! The WebSocket endpoint (`GET /` on the gateway's HTTP port): the upgrade checks and
//! the per-socket [`connection::Connection`] actor. This is the only module that imports
//! actix-web-actors.
//!
//! At the upgrade, before any frame: a browser `Origin` not in the allowlist is refused
//! with 403, and the peer is classified. A loopback socket is `DirectLoopback` only when
//! it carries no Forwarded / X-Forwarded-* / X-Real-IP header; a proxy on the same
//! machine must not make remote clients look local.

pub mod connection;

use std::sync::atomic::{AtomicU64, Ordering};

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use crate::hub::auth::Peer;
use crate::hub::Hub;
use crate::pairing::Locality;
use crate::protocol::DEFAULT_MAX_PAYLOAD_BYTES;
use connection::Connection;

/// What the upgrade handler needs; shared by the HTTP workers.
#[derive(Clone)]
pub struct WsState {
    pub hub: Addr<Hub>,
    pub allowed_origins: Vec<String>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

const FORWARDING_HEADERS: [&str; 5] =
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"];

/// Classify the peer of an upgrade request. `None` when the peer address is unknown.
pub fn classify(req: &HttpRequest) -> Option<Peer> {
    let ip = req.peer_addr()?.ip();
    let forwarded = FORWARDING_HEADERS.iter().any(|h| req.headers().contains_key(*h));
    let locality = if ip.is_loopback() && !forwarded { Locality::DirectLoopback } else { Locality::Remote };
    Some(Peer { ip, locality, browser: req.headers().contains_key("origin") })
}

/// `GET /`: refuse foreign origins, then upgrade.
pub async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<crate::http::HttpStateSlot>,
) -> HttpResponse {
    let Some(ws_state) = state.ws() else {
        return HttpResponse::ServiceUnavailable().body("the gateway is starting");
    };
    if let Some(origin) = req.headers().get("origin") {
        let origin = origin.to_str().unwrap_or_default();
        if !ws_state.allowed_origins.iter().any(|allowed| allowed == origin) {
            tracing::warn!(origin, "websocket refused: origin not allowed");
            return HttpResponse::Forbidden().body("origin not allowed");
        }
    }
    let Some(peer) = classify(&req) else {
        return HttpResponse::BadRequest().body("unknown peer address");
    };
    let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let actor = Connection::new(conn_id, ws_state.hub.clone(), peer);
    ws::WsResponseBuilder::new(actor, &req, stream)
        .frame_size(DEFAULT_MAX_PAYLOAD_BYTES as usize)
        .start()
        .unwrap_or_else(HttpResponse::from_error)
}
