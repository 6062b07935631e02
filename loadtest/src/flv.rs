//! Readers for HTTP-FLV and WebSocket-FLV viewers: each takes whatever a `recv` returned,
//! in pieces split anywhere, and never copies a media payload it does not have to.
//!
//! - [`Dechunker`] undoes HTTP/1.1 chunked transfer coding: it walks the chunk-size lines
//!   and hands out each chunk's data as a slice of the input.
//! - [`WsFrames`] reads the WebSocket (RFC 6455) frames a server sends: binary data comes
//!   out as slices of the input, control frames (ping, pong, close) whole. A server's frames
//!   are unmasked; a masked one, reserved bits, unknown opcodes and malformed control frames
//!   are errors.
//! - [`FlvWalker`] walks the FLV byte stream those yield (the file header, then tags: an
//!   11-byte header, the payload, a 4-byte back pointer it checks) and reports each tag with
//!   the first [`PREFIX_LEN`] bytes of its payload (enough for the FLV video header and the
//!   marker), or, for a verifying viewer, the whole payload.

use thiserror::Error;

use crate::scanner::PREFIX_LEN;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Largest chunk accepted (far above anything a relay sends).
const MAX_CHUNK: u64 = 1 << 40;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("bad chunk size line")]
    ChunkSize,
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    #[error("chunk line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("WebSocket frame from the server is masked")]
    Masked,
    #[error("WebSocket frame with reserved bits set")]
    Reserved,
    #[error("WebSocket frame with unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("WebSocket text frame (FLV comes in binary frames)")]
    Text,
    #[error("WebSocket continuation frame outside a fragmented message")]
    Continuation,
    #[error("WebSocket data frame inside a fragmented message")]
    Interleaved,
    #[error("malformed WebSocket control frame")]
    Control,
    #[error("WebSocket frame length above 2^63")]
    Length,
    #[error("not an FLV stream (no FLV header)")]
    NotFlv,
    #[error("FLV tag's back pointer {got} differs from its size {expected}")]
    BackPointer { expected: u32, got: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// In a chunk-size line: `size` so far, whether a digit came, whether an extension or
    /// whitespace ended the digits.
    Size {
        digit: bool,
        ended: bool,
    },
    Data,
    DataCr,
    DataLf,
    /// After the last (zero) chunk: at the start of a trailer line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    Done,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Dechunker {
    state: ChunkState,
    /// The chunk size being read, then the data bytes left in it.
    size: u64,
    line: usize,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker {
            state: ChunkState::Size {
                digit: false,
                ended: false,
            },
            size: 0,
            line: 0,
        }
    }
}

