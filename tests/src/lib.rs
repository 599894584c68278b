//! Helpers for the end-to-end tests: a real `chat-server` on `127.0.0.1:0`, and real TCP
//! clients that read lines with a deadline.
//!
//! The server runs in-process through [`chat_server::run`], the same function the binary
//! calls. [`ServerProcess`] runs the built binary instead, for what only it does (flags,
//! signals) and for measuring its memory: `tests/binary.rs`, `tests/process.rs`.

pub mod cluster;

use chat_protocol::{ClientCommand, HELLO_LINE, ServerEvent};
use chat_server::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single expected event may take before a test fails. Generous, because the
/// machine is shared and noisy; a passing test never waits this long.
pub const STEP: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Starts a server with the default limits, except no flood limit.
    pub async fn start() -> TestServer {
        TestServer::with_config(Config {
            rate: 0.0,
            ..Config::default()
        })
        .await
    }

    pub async fn with_config(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(chat_server::run(listener, config, shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            handle,
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Connects and reads past this client's own `login` and `I am here`.
    pub async fn join(&self) -> Client {
        let mut client = self.connect().await;
        let me = client.addr.clone();
        client.expect(&format!("[{me}]{me}: login")).await;
        client.expect(&format!("[{me}]{me}: I am here")).await;
        client
    }

    /// Connects in JSON mode and reads up to the welcome.
    pub async fn join_json(&self) -> Client {
        let mut client = self.connect().await;
        client.send(HELLO_LINE).await;
        loop {
            let line = client.line().await;
            if let Ok(ServerEvent::Welcome { .. }) = ServerEvent::parse_json(&line) {
                return client;
            }
        }
    }

    /// Cancels the server and waits (bounded) for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.handle)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("server run");
    }
}

/// A plain TCP client, like nc.
pub struct Client {
    /// This client's address as the server sees it: the `ADDR` in its lines.
    pub addr: String,
    lines: Lines,
    writer: OwnedWriteHalf,
}

/// The reading side of a [`Client`]: lines with a deadline.
pub struct Lines {
    pub addr: String,
    reader: BufReader<OwnedReadHalf>,
}

impl Client {
    pub async fn connect(server: SocketAddr) -> Client {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(server))
            .await
            .expect("connect in time")
            .expect("connect");
        let addr = stream.local_addr().expect("local addr").to_string();
        let (reader, writer) = stream.into_split();
        Client {
            addr: addr.clone(),
            lines: Lines {
                addr,
                reader: BufReader::new(reader),
            },
            writer,
        }
    }

    /// Splits off the reading side, for tests that read in one task and write in another.
    pub fn split(self) -> (Lines, OwnedWriteHalf) {
        (self.lines, self.writer)
    }

    /// The socket itself, for tests that end it in unusual ways.
    pub fn into_stream(self) -> TcpStream {
        self.lines
            .reader
            .into_inner()
            .reunite(self.writer)
            .expect("halves of one stream")
    }

    /// Sends `line` and a `\n`.
    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    pub async fn send_json(&mut self, command: &ClientCommand) {
        self.send(&command.to_json()).await;
    }

    /// Sends bytes as they are, in one write.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// Closes the sending half, as nc does at the end of its input with `-N`.
    pub async fn shutdown_write(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }

    pub async fn line(&mut self) -> String {
        self.lines.line().await
    }

    pub async fn try_line(&mut self) -> Option<String> {
        self.lines.try_line().await
    }

    pub async fn expect(&mut self, expected: &str) {
        self.lines.expect(expected).await
    }

    pub async fn skip_until(&mut self, expected: &str) -> Vec<String> {
        self.lines.skip_until(expected).await
    }

    pub async fn event(&mut self) -> ServerEvent {
        self.lines.event().await
    }

    /// Reads lines until one starts with `prefix`, returning it.
    pub async fn skip_until_prefix(&mut self, prefix: &str) -> String {
        loop {
            let line = self.line().await;
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    pub async fn expect_closed(&mut self) -> Vec<String> {
        self.lines.expect_closed().await
    }

    /// Reads lines until one starts with any of `prefixes`, returning it.
    pub async fn skip_until_prefix_any(&mut self, prefixes: &[&str]) -> String {
        loop {
            let line = self.line().await;
            if prefixes.iter().any(|p| line.starts_with(p)) {
                return line;
            }
        }
    }

    /// Sends `who` and returns the listed `ADDR:NAME` entries, reading past anything before
    /// the list.
    pub async fn who(&mut self) -> Vec<String> {
        self.send("who").await;
        self.skip_until("user list:").await;
        let mut entries = Vec::new();
        // The list has no end marker, so send a request with a known answer behind it (an
        // empty rename is always refused): the list ends where that answer starts.
        self.send("rename|").await;
        loop {
            let line = self.line().await;
            if line.starts_with("error: rename refused") {
                return entries;
            }
            entries.push(line);
        }
    }
}

impl Lines {
    /// The next line, without its `\n`, as lossy UTF-8. Panics on EOF or after [`STEP`].
    pub async fn line(&mut self) -> String {
        self.try_line()
            .await
            .unwrap_or_else(|| panic!("{}: connection closed while a line was expected", self.addr))
    }

    /// The next line, or `None` at EOF. Panics after [`STEP`].
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(STEP, self.reader.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("{}: no line within {STEP:?}", self.addr))
            .expect("read");
        if n == 0 {
            return None;
        }
        assert_eq!(
            buf.pop(),
            Some(b'\n'),
            "{}: line without newline at EOF",
            self.addr
        );
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Asserts that the next line is exactly `expected`.
    pub async fn expect(&mut self, expected: &str) {
        let line = self.line().await;
        assert_eq!(line, expected, "{}: unexpected line", self.addr);
    }

    /// Reads lines until one equals `expected`, returning those skipped.
    pub async fn skip_until(&mut self, expected: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let line = self.line().await;
            if line == expected {
                return skipped;
            }
            skipped.push(line);
        }
    }

    /// The next JSON event.
    pub async fn event(&mut self) -> ServerEvent {
        let line = self.line().await;
        ServerEvent::parse_json(&line)
            .unwrap_or_else(|e| panic!("{}: not a JSON event: {line:?}: {e}", self.addr))
    }

    /// Asserts the server closes the connection (after any remaining lines, returned).
    pub async fn expect_closed(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Some(line) = self.try_line().await {
            rest.push(line);
        }
        rest
    }
}

/// `event` without its seq and ts, for comparing with an expected event.
pub fn unstamped(mut event: ServerEvent) -> ServerEvent {
    if let ServerEvent::Join { stamp, .. }
    | ServerEvent::Chat { stamp, .. }
    | ServerEvent::Leave { stamp, .. }
    | ServerEvent::Rename { stamp, .. } = &mut event
    {
        *stamp = None;
    }
    event
}

/// The `[ADDR]NAME: TEXT` line every user sees.
pub fn said(addr: &str, name: &str, text: &str) -> String {
    format!("[{addr}]{name}: {text}")
}

/// The real `chat-server` binary, in its own process (so its memory can be measured and
/// it can be sent signals). Killed when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Holds the room log's file (unless the test chose its own `--history-db`); removed
    /// when the test ends.
    pub dir: tempfile::TempDir,
}

