//! Cluster mode: several `chat-server` nodes serving one room through one Redis.
//!
//! Redis holds what must be one for the whole room: the room log (a stream, written by
//! Lua scripts that give each event the next seq), who is in the room on which node, and
//! who holds which name. Each node:
//! - submits its users' room events to Redis through one ordered pipeline
//!   ([`driver`]), so one connection's lines keep their order;
//! - tails the stream ([`tail`]) and hands every entry, in seq order, to its local
//!   [`Hub`](crate::hub::Hub), which fans it out to its own connections through their
//!   outboxes, exactly as in single-node mode: every user on every node receives one order;
//! - keeps a heartbeat that expires after `--node-timeout`; a sweeper on any node
//!   announces the users of a node whose heartbeat expired as leaving;
//! - answers history from the stream ([`history`]).
//!
//! No node ever talks to another: everything goes through Redis.

pub mod driver;
pub mod history;
pub mod recent;
pub mod resp;
pub mod scripts;
pub mod tail;

use crate::hub::MemberId;
use chat_protocol::LeaveReason;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// This node's id: unique among the cluster's live nodes. A node restarted with the
    /// same id first announces the users of its former life as lost.
    pub node_id: String,
    /// A node whose heartbeat is older than this is dead: its users are announced as
    /// leaving.
    pub node_timeout: Duration,
    /// Key prefix in Redis, so several rooms can share one Redis.
    pub prefix: String,
    /// Recent room events kept in memory to answer history without Redis
    /// (`--history-cache`; `0`: every history question goes to Redis).
    pub history_cache: usize,
}

impl ClusterConfig {
    /// The Redis URL as logs and errors show it: a password in it is replaced by `***`.
    pub fn shown_url(&self) -> String {
        redact_password(&self.url)
    }

    pub fn new(url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            node_id: default_node_id(),
            node_timeout: DEFAULT_NODE_TIMEOUT,
            prefix: "chat:".into(),
            history_cache: recent::DEFAULT_CAPACITY,
        }
    }
}

/// `--node-timeout`'s default.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// `HOST-PID-RANDOM`: unique among processes on one host (the pid), across hosts (the host
/// name) and across restarts that reuse a pid (the random part, from the clock and the
/// address of a fresh allocation).
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let salt = Box::new(0u8);
    let mixed =
        (nanos ^ (&*salt as *const u8 as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Node ids go into key names and stream fields: keep them to a safe alphabet.
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}-{}-{:06x}", std::process::id(), mixed >> 40)
}

/// One room event a node asks Redis to record, for one of its members.
#[derive(Debug, Clone)]
pub enum Op {
    Join {
        conn: MemberId,
        addr: Arc<str>,
    },
    Chat {
        conn: MemberId,
        text: String,
    },
    Rename {
        conn: MemberId,
        name: String,
        keys: Vec<String>,
    },
    Leave {
        conn: MemberId,
        reason: LeaveReason,
    },
    Dm {
        conn: MemberId,
        to_node: Arc<str>,
        to_conn: u64,
        to_name: String,
        text: String,
    },
}

impl Op {
    /// Joins and leaves are never refused for an outage: they wait for Redis to come back.
    /// Everything else is a user's line, refused with an error while Redis is down.
    pub fn is_membership(&self) -> bool {
        matches!(self, Op::Join { .. } | Op::Leave { .. })
    }
}

/// An op with its submission id (per node, increasing), by which the node recognises its
/// own entries in the stream.
#[derive(Debug, Clone)]
pub struct Submission {
    pub sub: u64,
    pub op: Op,
}

/// A room event read back from the stream.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    pub ts_ms: i64,
    pub kind: Kind,
    pub node: Arc<str>,
    pub conn: u64,
    pub addr: String,
    /// The name (for a rename: the old one).
    pub name: String,
    /// Chat: the text; rename: the new name; leave: the reason.
    pub x: String,
    pub sub: u64,
}

impl LogEntry {
    /// An entry written as one field (see `scripts.rs`): `KIND\nTS\nNODE\nCONN\nADDR\n
    /// NAME\nSUB\nTEXT`, the text last and free to hold anything. `None` if it is not
    /// that, or of a kind this version does not know.
    pub fn unpack(seq: u64, value: &[u8], node: impl FnOnce(&str) -> Arc<str>) -> Option<LogEntry> {
        let mut parts = value.splitn(8, |b| *b == b'\n');
        let mut next = || std::str::from_utf8(parts.next()?).ok();
        let kind = Kind::from_tag(next()?)?;
        let ts_ms = next()?.parse().ok()?;
        let node = node(next()?);
        let conn = next()?.parse().ok()?;
        let addr = next()?.to_string();
        let name = next()?.to_string();
        let sub = next()?.parse().ok()?;
        let x = next()?.to_string();
        Some(LogEntry {
            seq,
            ts_ms,
            kind,
            node,
            conn,
            addr,
            name,
            x,
            sub,
        })
    }
}

