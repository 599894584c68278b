//! Direct messages: `to|NAME|TEXT` (JSON `{"type":"dm",...}`) reaches the one user holding
//! NAME and echoes to the sender, nobody else; errors leave the session whole; the flood
//! limit, sanitizing, per-pair order and the slow-consumer rule apply as to chat; the room
//! history never holds them.

use chat_protocol::{ErrorCode, ServerEvent, UserInfo};
use chat_server::Config;
use chat_tests::{Client, STEP, TestServer, said};

/// The line a DM shows in plain mode, to its recipient and its sender.
fn dm(from_addr: &str, from_name: &str, to_name: &str, text: &str) -> String {
    format!("[{from_addr}]{from_name} -> {to_name}: {text}")
}

/// Joins in plain mode and takes `name`.
async fn named(server: &TestServer, name: &str) -> Client {
    let mut client = server.join().await;
    client.send(&format!("rename|{name}")).await;
    client.expect("rename ok").await;
    client
}

/// Plain users joined in order, each named, each having read every later one's login: so
/// the next line each gets is whatever the test makes happen.
async fn room<const N: usize>(server: &TestServer, names: [&str; N]) -> [Client; N] {
    let mut clients = Vec::new();
    for name in names {
        clients.push(named(server, name).await);
    }
    let last = clients
        .last()
        .map(|c| c.addr.clone())
        .expect("a room of one or more");
    for client in &mut clients[..N - 1] {
        client.skip_until(&said(&last, &last, "login")).await;
    }
    match clients.try_into() {
        Ok(clients) => clients,
        Err(_) => unreachable!("N clients"),
    }
}

