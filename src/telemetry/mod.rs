//! What an operator sees of a gateway without reading its logs: logging setup, Prometheus
//! metrics, and OpenTelemetry traces following the GenAI semantic conventions.
//!
//! - **Logs** ([`init`]): `tracing_subscriber::fmt` on stderr, filtered by `RUST_LOG`
//!   (default `info` for `serve` and `worker`, `warn` for the other commands).
//! - **Metrics** ([`metrics`]): one [`Metrics`] per runtime, shared through
//!   [`crate::gateway::Stats`], served at `GET /metrics` ([`crate::http`]) behind the
//!   gateway token ([`scrape`]). Every series is named `hivegate_*`, and every label value comes from a
//!   bounded set: agent ids from the config, providers from the config, model names up
//!   to [`metrics::MAX_MODELS`] (later ones are counted as `other`), fixed outcome words.
//!   Never a session key, run id or device id. Handles the spawn path uses are resolved
//!   once per agent when the runtime starts, so a spawn pays an atomic add or two.
//! - **Traces** ([`genai`], [`otlp`]): spans `invoke_agent {agent}` per session run
//!   (parented to the parent session's run span, so a tree is one trace), `chat {model}`
//!   per model call and `execute_tool {tool}` per tool call, exported over OTLP/HTTP
//!   (`http/protobuf` or `http/json`; gRPC is refused to keep the build light) when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. Without
//!   them no OpenTelemetry layer is installed at all, [`exporting`] is false, and a
//!   session holds no span (its trace field stays `None`), so the spawn path pays one
//!   relaxed load.
//!
//! Like [`crate::config`], this module reads the environment, once, at start-up:
//! `RUST_LOG` and the `OTEL_*` variables ([`otlp::Settings::from_env`]). The exporter is
//! flushed at the end of a runtime's shutdown ([`flush`]) and when the process exits
//! ([`Telemetry::shutdown`]).

pub mod genai;
pub mod metrics;
pub mod otlp;
pub mod scrape;
pub mod sockets;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use genai::{SessionTrace, TraceParent};
pub use metrics::Metrics;
pub use sockets::{Handshake, OpenSocket, SocketMetrics};

/// Why telemetry could not be set up or served.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0} is not supported: hivegate exports traces over HTTP only \
         (http/protobuf or http/json), to keep its build light; set one of those, or point the \
         endpoint at a collector's OTLP/HTTP port (4318); traces are not exported"
    )]
    GrpcRefused(String),
    #[error("{var}={value} is not an OTLP protocol; use http/protobuf or http/json; traces are not exported")]
    BadProtocol { var: &'static str, value: String },
    #[error("{var}={value} is not an http:// or https:// URL ({reason}); traces are not exported")]
    BadEndpoint { var: &'static str, value: String, reason: String },
    #[error("the OTLP exporter could not be built: {0}; traces are not exported")]
    Exporter(String),
    #[error("the metrics could not be encoded: {0}")]
    Encode(String),
}

/// Whether spans are exported (an OpenTelemetry layer is installed). Read on the spawn
/// path: when false, no span is made anywhere.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The installed tracer provider, for [`flush`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The process's telemetry; [`Telemetry::shutdown`] flushes what is left to export.
#[must_use = "shut telemetry down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flush the exporter and stop it (the SDK bounds the wait at 5 s).
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "the trace exporter did not shut down cleanly; the last spans may be lost");
            }
        }
    }
}

/// Install logging, and the OpenTelemetry layer when the environment asks for export.
/// Call once, first thing in `main`. A bad `OTEL_*` setting is said on stderr and
/// leaves traces off; it never stops the command.
pub fn init(default_level: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let settings = otlp::Settings::from_env(|var| std::env::var(var).ok());
    let built = match settings {
        Ok(Some(settings)) => otlp::build(&settings).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let (layer, provider, problem) = match built {
        Ok(Some((tracer, provider))) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_filter(Targets::new().with_target(genai::TARGET, Level::INFO));
            (Some(layer), Some(provider), None)
        }
        Ok(None) => (None, None, None),
        Err(e) => (None, None, Some(e)),
    };
    let installed = tracing_subscriber::registry().with(fmt).with(layer).try_init().is_ok();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
    let provider = provider.filter(|_| installed);
    if let Some(provider) = &provider {
        let _ = PROVIDER.set(provider.clone());
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Telemetry { provider }
}

/// Export what has been recorded so far, without stopping the exporter (the end of a
/// runtime's shutdown). Runs on the blocking pool: the exporter waits for its collector.
pub async fn flush() {
    let Some(provider) = PROVIDER.get().cloned() else { return };
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    if let Ok(Err(e)) = flushed {
        tracing::warn!(error = %e, "the trace exporter could not flush; some spans may be lost");
    }
}
