//! What a shard can tell about itself: its clients, streams and counters, as plain values.
//!
//! A [`ShardSnapshot`] is taken by the shard that owns the state (`Shard::snapshot`), on
//! its own core, when a [`ShardMessage::Inspect`](super::message::ShardMessage::Inspect)
//! asks for it; gathering every shard's is a round of messages (`net::runtime::inspect`,
//! the admin listener), never a lock. [`streams_across`] adds the shards' views of each
//! stream together, the way an operator counts: one stream, its publisher, and its
//! viewers on every shard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::client::RoleKind;
use super::directory::{ConnId, StreamName};
use super::message::ShardId;
use super::recorder::RecordStatus;
use super::stats::ShardStats;
use crate::media::codec::{AudioCodec, VideoCodec};

#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub shard: ShardId,
    /// Every client, when the request asked for them (empty otherwise).
    pub clients: Vec<ClientInfo>,
    pub streams: Vec<StreamInfo>,
    /// Connected clients by what they do.
    pub connections: ConnectionCounts,
    /// Bytes received from and sent to clients, those gone included.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub stats: ShardStats,
}

/// The protocols clients speak, as the API and metrics name them.
pub const PROTOCOLS: [&str; 4] = ["rtmp", "http_flv", "ws_flv", "http"];

/// Connected clients by role, and by protocol and role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub publishers: usize,
    pub viewers: usize,
    pub file_viewers: usize,
    /// Connected, neither publishing nor playing.
    pub idle: usize,
    /// By `PROTOCOLS` index, then role: publisher, viewer, recording viewer, idle.
    pub by_protocol: [[usize; 4]; 4],
}

impl ConnectionCounts {
    pub fn total(&self) -> usize {
        self.publishers + self.viewers + self.file_viewers + self.idle
    }

    /// Counts one client of `role` speaking `protocol` (one of [`PROTOCOLS`]).
    pub fn add(&mut self, role: RoleKind, protocol: &str) {
        let r = match role {
            RoleKind::Publisher => {
                self.publishers += 1;
                0
            }
            RoleKind::Viewer => {
                self.viewers += 1;
                1
            }
            RoleKind::FileViewer => {
                self.file_viewers += 1;
                2
            }
            RoleKind::Client => {
                self.idle += 1;
                3
            }
        };
        if let Some(p) = PROTOCOLS.iter().position(|&name| name == protocol) {
            self.by_protocol[p][r] += 1;
        }
    }

    /// Clients speaking `PROTOCOLS[p]`.
    pub fn protocol_total(&self, p: usize) -> usize {
        self.by_protocol
            .get(p)
            .map_or(0, |roles| roles.iter().sum())
    }

    pub fn merge(&mut self, other: &ConnectionCounts) {
        self.publishers += other.publishers;
        self.viewers += other.viewers;
        self.file_viewers += other.file_viewers;
        self.idle += other.idle;
        for (mine, theirs) in self.by_protocol.iter_mut().zip(&other.by_protocol) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub id: ConnId,
    pub addr: SocketAddr,
    pub role: RoleKind,
    /// The protocol it speaks: `rtmp` for now.
    pub protocol: &'static str,
    /// The application it connected to (empty before `connect`).
    pub app: String,
    pub stream: Option<StreamName>,
    pub shard: ShardId,
    /// Bytes received from the client and written to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Over the last 30 s, in kbit/s.
    pub kbps_in: u64,
    pub kbps_out: u64,
    /// Video frames this viewer did not get because it fell behind.
    pub dropped_frames: u64,
    /// Which tracks it is sent (`TrackFilter::name`: all, declared, track0, legacy).
    pub track_filter: &'static str,
    /// Video messages sent to it, and withheld because it cannot play them (an Enhanced
    /// RTMP codec it did not declare, with no legacy form).
    pub video_sent: u64,
    pub video_withheld: u64,
    /// How long it has been connected.
    pub connected_for: Duration,
    /// A viewer waiting for its stream's publisher.
    pub waiting: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherInfo {
    pub id: ConnId,
    pub addr: SocketAddr,
    pub publishing_for: Duration,
}

#[derive(Clone, Debug)]
pub struct StreamInfo {
    pub name: StreamName,
    pub shard: ShardId,
    /// This shard is the stream's origin (its source is here).
    pub origin: bool,
    /// The publisher, on its origin shard.
    pub publisher: Option<PublisherInfo>,
    pub live: bool,
    /// Fed by a stored file, for one viewer.
    pub file: bool,
    pub video: Option<VideoCodec>,
    pub audio: Option<AudioCodec>,
    /// The codec configurations and `onMetaData` as received (handles, not copies), for
    /// whoever wants the details (resolution, profile, sample rate) off the shard's core.
    pub video_header: Option<Bytes>,
    pub audio_header: Option<Bytes>,
    pub metadata: Option<Bytes>,
    /// Viewers playing here, and waiting here for the publisher.
    pub viewers: usize,
    pub waiting: usize,
    /// Payload bytes that came in (on the origin), bytes written to this shard's viewers.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Over the last 30 s, in kbit/s.
    pub kbps_in: u64,
    pub kbps_out: u64,
    /// Frames that came in by kind (audio, video, metadata, data), on the origin.
    pub frames: [u64; 4],
    /// Video frames viewers here did not get, those who left included.
    pub dropped_frames: u64,
    pub gop_cache_bytes: usize,
    pub ring_memory: usize,
    pub live_for: Option<Duration>,
    /// The recording, on the origin shard of a stream whose application records.
    pub record: Option<RecordStatus>,
    /// Its pushes to other servers, on the origin shard.
    pub forwards: Vec<ForwardInfo>,
    /// The upstream pull feeding the stream, on the shard that runs it.
    pub upstream: Option<UpstreamInfo>,
}

/// One push of a stream to another server (`forwarder.rs`), as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardInfo {
    /// The target's URL, any secret in its query hidden.
    pub url: String,
    /// `connecting`, `forwarding`, or `waiting` (for a retry).
    pub state: &'static str,
    pub retries: u64,
    /// Bytes written to the target, over every connection.
    pub bytes: u64,
    pub last_error: Option<String>,
}

/// An edge's pull of a stream, as the API shows it (`upstream_source.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamInfo {
    /// The origin of the current (or last) attempt.
    pub url: String,
    /// "connecting", "playing", "backoff" or "stopped".
    pub state: &'static str,
    pub retries: u32,
    /// Media and data payload bytes received.
    pub bytes: u64,
    /// The last failure ("" before any).
    pub last_error: String,
}

