//! The Prometheus series a gateway keeps, served as OpenMetrics text at `GET /metrics`
//! (prometheus-client). Every name starts with `hivegate_`:
//!
//! | series | labels | what |
//! | --- | --- | --- |
//! | `hivegate_spawns_total` | agent | subagent sessions started |
//! | `hivegate_spawn_duration_seconds` | | spawn request → child running → ack |
//! | `hivegate_sessions_active` | agent | session actors alive (running, or idle between runs) |
//! | `hivegate_model_calls_total` | provider, model, outcome | model calls (retries included in one) |
//! | `hivegate_model_call_duration_seconds` | provider, model | a call's time, retries included |
//! | `hivegate_model_tokens_total` | provider, model, type | tokens, `type` `input` or `output` |
//! | `hivegate_model_cost_usd_total` | provider, model | USD, for priced models |
//! | `hivegate_handshakes_total` | outcome | WebSocket connects, by decision |
//! | `hivegate_pairing_events_total` | event | pairing requests and resolutions |
//! | `hivegate_websocket_connections` | | WebSocket connections open |
//!
//! Label values come from bounded sets only: agent ids from the config (`other` for an
//! id it does not define), providers from the config, at most [`MAX_MODELS`] distinct
//! provider/model pairs (a spawn may name any model: later pairs are counted under
//! model `other`), and fixed words for outcomes, token types and events. Never a
//! session key, run id or device id.
//!
//! The spawn path's handles (an agent's spawn counter and active gauge, the spawn
//! histogram) are resolved once, when the runtime starts: a spawn pays an atomic add per
//! counter and the histogram's uncontended lock, never a family lookup.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::sockets::{Handshake, SocketMetrics};
use super::TelemetryError;
use crate::model::{ModelError, ModelRef, Usage};

/// Distinct provider/model pairs given their own labels; later ones are `other`.
pub const MAX_MODELS: usize = 64;

/// The label value for whatever is past a bound.
pub const OTHER: &str = "other";

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// The pairing events counted; anything else is `other`.
const PAIRING_EVENTS: [&str; 4] =
    ["device.pair.requested", "device.pair.resolved", "node.pair.requested", "node.pair.resolved"];

/// A model call's outcome label: `ok`, or the kind of failure (a bounded set).
pub fn error_kind(error: &ModelError) -> &'static str {
    match error {
        ModelError::BadModelRef(_) | ModelError::UnknownProvider { .. } | ModelError::MissingApiKey { .. } => "config",
        ModelError::Http { status: 429, .. } => "rate_limited",
        ModelError::Http { status: 400..=499, .. } => "http_4xx",
        ModelError::Http { .. } => "http_5xx",
        ModelError::Transport { .. } => "transport",
        ModelError::Decode { .. } => "decode",
        ModelError::TooLarge { .. } => "too_large",
        ModelError::Stream { .. } => "stream",
        ModelError::Retried { last, .. } => error_kind(last),
    }
}

/// Times a model call into [`Metrics::model_called`] however it ends: answered, failed,
/// or dropped (a killed session's call, counted `cancelled`).
pub struct CallTimer {
    metrics: Option<Arc<Metrics>>,
    model: ModelRef,
    started: Instant,
}

impl CallTimer {
    pub fn start(metrics: Option<Arc<Metrics>>, model: &ModelRef) -> CallTimer {
        CallTimer { metrics, model: model.clone(), started: Instant::now() }
    }

    pub fn stop<T>(mut self, result: &Result<T, ModelError>) {
        self.record(match result {
            Ok(_) => "ok",
            Err(e) => error_kind(e),
        });
    }

    fn record(&mut self, outcome: &'static str) {
        if let Some(metrics) = self.metrics.take() {
            metrics.model_called(&self.model, outcome, self.started.elapsed());
        }
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        self.record("cancelled");
    }
}

/// One agent's spawn-path handles.
struct AgentSeries {
    id: Arc<str>,
    spawns: Counter,
    active: Gauge,
}

pub struct Metrics {
    registry: Registry,
    agents: Vec<AgentSeries>,
    other_agent: AgentSeries,
    spawn_latency: Histogram,
    model_calls: Family<CallLabels, Counter>,
    model_latency: Family<ModelLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    /// The provider/model pairs given labels so far (at most [`MAX_MODELS`]).
    models: Mutex<HashSet<ModelRef>>,
    sockets: SocketMetrics,
    pairing: [Counter; 5],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(std::iter::empty())
    }
}

