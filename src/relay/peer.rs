//! One connected encoder or player, as the relay sees it.
//!
//! A [`Peer`] is shared (`Rc<RefCell<..>>`, never across threads) between the task that
//! reads its socket (`src/net/connection.rs`) and the fan-out of the stream it watches
//! (`stream.rs`). It holds the protocol session, the write queue every byte to this peer
//! goes through, and the few flags the two sides use to hand the socket to each other:
//! the fan-out writes while the socket takes everything; once a write comes back short it
//! sets `blocked` and wakes the connection task, which waits for the socket to drain and
//! writes until the peer has caught up. Exactly one of them writes at any time, so bytes
//! never interleave mid-message.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use super::directory::{ConnId, StreamClock, StreamName};
use super::stream::LocalStream;
use super::viewer::ViewerQueue;
use crate::rtmp::ServerSession;

/// What a peer does on its stream.
pub enum Role {
    /// Connected (or still handshaking), neither publishing nor playing yet.
    Idle,
    Publisher {
        name: StreamName,
        stream_id: u32,
        clock: Arc<StreamClock>,
    },
    /// Plays a pre-recorded file (`src/net/recording.rs`), not a live stream.
    Recording { name: StreamName, stream_id: u32 },
    Viewer {
        name: StreamName,
        stream_id: u32,
        stream: Rc<RefCell<LocalStream>>,
        /// Set while it waits for the publisher to arrive.
        waiting_since: Option<Instant>,
    },
}

pub struct Peer {
    pub id: ConnId,
    pub addr: SocketAddr,
    pub fd: RawFd,
    pub session: ServerSession,
    pub queue: ViewerQueue,
    pub role: Role,
    /// The socket is full; the connection task owns writing until the queue drains.
    pub blocked: bool,
    /// Set once the relay decides this peer must go; the connection task writes what is
    /// queued (best effort) and closes.
    pub close_reason: Option<String>,
    /// Since when this viewer has been over its backlog limits.
    pub behind_since: Option<Instant>,
    /// The connection task's waker, for the fan-out and the shard to get its attention.
    pub waker: Option<Waker>,
    /// What this peer last was ("publisher live/key"), for the log line when it closes.
    pub last_role: Option<(&'static str, StreamName)>,
}

pub type PeerRef = Rc<RefCell<Peer>>;

impl Peer {
    pub fn new(id: ConnId, addr: SocketAddr, fd: RawFd, session: ServerSession) -> Peer {
        Peer {
            id,
            addr,
            fd,
            session,
            queue: ViewerQueue::new(0),
            role: Role::Idle,
            blocked: false,
            close_reason: None,
            behind_since: None,
            waker: None,
            last_role: None,
        }
    }

    /// Gives the peer its role, remembering it for the closing log line.
    pub fn set_role(&mut self, role: Role) {
        let label = match &role {
            Role::Idle => None,
            Role::Publisher { name, .. } => Some(("publisher", name)),
            Role::Viewer { name, .. } => Some(("viewer", name)),
            Role::Recording { name, .. } => Some(("recording viewer", name)),
        };
        if let Some((what, name)) = label {
            self.last_role = Some((what, name.clone()));
        }
        self.role = role;
    }

    /// Moves what the session wants to send into the write queue.
    pub fn queue_session_output(&mut self) {
        while let Some(bytes) = self.session.poll_transmit() {
            self.queue.push_pending(bytes);
        }
    }

    /// Asks the connection task to close this peer (the first reason wins).
    pub fn close(&mut self, reason: impl Into<String>) {
        if self.close_reason.is_none() {
            self.close_reason = Some(reason.into());
        }
        self.wake();
    }

    pub fn wake(&mut self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }

    /// The role and stream this peer had (or has), for logs.
    pub fn describe(&self) -> (&'static str, String) {
        match &self.last_role {
            Some((what, name)) => (what, name.to_string()),
            None => ("client", String::new()),
        }
    }
}
