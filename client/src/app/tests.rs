//! `update` without a terminal: every key, every server event, pacing and reconnects.

use super::text::mentions;
use super::*;
use chat_protocol::{ErrorCode, LeaveReason, ServerEvent, UserInfo};
use crossterm::event::{KeyCode, KeyEventState, KeyModifiers};

const ME: &str = "127.0.0.1:5000";
const BOB: &str = "127.0.0.1:6000";

fn at(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn ctrl_key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::CONTROL))
}

fn server(event: ServerEvent) -> Msg {
    Msg::Net(NetEvent::Server(event, at(12, 34)))
}

fn chat(addr: &str, name: &str, text: &str) -> Msg {
    server(ServerEvent::Chat {
        stamp: None,
        addr: addr.into(),
        name: name.into(),
        text: text.into(),
    })
}

fn user(addr: &str, name: &str) -> UserInfo {
    UserInfo {
        addr: addr.into(),
        name: name.into(),
    }
}

fn sent(effects: &[Effect]) -> Vec<ClientCommand> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn said(text: &str) -> ClientCommand {
    ClientCommand::Chat { text: text.into() }
}

fn rename(name: &str) -> ClientCommand {
    ClientCommand::Rename { name: name.into() }
}

/// A test clock: ticks at chosen offsets from a fixed start.
struct Clock(Instant);

impl Clock {
    fn tick(&self, app: &mut App, millis: u64) -> Vec<Effect> {
        app.update(Msg::Tick {
            now: self.0 + Duration::from_millis(millis),
            time: at(12, 34),
        })
    }
}

fn type_text(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars()
        .flat_map(|c| app.update(key(KeyCode::Char(c))))
        .collect()
}

fn welcome(name: &str) -> Msg {
    server(ServerEvent::Welcome {
        idle_timeout_ms: 0,
        seq: 0,
        version: 1,
        addr: ME.into(),
        name: name.into(),
    })
}

fn connected_with(settings: Settings) -> (App, Vec<Effect>) {
    let mut app = App::new(settings);
    let mut effects = app.update(Msg::Net(NetEvent::Connected { plain: false }));
    effects.extend(app.update(welcome(ME)));
    (app, effects)
}

fn connected() -> App {
    connected_with(Settings::default()).0
}

fn texts(app: &App) -> Vec<String> {
    app.scrollback.iter().map(|e| e.text.clone()).collect()
}

#[test]
fn typing_and_enter_sends_a_chat_line() {
    let mut app = connected();
    assert!(type_text(&mut app, "hello 世界").is_empty());
    assert_eq!(app.input.text(), "hello 世界");
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(sent(&effects), vec![said("hello 世界")]);
    assert_eq!(app.input.text(), "");
    assert_eq!(app.history, vec!["hello 世界".to_string()]);
    assert!(
        sent(&app.update(key(KeyCode::Enter))).is_empty(),
        "empty line"
    );
}

#[test]
fn key_releases_are_ignored() {
    let mut app = connected();
    let release = KeyEvent {
        code: KeyCode::Char('x'),
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Release,
        state: KeyEventState::NONE,
    };
    app.update(Msg::Key(release));
    assert_eq!(app.input.text(), "");
}

#[test]
fn editing_keys() {
    let mut app = connected();
    type_text(&mut app, "one two three");
    app.update(ctrl('w'));
    assert_eq!(app.input.text(), "one two ");
    app.update(key(KeyCode::Left));
    app.update(key(KeyCode::Backspace));
    assert_eq!(app.input.text(), "one tw ");
    app.update(key(KeyCode::Home));
    app.update(key(KeyCode::Delete));
    assert_eq!(app.input.text(), "ne tw ");
    app.update(key(KeyCode::Right));
    app.update(ctrl('u'));
    assert_eq!(app.input.text(), "e tw ");
    app.update(key(KeyCode::End));
    type_text(&mut app, "é");
    app.update(ctrl('a'));
    type_text(&mut app, ">");
    app.update(ctrl('e'));
    type_text(&mut app, "<");
    assert_eq!(app.input.text(), ">e tw é<");
}

#[test]
fn history_with_up_and_down_keeps_the_draft() {
    let mut app = connected();
    for line in ["first", "second"] {
        type_text(&mut app, line);
        app.update(key(KeyCode::Enter));
    }
    type_text(&mut app, "draft");
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "second");
    app.update(key(KeyCode::Up));
    app.update(key(KeyCode::Up));
    assert_eq!(app.input.text(), "first");
    app.update(key(KeyCode::Down));
    assert_eq!(app.input.text(), "second");
    app.update(key(KeyCode::Down));
    assert_eq!(app.input.text(), "draft");
}

#[test]
fn tab_completes_online_names_and_cycles() {
    let mut app = connected();
    app.update(server(ServerEvent::Users {
        users: vec![
            user(ME, "alex"),
            user(BOB, "Alice"),
            user("1.1.1.1:1", "albert"),
            user("1.1.1.1:2", "bob"),
        ],
    }));
    app.update(welcome("alex"));
    type_text(&mut app, "al");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "albert: ", "own name is not offered");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "Alice: ");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "albert: ");
    type_text(&mut app, "hi B");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "albert: hi bob ");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "albert: hi bob ", "one match: stays");
    type_text(&mut app, "zz");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "albert: hi bob zz", "no match: nothing");
}

#[test]
fn single_line_paste_goes_into_the_input() {
    let mut app = connected();
    type_text(&mut app, "say ");
    let effects = app.update(Msg::Paste("pasted\ttext".into()));
    assert!(sent(&effects).is_empty());
    assert_eq!(app.input.text(), "say pasted text");
}

#[test]
fn short_multi_line_paste_sends_each_line() {
    let mut app = connected();
    let effects = app.update(Msg::Paste("one\r\ntwo\n\nthree\n".into()));
    assert_eq!(
        sent(&effects),
        vec![said("one"), said("two"), said("three")]
    );
    assert!(app.paste_confirm.is_none());
}

#[test]
fn long_paste_asks_first() {
    let text: String = (1..=8).map(|i| format!("line {i}\n")).collect();
    let mut app = connected();
    assert!(sent(&app.update(Msg::Paste(text.clone()))).is_empty());
    assert_eq!(app.paste_confirm.as_ref().map(Vec::len), Some(8));
    type_text(&mut app, "x");
    assert_eq!(app.input.text(), "", "keys answer the question");
    let effects = app.update(key(KeyCode::Char('y')));
    assert_eq!(sent(&effects).len(), 8);
    assert_eq!(sent(&effects)[7], said("line 8"));

    app.update(Msg::Paste(text));
    let effects = app.update(key(KeyCode::Esc));
    assert!(sent(&effects).is_empty());
    assert!(app.paste_confirm.is_none());
    assert_eq!(texts(&app).last().unwrap(), "paste of 8 lines not sent");
}

#[test]
fn sending_is_paced_below_the_server_flood_limit() {
    let clock = Clock(Instant::now());
    let mut app = connected();
    clock.tick(&mut app, 0);
    let lines: String = (0..30).map(|i| format!("{i}\n")).collect();
    app.update(Msg::Paste(lines));
    let mut effects = app.update(key(KeyCode::Enter));
    let first = sent(&effects).len();
    assert!(first < 20, "a burst under the server's 20: {first}");
    // The server's default flood limit (5 a second after a burst of 20), which the client's
    // sends must never reach at any moment, however the ticks fall.
    let server_allows = |ms: u64| 20 + 5 * ms / 1000;
    let mut total = first + 1; // and the `who` at the first tick
    for ms in (250..=10_000).step_by(250) {
        let more = clock.tick(&mut app, ms);
        total += sent(&more).len();
        assert!(
            (total as u64) < server_allows(ms),
            "{total} sent by {ms} ms: the server would drop some"
        );
        effects.extend(more);
    }
    let chats: Vec<_> = sent(&effects)
        .into_iter()
        .filter(|c| matches!(c, ClientCommand::Chat { .. }))
        .collect();
    assert_eq!(chats.len(), 30, "all sent, in order");
    assert_eq!(chats[29], said("29"));
    assert!(app.outbox.is_empty());
}

