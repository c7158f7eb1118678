//! A local OTLP/HTTP trace receiver for tests: an actix-web server on 127.0.0.1:0 that
//! keeps every JSON body posted to `/v1/traces` (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`)
//! and reads the spans back with their attributes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// A local OTLP/HTTP receiver: every JSON body posted to `/v1/traces`.
pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    pub handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub fn start() -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let server = HttpServer::new(move || {
            let kept = kept.clone();
            App::new().route(
                "/v1/traces",
                web::post().to(move |req: actix_web::HttpRequest, body: web::Bytes| {
                    let kept = kept.clone();
                    async move {
                        assert_eq!(req.headers().get("content-type").unwrap(), "application/json");
                        kept.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap());
                        HttpResponse::Ok().json(json!({}))
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver { url, bodies, handle }
    }

    /// Every span received, with its attributes flattened to JSON values.
    pub fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            for resource in body["resourceSpans"].as_array().unwrap() {
                let service = attributes(&resource["resource"]["attributes"]);
                assert_eq!(service["service.name"], "hivegate", "{resource}");
                for scope in resource["scopeSpans"].as_array().unwrap() {
                    for span in scope["spans"].as_array().unwrap() {
                        spans.push(Span {
                            name: span["name"].as_str().unwrap().to_string(),
                            trace: span["traceId"].as_str().unwrap().to_string(),
                            id: span["spanId"].as_str().unwrap().to_string(),
                            parent: span["parentSpanId"].as_str().unwrap_or_default().to_string(),
                            kind: span["kind"].clone(),
                            attributes: attributes(&span["attributes"]),
                        });
                    }
                }
            }
        }
        spans
    }
}

#[derive(Clone, Debug)]
pub struct Span {
    pub name: String,
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub kind: Value,
    pub attributes: BTreeMap<String, Value>,
}

impl Span {
    pub fn int(&self, key: &str) -> i64 {
        let value = &self.attributes[key];
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("{key}: {self:?}"))
    }
}

/// OTLP/JSON attributes (`[{key, value: {stringValue|intValue|doubleValue|boolValue}}]`).
fn attributes(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .map(|list| {
            list.iter()
                .map(|kv| {
                    let value = kv["value"].as_object().and_then(|v| v.values().next().cloned()).unwrap_or(Value::Null);
                    (kv["key"].as_str().unwrap().to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}
