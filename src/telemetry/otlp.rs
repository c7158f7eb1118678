//! The OTLP/HTTP trace exporter: which settings the standard `OTEL_*` variables ask for
//! ([`Settings::from_env`], a pure function of the variables), and the exporter built
//! from them ([`build`]).
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/traces` appended) is set, unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The protocol is
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
//! `http/protobuf`; `http/json` is the other one taken. `grpc` is refused with a
//! warning: the gRPC stack (tonic) would double the build for one transport a collector
//! also serves over HTTP. Headers (`OTEL_EXPORTER_OTLP_HEADERS`), the resource
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and the batch settings
//! (`OTEL_BSP_*`) are read by the OpenTelemetry SDK itself; compression is not built in.
//!
//! Spans leave through the SDK's batch processor, on its own thread. Its requests go out
//! through reqwest (the same client crate as model calls, with its rustls), driven by a
//! one-thread tokio runtime that belongs to the exporter, so a flush never waits on the
//! actix thread that asked for it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::TelemetryError;

/// What the environment asks of the trace exporter.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The full URL spans are posted to.
    pub endpoint: String,
    pub json: bool,
    pub timeout: Duration,
    /// `hivegate`, unless the environment names the service itself.
    pub service_name: Option<String>,
}

/// The OTLP default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Settings {
    /// `Ok(None)`: export is off (no endpoint set, or turned off). `env` looks a variable
    /// up; empty values count as unset.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, TelemetryError> {
        let var = |name: &str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let (endpoint_var, endpoint) =
            match (var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
                (None, Some(base)) => {
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/')))
                }
                (None, None) => return Ok(None),
            };
        check_url(endpoint_var, &endpoint)?;
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p),
            None => ("OTEL_EXPORTER_OTLP_PROTOCOL", var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default()),
        };
        let json = match protocol.1.as_str() {
            "" | "http/protobuf" => false,
            "http/json" => true,
            "grpc" => return Err(TelemetryError::GrpcRefused(protocol.1)),
            _ => return Err(TelemetryError::BadProtocol { var: protocol.0, value: protocol.1 }),
        };
        let timeout = var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let named = var("OTEL_SERVICE_NAME").is_some()
            || var("OTEL_RESOURCE_ATTRIBUTES")
                .is_some_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
        let service_name = (!named).then(|| "hivegate".to_string());
        Ok(Some(Settings { endpoint, json, timeout, service_name }))
    }
}

fn check_url(var: &'static str, value: &str) -> Result<(), TelemetryError> {
    let bad = |reason: String| TelemetryError::BadEndpoint { var, value: value.to_string(), reason };
    let url = url::Url::parse(value).map_err(|e| bad(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(bad(format!("scheme {other}"))),
    }
}

/// The tracer spans are made with, and the provider that exports them.
pub fn build(settings: &Settings) -> Result<(SdkTracer, SdkTracerProvider), TelemetryError> {
    let client = ExportClient::new(settings.timeout)?;
    let protocol = if settings.json { Protocol::HttpJson } else { Protocol::HttpBinary };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(settings.endpoint.clone())
        .with_protocol(protocol)
        .with_timeout(settings.timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(name) = &settings.service_name {
        resource = resource.with_service_name(name.clone());
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let tracer = provider.tracer("hivegate");
    Ok((tracer, provider))
}

/// Answers larger than this from a collector are refused (they carry only a status).
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// reqwest on a runtime of its own: the batch processor's thread blocks on each export,
/// outside any tokio runtime, and the runtime lives as long as the exporter.
struct ExportClient {
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportClient")
    }
}

impl ExportClient {
    fn new(timeout: Duration) -> Result<ExportClient, TelemetryError> {
        let failed = |e: &dyn std::fmt::Display| TelemetryError::Exporter(e.to_string());
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| failed(&e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| failed(&e))?;
        Ok(ExportClient { http, runtime: Some(runtime) })
    }
}

impl Drop for ExportClient {
    fn drop(&mut self) {
        // Dropped on the processor's thread or in main; never wait for the runtime there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let runtime = self.runtime.as_ref().ok_or("the exporter is stopped")?;
        let (parts, body) = request.into_parts();
        let call = self.http.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body);
        let answer = runtime.spawn(async move {
            let mut answer = call.send().await?;
            let mut builder = Response::builder().status(answer.status());
            if let Some(headers) = builder.headers_mut() {
                *headers = std::mem::take(answer.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = answer.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(HttpError::from(opentelemetry_http::ResponseBodyTooLarge::new()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(builder.body(Bytes::from(body))?)
        });
        answer.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<Settings>, TelemetryError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_env(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_turned_off() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(), None);
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert_eq!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off]).unwrap(), None);
        }
    }

    #[test]
    fn the_generic_endpoint_gets_the_traces_path_and_the_signal_one_is_used_as_is() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap().unwrap();
        assert_eq!(
            s,
            Settings {
                endpoint: "http://collector:4318/v1/traces".into(),
                json: false,
                timeout: DEFAULT_TIMEOUT,
                service_name: Some("hivegate".into()),
            }
        );
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c.example/otlp/traces"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            s,
            Settings {
                endpoint: "https://c.example/otlp/traces".into(),
                json: true,
                timeout: Duration::from_millis(2500),
                service_name: None,
            }
        );
    }

    #[test]
    fn grpc_and_unknown_protocols_and_bad_urls_are_refused_with_the_reason() {
        let grpc =
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(matches!(grpc, Err(TelemetryError::GrpcRefused(_))));
        assert!(grpc.unwrap_err().to_string().contains("exports traces over HTTP only"));
        let odd = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/xml"),
        ]);
        assert_eq!(
            odd.unwrap_err().to_string(),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/xml is not an OTLP protocol; use http/protobuf or http/json; traces are not exported"
        );
        let bad = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        assert!(matches!(bad, Err(TelemetryError::BadEndpoint { var: "OTEL_EXPORTER_OTLP_ENDPOINT", .. })));
    }
}
