//! The tail's own connection to Redis: `XREAD` over plain RESP2, its reply read straight
//! into [`LogEntry`]s and [`DmEntry`]s.
//!
//! Why not the `redis` crate here: the tail reads every room event once per node, and the
//! crate turns each reply into a tree of [`redis::Value`]s (one allocation per field,
//! parsed through `combine`), which the tail then copied into strings again. Profiled at
//! fanout W=32 that was about half of a node's CPU. This connection sends one command
//! kind and reads one reply shape, so it needs little: find where a reply ends (resumably,
//! as bytes arrive), then walk it once, copying only the fields an entry keeps. Everything
//! else (scripts, history, heartbeats) stays on the `redis` crate.
//!
//! Nothing read from Redis is trusted to be well formed: a malformed reply is an error
//! (the tail reconnects), a malformed entry is skipped, and nothing here panics on it.

use super::{DmEntry, LogEntry, read_entry};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Replies larger than this are refused (the connection is dropped): a bound on what a
/// broken or hostile peer can make the tail buffer. `COUNT 1024` entries of at most a few
/// KiB each stay far below it.
const MAX_REPLY: usize = 256 * 1024 * 1024;

/// What can go wrong on this connection; the tail reconnects on any of them.
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// Redis answered with an error, or with something that is not RESP2.
    Protocol(String),
    Timeout,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(e) => write!(f, "unexpected reply: {e}"),
            Error::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, speaking RESP2 (Redis's default: no `HELLO 3`).
pub struct Connection {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed; a reply is parsed where it lies.
    buf: Vec<u8>,
    /// How long one reply may take.
    timeout: Duration,
}

impl Connection {
    /// Connects to the address of `info` (TCP or a Unix socket), then authenticates and
    /// selects the database as its URL says.
    pub async fn connect(
        info: &redis::ConnectionInfo,
        timeout: Duration,
    ) -> Result<Connection, Error> {
        let io: Box<dyn Io> = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                let stream = within(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await??;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            #[cfg(unix)]
            redis::ConnectionAddr::Unix(path) => Box::new(
                within(
                    Duration::from_secs(2),
                    tokio::net::UnixStream::connect(path),
                )
                .await??,
            ),
            other => {
                return Err(Error::Protocol(format!(
                    "the tail cannot connect to {other}: only TCP and Unix sockets"
                )));
            }
        };
        let mut connection = Connection {
            io,
            buf: Vec::with_capacity(64 * 1024),
            timeout,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = vec!["AUTH".as_bytes()];
            if let Some(user) = settings.username() {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            connection.simple(&auth).await?;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            connection.simple(&[b"SELECT", db.as_bytes()]).await?;
        }
        Ok(connection)
    }

    /// Sends a command whose reply is a simple `+OK`-like line; fails on an error reply.
    async fn simple(&mut self, args: &[&[u8]]) -> Result<(), Error> {
        let reply = self.request(args).await?;
        self.buf.drain(..reply);
        Ok(())
    }

    /// Sends `args` as one command and waits for its whole reply: returns the reply's
    /// length at the start of `buf`. An error reply is an error.
    async fn request(&mut self, args: &[&[u8]]) -> Result<usize, Error> {
        let mut command = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        command.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            command.extend_from_slice(arg);
            command.extend_from_slice(b"\r\n");
        }
        let (io, buf, timeout) = (&mut self.io, &mut self.buf, self.timeout);
        within(timeout, async {
            io.write_all(&command).await?;
            let mut frame = Frame::default();
            loop {
                if let Some(len) = frame.scan(buf)? {
                    if buf.first() == Some(&b'-') {
                        let text = buf.get(1..len.saturating_sub(2)).unwrap_or_default();
                        let line = String::from_utf8_lossy(text);
                        return Err(Error::Protocol(line.into_owned()));
                    }
                    return Ok(len);
                }
                if buf.len() > MAX_REPLY {
                    return Err(Error::Protocol("reply too large".into()));
                }
                buf.reserve(64 * 1024);
                if io.read_buf(buf).await? == 0 {
                    return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        })
        .await?
    }

    /// `XREAD COUNT count BLOCK block STREAMS log dms log_from dm_from`.
    pub async fn xread(
        &mut self,
        args: &XreadArgs<'_>,
        nodes: &mut NodeNames,
    ) -> Result<Read, Error> {
        let count = args.count.to_string();
        let block = args.block.as_millis().to_string();
        let len = self
            .request(&[
                b"XREAD",
                b"COUNT",
                count.as_bytes(),
                b"BLOCK",
                block.as_bytes(),
                b"STREAMS",
                args.log_key.as_bytes(),
                args.dm_key.as_bytes(),
                args.log_from.as_bytes(),
                args.dm_from.as_bytes(),
            ])
            .await?;
        let parsed = parse_xread(&self.buf[..len], args.log_key.as_bytes(), nodes);
        self.buf.drain(..len);
        parsed.ok_or_else(|| Error::Protocol("malformed XREAD reply".into()))
    }
}

/// What one `XREAD` brought.
#[derive(Debug, Default)]
pub struct Read {
    /// The new log entries; those this version cannot read are skipped.
    pub log: Vec<LogEntry>,
    /// The seq of the last log entry in the reply, read or skipped: reading goes on after
    /// it, so an unreadable entry is not read again and again.
    pub log_last: Option<u64>,
    pub dms: Vec<DmEntry>,
    /// The id of the last direct message in the reply.
    pub dm_last: Option<String>,
}

/// The arguments of one `XREAD`.
pub struct XreadArgs<'a> {
    pub count: usize,
    pub block: Duration,
    pub log_key: &'a str,
    pub dm_key: &'a str,
    pub log_from: &'a str,
    pub dm_from: &'a str,
}

async fn within<T>(
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| Error::Timeout)
}

/// Finds where one RESP2 reply ends, resumably: bytes may arrive a few at a time, and
/// each call goes on from where the last stopped instead of scanning the reply again.
#[derive(Debug, Default)]
struct Frame {
    /// Where the next header starts.
    pos: usize,
    /// For each array still open, how many of its elements are still to come.
    open: Vec<i64>,
}

impl Frame {
    /// The reply's length once `buf` holds all of it; `None` while more is needed.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        loop {
            let rest = buf.get(self.pos..).unwrap_or_default();
            let Some(eol) = line_end(rest) else {
                return Ok(None);
            };
            let (&kind, header) = rest[..eol]
                .split_first()
                .ok_or_else(|| Error::Protocol("empty line".into()))?;
            let number = || number(header).ok_or_else(|| Error::Protocol("bad length".into()));
            let mut next = self.pos + eol + 2;
            let complete = match kind {
                b'+' | b'-' | b':' => true,
                b'$' => {
                    let n = number()?;
                    if n >= 0 {
                        let n =
                            usize::try_from(n).map_err(|_| Error::Protocol("bad length".into()))?;
                        if n > MAX_REPLY {
                            return Err(Error::Protocol("reply too large".into()));
                        }
                        next += n + 2;
                        if buf.len() < next {
                            return Ok(None);
                        }
                    }
                    true
                }
                b'*' => {
                    let n = number()?;
                    if n > 0 {
                        self.open.push(n);
                        false
                    } else {
                        true
                    }
                }
                other => return Err(Error::Protocol(format!("unknown reply type {other}"))),
            };
            self.pos = next;
            if complete {
                // An element ended: close every array it completes.
                loop {
                    match self.open.last_mut() {
                        None => return Ok(Some(self.pos)),
                        Some(left) => {
                            *left -= 1;
                            if *left > 0 {
                                break;
                            }
                            self.open.pop();
                        }
                    }
                }
            }
        }
    }
}

