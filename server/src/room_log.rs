//! The room log: every room event (chat line, join, leave, rename) with its `seq` and `ts`,
//! durable on embedded SQLite, and the history queries answered from it.
//!
//! **Write-ahead, in groups.** The hub gives each event its `seq` and appends it here. A
//! commit task on the runtime wakes once per turn of the runtime in which events were
//! appended, lets the other tasks woken in that turn run first (so everything read in one
//! go joins the same group), commits the group, and only then has the hub deliver those
//! events ([`RoomLog::on_commit`], in the same turn: a task woken for it cost a turn per
//! line). So no user ever receives a line that is not in the log, and a burst of lines
//! costs one commit, not one per line. A group of more than a few events is one SQLite
//! transaction; a small one (lines trickling in, one per group) is copied into the log's
//! write-ahead file (`ahead.rs`, `FILE-ahead`, in the page cache like an unsynced commit)
//! and reaches SQLite with the others gathered there within 100 ms, in one transaction on
//! the blocking pool while new lines go into the file's other half: SQLite's work and a WAL
//! frame per line were most of what the log cost such a room, and a move on the runtime
//! held up the lines behind it. History reads and backups first have what waits there moved
//! to SQLite; a restart after a kill moves what the file still holds. A commit in WAL mode
//! without fsync is a couple of `pwrite`s, cheaper on the runtime's own thread than handing
//! every group to another thread and back (which cost two wake-ups and an idle runtime per
//! group); with `--history-sync full` each commit waits for a disk flush, so it runs on the
//! blocking pool instead, and nothing is written ahead.
//!
//! **Durability.** WAL mode. With `synchronous=NORMAL` (the default) a commit is written to
//! the WAL file (or the write-ahead file) but not fsynced: it survives the server being
//! killed (`kill -9`, a crash), and a power loss can cost the last commits (the database
//! itself stays consistent).
//! `--history-sync full` fsyncs every commit, so it survives power loss too, at the price of
//! a disk flush per group commit.
//!
//! **Checkpoints off the commit path.** Folding the WAL back into the database file takes two
//! fsyncs, tens of milliseconds on a busy disk; SQLite's automatic checkpoint would run them
//! inside a commit, in front of every delivery waiting for it. So automatic checkpoints are
//! off, and a thread of its own runs passive checkpoints on a connection of its own while
//! commits go on, once a thousand commits or so have gathered (or 2 s have passed): a WAL
//! folded in completely starts over at the next commit, which then fsyncs the WAL's new
//! header, so folding often would put that fsync on the delivery path often. A checkpoint
//! cannot finish while commits keep adding to the WAL, and the WAL only starts over once
//! it has been folded in completely, so when the WAL passes
//! [`WAL_HIGH_FRAMES`] the thread holds commits off for one short checkpoint of the rest: a
//! brief pause every few thousand commits instead of a long one every thousand pages.
//!
//! **Retention** runs on the blocking pool at least every 10 s, in small chunks that each
//! hold the database only briefly: never on the path that fans lines out to users. History
//! reads run there too, on a connection of their own (WAL lets them read while commits
//! write).
//!
//! **One server per file.** The database file is locked (`flock`) for the log's life, so a
//! second server on the same file fails at start with a clear error. SQLite's locks are
//! held for the process's whole life too (the `unix-excl` VFS, see [`open_connection`]):
//! none is taken per commit, and no other process can open the file while the server runs;
//! [`RoomLog::backup`] writes a consistent copy (SIGUSR1).

use crate::outbox::{Mode, Rendered};
use anyhow::{Context, bail};
use chat_protocol::ServerEvent;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod ahead;
use ahead::Ahead;

/// Groups of more events than this go to SQLite at once (with whatever waits in the
/// write-ahead file): they already cost one commit for many events.
const AHEAD_GROUP_MAX: usize = 16;
/// Events that may wait in the write-ahead file; one more group moves them all to SQLite.
const AHEAD_PENDING_MAX: usize = 1024;
/// How long an event waits in the write-ahead file at most before the commit task moves
/// it to SQLite (history reads and backups move it at once).
const AHEAD_MOVE_AFTER: Duration = Duration::from_millis(100);

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
/// Rows deleted per retention transaction, so a sweep never holds the database for long.
const SWEEP_CHUNK: i64 = 2_000;

/// The open log: where the hub appends and where history is read.
pub struct RoomLog {
    /// The writer's connection: commits and retention take turns on it. Shared with the
    /// checkpoint thread, which holds it to keep commits off for its short final checkpoint.
    db: Arc<Mutex<Connection>>,
    /// History reads' own connection (a file only: an in-memory database is private to its
    /// connection, so there reads take turns on `db`).
    reader: Option<Mutex<Connection>>,
    /// The checkpoint thread (a file only); stopped and joined by [`RoomLog::close`].
    checkpoints: Mutex<Option<Checkpoints>>,
    /// What was committed since the checkpoint thread last folded the WAL in: it folds
    /// only once enough has gathered (see [`FOLD_AFTER_COMMITS`]).
    unfolded: Arc<Unfolded>,
    config: HistoryConfig,
    /// Events appended and not yet committed, in seq order.
    appended: Mutex<Vec<Entry>>,
    /// Wakes the commit task when `appended` goes from empty to non-empty.
    wake_commit: Notify,
    /// The write-ahead file and the events in it that SQLite does not hold yet (a file
    /// without `--history-sync full` only; see `ahead.rs`). Only the commit task writes it.
    ahead: Mutex<Option<WrittenAhead>>,
    /// Newest seq in SQLite's tables: history reads wait until it reaches what they may
    /// answer, and retention never records a newer one as the last seq given out.
    in_tables: AtomicU64,
    /// Woken whenever `in_tables` rises.
    tables_caught_up: Notify,
    /// Asks the commit task to move the write-ahead file's events into SQLite now.
    move_now: Notify,
    /// Told each time a retention sweep starts (tests wait for one to be under way).
    sweep_began: Notify,
    /// The move into SQLite under way on the blocking pool, if any: one at a time, in seq
    /// order (see [`RoomLog::move_ahead`]).
    moving: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Newest seq committed (in SQLite or the write-ahead file); the commit task raises it
    /// and then calls `on_commit`.
    committed: AtomicU64,
    /// Called by the commit task with the newest seq after each commit: the server has the
    /// hub deliver there, in the same turn, instead of waking a task of its own for it.
    on_commit: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Newest seq delivered to users: answers never go past it, so an answer holds only
    /// events its asker has been sent (or missed) already.
    delivered: AtomicU64,
    /// Tells the commit task to commit what is left and stop.
    closing: CancellationToken,
    commit_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Keeps the database file locked against a second server. Declared last, so it is
    /// closed after every connection (closing any descriptor of the file would drop
    /// SQLite's own locks on it).
    _lock: Option<std::fs::File>,
}

