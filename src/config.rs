//! The relay's configuration: one TOML file, read at startup and again on SIGHUP, and shared
//! read-only by every shard as an `Arc<Config>`.
//!
//! A reload (`src/net/runtime.rs`) parses and validates the file the same way; an invalid
//! file is refused and the running configuration kept. A valid one is sent to every shard,
//! which uses it for new connections and new publish/play decisions while the streams
//! already running go on; [`keys_needing_restart`] names what only a restart changes
//! (listen addresses, shard count, CPUs).
//!
//! # Shape
//!
//! The file has four parts, and each maps onto one layer of the relay:
//!
//! * `[server]` is the process: where it listens, how many shards (pinned executors) it runs,
//!   and the protocol limits every connection on every shard gets.
//! * `[viewer]` is the policy for one playing connection: how far behind a slow viewer may fall
//!   before it skips ahead to the next keyframe, and when it is cut off.
//! * `[log]` is the tracing filter.
//! * `[app.NAME]` tables are the applications, like nginx-rtmp's `application NAME { ... }`
//!   blocks: the first path segment of the RTMP URL (`rtmp://host/live/key` → `live`) selects
//!   one, and its table says how streams published under it behave.
//!
//! Every key is optional. A missing key takes the value written in `config/shardcast.toml`,
//! which [`Config::default`] mirrors exactly (a test keeps the two equal), so an empty file is a
//! working relay with one application, `live`. Listing any `[app.NAME]` replaces that default
//! `live` rather than adding to it: the applications a relay serves are the ones its file names.
//!
//! Durations are integers of milliseconds in keys ending in `_ms`. TOML has no duration type,
//! and an integer with the unit in its name cannot be misread the way `"5s"` vs `5` can.
//!
//! # Two passes: parse, then validate
//!
//! Parsing (serde + `toml`) checks only shape: known keys (every table denies unknown keys, so a
//! typo like `chunk_szie` fails instead of being silently ignored), and types. Ranges and
//! relations between keys are checked afterwards by [`Config::validate`], on plain Rust values,
//! which keeps those rules together in plain code instead of scattered across deserializers.
//!
//! # Errors name the key
//!
//! Every failure is reported as `config error at <dotted.key>: <reason>`, plus the line and file
//! when they are known. `toml` reports where in the text an error happened as a byte span but not
//! which key that was, so the document is first parsed into a spanned tree ([`DeTable`]); an
//! error's span is then looked up in that tree to recover the key's dotted path, and a
//! validation failure's dotted path is looked up the other way to recover its line.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Unexpected, Visitor};
use toml::de::{DeTable, DeValue};

pub use crate::access::network_rules::Cidr;
pub use env::{NOT_CONFIG_VARIABLES, PREFIX as ENV_PREFIX, process_environment};

mod env;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

/// The longest any duration key may be. Nothing in a live relay needs to wait a day, so a larger
/// value is almost certainly a slip of units, and the bound keeps `Instant + Duration` deadline
/// arithmetic far from overflowing.
pub const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;

/// More shards than this is a typo: each shard is a pinned thread with its own io_uring rings.
pub const MAX_SHARDS: usize = 4096;

/// The RTMP specification allows chunk sizes from 128 up to 0x7FFF_FFFF; above 0xFF_FFFF a chunk
/// is larger than any message can be (message lengths are 24-bit), so that is the useful top.
pub const CHUNK_SIZE_RANGE: RangeInclusive<u32> = 128..=0xFF_FFFF;

/// Below 1 KiB a client's `connect` command may not fit; above 64 MiB one peer could make the
/// relay hold that much memory for a single message being reassembled.
pub const MAX_MESSAGE_SIZE_RANGE: RangeInclusive<u32> = (KIB as u32)..=(64 * MIB as u32);

/// Encoders use chunk stream ids 2 to 8 (control, commands, audio, video), so fewer than 8
/// would refuse ordinary clients; ids run from 2 to 65599, so more than 65598 can never be used.
pub const MAX_CHUNK_STREAMS_RANGE: RangeInclusive<u32> = 8..=65_598;

/// glommio always reserves at least 64 KiB of io_uring buffer memory, whatever it is asked for,
/// and that memory is locked, so more than 1 GiB per shard is almost certainly a mistake.
/// `server.max_hops`: at least one relay; a tree deeper than 64 is a mistake.
pub const MAX_HOPS_RANGE: RangeInclusive<u32> = 1..=64;
/// `server.node_id` is at most this long (ids travel in every relay's `connect`).
pub const NODE_ID_MAX_LEN: usize = crate::rtmp::relay_path::MAX_NODE_ID_LEN;

pub const IO_MEMORY_RANGE: RangeInclusive<usize> = (64 * KIB)..=GIB;

/// A backlog smaller than one keyframe would make every viewer skip on every keyframe.
pub const BACKLOG_MAX_BYTES_RANGE: RangeInclusive<usize> = (64 * KIB)..=GIB;

/// A coalescing window longer than a second is latency the viewer can see.
pub const MAX_FLUSH_INTERVAL_MS: u64 = 1000;

/// Non-zero socket send buffers: the kernel enforces a minimum of about 4 KiB, and it doubles
/// the value it is given into an `int`, so it cannot go past 512 MiB.
pub const SEND_BUFFER_BYTES_RANGE: RangeInclusive<usize> = (4 * KIB)..=(512 * MIB);

/// A GOP cache smaller than one keyframe caches nothing useful; per stream, more than 1 GiB
/// is a unit mistake.
pub const GOP_CACHE_MAX_BYTES_RANGE: RangeInclusive<usize> = (64 * KIB)..=GIB;

/// The whole configuration. Build it with [`Config::load`] or [`Config::from_toml_str`], which
/// both validate; a `Config` assembled by hand should go through [`Config::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub viewer: ViewerConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    /// Applications by name, as written in `[app.NAME]`. Names match the client's RTMP `app`
    /// exactly, case included.
    #[serde(rename = "app")]
    pub apps: BTreeMap<String, AppConfig>,
}

/// `[server]`: the listening socket, the shards, and the protocol limits of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Every shard binds this address with SO_REUSEPORT, and the kernel spreads connections.
    pub listen: SocketAddr,
    pub shards: Shards,
    /// CPU ids the shards are pinned to, shard 0 first. Empty: shard `i` runs on CPU `i`.
    pub cpus: Vec<usize>,
    pub max_connections_per_shard: usize,
    /// The chunk size announced to every client with Set Chunk Size, for what we send.
    pub chunk_size: u32,
    /// The largest message a peer may send; a larger one closes the connection.
    pub max_message_size: u32,
    /// How many chunk streams a peer may have open at once.
    pub max_chunk_streams: u32,
    pub handshake_timeout_ms: u64,
    /// How long a connection may stay connected without publishing or playing.
    pub idle_connection_timeout_ms: u64,
    /// How long a graceful shutdown waits for connections to finish before closing them.
    pub shutdown_timeout_ms: u64,
    /// On SIGTERM or SIGINT, `/readyz` turns false at once and the relay keeps serving, new
    /// clients included, this long (so a load balancer takes the host out) before it stops
    /// accepting and closes its clients. A second signal ends the wait.
    pub drain_delay_ms: u64,
    /// glommio's `io_memory` for each shard's executor, in bytes.
    pub io_memory: usize,
    /// `ip:port` of the RTMPS listener (RTMP inside TLS), served by every shard like
    /// `listen`; "" turns it off.
    pub tls_listen: String,
    /// PEM file with the certificate chain (leaf first) the RTMPS listener presents.
    pub tls_cert_file: PathBuf,
    /// PEM file with that certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: PathBuf,
    /// PEM file of the CA certificates an `rtmps://` push target's certificate is checked
    /// against; empty: the system's bundle.
    pub tls_ca_file: PathBuf,
    /// Addresses (CIDRs) of load balancers whose PROXY protocol header (v1 or v2) is
    /// believed; from anyone else a connection that starts with one is refused.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections one client address may hold at once, host-wide, counted by the real
    /// address (after the PROXY header); 0 means no limit.
    pub max_connections_per_ip: usize,
    /// The `tcUrl` a `NetConnection.Connect.ReconnectRequest` sent at drain names (another
    /// host, or the same name behind a load balancer); "" sends none, and the client
    /// reconnects to the URL it used.
    pub reconnect_tc_url: String,
    /// This server's name in relay trees: pulls and pushes carry the ids of the servers
    /// they passed through (`src/rtmp/relay_path.rs`), and a connection that already passed
    /// through this id is refused as a loop. "" picks one at startup (host name and a random
    /// suffix, so two processes on one host differ).
    pub node_id: String,
    /// A pull or push that has passed through more relays than this is refused.
    pub max_hops: u32,
}

/// How many shards to run: `"auto"` or a positive integer in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shards {
    /// One shard per CPU the process may run on (or per entry of `server.cpus`, if given).
    #[default]
    Auto,
    Count(usize),
}

/// `viewer.flush_on`: which arriving messages make a stream's fan-out write to its viewers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushOn {
    /// Every message is written as soon as it arrives.
    Message,
    /// Video frames, codec headers, metadata and stream events are written as they arrive;
    /// audio and data messages of a stream that carries video wait for the next of those
    /// (at most [`crate::performance::MAX_HOLD`]), so each viewer gets one write per
    /// video frame instead of one per message.
    #[default]
    Video,
}

/// `[viewer]`: what the relay does for, and to, one playing connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewerConfig {
    /// Unsent bytes queued for one viewer before its video skips to the next keyframe.
    pub backlog_max_bytes: usize,
    /// Unsent media duration queued for one viewer before the same skip.
    pub backlog_max_ms: u64,
    /// A viewer that stays behind longer than this is disconnected.
    pub lag_disconnect_ms: u64,
    /// Write coalescing window; 0 writes as soon as data is ready.
    pub flush_interval_ms: u64,
    /// Which arrivals make the fan-out write.
    pub flush_on: FlushOn,
    pub tcp_nodelay: bool,
    /// SO_SNDBUF for viewer sockets; 0 keeps the kernel's default (and its autotuning).
    pub send_buffer_bytes: usize,
}

