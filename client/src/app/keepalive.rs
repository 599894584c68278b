//! The clock: send pacing refills, name retakes are retried, and the user list is kept
//! fresh.

use super::{App, Effect, WHO_MIN_INTERVAL, WHO_REFRESH};
use chat_protocol::ClientCommand;
use chrono::NaiveTime;
use std::time::Instant;

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
        let refresh_due = since_who.is_none_or(|d| d >= WHO_REFRESH);
        let allowed = since_who.is_none_or(|d| d >= WHO_MIN_INTERVAL);
        if (self.who_due || refresh_due) && allowed && self.pacer.try_take() {
            self.who_due = false;
            self.last_who = Some(now);
            effects.push(Effect::Send(ClientCommand::Who));
        }
    }
}
