//! The one rule for what text may reach another user's terminal.
//!
//! A chat server relays bytes from one terminal to many. Anything that can move a cursor,
//! clear a screen, ring a bell, change colours or reorder text must not pass through. So,
//! in names and messages, in both modes:
//!
//! - a tab becomes one space;
//! - every other control character (C0 `U+0000..=U+001F`, including ESC and CR; DEL `U+007F`;
//!   C1 `U+0080..=U+009F`) becomes `U+FFFD` (`�`);
//! - invisible formatting characters that reorder or hide text (bidi marks, embeddings,
//!   overrides and isolates, zero-width spaces, word joiners, the BOM, soft hyphen,
//!   interlinear annotation marks, line and paragraph separators) become `U+FFFD` too, so a
//!   reader can see that something was there.
//!
//! The zero-width joiner and non-joiner, variation selectors and tag characters stay in chat
//! text: emoji sequences and some scripts are built from them, and they cannot move the
//! cursor or reorder anything. Names refuse them (see [`crate::names`]).
//!
//! Invalid UTF-8 is replaced with `U+FFFD` when bytes are decoded (see
//! [`crate::command::ClientCommand::parse_plain`]).

use std::borrow::Cow;

/// The character that replaces anything unsafe.
pub const REPLACEMENT: char = '\u{FFFD}';

/// True for invisible characters that change how surrounding text is ordered or shown.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                  // soft hyphen
        | '\u{061C}'                // arabic letter mark
        | '\u{180E}'                // mongolian vowel separator
        | '\u{200B}'                // zero-width space
        | '\u{200E}'..='\u{200F}'   // LRM, RLM
        | '\u{2028}'..='\u{2029}'   // line and paragraph separators
        | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
        | '\u{2060}'..='\u{206F}'   // word joiner, invisible operators, bidi isolates
        | '\u{FEFF}'                // BOM / zero-width no-break space
        | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotation
    )
}

/// True if `c` must not reach another terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Makes `text` safe to show on another user's terminal. Borrows when nothing changes,
/// which is the common case.
pub fn sanitize_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\t' => ' ',
                c if is_unsafe(c) => REPLACEMENT,
                c => c,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(sanitize_text("hello, 世界 👋"), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_controls_are_replaced() {
        assert_eq!(sanitize_text("a\x1b[2Jb"), "a\u{FFFD}[2Jb");
        assert_eq!(sanitize_text("bell\x07"), "bell\u{FFFD}");
        assert_eq!(sanitize_text("cr\rx"), "cr\u{FFFD}x");
        assert_eq!(sanitize_text("del\x7f"), "del\u{FFFD}");
        assert_eq!(sanitize_text("c1\u{9b}31m"), "c1\u{FFFD}31m");
        assert_eq!(sanitize_text("tab\there"), "tab here");
    }

    #[test]
    fn bidi_overrides_are_replaced() {
        assert_eq!(sanitize_text("abc\u{202E}fed"), "abc\u{FFFD}fed");
        assert_eq!(sanitize_text("x\u{2066}y\u{2069}"), "x\u{FFFD}y\u{FFFD}");
        assert_eq!(sanitize_text("zero\u{200B}width"), "zero\u{FFFD}width");
    }

    #[test]
    fn emoji_sequences_survive() {
        for text in [
            "👨\u{200D}👩\u{200D}👧",
            "❤\u{FE0F}",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        ] {
            assert_eq!(sanitize_text(text), text);
        }
    }
}
