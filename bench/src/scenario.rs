//! The scenarios. Each one connects its clients, waits until joins have settled, measures
//! one window, and returns a [`Report`].
//!
//! Settling: joining C clients to a chat server costs O(C²) `login` lines. Before measuring,
//! client 0 broadcasts a marker and every client must read it, so all earlier join traffic
//! has been delivered and read; the window starts after that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use crate::conn::{ConnectOptions, Outgoing, connect_and_join};
use crate::procfs::{self, Usage};
use crate::stats::{LatencySummary, PidCpu, Report, ServerUsage, Tracker, new_histogram};
use crate::wire::{LineBuffer, MARKER_SENDER, MAX_PLAIN_LINE, Target, encode, parse_payload};

/// What every scenario needs to know about the target.
#[derive(Debug, Clone)]
pub struct Env {
    /// Server addresses (at least one): client `i` connects to `addrs[i % addrs.len()]`, so
    /// clients are spread round-robin over the nodes of a cluster.
    pub addrs: Vec<SocketAddr>,
    pub target: Target,
    /// Server processes (none, one, or a cluster's nodes and its Redis): CPU time and RSS
    /// are summed over all of them.
    pub server_pids: Vec<u32>,
    /// Bound on the whole run: connecting, settling and measuring.
    pub timeout: Duration,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
}

impl Env {
    /// The address client `index` connects to.
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.addrs[index % self.addrs.len()]
    }

    /// The servers' usage summed over every pid; `None` if any of them cannot be read.
    pub(crate) fn server_usage(&self) -> Option<Usage> {
        procfs::usage_sum(&self.server_pids)
    }

    /// Each server's CPU time (utime + stime), in the order of `server_pids`.
    pub(crate) fn server_cpu_by_pid(&self) -> Vec<Option<Duration>> {
        self.server_pids
            .iter()
            .map(|&pid| procfs::usage(pid).map(|u| u.cpu))
            .collect()
    }
}

/// How senders pace themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// At most this many messages sent but not yet received back by the sender itself.
    Window(u32),
    /// A fixed rate in messages per second, one line per write.
    Rate(f64),
}

/// The shape of a broadcast run: fanout, latency and slow-consumer.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// Clients connected, senders and the slow client included.
    pub clients: usize,
    /// Clients 0..senders send.
    pub senders: u32,
    pub messages: u64,
    pub pacing: Pacing,
    /// The last client stops reading once joins have settled, with this SO_RCVBUF.
    pub slow_consumer: Option<u32>,
}

enum Event {
    Marker {
        round: u64,
    },
    Complete {
        at_ns: u64,
    },
    /// Receiver `receiver` read another client's login line (serial joins only).
    Login {
        receiver: usize,
    },
    Closed,
}

struct ReceiverPlan {
    senders: u32,
    messages: u64,
    own_sender: Option<u32>,
    window: Option<Arc<Semaphore>>,
    slow: bool,
    index: usize,
    /// Serial joins: report other clients' login lines (ours starts with this prefix).
    count_logins: Option<Vec<u8>>,
}

struct Received {
    tracker: Tracker,
    /// The slow client's socket, still unread.
    slow_reader: Option<OwnedReadHalf>,
}

pub(crate) fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

async fn receive(
    mut reader: OwnedReadHalf,
    mut lines: LineBuffer,
    plan: ReceiverPlan,
    base: Instant,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) -> Received {
    let mut tracker = Tracker::new(plan.senders, plan.messages);
    let mut marker_round = 0;
    let mut reported_complete = false;
    // One timestamp per read: every line in it arrived by then.
    let mut now = nanos_since(base);
    loop {
        while let Some(line) = lines.next_line() {
            if let Some(own) = &plan.count_logins
                && line.ends_with(b": login")
                && !line.starts_with(own)
            {
                let _ = events.send(Event::Login {
                    receiver: plan.index,
                });
            }
            let Some(payload) = parse_payload(line) else {
                continue;
            };
            if payload.sender == MARKER_SENDER {
                if payload.seq > marker_round {
                    marker_round = payload.seq;
                    let _ = events.send(Event::Marker {
                        round: marker_round,
                    });
                }
                continue;
            }
            tracker.record(payload, now);
            if Some(payload.sender) == plan.own_sender
                && let Some(window) = &plan.window
            {
                window.add_permits(1);
            }
        }
        if !reported_complete && tracker.expected() > 0 && tracker.complete() {
            reported_complete = true;
            let _ = events.send(Event::Complete {
                at_ns: tracker.last_delivery_ns,
            });
        }
        if plan.slow && marker_round > 0 {
            cancel.cancelled().await;
            return Received {
                tracker,
                slow_reader: Some(reader),
            };
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            read = lines.fill(&mut reader) => match read {
                Ok(0) | Err(_) => {
                    let _ = events.send(Event::Closed);
                    break;
                }
                Ok(_) => now = nanos_since(base),
            },
        }
    }
    Received {
        tracker,
        slow_reader: None,
    }
}

