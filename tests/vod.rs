//! Video on demand over RTMP: stored FLV and MP4 files made by ffmpeg at test time, played
//! by rtmpdump, ffmpeg and the crate's own client role (play ranges, seek, pause, resume,
//! getStreamLength, the end), names that try to leave the directory, and many viewers of
//! one file at different positions.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shardcast::rtmp::ClientEvent;
use shardcast::rtmp::amf0::Amf0Value;
use shardcast_test_support::client::{ReadEnd, RtmpClient};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    error_lines, ffmpeg_clip, ffmpeg_play, framecrc_counts, temp_path, tool, wait_output,
};

const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// Seconds of media in every fixture: 25 fps, a keyframe every second (`-g 25`), AAC.
const SECONDS: u32 = 6;

/// The fixtures, made once per test process: `clip.flv` (no keyframe index, as ffmpeg's FLV
/// muxer writes by default), `indexed.flv` (with one), `fast.mp4` (moov first) and
/// `tail.mp4` (moov at the end).
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_path("vod");
        std::fs::create_dir_all(&dir).unwrap();
        let make = |name: &str, extra: &[&str]| ffmpeg_clip(&dir.join(name), SECONDS, extra);
        make("clip.flv", &[]);
        make("indexed.flv", &["-flvflags", "add_keyframe_index"]);
        make("fast.mp4", &["-movflags", "+faststart"]);
        make("tail.mp4", &[]);
        dir
    })
}

fn relay(name: &str, dir: &Path) -> Relay {
    let config = format!(
        "[app.live]\nvod_dir = {:?}\nwait_for_publisher_ms = 1000\n",
        dir.display().to_string()
    );
    Relay::start(SHARDCAST, name, &config, 1)
}

fn is_video(e: &ClientEvent) -> bool {
    matches!(
        e,
        ClientEvent::Media {
            kind: shardcast::rtmp::MediaKind::Video,
            ..
        }
    )
}

/// A video message that is a keyframe (not a sequence header) at `ts`.
fn keyframe_at(e: &ClientEvent) -> Option<u32> {
    match e {
        ClientEvent::Media {
            kind: shardcast::rtmp::MediaKind::Video,
            timestamp,
            payload,
        } if payload.len() > 1 && payload[0] >> 4 == 1 && payload[1] == 1 => Some(*timestamp),
        _ => None,
    }
}

fn status_is(e: &ClientEvent, code: &str) -> bool {
    matches!(e, ClientEvent::Status { code: c, .. } if c == code)
}

