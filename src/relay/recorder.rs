//! Recording (DVR): which bytes of a live stream go to which file, and when.
//!
//! A stream is recorded once per host, on its origin shard: the shard feeds every frame its
//! origin makes to the stream's [`Recorder`] (next to the ring, so viewers cost nothing
//! more), and the recorder answers with [`RecordOp`]s, plain values the driver hands to the
//! disk writer thread (`src/net/record_writer.rs`). Nothing here touches a file: opening,
//! writing, the FLV index rewrite on close and the `on_record_done` call are the writer's.
//!
//! The decisions:
//! - **Where a file starts.** At a video keyframe (or, for a stream without video, at any
//!   audio frame), so a player can start decoding at the first byte. The latest metadata
//!   and codec headers are kept all along and repeated at the start of every file,
//!   stamped 0; timestamps in a file count from its first keyframe.
//! - **Where a segment ends.** At the first keyframe at or after `record_segment_ms` of
//!   media or `record_max_bytes` of file; that keyframe starts the next segment, so every
//!   segment starts with a keyframe and none of the stream falls between two.
//! - **When bytes go to the disk.** Tags (FLV) or finished fragments (MP4) are gathered
//!   and handed over at most `record_flush_ms` after the first of them arrived: a crash
//!   loses at most that much of the open file. Payloads are slices of each frame's shared
//!   buffer, never copies.
//! - **File names.** [`render_file_name`] fills the operator's template; the stream key
//!   is hostile (a publisher picks it), so it is reduced to safe characters and no part of
//!   the name can climb out of `record_dir`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::frame::{Frame, FrameKind};
use crate::config::{AppConfig, RecordFormat};
use crate::media::flv::{TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT_DATA, TAG_TYPE_VIDEO};
use crate::media::flv_file::{self, Keyframe};
use crate::media::fmp4::{Fmp4Muxer, SampleKind};
use crate::rtmp::chunk::shared_payload_pieces;

/// Identifies one file being written, unique in the process (the shard id in the top
/// bits), so the writer thread can tell every shard's files apart.
pub type RecordingId = u64;

/// What the disk writer is asked to do, in order, for one file.
#[derive(Debug)]
pub enum RecordOp {
    /// Create `path` (under the record directory) for recording `id`.
    Open {
        id: RecordingId,
        path: PathBuf,
        app: Arc<str>,
        stream: Arc<str>,
        on_done: Option<Arc<str>>,
    },
    /// Append these bytes, in order.
    Write { id: RecordingId, data: Vec<Bytes> },
    /// The file is complete: for FLV, rewrite its metadata with `index`; then close it and
    /// call `on_done`.
    Close {
        id: RecordingId,
        index: Option<FlvIndex>,
    },
}

impl RecordOp {
    pub fn id(&self) -> RecordingId {
        match self {
            RecordOp::Open { id, .. } | RecordOp::Write { id, .. } | RecordOp::Close { id, .. } => {
                *id
            }
        }
    }
}

/// What an FLV file's closing rewrite needs: the metadata it started with, where its
/// media start, its duration and keyframes.
#[derive(Debug, Clone)]
pub struct FlvIndex {
    /// The original `onMetaData` body (empty if the stream had none).
    pub metadata: Bytes,
    /// Byte position where the media start, after the original metadata tag.
    pub media_start: u64,
    pub media_len: u64,
    pub duration_ms: u32,
    pub keyframes: Vec<Keyframe>,
}

/// An application's recording settings, shared by its streams' recorders.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    pub format: RecordFormat,
    pub dir: Arc<Path>,
    pub file_template: Arc<str>,
    pub segment_ms: u32,
    pub max_bytes: u64,
    pub flush: Duration,
    pub on_done: Option<Arc<str>>,
    /// The chunk size frames are encoded with (to find their payloads).
    pub chunk_size: u32,
}

impl RecordSettings {
    pub fn from_app(app: &AppConfig, chunk_size: u32) -> RecordSettings {
        RecordSettings {
            format: app.record_format,
            dir: Arc::from(app.record_dir.as_path()),
            file_template: Arc::from(app.record_file.as_str()),
            segment_ms: app.record_segment_ms.min(u64::from(u32::MAX)) as u32,
            max_bytes: app.record_max_bytes,
            flush: app.record_flush(),
            on_done: (!app.on_record_done.is_empty())
                .then(|| Arc::from(app.on_record_done.as_str())),
            chunk_size,
        }
    }
}

