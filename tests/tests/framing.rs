//! Real line framing, where the original treated each `read` as one line.

use chat_tests::{TestServer, said};

#[tokio::test]
async fn several_lines_in_one_write_are_several_messages() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send_raw(b"one\ntwo\r\nwho\nthree\n").await;
    alice.expect(&said(&a, &a, "one")).await;
    alice.expect(&said(&a, &a, "two")).await;
    alice.expect("user list:").await;
    alice.expect(&format!("{a}:{a}")).await;
    alice.expect(&said(&a, &a, "three")).await;
    server.stop().await;
}

#[tokio::test]
async fn one_line_across_several_writes_is_one_message() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    // Pauses between the parts, so they arrive as separate segments and the server reads
    // them separately (what the original got wrong); nothing to wait for instead: the
    // server answers nothing until the line is complete.
    let apart = std::time::Duration::from_millis(30);
    for part in [&b"hel"[..], b"lo wo", b"rld\r", b"\n"] {
        alice.send_raw(part).await;
        tokio::time::sleep(apart).await;
    }
    alice.send_raw(b"wh").await;
    tokio::time::sleep(apart).await;
    alice.send_raw(b"o\n").await;
    alice.expect(&said(&a, &a, "hello world")).await;
    // `who`, in two writes, is still the command.
    alice.expect("user list:").await;
    alice.expect(&format!("{a}:{a}")).await;
    server.stop().await;
}

#[tokio::test]
async fn crlf_commands_work_like_lf_commands() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send_raw(b"rename|win\r\nwho\r\n").await;
    alice.expect("rename ok").await;
    alice.expect("user list:").await;
    alice.expect(&format!("{a}:win")).await;
    server.stop().await;
}

#[tokio::test]
async fn a_line_that_merely_starts_with_rename_is_chat() {
    // The original crashed on this (index out of range on the `|` split).
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    for text in [
        "renamed the file",
        "rename",
        "rename me please",
        "who is here?",
    ] {
        alice.send(text).await;
        alice.expect(&said(&a, &a, text)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn empty_lines_are_broadcast_like_the_original() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    alice.send("").await;
    alice.expect(&format!("[{a}]{a}: ")).await;
    server.stop().await;
}
