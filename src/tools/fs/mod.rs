//! The file tools: `read`, `write`, `edit`, `ls`, `glob` and `grep`.
//!
//! Each is a plain blocking function over a [`Workspace`] and a typed argument struct,
//! returning the JSON the model reads (`"status": "ok"` plus the result) or a
//! [`ToolError`]. Parameter names follow OpenClaw's (which are pi-coding-agent's):
//! `path`, `offset`/`limit` in lines, `content`, `oldText`/`newText`, and for the search
//! tools `pattern`, `path`, `glob`, `ignoreCase`, `literal`, `limit`; like OpenClaw, the
//! Claude Code spellings `file_path`, `old_string` and `new_string` are accepted too.
//! Every input and output is bounded by the constants below, and a result that hits a
//! bound says so in its `note` with how to get the rest: nothing is cut silently. Paths
//! in results are relative to the workspace root. Walks (`glob`, `grep`) respect
//! `.gitignore`, skip `.git`, include hidden files, never descend symlinked directories
//! and only follow a symlinked file whose target is inside the workspace.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use ignore::{DirEntry, WalkBuilder};
use regex::bytes::RegexBuilder;
use serde::Deserialize;
use serde_json::{json, Value};

use super::workspace::{io_error, Workspace};
use super::ToolError;

