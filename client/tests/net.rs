//! The connection task against a real in-process chat-server: JSON mode and `--plain` mode
//! (the original's text, which our server also speaks), without a terminal.

use chat_protocol::{ClientCommand, HELLO_LINE, LeaveReason, ServerEvent};
use chat_tui::net::{self, NetConfig, NetEvent};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, Receiver, UnboundedSender};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start_server() -> (SocketAddr, CancellationToken) {
    start_server_with(chat_server::Config {
        rate: 0.0,
        ..chat_server::Config::default()
    })
    .await
}

async fn start_server_with(config: chat_server::Config) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(chat_server::run(listener, config, shutdown.clone()));
    (addr, shutdown)
}

struct Conn {
    commands: UnboundedSender<ClientCommand>,
    events: Receiver<NetEvent>,
}

impl Conn {
    fn start(addr: SocketAddr, plain: bool) -> Conn {
        Conn::start_with_queue(addr, plain, net::EVENT_QUEUE)
    }

    /// With room for only `queue` events between the connection and the (test) app.
    fn start_with_queue(addr: SocketAddr, plain: bool, queue: usize) -> Conn {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(queue);
        tokio::spawn(net::run(
            NetConfig::new(addr.to_string(), plain),
            command_rx,
            event_tx,
        ));
        Conn { commands, events }
    }

    /// The next event that `pick` accepts, skipping others.
    async fn until<T>(&mut self, what: &str, pick: impl Fn(&NetEvent) -> Option<T>) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("net task alive");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        };
        timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn server_event<T>(&mut self, what: &str, pick: impl Fn(&ServerEvent) -> Option<T>) -> T {
        self.until(what, |e| match e {
            NetEvent::Server(event, _) => pick(event),
            _ => None,
        })
        .await
    }

    fn send(&self, command: ClientCommand) {
        self.commands.send(command).unwrap();
    }
}

#[tokio::test]
async fn json_mode_welcome_chat_who_rename() {
    let (addr, shutdown) = start_server().await;
    let mut json = Conn::start(addr, false);
    json.until("connected", |e| {
        matches!(e, NetEvent::Connected { plain: false }).then_some(())
    })
    .await;
    let me = json
        .server_event("welcome", |e| match e {
            ServerEvent::Welcome { addr, .. } => Some(addr.clone()),
            _ => None,
        })
        .await;
    json.send(ClientCommand::Rename { name: "jay".into() });
    json.server_event("renamed", |e| {
        matches!(e, ServerEvent::Renamed { name } if name == "jay").then_some(())
    })
    .await;
    json.send(ClientCommand::Chat { text: "who".into() });
    let from = json
        .server_event("own chat back, as chat", |e| match e {
            ServerEvent::Chat { addr, text, .. } if text == "who" => Some(addr.clone()),
            _ => None,
        })
        .await;
    assert_eq!(from, me);
    json.send(ClientCommand::Who);
    let users = json
        .server_event("user list", |e| match e {
            ServerEvent::Users { users } => Some(users.clone()),
            _ => None,
        })
        .await;
    assert_eq!(users[0].name, "jay");
    shutdown.cancel();
}

#[tokio::test]
async fn plain_mode_reads_the_original_text() {
    let (addr, shutdown) = start_server().await;
    let mut plain = Conn::start(addr, true);
    plain
        .until("connected", |e| {
            matches!(e, NetEvent::Connected { plain: true }).then_some(())
        })
        .await;
    plain
        .server_event("I am here", |e| {
            matches!(e, ServerEvent::Here { .. }).then_some(())
        })
        .await;
    plain.send(ClientCommand::Rename { name: "pat".into() });
    plain
        .server_event("rename ok, with the name", |e| {
            matches!(e, ServerEvent::Renamed { name } if name == "pat").then_some(())
        })
        .await;
    let mut json = Conn::start(addr, false);
    json.server_event("welcome", |e| {
        matches!(e, ServerEvent::Welcome { .. }).then_some(())
    })
    .await;
    json.send(ClientCommand::Chat {
        text: "hello plain".into(),
    });
    plain
        .server_event("chat from the JSON client", |e| match e {
            ServerEvent::Chat { text, .. } if text == "hello plain" => Some(()),
            _ => None,
        })
        .await;
    plain.send(ClientCommand::Who);
    // The list starts empty and comes one user a line, so a big room costs linear time.
    let start = plain
        .server_event("the list starts", |e| match e {
            ServerEvent::Users { users } => Some(users.clone()),
            _ => None,
        })
        .await;
    assert!(start.is_empty(), "{start:?}");
    let mut users = Vec::new();
    for _ in 0..2 {
        users.push(
            plain
                .until("a listed user", |e| match e {
                    NetEvent::Listed(user) => Some(user.clone()),
                    _ => None,
                })
                .await,
        );
    }
    assert!(users.iter().any(|u| u.name == "pat"), "{users:?}");
    // A chat line the plain server would take for a command is refused, not sent.
    plain.send(ClientCommand::Chat { text: "who".into() });
    plain
        .until("unsendable", |e| {
            matches!(e, NetEvent::Unsendable(ClientCommand::Chat { text }) if text == "who")
                .then_some(())
        })
        .await;
    shutdown.cancel();
}

