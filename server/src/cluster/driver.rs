//! The driver: this node's one ordered connection to Redis for everything it changes.
//!
//! **Submissions.** The hub queues each member's room events (joins, chat lines, renames,
//! leaves, direct messages) in the order it decided them. The driver sends whatever has
//! queued up as one pipeline of `EVALSHA` calls and waits for the answers before sending
//! the next: Redis runs one connection's commands in order, so one sender's lines keep
//! their order, and a burst costs one round trip, not one per line. Answers go back to the
//! hub ([`Hub::resolve`]): refusals become the member's `error:` line, accepted events
//! arrive through the [tail](super::tail) like everyone else's.
//!
//! **Presence.** A heartbeat key that expires after `--node-timeout`, refreshed every third
//! of it; and the sweeper, which (under a lock, one node at a time) announces the members of
//! every node whose heartbeat expired as `node_lost`. A node sweeps only once it has been
//! connected for a whole node timeout, so after an outage of Redis every live node has
//! registered again before anyone is judged dead.
//!
//! **Outages.** When Redis cannot be reached, users are told once, their lines are refused
//! with an `error:` line at once, and joins and leaves wait. Submissions that were sent but
//! not answered are *in doubt*. On reconnection the driver raises this node's fence (so
//! nothing sent on the old connection can still run), learns which submission ran last,
//! waits until the tail has delivered everything up to the stream's end, and then settles
//! each one in doubt: delivered if its entry came through the stream, otherwise refused
//! (a user's line: `error:`, and never delivered later) or sent again (a join or leave).
//! If Redis lost its data, the counter is restored (no seq is ever reused) and this node's
//! members are registered again; history across the loss says `gap`.

use super::scripts::Scripts;
use super::tail::raw_entries;
use super::tail::reason_name;
use super::{Link, Op, Registered, Submission, connect, int, items, text};
use crate::hub::{Hub, Resolved};
use chat_protocol::{ErrorCode, NoticeCode, ServerEvent};
use redis::aio::MultiplexedConnection;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Submissions sent in one pipeline at most.
const MAX_BATCH: usize = 512;
/// A run of chat lines becomes one stream entry: runs are cut before their text passes
/// this, so that an entry, and a reply of the tail's 64 entries, stays bounded whatever
/// `--max-line-bytes` is (a longer line is a run of its own).
const RUN_BYTES: usize = 1 << 20;
/// Entries of this node's DM stream read to settle direct messages in doubt: the whole
/// stream (the DM script trims it to about 10,000).
const DM_SCAN: usize = 20_000;
/// How long the driver waits for an answer before it calls Redis unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

pub const UNAVAILABLE_NOTICE: &str =
    "the room is unavailable (its shared log cannot be reached); lines you send now are refused";
pub const BACK_NOTICE: &str = "the room is back";

/// What the driver holds.
pub struct Driver {
    link: Arc<Link>,
    hub: Arc<Hub>,
    client: redis::Client,
    scripts: Scripts,
    ops: mpsc::UnboundedReceiver<Submission>,
    /// `None` while Redis is unreachable.
    con: Option<MultiplexedConnection>,
    /// This node's fence on the current connection: scripts carrying another change nothing.
    fence: String,
    /// Redis's epoch as this node knows it; a different one means Redis lost its data.
    epoch: String,
    /// Sweeping starts a node timeout after this (see the module's docs).
    connected_at: Instant,
    /// Joins and leaves waiting for Redis to come back, in order.
    deferred: VecDeque<Submission>,
    /// When the log was last trimmed by age (or this node started).
    trimmed_at: Instant,
}

/// What [`start`] learned from Redis, for the hub.
pub struct Snapshot {
    pub seq: u64,
    pub members: Vec<Registered>,
}