/// Where the line at the start of `rest` ends (where its `\r\n` is), if it is all there.
/// A RESP header never holds a `\r` of its own.
fn line_end(rest: &[u8]) -> Option<usize> {
    let cr = rest.iter().position(|&b| b == b'\r')?;
    (rest.get(cr + 1) == Some(&b'\n')).then_some(cr)
}

/// A header's decimal number (lengths and counts: at most 18 digits, maybe negative).
fn number(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if negative { -n } else { n })
}

/// Reads a complete reply in place.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn header(&mut self) -> Option<(u8, i64)> {
        let rest = self.buf.get(self.pos..)?;
        let eol = line_end(rest)?;
        let (&kind, digits) = rest[..eol].split_first()?;
        self.pos += eol + 2;
        let n = if matches!(kind, b'*' | b'$' | b':') {
            number(digits)?
        } else {
            0
        };
        Some((kind, n))
    }

    /// An array's length (`-1`: the null array).
    fn array(&mut self) -> Option<i64> {
        match self.header()? {
            (b'*', n) => Some(n),
            _ => None,
        }
    }

    /// A bulk string's bytes.
    fn bulk(&mut self) -> Option<&'a [u8]> {
        let (kind, n) = self.header()?;
        if kind != b'$' {
            return None;
        }
        let n = usize::try_from(n).ok()?;
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n + 2;
        Some(bytes)
    }
}

