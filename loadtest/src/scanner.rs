//! A chunk-stream reader for viewers that follows every chunk header and never copies a
//! media payload.
//!
//! The library's `ChunkDecoder` joins each message into one buffer, which a relay needs and
//! a load-generating viewer does not: to count, check and time what it receives, a viewer
//! needs each message's header (type, timestamp, length) and the first few bytes of its
//! payload (the FLV tag header and the marker, `marker.rs`). [`ChunkScanner`] keeps exactly
//! that: per message, the header and up to [`PREFIX_LEN`] bytes of payload, copied into a
//! fixed array; the rest of each chunk is skipped where it lies in the read buffer. Only
//! small control, command and data messages are assembled whole (they are rare and the
//! viewer must act on them), and protocol control messages come parsed.
//!
//! It is built on the library's chunk layer, `ChunkReader`, the same state machine under
//! `ChunkDecoder`: chunk headers, timestamps, extended timestamps, limits and errors are
//! exactly the relay's. `ChunkReader` hands out each chunk's payload as a slice of the
//! read buffer, so the scanner only decides what to keep of it. Set Chunk Size and Abort
//! are parsed by `shardcast::rtmp::control` and applied to the reader, as the decoder
//! applies them.

use bytes::Bytes;
use shardcast::rtmp::chunk::{ChunkError, ChunkReader, DecoderLimits, MAX_MESSAGE_LEN};
use shardcast::rtmp::control::{ControlError, ControlMessage};
use shardcast::rtmp::message::{MessageType, RtmpMessage};
use thiserror::Error;

/// Payload bytes kept from the start of each media message.
pub const PREFIX_LEN: usize = 128;
/// Largest non-media message assembled whole; larger ones are skipped like media.
const MAX_ASSEMBLED: usize = 64 * 1024;
/// Chunk streams a server may use before we call it broken.
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScanError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// A message as the scanner saw it.
pub struct Scanned<'a> {
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    /// The full payload length from the header.
    pub len: u32,
    /// The first (up to [`PREFIX_LEN`]) bytes of the payload.
    pub prefix: &'a [u8],
    /// Control, command and data messages up to 64 KiB: the whole payload.
    pub whole: Option<Bytes>,
    /// A protocol control message, parsed.
    pub control: Option<ControlMessage>,
}

/// What the scanner keeps of the current message on one chunk stream.
struct Kept {
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// Whether the message is assembled whole, decided by its first chunk.
    assemble: bool,
    assembled: Vec<u8>,
}

impl Default for Kept {
    fn default() -> Self {
        Kept {
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            assemble: false,
            assembled: Vec::new(),
        }
    }
}

/// See the module documentation.
pub struct ChunkScanner {
    reader: ChunkReader<Kept>,
    bytes: u64,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        // Media is never held, so any message length the protocol allows is fine.
        let limits = DecoderLimits {
            max_message_len: MAX_MESSAGE_LEN,
            max_chunk_streams: MAX_CHUNK_STREAMS,
            ..DecoderLimits::default()
        };
        ChunkScanner {
            reader: ChunkReader::new(limits),
            bytes: 0,
        }
    }
}

