//! The builtin provider over HTTP: `POST /v1/chat/completions` and `GET /v1/models`,
//! OpenAI-compatible, so sessions reach it through the same reqwest path as any provider.
//!
//! It is private to the gateway process. It listens on its own ephemeral loopback port,
//! never on the gateway's public one, and every request must carry the per-process
//! secret as a bearer token (compared in constant time); the model client is the only
//! holder of that secret. Requests must be `application/json` (so a browser cannot send
//! one as a "simple" cross-site request) and at most [`BODY_LIMIT`] bytes; fan-out is
//! bounded by the gateway's limits ([`builtin::Bounds`]). Anything beyond a bound is a
//! 4xx answer, never an abort.

use std::net::SocketAddr;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use serde_json::json;

use super::builtin::{self, Bounds, BuiltinError};
use super::openai::{CompletionRequest, ErrorBody, ErrorDetail};
use crate::config::Secret;

/// The largest request body the builtin provider reads. The biggest transcript it
/// serves is a brain's with one spawn call, one tool result and one announcement per
/// child (about 1 KB each); `hivegate demo --executors 1000` sends under 1 MiB.
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A running builtin provider: where it listens and the secret that opens it.
pub struct BuiltinServer {
    pub addr: SocketAddr,
    pub secret: Secret,
    pub handle: actix_web::dev::ServerHandle,
}

struct State {
    secret: Secret,
    bounds: Bounds,
}

impl BuiltinServer {
    /// Start on `127.0.0.1:0` with a fresh random secret. Must run inside an actix System.
    pub fn start(bounds: Bounds) -> anyhow::Result<BuiltinServer> {
        let secret = Secret::new(crate::keys::random_token().context("no randomness for the builtin provider secret")?);
        let state = web::Data::new(State { secret: secret.clone(), bounds });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(BODY_LIMIT))
                .route("/v1/chat/completions", web::post().to(chat_completions))
                .route("/v1/models", web::get().to(models))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .context("cannot start the builtin provider on loopback")?;
        let addr = server.addrs().first().copied().context("the builtin provider bound no address")?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(BuiltinServer { addr, secret, handle })
    }

    /// The base URL the model client uses for provider `builtin`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// The caller holds the secret.
fn authorized(req: &HttpRequest, state: &State) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    crate::hub::auth::secrets_match(presented, state.secret.expose())
}

fn is_json(req: &HttpRequest) -> bool {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    content_type.split(';').next().is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn chat_completions(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    if !authorized(&req, &state) {
        return error(401, "invalid_api_key", "the builtin provider serves only its own gateway".into());
    }
    if !is_json(&req) {
        return error(415, "invalid_request_error", "send the request as Content-Type: application/json".into());
    }
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(400, "invalid_request_error", format!("invalid chat completions request: {e}")),
    };
    if request.stream {
        return error(400, "invalid_request_error", "the builtin provider does not stream; send stream=false".into());
    }
    match builtin::respond(&request, state.bounds) {
        Ok(response) => HttpResponse::Ok().json(response),
        Err(e @ BuiltinError::UnknownModel(_)) => error(404, "model_not_found", e.to_string()),
        Err(e @ (BuiltinError::NoTask | BuiltinError::TooWide { .. } | BuiltinError::TooDeep { .. })) => {
            error(400, "invalid_request_error", e.to_string())
        }
    }
}

async fn models(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if !authorized(&req, &state) {
        return error(401, "invalid_api_key", "the builtin provider serves only its own gateway".into());
    }
    let data: Vec<_> =
        builtin::MODELS.iter().map(|id| json!({"id": id, "object": "model", "owned_by": "hivegate"})).collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

fn error(status: u16, kind: &str, message: String) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(ErrorBody { error: ErrorDetail { message, kind: kind.into() } })
}
