//! Cluster mode end to end: three in-process nodes on one real `redis-server` (started by
//! the test on a free port), real TCP clients spread over the nodes.

use chat_protocol::{ClientCommand, HELLO_LINE, ServerEvent};
use chat_tests::cluster::{Redis, addrs, node_config, nodes};
use chat_tests::{Client, STEP, assert_complete, exchange_across, said};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Connects and reads past this client's own `login` and `I am here`.
async fn join(server: std::net::SocketAddr) -> Client {
    let mut client = Client::connect(server).await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    client.expect(&said(&me, &me, "I am here")).await;
    client
}

/// Connects in JSON mode and reads up to the welcome; returns its seq.
async fn join_json(server: std::net::SocketAddr) -> (Client, u64) {
    let mut client = Client::connect(server).await;
    client.send(HELLO_LINE).await;
    loop {
        let line = client.line().await;
        if let Ok(ServerEvent::Welcome { seq, .. }) = ServerEvent::parse_json(&line) {
            return (client, seq);
        }
    }
}

async fn stop_all(nodes: Vec<chat_tests::TestServer>) {
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_three_nodes_is_one_order_for_everyone() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, TIMEOUT).await;
    let received = exchange_across(&addrs(&nodes), 9, 200, 60, 16).await;
    assert_complete(&received, 9, 200);
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gives_each_event_the_same_seq_and_bytes() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, TIMEOUT).await;
    let mut bots = Vec::new();
    let mut newest_welcome = 0;
    for node in &nodes {
        let (bot, seq) = join_json(node.addr).await;
        newest_welcome = newest_welcome.max(seq);
        bots.push(bot);
    }
    let mut writers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut nc = join(node.addr).await;
        nc.send(&format!("hello from node {i}")).await;
        nc.send(&format!("rename|n{i}user")).await;
        writers.push(nc);
    }
    // Every bot receives, after the newest welcome, the same lines byte for byte.
    let mut streams = Vec::new();
    for bot in &mut bots {
        let mut lines = Vec::new();
        while lines.len() < 9 {
            let line = bot.line().await;
            let event = ServerEvent::parse_json(&line).expect("json");
            if event.stamp().is_some_and(|s| s.seq > newest_welcome) {
                lines.push(line);
            }
        }
        streams.push(lines);
    }
    for lines in &streams {
        assert_eq!(lines, &streams[0], "nodes disagree");
    }
    let seqs: Vec<u64> = streams[0]
        .iter()
        .filter_map(|l| ServerEvent::parse_json(l).ok()?.stamp().map(|s| s.seq))
        .collect();
    assert_eq!(
        seqs,
        (newest_welcome + 1..=newest_welcome + 9).collect::<Vec<_>>()
    );
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_on_any_node_lists_everyone_in_join_order() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, TIMEOUT).await;
    let mut watcher = join(nodes[0].addr).await;
    let mut clients = Vec::new();
    for node in &nodes {
        let client = join(node.addr).await;
        watcher
            .skip_until(&said(&client.addr, &client.addr, "login"))
            .await;
        clients.push(client);
    }
    clients[1].send("rename|bea").await;
    clients[1].skip_until("rename ok").await;
    // Every node has applied the rename once its client has seen a line sent after it.
    clients[1].send("renamed").await;
    let bea = clients[1].addr.clone();
    for client in &mut clients {
        client.skip_until(&said(&bea, "bea", "renamed")).await;
    }
    let expected = vec![
        format!("{0}:{0}", watcher.addr),
        format!("{0}:{0}", clients[0].addr),
        format!("{}:bea", clients[1].addr),
        format!("{0}:{0}", clients[2].addr),
    ];
    for client in &mut clients {
        assert_eq!(client.who().await, expected);
    }
    // A leave on one node leaves every node's list.
    let gone = clients.remove(0);
    let gone_addr = gone.addr.clone();
    drop(gone);
    watcher
        .skip_until(&said(&gone_addr, &gone_addr, "login out"))
        .await;
    for client in &mut clients {
        // Each node applies the leave when its tail reads it: a client's `who` is behind
        // the leave once the client has seen it.
        client
            .skip_until(&said(&gone_addr, &gone_addr, "login out"))
            .await;
        let listed = client.who().await;
        assert!(
            !listed.iter().any(|u| u.starts_with(&gone_addr)),
            "{listed:?}"
        );
        assert_eq!(listed.len(), 3);
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_a_name_give_it_to_exactly_one() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, TIMEOUT).await;
    let mut a = join(nodes[0].addr).await;
    let mut b = join(nodes[1].addr).await;
    for round in 0..20 {
        let name = format!("racer{round}");
        // Both lines leave at once; each client hears one answer.
        let line = format!("rename|{name}");
        tokio::join!(a.send(&line), b.send(&line));
        let answer_a = a
            .skip_until_prefix_any(&["rename ok", "error: rename refused"])
            .await;
        let answer_b = b
            .skip_until_prefix_any(&["rename ok", "error: rename refused"])
            .await;
        let wins = [&answer_a, &answer_b]
            .iter()
            .filter(|a| a.as_str() == "rename ok")
            .count();
        assert_eq!(wins, 1, "round {round}: {answer_a} / {answer_b}");
        let loser = if answer_a == "rename ok" {
            &answer_b
        } else {
            &answer_a
        };
        assert_eq!(
            *loser,
            format!("error: rename refused: the name {name} is already taken")
        );
    }
    // Look-alikes count as the same name across nodes too.
    a.send("rename|Zed").await;
    a.skip_until("rename ok").await;
    b.send("rename|zed").await;
    b.skip_until("error: rename refused: the name zed is already taken")
        .await;
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_a_user_on_another_node_after_what_came_before() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, TIMEOUT).await;
    let mut alice = join(nodes[0].addr).await;
    let mut bob = join(nodes[2].addr).await;
    alice.send("rename|alice").await;
    alice.skip_until("rename ok").await;
    bob.send("rename|bob").await;
    bob.skip_until("rename ok").await;
    let a = alice.addr.clone();
    // Alice's node knows bob's name once alice has seen a line he sent after his rename.
    bob.send("ready").await;
    alice.skip_until(&said(&bob.addr, "bob", "ready")).await;
    for i in 0..20 {
        alice.send(&format!("chat {i}")).await;
        alice.send(&format!("to|bob|dm {i}")).await;
    }
    let dm = |i: usize| format!("[{a}]alice -> bob: dm {i}");
    for i in 0..20 {
        // The chat line sent before the DM arrives before it, on both sides.
        bob.skip_until(&said(&a, "alice", &format!("chat {i}")))
            .await;
        bob.expect(&dm(i)).await;
        alice
            .skip_until(&said(&a, "alice", &format!("chat {i}")))
            .await;
        alice.expect(&dm(i)).await;
    }
    alice.send("to|nobody|hi").await;
    alice.expect("error: no user named nobody is online").await;
    // A user still under their default name is addressed by it.
    let mut carol = join(nodes[1].addr).await;
    let c = carol.addr.clone();
    // Alice's node knows carol once alice has seen her login.
    alice.skip_until(&said(&c, &c, "login")).await;
    alice.send(&format!("to|{c}|hi carol")).await;
    carol
        .skip_until(&format!("[{a}]alice -> {c}: hi carol"))
        .await;
    stop_all(nodes).await;
}