/// What the API shows of a stream's recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordStatus {
    /// "off", "waiting" (for a keyframe), "recording", or "failed".
    pub state: &'static str,
    /// The file being written, relative to the record directory.
    pub file: Option<String>,
    /// Files finished since the stream started.
    pub files: u64,
    /// Why the last recording stopped on its own, if it did.
    pub error: Option<String>,
}

enum State {
    Idle,
    /// Started: the file opens at the next keyframe.
    Waiting,
    Recording(Segment),
}

enum Body {
    Flv {
        /// Where the media start (after the header and the original metadata tag).
        media_start: u64,
        keyframes: Vec<Keyframe>,
        metadata: Bytes,
    },
    Mp4(Box<Fmp4Muxer>),
}

struct Segment {
    id: RecordingId,
    file: String,
    /// The stream timestamp this file's time 0 is.
    start_ts: u32,
    /// Newest file-relative timestamp written.
    last_ms: u32,
    /// Bytes of the file so far, handed over or pending.
    len: u64,
    pending: Vec<Bytes>,
    /// When the oldest pending bytes arrived.
    pending_since: Option<Instant>,
    scratch: BytesMut,
    body: Body,
}

/// One stream's recording, on its origin shard.
pub struct Recorder {
    settings: Arc<RecordSettings>,
    app: Arc<str>,
    stream: Arc<str>,
    metadata: Option<Frame>,
    video_header: Option<Frame>,
    audio_header: Option<Frame>,
    state: State,
    /// Segments opened since this recorder was created (`{seq}`).
    segments: u64,
    files_done: u64,
    error: Option<String>,
}

impl Recorder {
    pub fn new(settings: Arc<RecordSettings>, app: &str, stream: &str) -> Recorder {
        Recorder {
            settings,
            app: Arc::from(app),
            stream: Arc::from(stream),
            metadata: None,
            video_header: None,
            audio_header: None,
            state: State::Idle,
            segments: 0,
            files_done: 0,
            error: None,
        }
    }

