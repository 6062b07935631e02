//! A stored file downloaded over HTTP (`GET /vod/{app}/{name}.mp4`): where the sending is,
//! and when the next piece of the file is due.
//!
//! Unlike a VOD play over RTMP (`vod_source.rs`), a download is not paced and not parsed:
//! it is the file's bytes, the requested range of them, as fast as the client takes them,
//! so a browser or `ffprobe` can seek by byte ranges. Memory stays bounded per client, and
//! the client sets the pace: the shard asks the driver for the next [`DOWNLOAD_CHUNK`]
//! bytes (`Output::ReadDownload`, read through io_uring, never blocking the shard) only
//! when at most one chunk is still queued for the socket and no read is under way. A
//! client that stops reading therefore holds at most about two chunks.
//!
//! The life of one download, all in `shard.rs`:
//! 1. the request head routes to `Route::Vod`; the application's play checks run as for an
//!    HTTP-FLV play (allow_play, keys, signed links, network rules, `on_play`);
//! 2. `Output::OpenDownload`: the driver finds the file, confined to the application's
//!    `vod_dir` (`net/vod_files.rs::open_download`), off the shard's thread;
//! 3. `Shard::handle_download_opened` with the length: the `Range` header is resolved
//!    (`http/range.rs`) and the head queued (200, 206, 416; a `HEAD` ends there);
//! 4. [`Download::next_read`] after every write, `Shard::handle_download_read` with each
//!    piece; once the last byte is written, the connection is closed (every answer says
//!    `Connection: close`).

use std::time::Instant;

/// Bytes read from the file per read: large enough that a read costs little per byte,
/// small enough that thousands of downloads hold little memory.
pub const DOWNLOAD_CHUNK: usize = 64 * 1024;

/// What a `/vod/{app}/{name}.flv|.mp4` request asks for.
#[derive(Debug, Clone, Default)]
pub struct DownloadRequest {
    pub app: String,
    /// The name access control and logs see (`movie`).
    pub name: String,
    /// The file's name in the application's `vod_dir` (`movie.mp4`).
    pub file: String,
    pub content_type: &'static str,
    /// The `Range` header's value.
    pub range: Option<String>,
    pub head_only: bool,
}

/// One download's progress.
#[derive(Debug, Default)]
pub struct Download {
    /// The request, until the file is open.
    pub request: Option<DownloadRequest>,
    /// The next byte of the file to read.
    pub next: u64,
    /// One past the last byte to send.
    pub end: u64,
    /// A read (or the open) is under way.
    pub busy: bool,
    /// When the socket last took bytes (or the request came): a download whose peer
    /// reads nothing for `http.send_timeout_ms` is closed.
    pub last_progress: Option<Instant>,
}

/// What a download needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum DownloadStep {
    /// Nothing now: a read is under way, or enough is queued.
    Wait,
    /// Read `len` bytes at `offset`.
    Read { offset: u64, len: usize },
    /// Everything was read and written: close.
    Done,
}

impl Download {
    /// A download whose file is being opened.
    pub fn opening(request: DownloadRequest, now: Instant) -> Download {
        Download {
            request: Some(request),
            next: 0,
            end: 0,
            busy: true,
            last_progress: Some(now),
        }
    }

    /// What to do, given the bytes still queued for the client's socket.
    pub fn next_read(&mut self, queued: usize) -> DownloadStep {
        if self.busy {
            return DownloadStep::Wait;
        }
        if self.next >= self.end {
            return if queued == 0 {
                DownloadStep::Done
            } else {
                DownloadStep::Wait
            };
        }
        if queued > DOWNLOAD_CHUNK {
            return DownloadStep::Wait;
        }
        let len = (self.end - self.next).min(DOWNLOAD_CHUNK as u64) as usize;
        self.busy = true;
        DownloadStep::Read {
            offset: self.next,
            len,
        }
    }

    /// A read of `got` bytes at `offset` came back. False when it is not the read that
    /// was asked for, or brought nothing (the file shrank): the download cannot go on.
    pub fn read_done(&mut self, offset: u64, got: usize) -> bool {
        self.busy = false;
        if offset != self.next || got == 0 || self.next + got as u64 > self.end {
            return false;
        }
        self.next += got as u64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunk_by_chunk_as_the_queue_drains() {
        let mut d = Download::opening(DownloadRequest::default(), Instant::now());
        assert_eq!(d.next_read(0), DownloadStep::Wait);
        d.busy = false;
        d.next = 10;
        d.end = 10 + DOWNLOAD_CHUNK as u64 + 5;
        assert_eq!(
            d.next_read(0),
            DownloadStep::Read {
                offset: 10,
                len: DOWNLOAD_CHUNK
            }
        );
        // One read at a time.
        assert_eq!(d.next_read(0), DownloadStep::Wait);
        assert!(d.read_done(10, DOWNLOAD_CHUNK));
        // More than a chunk queued: wait for the socket.
        assert_eq!(d.next_read(DOWNLOAD_CHUNK + 1), DownloadStep::Wait);
        assert_eq!(
            d.next_read(DOWNLOAD_CHUNK),
            DownloadStep::Read {
                offset: 10 + DOWNLOAD_CHUNK as u64,
                len: 5
            }
        );
        assert!(d.read_done(10 + DOWNLOAD_CHUNK as u64, 5));
        // All read: done once the queue is empty.
        assert_eq!(d.next_read(3), DownloadStep::Wait);
        assert_eq!(d.next_read(0), DownloadStep::Done);
    }

    #[test]
    fn a_short_or_stray_read_stops_it() {
        let mut d = Download {
            end: 100,
            ..Download::default()
        };
        assert!(matches!(d.next_read(0), DownloadStep::Read { .. }));
        assert!(!d.read_done(0, 0), "the file shrank");
        let mut d = Download {
            end: 100,
            busy: true,
            ..Download::default()
        };
        assert!(!d.read_done(50, 10), "not the read asked for");
    }
}
