//! The room's history (JSON mode only; the original server keeps none).
//!
//! - On connect: the last page, dimmed above the live lines, with a separator where live
//!   begins.
//! - After a reconnect: exactly the events after the newest `seq` this client saw, page by
//!   page until the server says there are no more, each put in its place; a `gap` (events
//!   the server no longer keeps) is said plainly.
//! - Scrolling to the top: the page before the oldest line held. The scrollback's cap still
//!   holds, so a page that does not fit drops the newest lines, and those are fetched again
//!   when the view is back at the bottom.
//!
//! Nothing is shown twice: the scrollback holds each room `seq` once, whether it came live
//! or from history, and puts it in `seq` order. One request is in flight at a time, so each
//! answer is known to belong to it.

use super::{App, Effect, Entry, EntryKind};
use crate::scrollback::Placed;
use chat_protocol::{ClientCommand, ServerEvent};
use chrono::NaiveTime;

/// Events shown from history on connect.
pub const HISTORY_ON_CONNECT: u32 = 50;
/// Events per page when scrolling back.
pub const HISTORY_PAGE: u32 = 100;
/// Events per page when catching up after a reconnect (the server's most).
pub const HISTORY_RESUME_PAGE: u32 = chat_protocol::command::HISTORY_MAX_LIMIT;

/// What a history request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The last page, on connect.
    Initial,
    /// Events after a seq, missed while disconnected.
    Resume,
    /// Events after a seq, dropped to make room for older pages.
    Newer,
    /// The page before the oldest held.
    Older,
}

/// Where the client is with the room's history.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The request sent and not yet answered.
    pub in_flight: Option<Ask>,
    /// The newest room seq seen, live or from history, in any session.
    pub last_seen: Option<u64>,
    /// The welcome's seq: the newest event when this connection began.
    pub welcome_seq: u64,
    /// The last page is due (on connect, when nothing was seen before).
    pub initial_due: bool,
    /// Where that page goes: the scrollback number that came next at the welcome, so the
    /// page stands above everything this connection has shown since (the rename notice,
    /// live lines), below the line saying it connected.
    pub initial_at: u64,
    /// Fetch events after this seq (missed while disconnected).
    pub resume_after: Option<u64>,
    /// Events after this seq were dropped from the bottom to make room for older pages.
    pub newer_after: Option<u64>,
    /// The view reached the top: fetch the page before it.
    pub want_older: bool,
    /// The server has nothing older than what is held.
    pub older_exhausted: bool,
}

/// The local time of an event's server timestamp, or `fallback` when it has none.
fn event_time(event: &ServerEvent, fallback: NaiveTime) -> NaiveTime {
    event
        .stamp()
        .and_then(|stamp| chrono::DateTime::parse_from_rfc3339(&stamp.ts).ok())
        .map_or(fallback, |ts| ts.with_timezone(&chrono::Local).time())
}

impl App {
    pub(super) fn saw_room_seq(&mut self, seq: u64) {
        self.room_history.last_seen = Some(self.room_history.last_seen.map_or(seq, |s| s.max(seq)));
    }

    /// A welcome (JSON mode): what to ask for this connection.
    pub(super) fn ask_history_on_welcome(&mut self, welcome_seq: u64) {
        if self
            .room_history
            .last_seen
            .is_some_and(|seen| seen > welcome_seq)
        {
            self.log_went_back();
        }
        let next = self.scrollback.next_seq();
        let history = &mut self.room_history;
        history.in_flight = None;
        history.welcome_seq = welcome_seq;
        history.initial_at = next;
        history.want_older = false;
        match history.last_seen {
            Some(seen) if seen < welcome_seq => history.resume_after = Some(seen),
            Some(_) => {}
            None => history.initial_due = welcome_seq > 0,
        }
    }

    /// The server's newest seq is older than one this client saw: its log is not the one
    /// those seqs came from (it restarted with its log in memory, or from a backup), and
    /// its new events reuse them. The lines held stay, as plain lines, and the room is
    /// followed from the new log as on a first connect; older pages are not fetched, since
    /// they would go above lines of the old log.
    fn log_went_back(&mut self) {
        self.scrollback.forget_room_seqs();
        self.room_history = History {
            older_exhausted: true,
            ..History::default()
        };
        let notice = Entry::line(
            self.clock,
            EntryKind::Notice,
            "the server's history was reset (a restart without its log, or from a backup): \
             lines above this may not be in it",
        );
        let placed = self.scrollback.push(notice);
        self.placed(placed);
    }

    /// The connection was lost: an unanswered request will never be answered.
    pub(super) fn history_lost(&mut self) {
        self.room_history.in_flight = None;
        self.room_history.initial_due = false;
        self.room_history.resume_after = None;
        self.room_history.want_older = false;
    }

    /// The view shows the oldest row held: older lines may be fetched.
    pub(super) fn reached_top(&mut self) {
        if !self.plain && !self.room_history.older_exhausted {
            self.room_history.want_older = true;
        }
    }

