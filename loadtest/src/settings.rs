//! The command line, scenario files, and the settings of one run they resolve to.
//!
//! Every option can be given on the command line or in a scenario file
//! (`loadtest/scenarios/*.toml`, keys spelled with underscores: `--verify-every` is
//! `verify_every`). The command line wins over the scenario, and the scenario over the
//! defaults shown in `--help`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde::Deserialize;

use crate::admin::AdminTarget;
use crate::source::SyntheticSettings;

/// Load generator for RTMP relays: publishes P streams and plays each with V viewers,
/// then reports connect time, time to first keyframe, relay latency, loss and throughput.
#[derive(Parser, Debug)]
#[command(name = "shardcast-load", version, about)]
pub struct Cli {
    /// Scenario file (TOML) with defaults for any option below; options given here win.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub knobs: Knobs,
}

/// The options a run takes, each optional so a scenario file and the command line can be
/// layered.
#[derive(Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Publish URL template; {⁠n} becomes the stream number (0..streams).
    /// [default: rtmp://127.0.0.1:1935/live/load-{⁠n}]
    #[arg(long, value_name = "TEMPLATE")]
    pub url: Option<String>,
    /// Play URL template, when viewers play from elsewhere (an edge) than publishers push
    /// to; for http-flv and ws-flv an http:// URL such as
    /// http://127.0.0.1:8080/live/load-{⁠n}.flv. [default: the publish URL; for http-flv and
    /// ws-flv derived from it with --http-port]
    #[arg(long, value_name = "TEMPLATE")]
    pub play_url: Option<String>,
    /// How viewers play: rtmp, http-flv (GET .../{app}/{stream}.flv) or ws-flv (the same
    /// path over a WebSocket). [default: rtmp]
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<Protocol>,
    /// For http-flv and ws-flv without --play-url: the relay's media HTTP port; viewers
    /// then play rtmp://HOST:PORT/APP/KEY of --url as http://HOST:HTTP_PORT/APP/KEY.flv.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Number of streams, each with its own publisher. [default: 1]
    #[arg(long, value_name = "P")]
    pub streams: Option<u32>,
    /// Viewers per stream. [default: 10]
    #[arg(long, value_name = "V")]
    pub viewers: Option<u32>,
    /// Viewers started per second, over all streams. [default: 200]
    #[arg(long, value_name = "R")]
    pub ramp: Option<f64>,
    /// How long the run lasts from the first publish, e.g. 10s, 2m. [default: 10s]
    #[arg(long, value_name = "TIME")]
    pub duration: Option<String>,
    /// Executor threads. [default: all cores]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// What publishers send: `synthetic`, or the path of an FLV file to loop.
    /// [default: synthetic]
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Synthetic source: total bitrate, e.g. 2500k, 6M. [default: 2500k]
    #[arg(long, value_name = "RATE")]
    pub bitrate: Option<String>,
    /// Synthetic source: frames per second. [default: 30]
    #[arg(long, value_name = "FPS")]
    pub fps: Option<u32>,
    /// Synthetic source: keyframe interval, e.g. 2s, 500ms. [default: 2s]
    #[arg(long, value_name = "TIME")]
    pub gop: Option<String>,
    /// Synthetic source: publish an Enhanced RTMP v2 multitrack stream (two H.264 video
    /// tracks in `ManyTracks` messages, two AAC audio tracks in `OneTrack` messages, each
    /// track with its own sequence numbers). Viewers then declare `fourCcList`
    /// ["avc1", "mp4a"] and `capsEx` Multitrack in `connect`, every viewer parses everything
    /// (as --verify-every 1), and the report checks each track: its sequence header before
    /// its first frame, a video track starting at a keyframe, loss and order. RTMP(S)
    /// viewers only.
    #[arg(long)]
    #[serde(default)]
    pub multitrack: bool,
    /// With --multitrack: viewers declare no Enhanced RTMP capabilities (as ffmpeg 5.1 or
    /// rtmpdump), so the relay owes them track 0 of each kind in the legacy FLV layout; the
    /// report then checks exactly those two tracks.
    #[arg(long)]
    #[serde(default)]
    pub multitrack_legacy_viewers: bool,
    /// Viewers play stored files (video on demand) instead of live streams: nobody
    /// publishes, the play URL names a file of the relay's `vod_dir` (e.g.
    /// rtmp://127.0.0.1:1935/live/big for big.flv), and each viewer's `play` asks for a
    /// start position: `MS` (every viewer there), or `random:MAX_MS` (each viewer its own,
    /// spread evenly over 0..MAX_MS, the same for the same viewer in every run). RTMP(S)
    /// viewers only.
    #[arg(long, value_name = "START")]
    pub vod_start: Option<String>,
    /// The sample: every K-th viewer parses everything through the library's full decoder
    /// (latency, loss, order, keyframes, payload checksums). 1 makes every viewer verify,
    /// 0 none. [default: 50]
    #[arg(long, value_name = "K")]
    pub verify_every: Option<u32>,
    /// How the viewers outside the sample count, once they have their first keyframe:
    /// `bytes` discards what arrives in the kernel (recv with MSG_TRUNC, nothing copied or
    /// parsed) and counts it; `headers` walks every chunk or tag header, so latency and
    /// loss are measured for every viewer, at more CPU. [default: bytes]
    #[arg(long, value_name = "HOW")]
    pub counting: Option<Counting>,
    /// A viewer whose last media timestamp is this far behind its publisher's at the end
    /// counts as lagging. [default: 2s]
    #[arg(long, value_name = "TIME")]
    pub lag_threshold: Option<String>,
    /// Batch readers: once playing, each viewer sleeps this long, then drains its socket
    /// with non-blocking reads, and sleeps again (wake-ups staggered over the viewers).
    /// 0 reads as data arrives. Latency then includes up to this wait. E.g. 100ms.
    /// [default: 0]
    #[arg(long, value_name = "TIME")]
    pub read_interval: Option<String>,
    /// Time allowed for TCP connect, handshake, connect and play to succeed. [default: 10s]
    #[arg(long, value_name = "TIME")]
    pub connect_timeout: Option<String>,
    /// Write the whole report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Sample this server process's CPU time and memory from /proc (repeatable, e.g. one
    /// per process when the relay runs several).
    #[arg(long = "server-pid", value_name = "PID")]
    #[serde(default)]
    pub server_pid: Vec<u32>,
    /// No progress line while running.
    #[arg(long)]
    #[serde(default)]
    pub no_progress: bool,
    /// The server's admin HTTP API, e.g. http://127.0.0.1:1985: as the run ends, its
    /// summaries and stream list are read and shown beside the load generator's numbers.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Bearer token for the admin API, if it asks for one.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// For rtmps:// play URLs: a PEM file of the certificate (or its CA) to trust.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// For rtmps:// play URLs: accept any certificate (a self-signed test one). Measures
    /// the server's TLS cost; never use it to reach a server you do not run.
    #[arg(long)]
    #[serde(default)]
    pub tls_insecure: bool,
    /// A flash crowd: this many more viewers (over all streams, in turn) join at once
    /// `--crowd-at` after the first viewer, within one second (`--crowd-ramp`). They only
    /// count bytes; their join times are reported apart ("crowd"), and the latency trend of
    /// the viewers already watching shows whether the crowd hurt them. [default: 0]
    #[arg(long, value_name = "N")]
    pub crowd: Option<usize>,
    /// When the crowd arrives, from the first viewer's start, e.g. 10s. [default: 10s]
    #[arg(long, value_name = "TIME")]
    pub crowd_at: Option<String>,
    /// Crowd viewers started per second. [default: the crowd's size, so it arrives in 1 s]
    #[arg(long, value_name = "R")]
    pub crowd_ramp: Option<f64>,
}

