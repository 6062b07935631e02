//! glommio sockets driving the protocol state machines.
//!
//! `listener.rs` accepts connections on each shard (every shard binds the ingest port with
//! SO_REUSEPORT, so the kernel spreads connections over the cores); `connection.rs` drives
//! one connection's `ServerSession`; `recording.rs` plays a pre-recorded FLV file to one
//! viewer; `vectored.rs` is the one vectored write every byte to
//! a viewer goes through.

pub mod connection;
pub mod listener;
pub mod recording;
pub mod vectored;
