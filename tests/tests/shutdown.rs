//! Graceful shutdown through the library: every user is told, queued lines are flushed,
//! and `run` returns promptly. (SIGTERM to the binary: `binary.rs`, `process.rs`.)

use chat_tests::{TestServer, said};

#[tokio::test]
async fn every_user_is_told_and_queued_lines_are_flushed() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bot = server.join_json().await;
    let mut bob = server.join().await;
    let b = bob.addr.clone();
    alice.skip_until(&said(&b, &b, "login")).await;
    for i in 0..1000 {
        bob.send(&format!("message {i}")).await;
    }
    bob.skip_until(&said(&b, &b, "message 999")).await;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed().as_secs_f64() < 2.0,
        "{:?}",
        started.elapsed()
    );

    let rest = alice.expect_closed().await;
    let tail: Vec<_> = rest.iter().rev().take(2).rev().cloned().collect();
    assert_eq!(
        tail,
        vec![
            said(&b, &b, "message 999"),
            "notice: server shutting down; goodbye".to_string()
        ]
    );
    let rest = bot.expect_closed().await;
    assert!(
        rest.last()
            .is_some_and(|l| l.contains(r#""code":"shutdown""#)),
        "{rest:?}"
    );
    assert_eq!(
        bob.expect_closed().await,
        vec!["notice: server shutting down; goodbye".to_string()]
    );
}
