//! A shard: everything one core owns, and the messages shards exchange.
//!
//! Each shard runs on its own pinned glommio executor and owns its connections (`Peer`s), a
//! [`LocalStream`] per stream it has viewers for, and an [`Origin`] per stream whose
//! publisher it accepted. Shards never share mutable state; they send [`ShardMessage`]s
//! through their mailboxes (`mailbox.rs`). The one shared structure is the stream directory
//! (`directory.rs`), consulted when a publisher or viewer arrives.
//!
//! A viewer of a stream whose origin is another shard makes its shard subscribe to the
//! origin **once** (a second viewer on the same shard finds the `LocalStream` already
//! there). The origin answers with a snapshot (metadata, codec headers, GOP) and then sends
//! each new frame's handle once per subscribed shard; the subscribed shard's fan-out does
//! the per-viewer work on its own core.
//!
//! When a publisher comes back on a different shard than before (SO_REUSEPORT decides
//! where each connection lands), that shard becomes the origin and tells every other shard;
//! each `LocalStream` re-subscribes and gets a fresh snapshot. Its viewers lose nothing they
//! were owed from the old origin, then get what the new one has that they lack, in order
//! (`PublishNotify`, new codec headers, the new publisher's GOP; see
//! `LocalStream::apply_snapshot`), with timestamps that keep going forward. Snapshots and
//! entries carry the origin they come from, so what a former origin still had in flight is
//! dropped rather than mistaken for the new origin's.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::directory::{Claim, ConnId, StreamClock, StreamDirectory, StreamName, TakeoverPolicy};
use super::frame::{RingEntry, StreamEvent};
use super::mailbox::{SendError, ShardId, ShardSender};
use super::origin::Origin;
use super::peer::{PeerRef, Role};
use super::signal::{Latch, Signal};
use super::stream::{LocalStream, StreamSettings, StreamSnapshot, fan_out};
use crate::config::{AppConfig, Config};
use crate::media::gop_cache::GopCacheLimits;
use crate::rtmp::MediaKind;
use crate::rtmp::chunk::SHARED_STREAM_ID;
use crate::rtmp::command::status;

/// What shards send each other. Media travels as `Bytes` handles inside `RingEntry`.
pub enum ShardMessage {
    /// A shard with viewers of `stream` wants its frames.
    Subscribe {
        stream: StreamName,
        shard: ShardId,
    },
    Unsubscribe {
        stream: StreamName,
        shard: ShardId,
    },
    /// The origin's answer to `Subscribe`.
    Snapshot {
        stream: StreamName,
        origin: ShardId,
        snapshot: Box<StreamSnapshot>,
    },
    /// One frame or stream event from the origin.
    Entry {
        stream: StreamName,
        origin: ShardId,
        entry: RingEntry,
    },
    /// `origin` is now the stream's origin: re-subscribe there; an old origin drops its
    /// publisher.
    OriginMoved {
        stream: StreamName,
        origin: ShardId,
    },
    /// Stop accepting, tell every client, and finish.
    Shutdown,
}

struct OriginState {
    origin: Origin,
    subscribers: Vec<ShardId>,
    publisher: Option<ConnId>,
    clock: Arc<StreamClock>,
    /// Bumped at each unpublish, so a grace timer from an earlier unpublish does nothing.
    grace_epoch: u64,
}

