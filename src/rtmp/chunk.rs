//! The RTMP chunk stream (specification section 5.3): how messages are cut into chunks on
//! the wire, and joined back.
//!
//! RTMP never sends a message as one unit. It cuts each message into chunks of at most the
//! sender's *chunk size* (128 bytes until a Set Chunk Size message says otherwise), and every
//! chunk carries a small header naming its *chunk stream* (csid). Chunks of messages on
//! different chunk streams may interleave, so a big video frame does not hold up audio. To
//! keep headers small, each chunk stream remembers the previous header and a new one only
//! states what changed:
//!
//! | format | message header                                     | meaning                     |
//! |--------|----------------------------------------------------|-----------------------------|
//! | 0      | timestamp, length, type id, message stream id (11) | a new message, all explicit |
//! | 1      | timestamp delta, length, type id (7)               | same message stream         |
//! | 2      | timestamp delta (3)                                | same stream, length, type   |
//! | 3      | nothing (0)                                        | next chunk of this message, or a new message exactly like the last one |
//!
//! A 24-bit timestamp or delta of 0xFFFFFF means "the real value follows in 4 more bytes"
//! (the extended timestamp).
//!
//! # Two layers: [`ChunkReader`] and [`ChunkDecoder`]
//!
//! [`ChunkReader`] is the chunk stream state machine, the only one in the codebase: it
//! parses each chunk header against the state of its chunk stream (all the rules below,
//! the limits on chunk streams and message length), and hands out the chunk's payload as a
//! slice of the caller's input, with the message's header and the payload's offset within
//! the message, chunk by chunk ([`next_chunk`](ChunkReader::next_chunk)). It copies no
//! payload and assembles nothing. [`ChunkDecoder`] assembles messages on top of it. The
//! reader is public for consumers that do not want whole messages: the load generator's
//! viewers keep only each media message's first bytes, and at thousands of viewers per
//! core assembling every frame would be most of their cost. Sharing the state machine
//! rather than keeping a second one means both read the wire by exactly the same rules.
//!
//! A header split between two inputs is kept by the reader (a copy of at most
//! [`MAX_HEADER_LEN`] - 1 bytes) and completed from the next input, so callers can hand it
//! any slicing of the stream, including a reused read buffer.
//!
//! # Decoding: [`ChunkDecoder`]
//!
//! The decoder is sans-I/O: the session [`feed`](ChunkDecoder::feed)s whatever the socket
//! gave and pulls messages with [`next_message`](ChunkDecoder::next_message) until it
//! returns `Ok(None)`. Everything it reads comes from a peer we do not trust, so it never
//! panics on input, never sizes an allocation by a number the peer wrote without a cap, and
//! reports every violation as a [`ChunkError`]; after the first error it stays failed (the
//! session closes the connection).
//!
//! Zero copy: fed input is kept as a queue of the caller's `Bytes` rather than copied into
//! one `BytesMut`. `BytesMut::from(Bytes)` (and `Bytes::try_into_mut`) only avoid a copy
//! when the `Bytes` is the sole owner of its whole allocation, which a slice split off a
//! reader's long-lived read buffer never is, so a `BytesMut` receive buffer would copy every
//! byte once more on feed. With the queue, a message that arrives in one chunk and within one
//! fed `Bytes` (most audio, and most video once the peer raised its chunk size) is handed up
//! as a slice of that very `Bytes` (which keeps that read buffer alive while the message
//! lives; the relay re-encodes media with `encode_shared` and drops it soon). A message
//! spanning chunks is assembled once into its own buffer. Headers are parsed in place, or
//! from the reader's copy when a read split one. Chunk payload is consumed as it arrives
//! rather than waiting for a whole chunk, so nothing but one partial header is left
//! unparsed after `next_message` returned `Ok(None)`, whatever chunk size the peer
//! announced. At chunk size 4096 the whole decode costs about what one more copy of the
//! input would (`benches/chunk_codec.rs`), so the queue roughly halves the decoder's cost.
//!
//! Two interoperability choices, both following ffmpeg and SRS:
//! - A format-3 header that starts a new message adds the previous header's timestamp
//!   field, and after a format-0 header that field is the absolute timestamp (ffmpeg's
//!   encoder relies on exactly this). nginx-rtmp reads it as a delta of 0 instead; our
//!   encoder never sends a format 3 right after a format 0, so both kinds of receiver agree
//!   on what we send.
//! - When a chunk stream's last header had an extended timestamp, a format-3 continuation
//!   chunk is expected to repeat those 4 bytes (ffmpeg, librtmp, Flash), but old encoders
//!   omit them. If the 4 bytes after such a header differ from the stored value, they are
//!   taken as payload (when a read split them off, the reader hands them out from its
//!   copy). A payload that happens to start with exactly those 4 bytes from an encoder
//!   that omits them would be misread; no receiver can tell the two apart. (If fewer than
//!   4 bytes have arrived, the reader waits for them.)
//!
//! A format 0, 1 or 2 header arriving on a chunk stream in the middle of a message means
//! the sender abandoned that message: the partial one is dropped, as an Abort would (the
//! reader signals it by starting the new message at offset 0).
//!
//! # Encoding: [`ChunkEncoder`] and [`encode_shared`]
//!
//! [`ChunkEncoder`] is the per-connection encoder for control, commands and anything else
//! addressed to one peer: it compresses headers against the last header it sent on each
//! chunk stream.
//!
//! [`encode_shared`] is for media: the relay encodes each audio, video or data message
//! *once* and writes the same `Bytes` to every viewer. That is sound because
//! - every shared message starts with a format-0 header, which resets the receiver's state
//!   for that chunk stream, so decoding it depends on nothing the viewer saw before;
//! - the shared chunk stream ids (`csid::SHARED_AUDIO`, `SHARED_VIDEO`, `SHARED_DATA`) are
//!   never used by the per-connection encoder, so a viewer's state on them is only ever set
//!   by other shared encodings, and a continuation chunk on them always follows its own
//!   format-0 chunk;
//! - every viewer plays the stream on the same message stream id, [`SHARED_STREAM_ID`] (1);
//! - chunking depends on the chunk size, so every viewer must have been sent the same Set
//!   Chunk Size (the relay's outgoing chunk size) before its first shared buffer;
//! - a shared buffer is whole chunks of one whole message, so it can be written between any
//!   two outputs of the per-connection encoder (never in the middle of one).
//!
//! The price is a 12-byte header per message where header compression would send 1 to 4
//! bytes: a few bytes per frame, against one encode per frame instead of one per viewer.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::message::{MessageType, RtmpMessage, csid};

/// The chunk size both directions use until a Set Chunk Size message (section 5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size Set Chunk Size can announce: the field's top bit must be zero.
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// The smallest chunk stream id; 0 and 1 in the basic header escape to the longer forms.
pub const MIN_CSID: u32 = 2;
/// The largest chunk stream id the 3-byte basic header can carry (64 + 0xFFFF).
pub const MAX_CSID: u32 = 65_599;
/// The largest message the 24-bit length field can announce.
pub const MAX_MESSAGE_LEN: u32 = 0xFF_FFFF;
/// The message stream id of every shared encoding: each viewer must have been given this id
/// for the stream it plays.
pub const SHARED_STREAM_ID: u32 = 1;

/// A 24-bit timestamp field holding this value means a 4-byte extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Longest chunk header: 3-byte basic header, 11-byte format-0 header, 4-byte extended
/// timestamp.
pub const MAX_HEADER_LEN: usize = 3 + 11 + 4;
/// A partial message announcing at most this many bytes gets its whole buffer at once;
/// larger ones grow as chunks arrive, so a peer announcing big messages and sending little
/// cannot make us reserve more than this per chunk stream.
pub const EXACT_ALLOC_LIMIT: usize = 64 * 1024;

/// Why the chunk stream from a peer cannot be decoded. The session closes on any of them.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ChunkError {
    #[error("chunk stream {csid}: a format 1, 2 or 3 header before any format-0 header")]
    NoPreviousHeader { csid: u32 },
    #[error("invalid chunk size {size}: must be between 1 and 2147483647")]
    InvalidChunkSize { size: u32 },
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLong { len: u32, limit: u32 },
    #[error("more than {limit} chunk streams in use")]
    TooManyChunkStreams { limit: usize },
    #[error("more than {limit} bytes held for partial messages")]
    BufferedTooMuch { limit: usize },
    #[error("protocol control message type {type_id} has a {len}-byte payload, needs 4")]
    TruncatedControl { type_id: u8, len: usize },
}

/// Resource limits for one peer's chunk stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Largest message accepted, checked when a header announces the length. The 24-bit
    /// length field caps it at 16 MiB - 1 anyway.
    pub max_message_len: u32,
    /// Most chunk streams (csids) the peer may use; each keeps header state for good.
    pub max_chunk_streams: usize,
    /// Most bytes held for partial messages across all chunk streams.
    pub max_buffered_bytes: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_message_len: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            max_buffered_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Bounds-checked big- and little-endian reads over a header's bytes; `None` means the
/// header is not all here yet.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Fields<'_> {
    #[inline]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let bytes = self.buf.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(bytes)
    }

    #[inline]
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    #[inline]
    fn u16_le(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    #[inline]
    fn u24(&mut self) -> Option<u32> {
        self.array::<3>()
            .map(|[a, b, c]| u32::from_be_bytes([0, a, b, c]))
    }

    #[inline]
    fn u32_be(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline]
    fn u32_le(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
}

/// What the reader remembers about one of the peer's chunk streams, next to the caller's
/// own state for it.
struct InStream<T> {
    csid: u32,
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// The last timestamp field after extension: what a format-3 new message adds.
    delta: u32,
    /// Whether the last format 0/1/2 header used an extended timestamp, which format-3
    /// headers then inherit.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Payload bytes of the current message read so far; 0 between messages. A format-3
    /// header continues a message exactly when this is not 0.
    received: u32,
    state: T,
}

/// One chunk's payload as [`ChunkReader::next_chunk`] hands it out, with the header of the
/// message it belongs to (after header compression is undone) and where in that message it
/// goes. When a read ends inside a chunk, the chunk comes as several `Chunk`s, one per
/// `next_chunk` call, each with the bytes that call could see.
#[derive(Debug)]
pub struct Chunk<'a, T> {
    pub csid: u32,
    pub type_id: u8,
    pub stream_id: u32,
    /// The message's absolute timestamp.
    pub timestamp: u32,
    /// The whole message's payload length.
    pub length: u32,
    /// Where `payload` starts within the message's payload. 0 starts a new message: what
    /// the caller kept for an unfinished message on this chunk stream is to be dropped (the
    /// sender abandoned it with a new header).
    pub offset: u32,
    /// These payload bytes, borrowed from the input (or, rarely, from the reader's
    /// header carry-over, see [`ChunkReader::next_chunk`]). Empty only for a zero-length
    /// message.
    pub payload: &'a [u8],
    /// The caller's state for this chunk stream.
    pub state: &'a mut T,
}

