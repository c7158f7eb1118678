//! A session's workspace: the one directory its file tools may touch.
//!
//! Every path the model gives goes through two checks. First a pure, lexical one
//! ([`confine`]): the path is joined to the root and its `.` and `..` are resolved on the
//! text alone; a relative path may never climb above the root (`../ws/x` is refused even
//! though it would come back), an absolute one must land inside it. Then the file system
//! answers for symlinks: the path is canonicalised and must still be inside the root.
//! For writing, a file that does not exist yet is checked through its deepest existing
//! ancestor, so `write` may create missing parent directories, and only inside the root.
//! What the tools then open is the canonical path. A process that swaps a directory for a
//! symlink between the check and the open is not defended against (that needs
//! `openat`-style descriptors); the executor's own calls cannot race it. The model only
//! ever sees paths relative to the root ([`Workspace::show`]).

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::ToolError;

/// The longest path the tools accept, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// A directory every path is confined to; its root is canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    root: Arc<Path>,
}

impl Workspace {
    /// The directory must exist and be a directory; canonicalized.
    pub fn open(dir: &Path) -> Result<Workspace, ToolError> {
        let shown = dir.display().to_string();
        let root = std::fs::canonicalize(dir).map_err(|e| io_error(&shown, &e))?;
        if !root.is_dir() {
            return Err(ToolError::Invalid(format!("workspace '{shown}' is not a directory; give a directory")));
        }
        Ok(Workspace { root: Arc::from(root) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A child's workspace (`sessions_spawn {cwd}`): `cwd` relative to this root (or
    /// absolute inside it), must exist, be a directory, and stay inside after resolving
    /// symlinks. "." or "" gives the same workspace.
    pub fn narrow(&self, cwd: &str) -> Result<Workspace, ToolError> {
        if cwd.is_empty() || cwd == "." {
            return Ok(self.clone());
        }
        let real = self.existing(cwd)?;
        if !real.is_dir() {
            return Err(ToolError::Invalid(format!(
                "cwd '{cwd}' is not a directory; give a directory inside the workspace"
            )));
        }
        Ok(Workspace { root: Arc::from(real) })
    }

    /// Is `other` this workspace or inside it (used when re-checking a recorded child
    /// workspace).
    pub fn contains(&self, other: &Workspace) -> bool {
        other.root.starts_with(&self.root)
    }

    /// A path the model gave, for reading: must exist; resolved through symlinks; must be
    /// inside the root.
    pub fn existing(&self, path: &str) -> Result<PathBuf, ToolError> {
        let lexical = confine(&self.root, path)?;
        self.resolve(path, &lexical)
    }

    /// A path for writing. The file may not exist yet; then its deepest existing
    /// ancestor must resolve inside the root and be a directory, and the missing
    /// directories below it are the caller's to create (they are plain names, so they
    /// land inside). An existing file, or a symlink to one, is resolved and checked like
    /// [`existing`](Self::existing); a directory or a dangling symlink is refused.
    pub fn writable(&self, path: &str) -> Result<PathBuf, ToolError> {
        let lexical = confine(&self.root, path)?;
        if lexical.as_path() == &*self.root {
            return Err(ToolError::Invalid(format!("'{path}' is the workspace root; give a file path")));
        }
        match std::fs::symlink_metadata(&lexical) {
            Ok(meta) => {
                let real = match std::fs::canonicalize(&lexical) {
                    Ok(real) => real,
                    Err(e) if meta.file_type().is_symlink() && e.kind() == io::ErrorKind::NotFound => {
                        return Err(ToolError::Invalid(format!(
                            "'{path}' is a symlink to a missing target; write to a real path instead"
                        )));
                    }
                    Err(e) => return Err(io_error(path, &e)),
                };
                self.check_inside(path, &real)?;
                if real.is_dir() {
                    return Err(ToolError::Invalid(format!("'{path}' is a directory; give a file path")));
                }
                Ok(real)
            }
            // Not there, or a file stands where a directory should be (`new_file` says so).
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                self.new_file(path, &lexical)
            }
            Err(e) => Err(io_error(path, &e)),
        }
    }

    /// How the model sees a path: relative to the root ("." for the root).
    pub fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }

    /// A file to create: its deepest existing ancestor decides.
    fn new_file(&self, path: &str, lexical: &Path) -> Result<PathBuf, ToolError> {
        let ancestor =
            lexical.ancestors().skip(1).find(|a| std::fs::symlink_metadata(a).is_ok()).ok_or_else(|| outside(path))?;
        let real = self.resolve(path, ancestor)?;
        if !real.is_dir() {
            return Err(ToolError::Invalid(format!(
                "cannot create '{path}': '{}' is a file, not a directory",
                self.show(&real)
            )));
        }
        let rest = lexical.strip_prefix(ancestor).map_err(|_| outside(path))?;
        Ok(real.join(rest))
    }

    /// Canonicalises `lexical` and checks the result is inside the root.
    fn resolve(&self, path: &str, lexical: &Path) -> Result<PathBuf, ToolError> {
        let real = std::fs::canonicalize(lexical).map_err(|e| io_error(path, &e))?;
        self.check_inside(path, &real)?;
        Ok(real)
    }

    fn check_inside(&self, path: &str, real: &Path) -> Result<(), ToolError> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(outside(path))
        }
    }
}

