//! What a relay must know about an audio or video message, read from the first few bytes of
//! its payload (RTMP message types 8 and 9, whose payload is an FLV tag body).
//!
//! A relay never decodes media, but it must answer three questions about every message:
//! which codec is this (for logs and stream metadata), is it a sequence header (the decoder
//! configuration a late-joining viewer needs before anything else), and is it a keyframe
//! (where a late joiner can start decoding; see `gop_cache`). The answers live in the tag
//! header, in one of two layouts:
//!
//! - Legacy FLV: the first byte packs a frame type (video) or sound format (audio) with a
//!   4-bit codec id, and AVC/AAC add a packet-type byte saying "sequence header or data".
//! - Enhanced RTMP (veovera's E-RTMP v1/v2): a flag in the first byte switches to a FourCC
//!   codec name with a 4-bit packet type, optionally preceded by "ModEx" extension blocks
//!   and optionally describing several tracks at once (multitrack).
//!
//! Everything here reads from hostile input: a payload that is too short for what its
//! header claims yields `None`, never a panic, and an unknown value is reported as such
//! (`Other`, `OtherFourCc`, `Reserved`) rather than rejected, so a relay keeps forwarding
//! streams it does not fully understand.

/// The video codec a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// Legacy codec id 2.
    SorensonH263,
    /// Legacy codec id 3.
    ScreenVideo,
    /// Legacy codec id 4 (On2 VP6).
    Vp6,
    /// Legacy codec id 5 (On2 VP6 with an alpha channel).
    Vp6Alpha,
    /// Legacy codec id 6.
    ScreenVideo2,
    /// Legacy codec id 7, or Enhanced RTMP FourCC `avc1`.
    Avc,
    /// Legacy codec id 12: not in any specification, but widely sent by encoders (mostly
    /// from China) that carried HEVC over RTMP before Enhanced RTMP existed. Same layout as AVC.
    LegacyHevc,
    /// Enhanced RTMP FourCC `hvc1`.
    Hevc,
    /// Enhanced RTMP FourCC `av01`.
    Av1,
    /// Enhanced RTMP FourCC `vp09`.
    Vp9,
    /// Any other Enhanced RTMP FourCC (for example `vp08`), passed through verbatim.
    OtherFourCc([u8; 4]),
    /// Any other legacy codec id. `Other(0)` is also what an Enhanced RTMP command frame
    /// reports, since such a frame names no codec at all.
    Other(u8),
}

impl VideoCodec {
    pub(crate) fn from_legacy_id(id: u8) -> VideoCodec {
        match id {
            2 => VideoCodec::SorensonH263,
            3 => VideoCodec::ScreenVideo,
            4 => VideoCodec::Vp6,
            5 => VideoCodec::Vp6Alpha,
            6 => VideoCodec::ScreenVideo2,
            7 => VideoCodec::Avc,
            12 => VideoCodec::LegacyHevc,
            other => VideoCodec::Other(other),
        }
    }

    pub(crate) fn from_fourcc(fourcc: [u8; 4]) -> VideoCodec {
        match &fourcc {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            _ => VideoCodec::OtherFourCc(fourcc),
        }
    }
}

/// The frame type of a video message (the same values in legacy and Enhanced RTMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoFrameType {
    /// 1: a seekable frame; a decoder can start here.
    Key,
    /// 2: needs earlier frames to decode.
    Inter,
    /// 3: an inter frame nothing else refers to (H.263 only).
    DisposableInter,
    /// 4: a keyframe made up by a server; reserved for server use.
    GeneratedKey,
    /// 5: carries no picture, only a command (seek start/end) or, in Enhanced RTMP,
    /// metadata. An Enhanced RTMP `Metadata` packet is reported as `Command` whatever its
    /// frame-type bits say, because the specification says to ignore them.
    Command,
    /// 0, 6 or 7: reserved values, reported rather than rejected.
    Reserved(u8),
}

impl VideoFrameType {
    fn from_bits(bits: u8) -> VideoFrameType {
        match bits {
            1 => VideoFrameType::Key,
            2 => VideoFrameType::Inter,
            3 => VideoFrameType::DisposableInter,
            4 => VideoFrameType::GeneratedKey,
            5 => VideoFrameType::Command,
            other => VideoFrameType::Reserved(other),
        }
    }
}

