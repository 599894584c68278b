//! The room log: every room event (chat line, join, leave, rename) with its `seq` and `ts`,
//! durable on embedded SQLite, and the history queries answered from it.
//!
//! **Write-ahead, in groups.** The hub gives each event its `seq` and hands it here; one
//! writer thread commits whatever has queued up in one transaction, then wakes the delivery
//! task ([`RoomLog::committed`]), which only then has the hub deliver those events. So no
//! user ever receives a line that is not in the log, and a burst of lines costs one commit,
//! not one per line. The writer is a plain OS thread, not a tokio task: a commit blocks, and
//! it runs on the second core beside the runtime. Delivery stays on the runtime: one wake
//! per commit, instead of one cross-thread wake per connection the lines go to.
//!
//! **Durability.** WAL mode. With `synchronous=NORMAL` (the default) a commit is written to
//! the WAL file but not fsynced: it survives the server being killed (`kill -9`, a crash), and
//! a power loss can cost the last commits (the database itself stays consistent).
//! `--history-sync full` fsyncs every commit, so it survives power loss too, at the price of
//! a disk flush per group commit.
//!
//! **Retention** runs on the writer thread between commits, in small chunks, at least every
//! 10 s: never on the path that fans lines out to users.
//!
//! **One server per file.** The database file is locked (`flock`) for the log's life, so a
//! second server on the same file fails at start with a clear error.

use crate::outbox::{Mode, Rendered};
use anyhow::{Context, bail};
use chat_protocol::ServerEvent;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryDb {
    /// In memory only: gone when the server stops (`--history-db :memory:`).
    Memory,
    File(PathBuf),
}

impl HistoryDb {
    /// Reads the `--history-db` value.
    pub fn parse(value: &str) -> HistoryDb {
        if value == ":memory:" {
            HistoryDb::Memory
        } else {
            HistoryDb::File(value.into())
        }
    }
}

/// How the room log is kept.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    pub db: HistoryDb,
    /// Events older than this are deleted (`0`: kept however old).
    pub retention: Duration,
    /// At most this many events are kept, the newest (`0`: no limit).
    pub max_events: u64,
    /// fsync every commit (`synchronous=FULL`) instead of only writing it to the WAL.
    pub sync_full: bool,
    /// How often retention runs (10 s; tests shorten it).
    pub sweep_every: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            db: HistoryDb::Memory,
            retention: Duration::from_secs(30 * 86_400),
            max_events: 1_000_000,
            sync_full: false,
            sweep_every: SWEEP_EVERY,
        }
    }
}

/// One room event on its way into the log.
#[derive(Debug)]
pub struct Entry {
    pub seq: u64,
    pub ts_ms: i64,
    /// The event as users receive it; its JSON (and plain) text is what is stored, rendered
    /// here on the writer thread and then shared with the fan-out.
    pub line: Arc<Rendered>,
}

/// What a history request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// The newest `limit` events.
    Newest { limit: u32 },
    /// The `limit` events just older than `seq`.
    Before { seq: u64, limit: u32 },
    /// The `limit` events just newer than `seq`.
    After { seq: u64, limit: u32 },
    /// The newest `limit` events nc users saw (no renames), as timestamped plain lines.
    Plain { limit: u32 },
}

/// Sweeps for expired events at least this often, by default.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Rows deleted per retention transaction, so a sweep never holds the writer for long.
const SWEEP_CHUNK: i64 = 2_000;
/// Events committed in one transaction at most.
const MAX_GROUP: usize = 4_096;

/// What the writer thread is asked to do, in order.
enum Job {
    Append(Entry),
    /// A history read, answered between commits on the writer's connection: the log holds
    /// the database in exclusive locking mode, which saves every commit the half-dozen
    /// `fcntl` calls of WAL's shared-memory locks, and reads are rare beside writes.
    Query {
        query: Query,
        /// Newest seq delivered when the read was asked.
        bound: u64,
        answer: tokio::sync::oneshot::Sender<rusqlite::Result<Answer>>,
    },
}

/// The open log: where the hub appends and where history is read.
pub struct RoomLog {
    jobs: Mutex<Option<Sender<Job>>>,
    /// Newest seq committed; the writer raises it and then wakes `commits`.
    committed: AtomicU64,
    commits: tokio::sync::Notify,

