//! The search tools: `ls`, `glob` and `grep`, over walks that stay in the workspace.

use super::*;

/// `ls`: a directory's entries, sorted by name, directories marked `/`, symlinks `@`
/// (not followed).
pub fn ls(ws: &Workspace, args: LsArgs) -> Result<Value, ToolError> {
    let given = args.path.as_deref().unwrap_or(".");
    let real = ws.existing(given)?;
    if !real.is_dir() {
        return Err(ToolError::Invalid(format!("'{given}' is a file, not a directory; use read to see it")));
    }
    let mut notes = Vec::new();
    let limit = cap(args.limit, LIST_MAX_ENTRIES, LIST_MAX_ENTRIES, &mut notes)?;
    let io = |e: io::Error| io_error(given, &e);
    let mut entries = Vec::new();
    for entry in fs::read_dir(&real).map_err(io)? {
        let entry = entry.map_err(io)?;
        let kind = entry.file_type().map_err(io)?;
        let marker = if kind.is_dir() {
            "/"
        } else if kind.is_symlink() {
            "@"
        } else {
            ""
        };
        entries.push((entry.file_name().to_string_lossy().into_owned(), marker));
    }
    entries.sort();
    let total = entries.len();
    if total > limit {
        notes.push(format!("showing the first {limit} of {total} entries; use glob to find specific files."));
    }
    let entries: Vec<String> = entries.into_iter().take(limit).map(|(name, marker)| name + marker).collect();
    let result = json!({"status": "ok", "path": ws.show(&real), "entries": entries, "truncated": total > limit});
    Ok(with_notes(result, notes))
}

/// `glob`: files under `path` whose path relative to it matches `pattern`, sorted.
pub fn glob(ws: &Workspace, args: GlobArgs) -> Result<Value, ToolError> {
    let matcher = glob_matcher(&args.pattern)?;
    let base = search_dir(ws, args.path.as_deref())?;
    let mut notes = Vec::new();
    let limit = cap(args.limit, LIST_MAX_ENTRIES, LIST_MAX_ENTRIES, &mut notes)?;
    let mut files = Vec::new();
    let mut more = false;
    walk_files(ws, &base, &mut notes, |shown, _| {
        if !shown.strip_prefix(&base).is_ok_and(|rel| matcher.is_match(rel)) {
            return ControlFlow::Continue(());
        }
        if files.len() == limit {
            more = true;
            return ControlFlow::Break(());
        }
        files.push(ws.show(shown));
        ControlFlow::Continue(())
    });
    if more {
        notes.push(format!("more than {limit} files match; showing the first {limit}: narrow the pattern or path."));
    }
    files.sort();
    Ok(with_notes(json!({"status": "ok", "files": files, "truncated": more}), notes))
}

