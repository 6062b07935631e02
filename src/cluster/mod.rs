//! Relay trees: what lets several shardcast hosts (and other RTMP servers) serve one
//! audience together, as deterministic logic the shards call.
//!
//! - `backoff.rs`: when to try a failed upstream or push target again (exponential, with
//!   jitter, capped), so a dead origin is not hammered and many edges do not retry in step.
//! - `origin_ring.rs`: which origin an edge asks for a stream, by rendezvous (highest
//!   random weight) hashing of the stream name, so every edge asks the same origin and
//!   the failover order is the same everywhere.
//!
//! The loop guard lives with the protocol (`src/rtmp/relay_path.rs`), since it travels in
//! `connect`.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod origin_ring;

pub use backoff::Backoff;
pub use origin_ring::OriginRing;