/// Connects, registers this node and takes a snapshot of the room. Fails (saying why)
/// when Redis cannot be reached: a node does not start without its room.
pub async fn start(
    link: Arc<Link>,
    hub: Arc<Hub>,
    ops: mpsc::UnboundedReceiver<Submission>,
) -> anyhow::Result<(Driver, Snapshot, redis::Client)> {
    use anyhow::Context;
    let url = link.config.shown_url();
    let client = redis::Client::open(link.config.url.as_str())
        .with_context(|| format!("--cluster {url}: not a Redis URL"))?;
    let scripts = Scripts::new();
    let mut con = connect(&client, RESPONSE_TIMEOUT)
        .await
        .with_context(|| format!("cannot reach Redis at {url}"))?;
    load_scripts(&scripts, &mut con)
        .await
        .with_context(|| format!("cannot load scripts into Redis at {url}"))?;
    let mut hello = evalsha(&scripts.hello, &link);
    hello
        .arg(&*link.node)
        .arg(link.config.node_timeout.as_millis() as u64)
        .arg(epoch_candidate());
    let reply: redis::Value = hello
        .query_async(&mut con)
        .await
        .with_context(|| format!("cannot register with Redis at {url}"))?;
    let parts = items(&reply);
    let seq = int(parts.first().copied()).unwrap_or(0).max(0) as u64;
    let epoch = text(parts.get(1).copied()).unwrap_or_default();
    let fence = text(parts.get(2).copied()).unwrap_or_default();
    let mut members = Vec::new();
    for triple in parts.get(3..).unwrap_or_default().chunks(3) {
        let (Some(node), Some(conn), Some(info)) = (
            text(triple.first().copied()),
            text(triple.get(1).copied()),
            text(triple.get(2).copied()),
        ) else {
            continue;
        };
        let Ok(mut member) = serde_json::from_str::<Registered>(&info) else {
            tracing::warn!(%node, %conn, "unreadable member registration; skipped");
            continue;
        };
        member.node = node.as_str().into();
        member.conn = conn.parse().unwrap_or(u64::MAX);
        members.push(member);
    }
    members.sort_by_key(|m| m.join_seq);
    let query = connect(&client, super::history::TIMEOUT).await?;
    *link.query.lock().unwrap_or_else(|e| e.into_inner()) = Some(query);
    tracing::info!(node = %link.node, seq, users = members.len(), "joined the cluster at {url}");
    let driver = Driver {
        link,
        hub,
        client: client.clone(),
        scripts,
        ops,
        con: Some(con),
        fence,
        epoch,
        connected_at: Instant::now(),
        deferred: VecDeque::new(),
        trimmed_at: Instant::now(),
    };
    Ok((driver, Snapshot { seq, members }, client))
}

async fn load_scripts(
    scripts: &Scripts,
    con: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    for script in scripts.all() {
        script.load_async(con).await?;
    }
    Ok(())
}

/// A fresh random-enough epoch: the time and an allocation's address.
fn epoch_candidate() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt = Box::new(0u8);
    format!("{nanos:x}-{:x}", &*salt as *const u8 as usize)
}

/// `EVALSHA sha 0 prefix maxlen`: the start of every script call.
fn evalsha(script: &redis::Script, link: &Link) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(0)
        .arg(&link.config.prefix)
        .arg(link.max_events);
    cmd
}

/// How a submission came out.
enum Outcome {
    Resolved(Resolved),
    /// The script ran on a stale fence: nothing happened.
    Fenced,
}

