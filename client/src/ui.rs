//! The view: draws an [`App`] and never changes it.
//!
//! Where things go and how entries wrap is [`crate::layout`]'s, shared with the app's
//! scrolling; this module only styles and draws. The message pane is drawn from its newest
//! visible row upwards (a scroll position is an entry and a row within it), wrapping only
//! the entries that fit on screen, so drawing costs the same with 100 lines of scrollback or
//! 100,000.

use crate::app::{App, Connection};
use crate::layout::{self, Part};
use crate::scrollback::{Entry, EntryKind, ScrollPos};
use chat_protocol::names::name_key;
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Colours for names: stable per name, none of them the red used for errors.
const NAME_COLOURS: [Color; 10] = [
    Color::Cyan,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::LightCyan,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
];

/// A name's colour: the same in every window and every session.
pub fn name_colour(name: &str) -> Color {
    // FNV-1a: tiny, and stable across builds, unlike the std hasher.
    let hash = name_key(name)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    NAME_COLOURS[(hash % NAME_COLOURS.len() as u64) as usize]
}

/// The style of an entry's text.
fn text_style(entry: &Entry) -> Style {
    match entry.kind {
        EntryKind::Chat if entry.mention => Style::new().fg(Color::Yellow).bold(),
        EntryKind::Chat => Style::new(),
        EntryKind::Join => Style::new().fg(Color::Green),
        EntryKind::Leave => Style::new().fg(Color::DarkGray),
        EntryKind::Timeout => Style::new().fg(Color::DarkGray).italic(),
        EntryKind::Rename => Style::new().fg(Color::Cyan),
        EntryKind::Error => Style::new().fg(Color::Red).bold(),
        EntryKind::Notice => Style::new().fg(Color::Magenta),
        EntryKind::Info => Style::new().fg(Color::DarkGray),
        EntryKind::Separator => Style::new().fg(Color::Cyan).bold(),
        EntryKind::DmSent | EntryKind::DmReceived => Style::new().fg(Color::LightMagenta),
    }
}

/// How each part of an entry looks.
fn part_style(entry: &Entry, part: Part) -> Style {
    match part {
        Part::Indent | Part::Gap => Style::new(),
        Part::Marker => match entry.kind {
            EntryKind::DmSent | EntryKind::DmReceived => {
                Style::new().fg(Color::Black).bg(Color::LightMagenta).bold()
            }
            EntryKind::Chat if entry.mention => Style::new().fg(Color::Black).bg(Color::Yellow),
            EntryKind::Chat if entry.own => Style::new().bold(),
            _ => text_style(entry),
        },
        Part::Name => {
            let name = entry.name.as_deref().unwrap_or_default();
            let style = Style::new().fg(name_colour(name)).bold();
            if entry.own { style.underlined() } else { style }
        }
        Part::Separator => Style::new().fg(Color::DarkGray),
        Part::Arrow => Style::new().fg(Color::LightMagenta).bold(),
        Part::Text => text_style(entry),
    }
}

fn time_span(entry: &Entry) -> Span<'static> {
    Span::styled(
        entry.time.format("%H:%M ").to_string(),
        Style::new().fg(Color::DarkGray),
    )
}

