//! Cluster mode under a reconnect storm: hundreds of JSON clients spread over three nodes
//! each resume at once (`history after SEQ`, paging until `more` is false) across a gap of
//! more than a thousand events, as every user of a restarted node does. Every one must get
//! its whole gap (no `unavailable`, no hole, no repeat), both from the nodes' memory of the
//! recent log and, with that memory off, from the stream itself.

use chat_protocol::{ClientCommand, HELLO_LINE, ServerEvent};
use chat_tests::cluster::{Redis, node_config};
use chat_tests::{TestServer, raise_fd_limit};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Clients resuming at once, spread round-robin over the three nodes.
const CLIENTS: usize = 300;
/// Chat lines said while they were away.
const GAP: u64 = 900;
/// The whole storm must be answered within this (it takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(90);

async fn node(redis: &Redis, id: &str, history_cache: usize) -> TestServer {
    let mut config = node_config(redis, id, Duration::from_secs(10));
    config.max_per_ip = 0;
    if let Some(cluster) = &mut config.cluster {
        cluster.history_cache = history_cache;
    }
    TestServer::with_config(config).await
}

/// A JSON connection read line by line, with no per-line timeout (the storm's deadline
/// bounds it).
struct Json {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Json {
    async fn connect(addr: SocketAddr) -> Json {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (reader, writer) = stream.into_split();
        let mut json = Json {
            reader: BufReader::new(reader),
            writer,
        };
        json.send(HELLO_LINE).await;
        json
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
    }

    /// The next JSON event (the plain lines before the hello took effect are skipped).
    async fn event(&mut self) -> ServerEvent {
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            if let Ok(event) = ServerEvent::parse_json(line.trim_end()) {
                return event;
            }
        }
    }

    /// Reads up to the welcome; returns its seq.
    async fn welcome(&mut self) -> u64 {
        loop {
            if let ServerEvent::Welcome { seq, .. } = self.event().await {
                return seq;
            }
        }
    }
}

/// One client's resume: every seq after `last`, paged, up to at least `welcome`; fails on
/// an error (`unavailable`), a gap, a hole or a repeat.
async fn resume(addr: SocketAddr, last: u64) -> Result<Vec<(u64, String)>, String> {
    let mut client = Json::connect(addr).await;
    let welcome = client.welcome().await;
    let mut after = last;
    let mut got = Vec::new();
    loop {
        let ask = ClientCommand::History {
            before: None,
            after: Some(after),
            limit: Some(500),
        };
        client.send(&ask.to_json()).await;
        let (events, more, gap) = loop {
            match client.event().await {
                ServerEvent::History { events, more, gap } => break (events, more, gap),
                ServerEvent::Error { code, message } => {
                    return Err(format!("after {after}: {code:?}: {message}"));
                }
                _ => {}
            }
        };
        if gap {
            return Err(format!("after {after}: gap"));
        }
        for event in events {
            let seq = event.stamp().map_or(0, |s| s.seq);
            if seq != after + 1 {
                return Err(format!("after {after}: seq {seq}"));
            }
            after = seq;
            if let ServerEvent::Chat { text, .. } = event {
                got.push((seq, text));
            }
        }
        if !more {
            break;
        }
    }
    if after < welcome {
        return Err(format!("stopped at {after}, before its welcome {welcome}"));
    }
    Ok(got)
}

/// One storm at a time: each takes both cores of a small machine for seconds, and two at
/// once would measure the machine rather than the server.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two nodes up; a sender says `GAP` lines; a third node starts (its memory of the log
/// filled from the stream); then `CLIENTS` resume at once from before the gap.
async fn storm(history_cache: usize) {
    let _alone = ONE_AT_A_TIME.lock().await;
    raise_fd_limit();
    let redis = Redis::start();
    let mut nodes = vec![
        node(&redis, "n0", history_cache).await,
        node(&redis, "n1", history_cache).await,
    ];
    let mut sender = Json::connect(nodes[0].addr).await;
    let before = sender.welcome().await;
    let mut lines = String::new();
    for i in 0..GAP {
        let chat = ClientCommand::Chat {
            text: format!("gap line {i}"),
        };
        lines.push_str(&chat.to_json());
        lines.push('\n');
    }
    sender
        .writer
        .write_all(lines.as_bytes())
        .await
        .expect("write");
    let mut said = Vec::new();
    while said.len() < GAP as usize {
        if let ServerEvent::Chat { text, stamp, .. } = sender.event().await {
            said.push((stamp.expect("stamped").seq, text));
        }
    }
    nodes.push(node(&redis, "n2", history_cache).await);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();

    let mut storm = JoinSet::new();
    for i in 0..CLIENTS {
        let addr = addrs[i % addrs.len()];
        storm.spawn(async move { (i, resume(addr, before).await) });
    }
    let outcome = tokio::time::timeout(DEADLINE, async {
        let mut failed = Vec::new();
        while let Some(done) = storm.join_next().await {
            let (i, result) = done.expect("a client task");
            match result {
                Ok(got) => assert_eq!(got, said, "client {i} did not get the gap's lines"),
                Err(e) => failed.push(format!("client {i} on node {}: {e}", i % 3)),
            }
        }
        failed
    })
    .await;
    let failed =
        outcome.unwrap_or_else(|_| panic!("the storm was not answered within {DEADLINE:?}"));
    assert!(
        failed.is_empty(),
        "{} of {CLIENTS} clients failed: {:#?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_on_three_nodes_is_answered_whole_from_memory() {
    storm(chat_server::cluster::recent::DEFAULT_CAPACITY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_on_three_nodes_is_answered_whole_from_the_stream() {
    storm(0).await;
}
