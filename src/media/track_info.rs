//! What an operator wants to know about a stream's tracks (the admin API's video codec,
//! profile, level, size and frame rate; audio codec, profile, sample rate and channels),
//! read from the stream's codec configuration and its `onMetaData`.
//!
//! Three sources, each read by one function, and a merge:
//!
//! - [`video_details`]: a video sequence header, legacy (AVC, or HEVC under the unofficial
//!   codec id 12) or Enhanced RTMP (`avc1`, `hvc1`, `av01`, `vp09` SequenceStart). Profile
//!   and level come from the configuration record; width and height from the parameter
//!   sets inside it (the H.264 or HEVC SPS, the AV1 sequence header OBU).
//! - [`audio_details`]: an audio message. An AAC AudioSpecificConfig, an Enhanced RTMP
//!   SequenceStart (AAC, `OpusHead`, FLAC STREAMINFO), a frame header where the codec has
//!   no configuration record (MP3, AC-3, E-AC-3), or else the legacy FLV sound flags.
//! - [`metadata_details`]: the `onMetaData` data message, which is what the encoder says
//!   about itself. It is the only usual source of a frame rate, and the only source of
//!   anything for codecs whose headers are not parsed here.
//! - [`merge`] and [`merge_audio`]: the stream's own headers win; metadata fills the gaps.
//!
//! All of it reads publisher-controlled bytes. Too short or malformed input gives `None`
//! or leaves a field out, never a panic; nothing allocates by a size the input states
//! (the only allocations are the short strings returned, and the AMF0 decoder's own,
//! which are bounded by the input); every loop is bounded by the input's length or a
//! constant. Bit-level parsing happens in place: emulation-prevention bytes in H.264 and
//! HEVC NAL units are skipped as they are read rather than copied out.

use crate::media::codec::{
    self, AudioCodec, VideoCodec, VideoFrameType, inspect_audio, inspect_video, read_fourcc,
};
use crate::rtmp::amf0::{self, Amf0Value};

/// What a video track is, as far as its headers and metadata tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VideoDetails {
    pub codec: Option<VideoCodec>,
    /// The profile's name ("High", "Main 10", "Profile 0"), or its number as text when it
    /// has no name here.
    pub profile: Option<String>,
    /// The level as each codec's specification writes it: "3.1" and "4" for H.264, HEVC
    /// and VP9, "1b" for H.264's odd one, "4.0" for AV1. Left out when the header says 0
    /// (unknown) or a value that names no level.
    pub level: Option<String>,
    /// Display size in pixels, after cropping (H.264 frame cropping, HEVC conformance
    /// window). For AV1, the sequence's maximum frame size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second: from metadata, or the nominal rate some headers carry (H.264
    /// VUI timing, the HEVC record's average frame rate, AV1 timing info).
    pub fps: Option<f64>,
}

/// What an audio track is, as far as its headers and metadata tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AudioDetails {
    pub codec: Option<AudioCodec>,
    /// For AAC, the object type's name: "LC", "HE-AAC", "HE-AACv2", "Main"...
    pub profile: Option<String>,
    /// The rate a decoder outputs, in Hz: for HE-AAC the SBR rate, for Opus always 48000.
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
}

/// What an `onMetaData` message says. Every field is optional and checked for sense: a
/// value of the wrong type or out of range is left out rather than passed on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetadataDetails {
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `framerate`, or else `videoframerate`.
    pub fps: Option<f64>,
    /// `videocodecid`: a legacy codec id (7 is AVC), or an Enhanced RTMP FourCC given as
    /// a number (`makeFourCc("hvc1")`) or as a four-character string.
    pub video_codec_id: Option<VideoCodec>,
    /// `videodatarate`, in kbit/s; a zero (what encoders send when they do not know) is
    /// left out.
    pub video_data_rate: Option<f64>,
    /// `audiocodecid`, read like `videocodecid` (10 is AAC, 2 is MP3).
    pub audio_codec_id: Option<AudioCodec>,
    /// `audiosamplerate`, in Hz.
    pub audio_sample_rate: Option<u32>,
    /// `audiochannels`, or else `stereo` (true: 2, false: 1).
    pub audio_channels: Option<u8>,
    /// `audiodatarate`, in kbit/s; zero is left out.
    pub audio_data_rate: Option<f64>,
    /// `encoder`, cut to at most [`MAX_ENCODER_LEN`] bytes.
    pub encoder: Option<String>,
}

/// Longest `encoder` string kept from metadata, in bytes (cut at a character boundary).
pub const MAX_ENCODER_LEN: usize = 256;

/// Largest width or height believed. Even AV1's limit is 65536; anything larger is a
/// malformed or hostile header, not a picture.
const MAX_DIMENSION: u64 = 65_536;

/// Largest frame rate believed; larger values in headers are time bases, not rates.
const MAX_FPS: f64 = 1000.0;

/// Largest sample rate believed from metadata (and from explicit AAC rates).
const MAX_SAMPLE_RATE: u32 = 768_000;

/// Smallest sample rate believed from metadata: below this the encoder probably meant kHz.
const MIN_METADATA_SAMPLE_RATE: u32 = 1_000;

/// Largest data rate believed from metadata, in kbit/s (10 Gbit/s).
const MAX_DATA_RATE_KBPS: f64 = 10_000_000.0;

// Enhanced RTMP packet types (see `codec.rs` for the header layout).
const EX_VIDEO_SEQUENCE_START: u8 = 0;
const EX_VIDEO_METADATA: u8 = 4;
const EX_VIDEO_MPEG2TS_SEQUENCE_START: u8 = 5;
const EX_VIDEO_MULTITRACK: u8 = 6;
const EX_MOD_EX: u8 = 7;
const EX_AUDIO_SEQUENCE_START: u8 = 0;
const EX_AUDIO_CODED_FRAMES: u8 = 1;
const EX_AUDIO_MULTICHANNEL_CONFIG: u8 = 4;
const EX_AUDIO_MULTITRACK: u8 = 5;
const MULTITRACK_ONE_TRACK: u8 = 0;
const MULTITRACK_MANY_TRACKS: u8 = 1;
const MULTITRACK_MANY_CODECS: u8 = 2;
const FRAME_TYPE_COMMAND: u8 = 5;
const SOUND_FORMAT_EX_HEADER: u8 = 9;

// ---------------------------------------------------------------------------------------
// Video
// ---------------------------------------------------------------------------------------

/// Reads a video message payload: a legacy AVC or HEVC (codec id 12) sequence header, or
/// an Enhanced RTMP SequenceStart (in a multitrack message, track 0's, or else the first
/// track's). Profile, level and size come from the configuration record; what it lacks,
/// or what does not parse, is left out.
///
/// Any other video message gives just its codec, so a stream whose codec has no sequence
/// header (VP6, Sorenson H.263) is still named. `None` for an empty or truncated header,
/// or an Enhanced RTMP command frame (which names no codec).
pub fn video_details(payload: &[u8]) -> Option<VideoDetails> {
    let info = inspect_video(payload)?;
    if !info.enhanced {
        let mut details = VideoDetails {
            codec: Some(info.codec),
            ..VideoDetails::default()
        };
        if info.is_sequence_header {
            // Frame type and codec id, AVCPacketType, then a 24-bit composition time.
            if let Some(record) = payload.get(5..) {
                decoder_configuration(info.codec, record, &mut details);
            }
        }
        return Some(details);
    }
    if info.frame_type == VideoFrameType::Command && info.codec == VideoCodec::Other(0) {
        return None;
    }
    let Some(track) = enhanced_track(payload, EX_VIDEO_MULTITRACK, true) else {
        return Some(VideoDetails {
            codec: Some(info.codec),
            ..VideoDetails::default()
        });
    };
    let codec = video_codec_from_fourcc(track.fourcc).unwrap_or(info.codec);
    let mut details = VideoDetails {
        codec: Some(codec),
        ..VideoDetails::default()
    };
    match track.packet_type {
        EX_VIDEO_SEQUENCE_START => decoder_configuration(codec, track.body, &mut details),
        EX_VIDEO_MPEG2TS_SEQUENCE_START if codec == VideoCodec::Av1 => {
            av1_video_descriptor(track.body, &mut details);
        }
        _ => {}
    }
    Some(details)
}

/// Fills `details` from a codec's decoder configuration record.
fn decoder_configuration(codec: VideoCodec, record: &[u8], details: &mut VideoDetails) {
    match codec {
        VideoCodec::Avc => avc_configuration(record, details),
        VideoCodec::Hevc | VideoCodec::LegacyHevc => hevc_configuration(record, details),
        VideoCodec::Av1 => av1_configuration(record, details),
        VideoCodec::Vp9 => vp_configuration(record, details),
        VideoCodec::OtherFourCc(fourcc) if &fourcc == b"vp08" => {
            vp_configuration(record, details);
        }
        _ => {}
    }
}

fn video_codec_from_fourcc(fourcc: [u8; 4]) -> Option<VideoCodec> {
    Some(VideoCodec::from_fourcc(fourcc))
}

fn video_codec_from_legacy_id(id: u8) -> Option<VideoCodec> {
    Some(VideoCodec::from_legacy_id(id & 0x0F))
}

fn audio_codec_from_fourcc(fourcc: [u8; 4]) -> Option<AudioCodec> {
    Some(AudioCodec::from_fourcc(fourcc))
}

fn audio_codec_from_legacy_format(format: u8) -> Option<AudioCodec> {
    if format == SOUND_FORMAT_EX_HEADER || format > 15 {
        return None;
    }
    Some(AudioCodec::from_legacy_format(format))
}

// --- H.264 -----------------------------------------------------------------------------

/// H.264 profiles whose SPS carries chroma format, bit depths and scaling lists.
const AVC_PROFILES_WITH_CHROMA_INFO: [u8; 13] =
    [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1): version, profile,
/// compatibility (the SPS constraint flags), level, length size, then the SPS count and
/// each SPS behind a 16-bit length.
fn avc_configuration(record: &[u8], details: &mut VideoDetails) {
    let (Some(&profile_idc), Some(&constraints), Some(&level_idc)) =
        (record.get(1), record.get(2), record.get(3))
    else {
        return;
    };
    details.profile = Some(avc_profile_name(profile_idc));
    details.level = avc_level_name(profile_idc, constraints, level_idc);
    let sps_count = record.get(5).map_or(0, |count| count & 0x1F);
    if sps_count == 0 {
        return;
    }
    if let Some(picture) = length_prefixed(record, 6).and_then(avc_sps) {
        details.width = Some(picture.width);
        details.height = Some(picture.height);
        details.fps = picture.fps;
    }
}