    /// Newest seq delivered to users: answers never go past it, so an answer holds only
    /// events its asker has been sent (or missed) already.
    delivered: AtomicU64,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Keeps the database file locked against a second server.
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for RoomLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomLog")
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// The log as opened, before its writer runs ([`Opened::start`]).
pub struct Opened {
    writer: Connection,
    log: RoomLog,
    receiver: Receiver<Job>,
    config: HistoryConfig,
    /// The newest seq ever given out (0 for a new log): the next event gets one more.
    pub last_seq: u64,
}

impl RoomLog {
    /// Opens (creating if need be) the log. Every failure (a locked, corrupt or unwritable
    /// file) is an error that says which file and why.
    pub fn open(config: &HistoryConfig) -> anyhow::Result<Opened> {
        let (path, flags, lock) = match &config.db {
            HistoryDb::Memory => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                (":memory:".to_string(), flags, None)
            }
            HistoryDb::File(path) => {
                let shown = path.display();
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .with_context(|| format!("cannot open history database {shown}"))?;
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => bail!(
                        "history database {shown} is in use by another chat-server; give each server its own --history-db"
                    ),
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(e)
                            .with_context(|| format!("cannot lock history database {shown}"));
                    }
                }
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                (path.to_string_lossy().into_owned(), flags, Some(file))
            }
        };
        let shown = match &config.db {
            HistoryDb::Memory => ":memory:".to_string(),
            HistoryDb::File(path) => path.display().to_string(),
        };
        let context = || format!("cannot use history database {shown}");
        let writer = Connection::open_with_flags(&path, flags).with_context(context)?;
        prepare_writer(&writer, config).with_context(context)?;
        let last_seq = last_seq(&writer).with_context(context)?;
        let (jobs, receiver) = std::sync::mpsc::channel();
        Ok(Opened {
            writer,
            receiver,
            config: config.clone(),
            last_seq,
            log: RoomLog {
                jobs: Mutex::new(Some(jobs)),
                committed: AtomicU64::new(last_seq),
                commits: tokio::sync::Notify::new(),

                delivered: AtomicU64::new(last_seq),
                writer: Mutex::new(None),
                _lock: lock,
            },
        })
    }

    /// Queues an event for the next group commit. Called under the hub's lock, in seq order.
    pub fn append(&self, entry: Entry) {
        self.send(Job::Append(entry));
    }

    fn send(&self, job: Job) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(jobs) = jobs.as_ref() {
            // Fails only once the writer is gone, at the very end of shutdown.
            let _ = jobs.send(job);
        }
    }

    /// Waits for the next commit and returns the newest seq committed. Commits that happen
    /// while nobody waits are not lost: the next wait returns at once with the newest.
    pub async fn committed(&self) -> u64 {
        self.commits.notified().await;
        self.committed.load(Ordering::Acquire)
    }

    /// The newest seq committed so far.
    pub fn committed_now(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Records that every event up to `seq` has been delivered.
    pub fn delivered_up_to(&self, seq: u64) {
        self.delivered.fetch_max(seq, Ordering::Release);
    }

    /// Answers a history query, on the writer thread between commits (off the runtime).
    pub async fn query(&self, query: Query) -> anyhow::Result<Answer> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let bound = self.delivered.load(Ordering::Acquire);
        self.send(Job::Query {
            query,
            bound,
            answer,
        });
        Ok(answered.await.context("the room log has closed")??)
    }

    /// Stops the writer once it has committed everything queued, and waits for it.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Opened {
    /// Starts the writer thread.
    pub fn start(self) -> anyhow::Result<Arc<RoomLog>> {
        let Opened {
            writer,
            log,
            receiver,
            config,
            ..
        } = self;
        let log = Arc::new(log);
        let shared = log.clone();
        let on_commit = move |seq| {
            shared.committed.fetch_max(seq, Ordering::Release);
            shared.commits.notify_one();
        };
        let handle = std::thread::Builder::new()
            .name("room-log".into())
            .spawn(move || write_loop(writer, receiver, &config, on_commit))
            .context("cannot start the room log's writer thread")?;
        *log.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(log)
    }
}

fn prepare_writer(connection: &Connection, config: &HistoryConfig) -> anyhow::Result<()> {
    // One connection does everything (see `Job::Query`), so it may keep the database to
    // itself: no shared-memory WAL index and no file locks taken and released per commit.
    // Set before WAL mode is entered, so the WAL index lives in heap memory.
    connection.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    if matches!(config.db, HistoryDb::File(_)) {
        let mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("could not switch to WAL mode (got {mode})");
        }
    }
    let sync = if config.sync_full { "FULL" } else { "NORMAL" };
    connection.pragma_update(None, "synchronous", sync)?;
    // The writer only appends and deletes the oldest rows: a small page cache is enough,
    // and keeps the server's memory flat however long the log grows.
    connection.pragma_update(None, "cache_size", -1024)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    // One row per event, keyed by seq: the JSON line as users received it, its time (for
    // retention) and whether nc users saw it (renames they never did). No other index: an
    // insert stays one B-tree append, and retention finds its cut by seq (see `sweep`).
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY,
            ts_ms INTEGER NOT NULL,
            nc INTEGER NOT NULL,
            json TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    )?;
    Ok(())
}

