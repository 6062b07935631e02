//! `/metrics`: the shards' counters, summed at scrape time, in Prometheus' text format.
//!
//! Shards count with plain numbers on their own cores (`relay/stats.rs`); a scrape asks
//! every shard for its totals (no client list) and adds them up here, on the admin
//! thread. The families are built as `prometheus` crate models and written by its
//! `TextEncoder`, which speaks the classic text format 0.0.4 that every scraper and
//! `promtool check metrics` read (a counter's `# TYPE` line names the `_total` series
//! itself).
//!
//! Labels are bounded: per-stream series carry `{app, stream}` only, and no more than
//! `max_streams` streams get them (the busiest by viewers first); a stream's series
//! vanish with it. Client ids and addresses never become labels: they belong in the
//! JSON API.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use super::track::{audio_codec_name, video_codec_name};
use crate::net::mailbox::InboxTotals;
use crate::relay::client::RoleKind;
use crate::relay::frame::FrameKind;
use crate::relay::snapshot::{ConnectionCounts, PROTOCOLS, ShardSnapshot, StreamTotals};
use crate::relay::stats::{LatencyHistogram, RejectReason};

/// What the process itself reports (`/proc/self`), for the standard `process_*` series.
#[derive(Clone, Debug, Default)]
pub struct ProcessStats {
    pub pid: u32,
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
    pub max_fds: u64,
    pub threads: u64,
}

/// Everything one scrape renders.
pub struct Scrape<'a> {
    pub version: &'a str,
    pub shards: &'a [ShardSnapshot],
    pub streams: &'a [StreamTotals],
    /// Messages waiting in each shard's inbox, by shard id.
    pub inbox_depths: &'a [usize],
    /// What each shard's inbox has taken in since the start, by shard id.
    pub inbox_totals: &'a [InboxTotals],
    pub process: &'a ProcessStats,
    pub ready: bool,
    pub max_streams: usize,
}

pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

const JOIN_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LATENCY_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Families being built, in the order they are first named.
#[derive(Default)]
struct Families {
    families: Vec<MetricFamily>,
    index: BTreeMap<&'static str, usize>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).to_owned());
            l.set_value((*value).to_owned());
            l
        })
        .collect()
}

impl Families {
    fn family(&mut self, name: &'static str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let i = *self.index.entry(name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            f.set_help(help.to_owned());
            f.set_field_type(kind);
            self.families.push(f);
            self.families.len() - 1
        });
        &mut self.families[i]
    }

    fn gauge(&mut self, name: &'static str, help: &str, pairs: &[(&str, &str)], value: f64) {
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE)
            .mut_metric()
            .push(m);
    }

    fn counter(&mut self, name: &'static str, help: &str, pairs: &[(&str, &str)], value: f64) {
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER)
            .mut_metric()
            .push(m);
    }

    fn histogram(&mut self, name: &'static str, help: &str, h: &LatencyHistogram, bounds: &[f64]) {
        let buckets = bounds
            .iter()
            .map(|&le| {
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(h.count_at_most(Duration::from_secs_f64(le)));
                b
            })
            .collect();
        let mut p = Histogram::default();
        p.set_bucket(buckets);
        p.set_sample_count(h.count());
        p.set_sample_sum(h.sum().as_secs_f64());
        let mut m = Metric::default();
        m.set_histogram(p);
        self.family(name, help, MetricType::HISTOGRAM)
            .mut_metric()
            .push(m);
    }
}

fn role_label(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Client => "client",
        RoleKind::Publisher => "publisher",
        RoleKind::Viewer => "viewer",
        RoleKind::FileViewer => "recording_viewer",
    }
}

fn kind_label(kind: FrameKind) -> &'static str {
    match kind {
        FrameKind::Audio => "audio",
        FrameKind::Video => "video",
        FrameKind::Metadata => "metadata",
        FrameKind::Data => "data",
    }
}