    pub fn is_active(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Starts recording: the first file opens at the next keyframe.
    pub fn start(&mut self) {
        if matches!(self.state, State::Idle) {
            self.state = State::Waiting;
            self.error = None;
        }
    }

    /// Stops recording: the open file, if any, is finished and closed.
    pub fn stop(&mut self, out: &mut Vec<RecordOp>) {
        if let State::Recording(seg) = std::mem::replace(&mut self.state, State::Idle) {
            self.finish(seg, out);
        }
    }

    /// The writer could not write recording `id`: it is over (the writer has dropped the
    /// file); the stream and its viewers go on.
    pub fn failed(&mut self, id: RecordingId, reason: String) -> bool {
        if matches!(&self.state, State::Recording(seg) if seg.id == id) {
            self.state = State::Idle;
            self.error = Some(reason);
            return true;
        }
        false
    }

    pub fn status(&self) -> RecordStatus {
        let (state, file) = match &self.state {
            State::Idle if self.error.is_some() => ("failed", None),
            State::Idle => ("off", None),
            State::Waiting => ("waiting", None),
            State::Recording(seg) => ("recording", Some(seg.file.clone())),
        };
        RecordStatus {
            state,
            file,
            files: self.files_done,
            error: self.error.clone(),
        }
    }

    /// The open file's pending bytes, if they have waited `flush` or longer.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<RecordOp>) {
        if let State::Recording(seg) = &mut self.state
            && seg
                .pending_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.settings.flush)
        {
            seg.flush(out);
        }
    }

    /// When the open file's pending bytes are due, if any are pending.
    pub fn next_flush(&self) -> Option<Instant> {
        match &self.state {
            State::Recording(seg) => seg.pending_since.map(|t| t + self.settings.flush),
            _ => None,
        }
    }

    /// A frame the origin made. `wall_ms` is the wall clock (Unix ms) for file names;
    /// `id` makes a new recording id when a file opens.
    pub fn push(
        &mut self,
        f: &Frame,
        now: Instant,
        wall_ms: u64,
        id: &mut dyn FnMut() -> RecordingId,
        out: &mut Vec<RecordOp>,
    ) {
        match f.kind {
            FrameKind::Metadata => self.metadata = Some(f.clone()),
            FrameKind::Video if f.sequence_header => self.video_header = Some(f.clone()),
            FrameKind::Audio if f.sequence_header => self.audio_header = Some(f.clone()),
            _ => {}
        }
        // A file starts at a keyframe, or at any audio frame of a stream without video.
        let starts_file = f.keyframe
            || (f.kind == FrameKind::Audio && !f.sequence_header && self.video_header.is_none());
        let split = match &self.state {
            State::Idle => return,
            State::Waiting => starts_file,
            State::Recording(seg) => {
                starts_file && {
                    let ms = f.timestamp.wrapping_sub(seg.start_ts);
                    (self.settings.segment_ms > 0
                        && (ms as i32) >= 0
                        && ms >= self.settings.segment_ms)
                        || (self.settings.max_bytes > 0 && seg.len >= self.settings.max_bytes)
                }
            }
        };
        if split {
            if let State::Recording(seg) = std::mem::replace(&mut self.state, State::Waiting) {
                self.finish(seg, out);
            }
            self.open(f, now, wall_ms, id(), out);
        } else if matches!(self.state, State::Waiting) {
            return;
        }
        let State::Recording(seg) = &mut self.state else {
            return;
        };
        let ts = rel(f.timestamp, seg.start_ts);
        seg.last_ms = seg.last_ms.max(ts);
        let chunk_size = self.settings.chunk_size;
        match &mut seg.body {
            Body::Flv {
                media_start,
                keyframes,
                ..
            } => {
                if f.keyframe {
                    keyframes.push(Keyframe {
                        time_ms: ts,
                        offset: seg.len - *media_start,
                    });
                }
                let pieces = payload(f, chunk_size);
                let len = push_flv_tag(
                    &mut seg.scratch,
                    &mut seg.pending,
                    tag_type(f.kind),
                    ts,
                    pieces,
                );
                seg.len += len;
                seg.pending_since.get_or_insert(now);
            }
            Body::Mp4(mux) => {
                let kind = match f.kind {
                    FrameKind::Video if !f.sequence_header => SampleKind::Video,
                    FrameKind::Audio if !f.sequence_header => SampleKind::Audio,
                    _ => return,
                };
                let mut fragments = mux
                    .push(kind, ts, f.keyframe, payload(f, chunk_size))
                    .unwrap_or_default();
                // A fragment also ends when the flush interval is up, so that a crash
                // loses at most that much.
                if mux
                    .buffered_since()
                    .is_some_and(|t| ts.saturating_sub(t) >= self.settings.flush.as_millis() as u32)
                {
                    fragments.extend(mux.fragment());
                }
                if !fragments.is_empty() {
                    // A fragment already gathers at most a flush interval of media: hand
                    // it over at once.
                    seg.len += fragments.iter().map(|b| b.len() as u64).sum::<u64>();
                    seg.pending.extend(fragments);
                    seg.flush(out);
                }
            }
        }
        if seg
            .pending_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.settings.flush)
        {
            seg.flush(out);
        }
    }

    /// Opens a file starting at `f` (a keyframe), with the headers repeated first.
    fn open(
        &mut self,
        f: &Frame,
        now: Instant,
        wall_ms: u64,
        id: RecordingId,
        out: &mut Vec<RecordOp>,
    ) {
        let seq = self.segments;
        self.segments += 1;
        let file = render_file_name(
            &self.settings.file_template,
            &self.app,
            &self.stream,
            wall_ms,
            seq,
            self.settings.format.extension(),
        );
        out.push(RecordOp::Open {
            id,
            path: self.settings.dir.join(&file),
            app: self.app.clone(),
            stream: self.stream.clone(),
            on_done: self.settings.on_done.clone(),
        });
        let mut pending = Vec::new();
        let mut scratch = BytesMut::with_capacity(4096);
        let (body, len) = match self.settings.format {
            RecordFormat::Flv => {
                let has_video = self.video_header.is_some() || f.kind == FrameKind::Video;
                let has_audio = self.audio_header.is_some();
                let mut len = flv_file::FILE_HEADER_LEN;
                pending.push(Bytes::copy_from_slice(&flv_file::file_header(
                    has_audio, has_video,
                )));
                let metadata = self
                    .metadata
                    .as_ref()
                    .map(|m| m.payload.clone())
                    .unwrap_or_default();
                if !metadata.is_empty() {
                    len += push_flv_tag(
                        &mut scratch,
                        &mut pending,
                        TAG_TYPE_SCRIPT_DATA,
                        0,
                        vec![metadata.clone()],
                    );
                }
                let media_start = len;
                for h in [&self.video_header, &self.audio_header]
                    .into_iter()
                    .flatten()
                {
                    len += push_flv_tag(
                        &mut scratch,
                        &mut pending,
                        tag_type(h.kind),
                        0,
                        vec![h.payload.clone()],
                    );
                }
                (
                    Body::Flv {
                        media_start,
                        keyframes: Vec::new(),
                        metadata,
                    },
                    len,
                )
            }
            RecordFormat::Mp4 => {
                let video = self.video_header.as_ref().map(|h| h.payload.clone());
                let audio = self.audio_header.as_ref().map(|h| h.payload.clone());
                let (mux, init) = Fmp4Muxer::new(video, audio);
                let len = init.len() as u64;
                pending.push(init);
                (Body::Mp4(Box::new(mux)), len)
            }
        };
        self.state = State::Recording(Segment {
            id,
            file,
            start_ts: f.timestamp,
            last_ms: 0,
            len,
            pending,
            pending_since: Some(now),
            scratch,
            body,
        });
    }

    /// Hands over what is pending and closes the file.
    fn finish(&mut self, mut seg: Segment, out: &mut Vec<RecordOp>) {
        let index = match &mut seg.body {
            Body::Flv {
                media_start,
                keyframes,
                metadata,
            } => Some(FlvIndex {
                metadata: metadata.clone(),
                media_start: *media_start,
                media_len: seg.len - *media_start,
                duration_ms: seg.last_ms,
                keyframes: std::mem::take(keyframes),
            }),
            Body::Mp4(mux) => {
                let fragment = mux.finish();
                seg.len += fragment.iter().map(|b| b.len() as u64).sum::<u64>();
                seg.pending.extend(fragment);
                None
            }
        };
        seg.flush(out);
        out.push(RecordOp::Close { id: seg.id, index });
        self.files_done += 1;
    }
}

