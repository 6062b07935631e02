//! Video on demand: one viewer's play of a stored FLV or MP4 file, as a state machine.
//!
//! An application with `vod_dir` serves `rtmp://host/APP/NAME` from `NAME.flv` (else
//! `NAME.mp4`) in that directory when no one publishes `APP/NAME` live (a live stream always
//! wins), the way nginx-rtmp's `play /dir;` does. Each such viewer gets a stream of its own,
//! fed by a [`VodSource`] that holds only its position: the file's [`VodIndex`] (where every
//! frame is, which are keyframes) is built once by the driver and shared by every viewer of
//! the file, on every core.
//!
//! The source reads nothing itself: it asks for the bytes of its next batch of frames
//! ([`FileStep::Read`]), the driver reads them without blocking the shard (from the page
//! cache at once, else on a blocking thread: `src/net/vod_files.rs`) and hands them back
//! ([`VodSource::feed`]). Each FLV frame then goes out straight from that read, its chunk
//! header written over the file's tag header in front of it: a stored file's bytes are
//! copied twice, both times by the kernel (into the read, into the socket). Frames keep the
//! file's own timestamps (a play from 5 s starts near 5000 ms, as Flash Media Server and
//! nginx-rtmp send them) and are released in real time, a lead ahead of their media time:
//! about the player's buffer (Set Buffer Length, capped by `VOD_MAX_LEAD`), so a player
//! fills its buffer at once but the file is never sent whole. Frames go out in batches
//! (`VOD_PACE_BATCH` of media at a time, the player's lead swinging half a batch either side
//! of the buffer), not one by one: a viewer of a file is a stream of its own, and per-frame
//! wake-ups would cost a timer, a fan-out pass and a write per frame per viewer. A viewer that stops reading
//! makes the source wait ([`FileStep::WaitUntil`]), never the queue grow, and is
//! disconnected after `lag_disconnect_ms` like any slow viewer.
//!
//! Every start (play, seek) sends the metadata (with `duration`) and the codec sequence
//! headers first, then frames from the keyframe at or before the position: a decoder can
//! start there and nowhere else. A pause remembers the first frame the viewer has not been
//! sent; the resume continues from exactly there. At the end (of the file, or of the play's
//! `duration`) the stream carries
//! [`StreamEvent::PlayStopped`](super::frame::StreamEvent::PlayStopped).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::frame::RingEntry;
use super::origin::Origin;
use crate::media::vod_index::{Framing, SampleKind, VodIndex};
use crate::performance::{
    FILE_BACKPRESSURE_RETRY, FILE_PREROLL, FILE_READ_MAX, FILE_READ_SIZE, VOD_MAX_LEAD,
    VOD_PACE_BATCH,
};
use crate::rtmp::MediaKind;
use crate::rtmp::chunk::shared_header_in_place;

/// Why a name cannot be a stored file's.
pub const REFUSED_NAME: &str = "the name leaves the VOD directory";

/// The file names a play of `key` may refer to, in the order they are tried: `NAME.flv` then
/// `NAME.mp4` for a bare name, one file for `flv:NAME`, `mp4:NAME.mp4` or a name with its
/// extension. A name that could leave the directory (`..`, also percent-encoded, an absolute
/// path, a backslash or NUL) is refused here, before anything touches the disk; symlinks
/// leading out are refused by the driver, which resolves the path.
pub fn vod_candidates(key: &str) -> Result<Vec<String>, &'static str> {
    let decoded = percent_decode(key).ok_or(REFUSED_NAME)?;
    let (prefix, name) = match decoded.split_once(':') {
        Some((p @ ("mp4" | "flv"), rest)) => (Some(p), rest),
        _ => (None, decoded.as_str()),
    };
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains(['\\', '\0', ':'])
        || name
            .split('/')
            .any(|part| part.is_empty() || part.starts_with('.'));
    if bad {
        return Err(REFUSED_NAME);
    }
    let has = |ext: &str| name.ends_with(ext);
    Ok(match prefix {
        Some("mp4") if has(".mp4") || has(".m4v") || has(".mov") => vec![name.to_owned()],
        Some("mp4") => vec![format!("{name}.mp4")],
        Some(_) if has(".flv") => vec![name.to_owned()],
        Some(_) => vec![format!("{name}.flv")],
        None if has(".flv") || has(".mp4") => vec![name.to_owned()],
        None => vec![format!("{name}.flv"), format!("{name}.mp4")],
    })
}

