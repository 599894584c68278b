//! Cluster mode when something fails: a node killed with `kill -9`, Redis stopped and
//! restarted with its data, and Redis restarted empty.

use chat_protocol::{ClientCommand, HELLO_LINE, LeaveReason, ServerEvent};
use chat_tests::cluster::{Redis, nodes};
use chat_tests::{Client, STEP, ServerProcess, said};
use std::time::{Duration, Instant};

const UNAVAILABLE: &str = "notice: the room is unavailable (its shared log cannot be reached); lines you send now are refused";
const BACK: &str = "notice: the room is back";

async fn join(server: std::net::SocketAddr) -> Client {
    let mut client = Client::connect(server).await;
    let me = client.addr.clone();
    client.expect(&said(&me, &me, "login")).await;
    client.expect(&said(&me, &me, "I am here")).await;
    client
}

async fn join_json(server: std::net::SocketAddr) -> Client {
    let mut client = Client::connect(server).await;
    client.send(HELLO_LINE).await;
    client.skip_until_prefix(r#"{"type":"welcome""#).await;
    client
}

/// Sends a marker and returns every line before its echo.
async fn until_marker(client: &mut Client, marker: &str) -> Vec<String> {
    client.send(marker).await;
    let me = client.addr.clone();
    let mut skipped = Vec::new();
    loop {
        let line = client.line().await;
        if line.starts_with(&format!("[{me}]")) && line.ends_with(&format!(": {marker}")) {
            return skipped;
        }
        skipped.push(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_leave_once_within_the_node_timeout() {
    let redis = Redis::start();
    let url = redis.url();
    let node = |id: &str| {
        ServerProcess::start(&[
            "--cluster",
            &url,
            "--node-id",
            id,
            "--node-timeout",
            "2s",
            "--rate",
            "0",
        ])
    };
    let (p0, p1, mut p2) = (node("p0"), node("p1"), node("p2"));
    let mut json = join_json(p0.addr).await;
    let mut watcher = join(p1.addr).await;
    let mut victims = Vec::new();
    for i in 0..3 {
        let mut victim = join(p2.addr).await;
        if i == 0 {
            victim.send("rename|victim").await;
            victim.skip_until("rename ok").await;
        }
        victims.push(victim);
    }
    // The watcher's node has applied everything once it sees a line sent after it all.
    victims[2].send("ready").await;
    let last = victims[2].addr.clone();
    watcher.skip_until(&said(&last, &last, "ready")).await;
    let names: Vec<(String, String)> = victims
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let name = if i == 0 {
                "victim".to_string()
            } else {
                v.addr.clone()
            };
            (v.addr.clone(), name)
        })
        .collect();
    // The watcher knows them all.
    let listed = watcher.who().await;
    for (addr, name) in &names {
        assert!(listed.contains(&format!("{addr}:{name}")), "{listed:?}");
    }

    p2.kill_9();
    let killed = Instant::now();
    let mut left = Vec::new();
    while left.len() < names.len() {
        let line = watcher.line().await;
        if let Some((addr, name)) = names
            .iter()
            .find(|(addr, name)| line == said(addr, name, "login out"))
        {
            left.push((addr.clone(), name.clone()));
        }
    }
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(2 + 2),
        "announced {took:?} after the kill"
    );
    // In join order, each once.
    assert_eq!(left, names);
    let after = until_marker(&mut watcher, "after the sweep").await;
    assert!(
        !after.iter().any(|l| l.ends_with(": login out")),
        "a leave announced twice: {after:?}"
    );
    // JSON clients learn why.
    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        if let ServerEvent::Leave { reason, .. } = json.event().await {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, vec![LeaveReason::NodeLost; 3]);
    // Nobody lists them, and their names are free.
    let listed = watcher.who().await;
    assert!(
        names
            .iter()
            .all(|(addr, _)| !listed.iter().any(|u| u.starts_with(addr.as_str()))),
        "{listed:?}"
    );
    watcher.send("rename|victim").await;
    watcher.skip_until("rename ok").await;
    drop((p0, p1));
}

/// Waits until `client` has been told the room is unavailable, and returns what came
/// before.
async fn told_unavailable(client: &mut Client) -> Vec<String> {
    client.skip_until(UNAVAILABLE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_lines_are_refused_and_afterwards_nothing_is_lost_or_doubled() {
    let mut redis = Redis::start_persistent();
    let timeout = Duration::from_secs(2);
    let nodes = nodes(&redis, 2, timeout).await;
    let mut alice = join(nodes[0].addr).await;
    let mut bob = join(nodes[1].addr).await;
    let mut bot = join_json(nodes[0].addr).await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.send("rename|alice").await;
    alice.skip_until("rename ok").await;
    alice.send("before").await;
    bob.skip_until(&said(&a, "alice", "before")).await;

    redis.kill();
    told_unavailable(&mut alice).await;
    told_unavailable(&mut bob).await;
    alice.send("while down").await;
    alice
        .expect("error: the room is unavailable (its shared log cannot be reached); your line was not sent")
        .await;
    alice.send("rename|alicia").await;
    alice
        .expect("error: rename refused: the room is unavailable (its shared log cannot be reached); try again later")
        .await;
    bob.send("to|alice|psst").await;
    bob.expect("error: the room is unavailable (its shared log cannot be reached); your message was not sent")
        .await;
    // Down for longer than the node timeout: still, nobody is a lost node.
    tokio::time::sleep(timeout + Duration::from_secs(1)).await;
    redis.restart();
    // Alice's node may not have read her last line when Redis went away: it delivers it
    // when Redis is back (before saying so), and nothing else.
    let caught_up = alice.skip_until(BACK).await;
    assert!(
        caught_up.iter().all(|l| *l == said(&a, "alice", "before")),
        "{caught_up:?}"
    );
    bob.expect(BACK).await;

    alice.send("after").await;
    let between = bob.skip_until(&said(&a, "alice", "after")).await;
    assert!(between.is_empty(), "bob got {between:?}");
    let listed = bob.who().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&format!("{a}:alice")) && listed.contains(&format!("{b}:{b}")));
    // No leave was announced, and the line refused was never delivered.
    let mut live = Vec::new();
    loop {
        let line = bot.line().await;
        let event = ServerEvent::parse_json(&line).expect("json");
        assert!(!matches!(event, ServerEvent::Leave { .. }), "{line}");
        if let ServerEvent::Chat { text, .. } = &event {
            assert_ne!(text, "while down");
            if text == "after" {
                live.push(event);
                break;
            }
        }
        if event.stamp().is_some() {
            live.push(event);
        }
    }
    // History across the outage, on the other node, is exactly what went out, gap-free.
    let mut reader = join_json(nodes[1].addr).await;
    let first = live[0].stamp().expect("stamped").seq;
    reader
        .send_json(&ClientCommand::History {
            before: None,
            after: Some(first - 1),
            limit: Some(live.len() as u32),
        })
        .await;
    let (events, gap) = loop {
        if let ServerEvent::History { events, gap, .. } = reader.event().await {
            break (events, gap);
        }
    };
    assert!(!gap);
    assert_eq!(events, live);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_across_an_outage_is_each_line_delivered_once_or_refused() {
    let mut redis = Redis::start_persistent();
    let nodes = nodes(&redis, 2, Duration::from_secs(5)).await;
    let sender = join(nodes[0].addr).await;
    let mut receiver = join(nodes[1].addr).await;
    let s = sender.addr.clone();
    let total = 3000;
    let (mut lines, mut writer) = sender.split();
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for i in 0..total {
            writer
                .write_all(format!("f {i}\n").as_bytes())
                .await
                .expect("write");
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
            if i == total / 3 {
                // Let Redis die mid-flood (the test kills it when it sees this line).
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        writer
    });
    // Kill Redis once the flood is a third through; bring it back a little later.
    receiver
        .skip_until(&said(&s, &s, &format!("f {}", total / 3)))
        .await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let mut writer = flood.await.expect("flood");
    // The sender: each line either comes back or is refused, never both, never twice.
    let mut echoed = Vec::new();
    let mut refused = 0;
    let mut back = false;
    let deadline = Instant::now() + STEP * 3;
    while echoed.len() + refused < total || !back {
        assert!(
            Instant::now() < deadline,
            "{} + {refused} of {total}",
            echoed.len()
        );
        let line = lines.line().await;
        if let Some(n) = line.strip_prefix(&format!("[{s}]{s}: f ")) {
            echoed.push(n.parse::<usize>().expect("n"));
        } else if line.starts_with("error: the room is unavailable") {
            refused += 1;
        } else if line == BACK {
            back = true;
        }
    }
    // Nothing more comes for the flood: no line refused is delivered later, none twice.
    {
        use tokio::io::AsyncWriteExt;
        writer.write_all(b"marker\n").await.expect("write");
    }
    let extra = lines.skip_until(&said(&s, &s, "marker")).await;
    assert!(
        !extra
            .iter()
            .any(|l| l.contains(": f ") || l.starts_with("error:")),
        "more answers than lines: {extra:?}"
    );
    assert_eq!(echoed.len() + refused, total);
    assert!(
        refused > 0,
        "the outage refused nothing: nothing was tested"
    );
    assert!(
        echoed.windows(2).all(|w| w[0] < w[1]),
        "echoes out of order or doubled"
    );
    // The other node delivered exactly the same lines, in the same order (it had read up
    // to the third already).
    let rest: Vec<usize> = echoed.iter().copied().filter(|n| *n > total / 3).collect();
    let mut got = Vec::new();
    while got.len() < rest.len() {
        let line = receiver.line().await;
        if let Some(n) = line.strip_prefix(&format!("[{s}]{s}: f ")) {
            got.push(n.parse::<usize>().expect("n"));
        }
    }
    assert_eq!(got, rest);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_keeps_the_room_and_history_says_gap() {
    let mut redis = Redis::start();
    let nodes = nodes(&redis, 2, Duration::from_secs(2)).await;
    let mut alice = join(nodes[0].addr).await;
    let mut bob = join(nodes[1].addr).await;
    let mut bot = join_json(nodes[0].addr).await;
    let a = alice.addr.clone();
    alice.send("rename|alice").await;
    alice.skip_until("rename ok").await;
    alice.send("before").await;
    bob.skip_until(&said(&a, "alice", "before")).await;
    let before = loop {
        let event = bot.event().await;
        if matches!(&event, ServerEvent::Chat { text, .. } if text == "before") {
            break event.stamp().expect("stamped").seq;
        }
    };

    redis.kill();
    alice.skip_until(UNAVAILABLE).await;
    redis.restart();
    alice.skip_until(BACK).await;
    bob.skip_until(BACK).await;
    alice.send("after").await;
    bob.skip_until(&said(&a, "alice", "after")).await;
    let after = loop {
        let event = bot.event().await;
        assert!(!matches!(event, ServerEvent::Leave { .. }), "{event:?}");
        if matches!(&event, ServerEvent::Chat { text, .. } if text == "after") {
            break event.stamp().expect("stamped").seq;
        }
    };
    assert!(after > before, "seq {after} reused after {before}");
    // Everyone is still in the room, under their names, which are still theirs.
    let listed = bob.who().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&format!("{a}:alice")));
    bob.send("rename|alice").await;
    bob.skip_until("error: rename refused: the name alice is already taken")
        .await;
    // History across the loss says so.
    bot.send_json(&ClientCommand::History {
        before: None,
        after: Some(before - 1),
        limit: None,
    })
    .await;
    loop {
        if let ServerEvent::History { gap, .. } = bot.event().await {
            assert!(gap, "the lost events are not reported");
            break;
        }
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Asks `/healthz` until it answers `status` (the node notices Redis going and coming back
/// on its own schedule; there is no event to wait for from outside the process).
async fn health_becomes(metrics: std::net::SocketAddr, status: u16) {
    let deadline = Instant::now() + STEP;
    loop {
        let (got, body) = chat_tests::http_get(metrics, "/healthz").await;
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still {got} ({body:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_503_while_redis_is_unreachable() {
    let mut redis = Redis::start_persistent();
    let url = redis.url();
    let node = ServerProcess::start(&[
        "--cluster",
        &url,
        "--node-timeout",
        "2s",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = node.metrics_addr.expect("the metrics address is logged");
    let mut user = join(node.addr).await;
    health_becomes(metrics, 200).await;
    redis.kill();
    health_becomes(metrics, 503).await;
    let (_, body) = chat_tests::http_get(metrics, "/healthz").await;
    assert_eq!(body, "unavailable: the cluster's Redis cannot be reached\n");
    redis.restart();
    health_becomes(metrics, 200).await;
    // The user stayed connected through it all.
    user.skip_until(BACK).await;
}

/// Issue 12: "a line answered with `error:` is never delivered later", for direct messages
/// in doubt. Redis freezes (SIGSTOP) with a pipeline of direct messages sent to it and not
/// answered; the node calls Redis unreachable and keeps them in doubt; Redis thaws and runs
/// them (they were in its socket, under the old fence, which still held). The sender must
/// then see each one either sent (its copy) or refused, never both, and the recipient
/// exactly the sent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_in_doubt_are_sent_or_refused_never_both() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2, Duration::from_secs(5)).await;
    let mut alice = join(nodes[0].addr).await;
    let mut bob = join(nodes[1].addr).await;
    let a = alice.addr.clone();
    let b = bob.addr.clone();
    alice.send("rename|alice").await;
    alice.skip_until("rename ok").await;
    bob.send("rename|bob").await;
    bob.skip_until("rename ok").await;
    // Alice's node knows bob's name once alice has seen a line bob sent after his rename.
    bob.send("bob here").await;
    alice.skip_until(&said(&b, "bob", "bob here")).await;

    let total = 20;
    redis.pause();
    let mut flood = String::new();
    for i in 0..total {
        flood.push_str(&format!("to|bob|d {i}\n"));
    }
    alice.send(flood.trim_end()).await;
    let copy = |i: usize| format!("[{a}]alice -> bob: d {i}");
    let (mut sent, mut refused) = (Vec::new(), 0);
    let mut count = |lines: Vec<String>| {
        for line in lines {
            if let Some(i) = (0..total).find(|&i| line == copy(i)) {
                sent.push(i);
            } else if line.starts_with("error: the room is unavailable") {
                refused += 1;
            }
        }
    };
    // The node gives up on the pipeline (its response timeout) and tells its users; then
    // Redis thaws, runs what waited in its socket, and the node settles what is in doubt.
    count(alice.skip_until(UNAVAILABLE).await);
    redis.resume();
    count(alice.skip_until(BACK).await);
    alice.send("marker").await;
    count(alice.skip_until(&said(&a, "alice", "marker")).await);
    // Copies read from the DM stream may come after the marker: a second one bounds them.
    alice.send("marker 2").await;
    count(alice.skip_until(&said(&a, "alice", "marker 2")).await);
    assert_eq!(
        sent.len() + refused,
        total,
        "each direct message is sent or refused, once: sent {sent:?}, refused {refused}"
    );
    assert!(
        !sent.is_empty(),
        "no direct message in doubt ran: nothing was tested"
    );
    let mut got = Vec::new();
    for line in bob.skip_until(&said(&a, "alice", "marker 2")).await {
        if let Some(i) = (0..total).find(|&i| line == copy(i)) {
            got.push(i);
        }
    }
    assert_eq!(
        got, sent,
        "the recipient got other messages than the sender was told"
    );
    for node in nodes {
        node.stop().await;
    }
}

/// A TCP proxy in front of Redis for one node, which the test can cut (every connection
/// through it dropped, new ones refused) and restore: that node loses Redis while the
/// others keep it.
struct Proxy {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    async fn start(redis_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = std::sync::Arc::new(tokio::sync::watch::Sender::new(true));
        let state = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*state.borrow() {
                    continue;
                }
                let mut closed = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Proxy { addr, open }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// Redis loses its data while one node cannot reach it; meanwhile a user of another node
/// takes the name of a user of the cut-off node. When that node is back, the name stays
/// with who took it, and its former holder is renamed to their address (in the log, so
/// every node's `who` agrees) and told so with a notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_while_redis_had_lost_it_stays_taken_and_its_former_holder_is_told() {
    let mut redis = Redis::start();
    let proxy = Proxy::start(redis.port).await;
    let mut cut_off = chat_tests::cluster::node_config(&redis, "x", Duration::from_secs(5));
    if let Some(cluster) = &mut cut_off.cluster {
        cluster.url = proxy.url();
    }
    let x = chat_tests::TestServer::with_config(cut_off).await;
    let y = chat_tests::TestServer::with_config(chat_tests::cluster::node_config(
        &redis,
        "y",
        Duration::from_secs(5),
    ))
    .await;
    let mut alice = join(x.addr).await;
    let mut bob = join(y.addr).await;
    let (a, b) = (alice.addr.clone(), bob.addr.clone());
    alice.send("rename|alice").await;
    alice.skip_until("rename ok").await;
    alice.send("alice here").await;
    bob.skip_until(&said(&a, "alice", "alice here")).await;

    // Node x loses Redis; Redis restarts empty; node y re-registers bob.
    proxy.cut();
    alice.skip_until(UNAVAILABLE).await;
    redis.kill();
    redis.restart();
    bob.skip_until(BACK).await;
    // The name is unclaimed now: bob takes it.
    bob.send("rename|alice").await;
    bob.skip_until("rename ok").await;
    // Node x is back: alice's name is bob's.
    proxy.restore();
    let notice = format!(
        "notice: someone else took the name alice while the room had lost its data; you are {a} again"
    );
    let before_back = alice.skip_until(BACK).await;
    if !before_back.contains(&notice) {
        alice.skip_until(&notice).await;
    }
    alice.send("who am i").await;
    for client in [&mut alice, &mut bob] {
        client.skip_until(&said(&a, &a, "who am i")).await;
        let listed = client.who().await;
        assert_eq!(listed, vec![format!("{a}:{a}"), format!("{b}:alice")]);
    }
    alice.send("rename|alice").await;
    alice
        .skip_until("error: rename refused: the name alice is already taken")
        .await;
    x.stop().await;
    y.stop().await;
}

/// While Redis is unreachable, history the node's memory covers is still answered, and what
/// it does not cover is refused at once (not after a read of the stream times out, 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_history_in_memory_is_answered_and_the_rest_refused_at_once() {
    let redis = Redis::start();
    let mut config = chat_tests::cluster::node_config(&redis, "n0", Duration::from_secs(5));
    if let Some(cluster) = &mut config.cluster {
        cluster.history_cache = 3;
    }
    let node = chat_tests::TestServer::with_config(config).await;
    let mut bot = join_json(node.addr).await;
    for i in 0..6 {
        bot.send_json(&ClientCommand::Chat {
            text: format!("m{i}"),
        })
        .await;
    }
    let newest = loop {
        let event = bot.event().await;
        if matches!(&event, ServerEvent::Chat { text, .. } if text == "m5") {
            break event.stamp().expect("stamped").seq;
        }
    };
    // Frozen rather than killed: a read sent to it would hang until its timeout, not fail.
    redis.pause();
    bot.skip_until_prefix(r#"{"type":"notice","code":"room_unavailable""#)
        .await;
    let ask = |after| ClientCommand::History {
        before: None,
        after: Some(after),
        limit: Some(10),
    };
    // The newest three are in memory.
    bot.send_json(&ask(newest - 2)).await;
    loop {
        match bot.event().await {
            ServerEvent::History { events, more, gap } => {
                let texts: Vec<_> = events
                    .iter()
                    .filter_map(|e| match e {
                        ServerEvent::Chat { text, .. } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(texts, ["m4", "m5"]);
                assert!(!more && !gap);
                break;
            }
            ServerEvent::Error { code, message } => panic!("{code:?}: {message}"),
            _ => {}
        }
    }
    // Older ones would need the stream: refused, at once.
    let asked = Instant::now();
    bot.send_json(&ask(0)).await;
    loop {
        match bot.event().await {
            ServerEvent::Error { code, .. } => {
                assert_eq!(code, chat_protocol::ErrorCode::Unavailable);
                break;
            }
            ServerEvent::History { .. } => panic!("answered without the stream"),
            _ => {}
        }
    }
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        asked.elapsed()
    );
    redis.resume();
    node.stop().await;
}