fn model_latency_histogram() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0])
}

impl Metrics {
    /// The series of a gateway whose agents are `agents` (their ids, shared with the
    /// definitions, so a lookup is a pointer comparison).
    pub fn new(agents: impl IntoIterator<Item = Arc<str>>) -> Metrics {
        let mut registry = Registry::with_prefix("hivegate");
        let spawns = Family::<AgentLabel, Counter>::default();
        let active = Family::<AgentLabel, Gauge>::default();
        let series = |id: Arc<str>| {
            let label = AgentLabel { agent: id.to_string() };
            AgentSeries { spawns: spawns.get_or_create_owned(&label), active: active.get_or_create_owned(&label), id }
        };
        let agents: Vec<AgentSeries> = agents.into_iter().map(series).collect();
        let other_agent = series(Arc::from(OTHER));
        registry.register("spawns", "Subagent sessions started, by agent", spawns);
        registry.register("sessions_active", "Session actors alive (running, or idle between runs), by agent", active);
        let spawn_latency =
            Histogram::new([1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1.0]);
        registry.register(
            "spawn_duration_seconds",
            "In-process spawn latency: request sent, child running with its capability, ack",
            spawn_latency.clone(),
        );
        let model_calls = Family::default();
        registry.register(
            "model_calls",
            "Model calls (with their retries), by provider, model and outcome",
            model_calls.clone(),
        );
        let model_latency = Family::new_with_constructor(model_latency_histogram as fn() -> Histogram);
        registry.register(
            "model_call_duration_seconds",
            "Model call time, retries and waits for a permit included, by provider and model",
            model_latency.clone(),
        );
        let tokens = Family::default();
        registry.register("model_tokens", "Tokens used, by provider, model and type (input or output)", tokens.clone());
        let cost = Family::default();
        registry.register(
            "model_cost_usd",
            "What model calls cost in USD (priced models only), by provider and model",
            cost.clone(),
        );
        let handshakes = Family::<OutcomeLabel, Counter>::default();
        let sockets = SocketMetrics {
            open: Gauge::default(),
            handshakes: Arc::new(
                Handshake::ALL.map(|h| handshakes.get_or_create_owned(&OutcomeLabel { outcome: h.as_str() })),
            ),
        };
        registry.register("handshakes", "WebSocket connects, by outcome", handshakes);
        registry.register("websocket_connections", "WebSocket connections open", sockets.open.clone());
        let events = Family::<EventLabel, Counter>::default();
        let pairing = [PAIRING_EVENTS[0], PAIRING_EVENTS[1], PAIRING_EVENTS[2], PAIRING_EVENTS[3], OTHER]
            .map(|event| events.get_or_create_owned(&EventLabel { event }));
        registry.register("pairing_events", "Pairing events broadcast to operators, by event", events);
        Metrics {
            registry,
            agents,
            other_agent,
            spawn_latency,
            model_calls,
            model_latency,
            tokens,
            cost,
            models: Mutex::new(HashSet::new()),
            sockets,
            pairing,
        }
    }

    fn agent(&self, id: &Arc<str>) -> &AgentSeries {
        self.agents
            .iter()
            .find(|a| Arc::ptr_eq(&a.id, id))
            .or_else(|| self.agents.iter().find(|a| a.id == *id))
            .unwrap_or(&self.other_agent)
    }

    /// A subagent session of `agent` started.
    pub fn spawned(&self, agent: &Arc<str>) {
        self.agent(agent).spawns.inc();
    }

    pub fn spawn_latency(&self, elapsed: Duration) {
        self.spawn_latency.observe(elapsed.as_secs_f64());
    }

    pub fn session_started(&self, agent: &Arc<str>) {
        self.agent(agent).active.inc();
    }

    pub fn session_stopped(&self, agent: &Arc<str>) {
        self.agent(agent).active.dec();
    }

    /// The labels of `model`: its own up to [`MAX_MODELS`] pairs, `other` after.
    fn model_labels(&self, model: &ModelRef) -> ModelLabels {
        let known = {
            let mut seen = self.models.lock().unwrap_or_else(|p| p.into_inner());
            seen.contains(model) || (seen.len() < MAX_MODELS && seen.insert(model.clone()))
        };
        let name = if known { model.model() } else { OTHER };
        ModelLabels { provider: model.provider().to_string(), model: name.to_string() }
    }

