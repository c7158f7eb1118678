//! The builtin executor's file work: a task naming a workspace file in backticks
//! (`` report on `README.md` ``) is answered by reading the file with the `read` tool,
//! page by page, and reporting what was read: its line count and first line. Nothing
//! is made up: the numbers come from the tool results in the transcript, and a refused
//! or failed read is reported as such.

use serde_json::{json, Value};

use super::{final_message, tool_call};
use crate::model::openai::{CompletionRequest, WireMessage};

/// The file a task names: its first backticked word.
pub fn named_file(task: &str) -> Option<&str> {
    let (_, rest) = task.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    let name = name.trim();
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

/// Whether the request offers the model the `read` tool (its agent allows it).
pub fn can_read(request: &CompletionRequest) -> bool {
    request.tools.iter().any(|t| t.function.name == "read")
}

/// The next step of reporting on `path`: read (the next page), or the report.
pub fn step(task: &str, path: &str, messages: &[WireMessage]) -> WireMessage {
    let pages = read_results(messages);
    let Some(last) = pages.last() else {
        return read_call(0, path, None);
    };
    if last["status"] != "ok" {
        let why = last["error"].as_str().unwrap_or("the read failed");
        return final_message(format!("report: {} - could not read `{path}`: {why}", task.trim()));
    }
    let to_line = last["toLine"].as_u64().unwrap_or(0);
    if last["truncated"] == true {
        return read_call(pages.len(), path, Some(to_line + 1));
    }
    let first_line = pages
        .first()
        .and_then(|page| page["content"].as_str())
        .and_then(|content| content.lines().next())
        .map(|line| line.split_once('\t').map_or(line, |(_, text)| text))
        .unwrap_or_default();
    let report = match to_line {
        0 => format!("`{path}` is empty"),
        1 => format!("`{path}` has 1 line: {first_line:?}"),
        n => format!("`{path}` has {n} lines; the first is {first_line:?}"),
    };
    final_message(format!("report: {} - {report}.", task.trim()))
}

fn read_call(page: usize, path: &str, offset: Option<u64>) -> WireMessage {
    let args = match offset {
        Some(offset) => json!({"path": path, "offset": offset}),
        None => json!({"path": path}),
    };
    WireMessage {
        role: "assistant".into(),
        content: None,
        tool_calls: Some(vec![tool_call(format!("call_read_{page}"), "read", &args)]),
        tool_call_id: None,
    }
}

/// The results of this run's `read` calls, in order.
fn read_results(messages: &[WireMessage]) -> Vec<Value> {
    let mut ids: Vec<&str> = Vec::new();
    let mut results = Vec::new();
    for message in messages {
        match message.role.as_str() {
            "assistant" => ids.extend(
                message.tool_calls.iter().flatten().filter(|c| c.function.name == "read").map(|c| c.id.as_str()),
            ),
            "tool" if message.tool_call_id.as_deref().is_some_and(|id| ids.contains(&id)) => {
                let content = message.content.as_deref().unwrap_or_default();
                results.push(
                    serde_json::from_str(content).unwrap_or_else(|_| json!({"status": "error", "error": content})),
                );
            }
            _ => {}
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::openai::WireToolCall;

    fn answer(id: &str, result: Value) -> WireMessage {
        WireMessage {
            role: "tool".into(),
            content: Some(result.to_string()),
            tool_calls: None,
            tool_call_id: Some(id.into()),
        }
    }

    fn calls(message: &WireMessage) -> Vec<(String, Value)> {
        let parse = |c: &WireToolCall| (c.function.name.clone(), serde_json::from_str(&c.function.arguments).unwrap());
        message.tool_calls.iter().flatten().map(parse).collect()
    }

    #[test]
    fn a_task_names_its_file_in_backticks() {
        assert_eq!(named_file("report on `src/lib.rs` (part 1 of 2)"), Some("src/lib.rs"));
        assert_eq!(named_file("report on src/lib.rs"), None);
        assert_eq!(named_file("a `` b"), None);
        assert_eq!(named_file("`two words`"), None);
    }

    #[test]
    fn the_report_counts_every_page_and_quotes_the_first_line() {
        let task = "report on `big.txt`";
        let mut messages = vec![WireMessage::text("user", task)];
        let first = step(task, "big.txt", &messages);
        assert_eq!(calls(&first), vec![("read".to_string(), json!({"path": "big.txt"}))]);
        messages.push(first);
        messages.push(answer(
            "call_read_0",
            json!({"status": "ok", "content": "     1\thello\n     2\tx\n", "toLine": 2000, "truncated": true}),
        ));
        let second = step(task, "big.txt", &messages);
        assert_eq!(calls(&second), vec![("read".to_string(), json!({"path": "big.txt", "offset": 2001}))]);
        messages.push(second);
        messages.push(answer(
            "call_read_1",
            json!({"status": "ok", "content": "  2001\tend\n", "toLine": 2001, "truncated": false}),
        ));
        let report = step(task, "big.txt", &messages);
        assert_eq!(
            report.content.as_deref(),
            Some("report: report on `big.txt` - `big.txt` has 2001 lines; the first is \"hello\".")
        );
    }

    #[test]
    fn a_refused_read_is_reported_not_hidden() {
        let task = "report on `../secret`";
        let messages = vec![
            WireMessage::text("user", task),
            step(task, "../secret", &[]),
            answer("call_read_0", json!({"status": "error", "error": "path '../secret' is outside the workspace"})),
        ];
        let report = step(task, "../secret", &messages);
        assert_eq!(
            report.content.as_deref(),
            Some(
                "report: report on `../secret` - could not read `../secret`: path '../secret' is outside the workspace"
            )
        );
    }
}
