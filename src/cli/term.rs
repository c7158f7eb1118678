//! The terminal side of the live view (`live.rs` is the pure side): the size of the
//! terminal on stdout, the [`Painter`] that draws a [`LiveTree`] there (at most ten
//! frames a second, only when one differs from the last), and [`Interrupts`], the Ctrl-C
//! that `run` and `agent` answer by killing their tree; a second one exits at once.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::live::{LiveTree, Screen, Throttle, REDRAW_GAP_MS};

/// The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells use.
pub const INTERRUPTED: i32 = 130;

/// How often the live view looks whether it should redraw.
pub const TICK: Duration = Duration::from_millis(REDRAW_GAP_MS);

/// Milliseconds since the Unix epoch (the gateway's event timestamps are too).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// (rows, columns) of the terminal on stdout; (0, 0) when not known.
pub fn size() -> (usize, usize) {
    #[cfg(unix)]
    {
        let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to a
        // live, properly aligned one; on error it writes nothing and returns -1.
        let status = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
        if status == 0 {
            return (usize::from(size.ws_row), usize::from(size.ws_col));
        }
    }
    (0, 0)
}

/// Write to stdout now; a closed stdout is not an error worth stopping a run for.
fn write(bytes: &str) {
    if bytes.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes.as_bytes());
    let _ = out.flush();
}

/// Draws a [`LiveTree`] on the terminal, in place; when `live` is off it only keeps it.
#[derive(Debug)]
pub struct Painter {
    pub tree: LiveTree,
    live: bool,
    screen: Screen,
    throttle: Throttle,
    last: Vec<String>,
    /// A line under the tree (what happens after a Ctrl-C).
    note: Option<String>,
}

impl Painter {
    pub fn new(tree: LiveTree, live: bool) -> Painter {
        Painter { tree, live, screen: Screen::default(), throttle: Throttle::default(), last: Vec::new(), note: None }
    }

    /// Say `note` under the tree (drawn at the next frame).
    pub fn note(&mut self, note: String) {
        self.note = Some(note);
    }

    /// Redraw if the throttle allows and the frame changed.
    pub fn draw(&mut self) {
        let now = now_ms();
        // Nothing of the followed run known yet: no frame, and the first one is not held
        // back by the throttle when it comes.
        if self.live && self.tree.root_key().is_some() && self.throttle.ready(now) {
            self.paint(now);
        }
    }

    fn paint(&mut self, now: u64) {
        let (rows, cols) = size();
        let mut lines = self.tree.lines(now, rows.saturating_sub(usize::from(self.note.is_some())), cols);
        lines.extend(self.note.clone());
        if lines != self.last {
            write(&self.screen.frame(&lines));
            self.last = lines;
        }
    }

    /// Erase the tree (the final report replaces it).
    pub fn clear(&mut self) {
        write(&self.screen.clear());
    }

    /// Draw the tree as it is now and leave it on the screen.
    pub fn leave(&mut self) {
        if self.live && self.tree.root_key().is_some() {
            self.paint(now_ms());
        }
        write(&self.screen.leave());
    }
}

/// Show the cursor again (if the live view hid it) and exit with [`INTERRUPTED`] now.
pub fn exit_now(live: bool) -> ! {
    if live {
        write("\x1b[?25h\n");
    }
    eprintln!("interrupted again: exiting without waiting for the tree to stop");
    std::process::exit(INTERRUPTED)
}

/// Ctrl-C (SIGINT), caught from the moment this is made: the process is no longer
/// killed by it, the command decides.
pub struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    pub fn new() -> std::io::Result<Interrupts> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            Ok(Interrupts { signal })
        }
        #[cfg(not(unix))]
        {
            Ok(Interrupts {})
        }
    }

    /// The next Ctrl-C.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
