//! One connection's outgoing queue, and the task that writes it to the socket.
//!
//! Anyone may queue (the hub broadcasting, the session replying) and no one ever waits:
//! queuing is a push under a lock held for a few instructions. The queue is bounded in bytes; the push that would
//! pass the bound fails, and the hub then drops the connection as a slow consumer, so one
//! client that stops reading never holds up or bloats anyone else.
//!
//! An event is rendered at most once per mode however many connections it goes to
//! ([`Rendered`] is shared through an `Arc`), and the writer sends everything queued in one
//! vectored write. The writer is generic over the socket: a plain connection's own write
//! half, or the write half of a TLS stream (which is flushed after each batch, since TLS
//! may hold back what it was given; flushing a TCP half is a no-op).

use chat_protocol::{ErrorCode, ServerEvent};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How a connection wants its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// The original's text, for nc users.
    Plain = 0,
    /// JSON lines, for programs that said hello.
    Json = 1,
}

/// An event with its renderings, each made on first use and then shared by every recipient.
#[derive(Debug)]
pub struct Rendered {
    /// `None` for text rendered elsewhere (history answers are assembled from the log's
    /// stored lines): both renderings are then set from the start.
    event: Option<ServerEvent>,
    /// `None` inside: the event has no plain form (nc users never see it).
    plain: OnceLock<Option<Box<str>>>,
    json: OnceLock<Option<Box<str>>>,
}

impl Rendered {
    pub fn new(event: ServerEvent) -> Arc<Rendered> {
        Arc::new(Rendered {
            event: Some(event),
            plain: OnceLock::new(),
            json: OnceLock::new(),
        })
    }

    /// Text already rendered, line endings included; `None`: nothing to send in that mode.
    pub fn preformatted(plain: Option<String>, json: Option<String>) -> Arc<Rendered> {
        Arc::new(Rendered {
            event: None,
            plain: OnceLock::from(plain.map(String::into_boxed_str)),
            json: OnceLock::from(json.map(String::into_boxed_str)),
        })
    }

    /// The event, if this was made from one.
    pub fn event(&self) -> Option<&ServerEvent> {
        self.event.as_ref()
    }

    /// The bytes to send in `mode`, or `None` if the event has nothing to say in it.
    pub fn bytes(&self, mode: Mode) -> Option<&[u8]> {
        match mode {
            Mode::Plain => self
                .plain
                .get_or_init(|| {
                    self.event
                        .as_ref()
                        .and_then(ServerEvent::to_plain)
                        .map(String::into_boxed_str)
                })
                .as_deref()
                .map(str::as_bytes),
            Mode::Json => self
                .json
                .get_or_init(|| {
                    self.event
                        .as_ref()
                        .map(|event| event.to_json().into_boxed_str())
                })
                .as_deref()
                .map(str::as_bytes),
        }
    }
}

/// What the writer is given: an event and the mode it was queued in. The mode travels with
/// the item so that lines queued before a switch to JSON still go out as the plain text they
/// were counted as.
type Item = (Arc<Rendered>, Mode);

/// The queue passed its byte bound: the connection is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Bytes queued and not yet written (those being written included).
    bytes: usize,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue goes from empty to non-empty: one wake per batch,
    /// not one per line.
    ready: Notify,
    /// Bound on `Queue::bytes`; `0`: unbounded.
    limit: usize,
    mode: AtomicU8,
    /// Cancelled when the connection must end now, queue or not: it overflowed, or its
    /// socket failed. The session and the writer both watch it.
    kill: CancellationToken,
    /// Cancelled when the session has ended and nothing more will be queued: the writer
    /// flushes what is left, but only for a bounded time, so a client that stops reading and
    /// never closes cannot pin the socket and the task forever.
    closed: CancellationToken,
    /// Cancelled when the writer is done: everything it will ever send is sent and the
    /// sending side of the socket is shut down.
    finished: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; if something did, the queue is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a connection's queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The writing side, consumed by [`Writer::run`].
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
}

/// Creates a connection's queue, bounded to `limit` bytes (`0`: unbounded).
pub fn channel(limit: usize) -> (Outbox, Writer) {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        ready: Notify::new(),
        limit,
        mode: AtomicU8::new(Mode::Plain as u8),
        kill: CancellationToken::new(),
        closed: CancellationToken::new(),
        finished: CancellationToken::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        Writer { shared },
    )
}

impl Outbox {
    /// Queues `item` without waiting. Fails if that would pass the byte bound; nothing is
    /// queued then.
    pub fn push(&self, item: &Arc<Rendered>) -> Result<(), Overflow> {
        let mode = self.mode();
        let Some(bytes) = item.bytes(mode) else {
            return Ok(());
        };
        let len = bytes.len();
        let was_empty = {
            let mut queue = self.shared.lock();
            if self.shared.limit != 0 && queue.bytes + len > self.shared.limit {
                return Err(Overflow);
            }
            queue.bytes += len;
            queue.items.push_back((item.clone(), mode));
            queue.items.len() == 1
        };
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Renders and queues a reply meant for this connection only.
    pub fn reply(&self, event: ServerEvent) -> Result<(), Overflow> {
        self.push(&Rendered::new(event))
    }

    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.shared.mode.load(Ordering::Relaxed))
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Ends the connection now, dropping whatever is queued. Used for slow consumers.
    pub fn kill(&self) {
        self.shared.kill.cancel();
    }

    /// The session is over and nothing more will be queued: flush what is queued, within
    /// the farewell wait, and close.
    pub fn close(&self) {
        self.shared.closed.cancel();
    }

    /// Resolves once the connection has been killed.
    pub async fn killed(&self) {
        self.shared.kill.cancelled().await
    }

