//! What one client still has to be sent, and how it is written in few, large writes.
//!
//! Every client has a [`WriteQueue`], publisher or viewer: every byte the relay sends goes
//! through one. It is three things in write order: the rest of a message a previous write
//! cut short (`partial`), the client's own bytes (`pending`: its session's replies, and for
//! a viewer at join time the metadata, sequence headers and GOP), and a cursor into its
//! stream's [`FrameRing`] (a client that plays nothing flushes against an empty ring).
//! Nothing is copied into it: ring frames are read in place, and a cut-short message is
//! kept as a slice of the shared buffer. A flush gathers as many of these as fit into one
//! `IoSlice` array and hands them to one vectored write through [`Transmit`], which the
//! driver implements with the client's socket (`src/net/sockets.rs`).
//!
//! The cursor always sits on a message boundary, which is what lets the ring drop old frames
//! without waiting for a slow viewer, and lets the viewer be moved to the next keyframe.
//!
//! Falling behind: when the unsent backlog passes the configured bytes or milliseconds, the
//! viewer skips video until the next keyframe (audio and data keep flowing, so the picture
//! freezes but the sound goes on). The keyframe ends the skip only once a byte of it has
//! actually been written, so a viewer never gets an inter frame after a gap.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;

use super::client::ClientId;
use super::frame::{FrameKind, FrameRing, RingEntry, StreamEvent};
use super::output::{OutputFormat, TrackFilter};
use crate::performance::{MAX_IOVECS, MAX_WRITE_BYTES};

/// Where the relay's writes go: the driver's sockets, by client. The relay decides what
/// bytes go to whom; only the implementation (in `src/net/`) touches a socket. A client
/// that has no socket any more (it closed) answers with an error, never with another
/// client's socket.
pub trait Transmit {
    /// Writes `bufs` in order with one vectored write, without waiting; returns the bytes
    /// the socket took, or `WouldBlock` when it is full.
    fn send(&mut self, client: ClientId, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// Where one gathered buffer came from, to advance the right queue after the write.
#[derive(Clone, Copy, Debug)]
enum Source {
    Partial,
    Pending,
    Ring {
        seq: u64,
        keyframe: bool,
        key_ids: u64,
    },
}

/// Reusable buffers for flushes, one per shard, so a flush allocates nothing.
#[derive(Default)]
pub struct FlushScratch {
    /// Empty between flushes; only its allocation is kept (see [`recycle`]).
    iov: Vec<IoSlice<'static>>,
    sources: Vec<(Source, usize)>,
}

/// Gives an empty vector of slices a new lifetime, keeping its allocation. The slices of a
/// flush borrow the queue and the ring for that flush only; the vector that held them is
/// kept for the next. Collecting a `vec::IntoIter` through `map` reuses the allocation in
/// place (the element types have one layout), and the closure never runs: the vector is
/// empty. No `unsafe` needed.
fn recycle<'a, 'b>(mut v: Vec<IoSlice<'a>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| -> IoSlice<'b> { unreachable!("the vector is empty") })
        .collect()
}

/// The buffers of one write being gathered.
struct Gather<'a> {
    iov: Vec<IoSlice<'a>>,
    total: usize,
}

impl<'a> Gather<'a> {
    fn push(&mut self, sources: &mut Vec<(Source, usize)>, bytes: &'a Bytes, source: Source) {
        self.iov.push(IoSlice::new(bytes));
        sources.push((source, bytes.len()));
        self.total += bytes.len();
    }

    fn is_full(&self) -> bool {
        self.iov.len() >= MAX_IOVECS || self.total >= MAX_WRITE_BYTES
    }
}

/// How a flush ended.
#[derive(Debug, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Everything queued was written.
    Idle,
    /// The socket took less than offered: wait until it is writable, then flush again.
    Blocked,
    /// The cursor reached a stream event; the caller renders it for this viewer (its
    /// session's `onStatus` and user control messages) with `push_pending`, then flushes
    /// again.
    Event(StreamEvent),
}

