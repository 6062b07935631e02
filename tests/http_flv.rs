//! The relay binary's HTTP-FLV and WebSocket-FLV viewers with real clients: ffmpeg and
//! ffprobe read `http://.../live/{key}.flv`, tungstenite reads it as WebSocket-FLV, and raw
//! sockets check the bytes (chunked framing, FLV tags) and hostile requests.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast::rtmp::MediaKind;
use shardcast_test_support::admin;
use shardcast_test_support::client::RtmpClient;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::script::{AAC_HEADER, AVC_HEADER, audio_frame, video_frame};
use shardcast_test_support::tools::{error_lines, tool, wait_output};
use tungstenite::Message;

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
const SCRIPT: u8 = 18;

/// Starts ffmpeg publishing `seconds` of live-paced 640x360 H.264 (a keyframe every 2 s)
/// + AAC to `key`, and waits until the relay has accepted the publish.
fn start_publisher(relay: &Relay, key: &str, seconds: u32) -> Child {
    let child = tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats", "-re"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=640x360:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=duration={seconds}"))
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "50"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv"])
        .arg(relay.url(key))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    relay
        .wait_published(&format!("live/{key}"), Duration::from_secs(10))
        .expect("the relay accepted ffmpeg's publish");
    child
}

/// One FLV tag as read off the wire.
#[derive(Clone, Debug)]
struct FlvTag {
    kind: u8,
    timestamp: u32,
    data: Vec<u8>,
}

impl FlvTag {
    /// The 11-byte tag header, the data, and (if there) the trailing PreviousTagSize.
    fn parse(bytes: &[u8]) -> FlvTag {
        assert!(bytes.len() >= 11, "an FLV tag is 11+ bytes: {bytes:?}");
        let size = u32::from_be_bytes([0, bytes[1], bytes[2], bytes[3]]) as usize;
        let timestamp = u32::from_be_bytes([bytes[7], bytes[4], bytes[5], bytes[6]]);
        assert!(bytes.len() >= 11 + size, "the tag holds its declared size");
        FlvTag {
            kind: bytes[0] & 0x1f,
            timestamp,
            data: bytes[11..11 + size].to_vec(),
        }
    }

    fn is_sequence_header(&self) -> bool {
        matches!(self.kind, AUDIO | VIDEO) && self.data.get(1) == Some(&0)
    }
}

/// What a late joiner must see: onMetaData first; each kind's sequence header before its
/// media; the first video frame after the AVC sequence header a keyframe; timestamps that
/// never go back within a kind.
fn check_tags(tags: &[FlvTag]) {
    assert!(!tags.is_empty(), "no tags");
    assert_eq!(
        tags[0].kind, SCRIPT,
        "onMetaData comes first: {:?}",
        tags[0]
    );
    assert!(
        tags[0].data.windows(10).any(|w| w == b"onMetaData"),
        "the first tag is onMetaData"
    );
    for kind in [AUDIO, VIDEO] {
        let of_kind: Vec<&FlvTag> = tags.iter().filter(|t| t.kind == kind).collect();
        assert!(of_kind.len() > 2, "too few tags of type {kind}");
        assert!(
            of_kind[0].is_sequence_header(),
            "type {kind}: the sequence header comes first: {:?}",
            &of_kind[0].data[..2]
        );
        for pair in of_kind.windows(2) {
            assert!(
                pair[1].timestamp >= pair[0].timestamp,
                "type {kind}: timestamps go back: {} then {}",
                pair[0].timestamp,
                pair[1].timestamp
            );
        }
    }
    let first_frame = tags
        .iter()
        .find(|t| t.kind == VIDEO && !t.is_sequence_header())
        .expect("a video frame");
    assert_eq!(
        first_frame.data[0], 0x17,
        "the first video frame is an AVC keyframe"
    );
}

