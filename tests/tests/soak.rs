//! A bounded soak test: hundreds of clients doing a random mix of chat, `who`, rename,
//! reconnect and idling (some long enough to time out). Afterwards: nothing panicked, `who`
//! lists exactly the live connections, and every connection received exactly the slice of
//! the one global message order that was sent while it was in the room, in that order.
//!
//! `SOAK_SECS` sets the length (default 20 s) and `SOAK_CLIENTS` the crowd (default 200).
//!
//! `cluster_soak` runs the same crowd over three cluster nodes on a real Redis, each
//! reconnection going to the next node, and checks the same invariants across them.

use chat_server::Config;
use chat_tests::{Client, STEP, TestServer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic PRNG (xorshift), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A message id: (client, seq).
type Msg = (u64, u64);

/// Parses the test's chat text `s CLIENT SEQ` out of a broadcast line.
fn message(line: &str) -> Option<Msg> {
    let (_, body) = line.split_once(": s ")?;
    let (client, seq) = body.split_once(' ')?;
    Some((client.parse().ok()?, seq.parse().ok()?))
}

/// One connection's life: what it received, in order.
struct Connection {
    addr: String,
    received: Vec<Msg>,
}

/// A live connection: the writer half and the task reading it.
struct Live {
    client_addr: String,
    writer: OwnedWriteHalf,
    echoes: mpsc::UnboundedReceiver<u64>,
    reader: tokio::task::JoinHandle<Vec<Msg>>,
}

/// The servers users connect to: the one server, or a cluster's nodes.
#[derive(Clone)]
struct Servers(std::sync::Arc<Vec<SocketAddr>>);

impl Servers {
    /// The server for `me`'s `nth` connection: each reconnection goes to the next one.
    fn pick(&self, me: u64, nth: u64) -> SocketAddr {
        self.0[((me + nth) % self.0.len() as u64) as usize]
    }
}

async fn connect(server: SocketAddr, me: u64) -> Live {
    connect_client(Client::connect(server).await, me)
}

fn connect_client(client: Client, me: u64) -> Live {
    let addr = client.addr.clone();
    let (reader, writer) = client.split();
    let (tx, echoes) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut reader = reader;
        let mut received = Vec::new();
        while let Some(line) = reader.try_line().await {
            if let Some((from, seq)) = message(&line) {
                if from == me {
                    let _ = tx.send(seq);
                }
                received.push((from, seq));
            }
        }
        received
    });
    Live {
        client_addr: addr,
        writer,
        echoes,
        reader,
    }
}

impl Live {
    async fn send(&mut self, line: &str) {
        // A write may fail if the server just dropped us for idling; the next step notices.
        let _ = self.writer.write_all(format!("{line}\n").as_bytes()).await;
    }

    /// Waits until our own message `seq` has come back (or the connection died).
    async fn echo_of(&mut self, seq: u64) -> bool {
        while let Some(got) = tokio::time::timeout(STEP, self.echoes.recv())
            .await
            .expect("echo within the step")
        {
            if got == seq {
                return true;
            }
        }
        false
    }

    async fn close(self) -> Connection {
        drop(self.writer);
        Connection {
            addr: self.client_addr,
            received: self.reader.await.expect("reader task"),
        }
    }
}

/// What one simulated user leaves behind.
struct User {
    me: u64,
    done: Vec<Connection>,
    live: Live,
    name: String,
    seq: u64,
}

