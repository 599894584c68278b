//! Helpers for the end-to-end tests: a real `chat-server` on `127.0.0.1:0`, and real TCP
//! clients that read lines with a deadline.
//!
//! The server runs in-process through [`chat_server::run`], the same function the binary
//! calls. [`ServerProcess`] runs the built binary instead, for what only it does (flags,
//! signals) and for measuring its memory: `tests/binary.rs`, `tests/process.rs`.
//!
//! For TLS, [`TestCa`] makes a private certificate authority and server certificates with
//! rcgen, in the test, and [`Client`] works over a TLS stream as over TCP. [`scrape`] and
//! [`http_get`] read the metrics endpoint.

pub mod cluster;

use chat_protocol::{ClientCommand, HELLO_LINE, ServerEvent};
use chat_server::Config;
use chat_server::tls::Certs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

/// How long any single expected event may take before a test fails. Generous, because the
/// machine is shared and noisy; a passing test never waits this long.
pub const STEP: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The TLS address, for servers started with [`TestServer::with_tls`].
    pub tls_addr: Option<SocketAddr>,
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
            tls_addr: None,
            shutdown,
            handle,
        }
    }

    /// A server listening for plain and TLS connections, with `certs` on the TLS side.
    pub async fn with_tls(config: Config, certs: Arc<Certs>) -> TestServer {
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0")
        };
        let (listener, tls) = (bind().await, bind().await);
        let addr = listener.local_addr().expect("local addr");
        let tls_addr = tls.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let server = chat_server::Server::open(config)
            .expect("open the server")
            .with_tls(tls, certs);
        let handle = tokio::spawn(server.run(listener, shutdown.clone()));
        TestServer {
            addr,
            tls_addr: Some(tls_addr),
            shutdown,
            handle,
        }
    }

    /// Connects to the TLS address, trusting `ca`.
    pub async fn connect_tls(&self, ca: &TestCa) -> TlsClient {
        let addr = self.tls_addr.expect("a server started with_tls");
        Client::connect_tls(addr, &ca.connector())
            .await
            .expect("TLS handshake")
    }

    /// Connects over TLS and reads past this client's own `login` and `I am here`.
    pub async fn join_tls(&self, ca: &TestCa) -> TlsClient {
        let mut client = self.connect_tls(ca).await;
        let me = client.addr.clone();
        client.expect(&format!("[{me}]{me}: login")).await;
        client.expect(&format!("[{me}]{me}: I am here")).await;
        client
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

/// A client, like nc: over plain TCP by default, or over TLS ([`TlsClient`]).
pub struct Client<R = OwnedReadHalf, W = OwnedWriteHalf> {
    /// This client's address as the server sees it: the `ADDR` in its lines.
    pub addr: String,
    lines: Lines<R>,
    writer: W,
    /// The certificate a TLS server presented (DER); empty over plain TCP.
    server_certificate: Vec<u8>,
}

/// The reading side of a [`Client`]: lines with a deadline.
pub struct Lines<R = OwnedReadHalf> {
    pub addr: String,
    reader: BufReader<R>,
}

/// A TLS client stream.
pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A client like `ncat --ssl`.
pub type TlsClient = Client<ReadHalf<TlsStream>, WriteHalf<TlsStream>>;

impl TlsClient {
    /// Connects and completes a TLS handshake for `localhost`, verifying with `connector`.
    /// The error is the handshake's (a certificate the connector does not trust, say).
    pub async fn connect_tls(
        server: SocketAddr,
        connector: &TlsConnector,
    ) -> std::io::Result<TlsClient> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(server))
            .await
            .expect("connect in time")
            .expect("connect");
        TlsClient::over(stream, connector).await
    }

    /// Completes a TLS handshake for `localhost` on a connected `stream`.
    pub async fn over(stream: TcpStream, connector: &TlsConnector) -> std::io::Result<TlsClient> {
        let addr = stream.local_addr().expect("local addr").to_string();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
        let tls = tokio::time::timeout(STEP, connector.connect(name, stream))
            .await
            .expect("TLS handshake in time")?;
        let server_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.as_ref().to_vec())
            .unwrap_or_default();
        let (reader, writer) = tokio::io::split(tls);
        Ok(Client {
            addr: addr.clone(),
            lines: Lines {
                addr,
                reader: BufReader::new(reader),
            },
            writer,
            server_certificate,
        })
    }

    /// The certificate the server presented.
    pub fn server_certificate(&self) -> &[u8] {
        &self.server_certificate
    }
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
            server_certificate: Vec::new(),
        }
    }

    /// The socket itself, for tests that end it in unusual ways.
    pub fn into_stream(self) -> TcpStream {
        self.lines
            .reader
            .into_inner()
            .reunite(self.writer)
            .expect("halves of one stream")
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Client<R, W> {
    /// Splits off the reading side, for tests that read in one task and write in another.
    pub fn split(self) -> (Lines<R>, W) {
        (self.lines, self.writer)
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
        // A TLS stream may hold bytes back until flushed; a TCP half sends at once.
        self.writer.flush().await.expect("flush");
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

impl<R: AsyncRead + Unpin> Lines<R> {
    /// The next line, without its `\n`, as lossy UTF-8. Panics on EOF or after [`STEP`].
    pub async fn line(&mut self) -> String {
        self.try_line()
            .await
            .unwrap_or_else(|| panic!("{}: connection closed while a line was expected", self.addr))
    }

    /// The next line, or `None` at EOF. Panics after [`STEP`].
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(STEP, self.reader.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("{}: no line within {STEP:?}", self.addr));
        let n = match read {
            // TLS without its close_notify: still the end of the stream.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => 0,
            read => read.expect("read"),
        };
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
    /// Where it listens for TLS, if `--tls-listen` was given.
    pub tls_addr: Option<SocketAddr>,
    /// Where it serves metrics, if `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
    /// Its log lines (stderr) after the one that says where it listens.
    log: std::sync::mpsc::Receiver<String>,
    /// Its log lines up to that one: what it did at start.
    pub startup_log: Vec<String>,
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
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let after = |line: &str, marker: &str| -> Option<SocketAddr> {
            let addr = line.split(marker).nth(1)?;
            Some(addr.trim().parse().expect("a socket address"))
        };
        let (mut tls_addr, mut metrics_addr) = (None, None);
        let mut startup_log = Vec::new();
        // The TLS and metrics addresses are logged before the plain one.
        let addr = loop {
            let line = log.recv_timeout(STEP).expect("the server logs its address");
            startup_log.push(line.clone());
            tls_addr = tls_addr.or_else(|| after(&line, "listening for TLS on "));
            metrics_addr = metrics_addr.or_else(|| after(&line, "serving metrics on "));
            if let Some(addr) = after(&line, "listening on ") {
                break addr;
            }
        };
        ServerProcess {
            child,
            addr,
            tls_addr,
            metrics_addr,
            log,
            startup_log,
            dir,
        }
    }

    /// Waits (at most [`STEP`]) for a log line containing `needle` and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?} within {STEP:?}: {e}"),
            }
        }
    }

    /// Sends the process a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
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