fn history(before: Option<u64>, after: Option<u64>, limit: Option<u32>) -> ClientCommand {
    ClientCommand::History {
        before,
        after,
        limit,
    }
}

/// Sends `command` and returns the history answer line, skipping live events.
async fn ask(
    client: &mut Client,
    command: &ClientCommand,
) -> (String, Vec<ServerEvent>, bool, bool) {
    client.send_json(command).await;
    loop {
        let line = client.line().await;
        if let Ok(ServerEvent::History { events, more, gap }) = ServerEvent::parse_json(&line) {
            return (line, events, more, gap);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_resume_work_on_another_node() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, TIMEOUT).await;
    let (mut live, _) = join_json(nodes[0].addr).await;
    let mut nc = join(nodes[1].addr).await;
    let n = nc.addr.clone();
    for i in 0..10 {
        nc.send(&format!("line {i}")).await;
    }
    nc.skip_until(&said(&n, &n, "line 9")).await;
    let mut seen = Vec::new();
    loop {
        let line = live.line().await;
        let done = line.contains("\"line 9\"");
        seen.push(line);
        if done {
            break;
        }
    }
    // The live client leaves (its last seq in hand) and comes back on another node.
    let last = ServerEvent::parse_json(seen.last().expect("lines"))
        .ok()
        .and_then(|e| e.stamp().map(|s| s.seq))
        .expect("a seq");
    drop(live);
    for i in 10..15 {
        nc.send(&format!("line {i}")).await;
    }
    nc.skip_until(&said(&n, &n, "line 14")).await;
    let (mut back, welcome_seq) = join_json(nodes[2].addr).await;
    let (_, events, more, gap) = ask(&mut back, &history(None, Some(last), Some(500))).await;
    assert!(!more && !gap);
    let texts: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Chat { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        (10..15).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    // Nothing between its last seq and its welcome is missing: seqs are consecutive.
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| e.stamp().map(|s| s.seq))
        .collect();
    assert_eq!(seqs, (last + 1..=welcome_seq).collect::<Vec<_>>());
    // History holds the events byte for byte as they went out live (on another node).
    let (answer, _, _, _) = ask(&mut back, &history(Some(last + 1), None, Some(11))).await;
    let live_lines = seen[seen.len() - 11..].join(",");
    assert!(answer.contains(&live_lines), "{answer}\n{live_lines}");
    // Plain history on a third node.
    let mut plain = join(nodes[0].addr).await;
    plain.send("history|3").await;
    plain.expect("history:").await;
    for want in [
        said(&n, &n, "line 14"),
        said(&back.addr, &back.addr, "login"),
        said(&plain.addr, &plain.addr, "login"),
    ] {
        let line = plain.line().await;
        assert!(line.ends_with(&want), "{line} / {want}");
    }
    let _ = STEP;
    stop_all(nodes).await;
}

/// `--history-retention` in cluster mode: the sweeper trims the stream by age, nodes
/// forget the events in memory too, and history across the cut says `gap`, as on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_trims_the_stream_and_history_says_gap() {
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for id in ["n0", "n1"] {
        let mut config = node_config(&redis, id, Duration::from_secs(1));
        config.history.retention = Duration::from_millis(1500);
        config.history.sweep_every = Duration::from_millis(100);
        nodes.push(chat_tests::TestServer::with_config(config).await);
    }
    let (mut bot, _) = join_json(nodes[0].addr).await;
    let mut nc = join(nodes[1].addr).await;
    let n = nc.addr.clone();
    nc.send("soon gone").await;
    nc.skip_until(&said(&n, &n, "soon gone")).await;
    let old = loop {
        let event = bot.event().await;
        if matches!(&event, ServerEvent::Chat { text, .. } if text == "soon gone") {
            break event.stamp().expect("stamped").seq;
        }
    };
    // Retention runs in the background, its cut moving with the clock: ask until the old
    // events are gone (both nodes delivered them and once held them in memory).
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (_, events, more, gap) = ask(&mut bot, &history(None, None, Some(100))).await;
        if events.is_empty() {
            assert!(!more && gap, "older events existed and are gone");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = redis.command(&["XRANGE", "chat:log", "-", "+"]);
    assert!(
        kept.starts_with("*0\r\n"),
        "the stream still holds {kept:?}"
    );
    nc.send("fresh").await;
    nc.skip_until(&said(&n, &n, "fresh")).await;
    // Resuming from before the cut: what is left, and `gap`; on the other node too.
    for node in [0, 1] {
        let (mut client, _) = join_json(nodes[node].addr).await;
        let (_, events, _, gap) = ask(&mut client, &history(None, Some(0), Some(100))).await;
        assert!(gap, "node {node}: the trimmed events are not reported");
        assert!(
            events
                .iter()
                .all(|e| e.stamp().is_some_and(|s| s.seq > old)),
            "node {node}: {events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ServerEvent::Chat { text, .. } if text == "fresh")),
            "node {node}: {events:?}"
        );
    }
    let mut plain = join(nodes[0].addr).await;
    plain.send("history|20").await;
    // (The JSON clients above leaving may come first, live.)
    plain.skip_until("history:").await;
    // The block ends with this client's own login, the newest line nc users saw.
    let own_login = said(&plain.addr, &plain.addr, "login");
    let mut block = Vec::new();
    loop {
        let line = plain.line().await;
        let done = line.ends_with(&own_login);
        block.push(line);
        if done {
            break;
        }
    }
    assert!(block.iter().all(|l| !l.contains("soon gone")), "{block:?}");
    assert!(block.iter().any(|l| l.ends_with(&said(&n, &n, "fresh"))));
    nodes.pop().expect("n1").stop().await;
    nodes.pop().expect("n0").stop().await;
}

/// Retention's cut in a stream of old and recent events: the sweeper trims exactly the
/// events older than the retention (found by binary search over seq), and keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_trims_exactly_up_to_the_first_recent_event() {
    let redis = Redis::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    // Seqs 1..=37 an hour old, 38..=50 a second old: the cut is at 38. Seqs 1..=20 as
    // earlier versions wrote them (one field per part), the others as now (one field `e`).
    for seq in 1..=50u64 {
        let ts = if seq <= 37 {
            now - 3_600_000
        } else {
            now - 1_000
        };
        let (id, ts, text) = (format!("{seq}-0"), ts.to_string(), format!("line {seq}"));
        if seq <= 20 {
            add_old_format_line(&redis, &id, &ts, &text);
        } else {
            let packed = format!("c\n{ts}\ngone\n1\n10.0.0.1:1\nold\n0\n{text}");
            redis.command(&["XADD", "chat:log", &id, "e", &packed]);
        }
    }
    redis.command(&["SET", "chat:seq", "50"]);
    let mut config = node_config(&redis, "n0", Duration::from_millis(300));
    config.history.retention = Duration::from_secs(600);
    config.history.sweep_every = Duration::from_millis(50);
    let node = chat_tests::TestServer::with_config(config).await;
    let deadline = tokio::time::Instant::now() + STEP;
    while redis.command(&["XLEN", "chat:log"]) != ":13\r\n" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not trimmed to 13 entries: {}",
            redis.command(&["XLEN", "chat:log"])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = redis.command(&["XRANGE", "chat:log", "-", "+", "COUNT", "1"]);
    assert!(first.contains("38-0"), "{first}");
    // History from before the cut: from 38 on, and the gap said.
    let (mut client, _) = join_json(node.addr).await;
    let (_, events, _, gap) = ask(&mut client, &history(None, Some(0), Some(20))).await;
    assert!(gap);
    assert_eq!(
        events.first().and_then(|e| e.stamp()).map(|s| s.seq),
        Some(38)
    );
    node.stop().await;
}

