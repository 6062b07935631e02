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
use super::sockets::{SendNow, SendWhenWritable};
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

/// Serves one accepted client until it ends.
pub async fn serve(driver: Rc<ShardDriver>, id: ClientId) {
    loop {
        let step = poll_fn(|cx| poll_step(cx, &driver, id)).await;
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
                // A publisher with data always ready must not starve the shard's fan-outs.
                glommio::yield_if_needed().await;
            }
            Step::Ended(reason) => {
                driver.relay.borrow_mut().handle_read_end(id, reason);
                driver.process();
            }
            Step::Close => {
                {
                    let sockets = driver.sockets.borrow();
                    let mut relay = driver.relay.borrow_mut();
                    relay.write_goodbye(id, &mut SendNow(&sockets));
                    relay.remove_client(id, Instant::now());
                }
                driver.process();
                driver.sockets.borrow_mut().remove(id);
                driver.client_gone.notify();
                return;
            }
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
    READ_BUFFER.with_borrow_mut(|buf| {
        match Pin::new(&mut socket.stream).poll_read(cx, &mut buf[..]) {
            Poll::Ready(Ok(0)) => Poll::Ready(Step::Ended("the peer closed the connection".into())),
            Poll::Ready(Ok(n)) => Poll::Ready(Step::Read(Bytes::copy_from_slice(&buf[..n]))),
            Poll::Ready(Err(e)) => Poll::Ready(Step::Ended(read_failed(e))),
            Poll::Pending => Poll::Pending,
        }
    })
}

fn read_failed(e: io::Error) -> String {
    format!("read failed: {e}")
}
