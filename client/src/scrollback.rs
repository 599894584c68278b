//! The message pane's lines: what an entry is, and the bounded queue that holds them.
//!
//! Plain data, shared by the app (which changes it), the layout (which wraps it) and the
//! view (which draws it).
//!
//! Room events carry the server's `seq`; the scrollback keeps them in that order and never
//! holds one twice, whether it came live or from `history` (a page before the oldest line,
//! the events missed while disconnected, or the last page on connect).

use chrono::NaiveTime;
use std::collections::{HashSet, VecDeque};

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
    /// Where the history shown on connect ends and the live lines begin.
    Separator,
    /// A direct message this client sent (`name` is the recipient).
    DmSent,
    /// A direct message to this client (`name` is the sender).
    DmReceived,
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
    /// The room event's `seq`, for events the server stamped.
    pub room_seq: Option<u64>,
    /// Said before this client connected (from the history shown on connect, or an older
    /// page): the view dims it.
    pub earlier: bool,
}

impl Entry {
    /// A line with no sender, not from history.
    pub fn line(time: NaiveTime, kind: EntryKind, text: impl Into<String>) -> Entry {
        Entry {
            time,
            kind,
            name: None,
            text: text.into(),
            own: false,
            mention: false,
            room_seq: None,
            earlier: false,
        }
    }
}

/// The message pane's lines: a bounded queue with stable sequence numbers (local to this
/// client, unlike a room event's `seq`), so a scroll position survives old lines falling off
/// the front.
#[derive(Debug, Clone)]
pub struct Scrollback {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    cap: usize,
    /// The room seqs held, so none is held twice.
    room_seqs: HashSet<u64>,
}

/// Where an entry went, so a scroll position can follow the lines it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Already held (a room event seen before): nothing changed.
    Duplicate,
    /// Added at the end.
    Appended,
    /// Inserted at this sequence number: the entries from there on moved up by one.
    Inserted(u64),
}

/// What [`Scrollback::prepend`] did to the entries already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepended {
    /// Added to the sequence number of every entry that was already held.
    pub shift: u64,
    /// Room events dropped from the newest end to stay within the cap.
    pub dropped_newest: usize,
}

