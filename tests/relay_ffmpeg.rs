//! The relay binary with the real clients: ffmpeg publishes a generated H.264 + AAC stream;
//! ffmpeg, rtmpdump and `ClientSession` viewers play it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use shardcast::media::codec::inspect_video;
use shardcast::rtmp::{ClientEvent, MediaKind};
use shardcast_test_support::client::RtmpClient;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    error_lines, ffmpeg_play, ffmpeg_publish, ffprobe_codecs, framecrc_counts, temp_path, tool,
    wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

const CONFIG: &str = r#"
[app.live]
unpublish_grace_ms = 1000
"#;

/// Starts ffmpeg publishing `seconds` of live-paced H.264 + AAC to `key`, and waits until
/// the relay has accepted the publish.
fn start_publisher(relay: &Relay, key: &str, seconds: u32) -> std::process::Child {
    let child = ffmpeg_publish(&relay.url(key), seconds, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    relay
        .wait_published(&format!("live/{key}"), Duration::from_secs(10))
        .expect("the relay accepted ffmpeg's publish");
    child
}

#[test]
fn ffmpeg_and_rtmpdump_play_what_ffmpeg_publishes() {
    let relay = Relay::start(SHARDCAST, "ffmpeg-play", CONFIG, 2);
    let publisher = start_publisher(&relay, "cam", 8);
    let player = ffmpeg_play(&relay.url("cam"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let saved = temp_path("relay-rtmpdump.flv");
    let _ = std::fs::remove_file(&saved);
    let dumper = tool("rtmpdump")
        .args(["-q", "--live", "-r"])
        .arg(relay.url("cam"))
        .arg("-o")
        .arg(&saved)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let published = wait_output(publisher, Duration::from_secs(30));
    assert!(
        published.status.success(),
        "ffmpeg publish failed: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    // Both players end by themselves once the relay tells them the stream is over.
    let played = wait_output(player, Duration::from_secs(15));
    let (video, audio) = framecrc_counts(&played.stdout);
    assert!(
        video >= 150,
        "ffmpeg decoded {video} video frames of 200 (and {audio} audio)"
    );
    assert!(audio >= 200, "ffmpeg decoded {audio} audio frames");
    assert_eq!(
        error_lines(&played.stderr),
        Vec::<String>::new(),
        "ffmpeg reported decode errors"
    );
    let dumped = wait_output(dumper, Duration::from_secs(15));
    let codecs = ffprobe_codecs(&saved);
    assert!(
        codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
        "ffprobe found {codecs:?} in what rtmpdump saved ({} bytes); rtmpdump said: {}",
        std::fs::metadata(&saved).map_or(0, |m| m.len()),
        String::from_utf8_lossy(&dumped.stderr)
    );
}

/// What a `ClientSession` viewer saw from its play request on.
struct Joined {
    shard: usize,
    first_frame_after: Duration,
    events: Vec<ClientEvent>,
}

fn join_on_shard(relay: &Relay, shard: usize, key: &str) -> Joined {
    let mut client = RtmpClient::connect_on_shard(relay, shard);
    let asked = Instant::now();
    client.start_play(key);
    client.wait_for(Duration::from_secs(5), |e| {
        matches!(e, ClientEvent::Media { kind: MediaKind::Video, payload, .. }
            if inspect_video(payload).is_some_and(|i| !i.is_sequence_header))
    });
    let first_frame_after = asked.elapsed();
    // A second of stream after the first frame.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        if let Ok(events) = client.read_events(Duration::from_millis(50)) {
            client.seen.extend(events);
        }
    }
    Joined {
        shard,
        first_frame_after,
        events: std::mem::take(&mut client.seen),
    }
}

#[test]
fn a_viewer_joining_mid_stream_starts_at_a_keyframe_at_once() {
    let relay = Relay::start(SHARDCAST, "ffmpeg-join", CONFIG, 2);
    let publisher = start_publisher(&relay, "late", 10);
    let published_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5));

    let player = ffmpeg_play(&relay.url("late"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // One viewer on each shard: the publisher's shard serves it from its own GOP cache,
    // the other from the snapshot the origin sent it.
    let joined: Vec<Joined> = (0..2).map(|s| join_on_shard(&relay, s, "late")).collect();
    let joined_at = published_at.elapsed();

    for j in &joined {
        let shard = j.shard;
        assert!(
            j.first_frame_after < Duration::from_secs(2),
            "shard {shard}: first frame {:?} after play",
            j.first_frame_after
        );
        let video: Vec<(u32, bool, bool)> = j
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Media {
                    kind: MediaKind::Video,
                    timestamp,
                    payload,
                } => inspect_video(payload)
                    .map(|i| (*timestamp, i.is_sequence_header, i.is_keyframe())),
                _ => None,
            })
            .collect();
        let first_frame = video.iter().position(|v| !v.1).unwrap();
        assert!(
            video[..first_frame].iter().any(|v| v.1),
            "shard {shard}: the AVC sequence header comes before the first frame"
        );
        assert!(
            video[first_frame].2,
            "shard {shard}: the first video frame is a keyframe: {video:?}"
        );
        // The stream's clock, not a restart at zero: the cached GOP began at most a GOP
        // (1 s) before the viewer joined, some 5 s in.
        let start_ts = video[first_frame].0;
        assert!(
            start_ts >= 3500 && u128::from(start_ts) <= joined_at.as_millis() + 500,
            "shard {shard}: starts at {start_ts} ms, joined {joined_at:?} into the stream"
        );
        // Each kind's timestamps keep going forward (ffmpeg interleaves audio and video
        // by decoding time, so across kinds they may differ by a frame).
        let mut last = std::collections::HashMap::new();
        for (kind, ts) in j.events.iter().filter_map(classify_media) {
            let prev = last.insert(kind, ts).unwrap_or(0);
            assert!(ts >= prev, "shard {shard}: {kind} at {ts} after {prev}");
        }
        assert!(
            video.len() > 20,
            "shard {shard}: a second of video after joining, got {}",
            video.len()
        );
    }

    let published = wait_output(publisher, Duration::from_secs(30));
    assert!(published.status.success());
    let played = wait_output(player, Duration::from_secs(15));
    let (video, _) = framecrc_counts(&played.stdout);
    assert!(
        video >= 100,
        "ffmpeg decoded {video} video frames after joining at 5 s"
    );
    assert_eq!(
        error_lines(&played.stderr),
        Vec::<String>::new(),
        "ffmpeg reported decode errors after joining mid-stream"
    );
}

/// Audio and video messages: ("audio"|"video", timestamp).
fn classify_media(ev: &ClientEvent) -> Option<(&'static str, u32)> {
    match ev {
        ClientEvent::Media {
            kind: MediaKind::Video,
            timestamp,
            ..
        } => Some(("video", *timestamp)),
        ClientEvent::Media {
            kind: MediaKind::Audio,
            timestamp,
            ..
        } => Some(("audio", *timestamp)),
        _ => None,
    }
}
