//! One connected encoder or player, as the relay sees it.
//!
//! A [`Client`] lives in its shard's slab and is addressed by [`ClientId`]; nothing else
//! holds it. It has the protocol session, the write queue every byte to it goes through,
//! and what it does (its [`Role`]). Its socket is not here: the driver keeps that beside it,
//! under the same id (`src/net/sockets.rs`), and the relay reaches it only through
//! [`Transmit`](super::write_queue::Transmit). When a client leaves, its id is gone from
//! both tables at once, and a reused slot answers to a new generation only, so nothing the
//! relay still has in flight for the old client (a timer, a file read) can reach a new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::directory::{ConnId, StreamClock, StreamName};
use super::http_viewer::HttpViewer;
use super::output::OutputFormat;
use super::rate::RateWindow;
use super::slab::Key;
use super::stream::StreamId;
use super::vod_download::{Download, DownloadRequest};
use super::write_queue::WriteQueue;
use crate::access::query::QueryArgs;
use crate::rtmp::{ClientSession, ServerSession};

/// A client's handle in its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) Key);

impl ClientId {
    /// The slab slot, for the driver's socket table.
    pub fn slot(self) -> usize {
        self.0.slot()
    }
}

/// What a client does on its stream.
#[derive(Debug)]
pub enum Role {
    /// Connected (or still handshaking), neither publishing nor playing yet.
    Idle,
    Publisher {
        name: StreamName,
        stream_id: u32,
        clock: Arc<StreamClock>,
    },
    /// Plays a stream: a live one, or a stored file (a stream of its own, fed by a file
    /// source).
    Viewer {
        name: StreamName,
        stream_id: u32,
        stream: StreamId,
        /// Set while it waits for the publisher to arrive.
        waiting_since: Option<Instant>,
    },
}

/// What a client is, for the snapshot and the closing log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Client,
    Publisher,
    Viewer,
    FileViewer,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Client => "client",
            RoleKind::Publisher => "publisher",
            RoleKind::Viewer => "viewer",
            RoleKind::FileViewer => "recording viewer",
        }
    }
}

pub struct Client {
    /// The connection's id in the whole process (shard id in the high bits).
    pub conn: ConnId,
    pub addr: SocketAddr,
    pub accepted: Instant,
    pub session: ServerSession,
    pub queue: WriteQueue,
    pub role: Role,
    /// The socket is full: the driver waits for it to drain and calls
    /// `Shard::write_blocked`; the fan-out leaves this client alone meanwhile.
    pub blocked: bool,
    /// Set once the relay decides this client must go; the driver writes what is queued
    /// (best effort) and closes.
    pub close_reason: Option<String>,
    /// Since when this viewer has been over its backlog limits.
    pub behind_since: Option<Instant>,
    /// A stored file ended for this viewer: when it is closed, once it has read the end.
    pub ends_at: Option<Instant>,
    /// What the player said it buffers (Set Buffer Length), in ms; 0 until it says.
    pub buffer_ms: u32,
    pub(crate) end_armed: bool,
    /// What this client last was, for the snapshot and the closing log line.
    pub last_role: (RoleKind, Option<StreamName>),
    /// A viewer just started: since when, and the `bytes_sent` at which its stream's first
    /// frame is on the wire (its join time is recorded then).
    pub join_mark: Option<(Instant, u64)>,
    /// Where `join_mark` will point, set by `LocalStream::start_viewer`.
    pub(crate) join_target: u64,
    /// Samples of its byte counters, for its bitrates.
    pub rate: RateWindow,
    /// Set for a client of the media HTTP listener (HTTP-FLV, WebSocket-FLV); its
    /// `session` then stays unused.
    pub http: Option<Box<HttpViewer>>,
    /// What its `connect` said, for access control's callbacks.
    pub connect: ConnectInfo,
    /// The query arguments of its last publish or play (with its tcUrl's), which the
    /// `_done` callbacks repeat.
    pub args: QueryArgs,
    /// A callback decides what happens next: its input waits here meanwhile.
    pub pending: Option<Box<PendingCallback>>,
    /// A publisher's reading pace (how late its media is read).
    pub ingest_pace: super::ingest_pace::IngestPace,
    /// Set for a connection this server opened to push a stream to another server
    /// (`forwarder.rs`); its `session` then stays unused and this one speaks instead.
    pub forward: Option<Box<ForwardLink>>,
    /// An HTTP client downloading a stored file (`vod_download.rs`).
    pub download: Option<Box<Download>>,
}

/// The client side of a push: our session with the target, and which forwarder it serves.
pub struct ForwardLink {
    pub session: ClientSession,
    pub stream: StreamName,
    /// The forwarder's place in its stream's list, and the attempt this link is.
    pub index: usize,
    pub attempt: u64,
    /// The target said the push would make a relay loop.
    pub loop_refused: bool,
}

