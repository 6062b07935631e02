//! Stored files over HTTP: `GET /vod/{app}/{name}.flv|.mp4` on the media HTTP listener,
//! as a plain download with byte ranges. ffmpeg makes the files at test time; ffprobe
//! reads an MP4 whose `moov` is at the end (it seeks there with a range request); raw
//! requests check statuses, heads and that every byte sent is the file's; names that try
//! to leave the directory, symlinks, directories and FIFOs are refused; clients that stop
//! reading do not make the relay read the file ahead of their sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{ffmpeg_clip, temp_path, tool, wait_output};

const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

const SECONDS: u32 = 4;

/// The fixtures, made once per test process: `clip.flv`, `tail.mp4` (moov at the end, as
/// ffmpeg writes by default), `big.flv` (3 MiB of pseudo-random bytes: a download is not
/// parsed, and many read chunks make it up), `large.flv` (32 MiB of them), and beside the directory a `secret.mp4` that
/// a symlink inside points to.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = temp_path("vod-http");
        let dir = root.join("store");
        std::fs::create_dir_all(&dir).unwrap();
        let make = |name: &str| ffmpeg_clip(&dir.join(name), SECONDS, &[]);
        make("clip.flv");
        make("tail.mp4");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let big: Vec<u8> = (0..3 * 1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join("big.flv"), big).unwrap();
        // 32 MiB: more than the kernel's socket buffers on both ends of a loopback
        // connection hold, so a client that stops reading leaves most of it unsent.
        let large: Vec<u8> = (0..4 * 1024 * 1024u64)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::write(dir.join("large.flv"), large).unwrap();
        std::fs::write(root.join("secret.mp4"), b"outside the VOD directory").unwrap();
        std::os::unix::fs::symlink(root.join("secret.mp4"), dir.join("escape.mp4")).unwrap();
        std::os::unix::fs::symlink(dir.join("tail.mp4"), dir.join("alias.mp4")).unwrap();
        std::fs::create_dir_all(dir.join("folder.mp4")).unwrap();
        let fifo = tool("mkfifo").arg(dir.join("pipe.flv")).status().unwrap();
        assert!(fifo.success());
        dir
    })
}

fn relay(name: &str) -> Relay {
    relay_with(name, "")
}

/// [`relay`] with `http` as the config's `[http]` section.
fn relay_with(name: &str, http: &str) -> Relay {
    let dir = fixtures().display().to_string();
    let config = format!(
        "[http]\n{http}\n[app.live]\nvod_dir = {dir:?}\n\n[app.closed]\nvod_dir = {dir:?}\nallow_play = false\n\n[app.plain]\n\n[app.keyed]\nvod_dir = {dir:?}\n[app.keyed.auth]\nplay_keys = {{ tail = \"s3cret\" }}\n"
    );
    Relay::start(SHARDCAST, name, &config, 1)
}

/// One raw request's answer.
struct Answer {
    status: u16,
    /// Header lines, names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with `extra` header lines and reads the answer to the end (every
/// answer closes the connection).
fn request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str, range: Option<&str>) -> Answer {
    match range {
        Some(r) => request(addr, "GET", path, &[&format!("Range: {r}")]),
        None => request(addr, "GET", path, &[]),
    }
}

#[test]
fn ffprobe_reads_an_mp4_with_moov_at_the_end_and_an_flv() {
    let relay = relay("vod-http-ffprobe");
    for (file, format) in [("tail.mp4", "mov"), ("clip.flv", "flv")] {
        let url = format!("http://{}/vod/live/{file}", relay.http);
        let child = tool("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=nb_read_frames,codec_name:format=format_name,duration",
            ])
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let errors = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "ffprobe {url}: {errors}\n{}",
            relay.log()
        );
        assert!(
            errors.trim().is_empty(),
            "ffprobe {url} complained: {errors}"
        );
        assert!(text.contains("codec_name=h264"), "{url}: {text}");
        assert!(
            text.contains(&format!("format_name={format}")),
            "{url}: {text}"
        );
        assert!(
            text.contains(&format!("nb_read_frames={}", SECONDS * 25)),
            "every frame read from {url}: {text}"
        );
        let duration: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("duration="))
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("{url}: no duration in {text}"));
        assert!(
            (duration - f64::from(SECONDS)).abs() < 0.2,
            "{url}: duration {duration}"
        );
    }
    // ffprobe asked for the moov at the end of tail.mp4 with a range.
    assert!(
        relay
            .log()
            .matches("HTTP download asks for a stored file")
            .count()
            >= 3,
        "{}",
        relay.log()
    );
}

