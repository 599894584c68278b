//! A token bucket: `burst` lines at once, then `rate` lines per second on average. Either
//! being `0` means no limit.
//!
//! One idea with two users: the server's flood limit and chat-tui's send pacing (which stays
//! under the server's limit so a paste is paced instead of dropped). Time comes in as an
//! argument, so the crate stays pure and callers choose their clock (the server passes
//! tokio's, which tests can pause).

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second; `0` means the limit is disabled.
    rate: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. A `burst` of `0`, or a `rate` that is `0`, negative or NaN, disables
    /// the limit.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let unlimited = burst == 0 || rate.is_nan() || rate <= 0.0;
        let burst = f64::from(burst);
        TokenBucket {
            rate: if unlimited { 0.0 } else { rate },
            burst,
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// True if a token could be taken now, without taking it.
    pub fn has_token(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes one token if there is one. Always true when the limit is disabled.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3, start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        let later = start + Duration::from_millis(500);
        assert!(bucket.has_token(later));
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.try_take(much_later)).count(), 3);
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1.0, 1, start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start - Duration::from_secs(5)));
        assert!(!bucket.try_take(start + Duration::from_millis(500)));
        assert!(bucket.try_take(start + Duration::from_secs(1)));
    }

    #[test]
    fn zero_rate_or_zero_burst_is_unlimited() {
        let now = Instant::now();
        for (rate, burst) in [(0.0, 1), (5.0, 0), (f64::NAN, 20)] {
            let mut bucket = TokenBucket::new(rate, burst, now);
            assert!((0..10_000).all(|_| bucket.try_take(now)), "{rate} {burst}");
        }
    }
}
