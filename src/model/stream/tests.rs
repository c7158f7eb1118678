//! The stream driver and both decoders, fed scripted chunks: every way a stream can be
//! cut, stalled or malformed. Time is tokio's paused clock, so the idle timeout costs
//! nothing.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};

use super::*;
use crate::model::anthropic::stream::EventDecoder;
use crate::model::openai::stream::ChunkDecoder;

const BOUNDS: Bounds = Bounds { max_bytes: 1 << 20, idle: Duration::from_secs(30) };

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);

impl TextSink for Recorder {
    fn text(&self, delta: &str) {
        self.0.lock().unwrap().push(delta.to_string());
    }
}

fn chunks(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
    stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
}

/// The whole body, one byte per chunk: every UTF-8 sequence and every line is split.
fn bytewise(body: &str) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
    chunks(body.bytes().map(|b| vec![b]).collect())
}

fn whole(body: &str) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
    chunks(vec![body.as_bytes().to_vec()])
}

async fn openai(body: impl Stream<Item = Result<Bytes, Infallible>> + Unpin) -> Result<ChatResponse, Failed> {
    read(body, ChunkDecoder, Draft::new(None), BOUNDS).await
}

async fn anthropic(body: impl Stream<Item = Result<Bytes, Infallible>> + Unpin) -> Result<ChatResponse, Failed> {
    read(body, EventDecoder::default(), Draft::new(None), BOUNDS).await
}

fn text_response(text: &str, usage: Usage) -> ChatResponse {
    ChatResponse { reasoning: None, content: Some(text.into()), tool_calls: vec![], usage, notices: vec![] }
}

const OPENAI_TEXT: &str = concat!(
    ": keep-alive\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\u{e9}llo \"}}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"thinking\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w\u{f6}rld \u{1f41d}\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":4,\"total_tokens\":16,",
    "\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test]
async fn split_utf8_and_lines_keep_alives_reasoning_and_a_usage_only_chunk() {
    let usage = Usage { cached_prompt_tokens: 8, ..Usage::tokens(12, 4) };
    let expected = text_response("h\u{e9}llo w\u{f6}rld \u{1f41d}", usage);
    assert_eq!(openai(whole(OPENAI_TEXT)).await.unwrap(), expected);
    assert_eq!(openai(bytewise(OPENAI_TEXT)).await.unwrap(), expected);
    let crlf = OPENAI_TEXT.replace('\n', "\r\n");
    assert_eq!(openai(bytewise(&crlf)).await.unwrap(), expected);
}

#[tokio::test]
async fn text_reaches_the_sink_as_it_arrives() {
    let recorder = Arc::new(Recorder::default());
    let draft = Draft::new(Some(recorder.clone()));
    read(whole(OPENAI_TEXT), ChunkDecoder, draft, BOUNDS).await.unwrap();
    assert_eq!(*recorder.0.lock().unwrap(), vec!["h\u{e9}llo ".to_string(), "w\u{f6}rld \u{1f41d}".to_string()]);
}

#[tokio::test]
async fn tool_call_deltas_merge_by_index() {
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"sessions_spawn\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"task\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"sessions_list\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"go\\\"}\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"another choice, ignored\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let response = openai(bytewise(body)).await.unwrap();
    assert_eq!(
        response,
        ChatResponse {
            reasoning: None,
            content: None,
            tool_calls: vec![
                ToolCall { id: "call_a".into(), name: "sessions_spawn".into(), arguments: "{\"task\":\"go\"}".into() },
                ToolCall { id: "call_b".into(), name: "sessions_list".into(), arguments: "{}".into() },
            ],
            usage: Usage::default(),
            notices: vec![
                "the provider reported no token usage for this call; token and cost budgets do not count it".into()
            ],
        }
    );
}

#[tokio::test]
async fn calls_without_an_index_stay_apart_and_their_number_is_bounded() {
    // A server that sends each call whole, with no index (so index 0 each time).
    let call = |id: &str| {
        format!("data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"id\":\"{id}\",\"function\":{{\"name\":\"t\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n")
    };
    let body = format!("{}{}data: [DONE]\n\n", call("a"), call("b"));
    let response = openai(whole(&body)).await.unwrap();
    let ids: Vec<&str> = response.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let many: String = (0..=MAX_TOOL_CALLS).map(|i| call(&format!("c{i}"))).collect();
    let failed = openai(whole(&many)).await.unwrap_err();
    assert_eq!(failed.fault, Fault::Decode(format!("more than {MAX_TOOL_CALLS} tool calls in one answer")));
}

#[tokio::test]
async fn a_byte_order_mark_is_skipped_and_megabytes_of_empty_lines_cost_linear_time() {
    let body = format!("\u{feff}{OPENAI_TEXT}");
    assert_eq!(openai(whole(&body)).await.unwrap().content.as_deref(), Some("h\u{e9}llo w\u{f6}rld \u{1f41d}"));
    // 4 MiB of empty lines in 1 MiB chunks, then the answer: a parser that re-copies
    // its buffer per line takes minutes here; a linear one, milliseconds.
    let blank = vec![b'\n'; 1 << 20];
    let mut parts = vec![blank.clone(), blank.clone(), blank.clone(), blank];
    parts.push(OPENAI_TEXT.as_bytes().to_vec());
    let bounds = Bounds { max_bytes: 8 << 20, ..BOUNDS };
    let response = read(chunks(parts), ChunkDecoder, Draft::new(None), bounds).await.unwrap();
    assert_eq!(response.content.as_deref(), Some("h\u{e9}llo w\u{f6}rld \u{1f41d}"));
}

#[tokio::test]
async fn answers_cut_at_the_token_limit_say_so() {
    let body = "data: {\"choices\":[{\"delta\":{\"content\":\"half\"},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    let response = openai(whole(body)).await.unwrap();
    assert_eq!(
        response.notices,
        ["the answer was cut at the provider's token limit (stop reason length); it may be incomplete"]
    );
}

#[tokio::test]
async fn an_error_chunk_fails_the_stream_and_says_whether_output_had_started() {
    let before = "data: {\"error\":{\"message\":\"upstream overloaded\",\"type\":\"server_error\"}}\n\n";
    let failed = openai(whole(before)).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Provider("upstream overloaded".into()), false));
    let after = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"par\"}}}}]}}\n\n{before}");
    let failed = openai(whole(&after)).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Provider("upstream overloaded".into()), true));
}

