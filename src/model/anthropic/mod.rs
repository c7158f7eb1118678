//! Anthropic Messages wire types (`POST {base_url}/messages`) and their conversions to
//! and from the domain types; [`stream`] reads the streamed form.
//!
//! The shapes differ from chat completions in ways the conversion absorbs: system
//! prompts go in a top-level `system`, not in the transcript; an assistant's tool calls
//! are `tool_use` blocks whose `input` is a JSON object (not text); tool results are
//! `tool_result` blocks inside a user message, so consecutive tool results and the user
//! text after them merge into one user turn (the API wants turns to alternate). Usage
//! counts cached prompt tokens apart from `input_tokens`; the domain's `prompt_tokens`
//! is their sum, with the cache reads also in `cached_prompt_tokens`.

pub mod stream;

use serde::{Deserialize, Serialize};

use super::thinking::Thinking;
use super::{ChatRequest, ChatResponse, Message, ModelError, Reasoning, ToolCall, ToolSpec, Usage};

/// The API version every request names (`anthropic-version`).
pub const VERSION: &str = "2023-06-01";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub messages: Vec<WireMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Extended thinking, when the spawn asked for a reasoning level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<ThinkingConfig>,
}

/// `{"type": "enabled", "budget_tokens": N}`: the tokens the model may think with,
/// counted inside `max_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThinkingConfig {
    #[serde(rename = "type")]
    pub kind: ThinkingKind,
    pub budget_tokens: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkingKind {
    Enabled,
}

/// The thinking budget of a level (the API's minimum is 1024).
pub fn thinking_budget(level: Thinking) -> Option<u32> {
    match level {
        Thinking::Off => None,
        Thinking::Minimal => Some(1024),
        Thinking::Low => Some(2048),
        Thinking::Medium => Some(8192),
        Thinking::High => Some(16_384),
        Thinking::Xhigh => Some(32_768),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    pub role: String,
    pub content: Vec<Block>,
}

/// A content block. Kinds this runtime does not use (images, …) are read as `Other` and
/// skipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    #[serde(other)]
    Other,
}

impl Block {
    fn reasoning(reasoning: &Reasoning) -> Block {
        match reasoning {
            Reasoning::Thought { text, signature } => {
                Block::Thinking { thinking: text.clone(), signature: signature.clone() }
            }
            Reasoning::Redacted { data } => Block::RedactedThinking { data: data.clone() },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub input_schema: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    #[serde(default)]
    pub id: String,
    pub content: Vec<Block>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: WireUsage,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        let cache_read = usage.cache_read_input_tokens.unwrap_or(0);
        let prompt = usage
            .input_tokens
            .saturating_add(usage.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(cache_read);
        Usage { cached_prompt_tokens: cache_read, ..Usage::tokens(prompt, usage.output_tokens) }
    }
}

impl From<&ToolSpec> for WireTool {
    fn from(spec: &ToolSpec) -> Self {
        WireTool {
            name: spec.name.to_string(),
            description: spec.description.to_string(),
            input_schema: spec.parameters.clone(),
        }
    }
}

/// A tool call's arguments as a `tool_use` input, which must be a JSON object. Text that
/// is not one (a model's malformed call, already answered with the tool's error) is sent
/// as `{}`.
fn tool_input(arguments: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        _ => serde_json::Value::Object(Default::default()),
    }
}

/// A text block, unless the text is blank: the API refuses blank text blocks.
fn text_block(text: &str) -> Option<Block> {
    (!text.trim().is_empty()).then(|| Block::Text { text: text.to_string() })
}

/// What a `tool_result` says for a tool call that never ran (its run ended first).
pub const NO_RESULT: &str = "(no result: the run ended before this tool call ran)";

fn blocks(message: &Message) -> (&'static str, Vec<Block>) {
    match message {
        Message::System { .. } => ("system", Vec::new()),
        Message::User { content } => ("user", text_block(content).into_iter().collect()),
        Message::Assistant { content, tool_calls, reasoning } => {
            // The reasoning goes first, as the model gave it.
            let thought = reasoning.iter().flat_map(|r| r.iter()).map(Block::reasoning);
            let text = thought.chain(content.iter().filter_map(|t| text_block(t)));
            let calls = tool_calls.iter().map(|call| Block::ToolUse {
                id: call.id.clone(),
                name: call.name.clone(),
                input: tool_input(&call.arguments),
            });
            ("assistant", text.chain(calls).collect())
        }
        Message::Tool { call_id, content } => {
            ("user", vec![Block::ToolResult { tool_use_id: call_id.clone(), content: content.clone() }])
        }
    }
}

impl MessagesRequest {
    /// The request for `request`; a reasoning level adds its thinking budget on top of
    /// `max_tokens`, so the answer keeps the room it had.
    pub fn new(request: &ChatRequest, max_tokens: u32, stream: bool) -> MessagesRequest {
        let budget = request.thinking.and_then(thinking_budget);
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::System { content } => Some(content.as_str()),
                _ => None,
            })
            .collect();
        let mut messages: Vec<WireMessage> = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            let (role, content) = blocks(message);
            if content.is_empty() {
                continue;
            }
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.extend(content),
                _ => messages.push(WireMessage { role: role.into(), content }),
            }
        }
        answer_every_tool_use(&mut messages);
        MessagesRequest {
            model: request.model.model().to_string(),
            max_tokens: max_tokens.saturating_add(budget.unwrap_or(0)),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            tools: request.tools.iter().map(WireTool::from).collect(),
            stream,
            thinking: budget.map(|budget_tokens| ThinkingConfig { kind: ThinkingKind::Enabled, budget_tokens }),
        }
    }
}

