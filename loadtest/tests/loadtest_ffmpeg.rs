//! The synthetic source is real H.264 and AAC: ffprobe finds both streams in what
//! shardcast-load publishes through shardcast, and ffmpeg decodes them without an error.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn ffmpeg_plays_the_synthetic_stream_through_shardcast() {
    assert!(
        tool_exists("ffprobe") && tool_exists("ffmpeg"),
        "ffmpeg and ffprobe are needed (apt-get install ffmpeg, or bash .ci/run)"
    );
    let _serial = serial();
    let server = Shardcast::start("");
    let url = server.url("synthetic");
    let publisher = load(&["--url", &url, "--viewers", "0", "--duration", "12s"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let streams = text(&probe.stdout);
    assert!(
        probe.status.success(),
        "ffprobe failed: {}",
        text(&probe.stderr)
    );
    assert!(
        streams.contains("h264,256,144"),
        "ffprobe streams: {streams}"
    );
    assert!(streams.contains("aac"), "ffprobe streams: {streams}");

    // Decode 3 s of both streams, stopping at the first decoding error.
    let decode = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-v", "error", "-xerror"])
        .args(["-rw_timeout", "10000000", "-i"])
        .arg(&url)
        .args([
            "-t", "3", "-map", "0:v:0", "-map", "0:a:0", "-f", "framecrc", "-",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let errors = text(&decode.stderr);
    assert!(decode.status.success(), "ffmpeg decode failed: {errors}");
    assert!(errors.trim().is_empty(), "ffmpeg reported errors: {errors}");
    let frames = text(&decode.stdout);
    let video = frames.lines().filter(|l| l.starts_with("0,")).count();
    let audio = frames.lines().filter(|l| l.starts_with("1,")).count();
    assert!(video >= 60, "about 90 video frames in 3 s, got {video}");
    assert!(audio >= 100, "about 140 audio frames in 3 s, got {audio}");

    let out = wait_output(publisher, Duration::from_secs(60));
    assert!(out.status.success(), "publisher: {}", text(&out.stderr));
}