impl ChunkScanner {
    /// Total bytes scanned.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Scans `input`, calling `on_message` for each message completed in it.
    pub fn scan(
        &mut self,
        mut input: &[u8],
        mut on_message: impl FnMut(Scanned<'_>),
    ) -> Result<(), ScanError> {
        self.bytes += input.len() as u64;
        loop {
            let (used, chunk) = self.reader.next_chunk(input)?;
            let Some(c) = chunk else {
                return Ok(());
            };
            input = input.get(used..).unwrap_or_default();
            let last = c.is_last();
            let (type_id, stream_id, timestamp, len) =
                (c.type_id, c.stream_id, c.timestamp, c.length);
            let payload = c.payload;
            let kept = c.state;
            if c.offset == 0 {
                // A new message (dropping any the server abandoned on this chunk stream).
                kept.prefix_len = 0;
                kept.assemble = assembles(type_id, len);
                kept.assembled.clear();
                if kept.assemble {
                    kept.assembled.reserve(len as usize);
                }
            }
            if kept.prefix_len < PREFIX_LEN {
                let k = (PREFIX_LEN - kept.prefix_len).min(payload.len());
                if let (Some(to), Some(from)) = (
                    kept.prefix.get_mut(kept.prefix_len..kept.prefix_len + k),
                    payload.get(..k),
                ) {
                    to.copy_from_slice(from);
                }
                kept.prefix_len += k;
            }
            if kept.assemble {
                kept.assembled.extend_from_slice(payload);
            }
            if !last {
                continue;
            }

            let whole = kept
                .assemble
                .then(|| Bytes::from(std::mem::take(&mut kept.assembled)));
            let control = match &whole {
                Some(body) if is_protocol_control(type_id) => {
                    let msg = RtmpMessage::new(type_id, stream_id, timestamp, body.clone());
                    ControlMessage::parse(&msg)?
                }
                _ => None,
            };
            let steers_chunks = match &control {
                Some(c @ (ControlMessage::SetChunkSize(_) | ControlMessage::Abort { .. })) => {
                    Some(c.clone())
                }
                _ => None,
            };
            on_message(Scanned {
                type_id,
                stream_id,
                timestamp,
                len,
                prefix: kept.prefix.get(..kept.prefix_len).unwrap_or_default(),
                whole,
                control,
            });
            // Before the next chunk header, as the library's decoder does.
            match steers_chunks {
                Some(ControlMessage::SetChunkSize(size)) => self.reader.set_chunk_size(size)?,
                Some(ControlMessage::Abort { csid }) => {
                    if let Some(aborted) = self.reader.abort(csid) {
                        aborted.assembled = Vec::new();
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether a message is assembled whole: everything but media and aggregates, when small.
fn assembles(type_id: u8, length: u32) -> bool {
    !matches!(
        MessageType::from_id(type_id),
        Some(MessageType::Audio | MessageType::Video | MessageType::Aggregate)
    ) && (length as usize) <= MAX_ASSEMBLED
}

fn is_protocol_control(type_id: u8) -> bool {
    MessageType::from_id(type_id).is_some_and(MessageType::is_protocol_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use shardcast::rtmp::chunk::{ChunkDecoder, ChunkEncoder, encode_shared};
    use shardcast::rtmp::control::UserControlEvent;

    fn collect(
        scanner: &mut ChunkScanner,
        input: &[u8],
        split: usize,
    ) -> Vec<(u8, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            scanner
                .scan(piece, |m| {
                    let body = m
                        .whole
                        .map(|b| b.to_vec())
                        .unwrap_or_else(|| m.prefix.to_vec());
                    out.push((m.type_id, m.timestamp, m.len, body));
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn reads_what_the_library_encodes_at_any_split() {
        let mut wire = BytesMut::new();
        let mut enc = ChunkEncoder::new();
        enc.encode(
            2,
            &ControlMessage::SetChunkSize(4096).to_message(),
            &mut wire,
        );
        enc.set_chunk_size(4096);
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut expected = vec![(1u8, 0u32, 4u32, vec![0, 0, 16, 0])];
        for i in 0..5u32 {
            let ts = 1000 + i * 33;
            wire.extend_from_slice(&encode_shared(9, ts, &big[..10_000 + i as usize], 4096));
            expected.push((9, ts, 10_000 + i, big[..PREFIX_LEN].to_vec()));
            let audio = RtmpMessage::new(8, 1, ts + 5, vec![0xAF, 1, 2, 3]);
            enc.encode(6, &audio, &mut wire);
            expected.push((8, ts + 5, 4, vec![0xAF, 1, 2, 3]));
            let cmd = RtmpMessage::new(20, 1, ts, big[..300].to_vec());
            enc.encode(5, &cmd, &mut wire);
            expected.push((20, ts, 300, big[..300].to_vec()));
        }
        for split in [1, 7, 128, 4096, 100_000] {
            let mut scanner = ChunkScanner::default();
            assert_eq!(
                collect(&mut scanner, &wire, split),
                expected,
                "split {split}"
            );
            assert_eq!(scanner.bytes(), wire.len() as u64);
        }
    }

    #[test]
    fn extended_timestamps() {
        let mut wire = BytesMut::new();
        let mut enc = ChunkEncoder::new();
        let payload = vec![7u8; 300];
        for ts in [0x0100_0000u32, 0x0100_0021, 0x0100_0042] {
            enc.encode(6, &RtmpMessage::new(9, 1, ts, payload.clone()), &mut wire);
        }
        let mut scanner = ChunkScanner::default();
        let got: Vec<u32> = collect(&mut scanner, &wire, 5)
            .iter()
            .map(|m| m.1)
            .collect();
        assert_eq!(got, vec![0x0100_0000, 0x0100_0021, 0x0100_0042]);
    }

    /// Sees the same messages as the library's decoder (headers, and the payload's first
    /// bytes) on a stream with every header form, extended timestamps, an abandoned
    /// message, an Abort and chunk size changes, at any split.
    #[test]
    fn agrees_with_the_library_decoder() {
        let mut wire = BytesMut::new();
        let mut enc = ChunkEncoder::new();
        let big: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 253) as u8).collect();
        for (round, chunk_size) in [128u32, 4096, 1000, 60_000].into_iter().enumerate() {
            let size = ControlMessage::SetChunkSize(chunk_size).to_message();
            enc.encode(2, &size, &mut wire);
            enc.set_chunk_size(chunk_size);
            let base = 0x00FF_FF00u32.wrapping_add(round as u32 * 0x100);
            for i in 0..6u32 {
                let ts = base.wrapping_add(i * 40);
                let video = RtmpMessage::new(9, 1, ts, big[..20_000 + i as usize].to_vec());
                enc.encode(7, &video, &mut wire);
                let audio = RtmpMessage::new(8, 1, ts + 3, big[i as usize..][..200].to_vec());
                enc.encode(6, &audio, &mut wire);
                let ping = ControlMessage::UserControl(UserControlEvent::PingRequest(ts));
                enc.encode(2, &ping.to_message(), &mut wire);
            }
        }
        // A video message abandoned after its first chunk, a new one on the same chunk
        // stream, then one aborted after its first chunk.
        let size = ControlMessage::SetChunkSize(4096).to_message();
        enc.encode(2, &size, &mut wire);
        enc.set_chunk_size(4096);
        let partial = encode_shared(9, 5, &big[..10_000], 4096);
        wire.extend_from_slice(&partial[..12 + 4096]);
        wire.extend_from_slice(&encode_shared(9, 6, &big[..5000], 4096));
        wire.extend_from_slice(&partial[..12 + 4096]);
        let abort = ControlMessage::Abort { csid: 7 }.to_message();
        enc.encode(2, &abort, &mut wire);
        wire.extend_from_slice(&encode_shared(9, 7, &big[..300], 4096));
        let wire = wire.freeze();

        let mut dec = ChunkDecoder::new(Default::default());
        dec.feed(wire.clone());
        let mut expected = Vec::new();
        while let Some(m) = dec.next_message().unwrap() {
            let len = m.payload.len();
            let prefix = m.payload[..len.min(PREFIX_LEN)].to_vec();
            expected.push((m.type_id, m.timestamp, len as u32, prefix));
        }
        assert_eq!(expected.len(), 4 * (1 + 6 * 3) + 1 + 3);
        for split in [1, 3, 17, 4096, 16 * 1024, 1 << 20] {
            let mut scanner = ChunkScanner::default();
            let mut got = Vec::new();
            for piece in wire.chunks(split) {
                scanner
                    .scan(piece, |m| {
                        got.push((m.type_id, m.timestamp, m.len, m.prefix.to_vec()))
                    })
                    .unwrap();
            }
            assert_eq!(got, expected, "split {split}");
        }
    }

    #[test]
    fn control_messages_come_parsed() {
        let mut wire = BytesMut::new();
        let mut enc = ChunkEncoder::new();
        let sent = [
            ControlMessage::WindowAckSize(2_500_000),
            ControlMessage::UserControl(UserControlEvent::PingRequest(77)),
            ControlMessage::UserControl(UserControlEvent::StreamEof(1)),
        ];
        for c in &sent {
            enc.encode(2, &c.to_message(), &mut wire);
        }
        let mut got = Vec::new();
        ChunkScanner::default()
            .scan(&wire, |m| got.extend(m.control))
            .unwrap();
        assert_eq!(got, sent);
    }

    #[test]
    fn errors_are_the_library_ones() {
        let mut scanner = ChunkScanner::default();
        assert_eq!(
            scanner.scan(&[0x43], |_| {}),
            Err(ScanError::Chunk(ChunkError::NoPreviousHeader { csid: 3 }))
        );

        let mut wire = BytesMut::new();
        let zero = RtmpMessage::new(MessageType::SetChunkSize.id(), 0, 0, vec![0, 0, 0, 0]);
        ChunkEncoder::new().encode(2, &zero, &mut wire);
        assert_eq!(
            ChunkScanner::default().scan(&wire, |_| {}),
            Err(ScanError::Control(ControlError::InvalidChunkSize(0)))
        );
    }
}
