//! The recent end of the room log, kept in memory by each node: history answered without
//! Redis.
//!
//! A node's tail reads every room event, in seq order, and the hub delivers each one; the
//! hub then keeps it here. A reconnect storm (a node restarted, every user resuming `after`
//! their last seq at once) is then answered from memory instead of thousands of large
//! `XRANGE` replies that Redis must build and the node must parse.
//!
//! **Compact, and no allocation per event.** An event is kept as its kind, seq and time and
//! its three text fields, appended to one byte buffer: holding thousands of small
//! long-lived allocations (the rendered lines themselves) interleaved with the fan-out's
//! short-lived ones made glibc's malloc slower for everything (measured: +15 % CPU per
//! delivery at fanout W=32). Answers render the events again, from the same fields and by
//! the same code as the stream's answers ([`LogEntry::event`]), so the bytes are those that
//! went out live.
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
use super::{Kind, LogEntry};
use crate::outbox::Rendered;
use crate::room_log::{Answer, Query, now_ms};
use chat_protocol::ServerEvent;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `--history-cache`'s default: about 1.5 MB per node (some 40 bytes of bookkeeping and the
/// text of each event), a few seconds of a very busy room or hours of a quiet one.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// One kept event; its text fields lie in the ring's byte buffer.
#[derive(Debug, Clone, Copy)]
struct Kept {
    seq: u64,
    ts_ms: i64,
    kind: Kind,
    /// Where its fields start: in a [`Batch`], from the batch's first byte; in the ring,
    /// from the first byte the ring ever held.
    at: u64,
    /// The lengths of its address, name and text (`x`), stored one after the other.
    lens: [u32; 3],
}

impl Kept {
    fn len(&self) -> u64 {
        self.lens.iter().map(|&n| u64::from(n)).sum()
    }
}

/// Events read in one go, staged while they are delivered and kept once they have been.
#[derive(Debug, Default)]
pub struct Batch {
    kept: Vec<Kept>,
    bytes: Vec<u8>,
}

impl Batch {
    pub fn with_capacity(events: usize) -> Batch {
        Batch {
            kept: Vec::with_capacity(events),
            bytes: Vec::with_capacity(events * 64),
        }
    }

