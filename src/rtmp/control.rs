//! Protocol control messages (types 1 to 6, specification sections 5.4 and 6.2): the
//! small messages two RTMP endpoints use to run the connection itself rather than to
//! carry streams.
//!
//! - Set Chunk Size (1) and Abort (2) steer the chunk layer; the [`ChunkDecoder`] already
//!   applies them as it decodes, and the session only sees them pass.
//! - Acknowledgement (3), Window Acknowledgement Size (5) and Set Peer Bandwidth (6) are
//!   flow control: a receiver acknowledges every window of bytes it read.
//! - User Control (4) carries stream events (Stream Begin, Stream EOF, ...) and pings.
//!
//! [`ControlMessage::parse`] turns an [`RtmpMessage`] into the typed form and
//! [`ControlMessage::to_message`] goes back. Parsing follows the usual rule for what a peer
//! sends: a payload too short for its type is an error, bytes beyond what the type needs
//! are ignored (some encoders pad), and an unknown user control event is passed through
//! rather than refused, since a relay has no reason to fail on one.
//!
//! [`ChunkDecoder`]: super::chunk::ChunkDecoder

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::chunk::MAX_CHUNK_SIZE;
use super::message::{MessageType, RtmpMessage};

/// Why a protocol control message could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("{what} payload is {len} bytes, needs {needed}")]
    Truncated {
        what: &'static str,
        len: usize,
        needed: usize,
    },
    #[error("invalid chunk size {0}: must be between 1 and 2147483647")]
    InvalidChunkSize(u32),
    #[error("unknown Set Peer Bandwidth limit type {0}")]
    UnknownLimitType(u8),
}

/// How a Set Peer Bandwidth message asks the receiver to limit its output window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BandwidthLimit {
    /// Limit output to the given window.
    Hard = 0,
    /// Limit output to this window or the one already in force, whichever is smaller.
    Soft = 1,
    /// Hard if the previous limit was hard, otherwise ignore the message.
    Dynamic = 2,
}

impl BandwidthLimit {
    pub fn from_u8(value: u8) -> Option<BandwidthLimit> {
        match value {
            0 => Some(BandwidthLimit::Hard),
            1 => Some(BandwidthLimit::Soft),
            2 => Some(BandwidthLimit::Dynamic),
            _ => None,
        }
    }
}

/// A User Control message's event (section 6.2 and 7.1.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserControlEvent {
    /// The stream (by message stream id) is ready to carry data.
    StreamBegin(u32),
    /// Playback of the stream is over.
    StreamEof(u32),
    /// The stream has no more data for now.
    StreamDry(u32),
    /// The client's buffer length for a stream, in milliseconds.
    SetBufferLength {
        stream_id: u32,
        buffer_ms: u32,
    },
    /// The stream is a recorded one.
    StreamIsRecorded(u32),
    /// The sender's timestamp, to be echoed in a Ping Response.
    PingRequest(u32),
    PingResponse(u32),
    /// Any other event (SWF verification and the like), its data as received.
    Unknown {
        event_type: u16,
        data: Bytes,
    },
}

impl UserControlEvent {
    /// The 16-bit event type on the wire.
    pub fn event_type(&self) -> u16 {
        match self {
            UserControlEvent::StreamBegin(_) => 0,
            UserControlEvent::StreamEof(_) => 1,
            UserControlEvent::StreamDry(_) => 2,
            UserControlEvent::SetBufferLength { .. } => 3,
            UserControlEvent::StreamIsRecorded(_) => 4,
            UserControlEvent::PingRequest(_) => 6,
            UserControlEvent::PingResponse(_) => 7,
            UserControlEvent::Unknown { event_type, .. } => *event_type,
        }
    }

