//! The index of a stored file played as video on demand: where each frame lies in the file,
//! its time, and which frames a player can start at.
//!
//! Seeking, `getStreamLength` and starting a play in the middle all need to know where the
//! keyframes are without reading the media. FLV files written by live recorders usually
//! carry no keyframe table (and one written by a tool may be wrong), so shardcast builds its
//! own: one pass over the tag headers (11 bytes per tag plus a peek at the first bytes of
//! each video tag), never the media. MP4 files have the same facts in their `moov` sample
//! tables (`mp4.rs` turns those into the same index). Either way a player plays from a
//! [`VodIndex`] alone, the same state machine for both containers.
//!
//! An index is built once per file (the driver keeps it, keyed by path, size and mtime, for
//! later viewers, on any core) and shared read-only: each viewer costs only its position.
//! Building reads through any `Read + Seek` with hard caps on counts and sizes, because a
//! stored file is hostile input like any socket: a bad file is refused, never a panic.

use std::borrow::Cow;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::{BufMut, Bytes};

use super::codec::{inspect_audio, inspect_video};
use super::flv::{TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT_DATA, TAG_TYPE_VIDEO};
use crate::rtmp::amf0::{self, Amf0Value};

/// At most this many frames in one file (about 60 hours at 30 fps with audio): the index
/// costs 24 bytes a frame, so one hostile file cannot take more than ~200 MB.
pub const MAX_SAMPLES: usize = 8_000_000;
/// Sequence headers and metadata are kept in memory; larger ones are refused.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// What kind of message a frame becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    Audio,
    Video,
    /// An FLV script-data tag other than the first `onMetaData` (cue points, text).
    Data,
}

/// One frame: where its bytes are and when it plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Where its payload starts in the file.
    pub offset: u64,
    pub size: u32,
    /// Decode time in milliseconds, the file's own clock.
    pub timestamp: u32,
    /// Composition offset in milliseconds (MP4 only; an FLV tag carries its own).
    pub cts: i32,
    pub kind: SampleKind,
    /// A player can start decoding here (video), or the frame needs no other (audio, data).
    pub keyframe: bool,
}

/// How a stored sample becomes an RTMP/FLV message payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// FLV: the payload is the tag body as stored.
    Flv,
    /// MP4 H.264: `0x17/0x27, 1, cts` before the stored NAL units.
    Avc,
    /// MP4 HEVC: the Enhanced RTMP header (`CodedFrames`, `hvc1`, cts).
    Hevc,
    /// MP4 AAC: `0xAF 1` before the raw frame.
    Aac,
    /// MP4 MP3: `0x2F` before the frame.
    Mp3,
}

/// A file's index, shared read-only by every viewer of the file.
#[derive(Debug)]
pub struct VodIndex {
    pub duration_ms: u32,
    /// Every frame in play order (by timestamp, then file offset).
    pub samples: Vec<Sample>,
    /// `onMetaData` body (AMF0) for players, with `duration` filled in.
    pub metadata: Bytes,
    /// Codec sequence headers, as message payloads, sent before the first frame of every
    /// play and seek: the decoder needs them wherever it starts.
    pub headers: Vec<(SampleKind, Bytes)>,
    pub video_framing: Framing,
    pub audio_framing: Framing,
    /// Set for FLV: tags that are sequence headers are sent up front (`headers`), so the
    /// frames skip them.
    pub header_offsets: Vec<u64>,
}

impl VodIndex {
    /// The index of the frame a play or seek to `position_ms` starts at: the last video
    /// keyframe at or before it (the first frame if there is none), or for audio-only files
    /// the first frame at or after it.
    pub fn start_at(&self, position_ms: u32) -> usize {
        let has_video = self.samples.iter().any(|s| s.kind == SampleKind::Video);
        if !has_video {
            return self.samples.partition_point(|s| s.timestamp < position_ms);
        }
        let end = self.samples.partition_point(|s| s.timestamp <= position_ms);
        let key_ts = self.samples[..end]
            .iter()
            .rev()
            .find(|s| s.kind == SampleKind::Video && s.keyframe)
            .map_or(0, |s| s.timestamp);
        // With whatever else shares the keyframe's time (the audio beside it).
        self.samples.partition_point(|s| s.timestamp < key_ts)
    }