/// A raw HTTP-FLV client: its own GET over a `TcpStream`, the head parsed, the body
/// de-chunked (when chunked) and walked tag by tag.
struct FlvReader {
    status: u16,
    /// Header lines, names lower-cased.
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    chunk_left: usize,
    /// The last chunk (`0\r\n\r\n`) was read.
    finished: bool,
    local: SocketAddr,
    bytes: u64,
}

impl FlvReader {
    fn get(addr: SocketAddr, path: &str) -> FlvReader {
        Self::request(addr, "GET", path, "HTTP/1.1")
    }

    fn request(addr: SocketAddr, method: &str, path: &str, version: &str) -> FlvReader {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "{method} {path} {version}\r\nHost: {addr}\r\n\r\n").unwrap();
        let local = s.local_addr().unwrap();
        let mut reader = BufReader::new(s);
        let mut status_line = String::new();
        reader
            .read_line(&mut status_line)
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: not a status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("a header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        FlvReader {
            status,
            headers,
            reader,
            chunked,
            chunk_left: 0,
            finished: false,
            local,
            bytes: 0,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body bytes (de-chunked); 0 at its end.
    fn read_body(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            let n = self.reader.read(buf)?;
            self.bytes += n as u64;
            return Ok(n);
        }
        if self.finished {
            return Ok(0);
        }
        if self.chunk_left == 0 {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(0);
            }
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16)
                .unwrap_or_else(|_| panic!("not a chunk size line: {line:?}"));
            if size == 0 {
                let mut end = String::new();
                self.reader.read_line(&mut end)?;
                assert_eq!(end, "\r\n", "the last chunk ends with an empty line");
                self.finished = true;
                return Ok(0);
            }
            self.chunk_left = size;
        }
        let want = buf.len().min(self.chunk_left);
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(0);
        }
        self.chunk_left -= n;
        self.bytes += n as u64;
        if self.chunk_left == 0 {
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
            assert_eq!(&crlf, b"\r\n", "a chunk ends with CRLF");
        }
        Ok(n)
    }

    /// Exactly `n` body bytes; None if the body ended before the first of them.
    fn body_exact(&mut self, n: usize) -> std::io::Result<Option<Vec<u8>>> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let r = self.read_body(&mut out[got..])?;
            if r == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the body ended inside a tag",
                ));
            }
            got += r;
        }
        Ok(Some(out))
    }

    /// The FLV header and PreviousTagSize0.
    fn flv_header(&mut self) -> Vec<u8> {
        let head = self.body_exact(13).unwrap().expect("an FLV header");
        assert_eq!(&head[..3], b"FLV", "the body starts with an FLV header");
        assert_eq!(&head[9..13], &[0, 0, 0, 0], "PreviousTagSize0 is 0");
        head
    }

    /// The next tag; None at the end of the body.
    fn next_tag(&mut self) -> std::io::Result<Option<FlvTag>> {
        let Some(head) = self.body_exact(11)? else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let rest = self.body_exact(size + 4)?.ok_or(ErrorKind::UnexpectedEof)?;
        let mut all = head;
        all.extend_from_slice(&rest);
        let tag = FlvTag::parse(&all);
        let prev = u32::from_be_bytes(rest[size..size + 4].try_into().unwrap()) as usize;
        assert_eq!(prev, size + 11, "PreviousTagSize is the tag's size");
        Ok(Some(tag))
    }

    /// Reads tags until `n` video frames (not sequence headers) have come.
    fn tags_until_video_frames(&mut self, n: usize) -> Vec<FlvTag> {
        let mut tags = Vec::new();
        let mut frames = 0;
        while frames < n {
            let tag = self
                .next_tag()
                .unwrap()
                .expect("the body goes on while the stream is live");
            if tag.kind == VIDEO && !tag.is_sequence_header() {
                frames += 1;
            }
            tags.push(tag);
        }
        tags
    }
}

