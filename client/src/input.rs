//! A one-line text editor: the input line and the rename dialog's field.
//!
//! The cursor is a byte offset that always sits on a grapheme boundary, so moving and
//! deleting treat "é", "小" or a flag emoji as one step, as a person sees them.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Text being edited, with its cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineEditor {
    text: String,
    /// Byte offset into `text`, on a grapheme boundary.
    cursor: usize,
}

impl LineEditor {
    pub fn new() -> Self {
        Self::default()
    }

    /// An editor holding `text` with the cursor at its end.
    pub fn with_text(text: impl Into<String>) -> Self {
        let text = text.into();
        let cursor = text.len();
        LineEditor { text, cursor }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The cursor as a byte offset.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Display columns before the cursor (wide characters count two).
    pub fn cursor_column(&self) -> usize {
        self.text[..self.cursor].width()
    }

    /// Replaces the text and puts the cursor at its end.
    pub fn set(&mut self, text: impl Into<String>) {
        self.text = text.into();
        self.cursor = self.text.len();
    }

    /// Empties the editor and returns what it held.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    pub fn insert_char(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
        self.snap_to_boundary();
    }

    pub fn insert_str(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
        self.snap_to_boundary();
    }

    /// A combining mark typed after a letter joins it into one grapheme; keep the cursor
    /// after the whole grapheme rather than inside it.
    fn snap_to_boundary(&mut self) {
        if !self.is_boundary(self.cursor) {
            self.cursor = self.next_boundary(self.cursor);
        }
    }

    fn is_boundary(&self, at: usize) -> bool {
        at == self.text.len() || self.text.grapheme_indices(true).any(|(i, _)| i == at)
    }

    fn prev_boundary(&self, at: usize) -> usize {
        self.text[..at]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, at: usize) -> usize {
        self.text
            .grapheme_indices(true)
            .map(|(i, _)| i)
            .find(|&i| i > at)
            .unwrap_or(self.text.len())
    }

    pub fn left(&mut self) {
        self.cursor = self.prev_boundary(self.cursor);
    }

    pub fn right(&mut self) {
        self.cursor = self.next_boundary(self.cursor);
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Deletes the grapheme before the cursor.
    pub fn backspace(&mut self) {
        let start = self.prev_boundary(self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the grapheme under the cursor.
    pub fn delete(&mut self) {
        let end = self.next_boundary(self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    /// Ctrl+W: deletes the word before the cursor and the spaces after it, as a shell does.
    pub fn delete_word_before(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(char::is_whitespace);
        let start = trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Ctrl+U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
    }

    /// The word the cursor is at the end of, and where it starts (for Tab completion).
    pub fn word_before_cursor(&self) -> (usize, &str) {
        let before = &self.text[..self.cursor];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        (start, &before[start..])
    }

    /// Replaces the bytes `start..cursor` with `replacement`, cursor after it.
    pub fn replace_before_cursor(&mut self, start: usize, replacement: &str) {
        self.text.replace_range(start..self.cursor, replacement);
        self.cursor = start + replacement.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> LineEditor {
        let mut e = LineEditor::new();
        for c in s.chars() {
            e.insert_char(c);
        }
        e
    }

    #[test]
    fn typing_and_moving_over_wide_and_multibyte_text() {
        let mut e = typed("a小é👍🏽b");
        assert_eq!(e.text(), "a小é👍🏽b");
        assert_eq!(e.cursor_column(), 1 + 2 + 1 + 2 + 1);
        e.left();
        e.left();
        assert_eq!(
            &e.text()[e.cursor()..],
            "👍🏽b",
            "an emoji with its skin tone is one step"
        );
        e.backspace();
        assert_eq!(e.text(), "a小👍🏽b");
        e.delete();
        assert_eq!(e.text(), "a小b");
        e.home();
        e.delete();
        assert_eq!(e.text(), "小b");
        e.end();
        e.insert_char('!');
        assert_eq!(e.text(), "小b!");
    }

    #[test]
    fn combining_mark_joins_the_grapheme_before_it() {
        let mut e = typed("e\u{301}");
        assert_eq!(e.cursor(), e.text().len());
        e.backspace();
        assert_eq!(e.text(), "");
    }

    #[test]
    fn edits_at_the_edges_do_nothing() {
        let mut e = LineEditor::new();
        e.backspace();
        e.delete();
        e.left();
        e.right();
        e.delete_word_before();
        e.delete_to_start();
        assert_eq!(e, LineEditor::new());
    }

    #[test]
    fn ctrl_w_deletes_the_word_before_the_cursor() {
        let mut e = typed("hello big  world  ");
        e.delete_word_before();
        assert_eq!(e.text(), "hello big  ");
        e.delete_word_before();
        assert_eq!(e.text(), "hello ");
        let mut e = typed("héllo wörld");
        e.left();
        e.left();
        e.delete_word_before();
        assert_eq!(e.text(), "héllo ld");
    }

    #[test]
    fn ctrl_u_deletes_to_the_start() {
        let mut e = typed("one two");
        e.left();
        e.left();
        e.left();
        e.delete_to_start();
        assert_eq!((e.text(), e.cursor()), ("two", 0));
    }

    #[test]
    fn word_before_cursor_for_completion() {
        let mut e = typed("hi al");
        assert_eq!(e.word_before_cursor(), (3, "al"));
        e.replace_before_cursor(3, "alice");
        assert_eq!(e.text(), "hi alice");
        let e = typed("bo");
        assert_eq!(e.word_before_cursor(), (0, "bo"));
    }
}
