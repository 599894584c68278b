//! The chat protocol, shared by `chat-server`, `chat-tui` and `chat-bench`.
//!
//! Pure: no I/O and no async runtime, so every rule here can be unit and property tested
//! on its own, and the server and the clients cannot disagree about it.
//!
//! - [`framing`]: splitting a byte stream into lines, with a length limit that never buffers
//!   more than one line.
//! - [`command`]: what a client may send (plain nc lines or JSON lines).
//! - [`event`]: what the server sends, rendered in the original's plain text or as JSON lines.
//! - [`names`]: which names a user may choose.
//! - [`sanitize`]: the one place that decides which characters may reach another terminal.
//! - [`limits`]: defaults shared by the server and its clients.
//! - [`rate`]: the token bucket behind the server's flood limit and the client's send pacing.
//!
//! `docs/PROTOCOL.md` at the repository root describes the wire format with examples.

pub mod command;
pub mod event;
pub mod framing;
pub mod limits;
pub mod names;
pub mod rate;
pub mod sanitize;

pub use command::{ClientCommand, CommandError, HELLO_LINE, PROTOCOL_VERSION};
pub use event::{
    ErrorCode, LeaveReason, NoticeCode, PlainLine, PlainParser, ServerEvent, Stamp, UserInfo,
};
pub use framing::{Frame, LineFramer};
pub use names::{NameError, validate_name};
pub use sanitize::sanitize_text;