/// Reads one stream entry's events into `out`, whatever its shape (see `scripts.rs`): a
/// run of events (field `b`), one event (field `e`), or one event written by an earlier
/// version (one field per part, looked up by `field`). `first` is the seq of the entry's
/// id. Returns the seq of its last event, or `None`, with nothing added, if it is not an
/// entry this version can read: all of it or nothing, never part of a run.
pub fn read_entry<'a>(
    first: u64,
    field: impl Fn(&str) -> Option<&'a [u8]>,
    mut node: impl FnMut(&str) -> Arc<str>,
    out: &mut Vec<LogEntry>,
) -> Option<u64> {
    if let Some(run) = field("b") {
        return LogEntry::unpack_run(first, run, node, out);
    }
    if let Some(value) = field("e") {
        let entry = LogEntry::unpack(first, value, node)?;
        out.push(entry);
        return Some(first);
    }
    // Written by an earlier version: one field per part.
    let str = |name| std::str::from_utf8(field(name)?).ok();
    let string = |name| str(name).unwrap_or_default().to_string();
    out.push(LogEntry {
        seq: first,
        kind: Kind::from_tag(str("t")?)?,
        ts_ms: str("ts")?.parse().ok()?,
        node: node(str("n")?),
        conn: str("c")?.parse().ok()?,
        addr: string("a"),
        name: string("m"),
        x: string("x"),
        sub: str("s").and_then(|s| s.parse().ok()).unwrap_or(0),
    });
    Some(first)
}

/// The text up to the next `\n`, and what follows it.
fn line(rest: &[u8]) -> Option<(&str, &[u8])> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    Some((std::str::from_utf8(&rest[..end]).ok()?, &rest[end + 1..]))
}

impl LogEntry {
    /// A run of chat lines written as one entry (field `b`, see `scripts.rs`):
    /// `TS\nNODE\nN\n`, `N` senders `CONN\nADDR\nNAME\n`, then per line
    /// `I\nSUB\nLEN\nTEXT`, their seqs `first`, `first + 1`, ... Appends them to `out` and
    /// returns the last seq, or `None` with `out` as it was if any part of the run is not
    /// that.
    pub fn unpack_run(
        first: u64,
        value: &[u8],
        node: impl FnOnce(&str) -> Arc<str>,
        out: &mut Vec<LogEntry>,
    ) -> Option<u64> {
        let start = out.len();
        let last = Self::unpack_run_into(first, value, node, out);
        if last.is_none() {
            out.truncate(start);
        }
        last
    }

    fn unpack_run_into(
        first: u64,
        value: &[u8],
        node: impl FnOnce(&str) -> Arc<str>,
        out: &mut Vec<LogEntry>,
    ) -> Option<u64> {
        let (ts, rest) = line(value)?;
        let ts_ms = ts.parse().ok()?;
        let (name, rest) = line(rest)?;
        let node = node(name);
        let (count, mut rest) = line(rest)?;
        let count: usize = count.parse().ok()?;
        // Bounded: the count is the entry's word, not yet checked against its bytes.
        let mut senders = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let (conn, r) = line(rest)?;
            let (addr, r) = line(r)?;
            let (name, r) = line(r)?;
            rest = r;
            // A sender whose lines were all refused is listed empty.
            senders.push((conn.parse::<u64>().ok(), addr, name));
        }
        let mut seq = first;
        let mut last = None;
        while !rest.is_empty() {
            let (i, r) = line(rest)?;
            let (sub, r) = line(r)?;
            let (len, r) = line(r)?;
            let len: usize = len.parse().ok()?;
            let text = std::str::from_utf8(r.get(..len)?).ok()?;
            rest = &r[len..];
            let i: usize = i.parse().ok()?;
            let &(conn, addr, name) = senders.get(i.checked_sub(1)?)?;
            out.push(LogEntry {
                seq,
                ts_ms,
                kind: Kind::Chat,
                node: node.clone(),
                conn: conn?,
                addr: addr.to_string(),
                name: name.to_string(),
                x: text.to_string(),
                sub: sub.parse().ok()?,
            });
            last = Some(seq);
            seq = seq.checked_add(1)?;
        }
        last
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Join,
    Chat,
    Rename,
    Leave,
}

impl Kind {
    /// The kind as stored: `j`, `c`, `r` or `l`.
    pub fn from_tag(tag: &str) -> Option<Kind> {
        match tag {
            "j" => Some(Kind::Join),
            "c" => Some(Kind::Chat),
            "r" => Some(Kind::Rename),
            "l" => Some(Kind::Leave),
            _ => None,
        }
    }
}