/// Builds the `chat-server` binary of this workspace (a no-op when `cargo test --workspace`
/// already did) and returns its path.
pub fn server_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Test executables live in target/<profile>/deps; binaries one level up.
            let exe = std::env::current_exe().expect("current exe");
            let dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target dir");
            let mut build = std::process::Command::new(env!("CARGO"));
            build.args([
                "build",
                "--quiet",
                "-p",
                "chat-server",
                "--bin",
                "chat-server",
            ]);
            if dir.ends_with("release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p chat-server failed");
            dir.join("chat-server")
        })
        .clone()
}

impl ServerProcess {
    /// Starts `chat-server --listen 127.0.0.1:0 ARGS` and reads the bound address from its log.
    /// The room log is on disk as by default, in a directory of the test's own, unless ARGS
    /// name a `--history-db`.
    pub fn start(args: &[&str]) -> ServerProcess {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut command = std::process::Command::new(server_binary());
        command.args(["--listen", "127.0.0.1:0"]).args(args);
        if !args.contains(&"--history-db") {
            command
                .arg("--history-db")
                .arg(dir.path().join("history.sqlite3"));
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start chat-server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(STEP)
            .expect("the server logs its address")
            .parse()
            .expect("a socket address");
        ServerProcess { child, addr, dir }
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Sends SIGTERM; the returned task resolves with the exit status.
    pub fn exit_on_sigterm(mut self) -> JoinHandle<std::io::Result<std::process::ExitStatus>> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        tokio::task::spawn_blocking(move || self.child.wait())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this process's open-file limit, for tests that hold thousands of sockets.
pub fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// How far every reader has got with one sender's messages.
struct Progress {
    /// Messages received from this sender, per reader.
    per_reader: std::sync::Mutex<Vec<usize>>,
    changed: tokio::sync::Notify,
}

impl Progress {
    fn new(readers: usize) -> Progress {
        Progress {
            per_reader: std::sync::Mutex::new(vec![0; readers]),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn slowest(&self) -> usize {
        let counts = self.per_reader.lock().expect("progress lock");
        counts.iter().copied().min().unwrap_or(0)
    }

    fn received(&self, reader: usize) {
        self.per_reader.lock().expect("progress lock")[reader] += 1;
        self.changed.notify_waiters();
    }

    /// Resolves once every reader has received at least `count` messages.
    async fn wait_for(&self, count: usize) {
        loop {
            let changed = self.changed.notified();
            if self.slowest() >= count {
                return;
            }
            changed.await;
        }
    }
}

/// What one client of [`exchange`] received.
pub struct Received {
    /// Every test message, as `(sender, seq)`, in arrival order.
    pub messages: Vec<(usize, usize)>,
    /// Every other line, in arrival order.
    pub others: Vec<String>,
}

/// `senders` clients each broadcast `each` messages of about `size` bytes, keeping at most
/// `window` of their own in flight (sent but not yet received by every one of them), while
/// reading everything. Pacing by the slowest reader keeps the test's own clients from
/// falling behind far enough to be dropped as slow consumers.
/// Returns, per client, every message it received as `(sender, seq)`, in order, and every
/// other line it received meanwhile.
pub async fn exchange(
    server: SocketAddr,
    senders: usize,
    each: usize,
    size: usize,
    window: usize,
) -> Vec<Received> {
    exchange_across(&[server], senders, each, size, window).await
}

/// [`exchange`] with the clients spread over several servers (the nodes of a cluster):
/// client `i` connects to `servers[i % servers.len()]`.
pub async fn exchange_across(
    servers: &[SocketAddr],
    senders: usize,
    each: usize,
    size: usize,
    window: usize,
) -> Vec<Received> {
    let mut clients = Vec::new();
    for i in 0..senders {
        clients.push(Client::connect(servers[i % servers.len()]).await);
    }
    // Wait until every client is in the room, so no message races a join. (Sessions join
    // in whatever order the server gets to them, not necessarily in connect order.)
    let addrs: Vec<String> = clients.iter().map(|c| c.addr.clone()).collect();
    for client in &mut clients {
        loop {
            let users = client.who().await;
            let all_in = addrs.iter().all(|a| {
                users
                    .iter()
                    .any(|u| u.split_once(':').is_some() && u.starts_with(&format!("{a}:")))
            });
            if all_in {
                break;
            }
        }
    }
    let padding = "x".repeat(size.saturating_sub(20));
    // Per sender: how many of its messages the slowest reader has received.
    let progress: std::sync::Arc<Vec<Progress>> =
        std::sync::Arc::new((0..senders).map(|_| Progress::new(senders)).collect());
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(me, client)| {
            let padding = padding.clone();
            let addrs = addrs.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let (Lines { reader, .. }, mut writer) = client.split();
                let pace = progress.clone();
                let send = tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for seq in 0..each {
                        pace[me].wait_for(seq.saturating_sub(window)).await;
                        buf.clear();
                        buf.extend_from_slice(format!("m {me} {seq} {padding}\n").as_bytes());
                        writer.write_all(&buf).await.expect("send");
                    }
                    writer
                });
                let mut reader = reader;
                let mut got = Vec::with_capacity(each * senders);
                let mut others = Vec::new();
                let mut line = Vec::new();
                while got.len() < each * senders {
                    line.clear();
                    let n = tokio::time::timeout(STEP, reader.read_until(b'\n', &mut line))
                        .await
                        .expect("a message within the step")
                        .expect("read");
                    assert!(n > 0, "{}: closed after {} messages", addrs[me], got.len());
                    let text = String::from_utf8_lossy(&line);
                    let Some((_, body)) = text.split_once(": m ") else {
                        others.push(text.trim_end().to_string());
                        continue;
                    };
                    let mut parts = body.split(' ');
                    let (Some(from), Some(seq)) = (parts.next(), parts.next()) else {
                        continue;
                    };
                    let (from, seq): (usize, usize) =
                        (from.parse().expect("sender"), seq.parse().expect("seq"));
                    progress[from].received(me);
                    got.push((from, seq));
                }
                let _writer = send.await.expect("sender task");
                Received {
                    messages: got,
                    others,
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("client task"));
    }
    all
}

/// Asserts every client got every message of every sender exactly once, and all in the
/// same order: the server has one total order of messages.
pub fn assert_complete(received: &[Received], senders: usize, each: usize) {
    for (client, Received { messages: got, .. }) in received.iter().enumerate() {
        let mut next = vec![0; senders];
        for &(from, seq) in got {
            assert_eq!(
                seq, next[from],
                "client {client}: from {from} got {seq}, wanted {}",
                next[from]
            );
            next[from] += 1;
        }
        assert!(next.iter().all(|&n| n == each), "client {client}: {next:?}");
        let first = &received[0].messages;
        if let Some(at) = (0..got.len()).find(|&i| got[i] != first[i]) {
            panic!("clients 0 and {client} differ in order at message {at}");
        }
    }
}
