//! What the server sends.
//!
//! Every event renders two ways:
//! - **plain**: the original Go server's text, byte for byte, for nc users. Some events have
//!   no plain form (`welcome`, other users' renames), because the original never sent them and
//!   nc users' scripts depend on exactly what it did send.
//! - **JSON**: one object per line with a `type` field, for programs. No text a user types or
//!   chooses as a name can be mistaken for anything else.
//!
//! [`PlainParser`] reads the plain form back (best effort: in plain text a user typing
//! `login` looks like a login), for clients talking to the original server.

use crate::sanitize::sanitize_text;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// One online user, as `who` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The peer address, `ip:port`.
    pub addr: String,
    pub name: String,
}

/// Where a room event stands in the room's one order, and when the server accepted it.
/// Room events (chat lines, joins, leaves, renames) carry one; JSON renders its fields
/// flattened into the event: `"seq":42,"ts":"2026-12-02T02:41:07.123Z"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Strictly increasing, never reused: the order in which every user receives events.
    pub seq: u64,
    /// Server time, UTC, RFC 3339 with exactly three decimals and `Z`.
    pub ts: String,
}

/// Why a user left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// Closed the connection (or it broke).
    Quit,
    /// Sent no complete line within the idle timeout.
    Timeout,
    /// Fell too far behind reading.
    SendqExceeded,
    /// Kept sending faster than the rate limit.
    ExcessFlood,
    /// The server node it was connected to stopped answering (multi-node mode).
    NodeLost,
}

/// What nc users are told of a leave, as the original said it: a timeout in its own words,
/// every other way out as a logout.
fn leave_text(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Timeout => "time out leave out",
        _ => "login out",
    }
}

/// What went wrong, for programs. `message` says it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A JSON-mode line that is not a command.
    BadRequest,
    /// A line over the length limit; it was discarded.
    LineTooLong,
    /// Invalid UTF-8 was replaced with U+FFFD.
    InvalidUtf8,
    /// The name breaks the name rules.
    InvalidName,
    /// Someone else has that name (names are compared case-insensitively).
    NameTaken,
    /// Lines arrive faster than the rate limit; the line was dropped.
    Flood,
    /// Disconnected: kept flooding.
    ExcessFlood,
    /// Disconnected: fell too far behind reading.
    SendqExceeded,
    /// Refused: the server is full.
    ServerFull,
    /// Refused: too many connections from this IP address.
    TooManyFromIp,
    /// A direct message to a name nobody online has.
    NoSuchUser,
    /// A direct message with nothing to say.
    EmptyText,
    /// The room password was wrong.
    WrongPassword,
    /// The room cannot take the line now (its shared log is unreachable); send it again later.
    Unavailable,
    /// A code this client does not know.
    #[serde(other)]
    Other,
}

