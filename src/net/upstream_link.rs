//! An upstream link: one connection of an edge's pull to an origin, driven for the shard.
//!
//! The shard decides when to open a link and when to drop it (`Output::OpenUpstream`,
//! `Output::CloseUpstream`, from `src/relay/upstream_source.rs`); a link's task does the
//! rest: it resolves the origin's host and connects (`outbound.rs`, as a push does), speaks
//! the client role (`ClientSession`: handshake, `connect` carrying the pull's relay path,
//! `createStream`, `play`) and hands everything the origin says to the shard
//! (`Shard::handle_upstream`), then runs the shard's outputs, as a client's task does for
//! what a publisher sends. Whatever ends the link on its own (connect error or timeout, the
//! origin closing, a protocol error) is reported once as `UpstreamEvent::Failed`, naming
//! the origin; a link the shard closed reports nothing.
//!
//! An `rtmps://` origin is reached through rustls (its client session from `outbound.rs`),
//! driven by hand around the socket as the server side does (`tls.rs`), its certificate
//! checked against the application's `pull_tls_ca_file` and the origin's host name.
//!
//! The origin is a network peer like any client: the session's decoder limits bound what
//! one message may claim, the read buffer is fixed, and a peer that breaks the protocol
//! ends its link, never the shard.

use std::cell::Cell;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::outbound::{self, TrustedCas};
use super::shard_driver::ShardDriver;
use super::wakeup::Signal;
use crate::relay::shard::UpstreamEvent;
use crate::relay::upstream_source::UpstreamUrl;
use crate::rtmp::{ClientSession, ClientSessionConfig, RelayPath};

/// Bytes read from an origin at a time.
const READ_BUFFER: usize = 64 * 1024;

/// The shard's handle on a running link: closing it ends the task.
#[derive(Default)]
pub struct LinkControl {
    closed: Cell<bool>,
    wake: Signal,
}

impl LinkControl {
    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
    }
}

/// What an upstream link needs to start.
pub struct LinkSpec {
    pub link: u64,
    pub url: UpstreamUrl,
    pub key: String,
    pub relay_path: RelayPath,
    /// For `rtmps://`: the authorities the origin's certificate must chain to.
    pub tls_ca_file: Option<PathBuf>,
}

/// The bytes between the session and the socket: as they are, or through TLS.
enum Transport {
    Plain,
    Tls(Box<rustls::ClientConnection>),
}

impl Transport {
    /// Sends `data` (and whatever TLS has to say).
    async fn send(&mut self, stream: &mut TcpStream, data: &[u8]) -> Result<(), String> {
        match self {
            Transport::Plain => stream
                .write_all(data)
                .await
                .map_err(|e| format!("write failed: {e}")),
            Transport::Tls(tls) => {
                tls.writer()
                    .write_all(data)
                    .map_err(|e| format!("TLS write failed: {e}"))?;
                Self::flush_tls(tls, stream).await
            }
        }
    }

    async fn flush_tls(
        tls: &mut rustls::ClientConnection,
        stream: &mut TcpStream,
    ) -> Result<(), String> {
        while tls.wants_write() {
            let mut out = Vec::new();
            tls.write_tls(&mut out)
                .map_err(|e| format!("TLS write failed: {e}"))?;
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
        }
        Ok(())
    }

    /// What `input` from the socket carries for the session.
    async fn receive(&mut self, stream: &mut TcpStream, input: &[u8]) -> Result<Bytes, String> {
        let Transport::Tls(tls) = self else {
            return Ok(Bytes::copy_from_slice(input));
        };
        let mut plain = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            tls.read_tls(&mut rest)
                .map_err(|e| format!("TLS read failed: {e}"))?;
            tls.process_new_packets()
                .map_err(|e| format!("TLS error: {e}"))?;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS read failed: {e}")),
                }
            }
        }
        // Handshake answers, alerts.
        Self::flush_tls(tls, stream).await?;
        Ok(Bytes::from(plain))
    }
}

/// Runs link `spec.link` until it fails or the shard closes it.
pub async fn run(driver: Rc<ShardDriver>, spec: LinkSpec, control: Rc<LinkControl>) {
    let peer = spec.url.tc_url.clone();
    let result = drive(&driver, &spec, &control).await;
    driver.forget_link(spec.link);
    if control.closed.get() {
        tracing::debug!(shard = driver.id, upstream = %peer, link = spec.link, "upstream link closed");
        return;
    }
    let why = match result {
        Ok(()) => format!("{peer}: link ended"),
        Err(why) => format!("{peer}: {why}"),
    };
    driver.relay.borrow_mut().handle_upstream(
        spec.link,
        UpstreamEvent::Failed(why),
        Instant::now(),
    );
    driver.process();
}

enum Wake {
    Read(std::io::Result<usize>),
    Closed,
}

async fn drive(
    driver: &Rc<ShardDriver>,
    spec: &LinkSpec,
    control: &LinkControl,
) -> Result<(), String> {
    let connecting = outbound::connect(&spec.url.host, spec.url.port);
    let connected = futures_lite::future::or(async { Some(connecting.await) }, async {
        control.wake.wait().await;
        None
    })
    .await;
    let mut stream = match connected {
        None => return Ok(()),
        Some(result) => result?,
    };
    let _ = stream.set_nodelay(true);
    let mut transport = match (&spec.tls_ca_file, spec.url.tls) {
        (Some(ca_file), true) => {
            let cas = TrustedCas {
                file: ca_file.clone(),
                source: "pull_tls_ca_file",
            };
            Transport::Tls(Box::new(outbound::tls_client(&spec.url.host, cas).await?))
        }
        (None, true) => return Err("rtmps:// without pull_tls_ca_file".to_owned()),
        _ => Transport::Plain,
    };
    let mut config = ClientSessionConfig::new(&spec.url.app, &spec.url.tc_url);
    config.seed ^= spec.link;
    config.relay_path = spec.relay_path.clone();
    config.flash_ver = "FMLE/3.0 (compatible; shardcast pull)".to_owned();
    let mut session = ClientSession::new(config);
    session.play(&spec.key);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        while let Some(out) = session.poll_transmit() {
            transport.send(&mut stream, &out).await?;
        }
        if control.closed.get() {
            return Ok(());
        }
        let wake =
            futures_lite::future::or(async { Wake::Read(stream.read(&mut buf).await) }, async {
                control.wake.wait().await;
                Wake::Closed
            })
            .await;
        let n = match wake {
            Wake::Closed => return Ok(()),
            Wake::Read(Ok(0)) => return Err("the origin closed the connection".to_owned()),
            Wake::Read(Ok(n)) => n,
            Wake::Read(Err(e)) => return Err(format!("read failed: {e}")),
        };
        let input = transport.receive(&mut stream, &buf[..n]).await?;
        if input.is_empty() {
            continue;
        }
        session
            .feed(input)
            .map_err(|e| format!("protocol error: {e}"))?;
        let mut any = false;
        while let Some(event) = session.poll_event() {
            if control.closed.get() {
                return Ok(());
            }
            any = true;
            driver.relay.borrow_mut().handle_upstream(
                spec.link,
                UpstreamEvent::Session(event),
                Instant::now(),
            );
        }
        if any {
            driver.process();
        }
    }
}
