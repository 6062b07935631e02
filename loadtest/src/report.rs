//! The end-of-run report: one structure, printed as a table for people and written as JSON
//! (`--json`) for scripts, so both always show the same numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

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
    pub play_url: String,
    pub streams: usize,
    pub viewers_per_stream: u32,
    pub ramp_per_second: f64,
    pub duration_s: f64,
    pub threads: usize,
    pub source: String,
    pub verify_every: u32,
    pub lag_threshold_ms: u64,
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
    pub lagging: u64,
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

#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub settings: RunSettings,
    pub elapsed_s: f64,
    pub interrupted: bool,
    pub publishers: Publishers,
    pub viewers: Viewers,
    pub messages: Messages,
    pub delivered: Delivered,
    /// TCP connect plus RTMP handshake (S0, S1, S2 received), ms.
    pub connect_ms: Summary,
    /// From TCP connect to `NetStream.Play.Start`, ms.
    pub play_start_ms: Summary,
    /// From TCP connect to the first video keyframe, ms.
    pub first_keyframe_ms: Summary,
    /// Publisher send to viewer receive, per live video message, ms.
    pub latency_ms: Summary,
    /// Each viewer's received bitrate over its playing time, kbit/s.
    pub viewer_bitrate_kbps: Summary,
    pub server: Option<Server>,
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
        out
    }
}
