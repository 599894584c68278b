//! `resume` (issue 9): C JSON clients reconnect at once and each fetches the events it
//! missed from the room log, paging `history` until `more` is false.
//!
//! 1. A sender and C clients join (JSON). The sender broadcasts a marker; every client reads
//!    up to it and remembers the newest `seq` it saw.
//! 2. The C clients disconnect; the sender watches their C `leave` events arrive.
//! 3. The sender broadcasts G payload lines and reads them all back: they are committed and
//!    delivered, and the sender knows their seqs.
//! 4. Measured: all C reconnect at once. Each reads its `welcome` (with the newest seq then),
//!    sends `{"type":"history","after":LAST,"limit":L}` and asks again after the last seq of
//!    each page until `more` is false. The window runs from the first connect to the last
//!    client's last page. `--reconnect-concurrency N` lets only N connect at a time instead.
//!
//! LAST is either what each client saw (`--from seen`, the realistic client: its gap also
//! holds the C leaves, and the joins of clients that reconnected before it asked), or the
//! newest seq once the C leaves were logged (`--from after-leaves`: the gap is the G events
//! plus those joins).
//!
//! Checks, per client: the seqs of all pages together run from LAST+1 without a hole or a
//! repeat and reach the client's welcome seq; each of the G payloads arrives exactly once.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use crate::conn::{ConnectOptions, Joined, connect_and_join};
use crate::procfs;
use crate::scenario::{Env, nanos_since, sample_peak_rss, server_report};
use crate::stats::{LatencySummary, Report, ResumeStats, Tracker, new_histogram};
use crate::wire::{LineBuffer, MARKER_SENDER, Payload, Target, encode, json_seq, parse_payload};

/// Where each client resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResumeFrom {
    /// The newest seq the client saw before it disconnected.
    Seen,
    /// The newest seq once every client's leave has been logged.
    AfterLeaves,
}