impl Driver {
    /// Runs until `stop`; then sends what is still queued (the leaves of shutdown) and
    /// unregisters this node, within `grace`.
    pub async fn run(mut self, stop: CancellationToken, grace: Duration) {
        let timeout = self.link.config.node_timeout;
        let mut heartbeat = tokio::time::interval((timeout / 3).max(Duration::from_millis(50)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(
            (timeout / 3).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        );
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                n = self.ops.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let sent = std::mem::take(&mut batch);
                    if !self.send(sent).await {
                        self.recover(&stop).await;
                    }
                }
                _ = heartbeat.tick() => {
                    if !self.heartbeat().await {
                        self.recover(&stop).await;
                    }
                }
                _ = sweep.tick() => self.sweep().await,
                _ = self.link.trouble.notified() => {
                    if !self.ping().await {
                        self.recover(&stop).await;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(grace, self.finish()).await;
    }

    /// Sends what is queued and leaves the cluster cleanly.
    async fn finish(&mut self) {
        let mut rest: Vec<Submission> = self.deferred.drain(..).collect();
        while let Ok(submission) = self.ops.try_recv() {
            rest.push(submission);
        }
        if self.con.is_none() {
            return;
        }
        for chunk in rest.chunks(MAX_BATCH) {
            if !self.send(chunk.to_vec()).await {
                return;
            }
        }
        let mut goodbye = evalsha(&self.scripts.goodbye, &self.link);
        goodbye.arg(&*self.link.node).arg(&self.fence);
        if let Some(con) = &mut self.con
            && let Err(e) = goodbye.query_async::<redis::Value>(con).await
        {
            tracing::warn!(error = %e, "could not unregister from the cluster");
        }
    }

    /// Sends `batch` as one pipeline. False if Redis could not be reached or this node
    /// was fenced: the unanswered part of the batch is then in doubt (kept in `deferred`
    /// order by [`Driver::recover`]).
    async fn send(&mut self, batch: Vec<Submission>) -> bool {
        if batch.is_empty() {
            return true;
        }
        if self.con.is_none() {
            self.refuse(batch);
            return true;
        }
        // Each run of consecutive chat lines is one script call (see `scripts::CHAT`), the
        // rest one call each; in the pipeline they keep the batch's order.
        let calls = calls(&batch);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for call in &calls {
            pipe.add_command(self.command(&batch[call.clone()]));
        }
        let Some(con) = &mut self.con else {
            return false;
        };
        let replies: Vec<redis::Value> = match pipe.query_async(con).await {
            Ok(replies) => replies,
            Err(e) => {
                tracing::warn!(error = %e, "lost redis while submitting");
                self.in_doubt(batch);
                return false;
            }
        };
        let mut resolved = Vec::with_capacity(batch.len());
        let mut fenced = None;
        'calls: for (call, reply) in calls.iter().zip(&replies) {
            for (i, outcome) in call.clone().zip(outcomes(&batch[call.clone()], reply)) {
                match outcome {
                    Outcome::Resolved(r) => resolved.push(r),
                    Outcome::Fenced => {
                        fenced = Some(i);
                        break 'calls;
                    }
                }
            }
        }
        self.hub.resolve(resolved);
        if let Some(i) = fenced {
            tracing::warn!("this node was fenced (swept, or reconnected elsewhere)");
            self.in_doubt(batch.into_iter().skip(i).collect());
            return false;
        }
        true
    }

    /// Keeps `batch` as in doubt, ahead of whatever was deferred.
    fn in_doubt(&mut self, batch: Vec<Submission>) {
        for submission in batch.into_iter().rev() {
            self.deferred.push_front(submission);
        }
        self.con = None;
    }

    /// While Redis is down: users' lines are refused now; joins and leaves wait.
    fn refuse(&mut self, batch: Vec<Submission>) {
        let mut refused = Vec::new();
        for submission in batch {
            if submission.op.is_membership() {
                self.deferred.push_back(submission);
            } else {
                refused.push(unavailable(&submission));
            }
        }
        self.hub.resolve(refused);
    }

    /// The script call for `subs`: one submission, or a run of chat lines.
    fn command(&self, subs: &[Submission]) -> redis::Cmd {
        let (link, scripts) = (&self.link, &self.scripts);
        let Some(first) = subs.first() else {
            return redis::cmd("PING");
        };
        let script = match &first.op {
            Op::Join { .. } => &scripts.join,
            Op::Chat { .. } => &scripts.chat,
            Op::Rename { .. } => &scripts.rename,
            Op::Leave { .. } => &scripts.leave,
            Op::Dm { .. } => &scripts.dm,
        };
        let mut cmd = evalsha(script, link);
        cmd.arg(&*link.node).arg(&self.fence);
        if let Op::Chat { .. } = first.op {
            let run = ChatRun::new(subs);
            cmd.arg(subs.last().map_or(first.sub, |s| s.sub))
                .arg(run.senders)
                .arg(run.lines)
                .arg(run.records);
            return cmd;
        }
        cmd.arg(first.sub);
        match &first.op {
            Op::Join { conn, addr } => cmd.arg(conn).arg(&**addr),
            Op::Chat { .. } => &mut cmd,
            Op::Rename { conn, name, keys } => cmd.arg(conn).arg(name).arg(keys),
            Op::Leave { conn, reason } => cmd.arg(conn).arg(reason_name(*reason)),
            Op::Dm {
                conn,
                to_node,
                to_conn,
                text,
                ..
            } => cmd.arg(conn).arg(&**to_node).arg(to_conn).arg(text),
        };
        cmd
    }

    async fn heartbeat(&mut self) -> bool {
        let Some(con) = &mut self.con else {
            return false;
        };
        let mut beat = evalsha(&self.scripts.heartbeat, &self.link);
        beat.arg(&*self.link.node)
            .arg(&self.fence)
            .arg(self.link.config.node_timeout.as_millis() as u64);
        match beat.query_async::<i64>(con).await {
            Ok(1) => true,
            Ok(_) => {
                tracing::warn!("heartbeat fenced: this node was swept");
                self.con = None;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                self.con = None;
                false
            }
        }
    }

    async fn ping(&mut self) -> bool {
        let Some(con) = &mut self.con else {
            return false;
        };
        match redis::cmd("PING").query_async::<String>(con).await {
            Ok(_) => true,
            Err(_) => {
                self.con = None;
                false
            }
        }
    }

    async fn sweep(&mut self) {
        let timeout = self.link.config.node_timeout;
        if self.connected_at.elapsed() < timeout {
            return;
        }
        let Some(con) = &mut self.con else {
            return;
        };
        let mut sweep = evalsha(&self.scripts.sweep, &self.link);
        sweep.arg(&*self.link.node).arg(timeout.as_millis() as u64);
        match sweep.query_async::<i64>(con).await {
            Ok(n) if n > 0 => tracing::info!(users = n, "swept the users of lost nodes"),
            // Another node holds the sweeper's lock: it trims too.
            Ok(-1) => return,
            Ok(_) => {}
            // The next heartbeat or submission finds out whether Redis is gone.
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed");
                return;
            }
        }
        self.trim().await;
    }

    /// Retention by age: the sweeper trims the log of events older than
    /// `--history-retention`, at most every `trim_every` (`--history-max-events` is
    /// applied by every append).
    async fn trim(&mut self) {
        let retention = self.link.retention;
        if retention.is_zero() || self.trimmed_at.elapsed() < self.link.trim_every {
            return;
        }
        let Some(con) = &mut self.con else {
            return;
        };
        self.trimmed_at = Instant::now();
        let mut trim = evalsha(&self.scripts.trim, &self.link);
        trim.arg(&*self.link.node)
            .arg(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        match trim.query_async::<i64>(con).await {
            Ok(n) if n > 0 => tracing::debug!(events = n, "trimmed the room log by age"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "trimming the room log by age failed"),
        }
    }

    /// Redis is unreachable (or this node was fenced): tells users, refuses their lines,
    /// and reconnects; then settles what is in doubt and sends what waited.
    async fn recover(&mut self, stop: &CancellationToken) {
        self.con = None;
        self.link.set_available(false);
        self.hub
            .notice_all(NoticeCode::RoomUnavailable, UNAVAILABLE_NOTICE);
        let mut delay = Duration::from_millis(100);
        let mut next = Instant::now();
        let mut batch = Vec::new();
        loop {
            // Lines that arrive meanwhile are refused at once (joins and leaves wait).
            while let Ok(submission) = self.ops.try_recv() {
                batch.push(submission);
            }
            let waiting = std::mem::take(&mut batch);
            self.refuse(waiting);
            if stop.is_cancelled() {
                return;
            }
            if Instant::now() >= next {
                match self.reconnect().await {
                    Ok(()) => break,
                    Err(e) => tracing::debug!(error = %e, "redis still unreachable"),
                }
                next = Instant::now() + delay;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                n = self.ops.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                }
            }
        }
        self.link.set_available(true);
        self.hub.notice_all(NoticeCode::RoomBack, BACK_NOTICE);
        tracing::info!("redis is back");
        let waiting: Vec<Submission> = self.deferred.drain(..).collect();
        for chunk in waiting.chunks(MAX_BATCH) {
            if !self.send(chunk.to_vec()).await {
                // Down again: the next turn of the loop recovers once more.
                self.link.trouble.notify_one();
                return;
            }
        }
    }

    /// One attempt: connect, raise the fence, re-register if Redis lost data, catch up,
    /// settle what is in doubt.
    async fn reconnect(&mut self) -> anyhow::Result<()> {
        let mut con = connect(&self.client, RESPONSE_TIMEOUT).await?;
        load_scripts(&self.scripts, &mut con).await?;
        let mine = self.hub.own_members();
        let mut resync = evalsha(&self.scripts.resync, &self.link);
        resync
            .arg(&*self.link.node)
            .arg(self.link.config.node_timeout.as_millis() as u64)
            .arg(&self.epoch)
            .arg(self.hub.applied())
            .arg(epoch_candidate());
        for m in &mine {
            resync
                .arg(m.conn)
                .arg(m.join_seq)
                .arg(&m.addr)
                .arg(&m.name)
                .arg(m.keys.join("\n"));
        }
        let reply: redis::Value = resync.query_async(&mut con).await?;
        let parts = items(&reply);
        let seq = int(parts.first().copied()).unwrap_or(0).max(0) as u64;
        let epoch = text(parts.get(1).copied()).unwrap_or_default();
        let fence = text(parts.get(2).copied()).unwrap_or_default();
        let lost = int(parts.get(3).copied()) == Some(1);
        let last = int(parts.get(4).copied()).unwrap_or(0).max(0) as u64;
        let renamed: Vec<u64> = parts
            .get(5..)
            .unwrap_or_default()
            .iter()
            .filter_map(|conn| int(Some(conn)))
            .filter_map(|conn| u64::try_from(conn).ok())
            .collect();
        if lost {
            tracing::warn!(
                seq,
                "redis lost data: the room's members were registered again"
            );
            self.link.recent.forget();
        }
        // Wait until the tail has delivered everything up to the stream's end: then an
        // entry that is not seen was never written.
        let mut applied = self.link.applied.subscribe();
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|a| *a >= seq))
            .await
            .map_err(|_| anyhow::anyhow!("the tail did not catch up"))?
            .map_err(|_| anyhow::anyhow!("the hub is gone"))?;
        // Direct messages leave no entry in the log: which of those in doubt ran (and were
        // sent, so their recipients get them) is read from this node's own DM stream.
        let dms_sent = if lost {
            HashMap::new()
        } else {
            self.dms_sent(&mut con, last).await?
        };
        let query = connect(&self.client, super::history::TIMEOUT).await?;
        *self.link.query.lock().unwrap_or_else(|e| e.into_inner()) = Some(query);
        self.epoch = epoch;
        self.fence = fence;
        self.con = Some(con);
        self.connected_at = Instant::now();
        // Settle what is in doubt: the head of `deferred` up to the first that was never
        // sent is what was sent without an answer; with the fence raised, none can run now.
        let mut settled = Vec::new();
        let mut again = VecDeque::new();
        for submission in self.deferred.drain(..) {
            let seen = self.hub.seen(submission.sub);
            match (seen, submission.op.is_membership()) {
                (Some(seq), _) => settled.push(Resolved {
                    sub: submission.sub,
                    after: seq,
                    line: None,
                }),
                // Ran without an entry: a join of someone registered, a leave of someone
                // gone; nothing to do.
                (None, true) if submission.sub <= last && !lost => {}
                (None, true) => again.push_back(submission),
                // A direct message that was sent: its copies are on their way to both ends.
                // Any other user's line that did not reach the log: refused, never
                // delivered later.
                (None, false) => settled.push(match dms_sent.get(&submission.sub) {
                    Some(&after) => Resolved {
                        sub: submission.sub,
                        after,
                        line: None,
                    },
                    None => unavailable(&submission),
                }),
            }
        }
        self.deferred = again;
        self.hub.resolve(settled);
        for m in mine.iter().filter(|m| renamed.contains(&m.conn)) {
            tracing::info!(conn = m.conn, name = %m.name, "a name taken meanwhile: its former holder is under its address again");
            self.hub.notice_member(
                m.conn,
                NoticeCode::NameLost,
                format!(
                    "someone else took the name {} while the room had lost its data; you are {} again",
                    m.name, m.addr
                ),
            );
        }
        Ok(())
    }
}