#[test]
fn quit_with_ctrl_c_or_slash_quit() {
    let mut app = connected();
    assert_eq!(app.update(ctrl('c')), vec![Effect::Quit]);
    type_text(&mut app, "/quit");
    assert_eq!(app.update(key(KeyCode::Enter)), vec![Effect::Quit]);
}

#[test]
fn quitting_with_queued_lines_asks_first() {
    let mut app = connected();
    lose_connection(&mut app);
    type_text(&mut app, "not sent yet");
    app.update(key(KeyCode::Enter));
    assert!(app.update(ctrl('c')).is_empty(), "asks instead");
    assert!(app.quit_confirm);
    type_text(&mut app, "x");
    assert_eq!(app.input.text(), "", "keys answer the question");
    app.update(key(KeyCode::Char('n')));
    assert!(!app.quit_confirm);
    assert_eq!(app.outbox.len(), 1);
    assert!(texts(&app).last().unwrap().contains("not quitting"));
    type_text(&mut app, "/quit");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert!(app.quit_confirm);
    app.update(key(KeyCode::Esc));
    assert!(!app.quit_confirm);
    app.update(ctrl('c'));
    assert_eq!(app.update(key(KeyCode::Char('y'))), vec![Effect::Quit]);
    app.quit_confirm = false;
    app.update(ctrl('c'));
    assert_eq!(app.update(ctrl('c')), vec![Effect::Quit], "twice means it");
}

#[test]
fn a_paste_ends_tab_completion() {
    let mut app = connected();
    app.update(server(ServerEvent::Users {
        users: vec![user(BOB, "bob"), user("1.1.1.1:1", "bobby")],
    }));
    type_text(&mut app, "bo");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "bob: ");
    app.update(Msg::Paste("see this".into()));
    app.update(key(KeyCode::Tab));
    assert_eq!(
        app.input.text(),
        "bob: see this",
        "Tab does not eat the paste"
    );
}

#[test]
fn a_paste_goes_to_the_open_popup_not_the_hidden_input() {
    let mut app = connected();
    // Help: closed, nothing sent or typed.
    app.update(key(KeyCode::F(1)));
    assert!(sent(&app.update(Msg::Paste("a\nb".into()))).is_empty());
    assert!(!app.show_help);
    assert!(app.outbox.is_empty() && app.input.is_empty());
    assert!(texts(&app).last().unwrap().contains("paste ignored"));
    // Rename dialog: the first non-empty line goes into its field.
    app.update(key(KeyCode::F(2)));
    assert!(sent(&app.update(Msg::Paste("\n zed \nsecond".into()))).is_empty());
    assert_eq!(app.rename.as_ref().unwrap().field.text(), "zed");
    assert!(app.input.is_empty());
    app.update(key(KeyCode::Esc));
    // A long paste waiting for y/n is not replaced by a second one.
    app.update(Msg::Paste("1\n2\n3\n4\n5\n6".into()));
    app.update(Msg::Paste("a\nb\nc\nd\ne\nf\ng".into()));
    assert_eq!(app.paste_confirm.as_ref().unwrap()[0], "1");
    assert!(texts(&app).last().unwrap().contains("still waits for y/n"));
    let effects = app.update(key(KeyCode::Char('y')));
    assert_eq!(sent(&effects)[0], said("1"));
}

#[test]
fn slash_commands() {
    let mut app = connected();
    type_text(&mut app, "//shrug");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![said("/shrug")]);
    type_text(&mut app, "/dance");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert!(
        texts(&app)
            .last()
            .unwrap()
            .contains("unknown command /dance")
    );
    type_text(&mut app, "/help");
    app.update(key(KeyCode::Enter));
    assert!(app.show_help);
}

#[test]
fn help_opens_with_f1_and_any_key_closes_it() {
    let mut app = connected();
    app.update(key(KeyCode::F(1)));
    assert!(app.show_help);
    app.update(key(KeyCode::Char('q')));
    assert!(!app.show_help);
    assert_eq!(app.input.text(), "", "the closing key is not typed");
}

#[test]
fn rename_dialog_checks_rules_as_you_type() {
    let mut app = connected();
    app.update(key(KeyCode::F(2)));
    let dialog = app.rename.as_ref().unwrap();
    assert_eq!(dialog.validation(), Err("name must not be empty".into()));
    type_text(&mut app, "bad name");
    assert_eq!(
        app.rename.as_ref().unwrap().validation(),
        Err("name must not contain whitespace".into())
    );
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert!(app.rename.is_some(), "stays open");
    app.update(ctrl('w'));
    app.update(key(KeyCode::Backspace));
    type_text(&mut app, "-ok");
    assert_eq!(app.rename.as_ref().unwrap().field.text(), "bad-ok");
    assert_eq!(app.rename.as_ref().unwrap().validation(), Ok(()));
    assert_eq!(app.input.text(), "", "dialog keys stay in the dialog");
    app.update(key(KeyCode::Esc));
    assert!(app.rename.is_none());

    app.update(ctrl('r'));
    assert!(app.rename.is_some(), "Ctrl+R opens it too");
}

#[test]
fn rename_refused_shows_in_the_dialog_until_it_succeeds() {
    let mut app = connected();
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "bob");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![rename("bob")]);
    assert!(app.rename.as_ref().unwrap().waiting);
    app.update(server(ServerEvent::error(
        ErrorCode::NameTaken,
        "the name bob is taken",
    )));
    let dialog = app.rename.as_ref().unwrap();
    assert_eq!(
        dialog.server_error.as_deref(),
        Some("the name bob is taken")
    );
    assert!(!dialog.waiting);
    type_text(&mut app, "2");
    assert_eq!(app.rename.as_ref().unwrap().server_error, None);
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![rename("bob2")]);
    app.update(server(ServerEvent::Renamed {
        name: "bob2".into(),
    }));
    assert!(app.rename.is_none());
    assert_eq!(app.own_name.as_deref(), Some("bob2"));
    assert_eq!(app.chosen_name.as_deref(), Some("bob2"));
    assert_eq!(texts(&app).last().unwrap(), "you are now known as bob2");
}

#[test]
fn a_flood_error_answers_a_rename_in_flight() {
    let mut app = connected();
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "zed");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![rename("zed")]);
    assert!(
        sent(&app.update(key(KeyCode::Enter))).is_empty(),
        "one at a time"
    );
    app.update(server(ServerEvent::error(
        ErrorCode::Flood,
        "you are sending too fast; line dropped",
    )));
    let dialog = app.rename.as_ref().unwrap();
    assert!(!dialog.waiting, "not stuck waiting for the server");
    assert_eq!(
        dialog.server_error.as_deref(),
        Some("you are sending too fast; line dropped")
    );
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![rename("zed")]);
}

#[test]
fn an_error_that_is_not_about_names_does_not_answer_a_rename() {
    let mut app = connected();
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "zed");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![rename("zed")]);
    app.update(server(ServerEvent::error(
        ErrorCode::LineTooLong,
        "line longer than 4096 bytes; discarded",
    )));
    let dialog = app.rename.as_ref().unwrap();
    assert!(dialog.waiting, "still waiting for the rename's own answer");
    assert_eq!(dialog.server_error, None);
    assert_eq!(
        texts(&app).last().unwrap(),
        "error: line longer than 4096 bytes; discarded",
        "shown in the pane like any error"
    );
    app.update(server(ServerEvent::error(
        ErrorCode::NameTaken,
        "rename refused: the name zed is already taken",
    )));
    let dialog = app.rename.as_ref().unwrap();
    assert!(!dialog.waiting);
    assert_eq!(
        dialog.server_error.as_deref(),
        Some("rename refused: the name zed is already taken")
    );
}