/// What [`inspect_video`] learned from a video message's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VideoTagInfo {
    pub codec: VideoCodec,
    pub frame_type: VideoFrameType,
    /// The decoder configuration (AVC/HEVC `SequenceHeader`, Enhanced RTMP `SequenceStart`
    /// or `MPEG2TSSequenceStart`), which every viewer needs before the first frame.
    pub is_sequence_header: bool,
    /// End of sequence: the publisher is done with this configuration.
    pub is_sequence_end: bool,
    /// The message uses the Enhanced RTMP (FourCC) header.
    pub enhanced: bool,
}

impl VideoTagInfo {
    /// A picture a decoder can start from: a key frame carrying coded data, as opposed to
    /// a sequence header or end-of-sequence marker that merely shares the key frame type.
    pub fn is_keyframe(&self) -> bool {
        self.frame_type == VideoFrameType::Key && !self.is_sequence_header && !self.is_sequence_end
    }
}

/// The audio codec a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Legacy sound format 0: linear PCM in the publisher's own byte order.
    Pcm,
    /// Legacy sound format 1.
    Adpcm,
    /// Legacy sound format 2.
    Mp3,
    /// Legacy sound format 3: linear PCM, little endian.
    PcmLe,
    /// Legacy sound format 4.
    Nellymoser16k,
    /// Legacy sound format 5.
    Nellymoser8k,
    /// Legacy sound format 6.
    Nellymoser,
    /// Legacy sound format 7: G.711 A-law.
    G711A,
    /// Legacy sound format 8: G.711 mu-law.
    G711U,
    /// Legacy sound format 10.
    Aac,
    /// Legacy sound format 11.
    Speex,
    /// Legacy sound format 14: MP3 at 8 kHz.
    Mp3_8k,
    /// Legacy sound format 15.
    DeviceSpecific,
    /// Enhanced RTMP FourCC `Opus`.
    Opus,
    /// Enhanced RTMP FourCC `fLaC`.
    Flac,
    /// Enhanced RTMP FourCC `ac-3`.
    Ac3,
    /// Enhanced RTMP FourCC `ec-3`.
    Eac3,
    /// Enhanced RTMP FourCC `.mp3`: MP3 signalled the enhanced way.
    ExMp3,
    /// Enhanced RTMP FourCC `mp4a`: AAC signalled the enhanced way.
    ExAac,
    /// Any other Enhanced RTMP FourCC, passed through verbatim.
    OtherFourCc([u8; 4]),
    /// Any other legacy sound format (12 or 13).
    Other(u8),
}

impl AudioCodec {
    pub(crate) fn from_legacy_format(format: u8) -> AudioCodec {
        match format {
            0 => AudioCodec::Pcm,
            1 => AudioCodec::Adpcm,
            2 => AudioCodec::Mp3,
            3 => AudioCodec::PcmLe,
            4 => AudioCodec::Nellymoser16k,
            5 => AudioCodec::Nellymoser8k,
            6 => AudioCodec::Nellymoser,
            7 => AudioCodec::G711A,
            8 => AudioCodec::G711U,
            10 => AudioCodec::Aac,
            11 => AudioCodec::Speex,
            14 => AudioCodec::Mp3_8k,
            15 => AudioCodec::DeviceSpecific,
            other => AudioCodec::Other(other),
        }
    }

    pub(crate) fn from_fourcc(fourcc: [u8; 4]) -> AudioCodec {
        match &fourcc {
            b"Opus" => AudioCodec::Opus,
            b"fLaC" => AudioCodec::Flac,
            b"ac-3" => AudioCodec::Ac3,
            b"ec-3" => AudioCodec::Eac3,
            b".mp3" => AudioCodec::ExMp3,
            b"mp4a" => AudioCodec::ExAac,
            _ => AudioCodec::OtherFourCc(fourcc),
        }
    }
}

