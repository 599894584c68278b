//! Tests against the real `chat-server` binary in its own process: memory under a slow
//! consumer and under churn (read from /proc), and SIGTERM with a thousand users.

use chat_tests::{Client, ServerProcess, assert_complete, exchange, raise_fd_limit, said};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_gives_memory_back() {
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
