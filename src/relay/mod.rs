//! The relay: shards, the stream table, and fan-out.
//!
//! - `shard.rs`: what one core owns, and the messages between shards.
//! - `mailbox.rs`: the bounded cross-core channels those messages travel in, and how a
//!   sleeping core is woken.
//! - `directory.rs`: which shard is the origin of each stream (read on arrivals only).
//! - `origin.rs`: a publisher's messages made into frames, each encoded once.
//! - `frame.rs`: frames, stream events, and the per-stream ring of recent ones.
//! - `stream.rs`: a stream on one shard: its ring, GOP and headers, viewers, fan-out task.
//! - `viewer.rs`: one viewer's write queue and cursor; the vectored flush.
//! - `peer.rs`: one client connection as the relay sees it.
//! - `signal.rs`: wake-ups between the tasks of one shard.

pub mod directory;
pub mod frame;
pub mod mailbox;
pub mod origin;
pub mod peer;
pub mod shard;
pub mod signal;
pub mod stream;
pub mod viewer;
