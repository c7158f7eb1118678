//! The builtin offline provider: deterministic models that need no key and no network.
//!
//! [`respond`] is a pure function of the chat-completions request; the gateway serves it
//! over HTTP ([`super::server`]) so sessions call it like any other provider. It is
//! stateless: everything it decides comes from the transcript in the request.
//!
//! Models:
//! - `brain` plans. Its task is the current run's: the last user message that is not a
//!   completion event or another session's message. Subtasks are the task's
//!   non-empty lines (a leading `- `, `* ` or `1. ` is dropped); a one-line task is split
//!   at `;`. The first turn makes one `sessions_spawn` call per subtask
//!   (`agentId: "executor"`, `label: "part N"`), all in one message. While fewer
//!   subagent results (completion events, [`crate::session::announce`]) have arrived
//!   than spawns were accepted, it calls `sessions_yield`. Then it writes a summary with
//!   one line per result.
//! - `executor` does one subtask. A task ending in `[split K xL]` (K parts, L more
//!   levels) makes it spawn K executors with tasks `<task> / part i`, each carrying
//!   `[split K x(L-1)]` while L > 1, then yield and report on its parts. A task naming a
//!   file in backticks, when the agent may `read`, is reported on from the file itself
//!   ([`files`]). Any other task gets a one-line report at once.
//!
//! Usage is reported like a real provider's: a token is four characters, rounded up,
//! of the request's messages (prompt) and of the answer (completion).
//!
//! Every fan-out is bounded by the gateway's limits ([`Bounds`]): a brain task with more
//! subtasks than a session may have children, or a `[split K xL]` beyond the children or
//! depth limits, is refused with [`BuiltinError::TooWide`] / [`BuiltinError::TooDeep`]
//! (HTTP 400) before anything is allocated for it.

mod files;

use serde_json::json;

use crate::session::announce::{self, Parsed};

use super::openai::{
    Choice, CompletionRequest, CompletionResponse, WireFunctionCall, WireMessage, WireToolCall, WireUsage,
};

pub const MODELS: [&str; 2] = ["brain", "executor"];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuiltinError {
    #[error("model '{0}' not found; the builtin provider serves builtin/brain and builtin/executor")]
    UnknownModel(String),
    #[error("the request has no user message to work on")]
    NoTask,
    #[error("the task asks for {asked} subtasks; at most {max} (limits.max_children_per_session)")]
    TooWide { asked: u64, max: u64 },
    #[error("the task asks for {asked} more split levels; at most {max} (limits.max_spawn_depth)")]
    TooDeep { asked: u64, max: u64 },
}

/// How far one answer may fan out: the gateway's own limits, so the builtin provider
/// never plans a tree the gateway would refuse, and never allocates for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Spawns in one answer (brain subtasks, or K in `[split K xL]`).
    pub max_parts: u32,
    /// L in `[split K xL]`.
    pub max_levels: u32,
}

impl Bounds {
    pub fn of(limits: &crate::config::Limits) -> Bounds {
        Bounds {
            max_parts: u32::try_from(limits.max_children_per_session).unwrap_or(u32::MAX),
            max_levels: limits.max_spawn_depth,
        }
    }
}

/// Answer one chat-completions request.
pub fn respond(request: &CompletionRequest, bounds: Bounds) -> Result<CompletionResponse, BuiltinError> {
    // The current run's task: the last user message that is not a child's completion
    // event or another session's message (a main session's transcript holds its earlier
    // runs too). What happened since it is this run's progress.
    let start = request
        .messages
        .iter()
        .rposition(|m| {
            m.role == "user"
                && m.content
                    .as_deref()
                    .is_some_and(|c| announce::parse(c).is_none() && !c.starts_with("[message from "))
        })
        .ok_or(BuiltinError::NoTask)?;
    let task = request.messages[start].content.as_deref().unwrap_or_default();
    let progress = Progress::read(&request.messages[start..]);
    let message = match request.model.as_str() {
        "brain" => plan_step(&progress, brain_subtasks(task, bounds)?, |results| brain_summary(task, results)),
        "executor" => match (split_marker(task), files::named_file(task)) {
            (Some(split), _) => plan_step(&progress, split.parts(bounds)?, |results| executor_report(task, results)),
            (None, Some(path)) if files::can_read(request) => files::step(task, path, &request.messages[start..]),
            (None, _) => final_message(format!("report: {} - done.", task.trim())),
        },
        other => return Err(BuiltinError::UnknownModel(other.to_string())),
    };
    let usage = WireUsage {
        prompt_tokens: tokens(request.messages.iter().map(message_chars).sum()),
        completion_tokens: tokens(message_chars(&message)),
        total_tokens: 0,
        prompt_tokens_details: None,
    };
    let finish_reason = if message.tool_calls.is_some() { "tool_calls" } else { "stop" };
    Ok(CompletionResponse {
        id: format!("chatcmpl-builtin-{}", request.messages.len()),
        object: "chat.completion".into(),
        model: request.model.clone(),
        choices: vec![Choice { index: 0, message, finish_reason: Some(finish_reason.into()) }],
        usage: Some(WireUsage { total_tokens: usage.prompt_tokens + usage.completion_tokens, ..usage }),
    })
}