impl<T> Chunk<'_, T> {
    /// Whether these bytes end the message (always true for a zero-length one).
    pub fn is_last(&self) -> bool {
        self.offset as usize + self.payload.len() == self.length as usize
    }

    /// The message with this header and `payload`.
    pub fn message(&self, payload: Bytes) -> RtmpMessage {
        RtmpMessage {
            type_id: self.type_id,
            stream_id: self.stream_id,
            timestamp: self.timestamp,
            payload,
        }
    }
}

/// The chunk stream state machine: reads chunk headers, undoes header compression and
/// hands out each chunk's payload where it lies, without assembling messages. See the
/// module documentation; [`ChunkDecoder`] assembles messages on top of it.
///
/// `T` is the caller's own state per chunk stream (the decoder's partial message, say),
/// created with `T::default()` when the peer first uses a chunk stream and handed back
/// with each of its chunks.
pub struct ChunkReader<T = ()> {
    limits: DecoderLimits,
    chunk_size: u32,
    /// Never shrinks, so `current` stays valid.
    streams: Vec<InStream<T>>,
    /// The chunk stream whose chunk payload is being read, when `chunk_left > 0`.
    current: usize,
    /// Payload bytes of the current chunk not read yet; 0 means a header comes next.
    chunk_left: u32,
    /// Input bytes taken but not parsed yet, `carry[carry_start..carry_end]`: a header a
    /// read split, kept until the rest arrives (and, after a misjudged extended timestamp,
    /// up to 3 payload bytes).
    carry: [u8; MAX_HEADER_LEN],
    carry_start: u8,
    carry_end: u8,
    failed: Option<ChunkError>,
}

// A summary: the derived form would print every chunk stream.
impl<T> std::fmt::Debug for ChunkReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("chunk_size", &self.chunk_size)
            .field("chunk_streams", &self.streams.len())
            .field("chunk_left", &self.chunk_left)
            .field("unparsed_bytes", &self.unparsed_bytes())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<T: Default> ChunkReader<T> {
    /// A reader at the default chunk size. It enforces `limits.max_message_len` and
    /// `limits.max_chunk_streams`; `max_buffered_bytes` is for whoever assembles messages.
    pub fn new(limits: DecoderLimits) -> Self {
        ChunkReader {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            current: 0,
            chunk_left: 0,
            carry: [0; MAX_HEADER_LEN],
            carry_start: 0,
            carry_end: 0,
            failed: None,
        }
    }

    /// Reads the next chunk payload from `input`, parsing a chunk header first if one is
    /// due. Returns how many bytes of `input` it used, and:
    /// - `Some(chunk)`: the payload (or the part of it in `input`) is the last bytes used.
    ///   Call again with the rest of the input.
    /// - `None`: all of `input` was used, and nothing more comes out without more input. A
    ///   header split at the end of `input` is kept (at most [`MAX_HEADER_LEN`] - 1 bytes,
    ///   see [`unparsed_bytes`](Self::unparsed_bytes)) and completed by the next call.
    ///
    /// Payload is never copied, with one exception: a kept header whose extended timestamp
    /// turned out to be payload (see the module documentation) hands out those few bytes
    /// from the reader's own copy, in a `Chunk` that uses no input.
    ///
    /// Set Chunk Size and Abort messages do not change the reader by themselves: the
    /// caller applies them ([`set_chunk_size`](Self::set_chunk_size),
    /// [`abort`](Self::abort)) once it has the whole message, before calling again. After
    /// an error the reader stays failed.
    #[inline]
    pub fn next_chunk<'a>(
        &'a mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Chunk<'a, T>>), ChunkError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut used = 0;
        if self.chunk_left == 0 {
            match self.header(input) {
                Ok(Some(n)) => used = n,
                Ok(None) => return Ok((input.len(), None)),
                Err(err) => {
                    self.failed = Some(err.clone());
                    return Err(err);
                }
            }
        }
        let ChunkReader {
            streams,
            current,
            chunk_left,
            carry,
            carry_start,
            carry_end,
            ..
        } = self;
        let Some(s) = streams.get_mut(*current) else {
            return Ok((input.len(), None));
        };
        let payload = if carry_start < carry_end {
            let (start, end) = (usize::from(*carry_start), usize::from(*carry_end));
            let n = (*chunk_left as usize).min(end - start);
            *carry_start += n as u8;
            carry.get(start..start + n).unwrap_or_default()
        } else {
            let rest = input.get(used..).unwrap_or_default();
            let n = (*chunk_left as usize).min(rest.len());
            if n == 0 && s.length != 0 {
                return Ok((input.len(), None));
            }
            used += n;
            rest.get(..n).unwrap_or_default()
        };
        let offset = s.received;
        // Both at most the message length, a 24-bit number.
        let n = payload.len() as u32;
        *chunk_left -= n;
        s.received += n;
        if s.received == s.length {
            s.received = 0;
        }
        Ok((
            used,
            Some(Chunk {
                csid: s.csid,
                type_id: s.type_id,
                stream_id: s.stream_id,
                timestamp: s.timestamp,
                length: s.length,
                offset,
                payload,
                state: &mut s.state,
            }),
        ))
    }

    /// Parses the chunk header at the start of the kept bytes and `input`. Returns how
    /// much of `input` it took, `None` if the header is not all here (then all of `input`
    /// is kept).
    #[inline]
    fn header(&mut self, input: &[u8]) -> Result<Option<usize>, ChunkError> {
        let (start, end) = (usize::from(self.carry_start), usize::from(self.carry_end));
        if start == end {
            // The usual case: the whole header sits in the input.
            if let Some(n) = self.parse_header(input)? {
                return Ok(Some(n));
            }
            // An incomplete header is shorter than MAX_HEADER_LEN.
            let kept = input.len().min(MAX_HEADER_LEN);
            if let (Some(to), Some(from)) = (self.carry.get_mut(..kept), input.get(..kept)) {
                to.copy_from_slice(from);
            }
            (self.carry_start, self.carry_end) = (0, kept as u8);
            return Ok(None);
        }
        // A header split between two inputs: join its start and the input's first bytes.
        let pending = end - start;
        let mut joined = [0u8; MAX_HEADER_LEN];
        let take = (MAX_HEADER_LEN - pending).min(input.len());
        if let (Some(to), Some(from)) = (joined.get_mut(..pending), self.carry.get(start..end)) {
            to.copy_from_slice(from);
        }
        if let (Some(to), Some(from)) = (joined.get_mut(pending..pending + take), input.get(..take))
        {
            to.copy_from_slice(from);
        }
        let parsed = self.parse_header(joined.get(..pending + take).unwrap_or_default())?;
        self.carry = joined;
        match parsed {
            None => {
                // Still incomplete, so all of the input fitted.
                (self.carry_start, self.carry_end) = (0, (pending + take) as u8);
                Ok(None)
            }
            Some(n) if n >= pending => {
                (self.carry_start, self.carry_end) = (0, 0);
                Ok(Some(n - pending))
            }
            Some(n) => {
                // Kept bytes beyond the header: payload, then perhaps the next header.
                (self.carry_start, self.carry_end) = (n as u8, pending as u8);
                Ok(Some(0))
            }
        }
    }

    /// Parses one chunk header at the start of `buf` and applies it. Returns its length,
    /// `None` (and no change) if `buf` ends inside it.
    #[inline]
    fn parse_header(&mut self, buf: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut r = Fields { buf, pos: 0 };
        let Some(first) = r.u8() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let csid = match first & 0x3F {
            0 => match r.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(None),
            },
            1 => match r.u16_le() {
                Some(v) => 64 + u32::from(v),
                None => return Ok(None),
            },
            c => u32::from(c),
        };
        // Chunks of one message mostly follow each other: try the last chunk's stream first.
        let found = match self.streams.get(self.current) {
            Some(s) if s.csid == csid => Some(self.current),
            _ => self.streams.iter().position(|s| s.csid == csid),
        };
        let known = match found {
            Some(i) => self.streams.get(i),
            None if fmt == 0 => None,
            None => return Err(ChunkError::NoPreviousHeader { csid }),
        };

        // Read the whole header into locals before touching any state, so a header split
        // across reads is simply parsed again once the rest has arrived.
        let mut value = 0;
        let mut extended = false;
        let mut length = 0;
        let mut type_id = 0;
        let mut stream_id = 0;
        let mut continuation = false;
        if fmt <= 2 {
            let Some(field) = r.u24() else {
                return Ok(None);
            };
            if fmt <= 1 {
                let (Some(len), Some(ty)) = (r.u24(), r.u8()) else {
                    return Ok(None);
                };
                length = len;
                type_id = ty;
                if fmt == 0 {
                    let Some(sid) = r.u32_le() else {
                        return Ok(None);
                    };
                    stream_id = sid;
                }
            }
            extended = field == EXTENDED_TIMESTAMP;
            value = field;
            if extended {
                let Some(ext) = r.u32_be() else {
                    return Ok(None);
                };
                value = ext;
            }
        } else if let Some(s) = known {
            continuation = s.received > 0;
            extended = s.extended;
            value = s.delta;
            if s.extended {
                let Some(ext) = r.u32_be() else {
                    return Ok(None);
                };
                if continuation && ext != s.delta {
                    // An encoder that does not repeat the extended timestamp on
                    // continuation chunks: these 4 bytes are payload.
                    r.pos -= 4;
                } else {
                    value = ext;
                }
            }
        }

        let idx = match found {
            Some(i) => i,
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(ChunkError::TooManyChunkStreams {
                        limit: self.limits.max_chunk_streams,
                    });
                }
                self.streams.push(InStream {
                    csid,
                    timestamp: 0,
                    delta: 0,
                    extended: false,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    received: 0,
                    state: T::default(),
                });
                self.streams.len() - 1
            }
        };
        let Some(s) = self.streams.get_mut(idx) else {
            return Ok(None);
        };

        if !continuation {
            // A format 0/1/2 header in the middle of a message means the sender gave up
            // on it: the new message starts at offset 0, which tells the caller to drop
            // what it kept rather than splice two messages together.
            s.received = 0;
            match fmt {
                0 => {
                    s.timestamp = value;
                    s.stream_id = stream_id;
                }
                _ => s.timestamp = s.timestamp.wrapping_add(value),
            }
            s.delta = value;
            s.extended = extended;
            if fmt <= 1 {
                s.length = length;
                s.type_id = type_id;
            }
            if s.length > self.limits.max_message_len {
                return Err(ChunkError::MessageTooLong {
                    len: s.length,
                    limit: self.limits.max_message_len,
                });
            }
        }
        self.current = idx;
        self.chunk_left = (s.length - s.received).min(self.chunk_size);
        Ok(Some(r.pos))
    }
}

