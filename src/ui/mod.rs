//! The dashboard at `/ui`: a small dependency-free page (HTML, CSS and JavaScript
//! modules in `ui/assets/`, no CDN, no build step) compiled into the binary. The page
//! holds no data and the server gives it none over HTTP: it connects to this gateway's
//! own WebSocket as an operator (client [`crate::hub::auth::DASHBOARD_CLIENT`]) with the
//! gateway token, loads `sessions.list`, then follows the `agent` events every operator
//! gets pushed (`hub/live.rs`), reloading the list only when told events were lost. Kill
//! is `sessions.abort`, steer `sessions.steer`, pairing `device.pair.*`, each allowed by
//! the scopes the gateway granted that connection.
//!
//! The token comes from the URL fragment (`/ui#token=...`, which browsers never send to
//! a server; `hivegate dashboard` prints that link) or a form, and lives in the tab's
//! session storage. The gateway accepts the page's socket because its `Origin` is the
//! gateway's own ([`crate::ws::origin_allowed`]) and grants its scopes only with the
//! token on a direct loopback socket ([`crate::hub::auth`]).
//!
//! Every answer carries a Content-Security-Policy that allows scripts, styles and images
//! from this origin only and connections to this origin's WebSocket, refuses framing and
//! form submission (a token typed into the form can never end up in a URL), `nosniff`,
//! and no referrer; every asset also carries an ETag with `no-cache`, so a new binary's
//! assets are never served stale from a browser cache.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// One file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: u64,
}

/// FNV-1a, computed at compile time: the assets' ETags.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("assets/", $name)),
            etag: fnv1a(include_str!(concat!("assets/", $name)).as_bytes()),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("gateway.js", JS),
    asset!("tree.js", JS),
    asset!("panels.js", JS),
    asset!("util.js", JS),
    asset!("icon.svg", "image/svg+xml"),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(index)).route("/ui/", web::get().to(index)).route("/ui/{file}", web::get().to(file));
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    serve(&req, &name)
}

fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return with_policy(HttpResponse::NotFound(), req).content_type("text/plain; charset=utf-8").body("not found");
    };
    let etag = format!("\"{:016x}\"", asset.etag);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let status = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    let mut response = with_policy(status, req);
    response.insert_header((header::ETAG, etag)).insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return response.finish();
    }
    response.content_type(asset.content_type).body(asset.body)
}

/// The headers every `/ui` answer carries.
fn with_policy(mut builder: actix_web::HttpResponseBuilder, req: &HttpRequest) -> actix_web::HttpResponseBuilder {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy(host)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .insert_header(("cross-origin-resource-policy", "same-origin"));
    builder
}

/// Only this origin, and its WebSocket. The `Host` goes into the policy only when it is
/// a plain host\[:port\]; otherwise `'self'` alone stands for it.
pub fn content_security_policy(host: Option<&str>) -> String {
    let plain = |h: &str| {
        !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    let sockets = match host.filter(|h| plain(h)) {
        Some(host) => format!(" ws://{host} wss://{host}"),
        None => String::new(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'{sockets}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_this_origins_socket_and_nothing_else() {
        assert_eq!(
            content_security_policy(Some("127.0.0.1:18789")),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self' ws://127.0.0.1:18789 wss://127.0.0.1:18789; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        for hostile in ["a; script-src *", "x y", "", "evil\"", "a/b"] {
            assert!(content_security_policy(Some(hostile)).contains("connect-src 'self';"), "{hostile}");
        }
    }

    #[test]
    fn every_page_reference_is_an_asset_and_the_client_identity_matches_the_hub() {
        let index = ASSETS.iter().find(|a| a.name == "index.html").map(|a| a.body).unwrap_or_default();
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js") || a.name.ends_with(".css")) {
            let referenced = index.contains(&format!("/ui/{}", asset.name))
                || ASSETS.iter().any(|other| other.body.contains(&format!("'./{}'", asset.name)));
            assert!(referenced, "{} is not used", asset.name);
        }
        let gateway = ASSETS.iter().find(|a| a.name == "gateway.js").map(|a| a.body).unwrap_or_default();
        let (id, mode) = crate::hub::auth::DASHBOARD_CLIENT;
        assert!(
            gateway.contains(&format!("CLIENT_ID = '{id}'")) && gateway.contains(&format!("CLIENT_MODE = '{mode}'"))
        );
        // Data goes into the page as text only.
        for asset in ASSETS {
            assert!(!asset.body.contains("innerHTML") && !asset.body.contains("insertAdjacentHTML"), "{}", asset.name);
        }
        let etags: std::collections::HashSet<u64> = ASSETS.iter().map(|a| a.etag).collect();
        assert_eq!(etags.len(), ASSETS.len());
    }
}