#[test]
fn which_errors_answer_a_rename() {
    use super::rename::rename_refusal;
    for code in [
        ErrorCode::InvalidName,
        ErrorCode::NameTaken,
        ErrorCode::Flood,
    ] {
        assert_eq!(rename_refusal(code, "whatever", false), Some(code));
    }
    for code in [
        ErrorCode::BadRequest,
        ErrorCode::LineTooLong,
        ErrorCode::InvalidUtf8,
        ErrorCode::Other,
    ] {
        assert_eq!(rename_refusal(code, "rename refused: x", false), None);
    }
    // The plain dialect has no codes: our server's words tell.
    let plain = |message| rename_refusal(ErrorCode::Other, message, true);
    assert_eq!(
        plain("rename refused: the name bob is already taken"),
        Some(ErrorCode::NameTaken)
    );
    assert_eq!(
        plain("rename refused: name must not be empty"),
        Some(ErrorCode::InvalidName)
    );
    assert_eq!(
        plain("you are sending too fast (at most 5 lines per second, 20 at once); line dropped"),
        Some(ErrorCode::Flood)
    );
    assert_eq!(
        plain("your line was not valid UTF-8; invalid bytes were replaced with U+FFFD"),
        None
    );
}

#[test]
fn a_rename_takes_a_send_token_and_goes_before_queued_lines() {
    let clock = Clock(Instant::now());
    let mut app = connected();
    clock.tick(&mut app, 0);
    for i in 0..12 {
        type_text(&mut app, &format!("line {i}"));
        app.update(key(KeyCode::Enter));
    }
    // The burst is spent: the `who` at connect and 9 lines.
    assert_eq!(app.outbox.len(), 3);
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "zed");
    assert!(
        sent(&app.update(key(KeyCode::Enter))).is_empty(),
        "waits for a token"
    );
    assert!(app.rename.as_ref().unwrap().waiting);
    let mut later = Vec::new();
    for ms in (250..=2_000).step_by(250) {
        later.extend(sent_except_who(&clock.tick(&mut app, ms)));
    }
    assert_eq!(
        later,
        vec![
            rename("zed"),
            said("line 9"),
            said("line 10"),
            said("line 11")
        ]
    );
}

#[test]
fn slash_nick_renames_through_the_dialog() {
    let mut app = connected();
    type_text(&mut app, "/nick zed");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![rename("zed")]);
    assert!(app.rename.as_ref().unwrap().waiting);
    type_text(&mut app, "/nick");
    assert_eq!(app.rename.as_ref().unwrap().field.text(), "zed/nick");
    app.update(key(KeyCode::Esc));
    type_text(&mut app, "/nick");
    app.update(key(KeyCode::Enter));
    assert_eq!(app.rename.as_ref().unwrap().field.text(), "");
}

#[test]
fn name_flag_renames_after_welcome_and_after_every_reconnect() {
    let settings = Settings {
        name: Some("alice".into()),
        ..Settings::default()
    };
    let (mut app, effects) = connected_with(settings);
    assert_eq!(sent(&effects), vec![rename("alice")]);
    app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    app.update(Msg::Net(NetEvent::Disconnected {
        reason: "reset".into(),
        retry_in: Duration::from_millis(500),
    }));
    assert!(matches!(app.connection, Connection::Disconnected { .. }));
    assert!(app.users.is_empty());
    assert!(
        texts(&app)
            .last()
            .unwrap()
            .starts_with("connection lost: reset")
    );
    app.update(Msg::Net(NetEvent::Connecting { attempt: 2 }));
    assert_eq!(app.connection, Connection::Connecting { attempt: 2 });
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome("127.0.0.1:5001"));
    assert_eq!(sent(&effects), vec![rename("alice")]);
}

#[test]
fn refused_startup_name_is_reported_in_the_pane() {
    let settings = Settings {
        name: Some("alice".into()),
        ..Settings::default()
    };
    let (mut app, _) = connected_with(settings);
    app.update(server(ServerEvent::error(
        ErrorCode::NameTaken,
        "the name alice is taken",
    )));
    let last = texts(&app).pop().unwrap();
    assert!(last.contains("could not take the name alice"), "{last}");
    assert!(last.contains("F2"), "{last}");
}

#[test]
fn lines_typed_while_disconnected_are_kept_and_sent_after_reconnect() {
    let settings = Settings {
        name: Some("alice".into()),
        ..Settings::default()
    };
    let (mut app, _) = connected_with(settings);
    app.update(Msg::Net(NetEvent::Disconnected {
        reason: "reset".into(),
        retry_in: Duration::from_secs(1),
    }));
    type_text(&mut app, "are you there?");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert_eq!(app.outbox.len(), 1);
    assert!(
        texts(&app)
            .last()
            .unwrap()
            .contains("when the connection is back")
    );
    // The connection had taken a line but never written it.
    app.update(Msg::Net(NetEvent::Unsent(vec![
        said("lost in flight"),
        ClientCommand::Who,
    ])));
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome("127.0.0.1:5001"));
    assert_eq!(
        sent(&effects),
        vec![rename("alice")],
        "the queued lines wait until the name is back"
    );
    let effects = app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    assert_eq!(
        sent(&effects),
        vec![said("lost in flight"), said("are you there?")]
    );
}

/// Commands other than the periodic `who`.
fn sent_except_who(effects: &[Effect]) -> Vec<ClientCommand> {
    sent(effects)
        .into_iter()
        .filter(|c| *c != ClientCommand::Who)
        .collect()
}

fn lose_connection(app: &mut App) {
    app.update(Msg::Net(NetEvent::Disconnected {
        reason: "reset".into(),
        retry_in: Duration::from_millis(500),
    }));
}

#[test]
fn plain_mode_takes_the_name_again_after_a_reconnect() {
    let mut app = App::new(Settings {
        name: Some("alice".into()),
        ..Settings::default()
    });
    let effects = app.update(Msg::Net(NetEvent::Connected { plain: true }));
    assert_eq!(sent(&effects), vec![rename("alice")]);
    app.update(server(ServerEvent::Here {
        addr: ME.into(),
        name: ME.into(),
    }));
    app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    assert_eq!(app.own_name.as_deref(), Some("alice"));
    lose_connection(&mut app);
    // The plain server says who we are only after the connection is up: the client must
    // not take its old name for the new connection's.
    let effects = app.update(Msg::Net(NetEvent::Connected { plain: true }));
    assert_eq!(sent(&effects), vec![rename("alice")]);
    let effects = app.update(server(ServerEvent::Here {
        addr: "127.0.0.1:5001".into(),
        name: "127.0.0.1:5001".into(),
    }));
    assert!(sent(&effects).is_empty(), "one rename is enough");
    app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    assert_eq!(app.own_name.as_deref(), Some("alice"));
}

/// A client that had the name alice, lost its connection, queued a line, reconnected and
/// asked for alice again, and was told the name is taken.
fn reconnected_while_old_session_holds_the_name(clock: &Clock) -> App {
    let settings = Settings {
        name: Some("alice".into()),
        ..Settings::default()
    };
    let (mut app, _) = connected_with(settings);
    app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    clock.tick(&mut app, 0);
    lose_connection(&mut app);
    type_text(&mut app, "are you there?");
    app.update(key(KeyCode::Enter));
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome("127.0.0.1:5001"));
    assert_eq!(sent(&effects), vec![rename("alice")]);
    let effects = app.update(server(ServerEvent::error(
        ErrorCode::NameTaken,
        "the name alice is taken",
    )));
    assert!(sent(&effects).is_empty(), "the queued line still waits");
    app
}