/// One stream as the whole server sees it.
#[derive(Clone, Debug)]
pub struct StreamTotals {
    pub name: StreamName,
    pub origin: Option<ShardId>,
    pub publisher: Option<PublisherInfo>,
    pub live: bool,
    pub video: Option<VideoCodec>,
    pub audio: Option<AudioCodec>,
    pub video_header: Option<Bytes>,
    pub audio_header: Option<Bytes>,
    pub metadata: Option<Bytes>,
    /// Viewers on each shard, by shard id.
    pub viewers_per_shard: Vec<usize>,
    /// Viewers waiting for the publisher, on every shard.
    pub waiting: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub kbps_in: u64,
    pub kbps_out: u64,
    pub frames: [u64; 4],
    pub dropped_frames: u64,
    pub gop_cache_bytes: usize,
    pub live_for: Option<Duration>,
    /// The recording, from the origin shard.
    pub record: Option<RecordStatus>,
    /// The pushes, from the origin shard.
    pub forwards: Vec<ForwardInfo>,
    /// The upstream pull, from the shard that runs it.
    pub upstream: Option<UpstreamInfo>,
}

impl StreamTotals {
    pub fn viewers(&self) -> usize {
        self.viewers_per_shard.iter().sum()
    }

    /// The application and the stream's own name.
    pub fn app_and_key(&self) -> (&str, &str) {
        self.name.split_once('/').unwrap_or(("", &self.name))
    }
}

/// The shards' views of each live stream, added together (file streams are one viewer's
/// own and are left out), ordered by name.
pub fn streams_across(shards: &[ShardSnapshot]) -> Vec<StreamTotals> {
    let count = shards.iter().map(|s| s.shard + 1).max().unwrap_or(0);
    let mut by_name: BTreeMap<StreamName, StreamTotals> = BTreeMap::new();
    for snap in shards {
        for s in snap.streams.iter().filter(|s| !s.file) {
            let t = by_name
                .entry(s.name.clone())
                .or_insert_with(|| StreamTotals {
                    name: s.name.clone(),
                    origin: None,
                    publisher: None,
                    live: false,
                    video: None,
                    audio: None,
                    video_header: None,
                    audio_header: None,
                    metadata: None,
                    viewers_per_shard: vec![0; count],
                    waiting: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    kbps_in: 0,
                    kbps_out: 0,
                    frames: [0; 4],
                    dropped_frames: 0,
                    gop_cache_bytes: 0,
                    live_for: None,
                    record: None,
                    forwards: Vec::new(),
                    upstream: None,
                });
            if s.upstream.is_some() {
                t.upstream = s.upstream.clone();
            }
            if s.origin {
                t.origin = Some(s.shard);
                t.publisher = s.publisher.clone();
                t.bytes_in += s.bytes_in;
                t.kbps_in += s.kbps_in;
                t.frames = s.frames;
                t.gop_cache_bytes = s.gop_cache_bytes;
                t.live_for = s.live_for;
                t.record = s.record.clone();
                t.forwards = s.forwards.clone();
            }
            // The origin's view of the codecs wins; a subscriber's fills in until then.
            if s.origin || t.video_header.is_none() && t.audio_header.is_none() {
                t.video = s.video.or(t.video);
                t.audio = s.audio.or(t.audio);
                t.video_header = s.video_header.clone().or(t.video_header.take());
                t.audio_header = s.audio_header.clone().or(t.audio_header.take());
                t.metadata = s.metadata.clone().or(t.metadata.take());
            }
            t.live |= s.live;
            t.viewers_per_shard[s.shard] += s.viewers;
            t.waiting += s.waiting;
            t.bytes_out += s.bytes_out;
            t.kbps_out += s.kbps_out;
            t.dropped_frames += s.dropped_frames;
        }
    }
    by_name.into_values().collect()
}
