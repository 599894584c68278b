//! Scrolling the message pane by rows, so every row of a message taller than the pane can
//! be reached. The pane's size comes from [`crate::layout`], the same geometry the view draws.

use super::App;
use crate::layout;
use crate::scrollback::ScrollPos;

impl App {
    /// Columns and rows of the message pane.
    pub(super) fn pane_size(&self) -> (usize, usize) {
        layout::message_pane(self.size.0, self.size.1)
    }

    pub(super) fn rows_of(&self, seq: u64, width: usize) -> usize {
        self.scrollback
            .get(seq)
            .map_or(1, |e| layout::entry_rows(e, width))
    }

    /// Rows the pane shows when scrolled up: the bottom one holds the "more below" marker.
    pub(super) fn scrolled_view_rows(&self) -> usize {
        let (_, height) = self.pane_size();
        layout::message_rows(height, true).max(1)
    }

    /// The position that shows the oldest row at the top (scrolling up stops there), or
    /// `None` when everything fits. Walks at most a screenful of entries.
    pub(super) fn top_anchor(&self) -> Option<ScrollPos> {
        let (width, _) = self.pane_size();
        let height = self.scrolled_view_rows();
        let mut rows = 0;
        let mut seq = self.scrollback.first_seq();
        while seq <= self.scrollback.last_seq() {
            rows += self.rows_of(seq, width);
            if rows >= height {
                return Some(ScrollPos {
                    seq,
                    skip: rows - height,
                });
            }
            seq += 1;
        }
        None
    }

    /// Sets the scroll position, kept below the top and pinned to the bottom when it
    /// reaches the newest row. True when the view now shows the oldest row held.
    pub(super) fn set_scroll(&mut self, pos: ScrollPos) -> bool {
        self.dirty = true;
        let Some(anchor) = self.top_anchor() else {
            self.scroll = None;
            return true;
        };
        let at_top = !anchor.is_above(pos);
        let pos = if at_top { anchor } else { pos };
        self.scroll = (pos.seq < self.scrollback.last_seq() || pos.skip > 0).then_some(pos);
        at_top
    }

    /// Scrolling up stopped at the oldest row held: older lines may come from the server.
    fn scrolled_up_to(&mut self, pos: ScrollPos) {
        if self.set_scroll(pos) {
            self.reached_top();
        }
    }

    pub(super) fn scroll_to_top(&mut self) {
        if self.scrollback.is_empty() {
            self.reached_top();
            return;
        }
        self.scrolled_up_to(ScrollPos {
            seq: self.scrollback.first_seq(),
            skip: usize::MAX,
        });
    }

    /// Moves the view up by `count` rows, through the rows of long entries one by one.
    /// Costs at most `count` entries, whatever the scrollback's length.
    pub(super) fn scroll_up_rows(&mut self, count: usize) {
        if self.scrollback.is_empty() {
            return;
        }
        let (width, _) = self.pane_size();
        let mut pos = self
            .scroll
            .unwrap_or(ScrollPos::at(self.scrollback.last_seq()));
        let mut left = count;
        loop {
            let rows = self.rows_of(pos.seq, width);
            // The width may have changed since the position was taken.
            pos.skip = pos.skip.min(rows - 1);
            let above_in_entry = rows - 1 - pos.skip;
            if left <= above_in_entry {
                pos.skip += left;
                break;
            }
            if pos.seq <= self.scrollback.first_seq() {
                pos.skip = rows - 1;
                break;
            }
            left -= above_in_entry + 1;
            pos = ScrollPos::at(pos.seq - 1);
        }
        self.scrolled_up_to(pos);
    }

    /// Moves the view down by `count` rows; reaching the newest row pins it again.
    pub(super) fn scroll_down_rows(&mut self, count: usize) {
        let Some(mut pos) = self.scroll else {
            return;
        };
        let (width, _) = self.pane_size();
        pos.skip = pos.skip.min(self.rows_of(pos.seq, width) - 1);
        let mut left = count;
        loop {
            if left <= pos.skip {
                pos.skip -= left;
                break;
            }
            if pos.seq >= self.scrollback.last_seq() {
                pos.skip = 0;
                break;
            }
            left -= pos.skip + 1;
            pos.seq += 1;
            pos.skip = self.rows_of(pos.seq, width) - 1;
        }
        let _ = self.set_scroll(pos);
    }

    /// A screenful less one row, so a line of context stays in view.
    pub(super) fn page_rows(&self) -> usize {
        let (_, height) = self.pane_size();
        height.saturating_sub(1).max(1)
    }

    pub(super) fn page_up(&mut self) {
        self.scroll_up_rows(self.page_rows());
    }

    pub(super) fn page_down(&mut self) {
        self.scroll_down_rows(self.page_rows());
    }
}
