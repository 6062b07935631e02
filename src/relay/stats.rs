//! A shard's counters: plain numbers its own core adds to, read only when someone asks.
//!
//! The metrics endpoint and the admin API sum these over every shard at scrape time
//! (`ShardMessage::Inspect`). Nothing here is shared or atomic: the fan-out's hot path
//! adds to a field of a struct its core owns, which costs what an add costs.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::access::DenialKind;

/// Why a connection, or what it asked for, was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The shard already has `max_connections_per_shard` clients.
    ShardFull,
    /// The server is shutting down.
    ShuttingDown,
    /// `connect` named an application the config does not have.
    UnknownApp,
    /// Publishing or playing is not allowed in the application.
    PublishNotAllowed,
    PlayNotAllowed,
    /// The stream key is being published by an active publisher.
    StreamBusy,
    /// Access control (`src/access/`, `[app.NAME.auth]`) refused: one reason per rule.
    AddressDenied,
    BadKey,
    BadSignature,
    LinkExpired,
    CallbackRefused,
    CallbackFailed,
    CallbackOverloaded,
    /// The client's address already has `server.max_connections_per_ip` connections.
    TooManyPerIp,
    /// A relay's pull or push that already passed through this server, or through more
    /// than `server.max_hops` relays (`src/rtmp/relay_path.rs`).
    RelayLoop,
}

impl RejectReason {
    pub const ALL: [RejectReason; 15] = [
        RejectReason::ShardFull,
        RejectReason::ShuttingDown,
        RejectReason::UnknownApp,
        RejectReason::PublishNotAllowed,
        RejectReason::PlayNotAllowed,
        RejectReason::StreamBusy,
        RejectReason::AddressDenied,
        RejectReason::BadKey,
        RejectReason::BadSignature,
        RejectReason::LinkExpired,
        RejectReason::CallbackRefused,
        RejectReason::CallbackFailed,
        RejectReason::CallbackOverloaded,
        RejectReason::TooManyPerIp,
        RejectReason::RelayLoop,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::ShardFull => "shard_full",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::UnknownApp => "unknown_app",
            RejectReason::PublishNotAllowed => "publish_not_allowed",
            RejectReason::PlayNotAllowed => "play_not_allowed",
            RejectReason::StreamBusy => "stream_busy",
            RejectReason::AddressDenied => "address_denied",
            RejectReason::BadKey => "bad_key",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::LinkExpired => "link_expired",
            RejectReason::CallbackRefused => "callback_refused",
            RejectReason::CallbackFailed => "callback_failed",
            RejectReason::CallbackOverloaded => "callback_overloaded",
            RejectReason::TooManyPerIp => "too_many_per_ip",
            RejectReason::RelayLoop => "relay_loop",
        }
    }

    /// The reason an access-control refusal is counted under.
    pub fn of_denial(kind: DenialKind) -> RejectReason {
        match kind {
            DenialKind::AddressDenied => RejectReason::AddressDenied,
            DenialKind::BadKey => RejectReason::BadKey,
            DenialKind::BadSignature => RejectReason::BadSignature,
            DenialKind::LinkExpired => RejectReason::LinkExpired,
            DenialKind::CallbackRefused => RejectReason::CallbackRefused,
            DenialKind::CallbackFailed => RejectReason::CallbackFailed,
            DenialKind::CallbackOverloaded => RejectReason::CallbackOverloaded,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A latency distribution in microseconds, from 1 µs to a minute, two significant digits.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
    /// The exact sum, which a Prometheus histogram reports beside its buckets.
    sum_micros: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 2)
                .expect("constant bounds are valid"),
            sum_micros: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, d: Duration) {
        let micros = (d.as_micros().min(u128::from(u64::MAX)) as u64).max(1);
        self.histogram.saturating_record(micros);
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros)
    }

    /// How many recorded values are at most `bound`.
    pub fn count_at_most(&self, bound: Duration) -> u64 {
        let micros = bound.as_micros().min(u128::from(u64::MAX)) as u64;
        if micros == 0 {
            return 0;
        }
        self.histogram.count_between(1, micros)
    }

    /// The value at `quantile` (0..=1), if anything was recorded.
    pub fn quantile(&self, quantile: f64) -> Option<Duration> {
        (!self.histogram.is_empty())
            .then(|| Duration::from_micros(self.histogram.value_at_quantile(quantile)))
    }

    /// Adds another shard's distribution to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }
}