impl<T> ChunkReader<T> {
    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Sets the peer's chunk size, after a Set Chunk Size message (or for a size agreed
    /// some other way). It applies from the next chunk header on.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(ChunkError::InvalidChunkSize { size });
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Applies an Abort message: the partial message on chunk stream `csid`, if any, is
    /// dropped, and its next chunk starts a new message. Returns the caller's state for
    /// that chunk stream (to drop what it kept), `None` if the peer never used it. Call it
    /// between chunks, as the Abort message's last chunk is.
    pub fn abort(&mut self, csid: u32) -> Option<&mut T> {
        let s = self.streams.iter_mut().find(|s| s.csid == csid)?;
        s.received = 0;
        Some(&mut s.state)
    }

    /// How many chunk streams the peer has used (each keeps its header state for good).
    pub fn chunk_streams(&self) -> usize {
        self.streams.len()
    }

    /// The caller's state of every chunk stream the peer has used.
    pub fn states(&self) -> impl Iterator<Item = &T> {
        self.streams.iter().map(|s| &s.state)
    }

    /// Bytes taken from earlier inputs but not parsed yet: once
    /// [`next_chunk`](Self::next_chunk) has returned `None`, one partial chunk header at
    /// most (under [`MAX_HEADER_LEN`]).
    pub fn unparsed_bytes(&self) -> usize {
        usize::from(self.carry_end - self.carry_start)
    }
}

/// Fed input not decoded yet: the caller's buffers, in order, never copied.
#[derive(Default)]
struct Input {
    segments: VecDeque<Bytes>,
    len: usize,
}

impl Input {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            // Cannot overflow: it counts bytes that all sit in memory at once.
            self.len += bytes.len();
            self.segments.push_back(bytes);
        }
    }

    /// Drops the first `n` bytes of the front buffer (at most all of it).
    fn consume(&mut self, n: usize) {
        let Some(front) = self.segments.front_mut() else {
            return;
        };
        let n = n.min(front.len());
        self.len -= n;
        if n == front.len() {
            self.segments.pop_front();
        } else {
            front.advance(n);
        }
    }

    /// Consumes the first `used` bytes of the front buffer and returns the last `len` of
    /// them as a slice of it (`len <= used <= ` the front buffer's length).
    fn take_tail(&mut self, used: usize, len: usize) -> Bytes {
        let Some(front) = self.segments.front_mut() else {
            return Bytes::new();
        };
        let used = used.min(front.len());
        let len = len.min(used);
        self.len -= used;
        front.advance(used - len);
        if front.len() == len {
            return self.segments.pop_front().unwrap_or_default();
        }
        front.split_to(len)
    }
}

/// Joins a peer's chunks back into messages. See the module documentation.
pub struct ChunkDecoder {
    limits: DecoderLimits,
    /// Each chunk stream's state is its partial message: the payload received so far of a
    /// message spanning chunks; empty between messages.
    reader: ChunkReader<Vec<u8>>,
    input: Input,
    /// Sum of the partial messages' lengths over all chunk streams.
    buffered: usize,
    received: u64,
    poisoned: Option<ChunkError>,
}

// A summary: the derived form would print every buffered byte.
impl std::fmt::Debug for ChunkDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkDecoder")
            .field("chunk_size", &self.chunk_size())
            .field("chunk_streams", &self.chunk_streams())
            .field("buffered_bytes", &self.buffered)
            .field("unparsed_bytes", &self.unparsed_bytes())
            .field("bytes_received", &self.received)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl ChunkDecoder {
    pub fn new(limits: DecoderLimits) -> Self {
        ChunkDecoder {
            limits,
            reader: ChunkReader::new(limits),
            input: Input::default(),
            buffered: 0,
            received: 0,
            poisoned: None,
        }
    }

    /// Queues bytes read from the socket. Call [`next_message`](Self::next_message) until
    /// it returns `Ok(None)` after each feed: until then the input is held as fed.
    pub fn feed(&mut self, input: Bytes) {
        self.received = self.received.wrapping_add(input.len() as u64);
        self.input.push(input);
    }

    /// The next complete message, `Ok(None)` if more input is needed. Set Chunk Size and
    /// Abort take effect here, before they are returned.
    pub fn next_message(&mut self) -> Result<Option<RtmpMessage>, ChunkError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        let result = match self.decode() {
            Ok(Some(msg)) => self.apply_control(&msg).map(|()| Some(msg)),
            other => other,
        };
        if let Err(err) = &result {
            self.poisoned = Some(err.clone());
        }
        result
    }

    /// Total bytes fed, for the Acknowledgement sequence number.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.reader.chunk_size()
    }

    /// Sets the peer's chunk size without a Set Chunk Size message, for a size agreed some
    /// other way (and tests). It applies from the next chunk header on.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        self.reader.set_chunk_size(size)
    }

    /// Bytes held for partial messages across all chunk streams.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Memory reserved for partial messages: at most twice [`buffered_bytes`] plus
    /// [`EXACT_ALLOC_LIMIT`] per chunk stream, and never more than
    /// [`DecoderLimits::max_message_len`] for one stream.
    ///
    /// [`buffered_bytes`]: Self::buffered_bytes
    pub fn reserved_bytes(&self) -> usize {
        self.reader.states().map(Vec::capacity).sum()
    }

    /// How many chunk streams the peer has used (each keeps its header state for good).
    pub fn chunk_streams(&self) -> usize {
        self.reader.chunk_streams()
    }

    /// Fed bytes not parsed yet. Once [`next_message`](Self::next_message) has returned
    /// `Ok(None)` this is one partial chunk header at most (under [`MAX_HEADER_LEN`]).
    pub fn unparsed_bytes(&self) -> usize {
        self.input.len + self.reader.unparsed_bytes()
    }

    fn decode(&mut self) -> Result<Option<RtmpMessage>, ChunkError> {
        loop {
            let front = self.input.segments.front().map_or(&[][..], |b| &b[..]);
            let (used, chunk) = self.reader.next_chunk(front)?;
            let Some(c) = chunk else {
                // All of the front buffer is parsed (or kept by the reader).
                if self.input.segments.is_empty() {
                    return Ok(None);
                }
                self.input.consume(used);
                continue;
            };
            let Chunk {
                type_id,
                stream_id,
                timestamp,
                length,
                offset,
                payload,
                state: partial,
                ..
            } = c;
            let length = length as usize;
            let n = payload.len();
            let message = |payload| RtmpMessage {
                type_id,
                stream_id,
                timestamp,
                payload,
            };
            if offset == 0 && !partial.is_empty() {
                // The sender abandoned the message it had started on this chunk stream.
                self.buffered -= partial.len();
                *partial = Vec::new();
            }
            // The whole message in this chunk and in one fed buffer: hand out a slice of
            // it. (A first chunk's payload always comes from the input.)
            if offset == 0 && n == length && used >= n {
                let payload = if length == 0 {
                    self.input.consume(used);
                    Bytes::new()
                } else {
                    self.input.take_tail(used, length)
                };
                return Ok(Some(message(payload)));
            }

            let have = partial.len();
            let completes = have + n == length;
            if !completes && self.buffered.saturating_add(n) > self.limits.max_buffered_bytes {
                return Err(ChunkError::BufferedTooMuch {
                    limit: self.limits.max_buffered_bytes,
                });
            }
            if partial.capacity() - have < n {
                // Grow by doubling, never past the announced length, so the reservation
                // stays within twice what actually arrived (or EXACT_ALLOC_LIMIT).
                let target = if length <= EXACT_ALLOC_LIMIT {
                    length
                } else {
                    length.min((have + n).max(have.saturating_mul(2)))
                };
                partial.reserve_exact(target.saturating_sub(have));
            }
            partial.extend_from_slice(payload);
            if completes {
                self.buffered -= have;
                // Capacity equals length here, so this hands the allocation over as is.
                let payload = Bytes::from(std::mem::take(partial));
                self.input.consume(used);
                return Ok(Some(message(payload)));
            }
            self.buffered += n;
            self.input.consume(used);
        }
    }

    fn apply_control(&mut self, msg: &RtmpMessage) -> Result<(), ChunkError> {
        let is = |t: MessageType| msg.type_id == t.id();
        if !is(MessageType::SetChunkSize) && !is(MessageType::Abort) {
            return Ok(());
        }
        let value = msg
            .payload
            .first_chunk::<4>()
            .map(|b| u32::from_be_bytes(*b))
            .ok_or(ChunkError::TruncatedControl {
                type_id: msg.type_id,
                len: msg.payload.len(),
            })?;
        if is(MessageType::SetChunkSize) {
            self.reader.set_chunk_size(value)?;
        } else if let Some(partial) = self.reader.abort(value) {
            self.buffered -= partial.len();
            *partial = Vec::new();
        }
        Ok(())
    }
}