#[test]
fn a_name_still_held_by_the_lost_connection_is_asked_for_again_before_queued_lines_go() {
    let clock = Clock(Instant::now());
    let mut app = reconnected_while_old_session_holds_the_name(&clock);
    let said_so = texts(&app).last().unwrap().clone();
    assert!(said_so.contains("still holds alice"), "{said_so}");
    assert!(said_so.contains("1 queued line"), "{said_so}");
    assert!(sent_except_who(&clock.tick(&mut app, 4_000)).is_empty());
    assert_eq!(
        sent_except_who(&clock.tick(&mut app, 5_100)),
        vec![rename("alice")]
    );
    app.update(server(ServerEvent::error(
        ErrorCode::NameTaken,
        "the name alice is taken",
    )));
    assert_eq!(
        texts(&app).last().unwrap(),
        &said_so,
        "said once, not per try"
    );
    assert!(sent_except_who(&clock.tick(&mut app, 9_000)).is_empty());
    assert_eq!(
        sent_except_who(&clock.tick(&mut app, 10_200)),
        vec![rename("alice")]
    );
    // The old connection timed out at last.
    let effects = app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    assert_eq!(sent(&effects), vec![said("are you there?")]);
    assert_eq!(app.retake, Retake::Idle);
}

#[test]
fn picking_another_name_while_waiting_for_the_old_one_lets_queued_lines_go() {
    let clock = Clock(Instant::now());
    let mut app = reconnected_while_old_session_holds_the_name(&clock);
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "alice2");
    let effects = app.update(key(KeyCode::Enter));
    assert_eq!(
        sent(&effects),
        vec![rename("alice2"), said("are you there?")],
        "the rename goes first, so the line is said under the new name"
    );
    assert!(sent_except_who(&clock.tick(&mut app, 60_000)).is_empty());
}

#[test]
fn retaking_the_name_gives_up_after_a_while_and_says_where_the_lines_went() {
    let clock = Clock(Instant::now());
    let mut app = reconnected_while_old_session_holds_the_name(&clock);
    let mut millis = 0;
    let mut renames = 1;
    let mut released = Vec::new();
    while app.retake != Retake::Idle {
        millis += 1_000;
        let effects = clock.tick(&mut app, millis);
        if sent_except_who(&effects).contains(&rename("alice")) {
            renames += 1;
            released = sent(&app.update(server(ServerEvent::error(
                ErrorCode::NameTaken,
                "the name alice is taken",
            ))));
        }
        assert!(millis < 1_000_000, "never gave up");
    }
    assert_eq!(renames, RETAKE_ATTEMPTS);
    let last = texts(&app).pop().unwrap();
    assert!(last.contains("gave up"), "{last}");
    assert!(last.contains(&format!("sent as {ME}")), "{last}");
    assert_eq!(released, vec![said("are you there?")]);
}

/// Joins, renames and leaves of 50 users, all within a moment.
fn busy_room(app: &mut App) {
    for i in 0..50 {
        let addr = format!("10.0.0.{i}:1");
        app.update(server(ServerEvent::Join {
            stamp: None,
            addr: addr.clone(),
            name: addr.clone(),
        }));
        app.update(server(ServerEvent::Rename {
            stamp: None,
            addr: addr.clone(),
            old: addr.clone(),
            new: format!("u{i}"),
        }));
        app.update(server(ServerEvent::Leave {
            stamp: None,
            addr,
            name: format!("u{i}"),
            reason: LeaveReason::Quit,
        }));
    }
}

fn welcome_with_idle_timeout(idle_timeout_ms: u64) -> Msg {
    server(ServerEvent::Welcome {
        version: 1,
        addr: ME.into(),
        name: ME.into(),
        idle_timeout_ms,
        seq: 0,
    })
}

#[test]
fn json_mode_asks_who_once_then_follows_events_and_pings_at_a_third_of_the_idle_timeout() {
    let clock = Clock(Instant::now());
    let mut app = App::new(Settings::default());
    clock.tick(&mut app, 0);
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(welcome_with_idle_timeout(30_000));
    assert_eq!(sent(&clock.tick(&mut app, 250)), vec![ClientCommand::Who]);
    busy_room(&mut app);
    let mut later = Vec::new();
    for ms in (500..10_000).step_by(250) {
        later.extend(sent(&clock.tick(&mut app, ms)));
    }
    assert!(
        later.is_empty(),
        "no who after events, none periodic: {later:?}"
    );
    assert!(sent(&clock.tick(&mut app, 10_000)).is_empty());
    assert_eq!(
        sent(&clock.tick(&mut app, 10_250)),
        vec![ClientCommand::Ping { token: None }],
        "10 s after the who: a third of the 30 s idle timeout"
    );
    assert!(sent(&clock.tick(&mut app, 15_000)).is_empty());
    // Saying something is activity too: the next ping is 10 s after it.
    type_text(&mut app, "hello");
    assert_eq!(sent(&app.update(key(KeyCode::Enter))), vec![said("hello")]);
    // It went out at the 15 s tick's time.
    assert!(sent(&clock.tick(&mut app, 24_750)).is_empty());
    assert_eq!(
        sent(&clock.tick(&mut app, 25_000)),
        vec![ClientCommand::Ping { token: None }]
    );
    // `/who` still asks.
    type_text(&mut app, "/who");
    app.update(key(KeyCode::Enter));
    assert_eq!(
        sent(&clock.tick(&mut app, 25_250)),
        vec![ClientCommand::Who]
    );
    // And after a reconnect, once more.
    lose_connection(&mut app);
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(welcome_with_idle_timeout(30_000));
    assert_eq!(
        sent(&clock.tick(&mut app, 30_000)),
        vec![ClientCommand::Who]
    );
}

#[test]
fn no_pings_when_the_server_has_no_idle_timeout() {
    let clock = Clock(Instant::now());
    let mut app = App::new(Settings::default());
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(welcome_with_idle_timeout(0));
    let mut all = Vec::new();
    for ms in (0..120_000).step_by(250) {
        all.extend(sent(&clock.tick(&mut app, ms)));
    }
    assert_eq!(all, vec![ClientCommand::Who]);
    assert_eq!(ping_interval(0), None);
    assert_eq!(ping_interval(30_000), Some(Duration::from_secs(10)));
}

#[test]
fn plain_mode_asks_who_at_connect_after_changes_and_periodically_at_most_once_a_second() {
    let clock = Clock(Instant::now());
    let mut app = App::new(Settings::default());
    assert!(sent(&clock.tick(&mut app, 0)).is_empty(), "not connected");
    app.update(Msg::Net(NetEvent::Connected { plain: true }));
    assert_eq!(sent(&clock.tick(&mut app, 100)), vec![ClientCommand::Who]);
    busy_room(&mut app);
    let mut whos = 0;
    for ms in (200..=1000).step_by(100) {
        whos += sent(&clock.tick(&mut app, ms)).len();
    }
    assert_eq!(whos, 0, "coalesced: none within a second of the last");
    assert_eq!(sent(&clock.tick(&mut app, 1100)), vec![ClientCommand::Who]);
    assert!(sent(&clock.tick(&mut app, 2500)).is_empty(), "nothing new");
    assert!(sent(&clock.tick(&mut app, 11_000)).is_empty());
    assert_eq!(
        sent(&clock.tick(&mut app, 11_100)),
        vec![ClientCommand::Who],
        "periodic refresh keeps the connection from idling out (no ping in plain mode)"
    );
}

