//! Turns the JSON lines of a `run-all.sh` session into the markdown table of
//! docs/BENCHMARKS.md: per row and target, the median of the repeats with min–max, and the
//! ratio of each median to redis's.
//!
//! Each input line is `{"row": NAME, "rep": N, "target": T, "server_alive": B, "report": {...}}`;
//! a report with an `error`, or without the row's metric, counts as a failed repeat.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// One table row: which run, which figure, and which way is better.
pub struct Row {
    pub name: &'static str,
    pub label: &'static str,
    /// JSON pointer into the report.
    pub metric: &'static str,
    pub unit: &'static str,
    pub lower_is_better: bool,
    /// Runs against chat-server only (history, JSON keepalives): other targets get "n/a".
    pub chat_only: bool,
}

pub const ROWS: &[Row] = &[
    Row {
        name: "fanout-w32",
        label: "fanout C=100 K=10 M=2000 W=32: server CPU per delivery",
        metric: "/server/cpu_us_per_delivery",
        unit: "µs",
        lower_is_better: true,
        chat_only: false,
    },
    Row {
        name: "fanout-w1",
        label: "same with W=1: server CPU per delivery",
        metric: "/server/cpu_us_per_delivery",
        unit: "µs",
        lower_is_better: true,
        chat_only: false,
    },
    Row {
        name: "fanout-c1000",
        label: "fanout C=1000 K=5 M=200 W=32: deliveries/s",
        metric: "/deliveries_per_s",
        unit: "M/s",
        lower_is_better: false,
        chat_only: false,
    },
    Row {
        name: "latency",
        label: "latency C=100 at 1,000 msg/s: p99",
        metric: "/latency/p99_us",
        unit: "ms",
        lower_is_better: true,
        chat_only: false,
    },
    Row {
        name: "connections",
        label: "5,000 idle connections: RSS per connection",
        metric: "/rss_per_connection_kib",
        unit: "KiB",
        lower_is_better: true,
        chat_only: false,
    },
    Row {
        name: "slow-consumer",
        label: "one client never reads (C=10 K=5 M=40000): healthy clients got",
        metric: "/healthy_delivered_fraction",
        unit: "%",
        lower_is_better: false,
        chat_only: false,
    },
    Row {
        name: "slow-consumer",
        label: "  same: server RSS growth (peak − before connecting)",
        metric: "rss_growth",
        unit: "MiB",
        lower_is_better: true,
        chat_only: false,
    },
    Row {
        name: "churn",
        label: "churn (10 in the room, 4 cycling, 2 s): connect–join–close cycles/s",
        metric: "/cycles_per_s",
        unit: "k/s",
        lower_is_better: false,
        chat_only: false,
    },
    Row {
        name: "resume",
        label: "resume: 1,000 JSON clients reconnect at once, fetch a 100-event gap after the seq they saw: first connect to last page",
        metric: "/elapsed_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume",
        label: "  same: server CPU",
        metric: "/server/cpu_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume",
        label: "  same: events fetched per client (gap + leaves + joins)",
        metric: "events_per_client",
        unit: "",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume",
        label: "  same: connects that overflowed the accept queue (1 s SYN retry)",
        metric: "/resume/listen_overflows",
        unit: "",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume-gated",
        label: "resume, reconnecting 64 at a time: first connect to last page",
        metric: "/elapsed_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume-gated",
        label: "  same: server CPU",
        metric: "/server/cpu_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume-after-leaves",
        label: "resume after the clients' leaves (gap = 100 + joins): first connect to last page",
        metric: "/elapsed_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "resume-after-leaves",
        label: "  same: server CPU",
        metric: "/server/cpu_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "idle-ping",
        label: "idle room, 2,000 JSON clients, ping every 10 s, 30 s: server CPU",
        metric: "/server/cpu_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "idle-ping",
        label: "  same: bytes sent by the server",
        metric: "/idle/bytes_from_server",
        unit: "MB",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "idle-who",
        label: "idle room, same with the old who every 10 s: server CPU",
        metric: "/server/cpu_s",
        unit: "s",
        lower_is_better: true,
        chat_only: true,
    },
    Row {
        name: "idle-who",
        label: "  same: bytes sent by the server",
        metric: "/idle/bytes_from_server",
        unit: "MB",
        lower_is_better: true,
        chat_only: true,
    },
];

fn scaled(unit: &str, value: f64) -> f64 {
    match unit {
        "M/s" => value / 1e6,
        "ms" => value / 1e3,
        "%" => value * 100.0,
        "MiB" => value / 1024.0,
        "k/s" => value / 1e3,
        "MB" => value / 1e6,
        _ => value,
    }
}

