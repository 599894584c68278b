//! The client's state and its one way to change: [`App::update`].
//!
//! `update` is pure: it takes a [`Msg`] (a key, a paste, a server event, a clock tick) and
//! returns [`Effect`]s (lines to send, a bell, quit) for `main` to carry out. Time only enters
//! through [`Msg::Tick`] and the timestamps on server events, so every behaviour here is unit
//! tested without a terminal, a socket or a clock.
//!
//! One concern per submodule, each adding methods to [`App`]: `keys` (the input line,
//! history, completion, commands, quitting), `paste`, `rename` (the dialog and taking the
//! name back after a reconnect), `dm` (direct messages), `scroll`, `history` (the room's
//! history: on connect, after a reconnect, scrolling up), `pacing` (the send token bucket),
//! `keepalive` (the clock: ping, `who`, retries), `server` (what the connection reports),
//! `users` (the sorted sidebar list) and `text` (mentions, cutting long text).

mod dm;
mod history;
mod keepalive;
mod keys;
mod pacing;
mod paste;
mod rename;
mod scroll;
mod server;
mod text;
mod users;

pub use history::{Ask, HISTORY_ON_CONNECT, HISTORY_PAGE, HISTORY_RESUME_PAGE, History};
pub use keepalive::{WHO_MIN_INTERVAL, WHO_REFRESH, ping_interval};
pub use pacing::{Pacer, SEND_BURST, SEND_RATE};
pub use rename::{RenameDialog, Retake};
pub use users::Users;

use crate::input::LineEditor;
use crate::net::NetEvent;
use crate::scrollback::{Entry, EntryKind, Placed, ScrollPos, Scrollback};
use chat_protocol::ClientCommand;
use chrono::NaiveTime;
use crossterm::event::{KeyEvent, KeyEventKind};
use keys::Completion;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use text::truncate_with_ellipsis;

/// A paste with more lines than this asks before sending.
pub const PASTE_CONFIRM_OVER: usize = 5;
/// Rows the mouse wheel scrolls per notch.
pub const WHEEL_STEP: usize = 3;
/// Lines kept in the input history.
pub const HISTORY_CAP: usize = 500;
/// Longest text kept for one message, in bytes: twice what our server lets anyone say, so
/// only a hostile or broken server's line is cut (marked with '…'). Wrapping a megabyte-long
/// line on every frame would make typing lag.
pub const MAX_ENTRY_TEXT_BYTES: usize = chat_protocol::limits::DEFAULT_MAX_LINE_BYTES * 2;
/// Longest sender name kept, in bytes (names are at most 32 characters).
pub const MAX_ENTRY_NAME_BYTES: usize = 256;

/// After a reconnect the server may still hold our name for the old, half-dead connection
/// until its idle timeout (30 s by default): ask again this often...
pub const RETAKE_RETRY: Duration = Duration::from_secs(5);
/// ...this many times in all (two minutes), then give the queued lines up to the address.
pub const RETAKE_ATTEMPTS: u32 = 24;

/// Command-line choices that shape the app.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `HOST:PORT`, for the status bar.
    pub server: String,
    /// The name to take after every (re)connect.
    pub name: Option<String>,
    /// Entries kept in the message pane.
    pub scrollback: usize,
    /// Ring the terminal bell when a line mentions you.
    pub bell: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: "127.0.0.1:8000".into(),
            name: None,
            scrollback: 10_000,
            bell: true,
        }
    }
}

/// Everything that can happen to the app.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    /// Bracketed paste: the pasted text in one piece.
    Paste(String),
    WheelUp,
    WheelDown,
    /// The terminal's size in cells.
    Resize {
        width: u16,
        height: u16,
    },
    /// The clock: paces sending and `who`. `time` is the local wall-clock time.
    Tick {
        now: Instant,
        time: NaiveTime,
    },
    Net(NetEvent),
    /// Events the connection has read that are still waiting to be applied (after a batch).
    Backlog(usize),
}

/// What `main` must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send(ClientCommand),
    Bell,
    Quit,
}

/// How the link to the server is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Connecting { attempt: u32 },
    Connected,
    Disconnected { reason: String, retry_in: Duration },
}

