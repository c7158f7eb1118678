//! Redrawing in place: [`Screen`] turns a frame's lines into the bytes that replace the
//! last frame, [`Throttle`] bounds how often that happens.

use std::fmt::Write as _;

use super::REDRAW_GAP_MS;

/// Redraws lines in place: up over the last frame, each line cleared to its end, then
/// the rest of the screen cleared. The cursor is hidden while frames are drawn.
#[derive(Debug, Default)]
pub struct Screen {
    drawn: usize,
    shown: bool,
}

impl Screen {
    /// The bytes that replace the last frame with `lines`.
    pub fn frame(&mut self, lines: &[String]) -> String {
        let mut out = String::new();
        match self.drawn {
            0 if !self.shown => out.push_str("\x1b[?25l"),
            0 => {}
            n => {
                let _ = write!(out, "\x1b[{n}A\r");
            }
        }
        for line in lines {
            out.push_str(line);
            out.push_str("\x1b[K\n");
        }
        out.push_str("\x1b[J");
        self.drawn = lines.len();
        self.shown = true;
        out
    }

    /// The bytes that erase the last frame and show the cursor again.
    pub fn clear(&mut self) -> String {
        let mut out = match self.drawn {
            0 => String::new(),
            n => format!("\x1b[{n}A\r\x1b[J"),
        };
        out.push_str(&self.leave());
        out
    }

    /// The bytes that leave the last frame on the screen and show the cursor again.
    pub fn leave(&mut self) -> String {
        self.drawn = 0;
        match std::mem::take(&mut self.shown) {
            true => "\x1b[?25h".to_string(),
            false => String::new(),
        }
    }
}

/// At most one redraw per [`REDRAW_GAP_MS`]; the first at once.
#[derive(Debug, Default)]
pub struct Throttle {
    last_ms: Option<u64>,
}

impl Throttle {
    /// Whether a redraw may happen at `now_ms` (and if so, it is counted as done).
    pub fn ready(&mut self, now_ms: u64) -> bool {
        match self.last_ms {
            Some(last) if now_ms.saturating_sub(last) < REDRAW_GAP_MS => false,
            _ => {
                self.last_ms = Some(now_ms);
                true
            }
        }
    }
}