/// One simulated user. Returns every connection it had and its final one.
async fn user(servers: Servers, me: u64, until: Instant) -> User {
    let mut nth = 0;
    let mut server = move || {
        nth += 1;
        servers.pick(me, nth)
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (me + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut done = Vec::new();
    let mut live = connect(server(), me).await;
    let mut name = live.client_addr.clone();
    let (mut seq, mut renames) = (0, 0);
    while Instant::now() < until {
        match rng.below(100) {
            0..=59 => {
                live.send(&format!("s {me} {seq}")).await;
                seq += 1;
            }
            60..=69 => live.send("who").await,
            70..=77 => {
                renames += 1;
                name = format!("u{me}r{renames}");
                live.send(&format!("rename|{name}")).await;
            }
            78..=85 => {
                // Reconnect, once everything sent so far is known to be in the room.
                live.send(&format!("s {me} {seq}")).await;
                live.echo_of(seq).await;
                seq += 1;
                done.push(live.close().await);
                live = connect(server(), me).await;
                name = live.client_addr.clone();
            }
            86..=97 => {
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            }
            _ => {
                // Idle past the timeout: the server drops us; come back.
                tokio::time::sleep(IDLE_TIMEOUT + Duration::from_millis(300)).await;
                done.push(live.close().await);
                live = connect(server(), me).await;
                name = live.client_addr.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
    }
    User {
        me,
        done,
        live,
        name,
        seq,
    }
}

impl User {
    /// Makes sure the final connection is alive (it may have idled out while others were
    /// finishing) and that everything it sent has arrived.
    async fn settle(mut self, servers: Servers) -> User {
        let (me, seq) = (self.me, self.seq);
        self.live.send(&format!("s {me} {seq}")).await;
        if !self.live.echo_of(seq).await {
            self.done.push(self.live.close().await);
            self.live = connect(servers.pick(me, 0), me).await;
            self.name = self.live.client_addr.clone();
        }
        self.seq += 1;
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    chat_tests::raise_fd_limit();
    let secs = env_or("SOAK_SECS", 20);
    let clients = env_or("SOAK_CLIENTS", 200);
    let server = TestServer::with_config(Config {
        idle_timeout: IDLE_TIMEOUT,
        ..Config::unlimited()
    })
    .await;
    run(&[&server], secs, clients).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_soak() {
    chat_tests::raise_fd_limit();
    let secs = env_or("SOAK_SECS", 15);
    let clients = env_or("SOAK_CLIENTS", 150);
    let redis = chat_tests::cluster::Redis::start();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            TestServer::with_config(Config {
                idle_timeout: IDLE_TIMEOUT,
                cluster: Some(redis.node(&format!("n{i}"), Duration::from_secs(10))),
                ..Config::unlimited()
            })
            .await,
        );
    }
    run(&nodes.iter().collect::<Vec<_>>(), secs, clients).await;
    for node in nodes {
        node.stop().await;
    }
}

/// `clients` users for `secs` seconds over `nodes`; then the checks.
async fn run(nodes: &[&TestServer], secs: u64, clients: u64) {
    let servers = Servers(std::sync::Arc::new(nodes.iter().map(|n| n.addr).collect()));
    let server = nodes[0];
    // The observer stays for the whole run and sees the global order. It keeps itself alive
    // with `who`, which also exercises `who` under load.
    // It must be in the room before anyone else speaks: a session's join is not ordered by
    // when its TCP connection was accepted, so wait for its own `I am here`.
    let mut observer = {
        let mut client = Client::connect(server.addr).await;
        let me = client.addr.clone();
        client.skip_until(&format!("[{me}]{me}: I am here")).await;
        connect_client(client, u64::MAX)
    };
    let observer_addr = observer.client_addr.clone();
    let until = Instant::now() + Duration::from_secs(secs);
    let users: Vec<_> = (0..clients)
        .map(|me| tokio::spawn(user(servers.clone(), me, until)))
        .collect();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let keep_alive = tokio::spawn(async move {
        loop {
            observer.send("who").await;
            tokio::select! {
                _ = tokio::time::sleep(IDLE_TIMEOUT / 3) => {}
                _ = &mut stopped => return observer,
            }
        }
    });

    let mut finished = Vec::new();
    for task in users {
        finished.push(task.await.expect("user task"));
    }
    let settling: Vec<_> = finished
        .into_iter()
        .map(|user| tokio::spawn(user.settle(servers.clone())))
        .collect();
    let mut connections = Vec::new();
    let mut live = Vec::new();
    for task in settling {
        let user = task.await.expect("settle task");
        connections.extend(user.done);
        live.push((user.live, user.name));
    }
    // `who` lists exactly the live connections, with their names.
    let mut checker = nodes[nodes.len() - 1].join().await;
    let listed: HashSet<String> = checker.who().await.into_iter().collect();
    let mut expected: HashSet<String> = live
        .iter()
        .map(|(l, name)| format!("{}:{name}", l.client_addr))
        .collect();
    expected.insert(format!("{observer_addr}:{observer_addr}"));
    expected.insert(format!("{0}:{0}", checker.addr));
    assert_eq!(listed, expected);

    // Close everything and collect what each connection received.
    for (l, _) in live {
        connections.push(l.close().await);
    }
    drop(checker);
    let _ = stop.send(());
    let observer = keep_alive.await.expect("keep alive");
    let global = tokio::time::timeout(STEP, observer.close())
        .await
        .expect("observer finishes")
        .received;

    // The global order holds each sender's messages once, in sequence.
    let mut next: HashMap<u64, u64> = HashMap::new();
    for &(from, seq) in &global {
        let expected = next.entry(from).or_default();
        assert_eq!(
            seq, *expected,
            "sender {from} out of order in the global order"
        );
        *expected += 1;
    }
    // Each connection received one unbroken slice of the global order.
    let position: HashMap<Msg, usize> = global.iter().enumerate().map(|(i, &m)| (m, i)).collect();
    let mut checked = 0;
    for connection in &connections {
        let Some(first) = connection.received.first() else {
            continue;
        };
        let start = position[first];
        let slice = &global[start..start + connection.received.len()];
        assert_eq!(
            connection.received, slice,
            "{}: not the slice of the global order sent while it was in the room",
            connection.addr
        );
        checked += 1;
    }
    eprintln!(
        "soak: {clients} users, {} connections ({checked} with messages), {} messages in {secs} s",
        connections.len(),
        global.len()
    );
    assert!(global.len() > 1000, "too little traffic to mean anything");
}
