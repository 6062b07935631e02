//! Listening sockets, and the accept loop each shard runs on its own.
//!
//! Every shard binds the ingest port with SO_REUSEPORT, so each has its own socket on it
//! and the kernel spreads new connections over them: no shard hands connections to
//! another, and a connection lives its whole life on the core that accepted it.
//!
//! [`bind`] also sets SO_REUSEADDR (glommio's own bind sets SO_REUSEPORT only): the
//! connections a relay closed itself linger in TIME_WAIT on its port, and without it a
//! restarted relay could not bind that port again for a minute.

use std::rc::Rc;
use std::time::Instant;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use bytes::Bytes;
use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Socket, Type};

use super::admission::{self, Port};
use super::client_task::serve;
use super::shard_driver::ShardDriver;
use crate::relay::stats::RejectReason;

/// A listening socket on `addr` for this executor, with SO_REUSEPORT and SO_REUSEADDR.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a listening TCP socket we own and hand over whole.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    /// RTMP inside TLS (`server.tls_listen`).
    Rtmps,
    /// The media HTTP listener: HTTP-FLV and WebSocket-FLV.
    Http,
}

/// Accepts until the shard starts shutting down.
pub async fn accept_loop(driver: Rc<ShardDriver>, listener: TcpListener, protocol: Protocol) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            driver.shutting_down.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = driver.id, "accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(addr) = stream.peer_addr() else {
            continue;
        };
        // RTMP and RTMPS connections are admitted once their first bytes are in (a PROXY
        // header may change who the client is); see admission.rs.
        match protocol {
            Protocol::Rtmp => admission::start(driver.clone(), stream, addr, Port::Rtmp),
            Protocol::Rtmps => admission::start(driver.clone(), stream, addr, Port::Rtmps),
            Protocol::Http => accept_http(&driver, stream, addr),
        }
    }
    tracing::debug!(shard = driver.id, "stopped accepting");
}

/// An HTTP-FLV connection: no PROXY protocol there, so it is admitted at once.
fn accept_http(driver: &Rc<ShardDriver>, stream: TcpStream, addr: SocketAddr) {
    let slot = match driver.admission.per_ip.acquire(addr.ip()) {
        Ok(slot) => slot,
        Err(open) => {
            driver
                .relay
                .borrow_mut()
                .count_rejection(RejectReason::TooManyPerIp);
            tracing::warn!(shard = driver.id, peer = %addr, open, "connection refused: server.max_connections_per_ip reached for this address");
            return;
        }
    };
    // Refused (shard full, or shutting down): dropping the stream closes it.
    let Some(id) = driver.relay.borrow_mut().accept_http(addr, Instant::now()) else {
        return;
    };
    driver
        .sockets
        .borrow_mut()
        .insert_with(id, stream, None, Some(slot));
    glommio::spawn_local(serve(driver.clone(), id, Bytes::new())).detach();
    driver.process();
}
