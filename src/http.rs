//! The gateway's public HTTP surface on one port (loopback by default): the WebSocket
//! endpoint at `GET /` ([`crate::ws`]), `GET /health`, the dashboard's static page at
//! `GET /ui` ([`crate::ui`]), and `GET /metrics` (Prometheus,
//! [`crate::telemetry::metrics`]; behind the gateway token as a bearer token when one is
//! configured). Nothing else is mounted here: the builtin provider has its own private
//! listener ([`crate::model::server`]).

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::gateway::{Registry, Stats};

/// Shared state the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub stats: Arc<Stats>,
    pub started: std::time::Instant,
    /// The gateway token `/metrics` asks for, when one is configured.
    pub token: Option<crate::config::Secret>,
    pub ws: crate::ws::WsState,
}

/// The HTTP workers start before the gateway exists; they read its state through this
/// slot, filled once the gateway is built.
#[derive(Clone, Default)]
pub struct HttpStateSlot(Arc<std::sync::OnceLock<HttpState>>);

impl HttpStateSlot {
    pub fn fill(&self, state: HttpState) {
        let _ = self.0.set(state);
    }

    pub fn ws(&self) -> Option<&crate::ws::WsState> {
        self.0.get().map(|s| &s.ws)
    }
}

/// A gateway's routes: the WebSocket that operators and nodes connect to, the dashboard,
/// and [`worker_routes`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(crate::ws::upgrade));
    worker_routes(cfg);
    crate::ui::routes(cfg);
}

/// A worker's routes: its health and its metrics, nothing more. Operators and nodes
/// connect to the gateway, which owns every tree; a worker takes no connections.
pub fn worker_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health)).route("/metrics", web::get().to(metrics));
}

async fn health(slot: web::Data<HttpStateSlot>) -> HttpResponse {
    let Some(state) = slot.0.get() else {
        return HttpResponse::ServiceUnavailable().json(json!({"ok": false, "error": "gateway starting"}));
    };
    HttpResponse::Ok().json(json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeMs": state.started.elapsed().as_millis() as u64,
        "sessions": state.registry.len(),
        "running": state.registry.running(),
        "liveSessionActors": state.stats.live_sessions(),
        "spawns": state.stats.spawns(),
    }))
}

/// `GET /metrics`: every `hivegate_*` series as OpenMetrics text, for the gateway
/// token's holder (a bearer token, compared in constant time).
async fn metrics(req: HttpRequest, slot: web::Data<HttpStateSlot>) -> HttpResponse {
    let Some(state) = slot.0.get() else {
        return HttpResponse::ServiceUnavailable().json(json!({"ok": false, "error": "gateway starting"}));
    };
    let authorization = req.headers().get(header::AUTHORIZATION).map(|h| h.as_bytes());
    if let Err(refused) = crate::telemetry::scrape::authorize(state.token.as_ref(), authorization) {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hivegate\""))
            .json(json!({"ok": false, "error": refused.to_string()}));
    }
    match state.stats.metrics().encode() {
        Ok(text) => HttpResponse::Ok().content_type(crate::telemetry::metrics::CONTENT_TYPE).body(text),
        Err(e) => HttpResponse::InternalServerError().json(json!({"ok": false, "error": e.to_string()})),
    }
}