    fn parse(payload: &Bytes) -> Result<UserControlEvent, ControlError> {
        let event_type = payload
            .first_chunk::<2>()
            .map(|b| u16::from_be_bytes(*b))
            .ok_or(ControlError::Truncated {
                what: "User Control",
                len: payload.len(),
                needed: 2,
            })?;
        let data = payload.get(2..).unwrap_or_default();
        let what = match event_type {
            0 => "Stream Begin",
            1 => "Stream EOF",
            2 => "Stream Dry",
            3 => "Set Buffer Length",
            4 => "Stream Is Recorded",
            6 => "Ping Request",
            7 => "Ping Response",
            _ => {
                return Ok(UserControlEvent::Unknown {
                    event_type,
                    data: payload.slice(2..),
                });
            }
        };
        let needed = if event_type == 3 { 8 } else { 4 };
        let first = be_u32(data);
        let second = data.get(4..).and_then(be_u32);
        let truncated = ControlError::Truncated {
            what,
            len: payload.len(),
            needed: 2 + needed,
        };
        let first = first.ok_or(truncated.clone())?;
        Ok(match event_type {
            0 => UserControlEvent::StreamBegin(first),
            1 => UserControlEvent::StreamEof(first),
            2 => UserControlEvent::StreamDry(first),
            3 => UserControlEvent::SetBufferLength {
                stream_id: first,
                buffer_ms: second.ok_or(truncated)?,
            },
            4 => UserControlEvent::StreamIsRecorded(first),
            6 => UserControlEvent::PingRequest(first),
            _ => UserControlEvent::PingResponse(first),
        })
    }

    fn encoded_len(&self) -> usize {
        2 + match self {
            UserControlEvent::SetBufferLength { .. } => 8,
            UserControlEvent::Unknown { data, .. } => data.len(),
            _ => 4,
        }
    }

    fn write(&self, out: &mut BytesMut) {
        out.put_u16(self.event_type());
        match self {
            UserControlEvent::StreamBegin(v)
            | UserControlEvent::StreamEof(v)
            | UserControlEvent::StreamDry(v)
            | UserControlEvent::StreamIsRecorded(v)
            | UserControlEvent::PingRequest(v)
            | UserControlEvent::PingResponse(v) => out.put_u32(*v),
            UserControlEvent::SetBufferLength {
                stream_id,
                buffer_ms,
            } => {
                out.put_u32(*stream_id);
                out.put_u32(*buffer_ms);
            }
            UserControlEvent::Unknown { data, .. } => out.put_slice(data),
        }
    }
}

/// A protocol control message (types 1 to 6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// The sender's new chunk size, for every chunk it sends from now on.
    SetChunkSize(u32),
    /// Discard the partly received message on this chunk stream.
    Abort {
        csid: u32,
    },
    /// Bytes received so far (wrapping at 2^32), sent once per window.
    Acknowledgement {
        sequence: u32,
    },
    /// How many bytes the sender may send before it expects an Acknowledgement.
    WindowAckSize(u32),
    /// Asks the receiver to limit its output window.
    SetPeerBandwidth {
        size: u32,
        limit: BandwidthLimit,
    },
    UserControl(UserControlEvent),
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    bytes.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
}

