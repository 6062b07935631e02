//! The end-of-run report: one structure, printed as a table for people and written as JSON
//! (`--json`) for scripts, so both always show the same numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::admin::{AdminView, ShardSummary, StreamInfo};
use crate::multitrack::TrackCounts;

/// Percentiles of one histogram, in the unit its name says.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Summary {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    /// Summarizes `h`, dividing every value by `scale` (1000 turns microseconds into ms).
    pub fn of(h: &Histogram<u64>, scale: f64) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let q = |x: f64| round3(h.value_at_quantile(x) as f64 / scale);
        Summary {
            count: h.len(),
            min: round3(h.min() as f64 / scale),
            mean: round3(h.mean() / scale),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: round3(h.max() as f64 / scale),
        }
    }
}

/// Three decimals: the table and the JSON show the same values.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Serialize, Debug, Clone)]
pub struct RunSettings {
    pub scenario: Option<String>,
    pub description: Option<String>,
    pub url: String,
    /// How viewers played: `rtmp`, `http-flv` or `ws-flv`.
    pub protocol: String,
    pub play_url: String,
    pub streams: usize,
    pub viewers_per_stream: u32,
    pub ramp_per_second: f64,
    pub duration_s: f64,
    pub threads: usize,
    pub source: String,
    pub verify_every: u32,
    /// How viewers outside the verifying sample counted: `bytes` or `headers`.
    pub counting: String,
    /// How often byte-counting viewers drained their sockets.
    pub count_interval_ms: f64,
    pub lag_threshold_ms: u64,
    /// Batch readers' interval (`--read-interval`); 0: viewers read as data arrives.
    pub read_interval_ms: f64,
    /// SO_RCVBUF batch readers set, when the kernel default was too small for an interval.
    pub receive_buffer_bytes: Option<usize>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Publishers {
    pub streams: usize,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub errors: Vec<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Viewers {
    pub target: u64,
    pub started: u64,
    pub connected: u64,
    pub failed: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    pub disconnected: u64,
    pub disconnected_by_reason: BTreeMap<String, u64>,
    pub playing_at_end: u64,
    /// Viewers playing at the end that were behind: by media timestamp for the viewers
    /// that read timestamps, by a stall (no bytes for the lag threshold) for byte-counting
    /// viewers.
    pub lagging: u64,
    /// Viewers that joined (first keyframe) and then only counted bytes: latency, loss and
    /// order come from the others.
    pub counting_bytes: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct Messages {
    pub video: u64,
    pub audio: u64,
    pub keyframes: u64,
    pub with_marker: u64,
    pub lost: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Video messages whose whole payload a verifying viewer checked.
    pub verified: u64,
}

/// Multitrack runs (`--multitrack`): what the viewers got of each track.
#[derive(Serialize, Debug, Clone)]
pub struct Tracks {
    /// Viewers playing at the end without a frame of every track.
    pub viewers_missing_a_track: u64,
    pub tracks: Vec<TrackReport>,
}

#[derive(Serialize, Debug, Clone)]
pub struct TrackReport {
    /// `video` or `audio`.
    pub kind: String,
    pub id: u8,
    #[serde(flatten)]
    pub counts: TrackCounts,
}

#[derive(Serialize, Debug, Clone)]
pub struct Delivered {
    pub bytes: u64,
    /// Over the time viewers were running (from the first viewer's start to the end).
    pub gbit_per_s: f64,
    /// Over the steady state (all viewers started), when there was one.
    pub steady_gbit_per_s: Option<f64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Server {
    pub pids: Vec<u32>,
    /// Length of the steady-state window the CPU time was measured over.
    pub window_s: f64,
    pub cpu_seconds: f64,
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// Share of one core, over the window.
    pub cpu_cores: f64,
    pub delivered_gb: f64,
    pub cpu_seconds_per_gb: Option<f64>,
    pub rss_bytes_before_viewers: u64,
    pub rss_bytes_at_end: u64,
    pub rss_bytes_per_viewer: Option<f64>,
    /// Why there are no steady-state numbers, if there are none.
    pub note: Option<String>,
}

/// The load generator's own counts at the moment the admin API was asked.
#[derive(Debug, Clone, Default)]
pub struct OwnCounts {
    /// Publishers publishing plus viewers playing.
    pub connections: u64,
    /// Media bytes the publishers sent (payloads, without RTMP headers).
    pub bytes_in: u64,
    /// Bytes the viewers received, everything included.
    pub bytes_out: u64,
    /// Each stream viewers play: its app, its stream name, and its viewers playing.
    pub streams: Vec<(String, String, u64)>,
}

/// One number as we counted it and as the server did; `server` is absent when its answer
/// did not come.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Compared {
    pub ours: u64,
    pub server: Option<u64>,
}

/// A stream the server listed, as it listed it, with our viewers of it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ServerStream {
    #[serde(flatten)]
    pub server: StreamInfo,
    /// Our viewers playing it; `None` when it is not one of the run's streams.
    pub ours_playing: Option<u64>,
}

/// The server's view from its admin API, read as the run ended (viewers still connected).
/// Its byte counters run from the server's start, so they match ours only on a server
/// that carried nothing else.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ServerApi {
    pub url: String,
    /// What could not be read, one line each; what was read is still shown.
    pub errors: Vec<String>,
    pub connections: Compared,
    pub bytes_in: Compared,
    pub bytes_out: Compared,
    pub shards: Vec<ShardSummary>,
    pub streams: Vec<ServerStream>,
    /// The run's streams (`app/name`) the server did not list.
    pub missing_streams: Vec<String>,
}

impl ServerApi {
    pub fn of(view: AdminView, ours: &OwnCounts) -> ServerApi {
        let mut errors = Vec::new();
        let summary = view.summary.map_err(|e| errors.push(e)).ok();
        let listed = view
            .streams
            .map_err(|e| {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            })
            .ok();
        let compared = |ours: u64, server: Option<u64>| Compared { ours, server };
        let mut streams: Vec<ServerStream> = listed
            .iter()
            .flatten()
            .map(|stream| ServerStream {
                ours_playing: ours
                    .streams
                    .iter()
                    .find(|(app, name, _)| *app == stream.app && *name == stream.name)
                    .map(|(_, _, playing)| *playing),
                server: stream.clone(),
            })
            .collect();
        streams
            .sort_by(|a, b| (&a.server.app, &a.server.name).cmp(&(&b.server.app, &b.server.name)));
        let missing_streams = match &listed {
            Some(listed) => ours
                .streams
                .iter()
                .filter(|(app, name, _)| !listed.iter().any(|s| s.app == *app && s.name == *name))
                .map(|(app, name, _)| format!("{app}/{name}"))
                .collect(),
            None => Vec::new(),
        };
        ServerApi {
            url: view.url,
            errors,
            connections: compared(
                ours.connections,
                summary.as_ref().map(|s| s.connections.total),
            ),
            bytes_in: compared(ours.bytes_in, summary.as_ref().map(|s| s.bytes_in)),
            bytes_out: compared(ours.bytes_out, summary.as_ref().map(|s| s.bytes_out)),
            shards: summary.map(|s| s.shards).unwrap_or_default(),
            streams,
            missing_streams,
        }
    }