    /// Whether the frame at `i` is sent up front instead of in line.
    pub fn is_header(&self, i: usize) -> bool {
        self.samples
            .get(i)
            .is_some_and(|s| self.header_offsets.contains(&s.offset))
    }

    /// How the samples of `kind` become message payloads.
    pub fn framing(&self, kind: SampleKind) -> Framing {
        match kind {
            SampleKind::Video => self.video_framing,
            SampleKind::Audio => self.audio_framing,
            SampleKind::Data => Framing::Flv,
        }
    }

    /// The message payload of `sample`, whose stored bytes are `data`: the bytes themselves
    /// for an FLV file (a tag body is a message payload), the FLV audio/video header and
    /// the sample for an MP4 file.
    pub fn payload<'a>(&self, sample: &Sample, data: &'a [u8]) -> Cow<'a, [u8]> {
        let framing = self.framing(sample.kind);
        if let Framing::Flv = framing {
            return Cow::Borrowed(data);
        }
        let key = sample.keyframe;
        let cts = (sample.cts.clamp(-0x80_0000, 0x7F_FFFF) as u32).to_be_bytes();
        let mut out = Vec::with_capacity(data.len() + 9);
        match framing {
            Framing::Flv => {}
            Framing::Avc => {
                out.put_u8(if key { 0x17 } else { 0x27 });
                out.put_u8(1);
                out.put_slice(&cts[1..]);
            }
            Framing::Hevc => {
                out.put_u8(0x80 | if key { 0x10 } else { 0x20 } | 1);
                out.put_slice(b"hvc1");
                out.put_slice(&cts[1..]);
            }
            Framing::Aac => out.put_slice(&[0xAF, 1]),
            Framing::Mp3 => out.put_u8(0x2F),
        }
        out.put_slice(data);
        Cow::Owned(out)
    }
}

/// Why a file cannot be played.
pub type IndexError = String;

fn io_err(e: io::Error) -> IndexError {
    format!("read failed: {e}")
}