/// The lexical check, without touching the disk: `given` joined to `root` (absolute
/// paths taken as they are), `.` dropped and `..` applied to the text. A relative path
/// whose `..` climbs above the root, or an absolute path that ends outside it, is
/// refused. `root` must be normalised (no `.` or `..`), as a canonical root is.
pub fn confine(root: &Path, given: &str) -> Result<PathBuf, ToolError> {
    if given.trim().is_empty() {
        return Err(ToolError::Invalid(
            "path is empty; give a path relative to the workspace root, such as src/main.rs".to_owned(),
        ));
    }
    if given.contains('\0') {
        return Err(ToolError::Invalid("path contains a NUL byte; give a plain path".to_owned()));
    }
    if given.len() > MAX_PATH_BYTES {
        return Err(ToolError::Invalid(format!("path is longer than {MAX_PATH_BYTES} bytes; give a shorter path")));
    }
    let path = Path::new(given);
    if path.is_absolute() {
        let mut out = PathBuf::new();
        for component in path.components() {
            match component {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        return if out.starts_with(root) { Ok(out) } else { Err(outside(given)) };
    }
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                out.push(name);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            // `..` above the root, or a drive prefix on a relative Windows path.
            _ => return Err(outside(given)),
        }
    }
    Ok(out)
}

fn outside(path: &str) -> ToolError {
    ToolError::OutsideWorkspace { path: path.to_owned() }
}

