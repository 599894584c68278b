//! The recent end of the room log, kept in memory by each node: history answered without
//! Redis.
//!
//! A node's tail reads every room event, in seq order, and the hub delivers each one; the
//! hub then keeps it here, rendered exactly as it went out (the same `Arc<Rendered>`, so
//! its JSON is not even rendered again). A reconnect storm (a node restarted, every user
//! resuming `after` their last seq at once) is then answered from memory instead of
//! thousands of large `XRANGE` replies that Redis must build and the node must parse.
//!
//! **Same answers as the stream.** An event is kept only once it has been delivered to this
//! node's users, so an answer never holds an event its client has not been sent live, and
//! the answer's bound is the newest event delivered: every newer one reaches the client
//! live after it, as with the stream. The ring knows every event this node delivered from
//! `covers_from` on; a seq missing inside that range never reached this node (Redis lost
//! it, or it could not be read), which the stream shows the same way: `gap`. A question
//! that reaches below `covers_from` (or asks for more older events than it holds) is a
//! miss and goes to Redis. When Redis lost its data, the ring forgets what it held, so
//! that history across the loss says `gap` on every node, as the issue asks.
//!
//! **Retention.** The ring holds at most `--history-cache` events and never more than
//! `--history-max-events` (the stream keeps at least that many, so the ring never knows an
//! event the stream trimmed by count), and forgets events older than
//! `--history-retention` before answering, as the stream's own trimming does.

use super::history::seconds;
use crate::outbox::{Mode, Rendered};
use crate::room_log::{Answer, Query, format_ts, now_ms};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `--history-cache`'s default: about 1.4 MB to 4 MB per node (events of 150 to 400 bytes
/// rendered once, mostly in JSON), and a few seconds of a very busy room or hours of a
/// quiet one.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// One delivered event.
#[derive(Debug)]
struct Kept {
    seq: u64,
    ts_ms: i64,
    line: Arc<Rendered>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Delivered events in seq order, every one from `covers_from` on.
    events: VecDeque<Kept>,
    /// Every event from this seq to `newest` that this node delivered is in `events`.
    covers_from: u64,
    /// The newest seq delivered: no answer goes past it.
    newest: u64,
}

/// The ring and its bounds.
#[derive(Debug)]
pub struct Recent {
    ring: Mutex<Ring>,
    /// `0`: nothing is kept and every question goes to Redis.
    capacity: usize,
    /// `0`: kept however old.
    retention_ms: i64,
}

