//! End to end: the real `chat-tui` binary in a pseudo-terminal, read back through a vt100
//! screen parser, against a real `chat-server` on 127.0.0.1 in this process.
//!
//! Every wait is bounded, and a screen is only asserted on once two consecutive frames are
//! identical (no output for a short quiet period after the condition first held).
//!
//! Unix only: the checks read the terminal's modes with `tcgetattr` and send signals.
#![cfg(unix)]

use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const COLS: u16 = 100;
const ROWS: u16 = 30;
/// Longest any single expectation may take: generous for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(20);
/// A frame counts as settled when no output follows it for this long.
const QUIET: Duration = Duration::from_millis(150);

/// A chat-server on its own runtime thread, stopped on drop.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(chat_server::Config {
            rate: 0.0,
            ..chat_server::Config::default()
        })
    }

    fn start_with(config: chat_server::Config) -> Server {
        let (addr_tx, addr_rx) = mpsc::channel();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                addr_tx.send(listener.local_addr().expect("addr")).unwrap();
                chat_server::run(listener, config, token)
                    .await
                    .expect("server runs");
            });
        });
        let addr = addr_rx.recv_timeout(DEADLINE).expect("server started");
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `chat-tui` in a pseudo-terminal.
struct Tui {
    label: &'static str,
    parser: Arc<Mutex<vt100::Parser>>,
    /// One message per chunk of output; closed when the program's side of the pty closes.
    output: Receiver<()>,
    output_closed: bool,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    master: Box<dyn MasterPty + Send>,
}

impl Tui {
    fn start(label: &'static str, server: SocketAddr, name: &str) -> Tui {
        Tui::start_with_env(label, server, name, &[])
    }

    fn start_with_env(
        label: &'static str,
        server: SocketAddr,
        name: &str,
        env: &[(&str, &str)],
    ) -> Tui {
        Tui::start_sized(label, server, name, env, ROWS)
    }

    /// With `rows` rows (and the usual columns).
    fn start_sized(
        label: &'static str,
        server: SocketAddr,
        name: &str,
        env: &[(&str, &str)],
        rows: u16,
    ) -> Tui {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_chat-tui"));
        command.args(["--server", &server.to_string(), "--name", name, "--no-bell"]);
        command.env("TERM", "xterm-256color");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).expect("spawn chat-tui");
        drop(pair.slave);
        let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, COLS, 0)));
        let (tx, output) = mpsc::channel();
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let screen = parser.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().process(&buf[..n]);
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        let writer = pair.master.take_writer().expect("writer");
        Tui {
            label,
            parser,
            output,
            output_closed: false,
            writer,
            child,
            master: pair.master,
        }
    }

    fn screen_text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// The sidebar's column of the screen, one line per row.
    fn sidebar(&self) -> String {
        let parser = self.parser.lock().unwrap();
        let width = chat_tui::layout::SIDEBAR_WIDTH;
        parser
            .screen()
            .rows(COLS - width, width)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for the next output, at most until `deadline`. False on timeout or close.
    fn wait_output(&mut self, deadline: Instant) -> bool {
        if self.output_closed {
            return false;
        }
        match self
            .output
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(()) => true,
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.output_closed = true;
                false
            }
        }
    }

    /// Waits until `condition` holds on a settled screen (two identical frames in a row).
    fn wait_for(&mut self, what: &str, condition: impl Fn(&Tui) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if condition(self) {
                let frame = self.screen_text();
                let more = self.wait_output(Instant::now() + QUIET);
                if !more && self.screen_text() == frame {
                    return;
                }
                if self.screen_text() == frame && condition(self) {
                    return;
                }
                continue;
            }
            if Instant::now() >= deadline || (!self.wait_output(deadline) && self.output_closed) {
                break;
            }
        }
        assert!(
            condition(self),
            "{}: timed out waiting for {what}; screen:\n{}",
            self.label,
            self.screen_text()
        );
    }

    /// Waits until the screen has stopped changing.
    fn settle(&mut self) {
        self.wait_for("a settled screen", |_| true);
    }

    fn wait_for_text(&mut self, text: &str) {
        let needle = text.to_string();
        self.wait_for(text, move |tui| tui.screen_text().contains(&needle));
    }

    fn type_keys(&mut self, bytes: &str) {
        self.writer
            .write_all(bytes.as_bytes())
            .expect("write to pty");
        self.writer.flush().expect("flush pty");
    }

    /// Waits for the program to exit and its output to be read completely.
    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The last bytes (the restore sequences) may still be in flight.
                while self.wait_output(deadline) {}
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: did not exit; screen:\n{}",
                self.label,
                self.screen_text()
            );
            // Exit is signalled by the pty closing: wait for output or that.
            self.wait_output(Instant::now() + QUIET);
        }
    }

    /// True if the terminal is in cooked mode again (line editing and echo on).
    fn cooked(&self) -> bool {
        let fd = self.master.as_raw_fd().expect("pty fd");
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: `fd` is our open pty master; tcgetattr fills the struct or fails.
        let ok = unsafe { libc::tcgetattr(fd, termios.as_mut_ptr()) } == 0;
        assert!(ok, "tcgetattr failed");
        // SAFETY: tcgetattr succeeded, so the struct is initialised.
        let termios = unsafe { termios.assume_init() };
        termios.c_lflag & libc::ICANON != 0 && termios.c_lflag & libc::ECHO != 0
    }

    fn assert_restored(&self) {
        let parser = self.parser.lock().unwrap();
        let screen = parser.screen();
        assert!(
            !screen.alternate_screen(),
            "{}: alternate screen left",
            self.label
        );
        assert!(
            !screen.bracketed_paste(),
            "{}: bracketed paste off",
            self.label
        );
        assert_eq!(
            screen.mouse_protocol_mode(),
            vt100::MouseProtocolMode::None,
            "{}: mouse capture off",
            self.label
        );
        assert!(!screen.hide_cursor(), "{}: cursor shown", self.label);
        drop(parser);
        assert!(self.cooked(), "{}: raw mode off", self.label);
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
    }
}

