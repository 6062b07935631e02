//! Writing FLV recordings: the file header, tags built around payloads the relay already
//! holds, and the `onMetaData` a closed recording gets with its duration and keyframe index.
//!
//! A recording is written as it comes: the file header, the publisher's `onMetaData`, the
//! codec headers, then one tag per frame. Each tag's 11-byte header and 4-byte back pointer
//! are new bytes, but its payload is a slice of the frame's shared buffer, so recording a
//! stream copies no media on the shard (the writer thread's `write` is the one copy, into
//! the page cache).
//!
//! Players seek in an FLV file with the index yamdi and FLVTool2 put in `onMetaData`:
//! `keyframes: {times: [s...], filepositions: [byte...]}`, plus `duration`. Neither is
//! known until the file ends, and the metadata tag sits at the file's start, so on close
//! the writer rewrites the file with [`indexed_metadata`] in place of the original tag
//! (`src/net/record_writer.rs`). Until then, and if that never happens (a crash), the file
//! is a plain, valid, unindexed FLV, which every player still plays from the start.

use bytes::{BufMut, BytesMut};

use super::flv::{BACK_POINTER_LEN, TAG_HEADER_LEN};
use crate::rtmp::amf0::{self, Amf0Value};

/// The 9-byte file header and `PreviousTagSize0`.
pub const FILE_HEADER_LEN: u64 = 13;

/// The FLV file header (signature, version, audio/video flags) and `PreviousTagSize0`.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Appends a tag header for `data_len` bytes of `tag_type` at `timestamp` to `out`.
pub fn put_tag_header(out: &mut BytesMut, tag_type: u8, data_len: usize, timestamp: u32) {
    out.put_u8(tag_type);
    out.put_uint(data_len as u64 & 0x00FF_FFFF, 3);
    out.put_uint(u64::from(timestamp & 0x00FF_FFFF), 3);
    out.put_u8((timestamp >> 24) as u8);
    out.put_uint(0, 3);
}

/// Appends the back pointer of a tag holding `data_len` bytes.
pub fn put_back_pointer(out: &mut BytesMut, data_len: usize) {
    out.put_u32((TAG_HEADER_LEN + data_len) as u32);
}

/// The bytes a tag of `data_len` data bytes takes in the file, back pointer included.
pub fn tag_len(data_len: usize) -> u64 {
    (TAG_HEADER_LEN + data_len + BACK_POINTER_LEN) as u64
}

/// One whole tag (header, data, back pointer), for small tags such as metadata.
pub fn tag(tag_type: u8, timestamp: u32, data: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(TAG_HEADER_LEN + data.len() + BACK_POINTER_LEN);
    put_tag_header(&mut out, tag_type, data.len(), timestamp);
    out.put_slice(data);
    put_back_pointer(&mut out, data.len());
    out
}

/// A keyframe of a recording: its time from the file's start and its byte position
/// counted from the end of the original metadata tag (where the rewritten file's media
/// begin too, after the new metadata tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keyframe {
    pub time_ms: u32,
    pub offset: u64,
}

/// The properties of the publisher's `onMetaData` body (`"onMetaData", {...}`), or none
/// when it is absent or not AMF0 we understand. Hostile input: errors just mean "none".
fn metadata_properties(original: &[u8]) -> Vec<(String, Amf0Value)> {
    let Ok(values) = amf0::decode_up_to(original, 3) else {
        return Vec::new();
    };
    values
        .into_iter()
        .find_map(|v| match v {
            Amf0Value::EcmaArray(p) | Amf0Value::Object(p) => Some(p),
            _ => None,
        })
        .unwrap_or_default()
}

