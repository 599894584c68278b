//! `chat-server`: flags, logging and signals around [`chat_server::run`].

use anyhow::Context;
use chat_protocol::limits;
use chat_server::cluster::ClusterConfig;
use chat_server::{Config, HistoryConfig, HistoryDb, Server};
use clap::Parser;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A chat room for nc users and programs: the classic Go tutorial server, done right.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port and logs it).
    #[arg(long, env = "CHAT_LISTEN", default_value = limits::DEFAULT_LISTEN)]
    listen: String,
    /// Disconnect users who send no complete line for this long (`30s`, `500ms`, `2m`; `0` never).
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Longest line accepted from a client, in bytes (at least 1: a line is always bounded).
    #[arg(long, env = "CHAT_MAX_LINE_BYTES", default_value_t = limits::DEFAULT_MAX_LINE_BYTES, value_parser = at_least_one)]
    max_line_bytes: usize,
    /// Outgoing queue per connection, in bytes; a client that falls further behind is dropped (`0`: no limit).
    #[arg(long, env = "CHAT_SENDQ_BYTES", default_value_t = limits::DEFAULT_SENDQ_BYTES)]
    sendq_bytes: usize,
    /// Connections held at once (`0`: no limit).
    #[arg(long, env = "CHAT_MAX_CLIENTS", default_value_t = limits::DEFAULT_MAX_CLIENTS)]
    max_clients: usize,
    /// Connections held at once from one IP address (`0`: no limit).
    #[arg(long, env = "CHAT_MAX_PER_IP", default_value_t = limits::DEFAULT_MAX_PER_IP)]
    max_per_ip: usize,
    /// Lines per second one connection may send on average (`0`: no limit).
    #[arg(long, env = "CHAT_RATE", default_value_t = limits::DEFAULT_RATE)]
    rate: f64,
    /// Lines one connection may send at once before `--rate` applies.
    #[arg(long, env = "CHAT_BURST", default_value_t = limits::DEFAULT_BURST)]
    burst: u32,
    /// The room log, an SQLite file (created if missing); `:memory:` keeps it in memory only.
    #[arg(long, env = "CHAT_HISTORY_DB", default_value = "chat-history.sqlite3")]
    history_db: String,
    /// Delete room events older than this (`30d`, `12h`; `0` keeps everything).
    #[arg(long, env = "CHAT_HISTORY_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    history_retention: Duration,
    /// Keep at most this many room events, the newest (`0`: no limit).
    #[arg(long, env = "CHAT_HISTORY_MAX_EVENTS", default_value_t = 1_000_000)]
    history_max_events: u64,
    /// `normal`: a commit survives the server crashing or being killed; `full`: it survives
    /// a power loss too (an fsync per group commit).
    #[arg(long, env = "CHAT_HISTORY_SYNC", default_value = "normal", value_parser = ["normal", "full"])]
    history_sync: String,
    /// Serve one room with every other node started with the same Redis
    /// (`redis://HOST:PORT`); the room's log then lives in Redis, not in `--history-db`.
    #[arg(long, env = "CHAT_CLUSTER")]
    cluster: Option<String>,
    /// This node's name in the cluster (default: host name, process id and a random part).
    #[arg(long, env = "CHAT_NODE_ID", value_parser = node_id)]
    node_id: Option<String>,
    /// A node silent for this long is dead: the other nodes announce its users as leaving.
    #[arg(long, env = "CHAT_NODE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    node_timeout: Duration,
    /// Worker threads (`0`: half the cores, at least one; `1` runs everything on one thread).
    #[arg(long, env = "CHAT_THREADS", default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Thousands of connections need thousands of descriptors; the soft limit is often 1024.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "could not raise the open file limit");
    }
    let threads = match args.threads {
        0 => default_threads(),
        n => n,
    };
    let mut runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    runtime.enable_all().build()?.block_on(serve(args))
}

/// Half the cores, at least one. Every broadcast is fanned out under the room's one lock,
/// so more workers mostly add cross-thread wake-ups, while the kernel's network stack needs
/// cores of its own: on the 2-core machine of docs/BENCHMARKS.md one worker beat two on
/// CPU per delivery, throughput and latency alike.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A line limit of `0` once meant "no limit", which let one client grow a buffer without
/// bound; now every line is bounded.
fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (a line is always bounded)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Node ids go into Redis key names: letters, digits, `-`, `_` and `.` only.
fn node_id(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value.to_string())
    } else {
        Err("1 to 64 of A-Z, a-z, 0-9, '-', '_' and '.'".into())
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let cluster = args.cluster.as_ref().map(|url| {
        let mut cluster = ClusterConfig::new(url.clone());
        if let Some(id) = &args.node_id {
            cluster.node_id = id.clone();
        }
        cluster.node_timeout = args.node_timeout.max(Duration::from_millis(300));
        cluster
    });
    let config = Config {
        idle_timeout: args.idle_timeout,
        max_line_bytes: args.max_line_bytes,
        sendq_bytes: args.sendq_bytes,
        max_clients: args.max_clients,
        max_per_ip: args.max_per_ip,
        rate: args.rate,
        burst: args.burst,
        history: HistoryConfig {
            db: HistoryDb::parse(&args.history_db),
            retention: args.history_retention,
            max_events: args.history_max_events,
            sync_full: args.history_sync == "full",
            ..HistoryConfig::default()
        },
        cluster,
        ..Config::default()
    };
    let config_cluster_id = config.cluster.as_ref().map(|c| c.node_id.clone());
    // The log first: a locked or broken database stops the server before it listens.
    let server = Server::open(config)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    match &config_cluster_id {
        Some(id) => tracing::info!("node {id} listening on {local}"),
        None => tracing::info!("listening on {local}"),
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let server = tokio::spawn(server.run(listener, shutdown.clone()));
    shutdown.cancelled().await;
    // Every session says goodbye and flushes within its grace; don't wait on stragglers.
    match tokio::time::timeout(Duration::from_millis(1500), server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("some connections did not close in time"),
    }
    Ok(())
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
