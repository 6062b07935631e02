//! Enhanced RTMP capability negotiation: what a client says it can play in `connect`, and
//! what the server answers in `_result`.
//!
//! E-RTMP (Veovera, v1 and v2, "Enhancing NetConnection connect Command") adds four
//! properties to the `connect` command object, which the server mirrors with its own in
//! the `_result` properties:
//!
//! - `fourCcList`: a strict array of FourCC strings (`"hvc1"`, `"av01"`, `"Opus"`...) the
//!   client supports, `"*"` for any. A player that sends none (ffmpeg 5.1, rtmpdump,
//!   ffmpeg 6+ without `-rtmp_enhanced_codecs`) is *undeclared*: it can parse only the
//!   legacy FLV layout, and the relay sends it nothing else.
//! - `videoFourCcInfoMap` / `audioFourCcInfoMap`: FourCC (or `"*"`) to a mask of
//!   CanDecode (1), CanEncode (2), CanForward (4). A client's non-zero entry counts as
//!   declaring that codec, as `fourCcList` would.
//! - `capsEx`: a mask of Reconnect (1: understands `NetConnection.Connect.ReconnectRequest`),
//!   Multitrack (2), ModEx (4) and TimestampNanoOffset (8).
//!
//! The peer is hostile: at most [`MAX_FOURCCS`] entries are read from each list or map, and
//! anything that is not a 4-character string is ignored rather than refused.

use super::amf0::Amf0Value;
use crate::media::codec::{AudioCodec, VideoCodec};

/// List and map entries read from one client at most.
pub const MAX_FOURCCS: usize = 32;

/// `capsEx` bits.
pub const CAPS_EX_RECONNECT: u32 = 0x01;
pub const CAPS_EX_MULTITRACK: u32 = 0x02;
pub const CAPS_EX_MOD_EX: u32 = 0x04;
pub const CAPS_EX_TIMESTAMP_NANO_OFFSET: u32 = 0x08;

/// `FourCcInfoMask` bits.
pub const FOURCC_CAN_DECODE: u32 = 0x01;
pub const FOURCC_CAN_ENCODE: u32 = 0x02;
pub const FOURCC_CAN_FORWARD: u32 = 0x04;

/// A set of codecs, one bit each, so a viewer's declaration is a number compared against a
/// frame's codecs in the fan-out (no allocation, no lookup per message).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodecSet(pub u32);

impl CodecSet {
    /// Every codec, `"*"`.
    pub const ALL: CodecSet = CodecSet(u32::MAX);
    const OTHER: u32 = 1 << 31;

    fn bit(fourcc: &[u8; 4]) -> u32 {
        match fourcc {
            b"avc1" => 1,
            b"hvc1" => 1 << 1,
            b"av01" => 1 << 2,
            b"vp09" => 1 << 3,
            b"vp08" => 1 << 4,
            b"mp4a" => 1 << 8,
            b".mp3" => 1 << 9,
            b"Opus" => 1 << 10,
            b"fLaC" => 1 << 11,
            b"ac-3" => 1 << 12,
            b"ec-3" => 1 << 13,
            // Any FourCC this relay has no name for: only a `"*"` declaration covers it.
            _ => Self::OTHER,
        }
    }

    pub fn of(fourcc: &[u8; 4]) -> CodecSet {
        CodecSet(Self::bit(fourcc))
    }

    pub fn with(self, fourcc: &[u8; 4]) -> CodecSet {
        CodecSet(self.0 | Self::bit(fourcc))
    }

    pub fn union(self, other: CodecSet) -> CodecSet {
        CodecSet(self.0 | other.0)
    }

