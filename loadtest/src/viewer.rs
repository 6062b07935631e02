//! One viewer: a full RTMP player (handshake, `connect`, `createStream`, `play`, window
//! acknowledgements, ping responses) that checks and times what it receives.
//!
//! Three kinds, chosen per viewer (`--verify-every`, `--counting`):
//! - A *header-walking* viewer runs the library's `ClientSession` only until
//!   `NetStream.Play.Start`. From the end of the handshake on, every byte also goes through
//!   a [`ChunkScanner`], which follows the chunk headers with the library's chunk layer and
//!   keeps the first bytes of each message; once playing, only the scanner runs, and the
//!   viewer answers the server's control traffic itself (acknowledgements, pings). It
//!   never copies or assembles a media payload, so its cost is one `recv` into a reused
//!   buffer and a header walk.
//! - A *byte-counting* viewer (the default outside the sample) is a header-walking viewer
//!   until its first keyframe, so its join is timed; then [`Viewer::count_bytes`] hands
//!   its socket to the thread's one drain loop (`src/discard.rs`), which empties it on a
//!   staggered schedule with `recv(MSG_TRUNC)`, discarding in the kernel: no copy, no
//!   parsing, only a byte count (and window acknowledgements from it).
//! - A *verifying* viewer feeds everything to `ClientSession`, whose decoder assembles every
//!   message, and checks each video payload's checksum against its marker: it is the
//!   sample that proves the bytes arrive intact, and cross-checks the scanner.
//!
//! Verifying and header-walking viewers count loss and reordering from the markers'
//! sequence numbers, time relay latency from the markers' send times, and record connect
//! time, time to first keyframe and bitrate. Latency is recorded only for messages the publisher sent after this viewer
//! started playing: earlier ones come from the relay's GOP cache, late by design.
//!
//! Time to first keyframe runs from the start of the TCP connect to the arrival of the first
//! video keyframe (the first decodable frame; not a codec sequence header), whether it came
//! from the relay's GOP cache or live.
//!
//! How a viewer reads (`--read-interval`): by default it reads as data arrives, one
//! `recv` per wake-up, like a player that decodes every frame. With an interval, a *batch
//! reader* reads that way only until it plays; from then on it sleeps the interval, drains
//! its socket with non-blocking `recv`s (`MSG_DONTWAIT` on the raw descriptor) until
//! `EAGAIN`, processes those bytes exactly as above (acknowledgements and ping responses go
//! out late, which is allowed), and sleeps again. Viewers wake on a common grid of the
//! interval, each shifted by `index / viewers` of an interval, so their wake-ups spread
//! evenly instead of arriving together. Latency then includes the time a message waited
//! for its reader: up to one interval.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use shardcast::media::codec::inspect_video;
use shardcast::rtmp::capabilities::CAPS_EX_MULTITRACK;
use shardcast::rtmp::chunk::ChunkEncoder;
use shardcast::rtmp::command::{Command, status};
use shardcast::rtmp::control::{ControlMessage, UserControlEvent};
use shardcast::rtmp::message::{MessageType, RtmpMessage, csid};
use shardcast::rtmp::{ClientEvent, ClientSession, ClientSessionConfig, MediaKind};

use crate::clock;
use crate::discard::{Ended, Handover};
use crate::flv_viewer;
use crate::marker;
use crate::multitrack::{self, TrackChecker};
use crate::run::ThreadContext;
use crate::scanner::ChunkScanner;
use crate::settings::{PlayUrl, RtmpUrl};
use crate::stats::{ViewerRecord, ViewerState, record};

/// Bytes asked of the kernel per read.
const READ_SIZE: usize = 16 * 1024;
/// Bytes asked of the kernel per read by batch readers, which find a whole interval
/// waiting.
const BATCH_READ_SIZE: usize = 64 * 1024;
/// What VOD viewers (`--vod-start`) tell the server they buffer, as ffmpeg does.
const VOD_BUFFER_MS: u32 = 3000;
/// What the server sends before its first chunk: S0, S1 and S2.
const HANDSHAKE_LEN: u64 = 1 + 1536 + 1536;