impl Drop for RoomLog {
    /// Without [`RoomLog::close`] (a task that failed, a library caller), the checkpoint
    /// thread is still stopped and joined here, so its connection closes before the file
    /// lock does.
    fn drop(&mut self) {
        let checkpoints = self
            .checkpoints
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(checkpoints) = checkpoints {
            checkpoints.stop();
        }
    }
}

/// The write-ahead file and what waits in it.
struct WrittenAhead {
    file: Ahead,
    /// The events in `file`, oldest first: SQLite does not hold them yet.
    pending: Vec<Entry>,
    /// When they go to SQLite at the latest (set by the first of them).
    due: Option<tokio::time::Instant>,
}

/// Commits and events not folded into the database yet, counted by the commit path.
#[derive(Debug, Default)]
struct Unfolded {
    commits: AtomicU64,
    events: AtomicU64,
}

/// The checkpoint thread, and the channel whose closing stops it.
struct Checkpoints {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpoints {
    /// Stops the thread and waits for it (at most one checkpoint).
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// How often the checkpoint thread looks whether to fold the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Commits after which the WAL is folded in. A WAL folded in completely starts over at the
/// next commit, and starting over fsyncs the WAL's new header inside that commit (SQLite's
/// guard against out-of-order writes), in front of every delivery waiting for it: folding
/// every tick under a trickle of lines meant four such fsyncs a second on the delivery
/// path; after this many commits it is about one a second at 1,000 lines/s.
const FOLD_AFTER_COMMITS: u64 = 1_024;
/// Events after which the WAL is folded in, whatever the commits: large groups fill the WAL
/// faster than their number says (a 200-byte line per event, this is some 400 pages).
const FOLD_AFTER_EVENTS: u64 = 8_192;
/// However few commits there were, what was committed is folded in this often.
const FOLD_AT_LEAST_EVERY: Duration = Duration::from_secs(2);
/// WAL size (pages) past which the checkpoint thread pauses commits for one checkpoint, so
/// the WAL can start over: about 32 MB, every eight seconds of one commit per millisecond.
pub const WAL_HIGH_FRAMES: i64 = 8_192;

impl std::fmt::Debug for RoomLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomLog")
            .field("committed", &self.committed)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// The log as opened, before its commit task runs ([`RoomLog::start`]).
pub struct Opened {
    log: RoomLog,
    /// The newest seq ever given out (0 for a new log): the next event gets one more.
    pub last_seq: u64,
}

impl RoomLog {
    /// Opens (creating if need be) the log. Every failure (a locked, corrupt or unwritable
    /// file) is an error that says which file and why.
    pub fn open(config: &HistoryConfig) -> anyhow::Result<Opened> {
        let (path, lock) = match &config.db {
            HistoryDb::Memory => (":memory:".to_string(), None),
            HistoryDb::File(path) => {
                let shown = path.display();
                let file = open_or_create(path)
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
                (path.to_string_lossy().into_owned(), Some(file))
            }
        };
        let shown = match &config.db {
            HistoryDb::Memory => ":memory:".to_string(),
            HistoryDb::File(path) => path.display().to_string(),
        };
        let context = || format!("cannot use history database {shown}");
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = open_connection(&path, flags).with_context(context)?;
        prepare_writer(&connection, config).with_context(context)?;
        let mut connection = connection;
        let mut last_seq = last_seq(&connection).with_context(context)?;
        let ahead = match &config.db {
            HistoryDb::Memory => None,
            HistoryDb::File(db_path) => {
                let ahead_path = ahead::path_for(db_path);
                let (file, held) = Ahead::open(&ahead_path)?;
                last_seq = recover(&mut connection, held, last_seq).with_context(context)?;
                if config.sync_full {
                    // Every commit is fsynced to SQLite itself: nothing is written ahead.
                    file.set_len(0).with_context(context)?;
                    None
                } else {
                    Some(WrittenAhead {
                        file: Ahead::start_empty(file, &ahead_path)?,
                        pending: Vec::new(),
                        due: None,
                    })
                }
            }
        };
        let db = Arc::new(Mutex::new(connection));
        let unfolded = Arc::new(Unfolded::default());
        let (reader, checkpoints) = match config.db {
            HistoryDb::Memory => (None, None),
            HistoryDb::File(_) => {
                let open = || -> anyhow::Result<Connection> {
                    let connection = open_connection(&path, flags)?;
                    prepare_any(&connection, config)?;
                    Ok(connection)
                };
                let reader = open().with_context(context)?;
                reader
                    .pragma_update(None, "query_only", true)
                    .with_context(context)?;
                let checkpoints =
                    start_checkpoints(open().with_context(context)?, db.clone(), unfolded.clone())
                        .with_context(context)?;
                (Some(Mutex::new(reader)), Some(checkpoints))
            }
        };
        Ok(Opened {
            last_seq,
            log: RoomLog {
                db,
                reader,
                checkpoints: Mutex::new(checkpoints),
                unfolded,
                config: config.clone(),
                appended: Mutex::new(Vec::new()),
                wake_commit: Notify::new(),
                ahead: Mutex::new(ahead),
                in_tables: AtomicU64::new(last_seq),
                tables_caught_up: Notify::new(),
                move_now: Notify::new(),
                sweep_began: Notify::new(),
                moving: Mutex::new(None),
                committed: AtomicU64::new(last_seq),
                on_commit: OnceLock::new(),
                delivered: AtomicU64::new(last_seq),
                closing: CancellationToken::new(),
                commit_task: Mutex::new(None),
                _lock: lock,
            },
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event for the next group commit. Called under the hub's lock, in seq order.
    pub fn append(&self, entry: Entry) {
        let mut appended = self.appended.lock().unwrap_or_else(|e| e.into_inner());
        appended.push(entry);
        if appended.len() == 1 {
            self.wake_commit.notify_one();
        }
    }

    /// The newest seq committed so far.
    pub fn committed_now(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Records that every event up to `seq` has been delivered.
    pub fn delivered_up_to(&self, seq: u64) {
        self.delivered.fetch_max(seq, Ordering::Release);
    }

    /// Answers a history query, on the blocking pool.
    pub async fn query(self: &Arc<Self>, query: Query) -> anyhow::Result<Answer> {
        let bound = self.delivered.load(Ordering::Acquire);
        self.in_tables_up_to(bound).await;
        let log = self.clone();
        Ok(tokio::task::spawn_blocking(move || match &log.reader {
            Some(reader) => {
                let reader = reader.lock().unwrap_or_else(|e| e.into_inner());
                run_query(&reader, query, bound)
            }
            None => run_query(&log.db(), query, bound),
        })
        .await??)
    }

    /// Where SIGUSR1 writes the backup: `FILE.backup` beside the log's file (`None` in
    /// memory).
    pub fn backup_path(&self) -> Option<PathBuf> {
        let HistoryDb::File(path) = &self.config.db else {
            return None;
        };
        let mut to = path.clone().into_os_string();
        to.push(".backup");
        Some(PathBuf::from(to))
    }

    /// Writes a consistent copy of the log to `to` while the room goes on, as one
    /// compacted SQLite file (`VACUUM INTO` a file beside it, then renamed over `to`, so
    /// `to` is always a whole copy). Returns the number of events in the copy. The copy has
    /// every event committed when it started; commits go on meanwhile. Other processes
    /// cannot open the log while the server runs (see [`open_connection`]), so this is the
    /// online backup.
    pub async fn backup(&self, to: PathBuf) -> anyhow::Result<u64> {
        let HistoryDb::File(path) = &self.config.db else {
            bail!("the room log is in memory (--history-db :memory:): there is no file to back up");
        };
        let path = path.to_string_lossy().into_owned();
        let config = self.config.clone();
        self.in_tables_up_to(self.committed_now()).await;
        tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let mut partial = to.clone().into_os_string();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let shown = partial.display();
            match std::fs::remove_file(&partial) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {shown}")),
            }
            let connection = open_connection(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            prepare_any(&connection, &config)?;
            let target = partial
                .to_str()
                .with_context(|| format!("{shown} is not UTF-8"))?;
            connection
                .execute("VACUUM INTO ?1", [target])
                .with_context(|| format!("cannot write {shown}"))?;
            drop(connection);
            let copy = Connection::open_with_flags(&partial, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let events: i64 =
                copy.query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))?;
            drop(copy);
            std::fs::rename(&partial, &to)
                .with_context(|| format!("cannot rename {shown} to {}", to.display()))?;
            Ok(events.max(0) as u64)
        })
        .await?
    }

    /// Commits whatever is still appended, stops the commit task and waits for it. The
    /// database file is released when the last handle on the log is dropped.
    pub async fn close(&self) {
        self.closing.cancel();
        let task = self
            .commit_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let checkpoints = self
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(checkpoints) = checkpoints {
            let _ = tokio::task::spawn_blocking(move || checkpoints.stop()).await;
        }
    }

    /// Takes what was appended since the last commit.
    fn take_group(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.appended.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until SQLite's tables hold every event up to `seq`, asking the commit task to
    /// move what waits in the write-ahead file there.
    async fn in_tables_up_to(&self, seq: u64) {
        loop {
            let caught_up = self.tables_caught_up.notified();
            tokio::pin!(caught_up);
            caught_up.as_mut().enable();
            if self.in_tables.load(Ordering::Acquire) >= seq {
                return;
            }
            self.move_now.notify_one();
            caught_up.await;
        }
    }

    /// Commits `group`: into the write-ahead file when it is a few events that fit there,
    /// otherwise into SQLite together with whatever waits in that file. Then announces it.
    async fn commit_group(self: &Arc<Self>, group: Vec<Entry>) {
        let Some(newest) = group.last().map(|entry| entry.seq) else {
            return;
        };
        let events = group.len() as u64;
        // The commit's latency, as the room waits for it: retries included.
        let started = std::time::Instant::now();
        if let Err(group) = self.write_ahead(group) {
            // Into SQLite with everything before it: after the move under way, if any, with
            // what waits in the write-ahead file.
            self.finish_move().await;
            let mut all = self.take_pending();
            all.extend(group);
            self.commit_to_tables(all).await;
        }
        let metrics = crate::telemetry::counters();
        metrics
            .history_commit_seconds
            .record(started.elapsed().as_secs_f64());
        metrics.history_events.increment(events);
        self.committed.fetch_max(newest, Ordering::Release);
        if let Some(on_commit) = self.on_commit.get() {
            on_commit(newest);
        }
    }

    /// Has the commit task call `deliver` with the newest seq committed after each commit
    /// (before [`RoomLog::start`]; once).
    pub fn on_commit(&self, deliver: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.on_commit.set(Box::new(deliver));
    }

    /// Writes `group` into the write-ahead file and keeps it for SQLite; gives it back if
    /// there is no such file or it is not the place for this group.
    fn write_ahead(&self, group: Vec<Entry>) -> Result<(), Vec<Entry>> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = ahead.as_mut() else {
            return Err(group);
        };
        if group.len() > AHEAD_GROUP_MAX || state.pending.len() + group.len() > AHEAD_PENDING_MAX {
            return Err(group);
        }
        let rows: Vec<Row<'_>> = group.iter().map(Row::of).collect();
        let bytes: usize = rows
            .iter()
            .map(|row| Ahead::record_len(row.json.len()))
            .sum();
        if bytes > state.file.room() {
            drop(rows);
            return Err(group);
        }
        for row in &rows {
            state
                .file
                .append(row.seq, row.ts_ms, row.nc, row.json.as_bytes());
        }
        drop(rows);
        if state.pending.is_empty() {
            state.due = Some(tokio::time::Instant::now() + AHEAD_MOVE_AFTER);
        }
        state.pending.extend(group);
        Ok(())
    }

    /// Takes the events waiting in the write-ahead file (they stay in the file until SQLite
    /// holds them).
    fn take_pending(&self) -> Vec<Entry> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = ahead.as_mut() else {
            return Vec::new();
        };
        state.due = None;
        std::mem::take(&mut state.pending)
    }

