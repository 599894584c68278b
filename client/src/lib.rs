//! `chat-tui`: a terminal client for `chat-server`, in The Elm Architecture.
//!
//! - [`app`]: the state and its pure `update`, the only place behaviour lives.
//! - [`scrollback`]: the message pane's entries (data shared by the three below).
//! - [`layout`]: where things go and how many rows an entry takes, shared by `app` (to
//!   scroll) and `ui` (to draw), so neither depends on the other's internals.
//! - [`ui`]: draws the state; reads it, never changes it.
//! - [`net`]: the connection task, talking to the app through channels.
//! - [`input`]: the line editor used by the input line and the rename dialog.
//!
//! The binary's `main.rs` only wires these to a terminal. This is a library too so the
//! benchmark can drive `update` and `draw` directly.

pub mod app;
pub mod input;
pub mod layout;
pub mod net;
pub mod scrollback;
pub mod ui;