/// One client's unsent bytes and, for a viewer, its place in the stream.
#[derive(Debug)]
pub struct WriteQueue {
    partial: Option<Bytes>,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    /// The next ring entry to send.
    cursor: u64,
    skip_video: bool,
    /// Video tracks other than track 0 (Enhanced RTMP multitrack) that wait for a keyframe
    /// of their own since video was last skipped: each resumes at its own keyframe.
    waiting_tracks: u64,
    audio_enabled: bool,
    video_enabled: bool,
    /// Video frames this viewer did not get because it fell behind.
    pub dropped_frames: u64,
    /// Bytes written to the socket.
    pub bytes_sent: u64,
    /// Which of a frame's encodings this client is sent.
    pub format: OutputFormat,
    /// Which tracks, in which layout (Enhanced RTMP gating, `relay/output.rs`).
    pub filter: TrackFilter,
    /// Video messages this viewer was not sent because it cannot play them (a FourCC
    /// codec it did not declare, with no legacy form).
    pub video_withheld: u64,
    /// Video messages gathered for this viewer.
    pub video_sent: u64,
    /// The ring entries before this one are counted in the two counters above (a blocked
    /// write gathers them again).
    counted_to: u64,
}

impl WriteQueue {
    pub fn new(cursor: u64) -> WriteQueue {
        WriteQueue {
            partial: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            cursor,
            skip_video: false,
            waiting_tracks: 0,
            audio_enabled: true,
            video_enabled: true,
            dropped_frames: 0,
            bytes_sent: 0,
            format: OutputFormat::Rtmp,
            filter: TrackFilter::All,
            video_withheld: 0,
            video_sent: 0,
            counted_to: 0,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Queues bytes of this viewer's own (session output, join-time frames). They go out
    /// before any further ring frame, after the rest of a message already begun.
    pub fn push_pending(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending_bytes += bytes.len();
            self.pending.push_back(bytes);
        }
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes + self.partial.as_ref().map_or(0, Bytes::len)
    }

    pub fn has_pending(&self) -> bool {
        self.partial.is_some() || !self.pending.is_empty()
    }

    pub fn set_audio(&mut self, enabled: bool) {
        self.audio_enabled = enabled;
    }

    pub fn set_video(&mut self, enabled: bool) {
        if enabled && !self.video_enabled {
            self.skip_video = true;
            self.waiting_tracks = !1;
        }
        self.video_enabled = enabled;
    }

    /// Starts skipping video until the next keyframe.
    pub fn skip_to_keyframe(&mut self) {
        self.skip_video = true;
        self.waiting_tracks = !1;
    }

    pub fn is_skipping_video(&self) -> bool {
        self.skip_video
    }

    /// Video tracks other than track 0 in `tracks` (a bit set) wait for a keyframe of their
    /// own before any of their frames is sent: a joiner whose cached GOP did not reach a
    /// track's keyframe must not get that track's inter frames live.
    pub fn wait_for_tracks(&mut self, tracks: u64) {
        self.waiting_tracks |= tracks & !1;
    }

    /// Places a joining viewer's cursor at `seq` (the next live entry).
    pub fn start_at(&mut self, seq: u64) {
        self.cursor = seq;
    }

    /// Moves the cursor to `seq` if it is behind it (the ring dropped frames this viewer had
    /// not sent, or a new origin restarted the numbering). Video resumes at a keyframe.
    pub fn jump_to(&mut self, seq: u64) {
        if self.cursor != seq {
            self.dropped_frames += seq.saturating_sub(self.cursor);
            self.cursor = seq;
            self.skip_video = true;
            self.waiting_tracks = !1;
        }
    }

    /// Whether this entry is one the viewer does not get.
    fn skips(&self, skip_video: bool, waiting: u64, entry: &RingEntry) -> bool {
        let RingEntry::Frame(f) = entry else {
            return false;
        };
        match f.kind {
            FrameKind::Audio => !self.audio_enabled,
            FrameKind::Data | FrameKind::Metadata => false,
            FrameKind::Video => {
                let t = f.tracks();
                if !self.video_enabled {
                    true
                } else if f.sequence_header {
                    false
                } else if t.ids & 1 != 0 {
                    skip_video && !f.keyframe
                } else {
                    // Only other tracks: skipped while one of them waits for a keyframe
                    // this message is not.
                    t.ids & waiting & !t.key_ids != 0
                }
            }
        }
    }

    /// Writes as much as the socket takes. `write` is one vectored write of the gathered
    /// buffers; it returns the bytes written, or `WouldBlock` when the socket is full.
    pub fn flush(
        &mut self,
        ring: &FrameRing,
        scratch: &mut FlushScratch,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<FlushOutcome> {
        if self.cursor < ring.first_seq() {
            // The ring dropped entries this viewer had not sent: it resumes at the oldest
            // one left (video at a keyframe), never reports itself caught up.
            self.jump_to(ring.first_seq());
        }
        loop {
            scratch.sources.clear();
            let mut gather = Gather {
                iov: recycle(std::mem::take(&mut scratch.iov)),
                total: 0,
            };
            if let Some(p) = &self.partial {
                gather.push(&mut scratch.sources, p, Source::Partial);
            }
            let mut pending_gathered = 0;
            for p in &self.pending {
                if gather.is_full() {
                    break;
                }
                gather.push(&mut scratch.sources, p, Source::Pending);
                pending_gathered += 1;
            }
            // Ring frames are only gathered once the client's own bytes are all in, so they
            // keep their order.
            let mut skip_video = self.skip_video;
            let mut waiting = self.waiting_tracks;
            let mut seq = self.cursor;
            let mut event = None;
            if pending_gathered == self.pending.len() {
                while !gather.is_full() {
                    let Some(entry) = ring.get(seq) else { break };
                    match entry {
                        RingEntry::Event { event: e, .. } => {
                            event = Some(*e);
                            break;
                        }
                        RingEntry::Frame(f) => {
                            // A frame without this viewer's encoding came before it joined,
                            // or is one it cannot play.
                            let encoding = f.encoding(self.format, self.filter);
                            let count = f.kind == FrameKind::Video && seq >= self.counted_to;
                            if count {
                                self.counted_to = seq + 1;
                            }
                            if count && encoding.is_none() {
                                self.video_withheld += 1;
                            }
                            if let Some(bytes) = encoding
                                && !self.skips(skip_video, waiting, entry)
                            {
                                if count {
                                    self.video_sent += 1;
                                }
                                if f.kind == FrameKind::Video && f.keyframe {
                                    skip_video = false;
                                }
                                let key_ids = f.tracks().key_ids;
                                waiting &= !key_ids;
                                let source = Source::Ring {
                                    seq,
                                    keyframe: f.keyframe,
                                    key_ids,
                                };
                                gather.push(&mut scratch.sources, bytes, source);
                            }
                        }
                    }
                    seq += 1;
                }
            }
            // `seq` is now the first ring entry not examined.
            if gather.iov.is_empty() {
                scratch.iov = recycle(gather.iov);
                self.advance_skipped(seq);
                return Ok(match event {
                    Some(e) => {
                        self.cursor += 1;
                        FlushOutcome::Event(e)
                    }
                    None => FlushOutcome::Idle,
                });
            }
            let written = write(&gather.iov);
            scratch.iov = recycle(gather.iov);
            let written = match written {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(FlushOutcome::Blocked);
                }
                Err(e) => return Err(e),
            };
            self.bytes_sent += written as u64;
            let complete = self.advance(ring, &scratch.sources, written, seq);
            if !complete {
                return Ok(FlushOutcome::Blocked);
            }
        }
    }

    /// Moves the cursor over entries that were examined and skipped, counting dropped video.
    fn advance_skipped(&mut self, examined_end: u64) {
        if examined_end > self.cursor {
            if self.skip_video {
                self.dropped_frames += examined_end - self.cursor;
            }
            self.cursor = examined_end;
        }
    }

    /// Consumes `written` bytes from the gathered sources. Returns true when all of them
    /// were written.
    fn advance(
        &mut self,
        ring: &FrameRing,
        sources: &[(Source, usize)],
        mut written: usize,
        examined_end: u64,
    ) -> bool {
        for &(source, len) in sources {
            let done = written >= len;
            let took = written.min(len);
            written -= took;
            match source {
                Source::Partial => {
                    if done {
                        self.partial = None;
                    } else if let Some(p) = self.partial.as_mut() {
                        let _ = p.split_to(took);
                    }
                }
                Source::Pending => {
                    let Some(front) = self.pending.pop_front() else {
                        return false;
                    };
                    self.pending_bytes -= front.len();
                    if !done {
                        self.partial = Some(front.slice(took..));
                    }
                }
                Source::Ring {
                    seq,
                    keyframe,
                    key_ids,
                } => {
                    if took == 0 {
                        // Not begun: the cursor stays on it. Entries skipped before it stay
                        // behind the cursor.
                        self.advance_skipped(seq);
                        return false;
                    }
                    self.advance_skipped(seq);
                    if keyframe {
                        self.skip_video = false;
                    }
                    self.waiting_tracks &= !key_ids;
                    self.cursor = seq + 1;
                    if !done
                        && let Some(RingEntry::Frame(f)) = ring.get(seq)
                        && let Some(bytes) = f.encoding(self.format, self.filter)
                    {
                        self.partial = Some(bytes.slice(took..));
                    }
                }
            }
            if !done {
                return false;
            }
        }
        self.advance_skipped(examined_end);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::frame::Frame;

    fn video(seq: u64, keyframe: bool, fill: u8, len: usize) -> RingEntry {
        RingEntry::Frame(Frame {
            seq,
            kind: FrameKind::Video,
            timestamp: seq as u32 * 40,
            keyframe,
            sequence_header: false,
            bytes: Bytes::from(vec![fill; len]),
            payload: Bytes::new(),
            ingested: std::time::Instant::now(),
            encodings: Default::default(),
            tracks: Default::default(),
        })
    }

    fn audio(seq: u64, fill: u8) -> RingEntry {
        RingEntry::Frame(Frame {
            seq,
            kind: FrameKind::Audio,
            timestamp: seq as u32 * 40,
            keyframe: false,
            sequence_header: false,
            bytes: Bytes::from(vec![fill; 10]),
            payload: Bytes::new(),
            ingested: std::time::Instant::now(),
            encodings: Default::default(),
            tracks: Default::default(),
        })
    }

    /// A frame of video track 1 only (Enhanced RTMP multitrack).
    fn track1(seq: u64, keyframe: bool, fill: u8) -> RingEntry {
        let RingEntry::Frame(mut f) = video(seq, false, fill, 5) else {
            unreachable!()
        };
        f.tracks = Some(std::sync::Arc::new(crate::relay::frame::FrameTracks {
            ids: 2,
            key_ids: if keyframe { 2 } else { 0 },
            codecs: Default::default(),
            track0_codec: Default::default(),
            track0: crate::relay::frame::Reduced::Nothing,
            legacy: crate::relay::frame::Reduced::Nothing,
        }));
        RingEntry::Frame(f)
    }

    #[test]
    fn a_track_the_joiner_has_not_started_waits_for_its_own_keyframe() {
        let mut ring = FrameRing::new(0);
        ring.push(track1(0, false, b'x'));
        ring.push(video(1, false, b'p', 5));
        ring.push(track1(2, true, b'K'));
        ring.push(track1(3, false, b'y'));
        let mut q = WriteQueue::new(0);
        q.wait_for_tracks(!0);
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        q.flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
            .unwrap();
        // Track 0 was not told to wait; track 1's inter frame before its keyframe is
        // skipped, and everything from its keyframe on is sent.
        assert_eq!(out, b"pppppKKKKKyyyyy".to_vec());
    }

    /// A socket that takes at most `room` bytes per call and records them.
    fn sink(
        out: &mut Vec<u8>,
        room: usize,
    ) -> impl FnMut(&[IoSlice<'_>]) -> io::Result<usize> + '_ {
        move |iov| {
            let mut n = 0;
            for bytes in iov {
                let take = bytes.len().min(room - n);
                out.extend_from_slice(&bytes[..take]);
                n += take;
                if n == room {
                    break;
                }
            }
            if n == 0 && iov.iter().any(|v| !v.is_empty()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }
    }

    #[test]
    fn pending_goes_before_ring_and_partial_writes_resume_exactly() {
        let mut ring = FrameRing::new(0);
        ring.push(video(0, true, b'K', 100));
        ring.push(audio(1, b'a'));
        let mut q = WriteQueue::new(0);
        q.push_pending(Bytes::from_static(b"hello"));
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        // 7 bytes at a time: cuts across the pending item and into the keyframe.
        loop {
            let outcome = q.flush(&ring, &mut scratch, sink(&mut out, 7)).unwrap();
            if outcome == FlushOutcome::Idle {
                break;
            }
            // Something queued mid-frame must wait for the frame to finish.
            if out.len() == 14 {
                q.push_pending(Bytes::from_static(b"PING"));
            }
        }
        let mut expected = b"hello".to_vec();
        expected.extend(vec![b'K'; 100]);
        expected.extend(b"PING");
        expected.extend(vec![b'a'; 10]);
        assert_eq!(out, expected);
        assert_eq!(q.cursor(), 2);
    }

    #[test]
    fn a_skipping_viewer_gets_audio_and_resumes_video_at_a_keyframe() {
        let mut ring = FrameRing::new(0);
        ring.push(video(0, false, b'i', 5));
        ring.push(audio(1, b'a'));
        ring.push(video(2, false, b'j', 5));
        ring.push(video(3, true, b'K', 5));
        ring.push(video(4, false, b'p', 5));
        let mut q = WriteQueue::new(0);
        q.skip_to_keyframe();
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        let outcome = q
            .flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
            .unwrap();
        assert_eq!(outcome, FlushOutcome::Idle);
        assert_eq!(out, b"aaaaaaaaaaKKKKKppppp".to_vec());
        assert!(!q.is_skipping_video());
        assert_eq!(q.dropped_frames, 2);
    }

    #[test]
    fn a_keyframe_not_yet_begun_does_not_end_the_skip() {
        let mut ring = FrameRing::new(0);
        ring.push(audio(0, b'a'));
        ring.push(video(1, false, b'i', 5));
        ring.push(video(2, true, b'K', 5));
        let mut q = WriteQueue::new(0);
        q.skip_to_keyframe();
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        // Room for the audio frame only.
        assert_eq!(
            q.flush(&ring, &mut scratch, sink(&mut out, 10)).unwrap(),
            FlushOutcome::Blocked
        );
        assert!(q.is_skipping_video());
        ring.push(video(3, false, b'p', 5));
        q.flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
            .unwrap();
        assert_eq!(out, b"aaaaaaaaaaKKKKKppppp".to_vec());
    }

    #[test]
    fn events_stop_the_flush_in_order() {
        let mut ring = FrameRing::new(0);
        ring.push(audio(0, b'a'));
        ring.push(RingEntry::Event {
            seq: 1,
            event: StreamEvent::Unpublished,
        });
        ring.push(audio(2, b'b'));
        let mut q = WriteQueue::new(0);
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        assert_eq!(
            q.flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
                .unwrap(),
            FlushOutcome::Event(StreamEvent::Unpublished)
        );
        q.push_pending(Bytes::from_static(b"EOF"));
        assert_eq!(
            q.flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
                .unwrap(),
            FlushOutcome::Idle
        );
        assert_eq!(out, b"aaaaaaaaaaEOFbbbbbbbbbb".to_vec());
    }

    #[test]
    fn a_cursor_the_ring_dropped_resumes_at_the_next_keyframe_left() {
        let mut ring = FrameRing::new(0);
        for seq in 0..6 {
            ring.push(video(seq, seq == 4, b'v', 5));
        }
        // The ring was capped while this viewer was blocked: entries 0 to 2 are gone.
        ring.trim_before(3);
        let mut q = WriteQueue::new(1);
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        let outcome = q
            .flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
            .unwrap();
        assert_eq!(outcome, FlushOutcome::Idle);
        assert_eq!(out, vec![b'v'; 10], "frames 4 (the keyframe) and 5");
        assert_eq!(q.cursor(), 6);
        assert_eq!(
            q.dropped_frames, 3,
            "1 and 2 fell off the ring, 3 was skipped"
        );
    }

    #[test]
    fn the_scratch_keeps_its_allocation_between_flushes() {
        let mut ring = FrameRing::new(0);
        ring.push(audio(0, b'a'));
        ring.push(audio(1, b'b'));
        let mut q = WriteQueue::new(0);
        let mut scratch = FlushScratch::default();
        let mut out = Vec::new();
        q.flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
            .unwrap();
        let (ptr, cap) = (scratch.iov.as_ptr(), scratch.iov.capacity());
        assert!(cap >= 2);
        ring.push(audio(2, b'c'));
        q.flush(&ring, &mut scratch, sink(&mut out, 1 << 20))
            .unwrap();
        assert_eq!((scratch.iov.as_ptr(), scratch.iov.capacity()), (ptr, cap));
        assert_eq!(out.len(), 30);
    }

    #[test]
    fn a_full_socket_reports_blocked_and_loses_nothing() {
        let mut ring = FrameRing::new(0);
        ring.push(audio(0, b'a'));
        let mut q = WriteQueue::new(0);
        let mut scratch = FlushScratch::default();
        let outcome = q
            .flush(&ring, &mut scratch, |_| {
                Err(io::ErrorKind::WouldBlock.into())
            })
            .unwrap();
        assert_eq!(outcome, FlushOutcome::Blocked);
        assert_eq!(q.cursor(), 0);
    }
}
