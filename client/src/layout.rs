//! Where things go on the screen, and how many rows an entry takes: the geometry that both
//! the app (to scroll and page) and the view (to draw) must agree on.
//!
//! Pure functions of sizes and entries, no styles or colours: the view decides how each
//! [`Part`] looks, this module decides where it is. Wrapping counts display columns per
//! grapheme, so CJK and emoji take their two cells and a combining accent stays on its letter.

use crate::scrollback::{Entry, EntryKind};
use ratatui::layout::{Constraint, Layout, Rect};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Columns the user sidebar takes, its border included.
pub const SIDEBAR_WIDTH: u16 = 22;
/// Narrower terminals drop the sidebar; the status bar still counts who is online.
pub const SIDEBAR_MIN_TERMINAL_WIDTH: u16 = 56;
/// `HH:MM` and a space.
pub const TIME_WIDTH: usize = 6;
/// The marker column and a space.
pub const GUTTER_WIDTH: usize = 2;

/// The screen's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub messages: Rect,
    pub sidebar: Option<Rect>,
    pub status: Rect,
    pub input: Rect,
}

/// Splits a terminal of `area`'s size into its parts.
pub fn areas(area: Rect) -> Areas {
    let [main, status, input] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    if area.width >= SIDEBAR_MIN_TERMINAL_WIDTH {
        let [messages, sidebar] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(SIDEBAR_WIDTH)])
                .areas(main);
        Areas {
            messages,
            sidebar: Some(sidebar),
            status,
            input,
        }
    } else {
        Areas {
            messages: main,
            sidebar: None,
            status,
            input,
        }
    }
}

/// Columns and rows of the message pane on a terminal of `width` × `height` cells.
pub fn message_pane(width: u16, height: u16) -> (usize, usize) {
    let area = areas(Rect::new(0, 0, width, height)).messages;
    (usize::from(area.width), usize::from(area.height))
}

/// Rows of messages a pane of `pane_height` rows shows: while scrolled up its bottom row
/// holds the "more below" bar (unless the pane is a single row).
pub fn message_rows(pane_height: usize, scrolled: bool) -> usize {
    if scrolled && pane_height > 1 {
        pane_height - 1
    } else {
        pane_height
    }
}

/// What a piece of a wrapped entry is, so the view can style it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Spaces that indent a continuation row.
    Indent,
    /// The marker column (one cell).
    Marker,
    /// The space after the marker.
    Gap,
    /// The sender's name.
    Name,
    /// The `": "` after the name.
    Separator,
    /// The arrow of a direct message: `-> bob: ` sent, `bob ->: ` received.
    Arrow,
    Text,
}

/// The marker column of an entry: `>` own lines, `*` mentions, `+` joins, `-` leaves and
/// timeouts, `~` renames, `!` errors, `#` server notices, `=` the client's own messages,
/// `─` where the history shown on connect ends, `@` direct messages.
pub fn marker(entry: &Entry) -> &'static str {
    match entry.kind {
        EntryKind::Chat if entry.own => ">",
        EntryKind::Chat if entry.mention => "*",
        EntryKind::Chat => " ",
        EntryKind::Join => "+",
        EntryKind::Leave | EntryKind::Timeout => "-",
        EntryKind::Rename => "~",
        EntryKind::Error => "!",
        EntryKind::Notice => "#",
        EntryKind::Info => "=",
        EntryKind::Separator => "─",
        EntryKind::DmSent | EntryKind::DmReceived => "@",
    }
}

/// An entry as pieces, before wrapping.
fn entry_parts(entry: &Entry) -> Vec<(&str, Part)> {
    let mut parts = vec![(marker(entry), Part::Marker), (" ", Part::Gap)];
    if let Some(name) = &entry.name {
        match entry.kind {
            EntryKind::DmSent => {
                parts.push(("-> ", Part::Arrow));
                parts.push((name.as_str(), Part::Name));
            }
            EntryKind::DmReceived => {
                parts.push((name.as_str(), Part::Name));
                parts.push((" ->", Part::Arrow));
            }
            _ => parts.push((name.as_str(), Part::Name)),
        }
        parts.push((": ", Part::Separator));
    }
    parts.push((entry.text.as_str(), Part::Text));
    parts
}

/// One grapheme placed on a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell<'a> {
    pub grapheme: &'a str,
    pub width: usize,
    pub part: Part,
}

/// An entry wrapped to a width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped<'a> {
    /// The first row starts with the time (`TIME_WIDTH` columns, continuation rows with as
    /// many spaces); too narrow a pane leaves it out.
    pub with_time: bool,
    pub rows: Vec<Vec<Cell<'a>>>,
}