/// Everything a shard counts. Totals only grow; what belongs to clients still connected
/// (their bytes) is added from them when a snapshot is taken.
#[derive(Clone, Debug, Default)]
pub struct ShardStats {
    /// Connections accepted, on every listener, and on the media HTTP listener.
    pub accepted: u64,
    pub accepted_http: u64,
    rejected: [u64; RejectReason::ALL.len()],
    /// Bytes received from and sent to clients that have left.
    pub closed_bytes_in: u64,
    pub closed_bytes_out: u64,
    /// Vectored writes to sockets.
    pub send_calls: u64,
    /// A viewer fell behind and its video skipped ahead to the next keyframe.
    pub viewer_skips: u64,
    /// A viewer stayed behind too long and was closed.
    pub lag_disconnects: u64,
    /// A new publisher took a stream over from an active one.
    pub takeovers: u64,
    /// From a viewer's start to the first frame of its stream on the wire.
    pub join_time: LatencyHistogram,
    /// From a frame's arrival at its origin to the start of a fan-out pass that sends it.
    pub relay_latency: LatencyHistogram,
    /// How late each publisher message was read, against the pace of the publisher's own
    /// timestamps (`relay/ingest_pace.rs`).
    pub ingest_delay: LatencyHistogram,
    /// From fan-out work being queued (`Output::FanOut`) to the shard's fan-out task
    /// starting it: how long other work on the core (a slow task, a blocking call) held
    /// the fan-out up. Measured by the driver, the one place with a clock.
    pub fan_out_delay: LatencyHistogram,
    /// Recording files opened, bytes handed to the disk writer, recordings stopped by a
    /// write error or a full writer queue.
    pub record_files: u64,
    pub record_bytes: u64,
    pub record_errors: u64,
    /// Bytes written to push targets (`forwarder.rs`); a snapshot adds its live links'.
    pub forward_bytes: u64,
    /// Push attempts after a failure.
    pub forward_reconnects: u64,
    /// In a snapshot: pushes whose target accepted the publish (a gauge, not a total).
    pub forwards_active: u64,
    /// Upstream pulls started (one per stream and host), and failed link attempts
    /// (connect errors, refusals, streams not found, silent origins).
    pub pull_starts: u64,
    pub pull_failures: u64,
    /// Pulls running now (a gauge, filled in by the snapshot).
    pub pulls_active: u64,
}

impl ShardStats {
    pub fn reject(&mut self, reason: RejectReason) {
        self.rejected[reason.index()] += 1;
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_buckets_and_sums() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_millis(5));
        h.record(Duration::from_millis(50));
        h.record(Duration::from_secs(2));
        assert_eq!(h.count(), 3);
        assert_eq!(h.count_at_most(Duration::from_millis(10)), 1);
        assert_eq!(h.count_at_most(Duration::from_millis(100)), 2);
        assert_eq!(h.count_at_most(Duration::from_secs(60)), 3);
        assert_eq!(h.sum(), Duration::from_micros(2_055_000));
        let mut other = LatencyHistogram::default();
        other.record(Duration::from_millis(1));
        h.merge(&other);
        assert_eq!(h.count(), 4);
        assert_eq!(h.count_at_most(Duration::from_millis(2)), 1);
    }

    #[test]
    fn rejections_are_counted_by_reason() {
        let mut s = ShardStats::default();
        s.reject(RejectReason::UnknownApp);
        s.reject(RejectReason::UnknownApp);
        s.reject(RejectReason::ShardFull);
        assert_eq!(s.rejected(RejectReason::UnknownApp), 2);
        assert_eq!(s.rejected(RejectReason::ShardFull), 1);
        assert_eq!(s.rejected(RejectReason::StreamBusy), 0);
    }
}
