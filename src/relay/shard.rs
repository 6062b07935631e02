//! A shard: everything one core owns, as a deterministic state machine.
//!
//! In the manner of quinn-proto's `Endpoint`, a [`Shard`] owns its clients and streams in
//! slabs addressed by handle ([`ClientId`], [`StreamId`]), takes the time as an argument,
//! and says what must happen as [`Output`] values: send this to shard N, wait until this
//! client's socket drains, close this client, read this piece of a file, run the fan-out.
//! It arms no timer itself: [`Shard::poll_timeout`] says when it next needs
//! [`Shard::handle_timeout`]. The driver (`src/net/shard_driver.rs`) owns the sockets, the
//! tasks and the clock, and carries all of that out. Writes are the one exception to
//! "outputs as values", because they must not copy: the relay gathers each client's bytes
//! (shared `Bytes`, in place) and hands them to a [`Transmit`], the driver's sockets.
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::{Client, ClientId, ForwardLink, Role, RoleKind};
use super::client::{PendingAction, PendingCallback};
use super::directory::{Claim, ConnId, StreamClock, StreamDirectory, StreamName, TakeoverPolicy};
use super::forwarder::{self, ForwardState, ForwardStep, Forwarder};
use super::frame::{FrameRing, RingEntry, StreamEvent};
use super::http_viewer::HttpRequest;
use super::message::{AdminRefusal, ShardId, ShardMessage};
use super::origin::Origin;
use super::output::{OutputFormat, TrackFilter};
use super::rate::RATE_SAMPLE_INTERVAL;
use super::recorder::{RecordOp, RecordSettings, RecordStatus, Recorder, RecordingId};
use super::slab::Slab;
use super::snapshot::{
    ClientInfo, ConnectionCounts, ForwardInfo, PublisherInfo, ShardSnapshot, StreamInfo,
    UpstreamInfo,
};
use super::stats::{RejectReason, ShardStats};
use super::stream::{LocalStream, StreamId, StreamSettings, Wake};
use super::upstream_source::{LinkFailure, PullSettings, PullStep, UpstreamSource, UpstreamUrl};
use super::vod_download::{Download, DownloadRequest, DownloadStep};
use super::vod_source::{FileBuffer, FileStep, VodSource, vod_candidates};
use super::write_queue::{FlushOutcome, FlushScratch, Transmit};
use crate::access::callback::{self, Call, CallbackAnswer, CallbackRequest, Notice, Verdict};
use crate::access::query::{self, QueryArgs};
use crate::access::{self, AccessRequest, Action, Denial, DenialKind};
use crate::config::{AppConfig, Config, RecordMode};
use crate::http::range::{self, ByteRange};
use crate::http::response::{self, Cors};
use crate::media::codec::{inspect_audio, inspect_video};
use crate::media::gop_cache::GopCacheLimits;
use crate::media::vod_index::VodIndex;
use crate::performance::VOD_CHUNK_SIZE;
use crate::rtmp::chunk::{DecoderLimits, SHARED_STREAM_ID};
use crate::rtmp::command::status;
use crate::rtmp::{
    ClientEvent, ClientSession, ClientSessionConfig, MediaKind, ServerEvent, ServerSession,
    ServerSessionConfig,
};

#[path = "shard_pull.rs"]
mod pull;
pub use pull::UpstreamEvent;

/// What the driver must do for the shard.
#[derive(Debug)]
pub enum Output {
    /// Put `message` in shard `to`'s inbox.
    Send { to: ShardId, message: ShardMessage },
    /// Fan-out work is queued: call [`Shard::fan_out`] until it says it is done.
    FanOut,
    /// The client's socket is full: wait until it can take more, then call
    /// [`Shard::write_blocked`].
    WaitWritable(ClientId),
    /// Close the client: call [`Shard::write_goodbye`] (its last queued bytes, if the socket
    /// takes them now), then [`Shard::remove_client`], then close the socket.
    Close(ClientId),
    /// Read `len` bytes at `offset` of `path` for the file source of `stream`, and hand them
    /// to [`Shard::handle_file_read`].
    ReadFile {
        stream: StreamId,
        path: Arc<Path>,
        offset: u64,
        len: usize,
    },
    /// The file of `stream` is no longer read: drop its handle.
    CloseFile(StreamId),
    /// Find the first of `candidates` (file names) in `dir`, refuse it if it leaves the
    /// directory or is no regular file, open it and index it (or take the index kept for
    /// it), off the shard's thread; then call [`Shard::handle_vod_opened`] with `request`.
    OpenVod {
        request: u64,
        dir: std::path::PathBuf,
        candidates: Vec<String>,
    },
    /// Find `file` in `dir` for the HTTP download of `client`, confined as `OpenVod`
    /// confines a play, off the shard's thread; then call [`Shard::handle_download_opened`].
    OpenDownload {
        client: ClientId,
        dir: std::path::PathBuf,
        file: String,
    },
    /// Read `len` bytes at `offset` of `client`'s download, and hand them to
    /// [`Shard::handle_download_read`].
    ReadDownload {
        client: ClientId,
        offset: u64,
        len: usize,
    },
    /// The client became a viewer: give its socket the viewer socket options.
    Playing(ClientId),
    /// Hand this to the disk writer (`src/net/record_writer.rs`); if it cannot take it,
    /// call [`Shard::record_failed`].
    Record(RecordOp),
    /// Make this access-control callback (`src/access/callback.rs`) without blocking the
    /// shard, and hand its answer, or its failure after `request.timeout`, to
    /// [`Shard::handle_callback_answer`] with `client` and `ticket`.
    Callback {
        client: ClientId,
        ticket: u64,
        request: CallbackRequest,
    },
    /// Make this callback and ignore its answer (`on_publish_done`, `on_play_done`).
    Notify(CallbackRequest),
    /// Open a TCP connection to a push target (`forwarder.rs`) and hand it to
    /// [`Shard::forward_connected`], or its failure to [`Shard::forward_connect_failed`],
    /// with `stream`, `index` and `attempt`.
    ForwardConnect {
        stream: StreamName,
        index: usize,
        attempt: u64,
        host: String,
        port: u16,
        /// `rtmps://`: TLS to `host`, checked against `server.tls_ca_file`.
        tls: bool,
    },
    /// Open upstream link `link` (`src/net/upstream_link.rs`): connect to `url`, play
    /// `key` there with `relay_path` in `connect`, and hand what comes to
    /// [`Shard::handle_upstream`] until told [`Output::CloseUpstream`].
    OpenUpstream {
        link: u64,
        url: UpstreamUrl,
        key: String,
        relay_path: crate::rtmp::RelayPath,
        /// For an `rtmps://` origin: the authorities its certificate must chain to.
        tls_ca_file: Option<std::path::PathBuf>,
    },
    /// Close upstream link `link`; nothing it still says matters.
    CloseUpstream { link: u64 },
}

impl std::fmt::Debug for ShardMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ShardMessage::Subscribe { .. } => "Subscribe",
            ShardMessage::Unsubscribe { .. } => "Unsubscribe",
            ShardMessage::Subscribed { .. } => "Subscribed",
            ShardMessage::Entry { .. } => "Entry",
            ShardMessage::OriginMoved { .. } => "OriginMoved",
            ShardMessage::Inspect { .. } => "Inspect",
            ShardMessage::Kick { .. } => "Kick",
            ShardMessage::InjectData { .. } => "InjectData",
            ShardMessage::Record { .. } => "Record",
            ShardMessage::UpstreamRefused { .. } => "UpstreamRefused",
            ShardMessage::Shutdown => "Shutdown",
            ShardMessage::Reload(_) => "Reload",
            ShardMessage::Drain => "Drain",
        };
        f.write_str(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Look at the client's deadlines (handshake, idle, publisher silence, waiting).
    Client(ClientId),
    /// The stream's coalescing window ended.
    Pass(StreamId),
    /// The stream's file source is due again.
    File(StreamId),
    /// A stored file ended for this viewer: close it once it has read the end.
    FileEnd(ClientId),
    /// The grace period after an unpublish ran out.
    Grace { name: StreamName, epoch: u64 },
    /// Sample every byte counter for the bitrates (`rate.rs`).
    Sample,
    /// A push target's next attempt is due.
    ForwardRetry {
        name: StreamName,
        index: usize,
        attempt: u64,
    },
    /// The stream's upstream pull has something due (`upstream_source.rs`).
    Pull(StreamName),
}

/// The shard's timers: a min-heap by time. Entries are checked when they fire, never
/// removed early.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    serial: u64,
}

impl Timers {
    fn arm(&mut self, at: Instant, timer: Timer) {
        self.serial += 1;
        self.heap.push(Reverse((at, self.serial, timer)));
    }

    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((at, _, timer))| (at, timer))
    }
}

struct OriginState {
    origin: Origin,
    subscribers: Vec<ShardId>,
    publisher: Option<(ClientId, ConnId)>,
    clock: Arc<StreamClock>,
    /// Bumped at each unpublish, so a grace timer from an earlier unpublish does nothing.
    grace_epoch: u64,
    since: Instant,
    /// The stream's recording, in an application with `record` on.
    recorder: Option<Recorder>,
    /// The directory connection id of the upstream pull feeding the stream, when its
    /// source is a pull rather than a publisher.
    upstream: Option<ConnId>,
}

pub struct Shard {
    pub id: ShardId,
    pub config: Arc<Config>,
    shard_count: usize,
    directory: Arc<StreamDirectory>,
    /// The time base the shards share (for the directory's publisher clocks).
    epoch: Instant,
    clients: Slab<Client>,
    streams: Slab<LocalStream>,
    stream_ids: HashMap<StreamName, StreamId>,
    origins: HashMap<StreamName, OriginState>,
    outputs: VecDeque<Output>,
    timers: Timers,
    /// Held audio's deadlines, in order (see `schedule`).
    holds: VecDeque<(Instant, StreamId)>,
    /// When each client's armed deadline check fires (one chain per client).
    client_timer: HashMap<ClientId, Instant>,
    fan_out_queue: VecDeque<StreamId>,
    fan_out_signalled: bool,
    scratch: FlushScratch,
    empty_ring: FrameRing,
    next_conn: u64,
    shutting_down: bool,
    pub stats: ShardStats,
    /// The sampling timer is armed (it runs while the shard has clients).
    sampling: bool,
    /// Recordings opened here (the low bits of their ids).
    recordings: u64,
    record_ops: Vec<RecordOp>,
    /// The wall clock as the driver last read it: an instant and the unix time then, so
    /// signed links' expiry is checked without the relay reading a clock.
    wall_clock: (Instant, Duration),
    /// Clients waiting for a callback's answer.
    callbacks_in_flight: usize,
    next_ticket: u64,
    /// Stored files the driver is looking up, by request number.
    vod_requests: HashMap<u64, VodRequest>,
    vod_serial: u64,
    /// The pushes of the streams this shard is the origin of, by stream.
    forwards: HashMap<StreamName, Vec<Forwarder>>,
    /// The upstream pulls this shard runs (it claimed them in the directory).
    pulls: HashMap<StreamName, UpstreamSource>,
    /// Which pull each open upstream link feeds.
    pull_links: HashMap<u64, StreamName>,
    next_link: u64,
    /// When each pull's armed timer fires (one chain per pull).
    pull_timer: HashMap<StreamName, Instant>,
    /// Viewers counted in the directory's audience of a pulled stream.
    watching: HashMap<ClientId, StreamName>,
}

/// What the driver found for a stored file: `Ok(Some(..))` its real path and index,
/// `Ok(None)` no such file, `Err` refused (and why).
pub type VodLookup = Result<Option<(Arc<Path>, Arc<VodIndex>)>, String>;

/// What a stored file is being looked up for.
#[derive(Debug)]
enum VodRequest {
    Play {
        client: ClientId,
        stream_id: u32,
        key: String,
        start_ms: u32,
        duration_ms: Option<u32>,
    },
    Length {
        client: ClientId,
        transaction_id: f64,
    },
}

impl Shard {
    pub fn new(
        id: ShardId,
        shard_count: usize,
        config: Arc<Config>,
        directory: Arc<StreamDirectory>,
        epoch: Instant,
    ) -> Shard {
        Shard {
            id,
            config,
            shard_count,
            directory,
            epoch,
            clients: Slab::default(),
            streams: Slab::default(),
            stream_ids: HashMap::new(),
            origins: HashMap::new(),
            outputs: VecDeque::new(),
            timers: Timers::default(),
            holds: VecDeque::new(),
            client_timer: HashMap::new(),
            fan_out_queue: VecDeque::new(),
            fan_out_signalled: false,
            scratch: FlushScratch::default(),
            empty_ring: FrameRing::new(0),
            next_conn: 1,
            shutting_down: false,
            stats: ShardStats::default(),
            sampling: false,
            recordings: 0,
            record_ops: Vec::new(),
            wall_clock: (epoch, Duration::ZERO),
            callbacks_in_flight: 0,
            next_ticket: 1,
            vod_requests: HashMap::new(),
            vod_serial: 0,
            forwards: HashMap::new(),
            pulls: HashMap::new(),
            pull_links: HashMap::new(),
            next_link: (id as u64) << 48,
            pull_timer: HashMap::new(),
            watching: HashMap::new(),
        }
    }

