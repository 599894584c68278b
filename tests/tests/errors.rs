//! Every error a user can cause gets one clear line back, and never ends the server or
//! anyone else's session.

use chat_server::Config;
use chat_tests::{Client, TestServer, said};

/// After an error, the sender and a bystander both still chat normally.
async fn both_still_work(sender: &mut Client, bystander: &mut Client, name: &str) {
    let s = sender.addr.clone();
    sender.send("still fine").await;
    sender.expect(&said(&s, name, "still fine")).await;
    bystander.skip_until(&said(&s, name, "still fine")).await;
}

#[tokio::test]
async fn bad_renames_are_refused_with_a_reason() {
    let server = TestServer::start().await;
    let mut bob = server.join().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    let cases = [
        ("rename|", "error: rename refused: name must not be empty"),
        (
            "rename|a b",
            "error: rename refused: name must not contain whitespace",
        ),
        (
            "rename|[1.2.3.4:5]x",
            "error: rename refused: name must not contain '['",
        ),
        (
            "rename|x]",
            "error: rename refused: name must not contain ']'",
        ),
        (
            "rename|1.2.3.4:5",
            "error: rename refused: name must not contain ':'",
        ),
        (
            "rename|a|b",
            "error: rename refused: name must not contain '|'",
        ),
        (
            "rename|red\x1b[31m",
            "error: rename refused: name must not contain control or invisible characters (found U+001B)",
        ),
        (
            "rename|evil\u{202E}",
            "error: rename refused: name must not contain control or invisible characters (found U+202E)",
        ),
        (
            "rename|bob\u{E0020}",
            "error: rename refused: name must not contain control or invisible characters (found U+E0020)",
        ),
        (
            "rename|\u{3164}",
            "error: rename refused: name must not contain control or invisible characters (found U+3164)",
        ),
        (
            "rename|\u{0338}x",
            "error: rename refused: name must not start with a combining mark (found U+0338)",
        ),
        (
            "rename|abcdefghijklmnopqrstuvwxyz0123456",
            "error: rename refused: name is 33 characters long; at most 32 are allowed",
        ),
    ];
    for (line, error) in cases {
        alice.send(line).await;
        alice.expect(error).await;
    }
    both_still_work(&mut alice, &mut bob, &a).await;
    server.stop().await;
}

#[tokio::test]
async fn names_are_unique_ignoring_case() {
    let server = TestServer::start().await;
    let mut bob = server.join().await;
    let mut alice = server.join().await;
    bob.send("rename|Bob").await;
    bob.skip_until("rename ok").await;
    alice.send("rename|bOB").await;
    alice
        .expect("error: rename refused: the name bOB is already taken")
        .await;
    // Bob may change the case of his own name; then the old spelling is free again.
    bob.send("rename|BOB").await;
    bob.expect("rename ok").await;
    bob.send("rename|robert").await;
    bob.expect("rename ok").await;
    alice.send("rename|bob").await;
    alice.expect("rename ok").await;
    both_still_work(&mut alice, &mut bob, "bob").await;
    server.stop().await;
}

#[tokio::test]
async fn names_that_look_alike_cannot_both_be_taken() {
    let server = TestServer::start().await;
    let mut bob = server.join().await;
    let mut mallory = server.join().await;
    bob.send("rename|Bob").await;
    bob.skip_until("rename ok").await;
    for look_alike in [
        "b\u{043E}b",               // Cyrillic о
        "\u{0412}ob",               // Cyrillic В, which only capitals share with B
        "\u{FF42}\u{FF4F}\u{FF42}", // fullwidth
        "b0b",                      // zero for o
    ] {
        mallory.send(&format!("rename|{look_alike}")).await;
        mallory
            .expect(&format!(
                "error: rename refused: the name {look_alike} is already taken"
            ))
            .await;
    }
    // Composed and decomposed spellings are one name too.
    bob.send("rename|\u{00E9}mile").await;
    bob.expect("rename ok").await;
    mallory.send("rename|e\u{0301}mile").await;
    mallory
        .expect("error: rename refused: the name e\u{0301}mile is already taken")
        .await;
    // A direct message to a look-alike reaches the one who holds the name.
    mallory.send("to|E\u{0301}MILE|hi").await;
    let m = mallory.addr.clone();
    bob.expect(&format!("[{m}]{m} -> \u{00E9}mile: hi")).await;
    server.stop().await;
}

#[tokio::test]
async fn a_leaving_user_frees_the_name() {
    let server = TestServer::start().await;
    let mut bob = server.join().await;
    bob.send("rename|bob").await;
    bob.expect("rename ok").await;
    drop(bob);
    let mut alice = server.join().await;
    alice.send("rename|bob").await;
    alice.skip_until("rename ok").await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_is_replaced_and_the_sender_told() {
    let server = TestServer::start().await;
    let mut bob = server.join().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send_raw(b"caf\xe9 \xff\n").await;
    alice
        .expect("error: your line was not valid UTF-8; invalid bytes were replaced with U+FFFD")
        .await;
    alice.expect(&said(&a, &a, "caf\u{FFFD} \u{FFFD}")).await;
    bob.skip_until(&said(&a, &a, "caf\u{FFFD} \u{FFFD}")).await;
    both_still_work(&mut alice, &mut bob, &a).await;
    server.stop().await;
}

#[tokio::test]
async fn an_over_long_line_is_refused_and_skipped() {
    let server = TestServer::with_config(Config {
        max_line_bytes: 100,
        ..Config::unlimited()
    })
    .await;
    let mut bob = server.join().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send_raw(&[b'x'; 60]).await;
    alice.send_raw(&[b'y'; 60]).await;
    alice
        .expect("error: line longer than 100 bytes; discarded")
        .await;
    // The rest of that line goes nowhere, however long it grows.
    for _ in 0..100 {
        alice.send_raw(&[b'z'; 1000]).await;
    }
    alice.send("tail of the long line").await;
    alice.send(&"k".repeat(100)).await;
    alice.expect(&said(&a, &a, &"k".repeat(100))).await;
    bob.skip_until(&said(&a, &a, &"k".repeat(100))).await;
    both_still_work(&mut alice, &mut bob, &a).await;
    server.stop().await;
}

#[tokio::test]
async fn control_characters_never_reach_other_terminals() {
    let server = TestServer::start().await;
    let mut bob = server.join().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice
        .send("\x1b[2J\x1b]0;pwned\x07\rbell\x7f\u{9b}1m rtl\u{202E}txet\ttab")
        .await;
    let clean =
        "\u{FFFD}[2J\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}bell\u{FFFD}\u{FFFD}1m rtl\u{FFFD}txet tab";
    bob.skip_until(&said(&a, &a, clean)).await;
    server.stop().await;
}