impl Driver {
    /// The direct messages in doubt that ran up to `last` (the newest submission Redis
    /// executed) and were sent: submission → the seq they come after. Read once the fence
    /// is raised, so none can still run; only this node's stream is read, where each sent
    /// message left its sender's copy (at most about 10,000 entries, and only when some
    /// direct message is in doubt).
    async fn dms_sent(
        &self,
        con: &mut MultiplexedConnection,
        last: u64,
    ) -> redis::RedisResult<HashMap<u64, u64>> {
        let doubt: HashSet<u64> = self
            .deferred
            .iter()
            .filter(|s| matches!(s.op, Op::Dm { .. }) && s.sub <= last)
            .map(|s| s.sub)
            .collect();
        let mut sent = HashMap::new();
        if doubt.is_empty() {
            return Ok(sent);
        }
        let stream = self.link.key(&format!("dm:{}", self.link.node));
        let value: redis::Value = redis::cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(DM_SCAN)
            .query_async(con)
            .await?;
        for (_, fields) in raw_entries(&value) {
            let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            if get("fn").map(String::as_str) != Some(&*self.link.node) {
                continue;
            }
            let sub = get("s").and_then(|s| s.parse::<u64>().ok());
            if let Some(sub) = sub.filter(|s| doubt.contains(s)) {
                let after = get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                sent.insert(sub, after);
            }
        }
        Ok(sent)
    }
}