impl Knobs {
    /// `self` with every option it lacks taken from `base`.
    fn over(self, base: Knobs) -> Knobs {
        Knobs {
            url: self.url.or(base.url),
            play_url: self.play_url.or(base.play_url),
            protocol: self.protocol.or(base.protocol),
            http_port: self.http_port.or(base.http_port),
            streams: self.streams.or(base.streams),
            viewers: self.viewers.or(base.viewers),
            ramp: self.ramp.or(base.ramp),
            duration: self.duration.or(base.duration),
            threads: self.threads.or(base.threads),
            source: self.source.or(base.source),
            bitrate: self.bitrate.or(base.bitrate),
            fps: self.fps.or(base.fps),
            gop: self.gop.or(base.gop),
            multitrack: self.multitrack || base.multitrack,
            multitrack_legacy_viewers: self.multitrack_legacy_viewers
                || base.multitrack_legacy_viewers,
            vod_start: self.vod_start.or(base.vod_start),
            verify_every: self.verify_every.or(base.verify_every),
            counting: self.counting.or(base.counting),
            lag_threshold: self.lag_threshold.or(base.lag_threshold),
            read_interval: self.read_interval.or(base.read_interval),
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            json: self.json.or(base.json),
            server_pid: if self.server_pid.is_empty() {
                base.server_pid
            } else {
                self.server_pid
            },
            no_progress: self.no_progress || base.no_progress,
            admin: self.admin.or(base.admin),
            admin_token: self.admin_token.or(base.admin_token),
            tls_ca: self.tls_ca.or(base.tls_ca),
            tls_insecure: self.tls_insecure || base.tls_insecure,
            crowd: self.crowd.or(base.crowd),
            crowd_at: self.crowd_at.or(base.crowd_at),
            crowd_ramp: self.crowd_ramp.or(base.crowd_ramp),
        }
    }
}

