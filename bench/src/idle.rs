//! `idle-room` (issue 8): N JSON clients that behave like an idle chat-tui, and what they
//! cost the server over a window: CPU seconds and bytes sent.
//!
//! Every client joins, sends `{"type":"who"}` once after its `welcome` (as chat-tui does on
//! connect) and then keeps itself alive, on a timer whose first tick falls at a random
//! point of the first period (so N clients do not fire together):
//! - `--keepalive ping` (chat-tui now): `{"type":"ping"}` every idle timeout / 3, the idle
//!   timeout being the welcome's `idle_timeout_ms` (10 s with the default 30 s);
//! - `--keepalive who` (the old chat-tui): `who` every 10 s, and also `who` after every
//!   join, leave or rename it receives, at most once per second. The event-triggered `who`
//!   is armed once the room has settled: during the join storm it would measure the joins,
//!   not the idle room.
//!
//! The window opens once every client has read a marker sent after the last join, and
//! lasts `--duration`. Nothing else happens in the room meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant as TokioInstant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::conn::{ConnectOptions, connect_and_join};
use crate::procfs;
use crate::scenario::{Env, sample_peak_rss, server_report};
use crate::stats::{IdleStats, Report};
use crate::wire::{MARKER_SENDER, Target, encode, parse_payload};

/// How idle clients keep their connection alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keepalive {
    /// `ping` every idle timeout / 3.
    Ping,
    /// `who` every 10 s and after room events (at most once per second).
    Who,
}

impl Keepalive {
    fn name(self) -> &'static str {
        match self {
            Keepalive::Ping => "ping",
            Keepalive::Who => "who",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IdlePlan {
    pub clients: usize,
    pub keepalive: Keepalive,
    pub duration: Duration,
    /// Overrides the keepalive period.
    pub every: Option<Duration>,
}

/// The old chat-tui's `who` period.
const WHO_EVERY: Duration = Duration::from_secs(10);
/// The old chat-tui's bound on event-triggered `who`s.
const WHO_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// With no idle timeout at all, ping as if it were the default 30 s.
const PING_EVERY_WITHOUT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    pings: AtomicU64,
    pongs: AtomicU64,
    whos_periodic: AtomicU64,
    whos_on_events: AtomicU64,
    users: AtomicU64,
    room_events: AtomicU64,
    disconnected: AtomicU64,
    /// Event-triggered `who`s are sent once this is set.
    armed: AtomicBool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    bytes: u64,
    pings: u64,
    pongs: u64,
    whos_periodic: u64,
    whos_on_events: u64,
    users: u64,
    room_events: u64,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            bytes: get(&self.bytes),
            pings: get(&self.pings),
            pongs: get(&self.pongs),
            whos_periodic: get(&self.whos_periodic),
            whos_on_events: get(&self.whos_on_events),
            users: get(&self.users),
            room_events: get(&self.room_events),
        }
    }
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// splitmix64: enough to spread timers, no dependency.
fn spread(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Deserialize)]
struct Welcome {
    #[serde(default)]
    idle_timeout_ms: u64,
}

enum Signal {
    /// Joined, with its keepalive period.
    Joined(Duration),
    Settled,
}

struct Client {
    addr: std::net::SocketAddr,
    plan: IdlePlan,
    seed: u64,
    gate: Arc<Semaphore>,
    counters: Arc<Counters>,
    signals: mpsc::UnboundedSender<Signal>,
    /// Client 0 sends the marker.
    control: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    cancel: CancellationToken,
}

const PING: &[u8] = b"{\"type\":\"ping\"}\n";
const WHO: &[u8] = b"{\"type\":\"who\"}\n";

