//! A chunk-stream reader for viewers that walks every chunk header and never copies a media
//! payload.
//!
//! The library's `ChunkDecoder` joins each message into one buffer, which a relay needs and
//! a load-generating viewer does not: to count, check and time what it receives, a viewer
//! needs each message's header (type, timestamp, length) and the first few bytes of its
//! payload (the FLV tag header and the marker, `marker.rs`). [`ChunkScanner`] keeps exactly
//! that: per message, the header and up to [`PREFIX_LEN`] bytes of payload, copied into a
//! fixed array; the rest of each chunk is skipped where it lies in the read buffer. Only
//! small control, command and data messages are assembled whole (they are rare and the
//! viewer must act on them).
//!
//! It follows the same wire rules as the library's decoder (`src/rtmp/chunk.rs`): a format-3
//! header that starts a new message adds the previous timestamp field, and a continuation
//! chunk of a message with an extended timestamp repeats its 4 extended bytes.

use bytes::Bytes;
use thiserror::Error;

/// Payload bytes kept from the start of each media message.
pub const PREFIX_LEN: usize = 128;
/// Largest non-media message assembled whole; larger ones are skipped like media.
const MAX_ASSEMBLED: usize = 64 * 1024;
/// Chunk streams a server may use before we call it broken.
const MAX_CHUNK_STREAMS: usize = 64;
const EXTENDED: u32 = 0xFF_FFFF;

const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_ABORT: u8 = 2;
const TYPE_AUDIO: u8 = 8;
const TYPE_VIDEO: u8 = 9;
const TYPE_AGGREGATE: u8 = 22;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScanError {
    #[error("chunk stream {0}: a format 1, 2 or 3 header before any format-0 header")]
    NoPreviousHeader(u32),
    #[error("invalid chunk size {0}")]
    InvalidChunkSize(u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams in use")]
    TooManyChunkStreams,
}

/// A message as the scanner saw it.
pub struct Scanned<'a> {
    pub type_id: u8,
    pub stream_id: u32,
    pub timestamp: u32,
    /// The full payload length from the header.
    pub len: u32,
    /// Media (and oversized) messages: the first bytes of the payload. Others: all of it.
    pub prefix: &'a [u8],
    /// Control, command and data messages up to 64 KiB: the whole payload.
    pub whole: Option<Bytes>,
}

struct StreamState {
    csid: u32,
    timestamp: u32,
    /// The last timestamp field (absolute after format 0, a delta after 1 and 2).
    field: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Payload bytes of the current message still to come (0 between messages).
    remaining: u32,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    assembled: Vec<u8>,
}