pub struct Shard {
    pub id: ShardId,
    pub config: Arc<Config>,
    peers: Vec<ShardSender<ShardMessage>>,
    directory: Arc<StreamDirectory>,
    started: Instant,
    streams: RefCell<HashMap<StreamName, Rc<RefCell<LocalStream>>>>,
    origins: RefCell<HashMap<StreamName, OriginState>>,
    pub connections: RefCell<HashMap<ConnId, PeerRef>>,
    next_conn: Cell<u64>,
    /// Set when shutdown starts: the accept loop stops, the shard winds down.
    pub shutting_down: Latch,
    /// Notified when a connection ends: shutdown waits for the last one.
    pub connection_closed: Rc<Signal>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        peers: Vec<ShardSender<ShardMessage>>,
        directory: Arc<StreamDirectory>,
        started: Instant,
    ) -> Shard {
        Shard {
            id,
            config,
            peers,
            directory,
            started,
            streams: RefCell::new(HashMap::new()),
            origins: RefCell::new(HashMap::new()),
            connections: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            shutting_down: Latch::default(),
            connection_closed: Rc::new(Signal::default()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn next_conn_id(&self) -> ConnId {
        let n = self.next_conn.get();
        self.next_conn.set(n + 1);
        ((self.id as u64) << 48) | n
    }

    fn send(&self, shard: ShardId, msg: ShardMessage) {
        let Some(tx) = self.peers.get(shard) else {
            return;
        };
        match tx.send(msg) {
            Ok(()) => {}
            Err(SendError::Full) => {
                tracing::warn!(
                    shard = self.id,
                    to = shard,
                    "shard inbox full; message dropped"
                )
            }
            Err(SendError::Closed) => {}
        }
    }

    fn stream_settings(&self, app: &AppConfig) -> StreamSettings {
        let v = &self.config.viewer;
        StreamSettings {
            chunk_size: self.config.server.chunk_size,
            gop_cache: app.gop_cache.then(|| GopCacheLimits {
                max_bytes: app.gop_cache_max_bytes,
                max_duration_ms: app.gop_cache_max_ms.min(u64::from(u32::MAX)) as u32,
            }),
            backlog_max_bytes: v.backlog_max_bytes,
            backlog_max_ms: v.backlog_max_ms.min(u64::from(u32::MAX)) as u32,
            lag_disconnect: v.lag_disconnect(),
            flush_interval: v.flush_interval(),
            flush_on: v.flush_on,
        }
    }

    fn app_of(name: &str) -> &str {
        name.split_once('/').map_or(name, |(app, _)| app)
    }

    fn settings_for(&self, name: &StreamName) -> StreamSettings {
        let app = self
            .config
            .app(Self::app_of(name))
            .cloned()
            .unwrap_or_default();
        self.stream_settings(&app)
    }

    /// The stream's `LocalStream` on this shard, created (with its fan-out task) if needed.
    fn local_stream(&self, name: &StreamName) -> Rc<RefCell<LocalStream>> {
        if let Some(s) = self.streams.borrow().get(name) {
            return s.clone();
        }
        let stream = Rc::new(RefCell::new(LocalStream::new(
            name.clone(),
            self.settings_for(name),
        )));
        self.streams
            .borrow_mut()
            .insert(name.clone(), stream.clone());
        glommio::spawn_local(fan_out(stream.clone())).detach();
        stream
    }

    /// Drops a `LocalStream` nobody needs any more (no viewers, not an origin here).
    fn release_stream_if_unused(&self, name: &StreamName) {
        if self.origins.borrow().contains_key(name) {
            return;
        }
        let stream = {
            let streams = self.streams.borrow();
            match streams.get(name) {
                Some(s) if !s.borrow().has_viewers() => s.clone(),
                _ => return,
            }
        };
        self.streams.borrow_mut().remove(name);
        let origin = stream.borrow_mut().subscribed_to.take();
        stream.borrow().signal.notify();
        if let Some(origin) = origin {
            self.send(
                origin,
                ShardMessage::Unsubscribe {
                    stream: name.clone(),
                    shard: self.id,
                },
            );
        }
    }

    /// Starts the viewers that waited for a publisher, once the stream is live.
    fn start_waiting(&self, stream: &Rc<RefCell<LocalStream>>) {
        let waiting = {
            let mut s = stream.borrow_mut();
            if !s.live || s.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut s.waiting)
        };
        for peer in waiting {
            let stream_id = {
                let mut p = peer.borrow_mut();
                match &mut p.role {
                    Role::Viewer {
                        stream_id,
                        waiting_since,
                        ..
                    } => {
                        *waiting_since = None;
                        *stream_id
                    }
                    _ => continue,
                }
            };
            stream.borrow_mut().start_viewer(&peer, stream_id);
            tracing::info!(shard = self.id, peer = %peer.borrow().addr, stream = %stream.borrow().name, "viewer started (stream now live here)");
        }
    }

    /// Subscribes this shard's `LocalStream` to `origin`, unless it already is.
    fn subscribe(&self, stream: &Rc<RefCell<LocalStream>>, origin: ShardId) {
        let name = {
            let mut s = stream.borrow_mut();
            if s.subscribed_to == Some(origin) || origin == self.id {
                return;
            }
            s.subscribed_to = Some(origin);
            s.name.clone()
        };
        self.send(
            origin,
            ShardMessage::Subscribe {
                stream: name,
                shard: self.id,
            },
        );
    }

    /// Appends an entry to a stream this shard is the origin of: once to each subscribed
    /// shard (a handle, not a copy) and once to the local ring.
    fn push_entry(&self, name: &StreamName, entry: RingEntry) {
        if let Some(state) = self.origins.borrow().get(name) {
            for &shard in &state.subscribers {
                self.send(
                    shard,
                    ShardMessage::Entry {
                        stream: name.clone(),
                        origin: self.id,
                        entry: entry.clone(),
                    },
                );
            }
        }
        let stream = self.streams.borrow().get(name).cloned();
        if let Some(stream) = stream {
            stream.borrow_mut().apply(entry);
        }
    }

    /// Tells every other shard that this one is now the origin of `name`.
    fn announce_origin(&self, name: &StreamName) {
        for shard in 0..self.peers.len() {
            if shard != self.id {
                self.send(
                    shard,
                    ShardMessage::OriginMoved {
                        stream: name.clone(),
                        origin: self.id,
                    },
                );
            }
        }
    }

    /// A client asked to publish `app/key` on `stream_id`.
    pub fn publish(&self, peer: &PeerRef, stream_id: u32, key: &str) {
        let (app_name, conn_id, addr) = {
            let p = peer.borrow();
            (p.session.app().to_owned(), p.id, p.addr)
        };
        let app = self.config.app(&app_name).cloned().unwrap_or_default();
        if !app.allow_publish {
            let mut p = peer.borrow_mut();
            p.session.reject_publish(
                stream_id,
                status::PUBLISH_DENIED,
                "publishing is not allowed in this application",
            );
            p.queue_session_output();
            tracing::info!(shard = self.id, peer = %addr, app = %app_name, key, "publish refused: not allowed in this application");
            return;
        }
        let name: StreamName = format!("{app_name}/{key}").into();
        let policy = TakeoverPolicy {
            immediate: app.takeover_immediate,
            idle_ms: app.takeover_idle_ms,
        };
        let (claim, clock) = self
            .directory
            .claim(&name, self.id, conn_id, self.now_ms(), policy);
        let Some(clock) = clock else {
            let mut p = peer.borrow_mut();
            p.session.reject_publish(
                stream_id,
                status::PUBLISH_BAD_NAME,
                "this stream is already being published",
            );
            p.queue_session_output();
            tracing::info!(shard = self.id, peer = %addr, stream = %name, "publish refused: the key is being published by an active publisher");
            return;
        };
        let stream = self.local_stream(&name);
        {
            let mut origins = self.origins.borrow_mut();
            let first_seq = stream.borrow().ring.next_seq();
            let state = origins.entry(name.clone()).or_insert_with(|| OriginState {
                origin: Origin::new(first_seq, self.config.server.chunk_size),
                subscribers: Vec::new(),
                publisher: None,
                clock: clock.clone(),
                grace_epoch: 0,
            });
            state.clock = clock.clone();
            state.grace_epoch += 1;
            if state.origin.next_seq() != first_seq {
                // This shard was a subscriber until now: continue its local numbering.
                state.origin = Origin::new(first_seq, self.config.server.chunk_size);
            }
            match claim {
                Claim::New => {}
                _ => state.origin.continue_from(clock.last_timestamp()),
            }
            if let Some(previous) = state.publisher.replace(conn_id)
                && previous != conn_id
                && let Some(old) = self.connections.borrow().get(&previous)
            {
                old.borrow_mut()
                    .close(format!("taken over by a new publisher from {addr}"));
            }
        }
        stream.borrow_mut().become_origin();
        let was_live = stream.borrow().live;
        match claim {
            Claim::New => {
                tracing::info!(shard = self.id, peer = %addr, stream = %name, "publish started")
            }
            Claim::Resumed { previous_origin } => {
                tracing::info!(shard = self.id, peer = %addr, stream = %name, previous_origin, "publisher returned within the grace period")
            }
            Claim::TookOver {
                previous_origin, ..
            } => {
                tracing::info!(shard = self.id, peer = %addr, stream = %name, previous_origin, "publish took the key over from the previous publisher (idle, or takeover_immediate)")
            }
            Claim::Busy => {}
        }
        let moved = match claim {
            Claim::Resumed { previous_origin }
            | Claim::TookOver {
                previous_origin, ..
            } => previous_origin != self.id,
            _ => false,
        };
        if !was_live {
            let event = {
                let mut origins = self.origins.borrow_mut();
                origins
                    .get_mut(&name)
                    .map(|s| s.origin.event(StreamEvent::Republished))
            };
            if let Some(event) = event {
                self.push_entry(&name, event);
            }
        }
        // Every other shard learns of the new origin: shards with waiting or continuing
        // viewers subscribe, an old origin drops its publisher.
        if matches!(claim, Claim::New) || moved {
            self.announce_origin(&name);
        }
        {
            let mut p = peer.borrow_mut();
            p.session.accept_publish(stream_id);
            p.queue_session_output();
            p.set_role(Role::Publisher {
                name: name.clone(),
                stream_id,
                clock,
            });
        }
        self.start_waiting(&stream);
    }

    /// A media message from the publisher `peer`.
    pub fn ingest_media(&self, name: &StreamName, kind: MediaKind, timestamp: u32, payload: Bytes) {
        let now = self.now_ms();
        let frame = {
            let mut origins = self.origins.borrow_mut();
            let Some(state) = origins.get_mut(name) else {
                return;
            };
            let frame = state.origin.media(kind, timestamp, payload);
            state.clock.touch(now, frame.timestamp);
            frame
        };
        self.push_entry(name, RingEntry::Frame(frame));
    }

    /// A data message from the publisher (`metadata` for `onMetaData`).
    pub fn ingest_data(&self, name: &StreamName, timestamp: u32, payload: Bytes, metadata: bool) {
        let frame = {
            let mut origins = self.origins.borrow_mut();
            let Some(state) = origins.get_mut(name) else {
                return;
            };
            state.origin.data(timestamp, payload, metadata)
        };
        self.push_entry(name, RingEntry::Frame(frame));
    }

    /// The publisher `peer` stopped (closeStream, deleteStream, FCUnpublish, or it
    /// disconnected). Viewers are told at once and kept for the grace period.
    pub fn unpublish(self: &Rc<Self>, peer: &PeerRef) {
        let (conn_id, name) = {
            let mut p = peer.borrow_mut();
            let name = match &p.role {
                Role::Publisher { name, .. } => name.clone(),
                _ => return,
            };
            p.role = Role::Idle;
            (p.id, name)
        };
        if !self.directory.release(&name, conn_id) {
            return; // taken over: the stream lives on elsewhere
        }
        let (event, epoch) = {
            let mut origins = self.origins.borrow_mut();
            let Some(state) = origins.get_mut(&name) else {
                return;
            };
            if state.publisher != Some(conn_id) {
                return;
            }
            state.publisher = None;
            state.grace_epoch += 1;
            (
                state.origin.event(StreamEvent::Unpublished),
                state.grace_epoch,
            )
        };
        tracing::info!(shard = self.id, stream = %name, "publisher left; viewers wait for the grace period");
        self.push_entry(&name, event);
        let grace = self
            .config
            .app(Self::app_of(&name))
            .map(AppConfig::unpublish_grace)
            .unwrap_or(Duration::from_secs(5));
        let shard = self.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(grace).await;
            shard.end_grace(&name, epoch);
        })
        .detach();
    }

    /// The grace period after an unpublish ran out: end the stream unless it came back.
    fn end_grace(&self, name: &StreamName, epoch: u64) {
        let current = self
            .origins
            .borrow()
            .get(name)
            .is_some_and(|s| s.grace_epoch == epoch && s.publisher.is_none());
        if !current || !self.directory.remove_if_unpublished(name, self.id) {
            return;
        }
        tracing::info!(shard = self.id, stream = %name, "stream ended: no publisher within the grace period");
        self.end_stream(name);
    }

    fn end_stream(&self, name: &StreamName) {
        let event = self
            .origins
            .borrow_mut()
            .get_mut(name)
            .map(|s| s.origin.event(StreamEvent::Ended));
        if let Some(event) = event {
            self.push_entry(name, event);
        }
        self.origins.borrow_mut().remove(name);
        self.release_stream_if_unused(name);
    }

    /// A client asked to play `app/key` on `stream_id`.
    pub fn play(&self, peer: &PeerRef, stream_id: u32, key: &str) {
        let (app_name, addr) = {
            let p = peer.borrow();
            (p.session.app().to_owned(), p.addr)
        };
        let app = self.config.app(&app_name).cloned().unwrap_or_default();
        let refuse = |code: &str, why: &str| {
            let mut p = peer.borrow_mut();
            p.session.reject_play(stream_id, code, why);
            p.queue_session_output();
            tracing::info!(shard = self.id, peer = %addr, app = %app_name, key, "play refused: {why}");
        };
        if !app.allow_play {
            return refuse(
                status::PLAY_FAILED,
                "playing is not allowed in this application",
            );
        }
        if stream_id != SHARED_STREAM_ID {
            // Every viewer shares one encoding of each frame, made for message stream 1.
            return refuse(
                status::PLAY_FAILED,
                "shardcast serves play on the connection's first stream only",
            );
        }
        let name: StreamName = format!("{app_name}/{key}").into();
        // A live stream wins; otherwise a recording of that name, if the app has them.
        if let Some(dir) = app.recordings_dir()
            && self.directory.origin(&name).is_none()
            && let Some(path) = crate::net::recording::recording_path(dir, key)
            && path.is_file()
        {
            let limits = crate::net::recording::PlaybackLimits {
                chunk_size: self.config.server.chunk_size,
                max_pending_bytes: self.config.viewer.backlog_max_bytes,
                lag_disconnect: self.config.viewer.lag_disconnect(),
            };
            {
                let mut p = peer.borrow_mut();
                p.set_role(Role::Recording {
                    name: name.clone(),
                    stream_id,
                });
                p.session.accept_play(stream_id, true, true);
                p.queue_session_output();
            }
            tracing::info!(shard = self.id, peer = %addr, stream = %name, file = %path.display(), "playing a recording");
            glommio::spawn_local(crate::net::recording::play_file(peer.clone(), path, limits))
                .detach();
            return;
        }
        let stream = self.local_stream(&name);
        if !self.origins.borrow().contains_key(&name)
            && let Some(origin) = self.directory.origin(&name)
        {
            self.subscribe(&stream, origin);
        }
        let live = stream.borrow().live;
        {
            let mut p = peer.borrow_mut();
            p.set_role(Role::Viewer {
                name: name.clone(),
                stream_id,
                stream: stream.clone(),
                waiting_since: (!live).then(Instant::now),
            });
        }
        if live {
            stream.borrow_mut().start_viewer(peer, stream_id);
            tracing::info!(shard = self.id, peer = %addr, stream = %name, "viewer started");
        } else if self.directory.publisher_shard(&name).is_some() {
            // Live on another shard: it starts when that shard's snapshot arrives.
            stream.borrow_mut().waiting.push(peer.clone());
            tracing::info!(shard = self.id, peer = %addr, stream = %name, "viewer waits for the stream from its origin shard");
        } else {
            stream.borrow_mut().waiting.push(peer.clone());
            tracing::info!(shard = self.id, peer = %addr, stream = %name, "viewer waits for the publisher");
        }
    }

    /// The connection of `peer` ended (or its play/publish did): clean up its role.
    pub fn leave(self: &Rc<Self>, peer: &PeerRef) {
        let role = std::mem::replace(&mut peer.borrow_mut().role, Role::Idle);
        match role {
            Role::Idle => {}
            Role::Publisher {
                name,
                stream_id,
                clock,
            } => {
                peer.borrow_mut().role = Role::Publisher {
                    name,
                    stream_id,
                    clock,
                };
                self.unpublish(peer);
            }
            Role::Recording { .. } => {}
            Role::Viewer { name, stream, .. } => {
                let id = peer.borrow().id;
                stream.borrow_mut().remove_viewer(id);
                self.release_stream_if_unused(&name);
            }
        }
    }

    /// Handles a message from another shard.
    pub fn handle_message(self: &Rc<Self>, msg: ShardMessage) {
        match msg {
            ShardMessage::Subscribe { stream, shard } => {
                let snapshot = {
                    let mut origins = self.origins.borrow_mut();
                    let Some(state) = origins.get_mut(&stream) else {
                        // No longer the origin: point the subscriber at the current one.
                        drop(origins);
                        if let Some(origin) = self.directory.origin(&stream)
                            && origin != self.id
                        {
                            self.send(shard, ShardMessage::OriginMoved { stream, origin });
                        }
                        return;
                    };
                    if !state.subscribers.contains(&shard) {
                        state.subscribers.push(shard);
                    }
                    let local = self.streams.borrow().get(&stream).cloned();
                    match local {
                        Some(l) => l.borrow().snapshot(),
                        None => return,
                    }
                };
                self.send(
                    shard,
                    ShardMessage::Snapshot {
                        stream,
                        origin: self.id,
                        snapshot: Box::new(snapshot),
                    },
                );
            }
            ShardMessage::Unsubscribe { stream, shard } => {
                if let Some(state) = self.origins.borrow_mut().get_mut(&stream) {
                    state.subscribers.retain(|&s| s != shard);
                }
            }
            ShardMessage::Snapshot {
                stream,
                origin,
                snapshot,
            } => {
                let local = self.streams.borrow().get(&stream).cloned();
                match local {
                    Some(local) if local.borrow().subscribed_to == Some(origin) => {
                        local.borrow_mut().apply_snapshot(*snapshot);
                        self.start_waiting(&local);
                    }
                    // Nobody here needs it any more, or it comes from an origin this shard
                    // has since left for a newer one (whose snapshot is on its way).
                    _ => self.send(
                        origin,
                        ShardMessage::Unsubscribe {
                            stream,
                            shard: self.id,
                        },
                    ),
                }
            }
            ShardMessage::Entry {
                stream,
                origin,
                entry,
            } => {
                let local = self.streams.borrow().get(&stream).cloned();
                // Entries still in flight from a former origin are numbered in its
                // sequence, not the current one's: they are dropped.
                if let Some(local) = local
                    && local.borrow().subscribed_to == Some(origin)
                {
                    let ended = matches!(
                        entry,
                        RingEntry::Event {
                            event: StreamEvent::Ended,
                            ..
                        }
                    );
                    local.borrow_mut().apply(entry);
                    self.start_waiting(&local);
                    if ended {
                        local.borrow_mut().subscribed_to = None;
                        self.release_stream_if_unused(&stream);
                    }
                }
            }
            ShardMessage::OriginMoved { stream, origin } => {
                // If this shard was the origin, its publisher (if any) has been replaced.
                let removed = self.origins.borrow_mut().remove(&stream);
                if let Some(conn) = removed.and_then(|state| state.publisher)
                    && let Some(p) = self.connections.borrow().get(&conn)
                {
                    let mut p = p.borrow_mut();
                    p.role = Role::Idle;
                    p.close("taken over by a new publisher on another core");
                }
                let local = self.streams.borrow().get(&stream).cloned();
                if let Some(local) = local {
                    self.subscribe(&local, origin);
                }
            }
            ShardMessage::Shutdown => self.begin_shutdown(),
        }
    }

    /// Graceful shutdown: stop accepting, tell every client, close them.
    pub fn begin_shutdown(&self) {
        if self.shutting_down.is_set() {
            return;
        }
        self.shutting_down.set();
        let peers: Vec<PeerRef> = self.connections.borrow().values().cloned().collect();
        for peer in peers {
            let mut p = peer.borrow_mut();
            match &p.role {
                Role::Viewer { stream_id, .. } | Role::Recording { stream_id, .. } => {
                    let id = *stream_id;
                    p.session.notify_unpublished(id);
                }
                Role::Publisher { stream_id, .. } => {
                    let id = *stream_id;
                    p.session.send_status(
                        id,
                        "status",
                        status::UNPUBLISH_SUCCESS,
                        "server shutting down",
                    );
                }
                Role::Idle => {}
            }
            p.queue_session_output();
            p.close("server shutting down");
        }
    }

    /// Checks a publisher for the idle timeout; returns the reason to close it, if any.
    pub fn publisher_idle(&self, peer: &PeerRef) -> Option<String> {
        let p = peer.borrow();
        let Role::Publisher { name, clock, .. } = &p.role else {
            return None;
        };
        let app = self.config.app(Self::app_of(name))?;
        let idle = self.now_ms().saturating_sub(clock.last_media_ms());
        (idle > app.publisher_idle_timeout_ms).then(|| {
            format!(
                "publisher sent no media for {idle} ms (limit {} ms)",
                app.publisher_idle_timeout_ms
            )
        })
    }

    /// How long a waiting viewer may still wait; `None` if it is not waiting.
    pub fn viewer_wait_expired(&self, peer: &PeerRef) -> Option<String> {
        let p = peer.borrow();
        let Role::Viewer {
            name,
            waiting_since: Some(since),
            ..
        } = &p.role
        else {
            return None;
        };
        let limit = self.config.app(Self::app_of(name))?.wait_for_publisher();
        (since.elapsed() > limit)
            .then(|| format!("no publisher for {name} within {} ms", limit.as_millis()))
    }
}