/// Things the server tells a user that are not their fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeCode {
    /// Disconnected after the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The room's shared log cannot be reached (cluster mode): lines are refused until
    /// `room_back`. Also: this server lost contact with the room for so long that its users
    /// were announced as gone.
    RoomUnavailable,
    /// The room's shared log can be reached again: lines are accepted again.
    RoomBack,
    /// Cluster mode: while the room's shared log had lost its data, someone else took this
    /// user's name; they keep it, and this user is under their address again.
    NameLost,
    #[serde(other)]
    Other,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// Reply to `hello`: JSON mode is on. Says who you are (JSON only).
    Welcome {
        version: u32,
        addr: String,
        name: String,
        /// The server's idle timeout (`0`: none): how often a client must say something,
        /// a `ping` at least, to stay connected.
        #[serde(default)]
        idle_timeout_ms: u64,
        /// The newest room event's seq when this client was welcomed: every later event
        /// reaches it live, and `history` fetches what came before.
        #[serde(default)]
        seq: u64,
    },
    /// To the newcomer only, right after its own `login`: `[ADDR]NAME: I am here`.
    Here { addr: String, name: String },
    /// To everyone, the newcomer included: `[ADDR]NAME: login`.
    Join {
        addr: String,
        name: String,
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// A chat line, to everyone, the sender included: `[ADDR]NAME: TEXT`.
    Chat {
        addr: String,
        name: String,
        text: String,
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// To everyone else: `[ADDR]NAME: login out` or `[ADDR]NAME: time out leave out`.
    Leave {
        addr: String,
        name: String,
        reason: LeaveReason,
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// Someone else took a new name (JSON only: the original never told anyone).
    Rename {
        addr: String,
        old: String,
        new: String,
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// Reply to your rename: `rename ok`.
    Renamed { name: String },
    /// Reply to `who`: `user list:` then `ADDR:NAME` per user, as one block.
    Users { users: Vec<UserInfo> },
    /// Something you did was refused: `error: MESSAGE`.
    Error { code: ErrorCode, message: String },
    /// Something you should know: `notice: MESSAGE`.
    Notice { code: NoticeCode, message: String },
    /// Reply to `ping` (JSON only), with its token if it had one.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Reply to `history` (JSON only): room events oldest first, each as it was sent live.
    /// `more`: further events exist in the asked direction beyond this page. `gap`: events
    /// that belong in the asked direction were deleted by retention.
    History {
        events: Vec<ServerEvent>,
        more: bool,
        gap: bool,
    },
    /// A direct message, to its recipient and its sender: `[ADDR]NAME -> TONAME: TEXT`.
    Dm {
        from: UserInfo,
        to: UserInfo,
        text: String,
    },
}

impl ServerEvent {
    /// An error line. The message may quote what a user sent, so it is sanitized here.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerEvent::Error {
            code,
            message: sanitized(message.into()),
        }
    }

    /// A notice line, sanitized like [`ServerEvent::error`].
    pub fn notice(code: NoticeCode, message: impl Into<String>) -> Self {
        ServerEvent::Notice {
            code,
            message: sanitized(message.into()),
        }
    }

    /// Appends the plain (nc) rendering, line endings included. Returns false if this event
    /// has no plain form.
    pub fn render_plain(&self, out: &mut String) -> bool {
        // Every room event goes through here once per node: pushes, not `write!`, whose
        // formatting machinery costs more than the copying.
        let said = |out: &mut String, addr: &str, name: &str, text: &str| {
            out.push('[');
            out.push_str(addr);
            out.push(']');
            out.push_str(&sanitize_text(name));
            out.push_str(": ");
            out.push_str(&sanitize_text(text));
            out.push('\n');
        };
        match self {
            ServerEvent::Welcome { .. }
            | ServerEvent::Rename { .. }
            | ServerEvent::Pong { .. }
            | ServerEvent::History { .. } => return false,
            ServerEvent::Here { addr, name } => said(out, addr, name, "I am here"),
            ServerEvent::Join { addr, name, .. } => said(out, addr, name, "login"),
            ServerEvent::Chat {
                addr, name, text, ..
            } => said(out, addr, name, text),
            ServerEvent::Dm { from, to, text } => {
                let _ = writeln!(
                    out,
                    "[{}]{} -> {}: {}",
                    from.addr,
                    sanitize_text(&from.name),
                    sanitize_text(&to.name),
                    sanitize_text(text)
                );
            }
            ServerEvent::Leave {
                addr, name, reason, ..
            } => said(out, addr, name, leave_text(*reason)),
            ServerEvent::Renamed { .. } => out.push_str("rename ok\n"),
            ServerEvent::Users { users } => {
                out.push_str("user list:\n");
                for user in users {
                    let _ = writeln!(out, "{}:{}", user.addr, sanitize_text(&user.name));
                }
            }
            ServerEvent::Error { message, .. } => {
                let _ = writeln!(out, "error: {}", sanitize_text(message));
            }
            ServerEvent::Notice { message, .. } => {
                let _ = writeln!(out, "notice: {}", sanitize_text(message));
            }
        }
        true
    }

    /// The plain rendering, or `None` if this event has no plain form.
    pub fn to_plain(&self) -> Option<String> {
        let mut out = String::with_capacity(self.plain_len_hint());
        self.render_plain(&mut out).then_some(out)
    }

    /// The length of the plain rendering of a line someone said (exact unless sanitizing
    /// changes it): the rendering is then one allocation, not a string grown by doubling
    /// and then shrunk to fit, for every event on every node.
    fn plain_len_hint(&self) -> usize {
        // `[`, `]`, `: ` and the newline.
        let said = |addr: &str, name: &str, text: &str| addr.len() + name.len() + text.len() + 5;
        match self {
            ServerEvent::Chat {
                addr, name, text, ..
            } => said(addr, name, text),
            ServerEvent::Join { addr, name, .. } => said(addr, name, "login"),
            ServerEvent::Here { addr, name } => said(addr, name, "I am here"),
            ServerEvent::Leave {
                addr, name, reason, ..
            } => said(addr, name, leave_text(*reason)),
            _ => 64,
        }
    }

    /// Appends the JSON rendering: one object and a `\n`.
    pub fn render_json(&self, out: &mut String) {
        out.push_str(&serde_json::to_string(self).expect("events always serialize"));
        out.push('\n');
    }

    /// The JSON line, with its `\n`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.render_json(&mut out);
        out
    }

    /// Reads one JSON line from the server. Names and texts come back sanitized, so a client
    /// can show them whatever server it talks to.
    pub fn parse_json(line: &str) -> Result<ServerEvent, serde_json::Error> {
        serde_json::from_str::<ServerEvent>(line).map(ServerEvent::sanitized)
    }

    /// The same event with every user-chosen string made terminal-safe.
    pub fn sanitized(self) -> ServerEvent {
        let s = sanitized;
        match self {
            ServerEvent::Welcome {
                version,
                addr,
                name,
                idle_timeout_ms,
                seq,
            } => ServerEvent::Welcome {
                version,
                addr: s(addr),
                name: s(name),
                idle_timeout_ms,
                seq,
            },
            ServerEvent::Here { addr, name } => ServerEvent::Here {
                addr: s(addr),
                name: s(name),
            },
            ServerEvent::Join { addr, name, stamp } => ServerEvent::Join {
                addr: s(addr),
                name: s(name),
                stamp,
            },
            ServerEvent::Chat {
                addr,
                name,
                text,
                stamp,
            } => ServerEvent::Chat {
                addr: s(addr),
                name: s(name),
                text: s(text),
                stamp,
            },
            ServerEvent::Leave {
                addr,
                name,
                reason,
                stamp,
            } => ServerEvent::Leave {
                addr: s(addr),
                name: s(name),
                reason,
                stamp,
            },
            ServerEvent::Rename {
                addr,
                old,
                new,
                stamp,
            } => ServerEvent::Rename {
                addr: s(addr),
                old: s(old),
                new: s(new),
                stamp,
            },
            ServerEvent::Renamed { name } => ServerEvent::Renamed { name: s(name) },
            ServerEvent::Users { users } => ServerEvent::Users {
                users: users.into_iter().map(UserInfo::sanitized).collect(),
            },
            ServerEvent::Pong { token } => ServerEvent::Pong {
                token: token.map(s),
            },
            ServerEvent::History { events, more, gap } => ServerEvent::History {
                events: events.into_iter().map(ServerEvent::sanitized).collect(),
                more,
                gap,
            },
            ServerEvent::Dm { from, to, text } => ServerEvent::Dm {
                from: from.sanitized(),
                to: to.sanitized(),
                text: s(text),
            },
            ServerEvent::Error { code, message } => ServerEvent::Error {
                code,
                message: s(message),
            },
            ServerEvent::Notice { code, message } => ServerEvent::Notice {
                code,
                message: s(message),
            },
        }
    }
}