/// What the transcript says has happened so far.
struct Progress<'a> {
    spawn_attempted: bool,
    accepted: usize,
    refused: Vec<&'a str>,
    results: Vec<Parsed<'a>>,
}

impl<'a> Progress<'a> {
    fn read(messages: &'a [WireMessage]) -> Progress<'a> {
        let mut progress = Progress { spawn_attempted: false, accepted: 0, refused: vec![], results: vec![] };
        let mut spawn_ids: Vec<&str> = Vec::new();
        for message in messages {
            match message.role.as_str() {
                "assistant" => {
                    for call in message.tool_calls.iter().flatten() {
                        if call.function.name == "sessions_spawn" {
                            progress.spawn_attempted = true;
                            spawn_ids.push(&call.id);
                        }
                    }
                }
                "tool" if message.tool_call_id.as_deref().is_some_and(|id| spawn_ids.contains(&id)) => {
                    let content = message.content.as_deref().unwrap_or_default();
                    let accepted =
                        serde_json::from_str::<serde_json::Value>(content).is_ok_and(|v| v["status"] == "accepted");
                    if accepted {
                        progress.accepted += 1;
                    } else {
                        progress.refused.push(content);
                    }
                }
                "user" => {
                    if let Some(result) = message.content.as_deref().and_then(announce::parse) {
                        progress.results.push(result);
                    }
                }
                _ => {}
            }
        }
        progress
    }
}

/// Spawn the subtasks, wait for every accepted one, then finish with `finish`.
fn plan_step(progress: &Progress, subtasks: Vec<String>, finish: impl Fn(&Progress) -> String) -> WireMessage {
    if !progress.spawn_attempted && !subtasks.is_empty() {
        let calls = subtasks
            .iter()
            .enumerate()
            .map(|(i, subtask)| {
                let args = json!({"task": subtask, "label": format!("part {}", i + 1), "agentId": "executor"});
                tool_call(format!("call_spawn_{}", i + 1), "sessions_spawn", &args)
            })
            .collect();
        return WireMessage { role: "assistant".into(), content: None, tool_calls: Some(calls), tool_call_id: None };
    }
    if progress.results.len() < progress.accepted {
        let call = tool_call(format!("call_yield_{}", progress.results.len()), "sessions_yield", &json!({}));
        return WireMessage {
            role: "assistant".into(),
            content: None,
            tool_calls: Some(vec![call]),
            tool_call_id: None,
        };
    }
    final_message(finish(progress))
}

fn tool_call(id: String, name: &str, args: &serde_json::Value) -> WireToolCall {
    WireToolCall {
        id,
        kind: "function".into(),
        function: WireFunctionCall { name: name.into(), arguments: args.to_string() },
    }
}

fn final_message(text: String) -> WireMessage {
    WireMessage::text("assistant", &text)
}

fn brain_subtasks(task: &str, bounds: Bounds) -> Result<Vec<String>, BuiltinError> {
    let lines: Vec<&str> = task.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let parts: Vec<&str> = match lines.as_slice() {
        [single] => single.split(';').map(str::trim).filter(|p| !p.is_empty()).collect(),
        _ => lines,
    };
    if parts.len() > bounds.max_parts as usize {
        return Err(BuiltinError::TooWide { asked: parts.len() as u64, max: u64::from(bounds.max_parts) });
    }
    Ok(parts.into_iter().map(|p| strip_bullet(p).to_string()).collect())
}

fn strip_bullet(line: &str) -> &str {
    let line = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")).unwrap_or(line);
    match line.split_once(". ") {
        Some((number, rest)) if !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => line,
    }
}

/// `[split K xL]` at the end of a task. K and L are parsed as u64 so that any number a
/// task can carry is read, then checked against [`Bounds`].
#[derive(Debug, PartialEq, Eq)]
struct Split<'a> {
    base: &'a str,
    parts: u64,
    levels: u64,
}

