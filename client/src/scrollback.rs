//! The message pane's lines: what an entry is, and the bounded queue that holds them.
//!
//! Plain data, shared by the app (which changes it), the layout (which wraps it) and the
//! view (which draws it).

use chrono::NaiveTime;
use std::collections::VecDeque;

/// What kind of line an entry is; the view styles each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Chat,
    Join,
    Leave,
    Timeout,
    Rename,
    Error,
    Notice,
    /// Said by this client, not the server.
    Info,
}

/// One line of the message pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time: NaiveTime,
    pub kind: EntryKind,
    /// The sender, for chat lines.
    pub name: Option<String>,
    pub text: String,
    /// Sent by this client.
    pub own: bool,
    /// Mentions this client's name.
    pub mention: bool,
}

/// The message pane's lines: a bounded queue with stable sequence numbers, so a scroll
/// position survives old lines falling off the front.
#[derive(Debug, Clone)]
pub struct Scrollback {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    cap: usize,
}

impl Scrollback {
    pub fn new(cap: usize) -> Self {
        Scrollback {
            entries: VecDeque::new(),
            first_seq: 0,
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() == self.cap {
            self.entries.pop_front();
            self.first_seq += 1;
        }
        self.entries.push_back(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number of the newest entry (meaningless when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.entries.len().saturating_sub(1) as u64
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.entries.get(index)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// Where the message pane is when scrolled up: its bottom row is a row of entry `seq`, with
/// `skip` more rows of that entry below the view. Counting rows inside an entry lets every
/// row of a message taller than the pane be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrollPos {
    pub seq: u64,
    pub skip: usize,
}

impl ScrollPos {
    /// Entry `seq`'s last row at the bottom of the view.
    pub fn at(seq: u64) -> Self {
        ScrollPos { seq, skip: 0 }
    }

    /// True when `self` shows older rows than `other`.
    pub fn is_above(self, other: ScrollPos) -> bool {
        self.seq < other.seq || (self.seq == other.seq && self.skip > other.skip)
    }
}
