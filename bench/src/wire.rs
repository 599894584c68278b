//! What goes over the socket: the benchmark's payload line, how each target wants it sent,
//! and how to find it again in whatever the target sends back.
//!
//! The payload is `b SENDER SEQ NANOS`: the sender's id, its sequence number and the send
//! time in nanoseconds since the run's base instant (one process, one clock). Receivers find
//! it as the last four space-separated tokens of a line, which works for all targets without
//! a full parse on the hot path:
//! - our server, plain: `[ADDR]NAME: b 3 17 123456`
//! - our server, JSON: `{"type":"chat","addr":..,"name":..,"text":"b 3 17 123456"}`
//! - the Go original, which may merge several sent lines into one broadcast, so only the
//!   first line of a merged group has the `[ADDR]NAME: ` prefix: `b 3 18 123999`
//! - redis: the RESP bulk string of a `message` push is a line of its own.

use std::fmt;

/// Sender id of the settle marker: a line every client must see before measuring starts.
pub const MARKER_SENDER: u32 = u32::MAX;

/// Redis channel every client subscribes to.
pub const REDIS_CHANNEL: &str = "c";

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// chat-server, plain (nc) mode.
    Chat,
    /// chat-server, JSON mode (selected with --target chat --json-mode).
    #[value(skip)]
    ChatJson,
    /// The original Go server (plain protocol, no line framing).
    Go,
    /// redis-server pub/sub (SUBSCRIBE / PUBLISH on one channel).
    Redis,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Chat => "chat",
            Target::ChatJson => "chat-json",
            Target::Go => "go",
            Target::Redis => "redis",
        })
    }
}

/// One benchmark message as a receiver found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub sender: u32,
    pub seq: u64,
    pub nanos: u64,
}