#[test]
fn rtmpdump_plays_the_requested_range_with_the_files_timestamps() {
    let dir = fixtures();
    let relay = relay("vod-rtmpdump", dir);
    for file in ["clip", "mp4:fast.mp4"] {
        let out_path = temp_path(&format!("vod-range-{}.flv", file.replace(':', "-")));
        let out = tool("rtmpdump")
            .args(["-q", "-r", &relay.url(file), "--start", "2", "--stop", "4"])
            .arg("-o")
            .arg(&out_path)
            .output()
            .unwrap();
        let _ = out; // rtmpdump's exit code is 2 when it stops at --stop; the output decides.
        let probe = tool("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
            .arg(&out_path)
            .output()
            .unwrap();
        let times: Vec<f64> = String::from_utf8_lossy(&probe.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert!(!times.is_empty(), "{file}: rtmpdump wrote video");
        let first = times.iter().cloned().fold(f64::MAX, f64::min);
        let last = times.iter().cloned().fold(0.0, f64::max);
        // The relay sends the file's own timestamps from the keyframe at or before 2 s (at
        // 1.023 s: ffmpeg's AAC priming shifts the file by 23 ms) up to the stop at 4 s;
        // rtmpdump adds its --start to the timestamps it writes.
        let keyframe = first - 2.0;
        assert!(
            (0.95..=2.05).contains(&keyframe),
            "{file}: starts at the keyframe at or before 2 s: {keyframe}"
        );
        assert!(
            (1.9..=3.1).contains(&(last - first)),
            "{file}: from that keyframe to about 4 s: {first}..{last}"
        );
        assert!(
            (50..=80).contains(&times.len()),
            "{file}: 2-3 s of 25 fps video, not the whole file: {} frames",
            times.len()
        );
    }
}

#[test]
fn a_client_seeks_pauses_and_resumes_with_the_documented_notifications() {
    let dir = fixtures();
    let relay = relay("vod-control", dir);
    for file in ["clip", "indexed", "mp4:tail.mp4"] {
        let mut c = RtmpClient::connect(relay.port);
        c.session.play_range(file, 0.0, -1.0, 1000);
        c.flush().unwrap();
        let limit = Duration::from_secs(10);
        // ffmpeg's AAC priming shifts its files by about 23 ms: keyframes at 23, 1023...
        let first = c.wait_for(limit, |e| keyframe_at(e).is_some());
        let shift = keyframe_at(&first).unwrap();
        assert!(shift < 50, "{file}: starts at the first keyframe: {shift}");

        // Seek to 3.5 s: EOF, Seek.Notify, Begin, then the keyframe at 3 s.
        c.session.seek(3500.0);
        c.flush().unwrap();
        let mark = c.seen.len();
        let key = c.wait_for(limit, |e| keyframe_at(e).is_some_and(|t| t >= 2500));
        assert_eq!(
            keyframe_at(&key),
            Some(3000 + shift),
            "{file}: seek lands on the keyframe at or before 3.5 s"
        );
        let after: Vec<&ClientEvent> = c.seen[mark..].iter().collect();
        let pos = |pred: &dyn Fn(&ClientEvent) -> bool| after.iter().position(|e| pred(e));
        let eof = pos(&|e| matches!(e, ClientEvent::StreamEof(_)));
        let notify = pos(&|e| status_is(e, "NetStream.Seek.Notify"));
        let begin = pos(&|e| matches!(e, ClientEvent::StreamBegin(_)));
        let keyframe = pos(&|e| keyframe_at(e) == Some(3000 + shift));
        assert!(
            eof < notify && notify < begin && begin < keyframe && eof.is_some(),
            "{file}: EOF {eof:?}, Seek.Notify {notify:?}, Begin {begin:?}, keyframe {keyframe:?}"
        );
        // Nothing from before the seek position's keyframe after the Stream Begin.
        let stale = after[begin.unwrap()..]
            .iter()
            .filter(|e| matches!(e, ClientEvent::Media { timestamp, .. } if *timestamp < 3000))
            .count();
        assert_eq!(stale, 0, "{file}: no media from before the seek after it");

        // getStreamLength: the file's length in seconds (asked before the pause: after the
        // resume the rest of a short file may come at once, its end included).
        c.session.call(
            "getStreamLength",
            10.0,
            vec![Amf0Value::String(file.to_owned())],
        );
        c.flush().unwrap();
        let answer = c.wait_for(limit, |e| matches!(e, ClientEvent::CallResult { .. }));
        let ClientEvent::CallResult { value, .. } = answer else {
            unreachable!()
        };
        let length = value.as_f64().unwrap_or_default();
        assert!(
            (f64::from(SECONDS) - 0.2..=f64::from(SECONDS) + 0.1).contains(&length),
            "{file}: getStreamLength {length}"
        );

        // Pause: the notification, then nothing until the resume.
        c.session.pause(true, 3500.0);
        c.flush().unwrap();
        c.wait_for(limit, |e| status_is(e, "NetStream.Pause.Notify"));
        let paused_at = c.seen.len();
        let last_ts = c.seen[..paused_at]
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Media { timestamp, .. } => Some(*timestamp),
                _ => None,
            })
            .max()
            .unwrap();
        let quiet_until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < quiet_until {
            match c.read_events(Duration::from_millis(100)) {
                Ok(events) => c.seen.extend(events),
                Err(ReadEnd::Timeout) => {}
                Err(ReadEnd::Closed) => panic!("{file}: closed while paused"),
            }
        }
        let while_paused = c.seen[paused_at..]
            .iter()
            .filter(|e| matches!(e, ClientEvent::Media { .. }))
            .count();
        assert_eq!(while_paused, 0, "{file}: nothing sent while paused");

        // Resume: Unpause.Notify, then media continuing where it stopped.
        c.session.pause(false, 3500.0);
        c.flush().unwrap();
        c.wait_for(limit, |e| status_is(e, "NetStream.Unpause.Notify"));
        let unpaused = c
            .seen
            .iter()
            .rposition(|e| status_is(e, "NetStream.Unpause.Notify"))
            .unwrap();
        // The first media after the notification: it may have come in the same read (the
        // rest of a short file fits in one batch of the lead).
        if !c.seen[unpaused..]
            .iter()
            .any(|e| matches!(e, ClientEvent::Media { .. }))
        {
            c.wait_for(limit, |e| matches!(e, ClientEvent::Media { .. }));
        }
        let timestamp = c.seen[unpaused..]
            .iter()
            .find_map(|e| match e {
                ClientEvent::Media { timestamp, .. } => Some(*timestamp),
                _ => None,
            })
            .unwrap();
        assert!(
            timestamp <= last_ts + 100 && timestamp + 100 >= last_ts,
            "{file}: resumes where it stopped ({last_ts} ms), not at {timestamp} ms"
        );

        // The end: onPlayStatus Play.Complete, Stream EOF, Play.Stop, in that order.
        // From the resume on: the end may have come in the same read.
        let mark = unpaused;
        if !c.seen[mark..]
            .iter()
            .any(|e| status_is(e, "NetStream.Play.Stop"))
        {
            c.wait_for(Duration::from_secs(15), |e| {
                status_is(e, "NetStream.Play.Stop")
            });
        }
        let end: Vec<&ClientEvent> = c.seen[mark..].iter().collect();
        let complete = end.iter().position(|e| {
            matches!(e, ClientEvent::Data { payload, .. }
                if payload.windows(23).any(|w| w == b"NetStream.Play.Complete"))
        });
        let eof = end
            .iter()
            .rposition(|e| matches!(e, ClientEvent::StreamEof(_)));
        let stop = end.iter().position(|e| status_is(e, "NetStream.Play.Stop"));
        assert!(
            complete.is_some() && complete < eof && eof < stop,
            "{file}: Complete {complete:?}, EOF {eof:?}, Stop {stop:?}"
        );
    }
}

