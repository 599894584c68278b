//! The room log's write-ahead file: where lines that trickle in are written before anyone
//! receives them, one memory copy each, and from where they reach SQLite in groups.
//!
//! A room where one line arrives at a time would otherwise commit every line on its own:
//! SQLite's statements and a WAL frame (two `pwrite`s of a whole page) per line, the
//! largest part of what the log costs there. Instead each line is copied into a shared
//! mapping of this file (`FILE-ahead` beside the database): the copy lands in the kernel's
//! page cache, so it survives the server being killed exactly as a commit without fsync
//! does, and costs no system call. What gathered here moves into SQLite in one transaction
//! within 100 ms or 1,024 events (or sooner: a history read, a backup, a larger group), on
//! the blocking pool while new lines go on being written here.
//!
//! So the file has two halves. Lines are written into one until its move starts, then into
//! the other while that move runs; the first half is cleared once SQLite holds its lines,
//! ready for the next switch. At start the records still in either half (the server was
//! killed before they reached SQLite) are put into SQLite first, in seq order.
//!
//! **Format.** A 16-byte magic, then the two halves, each records from its start: `len`
//! (u32), `sum` (u64, FNV-1a of the body), then the `len`-byte body: `seq` (u64), `ts_ms`
//! (i64), `nc` (u8) and the event's JSON line; little-endian. The space after a half's last
//! record is zeros. A record's `len` is stored last, behind a fence, so a record cut short
//! by the process dying reads as the end of its half; `sum` catches one cut short by a
//! power loss.

use anyhow::{Context, bail};
use memmap2::MmapMut;
use std::fs::File;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 16] = b"chat-log-ahead/1";
/// The file's size: each half has room for some 2,000 chat lines, more than gather between
/// two moves into SQLite (a group that does not fit goes to SQLite directly).
pub const BYTES: usize = 1 << 20;
/// Each half's size, and where each starts.
const HALF: usize = (BYTES - MAGIC.len()) / 2;
const HALVES: [usize; 2] = [MAGIC.len(), MAGIC.len() + HALF];
/// `len` and `sum`.
const RECORD_HEAD: usize = 4 + 8;
/// `seq`, `ts_ms` and `nc`.
const BODY_FIXED: usize = 8 + 8 + 1;

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub ts_ms: i64,
    /// Whether nc users saw it (renames they never did).
    pub nc: bool,
    pub json: String,
}

/// The open write-ahead file, mapped.
pub struct Ahead {
    map: MmapMut,
    /// The half that records are written into.
    active: usize,
    /// Where each half's next record goes (its start while it is empty).
    at: [usize; 2],
    /// Kept open for as long as it is mapped.
    _file: File,
}

/// `FILE-ahead` for the database `FILE`.
pub fn path_for(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push("-ahead");
    PathBuf::from(path)
}

impl Ahead {
    /// Opens the file at `path` (creating it) and reads the records it holds, in seq order.
    /// They stay in the file until [`Ahead::start_empty`]: the caller first puts them into
    /// SQLite. A file that is not one of ours is an error, never overwritten.
    pub fn open(path: &Path) -> anyhow::Result<(File, Vec<Record>)> {
        let shown = path.display();
        let file = super::open_or_create(path)
            .with_context(|| format!("cannot open the room log's write-ahead file {shown}"))?;
        let held = std::fs::read(path)
            .with_context(|| format!("cannot read the room log's write-ahead file {shown}"))?;
        if held.is_empty() {
            return Ok((file, Vec::new()));
        }
        if held.len() < MAGIC.len() || &held[..MAGIC.len()] != MAGIC {
            bail!(
                "{shown} is not a chat-server write-ahead file; move it away (it is named after --history-db)"
            );
        }
        // Both halves (a file cut shorter than ours reads as far as it goes).
        let mut records = Vec::new();
        for start in HALVES {
            if let Some(half) = held.get(start..(start + HALF).min(held.len())) {
                records.extend(read_records(half));
            }
        }
        records.sort_by_key(|record| record.seq);
        Ok((file, records))
    }

