//! The connection to the server: a task that talks to the app only through channels.
//!
//! It connects, switches the connection to JSON mode with [`HELLO_LINE`] (or, with
//! `--plain`, speaks the original server's text through [`PlainParser`]), turns each
//! server line into a [`NetEvent`], and writes each [`ClientCommand`] it is given. When the
//! connection breaks it hands back whatever it was given but did not write, and tries again
//! with exponential backoff and jitter (see [`jittered`]). Re-taking the chosen name after a reconnect is the app's job:
//! it sees the welcome and decides.

use chat_protocol::command::decode_line;
use chat_protocol::event::PlainLine;
use chat_protocol::{
    ClientCommand, Frame, HELLO_LINE, LineFramer, NoticeCode, PlainParser, ServerEvent, UserInfo,
    sanitize_text,
};
use chrono::NaiveTime;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{Sender, UnboundedReceiver};

/// Longest server line accepted; a `who` answer for thousands of users fits.
const MAX_SERVER_LINE: usize = 4 * 1024 * 1024;
/// Events the connection may have handed over and the app not yet applied: the capacity of
/// the bounded channel between them.
pub const EVENT_QUEUE: usize = 4096;

/// What the connection tells the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// Trying to connect (1 for the first try after a loss).
    Connecting { attempt: u32 },
    /// Ready to send: the server welcomed us (JSON), or the TCP connection is up (plain).
    Connected { plain: bool },
    /// A server event and the local time it arrived.
    Server(ServerEvent, NaiveTime),
    /// The connection failed or broke; the next try is in `retry_in`.
    Disconnected { reason: String, retry_in: Duration },
    /// One more user of the `who` answer being read (plain mode: the list comes a line at a
    /// time, after a `Users` event with an empty list that starts it).
    Listed(UserInfo),
    /// Commands that were handed over but never written; the app decides what to resend.
    Unsent(Vec<ClientCommand>),
    /// A command the plain server cannot receive as meant (chat text that reads as a command).
    Unsendable(ClientCommand),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub server: String,
    /// Speak the original server's plain text instead of JSON mode.
    pub plain: bool,
    /// First wait after a failure; doubles up to `max_backoff`. Each wait is then cut by up
    /// to half at random ([`jittered`]).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// In JSON mode, say after this long without a welcome that `--plain` may be needed.
    pub welcome_hint_after: Duration,
}

impl NetConfig {
    pub fn new(server: impl Into<String>, plain: bool) -> Self {
        NetConfig {
            server: server.into(),
            plain,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            welcome_hint_after: Duration::from_secs(3),
        }
    }
}

/// Why a session ended.
enum Ended {
    /// The app dropped its end: stop.
    AppGone,
    /// The connection failed or broke. `welcomed` says whether it had been working.
    Lost {
        reason: String,
        welcomed: bool,
        unsent: Vec<ClientCommand>,
    },
}

fn local_time() -> NaiveTime {
    chrono::Local::now().time()
}

