//! The room password (`--password-file`): every rule, in plain and JSON mode, over plain TCP
//! and TLS. A connection that has not given the password hears nothing of the room and is
//! not in `who`.

use chat_protocol::{ClientCommand, ErrorCode, ServerEvent};
use chat_server::{Config, Password};
use chat_tests::{Client, Lines, ServerProcess, TestCa, TestServer, said};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

const REQUIRED: &str = "password required: send pass|PASSWORD";
const SECRET: &str = "correct horse";

fn locked() -> Config {
    Config {
        rate: 0.0,
        password: Some(Password::new(SECRET).expect("password")),
        ..Config::default()
    }
}

fn hello(password: &str) -> String {
    ClientCommand::Hello {
        version: 1,
        password: Some(password.into()),
    }
    .to_json()
}

/// Gives the password in plain mode and reads up to `I am here`.
async fn unlock<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(client: &mut Client<R, W>) {
    client.expect(REQUIRED).await;
    client.send(&format!("pass|{SECRET}")).await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    client.expect(&said(&me, &me, "I am here")).await;
}

async fn wrong_password_event<R: AsyncRead + Unpin>(lines: &mut Lines<R>) {
    match lines.event().await {
        ServerEvent::Error {
            code: ErrorCode::WrongPassword,
            message,
        } => assert_eq!(message, "wrong password"),
        other => panic!("not a wrong_password error: {other:?}"),
    }
}

/// A stranger waiting at the door hears nothing of the room, is not listed, and gets in
/// with the right password; the room then sees it join as usual.
async fn stranger_at_the_door<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    server: &TestServer,
    mut stranger: Client<R, W>,
) {
    let mut insider = server.connect().await;
    unlock(&mut insider).await;
    let i = insider.addr.clone();

    stranger.expect(REQUIRED).await;
    insider.send("secret plans").await;
    insider.expect(&said(&i, &i, "secret plans")).await;
    assert_eq!(insider.who().await, vec![format!("{i}:{i}")]);
    // The chat line was queued to everyone in the room before the insider read it; the
    // stranger's next line is the answer to what it sends now, so it got nothing before.
    stranger.send("who").await;
    stranger.expect(REQUIRED).await;
    stranger.send("pass|guess").await;
    stranger.expect("error: wrong password").await;

    stranger.send(&format!("pass|{SECRET}")).await;
    let s = stranger.addr.clone();
    stranger.expect(&said(&s, &s, "login")).await;
    stranger.expect(&said(&s, &s, "I am here")).await;
    insider.expect(&said(&s, &s, "login")).await;
    // Joined exactly as without a password: a hello may follow as its first line.
    stranger.send(chat_protocol::HELLO_LINE).await;
    assert!(matches!(
        stranger.event().await,
        ServerEvent::Welcome { .. }
    ));
    stranger
        .send_json(&ClientCommand::Chat {
            text: "hi all".into(),
        })
        .await;
    insider.expect(&said(&s, &s, "hi all")).await;
}

#[tokio::test]
async fn plain_a_stranger_sees_nothing_until_the_password() {
    let server = TestServer::with_config(locked()).await;
    let stranger = server.connect().await;
    stranger_at_the_door(&server, stranger).await;
    server.stop().await;
}

#[tokio::test]
async fn tls_a_stranger_sees_nothing_until_the_password() {
    let (ca, dir) = (TestCa::new("auth"), tempfile::tempdir().expect("dir"));
    let server = TestServer::with_tls(locked(), ca.server_certs(dir.path())).await;
    let stranger = server.connect_tls(&ca).await;
    stranger_at_the_door(&server, stranger).await;
    server.stop().await;
}

