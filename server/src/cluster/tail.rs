//! The tail: reads the room log and this node's direct messages from Redis, in order, and
//! hands them to the hub.
//!
//! One dedicated connection does nothing but `XREAD BLOCK` on both streams at once, from
//! the last seq the hub delivered (and the last direct message read). After a lost
//! connection it reconnects and goes on from there: an entry is never delivered twice
//! (the hub skips seqs it has delivered) and none that Redis kept is skipped.

use super::{DmEntry, Kind, Link, LogEntry, connect, items, text};
use crate::hub::Hub;
use crate::room_log::format_ts;
use chat_protocol::{LeaveReason, ServerEvent, Stamp};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Entries read at most per round trip.
const BATCH: usize = 1024;
/// How long one `XREAD` blocks: also how soon the tail notices a stop.
const BLOCK: Duration = Duration::from_millis(1000);

/// Reads until `stop`.
pub async fn run(link: Arc<Link>, hub: Arc<Hub>, client: redis::Client, stop: CancellationToken) {
    let log_key = link.key("log");
    let dm_key = link.key(&format!("dm:{}", link.node));
    let mut dm_last = String::from("0-0");
    let mut connection = None;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let con = match &mut connection {
            Some(con) => con,
            None => {
                let attempt = tokio::select! {
                    _ = stop.cancelled() => return,
                    c = connect(&client, BLOCK + Duration::from_secs(3)) => c,
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
        let from = format!("{}-0", hub.applied());
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&log_key)
            .arg(&dm_key)
            .arg(&from)
            .arg(&dm_last);
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            reply = read.query_async::<redis::Value>(con) => reply,
        };
        match reply {
            Ok(value) => {
                let (log, dms) = parse_read(&value, &log_key, &mut dm_last);
                if !log.is_empty() || !dms.is_empty() {
                    hub.apply(log, dms);
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

/// Splits an `XREAD` reply into log entries and direct messages.
fn parse_read(
    value: &redis::Value,
    log_key: &str,
    dm_last: &mut String,
) -> (Vec<LogEntry>, Vec<DmEntry>) {
    let (mut log, mut dms) = (Vec::new(), Vec::new());
    for stream in streams(value) {
        let (key, entries) = stream;
        for (id, fields) in entries {
            if key == log_key {
                if let Some(entry) = log_entry(&id, &fields) {
                    log.push(entry);
                }
            } else {
                if let Some(dm) = dm_entry(&fields) {
                    dms.push(dm);
                }
                *dm_last = id;
            }
        }
    }
    (log, dms)
}

/// One stream entry: its id and its fields.
pub type RawEntry = (String, Vec<(String, String)>);

/// `XREAD`'s reply as (stream key, entries), for RESP2 and RESP3 alike.
fn streams(value: &redis::Value) -> Vec<(String, Vec<RawEntry>)> {
    let mut out = Vec::new();
    match value {
        redis::Value::Map(pairs) => {
            for (key, entries) in pairs {
                if let Some(key) = text(Some(key)) {
                    out.push((key, raw_entries(entries)));
                }
            }
        }
        other => {
            for stream in items(other) {
                let parts = items(stream);
                if let (Some(key), Some(entries)) = (text(parts.first().copied()), parts.get(1)) {
                    out.push((key, raw_entries(entries)));
                }
            }
        }
    }
    out
}

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

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A log entry, or `None` for one this version cannot read (it is skipped, logged).
pub fn log_entry(id: &str, fields: &[(String, String)]) -> Option<LogEntry> {
    let seq = id.split('-').next()?.parse().ok()?;
    let get = |name| field(fields, name).unwrap_or_default().to_string();
    let kind = match field(fields, "t")? {
        "j" => Kind::Join,
        "c" => Kind::Chat,
        "r" => Kind::Rename,
        "l" => Kind::Leave,
        other => {
            tracing::warn!(seq, kind = other, "unknown room log entry; skipped");
            return None;
        }
    };
    Some(LogEntry {
        seq,
        ts_ms: field(fields, "ts")?.parse().ok()?,
        kind,
        node: field(fields, "n")?.into(),
        conn: field(fields, "c")?.parse().ok()?,
        addr: get("a"),
        name: get("m"),
        x: get("x"),
        sub: field(fields, "s").and_then(|s| s.parse().ok()).unwrap_or(0),
    })
}

fn dm_entry(fields: &[(String, String)]) -> Option<DmEntry> {
    let get = |name| field(fields, name).unwrap_or_default().to_string();
    Some(DmEntry {
        to_conn: field(fields, "tc")?.parse().ok()?,
        from_addr: get("fa"),
        from_name: get("fm"),
        to_addr: get("ta"),
        to_name: get("tm"),
        text: get("x"),
        after: field(fields, "after")?.parse().ok()?,
    })
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
    /// The event as users receive it: the same bytes on every node, live and in history.
    pub fn event(&self) -> ServerEvent {
        let stamp = Some(Stamp {
            seq: self.seq,
            ts: format_ts(self.ts_ms),
        });
        let (addr, name) = (self.addr.clone(), self.name.clone());
        match self.kind {
            Kind::Join => ServerEvent::Join { addr, name, stamp },
            Kind::Chat => ServerEvent::Chat {
                addr,
                name,
                text: self.x.clone(),
                stamp,
            },
            Kind::Rename => ServerEvent::Rename {
                addr,
                old: name,
                new: self.x.clone(),
                stamp,
            },
            Kind::Leave => ServerEvent::Leave {
                addr,
                name,
                reason: parse_reason(&self.x),
                stamp,
            },
        }
    }
}