/// Connected clients with a receiving task each.
struct Room {
    target: Target,
    deadline: tokio::time::Instant,
    writers: Vec<Option<Outgoing>>,
    receivers: Vec<JoinHandle<Received>>,
    events: mpsc::UnboundedReceiver<Event>,
    cancel: CancellationToken,
    closed: usize,
}

struct RoomPlan {
    clients: usize,
    senders: u32,
    messages: u64,
    windows: Vec<Arc<Semaphore>>,
    slow_consumer: Option<u32>,
}

impl RoomPlan {
    /// A room of clients that only join and listen.
    fn listeners(clients: usize) -> RoomPlan {
        RoomPlan {
            clients,
            senders: 0,
            messages: 0,
            windows: Vec::new(),
            slow_consumer: None,
        }
    }
}

impl Room {
    async fn open(env: &Env, plan: RoomPlan, base: Instant) -> anyhow::Result<Room> {
        let deadline = tokio::time::Instant::from_std(base + env.timeout);
        let (events_tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let gate = Arc::new(Semaphore::new(env.connect_concurrency.max(1)));
        // The Go original races on its client map when joins overlap, and crashes ("concurrent
        // map writes", "concurrent map iteration and map write"): join one at a time, and
        // wait until every earlier client has read the newcomer's login line, so the
        // broadcast loop is done before the next join touches the map.
        let serial = env.target == Target::Go;
        let mut logins = vec![0usize; if serial { plan.clients } else { 0 }];
        let mut connecting = JoinSet::new();
        let windows = Arc::new(plan.windows);
        let mut writers: Vec<Option<Outgoing>> = (0..plan.clients).map(|_| None).collect();
        let mut receivers: Vec<Option<JoinHandle<Received>>> =
            (0..plan.clients).map(|_| None).collect();
        let mut first_error = None;
        let mut events = events;
        for index in 0..plan.clients {
            let slow = plan.slow_consumer.is_some() && index + 1 == plan.clients;
            let options = ConnectOptions {
                recv_buffer: if slow { plan.slow_consumer } else { None },
                publisher: index == 0 || (index as u64) < u64::from(plan.senders),
            };
            let own_sender = ((index as u64) < u64::from(plan.senders)).then_some(index as u32);
            let mut receiver_plan = ReceiverPlan {
                senders: plan.senders,
                messages: plan.messages,
                own_sender,
                window: own_sender.and_then(|id| windows.get(id as usize).cloned()),
                slow,
                index,
                count_logins: None,
            };
            let (gate, events_tx, cancel) = (gate.clone(), events_tx.clone(), cancel.clone());
            let (target, addr) = (env.target, env.addr(index));
            connecting.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                let joined = connect_and_join(target, addr, options).await?;
                if serial {
                    let local = joined.reader.local_addr()?;
                    receiver_plan.count_logins = Some(format!("[{local}]").into_bytes());
                }
                // The receiving task owns the read half; the write side stays here.
                let receiver = tokio::spawn(receive(
                    joined.reader,
                    joined.lines,
                    receiver_plan,
                    base,
                    events_tx,
                    cancel,
                ));
                anyhow::Ok((index, joined.outgoing, receiver))
            });
            if serial {
                let joined = Self::collect(
                    &mut connecting,
                    deadline,
                    &mut writers,
                    &mut receivers,
                    &mut first_error,
                )
                .await;
                if !joined {
                    break;
                }
                if let Err(e) = wait_for_logins(&mut events, &mut logins, index, deadline).await {
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
        while Self::collect(
            &mut connecting,
            deadline,
            &mut writers,
            &mut receivers,
            &mut first_error,
        )
        .await
        {}
        if let Some(error) = first_error {
            cancel.cancel();
            let connected = receivers.iter().filter(|r| r.is_some()).count();
            return Err(error.context(format!("{connected} of {} clients joined", plan.clients)));
        }
        Ok(Room {
            target: env.target,
            deadline,
            writers,
            receivers: receivers.into_iter().flatten().collect(),
            events,
            cancel,
            closed: 0,
        })
    }

    /// Takes the next finished connection; false when none is left or on error or timeout.
    async fn collect(
        connecting: &mut JoinSet<anyhow::Result<(usize, Outgoing, JoinHandle<Received>)>>,
        deadline: tokio::time::Instant,
        writers: &mut [Option<Outgoing>],
        receivers: &mut [Option<JoinHandle<Received>>],
        first_error: &mut Option<anyhow::Error>,
    ) -> bool {
        let next = match timeout_at(deadline, connecting.join_next()).await {
            Ok(Some(next)) => next,
            Ok(None) => return false,
            Err(_) => {
                first_error.get_or_insert_with(|| anyhow::anyhow!("timed out connecting"));
                return false;
            }
        };
        match next {
            Ok(Ok((index, outgoing, receiver))) => {
                writers[index] = Some(outgoing);
                receivers[index] = Some(receiver);
                true
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
                false
            }
            Err(join_error) => {
                first_error.get_or_insert(join_error.into());
                false
            }
        }
    }

    /// Broadcasts marker `round` from client 0 and waits until every client has read it.
    async fn settle(&mut self, round: u64) -> anyhow::Result<()> {
        let mut line = Vec::new();
        encode(self.target, &mut line, MARKER_SENDER, round, 0);
        let first = self.writers[0]
            .as_mut()
            .context("client 0 sends the marker")?;
        first.sender().write_all(&line).await?;
        let mut seen = 0;
        while seen < self.receivers.len() {
            match timeout_at(self.deadline, self.events.recv()).await {
                Ok(Some(Event::Marker { round: r })) if r == round => seen += 1,
                Ok(Some(Event::Closed)) => {
                    self.closed += 1;
                    bail!("a client was disconnected while settling");
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("receivers ended while settling"),
                Err(_) => bail!(
                    "timed out settling: {seen} of {} clients saw the marker",
                    self.receivers.len()
                ),
            }
        }
        Ok(())
    }

    /// Stops the receivers and returns what each counted.
    async fn close(self) -> (Vec<Received>, Vec<Option<Outgoing>>) {
        self.cancel.cancel();
        let mut received = Vec::with_capacity(self.receivers.len());
        for receiver in self.receivers {
            if let Ok(r) = receiver.await {
                received.push(r);
            }
        }
        (received, self.writers)
    }
}

/// Serial joins: waits until every client before `newcomer` has read its login line.
async fn wait_for_logins(
    events: &mut mpsc::UnboundedReceiver<Event>,
    logins: &mut [usize],
    newcomer: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    // Client r joined before clients r+1..=newcomer, so it must have read newcomer − r logins.
    let mut missing = (0..newcomer).filter(|&r| logins[r] < newcomer - r).count();
    while missing > 0 {
        match timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Login { receiver })) => {
                logins[receiver] += 1;
                if receiver < newcomer && logins[receiver] == newcomer - receiver {
                    missing -= 1;
                }
            }
            Ok(Some(Event::Closed)) => bail!("a client was disconnected while joining"),
            Ok(Some(_)) => {}
            Ok(None) => bail!("receivers ended while joining"),
            Err(_) => bail!("timed out waiting for client {newcomer}'s login to reach everyone"),
        }
    }
    Ok(())
}

