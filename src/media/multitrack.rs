//! Enhanced RTMP v2 tracks: which tracks an audio or video message carries, and the two
//! reduced forms a relay sends to viewers that cannot take the whole message.
//!
//! E-RTMP v2 (Veovera, `enhanced-rtmp-v2.md`) lets one RTMP message carry one or several
//! *tracks*, each named by a track id (0 is the default track). The layout parsed here,
//! after the first byte and any ModEx blocks (see `codec::skip_mod_ex`):
//!
//! ```text
//! packet type == Multitrack (video 6, audio 5):
//!   UB[4] multitrackType   0 OneTrack, 1 ManyTracks, 2 ManyTracksManyCodecs
//!   UB[4] packetType       the packet type of every track (SequenceStart, CodedFrames...)
//!   FOURCC                 the codec of every track, unless ManyTracksManyCodecs
//!   repeated until the payload ends (once for OneTrack):
//!     FOURCC               ManyTracksManyCodecs only: this track's codec
//!     UI8  trackId
//!     UI24 sizeOfTrack     not for OneTrack, whose body is the rest of the payload
//!     body                 what a single-track message of packetType would carry after
//!                          its FourCC (CodedFrames: SI24 composition time, then data)
//! any other packet type: one track, id 0, FOURCC then its body.
//! ```
//!
//! The frame type (video: keyframe, inter...) is the first byte's and applies to every
//! track of the message: a message is a keyframe for each track it carries.
//!
//! Viewers that did not declare Enhanced RTMP codecs in `connect` (ffmpeg 5.1, rtmpdump)
//! cannot parse a FourCC header at all, and most players cannot parse multitrack. So for
//! every message the origin also derives, once, two reduced forms of its track 0: track 0
//! as a plain single-track E-RTMP message ([`track0_enhanced`]), and track 0 in the legacy
//! FLV layout when its codec has a legacy id (AVC, AAC, MP3; [`track0_legacy_video`],
//! [`track0_legacy_audio`]). ModEx blocks (the nanosecond timestamp offset) stay in the enhanced form as they
//! came; the legacy layout has no room for them.
//!
//! Everything reads hostile input: a track whose size runs past the payload ends the
//! walk (the tracks before it are kept), and at most [`MAX_TRACKS`] tracks are read.

use super::codec::{read_fourcc, skip_mod_ex};

/// Tracks read from one message at most; a relay keeps per-track state for each, so a
/// peer cannot make it keep more.
pub const MAX_TRACKS: usize = 16;

const VIDEO_EX_HEADER_FLAG: u8 = 0x80;
const SOUND_FORMAT_EX_HEADER: u8 = 9;
const VIDEO_MOD_EX: u8 = 7;
const AUDIO_MOD_EX: u8 = 7;
const VIDEO_MULTITRACK: u8 = 6;
const AUDIO_MULTITRACK: u8 = 5;
const FRAME_TYPE_COMMAND: u8 = 5;

/// `AvMultitrackType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultitrackType {
    OneTrack,
    ManyTracks,
    ManyTracksManyCodecs,
}

/// One track of a message: its id, codec, and where its body lies in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Track {
    pub id: u8,
    pub fourcc: [u8; 4],
    /// `payload[body_start..body_end]`: what follows the FourCC in a single-track message.
    pub body_start: usize,
    pub body_end: usize,
}

/// The tracks of one Enhanced RTMP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracks {
    /// None for a single-track (non-multitrack) enhanced message.
    pub multitrack: Option<MultitrackType>,
    /// The packet type every track has (after ModEx and Multitrack are unwrapped).
    pub packet_type: u8,
    /// Offset of the byte whose low nibble held the outer packet type (the first byte, or
    /// the last ModEx block's type byte); everything before it is kept by the track-0 form.
    pub type_byte: usize,
    pub tracks: Vec<Track>,
}

impl Tracks {
    pub fn track(&self, id: u8) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// The track ids carried, as a bit set (ids of 63 and above share bit 63).
    pub fn id_mask(&self) -> u64 {
        self.tracks.iter().fold(0, |m, t| m | track_bit(t.id))
    }
}

/// The bit of track `id` in a track id set.
pub fn track_bit(id: u8) -> u64 {
    1u64 << id.min(63)
}

/// The tracks of an enhanced video message; None for a legacy message, a command frame,
/// or a header too short for what it claims.
pub fn video_tracks(payload: &[u8]) -> Option<Tracks> {
    let first = *payload.first()?;
    if first & VIDEO_EX_HEADER_FLAG == 0 || (first >> 4) & 0x07 == FRAME_TYPE_COMMAND {
        return None;
    }
    parse(payload, first & 0x0F, VIDEO_MOD_EX, VIDEO_MULTITRACK)
}

