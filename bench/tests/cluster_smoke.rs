//! Smoke test of the cluster target: a tiny fanout and latency run over three in-process
//! chat-server nodes sharing one real `redis-server` (on a free 127.0.0.1 port, nothing on
//! disk), clients spread over the nodes, CPU summed over Redis and this process. Asserts
//! correctness, never speed.
//!
//! Like the workspace's cluster tests it needs `redis-server` on the PATH, and fails saying
//! so when it is missing.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chat_bench::scenario::{self, Broadcast, Env, Pacing};
use chat_bench::{Report, Target};
use chat_server::cluster::ClusterConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(30);

/// A redis-server of the test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("chat-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the cluster smoke test needs a real one \
                     (Debian/Ubuntu: apt-get install -y redis-server)"
                )
            });
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not open its port"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `body` against three nodes of one room; returns its report.
async fn with_cluster<F, Fut>(body: F) -> Report
where
    F: FnOnce(Vec<SocketAddr>, u32) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Report>>,
{
    let redis = Redis::start();
    let shutdown = CancellationToken::new();
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(listener.local_addr().expect("local addr"));
        let config = chat_server::Config {
            rate: 0.0,
            max_per_ip: 0,
            cluster: Some(ClusterConfig {
                url: format!("redis://127.0.0.1:{}", redis.port),
                node_id: id.into(),
                node_timeout: Duration::from_secs(10),
                prefix: "chat:".into(),
                history_cache: chat_server::cluster::recent::DEFAULT_CAPACITY,
            }),
            ..chat_server::Config::default()
        };
        nodes.push(tokio::spawn(chat_server::run(
            listener,
            config,
            shutdown.clone(),
        )));
    }
    let report = tokio::time::timeout(BOUND, body(addrs, redis.child.id()))
        .await
        .expect("the run is bounded")
        .expect("the run succeeds");
    shutdown.cancel();
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), node).await;
    }
    drop(redis);
    report
}

fn env(addrs: Vec<SocketAddr>, redis_pid: u32) -> Env {
    Env {
        addrs,
        target: Target::Chat,
        // The nodes run in this process.
        server_pids: vec![std::process::id(), redis_pid],
        timeout: Duration::from_secs(20),
        connect_concurrency: 8,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_three_nodes_delivers_everything_once_in_order() {
    let plan = Broadcast {
        clients: 9,
        senders: 3,
        messages: 200,
        pacing: Pacing::Window(8),
        slow_consumer: None,
    };
    let report = with_cluster(|addrs, redis| async move {
        scenario::broadcast(&env(addrs, redis), "fanout", &plan).await
    })
    .await;
    let expected = 9 * 3 * 200;
    assert!(report.completed, "{}", report.human());
    assert_eq!(report.error, None);
    assert_eq!(report.deliveries, expected, "{}", report.human());
    assert_eq!(
        (
            report.lost,
            report.duplicated,
            report.reordered,
            report.invalid
        ),
        (0, 0, 0, 0),
        "{}",
        report.human()
    );
    let server = report.server.expect("server usage with --server-pid");
    assert!(server.alive_at_end);
    assert_eq!(server.pids.len(), 2);
    assert_eq!(server.cpu_s_by_pid.len(), 2);
    assert!(server.cpu_s_by_pid.iter().all(|p| p.cpu_s.is_some()));
}
