//! One stream on one shard: its ring of recent frames, what a joining viewer needs, and
//! which viewers it has.
//!
//! Every shard with viewers of a stream has a [`LocalStream`] for it: the origin shard fills
//! it directly from its source (a publisher, or a stored file for a file's own viewer), the
//! others from the frame handles the origin sends them (`shard.rs`). Either way the entries
//! are the same `Bytes`, shared, never copied.
//!
//! A stream holds no task and no timer. Appending an entry answers with a [`Wake`]: write
//! to the viewers now, or not before a deadline (audio held for the next video frame), or
//! nothing new to do. The shard turns that into a fan-out pass or a timer; the fan-out
//! itself walks `viewers` (`Shard::fan_out`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::{Client, ClientId};
use super::directory::StreamName;
use super::frame::{Frame, FrameKind, FrameRing, RingEntry, StreamEvent};
use super::output::{self, OutputFormat, TrackFilter};
use super::rate::RateWindow;
use super::slab::{Key, Slab};
use super::vod_source::VodSource;
use crate::config::FlushOn;
use crate::media::gop_cache::{CachedMessage, GopCache, GopCacheLimits};
use crate::media::multitrack::MAX_TRACKS;
use crate::performance::{MAX_HOLD, RING_BACKLOG_FACTOR, RING_MIN_BYTES, VIDEO_GONE};
use crate::rtmp::chunk::encode_shared;
use crate::rtmp::message::MessageType;

/// A stream's handle in its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub(crate) Key);

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

impl StreamSettings {
    /// Memory the ring may hold: it only needs what the slowest viewer still has to send,
    /// capped so a stuck viewer cannot make it grow (past the cap that viewer skips ahead).
    pub fn ring_cap(&self) -> usize {
        self.backlog_max_bytes
            .saturating_mul(RING_BACKLOG_FACTOR)
            .max(RING_MIN_BYTES)
    }
}

/// What the stream asks of the shard after a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Nothing new for the viewers (or no viewers).
    Nothing,
    /// Write to the viewers.
    Pass,
    /// Held entries wait for the next video frame, at most until this time.
    HoldUntil(Instant),
}

/// What the origin sends a shard that subscribes: enough to serve joining viewers at once.
#[derive(Clone, Debug)]
pub struct StreamSnapshot {
    pub next_seq: u64,
    pub live: bool,
    pub metadata: Option<Frame>,
    pub video_headers: Vec<Frame>,
    pub audio_headers: Vec<Frame>,
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
    pub(crate) metadata: Option<Frame>,
    /// The sequence headers a joining viewer needs, per kind: one per track (Enhanced RTMP
    /// multitrack), or one message covering several tracks; at most `MAX_TRACKS`, newest
    /// last (`remember_header`).
    pub(crate) video_headers: Vec<Frame>,
    pub(crate) audio_headers: Vec<Frame>,
    newest: NewestTimestamps,
    /// A source is sending.
    pub live: bool,
    pub viewers: Vec<ClientId>,
    /// Viewers that asked to play before the publisher arrived.
    pub waiting: Vec<ClientId>,
    /// The origin shard this stream receives frames from (None on the origin itself, or
    /// while no origin is known).
    pub subscribed_to: Option<usize>,
    /// Added (wrapping) to the origin's entry numbers to number them in this ring: 0 on
    /// the origin and after a first subscription; set when a new origin's snapshot is
    /// appended after what viewers here still have to be sent.
    origin_offset: u64,
    /// Write batching (`flush_on = "video"`): when the oldest entry not yet written was
    /// held back, and when this shard last saw a video frame.
    held_since: Option<Instant>,
    last_video: Option<Instant>,
    /// Fan-out bookkeeping (`Shard::fan_out`): the stream waits in the shard's fan-out
    /// queue; the next viewer of the pass under way; something arrived during that pass;
    /// when the last pass began; a coalescing timer is armed.
    pub(crate) queued: bool,
    pub(crate) next_viewer: usize,
    pub(crate) again: bool,
    pub(crate) last_pass: Option<Instant>,
    pub(crate) pass_timer: bool,
    /// The stored file feeding this stream, for a file's own viewer, and when its one
    /// armed timer fires.
    pub(crate) file: Option<VodSource>,
    pub(crate) file_timer: Option<Instant>,
    /// Payload bytes that came in (on the origin) and bytes written to viewers here.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Since when a source has been sending, as this shard knows.
    pub live_since: Option<Instant>,
    /// Frames that came in, by `FrameKind` (on the origin).
    pub frames: [u64; 4],
    /// Video frames that viewers who have left did not get.
    pub dropped_closed: u64,
    /// Samples of `bytes_in`/`bytes_out`, for the stream's bitrates.
    pub rate: RateWindow,
    /// Viewers here of each FLV format (`OutputFormat::slot`): frames get those encodings
    /// as they join the ring while the count is not 0.
    flv_viewers: [usize; 3],
}