fn split_marker(task: &str) -> Option<Split<'_>> {
    let task = task.trim_end();
    let inner = task.strip_suffix(']')?;
    let open = inner.rfind("[split ")?;
    let (parts, levels) = inner[open + "[split ".len()..].split_once(" x")?;
    let split =
        Split { base: task[..open].trim_end(), parts: parts.trim().parse().ok()?, levels: levels.trim().parse().ok()? };
    (split.parts > 0 && split.levels > 0).then_some(split)
}

impl Split<'_> {
    fn parts(&self, bounds: Bounds) -> Result<Vec<String>, BuiltinError> {
        if self.parts > u64::from(bounds.max_parts) {
            return Err(BuiltinError::TooWide { asked: self.parts, max: u64::from(bounds.max_parts) });
        }
        if self.levels > u64::from(bounds.max_levels) {
            return Err(BuiltinError::TooDeep { asked: self.levels, max: u64::from(bounds.max_levels) });
        }
        Ok((1..=self.parts)
            .map(|i| match self.levels {
                1 => format!("{} / part {i}", self.base),
                more => format!("{} / part {i} [split {} x{}]", self.base, self.parts, more - 1),
            })
            .collect())
    }
}

fn result_lines(progress: &Progress) -> String {
    let mut out = String::new();
    for result in &progress.results {
        match result.ok {
            true => out.push_str(&format!("\n- {}: {}", result.task, result.result.lines().next().unwrap_or_default())),
            false => out.push_str(&format!("\n- {} {}", result.task, result.status)),
        }
    }
    for refused in &progress.refused {
        out.push_str(&format!("\n- refused: {refused}"));
    }
    out
}

fn brain_summary(task: &str, progress: &Progress) -> String {
    let first = task.lines().map(str::trim).find(|l| !l.is_empty()).map(strip_bullet).unwrap_or_default();
    format!("summary of {} results for '{first}':{}", progress.results.len(), result_lines(progress))
}

fn executor_report(task: &str, progress: &Progress) -> String {
    format!("report: {} - done in {} parts.{}", task.trim(), progress.results.len(), result_lines(progress))
}

fn message_chars(message: &WireMessage) -> usize {
    let content = message.content.as_deref().map_or(0, str::len);
    let calls: usize =
        message.tool_calls.iter().flatten().map(|c| c.function.name.len() + c.function.arguments.len()).sum();
    content + calls
}

