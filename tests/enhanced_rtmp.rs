//! Enhanced RTMP v2 through the relay binary, with real clients: the ffmpeg 9 static build
//! from PyPI's `imageio-ffmpeg` (`.ci/run` installs it) publishes HEVC, AV1, VP9, Opus and
//! a multitrack stream (H.264 + HEVC video, two AAC tracks) and plays them as a late
//! joiner that declares its codecs (`-rtmp_enhanced_codecs`, sent as `fourCcList`);
//! Debian's ffmpeg 5.1 and rtmpdump play the multitrack stream as legacy players. What
//! each viewer was sent is read from the admin API, not from logs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use shardcast::rtmp::ClientEvent;
use shardcast::rtmp::capabilities::{CAPS_EX_MULTITRACK, CAPS_EX_RECONNECT, CodecSet};
use shardcast_test_support::client::RtmpClient;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{ffprobe_codecs, temp_path, tool, wait_output};

const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

const CONFIG: &str = r#"
[app.live]
unpublish_grace_ms = 500
"#;

/// Every codec the late joiners declare.
const DECLARED: &str = "avc1,hvc1,av01,vp09,mp4a,Opus";

/// The ffmpeg 9 binary inside the `imageio-ffmpeg` wheel.
fn ffmpeg9() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "imageio-ffmpeg is not installed (pip install imageio-ffmpeg, or run bash .ci/run): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// ffmpeg 9 publishing `seconds` of live-paced 160x120 video and a tone with the given
/// codec arguments to `url`.
fn publish(url: &str, seconds: u32, codec_args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(ffmpeg9());
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostats", "-re"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=160x120:rate=15:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=880:duration={seconds}"))
        .args(["-g", "15", "-pix_fmt", "yuv420p"])
        .args(codec_args)
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("ffmpeg 9 starts")
}

/// What a late-joining ffmpeg 9 player decoded: the input's stream lines as ffmpeg
/// describes them, frames decoded per stream, and its error lines.
struct Played {
    streams: Vec<String>,
    frames: Vec<usize>,
    errors: Vec<String>,
}

/// ffmpeg (9 when `declare`, which sends `fourCcList`; else `program`) decoding every
/// stream of `url` for `seconds`.
fn play(program: &PathBuf, url: &str, declare: bool, seconds: u32) -> Played {
    let mut cmd = Command::new(program);
    cmd.args(["-hide_banner", "-nostats", "-rw_timeout", "15000000"]);
    if declare {
        cmd.args(["-rtmp_enhanced_codecs", DECLARED]);
    }
    cmd.args(["-i", url, "-map", "0", "-t", &seconds.to_string()])
        .args(["-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(cmd.spawn().unwrap(), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let input = stderr.split("Output #0").next().unwrap_or_default();
    let streams: Vec<String> = input
        .lines()
        // The input's streams, not the "Stream mapping" lines (`#0:0 -> #0:0`).
        .filter(|l| l.trim_start().starts_with("Stream #0:") && !l.contains("->"))
        .map(|l| l.trim().to_owned())
        .collect();
    let mut frames = vec![0; streams.len()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(i) = line
            .split(',')
            .next()
            .and_then(|i| i.trim().parse::<usize>().ok())
            && i < frames.len()
        {
            frames[i] += 1;
        }
    }
    let errors = stderr
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("error") || l.contains("invalid") || l.contains("not found"))
                && !l.contains("end of file")
        })
        .map(str::to_owned)
        .collect();
    Played {
        streams,
        frames,
        errors,
    }
}

/// Waits for the publisher to be accepted, then for the stream's GOP to move past its
/// first keyframe, so the player is a late joiner served from the cache.
fn join_late(relay: &Relay, key: &str) {
    relay
        .wait_published(&format!("live/{key}"), Duration::from_secs(15))
        .expect("the relay accepted ffmpeg 9's publish");
    thread::sleep(Duration::from_millis(2500));
}