    /// When the events waiting in the write-ahead file are due in SQLite, if any wait.
    fn move_due(&self) -> Option<tokio::time::Instant> {
        let ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.as_ref().and_then(|state| state.due)
    }

    /// Starts moving the events waiting in the write-ahead file into SQLite, on the blocking
    /// pool: new lines go on being written ahead (into the file's other half) meanwhile, so
    /// the room never waits for SQLite. Moves run one at a time: if the last one has not
    /// ended, it is waited for first.
    async fn move_ahead(self: &Arc<Self>) {
        let has_pending = self
            .ahead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|state| !state.pending.is_empty());
        if !has_pending {
            return;
        }
        self.finish_move().await;
        let moved = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
            ahead.as_mut().and_then(|state| {
                // The other half is empty now that no move is under way.
                let half = state.file.switch()?;
                state.due = None;
                Some((std::mem::take(&mut state.pending), half))
            })
        };
        let Some((entries, half)) = moved else {
            return;
        };
        let log = self.clone();
        let task = tokio::task::spawn_blocking(move || log.move_into_tables(entries, half));
        *self.moving.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Waits for the move under way, if any.
    async fn finish_move(&self) {
        let task = self.moving.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "room log move into SQLite failed");
        }
    }

    /// Commits `entries`, the records of the write-ahead file's `half`, into SQLite (on the
    /// blocking pool; retrying while the disk refuses), then clears that half.
    fn move_into_tables(&self, entries: Vec<Entry>, half: usize) {
        let Some(newest) = entries.last().map(|entry| entry.seq) else {
            return;
        };
        let mut delay = Duration::from_millis(10);
        while let Err(e) = commit(&mut self.db(), &entries) {
            tracing::error!(error = %e, events = entries.len(), "cannot write the room log; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        self.tables_hold(newest, entries.len(), Some(half));
    }

    /// Commits `entries` (everything the write-ahead file holds among them) into SQLite in
    /// one transaction, retrying while the disk refuses: a line is delivered only once it is
    /// in the log, so the room waits rather than deliver lines missing from history. Then
    /// clears the write-ahead file.
    async fn commit_to_tables(self: &Arc<Self>, entries: Vec<Entry>) {
        let Some(newest) = entries.last().map(|entry| entry.seq) else {
            return;
        };
        let mut delay = Duration::from_millis(10);
        let mut entries = entries;
        loop {
            // Inline when the connection is free and no fsync is asked for; otherwise (a
            // full-sync commit, or retention or a history read holding the connection) on
            // the blocking pool, so the runtime never waits for them.
            let inline = if self.config.sync_full {
                None
            } else {
                match self.db.as_ref().try_lock() {
                    Ok(mut db) => Some(commit(&mut db, &entries)),
                    Err(std::sync::TryLockError::Poisoned(e)) => {
                        Some(commit(&mut e.into_inner(), &entries))
                    }
                    Err(std::sync::TryLockError::WouldBlock) => None,
                }
            };
            let result = if let Some(result) = inline {
                result
            } else {
                let log = self.clone();
                match tokio::task::spawn_blocking(move || {
                    let result = commit(&mut log.db(), &entries);
                    (entries, result)
                })
                .await
                {
                    Ok((back, result)) => {
                        entries = back;
                        result
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "room log commit task failed");
                        return;
                    }
                }
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, events = entries.len(), "cannot write the room log; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
        // Called with no move under way: whatever the write-ahead file holds is in the half
        // being written, and among `entries`.
        self.tables_hold(newest, entries.len(), None);
    }

    /// Records a commit of `events` events into SQLite, up to `newest`, and clears the
    /// write-ahead file's half that held those it held: `half`, or (`None`) the one being
    /// written.
    fn tables_hold(&self, newest: u64, events: usize, half: Option<usize>) {
        if let Some(state) = self
            .ahead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let half = half.unwrap_or(state.file.active());
            state.file.clear(half);
        }
        self.unfolded.commits.fetch_add(1, Ordering::Relaxed);
        self.unfolded
            .events
            .fetch_add(events as u64, Ordering::Relaxed);
        self.in_tables.fetch_max(newest, Ordering::Release);
        self.tables_caught_up.notify_waiters();
    }
}

impl Opened {
    /// The log, ready for [`RoomLog::start`].
    pub fn into_log(self) -> Arc<RoomLog> {
        Arc::new(self.log)
    }
}

impl RoomLog {
    /// Starts the commit task on the current runtime: nothing appended is committed (or
    /// delivered) before this.
    pub fn start(self: &Arc<Self>) {
        let task = tokio::spawn(commit_loop(self.clone()));
        *self.commit_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }
}

/// Commits each group as it forms, moves what waits in the write-ahead file into SQLite
/// when it is due or asked for, and starts retention at least every `sweep_every`.
///
/// A sweep runs on the blocking pool while commits go on: the loop never waits for one
/// (it deletes in chunks that take the writer's connection in turn with commits into
/// SQLite, and delivery waits only for commits). The timers are polled before the commit
/// wake-up: with several workers, sessions on the others can store a wake-up during every
/// commit, and a wake-up always ready and polled first would keep retention and moves from
/// ever running.
async fn commit_loop(log: Arc<RoomLog>) {
    let every = log.config.sweep_every;
    let sweep_at = tokio::time::sleep(every);
    tokio::pin!(sweep_at);
    let move_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(move_at);
    // When `move_at` is set for, if anything waits in the write-ahead file.
    let mut armed = None;
    // The sweep under way, if any: one at a time.
    let mut sweeping: Option<tokio::task::JoinHandle<rusqlite::Result<()>>> = None;
    loop {
        tokio::select! {
            biased;
            _ = log.closing.cancelled() => {
                log.commit_group(log.take_group()).await;
                log.move_ahead().await;
                log.finish_move().await;
                if let Some(sweep) = sweeping.take() {
                    let _ = sweep.await;
                }
                tracing::debug!("room log closed");
                return;
            }
            _ = &mut sweep_at => {
                sweep_at.as_mut().reset(tokio::time::Instant::now() + every);
                if sweeping.is_none() {
                    let sweeper = log.clone();
                    // Only what SQLite holds: the newest seq it records must be in its tables.
                    let newest = log.in_tables.load(Ordering::Acquire);
                    sweeping = Some(tokio::task::spawn_blocking(move || sweep(&sweeper, newest)));
                    log.sweep_began.notify_one();
                }
            }
            swept = async { sweeping.as_mut().expect("only when sweeping").await }, if sweeping.is_some() => {
                sweeping = None;
                match swept {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "history retention sweep failed"),
                    Err(e) => tracing::error!(error = %e, "history retention sweep task failed"),
                }
            }
            _ = &mut move_at, if armed.is_some() => log.move_ahead().await,
            _ = log.move_now.notified() => log.move_ahead().await,
            _ = log.wake_commit.notified() => {
                // The sessions woken in this turn of the runtime run first and append what
                // they read: one group, one commit.
                behind_the_woken().await;
                log.commit_group(log.take_group()).await;
            }
        }
        let due = log.move_due();
        if due != armed {
            if let Some(due) = due {
                move_at.as_mut().reset(due);
            }
            armed = due;
        }
    }
}

