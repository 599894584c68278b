//! `chat-bench`: a load generator for chat-server, the original Go server and redis pub/sub.
//!
//! Every benchmark message carries its sender, sequence number and send time, so each
//! receiver counts lost, duplicated and reordered deliveries and the latency of each one.
//! With the server's pid it also reads the server's CPU time and RSS from /proc.
//!
//! - [`wire`]: the payload line, per-target encoding, finding it in what comes back.
//! - [`conn`]: connecting a client and waiting until the target has joined it.
//! - [`scenario`]: fanout, latency, connections, slow-consumer and churn.
//! - [`resume`]: reconnecting JSON clients fetch their gap from the room log (issue 9).
//! - [`idle`]: an idle room of keepalive clients, `ping` or the old `who` (issue 8).
//! - [`stats`]: per-receiver counting and the report.
//! - [`procfs`]: CPU time and RSS of a process, and our own fd limit.
//! - [`summary`]: the markdown table of a `run-all.sh` session.

pub mod conn;
pub mod idle;
pub mod procfs;
pub mod resume;
pub mod scenario;
pub mod stats;
pub mod summary;
pub mod wire;

pub use scenario::{Broadcast, Env, Pacing};
pub use stats::Report;
pub use wire::Target;
