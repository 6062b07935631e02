//! Recording (DVR) with real clients: ffmpeg publishes, the relay records, and ffprobe and
//! ffmpeg judge the files. Segments (FLV and fragmented MP4) start with a keyframe, hold
//! every frame between them, have the right durations and decode without an error; closed
//! FLV segments carry a keyframe index that points at keyframes; SIGKILL in the middle
//! leaves files that play (the open one up to about a flush interval before the kill); a
//! full disk stops the recording (logged, counted, shown in the API) while a viewer keeps
//! playing; `record = "manual"` starts and stops through the admin API (token required)
//! and calls `on_record_done`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use shardcast::media::flv::FlvReader;
use shardcast::rtmp::amf0::{self, Amf0Value};
use shardcast_test_support::admin;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    error_lines, ffmpeg_play, ffmpeg_publish, framecrc_counts, temp_path, tool, wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// ffmpeg_publish's stream: 25 fps, a keyframe every 25 frames, AAC at 44.1 kHz.
const FPS: f64 = 25.0;
const AAC_FRAMES_PER_S: f64 = 44_100.0 / 1024.0;

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Every regular file under `dir`, sorted by name (names start with their start time).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[derive(Debug)]
struct Probe {
    video_frames: u64,
    audio_frames: u64,
    duration: f64,
    first_video_is_key: bool,
}

