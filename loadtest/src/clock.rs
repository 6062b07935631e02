//! The process clock publishers stamp into markers and viewers read latency against.
//!
//! Publishers and viewers run in the same process, so one monotonic clock serves both ends:
//! a marker's send time is microseconds since [`epoch`], and a viewer subtracts it from its
//! own reading of the same clock. No clock synchronization is involved.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The instant the clock counts from; fixed the first time anything asks.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// `at` as microseconds since the epoch.
pub fn micros(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}
