//! The view on ratatui's `TestBackend`: insta snapshots of whole screens, plus checks of
//! wrapping and styles that a text snapshot cannot show.

use super::*;
use crate::app::{Msg, Settings};
use crate::net::NetEvent;
use chat_protocol::{ErrorCode, LeaveReason, ServerEvent, UserInfo};
use chrono::NaiveTime;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::Duration;

const ME: &str = "127.0.0.1:5000";
const BOB: &str = "127.0.0.1:6000";
const MING: &str = "127.0.0.1:7000";

fn server(app: &mut App, event: ServerEvent) {
    app.update(Msg::Net(NetEvent::Server(
        event,
        NaiveTime::from_hms_opt(9, 41, 0).unwrap(),
    )));
}

fn key(app: &mut App, code: KeyCode) {
    app.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn user(addr: &str, name: &str) -> UserInfo {
    UserInfo {
        addr: addr.into(),
        name: name.into(),
    }
}

fn chat(app: &mut App, addr: &str, name: &str, text: &str) {
    server(
        app,
        ServerEvent::Chat {
            stamp: None,
            addr: addr.into(),
            name: name.into(),
            text: text.into(),
        },
    );
}

/// Alice, connected, in a room with bob and 小明, after a short conversation.
fn busy_app(width: u16, height: u16) -> App {
    let mut app = App::new(Settings::default());
    app.update(Msg::Resize { width, height });
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    server(
        &mut app,
        ServerEvent::Welcome {
            idle_timeout_ms: 0,
            seq: 0,
            version: 1,
            addr: ME.into(),
            name: ME.into(),
        },
    );
    server(
        &mut app,
        ServerEvent::Renamed {
            name: "alice".into(),
        },
    );
    server(
        &mut app,
        ServerEvent::Users {
            users: vec![user(BOB, "bob"), user(ME, "alice"), user(MING, "小明")],
        },
    );
    server(
        &mut app,
        ServerEvent::Join {
            stamp: None,
            addr: MING.into(),
            name: "小明".into(),
        },
    );
    chat(&mut app, BOB, "bob", "morning all");
    chat(&mut app, ME, "alice", "hi bob!");
    chat(&mut app, BOB, "bob", "alice: did you see the build?");
    chat(
        &mut app,
        MING,
        "小明",
        "一个很长的句子，用来检查宽字符在窗口边缘是否正确换行，不会被截断或者重叠。👍",
    );
    server(
        &mut app,
        ServerEvent::Rename {
            stamp: None,
            addr: BOB.into(),
            old: "bob".into(),
            new: "robert".into(),
        },
    );
    server(
        &mut app,
        ServerEvent::Leave {
            stamp: None,
            addr: "127.0.0.1:8001".into(),
            name: "carol".into(),
            reason: LeaveReason::Timeout,
        },
    );
    server(
        &mut app,
        ServerEvent::error(ErrorCode::Flood, "too many lines; one was dropped"),
    );
    type_text(&mut app, "typing a reply");
    app
}

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    terminal
}

#[test]
fn main_screen() {
    let app = busy_app(80, 16);
    insta::assert_snapshot!(render(&app, 80, 16).backend());
}

#[test]
fn sidebar_sorted_with_own_name_marked_and_count() {
    let mut app = busy_app(60, 10);
    server(
        &mut app,
        ServerEvent::Users {
            users: vec![
                user("1.1.1.1:1", "Zed"),
                user(ME, "alice"),
                user("1.1.1.1:2", "bob"),
                user("1.1.1.1:3", "Anna"),
                user("1.1.1.1:4", "a-very-long-name-that-is-clipped"),
            ],
        },
    );
    insta::assert_snapshot!(render(&app, 60, 10).backend());
}

#[test]
fn rename_dialog_with_the_servers_refusal() {
    let mut app = busy_app(80, 16);
    key(&mut app, KeyCode::F(2));
    type_text(&mut app, "robert");
    key(&mut app, KeyCode::Enter);
    server(
        &mut app,
        ServerEvent::error(ErrorCode::NameTaken, "the name robert is taken"),
    );
    insta::assert_snapshot!(render(&app, 80, 16).backend());
}

#[test]
fn rename_dialog_checks_the_name_rules_as_you_type() {
    let mut app = busy_app(80, 16);
    key(&mut app, KeyCode::F(2));
    type_text(&mut app, "al:ce");
    insta::assert_snapshot!(render(&app, 80, 16).backend());
}