/// A scenario file: the options, plus a description for the report.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(flatten)]
    knobs: Knobs,
}

/// How the viewers outside the verifying sample count what they receive (`--counting`).
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Counting {
    /// Join (first keyframe) as a player, then only count bytes, discarded in the kernel.
    #[default]
    Bytes,
    /// Walk every chunk (or FLV tag) header and check every message's marker.
    Headers,
}

impl Counting {
    pub fn name(self) -> &'static str {
        match self {
            Counting::Bytes => "bytes",
            Counting::Headers => "headers",
        }
    }
}

/// How viewers play.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Rtmp,
    HttpFlv,
    WsFlv,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
            Protocol::WsFlv => "ws-flv",
        }
    }
}

/// Where an HTTP-FLV (or WebSocket-FLV) URL points: `http://host[:port]/app/stream.flv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` as written (with 80 added when absent), for `Host:`.
    pub authority: String,
    pub addr: SocketAddr,
    /// The request target: `/app/stream.flv` and any query.
    pub target: String,
    pub app: String,
    /// The stream name: the last path segment without `.flv` and the query.
    pub stream: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.target)
    }
}

/// Parses `http://host[:port]/app/stream.flv[?query]` (`ws://` too) and resolves the host.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("{url}: http-flv and ws-flv play http:// URLs"))?;
    let shape = || format!("{url}: expected http://host[:port]/app/stream.flv");
    let (authority, path) = rest.split_once('/').ok_or_else(shape)?;
    let (app, file) = path
        .split('?')
        .next()
        .unwrap_or_default()
        .split_once('/')
        .ok_or_else(shape)?;
    let stream = file
        .strip_suffix(".flv")
        .filter(|s| !s.is_empty() && !app.is_empty());
    let stream = stream.ok_or_else(shape)?;
    let authority = with_port(authority, 80);
    Ok(HttpUrl {
        addr: resolve(url, &authority)?,
        authority,
        target: format!("/{path}"),
        app: app.to_owned(),
        stream: stream.to_owned(),
    })
}

/// `authority` with `:port` added when it has none.
fn with_port(authority: &str, port: u16) -> String {
    let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
        (!host.contains(':') || host.ends_with(']')) && port.parse::<u16>().is_ok()
    });
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{port}")
    }
}

fn resolve(url: &str, authority: &str) -> Result<SocketAddr, String> {
    authority
        .to_socket_addrs()
        .map_err(|e| format!("{url}: cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {authority} resolves to no address"))
}

/// Where viewers play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlayUrl {
    Rtmp(RtmpUrl),
    /// HTTP-FLV, or WebSocket-FLV when `websocket`.
    Flv {
        url: HttpUrl,
        websocket: bool,
    },
}

impl PlayUrl {
    pub fn app(&self) -> &str {
        match self {
            PlayUrl::Rtmp(u) => &u.app,
            PlayUrl::Flv { url, .. } => &url.app,
        }
    }

    /// The stream's name as the server lists it: without a query.
    pub fn stream_name(&self) -> &str {
        match self {
            PlayUrl::Rtmp(u) => u.key.split('?').next().unwrap_or_default(),
            PlayUrl::Flv { url, .. } => &url.stream,
        }
    }
}

impl std::fmt::Display for PlayUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlayUrl::Rtmp(u) => u.fmt(f),
            PlayUrl::Flv { url, websocket } => {
                let scheme = if *websocket { "ws" } else { "http" };
                write!(f, "{scheme}://{}{}", url.authority, url.target)
            }
        }
    }
}

/// The HTTP-FLV URL of an RTMP URL: `rtmp://HOST:PORT/APP/KEY` becomes
/// `http://HOST:HTTP_PORT/APP/KEY.flv` (a query stays behind `.flv`).
pub fn derived_flv_url(rtmp: &RtmpUrl, http_port: u16) -> String {
    let host = match rtmp.authority.rsplit_once(':') {
        Some((host, _)) => host,
        None => &rtmp.authority,
    };
    let (key, query) = match rtmp.key.split_once('?') {
        Some((key, query)) => (key, format!("?{query}")),
        None => (rtmp.key.as_str(), String::new()),
    };
    format!("http://{host}:{http_port}/{}/{key}.flv{query}", rtmp.app)
}

/// Where an RTMP URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtmpUrl {
    /// `host:port` as written (with 1935 added when absent).
    pub authority: String,
    pub addr: SocketAddr,
    pub app: String,
    pub key: String,
    /// RTMPS (`rtmps://`): RTMP inside TLS.
    pub tls: bool,
}