const F2: &str = "\x1bOQ";
const HOME: &str = "\x1b[H";
const CTRL_C: &str = "\x03";

fn sidebar_lists(tui: &Tui, names: &[&str]) -> bool {
    let sidebar = tui.sidebar();
    sidebar.contains(&format!("online ({})", names.len()))
        && names.iter().all(|name| {
            sidebar
                .lines()
                .any(|line| line.trim_start_matches(['│', ' ', '*']).trim_end() == *name)
        })
}

#[test]
fn two_clients_chat_see_each_other_rename_and_quit_cleanly() {
    let server = Server::start();
    let mut alice = Tui::start("alice", server.addr, "alice");
    alice.wait_for("alice's own name in her sidebar", |t| {
        sidebar_lists(t, &["alice"])
    });
    assert!(alice.sidebar().contains("*alice"), "own name is marked");
    let mut bob = Tui::start("bob", server.addr, "bob");

    for tui in [&mut alice, &mut bob] {
        tui.wait_for("both names in the sidebar", |t| {
            sidebar_lists(t, &["alice", "bob"])
        });
        tui.wait_for_text("│ connected │");
    }

    alice.type_keys("hello from alice, 你好\r");
    bob.wait_for_text("alice: hello from alice, 你好");
    alice.wait_for_text("> alice: hello from alice, 你好");
    bob.type_keys("hi alice\r");
    alice.wait_for_text("* bob: hi alice");

    // A bracketed paste of several lines sends them as separate messages; more than
    // five asks first.
    bob.type_keys("\x1b[200~first pasted\nsecond pasted\x1b[201~");
    alice.wait_for_text("bob: second pasted");
    assert!(alice.screen_text().contains("bob: first pasted"));
    bob.type_keys("\x1b[200~1\n2\n3\n4\n5\n6\x1b[201~");
    bob.wait_for_text("Send 6 pasted lines");
    bob.type_keys("n");
    bob.wait_for_text("paste of 6 lines not sent");

    // Rename through the dialog: first a name that is taken, then a free one.
    alice.type_keys(F2);
    alice.wait_for_text("current name: alice");
    alice.type_keys("bob\r");
    alice.wait_for_text("taken");
    assert!(alice.screen_text().contains("Rename"), "dialog stays open");
    alice.type_keys("\x7f\x7f\x7falicia\r");
    alice.wait_for("the dialog to close", |t| {
        !t.screen_text().contains("current name:")
    });
    bob.wait_for("the new name in bob's sidebar", |t| {
        sidebar_lists(t, &["alicia", "bob"])
    });
    bob.wait_for_text("alice is now known as alicia");
    alice.wait_for_text("you are now known as alicia");

    alice.type_keys(CTRL_C);
    assert!(alice.wait_exit().success());
    alice.assert_restored();

    bob.wait_for("alicia gone from bob's sidebar", |t| {
        sidebar_lists(t, &["bob"])
    });
    bob.wait_for_text("alicia left");
    bob.type_keys("/quit\r");
    assert!(bob.wait_exit().success());
    bob.assert_restored();
}

