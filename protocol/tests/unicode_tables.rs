//! Cross-checks of the sanitizer and the name rules against whole Unicode categories, so that
//! no format character or combining mark slips through a gap in a table.
//!
//! The categories are taken from two independent sources: `regex-syntax`'s own Unicode
//! tables (`\p{Cf}`, `\p{M}`) and the `unicode-properties` crate the rules are built on, so a
//! mistake in either, or in how the rules use them, shows up here.

use chat_protocol::names::{NameError, validate_name};
use chat_protocol::sanitize::{REPLACEMENT, is_format_kept_in_chat, is_unsafe};
use chat_protocol::sanitize_text;
use regex_syntax::hir::{Class, HirKind};
use std::collections::BTreeSet;
use unicode_properties::general_category::{GeneralCategory, UnicodeGeneralCategory};

/// Every character in the class `\p{NAME}`, by `regex-syntax`'s tables.
fn regex_class(name: &str) -> BTreeSet<char> {
    let hir = regex_syntax::parse(&format!("\\p{{{name}}}")).expect("a Unicode class");
    let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
        panic!("\\p{{{name}}} is not a Unicode class: {hir:?}");
    };
    class
        .iter()
        .flat_map(|range| range.start()..=range.end())
        .collect()
}

/// Every character whose general category satisfies `pred`, by `unicode-properties`.
fn category(pred: impl Fn(GeneralCategory) -> bool) -> BTreeSet<char> {
    (char::MIN..=char::MAX)
        .filter(|c| pred(c.general_category()))
        .collect()
}

/// Every format character (general category Cf), by both sources.
fn format_chars() -> BTreeSet<char> {
    let mut chars = regex_class("Cf");
    chars.extend(category(|gc| gc == GeneralCategory::Format));
    assert!(chars.len() > 150, "only {} Cf characters?", chars.len());
    chars
}

/// The format characters chat text keeps, as `sanitize`'s docs give them: the joiners (emoji
/// ZWJ sequences, Persian and Indic shaping) and the tags (emoji tag sequences).
fn documented_kept_in_chat() -> BTreeSet<char> {
    ['\u{200C}', '\u{200D}']
        .into_iter()
        .chain('\u{E0020}'..='\u{E007F}')
        .collect()
}

#[test]
fn every_format_character_is_replaced_in_chat_or_kept_for_a_documented_reason() {
    let mut kept = BTreeSet::new();
    for c in format_chars() {
        let text = format!("a{c}b");
        if is_format_kept_in_chat(c) {
            assert_eq!(sanitize_text(&text), text, "U+{:04X} is kept", c as u32);
            kept.insert(c);
        } else {
            assert!(is_unsafe(c), "U+{:04X}", c as u32);
            assert_eq!(
                sanitize_text(&text),
                format!("a{REPLACEMENT}b"),
                "U+{:04X} is replaced",
                c as u32
            );
        }
    }
    assert_eq!(kept, documented_kept_in_chat());
}

#[test]
fn every_format_character_is_refused_in_names() {
    for c in format_chars() {
        assert_eq!(
            validate_name(&format!("a{c}")),
            Err(NameError::ForbiddenChar(c)),
            "U+{:04X}",
            c as u32
        );
    }
}

/// What the old hand-written table replaced must still be replaced.
#[test]
fn chat_text_still_replaces_what_the_old_table_did() {
    let old = ['\u{00AD}', '\u{061C}', '\u{180E}', '\u{200B}', '\u{FEFF}']
        .into_iter()
        .chain('\u{200E}'..='\u{200F}')
        .chain('\u{2028}'..='\u{2029}')
        .chain('\u{202A}'..='\u{202E}')
        .chain('\u{2060}'..='\u{206F}') // includes U+2065, unassigned but default-ignorable
        .chain('\u{FFF9}'..='\u{FFFB}');
    for c in old {
        assert_eq!(
            sanitize_text(&format!("a{c}b")),
            format!("a{REPLACEMENT}b"),
            "U+{:04X}",
            c as u32
        );
    }
}

#[test]
fn scripts_and_emoji_that_need_joiners_and_selectors_survive_in_chat() {
    for text in [
        // Persian "I want": the non-joiner keeps the prefix from joining the verb.
        "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
        // Devanagari: the joiner asks for the half form of क.
        "\u{0915}\u{094D}\u{200D}\u{0937}",
        // Mongolian free variation selector: a mark, not Cf.
        "\u{1820}\u{180B}",
        // Skin tone modifier, text presentation selector, ideographic variation selector.
        "👍\u{1F3FD}",
        "☺\u{FE0E}",
        "葛\u{E0100}",
        // Rainbow flag (ZWJ sequence) and the flag of Wales (tag sequence).
        "🏳\u{FE0F}\u{200D}🌈",
        "🏴\u{E0067}\u{E0062}\u{E0077}\u{E006C}\u{E0073}\u{E007F}",
    ] {
        assert_eq!(sanitize_text(text), text, "{text:?}");
    }
}

/// The UTS #39 skeleton drops exactly the Default_Ignorable_Code_Point characters, so this
/// checks the name rule against that property as `unicode-security` has it, unassigned
/// reserved code points included.
#[test]
fn every_default_ignorable_character_is_refused_in_names() {
    let mut count = 0;
    for c in char::MIN..=char::MAX {
        let mut buf = [0; 4];
        if unicode_security::skeleton(c.encode_utf8(&mut buf))
            .next()
            .is_none()
        {
            count += 1;
            assert_eq!(
                validate_name(&format!("a{c}")),
                Err(NameError::ForbiddenChar(c)),
                "U+{:04X}",
                c as u32
            );
        }
    }
    assert!(count > 4000, "only {count} default-ignorable characters?");
}

#[test]
fn every_control_separator_and_unassigned_character_is_refused_in_names() {
    let refused = category(|gc| {
        matches!(
            gc,
            GeneralCategory::Control
                | GeneralCategory::SpaceSeparator
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::Unassigned
        )
    });
    for c in refused
        .into_iter()
        .chain(regex_class("Z"))
        .chain(regex_class("Cc"))
    {
        assert!(
            matches!(validate_name(&format!("a{c}")), Err(NameError::ForbiddenChar(x)) if x == c),
            "U+{:04X}",
            c as u32
        );
    }
}

#[test]
fn no_combining_mark_may_lead_a_name() {
    let mut marks = regex_class("M");
    marks.extend(category(|gc| {
        matches!(
            gc,
            GeneralCategory::NonspacingMark
                | GeneralCategory::SpacingMark
                | GeneralCategory::EnclosingMark
        )
    }));
    assert!(marks.len() > 2000, "only {} marks?", marks.len());
    for c in marks {
        // Default-ignorable marks (variation selectors, ...) are refused anywhere, and that
        // check comes first.
        let refused = match validate_name(&format!("{c}x")) {
            Err(NameError::StartsWithCombiningMark(x)) | Err(NameError::ForbiddenChar(x)) => x == c,
            _ => false,
        };
        assert!(refused, "U+{:04X}", c as u32);
    }
}
