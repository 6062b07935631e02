//! The relay's view into media payloads: FLV tag bodies as carried by RTMP audio (8)
//! and video (9) messages, and FLV files for recorded streams.
//!
//! An edge relay forwards media, it never transcodes it. What it must still know is read
//! from a few header bytes: which codec, whether a message is a sequence header (kept for
//! late joiners) or a keyframe (where a late joiner can start). Everything here works on
//! `bytes::Bytes` and hands out slices of it, so a message published once is forwarded to
//! every viewer without copying its payload, and every parser treats its input as hostile.
//!
//! - [`codec`]: codec, frame type and sequence-header detection, legacy and Enhanced RTMP.
//! - [`flv`]: reading and writing FLV files (header, tags, back pointers).
//! - [`flv_file`]: writing FLV recordings, and the keyframe index a closed one gets.
//! - [`fmp4`]: fragmented MP4 for recordings (init segment, moof+mdat fragments).
//! - [`multitrack`]: the tracks of an Enhanced RTMP v2 message (the multitrack layout), and
//!   its track 0 as a single-track or legacy message for viewers that need that.
//! - [`gop_cache`]: the latest group of pictures, replayed to viewers who join mid-stream.
//! - [`mp4`]: the sample tables of an MP4 file turned into a VOD index (H.264, HEVC, AAC,
//!   MP3; `moov` at either end).
//! - [`vod_index`]: where each frame of a stored file lies and which are keyframes, for
//!   video on demand (FLV indexed from its tag headers).
//! - [`track_info`]: what the admin API shows about a stream's tracks (codec, profile,
//!   level, size, frame rate; sample rate, channels), from sequence headers and metadata.

#![forbid(unsafe_code)]

pub mod codec;
pub mod flv;
pub mod flv_file;
pub mod fmp4;
pub mod gop_cache;
pub mod mp4;
pub mod multitrack;
pub mod track_info;
pub mod vod_index;
