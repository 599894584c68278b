//! The six features of the original, byte for byte, over real TCP: login, `I am here`,
//! broadcast, `who`, `rename|NAME`, logout, and the idle timeout.

use chat_server::Config;
use chat_tests::{Client, TestServer, said};
use std::time::Duration;

#[tokio::test]
async fn login_is_announced_to_everyone_and_the_newcomer_is_told_i_am_here() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bob = server.connect().await;
    let b = bob.addr.clone();
    bob.expect(&said(&b, &b, "login")).await;
    bob.expect(&said(&b, &b, "I am here")).await;
    alice.expect(&said(&b, &b, "login")).await;
    server.stop().await;
}

#[tokio::test]
async fn chat_lines_reach_everyone_including_the_sender() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.expect(&said(&b, &b, "login")).await;

    alice.send("hello, 世界").await;
    alice.expect(&said(&a, &a, "hello, 世界")).await;
    bob.expect(&said(&a, &a, "hello, 世界")).await;
    server.stop().await;
}

#[tokio::test]
async fn who_lists_every_user_as_one_block() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let bob = server.join().await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.expect(&said(&b, &b, "login")).await;

    alice.send("who").await;
    alice.expect("user list:").await;
    alice.expect(&format!("{a}:{a}")).await;
    alice.expect(&format!("{b}:{b}")).await;
    server.stop().await;
}

#[tokio::test]
async fn who_block_is_never_interleaved_with_broadcasts() {
    let server = TestServer::start().await;
    let mut watcher = server.join().await;
    let mut talker = server.join().await;
    let t = talker.addr.clone();
    watcher.skip_until(&said(&t, &t, "login")).await;
    // Broadcasts race with many `who` answers; every block must stay whole.
    let chatter = tokio::spawn(async move {
        for i in 0..200 {
            talker.send(&format!("line {i}")).await;
        }
        talker
    });
    for _ in 0..50 {
        watcher.send("who").await;
    }
    let (mut lists, mut chats) = (0, 0);
    while lists < 50 || chats < 200 {
        let line = watcher.line().await;
        if line == "user list:" {
            lists += 1;
            for _ in 0..2 {
                let entry = watcher.line().await;
                assert!(
                    !entry.starts_with('['),
                    "broadcast inside a who block: {entry}"
                );
            }
        } else if line.starts_with('[') {
            chats += 1;
        }
    }
    drop(chatter.await);
    server.stop().await;
}

#[tokio::test]
async fn rename_answers_ok_and_later_lines_carry_the_new_name() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.expect(&said(&b, &b, "login")).await;

    alice.send("rename|mike").await;
    alice.expect("rename ok").await;
    alice.send("hi").await;
    alice.expect(&said(&a, "mike", "hi")).await;
    bob.expect(&said(&a, "mike", "hi")).await;
    assert_eq!(
        bob.who().await,
        vec![format!("{a}:mike"), format!("{b}:{b}")]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_user_who_disconnects_is_announced_to_the_others() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let b = bob.addr.clone();
    alice.expect(&said(&b, &b, "login")).await;
    bob.send("rename|bob").await;
    bob.expect("rename ok").await;

    drop(bob);
    alice.expect(&said(&b, "bob", "login out")).await;
    assert_eq!(alice.who().await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn half_closed_client_gets_its_answer_then_leaves() {
    // `printf 'who\n' | nc -N host port`: the request, then end of input.
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let b = bob.addr.clone();
    alice.expect(&said(&b, &b, "login")).await;
    bob.send("who").await;
    bob.shutdown_write().await;
    bob.expect("user list:").await;
    assert_eq!(bob.expect_closed().await.len(), 2);
    alice.expect(&said(&b, &b, "login out")).await;
    server.stop().await;
}

fn idle(timeout: Duration) -> Config {
    Config {
        idle_timeout: timeout,
        rate: 0.0,
        ..Config::default()
    }
}

#[tokio::test]
async fn idle_user_is_told_disconnected_and_announced_as_timed_out() {
    let server = TestServer::with_config(idle(Duration::from_millis(700))).await;
    // The idler joins first, so it times out before Alice, who then hears of it.
    let mut idler = server.join().await;
    let mut alice = server.join().await;
    let i = idler.addr.clone();

    let rest = idler.expect_closed().await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("notice: no complete line for 700ms: disconnected for idling"),
        "{rest:?}"
    );
    alice.expect(&said(&i, &i, "time out leave out")).await;
    server.stop().await;
}

#[tokio::test]
async fn any_complete_line_counts_as_activity() {
    let timeout = Duration::from_secs(2);
    let server = TestServer::with_config(idle(timeout)).await;
    let mut busy = server.join().await;
    let b = busy.addr.clone();
    let mut name = b.clone();
    // who alone, then rename alone, then chat alone, each for longer than the timeout: each
    // kind of line keeps the user online by itself. The pauses are the behaviour under test
    // (a user typing now and then), with room to spare for a loaded machine.
    for kind in ["who", "rename", "chat"] {
        let start = tokio::time::Instant::now();
        let mut renames = 0;
        while start.elapsed() < timeout + timeout / 2 {
            tokio::time::sleep(timeout / 4).await;
            match kind {
                "who" => {
                    busy.send("who").await;
                    busy.expect("user list:").await;
                    busy.expect(&format!("{b}:{name}")).await;
                }
                "rename" => {
                    renames += 1;
                    name = format!("busy{renames}");
                    busy.send(&format!("rename|{name}")).await;
                    busy.expect("rename ok").await;
                }
                _ => {
                    busy.send("still here").await;
                    busy.expect(&said(&b, &name, "still here")).await;
                }
            }
        }
    }
    // A trickle of bytes that never completes a line is not activity.
    busy.send_raw(b"no newline").await;
    let rest = busy.expect_closed().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(rest[0].starts_with("notice: no complete line"), "{rest:?}");
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_after_a_timeout_works() {
    let server = TestServer::with_config(idle(Duration::from_millis(300))).await;
    let mut first = server.join().await;
    first.expect_closed().await;
    let mut again = Client::connect(server.addr).await;
    let me = again.addr.clone();
    again.expect(&said(&me, &me, "login")).await;
    server.stop().await;
}
