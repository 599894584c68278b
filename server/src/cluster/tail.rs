//! The tail: reads the room log and this node's direct messages from Redis, in order, and
//! hands them to the hub.
//!
//! One dedicated connection does nothing but `XREAD BLOCK` on both streams at once, from
//! the last seq the hub delivered (and the last direct message read). It is a plain RESP
//! connection of its own ([`resp`]), not the `redis` crate's: reading every event on every
//! node is the hot path, and its reply is parsed straight into entries. After a lost
//! connection it reconnects and goes on from there: an entry is never delivered twice
//! (the hub skips seqs it has delivered) and none that Redis kept is skipped.

use super::{Kind, Link, LogEntry, items, read_entry, resp, text};
use crate::hub::Hub;
use crate::room_log::format_ts;
use chat_protocol::{LeaveReason, ServerEvent, Stamp};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Entries read at most per round trip. An entry may be a run of up to 512 chat lines
/// (one script call's, cut at 1 MiB of text by the driver), so this bounds a reply to
/// some 70 MB whatever `--max-line-bytes` is, within the connection's bound on a reply.
const BATCH: usize = 64;
/// How long one `XREAD` blocks: also how soon the tail notices a stop.
const BLOCK: Duration = Duration::from_millis(1000);

/// Two passes in a row of at least this many events mean the node is busy: events arrive
/// faster than it delivers them a few at a time. (One such pass alone is a stall of the
/// machine or of Redis catching up, after which a quiet room is quiet again.)
const BUSY: usize = 32;
/// The longest the tail waits after a busy pass.
const BUSY_PAUSE_MAX: Duration = Duration::from_millis(5);

/// How long to wait before reading again after a pass that delivered `events`, the pass
/// before it `before`: nothing unless both were busy (a quiet room's events go out as soon
/// as they are read, and so do those gathered by one stall), and after busy passes 25 µs
/// per event delivered, at most [`BUSY_PAUSE_MAX`]. A third of what a busy node costs is
/// its sends, one per recipient per pass whatever the pass holds (each a system call
/// through the whole TCP stack): waiting lets the next pass gather more events, so a busy
/// node sends fewer, larger writes (docs/BENCHMARKS.md, "Cluster"). Its users then wait a
/// few milliseconds more, when events already queue.
fn busy_pause(before: usize, events: usize) -> Option<Duration> {
    (before >= BUSY && events >= BUSY).then(|| {
        Duration::from_micros(25)
            .saturating_mul(u32::try_from(events).unwrap_or(u32::MAX))
            .min(BUSY_PAUSE_MAX)
    })
}

