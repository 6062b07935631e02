//! The origin side of a stream: turning what the publisher sends into frames.
//!
//! The shard that accepted a publisher is its stream's origin. For each message the
//! publisher sends, [`Origin`] decides the timestamp viewers see, asks `media/codec.rs`
//! whether it is a keyframe or a sequence header, and encodes it **once** with
//! `chunk::encode_shared` into the `Bytes` every viewer on every shard will write. It then
//! numbers the frame; the shard pushes it into its own ring and sends a handle to each
//! subscribed shard.
//!
//! Timestamps never go backwards for a viewer: each kind (audio, video, data) is kept
//! non-decreasing, and when a publisher comes back within the grace period its clock (which
//! restarts near zero) is shifted to continue where the previous one stopped.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::frame::{Frame, FrameKind, FrameTracks, Reduced, RingEntry, StreamEvent};
use crate::media::codec::{inspect_audio, inspect_video};
use crate::media::multitrack::{
    audio_tracks, track0_enhanced, track0_legacy_audio, track0_legacy_video, video_tracks,
};
use crate::rtmp::MediaKind;
use crate::rtmp::capabilities::CodecSet;
use crate::rtmp::chunk::encode_shared;
use crate::rtmp::message::MessageType;

/// One stream's ingest state on its origin shard.
#[derive(Debug)]
pub struct Origin {
    next_seq: u64,
    chunk_size: u32,
    /// Added (wrapping) to the publisher's timestamps.
    offset: u32,
    /// Set when a new publisher took over: the offset is recomputed from its first message.
    rebase: bool,
    /// Newest timestamp sent, per kind: audio, video, data.
    last: [Option<u32>; 3],
}

fn slot(kind: FrameKind) -> usize {
    match kind {
        FrameKind::Audio => 0,
        FrameKind::Video => 1,
        FrameKind::Metadata | FrameKind::Data => 2,
    }
}