/// Opens `path` for reading and writing, creating it empty if it does not exist (and
/// never truncating it): the database file and its write-ahead file.
fn open_or_create(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Opens one connection to the log. A file is opened through SQLite's `unix-excl` VFS: the
/// process takes the file's locks once, for as long as it has it open, and its connections
/// (the writer's, the reader's, the checkpoint thread's) share the WAL index in memory and
/// take turns by in-process locks alone. The default `unix` VFS takes and releases POSIX
/// locks on the `-shm` file with `fcntl` around every transaction (six calls per commit,
/// some 8 µs of a commit's 20), so that other processes can share the file; no other
/// process is meant to write it (one server per file), and reading it while the server
/// runs is served by [`RoomLog::backup`] instead. No `-shm` file is made.
fn open_connection(path: &str, flags: OpenFlags) -> rusqlite::Result<Connection> {
    if path == ":memory:" {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags_and_vfs(path, flags, c"unix-excl")
    }
}

/// Lets every task already woken run before this one goes on: the commit task goes to the
/// back of its worker's queue by waking itself. Unlike `tokio::task::yield_now`, which
/// waits for the next poll of the I/O driver, this costs no `epoll_wait` per commit (one
/// system call per line at a steady trickle of lines), and the sessions that the last poll
/// woke are in that queue already.
async fn behind_the_woken() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

fn prepare_writer(connection: &Connection, config: &HistoryConfig) -> anyhow::Result<()> {
    if matches!(config.db, HistoryDb::File(_)) {
        let mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("could not switch to WAL mode (got {mode})");
        }
        // The checkpoint thread folds the WAL in, never a commit (see the module's doc).
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    } else {
        // Nobody else can see an in-memory database: no locks to take per commit.
        connection.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    }
    prepare_any(connection, config)?;
    // The writer only appends and deletes the oldest rows: a small page cache is enough,
    // and keeps the server's memory flat however long the log grows.
    connection.pragma_update(None, "cache_size", -1024)?;
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

/// Settings of every connection to the log: the writer's, the reader's and the checkpoint
/// thread's (a checkpoint syncs at the connection's level).
fn prepare_any(connection: &Connection, config: &HistoryConfig) -> rusqlite::Result<()> {
    let sync = if config.sync_full { "FULL" } else { "NORMAL" };
    connection.pragma_update(None, "synchronous", sync)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

/// Starts the checkpoint thread on its own connection `own`; `writer` is held only to
/// keep commits off during the short checkpoint that lets the WAL start over. It folds the
/// WAL in once `unfolded` has gathered [`FOLD_AFTER_COMMITS`] commits or
/// [`FOLD_AFTER_EVENTS`] events, and at least every [`FOLD_AT_LEAST_EVERY`] otherwise
/// (retention's deletes, which it does not count, included).
fn start_checkpoints(
    own: Connection,
    writer: Arc<Mutex<Connection>>,
    unfolded: Arc<Unfolded>,
) -> std::io::Result<Checkpoints> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("room-log-checkpoints".into())
        .spawn(move || {
            let mut folded_at = std::time::Instant::now();
            // Until the log closes (and drops the sender).
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                let commits = unfolded.commits.load(Ordering::Relaxed);
                let events = unfolded.events.load(Ordering::Relaxed);
                if commits < FOLD_AFTER_COMMITS
                    && events < FOLD_AFTER_EVENTS
                    && folded_at.elapsed() < FOLD_AT_LEAST_EVERY
                {
                    continue;
                }
                unfolded.commits.fetch_sub(commits, Ordering::Relaxed);
                unfolded.events.fetch_sub(events, Ordering::Relaxed);
                folded_at = std::time::Instant::now();
                if let Err(e) = checkpoint(&own, &writer) {
                    tracing::warn!(error = %e, "room log checkpoint failed; retrying later");
                }
            }
        })?;
    Ok(Checkpoints { stop, thread })
}

