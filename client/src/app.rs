//! The client's state and its one way to change: [`App::update`].
//!
//! `update` is pure: it takes a [`Msg`] (a key, a paste, a server event, a clock tick) and
//! returns [`Effect`]s (lines to send, a bell, quit) for `main` to carry out. Time only enters
//! through [`Msg::Tick`] and the timestamps on server events, so every behaviour here is unit
//! tested without a terminal, a socket or a clock.

use crate::input::LineEditor;
use crate::net::NetEvent;
use chat_protocol::names::name_key;
use chat_protocol::{ClientCommand, ErrorCode, LeaveReason, ServerEvent, UserInfo, validate_name};
use chrono::NaiveTime;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often the user list is refreshed when nothing else asks for it. Well under the
/// server's default 30 s idle timeout, so an open client that nobody types into stays online.
pub const WHO_REFRESH: Duration = Duration::from_secs(10);
/// At most one `who` per this interval, however busy the room.
pub const WHO_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Outgoing lines per second, and how many may go at once. Below the server's default flood
/// limit (5/s, burst 20), so pasting a long text is paced instead of dropped.
pub const SEND_RATE: f64 = 4.0;
pub const SEND_BURST: f64 = 10.0;
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

/// What kind of line an entry is; the view styles each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Chat,
    Join,
    Leave,
    Timeout,
    Rename,
    Error,
    Notice,
    /// Said by this client, not the server.
    Info,
}

/// One line of the message pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time: NaiveTime,
    pub kind: EntryKind,
    /// The sender, for chat lines.
    pub name: Option<String>,
    pub text: String,
    /// Sent by this client.
    pub own: bool,
    /// Mentions this client's name.
    pub mention: bool,
}

/// The message pane's lines: a bounded queue with stable sequence numbers, so a scroll
/// position survives old lines falling off the front.
#[derive(Debug, Clone)]
pub struct Scrollback {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    cap: usize,
}

