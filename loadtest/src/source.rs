//! What a publisher sends: a synthetic H.264 + AAC stream made up on the fly, or a real FLV
//! file looped at real-time pace.
//!
//! Either way a source hands out [`Frame`]s in timestamp order. A frame of AVC video gets
//! its marker (sequence number and send time, `marker.rs`) only when the publisher is about
//! to write it, so the send time is as close to the socket as it can be.
//!
//! The synthetic stream: 256x144 flat-grey H.264 (`h264.rs`) at the requested frame rate,
//! an IDR picture every GOP, and silent AAC-LC stereo at 48 kHz (1024 samples a frame).
//! Filler NAL units bring each picture up to the requested bitrate: keyframes are 3 times
//! the average picture, and the P pictures of the GOP share the rest, the way a real
//! encoder's output is shaped.
//!
//! With `--multitrack` the synthetic stream is E-RTMP v2 multitrack instead: two H.264
//! video tracks and two AAC audio tracks, each with its own sequence numbers
//! (`multitrack.rs`); the pictures of both video tracks share the bitrate.
//!
//! The file source: every tag of the file is loaded once; the metadata and the first audio
//! and video sequence headers are sent at the start, the other tags then play in a loop,
//! each loop shifted by the file's length so timestamps keep increasing.

use std::path::Path;

use bytes::Bytes;
use shardcast::media::codec::{VideoCodec, inspect_audio, inspect_video};
use shardcast::media::flv::{FlvReader, TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT_DATA, TAG_TYPE_VIDEO};
use shardcast::rtmp::MediaKind;
use shardcast::rtmp::amf0::{self, Amf0Value};

use crate::{h264, marker, multitrack};

/// One media message, not yet stamped.
pub struct Frame {
    pub kind: MediaKind,
    pub timestamp: u32,
    body: FrameBody,
}

enum FrameBody {
    /// Sent as it is (audio, and video the marker cannot go into).
    Plain(Bytes),
    /// An AVC NALU packet: the marker SEI goes between the FLV header and the NAL units.
    Avc {
        flv_header: [u8; 5],
        nal_length_size: usize,
        nal_units: Bytes,
    },
    /// One picture of every video track of a multitrack stream: each track's body gets
    /// its own marker (`multitrack.rs`).
    MultitrackVideo {
        keyframe: bool,
        tracks: Vec<(u8, Bytes)>,
    },
}

impl Frame {
    /// Whether this frame will carry a marker, and so takes a sequence number.
    pub fn takes_marker(&self) -> bool {
        matches!(
            self.body,
            FrameBody::Avc { .. } | FrameBody::MultitrackVideo { .. }
        )
    }

    /// The payload to send, with the marker for `seq` and `send_us` when it takes one.
    pub fn into_payload(self, seq: u64, send_us: u64) -> Bytes {
        match self.body {
            FrameBody::Plain(bytes) => bytes,
            FrameBody::Avc {
                flv_header,
                nal_length_size,
                nal_units,
            } => marker::stamp_avc(flv_header, nal_length_size, seq, send_us, &nal_units),
            FrameBody::MultitrackVideo { keyframe, tracks } => {
                multitrack::video_frame(keyframe, &tracks, seq, send_us)
            }
        }
    }
}

/// A source of media for one publisher.
pub enum Source {
    Synthetic(SyntheticSource),
    File(FileSource),
}

impl Source {
    /// `onMetaData` properties, sent before anything else.
    pub fn metadata(&self) -> Vec<(String, Amf0Value)> {
        match self {
            Source::Synthetic(s) => s.metadata(),
            Source::File(f) => f.metadata.clone(),
        }
    }

    /// Decoder configuration, sent at timestamp 0 before the first frame.
    pub fn sequence_headers(&self) -> Vec<(MediaKind, Bytes)> {
        match self {
            Source::Synthetic(s) => s.sequence_headers(),
            Source::File(f) => f.sequence_headers.clone(),
        }
    }

    pub fn next_frame(&mut self) -> Frame {
        match self {
            Source::Synthetic(s) => s.next_frame(),
            Source::File(f) => f.next_frame(),
        }
    }
}

/// Settings of the synthetic stream.
#[derive(Clone, Copy, Debug)]
pub struct SyntheticSettings {
    /// Total bits per second, video and audio.
    pub bitrate: u64,
    pub fps: u32,
    /// Keyframe interval in milliseconds.
    pub gop_ms: u32,
    /// E-RTMP multitrack: two video and two audio tracks (`--multitrack`).
    pub multitrack: bool,
}