#[test]
fn ranges_heads_and_statuses() {
    let relay = relay("vod-http-ranges");
    let addr = relay.http;
    let mp4 = std::fs::read(fixtures().join("tail.mp4")).unwrap();
    let big = std::fs::read(fixtures().join("big.flv")).unwrap();
    let len = mp4.len();

    // The whole file.
    let whole = get(addr, "/vod/live/tail.mp4", None);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(
        whole.header("content-length"),
        Some(len.to_string().as_str())
    );
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("access-control-allow-origin"), Some("*"));
    assert!(whole.body == mp4, "the body is the file");

    // Many read chunks, whole and from the middle across chunk boundaries.
    let all = get(addr, "/vod/live/big.flv", None);
    assert_eq!(all.status, 200);
    assert_eq!(all.header("content-type"), Some("video/x-flv"));
    assert!(
        all.body == big,
        "3 MiB sent intact ({} bytes came)",
        all.body.len()
    );
    let a = 65_000usize;
    let b = 1_000_000usize;
    let mid = get(addr, "/vod/live/big.flv", Some(&format!("bytes={a}-{b}")));
    assert_eq!(mid.status, 206);
    assert_eq!(
        mid.header("content-range"),
        Some(format!("bytes {a}-{b}/{}", big.len()).as_str())
    );
    assert_eq!(
        mid.header("content-length"),
        Some((b - a + 1).to_string().as_str())
    );
    assert!(mid.body == big[a..=b], "206 bytes equal the file's slice");

    // The three forms.
    let r = get(addr, "/vod/live/tail.mp4", Some("bytes=10-99"));
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-99/{len}").as_str())
    );
    assert_eq!(r.body, mp4[10..100]);
    let r = get(addr, "/vod/live/tail.mp4", Some("bytes=1000-"));
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-{}/{len}", len - 1).as_str())
    );
    assert_eq!(r.body, mp4[1000..]);
    let r = get(addr, "/vod/live/tail.mp4", Some("bytes=-300"));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, mp4[len - 300..]);
    // An end past the file is cut to it.
    let r = get(
        addr,
        "/vod/live/tail.mp4",
        Some(&format!("bytes={}-{}", len - 5, len + 100)),
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, mp4[len - 5..]);

    // Unsatisfiable: 416 with the length.
    for range in [format!("bytes={len}-"), "bytes=-0".to_owned()] {
        let r = get(addr, "/vod/live/tail.mp4", Some(&range));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
        assert!(r.body.is_empty());
    }
    // Several ranges, or another unit: the whole file.
    let r = get(addr, "/vod/live/tail.mp4", Some("bytes=0-1,5-9"));
    assert_eq!(r.status, 200);
    assert!(r.body == mp4);

    // HEAD: the same head, no body.
    let h = request(addr, "HEAD", "/vod/live/tail.mp4", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some(len.to_string().as_str()));
    assert!(h.body.is_empty());
    let h = request(addr, "HEAD", "/vod/live/tail.mp4", &["Range: bytes=0-9"]);
    assert_eq!(h.status, 206);
    assert_eq!(h.header("content-length"), Some("10"));
    assert!(h.body.is_empty());

    // The play checks: an application that does not allow playing, one with no vod_dir,
    // none at all.
    assert_eq!(get(addr, "/vod/closed/tail.mp4", None).status, 403);
    assert_eq!(get(addr, "/vod/plain/tail.mp4", None).status, 404);
    assert_eq!(get(addr, "/vod/nowhere/tail.mp4", None).status, 404);
    // Play keys as for HTTP-FLV: the stored name's key in the query.
    assert_eq!(get(addr, "/vod/keyed/tail.mp4", None).status, 403);
    assert_eq!(get(addr, "/vod/keyed/tail.mp4?key=wrong", None).status, 403);
    let keyed = get(addr, "/vod/keyed/tail.mp4?key=s3cret", Some("bytes=0-3"));
    assert_eq!(keyed.status, 206);
    assert_eq!(keyed.body, mp4[..4]);
}