#[tokio::test]
async fn a_stream_closed_without_done_is_cut_short() {
    let body = "data: {\"choices\":[{\"delta\":{\"content\":\"half an ans\"}}]}\n\n";
    let failed = openai(whole(body)).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Ended, true));
    // An event not finished by its blank line is not an event.
    let failed = openai(whole("data: [DONE]")).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Ended, false));
}

#[tokio::test(start_paused = true)]
async fn a_stall_past_the_idle_timeout_fails_and_keep_alives_count_as_life() {
    let start = tokio::time::Instant::now();
    let stalled = whole("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n").chain(stream::pending());
    let failed = openai(stalled).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Idle(BOUNDS.idle), true));
    assert_eq!(start.elapsed(), BOUNDS.idle);

    // Keep-alives every 20 s (under the 30 s idle timeout) for two minutes, then the end.
    let ticks = stream::iter(0..6).then(|_| async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Ok::<_, Infallible>(Bytes::from_static(b": ping\n\n"))
    });
    let body = ticks.chain(whole("data: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\ndata: [DONE]\n\n"));
    let response = openai(Box::pin(body)).await.unwrap();
    assert_eq!(response.content.as_deref(), Some("late"));
}

#[tokio::test]
async fn bytes_past_the_cap_fail_the_stream_even_inside_one_line() {
    let bounds = Bounds { max_bytes: 1000, ..BOUNDS };
    let endless_line = stream::repeat_with(|| Ok::<_, Infallible>(Bytes::from_static(&[b'a'; 100])));
    let body = whole("data: ").chain(endless_line);
    let failed = read(body, ChunkDecoder, Draft::new(None), bounds).await.unwrap_err();
    assert_eq!(failed.fault, Fault::TooLarge);
}

#[tokio::test]
async fn a_chunk_that_is_not_json_is_a_decode_fault() {
    let failed = openai(whole("data: {not json\n\n")).await.unwrap_err();
    assert!(matches!(failed.fault, Fault::Decode(_)), "{:?}", failed.fault);
}

#[tokio::test]
async fn a_tool_call_without_a_name_is_refused() {
    let body = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"arguments\":\"{}\"}}]}}]}\n\ndata: [DONE]\n\n";
    let failed = openai(whole(body)).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Decode("tool call 0 has no name".into()), true));
}

const ANTHROPIC_TOOL_USE: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"stop_reason\":null,\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sigA\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Spawning \u{e9}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"sessions_spawn\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"task\\\": \\\"a\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"b\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"sessions_list\",\"input\":{}}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":3}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

#[tokio::test]
async fn anthropic_text_tool_use_thinking_ping_and_cache_usage() {
    // The thinking block is kept whole with its signature, and is not text.
    let expected = ChatResponse {
        reasoning: Some(Box::new(vec![crate::model::Reasoning::Thought {
            text: "hmm".into(),
            signature: "sigA".into(),
        }])),
        content: Some("Spawning \u{e9}".into()),
        tool_calls: vec![
            ToolCall { id: "toolu_1".into(), name: "sessions_spawn".into(), arguments: "{\"task\": \"ab\"}".into() },
            ToolCall { id: "toolu_2".into(), name: "sessions_list".into(), arguments: "{}".into() },
        ],
        usage: Usage { cached_prompt_tokens: 100, ..Usage::tokens(125, 42) },
        notices: vec![],
    };
    assert_eq!(anthropic(whole(ANTHROPIC_TOOL_USE)).await.unwrap(), expected);
    assert_eq!(anthropic(bytewise(ANTHROPIC_TOOL_USE)).await.unwrap(), expected);
}

#[tokio::test]
async fn anthropic_error_events_and_early_ends_fail() {
    let overloaded = concat!(
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let failed = anthropic(whole(overloaded)).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Provider("overloaded_error: Overloaded".into()), false));
    let cut = &ANTHROPIC_TOOL_USE[..ANTHROPIC_TOOL_USE.find("event: message_stop").unwrap()];
    let failed = anthropic(whole(cut)).await.unwrap_err();
    assert_eq!((failed.fault, failed.output_started), (Fault::Ended, true));
}
