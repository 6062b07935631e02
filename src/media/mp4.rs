//! MP4 files as video on demand: the `moov` box's sample tables turned into a [`VodIndex`],
//! so an MP4 plays through the same state machine as an FLV.
//!
//! An MP4 keeps its media in `mdat` and says where each sample is in `moov` (at the start
//! of a "faststart" file, at the end of one ffmpeg wrote straight): per track, the sample
//! sizes (`stsz`), how samples are grouped into chunks (`stsc`) and where chunks start
//! (`stco`/`co64`), the decode durations (`stts`) and composition offsets (`ctts`), and
//! which samples are keyframes (`stss`). Flattening those gives each sample's offset, size,
//! time and key flag; the codec configuration (`avcC`, `hvcC`, the AAC
//! AudioSpecificConfig inside `esds`) becomes the FLV sequence header, and each sample gets
//! the few FLV header bytes in front ([`Framing`]), which is all RTMP needs.
//!
//! Only `moov` is read into memory (capped); `mdat` is skipped by seeking. The file is
//! hostile input: every count is checked against the bytes that hold it and against
//! [`MAX_SAMPLES`], and a malformed box ends parsing with an error, never a panic. Edit
//! lists are ignored (timestamps are the decode times), fragmented MP4 is not supported.

use std::io::{Read, Seek, SeekFrom};

use bytes::{BufMut, Bytes, BytesMut};

use super::vod_index::{
    Framing, IndexError, MAX_HEADER_BYTES, MAX_SAMPLES, Sample, SampleKind, VodIndex, with_duration,
};

/// The largest `moov` read (a few hours of samples need a few MB).
pub const MAX_MOOV_BYTES: u64 = 64 << 20;

/// The boxes directly inside `data`: (type, body). Stops at the first malformed header.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes(data[..4].try_into().ok()?) as u64;
        let kind: [u8; 4] = data[4..8].try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8, data.len() as u64),
            1 => {
                let large = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
                (16, large)
            }
            n => (8, n),
        };
        if size < header as u64 || size > data.len() as u64 {
            data = &[];
            return None;
        }
        let body = &data[header..size as usize];
        data = &data[size as usize..];
        Some((kind, body))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// A full box's table: `entry_count` entries of `width` bytes after version/flags (and
/// `skip` more bytes), checked against the body's length.
fn table(body: &[u8], skip: usize, width: usize) -> Result<(usize, &[u8]), IndexError> {
    let count = u32_at(body, 4 + skip).ok_or("short table")? as usize;
    let start = 8 + skip;
    let need = count.checked_mul(width).ok_or("table too large")?;
    let rows = body
        .get(start..start.checked_add(need).ok_or("table too large")?)
        .ok_or("table longer than its box")?;
    if count > MAX_SAMPLES {
        return Err(format!("a table of more than {MAX_SAMPLES} entries"));
    }
    Ok((count, rows))
}

struct Track {
    kind: SampleKind,
    framing: Framing,
    header: Option<Bytes>,
    samples: Vec<Sample>,
}

