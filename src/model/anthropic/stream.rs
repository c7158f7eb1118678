//! The streamed form of Messages: `message_start` (with the prompt's usage), then per
//! content block a `content_block_start`, its `content_block_delta`s (`text_delta` for
//! text, `input_json_delta` for a tool call's input as JSON text in pieces) and a
//! `content_block_stop`; then `message_delta` (cumulative output usage, the stop
//! reason) and `message_stop`, the end marker. `ping` keeps the connection alive; an
//! `error` event (often `overloaded_error`) is the provider giving up mid-stream.
//! A thinking block (`thinking_delta`s, then its `signature_delta`) is kept whole as the
//! answer's reasoning, never shown as text; unknown events are skipped, as the API's
//! versioning asks.

use serde::Deserialize;

use super::{Block, WireUsage};
use crate::model::stream::{Decoder, Draft, Fault, Flow};
use crate::model::Reasoning;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: Option<MessageChange>,
        #[serde(default)]
        usage: Option<UsageDelta>,
    },
    MessageStop,
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageChange {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    #[serde(other)]
    Other,
}

/// `message_delta`'s usage: the fields it carries replace those of `message_start`.
#[derive(Debug, Deserialize)]
struct UsageDelta {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Reads Messages events into a draft.
#[derive(Debug, Default)]
pub struct EventDecoder {
    usage: WireUsage,
    /// The thinking block being read, by its index.
    thought: Option<(u32, String, String)>,
}

impl Decoder for EventDecoder {
    fn event(&mut self, draft: &mut Draft, data: &str) -> Result<Flow, Fault> {
        let event: Event = serde_json::from_str(data).map_err(|e| Fault::Decode(e.to_string()))?;
        match event {
            Event::MessageStart { message } => self.set_usage(draft, message.usage),
            Event::ContentBlockStart { index, content_block } => match content_block {
                Block::Text { text } => draft.text(&text),
                Block::ToolUse { id, name, .. } => draft.tool_call(index, Some(&id), Some(&name), None)?,
                Block::Thinking { thinking, signature } => self.thought = Some((index, thinking, signature)),
                Block::RedactedThinking { data } => draft.reasoned(Reasoning::Redacted { data }),
                Block::ToolResult { .. } | Block::Other => {}
            },
            Event::ContentBlockDelta { index, delta } => match (delta, &mut self.thought) {
                (BlockDelta::TextDelta { text }, _) => draft.text(&text),
                (BlockDelta::InputJsonDelta { partial_json }, _) => {
                    draft.tool_call(index, None, None, Some(&partial_json))?
                }
                (BlockDelta::ThinkingDelta { thinking }, Some((at, text, _))) if *at == index => {
                    text.push_str(&thinking)
                }
                (BlockDelta::SignatureDelta { signature }, Some((at, _, sig))) if *at == index => *sig = signature,
                _ => {}
            },
            Event::ContentBlockStop { index } => match self.thought.take() {
                Some((at, text, signature)) if at == index => draft.reasoned(Reasoning::Thought { text, signature }),
                thought => {
                    self.thought = thought;
                    draft.default_arguments(index, "{}")
                }
            },
            Event::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.and_then(|d| d.stop_reason) {
                    draft.stopped(&reason);
                }
                let Some(delta) = usage else { return Ok(Flow::More) };
                let usage = WireUsage {
                    input_tokens: delta.input_tokens.unwrap_or(self.usage.input_tokens),
                    output_tokens: delta.output_tokens.unwrap_or(self.usage.output_tokens),
                    cache_creation_input_tokens: delta
                        .cache_creation_input_tokens
                        .or(self.usage.cache_creation_input_tokens),
                    cache_read_input_tokens: delta.cache_read_input_tokens.or(self.usage.cache_read_input_tokens),
                };
                self.set_usage(draft, usage)
            }
            Event::MessageStop => return Ok(Flow::Done),
            Event::Error { error } => return Err(Fault::Provider(format!("{}: {}", error.kind, error.message))),
            Event::Other => {}
        }
        Ok(Flow::More)
    }
}

impl EventDecoder {
    fn set_usage(&mut self, draft: &mut Draft, usage: WireUsage) {
        self.usage = usage;
        *draft.usage_mut() = usage.into();
    }
}