impl Scrollback {
    pub fn new(cap: usize) -> Self {
        Scrollback {
            entries: VecDeque::new(),
            first_seq: 0,
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() == self.cap {
            self.entries.pop_front();
            self.first_seq += 1;
        }
        self.entries.push_back(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number of the newest entry (meaningless when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.entries.len().saturating_sub(1) as u64
    }

    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.entries.get(index)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// Where the message pane is when scrolled up: its bottom row is a row of entry `seq`, with
/// `skip` more rows of that entry below the view. Counting rows inside an entry lets every
/// row of a message taller than the pane be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrollPos {
    pub seq: u64,
    pub skip: usize,
}

impl ScrollPos {
    /// Entry `seq`'s last row at the bottom of the view.
    pub fn at(seq: u64) -> Self {
        ScrollPos { seq, skip: 0 }
    }

    /// True when `self` shows older rows than `other`.
    fn is_above(self, other: ScrollPos) -> bool {
        self.seq < other.seq || (self.seq == other.seq && self.skip > other.skip)
    }
}

/// The rename popup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenameDialog {
    pub field: LineEditor,
    /// The server's refusal of the last try.
    pub server_error: Option<String>,
    /// A rename was sent and its answer has not come yet.
    pub waiting: bool,
}

impl RenameDialog {
    /// What the protocol's name rules say about the text typed so far.
    pub fn validation(&self) -> Result<(), String> {
        validate_name(self.field.text()).map_err(|e| e.to_string())
    }
}

/// Taking the chosen name again after a (re)connect. While it is not `Idle` the outbox is
/// held, so lines typed meanwhile go out under the name and not under the bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retake {
    Idle,
    /// Rename number `attempt` was sent and not yet answered.
    InFlight {
        attempt: u32,
    },
    /// Refused because the old connection still holds the name; ask again at `at` (set by
    /// the next tick when the refusal came before any tick).
    Waiting {
        attempt: u32,
        at: Option<Instant>,
    },
}

/// Tab completion in progress: repeated Tabs cycle through the matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Completion {
    start: usize,
    matches: Vec<String>,
    index: usize,
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
    pub users: Vec<UserInfo>,
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
    pub outbox: VecDeque<String>,
    /// A rename was sent and not yet answered (its name).
    rename_in_flight: Option<String>,
    /// A rename from the dialog waiting for a send token; it goes before any queued line.
    rename_to_send: Option<String>,
    /// Something changed that the user list should reflect.
    who_due: bool,
    last_who: Option<Instant>,
    last_tick: Option<Instant>,
    send_tokens: f64,
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
            users: Vec::new(),
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
            last_tick: None,
            send_tokens: SEND_BURST,
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
        }
        self.pump_outbox(&mut effects);
        effects
    }

    fn info(&mut self, kind: EntryKind, text: impl Into<String>) {
        self.push_entry(Entry {
            time: self.clock,
            kind,
            name: None,
            text: text.into(),
            own: false,
            mention: false,
        });
    }

    fn push_entry(&mut self, mut entry: Entry) {
        truncate_with_ellipsis(&mut entry.text, MAX_ENTRY_TEXT_BYTES);
        if let Some(name) = &mut entry.name {
            truncate_with_ellipsis(name, MAX_ENTRY_NAME_BYTES);
        }
        self.scrollback.push(entry);
        if let Some(pos) = self.scroll
            && pos.seq < self.scrollback.first_seq()
        {
            self.scroll = Some(ScrollPos::at(self.scrollback.first_seq()));
        }
        self.dirty = true;
    }

    // ----- keys -----

    fn on_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            // A second Ctrl+C while asking means it.
            if self.quit_confirm {
                effects.push(Effect::Quit);
            } else {
                self.request_quit(effects);
            }
            return;
        }
        if self.quit_confirm {
            self.on_quit_confirm_key(key, effects);
            return;
        }
        if self.show_help {
            // Any key closes the help; F1 and Esc are what it advertises.
            self.show_help = false;
            return;
        }
        if self.paste_confirm.is_some() {
            self.on_paste_confirm_key(key);
            return;
        }
        if self.rename.is_some() {
            self.on_rename_key(key, effects);
            return;
        }
        if key.code != KeyCode::Tab {
            self.completion = None;
        }
        match key.code {
            KeyCode::F(1) => self.show_help = true,
            KeyCode::F(2) => self.open_rename(None),
            KeyCode::Char('r') if ctrl => self.open_rename(None),
            KeyCode::Char('w') if ctrl => self.input.delete_word_before(),
            KeyCode::Char('u') if ctrl => self.input.delete_to_start(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char(_) if ctrl => {}
            KeyCode::Char(c) => self.input.insert_char(c),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home if ctrl || self.input.is_empty() => self.scroll_to_top(),
            KeyCode::End if ctrl || self.input.is_empty() => self.scroll = None,
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::PageUp => self.page_up(),
            KeyCode::PageDown => self.page_down(),
            KeyCode::Up => self.history_up(),
            KeyCode::Down => self.history_down(),
            KeyCode::Tab => self.complete(),
            KeyCode::Enter => {
                let line = self.input.take();
                self.history_pos = None;
                self.submit(line, effects);
            }
            _ => {}
        }
    }

    fn submit(&mut self, line: String, effects: &mut Vec<Effect>) {
        if line.is_empty() {
            return;
        }
        if self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > HISTORY_CAP {
                self.history.remove(0);
            }
        }
        if let Some(escaped) = line.strip_prefix("//") {
            self.queue_chat(format!("/{escaped}"));
            return;
        }
        let Some(command) = line.strip_prefix('/') else {
            self.queue_chat(line);
            return;
        };
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        let arg = arg.trim();
        match verb {
            "quit" | "exit" => self.request_quit(effects),
            "nick" | "rename" => {
                if arg.is_empty() {
                    self.open_rename(None);
                } else {
                    self.open_rename(Some(arg));
                    self.submit_rename(effects);
                }
            }
            "help" => self.show_help = true,
            "who" => self.who_due = true,
            _ => self.info(
                EntryKind::Error,
                format!("unknown command /{verb} (F1 lists them; type //{verb} to say it)"),
            ),
        }
    }

    fn queue_chat(&mut self, text: String) {
        // The server replaces these anyway; doing it here shows the user what will be sent.
        let text = chat_protocol::sanitize_text(&text).into_owned();
        self.outbox.push_back(text);
        if !self.is_connected() {
            self.info(
                EntryKind::Info,
                format!(
                    "not connected: {} line(s) will be sent when the connection is back",
                    self.outbox.len()
                ),
            );
        }
        // Sending a line is the moment a reader expects to see the newest lines again.
        self.scroll = None;
    }

    fn history_up(&mut self) {
        if self.history.is_empty() {
            return;
        }
        let pos = match &self.history_pos {
            None => {
                let draft = self.input.text().to_string();
                let pos = self.history.len() - 1;
                self.history_pos = Some((pos, draft));
                pos
            }
            Some((pos, draft)) => {
                let pos = pos.saturating_sub(1);
                self.history_pos = Some((pos, draft.clone()));
                pos
            }
        };
        self.input.set(self.history[pos].clone());
    }

    fn history_down(&mut self) {
        let Some((pos, draft)) = self.history_pos.take() else {
            return;
        };
        if pos + 1 < self.history.len() {
            self.history_pos = Some((pos + 1, draft));
            self.input.set(self.history[pos + 1].clone());
        } else {
            self.input.set(draft);
        }
    }

    fn complete(&mut self) {
        if let Some(completion) = &mut self.completion {
            completion.index = (completion.index + 1) % completion.matches.len();
            let (start, choice) = (
                completion.start,
                completion.matches[completion.index].clone(),
            );
            self.input.replace_before_cursor(start, &choice);
            return;
        }
        let (start, word) = self.input.word_before_cursor();
        if word.is_empty() {
            return;
        }
        let prefix = name_key(word);
        let at_line_start = start == 0;
        let matches: Vec<String> = self
            .users
            .iter()
            .filter(|u| name_key(&u.name).starts_with(&prefix))
            .filter(|u| Some(&u.addr) != self.own_addr.as_ref())
            .map(|u| {
                if at_line_start {
                    format!("{}: ", u.name)
                } else {
                    format!("{} ", u.name)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        self.input.replace_before_cursor(start, &matches[0]);
        self.completion = Some(Completion {
            start,
            matches,
            index: 0,
        });
    }

    // ----- quitting -----

    /// Quits at once unless lines are still queued: those are never dropped without asking.
    fn request_quit(&mut self, effects: &mut Vec<Effect>) {
        if self.outbox.is_empty() {
            effects.push(Effect::Quit);
        } else {
            self.quit_confirm = true;
        }
    }

    fn on_quit_confirm_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
        match key.code {
            KeyCode::Char('y' | 'Y') => effects.push(Effect::Quit),
            KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                self.quit_confirm = false;
                let queued = self.outbox.len();
                if queued > 0 {
                    self.info(
                        EntryKind::Info,
                        format!("not quitting: {queued} queued line(s) will still be sent"),
                    );
                }
            }
            _ => {}
        }
    }

    // ----- paste -----

    fn on_paste(&mut self, text: &str) {
        // The input changes under the completion, so the next Tab starts afresh.
        self.completion = None;
        // A paste goes where the keys go: never past an open popup to the hidden input.
        if self.show_help {
            self.show_help = false;
            self.info(EntryKind::Info, "paste ignored: the help was open");
            return;
        }
        if self.quit_confirm {
            self.info(
                EntryKind::Info,
                "paste ignored: answer whether to quit first (y/n)",
            );
            return;
        }
        if let Some(waiting) = &self.paste_confirm {
            let count = waiting.len();
            self.info(
                EntryKind::Info,
                format!(
                    "paste ignored: the paste of {count} lines still waits for y/n; answer it, \
                     then paste again"
                ),
            );
            return;
        }
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        if let Some(dialog) = &mut self.rename {
            // A name is one line: take the first that has something in it.
            let first = text.split('\n').map(str::trim).find(|l| !l.is_empty());
            dialog
                .field
                .insert_str(&chat_protocol::sanitize_text(first.unwrap_or("")));
            dialog.server_error = None;
            return;
        }
        let lines: Vec<String> = text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if !text.contains('\n') {
            self.input.insert_str(&chat_protocol::sanitize_text(&text));
            return;
        }
        if lines.len() > PASTE_CONFIRM_OVER {
            self.paste_confirm = Some(lines);
        } else {
            for line in lines {
                self.queue_chat(line);
            }
        }
    }

    fn on_paste_confirm_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                for line in self.paste_confirm.take().unwrap_or_default() {
                    self.queue_chat(line);
                }
            }
            KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                let count = self.paste_confirm.take().map_or(0, |l| l.len());
                self.info(EntryKind::Info, format!("paste of {count} lines not sent"));
            }
            _ => {}
        }
    }

    // ----- rename -----

    fn open_rename(&mut self, prefill: Option<&str>) {
        let field = LineEditor::with_text(prefill.unwrap_or(""));
        self.rename = Some(RenameDialog {
            field,
            server_error: None,
            waiting: false,
        });
    }

    fn on_rename_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let Some(dialog) = &mut self.rename else {
            return;
        };
        let field = &mut dialog.field;
        match key.code {
            KeyCode::Esc => {
                self.rename = None;
                return;
            }
            KeyCode::Enter => {
                self.submit_rename(effects);
                return;
            }
            KeyCode::Char('w') if ctrl => field.delete_word_before(),
            KeyCode::Char('u') if ctrl => field.delete_to_start(),
            KeyCode::Char(_) if ctrl => return,
            KeyCode::Char(c) => field.insert_char(c),
            KeyCode::Backspace => field.backspace(),
            KeyCode::Delete => field.delete(),
            KeyCode::Left => field.left(),
            KeyCode::Right => field.right(),
            KeyCode::Home => field.home(),
            KeyCode::End => field.end(),
            _ => return,
        }
        // The refusal was about the old text; the live rule check speaks for the new one.
        dialog.server_error = None;
    }

    fn submit_rename(&mut self, effects: &mut Vec<Effect>) {
        let connected = self.is_connected();
        let Some(dialog) = &mut self.rename else {
            return;
        };
        // One at a time: the answer to the last one is what the dialog shows.
        if dialog.validation().is_err() || dialog.waiting {
            return;
        }
        let name = dialog.field.text().to_string();
        if !connected {
            dialog.server_error = Some("not connected; try again when connected".into());
            return;
        }
        dialog.waiting = true;
        dialog.server_error = None;
        self.rename_in_flight = Some(name.clone());
        // The user picked a name: stop retrying the old one and let the queued lines follow
        // this rename (the server answers in order, so they go out under it if it succeeds).
        self.retake = Retake::Idle;
        // Sent by `pump_outbox` with a token from the send pacing, like any other line: a
        // rename the server drops for flooding would otherwise never be answered.
        self.rename_to_send = Some(name);
        self.pump_outbox(effects);
    }

    // ----- scrolling -----

    /// Rows and columns of the message pane.
    fn pane_size(&self) -> (usize, usize) {
        let area =
            crate::ui::message_area(ratatui::layout::Rect::new(0, 0, self.size.0, self.size.1));
        (usize::from(area.width), usize::from(area.height))
    }

    fn rows_of(&self, seq: u64, width: usize) -> usize {
        self.scrollback
            .get(seq)
            .map_or(1, |e| crate::ui::entry_rows(e, width))
    }

    /// Rows the pane shows when scrolled up: the bottom one holds the "more below" marker.
    fn scrolled_view_rows(&self) -> usize {
        let (_, height) = self.pane_size();
        if height > 1 {
            height - 1
        } else {
            height.max(1)
        }
    }

    /// The position that shows the oldest row at the top (scrolling up stops there), or
    /// `None` when everything fits. Walks at most a screenful of entries.
    fn top_anchor(&self) -> Option<ScrollPos> {
        let (width, _) = self.pane_size();
        let height = self.scrolled_view_rows();
        let mut rows = 0;
        let mut seq = self.scrollback.first_seq();
        while seq <= self.scrollback.last_seq() {
            rows += self.rows_of(seq, width);
            if rows >= height {
                return Some(ScrollPos {
                    seq,
                    skip: rows - height,
                });
            }
            seq += 1;
        }
        None
    }

    /// Sets the scroll position, kept below the top and pinned to the bottom when it
    /// reaches the newest row.
    fn set_scroll(&mut self, pos: ScrollPos) {
        self.dirty = true;
        let Some(anchor) = self.top_anchor() else {
            self.scroll = None;
            return;
        };
        let pos = if pos.is_above(anchor) { anchor } else { pos };
        self.scroll = (pos.seq < self.scrollback.last_seq() || pos.skip > 0).then_some(pos);
    }

    fn scroll_to_top(&mut self) {
        if !self.scrollback.is_empty() {
            self.set_scroll(ScrollPos {
                seq: self.scrollback.first_seq(),
                skip: usize::MAX,
            });
        }
    }

    /// Moves the view up by `count` rows, through the rows of long entries one by one.
    /// Costs at most `count` entries, whatever the scrollback's length.
    fn scroll_up_rows(&mut self, count: usize) {
        if self.scrollback.is_empty() {
            return;
        }
        let (width, _) = self.pane_size();
        let mut pos = self
            .scroll
            .unwrap_or(ScrollPos::at(self.scrollback.last_seq()));
        let mut left = count;
        loop {
            let rows = self.rows_of(pos.seq, width);
            // The width may have changed since the position was taken.
            pos.skip = pos.skip.min(rows - 1);
            let above_in_entry = rows - 1 - pos.skip;
            if left <= above_in_entry {
                pos.skip += left;
                break;
            }
            if pos.seq <= self.scrollback.first_seq() {
                pos.skip = rows - 1;
                break;
            }
            left -= above_in_entry + 1;
            pos = ScrollPos::at(pos.seq - 1);
        }
        self.set_scroll(pos);
    }

    /// Moves the view down by `count` rows; reaching the newest row pins it again.
    fn scroll_down_rows(&mut self, count: usize) {
        let Some(mut pos) = self.scroll else {
            return;
        };
        let (width, _) = self.pane_size();
        pos.skip = pos.skip.min(self.rows_of(pos.seq, width) - 1);
        let mut left = count;
        loop {
            if left <= pos.skip {
                pos.skip -= left;
                break;
            }
            if pos.seq >= self.scrollback.last_seq() {
                pos.skip = 0;
                break;
            }
            left -= pos.skip + 1;
            pos.seq += 1;
            pos.skip = self.rows_of(pos.seq, width) - 1;
        }
        self.set_scroll(pos);
    }

    /// A screenful less one row, so a line of context stays in view.
    fn page_rows(&self) -> usize {
        let (_, height) = self.pane_size();
        height.saturating_sub(1).max(1)
    }

    fn page_up(&mut self) {
        self.scroll_up_rows(self.page_rows());
    }

    fn page_down(&mut self) {
        self.scroll_down_rows(self.page_rows());
    }

    // ----- time -----

    fn on_tick(&mut self, now: Instant, time: NaiveTime, effects: &mut Vec<Effect>) {
        self.clock = time;
        if let Some(last) = self.last_tick {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.send_tokens = (self.send_tokens + elapsed * SEND_RATE).min(SEND_BURST);
        }
        self.last_tick = Some(now);
        if !self.is_connected() {
            return;
        }
        self.retry_retake(now, effects);
        let since_who = self.last_who.map(|t| now.saturating_duration_since(t));
        let refresh_due = since_who.is_none_or(|d| d >= WHO_REFRESH);
        let allowed = since_who.is_none_or(|d| d >= WHO_MIN_INTERVAL);
        if (self.who_due || refresh_due) && allowed && self.send_tokens >= 1.0 {
            self.send_tokens -= 1.0;
            self.who_due = false;
            self.last_who = Some(now);
            effects.push(Effect::Send(ClientCommand::Who));
        }
    }

    fn retry_retake(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        let Retake::Waiting { attempt, at } = self.retake else {
            return;
        };
        let Some(at) = at else {
            self.retake = Retake::Waiting {
                attempt,
                at: Some(now + RETAKE_RETRY),
            };
            return;
        };
        if now < at || self.rename_in_flight.is_some() || self.send_tokens < 1.0 {
            return;
        }
        let Some(chosen) = self.chosen_name.clone() else {
            self.retake = Retake::Idle;
            return;
        };
        self.send_tokens -= 1.0;
        self.retake = Retake::InFlight {
            attempt: attempt + 1,
        };
        self.rename_in_flight = Some(chosen.clone());
        effects.push(Effect::Send(ClientCommand::Rename { name: chosen }));
    }

    fn pump_outbox(&mut self, effects: &mut Vec<Effect>) {
        if !self.is_connected() {
            return;
        }
        if self.rename_to_send.is_some() {
            if self.send_tokens < 1.0 {
                return;
            }
            if let Some(name) = self.rename_to_send.take() {
                self.send_tokens -= 1.0;
                effects.push(Effect::Send(ClientCommand::Rename { name }));
            }
        }
        // Held while the name is being taken back, so queued lines go out under it.
        if self.retake != Retake::Idle {
            return;
        }
        while self.send_tokens >= 1.0
            && let Some(text) = self.outbox.pop_front()
        {
            self.send_tokens -= 1.0;
            effects.push(Effect::Send(ClientCommand::Chat { text }));
        }
    }

    // ----- network -----

    fn on_net(&mut self, event: NetEvent, effects: &mut Vec<Effect>) {
        self.dirty = true;
        match event {
            NetEvent::Connecting { attempt } => {
                self.connection = Connection::Connecting { attempt };
            }
            NetEvent::Connected { plain } => {
                self.plain = plain;
                // A new session: the old one's address and name mean nothing to it. (In plain
                // mode `on_ready` runs before the server says who we are; a stale name equal
                // to the chosen one would keep it from renaming.)
                self.own_addr = None;
                self.own_name = None;
                // In JSON mode the welcome follows at once and says who we are; only then
                // may the rename and the queued lines go, in that order.
                if plain {
                    self.on_ready(effects);
                }
            }
            NetEvent::Disconnected { reason, retry_in } => {
                self.info(
                    EntryKind::Error,
                    format!(
                        "connection lost: {reason}; reconnecting in {:.1}s",
                        retry_in.as_secs_f64()
                    ),
                );
                self.connection = Connection::Disconnected { reason, retry_in };
                self.users.clear();
                self.rename_in_flight = None;
                self.rename_to_send = None;
                self.retake = Retake::Idle;
                if let Some(dialog) = &mut self.rename {
                    dialog.waiting = false;
                }
            }
            NetEvent::Unsent(commands) => {
                // Lines the connection took but never wrote: first in line for the next one.
                for command in commands.into_iter().rev() {
                    if let ClientCommand::Chat { text } = command {
                        self.outbox.push_front(text);
                    }
                }
            }
            NetEvent::Unsendable(command) => {
                if let ClientCommand::Chat { text } = command {
                    self.info(
                        EntryKind::Error,
                        format!("not sent: the plain server would read \"{text}\" as a command"),
                    );
                }
            }
            NetEvent::Server(event, time) => {
                self.clock = time;
                self.on_server(event, time, effects);
            }
        }
    }

    /// The server is ready for our lines.
    fn on_ready(&mut self, effects: &mut Vec<Effect>) {
        self.connection = Connection::Connected;
        self.who_due = true;
        self.info(
            EntryKind::Info,
            format!(
                "connected to {}{}",
                self.settings.server,
                if self.plain { " (plain mode)" } else { "" }
            ),
        );
        self.rename_to_chosen(effects);
    }

    fn rename_to_chosen(&mut self, effects: &mut Vec<Effect>) {
        let Some(chosen) = self.chosen_name.clone() else {
            return;
        };
        if self.own_name.as_deref() == Some(chosen.as_str()) {
            return;
        }
        self.rename_in_flight = Some(chosen.clone());
        self.retake = Retake::InFlight { attempt: 1 };
        self.send_tokens -= 1.0;
        effects.push(Effect::Send(ClientCommand::Rename { name: chosen }));
    }

    /// The server refused the automatic rename to the chosen name: retry when the refusal is
    /// likely our own old connection, else report it and let the queued lines go.
    fn on_retake_refused(&mut self, attempt: u32, code: ErrorCode, wanted: &str, message: &str) {
        let taken = code == ErrorCode::NameTaken || (self.plain && code == ErrorCode::Other);
        let queued = self.outbox.len();
        if taken && self.chosen_confirmed && attempt < RETAKE_ATTEMPTS {
            self.retake = Retake::Waiting {
                attempt,
                at: self.last_tick.map(|t| t + RETAKE_RETRY),
            };
            if attempt == 1 {
                self.info(
                    EntryKind::Info,
                    format!(
                        "the server still holds {wanted} for the connection that was lost, \
                         until it times out: asking again every {}s; {queued} queued line(s) \
                         wait to go out under it (F2 to pick another name)",
                        RETAKE_RETRY.as_secs()
                    ),
                );
            }
            return;
        }
        self.retake = Retake::Idle;
        let addr = self
            .own_addr
            .clone()
            .unwrap_or_else(|| "your address".into());
        let tail = if queued > 0 {
            format!("; {queued} queued line(s) are sent as {addr}")
        } else {
            String::new()
        };
        let gave_up = if attempt >= RETAKE_ATTEMPTS && taken {
            " (gave up retrying)"
        } else {
            ""
        };
        self.info(
            EntryKind::Error,
            format!(
                "could not take the name {wanted}: {message}{gave_up} (F2 to pick another){tail}"
            ),
        );
    }

    fn is_own(&self, addr: &str) -> bool {
        self.own_addr.as_deref() == Some(addr)
    }

    fn mentions_me(&self, text: &str) -> bool {
        self.own_name
            .as_deref()
            .is_some_and(|name| mentions(text, name))
    }

    fn sort_users(&mut self) {
        self.users.sort_by(|a, b| {
            name_key(&a.name)
                .cmp(&name_key(&b.name))
                .then(a.addr.cmp(&b.addr))
        });
    }

    fn on_server(&mut self, event: ServerEvent, time: NaiveTime, effects: &mut Vec<Effect>) {
        let line = |kind, name: Option<String>, text: String| Entry {
            time,
            kind,
            name,
            text,
            own: false,
            mention: false,
        };
        match event {
            ServerEvent::Welcome { addr, name, .. } => {
                self.own_addr = Some(addr);
                self.own_name = Some(name);
                self.on_ready(effects);
            }
            ServerEvent::Here { addr, name } => {
                // The plain server's way of saying who you are.
                self.own_addr = Some(addr);
                self.own_name = Some(name);
                // Only if the rename at connect somehow did not go (it normally already has).
                if self.rename_in_flight.is_none() && self.retake == Retake::Idle {
                    self.rename_to_chosen(effects);
                }
            }
            ServerEvent::Join { addr, name } => {
                if !self.users.iter().any(|u| u.addr == addr) {
                    self.users.push(UserInfo {
                        addr,
                        name: name.clone(),
                    });
                    self.sort_users();
                }
                self.who_due = true;
                self.push_entry(line(EntryKind::Join, None, format!("{name} joined")));
            }
            ServerEvent::Chat { addr, name, text } => {
                let own = self.is_own(&addr);
                let mention = !own && self.mentions_me(&text);
                if mention && self.settings.bell {
                    effects.push(Effect::Bell);
                }
                self.push_entry(Entry {
                    time,
                    kind: EntryKind::Chat,
                    name: Some(name),
                    text,
                    own,
                    mention,
                });
            }
            ServerEvent::Leave { addr, name, reason } => {
                self.users.retain(|u| u.addr != addr);
                self.who_due = true;
                let (kind, text) = match reason {
                    LeaveReason::Quit => (EntryKind::Leave, format!("{name} left")),
                    LeaveReason::Timeout => (EntryKind::Timeout, format!("{name} timed out")),
                    LeaveReason::SendqExceeded => (
                        EntryKind::Leave,
                        format!("{name} was disconnected (too far behind)"),
                    ),
                    LeaveReason::ExcessFlood => (
                        EntryKind::Leave,
                        format!("{name} was disconnected (flooding)"),
                    ),
                };
                self.push_entry(line(kind, None, text));
            }
            ServerEvent::Rename { addr, old, new } => {
                if let Some(user) = self.users.iter_mut().find(|u| u.addr == addr) {
                    user.name = new.clone();
                }
                self.sort_users();
                self.who_due = true;
                self.push_entry(line(
                    EntryKind::Rename,
                    None,
                    format!("{old} is now known as {new}"),
                ));
            }
            ServerEvent::Renamed { name } => {
                // The plain parser cannot always tell the name; fall back to what we asked for.
                let name = if name.is_empty() {
                    self.rename_in_flight.clone().unwrap_or(name)
                } else {
                    name
                };
                self.rename_in_flight = None;
                self.rename = None;
                self.retake = Retake::Idle;
                self.chosen_confirmed = true;
                if let Some(addr) = &self.own_addr
                    && let Some(user) = self.users.iter_mut().find(|u| &u.addr == addr)
                {
                    user.name = name.clone();
                }
                self.sort_users();
                self.who_due = true;
                self.own_name = Some(name.clone());
                self.chosen_name = Some(name.clone());
                self.push_entry(line(
                    EntryKind::Rename,
                    None,
                    format!("you are now known as {name}"),
                ));
            }
            ServerEvent::Users { users } => {
                self.users = users;
                self.sort_users();
            }
            ServerEvent::Error { code, message } => {
                // Whatever the error (name taken, invalid, or the rename dropped for flooding),
                // while a rename waits for its answer this is it: errors come back in order,
                // and chat lines are paced so they seldom cause any.
                if let Some(wanted) = self.rename_in_flight.take() {
                    if let Retake::InFlight { attempt } = self.retake {
                        self.on_retake_refused(attempt, code, &wanted, &message);
                        return;
                    }
                    if let Some(dialog) = &mut self.rename {
                        dialog.waiting = false;
                        dialog.server_error = Some(message);
                        return;
                    }
                    self.push_entry(line(
                        EntryKind::Error,
                        None,
                        format!("could not take the name {wanted}: {message} (F2 to pick another)"),
                    ));
                    return;
                }
                self.push_entry(line(EntryKind::Error, None, format!("error: {message}")));
            }
            ServerEvent::Notice { message, .. } => {
                self.push_entry(line(EntryKind::Notice, None, message));
            }
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, ending it with '…'.
fn truncate_with_ellipsis(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

/// True when `text` names `name` as a word of its own. Every character a name may hold
/// (dots, dashes, digits, ...) belongs to the word, so for `bob` neither `bobby` nor
/// `bob.smith` counts; punctuation that ends a sentence or addresses someone (`bob:`,
/// `bob,`, `bob!`, `bob.`) does not, nor does an `@` or an opening bracket before it.
fn mentions(text: &str, name: &str) -> bool {
    const OPENERS: &[char] = &['@', '(', '"', '\'', '<', '{'];
    const CLOSERS: &[char] = &[',', '.', '!', '?', ':', ';', ')', '"', '\'', '>', '}', '…'];
    let in_word = |c: char| !chat_protocol::names::is_forbidden_in_name(c);
    let (text, name) = (name_key(text), name_key(name));
    if name.is_empty() {
        return false;
    }
    text.match_indices(&name).any(|(i, _)| {
        let before = text[..i].trim_end_matches(OPENERS).chars().next_back();
        let after = text[i + name.len()..]
            .trim_start_matches(CLOSERS)
            .chars()
            .next();
        !before.is_some_and(in_word) && !after.is_some_and(in_word)
    })
}

#[cfg(test)]
mod tests;
