//! What a client may send.
//!
//! **Plain mode** (nc, the default): one command per line, exactly as the original:
//! `who`, `rename|NAME`, and anything else is a chat message. A line that merely starts with
//! "rename" (`renamed the file`) is chat.
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
    /// Switch to JSON mode (JSON only, first line only).
    Hello { version: u32 },
    /// Broadcast `text` to everyone.
    Chat { text: String },
    /// List the users online.
    Who,
    /// Take a new name.
    Rename { name: String },
}

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
    /// Reads one plain (nc) line. Chat text comes back sanitized; a rename's name comes back
    /// as typed, for the server to validate.
    pub fn parse_plain(line: &str) -> ClientCommand {
        if line == "who" {
            ClientCommand::Who
        } else if let Some(name) = line.strip_prefix("rename|") {
            ClientCommand::Rename {
                name: name.to_string(),
            }
        } else {
            ClientCommand::Chat {
                text: sanitize_text(line).into_owned(),
            }
        }
    }

    /// Reads one JSON-mode line. Chat text comes back sanitized.
    pub fn parse_json(line: &str) -> Result<ClientCommand, CommandError> {
        match serde_json::from_str(line) {
            Ok(ClientCommand::Chat { text }) => Ok(ClientCommand::Chat {
                text: sanitize_text(&text).into_owned(),
            }),
            Ok(command) => Ok(command),
            Err(e) => Err(CommandError(e.to_string())),
        }
    }

    /// True if `line` is the handshake that switches a connection to JSON mode: exactly
    /// [`HELLO_LINE`], so no other line (another version, extra fields) passes for it.
    pub fn is_hello(line: &str) -> bool {
        line == HELLO_LINE
    }

    /// The plain line for this command, if it has one (`None` for `hello`, and for chat
    /// text that the server would read as a command or split into several lines).
    pub fn to_plain(&self) -> Option<String> {
        match self {
            ClientCommand::Hello { .. } => None,
            ClientCommand::Who => Some("who".into()),
            ClientCommand::Rename { name } => Some(format!("rename|{name}")),
            ClientCommand::Chat { text } => {
                let is_command = text == "who" || text.starts_with("rename|");
                (!is_command && !text.contains(['\n', '\r'])).then(|| text.clone())
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
        assert_eq!(ClientCommand::parse_plain("who"), ClientCommand::Who);
        assert_eq!(
            ClientCommand::parse_plain("rename|mike"),
            ClientCommand::Rename {
                name: "mike".into()
            }
        );
        assert_eq!(
            ClientCommand::parse_plain("rename|"),
            ClientCommand::Rename { name: "".into() }
        );
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
        ] {
            assert_eq!(ClientCommand::parse_plain(text), chat(text));
        }
    }

    #[test]
    fn chat_is_sanitized() {
        assert_eq!(
            ClientCommand::parse_plain("hi\x1b[2J"),
            chat("hi\u{FFFD}[2J")
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
                version: PROTOCOL_VERSION
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
