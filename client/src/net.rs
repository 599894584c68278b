//! The connection to the server: a task that talks to the app only through channels.
//!
//! It connects, switches the connection to JSON mode with [`HELLO_LINE`] (or, with
//! `--plain`, speaks the original server's text through [`PlainParser`]), turns each
//! server line into a [`NetEvent`], and writes each [`ClientCommand`] it is given. When the
//! connection breaks it hands back whatever it was given but did not write, and tries again
//! with exponential backoff and jitter (see [`jittered`]). Re-taking the chosen name after a reconnect is the app's job:
//! it sees the welcome and decides.

use chat_protocol::command::decode_line;
use chat_protocol::{
    ClientCommand, Frame, HELLO_LINE, LineFramer, NoticeCode, PlainParser, ServerEvent,
    sanitize_text,
};
use chrono::NaiveTime;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Longest server line accepted; a `who` answer for thousands of users fits.
const MAX_SERVER_LINE: usize = 4 * 1024 * 1024;

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
pub async fn run(
    config: NetConfig,
    mut commands: UnboundedReceiver<ClientCommand>,
    events: UnboundedSender<NetEvent>,
) {
    let mut attempt = 1;
    let mut backoff = config.initial_backoff;
    loop {
        if events.send(NetEvent::Connecting { attempt }).is_err() {
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
        if !unsent.is_empty() && events.send(NetEvent::Unsent(unsent)).is_err() {
            return;
        }
        let retry_in = jittered(backoff, random_unit());
        let lost = NetEvent::Disconnected { reason, retry_in };
        if events.send(lost).is_err() {
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
                        if events.send(NetEvent::Unsent(vec![command])).is_err() {
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
    events: &UnboundedSender<NetEvent>,
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
    let mut welcomed = config.plain;
    if config.plain {
        if events.send(NetEvent::Connected { plain: true }).is_err() {
            return Ended::AppGone;
        }
    } else if let Err(e) = writer.write_all(format!("{HELLO_LINE}\n").as_bytes()).await {
        return lost(e.to_string(), false, Vec::new());
    }
    let mut parser = PlainParser::new();
    let mut framer = LineFramer::new(MAX_SERVER_LINE);
    let mut buf = vec![0u8; 64 * 1024];
    let hint = tokio::time::sleep(config.welcome_hint_after);
    tokio::pin!(hint);
    let mut hinted = config.plain;
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return lost("the server closed the connection", welcomed, Vec::new()),
                    Ok(n) => n,
                    Err(e) => return lost(e.to_string(), welcomed, Vec::new()),
                };
                let mut lines = Vec::new();
                framer.push(&buf[..n], |frame| match frame {
                    Frame::Line(line) => lines.push(Some(decode_line(line).0.into_owned())),
                    Frame::TooLong => lines.push(None),
                });
                for line in lines {
                    let Some(line) = line else {
                        let notice = ServerEvent::notice(
                            NoticeCode::Other,
                            "a line from the server was too long and was skipped",
                        );
                        if events.send(NetEvent::Server(notice, local_time())).is_err() {
                            return Ended::AppGone;
                        }
                        continue;
                    };
                    let event = if config.plain {
                        parser.parse_line(&line)
                    } else if !welcomed {
                        // The plain `login` and `I am here` lines come before the welcome.
                        match line.starts_with('{').then(|| ServerEvent::parse_json(&line)) {
                            Some(Ok(welcome @ ServerEvent::Welcome { .. })) => {
                                welcomed = true;
                                if events.send(NetEvent::Connected { plain: false }).is_err() {
                                    return Ended::AppGone;
                                }
                                welcome
                            }
                            _ => continue,
                        }
                    } else {
                        ServerEvent::parse_json(&line).unwrap_or_else(|_| {
                            ServerEvent::notice(NoticeCode::Other, sanitize_text(&line))
                        })
                    };
                    if events.send(NetEvent::Server(event, local_time())).is_err() {
                        return Ended::AppGone;
                    }
                }
            }
            command = commands.recv(), if welcomed => {
                let Some(command) = command else {
                    return Ended::AppGone;
                };
                let mut batch = vec![command];
                while let Ok(more) = commands.try_recv() {
                    batch.push(more);
                }
                if let Err(e) = write_batch(&mut writer, &mut parser, config.plain, batch, events).await {
                    return e;
                }
            }
            _ = &mut hint, if !hinted && !welcomed => {
                hinted = true;
                let notice = ServerEvent::notice(
                    NoticeCode::Other,
                    "no welcome from the server yet; if it is the original (plain text) server, restart with --plain",
                );
                if events.send(NetEvent::Server(notice, local_time())).is_err() {
                    return Ended::AppGone;
                }
            }
        }
    }
}

/// Writes commands in one go; on failure, everything in the batch counts as unsent, since
/// nobody can tell how much the server read.
async fn write_batch(
    writer: &mut OwnedWriteHalf,
    parser: &mut PlainParser,
    plain: bool,
    batch: Vec<ClientCommand>,
    events: &UnboundedSender<NetEvent>,
) -> Result<(), Ended> {
    let mut out = String::new();
    let mut written = Vec::with_capacity(batch.len());
    for command in batch {
        if plain {
            match command.to_plain() {
                Some(line) => {
                    if let ClientCommand::Rename { name } = &command {
                        parser.sent_rename(name.clone());
                    }
                    out.push_str(&line);
                }
                None => {
                    if events.send(NetEvent::Unsendable(command)).is_err() {
                        return Err(Ended::AppGone);
                    }
                    continue;
                }
            }
        } else {
            out.push_str(&command.to_json());
        }
        out.push('\n');
        written.push(command);
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
