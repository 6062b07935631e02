//! The synthetic source is real H.264 and AAC: ffprobe finds both streams in what
//! shardcast-load publishes through shardcast, and ffmpeg decodes them without an error.

use std::process::{Command, Stdio};
use std::time::Duration;

use shardcast_test_support::loadgen::{LoadGenerator, run, serial, text};
use shardcast_test_support::tools::{temp_dir, tool_exists, wait_output};

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

#[test]
fn ffmpeg_plays_the_synthetic_stream_through_shardcast() {
    assert!(
        tool_exists("ffprobe") && tool_exists("ffmpeg"),
        "ffmpeg and ffprobe are needed (apt-get install ffmpeg, or bash .ci/run)"
    );
    let _serial = serial();
    let server = LOAD.start_relay("load-synthetic");
    let url = server.url("synthetic");
    let publisher = LOAD
        .command(&["--url", &url, "--viewers", "0", "--duration", "12s"])
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

#[test]
fn a_real_flv_file_loops_with_markers_and_nothing_lost() {
    assert!(
        tool_exists("ffmpeg"),
        "ffmpeg is needed (apt-get install ffmpeg)"
    );
    let clip = temp_dir().join("clip.flv");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25:duration=2",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(&clip)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(made.status.success(), "ffmpeg: {}", text(&made.stderr));

    let _serial = serial();
    let server = LOAD.start_relay("load-file");
    let json = temp_dir().join("file.json");
    let mut cmd = LOAD.command(&[
        "--url",
        &server.url("file"),
        "--viewers",
        "5",
        "--duration",
        "5s",
        // Every viewer walks every frame, so each one checks the loop's markers.
        "--counting",
        "headers",
    ]);
    cmd.arg("--source").arg(&clip).arg("--json").arg(&json);
    let out = run(cmd, Duration::from_secs(60));
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}\n{table}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["viewers"]["connected"], 5, "{table}");
    assert_eq!(report["messages"]["lost"], 0, "{table}");
    assert_eq!(report["messages"]["reordered"], 0, "{table}");
    assert_eq!(report["messages"]["corrupted"], 0, "{table}");
    // A 2 s clip over about 4.5 s of viewing: the loop carried on, every frame marked.
    let video = report["messages"]["video"].as_u64().unwrap();
    let marked = report["messages"]["with_marker"].as_u64().unwrap();
    assert!(
        marked >= 5 * 90,
        "frames past the first loop arrive: {marked}\n{table}"
    );
    assert_eq!(
        video - marked,
        5,
        "only the sequence headers are unmarked:\n{table}"
    );
    assert_eq!(report["viewers"]["lagging"], 0, "{table}");
}