/// Builds the index of an MP4 file of `len` bytes.
pub fn index_mp4<R: Read + Seek>(mut file: R, len: u64) -> Result<VodIndex, IndexError> {
    let io = |e: std::io::Error| format!("read failed: {e}");
    let mut pos = 0u64;
    let mut moov = None;
    while pos + 8 <= len {
        file.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut head = [0u8; 16];
        file.read_exact(&mut head[..8]).map_err(io)?;
        let size32 = u64::from(u32::from_be_bytes(head[..4].try_into().unwrap_or_default()));
        let (header, size) = match size32 {
            0 => (8, len - pos),
            1 => {
                file.read_exact(&mut head[8..16]).map_err(io)?;
                (
                    16,
                    u64::from_be_bytes(head[8..16].try_into().unwrap_or_default()),
                )
            }
            n => (8, n),
        };
        if size < header || pos.checked_add(size).is_none_or(|end| end > len) {
            return Err("a box runs past the end of the file".into());
        }
        if &head[4..8] == b"moov" {
            if size > MAX_MOOV_BYTES {
                return Err("moov larger than 64 MiB".into());
            }
            let mut body = vec![0u8; (size - header) as usize];
            file.seek(SeekFrom::Start(pos + header)).map_err(io)?;
            file.read_exact(&mut body).map_err(io)?;
            moov = Some(body);
            break;
        }
        pos += size;
    }
    let moov = moov.ok_or("no moov box (fragmented or truncated MP4)")?;
    let mut video = None;
    let mut audio = None;
    let mut total = 0usize;
    for (kind, body) in boxes(&moov) {
        if &kind != b"trak" {
            continue;
        }
        let Some(track) = parse_trak(body, len, MAX_SAMPLES - total)? else {
            continue;
        };
        total += track.samples.len();
        let slot = match track.kind {
            SampleKind::Video => &mut video,
            _ => &mut audio,
        };
        if slot.is_none() {
            *slot = Some(track);
        }
    }
    if video.is_none() && audio.is_none() {
        return Err("no H.264, HEVC, AAC or MP3 track".into());
    }
    let mut samples = Vec::with_capacity(total);
    let mut headers = Vec::new();
    let mut extra = Vec::new();
    let mut video_framing = Framing::Flv;
    let mut audio_framing = Framing::Flv;
    for t in [video, audio].into_iter().flatten() {
        match t.framing {
            Framing::Avc => extra.push(("videocodecid", 7.0)),
            Framing::Hevc => extra.push(("videocodecid", 12.0)),
            Framing::Aac => extra.push(("audiocodecid", 10.0)),
            Framing::Mp3 => extra.push(("audiocodecid", 2.0)),
            Framing::Flv => {}
        }
        if t.kind == SampleKind::Video {
            video_framing = t.framing;
        } else {
            audio_framing = t.framing;
        }
        if let Some(h) = t.header {
            headers.push((t.kind, h));
        }
        samples.extend(t.samples);
    }
    samples.sort_by_key(|s| (s.timestamp, s.offset));
    let duration_ms = samples.last().map_or(0, |s| s.timestamp);
    Ok(VodIndex {
        duration_ms,
        samples,
        metadata: with_duration(None, duration_ms, &extra),
        headers,
        video_framing,
        audio_framing,
        header_offsets: Vec::new(),
    })
}