#[test]
fn who_answer_fills_the_sorted_sidebar() {
    let mut app = connected();
    app.update(server(ServerEvent::Users {
        users: vec![user(BOB, "zoe"), user(ME, "Mia"), user("1.1.1.1:1", "adam")],
    }));
    let names: Vec<_> = app.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["adam", "Mia", "zoe"]);
}

#[test]
fn joins_leaves_and_renames_update_pane_and_sidebar() {
    let mut app = connected();
    app.update(server(ServerEvent::Users {
        users: vec![
            user(ME, ME),
            user("1.1.1.2:1", "Zed"),
            user("1.1.1.2:2", "alice"),
        ],
    }));
    app.update(server(ServerEvent::Join {
        stamp: None,
        addr: BOB.into(),
        name: BOB.into(),
    }));
    let names = |app: &App| -> Vec<String> { app.users.iter().map(|u| u.name.clone()).collect() };
    assert_eq!(names(&app), [ME, BOB, "alice", "Zed"]);
    app.update(server(ServerEvent::Rename {
        stamp: None,
        addr: BOB.into(),
        old: BOB.into(),
        new: "bob".into(),
    }));
    assert_eq!(
        names(&app),
        [ME, "alice", "bob", "Zed"],
        "renamed and moved to its place"
    );
    app.update(server(ServerEvent::Leave {
        stamp: None,
        addr: BOB.into(),
        name: "bob".into(),
        reason: LeaveReason::Timeout,
    }));
    assert_eq!(names(&app), [ME, "alice", "Zed"]);
    app.update(server(ServerEvent::Leave {
        stamp: None,
        addr: "1.1.1.1:1".into(),
        name: "carl".into(),
        reason: LeaveReason::Quit,
    }));
    let kinds: Vec<_> = app.scrollback.iter().map(|e| e.kind).collect();
    assert_eq!(
        &kinds[kinds.len() - 4..],
        [
            EntryKind::Join,
            EntryKind::Rename,
            EntryKind::Timeout,
            EntryKind::Leave
        ]
    );
    assert_eq!(
        &texts(&app)[texts(&app).len() - 4..],
        [
            format!("{BOB} joined"),
            format!("{BOB} is now known as bob"),
            "bob timed out".into(),
            "carl left".into()
        ]
    );
    assert_eq!(app.scrollback.iter().last().unwrap().time, at(12, 34));
}

#[test]
fn own_lines_are_marked_and_mentions_ring_once() {
    let mut app = connected();
    app.update(server(ServerEvent::Renamed {
        name: "alice".into(),
    }));
    assert!(app.update(chat(ME, "alice", "hi, I am alice")).is_empty());
    let own = app.scrollback.iter().last().unwrap();
    assert!(own.own && !own.mention, "own lines do not ring");
    assert_eq!(
        app.update(chat(BOB, "bob", "hey Alice, look")),
        vec![Effect::Bell]
    );
    assert!(app.scrollback.iter().last().unwrap().mention);
    for not_a_mention in ["malice", "alicea", "hello", "alice.smith: lunch?"] {
        assert!(app.update(chat(BOB, "bob", not_a_mention)).is_empty());
        assert!(!app.scrollback.iter().last().unwrap().mention);
    }
    let mut quiet = App::new(Settings {
        bell: false,
        ..Settings::default()
    });
    quiet.update(welcome("alice"));
    assert!(quiet.update(chat(BOB, "bob", "alice!")).is_empty());
    assert!(
        quiet.scrollback.iter().last().unwrap().mention,
        "still highlighted"
    );
}

#[test]
fn a_mention_is_the_name_as_a_whole_word_of_name_characters() {
    for text in [
        "bob: lunch?",
        "bob, lunch?",
        "@bob lunch?",
        "lunch, Bob?",
        "ask bob.",
        "(bob) and me",
        "hey bob!",
        "bob",
    ] {
        assert!(mentions(text, "bob"), "{text}");
    }
    for text in [
        "bob.smith: lunch?",
        "bobby: lunch?",
        "bob-2 said",
        "x@bob",
        "bob.smith.",
        "jim_bob, hi",
    ] {
        assert!(!mentions(text, "bob"), "{text}");
    }
    assert!(mentions("bob.smith: lunch?", "bob.smith"));
    assert!(!mentions("anything", ""));
}

#[test]
fn a_huge_line_from_the_server_is_cut_to_a_sane_length() {
    let mut app = connected();
    let huge = "字".repeat(300_000);
    app.update(chat(BOB, &"n".repeat(10_000), &huge));
    let entry = app.scrollback.iter().last().unwrap();
    assert!(
        entry.text.len() <= MAX_ENTRY_TEXT_BYTES,
        "{}",
        entry.text.len()
    );
    assert!(entry.text.len() > MAX_ENTRY_TEXT_BYTES - 8);
    assert!(entry.text.ends_with('…'));
    assert!(entry.text.starts_with("字字"));
    assert!(entry.name.as_ref().unwrap().len() <= MAX_ENTRY_NAME_BYTES);
    app.update(chat(BOB, "bob", "short"));
    assert_eq!(app.scrollback.iter().last().unwrap().text, "short");
}

#[test]
fn errors_and_notices_go_to_the_pane() {
    let mut app = connected();
    app.update(server(ServerEvent::error(ErrorCode::Flood, "slow down")));
    app.update(server(ServerEvent::notice(
        chat_protocol::NoticeCode::Shutdown,
        "server shutting down",
    )));
    let last: Vec<_> = app.scrollback.iter().rev().take(2).collect();
    assert_eq!(last[1].kind, EntryKind::Error);
    assert_eq!(last[1].text, "error: slow down");
    assert_eq!(last[0].kind, EntryKind::Notice);
    assert_eq!(last[0].text, "server shutting down");
}

fn filled(lines: usize, cap: usize) -> App {
    let mut app = App::new(Settings {
        scrollback: cap,
        ..Settings::default()
    });
    app.update(Msg::Resize {
        width: 80,
        height: 12,
    });
    for i in 0..lines {
        app.update(chat(BOB, "bob", &format!("line {i}")));
    }
    app
}

#[test]
fn scrolling_with_page_keys_home_end_and_wheel() {
    let mut app = filled(100, 1000);
    assert_eq!(app.scroll, None);
    app.update(key(KeyCode::PageUp));
    // The pane is 10 rows high: a page moves 9 one-row lines.
    assert_eq!(app.scroll, Some(ScrollPos::at(99 - 9)));
    assert_eq!(app.lines_below(), 9);
    app.update(key(KeyCode::PageDown));
    assert_eq!(app.scroll, None, "back at the bottom: pinned again");
    app.update(Msg::WheelUp);
    assert_eq!(app.scroll, Some(ScrollPos::at(99 - WHEEL_STEP as u64)));
    app.update(Msg::WheelDown);
    assert_eq!(app.scroll, None);
    app.update(key(KeyCode::Home));
    // 10 rows, the bottom one the "more below" marker: lines 0 to 8.
    assert_eq!(
        app.scroll,
        Some(ScrollPos::at(8)),
        "oldest line at the top, above the marker"
    );
    app.update(key(KeyCode::PageUp));
    assert_eq!(
        app.scroll,
        Some(ScrollPos::at(8)),
        "cannot scroll past the top"
    );
    app.update(key(KeyCode::End));
    assert_eq!(app.scroll, None);
}

