//! Text rules: cutting over-long text, and what counts as a mention of a name.

/// Case folded for sorting, completing and finding mentions, as people read names:
/// `Bob` and `bob` alike. (The protocol's `name_key` is for telling names apart, look-alikes
/// included, and is neither meant for ordering nor cheap on long text.)
pub(super) fn fold_case(text: &str) -> String {
    text.to_lowercase()
}

/// Cuts `text` to at most `max` bytes on a character boundary, ending it with '…'.
pub(super) fn truncate_with_ellipsis(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

/// True when `text` names `name` as a word of its own. Every character a name may hold
/// (dots, dashes, digits, ...) belongs to the word, so for `bob` neither `bobby` nor
/// `bob.smith` counts; punctuation that ends a sentence or addresses someone (`bob:`,
/// `bob,`, `bob!`, `bob.`) does not, nor does an `@` or an opening bracket before it.
pub(super) fn mentions(text: &str, name: &str) -> bool {
    const OPENERS: &[char] = &['@', '(', '"', '\'', '<', '{'];
    const CLOSERS: &[char] = &[',', '.', '!', '?', ':', ';', ')', '"', '\'', '>', '}', '…'];
    let in_word = |c: char| !chat_protocol::names::is_forbidden_in_name(c);
    let (text, name) = (fold_case(text), fold_case(name));
    if name.is_empty() {
        return false;
    }
    text.match_indices(&name).any(|(i, _)| {
        let before = text[..i].trim_end_matches(OPENERS).chars().next_back();
        let after = text[i + name.len()..]
            .trim_start_matches(CLOSERS)
            .chars()
            .next();
        !before.is_some_and(in_word) && !after.is_some_and(in_word)
    })
}