/// The newest seq ever given out: the newest event's, or the one retention remembered
/// before it deleted everything.
fn last_seq(connection: &Connection) -> rusqlite::Result<u64> {
    let stored: Option<i64> = connection
        .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |row| {
            row.get(0)
        })
        .optional()?;
    let newest: Option<i64> =
        connection.query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))?;
    Ok(stored.unwrap_or(0).max(newest.unwrap_or(0)).max(0) as u64)
}

fn write_loop(
    mut connection: Connection,
    receiver: Receiver<Job>,
    config: &HistoryConfig,
    on_commit: impl Fn(u64),
) {
    let mut group: Vec<Entry> = Vec::new();
    let mut queries = Vec::new();
    let every = config.sweep_every;
    let mut last_sweep = Instant::now();
    let mut newest = 0u64;
    loop {
        let wait = every.saturating_sub(last_sweep.elapsed());
        let first = match receiver.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for job in first.into_iter().chain(receiver.try_iter().take(MAX_GROUP)) {
            match job {
                Job::Append(entry) => group.push(entry),
                Job::Query {
                    query,
                    bound,
                    answer,
                } => queries.push((query, bound, answer)),
            }
        }
        if let Some(last) = group.last() {
            newest = last.seq;
            commit_until_it_works(&mut connection, &group);
            group.clear();
            on_commit(newest);
        }
        for (query, bound, answer) in queries.drain(..) {
            let _ = answer.send(run_query(&connection, query, bound));
        }
        if last_sweep.elapsed() >= every {
            last_sweep = Instant::now();
            if let Err(e) = sweep(&mut connection, config, newest) {
                tracing::error!(error = %e, "history retention sweep failed");
            }
        }
    }
    // The hub is gone: whatever was still queued has been committed above.
    tracing::debug!("room log closed");
}

/// Commits `group`, retrying while the disk refuses: a line is delivered only once it is in
/// the log, so the room waits rather than deliver lines that would be missing from history.
fn commit_until_it_works(connection: &mut Connection, group: &[Entry]) {
    let mut delay = Duration::from_millis(10);
    loop {
        match commit(connection, group) {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, events = group.len(), "cannot write the room log; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn commit(connection: &mut Connection, group: &[Entry]) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO events (seq, ts_ms, nc, json) VALUES (?1, ?2, ?3, ?4)")?;
        for entry in group {
            let json = entry.line.bytes(Mode::Json).unwrap_or_default();
            let json = std::str::from_utf8(json).unwrap_or_default().trim_end();
            let nc = !matches!(entry.line.event(), Some(ServerEvent::Rename { .. }));
            insert.execute(params![entry.seq as i64, entry.ts_ms, nc, json])?;
        }
    }
    tx.commit()
}

/// Records the newest seq in `meta`, so that deleting every event cannot make a seq be
/// used twice. Only retention deletes, so only retention needs it: commits stay one page.
fn remember_last_seq(connection: &Connection, seq: u64) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO meta (key, value) VALUES ('last_seq', ?1)
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![seq as i64],
    )?;
    Ok(())
}

/// Deletes what retention no longer keeps, a chunk per transaction.
fn sweep(connection: &mut Connection, config: &HistoryConfig, newest: u64) -> rusqlite::Result<()> {
    let newest = newest.max(last_seq(connection)?);
    remember_last_seq(connection, newest)?;
    if config.max_events != 0 && newest > config.max_events {
        let keep_from = (newest - config.max_events + 1) as i64;
        delete_chunks(
            connection,
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ?1 ORDER BY seq LIMIT ?2)",
            keep_from,
        )?;
    }
    if !config.retention.is_zero() {
        let cutoff = now_ms() - i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX);
        if let Some(keep_from) = first_seq_at_or_after(connection, cutoff)? {
            delete_chunks(
                connection,
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ?1 ORDER BY seq LIMIT ?2)",
                keep_from,
            )?;
        }
    }
    Ok(())
}

