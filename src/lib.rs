//! shardcast: a thread-per-core RTMP edge relay.
//!
//! One media message's way from a publisher's socket to a viewer's:
//!
//! 1. **Accept.** Every shard (one pinned glommio executor per core, started by
//!    `src/server.rs`) listens on the ingest port with SO_REUSEPORT
//!    (`src/net/listener.rs`); the kernel picked this shard for the encoder's connection.
//! 2. **Read.** `src/net/connection.rs` reads the socket into its shard's one read buffer,
//!    copies what came into a `Bytes` (so no idle connection holds a buffer), and feeds the
//!    connection's `ServerSession` (`src/rtmp/server_session.rs`). The handshake
//!    (`src/rtmp/handshake.rs`) is long done; the `ChunkDecoder` (`src/rtmp/chunk.rs`) joins
//!    chunks into an `RtmpMessage` (`src/rtmp/message.rs`) — a message that arrived in one
//!    chunk is a zero-copy slice of that `Bytes` — and `src/rtmp/session.rs` answers
//!    the control traffic (acknowledgements, pings) on the way. Aggregate messages are split
//!    by `src/rtmp/aggregate.rs`. The session emits `ServerEvent::Media`.
//! 3. **Encode once.** The connection task hands the message to its shard
//!    (`src/relay/shard.rs`), the stream's origin. `src/relay/origin.rs` fixes the timestamp
//!    viewers see, asks `src/media/codec.rs` whether it is a keyframe or a sequence header,
//!    and encodes it **once** with `chunk::encode_shared` into one `Bytes`: a `Frame`
//!    (`src/relay/frame.rs`).
//! 4. **Cross cores.** For each other shard that has viewers of the stream, the origin puts
//!    the `Frame` (a handle on the same bytes) into that shard's bounded mailbox
//!    (`src/relay/mailbox.rs`) and rings its doorbell once per batch; only the handle
//!    travels, once per shard, never once per viewer.
//! 5. **Fan out.** On every shard the frame joins the stream's ring and GOP cache
//!    (`src/relay/stream.rs`, `src/media/gop_cache.rs`). A video frame wakes the stream's
//!    fan-out task at once; an audio or data message waits there for the next video frame
//!    (`viewer.flush_on`, at most 50 ms), so a viewer gets one write per frame. The fan-out
//!    walks its viewers: each viewer's `ViewerQueue` (`src/relay/viewer.rs`) gathers what it is
//!    owed — the same shared buffers — into one `iovec` array, and `src/net/vectored.rs`
//!    hands it to the kernel with one `sendmsg`. A viewer whose socket is full is handed to
//!    its own connection task (`src/relay/peer.rs`, `src/net/connection.rs`), which parks
//!    on writability; nothing a viewer does slows the publisher or another viewer.
//!
//! `src/config.rs` is the configuration file's schema; `loadtest/` is the bundled load
//! generator, built on the client role (`src/rtmp/client_session.rs`).

pub mod config;
pub mod media;
pub mod net;
pub mod performance;
pub mod relay;
pub mod rtmp;
