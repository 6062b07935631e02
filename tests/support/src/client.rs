//! A blocking RTMP client built from the library's `ClientSession` over a
//! `std::net::TcpStream` ([`RtmpClient`]: connect, publish, play, read events with
//! deadlines), and a viewer whose connection a thread of its own reads and records
//! ([`Recorder`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast::rtmp::{ClientEvent, ClientSession, ClientSessionConfig, MediaKind};

use crate::relay::Relay;
use crate::script::summarize;

/// One client connection: `ClientSession` over a blocking `std::net::TcpStream`.
pub struct RtmpClient {
    pub socket: TcpStream,
    pub session: ClientSession,
    /// The client's own address: the `addr` the admin API's client list gives it.
    pub local: SocketAddr,
    /// Events seen while waiting in [`RtmpClient::wait_for`], in order.
    pub seen: Vec<ClientEvent>,
    buf: Vec<u8>,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The relay closed the connection (EOF or reset).
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
}

impl RtmpClient {
    pub fn connect(port: u16) -> RtmpClient {
        Self::connect_with_rcvbuf(port, None)
    }

    /// Connects with SO_RCVBUF set to `rcvbuf` before the connection is made (so the TCP
    /// window is small from the start), when given.
    pub fn connect_with_rcvbuf(port: u16, rcvbuf: Option<usize>) -> RtmpClient {
        let socket = match rcvbuf {
            None => TcpStream::connect(("127.0.0.1", port)).unwrap(),
            Some(size) => connect_small_window(port, size),
        };
        Self::over(socket, port, 0)
    }

    /// A client on a connection already made (after a PROXY header was written to it, for
    /// example), announcing Enhanced RTMP `capsEx` in `connect` when not 0.
    pub fn over(socket: TcpStream, port: u16, caps_ex: u32) -> RtmpClient {
        socket.set_nodelay(true).unwrap();
        let local = socket.local_addr().unwrap();
        let tc_url = format!("rtmp://127.0.0.1:{port}/live");
        let mut config = ClientSessionConfig::new("live", &tc_url);
        config.caps_ex = caps_ex;
        let session = ClientSession::new(config);
        let mut client = RtmpClient {
            socket,
            session,
            local,
            seen: Vec::new(),
            buf: vec![0u8; 256 * 1024],
        };
        client.flush().unwrap();
        client
    }

    /// Connects until the relay's shard `shard` accepts the connection (SO_REUSEPORT picks
    /// the shard from the connection's addresses, so a few tries find each one); the admin
    /// API's client list says which shard has it.
    pub fn connect_on_shard(relay: &Relay, shard: usize) -> RtmpClient {
        for _ in 0..64 {
            let client = Self::connect(relay.port);
            match relay.shard_of(client.local, Duration::from_secs(5)) {
                Some(s) if s == shard => return client,
                Some(_) => {}
                None => panic!("the admin API does not list {}", client.local),
            }
        }
        panic!("64 connections and none landed on shard {shard}");
    }

    /// Writes everything the session has to send.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while let Some(out) = self.session.poll_transmit() {
            self.socket.write_all(&out)?;
        }
        Ok(())
    }

    /// One read of at most `timeout`; the events it produced.
    pub fn read_events(&mut self, timeout: Duration) -> Result<Vec<ClientEvent>, ReadEnd> {
        self.read_at_most(usize::MAX, timeout)
    }

    /// One read of at most `max` bytes and at most `timeout`; the events it produced.
    pub fn read_at_most(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<ClientEvent>, ReadEnd> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let len = max.min(self.buf.len());
        let n = match self.socket.read(&mut self.buf[..len]) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadEnd::Timeout);
            }
            Err(_) => return Err(ReadEnd::Closed),
        };
        self.session
            .feed(Bytes::copy_from_slice(&self.buf[..n]))
            .expect("the relay speaks valid RTMP");
        let mut events = Vec::new();
        while let Some(ev) = self.session.poll_event() {
            events.push(ev);
        }
        // Acknowledgements and the like; a closed socket shows on the next read.
        let _ = self.flush();
        Ok(events)
    }

    /// Reads until an event matches `pred` (recording everything in `seen`); panics if the
    /// connection closes or `limit` passes first.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        pred: impl Fn(&ClientEvent) -> bool,
    ) -> ClientEvent {
        match self.try_wait_for(limit, pred) {
            Ok(ev) => ev,
            Err(end) => panic!(
                "{}: no expected event within {limit:?} ({end:?}); seen: {:?}",
                self.local,
                summarize(&self.seen)
            ),
        }
    }

    pub fn try_wait_for(
        &mut self,
        limit: Duration,
        pred: impl Fn(&ClientEvent) -> bool,
    ) -> Result<ClientEvent, ReadEnd> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Timeout);
            }
            match self.read_events(left.min(Duration::from_millis(100))) {
                Ok(events) => {
                    let mut found = None;
                    for ev in events {
                        if found.is_none() && pred(&ev) {
                            found = Some(ev.clone());
                        }
                        self.seen.push(ev);
                    }
                    if let Some(ev) = found {
                        return Ok(ev);
                    }
                }
                Err(ReadEnd::Timeout) => {}
                Err(ReadEnd::Closed) => return Err(ReadEnd::Closed),
            }
        }
    }

    /// Reads and records until the relay closes the connection; false if `limit` passed.
    pub fn wait_closed(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.read_events(Duration::from_millis(100)) {
                Ok(events) => self.seen.extend(events),
                Err(ReadEnd::Closed) => return true,
                Err(ReadEnd::Timeout) => {}
            }
        }
        false
    }

    /// Publishes `live/key` and waits for `NetStream.Publish.Start`.
    pub fn publisher(port: u16, key: &str) -> RtmpClient {
        let mut client = Self::connect(port);
        client.start_publish(key);
        client
    }

    pub fn start_publish(&mut self, key: &str) {
        self.session.publish(key);
        self.flush().unwrap();
        self.wait_for(Duration::from_secs(10), |e| {
            matches!(e, ClientEvent::PublishStarted { .. })
        });
    }

    /// Plays `live/key` and waits for `NetStream.Play.Start`.
    pub fn viewer(port: u16, key: &str) -> RtmpClient {
        let mut client = Self::connect(port);
        client.start_play(key);
        client
    }

    pub fn start_play(&mut self, key: &str) {
        self.session.play(key);
        self.flush().unwrap();
        self.wait_for(Duration::from_secs(10), |e| {
            matches!(e, ClientEvent::PlayStarted { .. })
        });
    }

    /// Sends a media message and writes it out.
    pub fn send_media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        self.session.send_media(kind, timestamp, payload);
        self.flush().unwrap();
    }

    /// Reads whatever the relay sent without waiting (acknowledgements, status).
    pub fn drain(&mut self) -> Result<(), ReadEnd> {
        loop {
            match self.read_events(Duration::from_millis(1)) {
                Ok(events) => self.seen.extend(events),
                Err(ReadEnd::Timeout) => return Ok(()),
                Err(ReadEnd::Closed) => return Err(ReadEnd::Closed),
            }
        }
    }
}

