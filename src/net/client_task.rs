//! One client connection's task: it reads the socket and feeds the relay, and writes when
//! the relay is waiting for the socket to drain.
//!
//! The task reads what the peer sends into its shard's one read buffer, copies what came
//! into a `Bytes` (so no idle connection holds a buffer), and hands it to the relay
//! (`Shard::handle_input`), which answers through the same socket table. When the relay
//! found the socket full (`Output::WaitWritable`), this task parks on writability through
//! glommio and writes until the client has caught up. When the relay closes the client
//! (`Output::Close`), the task writes the client's last queued bytes if the socket takes
//! them, the relay forgets the client, and the socket is closed: in that order, so nothing
//! can be written to a socket after it is gone.
//!
//! An RTMPS client's task reads ciphertext, and its TLS session (`tls.rs`) turns it into
//! the plaintext the relay gets; the task also finishes writing TLS records the socket did
//! not take at once, waiting for writability like a full plain socket.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::AsyncRead;
use glommio::net::TcpStream;

use super::shard_driver::ShardDriver;
use super::sockets::{FdWriter, PollWriter, SendNow, SendWhenWritable};
use super::tls::Received;
use crate::config::ViewerConfig;
use crate::performance::READ_SIZE;
use crate::relay::client::ClientId;

thread_local! {
    /// The one read buffer of a shard's connections. A read happens only while a connection
    /// is polled, and what it got is copied out at once, so no connection holds a buffer
    /// while it waits: thousands of viewers that almost never send cost no read memory.
    /// The copy is of what peers send (a publisher's media, a viewer's acknowledgements),
    /// not of what the fan-out writes.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

enum Step {
    Read(Bytes),
    Ended(String),
    Close,
}

/// Gives a viewer's socket the viewer options (`viewer.tcp_nodelay`,
/// `viewer.send_buffer_bytes`); publishers keep the kernel's defaults.
pub fn viewer_socket_options(stream: &TcpStream, viewer: &ViewerConfig) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Err(e) = stream.set_nodelay(viewer.tcp_nodelay) {
        tracing::warn!(%peer, "cannot set TCP_NODELAY on a viewer's socket: {e}");
    }
    if let Some(size) = viewer.send_buffer()
        && let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(size)
    {
        tracing::warn!(%peer, size, "cannot set SO_SNDBUF on a viewer's socket: {e}");
    }
}

/// Serves one accepted client until it ends. `first` is what admission read of the
/// connection already (after any PROXY header): the client's first bytes.
pub async fn serve(driver: Rc<ShardDriver>, id: ClientId, first: Bytes) {
    if !first.is_empty()
        && let Some(step) = first_step(&driver, id, &first)
        && take_step(&driver, id, step).is_some()
    {
        return;
    }
    loop {
        let step = poll_fn(|cx| poll_step(cx, &driver, id)).await;
        let yield_after = matches!(step, Step::Read(_));
        if take_step(&driver, id, step).is_some() {
            return;
        }
        if yield_after {
            // A publisher with data always ready must not starve the shard's fan-outs.
            glommio::yield_if_needed().await;
        }
    }
}

/// The first bytes admission read: plaintext as they are, or through the TLS session.
fn first_step(driver: &Rc<ShardDriver>, id: ClientId, first: &[u8]) -> Option<Step> {
    let sockets = driver.sockets.borrow();
    let socket = sockets.get(id)?;
    let Some(tls) = &socket.tls else {
        return Some(Step::Read(Bytes::copy_from_slice(first)));
    };
    let mut tls = tls.borrow_mut();
    let mut plain = Vec::new();
    let step = match tls.receive(first, &mut plain) {
        Err(e) => Step::Ended(e),
        Ok(Received::Closed) if plain.is_empty() => Step::Ended("the peer closed TLS".into()),
        Ok(_) if plain.is_empty() => return flush_now(&mut tls, socket),
        Ok(_) => Step::Read(Bytes::from(plain)),
    };
    flush_now(&mut tls, socket).or(Some(step))
}

/// Writes the TLS session's records without waiting; what is left the task's next poll
/// writes when the socket can take it.
fn flush_now(tls: &mut super::tls::TlsStream, socket: &super::sockets::Socket) -> Option<Step> {
    match tls.flush(&mut FdWriter(&socket.stream)) {
        Ok(true) => None,
        Ok(false) => {
            socket.wake();
            None
        }
        Err(e) => Some(Step::Ended(format!("TLS write failed: {e}"))),
    }
}