/// `[admin]`: the admin HTTP listener (JSON API, `/metrics`, health checks).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to serve on; an empty string turns the listener off. It is separate from
    /// the media ports and should stay on a private address.
    pub listen: String,
    /// A bearer token every call that changes something (kick, data) must carry as
    /// `Authorization: Bearer <token>`; empty means none is needed.
    pub token: String,
    /// Streams that get per-stream series on `/metrics` (the busiest first), so a host
    /// with thousands of streams does not flood its Prometheus.
    pub metrics_max_streams: usize,
}

/// `[http]`: the media HTTP listener, where browsers and players get HTTP-FLV and
/// WebSocket-FLV (`GET /{app}/{stream}.flv`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `ip:port` every shard serves on (SO_REUSEPORT, as the RTMP port); "" turns it off.
    pub listen: String,
    /// `Access-Control-Allow-Origin` of the answers: `*` or one origin
    /// (`https://player.example.com`), which WebSocket upgrades are checked against too.
    pub cors_allow_origin: String,
    /// A download of a stored file (`/vod/...`) whose peer takes no bytes this long is
    /// closed (nginx: `send_timeout`); a browser that paused asks again with a `Range`.
    pub send_timeout_ms: u64,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` env-filter directive; `RUST_LOG`, when set, wins over it.
    pub filter: String,
    pub format: LogFormat,
}

/// `log.format`: how each log event is written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers (Loki, Elasticsearch, journald exporters)
    /// that would otherwise have to parse the text layout with a regex.
    Json,
}

/// `[app.NAME]`: one application and the behaviour of the streams published under it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    /// Keep the last group of pictures so a new viewer starts at a keyframe at once.
    pub gop_cache: bool,
    pub gop_cache_max_bytes: usize,
    pub gop_cache_max_ms: u64,
    /// A publisher that sends no media this long is disconnected.
    pub publisher_idle_timeout_ms: u64,
    /// A second publisher takes a stream key over once the current one has sent nothing
    /// this long.
    pub takeover_idle_ms: u64,
    /// A second publisher always takes the stream key over at once.
    pub takeover_immediate: bool,
    /// Viewers stay connected this long after their publisher leaves, waiting for a republish.
    pub unpublish_grace_ms: u64,
    /// A viewer that arrives before any publisher waits this long; 0 refuses it at once.
    pub wait_for_publisher_ms: u64,
    pub allow_publish: bool,
    pub allow_play: bool,
    /// Directory of stored `.flv` and `.mp4` files playable by name (video on demand);
    /// empty means none. A relative path is relative to the working directory.
    pub vod_dir: PathBuf,
    /// The old name of `vod_dir`, still read (with a warning at startup) so existing
    /// configuration files keep working; `vod_dir` wins when both are set.
    pub recordings_dir: PathBuf,
    /// Recording (DVR): which live streams are written to disk.
    pub record: RecordMode,
    /// Where recordings go; every file lands under it. Required when `record` is not "off".
    pub record_dir: PathBuf,
    /// File name template under `record_dir` (see [`crate::relay::recorder::render_file_name`]).
    pub record_file: String,
    pub record_format: RecordFormat,
    /// A segment ends at the first keyframe at or after this much media; 0: no time limit.
    pub record_segment_ms: u64,
    /// A segment ends at the first keyframe at or after this many bytes; 0: no size limit.
    pub record_max_bytes: u64,
    /// Recorded media is handed to the disk at least this often (what a crash may lose).
    pub record_flush_ms: u64,
    /// URL POSTed (form-encoded, nginx-rtmp's `on_record_done`) when a file is closed; "" none.
    pub on_record_done: String,
    /// RTMP viewers that declared no Enhanced RTMP codecs (`fourCcList`) in `connect` get
    /// track 0 of each kind even when its codec is HEVC, AV1, VP9, Opus...: for players that
    /// are modern but do not declare. False sends them only what legacy FLV can carry.
    pub enhanced_to_undeclared: bool,
    /// Servers every stream published here is forwarded to (nginx-rtmp `push`, SRS
    /// `forward`): `rtmp://host[:port]/app[/name][?query]`, `{stream}` standing for the
    /// stream's name (`src/relay/forwarder.rs`).
    pub push: PushUrls,
    /// The longest wait between two attempts to reach a push target.
    pub push_backoff_max_ms: u64,
    /// Origins this application pulls a stream from when a viewer asks for one this host
    /// does not have (`rtmp://host[:port]/app`; the stream name is appended). Empty: no
    /// pulls, an edge-less application. See `src/relay/upstream_source.rs`.
    pub pull: Vec<String>,
    /// Viewers of a pulled stream wait this long for its first media, then are refused.
    pub pull_start_timeout_ms: u64,
    /// An upstream that sends no media this long (the first media included) is given up
    /// for the next origin on the ring.
    pub pull_no_input_ms: u64,
    /// The longest wait between two attempts of a failing pull (exponential, with jitter).
    pub pull_backoff_max_ms: u64,
    /// A pull nobody watches any more stops after this long.
    pub pull_linger_ms: u64,
    /// Stream names (without the application) pulled from startup and kept pulled.
    pub pull_static: Vec<String>,
    /// PEM file of the certificate authorities an `rtmps://` origin's certificate must
    /// chain to (no system roots are bundled); "" when no origin is rtmps://.
    pub pull_tls_ca_file: PathBuf,
    /// `[app.NAME.auth]`: who may publish and play (`src/access/`).
    pub auth: AuthConfig,
}

/// `app.*.push`: the URLs as written. By hand for `Debug`, so that a `key=` in a URL never
/// reaches a log through `{:?}` of a config.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PushUrls(pub Vec<String>);

impl fmt::Debug for PushUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|u| crate::access::query::redact_url(u)))
            .finish()
    }
}

/// `app.*.record`: which streams are recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// Nothing is recorded.
    #[default]
    Off,
    /// Every stream, from its publish to its unpublish.
    All,
    /// Streams the admin API starts (`POST /api/v1/streams/{id}/record`).
    Manual,
}

/// `app.*.record_format`: the container recordings are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// FLV tags as they came, with `onMetaData` duration and keyframe index on close.
    #[default]
    Flv,
    /// Fragmented MP4 (ftyp+moov, then moof+mdat fragments): playable while it grows.
    Mp4,
}

impl RecordFormat {
    /// The file name extension (`{ext}` in `record_file`).
    pub fn extension(self) -> &'static str {
        match self {
            RecordFormat::Flv => "flv",
            RecordFormat::Mp4 => "mp4",
        }
    }
}

/// `[app.NAME.auth]`: stream keys, signed links, HTTP callbacks and network rules. Every
/// part is off while empty; the parts combine (all that are on must pass).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Stream name → the key its publisher must send (`?key=`); once not empty, a name it
    /// does not list cannot be published.
    pub publish_keys: BTreeMap<String, String>,
    /// The same for playing.
    pub play_keys: BTreeMap<String, String>,
    /// The HMAC key of signed links (`?exp=&sig=`).
    pub secret: String,
    pub sign_publish: bool,
    pub sign_play: bool,
    /// nginx-rtmp-style notification URLs (`http://`); "" is off.
    pub on_connect: String,
    pub on_publish: String,
    pub on_play: String,
    pub on_publish_done: String,
    pub on_play_done: String,
    /// A callback not answered within this long refuses the client.
    pub callback_timeout_ms: u64,
    pub allow_publish: Vec<Cidr>,
    pub deny_publish: Vec<Cidr>,
    pub allow_play: Vec<Cidr>,
    pub deny_play: Vec<Cidr>,
}

/// By hand, so that the keys and the secret never reach a log through `{:?}` of a config.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |keys: &BTreeMap<String, String>| keys.keys().cloned().collect::<Vec<_>>();
        f.debug_struct("AuthConfig")
            .field("publish_keys (names)", &names(&self.publish_keys))
            .field("play_keys (names)", &names(&self.play_keys))
            .field("secret", &if self.secret.is_empty() { "" } else { "***" })
            .field("sign_publish", &self.sign_publish)
            .field("sign_play", &self.sign_play)
            .field("on_connect", &self.on_connect)
            .field("on_publish", &self.on_publish)
            .field("on_play", &self.on_play)
            .field("on_publish_done", &self.on_publish_done)
            .field("on_play_done", &self.on_play_done)
            .field("callback_timeout_ms", &self.callback_timeout_ms)
            .field("allow_publish", &self.allow_publish)
            .field("deny_publish", &self.deny_publish)
            .field("allow_play", &self.allow_play)
            .field("deny_play", &self.deny_play)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            publish_keys: BTreeMap::new(),
            play_keys: BTreeMap::new(),
            secret: String::new(),
            sign_publish: false,
            sign_play: false,
            on_connect: String::new(),
            on_publish: String::new(),
            on_play: String::new(),
            on_publish_done: String::new(),
            on_play_done: String::new(),
            callback_timeout_ms: 5_000,
            allow_publish: Vec::new(),
            deny_publish: Vec::new(),
            allow_play: Vec::new(),
            deny_play: Vec::new(),
        }
    }
}

impl AuthConfig {
    pub fn callback_timeout(&self) -> Duration {
        Duration::from_millis(self.callback_timeout_ms)
    }

    fn check(&self, app: &str) -> Result<(), Problem> {
        let key = |field: &str| KeyPath::of(&["app", app, "auth", field]);
        for (field, table) in [
            ("publish_keys", &self.publish_keys),
            ("play_keys", &self.play_keys),
        ] {
            for (name, value) in table {
                if name.is_empty() || name.contains(['/', '?']) {
                    return Err(Problem::new(
                        KeyPath::of(&["app", app, "auth", field, name]),
                        "a stream name must not be empty nor contain '/' or '?'",
                    ));
                }
                if value.is_empty() {
                    return Err(Problem::new(
                        KeyPath::of(&["app", app, "auth", field, name]),
                        "a key must not be empty (leave the name out to need no key)",
                    ));
                }
            }
        }
        if (self.sign_publish || self.sign_play) && self.secret.len() < 16 {
            return Err(Problem::new(
                key("secret"),
                "sign_publish and sign_play need a secret of at least 16 characters",
            ));
        }
        for (field, url) in [
            ("on_connect", &self.on_connect),
            ("on_publish", &self.on_publish),
            ("on_play", &self.on_play),
            ("on_publish_done", &self.on_publish_done),
            ("on_play_done", &self.on_play_done),
        ] {
            if !url.is_empty() {
                crate::access::callback::check_url(url)
                    .map_err(|reason| Problem::new(key(field), reason))?;
            }
        }
        check_range(
            key("callback_timeout_ms"),
            self.callback_timeout_ms,
            1..=60_000,
            " ms (at most a minute: a client waits that long)",
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            viewer: ViewerConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            apps: BTreeMap::from([("live".to_owned(), AppConfig::default())]),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 1935)),
            shards: Shards::Auto,
            cpus: Vec::new(),
            max_connections_per_shard: 10_000,
            chunk_size: 4096,
            max_message_size: 8 * MIB as u32,
            max_chunk_streams: 64,
            handshake_timeout_ms: 5_000,
            idle_connection_timeout_ms: 30_000,
            shutdown_timeout_ms: 3_000,
            drain_delay_ms: 500,
            io_memory: 64 * KIB,
            tls_listen: String::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            trusted_proxies: Vec::new(),
            max_connections_per_ip: 0,
            reconnect_tc_url: String::new(),
            node_id: String::new(),
            max_hops: 8,
        }
    }
}