/// An I/O failure on `path` (as the model gave it), worded for the model.
pub(crate) fn io_error(path: &str, error: &io::Error) -> ToolError {
    let message = match error.kind() {
        io::ErrorKind::NotFound => "no such file or directory; use ls or glob to see what exists".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    };
    ToolError::Io { path: path.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn outside(path: &str) -> ToolError {
        ToolError::OutsideWorkspace { path: path.to_owned() }
    }

    #[test]
    fn confine_joins_and_normalises() {
        let root = Path::new("/ws");
        assert_eq!(confine(root, "a/b.txt"), Ok(PathBuf::from("/ws/a/b.txt")));
        assert_eq!(confine(root, "./a/./b/../c"), Ok(PathBuf::from("/ws/a/c")));
        assert_eq!(confine(root, "a/.."), Ok(PathBuf::from("/ws")));
        assert_eq!(confine(root, "."), Ok(PathBuf::from("/ws")));
        assert_eq!(confine(root, "/ws/a/../b"), Ok(PathBuf::from("/ws/b")));
        assert_eq!(confine(root, "/ws"), Ok(PathBuf::from("/ws")));
    }

    #[test]
    fn confine_refuses_leaving_the_root() {
        let root = Path::new("/ws");
        for path in ["..", "../x", "a/../../x", "../ws/x", "/etc/passwd", "/ws/../etc", "/wsx/a", "/"] {
            assert_eq!(confine(root, path), Err(outside(path)), "{path}");
        }
    }

    #[test]
    fn confine_refuses_empty_and_nul() {
        let root = Path::new("/ws");
        assert!(matches!(confine(root, ""), Err(ToolError::Invalid(_))));
        assert!(matches!(confine(root, "  "), Err(ToolError::Invalid(_))));
        assert!(matches!(confine(root, "a\0b"), Err(ToolError::Invalid(_))));
        assert!(matches!(confine(root, &"a".repeat(MAX_PATH_BYTES + 1)), Err(ToolError::Invalid(_))));
    }

    /// A workspace `ws` next to a directory `out` holding `secret.txt`.
    fn setup() -> (tempfile::TempDir, Workspace, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(base.join("ws/sub")).unwrap();
        fs::create_dir_all(base.join("out")).unwrap();
        fs::write(base.join("out/secret.txt"), "secret").unwrap();
        fs::write(base.join("ws/sub/file.txt"), "hello").unwrap();
        let ws = Workspace::open(&base.join("ws")).unwrap();
        (dir, ws, base)
    }

    #[test]
    fn open_refuses_a_file_or_nothing() {
        let (_dir, ws, base) = setup();
        assert_eq!(ws.root(), base.join("ws"));
        assert!(matches!(Workspace::open(&base.join("ws/sub/file.txt")), Err(ToolError::Invalid(_))));
        assert!(matches!(Workspace::open(&base.join("nope")), Err(ToolError::Io { .. })));
    }

    #[test]
    fn existing_reads_inside_and_refuses_escapes() {
        let (_dir, ws, base) = setup();
        assert_eq!(ws.existing("sub/file.txt"), Ok(base.join("ws/sub/file.txt")));
        let absolute = base.join("ws/sub/file.txt").display().to_string();
        assert_eq!(ws.existing(&absolute), Ok(base.join("ws/sub/file.txt")));
        assert_eq!(ws.existing("../out/secret.txt"), Err(outside("../out/secret.txt")));
        let secret = base.join("out/secret.txt").display().to_string();
        assert_eq!(ws.existing(&secret), Err(outside(&secret)));
        assert!(matches!(ws.existing("missing.txt"), Err(ToolError::Io { .. })));
    }

    #[test]
    fn symlinks_out_are_refused_for_read_and_write() {
        let (_dir, ws, base) = setup();
        symlink(base.join("out/secret.txt"), base.join("ws/link.txt")).unwrap();
        symlink(base.join("out"), base.join("ws/linkdir")).unwrap();
        for path in ["link.txt", "linkdir", "linkdir/secret.txt", "sub/../linkdir/secret.txt"] {
            assert_eq!(ws.existing(path), Err(outside(path)), "read {path}");
        }
        for path in ["link.txt", "linkdir/secret.txt", "linkdir/new.txt", "linkdir/deep/new.txt"] {
            assert_eq!(ws.writable(path), Err(outside(path)), "write {path}");
        }
    }

    #[test]
    fn symlinks_inside_are_allowed() {
        let (_dir, ws, base) = setup();
        symlink(base.join("ws/sub/file.txt"), base.join("ws/alias.txt")).unwrap();
        symlink("sub", base.join("ws/subalias")).unwrap();
        assert_eq!(ws.existing("alias.txt"), Ok(base.join("ws/sub/file.txt")));
        assert_eq!(ws.existing("subalias/file.txt"), Ok(base.join("ws/sub/file.txt")));
        assert_eq!(ws.writable("alias.txt"), Ok(base.join("ws/sub/file.txt")));
        assert_eq!(ws.writable("subalias/new.txt"), Ok(base.join("ws/sub/new.txt")));
    }

    #[test]
    fn writable_allows_new_files_and_missing_parents() {
        let (_dir, ws, base) = setup();
        assert_eq!(ws.writable("new.txt"), Ok(base.join("ws/new.txt")));
        assert_eq!(ws.writable("a/b/c.txt"), Ok(base.join("ws/a/b/c.txt")));
        assert_eq!(ws.writable("../new.txt"), Err(outside("../new.txt")));
        assert!(matches!(ws.writable("sub/file.txt/x"), Err(ToolError::Invalid(_))));
        assert!(matches!(ws.writable("sub"), Err(ToolError::Invalid(_))));
        assert!(matches!(ws.writable("."), Err(ToolError::Invalid(_))));
        symlink(base.join("ws/gone"), base.join("ws/dangling")).unwrap();
        assert!(matches!(ws.writable("dangling"), Err(ToolError::Invalid(_))));
    }

    #[test]
    fn narrow_stays_inside() {
        let (_dir, ws, base) = setup();
        assert_eq!(ws.narrow(""), Ok(ws.clone()));
        assert_eq!(ws.narrow("."), Ok(ws.clone()));
        let child = ws.narrow("sub").unwrap();
        assert_eq!(child.root(), base.join("ws/sub"));
        assert!(ws.contains(&child) && ws.contains(&ws) && !child.contains(&ws));
        assert_eq!(child.show(&base.join("ws/sub/file.txt")), "file.txt");
        symlink(base.join("out"), base.join("ws/linkdir")).unwrap();
        assert_eq!(ws.narrow("linkdir"), Err(outside("linkdir")));
        assert_eq!(ws.narrow(".."), Err(outside("..")));
        assert!(matches!(ws.narrow("sub/file.txt"), Err(ToolError::Invalid(_))));
        assert!(matches!(ws.narrow("nope"), Err(ToolError::Io { .. })));
        let sibling = Workspace::open(&base.join("out")).unwrap();
        assert!(!ws.contains(&sibling));
    }

    #[test]
    fn show_is_relative() {
        let (_dir, ws, base) = setup();
        assert_eq!(ws.show(&base.join("ws")), ".");
        assert_eq!(ws.show(&base.join("ws/sub/file.txt")), "sub/file.txt");
    }
}