fn tokens(chars: usize) -> u64 {
    chars.div_ceil(4).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::Outcome;

    const BOUNDS: Bounds = Bounds { max_parts: 64, max_levels: 3 };

    fn request(model: &str, messages: Vec<WireMessage>) -> CompletionRequest {
        CompletionRequest {
            model: model.into(),
            messages,
            tools: vec![],
            stream: false,
            stream_options: None,
            reasoning_effort: None,
        }
    }

    fn respond(request: &CompletionRequest) -> Result<CompletionResponse, BuiltinError> {
        super::respond(request, BOUNDS)
    }

    /// A completion event as the gateway renders it.
    fn completion(label: &str, outcome: Outcome, text: &str) -> String {
        crate::session::Announcement {
            child: "agent:executor:subagent:1".into(),
            run_id: "r1".into(),
            label: Some(label.into()),
            outcome,
            text: text.into(),
            runtime: std::time::Duration::from_millis(5),
            usage: crate::model::Usage::tokens(3, 2),
        }
        .render()
    }

    fn calls(response: &CompletionResponse) -> Vec<(String, serde_json::Value)> {
        let message = &response.choices[0].message;
        message
            .tool_calls
            .iter()
            .flatten()
            .map(|c| (c.function.name.clone(), serde_json::from_str(&c.function.arguments).unwrap()))
            .collect()
    }

    #[test]
    fn a_main_sessions_next_run_plans_its_own_task_not_the_first() {
        let first = WireMessage::text("user", "alpha");
        let mut transcript =
            vec![first.clone(), respond(&request("brain", vec![first])).unwrap().choices[0].message.clone()];
        transcript.push(WireMessage {
            role: "tool".into(),
            content: Some(r#"{"status":"accepted"}"#.into()),
            tool_call_id: Some("call_spawn_1".into()),
            tool_calls: None,
        });
        transcript.push(WireMessage::text("user", &completion("part 1", Outcome::Ok, "report: alpha - done.")));
        transcript.push(respond(&request("brain", transcript.clone())).unwrap().choices[0].message.clone());
        transcript.push(WireMessage::text("user", "gamma; delta"));
        let next = respond(&request("brain", transcript)).unwrap();
        let tasks: Vec<serde_json::Value> = calls(&next).into_iter().map(|(_, args)| args["task"].clone()).collect();
        assert_eq!(tasks, [json!("gamma"), json!("delta")]);
    }

    #[test]
    fn brain_spawns_one_executor_per_line_then_yields_then_summarises() {
        let task = WireMessage::text("user", "- alpha\n- beta\n");
        let first = respond(&request("brain", vec![task.clone()])).unwrap();
        assert_eq!(
            calls(&first),
            vec![
                ("sessions_spawn".into(), json!({"task": "alpha", "label": "part 1", "agentId": "executor"})),
                ("sessions_spawn".into(), json!({"task": "beta", "label": "part 2", "agentId": "executor"})),
            ]
        );
        let mut transcript = vec![task, first.choices[0].message.clone()];
        for id in ["call_spawn_1", "call_spawn_2"] {
            transcript.push(WireMessage {
                role: "tool".into(),
                content: Some(r#"{"status":"accepted"}"#.into()),
                tool_call_id: Some(id.into()),
                tool_calls: None,
            });
        }
        transcript.push(WireMessage::text("user", &completion("part 1", Outcome::Ok, "report: alpha - done.")));
        let waiting = respond(&request("brain", transcript.clone())).unwrap();
        assert_eq!(calls(&waiting), vec![("sessions_yield".into(), json!({}))]);
        transcript.push(WireMessage::text("user", &completion("part 2", Outcome::Killed, "killed by x")));
        let done = respond(&request("brain", transcript)).unwrap();
        assert_eq!(
            done.choices[0].message.content.as_deref(),
            Some(
                "summary of 2 results for 'alpha':\n- part 1: report: alpha - done.\n- part 2 failed: subagent run terminated (killed by x)"
            )
        );
        let usage = done.usage.unwrap();
        assert!(usage.prompt_tokens > 0 && usage.total_tokens == usage.prompt_tokens + usage.completion_tokens);
    }

    #[test]
    fn executor_splits_only_when_asked() {
        assert_eq!(split_marker("scan logs [split 2 x2]"), Some(Split { base: "scan logs", parts: 2, levels: 2 }));
        assert_eq!(split_marker("scan logs [split 0 x1]"), None);
        let leaf = respond(&request("executor", vec![WireMessage::text("user", "scan logs")])).unwrap();
        assert_eq!(leaf.choices[0].message.content.as_deref(), Some("report: scan logs - done."));
        let node = respond(&request("executor", vec![WireMessage::text("user", "scan [split 2 x2]")])).unwrap();
        let tasks: Vec<_> = calls(&node).into_iter().map(|(_, args)| args["task"].clone()).collect();
        assert_eq!(tasks, vec![json!("scan / part 1 [split 2 x1]"), json!("scan / part 2 [split 2 x1]")]);
    }

    #[test]
    fn fan_out_beyond_the_limits_is_refused_before_anything_is_built() {
        let huge = respond(&request("executor", vec![WireMessage::text("user", "x [split 4294967295 x1]")]));
        assert_eq!(huge.unwrap_err(), BuiltinError::TooWide { asked: 4_294_967_295, max: 64 });
        let beyond_u32 = respond(&request("executor", vec![WireMessage::text("user", "x [split 99999999999 x1]")]));
        assert_eq!(beyond_u32.unwrap_err(), BuiltinError::TooWide { asked: 99_999_999_999, max: 64 });
        let deep = respond(&request("executor", vec![WireMessage::text("user", "x [split 2 x4]")]));
        assert_eq!(deep.unwrap_err(), BuiltinError::TooDeep { asked: 4, max: 3 });
        let lines: String = (0..65).map(|i| format!("task {i}\n")).collect();
        let wide = respond(&request("brain", vec![WireMessage::text("user", &lines)]));
        assert_eq!(wide.unwrap_err(), BuiltinError::TooWide { asked: 65, max: 64 });
        assert!(respond(&request("executor", vec![WireMessage::text("user", "x [split 64 x3]")])).is_ok());
    }

    #[test]
    fn unknown_models_and_empty_requests_are_refused() {
        assert_eq!(
            respond(&request("gpt-9", vec![WireMessage::text("user", "x")])).unwrap_err(),
            BuiltinError::UnknownModel("gpt-9".into())
        );
        assert_eq!(respond(&request("brain", vec![])).unwrap_err(), BuiltinError::NoTask);
    }
}
