//! What a client may send.
//!
//! **Plain mode** (nc, the default): one command per line: the original's `who` and
//! `rename|NAME`, and ours, `history|N` and `to|NAME|TEXT`; anything else is a chat message.
//! A line that merely starts with a command's word (`renamed the file`, `history lesson`,
//! `today`) is chat.
//!
//! **JSON mode**: a program sends [`HELLO_LINE`] as its first line. From then on it sends one
//! JSON object per line (`{"type":"chat","text":"who"}` is a chat message, not a command)
//! and receives JSON events (see [`crate::event`]).

use crate::sanitize::sanitize_text;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Version of the JSON mode, sent in `hello` and `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The first line a program sends to switch its connection to JSON mode. No nc user types
/// this by accident, and it is only honoured as a connection's first line.
pub const HELLO_LINE: &str = r#"{"type":"hello","version":1}"#;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientCommand {
    /// Switch to JSON mode (JSON only, first line only), with the room password if the
    /// server has one.
    Hello {
        version: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    /// Broadcast `text` to everyone.
    Chat { text: String },
    /// List the users online.
    Who,
    /// Take a new name.
    Rename { name: String },
    /// Keepalive (JSON only): answered by `pong` with the same token; counts as activity.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Room events from the log: the newest `limit`, or those just `before` or `after` a seq.
    /// In plain mode (`history|N`) only the events nc users see, newest N.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// A direct message to the one online user named `to`.
    Dm { to: String, text: String },
}

/// `history` pages hold this many events unless asked for fewer...
pub const HISTORY_DEFAULT_LIMIT: u32 = 100;
/// ...and never more than this.
pub const HISTORY_MAX_LIMIT: u32 = 500;
/// `history|` without a number shows this many lines.
pub const PLAIN_HISTORY_DEFAULT: u32 = 20;

/// A JSON line that is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid command: {}", self.0)
    }
}

impl std::error::Error for CommandError {}

/// Decodes a line's bytes as UTF-8, replacing invalid sequences with `U+FFFD`.
/// The flag says whether anything was replaced.
pub fn decode_line(line: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(line) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(line), true),
    }
}

impl ClientCommand {
    /// Reads one plain (nc) line. Chat and direct-message text comes back sanitized; a
    /// name comes back as typed, for the server to validate or look up. A malformed command
    /// comes back as the message to answer it with.
    pub fn parse_plain(line: &str) -> Result<ClientCommand, String> {
        if line == "who" {
            Ok(ClientCommand::Who)
        } else if let Some(name) = line.strip_prefix("rename|") {
            Ok(ClientCommand::Rename {
                name: name.to_string(),
            })
        } else if let Some(count) = line.strip_prefix("history|") {
            let limit = match count {
                "" => PLAIN_HISTORY_DEFAULT,
                count => count
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=HISTORY_MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "history|N takes a number of lines from 1 to {HISTORY_MAX_LIMIT} (history| shows {PLAIN_HISTORY_DEFAULT})"
                        )
                    })?,
            };
            Ok(ClientCommand::History {
                before: None,
                after: None,
                limit: Some(limit),
            })
        } else if let Some(rest) = line.strip_prefix("to|") {
            // Everything after the second `|` is the text, `|`s included.
            let (to, text) = rest
                .split_once('|')
                .ok_or_else(|| "a direct message is to|NAME|TEXT".to_string())?;
            Ok(ClientCommand::Dm {
                to: to.to_string(),
                text: sanitize_text(text).into_owned(),
            })
        } else {
            Ok(ClientCommand::Chat {
                text: sanitize_text(line).into_owned(),
            })
        }
    }

    /// Reads one JSON-mode line. Chat text comes back sanitized.
    pub fn parse_json(line: &str) -> Result<ClientCommand, CommandError> {
        match serde_json::from_str(line) {
            Ok(ClientCommand::Chat { text }) => Ok(ClientCommand::Chat {
                text: sanitize_text(&text).into_owned(),
            }),
            Ok(ClientCommand::Dm { to, text }) => Ok(ClientCommand::Dm {
                to,
                text: sanitize_text(&text).into_owned(),
            }),
            // The token comes back in the pong: everything a client receives is sanitized.
            Ok(ClientCommand::Ping { token }) => Ok(ClientCommand::Ping {
                token: token.map(|t| sanitize_text(&t).into_owned()),
            }),
            Ok(command) => Ok(command),
            Err(e) => Err(CommandError(e.to_string())),
        }
    }

    /// True if `line` is the handshake that switches a connection to JSON mode: exactly
    /// [`HELLO_LINE`], or a version 1 hello that carries a `"password"` string and nothing
    /// else (see [`ClientCommand::hello_password`]). No other line (another version, extra
    /// fields) passes for it.
    pub fn is_hello(line: &str) -> bool {
        line == HELLO_LINE || ClientCommand::hello_password(line).is_some()
    }

    /// The password of a hello that carries one: an object with exactly the fields `type`
    /// (`"hello"`), `version` (`1`) and `password` (a string), in any order. `None` for
    /// anything else, [`HELLO_LINE`] included.
    pub fn hello_password(line: &str) -> Option<String> {
        /// Strict on purpose: an unknown field or another version is not a hello.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PasswordHello {
            #[serde(rename = "type")]
            kind: String,
            version: u32,
            password: String,
        }
        let hello: PasswordHello = serde_json::from_str(line).ok()?;
        (hello.kind == "hello" && hello.version == PROTOCOL_VERSION).then_some(hello.password)
    }

    /// The plain line for this command, if it has one (`None` for JSON-only commands, and
    /// for text that the server would read as a command or split into several lines).
    pub fn to_plain(&self) -> Option<String> {
        let one_line = |text: &str| !text.contains(['\n', '\r']);
        match self {
            ClientCommand::Hello { .. } | ClientCommand::Ping { .. } => None,
            ClientCommand::History {
                before: None,
                after: None,
                limit,
            } => Some(format!(
                "history|{}",
                limit.unwrap_or(PLAIN_HISTORY_DEFAULT)
            )),
            ClientCommand::History { .. } => None,
            ClientCommand::Who => Some("who".into()),
            ClientCommand::Rename { name } => Some(format!("rename|{name}")),
            ClientCommand::Dm { to, text } => (one_line(to) && one_line(text) && !to.contains('|'))
                .then(|| format!("to|{to}|{text}")),
            ClientCommand::Chat { text } => {
                let is_command = text == "who"
                    || ["rename|", "history|", "to|"]
                        .iter()
                        .any(|prefix| text.starts_with(prefix));
                (!is_command && one_line(text)).then(|| text.clone())
            }
        }
    }

    /// The JSON line for this command, without the trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("commands always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str) -> ClientCommand {
        ClientCommand::Chat { text: text.into() }
    }

    #[test]
    fn plain_commands_as_in_the_original() {
        assert_eq!(ClientCommand::parse_plain("who"), Ok(ClientCommand::Who));
        assert_eq!(
            ClientCommand::parse_plain("rename|mike"),
            Ok(ClientCommand::Rename {
                name: "mike".into()
            })
        );
        assert_eq!(
            ClientCommand::parse_plain("rename|"),
            Ok(ClientCommand::Rename { name: "".into() })
        );
    }

    fn history(limit: u32) -> Result<ClientCommand, String> {
        Ok(ClientCommand::History {
            before: None,
            after: None,
            limit: Some(limit),
        })
    }

    #[test]
    fn plain_history_takes_a_count_from_1_to_500() {
        assert_eq!(ClientCommand::parse_plain("history|"), history(20));
        assert_eq!(ClientCommand::parse_plain("history|1"), history(1));
        assert_eq!(ClientCommand::parse_plain("history|500"), history(500));
        for bad in [
            "history|0",
            "history|501",
            "history|x",
            "history|-1",
            "history| 5",
        ] {
            let refusal = ClientCommand::parse_plain(bad).unwrap_err();
            assert!(refusal.contains("1 to 500"), "{bad}: {refusal}");
        }
    }

    #[test]
    fn plain_direct_messages_keep_every_bar_of_their_text() {
        let dm = |to: &str, text: &str| {
            Ok(ClientCommand::Dm {
                to: to.into(),
                text: text.into(),
            })
        };
        assert_eq!(ClientCommand::parse_plain("to|bob|hi"), dm("bob", "hi"));
        assert_eq!(ClientCommand::parse_plain("to|bob|a|b"), dm("bob", "a|b"));
        assert_eq!(ClientCommand::parse_plain("to|bob|"), dm("bob", ""));
        assert_eq!(
            ClientCommand::parse_plain("to|bob|\x1b[2J"),
            dm("bob", "\u{FFFD}[2J")
        );
        for malformed in ["to|", "to|bob"] {
            assert_eq!(
                ClientCommand::parse_plain(malformed),
                Err("a direct message is to|NAME|TEXT".into())
            );
        }
    }

    #[test]
    fn lines_that_only_look_like_commands_are_chat() {
        for text in [
            "renamed the file",
            "rename",
            "rename mike",
            "who?",
            " who",
            "WHO",
            "history",
            "history lesson",
            "history 5",
            "to",
            "today",
            "to bob|hi",
            "TO|bob|hi",
        ] {
            assert_eq!(ClientCommand::parse_plain(text), Ok(chat(text)));
        }
    }

    #[test]
    fn chat_is_sanitized() {
        assert_eq!(
            ClientCommand::parse_plain("hi\x1b[2J"),
            Ok(chat("hi\u{FFFD}[2J"))
        );
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"chat","text":"a\u001bb\nc"}"#),
            Ok(chat("a\u{FFFD}b\u{FFFD}c"))
        );
    }

    #[test]
    fn json_who_text_is_chat() {
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"chat","text":"who"}"#),
            Ok(chat("who"))
        );
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"who"}"#),
            Ok(ClientCommand::Who)
        );
    }

    #[test]
    fn hello_line_is_the_hello_command() {
        assert!(ClientCommand::is_hello(HELLO_LINE));
        assert_eq!(
            ClientCommand::Hello {
                version: PROTOCOL_VERSION,
                password: None
            }
            .to_json(),
            HELLO_LINE
        );
        assert!(!ClientCommand::is_hello("hello"));
        assert!(!ClientCommand::is_hello(r#"{"type":"who"}"#));
        assert!(!ClientCommand::is_hello(r#"{"type":"hello","version":2}"#));
        assert!(!ClientCommand::is_hello(
            r#"{"version":1,"type":"hello","junk":[1]}"#
        ));
    }

    #[test]
    fn a_hello_may_carry_a_password_and_nothing_else() {
        let hello = ClientCommand::Hello {
            version: PROTOCOL_VERSION,
            password: Some("s3cr\"et|x".into()),
        };
        let line = hello.to_json();
        assert!(ClientCommand::is_hello(&line));
        assert_eq!(
            ClientCommand::hello_password(&line).as_deref(),
            Some("s3cr\"et|x")
        );
        assert_eq!(ClientCommand::parse_json(&line), Ok(hello));
        assert!(ClientCommand::is_hello(
            r#"{"password":"p","version":1,"type":"hello"}"#
        ));
        assert_eq!(ClientCommand::hello_password(HELLO_LINE), None);
        for not_hello in [
            r#"{"type":"hello","version":2,"password":"p"}"#,
            r#"{"type":"hello","version":1,"password":"p","junk":1}"#,
            r#"{"type":"hello","version":1,"password":7}"#,
            r#"{"type":"hello","version":1,"password":null}"#,
            r#"{"type":"chat","version":1,"password":"p"}"#,
            r#"{"type":"hello","password":"p"}"#,
        ] {
            assert!(!ClientCommand::is_hello(not_hello), "{not_hello}");
        }
    }

    #[test]
    fn json_keepalive_history_and_dm_shapes() {
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"ping"}"#),
            Ok(ClientCommand::Ping { token: None })
        );
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"ping","token":"t1"}"#),
            Ok(ClientCommand::Ping {
                token: Some("t1".into())
            })
        );
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"history","after":41,"limit":5}"#),
            Ok(ClientCommand::History {
                before: None,
                after: Some(41),
                limit: Some(5)
            })
        );
        assert_eq!(
            ClientCommand::parse_json(r#"{"type":"dm","to":"bob","text":"a\u001b"}"#),
            Ok(ClientCommand::Dm {
                to: "bob".into(),
                text: "a\u{FFFD}".into()
            })
        );
        assert_eq!(
            ClientCommand::Dm {
                to: "bob".into(),
                text: "x|y".into()
            }
            .to_plain()
            .as_deref(),
            Some("to|bob|x|y")
        );
        assert_eq!(chat("to|bob|hi").to_plain(), None);
        assert_eq!(chat("history|3").to_plain(), None);
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(ClientCommand::parse_json("{").is_err());
        assert!(ClientCommand::parse_json(r#"{"type":"dance"}"#).is_err());
        assert!(ClientCommand::parse_json("who").is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced_and_flagged() {
        let (text, replaced) = decode_line(b"caf\xe9");
        assert_eq!(text, "caf\u{FFFD}");
        assert!(replaced);
        assert_eq!(
            decode_line("café".as_bytes()),
            (Cow::Borrowed("café"), false)
        );
    }
}