    /// Its section of the table.
    pub fn table(&self, out: &mut String) {
        // Nothing came back: the one line the reader needs.
        if self.connections.server.is_none() && self.streams.is_empty() && !self.errors.is_empty() {
            let _ = writeln!(out, "server API {}: {}", self.url, self.errors.join("; "));
            return;
        }
        let _ = writeln!(out, "server API {} (read as the run ended)", self.url);
        for e in &self.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        let _ = writeln!(out, "  {:<22}{:>14}{:>14}", "", "ours", "server");
        for (name, c) in [
            ("connections", &self.connections),
            ("bytes in", &self.bytes_in),
            ("bytes out", &self.bytes_out),
        ] {
            let server = c.server.map_or("-".to_owned(), |x| x.to_string());
            let _ = writeln!(out, "  {name:<22}{:>14}{server:>14}", c.ours);
        }
        if !self.shards.is_empty() {
            let _ = writeln!(
                out,
                "  {:<8}{:>14}{:>14}{:>16}",
                "shard", "connections", "viewers", "bytes out"
            );
            for s in &self.shards {
                let _ = writeln!(
                    out,
                    "  {:<8}{:>14}{:>14}{:>16}",
                    s.shard, s.connections, s.viewers, s.bytes_out
                );
            }
        }
        if !self.streams.is_empty() {
            let names: Vec<String> = self
                .streams
                .iter()
                .map(|s| format!("{}/{}", s.server.app, s.server.name))
                .collect();
            let width = names
                .iter()
                .map(|n| n.chars().count())
                .max()
                .unwrap_or(0)
                .max(8)
                + 2;
            let _ = writeln!(
                out,
                "  {:<width$}{:>8}{:>8}{:>10}{:>16}{:>12}  per shard",
                "stream", "ours", "server", "dropped", "send bytes", "kbit/s 30s"
            );
            for (name, s) in names.iter().zip(&self.streams) {
                let ours = s.ours_playing.map_or("-".to_owned(), |x| x.to_string());
                let per_shard: Vec<String> = s
                    .server
                    .viewers
                    .per_shard
                    .iter()
                    .map(u64::to_string)
                    .collect();
                let _ = writeln!(
                    out,
                    "  {name:<width$}{ours:>8}{:>8}{:>10}{:>16}{:>12.1}  {}",
                    s.server.viewers.total,
                    s.server.dropped_frames,
                    s.server.send_bytes,
                    s.server.kbps.send_30s,
                    per_shard.join(" ")
                );
            }
        }
        if !self.missing_streams.is_empty() {
            let _ = writeln!(
                out,
                "  not listed by the server: {}",
                self.missing_streams.join(", ")
            );
        }
    }
}

/// One executor thread of the load generator.
#[derive(Serialize, Debug, Clone)]
pub struct GeneratorThread {
    pub index: usize,
    pub tid: i32,
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// Share of one core, over the window.
    pub cpu_cores: f64,
}

/// The load generator's own CPU time over the same window as the server's.
#[derive(Serialize, Debug, Clone)]
pub struct LoadGenerator {
    pub window_s: f64,
    /// The whole process (getrusage), all threads.
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub cpu_seconds: f64,
    pub cpu_cores: f64,
    /// Each executor thread (/proc/self/task/TID/stat, clock ticks).
    pub threads: Vec<GeneratorThread>,
    /// The busiest executor thread's share of a core.
    pub busiest_thread_cores: f64,
    /// Some executor thread was above [`SATURATED`] of a core: latency and the server's
    /// CPU per GB then measure the generator as much as the server.
    pub saturated: bool,
    pub note: Option<String>,
}

/// An executor thread busier than this share of a core counts as saturated.
pub const SATURATED: f64 = 0.9;

/// A flash crowd: its joins, and what the viewers already watching saw meanwhile.
#[derive(Serialize, Debug, Clone)]
pub struct Crowd {
    pub viewers: usize,
    /// When it started, seconds from the first viewer's start.
    pub at_s: f64,
    /// Over how long it was started, seconds.
    pub over_s: f64,
    /// Crowd viewers' time from TCP connect to their first keyframe, ms.
    pub first_keyframe_ms: Summary,
    /// The worst trend-window latency p99 of the watching viewers in the steady state
    /// before the crowd, and in the windows from the crowd's start to 5 s after it ended;
    /// `spike_ratio` is during / before.
    pub before_p99_ms: Option<f64>,
    pub during_p99_ms: Option<f64>,
    pub spike_ratio: Option<f64>,
}

impl Crowd {
    pub fn of(
        viewers: usize,
        at_s: f64,
        over_s: f64,
        first_keyframe_ms: Summary,
        trend: &LatencyTrend,
    ) -> Crowd {
        let steady_from = trend.steady_from_s.unwrap_or(0.0);
        let until = at_s + over_s + 5.0;
        let worst = |keep: &dyn Fn(&TrendWindow) -> bool| {
            trend
                .windows
                .iter()
                .filter(|w| w.count > 0 && keep(w))
                .map(|w| w.p99)
                .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))))
        };
        let before_p99_ms = worst(&|w| w.start_s >= steady_from && w.start_s + w.span_s <= at_s);
        let during_p99_ms = worst(&|w| w.start_s + w.span_s > at_s && w.start_s < until);
        let spike_ratio = before_p99_ms
            .zip(during_p99_ms)
            .filter(|(b, _)| *b > 0.0)
            .map(|(b, d)| d / b);
        Crowd {
            viewers,
            at_s,
            over_s,
            first_keyframe_ms,
            before_p99_ms,
            during_p99_ms,
            spike_ratio,
        }
    }
}

