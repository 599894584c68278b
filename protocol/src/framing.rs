//! Splitting a byte stream into lines.
//!
//! The original read whatever one `read` returned and called it a line, minus its last byte.
//! Here a line ends at `\n` (a `\r` before it is dropped too), however the bytes were split
//! across reads. A line longer than the limit is reported once, as soon as the limit is
//! passed, and the rest of it is skipped as it arrives: at most one line's worth of bytes is
//! ever held.

/// One unit of client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n` or `\r\n`.
    Line(&'a [u8]),
    /// A line passed the length limit. Its bytes up to and including the next `\n` are dropped.
    TooLong,
}

/// Incremental line splitter. Feed it each chunk read from the socket.
#[derive(Debug, Default)]
pub struct LineFramer {
    /// Longest accepted line in bytes, without the line ending; `0` means unlimited.
    max_line_bytes: usize,
    /// The start of a line whose end has not arrived yet. Empty (and without capacity, after
    /// [`LineFramer::shrink`]) between lines, so an idle connection costs nothing here.
    partial: Vec<u8>,
    /// Inside a line that was already reported as too long: skip to its `\n`.
    discarding: bool,
}

impl LineFramer {
    pub fn new(max_line_bytes: usize) -> Self {
        LineFramer {
            max_line_bytes,
            partial: Vec::new(),
            discarding: false,
        }
    }

    /// Bytes of an unfinished line held right now.
    pub fn pending_bytes(&self) -> usize {
        self.partial.len()
    }

    /// Gives back the memory of a past long line.
    pub fn shrink(&mut self) {
        if self.partial.is_empty() {
            self.partial = Vec::new();
        }
    }

    fn over_limit(&self, len: usize) -> bool {
        self.max_line_bytes != 0 && len > self.max_line_bytes
    }

    /// Splits `chunk` and calls `on_frame` for each complete line or limit breach, in order.
    pub fn push(&mut self, mut chunk: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.discarding = false;
                        chunk = &chunk[i + 1..];
                        continue;
                    }
                    None => return,
                }
            }
            match newline {
                Some(i) => {
                    let (head, rest) = (&chunk[..i], &chunk[i + 1..]);
                    chunk = rest;
                    if self.partial.is_empty() {
                        let line = strip_cr(head);
                        if self.over_limit(line.len()) {
                            on_frame(Frame::TooLong);
                        } else {
                            on_frame(Frame::Line(line));
                        }
                    } else {
                        self.partial.extend_from_slice(head);
                        let len = strip_cr(&self.partial).len();
                        if self.over_limit(len) {
                            on_frame(Frame::TooLong);
                        } else {
                            on_frame(Frame::Line(&self.partial[..len]));
                        }
                        self.partial.clear();
                    }
                }
                None => {
                    // A trailing `\r` may still be followed by `\n`, so allow one byte of slack.
                    let len = self.partial.len() + chunk.len();
                    if self.over_limit(len.saturating_sub(1)) {
                        self.partial.clear();
                        self.partial.shrink_to(0);
                        self.discarding = true;
                        on_frame(Frame::TooLong);
                    } else {
                        self.partial.extend_from_slice(chunk);
                    }
                    return;
                }
            }
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, ()>> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, |f| {
                out.push(match f {
                    Frame::Line(l) => Ok(l.to_vec()),
                    Frame::TooLong => Err(()),
                })
            });
        }
        out
    }

    fn line(s: &str) -> Result<Vec<u8>, ()> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn several_lines_in_one_chunk() {
        assert_eq!(
            frames(0, &[b"a\nbb\r\n\nccc\n"]),
            vec![line("a"), line("bb"), line(""), line("ccc")]
        );
    }

    #[test]
    fn one_line_across_chunks() {
        assert_eq!(
            frames(0, &[b"he", b"llo wor", b"ld\r", b"\nnext", b"\n"]),
            vec![line("hello world"), line("next")]
        );
    }

    #[test]
    fn unfinished_line_is_not_a_frame() {
        assert_eq!(frames(0, &[b"no newline yet"]), vec![]);
    }

    #[test]
    fn limit_is_inclusive_and_excludes_line_ending() {
        assert_eq!(frames(3, &[b"abc\r\n"]), vec![line("abc")]);
        assert_eq!(frames(3, &[b"ab", b"c\r", b"\n"]), vec![line("abc")]);
        assert_eq!(frames(3, &[b"abcd\n"]), vec![Err(())]);
    }

    #[test]
    fn long_line_reported_once_then_skipped_as_it_arrives() {
        let mut framer = LineFramer::new(4);
        let mut out = Vec::new();
        for chunk in [&b"12345"[..], b"6789", b"0000", b"xx\nok\n"] {
            framer.push(chunk, |f| out.push(format!("{f:?}")));
            assert!(framer.pending_bytes() <= 5, "never buffers past the limit");
        }
        assert_eq!(
            out,
            vec!["TooLong".to_string(), "Line([111, 107])".to_string()]
        );
    }
}
