//! What shards send each other: stream subscriptions, frames and events as handles, and
//! requests for a shard's state.
//!
//! Media travels as `Bytes` handles inside [`RingEntry`], so a message crossing cores copies
//! a pointer and a length, never media. The channels themselves (bounded, with a doorbell
//! that wakes a sleeping core) belong to the driver: `src/net/mailbox.rs`.

use bytes::Bytes;

use super::directory::{ConnId, StreamName};
use super::frame::RingEntry;
use super::recorder::RecordStatus;
use super::snapshot::ShardSnapshot;
use super::stream::StreamSnapshot;

/// Shard ids are small: one per core.
pub type ShardId = usize;

/// Where a shard's answer goes: whoever asked decides how it is carried back (a channel
/// and a waker, for the admin listener's thread). The shard only calls it, once.
pub struct Reply<T>(Box<dyn FnOnce(T) + Send>);

impl<T> Reply<T> {
    pub fn new(deliver: impl FnOnce(T) + Send + 'static) -> Reply<T> {
        Reply(Box::new(deliver))
    }

    pub fn send(self, value: T) {
        (self.0)(value)
    }
}

/// Why an admin request to a shard could not be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No such client or stream here.
    NotFound,
    /// The stream is known but not live (nobody publishes it now).
    NotLive,
    /// The stream's application does not record (`record = "off"`).
    NotRecordable,
}

pub enum ShardMessage {
    /// A reloaded configuration (SIGHUP): new connections and new publish/play decisions
    /// use it; what runs goes on.
    Reload(std::sync::Arc<crate::config::Config>),
    /// The drain started (SIGTERM): ask the clients that can (Enhanced RTMP capsEx) to
    /// reconnect, while serving on.
    Drain,
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
    /// Answer with this shard's [`ShardSnapshot`] on `reply`; with its clients listed one
    /// by one only if `clients` (a metrics scrape needs the totals alone).
    Inspect {
        clients: bool,
        reply: Reply<ShardSnapshot>,
    },
    /// Close the client `conn` (the admin API's kick); answers whether it was here.
    Kick {
        conn: ConnId,
        reply: Reply<Result<(), AdminRefusal>>,
    },
    /// Put a data message (an AMF0 body) into `stream`, which this shard is the origin of,
    /// stamped with its current media timestamp; answers that timestamp.
    InjectData {
        stream: StreamName,
        payload: Bytes,
        reply: Reply<Result<u32, AdminRefusal>>,
    },
    /// Start (`start`) or stop recording `stream`, which this shard is the origin of;
    /// answers the recording's state.
    Record {
        stream: StreamName,
        start: bool,
        reply: Reply<Result<RecordStatus, AdminRefusal>>,
    },
    /// The host's pull of `stream` was refused for good (a relay loop): refuse the
    /// viewers waiting for it here with `why`, rather than leave them waiting.
    UpstreamRefused {
        stream: StreamName,
        why: String,
    },
    /// Stop accepting, tell every client, and finish.
    Shutdown,
}
