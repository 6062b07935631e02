//! shardcast: a thread-per-core RTMP edge relay.
//!
//! One media message's way from a publisher's socket to a viewer's:
//!
//! 1. `src/rtmp/handshake.rs` has completed the handshake; the publisher's bytes go into its
//!    `ServerSession` (`src/rtmp/server.rs`), whose `ChunkDecoder` (`src/rtmp/chunk.rs`)
//!    joins chunks into a message. A message that arrived in one chunk is a zero-copy slice
//!    of the read buffer. Aggregates are split by `src/media/aggregate.rs`.
//! 2. The session emits `ServerEvent::Media`. `src/media/codec.rs` tells whether it is a
//!    keyframe or a sequence header.
//! 3. `chunk::encode_shared` encodes it **once** into one `Bytes`: format-0 header, format-3
//!    continuations, fixed chunk stream ids, message stream id 1, so every viewer can write
//!    the same bytes. The GOP cache (`src/media/gop_cache.rs`) keeps that handle for viewers
//!    who join later.
//!
//! The relay's shards, stream table and fan-out (`src/relay/`) and the glommio socket
//! drivers (`src/net/`) complete the path; they are being built (see the README).

pub mod config;
pub mod media;
pub mod net;
pub mod relay;
pub mod rtmp;
pub mod server;