/// Samples the servers' RSS (summed over all pids) every 20 ms, keeping the highest.
pub(crate) fn sample_peak_rss(pids: &[u32]) -> (Arc<AtomicU64>, Option<JoinHandle<()>>) {
    let peak = Arc::new(AtomicU64::new(0));
    let handle = (!pids.is_empty()).then(|| {
        let (peak, pids) = (peak.clone(), pids.to_vec());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                if let Some(usage) = procfs::usage_sum(&pids) {
                    peak.fetch_max(usage.rss_kib, Ordering::Relaxed);
                }
            }
        })
    });
    (peak, handle)
}

async fn send_messages(
    writer: &mut OwnedWriteHalf,
    target: Target,
    id: u32,
    messages: u64,
    pacing: Pacing,
    window: Option<Arc<Semaphore>>,
    base: Instant,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4096);
    match (pacing, window) {
        (Pacing::Window(_), Some(window)) => {
            let mut seq = 0;
            while seq < messages {
                let Ok(permit) = window.acquire().await else {
                    return Ok(());
                };
                permit.forget();
                // Everything the window allows right now goes in one write.
                let mut batch = 1;
                while seq + batch < messages
                    && let Ok(permit) = window.try_acquire()
                {
                    permit.forget();
                    batch += 1;
                }
                out.clear();
                let now = nanos_since(base);
                for s in seq..seq + batch {
                    encode(target, &mut out, id, s, now);
                }
                writer.write_all(&out).await?;
                seq += batch;
            }
        }
        (Pacing::Rate(rate), _) => {
            let start = tokio::time::Instant::now();
            for seq in 0..messages {
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due).await;
                out.clear();
                encode(target, &mut out, id, seq, nanos_since(base));
                writer.write_all(&out).await?;
            }
        }
        (Pacing::Window(_), None) => unreachable!("windowed senders have a window"),
    }
    Ok(())
}