/// One passive checkpoint: it copies what it can while commits go on (with nothing new it
/// does nothing, not even an fsync). The WAL starts over at the first commit that finds it
/// folded in completely, which commits arriving during every checkpoint can prevent for
/// ever; so once the WAL holds more than [`WAL_HIGH_FRAMES`] pages, a second checkpoint
/// runs with commits held off, and the next commit starts the WAL over.
fn checkpoint(own: &Connection, writer: &Mutex<Connection>) -> rusqlite::Result<()> {
    let passive = || {
        own.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        })
    };
    if passive()? > WAL_HIGH_FRAMES {
        let _commits_wait = writer.lock().unwrap_or_else(|e| e.into_inner());
        passive()?;
    }
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

/// One row of the `events` table.
struct Row<'a> {
    seq: u64,
    ts_ms: i64,
    /// Whether nc users saw it (renames they never did).
    nc: bool,
    /// The event's JSON line as users received it, without its newline.
    json: &'a str,
}

impl Row<'_> {
    fn of(entry: &Entry) -> Row<'_> {
        let json = entry.line.bytes(Mode::Json).unwrap_or_default();
        Row {
            seq: entry.seq,
            ts_ms: entry.ts_ms,
            nc: !matches!(entry.line.event(), Some(ServerEvent::Rename { .. })),
            json: std::str::from_utf8(json).unwrap_or_default().trim_end(),
        }
    }
}

