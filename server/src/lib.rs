//! `chat-server`: the chat room of the classic Go tutorial, on tokio, safe for nc users and
//! for programs.
//!
//! Shaped like tokio's mini-redis: [`run`] serves a bound listener until a cancellation
//! token fires, so tests start a real server on `127.0.0.1:0` in-process, and `main.rs` only
//! parses flags, binds and wires signals.
//!
//! Modules, one concept each:
//! - [`config`]: every limit, with its default.
//! - [`listener`]: the accept loop and the connection limits (overall and per IP).
//! - [`session`]: one user's connection: framing, commands, idle timeout, flood limit.
//! - [`hub`]: who is online, names, and the room's one order of events.
//! - [`room_log`]: the durable room log on SQLite (write-ahead, group commit, retention) and
//!   the history answered from it.
//! - [`outbox`]: one connection's bounded outgoing queue and the task that writes it.
//! - [`memory`]: returning memory to the system after storms of joins and leaves.
//! - [`tls`]: the TLS certificate and key, reloadable.
//! - [`auth`]: the room password and the limit on wrong tries per address.
//! - [`telemetry`]: the metrics the server counts, and the `/metrics` and `/healthz` endpoint.
//! - [`cluster`]: several nodes serving one room through Redis (`--cluster`).

pub mod auth;
pub mod cluster;
pub mod config;
pub mod hub;
pub mod listener;
pub mod memory;
pub mod outbox;
pub mod room_log;
pub mod session;
pub mod telemetry;
pub mod tls;

pub use auth::Password;
pub use config::Config;
pub use listener::{Server, run};
pub use room_log::{HistoryConfig, HistoryDb, RoomLog};
