//! Rude and broken clients: slow readers, floods, connection limits, churn. Each test fails
//! without the protection it is named after. Memory and signal tests use the real binary:
//! `process.rs`.

use chat_protocol::{HELLO_LINE, LeaveReason, ServerEvent};
use chat_server::Config;
use chat_tests::{Client, Received, TestServer, assert_complete, exchange, said, unstamped};
use std::time::Duration;

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_the_others_get_everything() {
    let server = TestServer::with_config(Config {
        sendq_bytes: 64 * 1024,
        ..Config::unlimited()
    })
    .await;
    let mut sleeper = server.join().await;
    let s = sleeper.addr.clone();

    // 100,000 messages of 200 bytes: far more than socket buffers and the queue can hold.
    let received = exchange(server.addr, 4, 25_000, 200, 50).await;
    assert_complete(&received, 4, 25_000);
    // Everyone else was told it left, once.
    for Received { others, .. } in &received {
        let leaves = others.iter().filter(|l| l.contains(&s)).collect::<Vec<_>>();
        assert_eq!(leaves, vec![&said(&s, &s, "login out")]);
    }
    // When it reads again, its last line says why it was dropped.
    let rest = sleeper.expect_closed().await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("error: you fell too far behind reading; disconnecting"),
        "{} lines",
        rest.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_flood_is_warned_then_disconnected() {
    let server = TestServer::with_config(Config {
        // Slow enough that no token comes back while the test runs, however loaded the machine.
        rate: 0.01,
        burst: 5,
        ..Config::default()
    })
    .await;
    let mut watcher = server.join().await;
    let mut flooder = server.join().await;
    let f = flooder.addr.clone();
    watcher.skip_until(&said(&f, &f, "login")).await;

    // A burst passes; the next line is dropped with a warning.
    let lines: String = (0..6).map(|i| format!("line {i}\n")).collect();
    flooder.send_raw(lines.as_bytes()).await;
    for i in 0..5 {
        flooder.expect(&said(&f, &f, &format!("line {i}"))).await;
        watcher.expect(&said(&f, &f, &format!("line {i}"))).await;
    }
    flooder
        .expect(
            "error: you are sending too fast (at most 0.01 lines per second, 5 at once); line dropped",
        )
        .await;
    // Keeping on gets it disconnected; the others hear it left.
    let more: String = (0..20).map(|i| format!("more {i}\n")).collect();
    flooder.send_raw(more.as_bytes()).await;
    let rest = flooder.expect_closed().await;
    assert_eq!(
        rest,
        vec!["error: excess flood: you kept sending too fast; disconnecting".to_string()]
    );
    watcher.expect(&said(&f, &f, "login out")).await;
    server.stop().await;
}

#[tokio::test]
async fn after_a_farewell_the_server_drains_input_instead_of_resetting() {
    let server = TestServer::with_config(Config {
        rate: 0.01,
        burst: 2,
        ..Config::default()
    })
    .await;
    let mut flooder = server.join().await;
    flooder.send_raw(b"1\n2\n3\n4\n5\n6\n").await;
    let rest = flooder.expect_closed().await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("error: excess flood: you kept sending too fast; disconnecting"),
        "{rest:?}"
    );
    // The server has shut down its sending side, but still reads (and discards) what the
    // client sends. A socket closed with unread input would answer with a reset instead,
    // which on a real network throws away a farewell still in flight.
    let mut stream = flooder.into_stream();
    for _ in 0..3 {
        use tokio::io::AsyncWriteExt;
        stream.write_all(b"still typing\n").await.expect("no reset");
        tokio::task::yield_now().await;
    }
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(chat_tests::STEP, stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "expected a clean end of stream, got {read:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_default_rate_lets_a_human_paste_a_paragraph() {
    let server = TestServer::with_config(Config::default()).await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    let paste: String = (0..20).map(|i| format!("pasted line {i}\n")).collect();
    alice.send_raw(paste.as_bytes()).await;
    for i in 0..20 {
        alice
            .expect(&said(&a, &a, &format!("pasted line {i}")))
            .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_zero_burst_means_no_flood_limit() {
    let server = TestServer::with_config(Config {
        rate: 1.0,
        burst: 0,
        ..Config::default()
    })
    .await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    alice.send_raw(lines.as_bytes()).await;
    for i in 0..100 {
        alice.expect(&said(&a, &a, &format!("line {i}"))).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn an_endless_idle_timeout_never_fires_and_never_breaks_the_session() {
    let server = TestServer::with_config(Config {
        idle_timeout: Duration::MAX,
        ..Config::unlimited()
    })
    .await;
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.expect(&said(&b, &b, "login")).await;
    assert_eq!(
        bob.who().await,
        vec![format!("{a}:{a}"), format!("{b}:{b}")]
    );
    server.stop().await;
}

#[tokio::test]
async fn flood_leaves_are_typed_for_programs() {
    let server = TestServer::with_config(Config {
        rate: 0.01,
        burst: 1,
        ..Config::default()
    })
    .await;
    let mut bot = server.join_json().await;
    let mut flooder = server.join().await;
    let f = flooder.addr.clone();
    bot.event().await;
    flooder.send_raw(b"a\nb\nc\nd\n").await;
    flooder.expect_closed().await;
    let leave = loop {
        if let ev @ ServerEvent::Leave { .. } = bot.event().await {
            break ev;
        }
    };
    assert_eq!(
        unstamped(leave),
        ServerEvent::Leave {
            addr: f.clone(),
            name: f,
            reason: LeaveReason::ExcessFlood,
            stamp: None
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_are_refused_with_a_reason() {
    let server = TestServer::with_config(Config {
        max_per_ip: 2,
        rate: 0.0,
        ..Config::default()
    })
    .await;
    let mut first = server.join().await;
    let second = server.join().await;
    let mut third = server.connect().await;
    assert_eq!(
        third.expect_closed().await,
        vec!["error: too many connections from 127.0.0.1 (at most 2)".to_string()]
    );
    // Nobody heard of the refused one, and its place frees up when someone leaves.
    let s = second.addr.clone();
    first.expect(&said(&s, &s, "login")).await;
    drop(second);
    first.expect(&said(&s, &s, "login out")).await;
    let mut fourth = server.connect().await;
    let f = fourth.addr.clone();
    fourth.expect(&said(&f, &f, "login")).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_server_limit_are_refused_with_a_reason() {
    let server = TestServer::with_config(Config {
        max_clients: 3,
        ..Config::unlimited()
    })
    .await;
    let _a = server.join().await;
    let _b = server.join().await;
    let _c = server.join().await;
    let mut d = server.connect().await;
    assert_eq!(
        d.expect_closed().await,
        vec!["error: server full (3 connections); try again later".to_string()]
    );
    server.stop().await;
}

#[tokio::test]
async fn json_errors_quoting_the_sender_are_sanitized() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    bot.send("{\"type\":\"dance\u{202E}\x1b[2J\"}").await;
    let line = bot.line().await;
    assert!(
        !line.contains('\u{202E}') && !line.contains('\x1b') && !line.contains("\\u001b"),
        "{line}"
    );
    assert!(line.contains(r#""code":"bad_request""#), "{line}");
    server.stop().await;
}

#[tokio::test]
async fn json_mode_text_is_sanitized_too() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let mut nc = server.join().await;
    let n = nc.addr.clone();
    bot.event().await;
    nc.send("\x1b[31mred\u{202E}").await;
    // Read the raw line: the escape must not be on the wire at all, not even JSON-escaped.
    let line = bot.line().await;
    assert!(
        !line.contains("\\u001b") && !line.contains('\x1b'),
        "{line}"
    );
    assert_eq!(
        unstamped(ServerEvent::parse_json(&line).expect("json")),
        ServerEvent::Chat {
            addr: n.clone(),
            name: n,
            text: "\u{FFFD}[31mred\u{FFFD}".into(),
            stamp: None
        }
    );
    server.stop().await;
}

/// How one churning client goes away.
#[derive(Clone, Copy, Debug)]
enum Exit {
    Close,
    Reset,
    HalfClose,
    MidLine,
    JsonThenClose,
}

async fn churn_once(server: std::net::SocketAddr, exit: Exit) -> String {
    let mut client = Client::connect(server).await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    match exit {
        Exit::Close => {}
        Exit::Reset => {
            let stream = client.into_stream();
            // A zero linger makes the close a reset. (Deprecated because a non-zero linger
            // blocks the thread on drop; zero never does.)
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(stream);
            return me;
        }
        Exit::HalfClose => client.shutdown_write().await,
        Exit::MidLine => client.send_raw(b"half a li").await,
        Exit::JsonThenClose => client.send(HELLO_LINE).await,
    }
    drop(client);
    me
}

#[tokio::test]
async fn churn_is_announced_exactly_once_and_leaves_nobody_behind() {
    let server = TestServer::with_config(Config::unlimited()).await;
    let mut recorder = server.join().await;
    let mut poller = server.join().await;
    let (r, p) = (recorder.addr.clone(), poller.addr.clone());
    recorder.expect(&said(&p, &p, "login")).await;
    let sentinel = said(&p, &p, "end of churn");
    let record = {
        let sentinel = sentinel.clone();
        tokio::spawn(async move { recorder.skip_until(&sentinel).await })
    };

    let exits = [
        Exit::Close,
        Exit::Reset,
        Exit::HalfClose,
        Exit::MidLine,
        Exit::JsonThenClose,
    ];
    let (cycles, parallel) = (10_000, 50);
    let mut churned = std::collections::HashSet::new();
    for round in 0..cycles / parallel {
        let batch: Vec<_> = (0..parallel)
            .map(|i| tokio::spawn(churn_once(server.addr, exits[(round + i) % exits.len()])))
            .collect();
        for task in batch {
            churned.insert(task.await.expect("churn task"));
        }
    }
    // The server notices the last disconnects a moment after the clients are gone: ask
    // until the room holds just the two observers. Every leave precedes that answer.
    while poller.who().await != vec![format!("{r}:{r}"), format!("{p}:{p}")] {}
    poller.send("end of churn").await;

    // Ports are reused over 10,000 cycles, so count per address: each login is matched by
    // exactly one logout.
    let mut seen: std::collections::HashMap<String, (u32, u32)> = Default::default();
    for line in record.await.expect("recorder") {
        let (addr, text) = line
            .strip_prefix('[')
            .and_then(|l| l.split_once(']'))
            .map(|(addr, rest)| (addr.to_string(), rest.rsplit(": ").next().unwrap_or("")))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let entry = seen.entry(addr).or_default();
        match text {
            "login" => entry.0 += 1,
            "login out" => entry.1 += 1,
            other => panic!("unexpected line {line:?} ({other})"),
        }
    }
    let logins: u32 = seen.values().map(|(logins, _)| logins).sum();
    assert_eq!(logins as usize, cycles);
    for addr in &churned {
        let (logins, logouts) = seen.get(addr).copied().unwrap_or_default();
        assert!(
            logins > 0 && logins == logouts,
            "{addr}: {logins} logins, {logouts} logouts"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_closed_session_that_never_reads_does_not_hold_its_place_forever() {
    let server = TestServer::with_config(Config {
        max_clients: 1,
        sendq_bytes: 0,
        farewell_wait: Duration::from_millis(300),
        ..Config::unlimited()
    })
    .await;
    // Far more echo than socket buffers hold, then end of input, and never read.
    let mut stuck = server.connect().await;
    let line = format!("{}\n", "x".repeat(4000));
    let flood = line.repeat(5000);
    stuck.send_raw(flood.as_bytes()).await;
    stuck.shutdown_write().await;
    // Its place comes free once the flush gives up; until then newcomers are refused.
    let admitted = tokio::time::timeout(chat_tests::STEP, async {
        loop {
            let mut next = server.connect().await;
            let first = next.line().await;
            if !first.starts_with("error: server full") {
                return (first, next.addr.clone());
            }
            next.expect_closed().await;
        }
    });
    let (first, addr) = admitted.await.expect("the place comes free");
    assert_eq!(first, said(&addr, &addr, "login"));
    drop(stuck);
    server.stop().await;
}
