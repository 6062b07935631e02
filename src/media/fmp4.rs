//! Fragmented MP4 for recordings: an init segment (`ftyp` + `moov` with `mvex`, no
//! samples), then `moof` + `mdat` fragments as media arrive.
//!
//! Why fragmented: a plain MP4 needs its sample tables (`moov`) written after the last
//! sample, so a file cut short by a crash or a full disk is unplayable. A fragmented file
//! describes each fragment's samples in the `moof` just before them, so every complete
//! fragment on disk plays, while the file grows and after a crash.
//!
//! What goes in: FLV payloads as RTMP carries them. H.264 and HEVC (legacy codec ids 7
//! and 12, Enhanced RTMP `avc1`/`hvc1`) are already length-prefixed NAL units, exactly an
//! MP4 sample; their sequence headers are the `avcC`/`hvcC` records. AAC's is the
//! AudioSpecificConfig for `esds`. So a sample's bytes are slices of the frame's buffer
//! past its FLV header, never copied here. FLV's composition time offset (CTS) becomes the
//! `trun` sample composition offset. Both tracks use a 1000 Hz timescale: the timestamps
//! are RTMP's milliseconds, so nothing is rounded twice. Other codecs get no track.
//!
//! The boxes are written by hand (a few dozen lines of big-endian fields); nothing here
//! parses hostile input beyond the FLV headers, which are length-checked.

use bytes::{BufMut, Bytes, BytesMut};

use super::track_info::{audio_details, video_details};

const TIMESCALE: u32 = 1000;
const VIDEO_TRACK: u32 = 1;
const AUDIO_TRACK: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    Video,
    Audio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VideoKind {
    Avc,
    Hevc,
}

struct Sample {
    dts: u32,
    cts_offset: i32,
    keyframe: bool,
    data: Vec<Bytes>,
    size: u32,
}

#[derive(Default)]
struct Track {
    id: u32,
    samples: Vec<Sample>,
    /// The last duration seen: the estimate for a fragment's last sample.
    last_duration: u32,
    default_duration: u32,
}

/// One file's muxer.
pub struct Fmp4Muxer {
    video: Option<(VideoKind, Track)>,
    audio: Option<Track>,
    sequence: u32,
}

/// `size`, `kind`, then what `body` writes.
fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

fn full(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    boxed(out, kind, |o| {
        o.put_u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
        body(o)
    })
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Bytes past `skip` of pieces, as slices.
fn skip_pieces(pieces: Vec<Bytes>, mut skip: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        out.push(p.slice(skip..));
        skip = 0;
    }
    out
}

/// The first few bytes of pieces (FLV headers), copied.
fn head(pieces: &[Bytes], n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    for p in pieces {
        let take = (n - v.len()).min(p.len());
        v.extend_from_slice(&p[..take]);
        if v.len() == n {
            break;
        }
    }
    v
}

/// The video codec and configuration record of an FLV video sequence header.
fn video_config(sh: &[u8]) -> Option<(VideoKind, &[u8])> {
    let first = *sh.first()?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: packet type in the low nibble (0 = SequenceStart), then FourCC.
        if first & 0x0F != 0 {
            return None;
        }
        let kind = match sh.get(1..5)? {
            b"avc1" => VideoKind::Avc,
            b"hvc1" => VideoKind::Hevc,
            _ => return None,
        };
        return Some((kind, sh.get(5..)?));
    }
    let kind = match first & 0x0F {
        7 => VideoKind::Avc,
        12 => VideoKind::Hevc,
        _ => return None,
    };
    (*sh.get(1)? == 0).then_some(())?;
    Some((kind, sh.get(5..)?))
}

