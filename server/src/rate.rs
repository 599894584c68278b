//! A token bucket: `burst` lines at once, then `rate` lines per second on average. Either
//! being `0` means no limit.

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens added per second; `0` (or a `burst` of `0`) disables the limit.
    rate: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> Self {
        let unlimited = burst == 0 || rate.is_nan() || rate <= 0.0;
        let burst = f64::from(burst);
        TokenBucket {
            rate: if unlimited { 0.0 } else { rate },
            burst,
            tokens: burst,
            updated: Instant::now(),
        }
    }

    /// Takes one token if there is one. Always true when the limit is disabled.
    pub fn try_take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let mut bucket = TokenBucket::new(2.0, 3);
        assert!((0..3).all(|_| bucket.try_take()));
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_take());
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..10).filter(|_| bucket.try_take()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_or_zero_burst_is_unlimited() {
        for (rate, burst) in [(0.0, 1), (5.0, 0), (f64::NAN, 20)] {
            let mut bucket = TokenBucket::new(rate, burst);
            assert!((0..10_000).all(|_| bucket.try_take()), "{rate} {burst}");
        }
    }
}