/// An entry wrapped to `width` columns, styled.
pub fn entry_lines(entry: &Entry, width: usize) -> Vec<Line<'static>> {
    let wrapped = layout::wrap_entry(entry, width);
    wrapped
        .rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            if wrapped.with_time {
                spans.push(if i == 0 {
                    time_span(entry)
                } else {
                    Span::raw(" ".repeat(layout::TIME_WIDTH))
                });
            }
            let mut run = String::new();
            let mut run_style = None;
            for cell in row {
                let style = part_style(entry, cell.part);
                if run_style.is_some_and(|s| s != style) {
                    spans.push(Span::styled(
                        std::mem::take(&mut run),
                        run_style.unwrap_or_default(),
                    ));
                }
                run_style = Some(style);
                run.push_str(cell.grapheme);
            }
            if !run.is_empty() {
                spans.push(Span::styled(run, run_style.unwrap_or_default()));
            }
            let line = Line::from(spans);
            let line = if entry.mention {
                line.patch_style(Style::new().add_modifier(Modifier::BOLD))
            } else {
                line
            };
            // Said before this client connected: dimmed, so the live lines stand out.
            if entry.earlier {
                line.patch_style(Style::new().add_modifier(Modifier::DIM))
            } else {
                line
            }
        })
        .collect()
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let areas = layout::areas(frame.area());
    draw_messages(frame, app, areas.messages);
    if let Some(sidebar) = areas.sidebar {
        draw_sidebar(frame, app, sidebar);
    }
    draw_status(frame, app, areas.status);
    let modal =
        app.show_help || app.paste_confirm.is_some() || app.rename.is_some() || app.quit_confirm;
    draw_input(frame, app, areas.input, !modal);
    if app.rename.is_some() {
        draw_rename(frame, app, frame.area());
    }
    if let Some(lines) = &app.paste_confirm {
        draw_paste_confirm(frame, lines.len(), frame.area());
    }
    if app.show_help {
        draw_help(frame, frame.area());
    }
    if app.quit_confirm {
        draw_quit_confirm(frame, app.outbox.len(), frame.area());
    }
}

fn draw_messages(frame: &mut Frame, app: &App, area: Rect) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let below = app.lines_below();
    let height = layout::message_rows(usize::from(area.height), below > 0);
    let width = usize::from(area.width);
    let mut rows: Vec<Line<'static>> = Vec::with_capacity(height);
    if !app.scrollback.is_empty() {
        let bottom = app
            .scroll
            .unwrap_or(ScrollPos::at(app.scrollback.last_seq()));
        let mut seq = bottom.seq;
        // Rows of the bottom entry that are below the view.
        let mut skip = bottom.skip;
        // Newest first: stop as soon as the pane is full.
        while rows.len() < height {
            let Some(entry) = app.scrollback.get(seq) else {
                break;
            };
            let mut lines = entry_lines(entry, width);
            lines.truncate(lines.len().saturating_sub(skip).max(1));
            skip = 0;
            while rows.len() < height
                && let Some(line) = lines.pop()
            {
                rows.push(line);
            }
            if seq == app.scrollback.first_seq() {
                break;
            }
            seq -= 1;
        }
    }
    rows.reverse();
    let top_padding = height - rows.len();
    let pane = Rect {
        y: area.y + top_padding as u16,
        height: rows.len() as u16,
        ..area
    };
    frame.render_widget(Paragraph::new(rows), pane);
    if below > 0 && area.height > 1 {
        let marker = Line::from(format!(
            " ↓ {below} more line{} below · End to jump ",
            if below == 1 { "" } else { "s" }
        ))
        .centered()
        .style(Style::new().fg(Color::Black).bg(Color::Yellow));
        let row = Rect {
            y: area.y + area.height - 1,
            height: 1,
            ..area
        };
        frame.render_widget(marker, row);
    }
}

