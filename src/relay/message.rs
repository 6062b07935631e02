//! What shards send each other: stream subscriptions, frames and events as handles, and
//! requests for a shard's state.
//!
//! Media travels as `Bytes` handles inside [`RingEntry`], so a message crossing cores copies
//! a pointer and a length, never media. The channels themselves (bounded, with a doorbell
//! that wakes a sleeping core) belong to the driver: `src/net/mailbox.rs`.

use super::directory::StreamName;
use super::frame::RingEntry;
use super::snapshot::ShardSnapshot;
use super::stream::StreamSnapshot;

/// Shard ids are small: one per core.
pub type ShardId = usize;

pub enum ShardMessage {
    /// A shard with viewers of `stream` wants its frames.
    Subscribe {
        stream: StreamName,
        shard: ShardId,
    },
    Unsubscribe {
        stream: StreamName,
        shard: ShardId,
    },
    /// The origin's answer to `Subscribe`: what joining viewers need, and where the
    /// numbering of its entries stands.
    Subscribed {
        stream: StreamName,
        origin: ShardId,
        state: Box<StreamSnapshot>,
    },
    /// One frame or stream event from the origin.
    Entry {
        stream: StreamName,
        origin: ShardId,
        entry: RingEntry,
    },
    /// `origin` is now the stream's origin: re-subscribe there; an old origin drops its
    /// publisher.
    OriginMoved {
        stream: StreamName,
        origin: ShardId,
    },
    /// Answer with this shard's [`ShardSnapshot`] on `reply`.
    Inspect {
        reply: crossbeam_channel::Sender<ShardSnapshot>,
    },
    /// Stop accepting, tell every client, and finish.
    Shutdown,
}