pub struct ViewerSpec {
    pub index: usize,
    pub stream: usize,
    pub url: PlayUrl,
    pub verifying: bool,
    /// Once it has its first keyframe, only count bytes (`--counting bytes`).
    pub counts_bytes: bool,
    /// One of the flash crowd (`--crowd`): its join time is recorded apart.
    pub crowd: bool,
}

/// How a viewer ended.
pub(crate) enum End {
    /// Never got to play.
    Failed(String),
    /// Played, then the server (or the network) ended it.
    Disconnected(String),
}

/// Describes a connect error the way an operator wants to read it.
pub fn connect_error(addr: SocketAddr, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused to {addr}"),
        io::ErrorKind::TimedOut => format!(
            "connect to {addr} timed out after {:.1} s",
            timeout.as_secs_f64()
        ),
        _ if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            format!("connection refused to {addr}")
        }
        _ => format!("connect to {addr}: {e}"),
    }
}

/// Runs one viewer until it ends or the run drops it, recording as it goes.
pub async fn run(ctx: Rc<ThreadContext>, spec: ViewerSpec) {
    let record = Rc::new(RefCell::new(ViewerRecord::new(spec.stream)));
    ctx.stats.borrow_mut().viewers.push(record.clone());
    ctx.shared
        .live
        .viewers_started
        .fetch_add(1, Ordering::Relaxed);
    let mut viewer = Viewer {
        ctx: ctx.clone(),
        record: record.clone(),
        started: Instant::now(),
        join_seq: 0,
        next_seq: None,
        got_keyframe: false,
        crowd: spec.crowd,
        playing: false,
        end_status: None,
        tracks: ctx.settings.multitrack.then(TrackChecker::default),
    };
    let end = match &spec.url {
        PlayUrl::Rtmp(url) if url.tls => viewer.play_rtmps(&spec, url).await,
        PlayUrl::Rtmp(url) => viewer.play_rtmp(&spec, url).await,
        PlayUrl::Flv { url, websocket } => {
            flv_viewer::play(&mut viewer, &spec, url, *websocket).await
        }
    };
    let mut r = record.borrow_mut();
    let mut stats = ctx.stats.borrow_mut();
    let live = &ctx.shared.live;
    match end {
        End::Failed(reason) => {
            r.state = ViewerState::Failed;
            *stats.failed.entry(reason).or_default() += 1;
            live.viewers_failed.fetch_add(1, Ordering::Relaxed);
        }
        End::Disconnected(reason) => {
            r.state = ViewerState::Disconnected;
            r.ended = Some(Instant::now());
            *stats.disconnected.entry(reason).or_default() += 1;
            live.viewers_playing.fetch_sub(1, Ordering::Relaxed);
            ctx.shared.streams[spec.stream]
                .viewers_playing
                .fetch_sub(1, Ordering::Relaxed);
            live.viewers_disconnected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One viewer's bookkeeping, whatever protocol it plays: play start, and every media
/// message's checks and timings (`on_video`, `on_audio`). The RTMP player below and the
/// HTTP-FLV / WebSocket-FLV player (`flv_viewer.rs`) both feed it.
pub(crate) struct Viewer {
    pub(crate) ctx: Rc<ThreadContext>,
    record: Rc<RefCell<ViewerRecord>>,
    /// When the TCP connect started.
    pub(crate) started: Instant,
    /// Markers the publisher had sent when play started: lower sequence numbers came
    /// from the GOP cache.
    join_seq: u64,
    next_seq: Option<u64>,
    got_keyframe: bool,
    crowd: bool,
    pub(crate) playing: bool,
    /// The last error or end-of-stream status the server sent while playing.
    end_status: Option<String>,
    /// Per-track checks of a multitrack stream (`--multitrack`).
    tracks: Option<TrackChecker>,
}

impl Viewer {
    /// Connects to `addr` with the run's timeouts, and sets up batch reading if the run
    /// asks for it.
    pub(crate) async fn connect(
        &self,
        spec: &ViewerSpec,
        addr: SocketAddr,
    ) -> Result<(TcpStream, Option<BatchReader>), End> {
        let timeout = self.ctx.settings.connect_timeout;
        let stream = match TcpStream::connect_timeout(addr, timeout).await {
            Ok(s) => s,
            Err(e) => return Err(End::Failed(connect_error(addr, &e.into(), timeout))),
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(timeout));
        let settings = &self.ctx.settings;
        let batch = (!settings.read_interval.is_zero()).then(|| {
            if let Some(size) = settings.receive_buffer {
                set_receive_buffer(stream.as_raw_fd(), size);
            }
            BatchReader {
                interval: settings.read_interval,
                phase: settings
                    .read_interval
                    .mul_f64(spec.index as f64 / settings.total_viewers().max(1) as f64),
                draining: false,
                last_data: Instant::now(),
            }
        });
        Ok((stream, batch))
    }

    /// The next read: as data arrives, or (batch readers, once playing) on the batch
    /// schedule. Counts the bytes; the end of the connection, a timeout or an error come
    /// back as how the viewer ended.
    pub(crate) async fn read(
        &mut self,
        stream: &mut TcpStream,
        batch: Option<&mut BatchReader>,
        buf: &mut [u8],
    ) -> Result<usize, End> {
        let timeout = self.ctx.settings.connect_timeout;
        let read = match batch {
            Some(b) if self.playing => b.read(stream.as_raw_fd(), buf, timeout).await,
            _ => stream.read(buf).await,
        };
        self.received(read)
    }

    /// Counts what one read brought, or says how the viewer ended.
    fn received(&mut self, read: io::Result<usize>) -> Result<usize, End> {
        let timeout = self.ctx.settings.connect_timeout;
        let n = match read {
            Ok(0) => return Err(self.closed("connection closed by server")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(if self.playing {
                    End::Disconnected(format!(
                        "no data from server for {:.0} s",
                        timeout.as_secs_f64()
                    ))
                } else {
                    End::Failed(format!(
                        "no answer from server within {:.1} s",
                        timeout.as_secs_f64()
                    ))
                });
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(self.closed("connection reset by server"));
            }
            Err(e) => return Err(self.closed(&format!("read failed: {e}"))),
        };
        self.ctx
            .shared
            .live
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        if self.playing {
            self.record.borrow_mut().bytes_playing += n as u64;
        }
        Ok(n)
    }

    /// Whether a byte-counting viewer has what it joins for (play started, first keyframe
    /// timed) and can stop parsing.
    pub(crate) fn joined(&self, spec: &ViewerSpec) -> bool {
        spec.counts_bytes && self.playing && self.got_keyframe
    }

    /// The rest of a byte-counting viewer's life: its thread's [`Discarder`] drains the
    /// socket every `count_interval` with `recv(MSG_TRUNC)`, which frees the kernel's
    /// buffers without copying a byte, and counts what was there. RTMP viewers pass
    /// `acks` (their window-acknowledgement state and the chunk-stream bytes so far): an
    /// acknowledgement needs only the byte count, so they keep sending them.
    ///
    /// [`Discarder`]: crate::discard::Discarder
    pub(crate) async fn count_bytes(
        &mut self,
        stream: &mut TcpStream,
        spec: &ViewerSpec,
        acks: Option<(ControlReplies, u64)>,
    ) -> End {
        let settings = self.ctx.settings.clone();
        self.record.borrow_mut().measures = false;
        self.ctx.stats.borrow_mut().counting_bytes += 1;
        if let Some(size) = settings.count_receive_buffer {
            set_receive_buffer(stream.as_raw_fd(), size);
        }
        let handover = Handover {
            fd: stream.as_raw_fd(),
            index: spec.index,
            record: self.record.clone(),
            acks,
        };
        match self.ctx.discarder.drain(handover).await {
            Ended::Closed => self.closed("connection closed by server"),
            Ended::Silent => End::Disconnected(format!(
                "no data from server for {:.0} s",
                settings.connect_timeout.as_secs_f64()
            )),
            Ended::Error(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.closed("connection reset by server")
            }
            Ended::Error(e) => self.closed(&format!("read failed: {e}")),
        }
    }

    /// Records the connect time (TCP connect start to `now`).
    pub(crate) fn connected(&self, now: Instant) {
        let elapsed = now.duration_since(self.started);
        record(
            &mut self.ctx.stats.borrow_mut().connect_us,
            elapsed.as_micros() as u64,
        );
    }

    /// The read buffer's size for this run's way of reading.
    pub(crate) fn read_size(batch: &Option<BatchReader>) -> usize {
        if batch.is_some() {
            BATCH_READ_SIZE
        } else {
            READ_SIZE
        }
    }

    /// An `rtmps://` viewer: the full session decodes everything (no chunk-header fast
    /// path: each byte has to be decrypted anyway), inside a rustls client. The bytes
    /// counted are what came over the socket (records included, about 0.2% more).
    async fn play_rtmps(&mut self, spec: &ViewerSpec, url: &RtmpUrl) -> End {
        use std::io::{Read, Write};
        let timeout = self.ctx.settings.connect_timeout;
        let config = TLS_CONFIG.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| crate::tls_client::client_config(&self.ctx.settings.tls))
                .clone()
        });
        let config = match config {
            Ok(c) => c,
            Err(e) => return End::Failed(e),
        };
        let name = match rustls::pki_types::ServerName::try_from(url.host().to_owned()) {
            Ok(n) => n,
            Err(e) => return End::Failed(format!("{url}: {e}")),
        };
        let mut tls = match rustls::ClientConnection::new(config, name) {
            Ok(c) => c,
            Err(e) => return End::Failed(format!("TLS: {e}")),
        };
        let (mut stream, _) = match self.connect(spec, url.addr).await {
            Ok(connected) => connected,
            Err(end) => return end,
        };
        let mut config = ClientSessionConfig::new(&url.app, &url.tc_url());
        config.seed = 0x5EED_0000 ^ spec.index as u64;
        self.declare_capabilities(&mut config);
        let mut session = ClientSession::new(config);
        match self.ctx.settings.vod_start {
            Some(start) => session.play_range(
                &url.key,
                f64::from(start.for_viewer(spec.index)),
                -1.0,
                VOD_BUFFER_MS,
            ),
            None => session.play(&url.key),
        }
        let mut buf = vec![0u8; READ_SIZE];
        let mut plain = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        let mut connected = false;
        loop {
            while let Some(bytes) = session.poll_transmit() {
                if let Err(e) = tls.writer().write_all(&bytes) {
                    return self.closed(&format!("TLS: {e}"));
                }
            }
            out.clear();
            while tls.wants_write() {
                if let Err(e) = tls.write_tls(&mut out) {
                    return self.closed(&format!("TLS: {e}"));
                }
            }
            if !out.is_empty()
                && let Err(e) = stream.write_all(&out).await
            {
                return self.closed(&format!("write failed: {e}"));
            }
            let n = match self.read(&mut stream, None, &mut buf).await {
                Ok(n) => n,
                Err(end) => return end,
            };
            let now = Instant::now();
            let mut data = &buf[..n];
            while !data.is_empty() {
                if let Err(e) = tls.read_tls(&mut data) {
                    return self.closed(&format!("TLS: {e}"));
                }
                if let Err(e) = tls.process_new_packets() {
                    return self.closed(&format!("TLS: {e}"));
                }
                loop {
                    let m = match tls.reader().read(&mut plain) {
                        Ok(0) => return self.closed("TLS closed by server"),
                        Ok(m) => m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return self.closed(&format!("TLS: {e}")),
                    };
                    if !connected {
                        connected = true;
                        self.connected(now);
                    }
                    if let Err(e) = session.feed(Bytes::copy_from_slice(&plain[..m])) {
                        return self.closed(&format!("protocol error: {e}"));
                    }
                    while let Some(event) = session.poll_event() {
                        let event = match event {
                            ClientEvent::Media {
                                kind,
                                timestamp,
                                payload,
                            } if self.playing => {
                                match kind {
                                    MediaKind::Video => self.on_video(
                                        &payload,
                                        payload.len() as u32,
                                        timestamp,
                                        Some(&payload),
                                        now,
                                    ),
                                    MediaKind::Audio => self.on_audio(timestamp, Some(&payload)),
                                }
                                continue;
                            }
                            other => other,
                        };
                        if let Some(end) = self.on_session_event(event, spec, now) {
                            return end;
                        }
                    }
                }
            }
            if !self.playing && now.duration_since(self.started) > timeout {
                return self.play_timeout(timeout);
            }
        }
    }

    async fn play_rtmp(&mut self, spec: &ViewerSpec, url: &RtmpUrl) -> End {
        let timeout = self.ctx.settings.connect_timeout;
        let (mut stream, mut batch) = match self.connect(spec, url.addr).await {
            Ok(connected) => connected,
            Err(end) => return end,
        };
        let mut config = ClientSessionConfig::new(&url.app, &url.tc_url());
        config.seed = 0x5EED_0000 ^ spec.index as u64;
        self.declare_capabilities(&mut config);
        let mut session = ClientSession::new(config);
        match self.ctx.settings.vod_start {
            Some(start) => session.play_range(
                &url.key,
                f64::from(start.for_viewer(spec.index)),
                -1.0,
                VOD_BUFFER_MS,
            ),
            None => session.play(&url.key),
        }
        if let Err(e) = flush_session(&mut stream, &mut session).await {
            return End::Failed(format!("write failed: {e}"));
        }
        // Counting viewers drop the session once playing.
        let mut session = Some(session);
        let mut buf = vec![0u8; Self::read_size(&batch)];
        let mut received: u64 = 0;
        let mut scanner = ChunkScanner::default();
        let mut control = ControlReplies::default();
        loop {
            let n = match self.read(&mut stream, batch.as_mut(), &mut buf).await {
                Ok(n) => n,
                Err(end) => return end,
            };
            let now = Instant::now();
            let data = &buf[..n];
            let before = received;
            received += n as u64;
            // The chunk stream starts after S0+S1+S2.
            if before < HANDSHAKE_LEN && received >= HANDSHAKE_LEN {
                self.connected(now);
            }
            let skip = HANDSHAKE_LEN.saturating_sub(before).min(n as u64) as usize;
            let chunk_data = &data[skip..];
            let session_fed = session.is_some();
            if let Some(session) = session.as_mut() {
                if let Err(e) = session.feed(Bytes::copy_from_slice(data)) {
                    return self.closed(&format!("protocol error: {e}"));
                }
                while let Some(event) = session.poll_event() {
                    if let Some(end) = self.on_session_event(event, spec, now) {
                        return end;
                    }
                }
                if let Err(e) = flush_session(&mut stream, session).await {
                    return self.closed(&format!("write failed: {e}"));
                }
            }
            if session_fed && self.playing && !spec.verifying {
                session = None;
                control.acked = scanner.bytes() + chunk_data.len() as u64;
            }
            if spec.verifying {
                if !self.playing && now.duration_since(self.started) > timeout {
                    return self.play_timeout(timeout);
                }
                continue;
            }
            if !chunk_data.is_empty() {
                let answering = session.is_none();
                let mut failure = None;
                let result = scanner.scan(chunk_data, |m| {
                    match (MessageType::from_id(m.type_id), m.control) {
                        (Some(MessageType::Video), _) if self.playing => {
                            self.on_video(m.prefix, m.len, m.timestamp, None, now)
                        }
                        (Some(MessageType::Audio), _) if self.playing => {
                            self.on_audio(m.timestamp, None)
                        }
                        (_, Some(ControlMessage::WindowAckSize(size))) => {
                            control.peer_window = size;
                        }
                        (_, Some(ControlMessage::UserControl(event))) if answering => match event {
                            UserControlEvent::PingRequest(t) => control.send(
                                ControlMessage::UserControl(UserControlEvent::PingResponse(t)),
                            ),
                            UserControlEvent::StreamEof(_) => {
                                self.end_status
                                    .get_or_insert_with(|| "StreamEOF".to_owned());
                            }
                            _ => {}
                        },
                        (Some(MessageType::CommandAmf0), _) if answering => {
                            if let Some(body) = m.whole {
                                let msg =
                                    RtmpMessage::new(m.type_id, m.stream_id, m.timestamp, body);
                                match Command::parse(&msg) {
                                    Ok(cmd) => self.on_command_while_playing(&cmd),
                                    Err(e) => failure = Some(format!("protocol error: {e}")),
                                }
                            }
                        }
                        _ => {}
                    }
                });
                if let Err(e) = result {
                    return self.closed(&format!("protocol error: {e}"));
                }
                if let Some(reason) = failure {
                    return self.closed(&reason);
                }
                if answering {
                    control.acknowledge(scanner.bytes());
                    if let Some(out) = control.take()
                        && let Err(e) = stream.write_all(&out).await
                    {
                        return self.closed(&format!("write failed: {e}"));
                    }
                }
                if answering && self.joined(spec) {
                    let chunk_bytes = scanner.bytes();
                    return self
                        .count_bytes(&mut stream, spec, Some((control, chunk_bytes)))
                        .await;
                }
            }
            if !self.playing && now.duration_since(self.started) > timeout {
                return self.play_timeout(timeout);
            }
        }
    }

    pub(crate) fn play_timeout(&self, timeout: Duration) -> End {
        End::Failed(format!(
            "play did not start within {:.1} s",
            timeout.as_secs_f64()
        ))
    }

    /// The connection ended: a failure before play started, a disconnect after.
    pub(crate) fn closed(&self, how: &str) -> End {
        if !self.playing {
            return End::Failed(format!("{how} before play started"));
        }
        match &self.end_status {
            Some(status) => End::Disconnected(format!("{how} after {status}")),
            None => End::Disconnected(how.to_owned()),
        }
    }

    fn on_session_event(
        &mut self,
        event: ClientEvent,
        spec: &ViewerSpec,
        now: Instant,
    ) -> Option<End> {
        match event {
            ClientEvent::ConnectFailed { code, description } if !self.playing => {
                let detail = if description.is_empty() {
                    String::new()
                } else {
                    format!(" ({description})")
                };
                Some(End::Failed(format!("connect refused: {code}{detail}")))
            }
            ClientEvent::Status { level, code, .. } if !self.playing && level == "error" => {
                Some(End::Failed(format!("play refused: {code}")))
            }
            ClientEvent::Status { level, code, .. } if self.playing => {
                if level == "error"
                    || code == status::PLAY_UNPUBLISH_NOTIFY
                    || code == status::PLAY_STOP
                {
                    self.end_status = Some(code);
                }
                None
            }
            ClientEvent::StreamEof(_) if self.playing => {
                self.end_status
                    .get_or_insert_with(|| "StreamEOF".to_owned());
                None
            }
            ClientEvent::PlayStarted { .. } if !self.playing => {
                self.start_playing(spec.stream, now);
                None
            }
            ClientEvent::Media {
                kind,
                timestamp,
                payload,
            } if spec.verifying && self.playing => {
                match kind {
                    MediaKind::Video => self.on_video(
                        &payload,
                        payload.len() as u32,
                        timestamp,
                        Some(&payload),
                        now,
                    ),
                    MediaKind::Audio => self.on_audio(timestamp, Some(&payload)),
                }
                None
            }
            _ => None,
        }
    }

    /// Play started (`NetStream.Play.Start`, or the answer to an HTTP-FLV request) at `now`.
    pub(crate) fn start_playing(&mut self, stream: usize, now: Instant) {
        self.playing = true;
        self.join_seq = self.ctx.shared.streams[stream]
            .markers_sent
            .load(Ordering::Relaxed);
        let mut r = self.record.borrow_mut();
        r.state = ViewerState::Playing;
        r.play_started = Some(now);
        let mut stats = self.ctx.stats.borrow_mut();
        stats.connected += 1;
        record(
            &mut stats.play_start_us,
            now.duration_since(self.started).as_micros() as u64,
        );
        self.ctx
            .shared
            .live
            .viewers_playing
            .fetch_add(1, Ordering::Relaxed);
        self.ctx.shared.streams[stream]
            .viewers_playing
            .fetch_add(1, Ordering::Relaxed);
    }

    fn on_command_while_playing(&mut self, cmd: &Command) {
        if cmd.name != "onStatus" {
            return;
        }
        let info = cmd.arg_at(0);
        let text = |key: &str| {
            info.and_then(|i| i.get(key))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let code = text("code");
        if text("level") == "error"
            || code == status::PLAY_UNPUBLISH_NOTIFY
            || code == status::PLAY_STOP
        {
            self.end_status = Some(code);
        }
    }

    /// A multitrack run's viewers declare the codecs of the stream and multitrack support,
    /// as an E-RTMP v2 player does, so the relay sends them every track (unless the run
    /// wants legacy viewers).
    fn declare_capabilities(&self, config: &mut ClientSessionConfig) {
        if self.ctx.settings.multitrack && !self.ctx.settings.multitrack_legacy_viewers {
            config.fourcc_list = multitrack::FOURCC_LIST.map(str::to_owned).to_vec();
            config.caps_ex = CAPS_EX_MULTITRACK;
        }
    }

    /// One audio message (RTMP) or audio tag (FLV); `whole` is its payload when this
    /// viewer verifies.
    pub(crate) fn on_audio(&mut self, timestamp: u32, whole: Option<&[u8]>) {
        let mut stats = self.ctx.stats.borrow_mut();
        stats.audio_messages += 1;
        let mut r = self.record.borrow_mut();
        r.last_media_timestamp = Some(timestamp);
        if let (Some(checker), Some(payload)) = (self.tracks.as_mut(), whole) {
            checker.on_audio(payload, &mut stats.tracks);
            r.tracks_seen = Some(checker.seen_mask());
        }
    }

    /// Checks and times one video message. `prefix` holds at least its first bytes;
    /// `whole` is the entire payload when this viewer verifies.
    pub(crate) fn on_video(
        &mut self,
        prefix: &[u8],
        len: u32,
        timestamp: u32,
        whole: Option<&[u8]>,
        now: Instant,
    ) {
        self.record.borrow_mut().last_media_timestamp = Some(timestamp);
        let mut stats = self.ctx.stats.borrow_mut();
        stats.video_messages += 1;
        if inspect_video(prefix).is_some_and(|i| i.is_keyframe()) {
            stats.keyframes += 1;
            if !self.got_keyframe {
                self.got_keyframe = true;
                let elapsed = now.duration_since(self.started).as_micros() as u64;
                if self.crowd {
                    record(&mut stats.crowd_first_keyframe_us, elapsed);
                } else {
                    record(&mut stats.first_keyframe_us, elapsed);
                }
            }
        }
        let m = match (self.tracks.as_mut(), whole) {
            // Multitrack: each track is checked on its own; the stream's numbers (loss,
            // latency) follow video track 0.
            (Some(checker), Some(whole)) => {
                let track0 = checker.on_video(whole, &mut stats.tracks);
                self.record.borrow_mut().tracks_seen = Some(checker.seen_mask());
                let Some(track0) = track0 else {
                    return;
                };
                stats.markers += 1;
                if track0.intact {
                    stats.verified += 1;
                } else {
                    stats.corrupted += 1;
                }
                track0.marker
            }
            _ => {
                let Some(m) = marker::find(prefix) else {
                    return;
                };
                stats.markers += 1;
                if m.payload_len != len {
                    stats.corrupted += 1;
                } else if let Some(whole) = whole {
                    match marker::checked_part(whole) {
                        Some(part) if marker::checksum(part) == m.checksum => stats.verified += 1,
                        _ => stats.corrupted += 1,
                    }
                }
                m
            }
        };
        match self.next_seq {
            Some(next) if m.seq < next => stats.reordered += 1,
            Some(next) => {
                stats.lost += m.seq - next;
                self.next_seq = Some(m.seq + 1);
            }
            None => self.next_seq = Some(m.seq + 1),
        }
        if m.seq >= self.join_seq {
            let at = clock::micros(now);
            let latency = at.saturating_sub(m.send_us);
            stats.record_latency(&self.ctx.shared, at, latency);
            if let Ok(mut recent) = self.ctx.shared.recent_latency[self.ctx.index].lock() {
                record(&mut recent, latency);
            }
        }
    }
}

/// A batch reader's schedule (`--read-interval`): when it next drains its socket.
pub(crate) struct BatchReader {
    interval: Duration,
    /// This viewer's offset on the common grid of wake-ups.
    phase: Duration,
    /// Between a wake-up and the `EAGAIN` that ends the drain.
    draining: bool,
    /// When the last byte arrived, for the read timeout.
    last_data: Instant,
}

impl BatchReader {
    /// The next read: sleeps until the next wake-up unless a drain is under way, then one
    /// non-blocking `recv`. `Ok(0)` is the end of the stream; no data for `timeout` is
    /// `TimedOut`.
    async fn read(&mut self, fd: RawFd, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        loop {
            if !self.draining {
                let now = Instant::now();
                sleep(self.next_wake(now).saturating_duration_since(now)).await;
                self.draining = true;
            }
            // SAFETY: `fd` is the socket the viewer's `TcpStream` owns and keeps open, no
            // glommio read is pending on it, and `buf` is writable for `buf.len()` bytes.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                if n > 0 {
                    self.last_data = Instant::now();
                }
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    self.draining = false;
                    if self.last_data.elapsed() > timeout {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }

    /// The first wake-up after `now`: the grid `epoch + phase + k * interval`.
    fn next_wake(&self, now: Instant) -> Instant {
        let interval = self.interval.as_micros().max(1) as u64;
        let phase = self.phase.as_micros() as u64 % interval;
        let since = clock::micros(now);
        let k = since.saturating_sub(phase) / interval + 1;
        clock::epoch() + Duration::from_micros(phase + k * interval)
    }
}

/// Asks for a receive buffer of `bytes` (the kernel doubles it for its bookkeeping). A
/// failure only means the default stays, so it is ignored.
fn set_receive_buffer(fd: RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket, and the option value is a c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

thread_local! {
    /// The rustls client configuration of this thread's rtmps:// viewers, made once.
    static TLS_CONFIG: RefCell<Option<Result<std::sync::Arc<rustls::ClientConfig>, String>>> =
        const { RefCell::new(None) };
}

/// Writes whatever the session has queued.
async fn flush_session(stream: &mut TcpStream, session: &mut ClientSession) -> io::Result<()> {
    while let Some(out) = session.poll_transmit() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

/// The control messages a counting viewer sends itself once the session is out of the
/// loop: acknowledgements of the server's window, and ping responses.
#[derive(Default)]
pub(crate) struct ControlReplies {
    peer_window: u32,
    /// Chunk-stream bytes received when the last acknowledgement went out.
    acked: u64,
    out: BytesMut,
}

impl ControlReplies {
    fn send(&mut self, message: ControlMessage) {
        // A fresh encoder writes a format-0 header, which depends on no earlier state the
        // session's own encoder left on the control chunk stream.
        ChunkEncoder::new().encode(csid::PROTOCOL_CONTROL, &message.to_message(), &mut self.out);
    }

    pub(crate) fn acknowledge(&mut self, received: u64) {
        if self.peer_window > 0 && received - self.acked >= u64::from(self.peer_window) {
            self.acked = received;
            self.send(ControlMessage::Acknowledgement {
                sequence: received as u32,
            });
        }
    }

    pub(crate) fn take(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }
}
