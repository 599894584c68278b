//! Send pacing: lines, renames and `who` go out at most [`SEND_RATE`] a second after a burst
//! of [`SEND_BURST`], below the server's flood limit, so a long paste is paced instead of
//! dropped. The arithmetic is the shared token bucket's, the one the server's flood limit
//! uses.

use super::{App, Effect, Retake};
use chat_protocol::ClientCommand;
use chat_protocol::rate::TokenBucket;
use std::time::Instant;

/// Outgoing lines per second, and how many may go at once. Below the server's default flood
/// limit (5/s, burst 20), so pasting a long text is paced instead of dropped.
pub const SEND_RATE: f64 = 4.0;
pub const SEND_BURST: u32 = 10;

/// The send token bucket, on the app's clock: time only enters through ticks, so a token
/// taken between ticks is taken at the last tick's time.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Made at the first tick, when there is a time to start it at.
    bucket: Option<TokenBucket>,
    /// Tokens taken before the first tick, taken from the bucket when it is made.
    taken_early: u32,
    now: Option<Instant>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    /// A full burst.
    pub fn new() -> Self {
        Pacer {
            bucket: None,
            taken_early: 0,
            now: None,
        }
    }

    /// The clock moved on to `now`.
    pub fn tick(&mut self, now: Instant) {
        self.now = Some(now);
        if self.bucket.is_none() {
            let mut bucket = TokenBucket::new(SEND_RATE, SEND_BURST, now);
            for _ in 0..self.taken_early {
                bucket.try_take(now);
            }
            self.bucket = Some(bucket);
        }
    }

    /// True if something may be sent now.
    pub fn ready(&mut self) -> bool {
        match (&mut self.bucket, self.now) {
            (Some(bucket), Some(now)) => bucket.has_token(now),
            _ => self.taken_early < SEND_BURST,
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self) -> bool {
        match (&mut self.bucket, self.now) {
            (Some(bucket), Some(now)) => bucket.try_take(now),
            _ if self.taken_early < SEND_BURST => {
                self.taken_early += 1;
                true
            }
            _ => false,
        }
    }
}

impl App {
    /// Sends what may go now: a rename from the dialog first, then queued lines, each taking
    /// a token.
    pub(super) fn pump_outbox(&mut self, effects: &mut Vec<Effect>) {
        if !self.is_connected() {
            return;
        }
        if self.rename_to_send.is_some() {
            if !self.pacer.try_take() {
                return;
            }
            if let Some(name) = self.rename_to_send.take() {
                effects.push(Effect::Send(ClientCommand::Rename { name }));
            }
        }
        // Held while the name is being taken back, so queued lines go out under it.
        if self.retake != Retake::Idle {
            return;
        }
        while !self.outbox.is_empty() && self.pacer.try_take() {
            if let Some(command) = self.outbox.pop_front() {
                effects.push(Effect::Send(command));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_counting_tokens_taken_before_the_first_tick() {
        let mut pacer = Pacer::new();
        let taken = (0..3).filter(|_| pacer.try_take()).count();
        assert_eq!(taken, 3, "no clock yet: the burst still applies");
        let start = Instant::now();
        pacer.tick(start);
        let burst = (0..100).filter(|_| pacer.try_take()).count();
        assert_eq!(burst as u32, SEND_BURST - 3);
        assert!(!pacer.ready());
        pacer.tick(start + Duration::from_millis(250));
        assert!(pacer.ready(), "one token a quarter second later");
        assert!(pacer.try_take());
        assert!(!pacer.try_take());
        pacer.tick(start + Duration::from_secs(60));
        assert_eq!(
            (0..100).filter(|_| pacer.try_take()).count() as u32,
            SEND_BURST
        );
    }
}