    /// Resolves once the writer is done and the socket's sending side is shut down.
    pub async fn finished(&self) {
        self.shared.finished.cancelled().await
    }
}

/// Most items gathered into one write (Linux takes at most 1024 buffers per `writev`).
const MAX_BATCH: usize = 512;

/// A queue that grew past this many items is given back to the allocator once drained, so
/// an idle connection stays small after a burst.
const KEEP_CAPACITY: usize = 64;

impl Writer {
    /// Writes queued items until the session has closed and the queue is empty, or the
    /// connection is killed, or `shutdown` fires and `flush_grace` has passed, or the session
    /// closed and `farewell_wait` has passed. A killed connection is sent its reason, waiting
    /// at most `farewell_wait` for the client to make room for it.
    pub async fn run<W: AsyncWrite + Unpin>(
        self,
        mut socket: W,
        shutdown: CancellationToken,
        flush_grace: Duration,
        farewell_wait: Duration,
    ) {
        let kill = self.shared.kill.clone();
        let closed = self.shared.closed.clone();
        // Whether the last byte written ended a line, so a farewell starts on a line of its own.
        let mut mid_line = false;
        let drained = tokio::select! {
            result = self.drain(&mut socket, &mut mid_line) => result.is_ok(),
            _ = kill.cancelled() => false,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(flush_grace).await } => false,
            _ = async { closed.cancelled().await; tokio::time::sleep(farewell_wait).await } => false,
        };
        if !drained && kill.is_cancelled() {
            // Free the backlog now; only the reason is still to be sent.
            *self.shared.lock() = Queue::default();
            let farewell = ServerEvent::error(
                ErrorCode::SendqExceeded,
                "you fell too far behind reading; disconnecting",
            );
            let mode = Mode::from_u8(self.shared.mode.load(Ordering::Relaxed));
            let mut text = if mid_line { b"\n".to_vec() } else { Vec::new() };
            text.extend_from_slice(Rendered::new(farewell).bytes(mode).unwrap_or_default());
            // A client that never reads again never takes it; shutdown does not wait for it.
            tokio::select! {
                _ = async { socket.write_all(&text).await?; socket.flush().await } => {}
                _ = tokio::time::sleep(farewell_wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        // Tell a still-running session the socket is finished (it may be a write error).
        kill.cancel();
        let _ = tokio::time::timeout(flush_grace, async {
            socket.flush().await?;
            socket.shutdown().await
        })
        .await;
        self.shared.finished.cancel();
    }

    async fn drain<W: AsyncWrite + Unpin>(
        &self,
        socket: &mut W,
        mid_line: &mut bool,
    ) -> std::io::Result<()> {
        let shared = &self.shared;
        // Swapped with the shared queue each turn, so both allocations are reused.
        let mut batch: VecDeque<Item> = VecDeque::new();
        // Made once: polling a fresh one each turn would register with the token again.
        let closed = shared.closed.cancelled();
        tokio::pin!(closed);
        loop {
            let notified = shared.ready.notified();
            // Read before taking the queue: once closed, nothing more is queued, so an empty
            // queue then means done.
            let closing = shared.closed.is_cancelled();
            {
                let mut queue = shared.lock();
                if queue.items.len() <= MAX_BATCH {
                    std::mem::swap(&mut queue.items, &mut batch);
                } else {
                    batch.extend(queue.items.drain(..MAX_BATCH));
                }
            }
            if batch.is_empty() {
                if closing {
                    return Ok(());
                }
                // Not polled again once it has fired: `closing` is then true for good, and an
                // empty queue returns above.
                tokio::select! {
                    _ = notified => {}
                    _ = &mut closed => {}
                }
                continue;
            }
            let (front, back) = batch.as_slices();
            let mut slices: Vec<IoSlice<'_>> = front
                .iter()
                .chain(back)
                .filter_map(|(item, mode)| item.bytes(*mode))
                .map(IoSlice::new)
                .collect();
            let total: usize = slices.iter().map(|s| s.len()).sum();
            let mut remaining = &mut slices[..];
            while !remaining.is_empty() {
                let written = socket.write_vectored(remaining).await?;
                if written == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                *mid_line = true;
                IoSlice::advance_slices(&mut remaining, written);
            }
            socket.flush().await?;
            *mid_line = false;
            drop(slices);
            batch.clear();
            if batch.capacity() > KEEP_CAPACITY {
                batch = VecDeque::new();
            }
            let mut queue = shared.lock();
            queue.bytes -= total;
            if queue.items.is_empty() && queue.items.capacity() > KEEP_CAPACITY {
                queue.items = VecDeque::new();
            }
        }
    }
}

impl Mode {
    fn from_u8(value: u8) -> Mode {
        if value == Mode::Json as u8 {
            Mode::Json
        } else {
            Mode::Plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::NoticeCode;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_socket_that_holds_bytes_back_is_flushed_after_each_batch() {
        // Like TLS, a BufWriter keeps what it was given until flushed.
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (outbox, writer) = channel(0);
        let shutdown = CancellationToken::new();
        let second = Duration::from_secs(1);
        let task = tokio::spawn(writer.run(
            tokio::io::BufWriter::new(near),
            shutdown.clone(),
            second,
            second,
        ));
        for text in ["first", "second"] {
            let notice = ServerEvent::notice(NoticeCode::Other, text);
            outbox.reply(notice).expect("room in the queue");
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), far.read(&mut buf))
                .await
                .expect("the line is sent, not held back")
                .expect("read");
            assert_eq!(&buf[..n], format!("notice: {text}\n").as_bytes());
        }
        outbox.close();
        task.await.expect("the writer ends");
    }
}
