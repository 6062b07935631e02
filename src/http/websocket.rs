//! WebSocket (RFC 6455) for a server that only sends: WebSocket-FLV.
//!
//! The opening handshake is an HTTP request (`request::parse_head` checks it and keeps
//! `Sec-WebSocket-Key`); the server proves it read that request by answering 101 with
//! `Sec-WebSocket-Accept = base64(SHA-1(key + GUID))` ([`accept_key`]). After that both
//! sides speak frames: a 2-byte header (FIN, opcode; mask bit and a 7-bit length), 2 or
//! 8 more length bytes when the length is 126+ or 65536+, a 4-byte masking key on frames
//! from the client only, and the payload.
//!
//! We send each FLV piece as one unmasked binary frame ([`binary_frame_header`] goes in
//! front of the bytes, so the shared FLV buffers go out unchanged), and answer pings and
//! closes. The client sends little: pings, pongs, a close, maybe some data a viewer
//! ignores. [`FrameDecoder`] reads that, refusing what RFC 6455 says a server must fail
//! the connection for (an unmasked frame, reserved bits without an extension, unknown
//! opcodes, fragmented or over-long control frames) and frames over its size cap. Each
//! error names the close code to send before closing ([`WsError::close_code`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::response::{Cors, truncate};

/// The GUID RFC 6455 §1.3 appends to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 6455 caps control frames (close, ping, pong) at 125 payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The default cap on a data frame from the client. A viewer has nothing to say, so this
/// only needs to be large enough not to trip over a chatty player.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// The largest frame header: 2 bytes, 8 of extended length, 4 of masking key.
pub const MAX_HEADER_BYTES: usize = 14;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The 101 answer to a valid opening handshake. No subprotocol and no extension is
/// accepted (so no `permessage-deflate`: FLV does not compress, and frames stay shared).
/// Check `cors.allows(head.origin)` first: browsers do not enforce CORS on WebSockets.
pub fn upgrade_response(client_key: &str, cors: &Cors) -> Bytes {
    let mut out = String::with_capacity(256);
    out.push_str("HTTP/1.1 101 Switching Protocols\r\nServer: shardcast\r\n");
    out.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n");
    out.push_str("Sec-WebSocket-Accept: ");
    out.push_str(&accept_key(client_key));
    out.push_str("\r\nAccess-Control-Allow-Origin: ");
    out.extend(cors.allow_origin.chars().filter(|c| !c.is_control()));
    out.push_str("\r\n\r\n");
    Bytes::from(out)
}

/// The header of an unmasked binary frame with FIN set carrying `len` bytes: 2 bytes up
/// to 125, 4 up to 65535, else 10. The payload follows it unchanged.
pub fn binary_frame_header(len: usize) -> Bytes {
    Bytes::from(frame_header(OP_BINARY, len))
}

fn frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(10);
    h.push(FIN | opcode);
    if len < 126 {
        h.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        h.push(126);
        h.extend_from_slice(&short.to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h
}

/// A whole close frame: `code`, then `reason` cut to the 123 bytes a control frame has
/// room for (on a character boundary: the reason must stay UTF-8).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = truncate(reason, MAX_CONTROL_PAYLOAD - 2);
    let mut f = frame_header(OP_CLOSE, 2 + reason.len());
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason.as_bytes());
    Bytes::from(f)
}

/// A whole pong frame echoing a ping's payload, cut to 125 bytes (a [`FrameDecoder`]
/// never reports a longer ping).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut f = frame_header(OP_PONG, payload.len());
    f.extend_from_slice(payload);
    Bytes::from(f)
}

/// What a client's frame means to a viewer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// Answer with `pong_frame(&payload)`.
    Ping(Bytes),
    /// An answer to our ping, or a heartbeat: proof of life, nothing more.
    Pong,
    /// The client is leaving. Answer `close_frame(code or 1000, "")` and close; the
    /// decoder ignores anything after it. `None` when the frame carried no code.
    Close { code: Option<u16> },
    /// A text, binary or continuation frame: a viewer ignores it.
    Data,
}

/// A frame the server must fail the connection for. Send
/// `close_frame(err.close_code(), &err.to_string())`, then close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("unmasked frame from client")]
    Unmasked,
    #[error("frame of {len} bytes too large")]
    TooLarge { len: u64 },
    #[error("control frame of {len} bytes")]
    ControlTooLarge { len: u64 },
    #[error("unknown opcode {0:#x}")]
    BadOpcode(u8),
    #[error("reserved bits set")]
    ReservedBits,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("continuation without a message")]
    UnexpectedContinuation,
    #[error("new message inside a fragmented one")]
    ExpectedContinuation,
    #[error("close frame with a 1-byte payload")]
    BadClosePayload,
    #[error("close code {0} not allowed on the wire")]
    BadCloseCode(u16),
    #[error("close reason is not UTF-8")]
    InvalidUtf8,
}