/// Carries out one step; Some(()) when the client is gone.
fn take_step(driver: &Rc<ShardDriver>, id: ClientId, step: Step) -> Option<()> {
    match step {
        Step::Read(bytes) => {
            {
                let sockets = driver.sockets.borrow();
                driver.relay.borrow_mut().handle_input(
                    id,
                    bytes,
                    Instant::now(),
                    &mut SendNow(&sockets),
                );
            }
            driver.process();
            None
        }
        Step::Ended(reason) => {
            driver.relay.borrow_mut().handle_read_end(id, reason);
            driver.process();
            None
        }
        Step::Close => {
            {
                let sockets = driver.sockets.borrow();
                let mut relay = driver.relay.borrow_mut();
                relay.write_goodbye(id, &mut SendNow(&sockets));
                relay.remove_client(id, Instant::now());
                if let Some(socket) = sockets.get(id)
                    && let Some(tls) = &socket.tls
                {
                    let mut tls = tls.borrow_mut();
                    tls.close();
                    let _ = tls.flush(&mut FdWriter(&socket.stream));
                }
            }
            driver.process();
            driver.sockets.borrow_mut().remove(id);
            driver.client_gone.notify();
            Some(())
        }
    }
}

fn poll_step(cx: &mut Context<'_>, driver: &Rc<ShardDriver>, id: ClientId) -> Poll<Step> {
    let mut sockets = driver.sockets.borrow_mut();
    let Some(socket) = sockets.get_mut(id) else {
        return Poll::Ready(Step::Close);
    };
    if !socket
        .waker
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()))
    {
        socket.waker = Some(cx.waker().clone());
    }
    if socket.close.get() {
        return Poll::Ready(Step::Close);
    }
    if socket.want_write.get() {
        let mut relay = driver.relay.borrow_mut();
        // Until the client has caught up, or glommio will wake this task when the socket
        // can take more (a write that only came back short registers nothing).
        loop {
            let mut transmit = SendWhenWritable {
                cx,
                socket,
                registered: false,
            };
            relay.write_blocked(id, Instant::now(), &mut transmit);
            if !relay.is_blocked(id) || transmit.registered {
                break;
            }
        }
        socket.want_write.set(relay.is_blocked(id));
        drop(relay);
        drop(sockets);
        driver.process();
        sockets = driver.sockets.borrow_mut();
        let Some(socket) = sockets.get_mut(id) else {
            return Poll::Ready(Step::Close);
        };
        if socket.close.get() {
            return Poll::Ready(Step::Close);
        }
    }
    let Some(socket) = sockets.get_mut(id) else {
        return Poll::Ready(Step::Close);
    };
    if socket.tls.is_some() {
        return poll_tls(cx, socket);
    }
    READ_BUFFER.with_borrow_mut(|buf| {
        match Pin::new(&mut socket.stream).poll_read(cx, &mut buf[..]) {
            Poll::Ready(Ok(0)) => Poll::Ready(Step::Ended("the peer closed the connection".into())),
            Poll::Ready(Ok(n)) => Poll::Ready(Step::Read(Bytes::copy_from_slice(&buf[..n]))),
            Poll::Ready(Err(e)) => Poll::Ready(Step::Ended(read_failed(e))),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// An RTMPS client: writes the records waiting (registering for writability if the socket
/// is full), then reads ciphertext until some plaintext comes out of it.
fn poll_tls(cx: &mut Context<'_>, socket: &mut super::sockets::Socket) -> Poll<Step> {
    let Some(tls) = socket.tls.as_mut() else {
        return Poll::Ready(Step::Close);
    };
    let tls = tls.get_mut();
    loop {
        if tls.wants_write() {
            let mut out = PollWriter {
                stream: &mut socket.stream,
                cx,
                registered: false,
            };
            if let Err(e) = tls.flush(&mut out) {
                return Poll::Ready(Step::Ended(format!("TLS write failed: {e}")));
            }
        }
        let read = READ_BUFFER.with_borrow_mut(|buf| {
            match Pin::new(&mut socket.stream).poll_read(cx, &mut buf[..]) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err("the peer closed the connection".to_owned())),
                Poll::Ready(Ok(n)) => {
                    let mut plain = Vec::new();
                    Poll::Ready(match tls.receive(&buf[..n], &mut plain) {
                        Ok(Received::Closed) if plain.is_empty() => {
                            Err("the peer closed TLS".to_owned())
                        }
                        Ok(_) => Ok(plain),
                        Err(e) => Err(e),
                    })
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(read_failed(e))),
                Poll::Pending => Poll::Pending,
            }
        });
        match read {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(reason)) => {
                // A TLS alert for the client, if the socket takes it.
                let _ = tls.flush(&mut FdWriter(&socket.stream));
                return Poll::Ready(Step::Ended(reason));
            }
            // Handshake records only: answer them and read on.
            Poll::Ready(Ok(plain)) if plain.is_empty() => continue,
            Poll::Ready(Ok(plain)) => {
                if tls.wants_write() {
                    let mut out = PollWriter {
                        stream: &mut socket.stream,
                        cx,
                        registered: false,
                    };
                    if let Err(e) = tls.flush(&mut out) {
                        return Poll::Ready(Step::Ended(format!("TLS write failed: {e}")));
                    }
                }
                return Poll::Ready(Step::Read(Bytes::from(plain)));
            }
        }
    }
}

fn read_failed(e: io::Error) -> String {
    format!("read failed: {e}")
}