/// The tracks of an enhanced audio message; None for a legacy message or a header too
/// short for what it claims.
pub fn audio_tracks(payload: &[u8]) -> Option<Tracks> {
    let first = *payload.first()?;
    if first >> 4 != SOUND_FORMAT_EX_HEADER {
        return None;
    }
    parse(payload, first & 0x0F, AUDIO_MOD_EX, AUDIO_MULTITRACK)
}

fn parse(payload: &[u8], first_type: u8, mod_ex: u8, multitrack: u8) -> Option<Tracks> {
    let (outer_type, mut cursor) = skip_mod_ex(payload, first_type, 1, mod_ex)?;
    let type_byte = cursor - 1;
    if outer_type != multitrack {
        let fourcc = read_fourcc(payload, cursor)?;
        return Some(Tracks {
            multitrack: None,
            packet_type: outer_type,
            type_byte,
            tracks: vec![Track {
                id: 0,
                fourcc,
                body_start: cursor + 4,
                body_end: payload.len(),
            }],
        });
    }
    let byte = *payload.get(cursor)?;
    cursor += 1;
    let kind = match byte >> 4 {
        0 => MultitrackType::OneTrack,
        1 => MultitrackType::ManyTracks,
        2 => MultitrackType::ManyTracksManyCodecs,
        _ => return None,
    };
    let packet_type = byte & 0x0F;
    let mut shared = None;
    if kind != MultitrackType::ManyTracksManyCodecs {
        shared = Some(read_fourcc(payload, cursor)?);
        cursor += 4;
    }
    let mut tracks = Vec::new();
    while cursor < payload.len() && tracks.len() < MAX_TRACKS {
        let fourcc = match shared {
            Some(f) => f,
            None => {
                let Some(f) = read_fourcc(payload, cursor) else {
                    break;
                };
                cursor += 4;
                f
            }
        };
        let Some(&id) = payload.get(cursor) else {
            break;
        };
        cursor += 1;
        let (body_start, body_end) = if kind == MultitrackType::OneTrack {
            (cursor, payload.len())
        } else {
            let Some(size) = payload.get(cursor..cursor + 3) else {
                break;
            };
            let size =
                usize::from(size[0]) << 16 | usize::from(size[1]) << 8 | usize::from(size[2]);
            let start = cursor + 3;
            let end = start.saturating_add(size);
            if end > payload.len() {
                break;
            }
            (start, end)
        };
        tracks.push(Track {
            id,
            fourcc,
            body_start,
            body_end,
        });
        cursor = body_end;
        if kind == MultitrackType::OneTrack {
            break;
        }
    }
    if tracks.is_empty() {
        return None;
    }
    Some(Tracks {
        multitrack: Some(kind),
        packet_type,
        type_byte,
        tracks,
    })
}

/// Track 0 of a multitrack message as a single-track Enhanced RTMP message: the same
/// first byte and ModEx blocks, the inner packet type in place of Multitrack, track 0's
/// FourCC and body. None when the message has no track 0.
pub fn track0_enhanced(payload: &[u8], tracks: &Tracks) -> Option<Vec<u8>> {
    let t = tracks.track(0)?;
    let body = payload.get(t.body_start..t.body_end)?;
    let mut out = Vec::with_capacity(tracks.type_byte + 5 + body.len());
    out.extend_from_slice(payload.get(..=tracks.type_byte)?);
    let last = out.last_mut()?;
    *last = (*last & 0xF0) | tracks.packet_type;
    out.extend_from_slice(&t.fourcc);
    out.extend_from_slice(body);
    Some(out)
}

/// Track 0 of an enhanced video message in the legacy FLV layout, when its codec is AVC
/// (`avc1`, legacy codec id 7): frame type and codec id, AVCPacketType, composition time,
/// data. None for other codecs and for packet types legacy AVC has no equivalent of.
pub fn track0_legacy_video(payload: &[u8], tracks: &Tracks) -> Option<Vec<u8>> {
    let t = tracks.track(0)?;
    if &t.fourcc != b"avc1" {
        return None;
    }
    let frame_type = (payload.first()? >> 4) & 0x07;
    let body = payload.get(t.body_start..t.body_end)?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push((frame_type << 4) | 7);
    match tracks.packet_type {
        // SequenceStart: AVCPacketType 0, composition time 0, AVCDecoderConfigurationRecord.
        0 => out.extend_from_slice(&[0, 0, 0, 0]),
        // CodedFrames: the body already starts with the SI24 composition time.
        1 => out.push(1),
        // SequenceEnd.
        2 => out.extend_from_slice(&[2, 0, 0, 0]),
        // CodedFramesX: composition time 0.
        3 => out.extend_from_slice(&[1, 0, 0, 0]),
        _ => return None,
    }
    out.extend_from_slice(body);
    Some(out)
}