/// `%XX` decoded; `None` for a malformed escape or bytes that are no UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The bytes of one read of a stored file, owned by the source once fed: an FLV frame's
/// chunk header is written over the file's tag header just before its body
/// (`chunk::shared_header_in_place`), so the frame is sent straight from the read, never
/// copied in user space. The only copies of a stored file's bytes are the kernel's: into
/// this buffer, and into the socket.
pub type FileBuffer = BytesMut;

/// Frames a read prepares at most: the walk over the index stops at the first frame past
/// the read, but a file whose timestamps jump back puts frames from elsewhere in the file
/// between; frames past this many are encoded by copying.
const PREPARED_MAX: usize = 1 << 16;

/// Bytes read before a frame's body, for its chunk header: in an FLV file these are the
/// previous tag's size (4) and the frame's own tag header (11), which the index has made
/// redundant; a format-0 chunk header takes 12 of them.
const HEAD_ROOM: u64 = 15;

/// The RTMP message kind of a stored audio or video sample; `None` for data.
fn media_kind(kind: SampleKind) -> Option<MediaKind> {
    match kind {
        SampleKind::Audio => Some(MediaKind::Audio),
        SampleKind::Video => Some(MediaKind::Video),
        SampleKind::Data => None,
    }
}

/// What the source needs next.
#[derive(Debug)]
pub enum FileStep {
    /// A frame to append to the stream; ask again.
    Frame(RingEntry),
    /// Read `len` bytes at `offset` and hand them to [`VodSource::feed`].
    Read { offset: u64, len: usize },
    /// A read is in flight, or the play is paused: nothing to do until something changes.
    Reading,
    /// Ask again at this time (the next frame is not due yet, or the viewer is behind).
    WaitUntil(Instant),
    /// The play reached its end.
    End,
    /// The file cannot be played; the reason names the file, not the viewer.
    Failed(String),
}

/// The frames a source appended that its viewer may not have been sent yet: (ring
/// sequence, sample index). A pause resumes at the first of them the viewer lacks.
const APPENDED_KEPT: usize = 4096;

pub struct VodSource {
    pub path: Arc<Path>,
    index: Arc<VodIndex>,
    origin: Origin,
    chunk_size: u32,
    /// The next frame to append.
    next: usize,
    /// Frames after this media time are not played (`play`'s duration).
    stop_after: Option<u32>,
    /// `media_base` plays at `clock_base`.
    clock_base: Instant,
    media_base: u32,
    lead: Duration,
    /// Metadata and sequence headers still to send before the frames (0 = metadata).
    intro: Option<usize>,
    /// The last read: `buf` holds the file from `buf_offset`.
    buf: Bytes,
    buf_offset: u64,
    /// Frames from `prepared_from` on whose chunk header was written into `buf` before
    /// their body: the header's length, 0 for a frame that must be encoded by copying (data,
    /// a frame longer than a chunk, an MP4 sample).
    prepared_from: usize,
    prepared: Vec<u8>,
    reading: Option<u64>,
    paused: bool,
    ended: bool,
    appended: VecDeque<(u64, usize)>,
    /// Since when the viewer has been too far behind for the source to go on.
    behind_since: Option<Instant>,
}

