//! What a run measures, and where: counters every thread shares (for the progress line),
//! each executor thread's own histograms and counts (no locks on the hot path), and the
//! per-viewer record the end of the run reads.
//!
//! Times are recorded in microseconds, bitrates in kbit/s, into `hdrhistogram`s with 3
//! significant digits; each thread's histograms are added together at the end.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::multitrack::TrackTable;

/// Histograms hold values up to an hour in microseconds (or 1 Tbit/s in kbit/s).
const HIGHEST: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST, 3).expect("static histogram bounds are valid")
}

/// Latency trend windows hold up to a minute in microseconds at 2 significant digits: a
/// few KiB each, so a long run's series stays small.
const TREND_HIGHEST: u64 = 60_000_000;
/// At most this many trend windows (see [`trend_window`]).
pub const MAX_TREND_WINDOWS: usize = 360;

/// One latency trend window's histogram.
pub fn trend_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, TREND_HIGHEST, 2).expect("static histogram bounds are valid")
}

/// The latency trend's window: a twentieth of the run, in whole seconds, between 1 s and
/// 10 s (10 s from 200 s runs up), and longer when the run would need more than
/// [`MAX_TREND_WINDOWS`] of them (past an hour).
pub fn trend_window(duration: Duration) -> Duration {
    let secs = (duration.as_secs() / 20).clamp(1, 10);
    let needed = duration.as_secs().div_ceil(MAX_TREND_WINDOWS as u64);
    Duration::from_secs(secs.max(needed))
}

/// What one stream's publisher has sent so far, for its viewers to compare against.
#[derive(Default)]
pub struct StreamProgress {
    /// Markers stamped so far: the next video message's sequence number.
    pub markers_sent: AtomicU64,
    /// Timestamp of the last media message sent.
    pub last_timestamp: AtomicU32,
    pub bytes_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    /// The publisher got `NetStream.Publish.Start`.
    pub publishing: AtomicBool,
    /// This stream's viewers playing now, to set beside the server's count (`--admin`).
    pub viewers_playing: AtomicU64,
}

/// Counters all threads update and the progress line reads.
#[derive(Default)]
pub struct LiveCounters {
    pub viewers_started: AtomicU64,
    pub viewers_playing: AtomicU64,
    pub viewers_failed: AtomicU64,
    pub viewers_disconnected: AtomicU64,
    /// Bytes viewers received, everything included.
    pub bytes_received: AtomicU64,
}

/// What the threads share.
pub struct Shared {
    pub stop: AtomicBool,
    /// Set when the publishers are up and viewers may start.
    pub viewers_released: AtomicBool,
    pub streams: Vec<StreamProgress>,
    pub live: LiveCounters,
    /// Latency of the last progress interval, one histogram per thread; the progress line
    /// takes and resets them.
    pub recent_latency: Vec<Mutex<Histogram<u64>>>,
    /// Publisher failures: the run cannot go on without its publishers.
    pub publisher_errors: Mutex<Vec<String>>,
    /// The first viewer's start, in [`crate::clock`] microseconds: the latency trend's
    /// windows count from here. Stored before `viewers_released` is set.
    pub viewers_start_us: AtomicU64,
    /// Length of one latency trend window, microseconds.
    pub trend_window_us: u64,
    /// Each executor thread's kernel thread id, by thread index, for its CPU time.
    pub thread_ids: Mutex<Vec<(usize, i32)>>,
    /// The run checks an E-RTMP multitrack stream per track (`--multitrack`).
    pub multitrack: bool,
    /// The tracks each viewer must get (`multitrack::expected_tracks_mask`).
    pub expected_tracks: u32,
}