impl LocalStream {
    pub fn new(name: StreamName, settings: StreamSettings) -> LocalStream {
        LocalStream {
            name,
            gop: settings.gop_cache.map(GopCache::new),
            settings,
            ring: FrameRing::new(0),
            metadata: None,
            video_headers: Vec::new(),
            audio_headers: Vec::new(),
            newest: NewestTimestamps::default(),
            live: false,
            viewers: Vec::new(),
            waiting: Vec::new(),
            subscribed_to: None,
            origin_offset: 0,
            held_since: None,
            last_video: None,
            queued: false,
            next_viewer: 0,
            again: false,
            last_pass: None,
            pass_timer: false,
            file: None,
            file_timer: None,
            bytes_in: 0,
            bytes_out: 0,
            live_since: None,
            frames: [0; 4],
            dropped_closed: 0,
            rate: RateWindow::default(),
            flv_viewers: [0; 3],
        }
    }

    /// When entries held for the next video frame must go out anyway; None once a pass
    /// has written them (or nothing is held).
    pub fn hold_deadline(&self) -> Option<Instant> {
        self.held_since.map(|since| since + MAX_HOLD)
    }

    /// A fan-out pass starts: it writes everything the ring holds, held or not.
    pub(crate) fn begin_pass(&mut self, now: Instant) {
        self.held_since = None;
        self.last_pass = Some(now);
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

    /// The video sequence header of track 0 (the newest that covers it), for the API.
    pub fn video_header(&self) -> Option<&Frame> {
        track0_header(&self.video_headers)
    }

    /// The audio sequence header of track 0, for the API.
    pub fn audio_header(&self) -> Option<&Frame> {
        track0_header(&self.audio_headers)
    }

    /// Bytes the GOP cache holds.
    pub fn gop_bytes(&self) -> usize {
        self.gop.as_ref().map_or(0, GopCache::bytes)
    }

    pub fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            next_seq: self.ring.next_seq(),
            live: self.live,
            metadata: self.metadata.clone(),
            video_headers: self.video_headers.clone(),
            audio_headers: self.audio_headers.clone(),
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
    pub fn apply_snapshot(
        &mut self,
        snap: StreamSnapshot,
        now: Instant,
        clients: &mut Slab<Client>,
    ) -> Wake {
        if snap.live && !self.live {
            self.live_since = Some(now);
        }
        if self.viewers.is_empty() {
            self.ring.restart_at(snap.next_seq);
            self.origin_offset = 0;
            self.metadata = snap.metadata;
            self.video_headers = snap.video_headers;
            self.audio_headers = snap.audio_headers;
            self.newest = snap.newest;
            if let Some(gop) = self.gop.as_mut() {
                gop.clear();
                for f in snap.gop {
                    gop.push(cached(f));
                }
            }
            self.live = snap.live;
            return Wake::Pass;
        }
        let resumed = !self.live && snap.live;
        if resumed {
            // Clears the GOP cache, as on the origin: the new publisher's frames follow.
            let seq = self.ring.next_seq();
            self.append(
                RingEntry::Event {
                    seq,
                    event: StreamEvent::Republished,
                },
                now,
                clients,
            );
        }
        let changed = |mine: &Option<Frame>, theirs: &Option<Frame>| match (mine, theirs) {
            (_, None) => false,
            (Some(a), Some(b)) => a.payload != b.payload,
            (None, Some(_)) => true,
        };
        let mut news = Vec::new();
        // After a republish this shard has none (the event cleared them): the new
        // publisher's, when the origin has them already, all go.
        if changed(&self.metadata, &snap.metadata) {
            news.extend(snap.metadata);
        }
        for (mine, theirs) in [
            (&self.video_headers, snap.video_headers),
            (&self.audio_headers, snap.audio_headers),
        ] {
            for h in theirs {
                if !mine.iter().any(|m| m.payload == h.payload) {
                    news.push(h);
                }
            }
        }
        if resumed {
            // The origin's GOP holds only the new publisher's frames (its republish event
            // cleared it), and it starts at a keyframe.
            news.extend(snap.gop);
        } else {
            // A takeover while live: the new publisher's first frames may be gone already,
            // and its GOP may still hold the old publisher's frames these viewers had.
            for &v in &self.viewers {
                if let Some(c) = clients.get_mut(v.0) {
                    c.queue.skip_to_keyframe();
                }
            }
        }
        for mut f in news {
            f.seq = self.ring.next_seq();
            self.append(RingEntry::Frame(f), now, clients);
        }
        self.origin_offset = self.ring.next_seq().wrapping_sub(snap.next_seq);
        self.live = snap.live;
        Wake::Pass
    }

    /// Appends an entry from the origin, numbered in the origin's sequence.
    pub fn apply(
        &mut self,
        mut entry: RingEntry,
        now: Instant,
        clients: &mut Slab<Client>,
    ) -> Wake {
        if self.origin_offset != 0 {
            match &mut entry {
                RingEntry::Frame(f) => f.seq = f.seq.wrapping_add(self.origin_offset),
                RingEntry::Event { seq, .. } => *seq = seq.wrapping_add(self.origin_offset),
            }
        }
        self.append(entry, now, clients)
    }

    /// This shard becomes the stream's origin: its own ring's numbering is the origin's.
    pub fn become_origin(&mut self) {
        self.subscribed_to = None;
        self.origin_offset = 0;
    }

    /// Appends an entry numbered in this ring's sequence. A numbering gap means entries
    /// were lost on the way (an inbox was full): every viewer resumes at the next keyframe.
    pub fn append(
        &mut self,
        mut entry: RingEntry,
        now: Instant,
        clients: &mut Slab<Client>,
    ) -> Wake {
        if let RingEntry::Frame(f) = &mut entry {
            self.encode_for_viewers(f);
        }
        let seq = entry.seq();
        if seq < self.ring.next_seq() {
            return Wake::Nothing;
        }
        if seq > self.ring.next_seq() {
            tracing::warn!(stream = %self.name, lost = seq - self.ring.next_seq(), "frames lost between shards; viewers resume at the next keyframe");
            self.ring.restart_at(seq);
            for &v in &self.viewers {
                if let Some(c) = clients.get_mut(v.0) {
                    c.queue.jump_to(seq);
                }
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
                    self.live_since = Some(now);
                    // The new publisher starts with its own metadata, codec headers and a
                    // keyframe; the old publisher's are not served in their place.
                    self.metadata = None;
                    self.video_headers.clear();
                    self.audio_headers.clear();
                    if let Some(gop) = self.gop.as_mut() {
                        gop.clear();
                    }
                }
                // Its viewers are closed as their cursors reach it (`Shard::render_event`).
                StreamEvent::Ended | StreamEvent::PlayStopped => self.live = false,
            },
        }
        let mut wake = Wake::Pass;
        if self.settings.flush_on == FlushOn::Video {
            if matches!(&entry, RingEntry::Frame(f) if f.kind == FrameKind::Video) {
                self.last_video = Some(now);
            }
            if self.may_wait(&entry, now) {
                // A held entry after the first changes nothing the fan-out waits on (the
                // hold's deadline is the first one's).
                wake = match self.held_since {
                    None => Wake::HoldUntil(now + MAX_HOLD),
                    Some(_) => Wake::Nothing,
                };
                self.held_since.get_or_insert(now);
            }
        }
        self.ring.push(entry);
        let cap = self.settings.ring_cap();
        if self.ring.memory() > cap {
            self.ring.trim_to_memory(cap);
        }
        if self.viewers.is_empty() {
            self.ring.trim_before(self.ring.next_seq());
            return Wake::Nothing;
        }
        wake
    }

