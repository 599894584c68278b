//! Connecting one benchmark client to a target and waiting until it has joined.
//!
//! "Joined" means the target has registered the client for broadcasts:
//! - chat-server plain and the Go original: the client read its own `[ADDR]NAME: I am here`;
//! - chat-server JSON: the client sent the hello line and read `welcome`;
//! - redis: the client's SUBSCRIBE was confirmed (the `:1` count of the reply).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::wire::{LineBuffer, REDIS_CHANNEL, Target};

/// A joined client: its receiving side and where it writes.
pub struct Joined {
    pub reader: OwnedReadHalf,
    /// Whatever arrived after the join line, not yet read.
    pub lines: LineBuffer,
    /// The join line itself (JSON mode: the `welcome`, with `seq` and `idle_timeout_ms`).
    pub join_line: Vec<u8>,
    pub outgoing: Outgoing,
}

/// The writing side of a joined client.
pub struct Outgoing {
    /// The write half of the receiving connection. Kept open even where unused (redis):
    /// dropping it would half-close the connection and the server would drop the client.
    pub writer: OwnedWriteHalf,
    /// Redis only: a second connection for PUBLISH, since a subscribed RESP2 connection may
    /// only (un)subscribe.
    pub publisher: Option<Publisher>,
}

/// A redis connection that publishes; a task reads and discards the `:N` replies.
pub struct Publisher {
    pub writer: OwnedWriteHalf,
    drain: JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl Outgoing {
    /// Where this client's chat lines go.
    pub fn sender(&mut self) -> &mut OwnedWriteHalf {
        match &mut self.publisher {
            Some(publisher) => &mut publisher.writer,
            None => &mut self.writer,
        }
    }
}

/// How to connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// SO_RCVBUF before connecting: a small one makes a slow reader's backlog land in the
    /// server instead of in our kernel buffers.
    pub recv_buffer: Option<u32>,
    /// Redis: open a publishing connection too.
    pub publisher: bool,
}

async fn connect_socket(addr: SocketAddr, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket.connect(addr).await?;
    // Single lines (latency scenario) must leave at once, not wait for Nagle.
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn is_join_line(target: Target, line: &[u8]) -> bool {
    match target {
        Target::Chat | Target::Go => line.ends_with(b": I am here"),
        Target::ChatJson => line.starts_with(br#"{"type":"welcome""#),
        Target::Redis => line.starts_with(b":"),
    }
}

/// Connects to `addr` and returns once the target has joined the client.
pub async fn connect_and_join(
    target: Target,
    addr: SocketAddr,
    options: ConnectOptions,
) -> anyhow::Result<Joined> {
    let stream = connect_socket(addr, options.recv_buffer)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut reader, mut writer) = stream.into_split();
    match target {
        Target::ChatJson => {
            let hello = format!("{}\n", chat_protocol::HELLO_LINE);
            writer.write_all(hello.as_bytes()).await?;
        }
        Target::Redis => {
            let subscribe = format!(
                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n",
                REDIS_CHANNEL.len(),
                REDIS_CHANNEL
            );
            writer.write_all(subscribe.as_bytes()).await?;
        }
        Target::Chat | Target::Go => {}
    }
    let mut lines = LineBuffer::new();
    let join_line = 'joining: loop {
        while let Some(line) = lines.next_line() {
            if is_join_line(target, line) {
                break 'joining line.to_vec();
            }
            if line.starts_with(b"error: ") || line.starts_with(b"-ERR") {
                bail!("refused: {}", String::from_utf8_lossy(line));
            }
        }
        if lines.fill(&mut reader).await.context("reading the join")? == 0 {
            bail!("the server closed the connection before the join");
        }
    };
    let publisher = if target == Target::Redis && options.publisher {
        let stream = connect_socket(addr, None).await?;
        let (mut replies, writer) = stream.into_split();
        let drain = tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut replies, &mut sink).await;
        });
        Some(Publisher { writer, drain })
    } else {
        None
    };
    Ok(Joined {
        reader,
        lines,
        join_line,
        outgoing: Outgoing { writer, publisher },
    })
}
