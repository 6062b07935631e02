//! One stream on one shard: its ring of recent frames, what a joining viewer needs, its
//! viewers, and the fan-out task that writes to them.
//!
//! Every shard with viewers of a stream has a [`LocalStream`] for it: the origin shard fills
//! it directly from the publisher, the others from the frame handles the origin sends them
//! (`shard.rs`). Either way the entries are the same `Bytes`, shared, never copied.
//!
//! The fan-out task wakes when entries arrive, walks the viewers and writes each one's
//! backlog with one vectored write (`ViewerQueue::flush` + `net::vectored`). It yields to
//! the executor every few dozen viewers, so one stream with thousands of viewers cannot
//! starve the shard's other streams, its publishers or its accept loop. A viewer whose
//! socket is full is handed to its own connection task (see `peer.rs`), which writes once
//! it drains; the fan-out no longer writes to it, but still checks it against its backlog
//! limits on every pass: a viewer over them skips video to the next keyframe, and one that
//! stays behind past `lag_disconnect_ms` (a viewer that stopped reading is always blocked)
//! is disconnected. None of this touches the publisher.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::directory::StreamName;
use super::frame::{Frame, FrameKind, FrameRing, RingEntry, StreamEvent};
use super::peer::PeerRef;
use super::signal::Signal;
use super::viewer::{FlushOutcome, FlushScratch};
use crate::config::FlushOn;
use crate::media::gop_cache::{CachedMessage, GopCache, GopCacheLimits};
use crate::rtmp::chunk::encode_shared;
use crate::rtmp::message::MessageType;

thread_local! {
    /// One flush scratch per shard thread: flushes never overlap on a thread.
    static SCRATCH: RefCell<FlushScratch> = RefCell::new(FlushScratch::default());
}

/// Runs `f` with this thread's flush scratch.
pub fn with_scratch<R>(f: impl FnOnce(&mut FlushScratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Per-application settings a stream needs on every shard.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub chunk_size: u32,
    pub gop_cache: Option<GopCacheLimits>,
    pub backlog_max_bytes: usize,
    pub backlog_max_ms: u32,
    pub lag_disconnect: Duration,
    /// Write coalescing: the fan-out writes at most once per this interval, so each viewer
    /// gets one larger write instead of one per message. None writes at once.
    pub flush_interval: Option<Duration>,
    /// Whether audio and data wait for the next video frame before they are written.
    pub flush_on: FlushOn,
}

/// The longest an audio or data message waits for a video frame to go out with
/// (`viewer.flush_on = "video"`): one frame interval down to 20 frames per second.
pub const MAX_HOLD: Duration = Duration::from_millis(50);
/// A stream that has sent no video for this long is treated as audio-only: its audio is
/// written as it arrives instead of waiting for video that is not coming.
const VIDEO_GONE: Duration = Duration::from_secs(1);

/// What the origin sends a shard that subscribes: enough to serve joining viewers at once.
#[derive(Clone, Debug)]
pub struct StreamSnapshot {
    pub next_seq: u64,
    pub live: bool,
    pub metadata: Option<Frame>,
    pub video_header: Option<Frame>,
    pub audio_header: Option<Frame>,
    pub gop: Vec<Frame>,
    /// The newest audio and video timestamps the stream has sent.
    pub newest: NewestTimestamps,
}

/// The newest timestamp of each media kind in a stream: where a viewer that joins without
/// a GOP to start from picks the stream up.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewestTimestamps {
    pub audio: Option<u32>,
    pub video: Option<u32>,
}

pub struct LocalStream {
    pub name: StreamName,
    pub settings: StreamSettings,
    pub ring: FrameRing,
    gop: Option<GopCache<Frame>>,
    metadata: Option<Frame>,
    video_header: Option<Frame>,
    audio_header: Option<Frame>,
    newest: NewestTimestamps,
    /// A publisher is sending.
    pub live: bool,
    pub viewers: Vec<PeerRef>,
    /// Viewers that asked to play before the publisher arrived.
    pub waiting: Vec<PeerRef>,
    pub signal: Rc<Signal>,
    /// The origin shard this stream receives frames from (None on the origin itself, or
    /// while no origin is known).
    pub subscribed_to: Option<usize>,
    /// Added (wrapping) to the origin's entry numbers to number them in this ring: 0 on
    /// the origin and after a first subscription; set when a new origin's snapshot is
    /// appended after what viewers here still have to be sent.
    origin_offset: u64,
    /// Write batching (`flush_on = "video"`): when the oldest entry not yet written was
    /// held back, whether an entry that must go out at once has arrived since the last
    /// pass, and when this shard last saw a video frame.
    held_since: Option<Instant>,
    urgent: bool,
    last_video: Option<Instant>,
}

