//! Pastes: one line goes into the input, several are sent as separate messages (asking
//! first when there are many), and a paste goes where the keys go when a popup is open.

use super::{App, EntryKind, PASTE_CONFIRM_OVER};
use crossterm::event::{KeyCode, KeyEvent};

impl App {
    pub(super) fn on_paste(&mut self, text: &str) {
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

    pub(super) fn on_paste_confirm_key(&mut self, key: KeyEvent) {
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
}