impl VodSource {
    /// A play of `index`'s file from `start_ms` (the keyframe at or before it) for
    /// `duration_ms` (`None`: to the end).
    pub fn new(
        path: Arc<Path>,
        index: Arc<VodIndex>,
        now: Instant,
        chunk_size: u32,
        start_ms: u32,
        duration_ms: Option<u32>,
    ) -> VodSource {
        let mut source = VodSource {
            path,
            index,
            origin: Origin::new(0, chunk_size),
            chunk_size,
            next: 0,
            stop_after: duration_ms.map(|d| start_ms.saturating_add(d)),
            clock_base: now,
            media_base: 0,
            lead: FILE_PREROLL,
            intro: Some(0),
            buf: Bytes::new(),
            buf_offset: 0,
            prepared_from: 0,
            prepared: Vec::new(),
            reading: None,
            paused: false,
            ended: false,
            appended: VecDeque::new(),
            behind_since: None,
        };
        source.start(start_ms, now);
        source
    }

    /// The chunk size its frames are encoded at: the viewer's connection must send at it.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn duration_ms(&self) -> u32 {
        self.index.duration_ms
    }

    /// The player buffers `buffer_ms`: send that far ahead (within limits).
    pub fn set_buffer(&mut self, buffer_ms: u32) {
        self.lead = Duration::from_millis(u64::from(buffer_ms)).clamp(FILE_PREROLL, VOD_MAX_LEAD);
    }

    fn start(&mut self, position_ms: u32, now: Instant) {
        self.next = self.index.start_at(position_ms);
        self.media_base = self.index.samples.get(self.next).map_or(0, |s| s.timestamp);
        self.clock_base = now;
        self.intro = Some(0);
        self.ended = false;
        self.paused = false;
        self.appended.clear();
        // Timestamps may go back: a fresh origin (same numbering) must not hold them.
        self.origin = Origin::new(self.origin.next_seq(), self.chunk_size);
    }

    /// Plays from `position_ms` instead (a seek): the stream's unsent frames must already
    /// have been dropped.
    pub fn seek(&mut self, position_ms: u32, now: Instant) {
        self.start(position_ms, now);
    }

    /// Pauses. The viewer's next unsent entry is `first_unsent` (ring sequence): the
    /// stream drops it and everything after, and the resume starts with it.
    pub fn pause(&mut self, first_unsent: u64) {
        if let Some(&(_, sample)) = self.appended.iter().find(|(seq, _)| *seq >= first_unsent) {
            self.next = sample;
            self.ended = false;
        }
        if self.intro.is_some() {
            self.intro = Some(0);
        }
        self.appended.clear();
        self.paused = true;
    }

    /// Resumes after a pause, where it stopped.
    pub fn resume(&mut self, now: Instant) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.media_base = self
            .index
            .samples
            .get(self.next)
            .map_or(self.media_base, |s| s.timestamp);
        self.clock_base = now;
        self.origin = Origin::new(self.origin.next_seq(), self.chunk_size);
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// A read came back: `data` from `offset` (short or empty at the end of the file). The
    /// FLV frames it holds whole, from the next to send on, get their chunk headers written
    /// in front of them.
    pub fn feed(&mut self, offset: u64, mut data: FileBuffer) {
        if self.reading != Some(offset) {
            return;
        }
        self.reading = None;
        self.prepared_from = self.next;
        self.prepared.clear();
        let end = offset + data.len() as u64;
        let index = &*self.index;
        for (i, sample) in index
            .samples
            .iter()
            .enumerate()
            .skip(self.next)
            .take(PREPARED_MAX)
        {
            if sample.offset + u64::from(sample.size) > end {
                break;
            }
            // An FLV tag's body: its tag header lies in front of it.
            let kind =
                media_kind(sample.kind).filter(|_| index.framing(sample.kind) == Framing::Flv);
            let header_len = match kind {
                Some(kind) if sample.offset >= offset + HEAD_ROOM && !index.is_header(i) => {
                    let at = (sample.offset - offset) as usize;
                    shared_header_in_place(
                        &mut data[at - HEAD_ROOM as usize..at],
                        kind.type_id(),
                        sample.timestamp,
                        sample.size as usize,
                        self.chunk_size,
                    )
                    .unwrap_or(0)
                }
                _ => 0,
            };
            self.prepared.push(header_len as u8);
        }
        self.buf = data.freeze();
        self.buf_offset = offset;
    }

    /// When the frame at media time `ts` is due.
    fn due(&self, ts: u32) -> Instant {
        self.clock_base + Duration::from_millis(u64::from(ts.saturating_sub(self.media_base)))
    }

    /// What to do next at `now`. `viewer_behind` says whether the viewer has more unsent
    /// than the source should add to; past `lag_disconnect` of that the source gives up.
    pub fn next(
        &mut self,
        now: Instant,
        viewer_behind: bool,
        lag_disconnect: Duration,
    ) -> FileStep {
        if self.ended || self.paused {
            return FileStep::Reading;
        }
        if viewer_behind {
            let since = *self.behind_since.get_or_insert(now);
            if now.saturating_duration_since(since) > lag_disconnect {
                return FileStep::Failed(format!(
                    "viewer of a stored file read nothing for more than {} ms",
                    lag_disconnect.as_millis()
                ));
            }
            return FileStep::WaitUntil(now + FILE_BACKPRESSURE_RETRY);
        }
        self.behind_since = None;
        let ts = self.media_base;
        if let Some(step) = self.intro {
            let index = self.index.clone();
            if step == 0 {
                self.intro = Some(1);
                let frame = self.origin.data(ts, index.metadata.clone(), true, now);
                return FileStep::Frame(RingEntry::Frame(frame));
            }
            if let Some((kind, payload)) = index.headers.get(step - 1) {
                self.intro = Some(step + 1);
                let kind = media_kind(*kind).unwrap_or(MediaKind::Video);
                let frame = self.origin.media(kind, ts, payload.clone(), now);
                return FileStep::Frame(RingEntry::Frame(frame));
            }
            self.intro = None;
        }
        loop {
            let Some(sample) = self.index.samples.get(self.next).copied() else {
                self.ended = true;
                return FileStep::End;
            };
            if self.stop_after.is_some_and(|stop| sample.timestamp > stop) {
                self.ended = true;
                return FileStep::End;
            }
            if self.index.is_header(self.next) {
                self.next += 1;
                continue;
            }
            // Released in batches, centred on the lead: everything due within the lead
            // plus half a batch, then a sleep until the next frame is due within the lead
            // less half a batch. The player holds the lead on average.
            let due = self.due(sample.timestamp);
            let half = VOD_PACE_BATCH / 2;
            let start = sample.offset;
            let end = start + u64::from(sample.size);
            let have_end = self.buf_offset + self.buf.len() as u64;
            if due > now + self.lead + half {
                if end > have_end {
                    // Nothing more of this read is needed: let its memory go with the
                    // frames sent, while it is still in the cache for the next read.
                    self.buf = Bytes::new();
                    self.prepared.clear();
                }
                return FileStep::WaitUntil(due - self.lead.saturating_sub(half));
            }
            if start < self.buf_offset || end > have_end {
                if self.reading.is_some() {
                    return FileStep::Reading;
                }
                let read_from = start.saturating_sub(HEAD_ROOM);
                if self.buf_offset == read_from && !self.buf.is_empty() {
                    // The last read of exactly this place came back short: the file shrank.
                    return FileStep::Failed(format!(
                        "stored file {} ends inside a frame",
                        self.path.display()
                    ));
                }
                // One read for the whole batch being released, at least FILE_READ_SIZE,
                // at most FILE_READ_MAX: the batch is sent at once and its buffer freed
                // (see the wait above) while still in the cache for the next viewer's read.
                let release_until = now + self.lead + half;
                let batch_end = self.index.samples[self.next..]
                    .iter()
                    .take_while(|s| self.due(s.timestamp) <= release_until)
                    .filter(|s| s.offset >= start)
                    .map(|s| s.offset + u64::from(s.size))
                    .max()
                    .unwrap_or(end);
                let len = ((batch_end.max(end) - read_from) as usize).clamp(
                    FILE_READ_SIZE,
                    FILE_READ_MAX.max((end - read_from) as usize),
                );
                self.reading = Some(read_from);
                self.buf = Bytes::new();
                self.prepared.clear();
                return FileStep::Read {
                    offset: read_from,
                    len,
                };
            }
            let from = (start - self.buf_offset) as usize;
            let body = from..from + sample.size as usize;
            let header_len = self
                .next
                .checked_sub(self.prepared_from)
                .and_then(|k| self.prepared.get(k))
                .map_or(0, |&n| usize::from(n));
            let payload = self.index.payload(&sample, &self.buf[body.clone()]);
            let frame = match media_kind(sample.kind) {
                None => {
                    let payload = Bytes::copy_from_slice(&payload);
                    self.origin.data(sample.timestamp, payload, false, now)
                }
                Some(kind) => {
                    if header_len > 0 {
                        let wire = self.buf.slice(from - header_len..body.end);
                        self.origin
                            .media_encoded(kind, sample.timestamp, &payload, wire, now)
                    } else {
                        self.origin
                            .media_from_slice(kind, sample.timestamp, &payload, now)
                    }
                }
            };
            if self.appended.len() == APPENDED_KEPT {
                self.appended.pop_front();
            }
            self.appended.push_back((frame.seq, self.next));
            self.next += 1;
            return FileStep::Frame(RingEntry::Frame(frame));
        }
    }

    /// Numbers an event after the file's frames.
    pub fn event(&mut self, event: super::frame::StreamEvent) -> RingEntry {
        self.origin.event(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{
        FlvHeader, FlvTag, FlvWriter, TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT_DATA, TAG_TYPE_VIDEO,
    };
    use crate::media::vod_index::index_flv;
    use crate::relay::frame::FrameKind;

    #[test]
    fn names_stay_inside_the_directory() {
        assert_eq!(vod_candidates("clip").unwrap(), ["clip.flv", "clip.mp4"]);
        assert_eq!(vod_candidates("clip.flv").unwrap(), ["clip.flv"]);
        assert_eq!(vod_candidates("mp4:clip.mp4").unwrap(), ["clip.mp4"]);
        assert_eq!(vod_candidates("mp4:clip").unwrap(), ["clip.mp4"]);
        assert_eq!(vod_candidates("flv:clip").unwrap(), ["clip.flv"]);
        assert_eq!(
            vod_candidates("sub/clip").unwrap(),
            ["sub/clip.flv", "sub/clip.mp4"]
        );
        for bad in [
            "../etc/passwd",
            "..",
            ".hidden",
            "",
            "a\\b",
            "/etc/passwd",
            "%2e%2e/secret",
            "%2E%2E%2Fsecret",
            "a/../../b",
            "mp4:../x.mp4",
            "flv:/etc/x",
            "a%00b",
            "bad%zz",
            "a//b",
        ] {
            assert_eq!(vod_candidates(bad), Err(REFUSED_NAME), "{bad:?}");
        }
    }

    /// An FLV with metadata, an AVC header, and a keyframe every second (frames every
    /// 250 ms) for 4 s.
    fn index() -> (Arc<VodIndex>, Bytes) {
        let mut w = FlvWriter::new(
            Vec::new(),
            FlvHeader {
                has_audio: true,
                has_video: true,
            },
        )
        .unwrap();
        let meta = crate::media::vod_index::with_duration(None, 0, &[]);
        let mut tags = vec![
            (TAG_TYPE_SCRIPT_DATA, 0, meta),
            (
                TAG_TYPE_VIDEO,
                0,
                Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
            ),
        ];
        for i in 0..16u32 {
            let first = if i % 4 == 0 { 0x17 } else { 0x27 };
            tags.push((
                TAG_TYPE_VIDEO,
                i * 250,
                Bytes::from(vec![first, 1, 0, 0, 0, i as u8]),
            ));
            tags.push((
                TAG_TYPE_AUDIO,
                i * 250 + 10,
                Bytes::from_static(&[0xAF, 1, 0x21]),
            ));
        }
        for (tag_type, timestamp, payload) in tags {
            w.write_tag(&FlvTag {
                tag_type,
                timestamp,
                payload,
            })
            .unwrap();
        }
        let data = Bytes::from(w.into_inner());
        let index = index_flv(std::io::Cursor::new(data.clone()), data.len() as u64).unwrap();
        (Arc::new(index), data)
    }

    /// Runs the source at `now` until it waits, serving its reads from `data`.
    fn run(
        src: &mut VodSource,
        data: &Bytes,
        now: Instant,
    ) -> (Vec<(FrameKind, u32, u64)>, FileStep) {
        let mut frames = Vec::new();
        loop {
            match src.next(now, false, Duration::from_secs(10)) {
                FileStep::Frame(RingEntry::Frame(f)) => frames.push((f.kind, f.timestamp, f.seq)),
                FileStep::Read { offset, len } => {
                    let end = (offset as usize + len).min(data.len());
                    src.feed(offset, BytesMut::from(&data[offset as usize..end]));
                }
                other => return (frames, other),
            }
        }
    }

    #[test]
    fn a_play_from_the_middle_starts_at_the_keyframe_before_with_headers_first() {
        let (index, data) = index();
        assert_eq!(index.duration_ms, 3760);
        let t0 = Instant::now();
        let mut src = VodSource::new(
            Arc::from(Path::new("/x.flv")),
            index,
            t0,
            4096,
            2600,
            Some(600),
        );
        let (frames, step) = run(&mut src, &data, t0);
        // Metadata, the AVC header, then from the keyframe at 2000 ms, a second ahead plus a
        // batch, but nothing after the stop (2600 + 600 ms): 3250 is past it.
        assert_eq!(frames[0].0, FrameKind::Metadata);
        assert_eq!((frames[1].0, frames[1].1), (FrameKind::Video, 2000));
        assert_eq!((frames[2].0, frames[2].1), (FrameKind::Video, 2000));
        assert!(
            frames[2..].iter().all(|f| f.1 >= 2000 && f.1 <= 3010),
            "{frames:?}"
        );
        assert_eq!(frames.last().unwrap().1, 3010);
        assert!(matches!(step, FileStep::End), "{step:?}");
    }

    /// The media times of `index()`'s frames (after the headers), in file order.
    fn times() -> Vec<u32> {
        (0..16u32).flat_map(|i| [i * 250, i * 250 + 10]).collect()
    }

    /// The newest frame time at or before `ms`.
    fn last_within(ms: u32) -> u32 {
        times().into_iter().filter(|&t| t <= ms).max().unwrap()
    }

    const BATCH_MS: u32 = VOD_PACE_BATCH.as_millis() as u32;

    #[test]
    fn frames_go_out_a_batch_at_a_time_a_lead_ahead() {
        let (index, data) = index();
        let t0 = Instant::now();
        let mut src = VodSource::new(Arc::from(Path::new("/x.flv")), index, t0, 4096, 0, None);
        // The lead (1 s) plus half a batch.
        let (frames, step) = run(&mut src, &data, t0);
        let first_batch_end = last_within(1000 + BATCH_MS / 2);
        assert_eq!(frames.last().unwrap().1, first_batch_end);
        // It sleeps until the next frame comes within the lead less half a batch, then
        // sends a batch more.
        let next = times().into_iter().find(|&t| t > first_batch_end).unwrap();
        let FileStep::WaitUntil(at) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            at,
            t0 + Duration::from_millis(u64::from(next + BATCH_MS / 2 - 1000))
        );
        let (frames, step) = run(&mut src, &data, at);
        let expected: Vec<u32> = times()
            .into_iter()
            .filter(|&t| t > first_batch_end && t <= next + BATCH_MS)
            .collect();
        assert!(expected.len() > 1, "a batch is more than one frame");
        assert_eq!(frames.iter().map(|f| f.1).collect::<Vec<_>>(), expected);
        assert!(matches!(step, FileStep::WaitUntil(_)), "{step:?}");
    }

    #[test]
    fn flv_frames_are_sent_from_the_read_itself_encoded_as_any_frame() {
        use crate::rtmp::chunk::{encode_shared, shared_payload_pieces};
        let (index, data) = index();
        let t0 = Instant::now();
        let mut src = VodSource::new(Arc::from(Path::new("/x.flv")), index, t0, 4096, 0, None);
        let mut reads = Vec::new();
        let mut media = 0;
        loop {
            match src.next(t0 + Duration::from_secs(10), false, Duration::from_secs(10)) {
                FileStep::Frame(RingEntry::Frame(f)) => {
                    let type_id = match f.kind {
                        FrameKind::Audio => 8,
                        FrameKind::Video => 9,
                        _ => 18,
                    };
                    let payload: Vec<u8> =
                        shared_payload_pieces(&f.bytes, type_id, f.timestamp, 4096)
                            .flatten()
                            .copied()
                            .collect();
                    assert_eq!(
                        f.bytes,
                        encode_shared(type_id, f.timestamp, &payload, 4096),
                        "{:?} at {}",
                        f.kind,
                        f.timestamp
                    );
                    if !f.sequence_header && matches!(f.kind, FrameKind::Audio | FrameKind::Video) {
                        media += 1;
                        let at = f.bytes.as_ptr() as usize;
                        assert!(
                            reads
                                .iter()
                                .any(|r: &std::ops::Range<usize>| r.contains(&at)),
                            "frame at {} was copied",
                            f.timestamp
                        );
                    }
                }
                FileStep::Read { offset, len } => {
                    // Small reads: frames straddle them and reads start mid-file.
                    let end = (offset as usize + len.min(40)).min(data.len());
                    let buf = BytesMut::from(&data[offset as usize..end]);
                    let at = buf.as_ptr() as usize;
                    reads.push(at..at + buf.len());
                    src.feed(offset, buf);
                }
                FileStep::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(media, 32);
    }

    #[test]
    fn seek_restarts_at_a_keyframe_and_pause_resumes_at_the_first_unsent_frame() {
        let (index, data) = index();
        let t0 = Instant::now();
        let mut src = VodSource::new(Arc::from(Path::new("/x.flv")), index, t0, 4096, 0, None);
        let (frames, _) = run(&mut src, &data, t0);
        assert_eq!(frames.last().unwrap().1, last_within(1000 + BATCH_MS / 2));
        src.seek(2100, t0);
        let (frames, _) = run(&mut src, &data, t0);
        assert_eq!(frames[0].0, FrameKind::Metadata);
        assert_eq!(frames[2].1, 2000, "from the keyframe before 2100");
        assert_eq!(frames.last().unwrap().1, last_within(3000 + BATCH_MS / 2));
        // The viewer was sent up to and including 2260; it pauses.
        let first_unsent = frames.iter().find(|f| f.1 == 2500).unwrap().2;
        src.pause(first_unsent);
        assert!(matches!(
            src.next(t0, false, Duration::from_secs(1)),
            FileStep::Reading
        ));
        let later = t0 + Duration::from_secs(30);
        src.resume(later);
        let (frames, _) = run(&mut src, &data, later);
        assert_eq!(
            frames[0].1, 2500,
            "resumes with the first unsent frame: {frames:?}"
        );
        assert_eq!(frames[0].0, FrameKind::Video);
    }
}