impl UserInfo {
    /// The same user with both fields made terminal-safe.
    pub fn sanitized(self) -> UserInfo {
        UserInfo {
            addr: sanitized(self.addr),
            name: sanitized(self.name),
        }
    }
}

impl ServerEvent {
    /// The room event's place in the order, if it is a room event that has one.
    pub fn stamp(&self) -> Option<&Stamp> {
        match self {
            ServerEvent::Join { stamp, .. }
            | ServerEvent::Chat { stamp, .. }
            | ServerEvent::Leave { stamp, .. }
            | ServerEvent::Rename { stamp, .. } => stamp.as_ref(),
            _ => None,
        }
    }
}

/// `text`, made terminal-safe, without copying when it already is.
fn sanitized(text: String) -> String {
    match sanitize_text(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}

/// One plain line, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainLine {
    Event(ServerEvent),
    /// One more entry of the `who` answer being read: add it to the list that the last
    /// `Event(ServerEvent::Users { .. })` started. Entries come one at a time, so reading a
    /// list of N users costs N, not N² (the list has no end marker to wait for).
    UserListed(UserInfo),
}

/// Reads the plain text of the original server (or ours in plain mode) back into events.
///
/// Stateful because `who`'s answer spans lines, and `rename ok` does not say the new name:
/// tell the parser with [`PlainParser::sent_rename`] when you send a rename.
#[derive(Debug, Default)]
pub struct PlainParser {
    /// True while the last lines were a `who` answer.
    in_user_list: bool,
    /// Names asked for with `rename|`, oldest first, awaiting `rename ok`.
    pending_renames: VecDeque<String>,
}