/// Splits a batch into script calls, as index ranges in order: each run of consecutive
/// chat lines is one call, any other submission one call of its own.
fn calls(batch: &[Submission]) -> Vec<std::ops::Range<usize>> {
    let mut calls: Vec<std::ops::Range<usize>> = Vec::new();
    // The text bytes of the current run of chat lines.
    let mut bytes = 0;
    for (i, submission) in batch.iter().enumerate() {
        let chat = match &submission.op {
            Op::Chat { text, .. } => Some(text.len()),
            _ => None,
        };
        match (calls.last_mut(), chat) {
            (Some(run), Some(len))
                if matches!(batch[run.start].op, Op::Chat { .. }) && bytes + len <= RUN_BYTES =>
            {
                run.end = i + 1;
                bytes += len;
            }
            _ => {
                calls.push(i..i + 1);
                bytes = chat.unwrap_or(0);
            }
        }
    }
    calls
}

/// A run of chat lines as `scripts::CHAT` takes it: the senders' connections
/// (`CONN,CONN,...`), how many lines, and the lines as the run's stream entry stores them,
/// `I\nSUB\nLEN\nTEXT` each (`I`: the sender's place in the list, from 1).
struct ChatRun {
    senders: String,
    lines: usize,
    records: Vec<u8>,
}