impl ControlMessage {
    /// The typed form of `msg`, or `None` if it is not a protocol control message.
    pub fn parse(msg: &RtmpMessage) -> Result<Option<ControlMessage>, ControlError> {
        let Some(kind) = msg.message_type().filter(|t| t.is_protocol_control()) else {
            return Ok(None);
        };
        let payload = &msg.payload;
        let word = |what: &'static str| {
            be_u32(payload).ok_or(ControlError::Truncated {
                what,
                len: payload.len(),
                needed: 4,
            })
        };
        let parsed = match kind {
            MessageType::SetChunkSize => {
                let size = word("Set Chunk Size")?;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ControlError::InvalidChunkSize(size));
                }
                ControlMessage::SetChunkSize(size)
            }
            MessageType::Abort => ControlMessage::Abort {
                csid: word("Abort")?,
            },
            MessageType::Acknowledgement => ControlMessage::Acknowledgement {
                sequence: word("Acknowledgement")?,
            },
            MessageType::WindowAckSize => {
                ControlMessage::WindowAckSize(word("Window Acknowledgement Size")?)
            }
            MessageType::SetPeerBandwidth => {
                let Some(&[a, b, c, d, limit]) = payload.first_chunk::<5>() else {
                    return Err(ControlError::Truncated {
                        what: "Set Peer Bandwidth",
                        len: payload.len(),
                        needed: 5,
                    });
                };
                ControlMessage::SetPeerBandwidth {
                    size: u32::from_be_bytes([a, b, c, d]),
                    limit: BandwidthLimit::from_u8(limit)
                        .ok_or(ControlError::UnknownLimitType(limit))?,
                }
            }
            _ => ControlMessage::UserControl(UserControlEvent::parse(payload)?),
        };
        Ok(Some(parsed))
    }

    /// The message type this control message travels as.
    pub fn message_type(&self) -> MessageType {
        match self {
            ControlMessage::SetChunkSize(_) => MessageType::SetChunkSize,
            ControlMessage::Abort { .. } => MessageType::Abort,
            ControlMessage::Acknowledgement { .. } => MessageType::Acknowledgement,
            ControlMessage::WindowAckSize(_) => MessageType::WindowAckSize,
            ControlMessage::SetPeerBandwidth { .. } => MessageType::SetPeerBandwidth,
            ControlMessage::UserControl(_) => MessageType::UserControl,
        }
    }

    /// The message to send, on message stream 0 with timestamp 0 as the specification asks
    /// (chunk stream 2, `csid::PROTOCOL_CONTROL`, is the encoder caller's choice).
    pub fn to_message(&self) -> RtmpMessage {
        let len = match self {
            ControlMessage::SetPeerBandwidth { .. } => 5,
            ControlMessage::UserControl(event) => event.encoded_len(),
            _ => 4,
        };
        let mut out = BytesMut::with_capacity(len);
        match self {
            ControlMessage::SetChunkSize(v)
            | ControlMessage::Abort { csid: v }
            | ControlMessage::Acknowledgement { sequence: v }
            | ControlMessage::WindowAckSize(v) => out.put_u32(*v),
            ControlMessage::SetPeerBandwidth { size, limit } => {
                out.put_u32(*size);
                out.put_u8(*limit as u8);
            }
            ControlMessage::UserControl(event) => event.write(&mut out),
        }
        RtmpMessage::new(self.message_type().id(), 0, 0, out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(type_id: u8, payload: &[u8]) -> RtmpMessage {
        RtmpMessage::new(type_id, 0, 0, Bytes::copy_from_slice(payload))
    }

    fn all_kinds() -> Vec<ControlMessage> {
        use UserControlEvent::*;
        let mut all = vec![
            ControlMessage::SetChunkSize(4096),
            ControlMessage::SetChunkSize(MAX_CHUNK_SIZE),
            ControlMessage::Abort { csid: 65_599 },
            ControlMessage::Acknowledgement { sequence: u32::MAX },
            ControlMessage::WindowAckSize(2_500_000),
        ];
        for limit in [
            BandwidthLimit::Hard,
            BandwidthLimit::Soft,
            BandwidthLimit::Dynamic,
        ] {
            all.push(ControlMessage::SetPeerBandwidth {
                size: 5_000_000,
                limit,
            });
        }
        for event in [
            StreamBegin(1),
            StreamEof(2),
            StreamDry(3),
            SetBufferLength {
                stream_id: 1,
                buffer_ms: 3000,
            },
            StreamIsRecorded(4),
            PingRequest(123_456),
            PingResponse(u32::MAX),
            Unknown {
                event_type: 26,
                data: Bytes::from_static(&[1, 2, 3]),
            },
            Unknown {
                event_type: 5,
                data: Bytes::new(),
            },
        ] {
            all.push(ControlMessage::UserControl(event));
        }
        all
    }

    #[test]
    fn round_trips_every_kind() {
        for control in all_kinds() {
            let msg = control.to_message();
            assert_eq!((msg.stream_id, msg.timestamp), (0, 0));
            assert_eq!(msg.type_id, control.message_type().id());
            assert_eq!(ControlMessage::parse(&msg), Ok(Some(control)));
        }
    }

    #[test]
    fn wire_bytes_match_the_specification() {
        let cases: [(ControlMessage, u8, &[u8]); 4] = [
            (ControlMessage::SetChunkSize(4096), 1, &[0, 0, 0x10, 0]),
            (
                ControlMessage::SetPeerBandwidth {
                    size: 2_500_000,
                    limit: BandwidthLimit::Dynamic,
                },
                6,
                &[0x00, 0x26, 0x25, 0xA0, 2],
            ),
            (
                ControlMessage::UserControl(UserControlEvent::StreamBegin(1)),
                4,
                &[0, 0, 0, 0, 0, 1],
            ),
            (
                ControlMessage::UserControl(UserControlEvent::SetBufferLength {
                    stream_id: 1,
                    buffer_ms: 100,
                }),
                4,
                &[0, 3, 0, 0, 0, 1, 0, 0, 0, 100],
            ),
        ];
        for (control, type_id, bytes) in cases {
            let msg = control.to_message();
            assert_eq!(msg.type_id, type_id);
            assert_eq!(&msg.payload[..], bytes);
        }
    }

    #[test]
    fn other_message_types_are_not_control() {
        for type_id in [0, 7, 8, 9, 18, 20, 22, 255] {
            assert_eq!(ControlMessage::parse(&raw(type_id, &[0; 8])), Ok(None));
        }
    }

    #[test]
    fn truncated_payloads_are_errors() {
        for type_id in [1, 2, 3, 5] {
            for len in 0..4 {
                let err = ControlMessage::parse(&raw(type_id, &vec![0x10; len])).unwrap_err();
                assert!(
                    matches!(err, ControlError::Truncated { len: l, needed: 4, .. } if l == len)
                );
            }
        }
        assert!(matches!(
            ControlMessage::parse(&raw(6, &[0, 0, 0, 1])),
            Err(ControlError::Truncated { needed: 5, .. })
        ));
        assert!(matches!(
            ControlMessage::parse(&raw(4, &[0])),
            Err(ControlError::Truncated { needed: 2, .. })
        ));
        assert!(matches!(
            ControlMessage::parse(&raw(4, &[0, 6, 0, 0, 1])),
            Err(ControlError::Truncated {
                what: "Ping Request",
                needed: 6,
                ..
            })
        ));
        assert!(matches!(
            ControlMessage::parse(&raw(4, &[0, 3, 0, 0, 0, 1, 0, 0, 1])),
            Err(ControlError::Truncated { needed: 10, .. })
        ));
    }

    #[test]
    fn extra_bytes_are_ignored() {
        assert_eq!(
            ControlMessage::parse(&raw(5, &[0, 0, 1, 0, 0xEE, 0xEE])),
            Ok(Some(ControlMessage::WindowAckSize(256)))
        );
        assert_eq!(
            ControlMessage::parse(&raw(4, &[0, 7, 0, 0, 0, 9, 0xEE])),
            Ok(Some(ControlMessage::UserControl(
                UserControlEvent::PingResponse(9)
            )))
        );
        assert_eq!(
            ControlMessage::parse(&raw(6, &[0, 0, 1, 0, 1, 0xEE])),
            Ok(Some(ControlMessage::SetPeerBandwidth {
                size: 256,
                limit: BandwidthLimit::Soft
            }))
        );
    }

    #[test]
    fn invalid_values_are_errors() {
        assert_eq!(
            ControlMessage::parse(&raw(1, &[0, 0, 0, 0])),
            Err(ControlError::InvalidChunkSize(0))
        );
        assert_eq!(
            ControlMessage::parse(&raw(1, &[0x80, 0, 0, 1])),
            Err(ControlError::InvalidChunkSize(0x8000_0001))
        );
        assert_eq!(
            ControlMessage::parse(&raw(6, &[0, 0, 1, 0, 3])),
            Err(ControlError::UnknownLimitType(3))
        );
    }

    #[test]
    fn unknown_user_control_event_keeps_its_data_without_copying() {
        let msg = raw(4, &[0, 0x1A, 9, 8, 7]);
        let Ok(Some(ControlMessage::UserControl(UserControlEvent::Unknown { event_type, data }))) =
            ControlMessage::parse(&msg)
        else {
            panic!("not an unknown user control event");
        };
        assert_eq!(event_type, 0x1A);
        assert_eq!(&data[..], &[9, 8, 7]);
        assert_eq!(data.as_ptr(), msg.payload[2..].as_ptr());
    }
}