impl Fmp4Muxer {
    /// A muxer for the tracks whose FLV sequence headers are given (H.264/HEVC, AAC), and
    /// the file's init segment.
    pub fn new(video_header: Option<Bytes>, audio_header: Option<Bytes>) -> (Fmp4Muxer, Bytes) {
        let video = video_header
            .as_deref()
            .and_then(video_config)
            .map(|(k, rec)| (k, rec.to_vec()));
        let audio = audio_header
            .as_deref()
            .filter(|sh| sh.len() > 2 && sh[0] >> 4 == 10 && sh[1] == 0)
            .map(|sh| sh[2..].to_vec());
        let vdetails = video_header
            .as_deref()
            .and_then(video_details)
            .unwrap_or_default();
        let adetails = audio_header
            .as_deref()
            .and_then(audio_details)
            .unwrap_or_default();
        let mut out = BytesMut::with_capacity(1024);
        boxed(&mut out, b"ftyp", |o| {
            o.put_slice(b"isom");
            o.put_u32(0x200);
            for b in [b"isom", b"iso6", b"mp41"] {
                o.put_slice(b);
            }
            if video.as_ref().is_some_and(|(k, _)| *k == VideoKind::Avc) {
                o.put_slice(b"avc1");
            }
        });
        boxed(&mut out, b"moov", |o| {
            full(o, b"mvhd", 0, 0, |o| {
                o.put_u32(0);
                o.put_u32(0);
                o.put_u32(TIMESCALE);
                o.put_u32(0);
                o.put_u32(0x0001_0000);
                o.put_u16(0x0100);
                o.put_bytes(0, 10);
                MATRIX.iter().for_each(|m| o.put_u32(*m));
                o.put_bytes(0, 24);
                o.put_u32(3);
            });
            if let Some((kind, record)) = &video {
                let w = vdetails.width.unwrap_or(0).min(0xFFFF);
                let h = vdetails.height.unwrap_or(0).min(0xFFFF);
                trak(o, VIDEO_TRACK, true, w, h, |o| {
                    let (entry, config): (&[u8; 4], &[u8; 4]) = match kind {
                        VideoKind::Avc => (b"avc1", b"avcC"),
                        VideoKind::Hevc => (b"hvc1", b"hvcC"),
                    };
                    boxed(o, entry, |o| {
                        o.put_bytes(0, 6);
                        o.put_u16(1);
                        o.put_bytes(0, 16);
                        o.put_u16(w as u16);
                        o.put_u16(h as u16);
                        o.put_u32(0x0048_0000);
                        o.put_u32(0x0048_0000);
                        o.put_u32(0);
                        o.put_u16(1);
                        o.put_bytes(0, 32);
                        o.put_u16(0x18);
                        o.put_i16(-1);
                        boxed(o, config, |o| o.put_slice(record));
                    });
                });
            }
            if let Some(asc) = &audio {
                let rate = adetails.sample_rate.unwrap_or(44_100).min(0xFFFF);
                let channels = u16::from(adetails.channels.unwrap_or(2));
                trak(o, AUDIO_TRACK, false, 0, 0, |o| {
                    boxed(o, b"mp4a", |o| {
                        o.put_bytes(0, 6);
                        o.put_u16(1);
                        o.put_bytes(0, 8);
                        o.put_u16(channels);
                        o.put_u16(16);
                        o.put_u32(0);
                        o.put_u32(rate << 16);
                        full(o, b"esds", 0, 0, |o| esds(o, asc));
                    });
                });
            }
            boxed(o, b"mvex", |o| {
                for (present, id) in [
                    (video.is_some(), VIDEO_TRACK),
                    (audio.is_some(), AUDIO_TRACK),
                ] {
                    if present {
                        full(o, b"trex", 0, 0, |o| {
                            o.put_u32(id);
                            o.put_u32(1);
                            o.put_u32(0);
                            o.put_u32(0);
                            o.put_u32(0);
                        });
                    }
                }
            });
        });
        let muxer = Fmp4Muxer {
            video: video.map(|(k, _)| {
                (
                    k,
                    Track {
                        id: VIDEO_TRACK,
                        default_duration: 33,
                        ..Track::default()
                    },
                )
            }),
            audio: audio.map(|_| Track {
                id: AUDIO_TRACK,
                default_duration: 1024 * 1000 / adetails.sample_rate.unwrap_or(44_100).max(1),
                ..Track::default()
            }),
            sequence: 0,
        };
        (muxer, out.freeze())
    }