impl ChatRun {
    fn new(subs: &[Submission]) -> ChatRun {
        let mut conns: Vec<u64> = Vec::new();
        let mut records = Vec::new();
        let mut lines = 0;
        for submission in subs {
            let Op::Chat { conn, text } = &submission.op else {
                continue;
            };
            let place = match conns.iter().position(|c| c == conn) {
                Some(i) => i + 1,
                None => {
                    conns.push(*conn);
                    conns.len()
                }
            };
            lines += 1;
            records.extend_from_slice(
                format!("{place}\n{}\n{}\n", submission.sub, text.len()).as_bytes(),
            );
            records.extend_from_slice(text.as_bytes());
        }
        let senders = conns
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        ChatRun {
            senders,
            lines,
            records,
        }
    }
}

/// How each submission of one script call came out, in order: a run of chat lines answers
/// with the seq before it and a flag per line, or `-1` alone if the node was fenced (then
/// none ran).
fn outcomes(subs: &[Submission], reply: &redis::Value) -> Vec<Outcome> {
    let [first, ..] = subs else {
        return Vec::new();
    };
    if !matches!(first.op, Op::Chat { .. }) {
        return vec![outcome(first, reply)];
    }
    if let redis::Value::ServerError(e) = reply {
        tracing::error!(error = ?e, lines = subs.len(), "the chat script failed");
        return subs
            .iter()
            .map(|s| Outcome::Resolved(unavailable(s)))
            .collect();
    }
    let parts = items(reply);
    let before = int(parts.first().copied());
    if before == Some(-1) {
        return subs.iter().map(|_| Outcome::Fenced).collect();
    }
    let flags = text(parts.get(1).copied()).unwrap_or_default();
    let (Some(before), true) = (before, flags.len() == subs.len()) else {
        tracing::error!(reply = ?reply, lines = subs.len(), "the chat script's reply is not one flag per line");
        return subs
            .iter()
            .map(|s| Outcome::Resolved(unavailable(s)))
            .collect();
    };
    let mut seq = before.max(0) as u64;
    subs.iter()
        .zip(flags.bytes())
        .map(|(submission, flag)| {
            let logged = flag == b'1';
            if logged {
                seq += 1;
            }
            Outcome::Resolved(Resolved {
                sub: submission.sub,
                after: seq,
                line: (!logged).then(not_in_room),
            })
        })
        .collect()
}