    /// Sends the history request that is due, if any and if none is in flight.
    pub(super) fn pump_history(&mut self, effects: &mut Vec<Effect>) {
        if !self.is_connected() || self.plain || self.room_history.in_flight.is_some() {
            return;
        }
        let history = &self.room_history;
        let (ask, before, after, limit) = if history.initial_due {
            (Ask::Initial, None, None, HISTORY_ON_CONNECT)
        } else if let Some(seq) = history.resume_after {
            (Ask::Resume, None, Some(seq), HISTORY_RESUME_PAGE)
        } else if let Some(seq) = history.newer_after
            && self.scroll.is_none()
        {
            (Ask::Newer, None, Some(seq), HISTORY_RESUME_PAGE)
        } else if history.want_older {
            let before = self
                .scrollback
                .oldest_room_seq()
                .unwrap_or(history.welcome_seq + 1);
            if before <= 1 {
                self.room_history.want_older = false;
                self.room_history.older_exhausted = true;
                return;
            }
            (Ask::Older, Some(before), None, HISTORY_PAGE)
        } else {
            return;
        };
        if !self.pacer.try_take() {
            return;
        }
        match ask {
            Ask::Initial => self.room_history.initial_due = false,
            Ask::Resume => self.room_history.resume_after = None,
            Ask::Newer => self.room_history.newer_after = None,
            Ask::Older => self.room_history.want_older = false,
        }
        self.room_history.in_flight = Some(ask);
        effects.push(Effect::Send(ClientCommand::History {
            before,
            after,
            limit: Some(limit),
        }));
    }

    /// The answer to the request in flight.
    pub(super) fn on_history(
        &mut self,
        events: Vec<ServerEvent>,
        more: bool,
        gap: bool,
        time: NaiveTime,
    ) {
        let Some(ask) = self.room_history.in_flight.take() else {
            return;
        };
        let earlier = matches!(ask, Ask::Initial | Ask::Older);
        let mut entries = Vec::with_capacity(events.len());
        for event in &events {
            if let Some(seq) = event.stamp().map(|stamp| stamp.seq) {
                self.saw_room_seq(seq);
            }
            if let Some(entry) = self.room_entry(event, event_time(event, time)) {
                entries.push(Entry { earlier, ..entry });
            }
        }
        let newest = entries.iter().filter_map(|e| e.room_seq).max();
        let oldest = entries.iter().filter_map(|e| e.room_seq).min();
        match ask {
            Ask::Initial => {
                self.room_history.older_exhausted = !more;
                // What was said before the welcome, above what this connection showed
                // since, in seq order (everything since came live, before the welcome's
                // own lines did). Later events in the page came live too, or were never
                // for this client (its own rename, answered with a notice of its own).
                let welcome_seq = self.room_history.welcome_seq;
                let mut at = self.room_history.initial_at;
                let mut placed_any = false;
                for mut entry in entries {
                    let Some(seq) = entry.room_seq.filter(|&seq| seq <= welcome_seq) else {
                        continue;
                    };
                    if self.scrollback.holds_room_seq(seq) {
                        continue;
                    }
                    super::text::truncate_with_ellipsis(
                        &mut entry.text,
                        super::MAX_ENTRY_TEXT_BYTES,
                    );
                    let placed = self.scrollback.insert_at_number(at, entry);
                    at = self.next_after(placed, at);
                    self.placed(placed);
                    placed_any = true;
                }
                if placed_any {
                    let separator = Entry::line(
                        self.clock,
                        EntryKind::Separator,
                        "earlier messages above · live below",
                    );
                    let placed = self.scrollback.insert_at_number(at, separator);
                    self.placed(placed);
                }
            }
            Ask::Resume | Ask::Newer => {
                if gap {
                    let notice = Entry::line(
                        time,
                        EntryKind::Error,
                        "some messages were lost while you were away: the server no longer has them",
                    );
                    let placed = match oldest {
                        Some(oldest) => self.scrollback.insert_before_room_seq(oldest, notice),
                        None => self.scrollback.push(notice),
                    };
                    self.placed(placed);
                }
                for entry in entries {
                    self.place(entry);
                }
                if more && let Some(newest) = newest {
                    // The next page starts after this one.
                    match ask {
                        Ask::Resume => self.room_history.resume_after = Some(newest),
                        _ => self.room_history.newer_after = Some(newest),
                    }
                }
            }
            Ask::Older => {
                // This page answers every wish to see more made while it was coming.
                self.room_history.want_older = false;
                let mut page = entries;
                if !more {
                    self.room_history.older_exhausted = true;
                    let text = if gap {
                        "older messages are no longer kept by the server"
                    } else {
                        "the beginning of the room's history"
                    };
                    page.insert(0, Entry::line(time, EntryKind::Info, text));
                }
                let done = self.scrollback.prepend(page);
                if let Some(pos) = &mut self.scroll {
                    pos.seq += done.shift;
                }
                if done.dropped_newest > 0 && self.room_history.newer_after.is_none() {
                    self.room_history.newer_after = self.scrollback.newest_room_seq();
                }
                self.dirty = true;
            }
        }
    }

    /// The scrollback number after an entry placed as `placed`, tried at `at`.
    fn next_after(&self, placed: Placed, at: u64) -> u64 {
        match placed {
            Placed::Inserted(number) => number + 1,
            Placed::Appended => self.scrollback.next_seq(),
            Placed::Duplicate => at,
        }
    }

    /// Puts a room event from history where its seq belongs; false when it was held already.
    fn place(&mut self, mut entry: Entry) -> bool {
        super::text::truncate_with_ellipsis(&mut entry.text, super::MAX_ENTRY_TEXT_BYTES);
        let placed = self.scrollback.insert_by_seq(entry);
        self.placed(placed);
        placed != Placed::Duplicate
    }
}