/// Renders one scrape in the text format.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut f = Families::default();
    let shards = scrape.shards;

    f.gauge(
        "shardcast_build_info",
        "The running shardcast's version (always 1).",
        &[("version", scrape.version)],
        1.0,
    );
    f.gauge(
        "shardcast_ready",
        "1 while the relay accepts connections and is not draining.",
        &[],
        if scrape.ready { 1.0 } else { 0.0 },
    );
    f.gauge(
        "shardcast_shards",
        "Shards (pinned cores) the relay runs.",
        &[],
        scrape.inbox_depths.len() as f64,
    );

    let p = scrape.process;
    f.counter(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        &[],
        p.cpu_seconds,
    );
    f.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        &[],
        p.resident_bytes as f64,
    );
    f.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        &[],
        p.virtual_bytes as f64,
    );
    f.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        &[],
        p.start_time_seconds,
    );
    f.gauge(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        &[],
        p.max_fds as f64,
    );
    f.gauge(
        "process_threads",
        "Number of OS threads in the process.",
        &[],
        p.threads as f64,
    );

    let mut connections = ConnectionCounts::default();
    for s in shards {
        connections.merge(&s.connections);
    }
    for (p, protocol) in PROTOCOLS.iter().enumerate() {
        for (r, role) in [
            RoleKind::Publisher,
            RoleKind::Viewer,
            RoleKind::FileViewer,
            RoleKind::Client,
        ]
        .into_iter()
        .enumerate()
        {
            f.gauge(
                "shardcast_connections",
                "Connected clients by protocol and role.",
                &[("protocol", protocol), ("role", role_label(role))],
                connections.by_protocol[p][r] as f64,
            );
        }
    }
    let sum = |g: fn(&ShardSnapshot) -> u64| shards.iter().map(g).sum::<u64>() as f64;
    let accepted_http = sum(|s| s.stats.accepted_http);
    for (protocol, n) in [
        ("rtmp", sum(|s| s.stats.accepted) - accepted_http),
        ("http", accepted_http),
    ] {
        f.counter(
            "shardcast_connections_accepted_total",
            "Connections accepted, by listener protocol (http: HTTP-FLV and WebSocket-FLV).",
            &[("protocol", protocol)],
            n,
        );
    }
    for reason in RejectReason::ALL {
        f.counter(
            "shardcast_connections_rejected_total",
            "Connections, or their publish, play or connect, refused, by reason.",
            &[("reason", reason.as_str())],
            shards.iter().map(|s| s.stats.rejected(reason)).sum::<u64>() as f64,
        );
    }
    f.counter(
        "shardcast_received_bytes_total",
        "Bytes received from clients.",
        &[],
        sum(|s| s.bytes_in),
    );
    f.counter(
        "shardcast_sent_bytes_total",
        "Bytes sent to clients.",
        &[],
        sum(|s| s.bytes_out),
    );
    f.counter(
        "shardcast_send_calls_total",
        "Vectored writes (sendmsg calls) to client sockets.",
        &[],
        sum(|s| s.stats.send_calls),
    );
    f.counter(
        "shardcast_viewer_skips_total",
        "Times a viewer fell behind and its video skipped ahead to the next keyframe.",
        &[],
        sum(|s| s.stats.viewer_skips),
    );
    f.counter(
        "shardcast_viewer_lag_disconnects_total",
        "Viewers closed because they stayed behind longer than viewer.lag_disconnect_ms.",
        &[],
        sum(|s| s.stats.lag_disconnects),
    );
    f.counter(
        "shardcast_forward_bytes_total",
        "Bytes written to push targets (app.*.push).",
        &[],
        sum(|s| s.stats.forward_bytes),
    );
    f.counter(
        "shardcast_forward_reconnects_total",
        "Push attempts made after a failure (each waits a backoff delay first).",
        &[],
        sum(|s| s.stats.forward_reconnects),
    );
    f.gauge(
        "shardcast_forwards_active",
        "Pushes whose target accepted the publish and that are forwarding now.",
        &[],
        sum(|s| s.stats.forwards_active),
    );
    f.counter(
        "shardcast_publisher_takeovers_total",
        "Times a new publisher took a stream over from an active one.",
        &[],
        sum(|s| s.stats.takeovers),
    );
    f.counter(
        "shardcast_record_files_total",
        "Recording files opened.",
        &[],
        sum(|s| s.stats.record_files),
    );
    f.counter(
        "shardcast_record_bytes_total",
        "Bytes of recordings handed to the disk writer.",
        &[],
        sum(|s| s.stats.record_bytes),
    );
    f.counter(
        "shardcast_record_errors_total",
        "Recordings stopped by a failed write (full or failing disk) or a disk too slow to keep up.",
        &[],
        sum(|s| s.stats.record_errors),
    );
    f.counter(
        "shardcast_pull_starts_total",
        "Upstream pulls started (one per stream and host, on an edge's first viewer or pull_static).",
        &[],
        sum(|s| s.stats.pull_starts),
    );
    f.counter(
        "shardcast_pull_failures_total",
        "Failed upstream pull attempts: connect errors, refusals, streams not found, silent or lost origins.",
        &[],
        sum(|s| s.stats.pull_failures),
    );
    f.gauge(
        "shardcast_pulls_active",
        "Upstream pulls running now.",
        &[],
        sum(|s| s.stats.pulls_active),
    );

    for s in shards {
        let shard = s.shard.to_string();
        let l = [("shard", shard.as_str())];
        f.gauge(
            "shardcast_shard_connections",
            "Connected clients on each shard.",
            &l,
            s.connections.total() as f64,
        );
        f.counter(
            "shardcast_shard_received_bytes_total",
            "Bytes received from clients, on each shard.",
            &l,
            s.bytes_in as f64,
        );
        f.counter(
            "shardcast_shard_sent_bytes_total",
            "Bytes sent to clients, on each shard.",
            &l,
            s.bytes_out as f64,
        );
    }
    for (shard, depth) in scrape.inbox_depths.iter().enumerate() {
        f.gauge(
            "shardcast_shard_inbox_messages",
            "Messages from other shards waiting in each shard's inbox (the cross-core queue).",
            &[("shard", &shard.to_string())],
            *depth as f64,
        );
    }
    // Beside the CPU time of a multi-shard run, these price one hand-off between cores.
    for (shard, totals) in scrape.inbox_totals.iter().enumerate() {
        let shard = shard.to_string();
        let l = [("shard", shard.as_str())];
        f.counter(
            "shardcast_shard_inbox_received_total",
            "Messages each shard took from its inbox: media and control handed across cores by other shards, and the admin listener's requests.",
            &l,
            totals.received as f64,
        );
        f.counter(
            "shardcast_shard_inbox_wakeups_total",
            "Times another thread rang each shard's inbox doorbell (a wake not coalesced with one already pending).",
            &l,
            totals.rings as f64,
        );
    }

    let mut join = LatencyHistogram::default();
    let mut latency = LatencyHistogram::default();
    let mut ingest = LatencyHistogram::default();
    let mut fan_out_delay = LatencyHistogram::default();
    for s in shards {
        join.merge(&s.stats.join_time);
        latency.merge(&s.stats.relay_latency);
        ingest.merge(&s.stats.ingest_delay);
        fan_out_delay.merge(&s.stats.fan_out_delay);
    }
    f.histogram(
        "shardcast_join_seconds",
        "From a viewer's start to its stream's first frame on the wire.",
        &join,
        &JOIN_BUCKETS,
    );
    f.histogram(
        "shardcast_relay_latency_seconds",
        "From a frame's arrival at its origin shard to the fan-out pass that sends it.",
        &latency,
        &LATENCY_BUCKETS,
    );
    f.histogram(
        "shardcast_ingest_read_delay_seconds",
        "How late publishers' messages were read, against the pace of their own timestamps (an upper bound on the relay's read delay: encoder jitter is in it too).",
        &ingest,
        &LATENCY_BUCKETS,
    );
    f.histogram(
        "shardcast_fan_out_delay_seconds",
        "From fan-out work being queued on a shard to its fan-out task starting it: how long other work on the core (a stall) held it up.",
        &fan_out_delay,
        &LATENCY_BUCKETS,
    );

    // Per-stream series: the busiest streams first, capped.
    let mut streams: Vec<&StreamTotals> = scrape.streams.iter().collect();
    streams.sort_by_key(|s| std::cmp::Reverse(s.viewers()));
    let shown = streams.len().min(scrape.max_streams);
    f.gauge(
        "shardcast_streams",
        "Streams known to the relay (published, or waited for by viewers).",
        &[],
        streams.len() as f64,
    );
    f.gauge(
        "shardcast_streams_unlabelled",
        "Streams left out of the per-stream series by admin.metrics_max_streams.",
        &[],
        (streams.len() - shown) as f64,
    );
    for s in &streams[..shown] {
        let (app, key) = s.app_and_key();
        let l = [("app", app), ("stream", key)];
        f.gauge(
            "shardcast_stream_up",
            "1 while the stream has a live source.",
            &l,
            if s.publisher.is_some() { 1.0 } else { 0.0 },
        );
        f.gauge(
            "shardcast_stream_viewers",
            "Viewers playing the stream, on every shard.",
            &l,
            s.viewers() as f64,
        );
        f.counter(
            "shardcast_stream_received_bytes_total",
            "Media payload bytes the stream received from its source.",
            &l,
            s.bytes_in as f64,
        );
        f.counter(
            "shardcast_stream_sent_bytes_total",
            "Bytes written to the stream's viewers.",
            &l,
            s.bytes_out as f64,
        );
        for kind in [
            FrameKind::Audio,
            FrameKind::Video,
            FrameKind::Metadata,
            FrameKind::Data,
        ] {
            f.counter(
                "shardcast_stream_frames_total",
                "Messages the stream received, by kind.",
                &[("app", app), ("stream", key), ("kind", kind_label(kind))],
                s.frames[kind as usize] as f64,
            );
        }
        f.counter(
            "shardcast_stream_dropped_frames_total",
            "Video frames the stream's viewers did not get because they fell behind.",
            &l,
            s.dropped_frames as f64,
        );
        let details = super::track::StreamTracks::of(s);
        let (width, height) = (
            details.width().map(|w| w.to_string()).unwrap_or_default(),
            details.height().map(|h| h.to_string()).unwrap_or_default(),
        );
        f.gauge(
            "shardcast_stream_info",
            "The stream's codecs and resolution (always 1).",
            &[
                ("app", app),
                ("stream", key),
                ("video_codec", s.video.map(video_codec_name).unwrap_or("")),
                ("audio_codec", s.audio.map(audio_codec_name).unwrap_or("")),
                ("width", &width),
                ("height", &height),
            ],
            1.0,
        );
    }

    let families: Vec<MetricFamily> = f
        .families
        .into_iter()
        .filter(|fam| !fam.get_metric().is_empty())
        .collect();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!("cannot render /metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}
