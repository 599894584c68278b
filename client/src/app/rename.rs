//! Renaming: the dialog, and taking the chosen name back after a (re)connect.
//!
//! One rename is in flight at a time; its answer is a `renamed` event or an error whose code
//! says it answers a rename (see [`rename_refusal`]); any other error is not about it.

use super::{App, Effect, Entry, EntryKind, RETAKE_ATTEMPTS, RETAKE_RETRY};
use crate::input::LineEditor;
use chat_protocol::{ClientCommand, ErrorCode, validate_name};
use chrono::NaiveTime;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::time::Instant;

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

impl App {
    pub(super) fn open_rename(&mut self, prefill: Option<&str>) {
        let field = LineEditor::with_text(prefill.unwrap_or(""));
        self.rename = Some(RenameDialog {
            field,
            server_error: None,
            waiting: false,
        });
    }

    pub(super) fn on_rename_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
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

    pub(super) fn submit_rename(&mut self, effects: &mut Vec<Effect>) {
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

    pub(super) fn retry_retake(&mut self, now: Instant, effects: &mut Vec<Effect>) {
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
        if now < at || self.rename_in_flight.is_some() || !self.pacer.ready() {
            return;
        }
        let Some(chosen) = self.chosen_name.clone() else {
            self.retake = Retake::Idle;
            return;
        };
        self.pacer.try_take();
        self.retake = Retake::InFlight {
            attempt: attempt + 1,
        };
        self.rename_in_flight = Some(chosen.clone());
        effects.push(Effect::Send(ClientCommand::Rename { name: chosen }));
    }

    pub(super) fn rename_to_chosen(&mut self, effects: &mut Vec<Effect>) {
        let Some(chosen) = self.chosen_name.clone() else {
            return;
        };
        if self.own_name.as_deref() == Some(chosen.as_str()) {
            return;
        }
        self.rename_in_flight = Some(chosen.clone());
        self.retake = Retake::InFlight { attempt: 1 };
        // It goes whatever the pacing says (it is the first thing sent), but uses a token.
        self.pacer.try_take();
        effects.push(Effect::Send(ClientCommand::Rename { name: chosen }));
    }

    /// The server refused the automatic rename to the chosen name: retry when the refusal is
    /// likely our own old connection, else report it and let the queued lines go.
    pub(super) fn on_retake_refused(
        &mut self,
        attempt: u32,
        code: ErrorCode,
        wanted: &str,
        message: &str,
    ) {
        let taken = code == ErrorCode::NameTaken;
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

    /// The server granted a rename (ours, from the dialog or a retake).
    pub(super) fn on_renamed(&mut self, name: String, time: NaiveTime) {
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
        if let Some(addr) = self.own_addr.clone() {
            self.users.rename(&addr, &name);
        }
        self.list_changed();
        self.own_name = Some(name.clone());
        self.chosen_name = Some(name.clone());
        self.push_entry(Entry::line(
            time,
            EntryKind::Rename,
            format!("you are now known as {name}"),
        ));
    }

    /// An error from the server: true when it answered the rename in flight (and was shown
    /// where that rename was asked for).
    pub(super) fn on_rename_refused(
        &mut self,
        code: ErrorCode,
        message: &str,
        time: NaiveTime,
    ) -> bool {
        let Some(code) = rename_refusal(code, message, self.plain) else {
            return false;
        };
        let Some(wanted) = self.rename_in_flight.take() else {
            return false;
        };
        if let Retake::InFlight { attempt } = self.retake {
            self.on_retake_refused(attempt, code, &wanted, message);
            return true;
        }
        if let Some(dialog) = &mut self.rename {
            dialog.waiting = false;
            dialog.server_error = Some(message.to_string());
            return true;
        }
        self.push_entry(Entry::line(
            time,
            EntryKind::Error,
            format!("could not take the name {wanted}: {message} (F2 to pick another)"),
        ));
        true
    }
}

/// The code of an error that answers a rename: the name broke the rules, is taken, or the
/// rename was dropped for flooding. `None` for every other error (a line too long, invalid
/// UTF-8, ...), which is not about the rename. The plain dialect has no codes, so there our
/// server's wording decides (the original server never refuses a rename).
pub fn rename_refusal(code: ErrorCode, message: &str, plain: bool) -> Option<ErrorCode> {
    match code {
        ErrorCode::InvalidName | ErrorCode::NameTaken | ErrorCode::Flood => Some(code),
        ErrorCode::Other if plain => {
            if let Some(reason) = message.strip_prefix("rename refused: ") {
                Some(if reason.ends_with(" is already taken") {
                    ErrorCode::NameTaken
                } else {
                    ErrorCode::InvalidName
                })
            } else if message.starts_with("you are sending too fast") {
                Some(ErrorCode::Flood)
            } else {
                None
            }
        }
        _ => None,
    }
}