/// A viewer that reads tags on a thread of its own until told to stop, counting bytes.
struct BackgroundViewer {
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Result<usize, String>>,
}

impl BackgroundViewer {
    fn start(mut reader: FlvReader) -> BackgroundViewer {
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bytes.clone(), stop.clone());
        let handle = thread::spawn(move || {
            reader.flv_header();
            let mut tags = 0;
            while !s.load(Ordering::Relaxed) {
                match reader.next_tag() {
                    Ok(Some(_)) => tags += 1,
                    Ok(None) => return Err(format!("the body ended after {tags} tags")),
                    Err(e) => return Err(format!("reading failed after {tags} tags: {e}")),
                }
                b.store(reader.bytes, Ordering::Relaxed);
            }
            Ok(tags)
        });
        BackgroundViewer {
            bytes,
            stop,
            handle,
        }
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits up to `limit` for the byte count to pass `than`.
    fn wait_grows(&self, than: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.bytes() > than {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("the background viewer: {e}"))
    }
}

/// Sends `raw` as is and reads everything until the relay closes (10 s at most).
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset after the answer (the relay closed with our bytes unread).
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !got.is_empty() => break,
            Err(e) => panic!("reading the answer to {:?}: {e}", raw_start(raw)),
        }
    }
    got
}

fn raw_start(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned()
}

fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// Waits up to `limit` for the peer to close `s` (EOF or reset); reads and drops anything
/// it sends first. The time it took, or None if it stayed open.
fn wait_closed(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) if start.elapsed() < limit => continue,
            Ok(_) => return None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

fn rss_bytes(relay: &Relay) -> u64 {
    let summary = relay.api("/api/v1/summaries");
    summary["data"]["shardcast"]["rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rss_bytes: {summary}"))
}