/// A direct message read back from this node's DM stream.
#[derive(Debug, Clone)]
pub struct DmEntry {
    pub to_conn: u64,
    pub from_addr: String,
    pub from_name: String,
    pub to_addr: String,
    pub to_name: String,
    pub text: String,
    /// Deliver once this seq has been delivered.
    pub after: u64,
}

/// A member as a snapshot of Redis lists it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Registered {
    #[serde(skip)]
    pub node: Arc<str>,
    #[serde(skip)]
    pub conn: u64,
    #[serde(rename = "a")]
    pub addr: String,
    #[serde(rename = "m")]
    pub name: String,
    #[serde(rename = "j")]
    pub join_seq: u64,
}

/// What the hub and the driver share.
pub struct Link {
    pub node: Arc<str>,
    pub config: ClusterConfig,
    /// The log's approximate maximum length (`--history-max-events`; `0`: unbounded).
    pub max_events: u64,
    /// Events older than this are trimmed from the log (`--history-retention`; `0`: none).
    pub retention: Duration,
    /// How often the sweeper trims by age (the single node's retention period, 10 s).
    pub trim_every: Duration,
    /// The recent end of the log, delivered by this node: history without Redis.
    pub recent: recent::Recent,
    /// History questions that go to Redis at once; the others wait their turn.
    pub history_gate: tokio::sync::Semaphore,
    ops: mpsc::UnboundedSender<Submission>,
    /// False while Redis is unreachable: users' lines are refused at once.
    available: AtomicBool,
    next_sub: AtomicU64,
    /// The newest seq the hub has delivered; the driver waits on it after reconnecting.
    pub applied: watch::Sender<u64>,
    /// The tail lost its connection: the driver checks Redis at once.
    pub trouble: Notify,
    /// For history queries, replaced on each reconnection.
    pub query: std::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.node)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// `log`: the log's bounds (`--history-max-events`, `--history-retention`); its file
    /// settings do not apply.
    pub fn new(
        config: ClusterConfig,
        log: &crate::room_log::HistoryConfig,
    ) -> (Arc<Link>, mpsc::UnboundedReceiver<Submission>) {
        let (ops, receiver) = mpsc::unbounded_channel();
        let (max_events, retention) = (log.max_events, log.retention);
        let link = Arc::new(Link {
            node: config.node_id.as_str().into(),
            recent: recent::Recent::new(config.history_cache, max_events, retention),
            history_gate: tokio::sync::Semaphore::new(history::CONCURRENCY),
            config,
            max_events,
            retention,
            trim_every: log.sweep_every,
            ops,
            available: AtomicBool::new(true),
            next_sub: AtomicU64::new(1),
            applied: watch::Sender::new(0),
            trouble: Notify::new(),
            query: std::sync::Mutex::new(None),
        });
        (link, receiver)
    }

    /// Queues `op` for Redis; returns its submission id. Called under the hub's lock, so
    /// submissions are in the order the hub decided them.
    pub fn submit(&self, op: Op) -> u64 {
        let sub = self.next_sub.fetch_add(1, Ordering::Relaxed);
        // Fails only once the driver is gone, at the very end of shutdown.
        let _ = self.ops.send(Submission { sub, op });
        sub
    }

    pub fn available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::Release);
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.config.prefix)
    }
}