impl ResumeFrom {
    fn name(self) -> &'static str {
        match self {
            ResumeFrom::Seen => "seen",
            ResumeFrom::AfterLeaves => "after-leaves",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResumePlan {
    pub clients: usize,
    /// Events the sender puts into the room while the clients are away.
    pub gap: u64,
    /// `limit` of each history request (the server caps it at 500).
    pub limit: u32,
    pub from: ResumeFrom,
    /// Connects opened at once when they come back (0: all at once).
    pub reconnect_concurrency: usize,
}

/// The gap's payloads come from sender id 0.
const GAP_SENDER: u32 = 0;

/// What the sender's connection saw.
enum Seen {
    Leave { seq: u64 },
    Payload { payload: Payload, seq: u64 },
}

async fn watch_sender(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    mut lines: LineBuffer,
    seen: mpsc::UnboundedSender<Seen>,
) {
    loop {
        while let Some(line) = lines.next_line() {
            let seq = json_seq(line).unwrap_or(0);
            let event = if line.starts_with(br#"{"type":"leave""#) {
                Seen::Leave { seq }
            } else if let Some(payload) = parse_payload(line) {
                Seen::Payload { payload, seq }
            } else {
                continue;
            };
            if seen.send(event).is_err() {
                return;
            }
        }
        match lines.fill(&mut reader).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Phase 1 for one client: join, say so, read until the marker; returns the connection and
/// the newest seq it saw.
async fn join_until_marker(
    addr: std::net::SocketAddr,
    gate: std::sync::Arc<Semaphore>,
    joined_tx: mpsc::UnboundedSender<()>,
) -> anyhow::Result<(Joined, u64)> {
    let permit = gate.acquire_owned().await?;
    let mut joined = connect_and_join(Target::ChatJson, addr, ConnectOptions::default()).await?;
    drop(permit);
    let _ = joined_tx.send(());
    let mut last = json_seq(&joined.join_line).unwrap_or(0);
    loop {
        while let Some(line) = joined.lines.next_line() {
            if let Some(seq) = json_seq(line) {
                last = last.max(seq);
            }
            if parse_payload(line).is_some_and(|p| p.sender == MARKER_SENDER) {
                return Ok((joined, last));
            }
        }
        if joined.lines.fill(&mut joined.reader).await? == 0 {
            bail!("the server closed a client before the marker");
        }
    }
}

fn history_request(after: u64, limit: u32) -> Vec<u8> {
    let mut line = chat_protocol::ClientCommand::History {
        before: None,
        after: Some(after),
        limit: Some(limit),
    }
    .to_json();
    line.push('\n');
    line.into_bytes()
}

#[derive(Deserialize)]
struct HistoryAnswer {
    events: Vec<HistoryEvent>,
    more: bool,
    gap: bool,
}

#[derive(Deserialize)]
struct HistoryEvent {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    #[serde(default)]
    text: Option<String>,
}

/// One reconnected client's counts.
struct Resumed {
    tracker: Tracker,
    /// Connect to the last page, if it got there.
    took: Option<Duration>,
    events: u64,
    pages: u64,
    bytes: u64,
    holes: u64,
    repeats: u64,
    short_of_welcome: bool,
    gap_flags: u64,
    gap_events_live: u64,
}

enum Progress {
    Complete(Instant),
    Failed(String),
}

/// Phase 2 for one client: reconnect, page through the gap, then hold the connection (a
/// close would be a leave, an event the others might still be fetching) until `cancel`.
async fn resume_client(
    addr: std::net::SocketAddr,
    last: u64,
    plan: ResumePlan,
    base: Instant,
    gate: Option<std::sync::Arc<Semaphore>>,
    progress: mpsc::UnboundedSender<Progress>,
    cancel: CancellationToken,
) -> anyhow::Result<Resumed> {
    let permit = match gate {
        Some(gate) => Some(gate.acquire_owned().await?),
        None => None,
    };
    // A gated client's time starts when its turn comes.
    let started = Instant::now();
    let Joined {
        mut reader,
        mut lines,
        join_line,
        mut outgoing,
    } = connect_and_join(Target::ChatJson, addr, ConnectOptions::default()).await?;
    drop(permit);
    let welcome_seq = json_seq(&join_line).context("the welcome has no seq")?;
    let writer: &mut OwnedWriteHalf = &mut outgoing.writer;
    writer.write_all(&history_request(last, plan.limit)).await?;
    let mut r = Resumed {
        tracker: Tracker::new(1, plan.gap),
        took: None,
        events: 0,
        pages: 0,
        bytes: join_line.len() as u64 + 1,
        holes: 0,
        repeats: 0,
        short_of_welcome: false,
        gap_flags: 0,
        gap_events_live: 0,
    };
    let mut prev = last;
    'paging: loop {
        while let Some(line) = lines.next_line() {
            if line.starts_with(br#"{"type":"history""#) {
                let answer: HistoryAnswer =
                    serde_json::from_slice(line).context("parsing a history answer")?;
                r.pages += 1;
                r.gap_flags += u64::from(answer.gap);
                let now = nanos_since(base);
                for event in &answer.events {
                    r.events += 1;
                    if event.seq <= prev {
                        r.repeats += 1;
                        continue;
                    }
                    r.holes += event.seq - prev - 1;
                    prev = event.seq;
                    if event.kind == "chat"
                        && let Some(payload) = event.text.as_deref().and_then(|t| {
                            parse_payload(t.as_bytes()).filter(|p| p.sender == GAP_SENDER)
                        })
                    {
                        r.tracker.record(payload, now);
                    }
                }
                if answer.more {
                    writer.write_all(&history_request(prev, plan.limit)).await?;
                } else {
                    r.took = Some(started.elapsed());
                    r.short_of_welcome = prev < welcome_seq;
                    let _ = progress.send(Progress::Complete(Instant::now()));
                    break 'paging;
                }
            } else if line.starts_with(br#"{"type":"error""#) {
                bail!("{}", String::from_utf8_lossy(line));
            } else if parse_payload(line).is_some_and(|p| p.sender == GAP_SENDER) {
                r.gap_events_live += 1;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(r),
            read = lines.fill(&mut reader) => match read? {
                0 => bail!("the server closed a client while it resumed"),
                n => r.bytes += n as u64,
            },
        }
    }
    // Keep reading what others' joins bring, so our queue in the server stays empty.
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(r),
            read = lines.fill(&mut reader) => match read {
                Ok(0) | Err(_) => return Ok(r),
                Ok(_) => while lines.next_line().is_some() {},
            },
        }
    }
}

/// Waits for sender lines until `done` says stop; errors at the deadline.
async fn watch_until(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    deadline: tokio::time::Instant,
    what: &str,
    mut done: impl FnMut(Seen) -> bool,
) -> anyhow::Result<()> {
    loop {
        match timeout_at(deadline, seen.recv()).await {
            Ok(Some(event)) => {
                if done(event) {
                    return Ok(());
                }
            }
            Ok(None) => bail!("the sender's connection closed while waiting for {what}"),
            Err(_) => bail!("timed out waiting for {what}"),
        }
    }
}

pub async fn resume(env: &Env, plan: &ResumePlan) -> anyhow::Result<Report> {
    let base = Instant::now();
    let mut report = Report {
        scenario: "resume".into(),
        target: env.target.to_string(),
        params: serde_json::json!({
            "clients": plan.clients,
            "gap": plan.gap,
            "limit": plan.limit,
            "from": plan.from.name(),
            "reconnect_concurrency": plan.reconnect_concurrency,
        }),
        ..Report::default()
    };
    if !matches!(env.target, Target::Chat | Target::ChatJson) {
        report.skipped = Some(format!(
            "{} keeps no history: resume runs against chat-server only",
            env.target
        ));
        return Ok(report);
    }
    if plan.clients == 0 || plan.gap == 0 || plan.limit == 0 {
        bail!("resume needs at least one client, one gap event and a limit of at least 1");
    }
    let deadline = tokio::time::Instant::from_std(base + env.timeout);
    let addr = env.addr(0);

    // Phase 1: everyone joins and sees the marker.
    let sender = timeout_at(
        deadline,
        connect_and_join(Target::ChatJson, addr, ConnectOptions::default()),
    )
    .await
    .context("timed out connecting the sender")??;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_sender(sender.reader, sender.lines, seen_tx));
    let mut sender_writer = sender.outgoing.writer;
    let gate = std::sync::Arc::new(Semaphore::new(env.connect_concurrency.max(1)));
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    let mut joining = JoinSet::new();
    for index in 0..plan.clients {
        let (gate, joined_tx, addr) = (gate.clone(), joined_tx.clone(), env.addr(index));
        joining.spawn(async move {
            join_until_marker(addr, gate, joined_tx)
                .await
                .map(|(joined, last)| (index, joined, last))
        });
    }
    drop(joined_tx);
    let mut joined = 0;
    while joined < plan.clients {
        tokio::select! {
            signal = timeout_at(deadline, joined_rx.recv()) => match signal {
                Ok(Some(())) => joined += 1,
                Ok(None) => bail!("{joined} of {} clients joined", plan.clients),
                Err(_) => bail!("timed out joining: {joined} of {} clients joined", plan.clients),
            },
            Some(failed) = joining.join_next() => {
                failed?.context(format!("{joined} of {} clients joined", plan.clients))?;
            }
        }
    }
    let mut marker = Vec::new();
    encode(Target::ChatJson, &mut marker, MARKER_SENDER, 1, 0);
    sender_writer.write_all(&marker).await?;
    let mut connections = Vec::with_capacity(plan.clients);
    let mut last_seen = vec![0u64; plan.clients];
    while let Some(next) = timeout_at(deadline, joining.join_next())
        .await
        .context("timed out waiting for every client to see the marker")?
    {
        let (index, connection, last) = next??;
        last_seen[index] = last;
        connections.push(connection);
    }
    let mut marker_seq = 0;
    watch_until(&mut seen, deadline, "the marker", |event| match event {
        Seen::Payload { payload, seq } if payload.sender == MARKER_SENDER => {
            marker_seq = seq;
            true
        }
        _ => false,
    })
    .await?;

    // Phase 2: they leave; the sender sees every leave, then fills the gap.
    drop(connections);
    let mut leaves = 0;
    let mut after_leaves = marker_seq;
    watch_until(&mut seen, deadline, "the clients' leaves", |event| {
        if let Seen::Leave { seq } = event {
            leaves += 1;
            after_leaves = after_leaves.max(seq);
        }
        leaves == plan.clients
    })
    .await?;
    let mut lines = Vec::with_capacity(64 * plan.gap as usize);
    for i in 0..plan.gap {
        encode(
            Target::ChatJson,
            &mut lines,
            GAP_SENDER,
            i,
            nanos_since(base),
        );
    }
    sender_writer.write_all(&lines).await?;
    let mut gap_seqs = Vec::with_capacity(plan.gap as usize);
    watch_until(
        &mut seen,
        deadline,
        "the gap's events to come back to the sender (does the server run with --rate 0?)",
        |event| {
            if let Seen::Payload { payload, seq } = event
                && payload.sender == GAP_SENDER
            {
                gap_seqs.push(seq);
            }
            gap_seqs.len() as u64 == plan.gap
        },
    )
    .await?;
    let resume_after: Vec<u64> = match plan.from {
        ResumeFrom::Seen => last_seen,
        ResumeFrom::AfterLeaves => vec![after_leaves; plan.clients],
    };

    // Phase 3, measured: all reconnect at once (or through the gate).
    let reconnect_gate = (plan.reconnect_concurrency > 0)
        .then(|| std::sync::Arc::new(Semaphore::new(plan.reconnect_concurrency)));
    let overflows_before = procfs::listen_overflows();
    let start_usage = env.server_usage();
    let bench_start = procfs::usage_of_self();
    let (peak, sampler) = sample_peak_rss(&env.server_pids);
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let mut resuming = JoinSet::new();
    for (index, &last) in resume_after.iter().enumerate() {
        let (plan, progress_tx, cancel) = (plan.clone(), progress_tx.clone(), cancel.clone());
        let addr = env.addr(index);
        let gate = reconnect_gate.clone();
        resuming.spawn(async move {
            let resumed =
                resume_client(addr, last, plan, base, gate, progress_tx.clone(), cancel).await;
            if let Err(e) = &resumed {
                let _ = progress_tx.send(Progress::Failed(format!("{e:#}")));
            }
            resumed
        });
    }
    drop(progress_tx);
    let (mut complete, mut failed) = (0, Vec::new());
    let mut finished = started;
    while complete + failed.len() < plan.clients {
        match timeout_at(deadline, progress.recv()).await {
            Ok(Some(Progress::Complete(at))) => {
                complete += 1;
                finished = finished.max(at);
            }
            Ok(Some(Progress::Failed(e))) => failed.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    let end_usage = env.server_usage();
    let bench_end = procfs::usage_of_self();
    let overflows_after = procfs::listen_overflows();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if complete + failed.len() < plan.clients {
        finished = Instant::now();
        report.notes.push(format!(
            "timed out: {complete} of {} clients had their whole gap",
            plan.clients
        ));
    }
    cancel.cancel();
    let mut stats = ResumeStats {
        clients: plan.clients,
        gap: plan.gap,
        from: plan.from.name().into(),
        resume_after_min: resume_after.iter().copied().min().unwrap_or(0),
        resume_after_max: resume_after.iter().copied().max().unwrap_or(0),
        marker_seq,
        after_leaves_seq: after_leaves,
        gap_first_seq: gap_seqs.iter().copied().min().unwrap_or(0),
        gap_last_seq: gap_seqs.iter().copied().max().unwrap_or(0),
        clients_complete: complete,
        reconnect_concurrency: plan.reconnect_concurrency,
        listen_overflows: match (overflows_before, overflows_after) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        },
        ..ResumeStats::default()
    };
    let mut took = new_histogram();
    let mut unused = new_histogram();
    while let Some(done) = resuming.join_next().await {
        let Ok(Ok(r)) = done else { continue };
        report.absorb(&r.tracker, &mut unused);
        if let Some(t) = r.took {
            let _ = took.record(t.as_nanos().max(1) as u64);
        }
        stats.events_fetched += r.events;
        stats.pages += r.pages;
        stats.bytes_from_server += r.bytes;
        stats.seq_holes += r.holes;
        stats.seq_repeats += r.repeats;
        stats.short_of_welcome += u64::from(r.short_of_welcome);
        stats.gap_flags += r.gap_flags;
        stats.gap_events_live += r.gap_events_live;
    }
    // Clients that failed never reported their trackers: everything they should have got
    // is lost.
    let reported = report.expected_deliveries / plan.gap.max(1);
    report.expected_deliveries = plan.clients as u64 * plan.gap;
    report.lost += (plan.clients as u64 - reported) * plan.gap;
    watcher.abort();
    drop(sender_writer);

    report.elapsed_s = finished.duration_since(started).as_secs_f64();
    if report.elapsed_s > 0.0 {
        report.deliveries_per_s = report.deliveries as f64 / report.elapsed_s;
    }
    report.latency = LatencySummary::of(&took);
    report.bench_cpu_s = procfs::cpu_seconds_between(bench_start, bench_end);
    report.server = server_report(
        env,
        None,
        start_usage,
        end_usage,
        peak.load(std::sync::atomic::Ordering::Relaxed),
        0,
    );
    if let Some(server) = &report.server {
        stats.server_cpu_ms_per_client = Some(server.cpu_s * 1e3 / plan.clients as f64);
    }
    if let Some(first) = failed.first() {
        report.notes.push(format!(
            "{} clients failed while resuming, the first: {first}",
            failed.len()
        ));
    }
    report.notes.push(
        "latency = one client's connect to its last history page; elapsed = first connect to \
         the last client's last page"
            .into(),
    );
    if let Some(overflows) = stats.listen_overflows.filter(|&n| n > 0) {
        report.notes.push(format!(
            "{overflows} connects overflowed an accept queue and waited for a SYN retransmit \
             (1 s or more): see the server's listen backlog (ss -lnt, Send-Q)"
        ));
    }
    report.completed = complete == plan.clients
        && report.lost == 0
        && report.duplicated == 0
        && stats.seq_holes == 0
        && stats.seq_repeats == 0
        && stats.short_of_welcome == 0
        && stats.gap_events_live == 0;
    report.resume = Some(stats);
    Ok(report)
}
