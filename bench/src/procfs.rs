//! A process's CPU time and memory from /proc, and our own file descriptor limit.

use std::time::Duration;

/// CPU time (user + system, all threads, live and exited) and resident memory of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// utime + stime from /proc/PID/stat (clock ticks, usually 10 ms).
    pub cpu: Duration,
    /// Sum of the live threads' on-CPU time from /proc/PID/task/*/schedstat (nanoseconds):
    /// a finer cross-check for short runs, blind to threads that have exited.
    pub cpu_schedstat: Option<Duration>,
    pub rss_kib: u64,
}

/// CPU seconds used between two readings; 0 if either is missing.
pub fn cpu_seconds_between(start: Option<Usage>, end: Option<Usage>) -> f64 {
    match (start, end) {
        (Some(s), Some(e)) => e.cpu.saturating_sub(s.cpu).as_secs_f64(),
        _ => 0.0,
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// utime + stime from the text of /proc/PID/stat.
pub fn parse_stat_cpu(stat: &str, ticks_per_second: u64) -> Option<Duration> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onward; utime is field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_second,
    ))
}

/// VmRSS in KiB from the text of /proc/PID/status.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Reads the usage of `pid` ("self" works too via [`usage_of_self`]).
pub fn usage(pid: u32) -> Option<Usage> {
    usage_at(&format!("/proc/{pid}"))
}

/// The usage of several processes summed (CPU, schedstat and RSS); `None` if there are no
/// pids or any of them cannot be read (a dead server must not look cheap).
pub fn usage_sum(pids: &[u32]) -> Option<Usage> {
    let mut total: Option<Usage> = None;
    for &pid in pids {
        let one = usage(pid)?;
        total = Some(match total {
            None => one,
            Some(t) => Usage {
                cpu: t.cpu + one.cpu,
                cpu_schedstat: t.cpu_schedstat.zip(one.cpu_schedstat).map(|(a, b)| a + b),
                rss_kib: t.rss_kib + one.rss_kib,
            },
        });
    }
    total
}

pub fn usage_of_self() -> Option<Usage> {
    usage_at("/proc/self")
}

fn usage_at(dir: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(Usage {
        cpu: parse_stat_cpu(&stat, clock_ticks_per_second())?,
        cpu_schedstat: threads_schedstat(dir),
        rss_kib: parse_status_rss_kib(&status)?,
    })
}

fn threads_schedstat(dir: &str) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("{dir}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(Duration::from_nanos(total))
}

/// True while `pid` runs (a zombie, dead but not yet reaped, is not alive).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// `TcpExt: ListenOverflows` from the text of /proc/net/netstat: connections dropped because
/// a listening socket's accept queue was full (the client retries its SYN after 1 s).
pub fn parse_listen_overflows(netstat: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|name| name == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The system-wide count of accept-queue overflows (of every listener in this network
/// namespace, not only the server's).
pub fn listen_overflows() -> Option<u64> {
    parse_listen_overflows(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// Raises our soft limit on open files to the hard limit: a thousand clients need a
/// thousand sockets (two for redis senders).
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let mut raised = limit;
            raised.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_skips_odd_command_names() {
        let stat = "1234 (tokio) runtime) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 200 300";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(4321));
    }

    #[test]
    fn netstat_listen_overflows() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                       TcpExt: 0 37162 37163\n\
                       IpExt: InNoRoutes\n\
                       IpExt: 0\n";
        assert_eq!(parse_listen_overflows(netstat), Some(37162));
        assert_eq!(parse_listen_overflows("IpExt: a\nIpExt: 1\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let usage = usage_of_self().expect("/proc/self is readable");
        assert!(usage.rss_kib > 0);
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX));
    }

    #[test]
    fn usage_sums_over_pids() {
        let me = std::process::id();
        assert_eq!(usage_sum(&[]), None);
        assert_eq!(usage_sum(&[me, u32::MAX]), None);
        let one = usage_sum(&[me]).expect("readable");
        let two = usage_sum(&[me, me]).expect("readable");
        // Our own RSS and CPU move between the reads: twice one, give or take.
        assert!(two.rss_kib >= one.rss_kib * 2 - one.rss_kib / 2);
        assert!(two.cpu >= one.cpu);
    }
}