impl LocalStream {
    pub fn new(name: StreamName, settings: StreamSettings) -> LocalStream {
        LocalStream {
            name,
            gop: settings.gop_cache.map(GopCache::new),
            settings,
            ring: FrameRing::new(0),
            metadata: None,
            video_header: None,
            audio_header: None,
            newest: NewestTimestamps::default(),
            live: false,
            viewers: Vec::new(),
            waiting: Vec::new(),
            signal: Rc::new(Signal::default()),
            subscribed_to: None,
            origin_offset: 0,
            held_since: None,
            urgent: false,
            last_video: None,
        }
    }

    /// How much longer the fan-out may wait before writing, when everything that arrived
    /// since its last pass may wait for the next video frame. `None`: write now.
    fn hold_for(&self, now: Instant) -> Option<Duration> {
        if self.settings.flush_on != FlushOn::Video || self.urgent {
            return None;
        }
        let waited = now.saturating_duration_since(self.held_since?);
        MAX_HOLD.checked_sub(waited).filter(|left| !left.is_zero())
    }

    /// The fan-out starts a pass: it writes everything the ring holds, held or not.
    fn begin_pass(&mut self) {
        self.held_since = None;
        self.urgent = false;
    }

    /// Whether `entry` may wait for the next video frame: audio and data (not codec
    /// headers) of a stream whose video is still coming.
    fn may_wait(&self, entry: &RingEntry, now: Instant) -> bool {
        let RingEntry::Frame(f) = entry else {
            return false;
        };
        matches!(f.kind, FrameKind::Audio | FrameKind::Data)
            && !f.sequence_header
            && self
                .last_video
                .is_some_and(|seen| now.saturating_duration_since(seen) < VIDEO_GONE)
    }

    pub fn has_viewers(&self) -> bool {
        !self.viewers.is_empty() || !self.waiting.is_empty()
    }

