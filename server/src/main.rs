//! `chat-server`: flags, logging and signals around [`chat_server::run`]: SIGTERM and
//! Ctrl-C shut down gracefully, SIGHUP reloads the TLS certificate and key, SIGUSR1 writes a
//! backup of the room log.

use anyhow::Context;
use chat_protocol::limits;
use chat_server::cluster::ClusterConfig;
use chat_server::tls::Certs;
use chat_server::{Config, HistoryConfig, HistoryDb, Password, Server};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Cluster mode: recent room events each node keeps in memory to answer history (and
    /// resumes after a reconnect) without Redis (`0`: every history request reads Redis).
    #[arg(long, env = "CHAT_HISTORY_CACHE", default_value_t = chat_server::cluster::recent::DEFAULT_CAPACITY)]
    history_cache: usize,
    /// Worker threads (`0`: half the cores, at least one; `1` runs everything on one thread).
    #[arg(long, env = "CHAT_THREADS", default_value_t = 0)]
    threads: usize,
    /// Also listen for TLS connections here (conventionally port 6697); needs `--tls-cert`
    /// and `--tls-key`. Off by default.
    #[arg(long, env = "CHAT_TLS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<String>,
    /// The TLS certificate chain, PEM (the server's certificate first). Reloaded on SIGHUP.
    #[arg(long, env = "CHAT_TLS_CERT", requires = "tls_listen")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM (PKCS#8, PKCS#1 or SEC1). Reloaded on SIGHUP.
    #[arg(long, env = "CHAT_TLS_KEY", requires = "tls_listen")]
    tls_key: Option<PathBuf>,
    /// A file holding the room password (one trailing newline is not part of it). New
    /// connections must send `pass|PASSWORD` (or a JSON hello with "password") to join.
    #[arg(long, env = "CHAT_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Serve `GET /metrics` (Prometheus) and `GET /healthz` here. Off by default.
    #[arg(long, env = "CHAT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Log one JSON object per line instead of text (for journald, Loki and the like).
    #[arg(long, env = "CHAT_LOG_JSON")]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
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

/// Connections the kernel may hold for us before we accept them. `TcpListener::bind` asks
/// for 128, and a crowd connecting at once (a server restart, with every client coming back)
/// overflows that: with SYN cookies the overflowed clients believe they are connected but
/// are never accepted, and wait forever for a greeting. The kernel caps this at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket on `address` (the first address it resolves to that binds).
async fn listen(address: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host(address).await? {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(address)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
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
    // Everything that can be wrong with the flags is said before anything listens.
    let password = args
        .password_file
        .as_deref()
        .map(Password::from_file)
        .transpose()?;
    let certs = match (&args.tls_listen, &args.tls_cert, &args.tls_key) {
        (Some(_), Some(cert), Some(key)) => Some(Certs::load(cert, key)?),
        (Some(_), _, _) => anyhow::bail!("--tls-listen needs --tls-cert and --tls-key"),
        _ => None,
    };
    // Before anything is counted: handles taken earlier would stay no-ops.
    let metrics_handle = match &args.metrics_listen {
        Some(_) => Some(chat_server::telemetry::install()?),
        None => None,
    };
    let cluster = args.cluster.as_ref().map(|url| {
        let mut cluster = ClusterConfig::new(url.clone());
        if let Some(id) = &args.node_id {
            cluster.node_id = id.clone();
        }
        cluster.node_timeout = args.node_timeout.max(Duration::from_millis(300));
        cluster.history_cache = args.history_cache;
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
        password,
        cluster,
        ..Config::default()
    };
    let config_cluster_id = config.cluster.as_ref().map(|c| c.node_id.clone());
    // The log first: a locked or broken database stops the server before it listens.
    let mut server = Server::open(config)?;
    let listener = listen(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    if let (Some(address), Some(certs)) = (&args.tls_listen, &certs) {
        let tls = listen(address)
            .await
            .with_context(|| format!("cannot listen for TLS on {address}"))?;
        tracing::info!("listening for TLS on {}", tls.local_addr()?);
        server = server.with_tls(tls, certs.clone());
    }
    if let (Some(address), Some(handle)) = (&args.metrics_listen, metrics_handle) {
        let metrics = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen for metrics on {address}"))?;
        tracing::info!("serving metrics on {}", metrics.local_addr()?);
        server = server.with_metrics(metrics, handle);
    }
    if args.password_file.is_some() {
        tracing::info!("the room has a password");
    }
    // Watched before the log says the server listens: a SIGHUP or SIGTERM sent as soon as
    // it does must find its handler, not end the process (their default action).
    #[cfg(unix)]
    let (hangups, terminate, backups) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        )
    };
    match &config_cluster_id {
        Some(id) => tracing::info!("node {id} listening on {local}"),
        None => tracing::info!("listening on {local}"),
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(
        shutdown.clone(),
        #[cfg(unix)]
        terminate,
    ));
    tokio::spawn(reload_on_sighup(
        certs,
        #[cfg(unix)]
        hangups,
    ));
    #[cfg(unix)]
    tokio::spawn(backup_on_sigusr1(server.room_log(), backups));
    let server = tokio::spawn(server.run(listener, shutdown.clone()));
    shutdown.cancelled().await;
    // Every session says goodbye and flushes within its grace; don't wait on stragglers.
    match tokio::time::timeout(Duration::from_millis(1500), server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("some connections did not close in time"),
    }
    Ok(())
}

/// Reloads the TLS certificate and key on every SIGHUP; keeps the old ones if the new
/// files do not load. Without TLS a SIGHUP only says so (rather than end the process, which
/// is what it would do unhandled).
async fn reload_on_sighup(
    certs: Option<Arc<Certs>>,
    #[cfg(unix)] hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    #[cfg(unix)]
    {
        let mut hangups = match hangups {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; TLS reload is off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match certs.as_deref().map(Certs::reload) {
                None => tracing::info!("SIGHUP: no TLS certificate to reload"),
                Some(Ok(())) => tracing::info!("reloaded the TLS certificate and key"),
                Some(Err(e)) => tracing::error!(
                    "cannot reload the TLS certificate and key, keeping the old ones: {e:#}"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    drop(certs);
}

/// Writes a copy of the room log to `FILE.backup` beside it on every SIGUSR1 (the online
/// backup: no other process can open the log while the server runs).
#[cfg(unix)]
async fn backup_on_sigusr1(
    log: Option<Arc<chat_server::RoomLog>>,
    signals: std::io::Result<tokio::signal::unix::Signal>,
) {
    let mut signals = match signals {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGUSR1; online backups are off");
            return;
        }
    };
    while signals.recv().await.is_some() {
        let Some(log) = &log else {
            tracing::info!(
                "SIGUSR1: the room log is on Redis (--cluster); nothing to back up here"
            );
            continue;
        };
        let Some(to) = log.backup_path() else {
            tracing::info!(
                "SIGUSR1: the room log is in memory (--history-db :memory:); nothing to back up"
            );
            continue;
        };
        let started = std::time::Instant::now();
        match log.backup(to.clone()).await {
            Ok(events) => tracing::info!(
                "history backup written to {} ({events} events, {} ms)",
                to.display(),
                started.elapsed().as_millis()
            ),
            Err(e) => tracing::error!("history backup to {} failed: {e:#}", to.display()),
        }
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(
    shutdown: CancellationToken,
    #[cfg(unix)] terminate: std::io::Result<tokio::signal::unix::Signal>,
) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match terminate {
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
