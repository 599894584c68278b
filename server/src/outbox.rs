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
//!
//! **Writing inline.** Waking a connection's writer task costs more than the write itself
//! when a room trickles one line at a time. So the hub queues a whole delivery pass with
//! [`Outbox::push_deferred`] and then, outside its lock, calls [`Outbox::flush`] once per
//! connection whose queue was idle: a plain TCP connection whose writer is not busy gets the
//! queue written straight to its socket (one non-blocking `writev`), and the writer task is
//! woken only for what the socket did not take. TLS connections always go through their
//! writer. Bytes never interleave: only one side writes at a time, decided under the queue's
//! lock.

use chat_protocol::{ErrorCode, ServerEvent};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
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
    /// Bytes of the front item that [`Outbox::flush`] wrote already: the socket took only
    /// part of it, and the writer sends the rest first.
    front_written: usize,
    /// The writer has taken a batch and is writing it: nobody else may write meanwhile.
    writing: bool,
    /// A plain TCP connection's socket, for [`Outbox::flush`] to write to directly; `None`
    /// for TLS, and once the writer is done.
    direct: Option<Arc<OwnedWriteHalf>>,
}

impl Queue {
    /// Counts `written` bytes from the front as sent.
    fn consume(&mut self, mut written: usize) {
        self.bytes -= written;
        while written > 0 {
            let Some((item, mode)) = self.items.front() else {
                return;
            };
            let left = item.bytes(*mode).map_or(0, <[u8]>::len) - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.front_written = 0;
            self.items.pop_front();
        }
    }

    /// The front item's bytes not written yet.
    fn front(&self) -> Option<&[u8]> {
        unsent(&self.items, self.front_written).next()
    }

