//! One user's connection, from login to leave.
//!
//! The session reads and frames the socket, turns lines into commands for the hub, and
//! enforces the per-connection rules: the idle timeout (only complete lines count as
//! activity, so a client trickling bytes still times out), the line length limit and the
//! flood limit. It never writes to the socket itself: replies go through the same
//! [`Outbox`](crate::outbox::Outbox) as broadcasts, so a reply never interleaves with one.
//!
//! When the room has a password, the connection starts outside the room: it gets
//! [`PASSWORD_REQUIRED`] and nothing else until it sends `pass|PASSWORD` (or a JSON hello
//! carrying `"password"`), and only then joins. Three wrong tries, or none right within
//! `auth_timeout`, close it.
//!
//! The session is generic over the socket's halves: a plain connection keeps tokio's owned
//! TCP halves (no lock between reading and writing), a TLS one uses the halves of
//! `tokio::io::split`.

use crate::auth::{Gate, MAX_TRIES, PASSWORD_REQUIRED, Verdict};
use crate::config::Config;
use crate::hub::{Hub, MemberId};
use crate::outbox::{self, Mode, Outbox, Rendered};
use crate::room_log::Query;
use crate::telemetry::{self, Disconnect};
use chat_protocol::command::{
    HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, PLAIN_HISTORY_DEFAULT, decode_line,
};
use chat_protocol::rate::TokenBucket;
use chat_protocol::{
    ClientCommand, ErrorCode, Frame, LeaveReason, LineFramer, NoticeCode, ServerEvent,
};
use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    /// The read buffer, one per worker thread rather than one per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How a session ended, and so what the others hear.
enum End {
    /// The client closed the connection, or it broke.
    Quit,
    Timeout,
    ExcessFlood,
    /// The hub already removed this member (slow consumer) or the socket failed.
    Killed,
    Shutdown,
    /// Not let in: the last wrong password, or too many from its address (the reason is
    /// already queued).
    AuthFailed,
    /// No right password in time.
    AuthTimeout,
}

/// The member id of a connection that has not joined yet: no member has it, so the hub
/// ignores anything done under it.
const NOBODY: MemberId = MemberId::MAX;

/// A connection waiting for the room password.
struct Locked<'a> {
    gate: &'a Gate,
    ip: IpAddr,
    /// Wrong tries so far on this connection.
    wrong: u32,
}

struct Session<'a> {
    hub: &'a Arc<Hub>,
    /// This connection's queue, for lines sent before it joins (the hub does not know it yet).
    outbox: &'a Outbox,
    /// The peer's `ip:port`, its address in the room once it joins.
    peer: &'a str,
    /// `Some` until the right password arrives; then the connection joins.
    locked: Option<Locked<'a>>,
    /// History queries run as tasks of their own, tracked like the connection's others.
    tracker: &'a TaskTracker,
    config: &'a Config,
    /// [`NOBODY`] until the connection joins.
    id: MemberId,
    framer: LineFramer,
    bucket: TokenBucket,
    /// Lines dropped since the last accepted one; past `burst` the client is disconnected.
    flood_dropped: u32,
    /// No line has arrived yet: only the first line may switch to JSON mode.
    first_line: bool,
    mode: Mode,
    /// When the last complete line arrived (or the connection opened): the idle timeout
    /// counts from here.
    last_line: Instant,
}

/// Serves one accepted plain connection until it ends. `slot` is held until the socket is
/// closed, which may be a little after the session ends, while the writer flushes.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<Config>,
    gate: Option<Arc<Gate>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slot: impl Send + 'static,
) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    serve_halves(
        reader, writer, peer, hub, config, gate, shutdown, tracker, slot,
    )
    .await;
}