/// What [`inspect_audio`] learned from an audio message's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AudioTagInfo {
    pub codec: AudioCodec,
    /// The decoder configuration (AAC `AudioSpecificConfig`, Enhanced RTMP `SequenceStart`).
    /// An Enhanced RTMP `MultichannelConfig` packet is deliberately not counted: a relay
    /// that keeps "the" audio sequence header must not let it replace the real one.
    pub is_sequence_header: bool,
    /// The message uses the Enhanced RTMP (FourCC) header.
    pub enhanced: bool,
}

// Legacy layout constants.
const LEGACY_AVC_PACKET_SEQUENCE_HEADER: u8 = 0;
const LEGACY_AVC_PACKET_END_OF_SEQUENCE: u8 = 2;
const LEGACY_AAC_PACKET_SEQUENCE_HEADER: u8 = 0;
const FRAME_TYPE_COMMAND: u8 = 5;

// Enhanced RTMP video: bit 7 of the first byte, then VideoPacketType values.
const VIDEO_EX_HEADER_FLAG: u8 = 0x80;
const VIDEO_PACKET_SEQUENCE_START: u8 = 0;
const VIDEO_PACKET_SEQUENCE_END: u8 = 2;
const VIDEO_PACKET_METADATA: u8 = 4;
const VIDEO_PACKET_MPEG2TS_SEQUENCE_START: u8 = 5;
const VIDEO_PACKET_MULTITRACK: u8 = 6;
const VIDEO_PACKET_MOD_EX: u8 = 7;

// Enhanced RTMP audio: sound format 9 switches to the ExAudioTagHeader.
const SOUND_FORMAT_EX_HEADER: u8 = 9;
const AUDIO_PACKET_SEQUENCE_START: u8 = 0;
const AUDIO_PACKET_MULTITRACK: u8 = 5;
const AUDIO_PACKET_MOD_EX: u8 = 7;

/// Inspects a video message payload. `None` when it is empty or too short for the fields
/// its own header says are there; never panics, whatever the bytes.
pub fn inspect_video(payload: &[u8]) -> Option<VideoTagInfo> {
    let first = *payload.first()?;
    if first & VIDEO_EX_HEADER_FLAG != 0 {
        inspect_enhanced_video(payload, first)
    } else {
        inspect_legacy_video(payload, first)
    }
}

fn inspect_legacy_video(payload: &[u8], first: u8) -> Option<VideoTagInfo> {
    let frame_type_bits = first >> 4;
    let codec = VideoCodec::from_legacy_id(first & 0x0F);
    let mut info = VideoTagInfo {
        codec,
        frame_type: VideoFrameType::from_bits(frame_type_bits),
        is_sequence_header: false,
        is_sequence_end: false,
        enhanced: false,
    };
    // A command frame's second byte is a seek command, not a packet type, so reading it as
    // AVCPacketType would misreport "start seek" (0) as a sequence header.
    let has_packet_type = frame_type_bits != FRAME_TYPE_COMMAND
        && matches!(codec, VideoCodec::Avc | VideoCodec::LegacyHevc);
    if has_packet_type {
        let packet_type = *payload.get(1)?;
        info.is_sequence_header = packet_type == LEGACY_AVC_PACKET_SEQUENCE_HEADER;
        info.is_sequence_end = packet_type == LEGACY_AVC_PACKET_END_OF_SEQUENCE;
    }
    Some(info)
}

