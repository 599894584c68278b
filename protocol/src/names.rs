//! Which names a user may choose with `rename|NAME`, and when two names are the same.
//!
//! Every broadcast line reads `[ADDR]NAME: TEXT`, and `who` lists `ADDR:NAME`. A name must
//! not be able to forge any part of that: no `[`, `]`, `:` or `|`, no whitespace, and nothing
//! that could break or rewrite a terminal (see [`crate::sanitize`]). It must not hide
//! anything either: no format character (general category Cf, including the zero-width
//! joiners and tags that chat text keeps), no other default-ignorable character (variation
//! selectors, Hangul fillers, ...), no blank such as the braille blank, no unassigned code
//! point, no leading combining mark (general category M), and no `U+FFFD` (what invalid
//! UTF-8 became). The server-assigned default name (the peer's address) is not subject to
//! these rules; because it contains `:`, no chosen name can ever equal someone's default name.
//!
//! Names are unique by [`name_key`]: compatibility-normalized, case-folded and reduced to
//! their Unicode confusable skeleton, so `Bob`, `ｂｏｂ` and `bоb` (Cyrillic `о`) are one name.
//! The character properties and the confusables data come from the Unicode Character
//! Database and UTS #39 through the `unicode-rs` crates, not from hand-kept lists.

use crate::limits::MAX_NAME_CHARS;
use crate::sanitize::is_unsafe;
use caseless::Caseless;
use std::fmt;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::general_category::{GeneralCategory, UnicodeGeneralCategory};
use unicode_security::GeneralSecurityProfile;
use unicode_security::general_security_profile::IdentifierType;

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
            NameError::ForbiddenChar(c) if c.general_category() == GeneralCategory::Unassigned => {
                write!(
                    f,
                    "name must not contain unassigned characters (found U+{:04X})",
                    *c as u32
                )
            }
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
///
/// That is every format character (Cf, including the joiners and tags that chat text keeps),
/// every other character UTS #39 types as default-ignorable (variation selectors, the
/// combining grapheme joiner, Hangul fillers, Khmer inherent vowels, ...), every unassigned
/// code point (nobody knows what it will look like, and Unicode reserves some of them as
/// default-ignorable), and the braille pattern blank `U+2800`, a visible character with no
/// dots that no Unicode property marks as blank.
pub fn is_blank_or_invisible(c: char) -> bool {
    match c.general_category() {
        GeneralCategory::Format | GeneralCategory::Unassigned => true,
        _ => c == '\u{2800}' || c.identifier_type() == Some(IdentifierType::Default_Ignorable),
    }
}

/// True for combining marks (general category M: Mn, Mc, Me): at the start of a name they
/// would draw over the `]` or `:` before it.
pub fn is_combining_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
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

/// The key under which names are unique: two names with the same key are the same name or
/// look alike, and only one person may hold them at a time.
///
/// The key is `toCasefold(skeleton(C(name)))` followed by NFD, where
///
/// - `C` is Unicode's compatibility caseless form (definition D146:
///   `NFKD(toCasefold(NFKD(toCasefold(NFD(name)))))`), so canonically equivalent spellings
///   (`émile` composed or decomposed), compatibility variants (`ｂｏｂ`, `𝐛𝐨𝐛`, `ﬁ`) and
///   case (`Bob`, `bOB`, and by full case folding `Straße` and `STRASSE`) do not matter;
/// - `skeleton` is the UTS #39 confusable skeleton, so letters that look alike across or
///   within scripts do not matter either: Cyrillic `о` and Latin `o`, `rn` and `m`, `0` and
///   `o`, `1` and `l`;
/// - the last case fold is there because some skeleton prototypes are capitals (`0` becomes
///   `O`), and without it `b0b` would not meet `bob`.
///
/// Folding case before the skeleton is what keeps every case variant of a name one name,
/// but it means look-alikes that only capitals share are not caught by this key alone:
/// Cyrillic `В` looks like `B`, yet folds to `в`, which does not look like `b`. The room
/// compares [`name_keys`], which adds a key that takes the skeleton before folding.
///
/// The key is for comparing, never for showing: it is a mix of scripts and prototypes.
/// In a release build an ASCII name costs tens of nanoseconds (a table lookup per
/// character), a typical accented or non-Latin name one to two microseconds, and the worst
/// 32-character names (every character decomposing) under ten.
pub fn name_key(name: &str) -> String {
    if name.is_ascii() {
        // On ASCII every step of the key works character by character: no ASCII character
        // decomposes or folds to anything that could reorder with its neighbours (the tests
        // check every pair), so the key of an ASCII name is the keys of its characters one
        // after another. A table computed once, by the full computation, saves the
        // normalization passes in the common case.
        let table = ascii_keys();
        return name
            .bytes()
            .map(|b| table[usize::from(b)].as_str())
            .collect();
    }
    full_name_key(name)
}

