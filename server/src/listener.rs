//! The accept loops, the connection limits, and graceful shutdown.
//!
//! The server listens on its plain address and, with `--tls-listen`, on a TLS address too;
//! users of both are in the same room. A connection over `--max-clients` or `--max-per-ip`
//! (both count plain and TLS connections together) gets one `error:` line saying why and is
//! closed before it joins, so nobody hears of it. A TLS connection first has
//! `tls_handshake_timeout` to finish its handshake, holding its place meanwhile; one that
//! does not (plain `nc` on the TLS port) is closed and never becomes a user. On shutdown the
//! loops stop accepting, every session tells its user and ends, and [`run`] returns once
//! every connection has flushed (or its flush grace has passed).

use crate::auth::Gate;
use crate::config::Config;
use crate::hub::Hub;
use crate::room_log::RoomLog;
use crate::session;
use crate::telemetry::{self, Refusal, Transport};
use crate::tls::Certs;
use chat_protocol::{ErrorCode, ServerEvent};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
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
    /// For the `chat_connections` gauge, which counts the connection until the slot goes.
    transport: Transport,
}

impl Limits {
    /// Takes a place for a connection from `ip`, or says why there is none.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        transport: Transport,
    ) -> Result<Slot, (Refusal, Box<ServerEvent>)> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.max_clients != 0 && counts.total >= self.max_clients {
            return Err((
                Refusal::ServerFull,
                Box::new(ServerEvent::error(
                    ErrorCode::ServerFull,
                    format!(
                        "server full ({} connections); try again later",
                        self.max_clients
                    ),
                )),
            ));
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip != 0 && from_ip >= self.max_per_ip {
            return Err((
                Refusal::TooManyFromIp,
                Box::new(ServerEvent::error(
                    ErrorCode::TooManyFromIp,
                    format!(
                        "too many connections from {ip} (at most {})",
                        self.max_per_ip
                    ),
                )),
            ));
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_default() += 1;
        telemetry::counters().connection_opened(transport);
        Ok(Slot {
            limits: self.clone(),
            ip,
            transport,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        telemetry::counters().connection_closed(self.transport);
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
    /// The TLS listener and its certificate, if the server speaks TLS too.
    tls: Option<(TcpListener, Arc<Certs>)>,
    /// The metrics endpoint, if any.
    metrics: Option<(TcpListener, PrometheusHandle)>,
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
                tls: None,
                metrics: None,
            });
        }
        let opened = RoomLog::open(&config.history)?;
        let hub = Hub::new(opened.last_seq, config.idle_timeout);
        let log = opened.into_log();
        hub.attach_log(log.clone());
        Ok(Server {
            hub,
            log: Some(log),
            config,
            tls: None,
            metrics: None,
        })
    }

    /// The room log (`None` in cluster mode), for [`RoomLog::backup`].
    pub fn room_log(&self) -> Option<Arc<RoomLog>> {
        self.log.clone()
    }

    /// Also serves TLS connections on `listener`, with `certs` (reloadable: keep a clone of
    /// the `Arc` to call [`Certs::reload`]).
    pub fn with_tls(mut self, listener: TcpListener, certs: Arc<Certs>) -> Server {
        self.tls = Some((listener, certs));
        self
    }

    /// Also serves `GET /metrics` and `GET /healthz` on `listener`, rendering from `handle`
    /// (see [`telemetry::install`]).
    pub fn with_metrics(mut self, listener: TcpListener, handle: PrometheusHandle) -> Server {
        self.metrics = Some((listener, handle));
        self
    }

    /// Serves `listener` (and the TLS and metrics listeners, if set) until `shutdown` is
    /// cancelled, then says goodbye to every user, flushes, closes the log and returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Server {
            hub,
            log,
            config,
            tls,
            metrics,
        } = self;
        let metrics = metrics.map(|(listener, handle)| {
            tokio::spawn(telemetry::serve(
                listener,
                handle,
                hub.clone(),
                shutdown.clone(),
            ))
        });
        let Some(log) = log else {
            run_cluster(hub, listener, tls, config, shutdown).await?;
            if let Some(metrics) = metrics {
                let _ = metrics.await;
            }
            return Ok(());
        };
        // What the log has committed is delivered by its commit task, right after each
        // commit: no task of its own to wake per line. (Weak: the hub holds the log.)
        let to_hub = Arc::downgrade(&hub);
        log.on_commit(move |committed| {
            if let Some(hub) = to_hub.upgrade() {
                hub.deliver_committed(committed);
            }
        });
        log.start();
        serve(listener, tls, hub.clone(), config, shutdown).await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        // Every session has ended and its last lines are delivered; commit what is left and
        // release the database file, so a new server can open it as soon as this returns.
        log.close().await;
        hub.deliver_committed(log.committed_now());
        Ok(())
    }
}

