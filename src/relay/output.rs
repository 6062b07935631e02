//! Output formats: the ways a viewer receives a stream, and each frame encoded once per
//! shard for each of them.
//!
//! Every frame comes with its RTMP chunk encoding (`Frame::bytes`, made once at the
//! origin). A shard whose viewers of a stream include HTTP-FLV or WebSocket-FLV viewers
//! makes, as each frame joins its ring, one more encoding per format they use: the FLV tag
//! (11-byte header, the payload, the 4-byte back pointer) inside its transport's framing,
//! an HTTP chunk (`{len:x}\r\n ... \r\n`) or a WebSocket binary frame header, or bare for
//! an HTTP/1.0 response that ends when the connection does. Every viewer of that format
//! then writes those same bytes, as RTMP viewers write `Frame::bytes`. The payload comes
//! from the RTMP encoding itself (`chunk::shared_payload_pieces`), so a frame never keeps
//! its payload twice.
//!
//! What a viewer can play is part of its output class too: an Enhanced RTMP message (a
//! FourCC codec, several tracks) is sent whole only to viewers that declared its codecs in
//! `connect`; others get one of the frame's reduced forms (`Frame::tracks`, made once at
//! the origin), chosen by their [`TrackFilter`]. There are four filter kinds and a
//! declared set is a 32-bit codec mask, so every viewer of a class writes the same shared
//! bytes and choosing costs a few comparisons per message, never an allocation.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{Frame, FrameKind, Reduced};
use crate::http::{response, websocket};
use crate::media::flv::{BACK_POINTER_LEN, TAG_HEADER_LEN};
use crate::rtmp::capabilities::CodecSet;
use crate::rtmp::chunk::shared_payload_pieces;
use crate::rtmp::message::MessageType;

/// How a viewer receives its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// RTMP chunks (`Frame::bytes`).
    Rtmp,
    /// FLV tags as HTTP/1.1 chunks.
    HttpFlvChunked,
    /// FLV tags as they are, for an HTTP/1.0 body that ends with the connection.
    HttpFlv,
    /// FLV tags, each in a WebSocket binary frame.
    WebSocketFlv,
}

impl OutputFormat {
    /// The formats besides RTMP, whose encodings a frame may carry (`Frame::encodings`).
    pub const FLV: [OutputFormat; 3] = [
        OutputFormat::HttpFlvChunked,
        OutputFormat::HttpFlv,
        OutputFormat::WebSocketFlv,
    ];

    /// Index into `Frame::encodings`, None for RTMP.
    pub fn slot(self) -> Option<usize> {
        match self {
            OutputFormat::Rtmp => None,
            OutputFormat::HttpFlvChunked => Some(0),
            OutputFormat::HttpFlv => Some(1),
            OutputFormat::WebSocketFlv => Some(2),
        }
    }

    /// The protocol's name, for the API and metrics.
    pub fn protocol(self) -> &'static str {
        match self {
            OutputFormat::Rtmp => "rtmp",
            OutputFormat::HttpFlvChunked | OutputFormat::HttpFlv => "http_flv",
            OutputFormat::WebSocketFlv => "ws_flv",
        }
    }
}

/// Which tracks of an Enhanced RTMP stream a viewer gets, and in which layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrackFilter {
    /// Every message as published, multitrack included.
    All,
    /// Track 0 of each kind, as single-track messages, FourCC codecs allowed: HTTP-FLV and
    /// WebSocket-FLV viewers (mpegts.js and flv.js play HEVC/AV1 in Enhanced FLV but not
    /// multitrack), and undeclared RTMP viewers with `enhanced_to_undeclared = true`.
    Track0,
    /// Track 0 of each kind in the legacy FLV layout, and nothing a legacy parser cannot
    /// read: RTMP viewers that declared no `fourCcList` (ffmpeg 5.1, rtmpdump).
    #[default]
    Legacy,
    /// A viewer that declared these codecs: whole messages whose codecs it all declared,
    /// else track 0 when it declared that track's codec, else the legacy form.
    Declared(CodecSet),
}

impl TrackFilter {
    /// The class of an RTMP viewer that declared `playable` (empty: declared nothing).
    pub fn for_rtmp(
        declared: bool,
        playable: CodecSet,
        enhanced_to_undeclared: bool,
    ) -> TrackFilter {
        if playable == CodecSet::ALL {
            TrackFilter::All
        } else if declared {
            TrackFilter::Declared(playable)
        } else if enhanced_to_undeclared {
            TrackFilter::Track0
        } else {
            TrackFilter::Legacy
        }
    }

    /// A short name for the API.
    pub fn name(self) -> &'static str {
        match self {
            TrackFilter::All => "all",
            TrackFilter::Track0 => "track0",
            TrackFilter::Legacy => "legacy",
            TrackFilter::Declared(_) => "declared",
        }
    }
}

fn type_id(kind: FrameKind) -> u8 {
    match kind {
        FrameKind::Audio => MessageType::Audio.id(),
        FrameKind::Video => MessageType::Video.id(),
        FrameKind::Metadata | FrameKind::Data => MessageType::DataAmf0.id(),
    }
}