    /// Gives `f` the encodings this shard's FLV viewers of the stream need: once here, for
    /// all of them.
    fn encode_for_viewers(&self, f: &mut Frame) {
        for format in OutputFormat::FLV {
            let Some(slot) = format.slot() else { continue };
            if self.flv_viewers[slot] > 0 && f.encodings[slot].is_none() {
                f.encodings[slot] = output::encode(f, format, self.settings.chunk_size);
            }
        }
    }

    fn remember(&mut self, f: &Frame) {
        match f.kind {
            FrameKind::Audio => self.newest.audio = Some(f.timestamp),
            FrameKind::Video => self.newest.video = Some(f.timestamp),
            FrameKind::Metadata | FrameKind::Data => {}
        }
        match f.kind {
            FrameKind::Video if f.sequence_header => remember_header(&mut self.video_headers, f),
            FrameKind::Audio if f.sequence_header => remember_header(&mut self.audio_headers, f),
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
    /// its video starts at the next keyframe. Whoever starts it also writes to it.
    pub fn start_viewer(&mut self, id: ClientId, client: &mut Client, stream_id: u32) {
        if client.http.is_some() {
            return self.start_flv_viewer(id, client);
        }
        if client.forward.is_none() {
            // A push to another server is a publisher there: it gets no play answer.
            client.session.restore_chunk_size();
            client.session.accept_play(stream_id, true, false);
            client.queue_session_output();
        }
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
        let filter = client.queue.filter;
        let restamp =
            |payload: &Bytes, type_id: u8, ts: u32| encode_shared(type_id, ts, payload, chunk_size);
        let queue = &mut client.queue;
        // Metadata goes at time 0: players (ffmpeg's FLV reader among them) take an
        // `onMetaData` stamped later for a text track.
        if let Some(m) = &self.metadata {
            queue.push_pending(restamp(&m.payload, MessageType::DataAmf0.id(), 0));
        }
        // Every track's configuration, in the form this viewer's class gets, before any
        // frame.
        for (headers, type_id, ts) in [
            (&self.video_headers, MessageType::Video.id(), video_ts),
            (&self.audio_headers, MessageType::Audio.id(), audio_ts),
        ] {
            for h in headers {
                if let Some(payload) = h.payload_for(filter) {
                    queue.push_pending(restamp(payload, type_id, ts));
                }
            }
        }
        if !self.video_headers.is_empty()
            && !self
                .video_headers
                .iter()
                .any(|h| h.payload_for(filter).is_some())
        {
            let codecs: Vec<String> = self.video_headers.iter().map(header_codec).collect();
            tracing::warn!(stream = %self.name, viewer = %client.conn, peer = %client.addr, filter = filter.name(), codecs = ?codecs, "viewer gets no video: the stream's video codec has no legacy FLV id and the viewer declared no fourCcList (Enhanced RTMP codecs) in connect");
        }
        // The join ends when the first byte after what is queued so far is written.
        let join_target = queue.bytes_sent + queue.pending_bytes() as u64 + 1;
        for f in first_keyframes(&gop) {
            if let Some(bytes) = f.encoding(OutputFormat::Rtmp, filter) {
                queue.push_pending(bytes.clone());
            }
        }
        if !self.gop.as_ref().is_some_and(|g| g.starts_with_keyframe()) {
            // Inter frames before a first keyframe cannot be decoded.
            queue.skip_to_keyframe();
        }
        queue.wait_for_tracks(!started_tracks(&gop));
        queue.start_at(self.ring.next_seq());
        client.join_target = join_target;
        self.viewers.push(id);
    }

    /// Starts an HTTP-FLV or WebSocket-FLV viewer: its response head, the FLV header, then
    /// metadata, codec headers and the cached GOP as FLV tags in its format, then live.
    fn start_flv_viewer(&mut self, id: ClientId, client: &mut Client) {
        let Some(http) = client.http.as_mut() else {
            return;
        };
        let Some(format) = http.format else {
            return;
        };
        let Some(slot) = format.slot() else {
            return;
        };
        let queue = &mut client.queue;
        queue.format = format;
        if let Some(head) = http.response_head.take() {
            queue.push_pending(head);
        }
        let chunk_size = self.settings.chunk_size;
        let framed = |body: &[u8]| output::frame_flv(format, body);
        queue.push_pending(framed(&output::flv_header(
            !self.audio_headers.is_empty(),
            !self.video_headers.is_empty() || self.audio_headers.is_empty(),
        )));
        let gop: Vec<&Frame> = self
            .gop
            .as_ref()
            .map(|g| g.iter().map(|c| &c.item).collect())
            .unwrap_or_default();
        let first = |kind: FrameKind| gop.iter().find(|f| f.kind == kind).map(|f| f.timestamp);
        let any_start = gop.first().map(|f| f.timestamp);
        let video_ts = first(FrameKind::Video)
            .or(self.newest.video)
            .or(any_start)
            .unwrap_or(0);
        let audio_ts = first(FrameKind::Audio)
            .or(self.newest.audio)
            .or(any_start)
            .unwrap_or(0);
        queue.filter = TrackFilter::Track0;
        let headers = self
            .metadata
            .iter()
            .map(|f| (f, 0))
            .chain(self.video_headers.iter().map(|f| (f, video_ts)))
            .chain(self.audio_headers.iter().map(|f| (f, audio_ts)));
        for (f, ts) in headers {
            if let Some(tag) = output::flv_tag(f, ts, chunk_size) {
                queue.push_pending(framed(&tag));
            }
        }
        let join_target = queue.bytes_sent + queue.pending_bytes() as u64 + 1;
        for f in first_keyframes(&gop) {
            match &f.encodings[slot] {
                Some(bytes) => queue.push_pending(bytes.clone()),
                None => {
                    queue.push_pending(output::encode(f, format, chunk_size).unwrap_or_default())
                }
            }
        }
        if !self.gop.as_ref().is_some_and(|g| g.starts_with_keyframe()) {
            queue.skip_to_keyframe();
        }
        queue.wait_for_tracks(!started_tracks(&gop));
        queue.start_at(self.ring.next_seq());
        client.join_target = join_target;
        self.flv_viewers[slot] += 1;
        self.viewers.push(id);
    }

    /// A viewer of `format` left: frames stop getting that encoding when it was the last.
    pub fn forget_format(&mut self, format: OutputFormat) {
        if let Some(slot) = format.slot() {
            self.flv_viewers[slot] = self.flv_viewers[slot].saturating_sub(1);
        }
    }

    /// Removes a viewer (it left or was closed).
    pub fn remove_viewer(&mut self, id: ClientId) {
        if let Some(i) = self.viewers.iter().position(|&v| v == id) {
            self.viewers.remove(i);
            // A pass under way must not skip the viewer that moved into this place.
            if i < self.next_viewer {
                self.next_viewer -= 1;
            }
        }
        self.waiting.retain(|&v| v != id);
    }

    /// A fan-out pass is over: entries every viewer has passed are no longer needed here.
    pub(crate) fn end_pass(&mut self, clients: &Slab<Client>) {
        let slowest = self
            .viewers
            .iter()
            .filter_map(|v| clients.get(v.0))
            .map(|c| c.queue.cursor())
            .min()
            .unwrap_or_else(|| self.ring.next_seq());
        self.ring.trim_before(slowest);
    }
}

/// Keeps sequence header `f`: it replaces the headers of the tracks it carries, except one
/// that still covers another track too (a ManyTracks header of tracks 0 and 1 followed by
/// a new one for track 1 alone keeps both, in order, so the newest wins for track 1).
fn remember_header(headers: &mut Vec<Frame>, f: &Frame) {
    let ids = f.tracks().ids;
    headers.retain(|h| h.tracks().ids & !ids != 0);
    if headers.len() >= MAX_TRACKS {
        headers.remove(0);
    }
    headers.push(f.clone());
}

fn track0_header(headers: &[Frame]) -> Option<&Frame> {
    headers
        .iter()
        .rev()
        .find(|h| h.tracks().ids & 1 != 0)
        .or(headers.first())
}

/// The codec a header names, for the log.
fn header_codec(h: &Frame) -> String {
    crate::media::codec::inspect_video(&h.payload)
        .map_or_else(|| "unknown".to_owned(), |i| format!("{:?}", i.codec))
}

/// The GOP frames a joining viewer is sent: each video track starts at one of its own
/// keyframes, so a message of tracks none of which has had a keyframe yet in the cache is
/// left out (the GOP itself starts at a keyframe of track 0; another track's first frames
/// in it may be inter frames).
fn first_keyframes<'a>(gop: &[&'a Frame]) -> impl Iterator<Item = &'a Frame> {
    let mut started = 0u64;
    gop.iter().copied().filter(move |f| {
        if f.kind != FrameKind::Video {
            return true;
        }
        started |= started_by(f);
        f.tracks().ids & started != 0
    })
}