    /// Every codec of `other` is in this set.
    pub fn covers(self, other: CodecSet) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What one client declared in `connect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `capsEx`, 0 when absent.
    pub caps_ex: u32,
    /// The FourCCs of `fourCcList` (at most [`MAX_FOURCCS`]); `"*"` is kept as `*` padded
    /// with spaces, `b"*   "`.
    pub fourcc_list: Vec<[u8; 4]>,
    /// `videoFourCcInfoMap` and `audioFourCcInfoMap` entries with their masks.
    pub video_fourcc_info: Vec<([u8; 4], u32)>,
    pub audio_fourcc_info: Vec<([u8; 4], u32)>,
    /// The client sent a `fourCcList` or an info map at all: it speaks Enhanced RTMP.
    pub declared: bool,
}

const ANY: [u8; 4] = *b"*   ";

fn fourcc_of(s: &str) -> Option<[u8; 4]> {
    if s == "*" {
        return Some(ANY);
    }
    s.as_bytes().try_into().ok()
}

fn mask_of(v: &Amf0Value) -> u32 {
    v.as_f64()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map_or(0, |n| n.min(f64::from(u32::MAX)) as u32)
}

impl Capabilities {
    /// Reads the capability properties of a `connect` command object.
    pub fn from_connect(obj: &Amf0Value) -> Capabilities {
        let mut caps = Capabilities {
            caps_ex: obj.get("capsEx").map_or(0, mask_of),
            ..Capabilities::default()
        };
        if let Some(list) = obj.get("fourCcList") {
            caps.declared = true;
            let items: &[Amf0Value] = match list {
                Amf0Value::StrictArray(items) => items,
                _ => &[],
            };
            caps.fourcc_list = items
                .iter()
                .filter_map(Amf0Value::as_str)
                .filter_map(fourcc_of)
                .take(MAX_FOURCCS)
                .collect();
        }
        for (key, out) in [
            ("videoFourCcInfoMap", &mut caps.video_fourcc_info),
            ("audioFourCcInfoMap", &mut caps.audio_fourcc_info),
        ] {
            if let Some(props) = obj.get(key).and_then(Amf0Value::properties) {
                caps.declared = true;
                *out = props
                    .iter()
                    .filter_map(|(k, v)| Some((fourcc_of(k)?, mask_of(v))))
                    .take(MAX_FOURCCS)
                    .collect();
            }
        }
        caps
    }

    /// The codecs this client can play: those of `fourCcList` and those its info maps mark
    /// CanDecode or CanForward. `CodecSet::ALL` for `"*"`; empty when it declared nothing.
    pub fn playable(&self) -> CodecSet {
        let listed = self.fourcc_list.iter();
        let mapped = self
            .video_fourcc_info
            .iter()
            .chain(&self.audio_fourcc_info)
            .filter(|(_, mask)| mask & (FOURCC_CAN_DECODE | FOURCC_CAN_FORWARD) != 0)
            .map(|(f, _)| f);
        let mut set = CodecSet::default();
        for f in listed.chain(mapped) {
            if *f == ANY {
                return CodecSet::ALL;
            }
            set = set.with(f);
        }
        set
    }

    /// Whether the client understands `NetConnection.Connect.ReconnectRequest`.
    pub fn reconnect(&self) -> bool {
        self.caps_ex & CAPS_EX_RECONNECT != 0
    }
}

/// The codecs a relay forwards, named in the server's `fourCcList`.
pub const RELAYED_FOURCCS: [&str; 11] = [
    "avc1", "hvc1", "av01", "vp09", "vp08", "mp4a", ".mp3", "Opus", "fLaC", "ac-3", "ec-3",
];

/// The server's own capability properties for the `_result` of `connect`: every codec it
/// relays, CanForward for any codec (it never decodes), and Reconnect, Multitrack, ModEx
/// and TimestampNanoOffset (ModEx blocks and the nanosecond offset pass through untouched).
pub fn server_properties() -> Vec<(String, Amf0Value)> {
    let forward_any = || Amf0Value::Object(vec![("*".into(), Amf0Value::Number(4.0))]);
    vec![
        (
            "fourCcList".into(),
            Amf0Value::StrictArray(
                RELAYED_FOURCCS
                    .iter()
                    .map(|f| Amf0Value::String((*f).into()))
                    .collect(),
            ),
        ),
        ("videoFourCcInfoMap".into(), forward_any()),
        ("audioFourCcInfoMap".into(), forward_any()),
        (
            "capsEx".into(),
            Amf0Value::Number(f64::from(
                CAPS_EX_RECONNECT
                    | CAPS_EX_MULTITRACK
                    | CAPS_EX_MOD_EX
                    | CAPS_EX_TIMESTAMP_NANO_OFFSET,
            )),
        ),
    ]
}

/// The FourCC of a video codec as Enhanced RTMP names it (legacy codecs have none).
pub fn video_fourcc(codec: VideoCodec) -> Option<[u8; 4]> {
    match codec {
        VideoCodec::Avc => Some(*b"avc1"),
        VideoCodec::Hevc => Some(*b"hvc1"),
        VideoCodec::Av1 => Some(*b"av01"),
        VideoCodec::Vp9 => Some(*b"vp09"),
        VideoCodec::OtherFourCc(f) => Some(f),
        _ => None,
    }
}

/// The FourCC of an audio codec as Enhanced RTMP names it (legacy codecs have none).
pub fn audio_fourcc(codec: AudioCodec) -> Option<[u8; 4]> {
    match codec {
        AudioCodec::Opus => Some(*b"Opus"),
        AudioCodec::Flac => Some(*b"fLaC"),
        AudioCodec::Ac3 => Some(*b"ac-3"),
        AudioCodec::Eac3 => Some(*b"ec-3"),
        AudioCodec::ExMp3 => Some(*b".mp3"),
        AudioCodec::ExAac => Some(*b"mp4a"),
        AudioCodec::OtherFourCc(f) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Amf0Value {
        Amf0Value::String(v.into())
    }

    #[test]
    fn an_undeclared_client_declares_nothing() {
        let obj = Amf0Value::Object(vec![("app".into(), s("live"))]);
        let caps = Capabilities::from_connect(&obj);
        assert!(!caps.declared);
        assert!(caps.playable().is_empty());
        assert!(!caps.reconnect());
    }

    #[test]
    fn four_cc_list_and_maps_are_read() {
        let obj = Amf0Value::Object(vec![
            (
                "fourCcList".into(),
                Amf0Value::StrictArray(vec![s("hvc1"), s("Opus"), s("toolong"), Amf0Value::Null]),
            ),
            (
                "videoFourCcInfoMap".into(),
                Amf0Value::Object(vec![
                    ("av01".into(), Amf0Value::Number(1.0)),
                    ("vp09".into(), Amf0Value::Number(2.0)),
                ]),
            ),
            ("capsEx".into(), Amf0Value::Number(3.0)),
        ]);
        let caps = Capabilities::from_connect(&obj);
        assert!(caps.declared);
        assert_eq!(caps.fourcc_list, vec![*b"hvc1", *b"Opus"]);
        assert_eq!(caps.caps_ex, 3);
        assert!(caps.reconnect());
        let set = caps.playable();
        assert!(set.covers(CodecSet::of(b"hvc1").with(b"av01").with(b"Opus")));
        assert!(
            !set.covers(CodecSet::of(b"vp09")),
            "CanEncode only is not playing"
        );
        assert!(!set.covers(CodecSet::of(b"avc1")));
    }

    #[test]
    fn a_star_declares_everything_and_lists_are_bounded() {
        let mut items: Vec<Amf0Value> = (0..1000).map(|_| s("avc1")).collect();
        items.push(s("*"));
        let obj = Amf0Value::Object(vec![("fourCcList".into(), Amf0Value::StrictArray(items))]);
        let caps = Capabilities::from_connect(&obj);
        assert_eq!(caps.fourcc_list.len(), MAX_FOURCCS);
        let obj = Amf0Value::Object(vec![(
            "fourCcList".into(),
            Amf0Value::StrictArray(vec![s("*")]),
        )]);
        assert_eq!(Capabilities::from_connect(&obj).playable(), CodecSet::ALL);
        let hostile = Amf0Value::Object(vec![("capsEx".into(), Amf0Value::Number(f64::NAN))]);
        assert_eq!(Capabilities::from_connect(&hostile).caps_ex, 0);
    }

    #[test]
    fn the_server_forwards_everything_with_reconnect_and_multitrack() {
        let props = server_properties();
        let caps = Capabilities::from_connect(&Amf0Value::Object(props));
        assert_eq!(caps.playable(), CodecSet::ALL);
        assert!(caps.fourcc_list.contains(b"hvc1"));
        assert_eq!(caps.caps_ex & CAPS_EX_MULTITRACK, CAPS_EX_MULTITRACK);
        assert!(caps.reconnect());
    }
}
