//! The accept loop, the connection limits, and graceful shutdown.
//!
//! A connection over `--max-clients` or `--max-per-ip` gets one `error:` line saying why and
//! is closed before it joins, so nobody hears of it. On shutdown the loop stops accepting,
//! every session tells its user and ends, and [`run`] returns once every connection has
//! flushed (or its flush grace has passed).

use crate::config::Config;
use crate::hub::Hub;
use crate::room_log::RoomLog;
use crate::session;
use chat_protocol::{ErrorCode, ServerEvent};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections held now, overall and per IP.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Admission control for new connections.
#[derive(Debug)]
struct Limits {
    max_clients: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// Holds one connection's place in [`Limits`]; gives it back when dropped, however the
/// session ends.
struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    /// Takes a place for a connection from `ip`, or says why there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, ServerEvent> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.max_clients != 0 && counts.total >= self.max_clients {
            return Err(ServerEvent::error(
                ErrorCode::ServerFull,
                format!(
                    "server full ({} connections); try again later",
                    self.max_clients
                ),
            ));
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip != 0 && from_ip >= self.max_per_ip {
            return Err(ServerEvent::error(
                ErrorCode::TooManyFromIp,
                format!(
                    "too many connections from {ip} (at most {})",
                    self.max_per_ip
                ),
            ));
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_default() += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A server whose room log is open, ready to serve.
pub struct Server {
    hub: Arc<Hub>,
    /// `None` in cluster mode, where the room's log is on Redis.
    log: Option<Arc<RoomLog>>,
    config: Config,
}

impl Server {
    /// Opens the room log (creating it if need be) and continues its order. Fails, saying
    /// why, on a database that is locked by another server, corrupt or unwritable.
    pub fn open(config: Config) -> anyhow::Result<Server> {
        if config.cluster.is_some() {
            // Redis is reached in `run`, which is async.
            let hub = Hub::new(0, config.idle_timeout);
            return Ok(Server {
                hub,
                log: None,
                config,
            });
        }
        let opened = RoomLog::open(&config.history)?;
        let hub = Hub::new(opened.last_seq, config.idle_timeout);
        let log = opened.start()?;
        hub.attach_log(log.clone());
        Ok(Server {
            hub,
            log: Some(log),
            config,
        })
    }

    /// Serves `listener` until `shutdown` is cancelled, then says goodbye to every user,
    /// flushes, closes the log and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Server { hub, log, config } = self;
        let Some(log) = log else {
            return run_cluster(hub, listener, config, shutdown).await;
        };
        // Delivers what the log has committed, on the runtime, until every session is over.
        let deliveries = CancellationToken::new();
        let delivery = tokio::spawn(deliver_commits(
            hub.clone(),
            log.clone(),
            deliveries.clone(),
        ));
        serve(listener, hub.clone(), config, shutdown).await;
        deliveries.cancel();
        delivery.await?;
        // Every session has ended and its last lines are delivered; commit what is left and
        // release the database file, so a new server can open it as soon as this returns.
        let closing = log.clone();
        tokio::task::spawn_blocking(move || closing.close()).await?;
        hub.deliver_committed(log.committed_now());
        Ok(())
    }
}

/// Cluster mode: joins the room on Redis, serves, and on shutdown lets the room hear that
/// this node's users left before unregistering.
async fn run_cluster(
    hub: Arc<Hub>,
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(cluster) = config.cluster.clone() else {
        anyhow::bail!("not in cluster mode");
    };
    let running = crate::cluster::start(hub.clone(), cluster, config.history.max_events).await?;
    serve(listener, hub, config, shutdown).await;
    running.stop().await;
    Ok(())
}

/// Opens the room log, then serves `listener` until `shutdown` is cancelled (see
/// [`Server::open`] and [`Server::run`]).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Server::open(config)?.run(listener, shutdown).await
}

/// After each commit, has the hub deliver what is now in the log.
async fn deliver_commits(hub: Arc<Hub>, log: Arc<RoomLog>, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            committed = log.committed() => hub.deliver_committed(committed),
            _ = stop.cancelled() => return,
        }
    }
}

async fn serve(listener: TcpListener, hub: Arc<Hub>, config: Config, shutdown: CancellationToken) {
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let limits = Arc::new(Limits {
        max_clients: config.max_clients,
        max_per_ip: config.max_per_ip,
        counts: Mutex::default(),
    });

    tracker.spawn(crate::memory::release_after_bursts(
        hub.clone(),
        shutdown.clone(),
    ));

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match limits.admit(peer.ip()) {
            Ok(slot) => {
                tracing::debug!(%peer, "connected");
                let (hub, config, shutdown, inner) = (
                    hub.clone(),
                    config.clone(),
                    shutdown.clone(),
                    tracker.clone(),
                );
                tracker.spawn(session::serve(
                    stream, peer, hub, config, shutdown, inner, slot,
                ));
            }
            Err(refusal) => {
                tracing::info!(%peer, "refused: {refusal:?}");
                tracker.spawn(refuse(stream, peer, refusal, config.flush_grace));
            }
        }
    }

    drop(listener);
    tracker.close();
    tracker.wait().await;
    tracing::info!("all connections closed");
}

/// Tells a refused client why, in one plain line, and closes.
async fn refuse(mut stream: TcpStream, peer: SocketAddr, refusal: ServerEvent, grace: Duration) {
    let text = refusal.to_plain().unwrap_or_default();
    let _ = tokio::time::timeout(grace, async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    tracing::debug!(%peer, "refused connection closed");
}
