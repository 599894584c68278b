//! The `chat-server` binary itself: flags, the logged address, and SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEP: Duration = Duration::from_secs(10);

/// A running `chat-server`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `127.0.0.1:0` and reads the bound address from its log.
fn start(extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chat-server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(STEP).expect("the server logs its address");
    Server { child, addr }
}

fn connect(addr: &str) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(STEP)).expect("timeout");
    (BufReader::new(stream.try_clone().expect("clone")), stream)
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line in time");
    line
}

#[test]
fn logs_the_bound_address_and_serves_it() {
    let server = start(&[]);
    assert!(server.addr.starts_with("127.0.0.1:"));
    assert_ne!(server.addr, "127.0.0.1:0");
    let (mut reader, stream) = connect(&server.addr);
    let me = stream.local_addr().expect("addr").to_string();
    assert_eq!(read_line(&mut reader), format!("[{me}]{me}: login\n"));
    assert_eq!(read_line(&mut reader), format!("[{me}]{me}: I am here\n"));
}

#[test]
fn idle_timeout_flag_takes_human_durations() {
    let server = start(&["--idle-timeout", "300ms"]);
    let (mut reader, _stream) = connect(&server.addr);
    read_line(&mut reader);
    read_line(&mut reader);
    let started = Instant::now();
    assert_eq!(
        read_line(&mut reader),
        "notice: no complete line for 300ms: disconnected for idling\n"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--idle-timeout", "soon"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--idle-timeout"), "{stderr}");
}

#[test]
fn help_lists_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
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
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn sigterm_says_goodbye_to_every_user_and_exits_promptly() {
    let mut server = start(&[]);
    let mut users: Vec<_> = (0..20).map(|_| connect(&server.addr)).collect();
    for (reader, stream) in &mut users {
        let me = stream.local_addr().expect("addr").to_string();
        // Read up to our own "I am here"; later logins may follow.
        while read_line(reader) != format!("[{me}]{me}: I am here\n") {}
    }
    let (_, stream) = &mut users[0];
    stream.write_all(b"last words\n").expect("write");

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    for (reader, _) in &mut users {
        let mut rest = Vec::new();
        loop {
            let line = read_line(reader);
            if line.is_empty() {
                break;
            }
            rest.push(line);
        }
        assert_eq!(
            rest.last().map(String::as_str),
            Some("notice: server shutting down; goodbye\n"),
            "{rest:?}"
        );
    }
    let pid = server.child.id().to_string();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        let child = &mut server.child;
        scope.spawn(move || tx.send(child.wait()));
        let exited = rx.recv_timeout(Duration::from_secs(2).saturating_sub(started.elapsed()));
        if exited.is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let status = exited.expect("exits within 2 s of SIGTERM").expect("wait");
        assert!(status.success(), "{status}");
    });
}