impl Segment {
    fn flush(&mut self, out: &mut Vec<RecordOp>) {
        self.pending_since = None;
        if !self.pending.is_empty() {
            out.push(RecordOp::Write {
                id: self.id,
                data: std::mem::take(&mut self.pending),
            });
        }
    }
}

/// A file-relative timestamp: audio stamped a little before the first keyframe is
/// clamped to 0 rather than wrapping.
fn rel(ts: u32, start: u32) -> u32 {
    let d = ts.wrapping_sub(start) as i32;
    d.max(0) as u32
}

fn tag_type(kind: FrameKind) -> u8 {
    match kind {
        FrameKind::Audio => TAG_TYPE_AUDIO,
        FrameKind::Video => TAG_TYPE_VIDEO,
        FrameKind::Metadata | FrameKind::Data => TAG_TYPE_SCRIPT_DATA,
    }
}

/// The frame's payload as slices of its shared encoding (or its kept payload).
fn payload(f: &Frame, chunk_size: u32) -> Vec<Bytes> {
    if !f.payload.is_empty() {
        return vec![f.payload.clone()];
    }
    shared_payload_pieces(&f.bytes, tag_type(f.kind), f.timestamp, chunk_size)
        .map(|piece| f.bytes.slice_ref(piece))
        .collect()
}

