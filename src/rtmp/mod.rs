//! The RTMP protocol as deterministic state machines: bytes in, events and bytes out.
//!
//! Nothing in here opens a socket or reads a clock (in the manner of quinn-proto and
//! rustls); `src/net/` drives these machines with real sockets, and tests drive them with
//! byte strings. The layers, bottom up:
//!
//! - `handshake.rs`: C0/C1/C2 and S0/S1/S2, plain and digest, both roles.
//! - `message.rs`: the message unit and its type ids; `chunk.rs`: splitting messages into
//!   chunks and joining them back, including the *shared encoding* every viewer of a stream
//!   writes unchanged.
//! - `control.rs`: protocol control and user control messages.
//! - `amf0.rs`, `amf3.rs`: the value encodings commands and data messages use;
//!   `command.rs`: commands (`connect`, `publish`, `play`, `onStatus`...) and data messages.
//! - `capabilities.rs`: Enhanced RTMP capability negotiation (`fourCcList`, `capsEx`) in
//!   `connect` and its `_result`.
//! - `relay_path.rs`: the relays a pull or push has passed through (`shardcastVia`,
//!   `shardcastHops` in `connect`), so relay trees refuse loops.
//! - `aggregate.rs`: aggregate messages (type 22) split into the messages they carry.
//! - `session.rs`: acknowledgements, pings and chunk sizes, shared by both roles.
//! - `server_session.rs` and `client_session.rs`: the two roles as sessions with an event
//!   queue and an output queue.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod amf0;
pub mod amf3;
pub mod capabilities;
pub mod chunk;
pub mod client_session;
pub mod command;
pub mod control;
pub mod handshake;
pub mod message;
pub mod relay_path;
pub mod server_session;
mod session;

use thiserror::Error;

pub use capabilities::Capabilities;
pub use chunk::{ChunkDecoder, ChunkEncoder, DecoderLimits};
pub use client_session::{ClientEvent, ClientSession, ClientSessionConfig};
pub use message::{MessageType, RtmpMessage};
pub use relay_path::RelayPath;
pub use server_session::{MediaKind, ServerEvent, ServerSession, ServerSessionConfig};

/// Why a session ended: the peer broke the protocol or one of our limits. The connection
/// that produced it is closed; nothing else is affected.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("handshake: {0}")]
    Handshake(#[from] handshake::HandshakeError),
    #[error("chunk stream: {0}")]
    Chunk(#[from] chunk::ChunkError),
    #[error("control message: {0}")]
    Control(#[from] control::ControlError),
    #[error("command: {0}")]
    Command(#[from] command::CommandError),
    #[error("protocol: {0}")]
    Protocol(String),
}
