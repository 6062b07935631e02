//! One client connection: the task that drives its `ServerSession` with a real socket.
//!
//! The task reads what the peer sends and feeds it to the session, hands the session's
//! events to the shard (connect, publish, play, media...), and writes the peer's queue.
//! For a viewer it writes only while the fan-out has handed it the socket (`blocked`): it
//! parks on writability through glommio and writes until the viewer has caught up. It also
//! keeps the clocks the protocol core does not have: the handshake deadline, the deadline
//! to start publishing or playing, a waiting viewer's patience, and a publisher's silence.
//! Whatever ends the connection, one log line says who, where, and why.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::timer::Timer;

use crate::relay::frame::FrameRing;
use crate::relay::peer::{Peer, PeerRef, Role};
use crate::relay::shard::Shard;
use crate::relay::stream::{serve_viewer, with_scratch};
use crate::relay::viewer::FlushOutcome;
use crate::rtmp::chunk::DecoderLimits;
use crate::rtmp::{ServerEvent, ServerSession, ServerSessionConfig};

/// Bytes asked of the kernel per read.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// The one read buffer of a shard's connections. A read happens only while a connection
    /// is polled, and what it got is copied out at once, so no connection holds a buffer
    /// while it waits: thousands of viewers that almost never send cost no read memory.
    /// The copy is of what peers send (a publisher's media, a viewer's acknowledgements),
    /// not of what the fan-out writes.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}
/// How often a connection that has a deadline to watch looks at it.
const TICK: Duration = Duration::from_millis(250);

enum Step {
    Read(Bytes),
    Eof,
    Failed(io::Error),
    Close(String),
    Tick,
}

fn session_config(shard: &Shard, id: u64) -> ServerSessionConfig {
    let server = &shard.config.server;
    let max_message = server.max_message_size;
    ServerSessionConfig {
        epoch: shard.now_ms() as u32,
        seed: id ^ (shard.now_ms() << 20) ^ 0x9E37_79B9_7F4A_7C15,
        chunk_size: server.chunk_size,
        limits: DecoderLimits {
            max_message_len: max_message,
            max_chunk_streams: server.max_chunk_streams as usize,
            max_buffered_bytes: (max_message as usize).saturating_mul(2),
        },
        ..ServerSessionConfig::default()
    }
}

/// Serves one accepted connection until it ends.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, addr: SocketAddr) {
    let id = shard.next_conn_id();
    let viewer_cfg = &shard.config.viewer;
    if let Err(e) = stream.set_nodelay(viewer_cfg.tcp_nodelay) {
        tracing::debug!(peer = %addr, "TCP_NODELAY: {e}");
    }
    if let Some(size) = viewer_cfg.send_buffer() {
        set_send_buffer(stream.as_raw_fd(), size);
    }
    let session = ServerSession::new(session_config(&shard, id));
    let peer = Rc::new(RefCell::new(Peer::new(
        id,
        addr,
        stream.as_raw_fd(),
        session,
    )));
    shard.connections.borrow_mut().insert(id, peer.clone());
    tracing::debug!(shard = shard.id, peer = %addr, "connection accepted");
    let reason = drive(&shard, &peer, stream).await;
    let ((role, name), sent, dropped) = {
        let p = peer.borrow();
        (p.describe(), p.queue.bytes_sent, p.queue.dropped_frames)
    };
    shard.leave(&peer);
    shard.connections.borrow_mut().remove(&id);
    shard.connection_closed.notify();
    tracing::info!(shard = shard.id, peer = %addr, role, stream = %name, bytes_sent = sent, dropped_frames = dropped, "connection closed: {reason}");
}

