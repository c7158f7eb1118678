//! OpenAI chat-completions wire types and their conversions to and from the domain
//! types; [`stream`] reads the streamed form. Used by the HTTP client and by the builtin
//! provider's server, so both sides of the builtin path speak exactly what a real
//! provider speaks.

pub mod stream;

use serde::{Deserialize, Serialize};

use super::{ChatRequest, ChatResponse, Message, ModelError, ToolCall, ToolSpec, Usage};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<WireTool>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
}

/// Asks for the usage-only last chunk of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: WireFunctionCall,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireFunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: WireFunction,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: WireMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `{"error": {...}}`, as providers send with a non-2xx status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

fn function_kind() -> String {
    "function".to_string()
}

fn completion_object() -> String {
    "chat.completion".to_string()
}

impl From<&Message> for WireMessage {
    fn from(message: &Message) -> Self {
        match message {
            Message::System { content } => WireMessage::text("system", content),
            Message::User { content } => WireMessage::text("user", content),
            // Reasoning blocks are Anthropic's; chat completions has nowhere to send them.
            Message::Assistant { content, tool_calls, .. } => WireMessage {
                role: "assistant".into(),
                content: content.as_deref().map(String::from),
                tool_calls: (!tool_calls.is_empty()).then(|| tool_calls.iter().map(WireToolCall::from).collect()),
                tool_call_id: None,
            },
            Message::Tool { call_id, content } => WireMessage {
                role: "tool".into(),
                content: Some(content.clone()),
                tool_calls: None,
                tool_call_id: Some(call_id.clone()),
            },
        }
    }
}

impl WireMessage {
    pub fn text(role: &str, content: &str) -> WireMessage {
        WireMessage { role: role.into(), content: Some(content.into()), tool_calls: None, tool_call_id: None }
    }
}

impl From<&ToolCall> for WireToolCall {
    fn from(call: &ToolCall) -> Self {
        WireToolCall {
            id: call.id.clone(),
            kind: function_kind(),
            function: WireFunctionCall { name: call.name.clone(), arguments: call.arguments.clone() },
        }
    }
}

impl From<&ToolSpec> for WireTool {
    fn from(spec: &ToolSpec) -> Self {
        WireTool {
            kind: function_kind(),
            function: WireFunction {
                name: spec.name.to_string(),
                description: spec.description.to_string(),
                parameters: spec.parameters.clone(),
            },
        }
    }
}

impl CompletionRequest {
    /// The request for `request`; a streamed one asks for the usage chunk too.
    pub fn new(request: &ChatRequest, stream: bool) -> CompletionRequest {
        CompletionRequest {
            model: request.model.model().to_string(),
            messages: request.messages.iter().map(WireMessage::from).collect(),
            tools: request.tools.iter().map(WireTool::from).collect(),
            stream,
            stream_options: stream.then_some(StreamOptions { include_usage: true }),
            reasoning_effort: request.thinking.and_then(|t| t.reasoning_effort()).map(String::from),
        }
    }
}

impl CompletionResponse {
    /// The first choice as a domain response.
    pub fn into_domain(self, provider: &str) -> Result<ChatResponse, ModelError> {
        let choice = self.choices.into_iter().next().ok_or_else(|| ModelError::Decode {
            provider: provider.to_string(),
            message: "no choices in the response".into(),
        })?;
        let usage = self.usage.unwrap_or_default();
        let stop_reason = choice.finish_reason;
        Ok(ChatResponse {
            reasoning: None,
            content: choice.message.content.filter(|c| !c.is_empty()),
            tool_calls: choice
                .message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|call| ToolCall { id: call.id, name: call.function.name, arguments: call.function.arguments })
                .collect(),
            usage: usage.into(),
            notices: Vec::new(),
        }
        .with_answer_notices(stop_reason.as_deref()))
    }
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Usage {
        Usage {
            cached_prompt_tokens: usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            ..Usage::tokens(usage.prompt_tokens, usage.completion_tokens)
        }
    }
}
