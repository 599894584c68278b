//! History in cluster mode, read from the room's stream: the same answers, byte for byte,
//! as a single node gives from its SQLite log, on whichever node the client asks.
//!
//! Most questions are answered from the node's memory of the recent log
//! ([`recent`](super::recent)); the others read the stream. A stream entry holds one event
//! or a run of consecutive ones, its id `FIRST-0` the seq of its first ([`read_entry`]):
//! `after SEQ` starts at the entry holding `SEQ+1` (the newest whose id is not above it,
//! `XREVRANGE ... COUNT 1`) and goes on with `XRANGE` after it; `before` is an `XREVRANGE`
//! whose first entry may hold newer events than asked for, left out. Seqs in the stream
//! are consecutive except where retention trimmed the front or Redis lost data; either
//! shows as `gap`.
//!
//! [`read_entry`]: super::read_entry
//!
//! Reads of the stream take turns: at most [`CONCURRENCY`] per node are in flight on the
//! history connection, and the others wait in line (up to [`QUEUE_WAIT`]) instead of
//! piling onto it. Hundreds of 500-entry `XRANGE`s queued at once on one connection made
//! the later ones wait behind the replies of all the earlier ones, past the connection's
//! response timeout, and a reconnect storm was refused as `unavailable`.

use super::Link;
use super::LogEntry;
use super::recent::Batch;
use super::tail::{log_entries, raw_entries};
use crate::outbox::Rendered;
use crate::room_log::{Answer, Query};
use chat_protocol::ServerEvent;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// History reads of the stream in flight at once on one node: enough to keep Redis and
/// the node's parsing both busy, few enough that each answers well within [`TIMEOUT`].
pub const CONCURRENCY: usize = 4;
/// How long a history read waits for its turn before it is refused (`unavailable`): long
/// enough for a storm of 1,000 resumes that memory does not cover, on two busy cores
/// (measured: 17 to 26 s for all of them; docs/BENCHMARKS.md).
pub const QUEUE_WAIT: Duration = Duration::from_secs(60);
/// The history connection's response timeout: one read of at most 501 entries, sent only
/// when its turn has come.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `query` from memory if the node's recent log knows enough, else from the
/// stream, in turn; never past `bound()`, the newest seq this node has delivered (read
/// when the turn comes).
pub async fn answer(link: &Link, bound: impl Fn() -> u64, query: Query) -> anyhow::Result<Answer> {
    if let Some(answer) = link.recent.answer(query) {
        return Ok(answer);
    }
    // While Redis is unreachable, what memory does not cover is refused at once rather
    // than queued behind reads that can only time out.
    let reachable = || {
        if link.available() {
            Ok(())
        } else {
            Err(anyhow::anyhow!("redis is unreachable"))
        }
    };
    reachable()?;
    let _turn = tokio::time::timeout(QUEUE_WAIT, link.history_gate.acquire())
        .await
        .map_err(|_| anyhow::anyhow!("no turn to read the stream within {QUEUE_WAIT:?}"))??;
    reachable()?;
    let con = link.query.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(mut con) = con else {
        anyhow::bail!("no connection to redis");
    };
    Ok(self::query(&mut con, &link.key("log"), query, bound()).await?)
}

/// Fills the node's recent log at start with the newest events up to `seq`, so that users
/// who resume on a node that just started are answered from memory too. A failure only
/// costs that: they are answered from the stream.
pub async fn warm(link: &Link, seq: u64) {
    let capacity = link.recent.capacity();
    let con = link.query.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (Some(mut con), true) = (con, capacity > 0 && seq > 0) else {
        link.recent.start(seq, Batch::default(), false);
        return;
    };
    let key = link.key("log");
    let read = read_events(&mut con, &key, Dir::Down, 1, seq, capacity);
    // Bounded well within the node timeout: the driver does not heartbeat yet.
    let bound = link.config.node_timeout / 3;
    let read = tokio::time::timeout(bound, read)
        .await
        .unwrap_or_else(|_| Err((redis::ErrorKind::Io, "timed out").into()));
    match read {
        Ok(Read {
            events: newest_first,
            exhausted,
            ..
        }) => {
            // Nothing older in the stream, readable or not (the ring checks that it kept
            // all of these).
            let complete = exhausted;
            let mut older = Batch::with_capacity(newest_first.len());
            for entry in newest_first.iter().rev() {
                older.stage(entry);
            }
            link.recent.start(seq, older, complete);
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the recent log at start; history reads the stream");
            link.recent.start(seq, Batch::default(), false);
        }
    }
}