/// Node ids as shared strings, so entries from the same few nodes do not allocate one each.
#[derive(Debug, Default)]
pub struct NodeNames(Vec<Arc<str>>);

impl NodeNames {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.iter().find(|n| &***n == name) {
            return known.clone();
        }
        let name: Arc<str> = name.into();
        // A bounded list: nodes come and go over a long life.
        if self.0.len() >= 64 {
            self.0.remove(0);
        }
        self.0.push(name.clone());
        name
    }
}

/// `XREAD`'s reply: `*-1` (nothing new), or per stream `[key, [[id, [field, value, ...]], ...]]`.
fn parse_xread(buf: &[u8], log_key: &[u8], nodes: &mut NodeNames) -> Option<Read> {
    let mut cursor = Cursor { buf, pos: 0 };
    let mut read = Read::default();
    let streams = cursor.array()?;
    for _ in 0..streams.max(0) {
        if cursor.array()? != 2 {
            return None;
        }
        let is_log = cursor.bulk()? == log_key;
        let entries = cursor.array()?;
        if is_log {
            // Bounded: the count is Redis's word, not yet checked against the bytes.
            read.log
                .reserve(usize::try_from(entries).unwrap_or(0).min(1024));
        }
        for _ in 0..entries.max(0) {
            if cursor.array()? != 2 {
                return None;
            }
            let id = cursor.bulk()?;
            let fields = cursor.array()?;
            if fields < 0 || fields % 2 != 0 {
                return None;
            }
            let mut raw = RawFields::default();
            for _ in 0..fields / 2 {
                let name = cursor.bulk()?;
                let value = cursor.bulk()?;
                raw.set(is_log, name, value);
            }
            if is_log {
                // An entry it cannot read still moves the cursor past its id; one it
                // reads, past its last event.
                let first = id_seq(id);
                match first.and_then(|first| raw.log_entries(first, nodes, &mut read.log)) {
                    Some(last) => read.log_last = Some(last),
                    None => {
                        if first.is_some() {
                            read.log_last = first;
                        }
                        tracing::warn!(
                            id = %String::from_utf8_lossy(id),
                            "unreadable room log entry; skipped"
                        );
                    }
                }
            } else {
                if let Some(dm) = raw.dm_entry() {
                    read.dms.push(dm);
                }
                read.dm_last = Some(String::from_utf8_lossy(id).into_owned());
            }
        }
    }
    // Anything after the streams would mean the reply was not what was asked for.
    (cursor.pos == buf.len()).then_some(read)
}

/// The seq of a log entry's id `SEQ-0`.
fn id_seq(id: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(id).ok()?;
    id.split_once('-').map_or(id, |(seq, _)| seq).parse().ok()
}

/// An entry's fields as borrowed from the reply (see `scripts.rs` for their names).
#[derive(Default)]
struct RawFields<'a> {
    f: [Option<&'a [u8]>; 10],
}

