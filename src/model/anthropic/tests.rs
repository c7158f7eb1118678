//! The Messages conversions, both ways, compared as whole JSON values.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::model::thinking::Thinking;
use crate::model::{ModelRef, Reasoning};

fn spec() -> ToolSpec {
    ToolSpec {
        name: "sessions_spawn".into(),
        description: "spawn".into(),
        parameters: json!({"type": "object", "properties": {"task": {"type": "string"}}}),
    }
}

#[test]
fn requests_lift_the_system_prompt_and_merge_tool_results_into_user_turns() {
    let request = ChatRequest {
        model: ModelRef::parse("claude/claude-sonnet-4-5").unwrap(),
        messages: vec![
            Message::System { content: "you plan".into() },
            Message::User { content: "build it".into() },
            Message::Assistant {
                content: Some("on it".into()),
                tool_calls: vec![
                    ToolCall { id: "t1".into(), name: "sessions_spawn".into(), arguments: "{\"task\":\"a\"}".into() },
                    ToolCall { id: "t2".into(), name: "sessions_spawn".into(), arguments: "not json".into() },
                ],
                reasoning: Some(Box::new(vec![
                    Reasoning::Thought { text: "split it".into(), signature: "sig1".into() },
                    Reasoning::Redacted { data: "opaque".into() },
                ])),
            },
            Message::Tool { call_id: "t1".into(), content: "accepted".into() },
            Message::Tool { call_id: "t2".into(), content: "error: bad arguments".into() },
            Message::User { content: "[child ok] done".into() },
            Message::Assistant { content: None, tool_calls: vec![], reasoning: None },
        ],
        tools: Arc::new([spec()]),
        stream_to: None,
        thinking: Some(Thinking::Low),
    };
    let wire = serde_json::to_value(MessagesRequest::new(&request, 1024, true)).unwrap();
    assert_eq!(
        wire,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024 + 2048,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "system": "you plan",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "build it"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "split it", "signature": "sig1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "on it"},
                    {"type": "tool_use", "id": "t1", "name": "sessions_spawn", "input": {"task": "a"}},
                    {"type": "tool_use", "id": "t2", "name": "sessions_spawn", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "accepted"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "error: bad arguments"},
                    {"type": "text", "text": "[child ok] done"},
                ]},
            ],
            "tools": [{"name": "sessions_spawn", "description": "spawn", "input_schema": spec().parameters}],
            "stream": true,
        })
    );
}

#[test]
fn responses_become_domain_responses_with_cache_tokens_in_the_prompt() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "x"},
            {"type": "text", "text": "Spawning."},
            {"type": "tool_use", "id": "toolu_1", "name": "sessions_spawn", "input": {"task": "a"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 30},
    });
    let response = MessagesResponse::decode(body.to_string().as_bytes(), "claude").unwrap();
    assert_eq!(
        response,
        ChatResponse {
            reasoning: Some(Box::new(vec![Reasoning::Thought { text: "…".into(), signature: "x".into() }])),
            content: Some("Spawning.".into()),
            tool_calls: vec![ToolCall {
                id: "toolu_1".into(),
                name: "sessions_spawn".into(),
                arguments: "{\"task\":\"a\"}".into()
            }],
            usage: Usage { cached_prompt_tokens: 30, ..Usage::tokens(42, 7) },
            notices: vec![],
        }
    );
    assert!(matches!(MessagesResponse::decode(b"{\"content\": 3}", "claude"), Err(ModelError::Decode { .. })));
}

#[test]
fn blank_text_is_left_out_and_tool_calls_that_never_ran_are_answered() {
    let call = ToolCall { id: "t9".into(), name: "sessions_spawn".into(), arguments: "{}".into() };
    let request = ChatRequest {
        model: ModelRef::parse("claude/m").unwrap(),
        messages: vec![
            Message::User { content: "first run".into() },
            // The run ended (a budget) before t9 ran; the next run's task follows.
            Message::Assistant { content: Some("\n\n".into()), tool_calls: vec![call], reasoning: None },
            Message::User { content: "second run".into() },
        ],
        tools: Arc::new([]),
        stream_to: None,
        thinking: None,
    };
    let wire = serde_json::to_value(MessagesRequest::new(&request, 64, false)).unwrap();
    assert_eq!(
        wire["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "first run"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t9", "name": "sessions_spawn", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t9", "content": NO_RESULT},
                {"type": "text", "text": "second run"},
            ]},
        ])
    );
}
