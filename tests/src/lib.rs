//! Helpers for the end-to-end tests: a real `chat-server` on `127.0.0.1:0`, and real TCP
//! clients that read lines with a deadline.
//!
//! The server runs in-process through [`chat_server::run`], the same function the binary
//! calls; what only the binary does (flags, signals) is tested in `server/tests/`.

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
    handle: JoinHandle<std::io::Result<()>>,
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
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
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
            addr,
            reader: BufReader::new(reader),
            writer,
        }
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

/// The `[ADDR]NAME: TEXT` line every user sees.
pub fn said(addr: &str, name: &str, text: &str) -> String {
    format!("[{addr}]{name}: {text}")
}