/// Builds the index of an FLV file of `len` bytes by walking its tag headers.
pub fn index_flv<R: Read + Seek>(mut file: R, len: u64) -> Result<VodIndex, IndexError> {
    let mut head = [0u8; 9];
    file.read_exact(&mut head).map_err(io_err)?;
    if &head[..3] != b"FLV" {
        return Err("not an FLV file".into());
    }
    let data_offset = u64::from(u32::from_be_bytes([head[5], head[6], head[7], head[8]]));
    if !(9..=len).contains(&data_offset) {
        return Err("bad FLV header".into());
    }
    let mut pos = data_offset + 4; // the first back pointer
    let mut samples = Vec::new();
    let mut metadata: Option<Bytes> = None;
    let mut headers: Vec<(SampleKind, Bytes)> = Vec::new();
    let mut header_offsets = Vec::new();
    let mut last_ts = 0u32;
    let mut ext_base = 0u32;
    while pos + 11 <= len {
        file.seek(SeekFrom::Start(pos)).map_err(io_err)?;
        let mut tag = [0u8; 11];
        file.read_exact(&mut tag).map_err(io_err)?;
        let tag_type = tag[0] & 0x1F;
        let size = u32::from_be_bytes([0, tag[1], tag[2], tag[3]]);
        let ts = u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]]);
        let offset = pos + 11;
        if offset + u64::from(size) > len {
            // A file cut short (a recording that was still being written): play what is
            // whole.
            break;
        }
        pos = offset + u64::from(size) + 4;
        // Timestamps that jump backwards in a file (a recorder restart) would break
        // seeking: keep them non-decreasing.
        let ts = ts.wrapping_add(ext_base);
        let ts = if ts < last_ts {
            ext_base = ext_base.wrapping_add(last_ts - ts);
            last_ts
        } else {
            ts
        };
        last_ts = ts;
        let peek_len = match tag_type {
            TAG_TYPE_VIDEO | TAG_TYPE_AUDIO => (size as usize).min(16),
            TAG_TYPE_SCRIPT_DATA if metadata.is_none() => size as usize,
            _ => 0,
        };
        if peek_len > MAX_HEADER_BYTES {
            return Err("a script tag larger than 1 MiB".into());
        }
        let mut peek = vec![0u8; peek_len];
        file.read_exact(&mut peek).map_err(io_err)?;
        let (kind, keyframe, header) = match tag_type {
            TAG_TYPE_VIDEO => match inspect_video(&peek) {
                Some(info) => (
                    SampleKind::Video,
                    info.is_keyframe(),
                    info.is_sequence_header,
                ),
                None => continue,
            },
            TAG_TYPE_AUDIO => match inspect_audio(&peek) {
                Some(info) => (SampleKind::Audio, true, info.is_sequence_header),
                None => continue,
            },
            TAG_TYPE_SCRIPT_DATA => {
                if metadata.is_none() && is_on_metadata(&peek) {
                    metadata = Some(Bytes::from(peek));
                    continue;
                }
                (SampleKind::Data, true, false)
            }
            _ => continue,
        };
        if header && !headers.iter().any(|(k, _)| *k == kind) {
            // The first sequence header of each kind: read it whole, it goes out first.
            if size as usize > MAX_HEADER_BYTES {
                return Err("a sequence header larger than 1 MiB".into());
            }
            let mut whole = vec![0u8; size as usize];
            file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
            file.read_exact(&mut whole).map_err(io_err)?;
            headers.push((kind, Bytes::from(whole)));
            header_offsets.push(offset);
        }
        if samples.len() >= MAX_SAMPLES {
            return Err(format!("more than {MAX_SAMPLES} frames"));
        }
        samples.push(Sample {
            offset,
            size,
            timestamp: ts,
            cts: 0,
            kind,
            keyframe,
        });
    }
    if samples.is_empty() {
        return Err("no audio or video in the file".into());
    }
    let duration_ms = samples.last().map_or(0, |s| s.timestamp);
    let metadata = with_duration(metadata.as_deref(), duration_ms, &[]);
    Ok(VodIndex {
        duration_ms,
        samples,
        metadata,
        headers,
        video_framing: Framing::Flv,
        audio_framing: Framing::Flv,
        header_offsets,
    })
}

fn is_on_metadata(body: &[u8]) -> bool {
    let mut input = body;
    matches!(amf0::decode(&mut input), Ok(Amf0Value::String(s)) if s == "onMetaData")
}