impl Default for ViewerConfig {
    fn default() -> Self {
        ViewerConfig {
            backlog_max_bytes: 4 * MIB,
            backlog_max_ms: 3_000,
            lag_disconnect_ms: 10_000,
            flush_interval_ms: 0,
            flush_on: FlushOn::Video,
            tcp_nodelay: false,
            send_buffer_bytes: 0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".to_owned(),
            cors_allow_origin: "*".to_owned(),
            send_timeout_ms: 60_000,
        }
    }
}

impl HttpConfig {
    /// The address to serve on, or None when the listener is off.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.trim().parse().ok()
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    fn check(&self) -> Result<(), Problem> {
        check_timeout(
            KeyPath::of(&["http", "send_timeout_ms"]),
            self.send_timeout_ms,
        )?;
        let listen = self.listen.trim();
        if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
            return Err(Problem::new(
                KeyPath::of(&["http", "listen"]),
                format!(
                    "{listen:?} is not an ip:port address (e.g. \"0.0.0.0:8080\"); use \"\" to turn the HTTP listener off"
                ),
            ));
        }
        if !crate::http::response::Cors::valid_origin(&self.cors_allow_origin) {
            return Err(Problem::new(
                KeyPath::of(&["http", "cors_allow_origin"]),
                "must be \"*\" or one origin such as \"https://player.example.com\"",
            ));
        }
        Ok(())
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:1985".to_owned(),
            token: String::new(),
            metrics_max_streams: 1000,
        }
    }
}

