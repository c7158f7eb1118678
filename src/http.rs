//! The gateway's public HTTP surface on one port (loopback by default): the WebSocket
//! endpoint at `GET /` ([`crate::ws`]), `GET /health` and the dashboard's static page at
//! `GET /ui` ([`crate::ui`]). Nothing else is mounted here: the builtin provider has its
//! own private listener ([`crate::model::server`]).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::gateway::{Registry, Stats};

/// Shared state the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub stats: Arc<Stats>,
    pub started: std::time::Instant,
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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(crate::ws::upgrade)).route("/health", web::get().to(health));
    crate::ui::routes(cfg);
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
