//! The streamed form of chat completions: `data: {chunk}` events ending with
//! `data: [DONE]`. Text arrives in `choices[0].delta.content`; a tool call's id and name
//! arrive in its first delta and its arguments across many, all tied together by the
//! call's `index`. With `stream_options.include_usage` the last chunk carries `usage`
//! and no choices (some compatible servers put it on the last content chunk instead).
//! `reasoning_content` (vLLM, DeepSeek) is not part of the answer and is skipped. A
//! chunk `{"error": ...}` is the provider giving up mid-stream.

use serde::{Deserialize, Serialize};

use super::WireUsage;
use crate::model::stream::{Decoder, Draft, Fault, Flow};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDelta>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Reads chat-completion chunks into a draft.
#[derive(Debug, Default)]
pub struct ChunkDecoder;

impl Decoder for ChunkDecoder {
    fn event(&mut self, draft: &mut Draft, data: &str) -> Result<Flow, Fault> {
        if data.trim() == "[DONE]" {
            return Ok(Flow::Done);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| Fault::Decode(e.to_string()))?;
        if let Some(error) = chunk.error {
            return Err(Fault::Provider(error_message(&error)));
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = &choice.delta.content {
                draft.text(text);
            }
            if let Some(reason) = &choice.finish_reason {
                draft.stopped(reason);
            }
            for call in choice.delta.tool_calls.unwrap_or_default() {
                let function = call.function.unwrap_or_default();
                draft.tool_call(
                    call.index,
                    call.id.as_deref(),
                    function.name.as_deref(),
                    function.arguments.as_deref(),
                )?;
            }
        }
        if let Some(usage) = chunk.usage {
            *draft.usage_mut() = usage.into();
        }
        Ok(Flow::More)
    }
}

/// `{"message": ...}` as providers send it, or the error as JSON text.
fn error_message(error: &serde_json::Value) -> String {
    match error.get("message").and_then(|m| m.as_str()) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    }
}