#[test]
fn reconnects_and_takes_its_name_again() {
    let server = Server::start();
    let addr = server.addr;
    let mut carol = Tui::start("carol", addr, "carol");
    carol.wait_for("carol online", |t| sidebar_lists(t, &["carol"]));
    drop(server);
    carol.wait_for_text("DISCONNECTED");
    carol.type_keys("typed while away\r");
    carol.wait_for_text("1 queued");

    // A new server on the same port: the client comes back on its own.
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let serving = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        chat_server::run(
            listener,
            chat_server::Config {
                rate: 0.0,
                ..chat_server::Config::default()
            },
            token,
        )
        .await
    });
    carol.wait_for("carol back online with her name", |t| {
        sidebar_lists(t, &["carol"]) && t.screen_text().contains("│ connected │")
    });
    carol.wait_for_text("> carol: typed while away");
    carol.type_keys(CTRL_C);
    assert!(carol.wait_exit().success());
    carol.assert_restored();
    shutdown.cancel();
    let _ = runtime.block_on(serving);
}

#[test]
fn a_panic_restores_the_terminal_and_leaves_the_message_readable() {
    let server = Server::start();
    let mut dave = Tui::start_with_env(
        "dave",
        server.addr,
        "dave",
        // No backtrace: it would scroll the message off the 30-line screen.
        &[("CHAT_TUI_TEST_PANIC", "1"), ("RUST_BACKTRACE", "0")],
    );
    let status = dave.wait_exit();
    assert!(!status.success(), "a panic exits with failure");
    dave.assert_restored();
    let screen = dave.screen_text();
    assert!(
        screen.contains("panic requested by CHAT_TUI_TEST_PANIC"),
        "the message is on the normal screen:\n{screen}"
    );
}

#[test]
fn a_line_typed_just_before_quitting_is_still_sent() {
    let server = Server::start();
    let mut erin = Tui::start("erin", server.addr, "erin");
    let mut frank = Tui::start("frank", server.addr, "frank");
    erin.wait_for("both online", |t| sidebar_lists(t, &["erin", "frank"]));
    frank.wait_for("both online", |t| sidebar_lists(t, &["erin", "frank"]));
    // One write: the line and the quit arrive in the same batch of keys.
    erin.type_keys("bye all\r/quit\r");
    assert!(erin.wait_exit().success());
    erin.assert_restored();
    frank.wait_for_text("erin: bye all");
    frank.type_keys(CTRL_C);
    assert!(frank.wait_exit().success());
}

#[test]
fn signals_from_outside_restore_the_terminal() {
    let server = Server::start();
    for (signal, name) in [
        (libc::SIGINT, "sigint"),
        (libc::SIGQUIT, "sigquit"),
        (libc::SIGTERM, "sigterm"),
        (libc::SIGHUP, "sighup"),
    ] {
        let mut tui = Tui::start(name, server.addr, name);
        tui.wait_for("online, in the alternate screen", |t| {
            sidebar_lists(t, &[name]) && t.parser.lock().unwrap().screen().alternate_screen()
        });
        let pid = tui.child.process_id().expect("a child pid");
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill -{name}");
        tui.wait_exit();
        tui.assert_restored();
    }
}