/// The body of the `onMetaData` tag a closed recording gets: the publisher's own
/// properties (minus the ones recomputed here), then `duration` (seconds), `filesize`,
/// `lastkeyframetimestamp` and the `keyframes` index. Positions in the index are absolute:
/// the file header, then this tag, then the media, whose offsets `keyframes` holds
/// relative to the media's start. `media_len` is the media's length in bytes.
pub fn indexed_metadata(
    original: &[u8],
    duration_ms: u32,
    media_len: u64,
    keyframes: &[Keyframe],
) -> Vec<u8> {
    const OURS: [&str; 5] = [
        "duration",
        "filesize",
        "keyframes",
        "hasKeyframes",
        "lastkeyframetimestamp",
    ];
    let mut properties: Vec<(String, Amf0Value)> = metadata_properties(original)
        .into_iter()
        .filter(|(k, _)| !OURS.contains(&k.as_str()))
        .collect();
    let build = |properties: &mut Vec<(String, Amf0Value)>, media_start: u64| {
        let mut p = properties.clone();
        p.push((
            "duration".into(),
            Amf0Value::Number(duration_ms as f64 / 1000.0),
        ));
        p.push((
            "filesize".into(),
            Amf0Value::Number((media_start + media_len) as f64),
        ));
        p.push((
            "hasKeyframes".into(),
            Amf0Value::Boolean(!keyframes.is_empty()),
        ));
        p.push((
            "lastkeyframetimestamp".into(),
            Amf0Value::Number(keyframes.last().map_or(0.0, |k| k.time_ms as f64 / 1000.0)),
        ));
        let times = keyframes
            .iter()
            .map(|k| Amf0Value::Number(k.time_ms as f64 / 1000.0))
            .collect();
        let positions = keyframes
            .iter()
            .map(|k| Amf0Value::Number((media_start + k.offset) as f64))
            .collect();
        p.push((
            "keyframes".into(),
            Amf0Value::Object(vec![
                ("times".into(), Amf0Value::StrictArray(times)),
                ("filepositions".into(), Amf0Value::StrictArray(positions)),
            ]),
        ));
        let mut out = Vec::new();
        amf0::encode(&Amf0Value::String("onMetaData".into()), &mut out);
        amf0::encode(&Amf0Value::EcmaArray(p), &mut out);
        out
    };
    // Every number is 8 bytes whatever its value, so the body's length does not depend on
    // the positions in it: build once to learn where the media start, then for real.
    let probe = build(&mut properties, 0);
    let media_start = FILE_HEADER_LEN + tag_len(probe.len());
    build(&mut properties, media_start)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::media::flv::{FlvReader, TAG_TYPE_SCRIPT_DATA};

    #[test]
    fn the_index_points_at_the_keyframes_of_the_rewritten_file() {
        let mut original = Vec::new();
        amf0::encode(&Amf0Value::String("onMetaData".into()), &mut original);
        amf0::encode(
            &Amf0Value::EcmaArray(vec![
                ("width".into(), Amf0Value::Number(640.0)),
                ("duration".into(), Amf0Value::Number(0.0)),
            ]),
            &mut original,
        );
        // Media: two video tags, keyframes at media offsets 0 and tag_len(3).
        let media = [tag(9, 0, &[0x17, 1, 0]), tag(9, 2000, &[0x17, 1, 1])].concat();
        let keyframes = [
            Keyframe {
                time_ms: 0,
                offset: 0,
            },
            Keyframe {
                time_ms: 2000,
                offset: tag_len(3),
            },
        ];
        let body = indexed_metadata(&original, 2040, media.len() as u64, &keyframes);
        let mut file = file_header(false, true).to_vec();
        file.extend_from_slice(&tag(TAG_TYPE_SCRIPT_DATA, 0, &body));
        file.extend_from_slice(&media);
        let values = amf0::decode_all(&body).unwrap();
        let meta = &values[1];
        assert_eq!(meta.get("width").and_then(Amf0Value::as_f64), Some(640.0));
        assert_eq!(meta.get("duration").and_then(Amf0Value::as_f64), Some(2.04));
        assert_eq!(
            meta.get("filesize").and_then(Amf0Value::as_f64),
            Some(file.len() as f64)
        );
        let Some(Amf0Value::StrictArray(positions)) =
            meta.get("keyframes").and_then(|k| k.get("filepositions"))
        else {
            panic!("no filepositions in {meta:?}");
        };
        let (_, reader) = FlvReader::new(Bytes::from(file.clone())).unwrap();
        let tags: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(tags.len(), 3);
        for (i, p) in positions.iter().enumerate() {
            let at = p.as_f64().unwrap() as usize;
            assert_eq!(file[at], 9, "position {i} is a video tag");
            assert_eq!(&file[at + 11..at + 13], &[0x17, 1]);
        }
    }

    #[test]
    fn hostile_metadata_is_just_left_out() {
        let body = indexed_metadata(&[0x08, 0xFF, 0xFF], 0, 0, &[]);
        let values = amf0::decode_all(&body).unwrap();
        assert_eq!(
            values[1].get("hasKeyframes"),
            Some(&Amf0Value::Boolean(false))
        );
    }
}