impl AdminConfig {
    /// The address to serve on, or None when the listener is off.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.trim().parse().ok()
    }

    /// The token, when one is required.
    pub fn token(&self) -> Option<&str> {
        Some(self.token.as_str()).filter(|t| !t.is_empty())
    }

    fn check(&self) -> Result<(), Problem> {
        let listen = self.listen.trim();
        if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
            return Err(Problem::new(
                KeyPath::of(&["admin", "listen"]),
                format!(
                    "{listen:?} is not an ip:port address (e.g. \"127.0.0.1:1985\"); use \"\" to turn the admin listener off"
                ),
            ));
        }
        if self
            .token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Problem::new(
                KeyPath::of(&["admin", "token"]),
                "must not contain spaces or control characters",
            ));
        }
        Ok(())
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            gop_cache: true,
            gop_cache_max_bytes: 16 * MIB,
            gop_cache_max_ms: 10_000,
            publisher_idle_timeout_ms: 10_000,
            takeover_idle_ms: 3_000,
            takeover_immediate: false,
            unpublish_grace_ms: 5_000,
            wait_for_publisher_ms: 30_000,
            allow_publish: true,
            allow_play: true,
            vod_dir: PathBuf::new(),
            recordings_dir: PathBuf::new(),
            enhanced_to_undeclared: false,
            push: PushUrls::default(),
            push_backoff_max_ms: 10_000,
            record: RecordMode::Off,
            record_dir: PathBuf::new(),
            record_file: "{app}/{stream}-{time}.{ext}".to_owned(),
            record_format: RecordFormat::Flv,
            record_segment_ms: 0,
            record_max_bytes: 0,
            record_flush_ms: 1000,
            on_record_done: String::new(),
            pull: Vec::new(),
            pull_start_timeout_ms: 10_000,
            pull_no_input_ms: 3_000,
            pull_backoff_max_ms: 10_000,
            pull_linger_ms: 10_000,
            pull_static: Vec::new(),
            pull_tls_ca_file: PathBuf::new(),
            auth: AuthConfig::default(),
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`. Errors carry the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|error| error.in_file(path))
    }

    /// [`Config::load`], with the `SHARDCAST_*` variables of `environment` overriding the
    /// file's keys (see `src/config/env.rs`); the binary passes [`process_environment`].
    pub fn load_with_env<K, V>(
        path: &Path,
        environment: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Config, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str_with_env(&text, environment).map_err(|error| error.in_file(path))
    }

    /// Parses and validates a configuration held in memory.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &env::Overrides::none())
    }

    /// [`Config::from_toml_str`], with the `SHARDCAST_*` variables of `environment` applied
    /// to the parsed document before it is deserialized, so their values go through the same
    /// checks as the file's and an error names the variable. Other variables are ignored.
    pub fn from_toml_str_with_env<K, V>(
        text: &str,
        environment: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Config, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let variables = env::config_variables(environment);
        Config::parse(text, &env::Overrides::new(text.len(), variables))
    }

    fn parse(text: &str, overrides: &env::Overrides) -> Result<Config, ConfigError> {
        // The recoverable parse still returns a tree when the text has errors, so even a
        // duplicate `[app.live]` table can be reported by its key.
        let (document, syntax_errors) = DeTable::parse_recoverable(text);
        if let Some(error) = syntax_errors.first() {
            return Err(locate_toml_error(text, document.get_ref(), error));
        }
        // The overrides' values get spans past the end of the text, one region per variable,
        // so an error located in one of them is reported against the variable.
        let mut document = document;
        overrides.apply(document.get_mut())?;
        let deserializer = toml::de::Deserializer::from(document.clone());
        let config = Config::deserialize(deserializer).map_err(|error| {
            let offset = error.span().map(|span| span.start);
            overrides.attribute(locate_toml_error(text, document.get_ref(), &error), offset)
        })?;
        config.check().map_err(|problem| {
            let span = span_of_key(document.get_ref(), &problem.key);
            match span {
                Some(span) if overrides.owns(span.start) => {
                    overrides.attribute(problem.into_error(None), Some(span.start))
                }
                span => problem.into_error(span.map(|span| line_of(text, span.start))),
            }
        })?;
        Ok(config)
    }

    /// Checks ranges and the relations between keys. Loading already does this; it is public
    /// for configurations built or modified in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|problem| problem.into_error(None))
    }

    /// No two listeners share a port on overlapping addresses: every shard binds the
    /// RTMP, RTMPS and HTTP ports with SO_REUSEPORT, so two of them on one port would not
    /// fail to bind but split the connections between two protocols.
    fn check_listeners_apart(&self) -> Result<(), Problem> {
        let listeners = [
            (&["server", "listen"][..], Some(self.server.listen)),
            (&["server", "tls_listen"][..], self.server.tls_listen_addr()),
            (&["http", "listen"][..], self.http.listen_addr()),
            (&["admin", "listen"][..], self.admin.listen_addr()),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            for (other_key, other) in &listeners[..i] {
                let Some(other) = other else { continue };
                let overlap = addr.ip() == other.ip()
                    || addr.ip().is_unspecified()
                    || other.ip().is_unspecified();
                if addr.port() != 0 && addr.port() == other.port() && overlap {
                    return Err(Problem::new(
                        KeyPath::of(key),
                        format!(
                            "{addr} shares its port with {} = {other}; each listener needs its own port",
                            KeyPath::of(other_key)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The application named by a client's RTMP `app`, if the relay serves it.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.get(name)
    }

    fn check(&self) -> Result<(), Problem> {
        self.server.check()?;
        self.viewer.check()?;
        self.log.check()?;
        self.admin.check()?;
        self.http.check()?;
        self.check_listeners_apart()?;
        if self.apps.is_empty() {
            return Err(Problem::new(
                KeyPath::of(&["app"]),
                "at least one application is required, e.g. [app.live]",
            ));
        }
        for (name, app) in &self.apps {
            check_app_name(name)?;
            app.check(name)?;
        }
        Ok(())
    }
}

impl ServerConfig {
    /// How many shards to start on a machine where the process may use `available_cpus` CPUs.
    pub fn shard_count(&self, available_cpus: usize) -> usize {
        match self.shards {
            Shards::Count(count) => count,
            Shards::Auto if !self.cpus.is_empty() => self.cpus.len(),
            Shards::Auto => available_cpus.max(1),
        }
    }

    /// The CPU shard number `shard` is pinned to.
    pub fn cpu_for_shard(&self, shard: usize) -> usize {
        self.cpus.get(shard).copied().unwrap_or(shard)
    }

    /// The CPU shard number `shard` is pinned to when the process may run only on `allowed`
    /// (its affinity, in order: `taskset`, a container's cpuset): with `cpus` empty, the
    /// shard-th of them (round again past the end), which on an unrestricted host is CPU
    /// `shard` as before. A container with exclusive cores (Kubernetes' static CPU manager,
    /// `docker run --cpuset-cpus`) gets CPUs such as 4-7, where pinning to 0-3 would fail or
    /// pile every pod of a node onto the same cores.
    pub fn cpu_for_shard_among(&self, shard: usize, allowed: &[usize]) -> usize {
        match self.cpus.get(shard) {
            Some(cpu) => *cpu,
            None if allowed.is_empty() => shard,
            None => allowed[shard % allowed.len()],
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn idle_connection_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_connection_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    /// The RTMPS listener's address, or None when `tls_listen` is empty.
    pub fn tls_listen_addr(&self) -> Option<SocketAddr> {
        self.tls_listen.parse().ok()
    }

    /// Whether a PROXY protocol header from `peer` is believed.
    pub fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    fn check(&self) -> Result<(), Problem> {
        let key = |name: &str| KeyPath::of(&["server", name]);
        if let Shards::Count(count) = self.shards {
            check_range(key("shards"), count, 1..=MAX_SHARDS, "")?;
        }
        self.check_cpus()?;
        check_range(
            key("max_connections_per_shard"),
            self.max_connections_per_shard,
            1..=usize::MAX,
            "",
        )?;
        check_range(
            key("chunk_size"),
            self.chunk_size,
            CHUNK_SIZE_RANGE,
            " (RTMP allows 128 and up; past 16 MiB a chunk outgrows any message)",
        )?;
        check_range(
            key("max_message_size"),
            self.max_message_size,
            MAX_MESSAGE_SIZE_RANGE,
            " (1 KiB to 64 MiB)",
        )?;
        check_range(
            key("max_chunk_streams"),
            self.max_chunk_streams,
            MAX_CHUNK_STREAMS_RANGE,
            " (encoders use chunk streams 2 to 8; ids end at 65599)",
        )?;
        check_timeout(key("handshake_timeout_ms"), self.handshake_timeout_ms)?;
        check_timeout(
            key("idle_connection_timeout_ms"),
            self.idle_connection_timeout_ms,
        )?;
        check_timeout(key("shutdown_timeout_ms"), self.shutdown_timeout_ms)?;
        check_range(
            key("drain_delay_ms"),
            self.drain_delay_ms,
            0..=MAX_DURATION_MS,
            " ms",
        )?;
        check_range(
            key("io_memory"),
            self.io_memory,
            IO_MEMORY_RANGE,
            " (glommio reserves at least 64 KiB anyway)",
        )?;
        if !self.tls_listen.is_empty() {
            if self.tls_listen_addr().is_none() {
                return Err(Problem::new(
                    key("tls_listen"),
                    format!(
                        "expected ip:port (e.g. \"0.0.0.0:1936\") or \"\", got {:?}",
                        self.tls_listen
                    ),
                ));
            }
            for (name, path) in [
                ("tls_cert_file", &self.tls_cert_file),
                ("tls_key_file", &self.tls_key_file),
            ] {
                if path.as_os_str().is_empty() {
                    return Err(Problem::new(
                        key(name),
                        "is required when server.tls_listen is set",
                    ));
                }
            }
        }
        check_range(
            key("max_hops"),
            self.max_hops,
            MAX_HOPS_RANGE,
            " (relays a pull or push may pass through)",
        )?;
        if self.node_id.len() > NODE_ID_MAX_LEN
            || self
                .node_id
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            return Err(Problem::new(
                key("node_id"),
                format!(
                    "must be at most {NODE_ID_MAX_LEN} letters, digits, '-', '_', '.' or ':', or \"\" for a random one"
                ),
            ));
        }
        let url = &self.reconnect_tc_url;
        if !(url.is_empty() || url.starts_with("rtmp://") || url.starts_with("rtmps://")) {
            return Err(Problem::new(
                key("reconnect_tc_url"),
                "must be an rtmp:// or rtmps:// URL, or \"\"",
            ));
        }
        Ok(())
    }

    fn check_cpus(&self) -> Result<(), Problem> {
        // A CPU listed twice is allowed (the shards take turns on it, which is how the fan-out
        // benchmark measures the cost of crossing shards without a third core); the server
        // warns about it at startup.
        if self.cpus.len() > MAX_SHARDS {
            return Err(Problem::new(
                KeyPath::of(&["server", "cpus"]),
                format!(
                    "lists {} CPUs, more than {MAX_SHARDS} shards",
                    self.cpus.len()
                ),
            ));
        }
        match self.shards {
            Shards::Count(count) if !self.cpus.is_empty() && self.cpus.len() != count => {
                Err(Problem::new(
                    KeyPath::of(&["server", "cpus"]),
                    format!(
                        "lists {} CPUs but server.shards is {count}; \
                         list one CPU per shard, or set shards = \"auto\"",
                        self.cpus.len()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The dotted keys whose change between `old` and `new` takes effect only after a restart
/// (what a SIGHUP reload cannot change under running sockets and executors).
pub fn keys_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    differs("server.listen", a.listen != b.listen);
    differs("server.shards", a.shards != b.shards);
    differs("server.cpus", a.cpus != b.cpus);
    differs("server.io_memory", a.io_memory != b.io_memory);
    differs("server.tls_listen", a.tls_listen != b.tls_listen);
    differs("server.node_id", a.node_id != b.node_id);
    differs("http.listen", old.http.listen != new.http.listen);
    differs("admin.listen", old.admin.listen != new.admin.listen);
    differs("log.filter", old.log.filter != new.log.filter);
    differs("log.format", old.log.format != new.log.format);
    keys
}

impl ServerConfig {
    /// Fills an empty `node_id` with the host name and a random suffix. Called once at
    /// startup; a reload keeps the id in force (see `keep_node_id`).
    pub fn pick_node_id(&mut self) {
        if !self.node_id.is_empty() {
            return;
        }
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS's randomness per process, which is all a
        // suffix needs; no crate for it.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let suffix = hasher.finish() as u32;
        let host: String = host_name()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .take(NODE_ID_MAX_LEN - 9)
            .collect();
        self.node_id = if host.is_empty() {
            format!("{suffix:08x}")
        } else {
            format!("{host}-{suffix:08x}")
        };
    }

    /// A reloaded file that leaves `node_id` empty keeps the id picked at startup.
    pub fn keep_node_id(&mut self, running: &ServerConfig) {
        if self.node_id.is_empty() {
            self.node_id = running.node_id.clone();
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

impl ViewerConfig {
    pub fn backlog_max_duration(&self) -> Duration {
        Duration::from_millis(self.backlog_max_ms)
    }

    pub fn lag_disconnect(&self) -> Duration {
        Duration::from_millis(self.lag_disconnect_ms)
    }

    /// The write coalescing window, or `None` to write as soon as data is ready.
    pub fn flush_interval(&self) -> Option<Duration> {
        (self.flush_interval_ms > 0).then(|| Duration::from_millis(self.flush_interval_ms))
    }

    /// The SO_SNDBUF to set, or `None` to leave the kernel's default and autotuning alone.
    pub fn send_buffer(&self) -> Option<usize> {
        (self.send_buffer_bytes > 0).then_some(self.send_buffer_bytes)
    }

    fn check(&self) -> Result<(), Problem> {
        let key = |name: &str| KeyPath::of(&["viewer", name]);
        check_range(
            key("backlog_max_bytes"),
            self.backlog_max_bytes,
            BACKLOG_MAX_BYTES_RANGE,
            " (less than a keyframe would make every viewer skip)",
        )?;
        check_timeout(key("backlog_max_ms"), self.backlog_max_ms)?;
        check_timeout(key("lag_disconnect_ms"), self.lag_disconnect_ms)?;
        if self.lag_disconnect_ms < self.backlog_max_ms {
            return Err(Problem::new(
                key("lag_disconnect_ms"),
                format!(
                    "{} is less than viewer.backlog_max_ms ({}): viewers would be \
                     disconnected before they could skip ahead",
                    self.lag_disconnect_ms, self.backlog_max_ms
                ),
            ));
        }
        check_range(
            key("flush_interval_ms"),
            self.flush_interval_ms,
            0..=MAX_FLUSH_INTERVAL_MS,
            " (a longer window is latency viewers can see)",
        )?;
        if self.send_buffer_bytes != 0 {
            check_range(
                key("send_buffer_bytes"),
                self.send_buffer_bytes,
                SEND_BUFFER_BYTES_RANGE,
                " or 0 for the kernel default",
            )?;
        }
        Ok(())
    }
}

impl LogConfig {
    fn check(&self) -> Result<(), Problem> {
        if self.filter.trim().is_empty() {
            return Err(Problem::new(
                KeyPath::of(&["log", "filter"]),
                "must not be empty; use \"off\" to silence logging",
            ));
        }
        Ok(())
    }
}

impl AppConfig {
    pub fn gop_cache_max_duration(&self) -> Duration {
        Duration::from_millis(self.gop_cache_max_ms)
    }

    pub fn publisher_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.publisher_idle_timeout_ms)
    }

    pub fn takeover_idle(&self) -> Duration {
        Duration::from_millis(self.takeover_idle_ms)
    }

    pub fn unpublish_grace(&self) -> Duration {
        Duration::from_millis(self.unpublish_grace_ms)
    }

    /// How long an early viewer waits for a publisher; zero refuses it at once.
    pub fn wait_for_publisher(&self) -> Duration {
        Duration::from_millis(self.wait_for_publisher_ms)
    }

    /// How long a viewer waits for its stream's source: the first media of a pull in an
    /// application that pulls, a publisher otherwise.
    pub fn wait_for_source(&self) -> Duration {
        if self.pulls() {
            Duration::from_millis(self.pull_start_timeout_ms)
        } else {
            self.wait_for_publisher()
        }
    }

    /// The directory stored files are played from, if the application has one.
    pub fn vod_dir(&self) -> Option<&Path> {
        [&self.vod_dir, &self.recordings_dir]
            .into_iter()
            .find(|d| !d.as_os_str().is_empty())
            .map(PathBuf::as_path)
    }

    /// Whether the application sets the deprecated `recordings_dir` (warned about at startup).
    pub fn uses_deprecated_recordings_dir(&self) -> bool {
        !self.recordings_dir.as_os_str().is_empty()
    }

    fn check(&self, name: &str) -> Result<(), Problem> {
        let key = |field: &str| KeyPath::of(&["app", name, field]);
        check_range(
            key("gop_cache_max_bytes"),
            self.gop_cache_max_bytes,
            GOP_CACHE_MAX_BYTES_RANGE,
            " (64 KiB to 1 GiB)",
        )?;
        check_timeout(key("gop_cache_max_ms"), self.gop_cache_max_ms)?;
        check_timeout(
            key("publisher_idle_timeout_ms"),
            self.publisher_idle_timeout_ms,
        )?;
        check_timeout(key("takeover_idle_ms"), self.takeover_idle_ms)?;
        check_range(
            key("unpublish_grace_ms"),
            self.unpublish_grace_ms,
            0..=MAX_DURATION_MS,
            " ms",
        )?;
        check_range(
            key("wait_for_publisher_ms"),
            self.wait_for_publisher_ms,
            0..=MAX_DURATION_MS,
            " ms",
        )?;
        if self.push.0.len() > crate::relay::forwarder::MAX_TARGETS {
            return Err(Problem::new(
                key("push"),
                format!(
                    "at most {} push targets per application",
                    crate::relay::forwarder::MAX_TARGETS
                ),
            ));
        }
        for url in &self.push.0 {
            crate::relay::forwarder::PushTarget::parse(url)
                .map_err(|reason| Problem::new(key("push"), reason))?;
        }
        check_range(
            key("push_backoff_max_ms"),
            self.push_backoff_max_ms,
            100..=600_000,
            " ms (100 ms to 10 minutes)",
        )?;
        self.check_record(name)?;
        self.check_pull(name)?;
        self.auth.check(name)
    }

    fn check_pull(&self, name: &str) -> Result<(), Problem> {
        let key = |field: &str| KeyPath::of(&["app", name, field]);
        for url in &self.pull {
            match crate::relay::upstream_source::UpstreamUrl::parse(url) {
                Err(why) => return Err(Problem::new(key("pull"), format!("{url:?}: {why}"))),
                Ok(u) if u.tls && self.pull_tls_ca_file.as_os_str().is_empty() => {
                    return Err(Problem::new(
                        key("pull_tls_ca_file"),
                        format!(
                            "{url:?} is rtmps://: name the PEM file of the authorities its certificate chains to"
                        ),
                    ));
                }
                Ok(_) => {}
            }
        }
        check_timeout(key("pull_start_timeout_ms"), self.pull_start_timeout_ms)?;
        check_timeout(key("pull_no_input_ms"), self.pull_no_input_ms)?;
        check_timeout(key("pull_backoff_max_ms"), self.pull_backoff_max_ms)?;
        check_range(
            key("pull_linger_ms"),
            self.pull_linger_ms,
            0..=MAX_DURATION_MS,
            " ms",
        )?;
        if !self.pull_static.is_empty() && self.pull.is_empty() {
            return Err(Problem::new(
                key("pull_static"),
                "names streams to pull, but pull lists no origin",
            ));
        }
        if let Some(bad) = self
            .pull_static
            .iter()
            .find(|n| n.is_empty() || n.contains(['/', '?', ' ']))
        {
            return Err(Problem::new(
                key("pull_static"),
                format!("{bad:?} is not a stream name (no '/', '?' or spaces)"),
            ));
        }
        Ok(())
    }

    /// Whether the application pulls streams it does not have from origins.
    pub fn pulls(&self) -> bool {
        !self.pull.is_empty()
    }

    fn check_record(&self, name: &str) -> Result<(), Problem> {
        let key = |field: &str| KeyPath::of(&["app", name, field]);
        check_range(
            key("record_segment_ms"),
            self.record_segment_ms,
            0..=MAX_DURATION_MS,
            " ms",
        )?;
        check_range(
            key("record_flush_ms"),
            self.record_flush_ms,
            1..=60_000,
            " ms",
        )?;
        if self.record != RecordMode::Off && self.record_dir.as_os_str().is_empty() {
            return Err(Problem::new(
                key("record_dir"),
                "recording is on (record is not \"off\"): record_dir must name a directory",
            ));
        }
        let template = Path::new(&self.record_file);
        let escapes = template.is_absolute()
            || template
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if self.record_file.trim().is_empty() || escapes {
            return Err(Problem::new(
                key("record_file"),
                "must be a relative path under record_dir without '.' or '..' parts, e.g. \"{app}/{stream}-{time}.{ext}\"",
            ));
        }
        if !(self.on_record_done.is_empty()
            || self.on_record_done.starts_with("http://")
            || self.on_record_done.starts_with("https://"))
        {
            return Err(Problem::new(
                key("on_record_done"),
                "must be an http:// or https:// URL, or \"\" for none",
            ));
        }
        Ok(())
    }

    /// How often recorded media is handed to the disk.
    pub fn record_flush(&self) -> Duration {
        Duration::from_millis(self.record_flush_ms)
    }
}

/// An application name is what a client puts between the host and the stream key, so it must
/// be something a URL path segment can carry and a client can actually send.
fn check_app_name(name: &str) -> Result<(), Problem> {
    let reason = if name.is_empty() {
        "an application name must not be empty"
    } else if name.contains('/') {
        "an application name cannot contain '/': the first '/' after it starts the stream key"
    } else if name.contains('?') {
        "an application name cannot contain '?': clients' query strings are cut off at it"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "an application name cannot contain spaces or control characters"
    } else {
        return Ok(());
    };
    Err(Problem::new(KeyPath::of(&["app", name]), reason))
}

fn check_timeout(key: KeyPath, millis: u64) -> Result<(), Problem> {
    check_range(key, millis, 1..=MAX_DURATION_MS, " ms")
}

/// `note` follows the range in the message: a unit, or why the range is what it is.
fn check_range<T>(
    key: KeyPath,
    value: T,
    range: RangeInclusive<T>,
    note: &str,
) -> Result<(), Problem>
where
    T: PartialOrd + fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    let (low, high) = range.into_inner();
    Err(Problem::new(
        key,
        format!("must be between {low} and {high}{note}, got {value}"),
    ))
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShardsVisitor)
    }
}

struct ShardsVisitor;

impl Visitor<'_> for ShardsVisitor {
    type Value = Shards;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("\"auto\" or a positive integer")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Shards, E> {
        // A number in a string too: an environment variable has no types
        // (`SHARDCAST_SERVER_SHARDS=4`).
        match text {
            "auto" => Ok(Shards::Auto),
            _ => match text.parse::<u64>() {
                Ok(count) => self.visit_u64(count),
                Err(_) => Err(E::invalid_value(Unexpected::Str(text), &self)),
            },
        }
    }

    // Zero parses, so that validation can say "must be between 1 and ..." like other ranges.
    fn visit_i64<E: de::Error>(self, count: i64) -> Result<Shards, E> {
        usize::try_from(count)
            .map(Shards::Count)
            .map_err(|_| E::invalid_value(Unexpected::Signed(count), &self))
    }

    fn visit_u64<E: de::Error>(self, count: u64) -> Result<Shards, E> {
        usize::try_from(count)
            .map(Shards::Count)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(count), &self))
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not TOML, or a key is unknown, of the wrong type, or out of range.
    Invalid {
        /// The dotted path of the offending key, e.g. `app.live.gop_cache_max_bytes`. `None`
        /// only for TOML syntax errors that do not fall on a key.
        key: Option<String>,
        reason: String,
        /// 1-based line in the text, when the key or error is in the text at all.
        line: Option<usize>,
        /// The file the text came from, when loaded with [`Config::load`].
        file: Option<PathBuf>,
        /// The environment variable the faulty value came from (`SHARDCAST_SERVER_LISTEN`),
        /// when it came from one rather than from the file.
        variable: Option<String>,
    },
}

impl ConfigError {
    /// The dotted path of the key at fault, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }

    /// The environment variable at fault, if the value came from one.
    pub fn variable(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { variable, .. } => variable.as_deref(),
            ConfigError::Read { .. } => None,
        }
    }

    /// The 1-based line of the fault, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::Read { .. } => None,
        }
    }

    fn in_file(self, path: &Path) -> ConfigError {
        match self {
            // A fault in an environment variable is not in the file.
            invalid @ ConfigError::Invalid {
                variable: Some(_), ..
            } => invalid,
            ConfigError::Invalid {
                key, reason, line, ..
            } => ConfigError::Invalid {
                key,
                reason,
                line,
                file: Some(path.to_owned()),
                variable: None,
            },
            read @ ConfigError::Read { .. } => read,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            ConfigError::Invalid {
                key,
                reason,
                variable: Some(variable),
                ..
            } => match key {
                Some(key) => write!(f, "config error in {variable} ({key}): {reason}"),
                None => write!(f, "config error in {variable}: {reason}"),
            },
            ConfigError::Invalid {
                key,
                reason,
                line,
                file,
                variable: None,
            } => {
                match (key, line) {
                    (Some(key), _) => write!(f, "config error at {key}: {reason}")?,
                    (None, Some(line)) => write!(f, "config error at line {line}: {reason}")?,
                    (None, None) => write!(f, "config error: {reason}")?,
                }
                // When the key stands in front, the line still helps find it in a long file.
                let line = line.filter(|_| key.is_some());
                match (file, line) {
                    (Some(file), Some(line)) => write!(f, " ({}, line {line})", file.display()),
                    (Some(file), None) => write!(f, " ({})", file.display()),
                    (None, Some(line)) => write!(f, " (line {line})"),
                    (None, None) => Ok(()),
                }
            }
        }
    }
}

/// A validation failure before it is placed in the text.
struct Problem {
    key: KeyPath,
    reason: String,
}

impl Problem {
    fn new(key: KeyPath, reason: impl Into<String>) -> Problem {
        Problem {
            key,
            reason: reason.into(),
        }
    }

    fn into_error(self, line: Option<usize>) -> ConfigError {
        ConfigError::Invalid {
            key: Some(self.key.to_string()),
            reason: self.reason,
            line,
            file: None,
            variable: None,
        }
    }
}

/// A path from the document root to a value: table keys and array indices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct KeyPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    fn of(keys: &[&str]) -> KeyPath {
        KeyPath(
            keys.iter()
                .map(|key| Segment::Key((*key).to_owned()))
                .collect(),
        )
    }
}

/// Written the way TOML would accept it back: `app."live/hd".gop_cache`, `server.cpus[1]`.
impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn locate_toml_error(text: &str, document: &DeTable<'_>, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map(|span| span.start);
    let key = offset.and_then(|offset| {
        let mut path = KeyPath::default();
        let found = path_at_offset(document, offset, Covering::Key, &mut path)
            || path_at_offset(document, offset, Covering::Value, &mut path)
            || duplicate_key_path(text, document, error, &mut path);
        found.then(|| path.to_string())
    });
    ConfigError::Invalid {
        key,
        reason: reword_toml_message(error.message()),
        line: offset.map(|offset| line_of(text, offset)),
        file: None,
        variable: None,
    }
}

/// serde speaks of struct fields and Rust types; the person editing the file is looking at
/// TOML keys and numbers.
fn reword_toml_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field") {
        return format!("unknown key{rest}");
    }
    // A word-valued key (`log.format`, `viewer.flush_on`): quoted the way the file writes
    // strings, and in the "must be ..., got ..." shape of the range errors.
    if let Some(rest) = message.strip_prefix("unknown variant ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        let quote = |text: &str| text.replace('`', "\"");
        return format!("must be {}, got {}", quote(expected), quote(got));
    }
    // toml's wording when a word-valued key is given a number or a boolean.
    if message == "wanted string or table" {
        return "must be a quoted string".to_owned();
    }
    if message == "duplicate key" {
        return "defined more than once; TOML allows each key and [table] only once".to_owned();
    }
    let numbers = [
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number, 0 or more"),
        ("usize", "a whole number, 0 or more"),
    ];
    for (rust_type, plainly) in numbers {
        if let Some(start) = message.strip_suffix(rust_type) {
            return format!("{start}{plainly}");
        }
    }
    message.to_owned()
}

