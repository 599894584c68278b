//! TLS beside plain text: one room for both, plain bytes on the TLS port, connection limits,
//! start-up errors, and reloading the certificate on SIGHUP without dropping anyone.
//! Certificates are made in each test by [`TestCa`].

use chat_server::Config;
use chat_tests::{Client, STEP, ServerProcess, TestCa, TestServer, TlsClient, said};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

#[tokio::test]
async fn tls_and_plain_users_chat_in_one_room() {
    let (ca, dir) = (TestCa::new("one room"), tempdir());
    let server = TestServer::with_tls(Config::default(), ca.server_certs(dir.path())).await;
    let mut plain = server.join().await;
    let mut tls = server.join_tls(&ca).await;
    let (p, t) = (plain.addr.clone(), tls.addr.clone());
    plain.expect(&said(&t, &t, "login")).await;

    tls.send("hello from TLS").await;
    plain.expect(&said(&t, &t, "hello from TLS")).await;
    tls.expect(&said(&t, &t, "hello from TLS")).await;
    plain.send("hello from nc").await;
    tls.expect(&said(&p, &p, "hello from nc")).await;

    tls.send("rename|tess").await;
    tls.expect("rename ok").await;
    let users = plain.who().await;
    assert_eq!(users, vec![format!("{p}:{p}"), format!("{t}:tess")]);

    drop(tls);
    plain.skip_until(&said(&t, "tess", "login out")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_reader_that_falls_behind_still_gets_the_last_line() {
    // Backpressure through TLS: the writer stops part way through its batches while the
    // reader does not read, then must deliver everything, in order, to the last line. (That
    // each batch is flushed is proven in `server/src/outbox.rs`'s tests, with a socket that
    // holds bytes back the way TLS can.)
    const LINES: usize = 4000;
    let (ca, dir) = (TestCa::new("backlog"), tempdir());
    let config = Config {
        rate: 0.0,
        sendq_bytes: 64 << 20,
        ..Config::default()
    };
    let server = TestServer::with_tls(config, ca.server_certs(dir.path())).await;
    // A tiny receive buffer, so the server's socket fills and TLS writes stop part way.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket
        .connect(server.tls_addr.expect("TLS"))
        .await
        .expect("connect");
    let mut slow = TlsClient::over(stream, &ca.connector())
        .await
        .expect("handshake");
    let me = slow.addr.clone();
    slow.skip_until(&said(&me, &me, "I am here")).await;

    let sender = server.join().await;
    let s = sender.addr.clone();
    let padding = "x".repeat(2000);
    let (mut lines, mut writer) = sender.split();
    let echoes = tokio::spawn(async move {
        for _ in 0..=LINES {
            lines.line().await;
        }
    });
    for i in 0..LINES {
        writer
            .write_all(format!("{i} {padding}\n").as_bytes())
            .await
            .expect("send");
    }
    writer.write_all(b"the end\n").await.expect("send");
    echoes.await.expect("the sender's own echoes");
    // Only now does the slow reader read: everything arrives, the last line included.
    slow.skip_until(&said(&s, &s, &format!("{} {padding}", LINES - 1)))
        .await;
    slow.expect(&said(&s, &s, "the end")).await;
    server.stop().await;
}

#[tokio::test]
async fn plain_bytes_on_the_tls_port_are_closed_and_never_make_a_user() {
    let (ca, dir) = (TestCa::new("nc"), tempdir());
    let config = Config {
        tls_handshake_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let server = TestServer::with_tls(config, ca.server_certs(dir.path())).await;
    let mut watcher = server.join().await;
    let tls_addr = server.tls_addr.expect("TLS address");

    // `nc` on the TLS port: a line of text is not a ClientHello.
    let mut nc = tokio::net::TcpStream::connect(tls_addr)
        .await
        .expect("connect");
    nc.write_all(b"hello, is this the chat?\n")
        .await
        .expect("write");
    // A silent client: its handshake never finishes, so the deadline closes it.
    let mut silent = tokio::net::TcpStream::connect(tls_addr)
        .await
        .expect("connect");
    for stream in [&mut nc, &mut silent] {
        let mut rest = Vec::new();
        // Closed by the server (what rustls says first, if anything, is a TLS alert, never
        // a chat line): read to the end, or to a reset.
        let closed = tokio::time::timeout(STEP, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection stays open");
        assert!(!String::from_utf8_lossy(&rest).contains("login"));
    }
    // Nobody joined or left: the watcher's next line is its own `who` answer.
    let me = watcher.addr.clone();
    assert_eq!(watcher.who().await, vec![format!("{me}:{me}")]);
    server.stop().await;
}

#[tokio::test]
async fn connection_limits_count_tls_connections_and_say_why_over_tls() {
    let (ca, dir) = (TestCa::new("limits"), tempdir());
    let config = Config {
        max_per_ip: 2,
        ..Config::default()
    };
    let server = TestServer::with_tls(config, ca.server_certs(dir.path())).await;
    let _plain = server.join().await;
    let _tls = server.join_tls(&ca).await;
    // A third connection, plain or TLS, is over the limit; the TLS one hears why over TLS.
    let mut refused = server.connect_tls(&ca).await;
    refused
        .expect("error: too many connections from 127.0.0.1 (at most 2)")
        .await;
    assert!(refused.expect_closed().await.is_empty());
    let mut refused = server.connect().await;
    refused
        .expect("error: too many connections from 127.0.0.1 (at most 2)")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_and_never_joins() {
    let (ca, stranger, dir) = (TestCa::new("real"), TestCa::new("other"), tempdir());
    let server = TestServer::with_tls(Config::default(), ca.server_certs(dir.path())).await;
    let mut watcher = server.join().await;
    let error = TlsClient::connect_tls(server.tls_addr.expect("TLS"), &stranger.connector())
        .await
        .err()
        .expect("verification fails");
    assert!(error.to_string().contains("certificate"), "{error}");
    let me = watcher.addr.clone();
    assert_eq!(watcher.who().await, vec![format!("{me}:{me}")]);
    server.stop().await;
}

/// Runs the binary with `args` and returns its exit status and stderr; it must exit by itself.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let child = std::process::Command::new(chat_tests::server_binary())
        .args(["--listen", "127.0.0.1:0", "--history-db", ":memory:"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chat-server");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(STEP) {
        Ok(output) => {
            let output = output.expect("wait");
            (
                output.status,
                String::from_utf8_lossy(&output.stderr).into(),
            )
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg(id.to_string())
                .status();
            panic!("chat-server {args:?} did not exit");
        }
    }
}

#[test]
fn tls_listen_without_a_usable_certificate_is_a_clear_start_up_error() {
    let (ca, dir) = (TestCa::new("start"), tempdir());
    let (cert, key) = ca.write_server_files(dir.path(), "good");
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("path");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnope\n").expect("write");
    let garbage = garbage.to_str().expect("path");
    let tls = ["--tls-listen", "127.0.0.1:0"];
    for (args, says) in [
        (vec!["--tls-cert", cert], "--tls-key"),
        (vec!["--tls-key", key], "--tls-cert"),
        (vec!["--tls-cert", missing, "--tls-key", key], "missing.pem"),
        (vec!["--tls-cert", garbage, "--tls-key", key], "garbage.pem"),
        (vec!["--tls-cert", cert, "--tls-key", cert], "private key"),
    ] {
        let args: Vec<&str> = tls.iter().copied().chain(args).collect();
        let (status, stderr) = run_to_exit(&args);
        assert!(!status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening on"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_every_session() {
    let (old_ca, new_ca) = (TestCa::new("old"), TestCa::new("new"));
    let dir = tempdir();
    let (cert, key) = old_ca.write_server_files(dir.path(), "server");
    let server = ServerProcess::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ]);
    let tls_addr = server.tls_addr.expect("the TLS address is logged");
    let join = |ca: &TestCa| {
        let connector = ca.connector();
        async move {
            let mut client = TlsClient::connect_tls(tls_addr, &connector)
                .await
                .expect("handshake");
            let me = client.addr.clone();
            client.skip_until(&said(&me, &me, "I am here")).await;
            client
        }
    };
    let mut old = join(&old_ca).await;
    let old_cert = old.server_certificate().to_vec();

    // New files in place, then SIGHUP.
    let (new_cert, new_key) = new_ca.server_pem();
    std::fs::write(&cert, new_cert).expect("write");
    std::fs::write(&key, new_key).expect("write");
    server.signal("HUP");
    server.wait_for_log("reloaded the TLS certificate");

    // A new connection gets the new certificate: one trusting only the old CA fails...
    assert!(
        TlsClient::connect_tls(tls_addr, &old_ca.connector())
            .await
            .is_err()
    );
    // ...one trusting the new CA joins, and the old session still chats with it.
    let mut new = join(&new_ca).await;
    assert_ne!(new.server_certificate(), old_cert);
    let (o, n) = (old.addr.clone(), new.addr.clone());
    old.send("still here").await;
    new.expect(&said(&o, &o, "still here")).await;
    new.send("welcome back").await;
    old.skip_until(&said(&n, &n, "welcome back")).await;

    // Broken files: the server says so and keeps the certificate it has.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").expect("write");
    server.signal("HUP");
    server.wait_for_log("cannot reload the TLS certificate and key, keeping the old ones");
    let mut again = join(&new_ca).await;
    assert_eq!(again.server_certificate(), new.server_certificate());
    again.send("after a bad reload").await;
    old.skip_until(&said(&again.addr, &again.addr, "after a bad reload"))
        .await;
}

#[tokio::test]
async fn sighup_without_tls_does_not_stop_the_server() {
    let server = ServerProcess::start(&[]);
    server.signal("HUP");
    server.wait_for_log("no TLS certificate to reload");
    let mut client = Client::connect(server.addr).await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
}
