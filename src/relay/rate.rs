//! Bitrates over the last 30 seconds, from byte counters sampled every few seconds.
//!
//! The relay only counts bytes; a [`RateWindow`] keeps a few samples of those counters
//! (taken by the shard's sampling timer, never per message) so the admin API can say what
//! flowed recently, the way SRS's `kbps.recv_30s`/`send_30s` do.

use std::time::{Duration, Instant};

/// The span a rate covers.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);
/// How often the shard samples every counter.
pub const RATE_SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
const SAMPLES: usize = (RATE_WINDOW.as_secs() / RATE_SAMPLE_INTERVAL.as_secs()) as usize + 1;

/// Samples of an (in, out) pair of byte counters.
#[derive(Clone, Debug, Default)]
pub struct RateWindow {
    samples: [(Option<Instant>, u64, u64); SAMPLES],
    next: usize,
}

impl RateWindow {
    pub fn sample(&mut self, now: Instant, bytes_in: u64, bytes_out: u64) {
        self.samples[self.next] = (Some(now), bytes_in, bytes_out);
        self.next = (self.next + 1) % SAMPLES;
    }

    /// Kilobits per second in and out from the oldest sample within the window to the
    /// current counters. 0 until a sample is at least a second old.
    pub fn kbps(&self, now: Instant, bytes_in: u64, bytes_out: u64) -> (u64, u64) {
        let oldest = self
            .samples
            .iter()
            .filter_map(|&(at, i, o)| Some((at?, i, o)))
            .filter(|(at, _, _)| now.saturating_duration_since(*at) <= RATE_WINDOW)
            .min_by_key(|(at, _, _)| *at);
        let Some((at, i0, o0)) = oldest else {
            return (0, 0);
        };
        let secs = now.saturating_duration_since(at).as_secs_f64();
        if secs < 1.0 {
            return (0, 0);
        }
        let kbps = |delta: u64| (delta as f64 * 8.0 / 1000.0 / secs).round() as u64;
        (
            kbps(bytes_in.saturating_sub(i0)),
            kbps(bytes_out.saturating_sub(o0)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_covers_the_last_thirty_seconds() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        assert_eq!(w.kbps(t0, 0, 0), (0, 0));
        // 125_000 bytes/s in = 1000 kbps; 250_000 bytes/s out = 2000 kbps.
        for s in 0..=40u64 {
            if s % 2 == 0 {
                w.sample(t0 + Duration::from_secs(s), s * 125_000, s * 250_000);
            }
        }
        let now = t0 + Duration::from_secs(41);
        assert_eq!(w.kbps(now, 41 * 125_000, 41 * 250_000), (1000, 2000));
        // Nothing flowed for the last 30 s: the old samples fall out of the window.
        let later = t0 + Duration::from_secs(80);
        let (i, o) = w.kbps(later, 41 * 125_000, 41 * 250_000);
        assert_eq!((i, o), (0, 0));
    }
}