/// Which span of an entry an error offset is matched against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Covering {
    /// Key spans never overlap one another, so a hit is exact; tried first.
    Key,
    /// Value spans nest (an inline table holds its values, and a `[header]` table's span is
    /// the whole header, parents' names included), so the deepest hit is the one meant.
    Value,
}

/// Finds the entry whose key or value (per `covering`) holds `offset`, leaving its path in
/// `path`.
fn path_at_offset(
    table: &DeTable<'_>,
    offset: usize,
    covering: Covering,
    path: &mut KeyPath,
) -> bool {
    for (key, value) in table.iter() {
        path.0.push(Segment::Key(key.get_ref().to_string()));
        let found = match covering {
            Covering::Key => {
                covers(key.span(), offset)
                    || value_path_at_offset(value.get_ref(), offset, covering, path)
            }
            Covering::Value => {
                value_path_at_offset(value.get_ref(), offset, covering, path)
                    || covers(value.span(), offset)
            }
        };
        if found {
            return true;
        }
        path.0.pop();
    }
    false
}

fn value_path_at_offset(
    value: &DeValue<'_>,
    offset: usize,
    covering: Covering,
    path: &mut KeyPath,
) -> bool {
    match value {
        DeValue::Table(table) => path_at_offset(table, offset, covering, path),
        DeValue::Array(items) => {
            for (index, item) in items.into_iter().enumerate() {
                path.0.push(Segment::Index(index));
                if value_path_at_offset(item.get_ref(), offset, covering, path)
                    || (covering == Covering::Value && covers(item.span(), offset))
                {
                    return true;
                }
                path.0.pop();
            }
            false
        }
        _ => false,
    }
}