impl Shared {
    pub fn new(streams: usize, threads: usize, trend_window: Duration) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            viewers_released: AtomicBool::new(false),
            streams: (0..streams).map(|_| StreamProgress::default()).collect(),
            live: LiveCounters::default(),
            recent_latency: (0..threads).map(|_| Mutex::new(histogram())).collect(),
            publisher_errors: Mutex::new(Vec::new()),
            viewers_start_us: AtomicU64::new(0),
            trend_window_us: trend_window.as_micros().max(1) as u64,
            thread_ids: Mutex::new(Vec::new()),
            multitrack: false,
            expected_tracks: 0,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Where a viewer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewerState {
    Connecting,
    Playing,
    Failed,
    Disconnected,
}

/// One viewer's own numbers, read when the run ends.
pub struct ViewerRecord {
    pub stream: usize,
    pub state: ViewerState,
    pub play_started: Option<Instant>,
    pub ended: Option<Instant>,
    /// Bytes received since play started.
    pub bytes_playing: u64,
    pub last_media_timestamp: Option<u32>,
    /// Byte-counting viewers see no timestamps once joined: when bytes last arrived.
    pub last_data: Option<Instant>,
    /// Whether this viewer reads media timestamps to the end (it is not byte-counting).
    pub measures: bool,
    /// Multitrack runs: the tracks this viewer got frames of
    /// (`multitrack::TrackChecker::seen_mask`).
    pub tracks_seen: Option<u32>,
}

impl ViewerRecord {
    pub fn new(stream: usize) -> ViewerRecord {
        ViewerRecord {
            stream,
            state: ViewerState::Connecting,
            play_started: None,
            ended: None,
            bytes_playing: 0,
            last_media_timestamp: None,
            last_data: None,
            measures: true,
            tracks_seen: None,
        }
    }
}

/// One thread's measurements.
pub struct ThreadStats {
    pub connect_us: Histogram<u64>,
    pub play_start_us: Histogram<u64>,
    pub first_keyframe_us: Histogram<u64>,
    /// The flash crowd's (`--crowd`) time to first keyframe.
    pub crowd_first_keyframe_us: Histogram<u64>,
    pub latency_us: Histogram<u64>,
    /// Latency per trend window (`Shared::trend_window_us`), from the first viewer's start.
    pub latency_trend_us: Vec<Histogram<u64>>,
    pub bitrate_kbps: Histogram<u64>,
    pub connected: u64,
    pub failed: BTreeMap<String, u64>,
    pub disconnected: BTreeMap<String, u64>,
    pub video_messages: u64,
    pub audio_messages: u64,
    pub keyframes: u64,
    pub markers: u64,
    pub lost: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub verified: u64,
    /// Viewers that joined and then only counted bytes.
    pub counting_bytes: u64,
    /// Multitrack runs: what viewers saw of each track.
    pub tracks: TrackTable,
    pub viewers: Vec<Rc<RefCell<ViewerRecord>>>,
}

impl Default for ThreadStats {
    fn default() -> Self {
        ThreadStats {
            connect_us: histogram(),
            play_start_us: histogram(),
            first_keyframe_us: histogram(),
            crowd_first_keyframe_us: histogram(),
            latency_us: histogram(),
            latency_trend_us: Vec::new(),
            bitrate_kbps: histogram(),
            connected: 0,
            failed: BTreeMap::new(),
            disconnected: BTreeMap::new(),
            video_messages: 0,
            audio_messages: 0,
            keyframes: 0,
            markers: 0,
            lost: 0,
            reordered: 0,
            corrupted: 0,
            verified: 0,
            counting_bytes: 0,
            tracks: TrackTable::default(),
            viewers: Vec::new(),
        }
    }
}

pub fn record(h: &mut Histogram<u64>, value: u64) {
    h.saturating_record(value.max(1));
}

impl ThreadStats {
    /// Records one latency, `at_us` being the receive time in [`crate::clock`]
    /// microseconds, into the whole-run histogram and its trend window.
    pub fn record_latency(&mut self, shared: &Shared, at_us: u64, latency_us: u64) {
        record(&mut self.latency_us, latency_us);
        let since = at_us.saturating_sub(shared.viewers_start_us.load(Ordering::Acquire));
        let window = (since / shared.trend_window_us) as usize;
        if window < MAX_TREND_WINDOWS {
            if self.latency_trend_us.len() <= window {
                self.latency_trend_us
                    .resize_with(window + 1, trend_histogram);
            }
            record(&mut self.latency_trend_us[window], latency_us);
        }
    }
}

/// What a thread hands back when the run ends: its measurements, viewers summarized.
pub struct ThreadReport {
    pub connect_us: Histogram<u64>,
    pub play_start_us: Histogram<u64>,
    pub first_keyframe_us: Histogram<u64>,
    pub crowd_first_keyframe_us: Histogram<u64>,
    pub latency_us: Histogram<u64>,
    pub latency_trend_us: Vec<Histogram<u64>>,
    pub bitrate_kbps: Histogram<u64>,
    pub connected: u64,
    pub failed: BTreeMap<String, u64>,
    pub disconnected: BTreeMap<String, u64>,
    pub playing_at_end: u64,
    pub lagging: u64,
    pub video_messages: u64,
    pub audio_messages: u64,
    pub keyframes: u64,
    pub markers: u64,
    pub lost: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub verified: u64,
    /// Viewers that joined and then only counted bytes.
    pub counting_bytes: u64,
    pub tracks: TrackTable,
    /// Multitrack runs: viewers playing at the end that had not got a frame of every track.
    pub missing_tracks: u64,
}

impl ThreadStats {
    /// Summarizes the thread's viewers as of `end`: who still plays, who lags, and each
    /// one's received bitrate (viewers that played at least a second).
    pub fn finish(mut self, shared: &Shared, end: Instant, lag_ms: u32) -> ThreadReport {
        let mut playing_at_end = 0;
        let mut lagging = 0;
        let mut missing_tracks = 0;
        for viewer in &self.viewers {
            let v = viewer.borrow();
            if v.state == ViewerState::Playing
                && shared.multitrack
                && v.tracks_seen.unwrap_or(0) != shared.expected_tracks
            {
                missing_tracks += 1;
            }
            if let Some(started) = v.play_started {
                let until = v.ended.unwrap_or(end);
                let secs = until.saturating_duration_since(started).as_secs_f64();
                if secs >= 1.0 {
                    record(
                        &mut self.bitrate_kbps,
                        (v.bytes_playing as f64 * 8.0 / 1000.0 / secs) as u64,
                    );
                }
            }
            if v.state == ViewerState::Playing {
                playing_at_end += 1;
                let published = shared.streams[v.stream]
                    .last_timestamp
                    .load(Ordering::Relaxed);
                let behind = match (v.measures, v.last_media_timestamp, v.last_data) {
                    (true, Some(ts), _) => published.saturating_sub(ts),
                    // A byte-counting viewer cannot tell how far behind its media is, only
                    // that nothing has come for a while: a stall is what lagging looks like.
                    (false, _, Some(at)) => end
                        .saturating_duration_since(at)
                        .as_millis()
                        .min(u32::MAX as u128) as u32,
                    _ => u32::MAX,
                };
                if behind > lag_ms {
                    lagging += 1;
                }
            }
        }
        ThreadReport {
            connect_us: self.connect_us,
            play_start_us: self.play_start_us,
            first_keyframe_us: self.first_keyframe_us,
            crowd_first_keyframe_us: self.crowd_first_keyframe_us,
            latency_us: self.latency_us,
            latency_trend_us: self.latency_trend_us,
            bitrate_kbps: self.bitrate_kbps,
            connected: self.connected,
            failed: self.failed,
            disconnected: self.disconnected,
            playing_at_end,
            lagging,
            video_messages: self.video_messages,
            audio_messages: self.audio_messages,
            keyframes: self.keyframes,
            markers: self.markers,
            lost: self.lost,
            reordered: self.reordered,
            corrupted: self.corrupted,
            verified: self.verified,
            counting_bytes: self.counting_bytes,
            tracks: self.tracks,
            missing_tracks,
        }
    }
}

impl ThreadReport {
    pub fn merge(&mut self, other: ThreadReport) {
        let add = |a: &mut Histogram<u64>, b: &Histogram<u64>| {
            a.add(b).expect("histograms with the same bounds add");
        };
        add(&mut self.connect_us, &other.connect_us);
        add(&mut self.play_start_us, &other.play_start_us);
        add(&mut self.first_keyframe_us, &other.first_keyframe_us);
        add(
            &mut self.crowd_first_keyframe_us,
            &other.crowd_first_keyframe_us,
        );
        add(&mut self.latency_us, &other.latency_us);
        add(&mut self.bitrate_kbps, &other.bitrate_kbps);
        if self.latency_trend_us.len() < other.latency_trend_us.len() {
            self.latency_trend_us
                .resize_with(other.latency_trend_us.len(), trend_histogram);
        }
        for (a, b) in self
            .latency_trend_us
            .iter_mut()
            .zip(&other.latency_trend_us)
        {
            add(a, b);
        }
        self.connected += other.connected;
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        for (k, v) in other.disconnected {
            *self.disconnected.entry(k).or_default() += v;
        }
        self.playing_at_end += other.playing_at_end;
        self.lagging += other.lagging;
        self.video_messages += other.video_messages;
        self.audio_messages += other.audio_messages;
        self.keyframes += other.keyframes;
        self.markers += other.markers;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.corrupted += other.corrupted;
        self.verified += other.verified;
        self.counting_bytes += other.counting_bytes;
        for (key, counts) in &other.tracks {
            self.tracks.entry(*key).or_default().merge(counts);
        }
        self.missing_tracks += other.missing_tracks;
    }
}