impl WsError {
    /// The close code to send (RFC 6455 §7.4.1): 1009 for a message too big, 1007 for
    /// bad UTF-8, 1002 (protocol error) for the rest.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::TooLarge { .. } => 1009,
            WsError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// Reads the frames a client sends, fed in whatever pieces the socket delivers.
///
/// Only the incomplete frame at the end of a feed is kept, so what it holds never passes
/// `max_payload + 14` bytes (`MAX_CONTROL_PAYLOAD + 14` for a control frame). The length
/// a frame header names is checked against the cap before any byte of its payload is
/// stored. After an error the decoder is poisoned and returns that error again; after a
/// close it ignores all input.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_payload: usize,
    buf: Vec<u8>,
    /// A text or binary message was started without FIN: continuations are due.
    in_message: bool,
    closed: bool,
    failed: Option<WsError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PAYLOAD)
    }
}

/// One step of parsing at the start of a byte slice.
enum Step {
    /// This many bytes in total are needed before the step can finish: the whole header
    /// while it is incomplete, then header plus payload. Always more than given.
    Need(usize),
    Frame {
        consumed: usize,
        event: WsEvent,
    },
}

impl FrameDecoder {
    /// A decoder refusing data frames over `max_payload` bytes (control frames are
    /// always capped at 125, as RFC 6455 says).
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            buf: Vec::new(),
            in_message: false,
            closed: false,
            failed: None,
        }
    }

    /// Bytes held of an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a close frame has been read.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Decodes what `input` completes, in order. An error ends the connection: events
    /// of frames before the bad one in the same feed are dropped with it, which is fine,
    /// since the answer to all of them is the close.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<Vec<WsEvent>, WsError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        while !self.closed {
            let step = if self.buf.is_empty() {
                // The common case: frames parsed straight from the input, no copy.
                match step(self.max_payload, &mut self.in_message, input) {
                    Ok(Step::Need(_)) => {
                        // Bounded: Need(n) > input.len() and n <= cap + 14.
                        self.buf.extend_from_slice(input);
                        break;
                    }
                    Ok(Step::Frame { consumed, event }) => {
                        input = &input[consumed..];
                        event
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            } else {
                match step(self.max_payload, &mut self.in_message, &self.buf) {
                    Ok(Step::Need(n)) => {
                        // Top up to exactly what the step needs, so a finished frame
                        // always ends at the end of `buf`.
                        let take = (n - self.buf.len()).min(input.len());
                        if take == 0 {
                            break;
                        }
                        self.buf.extend_from_slice(&input[..take]);
                        input = &input[take..];
                        continue;
                    }
                    Ok(Step::Frame { event, .. }) => {
                        self.buf.clear();
                        event
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            };
            if let WsEvent::Close { .. } = step {
                self.closed = true;
                self.buf = Vec::new();
            }
            events.push(step);
        }
        Ok(events)
    }

    fn fail(&mut self, e: WsError) -> WsError {
        self.failed = Some(e.clone());
        self.buf = Vec::new();
        e
    }
}

/// Parses one frame at the start of `b`, or says how many bytes it needs. `in_message`
/// changes only when a whole frame is there, so a step can be retried with more bytes.
fn step(max_payload: usize, in_message: &mut bool, b: &[u8]) -> Result<Step, WsError> {
    if b.len() < 2 {
        return Ok(Step::Need(2));
    }
    let (b0, b1) = (b[0], b[1]);
    let fin = b0 & FIN != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let control = opcode & 0x8 != 0;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        other => return Err(WsError::BadOpcode(other)),
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    if control && !fin {
        return Err(WsError::FragmentedControl);
    }
    let (len, len_bytes) = match b1 & 0x7F {
        126 => {
            if b.len() < 4 {
                return Ok(Step::Need(4));
            }
            (u64::from(u16::from_be_bytes([b[2], b[3]])), 2)
        }
        127 => {
            if b.len() < 10 {
                return Ok(Step::Need(10));
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(l), 8)
        }
        short => (u64::from(short), 0),
    };
    // Checked before anything is stored, so a peer's length never sizes a buffer.
    if control && len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(WsError::ControlTooLarge { len });
    }
    if !control && len > max_payload as u64 {
        return Err(WsError::TooLarge { len });
    }
    let header = 2 + len_bytes + 4;
    // Fits: len <= max(max_payload, 125), a usize.
    let total = header + len as usize;
    if b.len() < total {
        return Ok(Step::Need(total));
    }
    let mask = [b[header - 4], b[header - 3], b[header - 2], b[header - 1]];
    let masked = &b[header..total];
    let unmask = || -> Vec<u8> {
        masked
            .iter()
            .enumerate()
            .map(|(i, &x)| x ^ mask[i % 4])
            .collect()
    };

    let event = match opcode {
        OP_PING => WsEvent::Ping(Bytes::from(unmask())),
        OP_PONG => WsEvent::Pong,
        OP_CLOSE => close_event(&unmask())?,
        OP_CONTINUATION => {
            if !*in_message {
                return Err(WsError::UnexpectedContinuation);
            }
            *in_message = !fin;
            WsEvent::Data
        }
        _ => {
            // Text or binary: ignored by a viewer, so neither unmasked nor checked
            // for UTF-8 (RFC 6455 asks for that check on text; skipping it only
            // means we do not close on a message we would have discarded anyway).
            if *in_message {
                return Err(WsError::ExpectedContinuation);
            }
            *in_message = !fin;
            WsEvent::Data
        }
    };
    Ok(Step::Frame {
        consumed: total,
        event,
    })
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<WsEvent, WsError> {
    match payload {
        [] => Ok(WsEvent::Close { code: None }),
        [_] => Err(WsError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // RFC 6455 §7.4: 1004-1006 and 1015 are reserved or never sent; below 1000
            // and 1016-2999 are unassigned; 3000-4999 belong to libraries and apps.
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(WsError::BadCloseCode(code));
            }
            std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(WsEvent::Close { code: Some(code) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: FIN per `fin`, masked with `mask`.
    fn masked(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = frame_header(opcode, payload.len());
        if !fin {
            f[0] &= !FIN;
        }
        f[1] |= 0x80;
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, &b)| b ^ mask[i % 4]));
        f
    }

    fn client(opcode: u8, payload: &[u8]) -> Vec<u8> {
        masked(true, opcode, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    #[test]
    fn rfc_example_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_answer() {
        let b = upgrade_response("dGhlIHNhbXBsZSBub25jZQ==", &Cors::default());
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        assert_eq!(resp.parse(&b), Ok(httparse::Status::Complete(b.len())));
        assert_eq!(resp.code, Some(101));
        let get = |n: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(n))
                .map(|h| h.value)
        };
        assert_eq!(get("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(get("connection"), Some(&b"Upgrade"[..]));
        assert_eq!(
            get("sec-websocket-accept"),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        assert_eq!(get("sec-websocket-extensions"), None);
    }

    #[test]
    fn frame_headers() {
        assert_eq!(&binary_frame_header(0)[..], [0x82, 0]);
        assert_eq!(&binary_frame_header(125)[..], [0x82, 125]);
        assert_eq!(&binary_frame_header(126)[..], [0x82, 126, 0, 126]);
        assert_eq!(&binary_frame_header(65535)[..], [0x82, 126, 0xff, 0xff]);
        assert_eq!(
            &binary_frame_header(65536)[..],
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(&pong_frame(b"hi")[..], [0x8A, 2, b'h', b'i']);
        assert_eq!(pong_frame(&[7; 300]).len(), 2 + 125);
        assert_eq!(&close_frame(1000, "")[..], [0x88, 2, 0x03, 0xE8]);
        assert_eq!(&close_frame(1002, "x")[..], [0x88, 3, 0x03, 0xEA, b'x']);
        let long = close_frame(1009, &"é".repeat(100));
        assert!(long.len() <= 2 + 125);
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }

    #[test]
    fn rfc_masked_examples() {
        // RFC 6455 §5.7: a masked "Hello" text frame, and a masked "Hello" ping.
        let hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut d = FrameDecoder::default();
        assert_eq!(d.feed(&hello), Ok(vec![WsEvent::Data]));
        let ping = client(OP_PING, b"Hello");
        assert_eq!(ping[2..6], hello[2..6]);
        assert_eq!(ping[6..], hello[6..]);
        assert_eq!(
            d.feed(&ping),
            Ok(vec![WsEvent::Ping(Bytes::from_static(b"Hello"))])
        );
    }

    #[test]
    fn several_frames_in_one_feed_and_close() {
        let mut input = client(OP_PONG, b"");
        input.extend(client(OP_BINARY, &[1; 300]));
        input.extend(client(OP_PING, b"p"));
        input.extend(client(OP_CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
        input.extend(client(OP_PING, b"ignored after close"));
        let mut d = FrameDecoder::default();
        assert_eq!(
            d.feed(&input),
            Ok(vec![
                WsEvent::Pong,
                WsEvent::Data,
                WsEvent::Ping(Bytes::from_static(b"p")),
                WsEvent::Close { code: Some(1000) },
            ])
        );
        assert!(d.is_closed());
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.feed(&client(OP_PING, b"x")), Ok(vec![]));
    }

    #[test]
    fn partial_input_across_feeds() {
        let mut input = client(OP_PING, b"abc");
        input.extend(client(OP_BINARY, &[9; 70_000 - 100]));
        input.extend(client(OP_CLOSE, &[]));
        for piece in [1, 2, 3, 7, 500, 4096] {
            let mut d = FrameDecoder::new(70_000);
            let mut events = Vec::new();
            for chunk in input.chunks(piece) {
                events.extend(d.feed(chunk).unwrap());
                assert!(d.buffered() <= 70_000 + MAX_HEADER_BYTES);
            }
            assert_eq!(
                events,
                vec![
                    WsEvent::Ping(Bytes::from_static(b"abc")),
                    WsEvent::Data,
                    WsEvent::Close { code: None },
                ],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn fragmented_messages() {
        let mut input = masked(false, OP_TEXT, b"a", [1, 2, 3, 4]);
        // A control frame may come between fragments.
        input.extend(client(OP_PING, b""));
        input.extend(masked(false, OP_CONTINUATION, b"b", [1, 2, 3, 4]));
        input.extend(masked(true, OP_CONTINUATION, b"c", [1, 2, 3, 4]));
        let mut d = FrameDecoder::default();
        assert_eq!(d.feed(&input).unwrap().len(), 4);

        let mut d = FrameDecoder::default();
        assert_eq!(
            d.feed(&client(OP_CONTINUATION, b"x")),
            Err(WsError::UnexpectedContinuation)
        );
        let mut d = FrameDecoder::default();
        let mut input = masked(false, OP_BINARY, b"a", [0; 4]);
        input.extend(client(OP_BINARY, b"b"));
        assert_eq!(d.feed(&input), Err(WsError::ExpectedContinuation));
    }

    #[test]
    fn rejections() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![0x82, 0x01, 0xAA], WsError::Unmasked),
            (vec![0x89, 0x00], WsError::Unmasked),
            (vec![0xC2, 0x80, 0, 0, 0, 0], WsError::ReservedBits),
            (vec![0x83, 0x80, 0, 0, 0, 0], WsError::BadOpcode(3)),
            (vec![0x8B, 0x80, 0, 0, 0, 0], WsError::BadOpcode(0xB)),
            (vec![0x09, 0x80, 0, 0, 0, 0], WsError::FragmentedControl),
            (
                vec![0x89, 0xFE, 0x00, 0x7E],
                WsError::ControlTooLarge { len: 126 },
            ),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
                WsError::TooLarge { len: 1 << 63 },
            ),
            (
                vec![0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1],
                WsError::TooLarge { len: 65537 },
            ),
            (client(OP_CLOSE, &[3]), WsError::BadClosePayload),
            (client(OP_CLOSE, &[0x03, 0xED]), WsError::BadCloseCode(1005)),
            (client(OP_CLOSE, &[0, 0]), WsError::BadCloseCode(0)),
            (client(OP_CLOSE, &[0x03, 0xE8, 0xff]), WsError::InvalidUtf8),
        ];
        for (input, want) in cases {
            let mut d = FrameDecoder::default();
            assert_eq!(d.feed(&input), Err(want.clone()), "{input:02x?}");
            // Poisoned: the same error again, even for good input.
            assert_eq!(d.feed(&client(OP_PING, b"")), Err(want));
            assert_eq!(d.buffered(), 0);
        }
        assert_eq!(WsError::TooLarge { len: 1 }.close_code(), 1009);
        assert_eq!(WsError::Unmasked.close_code(), 1002);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn oversize_rejected_before_payload_arrives() {
        let mut d = FrameDecoder::new(1000);
        // The header alone (126 + 16-bit length 1001) is enough to refuse.
        assert_eq!(d.feed(&[0x82, 0xFE, 0x03]), Ok(vec![]), "length incomplete");
        assert_eq!(d.feed(&[0xE9]), Err(WsError::TooLarge { len: 1001 }));
    }

    proptest! {
        #[test]
        fn feed_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            cuts in proptest::collection::vec(1usize..300, 1..20),
            max in 0usize..2000,
        ) {
            let mut d = FrameDecoder::new(max);
            let mut rest = &data[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*cut).min(rest.len()));
                rest = tail;
                if d.feed(piece).is_err() {
                    break;
                }
                prop_assert!(d.buffered() <= max.max(MAX_CONTROL_PAYLOAD) + MAX_HEADER_BYTES);
            }
        }

        #[test]
        fn masked_frames_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..125), 1..8),
            mask in any::<[u8; 4]>(),
            piece in 1usize..64,
        ) {
            let mut input = Vec::new();
            for p in &payloads {
                input.extend(masked(true, OP_PING, p, mask));
            }
            let mut d = FrameDecoder::default();
            let mut events = Vec::new();
            for chunk in input.chunks(piece) {
                events.extend(d.feed(chunk).unwrap());
            }
            let want: Vec<WsEvent> = payloads.iter().map(|p| WsEvent::Ping(Bytes::from(p.clone()))).collect();
            prop_assert_eq!(events, want);
        }
    }
}
