//! Pre-recorded streams: an application with `recordings_dir` plays `NAME.flv` to a viewer
//! of `APP/NAME` when nobody publishes it live, paced in real time, and ends by itself.

use std::time::{Duration, Instant};

use shardcast::rtmp::ClientEvent;
use shardcast_test_support::admin;
use shardcast_test_support::client::{ReadEnd, RtmpClient};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    ffmpeg_clip, ffmpeg_play_with, framecrc_counts, temp_path, wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// Writes a 3 s H.264 + AAC FLV (75 video frames) with real ffmpeg.
fn make_recording(dir: &std::path::Path, name: &str) {
    ffmpeg_clip(&dir.join(format!("{name}.flv")), 3, &[]);
}

#[test]
fn ffmpeg_plays_a_recording_to_its_end_and_exits() {
    let dir = temp_path("recordings-play");
    make_recording(&dir, "clip");
    let config = format!(
        "[app.live]\nrecordings_dir = {:?}\n",
        dir.display().to_string()
    );
    let relay = Relay::start(SHARDCAST, "recordings-play", &config, 1);
    let started = Instant::now();
    // A 100 ms buffer: the relay sends 1.5 s of the 3 s file at once (its least lead and
    // half a batch) and paces the rest, so the play lasts long enough to be seen. With
    // ffmpeg's default 3 s buffer the whole file went at once and the play could end
    // before the admin API was asked.
    let child = ffmpeg_play_with(&relay.url("clip"), &["-rtmp_buffer", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it plays, the admin API lists it as a recording's viewer (a stream of its
    // own, not among the live streams).
    let player = wait_listed(&relay, Duration::from_secs(10), |c| {
        c["role"] == "recording_viewer" && c["stream"] == "live/clip"
    });
    assert!(
        player.is_some(),
        "the admin API lists ffmpeg as the recording's viewer: {:?}",
        relay.clients()
    );
    assert!(
        relay.stream("live/clip").is_none(),
        "a recording is no live stream"
    );
    let out = wait_output(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg play failed: {stderr}");
    let (video, audio) = framecrc_counts(&out.stdout);
    assert_eq!(
        video, 75,
        "every frame of the recording decoded; stderr: {stderr}"
    );
    assert!(audio > 100, "audio decoded: {audio} frames");
    // Pacing is checked in `tests/vod.rs` and the shard's unit tests. It ended by itself,
    // in time.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a 3 s recording took {:?}",
        started.elapsed()
    );
    let id = player.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin::get(relay.admin, &format!("/api/v1/clients/{id}")).status != 404 {
        assert!(
            Instant::now() < deadline,
            "the relay let the recording's viewer go after its end: {:?}",
            relay.clients()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for a client the admin API lists for which `pred` holds.
fn wait_listed(
    relay: &Relay,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(c) = relay.clients().into_iter().find(&pred) {
            return Some(c);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_name_with_a_path_is_never_read_from_disk() {
    let dir = temp_path("recordings-path/inside");
    make_recording(dir.parent().unwrap(), "secret");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "[app.live]\nrecordings_dir = {:?}\nwait_for_publisher_ms = 2000\n",
        dir.display().to_string()
    );
    let relay = Relay::start(SHARDCAST, "recordings-path", &config, 1);
    let mut viewer = RtmpClient::connect(relay.port);
    viewer.session.play("../secret");
    viewer.flush().unwrap();
    let mut media = 0;
    let mut not_found = false;
    // What the admin API said of the viewer while it was connected: its role, and whether
    // it waited.
    let mut listed_as = Vec::new();
    // Generous: the machine may be busy; the loop ends as soon as the answer came.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !not_found {
        match viewer.read_events(Duration::from_millis(100)) {
            Ok(events) => {
                for e in events {
                    match e {
                        ClientEvent::Media { .. } => media += 1,
                        ClientEvent::Status { code, .. } if code.ends_with("StreamNotFound") => {
                            not_found = true
                        }
                        _ => {}
                    }
                }
            }
            Err(ReadEnd::Timeout) => {}
            Err(ReadEnd::Closed) => break,
        }
        if let Some(c) = relay.client_by_addr(viewer.local, Duration::ZERO) {
            listed_as.push((c["role"].clone(), c["waiting"].clone()));
        }
    }
    assert_eq!(media, 0, "nothing of ../secret.flv reached the viewer");
    assert!(
        not_found,
        "the viewer was told NetStream.Play.StreamNotFound"
    );
    assert!(
        listed_as.iter().all(|(role, _)| role != "recording_viewer"),
        "the viewer never played a recording: {listed_as:?}"
    );
}

/// A client must never receive bytes it did not ask for. Viewers of a stored file leave
/// right after their first media, mid-playback, while other clients keep connecting: a
/// newcomer that has sent only C0 and C1 must get exactly S0, S1 and S2 back, and nothing
/// of anyone's recording (a former build sent the file's next tag to whichever connection
/// had been given the departed viewer's file descriptor number).
#[test]
fn viewers_leaving_a_recording_never_leak_its_bytes_to_new_clients() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let dir = temp_path("recordings-isolation");
    make_recording(&dir, "clip");
    let config = format!(
        "[app.live]\nrecordings_dir = {:?}\n",
        dir.display().to_string()
    );
    let relay = Relay::start(SHARDCAST, "recordings-isolation", &config, 2);
    let port = relay.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let leavers = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut left = 0;
            for _ in 0..40 {
                let mut viewer = RtmpClient::viewer(port, "clip");
                viewer.wait_for(Duration::from_secs(10), |e| {
                    matches!(e, ClientEvent::Media { .. })
                });
                drop(viewer);
                left += 1;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            left
        })
    };
    const HANDSHAKE: usize = 1 + 1536 + 1536;
    let mut strangers = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) || strangers < 40 {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut c0c1 = vec![0u8; 1 + 1536];
        c0c1[0] = 3;
        socket.write_all(&c0c1).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match socket.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        assert_eq!(
            got.len(),
            HANDSHAKE,
            "a client that sent only C0 and C1 got {} bytes: nothing but S0, S1 and S2 was owed",
            got.len()
        );
        assert_eq!(got[0], 3, "S0");
        strangers += 1;
    }
    assert_eq!(leavers.join().unwrap(), 40);
    assert!(strangers >= 40);
}
