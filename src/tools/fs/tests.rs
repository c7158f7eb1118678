use super::*;
use std::os::unix::fs::symlink;

/// A workspace `ws` next to `out/secret.txt`.
fn setup() -> (tempfile::TempDir, Workspace, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(dir.path()).unwrap();
    fs::create_dir_all(base.join("ws/src/deep")).unwrap();
    fs::create_dir_all(base.join("out")).unwrap();
    fs::write(base.join("out/secret.txt"), "needle outside\n").unwrap();
    fs::write(base.join("ws/src/main.rs"), "fn main() {\n    println!(\"Needle\");\n}\n").unwrap();
    fs::write(base.join("ws/src/deep/lib.rs"), "// needle\n").unwrap();
    fs::write(base.join("ws/notes.txt"), "one\ntwo\nneedle three\n").unwrap();
    let ws = Workspace::open(&base.join("ws")).unwrap();
    (dir, ws, base)
}

fn parse<T: for<'de> Deserialize<'de>>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn invalid<T: std::fmt::Debug>(result: Result<T, ToolError>) -> String {
    match result {
        Err(ToolError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn args_use_openclaw_names_and_claude_aliases() {
    let a: EditArgs = parse(json!({"path": "a", "oldText": "x", "newText": "y", "replaceAll": true}));
    assert!(a.replace_all && a.old_text == "x");
    let b: EditArgs = parse(json!({"file_path": "a", "old_string": "x", "new_string": ""}));
    assert_eq!((b.path.as_str(), b.new_text.as_str(), b.replace_all), ("a", "", false));
    assert!(serde_json::from_value::<ReadArgs>(json!({"path": "a", "lines": 3})).is_err());
    let g: GrepArgs = parse(json!({"pattern": "x", "ignoreCase": true, "glob": "*.rs"}));
    assert!(g.ignore_case && !g.literal);
}

#[test]
fn read_numbers_lines_and_pages() {
    let (_dir, ws, _) = setup();
    let all = read(&ws, parse(json!({"path": "notes.txt"}))).unwrap();
    assert_eq!(
        all,
        json!({"status": "ok", "path": "notes.txt", "content": "     1\tone\n     2\ttwo\n     3\tneedle three\n",
            "fromLine": 1, "toLine": 3, "truncated": false})
    );
    let page = read(&ws, parse(json!({"path": "notes.txt", "offset": 2, "limit": 1}))).unwrap();
    assert_eq!(page["content"], "     2\ttwo\n");
    assert_eq!(page["truncated"], true);
    assert!(page["note"].as_str().unwrap().contains("offset=3"));
    let past = invalid(read(&ws, parse(json!({"path": "notes.txt", "offset": 9}))));
    assert!(past.contains("past the end") && past.contains("3 lines"));
    assert!(invalid(read(&ws, parse(json!({"path": "notes.txt", "limit": 0})))).contains("limit"));
    assert!(invalid(read(&ws, parse(json!({"path": "src"})))).contains("directory"));
}

#[test]
fn read_caps_lines_bytes_and_long_lines() {
    let (_dir, ws, base) = setup();
    let many: String = (1..=READ_MAX_LINES + 5).map(|n| format!("{n}\n")).collect();
    fs::write(base.join("ws/many.txt"), many).unwrap();
    let first = read(&ws, parse(json!({"path": "many.txt", "limit": 99999}))).unwrap();
    assert_eq!(first["toLine"], READ_MAX_LINES);
    let note = first["note"].as_str().unwrap();
    assert!(note.contains("lowered") && note.contains(&format!("offset={}", READ_MAX_LINES + 1)), "{note}");
    let line = "x".repeat(READ_MAX_LINE_BYTES * 3);
    fs::write(base.join("ws/wide.txt"), format!("{line}\n").repeat(500)).unwrap();
    let wide = read(&ws, parse(json!({"path": "wide.txt"}))).unwrap();
    let content = wide["content"].as_str().unwrap();
    assert!(content.len() <= MAX_OUTPUT_BYTES && wide["truncated"] == true);
    assert!(content.lines().all(|l| l.len() < READ_MAX_LINE_BYTES + 64));
    let note = wide["note"].as_str().unwrap();
    assert!(note.contains("output cap") && note.contains("were cut"), "{note}");
}

#[test]
fn read_refuses_binary_and_outside() {
    let (_dir, ws, base) = setup();
    fs::write(base.join("ws/blob.bin"), [0x7f, b'E', 0, 1, 2]).unwrap();
    assert!(invalid(read(&ws, parse(json!({"path": "blob.bin"})))).contains("binary"));
    let escape = read(&ws, parse(json!({"path": "../out/secret.txt"})));
    assert_eq!(escape, Err(ToolError::OutsideWorkspace { path: "../out/secret.txt".into() }));
    let empty = base.join("ws/empty.txt");
    fs::write(&empty, "").unwrap();
    let result = read(&ws, parse(json!({"path": "empty.txt"}))).unwrap();
    assert_eq!((result["content"].as_str(), result["note"].as_str()), (Some(""), Some("the file is empty.")));
}

#[test]
fn write_creates_replaces_and_caps() {
    let (_dir, ws, base) = setup();
    let made = write(&ws, parse(json!({"path": "new/dir/a.txt", "content": "héllo"}))).unwrap();
    assert_eq!(made, json!({"status": "ok", "path": "new/dir/a.txt", "bytes": 6, "created": true}));
    let replaced = write(&ws, parse(json!({"path": "new/dir/a.txt", "content": "x"}))).unwrap();
    assert_eq!(replaced["created"], false);
    assert_eq!(fs::read_to_string(base.join("ws/new/dir/a.txt")).unwrap(), "x");
    let big = WriteArgs { path: "big.txt".into(), content: "x".repeat(WRITE_MAX_BYTES + 1) };
    assert!(invalid(write(&ws, big)).contains("write limit"));
    assert!(!base.join("ws/big.txt").exists());
    symlink(base.join("out"), base.join("ws/outlink")).unwrap();
    let escape = write(&ws, parse(json!({"path": "outlink/x.txt", "content": "x"})));
    assert_eq!(escape, Err(ToolError::OutsideWorkspace { path: "outlink/x.txt".into() }));
    assert!(!base.join("out/x.txt").exists());
}

#[test]
fn edit_replaces_once_all_or_fails_clearly() {
    let (_dir, ws, base) = setup();
    let file = base.join("ws/e.txt");
    fs::write(&file, "a b a\n").unwrap();
    let absent = invalid(edit(&ws, parse(json!({"path": "e.txt", "oldText": "zzz", "newText": "y"}))));
    assert!(absent.contains("not found"), "{absent}");
    let twice = invalid(edit(&ws, parse(json!({"path": "e.txt", "oldText": "a", "newText": "c"}))));
    assert!(twice.contains("2 times") && twice.contains("replaceAll"), "{twice}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "a b a\n");
    let one = edit(&ws, parse(json!({"path": "e.txt", "oldText": "b", "newText": "B"}))).unwrap();
    assert_eq!(one, json!({"status": "ok", "path": "e.txt", "replaced": 1}));
    let all = edit(&ws, parse(json!({"path": "e.txt", "oldText": "a", "newText": "", "replaceAll": true}))).unwrap();
    assert_eq!(all["replaced"], 2);
    assert_eq!(fs::read_to_string(&file).unwrap(), " B \n");
    assert!(invalid(edit(&ws, parse(json!({"path": "e.txt", "oldText": "", "newText": "x"})))).contains("empty"));
    fs::write(base.join("ws/big.txt"), vec![b'a'; WRITE_MAX_BYTES + 1]).unwrap();
    let big = invalid(edit(&ws, parse(json!({"path": "big.txt", "oldText": "a", "newText": "b"}))));
    assert!(big.contains("edit limit"), "{big}");
}

#[test]
fn ls_marks_sorts_and_caps() {
    let (_dir, ws, base) = setup();
    symlink(base.join("out"), base.join("ws/outlink")).unwrap();
    let listed = ls(&ws, LsArgs::default()).unwrap();
    assert_eq!(
        listed,
        json!({"status": "ok", "path": ".", "entries": ["notes.txt", "outlink@", "src/"], "truncated": false})
    );
    let capped = ls(&ws, parse(json!({"path": "src", "limit": 1}))).unwrap();
    assert_eq!(capped["entries"], json!(["deep/"]));
    assert!(capped["note"].as_str().unwrap().contains("first 1 of 2"));
    assert!(invalid(ls(&ws, parse(json!({"path": "notes.txt"})))).contains("not a directory"));
}

#[test]
fn glob_matches_relative_sorted_and_stays_inside() {
    let (_dir, ws, base) = setup();
    symlink(base.join("out"), base.join("ws/src/outlink")).unwrap();
    symlink(base.join("out/secret.txt"), base.join("ws/secret.txt")).unwrap();
    symlink(base.join("ws/notes.txt"), base.join("ws/alias.txt")).unwrap();
    let rs = glob(&ws, parse(json!({"pattern": "src/**/*.rs"}))).unwrap();
    assert_eq!(rs, json!({"status": "ok", "files": ["src/deep/lib.rs", "src/main.rs"], "truncated": false}));
    let top = glob(&ws, parse(json!({"pattern": "*.txt"}))).unwrap();
    assert_eq!(top["files"], json!(["alias.txt", "notes.txt"]));
    let all = glob(&ws, parse(json!({"pattern": "**"}))).unwrap();
    assert!(all["files"].as_array().unwrap().iter().all(|f| !f.as_str().unwrap().contains("secret")));
    let under = glob(&ws, parse(json!({"pattern": "*.rs", "path": "src/deep"}))).unwrap();
    assert_eq!(under["files"], json!(["src/deep/lib.rs"]));
    let capped = glob(&ws, parse(json!({"pattern": "**/*", "limit": 2}))).unwrap();
    assert_eq!(capped["truncated"], true);
    assert!(capped["note"].as_str().unwrap().contains("more than 2"));
    assert!(invalid(glob(&ws, parse(json!({"pattern": "../out/*"})))).contains("relative"));
    let escape = glob(&ws, parse(json!({"pattern": "*", "path": "src/outlink"})));
    assert_eq!(escape, Err(ToolError::OutsideWorkspace { path: "src/outlink".into() }));
}

#[test]
fn glob_respects_gitignore() {
    let (_dir, ws, base) = setup();
    fs::write(base.join("ws/.gitignore"), "target/\n").unwrap();
    fs::create_dir_all(base.join("ws/target")).unwrap();
    fs::write(base.join("ws/target/out.rs"), "").unwrap();
    let found = glob(&ws, parse(json!({"pattern": "**/*.rs"}))).unwrap();
    assert_eq!(found["files"], json!(["src/deep/lib.rs", "src/main.rs"]));
}

#[test]
fn grep_finds_lines_and_never_leaves() {
    let (_dir, ws, base) = setup();
    symlink(base.join("out"), base.join("ws/outlink")).unwrap();
    symlink(base.join("out/secret.txt"), base.join("ws/secret.txt")).unwrap();
    let found = grep(&ws, parse(json!({"pattern": "needle"}))).unwrap();
    assert_eq!(
        found,
        json!({"status": "ok", "matches": ["notes.txt:3: needle three", "src/deep/lib.rs:1: // needle"],
            "truncated": false})
    );
    let loud = grep(&ws, parse(json!({"pattern": "needle", "ignoreCase": true, "glob": "*.rs"}))).unwrap();
    assert_eq!(loud["matches"], json!(["src/deep/lib.rs:1: // needle", "src/main.rs:2:     println!(\"Needle\");"]));
    let one = grep(&ws, parse(json!({"pattern": "two", "path": "notes.txt"}))).unwrap();
    assert_eq!(one["matches"], json!(["notes.txt:2: two"]));
    let literal = grep(&ws, parse(json!({"pattern": "main()", "literal": true}))).unwrap();
    assert_eq!(literal["matches"], json!(["src/main.rs:1: fn main() {"]));
}

#[test]
fn grep_reports_bad_regex_binary_and_caps() {
    let (_dir, ws, base) = setup();
    let bad = invalid(grep(&ws, parse(json!({"pattern": "fn (main"}))));
    assert!(bad.starts_with("invalid regex 'fn (main'") && bad.contains("literal"), "{bad}");
    fs::write(base.join("ws/blob.bin"), b"needle\0").unwrap();
    let mut big = b"needle\n".to_vec();
    big.resize(GREP_MAX_FILE_BYTES as usize + 1, b'x');
    fs::write(base.join("ws/big.log"), big).unwrap();
    let found = grep(&ws, parse(json!({"pattern": "needle", "limit": 1}))).unwrap();
    assert_eq!(found["matches"], json!(["notes.txt:3: needle three"]));
    let note = found["note"].as_str().unwrap();
    assert!(note.contains("stopped at 1 matches"), "{note}");
    let all = grep(&ws, parse(json!({"pattern": "needle"}))).unwrap();
    let note = all["note"].as_str().unwrap();
    assert!(note.contains("1 binary") && note.contains("over 4 MiB") && all["truncated"] == false, "{note}");
    fs::write(base.join("ws/long.txt"), format!("needle{}\n", "y".repeat(1000))).unwrap();
    let long = grep(&ws, parse(json!({"pattern": "needle", "path": "long.txt"}))).unwrap();
    assert!(long["matches"][0].as_str().unwrap().len() < GREP_MAX_LINE_BYTES + 20);
    assert!(long["note"].as_str().unwrap().contains("cut"));
}

#[test]
fn next_line_bounds_and_cuts() {
    let mut reader = io::Cursor::new(b"abcdef\r\nxy".to_vec());
    let mut line = Vec::new();
    assert_eq!(next_line(&mut reader, 3, &mut line).unwrap(), Some(true));
    assert_eq!(line, b"abc");
    assert_eq!(next_line(&mut reader, 3, &mut line).unwrap(), Some(false));
    assert_eq!(line, b"xy");
    assert_eq!(next_line(&mut reader, 3, &mut line).unwrap(), None);
    assert_eq!(cut_line("héllo".as_bytes(), 2), ("h".to_owned(), true));
    assert_eq!(cut_line(b"ab\r", 10), ("ab".to_owned(), false));
}