impl RtmpUrl {
    fn scheme(&self) -> &'static str {
        if self.tls { "rtmps" } else { "rtmp" }
    }

    pub fn tc_url(&self) -> String {
        format!("{}://{}/{}", self.scheme(), self.authority, self.app)
    }

    /// The host part of the authority (the TLS server name).
    pub fn host(&self) -> &str {
        match self.authority.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => &self.authority,
        }
    }
}

impl std::fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}/{}/{}",
            self.scheme(),
            self.authority,
            self.app,
            self.key
        )
    }
}

/// Parses `rtmp://host[:port]/app/key` and resolves the host.
pub fn parse_rtmp_url(url: &str) -> Result<RtmpUrl, String> {
    let (rest, tls) = match url.strip_prefix("rtmps://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("rtmp://")
                .ok_or_else(|| format!("{url}: only rtmp:// and rtmps:// URLs are supported"))?,
            false,
        ),
    };
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{url}: expected rtmp://host[:port]/app/key"))?;
    let (app, key) = path
        .split_once('/')
        .filter(|(app, key)| !app.is_empty() && !key.is_empty())
        .ok_or_else(|| format!("{url}: expected rtmp://host[:port]/app/key"))?;
    let authority = with_port(authority, if tls { 443 } else { 1935 });
    let addr = resolve(url, &authority)?;
    Ok(RtmpUrl {
        authority,
        addr,
        app: app.to_owned(),
        key: key.to_owned(),
        tls,
    })
}

/// "10s", "500ms", "2m", "1.5s", or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// "2500k", "6M", "800000": bits per second.
pub fn parse_bitrate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a bitrate (try 2500k or 6M)"))?;
    let bps = value * scale;
    if !(bps.is_finite() && bps >= 1000.0) {
        return Err(format!("bitrate {text:?} is below 1k"));
    }
    Ok(bps as u64)
}

#[derive(Clone, Debug)]
pub enum SourceSpec {
    Synthetic(SyntheticSettings),
    File(PathBuf),
}

/// How often a byte-counting viewer drains its socket when viewers otherwise read as data
/// arrives. Draining is one `recv` per viewer per interval whatever arrived, so a longer
/// interval costs less; 50 ms of a 2.5 Mbit/s stream (16 KB) sits far below the kernel's
/// default receive buffer (128 KiB), so the relay never sees a full window because of it.
pub const COUNT_INTERVAL: Duration = Duration::from_millis(50);

/// What `--help` text writes inside `{n}` so clap does not read it as a line break.
const HELP_JOINER: char = '\u{2060}';

/// `--help` as printed: the word joiners taken out of the URL templates, so `{n}` reads
/// (and pastes) as typed.
pub fn visible_templates(help: &str) -> String {
    help.replace(HELP_JOINER, "")
}

/// Everything a run needs, resolved and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scenario: Option<String>,
    pub description: Option<String>,
    pub publish_urls: Vec<RtmpUrl>,
    pub protocol: Protocol,
    pub play_urls: Vec<PlayUrl>,
    pub viewers_per_stream: u32,
    pub ramp_per_second: f64,
    pub duration: Duration,
    pub threads: usize,
    pub source: SourceSpec,
    pub verify_every: u32,
    pub counting: Counting,
    /// How often byte-counting viewers drain their sockets: `read_interval`, or
    /// [`COUNT_INTERVAL`] when viewers read as data arrives.
    pub count_interval: Duration,
    /// SO_RCVBUF byte-counting viewers set, when the default would not hold one
    /// `count_interval` of the stream.
    pub count_receive_buffer: Option<usize>,
    pub lag_threshold: Duration,
    /// Batch readers' sleep between drains; zero reads as data arrives.
    pub read_interval: Duration,
    /// SO_RCVBUF batch readers set, when the kernel's default receive buffer would not
    /// hold one interval of the stream (see [`batch_receive_buffer`]).
    pub receive_buffer: Option<usize>,
    pub connect_timeout: Duration,
    pub json: Option<PathBuf>,
    pub server_pids: Vec<u32>,
    pub progress: bool,
    /// The server's admin API, read as the run ends.
    pub admin: Option<AdminTarget>,
    /// How rtmps:// viewers check the server's certificate.
    pub tls: TlsTrust,
    /// The E-RTMP multitrack stream and per-track checks (`--multitrack`).
    pub multitrack: bool,
    /// Multitrack viewers declare nothing (`--multitrack-legacy-viewers`).
    pub multitrack_legacy_viewers: bool,
    /// Viewers play stored files from this position, and nobody publishes (`--vod-start`).
    pub vod_start: Option<VodStart>,
    /// Flash-crowd viewers (`--crowd`), started after the others.
    pub crowd: usize,
    /// When the crowd starts, from the first viewer's start.
    pub crowd_at: Duration,
    /// Crowd viewers started per second.
    pub crowd_ramp_per_second: f64,
}