/// The fields an entry keeps, by position in [`RawFields`].
/// `b` is a run of events and `e` one event, as written now; the others are the fields of
/// entries written by earlier versions.
const LOG_FIELDS: [&str; 10] = ["b", "e", "t", "ts", "n", "c", "a", "m", "x", "s"];
const DM_FIELDS: [&str; 7] = ["tc", "fa", "fm", "ta", "tm", "x", "after"];

impl<'a> RawFields<'a> {
    fn set(&mut self, log: bool, name: &[u8], value: &'a [u8]) {
        let names: &[&str] = if log { &LOG_FIELDS } else { &DM_FIELDS };
        if let Some(i) = names.iter().position(|n| n.as_bytes() == name) {
            self.f[i] = Some(value);
        }
    }

    fn str(&self, i: usize) -> Option<&'a str> {
        std::str::from_utf8(self.f[i]?).ok()
    }

    fn string(&self, i: usize) -> String {
        self.f[i].map_or_else(String::new, |v| String::from_utf8_lossy(v).into_owned())
    }

    /// The entry's events, appended to `out` (see [`read_entry`]).
    fn log_entries(
        &self,
        first: u64,
        nodes: &mut NodeNames,
        out: &mut Vec<LogEntry>,
    ) -> Option<u64> {
        let field = |name: &str| {
            let i = LOG_FIELDS.iter().position(|n| *n == name)?;
            self.f[i]
        };
        read_entry(first, field, |node| nodes.get(node), out)
    }

    fn dm_entry(&self) -> Option<DmEntry> {
        Some(DmEntry {
            to_conn: self.str(0)?.parse().ok()?,
            from_addr: self.string(1),
            from_name: self.string(2),
            to_addr: self.string(3),
            to_name: self.string(4),
            text: self.string(5),
            after: self.str(6)?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Kind;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> String {
        let mut out = format!("*2\r\n{}*{}\r\n", bulk(id), fields.len() * 2);
        for (k, v) in fields {
            out += &bulk(k);
            out += &bulk(v);
        }
        out
    }

    fn reply() -> String {
        let chat = entry(
            "7-0",
            &[
                ("ts", "1700000000123"),
                ("t", "c"),
                ("n", "n1"),
                ("c", "4"),
                ("a", "127.0.0.1:5"),
                ("m", "alice"),
                ("x", "hello\r\nworld"),
                ("s", "12"),
            ],
        );
        let unknown = entry("8-0", &[("ts", "1"), ("t", "?"), ("n", "n1"), ("c", "4")]);
        // As written now: one field, the text last (and free to hold the separator).
        let packed = entry(
            "9-0",
            &[(
                "e",
                "r\n1700000000456\nn2\n5\n10.0.0.1:9\nbob\n13\nrob\nert",
            )],
        );
        let bad = entry("10-0", &[("e", "c\nnot a time\nn2\n5\na\nm\n1\nx")]);
        // A run of three lines (seqs 11..=13), then a run cut short, skipped whole.
        let run = entry(
            "11-0",
            &[(
                "b",
                "1700000000789\nn3\n1\n6\n10.0.0.3:1\ncarol\n1\n20\n1\na1\n21\n2\nbc1\n22\n0\n",
            )],
        );
        let cut = entry("14-0", &[("b", "1\nn3\n1\n6\na\nm\n1\n23\n9\nshort")]);
        let dm = entry(
            "1700-0",
            &[
                ("tc", "3"),
                ("fa", "a:1"),
                ("fm", "bob"),
                ("ta", "b:2"),
                ("tm", "carol"),
                ("x", "psst"),
                ("after", "7"),
            ],
        );
        format!(
            "*2\r\n*2\r\n{}*6\r\n{chat}{unknown}{packed}{bad}{run}{cut}*2\r\n{}*1\r\n{dm}",
            bulk("chat:log"),
            bulk("chat:dm:n1")
        )
    }

    #[test]
    fn an_xread_reply_becomes_entries_and_direct_messages() {
        let reply = reply();
        let Read {
            log,
            log_last,
            dms,
            dm_last: last,
        } = parse_xread(reply.as_bytes(), b"chat:log", &mut NodeNames::default()).expect("parsed");
        assert_eq!(
            log_last,
            Some(14),
            "the unreadable last entry still moves the cursor past it"
        );
        assert_eq!(
            log.len(),
            5,
            "the unknown kind and the unreadable entries are skipped"
        );
        let run: Vec<_> = log[2..]
            .iter()
            .map(|e| (e.seq, e.x.as_str(), e.sub, &*e.node, e.name.as_str()))
            .collect();
        assert_eq!(
            run,
            vec![
                (11, "a", 20, "n3", "carol"),
                (12, "bc", 21, "n3", "carol"),
                (13, "", 22, "n3", "carol")
            ]
        );
        let e = &log[0];
        assert_eq!(
            (e.seq, e.ts_ms, e.kind, e.conn, e.sub),
            (7, 1700000000123, Kind::Chat, 4, 12)
        );
        assert_eq!(
            (&*e.node, e.addr.as_str(), e.name.as_str()),
            ("n1", "127.0.0.1:5", "alice")
        );
        assert_eq!(
            e.x, "hello\r\nworld",
            "a bulk string is taken by its length"
        );
        assert_eq!(dms.len(), 1);
        assert_eq!(
            (dms[0].to_conn, dms[0].after, dms[0].text.as_str()),
            (3, 7, "psst")
        );
        assert_eq!(last.as_deref(), Some("1700-0"));
    }

    #[test]
    fn the_cursor_moves_past_a_whole_run() {
        let run = entry(
            "20-0",
            &[("b", "1\nn3\n1\n6\na\nm\n1\n20\n1\na1\n21\n1\nb")],
        );
        let reply = format!("*1\r\n*2\r\n{}*1\r\n{run}", bulk("chat:log"));
        let read =
            parse_xread(reply.as_bytes(), b"chat:log", &mut NodeNames::default()).expect("parsed");
        assert_eq!(read.log_last, Some(21), "past its last event, not its id");
        assert_eq!(read.log.len(), 2);
    }

    #[test]
    fn a_reply_is_found_complete_however_it_arrives() {
        let reply = reply();
        let bytes = reply.as_bytes();
        for step in [1, 2, 3, 7, 64] {
            let mut frame = Frame::default();
            let mut end = 0;
            let found = loop {
                end = (end + step).min(bytes.len());
                if let Some(len) = frame.scan(&bytes[..end]).expect("well formed") {
                    break len;
                }
                assert!(
                    end < bytes.len(),
                    "complete before the end with step {step}"
                );
            };
            assert_eq!(found, bytes.len(), "step {step}");
        }
        // With something after it, only the reply itself is counted.
        let mut frame = Frame::default();
        let doubled = format!("{reply}{reply}");
        assert_eq!(
            frame.scan(doubled.as_bytes()).expect("ok"),
            Some(bytes.len())
        );
    }

    #[test]
    fn nothing_new_and_errors_and_garbage() {
        let mut frame = Frame::default();
        assert_eq!(frame.scan(b"*-1\r\n").expect("ok"), Some(5));
        let read = parse_xread(b"*-1\r\n", b"chat:log", &mut NodeNames::default()).expect("parsed");
        assert!(
            read.log.is_empty()
                && read.dms.is_empty()
                && read.dm_last.is_none()
                && read.log_last.is_none()
        );
        assert_eq!(Frame::default().scan(b"-ERR no\r\n").expect("ok"), Some(9));
        assert!(Frame::default().scan(b"?\r\n").is_err());
        assert!(Frame::default().scan(b"$x\r\n").is_err());
        // Truncated or mis-shaped replies are refused, never a panic.
        let reply = reply();
        for cut in 0..reply.len() {
            let _ = parse_xread(
                &reply.as_bytes()[..cut],
                b"chat:log",
                &mut NodeNames::default(),
            );
        }
        assert!(parse_xread(b"*1\r\n*3\r\n", b"chat:log", &mut NodeNames::default()).is_none());
        assert!(parse_xread(b"$-1\r\n", b"chat:log", &mut NodeNames::default()).is_none());
    }
}