/// One track's samples, or `None` for a track of another kind or codec.
fn parse_trak(trak: &[u8], file_len: u64, room: usize) -> Result<Option<Track>, IndexError> {
    let Some(mdia) = child(trak, b"mdia") else {
        return Ok(None);
    };
    let handler = child(mdia, b"hdlr").and_then(|h| h.get(8..12));
    let kind = match handler {
        Some(b"vide") => SampleKind::Video,
        Some(b"soun") => SampleKind::Audio,
        _ => return Ok(None),
    };
    let mdhd = child(mdia, b"mdhd").ok_or("no mdhd")?;
    let timescale = if mdhd.first() == Some(&1) {
        u32_at(mdhd, 20)
    } else {
        u32_at(mdhd, 12)
    }
    .filter(|&t| t > 0)
    .ok_or("bad mdhd timescale")?;
    let stbl = child(mdia, b"minf")
        .and_then(|m| child(m, b"stbl"))
        .ok_or("no stbl")?;
    let stsd = child(stbl, b"stsd").ok_or("no stsd")?;
    let Some((framing, header)) = sample_entry(stsd.get(8..).unwrap_or_default(), kind)? else {
        return Ok(None);
    };

    // Sizes.
    let stsz = child(stbl, b"stsz").ok_or("no stsz")?;
    let fixed = u32_at(stsz, 4).ok_or("short stsz")?;
    let count = u32_at(stsz, 8).ok_or("short stsz")? as usize;
    if count > room {
        return Err(format!("more than {MAX_SAMPLES} samples"));
    }
    let sizes: Vec<u32> = if fixed != 0 {
        vec![fixed; count]
    } else {
        let (n, rows) = table(stsz, 4, 4)?;
        if n != count {
            return Err("stsz count mismatch".into());
        }
        rows.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    // Chunk offsets.
    let offsets: Vec<u64> = if let Some(stco) = child(stbl, b"stco") {
        let (_, rows) = table(stco, 0, 4)?;
        rows.chunks_exact(4)
            .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    } else {
        let co64 = child(stbl, b"co64").ok_or("no stco or co64")?;
        let (_, rows) = table(co64, 0, 8)?;
        rows.chunks_exact(8)
            .map(|c| u64_at(c, 0).unwrap_or(u64::MAX))
            .collect()
    };
    let (_, stsc) = table(child(stbl, b"stsc").ok_or("no stsc")?, 0, 12)?;
    let stsc: Vec<(u32, u32)> = stsc
        .chunks_exact(12)
        .map(|c| (u32_at(c, 0).unwrap_or(0), u32_at(c, 4).unwrap_or(0)))
        .collect();
    let (_, stts) = table(child(stbl, b"stts").ok_or("no stts")?, 0, 8)?;
    let mut deltas = stts
        .chunks_exact(8)
        .flat_map(|c| {
            let n = u32_at(c, 0).unwrap_or(0);
            let d = u32_at(c, 4).unwrap_or(0);
            std::iter::repeat_n(d, n as usize)
        })
        .take(count);
    let ctts: Vec<(u32, i32)> = match child(stbl, b"ctts") {
        Some(b) => table(b, 0, 8)?
            .1
            .chunks_exact(8)
            .map(|c| (u32_at(c, 0).unwrap_or(0), u32_at(c, 4).unwrap_or(0) as i32))
            .collect(),
        None => Vec::new(),
    };
    let mut ctts_iter = ctts
        .iter()
        .flat_map(|&(n, off)| std::iter::repeat_n(off, n as usize));
    let keys: Option<Vec<u32>> = match child(stbl, b"stss") {
        Some(b) => Some(
            table(b, 0, 4)?
                .1
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        None => None,
    };

    let ms =
        |t: u64| (t.saturating_mul(1000) / u64::from(timescale)).min(u64::from(u32::MAX)) as u32;
    let mut samples = Vec::with_capacity(count);
    let mut dts = 0u64;
    let mut next_key = 0usize;
    let mut n = 0usize;
    'chunks: for (chunk_no, &chunk_offset) in offsets.iter().enumerate() {
        let chunk_no = chunk_no as u32 + 1;
        let per_chunk = stsc
            .iter()
            .rev()
            .find(|(first, _)| *first <= chunk_no)
            .map_or(0, |(_, spc)| *spc);
        let mut offset = chunk_offset;
        for _ in 0..per_chunk {
            if n == count {
                break 'chunks;
            }
            let size = sizes[n];
            let end = offset
                .checked_add(u64::from(size))
                .ok_or("sample offset overflow")?;
            if end > file_len {
                // Past the end of a truncated file: play what is there.
                break 'chunks;
            }
            let sample_no = n as u32 + 1;
            let keyframe = match &keys {
                None => true,
                Some(k) => {
                    while next_key < k.len() && k[next_key] < sample_no {
                        next_key += 1;
                    }
                    k.get(next_key) == Some(&sample_no)
                }
            };
            let cts_ticks = ctts_iter.next().unwrap_or(0);
            let cts = (i64::from(cts_ticks) * 1000 / i64::from(timescale)) as i32;
            samples.push(Sample {
                offset,
                size,
                timestamp: ms(dts),
                cts,
                kind,
                keyframe: kind != SampleKind::Video || keyframe,
            });
            dts += u64::from(deltas.next().unwrap_or(0));
            offset = end;
            n += 1;
        }
    }
    Ok(Some(Track {
        kind,
        framing,
        header,
        samples,
    }))
}

/// The first sample entry of `stsd`: how its samples are framed, and the FLV sequence header
/// from its codec configuration. `None` for a codec RTMP cannot carry here.
fn sample_entry(
    entries: &[u8],
    kind: SampleKind,
) -> Result<Option<(Framing, Option<Bytes>)>, IndexError> {
    let Some((fourcc, body)) = boxes(entries).next() else {
        return Err("empty stsd".into());
    };
    let seq = |prefix: &[u8], config: &[u8]| -> Result<Option<Bytes>, IndexError> {
        if config.len() > MAX_HEADER_BYTES {
            return Err("codec configuration larger than 1 MiB".into());
        }
        let mut b = BytesMut::with_capacity(prefix.len() + config.len());
        b.put_slice(prefix);
        b.put_slice(config);
        Ok(Some(b.freeze()))
    };
    match (kind, &fourcc) {
        (SampleKind::Video, b"avc1" | b"avc3") => {
            let config = child(body.get(78..).unwrap_or_default(), b"avcC").ok_or("no avcC")?;
            Ok(Some((Framing::Avc, seq(&[0x17, 0, 0, 0, 0], config)?)))
        }
        (SampleKind::Video, b"hvc1" | b"hev1") => {
            let config = child(body.get(78..).unwrap_or_default(), b"hvcC").ok_or("no hvcC")?;
            Ok(Some((
                Framing::Hevc,
                seq(&[0x90, b'h', b'v', b'c', b'1'], config)?,
            )))
        }
        (SampleKind::Audio, b".mp3") => Ok(Some((Framing::Mp3, None))),
        (SampleKind::Audio, b"mp4a") => {
            // QuickTime sound entries of version 1 and 2 are 16 and 36 bytes longer.
            let extra = match body.get(8..10) {
                Some([0, 1]) => 16,
                Some([0, 2]) => 36,
                _ => 0,
            };
            let esds = body
                .get(28 + extra..)
                .and_then(|b| child(b, b"esds"))
                .ok_or("no esds")?;
            let (object_type, dsi) =
                parse_esds(esds.get(4..).unwrap_or_default()).ok_or("malformed esds")?;
            match object_type {
                0x40 | 0x66 | 0x67 | 0x68 => Ok(Some((Framing::Aac, seq(&[0xAF, 0], dsi)?))),
                0x69 | 0x6B => Ok(Some((Framing::Mp3, None))),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// A descriptor: (tag, body), and what follows it.
fn descriptor(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let b = *data.get(i)?;
        len = (len << 7) | usize::from(b & 0x7F);
        i += 1;
        if b & 0x80 == 0 || i > 4 {
            break;
        }
    }
    let body = data.get(i..i.checked_add(len)?)?;
    Some((tag, body, &data[i + len..]))
}

/// The object type and decoder-specific info (the AAC AudioSpecificConfig) of an `esds`.
fn parse_esds(data: &[u8]) -> Option<(u8, &[u8])> {
    let (tag, es, _) = descriptor(data)?;
    if tag != 3 {
        return None;
    }
    let flags = *es.get(2)?;
    let mut at = 3;
    if flags & 0x80 != 0 {
        at += 2;
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*es.get(at)?);
    }
    if flags & 0x20 != 0 {
        at += 2;
    }
    let (tag, dc, _) = descriptor(es.get(at..)?)?;
    if tag != 4 {
        return None;
    }
    let object_type = *dc.first()?;
    let dsi = match descriptor(dc.get(13..)?) {
        Some((5, dsi, _)) => dsi,
        _ => &[],
    };
    Some((object_type, dsi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn garbage_is_refused_without_panic() {
        for data in [
            &b""[..],
            b"\0\0\0\x08moov",
            b"\0\0\0\x01moov\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\0\0\0\x10ftypisom\0\0\0\0\0\0\0\x00mdat",
            b"\0\0\0\x20moov\0\0\0\x18trak\0\0\0\x10mdia\0\0\0\x08hdlr",
        ] {
            assert!(index_mp4(Cursor::new(data.to_vec()), data.len() as u64).is_err());
        }
    }

    #[test]
    fn ffmpeg_files_with_moov_at_either_end_give_the_same_index() {
        // 0.5 s of 10 fps H.264 (a keyframe every 5 frames) and AAC, remuxed from one FLV.
        let tail = include_bytes!("../../fuzz/seeds/vod_index/tiny.mp4");
        let fast = include_bytes!("../../fuzz/seeds/vod_index/tiny-faststart.mp4");
        let a = index_mp4(Cursor::new(&tail[..]), tail.len() as u64).unwrap();
        let b = index_mp4(Cursor::new(&fast[..]), fast.len() as u64).unwrap();
        assert_eq!(a.duration_ms, b.duration_ms);
        assert!((400..=520).contains(&a.duration_ms), "{}", a.duration_ms);
        assert_eq!(a.samples.len(), b.samples.len());
        assert_eq!(a.video_framing, Framing::Avc);
        assert_eq!(a.audio_framing, Framing::Aac);
        assert_eq!(a.headers.len(), 2, "avcC and the AudioSpecificConfig");
        let video: Vec<_> = a
            .samples
            .iter()
            .filter(|s| s.kind == SampleKind::Video)
            .collect();
        assert_eq!(video.len(), 5);
        assert!(video[0].keyframe && !video[1].keyframe);
        assert_eq!(
            a.start_at(300),
            0,
            "the only keyframe is at 0, with the audio there"
        );
        for s in &a.samples {
            assert!(s.offset + u64::from(s.size) <= tail.len() as u64);
        }
    }

    #[test]
    fn an_esds_gives_its_audio_specific_config() {
        let esds = [
            3, 25, 0, 1, 0, // ES_Descriptor, ES_ID 1, no flags
            4, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // DecoderConfig, AAC
            5, 2, 0x12, 0x10, // AudioSpecificConfig
            6, 1, 2,
        ];
        assert_eq!(parse_esds(&esds), Some((0x40, &[0x12, 0x10][..])));
    }
}