#[test]
fn get_stream_length_answers_for_flv_and_both_mp4_layouts_and_zero_for_unknown() {
    let dir = fixtures();
    let relay = relay("vod-length", dir);
    let mut c = RtmpClient::connect(relay.port);
    c.wait_for(Duration::from_secs(10), |e| {
        matches!(e, ClientEvent::Connected)
    });
    for (i, (name, expect)) in [
        ("clip", f64::from(SECONDS)),
        ("mp4:fast.mp4", f64::from(SECONDS)),
        ("mp4:tail.mp4", f64::from(SECONDS)),
        ("tail.mp4", f64::from(SECONDS)),
        ("nothing-here", 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        let tid = 10.0 + i as f64;
        c.session
            .call("getStreamLength", tid, vec![Amf0Value::String(name.into())]);
        c.flush().unwrap();
        let answer = c.wait_for(Duration::from_secs(10), |e| {
            matches!(e, ClientEvent::CallResult { transaction_id, .. } if *transaction_id == tid)
        });
        let ClientEvent::CallResult { value, .. } = answer else {
            unreachable!()
        };
        let length = value.as_f64().unwrap_or(-1.0);
        assert!(
            (length - expect).abs() <= 0.2,
            "{name}: getStreamLength {length}, expected about {expect}"
        );
    }
}

#[test]
fn ffmpeg_plays_an_mp4_and_decodes_every_frame_without_error() {
    let dir = fixtures();
    let relay = relay("vod-ffmpeg-mp4", dir);
    for name in ["tail", "mp4:fast.mp4"] {
        let child = ffmpeg_play(&relay.url(name))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(40));
        let errors = error_lines(&out.stderr);
        assert!(
            out.status.success() && errors.is_empty(),
            "{name}: {errors:?}"
        );
        let (video, audio) = framecrc_counts(&out.stdout);
        assert_eq!(video, 25 * SECONDS as usize, "{name}: every video frame");
        assert!(
            audio > 40 * SECONDS as usize,
            "{name}: audio decoded: {audio}"
        );
    }
}