/// Wraps `body` (FLV bytes) in `format`'s transport framing.
pub fn frame_flv(format: OutputFormat, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 16);
    match format {
        OutputFormat::Rtmp => return Bytes::new(),
        OutputFormat::HttpFlvChunked => {
            out.put_slice(&response::chunk_prefix(body.len()));
            out.put_slice(body);
            out.put_slice(response::CHUNK_SUFFIX);
        }
        OutputFormat::HttpFlv => out.put_slice(body),
        OutputFormat::WebSocketFlv => {
            out.put_slice(&websocket::binary_frame_header(body.len()));
            out.put_slice(body);
        }
    }
    out.freeze()
}

/// The FLV tag of `f` at timestamp `timestamp` (a joining viewer's headers are restamped),
/// in the form FLV viewers get (`TrackFilter::Track0`); None when they get nothing of it.
pub fn flv_tag(f: &Frame, timestamp: u32, chunk_size: u32) -> Option<BytesMut> {
    let chunks = match &f.tracks().track0 {
        Reduced::Same => &f.bytes,
        Reduced::Other { bytes, .. } => bytes,
        Reduced::Nothing => return None,
    };
    Some(flv_tag_of(chunks, f, timestamp, chunk_size))
}

fn flv_tag_of(chunks: &Bytes, f: &Frame, timestamp: u32, chunk_size: u32) -> BytesMut {
    let kind = type_id(f.kind);
    let len: usize = shared_payload_pieces(chunks, kind, f.timestamp, chunk_size)
        .map(<[u8]>::len)
        .sum();
    let mut tag = BytesMut::with_capacity(TAG_HEADER_LEN + len + BACK_POINTER_LEN);
    tag.put_u8(kind);
    tag.put_uint(len as u64 & 0x00FF_FFFF, 3);
    tag.put_uint(u64::from(timestamp & 0x00FF_FFFF), 3);
    tag.put_u8((timestamp >> 24) as u8);
    tag.put_uint(0, 3);
    for piece in shared_payload_pieces(chunks, kind, f.timestamp, chunk_size) {
        tag.put_slice(piece);
    }
    tag.put_u32((TAG_HEADER_LEN + len) as u32);
    tag
}

/// `f` encoded for `format`: its FLV tag in that format's framing; None when FLV viewers
/// get nothing of it.
pub fn encode(f: &Frame, format: OutputFormat, chunk_size: u32) -> Option<Bytes> {
    Some(frame_flv(format, &flv_tag(f, f.timestamp, chunk_size)?))
}

/// The FLV file header (signature, version, audio/video flags) and `PreviousTagSize0`.
pub fn flv_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::media::flv::FlvReader;
    use crate::rtmp::chunk::encode_shared;

    fn frame(kind: FrameKind, ts: u32, payload: &[u8], chunk: u32) -> Frame {
        Frame {
            seq: 0,
            kind,
            timestamp: ts,
            keyframe: false,
            sequence_header: false,
            bytes: encode_shared(type_id(kind), ts, payload, chunk),
            payload: Bytes::new(),
            ingested: Instant::now(),
            encodings: Default::default(),
            tracks: Default::default(),
        }
    }

    #[test]
    fn flv_tags_read_back_as_the_frames_they_came_from() {
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let frames = [
            frame(FrameKind::Video, 0, &[0x17, 0, 0, 0, 0, 1, 2], 128),
            frame(FrameKind::Audio, 23, &[0xAF, 1, 9], 128),
            frame(FrameKind::Video, 0x0123_4567, &big, 128),
        ];
        let mut file = flv_header(true, true).to_vec();
        for f in &frames {
            file.extend_from_slice(&encode(f, OutputFormat::HttpFlv, 128).unwrap());
        }
        let (_, reader) = FlvReader::new(Bytes::from(file)).unwrap();
        let tags: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags[1].timestamp, 23);
        assert_eq!(&tags[1].payload[..], &[0xAF, 1, 9]);
        assert_eq!(tags[2].timestamp, 0x0123_4567);
        assert_eq!(&tags[2].payload[..], &big[..]);
    }

    #[test]
    fn transports_frame_the_same_tag() {
        let f = frame(FrameKind::Audio, 1, &[0xAF, 1, 2, 3], 4096);
        let bare = encode(&f, OutputFormat::HttpFlv, 4096).unwrap();
        let chunked = encode(&f, OutputFormat::HttpFlvChunked, 4096).unwrap();
        assert_eq!(
            &chunked[..],
            [
                format!("{:x}\r\n", bare.len()).as_bytes(),
                &bare[..],
                b"\r\n"
            ]
            .concat()
        );
        let ws = encode(&f, OutputFormat::WebSocketFlv, 4096).unwrap();
        assert_eq!(ws[0], 0x82);
        assert_eq!(usize::from(ws[1]), bare.len());
        assert_eq!(&ws[2..], &bare[..]);
        let long = websocket::binary_frame_header(70_000);
        assert_eq!(&long[..], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