/// The `onMetaData` body players get: the file's own properties (if any) with `duration`
/// (seconds) set to what the index found, plus `extra` where the file has none.
pub fn with_duration(original: Option<&[u8]>, duration_ms: u32, extra: &[(&str, f64)]) -> Bytes {
    let mut props: Vec<(String, Amf0Value)> = Vec::new();
    if let Some(body) = original
        && let Ok(values) = amf0::decode_up_to(body, 2)
        && let Some(p) = values.get(1).and_then(Amf0Value::properties)
    {
        props = p.to_vec();
    }
    props.retain(|(k, _)| k != "duration");
    props.insert(
        0,
        (
            "duration".to_owned(),
            Amf0Value::Number(f64::from(duration_ms) / 1000.0),
        ),
    );
    for (k, v) in extra {
        if !props.iter().any(|(key, _)| key == k) {
            props.push(((*k).to_owned(), Amf0Value::Number(*v)));
        }
    }
    let mut out = Vec::new();
    amf0::encode(&Amf0Value::String("onMetaData".into()), &mut out);
    amf0::encode(&Amf0Value::EcmaArray(props), &mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{FlvHeader, FlvTag, FlvWriter};
    use std::io::Cursor;

    fn flv(tags: &[(u8, u32, &'static [u8])]) -> Vec<u8> {
        let mut w = FlvWriter::new(
            Vec::new(),
            FlvHeader {
                has_audio: true,
                has_video: true,
            },
        )
        .unwrap();
        for &(tag_type, timestamp, payload) in tags {
            w.write_tag(&FlvTag {
                tag_type,
                timestamp,
                payload: Bytes::from_static(payload),
            })
            .unwrap();
        }
        w.into_inner()
    }

    const KEY: &[u8] = &[0x17, 1, 0, 0, 0, 0xAA];
    const INTER: &[u8] = &[0x27, 1, 0, 0, 0, 0xBB];
    const AVC_HEADER: &[u8] = &[0x17, 0, 0, 0, 0, 1, 2, 3];
    const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];
    const AAC: &[u8] = &[0xAF, 1, 0x21];

    #[test]
    fn an_flv_without_a_keyframe_table_is_indexed_from_its_tags() {
        let data = flv(&[
            (TAG_TYPE_VIDEO, 0, AVC_HEADER),
            (TAG_TYPE_AUDIO, 0, AAC_HEADER),
            (TAG_TYPE_VIDEO, 0, KEY),
            (TAG_TYPE_AUDIO, 20, AAC),
            (TAG_TYPE_VIDEO, 1000, INTER),
            (TAG_TYPE_VIDEO, 2000, KEY),
            (TAG_TYPE_VIDEO, 3000, INTER),
        ]);
        let len = data.len() as u64;
        let index = index_flv(Cursor::new(data), len).unwrap();
        assert_eq!(index.duration_ms, 3000);
        assert_eq!(index.samples.len(), 7);
        assert_eq!(index.headers.len(), 2);
        assert!(index.is_header(0) && index.is_header(1) && !index.is_header(2));
        assert_eq!(index.start_at(0), 0);
        assert_eq!(index.samples[index.start_at(1500)].timestamp, 0);
        assert_eq!(index.start_at(2500), 5);
        assert_eq!(index.start_at(2000), 5);
        assert_eq!(index.start_at(99_999), 5);
        assert_eq!(
            index.start_at(999),
            0,
            "with everything at the keyframe's time"
        );
        let values = amf0::decode_all(&index.metadata).unwrap();
        assert_eq!(
            values[1].get("duration").and_then(Amf0Value::as_f64),
            Some(3.0)
        );
    }

    #[test]
    fn garbage_and_truncated_files_are_refused_or_cut_without_panic() {
        assert!(index_flv(Cursor::new(b"nope".to_vec()), 4).is_err());
        let data = flv(&[(TAG_TYPE_VIDEO, 0, KEY), (TAG_TYPE_VIDEO, 40, INTER)]);
        for cut in 0..data.len() {
            let _ = index_flv(Cursor::new(data[..cut].to_vec()), cut as u64);
        }
        // A length that lies (larger than the data) is an error, not a panic.
        assert!(index_flv(Cursor::new(data.clone()), data.len() as u64 * 2).is_err());
    }

    #[test]
    fn mp4_samples_get_their_flv_headers() {
        let index = VodIndex {
            duration_ms: 0,
            samples: vec![],
            metadata: Bytes::new(),
            headers: vec![],
            video_framing: Framing::Avc,
            audio_framing: Framing::Aac,
            header_offsets: vec![],
        };
        let s = Sample {
            offset: 0,
            size: 1,
            timestamp: 0,
            cts: 80,
            kind: SampleKind::Video,
            keyframe: true,
        };
        assert_eq!(&index.payload(&s, &[9])[..], &[0x17, 1, 0, 0, 80, 9]);
        let a = Sample {
            kind: SampleKind::Audio,
            ..s
        };
        assert_eq!(&index.payload(&a, &[9])[..], &[0xAF, 1, 9]);
    }
}