fn avc_profile_name(profile_idc: u8) -> String {
    let name = match profile_idc {
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 | 144 => "High 4:4:4",
        44 => "CAVLC 4:4:4 Intra",
        83 => "Scalable Baseline",
        86 => "Scalable High",
        118 => "Multiview High",
        128 => "Stereo High",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// "3.1" for level_idc 31, "4" for 40, "1b" for level_idc 9 or (in Baseline, Main and
/// Extended) 11 with constraint_set3_flag. `None` for 0, which no level is.
fn avc_level_name(profile_idc: u8, constraints: u8, level_idc: u8) -> Option<String> {
    let constraint_set3 = constraints & 0x10 != 0;
    if level_idc == 9 || (level_idc == 11 && constraint_set3 && matches!(profile_idc, 66 | 77 | 88))
    {
        return Some("1b".to_owned());
    }
    decimal_level(level_idc, 10)
}

/// `value / divisor` written as "4" or "4.1": how H.264, HEVC (per 30) and VP9 name levels.
fn decimal_level(value: u8, divisor: u8) -> Option<String> {
    if value == 0 {
        return None;
    }
    let major = value / divisor;
    let minor = value % divisor;
    Some(if minor == 0 {
        major.to_string()
    } else {
        format!("{major}.{minor}")
    })
}

/// A picture size read from parameter sets, with the nominal frame rate if they carry one.
#[derive(Clone, Copy, Debug, PartialEq)]
struct PictureSize {
    width: u32,
    height: u32,
    fps: Option<f64>,
}

/// Reads the size (and VUI frame rate) from an H.264 SPS NAL unit (ITU-T H.264 7.3.2.1.1).
fn avc_sps(nal: &[u8]) -> Option<PictureSize> {
    let (&header, rbsp) = nal.split_first()?;
    if header & 0x1F != 7 {
        return None;
    }
    let mut bits = BitReader::rbsp(rbsp);
    let profile_idc = bits.read_u8()?;
    bits.skip(16)?; // constraint flags, level_idc
    bits.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if AVC_PROFILES_WITH_CHROMA_INFO.contains(&profile_idc) {
        chroma_format_idc = bits.ue()?;
        if chroma_format_idc > 3 {
            return None;
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = bits.flag()?;
        }
        bits.ue()?; // bit_depth_luma_minus8
        bits.ue()?; // bit_depth_chroma_minus8
        bits.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if bits.flag()? {
            // seq_scaling_matrix_present_flag: six 4x4 lists, then two or six 8x8 ones.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for list in 0..lists {
                if bits.flag()? {
                    skip_scaling_list(&mut bits, if list < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    bits.ue()?; // log2_max_frame_num_minus4
    match bits.ue()? {
        0 => {
            bits.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            bits.skip(1)?; // delta_pic_order_always_zero_flag
            bits.se()?; // offset_for_non_ref_pic
            bits.se()?; // offset_for_top_to_bottom_field
            let cycle = bits.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                bits.se()?; // offset_for_ref_frame
            }
        }
        _ => {}
    }
    bits.ue()?; // max_num_ref_frames
    bits.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = u64::from(bits.ue()?) + 1;
    let height_in_map_units = u64::from(bits.ue()?) + 1;
    let frame_mbs_only = bits.flag()?;
    if !frame_mbs_only {
        bits.skip(1)?; // mb_adaptive_frame_field_flag
    }
    bits.skip(1)?; // direct_8x8_inference_flag
    let mut crop = [0u64; 4]; // left, right, top, bottom
    if bits.flag()? {
        for offset in &mut crop {
            *offset = u64::from(bits.ue()?);
        }
    }
    // Field coding: a map unit is a pair of macroblock rows, and vertical cropping counts
    // in frame lines twice over.
    let fields: u64 = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        1 => (2, 2 * fields),
        2 => (2, fields),
        _ => (1, fields),
    };
    let [left, right, top, bottom] = crop;
    let width = (width_in_mbs * 16).checked_sub(crop_unit_x * (left + right))?;
    let height = (height_in_map_units * 16 * fields).checked_sub(crop_unit_y * (top + bottom))?;
    let (width, height) = plausible_size(width, height)?;
    Some(PictureSize {
        width,
        height,
        fps: avc_vui_fps(&mut bits),
    })
}

/// Walks past one scaling_list() (H.264 7.3.2.1.1.1): deltas until the list ends or a
/// delta makes the next scale 0 ("use the default list from here").
fn skip_scaling_list(bits: &mut BitReader<'_>, size: usize) -> Option<()> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = bits.se()?;
            next_scale = (last_scale + delta).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Some(())
}

/// The frame rate in an H.264 VUI's timing info (E.1.1): time_scale counts field ticks,
/// so frames per second is time_scale / (2 * num_units_in_tick). `None` without timing
/// info, or with a rate no encoder means.
fn avc_vui_fps(bits: &mut BitReader<'_>) -> Option<f64> {
    if !bits.flag()? {
        return None; // vui_parameters_present_flag
    }
    if bits.flag()? {
        // aspect_ratio_info_present_flag; 255 is Extended_SAR, followed by its two halves.
        if bits.read_u8()? == 255 {
            bits.skip(32)?;
        }
    }
    if bits.flag()? {
        bits.skip(1)?; // overscan_appropriate_flag
    }
    if bits.flag()? {
        // video_signal_type_present_flag: format, full range, then maybe colour description.
        bits.skip(4)?;
        if bits.flag()? {
            bits.skip(24)?;
        }
    }
    if bits.flag()? {
        bits.ue()?; // chroma_sample_loc_type_top_field
        bits.ue()?; // chroma_sample_loc_type_bottom_field
    }
    if !bits.flag()? {
        return None; // timing_info_present_flag
    }
    let num_units_in_tick = bits.read_u32()?;
    let time_scale = bits.read_u32()?;
    if num_units_in_tick == 0 {
        return None;
    }
    plausible_fps(f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick)))
}

// --- HEVC ------------------------------------------------------------------------------

const HEVC_NAL_SPS: u8 = 33;

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1): a 23-byte header (profile
/// in byte 1, level in byte 12, average frame rate in bytes 19-20), then arrays of NAL
/// units, one of which should hold the SPS.
fn hevc_configuration(record: &[u8], details: &mut VideoDetails) {
    let Some(&profile_byte) = record.get(1) else {
        return;
    };
    let compatibility = record
        .get(2..6)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map_or(0, u32::from_be_bytes);
    details.profile = Some(hevc_profile_name(profile_byte & 0x1F, compatibility));
    details.level = record.get(12).and_then(|&level| hevc_level_name(level));
    // avgFrameRate, in frames per 256 seconds; 0 means unspecified.
    if let Some(&[high, low]) = record.get(19..21) {
        let rate = u16::from_be_bytes([high, low]);
        if rate != 0 {
            details.fps = plausible_fps(f64::from(rate) / 256.0);
        }
    }
    if let Some(picture) = hevc_find_sps(record).and_then(hevc_sps) {
        details.width = Some(picture.width);
        details.height = Some(picture.height);
    }
}

/// The first SPS NAL unit in the record's arrays. Each NAL unit takes at least its two
/// length bytes, so the walk ends within the record's length whatever the counts say.
fn hevc_find_sps(record: &[u8]) -> Option<&[u8]> {
    let array_count = *record.get(22)?;
    let mut cursor = 23usize;
    for _ in 0..array_count {
        let nal_count = read_u16(record, cursor.checked_add(1)?)?;
        cursor = cursor.checked_add(3)?;
        for _ in 0..nal_count {
            let nal = length_prefixed(record, cursor)?;
            cursor = cursor.checked_add(2 + nal.len())?;
            if nal
                .first()
                .is_some_and(|&header| (header >> 1) & 0x3F == HEVC_NAL_SPS)
            {
                return Some(nal);
            }
        }
    }
    None
}

/// The profile's name from general_profile_idc; when that is 0 (as some encoders send),
/// from the lowest profile its compatibility flags claim.
fn hevc_profile_name(profile_idc: u8, compatibility: u32) -> String {
    let profile_idc = if profile_idc == 0 {
        // Flag j (counting from the most significant bit) means "conforms to profile j".
        (1..32u8)
            .find(|&j| compatibility & (1u32 << (31 - u32::from(j))) != 0)
            .unwrap_or(0)
    } else {
        profile_idc
    };
    let name = match profile_idc {
        1 => "Main",
        2 => "Main 10",
        3 => "Main Still Picture",
        4 => "RExt",
        5 => "High Throughput",
        6 => "Multiview Main",
        7 => "Scalable Main",
        8 => "3D Main",
        9 => "Screen Content",
        10 => "Scalable RExt",
        11 => "High Throughput Screen Content",
        other => return other.to_string(),
    };
    name.to_owned()
}

/// general_level_idc is 30 times the level: 93 is "3.1", 120 is "4". A value that is not
/// a multiple of 3 names no level and is left out.
fn hevc_level_name(level_idc: u8) -> Option<String> {
    if !level_idc.is_multiple_of(3) {
        return None;
    }
    decimal_level(level_idc / 3, 10)
}

/// Reads the picture size from an HEVC SPS NAL unit (ITU-T H.265 7.3.2.2): past the
/// profile_tier_level structure to pic_width/height_in_luma_samples, minus the
/// conformance window.
fn hevc_sps(nal: &[u8]) -> Option<PictureSize> {
    let header = nal.get(..2)?;
    if (header[0] >> 1) & 0x3F != HEVC_NAL_SPS {
        return None;
    }
    let mut bits = BitReader::rbsp(nal.get(2..)?);
    bits.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = usize::from(bits.read_u8_bits(3)?);
    bits.skip(1)?; // sps_temporal_id_nesting_flag
    // profile_tier_level(1, max_sub_layers_minus1): the general part is 88 bits of
    // profile, tier and constraint flags and 8 of level.
    bits.skip(96)?;
    let mut sub_layer_present = [(false, false); 7];
    for present in sub_layer_present.iter_mut().take(max_sub_layers_minus1) {
        *present = (bits.flag()?, bits.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            bits.skip(2)?; // reserved_zero_2bits
        }
    }
    for &(profile_present, level_present) in sub_layer_present.iter().take(max_sub_layers_minus1) {
        if profile_present {
            bits.skip(88)?;
        }
        if level_present {
            bits.skip(8)?;
        }
    }
    bits.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = bits.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    let separate_colour_plane = chroma_format_idc == 3 && bits.flag()?;
    let width = u64::from(bits.ue()?);
    let height = u64::from(bits.ue()?);
    let mut window = [0u64; 4]; // left, right, top, bottom
    if bits.flag()? {
        for offset in &mut window {
            *offset = u64::from(bits.ue()?);
        }
    }
    let (sub_width, sub_height) = match (separate_colour_plane, chroma_format_idc) {
        (false, 1) => (2, 2),
        (false, 2) => (2, 1),
        _ => (1, 1),
    };
    let [left, right, top, bottom] = window;
    let width = width.checked_sub(sub_width * (left + right))?;
    let height = height.checked_sub(sub_height * (top + bottom))?;
    let (width, height) = plausible_size(width, height)?;
    Some(PictureSize {
        width,
        height,
        fps: None,
    })
}

// --- AV1 -------------------------------------------------------------------------------

const AV1_OBU_SEQUENCE_HEADER: u8 = 1;

/// AV1CodecConfigurationRecord (AV1 in ISOBMFF, 2.3.3): marker and version, then
/// seq_profile (3 bits) and seq_level_idx_0 (5), two more bytes of flags, then the
/// configOBUs, which should include the sequence header. Without the marker bit the
/// payload is read as bare OBUs, as some senders do.
fn av1_configuration(record: &[u8], details: &mut VideoDetails) {
    let obus = match record {
        [marker, profile_level, _, _, obus @ ..] if marker & 0x80 != 0 => {
            details.profile = Some(av1_profile_name(profile_level >> 5));
            details.level = av1_level_name(profile_level & 0x1F);
            obus
        }
        _ => record,
    };
    if let Some(sequence) = av1_find_sequence_header(obus).and_then(av1_sequence_header) {
        details
            .profile
            .get_or_insert_with(|| av1_profile_name(sequence.profile));
        if details.level.is_none() {
            details.level = av1_level_name(sequence.level_idx);
        }
        details.width = Some(sequence.picture.width);
        details.height = Some(sequence.picture.height);
        details.fps = sequence.picture.fps;
    }
}

/// The AV1 video descriptor of an MPEG2TSSequenceStart: tag 0x80, length, then the same
/// marker/version and profile/level bytes as the configuration record. No size.
fn av1_video_descriptor(descriptor: &[u8], details: &mut VideoDetails) {
    if let [0x80, _, marker, profile_level, ..] = descriptor
        && marker & 0x80 != 0
    {
        details.profile = Some(av1_profile_name(profile_level >> 5));
        details.level = av1_level_name(profile_level & 0x1F);
    }
}

fn av1_profile_name(seq_profile: u8) -> String {
    match seq_profile {
        0 => "Main".to_owned(),
        1 => "High".to_owned(),
        2 => "Professional".to_owned(),
        other => other.to_string(),
    }
}

/// seq_level_idx is (major - 2) * 4 + minor: 5 is "3.1", 8 is "4.0". 31 means "no level
/// constraint", and 24 to 30 are undefined; those are left out.
fn av1_level_name(seq_level_idx: u8) -> Option<String> {
    (seq_level_idx < 24).then(|| format!("{}.{}", 2 + (seq_level_idx >> 2), seq_level_idx & 3))
}

/// The payload of the first sequence header OBU in a run of OBUs (AV1 5.3). An OBU
/// without a size field runs to the end of the input.
fn av1_find_sequence_header(mut obus: &[u8]) -> Option<&[u8]> {
    while let Some(&header) = obus.first() {
        if header & 0x80 != 0 {
            return None; // obu_forbidden_bit
        }
        let obu_type = (header >> 3) & 0x0F;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut cursor = if has_extension { 2 } else { 1 };
        let size = if has_size {
            let (size, used) = leb128(obus.get(cursor..)?)?;
            cursor += used;
            size
        } else {
            obus.len().checked_sub(cursor)?
        };
        let end = cursor.checked_add(size)?;
        let payload = obus.get(cursor..end)?;
        if obu_type == AV1_OBU_SEQUENCE_HEADER {
            return Some(payload);
        }
        obus = obus.get(end..)?;
    }
    None
}

/// An unsigned LEB128 number (AV1 4.10.5): at most 8 bytes, value at most 2^32 - 1.
/// Returns the value and how many bytes it took.
fn leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (index, &byte) in bytes.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            let value = u32::try_from(value).ok()?;
            return Some((usize::try_from(value).ok()?, index + 1));
        }
    }
    None
}

struct Av1Sequence {
    profile: u8,
    level_idx: u8,
    picture: PictureSize,
}