/// The header fields of one message's chunks, decided before writing.
#[derive(Clone, Copy, Debug)]
struct Header {
    fmt: u8,
    csid: u32,
    /// Absolute timestamp (format 0) or delta (formats 1 to 3), before the 24-bit cut.
    field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

fn basic_header_len(csid: u32) -> usize {
    match csid {
        ..64 => 1,
        64..320 => 2,
        _ => 3,
    }
}

fn put_basic_header<B: BufMut>(out: &mut B, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        ..64 => out.put_u8(fmt | csid as u8),
        64..320 => out.put_slice(&[fmt, (csid - 64) as u8]),
        _ => {
            let [lo, hi] = ((csid - 64) as u16).to_le_bytes();
            out.put_slice(&[fmt | 1, lo, hi]);
        }
    }
}

impl Header {
    fn extended(&self) -> bool {
        self.field >= EXTENDED_TIMESTAMP
    }

    fn ext_len(&self) -> usize {
        if self.extended() { 4 } else { 0 }
    }

    fn first_len(&self) -> usize {
        let message_header = match self.fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        basic_header_len(self.csid) + message_header + self.ext_len()
    }

    fn continuation_len(&self) -> usize {
        basic_header_len(self.csid) + self.ext_len()
    }

    fn encoded_len(&self, chunk_size: usize) -> usize {
        self.encoded_len_for(self.length as usize, chunk_size)
    }

    fn encoded_len_for(&self, payload_len: usize, chunk_size: usize) -> usize {
        let continuations = payload_len.saturating_sub(1) / chunk_size.max(1);
        self.first_len() + payload_len + continuations * self.continuation_len()
    }

    fn write<B: BufMut>(&self, payload: &[u8], chunk_size: usize, out: &mut B) {
        let extended = self.extended();
        put_basic_header(out, self.fmt, self.csid);
        if self.fmt <= 2 {
            let field = if extended {
                EXTENDED_TIMESTAMP
            } else {
                self.field
            };
            out.put_uint(u64::from(field), 3);
        }
        if self.fmt <= 1 {
            out.put_uint(u64::from(self.length), 3);
            out.put_u8(self.type_id);
        }
        if self.fmt == 0 {
            out.put_u32_le(self.stream_id);
        }
        if extended {
            out.put_u32(self.field);
        }
        let mut pieces = payload.chunks(chunk_size.max(1));
        if let Some(first) = pieces.next() {
            out.put_slice(first);
        }
        for piece in pieces {
            put_basic_header(out, 3, self.csid);
            if extended {
                // Repeated on continuations, as ffmpeg, librtmp and Flash expect.
                out.put_u32(self.field);
            }
            out.put_slice(piece);
        }
    }
}

/// What the encoder last sent on one chunk stream.
#[derive(Debug)]
struct OutStream {
    csid: u32,
    timestamp: u32,
    /// The delta the last header carried; `None` after a format-0 header, whose field is
    /// absolute (receivers disagree on what a format 3 after it means).
    delta: Option<u32>,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Per-connection chunk encoder with header compression. See the module documentation.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    streams: Vec<OutStream>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    pub fn new() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Switches to a new outgoing chunk size. Send the Set Chunk Size message first: it
    /// must go out at the old size, which the peer still reads with.
    ///
    /// # Panics
    /// If `size` is 0 or above [`MAX_CHUNK_SIZE`]: that is a bug or bad configuration.
    pub fn set_chunk_size(&mut self, size: u32) {
        assert!(
            (1..=MAX_CHUNK_SIZE).contains(&size),
            "chunk size {size} outside 1..=0x7FFFFFFF"
        );
        self.chunk_size = size;
    }

    /// Appends `msg`, chunked, to `out`, with the smallest header the last header on `csid`
    /// allows (format 0 when the message stream changes or the timestamp goes backwards).
    ///
    /// # Panics
    /// If `csid` is outside 2..=65599 or the payload is longer than [`MAX_MESSAGE_LEN`];
    /// messages from a [`ChunkDecoder`] always fit.
    pub fn encode(&mut self, csid: u32, msg: &RtmpMessage, out: &mut BytesMut) {
        assert!(
            (MIN_CSID..=MAX_CSID).contains(&csid),
            "chunk stream id {csid} outside 2..=65599"
        );
        let length = message_len(msg.payload.len());
        let header = self.next_header(csid, msg, length);
        let chunk_size = self.chunk_size as usize;
        out.reserve(header.encoded_len(chunk_size));
        header.write(&msg.payload, chunk_size, out);
    }

    fn next_header(&mut self, csid: u32, msg: &RtmpMessage, length: u32) -> Header {
        let mut header = Header {
            fmt: 0,
            csid,
            field: msg.timestamp,
            length,
            type_id: msg.type_id,
            stream_id: msg.stream_id,
        };
        let state = OutStream {
            csid,
            timestamp: msg.timestamp,
            delta: None,
            length,
            type_id: msg.type_id,
            stream_id: msg.stream_id,
        };
        let Some(prev) = self.streams.iter_mut().find(|s| s.csid == csid) else {
            self.streams.push(state);
            return header;
        };
        if prev.stream_id == msg.stream_id && msg.timestamp >= prev.timestamp {
            let delta = msg.timestamp - prev.timestamp;
            header.field = delta;
            header.fmt = if prev.length != length || prev.type_id != msg.type_id {
                1
            } else if prev.delta == Some(delta) {
                3
            } else {
                2
            };
            *prev = OutStream {
                delta: Some(delta),
                ..state
            };
        } else {
            *prev = state;
        }
        header
    }
}

fn message_len(len: usize) -> u32 {
    match u32::try_from(len) {
        Ok(len) if len <= MAX_MESSAGE_LEN => len,
        _ => panic!("message of {len} bytes does not fit RTMP's 24-bit length"),
    }
}

/// The chunk stream a shared encoding of this message type travels on.
pub fn shared_csid(type_id: u8) -> u32 {
    match MessageType::from_id(type_id) {
        Some(MessageType::Audio) => csid::SHARED_AUDIO,
        Some(MessageType::Video) => csid::SHARED_VIDEO,
        _ => csid::SHARED_DATA,
    }
}

fn shared_header(type_id: u8, timestamp: u32, length: u32) -> Header {
    Header {
        fmt: 0,
        csid: shared_csid(type_id),
        field: timestamp,
        length,
        type_id,
        stream_id: SHARED_STREAM_ID,
    }
}

/// Encodes one message for every viewer at once: format-0 header (absolute timestamp,
/// message stream [`SHARED_STREAM_ID`]), format-3 continuations, on the shared chunk stream
/// for its type, in one exactly sized allocation. Every viewer must have been sent a Set
/// Chunk Size of `chunk_size` first; see the module documentation.
///
/// # Panics
/// If `chunk_size` is 0 or above [`MAX_CHUNK_SIZE`], or the payload is longer than
/// [`MAX_MESSAGE_LEN`]; messages from a [`ChunkDecoder`] always fit.
pub fn encode_shared(type_id: u8, timestamp: u32, payload: &[u8], chunk_size: u32) -> Bytes {
    assert!(
        (1..=MAX_CHUNK_SIZE).contains(&chunk_size),
        "chunk size {chunk_size} outside 1..=0x7FFFFFFF"
    );
    let header = shared_header(type_id, timestamp, message_len(payload.len()));
    let chunk_size = chunk_size as usize;
    let mut out = Vec::with_capacity(header.encoded_len(chunk_size));
    header.write(payload, chunk_size, &mut out);
    debug_assert_eq!(out.len(), header.encoded_len(chunk_size));
    Bytes::from(out)
}

/// Writes the chunk header [`encode_shared`] would give a `payload_len`-byte message into
/// the end of `room`, the bytes just before its payload, when the whole message is one
/// chunk: the header then sits right before the payload and header plus payload are the
/// message's encoding, with the payload never copied. Returns the header's length, or
/// `None` (nothing written) when the message needs more than one chunk or the header does
/// not fit in `room`.
pub fn shared_header_in_place(
    room: &mut [u8],
    type_id: u8,
    timestamp: u32,
    payload_len: usize,
    chunk_size: u32,
) -> Option<usize> {
    if payload_len > chunk_size as usize || payload_len > MAX_MESSAGE_LEN as usize {
        return None;
    }
    let header = shared_header(type_id, timestamp, payload_len as u32);
    let len = header.first_len();
    let at = room.len().checked_sub(len)?;
    header.write(&[], chunk_size as usize, &mut &mut room[at..]);
    Some(len)
}

/// The payload of a message [`encode_shared`] encoded, piece by piece without the chunk
/// headers between them and without copying: what another output format (an FLV tag for
/// HTTP viewers) is built from, so a frame keeps one encoding, not two.
pub fn shared_payload_pieces(
    encoded: &[u8],
    type_id: u8,
    timestamp: u32,
    chunk_size: u32,
) -> impl Iterator<Item = &[u8]> {
    let header = shared_header(type_id, timestamp, 0);
    let chunk_size = (chunk_size as usize).max(1);
    let continuation = header.continuation_len();
    let mut at = header.first_len().min(encoded.len());
    std::iter::from_fn(move || {
        if at >= encoded.len() {
            return None;
        }
        let end = (at + chunk_size).min(encoded.len());
        let piece = &encoded[at..end];
        at = end + continuation;
        Some(piece)
    })
}

