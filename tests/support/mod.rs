//! Shared test helpers: ports, real client processes (ffmpeg, ffprobe, rtmpdump), a
//! minimal RTMP server built only from the protocol core and `std::net`, the relay binary
//! run as a child process ([`Relay`]), a blocking RTMP client built from `ClientSession`
//! ([`RtmpClient`], [`Recorder`]), and synthetic numbered media ([`Script`]) whose every
//! message a test can account for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast::rtmp::{
    ClientEvent, ClientSession, ClientSessionConfig, MediaKind, ServerEvent, ServerSession,
    ServerSessionConfig,
};

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a real client program; fails the test with a clear message if it is not installed.
pub fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: the tests use the real client (apt-get install ffmpeg rtmpdump, or run bash .ci/run)"
    );
    let mut cmd = Command::new(name);
    cmd.stdin(Stdio::null());
    cmd
}

/// ffmpeg publishing a generated H.264 + AAC stream to `url`. `realtime` paces it like a
/// live encoder (`-re`); otherwise it pushes as fast as it can.
pub fn ffmpeg_publish(url: &str, seconds: u32, realtime: bool) -> Command {
    let mut cmd = tool("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostats"]);
    if realtime {
        cmd.arg("-re");
    }
    cmd.args([
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size=320x240:rate=25:duration={seconds}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:sample_rate=44100:duration={seconds}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        url,
    ]);
    cmd
}

/// ffmpeg playing `url` and writing one line per decoded frame (framecrc) to stdout:
/// stream 0 is the video, stream 1 the audio.
pub fn ffmpeg_play(url: &str) -> Command {
    let mut cmd = tool("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-rw_timeout",
        "15000000",
        "-i",
        url,
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-f",
        "framecrc",
        "-",
    ]);
    cmd
}

/// Counts framecrc lines per stream: (video frames, audio frames).
pub fn framecrc_counts(stdout: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(stdout);
    let mut counts = (0, 0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match line.split(',').next().map(str::trim) {
            Some("0") => counts.0 += 1,
            Some("1") => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// Waits for a child with a deadline, killing it if it runs over.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process ran past {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The streams ffprobe finds in a file: codec names in order.
pub fn ffprobe_codecs(path: &Path) -> Vec<String> {
    let out = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcast-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// One message a publisher sent, as the core server captured it.
#[derive(Clone, Debug)]
pub enum Captured {
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    Metadata(Bytes),
    Data(Bytes),
}

/// Drives one server session over a blocking std socket until the peer leaves, calling
/// `on_event` for each event (which may answer through the session).
pub fn drive_session(
    mut socket: TcpStream,
    mut on_event: impl FnMut(&mut ServerSession, ServerEvent) -> bool,
) -> ServerSession {
    let mut session = ServerSession::new(ServerSessionConfig::default());
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        session
            .feed(Bytes::copy_from_slice(&buf[..n]))
            .expect("the session accepts what a real client sends");
        let mut keep_going = true;
        while let Some(ev) = session.poll_event() {
            keep_going &= on_event(&mut session, ev);
        }
        while let Some(out) = session.poll_transmit() {
            if socket.write_all(&out).is_err() {
                return session;
            }
        }
        if !keep_going {
            break;
        }
    }
    session
}

/// A server that accepts one publisher and records what it sends.
pub fn capture_one_publish(listener: TcpListener) -> thread::JoinHandle<Vec<Captured>> {
    thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut captured = Vec::new();
        drive_session(socket, |session, ev| {
            match ev {
                ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                ServerEvent::PublishRequested { stream_id, .. } => {
                    session.accept_publish(stream_id)
                }
                ServerEvent::Media {
                    kind,
                    timestamp,
                    payload,
                    ..
                } => captured.push(Captured::Media {
                    kind,
                    timestamp,
                    payload,
                }),
                ServerEvent::Metadata { payload, .. } => captured.push(Captured::Metadata(payload)),
                ServerEvent::Data { payload, .. } => captured.push(Captured::Data(payload)),
                _ => {}
            }
            true
        });
        captured
    })
}

/// A server that answers one play by replaying `messages` through the session's own
/// encoder, then tells the player the stream ended and closes.
pub fn replay_to_one_player(
    listener: TcpListener,
    messages: Vec<Captured>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = socket.try_clone().unwrap();
        // The session runs on this thread; a reader thread feeds it bytes.
        thread::spawn(move || {
            let mut reader = reader;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    break;
                }
            }
        });
        let mut session = ServerSession::new(ServerSessionConfig::default());
        let mut playing = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while playing.is_none() && Instant::now() < deadline {
            let Ok(input) = rx.recv_timeout(Duration::from_secs(20)) else {
                return;
            };
            session.feed(input).expect("player input is valid");
            while let Some(ev) = session.poll_event() {
                match ev {
                    ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                    ServerEvent::PlayRequested { stream_id, .. } => {
                        session.accept_play(stream_id, true, false);
                        playing = Some(stream_id);
                    }
                    _ => {}
                }
            }
            while let Some(out) = session.poll_transmit() {
                socket.write_all(&out).unwrap();
            }
        }
        let stream_id = playing.expect("the player asked to play");
        for m in messages {
            match m {
                Captured::Media {
                    kind,
                    timestamp,
                    payload,
                } => session.send_media(stream_id, kind, timestamp, payload),
                Captured::Metadata(p) | Captured::Data(p) => session.send_data(stream_id, 0, p),
            }
            while let Some(out) = session.poll_transmit() {
                if socket.write_all(&out).is_err() {
                    return;
                }
            }
        }
        session.notify_unpublished(stream_id);
        session.send_status(stream_id, "status", "NetStream.Play.Stop", "done");
        while let Some(out) = session.poll_transmit() {
            let _ = socket.write_all(&out);
        }
        thread::sleep(Duration::from_millis(200));
        let _ = socket.shutdown(std::net::Shutdown::Both);
    })
}

