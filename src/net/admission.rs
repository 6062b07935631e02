//! Admission: what happens to a new RTMP or RTMPS connection before the relay takes it.
//!
//! The relay's `Shard::accept` stores a client's address once, and everything after it
//! (logs, the admin API, the network rules) uses that address. Behind a load balancer the
//! real one comes in a PROXY protocol header (`proxy_protocol.rs`) before the client's own
//! bytes, so a connection is admitted only once its first bytes are in:
//!
//! 1. Read until the first bytes say what they are, within the handshake timeout and at
//!    most [`proxy_protocol::MAX_HEADER`] bytes plus one read: a PROXY header (believed
//!    only from `[server] trusted_proxies`; from anyone else the connection is refused), and
//!    then the client's first byte, which tells plain RTMP (0x03) from a TLS ClientHello
//!    (0x16). Either one on the other's port is refused with a line that says so.
//! 2. Count the connection against its real address (`[server] max_connections_per_ip`,
//!    host-wide: [`PerIpLimits`] is one small table all shards share, touched once when a
//!    connection opens and once when it closes, never on the media path).
//! 3. `Shard::accept` with the real address; the client's task starts with the bytes read
//!    so far (after the header), so nothing the client sent is lost.
//!
//! A refused connection is closed with one log line naming the peer and why. Connections
//! still in step 1 are capped per shard ([`MAX_ADMITTING`]), so a flood of silent sockets
//! costs a bounded number of tasks and 4 KiB buffers.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use super::client_task::serve;
use super::proxy_protocol::{self, Preface};
use super::shard_driver::ShardDriver;
use super::tls::TlsAcceptor;
use crate::relay::stats::RejectReason;

/// Connections one shard may hold in admission at once; more are closed at once.
pub const MAX_ADMITTING: usize = 4096;

/// What every shard shares for admission: the per-address counts and the TLS settings.
pub struct Admission {
    pub per_ip: Arc<PerIpLimits>,
    /// The RTMPS listener's certificate, when `tls_listen` is set.
    pub tls: Option<Arc<TlsAcceptor>>,
}