/// Appends what `target` needs to broadcast one payload.
pub fn encode(target: Target, out: &mut Vec<u8>, sender: u32, seq: u64, nanos: u64) {
    use std::io::Write as _;
    match target {
        Target::Chat | Target::Go => {
            let _ = writeln!(out, "b {sender} {seq} {nanos}");
        }
        Target::ChatJson => {
            // Same bytes as ClientCommand::Chat{..}.to_json() (tested below), without
            // serde on the sender's hot path: the text never needs escaping.
            let _ = writeln!(
                out,
                r#"{{"type":"chat","text":"b {sender} {seq} {nanos}"}}"#
            );
        }
        Target::Redis => {
            let mut text = [0u8; 64];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            let _ = write!(cursor, "b {sender} {seq} {nanos}");
            let len = cursor.position() as usize;
            let _ = write!(
                out,
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{}\r\n${len}\r\n",
                REDIS_CHANNEL.len(),
                REDIS_CHANNEL
            );
            out.extend_from_slice(&text[..len]);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Longest line [`encode`] writes for the plain targets (u32 sender, u64 seq and nanos).
pub const MAX_PLAIN_LINE: usize = "b  \n".len() + 10 + 20 + 20 + 1;

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(value)
}

/// Finds a payload at the end of a received line (without its `\n`), if there is one.
pub fn parse_payload(line: &[u8]) -> Option<Payload> {
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.ends_with(b"}") {
        // A JSON chat event: the text ends before its stamp (`","seq":N,"ts":"..."}`), or
        // before the closing `"}` from servers without one.
        const STAMP: &[u8] = b"\",\"seq\":";
        line = match line.windows(STAMP.len()).rposition(|w| w == STAMP) {
            Some(at) => &line[..at],
            None => line.strip_suffix(b"\"}").unwrap_or(line),
        };
    }
    let mut tokens = line.rsplitn(5, |&b| b == b' ');
    let nanos = parse_u64(tokens.next()?)?;
    let seq = parse_u64(tokens.next()?)?;
    let sender = u32::try_from(parse_u64(tokens.next()?)?).ok()?;
    let tag = tokens.next()?;
    (tag == b"b" || tag.ends_with(b"\"b")).then_some(Payload { sender, seq, nanos })
}

/// The `seq` of a JSON room event or `welcome` line: the number after its last `"seq":`.
/// Chat text cannot fake one: a `"` inside text is escaped, so `"seq":` never occurs in it.
pub fn json_seq(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"seq\":";
    let at = line.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits = &line[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    parse_u64(&digits[..end])
}

/// Splits a byte stream into lines, keeping a partial last line for the next read.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    pub fn new() -> Self {
        LineBuffer {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// Reads once from `reader`, appending; Ok(0) means end of stream.
    pub async fn fill<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt as _;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        reader.read_buf(&mut self.buf).await
    }

    /// The next complete line, without its `\n`.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        let end = rest.iter().position(|&b| b == b'\n')?;
        let line = &self.buf[self.start..self.start + end];
        self.start += end + 1;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(target: Target) -> Vec<u8> {
        let mut out = Vec::new();
        encode(target, &mut out, 3, 17, 123456);
        out
    }

    #[test]
    fn json_encoding_is_the_protocol_crates() {
        let line = chat_protocol::ClientCommand::Chat {
            text: "b 3 17 123456".into(),
        }
        .to_json()
            + "\n";
        assert_eq!(encoded(Target::ChatJson), line.as_bytes());
    }

    #[test]
    fn redis_encoding_is_resp() {
        assert_eq!(
            encoded(Target::Redis),
            b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$13\r\nb 3 17 123456\r\n"
        );
    }

    #[test]
    fn finds_payload_in_every_targets_echo() {
        let want = Some(Payload {
            sender: 3,
            seq: 17,
            nanos: 123456,
        });
        for line in [
            &b"[127.0.0.1:5000]127.0.0.1:5000: b 3 17 123456"[..],
            b"b 3 17 123456",
            b"b 3 17 123456\r",
            br#"{"type":"chat","addr":"127.0.0.1:5","name":"x y","text":"b 3 17 123456"}"#,
        ] {
            assert_eq!(
                parse_payload(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let json = chat_protocol::ServerEvent::Chat {
            addr: "127.0.0.1:5".into(),
            name: "n".into(),
            text: "b 3 17 123456".into(),
            stamp: Some(chat_protocol::Stamp {
                seq: 9,
                ts: "2026-12-02T02:41:07.123Z".into(),
            }),
        }
        .to_json();
        assert_eq!(parse_payload(json.trim_end().as_bytes()), want);
    }

    #[test]
    fn other_lines_are_not_payloads() {
        for line in [
            &b"[127.0.0.1:5000]127.0.0.1:5000: login"[..],
            b"user list:",
            b"$13",
            b"message",
            b"x 3 17 123456",
            b"[a]b: ab 3 17 1",
            b"b 3 17 12x",
            b"b 99999999999 1 1",
            b"",
        ] {
            assert_eq!(parse_payload(line), None);
        }
    }

    #[test]
    fn finds_the_seq_of_events_and_welcome() {
        let chat = br#"{"type":"chat","addr":"a","name":"n","text":"\"seq\":7","seq":1190,"ts":"2026-12-02T02:41:09.480Z"}"#;
        assert_eq!(json_seq(chat), Some(1190));
        let welcome = br#"{"type":"welcome","version":1,"addr":"a","name":"a","idle_timeout_ms":30000,"seq":1187}"#;
        assert_eq!(json_seq(welcome), Some(1187));
        assert_eq!(json_seq(br#"{"type":"pong"}"#), None);
        assert_eq!(json_seq(br#"{"type":"chat","text":"\"seq\":7"}"#), None);
    }

    #[test]
    fn plain_lines_fit_the_bound() {
        let mut out = Vec::new();
        encode(Target::Chat, &mut out, u32::MAX, u64::MAX, u64::MAX);
        assert!(out.len() <= MAX_PLAIN_LINE);
    }

    #[tokio::test]
    async fn line_buffer_keeps_partial_lines() {
        let mut lines = LineBuffer::new();
        let mut input: &[u8] = b"one\ntw";
        lines.fill(&mut input).await.unwrap();
        assert_eq!(lines.next_line(), Some(&b"one"[..]));
        assert_eq!(lines.next_line(), None);
        let mut input: &[u8] = b"o\n";
        lines.fill(&mut input).await.unwrap();
        assert_eq!(lines.next_line(), Some(&b"two"[..]));
        assert_eq!(lines.next_line(), None);
    }
}