    /// Empties `file` (its records are in SQLite now) and maps it for writing.
    pub fn start_empty(file: File, path: &Path) -> anyhow::Result<Ahead> {
        let shown = path.display();
        let context = || format!("cannot prepare the room log's write-ahead file {shown}");
        // Cut to nothing and grown again: zeros throughout, without touching a page.
        file.set_len(0).with_context(context)?;
        file.set_len(BYTES as u64).with_context(context)?;
        // SAFETY: the mapping is of a file that only this process uses: it sits beside the
        // database file, which this process holds locked (a second server refuses to
        // start), and nothing here changes its size while it is mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }.with_context(context)?;
        map[..MAGIC.len()].copy_from_slice(MAGIC);
        Ok(Ahead {
            map,
            active: 0,
            at: HALVES,
            _file: file,
        })
    }

    /// The bytes a record of a `json_len`-byte line takes.
    pub fn record_len(json_len: usize) -> usize {
        RECORD_HEAD + BODY_FIXED + json_len
    }

    /// Bytes still free for records in the half being written.
    pub fn room(&self) -> usize {
        HALVES[self.active] + HALF - self.at[self.active]
    }

    /// Writes one record; the caller checked [`Ahead::room`] (a record that does not fit is
    /// not written, and `false` says so).
    pub fn append(&mut self, seq: u64, ts_ms: i64, nc: bool, json: &[u8]) -> bool {
        let total = Self::record_len(json.len());
        let Ok(len) = u32::try_from(BODY_FIXED + json.len()) else {
            return false;
        };
        if total > self.room() {
            return false;
        }
        let at = self.at[self.active];
        let record = &mut self.map[at..at + total];
        let body = &mut record[RECORD_HEAD..];
        body[..8].copy_from_slice(&seq.to_le_bytes());
        body[8..16].copy_from_slice(&ts_ms.to_le_bytes());
        body[16] = u8::from(nc);
        body[BODY_FIXED..].copy_from_slice(json);
        let sum = fnv1a(body);
        record[4..RECORD_HEAD].copy_from_slice(&sum.to_le_bytes());
        // The length last: until it is stored the record reads as the end of its half.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        record[..4].copy_from_slice(&len.to_le_bytes());
        self.at[self.active] += total;
        true
    }

    /// Starts writing into the other half, if it is empty, and returns the half written so
    /// far, to be [cleared](Ahead::clear) once SQLite holds its records. `None` while the
    /// other half still holds records (its move has not ended): writing goes on here.
    pub fn switch(&mut self) -> Option<usize> {
        let other = 1 - self.active;
        if self.at[other] != HALVES[other] {
            return None;
        }
        let written = self.active;
        self.active = other;
        Some(written)
    }

    /// The half records are written into now.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Forgets every record of `half`: they are all in SQLite now. The first record's
    /// length goes first, so a server killed halfway finds the half empty, not partial.
    pub fn clear(&mut self, half: usize) {
        let (start, end) = (HALVES[half], self.at[half]);
        if end == start {
            return;
        }
        self.map[start..start + 4].fill(0);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.map[start + 4..end].fill(0);
        self.at[half] = start;
    }
}

/// The records at the start of `bytes`, up to the first that is missing, cut short or
/// damaged.
fn read_records(bytes: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + RECORD_HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut sum = [0; 8];
        sum.copy_from_slice(&head[4..]);
        let Some(body) = bytes.get(at + RECORD_HEAD..at + RECORD_HEAD + len) else {
            break;
        };
        if len < BODY_FIXED || fnv1a(body) != u64::from_le_bytes(sum) {
            break;
        }
        let field = |from: usize| {
            let mut eight = [0; 8];
            eight.copy_from_slice(&body[from..from + 8]);
            eight
        };
        let Ok(json) = std::str::from_utf8(&body[BODY_FIXED..]) else {
            break;
        };
        records.push(Record {
            seq: u64::from_le_bytes(field(0)),
            ts_ms: i64::from_le_bytes(field(8)),
            nc: body[16] != 0,
            json: json.to_string(),
        });
        at += RECORD_HEAD + len;
    }
    records
}

