//! Shared test helpers: ports, real client processes (ffmpeg, ffprobe, rtmpdump), and a
//! minimal RTMP server built only from the protocol core and `std::net`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast::rtmp::{MediaKind, ServerEvent, ServerSession, ServerSessionConfig};

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