/// Reads sequence_header_obu() (AV1 5.5.1) as far as max_frame_width/height_minus_1.
fn av1_sequence_header(obu: &[u8]) -> Option<Av1Sequence> {
    let mut bits = BitReader::plain(obu);
    let profile = bits.read_u8_bits(3)?;
    bits.skip(1)?; // still_picture
    let reduced_still_picture_header = bits.flag()?;
    let mut fps = None;
    let level_idx;
    if reduced_still_picture_header {
        level_idx = bits.read_u8_bits(5)?;
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0u32;
        if bits.flag()? {
            // timing_info()
            let num_units_in_display_tick = bits.read_u32()?;
            let time_scale = bits.read_u32()?;
            if bits.flag()? {
                // equal_picture_interval: every picture lasts this many ticks.
                let ticks_per_picture = f64::from(bits.uvlc()?) + 1.0;
                if num_units_in_display_tick != 0 {
                    fps = plausible_fps(
                        f64::from(time_scale)
                            / (f64::from(num_units_in_display_tick) * ticks_per_picture),
                    );
                }
            }
            decoder_model_info_present = bits.flag()?;
            if decoder_model_info_present {
                buffer_delay_length = u32::from(bits.read_u8_bits(5)?) + 1;
                bits.skip(32)?; // num_units_in_decoding_tick
                bits.skip(10)?; // buffer_removal_time_length, frame_presentation_time_length
            }
        }
        let initial_display_delay_present = bits.flag()?;
        let operating_points = bits.read_u8_bits(5)? + 1;
        let mut first_level = 0;
        for point in 0..operating_points {
            bits.skip(12)?; // operating_point_idc
            let level = bits.read_u8_bits(5)?;
            if point == 0 {
                first_level = level;
            }
            if level > 7 {
                bits.skip(1)?; // seq_tier
            }
            if decoder_model_info_present && bits.flag()? {
                // operating_parameters_info(): two buffer delays and low_delay_mode_flag.
                bits.skip(2 * buffer_delay_length + 1)?;
            }
            if initial_display_delay_present && bits.flag()? {
                bits.skip(4)?; // initial_display_delay_minus_1
            }
        }
        level_idx = first_level;
    }
    let width_bits = u32::from(bits.read_u8_bits(4)?) + 1;
    let height_bits = u32::from(bits.read_u8_bits(4)?) + 1;
    let width = bits.read_bits(width_bits)? + 1;
    let height = bits.read_bits(height_bits)? + 1;
    let (width, height) = plausible_size(width, height)?;
    Some(Av1Sequence {
        profile,
        level_idx,
        picture: PictureSize { width, height, fps },
    })
}

// --- VP8 / VP9 -------------------------------------------------------------------------

/// VPCodecConfigurationRecord (VP codec ISOBMFF binding): profile, level, then bit depth,
/// chroma and colour fields; no picture size. Some senders copy the whole `vpcC` box
/// body, whose version 1 and zero flags come first; a record cannot start that way
/// (its third byte holds the bit depth, never 0), so those four bytes are skipped.
fn vp_configuration(record: &[u8], details: &mut VideoDetails) {
    let record = match record {
        [1, 0, 0, 0, rest @ ..] => rest,
        _ => record,
    };
    if let Some(&profile) = record.first() {
        details.profile = Some(format!("Profile {profile}"));
    }
    details.level = record.get(1).and_then(|&level| decimal_level(level, 10));
}

// ---------------------------------------------------------------------------------------
// Audio
// ---------------------------------------------------------------------------------------

/// Reads an audio message payload.
///
/// - Legacy AAC: the sequence header's AudioSpecificConfig gives profile, sample rate and
///   channels. AAC frames give only the codec: their sound flags are fixed at
///   44 kHz stereo whatever the stream is, so they are not reported.
/// - Legacy MP3: the MPEG audio frame header, which can say 48 kHz where the flags cannot;
///   the flags if it does not parse.
/// - Other legacy formats: the FLV sound flags (rate 5.5/11/22/44 kHz, mono or stereo),
///   except where the format fixes the rate (Nellymoser 8/16 kHz, G.711 at 8 kHz, Speex
///   at 16 kHz), which is what decoders use whatever the flags say.
/// - Enhanced RTMP SequenceStart: AAC AudioSpecificConfig, Opus `OpusHead`, FLAC
///   STREAMINFO; CodedFrames: the frame header of MP3, AC-3 and E-AC-3;
///   MultichannelConfig: its channel count. In a multitrack message, track 0's, or else
///   the first track's.
///
/// `None` for an empty payload or a truncated header.
pub fn audio_details(payload: &[u8]) -> Option<AudioDetails> {
    let info = inspect_audio(payload)?;
    let mut details = AudioDetails {
        codec: Some(info.codec),
        ..AudioDetails::default()
    };
    if info.enhanced {
        if let Some(track) = enhanced_track(payload, EX_AUDIO_MULTITRACK, false) {
            let codec = audio_codec_from_fourcc(track.fourcc).unwrap_or(info.codec);
            details.codec = Some(codec);
            enhanced_audio(codec, track.packet_type, track.body, &mut details);
        }
    } else {
        legacy_audio(info.codec, payload, &mut details);
    }
    if details.codec == Some(AudioCodec::Opus) {
        // Opus always decodes at 48 kHz; OpusHead's rate is only the input's.
        details.sample_rate = Some(48_000);
    }
    Some(details)
}

fn legacy_audio(codec: AudioCodec, payload: &[u8], details: &mut AudioDetails) {
    if codec == AudioCodec::Aac {
        if payload.get(1) == Some(&0)
            && let Some(config) = payload.get(2..).and_then(audio_specific_config)
        {
            config.fill(details);
        }
        return;
    }
    let Some(&flags) = payload.first() else {
        return;
    };
    if matches!(codec, AudioCodec::Mp3 | AudioCodec::Mp3_8k)
        && let Some((sample_rate, channels)) = payload.get(1..).and_then(mpeg_audio_header)
    {
        details.sample_rate = Some(sample_rate);
        details.channels = Some(channels);
        return;
    }
    let flag_rate = [5_512, 11_025, 22_050, 44_100][usize::from((flags >> 2) & 0x03)];
    details.sample_rate = Some(match codec {
        AudioCodec::Nellymoser8k | AudioCodec::G711A | AudioCodec::G711U | AudioCodec::Mp3_8k => {
            8_000
        }
        AudioCodec::Nellymoser16k | AudioCodec::Speex => 16_000,
        _ => flag_rate,
    });
    details.channels = Some(if flags & 0x01 != 0 { 2 } else { 1 });
}

fn enhanced_audio(codec: AudioCodec, packet_type: u8, body: &[u8], details: &mut AudioDetails) {
    match (packet_type, codec) {
        (EX_AUDIO_SEQUENCE_START, AudioCodec::ExAac | AudioCodec::Aac) => {
            if let Some(config) = audio_specific_config(body) {
                config.fill(details);
            }
        }
        (EX_AUDIO_SEQUENCE_START, AudioCodec::Opus) => {
            details.channels = opus_head_channels(body);
        }
        (EX_AUDIO_SEQUENCE_START, AudioCodec::Flac) => {
            if let Some((sample_rate, channels)) = flac_stream_info(body) {
                details.sample_rate = Some(sample_rate);
                details.channels = Some(channels);
            }
        }
        (EX_AUDIO_CODED_FRAMES, AudioCodec::ExMp3) => {
            if let Some((sample_rate, channels)) = mpeg_audio_header(body) {
                details.sample_rate = Some(sample_rate);
                details.channels = Some(channels);
            }
        }
        (EX_AUDIO_CODED_FRAMES, AudioCodec::Ac3 | AudioCodec::Eac3) => {
            if let Some((sample_rate, channels)) = ac3_frame_header(body) {
                details.sample_rate = Some(sample_rate);
                details.channels = Some(channels);
            }
        }
        (EX_AUDIO_MULTICHANNEL_CONFIG, _) => {
            // audioChannelOrder, then channelCount.
            details.channels = body.get(1).copied().filter(|&count| count != 0);
        }
        _ => {}
    }
}

// --- AAC -------------------------------------------------------------------------------

/// What an AudioSpecificConfig says.
struct AacConfig {
    profile: String,
    sample_rate: Option<u32>,
    channels: Option<u8>,
}

impl AacConfig {
    fn fill(self, details: &mut AudioDetails) {
        details.profile = Some(self.profile);
        details.sample_rate = self.sample_rate;
        details.channels = self.channels;
    }
}

const AAC_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];
const AAC_OBJECT_SBR: u8 = 5;
const AAC_OBJECT_PS: u8 = 29;
const AAC_SYNC_EXTENSION_SBR: u64 = 0x2B7;
const AAC_SYNC_EXTENSION_PS: u64 = 0x548;

/// Reads an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): object type, sampling
/// frequency (index or explicit 24-bit rate), channel configuration. HE-AAC is found
/// whether it is signalled explicitly (object type 5 or 29 with the SBR rate behind it)
/// or backward compatibly (an LC config followed by the 0x2B7 sync extension); either way
/// the rate reported is the SBR output rate, and parametric stereo makes mono stereo.
fn audio_specific_config(config: &[u8]) -> Option<AacConfig> {
    let mut bits = BitReader::plain(config);
    let object_type = aac_object_type(&mut bits)?;
    let mut sample_rate = aac_sample_rate(&mut bits)?;
    let channel_configuration = bits.read_u8_bits(4)?;
    let mut profile_type = object_type;
    if object_type == AAC_OBJECT_SBR || object_type == AAC_OBJECT_PS {
        if let Some(sbr_rate) = aac_sample_rate(&mut bits)? {
            sample_rate = Some(sbr_rate);
        }
    } else if channel_configuration != 0
        && matches!(object_type, 1..=4)
        && let Some((sbr_rate, parametric_stereo)) = aac_sync_extension(&mut bits)
    {
        profile_type = if parametric_stereo {
            AAC_OBJECT_PS
        } else {
            AAC_OBJECT_SBR
        };
        sample_rate = sbr_rate.or(sample_rate);
    }
    let mut channels = match channel_configuration {
        1..=6 => Some(channel_configuration),
        7 | 12 | 14 => Some(8),
        11 => Some(7),
        13 => Some(24),
        _ => None, // 0: a program_config_element says, not read here
    };
    if profile_type == AAC_OBJECT_PS && channels == Some(1) {
        channels = Some(2);
    }
    Some(AacConfig {
        profile: aac_profile_name(profile_type),
        sample_rate,
        channels,
    })
}

/// GetAudioObjectType(): 5 bits, with 31 escaping to 32 plus 6 more.
fn aac_object_type(bits: &mut BitReader<'_>) -> Option<u8> {
    let object_type = bits.read_u8_bits(5)?;
    if object_type == 31 {
        Some(32 + bits.read_u8_bits(6)?)
    } else {
        Some(object_type)
    }
}

/// samplingFrequencyIndex, or 15 and an explicit 24-bit rate. The inner `None` is a
/// reserved index (or a rate of 0): unknown, but the fields after it can still be read.
fn aac_sample_rate(bits: &mut BitReader<'_>) -> Option<Option<u32>> {
    let index = bits.read_u8_bits(4)?;
    if index == 15 {
        let rate = bits.read_bits(24)?;
        Some(
            u32::try_from(rate)
                .ok()
                .filter(|&rate| rate != 0 && rate <= MAX_SAMPLE_RATE),
        )
    } else {
        Some(AAC_SAMPLE_RATES.get(usize::from(index)).copied())
    }
}

/// Reads past GASpecificConfig (for object types 1-4 with a channel configuration) and,
/// if the 0x2B7 sync extension follows, returns the SBR rate it announces and whether the
/// 0x548 parametric-stereo extension follows that. `None` when there is no SBR.
fn aac_sync_extension(bits: &mut BitReader<'_>) -> Option<(Option<u32>, bool)> {
    bits.skip(1)?; // frameLengthFlag
    if bits.flag()? {
        bits.skip(14)?; // coreCoderDelay
    }
    if bits.flag()? {
        return None; // extensionFlag: not defined for these object types
    }
    if bits.remaining() < 16 || bits.read_bits(11)? != AAC_SYNC_EXTENSION_SBR {
        return None;
    }
    if aac_object_type(bits)? != AAC_OBJECT_SBR || !bits.flag()? {
        return None; // sbrPresentFlag
    }
    let sbr_rate = aac_sample_rate(bits)?;
    let parametric_stereo = bits.remaining() >= 12
        && bits.read_bits(11) == Some(AAC_SYNC_EXTENSION_PS)
        && bits.flag() == Some(true);
    Some((sbr_rate, parametric_stereo))
}

fn aac_profile_name(object_type: u8) -> String {
    let name = match object_type {
        1 => "Main",
        2 => "LC",
        3 => "SSR",
        4 => "LTP",
        5 => "HE-AAC",
        6 => "Scalable",
        17 => "ER LC",
        19 => "ER LTP",
        23 => "LD",
        29 => "HE-AACv2",
        39 => "ELD",
        42 => "xHE-AAC",
        other => return other.to_string(),
    };
    name.to_owned()
}

// --- Opus, FLAC, MP3, AC-3 -------------------------------------------------------------