/// An entry this version cannot read (a newer node's kind, say) is left out of history
/// answers read from the stream, but still counts as existing: a page that reaches it says
/// `more`, so a client pages on instead of stopping short of the older events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_entry_in_the_stream_does_not_end_paging() {
    let redis = Redis::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    for seq in 1..=10u64 {
        let kind = if seq == 5 { "?" } else { "c" };
        let packed = format!("{kind}\n{now}\ngone\n1\n10.0.0.1:1\nold\n0\nline {seq}");
        redis.command(&["XADD", "chat:log", &format!("{seq}-0"), "e", &packed]);
    }
    redis.command(&["SET", "chat:seq", "10"]);
    let mut config = node_config(&redis, "n0", TIMEOUT);
    if let Some(cluster) = &mut config.cluster {
        // Every answer from the stream, not from the node's memory.
        cluster.history_cache = 0;
    }
    let node = chat_tests::TestServer::with_config(config).await;
    let (mut client, _) = join_json(node.addr).await;
    let seqs = |events: &[ServerEvent]| -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| e.stamp().map(|s| s.seq))
            .collect()
    };
    let (_, events, more, _) = ask(&mut client, &history(Some(10), None, Some(4))).await;
    assert_eq!(seqs(&events), vec![6, 7, 8, 9]);
    assert!(more, "seq 5 exists (unreadable) and 1..=4 are older");
    let (_, events, _, gap) = ask(&mut client, &history(Some(6), None, Some(4))).await;
    assert_eq!(seqs(&events), vec![1, 2, 3, 4]);
    assert!(gap, "seq 5 cannot be shown");
    node.stop().await;
}

