//! Every limit the server enforces, with its default. `main.rs` maps each to a flag.

use crate::auth::Password;
use crate::cluster::ClusterConfig;
use crate::room_log::HistoryConfig;
use chat_protocol::limits;
use std::time::Duration;

/// Server settings. For every limit, `0` means "no limit".
#[derive(Debug, Clone)]
pub struct Config {
    /// Disconnect a user who sends no complete line for this long (`0`: never).
    pub idle_timeout: Duration,
    /// Longest accepted line in bytes, line ending excluded.
    pub max_line_bytes: usize,
    /// Bytes that may wait in one connection's outgoing queue; past that the connection is
    /// a slow consumer and is dropped, so it can never hold up or bloat the server.
    pub sendq_bytes: usize,
    /// Connections held at once.
    pub max_clients: usize,
    /// Connections held at once from one IP address.
    pub max_per_ip: usize,
    /// Average lines per second one connection may send.
    pub rate: f64,
    /// Lines one connection may send in a burst before `rate` applies.
    pub burst: u32,
    /// How long a closing connection may take to flush what is queued for it, at shutdown
    /// or when it is dropped, before it is cut off.
    pub flush_grace: Duration,
    /// How long the socket of a client dropped for falling behind stays open so that the
    /// reason can still reach it if it starts reading again. Its queue is freed at once;
    /// only the socket and a small task remain.
    pub farewell_wait: Duration,
    /// The room log: where, for how long, how durable. The library's default keeps it in
    /// memory (tests); the binary's default is a file in the working directory.
    pub history: HistoryConfig,
    /// The room password; `None` (the default): anyone may join, as before.
    pub password: Option<Password>,
    /// A connection must give the right password within this long after connecting, or it
    /// is closed (10 s).
    pub auth_timeout: Duration,
    /// Wrong passwords accepted from one IP address per `auth_ip_window`, over all its
    /// connections; past that its tries are refused unchecked until the window ends, so
    /// reconnecting buys no more guesses (`0`: no limit).
    pub auth_ip_failures: u32,
    pub auth_ip_window: Duration,
    /// A TLS handshake that has not finished after this long is abandoned and the
    /// connection closed (10 s): plain `nc` on the TLS port never becomes a user.
    pub tls_handshake_timeout: Duration,
    /// Cluster mode: the room lives on this Redis, shared with the other nodes, instead of
    /// the SQLite log (`history.db` is then unused). `None`: a single node.
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: limits::DEFAULT_IDLE_TIMEOUT,
            max_line_bytes: limits::DEFAULT_MAX_LINE_BYTES,
            sendq_bytes: limits::DEFAULT_SENDQ_BYTES,
            max_clients: limits::DEFAULT_MAX_CLIENTS,
            max_per_ip: limits::DEFAULT_MAX_PER_IP,
            rate: limits::DEFAULT_RATE,
            burst: limits::DEFAULT_BURST,
            flush_grace: Duration::from_secs(1),
            farewell_wait: Duration::from_secs(10),
            history: HistoryConfig::default(),
            password: None,
            auth_timeout: Duration::from_secs(10),
            auth_ip_failures: 10,
            auth_ip_window: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            cluster: None,
        }
    }
}

impl Config {
    /// No flood limit and no connection limits: for load tests and benchmarks.
    pub fn unlimited() -> Self {
        Config {
            max_clients: 0,
            max_per_ip: 0,
            rate: 0.0,
            ..Config::default()
        }
    }
}
