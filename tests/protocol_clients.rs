//! The protocol core against the real clients: ffmpeg publishes to a minimal server built
//! from `ServerSession` and `std::net`; ffmpeg and rtmpdump play what it captured.

use std::net::TcpListener;
use std::time::Duration;

use shardcast::media::codec::{AudioCodec, VideoCodec, inspect_audio, inspect_video};
use shardcast::rtmp::MediaKind;
use shardcast::rtmp::amf0::{self, Amf0Value};
use shardcast_test_support::core_server::{Captured, capture_one_publish, replay_to_one_player};
use shardcast_test_support::tools::{
    ffmpeg_play, ffmpeg_publish, ffprobe_codecs, framecrc_counts, temp_path, tool, wait_output,
};

/// Publishes 3 s of generated H.264 + AAC with ffmpeg and returns what the core captured.
fn capture_ffmpeg_publish() -> Vec<Captured> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = capture_one_publish(listener);
    let child = ffmpeg_publish(&format!("rtmp://127.0.0.1:{port}/live/test"), 3, false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "ffmpeg publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.join().unwrap()
}

#[test]
fn ffmpeg_publish_delivers_headers_metadata_and_keyframes() {
    let captured = capture_ffmpeg_publish();
    let metadata = captured
        .iter()
        .find_map(|c| match c {
            Captured::Metadata(p) => Some(p.clone()),
            _ => None,
        })
        .expect("onMetaData arrived");
    let values = amf0::decode_all(&metadata).unwrap();
    assert_eq!(values[0].as_str(), Some("onMetaData"));
    let width = values[1].get("width").and_then(Amf0Value::as_f64);
    assert_eq!(width, Some(320.0), "metadata carries the real width");

    let video: Vec<_> = captured
        .iter()
        .filter_map(|c| match c {
            Captured::Media {
                kind: MediaKind::Video,
                payload,
                ..
            } => inspect_video(payload),
            _ => None,
        })
        .collect();
    let first = video.first().expect("video arrived");
    assert_eq!(first.codec, VideoCodec::Avc);
    assert!(
        first.is_sequence_header,
        "the AVC sequence header comes first"
    );
    let keyframes = video.iter().filter(|v| v.is_keyframe()).count();
    assert!(
        keyframes >= 3,
        "3 s at GOP 25 @ 25 fps: got {keyframes} keyframes"
    );
    assert!(
        video.len() >= 70,
        "about 75 video frames, got {}",
        video.len()
    );

    let audio: Vec<_> = captured
        .iter()
        .filter_map(|c| match c {
            Captured::Media {
                kind: MediaKind::Audio,
                payload,
                ..
            } => inspect_audio(payload),
            _ => None,
        })
        .collect();
    let first = audio.first().expect("audio arrived");
    assert_eq!(first.codec, AudioCodec::Aac);
    assert!(
        first.is_sequence_header,
        "the AAC sequence header comes first"
    );
    assert!(
        audio.len() > 100,
        "about 130 AAC frames, got {}",
        audio.len()
    );

    // Timestamps per kind never go backwards.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let ts: Vec<u32> = captured
            .iter()
            .filter_map(|c| match c {
                Captured::Media {
                    kind: k, timestamp, ..
                } if *k == kind => Some(*timestamp),
                _ => None,
            })
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "{kind:?} timestamps in order"
        );
    }
}

#[test]
fn ffmpeg_plays_what_the_core_replays() {
    let captured = capture_ffmpeg_publish();
    let sent_video = captured
        .iter()
        .filter(|c| matches!(c, Captured::Media { kind: MediaKind::Video, payload, .. } if !inspect_video(payload).is_some_and(|v| v.is_sequence_header || v.is_sequence_end)))
        .count();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = replay_to_one_player(listener, captured);
    let child = ffmpeg_play(&format!("rtmp://127.0.0.1:{port}/live/test"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    server.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg play failed: {stderr}");
    let (video, audio) = framecrc_counts(&out.stdout);
    assert_eq!(
        video, sent_video,
        "every video frame decoded; stderr: {stderr}"
    );
    assert!(audio > 100, "audio decoded: {audio} frames");
    assert!(
        !stderr.to_lowercase().contains("error"),
        "no decode errors: {stderr}"
    );
}

#[test]
fn rtmpdump_saves_what_the_core_replays() {
    let captured = capture_ffmpeg_publish();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = replay_to_one_player(listener, captured);
    let path = temp_path("core-rtmpdump.flv");
    let child = tool("rtmpdump")
        .args(["-q", "--live", "-r"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/test"))
        .arg("-o")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    server.join().unwrap();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "rtmpdump saved {size} bytes; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codecs = ffprobe_codecs(&path);
    assert!(
        codecs.contains(&"h264".to_owned()),
        "ffprobe found {codecs:?}"
    );
    assert!(
        codecs.contains(&"aac".to_owned()),
        "ffprobe found {codecs:?}"
    );
}