/// Track 0 of an enhanced audio message in the legacy FLV layout, when its codec is AAC
/// (`mp4a`, sound format 10) or MP3 (`.mp3`, sound format 2). None otherwise.
pub fn track0_legacy_audio(payload: &[u8], tracks: &Tracks) -> Option<Vec<u8>> {
    let t = tracks.track(0)?;
    let body = payload.get(t.body_start..t.body_end)?;
    let mut out = Vec::with_capacity(body.len() + 2);
    match (&t.fourcc, tracks.packet_type) {
        // AAC, 44 kHz, 16-bit, stereo (the flags FLV requires for AAC), then AACPacketType.
        (b"mp4a", 0) => out.extend_from_slice(&[0xAF, 0]),
        (b"mp4a", 1) => out.extend_from_slice(&[0xAF, 1]),
        // MP3 frames are self-describing; the flags only say "MP3".
        (b".mp3", 1) => out.push(0x2F),
        _ => return None,
    }
    out.extend_from_slice(body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video_multitrack(frame_type: u8, multitrack: u8, packet_type: u8) -> Vec<u8> {
        vec![
            0x80 | (frame_type << 4) | 6,
            (multitrack << 4) | packet_type,
        ]
    }

    #[test]
    fn single_track_enhanced_message_is_track_0() {
        let mut p = vec![0x80 | (1 << 4) | 1];
        p.extend_from_slice(b"hvc1");
        p.extend_from_slice(&[0, 0, 0, 9, 9]);
        let t = video_tracks(&p).unwrap();
        assert_eq!(t.multitrack, None);
        assert_eq!(t.packet_type, 1);
        assert_eq!(t.tracks.len(), 1);
        assert_eq!(t.tracks[0].id, 0);
        assert_eq!(&p[t.tracks[0].body_start..], &[0, 0, 0, 9, 9]);
        assert!(video_tracks(&[0x17, 1, 0, 0, 0]).is_none(), "legacy");
        assert!(audio_tracks(&[0xAF, 1, 0]).is_none(), "legacy");
    }

    #[test]
    fn one_track() {
        // Key frame, Multitrack; OneTrack | CodedFrames, avc1, track 2, then the body.
        let mut p = video_multitrack(1, 0, 1);
        p.extend_from_slice(b"avc1");
        p.push(2);
        p.extend_from_slice(&[0, 0, 0, 0xAA, 0xBB]);
        let t = video_tracks(&p).unwrap();
        assert_eq!(t.multitrack, Some(MultitrackType::OneTrack));
        assert_eq!(t.tracks.len(), 1);
        assert_eq!(t.tracks[0].id, 2);
        assert_eq!(&t.tracks[0].fourcc, b"avc1");
        assert_eq!(
            &p[t.tracks[0].body_start..t.tracks[0].body_end],
            &[0, 0, 0, 0xAA, 0xBB]
        );
        assert_eq!(t.id_mask(), 0b100);
        assert!(track0_enhanced(&p, &t).is_none(), "no track 0 here");
    }

    #[test]
    fn many_tracks_share_a_codec() {
        // Audio: Multitrack; ManyTracks | SequenceStart, mp4a; track 0 (2 bytes), track 1 (3).
        let mut p = vec![0x95, 0x10];
        p.extend_from_slice(b"mp4a");
        p.extend_from_slice(&[0, 0, 0, 2, 0x12, 0x10]);
        p.extend_from_slice(&[1, 0, 0, 3, 0x11, 0x90, 0x00]);
        let t = audio_tracks(&p).unwrap();
        assert_eq!(t.multitrack, Some(MultitrackType::ManyTracks));
        assert_eq!(t.packet_type, 0);
        let ids: Vec<u8> = t.tracks.iter().map(|t| t.id).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(
            &p[t.tracks[1].body_start..t.tracks[1].body_end],
            &[0x11, 0x90, 0]
        );
        assert_eq!(
            track0_legacy_audio(&p, &t).unwrap(),
            [0xAF, 0, 0x12, 0x10],
            "AAC track 0 as a legacy AudioSpecificConfig message"
        );
        let mut single = vec![0x90];
        single.extend_from_slice(b"mp4a");
        single.extend_from_slice(&[0x12, 0x10]);
        assert_eq!(track0_enhanced(&p, &t).unwrap(), single);
    }

    #[test]
    fn many_tracks_many_codecs() {
        // Inter frame; ManyTracksManyCodecs | CodedFrames; avc1 track 0, hvc1 track 1.
        let mut p = video_multitrack(2, 2, 1);
        p.extend_from_slice(b"avc1");
        p.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 7]);
        p.extend_from_slice(b"hvc1");
        p.extend_from_slice(&[1, 0, 0, 4, 0, 0, 0, 8]);
        let t = video_tracks(&p).unwrap();
        assert_eq!(t.multitrack, Some(MultitrackType::ManyTracksManyCodecs));
        assert_eq!(&t.tracks[0].fourcc, b"avc1");
        assert_eq!(&t.tracks[1].fourcc, b"hvc1");
        assert_eq!(t.id_mask(), 0b11);
        assert_eq!(
            track0_legacy_video(&p, &t).unwrap(),
            [0x27, 1, 0, 0, 0, 7],
            "inter AVC frame, CodedFrames keeps its composition time"
        );
        let mut enhanced = vec![0x80 | (2 << 4) | 1];
        enhanced.extend_from_slice(b"avc1");
        enhanced.extend_from_slice(&[0, 0, 0, 7]);
        assert_eq!(track0_enhanced(&p, &t).unwrap(), enhanced);
    }

    #[test]
    fn legacy_forms_of_avc_packet_types() {
        for (packet_type, expected) in [
            (0u8, vec![0x17, 0, 0, 0, 0, 0xC0]),
            (3, vec![0x17, 1, 0, 0, 0, 0xC0]),
            (2, vec![0x17, 2, 0, 0, 0, 0xC0]),
        ] {
            let mut p = vec![0x80 | (1 << 4) | packet_type];
            p.extend_from_slice(b"avc1");
            p.push(0xC0);
            let t = video_tracks(&p).unwrap();
            assert_eq!(track0_legacy_video(&p, &t).unwrap(), expected);
        }
        let mut hevc = vec![0x90];
        hevc.extend_from_slice(b"hvc1");
        let t = video_tracks(&hevc).unwrap();
        assert!(
            track0_legacy_video(&hevc, &t).is_none(),
            "HEVC has no legacy id"
        );
        let mut opus = vec![0x91];
        opus.extend_from_slice(b"Opus");
        let t = audio_tracks(&opus).unwrap();
        assert!(
            track0_legacy_audio(&opus, &t).is_none(),
            "Opus has no legacy id"
        );
    }

    #[test]
    fn mod_ex_is_kept_in_the_enhanced_form() {
        // ModEx (1 byte of data), then a type byte: ModExType 0 | Multitrack; OneTrack |
        // CodedFramesX, hvc1, track 0.
        let mut p = vec![0x80 | (1 << 4) | 7, 0, 0x42, 0x06, 0x03];
        p.extend_from_slice(b"hvc1");
        p.extend_from_slice(&[0, 0xDD]);
        let t = video_tracks(&p).unwrap();
        assert_eq!(t.type_byte, 3);
        let mut expected = vec![0x80 | (1 << 4) | 7, 0, 0x42, 0x03];
        expected.extend_from_slice(b"hvc1");
        expected.push(0xDD);
        assert_eq!(track0_enhanced(&p, &t).unwrap(), expected);
    }

    #[test]
    fn hostile_track_lists_are_cut_not_trusted() {
        // A second track whose size runs past the end: only the first is read.
        let mut p = video_multitrack(1, 1, 1);
        p.extend_from_slice(b"avc1");
        p.extend_from_slice(&[0, 0, 0, 1, 5]);
        p.extend_from_slice(&[1, 0xFF, 0xFF, 0xFF, 1]);
        assert_eq!(video_tracks(&p).unwrap().tracks.len(), 1);
        // Many tiny tracks: at most MAX_TRACKS are read.
        let mut p = video_multitrack(1, 1, 1);
        p.extend_from_slice(b"avc1");
        for id in 0..100u8 {
            p.extend_from_slice(&[id, 0, 0, 0]);
        }
        assert_eq!(video_tracks(&p).unwrap().tracks.len(), MAX_TRACKS);
        assert!(
            video_tracks(&[0x96, 0x30]).is_none(),
            "reserved multitrack type"
        );
        assert!(
            video_tracks(&[0x96, 0x10, b'a', b'v', b'c', b'1']).is_none(),
            "no track"
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            for t in [video_tracks(&bytes), audio_tracks(&bytes)].into_iter().flatten() {
                let _ = track0_enhanced(&bytes, &t);
                let _ = track0_legacy_video(&bytes, &t);
                let _ = track0_legacy_audio(&bytes, &t);
            }
        }
    }
}