#[test]
fn names_leaving_the_directory_and_non_regular_files_are_refused_at_once() {
    let root = temp_path("vod-confine");
    let dir = root.join("vod");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("clip.flv"), root.join("secret.flv")).unwrap();
    let _ = std::fs::remove_file(dir.join("link.flv"));
    std::os::unix::fs::symlink(root.join("secret.flv"), dir.join("link.flv")).unwrap();
    std::fs::create_dir_all(dir.join("folder.flv")).unwrap();
    let fifo = dir.join("pipe.flv");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        tool("mkfifo").arg(&fifo).status().unwrap().success(),
        "mkfifo"
    );
    let relay = relay("vod-confine", &dir);
    for name in [
        "../secret",
        "%2e%2e/secret",
        "%2E%2E%2Fsecret",
        "flv:../secret",
        &root.join("secret.flv").display().to_string(),
        "link",
        "folder",
        "pipe",
    ] {
        let started = Instant::now();
        let mut c = RtmpClient::connect(relay.port);
        c.session.play(name);
        c.flush().unwrap();
        let answer = c.try_wait_for(
            Duration::from_secs(10),
            |e| matches!(e, ClientEvent::Status { code, .. } if code.ends_with("StreamNotFound")),
        );
        assert!(answer.is_ok(), "{name}: refused: {:?}", c.seen);
        // At once: well before `wait_for_publisher_ms` (1 s) would have refused it.
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{name}: refused after {:?}",
            started.elapsed()
        );
        assert!(
            !c.seen
                .iter()
                .any(|e| matches!(e, ClientEvent::Media { .. })),
            "{name}: no media"
        );
    }
    // The relay still serves a good name from the same directory afterwards.
    std::fs::copy(fixtures().join("clip.flv"), dir.join("ok.flv")).unwrap();
    let mut c = RtmpClient::connect(relay.port);
    c.session.play("ok");
    c.flush().unwrap();
    c.wait_for(Duration::from_secs(10), is_video);
}

#[test]
fn two_hundred_viewers_at_different_positions_of_one_file_get_no_late_frame() {
    const VIEWERS: usize = 200;
    let dir = fixtures();
    let relay = relay("vod-many", dir);
    let port = relay.port;
    let handles: Vec<_> = (0..VIEWERS)
        .map(|i| {
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let start_ms = (i as u32 * 37) % 4000;
                    let mut c = RtmpClient::connect(port);
                    c.session
                        .play_range("clip", f64::from(start_ms), 1500.0, 1000);
                    c.flush().unwrap();
                    // (arrival, media timestamp) of every video frame until the end.
                    let mut frames: Vec<(Instant, u32)> = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut ended = false;
                    while !ended && Instant::now() < deadline {
                        match c.read_events(Duration::from_millis(200)) {
                            Ok(events) => {
                                let now = Instant::now();
                                for e in events {
                                    if let ClientEvent::Media { timestamp, .. } = &e
                                        && is_video(&e)
                                    {
                                        frames.push((now, *timestamp));
                                    }
                                    ended |= status_is(&e, "NetStream.Play.Stop");
                                }
                            }
                            Err(ReadEnd::Timeout) => {}
                            Err(ReadEnd::Closed) => break,
                        }
                    }
                    (start_ms, ended, frames)
                })
                .unwrap()
        })
        .collect();
    let mut late = Vec::new();
    for h in handles {
        let (start_ms, ended, frames) = h.join().unwrap();
        assert!(ended, "viewer from {start_ms} ms played to its end");
        let &(t0, ts0) = frames.first().expect("video");
        // Keyframes every second (shifted ~23 ms by ffmpeg): the one at or before the start.
        assert!(
            ts0 <= start_ms.max(50) && start_ms < ts0 + 1000,
            "viewer from {start_ms} ms starts at its keyframe, not {ts0}"
        );
        assert!(
            frames.len() >= 30,
            "viewer from {start_ms} ms got {} frames",
            frames.len()
        );
        // A player with a 1 s buffer that started at the first frame stalls on a frame that
        // arrives after its play time.
        for &(at, ts) in &frames {
            let play_time = t0 + Duration::from_millis(1000 + u64::from(ts - ts0));
            if at > play_time {
                late.push((start_ms, ts, at.duration_since(play_time)));
            }
        }
    }
    assert!(
        late.is_empty(),
        "late frames: {:?}",
        &late[..late.len().min(10)]
    );
}