/// 64-bit FNV-1a: enough to tell a whole record from one torn by a power loss.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-ahead-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("log-ahead")
    }

    /// A new, empty write-ahead file of this test's own, mapped.
    fn fresh(test: &str) -> (PathBuf, Ahead) {
        let path = temp_path(test);
        let (file, held) = Ahead::open(&path).expect("open");
        assert!(held.is_empty());
        let ahead = Ahead::start_empty(file, &path).expect("map");
        (path, ahead)
    }

    fn reopened(path: &Path) -> Vec<Record> {
        Ahead::open(path).expect("reopen").1
    }

    fn seqs(path: &Path) -> Vec<u64> {
        reopened(path).iter().map(|record| record.seq).collect()
    }

    #[test]
    fn records_written_are_read_back_after_the_writer_is_gone() {
        let (path, mut ahead) = fresh("roundtrip");
        assert!(ahead.append(7, 1_000, true, br#"{"type":"chat","text":"a"}"#));
        assert!(ahead.append(8, 1_001, false, br#"{"type":"rename"}"#));
        // Dropped without any flush or sync: the bytes are in the page cache already.
        drop(ahead);
        let held = reopened(&path);
        assert_eq!(
            held,
            vec![
                Record {
                    seq: 7,
                    ts_ms: 1_000,
                    nc: true,
                    json: r#"{"type":"chat","text":"a"}"#.into()
                },
                Record {
                    seq: 8,
                    ts_ms: 1_001,
                    nc: false,
                    json: r#"{"type":"rename"}"#.into()
                },
            ]
        );
    }

    #[test]
    fn a_cleared_half_holds_nothing_and_fills_again_from_its_start() {
        let (path, mut ahead) = fresh("clear");
        assert!(ahead.append(1, 1, true, b"{}"));
        let first = ahead.switch().expect("the other half is empty");
        ahead.clear(first);
        assert!(reopened(&path).is_empty());
        assert!(ahead.append(2, 2, true, b"{\"x\":1}"));
        assert_eq!(seqs(&path), [2]);
        assert_eq!(ahead.room(), HALF - Ahead::record_len(7));
    }

    #[test]
    fn both_halves_are_read_back_in_seq_order() {
        let (path, mut ahead) = fresh("halves");
        assert!(ahead.append(1, 1, true, b"{}"));
        assert!(ahead.append(2, 2, true, b"{}"));
        let first = ahead.switch().expect("the other half is empty");
        assert!(ahead.append(3, 3, true, b"{}"));
        // The first half's move has not ended: no switch back onto it.
        assert_eq!(ahead.switch(), None);
        assert!(ahead.append(4, 4, true, b"{}"));
        // Killed now, both halves come back, in seq order.
        assert_eq!(seqs(&path), [1, 2, 3, 4]);
        ahead.clear(first);
        assert_eq!(ahead.switch(), Some(1 - first));
        assert_eq!(ahead.active(), first);
        assert!(ahead.append(5, 5, true, b"{}"));
        assert_eq!(seqs(&path), [3, 4, 5]);
    }

    #[test]
    fn reading_stops_at_a_torn_or_damaged_record() {
        let (path, mut ahead) = fresh("torn");
        for seq in 1..=3 {
            assert!(ahead.append(seq, 0, true, b"{\"type\":\"chat\"}"));
        }
        drop(ahead);
        let mut bytes = std::fs::read(&path).expect("read");
        // Damage the second record's JSON: only the first is read back.
        let second = MAGIC.len() + Ahead::record_len(15) + RECORD_HEAD + BODY_FIXED;
        bytes[second] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(
            reopened(&path).iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1]
        );
    }

    #[test]
    fn a_record_that_does_not_fit_is_not_written() {
        let (path, mut ahead) = fresh("full");
        let big = vec![b'x'; HALF];
        assert!(!ahead.append(1, 0, true, &big));
        assert!(reopened(&path).is_empty());
    }

    #[test]
    fn a_foreign_file_is_refused_not_overwritten() {
        let path = temp_path("foreign");
        std::fs::write(&path, b"someone else's data").expect("write");
        let error = Ahead::open(&path).expect_err("refused").to_string();
        assert!(
            error.contains("not a chat-server write-ahead file"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"someone else's data");
    }
}