/// Latency of one trend window, ms.
#[derive(Serialize, Debug, Clone)]
pub struct TrendWindow {
    /// Start of the window, seconds from the first viewer's start.
    pub start_s: f64,
    /// How much of the window the run covered (the last one may be short), seconds.
    pub span_s: f64,
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Video latency over time, to see whether it creeps up during a long run.
#[derive(Serialize, Debug, Clone)]
pub struct LatencyTrend {
    pub window_s: f64,
    /// Every window from the first viewer's start, in order (empty windows included).
    pub windows: Vec<TrendWindow>,
    /// Where the steady state began, seconds from the first viewer's start; the summary
    /// below uses only windows starting there or later (all windows when fewer than 2 do).
    pub steady_from_s: Option<f64>,
    /// What `first_p99_ms` and `last_p99_ms` cover: "minute" (the first and last minute's
    /// windows merged) when the steady windows span at least 2 minutes, else "window".
    pub compared: String,
    pub first_p99_ms: Option<f64>,
    pub last_p99_ms: Option<f64>,
    /// last / first.
    pub p99_ratio: Option<f64>,
    /// Least-squares slope of the steady windows' p99 over time, ms per minute.
    pub p99_slope_ms_per_min: Option<f64>,
    /// Latencies after the last window were not recorded in the trend.
    pub truncated: bool,
}

impl LatencyTrend {
    /// The trend from per-window histograms (microseconds), windows of `window_s` seconds
    /// from the first viewer's start; the run covered `covered_s` seconds from there.
    pub fn of(
        windows: &[Histogram<u64>],
        window_s: f64,
        covered_s: f64,
        steady_from_s: Option<f64>,
    ) -> LatencyTrend {
        let count =
            ((covered_s.max(0.0) / window_s).ceil() as usize).min(crate::stats::MAX_TREND_WINDOWS);
        let truncated = covered_s > window_s * crate::stats::MAX_TREND_WINDOWS as f64;
        let empty = crate::stats::trend_histogram();
        let at = |i: usize| windows.get(i).unwrap_or(&empty);
        let ms = |v: u64| round3(v as f64 / 1000.0);
        let out: Vec<TrendWindow> = (0..count)
            .map(|i| {
                let h = at(i);
                let start = i as f64 * window_s;
                let q = |x: f64| {
                    if h.is_empty() {
                        0.0
                    } else {
                        ms(h.value_at_quantile(x))
                    }
                };
                TrendWindow {
                    start_s: round3(start),
                    span_s: round3((covered_s - start).clamp(0.0, window_s)),
                    count: h.len(),
                    p50: q(0.5),
                    p99: q(0.99),
                    max: if h.is_empty() { 0.0 } else { ms(h.max()) },
                }
            })
            .collect();
        // The summary: windows with data, at least half covered, from the steady state on.
        let usable = |w: &&TrendWindow| w.count > 0 && w.span_s >= window_s / 2.0;
        let mut picked: Vec<usize> = (0..out.len())
            .filter(|&i| usable(&&out[i]))
            .filter(|&i| steady_from_s.is_none_or(|s| out[i].start_s + 1e-9 >= s))
            .collect();
        if picked.len() < 2 {
            picked = (0..out.len()).filter(|&i| usable(&&out[i])).collect();
        }
        let per_minute = (60.0 / window_s).round().max(1.0) as usize;
        let span: f64 = picked.iter().map(|&i| out[i].span_s).sum();
        let minutes = span >= 120.0 && picked.len() >= 2 * per_minute;
        let group = if minutes { per_minute } else { 1 };
        let merged_p99 = |idx: &[usize]| -> Option<f64> {
            let mut h = crate::stats::trend_histogram();
            for &i in idx {
                h.add(at(i)).ok()?;
            }
            (!h.is_empty()).then(|| ms(h.value_at_quantile(0.99)))
        };
        let (first, last) = if picked.len() >= 2 {
            (
                merged_p99(&picked[..group]),
                merged_p99(&picked[picked.len() - group..]),
            )
        } else {
            (None, None)
        };
        let slope = (picked.len() >= 2).then(|| {
            let xs: Vec<f64> = picked
                .iter()
                .map(|&i| (out[i].start_s + out[i].span_s / 2.0) / 60.0)
                .collect();
            let ys: Vec<f64> = picked.iter().map(|&i| out[i].p99).collect();
            let n = xs.len() as f64;
            let mx = xs.iter().sum::<f64>() / n;
            let my = ys.iter().sum::<f64>() / n;
            let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
            let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
            if sxx > 0.0 { round3(sxy / sxx) } else { 0.0 }
        });
        LatencyTrend {
            window_s,
            windows: out,
            steady_from_s: steady_from_s.map(round3),
            compared: if minutes { "minute" } else { "window" }.to_owned(),
            first_p99_ms: first,
            last_p99_ms: last,
            p99_ratio: first
                .zip(last)
                .and_then(|(f, l)| (f > 0.0).then(|| round3(l / f))),
            p99_slope_ms_per_min: slope,
            truncated,
        }
    }

