//! The metrics endpoint (`--metrics-listen`) of the real binary: its two paths, and
//! counters that are exact. Each test runs its own process, since metrics are per process.

use chat_tests::{Client, ServerProcess, TestCa, TlsClient, http_get, http_request, said, scrape};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn value(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    *metrics
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
}

/// What went up (or down) between two scrapes.
fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    value(after, name) - before.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_and_healthz_are_served_and_nothing_else() {
    let server = ServerProcess::start(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics = server.metrics_addr.expect("the metrics address is logged");
    assert_eq!(http_get(metrics, "/healthz").await, (200, "ok\n".into()));
    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE chat_messages_total counter"),
        "{body}"
    );
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/metrics/x"),
        ("GET", "/favicon.ico"),
        ("POST", "/metrics"),
        ("DELETE", "/healthz"),
    ] {
        let (status, _) = http_request(metrics, method, path).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    // Every metric is there from the start, at zero.
    let start = scrape(metrics).await;
    for name in [
        "chat_messages_total",
        "chat_deliveries_total",
        "chat_direct_messages_total",
        "chat_history_events_total",
        "chat_auth_failures_total",
        "chat_users",
        "chat_connections{transport=\"plain\"}",
        "chat_connections{transport=\"tls\"}",
        "chat_disconnects_total{reason=\"quit\"}",
        "chat_disconnects_total{reason=\"timeout\"}",
        "chat_disconnects_total{reason=\"sendq_exceeded\"}",
        "chat_disconnects_total{reason=\"excess_flood\"}",
        "chat_disconnects_total{reason=\"shutdown\"}",
        "chat_refused_connections_total{reason=\"server_full\"}",
        "chat_refused_connections_total{reason=\"too_many_from_ip\"}",
        "chat_refused_connections_total{reason=\"tls_handshake\"}",
    ] {
        assert_eq!(value(&start, name), 0.0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact() {
    const N: usize = 25;
    let server = ServerProcess::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--rate",
        "0",
        "--max-per-ip",
        "2",
    ]);
    let metrics = server.metrics_addr.expect("metrics address");
    let mut alice = Client::connect(server.addr).await;
    let a = alice.addr.clone();
    alice.skip_until(&said(&a, &a, "I am here")).await;
    let mut bob = Client::connect(server.addr).await;
    let b = bob.addr.clone();
    bob.skip_until(&said(&b, &b, "I am here")).await;
    alice.expect(&said(&b, &b, "login")).await;
    // A `who` answer is queued after everything decided before it, counters included.
    alice.who().await;
    let before = scrape(metrics).await;
    assert_eq!(value(&before, "chat_users"), 2.0);
    assert_eq!(value(&before, "chat_connections{transport=\"plain\"}"), 2.0);
    // Two joins: each `login` reached everyone in the room by then (1, then 2).
    assert_eq!(value(&before, "chat_history_events_total"), 2.0);

    for i in 0..N {
        alice.send(&format!("line {i}")).await;
    }
    for i in 0..N {
        bob.expect(&said(&a, &a, &format!("line {i}"))).await;
        alice.expect(&said(&a, &a, &format!("line {i}"))).await;
    }
    alice.send(&format!("to|{b}|psst")).await;
    alice.expect(&format!("[{a}]{a} -> {b}: psst")).await;
    alice.who().await;
    let after = scrape(metrics).await;
    assert_eq!(delta(&before, &after, "chat_messages_total"), N as f64);
    assert_eq!(
        delta(&before, &after, "chat_deliveries_total"),
        2.0 * N as f64
    );
    assert_eq!(
        delta(&before, &after, "chat_history_events_total"),
        N as f64
    );
    assert_eq!(delta(&before, &after, "chat_direct_messages_total"), 1.0);
    assert!(value(&after, "chat_history_commit_seconds_count") >= 1.0);

    // A third connection from this address is refused.
    let mut third = Client::connect(server.addr).await;
    third
        .expect("error: too many connections from 127.0.0.1 (at most 2)")
        .await;
    let refused = scrape(metrics).await;
    assert_eq!(
        delta(
            &after,
            &refused,
            "chat_refused_connections_total{reason=\"too_many_from_ip\"}"
        ),
        1.0
    );

    // Bob leaves; the count is taken before the room hears of it.
    drop(bob);
    alice.expect(&said(&b, &b, "login out")).await;
    let left = scrape(metrics).await;
    assert_eq!(
        delta(&after, &left, "chat_disconnects_total{reason=\"quit\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_handshake_failures_and_wrong_passwords_are_counted() {
    let (ca, dir) = (TestCa::new("metrics"), tempfile::tempdir().expect("dir"));
    let (cert, key) = ca.write_server_files(dir.path(), "server");
    let password = dir.path().join("password");
    std::fs::write(&password, "letmein\n").expect("write");
    let server = ServerProcess::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
        "--password-file",
        password.to_str().expect("path"),
    ]);
    let (metrics, tls) = (
        server.metrics_addr.expect("metrics"),
        server.tls_addr.expect("tls"),
    );
    let mut user = TlsClient::connect_tls(tls, &ca.connector())
        .await
        .expect("handshake");
    user.expect("password required: send pass|PASSWORD").await;
    for _ in 0..2 {
        user.send("pass|letmeout").await;
        user.expect("error: wrong password").await;
    }
    let counted = scrape(metrics).await;
    assert_eq!(value(&counted, "chat_auth_failures_total"), 2.0);
    assert_eq!(value(&counted, "chat_connections{transport=\"tls\"}"), 1.0);
    // Not in the room yet.
    assert_eq!(value(&counted, "chat_users"), 0.0);
    user.send("pass|letmein").await;
    let me = user.addr.clone();
    user.skip_until(&said(&me, &me, "I am here")).await;
    assert_eq!(value(&scrape(metrics).await, "chat_users"), 1.0);

    // nc on the TLS port: refused as a failed handshake, counted before it is closed.
    let mut nc = tokio::net::TcpStream::connect(tls).await.expect("connect");
    nc.write_all(b"hello?\n").await.expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(chat_tests::STEP, nc.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the TLS port keeps a plain connection open");
    let after = scrape(metrics).await;
    assert_eq!(
        value(
            &after,
            "chat_refused_connections_total{reason=\"tls_handshake\"}"
        ),
        1.0
    );
}
