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
    },
    /// To the newcomer only, right after its own `login`: `[ADDR]NAME: I am here`.
    Here { addr: String, name: String },
    /// To everyone, the newcomer included: `[ADDR]NAME: login`.
    Join { addr: String, name: String },
    /// A chat line, to everyone, the sender included: `[ADDR]NAME: TEXT`.
    Chat {
        addr: String,
        name: String,
        text: String,
    },
    /// To everyone else: `[ADDR]NAME: login out` or `[ADDR]NAME: time out leave out`.
    Leave {
        addr: String,
        name: String,
        reason: LeaveReason,
    },
    /// Someone else took a new name (JSON only: the original never told anyone).
    Rename {
        addr: String,
        old: String,
        new: String,
    },
    /// Reply to your rename: `rename ok`.
    Renamed { name: String },
    /// Reply to `who`: `user list:` then `ADDR:NAME` per user, as one block.
    Users { users: Vec<UserInfo> },
    /// Something you did was refused: `error: MESSAGE`.
    Error { code: ErrorCode, message: String },
    /// Something you should know: `notice: MESSAGE`.
    Notice { code: NoticeCode, message: String },
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
        let said = |out: &mut String, addr: &str, name: &str, text: &str| {
            let _ = writeln!(
                out,
                "[{addr}]{}: {}",
                sanitize_text(name),
                sanitize_text(text)
            );
        };
        match self {
            ServerEvent::Welcome { .. } | ServerEvent::Rename { .. } => return false,
            ServerEvent::Here { addr, name } => said(out, addr, name, "I am here"),
            ServerEvent::Join { addr, name } => said(out, addr, name, "login"),
            ServerEvent::Chat { addr, name, text } => said(out, addr, name, text),
            ServerEvent::Leave { addr, name, reason } => {
                let text = match reason {
                    LeaveReason::Timeout => "time out leave out",
                    _ => "login out",
                };
                said(out, addr, name, text)
            }
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
        let mut out = String::new();
        self.render_plain(&mut out).then_some(out)
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
            } => ServerEvent::Welcome {
                version,
                addr: s(addr),
                name: s(name),
            },
            ServerEvent::Here { addr, name } => ServerEvent::Here {
                addr: s(addr),
                name: s(name),
            },
            ServerEvent::Join { addr, name } => ServerEvent::Join {
                addr: s(addr),
                name: s(name),
            },
            ServerEvent::Chat { addr, name, text } => ServerEvent::Chat {
                addr: s(addr),
                name: s(name),
                text: s(text),
            },
            ServerEvent::Leave { addr, name, reason } => ServerEvent::Leave {
                addr: s(addr),
                name: s(name),
                reason,
            },
            ServerEvent::Rename { addr, old, new } => ServerEvent::Rename {
                addr: s(addr),
                old: s(old),
                new: s(new),
            },
            ServerEvent::Renamed { name } => ServerEvent::Renamed { name: s(name) },
            ServerEvent::Users { users } => ServerEvent::Users {
                users: users
                    .into_iter()
                    .map(|u| UserInfo {
                        addr: s(u.addr),
                        name: s(u.name),
                    })
                    .collect(),
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

/// `text`, made terminal-safe, without copying when it already is.
fn sanitized(text: String) -> String {
    match sanitize_text(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}

/// Reads the plain text of the original server (or ours in plain mode) back into events.
///
/// Stateful because `who`'s answer spans lines, and `rename ok` does not say the new name:
/// tell the parser with [`PlainParser::sent_rename`] when you send a rename.
#[derive(Debug, Default)]
pub struct PlainParser {
    /// The `who` answer being read, if the last lines were one.
    user_list: Option<Vec<UserInfo>>,
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
    pub fn parse_line(&mut self, line: &str) -> ServerEvent {
        self.parse_line_raw(line).sanitized()
    }

    fn parse_line_raw(&mut self, line: &str) -> ServerEvent {
        if let Some(users) = &mut self.user_list
            && let Some((addr, name)) = split_addr(line, ':')
        {
            users.push(UserInfo {
                addr: addr.to_string(),
                name: name.to_string(),
            });
            return ServerEvent::Users {
                users: users.clone(),
            };
        }
        self.user_list = None;
        if line == "user list:" {
            self.user_list = Some(Vec::new());
            return ServerEvent::Users { users: Vec::new() };
        }
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
        if let Some(rest) = line.strip_prefix('[')
            && let Some((addr, rest)) = split_addr(rest, ']')
            && let Some((name, text)) = rest.split_once(": ")
        {
            let (addr, name) = (addr.to_string(), name.to_string());
            return match text {
                "login" => ServerEvent::Join { addr, name },
                "I am here" => ServerEvent::Here { addr, name },
                "login out" => ServerEvent::Leave {
                    addr,
                    name,
                    reason: LeaveReason::Quit,
                },
                "time out leave out" => ServerEvent::Leave {
                    addr,
                    name,
                    reason: LeaveReason::Timeout,
                },
                text => ServerEvent::Chat {
                    addr,
                    name,
                    text: text.to_string(),
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
                },
                "[127.0.0.1:5000]mike: hi there\n",
            ),
            (
                ServerEvent::Leave {
                    addr: a.clone(),
                    name: n.clone(),
                    reason: LeaveReason::Quit,
                },
                "[127.0.0.1:5000]mike: login out\n",
            ),
            (
                ServerEvent::Leave {
                    addr: a.clone(),
                    name: n.clone(),
                    reason: LeaveReason::Timeout,
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
        assert_eq!(
            p.parse_line("[[::1]:9]bob: hi: there"),
            ServerEvent::Chat {
                addr: "[::1]:9".into(),
                name: "bob".into(),
                text: "hi: there".into()
            }
        );
        assert_eq!(
            p.parse_line("[1.2.3.4:5]1.2.3.4:5: login"),
            ServerEvent::Join {
                addr: "1.2.3.4:5".into(),
                name: "1.2.3.4:5".into()
            }
        );
        assert_eq!(
            p.parse_line("user list:"),
            ServerEvent::Users { users: vec![] }
        );
        p.parse_line("1.2.3.4:5:1.2.3.4:5");
        assert_eq!(
            p.parse_line("[::1]:9:bob"),
            ServerEvent::Users {
                users: vec![user("1.2.3.4:5", "1.2.3.4:5"), user("[::1]:9", "bob")]
            }
        );
        p.sent_rename("taken");
        p.sent_rename("zed");
        p.parse_line("error: rename refused: the name taken is already taken");
        assert_eq!(
            p.parse_line("rename ok"),
            ServerEvent::Renamed { name: "zed".into() }
        );
        assert_eq!(
            p.parse_line("1.2.3.4:5:late"),
            ServerEvent::notice(NoticeCode::Other, "1.2.3.4:5:late"),
            "a list ends at the first line that is not an entry"
        );
        assert_eq!(
            p.parse_line("[1.2.3.4:5]x\x1b: y\x07"),
            ServerEvent::Chat {
                addr: "1.2.3.4:5".into(),
                name: "x\u{FFFD}".into(),
                text: "y\u{FFFD}".into()
            }
        );
    }
}
