//! Metrics and health: the counters the server keeps, and the small HTTP endpoint
//! (`--metrics-listen`) that serves them to Prometheus.
//!
//! Counting goes through the `metrics` facade. Until a recorder is installed (the binary
//! installs the Prometheus one when `--metrics-listen` is given; in-process tests never do),
//! every handle is a no-op. The handles are looked up once, in [`counters`], so counting costs
//! two lock-free atomic adds on an already-known counter (the exporter's value and its
//! generation): never a registry look-up or a lock.
//! The hot path counts once per event, not once per recipient (see `hub.rs`).
//!
//! The endpoint answers `GET /metrics` (the Prometheus text format) and `GET /healthz`
//! (`200 ok` while serving; `503` while a cluster node cannot reach Redis); anything else is
//! `404`. It reads at most one small request per
//! connection, within a deadline, and closes.

use crate::hub::Hub;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a connection reached the server: the `transport` label of `chat_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

/// Why a session ended: the `reason` label of `chat_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed the connection, or it broke.
    Quit,
    /// No complete line within the idle timeout.
    Timeout,
    /// Fell too far behind reading.
    SendqExceeded,
    /// Kept flooding.
    ExcessFlood,
    /// The server shut down.
    Shutdown,
    /// Three wrong passwords, or too many from its address.
    AuthFailed,
    /// No right password within the deadline.
    AuthTimeout,
}

impl Disconnect {
    const ALL: [Disconnect; 7] = [
        Disconnect::Quit,
        Disconnect::Timeout,
        Disconnect::SendqExceeded,
        Disconnect::ExcessFlood,
        Disconnect::Shutdown,
        Disconnect::AuthFailed,
        Disconnect::AuthTimeout,
    ];

    fn label(self) -> &'static str {
        match self {
            Disconnect::Quit => "quit",
            Disconnect::Timeout => "timeout",
            Disconnect::SendqExceeded => "sendq_exceeded",
            Disconnect::ExcessFlood => "excess_flood",
            Disconnect::Shutdown => "shutdown",
            Disconnect::AuthFailed => "auth_failed",
            Disconnect::AuthTimeout => "auth_timeout",
        }
    }
}

/// Why a connection was turned away before it was a session: the `reason` label of
/// `chat_refused_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    TooManyFromIp,
    /// The TLS handshake failed or did not finish in time (plain bytes on the TLS port).
    TlsHandshake,
}

impl Refusal {
    const ALL: [Refusal; 3] = [
        Refusal::ServerFull,
        Refusal::TooManyFromIp,
        Refusal::TlsHandshake,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server_full",
            Refusal::TooManyFromIp => "too_many_from_ip",
            Refusal::TlsHandshake => "tls_handshake",
        }
    }
}

/// Every metric handle, looked up once.
pub struct Counters {
    /// Chat lines accepted into the room.
    pub messages: Counter,
    /// Lines queued to users (room events, times their recipients).
    pub deliveries: Counter,
    pub direct_messages: Counter,
    /// Room events committed to the room log.
    pub history_events: Counter,
    /// Seconds one group commit of the room log took.
    pub history_commit_seconds: Histogram,
    pub auth_failures: Counter,
    disconnects: [Counter; Disconnect::ALL.len()],
    refused: [Counter; Refusal::ALL.len()],
    connections: [Gauge; 2],
    /// Users in the room; set from the hub when metrics are rendered, so joining and
    /// leaving cost nothing extra.
    users: Gauge,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            messages: metrics::counter!("chat_messages_total"),
            deliveries: metrics::counter!("chat_deliveries_total"),
            direct_messages: metrics::counter!("chat_direct_messages_total"),
            history_events: metrics::counter!("chat_history_events_total"),
            history_commit_seconds: metrics::histogram!("chat_history_commit_seconds"),
            auth_failures: metrics::counter!("chat_auth_failures_total"),
            disconnects: Disconnect::ALL
                .map(|d| metrics::counter!("chat_disconnects_total", "reason" => d.label())),
            refused: Refusal::ALL.map(
                |r| metrics::counter!("chat_refused_connections_total", "reason" => r.label()),
            ),
            connections: [
                metrics::gauge!("chat_connections", "transport" => "plain"),
                metrics::gauge!("chat_connections", "transport" => "tls"),
            ],
            users: metrics::gauge!("chat_users"),
        }
    }

    pub fn disconnect(&self, reason: Disconnect) {
        self.disconnects[reason as usize].increment(1);
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].increment(1);
    }

    pub fn connection_opened(&self, transport: Transport) {
        self.connections[transport as usize].increment(1.0);
    }

    pub fn connection_closed(&self, transport: Transport) {
        self.connections[transport as usize].decrement(1.0);
    }
}