    /// The driver read the wall clock: at `now` it was `unix` since the unix epoch.
    pub fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        self.wall_clock = (now, unix);
    }

    /// Unix seconds at `now`, from the driver's last reading of the wall clock.
    fn unix_now(&self, now: Instant) -> u64 {
        self.unix_ms(now) / 1000
    }

    /// Unix milliseconds at `now` (signed links' expiry, recordings' file names).
    fn unix_ms(&self, now: Instant) -> u64 {
        let (at, unix) = self.wall_clock;
        (unix + now.saturating_duration_since(at)).as_millis() as u64
    }

    /// How many clients wait for a callback's answer.
    pub fn callbacks_in_flight(&self) -> usize {
        self.callbacks_in_flight
    }

    // ---- what the driver asks ------------------------------------------------------------

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front();
        if matches!(out, Some(Output::FanOut)) {
            self.fan_out_signalled = false;
        }
        out
    }

    /// When [`Shard::handle_timeout`] is next needed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // A hold whose entries a pass has written since (the video frame came first) needs
        // no wake-up: drop it, so the driver sleeps for what is still to come.
        while let Some(&(at, sid)) = self.holds.front() {
            if self.hold_pending(at, sid) {
                break;
            }
            self.holds.pop_front();
        }
        let hold = self.holds.front().map(|&(at, _)| at);
        match (self.timers.next(), hold) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the hold that ends at `at` still waits for a pass.
    fn hold_pending(&self, at: Instant, sid: StreamId) -> bool {
        self.streams
            .get(sid.0)
            .is_some_and(|s| s.hold_deadline() == Some(at) && !s.queued)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The driver measured how long queued fan-out work waited for its task.
    pub fn record_fan_out_delay(&mut self, delay: Duration) {
        self.stats.fan_out_delay.record(delay);
    }

    pub fn has_stream(&self, id: StreamId) -> bool {
        self.streams.contains(id.0)
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.arm(at, timer);
    }

    fn send(&mut self, to: ShardId, message: ShardMessage) {
        if to < self.shard_count && to != self.id {
            self.outputs.push_back(Output::Send { to, message });
        }
    }

    /// Asks the driver to close `id` (the first reason wins).
    fn close(&mut self, id: ClientId, reason: impl Into<String>) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        if c.close_reason.is_none() {
            c.close_reason = Some(reason.into());
            self.outputs.push_back(Output::Close(id));
        }
    }

    // ---- clients -------------------------------------------------------------------------

    /// A connection was accepted from `addr`. Refused (None) when the shard is full or
    /// shutting down.
    pub fn accept(&mut self, addr: SocketAddr, now: Instant) -> Option<ClientId> {
        if self.shutting_down {
            self.stats.reject(RejectReason::ShuttingDown);
            return None;
        }
        let limit = self.config.server.max_connections_per_shard;
        if self.clients.len() >= limit {
            self.stats.reject(RejectReason::ShardFull);
            tracing::warn!(shard = self.id, peer = %addr, limit, "connection refused: shard is at max_connections_per_shard");
            return None;
        }
        // Ids are unique in the process and small enough to type: the shard is the
        // remainder, so the admin API finds a client's shard from its id alone.
        let conn = self.next_conn * self.shard_count as u64 + self.id as u64;
        self.next_conn += 1;
        self.stats.accepted += 1;
        let server = &self.config.server;
        let max_message = server.max_message_size;
        let now_ms = self.now_ms(now);
        let session = ServerSession::new(ServerSessionConfig {
            epoch: now_ms as u32,
            seed: conn ^ (now_ms << 20) ^ 0x9E37_79B9_7F4A_7C15,
            chunk_size: server.chunk_size,
            limits: DecoderLimits {
                max_message_len: max_message,
                max_chunk_streams: server.max_chunk_streams as usize,
                max_buffered_bytes: (max_message as usize).saturating_mul(2),
            },
            ..ServerSessionConfig::default()
        });
        let id = ClientId(self.clients.insert(Client::new(conn, addr, now, session)));
        tracing::debug!(shard = self.id, peer = %addr, "connection accepted");
        self.arm_client_deadline(id, now);
        if !self.sampling {
            self.sampling = true;
            self.arm(now + RATE_SAMPLE_INTERVAL, Timer::Sample);
        }
        Some(id)
    }

    /// A connection was accepted on the media HTTP listener (HTTP-FLV, WebSocket-FLV).
    pub fn accept_http(&mut self, addr: SocketAddr, now: Instant) -> Option<ClientId> {
        let id = self.accept(addr, now)?;
        self.stats.accepted_http += 1;
        if let Some(c) = self.clients.get_mut(id.0) {
            c.http = Some(Box::default());
        }
        Some(id)
    }

    /// Bytes arrived from `id`: the session takes them, the relay acts on what they mean,
    /// and what the client is owed is written.
    pub fn handle_input(
        &mut self,
        id: ClientId,
        bytes: Bytes,
        now: Instant,
        transmit: &mut impl Transmit,
    ) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        if c.close_reason.is_some() {
            return;
        }
        if let Some(pending) = c.pending.as_mut() {
            // Its callback decides what this input means: keep it, bounded, in order.
            pending.buffered_len += bytes.len();
            pending.buffered.push(bytes);
            if pending.buffered_len > MAX_INPUT_WHILE_PENDING {
                tracing::warn!(shard = self.id, peer = %c.addr, limit = MAX_INPUT_WHILE_PENDING, "client sent too much while its access callback was pending; closing it");
                self.close(id, "sent too much while its access callback was pending");
            }
            return;
        }
        if c.http.is_some() {
            self.http_input(id, &bytes, now);
            self.write(id, now, transmit);
            return;
        }
        if c.forward.is_some() {
            self.forward_input(id, bytes, now);
            self.write(id, now, transmit);
            return;
        }
        let fed = c.session.feed(bytes);
        // Events the session produced before the error still count (a publisher's last
        // frames), then the error closes the connection.
        self.handle_events(id, now);
        if let Err(e) = fed {
            self.close(id, format!("protocol error: {e}"));
            return;
        }
        self.write(id, now, transmit);
    }

    /// The peer closed its side, or reading failed: the client goes.
    pub fn handle_read_end(&mut self, id: ClientId, reason: String) {
        self.close(id, reason);
    }

    /// The socket of `id` can take more (after [`Output::WaitWritable`]). `transmit` is
    /// the driver's write that waits for writability when the socket is full.
    pub fn write_blocked(&mut self, id: ClientId, now: Instant, transmit: &mut impl Transmit) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        c.blocked = false;
        self.write(id, now, transmit);
    }

    /// Whether the driver still has to wait for `id`'s socket to drain.
    pub fn is_blocked(&self, id: ClientId) -> bool {
        self.clients.get(id.0).is_some_and(|c| c.blocked)
    }

    /// Best effort before a close: the client's own queued bytes (the rest of a message
    /// begun, a goodbye `onStatus`) go if the socket takes them now; no ring frame.
    pub fn write_goodbye(&mut self, id: ClientId, transmit: &mut impl Transmit) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let ring = FrameRing::new(c.queue.cursor());
        let _ = c
            .queue
            .flush(&ring, &mut self.scratch, |iov| transmit.send(id, iov));
    }

    /// The client is gone: it leaves its stream (a publisher unpublishes), and the closing
    /// line says who, where, and why.
    pub fn remove_client(&mut self, id: ClientId, now: Instant) {
        self.leave(id, now);
        self.client_timer.remove(&id);
        let Some(c) = self.clients.remove(id.0) else {
            return;
        };
        if c.pending.is_some() {
            // Its callback's answer will find no client, and is dropped then.
            self.callbacks_in_flight -= 1;
        }
        self.stats.closed_bytes_in += c.bytes_received();
        self.stats.closed_bytes_out += c.queue.bytes_sent;
        if let Some(link) = &c.forward {
            let reason = c.close_reason.as_deref().unwrap_or("connection ended");
            self.forward_link_ended(link, c.addr, reason, c.queue.bytes_sent, now);
        }
        let reason = c
            .close_reason
            .unwrap_or_else(|| "connection ended".to_owned());
        let (role, name) = &c.last_role;
        let name = name.as_deref().unwrap_or("");
        tracing::info!(shard = self.id, peer = %c.addr, role = role.as_str(), stream = %name, bytes_sent = c.queue.bytes_sent, dropped_frames = c.queue.dropped_frames, "connection closed: {reason}");
    }

    // ---- the one write path --------------------------------------------------------------

    /// Writes what `id` is owed, as far as its socket takes it: its own bytes, and for a
    /// viewer its stream's frames, with the backlog rules applied. The fan-out and the
    /// driver both write through here.
    fn write(&mut self, id: ClientId, now: Instant, transmit: &mut impl Transmit) {
        let playing = self.clients.get(id.0).and_then(Client::receiving);
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let mut w = Writer {
            now,
            transmit,
            scratch: &mut self.scratch,
            outputs: &mut self.outputs,
            timers: &mut self.timers,
            stats: &mut self.stats,
        };
        match playing.and_then(|sid| self.streams.get_mut(sid.0)) {
            Some(s) => s.bytes_out += w.serve(id, c, &s.ring, &s.settings),
            None => {
                let before = c.queue.bytes_sent;
                w.serve(id, c, &self.empty_ring, &NO_BACKLOG_RULES);
                if let Some(d) = c.download.as_mut() {
                    if c.queue.bytes_sent > before {
                        d.last_progress = Some(now);
                    }
                    self.download_step(id);
                }
            }
        }
    }

    /// Runs the fan-out: every queued stream's viewers are written, `budget` viewers at a
    /// time. Returns true if more is left (the driver lets other tasks run, then calls
    /// again).
    pub fn fan_out(&mut self, now: Instant, transmit: &mut impl Transmit, budget: usize) -> bool {
        let mut served = 0;
        while let Some(&sid) = self.fan_out_queue.front() {
            let Some(s) = self.streams.get_mut(sid.0) else {
                self.fan_out_queue.pop_front();
                continue;
            };
            if s.next_viewer == 0 {
                s.begin_pass(now);
                s.again = false;
                if let Some(at) = s.ring.newest_ingested() {
                    self.stats
                        .relay_latency
                        .record(now.saturating_duration_since(at));
                }
            }
            while let Some(&vid) = s.viewers.get(s.next_viewer) {
                if served == budget {
                    return true;
                }
                s.next_viewer += 1;
                served += 1;
                let Some(c) = self.clients.get_mut(vid.0) else {
                    continue;
                };
                let mut w = Writer {
                    now,
                    transmit: &mut *transmit,
                    scratch: &mut self.scratch,
                    outputs: &mut self.outputs,
                    timers: &mut self.timers,
                    stats: &mut self.stats,
                };
                s.bytes_out += w.serve(vid, c, &s.ring, &s.settings);
            }
            s.next_viewer = 0;
            s.queued = false;
            s.end_pass(&self.clients);
            let again = s.again;
            self.fan_out_queue.pop_front();
            if again {
                self.queue_pass(sid, now);
            }
        }
        false
    }

    /// This shard becomes `name`'s origin (a publisher or a pull arrived here, holding
    /// `clock` in the directory): its origin state, made if new and re-armed for the new
    /// source, numbering on from what the local stream already holds. With that stream.
    fn take_origin(
        &mut self,
        name: &StreamName,
        clock: &Arc<StreamClock>,
        claim: &Claim,
        now: Instant,
    ) -> (StreamId, &mut OriginState) {
        let sid = self.local_stream(name);
        let first_seq = self.streams.get(sid.0).map_or(0, |s| s.ring.next_seq());
        let chunk_size = self.config.server.chunk_size;
        let state = self
            .origins
            .entry(name.clone())
            .or_insert_with(|| OriginState {
                origin: Origin::new(first_seq, chunk_size),
                subscribers: Vec::new(),
                publisher: None,
                clock: clock.clone(),
                grace_epoch: 0,
                since: now,
                recorder: None,
                upstream: None,
            });
        state.clock = clock.clone();
        state.grace_epoch += 1;
        state.since = now;
        if state.origin.next_seq() != first_seq {
            // This shard was a subscriber until now: continue its local numbering.
            state.origin = Origin::new(first_seq, chunk_size);
        }
        if *claim != Claim::New {
            state.origin.continue_from(clock.last_timestamp());
        }
        (sid, state)
    }

    fn schedule(&mut self, sid: StreamId, wake: Wake, now: Instant) {
        match wake {
            Wake::Nothing => {}
            // Deadlines of holds come in the order they are armed (each is MAX_HOLD after
            // its start): a queue, not the timer heap, so one that a pass made stale can be
            // dropped before anyone sleeps for it (`poll_timeout`).
            Wake::HoldUntil(at) => self.holds.push_back((at, sid)),
            Wake::Pass => self.queue_pass(sid, now),
        }
    }

    /// Queues a fan-out pass for the stream, once, respecting its coalescing window.
    fn queue_pass(&mut self, sid: StreamId, now: Instant) {
        let Some(s) = self.streams.get_mut(sid.0) else {
            return;
        };
        if s.viewers.is_empty() {
            return;
        }
        if s.queued {
            // A pass under way may have passed viewers that this news is for.
            if s.next_viewer > 0 {
                s.again = true;
            }
            return;
        }
        if let (Some(interval), Some(last)) = (s.settings.flush_interval, s.last_pass)
            && now < last + interval
        {
            // Let the window fill: entries arriving meanwhile go out in the same writes.
            if !s.pass_timer {
                s.pass_timer = true;
                self.arm(last + interval, Timer::Pass(sid));
            }
            return;
        }
        s.queued = true;
        self.fan_out_queue.push_back(sid);
        if !self.fan_out_signalled {
            self.fan_out_signalled = true;
            self.outputs.push_back(Output::FanOut);
        }
    }

    // ---- timers --------------------------------------------------------------------------

    /// Does what was due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, sid)) = self.holds.front() {
            if at > now {
                break;
            }
            self.holds.pop_front();
            if self.hold_pending(at, sid) {
                self.queue_pass(sid, now);
            }
        }
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Client(id) => {
                    if self.client_timer.get(&id) == Some(&at) {
                        self.client_timer.remove(&id);
                        self.check_client(id, now);
                    }
                }
                Timer::Pass(sid) => {
                    if let Some(s) = self.streams.get_mut(sid.0) {
                        s.pass_timer = false;
                        self.queue_pass(sid, now);
                    }
                }
                Timer::File(sid) => {
                    if let Some(s) = self.streams.get_mut(sid.0)
                        && s.file_timer == Some(at)
                    {
                        s.file_timer = None;
                        self.pump_file(sid, now);
                    }
                }
                Timer::FileEnd(id) => self.end_file_viewer(id, now),
                Timer::Grace { name, epoch } => self.end_grace(&name, epoch, now),
                Timer::Sample => {
                    self.sample_rates(now);
                    self.flush_recordings(now);
                }
                Timer::ForwardRetry {
                    name,
                    index,
                    attempt,
                } => {
                    let step = self
                        .forwards
                        .get_mut(&name)
                        .and_then(|v| v.get_mut(index))
                        .map(|f| f.retry_due(attempt, now));
                    if let Some(step) = step {
                        if matches!(step, ForwardStep::Connect { .. }) {
                            self.stats.forward_reconnects += 1;
                        }
                        self.forward_step(&name, index, step);
                    }
                }
                Timer::Pull(name) => {
                    if self.pull_timer.get(&name) == Some(&at) {
                        self.pull_timer.remove(&name);
                        self.poll_pull(&name, now);
                    }
                }
            }
        }
    }

    /// Hands the recorders' operations to the driver, counting what goes to disk.
    fn emit_record_ops(&mut self) {
        for op in self.record_ops.drain(..) {
            match &op {
                RecordOp::Open { .. } => self.stats.record_files += 1,
                RecordOp::Write { data, .. } => {
                    self.stats.record_bytes += data.iter().map(|b| b.len() as u64).sum::<u64>()
                }
                RecordOp::Close { .. } => {}
            }
            self.outputs.push_back(Output::Record(op));
        }
    }

    /// Hands over recorded bytes that have waited `record_flush_ms` (for a stream whose
    /// publisher went quiet; a flowing stream flushes as its frames arrive).
    fn flush_recordings(&mut self, now: Instant) {
        for state in self.origins.values_mut() {
            if let Some(rec) = state.recorder.as_mut() {
                rec.flush_due(now, &mut self.record_ops);
            }
        }
        self.emit_record_ops();
    }

    /// The disk writer could not carry out recording `id` (a full or failing disk, or its
    /// queue was full): that recording stops; the stream goes on.
    pub fn record_failed(&mut self, id: RecordingId, reason: String) {
        self.stats.record_errors += 1;
        for (name, state) in self.origins.iter_mut() {
            if let Some(rec) = state.recorder.as_mut()
                && rec.failed(id, reason.clone())
            {
                tracing::error!(shard = self.id, stream = %name, %reason, "recording stopped; the stream goes on");
            }
        }
    }

    /// The admin API starts or stops recording `name` (an application with `record` on).
    fn record_command(
        &mut self,
        name: &StreamName,
        start: bool,
    ) -> Result<RecordStatus, AdminRefusal> {
        let state = self.origins.get_mut(name).ok_or(AdminRefusal::NotFound)?;
        if state.publisher.is_none() {
            return Err(AdminRefusal::NotLive);
        }
        let Some(rec) = state.recorder.as_mut() else {
            return Err(AdminRefusal::NotRecordable);
        };
        if start {
            rec.start();
            tracing::info!(shard = self.id, stream = %name, "recording started through the admin API");
        } else {
            rec.stop(&mut self.record_ops);
            tracing::info!(shard = self.id, stream = %name, "recording stopped through the admin API");
        }
        let status = rec.status();
        self.emit_record_ops();
        Ok(status)
    }

    /// Samples every client's and stream's byte counters for their bitrates, and looks
    /// again later while the shard has clients.
    fn sample_rates(&mut self, now: Instant) {
        for c in self.clients.values_mut() {
            let (bytes_in, bytes_out) = (c.bytes_received(), c.queue.bytes_sent);
            c.rate.sample(now, bytes_in, bytes_out);
        }
        for st in self.streams.values_mut() {
            st.rate.sample(now, st.bytes_in, st.bytes_out);
        }
        self.sampling = !self.clients.is_empty();
        if self.sampling {
            self.arm(now + RATE_SAMPLE_INTERVAL, Timer::Sample);
        }
    }

    /// The next time one of the client's deadlines needs a look, if any.
    fn client_deadline(&self, c: &Client) -> Option<Instant> {
        let server = &self.config.server;
        let mut at = None::<Instant>;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if c.is_handshaking() {
            consider(c.accepted + server.handshake_timeout());
        }
        match &c.role {
            Role::Idle => match c.download.as_ref().and_then(|d| d.last_progress) {
                Some(since) => consider(since + self.config.http.send_timeout()),
                None => consider(c.accepted + server.idle_connection_timeout()),
            },
            Role::Publisher { name, clock, .. } => {
                if let Some(app) = self.config.app(app_of(name)) {
                    consider(
                        self.epoch
                            + Duration::from_millis(clock.last_media_ms())
                            + app.publisher_idle_timeout(),
                    );
                }
            }
            Role::Viewer {
                name,
                waiting_since: Some(since),
                ..
            } => {
                if let Some(app) = self.config.app(app_of(name)) {
                    consider(*since + app.wait_for_source());
                }
            }
            Role::Viewer { .. } => {}
        }
        at
    }

    fn arm_client_deadline(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        let Some(at) = self.client_deadline(c) else {
            return;
        };
        let at = at.max(now);
        if self.client_timer.get(&id).is_some_and(|&armed| armed <= at) {
            return;
        }
        self.client_timer.insert(id, at);
        self.arm(at, Timer::Client(id));
    }

    /// A client's deadline came: close it if one has passed, or look again later.
    fn check_client(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        let server = &self.config.server;
        let since_accept = now.saturating_duration_since(c.accepted);
        let reason = if c.is_handshaking() && since_accept > server.handshake_timeout() {
            let what = if c.http.is_some() {
                "HTTP request head"
            } else {
                "handshake"
            };
            Some(format!(
                "{what} not completed within {} ms",
                server.handshake_timeout_ms
            ))
        } else {
            match &c.role {
                Role::Idle => match c.download.as_ref().and_then(|d| d.last_progress) {
                    Some(since) => (now.saturating_duration_since(since)
                        > self.config.http.send_timeout())
                    .then(|| {
                        format!(
                            "HTTP download stalled: the peer took no bytes for {} ms",
                            self.config.http.send_timeout_ms
                        )
                    }),
                    None => (since_accept > server.idle_connection_timeout()).then(|| {
                        format!(
                            "neither published nor played within {} ms",
                            server.idle_connection_timeout_ms
                        )
                    }),
                },
                Role::Publisher { name, clock, .. } => {
                    self.config.app(app_of(name)).and_then(|app| {
                        let idle = self.now_ms(now).saturating_sub(clock.last_media_ms());
                        (idle > app.publisher_idle_timeout_ms).then(|| {
                            format!(
                                "publisher sent no media for {idle} ms (limit {} ms)",
                                app.publisher_idle_timeout_ms
                            )
                        })
                    })
                }
                Role::Viewer {
                    name,
                    waiting_since: Some(since),
                    ..
                } => self.config.app(app_of(name)).and_then(|app| {
                    let limit = app.wait_for_source();
                    (now.saturating_duration_since(*since) > limit)
                        .then(|| format!("no publisher for {name} within {} ms", limit.as_millis()))
                }),
                _ => None,
            }
        };
        match reason {
            Some(reason) => {
                let c = self.clients.get_mut(id.0).expect("looked up above");
                if let Role::Viewer { stream_id, .. } = c.role
                    && c.forward.is_none()
                {
                    if c.http.is_some() {
                        if matches!(
                            c.role,
                            Role::Viewer {
                                waiting_since: Some(_),
                                ..
                            }
                        ) {
                            let cors = Cors {
                                allow_origin: &self.config.http.cors_allow_origin,
                            };
                            c.queue.push_pending(response::error(
                                404,
                                "no such stream is published",
                                &cors,
                            ));
                        }
                    } else {
                        c.session
                            .reject_play(stream_id, status::PLAY_STREAM_NOT_FOUND, &reason);
                        c.queue_session_output();
                    }
                }
                self.close(id, reason);
            }
            None => self.arm_client_deadline(id, now + Duration::from_millis(1)),
        }
    }

    // ---- sessions' events ----------------------------------------------------------------

    fn handle_events(&mut self, id: ClientId, now: Instant) {
        loop {
            let Some(c) = self.clients.get_mut(id.0) else {
                return;
            };
            if c.pending.is_some() || c.close_reason.is_some() {
                // A callback decides the rest; a refused client is done.
                break;
            }
            let Some(event) = c.session.poll_event() else {
                break;
            };
            match event {
                ServerEvent::HandshakeComplete { digest } => {
                    tracing::debug!(shard = self.id, peer = %c.addr, digest, "handshake complete");
                }
                ServerEvent::ConnectRequested {
                    app,
                    tc_url,
                    flash_ver,
                    page_url,
                    relay_path,
                    ..
                } => {
                    c.connect.tc_url = tc_url.unwrap_or_default();
                    c.connect.flash_ver = flash_ver.unwrap_or_default();
                    c.connect.page_url = page_url.unwrap_or_default();
                    let server = &self.config.server;
                    if let Err(refusal) = relay_path.check(&server.node_id, server.max_hops) {
                        self.stats.reject(RejectReason::RelayLoop);
                        c.session.reject_connect(&refusal.to_string());
                        c.queue_session_output();
                        tracing::warn!(shard = self.id, peer = %c.addr, app, via = ?relay_path.nodes().join(","), hops = relay_path.hops(), "connect refused: {refusal}");
                        self.close(id, format!("connect refused: {refusal}"));
                        continue;
                    }
                    c.connect.relay_path = relay_path;
                    if let Some(app_config) = self.config.app(&app) {
                        let on_connect = app_config.auth.on_connect.clone();
                        if on_connect.is_empty() {
                            c.session.accept_connect();
                            tracing::debug!(shard = self.id, peer = %c.addr, app, tc_url = ?query::redact_url(&c.connect.tc_url), "connected");
                        } else {
                            c.args = QueryArgs::parse(query::query_of(&c.connect.tc_url));
                            self.start_callback(
                                id,
                                Call::Connect,
                                &on_connect,
                                PendingAction::Connect,
                                None,
                            );
                        }
                    } else {
                        self.stats.reject(RejectReason::UnknownApp);
                        c.session
                            .reject_connect(&format!("no application named {app:?}"));
                        c.queue_session_output();
                        tracing::info!(shard = self.id, peer = %c.addr, app, "connect refused: unknown application");
                        self.close(id, format!("connect refused: no application named {app:?}"));
                    }
                }
                ServerEvent::PublishRequested {
                    stream_id,
                    stream_key,
                    query,
                    ..
                } => {
                    if !matches!(c.role, Role::Idle) {
                        self.close(
                            id,
                            "publish on a connection that already publishes or plays",
                        );
                        continue;
                    }
                    if has_control_character(&stream_key) {
                        tracing::info!(shard = self.id, peer = %c.addr, key = ?stream_key, "publish refused: {CONTROL_IN_NAME}");
                        self.reject_publish(
                            id,
                            stream_id,
                            status::PUBLISH_BAD_NAME,
                            CONTROL_IN_NAME,
                        );
                        continue;
                    }
                    self.publish(id, stream_id, &stream_key, &query, now);
                }
                ServerEvent::PlayRequested {
                    stream_id,
                    stream_key,
                    query,
                    start,
                    duration,
                    ..
                } => {
                    match c.role {
                        Role::Publisher { .. } => {
                            self.close(id, "play on a connection that publishes");
                            continue;
                        }
                        // play2 / a new play switches streams: leave the old one first.
                        Role::Viewer { .. } => self.leave(id, now),
                        Role::Idle => {}
                    }
                    if has_control_character(&stream_key) {
                        self.reject_play(
                            id,
                            stream_id,
                            status::PLAY_STREAM_NOT_FOUND,
                            CONTROL_IN_NAME,
                            &stream_key,
                        );
                        continue;
                    }
                    self.play(id, stream_id, &stream_key, &query, (start, duration), now);
                }
                ServerEvent::Media {
                    kind,
                    timestamp,
                    payload,
                    ..
                } => {
                    if let Some(name) = c.publishing().cloned() {
                        if let Some(late) = c.ingest_pace.observe(timestamp, now) {
                            self.stats.ingest_delay.record(late);
                        }
                        self.ingest_media(&name, kind, timestamp, payload, now);
                    }
                }
                ServerEvent::Metadata {
                    timestamp, payload, ..
                } => {
                    if let Some(name) = c.publishing().cloned() {
                        self.ingest_data(&name, timestamp, payload, true, now);
                    }
                }
                ServerEvent::Data {
                    timestamp, payload, ..
                } => {
                    if let Some(name) = c.publishing().cloned() {
                        self.ingest_data(&name, timestamp, payload, false, now);
                    }
                }
                ServerEvent::ReceiveAudio { enabled, .. } => c.queue.set_audio(enabled),
                ServerEvent::ReceiveVideo { enabled, .. } => c.queue.set_video(enabled),
                ServerEvent::Pause {
                    stream_id, paused, ..
                } => {
                    if !self.vod_pause(id, paused, now)
                        && let Some(c) = self.clients.get_mut(id.0)
                    {
                        // A paused live viewer stops receiving video; on resume it continues
                        // live from the next keyframe. Audio and data are small and keep it
                        // in sync.
                        c.queue.set_video(!paused);
                        c.session.notify_pause(stream_id, paused);
                    }
                }
                ServerEvent::Seek {
                    stream_id,
                    position_ms,
                } => {
                    if !self.vod_seek(id, position_ms, now)
                        && let Some(c) = self.clients.get_mut(id.0)
                    {
                        // Live streams cannot seek: the notification alone, as before.
                        c.session.notify_seek(stream_id, false);
                    }
                }
                ServerEvent::BufferLength { buffer_ms, .. } => {
                    c.buffer_ms = buffer_ms;
                    if let Some(sid) = c.playing()
                        && let Some(file) =
                            self.streams.get_mut(sid.0).and_then(|s| s.file.as_mut())
                    {
                        file.set_buffer(buffer_ms);
                    }
                }
                ServerEvent::StreamLengthRequested {
                    transaction_id,
                    stream_key,
                } => self.stream_length(id, transaction_id, &stream_key),
                ServerEvent::StreamClosed { .. } => self.leave(id, now),
            }
        }
        if let Some(c) = self.clients.get_mut(id.0) {
            c.queue_session_output();
        }
    }

    // ---- streams -------------------------------------------------------------------------

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

    fn settings_for(&self, name: &str) -> StreamSettings {
        let app = self.config.app(app_of(name)).cloned().unwrap_or_default();
        self.stream_settings(&app)
    }

    /// The stream's `LocalStream` on this shard, created if needed.
    fn local_stream(&mut self, name: &StreamName) -> StreamId {
        if let Some(&sid) = self.stream_ids.get(name) {
            return sid;
        }
        let stream = LocalStream::new(name.clone(), self.settings_for(name));
        let sid = StreamId(self.streams.insert(stream));
        self.stream_ids.insert(name.clone(), sid);
        sid
    }

    /// Drops a `LocalStream` nobody needs any more (no viewers, not an origin here).
    fn release_stream_if_unused(&mut self, name: &StreamName) {
        if self.origins.contains_key(name) {
            return;
        }
        let Some(&sid) = self.stream_ids.get(name) else {
            return;
        };
        if self
            .streams
            .get(sid.0)
            .is_some_and(LocalStream::has_viewers)
        {
            return;
        }
        self.stream_ids.remove(name);
        if let Some(stream) = self.streams.remove(sid.0)
            && let Some(origin) = stream.subscribed_to
        {
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
    fn start_waiting(&mut self, sid: StreamId, now: Instant) {
        let Some(s) = self.streams.get_mut(sid.0) else {
            return;
        };
        if !s.live || s.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut s.waiting);
        for vid in waiting {
            let Some(c) = self.clients.get_mut(vid.0) else {
                continue;
            };
            let Role::Viewer {
                stream_id,
                waiting_since,
                ..
            } = &mut c.role
            else {
                continue;
            };
            *waiting_since = None;
            let stream_id = *stream_id;
            s.start_viewer(vid, c, stream_id);
            c.mark_join(now);
            tracing::info!(shard = self.id, peer = %c.addr, stream = %s.name, "viewer started (stream now live here)");
        }
        self.queue_pass(sid, now);
    }

    /// Subscribes this shard's `LocalStream` to `origin`, unless it already is.
    fn subscribe(&mut self, sid: StreamId, origin: ShardId) {
        let Some(s) = self.streams.get_mut(sid.0) else {
            return;
        };
        if s.subscribed_to == Some(origin) || origin == self.id {
            return;
        }
        s.subscribed_to = Some(origin);
        let name = s.name.clone();
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
    fn push_entry(&mut self, name: &StreamName, entry: RingEntry, now: Instant) {
        self.push_ingested(name, entry, 0, now);
    }

    /// [`Shard::push_entry`] for what a source sent: `bytes_in` payload bytes.
    fn push_ingested(&mut self, name: &StreamName, entry: RingEntry, bytes_in: u64, now: Instant) {
        let wall_ms = self.unix_ms(now);
        if let RingEntry::Frame(f) = &entry
            && let Some(rec) = self.origins.get_mut(name).and_then(|s| s.recorder.as_mut())
            && rec.is_active()
        {
            let (shard, counter) = (self.id as u64, &mut self.recordings);
            let mut id = || {
                *counter += 1;
                (shard << 48) | *counter
            };
            rec.push(f, now, wall_ms, &mut id, &mut self.record_ops);
            self.emit_record_ops();
        }
        if let Some(state) = self.origins.get(name) {
            for &shard in &state.subscribers {
                self.outputs.push_back(Output::Send {
                    to: shard,
                    message: ShardMessage::Entry {
                        stream: name.clone(),
                        origin: self.id,
                        entry: entry.clone(),
                    },
                });
            }
        }
        if let Some(&sid) = self.stream_ids.get(name)
            && let Some(s) = self.streams.get_mut(sid.0)
        {
            s.bytes_in += bytes_in;
            if let RingEntry::Frame(f) = &entry {
                s.frames[f.kind as usize] += 1;
            }
            let wake = s.append(entry, now, &mut self.clients);
            self.schedule(sid, wake, now);
        }
    }

    /// Tells every other shard that this one is now the origin of `name`.
    fn announce_origin(&mut self, name: &StreamName) {
        for shard in 0..self.shard_count {
            self.send(
                shard,
                ShardMessage::OriginMoved {
                    stream: name.clone(),
                    origin: self.id,
                },
            );
        }
    }

    fn reject_publish(&mut self, id: ClientId, stream_id: u32, code: &str, why: &str) {
        if let Some(c) = self.clients.get_mut(id.0) {
            c.session.reject_publish(stream_id, code, why);
            c.queue_session_output();
        }
    }

    /// A client asked to publish `app/key?query` on `stream_id`.
    fn publish(&mut self, id: ClientId, stream_id: u32, key: &str, query: &str, now: Instant) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        let (app_name, addr) = (c.session.app().to_owned(), c.addr);
        let app = self.config.app(&app_name).cloned().unwrap_or_default();
        if !app.allow_publish {
            self.stats.reject(RejectReason::PublishNotAllowed);
            self.reject_publish(
                id,
                stream_id,
                status::PUBLISH_DENIED,
                "publishing is not allowed in this application",
            );
            tracing::info!(shard = self.id, peer = %addr, app = %app_name, key, "publish refused: not allowed in this application");
            return;
        }
        let on_publish = app.auth.on_publish.clone();
        if let Err(denial) = self.check_access(id, Action::Publish, key, query, now) {
            return self.refuse(id, Refused::Publish(stream_id), key, &denial);
        }
        if on_publish.is_empty() {
            return self.start_publish(id, stream_id, key, now);
        }
        let action = PendingAction::Publish {
            stream_id,
            stream: key.to_owned(),
        };
        self.start_callback(id, Call::Publish, &on_publish, action, None);
    }

    /// Publishing `app/key` was allowed: claim the stream.
    fn start_publish(&mut self, id: ClientId, stream_id: u32, key: &str, now: Instant) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        let (app_name, conn, addr) = (c.session.app().to_owned(), c.conn, c.addr);
        let app = self.config.app(&app_name).cloned().unwrap_or_default();
        let name: StreamName = format!("{app_name}/{key}").into();
        let policy = TakeoverPolicy {
            immediate: app.takeover_immediate,
            idle_ms: app.takeover_idle_ms,
        };
        let (claim, clock) = self
            .directory
            .claim(&name, self.id, conn, self.now_ms(now), policy);
        let Some(clock) = clock else {
            self.stats.reject(RejectReason::StreamBusy);
            self.reject_publish(
                id,
                stream_id,
                status::PUBLISH_BAD_NAME,
                "this stream is already being published",
            );
            tracing::info!(shard = self.id, peer = %addr, stream = %name, "publish refused: the key is being published by an active publisher");
            return;
        };
        let (sid, state) = self.take_origin(&name, &clock, &claim, now);
        let previous = state.publisher.replace((id, conn));
        if let Some((old, _)) = previous
            && old != id
        {
            self.close(old, format!("taken over by a new publisher from {addr}"));
            self.leave_role(old);
        }
        if let Some(s) = self.streams.get_mut(sid.0) {
            s.become_origin();
        }
        let was_live = self.streams.get(sid.0).is_some_and(|s| s.live);
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
                self.stats.takeovers += 1;
                tracing::info!(shard = self.id, peer = %addr, stream = %name, previous_origin, "publisher took over the stream")
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
            // A republish on the same shard: viewers here get PublishNotify and the new
            // publisher's frames; other shards get the event through their subscription.
            let event = self
                .origins
                .get_mut(&name)
                .map(|s| s.origin.event(StreamEvent::Republished));
            if let Some(event) = event {
                self.push_entry(&name, event, now);
            }
        }
        // Every other shard learns of the new origin: shards with waiting or continuing
        // viewers subscribe, an old origin drops its publisher.
        if matches!(claim, Claim::New) || moved {
            self.announce_origin(&name);
        }
        if let Some(c) = self.clients.get_mut(id.0) {
            c.session.accept_publish(stream_id);
            c.queue_session_output();
            c.set_role(
                Role::Publisher {
                    name: name.clone(),
                    stream_id,
                    clock,
                },
                RoleKind::Publisher,
            );
        }
        self.arm_client_deadline(id, now);
        self.start_waiting(sid, now);
        self.start_forwards(&name, id, &app);
        if app.record != RecordMode::Off
            && let Some(state) = self.origins.get_mut(&name)
        {
            let key = name.split_once('/').map_or("", |(_, k)| k);
            let recorder = state.recorder.get_or_insert_with(|| {
                let settings = RecordSettings::from_app(&app, self.config.server.chunk_size);
                Recorder::new(Arc::new(settings), &app_name, key)
            });
            if app.record == RecordMode::All {
                recorder.start();
            }
        }
    }

    /// A media message from a publisher.
    fn ingest_media(
        &mut self,
        name: &StreamName,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
        now: Instant,
    ) {
        let now_ms = self.now_ms(now);
        let Some(state) = self.origins.get_mut(name) else {
            return;
        };
        let len = payload.len() as u64;
        let frame = state.origin.media(kind, timestamp, payload, now);
        state.clock.touch(now_ms, frame.timestamp);
        self.push_ingested(name, RingEntry::Frame(frame), len, now);
    }

    /// A data message from the publisher (`metadata` for `onMetaData`).
    fn ingest_data(
        &mut self,
        name: &StreamName,
        timestamp: u32,
        payload: Bytes,
        metadata: bool,
        now: Instant,
    ) {
        let Some(state) = self.origins.get_mut(name) else {
            return;
        };
        let len = payload.len() as u64;
        let frame = state.origin.data(timestamp, payload, metadata, now);
        self.push_ingested(name, RingEntry::Frame(frame), len, now);
    }

    /// Takes a client's role away without the consequences of leaving (it was taken over).
    fn leave_role(&mut self, id: ClientId) {
        if let Some(c) = self.clients.get_mut(id.0) {
            c.role = Role::Idle;
        }
    }

    /// The publisher `id` stopped (closeStream, deleteStream, FCUnpublish, or it
    /// disconnected). Viewers are told at once and kept for the grace period.
    fn unpublish(&mut self, id: ClientId, name: StreamName, now: Instant) {
        let Some(conn) = self.clients.get(id.0).map(|c| c.conn) else {
            return;
        };
        if !self.directory.release(&name, conn) {
            return; // taken over: the stream lives on elsewhere
        }
        let Some(state) = self.origins.get_mut(&name) else {
            return;
        };
        if state.publisher.map(|(p, _)| p) != Some(id) {
            return;
        }
        state.publisher = None;
        state.grace_epoch += 1;
        if let Some(rec) = state.recorder.as_mut() {
            // One file per publish: a republish within the grace period starts a new one.
            rec.stop(&mut self.record_ops);
        }
        let epoch = state.grace_epoch;
        let event = state.origin.event(StreamEvent::Unpublished);
        self.emit_record_ops();
        tracing::info!(shard = self.id, stream = %name, "publisher left; viewers wait for the grace period");
        self.push_entry(&name, event, now);
        let grace = self
            .config
            .app(app_of(&name))
            .map(AppConfig::unpublish_grace)
            .unwrap_or(Duration::from_secs(5));
        self.arm(now + grace, Timer::Grace { name, epoch });
    }

    /// The grace period after an unpublish ran out: end the stream unless it came back.
    fn end_grace(&mut self, name: &StreamName, epoch: u64, now: Instant) {
        let current = self
            .origins
            .get(name)
            .is_some_and(|s| s.grace_epoch == epoch && s.publisher.is_none());
        if !current || !self.directory.remove_if_unpublished(name, self.id) {
            return;
        }
        tracing::info!(shard = self.id, stream = %name, "stream ended: no publisher within the grace period");
        self.end_stream(name, now);
    }

    fn end_stream(&mut self, name: &StreamName, now: Instant) {
        self.stop_forwards(name, "the stream ended");
        let event = self
            .origins
            .get_mut(name)
            .map(|s| s.origin.event(StreamEvent::Ended));
        if let Some(event) = event {
            self.push_entry(name, event, now);
        }
        if let Some(mut state) = self.origins.remove(name)
            && let Some(rec) = state.recorder.as_mut()
        {
            rec.stop(&mut self.record_ops);
            self.emit_record_ops();
        }
        self.release_stream_if_unused(name);
    }

    fn reject_play(&mut self, id: ClientId, stream_id: u32, code: &str, why: &str, key: &str) {
        if let Some(c) = self.clients.get_mut(id.0) {
            c.session.reject_play(stream_id, code, why);
            c.queue_session_output();
            tracing::info!(shard = self.id, peer = %c.addr, app = %c.session.app(), key, "play refused: {why}");
        }
    }

    /// A client asked to play `app/key?query` on `stream_id`.
    fn play(
        &mut self,
        id: ClientId,
        stream_id: u32,
        key: &str,
        query: &str,
        range: (f64, f64),
        now: Instant,
    ) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        let app_name = c.session.app().to_owned();
        let app = self.config.app(&app_name).cloned().unwrap_or_default();
        if !app.allow_play {
            self.stats.reject(RejectReason::PlayNotAllowed);
            return self.reject_play(
                id,
                stream_id,
                status::PLAY_FAILED,
                "playing is not allowed in this application",
                key,
            );
        }
        if stream_id != SHARED_STREAM_ID {
            // Every viewer shares one encoding of each frame, made for message stream 1.
            return self.reject_play(
                id,
                stream_id,
                status::PLAY_FAILED,
                "shardcast serves play on the connection's first stream only",
                key,
            );
        }
        if let Err(denial) = self.check_access(id, Action::Play, key, query, now) {
            return self.refuse(id, Refused::Play(stream_id), key, &denial);
        }
        if app.auth.on_play.is_empty() {
            return self.start_play(id, stream_id, key, range, now);
        }
        let action = PendingAction::Play {
            stream_id,
            stream: key.to_owned(),
            range,
        };
        self.start_callback(id, Call::Play, &app.auth.on_play, action, Some(range));
    }

    /// Playing `app/key` was allowed: a live stream, or a recording of that name.
    fn start_play(
        &mut self,
        id: ClientId,
        stream_id: u32,
        key: &str,
        range: (f64, f64),
        now: Instant,
    ) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        let app_name = c.session.app().to_owned();
        let app = self.config.app(&app_name).cloned().unwrap_or_default();
        // What this viewer can play decides which of each frame's forms it is sent.
        let caps = c.session.capabilities();
        let filter =
            TrackFilter::for_rtmp(caps.declared, caps.playable(), app.enhanced_to_undeclared);
        if let Some(c) = self.clients.get_mut(id.0) {
            c.queue.filter = filter;
        }
        let name: StreamName = format!("{app_name}/{key}").into();
        // A live stream wins; otherwise a stored file of that name, if the app has them.
        // Start -1 s asks for live only: librtmp sends it as -1000 (ms), Flash as -1.
        let (start, duration) = range;
        let live_only = start == -1.0 || start == -1000.0;
        if let Some(dir) = app.vod_dir()
            && !live_only
            && self.directory.origin(&name).is_none()
        {
            let candidates = match vod_candidates(key) {
                Ok(c) => c,
                Err(why) => {
                    return self.reject_play(
                        id,
                        stream_id,
                        status::PLAY_STREAM_NOT_FOUND,
                        why,
                        key,
                    );
                }
            };
            self.vod_serial += 1;
            let request = self.vod_serial;
            self.vod_requests.insert(
                request,
                VodRequest::Play {
                    client: id,
                    stream_id,
                    key: key.to_owned(),
                    start_ms: if start > 0.0 {
                        start.min(f64::from(u32::MAX)) as u32
                    } else {
                        0
                    },
                    duration_ms: (duration > 0.0).then(|| duration.min(f64::from(u32::MAX)) as u32),
                },
            );
            self.outputs.push_back(Output::OpenVod {
                request,
                dir: dir.to_owned(),
                candidates,
            });
            return;
        }
        self.play_stream(id, stream_id, name, now);
    }

    /// `getStreamLength`: a stored file's length in seconds, 0 for anything else.
    fn stream_length(&mut self, id: ClientId, transaction_id: f64, key: &str) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let dir = self
            .config
            .app(c.session.app())
            .and_then(|a| a.vod_dir().map(Path::to_owned));
        match (dir, vod_candidates(key)) {
            (Some(dir), Ok(candidates)) => {
                self.vod_serial += 1;
                let request = self.vod_serial;
                self.vod_requests.insert(
                    request,
                    VodRequest::Length {
                        client: id,
                        transaction_id,
                    },
                );
                self.outputs.push_back(Output::OpenVod {
                    request,
                    dir,
                    candidates,
                });
            }
            _ => {
                c.session.answer_stream_length(transaction_id, 0.0);
                c.queue_session_output();
            }
        }
    }

    /// The driver looked a stored file up for `request`: `Ok(Some(..))` found (its path and
    /// index), `Ok(None)` no such file, `Err` refused. Returns the stream the file now feeds,
    /// if a play started, so the driver can keep the open file for its reads.
    pub fn handle_vod_opened(
        &mut self,
        request: u64,
        result: VodLookup,
        now: Instant,
        transmit: &mut impl Transmit,
    ) -> Option<StreamId> {
        let req = self.vod_requests.remove(&request)?;
        let client = match &req {
            VodRequest::Play { client, .. } | VodRequest::Length { client, .. } => *client,
        };
        let started = self.vod_answer(req, result, now);
        // The answer (a refusal, a length, the start of the play) goes out now: no input of
        // the client's is being handled to write it.
        self.write(client, now, transmit);
        started
    }

    fn vod_answer(&mut self, req: VodRequest, result: VodLookup, now: Instant) -> Option<StreamId> {
        match req {
            VodRequest::Length {
                client,
                transaction_id,
            } => {
                let c = self.clients.get_mut(client.0)?;
                let seconds = match &result {
                    Ok(Some((_, index))) => f64::from(index.duration_ms) / 1000.0,
                    _ => 0.0,
                };
                c.session.answer_stream_length(transaction_id, seconds);
                c.queue_session_output();
                None
            }
            VodRequest::Play {
                client,
                stream_id,
                key,
                start_ms,
                duration_ms,
            } => {
                // The client may have gone or asked for something else meanwhile.
                let c = self.clients.get(client.0)?;
                if !matches!(c.role, Role::Idle) || c.close_reason.is_some() {
                    return None;
                }
                let name: StreamName = format!("{}/{key}", c.session.app()).into();
                match result {
                    Ok(Some((path, index))) if self.directory.origin(&name).is_none() => {
                        Some(self.play_file(
                            client,
                            stream_id,
                            name,
                            VodSource::new(
                                path,
                                index,
                                now,
                                self.config.server.chunk_size.max(VOD_CHUNK_SIZE),
                                start_ms,
                                duration_ms,
                            ),
                            now,
                        ))
                    }
                    Ok(_) => {
                        self.play_stream(client, stream_id, name, now);
                        None
                    }
                    Err(why) => {
                        self.reject_play(
                            client,
                            stream_id,
                            status::PLAY_STREAM_NOT_FOUND,
                            &why,
                            &key,
                        );
                        None
                    }
                }
            }
        }
    }

    /// The stream and RTMP message stream of `id`, if it is a viewer of a stored file.
    fn stored_file_viewer(&self, id: ClientId) -> Option<(StreamId, u32)> {
        let c = self.clients.get(id.0)?;
        let Role::Viewer {
            stream, stream_id, ..
        } = c.role
        else {
            return None;
        };
        self.streams
            .get(stream.0)
            .is_some_and(|s| s.file.is_some())
            .then_some((stream, stream_id))
    }

    /// A `seek` from a stored file's viewer: drop what it has not been sent, tell it (Stream
    /// EOF, `NetStream.Seek.Notify`, Stream Begin) and restart from the keyframe at or before
    /// the position. False if the client plays no stored file.
    fn vod_seek(&mut self, id: ClientId, position_ms: f64, now: Instant) -> bool {
        let Some((stream, stream_id)) = self.stored_file_viewer(id) else {
            return false;
        };
        let (Some(c), Some(s)) = (self.clients.get_mut(id.0), self.streams.get_mut(stream.0))
        else {
            return false;
        };
        let Some(file) = s.file.as_mut() else {
            return false;
        };
        c.queue.start_at(s.ring.next_seq());
        c.session.notify_seek(stream_id, true);
        c.queue_session_output();
        let position = position_ms.clamp(0.0, f64::from(u32::MAX)) as u32;
        file.seek(position, now);
        s.file_timer = None;
        tracing::debug!(shard = self.id, peer = %c.addr, position, "stored file seek");
        self.pump_file(stream, now);
        true
    }

    /// `pause` from a stored file's viewer: nothing more is sent until the resume, which
    /// continues with the first frame it had not been sent. False if it plays no stored
    /// file.
    fn vod_pause(&mut self, id: ClientId, paused: bool, now: Instant) -> bool {
        let Some((stream, stream_id)) = self.stored_file_viewer(id) else {
            return false;
        };
        let (Some(c), Some(s)) = (self.clients.get_mut(id.0), self.streams.get_mut(stream.0))
        else {
            return false;
        };
        let Some(file) = s.file.as_mut() else {
            return false;
        };
        if paused {
            file.pause(c.queue.cursor());
            c.queue.start_at(s.ring.next_seq());
        } else {
            file.resume(now);
        }
        c.session.notify_pause(stream_id, paused);
        c.queue_session_output();
        s.file_timer = None;
        if !paused {
            self.pump_file(stream, now);
        }
        true
    }

    /// `id` plays the live stream `name` (on RTMP message stream `stream_id`): at once if
    /// it is live here, else once its publisher arrives.
    fn play_stream(&mut self, id: ClientId, stream_id: u32, name: StreamName, now: Instant) {
        let Some(addr) = self.clients.get(id.0).map(|c| c.addr) else {
            return;
        };
        let sid = self.local_stream(&name);
        if !self.origins.contains_key(&name)
            && let Some(origin) = self.directory.origin(&name)
        {
            self.subscribe(sid, origin);
        }
        self.watch_pulled(id, &name, now);
        let Some(s) = self.streams.get_mut(sid.0) else {
            return;
        };
        let live = s.live;
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        c.set_role(
            Role::Viewer {
                name: name.clone(),
                stream_id,
                stream: sid,
                waiting_since: (!live).then_some(now),
            },
            RoleKind::Viewer,
        );
        self.outputs.push_back(Output::Playing(id));
        if live {
            // No pass for this: the viewer's own write, right after its input is handled
            // (`handle_input`), sends it the GOP and what is live. A pass over every viewer
            // per join would keep the core busy through a flash crowd.
            s.start_viewer(id, c, stream_id);
            c.mark_join(now);
            tracing::info!(shard = self.id, peer = %addr, stream = %name, "viewer started");
        } else {
            s.waiting.push(id);
            if self.directory.publisher_shard(&name).is_some() {
                // Live on another shard: it starts when that shard's snapshot arrives.
                tracing::info!(shard = self.id, peer = %addr, stream = %name, "viewer waits for the stream from its origin shard");
            } else {
                tracing::info!(shard = self.id, peer = %addr, stream = %name, "viewer waits for the publisher");
            }
            self.arm_client_deadline(id, now);
        }
    }

    /// Input from an HTTP client: its request head, or what it says while it plays.
    fn http_input(&mut self, id: ClientId, bytes: &[u8], now: Instant) {
        let cors_origin = self.config.http.cors_allow_origin.clone();
        let cors = Cors {
            allow_origin: &cors_origin,
        };
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let playing = !matches!(c.role, Role::Idle);
        let Some(http) = c.http.as_mut() else {
            return;
        };
        if playing {
            let reply = http.feed_playing(bytes);
            for frame in reply.send {
                c.queue.push_pending(frame);
            }
            if let Some(reason) = reply.close {
                self.close(id, reason);
            }
            return;
        }
        let Some(request) = http.feed_head(bytes, &cors) else {
            return;
        };
        match request {
            HttpRequest::Answer(answer) => {
                c.queue.push_pending(answer);
                tracing::info!(shard = self.id, peer = %c.addr, "HTTP request answered without a stream");
                self.close(id, "HTTP request answered");
            }
            HttpRequest::Vod { request, query } => {
                let addr = c.addr;
                let refusal = match self.config.app(&request.app) {
                    None => Some((404, format!("no application named {:?}", request.app))),
                    Some(a) if !a.allow_play => {
                        self.stats.reject(RejectReason::PlayNotAllowed);
                        Some((403, "playing is not allowed in this application".to_owned()))
                    }
                    Some(a) if a.vod_dir().is_none() => {
                        Some((404, "this application stores no files".to_owned()))
                    }
                    Some(_) => None,
                };
                if let Some((status, why)) = refusal {
                    c.queue.push_pending(response::error(status, &why, &cors));
                    tracing::info!(shard = self.id, peer = %addr, file = %format!("{}/{}", request.app, request.file), "HTTP download refused: {why}");
                    self.close(id, format!("HTTP download refused: {why}"));
                    return;
                }
                let c_args = self.access_args(id, &query);
                if let Err(denial) = self.check_access_args(
                    id,
                    Action::Play,
                    &request.app,
                    &request.name,
                    &c_args,
                    now,
                ) {
                    return self.refuse_http(id, &request.app, &request.name, &denial);
                }
                let on_play = self
                    .config
                    .app(&request.app)
                    .map(|a| a.auth.on_play.clone())
                    .unwrap_or_default();
                if on_play.is_empty() {
                    self.start_download(id, request, now);
                } else {
                    self.start_callback(
                        id,
                        Call::Play,
                        &on_play,
                        PendingAction::HttpVod(request),
                        Some((0.0, -1.0)),
                    );
                }
            }
            HttpRequest::Play {
                app,
                stream,
                query,
                format,
                response_head,
                head_only,
            } => {
                let addr = c.addr;
                let refusal = match self.config.app(&app) {
                    None => Some((404, format!("no application named {app:?}"))),
                    Some(a) if !a.allow_play => {
                        self.stats.reject(RejectReason::PlayNotAllowed);
                        Some((403, "playing is not allowed in this application".to_owned()))
                    }
                    Some(_) => None,
                };
                if let Some((status, why)) = refusal {
                    c.queue.push_pending(response::error(status, &why, &cors));
                    tracing::info!(shard = self.id, peer = %addr, stream = %format!("{app}/{stream}"), "HTTP play refused: {why}");
                    self.close(id, format!("HTTP play refused: {why}"));
                    return;
                }
                let c_args = self.access_args(id, &query);
                if let Err(denial) =
                    self.check_access_args(id, Action::Play, &app, &stream, &c_args, now)
                {
                    return self.refuse_http(id, &app, &stream, &denial);
                }
                let on_play = self
                    .config
                    .app(&app)
                    .map(|a| a.auth.on_play.clone())
                    .unwrap_or_default();
                let action = PendingAction::HttpPlay {
                    app,
                    stream,
                    format,
                    response_head,
                    head_only,
                };
                if on_play.is_empty() {
                    self.start_http_play(id, action, now);
                } else {
                    self.start_callback(id, Call::Play, &on_play, action, Some((-2.0, -1.0)));
                }
            }
        }
    }

    /// An HTTP play was allowed: answer a HEAD, or start the viewer.
    fn start_http_play(&mut self, id: ClientId, action: PendingAction, now: Instant) {
        let PendingAction::HttpPlay {
            app,
            stream,
            format,
            response_head,
            head_only,
        } = action
        else {
            return;
        };
        let cors_origin = self.config.http.cors_allow_origin.clone();
        let cors = Cors {
            allow_origin: &cors_origin,
        };
        let name: StreamName = format!("{app}/{stream}").into();
        let live_now = self
            .stream_ids
            .get(&name)
            .and_then(|sid| self.streams.get(sid.0))
            .is_some_and(|s| s.live)
            || self.directory.origin(&name).is_some();
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let addr = c.addr;
        if head_only {
            let answer = if live_now {
                response_head
            } else {
                response::error(404, "no such stream is published", &cors)
            };
            c.queue.push_pending(answer);
            self.close(id, "HEAD answered");
            return;
        }
        if let Some(http) = c.http.as_mut() {
            http.response_head = Some(response_head);
        }
        tracing::info!(shard = self.id, peer = %addr, stream = %name, protocol = format.protocol(), "HTTP viewer asks for a stream");
        self.play_stream(id, 0, name, now);
    }

    // ---- stored files over HTTP (vod_download.rs) --------------------------------------------

    /// An HTTP download was allowed: the driver looks the file up.
    fn start_download(&mut self, id: ClientId, request: DownloadRequest, now: Instant) {
        // A name the route let through but the file system could read differently (`..`
        // after a rename by a callback, say) is refused here too.
        let plain = !request.file.contains(['/', '\\', '\0'])
            && !matches!(request.name.as_str(), "" | "." | "..");
        let dir = self
            .config
            .app(&request.app)
            .and_then(AppConfig::vod_dir)
            .map(Path::to_path_buf);
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let (Some(dir), true) = (dir, plain) else {
            let cors = Cors {
                allow_origin: &self.config.http.cors_allow_origin,
            };
            c.queue
                .push_pending(response::error(404, "no such file", &cors));
            self.close(id, "HTTP download refused: no such file");
            return;
        };
        tracing::info!(shard = self.id, peer = %c.addr, app = %request.app, file = %request.file, "HTTP download asks for a stored file");
        c.last_role = (
            RoleKind::Client,
            Some(format!("{}/{}", request.app, request.name).into()),
        );
        let file = request.file.clone();
        c.download = Some(Box::new(Download::opening(request, now)));
        self.outputs.push_back(Output::OpenDownload {
            client: id,
            dir,
            file,
        });
    }

    /// The driver looked the file of `client`'s download up: `Ok(len)` (the file is open,
    /// `len` bytes long) or why not. Answers the head and starts sending. Returns whether
    /// the download goes on (the driver keeps the file open only then).
    pub fn handle_download_opened(
        &mut self,
        client: ClientId,
        result: Result<u64, String>,
        now: Instant,
        transmit: &mut impl Transmit,
    ) -> bool {
        let cors_origin = self.config.http.cors_allow_origin.clone();
        let cors = Cors {
            allow_origin: &cors_origin,
        };
        let Some(c) = self.clients.get_mut(client.0) else {
            return false;
        };
        if c.close_reason.is_some() {
            return false;
        }
        let Some(d) = c.download.as_mut() else {
            return false;
        };
        let request = d.request.take().unwrap_or_default();
        let len = match result {
            Ok(len) => len,
            Err(why) => {
                // Missing, outside the directory, not a regular file: all look the same
                // to the client.
                c.queue
                    .push_pending(response::error(404, "no such file", &cors));
                tracing::info!(shard = self.id, peer = %c.addr, file = %request.file, "HTTP download refused: {why}");
                self.close(client, format!("HTTP download refused: {why}"));
                return false;
            }
        };
        let range = range::resolve(request.range.as_deref(), len);
        let Some((start, end)) = range.span(len) else {
            c.queue
                .push_pending(response::range_not_satisfiable(&cors, len));
            self.close(client, "HTTP download: range not satisfiable");
            return false;
        };
        let part = matches!(range, ByteRange::Part { .. }).then(|| (start, end - 1));
        c.queue
            .push_pending(response::file_head(&cors, request.content_type, len, part));
        if request.head_only {
            self.close(client, "HEAD answered");
            return false;
        }
        d.next = start;
        d.end = end;
        d.busy = false;
        self.write(client, now, transmit);
        true
    }

    /// A piece of `client`'s download was read (`Output::ReadDownload`). Returns whether
    /// the download goes on.
    pub fn handle_download_read(
        &mut self,
        client: ClientId,
        offset: u64,
        result: std::io::Result<Bytes>,
        now: Instant,
        transmit: &mut impl Transmit,
    ) -> bool {
        let Some(c) = self.clients.get_mut(client.0) else {
            return false;
        };
        if c.close_reason.is_some() {
            return false;
        }
        let Some(d) = c.download.as_mut() else {
            return false;
        };
        match result {
            Ok(bytes) if d.read_done(offset, bytes.len()) => {
                c.queue.push_pending(bytes);
                self.write(client, now, transmit);
                true
            }
            Ok(_) => {
                self.close(client, "the file changed while it was sent");
                false
            }
            Err(e) => {
                self.close(client, format!("reading the file failed: {e}"));
                false
            }
        }
    }

    /// After a write to a downloading client: the next read, or the end.
    fn download_step(&mut self, id: ClientId) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        if c.close_reason.is_some() || c.blocked {
            return;
        }
        let queued = c.queue.pending_bytes();
        let Some(d) = c.download.as_mut() else {
            return;
        };
        match d.next_read(queued) {
            DownloadStep::Wait => {}
            DownloadStep::Read { offset, len } => self.outputs.push_back(Output::ReadDownload {
                client: id,
                offset,
                len,
            }),
            DownloadStep::Done => self.close(id, "download complete"),
        }
    }

    // ---- access control ------------------------------------------------------------------

    /// The query arguments access control looks at for `id`: the stream name's, then its
    /// tcUrl's. Kept on the client for the `_done` callbacks.
    fn access_args(&mut self, id: ClientId, query: &str) -> QueryArgs {
        let Some(c) = self.clients.get_mut(id.0) else {
            return QueryArgs::default();
        };
        let mut args = QueryArgs::parse(query);
        args.extend_from(query::query_of(&c.connect.tc_url));
        c.args = args.clone();
        args
    }

    /// Network rules, keys and signed links for an RTMP client's publish or play.
    fn check_access(
        &mut self,
        id: ClientId,
        action: Action,
        stream: &str,
        query: &str,
        now: Instant,
    ) -> Result<(), Denial> {
        let args = self.access_args(id, query);
        let app = self
            .clients
            .get(id.0)
            .map(|c| c.session.app().to_owned())
            .unwrap_or_default();
        self.check_access_args(id, action, &app, stream, &args, now)
    }

    fn check_access_args(
        &self,
        id: ClientId,
        action: Action,
        app: &str,
        stream: &str,
        args: &QueryArgs,
        now: Instant,
    ) -> Result<(), Denial> {
        let (Some(c), Some(app_config)) = (self.clients.get(id.0), self.config.app(app)) else {
            return Ok(());
        };
        access::check(
            &app_config.auth,
            &AccessRequest {
                action,
                app,
                stream,
                args,
                peer: c.addr.ip(),
                unix_now: self.unix_now(now),
            },
        )
    }

    /// Refuses an RTMP client for `denial`: an `onStatus` error that says why, a warning
    /// naming the peer and the rule (never what it sent), the count, and the close.
    fn refuse(&mut self, id: ClientId, refused: Refused, stream: &str, denial: &Denial) {
        self.stats.reject(RejectReason::of_denial(denial.kind));
        let reason = RejectReason::of_denial(denial.kind).as_str();
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let what = match refused {
            Refused::Connect => {
                c.session.reject_connect(&denial.why);
                "connect"
            }
            Refused::Publish(stream_id) => {
                c.session
                    .reject_publish(stream_id, status::PUBLISH_BAD_NAME, &denial.why);
                "publish"
            }
            Refused::Play(stream_id) => {
                c.session
                    .reject_play(stream_id, status::PLAY_FORBIDDEN, &denial.why);
                "play"
            }
        };
        c.queue_session_output();
        tracing::warn!(shard = self.id, peer = %c.addr, app = %c.session.app(), stream, reason, "{what} refused: {}", denial.why);
        self.close(id, format!("{what} refused ({reason}): {}", denial.why));
    }

    /// Refuses an HTTP-FLV or WebSocket-FLV viewer for `denial`: 403.
    fn refuse_http(&mut self, id: ClientId, app: &str, stream: &str, denial: &Denial) {
        self.stats.reject(RejectReason::of_denial(denial.kind));
        let reason = RejectReason::of_denial(denial.kind).as_str();
        let cors_origin = self.config.http.cors_allow_origin.clone();
        let cors = Cors {
            allow_origin: &cors_origin,
        };
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        c.queue
            .push_pending(response::error(403, &denial.why, &cors));
        tracing::warn!(shard = self.id, peer = %c.addr, app, stream, reason, "HTTP play refused: {}", denial.why);
        self.close(id, format!("HTTP play refused ({reason}): {}", denial.why));
    }

    /// Asks the application's callback `url` whether `id` may do `action`; the client
    /// waits, its input held, until [`Shard::handle_callback_answer`].
    fn start_callback(
        &mut self,
        id: ClientId,
        call: Call,
        url: &str,
        action: PendingAction,
        play_range: Option<(f64, f64)>,
    ) {
        let refused = match &action {
            PendingAction::Connect => Some(Refused::Connect),
            PendingAction::Publish { stream_id, .. } => Some(Refused::Publish(*stream_id)),
            PendingAction::Play { stream_id, .. } => Some(Refused::Play(*stream_id)),
            PendingAction::HttpPlay { .. } | PendingAction::HttpVod(_) => None,
        };
        let (app, stream) = match &action {
            PendingAction::Connect => (None, String::new()),
            PendingAction::Publish { stream, .. } | PendingAction::Play { stream, .. } => {
                (None, stream.clone())
            }
            PendingAction::HttpPlay { app, stream, .. } => (Some(app.clone()), stream.clone()),
            PendingAction::HttpVod(r) => (Some(r.app.clone()), r.name.clone()),
        };
        if self.callbacks_in_flight >= callback::MAX_IN_FLIGHT_PER_SHARD {
            let denial = Denial::new(
                DenialKind::CallbackOverloaded,
                format!(
                    "{} callbacks are already waiting for an answer on this shard",
                    callback::MAX_IN_FLIGHT_PER_SHARD
                ),
            );
            return match refused {
                Some(refused) => self.refuse(id, refused, &stream, &denial),
                None => self.refuse_http(id, app.as_deref().unwrap_or(""), &stream, &denial),
            };
        }
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let app = app.unwrap_or_else(|| c.session.app().to_owned());
        let timeout = self
            .config
            .app(&app)
            .map(|a| a.auth.callback_timeout())
            .unwrap_or(Duration::from_secs(5));
        let request = Notice {
            call,
            addr: c.addr.ip(),
            client_id: c.conn,
            app: &app,
            name: &stream,
            tc_url: &c.connect.tc_url,
            flash_ver: &c.connect.flash_ver,
            page_url: &c.connect.page_url,
            play_range,
            args: &c.args,
        }
        .request(url, timeout);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        c.pending = Some(Box::new(PendingCallback {
            ticket,
            action,
            buffered: Vec::new(),
            buffered_len: 0,
        }));
        self.callbacks_in_flight += 1;
        tracing::debug!(shard = self.id, peer = %c.addr, app, stream, call = call.as_str(), "waiting for the access callback");
        self.outputs.push_back(Output::Callback {
            client: id,
            ticket,
            request,
        });
    }

    /// The answer to the callback `ticket` of `client` came (or the call failed): do or
    /// refuse what the client asked, then go on with the input it sent meanwhile. A
    /// client that left meanwhile is simply not found.
    pub fn handle_callback_answer(
        &mut self,
        client: ClientId,
        ticket: u64,
        answer: CallbackAnswer,
        now: Instant,
        transmit: &mut impl Transmit,
    ) {
        let Some(c) = self.clients.get_mut(client.0) else {
            return;
        };
        if c.pending.as_ref().is_none_or(|p| p.ticket != ticket) {
            return;
        }
        let pending = *c.pending.take().expect("checked above");
        self.callbacks_in_flight -= 1;
        let verdict = callback::verdict(&answer);
        match (pending.action, verdict) {
            (PendingAction::Connect, Verdict::Deny(denial)) => {
                self.refuse(client, Refused::Connect, "", &denial)
            }
            (PendingAction::Connect, _) => {
                c.session.accept_connect();
                c.queue_session_output();
            }
            (PendingAction::Publish { stream_id, stream }, Verdict::Deny(denial)) => {
                self.refuse(client, Refused::Publish(stream_id), &stream, &denial)
            }
            (PendingAction::Publish { stream_id, stream }, Verdict::Allow) => {
                self.start_publish(client, stream_id, &stream, now)
            }
            (PendingAction::Publish { stream_id, stream }, Verdict::Rename(to)) => {
                tracing::info!(shard = self.id, peer = %c.addr, from = %stream, to = %to, "the publish callback renamed the stream");
                self.start_publish(client, stream_id, &to, now)
            }
            (
                PendingAction::Play {
                    stream_id, stream, ..
                },
                Verdict::Deny(denial),
            ) => self.refuse(client, Refused::Play(stream_id), &stream, &denial),
            (
                PendingAction::Play {
                    stream_id,
                    stream,
                    range,
                },
                Verdict::Allow,
            ) => self.start_play(client, stream_id, &stream, range, now),
            (
                PendingAction::Play {
                    stream_id,
                    stream,
                    range,
                },
                Verdict::Rename(to),
            ) => {
                tracing::info!(shard = self.id, peer = %c.addr, from = %stream, to = %to, "the play callback renamed the stream");
                self.start_play(client, stream_id, &to, range, now)
            }
            (PendingAction::HttpPlay { app, stream, .. }, Verdict::Deny(denial)) => {
                self.refuse_http(client, &app, &stream, &denial)
            }
            (action @ PendingAction::HttpPlay { .. }, Verdict::Allow) => {
                self.start_http_play(client, action, now)
            }
            (
                PendingAction::HttpPlay {
                    app,
                    format,
                    response_head,
                    head_only,
                    ..
                },
                Verdict::Rename(to),
            ) => self.start_http_play(
                client,
                PendingAction::HttpPlay {
                    app,
                    stream: to,
                    format,
                    response_head,
                    head_only,
                },
                now,
            ),
            (PendingAction::HttpVod(r), Verdict::Deny(denial)) => {
                self.refuse_http(client, &r.app, &r.name, &denial)
            }
            (PendingAction::HttpVod(r), Verdict::Allow) => self.start_download(client, r, now),
            (PendingAction::HttpVod(mut r), Verdict::Rename(to)) => {
                tracing::info!(shard = self.id, peer = %c.addr, from = %r.name, to = %to, "the play callback renamed the stored file");
                let ext = r.file.rsplit_once('.').map_or("", |(_, e)| e).to_owned();
                r.file = format!("{to}.{ext}");
                r.name = to;
                self.start_download(client, r, now)
            }
        }
        // What the client said while it waited, in order (it may start another wait).
        self.handle_events(client, now);
        for bytes in pending.buffered {
            self.handle_input(client, bytes, now, transmit);
        }
        self.write(client, now, transmit);
    }

    /// The `_done` notification for a client leaving `role`, if its application wants one.
    fn notify_done(&mut self, id: ClientId, role: &Role) {
        let (call, name) = match role {
            Role::Idle => return,
            Role::Publisher { name, .. } => (Call::PublishDone, name),
            Role::Viewer { name, .. } => (Call::PlayDone, name),
        };
        let (app, stream) = name.split_once('/').unwrap_or((name, ""));
        let Some(auth) = self.config.app(app).map(|a| &a.auth) else {
            return;
        };
        let url = match call {
            Call::PublishDone => &auth.on_publish_done,
            _ => &auth.on_play_done,
        };
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        // A push never asked `on_play`: its end is no play's end either.
        if url.is_empty() || c.forward.is_some() {
            return;
        }
        let request = Notice {
            call,
            addr: c.addr.ip(),
            client_id: c.conn,
            app,
            name: stream,
            tc_url: &c.connect.tc_url,
            flash_ver: &c.connect.flash_ver,
            page_url: &c.connect.page_url,
            play_range: (call == Call::PlayDone).then_some((-2.0, -1.0)),
            args: &c.args,
        }
        .request(url, auth.callback_timeout());
        self.outputs.push_back(Output::Notify(request));
    }

    /// Plays a stored file to `id`: a stream of its own, fed by its own source.
    fn play_file(
        &mut self,
        id: ClientId,
        stream_id: u32,
        name: StreamName,
        mut source: VodSource,
        now: Instant,
    ) -> StreamId {
        let mut settings = self.settings_for(&name);
        settings.gop_cache = None;
        // The source waits for a viewer that falls behind (`pump_file`) instead of the
        // viewer skipping what it has not read: a stored file loses nothing.
        settings.backlog_max_ms = u32::MAX;
        let mut stream = LocalStream::new(name.clone(), settings);
        stream.live = true;
        stream.live_since = Some(now);
        let buffer_ms = self.clients.get(id.0).map_or(0, |c| c.buffer_ms);
        if buffer_ms > 0 {
            source.set_buffer(buffer_ms);
        }
        let chunk_size = source.chunk_size();
        tracing::info!(shard = self.id, peer = %self.clients.get(id.0).map(|c| c.addr.to_string()).unwrap_or_default(), stream = %name, file = %source.path.display(), "playing a stored file");
        stream.file = Some(source);
        stream.viewers.push(id);
        let sid = StreamId(self.streams.insert(stream));
        let Some(c) = self.clients.get_mut(id.0) else {
            return sid;
        };
        c.set_role(
            Role::Viewer {
                name,
                stream_id,
                stream: sid,
                waiting_since: None,
            },
            RoleKind::FileViewer,
        );
        self.outputs.push_back(Output::Playing(id));
        // The source's frames are encoded at its chunk size, larger than live streams' so
        // that a frame is one chunk and goes out straight from the file's read.
        c.session.set_outgoing_chunk_size(chunk_size);
        c.session.accept_play(stream_id, true, true);
        c.queue_session_output();
        c.queue.start_at(0);
        self.pump_file(sid, now);
        sid
    }

    /// Moves a file source along: frames that are due go into its stream, and it says what
    /// it needs next (a read, a later look).
    fn pump_file(&mut self, sid: StreamId, now: Instant) {
        // What the viewer has not been sent, counted once and then added to: nothing is
        // written to it while the source runs (counting the ring per frame cost a walk of
        // the whole batch per frame).
        let mut unsent = None;
        loop {
            let Some(s) = self.streams.get_mut(sid.0) else {
                return;
            };
            let Some(&viewer) = s.viewers.first() else {
                return;
            };
            let max = s.settings.backlog_max_bytes;
            let unsent = unsent.get_or_insert_with(|| {
                self.clients.get(viewer.0).map_or(0, |c| {
                    s.ring.backlog(c.queue.cursor(), max).bytes + c.queue.pending_bytes()
                })
            });
            let behind = *unsent > max / 2;
            let lag = s.settings.lag_disconnect;
            let Some(file) = s.file.as_mut() else {
                return;
            };
            match file.next(now, behind, lag) {
                FileStep::Frame(entry) => {
                    *unsent += entry.len();
                    let wake = s.append(entry, now, &mut self.clients);
                    self.schedule(sid, wake, now);
                }
                FileStep::Read { offset, len } => {
                    let path = file.path.clone();
                    self.outputs.push_back(Output::ReadFile {
                        stream: sid,
                        path,
                        offset,
                        len,
                    });
                    return;
                }
                FileStep::Reading => return,
                FileStep::WaitUntil(at) => {
                    // One timer per source: an earlier one already armed looks again first.
                    if s.file_timer.is_none_or(|armed| at < armed) {
                        s.file_timer = Some(at);
                        self.timers.arm(at, Timer::File(sid));
                    }
                    return;
                }
                FileStep::End => {
                    let event = file.event(StreamEvent::PlayStopped);
                    let wake = s.append(event, now, &mut self.clients);
                    self.schedule(sid, wake, now);
                    return;
                }
                FileStep::Failed(reason) => {
                    self.close(viewer, reason);
                    return;
                }
            }
        }
    }

    /// A read of a file source came back.
    pub fn handle_file_read(
        &mut self,
        sid: StreamId,
        offset: u64,
        result: std::io::Result<FileBuffer>,
        now: Instant,
    ) {
        let Some(s) = self.streams.get_mut(sid.0) else {
            return;
        };
        let Some(file) = s.file.as_mut() else {
            return;
        };
        let viewer = s.viewers.first().copied();
        match result {
            Ok(data) => {
                file.feed(offset, data);
                self.pump_file(sid, now);
            }
            Err(e) => {
                let reason = format!("recording {}: {e}", file.path.display());
                if let Some(v) = viewer {
                    if offset == 0
                        && let Some(c) = self.clients.get_mut(v.0)
                        && let Role::Viewer { stream_id, .. } = c.role
                    {
                        c.session.reject_play(
                            stream_id,
                            status::PLAY_STREAM_NOT_FOUND,
                            "recording cannot be opened",
                        );
                        c.queue_session_output();
                    }
                    self.close(v, reason);
                }
            }
        }
    }

    /// A stored file ended for this viewer: close it once the socket has taken the end
    /// (or after a few seconds of trying).
    fn end_file_viewer(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get(id.0) else {
            return;
        };
        if c.queue.has_pending() && c.ends_at.is_some_and(|limit| now < limit) {
            self.arm(now + FILE_END_CHECK, Timer::FileEnd(id));
            return;
        }
        self.close(id, "the recording ended");
    }

    /// The client leaves whatever it published or played.
    fn leave(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let role = std::mem::replace(&mut c.role, Role::Idle);
        if let Some(name) = self.watching.remove(&id) {
            self.directory.unwatch(&name);
        }
        self.notify_done(id, &role);
        match role {
            Role::Idle => {}
            Role::Publisher { name, .. } => self.unpublish(id, name, now),
            Role::Viewer { name, stream, .. } => {
                let Some(s) = self.streams.get_mut(stream.0) else {
                    return;
                };
                let started = s.viewers.contains(&id);
                s.remove_viewer(id);
                if let Some(c) = self.clients.get(id.0) {
                    s.dropped_closed += c.queue.dropped_frames;
                    if started {
                        s.forget_format(c.queue.format);
                    }
                }
                if s.file.is_some() {
                    // A file's stream is its one viewer's own.
                    self.streams.remove(stream.0);
                    self.outputs.push_back(Output::CloseFile(stream));
                } else {
                    self.release_stream_if_unused(&name);
                }
            }
        }
    }

    // ---- other shards --------------------------------------------------------------------

    /// Handles a message from another shard.
    pub fn handle_message(&mut self, msg: ShardMessage, now: Instant) {
        match msg {
            ShardMessage::Subscribe { stream, shard } => {
                let Some(state) = self.origins.get_mut(&stream) else {
                    // No longer the origin: point the subscriber at the current one.
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
                let Some(snapshot) = self
                    .stream_ids
                    .get(&stream)
                    .and_then(|sid| self.streams.get(sid.0))
                    .map(LocalStream::snapshot)
                else {
                    return;
                };
                self.send(
                    shard,
                    ShardMessage::Subscribed {
                        stream,
                        origin: self.id,
                        state: Box::new(snapshot),
                    },
                );
            }
            ShardMessage::Unsubscribe { stream, shard } => {
                if let Some(state) = self.origins.get_mut(&stream) {
                    state.subscribers.retain(|&s| s != shard);
                }
            }
            ShardMessage::Subscribed {
                stream,
                origin,
                state,
            } => {
                let sid = self.stream_ids.get(&stream).copied();
                match sid.and_then(|sid| Some((sid, self.streams.get_mut(sid.0)?))) {
                    Some((sid, local)) if local.subscribed_to == Some(origin) => {
                        let wake = local.apply_snapshot(*state, now, &mut self.clients);
                        self.schedule(sid, wake, now);
                        self.start_waiting(sid, now);
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
                let Some(&sid) = self.stream_ids.get(&stream) else {
                    return;
                };
                let Some(local) = self.streams.get_mut(sid.0) else {
                    return;
                };
                // Entries still in flight from a former origin are numbered in its
                // sequence, not the current one's: they are dropped.
                if local.subscribed_to != Some(origin) {
                    return;
                }
                let ended = matches!(
                    entry,
                    RingEntry::Event {
                        event: StreamEvent::Ended,
                        ..
                    }
                );
                let wake = local.apply(entry, now, &mut self.clients);
                if ended {
                    local.subscribed_to = None;
                }
                self.schedule(sid, wake, now);
                self.start_waiting(sid, now);
                if ended {
                    self.release_stream_if_unused(&stream);
                }
            }
            ShardMessage::OriginMoved { stream, origin } => {
                // If this shard was the origin, its publisher (if any) has been replaced.
                let mut removed = self.origins.remove(&stream);
                if removed.is_some() {
                    // The new origin pushes from its own publish.
                    self.stop_forwards(&stream, "the stream moved to another core");
                }
                // Its recording ends here; the new origin records from its own publish.
                if let Some(rec) = removed.as_mut().and_then(|s| s.recorder.as_mut()) {
                    rec.stop(&mut self.record_ops);
                    self.emit_record_ops();
                }
                if let Some((old, _)) = removed.and_then(|state| state.publisher) {
                    self.leave_role(old);
                    self.close(old, "taken over by a new publisher on another core");
                }
                if let Some(&sid) = self.stream_ids.get(&stream) {
                    self.subscribe(sid, origin);
                }
            }
            ShardMessage::Inspect { clients, reply } => reply.send(self.snapshot(now, clients)),
            ShardMessage::Kick { conn, reply } => {
                let found = self.clients.iter().find(|(_, c)| c.conn == conn);
                let Some((key, c)) = found else {
                    return reply.send(Err(AdminRefusal::NotFound));
                };
                tracing::info!(shard = self.id, peer = %c.addr, "closing a client as the admin API asked");
                self.close(ClientId(key), "closed through the admin API");
                reply.send(Ok(()));
            }
            ShardMessage::InjectData {
                stream,
                payload,
                reply,
            } => {
                let Some(state) = self.origins.get_mut(&stream) else {
                    return reply.send(Err(AdminRefusal::NotFound));
                };
                if state.publisher.is_none() {
                    return reply.send(Err(AdminRefusal::NotLive));
                }
                let frame = state.origin.injected_data(payload, now);
                let timestamp = frame.timestamp;
                self.push_entry(&stream, RingEntry::Frame(frame), now);
                reply.send(Ok(timestamp));
            }
            ShardMessage::Record {
                stream,
                start,
                reply,
            } => reply.send(self.record_command(&stream, start)),
            ShardMessage::UpstreamRefused { stream, why } => self.refuse_waiting(&stream, &why),
            ShardMessage::Shutdown => self.begin_shutdown(),
            ShardMessage::Reload(config) => self.reload(config),
            ShardMessage::Drain => self.request_reconnects(),
        }
    }

    /// Takes a reloaded configuration. Clients, streams and their queues are untouched; what
    /// reads `self.config` from now on (accepting, `connect`, publish and play) sees it.
    pub fn reload(&mut self, config: Arc<Config>) {
        self.config = config;
        tracing::debug!(shard = self.id, "configuration reloaded");
    }

    /// The drain started: every client that announced Enhanced RTMP reconnect support
    /// (capsEx bit 0x01) is asked to reconnect, to `server.reconnect_tc_url` if set. The
    /// others are served on until the drain ends.
    pub fn request_reconnects(&mut self) {
        let tc_url = self.config.server.reconnect_tc_url.clone();
        let tc_url = (!tc_url.is_empty()).then_some(tc_url.as_str());
        let mut asked = 0;
        for key in self.clients.keys() {
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            if c.http.is_some() || !c.session.supports_reconnect() {
                continue;
            }
            c.session
                .request_reconnect(tc_url, "server draining; reconnect");
            c.queue_session_output();
            // The client's task writes it now, ahead of the stream's next frame.
            self.outputs.push_back(Output::WaitWritable(ClientId(key)));
            asked += 1;
        }
        if asked > 0 {
            tracing::info!(
                shard = self.id,
                clients = asked,
                "drain: asked clients to reconnect (NetConnection.Connect.ReconnectRequest)"
            );
        }
    }

    /// Counts a connection the driver refused before the relay saw it.
    pub fn count_rejection(&mut self, reason: RejectReason) {
        self.stats.reject(reason);
    }

    /// Graceful shutdown: stop accepting, tell every client, close them.
    pub fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.close_upstreams();
        for key in self.clients.keys() {
            let id = ClientId(key);
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            match &c.role {
                _ if c.forward.is_some() => {
                    if let Some(f) = c.forward.as_mut() {
                        f.session.close_stream();
                    }
                }
                Role::Viewer { .. } if c.http.is_some() => {
                    if let Some(end) = c.http.as_ref().and_then(|h| h.ending())
                        && c.queue.format != OutputFormat::Rtmp
                    {
                        c.queue.push_pending(end);
                    }
                }
                Role::Viewer { stream_id, .. } => {
                    let sid = *stream_id;
                    c.session.notify_unpublished(sid);
                }
                Role::Publisher { stream_id, .. } => {
                    let sid = *stream_id;
                    c.session.send_status(
                        sid,
                        "status",
                        status::UNPUBLISH_SUCCESS,
                        "server shutting down",
                    );
                }
                Role::Idle => {}
            }
            c.queue_session_output();
            self.close(id, "server shutting down");
        }
    }

    // ---- push (forward) to other servers -------------------------------------------------

    /// A publish started on this shard: the application's push targets get the stream, from
    /// forwarders made once per stream (a republish within the grace period keeps them).
    fn start_forwards(&mut self, name: &StreamName, publisher: ClientId, app: &AppConfig) {
        if app.push.0.is_empty() || self.forwards.contains_key(name) || self.shutting_down {
            return;
        }
        let Some(c) = self.clients.get(publisher.0) else {
            return;
        };
        let node_id = &self.config.server.node_id;
        let path = c.connect.relay_path.through(node_id);
        let key = name.split_once('/').map_or("", |(_, k)| k);
        let cap = Duration::from_millis(app.push_backoff_max_ms);
        let list = forwarder::forwarders_for(&app.push.0, key, &path, cap, node_id);
        let count = list.len();
        self.forwards.insert(name.clone(), list);
        for index in 0..count {
            let step = self.forwards.get_mut(name).map(|v| v[index].start());
            if let Some(step) = step {
                self.forward_step(name, index, step);
            }
        }
    }

    /// Carries out what a forwarder decided.
    fn forward_step(&mut self, name: &StreamName, index: usize, step: ForwardStep) {
        let Some(f) = self.forwards.get(name).and_then(|v| v.get(index)) else {
            return;
        };
        match step {
            ForwardStep::Connect { attempt } if !self.shutting_down => {
                tracing::debug!(shard = self.id, stream = %name, target = %f.endpoint.shown, attempt, "push: connecting");
                self.outputs.push_back(Output::ForwardConnect {
                    stream: name.clone(),
                    index,
                    attempt,
                    host: f.endpoint.host.clone(),
                    port: f.endpoint.port,
                    tls: f.endpoint.tls,
                });
            }
            ForwardStep::Connect { .. } => {}
            ForwardStep::RetryAt(at) => {
                let attempt = f.attempt();
                self.arm(
                    at,
                    Timer::ForwardRetry {
                        name: name.clone(),
                        index,
                        attempt,
                    },
                );
            }
            ForwardStep::Nothing => {}
        }
    }

    /// The driver connected to a push target for `attempt`: the link becomes a client of
    /// this shard (None if the attempt is stale; the driver then drops the socket). Its
    /// first bytes (C0, C1) are queued: the driver writes them once the socket is in its
    /// table.
    pub fn forward_connected(
        &mut self,
        stream: &StreamName,
        index: usize,
        attempt: u64,
        addr: SocketAddr,
        now: Instant,
    ) -> Option<ClientId> {
        let f = self.forwards.get(stream)?.get(index)?;
        if f.attempt() != attempt || f.state != ForwardState::Connecting || self.shutting_down {
            return None;
        }
        let server = &self.config.server;
        let now_ms = self.now_ms(now);
        let mut config = ClientSessionConfig::new(&f.endpoint.app, &f.endpoint.tc_url);
        config.epoch = now_ms as u32;
        config.seed = now_ms ^ (attempt << 32) ^ index as u64;
        config.chunk_size = server.chunk_size;
        config.relay_path = f.relay_path.clone();
        // The target is a hostile peer: what we take from it is small and bounded.
        config.limits = DecoderLimits {
            max_message_len: FORWARD_MAX_MESSAGE,
            max_chunk_streams: 8,
            max_buffered_bytes: 2 * FORWARD_MAX_MESSAGE as usize,
        };
        let mut session = ClientSession::new(config);
        session.publish(&f.endpoint.publish_name);
        let conn = self.next_conn * self.shard_count as u64 + self.id as u64;
        self.next_conn += 1;
        let placeholder = ServerSession::new(ServerSessionConfig::default());
        let mut client = Client::new(conn, addr, now, placeholder);
        client.forward = Some(Box::new(ForwardLink {
            session,
            stream: stream.clone(),
            index,
            attempt,
            loop_refused: false,
        }));
        client.queue_session_output();
        let id = ClientId(self.clients.insert(client));
        if let Some(f) = self.forwards.get_mut(stream).and_then(|v| v.get_mut(index)) {
            f.connected(attempt, id);
        }
        self.arm_client_deadline(id, now);
        if !self.sampling {
            self.sampling = true;
            self.arm(now + RATE_SAMPLE_INTERVAL, Timer::Sample);
        }
        Some(id)
    }

    /// The driver could not connect to a push target for `attempt`.
    pub fn forward_connect_failed(
        &mut self,
        stream: &StreamName,
        index: usize,
        attempt: u64,
        reason: &str,
        now: Instant,
    ) {
        let Some(f) = self.forwards.get_mut(stream).and_then(|v| v.get_mut(index)) else {
            return;
        };
        let step = f.failed(attempt, reason, 0, false, now);
        if let ForwardStep::RetryAt(at) = step {
            tracing::warn!(shard = self.id, stream = %stream, target = %f.endpoint.shown, retry_in_ms = at.saturating_duration_since(now).as_millis() as u64, "push: cannot connect: {reason}");
        }
        self.forward_step(stream, index, step);
    }

    /// What a push target sent: the answers to our `connect` and `publish`, then nothing
    /// we need (acknowledgements, pings); an error ends the link.
    fn forward_input(&mut self, id: ClientId, bytes: Bytes, now: Instant) {
        let Some(c) = self.clients.get_mut(id.0) else {
            return;
        };
        let Some(link) = c.forward.as_mut() else {
            return;
        };
        let fed = link.session.feed(bytes);
        let mut close: Option<String> = None;
        let mut started = None;
        while let Some(event) = link.session.poll_event() {
            match event {
                ClientEvent::ConnectFailed { code, description } => {
                    let looped = forwarder::is_loop_refusal(&description);
                    // An `_error` to a call after `connect` (some servers refuse
                    // releaseStream) is not the target refusing us.
                    if looped || !link.session.is_connected() {
                        link.loop_refused |= looped;
                        close.get_or_insert_with(|| {
                            format!(
                                "the target refused: {} {}",
                                forwarder::bounded(&code),
                                forwarder::bounded(&description)
                            )
                        });
                    }
                }
                ClientEvent::PublishStarted { .. } => started = link.session.stream_id(),
                ClientEvent::Status {
                    level,
                    code,
                    description,
                    ..
                } if level == "error" => {
                    close.get_or_insert_with(|| {
                        format!(
                            "the target said {}: {}",
                            forwarder::bounded(&code),
                            forwarder::bounded(&description)
                        )
                    });
                }
                // Media or data a target sends to its publisher means nothing here.
                _ => {}
            }
        }
        let (name, index) = (link.stream.clone(), link.index);
        c.queue_session_output();
        if let Err(e) = fed {
            close = Some(format!("protocol error from the target: {e}"));
        }
        if let Some(reason) = close {
            self.close(id, reason);
            return;
        }
        if let Some(stream_id) = started {
            self.forward_started(id, &name, index, stream_id, now);
        }
    }

    /// The target accepted our publish: the link becomes a viewer of the stream, joining
    /// like a late viewer (metadata, codec headers, the GOP from its keyframe).
    fn forward_started(
        &mut self,
        id: ClientId,
        name: &StreamName,
        index: usize,
        stream_id: u32,
        now: Instant,
    ) {
        let Some(f) = self.forwards.get_mut(name).and_then(|v| v.get_mut(index)) else {
            self.close(id, "the stream is no longer pushed");
            return;
        };
        if let Err(reason) = f.publishing(stream_id) {
            self.close(id, reason);
            return;
        }
        let shown = f.endpoint.shown.clone();
        let sid = self.local_stream(name);
        let (Some(c), Some(s)) = (self.clients.get_mut(id.0), self.streams.get_mut(sid.0)) else {
            return;
        };
        // The target gets the stream in the form it declared it takes, as a player would:
        // everything for a server that forwards every codec (shardcast declares "*"), the
        // legacy FLV form for one that declared nothing (nginx-rtmp).
        let enhanced_to_undeclared = self
            .config
            .app(app_of(name))
            .is_some_and(|a| a.enhanced_to_undeclared);
        if let Some(link) = &c.forward {
            let caps = link
                .session
                .server_capabilities()
                .cloned()
                .unwrap_or_default();
            c.queue.filter =
                TrackFilter::for_rtmp(caps.declared, caps.playable(), enhanced_to_undeclared);
        }
        tracing::info!(shard = self.id, peer = %c.addr, stream = %name, target = %shown, filter = c.queue.filter.name(), "push: forwarding");
        let live = s.live;
        c.set_role(
            Role::Viewer {
                name: name.clone(),
                stream_id: SHARED_STREAM_ID,
                stream: sid,
                waiting_since: (!live).then_some(now),
            },
            RoleKind::Viewer,
        );
        self.outputs.push_back(Output::Playing(id));
        if live {
            s.start_viewer(id, c, SHARED_STREAM_ID);
            c.mark_join(now);
        } else {
            s.waiting.push(id);
            self.arm_client_deadline(id, now);
        }
    }

    /// A push link closed (any reason): its forwarder waits, then tries again.
    fn forward_link_ended(
        &mut self,
        link: &ForwardLink,
        addr: SocketAddr,
        reason: &str,
        bytes: u64,
        now: Instant,
    ) {
        self.stats.forward_bytes += bytes;
        let Some(f) = self
            .forwards
            .get_mut(&link.stream)
            .and_then(|v| v.get_mut(link.index))
        else {
            return;
        };
        let step = f.failed(link.attempt, reason, bytes, link.loop_refused, now);
        if let ForwardStep::RetryAt(at) = step {
            tracing::warn!(shard = self.id, peer = %addr, stream = %link.stream, target = %f.endpoint.shown, bytes, retry_in_ms = at.saturating_duration_since(now).as_millis() as u64, "push link ended: {reason}");
        }
        self.forward_step(&link.stream.clone(), link.index, step);
    }

    /// The stream is no longer pushed from here: its links close, its forwarders go.
    fn stop_forwards(&mut self, name: &StreamName, reason: &str) {
        let Some(list) = self.forwards.remove(name) else {
            return;
        };
        for f in list {
            if let Some(id) = f.client {
                self.close(id, reason.to_owned());
            }
        }
    }

    // ---- what the shard can tell ---------------------------------------------------------

    /// This shard's clients (if `with_clients`), streams and counters, as plain values.
    pub fn snapshot(&self, now: Instant, with_clients: bool) -> ShardSnapshot {
        let mut connections = ConnectionCounts::default();
        let (mut bytes_in, mut bytes_out) =
            (self.stats.closed_bytes_in, self.stats.closed_bytes_out);
        let mut clients = Vec::new();
        for (_, c) in self.clients.iter() {
            let role = match c.role {
                Role::Idle => RoleKind::Client,
                _ => c.last_role.0,
            };
            let protocol = match (&c.http, c.queue.format) {
                (Some(_), OutputFormat::Rtmp) => "http",
                (_, format) => format.protocol(),
            };
            connections.add(role, protocol);
            let (c_in, c_out) = (c.bytes_received(), c.queue.bytes_sent);
            bytes_in += c_in;
            bytes_out += c_out;
            if !with_clients {
                continue;
            }
            let (kbps_in, kbps_out) = c.rate.kbps(now, c_in, c_out);
            clients.push(ClientInfo {
                id: c.conn,
                addr: c.addr,
                role,
                protocol,
                app: match (&c.http, &c.role) {
                    (Some(_), Role::Viewer { name, .. }) => app_of(name).to_owned(),
                    (Some(_), _) => String::new(),
                    (None, _) => c.session.app().to_owned(),
                },
                stream: match &c.role {
                    Role::Idle => None,
                    Role::Publisher { name, .. } | Role::Viewer { name, .. } => Some(name.clone()),
                },
                shard: self.id,
                bytes_in: c_in,
                bytes_out: c_out,
                kbps_in,
                kbps_out,
                dropped_frames: c.queue.dropped_frames,
                track_filter: c.queue.filter.name(),
                video_sent: c.queue.video_sent,
                video_withheld: c.queue.video_withheld,
                connected_for: now.saturating_duration_since(c.accepted),
                waiting: matches!(
                    c.role,
                    Role::Viewer {
                        waiting_since: Some(_),
                        ..
                    }
                ),
            });
        }
        let streams = self
            .streams
            .iter()
            .map(|(_, s)| {
                let state = self.origins.get(&s.name).filter(|_| s.file.is_none());
                let publisher = state.and_then(|o| {
                    let (pid, conn) = o.publisher?;
                    let c = self.clients.get(pid.0)?;
                    Some(PublisherInfo {
                        id: conn,
                        addr: c.addr,
                        publishing_for: now.saturating_duration_since(o.since),
                    })
                });
                let dropped_frames = s.dropped_closed
                    + s.viewers
                        .iter()
                        .filter_map(|v| self.clients.get(v.0))
                        .map(|c| c.queue.dropped_frames)
                        .sum::<u64>();
                let (kbps_in, kbps_out) = s.rate.kbps(now, s.bytes_in, s.bytes_out);
                let header =
                    |f: &Option<super::frame::Frame>| f.as_ref().map(|f| f.payload.clone());
                StreamInfo {
                    name: s.name.clone(),
                    shard: self.id,
                    origin: state.is_some() || s.file.is_some(),
                    publisher,
                    live: s.live,
                    file: s.file.is_some(),
                    video: s
                        .video_header()
                        .and_then(|h| inspect_video(&h.payload))
                        .map(|i| i.codec),
                    audio: s
                        .audio_header()
                        .and_then(|h| inspect_audio(&h.payload))
                        .map(|i| i.codec),
                    video_header: s.video_header().map(|f| f.payload.clone()),
                    audio_header: s.audio_header().map(|f| f.payload.clone()),
                    metadata: header(&s.metadata),
                    viewers: s.viewers.len(),
                    waiting: s.waiting.len(),
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                    kbps_in,
                    kbps_out,
                    frames: s.frames,
                    dropped_frames,
                    gop_cache_bytes: s.gop_bytes(),
                    ring_memory: s.ring.memory(),
                    live_for: s
                        .live_since
                        .filter(|_| s.live)
                        .map(|t| now.saturating_duration_since(t)),
                    record: state
                        .and_then(|o| o.recorder.as_ref())
                        .map(Recorder::status),
                    forwards: self.forward_infos(&s.name),
                    upstream: self.upstream_info(&s.name),
                }
            })
            .collect();
        let mut stats = self.stats.clone();
        for f in self.forwards.values().flatten() {
            stats.forward_bytes += self.forward_live_bytes(f);
            stats.forwards_active += u64::from(f.state == ForwardState::Forwarding);
        }
        ShardSnapshot {
            shard: self.id,
            clients,
            streams,
            connections,
            bytes_in,
            bytes_out,
            stats: {
                let mut stats = stats;
                stats.pulls_active = self.pulls_active() as u64;
                stats
            },
        }
    }

    /// Bytes the forwarder's live link (if any) has written.
    fn forward_live_bytes(&self, f: &Forwarder) -> u64 {
        f.client
            .and_then(|id| self.clients.get(id.0))
            .map_or(0, |c| c.queue.bytes_sent)
    }

    /// The stream's pushes, for the API.
    fn forward_infos(&self, name: &StreamName) -> Vec<ForwardInfo> {
        self.forwards
            .get(name)
            .map(|list| {
                list.iter()
                    .map(|f| ForwardInfo {
                        url: f.endpoint.shown.clone(),
                        state: f.state.as_str(),
                        retries: f.retries,
                        bytes: f.bytes(self.forward_live_bytes(f)),
                        last_error: f.last_error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How long a stored file's viewer keeps its connection after the end was written (the
/// player reads `NetStream.Play.Stop` before the socket goes), and how often the shard
/// looks again while the end has not been written.
const FILE_END_LINGER: Duration = Duration::from_millis(500);
const FILE_END_CHECK: Duration = Duration::from_millis(100);
/// How long a stored file's viewer is given to read the end before it is closed anyway.
const FILE_END_LIMIT: Duration = Duration::from_secs(5);

/// `app` of `app/key`.
/// What an access-control refusal answers.
#[derive(Clone, Copy, Debug)]
enum Refused {
    Connect,
    Publish(u32),
    Play(u32),
}

/// The largest message a push target may send us (its answers are a few hundred bytes).
const FORWARD_MAX_MESSAGE: u32 = 64 * 1024;

/// How much a client may send while it waits for its access callback: enough for an
/// encoder that does not wait for `onStatus` before its first frames, not a buffer a
/// peer can grow at will.
const MAX_INPUT_WHILE_PENDING: usize = 1024 * 1024;

fn app_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(app, _)| app)
}

/// Backlog rules that never apply: a client that plays nothing has only its own bytes.
const NO_BACKLOG_RULES: StreamSettings = StreamSettings {
    chunk_size: 128,
    gop_cache: None,
    backlog_max_bytes: usize::MAX,
    backlog_max_ms: u32::MAX,
    lag_disconnect: Duration::MAX,
    flush_interval: None,
    flush_on: crate::config::FlushOn::Message,
};

/// Applies the backlog rules to one viewer: past its byte or duration limit its video
/// skips to the next keyframe, and if it stays behind past `lag_disconnect` it is closed
/// (returns false). They apply whether or not its socket is full: a viewer that stopped
/// reading altogether is the one they are for.
fn apply_backlog_rules(
    ring: &FrameRing,
    settings: &StreamSettings,
    c: &mut Client,
    now: Instant,
    stats: &mut ShardStats,
) -> Result<(), String> {
    if c.queue.cursor() < ring.first_seq() {
        // The ring dropped entries this viewer had not sent (it was capped).
        c.queue.jump_to(ring.first_seq());
    }
    let backlog = ring.backlog(c.queue.cursor(), settings.backlog_max_bytes);
    let behind_bytes = backlog.bytes + c.queue.pending_bytes();
    if behind_bytes <= settings.backlog_max_bytes && backlog.millis <= settings.backlog_max_ms {
        return Ok(());
    }
    let since = *c.behind_since.get_or_insert(now);
    if !c.queue.is_skipping_video() {
        stats.viewer_skips += 1;
        c.queue.skip_to_keyframe();
        tracing::debug!(peer = %c.addr, behind_bytes, behind_ms = backlog.millis, "viewer fell behind; skipping video to the next keyframe");
    }
    if now.saturating_duration_since(since) > settings.lag_disconnect {
        return Err(format!(
            "viewer stayed behind for more than {} ms ({} bytes, {} ms of media unsent; {} video frames dropped)",
            settings.lag_disconnect.as_millis(),
            behind_bytes,
            backlog.millis,
            c.queue.dropped_frames
        ));
    }
    Ok(())
}

/// Why a stream name with a control character is refused: it would be a stream no URL can
/// name, and one that writes lines of its own into the log.
const CONTROL_IN_NAME: &str = "control character in the stream name";

fn has_control_character(name: &str) -> bool {
    name.chars().any(char::is_control)
}

/// Renders a stream event for one viewer through its own session, so it lands in its byte
/// stream exactly where the event stands among the frames. Returns a reason to close it.
fn render_event(c: &mut Client, event: StreamEvent, now: Instant) -> Option<&'static str> {
    let Role::Viewer { stream_id, .. } = c.role else {
        return None;
    };
    if let Some(link) = &mut c.forward {
        // A push is a publisher to its target: our publisher's pauses are gaps in its
        // media; the end of the stream ends the push politely.
        return match event {
            StreamEvent::Unpublished | StreamEvent::Republished => None,
            StreamEvent::Ended | StreamEvent::PlayStopped => {
                link.session.close_stream();
                c.queue_session_output();
                Some("the stream ended")
            }
        };
    }
    if let Some(http) = &c.http {
        // FLV has no words for an unpublish or a republish: the viewer stays through the
        // grace period and gets the new publisher's headers in line. The end ends the
        // response cleanly.
        return match event {
            StreamEvent::Unpublished | StreamEvent::Republished => None,
            StreamEvent::Ended | StreamEvent::PlayStopped => {
                if let Some(end) = http.ending() {
                    c.queue.push_pending(end);
                }
                Some("the stream ended")
            }
        };
    }
    let close = match event {
        StreamEvent::Unpublished => {
            c.session.notify_unpublished(stream_id);
            None
        }
        StreamEvent::Republished => {
            c.session.notify_republished(stream_id);
            None
        }
        StreamEvent::Ended => Some("the publisher did not come back within the grace period"),
        StreamEvent::PlayStopped => {
            c.session.notify_play_stopped(stream_id);
            // Closed once it has read the end (give it up to a few seconds).
            c.ends_at = Some(now + FILE_END_LIMIT);
            None
        }
    };
    c.queue_session_output();
    close
}

/// What writing to clients needs besides the client: the time, the sockets, the shard's
/// scratch, and where to put what the writes decide (closes, waits, timers).
struct Writer<'a, T> {
    now: Instant,
    transmit: &'a mut T,
    scratch: &'a mut FlushScratch,
    outputs: &'a mut VecDeque<Output>,
    timers: &'a mut Timers,
    stats: &'a mut ShardStats,
}

impl<T: Transmit> Writer<'_, T> {
    /// Writes what one client is owed: backlog rules first (for a viewer), then its queue
    /// as far as the socket takes it. A client whose socket is full (`blocked`) is only
    /// checked; the driver writes once the socket drains. Returns the bytes written.
    fn serve(
        &mut self,
        id: ClientId,
        c: &mut Client,
        ring: &FrameRing,
        settings: &StreamSettings,
    ) -> u64 {
        let before = c.queue.bytes_sent;
        let now = self.now;
        loop {
            if c.close_reason.is_some() {
                break;
            }
            if let Err(reason) = apply_backlog_rules(ring, settings, c, now, self.stats) {
                self.stats.lag_disconnects += 1;
                self.close(id, c, reason);
                break;
            }
            if c.blocked {
                break;
            }
            let transmit = &mut *self.transmit;
            let calls = &mut self.stats.send_calls;
            match c.queue.flush(ring, self.scratch, |iov| {
                *calls += 1;
                transmit.send(id, iov)
            }) {
                Ok(FlushOutcome::Idle) => {
                    c.behind_since = None;
                    break;
                }
                Ok(FlushOutcome::Blocked) => {
                    c.blocked = true;
                    self.outputs.push_back(Output::WaitWritable(id));
                    break;
                }
                Ok(FlushOutcome::Event(event)) => {
                    if let Some(reason) = render_event(c, event, now) {
                        self.close(id, c, reason.to_owned());
                        break;
                    }
                }
                Err(e) => {
                    self.close(id, c, format!("write failed: {e}"));
                    break;
                }
            }
        }
        if let Some((since, target)) = c.join_mark
            && c.queue.bytes_sent >= target
        {
            c.join_mark = None;
            self.stats
                .join_time
                .record(now.saturating_duration_since(since));
        }
        if c.ends_at.is_some() && !c.end_armed {
            // A stored file ended for this viewer: it is closed once it has read the end.
            c.end_armed = true;
            self.timers.arm(now + FILE_END_LINGER, Timer::FileEnd(id));
        }
        c.queue.bytes_sent - before
    }

    fn close(&mut self, id: ClientId, c: &mut Client, reason: String) {
        if c.close_reason.is_none() {
            c.close_reason = Some(reason);
            self.outputs.push_back(Output::Close(id));
        }
    }
}