/// The video tracks a frame starts for a joiner: its own keyframes' tracks (all its
/// tracks for a track-0 keyframe).
fn started_by(f: &Frame) -> u64 {
    if f.keyframe {
        f.tracks().key_ids | f.tracks().ids
    } else {
        f.tracks().key_ids
    }
}

/// The video tracks a joiner's cached GOP starts; the others wait for a keyframe of their
/// own in the live stream (`WriteQueue::wait_for_tracks`).
fn started_tracks(gop: &[&Frame]) -> u64 {
    gop.iter()
        .filter(|f| f.kind == FrameKind::Video)
        .fold(0, |started, f| started | started_by(f))
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
            ingested: Instant::now(),
            encodings: Default::default(),
            tracks: Default::default(),
        })
    }

    fn video_of_tracks(ids: u64, key_ids: u64, keyframe: bool) -> Frame {
        let RingEntry::Frame(mut f) = frame(0, FrameKind::Video) else {
            unreachable!()
        };
        f.keyframe = keyframe;
        f.tracks = Some(std::sync::Arc::new(crate::relay::frame::FrameTracks {
            ids,
            key_ids,
            ..Default::default()
        }));
        f
    }

    #[test]
    fn a_joiners_gop_starts_each_track_at_its_own_keyframe() {
        // Track 0's keyframe starts the GOP; track 1's inter frames that follow it (an
        // encoder with reordering delay) come before track 1's keyframe, which the cache
        // has not seen yet.
        let gop_frames = [
            video_of_tracks(1, 1, true),
            video_of_tracks(2, 0, false),
            video_of_tracks(1, 0, false),
        ];
        let gop: Vec<&Frame> = gop_frames.iter().collect();
        assert_eq!(started_tracks(&gop), 1, "track 1 has not started");
        let sent: Vec<u64> = first_keyframes(&gop).map(|f| f.tracks().ids).collect();
        assert_eq!(sent, [1, 1], "track 1's inter frame is not sent");

        let with_key = [
            video_of_tracks(1, 1, true),
            video_of_tracks(2, 2, false),
            video_of_tracks(2, 0, false),
        ];
        let gop: Vec<&Frame> = with_key.iter().collect();
        assert_eq!(started_tracks(&gop), 3);
        assert_eq!(first_keyframes(&gop).count(), 3);
    }

    /// A stream with one (absent) viewer, so appends are not trimmed away at once.
    fn stream(flush_on: FlushOn) -> (LocalStream, Slab<Client>) {
        let mut s = LocalStream::new("live/a".into(), settings(flush_on));
        s.viewers.push(ClientId(Slab::<()>::default().insert(())));
        (s, Slab::default())
    }

    #[test]
    fn audio_waits_for_the_next_video_frame_at_most_max_hold() {
        let (mut s, mut clients) = stream(FlushOn::Video);
        let t0 = Instant::now();
        assert_eq!(
            s.append(frame(0, FrameKind::Video), t0, &mut clients),
            Wake::Pass,
            "video goes out at once"
        );
        s.begin_pass(t0);
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(
            s.append(frame(1, FrameKind::Audio), t1, &mut clients),
            Wake::HoldUntil(t1 + MAX_HOLD),
            "audio waits, at most MAX_HOLD"
        );
        assert_eq!(
            s.append(frame(2, FrameKind::Data), t1, &mut clients),
            Wake::Nothing,
            "a second held entry changes nothing the fan-out waits on"
        );
        assert_eq!(s.hold_deadline(), Some(t1 + MAX_HOLD), "the hold runs out");
        assert_eq!(
            s.append(frame(3, FrameKind::Video), t1, &mut clients),
            Wake::Pass,
            "the next frame takes them"
        );
        assert_eq!(s.ring.next_seq(), 4, "nothing held is left out of the ring");
    }

    #[test]
    fn a_hold_is_over_once_a_pass_has_written_it() {
        let (mut s, mut clients) = stream(FlushOn::Video);
        let t0 = Instant::now();
        s.append(frame(0, FrameKind::Video), t0, &mut clients);
        s.begin_pass(t0);
        s.append(frame(1, FrameKind::Audio), t0, &mut clients);
        assert_eq!(s.hold_deadline(), Some(t0 + MAX_HOLD));
        s.append(frame(2, FrameKind::Video), t0, &mut clients);
        s.begin_pass(t0);
        assert_eq!(
            s.hold_deadline(),
            None,
            "the video frame's pass wrote the held audio: its timer has nothing to do"
        );
    }

    #[test]
    fn audio_only_streams_and_flush_on_message_never_hold() {
        let t0 = Instant::now();
        let (mut s, mut clients) = stream(FlushOn::Video);
        assert_eq!(
            s.append(frame(0, FrameKind::Audio), t0, &mut clients),
            Wake::Pass,
            "no video yet: audio-only"
        );
        s.append(frame(1, FrameKind::Video), t0, &mut clients);
        s.begin_pass(t0);
        let later = t0 + VIDEO_GONE;
        assert_eq!(
            s.append(frame(2, FrameKind::Audio), later, &mut clients),
            Wake::Pass,
            "video stopped coming"
        );

        let (mut s, mut clients) = stream(FlushOn::Message);
        s.append(frame(0, FrameKind::Video), t0, &mut clients);
        s.begin_pass(t0);
        assert_eq!(
            s.append(frame(1, FrameKind::Audio), t0, &mut clients),
            Wake::Pass
        );
    }

    #[test]
    fn a_stream_without_viewers_keeps_nothing() {
        let t0 = Instant::now();
        let mut s = LocalStream::new("live/a".into(), settings(FlushOn::Video));
        let mut clients = Slab::default();
        assert_eq!(
            s.append(frame(0, FrameKind::Video), t0, &mut clients),
            Wake::Nothing
        );
        assert!(s.ring.is_empty());
        assert_eq!(s.ring.next_seq(), 1);
    }

    #[test]
    fn the_ring_is_capped_by_memory_not_payload() {
        // A publisher flooding empty messages past one viewer that reads nothing: each
        // entry costs its record, so the ring stays within its cap in memory.
        let t0 = Instant::now();
        let (mut s, mut clients) = stream(FlushOn::Message);
        let cap = s.settings.ring_cap();
        for seq in 0..200_000u64 {
            let mut e = frame(seq, FrameKind::Data);
            if let RingEntry::Frame(f) = &mut e {
                f.bytes = Bytes::new();
                f.payload = Bytes::new();
            }
            s.append(e, t0, &mut clients);
        }
        assert!(s.ring.memory() <= cap, "{} > {cap}", s.ring.memory());
        assert!(
            s.ring.len() < 200_000 && s.ring.len() >= cap / (2 * std::mem::size_of::<RingEntry>()),
            "{} entries",
            s.ring.len()
        );
    }
}