impl Scrollback {
    pub fn new(cap: usize) -> Self {
        Scrollback {
            entries: VecDeque::new(),
            first_seq: 0,
            cap: cap.max(1),
            room_seqs: HashSet::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn forget(&mut self, entry: &Entry) {
        if let Some(seq) = entry.room_seq {
            self.room_seqs.remove(&seq);
        }
    }

    /// Drops the oldest entries while more than the cap are held.
    fn trim_front(&mut self) {
        while self.entries.len() > self.cap {
            if let Some(old) = self.entries.pop_front() {
                self.forget(&old);
            }
            self.first_seq += 1;
        }
    }

    /// Keeps every line but as a plain one, no longer a room event: for when the server's
    /// log started over and its seqs name other events.
    pub fn forget_room_seqs(&mut self) {
        for entry in &mut self.entries {
            entry.room_seq = None;
        }
        self.room_seqs.clear();
    }

    /// Adds a line at the end (a live line), dropping the oldest past the cap.
    pub fn push(&mut self, entry: Entry) -> Placed {
        if let Some(seq) = entry.room_seq
            && !self.room_seqs.insert(seq)
        {
            return Placed::Duplicate;
        }
        self.entries.push_back(entry);
        self.trim_front();
        Placed::Appended
    }

    /// Puts a room event where its seq belongs: before the first held event with a greater
    /// seq (after any lines of this client's own that come before that), else at the end.
    /// Dropping the oldest past the cap as [`Scrollback::push`] does.
    pub fn insert_by_seq(&mut self, entry: Entry) -> Placed {
        let Some(seq) = entry.room_seq else {
            return self.push(entry);
        };
        if self.room_seqs.contains(&seq) {
            return Placed::Duplicate;
        }
        // Searched from the end: missed and live events are near it.
        let mut index = self.entries.len();
        let mut later = None;
        for (i, held) in self.entries.iter().enumerate().rev() {
            match held.room_seq {
                Some(held_seq) if held_seq < seq => break,
                Some(_) => later = Some(i),
                None => {}
            }
            index = i;
        }
        let Some(index) = later.map(|_| index) else {
            return self.push(entry);
        };
        // `index` is just after the last event older than `seq`; skip this client's own
        // lines there (said before the later events arrived) so they keep their place.
        let mut index = index;
        while index < self.entries.len() && self.entries[index].room_seq.is_none() {
            index += 1;
        }
        self.insert_at(index, entry)
    }

    /// Adds older lines before the oldest, oldest first (a page scrolled back to). The cap
    /// still holds: when the page does not fit, the newest lines are dropped to make room
    /// (they can be fetched again).
    pub fn prepend(&mut self, page: Vec<Entry>) -> Prepended {
        let page: Vec<Entry> = page
            .into_iter()
            .filter(|e| e.room_seq.is_none_or(|seq| !self.room_seqs.contains(&seq)))
            .collect();
        let mut shift = 0;
        if page.len() as u64 > self.first_seq {
            // No numbers left below the first: move every entry's number up.
            shift = page.len() as u64;
            self.first_seq += shift;
        }
        for entry in page.into_iter().rev() {
            if let Some(seq) = entry.room_seq {
                self.room_seqs.insert(seq);
            }
            self.entries.push_front(entry);
            self.first_seq -= 1;
        }
        let mut dropped_newest = 0;
        while self.entries.len() > self.cap {
            if let Some(newest) = self.entries.pop_back() {
                if newest.room_seq.is_some() {
                    dropped_newest += 1;
                }
                self.forget(&newest);
            }
        }
        Prepended {
            shift,
            dropped_newest,
        }
    }

    /// Puts a line of this client's own just before the room event `seq` (at the end when
    /// it is not held).
    pub fn insert_before_room_seq(&mut self, seq: u64, entry: Entry) -> Placed {
        match self.entries.iter().rposition(|e| e.room_seq == Some(seq)) {
            Some(index) => self.insert_at(index, entry),
            None => self.push(entry),
        }
    }

    /// Puts `entry` so that it gets the sequence number `number`, the entries from there on
    /// moving up (at the front when that number was dropped, at the end when past it).
    pub fn insert_at_number(&mut self, number: u64, entry: Entry) -> Placed {
        let index = usize::try_from(number.saturating_sub(self.first_seq)).unwrap_or(usize::MAX);
        self.insert_at(index, entry)
    }

    fn insert_at(&mut self, index: usize, entry: Entry) -> Placed {
        if index >= self.entries.len() {
            return self.push(entry);
        }
        if let Some(seq) = entry.room_seq
            && !self.room_seqs.insert(seq)
        {
            return Placed::Duplicate;
        }
        self.entries.insert(index, entry);
        let placed = Placed::Inserted(self.first_seq + index as u64);
        self.trim_front();
        placed
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

    /// The sequence number the next entry pushed at the end gets.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
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

    /// True if the room event `seq` is held.
    pub fn holds_room_seq(&self, seq: u64) -> bool {
        self.room_seqs.contains(&seq)
    }

    /// The oldest room event's seq held.
    pub fn oldest_room_seq(&self) -> Option<u64> {
        self.entries.iter().find_map(|e| e.room_seq)
    }

    /// The newest room event's seq held.
    pub fn newest_room_seq(&self) -> Option<u64> {
        self.entries.iter().rev().find_map(|e| e.room_seq)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Entry {
        Entry {
            room_seq: Some(seq),
            ..Entry::line(NaiveTime::MIN, EntryKind::Chat, format!("event {seq}"))
        }
    }

    fn info(text: &str) -> Entry {
        Entry::line(NaiveTime::MIN, EntryKind::Info, text)
    }

    fn texts(scrollback: &Scrollback) -> Vec<&str> {
        scrollback.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn a_room_event_is_held_once_however_it_arrives() {
        let mut sb = Scrollback::new(100);
        assert_eq!(sb.push(event(1)), Placed::Appended);
        assert_eq!(sb.push(event(1)), Placed::Duplicate);
        assert_eq!(sb.insert_by_seq(event(1)), Placed::Duplicate);
        assert_eq!(sb.prepend(vec![event(1)]).shift, 0);
        assert_eq!(texts(&sb), ["event 1"]);
    }

    #[test]
    fn missed_events_go_in_place_after_the_clients_own_lines_about_the_outage() {
        let mut sb = Scrollback::new(100);
        sb.push(event(10));
        sb.push(info("connection lost"));
        sb.push(info("connected"));
        sb.push(event(14));
        assert_eq!(sb.insert_by_seq(event(12)), Placed::Inserted(3));
        assert_eq!(sb.insert_by_seq(event(13)), Placed::Inserted(4));
        assert_eq!(sb.insert_by_seq(event(11)), Placed::Inserted(3));
        assert_eq!(sb.insert_by_seq(event(15)), Placed::Appended);
        assert_eq!(
            texts(&sb),
            [
                "event 10",
                "connection lost",
                "connected",
                "event 11",
                "event 12",
                "event 13",
                "event 14",
                "event 15"
            ]
        );
        assert_eq!(sb.oldest_room_seq(), Some(10));
        assert_eq!(sb.newest_room_seq(), Some(15));
    }

    #[test]
    fn older_pages_go_in_front_within_the_cap_dropping_the_newest() {
        let mut sb = Scrollback::new(4);
        sb.push(event(10));
        sb.push(event(11));
        let first = sb.first_seq();
        let done = sb.prepend(vec![event(8), event(9)]);
        assert_eq!(
            done,
            Prepended {
                shift: 2,
                dropped_newest: 0
            },
            "renumbered upwards"
        );
        assert_eq!(
            sb.get(first + done.shift).map(|e| e.text.as_str()),
            Some("event 10")
        );
        let done = sb.prepend(vec![event(6), event(7)]);
        assert_eq!(done.dropped_newest, 2);
        assert_eq!(texts(&sb), ["event 6", "event 7", "event 8", "event 9"]);
        assert!(!sb.holds_room_seq(11), "forgotten, so it can come again");
        assert_eq!(sb.push(event(10)), Placed::Appended);
        assert_eq!(texts(&sb), ["event 7", "event 8", "event 9", "event 10"]);
    }
}