/// Lines `read` shows when no `limit` is given, and the most it shows.
pub const READ_MAX_LINES: usize = 2000;
/// Text `read` (and `grep`) return per call, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Longer lines are cut (in `read`) at this many bytes.
pub const READ_MAX_LINE_BYTES: usize = 2000;
/// The most `write` writes, and the largest file `edit` changes or produces.
pub const WRITE_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Entries `ls` and files `glob` return at most (and by default).
pub const LIST_MAX_ENTRIES: usize = 1000;
/// Matches `grep` returns by default, and at most.
pub const GREP_DEFAULT_MATCHES: usize = 100;
pub const GREP_MAX_MATCHES: usize = 1000;
/// Larger files are skipped by `grep` (and counted in its note).
pub const GREP_MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Matched lines are cut at this many bytes in `grep` results.
pub const GREP_MAX_LINE_BYTES: usize = 300;
/// Directory entries a `glob` or `grep` walk visits before it stops.
pub const WALK_MAX_ENTRIES: usize = 100_000;
/// The longest `glob`/`grep` pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// A NUL byte in this many leading bytes marks a file as binary.
const BINARY_SNIFF_BYTES: u64 = 8192;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadArgs {
    #[serde(alias = "file_path")]
    pub path: String,
    /// The first line to show, counting from 1.
    pub offset: Option<usize>,
    /// How many lines to show (at most [`READ_MAX_LINES`]).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WriteArgs {
    #[serde(alias = "file_path")]
    pub path: String,
    pub content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EditArgs {
    #[serde(alias = "file_path")]
    pub path: String,
    #[serde(alias = "old_string")]
    pub old_text: String,
    #[serde(alias = "new_string")]
    pub new_text: String,
    /// Replace every occurrence instead of requiring exactly one.
    #[serde(default, alias = "replace_all")]
    pub replace_all: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LsArgs {
    /// The directory; the workspace root when absent.
    pub path: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GlobArgs {
    /// Relative to `path`, `*` within a name, `**` across directories: `src/**/*.rs`.
    pub pattern: String,
    /// The directory to search; the workspace root when absent.
    pub path: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrepArgs {
    /// A regular expression (Rust `regex` syntax), or plain text with `literal`.
    pub pattern: String,
    /// A file or directory; the workspace root when absent.
    pub path: Option<String>,
    /// Only files matching this glob: on the file name when it has no `/`
    /// (`*.rs`), else on the path relative to `path` (`src/**/*.rs`).
    pub glob: Option<String>,
    #[serde(default)]
    pub ignore_case: bool,
    #[serde(default)]
    pub literal: bool,
    pub limit: Option<usize>,
}

/// `read`: a text file's lines, numbered, from `offset` for `limit` lines.
pub fn read(ws: &Workspace, args: ReadArgs) -> Result<Value, ToolError> {
    let real = ws.existing(&args.path)?;
    let io = |e: io::Error| io_error(&args.path, &e);
    let mut notes = Vec::new();
    let limit = cap(args.limit, READ_MAX_LINES, READ_MAX_LINES, &mut notes)?;
    let first = args.offset.unwrap_or(1).max(1);
    if real.is_dir() {
        return Err(ToolError::Invalid(format!("'{}' is a directory; use ls to list it", args.path)));
    }
    if !real.is_file() {
        return Err(ToolError::Invalid(format!("'{}' is not a regular file; read only reads files", args.path)));
    }
    let mut file = File::open(&real).map_err(io)?;
    if looks_binary(&mut file).map_err(io)? {
        return Err(ToolError::Invalid(format!(
            "'{}' is a binary file; read only shows text (inspect it with exec, e.g. `file` or `xxd | head`)",
            args.path
        )));
    }
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut number = 0;
    while number + 1 < first {
        if next_line(&mut reader, 0, &mut line).map_err(io)?.is_none() {
            return Err(ToolError::Invalid(format!(
                "offset {first} is past the end of '{}' ({number} lines)",
                args.path
            )));
        }
        number += 1;
    }
    let (mut content, mut cut_lines, mut more) = (String::new(), 0, false);
    while number + 1 < first + limit {
        let Some(cut) = next_line(&mut reader, READ_MAX_LINE_BYTES, &mut line).map_err(io)? else { break };
        let text = numbered(number + 1, &line, cut);
        if content.len() + text.len() > MAX_OUTPUT_BYTES {
            notes.push(format!("stopped at the {} KiB output cap.", MAX_OUTPUT_BYTES / 1024));
            more = true;
            break;
        }
        content.push_str(&text);
        cut_lines += usize::from(cut);
        number += 1;
    }
    more = more || next_line(&mut reader, 0, &mut line).map_err(io)?.is_some();
    if more {
        let next = number + 1;
        notes.push(format!("showing lines {first}-{number}; more follow: call read with offset={next} to continue."));
    }
    if cut_lines > 0 {
        notes.push(format!(
            "{cut_lines} lines longer than {READ_MAX_LINE_BYTES} bytes were cut; see them whole with grep or exec (e.g. cut -c)."
        ));
    }
    if number == 0 {
        notes.push("the file is empty.".to_owned());
    }
    let result = json!({"status": "ok", "path": ws.show(&real), "content": content, "fromLine": first,
        "toLine": number, "truncated": more});
    Ok(with_notes(result, notes))
}

/// `write`: creates or replaces a file with `content`, creating missing directories.
pub fn write(ws: &Workspace, args: WriteArgs) -> Result<Value, ToolError> {
    let bytes = args.content.len();
    if bytes > WRITE_MAX_BYTES {
        return Err(ToolError::Invalid(format!(
            "content is {bytes} bytes, over the {} MiB write limit; generate large files with exec instead",
            WRITE_MAX_BYTES >> 20
        )));
    }
    let real = ws.writable(&args.path)?;
    let io = |e: io::Error| io_error(&args.path, &e);
    let created = !real.exists();
    if let Some(parent) = real.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::write(&real, &args.content).map_err(io)?;
    Ok(json!({"status": "ok", "path": ws.show(&real), "bytes": bytes, "created": created}))
}

/// `edit`: replaces `oldText` with `newText`; it must occur exactly once unless
/// `replaceAll`.
pub fn edit(ws: &Workspace, args: EditArgs) -> Result<Value, ToolError> {
    let path = &args.path;
    if args.old_text.is_empty() {
        return Err(ToolError::Invalid(
            "oldText is empty; give the exact text to replace (use write to create a file)".to_owned(),
        ));
    }
    if args.old_text == args.new_text {
        return Err(ToolError::Invalid("oldText and newText are the same; there is nothing to change".to_owned()));
    }
    let real = ws.existing(path)?;
    let io = |e: io::Error| io_error(path, &e);
    let meta = fs::metadata(&real).map_err(io)?;
    if !meta.is_file() {
        return Err(ToolError::Invalid(format!("'{path}' is not a regular file; edit changes a file")));
    }
    if meta.len() > WRITE_MAX_BYTES as u64 {
        return Err(ToolError::Invalid(format!(
            "'{path}' is {} bytes, over the {} MiB edit limit; change it with exec (e.g. sed)",
            meta.len(),
            WRITE_MAX_BYTES >> 20
        )));
    }
    let text = String::from_utf8(fs::read(&real).map_err(io)?)
        .map_err(|_| ToolError::Invalid(format!("'{path}' is not UTF-8 text; edit only changes text files")))?;
    let count = text.matches(args.old_text.as_str()).count();
    if count == 0 {
        let crlf = if text.contains("\r\n") { " (the file has CRLF line endings)" } else { "" };
        return Err(ToolError::Invalid(format!(
            "oldText not found in '{path}'{crlf}; read the file and copy the exact text, whitespace included"
        )));
    }
    if count > 1 && !args.replace_all {
        return Err(ToolError::Invalid(format!(
            "oldText occurs {count} times in '{path}'; include more surrounding text to pick one, or set replaceAll: true to replace all"
        )));
    }
    let changed = if args.replace_all {
        text.replace(&args.old_text, &args.new_text)
    } else {
        text.replacen(&args.old_text, &args.new_text, 1)
    };
    if changed.len() > WRITE_MAX_BYTES {
        return Err(ToolError::Invalid(format!(
            "the edited file would be {} bytes, over the {} MiB limit; nothing was changed",
            changed.len(),
            WRITE_MAX_BYTES >> 20
        )));
    }
    fs::write(&real, changed).map_err(io)?;
    Ok(json!({"status": "ok", "path": ws.show(&real), "replaced": count}))
}

fn check_pattern_len(pattern: &str) -> Result<(), ToolError> {
    if pattern.is_empty() {
        return Err(ToolError::Invalid("pattern is empty; give something to search for".to_owned()));
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ToolError::Invalid(format!("pattern is longer than {MAX_PATTERN_BYTES} bytes; shorten it")));
    }
    Ok(())
}

/// `limit` checked and bounded by `max` (saying so), `default` when absent.
fn cap(limit: Option<usize>, default: usize, max: usize, notes: &mut Vec<String>) -> Result<usize, ToolError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(ToolError::Invalid("limit must be at least 1".to_owned())),
        Some(n) if n > max => {
            notes.push(format!("limit {n} was lowered to the maximum, {max}."));
            Ok(max)
        }
        Some(n) => Ok(n),
    }
}

fn with_notes(mut result: Value, notes: Vec<String>) -> Value {
    if !notes.is_empty() {
        result["note"] = Value::String(notes.join(" "));
    }
    result
}

/// Whether the file has a NUL byte near its start; leaves it rewound.
fn looks_binary(file: &mut File) -> io::Result<bool> {
    let mut head = Vec::new();
    file.take(BINARY_SNIFF_BYTES).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(head.contains(&0))
}

/// Reads the next line (without its `\n`) into `line`, keeping at most `keep` bytes of
/// it; `None` at the end of the file, else whether the line was cut.
fn next_line(reader: &mut impl BufRead, keep: usize, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let (mut cut, mut any) = (false, false);
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        let room = keep.saturating_sub(line.len());
        line.extend_from_slice(&part[..part.len().min(room)]);
        cut |= part.len() > room;
        let used = newline.map_or(part.len(), |n| n + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(cut));
        }
    }
}

/// A line as `read` shows it: right-aligned number, tab, text.
fn numbered(number: usize, line: &[u8], cut: bool) -> String {
    let (text, _) = cut_line(line, line.len());
    let marker = if cut { format!(" [… line cut at {READ_MAX_LINE_BYTES} bytes]") } else { String::new() };
    format!("{number:>6}\t{text}{marker}\n")
}

/// The line as text without a trailing `\r`, cut at `max` bytes on a character
/// boundary; whether it was cut.
fn cut_line(line: &[u8], max: usize) -> (String, bool) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut end = line.len().min(max);
    if let Err(e) = std::str::from_utf8(&line[..end]) {
        if e.error_len().is_none() {
            end = e.valid_up_to();
        }
    }
    (String::from_utf8_lossy(&line[..end]).into_owned(), end < line.len())
}

mod search;
pub use search::{glob, grep, ls};

#[cfg(test)]
mod tests;