/// Where VOD viewers start (`--vod-start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VodStart {
    /// Every viewer at this many milliseconds.
    At(u32),
    /// Viewer `i` at its own position in `0..max`, from a hash of `i`.
    Random { max_ms: u32 },
}

impl VodStart {
    pub fn parse(text: &str) -> Result<VodStart, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("--vod-start {text:?}: expected MS or random:MAX_MS"))
        };
        match text.strip_prefix("random:") {
            Some(max) => {
                let max_ms = number(max)?;
                if max_ms == 0 {
                    return Err("--vod-start random:MAX_MS needs MAX_MS above 0".into());
                }
                Ok(VodStart::Random { max_ms })
            }
            None => Ok(VodStart::At(number(text)?)),
        }
    }

    /// Viewer `index`'s start, in milliseconds.
    pub fn for_viewer(self, index: usize) -> u32 {
        match self {
            VodStart::At(ms) => ms,
            VodStart::Random { max_ms } => {
                // splitmix64: positions spread evenly, and the same viewer gets the same one.
                let mut z = (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z % u64::from(max_ms)) as u32
            }
        }
    }
}

/// How rtmps:// viewers check the server's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// No rtmps:// URL in the run.
    #[default]
    Unused,
    /// Trust the certificates in this PEM file.
    Ca(PathBuf),
    /// Accept any certificate.
    Insecure,
}

impl Settings {
    pub fn streams(&self) -> usize {
        self.publish_urls.len()
    }

    /// Viewers before the crowd: `--viewers` per stream.
    pub fn total_viewers(&self) -> usize {
        self.streams() * self.viewers_per_stream as usize
    }

    /// Every viewer the run starts, the crowd included.
    pub fn all_viewers(&self) -> usize {
        self.total_viewers() + self.crowd
    }

    pub fn from_cli(cli: Cli) -> Result<Settings, String> {
        let (description, knobs) = match &cli.scenario {
            Some(path) => {
                let file = load_scenario(path)?;
                (file.description, cli.knobs.over(file.knobs))
            }
            None => (None, cli.knobs),
        };
        Settings::resolve(
            cli.scenario.as_deref().map(|p| p.display().to_string()),
            description,
            knobs,
        )
    }

