//! The builtin provider over HTTP: `POST /v1/chat/completions` and `GET /v1/models`,
//! OpenAI-compatible, mounted on the gateway's loopback HTTP server.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::builtin::{self, BuiltinError};
use super::openai::{CompletionRequest, ErrorBody, ErrorDetail};

/// Mount the builtin provider's routes under `/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat_completions)).route("/v1/models", web::get().to(models));
}

async fn chat_completions(body: web::Bytes) -> HttpResponse {
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(400, "invalid_request_error", format!("invalid chat completions request: {e}")),
    };
    if request.stream {
        return error(400, "invalid_request_error", "the builtin provider does not stream; send stream=false".into());
    }
    match builtin::respond(&request) {
        Ok(response) => HttpResponse::Ok().json(response),
        Err(e @ BuiltinError::UnknownModel(_)) => error(404, "model_not_found", e.to_string()),
        Err(e @ BuiltinError::NoTask) => error(400, "invalid_request_error", e.to_string()),
    }
}

async fn models() -> HttpResponse {
    let data: Vec<_> =
        builtin::MODELS.iter().map(|id| json!({"id": id, "object": "model", "owned_by": "hivegate"})).collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

fn error(status: u16, kind: &str, message: String) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(ErrorBody { error: ErrorDetail { message, kind: kind.into() } })
}