/// Answers `query` without going past `bound`, the newest seq this node has delivered.
pub async fn query(
    con: &mut MultiplexedConnection,
    log_key: &str,
    query: Query,
    bound: u64,
) -> redis::RedisResult<Answer> {
    if let Query::Plain { limit } = query {
        return plain(con, log_key, limit, bound).await;
    }
    let (ascending, from, limit) = match query {
        Query::Newest { limit } => (false, bound, limit),
        Query::Before { seq, limit } => (false, bound.min(seq.saturating_sub(1)), limit),
        Query::After { seq, limit } => (true, seq, limit),
        Query::Plain { .. } => unreachable!("answered above"),
    };
    let fetch = limit as usize + 1;
    // `sent`: the entries Redis sent, readable or not, which say whether more exist. An
    // unreadable entry thus counts towards `more` (at worst one more page, empty), where
    // counting only what was read could end a client's paging short of older events.
    let read = if ascending {
        if from >= bound {
            Read::default()
        } else {
            read_events(con, log_key, Dir::Up, from + 1, bound, fetch).await?
        }
    } else if from == 0 {
        Read::default()
    } else {
        read_events(con, log_key, Dir::Down, 1, from, fetch).await?
    };
    let more = read.counted > limit as usize;
    let mut rows: Vec<(u64, ServerEvent)> = read
        .events
        .into_iter()
        .take(limit as usize)
        .map(|entry| (entry.seq, entry.into_event()))
        .collect();
    if !ascending {
        rows.reverse();
    }
    let hole = rows.windows(2).any(|w| w[1].0 != w[0].0 + 1);
    let gap = if ascending {
        hole || match rows.first() {
            Some((first, _)) => *first > from + 1,
            None => bound > from,
        }
    } else {
        let oldest = rows.first().map_or(from + 1, |(seq, _)| *seq);
        let newest = rows.last().map_or(from, |(seq, _)| *seq);
        hole || newest < from || (!more && oldest > 1)
    };
    let mut json = String::from("{\"type\":\"history\",\"events\":[");
    for (i, (_, event)) in rows.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(event.to_json().trim_end());
    }
    json.push_str(&format!("],\"more\":{more},\"gap\":{gap}}}\n"));
    Ok(Answer {
        line: Rendered::preformatted(None, Some(json)),
    })
}

/// `history|N`: the newest N lines nc users saw (renames excluded), timestamped.
async fn plain(
    con: &mut MultiplexedConnection,
    log_key: &str,
    limit: u32,
    bound: u64,
) -> redis::RedisResult<Answer> {
    let mut lines: Vec<(i64, String)> = Vec::new();
    let mut top = bound;
    while lines.len() < limit as usize && top > 0 {
        let page = read_events(con, log_key, Dir::Down, 1, top, 200).await?;
        let Some(oldest) = page.events.last() else {
            break;
        };
        top = oldest.seq.saturating_sub(1);
        for entry in page.events {
            if lines.len() == limit as usize {
                break;
            }
            let event = entry.into_event();
            let ts = event.stamp().map(|s| s.ts.clone()).unwrap_or_default();
            if let Some(text) = event.to_plain() {
                lines.push((0, format!("{} {text}", seconds(&ts))));
            }
        }
        if page.exhausted {
            break;
        }
    }
    let mut text = String::from("history:\n");
    for (_, line) in lines.iter().rev() {
        text.push_str(line);
    }
    Ok(Answer {
        line: Rendered::preformatted(Some(text), None),
    })
}

