//! Defaults shared by the server and its clients. The server exposes each as a flag.

use std::time::Duration;

/// The original server's listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
/// The original server's idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line (without its line ending) the server accepts from a client.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4096;
/// Longest name, in characters (Unicode scalar values).
pub const MAX_NAME_CHARS: usize = 32;
/// Bytes that may wait in one connection's outgoing queue before it counts as a slow consumer.
pub const DEFAULT_SENDQ_BYTES: usize = 1024 * 1024;
/// Connections the server holds at once.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Connections from one IP address at once.
pub const DEFAULT_MAX_PER_IP: usize = 64;
/// Lines per second a connection may send on average.
pub const DEFAULT_RATE: f64 = 5.0;
/// Lines a connection may send at once before the rate applies (a pasted paragraph).
pub const DEFAULT_BURST: u32 = 20;