/// Appends one FLV tag made of `pieces` to `pending`; returns its length in the file.
fn push_flv_tag(
    scratch: &mut BytesMut,
    pending: &mut Vec<Bytes>,
    tag_type: u8,
    ts: u32,
    pieces: Vec<Bytes>,
) -> u64 {
    let len: usize = pieces.iter().map(Bytes::len).sum();
    scratch.reserve(64);
    flv_file::put_tag_header(scratch, tag_type, len, ts);
    pending.push(scratch.split().freeze());
    pending.extend(pieces);
    flv_file::put_back_pointer(scratch, len);
    pending.push(scratch.split().freeze());
    flv_file::tag_len(len)
}

/// A name part from a hostile source: letters, digits, '-', '_', '.' kept, the rest
/// (slashes, NULs, spaces, non-ASCII) replaced by '_'; no leading '.', at most 128 bytes.
pub fn sanitize(part: &str) -> String {
    let mut s: String = part
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

/// Civil date and time (UTC) of a Unix time in ms: (year, month, day, h, m, s, ms).
fn civil(unix_ms: u64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = (unix_ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        (unix_ms % 1000) as u32,
    )
}

/// The file name (relative to the record directory) for a segment of `app/stream`
/// starting at `unix_ms`. Every part of the result is a plain name: substituted values
/// are sanitized, and any empty, `.` or `..` part left by the template is dropped, so the
/// path cannot leave the directory.
pub fn render_file_name(
    template: &str,
    app: &str,
    stream: &str,
    unix_ms: u64,
    seq: u64,
    ext: &str,
) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(unix_ms);
    let mut out = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        let field = |name: &str| rest.starts_with(name).then_some(name.len());
        let (value, used): (String, usize) = if c == '{' {
            if let Some(n) = field("{app}") {
                (sanitize(app), n)
            } else if let Some(n) = field("{stream}") {
                (sanitize(stream), n)
            } else if let Some(n) = field("{time}") {
                (
                    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{ms:03}"),
                    n,
                )
            } else if let Some(n) = field("{unix}") {
                ((unix_ms / 1000).to_string(), n)
            } else if let Some(n) = field("{unix_ms}") {
                (unix_ms.to_string(), n)
            } else if let Some(n) = field("{seq}") {
                (seq.to_string(), n)
            } else if let Some(n) = field("{ext}") {
                (ext.to_owned(), n)
            } else {
                ("{".to_owned(), 1)
            }
        } else if c == '%' && rest.len() >= 2 {
            let v = match rest.as_bytes()[1] {
                b'Y' => Some(format!("{y:04}")),
                b'm' => Some(format!("{mo:02}")),
                b'd' => Some(format!("{d:02}")),
                b'H' => Some(format!("{h:02}")),
                b'M' => Some(format!("{mi:02}")),
                b'S' => Some(format!("{s:02}")),
                b'%' => Some("%".to_owned()),
                _ => None,
            };
            match v {
                Some(v) => (v, 2),
                None => ("%".to_owned(), 1),
            }
        } else {
            (c.to_string(), c.len_utf8())
        };
        out.push_str(&value);
        rest = &rest[used..];
    }
    let parts: Vec<&str> = out
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    if parts.is_empty() {
        return format!("{}-{unix_ms}.{ext}", sanitize(stream));
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::encode_shared;

    #[test]
    fn hostile_stream_keys_stay_in_the_directory() {
        let t = "{app}/{stream}-{time}.{ext}";
        for key in [
            "../../etc/passwd",
            "/abs",
            "..",
            "a\0b",
            "%2e%2e/x",
            "..\\..\\x",
        ] {
            let name = render_file_name(t, "live", key, 0, 0, "flv");
            let path = Path::new(&name);
            assert!(path.is_relative(), "{name}");
            assert!(
                path.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{name}"
            );
            assert_eq!(
                path.components().count(),
                2,
                "{name}: one directory, one file"
            );
        }
        assert_eq!(
            render_file_name("../{stream}/%Y/x", "live", "k", 0, 0, "flv"),
            "k/1970/x"
        );
    }

    #[test]
    fn names_carry_the_start_time_in_utc() {
        // 2026-12-02 14:27:37.123 UTC
        let ms = 1_796_221_657_123;
        assert_eq!(
            render_file_name(
                "{app}/{stream}-{time}-{seq}.{ext}",
                "live",
                "cam",
                ms,
                3,
                "mp4"
            ),
            "live/cam-20261202-142737-123-3.mp4"
        );
        assert_eq!(
            render_file_name("%Y-%m-%d/%H%M%S_{unix}", "a", "b", ms, 0, "flv"),
            "2026-12-02/142737_1796221657"
        );
    }

    fn frame(kind: FrameKind, ts: u32, key: bool, sh: bool, payload: &[u8]) -> Frame {
        let bytes = encode_shared(tag_type(kind), ts, payload, 128);
        Frame {
            seq: 0,
            kind,
            timestamp: ts,
            keyframe: key,
            sequence_header: sh,
            bytes,
            payload: if sh || kind == FrameKind::Metadata {
                Bytes::copy_from_slice(payload)
            } else {
                Bytes::new()
            },
            ingested: Instant::now(),
            encodings: Default::default(),
            tracks: None,
        }
    }

    #[test]
    fn segments_start_at_keyframes_with_headers_and_lose_nothing() {
        use crate::media::flv::FlvReader;
        let settings = Arc::new(RecordSettings {
            format: RecordFormat::Flv,
            dir: Arc::from(Path::new("/rec")),
            file_template: Arc::from("{stream}-{seq}.{ext}"),
            segment_ms: 1000,
            max_bytes: 0,
            flush: Duration::from_millis(1000),
            on_done: None,
            chunk_size: 128,
        });
        let mut r = Recorder::new(settings, "live", "cam");
        r.start();
        let now = Instant::now();
        let mut next = 0;
        let mut id = || {
            next += 1;
            next
        };
        let mut ops = Vec::new();
        r.push(
            &frame(FrameKind::Video, 0, false, true, &[0x17, 0, 0, 0, 0, 1]),
            now,
            0,
            &mut id,
            &mut ops,
        );
        r.push(
            &frame(FrameKind::Video, 10, false, false, &[0x27, 1, 0, 0, 0, 9]),
            now,
            0,
            &mut id,
            &mut ops,
        );
        assert!(ops.is_empty(), "nothing before the first keyframe");
        let big = [vec![0x17, 1, 0, 0, 0], vec![7u8; 500]].concat();
        let mut media = 0;
        for i in 0..50u32 {
            let ts = 100 + i * 100;
            let key = i % 7 == 0;
            let body = if key {
                big.clone()
            } else {
                vec![0x27, 1, 0, 0, 0, i as u8]
            };
            r.push(
                &frame(FrameKind::Video, ts, key, false, &body),
                now,
                0,
                &mut id,
                &mut ops,
            );
            media += 1;
        }
        r.stop(&mut ops);
        // Gather each file's bytes.
        let mut files: Vec<(PathBuf, Vec<u8>, Option<FlvIndex>)> = Vec::new();
        for op in ops {
            match op {
                RecordOp::Open { path, .. } => files.push((path, Vec::new(), None)),
                RecordOp::Write { data, .. } => {
                    for b in data {
                        files.last_mut().unwrap().1.extend_from_slice(&b);
                    }
                }
                RecordOp::Close { index, .. } => files.last_mut().unwrap().2 = index,
            }
        }
        assert_eq!(
            files.len(),
            4,
            "keyframes every 0.7 s from 0.1 s, 1 s segments: cut at 1.5, 2.9 and 4.3 s"
        );
        let mut seen = 0;
        for (i, (path, bytes, index)) in files.iter().enumerate() {
            assert_eq!(path, &PathBuf::from(format!("/rec/cam-{i}.flv")));
            let (_, reader) = FlvReader::new(Bytes::from(bytes.clone())).unwrap();
            let tags: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
            assert_eq!(&tags[0].payload[..2], &[0x17, 0], "sequence header first");
            assert_eq!(&tags[1].payload[..2], &[0x17, 1], "then a keyframe");
            assert_eq!(tags[1].timestamp, 0);
            seen += tags.len() - 1;
            let index = index.as_ref().unwrap();
            assert_eq!(
                index.keyframes[0].offset,
                flv_file::tag_len(6),
                "after the header"
            );
            assert_eq!(index.media_start + index.media_len, bytes.len() as u64);
        }
        assert_eq!(seen, media);
    }
}