/// Runs until the app drops its command sender or its event receiver.
///
/// `events` is bounded: when the app falls behind (drawing stalls) the task waits to hand
/// over the next event and stops reading the socket meanwhile, so the server's slow-consumer
/// policy deals with it instead of this process buffering without limit.
pub async fn run(
    config: NetConfig,
    mut commands: UnboundedReceiver<ClientCommand>,
    events: Sender<NetEvent>,
) {
    let mut attempt = 1;
    let mut backoff = config.initial_backoff;
    loop {
        if events.send(NetEvent::Connecting { attempt }).await.is_err() {
            return;
        }
        let (reason, mut unsent) = match session(&config, &mut commands, &events).await {
            Ended::AppGone => return,
            Ended::Lost {
                reason,
                welcomed,
                unsent,
            } => {
                if welcomed {
                    attempt = 1;
                    backoff = config.initial_backoff;
                }
                (reason, unsent)
            }
        };
        while let Ok(command) = commands.try_recv() {
            unsent.push(command);
        }
        if !unsent.is_empty() && events.send(NetEvent::Unsent(unsent)).await.is_err() {
            return;
        }
        let retry_in = jittered(backoff, random_unit());
        let lost = NetEvent::Disconnected { reason, retry_in };
        if events.send(lost).await.is_err() {
            return;
        }
        let wait = tokio::time::sleep(retry_in);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                command = commands.recv() => match command {
                    None => return,
                    // The app sends while it still thinks it is connected: give it back.
                    Some(command) => {
                        if events.send(NetEvent::Unsent(vec![command])).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
        attempt += 1;
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// The wait before the next try: `backoff` less up to half of it, by `random` in `[0, 1)`
/// ("equal jitter"). When a server restarts, its clients lost it at the same moment; without
/// this they would all come back in lockstep, every time.
pub fn jittered(backoff: Duration, random: f64) -> Duration {
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    backoff.mul_f64(1.0 - 0.5 * random)
}

/// A number in `[0, 1)` that differs from call to call and from process to process (the
/// standard library's randomly keyed hasher; nothing here needs more than that).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::process::id());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

fn lost(reason: impl Into<String>, welcomed: bool, unsent: Vec<ClientCommand>) -> Ended {
    Ended::Lost {
        reason: reason.into(),
        welcomed,
        unsent,
    }
}

async fn session(
    config: &NetConfig,
    commands: &mut UnboundedReceiver<ClientCommand>,
    events: &Sender<NetEvent>,
) -> Ended {
    let connect = TcpStream::connect(&config.server);
    let stream = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return lost(e.to_string(), false, Vec::new()),
        Err(_) => return lost("connect timed out", false, Vec::new()),
    };
    // Chat lines are small and interactive.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut link = Link {
        plain: config.plain,
        welcomed: config.plain,
        parser: PlainParser::new(),
    };
    if config.plain {
        if events
            .send(NetEvent::Connected { plain: true })
            .await
            .is_err()
        {
            return farewell(reader, writer, commands, &mut link).await;
        }
    } else if let Err(e) = writer.write_all(format!("{HELLO_LINE}\n").as_bytes()).await {
        return lost(e.to_string(), false, Vec::new());
    }
    let mut framer = LineFramer::new(MAX_SERVER_LINE);
    let mut buf = vec![0u8; 64 * 1024];
    let hint = tokio::time::sleep(config.welcome_hint_after);
    tokio::pin!(hint);
    let mut hinted = config.plain;
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return lost("the server closed the connection", link.welcomed, Vec::new()),
                    Ok(n) => n,
                    Err(e) => return lost(e.to_string(), link.welcomed, Vec::new()),
                };
                let mut lines = Vec::new();
                framer.push(&buf[..n], |frame| match frame {
                    Frame::Line(line) => lines.push(Some(decode_line(line).0.into_owned())),
                    Frame::TooLong => lines.push(None),
                });
                for line in lines {
                    let Some(event) = link.read(line) else {
                        continue;
                    };
                    if matches!(event, NetEvent::Server(ServerEvent::Welcome { .. }, _))
                        && events.send(NetEvent::Connected { plain: false }).await.is_err()
                    {
                        return farewell(reader, writer, commands, &mut link).await;
                    }
                    // Waits while the app is behind: nothing more is read meanwhile.
                    if events.send(event).await.is_err() {
                        return farewell(reader, writer, commands, &mut link).await;
                    }
                }
            }
            command = commands.recv(), if link.welcomed => {
                let Some(command) = command else {
                    return farewell(reader, writer, commands, &mut link).await;
                };
                let mut batch = vec![command];
                while let Ok(more) = commands.try_recv() {
                    batch.push(more);
                }
                if let Err(e) = write_batch(&mut writer, &mut link, batch, events).await {
                    return e;
                }
            }
            _ = &mut hint, if !hinted && !link.welcomed => {
                hinted = true;
                let notice = ServerEvent::notice(
                    NoticeCode::Other,
                    "no welcome from the server yet; if it is the original (plain text) server, restart with --plain",
                );
                if events.send(NetEvent::Server(notice, local_time())).await.is_err() {
                    return farewell(reader, writer, commands, &mut link).await;
                }
            }
        }
    }
}

/// What one connection knows about the dialect it speaks.
struct Link {
    plain: bool,
    /// JSON mode: the welcome came (plain mode: always).
    welcomed: bool,
    parser: PlainParser,
}