/// Splits `ADDR` off the front of `s` where it is followed by `sep`; an IPv6 address has
/// colons and brackets of its own, so every candidate split is tried.
fn split_addr(s: &str, sep: char) -> Option<(&str, &str)> {
    s.match_indices(sep).find_map(|(i, _)| {
        let addr = &s[..i];
        addr.parse::<SocketAddr>()
            .ok()
            .map(|_| (addr, &s[i + sep.len_utf8()..]))
    })
}

impl PlainParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a `rename|NAME` just sent, so its `rename ok` can say the name.
    pub fn sent_rename(&mut self, name: impl Into<String>) {
        self.pending_renames.push_back(name.into());
    }

    /// Reads one line (without its line ending). Unrecognised lines come back as an
    /// `Other` notice carrying the line.
    pub fn parse_line(&mut self, line: &str) -> PlainLine {
        if self.in_user_list
            && let Some((addr, name)) = split_addr(line, ':')
        {
            return PlainLine::UserListed(
                UserInfo {
                    addr: addr.to_string(),
                    name: name.to_string(),
                }
                .sanitized(),
            );
        }
        self.in_user_list = line == "user list:";
        if self.in_user_list {
            return PlainLine::Event(ServerEvent::Users { users: Vec::new() });
        }
        PlainLine::Event(self.parse_event(line).sanitized())
    }

    fn parse_event(&mut self, line: &str) -> ServerEvent {
        if line == "rename ok" {
            let name = self.pending_renames.pop_front().unwrap_or_default();
            return ServerEvent::Renamed { name };
        }
        if let Some(message) = line.strip_prefix("error: ") {
            // Our server's refusal answers the oldest rename, as `rename ok` would have.
            if message.starts_with("rename refused") {
                self.pending_renames.pop_front();
            }
            return ServerEvent::error(ErrorCode::Other, message);
        }
        if let Some(message) = line.strip_prefix("notice: ") {
            return ServerEvent::notice(NoticeCode::Other, message);
        }
        let Some((addr, rest)) = line.strip_prefix('[').and_then(|r| split_addr(r, ']')) else {
            return ServerEvent::notice(NoticeCode::Other, line);
        };
        // A name has no space: the first space after `]` follows the name's `:` in a chat
        // line and comes before `-> ` in a direct message.
        if let Some((from, rest)) = rest.split_once(' ')
            && !from.ends_with(':')
            && let Some(rest) = rest.strip_prefix("-> ")
            && let Some((to, text)) = rest.split_once(": ")
        {
            return ServerEvent::Dm {
                from: UserInfo {
                    addr: addr.to_string(),
                    name: from.to_string(),
                },
                to: UserInfo {
                    addr: String::new(),
                    name: to.to_string(),
                },
                text: text.to_string(),
            };
        }
        if let Some((name, text)) = rest.split_once(": ") {
            let (addr, name) = (addr.to_string(), name.to_string());
            let stamp = None;
            return match text {
                "login" => ServerEvent::Join { addr, name, stamp },
                "I am here" => ServerEvent::Here { addr, name },
                "login out" => ServerEvent::Leave {
                    addr,
                    name,
                    reason: LeaveReason::Quit,
                    stamp,
                },
                "time out leave out" => ServerEvent::Leave {
                    addr,
                    name,
                    reason: LeaveReason::Timeout,
                    stamp,
                },
                text => ServerEvent::Chat {
                    addr,
                    name,
                    text: text.to_string(),
                    stamp,
                },
            };
        }
        ServerEvent::notice(NoticeCode::Other, line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(addr: &str, name: &str) -> UserInfo {
        UserInfo {
            addr: addr.into(),
            name: name.into(),
        }
    }

    #[test]
    fn plain_texts_are_the_originals() {
        let a = "127.0.0.1:5000".to_string();
        let n = "mike".to_string();
        let cases = [
            (
                ServerEvent::Join {
                    addr: a.clone(),
                    name: a.clone(),
                    stamp: None,
                },
                "[127.0.0.1:5000]127.0.0.1:5000: login\n",
            ),
            (
                ServerEvent::Here {
                    addr: a.clone(),
                    name: n.clone(),
                },
                "[127.0.0.1:5000]mike: I am here\n",
            ),
            (
                ServerEvent::Chat {
                    addr: a.clone(),
                    name: n.clone(),
                    text: "hi there".into(),
                    stamp: None,
                },
                "[127.0.0.1:5000]mike: hi there\n",
            ),
            (
                ServerEvent::Leave {
                    addr: a.clone(),
                    name: n.clone(),
                    reason: LeaveReason::Quit,
                    stamp: None,
                },
                "[127.0.0.1:5000]mike: login out\n",
            ),
            (
                ServerEvent::Leave {
                    addr: a.clone(),
                    name: n.clone(),
                    reason: LeaveReason::Timeout,
                    stamp: None,
                },
                "[127.0.0.1:5000]mike: time out leave out\n",
            ),
            (ServerEvent::Renamed { name: n.clone() }, "rename ok\n"),
            (
                ServerEvent::Users {
                    users: vec![user(&a, &n), user("10.0.0.2:7", "10.0.0.2:7")],
                },
                "user list:\n127.0.0.1:5000:mike\n10.0.0.2:7:10.0.0.2:7\n",
            ),
        ];
        for (event, text) in cases {
            assert_eq!(event.to_plain().as_deref(), Some(text), "{event:?}");
        }
    }

    #[test]
    fn json_only_events_have_no_plain_form() {
        let rename = ServerEvent::Rename {
            addr: "1.2.3.4:5".into(),
            old: "a".into(),
            new: "b".into(),
            stamp: None,
        };
        assert_eq!(rename.to_plain(), None);
        assert_eq!(
            rename.to_json(),
            "{\"type\":\"rename\",\"addr\":\"1.2.3.4:5\",\"old\":\"a\",\"new\":\"b\"}\n"
        );
    }

    #[test]
    fn json_shape() {
        let event = ServerEvent::Leave {
            addr: "1.2.3.4:5".into(),
            name: "bob".into(),
            reason: LeaveReason::SendqExceeded,
            stamp: None,
        };
        assert_eq!(
            event.to_json(),
            "{\"type\":\"leave\",\"addr\":\"1.2.3.4:5\",\"name\":\"bob\",\"reason\":\"sendq_exceeded\"}\n"
        );
        assert_eq!(
            ServerEvent::parse_json(r#"{"type":"error","code":"brand_new","message":"x"}"#)
                .unwrap(),
            ServerEvent::error(ErrorCode::Other, "x")
        );
    }

    #[test]
    fn plain_parser_reads_the_original() {
        let mut p = PlainParser::new();
        let mut event = |line: &str| match p.parse_line(line) {
            PlainLine::Event(event) => event,
            other => panic!("{line:?} read as {other:?}"),
        };
        assert_eq!(
            event("[[::1]:9]bob: hi: there"),
            ServerEvent::Chat {
                addr: "[::1]:9".into(),
                name: "bob".into(),
                text: "hi: there".into(),
                stamp: None
            }
        );
        assert_eq!(
            event("[1.2.3.4:5]1.2.3.4:5: login"),
            ServerEvent::Join {
                addr: "1.2.3.4:5".into(),
                name: "1.2.3.4:5".into(),
                stamp: None
            }
        );
        assert_eq!(
            event("[1.2.3.4:5]x\x1b: y\x07"),
            ServerEvent::Chat {
                addr: "1.2.3.4:5".into(),
                name: "x\u{FFFD}".into(),
                text: "y\u{FFFD}".into(),
                stamp: None
            }
        );
    }

    #[test]
    fn plain_parser_reads_a_user_list_entry_by_entry() {
        let mut p = PlainParser::new();
        assert_eq!(
            p.parse_line("user list:"),
            PlainLine::Event(ServerEvent::Users { users: vec![] })
        );
        assert_eq!(
            p.parse_line("1.2.3.4:5:1.2.3.4:5"),
            PlainLine::UserListed(user("1.2.3.4:5", "1.2.3.4:5"))
        );
        assert_eq!(
            p.parse_line("[::1]:9:b\x1bob"),
            PlainLine::UserListed(user("[::1]:9", "b\u{FFFD}ob"))
        );
        p.sent_rename("taken");
        p.sent_rename("zed");
        p.parse_line("error: rename refused: the name taken is already taken");
        assert_eq!(
            p.parse_line("rename ok"),
            PlainLine::Event(ServerEvent::Renamed { name: "zed".into() })
        );
        assert_eq!(
            p.parse_line("1.2.3.4:5:late"),
            PlainLine::Event(ServerEvent::notice(NoticeCode::Other, "1.2.3.4:5:late")),
            "a list ends at the first line that is not an entry"
        );
    }

    #[test]
    fn direct_messages_render_and_read_back_apart_from_chat() {
        let dm = ServerEvent::Dm {
            from: user("127.0.0.1:40112", "127.0.0.1:40112"),
            to: user("127.0.0.1:40120", "bob"),
            text: "a|b: c".into(),
        };
        let plain = dm.to_plain().expect("a plain form");
        assert_eq!(plain, "[127.0.0.1:40112]127.0.0.1:40112 -> bob: a|b: c\n");
        let mut p = PlainParser::new();
        let PlainLine::Event(ServerEvent::Dm { from, to, text }) = p.parse_line(plain.trim_end())
        else {
            panic!("not read as a DM");
        };
        assert_eq!(from, user("127.0.0.1:40112", "127.0.0.1:40112"));
        assert_eq!(to.name, "bob");
        assert_eq!(text, "a|b: c");
        // A chat line whose text looks like a DM is still chat: its name ends with `:`.
        assert!(matches!(
            p.parse_line("[1.2.3.4:5]bob: -> alice: hi"),
            PlainLine::Event(ServerEvent::Chat { .. })
        ));
        assert_eq!(
            dm.to_json(),
            "{\"type\":\"dm\",\"from\":{\"addr\":\"127.0.0.1:40112\",\"name\":\"127.0.0.1:40112\"},\"to\":{\"addr\":\"127.0.0.1:40120\",\"name\":\"bob\"},\"text\":\"a|b: c\"}\n"
        );
    }

    #[test]
    fn room_events_carry_their_stamp_flattened_and_read_without_one() {
        let chat = ServerEvent::Chat {
            addr: "1.2.3.4:5".into(),
            name: "bob".into(),
            text: "hi".into(),
            stamp: Some(Stamp {
                seq: 42,
                ts: "2026-12-02T02:41:07.123Z".into(),
            }),
        };
        let json = chat.to_json();
        assert_eq!(
            json,
            "{\"type\":\"chat\",\"addr\":\"1.2.3.4:5\",\"name\":\"bob\",\"text\":\"hi\",\"seq\":42,\"ts\":\"2026-12-02T02:41:07.123Z\"}\n"
        );
        assert_eq!(ServerEvent::parse_json(json.trim_end()).unwrap(), chat);
        assert_eq!(chat.stamp().map(|s| s.seq), Some(42));
        assert_eq!(
            chat.to_plain().as_deref(),
            Some("[1.2.3.4:5]bob: hi\n"),
            "nc users see no stamp"
        );
        let old = ServerEvent::parse_json(r#"{"type":"join","addr":"1.2.3.4:5","name":"x"}"#);
        assert_eq!(
            old.unwrap(),
            ServerEvent::Join {
                addr: "1.2.3.4:5".into(),
                name: "x".into(),
                stamp: None
            }
        );
        let welcome = ServerEvent::parse_json(
            r#"{"type":"welcome","version":1,"addr":"a","name":"a","idle_timeout_ms":30000,"seq":7}"#,
        );
        assert!(matches!(
            welcome.unwrap(),
            ServerEvent::Welcome {
                idle_timeout_ms: 30_000,
                seq: 7,
                ..
            }
        ));
        let history = ServerEvent::parse_json(&format!(
            r#"{{"type":"history","events":[{}],"more":false,"gap":true}}"#,
            json.trim_end()
        ));
        assert_eq!(
            history.unwrap(),
            ServerEvent::History {
                events: vec![chat],
                more: false,
                gap: true
            }
        );
        assert_eq!(
            ServerEvent::Pong { token: None }.to_json(),
            "{\"type\":\"pong\"}\n"
        );
    }
}