#[test]
fn an_idle_client_stays_connected_by_pinging() {
    let idle_timeout = Duration::from_secs(1);
    let server = Server::start_with(chat_server::Config {
        rate: 0.0,
        idle_timeout,
        ..chat_server::Config::default()
    });
    let mut gina = Tui::start("gina", server.addr, "gina");
    gina.wait_for("gina online", |t| sidebar_lists(t, &["gina"]));
    // Nobody types for several idle timeouts: this waiting is the test, not a synchronization.
    thread::sleep(idle_timeout * 4);
    gina.type_keys("still here\r");
    gina.wait_for_text("> gina: still here");
    let screen = gina.screen_text();
    assert!(
        !screen.contains("connection lost") && !screen.contains("timed out"),
        "the server dropped the idle client:\n{screen}"
    );
    gina.type_keys(CTRL_C);
    assert!(gina.wait_exit().success());
}

/// A peer of the test's own in JSON mode, for saying lines into the room.
struct Peer {
    stream: std::net::TcpStream,
}

impl Peer {
    fn connect(server: SocketAddr) -> Peer {
        let mut stream = std::net::TcpStream::connect(server).expect("connect");
        stream
            .write_all(format!("{}\n", chat_protocol::HELLO_LINE).as_bytes())
            .expect("hello");
        Peer { stream }
    }

    fn say(&mut self, text: &str) {
        let line = chat_protocol::ClientCommand::Chat { text: text.into() }.to_json();
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("say");
    }
}