impl Origin {
    /// A new origin numbering its frames from `first_seq`, encoding at `chunk_size`.
    pub fn new(first_seq: u64, chunk_size: u32) -> Origin {
        Origin {
            next_seq: first_seq,
            chunk_size,
            offset: 0,
            rebase: false,
            last: [None; 3],
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A new publisher continues this stream: shift its clock to follow the old one.
    pub fn republish(&mut self) {
        self.rebase = true;
    }

    /// A new publisher continues a stream whose newest timestamp (possibly sent by another
    /// shard's origin) was `timestamp`.
    pub fn continue_from(&mut self, timestamp: u32) {
        let newest = self.last.iter().flatten().copied().fold(timestamp, |a, b| {
            if (b.wrapping_sub(a) as i32) > 0 { b } else { a }
        });
        self.last = [Some(newest); 3];
        self.rebase = true;
    }

    fn timestamp(&mut self, kind: FrameKind, publisher_ts: u32) -> u32 {
        if self.rebase {
            self.rebase = false;
            let newest = self.last.iter().flatten().copied().max().unwrap_or(0);
            self.offset = newest.wrapping_sub(publisher_ts);
        }
        let mut ts = publisher_ts.wrapping_add(self.offset);
        let last = &mut self.last[slot(kind)];
        if let Some(prev) = *last {
            // Compare as a signed distance so a 32-bit wrap counts as going forward.
            if (ts.wrapping_sub(prev) as i32) < 0 {
                ts = prev;
            }
        }
        *last = Some(ts);
        ts
    }

    fn number(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// An audio or video message from the publisher.
    pub fn media(
        &mut self,
        kind: MediaKind,
        publisher_ts: u32,
        payload: Bytes,
        now: Instant,
    ) -> Frame {
        self.media_from(kind, publisher_ts, &payload, Some(&payload), None, now)
    }

    /// An audio or video message whose payload lies in a buffer the frame may not keep (a
    /// stored file's read buffer): encoded straight from it, copied only for a sequence
    /// header, which the stream keeps.
    pub fn media_from_slice(
        &mut self,
        kind: MediaKind,
        ts: u32,
        payload: &[u8],
        now: Instant,
    ) -> Frame {
        self.media_from(kind, ts, payload, None, None, now)
    }

    /// Like [`Origin::media_from_slice`], with `wire` the message already encoded at this
    /// origin's chunk size and timestamp `ts` (a stored file's frame, its chunk header
    /// written over the file's tag header before it: `chunk::shared_header_in_place`).
    /// `wire` becomes the frame's bytes as it is, uncopied, unless the frame's timestamp
    /// had to move (a file whose timestamps go back), when it is encoded afresh.
    pub fn media_encoded(
        &mut self,
        kind: MediaKind,
        ts: u32,
        payload: &[u8],
        wire: Bytes,
        now: Instant,
    ) -> Frame {
        self.media_from(kind, ts, payload, None, Some(wire), now)
    }

    fn media_from(
        &mut self,
        kind: MediaKind,
        publisher_ts: u32,
        payload: &[u8],
        owned: Option<&Bytes>,
        encoded: Option<Bytes>,
        now: Instant,
    ) -> Frame {
        let (frame_kind, mut keyframe, sequence_header) = match kind {
            MediaKind::Video => {
                let info = inspect_video(payload);
                (
                    FrameKind::Video,
                    info.is_some_and(|i| i.is_keyframe()),
                    info.is_some_and(|i| i.is_sequence_header),
                )
            }
            MediaKind::Audio => {
                let info = inspect_audio(payload);
                (
                    FrameKind::Audio,
                    false,
                    info.is_some_and(|i| i.is_sequence_header),
                )
            }
        };
        let timestamp = self.timestamp(frame_kind, publisher_ts);
        let bytes = match encoded {
            Some(wire) if timestamp == publisher_ts => wire,
            _ => encode_shared(kind.type_id(), timestamp, payload, self.chunk_size),
        };
        let tracks = frame_tracks(
            kind,
            payload,
            keyframe,
            sequence_header,
            timestamp,
            self.chunk_size,
        );
        // The GOP cache and the slow-viewer skip restart at keyframes of the default track
        // (track 0); another track's keyframe only starts that track (`FrameTracks::key_ids`).
        keyframe &= tracks.as_ref().is_none_or(|t| t.ids & 1 != 0);
        Frame {
            seq: self.number(),
            kind: frame_kind,
            timestamp,
            keyframe,
            sequence_header,
            bytes,
            payload: match (sequence_header, owned) {
                (false, _) => Bytes::new(),
                (true, Some(owned)) => owned.clone(),
                (true, None) => Bytes::copy_from_slice(payload),
            },
            ingested: now,
            encodings: Default::default(),
            tracks,
        }
    }

    /// A data message (the AMF0 body of a type 18 message). `metadata` marks `onMetaData`.
    pub fn data(
        &mut self,
        publisher_ts: u32,
        payload: Bytes,
        metadata: bool,
        now: Instant,
    ) -> Frame {
        let kind = if metadata {
            FrameKind::Metadata
        } else {
            FrameKind::Data
        };
        let timestamp = self.timestamp(kind, publisher_ts);
        let bytes = encode_shared(
            MessageType::DataAmf0.id(),
            timestamp,
            &payload,
            self.chunk_size,
        );
        Frame {
            seq: self.number(),
            kind,
            timestamp,
            keyframe: false,
            sequence_header: false,
            bytes,
            payload: if metadata { payload } else { Bytes::new() },
            ingested: now,
            encodings: Default::default(),
            tracks: Default::default(),
        }
    }

    /// A data message the server itself puts into the stream (the admin API's), stamped
    /// with the stream's current media timestamp: the newest audio or video sent, so it
    /// lands in order with the media around it.
    pub fn injected_data(&mut self, payload: Bytes, now: Instant) -> Frame {
        let newest = self
            .last
            .iter()
            .flatten()
            .copied()
            .fold(None, |a: Option<u32>, b| {
                Some(match a {
                    Some(a) if (b.wrapping_sub(a) as i32) <= 0 => a,
                    _ => b,
                })
            });
        let timestamp = newest.unwrap_or(0);
        self.last[slot(FrameKind::Data)] = Some(timestamp);
        let bytes = encode_shared(
            MessageType::DataAmf0.id(),
            timestamp,
            &payload,
            self.chunk_size,
        );
        Frame {
            seq: self.number(),
            kind: FrameKind::Data,
            timestamp,
            keyframe: false,
            sequence_header: false,
            bytes,
            payload: Bytes::new(),
            ingested: now,
            encodings: Default::default(),
            tracks: Default::default(),
        }
    }

    pub fn event(&mut self, event: StreamEvent) -> RingEntry {
        RingEntry::Event {
            seq: self.number(),
            event,
        }
    }
}

/// The tracks of an audio or video message and its reduced forms (`media/multitrack.rs`),
/// made here once for every viewer on every shard. A legacy message is track 0 and the
/// same for everyone; an enhanced single-track message is its own track-0 form and has a
/// legacy form only when its codec has a legacy id; a multitrack message has both reduced
/// forms made from its track 0, when it has one.
fn frame_tracks(
    kind: MediaKind,
    payload: &[u8],
    keyframe: bool,
    sequence_header: bool,
    timestamp: u32,
    chunk_size: u32,
) -> Option<Arc<FrameTracks>> {
    let parsed = match kind {
        MediaKind::Video => video_tracks(payload),
        MediaKind::Audio => audio_tracks(payload),
    };
    let Some(parsed) = parsed else {
        // An enhanced message that is no track (a command frame, a truncated header) is
        // nothing a legacy parser should see; a legacy message is the same for everyone.
        let enhanced = match kind {
            MediaKind::Video => payload.first().is_some_and(|b| b & 0x80 != 0),
            MediaKind::Audio => payload.first().is_some_and(|b| b >> 4 == 9),
        };
        return enhanced.then(|| {
            Arc::new(FrameTracks {
                legacy: Reduced::Nothing,
                ..FrameTracks::default()
            })
        });
    };
    let ids = parsed.id_mask();
    let codecs = parsed
        .tracks
        .iter()
        .fold(CodecSet::default(), |set, t| set.with(&t.fourcc));
    let track0_codec = parsed
        .track(0)
        .map_or(CodecSet::default(), |t| CodecSet::of(&t.fourcc));
    let reduced = |body: Option<Vec<u8>>| match body {
        None => Reduced::Nothing,
        Some(body) => Reduced::Other {
            bytes: encode_shared(kind.type_id(), timestamp, &body, chunk_size),
            payload: if sequence_header {
                Bytes::from(body)
            } else {
                Bytes::new()
            },
        },
    };
    let track0 = if parsed.multitrack.is_none() {
        Reduced::Same
    } else {
        reduced(track0_enhanced(payload, &parsed))
    };
    let legacy = reduced(match kind {
        MediaKind::Video => track0_legacy_video(payload, &parsed),
        MediaKind::Audio => track0_legacy_audio(payload, &parsed),
    });
    Some(Arc::new(FrameTracks {
        ids,
        key_ids: if keyframe { ids } else { 0 },
        codecs,
        track0_codec,
        track0,
        legacy,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVC_KEY: &[u8] = &[0x17, 1, 0, 0, 0, 0xAA];
    const AVC_HEADER: &[u8] = &[0x17, 0, 0, 0, 0, 1];
    const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

    #[test]
    fn frames_are_numbered_and_classified() {
        let mut o = Origin::new(7, 4096);
        let h = o.media(
            MediaKind::Video,
            0,
            Bytes::from_static(AVC_HEADER),
            Instant::now(),
        );
        let k = o.media(
            MediaKind::Video,
            40,
            Bytes::from_static(AVC_KEY),
            Instant::now(),
        );
        let a = o.media(
            MediaKind::Audio,
            0,
            Bytes::from_static(AAC_HEADER),
            Instant::now(),
        );
        assert_eq!((h.seq, k.seq, a.seq), (7, 8, 9));
        assert!(h.sequence_header && !h.keyframe);
        assert!(k.keyframe && !k.sequence_header);
        assert!(a.sequence_header);
        assert_eq!(o.next_seq(), 10);
    }

    #[test]
    fn timestamps_never_go_back_within_a_kind() {
        let mut o = Origin::new(0, 4096);
        let a = o.media(
            MediaKind::Video,
            100,
            Bytes::from_static(AVC_KEY),
            Instant::now(),
        );
        let b = o.media(
            MediaKind::Video,
            90,
            Bytes::from_static(AVC_KEY),
            Instant::now(),
        );
        let c = o.media(
            MediaKind::Audio,
            80,
            Bytes::from_static(AAC_HEADER),
            Instant::now(),
        );
        assert_eq!((a.timestamp, b.timestamp, c.timestamp), (100, 100, 80));
    }

    #[test]
    fn a_republish_continues_the_clock() {
        let mut o = Origin::new(0, 4096);
        o.media(
            MediaKind::Video,
            5000,
            Bytes::from_static(AVC_KEY),
            Instant::now(),
        );
        o.republish();
        let f = o.media(
            MediaKind::Video,
            0,
            Bytes::from_static(AVC_KEY),
            Instant::now(),
        );
        let g = o.media(
            MediaKind::Video,
            40,
            Bytes::from_static(AVC_KEY),
            Instant::now(),
        );
        assert_eq!((f.timestamp, g.timestamp), (5000, 5040));
    }

    #[test]
    fn the_shared_encoding_decodes_to_the_message() {
        use crate::rtmp::chunk::{ChunkDecoder, DecoderLimits};
        let mut o = Origin::new(0, 128);
        let payload = Bytes::from(vec![0x27u8; 1000]);
        let f = o.media(MediaKind::Video, 1234, payload.clone(), Instant::now());
        let mut d = ChunkDecoder::new(DecoderLimits::default());
        d.set_chunk_size(128).unwrap();
        d.feed(f.bytes.clone());
        let msg = d.next_message().unwrap().unwrap();
        assert_eq!(msg.payload, payload);
        assert_eq!(msg.timestamp, 1234);
        assert_eq!(msg.type_id, 9);
    }
}