    /// The one-line summary in the table.
    pub fn line(&self) -> String {
        let n = self.windows.len();
        match (self.first_p99_ms, self.last_p99_ms) {
            (Some(f), Some(l)) => format!(
                "latency trend ({n} windows of {:.0} s): p99 first {} {f:.1} ms, last {} {l:.1} ms, ratio {}, slope {:+.2} ms/min{}",
                self.window_s,
                self.compared,
                self.compared,
                self.p99_ratio
                    .map_or("n/a".to_owned(), |r| format!("{r:.2}")),
                self.p99_slope_ms_per_min.unwrap_or(0.0),
                if self.truncated { " (truncated)" } else { "" },
            ),
            _ => format!(
                "latency trend ({n} windows of {:.0} s): too short to compare",
                self.window_s
            ),
        }
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub settings: RunSettings,
    pub elapsed_s: f64,
    pub interrupted: bool,
    pub publishers: Publishers,
    pub viewers: Viewers,
    pub messages: Messages,
    /// Per track, for a multitrack run.
    pub tracks: Option<Tracks>,
    pub delivered: Delivered,
    /// TCP connect plus RTMP handshake (S0, S1, S2 received), ms.
    pub connect_ms: Summary,
    /// From TCP connect to `NetStream.Play.Start`, ms.
    pub play_start_ms: Summary,
    /// Time to first frame: from the start of the TCP connect to the first video keyframe
    /// (the first decodable frame) received, ms.
    pub first_keyframe_ms: Summary,
    /// Publisher send to viewer receive, per live video message, ms. Batch readers'
    /// latency includes the wait for their next read (up to `read_interval_ms`).
    pub latency_ms: Summary,
    pub latency_trend: LatencyTrend,
    /// The flash crowd (`--crowd`), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crowd: Option<Crowd>,
    /// Each viewer's received bitrate over its playing time, kbit/s.
    pub viewer_bitrate_kbps: Summary,
    pub server: Option<Server>,
    /// The server's own counts from its admin API (`--admin`), beside ours.
    pub server_api: Option<ServerApi>,
    pub load_generator: LoadGenerator,
}

fn reasons(map: &BTreeMap<String, u64>, out: &mut String) {
    for (reason, count) in map {
        let _ = writeln!(out, "    {count:>8}  {reason}");
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "shardcast-load: {} stream(s) x {} viewer(s), {} source, {:.1} s{}",
            s.streams,
            s.viewers_per_stream,
            s.source,
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        if let Some(d) = &s.description {
            let _ = writeln!(out, "scenario: {d}");
        }
        let _ = writeln!(out, "viewers play: {} {}", s.protocol, s.play_url);
        if s.read_interval_ms > 0.0 {
            let _ = writeln!(
                out,
                "read mode: batch readers, every {} ms (latency includes up to {} ms waiting for the read){}",
                s.read_interval_ms,
                s.read_interval_ms,
                match s.receive_buffer_bytes {
                    Some(b) => format!(", SO_RCVBUF {b}"),
                    None => String::new(),
                }
            );
        } else {
            let _ = writeln!(out, "read mode: as data arrives");
        }
        if let Some(w) = self.saturation_warning() {
            let _ = writeln!(out, "{w}");
        }
        let _ = writeln!(out);
        let v = &self.viewers;
        let _ = writeln!(out, "viewers");
        for (name, value) in [
            ("target", v.target),
            ("started", v.started),
            ("connected", v.connected),
            ("failed", v.failed),
            ("disconnected", v.disconnected),
            ("playing at end", v.playing_at_end),
            ("lagging", v.lagging),
            ("counting bytes only", v.counting_bytes),
        ] {
            let _ = writeln!(out, "  {name:<22}{value:>12}");
        }
        if !v.failed_by_reason.is_empty() {
            let _ = writeln!(out, "  failed by reason:");
            reasons(&v.failed_by_reason, &mut out);
        }
        if !v.disconnected_by_reason.is_empty() {
            let _ = writeln!(out, "  disconnected by reason:");
            reasons(&v.disconnected_by_reason, &mut out);
        }
        let m = &self.messages;
        let _ = writeln!(out, "messages received");
        for (name, value) in [
            ("video", m.video),
            ("audio", m.audio),
            ("keyframes", m.keyframes),
            ("with marker", m.with_marker),
            ("lost", m.lost),
            ("reordered", m.reordered),
            ("corrupted", m.corrupted),
            ("verified", m.verified),
        ] {
            let _ = writeln!(out, "  {name:<22}{value:>12}");
        }
        if let Some(t) = &self.tracks {
            let _ = writeln!(
                out,
                "tracks (viewers missing a track at the end: {})",
                t.viewers_missing_a_track
            );
            let _ = writeln!(
                out,
                "  {:<10}{:>8}{:>9}{:>10}{:>7}{:>10}{:>10}{:>15}{:>14}",
                "track",
                "viewers",
                "headers",
                "frames",
                "lost",
                "reordered",
                "corrupted",
                "before header",
                "no key start"
            );
            for tr in &t.tracks {
                let c = &tr.counts;
                let _ = writeln!(
                    out,
                    "  {:<10}{:>8}{:>9}{:>10}{:>7}{:>10}{:>10}{:>15}{:>14}",
                    format!("{} {}", tr.kind, tr.id),
                    c.viewers,
                    c.sequence_headers,
                    c.frames,
                    c.lost,
                    c.reordered,
                    c.corrupted,
                    c.frames_before_header,
                    c.started_without_keyframe
                );
            }
        }
        let d = &self.delivered;
        let _ = writeln!(out, "delivered");
        let _ = writeln!(out, "  {:<22}{:>12}", "bytes", d.bytes);
        let _ = writeln!(out, "  {:<22}{:>12.3}", "Gbit/s", d.gbit_per_s);
        if let Some(g) = d.steady_gbit_per_s {
            let _ = writeln!(out, "  {:<22}{:>12.3}", "Gbit/s steady", g);
        }
        let p = &self.publishers;
        let _ = writeln!(out, "publishers");
        let _ = writeln!(out, "  {:<22}{:>12}", "messages sent", p.messages_sent);
        let _ = writeln!(out, "  {:<22}{:>12}", "bytes sent", p.bytes_sent);
        for e in &p.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<24}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, h) in [
            ("connect+handshake ms", &self.connect_ms),
            ("play start ms", &self.play_start_ms),
            ("first keyframe ms", &self.first_keyframe_ms),
            ("latency ms", &self.latency_ms),
            ("viewer kbit/s", &self.viewer_bitrate_kbps),
        ] {
            let _ = writeln!(
                out,
                "{name:<24}{:>9}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                h.count, h.min, h.mean, h.p50, h.p90, h.p99, h.p999, h.max
            );
        }
        let _ = writeln!(out, "{}", self.latency_trend.line());
        if let Some(c) = &self.crowd {
            let f = &c.first_keyframe_ms;
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
            let _ = writeln!(
                out,
                "flash crowd: {} viewers at {:.1} s over {:.1} s: first keyframe p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} joined); watching viewers' latency p99 {} ms before, {} ms during (x{})",
                c.viewers,
                c.at_s,
                c.over_s,
                f.p50,
                f.p99,
                f.max,
                f.count,
                ms(c.before_p99_ms),
                ms(c.during_p99_ms),
                c.spike_ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            );
        }
        if let Some(server) = &self.server {
            let _ = writeln!(out);
            let pids: Vec<String> = server.pids.iter().map(u32::to_string).collect();
            let _ = writeln!(out, "server (pid {})", pids.join(", "));
            if let Some(note) = &server.note {
                let _ = writeln!(out, "  note: {note}");
            }
            let _ = writeln!(out, "  {:<22}{:>12.3}", "steady window s", server.window_s);
            let _ = writeln!(out, "  {:<22}{:>12.3}", "cpu s", server.cpu_seconds);
            let _ = writeln!(out, "  {:<22}{:>12.3}", "  user s", server.user_seconds);
            let _ = writeln!(out, "  {:<22}{:>12.3}", "  system s", server.system_seconds);
            let _ = writeln!(out, "  {:<22}{:>12.3}", "cores busy", server.cpu_cores);
            let _ = writeln!(out, "  {:<22}{:>12.3}", "delivered GB", server.delivered_gb);
            match server.cpu_seconds_per_gb {
                Some(x) => {
                    let _ = writeln!(out, "  {:<22}{:>12.3}", "cpu s per GB", x);
                }
                None => {
                    let _ = writeln!(out, "  {:<22}{:>12}", "cpu s per GB", "n/a");
                }
            }
            let _ = writeln!(
                out,
                "  {:<22}{:>12.1}",
                "rss MiB",
                server.rss_bytes_at_end as f64 / 1048576.0
            );
            match server.rss_bytes_per_viewer {
                Some(x) => {
                    let _ = writeln!(out, "  {:<22}{:>12.1}", "rss KiB per viewer", x / 1024.0);
                }
                None => {
                    let _ = writeln!(out, "  {:<22}{:>12}", "rss KiB per viewer", "n/a");
                }
            }
        }
        if let Some(api) = &self.server_api {
            let _ = writeln!(out);
            api.table(&mut out);
        }
        let g = &self.load_generator;
        let _ = writeln!(out);
        let _ = writeln!(out, "load generator (this process)");
        if let Some(note) = &g.note {
            let _ = writeln!(out, "  note: {note}");
        }
        let _ = writeln!(out, "  {:<22}{:>12.3}", "window s", g.window_s);
        let _ = writeln!(out, "  {:<22}{:>12.3}", "cpu s", g.cpu_seconds);
        let _ = writeln!(out, "  {:<22}{:>12.3}", "  user s", g.user_seconds);
        let _ = writeln!(out, "  {:<22}{:>12.3}", "  system s", g.system_seconds);
        let _ = writeln!(out, "  {:<22}{:>12.3}", "cores busy", g.cpu_cores);
        for t in &g.threads {
            let _ = writeln!(
                out,
                "  {:<22}{:>12.3}",
                format!("  thread {} cores", t.index),
                t.cpu_cores
            );
        }
        if let Some(w) = self.saturation_warning() {
            let _ = writeln!(out, "{w}");
        }
        out
    }

