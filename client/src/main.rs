//! `chat-tui`: wires the app, the view and the connection to a real terminal.
//!
//! All behaviour lives in `chat_tui::app`; this file turns terminal events, server events
//! and clock ticks into messages, carries out the effects, and draws when something changed,
//! after draining pending events so a flood of lines never makes typing lag.
//! The terminal is restored on every way out: normal exit, error, panic, and (on Unix)
//! SIGINT, SIGQUIT, SIGTERM and SIGHUP sent from outside (Ctrl+C itself is a key in raw mode).

use anyhow::Context as _;
use chat_tui::app::{App, Effect, Msg, Settings};
use chat_tui::net::{self, NetConfig, NetEvent};
use chat_tui::ui;
use clap::Parser;
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event,
    EventStream, MouseEventKind,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures_util::{FutureExt as _, StreamExt as _};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::io::{Stdout, Write as _, stdout};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, Receiver, UnboundedSender};

/// How often the app hears the clock (pacing, user-list refresh). Ticks that change nothing
/// visible cause no redraw.
const TICK: Duration = Duration::from_millis(250);
/// Most events applied between two draws, so the screen keeps up during a flood. What is
/// still waiting after a batch shows in the status bar as how far behind the client is.
const MAX_BATCH: usize = 2_048;

/// A terminal chat client for chat-server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8000")]
    server: String,
    /// Name to take after connecting (and again after every reconnect).
    #[arg(long, value_parser = parse_name)]
    name: Option<String>,
    /// Talk to the original (plain text only) server.
    #[arg(long)]
    plain: bool,
    /// Do not ring the terminal bell when a line mentions your name.
    #[arg(long)]
    no_bell: bool,
    /// Lines kept in the message pane; older ones are dropped.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    scrollback: u32,
}

fn parse_name(name: &str) -> Result<String, String> {
    chat_protocol::validate_name(name)
        .map(|()| name.to_string())
        .map_err(|e| e.to_string())
}

type Tui = Terminal<CrosstermBackend<Stdout>>;

/// Puts the terminal back however the program ends.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = execute!(
        stdout(),
        DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
}

fn setup_terminal() -> anyhow::Result<(Tui, TerminalGuard)> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Restore first, or the panic message lands on the alternate screen and vanishes.
        restore_terminal();
        previous(info);
    }));
    enable_raw_mode().context("cannot switch the terminal to raw mode")?;
    let guard = TerminalGuard;
    execute!(
        stdout(),
        EnterAlternateScreen,
        EnableBracketedPaste,
        EnableMouseCapture
    )?;
    let terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    Ok((terminal, guard))
}

/// Lets the end-to-end tests check that a panic restores the terminal (`tests/e2e.rs`), in
/// debug and release builds alike: with `CHAT_TUI_TEST_PANIC` set, the first frame drawn is
/// followed by a panic. Nobody sets it by accident, and all it can do is end the program.
fn panic_if_asked() {
    if std::env::var_os("CHAT_TUI_TEST_PANIC").is_some() {
        panic!("panic requested by CHAT_TUI_TEST_PANIC");
    }
}

/// The signals that end the program from outside, each handled like a quit so the terminal
/// is restored: SIGINT, SIGQUIT, SIGTERM and SIGHUP. Registered before the terminal goes raw.
#[cfg(unix)]
struct Signals(Vec<tokio::signal::unix::Signal>);

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        [
            SignalKind::interrupt(),
            SignalKind::quit(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ]
        .into_iter()
        .map(signal)
        .collect::<std::io::Result<Vec<_>>>()
        .map(Signals)
    }

    /// Waits for any of them.
    async fn recv(&mut self) {
        let waits = self.0.iter_mut().map(|signal| Box::pin(signal.recv()));
        futures_util::future::select_all(waits).await;
    }
}