fn params_of(broadcast: &Broadcast) -> serde_json::Value {
    let mut params = serde_json::json!({
        "clients": broadcast.clients,
        "senders": broadcast.senders,
        "messages": broadcast.messages,
    });
    match broadcast.pacing {
        Pacing::Window(w) => params["window"] = w.into(),
        Pacing::Rate(r) => params["rate"] = r.into(),
    }
    if let Some(buffer) = broadcast.slow_consumer {
        params["slow_recv_buffer"] = buffer.into();
    }
    params
}

pub(crate) fn server_report(
    env: &Env,
    baseline: Option<Usage>,
    start: Option<Usage>,
    end: Option<Usage>,
    peak_kib: u64,
    per: u64,
) -> Option<ServerUsage> {
    let pid = *env.server_pids.first()?;
    let baseline = baseline.map(|u| u.rss_kib).unwrap_or(0);
    let (cpu, rss_start) = start.map(|u| (u.cpu, u.rss_kib)).unwrap_or_default();
    let end_usage = end;
    let cpu_s = end_usage
        .map(|e| e.cpu.saturating_sub(cpu).as_secs_f64())
        .unwrap_or(0.0);
    let rss_end = end_usage.map(|u| u.rss_kib).unwrap_or(0);
    let schedstat_s = match (
        start.and_then(|u| u.cpu_schedstat),
        end.and_then(|u| u.cpu_schedstat),
    ) {
        (Some(s), Some(e)) => Some(e.saturating_sub(s).as_secs_f64()),
        _ => None,
    };
    Some(ServerUsage {
        pid,
        cpu_s,
        cpu_us_per_delivery: (per > 0).then(|| cpu_s * 1e6 / per as f64),
        cpu_us_per_delivery_schedstat: schedstat_s
            .filter(|_| per > 0)
            .map(|s| s * 1e6 / per as f64),
        rss_baseline_kib: baseline,
        rss_start_kib: rss_start,
        rss_end_kib: rss_end,
        rss_peak_kib: peak_kib.max(rss_end).max(rss_start),
        alive_at_end: env.server_pids.iter().all(|&pid| procfs::is_alive(pid)),
        pids: if env.server_pids.len() > 1 {
            env.server_pids.clone()
        } else {
            Vec::new()
        },
        cpu_s_by_pid: Vec::new(),
    })
}

/// Each server's CPU seconds over the window; a pid unreadable at either end gets `None`.
fn cpu_seconds_by_pid(
    pids: &[u32],
    start: &[Option<Duration>],
    end: &[Option<Duration>],
) -> Vec<PidCpu> {
    pids.iter()
        .zip(start.iter().zip(end))
        .map(|(&pid, (s, e))| PidCpu {
            pid,
            cpu_s: s.zip(*e).map(|(s, e)| e.saturating_sub(s).as_secs_f64()),
        })
        .collect()
}

