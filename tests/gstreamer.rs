//! GStreamer as the third-party client it is for many operators: `rtmp2sink` publishes
//! H.264 + AAC that ffmpeg and GStreamer's `rtmp2src` play, the admin API naming the
//! codecs GStreamer sent; `rtmp2src` plays a stored file to its end and stops by itself,
//! with every frame of the file; `rtmpsrc` (GStreamer over librtmp) plays live.
//!
//! What GStreamer writes is read back with ffmpeg (`framecrc`), not ffprobe: a file that
//! `rtmp2src` saved ends with the `onPlayStatus` data message as a script tag, which
//! ffprobe 5.1's `-count_frames` crashes on (a data stream that appears at the end).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    ffmpeg_clip, ffmpeg_play, framecrc_counts, temp_path, tool, tool_exists, wait_output,
};

const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");
const WAIT: Duration = Duration::from_secs(15);

fn gst() -> Command {
    assert!(
        tool_exists("gst-launch-1.0"),
        "gst-launch-1.0 is not installed (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav, or run bash .ci/run)"
    );
    let mut cmd = tool("gst-launch-1.0");
    cmd.arg("-q");
    cmd
}

/// `rtmp2sink` publishing `seconds` of a 320x240 25 fps test picture (H.264, a keyframe
/// a second) and a sine (AAC) to `url`, paced in real time.
fn gst_publish(url: &str, seconds: u32) -> Child {
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={frames} \
         ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! h264parse \
         ! flvmux streamable=true name=mux ! rtmp2sink location={url} \
         audiotestsrc is-live=true num-buffers={buffers} ! audioconvert ! avenc_aac \
         ! aacparse ! mux.",
        frames = seconds * 25,
        // audiotestsrc's buffers are 1024 samples at 44.1 kHz.
        buffers = seconds * 44100 / 1024,
    );
    gst()
        .args(pipeline.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A GStreamer pipeline from `source` into the file `out`.
fn gst_save(source: &str, out: &Path) -> Child {
    gst()
        .args(source.split_whitespace())
        .args(["!", "filesink"])
        .arg(format!("location={}", out.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// ffmpeg's (video, audio) frame counts of a saved FLV, every frame decoded.
fn decoded_frames(file: &Path) -> (usize, usize) {
    let out = tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-map", "0:a:0", "-f", "framecrc", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg decodes {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    framecrc_counts(&out.stdout)
}

#[test]
fn gstreamer_publishes_and_ffmpeg_and_gstreamer_play() {
    let relay = Relay::start(
        SHARDCAST,
        "gst-live",
        "[app.live]\nunpublish_grace_ms = 500\n",
        2,
    );
    let publisher = gst_publish(&relay.url("gst"), 8);
    let stream = relay
        .wait_stream("live/gst", WAIT, |s| {
            s.is_some_and(|s| s["video"]["codec"].is_string() && s["audio"]["codec"].is_string())
        })
        .expect("the admin API shows GStreamer's stream with both codecs");
    assert_eq!(stream["video"]["codec"], "H264", "{stream}");
    assert_eq!(stream["audio"]["codec"], "AAC", "{stream}");
    assert_eq!(stream["video"]["width"], 320, "{stream}");

    let ffmpeg = ffmpeg_play(&relay.url("gst"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let saved = temp_path("gst-live-rtmp2src.flv");
    let rtmp2src = gst_save(&format!("rtmp2src location={}", relay.url("gst")), &saved);

    let published = wait_output(publisher, WAIT);
    assert!(
        published.status.success(),
        "rtmp2sink: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    // Both players end by themselves once the publisher is gone for the grace period.
    let played = wait_output(ffmpeg, WAIT);
    assert!(
        played.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&played.stderr)
    );
    let (video, audio) = framecrc_counts(&played.stdout);
    // Joined a moment after the publish started: most of 8 s (200 frames, 344 buffers).
    assert!(video >= 120, "ffmpeg decoded {video} video frames");
    assert!(audio >= 200, "ffmpeg decoded {audio} audio frames");
    let saved_out = wait_output(rtmp2src, WAIT);
    assert!(
        saved_out.status.success(),
        "rtmp2src: {}",
        String::from_utf8_lossy(&saved_out.stderr)
    );
    let (video, audio) = decoded_frames(&saved);
    assert!(video >= 120, "rtmp2src saved {video} video frames");
    assert!(audio >= 200, "rtmp2src saved {audio} audio frames");
    let _ = std::fs::remove_file(&saved);
}

#[test]
fn gstreamer_plays_a_stored_file_to_its_end_and_live_over_librtmp() {
    let dir = temp_path("gst-vod");
    ffmpeg_clip(&dir.join("clip.flv"), 4, &[]);
    let config = format!("[app.live]\nvod_dir = {:?}\n", dir.display().to_string());
    let relay = Relay::start(SHARDCAST, "gst-vod", &config, 1);

    let saved = temp_path("gst-vod-rtmp2src.flv");
    let rtmp2src = gst_save(&format!("rtmp2src location={}", relay.url("clip")), &saved);
    let out = wait_output(rtmp2src, WAIT);
    assert!(
        out.status.success(),
        "rtmp2src ends by itself at the end of the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        decoded_frames(&saved),
        decoded_frames(&dir.join("clip.flv")),
        "every frame of the file"
    );

    // rtmpsrc (librtmp) on a live stream: it plays until stopped, so it is given a few
    // seconds and then its file is read.
    let publisher = shardcast_test_support::tools::ffmpeg_publish(&relay.url("onair"), 8, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(relay.wait_published("live/onair", WAIT).is_some());
    let live = temp_path("gst-live-rtmpsrc.flv");
    let mut rtmpsrc = gst_save(
        &format!("rtmpsrc location={} num-buffers=40", relay.url("onair")),
        &live,
    );
    let deadline = std::time::Instant::now() + WAIT;
    while rtmpsrc.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = rtmpsrc.kill();
    let _ = rtmpsrc.wait();
    let _ = wait_output(publisher, WAIT);
    let out = tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&live)
        .args(["-map", "0:v:0", "-f", "framecrc", "-"])
        .output()
        .unwrap();
    let (video, _) = framecrc_counts(&out.stdout);
    assert!(
        video >= 25,
        "rtmpsrc got {video} video frames: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&saved);
    let _ = std::fs::remove_file(&live);
}