/// Reads until `stop`.
pub async fn run(link: Arc<Link>, hub: Arc<Hub>, client: redis::Client, stop: CancellationToken) {
    let log_key = link.key("log");
    let dm_key = link.key(&format!("dm:{}", link.node));
    let mut dm_last = String::from("0-0");
    // The newest log entry read, delivered or skipped as unreadable: reading goes on after
    // it, so an unreadable entry is not read again and again.
    let mut log_last = 0;
    let mut nodes = resp::NodeNames::default();
    let mut connection = None;
    // Events delivered by the last pass.
    let mut last_pass = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let con = match &mut connection {
            Some(con) => con,
            None => {
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return,
                    c = resp::Connection::connect(
                        client.get_connection_info(),
                        BLOCK + Duration::from_secs(3),
                    ) => c,
                };
                match attempt {
                    Ok(con) => connection.insert(con),
                    Err(e) => {
                        tracing::debug!(error = %e, "tail: cannot reach redis");
                        link.trouble.notify_one();
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                        continue;
                    }
                }
            }
        };
        let from = format!("{}-0", hub.applied().max(log_last));
        let args = resp::XreadArgs {
            count: BATCH,
            block: BLOCK,
            log_key: &log_key,
            dm_key: &dm_key,
            log_from: &from,
            dm_from: &dm_last,
        };
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            reply = con.xread(&args, &mut nodes) => reply,
        };
        match reply {
            Ok(read) => {
                if let Some(last) = read.log_last {
                    log_last = log_last.max(last);
                }
                if let Some(id) = read.dm_last {
                    dm_last = id;
                }
                let events = read.log.len();
                if !read.log.is_empty() || !read.dms.is_empty() {
                    hub.apply(read.log, read.dms);
                }
                let before = std::mem::replace(&mut last_pass, events);
                if let Some(pause) = busy_pause(before, events) {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "tail: lost redis");
                connection = None;
                link.trouble.notify_one();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// One stream entry: its id and its fields.
pub type RawEntry = (String, Vec<(String, String)>);

/// The entries of an `XRANGE`-shaped reply.
pub fn raw_entries(value: &redis::Value) -> Vec<RawEntry> {
    items(value)
        .into_iter()
        .filter_map(|entry| {
            let parts = items(entry);
            let id = text(parts.first().copied())?;
            let flat = items(parts.get(1)?);
            let fields = flat
                .chunks(2)
                .filter_map(|pair| {
                    Some((text(pair.first().copied())?, text(pair.get(1).copied())?))
                })
                .collect();
            Some((id, fields))
        })
        .collect()
}

/// The events of the log entry `id`, appended to `out`; the seq of its last event, or
/// `None` (logged, nothing added) for an entry this version cannot read.
pub fn log_entries(id: &str, fields: &[(String, String)], out: &mut Vec<LogEntry>) -> Option<u64> {
    let first = id.split('-').next()?.parse().ok();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes())
    };
    let last = first.and_then(|first| read_entry(first, field, |node| node.into(), out));
    if last.is_none() {
        tracing::warn!(id, "unreadable room log entry; skipped");
    }
    last
}

/// A leave reason as stored (its JSON name).
pub fn reason_name(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Quit => "quit",
        LeaveReason::Timeout => "timeout",
        LeaveReason::SendqExceeded => "sendq_exceeded",
        LeaveReason::ExcessFlood => "excess_flood",
        LeaveReason::NodeLost => "node_lost",
    }
}

fn parse_reason(name: &str) -> LeaveReason {
    match name {
        "timeout" => LeaveReason::Timeout,
        "sendq_exceeded" => LeaveReason::SendqExceeded,
        "excess_flood" => LeaveReason::ExcessFlood,
        "node_lost" => LeaveReason::NodeLost,
        _ => LeaveReason::Quit,
    }
}

impl LogEntry {
    /// [`LogEntry::event`], taking the entry's texts instead of copying them.
    pub fn into_event(self) -> ServerEvent {
        let stamp = Some(Stamp {
            seq: self.seq,
            ts: format_ts(self.ts_ms),
        });
        let (addr, name, x) = (self.addr, self.name, self.x);
        match self.kind {
            Kind::Join => ServerEvent::Join { addr, name, stamp },
            Kind::Chat => ServerEvent::Chat {
                addr,
                name,
                text: x,
                stamp,
            },
            Kind::Rename => ServerEvent::Rename {
                addr,
                old: name,
                new: x,
                stamp,
            },
            Kind::Leave => ServerEvent::Leave {
                addr,
                name,
                reason: parse_reason(&x),
                stamp,
            },
        }
    }

    /// The event as users receive it: the same bytes on every node, live and in history.
    pub fn event(&self) -> ServerEvent {
        self.clone().into_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_pass_after_a_busy_pass_waits() {
        assert_eq!(busy_pause(0, 1), None);
        assert_eq!(
            busy_pause(0, 500),
            None,
            "one big pass: a stall, not a busy room"
        );
        assert_eq!(busy_pause(500, 31), None);
        assert_eq!(busy_pause(32, 32), Some(Duration::from_micros(800)));
        assert_eq!(busy_pause(100, 100), Some(Duration::from_micros(2500)));
        assert_eq!(busy_pause(100, usize::MAX), Some(BUSY_PAUSE_MAX));
    }
}
