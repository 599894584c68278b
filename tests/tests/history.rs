//! The room remembers: every room event has a seq and a ts, the log answers history in both
//! modes, and what any user received survives the server being killed.

use chat_protocol::{ClientCommand, ServerEvent, Stamp};
use chat_server::{Config, HistoryConfig, HistoryDb};
use chat_tests::{Client, STEP, ServerProcess, TestServer, said};
use std::time::Duration;

fn chat(text: &str) -> ClientCommand {
    ClientCommand::Chat { text: text.into() }
}

fn history(before: Option<u64>, after: Option<u64>, limit: Option<u32>) -> ClientCommand {
    ClientCommand::History {
        before,
        after,
        limit,
    }
}

/// A history answer: (events, more, gap).
type Answer = (Vec<ServerEvent>, bool, bool);

/// Sends `command` and reads until its answer, skipping live events.
async fn ask(client: &mut Client, command: &ClientCommand) -> Answer {
    client.send_json(command).await;
    loop {
        if let ServerEvent::History { events, more, gap } = client.event().await {
            return (events, more, gap);
        }
    }
}

fn seqs(events: &[ServerEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.stamp().expect("a stamped event").seq)
        .collect()
}

fn text_of(event: &ServerEvent) -> Option<&str> {
    match event {
        ServerEvent::Chat { text, .. } => Some(text),
        _ => None,
    }
}

/// `2026-12-02T02:41:07.123Z`: RFC 3339, UTC, exactly three decimals.
fn is_ts_millis(ts: &str) -> bool {
    ts.is_ascii()
        && ts.len() == 24
        && ts.as_bytes()[19] == b'.'
        && is_ts_seconds(&format!("{}Z", &ts[..19]))
        && ts[20..23].bytes().all(|c| c.is_ascii_digit())
        && ts.ends_with('Z')
}

/// `2026-12-02T02:41:07Z`: what stands before a plain history line.
fn is_ts_seconds(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn every_room_event_carries_the_next_seq_and_a_ts() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let mut nc = server.join().await;
    nc.send("hello").await;
    nc.send("rename|nina").await;
    nc.expect(&said(&nc.addr.clone(), &nc.addr.clone(), "hello"))
        .await;
    nc.expect("rename ok").await;
    drop(nc);
    let mut stamps = Vec::new();
    for _ in 0..4 {
        let event = bot.event().await;
        let Some(Stamp { seq, ts }) = event.stamp().cloned() else {
            panic!("no stamp on {event:?}");
        };
        assert!(is_ts_millis(&ts), "{ts}");
        stamps.push(seq);
    }
    // The bot's own join was 1, then the nc user's join, chat, rename and leave.
    assert_eq!(stamps, vec![2, 3, 4, 5]);
    server.stop().await;
}

#[tokio::test]
async fn welcome_says_the_newest_seq_and_history_fills_in_before_it() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    for i in 0..5 {
        alice.send(&format!("line {i}")).await;
    }
    let a = alice.addr.clone();
    alice.skip_until(&said(&a, &a, "line 4")).await;
    let mut bot = server.connect().await;
    bot.send(chat_protocol::HELLO_LINE).await;
    let seq = loop {
        let line = bot.line().await;
        if let Ok(ServerEvent::Welcome { seq, .. }) = ServerEvent::parse_json(&line) {
            break seq;
        }
    };
    // alice's join, 5 lines, the bot's join.
    assert_eq!(seq, 7);
    let (events, more, gap) = ask(&mut bot, &history(None, None, Some(3))).await;
    assert_eq!(seqs(&events), vec![5, 6, 7]);
    assert!(more && !gap);
    let (events, more, gap) = ask(&mut bot, &history(Some(5), None, Some(100))).await;
    assert_eq!(seqs(&events), vec![1, 2, 3, 4]);
    assert_eq!(text_of(&events[1]), Some("line 0"));
    assert!(!more && !gap, "the page reaches the first event ever");
    let (events, more, _) = ask(&mut bot, &history(None, Some(2), Some(2))).await;
    assert_eq!(seqs(&events), vec![3, 4]);
    assert!(more);
    let (events, more, gap) = ask(&mut bot, &history(None, Some(7), None)).await;
    assert!(events.is_empty() && !more && !gap);
    server.stop().await;
}

