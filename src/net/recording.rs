//! Playing a pre-recorded FLV file to one viewer, paced in real time.
//!
//! An application with `recordings_dir` serves `rtmp://host/APP/NAME` from `NAME.flv` in that
//! directory when no one publishes `APP/NAME` live (a live stream always wins), the way
//! nginx-rtmp's `play /dir;` does. The file is read through glommio (io_uring, so the shard
//! never blocks on the disk) in small pieces, its tags are parsed as they arrive
//! (`media/flv.rs`), and each one is chunk-encoded and queued for this viewer alone,
//! a second ahead of its media time so players can buffer. The viewer's write queue is
//! bounded: a player that stops reading makes the reader wait, not the queue grow, and is
//! disconnected after `lag_disconnect_ms` like any slow viewer. At the end of the file the
//! viewer gets `NetStream.Play.Stop` and Stream EOF, and the connection is closed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::io::BufferedFile;

use super::connection::write_now;
use crate::media::flv::{FlvStreamDecoder, TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT_DATA, TAG_TYPE_VIDEO};
use crate::relay::frame::FrameRing;
use crate::relay::peer::{PeerRef, Role};
use crate::rtmp::chunk::encode_shared;
use crate::rtmp::command::status;

/// How far ahead of real time tags are sent, so a player's buffer fills at once.
const PREROLL: Duration = Duration::from_secs(1);
/// Bytes read from the file at a time.
const READ_SIZE: usize = 32 * 1024;

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

/// Limits for one recording viewer.
#[derive(Clone, Copy, Debug)]
pub struct PlaybackLimits {
    pub chunk_size: u32,
    pub max_pending_bytes: usize,
    pub lag_disconnect: Duration,
}

fn still_playing(peer: &PeerRef) -> bool {
    let p = peer.borrow();
    p.close_reason.is_none() && matches!(p.role, Role::Recording { .. })
}

/// Plays `path` to `peer`, whose play was accepted as a recording.
pub async fn play_file(peer: PeerRef, path: PathBuf, limits: PlaybackLimits) {
    let stream_id = match &peer.borrow().role {
        Role::Recording { stream_id, .. } => *stream_id,
        _ => return,
    };
    let file = match BufferedFile::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            let mut p = peer.borrow_mut();
            p.session.reject_play(
                stream_id,
                status::PLAY_STREAM_NOT_FOUND,
                "recording cannot be opened",
            );
            p.queue_session_output();
            p.close(format!("recording {}: {e}", path.display()));
            return;
        }
    };
    let empty_ring = FrameRing::new(0);
    let mut decoder = FlvStreamDecoder::new();
    let mut buf = BytesMut::new();
    let mut pos = 0u64;
    let start = Instant::now();
    let mut first_ts = None;
    let mut at_end = false;
    let outcome: Result<(), String> = loop {
        if !still_playing(&peer) {
            break Ok(());
        }
        let tag = match decoder.decode(&mut buf) {
            Ok(Some(tag)) => tag,
            Ok(None) if at_end => break Ok(()),
            Ok(None) => {
                match file.read_at(pos, READ_SIZE).await {
                    Ok(chunk) if chunk.is_empty() => at_end = true,
                    Ok(chunk) => {
                        pos += chunk.len() as u64;
                        buf.extend_from_slice(&chunk);
                    }
                    Err(e) => break Err(format!("reading {}: {e}", path.display())),
                }
                continue;
            }
            Err(e) => break Err(format!("recording {}: {e}", path.display())),
        };
        if !matches!(
            tag.tag_type,
            TAG_TYPE_AUDIO | TAG_TYPE_VIDEO | TAG_TYPE_SCRIPT_DATA
        ) {
            continue;
        }
        let base = *first_ts.get_or_insert(tag.timestamp);
        let media_time = tag.timestamp.wrapping_sub(base);
        let due = start + Duration::from_millis(u64::from(media_time));
        let now = Instant::now();
        if due > now + PREROLL {
            glommio::timer::sleep(due - now - PREROLL).await;
        }
        // A player that does not read holds the reader, not memory.
        let waiting_since = Instant::now();
        while peer.borrow().queue.pending_bytes() > limits.max_pending_bytes {
            if !still_playing(&peer) {
                return;
            }
            if waiting_since.elapsed() > limits.lag_disconnect {
                peer.borrow_mut().close(format!(
                    "viewer of a recording read nothing for more than {} ms",
                    limits.lag_disconnect.as_millis()
                ));
                return;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        let bytes = encode_shared(tag.tag_type, media_time, &tag.payload, limits.chunk_size);
        peer.borrow_mut().queue.push_pending(bytes);
        write_now(&peer, &empty_ring);
    };
    if let Err(reason) = outcome {
        peer.borrow_mut().close(reason);
        return;
    }
    if !still_playing(&peer) {
        return;
    }
    {
        let mut p = peer.borrow_mut();
        p.session.notify_play_stopped(stream_id);
        p.queue_session_output();
    }
    write_now(&peer, &empty_ring);
    // Give the player a moment to read the end before the connection goes.
    let drained_by = Instant::now() + Duration::from_secs(5);
    while peer.borrow().queue.pending_bytes() > 0 && Instant::now() < drained_by {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    glommio::timer::sleep(Duration::from_millis(500)).await;
    peer.borrow_mut().close("the recording ended");
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