    pub fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            next_seq: self.ring.next_seq(),
            live: self.live,
            metadata: self.metadata.clone(),
            video_header: self.video_header.clone(),
            audio_header: self.audio_header.clone(),
            gop: self
                .gop
                .as_ref()
                .map(|g| g.iter().map(|c| c.item.clone()).collect())
                .unwrap_or_default(),
            newest: self.newest,
        }
    }

    /// Takes over a snapshot from a (new) origin.
    ///
    /// With no viewers playing here yet (a first subscription), the ring simply continues
    /// at the origin's numbering. With viewers already playing (the origin moved: a
    /// publisher came back, or took over, on another shard), they must lose nothing they
    /// were owed and miss nothing the new origin has: the ring keeps its own numbering, so
    /// a viewer still behind finishes the old publication (its `UnpublishNotify`
    /// included), and what the new origin has that these viewers have not seen is
    /// appended after it, in order: the republish event (`PublishNotify`), the metadata
    /// and codec headers (after a republish; after a takeover, those that changed), and,
    /// for a stream that was waiting for its publisher, the new publisher's GOP so far.
    /// From then on the origin's entries are renumbered into this ring.
    pub fn apply_snapshot(&mut self, snap: StreamSnapshot) {
        if self.viewers.is_empty() {
            self.ring.restart_at(snap.next_seq);
            self.origin_offset = 0;
            self.metadata = snap.metadata;
            self.video_header = snap.video_header;
            self.audio_header = snap.audio_header;
            self.newest = snap.newest;
            if let Some(gop) = self.gop.as_mut() {
                gop.clear();
                for f in snap.gop {
                    gop.push(cached(f));
                }
            }
            self.live = snap.live;
            self.signal.notify();
            return;
        }
        let resumed = !self.live && snap.live;
        if resumed {
            // Clears the GOP cache, as on the origin: the new publisher's frames follow.
            let seq = self.ring.next_seq();
            self.append(RingEntry::Event {
                seq,
                event: StreamEvent::Republished,
            });
        }
        let changed = |mine: &Option<Frame>, theirs: &Option<Frame>| match (mine, theirs) {
            (_, None) => false,
            (Some(a), Some(b)) => a.payload != b.payload,
            (None, Some(_)) => true,
        };
        let mut news = Vec::new();
        for (mine, theirs) in [
            (&self.metadata, snap.metadata),
            (&self.video_header, snap.video_header),
            (&self.audio_header, snap.audio_header),
        ] {
            // After a republish this shard has none (the event cleared them): the new
            // publisher's, when the origin has them already, all go.
            if changed(mine, &theirs) {
                news.extend(theirs);
            }
        }
        if resumed {
            // The origin's GOP holds only the new publisher's frames (its republish event
            // cleared it), and it starts at a keyframe.
            news.extend(snap.gop);
        } else {
            // A takeover while live: the new publisher's first frames may be gone already,
            // and its GOP may still hold the old publisher's frames these viewers had.
            for v in &self.viewers {
                v.borrow_mut().queue.skip_to_keyframe();
            }
        }
        for mut f in news {
            f.seq = self.ring.next_seq();
            self.append(RingEntry::Frame(f));
        }
        self.origin_offset = self.ring.next_seq().wrapping_sub(snap.next_seq);
        self.live = snap.live;
        self.signal.notify();
    }

    /// Appends an entry from the origin, numbered in the origin's sequence.
    pub fn apply(&mut self, mut entry: RingEntry) {
        if self.origin_offset != 0 {
            match &mut entry {
                RingEntry::Frame(f) => f.seq = f.seq.wrapping_add(self.origin_offset),
                RingEntry::Event { seq, .. } => *seq = seq.wrapping_add(self.origin_offset),
            }
        }
        self.append(entry);
    }

    /// This shard becomes the stream's origin: its own ring's numbering is the origin's.
    pub fn become_origin(&mut self) {
        self.subscribed_to = None;
        self.origin_offset = 0;
    }

    /// Appends an entry numbered in this ring's sequence. A numbering gap means entries
    /// were lost on the way (an inbox was full): every viewer resumes at the next keyframe.
    fn append(&mut self, entry: RingEntry) {
        let seq = entry.seq();
        if seq < self.ring.next_seq() {
            return;
        }
        if seq > self.ring.next_seq() {
            tracing::warn!(stream = %self.name, lost = seq - self.ring.next_seq(), "frames lost between shards; viewers resume at the next keyframe");
            self.ring.restart_at(seq);
            for v in &self.viewers {
                v.borrow_mut().queue.jump_to(seq);
            }
            if let Some(gop) = self.gop.as_mut() {
                gop.clear();
            }
        }
        match &entry {
            RingEntry::Frame(f) => self.remember(f),
            RingEntry::Event { event, .. } => match event {
                StreamEvent::Unpublished => self.live = false,
                StreamEvent::Republished => {
                    self.live = true;
                    // The new publisher starts with its own metadata, codec headers and a
                    // keyframe; the old publisher's are not served in their place.
                    self.metadata = None;
                    self.video_header = None;
                    self.audio_header = None;
                    if let Some(gop) = self.gop.as_mut() {
                        gop.clear();
                    }
                }
                // Its viewers are closed as their cursors reach it (`render_event`).
                StreamEvent::Ended => self.live = false,
            },
        }
        // A held entry after the first changes nothing the fan-out is waiting on (the hold's
        // deadline is the first one's), so it need not be woken for it.
        let mut wake = true;
        if self.settings.flush_on == FlushOn::Video {
            let now = Instant::now();
            if matches!(&entry, RingEntry::Frame(f) if f.kind == FrameKind::Video) {
                self.last_video = Some(now);
            }
            if self.may_wait(&entry, now) {
                wake = self.held_since.is_none();
                self.held_since.get_or_insert(now);
            } else {
                self.urgent = true;
            }
        }
        self.ring.push(entry);
        // The ring only needs what the slowest viewer still has to send, capped so a
        // stuck viewer cannot make it grow: past the cap that viewer skips ahead.
        let cap = self
            .settings
            .backlog_max_bytes
            .saturating_mul(2)
            .max(1 << 20);
        if self.ring.bytes() > cap {
            self.ring.trim_to_bytes(cap);
        }
        if self.viewers.is_empty() {
            self.ring.trim_before(self.ring.next_seq());
        }
        if wake {
            self.signal.notify();
        }
    }

    fn remember(&mut self, f: &Frame) {
        match f.kind {
            FrameKind::Audio => self.newest.audio = Some(f.timestamp),
            FrameKind::Video => self.newest.video = Some(f.timestamp),
            FrameKind::Metadata | FrameKind::Data => {}
        }
        match f.kind {
            FrameKind::Video if f.sequence_header => self.video_header = Some(f.clone()),
            FrameKind::Audio if f.sequence_header => self.audio_header = Some(f.clone()),
            FrameKind::Metadata => self.metadata = Some(f.clone()),
            _ => {
                if let Some(gop) = self.gop.as_mut() {
                    gop.push(cached(f.clone()));
                }
            }
        }
    }

    /// Starts a viewer whose play was accepted: `NetStream.Play.Start` and friends, then
    /// metadata, sequence headers and the cached GOP, then live from the next entry. With
    /// no GOP that starts at a keyframe to give it (the cache is off, or was abandoned),
    /// its video starts at the next keyframe.
    pub fn start_viewer(&mut self, peer: &PeerRef, stream_id: u32) {
        let mut p = peer.borrow_mut();
        p.session.accept_play(stream_id, true, false);
        p.queue_session_output();
        // Codec headers are re-encoded at the time this viewer's media of their kind
        // starts at (its first GOP message of that kind, or else where the stream is now),
        // so each kind's timestamps only go forward for it, even when a header was re-sent
        // mid-stream or the audio is stamped a little behind the video.
        let gop: Vec<&Frame> = self
            .gop
            .as_ref()
            .map(|g| g.iter().map(|c| &c.item).collect())
            .unwrap_or_default();
        let first_in_gop =
            |kind: FrameKind| gop.iter().find(|f| f.kind == kind).map(|f| f.timestamp);
        let any_start = gop.first().map(|f| f.timestamp);
        let video_ts = first_in_gop(FrameKind::Video)
            .or(self.newest.video)
            .or(any_start)
            .unwrap_or(0);
        let audio_ts = first_in_gop(FrameKind::Audio)
            .or(self.newest.audio)
            .or(any_start)
            .unwrap_or(0);
        let chunk_size = self.settings.chunk_size;
        let restamp =
            |f: &Frame, type_id: u8, ts: u32| encode_shared(type_id, ts, &f.payload, chunk_size);
        // Metadata goes at time 0: players (ffmpeg's FLV reader among them) take an
        // `onMetaData` stamped later for a text track.
        if let Some(m) = &self.metadata {
            p.queue
                .push_pending(restamp(m, MessageType::DataAmf0.id(), 0));
        }
        if let Some(h) = &self.video_header {
            p.queue
                .push_pending(restamp(h, MessageType::Video.id(), video_ts));
        }
        if let Some(h) = &self.audio_header {
            p.queue
                .push_pending(restamp(h, MessageType::Audio.id(), audio_ts));
        }
        for f in &gop {
            p.queue.push_pending(f.bytes.clone());
        }
        if !self.gop.as_ref().is_some_and(|g| g.starts_with_keyframe()) {
            // Inter frames before a first keyframe cannot be decoded.
            p.queue.skip_to_keyframe();
        }
        p.queue.start_at(self.ring.next_seq());
        drop(p);
        self.viewers.push(peer.clone());
        self.signal.notify();
    }

    /// Removes a viewer (it left or was closed).
    pub fn remove_viewer(&mut self, id: u64) {
        self.viewers.retain(|v| v.borrow().id != id);
        self.waiting.retain(|v| v.borrow().id != id);
    }
}

