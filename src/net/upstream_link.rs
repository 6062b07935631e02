//! An upstream link: one connection of an edge's pull to an origin, driven for the shard.
//!
//! The shard decides when to open a link and when to drop it (`Output::OpenUpstream`,
//! `Output::CloseUpstream`, from `src/relay/upstream_source.rs`); a link's task does the
//! rest: it resolves the origin's host off the shard's thread, connects, speaks the client
//! role (`ClientSession`: handshake, `connect` carrying the pull's relay path, `createStream`,
//! `play`) and hands everything the origin says to the shard
//! (`Shard::handle_upstream`), then runs the shard's outputs, as a client's task does for
//! what a publisher sends. Whatever ends the link on its own (connect error or timeout, the
//! origin closing, a protocol error) is reported once as `UpstreamEvent::Failed`, naming
//! the origin; a link the shard closed reports nothing.
//!
//! The origin is a network peer like any client: the session's decoder limits bound what
//! one message may claim, the read buffer is fixed, and a peer that breaks the protocol
//! ends its link, never the shard.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::shard_driver::ShardDriver;
use super::wakeup::Signal;
use crate::relay::shard::UpstreamEvent;
use crate::relay::upstream_source::UpstreamUrl;
use crate::rtmp::{ClientSession, ClientSessionConfig, RelayPath};

/// How long resolving and connecting to an origin may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    let connecting = async {
        let addr = super::callback_client::resolve(spec.url.host.clone(), spec.url.port)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", spec.url.host))?;
        TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| format!("connect to {addr} failed: {e}"))
    };
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
    let mut config = ClientSessionConfig::new(&spec.url.app, &spec.url.tc_url);
    config.seed ^= spec.link;
    config.relay_path = spec.relay_path.clone();
    config.flash_ver = "FMLE/3.0 (compatible; shardcast pull)".to_owned();
    let mut session = ClientSession::new(config);
    session.play(&spec.key);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        while let Some(out) = session.poll_transmit() {
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
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
        session
            .feed(Bytes::copy_from_slice(&buf[..n]))
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