/// The connection id under which `addr` is registered on node `node`, from Redis.
fn registered_conn(redis: &Redis, node: &str, addr: &str) -> String {
    let reply = redis.command(&["HGETALL", &format!("chat:node:{node}")]);
    let lines: Vec<&str> = reply.split("\r\n").collect();
    let needle = format!("\"a\":\"{addr}\"");
    let at = lines
        .iter()
        .position(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("{addr} is not registered on {node}: {reply}"));
    // `$LEN`, CONN, `$LEN`, JSON: the connection id is two lines above its JSON.
    lines[at - 2].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_refused_inside_a_batch_of_lines_is_refused_alone() {
    refused_alone(false).await;
}

/// The same with the member's record corrupted (no address, no name) instead of deleted:
/// its lines are refused before the script writes anything, never failing the whole run
/// halfway (Redis keeps what a failing script wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_member_record_fails_only_its_own_lines() {
    refused_alone(true).await;
}

async fn refused_alone(corrupt: bool) {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2, TIMEOUT).await;
    let mut gone = join(nodes[0].addr).await;
    let mut here = join(nodes[0].addr).await;
    let mut far = join(nodes[1].addr).await;
    let (g, h) = (gone.addr.clone(), here.addr.clone());
    // Redis forgets one member, as after a sweep while its node was cut off: its lines
    // must be refused, and the lines around them in the same script call logged.
    let conn = registered_conn(&redis, "n0", &g);
    if corrupt {
        redis.command(&["HSET", "chat:node:n0", &conn, r#"{"j":1,"k":""}"#]);
    } else {
        assert!(
            redis
                .command(&["HDEL", "chat:node:n0", &conn])
                .starts_with(":1")
        );
    }
    // Writes wait in Redis for a moment, so that the lines of both, sent turn about, queue
    // up behind the first script call and go to Redis mixed in the same runs of lines.
    assert!(
        redis
            .command(&["CLIENT", "PAUSE", "300", "WRITE"])
            .starts_with("+OK")
    );
    for i in 0..20 {
        gone.send(&format!("gone {i}")).await;
        here.send(&format!("here {i}")).await;
    }
    for _ in 0..20 {
        gone.skip_until_prefix("error: you are no longer in the room")
            .await;
    }
    here.send("marker").await;
    // On both nodes: every accepted line in order, none of the refused ones, ever.
    for client in [&mut here, &mut far] {
        let lines = client.skip_until(&said(&h, &h, "marker")).await;
        let chat: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("here ") || l.contains("gone "))
            .collect();
        let expected: Vec<String> = (0..20)
            .map(|i| said(&h, &h, &format!("here {i}")))
            .collect();
        assert_eq!(chat, expected.iter().collect::<Vec<_>>());
    }
    let lines = gone.skip_until(&said(&h, &h, "marker")).await;
    assert!(!lines.iter().any(|l| l.contains("gone ")), "{lines:?}");
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_in_another_database_of_redis_works() {
    // The tail has a connection of its own: it must select the URL's database too.
    let redis = Redis::start();
    let mut config = chat_tests::cluster::node_config(&redis, "n0", TIMEOUT);
    if let Some(cluster) = &mut config.cluster {
        cluster.url = format!("{}/3", redis.url());
    }
    let node = chat_tests::TestServer::with_config(config).await;
    let mut nc = join(node.addr).await;
    let me = nc.addr.clone();
    nc.send("hello").await;
    nc.expect(&said(&me, &me, "hello")).await;
    assert!(redis.command(&["EXISTS", "chat:log"]).starts_with(":0"));
    node.stop().await;
}

/// A run of chat lines as the chat script stores it (field `b`, id `FIRST-0`): `texts` from
/// seq `first` on, sent by the `senders` (conn, addr, name) by turns.
fn add_run(redis: &Redis, first: u64, ts: u128, senders: &[(u64, &str, &str)], texts: &[String]) {
    let mut value = format!("{ts}\ngone\n{}\n", senders.len());
    for (conn, addr, name) in senders {
        value += &format!("{conn}\n{addr}\n{name}\n");
    }
    for (i, text) in texts.iter().enumerate() {
        let place = i % senders.len() + 1;
        value += &format!("{place}\n{}\n{}\n{text}", 100 + i, text.len());
    }
    let id = format!("{first}-0");
    let reply = redis.command(&["XADD", "chat:log", &id, "b", &value]);
    assert!(reply.contains(&id), "{reply}");
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

fn seqs_of(events: &[ServerEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.stamp().map(|s| s.seq))
        .collect()
}

/// Appends a chat line by "old" at `10.0.0.1:1` as earlier versions wrote it: one stream
/// field per part.
fn add_old_format_line(redis: &Redis, id: &str, ts: &str, text: &str) {
    redis.command(&[
        "XADD",
        "chat:log",
        id,
        "ts",
        ts,
        "t",
        "c",
        "n",
        "gone",
        "c",
        "1",
        "a",
        "10.0.0.1:1",
        "m",
        "old",
        "x",
        text,
        "s",
        "0",
    ]);
}

/// A stream of every shape of entry: seqs 1..=2 one field per part (earlier versions), 3
/// one field `e`, 4..=9 a run of six lines by two senders (one entry, id `4-0`), 10 `e`,
/// 11..=13 a run of three, one of whose texts holds the runs' own separator.
fn every_shape_of_entry(redis: &Redis) {
    let now = now_ms();
    for seq in 1..=2u64 {
        let (id, ts, text) = (format!("{seq}-0"), now.to_string(), format!("line {seq}"));
        add_old_format_line(redis, &id, &ts, &text);
    }
    let one = |seq: u64| {
        let packed = format!("c\n{now}\ngone\n1\n10.0.0.1:1\nold\n0\nline {seq}");
        redis.command(&["XADD", "chat:log", &format!("{seq}-0"), "e", &packed]);
    };
    one(3);
    let two = [(1, "10.0.0.1:1", "old"), (2, "10.0.0.2:2", "bea")];
    add_run(
        redis,
        4,
        now,
        &two,
        &(4..=9).map(|s| format!("line {s}")).collect::<Vec<_>>(),
    );
    one(10);
    let texts = vec![
        "line 11".to_string(),
        "line 12\n3\n1\n7\nnot a record".to_string(),
        "line 13".to_string(),
    ];
    add_run(redis, 11, now, &two, &texts);
    redis.command(&["SET", "chat:seq", "13"]);
}

/// History whose `after` or `before` falls inside a run of events stored as one stream
/// entry: the same events, `more` and `gap` as if each event were an entry, from the stream
/// and from the node's memory alike, byte for byte, across entries of every shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_inside_a_run_of_events_is_answered_event_by_event() {
    let redis = Redis::start();
    every_shape_of_entry(&redis);
    // n0 answers from the stream, n1 from memory (filled from the stream as it starts).
    let mut clients = Vec::new();
    let mut nodes = Vec::new();
    for (id, cache) in [
        ("n0", 0),
        ("n1", chat_server::cluster::recent::DEFAULT_CAPACITY),
    ] {
        let mut config = node_config(&redis, id, TIMEOUT);
        if let Some(cluster) = &mut config.cluster {
            cluster.history_cache = cache;
        }
        let node = chat_tests::TestServer::with_config(config).await;
        let (client, welcome) = join_json(node.addr).await;
        assert_eq!(
            welcome,
            14 + clients.len() as u64,
            "joins follow the stream's 13"
        );
        clients.push(client);
        nodes.push(node);
    }
    // Both nodes have delivered both joins (14 and 15) once n0's client has seen the second.
    loop {
        let line = clients[0].line().await;
        if let Ok(ServerEvent::Join { stamp, .. }) = ServerEvent::parse_json(&line)
            && stamp.is_some_and(|s| s.seq == 15)
        {
            break;
        }
    }
    let mut answers = Vec::new();
    for (node, client) in clients.iter_mut().enumerate() {
        let mut lines = Vec::new();
        for (query, want, want_more) in [
            // `after` inside the first run, and right before it.
            (history(None, Some(5), Some(2)), vec![6, 7], true),
            (history(None, Some(3), Some(3)), vec![4, 5, 6], true),
            // Across the end of a run, an `e` entry and into the next run.
            (history(None, Some(8), Some(4)), vec![9, 10, 11, 12], true),
            (history(None, Some(12), Some(10)), vec![13, 14, 15], false),
            // `before` inside a run: its newer events are left out.
            (history(Some(8), None, Some(3)), vec![5, 6, 7], true),
            (history(Some(12), None, Some(20)), (1..=11).collect(), false),
            (history(Some(6), None, Some(5)), vec![1, 2, 3, 4, 5], false),
            (history(None, None, Some(3)), vec![13, 14, 15], true),
        ] {
            let (line, events, more, gap) = ask(client, &query).await;
            assert_eq!(seqs_of(&events), want, "n{node}: {query:?}: {line}");
            assert_eq!(more, want_more, "n{node}: {query:?}: {line}");
            assert!(!gap, "n{node}: {query:?}: {line}");
            lines.push(line);
        }
        // Each line's sender and text, as the run stored them.
        let (_, events, _, _) = ask(client, &history(None, Some(3), Some(10))).await;
        let said: Vec<(String, String)> = events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Chat { name, text, .. } => Some((name.clone(), text.clone())),
                _ => None,
            })
            .collect();
        let mut expected: Vec<(String, String)> = (4..=9)
            .map(|s| {
                let name = if s % 2 == 0 { "old" } else { "bea" };
                (name.to_string(), format!("line {s}"))
            })
            .collect();
        expected.push(("old".into(), "line 10".into()));
        expected.push(("old".into(), "line 11".into()));
        // (A control character is shown as U+FFFD once parsed, as in any line.)
        expected.push((
            "bea".into(),
            "line 12\u{FFFD}3\u{FFFD}1\u{FFFD}7\u{FFFD}not a record".into(),
        ));
        expected.push(("old".into(), "line 13".into()));
        assert_eq!(said, expected, "n{node}");
        answers.push(lines);
    }
    assert_eq!(answers[0], answers[1], "memory and stream answer alike");
    stop_all(nodes).await;
}

