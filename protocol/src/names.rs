//! Which names a user may choose with `rename|NAME`.
//!
//! Every broadcast line reads `[ADDR]NAME: TEXT`, and `who` lists `ADDR:NAME`. A name must
//! not be able to forge any part of that: no `[`, `]`, `:` or `|`, no whitespace, and nothing
//! that could break or rewrite a terminal (see [`crate::sanitize`]), nothing invisible or
//! blank that would let two names look alike (zero-width joiners, variation selectors, tags,
//! fillers), no leading combining mark, and no `U+FFFD` (what invalid UTF-8 became). The server-assigned
//! default name (the peer's address) is not subject to these rules; because it contains `:`,
//! no chosen name can ever equal someone's default name.

use crate::limits::MAX_NAME_CHARS;
use crate::sanitize::is_unsafe;
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong {
        chars: usize,
    },
    ForbiddenChar(char),
    /// It would combine with the `]` or `:` printed before it.
    StartsWithCombiningMark(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "name must not be empty"),
            NameError::TooLong { chars } => write!(
                f,
                "name is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"
            ),
            NameError::ForbiddenChar(c) if c.is_whitespace() => {
                write!(f, "name must not contain whitespace")
            }
            NameError::StartsWithCombiningMark(c) => write!(
                f,
                "name must not start with a combining mark (found U+{:04X})",
                *c as u32
            ),
            NameError::ForbiddenChar(c) if is_unsafe(*c) || is_blank_or_invisible(*c) => write!(
                f,
                "name must not contain control or invisible characters (found U+{:04X})",
                *c as u32
            ),
            NameError::ForbiddenChar(c) => write!(f, "name must not contain '{c}'"),
        }
    }
}

impl std::error::Error for NameError {}

/// True for characters that show as nothing (or as blank) but are not whitespace: in a name
/// they would make two different names look the same, or a name look empty.
pub fn is_blank_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{034F}'                   // combining grapheme joiner
        | '\u{115F}' | '\u{1160}'   // hangul choseong/jungseong fillers
        | '\u{17B4}' | '\u{17B5}'   // khmer inherent vowels
        | '\u{180B}'..='\u{180F}'   // mongolian variation selectors
        | '\u{200B}'..='\u{200D}'   // zero-width space, non-joiner, joiner
        | '\u{2800}'                 // braille blank
        | '\u{3164}' | '\u{FFA0}'   // hangul fillers
        | '\u{FE00}'..='\u{FE0F}'   // variation selectors
        | '\u{1D173}'..='\u{1D17A}' // musical formatting
        | '\u{E0000}'..='\u{E007F}' // tags
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// True for the combining marks of the common blocks: at the start of a name they would
/// draw over the `]` or `:` before it.
pub fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{0483}'..='\u{0489}'
        | '\u{0591}'..='\u{05BD}'
        | '\u{0610}'..='\u{061A}'
        | '\u{064B}'..='\u{065F}'
        | '\u{0E31}' | '\u{0E34}'..='\u{0E3A}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{3099}' | '\u{309A}'
        | '\u{FE20}'..='\u{FE2F}'
    )
}

/// True for characters a chosen name may not contain.
pub fn is_forbidden_in_name(c: char) -> bool {
    matches!(c, '[' | ']' | ':' | '|' | crate::sanitize::REPLACEMENT)
        || c.is_whitespace()
        || is_unsafe(c)
        || is_blank_or_invisible(c)
}

/// Checks a name a user wants to take. Uniqueness is the server's business; see
/// [`name_key`] for how names are compared.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(c) = name.chars().find(|&c| is_forbidden_in_name(c)) {
        return Err(NameError::ForbiddenChar(c));
    }
    if let Some(c) = name.chars().next().filter(|&c| is_combining_mark(c)) {
        return Err(NameError::StartsWithCombiningMark(c));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong { chars });
    }
    Ok(())
}

/// The key under which names are unique: names differing only in case are the same name.
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in ["mike", "Émile", "小明", "a_b-c.d", "x🦀", &"n".repeat(32)] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn forging_and_breaking_names_fail() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_name(&"n".repeat(33)),
            Err(NameError::TooLong { chars: 33 })
        );
        for (name, c) in [
            ("[1.2.3.4:5]bob", '['),
            ("a]b", ']'),
            ("1.2.3.4:5", ':'),
            ("a|b", '|'),
            ("two words", ' '),
            ("tab\t", '\t'),
            ("esc\x1b[31m", '\x1b'),
            ("rtl\u{202E}", '\u{202E}'),
            ("nbsp\u{a0}", '\u{a0}'),
            ("bob\u{E0020}", '\u{E0020}'),
            ("b\u{200D}ob", '\u{200D}'),
            ("\u{3164}", '\u{3164}'),
            ("\u{2800}", '\u{2800}'),
            ("bo\u{FE0F}b", '\u{FE0F}'),
        ] {
            assert_eq!(
                validate_name(name),
                Err(NameError::ForbiddenChar(c)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn combining_marks_may_follow_a_letter_but_not_lead() {
        assert_eq!(validate_name("e\u{0301}mile"), Ok(()));
        assert_eq!(
            validate_name("\u{0338}x"),
            Err(NameError::StartsWithCombiningMark('\u{0338}'))
        );
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(NameError::Empty.to_string(), "name must not be empty");
        assert_eq!(
            NameError::ForbiddenChar(' ').to_string(),
            "name must not contain whitespace"
        );
        assert_eq!(
            NameError::ForbiddenChar(':').to_string(),
            "name must not contain ':'"
        );
        assert_eq!(
            NameError::ForbiddenChar('\x1b').to_string(),
            "name must not contain control or invisible characters (found U+001B)"
        );
    }

    #[test]
    fn keys_ignore_case() {
        assert_eq!(name_key("Mike"), name_key("mIKE"));
    }
}