/// A 10-row pane (58 columns) holding a short line, a message of many rows, and 3 short
/// lines after it.
fn with_a_message_taller_than_the_pane() -> (App, usize) {
    let mut app = filled(1, 1000);
    let long: Vec<String> = (0..150).map(|i| format!("word{i:02}")).collect();
    app.update(chat(BOB, "bob", &long.join(" ")));
    let (width, _) = app.pane_size();
    let rows = app.rows_of(app.scrollback.last_seq(), width);
    assert!(
        rows > 12,
        "the message must be taller than the pane: {rows}"
    );
    for i in 0..3 {
        app.update(chat(BOB, "bob", &format!("after {i}")));
    }
    (app, rows)
}

#[test]
fn the_wheel_and_page_keys_move_through_a_long_message_row_by_row() {
    let (mut app, rows) = with_a_message_taller_than_the_pane();
    let long = app.scrollback.last_seq() - 3;
    app.update(Msg::WheelUp);
    assert_eq!(
        app.scroll,
        Some(ScrollPos::at(long + 3 - WHEEL_STEP as u64))
    );
    app.update(Msg::WheelUp);
    assert_eq!(
        app.scroll,
        Some(ScrollPos {
            seq: long,
            skip: WHEEL_STEP * 2 - 3
        }),
        "inside the long message"
    );
    // Paging up moves 9 rows at a time through the long message until its first row is at
    // the top of the 9 rows above the marker, under the one line before it.
    let mut pages = 0;
    loop {
        let before = app.scroll;
        app.update(key(KeyCode::PageUp));
        if app.scroll == before {
            break;
        }
        pages += 1;
        assert!(pages < 100, "stuck");
    }
    assert!(pages >= 2, "{pages}");
    assert_eq!(
        app.scroll,
        Some(ScrollPos {
            seq: long,
            skip: rows - 8
        })
    );
    // And back down the same way to the bottom.
    for _ in 0..rows {
        app.update(key(KeyCode::PageDown));
    }
    assert_eq!(app.scroll, None);
}

#[test]
fn home_and_end_move_the_cursor_when_there_is_text() {
    let mut app = filled(100, 1000);
    type_text(&mut app, "ab");
    app.update(key(KeyCode::Home));
    assert_eq!((app.scroll, app.input.cursor()), (None, 0));
    app.update(ctrl_key(KeyCode::Home));
    assert_eq!(app.scroll, Some(ScrollPos::at(8)));
    app.update(key(KeyCode::End));
    assert_eq!(
        (app.scroll, app.input.cursor()),
        (Some(ScrollPos::at(8)), 2)
    );
    app.update(ctrl_key(KeyCode::End));
    assert_eq!(app.scroll, None);
}

#[test]
fn new_lines_wait_below_while_scrolled_up() {
    let mut app = filled(100, 1000);
    app.update(key(KeyCode::PageUp));
    let before = app.scroll;
    app.update(chat(BOB, "bob", "new"));
    assert_eq!(app.scroll, before, "the view stays where the reader is");
    assert_eq!(app.lines_below(), 10);
    let mut pinned = filled(100, 1000);
    pinned.update(chat(BOB, "bob", "new"));
    assert_eq!(pinned.scroll, None);
}

#[test]
fn scrollback_is_capped_and_the_view_follows_the_oldest_line() {
    let mut app = filled(50, 20);
    assert_eq!(app.scrollback.len(), 20);
    assert_eq!(app.scrollback.iter().next().unwrap().text, "line 30");
    app.update(key(KeyCode::Home));
    let top = app.scroll.unwrap();
    for i in 0..30 {
        app.update(chat(BOB, "bob", &format!("more {i}")));
    }
    assert_eq!(app.scrollback.len(), 20);
    assert!(app.scroll.unwrap().seq >= app.scrollback.first_seq());
    assert!(app.scroll.unwrap().seq > top.seq);
}

#[test]
fn plain_mode_renames_at_once_and_reads_refusals() {
    let mut app = App::new(Settings {
        name: Some("alice".into()),
        ..Settings::default()
    });
    let effects = app.update(Msg::Net(NetEvent::Connected { plain: true }));
    assert_eq!(sent(&effects), vec![rename("alice")]);
    assert!(app.plain);
    app.update(server(ServerEvent::Here {
        addr: ME.into(),
        name: ME.into(),
    }));
    assert_eq!(app.own_addr.as_deref(), Some(ME));
    // Our server's plain refusal has no code; an unrelated error first is not the answer.
    app.update(server(ServerEvent::error(
        ErrorCode::Other,
        "your line was not valid UTF-8; invalid bytes were replaced with U+FFFD",
    )));
    assert_eq!(app.retake, Retake::InFlight { attempt: 1 });
    app.update(server(ServerEvent::error(
        ErrorCode::Other,
        "rename refused: the name alice is already taken",
    )));
    assert_eq!(app.retake, Retake::Idle);
    assert!(
        texts(&app)
            .last()
            .unwrap()
            .contains("could not take the name alice")
    );
    // The original's `rename ok` without a name the parser could pair.
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "al2");
    app.update(key(KeyCode::Enter));
    app.update(server(ServerEvent::Renamed { name: "".into() }));
    assert_eq!(app.own_name.as_deref(), Some("al2"));
    app.update(Msg::Net(NetEvent::Unsendable(said("who"))));
    assert!(texts(&app).last().unwrap().contains("as a command"));
}

#[test]
fn rename_while_disconnected_says_so_in_the_dialog() {
    let mut app = App::new(Settings::default());
    app.update(key(KeyCode::F(2)));
    type_text(&mut app, "zed");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert!(
        app.rename
            .as_ref()
            .unwrap()
            .server_error
            .as_deref()
            .unwrap()
            .contains("not connected")
    );
}

#[test]
fn resize_and_status_changes_ask_for_a_redraw_but_ticks_do_not() {
    let clock = Clock(Instant::now());
    let mut app = connected();
    clock.tick(&mut app, 0);
    app.dirty = false;
    clock.tick(&mut app, 300);
    assert!(!app.dirty);
    app.update(Msg::Resize {
        width: 100,
        height: 30,
    });
    assert!(app.dirty);
    assert_eq!(app.size, (100, 30));
    app.dirty = false;
    app.update(Msg::Net(NetEvent::Connecting { attempt: 2 }));
    assert!(app.dirty, "the status bar shows the connection state");
}

#[test]
fn plain_mode_user_list_comes_a_line_at_a_time() {
    let mut app = App::new(Settings::default());
    app.update(Msg::Net(NetEvent::Connected { plain: true }));
    app.update(server(ServerEvent::Users {
        users: vec![user("9.9.9.9:9", "stale")],
    }));
    // `user list:` starts a fresh list; each following line adds one user.
    app.update(server(ServerEvent::Users { users: vec![] }));
    assert!(app.users.is_empty());
    for (addr, name) in [(BOB, "zed"), (ME, "amy")] {
        app.update(Msg::Net(NetEvent::Listed(user(addr, name))));
    }
    let names: Vec<&str> = app.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["amy", "zed"]);
}

// ----- history -----

fn stamped_chat(seq: u64, text: &str) -> ServerEvent {
    ServerEvent::Chat {
        addr: BOB.into(),
        name: "bob".into(),
        text: text.into(),
        stamp: Some(chat_protocol::event::Stamp {
            seq,
            ts: "2026-12-02T09:15:00.000Z".into(),
        }),
    }
}

fn said_at(seq: u64) -> ServerEvent {
    stamped_chat(seq, &format!("line {seq}"))
}

fn welcome_at(seq: u64) -> Msg {
    server(ServerEvent::Welcome {
        version: 1,
        addr: ME.into(),
        name: ME.into(),
        idle_timeout_ms: 0,
        seq,
    })
}

fn history(seqs: impl IntoIterator<Item = u64>, more: bool, gap: bool) -> Msg {
    server(ServerEvent::History {
        events: seqs.into_iter().map(said_at).collect(),
        more,
        gap,
    })
}