/// How one submission (not a chat line) came out.
fn outcome(submission: &Submission, reply: &redis::Value) -> Outcome {
    let sub = submission.sub;
    if let redis::Value::ServerError(e) = reply {
        tracing::error!(error = ?e, sub, "a room script failed");
        return Outcome::Resolved(unavailable(submission));
    }
    let parts = items(reply);
    let code = int(parts.first().copied());
    let after = int(parts.get(1).copied()).unwrap_or(0).max(0) as u64;
    let done = |line| Outcome::Resolved(Resolved { sub, after, line });
    match (&submission.op, code) {
        (_, Some(-1)) => Outcome::Fenced,
        (Op::Join { .. } | Op::Leave { .. }, _) => done(None),
        (_, Some(0)) => done(Some(not_in_room())),
        (Op::Rename { name, .. }, Some(2)) => done(Some(ServerEvent::error(
            ErrorCode::NameTaken,
            format!("rename refused: the name {name} is already taken"),
        ))),
        (Op::Dm { to_name, .. }, Some(3)) => done(Some(ServerEvent::error(
            ErrorCode::NoSuchUser,
            format!("no user named {to_name} is online"),
        ))),
        _ => done(None),
    }
}

/// Redis does not list the member (its node was swept while cut off): its line is refused.
fn not_in_room() -> ServerEvent {
    ServerEvent::error(
        ErrorCode::Unavailable,
        "you are no longer in the room (this server lost contact with it); reconnect",
    )
}