    /// One FLV audio or video payload at file time `ms`. Returns a finished fragment when
    /// this video keyframe starts a new one.
    pub fn push(
        &mut self,
        kind: SampleKind,
        ms: u32,
        keyframe: bool,
        pieces: Vec<Bytes>,
    ) -> Option<Vec<Bytes>> {
        let h = head(&pieces, 8);
        match kind {
            SampleKind::Video => {
                let (vk, _) = self.video.as_ref()?;
                let first = *h.first()?;
                let (skip, cts) = if first & 0x80 != 0 {
                    match (first & 0x0F, h.get(1..5)?) {
                        (1, _) if h.len() >= 8 => (8, i24(&h[5..8])),
                        (3, _) => (5, 0),
                        _ => return None,
                    }
                } else {
                    let legacy = match first & 0x0F {
                        7 => VideoKind::Avc,
                        12 => VideoKind::Hevc,
                        _ => return None,
                    };
                    if legacy != *vk || *h.get(1)? != 1 || h.len() < 5 {
                        return None;
                    }
                    (5, i24(&h[2..5]))
                };
                let fragment = (keyframe && self.has_samples()).then(|| self.fragment());
                let data = skip_pieces(pieces, skip);
                let size = data.iter().map(|b| b.len() as u32).sum();
                if size == 0 {
                    return fragment;
                }
                let (_, track) = self.video.as_mut()?;
                track.add(Sample {
                    dts: ms,
                    cts_offset: cts,
                    keyframe,
                    data,
                    size,
                });
                fragment
            }
            SampleKind::Audio => {
                let track = self.audio.as_mut()?;
                if h.len() < 2 || h[0] >> 4 != 10 || h[1] != 1 {
                    return None;
                }
                let data = skip_pieces(pieces, 2);
                let size = data.iter().map(|b| b.len() as u32).sum();
                if size > 0 {
                    track.add(Sample {
                        dts: ms,
                        cts_offset: 0,
                        keyframe: true,
                        data,
                        size,
                    });
                }
                None
            }
        }
    }

    fn has_samples(&self) -> bool {
        self.video
            .as_ref()
            .is_some_and(|(_, t)| !t.samples.is_empty())
            || self.audio.as_ref().is_some_and(|t| !t.samples.is_empty())
    }

    /// The file time of the oldest sample not yet in a fragment.
    pub fn buffered_since(&self) -> Option<u32> {
        let v = self
            .video
            .as_ref()
            .and_then(|(_, t)| t.samples.first().map(|s| s.dts));
        let a = self
            .audio
            .as_ref()
            .and_then(|t| t.samples.first().map(|s| s.dts));
        match (v, a) {
            (Some(v), Some(a)) => Some(v.min(a)),
            (v, a) => v.or(a),
        }
    }

    /// A fragment (`moof` + `mdat`) of every buffered sample; empty if there is none.
    pub fn fragment(&mut self) -> Vec<Bytes> {
        if !self.has_samples() {
            return Vec::new();
        }
        self.sequence += 1;
        let mut tracks: Vec<&mut Track> = Vec::new();
        if let Some((_, t)) = self.video.as_mut() {
            tracks.push(t);
        }
        if let Some(t) = self.audio.as_mut() {
            tracks.push(t);
        }
        tracks.retain(|t| !t.samples.is_empty());
        // The moof's size does not depend on the data offsets in it: write it once with
        // zeros to learn it, then with the offsets.
        let write_moof = |tracks: &[&mut Track], moof_len: u32, seq: u32| {
            let mut o = BytesMut::with_capacity(256);
            boxed(&mut o, b"moof", |o| {
                full(o, b"mfhd", 0, 0, |o| o.put_u32(seq));
                let mut offset = moof_len + 8;
                for t in tracks {
                    boxed(o, b"traf", |o| {
                        full(o, b"tfhd", 0, 0x02_0000, |o| o.put_u32(t.id));
                        full(o, b"tfdt", 1, 0, |o| o.put_u64(u64::from(t.samples[0].dts)));
                        full(o, b"trun", 1, 0x0F01, |o| {
                            o.put_u32(t.samples.len() as u32);
                            o.put_u32(offset);
                            for (i, s) in t.samples.iter().enumerate() {
                                let duration = match t.samples.get(i + 1) {
                                    Some(n) => n.dts.saturating_sub(s.dts),
                                    None if t.last_duration > 0 => t.last_duration,
                                    None => t.default_duration,
                                };
                                o.put_u32(duration);
                                o.put_u32(s.size);
                                o.put_u32(if s.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                                o.put_i32(s.cts_offset);
                            }
                        });
                    });
                    offset += t.samples.iter().map(|s| s.size).sum::<u32>();
                }
            });
            o
        };
        let probe = write_moof(&tracks, 0, self.sequence);
        let moof = write_moof(&tracks, probe.len() as u32, self.sequence);
        let data_len: u32 = tracks.iter().flat_map(|t| &t.samples).map(|s| s.size).sum();
        let mut out =
            Vec::with_capacity(2 + tracks.iter().map(|t| t.samples.len() * 2).sum::<usize>());
        let mut head = moof;
        head.put_u32(data_len + 8);
        head.put_slice(b"mdat");
        out.push(head.freeze());
        for t in tracks {
            if t.samples.len() >= 2 {
                let n = t.samples.len();
                t.last_duration = t.samples[n - 1].dts.saturating_sub(t.samples[n - 2].dts);
            }
            for s in t.samples.drain(..) {
                out.extend(s.data);
            }
        }
        out
    }

    /// The last fragment, at the end of the file.
    pub fn finish(&mut self) -> Vec<Bytes> {
        self.fragment()
    }
}

impl Track {
    fn add(&mut self, s: Sample) {
        if let Some(prev) = self.samples.last() {
            let d = s.dts.saturating_sub(prev.dts);
            if d > 0 {
                self.last_duration = d;
            }
        }
        self.samples.push(s);
    }
}

fn i24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (v << 8) >> 8
}