    /// Copies what [`LogEntry::event`] renders from: its kind, seq, time and texts.
    pub fn stage(&mut self, entry: &LogEntry) {
        let fields = [&entry.addr, &entry.name, &entry.x];
        // Lines are bounded by --max-line-bytes, far below 4 GiB; an entry that is not
        // would be left out (a hole, so `gap`), never cut.
        let (Ok(a), Ok(m), Ok(x)) = (
            u32::try_from(fields[0].len()),
            u32::try_from(fields[1].len()),
            u32::try_from(fields[2].len()),
        ) else {
            return;
        };
        self.kept.push(Kept {
            seq: entry.seq,
            ts_ms: entry.ts_ms,
            kind: entry.kind,
            at: self.bytes.len() as u64,
            lens: [a, m, x],
        });
        for field in fields {
            self.bytes.extend_from_slice(field.as_bytes());
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    /// Delivered events in seq order, every one from `covers_from` on.
    kept: VecDeque<Kept>,
    /// Their fields, back to back.
    bytes: VecDeque<u8>,
    /// How many bytes were ever dropped from the front of `bytes`.
    base: u64,
    /// Every event from this seq to `newest` that this node delivered is in `kept`.
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

/// Rows copied out of the ring, decoded once its lock is released.
struct Rows {
    kept: Vec<Kept>,
    bytes: Vec<u8>,
}

impl Rows {
    /// The events as users received them: rendered by the stream's own code.
    fn events(&self) -> Vec<(u64, ServerEvent)> {
        let nobody: Arc<str> = Arc::from("");
        let first = self.kept.first().map_or(0, |k| k.at);
        self.kept
            .iter()
            .map(|k| {
                let mut at = usize::try_from(k.at - first).unwrap_or(usize::MAX);
                let mut next = |len: u32| {
                    let end = at.saturating_add(len as usize).min(self.bytes.len());
                    let text = String::from_utf8_lossy(self.bytes.get(at..end).unwrap_or_default());
                    at = end;
                    text.into_owned()
                };
                let (addr, name, x) = (next(k.lens[0]), next(k.lens[1]), next(k.lens[2]));
                let entry = LogEntry {
                    seq: k.seq,
                    ts_ms: k.ts_ms,
                    kind: k.kind,
                    node: nobody.clone(),
                    conn: 0,
                    addr,
                    name,
                    x,
                    sub: 0,
                };
                (k.seq, entry.event())
            })
            .collect()
    }
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
    /// this node's users came). `older` holds the newest stream entries up to `seq`, oldest
    /// first, read at start so that the node's first users can resume from memory too;
    /// `complete`: the stream holds nothing older than them (whatever is older was trimmed).
    pub fn start(&self, seq: u64, older: Batch, complete: bool) {
        let mut ring = self.ring();
        *ring = Ring {
            covers_from: seq + 1,
            newest: seq,
            ..Ring::default()
        };
        if self.capacity == 0 {
            return;
        }
        let all = older.kept.len() <= self.capacity;
        ring.append(older, self.capacity);
        ring.covers_from = match ring.kept.front() {
            _ if complete && all => 1,
            Some(first) => first.seq,
            None => seq + 1,
        };
    }

    /// Keeps events just delivered, in seq order; `newest` is the newest seq delivered.
    /// Called under the hub's lock, after their delivery.
    pub fn extend(&self, delivered: Batch, newest: u64) {
        let mut ring = self.ring();
        ring.newest = ring.newest.max(newest);
        if self.capacity == 0 {
            ring.covers_from = ring.newest + 1;
            return;
        }
        ring.append(delivered, self.capacity);
    }

    /// Redis lost its data: forgets everything kept so far, so that history across the
    /// loss is read from the stream and says `gap` on every node alike (a node that kept
    /// the lost events would otherwise answer without a gap, and another node with one).
    pub fn forget(&self) {
        let mut ring = self.ring();
        let newest = ring.newest;
        *ring = Ring {
            covers_from: newest + 1,
            newest,
            ..Ring::default()
        };
    }

    /// The answer from memory, or `None` when the ring does not know enough (ask Redis).
    pub fn answer(&self, query: Query) -> Option<Answer> {
        if self.capacity == 0 {
            return None;
        }
        let mut ring = self.ring();
        if self.retention_ms > 0 {
            let cutoff = now_ms().saturating_sub(self.retention_ms);
            while ring.kept.front().is_some_and(|k| k.ts_ms < cutoff) {
                ring.drop_oldest();
            }
        }
        // Copied under the lock (a memcpy); decoded and rendered after.
        let (rows, more, gap) = match query {
            Query::Plain { limit } => {
                let rows = ring.plain(limit as usize)?;
                drop(ring);
                return Some(plain_answer(&rows));
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
fn hole(kept: &[Kept]) -> bool {
    kept.windows(2).any(|w| w[1].seq != w[0].seq + 1)
}

impl Ring {
    fn append(&mut self, batch: Batch, capacity: usize) {
        let offset = self.base + self.bytes.len() as u64;
        self.kept.extend(batch.kept.into_iter().map(|k| Kept {
            at: k.at + offset,
            ..k
        }));
        self.bytes.extend(batch.bytes);
        while self.kept.len() > capacity {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(old) = self.kept.pop_front() {
            let len = usize::try_from(old.len())
                .unwrap_or(usize::MAX)
                .min(self.bytes.len());
            self.bytes.drain(..len);
            self.base += len as u64;
            self.covers_from = old.seq + 1;
        }
    }

    /// A copy of the events `from..to` (indices into `kept`).
    fn rows(&self, from: usize, to: usize) -> Rows {
        let kept: Vec<Kept> = self.kept.range(from..to).copied().collect();
        let mut bytes = Vec::new();
        if let (Some(first), Some(last)) = (kept.first(), kept.last()) {
            let start = usize::try_from(first.at - self.base).unwrap_or(usize::MAX);
            let end = usize::try_from(last.at + last.len() - self.base).unwrap_or(usize::MAX);
            let (front, back) = self.bytes.as_slices();
            let split = front.len();
            if start < split {
                bytes.extend_from_slice(&front[start..end.min(split)]);
            }
            if end > split {
                bytes.extend_from_slice(&back[start.max(split) - split..end - split]);
            }
        }
        Rows { kept, bytes }
    }

    /// `after SEQ`: the same rows, `more` and `gap` as the stream's `XRANGE`.
    fn after(&self, from: u64, limit: usize) -> Option<(Rows, bool, bool)> {
        if from >= self.newest {
            return Some((self.rows(0, 0), false, false));
        }
        if from.saturating_add(1) < self.covers_from {
            return None;
        }
        let start = self.kept.partition_point(|k| k.seq <= from);
        let end = (start + limit + 1).min(self.kept.len());
        let more = end - start > limit;
        let rows = self.rows(start, end.min(start + limit));
        let gap = hole(&rows.kept)
            || match rows.kept.first() {
                Some(first) => first.seq > from + 1,
                None => self.newest > from,
            };
        Some((rows, more, gap))
    }

    /// The newest page at or below `top`: the same as the stream's `XREVRANGE`.
    fn before(&self, top: u64, limit: usize) -> Option<(Rows, bool, bool)> {
        if top == 0 {
            return Some((self.rows(0, 0), false, false));
        }
        let end = self.kept.partition_point(|k| k.seq <= top);
        let start = end.saturating_sub(limit + 1);
        // Fewer than asked for: older events may still be in the stream, unless the ring
        // knows everything down to the first seq.
        if end - start <= limit && self.covers_from > 1 {
            return None;
        }
        let more = end - start > limit;
        let rows = self.rows(if more { start + 1 } else { start }, end);
        let oldest = rows.kept.first().map_or(top + 1, |k| k.seq);
        let newest = rows.kept.last().map_or(top, |k| k.seq);
        let gap = hole(&rows.kept) || newest < top || (!more && oldest > 1);
        Some((rows, more, gap))
    }

    /// `history|N`: the newest `limit` events nc users saw (renames are not among them).
    fn plain(&self, limit: usize) -> Option<Rows> {
        let mut found = 0;
        let mut start = self.kept.len();
        while found < limit && start > 0 {
            start -= 1;
            if self.kept[start].kind != Kind::Rename {
                found += 1;
            }
        }
        if found < limit && self.covers_from > 1 {
            return None;
        }
        Some(self.rows(start, self.kept.len()))
    }
}

/// `{"type":"history","events":[...],"more":M,"gap":G}`, each event as it went out live.
fn json_answer(rows: &Rows, more: bool, gap: bool) -> Answer {
    let mut json = String::with_capacity(64 + rows.bytes.len() * 2 + rows.kept.len() * 96);
    json.push_str("{\"type\":\"history\",\"events\":[");
    for (i, (_, event)) in rows.events().iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        event.render_json(&mut json);
        // One line per event when sent live; here they are elements of one line.
        if json.ends_with('\n') {
            json.pop();
        }
    }
    json.push_str(&format!("],\"more\":{more},\"gap\":{gap}}}\n"));
    Answer {
        line: Rendered::preformatted(None, Some(json)),
    }
}

/// `history:` and the lines nc users saw, as the stream's answer renders them.
fn plain_answer(rows: &Rows) -> Answer {
    let mut text = String::from("history:\n");
    for (_, event) in rows.events() {
        let Some(line) = event.to_plain() else {
            continue;
        };
        let ts = event.stamp().map(|s| s.ts.clone()).unwrap_or_default();
        text.push_str(&seconds(&ts));
        text.push(' ');
        text.push_str(&line);
    }
    Answer {
        line: Rendered::preformatted(Some(text), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Mode;

    fn entry(seq: u64, ts_ms: i64) -> LogEntry {
        LogEntry {
            seq,
            ts_ms,
            kind: Kind::Chat,
            node: "n".into(),
            conn: 1,
            addr: "1.2.3.4:5".into(),
            name: "al".into(),
            x: format!("line {seq}"),
            sub: 0,
        }
    }

    fn batch(entries: impl IntoIterator<Item = LogEntry>) -> Batch {
        let mut batch = Batch::default();
        for e in entries {
            batch.stage(&e);
        }
        batch
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
        recent.start(10, Batch::default(), false);
        recent.extend(batch((11..=17).map(|s| entry(s, now))), 17);
        // Holds 13..=17.
        let after = |seq, limit| recent.answer(Query::After { seq, limit }).map(|a| seqs(&a));
        assert_eq!(after(12, 10), Some(((13..=17).collect(), false, false)));
        assert_eq!(after(13, 2), Some((vec![14, 15], true, false)));
        assert_eq!(after(17, 2), Some((vec![], false, false)));
        assert_eq!(after(11, 2), None, "13 is not known to follow 11 here");
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
    fn answers_are_the_events_as_they_went_out() {
        let now = now_ms();
        let recent = Recent::new(3, 0, Duration::ZERO);
        recent.start(0, Batch::default(), true);
        // Asked at every step, so that some answers span the byte buffer's wrap-around.
        for s in 1..=50 {
            recent.extend(batch([entry(s, now)]), s);
            let from = s.saturating_sub(3);
            let answer = recent
                .answer(Query::After {
                    seq: from,
                    limit: 10,
                })
                .expect("covered");
            let expected: Vec<String> = (from + 1..=s)
                .map(|s| entry(s, now).event().to_json().trim_end().to_string())
                .collect();
            let json = std::str::from_utf8(answer.line.bytes(Mode::Json).expect("json"))
                .expect("utf-8")
                .to_string();
            assert_eq!(
                json,
                format!(
                    "{{\"type\":\"history\",\"events\":[{}],\"more\":false,\"gap\":false}}\n",
                    expected.join(",")
                )
            );
        }
    }

    #[test]
    fn a_missing_seq_is_a_gap_and_a_complete_start_knows_the_front() {
        let now = now_ms();
        let recent = Recent::new(100, 0, Duration::ZERO);
        recent.start(3, batch([entry(2, now), entry(3, now)]), true);
        recent.extend(batch([entry(4, now), entry(6, now)]), 6);
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
        recent.forget();
        assert_eq!(after(3), None, "forgotten: ask the stream");
        assert_eq!(after(6), Some((vec![], false, false)));
    }

    #[test]
    fn retention_forgets_old_events_and_then_misses() {
        let now = now_ms();
        let recent = Recent::new(100, 0, Duration::from_secs(60));
        recent.start(0, Batch::default(), true);
        recent.extend(
            batch([
                entry(1, now - 120_000),
                entry(2, now - 61_000),
                entry(3, now),
            ]),
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
    fn plain_lines_carry_their_time_and_skip_renames() {
        let recent = Recent::new(100, 0, Duration::ZERO);
        recent.start(0, Batch::default(), true);
        let mut rename = entry(2, 1_764_643_268_000);
        rename.kind = Kind::Rename;
        recent.extend(batch([entry(1, 1_764_643_267_123), rename]), 2);
        let answer = recent.answer(Query::Plain { limit: 20 }).expect("known");
        let text =
            std::str::from_utf8(answer.line.bytes(Mode::Plain).expect("plain")).expect("utf-8");
        assert_eq!(
            text,
            "history:\n2025-12-02T02:41:07Z [1.2.3.4:5]al: line 1\n"
        );
    }
}