static COUNTERS: OnceLock<Counters> = OnceLock::new();

/// The server's metric handles. No-ops unless [`install`] ran before the first call.
pub fn counters() -> &'static Counters {
    COUNTERS.get_or_init(Counters::new)
}

/// Installs the Prometheus recorder for the whole process and registers every metric (so
/// each shows, at zero, from the first scrape). Call before anything is counted; fails if a
/// recorder is already installed.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        // Commit latency: from a tenth of a millisecond (WAL, no fsync) to seconds (a slow
        // disk with --history-sync full).
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("chat_history_commit_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ],
        )?
        .install_recorder()?;
    describe();
    let _ = counters();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("chat_messages_total", "Chat lines accepted into the room.");
    describe_counter!(
        "chat_deliveries_total",
        "Lines queued to users: each room event times its recipients."
    );
    describe_counter!("chat_direct_messages_total", "Direct messages delivered.");
    describe_counter!(
        "chat_history_events_total",
        "Room events committed to the room log."
    );
    describe_histogram!(
        "chat_history_commit_seconds",
        metrics::Unit::Seconds,
        "Time one group commit of the room log took."
    );
    describe_counter!(
        "chat_auth_failures_total",
        "Wrong or missing room passwords."
    );
    describe_counter!("chat_disconnects_total", "Sessions ended, by reason.");
    describe_counter!(
        "chat_refused_connections_total",
        "Connections turned away before they became sessions, by reason."
    );
    describe_gauge!("chat_connections", "Connections held now, by transport.");
    describe_gauge!("chat_users", "Users in the room now.");
}

/// Longest request the endpoint reads; a scraper's GET is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// A client has this long to send its request, and then to read the answer.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How often histograms are drained into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` and `GET /healthz` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let (handle, hub) = (handle.clone(), hub.clone());
                tracker.spawn(async move {
                    let _ =
                        tokio::time::timeout(REQUEST_DEADLINE, answer(stream, &handle, &hub)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
    NotFound,
}

/// Reads the request line of an HTTP request: `GET /metrics` and `GET /healthz` (a query
/// string is ignored); anything else, other methods included, is not found.
fn route(request_line: &str) -> Route {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Route::NotFound;
    };
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/healthz") => Route::Health,
        _ => Route::NotFound,
    }
}

async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    hub: &Hub,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    // Up to the end of the headers; the request line is all that matters.
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && !request.windows(2).any(|w| w == b"\n\n")
    {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
        if request.len() > MAX_REQUEST {
            break;
        }
    }
    let text = String::from_utf8_lossy(&request);
    let first = text.lines().next().unwrap_or_default();
    let (status, content_type, body) = match route(first) {
        Route::Metrics => {
            counters().users.set(hub.len() as f64);
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        Route::Health if hub.room_available() => {
            ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string())
        }
        // Cluster mode with Redis out of reach: connected users stay, but the room takes no
        // lines, so a load balancer should send newcomers to another node.
        Route::Health => (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            "unavailable: the cluster's Redis cannot be reached\n".to_string(),
        ),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_paths_and_only_get() {
        assert_eq!(route("GET /metrics HTTP/1.1"), Route::Metrics);
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1"), Route::Metrics);
        assert_eq!(route("GET /healthz HTTP/1.0"), Route::Health);
        for other in [
            "POST /metrics HTTP/1.1",
            "HEAD /healthz HTTP/1.1",
            "GET / HTTP/1.1",
            "GET /metrics/ HTTP/1.1",
            "GET",
            "",
        ] {
            assert_eq!(route(other), Route::NotFound, "{other}");
        }
    }
}