#[test]
fn ffmpeg_plays_http_flv_and_a_late_joiner_starts_on_a_keyframe() {
    let relay = Relay::start(SHARDCAST, "http-flv-ffmpeg", "", 2);
    let mut publisher = start_publisher(&relay, "cam", 20);
    // The GOP cache holds a partial GOP (keyframes every 2 s).
    thread::sleep(Duration::from_millis(2500));
    let url = relay.flv_url("cam");

    // Our own reader: the headers, and the bytes.
    let mut reader = FlvReader::get(relay.http, "/live/cam.flv");
    assert_eq!(reader.status, 200);
    assert_eq!(reader.header("content-type"), Some("video/x-flv"));
    assert_eq!(reader.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reader.header("cache-control"), Some("no-cache"));
    assert_eq!(reader.header("access-control-allow-origin"), Some("*"));
    let client = relay
        .client_by_addr(reader.local, Duration::from_secs(5))
        .expect("the API lists the HTTP viewer");
    assert_eq!(client["protocol"], "http_flv", "{client}");
    let header = reader.flv_header();
    assert_eq!(
        header[4] & 0x05,
        0x05,
        "the FLV header flags audio and video"
    );
    let tags = reader.tags_until_video_frames(60);
    check_tags(&tags);

    // ffmpeg decodes it, ffprobe describes it.
    let player = tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats"])
        .args(["-rw_timeout", "15000000", "-i", &url])
        .args(["-frames:v", "100", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let probe = tool("ffprobe")
        .args(["-v", "error", "-rw_timeout", "15000000"])
        .args(["-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "csv=p=0", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let played = wait_output(player, Duration::from_secs(30));
    let probed = wait_output(probe, Duration::from_secs(30));
    assert!(
        played.status.success() && error_lines(&played.stderr).is_empty(),
        "ffmpeg decoded 100 frames of http-flv cleanly: {}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert!(probed.status.success(), "ffprobe: {probed:?}");
    let streams = String::from_utf8_lossy(&probed.stdout);
    let mut streams: Vec<&str> = streams.lines().map(str::trim).collect();
    streams.sort();
    assert_eq!(streams, ["aac", "h264,640,360"], "ffprobe's view");

    // Our reader kept up all along.
    let more = reader.tags_until_video_frames(10);
    let last = tags.iter().rfind(|t| t.kind == VIDEO).unwrap().timestamp;
    assert!(more.iter().all(|t| t.kind != VIDEO || t.timestamp >= last));
    drop(reader);
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// A WebSocket message's FLV tag (one per binary message).
fn ws_tag(msg: Message) -> Option<FlvTag> {
    match msg {
        Message::Binary(b) => Some(FlvTag::parse(&b)),
        _ => None,
    }
}

/// Reads one server frame from a raw socket: (opcode, payload), None at EOF or error.
fn read_server_frame(r: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).ok()?;
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            r.read_exact(&mut l).ok()?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            r.read_exact(&mut l).ok()?;
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).ok()?;
    Some((h[0] & 0x0f, payload))
}

#[test]
fn websocket_flv_plays_answers_pings_and_closes_an_oversize_frame() {
    let relay = Relay::start(SHARDCAST, "http-flv-ws", "", 2);
    let mut publisher = start_publisher(&relay, "ws", 20);
    thread::sleep(Duration::from_millis(1000));

    let stream = TcpStream::connect(relay.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{}/live/ws.flv", relay.http);
    let (mut ws, response) = tungstenite::client(url.as_str(), stream).expect("WS handshake");
    assert_eq!(response.status().as_u16(), 101);
    let first = ws.read().unwrap();
    let Message::Binary(header) = first else {
        panic!("the first message is binary: {first:?}");
    };
    assert_eq!(&header[..3], b"FLV", "the FLV header comes first");
    let mut tags = Vec::new();
    while tags
        .iter()
        .filter(|t: &&FlvTag| t.kind == VIDEO && !t.is_sequence_header())
        .count()
        < 30
    {
        let msg = ws.read().unwrap();
        tags.push(ws_tag(msg).expect("only binary messages while playing"));
    }
    check_tags(&tags);

    // Ping gets pong, between the tags.
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no pong");
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            msg => tags.push(ws_tag(msg).expect("binary or pong")),
        }
    }

    // A second client declares a frame over the relay's 64 KiB limit.
    let mut raw = TcpStream::connect(relay.http).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        raw,
        "GET /live/ws.flv HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.http
    )
    .unwrap();
    let mut raw_reader = BufReader::new(raw.try_clone().unwrap());
    let mut line = String::new();
    raw_reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "upgrade: {line:?}");
    loop {
        line.clear();
        raw_reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    raw.write_all(&frame).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let close_code = loop {
        assert!(
            Instant::now() < deadline,
            "the oversize client was not closed"
        );
        match read_server_frame(&mut raw_reader) {
            None => break None,
            Some((0x8, payload)) => {
                break Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
            Some(_) => {}
        }
    };
    assert!(
        matches!(close_code, None | Some(1009)),
        "closed with 1009 (message too big), not {close_code:?}"
    );
    let mut rest = Vec::new();
    let _ = raw_reader.read_to_end(&mut rest);
    assert!(
        read_server_frame(&mut raw_reader).is_none(),
        "the connection closes"
    );

    // The first client keeps receiving, in order.
    let seen = tags.len();
    while tags.len() < seen + 50 {
        let msg = ws.read().unwrap();
        if let Some(tag) = ws_tag(msg) {
            tags.push(tag);
        }
    }
    check_tags(&tags);
    let _ = ws.close(None);
    let _ = publisher.kill();
    let _ = publisher.wait();
}

const HOSTILE_CONFIG: &str = r#"
[server]
handshake_timeout_ms = 1000
"#;

#[test]
fn hostile_http_requests_are_refused_and_no_viewer_notices() {
    let relay = Relay::start(SHARDCAST, "http-flv-hostile", HOSTILE_CONFIG, 2);
    let mut publisher = start_publisher(&relay, "x", 25);
    let viewer = FlvReader::get(relay.http, "/live/x.flv");
    assert_eq!(viewer.status, 200);
    let viewer = BackgroundViewer::start(viewer);
    assert!(
        viewer.wait_grows(0, Duration::from_secs(10)),
        "the viewer plays"
    );
    let http = relay.http;

    // A head over 16 KiB.
    let big = format!(
        "GET /live/x.flv HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    assert_eq!(status_of(&raw_exchange(http, big.as_bytes())), 431);
    // Methods and paths.
    let ask = |method: &str, path: &str| {
        admin::request(http, method, path, &[], b"")
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    };
    assert_eq!(ask("POST", "/live/x.flv").status, 405);
    assert_eq!(ask("DELETE", "/live/x.flv").status, 405);
    assert_eq!(ask("GET", "/../etc/passwd").status, 400);
    assert_eq!(ask("GET", "/live/..%2f..%2fetc%2fpasswd.flv").status, 400);
    assert_eq!(ask("GET", "/nope").status, 404);
    // CORS preflight.
    let preflight = ask("OPTIONS", "/live/x.flv");
    assert_eq!(preflight.status, 204);
    let methods = preflight
        .header("access-control-allow-methods")
        .expect("Access-Control-Allow-Methods");
    assert!(methods.contains("GET"), "{methods}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    // The relay answers one request per connection, and says so.
    assert_eq!(preflight.header("connection"), Some("close"));
    // HEAD on the live stream: the head, no body.
    let head = raw_exchange(
        http,
        format!("HEAD /live/x.flv HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes(),
    );
    assert_eq!(status_of(&head), 200);
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    assert_eq!(
        &head[end..],
        b"",
        "HEAD has no body: {}",
        String::from_utf8_lossy(&head)
    );
    let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(
        head_text.contains("content-type: video/x-flv"),
        "{head_text}"
    );
    assert!(head_text.contains("connection: close"), "{head_text}");

    // A slow loris: a partial head, then nothing.
    let mut loris = TcpStream::connect(http).unwrap();
    loris
        .write_all(b"GET /live/x.flv HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .unwrap();
    let took = wait_closed(&mut loris, Duration::from_secs(5))
        .expect("the slow loris is closed within handshake_timeout + slack");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");

    // A thousand idle connections.
    let rss_before = rss_bytes(&relay);
    let mut idle: Vec<TcpStream> = (0..1000)
        .map(|i| TcpStream::connect(http).unwrap_or_else(|e| panic!("idle connection {i}: {e}")))
        .collect();
    let rss_open = rss_bytes(&relay);
    let start = Instant::now();
    for (i, s) in idle.iter_mut().enumerate() {
        let limit = Duration::from_secs(8).saturating_sub(start.elapsed());
        assert!(
            wait_closed(s, limit.max(Duration::from_millis(100))).is_some(),
            "idle connection {i} is still open {:?} after the last connect",
            start.elapsed()
        );
    }
    drop(idle);
    let rss_after = rss_bytes(&relay);
    const LIMIT: u64 = 200 << 20;
    assert!(
        rss_before < LIMIT && rss_open < LIMIT && rss_after < LIMIT,
        "RSS {rss_before} -> {rss_open} (1,000 idle) -> {rss_after}"
    );

    // No other viewer noticed.
    let bytes = viewer.bytes();
    assert!(
        viewer.wait_grows(bytes, Duration::from_secs(10)),
        "the viewer still receives after all that"
    );
    let tags = viewer.finish();
    assert!(tags > 50, "{tags} tags");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

const WAIT_CONFIG: &str = r#"
[app.live]
wait_for_publisher_ms = 1000
"#;

#[test]
fn a_request_waits_for_a_publisher_then_gets_404_or_the_stream() {
    let relay = Relay::start(SHARDCAST, "http-flv-wait", WAIT_CONFIG, 2);

    // Nobody publishes: 404 once the wait has passed.
    let start = Instant::now();
    let none = FlvReader::get(relay.http, "/live/none.flv");
    let took = start.elapsed();
    assert_eq!(none.status, 404);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "404 after about a second, not {took:?}"
    );

    // A publisher starts within the wait: the waiting request gets the stream.
    let http = relay.http;
    let waiting = thread::spawn(move || {
        let mut reader = FlvReader::get(http, "/live/late.flv");
        if reader.status != 200 {
            return (reader.status, Vec::new());
        }
        reader.flv_header();
        let tags = reader.tags_until_video_frames(5);
        (reader.status, tags)
    });
    thread::sleep(Duration::from_millis(300));
    let mut publisher = RtmpClient::publisher(relay.port, "late");
    publisher.send_media(MediaKind::Video, 0, Bytes::from_static(AVC_HEADER));
    publisher.send_media(MediaKind::Audio, 0, Bytes::from_static(AAC_HEADER));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    while !waiting.is_finished() && Instant::now() < deadline {
        let ts = seq * 40;
        publisher.send_media(MediaKind::Video, ts, video_frame(seq, seq % 25 == 0, 500));
        publisher.send_media(MediaKind::Audio, ts, audio_frame(seq));
        let _ = publisher.drain();
        seq += 1;
        thread::sleep(Duration::from_millis(40));
    }
    let (status, tags) = waiting.join().unwrap();
    assert_eq!(status, 200, "the waiting request gets the stream");
    let frames: Vec<&FlvTag> = tags
        .iter()
        .filter(|t| t.kind == VIDEO && !t.is_sequence_header())
        .collect();
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[0].data[0], 0x17, "starting on a keyframe");
    assert!(
        tags.iter()
            .any(|t| t.kind == VIDEO && t.data[..] == AVC_HEADER[..]),
        "the AVC sequence header as published"
    );
}

const END_CONFIG: &str = r#"
[app.live]
unpublish_grace_ms = 500
"#;

#[test]
fn the_stream_ending_ends_the_chunked_body() {
    let relay = Relay::start(SHARDCAST, "http-flv-end", END_CONFIG, 2);
    let publisher = start_publisher(&relay, "ends", 3);
    let mut reader = FlvReader::get(relay.http, "/live/ends.flv");
    assert_eq!(reader.status, 200);
    reader.flv_header();
    // An HTTP/1.0 viewer gets a close-delimited body.
    let mut old = FlvReader::request(relay.http, "GET", "/live/ends.flv", "HTTP/1.0");
    assert_eq!(old.status, 200);
    assert_eq!(old.header("transfer-encoding"), None);
    assert_eq!(old.header("connection"), Some("close"));
    let http10 = thread::spawn(move || {
        old.flv_header();
        let mut tags = Vec::new();
        while let Some(tag) = old.next_tag().expect("the HTTP/1.0 body reads to its end") {
            tags.push(tag);
        }
        tags
    });
    let mut tags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(tag) = reader
        .next_tag()
        .expect("the body reads cleanly to its end")
    {
        assert!(Instant::now() < deadline, "the body did not end");
        tags.push(tag);
    }
    assert!(reader.finished, "the body ends with the last chunk");
    let published = wait_output(publisher, Duration::from_secs(20));
    assert!(published.status.success(), "{published:?}");
    assert!(
        tags.iter().filter(|t| t.kind == VIDEO).count() > 10,
        "media came before the end"
    );
    check_tags(&tags);
    let old_tags = http10.join().unwrap();
    check_tags(&old_tags);
    assert!(
        old_tags.iter().filter(|t| t.kind == VIDEO).count() > 10,
        "the HTTP/1.0 viewer got media, then EOF"
    );
    // Then the connection closes.
    let mut rest = Vec::new();
    let n = reader.reader.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)),
        "nothing after the last chunk, then EOF: {n:?} {rest:?}"
    );
}