/// Serves one connection over any byte stream (TLS), split into halves.
#[allow(clippy::too_many_arguments)]
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<Config>,
    gate: Option<Arc<Gate>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slot: impl Send + 'static,
) {
    let (reader, writer) = tokio::io::split(stream);
    serve_halves(
        reader, writer, peer, hub, config, gate, shutdown, tracker, slot,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_halves<R, W>(
    mut reader: R,
    writer: W,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<Config>,
    gate: Option<Arc<Gate>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slot: impl Send + 'static,
) where
    R: AsyncRead + Unpin,
    W: outbox::SendSide,
{
    let (outbox, queue) = outbox::channel(config.sendq_bytes);
    let (flush_grace, farewell_wait) = (config.flush_grace, config.farewell_wait);
    let writer_shutdown = shutdown.clone();
    tracker.spawn(async move {
        queue
            .run(writer, writer_shutdown, flush_grace, farewell_wait)
            .await;
        drop(slot);
    });

    let peer_text = peer.to_string();
    let locked = gate.as_deref().map(|gate| Locked {
        gate,
        ip: peer.ip(),
        wrong: 0,
    });
    let id = if locked.is_some() {
        let _ = outbox.push(&Rendered::preformatted(
            Some(format!("{PASSWORD_REQUIRED}\n")),
            None,
        ));
        NOBODY
    } else {
        hub.join(&peer_text, outbox.clone())
    };
    let mut session = Session {
        hub: &hub,
        outbox: &outbox,
        peer: &peer_text,
        locked,
        tracker: &tracker,
        config: &config,
        id,
        // `0` is refused by the binary's flag; a library caller's `0` gets the default, never
        // an unbounded line buffer.
        framer: LineFramer::new(match config.max_line_bytes {
            0 => chat_protocol::limits::DEFAULT_MAX_LINE_BYTES,
            n => n,
        }),
        bucket: TokenBucket::new(config.rate, config.burst, Instant::now().into_std()),
        flood_dropped: 0,
        first_line: true,
        mode: Mode::Plain,
        last_line: Instant::now(),
    };

    // Created once and polled in place: re-creating them every turn would re-register with
    // the shared shutdown token (a lock all sessions contend on) and the timer wheel.
    let shutting_down = shutdown.cancelled();
    let killed = outbox.killed();
    // Absurdly long timeouts are capped so the deadline arithmetic cannot overflow.
    let idle_timeout = config.idle_timeout.min(MAX_IDLE_TIMEOUT);
    let idle = sleep_until(session.last_line + idle_timeout);
    let unlock_by = sleep_until(session.last_line + config.auth_timeout.min(MAX_IDLE_TIMEOUT));
    tokio::pin!(shutting_down, killed, idle, unlock_by);

    let end = loop {
        tokio::select! {
            _ = &mut shutting_down => break End::Shutdown,
            _ = &mut killed => break End::Killed,
            _ = &mut unlock_by, if session.locked.is_some() => break End::AuthTimeout,
            _ = &mut idle, if !idle_timeout.is_zero() => {
                // Lines only record their time; the timer is moved when it fires, so a busy
                // connection costs one timer update per timeout, not one per line.
                if hub.is_backlogged() {
                    // Not reading is the server's doing, not the client's: the clock waits.
                    session.last_line = Instant::now();
                }
                let due = session.last_line + idle_timeout;
                if Instant::now() >= due {
                    break End::Timeout;
                }
                idle.as_mut().reset(due);
            }
            // While the room log is far behind (a stalled disk), stop reading: the clients'
            // own TCP windows then hold what they send, instead of the server's memory.
            _ = hub.backlog_cleared(), if hub.is_backlogged() => {
                session.last_line = Instant::now();
            }
            read = std::future::poll_fn(|cx| session.poll_read_lines(cx, &mut reader)), if !hub.is_backlogged() => {
                match read {
                    Ok(None) => {}
                    Ok(Some(end)) => break end,
                    Err(_) => break End::Quit,
                }
            }
        }
    };

    let farewell = !matches!(end, End::Quit);
    let id = session.id;
    if id == NOBODY {
        session.end_unjoined(&end);
    } else {
        end_member(&hub, id, &end, &config);
    }
    if farewell {
        linger(
            &mut reader,
            &outbox,
            config.flush_grace,
            config.farewell_wait,
        )
        .await;
    }
    tracing::debug!(%peer, "session ended");
}

/// Says goodbye to a member as `end` requires and makes it leave, counting why. The count
/// comes first, so anyone who hears of the leave can already see it in the metrics.
fn end_member(hub: &Hub, id: MemberId, end: &End, config: &Config) {
    let metrics = telemetry::counters();
    match end {
        End::Quit | End::AuthFailed | End::AuthTimeout => {
            metrics.disconnect(Disconnect::Quit);
            hub.leave(id, LeaveReason::Quit);
        }
        End::Killed => {
            // The hub already removed a member it found too slow; otherwise the socket failed.
            let reason = if hub.leave(id, LeaveReason::Quit) {
                Disconnect::Quit
            } else {
                Disconnect::SendqExceeded
            };
            metrics.disconnect(reason);
        }
        End::Timeout => {
            metrics.disconnect(Disconnect::Timeout);
            let after = humantime::format_duration(config.idle_timeout);
            let notice = ServerEvent::notice(
                NoticeCode::IdleTimeout,
                format!("no complete line for {after}: disconnected for idling"),
            );
            hub.say_and_leave(id, notice, LeaveReason::Timeout);
        }
        End::ExcessFlood => {
            metrics.disconnect(Disconnect::ExcessFlood);
            hub.say_and_leave(id, excess_flood(), LeaveReason::ExcessFlood);
        }
        End::Shutdown => {
            metrics.disconnect(Disconnect::Shutdown);
            hub.say_and_forget(id, goodbye());
        }
    }
}

fn excess_flood() -> ServerEvent {
    ServerEvent::error(
        ErrorCode::ExcessFlood,
        "excess flood: you kept sending too fast; disconnecting",
    )
}

fn goodbye() -> ServerEvent {
    ServerEvent::notice(NoticeCode::Shutdown, "server shutting down; goodbye")
}

/// After a farewell: waits (at most `farewell_wait`) for the writer to send it and shut the
/// sending side down, then reads and discards what the client still sends, until it closes
/// or `grace` has passed. Closing a socket with unread input makes the kernel send a reset,
/// which throws away what is still in the send buffer: the very farewell that says why.
async fn linger<R: AsyncRead + Unpin>(
    reader: &mut R,
    outbox: &outbox::Outbox,
    grace: std::time::Duration,
    farewell_wait: std::time::Duration,
) {
    use tokio::io::AsyncReadExt;
    if tokio::time::timeout(farewell_wait, outbox.finished())
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(grace, async {
        let mut sink = [0u8; 4096];
        while let Ok(1..) = reader.read(&mut sink).await {}
    })
    .await;
}

/// Idle timeouts beyond this (about 30 years) are taken as this, which is as good as never.
const MAX_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);

/// However a session ends, a panic included, its member leaves and the writer is told to
/// finish: no ghost in `who`, no task or slot kept forever. After a normal end the leave has
/// already happened and this finds nobody.
impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.id == NOBODY {
            self.outbox.close();
        } else {
            self.hub.leave(self.id, LeaveReason::Quit);
        }
    }
}

