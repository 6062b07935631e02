//! RTMP messages: the unit the chunk layer carries, and the well-known message type ids.
//!
//! A message is a type id, a message stream id, a 32-bit timestamp in milliseconds and an
//! opaque payload. The chunk codec (`chunk.rs`) splits messages into chunks and joins them
//! back; everything above it (control, commands, media) works on whole messages.

use bytes::Bytes;

/// One complete RTMP message. The payload is a `Bytes`, so a message decoded from a single
/// chunk is a zero-copy slice of the socket's read buffer, and a message encoded for many
/// viewers is shared rather than copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtmpMessage {
    /// Message type id (see [`MessageType`]); kept raw so unknown types pass through.
    pub type_id: u8,
    /// Message stream id: 0 for NetConnection traffic, the created stream's id otherwise.
    pub stream_id: u32,
    /// Timestamp in milliseconds; wraps at 2^32 like the protocol's.
    pub timestamp: u32,
    pub payload: Bytes,
}

impl RtmpMessage {
    pub fn new(type_id: u8, stream_id: u32, timestamp: u32, payload: impl Into<Bytes>) -> Self {
        RtmpMessage {
            type_id,
            stream_id,
            timestamp,
            payload: payload.into(),
        }
    }

    /// The well-known type of this message, if it is one.
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_id(self.type_id)
    }
}

/// The message type ids of the RTMP specification (section 5.4 and 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    SetChunkSize = 1,
    Abort = 2,
    Acknowledgement = 3,
    UserControl = 4,
    WindowAckSize = 5,
    SetPeerBandwidth = 6,
    Audio = 8,
    Video = 9,
    DataAmf3 = 15,
    SharedObjectAmf3 = 16,
    CommandAmf3 = 17,
    DataAmf0 = 18,
    SharedObjectAmf0 = 19,
    CommandAmf0 = 20,
    Aggregate = 22,
}

impl MessageType {
    pub fn from_id(id: u8) -> Option<MessageType> {
        use MessageType::*;
        Some(match id {
            1 => SetChunkSize,
            2 => Abort,
            3 => Acknowledgement,
            4 => UserControl,
            5 => WindowAckSize,
            6 => SetPeerBandwidth,
            8 => Audio,
            9 => Video,
            15 => DataAmf3,
            16 => SharedObjectAmf3,
            17 => CommandAmf3,
            18 => DataAmf0,
            19 => SharedObjectAmf0,
            20 => CommandAmf0,
            22 => Aggregate,
            _ => return None,
        })
    }

    pub fn id(self) -> u8 {
        self as u8
    }

    /// Protocol control messages (types 1 to 6) travel on chunk stream 2, message stream 0.
    pub fn is_protocol_control(self) -> bool {
        (self as u8) <= 6
    }
}

/// Chunk stream ids the encoders use. The per-connection encoder (`ChunkEncoder`) never
/// touches the shared media ids, so a viewer's header-compression state on those streams is
/// only ever set by the shared encodings, whose every message starts with a format-0 header.
pub mod csid {
    /// Protocol control and user control messages (fixed by the specification).
    pub const PROTOCOL_CONTROL: u32 = 2;
    /// NetConnection commands on message stream 0.
    pub const COMMAND: u32 = 3;
    /// Per-connection messages on a NetStream (onStatus, `|RtmpSampleAccess`, ...).
    pub const STREAM_COMMAND: u32 = 5;
    /// Shared encodings: data messages (metadata, text, cue points).
    pub const SHARED_DATA: u32 = 4;
    /// Shared encodings: audio.
    pub const SHARED_AUDIO: u32 = 6;
    /// Shared encodings: video.
    pub const SHARED_VIDEO: u32 = 7;
    /// Per-connection media (a session's own `send_media`, never shared with other viewers).
    pub const AUDIO: u32 = 8;
    pub const VIDEO: u32 = 9;
    pub const DATA: u32 = 10;
}