fn commit(connection: &mut Connection, group: &[Entry]) -> rusqlite::Result<()> {
    commit_rows(connection, group.iter().map(Row::of))
}

fn commit_rows<'a>(
    connection: &mut Connection,
    rows: impl ExactSizeIterator<Item = Row<'a>>,
) -> rusqlite::Result<()> {
    // A group of one, the rule when lines trickle in, is one statement in SQLite's own
    // transaction: no BEGIN and COMMIT to look up and run around it.
    if rows.len() == 1 {
        return insert(connection, rows);
    }
    // BEGIN and COMMIT are cached statements: `Connection::transaction` parses them anew
    // for every group, a visible part of a commit of one line.
    connection.prepare_cached("BEGIN")?.execute([])?;
    let done = insert(connection, rows)
        .and_then(|()| connection.prepare_cached("COMMIT")?.execute([]).map(drop));
    if done.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    done
}

fn insert<'a>(
    connection: &Connection,
    rows: impl Iterator<Item = Row<'a>>,
) -> rusqlite::Result<()> {
    let mut insert = connection
        .prepare_cached("INSERT INTO events (seq, ts_ms, nc, json) VALUES (?1, ?2, ?3, ?4)")?;
    for row in rows {
        insert.execute(params![row.seq as i64, row.ts_ms, row.nc, row.json])?;
    }
    Ok(())
}