/// The lines of the screen that say `prefix…`, in order, from the text after the prefix.
fn said_lines(tui: &Tui, prefix: &str) -> Vec<String> {
    tui.screen_text()
        .lines()
        .filter_map(|line| {
            let at = line.find(prefix)?;
            Some(
                line[at + prefix.len()..]
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn on_connect_the_last_messages_show_above_a_separator() {
    let server = Server::start();
    let mut peer = Peer::connect(server.addr);
    for i in 0..5 {
        peer.say(&format!("before {i}"));
    }
    // Once the room has them, a newcomer sees them.
    let mut watcher = Tui::start("watcher", server.addr, "watcher");
    watcher.wait_for_text("before 4");
    let mut hal = Tui::start("hal", server.addr, "hal");
    hal.wait_for_text("earlier messages above · live below");
    peer.say("after 0");
    hal.wait_for_text("after 0");
    let screen = hal.screen_text();
    let separator = screen.find("earlier messages above").unwrap();
    for i in 0..5 {
        let at = screen
            .find(&format!("before {i}"))
            .expect("an earlier line");
        assert!(
            at < separator,
            "before {i} is above the separator:\n{screen}"
        );
    }
    assert!(screen.find("after 0").unwrap() > separator, "{screen}");
    // Dimmed: the earlier lines' cells are drawn faint.
    let parser = hal.parser.lock().unwrap();
    let (row, col) = parser
        .screen()
        .rows(0, COLS)
        .enumerate()
        .find_map(|(row, text)| {
            let col = text.find("before 0")?;
            Some((row as u16, text[..col].chars().count() as u16))
        })
        .expect("before 0 on screen");
    let cell = parser.screen().cell(row, col).expect("a cell");
    assert!(cell.dim(), "the earlier line is dimmed");
}

#[test]
fn scrolling_to_the_top_loads_older_messages_from_the_server() {
    let server = Server::start();
    let mut peer = Peer::connect(server.addr);
    for i in 0..200 {
        peer.say(&format!("old {i:03}"));
    }
    let mut watcher = Tui::start("watcher", server.addr, "watcher");
    watcher.wait_for_text("old 199");
    let mut ivy = Tui::start("ivy", server.addr, "ivy");
    ivy.wait_for_text("earlier messages above · live below");
    // The page on connect is the last 50.
    assert!(!ivy.screen_text().contains("old 149"));
    // Home on an empty line goes to the top of what is held, and the top asks the server
    // for the page before it, which lands above; Home again goes up to that, and so on.
    let mut rounds = 0;
    while !(ivy
        .screen_text()
        .contains("the beginning of the room's history")
        && ivy.screen_text().contains("old 000"))
    {
        ivy.type_keys(HOME);
        ivy.settle();
        rounds += 1;
        assert!(
            rounds < 40,
            "never reached the beginning; screen:\n{}",
            ivy.screen_text()
        );
    }
    // Lines from before the page shown on connect came from the server.
    assert!(ivy.screen_text().contains("old 001"));
}

/// A TCP relay between clients and the server that the test can cut and hold shut.
struct Proxy {
    addr: SocketAddr,
    /// Both ends of every relayed connection, to cut them.
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
    /// While set, new connections are closed as soon as they are accepted.
    shut: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(Mutex::new(Vec::new()));
        let shut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (relays, closed) = (open.clone(), shut.clone());
        // Ends with the test process (it only waits in accept).
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if closed.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let mut relays = relays.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
                relays.push(client);
                relays.push(server);
            }
        });
        Proxy { addr, open, shut }
    }

    /// Breaks every relayed connection, and refuses new ones until [`Proxy::reopen`].
    fn cut(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn reopen(&self) {
        self.shut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_connection_dropped_during_a_burst_resumes_without_missing_or_repeating_a_line() {
    let server = Server::start();
    let proxy = Proxy::start(server.addr);
    // Tall enough to show the whole burst and the outage's own lines.
    let mut jay = Tui::start_sized("jay", proxy.addr, "jay", &[], 70);
    let mut kim = Tui::start_sized("kim", server.addr, "kim", &[], 70);
    for tui in [&mut jay, &mut kim] {
        tui.wait_for("both online", |t| sidebar_lists(t, &["jay", "kim"]));
    }
    let mut peer = Peer::connect(server.addr);
    for i in 0..10 {
        peer.say(&format!("burst {i:02}"));
    }
    jay.wait_for_text("burst 09");
    // The connection drops; the burst goes on while jay is away...
    proxy.cut();
    jay.wait_for_text("DISCONNECTED");
    for i in 10..30 {
        peer.say(&format!("burst {i:02}"));
    }
    kim.wait_for_text("burst 29");
    // ...and goes on as jay comes back, racing the catch-up.
    proxy.reopen();
    for i in 30..40 {
        peer.say(&format!("burst {i:02}"));
    }
    kim.wait_for_text("burst 39");
    jay.wait_for("the whole burst", |t| {
        said_lines(t, "burst ").len() >= 40 && t.screen_text().contains("│ connected │")
    });
    let expected: Vec<String> = (0..40).map(|i| format!("{i:02}")).collect();
    assert_eq!(
        said_lines(&kim, "burst "),
        expected,
        "the client that stayed"
    );
    assert_eq!(
        said_lines(&jay, "burst "),
        expected,
        "nothing missed, nothing twice, in order; screen:\n{}",
        jay.screen_text()
    );
}

#[test]
fn slash_msg_and_slash_r_exchange_direct_messages() {
    let server = Server::start();
    let mut lea = Tui::start("lea", server.addr, "lea");
    let mut max = Tui::start("max", server.addr, "max");
    let mut ned = Tui::start("ned", server.addr, "ned");
    for tui in [&mut lea, &mut max, &mut ned] {
        tui.wait_for("all online", |t| sidebar_lists(t, &["lea", "max", "ned"]));
    }
    // Tab completes the name after /msg.
    lea.type_keys("/msg ma\t");
    lea.wait_for_text("> /msg max");
    lea.type_keys("hello max\r");
    max.wait_for_text("@ lea ->: hello max");
    lea.wait_for_text("@ -> max: hello max");
    max.type_keys("/r hi lea\r");
    lea.wait_for_text("@ max ->: hi lea");
    max.wait_for_text("@ -> lea: hi lea");
    // Nobody else sees them.
    ned.type_keys("ned was here\r");
    max.wait_for_text("ned: ned was here");
    lea.wait_for_text("ned: ned was here");
    let screen = ned.screen_text();
    assert!(
        !screen.contains("hello max") && !screen.contains("hi lea"),
        "{screen}"
    );
    // A name nobody has is refused by the server, and said so.
    lea.type_keys("/msg ghost boo\r");
    lea.wait_for_text("error: no user named ghost is online");
}