fn finish(publisher: std::process::Child) {
    let out = wait_output(publisher, Duration::from_secs(40));
    assert!(
        out.status.success(),
        "ffmpeg 9 publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hevc_av1_vp9_and_opus_decode_on_late_joiners_that_declare_them() {
    let relay = Relay::start(SHARDCAST, "ertmp-single", CONFIG, 2);
    let cases: [(&str, &[&str], &str, &str); 3] = [
        (
            "hevc",
            &[
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error",
                "-c:a",
                "aac",
                "-rtmp_enhanced_codecs",
                "hvc1,mp4a",
            ],
            "hevc",
            "aac",
        ),
        (
            "av1",
            &[
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "libsvtav1",
                "-preset",
                "12",
                "-svtav1-params",
                "lp=1",
                "-c:a",
                "libopus",
                "-rtmp_enhanced_codecs",
                "av01,Opus",
            ],
            "av1",
            "opus",
        ),
        (
            "vp9",
            &[
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-c:a",
                "libopus",
                "-rtmp_enhanced_codecs",
                "vp09,Opus",
            ],
            "vp9",
            "opus",
        ),
    ];
    // One at a time: three realtime encoders at once would starve a loaded 2-core machine.
    for (key, args, video, audio) in cases {
        let publisher = publish(&relay.url(key), 7, args);
        join_late(&relay, key);
        let played = play(&ffmpeg9(), &relay.url(key), true, 3);
        finish(publisher);
        assert_eq!(played.streams.len(), 2, "{key}: {:?}", played.streams);
        let video_line = played.streams.iter().position(|l| l.contains("Video:"));
        let audio_line = played.streams.iter().position(|l| l.contains("Audio:"));
        let (Some(v), Some(a)) = (video_line, audio_line) else {
            panic!("{key}: no video or no audio stream: {:?}", played.streams);
        };
        assert!(
            played.streams[v].contains(&format!("Video: {video}"))
                && played.streams[v].contains("160x120"),
            "{key}: the video's configuration reached the late joiner: {:?}",
            played.streams
        );
        assert!(
            played.streams[a].contains(&format!("Audio: {audio}"))
                && played.streams[a].contains("Hz"),
            "{key}: the audio's configuration reached the late joiner: {:?}",
            played.streams
        );
        assert!(
            played.frames[v] >= 20 && played.frames[a] >= 20,
            "{key}: decoded {:?} frames (video, audio at {v}, {a})",
            played.frames
        );
        assert_eq!(played.errors, Vec::<String>::new(), "{key}: decode errors");
    }
}

const MULTITRACK: &[&str] = &[
    "-map",
    "0:v",
    "-map",
    "0:v",
    "-map",
    "1:a",
    "-map",
    "2:a",
    "-c:v:0",
    "libx264",
    "-preset",
    "ultrafast",
    "-c:v:1",
    "libx265",
    "-x265-params",
    "log-level=error",
    "-c:a",
    "aac",
    "-rtmp_enhanced_codecs",
    "avc1,hvc1,mp4a",
];

#[test]
fn a_multitrack_stream_reaches_late_joiners_whole_and_legacy_players_as_track_0() {
    let relay = Relay::start(SHARDCAST, "ertmp-multitrack", CONFIG, 2);
    let publisher = publish(&relay.url("mt"), 9, MULTITRACK);
    join_late(&relay, "mt");

    // rtmpdump saves what it gets while the players run.
    let saved = temp_path("ertmp-rtmpdump.flv");
    let _ = std::fs::remove_file(&saved);
    let dumper = tool("rtmpdump")
        .args(["-q", "--live", "-B", "3", "-r"])
        .arg(relay.url("mt"))
        .arg("-o")
        .arg(&saved)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let legacy = {
        let url = relay.url("mt");
        thread::spawn(move || play(&PathBuf::from("ffmpeg"), &url, false, 3))
    };
    let declared = play(&ffmpeg9(), &relay.url("mt"), true, 3);
    let legacy = legacy.join().unwrap();
    let _ = wait_output(dumper, Duration::from_secs(30));
    finish(publisher);

    // The late joiner that declared the codecs: every track, each with its configuration.
    let s = &declared.streams;
    assert_eq!(s.len(), 4, "two video and two audio tracks: {s:?}");
    let has = |needle: &[&str]| s.iter().any(|l| needle.iter().all(|n| l.contains(n)));
    assert!(has(&["Video: h264", "160x120"]), "{s:?}");
    assert!(has(&["Video: hevc", "Main", "160x120"]), "{s:?}");
    assert_eq!(
        s.iter()
            .filter(|l| l.contains("Audio: aac (LC)") && l.contains("44100 Hz"))
            .count(),
        2,
        "both AAC tracks with their AudioSpecificConfig: {s:?}"
    );
    assert!(
        declared.frames.iter().all(|&n| n >= 15),
        "every track decodes: {:?} for {s:?}",
        declared.frames
    );
    // Every track starts at a keyframe of its own: track 1's inter frames that follow
    // track 0's keyframe (x265's reordering delay) are not sent before track 1's keyframe,
    // so the HEVC decoder never misses a reference ("Could not find ref with POC").
    assert_eq!(declared.errors, Vec::<String>::new(), "decode errors");

    // Debian's ffmpeg 5.1 declares nothing: track 0 of each kind, legacy H.264 and AAC,
    // and nothing it would misread.
    let s = &legacy.streams;
    assert_eq!(s.len(), 2, "ffmpeg 5.1 sees the legacy tracks only: {s:?}");
    assert!(s.iter().any(|l| l.contains("Video: h264")), "{s:?}");
    assert!(s.iter().any(|l| l.contains("Audio: aac")), "{s:?}");
    assert!(
        legacy.frames.iter().all(|&n| n >= 15),
        "{:?}",
        legacy.frames
    );
    assert_eq!(legacy.errors, Vec::<String>::new(), "ffmpeg 5.1 errors");

    assert_eq!(
        ffprobe_codecs(&saved),
        vec!["h264".to_owned(), "aac".to_owned()],
        "rtmpdump saved the legacy tracks and nothing else"
    );
}

#[test]
fn connect_result_carries_the_servers_capabilities() {
    let relay = Relay::start(SHARDCAST, "ertmp-caps", CONFIG, 1);
    let port: u16 = relay
        .url("x")
        .trim_start_matches("rtmp://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut client = RtmpClient::connect(port);
    client.wait_for(Duration::from_secs(10), |e| *e == ClientEvent::Connected);
    let caps = client
        .session
        .server_capabilities()
        .expect("the _result of connect was read")
        .clone();
    assert!(
        caps.declared,
        "the server sent fourCcList and the info maps"
    );
    assert!(caps.fourcc_list.contains(b"hvc1") && caps.fourcc_list.contains(b"Opus"));
    assert_eq!(caps.playable(), CodecSet::ALL, "CanForward for any codec");
    assert_ne!(caps.caps_ex & CAPS_EX_RECONNECT, 0);
    assert_ne!(caps.caps_ex & CAPS_EX_MULTITRACK, 0);
}

#[test]
fn an_undeclared_viewer_of_an_hevc_stream_gets_audio_and_no_video() {
    let relay = Relay::start(SHARDCAST, "ertmp-undeclared", CONFIG, 1);
    let args: &[&str] = &[
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error",
        "-c:a",
        "aac",
        "-rtmp_enhanced_codecs",
        "hvc1,mp4a",
    ];
    let publisher = publish(&relay.url("hevc"), 8, args);
    join_late(&relay, "hevc");
    // ffmpeg 9 without -rtmp_enhanced_codecs sends no fourCcList.
    let url = relay.url("hevc");
    let player = thread::spawn(move || play(&ffmpeg9(), &url, false, 3));
    let mut seen = None;
    for _ in 0..100 {
        if let Some(c) = relay
            .clients()
            .into_iter()
            .find(|c| c["role"] == "viewer" && c["video_withheld"].as_u64() > Some(5))
        {
            seen = Some(c);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let played = player.join().unwrap();
    finish(publisher);
    let viewer = seen.expect("the admin API shows the viewer's withheld video");
    assert_eq!(viewer["track_filter"], "legacy");
    assert_eq!(
        viewer["video_sent"], 0,
        "no video message was sent: {viewer}"
    );
    assert_eq!(played.streams.len(), 1, "audio only: {:?}", played.streams);
    assert!(
        played.streams[0].contains("Audio: aac"),
        "{:?}",
        played.streams
    );
    assert!(played.frames[0] >= 20, "{:?}", played.frames);
}
