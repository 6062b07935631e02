//! The relay: shards, the stream table, sources and viewers, and fan-out, as deterministic
//! state machines like the protocol core. Nothing in here opens a socket, reads a clock,
//! spawns a task or arms a timer: `src/net/` does, and drives these.
//!
//! - `shard.rs`: what one core owns ([`Shard`](shard::Shard)), its inputs (bytes from a
//!   client, a message from another shard, a timeout, a file read) and its outputs.
//! - `client.rs`: one connection as the relay sees it; `write_queue.rs`: what it is owed
//!   and the vectored flush every write goes through.
//! - `stream.rs`: a stream on one shard: its ring, GOP and headers, viewers.
//! - `frame.rs`: frames, stream events, and the per-stream ring of recent ones.
//! - `origin.rs`: a source's messages made into frames, each encoded once.
//! - `vod_source.rs`: video on demand, one viewer's play of a stored FLV or MP4 file (start,
//!   duration, seek, pause, pacing), from the file's shared index.
//! - `vod_download.rs`: a stored file downloaded over HTTP with byte ranges
//!   (`/vod/{app}/{name}.mp4`), paced by the client's socket.
//! - `recorder.rs`: recording (DVR): which frames go to which file and when, as values
//!   the driver's disk writer carries out.
//! - `ingest_pace.rs`: how late each publisher is read, against its own timestamps.
//! - `forwarder.rs`: push (forward) of published streams to other servers: a forwarder is a
//!   viewer whose socket the driver opened to the target.
//! - `directory.rs`: which shard is the origin of each stream (read on arrivals only), and
//!   which shard pulls a stream from upstream for the whole host.
//! - `upstream_source.rs`: an edge's pull of a stream from its origins (when to connect,
//!   fall over, back off, stop); `shard_pull.rs`: the shard serving what it pulls.
//! - `message.rs`: what shards send each other; `snapshot.rs`: what a shard tells about
//!   itself.
//! - `slab.rs`: the handle-addressed tables clients and streams live in.
//!
//! Sources and viewers are the two extension points. A stream is fed by a source: a live
//! publisher (`Shard::publish`, `ingest_*`), a stored file (`FileSource`), or an upstream
//! pull (`shard_pull.rs`), whose messages go through the same `ingest_*`. A viewer is a client with a write queue
//! on a stream's ring; a new output format adds its own encoding of each frame, made once
//! per shard, next to the RTMP chunk encoding `Frame::bytes`, and its viewers write those
//! same bytes.

#![forbid(unsafe_code)]

pub mod client;
pub mod directory;
pub mod forwarder;
pub mod frame;
pub mod http_viewer;
pub mod ingest_pace;
pub mod message;
pub mod origin;
pub mod output;
pub mod rate;
pub mod recorder;
pub mod shard;
#[cfg(test)]
mod shard_tests;
pub mod slab;
pub mod snapshot;
pub mod stats;
pub mod stream;
pub mod upstream_source;
pub mod vod_download;
pub mod vod_source;
pub mod write_queue;
