//! Push links: the outbound TCP connections that carry a stream to another server.
//!
//! The relay decides when to try a push target (`src/relay/forwarder.rs`) and says so with
//! `Output::ForwardConnect`; this module carries that out. It resolves the target's host
//! and connects with a timeout (`outbound.rs`, as an edge's pull does), and hands the
//! socket to the relay (`Shard::forward_connected`), which makes the link a client of the
//! shard. From then on the link is served like any other client, by `client_task::serve`:
//! the same socket table, the same writes of shared buffers, the same wait on a full
//! socket and the same close. What differs lives in the relay: the link speaks the client
//! role of the protocol to the target and, once the target accepted the publish, plays the
//! stream as a viewer.
//!
//! An `rtmps://` target's socket carries a client TLS session (`outbound.rs`), checked
//! against `[server] tls_ca_file` or the system's CAs and driven by `tls.rs`: the client's
//! task writes its handshake and the relay's plaintext goes through it, as for an RTMPS
//! client.
//!
//! A failed resolve or connect goes back to the relay (`Shard::forward_connect_failed`),
//! which logs it with the target and waits its backoff before the next attempt. Nothing
//! here retries on its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::outbound::{self, TrustedCas};
use super::shard_driver::ShardDriver;
use super::sockets::SendNow;
use super::tls::TlsStream;
use crate::relay::directory::StreamName;

/// What one `Output::ForwardConnect` asks for.
pub struct ConnectRequest {
    pub stream: StreamName,
    pub index: usize,
    pub attempt: u64,
    pub host: String,
    pub port: u16,
    /// `rtmps://`: the link runs inside TLS.
    pub tls: bool,
}

/// Connects to a push target and, once connected, serves the link until it closes.
pub async fn run(driver: Rc<ShardDriver>, req: ConnectRequest) {
    let opened = match outbound::connect(&req.host, req.port).await {
        Ok(socket) if req.tls => {
            let file = driver.relay.borrow().config.server.tls_ca_file.clone();
            let cas = if file.as_os_str().is_empty() {
                TrustedCas {
                    file: PathBuf::from(outbound::SYSTEM_CA_FILE),
                    source: "system CA file",
                }
            } else {
                TrustedCas {
                    file,
                    source: "server.tls_ca_file",
                }
            };
            outbound::tls_client(&req.host, cas)
                .await
                .map(|tls| (socket, Some(TlsStream::client(tls))))
        }
        Ok(socket) => Ok((socket, None)),
        Err(reason) => Err(reason),
    };
    let (socket, tls) = match opened {
        Ok(opened) => opened,
        Err(reason) => {
            driver.relay.borrow_mut().forward_connect_failed(
                &req.stream,
                req.index,
                req.attempt,
                &reason,
                Instant::now(),
            );
            driver.process();
            return;
        }
    };
    let addr = socket
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], req.port)));
    let now = Instant::now();
    let id =
        driver
            .relay
            .borrow_mut()
            .forward_connected(&req.stream, req.index, req.attempt, addr, now);
    let Some(id) = id else {
        // The stream ended (or the shard is shutting down) meanwhile: drop the socket.
        return;
    };
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!(peer = %addr, "cannot set TCP_NODELAY on a push link: {e}");
    }
    driver
        .sockets
        .borrow_mut()
        .insert_with(id, socket, tls, None);
    {
        // The handshake's first bytes, queued by the relay, go out now.
        let sockets = driver.sockets.borrow();
        driver
            .relay
            .borrow_mut()
            .write_blocked(id, now, &mut SendNow(&sockets));
    }
    driver.process();
    super::client_task::serve(driver, id, Bytes::new()).await;
}