fn set_send_buffer(fd: i32, size: usize) {
    let value = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn drive(shard: &Rc<Shard>, peer: &PeerRef, mut stream: TcpStream) -> String {
    let accepted = Instant::now();
    let mut tick: Option<Pin<Box<Timer>>> = None;
    let empty_ring = FrameRing::new(0);
    loop {
        let step = poll_fn(|cx| poll_step(cx, peer, &mut stream, &mut tick, &empty_ring)).await;
        match step {
            Step::Read(bytes) => {
                let fed = peer.borrow_mut().session.feed(bytes);
                // Events the session produced before the error still count (a publisher's
                // last frames), then the error closes the connection.
                handle_events(shard, peer);
                if let Err(e) = fed {
                    return format!("protocol error: {e}");
                }
                write_now(peer, &empty_ring);
                // A publisher with data always ready must not starve the shard's fan-outs.
                glommio::yield_if_needed().await;
            }
            Step::Eof => return "the peer closed the connection".into(),
            Step::Failed(e) => return format!("read failed: {e}"),
            Step::Close(reason) => {
                // Best effort: the peer's own queued bytes (the rest of a message begun, a
                // goodbye onStatus) go if the socket takes them now. Not through the
                // fan-out's path: that writes nothing to a peer being closed.
                peer.borrow_mut().blocked = false;
                write_own_bytes(peer, &empty_ring);
                return reason;
            }
            Step::Tick => {
                if let Some(reason) = check_deadlines(shard, peer, accepted) {
                    let mut p = peer.borrow_mut();
                    if let Role::Viewer { stream_id, .. } = p.role {
                        p.session.reject_play(
                            stream_id,
                            crate::rtmp::command::status::PLAY_STREAM_NOT_FOUND,
                            &reason,
                        );
                        p.queue_session_output();
                    }
                    drop(p);
                    peer.borrow_mut().close(reason);
                }
            }
        }
    }
}

fn needs_tick(peer: &Peer) -> bool {
    match &peer.role {
        Role::Idle | Role::Publisher { .. } => true,
        Role::Viewer { waiting_since, .. } => waiting_since.is_some(),
        Role::Recording { .. } => false,
    }
}

fn check_deadlines(shard: &Shard, peer: &PeerRef, accepted: Instant) -> Option<String> {
    let server = &shard.config.server;
    let (handshake_done, idle) = {
        let p = peer.borrow();
        (
            p.session.is_handshake_complete(),
            matches!(p.role, Role::Idle),
        )
    };
    if !handshake_done && accepted.elapsed() > server.handshake_timeout() {
        return Some(format!(
            "handshake not completed within {} ms",
            server.handshake_timeout_ms
        ));
    }
    if idle && accepted.elapsed() > server.idle_connection_timeout() {
        return Some(format!(
            "neither published nor played within {} ms",
            server.idle_connection_timeout_ms
        ));
    }
    shard
        .publisher_idle(peer)
        .or_else(|| shard.viewer_wait_expired(peer))
}

fn poll_step(
    cx: &mut Context<'_>,
    peer: &PeerRef,
    stream: &mut TcpStream,
    tick: &mut Option<Pin<Box<Timer>>>,
    empty_ring: &FrameRing,
) -> Poll<Step> {
    {
        let mut p = peer.borrow_mut();
        if !p.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            p.waker = Some(cx.waker().clone());
        }
        if let Some(reason) = p.close_reason.clone() {
            return Poll::Ready(Step::Close(reason));
        }
    }
    if peer.borrow().blocked {
        if let Err(e) = write_blocked(cx, peer, stream, empty_ring) {
            return Poll::Ready(Step::Close(format!("write failed: {e}")));
        }
        if let Some(reason) = peer.borrow().close_reason.clone() {
            return Poll::Ready(Step::Close(reason));
        }
    }
    let read = READ_BUFFER.with_borrow_mut(|buf| {
        match Pin::new(&mut *stream).poll_read(cx, &mut buf[..]) {
            Poll::Ready(Ok(0)) => Some(Step::Eof),
            Poll::Ready(Ok(n)) => Some(Step::Read(Bytes::copy_from_slice(&buf[..n]))),
            Poll::Ready(Err(e)) => Some(Step::Failed(e)),
            Poll::Pending => None,
        }
    });
    if let Some(step) = read {
        return Poll::Ready(step);
    }
    if needs_tick(&peer.borrow()) {
        let timer = tick.get_or_insert_with(|| Box::pin(Timer::new(TICK)));
        if timer.as_mut().poll(cx).is_ready() {
            *tick = None;
            return Poll::Ready(Step::Tick);
        }
    }
    Poll::Pending
}

/// Writes what the peer has queued, now, without waiting (after its session produced
/// output). A viewer goes through the same path as the fan-out, backlog rules included.
pub(crate) fn write_now(peer: &PeerRef, empty_ring: &FrameRing) {
    let stream = match &peer.borrow().role {
        Role::Viewer { stream, .. } => Some(stream.clone()),
        _ => None,
    };
    if let Some(stream) = stream {
        let s = stream.borrow();
        serve_viewer(&s.ring, &s.settings, peer, Instant::now());
        return;
    }
    write_own_bytes(peer, empty_ring);
}

/// Writes the peer's own queued bytes (session output; for a viewer, also the rest of a
/// frame begun), without waiting and without any ring frame: `empty_ring` holds none.
fn write_own_bytes(peer: &PeerRef, empty_ring: &FrameRing) {
    let mut p = peer.borrow_mut();
    if p.blocked {
        return;
    }
    let fd = p.fd;
    let outcome = with_scratch(|scratch| {
        p.queue.flush(empty_ring, scratch, |iov| {
            crate::net::vectored::send_vectored(fd, iov)
        })
    });
    match outcome {
        Ok(FlushOutcome::Blocked) => p.blocked = true,
        Ok(_) => {}
        Err(e) => p.close(format!("write failed: {e}")),
    }
}

