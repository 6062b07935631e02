//! A stored FLV file as the source of a stream, paced in real time.
//!
//! An application with `recordings_dir` serves `rtmp://host/APP/NAME` from `NAME.flv` in
//! that directory when no one publishes `APP/NAME` live (a live stream always wins), the way
//! nginx-rtmp's `play /dir;` does: each such viewer gets a stream of its own, fed from the
//! start of the file by a [`FileSource`].
//!
//! The source reads nothing itself: it asks for the next piece of the file
//! ([`FileStep::Read`]), and the driver reads it without blocking the shard (io_uring in
//! `src/net/file_reader.rs`) and hands the bytes back. Tags are parsed as they arrive
//! (`media/flv.rs`), encoded once like a publisher's messages (`origin.rs`), and appended to
//! the stream a second ahead of their media time so players can buffer. A viewer that stops
//! reading makes the source wait ([`FileStep::WaitUntil`]), never the queue grow, and is
//! disconnected after `lag_disconnect_ms` like any slow viewer. At the end of the file the
//! stream carries [`StreamEvent::PlayStopped`](super::frame::StreamEvent::PlayStopped).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::frame::RingEntry;
use super::origin::Origin;
use crate::media::flv::{
    FlvStreamDecoder, FlvTag, TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT_DATA, TAG_TYPE_VIDEO,
};
use crate::performance::{FILE_BACKPRESSURE_RETRY, FILE_PREROLL, FILE_READ_SIZE};
use crate::rtmp::MediaKind;

/// The file a play of `key` refers to in `dir`, if `key` is a plain file name (no path
/// separators, no `..`): a viewer must not read outside the directory.
pub fn recording_path(dir: &Path, key: &str) -> Option<PathBuf> {
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return None;
    }
    let file = if key.ends_with(".flv") {
        key.to_owned()
    } else {
        format!("{key}.flv")
    };
    Some(dir.join(file))
}

/// What the source needs next.
#[derive(Debug)]
pub enum FileStep {
    /// A frame to append to the stream; ask again.
    Frame(RingEntry),
    /// Read `len` bytes at `offset` and hand them to [`FileSource::feed`].
    Read { offset: u64, len: usize },
    /// A read is in flight: nothing to do until it comes back.
    Reading,
    /// Ask again at this time (the next tag is not due yet, or the viewer is behind).
    WaitUntil(Instant),
    /// The whole file has been appended.
    End,
    /// The file cannot be played; the reason names the file, not the viewer.
    Failed(String),
}

pub struct FileSource {
    pub path: Arc<Path>,
    decoder: FlvStreamDecoder,
    buf: BytesMut,
    next_offset: u64,
    reading: bool,
    at_end: bool,
    ended: bool,
    started: Instant,
    first_ts: Option<u32>,
    origin: Origin,
    /// Parsed, waiting for its time.
    next_tag: Option<FlvTag>,
    /// Since when the viewer has been too far behind for the source to go on.
    behind_since: Option<Instant>,
}

impl FileSource {
    pub fn new(path: PathBuf, now: Instant, chunk_size: u32) -> FileSource {
        FileSource {
            path: path.into(),
            decoder: FlvStreamDecoder::new(),
            buf: BytesMut::new(),
            next_offset: 0,
            reading: false,
            at_end: false,
            ended: false,
            started: now,
            first_ts: None,
            origin: Origin::new(0, chunk_size),
            next_tag: None,
            behind_since: None,
        }
    }

    /// A read came back: `data` from `offset` (empty at the end of the file).
    pub fn feed(&mut self, offset: u64, data: Bytes) {
        if offset != self.next_offset {
            return;
        }
        self.reading = false;
        if data.is_empty() {
            self.at_end = true;
        } else {
            self.next_offset += data.len() as u64;
            self.buf.extend_from_slice(&data);
        }
    }