#[tokio::test]
async fn lost_connection_is_reported_with_a_retry_delay() {
    let (addr, shutdown) = start_server().await;
    let mut conn = Conn::start(addr, false);
    conn.server_event("welcome", |e| {
        matches!(e, ServerEvent::Welcome { .. }).then_some(())
    })
    .await;
    shutdown.cancel();
    let retry = conn
        .until("disconnected", |e| match e {
            NetEvent::Disconnected { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .await;
    // 0.5 s, less up to half of it at random.
    assert!(
        retry >= Duration::from_millis(250) && retry <= Duration::from_millis(500),
        "{retry:?}"
    );
    let attempt = conn
        .until("reconnecting", |e| match e {
            NetEvent::Connecting { attempt } => Some(*attempt),
            _ => None,
        })
        .await;
    assert_eq!(attempt, 2);
    let retry = conn
        .until("second failure backs off", |e| match e {
            NetEvent::Disconnected { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .await;
    assert!(
        retry >= Duration::from_millis(500) && retry <= Duration::from_secs(1),
        "doubled: {retry:?}"
    );
}

/// A JSON-mode connection made by hand: the test's own peer.
async fn raw_json_client(
    addr: SocketAddr,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer
        .write_all(format!("{HELLO_LINE}\n").as_bytes())
        .await
        .unwrap();
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).await.unwrap() > 0, "closed");
        if line.contains("\"type\":\"welcome\"") {
            return (reader, writer);
        }
    }
}

#[tokio::test]
async fn an_app_that_falls_behind_makes_the_connection_stop_reading_so_the_server_drops_it() {
    // A small outgoing queue per connection, so the server gives up on a slow reader soon.
    let (addr, shutdown) = start_server_with(chat_server::Config {
        rate: 0.0,
        sendq_bytes: 64 * 1024,
        ..chat_server::Config::default()
    })
    .await;
    // The "app" never applies anything: 16 events fit, then the connection must wait.
    let mut stalled = Conn::start_with_queue(addr, false, 16);
    let me = stalled
        .server_event("welcome", |e| match e {
            ServerEvent::Welcome { addr, .. } => Some(addr.clone()),
            _ => None,
        })
        .await;
    let (mut reader, mut writer) = raw_json_client(addr).await;
    // The flooder sends 32 lines at a time and reads its own back before sending more (or it
    // would be the slow one), watching for the stalled client's leave.
    let text = "x".repeat(1000);
    let chunk = format!("{}\n", ClientCommand::Chat { text }.to_json()).repeat(32);
    let reason = timeout(DEADLINE, async {
        let mut line = String::new();
        loop {
            writer.write_all(chunk.as_bytes()).await.unwrap();
            let mut echoed = 0;
            while echoed < 32 {
                line.clear();
                assert!(
                    reader.read_line(&mut line).await.unwrap() > 0,
                    "flooder dropped"
                );
                match ServerEvent::parse_json(line.trim_end()) {
                    Ok(ServerEvent::Chat { .. }) => echoed += 1,
                    Ok(ServerEvent::Leave { addr, reason, .. }) if addr == me => return reason,
                    _ => {}
                }
            }
        }
    })
    .await
    .expect("the stalled client was never dropped: is the connection still reading?");
    assert_eq!(reason, LeaveReason::SendqExceeded);
    // The connection held on to at most what the channel has room for.
    assert!(stalled.events.len() <= 16);
    shutdown.cancel();
}

#[tokio::test]
async fn quitting_closes_cleanly_so_the_server_reads_an_end_of_stream_not_a_reset() {
    // A stand-in server that greets, then sends far more than the client reads before it
    // quits (more than any socket buffers hold), and only then reads what the client said.
    // A client that closed with that data unread would have made its kernel answer with a
    // reset: the server's writing would fail, and what it had not read yet would be lost.
    const BURST: usize = 16 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (burst_started_tx, burst_started) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut hello = String::new();
        reader.read_line(&mut hello).await.unwrap();
        assert_eq!(hello.trim_end(), HELLO_LINE);
        let welcome = ServerEvent::Welcome {
            idle_timeout_ms: 0,
            seq: 0,
            version: 1,
            addr: "127.0.0.1:1".into(),
            name: "127.0.0.1:1".into(),
        };
        writer
            .write_all(format!("{}\n", welcome.to_json()).as_bytes())
            .await
            .unwrap();
        let line = ServerEvent::notice(chat_protocol::NoticeCode::Other, "y".repeat(1000));
        let chunk = format!("{}\n", line.to_json()).repeat(256);
        let mut burst_started_tx = Some(burst_started_tx);
        let mut sent = 0;
        while sent < BURST {
            writer
                .write_all(chunk.as_bytes())
                .await
                .map_err(|e| format!("writing failed after {sent} bytes: {e}"))?;
            sent += chunk.len();
            if let Some(tx) = burst_started_tx.take() {
                let _ = tx.send(());
            }
        }
        let mut said = String::new();
        reader
            .read_to_string(&mut said)
            .await
            .map_err(|e| format!("reading failed: {e}"))?;
        Ok::<String, String>(said)
    });
    let mut conn = Conn::start_with_queue(addr, false, 4);
    conn.until("connected", |e| {
        matches!(e, NetEvent::Connected { .. }).then_some(())
    })
    .await;
    timeout(DEADLINE, burst_started).await.unwrap().unwrap();
    conn.send(ClientCommand::Chat { text: "bye".into() });
    // Quit: the app drops both ends, as main does, while the burst is still coming.
    drop(conn);
    let said = timeout(DEADLINE, server)
        .await
        .expect("the stand-in server never finished")
        .unwrap()
        .expect("the client's quit reset the connection");
    assert!(
        said.contains(r#"{"type":"chat","text":"bye"}"#),
        "the last line was written before closing: {said:?}"
    );
}

#[tokio::test]
async fn history_pages_come_through_the_connection_with_their_seqs() {
    let (addr, shutdown) = start_server().await;
    let mut talker = Conn::start(addr, false);
    talker
        .server_event("welcome", |e| {
            matches!(e, ServerEvent::Welcome { .. }).then_some(())
        })
        .await;
    for i in 0..5 {
        talker.send(ClientCommand::Chat {
            text: format!("said {i}"),
        });
    }
    talker
        .server_event("the last line back", |e| match e {
            ServerEvent::Chat { text, .. } if text == "said 4" => Some(()),
            _ => None,
        })
        .await;
    let mut reader = Conn::start(addr, false);
    let welcome_seq = reader
        .server_event("welcome", |e| match e {
            ServerEvent::Welcome { seq, .. } => Some(*seq),
            _ => None,
        })
        .await;
    // The newest 4: three chat lines and the reader's own join.
    reader.send(ClientCommand::History {
        before: None,
        after: None,
        limit: Some(4),
    });
    let history = |e: &ServerEvent| match e {
        ServerEvent::History { events, more, gap } => Some((events.clone(), *more, *gap)),
        _ => None,
    };
    let (page, more, gap) = reader.server_event("the last page", history).await;
    let texts: Vec<String> = page
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Chat { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["said 2", "said 3", "said 4"]);
    assert!(more && !gap);
    assert!(
        matches!(page.last(), Some(ServerEvent::Join { .. })),
        "{page:?}"
    );
    let seqs: Vec<u64> = page
        .iter()
        .filter_map(|e| e.stamp())
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs.len(), 4, "every event stamped");
    assert!(
        seqs[..3].iter().all(|&seq| seq <= welcome_seq),
        "the welcome's seq covers what was said before it: {seqs:?} vs {welcome_seq}"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    // The page before it, by the oldest seq held.
    reader.send(ClientCommand::History {
        before: Some(seqs[0]),
        after: None,
        limit: Some(500),
    });
    let (older, more, _) = reader.server_event("the page before", history).await;
    assert!(!more, "that is all of it");
    assert!(
        older
            .iter()
            .all(|e| e.stamp().is_some_and(|s| s.seq < seqs[0]))
    );
    assert!(
        older
            .iter()
            .any(|e| matches!(e, ServerEvent::Chat { text, .. } if text == "said 0"))
    );
    // And what came after a seq, as after a reconnect.
    reader.send(ClientCommand::History {
        before: None,
        after: Some(seqs[0]),
        limit: Some(500),
    });
    let (newer, more, gap) = reader.server_event("the events after", history).await;
    assert_eq!(newer, page[1..].to_vec());
    assert!(!more && !gap);
    shutdown.cancel();
}