/// An entry wrapped to `width` columns.
pub fn wrap_entry(entry: &Entry, width: usize) -> Wrapped<'_> {
    let width = width.max(1);
    // The time goes first and is never split, so wrap the rest in what remains.
    let with_time = width > TIME_WIDTH + GUTTER_WIDTH + 4;
    let body_width = if with_time { width - TIME_WIDTH } else { width };
    Wrapped {
        with_time,
        rows: wrap(&entry_parts(entry), body_width, GUTTER_WIDTH),
    }
}

/// Rows an entry takes at `width` columns.
pub fn entry_rows(entry: &Entry, width: usize) -> usize {
    wrap_entry(entry, width).rows.len()
}

/// Wraps pieces of text to `width` columns: at spaces where possible, mid-word when a word
/// is longer than a row. Continuation rows start with `indent` columns of [`Part::Indent`].
fn wrap<'a>(parts: &[(&'a str, Part)], width: usize, indent: usize) -> Vec<Vec<Cell<'a>>> {
    let width = width.max(1);
    let indent = if indent * 2 <= width { indent } else { 0 };
    let mut rows: Vec<Vec<Cell<'a>>> = Vec::new();
    let mut row: Vec<Cell<'a>> = Vec::new();
    let mut used = 0;
    // Index in `row` just after the last space, where the row may break.
    let mut break_at: Option<usize> = None;
    let continuation = |rows: &mut Vec<Vec<Cell<'a>>>, row: &mut Vec<Cell<'a>>| {
        // The space a row broke at would only pad it.
        while row.last().is_some_and(|c| c.grapheme == " ") && row.len() > 1 {
            row.pop();
        }
        rows.push(std::mem::take(row));
        for _ in 0..indent {
            row.push(Cell {
                grapheme: " ",
                width: 1,
                part: Part::Indent,
            });
        }
    };
    for &(text, part) in parts {
        for grapheme in text.graphemes(true) {
            let w = grapheme.width();
            if used + w > width && !row.is_empty() {
                if grapheme == " " {
                    continuation(&mut rows, &mut row);
                    used = indent;
                    break_at = None;
                    continue;
                }
                match break_at.filter(|&at| at > indent && at < row.len()) {
                    Some(at) => {
                        let carried: Vec<Cell<'a>> = row.drain(at..).collect();
                        continuation(&mut rows, &mut row);
                        used = indent + carried.iter().map(|c| c.width).sum::<usize>();
                        row.extend(carried);
                    }
                    None => {
                        continuation(&mut rows, &mut row);
                        used = indent;
                    }
                }
                break_at = None;
            }
            row.push(Cell {
                grapheme,
                width: w,
                part,
            });
            used += w;
            // CJK text has no spaces: any wide character is a place to break.
            if grapheme == " " || w > 1 {
                break_at = Some(row.len());
            }
        }
    }
    rows.push(row);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    fn entry(text: &str) -> Entry {
        Entry {
            name: Some("bob".into()),
            ..Entry::line(NaiveTime::MIN, EntryKind::Chat, text)
        }
    }

    #[test]
    fn the_sidebar_goes_below_its_minimum_width() {
        assert_eq!(message_pane(80, 24), (80 - SIDEBAR_WIDTH as usize, 22));
        assert_eq!(message_pane(SIDEBAR_MIN_TERMINAL_WIDTH - 1, 24).0, 55);
        assert!(areas(Rect::new(0, 0, 40, 10)).sidebar.is_none());
    }

    #[test]
    fn the_more_below_bar_takes_a_row_only_when_scrolled_and_there_is_room() {
        assert_eq!(message_rows(10, false), 10);
        assert_eq!(message_rows(10, true), 9);
        assert_eq!(message_rows(1, true), 1);
    }

    #[test]
    fn rows_counted_are_the_rows_wrapped() {
        let long = entry(&"word ".repeat(40));
        for width in [1, 5, 12, 30, 80] {
            let wrapped = wrap_entry(&long, width);
            assert_eq!(entry_rows(&long, width), wrapped.rows.len());
            let body = if wrapped.with_time {
                width - TIME_WIDTH
            } else {
                width
            };
            for row in &wrapped.rows {
                let used: usize = row.iter().map(|c| c.width).sum();
                assert!(used <= body.max(2), "width {width}: {used}");
            }
        }
        assert_eq!(entry_rows(&entry("short"), 80), 1);
        assert!(entry_rows(&long, 30) > 5);
    }
}