/// The whole client state.
#[derive(Debug, Clone)]
pub struct App {
    pub settings: Settings,
    pub connection: Connection,
    /// True in `--plain` mode (the original server): set by the net task.
    pub plain: bool,
    /// Own address and name as the server knows them.
    pub own_addr: Option<String>,
    pub own_name: Option<String>,
    /// The name to take again after a reconnect: `--name`, then each successful rename.
    pub chosen_name: Option<String>,
    /// The server granted `chosen_name` once, so a refusal after a reconnect is most likely
    /// our own old connection still holding it: worth retrying.
    chosen_confirmed: bool,
    pub retake: Retake,
    /// Online users, sorted by name (case-insensitively).
    pub users: Users,
    pub scrollback: Scrollback,
    /// `None`: pinned to the newest line. `Some(pos)`: scrolled up to `pos`.
    pub scroll: Option<ScrollPos>,
    pub input: LineEditor,
    pub history: Vec<String>,
    /// Position while browsing history with Up/Down, and the draft it replaced.
    history_pos: Option<(usize, String)>,
    completion: Option<Completion>,
    pub rename: Option<RenameDialog>,
    /// A multi-line paste waiting for a yes or no.
    pub paste_confirm: Option<Vec<String>>,
    /// The user asked to quit while lines were still queued: waiting for a yes or no.
    pub quit_confirm: bool,
    pub show_help: bool,
    /// Chat lines waiting to be sent: while disconnected, or paced by the send rate.
    pub outbox: VecDeque<ClientCommand>,
    /// A rename was sent and not yet answered (its name).
    rename_in_flight: Option<String>,
    /// A rename from the dialog waiting for a send token; it goes before any queued line.
    rename_to_send: Option<String>,
    /// Something changed that the user list should reflect.
    who_due: bool,
    last_who: Option<Instant>,
    /// JSON mode: ping when nothing was sent for this long (from the welcome's idle timeout).
    ping_every: Option<Duration>,
    /// When something was last sent (the tick time it went out at).
    last_sent: Option<Instant>,
    last_tick: Option<Instant>,
    pacer: Pacer,
    /// Events read from the server and not yet applied: non-zero when the client cannot
    /// keep up (drawing stalls), shown in the status bar.
    pub behind: usize,
    /// Who sent the last direct message received (for `/r`).
    pub last_dm_from: Option<String>,
    /// The room's history: what was asked, what is due.
    pub room_history: History,
    /// Local time of the latest tick or event, for lines this client adds itself.
    pub clock: NaiveTime,
    /// Terminal size, for paging by screenfuls.
    pub size: (u16, u16),
    /// Something visible changed since the last draw.
    pub dirty: bool,
}

impl App {
    pub fn new(settings: Settings) -> Self {
        let scrollback = Scrollback::new(settings.scrollback);
        App {
            chosen_name: settings.name.clone(),
            chosen_confirmed: false,
            retake: Retake::Idle,
            settings,
            connection: Connection::Connecting { attempt: 1 },
            plain: false,
            own_addr: None,
            own_name: None,
            users: Users::new(),
            scrollback,
            scroll: None,
            input: LineEditor::new(),
            history: Vec::new(),
            history_pos: None,
            completion: None,
            rename: None,
            paste_confirm: None,
            quit_confirm: false,
            show_help: false,
            outbox: VecDeque::new(),
            rename_in_flight: None,
            rename_to_send: None,
            who_due: false,
            last_who: None,
            ping_every: None,
            last_sent: None,
            last_tick: None,
            pacer: Pacer::new(),
            behind: 0,
            room_history: History::default(),
            last_dm_from: None,
            clock: NaiveTime::MIN,
            size: (80, 24),
            dirty: true,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connection == Connection::Connected
    }

    /// Lines below the view when scrolled up.
    pub fn lines_below(&self) -> u64 {
        match self.scroll {
            // The rest of a partly shown entry counts as a line below.
            Some(pos) => {
                self.scrollback.last_seq().saturating_sub(pos.seq) + u64::from(pos.skip > 0)
            }
            None => 0,
        }
    }

    /// Applies one message and says what to do about it.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        let mut effects = Vec::new();
        match msg {
            Msg::Key(key) => {
                if matches!(key.kind, KeyEventKind::Press | KeyEventKind::Repeat) {
                    self.dirty = true;
                    self.on_key(key, &mut effects);
                }
            }
            Msg::Paste(text) => {
                self.dirty = true;
                self.on_paste(&text);
            }
            Msg::WheelUp => self.scroll_up_rows(WHEEL_STEP),
            Msg::WheelDown => self.scroll_down_rows(WHEEL_STEP),
            Msg::Resize { width, height } => {
                self.size = (width, height);
                self.dirty = true;
            }
            Msg::Tick { now, time } => self.on_tick(now, time, &mut effects),
            Msg::Net(event) => self.on_net(event, &mut effects),
            Msg::Backlog(queued) => {
                if queued != self.behind {
                    self.behind = queued;
                    self.dirty = true;
                }
            }
        }
        self.pump_outbox(&mut effects);
        self.pump_history(&mut effects);
        if effects.iter().any(|e| matches!(e, Effect::Send(_))) {
            // The server's idle clock restarts with every line it gets.
            self.last_sent = self.last_tick;
        }
        effects
    }

    pub(crate) fn info(&mut self, kind: EntryKind, text: impl Into<String>) {
        self.push_entry(Entry::line(self.clock, kind, text));
    }

    pub(crate) fn push_entry(&mut self, mut entry: Entry) {
        truncate_with_ellipsis(&mut entry.text, MAX_ENTRY_TEXT_BYTES);
        if let Some(name) = &mut entry.name {
            truncate_with_ellipsis(name, MAX_ENTRY_NAME_BYTES);
        }
        let placed = self.scrollback.push(entry);
        self.placed(placed);
    }

    /// Keeps the view on the lines it showed after the scrollback changed.
    pub(crate) fn placed(&mut self, placed: Placed) {
        match placed {
            Placed::Duplicate => return,
            Placed::Appended => {}
            Placed::Inserted(at) => {
                // Entries from `at` on moved up by one; a view at or below them follows.
                if let Some(pos) = &mut self.scroll
                    && pos.seq >= at
                {
                    pos.seq += 1;
                }
            }
        }
        if let Some(pos) = self.scroll
            && pos.seq < self.scrollback.first_seq()
        {
            self.scroll = Some(ScrollPos::at(self.scrollback.first_seq()));
        }
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests;
