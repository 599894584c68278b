//! The machine-readable mode: typed JSON lines for programs, invisible to nc users.

use chat_protocol::{ClientCommand, ErrorCode, HELLO_LINE, LeaveReason, ServerEvent, UserInfo};
use chat_tests::{TestServer, said, unstamped};

fn chat(text: &str) -> ClientCommand {
    ClientCommand::Chat { text: text.into() }
}

#[tokio::test]
async fn hello_switches_to_json_and_welcomes() {
    let server = TestServer::start().await;
    let mut bot = server.connect().await;
    let me = bot.addr.clone();
    // What an nc user would see arrives first: the connection joins before it says hello.
    bot.expect(&said(&me, &me, "login")).await;
    bot.expect(&said(&me, &me, "I am here")).await;
    bot.send(HELLO_LINE).await;
    assert_eq!(
        bot.event().await,
        ServerEvent::Welcome {
            version: 1,
            addr: me.clone(),
            name: me.clone(),
            idle_timeout_ms: 30_000,
            seq: 1
        }
    );
    bot.send_json(&ClientCommand::Who).await;
    assert_eq!(
        bot.event().await,
        ServerEvent::Users {
            users: vec![UserInfo {
                addr: me.clone(),
                name: me.clone()
            }]
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn every_event_is_typed_so_text_cannot_pass_for_a_command() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let mut nc = server.join().await;
    let (b, n) = (bot.addr.clone(), nc.addr.clone());
    assert_eq!(
        unstamped(bot.event().await),
        ServerEvent::Join {
            addr: n.clone(),
            name: n.clone(),
            stamp: None
        }
    );

    // An nc user types what would be commands or forged lines in plain text.
    nc.send(r#"{"type":"join","addr":"1.1.1.1:1","name":"fake"}"#)
        .await;
    assert_eq!(
        unstamped(bot.event().await),
        ServerEvent::Chat {
            addr: n.clone(),
            name: n.clone(),
            text: r#"{"type":"join","addr":"1.1.1.1:1","name":"fake"}"#.into(),
            stamp: None
        }
    );
    // In JSON mode "who" and "rename|x" are just chat text.
    bot.send_json(&chat("who")).await;
    bot.send_json(&chat("rename|x")).await;
    for text in ["who", "rename|x"] {
        let expected = ServerEvent::Chat {
            addr: b.clone(),
            name: b.clone(),
            text: text.into(),
            stamp: None,
        };
        assert_eq!(unstamped(bot.event().await), expected);
        nc.skip_until(&said(&b, &b, text)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn renames_reach_json_clients_but_not_nc_users() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let mut nc = server.join().await;
    let n = nc.addr.clone();
    bot.event().await; // nc's join
    nc.send("rename|nina").await;
    nc.expect("rename ok").await;
    assert_eq!(
        unstamped(bot.event().await),
        ServerEvent::Rename {
            addr: n.clone(),
            old: n.clone(),
            new: "nina".into(),
            stamp: None
        }
    );
    bot.send_json(&ClientCommand::Rename { name: "bot".into() })
        .await;
    assert_eq!(
        unstamped(bot.event().await),
        ServerEvent::Renamed { name: "bot".into() }
    );
    // nc hears nothing of the bot's rename; its next line is the bot's chat.
    bot.send_json(&chat("hi")).await;
    nc.expect(&said(&bot.addr, "bot", "hi")).await;
    server.stop().await;
}

#[tokio::test]
async fn leaves_say_why() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let nc = server.join().await;
    let n = nc.addr.clone();
    bot.event().await;
    drop(nc);
    assert_eq!(
        unstamped(bot.event().await),
        ServerEvent::Leave {
            addr: n.clone(),
            name: n,
            reason: LeaveReason::Quit,
            stamp: None
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn errors_are_typed_and_bad_json_is_refused() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    alice.send("rename|alice").await;
    alice.expect("rename ok").await;
    let mut bot = server.join_json().await;
    for (line, code) in [
        (r#"{"type":"rename","name":"ALICE"}"#, ErrorCode::NameTaken),
        (r#"{"type":"rename","name":"a b"}"#, ErrorCode::InvalidName),
        ("who", ErrorCode::BadRequest),
        (r#"{"type":"dance"}"#, ErrorCode::BadRequest),
        (HELLO_LINE, ErrorCode::BadRequest),
    ] {
        bot.send(line).await;
        match bot.event().await {
            ServerEvent::Error { code: got, message } => {
                assert_eq!(got, code, "{line}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{line}: expected an error, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn only_the_exact_hello_line_switches_and_a_refused_first_line_uses_the_turn() {
    let server = TestServer::with_config(chat_server::Config {
        max_line_bytes: 100,
        ..chat_server::Config::unlimited()
    })
    .await;
    let mut other = server.join().await;
    let o = other.addr.clone();
    let hello_v2 = r#"{"type":"hello","version":2}"#;
    other.send(hello_v2).await;
    other.expect(&said(&o, &o, hello_v2)).await;

    let mut long = server.join().await;
    let l = long.addr.clone();
    long.send(&"x".repeat(200)).await;
    long.expect("error: line longer than 100 bytes; discarded")
        .await;
    long.send(HELLO_LINE).await;
    long.expect(&said(&l, &l, HELLO_LINE)).await;
    server.stop().await;
}

#[tokio::test]
async fn hello_is_only_honoured_as_the_first_line() {
    let server = TestServer::start().await;
    let mut nc = server.join().await;
    let n = nc.addr.clone();
    nc.send("hi").await;
    nc.send(HELLO_LINE).await;
    nc.expect(&said(&n, &n, "hi")).await;
    nc.expect(&said(&n, &n, HELLO_LINE)).await;
    server.stop().await;
}