impl Session<'_> {
    /// Reads what the socket has and handles every complete line in it. `Ok(Some(_))` ends
    /// the session.
    ///
    /// Reads go into a per-thread scratch buffer, used and released within this one poll,
    /// so an idle connection carries no read buffer and no read zeroes one. `poll_read`
    /// (unlike `try_read`) also notes a short read as having drained the socket, which saves
    /// a read that would only say "nothing more".
    fn poll_read_lines<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
    ) -> Poll<io::Result<Option<End>>> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.reserve(READ_CHUNK);
            let mut buf = ReadBuf::uninit(&mut scratch.spare_capacity_mut()[..READ_CHUNK]);
            ready!(Pin::new(reader).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(Some(End::Quit)));
            }
            Poll::Ready(Ok(self.handle_chunk(buf.filled())))
        })
    }

    fn handle_chunk(&mut self, chunk: &[u8]) -> Option<End> {
        // The framer is taken out for the call so that handling a line may borrow `self`.
        let mut framer = std::mem::take(&mut self.framer);
        let mut end = None;
        framer.push(chunk, |frame| {
            if end.is_some() {
                return;
            }
            end = match frame {
                Frame::Line(line) => self.on_line(line),
                Frame::TooLong => {
                    // A line, even a refused one, uses up the turn for `hello`.
                    self.first_line = false;
                    self.error(
                        ErrorCode::LineTooLong,
                        format!(
                            "line longer than {} bytes; discarded",
                            self.config.max_line_bytes
                        ),
                    );
                    None
                }
            };
        });
        framer.shrink();
        self.framer = framer;
        end
    }

    /// Answers a history request when the log has read it; the answer is one line (one
    /// block for nc users), queued like any reply.
    fn history(&self, before: Option<u64>, after: Option<u64>, limit: Option<u32>) {
        let query = match (self.mode, before, after, limit) {
            (Mode::Plain, _, _, limit) => Query::Plain {
                limit: limit.unwrap_or(PLAIN_HISTORY_DEFAULT),
            },
            (Mode::Json, Some(_), Some(_), _) => {
                return self.error(
                    ErrorCode::BadRequest,
                    "history takes before or after, not both",
                );
            }
            (Mode::Json, _, _, Some(0)) => {
                return self.error(ErrorCode::BadRequest, "history limit must be at least 1");
            }
            (Mode::Json, before, after, limit) => {
                let limit = limit
                    .unwrap_or(HISTORY_DEFAULT_LIMIT)
                    .min(HISTORY_MAX_LIMIT);
                match (before, after) {
                    (Some(seq), _) => Query::Before { seq, limit },
                    (_, Some(seq)) => Query::After { seq, limit },
                    _ => Query::Newest { limit },
                }
            }
        };
        let (hub, id) = (self.hub.clone(), self.id);
        self.tracker.spawn(async move {
            match hub.history(query).await {
                Ok(answer) => hub.send(id, answer.line),
                Err(e) => {
                    tracing::error!(error = %e, "history query failed");
                    hub.reply(
                        id,
                        ServerEvent::error(
                            ErrorCode::Unavailable,
                            "history is unavailable right now; try again later",
                        ),
                    );
                }
            }
        });
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.reply(ServerEvent::error(code, message));
    }

    /// A line for this connection alone: through the hub once it has joined (so it keeps its
    /// place behind room events), straight to its queue before.
    fn reply(&self, event: ServerEvent) {
        if self.id == NOBODY {
            if self.outbox.reply(event).is_err() {
                self.outbox.kill();
            }
        } else {
            self.hub.reply(self.id, event);
        }
    }

    /// Ends a connection that never joined: counts why, says why if there is something to
    /// say, and closes once that is sent.
    fn end_unjoined(&mut self, end: &End) {
        let (farewell, reason) = match end {
            End::Quit => (None, Disconnect::Quit),
            End::Killed => (None, Disconnect::SendqExceeded),
            End::AuthFailed => (None, Disconnect::AuthFailed),
            End::AuthTimeout => {
                let after = humantime::format_duration(self.config.auth_timeout);
                let notice = ServerEvent::notice(
                    NoticeCode::IdleTimeout,
                    format!("no password within {after}: disconnected"),
                );
                (Some(notice), Disconnect::AuthTimeout)
            }
            End::Timeout => {
                let after = humantime::format_duration(self.config.idle_timeout);
                let notice = ServerEvent::notice(
                    NoticeCode::IdleTimeout,
                    format!("no complete line for {after}: disconnected for idling"),
                );
                (Some(notice), Disconnect::Timeout)
            }
            End::ExcessFlood => (Some(excess_flood()), Disconnect::ExcessFlood),
            End::Shutdown => (Some(goodbye()), Disconnect::Shutdown),
        };
        telemetry::counters().disconnect(reason);
        if let Some(farewell) = farewell {
            self.reply(farewell);
        }
        self.outbox.close();
    }

    /// A line from a connection still waiting for the password. Only a try counts
    /// towards the three: `pass|PASSWORD` in plain mode, or a hello (which switches the
    /// connection to JSON, so its answers are JSON) with or without `"password"`. Anything
    /// else is answered with what is required.
    fn on_locked_line(&mut self, line: &str, first_line: bool) -> Option<End> {
        let attempt = if (first_line || self.mode == Mode::Json) && ClientCommand::is_hello(line) {
            self.mode = Mode::Json;
            self.outbox.set_mode(Mode::Json);
            ClientCommand::hello_password(line).unwrap_or_default()
        } else if self.mode == Mode::Plain
            && let Some(password) = line.strip_prefix("pass|")
        {
            password.to_string()
        } else {
            match self.mode {
                Mode::Plain => {
                    let reminder =
                        Rendered::preformatted(Some(format!("{PASSWORD_REQUIRED}\n")), None);
                    if self.outbox.push(&reminder).is_err() {
                        self.outbox.kill();
                    }
                }
                Mode::Json => self.error(
                    ErrorCode::BadRequest,
                    r#"password required: send {"type":"hello","version":1,"password":"..."}"#,
                ),
            }
            return None;
        };
        let (gate, ip) = self.locked.as_ref().map(|l| (l.gate, l.ip))?;
        match gate.check(ip, &attempt) {
            Verdict::Right => {
                self.locked = None;
                // Joins exactly as without a password: `login` and `I am here` in plain
                // text, then, for a program, the welcome that switches it to JSON.
                self.outbox.set_mode(Mode::Plain);
                self.id = self.hub.join(self.peer, self.outbox.clone());
                if self.mode == Mode::Json {
                    self.hub.welcome(self.id);
                } else {
                    // The hello may still follow, as the first line after the password.
                    self.first_line = true;
                }
                None
            }
            Verdict::Wrong => {
                let locked = self.locked.as_mut()?;
                locked.wrong += 1;
                let last = locked.wrong >= MAX_TRIES;
                self.error(ErrorCode::WrongPassword, "wrong password");
                last.then_some(End::AuthFailed)
            }
            Verdict::Blocked => {
                self.error(
                    ErrorCode::WrongPassword,
                    format!("too many wrong passwords from {ip}; try again later"),
                );
                Some(End::AuthFailed)
            }
        }
    }

    fn on_line(&mut self, raw: &[u8]) -> Option<End> {
        self.last_line = Instant::now();
        if !self.bucket.try_take(self.last_line.into_std()) {
            self.flood_dropped += 1;
            if self.flood_dropped == 1 {
                self.error(
                    ErrorCode::Flood,
                    format!(
                        "you are sending too fast (at most {} lines per second, {} at once); line dropped",
                        self.config.rate, self.config.burst
                    ),
                );
            }
            return (self.flood_dropped > self.config.burst).then_some(End::ExcessFlood);
        }
        self.flood_dropped = 0;

        let (line, replaced) = decode_line(raw);
        if replaced {
            self.error(
                ErrorCode::InvalidUtf8,
                "your line was not valid UTF-8; invalid bytes were replaced with U+FFFD",
            );
        }
        let first_line = std::mem::replace(&mut self.first_line, false);
        if self.locked.is_some() {
            return self.on_locked_line(&line, first_line);
        }
        let command = match self.mode {
            Mode::Plain if first_line && ClientCommand::is_hello(&line) => {
                self.mode = Mode::Json;
                self.hub.welcome(self.id);
                return None;
            }
            Mode::Plain => match ClientCommand::parse_plain(&line) {
                Ok(command) => command,
                Err(refusal) => {
                    self.error(ErrorCode::BadRequest, refusal);
                    return None;
                }
            },
            Mode::Json => match ClientCommand::parse_json(&line) {
                Ok(command) => command,
                Err(e) => {
                    self.error(ErrorCode::BadRequest, e.to_string());
                    return None;
                }
            },
        };
        match command {
            ClientCommand::Chat { text } => self.hub.chat(self.id, text),
            ClientCommand::Who => self.hub.who(self.id),
            ClientCommand::Rename { name } => self.hub.rename(self.id, &name),
            ClientCommand::Dm { to, text } => self.hub.direct_message(self.id, &to, text),
            ClientCommand::Ping { token } => self.hub.reply(self.id, ServerEvent::Pong { token }),
            ClientCommand::History {
                before,
                after,
                limit,
            } => self.history(before, after, limit),
            ClientCommand::Hello { .. } => self.error(
                ErrorCode::BadRequest,
                "hello is only accepted as a connection's first line",
            ),
        }
        None
    }
}
