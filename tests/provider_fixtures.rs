//! Golden fixtures of real providers' streams (`tests/fixtures/sse/`): transcripts taken
//! from providers' SDK test suites, each naming its source in its leading `: source:`
//! comment, with the meaning worked out by hand in `<name>.expected.json`. Each must
//! parse, fed whole and fed one byte at a time, to exactly that domain response.
//!
//! Two artifacts of how the sources store streams are undone before parsing, and only
//! these: a recorder that kept only the `data:` payloads also dropped the closing
//! `data: [DONE]` (put back), and a file without its final newline has lost the blank
//! line that ends its last event (put back).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use hivegate::model::anthropic::stream::EventDecoder;
use hivegate::model::openai::stream::ChunkDecoder;
use hivegate::model::stream::{read, Bounds, Draft};
use hivegate::model::{ChatResponse, ToolCall, Usage};
use serde_json::Value;

const BOUNDS: Bounds = Bounds { max_bytes: 1 << 20, idle: Duration::from_secs(5) };

struct Fixture {
    name: String,
    api: String,
    body: String,
    expected: ChatResponse,
}

fn expected(doc: &Value) -> ChatResponse {
    let usage = &doc["usage"];
    let tokens = |field: &str| usage[field].as_u64().unwrap();
    ChatResponse {
        content: doc["content"].as_str().map(str::to_string),
        tool_calls: doc["toolCalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ToolCall {
                id: c["id"].as_str().unwrap().into(),
                name: c["name"].as_str().unwrap().into(),
                arguments: c["arguments"].as_str().unwrap().into(),
            })
            .collect(),
        usage: Usage {
            cached_prompt_tokens: tokens("cachedPromptTokens"),
            ..Usage::tokens(tokens("promptTokens"), tokens("completionTokens"))
        },
        notices: vec![],
    }
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sse");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".sse").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let mut body = std::fs::read_to_string(dir.join(format!("{name}.sse"))).unwrap();
            let line = |key: &str| body.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).map(str::to_string);
            assert!(line(": source: ").is_some_and(|s| !s.is_empty()), "{name} names no source");
            let api = line(": api: ").unwrap_or_else(|| panic!("{name} names no api"));
            if !body.ends_with("\n\n") {
                body.push_str(if body.ends_with('\n') { "\n" } else { "\n\n" });
            }
            if api == "openai-completions" && !body.lines().any(|l| l.trim_end() == "data: [DONE]") {
                body.push_str("data: [DONE]\n\n");
            }
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap())
                    .unwrap();
            Fixture { name, api, body, expected: expected(&doc) }
        })
        .collect()
}

async fn parse(name: &str, api: &str, chunks: Vec<Bytes>) -> ChatResponse {
    let body = stream::iter(chunks.into_iter().map(Ok::<_, Infallible>));
    let result = match api {
        "openai-completions" => read(body, ChunkDecoder, Draft::new(None), BOUNDS).await,
        "anthropic-messages" => read(body, EventDecoder::default(), Draft::new(None), BOUNDS).await,
        other => panic!("unknown api {other}"),
    };
    result.unwrap_or_else(|failed| panic!("{name}: {failed:?}"))
}

#[tokio::test]
async fn real_provider_streams_parse_to_their_expected_responses() {
    let fixtures = fixtures();
    let apis: std::collections::BTreeSet<&str> = fixtures.iter().map(|f| f.api.as_str()).collect();
    assert_eq!(apis.into_iter().collect::<Vec<_>>(), ["anthropic-messages", "openai-completions"]);
    assert!(fixtures.len() >= 6, "only {} fixtures", fixtures.len());
    for fixture in &fixtures {
        let whole = parse(&fixture.name, &fixture.api, vec![Bytes::from(fixture.body.clone())]).await;
        assert_eq!(whole, fixture.expected, "{} fed whole", fixture.name);
        let bytewise = fixture.body.bytes().map(|b| Bytes::from(vec![b])).collect();
        assert_eq!(
            parse(&fixture.name, &fixture.api, bytewise).await,
            fixture.expected,
            "{} fed byte by byte",
            fixture.name
        );
    }
}
