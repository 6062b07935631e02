//! How late the relay reads each publisher, measured against the pace of the publisher's
//! own timestamps.
//!
//! A live encoder sends media in real time, so for each message `arrival - timestamp` is
//! constant but for jitter. The smallest offset seen so far is the publisher's best case;
//! how far a message's offset is above it is how late that message was read (delayed by
//! the relay, the kernel or the encoder itself, so it is an upper bound on the relay's own
//! delay). The shard records it per message in `ShardStats::ingest_delay`
//! (`shardcast_ingest_read_delay_seconds`); the ingest-heavy benchmark (issue 15) reads
//! it to show that no publisher waits behind the fan-out.
//!
//! A jump in the publisher's timestamps (a restart near zero, a stalled encoder that
//! skips ahead) is a new baseline, not a delay: offsets that move by more than
//! [`DISCONTINUITY`] start over.

use std::time::{Duration, Instant};

/// An offset change beyond this is a timestamp discontinuity, not lateness.
pub const DISCONTINUITY: Duration = Duration::from_secs(10);

/// One publisher's reading pace.
#[derive(Clone, Debug, Default)]
pub struct IngestPace {
    /// The arrival time the offsets are counted from, and the smallest offset seen (ms).
    start: Option<Instant>,
    best_offset_ms: i64,
}

impl IngestPace {
    /// A message stamped `timestamp` (ms, the publisher's clock) was read at `now`: how
    /// late, or None for the first message and for a discontinuity.
    pub fn observe(&mut self, timestamp: u32, now: Instant) -> Option<Duration> {
        let Some(start) = self.start else {
            self.start = Some(now);
            self.best_offset_ms = -i64::from(timestamp);
            return None;
        };
        let arrival_ms = now.saturating_duration_since(start).as_millis() as i64;
        let offset = arrival_ms - i64::from(timestamp);
        let late = offset - self.best_offset_ms;
        if late < 0 {
            // Earlier than ever: the new best case (or, far earlier, a jump ahead).
            self.best_offset_ms = offset;
            return (late > -(DISCONTINUITY.as_millis() as i64)).then_some(Duration::ZERO);
        }
        if late > DISCONTINUITY.as_millis() as i64 {
            self.best_offset_ms = offset;
            return None;
        }
        Some(Duration::from_millis(late as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_publisher_read_on_time_is_never_late() {
        let t0 = Instant::now();
        let mut pace = IngestPace::default();
        assert_eq!(pace.observe(1000, t0), None);
        for i in 1..100u32 {
            let late = pace.observe(1000 + i * 40, t0 + 40 * i * MS);
            assert_eq!(late, Some(Duration::ZERO));
        }
    }

    #[test]
    fn a_late_read_is_measured_from_the_best_case() {
        let t0 = Instant::now();
        let mut pace = IngestPace::default();
        pace.observe(0, t0);
        assert_eq!(pace.observe(40, t0 + 40 * MS), Some(Duration::ZERO));
        // Read 25 ms late, then on time again.
        assert_eq!(pace.observe(80, t0 + 105 * MS), Some(25 * MS));
        assert_eq!(pace.observe(120, t0 + 120 * MS), Some(Duration::ZERO));
        // A burst the encoder sent early lowers the baseline.
        assert_eq!(pace.observe(200, t0 + 150 * MS), Some(Duration::ZERO));
        assert_eq!(pace.observe(240, t0 + 200 * MS), Some(10 * MS));
    }

    #[test]
    fn timestamp_jumps_start_over() {
        let t0 = Instant::now();
        let mut pace = IngestPace::default();
        pace.observe(50_000, t0);
        // The encoder restarted near zero: far later than its old pace.
        assert_eq!(pace.observe(0, t0 + 40 * MS), None);
        assert_eq!(pace.observe(40, t0 + 80 * MS), Some(Duration::ZERO));
        // It skipped far ahead.
        assert_eq!(pace.observe(90_000, t0 + 120 * MS), None);
        assert_eq!(pace.observe(90_040, t0 + 160 * MS), Some(Duration::ZERO));
    }
}