fn asked(effects: &[Effect]) -> Vec<ClientCommand> {
    sent(effects)
        .into_iter()
        .filter(|c| matches!(c, ClientCommand::History { .. }))
        .collect()
}

fn ask(before: Option<u64>, after: Option<u64>, limit: u32) -> ClientCommand {
    ClientCommand::History {
        before,
        after,
        limit: Some(limit),
    }
}

/// Room events in the pane, in order.
fn room_lines(app: &App) -> Vec<String> {
    app.scrollback
        .iter()
        .filter(|e| e.room_seq.is_some())
        .map(|e| e.text.clone())
        .collect()
}

fn lines(seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
    seqs.into_iter().map(|s| format!("line {s}")).collect()
}

#[test]
fn on_connect_the_last_page_shows_dimmed_above_the_live_lines() {
    let mut app = App::new(Settings::default());
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome_at(40));
    assert_eq!(asked(&effects), vec![ask(None, None, HISTORY_ON_CONNECT)]);
    // Live lines arrive before the answer; the answer overlaps them.
    app.update(server(said_at(41)));
    app.update(server(said_at(42)));
    app.update(history(35..=41, true, false));
    assert_eq!(room_lines(&app), lines(35..=42), "in order, 41 once");
    let kinds: Vec<(EntryKind, bool)> =
        app.scrollback.iter().map(|e| (e.kind, e.earlier)).collect();
    let separator = kinds
        .iter()
        .position(|(k, _)| *k == EntryKind::Separator)
        .expect("a separator");
    assert!(
        kinds[..separator]
            .iter()
            .all(|(k, earlier)| *earlier || *k == EntryKind::Info),
        "everything above it is earlier: {kinds:?}"
    );
    assert!(kinds[separator + 1..].iter().all(|(_, earlier)| !earlier));
    assert_eq!(
        app.scrollback
            .iter()
            .nth(separator + 1)
            .map(|e| e.text.as_str()),
        Some("line 41"),
        "live begins below the separator (41 came live before the answer)"
    );
    // The earlier lines keep the server's time (shown in local time).
    let first = app.scrollback.iter().find(|e| e.earlier).unwrap();
    let expected = chrono::DateTime::parse_from_rfc3339("2026-12-02T09:15:00.000Z")
        .unwrap()
        .with_timezone(&chrono::Local)
        .time();
    assert_eq!(first.time, expected);
}

#[test]
fn the_page_on_connect_stands_above_what_this_connection_showed_since() {
    let mut app = App::new(Settings {
        name: Some("carol".into()),
        ..Settings::default()
    });
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(welcome_at(40));
    app.update(server(ServerEvent::Renamed {
        name: "carol".into(),
    }));
    app.update(server(said_at(41)));
    // 42 stands for this client's own rename: after the welcome, and never sent to it live.
    app.update(server(ServerEvent::History {
        events: [38, 39, 40, 41, 42].into_iter().map(said_at).collect(),
        more: true,
        gap: false,
    }));
    assert_eq!(
        texts(&app),
        [
            "connected to 127.0.0.1:8000",
            "line 38",
            "line 39",
            "line 40",
            "earlier messages above · live below",
            "you are now known as carol",
            "line 41",
        ]
    );
}

#[test]
fn an_empty_room_asks_for_nothing_and_plain_mode_never_asks() {
    let mut app = App::new(Settings::default());
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    assert!(asked(&app.update(welcome_at(0))).is_empty());
    let mut plain = App::new(Settings::default());
    let mut effects = plain.update(Msg::Net(NetEvent::Connected { plain: true }));
    effects.extend(plain.update(key(KeyCode::Home)));
    effects.extend(plain.update(Msg::WheelUp));
    assert!(
        asked(&effects).is_empty(),
        "the original server keeps no history"
    );
}

/// Connected, saw events 1 to 10 live, lost the connection, and is welcomed back at `seq`.
fn reconnected_at(seq: u64) -> (App, Vec<Effect>) {
    let mut app = App::new(Settings::default());
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(welcome_at(0));
    for s in 1..=10 {
        app.update(server(said_at(s)));
    }
    lose_connection(&mut app);
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome_at(seq));
    (app, effects)
}

#[test]
fn after_a_reconnect_exactly_the_missed_events_are_fetched_page_by_page_and_put_in_place() {
    let (mut app, effects) = reconnected_at(1_200);
    assert_eq!(
        asked(&effects),
        vec![ask(None, Some(10), HISTORY_RESUME_PAGE)]
    );
    // Live lines keep coming meanwhile.
    app.update(server(said_at(1_201)));
    app.update(server(said_at(1_202)));
    let effects = app.update(history(11..=510, true, false));
    assert_eq!(
        asked(&effects),
        vec![ask(None, Some(510), HISTORY_RESUME_PAGE)]
    );
    let effects = app.update(history(511..=1010, true, false));
    assert_eq!(
        asked(&effects),
        vec![ask(None, Some(1010), HISTORY_RESUME_PAGE)]
    );
    // The last page overlaps what came live: nothing twice.
    let effects = app.update(history(1011..=1201, false, false));
    assert!(asked(&effects).is_empty(), "done: no more pages");
    assert_eq!(
        room_lines(&app),
        lines(1..=1202),
        "nothing missed, nothing twice"
    );
    assert!(
        app.scrollback.iter().all(|e| !e.earlier),
        "missed lines are not dimmed"
    );
    assert!(
        !texts(&app)
            .iter()
            .any(|t| t.contains("lost while you were away")),
        "no gap"
    );
}

#[test]
fn a_server_whose_log_started_over_is_followed_from_its_new_seqs() {
    // Ten lines seen; the server came back with a log that has three events.
    let (mut app, effects) = reconnected_at(3);
    assert_eq!(asked(&effects), vec![ask(None, None, HISTORY_ON_CONNECT)]);
    assert!(
        texts(&app)
            .iter()
            .any(|t| t.starts_with("the server's history was reset")),
        "said plainly"
    );
    app.update(history(1..=3, false, false));
    app.update(server(said_at(4)));
    app.update(server(said_at(5)));
    assert_eq!(
        room_lines(&app),
        lines(1..=5),
        "the new log's events, none taken for the old ones"
    );
    assert_eq!(texts(&app)[1..11], lines(1..=10), "the old lines stay");
    assert_eq!(texts(&app).last().map(String::as_str), Some("line 5"));
}

#[test]
fn nothing_missed_means_nothing_asked() {
    let (_, effects) = reconnected_at(10);
    assert!(asked(&effects).is_empty());
}

#[test]
fn a_gap_is_said_plainly_where_the_missing_events_were() {
    let (mut app, _) = reconnected_at(100);
    app.update(history(60..=100, false, true));
    let all = texts(&app);
    let notice = all
        .iter()
        .position(|t| t.contains("some messages were lost while you were away"))
        .expect("the gap is said");
    assert_eq!(
        all[notice + 1],
        "line 60",
        "right before the first event after it"
    );
    assert_eq!(all[notice - 1..notice].len(), 1);
    assert_eq!(room_lines(&app), [lines(1..=10), lines(60..=100)].concat());
}

#[test]
fn a_lost_connection_forgets_the_request_and_the_next_welcome_asks_again() {
    let (mut app, _) = reconnected_at(100);
    lose_connection(&mut app);
    // An answer that never came; the next connection asks from the same place.
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome_at(120));
    assert_eq!(
        asked(&effects),
        vec![ask(None, Some(10), HISTORY_RESUME_PAGE)]
    );
}

