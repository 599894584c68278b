//! History in cluster mode, read from the room's stream: the same answers, byte for byte,
//! as a single node gives from its SQLite log, on whichever node the client asks.
//!
//! Stream entry ids are `SEQ-0`, so `after SEQ` is an `XRANGE` from `SEQ+1` and `before`
//! an `XREVRANGE`. Seqs in the stream are consecutive except where retention trimmed the
//! front or Redis lost data; either shows as `gap`.

use super::tail::{log_entry, raw_entries};
use crate::outbox::Rendered;
use crate::room_log::{Answer, Query};
use chat_protocol::ServerEvent;
use redis::aio::MultiplexedConnection;

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
    let mut rows: Vec<(u64, ServerEvent)> = if ascending {
        if from >= bound {
            Vec::new()
        } else {
            range(
                con,
                "XRANGE",
                log_key,
                &format!("{}-0", from + 1),
                &format!("{bound}-0"),
                fetch,
            )
            .await?
        }
    } else if from == 0 {
        Vec::new()
    } else {
        range(con, "XREVRANGE", log_key, &format!("{from}-0"), "-", fetch).await?
    };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
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
        let page = range(con, "XREVRANGE", log_key, &format!("{top}-0"), "-", 200).await?;
        let Some((oldest, _)) = page.last() else {
            break;
        };
        top = oldest.saturating_sub(1);
        let done = page.len() < 200;
        for (_, event) in page {
            if lines.len() == limit as usize {
                break;
            }
            let ts = event.stamp().map(|s| s.ts.clone()).unwrap_or_default();
            if let Some(text) = event.to_plain() {
                lines.push((0, format!("{} {text}", seconds(&ts))));
            }
        }
        if done {
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
fn seconds(ts: &str) -> String {
    match ts.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => ts.to_string(),
    }
}

async fn range(
    con: &mut MultiplexedConnection,
    command: &str,
    key: &str,
    start: &str,
    end: &str,
    count: usize,
) -> redis::RedisResult<Vec<(u64, ServerEvent)>> {
    let value: redis::Value = redis::cmd(command)
        .arg(key)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    Ok(raw_entries(&value)
        .iter()
        .filter_map(|(id, fields)| log_entry(id, fields))
        .map(|entry| (entry.seq, entry.event()))
        .collect())
}