const AUDIO_RATE: u32 = 48_000;
const AUDIO_FRAME_SAMPLES: u32 = 1024;
/// AudioSpecificConfig: AAC-LC (2), 48 kHz (index 3), 2 channels.
const AAC_CONFIG: [u8; 2] = [0x11, 0x90];
/// One AAC-LC raw data block of stereo silence: a channel pair element whose two channels
/// have no scale factor bands (max_sfb 0), then END. 55 bits, padded to 7 bytes.
const AAC_SILENT_FRAME: [u8; 7] = silent_cpe();
/// FLV audio header byte: AAC (10), "44 kHz" (3, always for AAC), 16-bit, stereo.
const FLV_AAC: u8 = 0xAF;

const fn silent_cpe() -> [u8; 7] {
    // id_syn_ele CPE (001), element_instance_tag 0 (0000), common_window 0 (0), then per
    // channel: global_gain 100 (8 bits), ics_reserved_bit 0, window_sequence 00,
    // window_shape 0, max_sfb 000000, predictor_data_present 0, pulse/tns/gain_control 000;
    // then ID_END (111).
    let mut bits: u64 = 0;
    let mut n = 0;
    // (value, width) pairs, written most significant first.
    let fields: [(u64, u32); 10] = [
        (1, 3),
        (0, 4),
        (0, 1),
        (100, 8),
        (0, 11),
        (0, 3),
        (100, 8),
        (0, 11),
        (0, 3),
        (7, 3),
    ];
    let mut i = 0;
    while i < fields.len() {
        let (value, width) = fields[i];
        bits = (bits << width) | value;
        n += width;
        i += 1;
    }
    bits <<= 56 - n;
    let b = bits.to_be_bytes();
    [b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The synthetic H.264 + AAC stream.
pub struct SyntheticSource {
    settings: SyntheticSettings,
    gop_frames: u32,
    video_index: u64,
    audio_index: u64,
    idr_count: u32,
    /// Multitrack: the audio track whose message for the current AAC frame is next.
    audio_track: usize,
}

impl SyntheticSource {
    pub fn new(settings: SyntheticSettings) -> SyntheticSource {
        let gop_frames =
            ((u64::from(settings.gop_ms) * u64::from(settings.fps)).div_ceil(1000)).max(1) as u32;
        SyntheticSource {
            settings,
            gop_frames,
            video_index: 0,
            audio_index: 0,
            idr_count: 0,
            audio_track: 0,
        }
    }

    fn metadata(&self) -> Vec<(String, Amf0Value)> {
        let n = |k: &str, v: f64| (k.to_owned(), Amf0Value::Number(v));
        vec![
            n("width", f64::from(h264::WIDTH)),
            n("height", f64::from(h264::HEIGHT)),
            n("framerate", f64::from(self.settings.fps)),
            n("videocodecid", 7.0),
            n("videodatarate", self.settings.bitrate as f64 / 1000.0),
            n("audiocodecid", 10.0),
            n("audiosamplerate", f64::from(AUDIO_RATE)),
            n("audiochannels", 2.0),
            (
                "encoder".to_owned(),
                Amf0Value::String("shardcast-load synthetic".to_owned()),
            ),
        ]
    }

    fn sequence_headers(&self) -> Vec<(MediaKind, Bytes)> {
        if self.settings.multitrack {
            let mut out = vec![(
                MediaKind::Video,
                multitrack::video_sequence_header(&h264::avc_decoder_configuration()),
            )];
            for h in multitrack::audio_sequence_headers(&AAC_CONFIG) {
                out.push((MediaKind::Audio, h));
            }
            return out;
        }
        let mut video = vec![0x17, 0, 0, 0, 0];
        video.extend_from_slice(&h264::avc_decoder_configuration());
        let audio = vec![FLV_AAC, 0, AAC_CONFIG[0], AAC_CONFIG[1]];
        vec![
            (MediaKind::Video, Bytes::from(video)),
            (MediaKind::Audio, Bytes::from(audio)),
        ]
    }

    fn video_ts(&self, index: u64) -> u64 {
        index * 1000 / u64::from(self.settings.fps)
    }

    fn audio_ts(&self, index: u64) -> u64 {
        index * u64::from(AUDIO_FRAME_SAMPLES) * 1000 / u64::from(AUDIO_RATE)
    }

    /// Target size of picture `index_in_gop`, the whole FLV payload.
    fn picture_size(&self, index_in_gop: u32) -> usize {
        let audio_bps = u64::from(AAC_SILENT_FRAME.len() as u32 + 2) * 8 * u64::from(AUDIO_RATE)
            / u64::from(AUDIO_FRAME_SAMPLES);
        let video_bps = self.settings.bitrate.saturating_sub(audio_bps);
        let average = video_bps / 8 / u64::from(self.settings.fps);
        let gop = u64::from(self.gop_frames);
        if gop == 1 {
            return average as usize;
        }
        let key = average * 3;
        if index_in_gop == 0 {
            key as usize
        } else {
            ((average * gop).saturating_sub(key) / (gop - 1)) as usize
        }
    }

    /// The length-prefixed NAL units of one picture: `slice`, then filler so that with the
    /// marker and `header` bytes before them they make about `want` bytes.
    fn nal_units(slice: &[u8], want: usize, header: usize) -> Vec<u8> {
        let mut nal_units = Vec::with_capacity(want);
        nal_units.extend_from_slice(&(slice.len() as u32).to_be_bytes());
        nal_units.extend_from_slice(slice);
        // The header, marker SEI with its length (4 + 68), the slice so far, and the
        // filler's own length field (4).
        let used = header + 4 + 68 + nal_units.len() + 4;
        if want >= used + 2 {
            let filler = h264::filler(want - used);
            nal_units.extend_from_slice(&(filler.len() as u32).to_be_bytes());
            nal_units.extend_from_slice(&filler);
        }
        nal_units
    }

    fn next_frame(&mut self) -> Frame {
        let video_ts = self.video_ts(self.video_index);
        let audio_ts = self.audio_ts(self.audio_index);
        if audio_ts < video_ts && self.settings.multitrack {
            let track = multitrack::AUDIO_TRACKS[self.audio_track];
            let seq = self.audio_index;
            self.audio_track += 1;
            if self.audio_track == multitrack::AUDIO_TRACKS.len() {
                self.audio_track = 0;
                self.audio_index += 1;
            }
            return Frame {
                kind: MediaKind::Audio,
                timestamp: audio_ts as u32,
                body: FrameBody::Plain(multitrack::audio_frame(track, seq)),
            };
        }
        if audio_ts < video_ts {
            self.audio_index += 1;
            let mut payload = vec![FLV_AAC, 1];
            payload.extend_from_slice(&AAC_SILENT_FRAME);
            return Frame {
                kind: MediaKind::Audio,
                timestamp: audio_ts as u32,
                body: FrameBody::Plain(Bytes::from(payload)),
            };
        }
        let index_in_gop = (self.video_index % u64::from(self.gop_frames)) as u32;
        self.video_index += 1;
        if index_in_gop == 0 {
            self.idr_count = self.idr_count.wrapping_add(1);
        }
        let slice = h264::picture(index_in_gop, self.idr_count);
        if self.settings.multitrack {
            let tracks = multitrack::VIDEO_TRACKS.len();
            let want = self.picture_size(index_in_gop) / tracks;
            // Per track: its id and size (4), then the composition time (3).
            let nal_units = Bytes::from(Self::nal_units(&slice, want, 7));
            return Frame {
                kind: MediaKind::Video,
                timestamp: video_ts as u32,
                body: FrameBody::MultitrackVideo {
                    keyframe: index_in_gop == 0,
                    tracks: multitrack::VIDEO_TRACKS
                        .iter()
                        .map(|&id| (id, nal_units.clone()))
                        .collect(),
                },
            };
        }
        // The FLV header (5) goes before the NAL units.
        let nal_units = Self::nal_units(&slice, self.picture_size(index_in_gop), 5);
        let frame_type = if index_in_gop == 0 { 0x17 } else { 0x27 };
        Frame {
            kind: MediaKind::Video,
            timestamp: video_ts as u32,
            body: FrameBody::Avc {
                flv_header: [frame_type, 1, 0, 0, 0],
                nal_length_size: 4,
                nal_units: Bytes::from(nal_units),
            },
        }
    }
}

/// A real FLV file, looped.
#[derive(Clone)]
pub struct FileSource {
    metadata: Vec<(String, Amf0Value)>,
    sequence_headers: Vec<(MediaKind, Bytes)>,
    /// Media tags after the sequence headers: (kind, timestamp relative to the first, payload).
    tags: Vec<(MediaKind, u32, Bytes)>,
    /// How much each loop adds to the timestamps.
    loop_span: u32,
    nal_length_size: Option<usize>,
    next: usize,
    offset: u32,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource, String> {
        let data =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (_, reader) =
            FlvReader::new(Bytes::from(data)).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut metadata = Vec::new();
        let mut video_header: Option<Bytes> = None;
        let mut audio_header: Option<Bytes> = None;
        let mut tags = Vec::new();
        for tag in reader {
            let tag = tag.map_err(|e| format!("{}: {e}", path.display()))?;
            match tag.tag_type {
                TAG_TYPE_SCRIPT_DATA if metadata.is_empty() => {
                    if let Ok(values) = amf0::decode_all(&tag.payload)
                        && values.first().and_then(Amf0Value::as_str) == Some("onMetaData")
                    {
                        metadata = values
                            .get(1)
                            .and_then(Amf0Value::properties)
                            .map(<[_]>::to_vec)
                            .unwrap_or_default();
                    }
                }
                TAG_TYPE_VIDEO => {
                    let info = inspect_video(&tag.payload);
                    if info.is_some_and(|i| i.is_sequence_header) {
                        video_header.get_or_insert(tag.payload);
                    } else if info.is_some_and(|i| i.is_sequence_end) {
                        // ffmpeg ends its files with one; looping on, the stream does not end.
                    } else {
                        tags.push((MediaKind::Video, tag.timestamp, tag.payload));
                    }
                }
                TAG_TYPE_AUDIO => {
                    let info = inspect_audio(&tag.payload);
                    if info.is_some_and(|i| i.is_sequence_header) {
                        audio_header.get_or_insert(tag.payload);
                    } else {
                        tags.push((MediaKind::Audio, tag.timestamp, tag.payload));
                    }
                }
                _ => {}
            }
        }
        if tags.is_empty() {
            return Err(format!("{}: no audio or video tags", path.display()));
        }
        tags.sort_by_key(|t| t.1);
        let first = tags[0].1;
        for t in &mut tags {
            t.1 -= first;
        }
        let last = tags.last().map_or(0, |t| t.1);
        let video_count = tags.iter().filter(|t| t.0 == MediaKind::Video).count() as u32;
        // One frame interval past the last tag, so the loop does not repeat a timestamp.
        let gap = if video_count > 1 {
            (last / (video_count - 1)).max(1)
        } else {
            33
        };
        // AVC with an avcC record: the marker can go in, with the file's NAL length size.
        let nal_length_size = video_header.as_ref().and_then(|h| {
            let info = inspect_video(h)?;
            let length_size = usize::from(h.get(9)? & 3) + 1;
            (info.codec == VideoCodec::Avc && !info.enhanced).then_some(length_size)
        });
        let mut sequence_headers = Vec::new();
        if let Some(h) = video_header {
            sequence_headers.push((MediaKind::Video, h));
        }
        if let Some(h) = audio_header {
            sequence_headers.push((MediaKind::Audio, h));
        }
        Ok(FileSource {
            metadata,
            sequence_headers,
            tags,
            loop_span: last + gap,
            nal_length_size,
            next: 0,
            offset: 0,
        })
    }

    /// Whether video frames from this file carry markers (AVC only).
    pub fn has_markers(&self) -> bool {
        self.nal_length_size.is_some()
    }

    fn next_frame(&mut self) -> Frame {
        if self.next == self.tags.len() {
            self.next = 0;
            self.offset = self.offset.wrapping_add(self.loop_span);
        }
        let (kind, ts, payload) = self.tags[self.next].clone();
        self.next += 1;
        let timestamp = self.offset.wrapping_add(ts);
        let body = match (kind, self.nal_length_size) {
            (MediaKind::Video, Some(nal_length_size))
                if payload.len() > 5 && payload[1] == 1 && payload[0] & 0x0F == 7 =>
            {
                let mut flv_header = [0; 5];
                flv_header.copy_from_slice(&payload[..5]);
                FrameBody::Avc {
                    flv_header,
                    nal_length_size,
                    nal_units: payload.slice(5..),
                }
            }
            _ => FrameBody::Plain(payload),
        };
        Frame {
            kind,
            timestamp,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_aac_frame_bits() {
        // 001 0000 0 | 01100100 | 00000000000 000 | 01100100 | 00000000000 000 | 111
        assert_eq!(AAC_SILENT_FRAME, [0x20, 0x64, 0x00, 0x01, 0x90, 0x00, 0x0E]);
    }

    #[test]
    fn synthetic_stream_hits_its_bitrate() {
        let mut source = SyntheticSource::new(SyntheticSettings {
            bitrate: 2_500_000,
            fps: 30,
            gop_ms: 2000,
            multitrack: false,
        });
        let mut bytes = 0;
        let mut keyframes = 0;
        let mut seq = 0;
        loop {
            let frame = source.next_frame();
            if frame.timestamp >= 10_000 {
                break;
            }
            let kind = frame.kind;
            let payload = frame.into_payload(seq, 0);
            seq += 1;
            if kind == MediaKind::Video && inspect_video(&payload).unwrap().is_keyframe() {
                keyframes += 1;
            }
            bytes += payload.len();
        }
        let bps = bytes as f64 * 8.0 / 10.0;
        assert!((bps - 2_500_000.0).abs() < 50_000.0, "{bps} bit/s");
        assert_eq!(keyframes, 5);
    }
}