    /// Up to [`MAX_BATCH`] items' bytes, the front one without what was written already.
    fn slices(&self) -> Vec<IoSlice<'_>> {
        unsent(&self.items, self.front_written)
            .take(MAX_BATCH)
            .map(IoSlice::new)
            .collect()
    }

    /// Writes what is queued to `socket`, which must not block: one `send` (one `sendmsg`
    /// for several lines), straight on the socket. Going around tokio's readiness tracking
    /// is safe: a `WouldBlock` here leaves tokio thinking the socket writable, and the
    /// writer's next attempt then finds out and waits.
    fn send_now(&mut self, socket: &TcpStream) -> std::io::Result<()> {
        let written = if self.items.len() == 1 {
            send(socket, self.front().unwrap_or_default())
        } else {
            socket2::SockRef::from(socket).send_vectored(&self.slices())
        };
        match written {
            Ok(written) => self.consume(written),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// One `send` of `bytes` on `socket`, which must not block (`MSG_NOSIGNAL`, as socket2's).
///
/// With glibc, made as a plain system call: glibc's `send` is a thread cancellation point
/// and turns asynchronous cancellation on and off around the call, two atomic updates of
/// the thread's state per recipient per line (about 1.5 % of the server's CPU when lines
/// trickle in to many users). This server never cancels a thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn send(socket: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `sendto` reads `bytes.len()` bytes from `bytes`, a live slice, on a socket
    // that `socket` keeps open for the call; no address is passed.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            socket.as_raw_fd(),
            bytes.as_ptr(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn send(socket: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    socket2::SockRef::from(socket).send(bytes)
}

/// The bytes still to send of each item in `items`, whose front one had its first
/// `front_written` bytes sent already.
fn unsent(items: &VecDeque<Item>, front_written: usize) -> impl Iterator<Item = &[u8]> {
    items
        .iter()
        .filter_map(|(item, mode)| item.bytes(*mode))
        .enumerate()
        .map(move |(i, bytes)| match i {
            0 => &bytes[front_written.min(bytes.len())..],
            _ => bytes,
        })
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
        if self.push_deferred(item)? {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Queues `item` like [`push`](Self::push) but leaves the writer asleep. `Ok(true)`: the
    /// queue was empty, and the caller must call [`flush`](Self::flush) once it has queued
    /// what it has (then, not under any lock of its own).
    pub fn push_deferred(&self, item: &Arc<Rendered>) -> Result<bool, Overflow> {
        let mode = self.mode();
        let Some(bytes) = item.bytes(mode) else {
            return Ok(false);
        };
        let len = bytes.len();
        let mut queue = self.shared.lock();
        if self.shared.limit != 0 && queue.bytes + len > self.shared.limit {
            return Err(Overflow);
        }
        queue.bytes += len;
        queue.items.push_back((item.clone(), mode));
        Ok(queue.items.len() == 1)
    }

    /// Sends what [`push_deferred`](Self::push_deferred) queued: straight to the socket if
    /// this is a plain TCP connection and its writer is idle, which saves waking the writer
    /// task; whatever the socket does not take at once (or any TLS connection's lines) is
    /// left to the writer, woken for it.
    pub fn flush(&self) {
        let mut queue = self.shared.lock();
        if queue.items.is_empty() {
            return;
        }
        // (A killed connection's writer drops `direct` as it stops.)
        if !queue.writing
            && let Some(direct) = queue.direct.take()
        {
            let sent = queue.send_now((*direct).as_ref());
            queue.direct = Some(direct);
            if sent.is_err() {
                // The socket failed: the writer ends the connection, as for its own
                // failed writes.
                drop(queue);
                self.shared.kill.cancel();
                return;
            }
            if queue.items.is_empty() {
                return;
            }
        }
        drop(queue);
        self.shared.ready.notify_one();
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

/// A socket's sending side, as the writer takes it.
pub trait SendSide: Send + 'static {
    type Socket: AsyncWrite + Unpin + Send;
    /// Readies the side for `writer`, sharing it with the outbox if it can be written
    /// inline.
    fn attach(self, writer: &Writer) -> Self::Socket;
}

/// A plain connection: shared, so the outbox can write to it inline.
impl SendSide for OwnedWriteHalf {
    type Socket = SharedTcp;
    fn attach(self, writer: &Writer) -> SharedTcp {
        let half = Arc::new(self);
        writer.shared.lock().direct = Some(half.clone());
        SharedTcp(half)
    }
}

/// Any other stream (TLS): its writer task alone writes it.
impl<S: AsyncWrite + Send + 'static> SendSide for WriteHalf<S> {
    type Socket = WriteHalf<S>;
    fn attach(self, _: &Writer) -> WriteHalf<S> {
        self
    }
}

/// A plain connection's sending side, written by the writer task and by [`Outbox::flush`]
/// (which only ever tries a write that cannot block).
#[derive(Debug)]
pub struct SharedTcp(Arc<OwnedWriteHalf>);

impl SharedTcp {
    fn socket(&self) -> &TcpStream {
        (*self.0).as_ref()
    }

    fn poll_try<T>(
        &self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&TcpStream) -> std::io::Result<T>,
    ) -> Poll<std::io::Result<T>> {
        loop {
            ready!(self.socket().poll_write_ready(cx))?;
            // A `WouldBlock` clears the readiness, so the next poll waits for the socket.
            match attempt(self.socket()) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_try(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_try(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let socket = socket2::SockRef::from(self.socket());
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
    }
}

impl Writer {
    /// Writes queued items until the session has closed and the queue is empty, or the
    /// connection is killed, or `shutdown` fires and `flush_grace` has passed, or the session
    /// closed and `farewell_wait` has passed. A killed connection is sent its reason, waiting
    /// at most `farewell_wait` for the client to make room for it.
    pub async fn run<S: SendSide>(
        self,
        side: S,
        shutdown: CancellationToken,
        flush_grace: Duration,
        farewell_wait: Duration,
    ) {
        let mut socket = side.attach(&self);
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
        // From here on only this task writes.
        self.shared.lock().direct = None;
        if !drained && kill.is_cancelled() {
            // Free the backlog now; only the reason is still to be sent.
            {
                let mut queue = self.shared.lock();
                mid_line |= queue.front_written > 0;
                *queue = Queue::default();
            }
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
            let skip = {
                let mut queue = shared.lock();
                if queue.items.len() <= MAX_BATCH {
                    std::mem::swap(&mut queue.items, &mut batch);
                } else {
                    batch.extend(queue.items.drain(..MAX_BATCH));
                }
                // Until it is done, `flush` leaves the socket to this task.
                queue.writing = !batch.is_empty();
                std::mem::take(&mut queue.front_written)
            };
            if skip > 0 {
                // The socket has the start of a line: a farewell would need a line break.
                *mid_line = true;
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
            // `flush` may have sent the start of the front line already.
            let mut slices: Vec<IoSlice<'_>> = unsent(&batch, skip).map(IoSlice::new).collect();
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
            queue.writing = false;
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
        let (_, near) = tokio::io::split(tokio::io::BufWriter::new(near));
        let task = tokio::spawn(writer.run(near, shutdown.clone(), second, second));
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

    #[tokio::test]
    async fn lines_written_inline_and_by_the_writer_arrive_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut far = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (near, _) = listener.accept().await.expect("accept");
        // Small buffers, so that the socket soon takes only part of a flush.
        socket2::SockRef::from(&near)
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        socket2::SockRef::from(&far)
            .set_recv_buffer_size(64 * 1024)
            .expect("SO_RCVBUF");
        near.set_nodelay(true).expect("TCP_NODELAY");
        let (_near_read, near_write) = near.into_split();
        let (outbox, writer) = channel(0);
        let second = Duration::from_secs(1);
        let task = tokio::spawn(writer.run(near_write, CancellationToken::new(), second, second));
        tokio::time::timeout(Duration::from_secs(5), async {
            while outbox.shared.lock().direct.is_none() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer shares the socket");

        // Rounds: a line far bigger than the socket's buffers is flushed inline, so the socket
        // takes only its start and the writer must send the rest; smaller lines follow, some
        // flushed inline, some pushed the usual way. Then the round is read and compared
        // byte for byte.
        for round in 0..10 {
            let mut lines = vec![format!("round {round} {}\n", "x".repeat(200_000))];
            lines.extend(
                (0..50).map(|i| format!("round {round} line {i} {}\n", "y".repeat(i * 37))),
            );
            for (i, pass) in lines.chunks(3).enumerate() {
                let mut idle = false;
                for line in pass {
                    let line = Rendered::preformatted(Some(line.clone()), None);
                    if i % 4 == 3 {
                        outbox.push(&line).expect("unbounded");
                    } else {
                        idle |= outbox.push_deferred(&line).expect("unbounded");
                    }
                }
                if idle {
                    outbox.flush();
                }
            }
            let expected = lines.concat();
            let mut got = vec![0u8; expected.len()];
            tokio::time::timeout(Duration::from_secs(20), far.read_exact(&mut got))
                .await
                .expect("the round arrives")
                .expect("read");
            assert!(got == expected.as_bytes(), "round {round} differs");
        }
        outbox.close();
        task.await.expect("the writer ends");
    }
}