fn probe(path: &Path) -> Probe {
    let out = tool("ffprobe")
        .args(["-v", "error", "-count_frames", "-of", "json"])
        .args([
            "-show_entries",
            "stream=codec_type,nb_read_frames:format=duration",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let frames = |kind: &str| {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["codec_type"] == kind)
            .map(|s| {
                s["nb_read_frames"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    let first = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
        ])
        .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    Probe {
        video_frames: frames("video"),
        audio_frames: frames("audio"),
        duration: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
        first_video_is_key: String::from_utf8_lossy(&first.stdout).starts_with('K'),
    }
}

/// What `ffmpeg -v error -i FILE -f null -` says is wrong with `path`: nothing, for a
/// file that decodes whole.
fn decode_errors(path: &Path) -> Vec<String> {
    let out = tool("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let mut errors = error_lines(&out.stderr);
    if !out.status.success() {
        errors.push(format!("ffmpeg exited with {}", out.status));
    }
    errors
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[app.live]
unpublish_grace_ms = 500
record = "all"
record_dir = "{}"
{extra}
"#,
        dir.display()
    )
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// The keyframe index of a closed FLV recording: (duration, [(time, position)]).
fn flv_index(path: &Path) -> (f64, Vec<(f64, usize)>) {
    let data = std::fs::read(path).unwrap();
    let (_, mut reader) = FlvReader::new(Bytes::from(data)).unwrap();
    let meta = reader.next().unwrap().unwrap();
    assert_eq!(meta.tag_type, 18, "{}: onMetaData first", path.display());
    let values = amf0::decode_all(&meta.payload).unwrap();
    let props = &values[1];
    let list = |name: &str| -> Vec<f64> {
        match props.get("keyframes").and_then(|k| k.get(name)) {
            Some(Amf0Value::StrictArray(v)) => v.iter().filter_map(Amf0Value::as_f64).collect(),
            other => panic!("{}: no keyframes.{name}: {other:?}", path.display()),
        }
    };
    let index = list("times")
        .into_iter()
        .zip(list("filepositions").into_iter().map(|p| p as usize))
        .collect();
    (
        props.get("duration").and_then(Amf0Value::as_f64).unwrap(),
        index,
    )
}

/// ffmpeg publishes 12 s with `record_segment_ms = 4000`: three or four segments, each
/// starting with a keyframe, together holding every frame, each about 4 s long, each
/// decoding cleanly.
fn segments_hold_every_frame(format: &str) {
    let dir = temp_path(&format!("rec-segments-{format}"));
    let _ = std::fs::remove_dir_all(&dir);
    let relay = Relay::start(
        SHARDCAST,
        &format!("recording-segments-{format}"),
        &config(
            &dir,
            &format!("record_format = \"{format}\"\nrecord_segment_ms = 4000"),
        ),
        2,
    );
    let seconds = 12;
    let publisher = ffmpeg_publish(&relay.url("cam"), seconds, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = relay
        .wait_published("live/cam", Duration::from_secs(15))
        .expect("the stream is published");
    assert!(
        wait_until(Duration::from_secs(10), || relay
            .stream("live/cam")
            .is_some_and(|s| s["record"]["state"] == "recording")),
        "the API shows the recording: {stream}"
    );
    let file = relay.stream("live/cam").unwrap()["record"]["file"].clone();
    assert!(
        file.as_str()
            .is_some_and(|f| f.starts_with("live/cam-") && f.ends_with(&format!(".{format}"))),
        "{file}"
    );
    let out = wait_output(publisher, Duration::from_secs(60));
    assert!(out.status.success(), "ffmpeg published: {:?}", out);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let log = relay.log();
            let opened = count(&log, "recording to file");
            opened > 0 && count(&log, "recording closed") == opened
        }),
        "every file was closed: {}",
        relay.log()
    );
    let files = files_under(&dir);
    assert!(
        (3..=4).contains(&files.len()),
        "12 s in 4 s segments: {files:?}"
    );
    let (mut video, mut audio, mut duration) = (0, 0, 0.0);
    for (i, f) in files.iter().enumerate() {
        let p = probe(f);
        assert!(
            p.first_video_is_key,
            "{}: starts with a keyframe",
            f.display()
        );
        if i + 1 < files.len() {
            assert!(
                (3.9..=5.2).contains(&p.duration),
                "{}: a segment ends at the first keyframe after 4 s: {p:?}",
                f.display()
            );
        }
        assert_eq!(decode_errors(f), Vec::<String>::new(), "{}", f.display());
        if format == "flv" {
            let (meta_duration, index) = flv_index(f);
            assert!(
                (meta_duration - p.duration).abs() < 0.2,
                "{}: {meta_duration} vs {p:?}",
                f.display()
            );
            let data = std::fs::read(f).unwrap();
            assert!(
                index.len() >= 3,
                "{}: a keyframe a second: {index:?}",
                f.display()
            );
            assert_eq!(index[0].0, 0.0);
            for (t, pos) in &index {
                assert_eq!(
                    data.get(*pos),
                    Some(&9),
                    "{}: keyframe at {t} s is a video tag",
                    f.display()
                );
                assert_eq!(data[pos + 11] >> 4, 1, "{}: ...and a keyframe", f.display());
            }
        }
        video += p.video_frames;
        audio += p.audio_frames;
        duration += p.duration;
    }
    let expected_video = (f64::from(seconds) * FPS) as u64;
    assert_eq!(video, expected_video, "every video frame is in one segment");
    let expected_audio = f64::from(seconds) * AAC_FRAMES_PER_S;
    assert!(
        (audio as f64 - expected_audio).abs() <= 4.0,
        "every audio frame: {audio} of about {expected_audio}"
    );
    assert!(
        (duration - f64::from(seconds)).abs() < 0.6,
        "the segments add up to the stream: {duration} s"
    );
    assert_eq!(
        relay.metric("shardcast_record_files_total"),
        Some(files.len() as f64)
    );
    assert_eq!(relay.metric("shardcast_record_errors_total"), Some(0.0));
    let on_disk: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let handed = relay.metric("shardcast_record_bytes_total").unwrap() as u64;
    assert!(
        handed > 0 && handed <= on_disk + 4096 * files.len() as u64,
        "bytes written {handed}, on disk {on_disk}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flv_segments_start_at_keyframes_hold_every_frame_and_are_indexed() {
    segments_hold_every_frame("flv");
}

#[test]
fn mp4_segments_start_at_keyframes_and_hold_every_frame() {
    segments_hold_every_frame("mp4");
}

/// SIGKILL while recording FLV (in `live`) and MP4 (in `mp4`): the closed segments play
/// whole, the open one plays up to about the last flush before the kill.
#[test]
fn after_sigkill_every_file_plays_and_little_is_lost() {
    let dir = temp_path("rec-sigkill");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = format!(
        "{}\n[app.mp4]\nrecord = \"all\"\nrecord_dir = \"{}\"\nrecord_format = \"mp4\"\nrecord_segment_ms = 3000\n",
        config(&dir, "record_segment_ms = 3000"),
        dir.display()
    );
    let mut relay = Relay::start(SHARDCAST, "recording-sigkill", &cfg, 2);
    let mp4_url = relay.url("cam").replace("/live/", "/mp4/");
    let publishers: Vec<_> = [relay.url("cam"), mp4_url]
        .iter()
        .map(|url| {
            ffmpeg_publish(url, 30, true)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(
        relay
            .wait_published("live/cam", Duration::from_secs(15))
            .is_some()
    );
    assert!(
        relay
            .wait_published("mp4/cam", Duration::from_secs(15))
            .is_some()
    );
    assert!(
        wait_until(Duration::from_secs(10), || count(
            &relay.log(),
            "recording to file"
        ) >= 2),
        "both recordings started: {}",
        relay.log()
    );
    let started = Instant::now();
    thread::sleep(Duration::from_millis(7500));
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(
        unsafe { libc::kill(relay.pid() as libc::pid_t, libc::SIGKILL) },
        0
    );
    let recorded_for = started.elapsed().as_secs_f64();
    assert!(relay.wait_exit(Duration::from_secs(10)).is_some());
    for mut p in publishers {
        let _ = p.kill();
        let _ = p.wait();
    }
    for (app, ext) in [("live", "flv"), ("mp4", "mp4")] {
        let files: Vec<PathBuf> = files_under(&dir.join(app))
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == ext))
            .collect();
        assert!(files.len() >= 3, "{app}: 7.5 s in 3 s segments: {files:?}");
        let mut total = 0.0;
        for (i, f) in files.iter().enumerate() {
            let p = probe(f);
            let last = i + 1 == files.len();
            if !last {
                assert!(
                    (2.9..=4.2).contains(&p.duration),
                    "{}: a closed segment plays whole: {p:?}",
                    f.display()
                );
                let expected = p.duration * FPS;
                assert!(
                    (p.video_frames as f64 - expected).abs() <= 2.0,
                    "{}: every frame of its duration: {p:?}",
                    f.display()
                );
            }
            assert!(p.first_video_is_key, "{}", f.display());
            let errors = decode_errors(f);
            assert!(errors.is_empty(), "{}: {errors:?}", f.display());
            total += p.duration;
        }
        // What was lost: the last flush interval (1 s), plus scheduling on a loaded machine.
        assert!(
            total >= recorded_for - 2.0 && total <= recorded_for + 1.0,
            "{app}: {total} s in the files of {recorded_for} s recorded"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory on a disk of `bytes`: a tmpfs mounted here when the tests run as root, or
/// else the relay runs under `prlimit --fsize` (a file size limit: writes past it fail
/// with EFBIG just as a full disk's fail with ENOSPC). Returns the binary to start.
fn small_disk(dir: &Path, bytes: u64) -> (String, Option<PathBuf>) {
    std::fs::create_dir_all(dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        return (SHARDCAST.to_owned(), Some(dir.to_owned()));
    }
    eprintln!("cannot mount a tmpfs (not root?): limiting the file size with prlimit instead");
    let wrapper = temp_path("shardcast-fsize.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec prlimit --fsize={bytes} {SHARDCAST} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    (wrapper.display().to_string(), None)
}

#[test]
fn a_full_disk_stops_the_recording_and_the_stream_goes_on() {
    let dir = temp_path("rec-full");
    let _ = std::fs::remove_dir_all(&dir);
    let (bin, mount) = small_disk(&dir, 192 * 1024);
    struct Unmount(Option<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if let Some(d) = &self.0 {
                let _ = Command::new("umount").arg(d).status();
            }
        }
    }
    let _unmount = Unmount(mount);
    let relay = Relay::start(&bin, "recording-full", &config(&dir, ""), 2);
    let seconds = 16;
    let publisher = ffmpeg_publish(&relay.url("cam"), seconds, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        relay
            .wait_published("live/cam", Duration::from_secs(15))
            .is_some()
    );
    let viewer = ffmpeg_play(&relay.url("cam"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // About 30 KB/s of media: 192 KiB is full after some 6 s.
    assert!(
        wait_until(Duration::from_secs(14), || relay
            .metric("shardcast_record_errors_total")
            .is_some_and(|e| e >= 1.0)),
        "the full disk is counted: {}",
        relay.log()
    );
    let s = relay.stream("live/cam").expect("the stream is still there");
    assert_eq!(s["record"]["state"], "failed", "{s}");
    assert!(
        s["record"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("writing")),
        "{s}"
    );
    assert_eq!(s["publish"]["active"], true, "the publisher goes on: {s}");
    assert!(
        relay
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("recording stopped")),
        "a clear log line: {}",
        relay.log()
    );
    let frames_at_failure = relay.stream("live/cam").unwrap()["frames_by_kind"]["video"]
        .as_u64()
        .unwrap();
    let out = wait_output(viewer, Duration::from_secs(40));
    let (video, _) = framecrc_counts(&out.stdout);
    assert!(
        video as u64 > frames_at_failure + 50,
        "the viewer played on after the failure: {video} frames, {frames_at_failure} when it failed; {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        video as f64 >= f64::from(seconds) * FPS * 0.7,
        "{video} frames"
    );
    let _ = wait_output(publisher, Duration::from_secs(30));
    // What was written before the disk filled still plays.
    let files = files_under(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(probe(&files[0]).video_frames > 25, "{:?}", probe(&files[0]));
}

/// A one-request HTTP server: answers 200 and hands over the request body.
fn callback_server() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/record_done", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut len = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        let _ = reader.read_exact(&mut body);
        let _ = (&stream)
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
    });
    (url, rx)
}

#[test]
fn manual_recording_starts_and_stops_through_the_api_and_calls_on_record_done() {
    let dir = temp_path("rec-manual");
    let _ = std::fs::remove_dir_all(&dir);
    let (callback, bodies) = callback_server();
    let cfg = format!(
        "[admin]\ntoken = \"sesame\"\n{}",
        config(&dir, &format!("on_record_done = \"{callback}\""))
    )
    .replace("record = \"all\"", "record = \"manual\"");
    let relay = Relay::start(SHARDCAST, "recording-manual", &cfg, 2);
    let publisher = ffmpeg_publish(&relay.url("cam"), 12, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = relay
        .wait_published("live/cam", Duration::from_secs(15))
        .unwrap();
    assert_eq!(
        s["record"]["state"], "off",
        "manual: nothing until asked: {s}"
    );
    let post = |body: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        admin::request(
            relay.admin,
            "POST",
            "/api/v1/streams/live/cam/record",
            &headers,
            body.as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(post(r#"{"action":"start"}"#, None).status, 401);
    assert_eq!(post(r#"{"action":"dance"}"#, Some("sesame")).status, 400);
    assert!(
        files_under(&dir).is_empty(),
        "nothing recorded without the token"
    );
    let started = post(r#"{"action":"start"}"#, Some("sesame"));
    assert_eq!(started.status, 200, "{}", started.body);
    assert!(
        wait_until(Duration::from_secs(5), || relay.stream("live/cam").unwrap()
            ["record"]["state"]
            == "recording"),
        "{}",
        relay.log()
    );
    thread::sleep(Duration::from_secs(4));
    let stopped = post(r#"{"action":"stop"}"#, Some("sesame"));
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    let s = relay.stream("live/cam").unwrap();
    assert_eq!(s["record"]["state"], "off", "{s}");
    assert_eq!(s["record"]["files"], 1, "{s}");
    let body = bodies
        .recv_timeout(Duration::from_secs(15))
        .expect("on_record_done was called");
    let files = files_under(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    for field in [
        "call=record_done",
        "app=live",
        "name=cam",
        "recorder=default",
    ] {
        assert!(body.contains(field), "{field} in {body}");
    }
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(body.contains(&name), "the path in {body}");
    let p = probe(&files[0]);
    assert!(
        (3.0..=6.0).contains(&p.duration),
        "recorded from start to stop (4 s): {p:?}"
    );
    assert!(p.first_video_is_key);
    assert!(decode_errors(&files[0]).is_empty());
    let _ = wait_output(publisher, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}
