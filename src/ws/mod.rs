//! The WebSocket endpoint (`GET /` on the gateway's HTTP port): the upgrade checks, the
//! byte streams ([`socket`], on actix-http's frame codec) and the per-socket
//! [`connection::Connection`] actor. This is the only module that speaks WebSocket.
//!
//! At the upgrade, before any frame: a browser `Origin` is refused with 403 unless it is
//! in the allowlist or is the gateway's own origin (the dashboard at `/ui`, see
//! [`origin_allowed`]), and the peer is classified. A loopback socket is `DirectLoopback` only when
//! it carries no Forwarded / X-Forwarded-* / X-Real-IP header; a proxy on the same
//! machine must not make remote clients look local. A socket past the caps on
//! unauthenticated connections ([`gate`]) is closed at once with 1013.

pub mod connection;
pub mod gate;
pub mod socket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::hub::auth::Peer;
use crate::hub::door::Door;
use crate::hub::Hub;
use crate::pairing::Locality;
use connection::{Connection, ConnectionInit, PREAUTH_FRAME_LIMIT};
use gate::PreAuthGate;
use socket::{FrameLimit, Frames, Writer};

/// What the upgrade handler needs; shared by the HTTP workers.
#[derive(Clone)]
pub struct WsState {
    pub hub: Addr<Hub>,
    /// Where a connect is decided, on the socket's own thread.
    pub door: Arc<Door>,
    pub allowed_origins: Vec<String>,
    pub gate: PreAuthGate,
    /// The frame limit after hello-ok (`policy.maxPayload`).
    pub max_payload: usize,
    /// Output waiting for a peer beyond this closes it (`policy.maxBufferedBytes`).
    pub max_buffered: usize,
    /// Open sockets and handshake outcomes, as `/metrics` shows them.
    pub sockets: crate::telemetry::SocketMetrics,
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

/// Whether a browser `Origin` may open the WebSocket: one in the allowlist, or the
/// gateway's own origin, as the dashboard page it served at `/ui` sends. Its own origin
/// is recognized when the Origin names the very host and port the request was sent to
/// (`Host`) and that host is an IP address or `localhost`: a DNS name could be made to
/// point at this address by a foreign page (DNS rebinding), so a gateway reached by
/// name needs that name in the allowlist. Being allowed to open the socket grants
/// nothing: the connect still needs the token ([`crate::hub::auth`]).
pub fn origin_allowed(origin: &str, host: Option<&str>, allowlist: &[String]) -> bool {
    if allowlist.iter().any(|allowed| allowed == origin) {
        return true;
    }
    let Some(host) = host else { return false };
    let Ok(parsed) = url::Url::parse(origin) else { return false };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != "/" || parsed.query().is_some() {
        return false;
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    let Some(name) = parsed.host_str() else { return false };
    let authority = match parsed.port() {
        Some(port) => format!("{name}:{port}"),
        None => name.to_string(),
    };
    literal && authority.eq_ignore_ascii_case(host)
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
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin_allowed(origin, host, &ws_state.allowed_origins) {
            tracing::warn!(origin = %crate::protocol::clip(origin), "websocket refused: origin not allowed");
            return HttpResponse::Forbidden().body("origin not allowed");
        }
    }
    let Some(peer) = classify(&req) else {
        return HttpResponse::BadRequest().body("unknown peer address");
    };
    if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
        return HttpResponse::from_error(e);
    }
    let (mut writer, body) = Writer::new(ws_state.max_buffered);
    let response = switching_protocols(&req).streaming(body);
    match ws_state.gate.enter(peer.ip) {
        Ok(preauth) => {
            let limit = FrameLimit::new(PREAUTH_FRAME_LIMIT);
            let frames = Frames::new(stream, limit.clone());
            let init = ConnectionInit {
                conn_id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
                hub: ws_state.hub.clone(),
                door: ws_state.door.clone(),
                peer,
                writer,
                limit,
                max_payload: ws_state.max_payload,
                preauth,
                open: ws_state.sockets.open(),
            };
            Connection::create(move |ctx| {
                ctx.add_stream(frames);
                let mut connection = Connection::new(init);
                connection.greet(ctx);
                connection
            });
        }
        Err(refusal) => {
            tracing::warn!(ip = %peer.ip, "websocket refused: {}", refusal.reason());
            writer.close(1013, &refusal.reason());
        }
    }
    response
}

/// The 101 answer to a verified upgrade request.
fn switching_protocols(req: &HttpRequest) -> actix_web::HttpResponseBuilder {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
    let accept = actix_http::ws::hash_key(key);
    let mut builder = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    builder.upgrade("websocket");
    if let Ok(value) = header::HeaderValue::from_bytes(&accept) {
        builder.insert_header((header::SEC_WEBSOCKET_ACCEPT, value));
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn a_browser_may_connect_from_the_allowlist_or_from_the_gateways_own_page() {
        let allow = vec!["https://control.example".to_string()];
        assert!(origin_allowed("https://control.example", Some("127.0.0.1:18789"), &allow));
        // The page the gateway served itself: same host and port, an address or localhost.
        assert!(origin_allowed("http://127.0.0.1:18789", Some("127.0.0.1:18789"), &[]));
        assert!(origin_allowed("http://[::1]:18789", Some("[::1]:18789"), &[]));
        assert!(origin_allowed("http://localhost:18789", Some("localhost:18789"), &[]));
        assert!(origin_allowed("http://10.0.0.2", Some("10.0.0.2"), &[]));
        // Another page: another port, another host, no Host, a name (rebindable).
        assert!(!origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:18789"), &[]));
        assert!(!origin_allowed("https://evil.example", Some("127.0.0.1:18789"), &allow));
        assert!(!origin_allowed("http://127.0.0.1:18789", None, &[]));
        assert!(!origin_allowed("http://evil.example:18789", Some("evil.example:18789"), &[]));
        assert!(!origin_allowed("null", Some("127.0.0.1:18789"), &[]));
        assert!(!origin_allowed("file:///x", Some("127.0.0.1:18789"), &[]));
    }
}