/// Cluster mode: joins the room on Redis, serves, and on shutdown lets the room hear that
/// this node's users left before unregistering.
async fn run_cluster(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Option<(TcpListener, Arc<Certs>)>,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(cluster) = config.cluster.clone() else {
        anyhow::bail!("not in cluster mode");
    };
    let running = crate::cluster::start(hub.clone(), cluster, &config.history).await?;
    serve(listener, tls, hub, config, shutdown).await;
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

/// What every connection's task needs, shared.
#[derive(Clone)]
struct Context {
    hub: Arc<Hub>,
    config: Arc<Config>,
    gate: Option<Arc<Gate>>,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, Arc<Certs>)>,
    hub: Arc<Hub>,
    config: Config,
    shutdown: CancellationToken,
) {
    let gate = config.password.clone().map(|password| {
        Arc::new(Gate::new(
            password,
            config.auth_ip_failures,
            config.auth_ip_window,
        ))
    });
    let context = Context {
        limits: Arc::new(Limits {
            max_clients: config.max_clients,
            max_per_ip: config.max_per_ip,
            counts: Mutex::default(),
        }),
        hub,
        config: Arc::new(config),
        gate,
        shutdown,
        tracker: TaskTracker::new(),
    };

    context.tracker.spawn(crate::memory::release_after_bursts(
        context.hub.clone(),
        context.shutdown.clone(),
    ));

    let (tls_listener, certs) = match tls {
        Some((listener, certs)) => (Some(listener), Some(certs)),
        None => (None, None),
    };
    loop {
        let (accepted, transport) = tokio::select! {
            _ = context.shutdown.cancelled() => break,
            accepted = listener.accept() => (accepted, Transport::Plain),
            accepted = accept(tls_listener.as_ref()) => (accepted, Transport::Tls),
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
        let admitted = context.limits.admit(peer.ip(), transport);
        match (admitted, &certs) {
            (Ok(slot), Some(certs)) if transport == Transport::Tls => {
                tracing::debug!(%peer, "connected (TLS)");
                let acceptor = certs.acceptor();
                let context2 = context.clone();
                context.tracker.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let accept = acceptor.accept(stream).into_fallible();
                    tokio::pin!(accept);
                    let handshake =
                        tokio::time::timeout(context2.config.tls_handshake_timeout, &mut accept)
                            .await;
                    // A failed handshake is counted before its socket is closed, so whoever
                    // sees the close sees the count.
                    match handshake {
                        Ok(Ok(stream)) => {
                            let Context {
                                hub,
                                config,
                                gate,
                                shutdown,
                                tracker,
                                ..
                            } = context2;
                            session::serve_stream(
                                stream, peer, hub, config, gate, shutdown, tracker, slot,
                            )
                            .await;
                        }
                        Ok(Err((e, stream))) => {
                            telemetry::counters().refused(Refusal::TlsHandshake);
                            tracing::info!(%peer, error = %e, "TLS handshake failed");
                            drop(stream);
                        }
                        Err(_) => {
                            telemetry::counters().refused(Refusal::TlsHandshake);
                            tracing::info!(%peer, "TLS handshake did not finish in time");
                        }
                    }
                });
            }
            (Ok(slot), _) => {
                tracing::debug!(%peer, "connected");
                let Context {
                    hub,
                    config,
                    gate,
                    shutdown,
                    tracker,
                    ..
                } = context.clone();
                context.tracker.spawn(session::serve(
                    stream, peer, hub, config, gate, shutdown, tracker, slot,
                ));
            }
            (Err((reason, refusal)), certs) => {
                telemetry::counters().refused(reason);
                tracing::info!(%peer, "refused: {refusal:?}");
                let grace = context.config.flush_grace;
                match certs {
                    Some(certs) if transport == Transport::Tls => {
                        // Said over TLS, so the client can read it; the handshake gets no
                        // more time than the goodbye would.
                        let acceptor = certs.acceptor();
                        context.tracker.spawn(async move {
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(grace, acceptor.accept(stream)).await
                            {
                                refuse(stream, peer, refusal, grace).await;
                            }
                        });
                    }
                    _ => {
                        context.tracker.spawn(refuse(stream, peer, refusal, grace));
                    }
                }
            }
        }
    }

    drop(listener);
    drop(tls_listener);
    context.tracker.close();
    context.tracker.wait().await;
    tracing::info!("all connections closed");
}

/// Accepts from `listener`, or waits forever when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Tells a refused client why, in one plain line, and closes.
async fn refuse<S: AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    refusal: Box<ServerEvent>,
    grace: Duration,
) {
    let text = refusal.to_plain().unwrap_or_default();
    let _ = tokio::time::timeout(grace, async {
        stream.write_all(text.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await;
    tracing::debug!(%peer, "refused connection closed");
}