/// A repeated key is not in the tree (the tree keeps the first one), so it is placed by its
/// neighbours instead: it belongs to the same table as the entry that ends last before it.
fn duplicate_key_path(
    text: &str,
    document: &DeTable<'_>,
    error: &toml::de::Error,
    path: &mut KeyPath,
) -> bool {
    let Some(span) = error
        .span()
        .filter(|_| error.message().starts_with("duplicate key"))
    else {
        return false;
    };
    let mut best: Option<(usize, KeyPath)> = None;
    let mut parent = KeyPath::default();
    last_entry_before(document, span.start, &mut parent, &mut best);
    let Some((_, table)) = best else {
        return false;
    };
    let written = text.get(span).unwrap_or_default().trim_matches(['"', '\'']);
    *path = table;
    path.0.push(Segment::Key(written.to_owned()));
    true
}

/// Leaves in `best` the table path of the entry whose value ends last before `offset`; the
/// outermost wins a tie, so an inline table beats the keys inside it.
fn last_entry_before(
    table: &DeTable<'_>,
    offset: usize,
    parent: &mut KeyPath,
    best: &mut Option<(usize, KeyPath)>,
) {
    for (key, value) in table.iter() {
        let end = value.span().end;
        if end <= offset && best.as_ref().is_none_or(|(best_end, _)| end > *best_end) {
            *best = Some((end, parent.clone()));
        }
        if let DeValue::Table(inner) = value.get_ref() {
            parent.0.push(Segment::Key(key.get_ref().to_string()));
            last_entry_before(inner, offset, parent, best);
            parent.0.pop();
        }
    }
}

/// Where `path` is written in the document: the span of its last key (or array element).
/// `None` when the value came from a default rather than from the text.
fn span_of_key(document: &DeTable<'_>, path: &KeyPath) -> Option<Range<usize>> {
    let mut segments = path.0.iter();
    let Some(Segment::Key(first)) = segments.next() else {
        return None;
    };
    let (mut span, mut value) = find_key(document, first)?;
    for segment in segments {
        let (next_span, next_value) = match (segment, value) {
            (Segment::Key(key), DeValue::Table(table)) => find_key(table, key)?,
            (Segment::Index(index), DeValue::Array(items)) => {
                let item = items.into_iter().nth(*index)?;
                (item.span(), item.get_ref())
            }
            _ => return None,
        };
        span = next_span;
        value = next_value;
    }
    Some(span)
}

fn find_key<'a, 'i>(table: &'a DeTable<'i>, name: &str) -> Option<(Range<usize>, &'a DeValue<'i>)> {
    table
        .iter()
        .find(|(key, _)| key.get_ref() == name)
        .map(|(key, value)| (key.span(), value.get_ref()))
}