fn esds(o: &mut BytesMut, asc: &[u8]) {
    // ES_Descriptor { DecoderConfigDescriptor { DecoderSpecificInfo }, SLConfigDescriptor }.
    let asc_len = asc.len().min(100) as u8;
    o.put_u8(3);
    o.put_u8(3 + (2 + 13 + 2 + asc_len) + 3);
    o.put_u16(0);
    o.put_u8(0);
    o.put_u8(4);
    o.put_u8(13 + 2 + asc_len);
    o.put_u8(0x40);
    o.put_u8(0x15);
    o.put_uint(0, 3);
    o.put_u32(0);
    o.put_u32(0);
    o.put_u8(5);
    o.put_u8(asc_len);
    o.put_slice(&asc[..usize::from(asc_len)]);
    o.put_u8(6);
    o.put_u8(1);
    o.put_u8(2);
}

fn trak(o: &mut BytesMut, id: u32, video: bool, w: u32, h: u32, entry: impl FnOnce(&mut BytesMut)) {
    boxed(o, b"trak", |o| {
        full(o, b"tkhd", 0, 3, |o| {
            o.put_u32(0);
            o.put_u32(0);
            o.put_u32(id);
            o.put_u32(0);
            o.put_u32(0);
            o.put_bytes(0, 8);
            o.put_u16(0);
            o.put_u16(0);
            o.put_u16(if video { 0 } else { 0x0100 });
            o.put_u16(0);
            MATRIX.iter().for_each(|m| o.put_u32(*m));
            o.put_u32(w << 16);
            o.put_u32(h << 16);
        });
        boxed(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                o.put_u32(0);
                o.put_u32(0);
                o.put_u32(TIMESCALE);
                o.put_u32(0);
                o.put_u16(0x55C4); // "und"
                o.put_u16(0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                o.put_u32(0);
                o.put_slice(if video { b"vide" } else { b"soun" });
                o.put_bytes(0, 12);
                o.put_slice(if video {
                    b"VideoHandler\0"
                } else {
                    b"SoundHandler\0"
                });
            });
            boxed(o, b"minf", |o| {
                if video {
                    full(o, b"vmhd", 0, 1, |o| o.put_bytes(0, 8));
                } else {
                    full(o, b"smhd", 0, 0, |o| o.put_u32(0));
                }
                boxed(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        o.put_u32(1);
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                boxed(o, b"stbl", |o| {
                    full(o, b"stsd", 0, 0, |o| {
                        o.put_u32(1);
                        entry(o);
                    });
                    full(o, b"stts", 0, 0, |o| o.put_u32(0));
                    full(o, b"stsc", 0, 0, |o| o.put_u32(0));
                    full(o, b"stsz", 0, 0, |o| {
                        o.put_u32(0);
                        o.put_u32(0);
                    });
                    full(o, b"stco", 0, 0, |o| o.put_u32(0));
                });
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_describe_their_samples() {
        let (mut m, init) = Fmp4Muxer::new(
            Some(Bytes::from_static(&[
                0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0,
            ])),
            Some(Bytes::from_static(&[0xAF, 0, 0x12, 0x10])),
        );
        assert_eq!(&init[4..8], b"ftyp");
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 0x21, 0, 0, 0, 1, 0x65]);
        assert!(
            m.push(SampleKind::Video, 0, true, vec![key.clone()])
                .is_none()
        );
        m.push(
            SampleKind::Audio,
            0,
            false,
            vec![Bytes::from_static(&[0xAF, 1, 9, 9])],
        );
        m.push(
            SampleKind::Video,
            40,
            false,
            vec![Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41])],
        );
        let frag = m.push(SampleKind::Video, 80, true, vec![key]).unwrap();
        let bytes: Vec<u8> = frag.concat();
        assert_eq!(&bytes[4..8], b"moof");
        let moof_len = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
        assert_eq!(&bytes[moof_len + 4..moof_len + 8], b"mdat");
        assert_eq!(
            bytes.len(),
            moof_len + 8 + 5 + 5 + 2,
            "two video samples, one audio"
        );
        assert_eq!(m.buffered_since(), Some(80));
    }
}