/// Joins in JSON mode and takes `name`.
async fn named_json(server: &TestServer, name: &str) -> Client {
    let mut client = server.join_json().await;
    client
        .send(&format!(r#"{{"type":"rename","name":"{name}"}}"#))
        .await;
    assert_eq!(
        client.event().await,
        ServerEvent::Renamed { name: name.into() }
    );
    client
}

/// Sends a chat line from `sender` and asserts it is the next line each of `readers` gets:
/// so nothing (a stray DM, say) came before it.
async fn next_is_marker(sender: &mut Client, sender_name: &str, readers: &mut [&mut Client]) {
    let s = sender.addr.clone();
    let marker = said(&s, sender_name, "marker");
    sender.send("marker").await;
    sender.expect(&marker).await;
    for reader in readers {
        reader.expect(&marker).await;
    }
}

#[tokio::test]
async fn a_dm_reaches_its_recipient_and_the_sender_and_nobody_else() {
    let server = TestServer::start().await;
    let [mut alice, mut bob, mut carol] = room(&server, ["alice", "bob", "carol"]).await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());

    alice.send("to|bob|psst").await;
    bob.expect(&dm(&a, "alice", "bob", "psst")).await;
    alice.expect(&dm(&a, "alice", "bob", "psst")).await;
    // Carol's next line is the chat line sent after the DM: she got nothing of it. Nor did
    // anyone get the DM twice.
    next_is_marker(&mut alice, "alice", &mut [&mut bob, &mut carol]).await;

    // The other way round, to a name in another case.
    bob.send("to|ALICE|back").await;
    alice.expect(&dm(&b, "bob", "alice", "back")).await;
    bob.expect(&dm(&b, "bob", "alice", "back")).await;
    next_is_marker(&mut bob, "bob", &mut [&mut alice, &mut carol]).await;
    server.stop().await;
}

#[tokio::test]
async fn the_text_is_everything_after_the_second_bar() {
    let server = TestServer::start().await;
    let [mut alice, mut bob] = room(&server, ["alice", "bob"]).await;
    let a = alice.addr.clone();
    for text in [
        "a|b",
        "|",
        "||x||",
        "to|carol|hi",
        " spaced  out ",
        "rename|x",
        "who",
    ] {
        alice.send(&format!("to|bob|{text}")).await;
        bob.expect(&dm(&a, "alice", "bob", text)).await;
        alice.expect(&dm(&a, "alice", "bob", text)).await;
    }
    // The command still did nothing else: alice kept her name, bob got no user list.
    next_is_marker(&mut alice, "alice", &mut [&mut bob]).await;
    server.stop().await;
}

#[tokio::test]
async fn names_match_as_for_uniqueness_ignoring_case_and_look_alikes() {
    let server = TestServer::start().await;
    let [mut alice, mut bob] = room(&server, ["alice", "Bob"]).await;
    let a = alice.addr.clone();
    for spelling in [
        "Bob",
        "bob",
        "BOB",
        "bOb",
        "\u{FF42}\u{FF4F}\u{FF42}", // fullwidth
        "b\u{043E}b",               // Cyrillic о
        "b0b",                      // zero for o
    ] {
        alice.send(&format!("to|{spelling}|hi")).await;
        // The line names the recipient as it calls itself, not as the sender spelled it.
        bob.expect(&dm(&a, "alice", "Bob", "hi")).await;
        alice.expect(&dm(&a, "alice", "Bob", "hi")).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_default_name_is_the_address_and_reaches_that_user() {
    let server = TestServer::start().await;
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.skip_until(&said(&b, &b, "login")).await;

    alice.send(&format!("to|{b}|hi")).await;
    bob.expect(&dm(&a, &a, &b, "hi")).await;
    alice.expect(&dm(&a, &a, &b, "hi")).await;

    // Once bob chose a name, his address is no longer a name anyone holds.
    bob.send("rename|bob").await;
    bob.expect("rename ok").await;
    alice.send(&format!("to|{b}|still there?")).await;
    alice
        .expect(&format!("error: no user named {b} is online"))
        .await;
    alice.send("to|bob|found you").await;
    bob.expect(&dm(&a, &a, "bob", "found you")).await;
    alice.expect(&dm(&a, &a, "bob", "found you")).await;
    next_is_marker(&mut alice, &a, &mut [&mut bob]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_dm_to_yourself_arrives_once() {
    let server = TestServer::start().await;
    let [mut alice, mut bob] = room(&server, ["alice", "bob"]).await;
    let a = alice.addr.clone();
    alice.send("to|Alice|note to self").await;
    alice
        .expect(&dm(&a, "alice", "alice", "note to self"))
        .await;
    // Exactly once: the next line is the marker, for alice and for bob alike.
    next_is_marker(&mut alice, "alice", &mut [&mut bob]).await;
    server.stop().await;
}

#[tokio::test]
async fn errors_get_one_line_each_and_leave_everyone_unharmed() {
    let server = TestServer::start().await;
    let mut alice = named(&server, "alice").await;
    let mut bob = named(&server, "bob").await;
    let gone = named(&server, "gone").await;
    let g = gone.addr.clone();
    drop(gone);
    alice.skip_until(&said(&g, "gone", "login out")).await;
    bob.skip_until(&said(&g, "gone", "login out")).await;

    let cases = [
        ("to|nobody|hi", "error: no user named nobody is online"),
        // Someone who was here and left.
        ("to|gone|hi", "error: no user named gone is online"),
        (
            &format!("to|{g}|hi") as &str,
            &format!("error: no user named {g} is online") as &str,
        ),
        ("to||hi", "error: no user named  is online"),
        // The name is quoted back, sanitized.
        (
            "to|x\x1b[2J|hi",
            "error: no user named x\u{FFFD}[2J is online",
        ),
        ("to|bob|", "error: a direct message needs a text"),
        ("to|", "error: a direct message is to|NAME|TEXT"),
        ("to|bob", "error: a direct message is to|NAME|TEXT"),
    ];
    for (line, error) in cases {
        alice.send(line).await;
        alice.expect(error).await;
    }
    // One line each: the next thing alice and bob get is alice's chat line.
    next_is_marker(&mut alice, "alice", &mut [&mut bob]).await;
    // And DMs still work.
    let a = alice.addr.clone();
    alice.send("to|bob|still works").await;
    bob.expect(&dm(&a, "alice", "bob", "still works")).await;
    alice.expect(&dm(&a, "alice", "bob", "still works")).await;
    server.stop().await;
}

#[tokio::test]
async fn other_lines_starting_with_to_are_chat() {
    let server = TestServer::start().await;
    let [mut alice, mut bob] = room(&server, ["alice", "bob"]).await;
    let a = alice.addr.clone();
    for text in [
        "to",
        "today",
        "to bob|hi",
        "TO|bob|hi",
        "To|bob|hi",
        " to|bob|hi",
        "to |bob|hi",
        "tobob|hi",
    ] {
        alice.send(text).await;
        alice.expect(&said(&a, "alice", text)).await;
        bob.expect(&said(&a, "alice", text)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn dm_text_is_sanitized_like_chat() {
    let server = TestServer::start().await;
    let mut alice = named(&server, "alice").await;
    let mut bob = named(&server, "bob").await;
    let mut bot = named_json(&server, "bot").await;
    let (a, t) = (alice.addr.clone(), bot.addr.clone());
    alice.skip_until(&said(&t, &t, "login")).await;
    bob.skip_until(&said(&t, &t, "login")).await;
    let dirty = "\x1b[2J\x1b]0;pwned\x07\rbell\u{9b}1m rtl\u{202E}txet\ttab";
    let clean = "\u{FFFD}[2J\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}bell\u{FFFD}1m rtl\u{FFFD}txet tab";
    alice.send(&format!("to|bob|{dirty}")).await;
    bob.expect(&dm(&a, "alice", "bob", clean)).await;
    alice.expect(&dm(&a, "alice", "bob", clean)).await;

    // To a JSON client: not on the wire at all, not even JSON-escaped.
    alice.send(&format!("to|bot|{dirty}")).await;
    let line = bot.line().await;
    for bad in [
        "\x1b", "\\u001b", "\u{202E}", "\\u202e", "\\u202E", "\r", "\\r",
    ] {
        assert!(!line.contains(bad), "{bad:?} in {line}");
    }
    assert!(line.contains(clean), "{line}");

    // From a JSON client, whose text arrives JSON-escaped.
    bot.send(r#"{"type":"dm","to":"bob","text":"a\u001b[31mb\nc\u202Ed"}"#)
        .await;
    bob.expect(&dm(&t, "bot", "bob", "a\u{FFFD}[31mb\u{FFFD}c\u{FFFD}d"))
        .await;
    // From a JSON client to a JSON client (itself), where no plain rendering repairs it.
    bot.send(r#"{"type":"dm","to":"bot","text":"a\u001b[31mb\nc\u202Ed"}"#)
        .await;
    let line = bot.line().await;
    for bad in [
        "\x1b", "\\u001b", "\u{202E}", "\\u202e", "\\u202E", "\n", "\\n",
    ] {
        assert!(!line.contains(bad), "{bad:?} in {line}");
    }
    assert!(
        line.contains("\"text\":\"a\u{FFFD}[31mb\u{FFFD}c\u{FFFD}d\""),
        "{line}"
    );
    server.stop().await;
}

#[tokio::test]
async fn json_dms_have_their_own_shape_both_ways() {
    let server = TestServer::start().await;
    let mut bot = named_json(&server, "bot").await;
    let mut bob = named_json(&server, "bob").await;
    let (t, b) = (bot.addr.clone(), bob.addr.clone());
    // The bot hears bob join and rename.
    assert!(matches!(bot.event().await, ServerEvent::Join { .. }));
    assert!(matches!(bot.event().await, ServerEvent::Rename { .. }));

    bot.send(r#"{"type":"dm","to":"BOB","text":"hi|there"}"#)
        .await;
    let expected = format!(
        r#"{{"type":"dm","from":{{"addr":"{t}","name":"bot"}},"to":{{"addr":"{b}","name":"bob"}},"text":"hi|there"}}"#
    );
    assert_eq!(bob.line().await, expected);
    assert_eq!(bot.line().await, expected);
    // And it parses as the protocol crate's event.
    assert_eq!(
        ServerEvent::parse_json(&expected).expect("a dm event"),
        ServerEvent::Dm {
            from: UserInfo {
                addr: t.clone(),
                name: "bot".into()
            },
            to: UserInfo {
                addr: b.clone(),
                name: "bob".into()
            },
            text: "hi|there".into()
        }
    );

    // Errors carry their own codes.
    for (line, code, message) in [
        (
            r#"{"type":"dm","to":"nobody","text":"hi"}"#,
            r#""no_such_user""#,
            Some("no user named nobody is online"),
        ),
        (
            r#"{"type":"dm","to":"bob","text":""}"#,
            r#""empty_text""#,
            Some("a direct message needs a text"),
        ),
        (r#"{"type":"dm","to":"bob"}"#, r#""bad_request""#, None),
        (r#"{"type":"dm","text":"hi"}"#, r#""bad_request""#, None),
        (
            r#"{"type":"dm","to":1,"text":"hi"}"#,
            r#""bad_request""#,
            None,
        ),
    ] {
        bot.send(line).await;
        let got = bot.line().await;
        assert!(
            got.starts_with(&format!(r#"{{"type":"error","code":{code},"message":""#)),
            "{line}: {got}"
        );
        if let Some(message) = message {
            assert_eq!(
                got,
                format!(r#"{{"type":"error","code":{code},"message":"{message}"}}"#)
            );
        }
    }
    // Nothing of that reached bob: his next event is the bot's chat line.
    bot.send(r#"{"type":"chat","text":"marker"}"#).await;
    match bob.event().await {
        ServerEvent::Chat { text, .. } => assert_eq!(text, "marker"),
        other => panic!("bob got {other:?} before the marker"),
    }
    // In JSON mode, chat text that looks like a plain DM is chat.
    bot.send(r#"{"type":"chat","text":"to|bob|hi"}"#).await;
    match bob.event().await {
        ServerEvent::Chat { text, .. } => assert_eq!(text, "to|bob|hi"),
        other => panic!("bob got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn plain_and_json_users_message_each_other() {
    let server = TestServer::start().await;
    let mut nc = named(&server, "nina").await;
    let mut bot = named_json(&server, "bot").await;
    let (n, t) = (nc.addr.clone(), bot.addr.clone());
    nc.skip_until(&said(&t, &t, "login")).await;

    // plain -> JSON
    nc.send("to|bot|hello bot").await;
    assert_eq!(
        bot.event().await,
        ServerEvent::Dm {
            from: UserInfo {
                addr: n.clone(),
                name: "nina".into()
            },
            to: UserInfo {
                addr: t.clone(),
                name: "bot".into()
            },
            text: "hello bot".into()
        }
    );
    nc.expect(&dm(&n, "nina", "bot", "hello bot")).await;

    // JSON -> plain
    bot.send(r#"{"type":"dm","to":"NINA","text":"hello nina"}"#)
        .await;
    nc.expect(&dm(&t, "bot", "nina", "hello nina")).await;
    assert_eq!(
        bot.event().await,
        ServerEvent::Dm {
            from: UserInfo {
                addr: t.clone(),
                name: "bot".into()
            },
            to: UserInfo {
                addr: n.clone(),
                name: "nina".into()
            },
            text: "hello nina".into()
        }
    );
    // A JSON client may address a default name too.
    let mut plain = server.join().await;
    let p = plain.addr.clone();
    assert!(matches!(bot.event().await, ServerEvent::Join { .. }));
    bot.send(&format!(r#"{{"type":"dm","to":"{p}","text":"hi"}}"#))
        .await;
    plain.expect(&dm(&t, "bot", &p, "hi")).await;
    server.stop().await;
}

#[tokio::test]
async fn dms_count_against_the_flood_limit_like_chat() {
    let server = TestServer::with_config(Config {
        // Slow enough that no token comes back while the test runs.
        rate: 0.01,
        burst: 3,
        ..Config::default()
    })
    .await;
    let mut bob = server.join().await;
    bob.send("rename|bob").await;
    bob.expect("rename ok").await;
    let mut alice = server.join().await;
    let a = alice.addr.clone();
    bob.skip_until(&said(&a, &a, "login")).await;

    // Three DMs use up the burst: the chat line after them is dropped, and so is a DM.
    alice
        .send_raw(b"to|bob|1\nto|bob|2\nto|bob|3\nchat 4\nto|bob|5\n")
        .await;
    for i in 1..=3 {
        bob.expect(&dm(&a, &a, "bob", &i.to_string())).await;
        alice.expect(&dm(&a, &a, "bob", &i.to_string())).await;
    }
    alice
        .expect(
            "error: you are sending too fast (at most 0.01 lines per second, 3 at once); line dropped",
        )
        .await;
    // Keeping on with DMs alone gets it disconnected, like a chat flood.
    alice.send_raw(b"to|bob|6\nto|bob|7\nto|bob|8\n").await;
    assert_eq!(
        alice.expect_closed().await,
        vec!["error: excess flood: you kept sending too fast; disconnecting".to_string()]
    );
    // Bob got none of the dropped lines: the next he hears of alice is her leaving.
    bob.expect(&said(&a, &a, "login out")).await;
    server.stop().await;
}

#[tokio::test]
async fn dms_and_chat_lines_from_one_sender_keep_their_order() {
    let server = TestServer::start().await;
    let [mut alice, mut bob, mut carol] = room(&server, ["alice", "bob", "carol"]).await;
    let a = alice.addr.clone();

    // A few hundred lines in a pattern that mixes runs of DMs and of chat, all in one
    // write, so the server handles them as fast as it can.
    let mut sent = Vec::new();
    let mut bytes = String::new();
    for i in 0..600 {
        let is_dm = matches!(i % 7, 0 | 2 | 3 | 5) || (i / 50) % 2 == 1;
        let line = if is_dm {
            bytes.push_str(&format!("to|bob|dm {i}\n"));
            dm(&a, "alice", "bob", &format!("dm {i}"))
        } else {
            bytes.push_str(&format!("chat {i}\n"));
            said(&a, "alice", &format!("chat {i}"))
        };
        sent.push((is_dm, line));
    }
    alice.send_raw(bytes.as_bytes()).await;
    // Bob and alice get all of them in the order sent; carol gets the chat lines alone,
    // in order.
    for (_, line) in &sent {
        bob.expect(line).await;
        alice.expect(line).await;
    }
    for (_, line) in sent.iter().filter(|(is_dm, _)| !is_dm) {
        carol.expect(line).await;
    }
    next_is_marker(&mut alice, "alice", &mut [&mut bob, &mut carol]).await;
    server.stop().await;
}

#[tokio::test]
async fn dm_order_holds_for_a_json_recipient_too() {
    let server = TestServer::start().await;
    let mut bot = named_json(&server, "bot").await;
    let mut alice = named(&server, "alice").await;
    let a = alice.addr.clone();
    assert!(matches!(bot.event().await, ServerEvent::Join { .. }));
    assert!(matches!(bot.event().await, ServerEvent::Rename { .. }));
    let mut bytes = String::new();
    for i in 0..300 {
        if i % 3 == 0 {
            bytes.push_str(&format!("chat {i}\n"));
        } else {
            bytes.push_str(&format!("to|bot|dm {i}\n"));
        }
    }
    alice.send_raw(bytes.as_bytes()).await;
    for i in 0..300 {
        match bot.event().await {
            ServerEvent::Chat { addr, text, .. } if i % 3 == 0 => {
                assert_eq!((addr.as_str(), text), (a.as_str(), format!("chat {i}")));
            }
            ServerEvent::Dm { from, text, .. } if i % 3 != 0 => {
                assert_eq!((from.addr.as_str(), text), (a.as_str(), format!("dm {i}")));
            }
            other => panic!("line {i}: got {other:?}"),
        }
    }
    server.stop().await;
}

/// Reads a plain `history:` block that ends with `last`, returning its lines without their
/// timestamps.
async fn plain_history(client: &mut Client, last: &str) -> Vec<String> {
    client.expect("history:").await;
    let mut lines = Vec::new();
    loop {
        let line = client.line().await;
        // `2026-12-02T02:41:07Z [ADDR]NAME: TEXT`
        let (ts, rest) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("not a history line: {line:?}"));
        assert!(ts.ends_with('Z'), "not a history line: {line:?}");
        lines.push(rest.to_string());
        if rest == last {
            return lines;
        }
    }
}

#[tokio::test]
async fn dms_are_never_in_the_room_history() {
    let server = TestServer::start().await;
    let mut alice = named(&server, "alice").await;
    let mut bot = named_json(&server, "bot").await;
    let (a, t) = (alice.addr.clone(), bot.addr.clone());
    alice.skip_until(&said(&t, &t, "login")).await;
    alice.send("before").await;
    alice.send("to|bot|secret one").await;
    alice.send("to|alice|secret two").await;
    bot.send(r#"{"type":"dm","to":"alice","text":"secret three"}"#)
        .await;
    alice
        .skip_until(&dm(&bot.addr, "bot", "alice", "secret three"))
        .await;
    alice.send("after").await;
    alice.skip_until(&said(&a, "alice", "after")).await;
    for _ in 0..4 {
        // before, secret one, secret three (echo), after
        bot.event().await;
    }

    // Plain: the newest lines end with `after`, and `before` is right ahead of it.
    alice.send("history|500").await;
    let lines = plain_history(&mut alice, &said(&a, "alice", "after")).await;
    assert!(
        lines.iter().all(|l| !l.contains("secret")),
        "a DM in the history: {lines:?}"
    );
    assert_eq!(
        lines[lines.len() - 2..],
        [said(&a, "alice", "before"), said(&a, "alice", "after")]
    );

    // JSON: likewise.
    bot.send(r#"{"type":"history","limit":500}"#).await;
    let line = bot.line().await;
    assert!(!line.contains("secret"), "a DM in the history: {line}");
    let ServerEvent::History { events, .. } = ServerEvent::parse_json(&line).expect("history")
    else {
        panic!("not a history answer: {line}");
    };
    let texts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Chat { text, .. } => Some(text.as_str()),
            ServerEvent::Dm { .. } => panic!("a DM in the history: {line}"),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["before", "after"]);
    server.stop().await;
}

#[tokio::test]
async fn a_recipient_that_never_reads_is_dropped_and_the_sender_keeps_going() {
    let server = TestServer::with_config(Config {
        sendq_bytes: 32 * 1024,
        ..Config::unlimited()
    })
    .await;
    let mut watcher = named(&server, "watcher").await;
    let mut alice = named(&server, "alice").await;
    // The sleeper joins and never reads again.
    let sleeper = named(&server, "sleeper").await;
    let s = sleeper.addr.clone();
    let a = alice.addr.clone();
    alice.skip_until(&said(&s, &s, "login")).await;
    watcher.skip_until(&said(&s, &s, "login")).await;

    // 2 KB DMs, 5 in flight at a time (so alice's own echoes stay well within her queue),
    // until the server says the sleeper is gone; a sleeper that is never dropped fails at
    // the bound (20 MB, far beyond socket buffers and the queue).
    let text = "z".repeat(2000);
    let echo = dm(&a, "alice", "sleeper", &text);
    let gone = "error: no user named sleeper is online";
    let left = said(&s, "sleeper", "login out");
    let started = std::time::Instant::now();
    let mut delivered = 0;
    'sending: for _ in 0..2_000 {
        for _ in 0..5 {
            alice.send(&format!("to|sleeper|{text}")).await;
        }
        for _ in 0..5 {
            let line = alice.line().await;
            if line == gone {
                break 'sending;
            }
            if line == left {
                // Alice hears the sleeper leave too; the DMs after it are refused.
                continue;
            }
            assert!(line == echo, "unexpected line {:.100}", line);
            delivered += 1;
        }
    }
    eprintln!(
        "{delivered} DMs queued before the sleeper was dropped, in {:?}",
        started.elapsed()
    );
    assert!(delivered < 10_000, "the sleeper was never dropped");
    // The others heard it leave, and the sender is still in the room and talking.
    watcher.skip_until(&left).await;
    alice.send("still here").await;
    let still = said(&a, "alice", "still here");
    alice.skip_until(&still).await;
    watcher.expect(&still).await;
    // When the sleeper reads again, its last line says why it was dropped.
    let mut sleeper = sleeper;
    let rest = tokio::time::timeout(STEP * 3, sleeper.expect_closed())
        .await
        .expect("the sleeper's socket closes");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("error: you fell too far behind reading; disconnecting"),
        "{} lines",
        rest.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_json_sender_is_told_when_the_recipient_is_gone() {
    let server = TestServer::start().await;
    let mut bot = server.join_json().await;
    let bob = named(&server, "bob").await;
    let b = bob.addr.clone();
    assert!(matches!(bot.event().await, ServerEvent::Join { .. }));
    assert!(matches!(bot.event().await, ServerEvent::Rename { .. }));
    drop(bob);
    match bot.event().await {
        ServerEvent::Leave { addr, .. } => assert_eq!(addr, b),
        other => panic!("expected bob's leave, got {other:?}"),
    }
    bot.send(r#"{"type":"dm","to":"bob","text":"hi"}"#).await;
    assert_eq!(
        bot.event().await,
        ServerEvent::Error {
            code: ErrorCode::NoSuchUser,
            message: "no user named bob is online".into()
        }
    );
    server.stop().await;
}