impl Dechunker {
    /// Whether the last chunk and the trailer were read: the body is over.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The next piece of body data in `input` (which it advances), or `None` when `input`
    /// holds no more (or the body is done).
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BodyError> {
        loop {
            if self.state == ChunkState::Data {
                if input.is_empty() {
                    return Ok(None);
                }
                let n = (self.size.min(input.len() as u64)) as usize;
                let (data, rest) = input.split_at(n);
                *input = rest;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                return Ok(Some(data));
            }
            let Some((&b, rest)) = input.split_first() else {
                return Ok(None);
            };
            *input = rest;
            self.state = match self.state {
                ChunkState::Size { digit, ended } => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(BodyError::LineTooLong);
                    }
                    match b {
                        b'\n' if digit => {
                            self.line = 0;
                            if self.size == 0 {
                                ChunkState::TrailerStart
                            } else {
                                ChunkState::Data
                            }
                        }
                        _ if ended => ChunkState::Size { digit, ended },
                        b';' | b' ' | b'\t' | b'\r' if digit => {
                            ChunkState::Size { digit, ended: true }
                        }
                        _ => {
                            let d = (b as char).to_digit(16).ok_or(BodyError::ChunkSize)?;
                            self.size = self.size * 16 + u64::from(d);
                            if self.size > MAX_CHUNK {
                                return Err(BodyError::ChunkSize);
                            }
                            ChunkState::Size {
                                digit: true,
                                ended: false,
                            }
                        }
                    }
                }
                ChunkState::DataCr if b == b'\r' => ChunkState::DataLf,
                ChunkState::DataLf if b == b'\n' => {
                    self.size = 0;
                    ChunkState::Size {
                        digit: false,
                        ended: false,
                    }
                }
                ChunkState::DataCr | ChunkState::DataLf => return Err(BodyError::ChunkEnd),
                ChunkState::TrailerStart => match b {
                    b'\r' => ChunkState::TrailerLf,
                    b'\n' => ChunkState::Done,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(BodyError::LineTooLong);
                    }
                    if b == b'\n' {
                        self.line = 0;
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::TrailerLine
                    }
                }
                ChunkState::TrailerLf if b == b'\n' => ChunkState::Done,
                ChunkState::TrailerLf => ChunkState::TrailerLine,
                ChunkState::Done => {
                    // Bytes after the body: not ours to read.
                    *input = &[];
                    return Ok(None);
                }
                ChunkState::Data => unreachable!("handled above"),
            };
            if self.state == ChunkState::Done {
                *input = &[];
                return Ok(None);
            }
        }
    }
}

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// What [`WsFrames`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// Part of a binary message's payload.
    Data(&'a [u8]),
    /// A whole ping frame's payload: answer with a pong carrying it.
    Ping(Vec<u8>),
    Pong,
    /// A close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// See the module documentation.
#[derive(Default, Debug)]
pub struct WsFrames {
    header: [u8; 10],
    have: usize,
    /// In a frame's payload: its opcode and the bytes left.
    payload: Option<(u8, u64)>,
    /// Assembling a control frame's payload.
    control: Vec<u8>,
    /// Inside a fragmented binary message (a frame without FIN came).
    fragmented: bool,
}

impl WsFrames {
    /// The next event in `input` (which it advances), or `None` when `input` holds no more.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Result<Option<WsEvent<'a>>, BodyError> {
        loop {
            if let Some((opcode, left)) = self.payload {
                if opcode == OP_BINARY || opcode == OP_CONTINUATION {
                    if left == 0 {
                        self.payload = None;
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = left.min(input.len() as u64) as usize;
                    let (data, rest) = input.split_at(n);
                    *input = rest;
                    self.payload = (left > n as u64).then_some((opcode, left - n as u64));
                    return Ok(Some(WsEvent::Data(data)));
                }
                let n = left.min(input.len() as u64) as usize;
                let (data, rest) = input.split_at(n);
                *input = rest;
                self.control.extend_from_slice(data);
                if left > n as u64 {
                    self.payload = Some((opcode, left - n as u64));
                    return Ok(None);
                }
                self.payload = None;
                let body = std::mem::take(&mut self.control);
                return Ok(Some(match opcode {
                    OP_PING => WsEvent::Ping(body),
                    OP_PONG => WsEvent::Pong,
                    _ => WsEvent::Close(body.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
                }));
            }
            // A frame header: 2 bytes, then 2 or 8 bytes of length.
            let need = match self.header.get(1).map(|b| b & 0x7F) {
                _ if self.have < 2 => 2,
                Some(126) => 4,
                Some(127) => 10,
                _ => 2,
            };
            if self.have < need {
                let n = (need - self.have).min(input.len());
                if n == 0 {
                    return Ok(None);
                }
                self.header[self.have..self.have + n].copy_from_slice(&input[..n]);
                self.have += n;
                *input = &input[n..];
                if self.have == 2 {
                    // Check what we can as soon as we can.
                    if self.header[1] & 0x80 != 0 {
                        return Err(BodyError::Masked);
                    }
                    if self.header[0] & 0x70 != 0 {
                        return Err(BodyError::Reserved);
                    }
                }
                continue;
            }
            self.have = 0;
            let fin = self.header[0] & 0x80 != 0;
            let opcode = self.header[0] & 0x0F;
            let len = match self.header[1] & 0x7F {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.header[2..10]);
                    let len = u64::from_be_bytes(b);
                    if len >> 63 != 0 {
                        return Err(BodyError::Length);
                    }
                    len
                }
                short => u64::from(short),
            };
            match opcode {
                OP_BINARY if self.fragmented => return Err(BodyError::Interleaved),
                OP_BINARY => self.fragmented = !fin,
                OP_CONTINUATION if !self.fragmented => return Err(BodyError::Continuation),
                OP_CONTINUATION => self.fragmented = !fin,
                OP_TEXT => return Err(BodyError::Text),
                OP_CLOSE | OP_PING | OP_PONG => {
                    if !fin || len > 125 {
                        return Err(BodyError::Control);
                    }
                    self.control.clear();
                }
                other => return Err(BodyError::Opcode(other)),
            }
            self.payload = Some((opcode, len));
        }
    }
}