impl Recent {
    /// A ring of at most `capacity` events, none kept past `max_events` (`0`: no such
    /// bound) or `retention` (`0`: none).
    pub fn new(capacity: usize, max_events: u64, retention: Duration) -> Recent {
        let capacity = match max_events {
            0 => capacity,
            max => capacity.min(usize::try_from(max).unwrap_or(usize::MAX)),
        };
        Recent {
            ring: Mutex::new(Ring {
                covers_from: 1,
                ..Ring::default()
            }),
            capacity,
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// At most how many events it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node joins the room at `seq` (delivered: everything up to it happened before
    /// this node's users came). `older` are the newest stream entries up to `seq`, oldest
    /// first, read at start so that the node's first users can resume from memory too;
    /// `complete`: the stream holds nothing older than them (whatever is older was trimmed).
    pub fn start(&self, seq: u64, older: Vec<(u64, i64, Arc<Rendered>)>, complete: bool) {
        let mut ring = self.ring();
        ring.newest = seq;
        ring.events.clear();
        ring.covers_from = seq + 1;
        if self.capacity == 0 {
            return;
        }
        let skip = older.len().saturating_sub(self.capacity);
        let complete = complete && skip == 0;
        for (seq, ts_ms, line) in older.into_iter().skip(skip) {
            ring.events.push_back(Kept { seq, ts_ms, line });
        }
        ring.covers_from = match ring.events.front() {
            _ if complete => 1,
            Some(first) => first.seq,
            None => seq + 1,
        };
    }

    /// Keeps events just delivered, in seq order; `newest` is the newest seq delivered.
    /// Called under the hub's lock, after their delivery.
    pub fn extend(&self, delivered: Vec<(u64, i64, Arc<Rendered>)>, newest: u64) {
        let mut ring = self.ring();
        ring.newest = ring.newest.max(newest);
        if self.capacity == 0 {
            ring.covers_from = ring.newest + 1;
            return;
        }
        for (seq, ts_ms, line) in delivered {
            ring.events.push_back(Kept { seq, ts_ms, line });
        }
        while ring.events.len() > self.capacity {
            if let Some(old) = ring.events.pop_front() {
                ring.covers_from = old.seq + 1;
            }
        }
    }

    /// Redis lost its data: forgets everything kept so far, so that history across the
    /// loss is read from the stream and says `gap` on every node alike (a node that kept
    /// the lost events would otherwise answer without a gap, and another node with one).
    pub fn forget(&self) {
        let mut ring = self.ring();
        ring.events.clear();
        ring.covers_from = ring.newest + 1;
    }

    /// The answer from memory, or `None` when the ring does not know enough (ask Redis).
    pub fn answer(&self, query: Query) -> Option<Answer> {
        if self.capacity == 0 {
            return None;
        }
        let mut ring = self.ring();
        if self.retention_ms > 0 {
            let cutoff = now_ms().saturating_sub(self.retention_ms);
            while ring.events.front().is_some_and(|e| e.ts_ms < cutoff) {
                if let Some(old) = ring.events.pop_front() {
                    ring.covers_from = old.seq + 1;
                }
            }
        }
        // Clones of the lines (cheap) under the lock; the answer is built after.
        let (rows, more, gap) = match query {
            Query::Plain { limit } => {
                let lines = ring.plain(limit as usize)?;
                drop(ring);
                return Some(plain_answer(lines));
            }
            Query::After { seq, limit } => ring.after(seq, limit as usize)?,
            Query::Newest { limit } => ring.before(ring.newest, limit as usize)?,
            Query::Before { seq, limit } => {
                ring.before(ring.newest.min(seq.saturating_sub(1)), limit as usize)?
            }
        };
        drop(ring);
        Some(json_answer(&rows, more, gap))
    }
}

/// Whether consecutive rows skip a seq.
fn hole(rows: &[(u64, i64, Arc<Rendered>)]) -> bool {
    rows.windows(2).any(|w| w[1].0 != w[0].0 + 1)
}

impl Ring {
    fn clone_range(&self, from: usize, to: usize) -> Vec<(u64, i64, Arc<Rendered>)> {
        self.events
            .range(from..to)
            .map(|e| (e.seq, e.ts_ms, e.line.clone()))
            .collect()
    }

    /// `after SEQ`: the same rows, `more` and `gap` as the stream's `XRANGE`.
    #[allow(clippy::type_complexity)]
    fn after(
        &self,
        from: u64,
        limit: usize,
    ) -> Option<(Vec<(u64, i64, Arc<Rendered>)>, bool, bool)> {
        if from >= self.newest {
            return Some((Vec::new(), false, false));
        }
        if from.saturating_add(1) < self.covers_from {
            return None;
        }
        let start = self.events.partition_point(|e| e.seq <= from);
        let end = (start + limit + 1).min(self.events.len());
        let mut rows = self.clone_range(start, end);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let gap = hole(&rows)
            || match rows.first() {
                Some((first, ..)) => *first > from + 1,
                None => self.newest > from,
            };
        Some((rows, more, gap))
    }

    /// The newest page at or below `top`: the same as the stream's `XREVRANGE`.
    #[allow(clippy::type_complexity)]
    fn before(
        &self,
        top: u64,
        limit: usize,
    ) -> Option<(Vec<(u64, i64, Arc<Rendered>)>, bool, bool)> {
        if top == 0 {
            return Some((Vec::new(), false, false));
        }
        let end = self.events.partition_point(|e| e.seq <= top);
        let start = end.saturating_sub(limit + 1);
        let mut rows = self.clone_range(start, end);
        // Fewer than asked for: older events may still be in the stream, unless the ring
        // knows everything down to the first seq.
        if rows.len() <= limit && self.covers_from > 1 {
            return None;
        }
        let more = rows.len() > limit;
        if more {
            rows.remove(0);
        }
        let oldest = rows.first().map_or(top + 1, |r| r.0);
        let newest = rows.last().map_or(top, |r| r.0);
        let gap = hole(&rows) || newest < top || (!more && oldest > 1);
        Some((rows, more, gap))
    }

    /// `history|N`: the newest `limit` lines nc users saw, oldest first, each with its time.
    fn plain(&self, limit: usize) -> Option<Vec<(i64, Arc<Rendered>)>> {
        let mut lines = Vec::with_capacity(limit.min(self.events.len()));
        for kept in self.events.iter().rev() {
            if lines.len() == limit {
                break;
            }
            if kept.line.bytes(Mode::Plain).is_some() {
                lines.push((kept.ts_ms, kept.line.clone()));
            }
        }
        if lines.len() < limit && self.covers_from > 1 {
            return None;
        }
        lines.reverse();
        Some(lines)
    }
}

/// `{"type":"history","events":[...],"more":M,"gap":G}`, each event as it went out live.
fn json_answer(rows: &[(u64, i64, Arc<Rendered>)], more: bool, gap: bool) -> Answer {
    let size: usize = rows
        .iter()
        .map(|(_, _, line)| line.bytes(Mode::Json).map_or(0, <[u8]>::len))
        .sum();
    let mut json = Vec::with_capacity(64 + size);
    json.extend_from_slice(b"{\"type\":\"history\",\"events\":[");
    for (i, (_, _, line)) in rows.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        let bytes = line.bytes(Mode::Json).unwrap_or_default();
        json.extend_from_slice(bytes.strip_suffix(b"\n").unwrap_or(bytes));
    }
    json.extend_from_slice(format!("],\"more\":{more},\"gap\":{gap}}}\n").as_bytes());
    // Concatenated UTF-8 is UTF-8; the lossy path is never taken.
    let json = String::from_utf8(json)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Answer {
        line: Rendered::preformatted(None, Some(json)),
    }
}

/// `history:` and the lines, as the stream's answer renders them.
fn plain_answer(lines: Vec<(i64, Arc<Rendered>)>) -> Answer {
    let mut text = String::from("history:\n");
    for (ts_ms, line) in lines {
        let Some(bytes) = line.bytes(Mode::Plain) else {
            continue;
        };
        text.push_str(&seconds(&format_ts(ts_ms)));
        text.push(' ');
        text.push_str(&String::from_utf8_lossy(bytes));
    }
    Answer {
        line: Rendered::preformatted(Some(text), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::{ServerEvent, Stamp};

    fn event(seq: u64, ts_ms: i64) -> (u64, i64, Arc<Rendered>) {
        let line = Rendered::new(ServerEvent::Chat {
            addr: "1.2.3.4:5".into(),
            name: "al".into(),
            text: format!("line {seq}"),
            stamp: Some(Stamp {
                seq,
                ts: format_ts(ts_ms),
            }),
        });
        (seq, ts_ms, line)
    }

    fn seqs(answer: &Answer) -> (Vec<u64>, bool, bool) {
        let json = answer.line.bytes(Mode::Json).expect("json");
        let value: serde_json::Value = serde_json::from_slice(json).expect("valid json");
        let seqs = value["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        (
            seqs,
            value["more"].as_bool().expect("more"),
            value["gap"].as_bool().expect("gap"),
        )
    }

    #[test]
    fn answers_what_it_covers_and_misses_below() {
        let now = now_ms();
        let recent = Recent::new(5, 0, Duration::ZERO);
        recent.start(10, Vec::new(), false);
        recent.extend((11..=17).map(|s| event(s, now)).collect(), 17);
        // Holds 13..=17.
        let after = |seq, limit| recent.answer(Query::After { seq, limit }).map(|a| seqs(&a));
        assert_eq!(after(12, 10), Some(((13..=17).collect(), false, false)));
        assert_eq!(after(13, 2), Some((vec![14, 15], true, false)));
        assert_eq!(after(17, 2), Some((vec![], false, false)));
        assert_eq!(after(11, 2), None, "14 is not known to follow 12 here");
        let before = |seq, limit| {
            recent
                .answer(Query::Before { seq, limit })
                .map(|a| seqs(&a))
        };
        assert_eq!(before(17, 2), Some((vec![15, 16], true, false)));
        assert_eq!(
            before(16, 3),
            None,
            "needs one more than 13..=15 to say more"
        );
        assert_eq!(
            recent.answer(Query::Newest { limit: 3 }).map(|a| seqs(&a)),
            Some((vec![15, 16, 17], true, false))
        );
    }

    #[test]
    fn a_missing_seq_is_a_gap_and_a_complete_start_knows_the_front() {
        let now = now_ms();
        let recent = Recent::new(100, 0, Duration::ZERO);
        recent.start(3, vec![event(2, now), event(3, now)], true);
        recent.extend(vec![event(4, now), event(6, now)], 6);
        let after = |seq| {
            recent
                .answer(Query::After { seq, limit: 10 })
                .map(|a| seqs(&a))
        };
        assert_eq!(after(3), Some((vec![4, 6], false, true)));
        assert_eq!(after(0), Some((vec![2, 3, 4, 6], false, true)));
        assert_eq!(
            recent.answer(Query::Newest { limit: 10 }).map(|a| seqs(&a)),
            Some((vec![2, 3, 4, 6], false, true)),
            "seq 1 was trimmed: gap"
        );
    }

    #[test]
    fn retention_forgets_old_events_and_then_misses() {
        let now = now_ms();
        let recent = Recent::new(100, 0, Duration::from_secs(60));
        recent.start(0, Vec::new(), true);
        recent.extend(
            vec![
                event(1, now - 120_000),
                event(2, now - 61_000),
                event(3, now),
            ],
            3,
        );
        assert_eq!(
            recent
                .answer(Query::After { seq: 2, limit: 10 })
                .map(|a| seqs(&a)),
            Some((vec![3], false, false))
        );
        assert!(recent.answer(Query::After { seq: 0, limit: 10 }).is_none());
    }

    #[test]
    fn plain_lines_carry_their_time() {
        let recent = Recent::new(100, 0, Duration::ZERO);
        recent.start(0, Vec::new(), true);
        recent.extend(vec![event(1, 1_764_643_267_123)], 1);
        let answer = recent.answer(Query::Plain { limit: 20 }).expect("known");
        let text =
            std::str::from_utf8(answer.line.bytes(Mode::Plain).expect("plain")).expect("utf-8");
        assert_eq!(
            text,
            "history:\n2025-12-02T02:41:07Z [1.2.3.4:5]al: line 1\n"
        );
    }
}