/// The channel count of an `OpusHead` ID header (RFC 7845 5.1): magic, version (major 0),
/// channel count, pre-skip, input rate, gain, mapping family.
fn opus_head_channels(head: &[u8]) -> Option<u8> {
    match head {
        [
            b'O',
            b'p',
            b'u',
            b's',
            b'H',
            b'e',
            b'a',
            b'd',
            version,
            channels,
            ..,
        ] if version >> 4 == 0 && *channels != 0 => Some(*channels),
        _ => None,
    }
}

/// Sample rate and channels from a FLAC sequence header: "fLaC", the STREAMINFO
/// metadata block's 4-byte header, then STREAMINFO (the rate is 20 bits at byte 10, the
/// channel count less one the 3 after it). The magic and the block header are each
/// accepted missing.
fn flac_stream_info(header: &[u8]) -> Option<(u32, u8)> {
    let header = header.strip_prefix(b"fLaC").unwrap_or(header);
    let stream_info = match header {
        [block_type, 0, 0, 34, rest @ ..] if block_type & 0x7F == 0 => rest,
        _ => header,
    };
    let packed = stream_info.get(10..13)?;
    let sample_rate =
        (u32::from(packed[0]) << 12) | (u32::from(packed[1]) << 4) | u32::from(packed[2] >> 4);
    let channels = ((packed[2] >> 1) & 0x07) + 1;
    (sample_rate != 0).then_some((sample_rate, channels))
}

/// Sample rate and channels from an MPEG audio (MP3) frame header: 11 sync bits, version,
/// layer, bitrate and rate indexes, channel mode.
fn mpeg_audio_header(frame: &[u8]) -> Option<(u32, u8)> {
    let [0xFF, second, third, fourth, ..] = *frame else {
        return None;
    };
    if second & 0xE0 != 0xE0 {
        return None;
    }
    let version = (second >> 3) & 0x03; // 0: MPEG 2.5, 1: reserved, 2: MPEG 2, 3: MPEG 1
    let layer = (second >> 1) & 0x03;
    let bitrate_index = third >> 4;
    let rate_index = (third >> 2) & 0x03;
    if version == 1 || layer == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let base = [44_100, 48_000, 32_000][usize::from(rate_index)];
    let sample_rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    let channels = if fourth >> 6 == 3 { 1 } else { 2 };
    Some((sample_rate, channels))
}

/// Sample rate and channels (including LFE) from an AC-3 or E-AC-3 sync frame (ATSC
/// A/52), told apart by bsid, which both keep in the top five bits of byte 5.
fn ac3_frame_header(frame: &[u8]) -> Option<(u32, u8)> {
    if frame.get(..2)? != [0x0B, 0x77] {
        return None;
    }
    let bsid = *frame.get(5)? >> 3;
    const RATES: [u32; 3] = [48_000, 44_100, 32_000];
    // Channels per acmod: 1+1 (dual mono), 1/0, 2/0, 3/0, 2/1, 3/1, 2/2, 3/2.
    const CHANNELS: [u8; 8] = [2, 1, 2, 3, 3, 4, 4, 5];
    let (sample_rate, acmod, lfe_on) = if bsid <= 10 {
        // AC-3: syncword, crc1, fscod and frmsizecod, bsid and bsmod, then acmod and the
        // mix levels its value calls for, then lfeon. bsid 9 and 10 halve and quarter
        // the rate.
        let fscod = frame[4] >> 6;
        let rate = *RATES.get(usize::from(fscod))? >> bsid.saturating_sub(8);
        let mut bits = BitReader::plain(frame.get(6..)?);
        let acmod = bits.read_u8_bits(3)?;
        if acmod & 0x01 != 0 && acmod != 1 {
            bits.skip(2)?; // cmixlev
        }
        if acmod & 0x04 != 0 {
            bits.skip(2)?; // surmixlev
        }
        if acmod == 2 {
            bits.skip(2)?; // dsurmod
        }
        (rate, acmod, bits.flag()?)
    } else if bsid <= 16 {
        // E-AC-3: syncword, strmtyp, substreamid, frmsiz, then fscod (with fscod2 for the
        // reduced rates), numblkscod, acmod, lfeon.
        let mut bits = BitReader::plain(frame.get(4..)?);
        let fscod = bits.read_u8_bits(2)?;
        let rate = if fscod == 3 {
            *[24_000, 22_050, 16_000].get(usize::from(bits.read_u8_bits(2)?))?
        } else {
            bits.skip(2)?; // numblkscod
            RATES[usize::from(fscod)]
        };
        (rate, bits.read_u8_bits(3)?, bits.flag()?)
    } else {
        return None;
    };
    Some((
        sample_rate,
        CHANNELS[usize::from(acmod & 0x07)] + u8::from(lfe_on),
    ))
}

// ---------------------------------------------------------------------------------------
// Enhanced RTMP header walking
// ---------------------------------------------------------------------------------------

/// One track of an Enhanced RTMP message: its packet type, FourCC and body.
struct EnhancedTrack<'a> {
    packet_type: u8,
    fourcc: [u8; 4],
    body: &'a [u8],
}

/// Walks an Enhanced RTMP audio or video header (ModEx blocks, then maybe multitrack) to
/// a track's body. Of several tracks, the one with id 0 (the default track, by the
/// specification's convention), or else the first. `None` when the header is truncated,
/// the multitrack type is unknown, or (video) the message is a command frame, which
/// carries no FourCC.
fn enhanced_track(payload: &[u8], multitrack: u8, video: bool) -> Option<EnhancedTrack<'_>> {
    let first = *payload.first()?;
    let (mut packet_type, mut cursor) = skip_mod_ex(payload, first & 0x0F, 1)?;
    if video && (first >> 4) & 0x07 == FRAME_TYPE_COMMAND && packet_type != EX_VIDEO_METADATA {
        return None;
    }
    if packet_type != multitrack {
        let fourcc = read_fourcc(payload, cursor)?;
        let body = payload.get(cursor.checked_add(4)?..)?;
        return Some(EnhancedTrack {
            packet_type,
            fourcc,
            body,
        });
    }
    let multitrack_byte = *payload.get(cursor)?;
    cursor = cursor.checked_add(1)?;
    let multitrack_type = multitrack_byte >> 4;
    packet_type = multitrack_byte & 0x0F;
    let shared_fourcc = match multitrack_type {
        MULTITRACK_ONE_TRACK | MULTITRACK_MANY_TRACKS => {
            let fourcc = read_fourcc(payload, cursor)?;
            cursor = cursor.checked_add(4)?;
            Some(fourcc)
        }
        MULTITRACK_MANY_CODECS => None,
        _ => return None,
    };
    let mut first_track = None;
    // Every track takes at least its id and size (4 bytes), so this ends within the
    // payload's length. A track cut short ends the walk; the tracks before it still count.
    while cursor < payload.len() {
        let Some((track_id, fourcc, body)) =
            next_track(payload, &mut cursor, shared_fourcc, multitrack_type)
        else {
            break;
        };
        let track = EnhancedTrack {
            packet_type,
            fourcc,
            body,
        };
        if track_id == 0 {
            return Some(track);
        }
        first_track.get_or_insert(track);
        if multitrack_type == MULTITRACK_ONE_TRACK {
            break;
        }
    }
    first_track
}

/// One track of a multitrack body at `cursor`: FourCC (when each track has its own),
/// track id, size (unless there is only one track), body. Moves `cursor` past it.
fn next_track<'a>(
    payload: &'a [u8],
    cursor: &mut usize,
    shared_fourcc: Option<[u8; 4]>,
    multitrack_type: u8,
) -> Option<(u8, [u8; 4], &'a [u8])> {
    let mut at = *cursor;
    let fourcc = match shared_fourcc {
        Some(fourcc) => fourcc,
        None => {
            let fourcc = read_fourcc(payload, at)?;
            at = at.checked_add(4)?;
            fourcc
        }
    };
    let track_id = *payload.get(at)?;
    at = at.checked_add(1)?;
    let body = if multitrack_type == MULTITRACK_ONE_TRACK {
        let body = payload.get(at..)?;
        at = payload.len();
        body
    } else {
        let size = usize::try_from(read_u24(payload, at)?).ok()?;
        at = at.checked_add(3)?;
        // A size beyond the payload is cut to what is there; the walk ends after it.
        let end = at.saturating_add(size).min(payload.len());
        let body = payload.get(at..end)?;
        at = end;
        body
    };
    *cursor = at;
    Some((track_id, fourcc, body))
}

fn skip_mod_ex(payload: &[u8], packet_type: u8, cursor: usize) -> Option<(u8, usize)> {
    codec::skip_mod_ex(payload, packet_type, cursor, EX_MOD_EX)
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn read_u24(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(3)?)?;
    Some(u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]))
}

/// The bytes behind a 16-bit length at `at`; `None` if there are fewer than it says.
fn length_prefixed(data: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(read_u16(data, at)?);
    let start = at.checked_add(2)?;
    data.get(start..start.checked_add(len)?)
}

fn plausible_size(width: u64, height: u64) -> Option<(u32, u32)> {
    let valid = 1..=MAX_DIMENSION;
    if !valid.contains(&width) || !valid.contains(&height) {
        return None;
    }
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

fn plausible_fps(fps: f64) -> Option<f64> {
    (fps.is_finite() && fps > 0.0 && fps <= MAX_FPS).then_some(fps)
}

// ---------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------

/// Reads an `onMetaData` data message body: optionally `"@setDataFrame"` (what a
/// publisher sends), then `"onMetaData"`, then an object or ECMA array. A leading 0x00
/// (the format byte of an AMF3 data message, type 15) is skipped. Anything else, or AMF0
/// that does not decode, gives empty details; a property of the wrong type or with a
/// value out of range is left out.
pub fn metadata_details(payload: &[u8]) -> MetadataDetails {
    metadata_properties(payload)
        .map(|properties| metadata_from_properties(&properties))
        .unwrap_or_default()
}

fn metadata_properties(payload: &[u8]) -> Option<Vec<(String, Amf0Value)>> {
    let mut input = match payload {
        [0x00, amf0::marker::STRING, ..] => &payload[1..],
        _ => payload,
    };
    let mut name = amf0::decode(&mut input).ok()?;
    if name.as_str() == Some("@setDataFrame") {
        name = amf0::decode(&mut input).ok()?;
    }
    if name.as_str() != Some("onMetaData") {
        return None;
    }
    match amf0::decode(&mut input).ok()? {
        Amf0Value::Object(properties)
        | Amf0Value::EcmaArray(properties)
        | Amf0Value::TypedObject { properties, .. } => Some(properties),
        _ => None,
    }
}

fn metadata_from_properties(properties: &[(String, Amf0Value)]) -> MetadataDetails {
    let get = |key: &str| {
        properties
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    };
    let number = |key: &str| {
        get(key)
            .and_then(Amf0Value::as_f64)
            .filter(|n| n.is_finite())
    };
    let dimension = |key: &str| {
        number(key)
            .map(f64::round)
            .filter(|&n| n >= 1.0 && n <= MAX_DIMENSION as f64)
            .and_then(|n| u32::try_from(n as u64).ok())
    };
    let data_rate = |key: &str| number(key).filter(|&n| n > 0.0 && n <= MAX_DATA_RATE_KBPS);
    let fps = number("framerate")
        .and_then(plausible_fps)
        .or_else(|| number("videoframerate").and_then(plausible_fps));
    let audio_sample_rate = number("audiosamplerate")
        .map(f64::round)
        .filter(|&n| n >= f64::from(MIN_METADATA_SAMPLE_RATE) && n <= f64::from(MAX_SAMPLE_RATE))
        .and_then(|n| u32::try_from(n as u64).ok());
    let audio_channels = number("audiochannels")
        .map(f64::round)
        .filter(|&n| (1.0..=255.0).contains(&n))
        .and_then(|n| u8::try_from(n as u64).ok())
        .or_else(|| {
            get("stereo")
                .and_then(Amf0Value::as_bool)
                .map(|stereo| if stereo { 2 } else { 1 })
        });
    let encoder = get("encoder")
        .and_then(Amf0Value::as_str)
        .map(|text| amf0::truncate_to_char_boundary(text, MAX_ENCODER_LEN).to_owned());
    MetadataDetails {
        width: dimension("width"),
        height: dimension("height"),
        fps,
        video_codec_id: get("videocodecid")
            .and_then(|value| codec_id(value, video_codec_from_legacy_id, video_codec_from_fourcc)),
        video_data_rate: data_rate("videodatarate"),
        audio_codec_id: get("audiocodecid").and_then(|value| {
            codec_id(
                value,
                audio_codec_from_legacy_format,
                audio_codec_from_fourcc,
            )
        }),
        audio_sample_rate,
        audio_channels,
        audio_data_rate: data_rate("audiodatarate"),
        encoder,
    }
}

/// A `videocodecid` or `audiocodecid`: a legacy id (0-15), a FourCC packed into a number,
/// or a FourCC string. A FourCC must be printable ASCII, so that an arbitrary number is
/// not mistaken for one.
fn codec_id<T>(
    value: &Amf0Value,
    from_legacy: fn(u8) -> Option<T>,
    from_fourcc: fn([u8; 4]) -> Option<T>,
) -> Option<T> {
    let printable = |fourcc: [u8; 4]| fourcc.iter().all(|byte| (0x20..0x7F).contains(byte));
    if let Some(text) = value.as_str() {
        let fourcc: [u8; 4] = text.as_bytes().try_into().ok()?;
        return printable(fourcc).then(|| from_fourcc(fourcc)).flatten();
    }
    let number = value.as_f64()?;
    if !(number.is_finite()
        && number >= 0.0
        && number.fract() == 0.0
        && number <= f64::from(u32::MAX))
    {
        return None;
    }
    let number = u32::try_from(number as u64).ok()?;
    if let Ok(id) = u8::try_from(number)
        && id < 16
    {
        return from_legacy(id);
    }
    let fourcc = number.to_be_bytes();
    printable(fourcc).then(|| from_fourcc(fourcc)).flatten()
}

// ---------------------------------------------------------------------------------------
// Merging
// ---------------------------------------------------------------------------------------

/// The video track as the admin API shows it: what the sequence header says about codec,
/// profile, level and size wins; metadata fills what it leaves out. The frame rate goes
/// the other way: metadata's `framerate` first, because the nominal rate in a header's
/// timing info is sometimes a time base rather than a frame rate. `None` when neither
/// source says anything about video.
pub fn merge(video: Option<VideoDetails>, meta: &MetadataDetails) -> Option<VideoDetails> {
    let meta_says_something = meta.video_codec_id.is_some()
        || meta.width.is_some()
        || meta.height.is_some()
        || meta.fps.is_some();
    if video.is_none() && !meta_says_something {
        return None;
    }
    let mut details = video.unwrap_or_default();
    details.codec = details.codec.or(meta.video_codec_id);
    details.width = details.width.or(meta.width);
    details.height = details.height.or(meta.height);
    details.fps = meta.fps.or(details.fps);
    Some(details)
}

/// The audio track as the admin API shows it: what the audio header says wins; metadata
/// fills in codec, sample rate and channels where it says nothing (as for AAC frames,
/// whose flags are not reported). `None` when neither source says anything about audio.
pub fn merge_audio(audio: Option<AudioDetails>, meta: &MetadataDetails) -> Option<AudioDetails> {
    let meta_says_something = meta.audio_codec_id.is_some()
        || meta.audio_sample_rate.is_some()
        || meta.audio_channels.is_some();
    if audio.is_none() && !meta_says_something {
        return None;
    }
    let mut details = audio.unwrap_or_default();
    details.codec = details.codec.or(meta.audio_codec_id);
    details.sample_rate = details.sample_rate.or(meta.audio_sample_rate);
    details.channels = details.channels.or(meta.audio_channels);
    Some(details)
}

// ---------------------------------------------------------------------------------------
// Bit reading
// ---------------------------------------------------------------------------------------

/// Reads bits most significant first. In RBSP mode (H.264, HEVC) it drops each
/// emulation-prevention byte (the 0x03 of 0x00 0x00 0x03) as it goes, so NAL units are
/// read in place. Every read returns `None` at the end of the input.
struct BitReader<'a> {
    data: &'a [u8],
    /// Index of the next byte to load.
    position: usize,
    current: u8,
    /// Unread bits left in `current`.
    bits_left: u32,
    /// Zero bytes just loaded in a row (RBSP mode).
    zeros: u8,
    rbsp: bool,
}