/// The length of [`encode_shared`]'s output, without encoding: for sizing write queues and
/// accounting before the bytes exist.
pub fn shared_encoded_len(payload_len: usize, chunk_size: u32, timestamp: u32) -> usize {
    shared_header(0, timestamp, 0).encoded_len_for(payload_len, chunk_size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(type_id: u8, stream_id: u32, timestamp: u32, payload: Vec<u8>) -> RtmpMessage {
        RtmpMessage::new(type_id, stream_id, timestamp, payload)
    }

    #[test]
    fn a_header_in_place_and_its_payload_are_the_shared_encoding() {
        for (len, chunk, ts) in [
            (0, 128, 0),
            (300, 4096, 77),
            (4096, 4096, 0x00FF_FFFE),
            (60000, 65536, 123_456),
        ] {
            let payload = pattern(len, 5);
            let mut buf = vec![0xEE; 15 + len];
            buf[15..].copy_from_slice(&payload);
            let (room, _) = buf.split_at_mut(15);
            let n = shared_header_in_place(room, 9, ts, len, chunk).unwrap();
            assert_eq!(
                buf[15 - n..],
                encode_shared(9, ts, &payload, chunk)[..],
                "{len} {chunk} {ts}"
            );
        }
        let mut room = [0u8; 15];
        // More than one chunk, an extended timestamp that does not fit, no room.
        assert_eq!(shared_header_in_place(&mut room, 9, 0, 4097, 4096), None);
        assert_eq!(
            shared_header_in_place(&mut room, 9, 0x0100_0000, 10, 4096),
            None
        );
        assert_eq!(
            shared_header_in_place(&mut room[..11], 8, 0, 10, 4096),
            None
        );
        assert_eq!(room, [0u8; 15], "nothing written when it cannot be done");
    }

    #[test]
    fn shared_payload_pieces_give_back_the_payload() {
        for (len, chunk, ts) in [
            (0, 128, 0),
            (1, 128, 5),
            (300, 128, 0x00FF_FFFF),
            (4096, 4096, 7),
            (5000, 100, 0x0100_0000),
        ] {
            let payload = pattern(len, 3);
            let encoded = encode_shared(9, ts, &payload, chunk);
            let back: Vec<u8> = shared_payload_pieces(&encoded, 9, ts, chunk)
                .flatten()
                .copied()
                .collect();
            assert_eq!(back, payload, "len {len} chunk {chunk} ts {ts}");
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn set_chunk_size(size: u32) -> RtmpMessage {
        msg(1, 0, 0, size.to_be_bytes().to_vec())
    }

    fn drain(dec: &mut ChunkDecoder) -> Vec<RtmpMessage> {
        let mut out = Vec::new();
        while let Some(m) = dec.next_message().expect("decode error") {
            out.push(m);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Vec<RtmpMessage> {
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::copy_from_slice(bytes));
        drain(&mut dec)
    }

    /// Decodes `bytes` fed one byte at a time, which splits every header and payload.
    fn decode_bytewise(bytes: &[u8]) -> Vec<RtmpMessage> {
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        let mut out = Vec::new();
        for b in bytes {
            dec.feed(Bytes::copy_from_slice(&[*b]));
            out.extend(drain(&mut dec));
        }
        out
    }

    fn encode_all(csid: u32, msgs: &[RtmpMessage]) -> Vec<u8> {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        for m in msgs {
            enc.encode(csid, m, &mut out);
        }
        out.to_vec()
    }

    fn header0(csid: u8, ts: u32, len: u32, type_id: u8, sid: u32) -> Vec<u8> {
        let mut h = vec![csid];
        h.extend_from_slice(&ts.min(0xFF_FFFF).to_be_bytes()[1..]);
        h.extend_from_slice(&len.to_be_bytes()[1..]);
        h.push(type_id);
        h.extend_from_slice(&sid.to_le_bytes());
        if ts >= 0xFF_FFFF {
            h.extend_from_slice(&ts.to_be_bytes());
        }
        h
    }

    fn limits(
        max_message_len: u32,
        max_chunk_streams: usize,
        max_buffered_bytes: usize,
    ) -> DecoderLimits {
        DecoderLimits {
            max_message_len,
            max_chunk_streams,
            max_buffered_bytes,
        }
    }

    /// Section 5.3.2.1: one audio stream, four 32-byte messages 10 ms apart.
    #[test]
    fn spec_example_1_audio() {
        let msgs: Vec<_> = (0..4)
            .map(|i| msg(8, 12345, 1000 + 10 * i, pattern(32, i as u8)))
            .collect();
        let mut expected = vec![
            0x03, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x20, 0x08, 0x39, 0x30, 0x00, 0x00,
        ];
        expected.extend_from_slice(&msgs[0].payload);
        expected.extend_from_slice(&[0x83, 0x00, 0x00, 0x0A]);
        expected.extend_from_slice(&msgs[1].payload);
        expected.push(0xC3);
        expected.extend_from_slice(&msgs[2].payload);
        expected.push(0xC3);
        expected.extend_from_slice(&msgs[3].payload);
        assert_eq!(expected.len(), 44 + 36 + 33 + 33);

        assert_eq!(encode_all(3, &msgs), expected);
        assert_eq!(decode(&expected), msgs);
        assert_eq!(decode_bytewise(&expected), msgs);
    }

    /// Section 5.3.2.2: a 307-byte video message at chunk size 128.
    #[test]
    fn spec_example_2_video() {
        let m = msg(9, 12346, 1000, pattern(307, 7));
        let p = &m.payload;
        let mut expected = vec![
            0x04, 0x00, 0x03, 0xE8, 0x00, 0x01, 0x33, 0x09, 0x3A, 0x30, 0x00, 0x00,
        ];
        expected.extend_from_slice(&p[..128]);
        expected.push(0xC4);
        expected.extend_from_slice(&p[128..256]);
        expected.push(0xC4);
        expected.extend_from_slice(&p[256..]);
        assert_eq!(expected.len(), 140 + 129 + 52);

        assert_eq!(encode_all(4, std::slice::from_ref(&m)), expected);
        assert_eq!(decode(&expected), vec![m.clone()]);
        assert_eq!(decode_bytewise(&expected), vec![m]);
    }

    #[test]
    fn encoder_picks_header_formats() {
        let mut enc = ChunkEncoder::new();
        let mut first_bytes = Vec::new();
        let sequence = [
            msg(9, 1, 100, vec![0; 10]), // new chunk stream: 0
            msg(9, 1, 140, vec![0; 10]), // same shape, new delta: 2
            msg(9, 1, 180, vec![0; 10]), // same delta: 3
            msg(9, 1, 190, vec![0; 11]), // length changes: 1
            msg(8, 1, 190, vec![0; 11]), // type changes: 1
            msg(8, 1, 150, vec![0; 11]), // backwards: 0
            msg(8, 2, 160, vec![0; 11]), // stream id changes: 0
            msg(8, 2, 160, vec![0; 11]), // delta 0 after format 0: 2, never 3
            msg(8, 2, 160, vec![0; 11]), // delta 0 again: 3
        ];
        let mut wire = BytesMut::new();
        for m in &sequence {
            let at = wire.len();
            enc.encode(3, m, &mut wire);
            first_bytes.push(wire[at] >> 6);
        }
        assert_eq!(first_bytes, [0, 2, 3, 1, 1, 0, 0, 2, 3]);
        assert_eq!(decode(&wire), sequence);
    }

    #[test]
    fn format_3_after_format_0_adds_the_format_0_timestamp() {
        // ffmpeg sends exactly this for two frames 40 ms apart starting at 40.
        let mut wire = header0(3, 40, 1, 9, 1);
        wire.extend_from_slice(&[0xAA, 0xC3, 0xBB]);
        let got = decode(&wire);
        assert_eq!(
            got,
            vec![msg(9, 1, 40, vec![0xAA]), msg(9, 1, 80, vec![0xBB])]
        );
    }

    #[test]
    fn extended_timestamp_on_format_0() {
        let m = msg(20, 0, 0x1234_5678, vec![1, 2, 3, 4, 5]);
        let mut expected = vec![
            0x03, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x05, 0x14, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78,
        ];
        expected.extend_from_slice(&m.payload);
        assert_eq!(encode_all(3, std::slice::from_ref(&m)), expected);
        assert_eq!(decode_bytewise(&expected), vec![m]);
    }

    #[test]
    fn timestamp_exactly_0xffffff_is_extended() {
        let m = msg(8, 1, 0xFF_FFFF, vec![9; 3]);
        let mut expected = header0(6, 0xFF_FFFF, 3, 8, 1);
        assert_eq!(&expected[1..4], &[0xFF, 0xFF, 0xFF]);
        assert_eq!(&expected[12..16], &[0x00, 0xFF, 0xFF, 0xFF]);
        expected.extend_from_slice(&m.payload);
        assert_eq!(encode_all(6, std::slice::from_ref(&m)), expected);
        assert_eq!(decode_bytewise(&expected), vec![m]);

        let below = msg(8, 1, 0xFF_FFFE, vec![9; 3]);
        let wire = encode_all(6, std::slice::from_ref(&below));
        assert_eq!(wire.len(), 12 + 3);
        assert_eq!(decode(&wire), vec![below]);
    }

    #[test]
    fn extended_timestamp_repeated_on_continuation_chunks() {
        let m = msg(9, 1, 0x0100_0000, pattern(200, 3));
        let mut expected = header0(3, 0x0100_0000, 200, 9, 1);
        expected.extend_from_slice(&m.payload[..128]);
        expected.extend_from_slice(&[0xC3, 0x01, 0x00, 0x00, 0x00]);
        expected.extend_from_slice(&m.payload[128..]);
        assert_eq!(encode_all(3, std::slice::from_ref(&m)), expected);
        assert_eq!(decode_bytewise(&expected), vec![m]);
    }

    #[test]
    fn extended_timestamp_missing_on_continuation_chunks() {
        let m = msg(9, 1, 0x0100_0000, vec![0xAB; 200]);
        let mut wire = header0(3, 0x0100_0000, 200, 9, 1);
        wire.extend_from_slice(&m.payload[..128]);
        wire.push(0xC3);
        wire.extend_from_slice(&m.payload[128..]);
        assert_eq!(decode(&wire), vec![m.clone()]);
        assert_eq!(decode_bytewise(&wire), vec![m]);
    }

    /// Messages from a bare [`ChunkReader`] fed `wire` in slices cut by `splits` (cycled),
    /// joined by offset, applying Set Chunk Size and Abort as the decoder does.
    fn read_by_chunks(wire: &[u8], splits: &[usize], limits: DecoderLimits) -> Vec<RtmpMessage> {
        let mut reader = ChunkReader::<Vec<u8>>::new(limits);
        let mut out = Vec::new();
        let mut at = 0;
        for n in splits.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = (at + n).min(wire.len());
            let mut input = &wire[at..end];
            at = end;
            loop {
                let (used, chunk) = reader.next_chunk(input).expect("read error");
                assert!(used <= input.len());
                let Some(c) = chunk else {
                    assert_eq!(used, input.len());
                    break;
                };
                let payload_start = used - c.payload.len().min(used);
                if used > 0 {
                    // The payload is the last bytes used, in place.
                    assert_eq!(c.payload.as_ptr(), input[payload_start..].as_ptr());
                }
                if c.offset == 0 {
                    c.state.clear();
                }
                assert_eq!(c.offset as usize, c.state.len());
                c.state.extend_from_slice(c.payload);
                let done = if c.is_last() {
                    let payload = Bytes::from(std::mem::take(c.state));
                    Some(c.message(payload))
                } else {
                    None
                };
                input = &input[used..];
                if let Some(m) = done {
                    if let Some(b) = m.payload.first_chunk::<4>() {
                        let value = u32::from_be_bytes(*b);
                        match m.type_id {
                            1 => reader.set_chunk_size(value).unwrap(),
                            2 => {
                                if let Some(partial) = reader.abort(value) {
                                    partial.clear();
                                }
                            }
                            _ => {}
                        }
                    }
                    out.push(m);
                }
            }
            assert!(reader.unparsed_bytes() < MAX_HEADER_LEN);
        }
        out
    }

    /// An encoder that omits the extended timestamp on continuation chunks, at chunk sizes
    /// down to 1 and split everywhere: the reader keeps a split header and, once the 4
    /// bytes after it turn out to be payload, hands them out from its copy, then parses
    /// the next header (here often a one-byte header of a zero-length message) from it.
    #[test]
    fn extended_timestamp_missing_on_continuation_chunks_split_everywhere() {
        for chunk_size in 1..=6usize {
            let long = msg(9, 1, 0x0100_0000, pattern(10, 1));
            let mut wire = header0(3, 0x0100_0000, 10, 9, 1);
            wire.extend_from_slice(&long.payload[..chunk_size]);
            wire.extend_from_slice(&header0(4, 5, 0, 8, 1));
            let mut expected = vec![msg(8, 1, 5, vec![])];
            let mut ts = 5;
            for piece in long.payload[chunk_size..].chunks(chunk_size) {
                wire.push(0xC3);
                wire.extend_from_slice(piece);
                wire.push(0xC4);
                ts += 5;
                expected.push(msg(8, 1, ts, vec![]));
            }
            expected.insert(expected.len() - 1, long.clone());
            // Something after the last continuation, so its 4 bytes can be judged.
            wire.extend_from_slice(&header0(5, 0, 1, 8, 1));
            wire.push(9);
            expected.push(msg(8, 1, 0, vec![9]));
            let limits = DecoderLimits::default();
            for split in 1..=7 {
                let mut dec = ChunkDecoder::new(limits);
                dec.set_chunk_size(chunk_size as u32).unwrap();
                let mut got = Vec::new();
                for piece in wire.chunks(split) {
                    dec.feed(Bytes::copy_from_slice(piece));
                    got.extend(drain(&mut dec));
                    assert!(dec.unparsed_bytes() < MAX_HEADER_LEN);
                }
                assert_eq!(got, expected, "chunk size {chunk_size}, split {split}");

                let mut with_size = encode_all(2, &[set_chunk_size(chunk_size as u32)]);
                with_size.extend_from_slice(&wire);
                let mut expected = expected.clone();
                expected.insert(0, set_chunk_size(chunk_size as u32));
                assert_eq!(read_by_chunks(&with_size, &[split], limits), expected);
            }
        }
    }

    #[test]
    fn reader_hands_out_each_chunk_in_place() {
        let m = msg(9, 12346, 1000, pattern(307, 7));
        let wire = encode_all(4, std::slice::from_ref(&m));
        let mut reader = ChunkReader::<()>::new(DecoderLimits::default());
        let mut input = &wire[..];
        let mut seen = Vec::new();
        while let (used, Some(c)) = reader.next_chunk(input).unwrap() {
            assert_eq!(
                (c.csid, c.type_id, c.stream_id, c.timestamp, c.length),
                (4, 9, 12346, 1000, 307)
            );
            assert_eq!(
                c.payload,
                &m.payload[c.offset as usize..][..c.payload.len()]
            );
            assert!(wire.as_ptr_range().contains(&c.payload.as_ptr()));
            seen.push((c.offset, c.payload.len(), c.is_last()));
            input = &input[used..];
        }
        assert_eq!(seen, [(0, 128, false), (128, 128, false), (256, 51, true)]);
        assert_eq!(reader.unparsed_bytes(), 0);
    }

    #[test]
    fn reader_errors_are_final() {
        let mut reader = ChunkReader::<()>::new(DecoderLimits::default());
        let err = ChunkError::NoPreviousHeader { csid: 3 };
        assert_eq!(reader.next_chunk(&[0x43]).unwrap_err(), err);
        let wire = encode_all(3, &[msg(8, 1, 0, vec![1])]);
        assert_eq!(reader.next_chunk(&wire).unwrap_err(), err);
    }

    #[test]
    fn extended_deltas_on_formats_2_and_3() {
        let msgs = [
            msg(9, 1, 0, pattern(200, 1)),
            msg(9, 1, 0x0100_0000, pattern(200, 2)),
            msg(9, 1, 0x0200_0000, pattern(200, 3)),
        ];
        let wire = encode_all(3, &msgs);
        // Second message: format 2, delta extended, then a continuation repeating it.
        let second = &wire[12 + 200 + 1..];
        assert_eq!(
            &second[..8],
            &[0x83, 0xFF, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            &second[8 + 128..8 + 128 + 5],
            &[0xC3, 0x01, 0x00, 0x00, 0x00]
        );
        // Third: format 3 new message, which carries the extended delta too.
        let third = &second[8 + 200 + 5..];
        assert_eq!(&third[..5], &[0xC3, 0x01, 0x00, 0x00, 0x00]);
        assert_eq!(decode(&wire), msgs);
        assert_eq!(decode_bytewise(&wire), msgs);
    }

    #[test]
    fn timestamps_wrap_at_2_pow_32() {
        let mut wire = header0(3, u32::MAX - 5, 1, 8, 1);
        wire.push(1);
        wire.extend_from_slice(&[0x83, 0x00, 0x00, 0x0A, 2]);
        assert_eq!(
            decode(&wire),
            vec![msg(8, 1, u32::MAX - 5, vec![1]), msg(8, 1, 4, vec![2])]
        );
    }

    #[test]
    fn basic_headers_of_one_two_and_three_bytes() {
        let cases: [(u32, &[u8]); 6] = [
            (2, &[0x02]),
            (63, &[0x3F]),
            (64, &[0x00, 0x00]),
            (319, &[0x00, 0xFF]),
            (320, &[0x01, 0x00, 0x01]),
            (65_599, &[0x01, 0xFF, 0xFF]),
        ];
        for (csid, basic) in cases {
            let m = msg(18, 1, 5, pattern(200, csid as u8));
            let wire = encode_all(csid, std::slice::from_ref(&m));
            let n = basic.len();
            assert_eq!(&wire[..n], basic, "csid {csid}");
            let continuation = &wire[n + 11 + 128..];
            assert_eq!(continuation[0], basic[0] | 0xC0, "csid {csid}");
            assert_eq!(&continuation[1..n], &basic[1..], "csid {csid}");
            assert_eq!(wire.len(), 2 * n + 11 + 200);
            assert_eq!(decode_bytewise(&wire), vec![m], "csid {csid}");
        }
    }

    #[test]
    fn zero_length_messages() {
        let msgs = [
            msg(18, 1, 0, vec![]),
            msg(18, 1, 10, vec![]),
            msg(18, 1, 20, vec![]),
        ];
        let wire = encode_all(5, &msgs);
        assert_eq!(wire.len(), 12 + 4 + 1);
        assert_eq!(decode_bytewise(&wire), msgs);
    }

    /// Splits one message's encoding into its chunks.
    fn chunks_of(header: &Header, wire: &[u8], chunk_size: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = wire;
        let mut left = header.length as usize;
        let mut header_len = header.first_len();
        loop {
            let n = header_len + left.min(chunk_size);
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
            left -= left.min(chunk_size);
            header_len = header.continuation_len();
            if left == 0 {
                break;
            }
        }
        assert!(rest.is_empty());
        out
    }

    fn encode_chunks(enc: &mut ChunkEncoder, csid: u32, m: &RtmpMessage) -> Vec<Vec<u8>> {
        let header = enc.next_header(csid, m, m.payload.len() as u32);
        let chunk_size = enc.chunk_size() as usize;
        let mut wire = Vec::new();
        header.write(&m.payload, chunk_size, &mut wire);
        chunks_of(&header, &wire, chunk_size)
    }

    #[test]
    fn set_chunk_size_applies_to_the_very_next_chunk() {
        let mut enc = ChunkEncoder::new();
        let big = msg(9, 1, 0, pattern(300, 1));
        let first = encode_chunks(&mut enc, 5, &big).remove(0);
        let mut wire = first;
        // The peer raises its chunk size in the middle of the message on csid 5 ...
        let mut control = BytesMut::new();
        enc.encode(2, &set_chunk_size(300), &mut control);
        wire.extend_from_slice(&control);
        // ... so the rest of that message comes as one chunk.
        wire.push(0xC5);
        wire.extend_from_slice(&big.payload[128..]);

        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::from(wire));
        assert_eq!(drain(&mut dec), vec![set_chunk_size(300), big]);
        assert_eq!(dec.chunk_size(), 300);
    }

    #[test]
    fn abort_discards_the_partial_message() {
        let mut enc = ChunkEncoder::new();
        let big = msg(9, 1, 0, pattern(300, 1));
        let mut wire = encode_chunks(&mut enc, 5, &big).remove(0);
        let abort = msg(2, 0, 0, 5u32.to_be_bytes().to_vec());
        let mut rest = BytesMut::new();
        enc.encode(2, &abort, &mut rest);
        let next = msg(9, 1, 40, pattern(50, 2));
        enc.encode(5, &next, &mut rest);
        wire.extend_from_slice(&rest);

        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::copy_from_slice(&wire[..140]));
        assert_eq!(drain(&mut dec), vec![]);
        assert_eq!(dec.buffered_bytes(), 128);
        dec.feed(Bytes::copy_from_slice(&wire[140..]));
        assert_eq!(dec.next_message(), Ok(Some(abort)));
        assert_eq!(dec.buffered_bytes(), 0);
        assert_eq!(drain(&mut dec), vec![next]);
    }

    #[test]
    fn interleaved_chunk_streams() {
        let mut enc = ChunkEncoder::new();
        let video = msg(9, 1, 0, pattern(300, 1));
        let audio = msg(8, 1, 0, pattern(300, 2));
        let v = encode_chunks(&mut enc, 7, &video);
        let a = encode_chunks(&mut enc, 6, &audio);
        let wire: Vec<u8> = [&v[0], &a[0], &v[1], &a[1], &a[2], &v[2]]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        assert_eq!(decode(&wire), vec![audio.clone(), video.clone()]);
        assert_eq!(decode_bytewise(&wire), vec![audio, video]);
    }

    #[test]
    fn header_mid_message_drops_the_partial_one() {
        let mut enc = ChunkEncoder::new();
        let big = msg(9, 1, 0, pattern(300, 1));
        let mut wire = encode_chunks(&mut enc, 5, &big).remove(0);
        wire.extend_from_slice(&header0(5, 7, 2, 8, 1));
        wire.extend_from_slice(&[1, 2]);
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::from(wire));
        assert_eq!(drain(&mut dec), vec![msg(8, 1, 7, vec![1, 2])]);
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn error_no_previous_header() {
        for fmt in 1..=3u8 {
            let mut dec = ChunkDecoder::new(DecoderLimits::default());
            dec.feed(Bytes::from(vec![fmt << 6 | 3]));
            assert_eq!(
                dec.next_message(),
                Err(ChunkError::NoPreviousHeader { csid: 3 })
            );
        }
    }

    #[test]
    fn error_message_too_long_before_its_payload() {
        let mut dec = ChunkDecoder::new(limits(100, 64, 1 << 20));
        dec.feed(Bytes::from(header0(3, 0, 101, 9, 1)));
        assert_eq!(
            dec.next_message(),
            Err(ChunkError::MessageTooLong {
                len: 101,
                limit: 100
            })
        );

        // Format 1 announces a length too.
        let mut dec = ChunkDecoder::new(limits(100, 64, 1 << 20));
        let mut wire = header0(3, 0, 100, 9, 1);
        wire.extend_from_slice(&[0; 100]);
        wire.extend_from_slice(&[0x43, 0, 0, 1, 0xFF, 0xFF, 0xFF, 9]);
        dec.feed(Bytes::from(wire));
        assert!(dec.next_message().unwrap().is_some());
        assert_eq!(
            dec.next_message(),
            Err(ChunkError::MessageTooLong {
                len: 0xFF_FFFF,
                limit: 100
            })
        );
    }

    #[test]
    fn error_too_many_chunk_streams() {
        let mut dec = ChunkDecoder::new(limits(1000, 2, 1 << 20));
        let mut wire = Vec::new();
        for csid in [3, 4, 3, 5] {
            wire.extend_from_slice(&header0(csid, 0, 1, 8, 1));
            wire.push(0);
        }
        dec.feed(Bytes::from(wire));
        for _ in 0..3 {
            assert!(dec.next_message().unwrap().is_some());
        }
        assert_eq!(
            dec.next_message(),
            Err(ChunkError::TooManyChunkStreams { limit: 2 })
        );
    }

    #[test]
    fn error_buffered_too_much() {
        let mut dec = ChunkDecoder::new(limits(1000, 64, 200));
        let mut enc = ChunkEncoder::new();
        let mut wire = encode_chunks(&mut enc, 3, &msg(9, 1, 0, vec![1; 300])).remove(0);
        wire.extend_from_slice(&encode_chunks(&mut enc, 4, &msg(9, 1, 0, vec![2; 300])).remove(0));
        dec.feed(Bytes::from(wire));
        assert_eq!(
            dec.next_message(),
            Err(ChunkError::BufferedTooMuch { limit: 200 })
        );
    }

    #[test]
    fn error_invalid_chunk_size() {
        for size in [0, 0x8000_0000, u32::MAX] {
            let mut dec = ChunkDecoder::new(DecoderLimits::default());
            dec.feed(Bytes::from(encode_all(2, &[set_chunk_size(size)])));
            assert_eq!(
                dec.next_message(),
                Err(ChunkError::InvalidChunkSize { size })
            );
        }
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::from(encode_all(
            2,
            &[set_chunk_size(MAX_CHUNK_SIZE)],
        )));
        assert!(dec.next_message().unwrap().is_some());
        assert_eq!(dec.chunk_size(), MAX_CHUNK_SIZE);

        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        assert_eq!(
            dec.set_chunk_size(0),
            Err(ChunkError::InvalidChunkSize { size: 0 })
        );
        assert_eq!(dec.set_chunk_size(4096), Ok(()));
        assert_eq!(dec.chunk_size(), 4096);
    }

    #[test]
    fn error_truncated_control() {
        for type_id in [1, 2] {
            let mut dec = ChunkDecoder::new(DecoderLimits::default());
            dec.feed(Bytes::from(encode_all(
                2,
                &[msg(type_id, 0, 0, vec![0, 1])],
            )));
            assert_eq!(
                dec.next_message(),
                Err(ChunkError::TruncatedControl { type_id, len: 2 })
            );
        }
    }

    #[test]
    fn errors_poison_the_decoder() {
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::from_static(&[0x43]));
        let err = dec.next_message().unwrap_err();
        dec.feed(Bytes::from(encode_all(3, &[msg(8, 1, 0, vec![1])])));
        assert_eq!(dec.next_message(), Err(err.clone()));
        assert_eq!(dec.next_message(), Err(err));
    }

    #[test]
    fn single_chunk_message_is_a_slice_of_the_input() {
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        enc.encode(3, &set_chunk_size(4096), &mut wire);
        enc.set_chunk_size(4096);
        enc.encode(6, &msg(8, 1, 0, pattern(300, 1)), &mut wire);
        enc.encode(7, &msg(9, 1, 0, pattern(4000, 2)), &mut wire);
        let input = wire.freeze();
        let range = input.as_ptr_range();

        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(input.clone());
        let got = drain(&mut dec);
        assert_eq!(got.len(), 3);
        for m in &got {
            assert!(range.contains(&m.payload.as_ptr()), "payload was copied");
            assert!(m.payload.as_ptr_range().end <= range.end);
        }
        assert_eq!(dec.bytes_received(), input.len() as u64);
    }

    #[test]
    fn multi_chunk_message_is_assembled_in_one_exact_buffer() {
        let m = msg(9, 1, 0, pattern(20_000, 1));
        let wire = encode_all(7, std::slice::from_ref(&m));
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::copy_from_slice(&wire[..5000]));
        assert_eq!(dec.next_message(), Ok(None));
        assert_eq!(dec.reader.states().next().unwrap().capacity(), 20_000);
        dec.feed(Bytes::copy_from_slice(&wire[5000..]));
        assert_eq!(drain(&mut dec), vec![m]);
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn large_announced_message_grows_with_what_arrives() {
        let limits = limits(MAX_MESSAGE_LEN, 64, 1 << 24);
        let mut dec = ChunkDecoder::new(limits);
        let mut wire = header0(3, 0, 10_000_000, 9, 1);
        wire.extend_from_slice(&[0; 100]);
        dec.feed(Bytes::from(wire));
        assert_eq!(dec.next_message(), Ok(None));
        assert_eq!(dec.buffered_bytes(), 100);
        assert!(dec.reader.states().next().unwrap().capacity() <= 128);
    }

    fn viewer_with_chunk_size(chunk_size: u32) -> (ChunkDecoder, ChunkEncoder) {
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        enc.encode(
            csid::PROTOCOL_CONTROL,
            &set_chunk_size(chunk_size),
            &mut wire,
        );
        enc.set_chunk_size(chunk_size);
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(wire.freeze());
        assert_eq!(drain(&mut dec), vec![set_chunk_size(chunk_size)]);
        (dec, enc)
    }

    #[test]
    fn shared_encoding_header_bytes() {
        let shared = encode_shared(9, 1000, &[7; 300], 128);
        assert_eq!(
            &shared[..12],
            &[
                0x07, 0x00, 0x03, 0xE8, 0x00, 0x01, 0x2C, 0x09, 0x01, 0x00, 0x00, 0x00
            ]
        );
        assert_eq!(shared[12 + 128], 0xC7);
        assert_eq!(shared.len(), 12 + 300 + 2);
        assert_eq!(encode_shared(8, 0, &[], 128)[0], 0x06);
        assert_eq!(encode_shared(18, 0, &[], 128)[0], 0x04);
        assert_eq!(encode_shared(20, 0, &[], 128)[0], 0x04);
    }

    #[test]
    fn shared_encoding_decodes_back() {
        let frames = [
            msg(18, SHARED_STREAM_ID, 0, pattern(100, 1)),
            msg(9, SHARED_STREAM_ID, 1000, pattern(20_000, 2)),
            msg(8, SHARED_STREAM_ID, 1001, pattern(300, 3)),
            msg(9, SHARED_STREAM_ID, 0xFF_FFFF, pattern(5000, 4)),
            msg(9, SHARED_STREAM_ID, 0x0123_4567, pattern(9000, 5)),
            msg(8, SHARED_STREAM_ID, 0x0123_4567, vec![]),
            msg(9, SHARED_STREAM_ID, 3, pattern(1, 6)),
        ];
        for chunk_size in [1, 128, 4096, 65_536] {
            let mut dec = ChunkDecoder::new(DecoderLimits::default());
            dec.set_chunk_size(chunk_size).unwrap();
            for m in &frames {
                let shared = encode_shared(m.type_id, m.timestamp, &m.payload, chunk_size);
                assert_eq!(
                    shared.len(),
                    shared_encoded_len(m.payload.len(), chunk_size, m.timestamp)
                );
                dec.feed(shared);
            }
            assert_eq!(drain(&mut dec), frames, "chunk size {chunk_size}");
        }
    }

    #[test]
    fn shared_encoding_is_independent_of_what_a_viewer_saw_before() {
        let chunk_size = 4096;
        // Viewer A has been watching: shared media and per-connection traffic.
        let (mut a, mut a_enc) = viewer_with_chunk_size(chunk_size);
        let mut a_wire = BytesMut::new();
        a_enc.encode(csid::COMMAND, &msg(20, 0, 0, pattern(200, 1)), &mut a_wire);
        a_enc.encode(
            csid::STREAM_COMMAND,
            &msg(20, 1, 0, pattern(150, 2)),
            &mut a_wire,
        );
        a.feed(a_wire.freeze());
        a.feed(encode_shared(
            9,
            0x0100_0000,
            &pattern(10_000, 3),
            chunk_size,
        ));
        a.feed(encode_shared(8, 0x0100_0000, &pattern(10, 4), chunk_size));
        a.feed(encode_shared(18, 5, &pattern(10, 5), chunk_size));
        assert_eq!(drain(&mut a).len(), 5);
        // Viewer B only just joined, with different traffic of its own.
        let (mut b, mut b_enc) = viewer_with_chunk_size(chunk_size);
        let mut b_wire = BytesMut::new();
        b_enc.encode(
            csid::STREAM_COMMAND,
            &msg(18, 1, 77, pattern(40, 6)),
            &mut b_wire,
        );
        b.feed(b_wire.freeze());
        assert_eq!(drain(&mut b).len(), 1);

        let shared = [
            encode_shared(9, 40, &pattern(20_000, 7), chunk_size),
            encode_shared(8, 41, &pattern(200, 8), chunk_size),
            encode_shared(18, 42, &pattern(50, 9), chunk_size),
        ];
        for s in &shared {
            a.feed(s.clone());
            b.feed(s.clone());
        }
        let from_a = drain(&mut a);
        assert_eq!(from_a.len(), 3);
        assert_eq!(from_a, drain(&mut b));
        assert_eq!(from_a[0], msg(9, 1, 40, pattern(20_000, 7)));
    }

    #[derive(Clone, Debug)]
    enum Ts {
        Delta(u32),
        Absolute(u32),
    }

    #[derive(Clone, Debug)]
    struct Spec {
        lane: usize,
        type_id: u8,
        stream_id: u32,
        ts: Ts,
        len: usize,
        seed: u8,
    }

    /// Chunk stream ids with 1-, 2- and 3-byte basic headers.
    const LANES: [u32; 4] = [3, 8, 164, 65_599];

    fn arb_spec() -> impl Strategy<Value = Spec> {
        (
            0..LANES.len(),
            prop_oneof![Just(8u8), Just(9u8), 3u8..=255],
            prop_oneof![Just(0u32), Just(1u32), any::<u32>()],
            prop_oneof![
                Just(Ts::Delta(0)),
                Just(Ts::Delta(10)),
                Just(Ts::Delta(0xFF_FFFF)),
                Just(Ts::Delta(0x0100_0000)),
                any::<u32>().prop_map(Ts::Delta),
                any::<u32>().prop_map(Ts::Absolute),
                (0u32..2000).prop_map(|d| Ts::Absolute(u32::MAX - d)),
                (0xFF_FFF0u32..0x0100_0010).prop_map(Ts::Absolute),
            ],
            prop_oneof![Just(0usize), Just(32), Just(4096), 0usize..20_000],
            any::<u8>(),
        )
            .prop_map(|(lane, type_id, stream_id, ts, len, seed)| Spec {
                lane,
                type_id,
                stream_id,
                ts,
                len,
                seed,
            })
    }

    fn arb_chunk_size() -> impl Strategy<Value = u32> {
        prop_oneof![
            1u32..=16,
            17u32..=65_536,
            Just(128u32),
            Just(4096u32),
            Just(65_536u32)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn round_trip_through_interleaving_and_splits(
            specs in prop::collection::vec(arb_spec(), 1..10),
            chunk_size in arb_chunk_size(),
            picks in prop::collection::vec(any::<u8>(), 1..64),
            splits in prop::collection::vec(1usize..3000, 1..40),
        ) {
            let mut enc = ChunkEncoder::new();
            let mut wire = BytesMut::new();
            enc.encode(2, &set_chunk_size(chunk_size), &mut wire);
            enc.set_chunk_size(chunk_size);

            let mut lanes: Vec<std::collections::VecDeque<(Vec<u8>, Option<usize>)>> =
                vec![Default::default(); LANES.len()];
            let mut last_ts = [0u32; LANES.len()];
            let mut msgs = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                let ts = match spec.ts {
                    Ts::Delta(d) => last_ts[spec.lane].wrapping_add(d),
                    Ts::Absolute(t) => t,
                };
                last_ts[spec.lane] = ts;
                let m = msg(spec.type_id, spec.stream_id, ts, pattern(spec.len, spec.seed));
                let chunks = encode_chunks(&mut enc, LANES[spec.lane], &m);
                let last = chunks.len() - 1;
                for (k, c) in chunks.into_iter().enumerate() {
                    lanes[spec.lane].push_back((c, (k == last).then_some(i)));
                }
                msgs.push(m);
            }

            let mut expected = vec![set_chunk_size(chunk_size)];
            let mut pick = picks.iter().cycle();
            loop {
                let live: Vec<usize> = (0..lanes.len()).filter(|&l| !lanes[l].is_empty()).collect();
                if live.is_empty() {
                    break;
                }
                let lane = live[usize::from(*pick.next().unwrap()) % live.len()];
                let (bytes, done) = lanes[lane].pop_front().unwrap();
                wire.extend_from_slice(&bytes);
                if let Some(i) = done {
                    expected.push(msgs[i].clone());
                }
            }

            let wire = wire.freeze();
            let mut dec = ChunkDecoder::new(limits(MAX_MESSAGE_LEN, LANES.len() + 1, 1 << 26));
            let mut got = Vec::new();
            let mut at = 0;
            for n in splits.iter().cycle() {
                if at >= wire.len() {
                    break;
                }
                let end = (at + n).min(wire.len());
                dec.feed(wire.slice(at..end));
                at = end;
                got.extend(drain(&mut dec));
                prop_assert!(dec.unparsed_bytes() <= MAX_HEADER_LEN);
            }
            prop_assert_eq!(dec.bytes_received(), wire.len() as u64);
            prop_assert_eq!(dec.buffered_bytes(), 0);
            prop_assert_eq!(&got, &expected);
            let limits = limits(MAX_MESSAGE_LEN, LANES.len() + 1, 1 << 26);
            prop_assert_eq!(read_by_chunks(&wire, &splits, limits), expected);
        }

        #[test]
        fn hostile_input_never_panics_nor_exceeds_limits(
            data in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..4096),
                arb_chunk_soup(),
            ],
            splits in prop::collection::vec(1usize..512, 1..16),
        ) {
            let limits = limits(1000, 3, 1500);
            let mut dec = ChunkDecoder::new(limits);
            let mut at = 0;
            'feed: for n in splits.iter().cycle() {
                if at >= data.len() {
                    break;
                }
                let end = (at + n).min(data.len());
                dec.feed(Bytes::copy_from_slice(&data[at..end]));
                at = end;
                loop {
                    let step = dec.next_message();
                    prop_assert!(dec.buffered_bytes() <= limits.max_buffered_bytes);
                    prop_assert!(dec.chunk_streams() <= limits.max_chunk_streams);
                    let held: usize = dec.reader.states().map(Vec::len).sum();
                    prop_assert_eq!(held, dec.buffered_bytes());
                    for partial in dec.reader.states() {
                        prop_assert!(partial.capacity() <= limits.max_message_len as usize);
                    }
                    prop_assert!(
                        dec.reserved_bytes()
                            <= 2 * dec.buffered_bytes() + dec.chunk_streams() * EXACT_ALLOC_LIMIT
                    );
                    match step {
                        Ok(Some(m)) => prop_assert!(m.payload.len() <= 1000),
                        Ok(None) => {
                            prop_assert!(dec.unparsed_bytes() <= MAX_HEADER_LEN);
                            break;
                        }
                        Err(err) => {
                            prop_assert_eq!(dec.next_message(), Err(err));
                            break 'feed;
                        }
                    }
                }
            }
        }
    }

    /// Plausible-looking chunks with random fields, to get past the first header.
    fn arb_chunk_soup() -> impl Strategy<Value = Vec<u8>> {
        let chunk = (
            0u8..4,
            prop::sample::select(vec![2u32, 3, 4, 64, 400, 65_599]),
            prop_oneof![any::<u32>(), Just(0xFF_FFFF), 0u32..100],
            0u32..1200,
            prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(fmt, csid, ts, len, type_id, payload)| {
                let mut out = Vec::new();
                put_basic_header(&mut out, fmt, csid);
                if fmt <= 2 {
                    out.extend_from_slice(&ts.min(0xFF_FFFF).to_be_bytes()[1..]);
                }
                if fmt <= 1 {
                    out.extend_from_slice(&len.to_be_bytes()[1..]);
                    out.push(type_id);
                }
                if fmt == 0 {
                    out.extend_from_slice(&1u32.to_le_bytes());
                }
                if ts >= 0xFF_FFFF {
                    out.extend_from_slice(&ts.to_be_bytes());
                }
                out.extend_from_slice(&payload);
                out
            });
        prop::collection::vec(chunk, 1..24).prop_map(|chunks| chunks.concat())
    }
}