/// The socket was full. Write with one vectored `sendmsg` while it takes data; when it is
/// full again, offer the first buffer to glommio's `poll_write`, which registers this task
/// for writability (and writes, if the socket drained meanwhile).
fn write_blocked(
    cx: &mut Context<'_>,
    peer: &PeerRef,
    stream: &mut TcpStream,
    empty_ring: &FrameRing,
) -> io::Result<()> {
    let local = match &peer.borrow().role {
        Role::Viewer { stream, .. } => Some(stream.clone()),
        _ => None,
    };
    let guard = local.as_ref().map(|s| s.borrow());
    let ring = guard.as_ref().map_or(empty_ring, |s| &s.ring);
    loop {
        let mut p = peer.borrow_mut();
        let fd = p.fd;
        let fast = with_scratch(|scratch| {
            p.queue.flush(ring, scratch, |iov| {
                crate::net::vectored::send_vectored(fd, iov)
            })
        })?;
        let outcome = match fast {
            FlushOutcome::Blocked => with_scratch(|scratch| {
                p.queue.flush(ring, scratch, |iov| {
                    let Some(first) = iov.first() else {
                        return Ok(0);
                    };
                    // SAFETY: the iovec was just built from a `Bytes` owned by the queue or
                    // the ring, both borrowed for the duration of this flush.
                    let first = unsafe {
                        std::slice::from_raw_parts(first.iov_base as *const u8, first.iov_len)
                    };
                    match Pin::new(&mut *stream).poll_write(cx, first) {
                        Poll::Ready(result) => result,
                        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                    }
                })
            })?,
            other => other,
        };
        match outcome {
            FlushOutcome::Idle => {
                p.blocked = false;
                p.behind_since = None;
                return Ok(());
            }
            // Registered for writability: this task is woken when the socket drains.
            FlushOutcome::Blocked => return Ok(()),
            FlushOutcome::Event(event) => {
                drop(p);
                crate::relay::stream::render_event(peer, event);
            }
        }
    }
}

/// Hands the session's events to the shard.
fn handle_events(shard: &Rc<Shard>, peer: &PeerRef) {
    loop {
        let event = peer.borrow_mut().session.poll_event();
        let Some(event) = event else { break };
        match event {
            ServerEvent::HandshakeComplete { digest } => {
                tracing::debug!(shard = shard.id, peer = %peer.borrow().addr, digest, "handshake complete");
            }
            ServerEvent::ConnectRequested { app, tc_url, .. } => {
                let mut p = peer.borrow_mut();
                if shard.config.app(&app).is_some() {
                    p.session.accept_connect();
                    tracing::debug!(shard = shard.id, peer = %p.addr, app, tc_url = tc_url.as_deref().unwrap_or(""), "connected");
                } else {
                    p.session
                        .reject_connect(&format!("no application named {app:?}"));
                    let addr = p.addr;
                    p.queue_session_output();
                    p.close(format!("connect refused: no application named {app:?}"));
                    tracing::info!(shard = shard.id, peer = %addr, app, "connect refused: unknown application");
                }
            }
            ServerEvent::PublishRequested {
                stream_id,
                stream_key,
                ..
            } => {
                if !matches!(peer.borrow().role, Role::Idle) {
                    peer.borrow_mut()
                        .close("publish on a connection that already publishes or plays");
                    continue;
                }
                shard.publish(peer, stream_id, &stream_key);
            }
            ServerEvent::PlayRequested {
                stream_id,
                stream_key,
                ..
            } => {
                if matches!(peer.borrow().role, Role::Publisher { .. }) {
                    peer.borrow_mut()
                        .close("play on a connection that publishes");
                    continue;
                }
                if matches!(
                    peer.borrow().role,
                    Role::Viewer { .. } | Role::Recording { .. }
                ) {
                    // play2 / a new play switches streams: leave the old one first.
                    shard.leave(peer);
                }
                shard.play(peer, stream_id, &stream_key);
            }
            ServerEvent::Media {
                kind,
                timestamp,
                payload,
                ..
            } => {
                let name = publishing(peer);
                if let Some(name) = name {
                    shard.ingest_media(&name, kind, timestamp, payload);
                }
            }
            ServerEvent::Metadata {
                timestamp, payload, ..
            } => {
                if let Some(name) = publishing(peer) {
                    shard.ingest_data(&name, timestamp, payload, true);
                }
            }
            ServerEvent::Data {
                timestamp, payload, ..
            } => {
                if let Some(name) = publishing(peer) {
                    shard.ingest_data(&name, timestamp, payload, false);
                }
            }
            ServerEvent::ReceiveAudio { enabled, .. } => peer.borrow_mut().queue.set_audio(enabled),
            ServerEvent::ReceiveVideo { enabled, .. } => peer.borrow_mut().queue.set_video(enabled),
            ServerEvent::Pause { paused, .. } => {
                // A paused live viewer stops receiving video; on resume it continues live
                // from the next keyframe. Audio and data are small and keep it in sync.
                peer.borrow_mut().queue.set_video(!paused);
            }
            ServerEvent::Seek { .. } => {}
            ServerEvent::StreamClosed { .. } => shard.leave(peer),
        }
    }
    peer.borrow_mut().queue_session_output();
}

fn publishing(peer: &PeerRef) -> Option<crate::relay::directory::StreamName> {
    match &peer.borrow().role {
        Role::Publisher { name, .. } => Some(name.clone()),
        _ => None,
    }
}