fn inspect_enhanced_video(payload: &[u8], first: u8) -> Option<VideoTagInfo> {
    let frame_type_bits = (first >> 4) & 0x07;
    let (mut packet_type, mut cursor) = skip_mod_ex(payload, first & 0x0F, 1, VIDEO_PACKET_MOD_EX)?;

    let mut frame_type = VideoFrameType::from_bits(frame_type_bits);
    if packet_type == VIDEO_PACKET_METADATA {
        frame_type = VideoFrameType::Command;
    } else if frame_type_bits == FRAME_TYPE_COMMAND {
        // By the specification a command frame carries only a command byte: no FourCC to
        // name the codec, and nothing a viewer decodes.
        return Some(VideoTagInfo {
            codec: VideoCodec::Other(0),
            frame_type,
            is_sequence_header: false,
            is_sequence_end: false,
            enhanced: true,
        });
    }

    if packet_type == VIDEO_PACKET_MULTITRACK {
        // The multitrack byte holds AvMultitrackType (high nibble) and the packet type that
        // applies to every track (low nibble). Whatever the multitrack type, a FourCC comes
        // next: the shared one, or the first track's when each track names its own codec.
        let multitrack = *payload.get(cursor)?;
        packet_type = multitrack & 0x0F;
        cursor = cursor.checked_add(1)?;
        if packet_type == VIDEO_PACKET_METADATA {
            frame_type = VideoFrameType::Command;
        }
    }

    let codec = VideoCodec::from_fourcc(read_fourcc(payload, cursor)?);
    Some(VideoTagInfo {
        codec,
        frame_type,
        is_sequence_header: packet_type == VIDEO_PACKET_SEQUENCE_START
            || packet_type == VIDEO_PACKET_MPEG2TS_SEQUENCE_START,
        is_sequence_end: packet_type == VIDEO_PACKET_SEQUENCE_END,
        enhanced: true,
    })
}

/// Inspects an audio message payload. `None` when it is empty or too short for the fields
/// its own header says are there; never panics, whatever the bytes.
pub fn inspect_audio(payload: &[u8]) -> Option<AudioTagInfo> {
    let first = *payload.first()?;
    let sound_format = first >> 4;
    if sound_format == SOUND_FORMAT_EX_HEADER {
        return inspect_enhanced_audio(payload, first);
    }
    let codec = AudioCodec::from_legacy_format(sound_format);
    let is_sequence_header = if codec == AudioCodec::Aac {
        *payload.get(1)? == LEGACY_AAC_PACKET_SEQUENCE_HEADER
    } else {
        false
    };
    Some(AudioTagInfo {
        codec,
        is_sequence_header,
        enhanced: false,
    })
}

fn inspect_enhanced_audio(payload: &[u8], first: u8) -> Option<AudioTagInfo> {
    let (mut packet_type, mut cursor) = skip_mod_ex(payload, first & 0x0F, 1, AUDIO_PACKET_MOD_EX)?;
    if packet_type == AUDIO_PACKET_MULTITRACK {
        // Same shape as video multitrack: the real packet type is in the low nibble, and a
        // FourCC (shared, or the first track's) follows.
        let multitrack = *payload.get(cursor)?;
        packet_type = multitrack & 0x0F;
        cursor = cursor.checked_add(1)?;
    }
    let codec = AudioCodec::from_fourcc(read_fourcc(payload, cursor)?);
    Some(AudioTagInfo {
        codec,
        is_sequence_header: packet_type == AUDIO_PACKET_SEQUENCE_START,
        enhanced: true,
    })
}

/// Walks past the ModEx blocks that may precede the real packet type (audio and video use
/// the same layout): each is a size (UI8 + 1, or UI16 + 1 when the first form reads 256),
/// that many bytes of data, then a byte whose low nibble is the next packet type. Returns
/// the first packet type that is not ModEx and the offset just after it. Every block uses
/// at least two bytes, so the walk ends within the payload's length.
pub(crate) fn skip_mod_ex(
    payload: &[u8],
    mut packet_type: u8,
    mut cursor: usize,
    mod_ex: u8,
) -> Option<(u8, usize)> {
    while packet_type == mod_ex {
        let short_size = usize::from(*payload.get(cursor)?) + 1;
        cursor = cursor.checked_add(1)?;
        let data_size = if short_size == 256 {
            let high = *payload.get(cursor)?;
            let low = *payload.get(cursor.checked_add(1)?)?;
            cursor = cursor.checked_add(2)?;
            usize::from(u16::from_be_bytes([high, low])) + 1
        } else {
            short_size
        };
        cursor = cursor.checked_add(data_size)?;
        let type_byte = *payload.get(cursor)?;
        packet_type = type_byte & 0x0F;
        cursor = cursor.checked_add(1)?;
    }
    Some((packet_type, cursor))
}