/// fanout, latency and slow-consumer.
pub async fn broadcast(env: &Env, name: &str, broadcast: &Broadcast) -> anyhow::Result<Report> {
    let base = Instant::now();
    let mut report = Report {
        scenario: name.to_string(),
        target: env.target.to_string(),
        params: params_of(broadcast),
        ..Report::default()
    };
    if broadcast.clients == 0 || u64::from(broadcast.senders) > broadcast.clients as u64 {
        bail!("need 1 <= senders <= clients");
    }
    if let Pacing::Window(w) = broadcast.pacing {
        if w == 0 {
            bail!("the window must be at least 1");
        }
        if env.target == Target::Go && w as usize * MAX_PLAIN_LINE > 2048 {
            report.notes.push(format!(
                "window {w} can put more than 2048 bytes in flight per sender: the Go server \
                 reads 2048 bytes at a time and would cut lines"
            ));
        }
    }
    let baseline = env.server_usage();
    let windows = match broadcast.pacing {
        Pacing::Window(w) => (0..broadcast.senders)
            .map(|_| Arc::new(Semaphore::new(w as usize)))
            .collect(),
        Pacing::Rate(_) => Vec::new(),
    };
    let mut room = Room::open(
        env,
        RoomPlan {
            clients: broadcast.clients,
            senders: broadcast.senders,
            messages: broadcast.messages,
            windows: windows.clone(),
            slow_consumer: broadcast.slow_consumer,
        },
        base,
    )
    .await?;
    room.settle(1).await?;

    let healthy = broadcast.clients - usize::from(broadcast.slow_consumer.is_some());
    let start_by_pid = env.server_cpu_by_pid();
    let start_usage = env.server_usage();
    let bench_start = procfs::usage_of_self();
    let (peak, sampler) = sample_peak_rss(&env.server_pids);
    let start_ns = nanos_since(base);
    let mut senders = Vec::new();
    for id in 0..broadcast.senders {
        let mut joined = room.writers[id as usize]
            .take()
            .context("every sender joined")?;
        let (target, messages, pacing) = (env.target, broadcast.messages, broadcast.pacing);
        let window = windows.get(id as usize).cloned();
        let cancel = room.cancel.clone();
        senders.push(tokio::spawn(async move {
            let sent = tokio::select! {
                sent = send_messages(joined.sender(), target, id, messages, pacing, window, base) => sent,
                _ = cancel.cancelled() => Ok(()),
            };
            // Hold the connection open until the run ends: closing it would be a leave.
            cancel.cancelled().await;
            (joined, sent)
        }));
    }

    let mut complete = 0;
    let mut last_ns = start_ns;
    while complete + room.closed < healthy {
        match timeout_at(room.deadline, room.events.recv()).await {
            Ok(Some(Event::Complete { at_ns })) => {
                complete += 1;
                last_ns = last_ns.max(at_ns);
            }
            Ok(Some(Event::Closed)) => room.closed += 1,
            Ok(Some(Event::Marker { .. } | Event::Login { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
    report.completed = complete == healthy;
    if !report.completed {
        last_ns = nanos_since(base);
        report.notes.push(format!(
            "{complete} of {healthy} healthy clients got everything before the timeout; {} were disconnected",
            room.closed
        ));
    }
    let end_usage = env.server_usage();
    let end_by_pid = env.server_cpu_by_pid();
    let bench_end = procfs::usage_of_self();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let mut send_errors = 0;
    let closing_cancel = room.cancel.clone();
    closing_cancel.cancel();
    let mut held = Vec::new();
    for sender in senders {
        if let Ok((joined, sent)) = sender.await {
            send_errors += u64::from(sent.is_err());
            held.push(joined);
        }
    }
    if send_errors > 0 {
        report
            .notes
            .push(format!("{send_errors} senders failed to write"));
    }
    let (received, _writers) = room.close().await;
    let mut latency = new_histogram();
    let mut slow_reader = None;
    for r in &received {
        if r.slow_reader.is_none() {
            report.absorb(&r.tracker, &mut latency);
        }
    }
    for r in received {
        if r.slow_reader.is_some() {
            slow_reader = r.slow_reader;
        }
    }
    report.latency = LatencySummary::of(&latency);
    report.elapsed_s = (last_ns.saturating_sub(start_ns)) as f64 / 1e9;
    if report.elapsed_s > 0.0 {
        report.deliveries_per_s = report.deliveries as f64 / report.elapsed_s;
    }
    report.bench_cpu_s = procfs::cpu_seconds_between(bench_start, bench_end);
    report.server = server_report(
        env,
        baseline,
        start_usage,
        end_usage,
        peak.load(Ordering::Relaxed),
        report.deliveries,
    );
    if let Some(server) = report.server.as_mut()
        && env.server_pids.len() > 1
    {
        server.cpu_s_by_pid = cpu_seconds_by_pid(&env.server_pids, &start_by_pid, &end_by_pid);
    }
    if broadcast.slow_consumer.is_some() {
        if report.expected_deliveries > 0 {
            report.healthy_delivered_fraction = Some(
                (report.expected_deliveries - report.lost) as f64
                    / report.expected_deliveries as f64,
            );
        }
        if let Some(reader) = slow_reader {
            report.slow_client_disconnected = Some(was_disconnected(reader).await);
        }
    }
    drop(held);
    Ok(report)
}

/// Drains the slow client for up to two seconds: true if the server closed it.
async fn was_disconnected(mut reader: OwnedReadHalf) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// N idle clients, all joined: the server's RSS per connection.
pub async fn connections(env: &Env, count: usize) -> anyhow::Result<Report> {
    let base = Instant::now();
    let mut report = Report {
        scenario: "connections".into(),
        target: env.target.to_string(),
        params: serde_json::json!({ "connections": count }),
        ..Report::default()
    };
    let baseline = env.server_usage();
    let bench_start = procfs::usage_of_self();
    let mut room = Room::open(env, RoomPlan::listeners(count), base).await?;
    room.settle(1).await?;
    let joined_at = nanos_since(base);
    // Let the server return what it allocated for the join storm, then measure idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = env.server_usage();
    report.completed = true;
    report.elapsed_s = joined_at as f64 / 1e9;
    report.server = server_report(env, baseline, baseline, end, 0, 0);
    if let (Some(before), Some(after)) = (baseline, end) {
        report.rss_per_connection_kib =
            Some((after.rss_kib as f64 - before.rss_kib as f64) / count as f64);
    }
    report.bench_cpu_s = procfs::cpu_seconds_between(bench_start, procfs::usage_of_self());
    report.notes.push(format!(
        "all {count} joined and settled in {:.2} s (server CPU over the whole join: see cpu_s)",
        report.elapsed_s
    ));
    let _ = room.close().await;
    Ok(report)
}

/// Connect–join–close cycles by `parallel` workers for `duration`, while `clients` stay in
/// the room (and get a login and a leave line per cycle).
pub async fn churn(
    env: &Env,
    clients: usize,
    parallel: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    let base = Instant::now();
    let mut report = Report {
        scenario: "churn".into(),
        target: env.target.to_string(),
        params: serde_json::json!({
            "clients": clients,
            "parallel": parallel,
            "duration_s": duration.as_secs_f64(),
        }),
        ..Report::default()
    };
    let baseline = env.server_usage();
    let mut room = Room::open(env, RoomPlan::listeners(clients.max(1)), base).await?;
    room.settle(1).await?;
    let start_usage = env.server_usage();
    let bench_start = procfs::usage_of_self();
    let (peak, sampler) = sample_peak_rss(&env.server_pids);
    let started = Instant::now();
    let stop_at = tokio::time::Instant::now() + duration.min(env.timeout / 2);
    let mut workers = JoinSet::new();
    for worker in 0..parallel.max(1) {
        let (target, addr) = (env.target, env.addr(clients.max(1) + worker));
        workers.spawn(async move {
            let mut cycle_latency = new_histogram();
            let (mut cycles, mut errors) = (0u64, 0u64);
            while tokio::time::Instant::now() < stop_at {
                let began = Instant::now();
                match timeout_at(
                    stop_at + Duration::from_secs(2),
                    connect_and_join(target, addr, ConnectOptions::default()),
                )
                .await
                {
                    Ok(Ok(joined)) => {
                        drop(joined);
                        cycles += 1;
                        let _ = cycle_latency.record(began.elapsed().as_nanos().max(1) as u64);
                    }
                    _ => errors += 1,
                }
            }
            (cycles, errors, cycle_latency)
        });
    }
    let mut latency = new_histogram();
    let (mut cycles, mut errors) = (0, 0);
    while let Some(worker) = workers.join_next().await {
        if let Ok((c, e, h)) = worker {
            cycles += c;
            errors += e;
            let _ = latency.add(&h);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let end_usage = env.server_usage();
    let bench_end = procfs::usage_of_self();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    // The room must still work after the churn.
    let healthy = room.settle(2).await;
    report.completed = healthy.is_ok() && errors == 0;
    if let Err(e) = healthy {
        report.error = Some(format!("after churn: {e:#}"));
    }
    report.elapsed_s = elapsed;
    report.cycles = Some(cycles);
    report.cycles_per_s = Some(cycles as f64 / elapsed);
    report.cycle_errors = Some(errors);
    report.latency = LatencySummary::of(&latency);
    report.notes.push(
        "latency = connect until joined, per cycle; cpu_us_per_delivery = server CPU per cycle"
            .into(),
    );
    report.bench_cpu_s = procfs::cpu_seconds_between(bench_start, bench_end);
    report.server = server_report(
        env,
        baseline,
        start_usage,
        end_usage,
        peak.load(Ordering::Relaxed),
        cycles,
    );
    let _ = room.close().await;
    Ok(report)
}
