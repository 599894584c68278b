//! Smoke test: a tiny fanout, slow-consumer, churn, resume and idle room against the real
//! chat-server, started in-process on 127.0.0.1:0 (its room log in memory). Asserts correctness (nothing lost, duplicated or reordered),
//! never speed: speed is measured by `chat-bench` runs, not by tests.

use std::time::Duration;

use chat_bench::idle::{IdlePlan, Keepalive, idle_room};
use chat_bench::resume::{ResumeFrom, ResumePlan, resume};
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
        addrs: vec![addr],
        target,
        server_pids: vec![std::process::id()],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_clients_get_their_whole_gap_once() {
    for from in [ResumeFrom::Seen, ResumeFrom::AfterLeaves] {
        // A small limit, so every client pages.
        let plan = ResumePlan {
            clients: 20,
            gap: 30,
            limit: 7,
            from,
            // One run of each mode gated, as chat-tui's backoff would spread them.
            reconnect_concurrency: if from == ResumeFrom::Seen { 0 } else { 4 },
        };
        let report =
            with_server(|addr| async move { resume(&env(addr, Target::Chat), &plan).await }).await;
        assert!(report.completed, "{}", report.human());
        assert_eq!(report.expected_deliveries, 20 * 30);
        assert_eq!(report.deliveries, 20 * 30, "{}", report.human());
        assert_eq!((report.lost, report.duplicated), (0, 0));
        let stats = report.resume.clone().expect("resume stats");
        assert_eq!(stats.clients_complete, 20);
        assert_eq!((stats.seq_holes, stats.seq_repeats), (0, 0));
        assert_eq!(stats.short_of_welcome, 0);
        assert_eq!(stats.gap_events_live, 0);
        assert_eq!(stats.gap_last_seq - stats.gap_first_seq + 1, 30);
        // Every page but the last of each client is full.
        assert!(stats.pages >= 20 * 5, "{}", report.human());
        match from {
            // The gap holds the 20 leaves too.
            ResumeFrom::Seen => assert!(stats.events_fetched >= 20 * 50),
            ResumeFrom::AfterLeaves => {
                assert_eq!(stats.resume_after_min, stats.gap_first_seq - 1);
                assert!(stats.events_fetched >= 20 * 30);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_skips_targets_without_history() {
    let env = env("127.0.0.1:9".parse().expect("addr"), Target::Redis);
    let plan = ResumePlan {
        clients: 1,
        gap: 1,
        limit: 1,
        from: ResumeFrom::Seen,
        reconnect_concurrency: 0,
    };
    let report = resume(&env, &plan).await.expect("a skip is not an error");
    assert!(report.skipped.is_some());
    assert!(!report.completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_room_keeps_everyone_with_ping_or_who() {
    for keepalive in [Keepalive::Ping, Keepalive::Who] {
        let plan = IdlePlan {
            clients: 10,
            keepalive,
            duration: Duration::from_secs(1),
            every: Some(Duration::from_millis(200)),
        };
        let report =
            with_server(|addr| async move { idle_room(&env(addr, Target::Chat), &plan).await })
                .await;
        assert!(report.completed, "{}", report.human());
        let idle = report.idle.clone().expect("idle stats");
        assert_eq!(idle.disconnected, 0);
        assert!(idle.bytes_from_server > 0, "{}", report.human());
        // About 5 per client in 1 s; bounds leave room for a slow machine.
        match keepalive {
            Keepalive::Ping => {
                assert!(idle.pings >= 30, "{}", report.human());
                assert!(idle.pongs + 10 >= idle.pings, "{}", report.human());
                assert_eq!(idle.whos_periodic + idle.whos_on_events, 0);
            }
            Keepalive::Who => {
                assert!(idle.whos_periodic >= 30, "{}", report.human());
                assert!(idle.users_replies + 10 >= idle.whos_periodic);
                assert_eq!(idle.pings, 0);
            }
        }
        assert_eq!(idle.room_events, 0, "the room stays idle");
    }
}