impl<'a> BitReader<'a> {
    fn plain(data: &'a [u8]) -> Self {
        BitReader {
            data,
            position: 0,
            current: 0,
            bits_left: 0,
            zeros: 0,
            rbsp: false,
        }
    }

    fn rbsp(data: &'a [u8]) -> Self {
        BitReader {
            rbsp: true,
            ..BitReader::plain(data)
        }
    }

    fn load_byte(&mut self) -> Option<u8> {
        let mut byte = *self.data.get(self.position)?;
        self.position += 1;
        if self.rbsp && self.zeros >= 2 && byte == 0x03 {
            self.zeros = 0;
            byte = *self.data.get(self.position)?;
            self.position += 1;
        }
        self.zeros = if byte == 0 {
            self.zeros.saturating_add(1)
        } else {
            0
        };
        Some(byte)
    }

    fn bit(&mut self) -> Option<u64> {
        if self.bits_left == 0 {
            self.current = self.load_byte()?;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Some(u64::from((self.current >> self.bits_left) & 1))
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// Up to 64 bits as a number.
    fn read_bits(&mut self, count: u32) -> Option<u64> {
        if count > 64 {
            return None;
        }
        let mut value = 0u64;
        for _ in 0..count {
            value = (value << 1) | self.bit()?;
        }
        Some(value)
    }

    fn read_u8_bits(&mut self, count: u32) -> Option<u8> {
        u8::try_from(self.read_bits(count.min(8))?).ok()
    }

    fn read_u8(&mut self) -> Option<u8> {
        self.read_u8_bits(8)
    }

    fn read_u32(&mut self) -> Option<u32> {
        u32::try_from(self.read_bits(32)?).ok()
    }

    fn skip(&mut self, count: u32) -> Option<()> {
        for _ in 0..count {
            self.bit()?;
        }
        Some(())
    }

    /// Bits not yet read (plain mode; in RBSP mode an upper bound).
    fn remaining(&self) -> usize {
        (self.data.len() - self.position) * 8 + self.bits_left as usize
    }

    /// ue(v): Exp-Golomb, at most 31 leading zeros (values up to 2^32 - 2).
    fn ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let suffix = self.read_bits(leading_zeros)?;
        u32::try_from((1u64 << leading_zeros) - 1 + suffix).ok()
    }

    /// se(v): signed Exp-Golomb, 1, -1, 2, -2...
    fn se(&mut self) -> Option<i64> {
        let code = i64::from(self.ue()?);
        Some(if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        })
    }

    /// uvlc() (AV1 4.10.3): like ue(v), but 32 or more leading zeros mean 2^32 - 1 with
    /// no suffix. The zeros are counted to the 1 that ends them, up to a bound.
    fn uvlc(&mut self) -> Option<u32> {
        let mut leading_zeros = 0u32;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 256 {
                return None;
            }
        }
        if leading_zeros >= 32 {
            return Some(u32::MAX);
        }
        let suffix = self.read_bits(leading_zeros)?;
        u32::try_from((1u64 << leading_zeros) - 1 + suffix).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        assert!(text.len().is_multiple_of(2), "odd hex length");
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    // Real sequence headers: FLV video tag bodies written by ffmpeg 5.1 with libx264
    // (`ffmpeg -f lavfi -i testsrc=size=WxH:rate=R -pix_fmt yuv420p -c:v libx264 -f flv`),
    // checked against ffprobe.

    /// 1280x720, 30 fps, High@3.1.
    const AVC_720P: &str = "17000000000164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800";
    /// 1920x1080 (coded 1088, cropped by 4 chroma lines), 25 fps, High@4.
    const AVC_1080P: &str = "170000000001640028ffe1001b67640028acd940780227e5c044000003000400000300c83c60c65801000668ebe3cb22c0fdf8f800";
    /// 640x360, `-profile:v baseline` (constraint_set0/1), level 3.
    const AVC_BASELINE: &str = "17000000000142c01effe100196742c01ed900a02ff970110000030001000003003c0f162e4801000568cb83cb20";
    /// 854x480 (coded 864, cropped 5 chroma columns), `-profile:v main`, level 3.1.
    const AVC_MAIN_854: &str = "1700000000014d401fffe10018674d401feca06c1ef3780880000003008000001e078c18cb01000568ebe3cb20";
    /// 720x576 interlaced (frame_mbs_only_flag 0: 18 map units of 32 lines), 25 fps.
    const AVC_INTERLACED: &str = "17000000000164001effe100186764001eacd940b424d8088000000300800000190f8a14cb01000668fba3cb22c0fdf8f800";
    /// 320x240, `-pix_fmt yuv444p`: High 4:4:4 Predictive (chroma_format_idc 3), level 1.3.
    const AVC_444: &str = "170000000001f4000dffe1001967f4000d919b28283f6022000003000200000300781e28532c01000668ebe3c44844fff8f800";
    /// 352x288, `-pix_fmt yuv422p10le`: High 4:2:2 (chroma_format_idc 2, 10-bit), level 1.3.
    const AVC_422_10: &str = "1700000000017a000dffe10019677a000db6cd9416096c0440000003004000000f03c50a658001000668ebe3cb22c0fefafa00";
    /// `AVC_1080P`'s SPS with seq_scaling_matrix_present_flag set: list 0 explicit (16
    /// deltas), list 1 "use default" (a first delta of -8), lists 2-5 absent, list 6
    /// explicit (64 entries), list 7 absent. x264 keeps custom matrices in the PPS, so this
    /// one was spliced by hand; ffmpeg's trace_headers reads it back field for field, and
    /// the stream with it decodes as 1920x1080.
    const AVC_SCALING_SPS: &str = "67640028ad948421084210842108424221087fffffffffffffff6ca03c0113f2e022000003000200000300641e30632c";

    // HEVCDecoderConfigurationRecords from ffmpeg + libx265 (`-c:v libx265`, MP4 `hvcC`),
    // with x265's SEI array dropped (arrays: VPS, SPS, PPS).

    /// 1280x720 Main, level 3.1 (general_level_idc 93).
    const HEVC_720P: &str = "0101600000009000000000005df000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003005d959809210001002b42010101600000030090000003000003005da00280802d165959a4932bc05a020000030002000003003c1022000100074401c172b46240";
    /// 1920x1080 Main, level 4 (120).
    const HEVC_1080P: &str = "01016000000090000000000078f000fcfdf8f800000f03200001001840010c01ffff016000000300900000030000030078959809210001002a420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000f0422000100074401c172b46240";
    /// 1366x768 Main 10 (`-pix_fmt yuv420p10le`): coded 1368 wide, a conformance window
    /// of one chroma column on the right.
    const HEVC_1366_MAIN10: &str = "01022000000090000000000078f000fcfdfafa00000f03200001001840010c01ffff022000000300900000030000030078959809210001002b420101022000000300900000030000030078a002ac80301d6d96566924caf0168080000003008000000f0422000100074401c172b46240";

    // AV1CodecConfigurationRecords (MP4 `av1C`), each with its sequence header OBU.

    /// libaom, 1280x720: Main, seq_level_idx 5 (3.1).
    const AV1_720P: &str = "81050c000a0b0000002d4cffb3ccaf9004";
    /// SVT-AV1, 1920x1080: Main, seq_level_idx 8 (4.0).
    const AV1_1080P: &str = "81080c000a0b00000042abbfc3700be001";

    // VPCodecConfigurationRecords from libvpx-vp9 (MP4 `vpcC` bodies, version 1 + flags).

    /// 640x480 8-bit: profile 0, level 30 ("3").
    const VP9_PROFILE0_BOX: &str = "01000000001e820202020000";
    /// 640x480 `yuv420p10le`: profile 2, level 30.
    const VP9_PROFILE2_BOX: &str = "01000000021ea20202020000";

    fn legacy_sequence_header(codec_id: u8, record: &[u8]) -> Vec<u8> {
        concat(&[&[0x10 | codec_id, 0, 0, 0, 0], record])
    }

    /// Key frame, SequenceStart, FourCC, record.
    fn enhanced_sequence_start(fourcc: &[u8; 4], record: &[u8]) -> Vec<u8> {
        concat(&[&[0x90], fourcc, record])
    }

    fn video(
        codec: VideoCodec,
        profile: &str,
        level: &str,
        size: Option<(u32, u32)>,
        fps: Option<f64>,
    ) -> VideoDetails {
        VideoDetails {
            codec: Some(codec),
            profile: Some(profile.to_owned()),
            level: Some(level.to_owned()),
            width: size.map(|(width, _)| width),
            height: size.map(|(_, height)| height),
            fps,
        }
    }

    #[test]
    fn h264_from_x264_sequence_headers() {
        let cases = [
            (AVC_720P, "High", "3.1", (1280, 720), 30.0),
            (AVC_1080P, "High", "4", (1920, 1080), 25.0),
            (AVC_BASELINE, "Baseline", "3", (640, 360), 30.0),
            (AVC_MAIN_854, "Main", "3.1", (854, 480), 30.0),
            (AVC_INTERLACED, "High", "3", (720, 576), 25.0),
            (AVC_444, "High 4:4:4", "1.3", (320, 240), 30.0),
            (AVC_422_10, "High 4:2:2", "1.3", (352, 288), 30.0),
        ];
        for (payload, profile, level, size, fps) in cases {
            assert_eq!(
                video_details(&hex(payload)),
                Some(video(
                    VideoCodec::Avc,
                    profile,
                    level,
                    Some(size),
                    Some(fps)
                )),
                "{payload}"
            );
        }
    }

