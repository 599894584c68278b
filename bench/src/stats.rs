//! What each receiver counts, and the report a run produces.
//!
//! A receiver keeps one bit per (sender, sequence number) it expects, so a duplicate is a
//! bit already set, a reordered delivery is one below the highest sequence number seen from
//! that sender, and a loss is a bit still clear when the run ends.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::wire::Payload;

/// Latencies up to a minute, 3 significant digits, in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Default)]
struct FromSender {
    seen: Vec<u64>,
    distinct: u64,
    highest: Option<u64>,
}

/// One receiver's view of the run.
#[derive(Debug)]
pub struct Tracker {
    per_sender: u64,
    senders: Vec<FromSender>,
    pub distinct: u64,
    pub deliveries: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Payloads naming a sender or sequence number that was never sent (corrupted lines).
    pub invalid: u64,
    pub latency: Histogram<u64>,
    pub last_delivery_ns: u64,
}

impl Tracker {
    pub fn new(senders: u32, per_sender: u64) -> Self {
        let words = per_sender.div_ceil(64) as usize;
        Tracker {
            per_sender,
            senders: (0..senders)
                .map(|_| FromSender {
                    seen: vec![0; words],
                    ..FromSender::default()
                })
                .collect(),
            distinct: 0,
            deliveries: 0,
            duplicated: 0,
            reordered: 0,
            invalid: 0,
            latency: new_histogram(),
            last_delivery_ns: 0,
        }
    }

    pub fn expected(&self) -> u64 {
        self.per_sender * self.senders.len() as u64
    }

    pub fn complete(&self) -> bool {
        self.distinct == self.expected()
    }

    pub fn lost(&self) -> u64 {
        self.expected() - self.distinct
    }

    /// Counts one delivery seen at `now_ns`.
    pub fn record(&mut self, payload: Payload, now_ns: u64) {
        let Some(from) = self.senders.get_mut(payload.sender as usize) else {
            self.invalid += 1;
            return;
        };
        if payload.seq >= self.per_sender {
            self.invalid += 1;
            return;
        }
        self.deliveries += 1;
        self.last_delivery_ns = self.last_delivery_ns.max(now_ns);
        let (word, bit) = ((payload.seq / 64) as usize, payload.seq % 64);
        if from.seen[word] & (1 << bit) != 0 {
            self.duplicated += 1;
            return;
        }
        from.seen[word] |= 1 << bit;
        from.distinct += 1;
        self.distinct += 1;
        match from.highest {
            Some(highest) if payload.seq < highest => self.reordered += 1,
            _ => from.highest = Some(payload.seq),
        }
        let _ = self
            .latency
            .record(now_ns.saturating_sub(payload.nanos).max(1));
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            p50_us: us(histogram.value_at_quantile(0.50)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / 1000.0,
        }
    }
}

/// The server's CPU and memory over the measured window (given `--server-pid`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUsage {
    pub pid: u32,
    pub cpu_s: f64,
    /// Server CPU time divided by deliveries (or by cycles, for churn).
    pub cpu_us_per_delivery: Option<f64>,
    /// The same from schedstat (ns resolution, live threads only): a cross-check.
    pub cpu_us_per_delivery_schedstat: Option<f64>,
    /// Before the clients connected.
    pub rss_baseline_kib: u64,
    /// When the measured window started (clients connected and settled).
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// Highest RSS sampled during the measured window.
    pub rss_peak_kib: u64,
    /// Every server process was alive at the end.
    pub alive_at_end: bool,
    /// Several servers (a cluster's nodes and its Redis): every pid, CPU and RSS above are
    /// sums over all of them, and `pid` is the first. Empty (and left out) for one server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Several servers, broadcast scenarios: each one's share of `cpu_s`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_s_by_pid: Vec<PidCpu>,
}

/// One server process's CPU seconds over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct PidCpu {
    pub pid: u32,
    pub cpu_s: Option<f64>,
}

/// Everything one run measured. Fields that do not apply to a scenario stay `null`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub params: serde_json::Value,
    /// False if the run hit its timeout or an error before every receiver had everything.
    pub completed: bool,
    pub error: Option<String>,
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub invalid: u64,
    pub elapsed_s: f64,
    pub deliveries_per_s: f64,
    pub latency: LatencySummary,
    pub server: Option<ServerUsage>,
    pub bench_cpu_s: f64,
    /// connections: (RSS after all joined − RSS before) / connections.
    pub rss_per_connection_kib: Option<f64>,
    /// slow-consumer: share of the expected deliveries the healthy clients got.
    pub healthy_delivered_fraction: Option<f64>,
    /// slow-consumer: whether the server closed the reader that never reads.
    pub slow_client_disconnected: Option<bool>,
    /// churn: completed connect–join–close cycles.
    pub cycles: Option<u64>,
    pub cycles_per_s: Option<f64>,
    pub cycle_errors: Option<u64>,
    /// resume: what the reconnected clients fetched and whether it was whole.
    pub resume: Option<ResumeStats>,
    /// idle-room: what an idle room of keepalive clients cost.
    pub idle: Option<IdleStats>,
    /// Why the scenario did not run against this target (e.g. redis keeps no history).
    pub skipped: Option<String>,
    pub notes: Vec<String>,
}

