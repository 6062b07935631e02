//! Frames: one relayed message as every shard and every viewer sees it, and the ring of
//! recent frames a shard keeps per stream.
//!
//! A [`Frame`] is what the origin shard makes of one message from the publisher: its shared
//! chunk encoding (a `Bytes` every viewer writes unchanged) plus the few facts the fan-out
//! needs without parsing it again (kind, timestamp, keyframe). Frames are numbered in the
//! order the origin made them; a shard that sees a number skipped knows frames were lost on
//! the way (its inbox was full) and treats its viewers as having fallen behind.
//!
//! [`FrameRing`] is the shard-local window of recent frames of one stream. Viewers do not
//! own copies: each keeps a cursor (a frame number and a byte offset into that frame), and
//! the ring keeps frames until every viewer's cursor has passed them or the ring's byte cap
//! is reached, whichever comes first.

use std::collections::VecDeque;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::output::{OutputFormat, TrackFilter};
use crate::rtmp::capabilities::CodecSet;

/// What kind of message a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Audio,
    Video,
    /// `onMetaData`: delivered in order like data, and kept for viewers who join later.
    Metadata,
    /// Other data messages: text, cue points, application data.
    Data,
}

/// Something that happened to the stream, ordered with its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The publisher left; viewers are told and kept for the grace period.
    Unpublished,
    /// A publisher came back within the grace period.
    Republished,
    /// The grace period ran out, or the server is shutting down: close the viewers.
    Ended,
    /// A stored file's source reached the end of the file: `NetStream.Play.Stop`, then the
    /// viewer is closed once it has read it.
    PlayStopped,
}

/// One relayed message, encoded once for every viewer.
#[derive(Clone, Debug)]
pub struct Frame {
    pub seq: u64,
    pub kind: FrameKind,
    pub timestamp: u32,
    /// A video keyframe (not a sequence header): a viewer skipping video may resume here.
    pub keyframe: bool,
    /// A sequence header (codec configuration); never skipped.
    pub sequence_header: bool,
    /// The message's shared chunk encoding.
    pub bytes: Bytes,
    /// The message body itself (a second handle on the publisher's bytes, not a copy), kept
    /// only for sequence headers and metadata, which are re-encoded for a joining viewer at
    /// its start time; empty otherwise, so the GOP cache and ring do not hold every frame
    /// twice (the encoding above is all a viewer is sent).
    pub payload: Bytes,
    /// When the origin made it (the publisher's message arrived), for the relay latency
    /// the shards measure at each fan-out pass.
    pub ingested: Instant,
    /// This shard's encodings for its FLV viewers, by `OutputFormat::slot`; made as the
    /// frame joins the ring of a stream that has viewers of that format here
    /// (`relay/output.rs`), None otherwise. They encode the frame's `tracks.track0` form:
    /// FLV viewers are of the `TrackFilter::Track0` class.
    pub encodings: [Option<Bytes>; 3],
    /// The Enhanced RTMP tracks this frame carries, and its reduced forms for viewers that
    /// cannot take the whole message (`media/multitrack.rs`), made once at the origin;
    /// None for a legacy message or data (`Frame::tracks`). Shared, so a frame stays small
    /// in the ring and crossing to another shard copies a handle.
    pub tracks: Option<Arc<FrameTracks>>,
}

/// The tracks of a legacy message: track 0 only, the same for every viewer.
static LEGACY_TRACKS: FrameTracks = FrameTracks {
    ids: 1,
    key_ids: 0,
    codecs: CodecSet(0),
    track0_codec: CodecSet(0),
    track0: Reduced::Same,
    legacy: Reduced::Same,
};

/// A reduced form of a frame: the frame itself, another message, or nothing.
#[derive(Clone, Debug, Default)]
pub enum Reduced {
    /// The frame as it is.
    #[default]
    Same,
    /// Another message: its shared chunk encoding, and its body when the frame is a
    /// sequence header (re-encoded at a joining viewer's start time, like `Frame::payload`).
    Other { bytes: Bytes, payload: Bytes },
    /// Nothing is sent.
    Nothing,
}

impl Reduced {
    fn memory(&self) -> usize {
        match self {
            Reduced::Other { bytes, payload } => bytes.len() + payload.len(),
            Reduced::Same | Reduced::Nothing => 0,
        }
    }
}

/// What the fan-out knows of a frame's tracks. The default is a legacy (or data) message:
/// track 0 only, no FourCC, the same for every viewer.
#[derive(Clone, Debug)]
pub struct FrameTracks {
    /// Track ids carried, as a bit set (`multitrack::track_bit`).
    pub ids: u64,
    /// Track ids this message is a keyframe of (0 for anything but a keyframe).
    pub key_ids: u64,
    /// The FourCC codecs of all its tracks; empty for a legacy message.
    pub codecs: CodecSet,
    /// The FourCC codec of its track 0; empty for a legacy message or none.
    pub track0_codec: CodecSet,
    /// Track 0 alone as a single-track message (Enhanced RTMP allowed).
    pub track0: Reduced,
    /// Track 0 in the legacy FLV layout, for viewers that declared no FourCC codec.
    pub legacy: Reduced,
}