    /// A model call ended (`outcome`: `ok`, `cancelled` or an [`error_kind`]).
    pub fn model_called(&self, model: &ModelRef, outcome: &'static str, elapsed: Duration) {
        let ModelLabels { provider, model } = self.model_labels(model);
        self.model_calls.get_or_create(&CallLabels { provider: provider.clone(), model: model.clone(), outcome }).inc();
        self.model_latency.get_or_create(&ModelLabels { provider, model }).observe(elapsed.as_secs_f64());
    }

    /// A model call answered with `usage` (priced).
    pub fn model_used(&self, model: &ModelRef, usage: &Usage) {
        let labels = self.model_labels(model);
        let tokens = |r#type| TokenLabels { provider: labels.provider.clone(), model: labels.model.clone(), r#type };
        self.tokens.get_or_create(&tokens("input")).inc_by(usage.prompt_tokens);
        self.tokens.get_or_create(&tokens("output")).inc_by(usage.completion_tokens);
        if usage.unpriced_calls == 0 {
            self.cost.get_or_create(&labels).inc_by(usage.cost_usd);
        }
    }

    pub fn sockets(&self) -> &SocketMetrics {
        &self.sockets
    }

    pub fn handshake(&self, outcome: Handshake) {
        self.sockets.handshake(outcome);
    }

    /// A pairing event (by its protocol name) went out to operators.
    pub fn pairing_event(&self, name: &str) {
        let index = PAIRING_EVENTS.iter().position(|e| *e == name).unwrap_or(PAIRING_EVENTS.len());
        if let Some(counter) = self.pairing.get(index) {
            counter.inc();
        }
    }

    /// Every series, as OpenMetrics text.
    pub fn encode(&self) -> Result<String, TelemetryError> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| TelemetryError::Encode(e.to_string()))?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(s: &str) -> ModelRef {
        ModelRef::parse(s).unwrap()
    }

    /// The sample lines of `name` (without its `# HELP`/`# TYPE`), sorted.
    fn samples(text: &str, name: &str) -> Vec<String> {
        let mut lines: Vec<String> = text.lines().filter(|l| l.starts_with(name)).map(String::from).collect();
        lines.sort();
        lines
    }

    #[test]
    fn spawns_and_sessions_count_by_configured_agent_and_other() {
        let brain: Arc<str> = Arc::from("brain");
        let metrics = Metrics::new([brain.clone(), Arc::from("executor")]);
        metrics.spawned(&Arc::from("executor"));
        metrics.spawned(&Arc::from("executor"));
        metrics.spawned(&Arc::from("renamed-since"));
        metrics.session_started(&brain);
        let text = metrics.encode().unwrap();
        assert_eq!(
            samples(&text, "hivegate_spawns_total"),
            [
                "hivegate_spawns_total{agent=\"brain\"} 0",
                "hivegate_spawns_total{agent=\"executor\"} 2",
                "hivegate_spawns_total{agent=\"other\"} 1",
            ]
        );
        assert!(
            samples(&text, "hivegate_sessions_active").contains(&"hivegate_sessions_active{agent=\"brain\"} 1".into())
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn models_past_the_bound_are_counted_as_other() {
        let metrics = Metrics::default();
        for i in 0..MAX_MODELS + 5 {
            metrics.model_called(&model(&format!("p/m{i}")), "ok", Duration::from_millis(5));
        }
        let usage = Usage { prompt_tokens: 7, completion_tokens: 3, cost_usd: 0.5, ..Usage::default() };
        metrics.model_used(&model("p/m0"), &usage);
        metrics.model_used(&model("p/beyond"), &usage);
        let text = metrics.encode().unwrap();
        let calls = samples(&text, "hivegate_model_calls_total");
        assert_eq!(calls.len(), MAX_MODELS + 1, "{calls:?}");
        assert!(calls.contains(&"hivegate_model_calls_total{provider=\"p\",model=\"other\",outcome=\"ok\"} 5".into()));
        assert!(!text.contains("m64") && !text.contains("beyond"));
        assert_eq!(
            samples(&text, "hivegate_model_tokens_total{provider=\"p\",model=\"m0\""),
            [
                "hivegate_model_tokens_total{provider=\"p\",model=\"m0\",type=\"input\"} 7",
                "hivegate_model_tokens_total{provider=\"p\",model=\"m0\",type=\"output\"} 3",
            ]
        );
        assert!(text.contains("hivegate_model_cost_usd_total{provider=\"p\",model=\"other\"} 0.5"), "{text}");
    }
}
