//! Criterion bench for chat-tui: the cost of drawing one frame as the scrollback grows, and
//! of applying a burst of incoming lines through `App::update`.
//!
//! The claims it supports (issue 4, client side): a frame with 100,000 lines of scrollback
//! costs about the same as one with 100 (the view wraps only what is on screen), and 10,000
//! incoming lines are applied well under a second; (issue 8) a `users` answer of 10,000 people
//! and then 10,000 joins are applied well under a second too. Run with
//! `cargo bench -p chat-tui --bench render`; under `cargo test --benches` each case runs once.

use chat_protocol::{ServerEvent, UserInfo};
use chat_tui::app::{App, Msg, Settings};
use chat_tui::net::NetEvent;
use chat_tui::scrollback::ScrollPos;
use chat_tui::ui;
use chrono::NaiveTime;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::hint::black_box;
use std::time::Duration;

const WIDTH: u16 = 120;
const HEIGHT: u16 = 40;
const OWN_ADDR: &str = "127.0.0.1:5000";
const SCROLLBACK_SIZES: [usize; 2] = [100, 100_000];
const INCOMING_LINES: usize = 10_000;
const ROOM_USERS: usize = 10_000;

/// What the chat lines say: short ones, ones that wrap over several rows, and CJK text
/// that has no spaces to break at.
#[derive(Clone, Copy)]
enum Text {
    Short,
    LongWrapping,
    Cjk,
}

impl Text {
    fn line(self, i: usize) -> String {
        match self {
            Text::Short => format!("line {i}: did anyone see the build go green?"),
            Text::LongWrapping => format!(
                "line {i}: {}",
                "a fairly long message that goes on and on so it wraps over several rows "
                    .repeat(4)
            ),
            Text::Cjk => format!(
                "第{i}行：{}",
                "一个很长的句子，用来检查宽字符在窗口边缘是否正确换行，不会被截断或者重叠。"
                    .repeat(3)
            ),
        }
    }
}

fn arrival() -> NaiveTime {
    NaiveTime::from_hms_opt(9, 41, 0).expect("a valid time")
}

/// The server event for chat line `i`, from one of a few senders.
fn chat_event(i: usize, text: Text) -> Msg {
    let sender = i % 7;
    Msg::Net(NetEvent::Server(
        ServerEvent::Chat {
            stamp: None,
            addr: format!("127.0.0.1:{}", 6000 + sender),
            name: format!("user{sender}"),
            text: text.line(i),
        },
        arrival(),
    ))
}

/// A connected client named alice, in a room of a few users, with a terminal of
/// `WIDTH`×`HEIGHT` and room for `scrollback` lines.
fn connected_app(scrollback: usize) -> App {
    let mut app = App::new(Settings {
        scrollback,
        ..Settings::default()
    });
    app.update(Msg::Resize {
        width: WIDTH,
        height: HEIGHT,
    });
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(Msg::Net(NetEvent::Server(
        ServerEvent::Welcome {
            idle_timeout_ms: 0,
            seq: 0,
            version: 1,
            addr: OWN_ADDR.into(),
            name: "alice".into(),
        },
        arrival(),
    )));
    let users = (0..7)
        .map(|n| UserInfo {
            addr: format!("127.0.0.1:{}", 6000 + n),
            name: format!("user{n}"),
        })
        .chain([UserInfo {
            addr: OWN_ADDR.into(),
            name: "alice".into(),
        }])
        .collect();
    app.update(Msg::Net(NetEvent::Server(
        ServerEvent::Users { users },
        arrival(),
    )));
    app
}

/// A connected app whose scrollback holds exactly `lines` chat lines.
fn app_with_lines(lines: usize, text: Text) -> App {
    let mut app = connected_app(lines);
    for i in 0..lines {
        app.update(chat_event(i, text));
    }
    app
}

fn terminal() -> Terminal<TestBackend> {
    Terminal::new(TestBackend::new(WIDTH, HEIGHT)).expect("a TestBackend terminal")
}