/// Elsewhere only Ctrl+C (as a console event) can be caught.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn terminal_msg(event: Event) -> Option<Msg> {
    match event {
        Event::Key(key) => Some(Msg::Key(key)),
        Event::Paste(text) => Some(Msg::Paste(text)),
        Event::Mouse(mouse) => match mouse.kind {
            MouseEventKind::ScrollUp => Some(Msg::WheelUp),
            MouseEventKind::ScrollDown => Some(Msg::WheelDown),
            _ => None,
        },
        Event::Resize(width, height) => Some(Msg::Resize { width, height }),
        _ => None,
    }
}

fn tick_msg() -> Msg {
    Msg::Tick {
        now: Instant::now(),
        time: chrono::Local::now().time(),
    }
}

async fn run(
    terminal: &mut Tui,
    mut app: App,
    mut signals: Signals,
    commands: UnboundedSender<chat_protocol::ClientCommand>,
    mut net_events: Receiver<NetEvent>,
) -> anyhow::Result<()> {
    let mut terminal_events = EventStream::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let size = terminal.size()?;
    app.update(Msg::Resize {
        width: size.width,
        height: size.height,
    });
    // Set the clock before the first server event, so nothing is stamped 00:00.
    app.update(tick_msg());
    loop {
        if app.dirty {
            terminal.draw(|frame| ui::draw(frame, &app))?;
            app.dirty = false;
            panic_if_asked();
        }
        let first = tokio::select! {
            event = terminal_events.next() => match event {
                Some(event) => terminal_msg(event.context("reading the terminal")?),
                None => return Ok(()),
            },
            event = net_events.recv() => match event {
                Some(event) => Some(Msg::Net(event)),
                None => anyhow::bail!("the connection task stopped"),
            },
            _ = ticks.tick() => Some(tick_msg()),
            () = signals.recv() => return Ok(()),
        };
        let mut batch: Vec<Msg> = first.into_iter().collect();
        // Keys first, then everything the server sent meanwhile, then one draw for all.
        while let Some(Some(event)) = terminal_events.next().now_or_never() {
            batch.extend(terminal_msg(event.context("reading the terminal")?));
        }
        while batch.len() < MAX_BATCH
            && let Ok(event) = net_events.try_recv()
        {
            batch.push(Msg::Net(event));
        }
        // What the connection has read and the app not yet applied: how far behind it is.
        batch.push(Msg::Backlog(net_events.len()));
        let mut bell = false;
        for msg in batch {
            for effect in app.update(msg) {
                match effect {
                    Effect::Send(command) => {
                        // The task only goes away with the program.
                        let _ = commands.send(command);
                    }
                    Effect::Bell => bell = true,
                    Effect::Quit => return Ok(()),
                }
            }
        }
        if bell {
            // Once per batch: a burst of mentions is one ring, not a hundred.
            let backend = terminal.backend_mut();
            backend.write_all(b"\x07")?;
            backend.flush()?;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings {
        server: args.server.clone(),
        name: args.name,
        scrollback: args.scrollback as usize,
        bell: !args.no_bell,
    };
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::channel(net::EVENT_QUEUE);
    let connection = tokio::spawn(net::run(
        NetConfig::new(args.server, args.plain),
        command_rx,
        event_tx,
    ));
    let signals = Signals::new().context("cannot handle signals")?;
    let (mut terminal, guard) = setup_terminal()?;
    let result = run(
        &mut terminal,
        App::new(settings),
        signals,
        command_tx,
        event_rx,
    )
    .await;
    drop(guard);
    // `run` has dropped its ends of the channels: the connection task writes what it was
    // already given, closes its side and reads the server's last words (at most
    // `net::FAREWELL`), then ends. Give it a moment, not forever.
    let _ = tokio::time::timeout(QUIT_FLUSH, connection).await;
    result
}

/// How long quitting waits for lines already handed to the connection to be written.
const QUIT_FLUSH: Duration = Duration::from_secs(1);
