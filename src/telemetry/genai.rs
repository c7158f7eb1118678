//! Spans following the OpenTelemetry GenAI semantic conventions, made only while traces
//! are exported ([`super::exporting`]).
//!
//! - `invoke_agent {agent}`: one per session run, from its start to its end. A child's
//!   is parented to its parent's run span (the context travels in the spawn message as a
//!   [`TraceParent`]), so a brain/executor tree is one trace.
//! - `chat {model}`: one per model call, a child of the run span (kind `client`).
//! - `execute_tool {tool}`: one per tool call, a child of the run span.
//!
//! Attributes: `gen_ai.operation.name`, `gen_ai.agent.name` and `gen_ai.agent.id` (both
//! the agent's id from its definition: hivegate agents have no separate display name),
//! `gen_ai.agent.description`, `gen_ai.provider.name` (the provider's name in the
//! config), `gen_ai.request.model`, `gen_ai.response.model` (the model the call was
//! answered on as hivegate resolved it, after fallbacks; the provider's own echo of the
//! name is not read), `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `gen_ai.usage.cost` (USD, when every call was priced), `gen_ai.tool.name`,
//! `gen_ai.tool.call.id`, `gen_ai.conversation.id` (the session key), `error.type` on
//! failures, and `hivegate.run.id` / `hivegate.outcome` on runs.
//!
//! A session keeps this state in a [`SessionTrace`]: one pointer, empty when nothing is
//! exported, and then every method returns at once: no span is made and nothing is held
//! per session.

use opentelemetry::trace::Status;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::agent::AgentDef;
use crate::keys::{RunId, SessionKey};
use crate::model::{ModelError, ModelRef, ToolCall, Usage};
use crate::session::tools::ToolOutput;

/// The target of every GenAI span: the only one the OpenTelemetry layer listens to.
pub const TARGET: &str = "hivegate::genai";

/// The run span a child's run span is parented to (boxed: it rides in every spawn
/// message, which stays one pointer wide when nothing is exported).
#[derive(Clone, Debug)]
pub struct TraceParent(Box<opentelemetry::Context>);

/// A session's spans: its current run's, and its model call's while one is in flight;
/// nothing (one null pointer) unless spans are exported.
pub struct SessionTrace(Option<Box<Spans>>);

struct Spans {
    parent: Option<TraceParent>,
    run: Option<Span>,
    chat: Option<Span>,
}

impl SessionTrace {
    /// Empty unless spans are exported.
    pub fn new(parent: Option<TraceParent>) -> SessionTrace {
        SessionTrace(super::exporting().then(|| Box::new(Spans { parent, run: None, chat: None })))
    }

    /// A run begins: its `invoke_agent` span opens.
    pub fn run_started(&mut self, agent: &AgentDef, key: &SessionKey, run_id: &RunId, model: &ModelRef) {
        let Some(spans) = self.0.as_deref_mut() else { return };
        let span = tracing::info_span!(
            target: TARGET,
            parent: None,
            "invoke_agent",
            otel.name = %format_args!("invoke_agent {}", agent.id),
            otel.kind = "internal",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %agent.id,
            gen_ai.agent.id = %agent.id,
            gen_ai.agent.description = %agent.description,
            gen_ai.conversation.id = %key,
            gen_ai.provider.name = %model.provider(),
            gen_ai.request.model = %model.model(),
            hivegate.run.id = %run_id,
        );
        if let Some(parent) = &spans.parent {
            let _ = span.set_parent((*parent.0).clone());
        }
        spans.chat = None;
        spans.run = Some(span);
    }

    /// The run ended with `outcome`, having spent `usage` on calls, the last on `model`.
    pub fn run_ended(&mut self, outcome: &'static str, usage: &Usage, model: &ModelRef) {
        let Some(spans) = self.0.as_deref_mut() else { return };
        spans.chat = None;
        let Some(span) = spans.run.take() else { return };
        span.set_attribute("gen_ai.response.model", model.model().to_string());
        record_usage(&span, usage);
        span.set_attribute("hivegate.outcome", outcome);
        if outcome != "ok" {
            span.set_attribute("error.type", outcome);
            span.set_status(Status::error(outcome));
        }
    }

    /// What this run's children and tool calls are parented to.
    pub fn children_parent(&self) -> Option<TraceParent> {
        let run = self.0.as_ref()?.run.as_ref()?;
        Some(TraceParent(Box::new(run.context())))
    }

    /// A model call starts.
    pub fn chat_started(&mut self, key: &SessionKey, model: &ModelRef) {
        let Some(spans) = self.0.as_deref_mut() else { return };
        let Some(run) = &spans.run else { return };
        spans.chat = Some(tracing::info_span!(
            target: TARGET,
            parent: run,
            "chat",
            otel.name = %format_args!("chat {}", model.model()),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = %model.provider(),
            gen_ai.request.model = %model.model(),
            gen_ai.conversation.id = %key,
        ));
    }

    /// The model call answered (its usage, priced) or failed.
    pub fn chat_ended(&mut self, model: &ModelRef, answer: Result<&Usage, &ModelError>) {
        let Some(span) = self.0.as_deref_mut().and_then(|spans| spans.chat.take()) else { return };
        match answer {
            Ok(usage) => {
                span.set_attribute("gen_ai.response.model", model.model().to_string());
                record_usage(&span, usage);
            }
            Err(error) => {
                let kind = super::metrics::error_kind(error);
                span.set_attribute("error.type", kind);
                span.set_status(Status::error(kind));
            }
        }
    }
}

/// An `execute_tool` span for `call`, when the run has a span.
pub fn tool_started(parent: Option<&TraceParent>, key: &SessionKey, call: &ToolCall) -> Option<Span> {
    let parent = parent?;
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "execute_tool",
        otel.name = %format_args!("execute_tool {}", call.name),
        otel.kind = "internal",
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %call.name,
        gen_ai.tool.call.id = %call.id,
        gen_ai.tool.type = "function",
        gen_ai.conversation.id = %key,
    );
    let _ = span.set_parent((*parent.0).clone());
    Some(span)
}

/// The tool answered; an error answer marks the span.
pub fn tool_ended(span: Option<Span>, output: &ToolOutput) {
    let Some(span) = span else { return };
    if let ToolOutput::Done(value) | ToolOutput::Spawned(value) = output {
        if let Some(status @ ("error" | "forbidden")) = value.get("status").and_then(|s| s.as_str()) {
            let kind = if status == "error" { "tool_error" } else { "forbidden" };
            span.set_attribute("error.type", kind);
            span.set_status(Status::error(kind));
        }
    }
}

fn record_usage(span: &Span, usage: &Usage) {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    span.set_attribute("gen_ai.usage.input_tokens", count(usage.prompt_tokens));
    span.set_attribute("gen_ai.usage.output_tokens", count(usage.completion_tokens));
    if let Some(cost) = usage.known_cost() {
        span.set_attribute("gen_ai.usage.cost", cost);
    }
}