#[test]
fn help_overlay() {
    let mut app = busy_app(80, 24);
    key(&mut app, KeyCode::F(1));
    insta::assert_snapshot!(render(&app, 80, 24).backend());
}

#[test]
fn narrow_terminal_drops_the_sidebar() {
    let app = busy_app(40, 14);
    insta::assert_snapshot!(render(&app, 40, 14).backend());
}

#[test]
fn scrolled_up_shows_lines_waiting_below() {
    let mut app = busy_app(80, 10);
    for i in 0..30 {
        chat(&mut app, BOB, "robert", &format!("line {i}"));
    }
    key(&mut app, KeyCode::PageUp);
    chat(&mut app, BOB, "robert", "a new line while scrolled up");
    insta::assert_snapshot!(render(&app, 80, 10).backend());
}

#[test]
fn disconnected_status_and_paste_question() {
    let mut app = busy_app(80, 12);
    app.update(Msg::Net(NetEvent::Disconnected {
        reason: "Connection reset by peer (os error 104)".into(),
        retry_in: Duration::from_secs(2),
    }));
    app.update(Msg::Paste("1\n2\n3\n4\n5\n6\n7".into()));
    insta::assert_snapshot!(render(&app, 80, 12).backend());
}

#[test]
fn quit_question_with_queued_lines() {
    let mut app = busy_app(80, 12);
    app.update(Msg::Net(NetEvent::Disconnected {
        reason: "Connection reset by peer (os error 104)".into(),
        retry_in: Duration::from_secs(2),
    }));
    app.update(Msg::Paste("one\ntwo\n".into()));
    app.update(Msg::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    insta::assert_snapshot!(render(&app, 80, 12).backend());
}

fn plain_entry(text: &str) -> Entry {
    Entry {
        name: Some("bob".into()),
        ..Entry::line(
            NaiveTime::from_hms_opt(9, 41, 0).unwrap(),
            EntryKind::Chat,
            text,
        )
    }
}

fn row_text(line: &Line) -> String {
    line.spans.iter().map(|s| s.content.as_ref()).collect()
}

#[test]
fn wrapping_never_splits_or_overflows_wide_characters() {
    for width in 12..40 {
        let entry = plain_entry("宽字符👍🏽和 e\u{301} mixed with words, 一二三四五六七八九十");
        let lines = entry_lines(&entry, width);
        assert_eq!(lines.len(), layout::entry_rows(&entry, width));
        let mut rejoined = String::new();
        for line in &lines {
            assert!(line.width() <= width, "width {width}: {:?}", row_text(line));
            rejoined.push_str(row_text(line).trim());
        }
        for piece in ["宽字符👍🏽和", "e\u{301}", "一二三四五六七八九十"] {
            assert!(
                rejoined.contains(piece) || width < 20,
                "width {width}: {rejoined}"
            );
        }
    }
}

#[test]
fn wrapping_breaks_at_spaces_and_indents_continuations() {
    let lines = entry_lines(&plain_entry("the quick brown fox jumps over"), 30);
    let rows: Vec<String> = lines.iter().map(row_text).collect();
    assert_eq!(
        rows,
        ["09:41   bob: the quick brown", "        fox jumps over",]
    );
}

#[test]
fn a_very_long_word_is_cut_to_fit() {
    let lines = entry_lines(&plain_entry(&"x".repeat(100)), 30);
    assert!(lines.iter().all(|l| l.width() <= 30));
    let xs: usize = lines.iter().map(|l| row_text(l).matches('x').count()).sum();
    assert_eq!(xs, 100);
}

#[test]
fn styles_mark_own_lines_mentions_errors_and_names() {
    let app = busy_app(80, 16);
    let terminal = render(&app, 80, 16);
    let buffer = terminal.backend().buffer();
    let find = |needle: &str| {
        (0..buffer.area.height)
            .find_map(|y| {
                let row: String = (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect();
                row.find(needle)
                    .map(|x| (row[..x].chars().count() as u16, y))
            })
            .unwrap_or_else(|| panic!("{needle:?} not on screen"))
    };
    let (x, y) = find("> alice: hi bob!");
    assert!(buffer[(x, y)].modifier.contains(Modifier::BOLD));
    assert_eq!(buffer[(x + 2, y)].fg, name_colour("alice"));
    let (x, y) = find("* bob: alice: did");
    assert_eq!(buffer[(x, y)].bg, Color::Yellow, "mention marker");
    assert_eq!(buffer[(x + 13, y)].fg, Color::Yellow, "mention text");
    let (x, y) = find("! error: too many lines");
    assert_eq!(buffer[(x, y)].fg, Color::Red);
    assert_eq!(name_colour("Bob"), name_colour("bob"), "stable, case-blind");
}

#[test]
fn tiny_terminals_do_not_panic() {
    for (width, height) in [(1, 1), (5, 3), (20, 4), (30, 2), (12, 8)] {
        let mut app = busy_app(width, height);
        render(&app, width, height);
        key(&mut app, KeyCode::PageUp);
        render(&app, width, height);
        key(&mut app, KeyCode::F(2));
        type_text(&mut app, "一个很长的名字");
        render(&app, width, height);
        key(&mut app, KeyCode::Esc);
        key(&mut app, KeyCode::F(1));
        render(&app, width, height);
    }
}

#[test]
fn the_input_line_scrolls_to_keep_the_cursor_in_view() {
    let mut app = busy_app(20, 6);
    type_text(&mut app, " and then a long tail 一二三");
    let terminal = render(&app, 20, 6);
    let buffer = terminal.backend().buffer();
    let input: String = (0..20)
        .map(|x| buffer[(x, 5)].symbol().to_string())
        .collect();
    assert!(input.starts_with("> "), "{input:?}");
    assert!(input.replace(" ", "").ends_with("tail一二三"), "{input:?}");
    let (text, column) = visible_slice("abcdef", 6, 4);
    assert_eq!((text, column), ("def", 3));
}

fn screen_text(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    text
}

#[test]
fn every_row_of_a_message_taller_than_the_pane_can_be_paged_to() {
    let mut app = busy_app(80, 12);
    let words: Vec<String> = (0..150).map(|i| format!("w{i:03}")).collect();
    chat(&mut app, BOB, "robert", &words.join(" "));
    for i in 0..3 {
        chat(&mut app, BOB, "robert", &format!("after {i}"));
    }
    let mut seen = String::new();
    for _ in 0..30 {
        seen.push_str(&screen_text(&render(&app, 80, 12)));
        key(&mut app, KeyCode::PageUp);
    }
    for word in &words {
        assert!(seen.contains(word.as_str()), "{word} was never on screen");
    }
}

#[test]
fn the_status_bar_says_when_the_client_falls_behind() {
    let mut app = busy_app(100, 12);
    app.update(Msg::Backlog(1500));
    let screen = screen_text(&render(&app, 100, 12));
    assert!(screen.contains("│ behind: 1500 queued"), "{screen}");
    app.dirty = false;
    app.update(Msg::Backlog(1500));
    assert!(!app.dirty, "no change, no redraw");
    app.update(Msg::Backlog(0));
    assert!(app.dirty);
    let screen = screen_text(&render(&app, 100, 12));
    assert!(!screen.contains("behind"), "{screen}");
}

#[test]
fn direct_messages_are_styled_apart_from_chat() {
    let mut app = busy_app(80, 12);
    server(
        &mut app,
        ServerEvent::Dm {
            from: user(BOB, "robert"),
            to: user(ME, "alice"),
            text: "psst, lunch?".into(),
        },
    );
    server(
        &mut app,
        ServerEvent::Dm {
            from: user(ME, "alice"),
            to: user(BOB, "robert"),
            text: "yes!".into(),
        },
    );
    let terminal = render(&app, 80, 12);
    insta::assert_snapshot!(terminal.backend());
    let screen = screen_text(&terminal);
    assert!(screen.contains("@ robert ->: psst, lunch?"), "{screen}");
    assert!(screen.contains("@ -> robert: yes!"), "{screen}");
    let buffer = terminal.backend().buffer();
    let row = (0..12)
        .find(|&y| {
            (0..80)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect::<String>()
                .contains("psst")
        })
        .unwrap();
    assert_eq!(buffer[(6, row)].bg, Color::LightMagenta, "the @ marker");
    assert_eq!(buffer[(20, row)].fg, Color::LightMagenta, "the text");
}