/// A program: a hello carrying the password; a wrong one is a JSON error, the right one
/// joins as today (plain `login` and `I am here`, then the welcome).
async fn program_at_the_door<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    server: &TestServer,
    mut program: Client<R, W>,
) {
    let mut insider = server.connect().await;
    unlock(&mut insider).await;
    program.expect(REQUIRED).await;
    program.send(&hello("nope")).await;
    let (mut lines, mut writer) = program.split();
    wrong_password_event(&mut lines).await;
    // A JSON line that is not a hello is told what is needed, and is not a try.
    use tokio::io::AsyncWriteExt;
    writer
        .write_all(b"{\"type\":\"who\"}\n")
        .await
        .expect("send");
    writer.flush().await.expect("flush");
    assert!(matches!(
        lines.event().await,
        ServerEvent::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    writer
        .write_all(format!("{}\n", hello(SECRET)).as_bytes())
        .await
        .expect("send");
    writer.flush().await.expect("flush");
    let me = lines.addr.clone();
    lines.expect(&said(&me, &me, "login")).await;
    lines.expect(&said(&me, &me, "I am here")).await;
    assert!(matches!(lines.event().await, ServerEvent::Welcome { .. }));
    insider.expect(&said(&me, &me, "login")).await;
    writer
        .write_all(b"{\"type\":\"chat\",\"text\":\"beep\"}\n")
        .await
        .expect("send");
    writer.flush().await.expect("flush");
    insider.expect(&said(&me, &me, "beep")).await;
}

#[tokio::test]
async fn json_a_hello_carries_the_password() {
    let server = TestServer::with_config(locked()).await;
    let program = server.connect().await;
    program_at_the_door(&server, program).await;
    server.stop().await;
}

#[tokio::test]
async fn json_over_tls_a_hello_carries_the_password() {
    let (ca, dir) = (TestCa::new("auth json"), tempfile::tempdir().expect("dir"));
    let server = TestServer::with_tls(locked(), ca.server_certs(dir.path())).await;
    let program = server.connect_tls(&ca).await;
    program_at_the_door(&server, program).await;
    server.stop().await;
}

#[tokio::test]
async fn the_third_wrong_password_closes_the_connection() {
    let (ca, dir) = (TestCa::new("three"), tempfile::tempdir().expect("dir"));
    let server = TestServer::with_tls(locked(), ca.server_certs(dir.path())).await;
    // Plain mode, over TCP.
    let mut plain = server.connect().await;
    plain.expect(REQUIRED).await;
    for guess in ["a", "b", "c"] {
        plain.send(&format!("pass|{guess}")).await;
        plain.expect("error: wrong password").await;
    }
    assert!(plain.expect_closed().await.is_empty());
    // JSON mode, over TLS; a hello without a password is a wrong try too.
    let tls = server.connect_tls(&ca).await;
    let (mut lines, mut writer) = tls.split();
    lines.expect(REQUIRED).await;
    use tokio::io::AsyncWriteExt;
    for attempt in [
        chat_protocol::HELLO_LINE.to_string(),
        hello("x"),
        hello("y"),
    ] {
        writer
            .write_all(format!("{attempt}\n").as_bytes())
            .await
            .expect("send");
        writer.flush().await.expect("flush");
        wrong_password_event(&mut lines).await;
    }
    assert!(lines.expect_closed().await.is_empty());
    // Two wrong tries leave the connection open for a third, right one.
    let mut patient = server.connect().await;
    patient.expect(REQUIRED).await;
    for _ in 0..2 {
        patient.send("pass|wrong").await;
        patient.expect("error: wrong password").await;
    }
    patient.send(&format!("pass|{SECRET}")).await;
    let me = patient.addr.clone();
    patient.expect(&said(&me, &me, "login")).await;
    server.stop().await;
}

#[tokio::test]
async fn no_right_password_in_time_closes_the_connection() {
    let config = Config {
        auth_timeout: Duration::from_millis(300),
        ..locked()
    };
    let server = TestServer::with_config(config).await;
    let mut slow = server.connect().await;
    slow.expect(REQUIRED).await;
    slow.send("pass|wrong").await;
    slow.expect("error: wrong password").await;
    // Lines that are not the password do not hold the door open either.
    slow.send("knock knock").await;
    slow.expect(REQUIRED).await;
    slow.expect("notice: no password within 300ms: disconnected")
        .await;
    assert!(slow.expect_closed().await.is_empty());
    // The deadline is 10 s unless a library caller changes it.
    assert_eq!(Config::default().auth_timeout, Duration::from_secs(10));
    server.stop().await;
}

#[tokio::test]
async fn wrong_passwords_are_limited_per_address_across_connections() {
    let config = Config {
        auth_ip_failures: 2,
        ..locked()
    };
    let server = TestServer::with_config(config).await;
    let mut first = server.connect().await;
    first.expect(REQUIRED).await;
    for _ in 0..2 {
        first.send("pass|guess").await;
        first.expect("error: wrong password").await;
    }
    // A new connection from the same address buys no new guesses: even the right password
    // is refused unchecked, and the connection closed.
    let mut second = server.connect().await;
    second.expect(REQUIRED).await;
    second.send(&format!("pass|{SECRET}")).await;
    second
        .expect("error: too many wrong passwords from 127.0.0.1; try again later")
        .await;
    assert!(second.expect_closed().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn without_a_password_nothing_changes() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    client.expect(&said(&me, &me, "I am here")).await;
    // `pass|...` is just chat then.
    client.send("pass|whatever").await;
    client.expect(&said(&me, &me, "pass|whatever")).await;
    server.stop().await;
}

#[tokio::test]
async fn the_binary_reads_the_password_file_without_its_trailing_newline() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write");
    let server = ServerProcess::start(&["--password-file", file.to_str().expect("path")]);
    // Were the newline part of the password, no line could carry it.
    let mut client = Client::connect(server.addr).await;
    unlock(&mut client).await;
}