/// The first seq whose time is at or after `cutoff_ms` (one past the newest if none is), by
/// binary search over seq: times grow with seqs (both are taken under the hub's lock), so
/// this costs a few primary-key lookups and needs no index on time. `None` for an empty log.
fn first_seq_at_or_after(connection: &Connection, cutoff_ms: i64) -> rusqlite::Result<Option<i64>> {
    let (low, high): (Option<i64>, Option<i64>) =
        connection.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let (Some(mut low), Some(high)) = (low, high) else {
        return Ok(None);
    };
    let mut at = connection
        .prepare_cached("SELECT seq, ts_ms FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    // Every seq below `low` is older than the cutoff; the answer is in `low..=high`, where
    // `high` one past the newest means "all of them".
    let mut high = high + 1;
    while low < high {
        let middle = low + (high - low) / 2;
        let (seq, ts_ms): (i64, i64) =
            at.query_row([middle], |row| Ok((row.get(0)?, row.get(1)?)))?;
        if ts_ms < cutoff_ms {
            low = seq + 1;
        } else {
            high = middle;
        }
    }
    Ok(Some(low))
}

fn delete_chunks(connection: &mut Connection, sql: &str, bound: i64) -> rusqlite::Result<()> {
    loop {
        let deleted = connection.execute(sql, params![bound, SWEEP_CHUNK])?;
        if deleted < SWEEP_CHUNK as usize {
            return Ok(());
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-12-02T02:41:07.123Z`: the `ts` of room events.
pub fn format_ts(ts_ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ts_ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `2026-12-02T02:41:07Z`: the time in front of a plain history line.
fn format_ts_seconds(ts_ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ts_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A history answer, rendered for the mode it was asked in.
#[derive(Debug)]
pub struct Answer {
    pub line: Arc<Rendered>,
}

fn run_query(connection: &Connection, query: Query, bound: u64) -> rusqlite::Result<Answer> {
    let bound = bound as i64;
    if let Query::Plain { limit } = query {
        let mut statement = connection.prepare_cached(
            "SELECT ts_ms, json FROM events WHERE nc AND seq <= ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows: Vec<(i64, String)> = statement
            .query_map(params![bound, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut text = String::from("history:\n");
        for (ts_ms, json) in rows.iter().rev() {
            // The line as it was broadcast: the stored event rendered the same way again.
            let Some(plain) = ServerEvent::parse_json(json)
                .ok()
                .and_then(|e| e.to_plain())
            else {
                continue;
            };
            text.push_str(&format_ts_seconds(*ts_ms));
            text.push(' ');
            text.push_str(&plain);
        }
        return Ok(Answer {
            line: Rendered::preformatted(Some(text), None),
        });
    }
    let (sql, from, limit, ascending) = match query {
        Query::Newest { limit } => (
            "SELECT seq, json FROM events WHERE seq <= ?1 ORDER BY seq DESC LIMIT ?2",
            bound,
            limit,
            false,
        ),
        Query::Before { seq, limit } => (
            "SELECT seq, json FROM events WHERE seq <= ?1 ORDER BY seq DESC LIMIT ?2",
            bound.min(i64::try_from(seq).unwrap_or(i64::MAX) - 1),
            limit,
            false,
        ),
        Query::After { seq, limit } => (
            "SELECT seq, json FROM events WHERE seq > ?1 AND seq <= ?3 ORDER BY seq ASC LIMIT ?2",
            i64::try_from(seq).unwrap_or(i64::MAX),
            limit,
            true,
        ),
        Query::Plain { .. } => unreachable!("answered above"),
    };
    let mut statement = connection.prepare_cached(sql)?;
    let fetch = i64::from(limit) + 1;
    let values: &[i64] = if ascending {
        &[from, fetch, bound]
    } else {
        &[from, fetch]
    };
    let mut rows: Vec<(i64, String)> = statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if !ascending {
        rows.reverse();
    }
    let gap = if ascending {
        // Something between `seq` and the first event returned (or the newest) is gone.
        match rows.first() {
            Some((first, _)) => *first > from + 1,
            None => bound > from,
        }
    } else {
        // The page reaches the oldest kept event, and older ones existed.
        let oldest = rows.first().map_or(from + 1, |(seq, _)| *seq);
        !more && oldest > 1
    };
    let mut json = String::with_capacity(64 + rows.iter().map(|(_, j)| j.len() + 1).sum::<usize>());
    json.push_str("{\"type\":\"history\",\"events\":[");
    for (i, (_, event)) in rows.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(event);
    }
    json.push_str(&format!("],\"more\":{more},\"gap\":{gap}}}\n"));
    Ok(Answer {
        line: Rendered::preformatted(None, Some(json)),
    })
}