/// Open connections by client address, host-wide.
#[derive(Default)]
pub struct PerIpLimits {
    /// `[server] max_connections_per_ip`; 0 is no limit. Changed by a reload.
    pub max: AtomicUsize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIpLimits`], given back when dropped.
pub struct IpSlot {
    limits: Arc<PerIpLimits>,
    ip: IpAddr,
}

impl PerIpLimits {
    pub fn new(max: usize) -> Arc<PerIpLimits> {
        Arc::new(PerIpLimits {
            max: AtomicUsize::new(max),
            counts: Mutex::default(),
        })
    }

    /// Counts one more connection from `ip`, or refuses it (Err: how many it has).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, usize> {
        let ip = ip.to_canonical();
        let max = self.max.load(Ordering::Relaxed);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if max > 0 && *count >= max {
            return Err(*count);
        }
        *count += 1;
        Ok(IpSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

thread_local! {
    /// Connections in admission on this shard.
    static ADMITTING: Cell<usize> = const { Cell::new(0) };
}

struct Admitting;

impl Admitting {
    fn enter() -> Option<Admitting> {
        ADMITTING.with(|n| {
            (n.get() < MAX_ADMITTING).then(|| {
                n.set(n.get() + 1);
                Admitting
            })
        })
    }
}

impl Drop for Admitting {
    fn drop(&mut self) {
        ADMITTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Rtmp,
    Rtmps,
}

/// Starts admitting a connection accepted on `port` from `peer` (in a task of its own).
pub fn start(driver: Rc<ShardDriver>, stream: TcpStream, peer: SocketAddr, port: Port) {
    let Some(guard) = Admitting::enter() else {
        tracing::warn!(shard = driver.id, %peer, "connection refused: {MAX_ADMITTING} connections on this shard have not sent their first bytes yet");
        return;
    };
    glommio::spawn_local(async move {
        let _guard = guard;
        admit(driver, stream, peer, port).await;
    })
    .detach();
}

/// The first bytes of a connection, once they say what it is.
struct Opening {
    /// The client's address: the PROXY header's, or the socket's.
    client: SocketAddr,
    /// What the client sent after any header.
    rest: Vec<u8>,
}

async fn admit(driver: Rc<ShardDriver>, mut stream: TcpStream, peer: SocketAddr, port: Port) {
    let config = driver.relay.borrow().config.clone();
    let trusted = config.server.is_trusted_proxy(peer.ip());
    let limit = config.server.handshake_timeout();
    let opening = futures_lite::future::or(read_opening(&mut stream, peer, trusted), async {
        glommio::timer::sleep(limit).await;
        Err(format!(
            "sent no complete opening within server.handshake_timeout_ms ({} ms)",
            limit.as_millis()
        ))
    })
    .await;
    let Opening { client, rest } = match opening {
        Ok(o) => o,
        Err(reason) => {
            tracing::warn!(shard = driver.id, %peer, "connection refused: {reason}");
            return;
        }
    };
    let listener = match port {
        Port::Rtmp => "RTMP",
        Port::Rtmps => "RTMPS",
    };
    match (port, rest.first()) {
        (Port::Rtmp, Some(0x16)) => {
            tracing::warn!(shard = driver.id, %peer, %client, "connection refused: TLS on the plain RTMP port (RTMPS clients belong on server.tls_listen)");
            return;
        }
        (Port::Rtmps, Some(0x03 | 0x06)) => {
            tracing::warn!(shard = driver.id, %peer, %client, "connection refused: plain RTMP on the RTMPS port (plain clients belong on server.listen)");
            return;
        }
        _ => {}
    }
    let slot = match driver.admission.per_ip.acquire(client.ip()) {
        Ok(slot) => slot,
        Err(open) => {
            driver
                .relay
                .borrow_mut()
                .count_rejection(RejectReason::TooManyPerIp);
            tracing::warn!(shard = driver.id, %client, open, "connection refused: server.max_connections_per_ip reached for this address");
            return;
        }
    };
    let tls = match port {
        Port::Rtmp => None,
        Port::Rtmps => match driver.admission.tls.as_ref().map(|t| t.accept()) {
            Some(Ok(tls)) => Some(tls),
            Some(Err(e)) => {
                tracing::warn!(shard = driver.id, %client, "RTMPS connection refused: {e}");
                return;
            }
            None => return,
        },
    };
    // Refused (shard full, or shutting down): dropping the stream closes it.
    let Some(id) = driver.relay.borrow_mut().accept(client, Instant::now()) else {
        return;
    };
    if client != peer {
        tracing::debug!(shard = driver.id, %peer, %client, listener, "PROXY protocol: client address from the header");
    }
    driver
        .sockets
        .borrow_mut()
        .insert_with(id, stream, tls, Some(slot));
    glommio::spawn_local(serve(driver.clone(), id, Bytes::from(rest))).detach();
    driver.process();
}

/// Reads until a PROXY header (if any) and the client's first byte are in.
async fn read_opening(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: bool,
) -> Result<Opening, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut client = peer;
    let mut header_len = None;
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed before the first bytes: {e}"))?;
        if n == 0 {
            return Err("closed before sending anything".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if header_len.is_none() {
            match proxy_protocol::parse(&buf) {
                Preface::Absent => return Ok(Opening { client, rest: buf }),
                Preface::Incomplete => continue,
                Preface::Invalid(reason) => return Err(reason),
                Preface::Header { len, source } => {
                    if !trusted {
                        return Err("sent a PROXY protocol header, but its address is not in server.trusted_proxies".into());
                    }
                    if let Some(source) = source {
                        client = source;
                    }
                    header_len = Some(len);
                }
            }
        }
        if let Some(len) = header_len
            && buf.len() > len
        {
            buf.drain(..len);
            return Ok(Opening { client, rest: buf });
        }
        // The header came alone: one more read for the client's first byte. The buffer
        // stays under MAX_HEADER plus one read.
    }
}
