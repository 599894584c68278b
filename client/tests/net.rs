//! The connection task against a real in-process chat-server: JSON mode and `--plain` mode
//! (the original's text, which our server also speaks), without a terminal.

use chat_protocol::{ClientCommand, ServerEvent};
use chat_tui::net::{self, NetConfig, NetEvent};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start_server() -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = chat_server::Config {
        rate: 0.0,
        ..chat_server::Config::default()
    };
    tokio::spawn(chat_server::run(listener, config, shutdown.clone()));
    (addr, shutdown)
}

struct Conn {
    commands: UnboundedSender<ClientCommand>,
    events: UnboundedReceiver<NetEvent>,
}

impl Conn {
    fn start(addr: SocketAddr, plain: bool) -> Conn {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(net::run(
            NetConfig::new(addr.to_string(), plain),
            command_rx,
            event_tx,
        ));
        Conn { commands, events }
    }

    /// The next event that `pick` accepts, skipping others.
    async fn until<T>(&mut self, what: &str, pick: impl Fn(&NetEvent) -> Option<T>) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("net task alive");
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        };
        timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn server_event<T>(&mut self, what: &str, pick: impl Fn(&ServerEvent) -> Option<T>) -> T {
        self.until(what, |e| match e {
            NetEvent::Server(event, _) => pick(event),
            _ => None,
        })
        .await
    }

    fn send(&self, command: ClientCommand) {
        self.commands.send(command).unwrap();
    }
}

#[tokio::test]
async fn json_mode_welcome_chat_who_rename() {
    let (addr, shutdown) = start_server().await;
    let mut json = Conn::start(addr, false);
    json.until("connected", |e| {
        matches!(e, NetEvent::Connected { plain: false }).then_some(())
    })
    .await;
    let me = json
        .server_event("welcome", |e| match e {
            ServerEvent::Welcome { addr, .. } => Some(addr.clone()),
            _ => None,
        })
        .await;
    json.send(ClientCommand::Rename { name: "jay".into() });
    json.server_event("renamed", |e| {
        matches!(e, ServerEvent::Renamed { name } if name == "jay").then_some(())
    })
    .await;
    json.send(ClientCommand::Chat { text: "who".into() });
    let from = json
        .server_event("own chat back, as chat", |e| match e {
            ServerEvent::Chat { addr, text, .. } if text == "who" => Some(addr.clone()),
            _ => None,
        })
        .await;
    assert_eq!(from, me);
    json.send(ClientCommand::Who);
    let users = json
        .server_event("user list", |e| match e {
            ServerEvent::Users { users } => Some(users.clone()),
            _ => None,
        })
        .await;
    assert_eq!(users[0].name, "jay");
    shutdown.cancel();
}

#[tokio::test]
async fn plain_mode_reads_the_original_text() {
    let (addr, shutdown) = start_server().await;
    let mut plain = Conn::start(addr, true);
    plain
        .until("connected", |e| {
            matches!(e, NetEvent::Connected { plain: true }).then_some(())
        })
        .await;
    plain
        .server_event("I am here", |e| {
            matches!(e, ServerEvent::Here { .. }).then_some(())
        })
        .await;
    plain.send(ClientCommand::Rename { name: "pat".into() });
    plain
        .server_event("rename ok, with the name", |e| {
            matches!(e, ServerEvent::Renamed { name } if name == "pat").then_some(())
        })
        .await;
    let mut json = Conn::start(addr, false);
    json.server_event("welcome", |e| {
        matches!(e, ServerEvent::Welcome { .. }).then_some(())
    })
    .await;
    json.send(ClientCommand::Chat {
        text: "hello plain".into(),
    });
    plain
        .server_event("chat from the JSON client", |e| match e {
            ServerEvent::Chat { text, .. } if text == "hello plain" => Some(()),
            _ => None,
        })
        .await;
    plain.send(ClientCommand::Who);
    let users = plain
        .server_event("both users listed", |e| match e {
            ServerEvent::Users { users } if users.len() == 2 => Some(users.clone()),
            _ => None,
        })
        .await;
    assert!(users.iter().any(|u| u.name == "pat"), "{users:?}");
    // A chat line the plain server would take for a command is refused, not sent.
    plain.send(ClientCommand::Chat { text: "who".into() });
    plain
        .until("unsendable", |e| {
            matches!(e, NetEvent::Unsendable(ClientCommand::Chat { text }) if text == "who")
                .then_some(())
        })
        .await;
    shutdown.cancel();
}

#[tokio::test]
async fn lost_connection_is_reported_with_a_retry_delay() {
    let (addr, shutdown) = start_server().await;
    let mut conn = Conn::start(addr, false);
    conn.server_event("welcome", |e| {
        matches!(e, ServerEvent::Welcome { .. }).then_some(())
    })
    .await;
    shutdown.cancel();
    let retry = conn
        .until("disconnected", |e| match e {
            NetEvent::Disconnected { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .await;
    // 0.5 s, less up to half of it at random.
    assert!(
        retry >= Duration::from_millis(250) && retry <= Duration::from_millis(500),
        "{retry:?}"
    );
    let attempt = conn
        .until("reconnecting", |e| match e {
            NetEvent::Connecting { attempt } => Some(*attempt),
            _ => None,
        })
        .await;
    assert_eq!(attempt, 2);
    let retry = conn
        .until("second failure backs off", |e| match e {
            NetEvent::Disconnected { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .await;
    assert!(
        retry >= Duration::from_millis(500) && retry <= Duration::from_secs(1),
        "doubled: {retry:?}"
    );
}