impl Default for FrameTracks {
    fn default() -> FrameTracks {
        LEGACY_TRACKS.clone()
    }
}

impl Frame {
    /// What the fan-out knows of this frame's tracks.
    pub fn tracks(&self) -> &FrameTracks {
        self.tracks.as_deref().unwrap_or(&LEGACY_TRACKS)
    }

    /// What a viewer of `format` and track class `filter` is sent for this frame; None
    /// when it gets nothing of it. A few comparisons, no allocation: the bytes are the
    /// frame's own or its reduced forms', shared by every viewer of the class.
    pub fn encoding(&self, format: OutputFormat, filter: TrackFilter) -> Option<&Bytes> {
        match format.slot() {
            None => match self.form(filter) {
                Reduced::Same => Some(&self.bytes),
                Reduced::Other { bytes, .. } => Some(bytes),
                Reduced::Nothing => None,
            },
            Some(i) => self.encodings[i].as_ref(),
        }
    }

    /// Which form of this frame a viewer of track class `filter` gets.
    pub fn form(&self, filter: TrackFilter) -> &Reduced {
        let t = self.tracks();
        match filter {
            TrackFilter::All => &Reduced::Same,
            TrackFilter::Track0 => &t.track0,
            TrackFilter::Legacy => &t.legacy,
            TrackFilter::Declared(set) => {
                if set.covers(t.codecs) {
                    &Reduced::Same
                } else if !t.track0_codec.is_empty() && set.covers(t.track0_codec) {
                    &t.track0
                } else {
                    &t.legacy
                }
            }
        }
    }

    /// The body of the form `filter` gets, for re-encoding a sequence header or metadata
    /// at a joining viewer's start time; None when it gets nothing.
    pub fn payload_for(&self, filter: TrackFilter) -> Option<&Bytes> {
        match self.form(filter) {
            Reduced::Same => Some(&self.payload),
            Reduced::Other { payload, .. } => Some(payload),
            Reduced::Nothing => None,
        }
    }
}

/// An entry in the ring: a frame, or a stream event at its place in the order.
#[derive(Clone, Debug)]
pub enum RingEntry {
    Frame(Frame),
    Event { seq: u64, event: StreamEvent },
}

impl RingEntry {
    pub fn seq(&self) -> u64 {
        match self {
            RingEntry::Frame(f) => f.seq,
            RingEntry::Event { seq, .. } => *seq,
        }
    }

    /// Bytes a viewer is sent for this entry.
    pub(crate) fn len(&self) -> usize {
        match self {
            RingEntry::Frame(f) => f.bytes.len(),
            RingEntry::Event { .. } => 0,
        }
    }

    /// Memory this entry holds: its own record plus every buffer it keeps alive, so a flood
    /// of tiny messages is bounded like a flood of large ones.
    pub fn memory(&self) -> usize {
        std::mem::size_of::<RingEntry>()
            + match self {
                RingEntry::Frame(f) => {
                    f.bytes.len()
                        + f.payload.len()
                        + f.encodings.iter().flatten().map(Bytes::len).sum::<usize>()
                        + f.tracks().track0.memory()
                        + f.tracks().legacy.memory()
                }
                RingEntry::Event { .. } => 0,
            }
    }
}

/// The recent entries of one stream on one shard, numbered consecutively from `first_seq`.
#[derive(Debug, Default)]
pub struct FrameRing {
    entries: VecDeque<RingEntry>,
    first_seq: u64,
    /// What viewers are sent for the entries held (for backlogs).
    bytes: usize,
    /// What the entries hold in memory (for the cap).
    memory: usize,
}

/// How far behind the newest entry a cursor is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub bytes: usize,
    pub millis: u32,
}

impl FrameRing {
    pub fn new(first_seq: u64) -> FrameRing {
        FrameRing {
            entries: VecDeque::new(),
            first_seq,
            bytes: 0,
            memory: 0,
        }
    }