/// The refusal of a user's line while the room cannot be reached.
fn unavailable(submission: &Submission) -> Resolved {
    let message = match submission.op {
        Op::Rename { .. } => {
            "rename refused: the room is unavailable (its shared log cannot be reached); try again later"
        }
        Op::Dm { .. } => {
            "the room is unavailable (its shared log cannot be reached); your message was not sent"
        }
        _ => "the room is unavailable (its shared log cannot be reached); your line was not sent",
    };
    Resolved {
        sub: submission.sub,
        after: 0,
        line: Some(ServerEvent::error(ErrorCode::Unavailable, message)),
    }
}

/// One of this node's members as it registers again after Redis lost its data.
pub struct OwnMember {
    pub conn: u64,
    pub join_seq: u64,
    pub addr: String,
    pub name: String,
    pub keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn chat(sub: u64, conn: u64) -> Submission {
        Submission {
            sub,
            op: Op::Chat {
                conn,
                text: format!("line {sub}"),
            },
        }
    }

    fn leave(sub: u64) -> Submission {
        Submission {
            sub,
            op: Op::Leave {
                conn: 1,
                reason: chat_protocol::LeaveReason::Quit,
            },
        }
    }

    #[test]
    fn consecutive_chat_lines_are_one_call_and_the_rest_one_each() {
        let batch = [
            chat(1, 1),
            chat(2, 2),
            leave(3),
            leave(4),
            chat(5, 1),
            chat(6, 1),
        ];
        assert_eq!(calls(&batch), vec![0..2, 2..3, 3..4, 4..6]);
        assert_eq!(calls(&[]), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn a_refused_line_in_a_run_is_refused_alone() {
        let run = [chat(1, 1), chat(2, 2), chat(3, 1)];
        // The second sender is not in the room: its line is refused with the seq before it.
        let reply = Value::Array(vec![Value::Int(9), Value::BulkString(b"101".to_vec())]);
        let got: Vec<(u64, u64, bool)> = outcomes(&run, &reply)
            .into_iter()
            .map(|o| match o {
                Outcome::Resolved(r) => (r.sub, r.after, r.line.is_some()),
                Outcome::Fenced => panic!("not fenced"),
            })
            .collect();
        assert_eq!(got, vec![(1, 10, false), (2, 10, true), (3, 11, false)]);
    }

    #[test]
    fn a_run_goes_as_its_senders_and_its_records() {
        let mut run = vec![chat(7, 3), chat(8, 5), chat(9, 3)];
        if let Op::Chat { text, .. } = &mut run[1].op {
            *text = "two\nlines".into();
        }
        let made = ChatRun::new(&run);
        assert_eq!(made.senders, "3,5");
        assert_eq!(made.lines, 3);
        assert_eq!(
            String::from_utf8(made.records).expect("utf-8"),
            "1\n7\n6\nline 72\n8\n9\ntwo\nlines1\n9\n6\nline 9"
        );
    }

    #[test]
    fn a_reply_without_a_flag_per_line_refuses_the_run() {
        let run = [chat(1, 1), chat(2, 1)];
        let short = Value::Array(vec![Value::Int(9), Value::BulkString(b"1".to_vec())]);
        for outcome in outcomes(&run, &short) {
            assert!(matches!(
                outcome,
                Outcome::Resolved(Resolved { line: Some(_), .. })
            ));
        }
    }

    #[test]
    fn a_fenced_run_is_fenced_whole_and_a_failed_one_refused_whole() {
        let run = [chat(1, 1), chat(2, 1)];
        let fenced = outcomes(&run, &Value::Array(vec![Value::Int(-1)]));
        assert!(fenced.iter().all(|o| matches!(o, Outcome::Fenced)));
        assert_eq!(fenced.len(), 2);
        let error = redis::parse_redis_value(b"-ERR the script failed\r\n").expect("parsed");
        assert!(matches!(error, Value::ServerError(_)));
        let failed = outcomes(&run, &error);
        assert!(
            failed
                .iter()
                .all(|o| matches!(o, Outcome::Resolved(Resolved { line: Some(_), .. })))
        );
    }
}