/// `--history-max-events` counts events, not entries: the stream is trimmed up to the
/// entry holding the oldest event to keep, so that entry stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_max_events_keeps_the_run_that_holds_the_oldest_kept_event() {
    let redis = Redis::start();
    // One entry per stream node: `~` trimming is exact.
    redis.command(&["CONFIG", "SET", "stream-node-max-entries", "1"]);
    let now = now_ms();
    let one = [(1, "10.0.0.1:1", "old")];
    // Seqs 1..=100 in runs of ten: ids 1-0, 11-0, ..., 91-0.
    for run in 0..10u64 {
        let first = run * 10 + 1;
        let texts: Vec<String> = (first..first + 10).map(|s| format!("line {s}")).collect();
        add_run(&redis, first, now, &one, &texts);
    }
    redis.command(&["SET", "chat:seq", "100"]);
    let mut config = node_config(&redis, "n0", TIMEOUT);
    config.history.max_events = 25;
    let node = chat_tests::TestServer::with_config(config).await;
    // Its join is seq 101: the newest 25 events are 77..=101, and 77 is in the run 71-0.
    let (mut client, welcome) = join_json(node.addr).await;
    assert_eq!(welcome, 101);
    let first = redis.command(&["XRANGE", "chat:log", "-", "+", "COUNT", "1"]);
    assert!(first.contains("71-0"), "{first}");
    // 71-0, 81-0, 91-0 and the join, 101-0.
    assert_eq!(redis.command(&["XLEN", "chat:log"]), ":4\r\n");
    // Before 80: what the stream keeps of it, and the gap where it was trimmed.
    let (line, events, more, gap) = ask(&mut client, &history(Some(80), None, Some(20))).await;
    assert_eq!(seqs_of(&events), (71..80).collect::<Vec<_>>(), "{line}");
    assert!(!more && gap, "{line}");
    node.stop().await;
}