    /// What to do next at `now`. `viewer_behind` says whether the viewer has more unsent
    /// than the source should add to; past `lag_disconnect` of that the source gives up.
    pub fn next(
        &mut self,
        now: Instant,
        viewer_behind: bool,
        lag_disconnect: Duration,
    ) -> FileStep {
        if self.ended {
            return FileStep::Reading;
        }
        if viewer_behind {
            let since = *self.behind_since.get_or_insert(now);
            if now.saturating_duration_since(since) > lag_disconnect {
                return FileStep::Failed(format!(
                    "viewer of a recording read nothing for more than {} ms",
                    lag_disconnect.as_millis()
                ));
            }
            return FileStep::WaitUntil(now + FILE_BACKPRESSURE_RETRY);
        }
        self.behind_since = None;
        loop {
            let tag = match self.next_tag.take() {
                Some(tag) => tag,
                None => match self.decoder.decode(&mut self.buf) {
                    Ok(Some(tag)) => tag,
                    Ok(None) if self.at_end => {
                        self.ended = true;
                        return FileStep::End;
                    }
                    Ok(None) if self.reading => return FileStep::Reading,
                    Ok(None) => {
                        self.reading = true;
                        return FileStep::Read {
                            offset: self.next_offset,
                            len: FILE_READ_SIZE,
                        };
                    }
                    Err(e) => {
                        return FileStep::Failed(format!("recording {}: {e}", self.path.display()));
                    }
                },
            };
            if !matches!(
                tag.tag_type,
                TAG_TYPE_AUDIO | TAG_TYPE_VIDEO | TAG_TYPE_SCRIPT_DATA
            ) {
                continue;
            }
            let base = *self.first_ts.get_or_insert(tag.timestamp);
            let media_time = tag.timestamp.wrapping_sub(base);
            let due = self.started + Duration::from_millis(u64::from(media_time));
            if due > now + FILE_PREROLL {
                self.next_tag = Some(tag);
                return FileStep::WaitUntil(due - FILE_PREROLL);
            }
            let frame = match tag.tag_type {
                TAG_TYPE_AUDIO => self
                    .origin
                    .media(MediaKind::Audio, media_time, tag.payload, now),
                TAG_TYPE_VIDEO => self
                    .origin
                    .media(MediaKind::Video, media_time, tag.payload, now),
                _ => self.origin.data(media_time, tag.payload, false, now),
            };
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
    use crate::media::flv::{FlvHeader, FlvTag, FlvWriter};

    #[test]
    fn recording_names_stay_inside_the_directory() {
        let dir = Path::new("/srv/flv");
        assert_eq!(
            recording_path(dir, "clip"),
            Some(PathBuf::from("/srv/flv/clip.flv"))
        );
        assert_eq!(
            recording_path(dir, "clip.flv"),
            Some(PathBuf::from("/srv/flv/clip.flv"))
        );
        for bad in ["../etc/passwd", "a/b", "..", ".hidden", "", "x y", "a\\b"] {
            assert_eq!(recording_path(dir, bad), None, "{bad:?}");
        }
    }

    fn file_with(tags: &[(u8, u32)]) -> Bytes {
        let mut w = FlvWriter::new(
            Vec::new(),
            FlvHeader {
                has_audio: true,
                has_video: true,
            },
        )
        .unwrap();
        for &(tag_type, timestamp) in tags {
            let payload = match tag_type {
                TAG_TYPE_VIDEO => Bytes::from_static(&[0x17, 1, 0, 0, 0, 0xAA]),
                _ => Bytes::from_static(&[0xAF, 1, 0x21]),
            };
            w.write_tag(&FlvTag {
                tag_type,
                timestamp,
                payload,
            })
            .unwrap();
        }
        w.into_inner().into()
    }

    #[test]
    fn tags_are_paced_a_preroll_ahead_and_the_end_is_reported() {
        let t0 = Instant::now();
        let data = file_with(&[
            (TAG_TYPE_VIDEO, 1000),
            (TAG_TYPE_AUDIO, 1500),
            (TAG_TYPE_VIDEO, 3000),
        ]);
        let mut src = FileSource::new("/x.flv".into(), t0, 4096);
        let lag = Duration::from_secs(10);
        let FileStep::Read { offset: 0, len } = src.next(t0, false, lag) else {
            panic!("reads first")
        };
        assert!(matches!(src.next(t0, false, lag), FileStep::Reading));
        src.feed(0, data.slice(..len.min(data.len())));
        // The first two tags are within the preroll: media time 0 and 500 ms.
        let mut frames = Vec::new();
        let wait = loop {
            match src.next(t0, false, lag) {
                FileStep::Frame(RingEntry::Frame(f)) => frames.push(f.timestamp),
                FileStep::WaitUntil(at) => break at,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(frames, vec![0, 500]);
        assert_eq!(wait, t0 + Duration::from_millis(2000) - FILE_PREROLL);
        let FileStep::Frame(RingEntry::Frame(f)) = src.next(wait, false, lag) else {
            panic!("the third tag is due")
        };
        assert_eq!(f.timestamp, 2000);
        assert!(f.keyframe);
        let FileStep::Read { offset, .. } = src.next(wait, false, lag) else {
            panic!("asks for more")
        };
        src.feed(offset, Bytes::new());
        assert!(matches!(src.next(wait, false, lag), FileStep::End));
    }

    #[test]
    fn a_viewer_that_reads_nothing_makes_the_source_wait_then_give_up() {
        let t0 = Instant::now();
        let mut src = FileSource::new("/x.flv".into(), t0, 4096);
        let lag = Duration::from_secs(10);
        assert!(matches!(src.next(t0, true, lag), FileStep::WaitUntil(_)));
        assert!(matches!(
            src.next(t0 + lag + Duration::from_millis(1), true, lag),
            FileStep::Failed(_)
        ));
    }
}