/// `2026-12-02T02:41:07.123Z` → `2026-12-02T02:41:07Z`.
pub(super) fn seconds(ts: &str) -> String {
    match ts.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => ts.to_string(),
    }
}

/// Which way a read of the stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Ascending seqs (`XRANGE`).
    Up,
    /// Descending seqs (`XREVRANGE`).
    Down,
}

/// What [`read_events`] found.
#[derive(Debug, Default)]
struct Read {
    /// The events, in the order read.
    events: Vec<LogEntry>,
    /// The events read, plus one for each entry in the range this version cannot read: an
    /// unreadable entry still exists, and counts towards `more` (at worst one more page,
    /// empty), where counting only what was read could end a client's paging short of
    /// older events.
    counted: usize,
    /// The stream holds nothing more in the range.
    exhausted: bool,
}

/// Entries read per round trip at most: an entry may hold a run of up to 512 events.
const PAGE: usize = 512;
/// Entries read by the first round trip of a read, before anything says how many events
/// an entry holds here: a busy room's entries are runs of tens of lines, a quiet one's
/// single events.
const FIRST_PAGE: usize = 16;

/// The events with seqs in `lo..=hi`, in `dir`'s order, read entry by entry until `want`
/// are counted ([`Read::counted`]) or the range is exhausted. Whole entries are read, so
/// there may be more than `want`.
async fn read_events(
    con: &mut MultiplexedConnection,
    key: &str,
    dir: Dir,
    lo: u64,
    hi: u64,
    want: usize,
) -> redis::RedisResult<Read> {
    let mut read = Read::default();
    if lo > hi {
        read.exhausted = true;
        return Ok(read);
    }
    let take = |read: &mut Read, id: &str, fields: &[(String, String)]| {
        let mut events = Vec::new();
        if log_entries(id, fields, &mut events).is_none() {
            let first = id.split('-').next().and_then(|s| s.parse::<u64>().ok());
            if first.is_some_and(|first| (lo..=hi).contains(&first)) {
                read.counted += 1;
            }
            return;
        }
        events.retain(|e| (lo..=hi).contains(&e.seq));
        if dir == Dir::Down {
            events.reverse();
        }
        read.counted += events.len();
        read.events.append(&mut events);
    };
    let (command, mut cursor, end) = match dir {
        Dir::Up => {
            // The entry holding `lo` may start before it.
            let holder = raw(con, "XREVRANGE", key, &format!("{lo}-0"), "-", 1).await?;
            let cursor = match holder.first() {
                Some((id, fields)) => {
                    take(&mut read, id, fields);
                    format!("({id}")
                }
                None => format!("{lo}-0"),
            };
            ("XRANGE", cursor, format!("{hi}-0"))
        }
        Dir::Down => ("XREVRANGE", format!("{hi}-0"), "-".to_string()),
    };
    let mut entries = 0;
    loop {
        if read.counted >= want {
            return Ok(read);
        }
        // As many entries as `want` needs at the events per entry seen so far.
        let count = match read.counted.checked_div(entries) {
            None => (want - read.counted).clamp(1, FIRST_PAGE),
            Some(per_entry) => (want - read.counted)
                .div_ceil(per_entry.max(1))
                .clamp(1, PAGE),
        };
        let page = raw(con, command, key, &cursor, &end, count).await?;
        entries += page.len();
        for (id, fields) in &page {
            take(&mut read, id, fields);
        }
        match page.last() {
            Some((id, _)) if page.len() == count => cursor = format!("({id}"),
            _ => {
                read.exhausted = true;
                return Ok(read);
            }
        }
    }
}

/// The raw entries of an `XRANGE` or `XREVRANGE`, in its order.
async fn raw(
    con: &mut MultiplexedConnection,
    command: &str,
    key: &str,
    start: &str,
    end: &str,
    count: usize,
) -> redis::RedisResult<Vec<super::tail::RawEntry>> {
    let value: redis::Value = redis::cmd(command)
        .arg(key)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    Ok(raw_entries(&value))
}