/// Empty spans (an error at the end of the input) cover the offset they sit on.
fn covers(span: Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || span.start == offset
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED_CONFIG: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/shardcast.toml"
    ));

    /// Parses `text`, expecting failure, and returns the error.
    fn rejected(text: &str) -> ConfigError {
        match Config::from_toml_str(text) {
            Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
            Err(error) => error,
        }
    }

    fn rejected_key(text: &str) -> String {
        let error = rejected(text);
        error
            .key()
            .unwrap_or_else(|| panic!("no key in error: {error}"))
            .to_owned()
    }

    #[test]
    fn transport_keys_are_checked() {
        let ok = Config::from_toml_str(
            "[server]\ntls_listen = \"0.0.0.0:1936\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n\
             trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nmax_connections_per_ip = 3\n",
        )
        .unwrap();
        assert_eq!(
            ok.server.tls_listen_addr(),
            Some(SocketAddr::from(([0, 0, 0, 0], 1936)))
        );
        assert!(ok.server.is_trusted_proxy("10.1.2.3".parse().unwrap()));
        assert!(
            ok.server
                .is_trusted_proxy("::ffff:10.1.2.3".parse().unwrap())
        );
        assert!(!ok.server.is_trusted_proxy("192.0.2.1".parse().unwrap()));
        assert_eq!(
            rejected_key("[server]\ntls_listen = \"0.0.0.0:1936\"\n"),
            "server.tls_cert_file"
        );
        assert_eq!(
            rejected_key("[server]\ntls_listen = \"nowhere\"\n"),
            "server.tls_listen"
        );
        assert_eq!(
            rejected_key("[server]\ntrusted_proxies = [\"not-a-cidr\"]\n"),
            "server.trusted_proxies[0]"
        );
        assert_eq!(
            rejected_key("[server]\nreconnect_tc_url = \"http://x\"\n"),
            "server.reconnect_tc_url"
        );
        assert_eq!(rejected_key("[server]\nmax_hops = 0\n"), "server.max_hops");
        assert_eq!(
            rejected_key("[server]\nnode_id = \"a,b\"\n"),
            "server.node_id"
        );
    }

    #[test]
    fn restart_keys_are_named() {
        let old = Config::default();
        let mut new = old.clone();
        new.server.max_connections_per_ip = 5;
        new.apps.insert("extra".into(), AppConfig::default());
        assert!(keys_needing_restart(&old, &new).is_empty());
        new.server.listen = SocketAddr::from(([127, 0, 0, 1], 1940));
        new.server.shards = Shards::Count(3);
        new.http.listen = String::new();
        assert_eq!(
            keys_needing_restart(&old, &new),
            ["server.listen", "server.shards", "http.listen"]
        );
    }

    #[test]
    fn shipped_file_is_the_default() {
        let config = Config::from_toml_str(SHIPPED_CONFIG).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn every_default_key_is_written_in_the_shipped_file() {
        // A key missing from the file would still parse (to its default), so equality alone
        // would not catch a key left undocumented.
        let document = SHIPPED_CONFIG.parse::<toml::Table>().unwrap();
        let section = |name: &str| document[name].as_table().unwrap().len();
        assert_eq!(section("server"), 21);
        assert_eq!(section("admin"), 3);
        assert_eq!(section("http"), 3);
        assert_eq!(section("viewer"), 7);
        assert_eq!(section("log"), 2);
        assert_eq!(document["app"]["live"].as_table().unwrap().len(), 30);
        assert_eq!(
            document["app"]["live"]["auth"].as_table().unwrap().len(),
            15
        );
    }

    #[test]
    fn auth_mistakes_name_their_key() {
        for (text, key) in [
            (
                "[app.live.auth]\nsign_play = true\nsecret = \"short\"\n",
                "app.live.auth.secret",
            ),
            (
                "[app.live.auth]\non_publish = \"https://auth/cb\"\n",
                "app.live.auth.on_publish",
            ),
            (
                "[app.live.auth]\ncallback_timeout_ms = 0\n",
                "app.live.auth.callback_timeout_ms",
            ),
            (
                "[app.live.auth]\npublish_keys = { demo = \"\" }\n",
                "app.live.auth.publish_keys.demo",
            ),
        ] {
            assert_eq!(rejected_key(text), key, "{text}");
        }
        for text in [
            "[app.live.auth]\ndeny_play = [\"10.0.0.0/33\"]\n",
            "[app.live.auth]\nkeys = {}\n",
        ] {
            let key = rejected_key(text);
            assert!(key.starts_with("app.live.auth"), "{text}: {key}");
        }
        let good = Config::from_toml_str(
            "[app.live.auth]\npublish_keys = { demo = \"s3cret\" }\nallow_play = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let auth = &good.app("live").unwrap().auth;
        assert_eq!(auth.allow_play.len(), 2);
        assert!(!format!("{auth:?}").contains("s3cret"), "Debug hides keys");
    }

    #[test]
    fn admin_listen_may_be_off_but_not_malformed() {
        let off = Config::from_toml_str("[admin]\nlisten = \"\"\n").unwrap();
        assert_eq!(off.admin.listen_addr(), None);
        assert_eq!(
            Config::default().admin.listen_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 1985)))
        );
        assert_eq!(
            rejected_key("[admin]\nlisten = \"localhost\"\n"),
            "admin.listen"
        );
        assert_eq!(rejected_key("[admin]\ntoken = \"a b\"\n"), "admin.token");
    }

    #[test]
    fn two_listeners_on_one_port_are_refused() {
        assert_eq!(
            rejected_key("[admin]\nlisten = \"127.0.0.1:8080\"\n"),
            "admin.listen",
            "the admin API on the HTTP-FLV port (0.0.0.0:8080)"
        );
        assert_eq!(
            rejected_key("[http]\nlisten = \"127.0.0.1:1935\"\n"),
            "http.listen"
        );
        let apart = Config::from_toml_str(
            "[admin]\nlisten = \"127.0.0.1:9000\"\n[http]\nlisten = \"127.0.0.2:9000\"\n",
        );
        assert!(apart.is_ok(), "one port on two addresses: {apart:?}");
    }

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn empty_text_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn missing_keys_take_defaults_within_a_section() {
        let config = Config::from_toml_str("[server]\nchunk_size = 60000\n").unwrap();
        assert_eq!(config.server.chunk_size, 60000);
        assert_eq!(config.server.max_chunk_streams, 64);
        assert_eq!(config.viewer, ViewerConfig::default());
    }

    #[test]
    fn listing_apps_replaces_the_default_live() {
        let config =
            Config::from_toml_str("[app.vod]\nallow_publish = false\n[app.event]\n").unwrap();
        assert!(config.app("live").is_none());
        assert!(!config.app("vod").unwrap().allow_publish);
        assert_eq!(config.app("event"), Some(&AppConfig::default()));
        assert!(config.app("Event").is_none(), "names are case-sensitive");
    }

    #[test]
    fn shards_auto_follows_available_cpus() {
        let config = Config::from_toml_str("[server]\nshards = \"auto\"\n").unwrap();
        assert_eq!(config.server.shards, Shards::Auto);
        assert_eq!(config.server.shard_count(6), 6);
        assert_eq!(config.server.shard_count(0), 1);
    }

    #[test]
    fn shards_pin_to_the_cpus_the_process_may_use() {
        let config = Config::default();
        assert_eq!(config.server.cpu_for_shard_among(0, &[4, 5, 6, 7]), 4);
        assert_eq!(config.server.cpu_for_shard_among(3, &[4, 5, 6, 7]), 7);
        assert_eq!(config.server.cpu_for_shard_among(5, &[4, 6]), 6);
        assert_eq!(config.server.cpu_for_shard_among(2, &[]), 2);
        let listed = Config::from_toml_str("[server]\ncpus = [1, 3]\n").unwrap();
        assert_eq!(
            listed.server.cpu_for_shard_among(1, &[4, 5]),
            3,
            "cpus wins"
        );
    }

    #[test]
    fn shards_auto_with_cpus_runs_one_shard_per_listed_cpu() {
        let config = Config::from_toml_str("[server]\ncpus = [2, 3, 5]\n").unwrap();
        assert_eq!(config.server.shard_count(16), 3);
        assert_eq!(config.server.cpu_for_shard(2), 5);
    }

    #[test]
    fn shards_count_is_taken_as_given() {
        let config = Config::from_toml_str("[server]\nshards = 3\n").unwrap();
        assert_eq!(config.server.shards, Shards::Count(3));
        assert_eq!(config.server.shard_count(64), 3);
        assert_eq!(config.server.cpu_for_shard(1), 1);
    }

    #[test]
    fn shards_rejects_other_words_zero_and_negatives() {
        for value in ["\"all\"", "0", "-2", "2.5", "true"] {
            let text = format!("[server]\nshards = {value}\n");
            assert_eq!(rejected_key(&text), "server.shards", "for {value}");
        }
        let error = rejected("[server]\nshards = \"all\"\n");
        assert!(
            error.to_string().contains("\"auto\" or a positive integer"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let cases = [
            ("chunk_szie = 1\n", "chunk_szie"),
            ("[server]\nchunk_szie = 4096\n", "server.chunk_szie"),
            ("[viewer]\nbacklog = 1\n", "viewer.backlog"),
            ("[log]\nlevel = \"info\"\n", "log.level"),
            ("[app.live]\ngop = true\n", "app.live.gop"),
            ("[application.live]\n", "application"),
        ];
        for (text, key) in cases {
            let error = rejected(text);
            assert_eq!(error.key(), Some(key), "for {text:?}");
            assert!(error.to_string().contains("unknown key"), "{error}");
        }
    }

    #[test]
    fn wrong_types_are_rejected_by_name() {
        let cases = [
            ("[server]\nchunk_size = \"4096\"\n", "server.chunk_size"),
            ("[server]\nlisten = \"1935\"\n", "server.listen"),
            ("[server]\ncpus = [0, \"one\"]\n", "server.cpus[1]"),
            ("[server]\ncpus = 4\n", "server.cpus"),
            (
                "[server]\nmax_message_size = -1\n",
                "server.max_message_size",
            ),
            ("[viewer]\ntcp_nodelay = \"yes\"\n", "viewer.tcp_nodelay"),
            ("[log]\nfilter = 3\n", "log.filter"),
            (
                "[app.live]\ngop_cache_max_ms = 1.5\n",
                "app.live.gop_cache_max_ms",
            ),
            ("[app]\nlive = 5\n", "app.live"),
            ("app = \"live\"\n", "app"),
            (
                "[app.live]\nrecordings_dir = [\"/srv\"]\n",
                "app.live.recordings_dir",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(rejected_key(text), key, "for {text:?}");
        }
    }

    #[test]
    fn out_of_range_values_are_rejected_by_name() {
        let cases = [
            ("[server]\nshards = 5000\n", "server.shards"),
            (
                "[server]\nmax_connections_per_shard = 0\n",
                "server.max_connections_per_shard",
            ),
            ("[server]\nchunk_size = 127\n", "server.chunk_size"),
            ("[server]\nchunk_size = 16777216\n", "server.chunk_size"),
            (
                "[server]\nmax_message_size = 1023\n",
                "server.max_message_size",
            ),
            (
                "[server]\nmax_message_size = 67108865\n",
                "server.max_message_size",
            ),
            (
                "[server]\nmax_chunk_streams = 4\n",
                "server.max_chunk_streams",
            ),
            (
                "[server]\nhandshake_timeout_ms = 0\n",
                "server.handshake_timeout_ms",
            ),
            (
                "[server]\nidle_connection_timeout_ms = 0\n",
                "server.idle_connection_timeout_ms",
            ),
            (
                "[server]\nshutdown_timeout_ms = 0\n",
                "server.shutdown_timeout_ms",
            ),
            ("[server]\nio_memory = 4096\n", "server.io_memory"),
            (
                "[viewer]\nbacklog_max_bytes = 100\n",
                "viewer.backlog_max_bytes",
            ),
            ("[viewer]\nbacklog_max_ms = 0\n", "viewer.backlog_max_ms"),
            (
                "[viewer]\nlag_disconnect_ms = 0\n",
                "viewer.lag_disconnect_ms",
            ),
            (
                "[viewer]\nflush_interval_ms = 5000\n",
                "viewer.flush_interval_ms",
            ),
            (
                "[viewer]\nsend_buffer_bytes = 100\n",
                "viewer.send_buffer_bytes",
            ),
            ("[log]\nfilter = \" \"\n", "log.filter"),
            (
                "[app.live]\ngop_cache_max_bytes = 0\n",
                "app.live.gop_cache_max_bytes",
            ),
            (
                "[app.live]\ngop_cache_max_ms = 0\n",
                "app.live.gop_cache_max_ms",
            ),
            (
                "[app.live]\npublisher_idle_timeout_ms = 0\n",
                "app.live.publisher_idle_timeout_ms",
            ),
            (
                "[app.live]\ntakeover_idle_ms = 0\n",
                "app.live.takeover_idle_ms",
            ),
            (
                "[app.live]\nunpublish_grace_ms = 86400001\n",
                "app.live.unpublish_grace_ms",
            ),
            (
                "[app.live]\nwait_for_publisher_ms = 86400001\n",
                "app.live.wait_for_publisher_ms",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(rejected_key(text), key, "for {text:?}");
        }
    }

    #[test]
    fn pull_mistakes_name_their_key() {
        for (text, key) in [
            ("[app.live]\npull = [\"http://o/live\"]\n", "app.live.pull"),
            ("[app.live]\npull = [\"rtmp://o\"]\n", "app.live.pull"),
            (
                "[app.live]\npull = [\"rtmps://o/live\"]\n",
                "app.live.pull_tls_ca_file",
            ),
            (
                "[app.live]\npull_static = [\"a\"]\n",
                "app.live.pull_static",
            ),
            (
                "[app.live]\npull = [\"rtmp://o/live\"]\npull_static = [\"a/b\"]\n",
                "app.live.pull_static",
            ),
            (
                "[app.live]\npull = [\"rtmp://o/live\"]\npull_no_input_ms = 0\n",
                "app.live.pull_no_input_ms",
            ),
        ] {
            assert_eq!(rejected_key(text), key, "for {text:?}");
        }
        let ok = Config::from_toml_str(
            "[app.live]\npull = [\"rtmp://o/live\", \"rtmps://p/live\"]\npull_tls_ca_file = \"/ca.pem\"\n",
        )
        .unwrap();
        let app = ok.app("live").unwrap();
        assert!(app.pulls());
        assert_eq!(app.wait_for_source(), Duration::from_millis(10_000));
        assert_eq!(
            Config::default().app("live").unwrap().wait_for_source(),
            Duration::from_millis(30_000)
        );
    }

    #[test]
    fn range_bounds_themselves_are_accepted() {
        let text = "[server]\nchunk_size = 128\nmax_message_size = 67108864\n\
                    [viewer]\nflush_interval_ms = 1000\nsend_buffer_bytes = 4096\n\
                    [app.live]\nunpublish_grace_ms = 0\nwait_for_publisher_ms = 0\n";
        let config = Config::from_toml_str(text).unwrap();
        assert_eq!(config.server.chunk_size, 128);
        assert_eq!(config.viewer.send_buffer(), Some(4096));
        assert_eq!(
            config.app("live").unwrap().wait_for_publisher(),
            Duration::ZERO
        );
    }

    #[test]
    fn out_of_range_reason_gives_the_range_and_the_value() {
        let error = rejected("[server]\nchunk_size = 64\n");
        let message = error.to_string();
        assert!(
            message
                .starts_with("config error at server.chunk_size: must be between 128 and 16777215"),
            "{message}"
        );
        assert!(message.contains("got 64"), "{message}");
    }

    #[test]
    fn duplicate_app_is_rejected_by_name() {
        let text = "[app.live]\ngop_cache = true\n\n[app.other]\n\n[app.live]\ngop_cache = false\n";
        let error = rejected(text);
        assert_eq!(error.key(), Some("app.live"));
        assert_eq!(error.line(), Some(6));
        assert!(error.to_string().contains("more than once"), "{error}");
    }

    #[test]
    fn duplicate_key_is_rejected_by_name() {
        let error = rejected("[server]\nshards = 2\nshards = 3\n");
        assert_eq!(error.key(), Some("server.shards"));
    }

    #[test]
    fn duplicate_key_is_placed_in_its_table_past_inline_tables() {
        let text = "[viewer]\nbacklog_max_ms = 1\n[server]\nshards = 2\ncpus = [0, 1]\n\
                    listen = \"0.0.0.0:1935\"\nshards = 3\n";
        let error = rejected(text);
        assert_eq!(error.key(), Some("server.shards"));
        assert_eq!(error.line(), Some(7));

        let text = "[app.live]\ngop_cache = true\n[app.live.x]\n\n[app.live]\n";
        assert_eq!(rejected_key(text), "app.live");
    }

    #[test]
    fn duplicate_table_is_rejected_by_name() {
        let error = rejected("[viewer]\n[server]\n[viewer]\n");
        assert_eq!(error.key(), Some("viewer"));
        assert_eq!(error.line(), Some(3));
    }

    #[test]
    fn type_errors_speak_of_numbers_not_rust_types() {
        let error = rejected("[server]\nchunk_size = 99999999999\n");
        assert!(
            error
                .to_string()
                .contains("expected a whole number from 0 to 4294967295"),
            "{error}"
        );
        let error = rejected("[app.live]\ngop_cache_max_ms = -5\n");
        assert!(
            error
                .to_string()
                .contains("expected a whole number, 0 or more"),
            "{error}"
        );
    }

    #[test]
    fn no_apps_is_rejected() {
        let error = rejected("[app]\n");
        assert_eq!(error.key(), Some("app"));
        assert!(
            error.to_string().contains("at least one application"),
            "{error}"
        );
    }

    #[test]
    fn bad_app_names_are_rejected_by_name() {
        let cases = [
            ("[app.\"\"]\n", "app.\"\""),
            ("[app.\"live/hd\"]\n", "app.\"live/hd\""),
            ("[app.\"live?x\"]\n", "app.\"live?x\""),
            ("[app.\"my live\"]\n", "app.\"my live\""),
        ];
        for (text, key) in cases {
            assert_eq!(rejected_key(text), key, "for {text:?}");
        }
    }

    #[test]
    fn keys_inside_quoted_app_names_are_quoted_in_errors() {
        let text = "[app.\"tv.1\"]\ngop_cache_max_ms = 0\n";
        assert_eq!(rejected_key(text), "app.\"tv.1\".gop_cache_max_ms");
    }

    #[test]
    fn cpus_must_match_a_numeric_shard_count() {
        let error = rejected("[server]\nshards = 4\ncpus = [0, 1, 2]\n");
        assert_eq!(error.key(), Some("server.cpus"));
        assert!(error.to_string().contains("server.shards is 4"), "{error}");

        // Two shards may share a CPU (the server warns instead).
        let config = Config::from_toml_str("[server]\ncpus = [0, 1, 1]\n").expect("accepted");
        assert_eq!(config.server.shard_count(8), 3);
        assert_eq!(config.server.cpu_for_shard(2), 1);
    }

    #[test]
    fn lag_disconnect_must_leave_room_to_skip() {
        let error = rejected("[viewer]\nbacklog_max_ms = 5000\nlag_disconnect_ms = 4000\n");
        assert_eq!(error.key(), Some("viewer.lag_disconnect_ms"));
        assert_eq!(error.line(), Some(3));
    }

    #[test]
    fn validation_errors_carry_the_line_of_their_key() {
        let text = "# comment\n\n[server]\nlisten = \"0.0.0.0:1935\"\nchunk_size = 1\n";
        let error = rejected(text);
        assert_eq!(error.line(), Some(5));
        assert_eq!(
            error.to_string(),
            "config error at server.chunk_size: must be between 128 and 16777215 \
             (RTMP allows 128 and up; past 16 MiB a chunk outgrows any message), got 1 (line 5)"
        );
    }

    #[test]
    fn a_rule_broken_by_a_default_has_no_line() {
        // lag_disconnect_ms is not written, so there is no line to point at.
        let error = rejected("[viewer]\nbacklog_max_ms = 20000\n");
        assert_eq!(error.key(), Some("viewer.lag_disconnect_ms"));
        assert_eq!(error.line(), None);
    }

    #[test]
    fn inline_tables_are_located_too() {
        let text = "app = { live = { gop_cache = 1 } }\n";
        assert_eq!(rejected_key(text), "app.live.gop_cache");
        let text = "server.chunk_size = 1\n";
        assert_eq!(rejected_key(text), "server.chunk_size");
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let error = rejected("[server]\nlisten = \n");
        assert_eq!(error.line(), Some(2));
        let error = rejected("[server\nlisten = \"0.0.0.0:1935\"\n");
        assert_eq!(error.line(), Some(1));
        assert!(error.to_string().starts_with("config error at "), "{error}");
    }

    #[test]
    fn load_names_the_file() {
        let path =
            std::env::temp_dir().join(format!("shardcast-config-test-{}.toml", std::process::id()));
        std::fs::write(&path, "[server]\nshards = 0\n").unwrap();
        let error = Config::load(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "config error at server.shards: must be between 1 and 4096, got 0 ({}, line 2)",
                path.display()
            )
        );
    }

    #[test]
    fn load_reads_a_valid_file() {
        let path =
            std::env::temp_dir().join(format!("shardcast-config-ok-{}.toml", std::process::id()));
        std::fs::write(&path, SHIPPED_CONFIG).unwrap();
        let loaded = Config::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), Config::default());
    }

    #[test]
    fn load_reports_a_missing_file() {
        let path = Path::new("/nonexistent/shardcast.toml");
        let error = Config::load(path).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert!(
            error
                .to_string()
                .starts_with("cannot read config file /nonexistent/shardcast.toml: "),
            "{error}"
        );
    }

    #[test]
    fn duration_accessors_convert_milliseconds() {
        let config = Config::default();
        let live = config.app("live").unwrap();
        assert_eq!(live.unpublish_grace(), Duration::from_secs(5));
        assert_eq!(live.takeover_idle(), Duration::from_secs(3));
        assert_eq!(live.publisher_idle_timeout(), Duration::from_secs(10));
        assert_eq!(live.gop_cache_max_duration(), Duration::from_secs(10));
        assert_eq!(live.wait_for_publisher(), Duration::from_secs(30));
        assert_eq!(config.server.handshake_timeout(), Duration::from_secs(5));
        assert_eq!(
            config.server.idle_connection_timeout(),
            Duration::from_secs(30)
        );
        assert_eq!(config.server.shutdown_timeout(), Duration::from_secs(3));
        assert_eq!(config.viewer.backlog_max_duration(), Duration::from_secs(3));
        assert_eq!(config.viewer.lag_disconnect(), Duration::from_secs(10));
        assert_eq!(config.viewer.flush_interval(), None);
        assert_eq!(config.viewer.send_buffer(), None);
        assert_eq!(live.vod_dir(), None);
    }

    #[test]
    fn optional_settings_turn_on_when_set() {
        let text = "[viewer]\nflush_interval_ms = 20\n[app.live]\nvod_dir = \"/srv/flv\"\n";
        let config = Config::from_toml_str(text).unwrap();
        assert_eq!(
            config.viewer.flush_interval(),
            Some(Duration::from_millis(20))
        );
        let live = config.app("live").unwrap();
        assert_eq!(live.vod_dir(), Some(Path::new("/srv/flv")));
        assert!(!live.uses_deprecated_recordings_dir());
        // The old key still works, and `vod_dir` wins over it.
        let old = Config::from_toml_str("[app.live]\nrecordings_dir = \"/old\"\n").unwrap();
        assert_eq!(old.app("live").unwrap().vod_dir(), Some(Path::new("/old")));
        assert!(old.app("live").unwrap().uses_deprecated_recordings_dir());
        let both =
            Config::from_toml_str("[app.live]\nrecordings_dir = \"/old\"\nvod_dir = \"/new\"\n")
                .unwrap();
        assert_eq!(both.app("live").unwrap().vod_dir(), Some(Path::new("/new")));
    }

    #[test]
    fn log_format_is_text_or_json() {
        assert_eq!(Config::default().log.format, LogFormat::Text);
        let config = Config::from_toml_str("[log]\nformat = \"json\"\n").unwrap();
        assert_eq!(config.log.format, LogFormat::Json);
        let config = Config::from_toml_str("[log]\nformat = \"text\"\n").unwrap();
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn log_format_rejects_other_words_by_name() {
        for value in ["\"JSON\"", "\"logfmt\"", "1"] {
            let text = format!("[log]\nformat = {value}\n");
            let error = rejected(&text);
            assert_eq!(error.key(), Some("log.format"), "for {value}");
            assert_eq!(error.line(), Some(2), "for {value}");
        }
        assert_eq!(
            rejected("[log]\nformat = \"logfmt\"\n").to_string(),
            "config error at log.format: must be \"text\" or \"json\", got \"logfmt\" (line 2)"
        );
        assert_eq!(
            reword_toml_message("unknown variant `x`, expected one of `a`, `b`, `c`"),
            "must be one of \"a\", \"b\", \"c\", got \"x\""
        );
        assert_eq!(
            rejected("[log]\nformat = 1\n").to_string(),
            "config error at log.format: must be a quoted string (line 2)"
        );
    }

    #[test]
    fn listen_accepts_ipv6() {
        let config = Config::from_toml_str("[server]\nlisten = \"[::]:1935\"\n").unwrap();
        assert!(config.server.listen.is_ipv6());
    }

    #[test]
    fn validate_reports_hand_built_mistakes_without_a_line() {
        let mut config = Config::default();
        config.apps.get_mut("live").unwrap().takeover_idle_ms = 0;
        let error = config.validate().unwrap_err();
        assert_eq!(error.key(), Some("app.live.takeover_idle_ms"));
        assert_eq!(error.line(), None);
    }
}
