//! Keys: the input line, history, Tab completion, slash commands and quitting.

use super::text::fold_case;
use super::{App, Effect, EntryKind, HISTORY_CAP};
use chat_protocol::ClientCommand;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Tab completion in progress: repeated Tabs cycle through the matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Completion {
    start: usize,
    matches: Vec<String>,
    index: usize,
}

impl App {
    pub(super) fn on_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
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

    pub(super) fn submit(&mut self, line: String, effects: &mut Vec<Effect>) {
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
            "msg" | "m" => self.submit_dm(arg),
            "r" | "reply" => self.submit_reply(arg),
            _ => self.info(
                EntryKind::Error,
                format!("unknown command /{verb} (F1 lists them; type //{verb} to say it)"),
            ),
        }
    }

    pub(super) fn queue_chat(&mut self, text: String) {
        // The server replaces these anyway; doing it here shows the user what will be sent.
        let text = chat_protocol::sanitize_text(&text).into_owned();
        self.queue(ClientCommand::Chat { text });
    }

    /// Queues a line to send (paced, and kept while disconnected).
    pub(super) fn queue(&mut self, command: ClientCommand) {
        self.outbox.push_back(command);
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

    pub(super) fn history_up(&mut self) {
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

    pub(super) fn history_down(&mut self) {
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

    pub(super) fn complete(&mut self) {
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
        let prefix = fold_case(word);
        let at_line_start = start == 0;
        let matches: Vec<String> = self
            .users
            .iter()
            .filter(|u| fold_case(&u.name).starts_with(&prefix))
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

    /// Quits at once unless lines are still queued: those are never dropped without asking.
    pub(super) fn request_quit(&mut self, effects: &mut Vec<Effect>) {
        if self.outbox.is_empty() {
            effects.push(Effect::Quit);
        } else {
            self.quit_confirm = true;
        }
    }

    pub(super) fn on_quit_confirm_key(&mut self, key: KeyEvent, effects: &mut Vec<Effect>) {
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
}