impl Link {
    /// Turns a server line (`None`: one that was too long) into the event to report, if any.
    fn read(&mut self, line: Option<String>) -> Option<NetEvent> {
        let Some(line) = line else {
            let notice = ServerEvent::notice(
                NoticeCode::Other,
                "a line from the server was too long and was skipped",
            );
            return Some(NetEvent::Server(notice, local_time()));
        };
        if self.plain {
            return Some(match self.parser.parse_line(&line) {
                PlainLine::Event(event) => NetEvent::Server(event, local_time()),
                PlainLine::UserListed(user) => NetEvent::Listed(user),
            });
        }
        if !self.welcomed {
            // The plain `login` and `I am here` lines come before the welcome.
            return match line
                .starts_with('{')
                .then(|| ServerEvent::parse_json(&line))
            {
                Some(Ok(welcome @ ServerEvent::Welcome { .. })) => {
                    self.welcomed = true;
                    Some(NetEvent::Server(welcome, local_time()))
                }
                _ => None,
            };
        }
        let event = ServerEvent::parse_json(&line)
            .unwrap_or_else(|_| ServerEvent::notice(NoticeCode::Other, sanitize_text(&line)));
        Some(NetEvent::Server(event, local_time()))
    }
}

/// How long quitting may spend on the connection: writing what the app already handed over,
/// then reading what the server still says until it closes.
pub const FAREWELL: Duration = Duration::from_millis(500);

/// The app is gone (quitting): write what it already handed over, close our sending side so
/// the server reads a clean end of stream, and read (and drop) what it still sends until it
/// closes too, for at most [`FAREWELL`]. Closing with unread data would instead make the
/// kernel answer with a reset, which can destroy the server's last replies in flight.
async fn farewell(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    commands: &mut UnboundedReceiver<ClientCommand>,
    link: &mut Link,
) -> Ended {
    let close = async {
        let mut batch = Vec::new();
        while let Ok(command) = commands.try_recv() {
            batch.push(command);
        }
        if link.welcomed && !batch.is_empty() {
            let out = encode_batch(link, batch).0;
            if writer.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
        if writer.shutdown().await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(FAREWELL, close).await;
    Ended::AppGone
}

/// The wire text of a batch of commands, and the commands it holds; the plain dialect
/// cannot carry some chat lines (those that read as commands), which come back separately.
fn encode_batch(
    link: &mut Link,
    batch: Vec<ClientCommand>,
) -> (String, Vec<ClientCommand>, Vec<ClientCommand>) {
    let mut out = String::new();
    let mut written = Vec::with_capacity(batch.len());
    let mut unsendable = Vec::new();
    for command in batch {
        if link.plain {
            match command.to_plain() {
                Some(line) => {
                    if let ClientCommand::Rename { name } = &command {
                        link.parser.sent_rename(name.clone());
                    }
                    out.push_str(&line);
                }
                None => {
                    unsendable.push(command);
                    continue;
                }
            }
        } else {
            out.push_str(&command.to_json());
        }
        out.push('\n');
        written.push(command);
    }
    (out, written, unsendable)
}

/// Writes commands in one go; on failure, everything in the batch counts as unsent, since
/// nobody can tell how much the server read.
async fn write_batch(
    writer: &mut OwnedWriteHalf,
    link: &mut Link,
    batch: Vec<ClientCommand>,
    events: &Sender<NetEvent>,
) -> Result<(), Ended> {
    let (out, written, unsendable) = encode_batch(link, batch);
    for command in unsendable {
        if events.send(NetEvent::Unsendable(command)).await.is_err() {
            return Err(Ended::AppGone);
        }
    }
    match writer.write_all(out.as_bytes()).await {
        Ok(()) => Ok(()),
        Err(e) => Err(lost(e.to_string(), true, written)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_takes_off_at_most_half_the_backoff() {
        let backoff = Duration::from_secs(4);
        assert_eq!(jittered(backoff, 0.0), backoff);
        assert_eq!(jittered(backoff, 0.5), Duration::from_secs(3));
        assert_eq!(jittered(backoff, 1.0), Duration::from_secs(2));
        assert_eq!(jittered(backoff, -3.0), backoff, "clamped");
        assert_eq!(jittered(backoff, f64::NAN), backoff);
    }

    #[test]
    fn clients_do_not_retry_in_lockstep() {
        let backoff = Duration::from_millis(500);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(backoff, random_unit())).collect();
        for wait in &waits {
            assert!(
                *wait > backoff / 2 && *wait <= backoff,
                "{wait:?} outside (250 ms, 500 ms]"
            );
        }
        let mut distinct = waits.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 150,
            "only {} distinct waits",
            distinct.len()
        );
        let spread = distinct[distinct.len() - 1] - distinct[0];
        assert!(spread > backoff / 4, "spread {spread:?}");
    }
}