impl Client {
    async fn run(mut self) -> anyhow::Result<()> {
        let permit = self.gate.clone().acquire_owned().await?;
        let joined =
            connect_and_join(Target::ChatJson, self.addr, ConnectOptions::default()).await?;
        drop(permit);
        let (mut reader, mut lines, mut writer) =
            (joined.reader, joined.lines, joined.outgoing.writer);
        let welcome: Welcome =
            serde_json::from_slice(&joined.join_line).context("parsing the welcome")?;
        let every = self.plan.every.unwrap_or(match self.plan.keepalive {
            Keepalive::Ping if welcome.idle_timeout_ms > 0 => {
                Duration::from_millis(welcome.idle_timeout_ms) / 3
            }
            Keepalive::Ping => PING_EVERY_WITHOUT_TIMEOUT,
            Keepalive::Who => WHO_EVERY,
        });
        let _ = self.signals.send(Signal::Joined(every));
        writer.write_all(WHO).await?;
        let mut last_who = TokioInstant::now();
        let mut next_tick = last_who + every.mul_f64(spread(self.seed));
        let mut event_who: Option<TokioInstant> = None;
        let counters = self.counters.clone();
        loop {
            while let Some(line) = lines.next_line() {
                if line.starts_with(br#"{"type":"pong""#) {
                    add(&counters.pongs);
                } else if line.starts_with(br#"{"type":"users""#) {
                    add(&counters.users);
                } else if line.starts_with(br#"{"type":"chat""#) {
                    add(&counters.room_events);
                    if parse_payload(line).is_some_and(|p| p.sender == MARKER_SENDER) {
                        let _ = self.signals.send(Signal::Settled);
                    }
                } else if line.starts_with(br#"{"type":"join""#)
                    || line.starts_with(br#"{"type":"leave""#)
                    || line.starts_with(br#"{"type":"rename""#)
                {
                    add(&counters.room_events);
                    if self.plan.keepalive == Keepalive::Who
                        && counters.armed.load(Ordering::Relaxed)
                        && event_who.is_none()
                    {
                        event_who = Some((last_who + WHO_AT_MOST_EVERY).max(TokioInstant::now()));
                    }
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                _ = sleep_until(next_tick) => {
                    match self.plan.keepalive {
                        Keepalive::Ping => {
                            writer.write_all(PING).await?;
                            add(&counters.pings);
                        }
                        Keepalive::Who => {
                            writer.write_all(WHO).await?;
                            add(&counters.whos_periodic);
                            last_who = TokioInstant::now();
                        }
                    }
                    next_tick += every;
                }
                _ = async { sleep_until(event_who.unwrap_or_else(TokioInstant::now)).await },
                    if event_who.is_some() =>
                {
                    writer.write_all(WHO).await?;
                    add(&counters.whos_on_events);
                    last_who = TokioInstant::now();
                    event_who = None;
                }
                Some(line) = async {
                    match &mut self.control {
                        Some(control) => control.recv().await,
                        None => std::future::pending().await,
                    }
                } => writer.write_all(&line).await?,
                read = lines.fill(&mut reader) => match read {
                    Ok(0) | Err(_) => {
                        add(&counters.disconnected);
                        bail!("the server closed an idle client");
                    }
                    Ok(n) => {
                        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                },
            }
        }
    }
}

pub async fn idle_room(env: &Env, plan: &IdlePlan) -> anyhow::Result<Report> {
    let base = Instant::now();
    let mut report = Report {
        scenario: "idle-room".into(),
        target: env.target.to_string(),
        params: serde_json::json!({
            "clients": plan.clients,
            "keepalive": plan.keepalive.name(),
            "duration_s": plan.duration.as_secs_f64(),
            "every_s": plan.every.map(|d| d.as_secs_f64()),
        }),
        ..Report::default()
    };
    if !matches!(env.target, Target::Chat | Target::ChatJson) {
        report.skipped = Some(format!(
            "{} has no JSON mode, ping or who: idle-room runs against chat-server only",
            env.target
        ));
        return Ok(report);
    }
    if plan.clients == 0 {
        bail!("idle-room needs at least one client");
    }
    let deadline = TokioInstant::from_std(base + env.timeout);
    let baseline = env.server_usage();
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(env.connect_concurrency.max(1)));
    let (signals_tx, mut signals) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let mut control_rx = Some(control_rx);
    let cancel = CancellationToken::new();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut clients = JoinSet::new();
    for index in 0..plan.clients {
        let client = Client {
            addr: env.addr(index),
            plan: plan.clone(),
            seed: seed.wrapping_add(index as u64),
            gate: gate.clone(),
            counters: counters.clone(),
            signals: signals_tx.clone(),
            control: if index == 0 { control_rx.take() } else { None },
            cancel: cancel.clone(),
        };
        clients.spawn(client.run());
    }
    drop(signals_tx);
    let run = async {
        let (mut joined, mut every) = (0, Duration::ZERO);
        while joined < plan.clients {
            tokio::select! {
                signal = timeout_at(deadline, signals.recv()) => match signal {
                    Ok(Some(Signal::Joined(e))) => {
                        joined += 1;
                        every = e;
                    }
                    Ok(Some(Signal::Settled)) => {}
                    Ok(None) => bail!("clients ended while joining"),
                    Err(_) => bail!("timed out joining: {joined} of {} joined", plan.clients),
                },
                Some(ended) = clients.join_next() => {
                    ended?.context(format!("{joined} of {} joined", plan.clients))?;
                    bail!("a client ended while joining");
                }
            }
        }
        let mut marker = Vec::new();
        encode(Target::ChatJson, &mut marker, MARKER_SENDER, 1, 0);
        control_tx.send(marker).ok().context("client 0 is gone")?;
        let mut settled = 0;
        while settled < plan.clients {
            match timeout_at(deadline, signals.recv()).await {
                Ok(Some(Signal::Settled)) => settled += 1,
                Ok(Some(Signal::Joined(_))) => {}
                Ok(None) => bail!("clients ended while settling"),
                Err(_) => bail!(
                    "timed out settling: {settled} of {} saw the marker",
                    plan.clients
                ),
            }
        }
        anyhow::Ok(every)
    };
    let every = match run.await {
        Ok(every) => every,
        Err(e) => {
            cancel.cancel();
            return Err(e);
        }
    };
    if TokioInstant::now() + plan.duration > deadline {
        cancel.cancel();
        bail!(
            "joining took too long: the {:.0} s window no longer fits in --timeout",
            plan.duration.as_secs_f64()
        );
    }

    counters.armed.store(true, Ordering::Relaxed);
    let before = counters.snapshot();
    let disconnected_before = counters.disconnected.load(Ordering::Relaxed);
    let start_usage = env.server_usage();
    let bench_start = procfs::usage_of_self();
    let (peak, sampler) = sample_peak_rss(&env.server_pids);
    let started = Instant::now();
    // Clients that end early (closed by the server) end the window's quiet: note them.
    let window_end = TokioInstant::now() + plan.duration;
    let mut ended_early = Vec::new();
    loop {
        tokio::select! {
            _ = sleep_until(window_end) => break,
            Some(ended) = clients.join_next() => match ended {
                Ok(Err(e)) => ended_early.push(format!("{e:#}")),
                Err(e) => ended_early.push(e.to_string()),
                Ok(Ok(())) => {}
            },
        }
    }
    let window = started.elapsed();
    let end_usage = env.server_usage();
    let bench_end = procfs::usage_of_self();
    let after = counters.snapshot();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    cancel.cancel();
    while clients.join_next().await.is_some() {}

    report.elapsed_s = window.as_secs_f64();
    report.bench_cpu_s = procfs::cpu_seconds_between(bench_start, bench_end);
    report.server = server_report(
        env,
        baseline,
        start_usage,
        end_usage,
        peak.load(Ordering::Relaxed),
        0,
    );
    let disconnected = counters.disconnected.load(Ordering::Relaxed);
    let stats = IdleStats {
        keepalive: plan.keepalive.name().into(),
        clients: plan.clients,
        window_s: window.as_secs_f64(),
        every_s: every.as_secs_f64(),
        pings: after.pings - before.pings,
        pongs: after.pongs - before.pongs,
        whos_periodic: after.whos_periodic - before.whos_periodic,
        whos_on_events: after.whos_on_events - before.whos_on_events,
        users_replies: after.users - before.users,
        room_events: after.room_events - before.room_events,
        bytes_from_server: after.bytes - before.bytes,
        disconnected,
        server_cpu_percent: report
            .server
            .as_ref()
            .map(|s| s.cpu_s * 100.0 / window.as_secs_f64()),
    };
    if disconnected > disconnected_before || !ended_early.is_empty() {
        report.notes.push(format!(
            "{} clients were closed by the server during the window; the first: {}",
            disconnected - disconnected_before,
            ended_early.first().map_or("?", String::as_str)
        ));
    }
    if stats.every_s > stats.window_s {
        report.notes.push(format!(
            "the keepalive period ({:.1} s) is longer than the window: some clients sent nothing",
            stats.every_s
        ));
    }
    report.completed = disconnected == 0;
    report.idle = Some(stats);
    Ok(report)
}