    fn resolve(
        scenario: Option<String>,
        description: Option<String>,
        k: Knobs,
    ) -> Result<Settings, String> {
        // A template pasted from an older `--help`, which printed a word joiner inside
        // the braces, still works.
        let clean = |t: String| t.replace(HELP_JOINER, "");
        let url = k
            .url
            .map(clean)
            .unwrap_or_else(|| "rtmp://127.0.0.1:1935/live/load-{n}".to_owned());
        let protocol = k.protocol.unwrap_or_default();
        let streams = k.streams.unwrap_or(1);
        if streams == 0 {
            return Err("--streams must be at least 1".into());
        }
        if streams > 1 && !url.contains("{n}") {
            return Err(format!(
                "--url {url:?} has no {{n}}: with {streams} streams every publisher would use the same key"
            ));
        }
        let expand = |template: &str| -> Result<Vec<RtmpUrl>, String> {
            (0..streams)
                .map(|n| parse_rtmp_url(&template.replace("{n}", &n.to_string())))
                .collect()
        };
        let publish_urls = expand(&url)?;
        if publish_urls.iter().any(|u| u.tls) {
            return Err(format!(
                "--url {url:?}: publishers use rtmp://; give viewers rtmps:// with --play-url"
            ));
        }
        let play_urls: Vec<PlayUrl> = match (protocol, k.play_url.map(clean)) {
            (Protocol::Rtmp, template) => expand(template.as_deref().unwrap_or(&url))?
                .into_iter()
                .map(PlayUrl::Rtmp)
                .collect(),
            (flv, template) => {
                let websocket = flv == Protocol::WsFlv;
                let urls: Vec<String> = match (template, k.http_port) {
                    (Some(t), _) => (0..streams)
                        .map(|n| t.replace("{n}", &n.to_string()))
                        .collect(),
                    (None, Some(port)) => publish_urls
                        .iter()
                        .map(|u| derived_flv_url(u, port))
                        .collect(),
                    (None, None) => {
                        return Err(format!(
                            "--protocol {} needs --play-url (e.g. http://127.0.0.1:8080/live/load-{{n}}.flv) \
                             or --http-port (the relay's media HTTP port, to derive it from --url)",
                            flv.name()
                        ));
                    }
                };
                urls.iter()
                    .map(|u| parse_http_url(u).map(|url| PlayUrl::Flv { url, websocket }))
                    .collect::<Result<_, _>>()?
            }
        };
        let ramp = k.ramp.unwrap_or(200.0);
        if !(ramp.is_finite() && ramp > 0.0) {
            return Err(format!(
                "--ramp must be a positive number of viewers per second, got {ramp}"
            ));
        }
        let duration = parse_duration(k.duration.as_deref().unwrap_or("10s"))
            .map_err(|e| format!("--duration: {e}"))?;
        if duration < Duration::from_millis(500) {
            return Err("--duration must be at least 500ms".into());
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = k.threads.unwrap_or(cores);
        if threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        let source = match k.source.as_deref().unwrap_or("synthetic") {
            "synthetic" => {
                let bitrate = parse_bitrate(k.bitrate.as_deref().unwrap_or("2500k"))
                    .map_err(|e| format!("--bitrate: {e}"))?;
                let fps = k.fps.unwrap_or(30);
                if !(1..=240).contains(&fps) {
                    return Err(format!("--fps must be between 1 and 240, got {fps}"));
                }
                let gop = parse_duration(k.gop.as_deref().unwrap_or("2s"))
                    .map_err(|e| format!("--gop: {e}"))?;
                if gop.is_zero() {
                    return Err("--gop must be above 0".into());
                }
                SourceSpec::Synthetic(SyntheticSettings {
                    bitrate,
                    fps,
                    gop_ms: gop.as_millis().min(u128::from(u32::MAX)) as u32,
                    multitrack: k.multitrack,
                })
            }
            path => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(format!(
                        "--source {}: no such file (use `synthetic` or the path of an FLV file)",
                        path.display()
                    ));
                }
                if k.multitrack {
                    return Err("--multitrack needs --source synthetic".into());
                }
                SourceSpec::File(path)
            }
        };
        let vod_start = k.vod_start.as_deref().map(VodStart::parse).transpose()?;
        if vod_start.is_some() && (protocol != Protocol::Rtmp || k.multitrack) {
            return Err(
                "--vod-start: viewers play rtmp:// or rtmps://, without --multitrack".into(),
            );
        }
        if k.multitrack_legacy_viewers && !k.multitrack {
            return Err("--multitrack-legacy-viewers needs --multitrack".into());
        }
        if k.multitrack && protocol != Protocol::Rtmp {
            return Err(format!(
                "--multitrack: viewers play rtmp:// or rtmps://, not {}",
                protocol.name()
            ));
        }
        // Multitrack checks need every message whole: every viewer verifies.
        let verify_every = if k.multitrack {
            1
        } else {
            k.verify_every.unwrap_or(50)
        };
        let lag_threshold = parse_duration(k.lag_threshold.as_deref().unwrap_or("2s"))
            .map_err(|e| format!("--lag-threshold: {e}"))?;
        let read_interval = parse_duration(k.read_interval.as_deref().unwrap_or("0"))
            .map_err(|e| format!("--read-interval: {e}"))?;
        if read_interval > Duration::from_secs(10) {
            return Err("--read-interval must be at most 10s".into());
        }
        let receive_buffer = match &source {
            SourceSpec::Synthetic(x) if !read_interval.is_zero() => {
                batch_receive_buffer(x, read_interval, default_receive_buffer())
            }
            _ => None,
        };
        let counting = k.counting.unwrap_or_default();
        let count_interval = if read_interval.is_zero() {
            COUNT_INTERVAL
        } else {
            read_interval
        };
        let count_receive_buffer = match &source {
            SourceSpec::Synthetic(x) => {
                batch_receive_buffer(x, count_interval, default_receive_buffer())
            }
            _ => None,
        };
        let connect_timeout = parse_duration(k.connect_timeout.as_deref().unwrap_or("10s"))
            .map_err(|e| format!("--connect-timeout: {e}"))?;
        for pid in &k.server_pid {
            if !Path::new(&format!("/proc/{pid}/stat")).exists() {
                return Err(format!("--server-pid {pid}: no such process"));
            }
        }
        if k.admin_token.is_some() && k.admin.is_none() {
            return Err("--admin-token needs --admin URL".into());
        }
        let uses_tls = play_urls
            .iter()
            .any(|u| matches!(u, PlayUrl::Rtmp(r) if r.tls));
        let tls = match (uses_tls, k.tls_ca, k.tls_insecure) {
            (false, _, _) => TlsTrust::Unused,
            (true, Some(ca), _) => TlsTrust::Ca(ca),
            (true, None, true) => TlsTrust::Insecure,
            (true, None, false) => {
                return Err(
                    "rtmps:// play URLs need --tls-ca FILE (the certificate to trust) or --tls-insecure"
                        .into(),
                );
            }
        };
        let crowd = k.crowd.unwrap_or(0);
        let crowd_at = parse_duration(k.crowd_at.as_deref().unwrap_or("10s"))
            .map_err(|e| format!("--crowd-at: {e}"))?;
        let crowd_ramp_per_second = k.crowd_ramp.unwrap_or(crowd.max(1) as f64);
        if !(crowd_ramp_per_second.is_finite() && crowd_ramp_per_second > 0.0) {
            return Err("--crowd-ramp must be a positive number".into());
        }
        if crowd > 0 && crowd_at >= duration {
            return Err(format!(
                "--crowd-at {crowd_at:?} is not before the end of the run ({duration:?})"
            ));
        }
        let admin = k
            .admin
            .as_deref()
            .map(|url| AdminTarget::new(url, k.admin_token.clone()))
            .transpose()?;
        Ok(Settings {
            scenario,
            description,
            publish_urls,
            protocol,
            play_urls,
            viewers_per_stream: k.viewers.unwrap_or(10),
            ramp_per_second: ramp,
            duration,
            threads,
            source,
            verify_every,
            counting,
            count_interval,
            count_receive_buffer,
            lag_threshold,
            read_interval,
            receive_buffer,
            connect_timeout,
            json: k.json,
            server_pids: k.server_pid,
            progress: !k.no_progress,
            admin,
            tls,
            crowd,
            crowd_at,
            crowd_ramp_per_second,
            multitrack: k.multitrack,
            multitrack_legacy_viewers: k.multitrack_legacy_viewers,
            vod_start,
        })
    }
}