    /// A warning line when an executor thread of the load generator was saturated.
    pub fn saturation_warning(&self) -> Option<String> {
        let g = &self.load_generator;
        g.saturated.then(|| {
            format!(
                "WARNING: load generator saturated: a thread used {:.2} of a core (over {SATURATED}); \
                 latency and server CPU per GB measure the generator, not the server \
                 (use more --threads, or fewer viewers)",
                g.busiest_thread_cores
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{ConnectionCounts, ShardcastSummary, StreamKbps, StreamViewers};
    use crate::stats::{record, trend_histogram};

    fn near(x: Option<f64>, want: f64) -> bool {
        // Trend histograms keep 2 significant digits.
        x.is_some_and(|x| (x - want).abs() <= want * 0.01)
    }

    fn windows(p99s_ms: &[u64]) -> Vec<Histogram<u64>> {
        p99s_ms
            .iter()
            .map(|&ms| {
                let mut h = trend_histogram();
                for _ in 0..100 {
                    record(&mut h, ms * 1000);
                }
                h
            })
            .collect()
    }

    #[test]
    fn short_trend_compares_first_and_last_steady_window() {
        // Window 0 is the ramp, left out of the comparison.
        let t = LatencyTrend::of(&windows(&[50, 10, 12, 20]), 1.0, 3.9, Some(1.0));
        assert_eq!(t.windows.len(), 4);
        assert_eq!(t.compared, "window");
        assert!(near(t.first_p99_ms, 10.0), "{t:?}");
        assert!(near(t.last_p99_ms, 20.0), "{t:?}");
        assert!(near(t.p99_ratio, 2.0), "{t:?}");
        assert!(t.p99_slope_ms_per_min.unwrap() > 0.0);
        assert!(t.line().contains("ratio 2.0"), "{}", t.line());
    }

    #[test]
    fn long_trend_compares_minutes() {
        // 10 minutes of 10 s windows, flat at 10 ms but the last minute at 30 ms.
        let mut p99s = vec![10; 54];
        p99s.extend([30; 6]);
        let t = LatencyTrend::of(&windows(&p99s), 10.0, 600.0, Some(5.0));
        assert_eq!(t.compared, "minute");
        // Window 0 starts before the steady state: the first minute is windows 1..=6.
        assert!(near(t.first_p99_ms, 10.0), "{t:?}");
        assert!(near(t.last_p99_ms, 30.0), "{t:?}");
        assert_eq!(t.windows.len(), 60);
        assert!(!t.truncated);
    }

    fn stream(app: &str, name: &str, total: u64, per_shard: &[u64]) -> StreamInfo {
        StreamInfo {
            app: app.into(),
            name: name.into(),
            viewers: StreamViewers {
                total,
                per_shard: per_shard.to_vec(),
            },
            dropped_frames: 3,
            send_bytes: 60_000_000,
            kbps: StreamKbps {
                send_30s: 125_000.0,
            },
        }
    }

    fn own_counts() -> OwnCounts {
        OwnCounts {
            connections: 51,
            bytes_in: 1_100_000,
            bytes_out: 60_500_000,
            streams: vec![
                ("live".into(), "load-0".into(), 50),
                ("live".into(), "load-1".into(), 0),
            ],
        }
    }

    fn summary() -> ShardcastSummary {
        ShardcastSummary {
            connections: ConnectionCounts { total: 53 },
            bytes_in: 1_200_000,
            bytes_out: 61_000_000,
            shards: vec![
                ShardSummary {
                    shard: 0,
                    connections: 27,
                    viewers: 26,
                    bytes_out: 30_000_000,
                },
                ShardSummary {
                    shard: 1,
                    connections: 26,
                    viewers: 24,
                    bytes_out: 31_000_000,
                },
            ],
        }
    }

    #[test]
    fn server_api_sets_the_server_beside_us() {
        let view = AdminView {
            url: "http://127.0.0.1:1985".into(),
            summary: Ok(summary()),
            streams: Ok(vec![
                stream("live", "other", 2, &[2, 0]),
                stream("live", "load-0", 50, &[26, 24]),
            ]),
        };
        let api = ServerApi::of(view, &own_counts());
        assert!(api.errors.is_empty());
        assert_eq!(
            api.connections,
            Compared {
                ours: 51,
                server: Some(53)
            }
        );
        assert_eq!(api.bytes_out.server, Some(61_000_000));
        // Sorted by name; ours matched by app and name.
        assert_eq!(api.streams[0].server.name, "load-0");
        assert_eq!(api.streams[0].ours_playing, Some(50));
        assert_eq!(api.streams[1].ours_playing, None);
        assert_eq!(api.missing_streams, vec!["live/load-1".to_owned()]);

        let mut table = String::new();
        api.table(&mut table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "server API http://127.0.0.1:1985 (read as the run ended)"
        );
        let row = |first: &str| -> Vec<&str> {
            lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(first))
                .unwrap_or_else(|| panic!("no {first} row in\n{table}"))
                .split_whitespace()
                .collect()
        };
        assert_eq!(row("connections"), ["connections", "51", "53"]);
        assert_eq!(
            row("live/load-0"),
            [
                "live/load-0",
                "50",
                "50",
                "3",
                "60000000",
                "125000.0",
                "26",
                "24"
            ]
        );
        assert_eq!(row("live/other")[1], "-");
        assert_eq!(row("1"), ["1", "26", "24", "31000000"]);
        assert!(
            table.contains("not listed by the server: live/load-1"),
            "{table}"
        );

        let json = serde_json::to_value(&api).unwrap();
        assert_eq!(json["connections"]["server"], 53);
        assert_eq!(json["streams"][0]["viewers"]["per_shard"][1], 24);
        assert_eq!(json["streams"][0]["kbps"]["send_30s"], 125_000.0);
        assert_eq!(json["streams"][0]["ours_playing"], 50);
        assert_eq!(json["shards"][1]["bytes_out"], 31_000_000);
    }

    #[test]
    fn unreachable_server_api_is_one_line() {
        let e = "cannot reach http://127.0.0.1:1985/api/v1/summaries: io: Connection refused";
        let view = AdminView {
            url: "http://127.0.0.1:1985".into(),
            summary: Err(e.into()),
            streams: Err(e.into()),
        };
        let api = ServerApi::of(view, &own_counts());
        assert_eq!(api.errors, vec![e.to_owned()]);
        assert_eq!(api.connections.server, None);
        assert!(api.missing_streams.is_empty(), "unknown, not missing");
        let mut table = String::new();
        api.table(&mut table);
        assert_eq!(table, format!("server API http://127.0.0.1:1985: {e}\n"));
        let json = serde_json::to_value(&api).unwrap();
        assert_eq!(json["errors"][0], e);
        assert!(json["connections"]["server"].is_null());
        assert_eq!(json["connections"]["ours"], 51);
    }

    #[test]
    fn half_an_answer_is_shown_with_its_error() {
        let view = AdminView {
            url: "http://127.0.0.1:1985".into(),
            summary: Ok(summary()),
            streams: Err("streams: the server answered code 1".into()),
        };
        let api = ServerApi::of(view, &own_counts());
        let mut table = String::new();
        api.table(&mut table);
        assert!(
            table.contains("  error: streams: the server answered code 1"),
            "{table}"
        );
        assert!(table.contains("bytes out"), "{table}");
        assert!(!table.contains("kbit/s 30s"), "{table}");
    }

    #[test]
    fn empty_trend() {
        let t = LatencyTrend::of(&[], 10.0, 0.0, None);
        assert!(t.windows.is_empty());
        assert_eq!(t.first_p99_ms, None);
        assert!(t.line().contains("too short"));
    }
}