    /// Number of the oldest entry still held.
    /// When the newest frame held was made at its origin.
    pub fn newest_ingested(&self) -> Option<Instant> {
        self.entries.iter().rev().find_map(|e| match e {
            RingEntry::Frame(f) => Some(f.ingested),
            RingEntry::Event { .. } => None,
        })
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Number the next pushed entry must carry.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Memory held by the entries, their records included.
    pub fn memory(&self) -> usize {
        self.memory
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry. Its number must be `next_seq()`; a shard that received a later
    /// number (a gap) calls [`FrameRing::restart_at`] first.
    pub fn push(&mut self, entry: RingEntry) {
        debug_assert_eq!(entry.seq(), self.next_seq());
        self.bytes += entry.len();
        self.memory += entry.memory();
        self.entries.push_back(entry);
    }

    /// Drops everything and continues numbering at `seq` (after a gap, or when a new origin
    /// starts its own numbering).
    pub fn restart_at(&mut self, seq: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.memory = 0;
        self.first_seq = seq;
    }

    pub fn get(&self, seq: u64) -> Option<&RingEntry> {
        let index = seq.checked_sub(self.first_seq)?;
        self.entries.get(usize::try_from(index).ok()?)
    }

    /// Timestamp of the newest frame, if any.
    pub fn newest_timestamp(&self) -> Option<u32> {
        self.entries.iter().rev().find_map(|e| match e {
            RingEntry::Frame(f) => Some(f.timestamp),
            RingEntry::Event { .. } => None,
        })
    }

    /// The bytes and the media time from `seq` to the newest entry. O(entries behind),
    /// which is small for a viewer that keeps up; the walk stops once both limits are
    /// exceeded, so a far-behind viewer costs no more than `max_bytes` worth of entries.
    pub fn backlog(&self, seq: u64, max_bytes: usize) -> Backlog {
        let Some(start) = seq.checked_sub(self.first_seq) else {
            return Backlog {
                bytes: self.bytes,
                millis: u32::MAX,
            };
        };
        let Ok(start) = usize::try_from(start) else {
            return Backlog::default();
        };
        let newest = self.newest_timestamp();
        let mut bytes = 0;
        let mut oldest = None;
        for entry in self.entries.iter().skip(start) {
            if let RingEntry::Frame(f) = entry {
                oldest.get_or_insert(f.timestamp);
            }
            bytes += entry.len();
            if bytes > max_bytes {
                break;
            }
        }
        // A signed distance: the newest entry may be audio stamped a little behind the
        // video at the cursor, which is no backlog at all (as unsigned it would wrap to
        // some 49 days).
        let millis = match (oldest, newest) {
            (Some(o), Some(n)) => (n.wrapping_sub(o) as i32).max(0) as u32,
            _ => 0,
        };
        Backlog { bytes, millis }
    }

    fn pop_front(&mut self) -> bool {
        let Some(entry) = self.entries.pop_front() else {
            return false;
        };
        self.bytes -= entry.len();
        self.memory -= entry.memory();
        self.first_seq += 1;
        true
    }

    /// Drops entries before `seq` (every viewer is past them).
    pub fn trim_before(&mut self, seq: u64) {
        while self.first_seq < seq && self.pop_front() {}
    }

    /// Drops the oldest entries until the ring holds at most `max_memory` bytes of memory.
    /// Viewers whose cursor falls off the front have fallen too far behind and skip ahead.
    pub fn trim_to_memory(&mut self, max_memory: usize) {
        while self.memory > max_memory && self.pop_front() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, len: usize) -> RingEntry {
        RingEntry::Frame(Frame {
            seq,
            kind: FrameKind::Video,
            timestamp: seq as u32 * 33,
            keyframe: false,
            sequence_header: false,
            bytes: Bytes::from(vec![0u8; len]),
            payload: Bytes::new(),
            ingested: std::time::Instant::now(),
            encodings: Default::default(),
            tracks: Default::default(),
        })
    }

    #[test]
    fn numbering_and_trimming() {
        let mut ring = FrameRing::new(10);
        for seq in 10..20 {
            ring.push(frame(seq, 100));
        }
        assert_eq!(ring.next_seq(), 20);
        assert_eq!(ring.bytes(), 1000);
        ring.trim_before(15);
        assert_eq!(ring.first_seq(), 15);
        assert!(ring.get(14).is_none());
        assert_eq!(ring.get(15).map(RingEntry::seq), Some(15));
        let per_entry = std::mem::size_of::<RingEntry>() + 100;
        assert_eq!(ring.memory(), 5 * per_entry);
        ring.trim_to_memory(2 * per_entry + 50);
        assert_eq!(ring.first_seq(), 18);
        assert_eq!(ring.bytes(), 200);
        assert_eq!(ring.memory(), 2 * per_entry);
        ring.restart_at(100);
        assert_eq!(ring.next_seq(), 100);
        assert!(ring.is_empty());
    }

    #[test]
    fn audio_stamped_behind_the_video_is_no_backlog() {
        let mut ring = FrameRing::new(0);
        let mut video = frame(0, 100);
        let mut audio = frame(1, 10);
        if let (RingEntry::Frame(v), RingEntry::Frame(a)) = (&mut video, &mut audio) {
            v.timestamp = 1000;
            a.kind = FrameKind::Audio;
            a.timestamp = 980;
        }
        ring.push(video);
        ring.push(audio);
        assert_eq!(
            ring.backlog(0, 1 << 20),
            Backlog {
                bytes: 110,
                millis: 0
            }
        );
    }
}