/// One frame drawn into a fresh buffer each time, so every cell is written and diffed
/// as on the first frame after a change.
fn bench_draw_case(c: &mut Criterion, group_name: &str, text: Text, scrolled_halfway: bool) {
    let mut group = c.benchmark_group(group_name);
    for lines in SCROLLBACK_SIZES {
        let mut app = app_with_lines(lines, text);
        if scrolled_halfway {
            app.scroll = Some(ScrollPos::at(app.scrollback.first_seq() + lines as u64 / 2));
        }
        let mut terminal = terminal();
        group.bench_with_input(BenchmarkId::from_parameter(lines), &app, |b, app| {
            b.iter(|| {
                // Clearing the previous buffer makes ratatui diff and flush every cell.
                terminal.clear().expect("TestBackend clears");
                terminal
                    .draw(|frame| ui::draw(frame, black_box(app)))
                    .expect("TestBackend draws");
            });
        });
    }
    group.finish();
}

fn draw_frame(c: &mut Criterion) {
    bench_draw_case(c, "draw/bottom", Text::Short, false);
    bench_draw_case(c, "draw/scrolled_halfway", Text::Short, true);
    bench_draw_case(c, "draw/long_wrapping", Text::LongWrapping, false);
    bench_draw_case(c, "draw/cjk", Text::Cjk, false);
}

/// 10,000 server events through `update`, into a client that already has a full scrollback
/// (so every new line also drops the oldest), pinned to the bottom and scrolled up.
fn apply_incoming(c: &mut Criterion) {
    let mut group = c.benchmark_group("update/10000_incoming_lines");
    let events: Vec<Msg> = (0..INCOMING_LINES)
        .map(|i| chat_event(i, Text::Short))
        .collect();
    let full = app_with_lines(Settings::default().scrollback, Text::Short);
    for (name, scrolled) in [("bottom", false), ("scrolled_up", true)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut app = full.clone();
                    if scrolled {
                        app.scroll = Some(ScrollPos::at(app.scrollback.first_seq() + 100));
                    }
                    (app, events.clone())
                },
                |(mut app, events)| {
                    for event in events {
                        black_box(app.update(event));
                    }
                    app
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// A big room: a `users` answer listing 10,000 people, then 10,000 more joining one by one,
/// applied to a connected client. The sidebar must stay sorted through all of it, so this
/// is where a re-sort per join (or a lowercased copy per comparison) would show.
fn apply_big_room(c: &mut Criterion) {
    let mut group = c.benchmark_group("update/users");
    let user = |i: usize| UserInfo {
        addr: format!(
            "10.{}.{}.{}:{}",
            i / 65_536,
            (i / 256) % 256,
            i % 256,
            1000 + i % 7
        ),
        name: format!("User{:05}", (i * 7_919) % 100_000),
    };
    let mut events = vec![Msg::Net(NetEvent::Server(
        ServerEvent::Users {
            users: (0..ROOM_USERS).map(user).collect(),
        },
        arrival(),
    ))];
    events.extend((ROOM_USERS..2 * ROOM_USERS).map(|i| {
        let UserInfo { addr, name } = user(i);
        Msg::Net(NetEvent::Server(
            ServerEvent::Join {
                addr,
                name,
                stamp: None,
            },
            arrival(),
        ))
    }));
    let app = connected_app(Settings::default().scrollback);
    group.bench_function("10000_listed_then_10000_joins", |b| {
        b.iter_batched(
            || (app.clone(), events.clone()),
            |(mut app, events)| {
                for event in events {
                    black_box(app.update(event));
                }
                assert_eq!(app.users.len(), 2 * ROOM_USERS);
                app
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
    // And a frame with all 20,000 of them in the sidebar.
    let mut app = connected_app(Settings::default().scrollback);
    for event in events {
        app.update(event);
    }
    let mut terminal = terminal();
    c.bench_function("draw/sidebar_20000_users", |b| {
        b.iter(|| {
            terminal.clear().expect("TestBackend clears");
            terminal
                .draw(|frame| ui::draw(frame, black_box(&app)))
                .expect("TestBackend draws");
        });
    });
}

fn config() -> Criterion {
    // Modest times: the machine is shared and has two cores.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = draw_frame, apply_incoming, apply_big_room
}
criterion_main!(benches);
