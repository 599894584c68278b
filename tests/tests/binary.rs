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

/// Every flag of `chat-server`, with the default its help shows (`None`: shows none). A
/// flag added to the server must be added here (and to the docs); one removed fails.
const FLAGS: &[(&str, Option<&str>)] = &[
    ("--listen", Some("0.0.0.0:8000")),
    ("--idle-timeout", Some("30s")),
    ("--max-line-bytes", Some("4096")),
    ("--sendq-bytes", Some("1048576")),
    ("--max-clients", Some("10000")),
    ("--max-per-ip", Some("64")),
    ("--rate", Some("5")),
    ("--burst", Some("20")),
    ("--history-db", Some("chat-history.sqlite3")),
    ("--history-retention", Some("30d")),
    ("--history-max-events", Some("1000000")),
    ("--history-sync", Some("normal")),
    ("--cluster", None),
    ("--node-id", None),
    ("--node-timeout", Some("10s")),
    ("--history-cache", Some("10000")),
    ("--threads", Some("0")),
    // Off unless given (each also has its CHAT_ variable).
    ("--tls-listen", None),
    ("--tls-cert", None),
    ("--tls-key", None),
    ("--password-file", None),
    ("--metrics-listen", None),
    ("--log-json", None),
    ("--help", None),
    ("--version", None),
];

/// One option in `--help`: its long flag and the help text under it.
#[derive(Debug)]
struct HelpEntry {
    flag: String,
    text: String,
}

/// The options `--help` lists: each starts on a line of its own whose first word (after an
/// optional `-x, ` short form) is `--flag`; the lines under it, up to the next, are its text.
fn help_entries(help: &str) -> Vec<HelpEntry> {
    let mut entries: Vec<HelpEntry> = Vec::new();
    let options = help
        .split_once("\nOptions:\n")
        .map(|(_, options)| options)
        .unwrap_or_else(|| panic!("no Options: section in --help:\n{help}"));
    for line in options.lines() {
        let trimmed = line.trim_start();
        let long = match trimmed.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => trimmed,
        };
        if long.starts_with("--") {
            let flag = long.split_whitespace().next().unwrap_or(long).to_string();
            entries.push(HelpEntry {
                flag,
                text: String::new(),
            });
        } else if let Some(entry) = entries.last_mut() {
            entry.text.push_str(trimmed);
            entry.text.push(' ');
        }
    }
    entries
}

#[test]
fn help_lists_every_flag() {
    let output = Command::new(server_binary())
        .arg("--help")
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "--help exits with {}",
        output.status
    );
    let help = String::from_utf8_lossy(&output.stdout);
    let entries = help_entries(&help);
    let listed: Vec<&str> = entries.iter().map(|e| e.flag.as_str()).collect();
    let expected: Vec<&str> = FLAGS.iter().map(|(flag, _)| *flag).collect();
    assert_eq!(
        listed, expected,
        "the flags in --help (left) are not the ones this test knows (right): a flag was \
         removed, renamed or added without updating FLAGS and the docs\n{help}"
    );
    for (entry, (flag, default)) in entries.iter().zip(FLAGS) {
        // Said once, as its own entry, with a text that says what it does.
        assert!(
            entry.text.split_whitespace().count() >= 2,
            "{flag} has no help text: {entry:?}"
        );
        match default {
            Some(default) => {
                assert!(
                    entry.text.contains(&format!("[default: {default}]")),
                    "{flag}: expected default {default}: {entry:?}"
                );
                // Every setting can come from the environment too, as CHAT_FLAG_NAME.
                let env = format!(
                    "[env: CHAT_{}=]",
                    flag.trim_start_matches("--")
                        .replace('-', "_")
                        .to_uppercase()
                );
                assert!(
                    entry.text.contains(&env),
                    "{flag}: expected {env}: {entry:?}"
                );
            }
            None => assert!(!entry.text.contains("[default:"), "{flag}: {entry:?}"),
        }
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
