//! The `chat-server` binary itself: flags, the logged address, and SIGTERM.

use chat_tests::{Client, ServerProcess, said, server_binary};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn logs_the_bound_address_and_serves_it() {
    let server = ServerProcess::start(&[]);
    assert!(server.addr.ip().is_loopback());
    assert_ne!(server.addr.port(), 0);
    let mut client = server.connect().await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    client.expect(&said(&me, &me, "I am here")).await;
}

#[tokio::test]
async fn idle_timeout_flag_takes_human_durations() {
    let server = ServerProcess::start(&["--idle-timeout", "300ms"]);
    let mut client = server.connect().await;
    let started = Instant::now();
    assert_eq!(
        client.expect_closed().await.last().map(String::as_str),
        Some("notice: no complete line for 300ms: disconnected for idling")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let output = Command::new(server_binary())
        .args(["--idle-timeout", "soon"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--idle-timeout"), "{stderr}");
}

#[test]
fn help_lists_every_flag() {
    let output = Command::new(server_binary())
        .arg("--help")
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--idle-timeout",
        "--max-line-bytes",
        "--sendq-bytes",
        "--max-clients",
        "--max-per-ip",
        "--rate",
        "--burst",
        "--threads",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test]
async fn sigterm_says_goodbye_to_every_user_and_exits_promptly() {
    let server = ServerProcess::start(&[]);
    let mut users = Vec::new();
    for _ in 0..20 {
        let mut user = Client::connect(server.addr).await;
        let me = user.addr.clone();
        user.skip_until(&said(&me, &me, "I am here")).await;
        users.push(user);
    }
    users[0].send("last words").await;
    let last_words = said(&users[0].addr, &users[0].addr, "last words");
    for user in &mut users {
        user.skip_until(&last_words).await;
    }
    let started = Instant::now();
    let status = server.exit_on_sigterm();
    for user in &mut users {
        assert_eq!(
            user.expect_closed().await,
            vec!["notice: server shutting down; goodbye".to_string()]
        );
    }
    let status = tokio::time::timeout(Duration::from_secs(2), status)
        .await
        .unwrap_or_else(|_| panic!("still running {:?} after SIGTERM", started.elapsed()))
        .expect("wait task")
        .expect("wait");
    assert!(status.success(), "{status}");
}