fn draw_sidebar(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(Style::new().fg(Color::DarkGray))
        .title(format!(" online ({}) ", app.users.len()).bold());
    // Only the rows that fit: a room of thousands costs no more to draw than a screenful.
    let lines: Vec<Line> = app
        .users
        .iter()
        .take(usize::from(area.height))
        .map(|user| {
            let own = app.own_addr.as_deref() == Some(user.addr.as_str());
            let style = Style::new().fg(name_colour(&user.name));
            if own {
                Line::from(vec![
                    Span::styled("*", Style::new().bold()),
                    Span::styled(user.name.clone(), style.bold().underlined()),
                ])
            } else {
                Line::from(vec![Span::raw(" "), Span::styled(user.name.clone(), style)])
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let connection = match &app.connection {
        Connection::Connecting { attempt: 1 } => "connecting…".to_string(),
        Connection::Connecting { attempt } => format!("connecting (try {attempt})…"),
        Connection::Connected if app.plain => "connected (plain)".to_string(),
        Connection::Connected => "connected".to_string(),
        Connection::Disconnected { retry_in, .. } => {
            format!("DISCONNECTED, retry in {:.1}s", retry_in.as_secs_f64())
        }
    };
    let connection_style = match app.connection {
        Connection::Connected => Style::new().fg(Color::Green),
        Connection::Connecting { .. } => Style::new().fg(Color::Yellow),
        Connection::Disconnected { .. } => Style::new().fg(Color::Red).bold(),
    };
    let separator = || Span::raw(" │ ");
    let mut spans = vec![
        Span::raw(" "),
        Span::raw(app.settings.server.clone()),
        separator(),
        Span::styled(connection, connection_style),
        separator(),
        Span::styled(
            app.own_name
                .clone()
                .unwrap_or_else(|| "(no name yet)".into()),
            Style::new().bold(),
        ),
        separator(),
        Span::raw(format!("{} online", app.users.len())),
    ];
    if app.behind > 0 {
        spans.push(separator());
        spans.push(Span::styled(
            format!("behind: {} queued", app.behind),
            Style::new().fg(Color::LightRed).bold(),
        ));
    }
    if !app.outbox.is_empty() {
        spans.push(separator());
        spans.push(Span::styled(
            format!("{} queued", app.outbox.len()),
            Style::new().fg(Color::Yellow),
        ));
    }
    let bar = Style::new().bg(Color::DarkGray).fg(Color::White);
    let status = Line::from(spans).style(bar);
    let hint = " F1 help ";
    let needed = status.width() + hint.len() + 1;
    frame.render_widget(status, area);
    if usize::from(area.width) >= needed {
        let right = Rect {
            x: area.x + area.width - hint.len() as u16,
            width: hint.len() as u16,
            ..area
        };
        frame.render_widget(Line::from(hint).style(bar), right);
    }
}

fn draw_input(frame: &mut Frame, app: &App, area: Rect, show_cursor: bool) {
    let prompt = "> ";
    let available = usize::from(area.width)
        .saturating_sub(prompt.len() + 1)
        .max(1);
    let (visible, cursor_column) = visible_slice(app.input.text(), app.input.cursor(), available);
    let line = Line::from(vec![
        Span::styled(prompt, Style::new().fg(Color::Cyan).bold()),
        Span::raw(visible.to_string()),
    ]);
    frame.render_widget(line, area);
    if show_cursor {
        frame.set_cursor_position(Position::new(
            area.x + (prompt.len() + cursor_column) as u16,
            area.y,
        ));
    }
}

/// The part of `text` to show in `width` columns so the cursor stays in view, and the
/// cursor's column within it.
fn visible_slice(text: &str, cursor: usize, width: usize) -> (&str, usize) {
    let cursor_column = text[..cursor].width();
    if cursor_column < width {
        return (text, cursor_column);
    }
    let mut skipped = 0;
    let mut start = 0;
    for g in text.graphemes(true) {
        if cursor_column - skipped < width {
            break;
        }
        skipped += g.width();
        start += g.len();
    }
    (&text[start..], cursor_column - skipped)
}

/// A box of `width` × `height` centred in `area`, shrunk to fit.
fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn draw_rename(frame: &mut Frame, app: &App, area: Rect) {
    let Some(dialog) = &app.rename else {
        return;
    };
    let popup = centred(area, 54, 9);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .title(" Rename ".bold())
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let current = app.own_name.as_deref().unwrap_or("(none yet)");
    let label = "new name: ";
    let field_width = usize::from(inner.width)
        .saturating_sub(label.len() + 2)
        .max(1);
    let (visible, cursor_column) =
        visible_slice(dialog.field.text(), dialog.field.cursor(), field_width);
    let verdict = if dialog.waiting {
        Line::styled(" … waiting for the server", Style::new().fg(Color::Yellow))
    } else if let Some(error) = &dialog.server_error {
        Line::styled(format!(" ✗ {error}"), Style::new().fg(Color::Red).bold())
    } else {
        match dialog.validation() {
            Ok(()) => Line::styled(" ✓ Enter to take this name", Style::new().fg(Color::Green)),
            Err(rule) => Line::styled(format!(" ✗ {rule}"), Style::new().fg(Color::Yellow)),
        }
    };
    let lines = vec![
        Line::from(vec![
            Span::raw(" current name: "),
            Span::styled(current.to_string(), Style::new().bold()),
        ]),
        Line::from(vec![
            Span::raw(format!(" {label}")),
            Span::styled(visible.to_string(), Style::new().underlined()),
        ]),
        verdict,
        Line::raw(""),
        Line::styled(
            " Enter: rename · Esc: close",
            Style::new().fg(Color::DarkGray),
        ),
    ];
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
    frame.set_cursor_position(Position::new(
        inner.x + (1 + label.len() + cursor_column) as u16,
        inner.y + 1,
    ));
}

fn draw_paste_confirm(frame: &mut Frame, count: usize, area: Rect) {
    let popup = centred(area, 44, 5);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .title(" Paste ".bold())
        .border_style(Style::new().fg(Color::Yellow));
    let lines = vec![
        Line::from(format!(" Send {count} pasted lines as {count} messages?")),
        Line::raw(""),
        Line::styled(
            " y/Enter: send · n/Esc: discard",
            Style::new().fg(Color::DarkGray),
        ),
    ];
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

fn draw_quit_confirm(frame: &mut Frame, queued: usize, area: Rect) {
    let popup = centred(area, 44, 5);
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .title(" Quit ".bold())
        .border_style(Style::new().fg(Color::Red));
    let question = if queued == 0 {
        " Every queued line was sent. Quit?".to_string()
    } else {
        format!(
            " {queued} line{} not sent yet: quit anyway?",
            if queued == 1 { "" } else { "s" }
        )
    };
    let lines = vec![
        Line::from(question),
        Line::raw(""),
        Line::styled(" y: quit · n/Esc: stay", Style::new().fg(Color::DarkGray)),
    ];
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

/// Every key, as the help overlay lists it.
pub const HELP: &[(&str, &str)] = &[
    ("Enter", "send the line"),
    ("←/→, Ctrl+A/Ctrl+E", "move the cursor; start/end of line"),
    (
        "Home/End",
        "start/end of line (scroll top/bottom if it is empty)",
    ),
    ("Backspace/Delete", "delete before/under the cursor"),
    (
        "Ctrl+W / Ctrl+U",
        "delete word before cursor / to line start",
    ),
    ("↑/↓", "previous/next line from history"),
    ("Tab", "complete an online user's name (again: next)"),
    ("PageUp/PageDown", "scroll the messages a page"),
    ("Ctrl+Home/Ctrl+End", "scroll to oldest / newest line"),
    ("mouse wheel", "scroll the messages"),
    ("F2, Ctrl+R, /nick NAME", "rename dialog (Esc closes)"),
    ("/who", "refresh the user list now"),
    ("/msg NAME TEXT", "direct message (Tab completes NAME)"),
    ("/r TEXT", "reply to the last direct message"),
    ("//text", "send a line starting with /"),
    ("F1, /help", "this help (any key closes)"),
    ("Ctrl+C, /quit", "quit"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let key_width = HELP.iter().map(|(k, _)| k.width()).max().unwrap_or(0);
    let text_width = HELP.iter().map(|(_, t)| t.width()).max().unwrap_or(0);
    let popup = centred(
        area,
        (key_width + text_width + 5) as u16,
        HELP.len() as u16 + 2,
    );
    frame.render_widget(Clear, popup);
    let block = Block::bordered()
        .title(" Keys (any key closes) ".bold())
        .border_style(Style::new().fg(Color::Cyan));
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, text)| {
            Line::from(vec![
                Span::styled(
                    format!(" {key:<key_width$} "),
                    Style::new().fg(Color::Cyan).bold(),
                ),
                Span::raw(text.to_string()),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

#[cfg(test)]
mod tests;