pub(crate) fn read_fourcc(payload: &[u8], at: usize) -> Option<[u8; 4]> {
    let end = at.checked_add(4)?;
    payload.get(at..end)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn legacy_video(frame_type: u8, codec_id: u8, rest: &[u8]) -> Vec<u8> {
        let mut payload = vec![(frame_type << 4) | codec_id];
        payload.extend_from_slice(rest);
        payload
    }

    fn enhanced_video(frame_type: u8, packet_type: u8, fourcc: &[u8; 4], rest: &[u8]) -> Vec<u8> {
        let mut payload = vec![0x80 | (frame_type << 4) | packet_type];
        payload.extend_from_slice(fourcc);
        payload.extend_from_slice(rest);
        payload
    }

    fn enhanced_audio(packet_type: u8, fourcc: &[u8; 4], rest: &[u8]) -> Vec<u8> {
        let mut payload = vec![(9 << 4) | packet_type];
        payload.extend_from_slice(fourcc);
        payload.extend_from_slice(rest);
        payload
    }

    #[test]
    fn empty_payloads_are_not_inspected() {
        assert_eq!(inspect_video(&[]), None);
        assert_eq!(inspect_audio(&[]), None);
    }

    #[test]
    fn legacy_video_codec_ids() {
        let expected = [
            (2, VideoCodec::SorensonH263),
            (3, VideoCodec::ScreenVideo),
            (4, VideoCodec::Vp6),
            (5, VideoCodec::Vp6Alpha),
            (6, VideoCodec::ScreenVideo2),
            (7, VideoCodec::Avc),
            (12, VideoCodec::LegacyHevc),
            (1, VideoCodec::Other(1)),
            (0, VideoCodec::Other(0)),
            (15, VideoCodec::Other(15)),
        ];
        for (id, codec) in expected {
            let info = inspect_video(&legacy_video(2, id, &[1, 0, 0, 0])).unwrap();
            assert_eq!(info.codec, codec, "codec id {id}");
            assert!(!info.enhanced);
        }
    }

    #[test]
    fn legacy_video_frame_types() {
        let expected = [
            (1, VideoFrameType::Key),
            (2, VideoFrameType::Inter),
            (3, VideoFrameType::DisposableInter),
            (4, VideoFrameType::GeneratedKey),
            (5, VideoFrameType::Command),
            (0, VideoFrameType::Reserved(0)),
            (6, VideoFrameType::Reserved(6)),
            (7, VideoFrameType::Reserved(7)),
        ];
        for (bits, frame_type) in expected {
            // VP6 has no packet-type byte, so a one-byte payload is complete.
            let info = inspect_video(&legacy_video(bits, 4, &[])).unwrap();
            assert_eq!(info.frame_type, frame_type, "frame type bits {bits}");
            assert_eq!(info.is_keyframe(), bits == 1);
        }
    }

    #[test]
    fn legacy_avc_packet_types() {
        for codec_id in [7, 12] {
            let header = inspect_video(&legacy_video(1, codec_id, &[0, 0, 0, 0])).unwrap();
            assert!(header.is_sequence_header);
            assert!(!header.is_sequence_end);
            assert!(!header.is_keyframe(), "a sequence header is not a keyframe");

            let key = inspect_video(&legacy_video(1, codec_id, &[1, 0, 0, 0, 0xAA])).unwrap();
            assert!(!key.is_sequence_header);
            assert!(key.is_keyframe());

            let inter = inspect_video(&legacy_video(2, codec_id, &[1, 0, 0, 0])).unwrap();
            assert_eq!(inter.frame_type, VideoFrameType::Inter);
            assert!(!inter.is_keyframe());

            let end = inspect_video(&legacy_video(1, codec_id, &[2, 0, 0, 0])).unwrap();
            assert!(end.is_sequence_end);
            assert!(!end.is_keyframe());
        }
    }

    #[test]
    fn legacy_avc_without_packet_type_is_truncated() {
        assert_eq!(inspect_video(&[0x17]), None);
        assert_eq!(inspect_video(&[0x1C]), None);
    }

    #[test]
    fn legacy_command_frame_is_not_a_sequence_header() {
        // 0x57: command frame, AVC; the 0 after it means "start seek", not "sequence header".
        let info = inspect_video(&[0x57, 0]).unwrap();
        assert_eq!(info.frame_type, VideoFrameType::Command);
        assert!(!info.is_sequence_header);
        assert!(!info.is_keyframe());
        assert!(inspect_video(&[0x57]).is_some());
    }

    #[test]
    fn enhanced_video_fourccs() {
        let expected = [
            (b"hvc1", VideoCodec::Hevc),
            (b"av01", VideoCodec::Av1),
            (b"vp09", VideoCodec::Vp9),
            (b"avc1", VideoCodec::Avc),
            (b"vp08", VideoCodec::OtherFourCc(*b"vp08")),
            (b"vvc1", VideoCodec::OtherFourCc(*b"vvc1")),
        ];
        for (fourcc, codec) in expected {
            let info = inspect_video(&enhanced_video(1, 1, fourcc, &[0, 0, 0, 9])).unwrap();
            assert_eq!(info.codec, codec);
            assert!(info.enhanced);
        }
    }

    #[test]
    fn enhanced_sequence_start_and_coded_frames() {
        for fourcc in [b"hvc1", b"av01", b"vp09"] {
            let start = inspect_video(&enhanced_video(1, 0, fourcc, &[1, 2, 3])).unwrap();
            assert!(start.is_sequence_header, "{fourcc:?}");
            assert!(!start.is_keyframe());

            let ts_start = inspect_video(&enhanced_video(1, 5, fourcc, &[1, 2, 3])).unwrap();
            assert!(ts_start.is_sequence_header, "MPEG2TSSequenceStart");

            let key = inspect_video(&enhanced_video(1, 1, fourcc, &[0, 0, 0, 7])).unwrap();
            assert!(key.is_keyframe());
            assert!(!key.is_sequence_header);

            let key_x = inspect_video(&enhanced_video(1, 3, fourcc, &[7])).unwrap();
            assert!(key_x.is_keyframe(), "CodedFramesX");

            let inter = inspect_video(&enhanced_video(2, 1, fourcc, &[0, 0, 0, 7])).unwrap();
            assert_eq!(inter.frame_type, VideoFrameType::Inter);
            assert!(!inter.is_keyframe());

            let inter_x = inspect_video(&enhanced_video(2, 3, fourcc, &[7])).unwrap();
            assert!(!inter_x.is_keyframe());

            let end = inspect_video(&enhanced_video(1, 2, fourcc, &[])).unwrap();
            assert!(end.is_sequence_end);
            assert!(!end.is_keyframe());
        }
    }

    #[test]
    fn enhanced_video_frame_types() {
        let expected = [
            (1, VideoFrameType::Key),
            (2, VideoFrameType::Inter),
            (3, VideoFrameType::DisposableInter),
            (4, VideoFrameType::GeneratedKey),
            (0, VideoFrameType::Reserved(0)),
            (6, VideoFrameType::Reserved(6)),
            (7, VideoFrameType::Reserved(7)),
        ];
        for (bits, frame_type) in expected {
            let info = inspect_video(&enhanced_video(bits, 1, b"hvc1", &[0, 0, 0])).unwrap();
            assert_eq!(info.frame_type, frame_type);
            assert_eq!(info.is_keyframe(), bits == 1);
        }
    }

    #[test]
    fn enhanced_command_frame_has_no_fourcc() {
        // Frame type 5, CodedFrames, then the command byte (1 = end seek) and nothing else.
        let info = inspect_video(&[0x80 | (5 << 4) | 1, 1]).unwrap();
        assert_eq!(info.frame_type, VideoFrameType::Command);
        assert_eq!(info.codec, VideoCodec::Other(0));
        assert!(!info.is_keyframe());
        assert!(!info.is_sequence_header);
    }

    #[test]
    fn enhanced_metadata_ignores_frame_type() {
        let info = inspect_video(&enhanced_video(1, 4, b"hvc1", &[2, 0, 9])).unwrap();
        assert_eq!(info.codec, VideoCodec::Hevc);
        assert_eq!(info.frame_type, VideoFrameType::Command);
        assert!(!info.is_keyframe());
        assert!(!info.is_sequence_header);
    }

    #[test]
    fn enhanced_video_truncated_fourcc() {
        assert_eq!(inspect_video(&[0x91]), None);
        assert_eq!(inspect_video(&[0x91, b'h', b'v', b'c']), None);
        assert!(inspect_video(&[0x91, b'h', b'v', b'c', b'1']).is_some());
    }

    #[test]
    fn enhanced_video_multitrack() {
        // Key frame, Multitrack; then OneTrack (0) | SequenceStart (0), shared FourCC av01.
        let mut start = vec![0x80 | (1 << 4) | 6, 0x00];
        start.extend_from_slice(b"av01");
        start.extend_from_slice(&[0, 1, 2]);
        let info = inspect_video(&start).unwrap();
        assert_eq!(info.codec, VideoCodec::Av1);
        assert!(info.is_sequence_header);
        assert!(!info.is_keyframe());

        // ManyTracks (1) | CodedFrames (1), key frame.
        let mut coded = vec![0x80 | (1 << 4) | 6, 0x11];
        coded.extend_from_slice(b"hvc1");
        coded.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 9, 9, 9, 9]);
        let info = inspect_video(&coded).unwrap();
        assert_eq!(info.codec, VideoCodec::Hevc);
        assert!(info.is_keyframe());

        // ManyTracksManyCodecs (2) | CodedFramesX (3), inter: the first track's FourCC names it.
        let mut many = vec![0x80 | (2 << 4) | 6, 0x23];
        many.extend_from_slice(b"vp09");
        many.extend_from_slice(&[0, 0, 0, 1, 5]);
        let info = inspect_video(&many).unwrap();
        assert_eq!(info.codec, VideoCodec::Vp9);
        assert_eq!(info.frame_type, VideoFrameType::Inter);
        assert!(!info.is_keyframe());

        assert_eq!(inspect_video(&[0x96]), None);
        assert_eq!(inspect_video(&[0x96, 0x00, b'a']), None);
    }

    #[test]
    fn enhanced_video_mod_ex() {
        // Key frame, ModEx; 3 bytes of data (TimestampOffsetNano); then type byte:
        // ModExType 0 | CodedFrames; then FourCC.
        let mut payload = vec![0x80 | (1 << 4) | 7, 2, 0x01, 0x02, 0x03, 0x01];
        payload.extend_from_slice(b"hvc1");
        payload.extend_from_slice(&[0, 0, 0, 1]);
        let info = inspect_video(&payload).unwrap();
        assert_eq!(info.codec, VideoCodec::Hevc);
        assert!(info.is_keyframe());

        // Two chained ModEx blocks, the second with the 16-bit size escape, ending in
        // SequenceStart.
        let mut chained = vec![0x80 | (1 << 4) | 7, 0, 0xEE, 0x07, 0xFF, 0x01, 0x00];
        chained.extend_from_slice(&[0xAB; 257]);
        chained.push(0x00);
        chained.extend_from_slice(b"av01");
        let info = inspect_video(&chained).unwrap();
        assert_eq!(info.codec, VideoCodec::Av1);
        assert!(info.is_sequence_header);

        // ModEx followed by Multitrack.
        let mut then_multitrack = vec![0x80 | (1 << 4) | 7, 0, 0x00, 0x06, 0x01];
        then_multitrack.extend_from_slice(b"vp09");
        let info = inspect_video(&then_multitrack).unwrap();
        assert_eq!(info.codec, VideoCodec::Vp9);
        assert!(info.is_keyframe());

        // ModEx data that claims more bytes than there are.
        assert_eq!(inspect_video(&[0x97, 10, 1, 2]), None);
        assert_eq!(inspect_video(&[0x97, 0xFF, 0xFF]), None);
        assert_eq!(inspect_video(&[0x97]), None);
    }

    #[test]
    fn legacy_audio_formats() {
        let expected = [
            (0, AudioCodec::Pcm),
            (1, AudioCodec::Adpcm),
            (2, AudioCodec::Mp3),
            (3, AudioCodec::PcmLe),
            (4, AudioCodec::Nellymoser16k),
            (5, AudioCodec::Nellymoser8k),
            (6, AudioCodec::Nellymoser),
            (7, AudioCodec::G711A),
            (8, AudioCodec::G711U),
            (10, AudioCodec::Aac),
            (11, AudioCodec::Speex),
            (12, AudioCodec::Other(12)),
            (13, AudioCodec::Other(13)),
            (14, AudioCodec::Mp3_8k),
            (15, AudioCodec::DeviceSpecific),
        ];
        for (format, codec) in expected {
            let info = inspect_audio(&[(format << 4) | 0x0F, 1, 0x55]).unwrap();
            assert_eq!(info.codec, codec, "sound format {format}");
            assert!(!info.enhanced);
            assert!(!info.is_sequence_header);
        }
    }

    #[test]
    fn legacy_aac_packet_types() {
        assert!(
            inspect_audio(&[0xAF, 0, 0x12, 0x10])
                .unwrap()
                .is_sequence_header
        );
        assert!(!inspect_audio(&[0xAF, 1, 0x21]).unwrap().is_sequence_header);
        assert_eq!(inspect_audio(&[0xAF]), None);
        // MP3 needs no packet-type byte.
        assert!(inspect_audio(&[0x2F]).is_some());
    }

    #[test]
    fn enhanced_audio_fourccs_and_packet_types() {
        let expected = [
            (b"Opus", AudioCodec::Opus),
            (b"fLaC", AudioCodec::Flac),
            (b"ac-3", AudioCodec::Ac3),
            (b"ec-3", AudioCodec::Eac3),
            (b".mp3", AudioCodec::ExMp3),
            (b"mp4a", AudioCodec::ExAac),
            (b"abcd", AudioCodec::OtherFourCc(*b"abcd")),
        ];
        for (fourcc, codec) in expected {
            let start = inspect_audio(&enhanced_audio(0, fourcc, &[1, 2])).unwrap();
            assert_eq!(start.codec, codec);
            assert!(start.enhanced);
            assert!(start.is_sequence_header);

            let coded = inspect_audio(&enhanced_audio(1, fourcc, &[1, 2])).unwrap();
            assert_eq!(coded.codec, codec);
            assert!(!coded.is_sequence_header);

            let end = inspect_audio(&enhanced_audio(2, fourcc, &[])).unwrap();
            assert!(!end.is_sequence_header);

            let multichannel = inspect_audio(&enhanced_audio(4, fourcc, &[0, 2])).unwrap();
            assert!(!multichannel.is_sequence_header);
        }
    }

    #[test]
    fn enhanced_audio_multitrack_and_mod_ex() {
        // Multitrack: ManyTracks (1) | SequenceStart (0), shared FourCC Opus.
        let mut multitrack = vec![0x95, 0x10];
        multitrack.extend_from_slice(b"Opus");
        let info = inspect_audio(&multitrack).unwrap();
        assert_eq!(info.codec, AudioCodec::Opus);
        assert!(info.is_sequence_header);

        // ModEx (one byte of data) then CodedFrames, FLAC.
        let mut mod_ex = vec![0x97, 0, 0x42, 0x01];
        mod_ex.extend_from_slice(b"fLaC");
        let info = inspect_audio(&mod_ex).unwrap();
        assert_eq!(info.codec, AudioCodec::Flac);
        assert!(!info.is_sequence_header);

        assert_eq!(inspect_audio(&[0x90, b'O', b'p']), None);
        assert_eq!(inspect_audio(&[0x95]), None);
        assert_eq!(inspect_audio(&[0x97, 3]), None);
    }

    proptest! {
        #[test]
        fn inspect_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = inspect_video(&bytes);
            let _ = inspect_audio(&bytes);
        }

        #[test]
        fn enhanced_headers_never_panic(
            first in 0x80u8..=0xFF,
            rest in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut video = vec![first];
            video.extend_from_slice(&rest);
            let _ = inspect_video(&video);
            let mut audio = vec![0x90 | (first & 0x0F)];
            audio.extend_from_slice(&rest);
            let _ = inspect_audio(&audio);
        }
    }
}