/// A client at the bottom of events 901 to 1000 (in a pane 10 rows high), with older ones on
/// the server.
fn with_older_history(cap: usize) -> App {
    let mut app = App::new(Settings {
        scrollback: cap,
        ..Settings::default()
    });
    app.update(Msg::Resize {
        width: 80,
        height: 12,
    });
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    app.update(welcome_at(1000));
    app.update(history(951..=1000, true, false));
    app.update(history([], false, false)); // (nothing in flight: ignored)
    app
}

#[test]
fn scrolling_to_the_top_loads_the_page_before_the_oldest_line() {
    let mut app = with_older_history(10_000);
    let effects = app.update(key(KeyCode::Home));
    assert_eq!(asked(&effects), vec![ask(Some(951), None, HISTORY_PAGE)]);
    let shown = |app: &App| {
        let pos = app.scroll.expect("scrolled up");
        (app.scrollback.get(pos.seq).unwrap().text.clone(), pos.skip)
    };
    let before = shown(&app);
    assert!(
        asked(&app.update(Msg::WheelUp)).is_empty(),
        "one request at a time"
    );
    app.update(history(851..=950, true, false));
    assert_eq!(room_lines(&app), lines(851..=1000));
    assert_eq!(shown(&app), before, "the view stays on the lines it showed");
    // Paging up reaches the new top and asks again; the last page says it is the start.
    let mut effects = Vec::new();
    for _ in 0..20 {
        effects.extend(app.update(key(KeyCode::PageUp)));
    }
    assert_eq!(asked(&effects), vec![ask(Some(851), None, HISTORY_PAGE)]);
    app.update(history(800..=850, false, false));
    assert_eq!(
        texts(&app)[0],
        "the beginning of the room's history",
        "said at the very top"
    );
    for _ in 0..40 {
        assert!(
            asked(&app.update(key(KeyCode::PageUp))).is_empty(),
            "no more to ask"
        );
    }
}

#[test]
fn the_wheel_at_the_top_loads_older_pages_too() {
    let mut app = with_older_history(10_000);
    let mut effects = Vec::new();
    for _ in 0..30 {
        effects.extend(app.update(Msg::WheelUp));
    }
    assert_eq!(asked(&effects), vec![ask(Some(951), None, HISTORY_PAGE)]);
}

#[test]
fn older_pages_stay_within_the_cap_and_the_dropped_newest_come_back_at_the_bottom() {
    let mut app = with_older_history(120);
    app.update(key(KeyCode::Home));
    app.update(history(851..=950, true, false));
    assert!(app.scrollback.len() <= 120, "{}", app.scrollback.len());
    assert_eq!(room_lines(&app).first().unwrap(), "line 851");
    let newest = app.scrollback.newest_room_seq().unwrap();
    assert!(newest < 1000, "the newest were dropped to make room");
    // A live line meanwhile lands at the bottom.
    app.update(server(said_at(1001)));
    // Back at the bottom: the dropped lines are fetched again, after the newest held.
    let effects = app.update(ctrl_key(KeyCode::End));
    assert_eq!(
        asked(&effects),
        vec![ask(None, Some(newest), HISTORY_RESUME_PAGE)]
    );
    app.update(history(newest + 1..=1001, false, false));
    let held = room_lines(&app);
    assert_eq!(held.last().unwrap(), "line 1001");
    let expected: Vec<String> = lines(1001 - held.len() as u64 + 1..=1001);
    assert_eq!(held, expected, "contiguous, nothing twice");
    assert!(app.scrollback.len() <= 120);
}

// ----- direct messages -----

fn dm(from: (&str, &str), to: (&str, &str), text: &str) -> Msg {
    server(ServerEvent::Dm {
        from: user(from.0, from.1),
        to: user(to.0, to.1),
        text: text.into(),
    })
}

fn dm_to(to: &str, text: &str) -> ClientCommand {
    ClientCommand::Dm {
        to: to.into(),
        text: text.into(),
    }
}

#[test]
fn slash_msg_sends_a_direct_message_and_tab_completes_the_name() {
    let mut app = connected();
    app.update(server(ServerEvent::Users {
        users: vec![user(ME, ME), user(BOB, "bobby")],
    }));
    type_text(&mut app, "/msg bo");
    app.update(key(KeyCode::Tab));
    assert_eq!(app.input.text(), "/msg bobby ");
    type_text(&mut app, "lunch at one?");
    assert_eq!(
        sent(&app.update(key(KeyCode::Enter))),
        vec![dm_to("bobby", "lunch at one?")]
    );
    for bad in ["/msg", "/msg bobby", "/msg bobby   "] {
        type_text(&mut app, bad);
        assert!(sent(&app.update(key(KeyCode::Enter))).is_empty(), "{bad}");
        assert!(
            texts(&app)
                .last()
                .unwrap()
                .starts_with("usage: /msg NAME TEXT")
        );
    }
}

#[test]
fn direct_messages_show_apart_from_chat_and_a_received_one_rings() {
    let mut app = connected();
    let effects = app.update(dm((BOB, "bob"), (ME, ME), "psst"));
    assert_eq!(effects, vec![Effect::Bell]);
    let entry = app.scrollback.iter().last().unwrap().clone();
    assert_eq!(
        (entry.kind, entry.name.as_deref(), entry.text.as_str()),
        (EntryKind::DmReceived, Some("bob"), "psst")
    );
    // The server's echo of our own.
    assert!(
        app.update(dm((ME, ME), (BOB, "bob"), "hi")).is_empty(),
        "no bell"
    );
    let entry = app.scrollback.iter().last().unwrap().clone();
    assert_eq!(
        (entry.kind, entry.name.as_deref(), entry.own),
        (EntryKind::DmSent, Some("bob"), true)
    );
    let mut quiet = App::new(Settings {
        bell: false,
        ..Settings::default()
    });
    quiet.update(welcome(ME));
    assert!(quiet.update(dm((BOB, "bob"), (ME, ME), "psst")).is_empty());
}

#[test]
fn slash_r_answers_the_last_sender() {
    let mut app = connected();
    type_text(&mut app, "/r anyone?");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    assert!(texts(&app).last().unwrap().contains("nobody has sent you"));
    app.update(dm((BOB, "bob"), (ME, ME), "one"));
    app.update(dm(("1.1.1.1:1", "carol"), (ME, ME), "two"));
    // Our own messages do not change who /r answers.
    app.update(dm((ME, ME), (BOB, "bob"), "three"));
    type_text(&mut app, "/r hello carol");
    assert_eq!(
        sent(&app.update(key(KeyCode::Enter))),
        vec![dm_to("carol", "hello carol")]
    );
}

#[test]
fn no_such_user_is_shown() {
    let mut app = connected();
    type_text(&mut app, "/msg ghost boo");
    app.update(key(KeyCode::Enter));
    app.update(server(ServerEvent::error(
        ErrorCode::NoSuchUser,
        "no user named ghost is online",
    )));
    let last = app.scrollback.iter().last().unwrap();
    assert_eq!(
        (last.kind, last.text.as_str()),
        (EntryKind::Error, "error: no user named ghost is online")
    );
}

#[test]
fn direct_messages_typed_while_disconnected_wait_like_lines() {
    let mut app = connected();
    lose_connection(&mut app);
    type_text(&mut app, "/msg bob later");
    assert!(sent(&app.update(key(KeyCode::Enter))).is_empty());
    app.update(Msg::Net(NetEvent::Unsent(vec![dm_to("amy", "in flight")])));
    assert_eq!(app.outbox.len(), 2);
    app.update(Msg::Net(NetEvent::Connected { plain: false }));
    let effects = app.update(welcome(ME));
    assert_eq!(
        sent(&effects)
            .into_iter()
            .filter(|c| matches!(c, ClientCommand::Dm { .. }))
            .collect::<Vec<_>>(),
        vec![dm_to("amy", "in flight"), dm_to("bob", "later")]
    );
}
