//! Exponential backoff with jitter for reconnecting to an upstream or a push target.
//!
//! The n-th retry waits a random time in `[d/2, d]` with `d = min(base * 2^n, cap)`
//! ("equal jitter"): the wait grows quickly when a peer stays down, never passes the cap,
//! and many edges that lost the same origin at the same moment spread their retries
//! instead of arriving together. The randomness is a small xorshift generator seeded by
//! the caller, so the schedule is reproducible in tests; time is not read here.

use std::time::Duration;

/// The retry schedule of one upstream or target.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// `base`: the longest first wait; `cap`: the longest wait ever; `seed`: any number
    /// that differs between peers (a hash of the URL and the node id, say).
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base: base.min(cap),
            cap,
            failures: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// How long to wait before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let full = self
            .base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.cap)
            .min(self.cap);
        let half = full / 2;
        let span = (full - half).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// A success (media flowing again): the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_grow_and_stay_under_the_cap() {
        let mut b = Backoff::new(500 * MS, 10_000 * MS, 42);
        let mut upper = 500 * MS;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= upper / 2 && d <= upper,
                "{d:?} outside [{:?}, {upper:?}]",
                upper / 2
            );
            upper = (upper * 2).min(10_000 * MS);
        }
        assert_eq!(b.failures(), 20);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(100 * MS, 10_000 * MS, 7);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }

    #[test]
    fn different_seeds_spread_the_retries() {
        let delays: Vec<Duration> = (0..16u64)
            .map(|seed| {
                let mut b = Backoff::new(1000 * MS, 10_000 * MS, seed * 7919 + 1);
                b.next_delay();
                b.next_delay()
            })
            .collect();
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 8, "{delays:?}");
    }

    #[test]
    fn a_huge_failure_count_does_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), 1);
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
    }
}