fn metric_of(report: &Value, metric: &str) -> Option<f64> {
    if metric == "rss_growth" {
        let peak = report.pointer("/server/rss_peak_kib")?.as_f64()?;
        let baseline = report.pointer("/server/rss_baseline_kib")?.as_f64()?;
        return Some(peak - baseline);
    }
    if metric == "events_per_client" {
        let events = report.pointer("/resume/events_fetched")?.as_f64()?;
        let clients = report.pointer("/resume/clients")?.as_f64()?;
        return (clients > 0.0).then(|| events / clients);
    }
    report.pointer(metric)?.as_f64()
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 {
        "0".to_string()
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

struct Cell {
    values: Vec<f64>,
    failures: Vec<String>,
}

impl Cell {
    fn median(&self) -> Option<f64> {
        (!self.values.is_empty()).then(|| median(&self.values))
    }

    fn render(&self, unit: &str) -> String {
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        let mut out = match self.median() {
            Some(m) => {
                let (min, max) = (self.values[0], self.values[self.values.len() - 1]);
                if self.values.len() > 1 {
                    format!(
                        "{}{unit} ({}–{})",
                        format_value(m),
                        format_value(min),
                        format_value(max)
                    )
                } else {
                    format!("{}{unit}", format_value(m))
                }
            }
            None => "—".to_string(),
        };
        if !self.failures.is_empty() {
            let _ = write!(
                out,
                " [{} of {} failed: {}]",
                self.failures.len(),
                self.failures.len() + self.values.len(),
                self.failures[0]
            );
        }
        out
    }
}

fn short_error(report: &Value) -> Option<String> {
    if let Some(error) = report.get("error").and_then(Value::as_str) {
        let lower = error.to_lowercase();
        let short = if lower.contains("connection refused") || lower.contains("reset") {
            "server died"
        } else if lower.contains("closed") || lower.contains("disconnected") {
            "server closed clients"
        } else if lower.contains("timed out") || lower.contains("overran") {
            "timed out"
        } else {
            error
        };
        return Some(short.to_string());
    }
    if report.get("completed").and_then(Value::as_bool) == Some(false) {
        return Some("incomplete".into());
    }
    None
}

/// The markdown table for `lines` (JSON lines as run-all.sh writes them).
pub fn table(lines: &str, targets: &[&str]) -> String {
    let records: Vec<Value> = lines
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    // Ratio columns only when redis ran: each target but redis, divided by redis.
    let has_redis = targets.contains(&"redis");
    let ratioed: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| has_redis && *t != "redis")
        .collect();
    // The cluster beside the single node it replaces, when both ran.
    let cluster_ratio = targets.contains(&"chat") && targets.contains(&"chat-cluster");
    let mut out = String::new();
    let _ = write!(out, "| scenario |");
    for target in targets {
        let _ = write!(out, " {target} |");
    }
    for target in &ratioed {
        let _ = write!(out, " {target} ÷ redis |");
    }
    if cluster_ratio {
        out.push_str(" chat-cluster ÷ chat |");
    }
    out.push('\n');
    let _ = write!(out, "|---|");
    for _ in 0..targets.len() + ratioed.len() + usize::from(cluster_ratio) {
        out.push_str("---|");
    }
    out.push('\n');
    for row in ROWS {
        // A session that ran a subset of the rows gets a table of that subset.
        if !records
            .iter()
            .any(|r| r.get("row").and_then(Value::as_str) == Some(row.name))
        {
            continue;
        }
        let mut cells: BTreeMap<&str, Cell> = BTreeMap::new();
        for target in targets {
            let mut cell = Cell {
                values: Vec::new(),
                failures: Vec::new(),
            };
            for record in records.iter().filter(|r| {
                r.get("row").and_then(Value::as_str) == Some(row.name)
                    && r.get("target").and_then(Value::as_str) == Some(target)
            }) {
                let report = record.get("report").unwrap_or(&Value::Null);
                let value = metric_of(report, row.metric);
                // A slow-consumer run that timed out still has its fraction: that is the figure.
                let died = record.get("server_alive").and_then(Value::as_bool) == Some(false);
                let failure = if row.name == "slow-consumer" && value.is_some() {
                    None
                } else {
                    short_error(report).map(|e| if died { "server died".into() } else { e })
                };
                match (failure, value) {
                    (None, Some(v)) => cell.values.push(scaled(row.unit, v)),
                    (Some(f), _) => cell.failures.push(f),
                    (None, None) => cell.failures.push("no figure".into()),
                }
            }
            cell.values.sort_by(f64::total_cmp);
            cells.insert(target, cell);
        }
        let _ = write!(out, "| {} |", row.label);
        // chat-base is another build of our server, possibly from before the room log.
        let not_applicable =
            |target: &str| row.chat_only && (!target.starts_with("chat") || target == "chat-base");
        for target in targets {
            if not_applicable(target) {
                out.push_str(" n/a |");
            } else {
                let _ = write!(out, " {} |", cells[target].render(row.unit));
            }
        }
        let redis = cells.get("redis").and_then(Cell::median);
        for target in &ratioed {
            let ratio = match (cells[target].median(), redis) {
                (Some(m), Some(r)) if r != 0.0 => format!("{:.2}×", m / r),
                _ => "—".into(),
            };
            let _ = write!(out, " {ratio} |");
        }
        if cluster_ratio {
            let ratio = match (cells["chat-cluster"].median(), cells["chat"].median()) {
                (Some(c), Some(s)) if s != 0.0 => format!("{:.2}×", c / s),
                _ => "—".into(),
            };
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
    }
    // Correctness over every run of every row.
    let _ = write!(out, "| lost / duplicated / reordered, all runs |");
    for target in targets {
        let (mut lost, mut dup, mut reordered, mut runs) = (0u64, 0u64, 0u64, 0);
        for record in records
            .iter()
            .filter(|r| r.get("target").and_then(Value::as_str) == Some(target))
        {
            let report = record.get("report").unwrap_or(&Value::Null);
            let get = |key: &str| report.get(key).and_then(Value::as_u64).unwrap_or(0);
            // Losses of a slow-consumer run are the row above; here count only the rest.
            if record.get("row").and_then(Value::as_str) != Some("slow-consumer") {
                lost += get("lost");
            }
            dup += get("duplicated");
            reordered += get("reordered");
            runs += 1;
        }
        let _ = write!(out, " {lost} / {dup} / {reordered} ({runs} runs) |");
    }
    for _ in 0..ratioed.len() + usize::from(cluster_ratio) {
        out.push_str(" |");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ranges_failures_and_ratios() {
        let lines = [
            r#"{"row":"fanout-w32","rep":1,"target":"chat","report":{"server":{"cpu_us_per_delivery":0.3}}}"#,
            r#"{"row":"fanout-w32","rep":2,"target":"chat","report":{"server":{"cpu_us_per_delivery":0.1}}}"#,
            r#"{"row":"fanout-w32","rep":3,"target":"chat","report":{"server":{"cpu_us_per_delivery":0.2}}}"#,
            r#"{"row":"fanout-w32","rep":1,"target":"redis","report":{"server":{"cpu_us_per_delivery":0.1}}}"#,
            r#"{"row":"fanout-w32","rep":1,"target":"go","report":{"error":"connecting: Connection refused"}}"#,
        ]
        .join("\n");
        let table = table(&lines, &["chat", "go", "redis"]);
        let row = table
            .lines()
            .find(|l| l.starts_with("| fanout C=100 K=10 M=2000 W=32"))
            .expect("the row");
        assert!(row.contains("0.200 µs (0.100–0.300)"), "{row}");
        assert!(row.contains("[1 of 1 failed: server died]"), "{row}");
        assert!(row.contains("2.00×"), "{row}");
    }

    #[test]
    fn the_cluster_is_divided_by_the_single_node() {
        let lines = [
            r#"{"row":"latency","rep":1,"target":"chat","report":{"latency":{"p99_us":1000.0}}}"#,
            r#"{"row":"latency","rep":1,"target":"chat-cluster","report":{"latency":{"p99_us":1500.0}}}"#,
        ]
        .join("\n");
        let table = table(&lines, &["chat", "chat-cluster"]);
        assert!(table.contains("| chat-cluster ÷ chat |"), "{table}");
        let row = table
            .lines()
            .find(|l| l.starts_with("| latency"))
            .expect("the row");
        assert!(row.ends_with("| 1.50× |"), "{row}");
        let widths: Vec<usize> = table.lines().map(|l| l.matches('|').count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
    }

    #[test]
    fn chat_only_rows_are_not_applicable_elsewhere() {
        let lines = [
            r#"{"row":"resume","rep":1,"target":"chat","report":{"completed":true,"elapsed_s":1.5,"server":{"cpu_s":0.5},"resume":{"clients":10,"events_fetched":250}}}"#,
            r#"{"row":"resume","rep":1,"target":"chat-mem","report":{"completed":false,"elapsed_s":9.0}}"#,
        ]
        .join("\n");
        let table = table(&lines, &["chat", "chat-mem", "redis"]);
        let rows: Vec<&str> = table.lines().filter(|l| l.contains("resume")).collect();
        assert!(rows[0].contains("| 1.50 s |"), "{}", rows[0]);
        assert!(
            rows[0].contains("[1 of 1 failed: incomplete]"),
            "{}",
            rows[0]
        );
        assert!(rows[0].contains("| n/a |"), "{}", rows[0]);
        let per_client = table
            .lines()
            .find(|l| l.contains("events fetched per client"))
            .expect("the row");
        assert!(per_client.contains("| 25.0 |"), "{per_client}");
    }
}