/// Retention by age over runs: a run's lines share one time, so the sweeper's cut falls
/// between runs, at the first recent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_cuts_between_runs() {
    let redis = Redis::start();
    let now = now_ms();
    let one = [(1, "10.0.0.1:1", "old")];
    // Runs 1-0 and 11-0 an hour old, 21-0 and 31-0 a second old.
    for run in 0..4u64 {
        let first = run * 10 + 1;
        let ts = if run < 2 {
            now - 3_600_000
        } else {
            now - 1_000
        };
        let texts: Vec<String> = (first..first + 10).map(|s| format!("line {s}")).collect();
        add_run(&redis, first, ts, &one, &texts);
    }
    redis.command(&["SET", "chat:seq", "40"]);
    let mut config = node_config(&redis, "n0", Duration::from_millis(300));
    config.history.retention = Duration::from_secs(600);
    config.history.sweep_every = Duration::from_millis(50);
    let node = chat_tests::TestServer::with_config(config).await;
    let deadline = tokio::time::Instant::now() + STEP;
    while redis.command(&["XLEN", "chat:log"]) != ":2\r\n" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not trimmed to 2 runs: {}",
            redis.command(&["XLEN", "chat:log"])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = redis.command(&["XRANGE", "chat:log", "-", "+", "COUNT", "1"]);
    assert!(first.contains("21-0"), "{first}");
    let (mut client, _) = join_json(node.addr).await;
    let (_, events, _, gap) = ask(&mut client, &history(None, Some(0), Some(5))).await;
    assert!(gap);
    assert_eq!(seqs_of(&events), (21..=25).collect::<Vec<_>>());
    node.stop().await;
}