/// Puts the events that the write-ahead file `held` and SQLite does not (the server was
/// killed before they reached it) into SQLite, and returns the newest seq there now. Only
/// the ones that follow SQLite's newest seq without a hole are taken: anything else is a
/// file that does not belong to this database (one restored from a backup, say), left out
/// with a warning.
fn recover(
    connection: &mut Connection,
    held: Vec<ahead::Record>,
    last_seq: u64,
) -> rusqlite::Result<u64> {
    let newer: Vec<ahead::Record> = held.into_iter().filter(|r| r.seq > last_seq).collect();
    let follows = newer
        .iter()
        .enumerate()
        .all(|(i, record)| record.seq == last_seq + 1 + i as u64);
    if newer.is_empty() {
        return Ok(last_seq);
    }
    if !follows {
        tracing::warn!(
            events = newer.len(),
            first = newer[0].seq,
            last_seq,
            "the room log's write-ahead file does not follow the database; its events are left out"
        );
        return Ok(last_seq);
    }
    let rows = newer.iter().map(|record| Row {
        seq: record.seq,
        ts_ms: record.ts_ms,
        nc: record.nc,
        json: &record.json,
    });
    commit_rows(connection, rows)?;
    let recovered = last_seq + newer.len() as u64;
    tracing::info!(
        events = newer.len(),
        last_seq = recovered,
        "room log: events written ahead before the last stop are in the history now"
    );
    Ok(recovered)
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
fn sweep(log: &RoomLog, newest: u64) -> rusqlite::Result<()> {
    let config = &log.config;
    let newest = {
        let db = log.db();
        let newest = newest.max(last_seq(&db)?);
        remember_last_seq(&db, newest)?;
        newest
    };
    let mut keep_from = None;
    if config.max_events != 0 && newest > config.max_events {
        keep_from = Some((newest - config.max_events + 1) as i64);
    }
    if !config.retention.is_zero() {
        let cutoff = now_ms() - i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX);
        if let Some(by_age) = first_seq_at_or_after(&log.db(), cutoff)? {
            keep_from = keep_from.max(Some(by_age));
        }
    }
    match keep_from {
        Some(keep_from) => delete_before(log, keep_from),
        None => Ok(()),
    }
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

/// Deletes every event older than `keep_from`, a chunk per transaction, letting commits
/// take their turn between chunks.
fn delete_before(log: &RoomLog, keep_from: i64) -> rusqlite::Result<()> {
    loop {
        let deleted = log.db().execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ?1 ORDER BY seq LIMIT ?2)",
            params![keep_from, SWEEP_CHUNK],
        )?;
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
    rfc3339(ts_ms, true)
}

/// `2026-12-02T02:41:07Z`: the time in front of a plain history line.
fn format_ts_seconds(ts_ms: i64) -> String {
    rfc3339(ts_ms, false)
}