/// resume: counts over all reconnected clients.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResumeStats {
    pub clients: usize,
    /// Payload events put into the room while the clients were away.
    pub gap: u64,
    /// `seen` or `after-leaves`: where the clients resumed from.
    pub from: String,
    pub resume_after_min: u64,
    pub resume_after_max: u64,
    /// The seq of the marker every client saw before disconnecting.
    pub marker_seq: u64,
    /// The newest seq once all the clients' leaves were logged.
    pub after_leaves_seq: u64,
    /// The seqs of the G payload events.
    pub gap_first_seq: u64,
    pub gap_last_seq: u64,
    /// Clients that got an answer with `more: false`.
    pub clients_complete: usize,
    /// Events in all history answers (payloads, leaves, joins).
    pub events_fetched: u64,
    pub pages: u64,
    /// Bytes the clients read from connect to their last page (live events included).
    pub bytes_from_server: u64,
    /// Seqs missing between consecutive events of one client's pages (from LAST+1 on).
    pub seq_holes: u64,
    /// Events whose seq was not above the one before (repeated or out of order).
    pub seq_repeats: u64,
    /// Clients whose pages ended before their welcome's seq.
    pub short_of_welcome: u64,
    /// Answers with `gap: true` (retention deleted something in range).
    pub gap_flags: u64,
    /// Gap payloads that reached a reconnected client live (they should come from history).
    pub gap_events_live: u64,
    pub server_cpu_ms_per_client: Option<f64>,
    /// Connects opened at once in the measured phase (0: all at once).
    pub reconnect_concurrency: usize,
    /// Accept-queue overflows during the measured phase (system-wide `ListenOverflows`):
    /// each one is a client whose connect waits for a SYN retransmit, 1 s or more.
    pub listen_overflows: Option<u64>,
}

/// idle-room: what happened during the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleStats {
    /// `ping` or `who`.
    pub keepalive: String,
    pub clients: usize,
    pub window_s: f64,
    /// The keepalive period (ping: the welcome's idle timeout / 3; who: 10 s).
    pub every_s: f64,
    pub pings: u64,
    pub pongs: u64,
    /// `who` sent on the timer, and after room events (at most once per second).
    pub whos_periodic: u64,
    pub whos_on_events: u64,
    pub users_replies: u64,
    /// Room events (join, leave, rename, chat) the clients received in the window.
    pub room_events: u64,
    pub bytes_from_server: u64,
    /// Clients the server closed (at any time).
    pub disconnected: u64,
    /// Server CPU over the window as a share of one core.
    pub server_cpu_percent: Option<f64>,
}

impl Report {
    /// Adds one receiver's counts.
    pub fn absorb(&mut self, tracker: &Tracker, latency: &mut Histogram<u64>) {
        self.expected_deliveries += tracker.expected();
        self.deliveries += tracker.deliveries;
        self.lost += tracker.lost();
        self.duplicated += tracker.duplicated;
        self.reordered += tracker.reordered;
        self.invalid += tracker.invalid;
        let _ = latency.add(&tracker.latency);
    }