/// Every key under which `name` is held: [`name_key`], and, when it differs, the key that
/// takes the skeleton of the name as written and folds case after it, which catches
/// look-alikes that only capitals share (`Вob` with a Cyrillic `В` and `Bob`, `ВОВ` and
/// `BOB`, `Iris` and `lris`). Two names clash when any of their keys is the same.
pub fn name_keys(name: &str) -> Vec<String> {
    let folded = name_key(name);
    let as_written: String = unicode_security::skeleton(&name.nfkd().collect::<String>())
        .default_case_fold()
        .nfd()
        .collect();
    if as_written == folded {
        vec![folded]
    } else {
        vec![folded, as_written]
    }
}

/// True if `a` and `b` share a key: the same or look-alike names.
pub fn names_clash(a: &str, b: &str) -> bool {
    let b = name_keys(b);
    name_keys(a).iter().any(|key| b.contains(key))
}

/// [`name_key`] computed in full, for any string.
fn full_name_key(name: &str) -> String {
    let caseless: String = name
        .chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkd()
        .collect();
    unicode_security::skeleton(&caseless)
        .default_case_fold()
        .nfd()
        .collect()
}

/// The key of each ASCII character, indexed by its byte.
fn ascii_keys() -> &'static [String; 128] {
    static TABLE: OnceLock<[String; 128]> = OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|b| {
            // `b` < 128, so it is an ASCII byte and a char; the cast cannot truncate.
            full_name_key(char::from(b as u8).encode_utf8(&mut [0; 4]))
        })
    })
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

    #[test]
    fn look_alike_names_share_a_key() {
        for (a, b) in [
            ("bob", "b\u{043E}b"),          // Cyrillic о
            ("\u{E9}mile", "e\u{301}mile"), // é composed (NFC) and decomposed (NFD)
            ("\u{C9}MILE", "e\u{301}mile"), // ... and in capitals
            ("ｂｏｂ", "bob"),              // fullwidth
            ("𝐛𝐨𝐛", "Bob"),                 // mathematical bold
            ("ﬁona", "fiona"),              // ligature
            ("Straße", "STRASSE"),          // full case folding: ß is ss
            ("m", "rn"),                    // the UTS #39 skeleton of m is rn
            ("b0b", "bob"),                 // digit zero's prototype is O, folded to o
            ("bi11", "bill"),               // digit one's prototype is l
            ("ΑΒΓ", "αβγ"),                 // Greek case
            ("Σίσυφος", "ΣΊΣΥΦΟΣ"),         // final sigma folds like sigma
        ] {
            assert_eq!(name_key(a), name_key(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn different_names_keep_different_keys() {
        for (a, b) in [
            ("bob", "rob"),
            ("alice", "alicia"),
            ("\u{E9}mile", "emile"), // an accent is part of the name
            ("Straße", "Strase"),
            ("小明", "小朋"),
            ("bob", "bob_"),
            ("x🦀", "x🦞"),
        ] {
            assert_ne!(name_key(a), name_key(b), "{a:?} vs {b:?}");
        }
    }

    /// The key that folds case first misses look-alikes only capitals share (see
    /// [`name_key`]); the second key of [`name_keys`] catches them.
    #[test]
    fn look_alikes_only_capitals_share_are_caught_by_the_second_key() {
        assert_ne!(name_key("\u{0412}ob"), name_key("Bob")); // Cyrillic В
        assert_ne!(name_key("Iris"), name_key("lris")); // capital I, small L
        for (a, b) in [
            ("\u{0412}ob", "Bob"),
            ("\u{0412}\u{041E}\u{0412}", "BOB"),
            ("Iris", "lris"),
            ("bob", "BOB"),
            ("\u{0432}ob", "\u{0412}OB"),
        ] {
            assert!(names_clash(a, b), "{a:?} vs {b:?}");
            assert!(names_clash(b, a), "{b:?} vs {a:?}");
        }
        for (a, b) in [("bob", "rob"), ("alice", "alicia"), ("Iris", "Ivan")] {
            assert!(!names_clash(a, b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn ascii_keys_are_the_full_keys() {
        let table = ascii_keys();
        for a in 0..128u8 {
            assert_eq!(
                table[usize::from(a)],
                full_name_key(char::from(a).encode_utf8(&mut [0; 4]))
            );
            // Pairs: the only place where one character's key could interact with its
            // neighbour's (by canonical reordering) is where they meet.
            for b in 0..128u8 {
                let pair = String::from_utf8(vec![a, b]).expect("ASCII is UTF-8");
                assert_eq!(name_key(&pair), full_name_key(&pair), "{pair:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_names_key_as_computed_in_full(name in "[\\x00-\\x7f]{0,40}") {
            proptest::prop_assert_eq!(name_key(&name), full_name_key(&name));
        }
    }

    #[test]
    fn a_combining_mark_from_any_block_may_not_lead() {
        // None of these were in the hand-written list of blocks this rule used to have.
        for mark in [
            '\u{0E47}',  // Thai maitaikhu (Mn)
            '\u{0951}',  // Devanagari stress sign udatta (Mn)
            '\u{0903}',  // Devanagari sign visarga (Mc)
            '\u{302A}',  // ideographic level tone mark (Mn)
            '\u{11000}', // Brahmi sign candrabindu (Mc)
            '\u{1E8D0}', // Mende Kikakui combining number teens (Mn)
        ] {
            assert_eq!(
                validate_name(&format!("{mark}x")),
                Err(NameError::StartsWithCombiningMark(mark)),
                "U+{:04X}",
                mark as u32
            );
            assert_eq!(validate_name(&format!("x{mark}")), Ok(()));
        }
    }

    #[test]
    fn invisible_and_unassigned_characters_from_any_block_are_refused() {
        for c in [
            '\u{0600}',  // Arabic number sign (Cf)
            '\u{034F}',  // combining grapheme joiner (default-ignorable Mn)
            '\u{17B4}',  // Khmer inherent vowel (default-ignorable Mn)
            '\u{180B}',  // Mongolian free variation selector (default-ignorable Mn)
            '\u{FFA0}',  // halfwidth Hangul filler (default-ignorable Lo)
            '\u{13430}', // Egyptian hieroglyph vertical joiner (Cf)
            '\u{1BCA0}', // shorthand format letter overlap (Cf)
            '\u{E0001}', // language tag (Cf)
            '\u{E0100}', // variation selector 17 (default-ignorable Mn)
            '\u{2065}',  // unassigned, reserved default-ignorable
            '\u{0378}',  // unassigned
        ] {
            assert_eq!(
                validate_name(&format!("bob{c}")),
                Err(NameError::ForbiddenChar(c)),
                "U+{:04X}",
                c as u32
            );
        }
        assert_eq!(
            NameError::ForbiddenChar('\u{0378}').to_string(),
            "name must not contain unassigned characters (found U+0378)"
        );
        assert_eq!(
            NameError::ForbiddenChar('\u{0600}').to_string(),
            "name must not contain control or invisible characters (found U+0600)"
        );
    }

    /// The server keys every rename and (soon) every direct message by name, so the key has
    /// to stay in the microseconds. Timing in a test is noisy, so this takes the best of
    /// several rounds and allows a wide margin; unoptimized builds get a wider one.
    #[test]
    fn keys_are_cheap() {
        let worst = "\u{1F1}".repeat(crate::limits::MAX_NAME_CHARS); // Ǳ: decomposes, folds and maps
        let typical = "Émile_Zola";
        let budget = if cfg!(debug_assertions) {
            std::time::Duration::from_micros(500)
        } else {
            std::time::Duration::from_micros(50)
        };
        for name in [worst.as_str(), typical, "bob"] {
            let best = (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..200 {
                        std::hint::black_box(name_key(std::hint::black_box(name)));
                    }
                    start.elapsed() / 200
                })
                .min()
                .expect("five rounds");
            assert!(best < budget, "{name:?}: {best:?} per key");
        }
    }
}
