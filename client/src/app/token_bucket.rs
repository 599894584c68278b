//! Stand-in for `chat_protocol::rate::TokenBucket` until it lands on main (same API).

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let unlimited = burst == 0 || rate.is_nan() || rate <= 0.0;
        TokenBucket {
            rate: if unlimited { 0.0 } else { rate },
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: now,
        }
    }

    pub fn has_token(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens >= 1.0
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        if !self.has_token(now) {
            return false;
        }
        if self.rate > 0.0 {
            self.tokens -= 1.0;
        }
        true
    }
}
