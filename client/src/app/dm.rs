//! Direct messages: `/msg NAME TEXT` sends one, `/r TEXT` answers whoever sent the last one
//! received, and both directions show in the pane apart from chat, a received one ringing
//! the bell.

use super::{App, Effect, Entry, EntryKind};
use chat_protocol::{ClientCommand, UserInfo};
use chrono::NaiveTime;

impl App {
    /// `/msg NAME TEXT`.
    pub(super) fn submit_dm(&mut self, arg: &str) {
        let (to, text) = arg.split_once(' ').unwrap_or((arg, ""));
        let text = text.trim();
        if to.is_empty() || text.is_empty() {
            self.info(
                EntryKind::Error,
                "usage: /msg NAME TEXT (Tab completes the name)",
            );
            return;
        }
        self.queue_dm(to.to_string(), text);
    }

    /// `/r TEXT`: to whoever sent the last direct message received.
    pub(super) fn submit_reply(&mut self, text: &str) {
        let Some(to) = self.last_dm_from.clone() else {
            self.info(
                EntryKind::Error,
                "nobody has sent you a direct message yet: /r answers the last one",
            );
            return;
        };
        if text.is_empty() {
            self.info(EntryKind::Error, format!("usage: /r TEXT (to {to})"));
            return;
        }
        self.queue_dm(to, text);
    }

    fn queue_dm(&mut self, to: String, text: &str) {
        let text = chat_protocol::sanitize_text(text).into_owned();
        self.queue(ClientCommand::Dm { to, text });
    }

    /// A direct message, received or (the server's echo) sent.
    pub(super) fn on_dm(
        &mut self,
        from: UserInfo,
        to: UserInfo,
        text: String,
        time: NaiveTime,
        effects: &mut Vec<Effect>,
    ) {
        // The plain parser knows the sender's address but not the recipient's.
        let sent = self.is_own(&from.addr);
        let (kind, name) = if sent {
            (EntryKind::DmSent, to.name)
        } else {
            self.last_dm_from = Some(from.name.clone());
            if self.settings.bell {
                effects.push(Effect::Bell);
            }
            (EntryKind::DmReceived, from.name)
        };
        self.push_entry(Entry {
            name: Some(name),
            own: sent,
            ..Entry::line(time, kind, text)
        });
    }
}
