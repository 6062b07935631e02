//! The E-RTMP v2 multitrack synthetic stream (`--multitrack`): what its publisher sends and
//! how its viewers check every track.
//!
//! The stream has two video tracks (ids 0 and 1, both H.264 `avc1`) and two audio tracks
//! (ids 0 and 1, both AAC `mp4a`), laid out as `src/media/multitrack.rs` parses them:
//!
//! - video: one message per picture, `VideoPacketType::Multitrack` of type `ManyTracks`
//!   (one FourCC, then per track its id, a 24-bit size and its body). The sequence header
//!   is one such message of packet type `SequenceStart` carrying both tracks' avcC; a
//!   picture is `CodedFrames`, each track's body the composition time then its NAL units.
//! - audio: one message per track and AAC frame, `AudioPacketType::Multitrack` of type
//!   `OneTrack` (FourCC, track id, then the body to the end): `SequenceStart` with the
//!   AudioSpecificConfig, then `CodedFrames` with one AAC frame.
//!
//! So both multitrack layouts the relay handles are exercised: several tracks in one
//! message, and one track per message.
//!
//! Every track's media carries its own sequence number, so a viewer counts loss and order
//! per track. A video track's body starts with the load generator's marker (`marker.rs`)
//! exactly as a plain AVC message does after its FLV header: its length field is the
//! track's length *as a single-track legacy message* (the body plus the 2-byte FLV AVC
//! header), so a viewer that gets track 0 reduced to legacy FLV by the relay verifies it
//! as an ordinary stream. An audio track's AAC frame is stereo silence followed by a data
//! stream element (DSE, which decoders skip) holding the 64-bit sequence number, so the
//! frame is still valid AAC; a viewer rebuilds the frame for that number and compares it
//! byte for byte.
//!
//! A viewer ([`TrackChecker`]) declares `fourCcList` `["avc1", "mp4a"]` and `capsEx`
//! Multitrack in `connect`, and for every track checks that its sequence header came
//! before its first frame, that a video track starts at a keyframe, and that sequence
//! numbers arrive in order without gaps.
//!
//! With `--multitrack-legacy-viewers` the viewers declare nothing, as ffmpeg 5.1 or
//! rtmpdump, and the relay owes them track 0 of each kind in the legacy FLV layout: the
//! checker reads a legacy AVC or AAC message as track 0 of its kind, and a viewer is
//! expected to get exactly those two tracks.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use shardcast::media::multitrack::{audio_tracks, video_tracks};

use crate::marker;

/// Track ids of each media kind.
pub const VIDEO_TRACKS: [u8; 2] = [0, 1];
pub const AUDIO_TRACKS: [u8; 2] = [0, 1];

/// What the viewers declare in `connect`.
pub const FOURCC_LIST: [&str; 2] = ["avc1", "mp4a"];

const VIDEO_EX_HEADER: u8 = 0x80;
const VIDEO_MULTITRACK: u8 = 6;
const AUDIO_EX_HEADER: u8 = 9 << 4;
const AUDIO_MULTITRACK: u8 = 5;
const ONE_TRACK: u8 = 0;
const MANY_TRACKS: u8 = 1;
const SEQUENCE_START: u8 = 0;
const CODED_FRAMES: u8 = 1;
const CODED_FRAMES_X: u8 = 3;
const FRAME_TYPE_KEY: u8 = 1;
const FRAME_TYPE_INTER: u8 = 2;

/// The video sequence header: one `ManyTracks` `SequenceStart` message with `avcc` for
/// every video track.
pub fn video_sequence_header(avcc: &[u8]) -> Bytes {
    let bodies: Vec<(u8, &[u8])> = VIDEO_TRACKS.iter().map(|&id| (id, avcc)).collect();
    video_many_tracks(FRAME_TYPE_KEY, SEQUENCE_START, &bodies)
}

/// One picture of every video track: the message for `nal_units` per track, each body
/// stamped with the marker for `seq` and `send_us`.
pub fn video_frame(keyframe: bool, tracks: &[(u8, Bytes)], seq: u64, send_us: u64) -> Bytes {
    let frame_type = if keyframe {
        FRAME_TYPE_KEY
    } else {
        FRAME_TYPE_INTER
    };
    let legacy_first = (frame_type << 4) | 7;
    let stamped: Vec<(u8, Bytes)> = tracks
        .iter()
        .map(|(id, nal_units)| {
            // The legacy message this track would be; its body drops the 2-byte FLV AVC
            // header (frame type and codec, packet type) and keeps the composition time.
            let legacy = marker::stamp_avc([legacy_first, 1, 0, 0, 0], 4, seq, send_us, nal_units);
            (*id, legacy.slice(2..))
        })
        .collect();
    let bodies: Vec<(u8, &[u8])> = stamped.iter().map(|(id, b)| (*id, &b[..])).collect();
    video_many_tracks(frame_type, CODED_FRAMES, &bodies)
}

