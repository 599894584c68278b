//! The clock, and staying connected: send pacing refills, name retakes are retried, the
//! server hears from an idle client often enough not to drop it, and the sidebar is kept.
//!
//! JSON mode: `who` once after (re)connecting and on `/who`; from then on the sidebar
//! follows the `join`, `leave` and `rename` events. A `ping` goes out when nothing else was
//! sent for a third of the server's idle timeout (from the welcome; none when it is 0).
//! `--plain` (the original server has no `ping`): `who` every [`WHO_REFRESH`], and after
//! joins, leaves and renames, as the keepalive and to keep the sidebar right.

use super::{App, Effect};
use chat_protocol::ClientCommand;
use chrono::NaiveTime;
use std::time::{Duration, Instant};

/// Plain mode: how often the user list is asked for when nothing else asks for it. Well
/// under the server's default 30 s idle timeout, so an open client that nobody types into
/// stays online.
pub const WHO_REFRESH: Duration = Duration::from_secs(10);
/// At most one `who` per this interval, however busy the room.
pub const WHO_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The keepalive interval for a server's idle timeout: a third of it, so two pings can be
/// late or lost before the server gives up. `None` when the server has no idle timeout.
pub fn ping_interval(idle_timeout_ms: u64) -> Option<Duration> {
    (idle_timeout_ms > 0).then(|| Duration::from_millis(idle_timeout_ms) / 3)
}

impl App {
    pub(super) fn on_tick(&mut self, now: Instant, time: NaiveTime, effects: &mut Vec<Effect>) {
        self.clock = time;
        self.pacer.tick(now);
        self.last_tick = Some(now);
        if !self.is_connected() {
            return;
        }
        self.retry_retake(now, effects);
        let since_who = self.last_who.map(|t| now.saturating_duration_since(t));
        // Plain mode: the periodic `who` is the keepalive.
        let refresh_due = self.plain && since_who.is_none_or(|d| d >= WHO_REFRESH);
        let allowed = since_who.is_none_or(|d| d >= WHO_MIN_INTERVAL);
        if (self.who_due || refresh_due) && allowed && self.pacer.try_take() {
            self.who_due = false;
            self.last_who = Some(now);
            effects.push(Effect::Send(ClientCommand::Who));
        }
        let sent_now = effects.iter().any(|e| matches!(e, Effect::Send(_)));
        if let Some(interval) = self.ping_every
            && !self.plain
            && !sent_now
            && self
                .last_sent
                .is_none_or(|t| now.saturating_duration_since(t) >= interval)
            && self.pacer.try_take()
        {
            effects.push(Effect::Send(ClientCommand::Ping { token: None }));
        }
    }

    /// Someone joined, left or was renamed. In JSON mode the event itself keeps the sidebar
    /// right; only in plain mode is the list asked for again (at most once a second).
    pub(super) fn list_changed(&mut self) {
        if self.plain {
            self.who_due = true;
        }
    }
}