/// See the module documentation.
pub struct ChunkScanner {
    chunk_size: u32,
    streams: Vec<StreamState>,
    /// A header split across reads.
    header: [u8; 18],
    header_len: usize,
    /// Index into `streams` of the chunk whose payload is being read.
    current: usize,
    /// Payload bytes of the current chunk still to come; 0 means a header is next.
    chunk_left: u32,
    bytes: u64,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        ChunkScanner {
            chunk_size: 128,
            streams: Vec::new(),
            header: [0; 18],
            header_len: 0,
            current: 0,
            chunk_left: 0,
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
        while !input.is_empty() {
            if self.chunk_left == 0 {
                // Gather a whole header, across reads if need be.
                let have = self.header_len;
                let take = (self.header.len() - have).min(input.len());
                self.header[have..have + take].copy_from_slice(&input[..take]);
                let available = have + take;
                let Some(used) = self.parse_header(available)? else {
                    self.header_len = available;
                    return Ok(());
                };
                // `used` counts from the start of the header buffer; the part that came from
                // this input is `used - have`.
                input = &input[used - have..];
                self.header_len = 0;
                let s = &self.streams[self.current];
                if s.remaining == 0 {
                    // A zero-length message is complete with its header.
                    self.finish(&mut on_message)?;
                    continue;
                }
                self.chunk_left = s.remaining.min(self.chunk_size);
                continue;
            }
            let n = (self.chunk_left as usize).min(input.len());
            let (chunk, rest) = input.split_at(n);
            input = rest;
            self.chunk_left -= n as u32;
            let s = &mut self.streams[self.current];
            s.remaining -= n as u32;
            if s.prefix_len < PREFIX_LEN {
                let k = (PREFIX_LEN - s.prefix_len).min(n);
                s.prefix[s.prefix_len..s.prefix_len + k].copy_from_slice(&chunk[..k]);
                s.prefix_len += k;
            }
            if assembles(s.type_id, s.length) {
                s.assembled.extend_from_slice(chunk);
            }
            if s.remaining == 0 {
                self.chunk_left = 0;
                self.finish(&mut on_message)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, on_message: &mut impl FnMut(Scanned<'_>)) -> Result<(), ScanError> {
        let s = &mut self.streams[self.current];
        let whole =
            assembles(s.type_id, s.length).then(|| Bytes::from(std::mem::take(&mut s.assembled)));
        let prefix_len = s.prefix_len;
        s.prefix_len = 0;
        let (type_id, stream_id, timestamp, len) = (s.type_id, s.stream_id, s.timestamp, s.length);
        if type_id == TYPE_SET_CHUNK_SIZE
            && let Some(body) = whole.as_deref().and_then(|b| b.get(..4))
        {
            let size = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7FFF_FFFF;
            if size == 0 {
                return Err(ScanError::InvalidChunkSize(size));
            }
            self.chunk_size = size;
        }
        if type_id == TYPE_ABORT
            && let Some(body) = whole.as_deref().and_then(|b| b.get(..4))
        {
            let csid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            if let Some(t) = self.streams.iter_mut().find(|t| t.csid == csid) {
                t.remaining = 0;
                t.prefix_len = 0;
                t.assembled.clear();
            }
        }
        let s = &self.streams[self.current];
        on_message(Scanned {
            type_id,
            stream_id,
            timestamp,
            len,
            prefix: &s.prefix[..prefix_len],
            whole,
        });
        Ok(())
    }

    /// Parses the header in `self.header[..available]`. `Ok(None)`: not all here yet.
    fn parse_header(&mut self, available: usize) -> Result<Option<usize>, ScanError> {
        let h = &self.header[..available];
        let Some(&first) = h.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3F {
            0 => match h.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match h.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let msg_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(m) = h.get(pos..pos + msg_len) else {
            return Ok(None);
        };
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let field = (msg_len > 0).then(|| u24(&m[0..3]));
        pos += msg_len;
        let index = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None if fmt != 0 => return Err(ScanError::NoPreviousHeader(csid)),
            None if self.streams.len() >= MAX_CHUNK_STREAMS => {
                return Err(ScanError::TooManyChunkStreams);
            }
            None => {
                self.streams.push(StreamState {
                    csid,
                    timestamp: 0,
                    field: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    remaining: 0,
                    prefix: [0; PREFIX_LEN],
                    prefix_len: 0,
                    assembled: Vec::new(),
                });
                self.streams.len() - 1
            }
        };
        let s = &self.streams[index];
        let extended = match field {
            Some(f) => f == EXTENDED,
            None => s.extended,
        };
        let ext_value = if extended {
            let Some(b) = h.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            None
        };
        let s = &mut self.streams[index];
        let continuation = fmt == 3 && s.remaining > 0;
        if continuation {
            self.current = index;
            return Ok(Some(pos));
        }
        // A new message. A format 0-2 header in the middle of one abandons it.
        s.prefix_len = 0;
        s.assembled.clear();
        match fmt {
            0 => {
                let f = ext_value.unwrap_or(field.unwrap_or(0));
                s.timestamp = f;
                s.field = f;
                s.length = u24(&m[3..6]);
                s.type_id = m[6];
                s.stream_id = u32::from_le_bytes([m[7], m[8], m[9], m[10]]);
            }
            1 | 2 => {
                let f = ext_value.unwrap_or(field.unwrap_or(0));
                s.timestamp = s.timestamp.wrapping_add(f);
                s.field = f;
                if fmt == 1 {
                    s.length = u24(&m[3..6]);
                    s.type_id = m[6];
                }
            }
            _ => {
                let f = ext_value.unwrap_or(s.field);
                s.timestamp = s.timestamp.wrapping_add(f);
            }
        }
        s.extended = extended;
        s.remaining = s.length;
        if assembles(s.type_id, s.length) {
            s.assembled.reserve(s.length as usize);
        }
        self.current = index;
        Ok(Some(pos))
    }
}

/// Whether a message is assembled whole: everything but media and aggregates, when small.
fn assembles(type_id: u8, length: u32) -> bool {
    !matches!(type_id, TYPE_AUDIO | TYPE_VIDEO | TYPE_AGGREGATE)
        && (length as usize) <= MAX_ASSEMBLED
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use shardcast::rtmp::chunk::{ChunkEncoder, encode_shared};
    use shardcast::rtmp::control::ControlMessage;
    use shardcast::rtmp::message::RtmpMessage;

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
}
