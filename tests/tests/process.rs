//! Tests against the real `chat-server` binary in its own process: memory under a slow
//! consumer, under churn and after a storm of joins and leaves (read from /proc), and
//! SIGTERM with a thousand users.

use chat_tests::{Client, STEP, ServerProcess, assert_complete, exchange, raise_fd_limit, said};
use std::time::{Duration, Instant};

const MIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_a_client_never_reads() {
    let server = ServerProcess::start(&["--rate", "0", "--max-per-ip", "0"]);
    let sleeper = server.connect().await;
    let before = server.rss_kib();

    // 100,000 messages of 500 bytes: 50 MB that an unbounded queue would keep for the sleeper.
    let received = exchange(server.addr, 4, 25_000, 500, 50).await;
    assert_complete(&received, 4, 25_000);

    let peak = hwm_kib(&server);
    eprintln!("RSS before {before} KiB, peak {peak} KiB");
    assert!(
        peak < before + 24 * MIB,
        "peak RSS {peak} KiB, {} KiB over the start",
        peak - before
    );
    drop(sleeper);
}

fn hwm_kib(server: &ServerProcess) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

async fn churn(server: &ServerProcess, cycles: usize) {
    for _ in 0..cycles / 50 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                let addr = server.addr;
                tokio::spawn(async move {
                    let mut client = Client::connect(addr).await;
                    let me = client.addr.clone();
                    client.expect(&said(&me, &me, "login")).await;
                    if i % 2 == 0 {
                        client.send_raw(b"vanishing mid-li").await;
                    }
                })
            })
            .collect();
        for task in batch {
            task.await.expect("churn task");
        }
    }
}

/// `count` clients join, a hundred at a time, and stay until every one of them is in the
/// room (each login is announced to everyone present: a storm of about count²/2 lines), then
/// all leave at once (another such storm). Returns the server's RSS while they were all in.
async fn storm(server: &ServerProcess, count: usize) -> u64 {
    // Waves of 100, so the storm's growth is made by sessions, not by a queue of
    // connections waiting to be accepted.
    let mut clients = Vec::new();
    for _ in 0..count / 100 {
        let wave: Vec<_> = (0..100).map(|_| spawn_greeted(server.addr)).collect();
        for client in wave {
            clients.push(client.await.expect("storm client"));
        }
    }
    let during = server.rss_kib();
    drop(clients);
    during
}

/// Ordinary churn (50 connections at a time, half of them vanishing mid-line) must leak
/// nothing: the member entry, its name, queue, buffers and tasks all go with the connection.
/// (The storm below is what makes the allocator hold on to freed memory; this is not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaks_nothing() {
    let server = ServerProcess::start(&["--rate", "0", "--max-per-ip", "0"]);
    let mut observer = server.connect().await;
    let o = observer.addr.clone();
    observer.skip_until(&said(&o, &o, "I am here")).await;
    // Warm up allocator pools and the runtime's task slabs before the baseline.
    churn(&server, 1_000).await;
    while observer.who().await.len() != 1 {}
    let baseline = server.rss_kib();

    churn(&server, 10_000).await;
    while observer.who().await.len() != 1 {}
    let after = server.rss_kib();
    eprintln!("RSS baseline {baseline} KiB, after 10,000 cycles {after} KiB");
    assert!(
        after < baseline + 4 * MIB,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
}

/// After a storm of joins and leaves the server gives the memory it took back to the system
/// (`server/src/memory.rs`): without that, glibc keeps most of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_gives_memory_back() {
    raise_fd_limit();
    let server = ServerProcess::start(&["--rate", "0", "--max-per-ip", "0"]);
    let mut observer = server.connect().await;
    let o = observer.addr.clone();
    observer.skip_until(&said(&o, &o, "I am here")).await;
    // Warm up the runtime and the allocator with ordinary churn, then let it settle.
    churn(&server, 500).await;
    while observer.who().await.len() != 1 {}
    let baseline = settled_rss(&server).await;

    let during = storm(&server, 2_000).await;
    while observer.who().await.len() != 1 {}
    let peak = hwm_kib(&server);
    eprintln!("RSS baseline {baseline} KiB, during the storm {during} KiB, peak {peak} KiB");
    let after = settled_rss(&server).await;
    eprintln!("RSS after {after} KiB");
    assert!(
        peak > baseline + 16 * MIB,
        "the storm took only {} KiB: too little to show anything",
        peak - baseline
    );
    assert!(
        after < baseline + (peak - baseline) / 4,
        "RSS went from {baseline} KiB to a peak of {peak} KiB and stayed at {after} KiB"
    );
}

/// The server's RSS once it has stopped changing for a moment (memory is given back a
/// little after a storm is over), within a bound.
async fn settled_rss(server: &ServerProcess) -> u64 {
    let deadline = Instant::now() + STEP;
    let mut last = server.rss_kib();
    loop {
        // Polling: nothing announces that the allocator has returned pages.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server.rss_kib();
        if now.abs_diff(last) < 256 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_thousand_users_tells_each_and_exits_within_two_seconds() {
    raise_fd_limit();
    let server = ServerProcess::start(&["--rate", "0", "--max-per-ip", "0"]);
    let mut users = Vec::new();
    for _ in 0..1000 {
        let mut user = server.connect().await;
        let me = user.addr.clone();
        user.skip_until(&said(&me, &me, "I am here")).await;
        users.push(user);
    }
    let readers: Vec<_> = users
        .into_iter()
        .map(|mut user| tokio::spawn(async move { user.expect_closed().await }))
        .collect();

    let started = Instant::now();
    let exited = server.exit_on_sigterm();
    for reader in readers {
        let rest = reader.await.expect("reader");
        assert_eq!(
            rest.last().map(String::as_str),
            Some("notice: server shutting down; goodbye")
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(2), exited)
        .await
        .unwrap_or_else(|_| panic!("still running {:?} after SIGTERM", started.elapsed()))
        .expect("wait task");
    assert!(status.expect("wait").success());
}

/// A thousand clients connecting at the same moment (well under `--max-clients`) are each
/// greeted. With the listen backlog at 128 (tokio's `TcpListener::bind`, like std's), the
/// accept queue overflows; with SYN cookies on (Linux's default) a client whose handshake
/// overflowed believes it is connected, but the server never accepts it: no `login`, ever,
/// until the client sends something and gets a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simultaneous_connects_are_all_greeted() {
    raise_fd_limit();
    let server = ServerProcess::start(&["--rate", "0", "--max-per-ip", "0"]);
    let clients: Vec<_> = (0..1000).map(|_| spawn_greeted(server.addr)).collect();
    let mut greeted = Vec::new();
    for client in clients {
        greeted.push(client.await.expect("every client is greeted within a step"));
    }
    assert_eq!(greeted.len(), 1000);
}

/// Connects a client in a task of its own and waits for its own `login`, the first line a
/// client gets.
fn spawn_greeted(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        let mut client = Client::connect(addr).await;
        let me = client.addr.clone();
        client.expect(&said(&me, &me, "login")).await;
        client
    })
}