/// What a client's `connect` command said about it.
#[derive(Debug, Default)]
pub struct ConnectInfo {
    pub tc_url: String,
    pub flash_ver: String,
    pub page_url: String,
    /// The relays behind this client when it is another relay's pull or push; a pull this
    /// client starts continues the path.
    pub relay_path: crate::rtmp::RelayPath,
}

/// A client waiting for the answer of an access-control callback.
#[derive(Debug)]
pub struct PendingCallback {
    /// Matches the answer to the question (a client may ask again after an answer).
    pub ticket: u64,
    /// What the client asked for, done or refused when the answer comes.
    pub action: PendingAction,
    /// Input that arrived meanwhile, fed to the client in order once the answer is in.
    pub buffered: Vec<Bytes>,
    pub buffered_len: usize,
}

/// The request a callback's answer decides.
#[derive(Debug)]
pub enum PendingAction {
    Connect,
    Publish {
        stream_id: u32,
        stream: String,
    },
    Play {
        stream_id: u32,
        stream: String,
        /// The start and duration the client asked for (stored files).
        range: (f64, f64),
    },
    /// An HTTP-FLV or WebSocket-FLV play, with what its answer starts with.
    HttpPlay {
        app: String,
        stream: String,
        format: OutputFormat,
        response_head: Bytes,
        head_only: bool,
    },
    /// A stored file's download over HTTP (`/vod/...`).
    HttpVod(DownloadRequest),
}

impl Client {
    pub fn new(
        conn: ConnId,
        addr: SocketAddr,
        accepted: Instant,
        session: ServerSession,
    ) -> Client {
        Client {
            conn,
            addr,
            accepted,
            session,
            queue: WriteQueue::new(0),
            role: Role::Idle,
            blocked: false,
            close_reason: None,
            behind_since: None,
            ends_at: None,
            buffer_ms: 0,
            end_armed: false,
            last_role: (RoleKind::Client, None),
            join_mark: None,
            ingest_pace: Default::default(),
            join_target: 0,
            rate: RateWindow::default(),
            http: None,
            connect: ConnectInfo::default(),
            args: QueryArgs::default(),
            pending: None,
            forward: None,
            download: None,
        }
    }

    /// Gives the client its role, remembering it for the closing log line.
    pub fn set_role(&mut self, role: Role, kind: RoleKind) {
        match &role {
            Role::Idle => {}
            Role::Publisher { name, .. } | Role::Viewer { name, .. } => {
                self.last_role = (kind, Some(name.clone()));
            }
        }
        self.role = role;
    }

    /// The viewer started at `now`: its join time runs until its first frame is written.
    pub fn mark_join(&mut self, now: Instant) {
        self.join_mark = Some((now, self.join_target));
    }

    /// Still before its first request (HTTP) or its handshake (RTMP).
    pub fn is_handshaking(&self) -> bool {
        if let Some(f) = &self.forward {
            return !f.session.is_handshake_complete();
        }
        match &self.http {
            Some(_) => matches!(self.role, Role::Idle) && self.download.is_none(),
            None => !self.session.is_handshake_complete(),
        }
    }

    /// Bytes received from the client.
    pub fn bytes_received(&self) -> u64 {
        if let Some(f) = &self.forward {
            return f.session.bytes_received();
        }
        match &self.http {
            Some(h) => h.bytes_received,
            None => self.session.bytes_received(),
        }
    }

    /// Moves what the session wants to send into the write queue (RTMP clients only: an
    /// HTTP client's bytes are queued by the relay itself).
    pub fn queue_session_output(&mut self) {
        if self.http.is_some() {
            return;
        }
        if let Some(f) = &mut self.forward {
            while let Some(bytes) = f.session.poll_transmit() {
                self.queue.push_pending(bytes);
            }
            return;
        }
        while let Some(bytes) = self.session.poll_transmit() {
            self.queue.push_pending(bytes);
        }
    }

    /// The stream this client plays, if it plays one.
    pub fn playing(&self) -> Option<StreamId> {
        match &self.role {
            Role::Viewer { stream, .. } => Some(*stream),
            _ => None,
        }
    }

    /// The stream whose frames this viewer is sent: the one it plays, once started. A
    /// viewer still waiting for a publisher has nothing of its stream's ring yet (what is
    /// there is a previous publisher's, up to its unpublish).
    pub fn receiving(&self) -> Option<StreamId> {
        match &self.role {
            Role::Viewer {
                stream,
                waiting_since: None,
                ..
            } => Some(*stream),
            _ => None,
        }
    }

    /// The stream this client publishes, if it publishes one.
    pub fn publishing(&self) -> Option<&StreamName> {
        match &self.role {
            Role::Publisher { name, .. } => Some(name),
            _ => None,
        }
    }
}
