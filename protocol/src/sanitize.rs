//! The one rule for what text may reach another user's terminal.
//!
//! A chat server relays bytes from one terminal to many. Anything that can move a cursor,
//! clear a screen, ring a bell, change colours or reorder text must not pass through. So,
//! in names and messages, in both modes:
//!
//! - a tab becomes one space;
//! - every other control character (general category Cc: C0 `U+0000..=U+001F`, including ESC
//!   and CR; DEL `U+007F`; C1 `U+0080..=U+009F`) becomes `U+FFFD` (`�`);
//! - every format character (general category Cf: bidi marks, embeddings, overrides and
//!   isolates, zero-width spaces, word joiners, the BOM, soft hyphen, interlinear annotation
//!   marks, Arabic number signs, hieroglyph and shorthand format controls, ...) becomes
//!   `U+FFFD` too, so a reader can see that something was there, except the few that
//!   [`is_format_kept_in_chat`] lists;
//! - so do the line and paragraph separators (Zl, Zp) and the unassigned code points that
//!   Unicode reserves as default-ignorable (such as `U+2065`), which a newer terminal may
//!   treat as format characters.
//!
//! The categories come from the Unicode Character Database (through `unicode-properties`),
//! not from a hand-kept list, so a format character added in a later Unicode version is
//! replaced as soon as the crate knows it.
//!
//! The zero-width joiner and non-joiner, variation selectors (which are combining marks, not
//! format characters) and tag characters stay in chat text: emoji sequences and some scripts
//! are built from them, and they cannot move the cursor or reorder anything. Names refuse
//! them (see [`crate::names`]).
//!
//! Invalid UTF-8 is replaced with `U+FFFD` when bytes are decoded (see
//! [`crate::command::ClientCommand::parse_plain`]).

use std::borrow::Cow;
use unicode_properties::general_category::{GeneralCategory, UnicodeGeneralCategory};

/// The character that replaces anything unsafe.
pub const REPLACEMENT: char = '\u{FFFD}';

/// The format characters (general category Cf) that chat text keeps, each for a reason:
///
/// - `U+200C` ZERO WIDTH NON-JOINER and `U+200D` ZERO WIDTH JOINER: emoji ZWJ sequences
///   (`👨‍👩‍👧`) are built with the joiner, and Persian, Arabic and Indic scripts need both
///   to shape words correctly;
/// - the tag characters `U+E0020..=U+E007F`: emoji tag sequences (the flags of England,
///   Scotland and Wales) are spelled with them.
///
/// None of these can move the cursor or reorder text. Names refuse them all the same.
pub fn is_format_kept_in_chat(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}' | '\u{E0020}'..='\u{E007F}')
}

/// True for invisible characters that change how surrounding text is ordered or shown: the
/// format characters (Cf) other than [`is_format_kept_in_chat`]'s, the line and paragraph
/// separators, and unassigned default-ignorable code points.
pub fn is_invisible_format(c: char) -> bool {
    // Below the soft hyphen `U+00AD`, the first Cf character, there is nothing for this
    // function to find (controls are `is_unsafe`'s other half): skipping the table lookup
    // keeps ASCII chat text, the common case, as cheap as it was.
    if c < '\u{00AD}' {
        return false;
    }
    match c.general_category() {
        GeneralCategory::Format => !is_format_kept_in_chat(c),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => true,
        GeneralCategory::Unassigned => is_default_ignorable_unassigned(c),
        _ => false,
    }
}

/// True for an unassigned code point that Unicode reserves as Default_Ignorable_Code_Point
/// (`U+2065`, `U+FFF0..=U+FFF8`, most of `U+E0000..=U+E0FFF`): when it is assigned it will
/// render as nothing, like the format characters around it. Only meaningful for unassigned
/// `c`.
fn is_default_ignorable_unassigned(c: char) -> bool {
    // None of the crates used here exposes Default_Ignorable_Code_Point on its own, but
    // the UTS #39 skeleton removes exactly those code points, and an unassigned code point
    // has neither a decomposition nor a confusable prototype, so its skeleton is empty
    // exactly when it is default-ignorable.
    let mut buf = [0; 4];
    unicode_security::skeleton(c.encode_utf8(&mut buf))
        .next()
        .is_none()
}

/// True if `c` must not reach another terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Makes `text` safe to show on another user's terminal. Borrows when nothing changes,
/// which is the common case.
pub fn sanitize_text(text: &str) -> Cow<'_, str> {
    // Printable ASCII, most chat, is safe byte by byte: no decoding, no tables.
    if text.bytes().all(|b| (b' '..=b'~').contains(&b)) || !text.chars().any(is_unsafe) {
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
    fn format_characters_are_replaced_by_category_not_by_block() {
        // Cf characters the old hand-written list missed.
        assert_eq!(sanitize_text("\u{0600}12"), "\u{FFFD}12"); // Arabic number sign
        assert_eq!(sanitize_text("a\u{13430}b"), "a\u{FFFD}b"); // hieroglyph joiner
        assert_eq!(sanitize_text("a\u{E0001}b"), "a\u{FFFD}b"); // language tag
        // Unassigned: replaced where Unicode reserves it as default-ignorable, kept
        // otherwise (it may be an emoji from a newer Unicode version than this build knows).
        assert_eq!(sanitize_text("a\u{2065}b"), "a\u{FFFD}b");
        assert_eq!(sanitize_text("a\u{E0002}b"), "a\u{FFFD}b");
        assert_eq!(sanitize_text("a\u{0378}b"), "a\u{0378}b");
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