    #[test]
    fn h264_sps_with_scaling_lists_and_emulation_prevention() {
        let sps = hex(AVC_SCALING_SPS);
        assert!(sps.windows(3).any(|w| w == [0, 0, 3]));
        let mut record = vec![1, 0x64, 0x00, 0x28, 0xFF, 0xE1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(&sps);
        record.extend_from_slice(&hex("01000668ebe3cb22c0"));
        let details = video_details(&legacy_sequence_header(7, &record)).unwrap();
        assert_eq!(
            details,
            video(VideoCodec::Avc, "High", "4", Some((1920, 1080)), Some(25.0))
        );
    }

    #[test]
    fn h264_enhanced_avc1_sequence_start() {
        let record = &hex(AVC_720P)[5..];
        let details = video_details(&enhanced_sequence_start(b"avc1", record)).unwrap();
        assert_eq!(
            details,
            video(
                VideoCodec::Avc,
                "High",
                "3.1",
                Some((1280, 720)),
                Some(30.0)
            )
        );
    }

    #[test]
    fn h264_level_names() {
        assert_eq!(avc_level_name(66, 0xC0, 31).as_deref(), Some("3.1"));
        assert_eq!(avc_level_name(100, 0, 40).as_deref(), Some("4"));
        assert_eq!(avc_level_name(100, 0, 52).as_deref(), Some("5.2"));
        assert_eq!(avc_level_name(100, 0, 9).as_deref(), Some("1b"));
        assert_eq!(avc_level_name(66, 0x10, 11).as_deref(), Some("1b"));
        // In High profiles constraint_set3 means "intra", not level 1b.
        assert_eq!(avc_level_name(100, 0x10, 11).as_deref(), Some("1.1"));
        assert_eq!(avc_level_name(100, 0, 0), None);
        assert_eq!(avc_profile_name(110), "High 10");
        assert_eq!(avc_profile_name(88), "Extended");
        assert_eq!(avc_profile_name(200), "200");
    }

    #[test]
    fn h264_record_without_sps_keeps_profile_and_level() {
        let payload = hex("1700000000016400 1fff e0".replace(' ', "").as_str());
        assert_eq!(
            video_details(&payload),
            Some(video(VideoCodec::Avc, "High", "3.1", None, None))
        );
        // An SPS shorter than its length field: profile and level, no size.
        let mut truncated = hex(AVC_720P);
        truncated.truncate(20);
        assert_eq!(
            video_details(&truncated),
            Some(video(VideoCodec::Avc, "High", "3.1", None, None))
        );
        // A PPS where the SPS should be is not read as one.
        let wrong_nal = hex("17000000000164001fffe1000668ebe3cb22c0");
        assert_eq!(video_details(&wrong_nal).unwrap().width, None);
    }

    #[test]
    fn hevc_from_x265_records_legacy_and_enhanced() {
        let cases = [
            (HEVC_720P, "Main", "3.1", (1280, 720)),
            (HEVC_1080P, "Main", "4", (1920, 1080)),
            (HEVC_1366_MAIN10, "Main 10", "4", (1366, 768)),
        ];
        for (record, profile, level, size) in cases {
            let record = hex(record);
            assert_eq!(
                video_details(&legacy_sequence_header(12, &record)),
                Some(video(
                    VideoCodec::LegacyHevc,
                    profile,
                    level,
                    Some(size),
                    None
                )),
                "legacy {profile} {size:?}"
            );
            assert_eq!(
                video_details(&enhanced_sequence_start(b"hvc1", &record)),
                Some(video(VideoCodec::Hevc, profile, level, Some(size), None)),
                "enhanced {profile} {size:?}"
            );
        }
    }

    #[test]
    fn hevc_record_details() {
        // avgFrameRate (frames per 256 s) is used when an encoder fills it in.
        let mut record = hex(HEVC_720P);
        record[19..21].copy_from_slice(&(30u16 * 256).to_be_bytes());
        let details = video_details(&enhanced_sequence_start(b"hvc1", &record)).unwrap();
        assert_eq!(details.fps, Some(30.0));
        // Profile 0 with compatibility flags falls back to the flags (bit 1: Main).
        assert_eq!(hevc_profile_name(0, 0x6000_0000), "Main");
        assert_eq!(hevc_profile_name(4, 0), "RExt");
        assert_eq!(hevc_profile_name(3, 0), "Main Still Picture");
        assert_eq!(hevc_level_name(153).as_deref(), Some("5.1"));
        assert_eq!(hevc_level_name(186).as_deref(), Some("6.2"));
        assert_eq!(hevc_level_name(124), None);
        // A record cut before its arrays: profile and level only.
        let short = &hex(HEVC_1080P)[..23];
        assert_eq!(
            video_details(&enhanced_sequence_start(b"hvc1", short)),
            Some(video(VideoCodec::Hevc, "Main", "4", None, None))
        );
    }

    #[test]
    fn av1_from_config_records() {
        let cases = [
            (AV1_720P, "3.1", (1280, 720)),
            (AV1_1080P, "4.0", (1920, 1080)),
        ];
        for (record, level, size) in cases {
            let record = hex(record);
            assert_eq!(
                video_details(&enhanced_sequence_start(b"av01", &record)),
                Some(video(VideoCodec::Av1, "Main", level, Some(size), None))
            );
            // Without the configOBUs: profile and level only.
            assert_eq!(
                video_details(&enhanced_sequence_start(b"av01", &record[..4])),
                Some(video(VideoCodec::Av1, "Main", level, None, None))
            );
            // Bare OBUs, with no record around them.
            assert_eq!(
                video_details(&enhanced_sequence_start(b"av01", &record[4..])),
                Some(video(VideoCodec::Av1, "Main", level, Some(size), None))
            );
        }
        // MPEG2TSSequenceStart carries the AV1 video descriptor instead.
        let descriptor = hex("80048128 0c00".replace(' ', "").as_str());
        let mut payload = vec![0x95];
        payload.extend_from_slice(b"av01");
        payload.extend_from_slice(&descriptor);
        assert_eq!(
            video_details(&payload),
            Some(video(VideoCodec::Av1, "High", "4.0", None, None))
        );
        assert_eq!(av1_level_name(23).as_deref(), Some("7.3"));
        assert_eq!(av1_level_name(31), None);
        assert_eq!(av1_profile_name(2), "Professional");
    }

    #[test]
    fn av1_sequence_header_with_timing_info() {
        // seq_profile 0, timing_info (1/30, equal_picture_interval, 1 tick per picture),
        // no decoder model, one operating point at level 8, 16-bit 1920x1080.
        let mut bits = String::new();
        bits += "000"; // seq_profile
        bits += "0"; // still_picture
        bits += "0"; // reduced_still_picture_header
        bits += "1"; // timing_info_present_flag
        bits += &format!("{:032b}", 1); // num_units_in_display_tick
        bits += &format!("{:032b}", 30); // time_scale
        bits += "1"; // equal_picture_interval
        bits += "1"; // uvlc 0: one tick per picture
        bits += "0"; // decoder_model_info_present_flag
        bits += "0"; // initial_display_delay_present_flag
        bits += "00000"; // operating_points_cnt_minus_1
        bits += "000000000000"; // operating_point_idc
        bits += "01000"; // seq_level_idx 8
        bits += "0"; // seq_tier
        bits += "1111"; // frame_width_bits_minus_1
        bits += "1111"; // frame_height_bits_minus_1
        bits += &format!("{:016b}", 1919);
        bits += &format!("{:016b}", 1079);
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let obu_payload: Vec<u8> = (0..bits.len())
            .step_by(8)
            .map(|i| u8::from_str_radix(&bits[i..i + 8], 2).unwrap())
            .collect();
        let mut obus = vec![0x0A, obu_payload.len() as u8];
        obus.extend_from_slice(&obu_payload);
        // A temporal delimiter OBU first, to be walked past.
        let record = concat(&[&[0x81, 0x08, 0x0C, 0x00], &[0x12, 0x00], &obus]);
        assert_eq!(
            video_details(&enhanced_sequence_start(b"av01", &record)),
            Some(video(
                VideoCodec::Av1,
                "Main",
                "4.0",
                Some((1920, 1080)),
                Some(30.0)
            ))
        );
    }

    #[test]
    fn vp9_config_records() {
        let boxed = hex(VP9_PROFILE0_BOX);
        let expected = video(VideoCodec::Vp9, "Profile 0", "3", None, None);
        assert_eq!(
            video_details(&enhanced_sequence_start(b"vp09", &boxed)),
            Some(expected.clone())
        );
        assert_eq!(
            video_details(&enhanced_sequence_start(b"vp09", &boxed[4..])),
            Some(expected)
        );
        let profile2 = hex(VP9_PROFILE2_BOX);
        assert_eq!(
            video_details(&enhanced_sequence_start(b"vp09", &profile2[4..])),
            Some(video(VideoCodec::Vp9, "Profile 2", "3", None, None))
        );
        // Level 0 is "unknown"; ffmpeg writes it when it does not know better.
        let unknown_level = video_details(&enhanced_sequence_start(b"vp09", &[1, 0, 0x82, 2]));
        assert_eq!(unknown_level.unwrap().level, None);
        assert_eq!(decimal_level(52, 10).as_deref(), Some("5.2"));
    }

    #[test]
    fn non_sequence_header_video_gives_the_codec() {
        // VP6 key frame, AVC coded frame, HEVC CodedFramesX.
        assert_eq!(
            video_details(&[0x14, 0, 0x12]),
            Some(VideoDetails {
                codec: Some(VideoCodec::Vp6),
                ..VideoDetails::default()
            })
        );
        assert_eq!(
            video_details(&hex("2701000000000000")).unwrap(),
            VideoDetails {
                codec: Some(VideoCodec::Avc),
                ..VideoDetails::default()
            }
        );
        let mut coded_x = vec![0x93];
        coded_x.extend_from_slice(b"hvc1");
        coded_x.push(0x26);
        assert_eq!(
            video_details(&coded_x).unwrap().codec,
            Some(VideoCodec::Hevc)
        );
        // An Enhanced RTMP command frame names no codec.
        assert_eq!(video_details(&[0x80 | (5 << 4) | 1, 1]), None);
        assert_eq!(video_details(&[]), None);
        assert_eq!(video_details(&[0x17]), None);
    }

    #[test]
    fn enhanced_video_multitrack_and_mod_ex() {
        let hd = hex(HEVC_1080P);
        let sd = hex(HEVC_720P);
        // ManyTracks, SequenceStart, shared hvc1: track 1 (720p) first, then track 0.
        let mut many = vec![0x96, 0x10];
        many.extend_from_slice(b"hvc1");
        for (id, record) in [(1u8, &sd), (0u8, &hd)] {
            many.push(id);
            many.extend_from_slice(&(record.len() as u32).to_be_bytes()[1..]);
            many.extend_from_slice(record);
        }
        let details = video_details(&many).unwrap();
        assert_eq!((details.width, details.height), (Some(1920), Some(1080)));

        // Without a track 0, the first track.
        many[6] = 2;
        many[6 + 4 + sd.len()] = 3;
        let details = video_details(&many).unwrap();
        assert_eq!((details.width, details.height), (Some(1280), Some(720)));

        // ManyTracksManyCodecs: each track names its codec; track 0 is AV1.
        let av1 = hex(AV1_720P);
        let mut mixed = vec![0x96, 0x20];
        mixed.extend_from_slice(b"hvc1");
        mixed.push(4);
        mixed.extend_from_slice(&(hd.len() as u32).to_be_bytes()[1..]);
        mixed.extend_from_slice(&hd);
        mixed.extend_from_slice(b"av01");
        mixed.push(0);
        mixed.extend_from_slice(&(av1.len() as u32).to_be_bytes()[1..]);
        mixed.extend_from_slice(&av1);
        let details = video_details(&mixed).unwrap();
        assert_eq!(details.codec, Some(VideoCodec::Av1));
        assert_eq!(details.width, Some(1280));

        // OneTrack, after a ModEx block.
        let mut one = vec![0x97, 0, 0xAA, 0x06, 0x00];
        one.extend_from_slice(b"avc1");
        one.push(7);
        one.extend_from_slice(&hex(AVC_720P)[5..]);
        let details = video_details(&one).unwrap();
        assert_eq!(details.width, Some(1280));
        assert_eq!(details.profile.as_deref(), Some("High"));

        // A second track cut short inside its header leaves the first one standing.
        let mut cut_short = vec![0x96, 0x10];
        cut_short.extend_from_slice(b"hvc1");
        cut_short.push(5);
        cut_short.extend_from_slice(&(sd.len() as u32).to_be_bytes()[1..]);
        cut_short.extend_from_slice(&sd);
        cut_short.extend_from_slice(&[0, 0]);
        assert_eq!(video_details(&cut_short).unwrap().width, Some(1280));

        // A track size beyond the payload is cut to what is there.
        let mut oversized = vec![0x96, 0x10];
        oversized.extend_from_slice(b"vp09");
        oversized.extend_from_slice(&[0, 0xFF, 0xFF, 0xFF, 0, 10]);
        assert_eq!(
            video_details(&oversized).unwrap().profile.as_deref(),
            Some("Profile 0")
        );
    }

    // Audio: FLV audio tag bodies written by ffmpeg 5.1, checked against ffprobe.

    fn audio(
        codec: AudioCodec,
        profile: Option<&str>,
        sample_rate: u32,
        channels: u8,
    ) -> AudioDetails {
        AudioDetails {
            codec: Some(codec),
            profile: profile.map(str::to_owned),
            sample_rate: Some(sample_rate),
            channels: Some(channels),
        }
    }

    #[test]
    fn aac_audio_specific_configs() {
        let cases = [
            // ffmpeg's aac encoder (with its "no SBR" sync extension, 0x2B7 + type 5 + 0).
            ("af00121056e500", "LC", 44_100, 2),
            ("af00118856e500", "LC", 48_000, 1),
            ("af0011b056e500", "LC", 48_000, 6),
            ("af00101056e500", "LC", 96_000, 2),
            ("af000a1056e500", "Main", 44_100, 2),
            // HE-AAC, explicit: type 5, 24 kHz core, stereo, 48 kHz SBR, core type 2.
            ("af002b118800", "HE-AAC", 48_000, 2),
            // HE-AACv2, explicit: type 29, 24 kHz, mono core, 48 kHz SBR; PS makes stereo.
            ("af00eb098800", "HE-AACv2", 48_000, 2),
            // HE-AAC, backward compatible: LC 24 kHz stereo + sync extension, SBR at 48 kHz.
            ("af00131056e598", "HE-AAC", 48_000, 2),
            // The same with the PS extension (0x548, 1) after it, on a mono core.
            ("af00130856e59d4880", "HE-AACv2", 48_000, 2),
            // LC with an explicit 24-bit rate (index 15): 44 100 Hz.
            ("af001780562210", "LC", 44_100, 2),
            // 7.1 (channel configuration 7).
            ("af0011b8", "LC", 48_000, 8),
        ];
        for (payload, profile, rate, channels) in cases {
            assert_eq!(
                audio_details(&hex(payload)),
                Some(audio(AudioCodec::Aac, Some(profile), rate, channels)),
                "{payload}"
            );
        }
        // Escaped object type 42 (USAC).
        let usac = audio_specific_config(&hex("f94c4000")).unwrap();
        assert_eq!(usac.profile, "xHE-AAC");
    }

    #[test]
    fn aac_frames_and_broken_configs() {
        // A raw AAC frame names the codec; its flags (always 44 kHz stereo) are not used.
        assert_eq!(
            audio_details(&hex("af01de02004c61766335392e")),
            Some(AudioDetails {
                codec: Some(AudioCodec::Aac),
                ..AudioDetails::default()
            })
        );
        // A one-byte AudioSpecificConfig: too short, codec only.
        assert_eq!(
            audio_details(&hex("af0012")).unwrap(),
            AudioDetails {
                codec: Some(AudioCodec::Aac),
                ..AudioDetails::default()
            }
        );
        // A reserved sampling frequency index (13): no rate, the rest still read.
        let reserved = audio_details(&hex("af0016900000")).unwrap();
        assert_eq!(reserved.sample_rate, None);
        assert_eq!(reserved.channels, Some(2));
        // Channel configuration 0 (a PCE would say): no channel count.
        assert_eq!(audio_details(&hex("af001200")).unwrap().channels, None);
        assert_eq!(audio_details(&[0xAF]), None);
    }

    #[test]
    fn legacy_sound_flags() {
        let cases = [
            // MP3 frames: the MPEG header's rate and mode (MPEG-1, 2 and 2.5).
            ("2ffffb906400", AudioCodec::Mp3, 44_100, 2),
            ("2afff340c400", AudioCodec::Mp3, 22_050, 1),
            ("26ffe320c400", AudioCodec::Mp3, 11_025, 1),
            // Nellymoser at 16, 8 and 22 kHz: the first two fixed by the format.
            ("42eab4bb20e6", AudioCodec::Nellymoser16k, 16_000, 1),
            ("52639472d23d", AudioCodec::Nellymoser8k, 8_000, 1),
            ("6aadd5062de7", AudioCodec::Nellymoser, 22_050, 1),
            // PCM (little endian) 22 kHz stereo, ADPCM 44 kHz stereo.
            ("3b3f003f005e", AudioCodec::PcmLe, 22_050, 2),
            ("1f800240000901", AudioCodec::Adpcm, 44_100, 2),
            // G.711 at 8 kHz although the flags say 5.5 kHz; Speex at 16 kHz although
            // ffmpeg's flags say 11 kHz.
            ("72c7e1919e9a", AudioCodec::G711A, 8_000, 1),
            ("82e5c8bab3af", AudioCodec::G711U, 8_000, 1),
            ("b630549822d2", AudioCodec::Speex, 16_000, 1),
        ];
        for (payload, codec, rate, channels) in cases {
            assert_eq!(
                audio_details(&hex(payload)),
                Some(audio(codec, None, rate, channels)),
                "{payload}"
            );
        }
        // MP3 with no frame header to read falls back on the flags.
        assert_eq!(
            audio_details(&[0x2E, 0x00]),
            Some(audio(AudioCodec::Mp3, None, 44_100, 1))
        );
        assert_eq!(
            audio_details(&[0x20]),
            Some(audio(AudioCodec::Mp3, None, 5_512, 1))
        );
        // A 48 kHz MP3 frame, which the flags cannot express.
        assert_eq!(
            audio_details(&hex("2ffffb946400")),
            Some(audio(AudioCodec::Mp3, None, 48_000, 2))
        );
        assert_eq!(audio_details(&[]), None);
    }

    fn enhanced_audio_payload(packet_type: u8, fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
        concat(&[&[0x90 | packet_type], fourcc, body])
    }

    /// OpusHead ID headers from libopus in Ogg (`-c:a libopus -ac 2` and `-ac 6`).
    const OPUS_HEAD_STEREO: &str = "4f707573486561640102380180bb0000000000";
    const OPUS_HEAD_51: &str = "4f707573486561640106380180bb00000000010402000401020305";

    #[test]
    fn enhanced_audio_sequence_starts() {
        let opus = enhanced_audio_payload(0, b"Opus", &hex(OPUS_HEAD_STEREO));
        assert_eq!(
            audio_details(&opus),
            Some(audio(AudioCodec::Opus, None, 48_000, 2))
        );
        let opus_51 = enhanced_audio_payload(0, b"Opus", &hex(OPUS_HEAD_51));
        assert_eq!(audio_details(&opus_51).unwrap().channels, Some(6));
        // An input rate of 44.1 kHz in OpusHead still decodes at 48 kHz.
        let mut head = hex(OPUS_HEAD_STEREO);
        head[12..16].copy_from_slice(&44_100u32.to_le_bytes());
        let details = audio_details(&enhanced_audio_payload(0, b"Opus", &head)).unwrap();
        assert_eq!(details.sample_rate, Some(48_000));
        // An empty Opus SequenceStart: rate known, channels not.
        let empty = audio_details(&enhanced_audio_payload(0, b"Opus", &[])).unwrap();
        assert_eq!((empty.sample_rate, empty.channels), (Some(48_000), None));

        let aac = enhanced_audio_payload(0, b"mp4a", &hex("1210"));
        assert_eq!(
            audio_details(&aac),
            Some(audio(AudioCodec::ExAac, Some("LC"), 44_100, 2))
        );

        // FLAC: "fLaC" + STREAMINFO block, from ffmpeg's flac encoder (48 kHz stereo from
        // MP4 `dfLa`, 44.1 kHz mono from a .flac file).
        let streaminfo_48k =
            hex("80000022120012000000fc0005110bb802f000003840e5f051c128e84992c0cba99724092b51");
        let flac = enhanced_audio_payload(0, b"fLaC", &concat(&[b"fLaC", &streaminfo_48k]));
        assert_eq!(
            audio_details(&flac),
            Some(audio(AudioCodec::Flac, None, 48_000, 2))
        );
        let flac_44k = hex(
            "664c6143000000221200120000044900 04de0ac440f0000033aecd36f8ab0a878da30b37b9efb6c64d51"
                .replace(' ', "")
                .as_str(),
        );
        let flac = enhanced_audio_payload(0, b"fLaC", &flac_44k);
        assert_eq!(
            audio_details(&flac),
            Some(audio(AudioCodec::Flac, None, 44_100, 1))
        );
        // Without magic or block header.
        let bare = enhanced_audio_payload(0, b"fLaC", &streaminfo_48k[4..]);
        assert_eq!(audio_details(&bare).unwrap().sample_rate, Some(48_000));
    }

    #[test]
    fn enhanced_audio_coded_frames() {
        // AC-3 5.1 and E-AC-3 stereo sync frames from ffmpeg's encoders.
        let ac3 = enhanced_audio_payload(1, b"ac-3", &hex("0b77b50b1e40ebf8403eff99"));
        assert_eq!(
            audio_details(&ac3),
            Some(audio(AudioCodec::Ac3, None, 48_000, 6))
        );
        let eac3 = enhanced_audio_payload(1, b"ec-3", &hex("0b77017f3487c00020842108"));
        assert_eq!(
            audio_details(&eac3),
            Some(audio(AudioCodec::Eac3, None, 48_000, 2))
        );
        let mp3 = enhanced_audio_payload(1, b".mp3", &hex("fffb90640000"));
        assert_eq!(
            audio_details(&mp3),
            Some(audio(AudioCodec::ExMp3, None, 44_100, 2))
        );
        // MultichannelConfig: order (1: native), channel count 6, flags.
        let multichannel = enhanced_audio_payload(4, b"Opus", &[1, 6, 0, 0, 0x06, 0x3F]);
        assert_eq!(audio_details(&multichannel).unwrap().channels, Some(6));
        // Opus frames: the codec and its fixed decode rate.
        let frame = enhanced_audio_payload(1, b"Opus", &[0xFC, 0xFF]);
        assert_eq!(
            audio_details(&frame),
            Some(AudioDetails {
                codec: Some(AudioCodec::Opus),
                sample_rate: Some(48_000),
                ..AudioDetails::default()
            })
        );
        // Truncated FourCC.
        assert_eq!(audio_details(&[0x90, b'O', b'p']), None);
    }

    #[test]
    fn enhanced_audio_multitrack() {
        // ManyTracks, SequenceStart, shared Opus: track 2 (stereo) then track 0 (5.1).
        let stereo = hex(OPUS_HEAD_STEREO);
        let surround = hex(OPUS_HEAD_51);
        let mut payload = vec![0x95, 0x10];
        payload.extend_from_slice(b"Opus");
        for (id, head) in [(2u8, &stereo), (0u8, &surround)] {
            payload.push(id);
            payload.extend_from_slice(&(head.len() as u32).to_be_bytes()[1..]);
            payload.extend_from_slice(head);
        }
        assert_eq!(audio_details(&payload).unwrap().channels, Some(6));
        // OneTrack after ModEx.
        let mut one = vec![0x97, 0, 0x55, 0x05, 0x00];
        one.extend_from_slice(b"mp4a");
        one.push(0);
        one.extend_from_slice(&hex("1188"));
        assert_eq!(
            audio_details(&one),
            Some(audio(AudioCodec::ExAac, Some("LC"), 48_000, 1))
        );
    }

    /// The `onMetaData` script tag body of an FLV written by ffmpeg 5.1 (libx264 1280x720
    /// at 30 fps, AAC 44.1 kHz stereo).
    const FFMPEG_ON_METADATA: &str = "02000a6f6e4d65746144617461080000000d00086475726174696f6e003ff1126e978d4fdf000577696474680040940000000000000006686569676874004086800000000000000d766964656f646174617261746500000000000000000000096672616d657261746500403e000000000000000c766964656f636f646563696400401c000000000000000d617564696f646174617261746500405f400000000000000f617564696f73616d706c65726174650040e5888000000000000f617564696f73616d706c6573697a65004030000000000000000673746572656f0101000c617564696f636f64656369640040240000000000000007656e636f64657202000d4c61766635392e32372e313030000866696c6573697a650040e2bdc000000000000009";

    fn ffmpeg_metadata() -> MetadataDetails {
        MetadataDetails {
            width: Some(1280),
            height: Some(720),
            fps: Some(30.0),
            video_codec_id: Some(VideoCodec::Avc),
            video_data_rate: None,
            audio_codec_id: Some(AudioCodec::Aac),
            audio_sample_rate: Some(44_100),
            audio_channels: Some(2),
            audio_data_rate: Some(125.0),
            encoder: Some("Lavf59.27.100".to_owned()),
        }
    }

    fn amf0_body(values: &[Amf0Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for value in values {
            amf0::encode(value, &mut out);
        }
        out
    }

    #[test]
    fn metadata_from_ffmpeg_flv_and_set_data_frame() {
        let body = hex(FFMPEG_ON_METADATA);
        assert_eq!(metadata_details(&body), ffmpeg_metadata());
        // As a publisher sends it: "@setDataFrame" first.
        let published = concat(&[&amf0_body(&["@setDataFrame".into()]), &body]);
        assert_eq!(metadata_details(&published), ffmpeg_metadata());
        // As an AMF3 data message (type 15) body: a 0x00 format byte first.
        let amf3_message = concat(&[&[0x00], &published]);
        assert_eq!(metadata_details(&amf3_message), ffmpeg_metadata());
    }

    #[test]
    fn metadata_from_an_obs_style_object() {
        let fourcc = |code: &[u8; 4]| f64::from(u32::from_be_bytes(*code));
        let body = amf0_body(&[
            "@setDataFrame".into(),
            "onMetaData".into(),
            Amf0Value::object([
                ("width", 1920.0.into()),
                ("height", 1080.0.into()),
                ("videocodecid", fourcc(b"hvc1").into()),
                ("videodatarate", 6000.0.into()),
                ("videoframerate", 59.94.into()),
                ("audiocodecid", fourcc(b"Opus").into()),
                ("audiosamplerate", 48_000.0.into()),
                ("audiochannels", 6.0.into()),
                ("stereo", false.into()),
                (
                    "encoder",
                    "obs-output module (libobs version 30.1.2)".into(),
                ),
            ]),
        ]);
        assert_eq!(
            metadata_details(&body),
            MetadataDetails {
                width: Some(1920),
                height: Some(1080),
                fps: Some(59.94),
                video_codec_id: Some(VideoCodec::Hevc),
                video_data_rate: Some(6000.0),
                audio_codec_id: Some(AudioCodec::Opus),
                audio_sample_rate: Some(48_000),
                audio_channels: Some(6),
                audio_data_rate: None,
                encoder: Some("obs-output module (libobs version 30.1.2)".to_owned()),
            }
        );
    }

    #[test]
    fn metadata_values_are_checked() {
        let long_encoder = "é".repeat(MAX_ENCODER_LEN);
        let body = amf0_body(&[
            "onMetaData".into(),
            Amf0Value::ecma_array([
                ("width", (-5.0).into()),
                ("height", f64::NAN.into()),
                ("framerate", 1e9.into()),
                ("videoframerate", 25.0.into()),
                ("videocodecid", "avc1".into()),
                ("audiocodecid", 1_000.0.into()),
                ("audiosamplerate", 44.1.into()),
                ("audiochannels", "two".into()),
                ("stereo", true.into()),
                ("encoder", long_encoder.as_str().into()),
            ]),
        ]);
        let meta = metadata_details(&body);
        assert_eq!((meta.width, meta.height), (None, None));
        assert_eq!(meta.fps, Some(25.0), "an absurd framerate falls back");
        assert_eq!(meta.video_codec_id, Some(VideoCodec::Avc));
        assert_eq!(
            meta.audio_codec_id, None,
            "1000 is neither an id nor a FourCC"
        );
        assert_eq!(meta.audio_sample_rate, None, "kHz is not guessed at");
        assert_eq!(meta.audio_channels, Some(2));
        let encoder = meta.encoder.unwrap();
        assert!(encoder.len() <= MAX_ENCODER_LEN);
        assert_eq!(encoder.len(), MAX_ENCODER_LEN);
        assert!(encoder.chars().all(|c| c == 'é'));

        // Not metadata, or not decodable: nothing.
        assert_eq!(
            metadata_details(&amf0_body(&[
                "onTextData".into(),
                Amf0Value::object([("width", 1.0.into())])
            ])),
            MetadataDetails::default()
        );
        assert_eq!(
            metadata_details(&amf0_body(&["onMetaData".into(), 5.0.into()])),
            MetadataDetails::default()
        );
        assert_eq!(metadata_details(&[0x02, 0x00]), MetadataDetails::default());
        assert_eq!(metadata_details(&[]), MetadataDetails::default());
        // An ECMA array without its end marker (some encoders), as the decoder allows.
        let mut unterminated = hex(FFMPEG_ON_METADATA);
        unterminated.truncate(unterminated.len() - 3);
        assert_eq!(metadata_details(&unterminated), ffmpeg_metadata());
        // Legacy audio id 2 (MP3) and video id 4 (VP6).
        let legacy = amf0_body(&[
            "onMetaData".into(),
            Amf0Value::ecma_array([("videocodecid", 4.0.into()), ("audiocodecid", 2.0.into())]),
        ]);
        let meta = metadata_details(&legacy);
        assert_eq!(meta.video_codec_id, Some(VideoCodec::Vp6));
        assert_eq!(meta.audio_codec_id, Some(AudioCodec::Mp3));
    }

    #[test]
    fn merge_prefers_headers_and_fills_from_metadata() {
        let meta = ffmpeg_metadata();
        // The header's size wins; metadata's frame rate wins over the VUI's.
        let header = video_details(&hex(AVC_1080P));
        let merged = merge(header, &meta).unwrap();
        assert_eq!(
            merged,
            video(VideoCodec::Avc, "High", "4", Some((1920, 1080)), Some(30.0))
        );
        // No sequence header yet: metadata alone.
        assert_eq!(
            merge(None, &meta),
            Some(VideoDetails {
                codec: Some(VideoCodec::Avc),
                profile: None,
                level: None,
                width: Some(1280),
                height: Some(720),
                fps: Some(30.0),
            })
        );
        // VP6 frames name the codec; size and rate come from metadata.
        let vp6 = merge(video_details(&[0x14, 0]), &meta).unwrap();
        assert_eq!(vp6.codec, Some(VideoCodec::Vp6));
        assert_eq!((vp6.width, vp6.fps), (Some(1280), Some(30.0)));
        // Header fps stays when metadata has none.
        let no_fps = MetadataDetails {
            fps: None,
            ..meta.clone()
        };
        assert_eq!(
            merge(video_details(&hex(AVC_1080P)), &no_fps).unwrap().fps,
            Some(25.0)
        );
        assert_eq!(merge(None, &MetadataDetails::default()), None);

        // Audio: the AudioSpecificConfig wins, AAC frames are filled in from metadata.
        let header = audio_details(&hex("af00118856e500"));
        assert_eq!(
            merge_audio(header, &meta),
            Some(audio(AudioCodec::Aac, Some("LC"), 48_000, 1))
        );
        let frame = audio_details(&hex("af01de02"));
        assert_eq!(
            merge_audio(frame, &meta),
            Some(audio(AudioCodec::Aac, None, 44_100, 2))
        );
        assert_eq!(merge_audio(None, &MetadataDetails::default()), None);
        assert_eq!(
            merge_audio(None, &meta),
            Some(audio(AudioCodec::Aac, None, 44_100, 2))
        );
    }

    #[test]
    fn bit_reader_skips_emulation_prevention() {
        // 00 00 03 01 reads as 00 00 01; a 03 after a single zero is data.
        let mut bits = BitReader::rbsp(&[0x00, 0x00, 0x03, 0x01, 0x00, 0x03, 0x00, 0x00, 0x03]);
        assert_eq!(bits.read_bits(24), Some(0x00_00_01));
        assert_eq!(bits.read_bits(16), Some(0x00_03));
        // 00 00 03 at the very end: the 03 is dropped and nothing follows it.
        assert_eq!(bits.read_bits(16), Some(0));
        assert_eq!(bits.read_bits(1), None);
        let mut plain = BitReader::plain(&[0x00, 0x00, 0x03]);
        assert_eq!(plain.read_bits(24), Some(3));
        // Exp-Golomb: 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3; se: 1, -1.
        let mut golomb = BitReader::plain(&[0b1010_0110, 0b0100_0100, 0b1100_0000]);
        assert_eq!(golomb.ue(), Some(0));
        assert_eq!(golomb.ue(), Some(1));
        assert_eq!(golomb.ue(), Some(2));
        assert_eq!(golomb.ue(), Some(3));
        assert_eq!(golomb.se(), Some(1));
        assert_eq!(golomb.se(), Some(-1));
        // 32 leading zeros is more than ue(v) allows.
        let mut too_long = BitReader::plain(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(too_long.ue(), None);
        let mut uvlc = BitReader::plain(&[0, 0, 0, 0, 0x80]);
        assert_eq!(uvlc.uvlc(), Some(u32::MAX));
    }

    /// Every real sample above, as the payload the relay would see.
    fn samples() -> Vec<Vec<u8>> {
        let mut samples: Vec<Vec<u8>> = [
            AVC_720P,
            AVC_1080P,
            AVC_BASELINE,
            AVC_MAIN_854,
            AVC_INTERLACED,
            AVC_444,
            AVC_422_10,
            "af00121056e500",
            "af00131056e598",
            "af00eb098800",
            "2ffffb906400",
            FFMPEG_ON_METADATA,
        ]
        .iter()
        .map(|text| hex(text))
        .collect();
        for record in [HEVC_720P, HEVC_1080P, HEVC_1366_MAIN10] {
            samples.push(legacy_sequence_header(12, &hex(record)));
            samples.push(enhanced_sequence_start(b"hvc1", &hex(record)));
        }
        for record in [AV1_720P, AV1_1080P] {
            samples.push(enhanced_sequence_start(b"av01", &hex(record)));
        }
        samples.push(enhanced_sequence_start(b"vp09", &hex(VP9_PROFILE0_BOX)));
        samples.push(enhanced_audio_payload(0, b"Opus", &hex(OPUS_HEAD_51)));
        samples.push(enhanced_audio_payload(
            1,
            b"ac-3",
            &hex("0b77b50b1e40ebf8403eff99"),
        ));
        samples.push(enhanced_audio_payload(
            1,
            b"ec-3",
            &hex("0b77017f3487c00020842108"),
        ));
        samples
    }

    fn read_everything(bytes: &[u8]) {
        let video = video_details(bytes);
        let audio = audio_details(bytes);
        let meta = metadata_details(bytes);
        if let Some(video) = &video {
            assert!(video.width.is_none_or(|w| (1..=65_536).contains(&w)));
            assert!(video.fps.is_none_or(|fps| fps > 0.0 && fps <= MAX_FPS));
        }
        assert!(
            meta.encoder
                .as_ref()
                .is_none_or(|e| e.len() <= MAX_ENCODER_LEN)
        );
        let _ = merge(video, &meta);
        let _ = merge_audio(audio, &meta);
    }

    #[test]
    fn every_truncation_of_every_sample_is_safe() {
        for sample in samples() {
            for len in 0..=sample.len() {
                read_everything(&sample[..len]);
            }
        }
        // Cut parameter sets lose the size, never more than that.
        let full = hex(AVC_720P);
        for len in 14..full.len() {
            let details = video_details(&full[..len]).unwrap();
            assert_eq!(details.profile.as_deref(), Some("High"));
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            read_everything(&bytes);
        }

        #[test]
        fn random_bodies_behind_real_headers_never_panic(
            header in prop_oneof![
                Just(vec![0x17, 0, 0, 0, 0]),
                Just(vec![0x1C, 0, 0, 0, 0]),
                Just(concat(&[&[0x90], b"hvc1"])),
                Just(concat(&[&[0x90], b"av01"])),
                Just(concat(&[&[0x95], b"av01"])),
                Just(concat(&[&[0x90], b"vp09"])),
                Just(concat(&[&[0x90], b"avc1"])),
                Just(vec![0x96, 0x10, b'h', b'v', b'c', b'1']),
                Just(vec![0x96, 0x20]),
                Just(vec![0xAF, 0]),
                Just(concat(&[&[0x90], b"Opus"])),
                Just(concat(&[&[0x90], b"fLaC"])),
                Just(concat(&[&[0x90], b"mp4a"])),
                Just(concat(&[&[0x91], b"ac-3"])),
                Just(concat(&[&[0x91], b"ec-3"])),
                Just(concat(&[&[0x91], b".mp3"])),
                Just(vec![0x95, 0x10, b'O', b'p', b'u', b's']),
                Just(vec![0x2F]),
                Just(amf0_body(&["onMetaData".into()])),
            ],
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            read_everything(&concat(&[&header, &body]));
        }

        #[test]
        fn mutated_samples_never_panic(
            index in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let samples = samples();
            let mut sample = samples[index.index(samples.len())].clone();
            for (position, value) in flips {
                let at = position.index(sample.len());
                sample[at] = value;
            }
            let len = cut.index(sample.len() + 1);
            read_everything(&sample[..len]);
        }
    }
}