#[test]
fn names_that_leave_the_directory_and_odd_files_are_refused() {
    let relay = relay("vod-http-confined");
    let addr = relay.http;
    // Traversal in any spelling never reaches the file system: 400.
    for path in [
        "/vod/live/..%2fsecret.mp4",
        "/vod/live/%2e%2e%2fsecret.mp4",
        "/vod/live/%2e%2e.mp4",
        "/vod/live/..%5csecret.mp4",
        "/vod/live/%2fetc%2fpasswd.flv",
        "/vod/%2e%2e/secret.mp4",
        "/vod/live/../secret.mp4",
    ] {
        let r = get(addr, path, None);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !r.body.windows(7).any(|w| w == b"outside"),
            "{path} served the outside file"
        );
    }
    // A symlink leading outside, a directory, a FIFO (answered at once, not hung on), a
    // missing file: 404.
    for name in ["escape.mp4", "folder.mp4", "pipe.flv", "missing.mp4"] {
        let started = Instant::now();
        let r = get(addr, &format!("/vod/live/{name}"), None);
        assert_eq!(r.status, 404, "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name} answered late"
        );
        assert!(!r.body.windows(7).any(|w| w == b"outside"), "{name}");
    }
    let log = relay.log();
    assert!(log.contains("leads outside the VOD directory"), "{log}");
    assert!(log.contains("is not a regular file"), "{log}");
    // A symlink that stays inside is the file it names.
    let r = get(addr, "/vod/live/alias.mp4", Some("bytes=0-15"));
    assert_eq!(r.status, 206);
    assert_eq!(
        r.body,
        std::fs::read(fixtures().join("tail.mp4")).unwrap()[..16]
    );
}

/// The relay's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status")
        * 1024
}

#[test]
fn clients_that_stop_reading_hold_little_memory() {
    let relay = relay("vod-http-backpressure");
    let large = std::fs::read(fixtures().join("large.flv")).unwrap();
    let before = rss_bytes(relay.pid());
    // 8 downloads of the 32 MiB file whose clients read nothing: the kernel's buffers take
    // a few MiB of each; were the file read ahead of the socket, the relay would hold the
    // other 200 MiB or so.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(relay.http).unwrap();
            s.write_all(b"GET /vod/live/large.flv HTTP/1.1\r\nHost: test\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    let during = rss_bytes(relay.pid());
    let grown = during.saturating_sub(before);
    assert!(
        grown < 16 * 1024 * 1024,
        "8 stalled downloads grew the relay by {} KiB",
        grown / 1024
    );
    // They are still there, and one that starts reading gets every byte.
    let mut first = stalled.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    first.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(raw[..end].starts_with(b"HTTP/1.1 200"));
    assert!(
        raw[end + 4..] == large[..],
        "the stalled download resumed intact"
    );
}

#[test]
fn a_download_whose_client_stops_reading_is_closed_after_send_timeout_ms() {
    let relay = relay_with("vod-http-send-timeout", "send_timeout_ms = 1500\n");
    let large_len = std::fs::metadata(fixtures().join("large.flv"))
        .unwrap()
        .len();
    let mut stalled = TcpStream::connect(relay.http).unwrap();
    stalled
        .write_all(b"GET /vod/live/large.flv HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let local = stalled.local_addr().unwrap().to_string();
    let listed = |relay: &Relay| relay.clients().iter().any(|c| c["addr"] == local.as_str());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !listed(&relay) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(listed(&relay), "the download is listed while it runs");
    // The kernel's buffers fill within moments; then nothing moves for 1.5 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&relay) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!listed(&relay), "the stalled download was closed");
    // What the kernel held still arrives, then the end: less than the file.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = stalled.read_to_end(&mut raw);
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    assert!(
        (raw.len() as u64) < large_len,
        "{} of {large_len} bytes",
        raw.len()
    );
}