/// A private certificate authority made for one test, and server certificates it signs for
/// `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA's certificate, PEM: what a client is told to trust (`--tls-ca`).
    pub cert_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A new server certificate and key, PEM, for `localhost` and `127.0.0.1`.
    pub fn server_pem(&self) -> (String, String) {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a new server certificate and key as `NAME.crt` and `NAME.key` in `dir`.
    pub fn write_server_files(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.server_pem();
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert).expect("write the certificate");
        std::fs::write(&key_path, key).expect("write the key");
        (cert_path, key_path)
    }

    /// The server's [`Certs`], from new files in `dir`.
    pub fn server_certs(&self, dir: &Path) -> Arc<Certs> {
        let (cert, key) = self.write_server_files(dir, "server");
        Certs::load(&cert, &key).expect("load the test certificate")
    }

    /// Writes the CA certificate as `NAME` in `dir` (for `chat-tui --tls-ca`).
    pub fn write_ca_file(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).expect("write the CA certificate");
        path
    }

    /// A TLS client configuration that trusts this CA only.
    pub fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).expect("a trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// One HTTP/1.1 GET (or another `method`) of `path`: the status code and the body.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        String::from_utf8(response).expect("UTF-8")
    };
    let response = tokio::time::timeout(STEP, exchange)
        .await
        .expect("an HTTP answer in time");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// `GET path`.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

/// The metrics, scraped: `name{labels}` (as Prometheus prints it) to value.
pub async fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}
