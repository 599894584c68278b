//! What the connection reports: connecting, losing the link, and the server's events.

use super::text::mentions;
use super::{App, Connection, Effect, Entry, EntryKind, Retake, ping_interval};
use crate::net::NetEvent;
use chat_protocol::{ClientCommand, LeaveReason, ServerEvent, UserInfo};
use chrono::NaiveTime;

impl App {
    pub(super) fn on_net(&mut self, event: NetEvent, effects: &mut Vec<Effect>) {
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
                self.history_lost();
                self.rename_in_flight = None;
                self.rename_to_send = None;
                self.retake = Retake::Idle;
                if let Some(dialog) = &mut self.rename {
                    dialog.waiting = false;
                }
            }
            NetEvent::Listed(user) => {
                self.users.insert(user);
            }
            NetEvent::Unsent(commands) => {
                // Lines the connection took but never wrote: first in line for the next one.
                for command in commands.into_iter().rev() {
                    if matches!(
                        command,
                        ClientCommand::Chat { .. } | ClientCommand::Dm { .. }
                    ) {
                        self.outbox.push_front(command);
                    }
                }
            }
            NetEvent::Unsendable(command) => match command {
                ClientCommand::Chat { text } => self.info(
                    EntryKind::Error,
                    format!("not sent: the plain server would read \"{text}\" as a command"),
                ),
                ClientCommand::Dm { to, .. } => self.info(
                    EntryKind::Error,
                    format!("not sent: the plain dialect cannot carry that direct message to {to}"),
                ),
                _ => {}
            },
            NetEvent::Server(event, time) => {
                self.clock = time;
                self.on_server(event, time, effects);
            }
        }
    }

    /// The server is ready for our lines.
    pub(super) fn on_ready(&mut self, effects: &mut Vec<Effect>) {
        self.connection = Connection::Connected;
        // The server's idle clock starts now; the first `who` goes at the next tick.
        self.last_sent = self.last_tick;
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

    pub(super) fn is_own(&self, addr: &str) -> bool {
        self.own_addr.as_deref() == Some(addr)
    }

    pub(super) fn mentions_me(&self, text: &str) -> bool {
        self.own_name
            .as_deref()
            .is_some_and(|name| mentions(text, name))
    }

    /// The pane's line for a room event (a chat line, join, leave or rename), live or from
    /// history alike; `None` for other events.
    pub(super) fn room_entry(&self, event: &ServerEvent, time: NaiveTime) -> Option<Entry> {
        let room_seq = event.stamp().map(|stamp| stamp.seq);
        let line = |kind, text: String| Entry {
            room_seq,
            ..Entry::line(time, kind, text)
        };
        Some(match event {
            ServerEvent::Chat {
                addr, name, text, ..
            } => {
                let own = self.is_own(addr);
                Entry {
                    name: Some(name.clone()),
                    own,
                    mention: !own && self.mentions_me(text),
                    ..line(EntryKind::Chat, text.clone())
                }
            }
            ServerEvent::Join { name, .. } => line(EntryKind::Join, format!("{name} joined")),
            ServerEvent::Leave { name, reason, .. } => match reason {
                LeaveReason::Quit => line(EntryKind::Leave, format!("{name} left")),
                LeaveReason::Timeout => line(EntryKind::Timeout, format!("{name} timed out")),
                LeaveReason::SendqExceeded => line(
                    EntryKind::Leave,
                    format!("{name} was disconnected (too far behind)"),
                ),
                LeaveReason::ExcessFlood => line(
                    EntryKind::Leave,
                    format!("{name} was disconnected (flooding)"),
                ),
                LeaveReason::NodeLost => line(
                    EntryKind::Leave,
                    format!("{name} was disconnected (their server node was lost)"),
                ),
            },
            ServerEvent::Rename { old, new, .. } => {
                line(EntryKind::Rename, format!("{old} is now known as {new}"))
            }
            _ => return None,
        })
    }

    pub(super) fn on_server(
        &mut self,
        event: ServerEvent,
        time: NaiveTime,
        effects: &mut Vec<Effect>,
    ) {
        if let Some(seq) = event.stamp().map(|stamp| stamp.seq) {
            self.saw_room_seq(seq);
        }
        if let Some(entry) = self.room_entry(&event, time) {
            // Side effects of a live room event; the line itself goes into the pane as is.
            match &event {
                ServerEvent::Join { addr, name, .. } => {
                    if !self.users.contains(addr) {
                        self.users.insert(UserInfo {
                            addr: addr.clone(),
                            name: name.clone(),
                        });
                    }
                    self.list_changed();
                }
                ServerEvent::Leave { addr, .. } => {
                    self.users.remove(addr);
                    self.list_changed();
                }
                ServerEvent::Rename { addr, new, .. } => {
                    self.users.rename(addr, new);
                    self.list_changed();
                }
                _ => {}
            }
            if entry.mention && self.settings.bell {
                effects.push(Effect::Bell);
            }
            self.push_entry(entry);
            return;
        }
        match event {
            ServerEvent::Welcome {
                addr,
                name,
                idle_timeout_ms,
                seq,
                ..
            } => {
                self.own_addr = Some(addr);
                self.own_name = Some(name);
                self.ping_every = ping_interval(idle_timeout_ms);
                self.on_ready(effects);
                self.ask_history_on_welcome(seq);
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
            ServerEvent::Renamed { name } => self.on_renamed(name, time),
            ServerEvent::Users { users } => self.users.replace(users),
            ServerEvent::Error { code, message } => {
                if !self.on_rename_refused(code, &message, time) {
                    self.push_entry(Entry::line(
                        time,
                        EntryKind::Error,
                        format!("error: {message}"),
                    ));
                }
            }
            ServerEvent::Notice { message, .. } => {
                self.push_entry(Entry::line(time, EntryKind::Notice, message));
            }
            // The answer to a keepalive: that it came is all it says.
            ServerEvent::Pong { .. } => {}
            ServerEvent::History { events, more, gap } => {
                self.on_history(events, more, gap, time);
            }
            ServerEvent::Dm { from, to, text } => self.on_dm(from, to, text, time, effects),
            // Room events were handled above.
            ServerEvent::Chat { .. }
            | ServerEvent::Join { .. }
            | ServerEvent::Leave { .. }
            | ServerEvent::Rename { .. } => {}
        }
    }
}