fn connect_small_window(port: u16, rcvbuf: usize) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function creates and then hands to
    // TcpStream, which owns (and closes) it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let size = rcvbuf as libc::c_int;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

// ---------------------------------------------------------------------------------------
// Viewers that record everything in a thread of their own.
// ---------------------------------------------------------------------------------------

/// One event a recording viewer got, and when.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub event: ClientEvent,
}

/// The events alone, without when they came.
pub fn plain(events: &[Recorded]) -> Vec<ClientEvent> {
    events.iter().map(|r| r.event.clone()).collect()
}

/// A viewer whose connection a thread reads until the relay closes it or the test stops
/// it, recording every event.
pub struct Recorder {
    pub local: SocketAddr,
    events: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<bool>>,
}

impl Recorder {
    /// Starts recording `client` (the events it already saw come first).
    pub fn start(mut client: RtmpClient) -> Recorder {
        let now = Instant::now();
        let events = Arc::new(Mutex::new(
            client
                .seen
                .drain(..)
                .map(|event| Recorded { at: now, event })
                .collect::<Vec<_>>(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let local = client.local;
        let handle = {
            let events = events.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.read_events(Duration::from_millis(50)) {
                        Ok(new) => {
                            let at = Instant::now();
                            events
                                .lock()
                                .unwrap()
                                .extend(new.into_iter().map(|event| Recorded { at, event }));
                        }
                        Err(ReadEnd::Timeout) => {}
                        Err(ReadEnd::Closed) => return true,
                    }
                }
                false
            })
        };
        Recorder {
            local,
            events,
            stop,
            handle: Some(handle),
        }
    }

    /// Plays `live/key` and records.
    pub fn play(port: u16, key: &str) -> Recorder {
        Self::start(RtmpClient::viewer(port, key))
    }

    /// Connects until the relay's shard `shard` accepts the connection, plays `live/key`
    /// and records.
    pub fn play_on_shard(relay: &Relay, shard: usize, key: &str) -> Recorder {
        let mut client = RtmpClient::connect_on_shard(relay, shard);
        client.start_play(key);
        Self::start(client)
    }

    /// Asks to play `live/key` before anyone publishes it, and records once the admin API
    /// lists the viewer as waiting (`NetStream.Play.Start` comes when the publisher does).
    pub fn play_waiting(relay: &Relay, client: Option<RtmpClient>, key: &str) -> Recorder {
        let mut client = client.unwrap_or_else(|| RtmpClient::connect(relay.port));
        client.session.play(key);
        client.flush().unwrap();
        let peer = client.local;
        let deadline = Instant::now() + Duration::from_secs(10);
        // Reading drives the handshake and connect; the play follows by itself.
        while !relay
            .client_by_addr(peer, Duration::ZERO)
            .is_some_and(|c| c["role"] == "viewer" && c["waiting"] == true)
        {
            assert!(
                Instant::now() < deadline,
                "{peer} was not listed as a waiting viewer"
            );
            match client.read_events(Duration::from_millis(20)) {
                Ok(events) => client.seen.extend(events),
                Err(ReadEnd::Timeout) => {}
                Err(ReadEnd::Closed) => panic!("{peer}: the relay closed the connection"),
            }
        }
        Self::start(client)
    }

    pub fn events(&self) -> Vec<Recorded> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&ClientEvent) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(&r.event))
            .count()
    }

    /// Waits up to `limit` for `pred` to hold over the events so far.
    pub fn wait_until(&self, limit: Duration, pred: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if pred(&self.events.lock().unwrap()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the relay has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits up to `limit` for the relay to close the connection; true if it did.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.is_closed() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.is_closed()
    }

    /// Stops reading (if the relay has not closed the connection yet) and returns every
    /// event, and whether the relay closed the connection.
    pub fn finish(mut self) -> (Vec<Recorded>, bool) {
        self.stop.store(true, Ordering::Relaxed);
        let closed = self.handle.take().unwrap().join().unwrap();
        (self.events(), closed)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