/// A client's frame: FIN, `opcode`, masked with `mask` as RFC 6455 requires of clients.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else if let Ok(short) = u16::try_from(payload.len()) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// One FLV tag, as [`FlvWalker`] saw it.
pub struct FlvTag<'a> {
    /// 8 audio, 9 video, 18 script data.
    pub tag_type: u8,
    pub timestamp: u32,
    /// The payload's length from the tag header.
    pub len: u32,
    /// The first (up to [`PREFIX_LEN`]) bytes of the payload.
    pub prefix: &'a [u8],
    /// The whole payload, when the walker keeps payloads.
    pub whole: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlvState {
    /// The 9-byte file header.
    FileHeader,
    /// Header bytes past the 9 the data offset asks to skip.
    SkipHeader(u32),
    /// A 4-byte back pointer (PreviousTagSize0 first), expected to be this.
    BackPointer(u32),
    TagHeader,
    Payload,
}

/// See the module documentation.
pub struct FlvWalker {
    state: FlvState,
    fixed: [u8; 11],
    have: usize,
    keep_whole: bool,
    tag_type: u8,
    timestamp: u32,
    len: u32,
    left: u32,
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    whole: Vec<u8>,
}

impl FlvWalker {
    /// A walker at the start of an FLV stream; `keep_whole` keeps every payload whole (for
    /// verifying viewers), otherwise only prefixes are kept.
    pub fn new(keep_whole: bool) -> FlvWalker {
        FlvWalker {
            state: FlvState::FileHeader,
            fixed: [0; 11],
            have: 0,
            keep_whole,
            tag_type: 0,
            timestamp: 0,
            len: 0,
            left: 0,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            whole: Vec::new(),
        }
    }

    /// Fills `fixed` up to `need` bytes from `input`; true once full.
    fn fill(&mut self, input: &mut &[u8], need: usize) -> bool {
        let n = (need - self.have).min(input.len());
        self.fixed[self.have..self.have + n].copy_from_slice(&input[..n]);
        self.have += n;
        *input = &input[n..];
        if self.have == need {
            self.have = 0;
            true
        } else {
            false
        }
    }

