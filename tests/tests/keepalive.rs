//! Keepalive for programs: JSON `ping` is answered by `pong` (with the ping's token), counts
//! as activity for the idle timeout, and `welcome` tells the client the timeout it must beat.
//! For nc users a line that looks like a ping is just chat.

use chat_protocol::{HELLO_LINE, LeaveReason, ServerEvent};
use chat_server::Config;
use chat_tests::{Client, STEP, ServerProcess, TestServer, said};
use std::time::Duration;

fn idle(timeout: Duration) -> Config {
    Config {
        idle_timeout: timeout,
        ..Config::unlimited()
    }
}

/// Says hello on a fresh connection and returns the raw welcome line.
async fn welcome_line(client: &mut Client) -> String {
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    client.expect(&said(&me, &me, "I am here")).await;
    client.send(HELLO_LINE).await;
    client.line().await
}

/// The exact welcome line for `addr`, its seq read from the line itself.
fn expected_welcome(line: &str, addr: &str, idle_timeout_ms: u64) -> String {
    let value: serde_json::Value = serde_json::from_str(line).expect("welcome is JSON");
    let seq = value["seq"].as_u64().expect("welcome has a numeric seq");
    format!(
        r#"{{"type":"welcome","version":1,"addr":"{addr}","name":"{addr}","idle_timeout_ms":{idle_timeout_ms},"seq":{seq}}}"#
    )
}

#[tokio::test]
async fn ping_is_answered_by_pong_with_the_same_token() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let mut other = server.join_json().await;
    // The bot hears the other join.
    assert!(matches!(bot.event().await, ServerEvent::Join { .. }));

    bot.send(r#"{"type":"ping"}"#).await;
    assert_eq!(bot.line().await, r#"{"type":"pong"}"#);
    bot.send(r#"{"type":"ping","token":"abc"}"#).await;
    assert_eq!(bot.line().await, r#"{"type":"pong","token":"abc"}"#);
    bot.send(r#"{"token":"x y|z","type":"ping"}"#).await;
    assert_eq!(bot.line().await, r#"{"type":"pong","token":"x y|z"}"#);
    // Pongs come back in order, one per ping.
    for i in 0..50 {
        bot.send(&format!(r#"{{"type":"ping","token":"{i}"}}"#))
            .await;
    }
    for i in 0..50 {
        assert_eq!(
            bot.line().await,
            format!(r#"{{"type":"pong","token":"{i}"}}"#)
        );
    }
    // A malformed ping is a bad request, not a pong.
    bot.send(r#"{"type":"ping","token":5}"#).await;
    let refused = bot.line().await;
    assert!(
        refused.starts_with(r#"{"type":"error","code":"bad_request","#),
        "{refused}"
    );

    // Nobody else heard any of it: the other's next event is the bot's chat line.
    bot.send(r#"{"type":"chat","text":"marker"}"#).await;
    match other.event().await {
        ServerEvent::Chat { text, .. } => assert_eq!(text, "marker"),
        event => panic!("the other got {event:?} before the marker"),
    }
    server.stop().await;
}

#[tokio::test]
async fn pings_alone_keep_a_json_client_past_many_idle_timeouts() {
    let timeout = Duration::from_millis(500);
    let server = TestServer::with_config(idle(timeout)).await;
    let mut watcher = server.join_json().await;
    let mut bot = server.join_json().await;
    let b = bot.addr.clone();
    assert!(matches!(watcher.event().await, ServerEvent::Join { .. }));
    // The watcher keeps itself alive by the same means throughout, and reports how the
    // bot left.
    let watch = tokio::spawn(async move {
        loop {
            tokio::time::sleep(timeout / 5).await;
            watcher.send(r#"{"type":"ping"}"#).await;
            match watcher.event().await {
                ServerEvent::Pong { token: None } => {}
                ServerEvent::Leave { addr, reason, .. } => return (addr, reason),
                event => panic!("the watcher got {event:?}"),
            }
        }
    });

    // A ping every 100 ms (the pause is the behaviour under test: a client's keepalive
    // period), for five timeouts. Each ping is answered, and nothing else arrives.
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < timeout * 5 {
        tokio::time::sleep(timeout / 5).await;
        bot.send(r#"{"type":"ping"}"#).await;
        assert_eq!(bot.line().await, r#"{"type":"pong"}"#, "ping {pings}");
        pings += 1;
    }
    assert!(pings >= 20, "{pings} pings");

    // Once the bot stops, the timeout comes, no sooner than the timeout after its last ping.
    let last_ping = tokio::time::Instant::now();
    let rest = bot.expect_closed().await;
    assert!(last_ping.elapsed() >= timeout, "{:?}", last_ping.elapsed());
    assert_eq!(
        rest,
        vec![
            r#"{"type":"notice","code":"idle_timeout","message":"no complete line for 500ms: disconnected for idling"}"#
                .to_string()
        ]
    );
    let (addr, reason) = tokio::time::timeout(STEP, watch)
        .await
        .expect("the watcher hears the bot leave")
        .expect("watcher task");
    assert_eq!((addr, reason), (b, LeaveReason::Timeout));
    server.stop().await;
}

#[tokio::test]
async fn welcome_says_the_idle_timeout_in_milliseconds() {
    for (timeout, ms) in [
        (Duration::from_secs(30), 30_000),
        (Duration::from_millis(1500), 1500),
        (Duration::ZERO, 0),
    ] {
        let server = TestServer::with_config(idle(timeout)).await;
        let mut bot = server.connect().await;
        let line = welcome_line(&mut bot).await;
        assert_eq!(line, expected_welcome(&line, &bot.addr, ms));
        server.stop().await;
    }
    // The library's default is the binary's default: 30 s.
    let server = TestServer::start().await;
    let mut bot = server.connect().await;
    let line = welcome_line(&mut bot).await;
    assert_eq!(line, expected_welcome(&line, &bot.addr, 30_000));
    server.stop().await;
}

#[tokio::test]
async fn welcome_follows_the_binarys_idle_timeout_flag() {
    for (args, ms) in [
        (&[][..], 30_000),
        (&["--idle-timeout", "2m"][..], 120_000),
        (&["--idle-timeout", "0"][..], 0),
    ] {
        let server = ServerProcess::start(args);
        let mut bot = server.connect().await;
        let line = welcome_line(&mut bot).await;
        assert_eq!(line, expected_welcome(&line, &bot.addr, ms), "{args:?}");
    }
}

#[tokio::test]
async fn in_plain_mode_a_ping_line_is_chat() {
    let server = TestServer::start().await;
    let mut watcher = server.join().await;
    let mut nc = server.connect().await;
    let n = nc.addr.clone();
    nc.expect(&said(&n, &n, "login")).await;
    nc.expect(&said(&n, &n, "I am here")).await;
    watcher.expect(&said(&n, &n, "login")).await;
    // As the first line, and as any later one: chat, to everyone, and no pong.
    for line in [
        r#"{"type":"ping"}"#,
        r#"{"type":"ping","token":"abc"}"#,
        r#"{"type":"ping"}"#,
    ] {
        nc.send(line).await;
        nc.expect(&said(&n, &n, line)).await;
        watcher.expect(&said(&n, &n, line)).await;
    }
    // The connection stayed plain: `who` answers in text.
    nc.send("who").await;
    nc.expect("user list:").await;
    server.stop().await;
}
