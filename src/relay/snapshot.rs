//! What a shard can tell about itself: its clients and streams, as plain values.
//!
//! A [`ShardSnapshot`] is taken by the shard that owns the state (`Shard::snapshot`), on
//! its own core, when a [`ShardMessage::Inspect`](super::message::ShardMessage::Inspect)
//! asks for it; gathering every shard's is a round of messages (`net::runtime::inspect`),
//! never a lock. [`streams_across`] adds the shards' views of each stream together, the
//! way an operator counts: one stream, its publisher, and its viewers on every shard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::client::RoleKind;
use super::directory::{ConnId, StreamName};
use super::message::ShardId;
use crate::media::codec::{AudioCodec, VideoCodec};

#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub shard: ShardId,
    pub clients: Vec<ClientInfo>,
    pub streams: Vec<StreamInfo>,
}

#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub id: ConnId,
    pub addr: SocketAddr,
    pub role: RoleKind,
    pub stream: Option<StreamName>,
    pub shard: ShardId,
    /// Bytes received from the client and written to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Video frames this viewer did not get because it fell behind.
    pub dropped_frames: u64,
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
    /// Viewers playing here, and waiting here for the publisher.
    pub viewers: usize,
    pub waiting: usize,
    /// Payload bytes that came in (on the origin), bytes written to this shard's viewers.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped_frames: u64,
    pub gop_cache_bytes: usize,
    pub ring_memory: usize,
    pub live_for: Option<Duration>,
}

/// One stream as the whole server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTotals {
    pub name: StreamName,
    pub origin: Option<ShardId>,
    pub publisher: Option<PublisherInfo>,
    /// Viewers on each shard, by shard id.
    pub viewers_per_shard: Vec<usize>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl StreamTotals {
    pub fn viewers(&self) -> usize {
        self.viewers_per_shard.iter().sum()
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
                    viewers_per_shard: vec![0; count],
                    bytes_in: 0,
                    bytes_out: 0,
                });
            if s.origin {
                t.origin = Some(s.shard);
                t.publisher = s.publisher.clone();
                t.bytes_in += s.bytes_in;
            }
            t.viewers_per_shard[s.shard] += s.viewers;
            t.bytes_out += s.bytes_out;
        }
    }
    by_name.into_values().collect()
}
