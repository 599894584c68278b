//! The `chat-bench` command line: parses flags, builds the runtime, runs one scenario and
//! prints its report (human summary on stderr, or JSON on stdout with `--json`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use chat_bench::idle::{IdlePlan, Keepalive};
use chat_bench::resume::{ResumeFrom, ResumePlan};
use chat_bench::scenario::{self, Broadcast, Env, Pacing};
use chat_bench::{Report, Target};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load generator for chat-server, the Go original and redis pub/sub"
)]
struct Cli {
    /// Server under test.
    #[arg(long, value_enum, default_value_t = Target::Chat)]
    target: Target,
    /// With --target chat: use the JSON protocol instead of plain lines.
    #[arg(long)]
    json_mode: bool,
    /// Server address; only loopback addresses are accepted. Repeat it (or give a comma
    /// list) for a cluster's nodes: clients are spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8000")]
    addr: Vec<SocketAddr>,
    /// The server's pid, to report its CPU time per delivery and its RSS from /proc. Repeat
    /// it (or give a comma list) for a cluster's nodes and its Redis: CPU and RSS are summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Bound on the whole run (connect, settle, measure), e.g. 20s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Runtime worker threads for the bench itself (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Connections opened at once while joining [default: 64; 1 for the Go original, whose
    /// unsynchronised map crashes on concurrent joins].
    #[arg(long)]
    connect_concurrency: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// C clients connected, K of them send M messages each, at most W in flight per sender.
    Fanout {
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: usize,
        #[arg(short = 'k', long, default_value_t = 10)]
        senders: u32,
        #[arg(short = 'm', long, default_value_t = 2000)]
        messages: u64,
        /// Sent but not yet received back by the sender itself.
        #[arg(short = 'w', long, default_value_t = 32)]
        window: u32,
    },
    /// C clients, one sender at a fixed rate: latency percentiles.
    Latency {
        #[arg(short = 'c', long, default_value_t = 100)]
        clients: usize,
        /// Messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// N idle connections, all joined: server RSS per connection.
    Connections {
        #[arg(short = 'n', long, default_value_t = 5000)]
        connections: usize,
    },
    /// One client never reads while K senders send: healthy clients must get everything.
    SlowConsumer {
        /// Clients, the slow one included.
        #[arg(short = 'c', long, default_value_t = 10)]
        clients: usize,
        #[arg(short = 'k', long, default_value_t = 5)]
        senders: u32,
        #[arg(short = 'm', long, default_value_t = 40000)]
        messages: u64,
        #[arg(short = 'w', long, default_value_t = 32)]
        window: u32,
        /// The slow client's SO_RCVBUF, so its backlog piles up in the server.
        #[arg(long, default_value_t = 4096)]
        slow_recv_buffer: u32,
    },
    /// Connect–join–close cycles while C clients stay connected.
    Churn {
        #[arg(short = 'c', long, default_value_t = 10)]
        clients: usize,
        /// Workers cycling at once.
        #[arg(short = 'p', long, default_value_t = 4)]
        parallel: usize,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// C JSON clients leave, G events happen, all C reconnect at once and page `history`
    /// after the last seq they saw until `more` is false (chat-server only).
    Resume {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        /// Events put into the room while the clients are away.
        #[arg(long, default_value_t = 100)]
        gap: u64,
        /// `limit` of each history request (the server caps it at 500).
        #[arg(long, default_value_t = 500)]
        limit: u32,
        /// Resume after the seq each client saw (`seen`: the gap holds the clients' own C
        /// leaves too), or after the last of those leaves (`after-leaves`).
        #[arg(long, value_enum, default_value_t = ResumeFrom::Seen)]
        from: ResumeFrom,
        /// Connects opened at once when they come back (0: all at once).
        #[arg(long, default_value_t = 0)]
        reconnect_concurrency: usize,
    },
    /// N idle JSON clients keep alive with `ping` (or the old chat-tui's `who`) for a
    /// window: server CPU and bytes sent (chat-server only).
    IdleRoom {
        #[arg(short = 'c', long, default_value_t = 2000)]
        clients: usize,
        #[arg(long, value_enum, default_value_t = Keepalive::Ping)]
        keepalive: Keepalive,
        /// The measured window, after everyone joined.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Keepalive period [default: ping: the welcome's idle timeout / 3; who: 10s].
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
    },
    /// Print the markdown table of a run-all.sh results file (JSON lines); runs nothing.
    Summarize {
        results: std::path::PathBuf,
        /// Columns, in order.
        #[arg(long, value_delimiter = ',', default_value = "chat,go,redis")]
        targets: Vec<String>,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Fanout { .. } => "fanout",
            Scenario::Latency { .. } => "latency",
            Scenario::Connections { .. } => "connections",
            Scenario::SlowConsumer { .. } => "slow-consumer",
            Scenario::Churn { .. } => "churn",
            Scenario::Resume { .. } => "resume",
            Scenario::IdleRoom { .. } => "idle-room",
            Scenario::Summarize { .. } => "summarize",
        }
    }
}

async fn run(cli: &Cli, env: &Env) -> anyhow::Result<Report> {
    let name = cli.scenario.name();
    match cli.scenario {
        Scenario::Fanout {
            clients,
            senders,
            messages,
            window,
        } => {
            let plan = Broadcast {
                clients,
                senders,
                messages,
                pacing: Pacing::Window(window),
                slow_consumer: None,
            };
            scenario::broadcast(env, name, &plan).await
        }
        Scenario::Latency {
            clients,
            rate,
            duration,
        } => {
            if !rate.is_finite() || rate <= 0.0 {
                bail!("--rate must be positive");
            }
            let plan = Broadcast {
                clients,
                senders: 1,
                messages: (rate * duration.as_secs_f64()).ceil() as u64,
                pacing: Pacing::Rate(rate),
                slow_consumer: None,
            };
            scenario::broadcast(env, name, &plan).await
        }
        Scenario::Connections { connections } => scenario::connections(env, connections).await,
        Scenario::SlowConsumer {
            clients,
            senders,
            messages,
            window,
            slow_recv_buffer,
        } => {
            if clients < senders as usize + 1 {
                bail!("slow-consumer needs more clients than senders (the last one is slow)");
            }
            let plan = Broadcast {
                clients,
                senders,
                messages,
                pacing: Pacing::Window(window),
                slow_consumer: Some(slow_recv_buffer),
            };
            scenario::broadcast(env, name, &plan).await
        }
        Scenario::Churn {
            clients,
            parallel,
            duration,
        } => scenario::churn(env, clients, parallel, duration).await,
        Scenario::Resume {
            clients,
            gap,
            limit,
            from,
            reconnect_concurrency,
        } => {
            let plan = ResumePlan {
                clients,
                gap,
                limit,
                from,
                reconnect_concurrency,
            };
            chat_bench::resume::resume(env, &plan).await
        }
        Scenario::IdleRoom {
            clients,
            keepalive,
            duration,
            every,
        } => {
            if every.is_some_and(|e| e.is_zero()) {
                bail!("--every must be above zero");
            }
            let plan = IdlePlan {
                clients,
                keepalive,
                duration,
                every,
            };
            chat_bench::idle::idle_room(env, &plan).await
        }
        Scenario::Summarize { .. } => bail!("summarize runs no scenario"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::Summarize { results, targets } = &cli.scenario {
        return match std::fs::read_to_string(results) {
            Ok(lines) => {
                let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
                print!("{}", chat_bench::summary::table(&lines, &targets));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", results.display());
                ExitCode::FAILURE
            }
        };
    }
    if cli.addr.iter().any(|addr| !addr.ip().is_loopback()) {
        eprintln!("chat-bench only loads servers on this machine: use a 127.0.0.1 address");
        return ExitCode::from(2);
    }
    let target = match (cli.target, cli.json_mode) {
        (Target::Chat, true) => Target::ChatJson,
        (_, true) => {
            eprintln!("--json-mode applies to --target chat only");
            return ExitCode::from(2);
        }
        (target, false) => target,
    };
    let fd_limit = chat_bench::procfs::raise_fd_limit();
    let env = Env {
        addrs: cli.addr.clone(),
        target,
        server_pids: cli.server_pid.clone(),
        timeout: cli.timeout,
        connect_concurrency: cli.connect_concurrency.unwrap_or(if target == Target::Go {
            1
        } else {
            64
        }),
    };
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The timeout bounds every phase inside; this outer bound also covers teardown.
    let outcome = runtime.block_on(async {
        tokio::time::timeout(cli.timeout + Duration::from_secs(10), run(&cli, &env)).await
    });
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => Report {
            scenario: cli.scenario.name().into(),
            target: target.to_string(),
            error: Some(format!("{error:#}")),
            notes: vec![format!("bench fd limit {fd_limit}")],
            ..Report::default()
        },
        Err(_) => Report {
            scenario: cli.scenario.name().into(),
            target: target.to_string(),
            error: Some("the run overran its timeout".into()),
            ..Report::default()
        },
    };
    // Dropping the runtime would wait for blocked tasks; the report is out, so stop now.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if cli.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("cannot serialize the report: {e}"),
        }
    }
    eprint!("{}", report.human());
    if report.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