/// The kernel's default TCP receive buffer (the middle of `net.ipv4.tcp_rmem`), if readable.
fn default_receive_buffer() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The SO_RCVBUF a batch reader needs, or `None` when the default will do.
///
/// One interval of the synthetic stream, plus one keyframe (3x an average picture) in case
/// the interval holds one, must fit in the receive window, or the relay sees a full window
/// because of the load generator rather than because it is slow. The kernel's usable
/// window is about half the buffer (less its bookkeeping), so the default must be at
/// least twice the need. At 2.5 Mbit/s and 100 ms the need is about 62 KB and Linux's
/// default of 128 KiB is just enough, so nothing is set; setting SO_RCVBUF would also turn
/// the kernel's receive-buffer autotuning off. When the default is too small, twice the need
/// is asked for (the kernel doubles the value again for its bookkeeping).
pub fn batch_receive_buffer(
    source: &SyntheticSettings,
    interval: Duration,
    default: Option<usize>,
) -> Option<usize> {
    let bytes_per_s = source.bitrate as f64 / 8.0;
    let need = bytes_per_s * interval.as_secs_f64() + 3.0 * bytes_per_s / f64::from(source.fps);
    let need = need.ceil() as usize;
    match default {
        Some(d) if d >= 2 * need => None,
        _ => Some(2 * need),
    }
}