/// `grep`: lines matching a regex in the files under `path`, as `path:line: text`.
pub fn grep(ws: &Workspace, args: GrepArgs) -> Result<Value, ToolError> {
    check_pattern_len(&args.pattern)?;
    let source = if args.literal { regex::escape(&args.pattern) } else { args.pattern.clone() };
    let regex = RegexBuilder::new(&source).case_insensitive(args.ignore_case).build().map_err(|e| {
        ToolError::Invalid(format!(
            "invalid regex '{}': {e}\nfix the pattern, or set literal: true to search for the text as written",
            args.pattern
        ))
    })?;
    let filter = args.glob.as_deref().map(glob_matcher).transpose()?;
    let given = args.path.as_deref().unwrap_or(".");
    let base = ws.existing(given)?;
    let mut notes = Vec::new();
    let limit = cap(args.limit, GREP_DEFAULT_MATCHES, GREP_MAX_MATCHES, &mut notes)?;
    let mut search =
        Search { regex, limit, matches: Vec::new(), bytes: 0, binary: 0, large: 0, unreadable: 0, cut: 0, full: None };
    if base.is_file() {
        search.file(ws, &base, &base);
    } else {
        walk_files(ws, &base, &mut notes, |shown, open| {
            let wanted = filter.as_ref().is_none_or(|glob| {
                if glob.glob().glob().contains('/') {
                    shown.strip_prefix(&base).is_ok_and(|rel| glob.is_match(rel))
                } else {
                    shown.file_name().is_some_and(|name| glob.is_match(name))
                }
            });
            if wanted {
                search.file(ws, shown, open);
            }
            if search.full.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    }
    search.notes(&mut notes);
    let truncated = search.full.is_some();
    Ok(with_notes(json!({"status": "ok", "matches": search.matches, "truncated": truncated}), notes))
}

/// The state of one `grep` call.
struct Search {
    regex: regex::bytes::Regex,
    limit: usize,
    matches: Vec<String>,
    bytes: usize,
    binary: usize,
    large: usize,
    unreadable: usize,
    cut: usize,
    /// Why the search stopped early.
    full: Option<String>,
}

impl Search {
    /// Searches one file: `shown` names it, `open` is what to read.
    fn file(&mut self, ws: &Workspace, shown: &Path, open: &Path) {
        if fs::metadata(open).is_ok_and(|m| m.len() > GREP_MAX_FILE_BYTES) {
            self.large += 1;
            return;
        }
        let Ok(data) = fs::read(open) else {
            self.unreadable += 1;
            return;
        };
        if data.iter().take(BINARY_SNIFF_BYTES as usize).any(|&b| b == 0) {
            self.binary += 1;
            return;
        }
        let name = ws.show(shown);
        for (index, line) in data.split(|&b| b == b'\n').enumerate() {
            if !self.regex.is_match(line) {
                continue;
            }
            if self.matches.len() == self.limit {
                self.full = Some(format!("stopped at {} matches: narrow the pattern, path or glob.", self.limit));
                return;
            }
            let (text, cut) = cut_line(line, GREP_MAX_LINE_BYTES);
            let entry = format!("{name}:{}: {text}", index + 1);
            if self.bytes + entry.len() > MAX_OUTPUT_BYTES {
                self.full =
                    Some(format!("stopped at the {} KiB output cap: narrow the search.", MAX_OUTPUT_BYTES / 1024));
                return;
            }
            self.cut += usize::from(cut);
            self.bytes += entry.len();
            self.matches.push(entry);
        }
    }

    fn notes(&self, notes: &mut Vec<String>) {
        notes.extend(self.full.clone());
        if self.cut > 0 {
            notes.push(format!("{} matched lines were cut at {GREP_MAX_LINE_BYTES} bytes; read them whole.", self.cut));
        }
        if self.binary > 0 {
            notes.push(format!("skipped {} binary files.", self.binary));
        }
        if self.large > 0 {
            notes.push(format!(
                "skipped {} files over {} MiB; search them with exec.",
                self.large,
                GREP_MAX_FILE_BYTES >> 20
            ));
        }
        if self.unreadable > 0 {
            notes.push(format!("{} files could not be read and were skipped.", self.unreadable));
        }
    }
}

/// Walks the files under `base` (see the module doc), calling `visit` with the path to
/// show and the path to open (a symlink's target), in sorted order.
fn walk_files(
    ws: &Workspace,
    base: &Path,
    notes: &mut Vec<String>,
    mut visit: impl FnMut(&Path, &Path) -> ControlFlow<()>,
) {
    let walker = WalkBuilder::new(base)
        .hidden(false)
        .follow_links(false)
        .require_git(false)
        .git_global(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    let (mut visited, mut unreadable) = (0, 0);
    for entry in walker {
        visited += 1;
        if visited > WALK_MAX_ENTRIES {
            notes.push(format!("the walk stopped after {WALK_MAX_ENTRIES} entries: give a narrower path."));
            break;
        }
        let Ok(entry) = entry else {
            unreadable += 1;
            continue;
        };
        let Some(open) = inside_file(ws, &entry) else { continue };
        if visit(entry.path(), &open).is_break() {
            break;
        }
    }
    if unreadable > 0 {
        notes.push(format!("{unreadable} entries could not be read and were skipped."));
    }
}

/// The file to open for `entry`: itself when a regular file, its target when a symlink
/// to a regular file inside the workspace; nothing otherwise.
fn inside_file(ws: &Workspace, entry: &DirEntry) -> Option<PathBuf> {
    let kind = entry.file_type()?;
    if kind.is_file() {
        return Some(entry.path().to_path_buf());
    }
    if !kind.is_symlink() {
        return None;
    }
    let target = fs::canonicalize(entry.path()).ok()?;
    (target.starts_with(ws.root()) && target.is_file()).then_some(target)
}

/// A directory to search, the root when `path` is absent.
fn search_dir(ws: &Workspace, path: Option<&str>) -> Result<PathBuf, ToolError> {
    let given = path.unwrap_or(".");
    let real = ws.existing(given)?;
    if real.is_dir() {
        Ok(real)
    } else {
        Err(ToolError::Invalid(format!("'{given}' is not a directory; give the directory to search")))
    }
}

fn glob_matcher(pattern: &str) -> Result<GlobMatcher, ToolError> {
    check_pattern_len(pattern)?;
    if pattern.starts_with('/') || pattern.split('/').any(|part| part == "..") {
        return Err(ToolError::Invalid(format!(
            "glob '{pattern}' leaves the search directory; give a relative pattern such as src/**/*.rs"
        )));
    }
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| ToolError::Invalid(format!("invalid glob '{pattern}': {e}")))?;
    Ok(glob.compile_matcher())
}