#[tokio::test]
async fn history_events_are_exactly_the_live_lines() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let mut nc = server.join().await;
    nc.send("rename|nina").await;
    nc.send("hi \u{1b}[31m").await;
    let mut live = Vec::new();
    while live.len() < 3 {
        live.push(bot.line().await);
    }
    bot.send_json(&history(Some(5), None, None)).await;
    let answer = loop {
        let line = bot.line().await;
        if line.starts_with(r#"{"type":"history""#) {
            break line;
        }
    };
    // The answer embeds each event byte for byte as it went out live.
    let own_join = answer
        .strip_prefix(r#"{"type":"history","events":["#)
        .expect("history shape");
    let joined = live.join(",");
    assert!(
        own_join.ends_with(&format!(r#"{joined}],"more":false,"gap":false}}"#)),
        "{answer}\nlive: {joined}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_history_requests_are_refused() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    bot.send_json(&history(Some(3), Some(1), None)).await;
    let ServerEvent::Error { message, .. } = bot.event().await else {
        panic!("expected an error");
    };
    assert_eq!(message, "history takes before or after, not both");
    bot.send_json(&history(None, None, Some(0))).await;
    let ServerEvent::Error { message, .. } = bot.event().await else {
        panic!("expected an error");
    };
    assert_eq!(message, "history limit must be at least 1");
    // Over the cap is capped, not refused.
    let (events, more, gap) = ask(&mut bot, &history(None, None, Some(100_000))).await;
    assert_eq!(seqs(&events), vec![1]);
    assert!(!more && !gap);
    server.stop().await;
}

/// Without a limit a page holds 100 events; a larger limit is cut to 500.
#[tokio::test]
async fn history_pages_hold_100_events_by_default_and_500_at_most() {
    let server = TestServer::start().await;
    let mut nc = server.join().await;
    for i in 0..600 {
        nc.send(&format!("line {i}")).await;
    }
    let a = nc.addr.clone();
    nc.skip_until(&said(&a, &a, "line 599")).await;
    // The nc user's join, 600 lines, the bot's join.
    let mut bot = server.join_json().await;
    let (events, more, gap) = ask(&mut bot, &history(None, None, None)).await;
    assert_eq!(seqs(&events), (503..=602).collect::<Vec<_>>());
    assert!(more && !gap);
    let (events, more, gap) = ask(&mut bot, &history(None, None, Some(100_000))).await;
    assert_eq!(seqs(&events), (103..=602).collect::<Vec<_>>());
    assert!(more && !gap);
    let (events, more, _) = ask(&mut bot, &history(None, Some(1), Some(501))).await;
    assert_eq!(seqs(&events), (2..=501).collect::<Vec<_>>());
    assert!(more);
    server.stop().await;
}

#[tokio::test]
async fn plain_history_is_one_block_of_timestamped_lines_without_renames() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send("first").await;
    alice.send("rename|alice").await;
    alice.send("second").await;
    alice.skip_until(&said(&a, "alice", "second")).await;
    alice.send("history|3").await;
    alice.expect("history:").await;
    let mut block = Vec::new();
    for _ in 0..3 {
        block.push(alice.line().await);
    }
    let lines: Vec<&str> = block
        .iter()
        .map(|l| {
            let (ts, line) = l.split_once(' ').expect("ts and line");
            assert!(is_ts_seconds(ts), "{l}");
            line
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            said(&a, &a, "login").as_str(),
            said(&a, &a, "first").as_str(),
            said(&a, "alice", "second").as_str()
        ]
    );
    // `history|` shows up to 20; there are only 3 nc-visible events.
    alice.send("history|").await;
    alice.expect("history:").await;
    for _ in 0..3 {
        alice.line().await;
    }
    alice.send("marker").await;
    alice.expect(&said(&a, "alice", "marker")).await;
    for bad in ["history|0", "history|501", "history|ten"] {
        alice.send(bad).await;
        alice
            .expect("error: history|N takes a number of lines from 1 to 500 (history| shows 20)")
            .await;
    }
    alice.send("history lesson").await;
    alice.expect(&said(&a, "alice", "history lesson")).await;
    server.stop().await;
}

#[tokio::test]
async fn plain_history_stays_one_block_under_a_chat_flood() {
    let server = TestServer::start().await;
    let mut reader = server.join().await;
    let mut flooder = server.join().await;
    let f = flooder.addr.clone();
    for i in 0..50 {
        flooder.send(&format!("early {i}")).await;
    }
    reader.skip_until(&said(&f, &f, "early 49")).await;
    let flood = tokio::spawn(async move {
        for i in 0..2_000 {
            flooder.send(&format!("flood {i}")).await;
        }
        flooder
    });
    reader.send("history|40").await;
    reader.skip_until("history:").await;
    for _ in 0..40 {
        let line = reader.line().await;
        let (ts, rest) = line.split_once(' ').expect("ts and line");
        assert!(is_ts_seconds(ts), "a live line inside the block: {line}");
        assert!(rest.starts_with('['), "{line}");
    }
    drop(flood.await.expect("flooder"));
    server.stop().await;
}

#[tokio::test]
async fn direct_messages_and_errors_are_not_history() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send(&format!("to|{a}|secret")).await;
    alice.expect(&format!("[{a}]{a} -> {a}: secret")).await;
    alice.send("rename|").await;
    alice.line().await;
    alice.send("history|10").await;
    alice.expect("history:").await;
    let only = alice.line().await;
    assert!(only.ends_with(&said(&a, &a, "login")), "{only}");
    alice.send("after").await;
    alice.expect(&said(&a, &a, "after")).await;
    server.stop().await;
}

fn short_retention(max_events: u64, retention: Duration) -> Config {
    Config {
        rate: 0.0,
        history: HistoryConfig {
            db: HistoryDb::Memory,
            retention,
            max_events,
            sweep_every: Duration::from_millis(50),
            ..HistoryConfig::default()
        },
        ..Config::default()
    }
}

/// Asks until `done` holds for the answer (retention runs in the background).
async fn ask_until(
    client: &mut Client,
    command: &ClientCommand,
    done: impl Fn(&Answer) -> bool,
) -> Answer {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let answer = ask(client, command).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest_and_says_gap() {
    let server = TestServer::with_config(short_retention(5, Duration::ZERO)).await;
    let mut bot = server.join_json().await;
    for i in 0..10 {
        bot.send_json(&chat(&format!("m{i}"))).await;
    }
    while text_of(&bot.event().await) != Some("m9") {}
    let (events, more, gap) = ask_until(&mut bot, &history(None, None, Some(100)), |a| {
        a.0.len() == 5
    })
    .await;
    assert_eq!(seqs(&events), vec![7, 8, 9, 10, 11]);
    assert!(!more && gap, "older events existed and are gone");
    // Resuming from before the kept ones says what was lost.
    let (events, _, gap) = ask(&mut bot, &history(None, Some(2), Some(2))).await;
    assert_eq!(seqs(&events), vec![7, 8]);
    assert!(gap);
    let (events, _, gap) = ask(&mut bot, &history(None, Some(8), Some(2))).await;
    assert_eq!(seqs(&events), vec![9, 10]);
    assert!(!gap);
    server.stop().await;
}

#[tokio::test]
async fn retention_by_age_empties_an_idle_room() {
    let server = TestServer::with_config(short_retention(0, Duration::from_millis(200))).await;
    let mut bot = server.join_json().await;
    bot.send_json(&chat("soon gone")).await;
    let (events, more, gap) =
        ask_until(&mut bot, &history(None, None, None), |a| a.0.is_empty()).await;
    assert!(events.is_empty() && !more && gap);
    let (events, _, gap) = ask(&mut bot, &history(None, Some(0), None)).await;
    assert!(events.is_empty() && gap);
    // Seqs go on from where they were, never reused.
    bot.send_json(&chat("new")).await;
    loop {
        let event = bot.event().await;
        if text_of(&event) == Some("new") {
            assert_eq!(event.stamp().map(|s| s.seq), Some(3));
            break;
        }
    }
    server.stop().await;
}

/// A JSON reader that keeps every chat line it receives as (seq, ts, text), until the
/// connection ends (a reset from a killed server included). Says so on `seen` once it has
/// `enough` of them.
async fn collect_json(
    client: Client,
    enough: usize,
    seen: tokio::sync::mpsc::Sender<()>,
) -> Vec<(u64, String, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(client.into_stream());
    let mut got = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match tokio::time::timeout(STEP, reader.read_line(&mut line)).await {
            Ok(Ok(1..)) => {}
            Ok(_) => return got,
            Err(_) => panic!("no line within {STEP:?}"),
        }
        if let Ok(event @ ServerEvent::Chat { .. }) = ServerEvent::parse_json(line.trim_end()) {
            let stamp = event.stamp().cloned().expect("stamped");
            got.push((
                stamp.seq,
                stamp.ts,
                text_of(&event).unwrap_or("").to_string(),
            ));
            if got.len() == enough {
                let _ = seen.try_send(());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_anyone_received_survives_kill_9_and_seq_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("room.sqlite3");
    let db_arg = db.to_str().expect("utf-8 path").to_string();
    let args = ["--rate", "0", "--history-db", db_arg.as_str()];
    let mut server = ServerProcess::start(&args);

    let mut receivers = Vec::new();
    let (seen, mut some_seen) = tokio::sync::mpsc::channel(3);
    for _ in 0..3 {
        let mut client = server.connect().await;
        client.send(chat_protocol::HELLO_LINE).await;
        client.skip_until_prefix(r#"{"type":"welcome""#).await;
        receivers.push(tokio::spawn(collect_json(client, 500, seen.clone())));
    }
    let sender = server.connect().await;
    let sent = 20_000;
    let burst = tokio::spawn(async move {
        let lines: String = (0..sent).map(|i| format!("burst {i}\n")).collect();
        // Whatever the server has not read when it dies is simply never accepted.
        let _ = tokio::time::timeout(STEP, async {
            use tokio::io::AsyncWriteExt;
            let mut stream = sender.into_stream();
            let _ = stream.write_all(lines.as_bytes()).await;
            stream
        })
        .await;
    });
    // Kill it mid-burst: once a receiver has seen some of the burst.
    tokio::time::timeout(STEP, some_seen.recv())
        .await
        .expect("the burst reaches a receiver in time");
    server.kill_9();
    drop(burst);
    let mut received = Vec::new();
    for receiver in receivers {
        received.push(receiver.await.expect("receiver"));
    }
    let newest_received = received
        .iter()
        .flatten()
        .map(|(seq, _, _)| *seq)
        .max()
        .expect("something was received");
    assert!(
        received.iter().all(|r| r.len() < sent as usize),
        "the kill came after the whole burst; nothing was tested"
    );

    // Restart on the same file: every line anyone received is there, unchanged.
    let server = ServerProcess::start(&args);
    let mut bot = server.connect().await;
    bot.send(chat_protocol::HELLO_LINE).await;
    bot.skip_until_prefix(r#"{"type":"welcome""#).await;
    let mut stored = std::collections::BTreeMap::new();
    let mut after = 0;
    loop {
        let (events, more, _) = ask(&mut bot, &history(None, Some(after), Some(500))).await;
        for event in &events {
            let stamp = event.stamp().expect("stamped").clone();
            after = stamp.seq;
            if let Some(text) = text_of(event) {
                stored.insert(stamp.seq, (stamp.ts, text.to_string()));
            }
        }
        if !more {
            break;
        }
    }
    for got in &received {
        for (seq, ts, text) in got {
            assert_eq!(
                stored.get(seq),
                Some(&(ts.clone(), text.clone())),
                "seq {seq} was received but is not in the history as received"
            );
        }
    }
    // Seqs go on after everything stored.
    bot.send_json(&chat("after the crash")).await;
    loop {
        let event = bot.event().await;
        if text_of(&event) == Some("after the crash") {
            let seq = event.stamp().map(|s| s.seq).expect("stamped");
            assert!(seq > after && seq > newest_received, "{seq} after {after}");
            break;
        }
    }
    drop(server);
}

/// Lines that trickle in (one per group) are written ahead (server/src/room_log/ahead.rs)
/// and reach SQLite's tables some milliseconds later: a server killed in between puts them
/// there at its next start, so what anyone received is still all in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_ahead_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("room.sqlite3");
    let db_arg = db.to_str().expect("utf-8 path").to_string();
    let args = ["--rate", "0", "--history-db", db_arg.as_str()];
    let mut server = ServerProcess::start(&args);
    let mut received = Vec::new();
    let recovered_marker = "written ahead before the last stop";
    // The kill must fall while lines wait in the write-ahead file, which holds them for at
    // most 100 ms: it almost always does, and a round that finds nothing to recover (the
    // move to SQLite came just before the kill) is tried again.
    let mut rounds = 0;
    loop {
        assert!(
            rounds < 5,
            "no kill in {rounds} rounds fell while lines were written ahead"
        );
        rounds += 1;
        let mut watcher = server.connect().await;
        watcher.send(chat_protocol::HELLO_LINE).await;
        watcher.skip_until_prefix(r#"{"type":"welcome""#).await;
        let mut sender = server.connect().await;
        // One line at a time, each received before the next is sent: every group is one
        // line, and each goes through the write-ahead file.
        for i in 0..20 {
            let text = format!("trickle {rounds}.{i}");
            sender.send(&text).await;
            loop {
                let event = watcher.event().await;
                if text_of(&event) == Some(text.as_str()) {
                    let stamp = event.stamp().expect("stamped").clone();
                    received.push((stamp.seq, stamp.ts, text));
                    break;
                }
            }
        }
        server.kill_9();
        server = ServerProcess::start(&args);
        if server
            .startup_log
            .iter()
            .any(|line| line.contains(recovered_marker))
        {
            break;
        }
    }
    let mut bot = server.connect().await;
    bot.send(chat_protocol::HELLO_LINE).await;
    bot.skip_until_prefix(r#"{"type":"welcome""#).await;
    let (events, more, gap) = ask(&mut bot, &history(None, Some(0), Some(500))).await;
    assert!(!more && !gap);
    let stored: std::collections::BTreeMap<u64, (String, String)> = events
        .iter()
        .filter_map(|event| {
            let stamp = event.stamp()?;
            Some((stamp.seq, (stamp.ts.clone(), text_of(event)?.to_string())))
        })
        .collect();
    for (seq, ts, text) in &received {
        assert_eq!(
            stored.get(seq),
            Some(&(ts.clone(), text.clone())),
            "seq {seq} was received but is not in the history as received"
        );
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_file_fails_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("room.sqlite3");
    let config = || Config {
        history: HistoryConfig {
            db: HistoryDb::File(db.clone()),
            ..HistoryConfig::default()
        },
        ..Config::default()
    };
    let first = chat_server::Server::open(config()).expect("the first opens");
    let second = chat_server::Server::open(config()).map(|_| ());
    let error = format!("{:#}", second.expect_err("the second must fail"));
    assert!(error.contains("in use by another chat-server"), "{error}");
    drop(first);
}

#[test]
fn a_corrupt_or_unwritable_file_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corrupt = dir.path().join("corrupt.sqlite3");
    std::fs::write(&corrupt, vec![0x5a; 8192]).expect("write");
    let status = std::process::Command::new(chat_tests::server_binary())
        .args(["--listen", "127.0.0.1:0", "--history-db"])
        .arg(&corrupt)
        .output()
        .expect("run");
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("history database") && stderr.contains("corrupt.sqlite3"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing_dir = dir.path().join("no/such/dir/room.sqlite3");
    let status = std::process::Command::new(chat_tests::server_binary())
        .args(["--listen", "127.0.0.1:0", "--history-db"])
        .arg(&missing_dir)
        .output()
        .expect("run");
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("cannot open history database"), "{stderr}");
}

/// The online backup: SIGUSR1 writes `FILE.backup` while the room goes on, and a server
/// started on that copy (the restore) serves the history it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_writes_a_backup_that_a_server_can_be_restored_from() {
    let server = ServerProcess::start(&["--rate", "0"]);
    let mut alice = server.connect().await;
    let a = alice.addr.clone();
    alice.skip_until(&said(&a, &a, "I am here")).await;
    for i in 0..200 {
        alice.send(&format!("before the backup {i}")).await;
    }
    alice
        .skip_until(&said(&a, &a, "before the backup 199"))
        .await;

    server.signal("USR1");
    let logged = server.wait_for_log("history backup written to");
    assert!(logged.contains("history.sqlite3.backup"), "{logged}");
    // The room goes on after it.
    alice.send("after the backup").await;
    alice.skip_until(&said(&a, &a, "after the backup")).await;

    // The copy is a whole room log: a server starts on it and shows what it held.
    let backup = server.dir.path().join("history.sqlite3.backup");
    let backup = backup.to_str().expect("utf-8 path").to_string();
    let restored = ServerProcess::start(&["--history-db", backup.as_str()]);
    let mut bob = restored.connect().await;
    let b = bob.addr.clone();
    bob.skip_until(&said(&b, &b, "I am here")).await;
    bob.send("history|3").await;
    bob.expect("history:").await;
    let mut block = Vec::new();
    for _ in 0..3 {
        let line = bob.line().await;
        let (_, line) = line.split_once(' ').expect("ts and line");
        block.push(line.to_string());
    }
    assert_eq!(
        block,
        vec![
            said(&a, &a, "before the backup 198"),
            said(&a, &a, "before the backup 199"),
            said(&b, &b, "login"),
        ]
    );
}