// ---------------------------------------------------------------------------------------
// The relay binary, run as a child process.
// ---------------------------------------------------------------------------------------

/// The log filter every test relay runs with: info, plus the connection driver's and the
/// relay's debug lines (which shard accepted which peer, a viewer skipping video).
pub const TEST_LOG_FILTER: &str = "info,shardcast::net=debug,shardcast::relay=debug";

/// One `shardcast` process started for a test, with its config in a temp file and its
/// stderr (plain-text log lines) captured to another. Dropping it kills the process, so a
/// failed test leaves no process behind; it removes the two files unless the test failed
/// (then the log is printed, and both stay for a closer look).
pub struct Relay {
    child: Option<Child>,
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Relay {
    /// Starts the relay with `config` (TOML; `--listen` and `--shards` override the file)
    /// on a free port of 127.0.0.1 and waits until every shard listens. `name` keeps the
    /// temp files of concurrent tests apart.
    pub fn start(name: &str, config: &str, shards: usize) -> Relay {
        let config_path = temp_path(&format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let log_path = temp_path(&format!("{name}.log"));
        let mut last_log = String::new();
        // A port found free can be taken again before the relay binds it (another test's
        // client); the relay then refuses to start, and we try another port.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
                .arg("--config")
                .arg(&config_path)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--shards", &shards.to_string()])
                .args(["--log", TEST_LOG_FILTER])
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("the shardcast binary runs");
            let mut relay = Relay {
                child: Some(child),
                port,
                config_path: config_path.clone(),
                log_path: log_path.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if relay.log().contains("shardcast listening") {
                    return relay;
                }
                if let Some(status) = relay.child.as_mut().unwrap().try_wait().unwrap() {
                    last_log = relay.log();
                    relay.child = None;
                    assert!(
                        last_log.contains("already in use"),
                        "the relay exited at start ({status}): {last_log}"
                    );
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if relay.child.is_some() {
                panic!(
                    "the relay did not start listening within 15 s: {}",
                    relay.log()
                );
            }
        }
        panic!("no free port for the relay after 5 tries: {last_log}");
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// Everything the relay has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Log lines containing every one of `parts`.
    pub fn log_lines(&self, parts: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits up to `limit` for a log line for which `pred` holds, and returns it.
    pub fn wait_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log().lines().find(|l| pred(l)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The shard that accepted the connection from `peer` (from its "connection accepted"
    /// line), waiting up to `limit` for the line.
    pub fn shard_of(&self, peer: SocketAddr, limit: Duration) -> Option<usize> {
        let line = self.wait_log(limit, |l| {
            l.contains("connection accepted") && log_field(l, "peer") == Some(&peer.to_string())
        })?;
        log_field(&line, "shard")?.parse().ok()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the relay runs").id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM delivered");
    }

    /// Waits up to `limit` for the process to exit by itself; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            // Kept on disk too, with the config, for a closer look.
            eprintln!(
                "--- relay log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
            let _ = std::fs::remove_file(&self.config_path);
        }
    }
}

/// The value of `key=value` in a plain-text log line (values without spaces; a quoted
/// value keeps its quotes).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

// ---------------------------------------------------------------------------------------
// A blocking RTMP client built from the library's ClientSession.
// ---------------------------------------------------------------------------------------

/// One client connection: `ClientSession` over a blocking `std::net::TcpStream`.
pub struct RtmpClient {
    pub socket: TcpStream,
    pub session: ClientSession,
    /// The client's own address: how the relay's log lines name it.
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
        socket.set_nodelay(true).unwrap();
        let local = socket.local_addr().unwrap();
        let tc_url = format!("rtmp://127.0.0.1:{port}/live");
        let session = ClientSession::new(ClientSessionConfig::new("live", &tc_url));
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
    /// the shard from the connection's addresses, so a few tries find each one).
    pub fn connect_on_shard(relay: &Relay, shard: usize) -> RtmpClient {
        for _ in 0..64 {
            let client = Self::connect(relay.port);
            match relay.shard_of(client.local, Duration::from_secs(5)) {
                Some(s) if s == shard => return client,
                Some(_) => {}
                None => panic!("no 'connection accepted' line for {}", client.local),
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

    /// Asks to play `live/key` before anyone publishes it, and records once the relay has
    /// logged that the viewer waits (`NetStream.Play.Start` comes when the publisher does).
    pub fn play_waiting(relay: &Relay, client: Option<RtmpClient>, key: &str) -> Recorder {
        let mut client = client.unwrap_or_else(|| RtmpClient::connect(relay.port));
        client.session.play(key);
        client.flush().unwrap();
        let peer = client.local.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Reading drives the handshake and connect; the play follows by itself.
        while relay
            .wait_log(Duration::ZERO, |l| {
                l.contains("viewer waits for the publisher") && log_field(l, "peer") == Some(&peer)
            })
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "{peer} was not registered as a waiting viewer"
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

// ---------------------------------------------------------------------------------------
// Synthetic media: numbered frames a test can check message by message.
// ---------------------------------------------------------------------------------------

/// An AVC sequence header (AVCDecoderConfigurationRecord with one tiny SPS and PPS).
pub const AVC_HEADER: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0, 0x1e, 1, 0, 2, 0x68, 0xce,
];
/// An AAC sequence header (AudioSpecificConfig: AAC-LC, 44.1 kHz, stereo).
pub const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

/// An AVC NAL-unit message carrying `seq` after its 5-byte header, `size` bytes long.
pub fn video_frame(seq: u32, keyframe: bool, size: usize) -> Bytes {
    let mut v = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(size.max(9), (seq % 251) as u8);
    Bytes::from(v)
}

/// An AAC raw-frame message carrying `seq`.
pub fn audio_frame(seq: u32) -> Bytes {
    let mut v = vec![0xAF, 1];
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(200, (seq % 13) as u8);
    Bytes::from(v)
}

/// An `onTextData` data message whose text is `seq`.
pub fn text_data(seq: u32) -> Bytes {
    use shardcast::rtmp::amf0::{self, Amf0Value};
    let mut out = Vec::new();
    amf0::encode(&Amf0Value::String("onTextData".into()), &mut out);
    amf0::encode(
        &Amf0Value::Object(vec![("text".into(), Amf0Value::String(seq.to_string()))]),
        &mut out,
    );
    Bytes::from(out)
}

/// A message a viewer got, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    VideoHeader,
    AudioHeader,
    Video { seq: u32, keyframe: bool },
    Audio { seq: u32 },
    Text { seq: u32 },
    Metadata,
    OtherData,
}

/// What a synthetic media or data message is, and its timestamp.
pub fn classify(ev: &ClientEvent) -> Option<(Tag, u32)> {
    use shardcast::media::codec::{inspect_audio, inspect_video};
    use shardcast::rtmp::amf0::{self, Amf0Value};
    match ev {
        ClientEvent::Media {
            kind: MediaKind::Video,
            timestamp,
            payload,
        } => {
            let info = inspect_video(payload)?;
            let tag = if info.is_sequence_header {
                Tag::VideoHeader
            } else {
                let seq = u32::from_be_bytes(payload.get(5..9)?.try_into().ok()?);
                Tag::Video {
                    seq,
                    keyframe: info.is_keyframe(),
                }
            };
            Some((tag, *timestamp))
        }
        ClientEvent::Media {
            kind: MediaKind::Audio,
            timestamp,
            payload,
        } => {
            let info = inspect_audio(payload)?;
            let tag = if info.is_sequence_header {
                Tag::AudioHeader
            } else {
                Tag::Audio {
                    seq: u32::from_be_bytes(payload.get(2..6)?.try_into().ok()?),
                }
            };
            Some((tag, *timestamp))
        }
        ClientEvent::Data {
            timestamp, payload, ..
        } => {
            let values = amf0::decode_all(payload).ok()?;
            let tag = match values.first().and_then(Amf0Value::as_str) {
                Some("onTextData") => Tag::Text {
                    seq: values
                        .get(1)?
                        .get("text")
                        .and_then(Amf0Value::as_str)?
                        .parse()
                        .ok()?,
                },
                Some("onMetaData") => Tag::Metadata,
                _ => Tag::OtherData,
            };
            Some((tag, *timestamp))
        }
        _ => None,
    }
}

/// A short description of events for failure messages.
pub fn summarize(events: &[ClientEvent]) -> String {
    let describe = |ev: &ClientEvent| match classify(ev) {
        Some((tag, ts)) => format!("{tag:?}@{ts}"),
        None => match ev {
            ClientEvent::Status { code, .. } => code.clone(),
            other => format!("{other:?}"),
        },
    };
    // The start and the end, where the interesting part of a failure usually is.
    let (head, tail) = if events.len() > 45 {
        (&events[..15], &events[events.len() - 30..])
    } else {
        (events, &events[..0])
    };
    let mut out: Vec<String> = head.iter().map(describe).collect();
    if !tail.is_empty() {
        out.push(format!("... {} more ...", events.len() - 45));
        out.extend(tail.iter().map(describe));
    }
    out.join(", ")
}

/// The shape of a synthetic publication: frame `i` is video `i` (a keyframe every
/// `keyframe_every`), then audio `i`, then text `i` when `text_every` divides `i`, all
/// stamped `(i - first) * 40` ms.
#[derive(Clone, Copy, Debug)]
pub struct Script {
    /// The first frame's number; its timestamp is 0.
    pub first: u32,
    /// Frames `first..first + frames` make the publication.
    pub frames: u32,
    pub keyframe_every: u32,
    pub text_every: Option<u32>,
    /// Wall-clock pause between frames.
    pub interval: Duration,
    pub video_size: usize,
    pub keyframe_size: usize,
    /// Audio `i` is stamped this much before video `i` (encoders often do so).
    pub audio_lag_ms: u32,
}

impl Script {
    pub fn new(frames: u32) -> Script {
        Script {
            first: 0,
            frames,
            keyframe_every: 30,
            text_every: None,
            interval: Duration::from_millis(10),
            video_size: 1500,
            keyframe_size: 20_000,
            audio_lag_ms: 0,
        }
    }

    pub fn timestamp(&self, i: u32) -> u32 {
        (i - self.first) * 40
    }

    /// The timestamp of audio `i`.
    pub fn audio_timestamp(&self, i: u32) -> u32 {
        self.timestamp(i).saturating_sub(self.audio_lag_ms)
    }

    /// The number of the last frame.
    pub fn last(&self) -> u32 {
        self.first + self.frames - 1
    }

    /// What frame `i` consists of, in sending order.
    pub fn frame_tags(&self, i: u32) -> Vec<Tag> {
        let mut tags = vec![
            Tag::Video {
                seq: i,
                keyframe: (i - self.first).is_multiple_of(self.keyframe_every),
            },
            Tag::Audio { seq: i },
        ];
        if self.text_every.is_some_and(|n| i.is_multiple_of(n)) {
            tags.push(Tag::Text { seq: i });
        }
        tags
    }

    /// Sends the headers (metadata, AVC and AAC sequence headers).
    pub fn send_headers(&self, client: &mut RtmpClient) {
        use shardcast::rtmp::amf0::Amf0Value;
        client.session.send_metadata(vec![
            ("width".into(), Amf0Value::Number(320.0)),
            ("height".into(), Amf0Value::Number(240.0)),
            ("videocodecid".into(), Amf0Value::Number(7.0)),
            ("audiocodecid".into(), Amf0Value::Number(10.0)),
        ]);
        client
            .session
            .send_media(MediaKind::Video, 0, Bytes::from_static(AVC_HEADER));
        client
            .session
            .send_media(MediaKind::Audio, 0, Bytes::from_static(AAC_HEADER));
        client.flush().unwrap();
    }

    /// Sends frame `i`.
    pub fn send_frame(&self, client: &mut RtmpClient, i: u32) {
        let ts = self.timestamp(i);
        let key = (i - self.first).is_multiple_of(self.keyframe_every);
        let size = if key {
            self.keyframe_size
        } else {
            self.video_size
        };
        client
            .session
            .send_media(MediaKind::Video, ts, video_frame(i, key, size));
        client
            .session
            .send_media(MediaKind::Audio, self.audio_timestamp(i), audio_frame(i));
        if self.text_every.is_some_and(|n| i.is_multiple_of(n)) {
            client.session.send_data(ts, text_data(i));
        }
        client.flush().unwrap();
    }

    /// Sends frames `range`, pausing `interval` between them and reading what the relay
    /// sends back; stops early if `stop` is set.
    pub fn send_frames(
        &self,
        client: &mut RtmpClient,
        range: std::ops::Range<u32>,
        stop: Option<&AtomicBool>,
    ) {
        for i in range {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return;
            }
            self.send_frame(client, i);
            let _ = client.drain();
            thread::sleep(self.interval);
        }
    }

    /// Runs a whole publication on a thread: publish `key`, headers, every frame, then
    /// `FCUnpublish` + `deleteStream` and close. Returns the publisher's address once it
    /// publishes, and the thread.
    pub fn publish_in_thread(self, port: u16, key: &str) -> (SocketAddr, thread::JoinHandle<()>) {
        let mut client = RtmpClient::publisher(port, key);
        let local = client.local;
        let handle = thread::spawn(move || {
            self.send_headers(&mut client);
            self.send_frames(&mut client, self.first..self.last() + 1, None);
            client.session.close_stream();
            let _ = client.flush();
            thread::sleep(Duration::from_millis(100));
        });
        (local, handle)
    }
}

/// Checks that a viewer got the synthetic stream `script` in order and complete from the
/// keyframe it started at to frame `last` (inclusive): exactly the frames the publisher
/// sent, in the publisher's order, codec headers before the first frame, timestamps never
/// going backwards and each frame stamped as sent. Returns the frame it started at.
pub fn check_stream(events: &[ClientEvent], script: &Script, last: u32) -> Result<u32, String> {
    let tagged: Vec<(Tag, u32)> = events.iter().filter_map(classify).collect();
    let first_video = tagged
        .iter()
        .position(|(t, _)| matches!(t, Tag::Video { .. }))
        .ok_or_else(|| format!("no video frame; got {}", summarize(events)))?;
    let Tag::Video {
        seq: start,
        keyframe,
    } = tagged[first_video].0
    else {
        unreachable!()
    };
    if !keyframe {
        return Err(format!("the first video frame ({start}) is not a keyframe"));
    }
    let before = &tagged[..first_video];
    for header in [Tag::VideoHeader, Tag::AudioHeader] {
        if !before.iter().any(|(t, _)| *t == header) {
            return Err(format!("no {header:?} before the first frame: {before:?}"));
        }
    }
    if let Some((t, _)) = before.iter().find(|(t, _)| {
        !matches!(
            t,
            Tag::VideoHeader | Tag::AudioHeader | Tag::Metadata | Tag::OtherData
        )
    }) {
        return Err(format!("{t:?} before the first keyframe"));
    }
    let got: Vec<Tag> = tagged[first_video..]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !matches!(t, Tag::Metadata | Tag::OtherData))
        .collect();
    let expected: Vec<Tag> = (start..=last).flat_map(|i| script.frame_tags(i)).collect();
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        return Err(format!(
            "from frame {start}: {} messages, expected {}; first difference at {at}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(at.saturating_sub(2)..(at + 3).min(got.len())),
            expected.get(at.saturating_sub(2)..(at + 3).min(expected.len())),
        ));
    }
    // Each kind's timestamps never go back; with audio stamped in step with the video,
    // the whole sequence's do not either.
    let mut prev = 0u32;
    let mut prev_of_kind = std::collections::HashMap::new();
    for (tag, ts) in &tagged {
        let kind = match tag {
            Tag::Video { .. } | Tag::VideoHeader => 0,
            Tag::Audio { .. } | Tag::AudioHeader => 1,
            _ => 2,
        };
        let prev_kind = prev_of_kind.insert(kind, *ts).unwrap_or(0);
        if *ts < prev_kind || (script.audio_lag_ms == 0 && *ts < prev) {
            return Err(format!(
                "timestamp went back from {} to {ts} at {tag:?}",
                prev_kind.max(prev)
            ));
        }
        prev = *ts;
        let sent = match tag {
            Tag::Video { seq, .. } | Tag::Text { seq } => script.timestamp(*seq),
            Tag::Audio { seq } => script.audio_timestamp(*seq),
            _ => continue,
        };
        if *ts != sent {
            return Err(format!("{tag:?} stamped {ts}, sent at {sent}"));
        }
    }
    Ok(start)
}

/// The status codes among `events`, in order.
pub fn status_codes(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Status { code, .. } => Some(code.clone()),
            _ => None,
        })
        .collect()
}

pub fn plain(events: &[Recorded]) -> Vec<ClientEvent> {
    events.iter().map(|r| r.event.clone()).collect()
}
