//! A token bucket with time injected: no clock, no I/O, saturating arithmetic.
//!
//! Tokens are bytes. They accrue at `rate` per second up to `burst`; fractions of a byte are
//! carried (in byte-nanoseconds), so frequent small refills lose nothing and the long-run rate
//! is exact. A `now` earlier than the last one seen (a clock stepping back) adds nothing and
//! moves the reference point back, so time is never counted twice.

use std::time::{Duration, Instant};

const NANOS: u128 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second; at least 1.
    rate: u64,
    /// Most tokens held; at least 1.
    burst: u64,
    tokens: u64,
    /// Byte-nanoseconds accrued towards the next whole token; below `NANOS`.
    frac: u128,
    /// When `tokens` was last brought up to date; `None` until the first call (full bucket).
    last: Option<Instant>,
}

impl TokenBucket {
    /// A bucket that starts full. `rate` 0 is treated as 1 byte/s; callers that mean
    /// "unlimited" keep no bucket at all.
    pub fn new(rate_bytes_per_s: u64, burst: u64) -> TokenBucket {
        let burst = burst.max(1);
        TokenBucket { rate: rate_bytes_per_s.max(1), burst, tokens: burst, frac: 0, last: None }
    }

    /// The burst wugui uses for `rate`: small (1/20 s of traffic, at least 64 KiB) so that the
    /// achieved rate stays within a few percent over a transfer of a few seconds.
    pub fn default_burst(rate: u64) -> u64 {
        (rate / 20).max(64 << 10)
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Tokens (and carried fraction) as they are at `now`, without changing anything.
    fn level(&self, now: Instant) -> (u64, u128) {
        let Some(last) = self.last else { return (self.tokens, 0) };
        if now <= last || self.tokens >= self.burst {
            return (self.tokens, self.frac);
        }
        let acc = (now - last).as_nanos().saturating_mul(self.rate as u128).saturating_add(self.frac);
        let add = acc / NANOS;
        let tokens = (self.tokens as u128).saturating_add(add);
        if tokens >= self.burst as u128 {
            (self.burst, 0)
        } else {
            (tokens as u64, acc % NANOS)
        }
    }

    fn refill(&mut self, now: Instant) {
        let (tokens, frac) = self.level(now);
        self.tokens = tokens;
        self.frac = frac;
        self.last = Some(now);
    }

    /// Takes up to `want` tokens at `now`; returns how many were granted (possibly 0).
    pub fn take(&mut self, now: Instant, want: u64) -> u64 {
        self.refill(now);
        let granted = want.min(self.tokens);
        self.tokens -= granted;
        granted
    }

    /// Returns `n` granted tokens that were not used (a short write), up to the burst.
    pub fn refund(&mut self, n: u64) {
        self.tokens = self.tokens.saturating_add(n).min(self.burst);
    }

    /// `None` if `min(want, burst)` tokens can be taken at `now`; otherwise when they can.
    /// Waiting for more than `burst` would wait forever, so a large `want` waits for `burst`
    /// (callers take what is there and come back for the rest).
    pub fn delay(&self, now: Instant, want: u64) -> Option<Instant> {
        let need = want.clamp(1, self.burst);
        let (tokens, frac) = self.level(now);
        if tokens >= need {
            return None;
        }
        let missing = ((need - tokens) as u128 * NANOS).saturating_sub(frac);
        let nanos = missing.div_ceil(self.rate as u128);
        // Before `last` (a clock that stepped back) nothing accrues, so count from `last`.
        let base = match self.last {
            Some(last) if last > now => last,
            _ => now,
        };
        let wait = Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
        base.checked_add(wait).or_else(|| base.checked_add(Duration::from_secs(3600)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_start_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100);
        assert_eq!(b.take(t0, 500), 100);
        assert_eq!(b.take(t0, 1), 0);
        assert_eq!(b.delay(t0, 50), Some(t0 + Duration::from_millis(50)));
        assert_eq!(b.take(t0 + Duration::from_millis(50), 500), 50);
        // Many tiny steps lose no fractions.
        let mut got = 0;
        let mut t = t0 + Duration::from_millis(50);
        for _ in 0..1000 {
            t += Duration::from_micros(300);
            got += b.take(t, 1000);
        }
        assert_eq!(got, 300);
        // Idle time fills to the burst, no more.
        let t = t + Duration::from_secs(100);
        assert_eq!(b.take(t, u64::MAX), 100);
        assert_eq!(b.delay(t, 0), Some(t + Duration::from_millis(1)));
    }

    #[test]
    fn clock_stepping_back_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1000, 100);
        assert_eq!(b.take(t0, 100), 100);
        let back = t0 - Duration::from_secs(5);
        assert_eq!(b.take(back, 100), 0);
        // Measured from the earlier time now, not counted twice.
        assert_eq!(b.take(back + Duration::from_millis(20), 100), 20);
        assert!(b.delay(back, 10).unwrap() > back);
    }

    #[test]
    fn delay_is_never_early() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(333, 64);
        let mut now = t0;
        b.take(now, 64);
        for _ in 0..200 {
            let at = b.delay(now, 40).unwrap();
            assert!(at > now);
            now = at;
            assert!(b.take(now, 40) == 40);
        }
    }

    #[test]
    fn ten_simulated_seconds_at_ten_mib() {
        let rate = 10u64 << 20;
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate, TokenBucket::default_burst(rate));
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        let mut total = 0u64;
        // A writer that wants 256 KiB at a time and sleeps until the bucket says so, with its
        // wakeups rounded up to a millisecond as the reactor's are.
        while now < end {
            total += b.take(now, 256 << 10);
            match b.delay(now, 256 << 10) {
                None => {}
                Some(at) => {
                    let d = at - now;
                    let ms = d.as_nanos().div_ceil(1_000_000) as u64;
                    now += Duration::from_millis(ms.max(1));
                }
            }
        }
        let expect = rate * 10;
        let err = (total as f64 - expect as f64).abs() / expect as f64;
        assert!(err < 0.01, "granted {total}, expected {expect}");
    }

    #[test]
    fn saturates() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(u64::MAX, u64::MAX);
        assert_eq!(b.take(t0, u64::MAX), u64::MAX);
        assert_eq!(b.take(t0 + Duration::from_secs(1_000_000), u64::MAX), u64::MAX);
        b.refund(u64::MAX);
        assert!(b.delay(t0, u64::MAX).is_none());
    }
}