fn video_many_tracks(frame_type: u8, packet_type: u8, bodies: &[(u8, &[u8])]) -> Bytes {
    let len = 6 + bodies.iter().map(|(_, b)| 4 + b.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(len);
    out.put_u8(VIDEO_EX_HEADER | (frame_type << 4) | VIDEO_MULTITRACK);
    out.put_u8((MANY_TRACKS << 4) | packet_type);
    out.put_slice(b"avc1");
    for (id, body) in bodies {
        out.put_u8(*id);
        let size = (body.len() as u32).to_be_bytes();
        out.put_slice(&size[1..]);
        out.put_slice(body);
    }
    out.freeze()
}

/// An audio `OneTrack` message of `track` with `packet_type` and `body`.
fn audio_one_track(track: u8, packet_type: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(7 + body.len());
    out.put_u8(AUDIO_EX_HEADER | AUDIO_MULTITRACK);
    out.put_u8((ONE_TRACK << 4) | packet_type);
    out.put_slice(b"mp4a");
    out.put_u8(track);
    out.put_slice(body);
    out.freeze()
}

/// The audio sequence headers, one message per track.
pub fn audio_sequence_headers(audio_specific_config: &[u8]) -> Vec<Bytes> {
    AUDIO_TRACKS
        .iter()
        .map(|&id| audio_one_track(id, SEQUENCE_START, audio_specific_config))
        .collect()
}

/// The AAC frame of audio track message `seq`, as one `OneTrack` message.
pub fn audio_frame(track: u8, seq: u64) -> Bytes {
    audio_one_track(track, CODED_FRAMES, &aac_frame(seq))
}

/// One AAC-LC raw data block: a stereo channel pair element of silence (as `source.rs`'s),
/// then a data stream element carrying `seq` (8 bytes, byte-aligned), then END.
pub fn aac_frame(seq: u64) -> Vec<u8> {
    let mut bits = BitWriter::default();
    // CPE: id 001, tag 0000, common_window 0, then per channel global_gain 100, 11 bits of
    // ics_info (no scale factor bands), 3 bits of pulse/tns/gain control flags.
    for (value, width) in [
        (1, 3),
        (0, 4),
        (0, 1),
        (100, 8),
        (0, 11),
        (0, 3),
        (100, 8),
        (0, 11),
        (0, 3),
    ] {
        bits.put(value, width);
    }
    // DSE: id 100, tag 0000, data_byte_align_flag 1, count 8, byte alignment, 8 bytes.
    bits.put(4, 3);
    bits.put(0, 4);
    bits.put(1, 1);
    bits.put(8, 8);
    bits.align();
    for byte in seq.to_be_bytes() {
        bits.put(u64::from(byte), 8);
    }
    bits.put(7, 3); // ID_END
    bits.align();
    bits.bytes
}

/// Where [`aac_frame`]'s sequence number lies.
const AAC_SEQ_AT: usize = 9;

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    fn put(&mut self, value: u64, width: u32) {
        for i in (0..width).rev() {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    fn align(&mut self) {
        self.used = 0;
    }
}

/// Media kind of a track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

impl TrackKind {
    pub fn name(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
    }
}

/// What the viewers of a thread saw of one track, added up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrackCounts {
    /// Viewers that got at least one frame of this track.
    pub viewers: u64,
    /// Sequence headers received (one per viewer expected).
    pub sequence_headers: u64,
    /// Frames (coded media) received.
    pub frames: u64,
    /// Frames whose payload did not check out (length, checksum, or AAC bytes).
    pub corrupted: u64,
    pub lost: u64,
    pub reordered: u64,
    /// Frames that came before this track's sequence header.
    pub frames_before_header: u64,
    /// Viewers whose first frame of this (video) track was not a keyframe.
    pub started_without_keyframe: u64,
}

impl TrackCounts {
    pub fn merge(&mut self, other: &TrackCounts) {
        self.viewers += other.viewers;
        self.sequence_headers += other.sequence_headers;
        self.frames += other.frames;
        self.corrupted += other.corrupted;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.frames_before_header += other.frames_before_header;
        self.started_without_keyframe += other.started_without_keyframe;
    }
}

/// Per-track counts keyed by kind and track id.
pub type TrackTable = BTreeMap<(TrackKind, u8), TrackCounts>;

#[derive(Default)]
struct TrackState {
    header: bool,
    next_seq: Option<u64>,
}

/// What a track-0 video frame told the viewer, for its stream-wide numbers (latency and
/// the stream's own loss count).
pub struct Track0Marker {
    pub marker: marker::Marker,
    pub intact: bool,
}

/// One viewer's per-track checks.
#[derive(Default)]
pub struct TrackChecker {
    tracks: BTreeMap<(TrackKind, u8), TrackState>,
}

impl TrackChecker {
    /// The tracks this viewer got frames of, as a bit set: video ids in bits 0..16, audio
    /// ids in bits 16..32.
    pub fn seen_mask(&self) -> u32 {
        self.tracks
            .iter()
            .filter(|(_, s)| s.next_seq.is_some())
            .fold(0, |m, ((kind, id), _)| m | track_mask_bit(*kind, *id))
    }

    /// Checks one whole video message; returns track 0's marker when it carried a frame.
    pub fn on_video(&mut self, payload: &[u8], table: &mut TrackTable) -> Option<Track0Marker> {
        let Some(tracks) = video_tracks(payload) else {
            return self.on_legacy_video(payload, table);
        };
        let keyframe = (payload[0] >> 4) & 0x07 == FRAME_TYPE_KEY;
        let mut track0 = None;
        for t in &tracks.tracks {
            let body = &payload[t.body_start..t.body_end];
            let key = (TrackKind::Video, t.id);
            match tracks.packet_type {
                SEQUENCE_START => self.header(key, table),
                CODED_FRAMES | CODED_FRAMES_X => {
                    let found = marker::find(body);
                    let intact = found.is_some_and(|m| {
                        m.payload_len as usize == body.len() + 2
                            && marker::checked_part(body)
                                .is_some_and(|part| marker::checksum(part) == m.checksum)
                    });
                    let Some(m) = found else {
                        table.entry(key).or_default().corrupted += 1;
                        continue;
                    };
                    self.frame(key, m.seq, intact, Some(keyframe), table);
                    if t.id == 0 {
                        track0 = Some(Track0Marker { marker: m, intact });
                    }
                }
                _ => {}
            }
        }
        track0
    }

    /// A legacy FLV AVC message: track 0 as the relay reduces it for an undeclared viewer.
    fn on_legacy_video(&mut self, payload: &[u8], table: &mut TrackTable) -> Option<Track0Marker> {
        let (&first, &packet_type) = (payload.first()?, payload.get(1)?);
        if first & 0x0F != 7 {
            return None;
        }
        let key = (TrackKind::Video, 0);
        match packet_type {
            0 => {
                self.header(key, table);
                None
            }
            1 => {
                let Some(m) = marker::find(payload) else {
                    table.entry(key).or_default().corrupted += 1;
                    return None;
                };
                let intact = m.payload_len as usize == payload.len()
                    && marker::checked_part(payload)
                        .is_some_and(|part| marker::checksum(part) == m.checksum);
                let keyframe = (first >> 4) & 0x07 == FRAME_TYPE_KEY;
                self.frame(key, m.seq, intact, Some(keyframe), table);
                Some(Track0Marker { marker: m, intact })
            }
            _ => None,
        }
    }

    /// Checks one whole audio message.
    pub fn on_audio(&mut self, payload: &[u8], table: &mut TrackTable) {
        let Some(tracks) = audio_tracks(payload) else {
            // Legacy AAC: track 0 reduced for an undeclared viewer.
            let key = (TrackKind::Audio, 0);
            match (payload.first().map(|b| b >> 4), payload.get(1)) {
                (Some(10), Some(0)) => self.header(key, table),
                (Some(10), Some(1)) => {
                    let body = &payload[2..];
                    match body.get(AAC_SEQ_AT..AAC_SEQ_AT + 8) {
                        Some(b) => {
                            let seq = u64::from_be_bytes(b.try_into().unwrap_or_default());
                            let intact = aac_frame(seq) == body;
                            self.frame(key, seq, intact, None, table);
                        }
                        None => table.entry(key).or_default().corrupted += 1,
                    }
                }
                _ => {}
            }
            return;
        };
        for t in &tracks.tracks {
            let body = &payload[t.body_start..t.body_end];
            let key = (TrackKind::Audio, t.id);
            match tracks.packet_type {
                SEQUENCE_START => self.header(key, table),
                CODED_FRAMES => {
                    let seq = body
                        .get(AAC_SEQ_AT..AAC_SEQ_AT + 8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                    match seq {
                        Some(seq) => {
                            let intact = aac_frame(seq) == body;
                            self.frame(key, seq, intact, None, table);
                        }
                        None => table.entry(key).or_default().corrupted += 1,
                    }
                }
                _ => {}
            }
        }
    }

    fn header(&mut self, key: (TrackKind, u8), table: &mut TrackTable) {
        self.tracks.entry(key).or_default().header = true;
        table.entry(key).or_default().sequence_headers += 1;
    }

    fn frame(
        &mut self,
        key: (TrackKind, u8),
        seq: u64,
        intact: bool,
        keyframe: Option<bool>,
        table: &mut TrackTable,
    ) {
        let state = self.tracks.entry(key).or_default();
        let counts = table.entry(key).or_default();
        counts.frames += 1;
        if !intact {
            counts.corrupted += 1;
        }
        if !state.header {
            counts.frames_before_header += 1;
        }
        match state.next_seq {
            None => {
                counts.viewers += 1;
                if keyframe == Some(false) {
                    counts.started_without_keyframe += 1;
                }
                state.next_seq = Some(seq + 1);
            }
            Some(next) if seq < next => counts.reordered += 1,
            Some(next) => {
                counts.lost += seq - next;
                state.next_seq = Some(seq + 1);
            }
        }
    }
}

/// The bit of a track in [`TrackChecker::seen_mask`].
pub fn track_mask_bit(kind: TrackKind, id: u8) -> u32 {
    let shift = u32::from(id.min(15)) + if kind == TrackKind::Audio { 16 } else { 0 };
    1 << shift
}

/// The tracks a viewer must get, as a [`TrackChecker::seen_mask`]: track 0 of each kind
/// for a viewer that declared nothing (`legacy`), else every track of the stream.
pub fn expected_tracks_mask(legacy: bool) -> u32 {
    if legacy {
        track_mask_bit(TrackKind::Video, 0) | track_mask_bit(TrackKind::Audio, 0)
    } else {
        all_tracks_mask()
    }
}

/// Every track of the stream, as a [`TrackChecker::seen_mask`].
pub fn all_tracks_mask() -> u32 {
    VIDEO_TRACKS
        .iter()
        .map(|&id| track_mask_bit(TrackKind::Video, id))
        .chain(
            AUDIO_TRACKS
                .iter()
                .map(|&id| track_mask_bit(TrackKind::Audio, id)),
        )
        .fold(0, |m, b| m | b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardcast::media::multitrack::{MultitrackType, track0_legacy_audio, track0_legacy_video};

    #[test]
    fn aac_frame_layout() {
        let frame = aac_frame(0x0102_0304_0506_0708);
        // CPE as source.rs's silent frame, 52 bits; DSE header 100 0000 1 00001000 from
        // bit 52; aligned to byte 9; the number; END 111 then padding.
        assert_eq!(&frame[..6], &[0x20, 0x64, 0x00, 0x01, 0x90, 0x00]);
        assert_eq!(frame[6], 0x08); // 0000 | 1000 (DSE id 100, first tag bit 0)
        assert_eq!(frame[7], 0x10); // tag 000, align 1, count 0000...
        assert_eq!(frame[8], 0x80); // ...1000, then alignment
        assert_eq!(&frame[9..17], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(frame[17], 0xE0);
        assert_eq!(frame.len(), 18);
    }

    #[test]
    fn video_frame_parses_as_many_tracks_and_checks_per_track() {
        let units = Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]);
        let payload = video_frame(true, &[(0, units.clone()), (1, units.clone())], 7, 99);
        let tracks = video_tracks(&payload).unwrap();
        assert_eq!(tracks.multitrack, Some(MultitrackType::ManyTracks));
        assert_eq!(tracks.tracks.len(), 2);
        // Track 0 reduced to legacy FLV is an ordinary marked AVC message.
        let legacy = track0_legacy_video(&payload, &tracks).unwrap();
        let m = marker::find(&legacy).unwrap();
        assert_eq!(m.seq, 7);
        assert_eq!(m.payload_len as usize, legacy.len());
        assert_eq!(
            marker::checksum(marker::checked_part(&legacy).unwrap()),
            m.checksum
        );

        let mut checker = TrackChecker::default();
        let mut table = TrackTable::default();
        let header = video_sequence_header(&[1, 2, 3]);
        assert!(checker.on_video(&header, &mut table).is_none());
        let t0 = checker.on_video(&payload, &mut table).unwrap();
        assert!(t0.intact);
        let later = video_frame(false, &[(0, units.clone()), (1, units.clone())], 9, 99);
        checker.on_video(&later, &mut table);
        let video1 = &table[&(TrackKind::Video, 1)];
        assert_eq!(
            (video1.sequence_headers, video1.frames, video1.lost),
            (1, 2, 1)
        );
        assert_eq!(video1.corrupted, 0);
        assert_eq!(video1.frames_before_header, 0);

        // A flipped byte in track 1 is caught for track 1 only.
        let mut bad = payload.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        checker.on_video(&bad, &mut table);
        assert_eq!(table[&(TrackKind::Video, 1)].corrupted, 1);
        assert_eq!(table[&(TrackKind::Video, 0)].corrupted, 0);
    }

    #[test]
    fn audio_tracks_checked_per_track() {
        let mut checker = TrackChecker::default();
        let mut table = TrackTable::default();
        checker.on_audio(&audio_frame(1, 0), &mut table);
        for h in audio_sequence_headers(&[0x11, 0x90]) {
            checker.on_audio(&h, &mut table);
        }
        checker.on_audio(&audio_frame(0, 0), &mut table);
        checker.on_audio(&audio_frame(0, 2), &mut table);
        checker.on_audio(&audio_frame(0, 1), &mut table);
        let a0 = &table[&(TrackKind::Audio, 0)];
        assert_eq!((a0.frames, a0.lost, a0.reordered), (3, 1, 1));
        let a1 = &table[&(TrackKind::Audio, 1)];
        assert_eq!(a1.frames_before_header, 1);
        assert_eq!(
            checker.seen_mask(),
            track_mask_bit(TrackKind::Audio, 0) | track_mask_bit(TrackKind::Audio, 1)
        );
        let tracks = audio_tracks(&audio_frame(0, 5)).unwrap();
        let legacy = track0_legacy_audio(&audio_frame(0, 5), &tracks).unwrap();
        assert_eq!(&legacy[..2], &[0xAF, 1]);
        assert_eq!(&legacy[2..], &aac_frame(5)[..]);
    }

    #[test]
    fn legacy_forms_count_as_track_0() {
        let mut checker = TrackChecker::default();
        let mut table = TrackTable::default();
        let units = Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]);
        let header = video_sequence_header(&[1, 2, 3]);
        let t = video_tracks(&header).unwrap();
        checker.on_video(&track0_legacy_video(&header, &t).unwrap(), &mut table);
        for seq in [0, 1, 3] {
            let frame = video_frame(seq == 0, &[(0, units.clone()), (1, units.clone())], seq, 9);
            let t = video_tracks(&frame).unwrap();
            let legacy = track0_legacy_video(&frame, &t).unwrap();
            let m = checker.on_video(&legacy, &mut table).unwrap();
            assert!(m.intact);
        }
        for h in audio_sequence_headers(&[0x11, 0x90]) {
            let t = audio_tracks(&h).unwrap();
            if let Some(legacy) = track0_legacy_audio(&h, &t) {
                checker.on_audio(&legacy, &mut table);
            }
        }
        let frame = audio_frame(0, 4);
        let t = audio_tracks(&frame).unwrap();
        checker.on_audio(&track0_legacy_audio(&frame, &t).unwrap(), &mut table);
        let v0 = &table[&(TrackKind::Video, 0)];
        assert_eq!(
            (v0.sequence_headers, v0.frames, v0.lost, v0.corrupted),
            (1, 3, 1, 0)
        );
        let a0 = &table[&(TrackKind::Audio, 0)];
        assert_eq!((a0.sequence_headers, a0.frames, a0.corrupted), (1, 1, 0));
        assert_eq!(checker.seen_mask(), expected_tracks_mask(true));
    }
}