    /// Walks `input`, calling `on_tag` for each tag whose payload ends in it.
    pub fn scan(
        &mut self,
        mut input: &[u8],
        mut on_tag: impl FnMut(FlvTag<'_>),
    ) -> Result<(), BodyError> {
        while !input.is_empty() {
            match self.state {
                FlvState::FileHeader => {
                    if !self.fill(&mut input, 9) {
                        return Ok(());
                    }
                    let h = &self.fixed;
                    if &h[..3] != b"FLV" {
                        return Err(BodyError::NotFlv);
                    }
                    let offset = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
                    if offset < 9 {
                        return Err(BodyError::NotFlv);
                    }
                    self.state = FlvState::SkipHeader(offset - 9);
                }
                FlvState::SkipHeader(left) => {
                    let n = (left as usize).min(input.len());
                    input = &input[n..];
                    self.state = if n as u32 == left {
                        FlvState::BackPointer(0)
                    } else {
                        FlvState::SkipHeader(left - n as u32)
                    };
                }
                FlvState::BackPointer(expected) => {
                    if !self.fill(&mut input, 4) {
                        return Ok(());
                    }
                    let f = &self.fixed;
                    let got = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                    if got != expected {
                        return Err(BodyError::BackPointer { expected, got });
                    }
                    self.state = FlvState::TagHeader;
                }
                FlvState::TagHeader => {
                    if !self.fill(&mut input, 11) {
                        return Ok(());
                    }
                    let f = &self.fixed;
                    self.tag_type = f[0] & 0x1F;
                    self.len = u32::from_be_bytes([0, f[1], f[2], f[3]]);
                    self.timestamp = u32::from_be_bytes([f[7], f[4], f[5], f[6]]);
                    self.left = self.len;
                    self.prefix_len = 0;
                    self.whole.clear();
                    self.state = FlvState::Payload;
                    if self.len == 0 {
                        self.finish_tag(&mut on_tag);
                    }
                }
                FlvState::Payload => {
                    let n = (self.left as usize).min(input.len());
                    let (data, rest) = input.split_at(n);
                    input = rest;
                    if self.prefix_len < PREFIX_LEN {
                        let k = (PREFIX_LEN - self.prefix_len).min(n);
                        self.prefix[self.prefix_len..self.prefix_len + k]
                            .copy_from_slice(&data[..k]);
                        self.prefix_len += k;
                    }
                    if self.keep_whole {
                        self.whole.extend_from_slice(data);
                    }
                    self.left -= n as u32;
                    if self.left == 0 {
                        self.finish_tag(&mut on_tag);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish_tag(&mut self, on_tag: &mut impl FnMut(FlvTag<'_>)) {
        on_tag(FlvTag {
            tag_type: self.tag_type,
            timestamp: self.timestamp,
            len: self.len,
            prefix: &self.prefix[..self.prefix_len],
            whole: self.keep_whole.then_some(&self.whole[..]),
        });
        self.state = FlvState::BackPointer(11 + self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk_all(d: &mut Dechunker, pieces: &[&[u8]]) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        for piece in pieces {
            let mut input = *piece;
            while let Some(data) = d.next(&mut input)? {
                out.extend_from_slice(data);
            }
            assert!(input.is_empty() || d.done());
        }
        Ok(out)
    }

    fn every_split(wire: &[u8], mut check: impl FnMut(&[&[u8]])) {
        check(&[wire]);
        for i in 0..=wire.len() {
            check(&[&wire[..i], &wire[i..]]);
        }
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                check(&[&wire[..i], &wire[i..j], &wire[j..]]);
            }
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        check(&bytes);
    }

    #[test]
    fn dechunks_at_any_split() {
        let wire = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                     3 \r\nxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let expected = b"helloabcdefghijklmnopqrstuvwxyzxyz";
        every_split(wire, |pieces| {
            let mut d = Dechunker::default();
            assert_eq!(dechunk_all(&mut d, pieces).unwrap(), expected);
            assert!(d.done());
        });
    }

    #[test]
    fn dechunk_passes_slices_of_the_input() {
        let wire = b"400\r\n"
            .iter()
            .copied()
            .chain([7u8; 1024])
            .collect::<Vec<u8>>();
        let mut d = Dechunker::default();
        let mut input = &wire[..];
        let data = d.next(&mut input).unwrap().unwrap();
        assert_eq!(data.len(), 1024);
        assert_eq!(data.as_ptr(), wire[5..].as_ptr());
        assert!(!d.done());
    }

    #[test]
    fn dechunk_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcXY",
            b"ffffffffffffffffff\r\n",
        ] {
            let mut d = Dechunker::default();
            assert!(dechunk_all(&mut d, &[bad]).is_err(), "{bad:?}");
        }
        let mut d = Dechunker::default();
        let long = vec![b'1'; 1]
            .into_iter()
            .chain(vec![b' '; 5000])
            .collect::<Vec<u8>>();
        assert_eq!(dechunk_all(&mut d, &[&long]), Err(BodyError::LineTooLong));
    }

    /// A server's frame (unmasked).
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else if let Ok(short) = u16::try_from(payload.len()) {
            out.push(126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Got {
        Data(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn frames_all(pieces: &[&[u8]]) -> Result<Vec<Got>, BodyError> {
        let mut w = WsFrames::default();
        let mut out = Vec::new();
        let mut data = Vec::new();
        for piece in pieces {
            let mut input = *piece;
            while let Some(event) = w.next(&mut input)? {
                match event {
                    WsEvent::Data(d) => data.extend_from_slice(d),
                    other => {
                        if !data.is_empty() {
                            out.push(Got::Data(std::mem::take(&mut data)));
                        }
                        out.push(match other {
                            WsEvent::Ping(p) => Got::Ping(p),
                            WsEvent::Pong => Got::Pong,
                            WsEvent::Close(c) => Got::Close(c),
                            WsEvent::Data(_) => unreachable!(),
                        });
                    }
                }
            }
            assert!(input.is_empty());
        }
        if !data.is_empty() {
            out.push(Got::Data(data));
        }
        Ok(out)
    }

    #[test]
    fn ws_frames_at_any_split_with_all_length_forms() {
        let small: Vec<u8> = (0..100u8).collect();
        let medium: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        wire.extend(server_frame(true, OP_BINARY, &small));
        wire.extend(server_frame(true, OP_PING, b"hi"));
        wire.extend(server_frame(true, OP_BINARY, &medium));
        wire.extend(server_frame(false, OP_BINARY, &small[..10]));
        wire.extend(server_frame(true, OP_PONG, b""));
        wire.extend(server_frame(true, OP_CONTINUATION, &small[10..]));
        wire.extend(server_frame(true, OP_BINARY, &[]));
        let mid = wire.len();
        wire.extend(server_frame(true, OP_BINARY, &big));
        wire.extend(server_frame(true, OP_CLOSE, &1001u16.to_be_bytes()));
        let expected = vec![
            Got::Data(small.clone()),
            Got::Ping(b"hi".to_vec()),
            Got::Data([&medium[..], &small[..10]].concat()),
            Got::Pong,
            Got::Data([&small[10..], &big[..]].concat()),
            Got::Close(Some(1001)),
        ];
        // Every split of the small frames; the 64-bit one at a stride.
        every_split(&wire[..mid], |pieces| {
            let got = frames_all(pieces).unwrap();
            assert_eq!(got[..4], expected[..4]);
            assert_eq!(got[4..], [Got::Data(small[10..].to_vec())]);
        });
        for split in [1, 2, 3, 7, 126, 4096, 65_536, wire.len()] {
            let pieces: Vec<&[u8]> = wire.chunks(split).collect();
            assert_eq!(frames_all(&pieces).unwrap(), expected, "split {split}");
        }
        for cut in [mid, mid + 1, mid + 2, mid + 5, mid + 9, mid + 10, mid + 11] {
            let pieces = [&wire[..cut], &wire[cut..]];
            assert_eq!(frames_all(&pieces).unwrap(), expected, "cut {cut}");
        }
    }

    #[test]
    fn ws_frame_errors() {
        let masked = client_frame(OP_BINARY, b"abc", [1, 2, 3, 4]);
        assert_eq!(frames_all(&[&masked]), Err(BodyError::Masked));
        assert_eq!(frames_all(&[&[0xC2, 0]]), Err(BodyError::Reserved));
        assert_eq!(frames_all(&[&[0x83, 0]]), Err(BodyError::Opcode(3)));
        assert_eq!(frames_all(&[&[0x81, 0]]), Err(BodyError::Text));
        assert_eq!(frames_all(&[&[0x80, 0]]), Err(BodyError::Continuation));
        assert_eq!(frames_all(&[&[0x09, 0]]), Err(BodyError::Control));
        assert_eq!(frames_all(&[&[0x89, 126, 0, 126]]), Err(BodyError::Control));
        assert_eq!(
            frames_all(&[&[0x02, 1, 0, 0x82, 0]]),
            Err(BodyError::Interleaved)
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(frames_all(&[&huge]), Err(BodyError::Length));
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(OP_PONG, b"hi", [1, 2, 3, 4]);
        assert_eq!(f, vec![0x8A, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
        let long = vec![0u8; 200];
        let f = client_frame(OP_BINARY, &long, [9, 9, 9, 9]);
        assert_eq!(&f[..4], &[0x82, 0x80 | 126, 0, 200]);
        assert_eq!(f.len(), 4 + 4 + 200);
    }

    fn flv_tag(tag_type: u8, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![tag_type];
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
        out.push((timestamp >> 24) as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(payload);
        out.extend_from_slice(&(11 + len).to_be_bytes());
        out
    }

    fn flv_header() -> Vec<u8> {
        vec![b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0]
    }

    type Seen = (u8, u32, u32, Vec<u8>, Option<Vec<u8>>);

    fn walk(pieces: &[&[u8]], whole: bool) -> Result<Vec<Seen>, BodyError> {
        let mut w = FlvWalker::new(whole);
        let mut out = Vec::new();
        for piece in pieces {
            w.scan(piece, |t| {
                out.push((
                    t.tag_type,
                    t.timestamp,
                    t.len,
                    t.prefix.to_vec(),
                    t.whole.map(<[u8]>::to_vec),
                ))
            })?;
        }
        Ok(out)
    }

    #[test]
    fn walks_flv_tags_split_anywhere() {
        let video: Vec<u8> = (0..300u32).map(|i| (i * 3) as u8).collect();
        let mut wire = flv_header();
        wire.extend(flv_tag(18, 0, b"meta"));
        wire.extend(flv_tag(9, 0x0100_0021, &video));
        wire.extend(flv_tag(8, 40, &[0xAF, 1]));
        wire.extend(flv_tag(8, 41, &[]));
        let expected = |whole: bool| -> Vec<Seen> {
            vec![
                (18, 0, 4, b"meta".to_vec(), whole.then(|| b"meta".to_vec())),
                (
                    9,
                    0x0100_0021,
                    300,
                    video[..PREFIX_LEN].to_vec(),
                    whole.then(|| video.clone()),
                ),
                (8, 40, 2, vec![0xAF, 1], whole.then(|| vec![0xAF, 1])),
                (8, 41, 0, vec![], whole.then(Vec::new)),
            ]
        };
        every_split(&wire, |pieces| {
            assert_eq!(walk(pieces, false).unwrap(), expected(false));
            assert_eq!(walk(pieces, true).unwrap(), expected(true));
        });
    }

    #[test]
    fn flv_errors() {
        assert_eq!(walk(&[b"GIF89a\0\0\0"], false), Err(BodyError::NotFlv));
        let mut wire = flv_header();
        let mut tag = flv_tag(9, 0, b"abc");
        let n = tag.len();
        tag[n - 1] = 0;
        wire.extend(tag);
        assert_eq!(
            walk(&[&wire], false),
            Err(BodyError::BackPointer {
                expected: 14,
                got: 0
            })
        );
        // A longer header is skipped.
        let mut wire = vec![b'F', b'L', b'V', 1, 5, 0, 0, 0, 12, 1, 2, 3, 0, 0, 0, 0];
        wire.extend(flv_tag(8, 1, b"x"));
        assert_eq!(walk(&[&wire], false).unwrap().len(), 1);
    }
}