    /// A few lines for people.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} against {} {}: {}",
            self.scenario,
            self.target,
            self.params,
            if self.completed {
                "completed"
            } else {
                "INCOMPLETE"
            }
        );
        if let Some(error) = &self.error {
            let _ = writeln!(out, "  error: {error}");
        }
        if let Some(skipped) = &self.skipped {
            let _ = writeln!(out, "  skipped: {skipped}");
        }
        if self.expected_deliveries > 0 {
            let _ = writeln!(
                out,
                "  deliveries {} of {} in {:.3} s = {:.0}/s; lost {} duplicated {} reordered {} invalid {}",
                self.deliveries,
                self.expected_deliveries,
                self.elapsed_s,
                self.deliveries_per_s,
                self.lost,
                self.duplicated,
                self.reordered,
                self.invalid
            );
        }
        if self.latency.count > 0 {
            let l = &self.latency;
            let _ = writeln!(
                out,
                "  latency µs: p50 {:.0} p99 {:.0} p999 {:.0} max {:.0} (mean {:.0}, n={})",
                l.p50_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.count
            );
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                out,
                "  server {}: cpu {:.3} s{}; RSS KiB baseline {} start {} peak {} end {}{}",
                if s.pids.is_empty() {
                    format!("pid {}", s.pid)
                } else {
                    let pids: Vec<String> = s.pids.iter().map(u32::to_string).collect();
                    format!("pids {} (summed)", pids.join("+"))
                },
                s.cpu_s,
                s.cpu_us_per_delivery
                    .map(|us| format!(
                        " = {us:.3} µs per delivery (schedstat {:.3})",
                        s.cpu_us_per_delivery_schedstat.unwrap_or(f64::NAN)
                    ))
                    .unwrap_or_default(),
                s.rss_baseline_kib,
                s.rss_start_kib,
                s.rss_peak_kib,
                s.rss_end_kib,
                if s.alive_at_end { "" } else { " (DIED)" }
            );
            if !s.cpu_s_by_pid.is_empty() {
                let shares: Vec<String> = s
                    .cpu_s_by_pid
                    .iter()
                    .map(|p| match p.cpu_s {
                        Some(cpu) => format!("{} {cpu:.3} s", p.pid),
                        None => format!("{} ?", p.pid),
                    })
                    .collect();
                let _ = writeln!(out, "  cpu by pid: {}", shares.join(", "));
            }
        }
        if let Some(per) = self.rss_per_connection_kib {
            let _ = writeln!(out, "  RSS per connection: {per:.2} KiB");
        }
        if let Some(fraction) = self.healthy_delivered_fraction {
            let _ = writeln!(
                out,
                "  healthy clients got {:.1} %; slow client disconnected by server: {}",
                fraction * 100.0,
                match self.slow_client_disconnected {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "unknown",
                }
            );
        }
        if let (Some(cycles), Some(rate)) = (self.cycles, self.cycles_per_s) {
            let _ = writeln!(
                out,
                "  churn: {cycles} cycles = {rate:.0}/s, {} errors",
                self.cycle_errors.unwrap_or(0)
            );
        }
        if let Some(r) = &self.resume {
            let _ = writeln!(
                out,
                "  resume from {} (after seq {}..{}; gap seqs {}..{}): {} of {} clients complete in {:.3} s; \
                 {} events in {} pages, {} bytes; seq holes {} repeats {}, short of welcome {}, \
                 gap flags {}, gap events live {}; server {:.3} ms CPU per client; \
                 accept-queue overflows {}",
                r.from,
                r.resume_after_min,
                r.resume_after_max,
                r.gap_first_seq,
                r.gap_last_seq,
                r.clients_complete,
                r.clients,
                self.elapsed_s,
                r.events_fetched,
                r.pages,
                r.bytes_from_server,
                r.seq_holes,
                r.seq_repeats,
                r.short_of_welcome,
                r.gap_flags,
                r.gap_events_live,
                r.server_cpu_ms_per_client.unwrap_or(f64::NAN),
                r.listen_overflows
                    .map_or_else(|| "unknown".to_string(), |n| n.to_string())
            );
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(
                out,
                "  idle room, keepalive {} every {:.1} s, {} clients, {:.1} s: {} pings {} pongs, \
                 {} + {} who (timer + events), {} user lists, {} room events, {} bytes from the \
                 server, {} disconnected; server CPU {:.2} % of a core",
                i.keepalive,
                i.every_s,
                i.clients,
                i.window_s,
                i.pings,
                i.pongs,
                i.whos_periodic,
                i.whos_on_events,
                i.users_replies,
                i.room_events,
                i.bytes_from_server,
                i.disconnected,
                i.server_cpu_percent.unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(out, "  bench cpu {:.3} s", self.bench_cpu_s);
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(sender: u32, seq: u64) -> Payload {
        Payload {
            sender,
            seq,
            nanos: 0,
        }
    }

    #[test]
    fn counts_losses_duplicates_and_reordering() {
        let mut tracker = Tracker::new(2, 3);
        for (sender, seq) in [(0, 0), (0, 2), (0, 1), (0, 2), (1, 0), (1, 7), (5, 0)] {
            tracker.record(payload(sender, seq), 10);
        }
        assert_eq!(tracker.expected(), 6);
        assert_eq!(tracker.distinct, 4);
        assert_eq!(tracker.duplicated, 1);
        assert_eq!(tracker.reordered, 1);
        assert_eq!(tracker.invalid, 2);
        assert_eq!(tracker.lost(), 2);
        assert!(!tracker.complete());
        tracker.record(payload(1, 1), 10);
        tracker.record(payload(1, 2), 10);
        assert!(tracker.complete());
    }
}
