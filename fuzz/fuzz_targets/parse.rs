//! Feeds arbitrary bytes through everything that reads client or server input: framing
//! (split at an arbitrary point), decoding, plain and JSON command parsing, name checks,
//! JSON event parsing and the plain-text event parser. Nothing may panic, and what the
//! parsers let through must be terminal-safe.

#![no_main]

use chat_protocol::command::decode_line;
use chat_protocol::sanitize::is_unsafe;
use chat_protocol::{
    ClientCommand, Frame, LineFramer, PlainParser, ServerEvent, validate_name,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, rest) = match data.split_first() {
        Some((&split, rest)) => (split as usize, rest),
        None => return,
    };
    let cut = split.min(rest.len());
    let mut framer = LineFramer::new(64);
    let mut lines = Vec::new();
    for chunk in [&rest[..cut], &rest[cut..]] {
        framer.push(chunk, |frame| {
            if let Frame::Line(line) = frame {
                lines.push(line.to_vec());
            }
        });
        assert!(framer.pending_bytes() <= 65);
    }
    let mut plain = PlainParser::new();
    for line in lines.iter().map(Vec::as_slice).chain([rest]) {
        let (text, _) = decode_line(line);
        if let ClientCommand::Chat { text } = ClientCommand::parse_plain(&text) {
            assert!(!text.chars().any(is_unsafe));
        }
        if let Ok(ClientCommand::Chat { text }) = ClientCommand::parse_json(&text) {
            assert!(!text.chars().any(is_unsafe));
        }
        if validate_name(&text).is_ok() {
            assert!(!text.chars().any(is_unsafe));
        }
        let _ = ServerEvent::parse_json(&text);
        let _ = plain.parse_line(&text);
    }
});