/// Connects with the given response timeout (the crate's default, 500 ms, is too short
/// for a blocking read, and too eager to call a busy Redis down).
pub async fn connect(
    client: &redis::Client,
    response_timeout: Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Reads an integer out of a script's reply element.
pub fn int(value: Option<&redis::Value>) -> Option<i64> {
    match value? {
        redis::Value::Int(n) => Some(*n),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// Reads a string out of a reply element.
pub fn text(value: Option<&redis::Value>) -> Option<String> {
    match value? {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        redis::Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// The elements of an array reply (RESP2 arrays, RESP3 sets and maps flattened).
pub fn items(value: &redis::Value) -> Vec<&redis::Value> {
    match value {
        redis::Value::Array(v) | redis::Value::Set(v) => v.iter().collect(),
        redis::Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// A node's running part of the cluster: the driver and the tail.
pub struct Running {
    stop_driver: tokio_util::sync::CancellationToken,
    stop_tail: tokio_util::sync::CancellationToken,
    driver: tokio::task::JoinHandle<()>,
    tail: tokio::task::JoinHandle<()>,
}

/// Joins the cluster: registers this node, takes the room's snapshot into `hub`, and
/// starts the driver and the tail. Fails if Redis cannot be reached.
pub async fn start(
    hub: Arc<crate::hub::Hub>,
    config: ClusterConfig,
    history: &crate::room_log::HistoryConfig,
) -> anyhow::Result<Running> {
    let (link, ops) = Link::new(config, history);
    let (driver, snapshot, client) = driver::start(link.clone(), hub.clone(), ops).await?;
    history::warm(&link, snapshot.seq).await;
    hub.start_cluster(link.clone(), snapshot);
    let stop_driver = tokio_util::sync::CancellationToken::new();
    let stop_tail = tokio_util::sync::CancellationToken::new();
    let tail = tokio::spawn(tail::run(link, hub, client, stop_tail.clone()));
    let driver = tokio::spawn(driver.run(stop_driver.clone(), Duration::from_secs(1)));
    Ok(Running {
        stop_driver,
        stop_tail,
        driver,
        tail,
    })
}

impl Running {
    /// Sends what is still queued (the leaves of a shutdown), unregisters, and stops.
    pub async fn stop(self) {
        self.stop_driver.cancel();
        let _ = self.driver.await;
        self.stop_tail.cancel();
        let _ = self.tail.await;
    }
}

/// `redis://user:secret@host:6379/0` as `redis://user:***@host:6379/0`; any other URL as it
/// is.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod url_tests {
    use super::redact_password;

    #[test]
    fn passwords_in_redis_urls_are_not_shown() {
        assert_eq!(
            redact_password("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://:***@10.0.0.5:6379/2"
        );
        assert_eq!(
            redact_password("rediss://chat:p@ss:w0rd@redis.example:6380"),
            "rediss://chat:***@redis.example:6380"
        );
        assert_eq!(
            redact_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_password("redis://chat@host:6379"),
            "redis://chat@host:6379"
        );
        assert_eq!(redact_password("not a url"), "not a url");
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    fn node(name: &str) -> Arc<str> {
        name.into()
    }

    fn run(records: &str) -> String {
        format!("1700000000123\nn2\n3\n4\n10.0.0.1:5\nalice\n\n\n\n9\n10.0.0.2:6\nbob\n{records}")
    }

    #[test]
    fn a_run_is_its_events_with_consecutive_seqs() {
        // Two lines by alice, one by bob; the second sender (refused) is listed empty. A
        // text is taken by its length, separators and all.
        let value = run("1\n21\n5\nhello3\n22\n10\nhi\n1\n2\n3\n01\n23\n0\n");
        let mut out = vec![];
        let last = LogEntry::unpack_run(40, value.as_bytes(), node, &mut out);
        assert_eq!(last, Some(42));
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.seq, e.conn, e.name.as_str(), e.x.as_str(), e.sub, e.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (40, 4, "alice", "hello", 21, Kind::Chat),
                (41, 9, "bob", "hi\n1\n2\n3\n0", 22, Kind::Chat),
                (42, 4, "alice", "", 23, Kind::Chat),
            ]
        );
        assert!(
            out.iter()
                .all(|e| e.ts_ms == 1700000000123 && &*e.node == "n2")
        );
        assert_eq!(out[1].addr, "10.0.0.2:6");
    }

    #[test]
    fn a_malformed_run_is_refused_whole() {
        let good = "1\n21\n5\nhello";
        for bad in [
            // A text longer than what is left.
            format!("{good}1\n22\n99\nshort"),
            // No such sender, place 0, the refused (empty) sender, not a number.
            format!("{good}4\n22\n1\nx"),
            format!("{good}0\n22\n1\nx"),
            format!("{good}2\n22\n1\nx"),
            format!("{good}x\n22\n1\nx"),
            // A record cut short.
            format!("{good}1\n22\n"),
            // Nothing but the senders.
            String::new(),
        ] {
            let mut out = vec![];
            let value = run(&bad);
            assert_eq!(
                LogEntry::unpack_run(1, value.as_bytes(), node, &mut out),
                None,
                "{bad:?}"
            );
            assert!(out.is_empty(), "{bad:?}: nothing of a bad run is kept");
        }
        // A bad header, a text that is not UTF-8, more senders than there are.
        for value in [
            b"soon\nn2\n1\n4\na\nm\n1\n1\n1\nx".to_vec(),
            b"1\nn2\n1\n4\na\nm\n1\n1\n1\n\xff".to_vec(),
            b"1\nn2\n5\n4\na\nm\n".to_vec(),
            b"1\nn2\n18446744073709551615\n".to_vec(),
        ] {
            let mut out = vec![];
            assert_eq!(LogEntry::unpack_run(1, &value, node, &mut out), None);
            assert!(out.is_empty());
        }
        // Seqs never wrap.
        let mut out = vec![];
        let value = run("1\n21\n1\na1\n22\n1\nb");
        assert_eq!(
            LogEntry::unpack_run(u64::MAX, value.as_bytes(), node, &mut out),
            None
        );
        assert!(out.is_empty());
    }
}
