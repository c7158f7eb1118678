//! Reasoning levels, as OpenClaw's `thinking` spawn parameter names them, and what each
//! API makes of them.
//!
//! `openai-completions` takes the level as `reasoning_effort`. `anthropic-messages`
//! takes a thinking budget ([`super::anthropic::thinking_budget`]); the signed thinking
//! blocks of its answers are kept with the turn ([`super::Reasoning`]) and sent back
//! with it, as the API requires after a tool call.

/// A reasoning level. `off` sends nothing (the provider's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thinking {
    Off,
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

/// The levels, for error messages.
pub const LEVELS: &str = "off, minimal, low, medium, high, xhigh";

impl Thinking {
    /// A level as OpenClaw accepts it, aliases included (`adaptive` is the usual
    /// middle, `max`/`ultra` the top, `on` the lowest that thinks).
    pub fn parse(text: &str) -> Option<Thinking> {
        let level = match text.trim().to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
            "off" | "none" | "disabled" => Thinking::Off,
            "minimal" | "on" => Thinking::Minimal,
            "low" => Thinking::Low,
            "medium" | "adaptive" => Thinking::Medium,
            "high" => Thinking::High,
            "xhigh" | "extrahigh" | "max" | "ultra" => Thinking::Xhigh,
            _ => return None,
        };
        Some(level)
    }

    /// The level's name, as [`Thinking::parse`] reads it back.
    pub fn as_str(self) -> &'static str {
        match self {
            Thinking::Off => "off",
            Thinking::Minimal => "minimal",
            Thinking::Low => "low",
            Thinking::Medium => "medium",
            Thinking::High => "high",
            Thinking::Xhigh => "xhigh",
        }
    }

    /// The `reasoning_effort` of a chat-completions request, if one is sent.
    pub fn reasoning_effort(self) -> Option<&'static str> {
        match self {
            Thinking::Off => None,
            Thinking::Minimal => Some("minimal"),
            Thinking::Low => Some("low"),
            Thinking::Medium => Some("medium"),
            Thinking::High => Some("high"),
            Thinking::Xhigh => Some("xhigh"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openclaw_levels_and_aliases_are_read() {
        let cases = [
            ("high", Thinking::High),
            ("x-high", Thinking::Xhigh),
            ("Extra High", Thinking::Xhigh),
            ("adaptive", Thinking::Medium),
            ("off", Thinking::Off),
            ("on", Thinking::Minimal),
        ];
        for (text, level) in cases {
            assert_eq!(Thinking::parse(text), Some(level), "{text}");
        }
        assert_eq!(Thinking::parse("big"), None);
        assert_eq!(Thinking::Off.reasoning_effort(), None);
        assert_eq!(Thinking::Xhigh.reasoning_effort(), Some("xhigh"));
    }
}
