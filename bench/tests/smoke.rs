//! Smoke test: a tiny fanout, slow-consumer and churn against the real chat-server, started
//! in-process on 127.0.0.1:0. Asserts correctness (nothing lost, duplicated or reordered),
//! never speed: speed is measured by `chat-bench` runs, not by tests.

use std::time::Duration;

use chat_bench::scenario::{self, Broadcast, Env, Pacing};
use chat_bench::{Report, Target};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(30);

async fn with_server<F, Fut>(body: F) -> Report
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Report>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let config = chat_server::Config {
        rate: 0.0,
        max_per_ip: 0,
        ..chat_server::Config::default()
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(chat_server::run(listener, config, shutdown.clone()));
    let report = tokio::time::timeout(BOUND, body(addr))
        .await
        .expect("the run is bounded")
        .expect("the run succeeds");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    report
}

fn env(addr: std::net::SocketAddr, target: Target) -> Env {
    Env {
        addr,
        target,
        server_pid: Some(std::process::id()),
        timeout: Duration::from_secs(20),
        connect_concurrency: 8,
    }
}

fn assert_exact(report: &Report, expected: u64) {
    assert!(report.completed, "{}", report.human());
    assert_eq!(report.error, None);
    assert_eq!(report.expected_deliveries, expected, "{}", report.human());
    assert_eq!(report.deliveries, expected, "{}", report.human());
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicated, 0);
    assert_eq!(report.reordered, 0);
    assert_eq!(report.invalid, 0);
    assert_eq!(report.latency.count, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_everything_once_in_order_in_both_modes() {
    for target in [Target::Chat, Target::ChatJson] {
        let plan = Broadcast {
            clients: 6,
            senders: 3,
            messages: 200,
            pacing: Pacing::Window(8),
            slow_consumer: None,
        };
        let report = with_server(|addr| async move {
            scenario::broadcast(&env(addr, target), "fanout", &plan).await
        })
        .await;
        assert_exact(&report, 6 * 3 * 200);
        let server = report.server.expect("server usage with --server-pid");
        assert!(server.alive_at_end);
        assert!(server.rss_end_kib > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_clients_get_everything_beside_a_client_that_never_reads() {
    let plan = Broadcast {
        clients: 4,
        senders: 2,
        messages: 20_000,
        pacing: Pacing::Window(16),
        slow_consumer: Some(4096),
    };
    let report = with_server(|addr| async move {
        scenario::broadcast(&env(addr, Target::Chat), "slow-consumer", &plan).await
    })
    .await;
    assert_exact(&report, 3 * 2 * 20_000);
    assert_eq!(report.healthy_delivered_fraction, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_the_room_working() {
    let report = with_server(|addr| async move {
        scenario::churn(&env(addr, Target::Chat), 3, 2, Duration::from_millis(300)).await
    })
    .await;
    assert!(report.completed, "{}", report.human());
    assert!(report.cycles.unwrap_or(0) > 0);
    assert_eq!(report.cycle_errors, Some(0));
}