fn cached(f: Frame) -> CachedMessage<Frame> {
    CachedMessage {
        timestamp: f.timestamp,
        size: f.bytes.len(),
        is_video: f.kind == FrameKind::Video,
        is_keyframe: f.keyframe,
        item: f,
    }
}

/// Renders a stream event for one viewer through its own session, so it lands in its byte
/// stream exactly where the event stands among the frames.
pub fn render_event(peer: &PeerRef, event: StreamEvent) {
    let mut p = peer.borrow_mut();
    let stream_id = match &p.role {
        super::peer::Role::Viewer { stream_id, .. } => *stream_id,
        _ => return,
    };
    match event {
        StreamEvent::Unpublished => p.session.notify_unpublished(stream_id),
        StreamEvent::Republished => p.session.notify_republished(stream_id),
        StreamEvent::Ended => {
            p.close("the publisher did not come back within the grace period");
        }
    }
    p.queue_session_output();
}

/// Applies the backlog rules to one viewer: past its byte or duration limit its video
/// skips to the next keyframe, and if it stays behind past `lag_disconnect` it is closed
/// (returns false). They apply whether or not its socket is full: a viewer that stopped
/// reading altogether is the one they are for.
fn apply_backlog_rules(
    ring: &FrameRing,
    settings: &StreamSettings,
    p: &mut super::peer::Peer,
    now: Instant,
) -> bool {
    if p.queue.cursor() < ring.first_seq() {
        // The ring dropped entries this viewer had not sent (it was capped).
        p.queue.jump_to(ring.first_seq());
    }
    let backlog = ring.backlog(p.queue.cursor(), settings.backlog_max_bytes);
    let behind_bytes = backlog.bytes + p.queue.pending_bytes();
    if behind_bytes <= settings.backlog_max_bytes && backlog.millis <= settings.backlog_max_ms {
        return true;
    }
    let since = *p.behind_since.get_or_insert(now);
    if !p.queue.is_skipping_video() {
        p.queue.skip_to_keyframe();
        tracing::debug!(peer = %p.addr, behind_bytes, behind_ms = backlog.millis, "viewer fell behind; skipping video to the next keyframe");
    }
    if now.duration_since(since) > settings.lag_disconnect {
        let reason = format!(
            "viewer stayed behind for more than {} ms ({} bytes, {} ms of media unsent; {} video frames dropped)",
            settings.lag_disconnect.as_millis(),
            behind_bytes,
            backlog.millis,
            p.queue.dropped_frames
        );
        p.close(reason);
        return false;
    }
    true
}