fn load_scenario(path: &Path) -> Result<ScenarioFile, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("scenario {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("scenario {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vod_start_positions() {
        assert_eq!(VodStart::parse("5000").unwrap(), VodStart::At(5000));
        assert_eq!(VodStart::At(5000).for_viewer(7), 5000);
        let random = VodStart::parse("random:60000").unwrap();
        assert_eq!(random, VodStart::Random { max_ms: 60_000 });
        let starts: Vec<u32> = (0..1000).map(|i| random.for_viewer(i)).collect();
        assert!(starts.iter().all(|&s| s < 60_000));
        assert_eq!(
            starts,
            (0..1000).map(|i| random.for_viewer(i)).collect::<Vec<_>>()
        );
        // Spread over the range: every tenth of it gets some.
        for tenth in 0..10 {
            assert!(
                starts.iter().any(|&s| s / 6000 == tenth),
                "nothing in tenth {tenth}"
            );
        }
        assert!(VodStart::parse("random:0").is_err());
        assert!(VodStart::parse("soon").is_err());
    }

    #[test]
    fn durations_and_bitrates() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_bitrate("2500k").unwrap(), 2_500_000);
        assert_eq!(parse_bitrate("6M").unwrap(), 6_000_000);
        assert!(parse_bitrate("fast").is_err());
    }

    #[test]
    fn batch_receive_buffer_only_when_the_default_is_short() {
        let s = SyntheticSettings {
            bitrate: 2_500_000,
            fps: 30,
            gop_ms: 2000,
            multitrack: false,
        };
        let ms100 = Duration::from_millis(100);
        assert_eq!(batch_receive_buffer(&s, ms100, Some(131_072)), None);
        assert_eq!(batch_receive_buffer(&s, ms100, Some(65_536)), Some(125_000));
        assert_eq!(
            batch_receive_buffer(&s, Duration::from_secs(1), Some(131_072)),
            Some(687_500)
        );
    }

    #[test]
    fn urls() {
        let u = parse_rtmp_url("rtmp://127.0.0.1/live/a-1").unwrap();
        assert_eq!(u.addr.port(), 1935);
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1935/live");
        assert_eq!(u.key, "a-1");
        let u = parse_rtmp_url("rtmp://localhost:1940/app/k?x=1").unwrap();
        assert_eq!(u.addr.port(), 1940);
        assert_eq!(u.key, "k?x=1");
        assert!(parse_rtmp_url("http://x/y/z").is_err());
        assert!(parse_rtmp_url("rtmp://127.0.0.1/live").is_err());
    }

    #[test]
    fn http_urls() {
        let u = parse_http_url("http://127.0.0.1/live/a-1.flv?token=x").unwrap();
        assert_eq!(u.addr.port(), 80);
        assert_eq!(u.authority, "127.0.0.1:80");
        assert_eq!(u.target, "/live/a-1.flv?token=x");
        assert_eq!((u.app.as_str(), u.stream.as_str()), ("live", "a-1"));
        assert!(parse_http_url("http://127.0.0.1:8080/live/a-1").is_err());
        assert!(parse_http_url("http://127.0.0.1:8080/a-1.flv").is_err());
        assert!(parse_http_url("rtmp://127.0.0.1/live/a.flv").is_err());
        let rtmp = parse_rtmp_url("rtmp://127.0.0.1:1940/app/k?x=1").unwrap();
        assert_eq!(
            derived_flv_url(&rtmp, 8080),
            "http://127.0.0.1:8080/app/k.flv?x=1"
        );
    }

    #[test]
    fn protocol_and_play_urls() {
        let file: ScenarioFile =
            toml::from_str("protocol = \"ws-flv\"\nhttp_port = 8081\nstreams = 2").unwrap();
        let s = Settings::resolve(None, None, Knobs::default().over(file.knobs)).unwrap();
        assert_eq!(s.protocol, Protocol::WsFlv);
        assert_eq!(
            s.play_urls[1].to_string(),
            "ws://127.0.0.1:8081/live/load-1.flv"
        );
        assert_eq!(s.play_urls[1].stream_name(), "load-1");
        let cli = Knobs {
            protocol: Some(Protocol::HttpFlv),
            play_url: Some("http://127.0.0.1:9000/edge/s-{n}.flv".into()),
            ..Knobs::default()
        };
        let s = Settings::resolve(None, None, cli).unwrap();
        assert_eq!(
            s.play_urls[0].to_string(),
            "http://127.0.0.1:9000/edge/s-0.flv"
        );
        let no_port = Knobs {
            protocol: Some(Protocol::HttpFlv),
            ..Knobs::default()
        };
        let e = Settings::resolve(None, None, no_port).unwrap_err();
        assert!(e.contains("--http-port"), "{e}");
        let s = Settings::resolve(None, None, Knobs::default()).unwrap();
        assert_eq!(s.protocol, Protocol::Rtmp);
        assert_eq!(
            s.play_urls[0].to_string(),
            "rtmp://127.0.0.1:1935/live/load-0"
        );
    }

    #[test]
    fn command_line_wins_over_scenario() {
        let file: ScenarioFile = toml::from_str(
            "description = \"d\"\nstreams = 3\nviewers = 7\nurl = \"rtmp://127.0.0.1/live/s{n}\"",
        )
        .unwrap();
        let cli = Knobs {
            viewers: Some(2),
            ..Knobs::default()
        };
        let s = Settings::resolve(None, file.description, cli.over(file.knobs)).unwrap();
        assert_eq!(s.streams(), 3);
        assert_eq!(s.viewers_per_stream, 2);
        assert_eq!(s.publish_urls[2].key, "s2");
    }

    #[test]
    fn admin_from_scenario_and_command_line() {
        let file: ScenarioFile =
            toml::from_str("admin = \"http://127.0.0.1:1985/\"\nadmin_token = \"t\"").unwrap();
        let s = Settings::resolve(None, None, Knobs::default().over(file.knobs)).unwrap();
        let admin = s.admin.unwrap();
        assert_eq!(admin.url, "http://127.0.0.1:1985");
        assert_eq!(admin.token.as_deref(), Some("t"));
        let cli = Knobs {
            admin: Some("http://10.0.0.5:1985".into()),
            ..Knobs::default()
        };
        let file: ScenarioFile = toml::from_str("admin = \"http://127.0.0.1:1985\"").unwrap();
        let s = Settings::resolve(None, None, cli.over(file.knobs)).unwrap();
        assert_eq!(s.admin.unwrap().url, "http://10.0.0.5:1985");
        let only_token = Knobs {
            admin_token: Some("t".into()),
            ..Knobs::default()
        };
        assert!(Settings::resolve(None, None, only_token).is_err());
        let https = Knobs {
            admin: Some("https://relay:1985".into()),
            ..Knobs::default()
        };
        assert!(Settings::resolve(None, None, https).is_err());
        assert!(
            Settings::resolve(None, None, Knobs::default())
                .unwrap()
                .admin
                .is_none()
        );
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let file = load_scenario(&path).unwrap();
                Settings::resolve(None, file.description, file.knobs)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3);
    }
}