/// Every `tool_use` must be answered by a `tool_result` in the next user turn, or the
/// API refuses the request. A run that ended between a model's tool calls and their
/// results (a budget, a turn limit) leaves calls unanswered; they are answered here as
/// never having run, ahead of what the user says next.
fn answer_every_tool_use(messages: &mut Vec<WireMessage>) {
    let mut at = 0;
    while at < messages.len() {
        let asked: Vec<String> = match messages[at].role.as_str() {
            "assistant" => messages[at]
                .content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if !asked.is_empty() {
            if messages.get(at + 1).is_none_or(|next| next.role != "user") {
                messages.insert(at + 1, WireMessage { role: "user".into(), content: Vec::new() });
            }
            let next = &mut messages[at + 1].content;
            let answered =
                |id: &str| next.iter().any(|b| matches!(b, Block::ToolResult { tool_use_id, .. } if tool_use_id == id));
            let missing: Vec<Block> = asked
                .into_iter()
                .filter(|id| !answered(id))
                .map(|id| Block::ToolResult { tool_use_id: id, content: NO_RESULT.into() })
                .collect();
            next.splice(0..0, missing);
        }
        at += 1;
    }
}

impl MessagesResponse {
    pub fn into_domain(self) -> ChatResponse {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        let mut reasoning = Vec::new();
        for block in self.content {
            match block {
                Block::Text { text: t } => text.push_str(&t),
                Block::ToolUse { id, name, input } => {
                    tool_calls.push(ToolCall { id, name, arguments: input.to_string() })
                }
                Block::Thinking { thinking, signature } => {
                    reasoning.push(Reasoning::Thought { text: thinking, signature })
                }
                Block::RedactedThinking { data } => reasoning.push(Reasoning::Redacted { data }),
                Block::ToolResult { .. } | Block::Other => {}
            }
        }
        ChatResponse {
            content: (!text.is_empty()).then_some(text),
            tool_calls,
            reasoning: super::boxed(reasoning),
            usage: self.usage.into(),
            notices: Vec::new(),
        }
        .with_answer_notices(self.stop_reason.as_deref())
    }

    /// The response of `bytes`, or why it is not one.
    pub fn decode(bytes: &[u8], provider: &str) -> Result<ChatResponse, ModelError> {
        serde_json::from_slice::<MessagesResponse>(bytes)
            .map(MessagesResponse::into_domain)
            .map_err(|e| ModelError::Decode { provider: provider.to_string(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests;