/// Applies the backlog rules to one viewer, then writes what it has pending as far as its
/// socket takes it. Called by the fan-out for every viewer; one whose socket is full
/// (`blocked`) is only checked, its connection task writes once the socket drains.
pub fn serve_viewer(ring: &FrameRing, settings: &StreamSettings, peer: &PeerRef, now: Instant) {
    loop {
        let mut p = peer.borrow_mut();
        if p.close_reason.is_some() || !apply_backlog_rules(ring, settings, &mut p, now) {
            return;
        }
        if p.blocked {
            return;
        }
        let fd = p.fd;
        let outcome = with_scratch(|scratch| {
            p.queue.flush(ring, scratch, |iov| {
                crate::net::vectored::send_vectored(fd, iov)
            })
        });
        match outcome {
            Ok(FlushOutcome::Idle) => {
                p.behind_since = None;
                return;
            }
            Ok(FlushOutcome::Blocked) => {
                p.blocked = true;
                p.wake();
                return;
            }
            Ok(FlushOutcome::Event(event)) => {
                drop(p);
                render_event(peer, event);
            }
            Err(e) => {
                p.close(format!("write failed: {e}"));
                return;
            }
        }
    }
}

/// The fan-out task of one stream on one shard. Ends when the shard drops the stream (it
/// has no viewers left, and is not published here).
pub async fn fan_out(stream: Rc<RefCell<LocalStream>>) {
    const VIEWERS_PER_YIELD: usize = 64;
    let signal = stream.borrow().signal.clone();
    let interval = stream.borrow().settings.flush_interval;
    let mut last_pass = Instant::now();
    loop {
        signal.wait().await;
        // Held audio waits for the next video frame (or the end of its hold), so that
        // each viewer gets one write per frame rather than one per message.
        loop {
            let Some(left) = stream.borrow().hold_for(Instant::now()) else {
                break;
            };
            let more = futures_lite::future::or(
                async {
                    signal.wait().await;
                    true
                },
                async {
                    glommio::timer::sleep(left).await;
                    false
                },
            )
            .await;
            if !more {
                break;
            }
        }
        if let Some(interval) = interval {
            // Let the window fill: entries arriving meanwhile go out in the same writes.
            let since = last_pass.elapsed();
            if since < interval {
                glommio::timer::sleep(interval - since).await;
            }
        }
        let now = Instant::now();
        last_pass = now;
        stream.borrow_mut().begin_pass();
        let mut i = 0;
        loop {
            let peer = {
                let s = stream.borrow();
                match s.viewers.get(i) {
                    Some(p) => p.clone(),
                    None => break,
                }
            };
            {
                let s = stream.borrow();
                serve_viewer(&s.ring, &s.settings, &peer, now);
            }
            i += 1;
            if i % VIEWERS_PER_YIELD == 0 {
                glommio::yield_if_needed().await;
            }
        }
        let mut s = stream.borrow_mut();
        // Entries every viewer has passed are no longer needed here.
        let slowest = s
            .viewers
            .iter()
            .map(|v| v.borrow().queue.cursor())
            .min()
            .unwrap_or_else(|| s.ring.next_seq());
        s.ring.trim_before(slowest);
        // Only once the shard has dropped the stream: a stream that ended but is still
        // in the shard's table (viewers waited through its end, and a new publisher came)
        // has viewers to serve again.
        if Rc::strong_count(&stream) == 1 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn settings(flush_on: FlushOn) -> StreamSettings {
        StreamSettings {
            chunk_size: 4096,
            gop_cache: None,
            backlog_max_bytes: 1 << 20,
            backlog_max_ms: 3000,
            lag_disconnect: Duration::from_secs(10),
            flush_interval: None,
            flush_on,
        }
    }

    fn frame(seq: u64, kind: FrameKind) -> RingEntry {
        RingEntry::Frame(Frame {
            seq,
            kind,
            timestamp: seq as u32 * 20,
            keyframe: false,
            sequence_header: false,
            bytes: Bytes::from_static(b"x"),
            payload: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn audio_waits_for_the_next_video_frame_at_most_max_hold() {
        let mut s = LocalStream::new("live/a".into(), settings(FlushOn::Video));
        s.apply(frame(0, FrameKind::Video));
        let now = Instant::now();
        assert_eq!(s.hold_for(now), None, "video goes out at once");
        s.begin_pass();
        s.apply(frame(1, FrameKind::Audio));
        s.apply(frame(2, FrameKind::Data));
        let left = s.hold_for(Instant::now()).expect("audio and data wait");
        assert!(left <= MAX_HOLD);
        assert_eq!(s.hold_for(Instant::now() + MAX_HOLD), None, "hold ran out");
        s.apply(frame(3, FrameKind::Video));
        assert_eq!(
            s.hold_for(Instant::now()),
            None,
            "the next frame takes them"
        );
        assert_eq!(s.ring.next_seq(), 4, "nothing held is left out of the ring");
    }

    #[test]
    fn audio_only_streams_and_flush_on_message_never_hold() {
        let mut s = LocalStream::new("live/a".into(), settings(FlushOn::Video));
        s.apply(frame(0, FrameKind::Audio));
        assert_eq!(s.hold_for(Instant::now()), None, "no video yet: audio-only");

        let mut s = LocalStream::new("live/b".into(), settings(FlushOn::Message));
        s.apply(frame(0, FrameKind::Video));
        s.begin_pass();
        s.apply(frame(1, FrameKind::Audio));
        assert_eq!(s.hold_for(Instant::now()), None);
    }

    #[test]
    fn only_the_first_held_entry_wakes_the_fan_out() {
        use futures_lite::future::{block_on, poll_once};
        let mut s = LocalStream::new("live/a".into(), settings(FlushOn::Video));
        let woken = |s: &LocalStream| block_on(poll_once(s.signal.wait())).is_some();
        s.apply(frame(0, FrameKind::Video));
        assert!(woken(&s));
        s.begin_pass();
        s.apply(frame(1, FrameKind::Audio));
        assert!(woken(&s), "the first held entry starts the hold");
        s.apply(frame(2, FrameKind::Audio));
        assert!(
            !woken(&s),
            "a second one changes nothing the fan-out waits on"
        );
        s.apply(frame(3, FrameKind::Video));
        assert!(woken(&s));
    }

    #[test]
    fn a_pass_with_nothing_new_is_not_held() {
        let mut s = LocalStream::new("live/a".into(), settings(FlushOn::Video));
        s.apply(frame(0, FrameKind::Video));
        s.begin_pass();
        // A joining viewer or a snapshot wakes the fan-out without a new entry.
        assert_eq!(s.hold_for(Instant::now()), None);
    }
}