/// The UTC time `ts_ms` milliseconds after the epoch (the epoch itself for earlier times)
/// in RFC 3339, with or without its milliseconds. Written out by hand: every node formats
/// the time of every room event, and humantime's `Display`, with the formatting machinery
/// and a string grown three times, cost several times this one allocation. (Unlike it,
/// this does not fail past the year 9999: the year just gets more digits.)
fn rfc3339(ts_ms: i64, millis: bool) -> String {
    let ts_ms = ts_ms.max(0);
    let secs = ts_ms / 1000;
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here):
    // years counted from March, so that the leap day is the last day of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // `-MM-DDTHH:MM:SS.mmmZ` after the year, each field written into its place.
    let mut rest = *b"-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for place in rest[at..at + width].iter_mut().rev() {
            *place = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(1, 2, month);
    put(4, 2, day);
    put(7, 2, of_day / 3600);
    put(10, 2, of_day / 60 % 60);
    put(13, 2, of_day % 60);
    put(16, 3, ts_ms % 1000);
    let rest = if millis {
        &rest[..]
    } else {
        rest[15] = b'Z';
        &rest[..16]
    };
    // From 1970 (times are never earlier) to 9999, four digits; later, as many as it takes.
    let mut out = String::with_capacity(4 + rest.len());
    if year <= 9999 {
        let digits = [year / 1000, year / 100 % 10, year / 10 % 10, year % 10];
        out.extend(digits.map(|digit| char::from(b'0' + digit as u8)));
    } else {
        out.push_str(&year.to_string());
    }
    out.extend(rest.iter().map(|&byte| char::from(byte)));
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::Stamp;

    #[test]
    fn recovery_takes_only_written_ahead_events_that_follow_the_tables() {
        let mut connection = Connection::open_in_memory().expect("open");
        prepare_writer(&connection, &HistoryConfig::default()).expect("prepare");
        let record = |seq: u64| ahead::Record {
            seq,
            ts_ms: seq as i64,
            nc: true,
            json: format!("{{\"seq\":{seq}}}"),
        };
        let stored = |connection: &Connection| -> Vec<i64> {
            let mut query = connection
                .prepare("SELECT seq FROM events ORDER BY seq")
                .expect("prepare");
            query
                .query_map([], |row| row.get(0))
                .expect("query")
                .map(|seq| seq.expect("seq"))
                .collect()
        };
        // Nothing in the tables yet: the file's events from seq 1 on are taken.
        let held = vec![record(1), record(2)];
        assert_eq!(recover(&mut connection, held, 0).expect("recover"), 2);
        // Those the tables already hold are skipped, the rest taken.
        let held = (1..=4).map(record).collect();
        assert_eq!(recover(&mut connection, held, 2).expect("recover"), 4);
        assert_eq!(stored(&connection), [1, 2, 3, 4]);
        // A file that does not follow (a hole after seq 4) belongs to another database.
        let held = vec![record(7), record(8)];
        assert_eq!(recover(&mut connection, held, 4).expect("recover"), 4);
        assert_eq!(stored(&connection), [1, 2, 3, 4]);
        assert_eq!(last_seq(&connection).expect("last seq"), 4);
    }

    #[test]
    fn times_are_written_as_humantime_writes_them() {
        let check = |ts_ms: i64| {
            let at = UNIX_EPOCH + Duration::from_millis(ts_ms as u64);
            assert_eq!(
                format_ts(ts_ms),
                humantime::format_rfc3339_millis(at).to_string(),
                "{ts_ms}"
            );
            assert_eq!(
                format_ts_seconds(ts_ms),
                humantime::format_rfc3339_seconds(at).to_string(),
                "{ts_ms}"
            );
        };
        // The epoch, leap days (2000 is a leap year, 2100 is not), the turn of centuries
        // and of the year 10000's eve, and a spread of ordinary times in between.
        for ts_ms in [
            0,
            999,
            1_000,
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
            4_107_456_000_000,
            1_796_179_267_123,
            253_402_300_799_999,
        ] {
            check(ts_ms);
        }
        let mut ts_ms = 0i64;
        while ts_ms < 253_402_300_799_999 {
            check(ts_ms);
            ts_ms += 86_399_999_983;
        }
        assert_eq!(format_ts(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ts(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }

    /// How many times the WAL started over: the WAL header's checkpoint sequence number
    /// (bytes 12..16, big-endian); 0 without a WAL.
    fn wal_restarts(wal: &std::path::Path) -> u32 {
        use std::io::Read;
        let mut header = [0u8; 16];
        std::fs::File::open(wal)
            .and_then(|mut file| file.read_exact(&mut header))
            .map_or(0, |()| {
                u32::from_be_bytes([header[12], header[13], header[14], header[15]])
            })
    }

    /// A fresh directory of this test's own and the config of a log file in it.
    fn log_in_temp_dir(test: &str) -> (std::path::PathBuf, HistoryConfig) {
        let dir = std::env::temp_dir().join(format!("chat-room-log-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = HistoryConfig {
            db: HistoryDb::File(dir.join("history.sqlite3")),
            ..HistoryConfig::default()
        };
        (dir, config)
    }

    /// Starts `log`'s commit task with a notice of each commit, for [`commit_line`].
    fn start_telling_commits(log: &Arc<RoomLog>) -> Arc<Notify> {
        let commits = Arc::new(Notify::new());
        let told = commits.clone();
        log.on_commit(move |_| told.notify_one());
        log.start();
        commits
    }

    /// Appends one chat line as event `seq` and waits until it is committed.
    async fn commit_line(log: &RoomLog, commits: &Notify, seq: u64) {
        let line = Rendered::new(ServerEvent::Chat {
            addr: "127.0.0.1:1".into(),
            name: "alice".into(),
            text: format!("line {seq}"),
            stamp: Some(Stamp {
                seq,
                ts: format_ts(now_ms()),
            }),
        });
        log.append(Entry {
            seq,
            ts_ms: now_ms(),
            line,
        });
        while log.committed_now() < seq {
            tokio::time::timeout(Duration::from_secs(10), commits.notified())
                .await
                .expect("the commit happens");
        }
    }

    /// Retention runs beside the room, never in front of it: while a sweep waits for the
    /// database (held here, as a long sweep holds it chunk after chunk), lines are still
    /// committed, so delivered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_are_committed_while_a_sweep_waits_for_the_database() {
        let (dir, mut config) = log_in_temp_dir("sweep-aside");
        config.sweep_every = Duration::from_millis(20);
        config.max_events = 1;
        let log = RoomLog::open(&config).expect("open").into_log();
        let writer = log.db.clone();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held, is_held) = tokio::sync::oneshot::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _db = writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = held.send(());
            let _ = released.recv();
        });
        is_held.await.expect("the holder holds the database");
        let told = start_telling_commits(&log);
        tokio::time::timeout(Duration::from_secs(10), log.sweep_began.notified())
            .await
            .expect("a sweep starts");
        for seq in 1..=3 {
            commit_line(&log, &told, seq).await;
        }
        let _ = release.send(());
        holder.join().expect("holder");
        log.close().await;
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A trickle of lines (one commit each) is folded in within [`FOLD_AT_LEAST_EVERY`],
    /// but not every tick: each time the WAL starts over, the commit that starts it
    /// fsyncs its header on the delivery path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickle_of_lines_is_folded_in_every_few_seconds_not_every_tick() {
        let (dir, config) = log_in_temp_dir("trickle");
        let wal = dir.join("history.sqlite3-wal");
        let log = RoomLog::open(&config).expect("open").into_log();
        let told = start_telling_commits(&log);
        // A line every 50 ms (a slow room) for 2.5 fold periods.
        let started = std::time::Instant::now();
        let mut seq = 0;
        while started.elapsed() < FOLD_AT_LEAST_EVERY * 5 / 2 {
            seq += 1;
            commit_line(&log, &told, seq).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let restarts = wal_restarts(&wal);
        // Folded in (and started over) at least once; at most once per fold period, where
        // folding every 250 ms tick would start it over about 20 times.
        assert!(
            (1..=3).contains(&restarts),
            "the WAL started over {restarts} times under {seq} commits in {:?}",
            started.elapsed()
        );
        log.close().await;
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A log whose every event is its own commit, as in a room that trickles: the WAL
    /// must still be folded into the database and start over, not grow for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_folded_in_and_starts_over_under_endless_commits() {
        let (dir, config) = log_in_temp_dir("endless");
        let wal = dir.join("history.sqlite3-wal");
        let log = RoomLog::open(&config).expect("open").into_log();
        let told = start_telling_commits(&log);
        // Each commit adds at least one page, so without the checkpoint thread's final
        // checkpoint the WAL never starts over under endless commits.
        let restarts = || wal_restarts(&wal);
        // Committing until it has started over twice (checked every 1,000 commits, so the
        // test does not depend on how fast this machine commits), within a bound.
        let most = 16 * WAL_HIGH_FRAMES as u64;
        let mut commits = 0;
        while restarts() < 2 {
            assert!(
                commits < most,
                "the WAL started over {} times in {commits} commits",
                restarts()
            );
            commits += 1_000;
            for seq in commits - 999..=commits {
                commit_line(&log, &told, seq).await;
            }
        }
        // Started over, the file is reused: it never grew far past the high-water mark.
        let frame = 4096 + 24;
        let size = std::fs::metadata(&wal).expect("the WAL").len();
        assert!(
            size < 3 * WAL_HIGH_FRAMES as u64 * frame,
            "the WAL grew to {size} bytes over {commits} commits"
        );
        log.close().await;
        drop(log);
        let opened = RoomLog::open(&config).expect("open again");
        assert_eq!(opened.last_seq, commits);
        drop(opened);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
