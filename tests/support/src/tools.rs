//! The real programs a test runs and the plumbing around them: ffmpeg, ffprobe and
//! rtmpdump as commands, free ports, temp paths, and waiting on child processes with a
//! deadline.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `N` different TCP ports nobody listens on right now. Each is held until all are found:
/// the kernel may hand out a port it has just been given back, and two listeners of one
/// relay on one port would share it (SO_REUSEPORT) instead of failing.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Whether the program `name` is installed (on the PATH).
pub fn tool_exists(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a real client program; fails the test with a clear message if it is not installed.
pub fn tool(name: &str) -> Command {
    assert!(
        tool_exists(name),
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
    ffmpeg_play_with(url, &[])
}

/// [`ffmpeg_play`] with input options before `-i` (`-rtmp_buffer 100`: the buffer length it
/// announces, in milliseconds).
pub fn ffmpeg_play_with(url: &str, input_options: &[&str]) -> Command {
    let mut cmd = tool("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-rw_timeout",
        "15000000",
    ]);
    cmd.args(input_options);
    cmd.args([
        "-i", url, "-map", "0:v:0", "-map", "0:a:0", "-f", "framecrc", "-",
    ]);
    cmd
}

/// Writes a `seconds`-long test clip to `out` with real ffmpeg: a 320x240 25 fps test
/// picture as H.264 (a keyframe a second, so 25 video frames a second) and a 440 Hz sine as
/// AAC, in the container `out`'s extension names; `extra` goes before the output (muxer
/// options such as `-movflags +faststart`). Fails the test if ffmpeg does.
pub fn ffmpeg_clip(out: &Path, seconds: u32, extra: &[&str]) {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let made = tool("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(extra)
        .arg(out)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "ffmpeg writes {}: {}",
        out.display(),
        String::from_utf8_lossy(&made.stderr)
    );
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

/// Waits for a child with a deadline, killing it (and failing the test with what it
/// printed: the end of its stdout, if piped, and its stderr) if it runs over.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            // A player's stdout can be a line per frame: its end is what tells.
            let stdout = &out.stdout[out.stdout.len().saturating_sub(4096)..];
            panic!(
                "process ran past {limit:?}; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(stdout),
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

/// A directory of this test process's own under the system's temp dir (created).
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardcast-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `name` in [`temp_dir`] (not created).
pub fn temp_path(name: &str) -> PathBuf {
    temp_dir().join(name)
}

/// The lines of a tool's stderr when it runs with `-loglevel error`: each one is a problem
/// (the end of a live stream is not one).
pub fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect()
}
