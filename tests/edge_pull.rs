//! Edges that pull from origins on demand (issue 13): separate relay processes on
//! 127.0.0.1, ffmpeg publishing to an origin, real players on the edges, and nginx-rtmp as
//! a third-party origin and edge. What each server did is read through its admin API.

use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shardcast::cluster::OriginRing;
use shardcast::media::codec::inspect_video;
use shardcast::rtmp::relay_path::LOOP_DESCRIPTION;
use shardcast::rtmp::{ClientEvent, MediaKind};
use shardcast_test_support::client::{Recorded, Recorder, RtmpClient};
use shardcast_test_support::nginx::NginxRtmp;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    ffmpeg_play, ffmpeg_publish, ffprobe_codecs, framecrc_counts, free_port, temp_path, tool,
    wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// An edge of `origins` (their RTMP ports), with short timings so the test is quick.
fn edge_config(origins: &[u16], linger_ms: u64) -> String {
    let pull = origins
        .iter()
        .map(|p| format!("\"rtmp://127.0.0.1:{p}/live\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[app.live]\nunpublish_grace_ms = 1000\npull = [{pull}]\npull_no_input_ms = 1500\n\
         pull_backoff_max_ms = 1000\npull_linger_ms = {linger_ms}\npull_start_timeout_ms = 8000\n"
    )
}

const ORIGIN_CONFIG: &str = "[app.live]\nunpublish_grace_ms = 1000\n";

/// An encoder the test no longer waits for: killed (and reaped) when dropped.
struct Encoder(Child);

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ffmpeg(url: &str, seconds: u32) -> Child {
    ffmpeg_publish(url, seconds, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Viewers of `live/{key}` on the relay (the API's count of playing viewers; 0 when the
/// relay has no such stream).
fn viewers(relay: &Relay, key: &str) -> u64 {
    relay
        .stream(&format!("live/{key}"))
        .and_then(|s| s["viewers"]["total"].as_u64())
        .unwrap_or(0)
}

fn wait_viewers(relay: &Relay, key: &str, want: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if viewers(relay, key) == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The video frames (not sequence headers) a viewer got: timestamp, keyframe, when.
fn video_frames(events: &[Recorded]) -> Vec<(u32, bool, Instant)> {
    events
        .iter()
        .filter_map(|r| match &r.event {
            ClientEvent::Media {
                kind: MediaKind::Video,
                timestamp,
                payload,
            } => {
                let info = inspect_video(payload)?;
                (!info.is_sequence_header).then(|| (*timestamp, info.is_keyframe(), r.at))
            }
            _ => None,
        })
        .collect()
}

/// At least `frames` video frames came.
fn got_video(frames: usize) -> impl Fn(&[Recorded]) -> bool {
    move |events: &[Recorded]| video_frames(events).len() >= frames
}

#[test]
fn an_origin_and_two_edges_one_pull_per_edge_whatever_the_viewers() {
    let origin = Relay::start(SHARDCAST, "pull-origin", ORIGIN_CONFIG, 2);
    let edge_a = Relay::start(
        SHARDCAST,
        "pull-edge-a",
        &edge_config(&[origin.port], 2000),
        2,
    );
    let edge_b = Relay::start(
        SHARDCAST,
        "pull-edge-b",
        &edge_config(&[origin.port], 2000),
        2,
    );
    let publisher = start_ffmpeg(&origin.url("tree"), 12);
    origin
        .wait_published("live/tree", Duration::from_secs(10))
        .expect("the origin accepted ffmpeg's publish");
    // A viewer straight on the origin, to compare timestamps with.
    let direct = Recorder::play(origin.port, "tree");

    // Edge A: a viewer on each shard (the pull is claimed once for the host).
    let a: Vec<Recorder> = (0..2)
        .map(|s| Recorder::play_on_shard(&edge_a, s, "tree"))
        .collect();
    // Edge B: ffmpeg, rtmpdump and a recorded viewer.
    let player = ffmpeg_play(&edge_b.url("tree"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let saved = temp_path("edge-pull-rtmpdump.flv");
    let _ = std::fs::remove_file(&saved);
    let dumper = tool("rtmpdump")
        .args(["-q", "--live", "-r"])
        .arg(edge_b.url("tree"))
        .arg("-o")
        .arg(&saved)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = Recorder::play(edge_b.port, "tree");

    for (i, r) in a.iter().chain(std::iter::once(&b)).enumerate() {
        assert!(
            r.wait_until(Duration::from_secs(8), got_video(50)),
            "edge viewer {i} got video"
        );
    }
    // Every edge viewer is there, and the origin sees one viewer per edge: the pulls.
    assert!(wait_viewers(&edge_a, "tree", 2, Duration::from_secs(3)));
    assert!(wait_viewers(&edge_b, "tree", 3, Duration::from_secs(3)));
    assert_eq!(
        viewers(&origin, "tree"),
        3,
        "the origin serves one pull per edge and the direct viewer"
    );
    for edge in [&edge_a, &edge_b] {
        let s = edge.stream("live/tree").expect("the edge has the stream");
        assert_eq!(s["upstream"]["state"], "playing", "{s}");
        assert_eq!(
            s["upstream"]["url"],
            format!("rtmp://127.0.0.1:{}/live", origin.port)
        );
        assert!(s["upstream"]["bytes"].as_u64().unwrap() > 10_000, "{s}");
        assert_eq!(edge.metric("shardcast_pull_starts_total"), Some(1.0));
        assert_eq!(edge.metric("shardcast_pulls_active"), Some(1.0));
    }

    // In order and nothing lost: over the time both saw, an edge viewer got exactly the
    // video frames a viewer of the origin got, with the origin's timestamps.
    let direct_frames = video_frames(&direct.events());
    for (i, r) in a.iter().chain(std::iter::once(&b)).enumerate() {
        let frames = video_frames(&r.events());
        let ts: Vec<u32> = frames.iter().map(|f| f.0).collect();
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "viewer {i}: video timestamps go forward: {ts:?}"
        );
        let direct_ts: Vec<u32> = direct_frames.iter().map(|f| f.0).collect();
        let (lo, hi) = (
            ts[0].max(direct_ts[0]),
            ts[ts.len() - 1].min(direct_ts[direct_ts.len() - 1]),
        );
        let within = |v: &[u32]| {
            v.iter()
                .copied()
                .filter(|t| (lo..=hi).contains(t))
                .collect::<Vec<_>>()
        };
        assert!(hi > lo + 1000, "viewer {i}: a second in common");
        assert_eq!(within(&ts), within(&direct_ts), "viewer {i}");
    }

    // Edge A's viewers leave: its pull lingers, then goes; edge B's stays.
    drop(a);
    assert!(wait_viewers(&edge_a, "tree", 0, Duration::from_secs(3)));
    thread::sleep(Duration::from_millis(800));
    assert_eq!(viewers(&origin, "tree"), 3, "still lingering");
    assert!(
        wait_viewers(&origin, "tree", 2, Duration::from_secs(4)),
        "edge A's pull stopped after the linger"
    );
    assert_eq!(edge_a.metric("shardcast_pulls_active"), Some(0.0));

    let published = wait_output(publisher, Duration::from_secs(30));
    assert!(published.status.success());
    // The origin's unpublish reaches edge B's players, which end by themselves.
    let played = wait_output(player, Duration::from_secs(15));
    let (video, audio) = framecrc_counts(&played.stdout);
    assert!(
        video >= 150,
        "ffmpeg on the edge decoded {video} video frames of 300"
    );
    assert!(
        audio >= 200,
        "ffmpeg on the edge decoded {audio} audio frames"
    );
    let dumped = wait_output(dumper, Duration::from_secs(15));
    let codecs = ffprobe_codecs(&saved);
    assert!(
        codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
        "ffprobe found {codecs:?} in what rtmpdump saved from the edge: {}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    assert!(
        b.count(|e| matches!(e, ClientEvent::Status { code, .. } if code == "NetStream.Play.UnpublishNotify"))
            >= 1,
        "the edge viewer was told the stream was unpublished"
    );
}

#[test]
fn edge_viewers_continue_when_the_serving_origin_is_killed() {
    let first = Relay::start(SHARDCAST, "pull-fo-1", ORIGIN_CONFIG, 1);
    let second = Relay::start(SHARDCAST, "pull-fo-2", ORIGIN_CONFIG, 1);
    let urls = [first.port, second.port].map(|p| format!("rtmp://127.0.0.1:{p}/live"));
    // Publish where the ring sends the edges first.
    let ring = OriginRing::new(urls.to_vec());
    let first_is_serving = ring.pick("fo", 0) == Some(urls[0].as_str());
    let (serving, standby) = if first_is_serving {
        (first, second)
    } else {
        (second, first)
    };
    let edge = Relay::start(
        SHARDCAST,
        "pull-fo-edge",
        &edge_config(&[serving.port, standby.port], 2000),
        2,
    );
    let mut encoder = Encoder(start_ffmpeg(&serving.url("fo"), 30));
    serving
        .wait_published("live/fo", Duration::from_secs(10))
        .expect("the origin accepted ffmpeg's publish");
    let viewer = Recorder::play(edge.port, "fo");
    assert!(viewer.wait_until(Duration::from_secs(8), got_video(25)));
    let s = edge.stream("live/fo").unwrap();
    assert_eq!(
        s["upstream"]["url"],
        format!("rtmp://127.0.0.1:{}/live", serving.port)
    );

    // The serving origin dies; the encoder moves to the other one.
    let killed_at = Instant::now();
    // SAFETY: kill(2) on the pid of a child not reaped yet.
    unsafe { libc::kill(serving.pid() as libc::pid_t, libc::SIGKILL) };
    let _ = encoder.0.kill();
    let _ = encoder.0.wait();
    let _encoder = Encoder(start_ffmpeg(&standby.url("fo"), 20));
    // Within 3 s plus one keyframe interval (1 s), a keyframe from the new origin.
    let resumed = viewer.wait_until(Duration::from_secs(4), |events| {
        video_frames(events)
            .iter()
            .any(|&(_, key, at)| key && at > killed_at + Duration::from_millis(300))
    });
    assert!(
        resumed,
        "the edge viewer got a keyframe within 4 s of the kill; upstream: {}",
        edge.stream("live/fo")
            .map_or("none".into(), |s| s["upstream"].to_string())
    );
    let gap = video_frames(&viewer.events())
        .iter()
        .find(|&&(_, key, at)| key && at > killed_at + Duration::from_millis(300))
        .map(|&(_, _, at)| at - killed_at);
    eprintln!("first keyframe from the new origin {gap:?} after the kill");
    assert!(viewer.wait_until(Duration::from_secs(3), |events| {
        video_frames(events)
            .iter()
            .filter(|&&(_, _, at)| at > killed_at + Duration::from_millis(300))
            .count()
            >= 25
    }));
    let events = viewer.events();
    assert!(!viewer.is_closed(), "the viewer stayed connected");
    assert_eq!(
        events
            .iter()
            .filter(|r| matches!(&r.event, ClientEvent::Status { code, .. } if code == "NetStream.Play.UnpublishNotify"))
            .count(),
        0,
        "no unpublish through a failover"
    );
    let ts: Vec<u32> = video_frames(&events).iter().map(|f| f.0).collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "timestamps keep going forward through the failover"
    );
    let s = edge.stream("live/fo").unwrap();
    assert_eq!(
        s["upstream"]["url"],
        format!("rtmp://127.0.0.1:{}/live", standby.port)
    );
    assert_eq!(s["upstream"]["state"], "playing");
    assert!(edge.metric("shardcast_pull_failures_total").unwrap() >= 1.0);
    assert_eq!(viewers(&standby, "fo"), 1, "one pull on the new origin");
    drop(serving);
}

#[test]
fn a_loop_of_two_edges_is_refused_not_amplified() {
    // A pulls from nowhere for now, B from A; then A is pointed at B: a loop.
    let mut a = Relay::start(
        SHARDCAST,
        "pull-loop-a",
        &edge_config(&[free_port()], 2000),
        2,
    );
    let b = Relay::start(SHARDCAST, "pull-loop-b", &edge_config(&[a.port], 2000), 2);
    std::fs::write(&a.config_path, edge_config(&[b.port], 2000)).unwrap();
    a.reload();
    assert!(
        a.wait_log(Duration::from_secs(5), |l| l
            .contains("configuration reloaded"))
            .is_some()
    );
    let asked = Instant::now();
    let mut viewer = RtmpClient::connect(a.port);
    viewer.session.play("loop");
    viewer.flush().unwrap();
    let refusal = viewer.try_wait_for(
        Duration::from_secs(5),
        |e| matches!(e, ClientEvent::Status { level, .. } if level == "error"),
    );
    let Ok(ClientEvent::Status {
        code, description, ..
    }) = refusal
    else {
        panic!("the viewer was not refused: {:?}", viewer.seen);
    };
    assert!(asked.elapsed() < Duration::from_secs(3), "refused at once");
    assert_eq!(code, "NetStream.Play.Failed");
    assert!(description.starts_with(LOOP_DESCRIPTION), "{description}");
    // Nothing goes on: one pull each, one refused connection, nobody retrying.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(a.metric("shardcast_pull_starts_total"), Some(1.0));
    assert_eq!(b.metric("shardcast_pull_starts_total"), Some(1.0));
    assert_eq!(
        a.metric("shardcast_connections_rejected_total{reason=\"relay_loop\"}"),
        Some(1.0)
    );
    assert_eq!(a.metric("shardcast_pulls_active"), Some(0.0));
    assert_eq!(b.metric("shardcast_pulls_active"), Some(0.0));
    assert!(a.clients().is_empty(), "{:?}", a.clients());
    assert!(b.clients().is_empty(), "{:?}", b.clients());
    let _ = a.wait_exit(Duration::ZERO);
}

#[test]
fn a_shardcast_edge_pulls_from_an_nginx_rtmp_origin() {
    let nginx = NginxRtmp::start("");
    let edge = Relay::start(
        SHARDCAST,
        "pull-nginx-origin",
        &edge_config(&[nginx.port], 2000),
        2,
    );
    let _encoder = Encoder(start_ffmpeg(&nginx.url("ng"), 15));
    thread::sleep(Duration::from_millis(500));
    let players: Vec<Recorder> = (0..2)
        .map(|s| Recorder::play_on_shard(&edge, s, "ng"))
        .collect();
    for v in &players {
        assert!(
            v.wait_until(Duration::from_secs(8), got_video(50)),
            "a viewer of the edge got nginx's stream; upstream: {}",
            edge.stream("live/ng")
                .map_or("none".into(), |s| s["upstream"].to_string())
        );
        let ts: Vec<u32> = video_frames(&v.events()).iter().map(|f| f.0).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
    }
    let s = edge.stream("live/ng").unwrap();
    assert_eq!(s["upstream"]["state"], "playing");
    assert_eq!(edge.metric("shardcast_pull_starts_total"), Some(1.0));
}

#[test]
fn an_nginx_rtmp_edge_pulls_from_a_shardcast_origin() {
    let origin = Relay::start(SHARDCAST, "pull-nginx-edge", ORIGIN_CONFIG, 2);
    let pull = format!("pull rtmp://127.0.0.1:{}/live;", origin.port);
    let nginx = NginxRtmp::start(&pull);
    let _encoder = Encoder(start_ffmpeg(&origin.url("sc"), 15));
    origin
        .wait_published("live/sc", Duration::from_secs(10))
        .expect("the origin accepted ffmpeg's publish");
    let players: Vec<Recorder> = (0..2).map(|_| Recorder::play(nginx.port, "sc")).collect();
    for v in &players {
        assert!(
            v.wait_until(Duration::from_secs(8), got_video(25)),
            "a viewer of nginx got shardcast's stream"
        );
    }
    assert_eq!(
        viewers(&origin, "sc"),
        1,
        "nginx pulls once for its two viewers"
    );
}

/// Reads an HTTP-FLV response of `url_path` from `addr` until `want` bytes came (or 8 s).
fn http_flv(addr: std::net::SocketAddr, url_path: &str, want: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(s, "GET {url_path} HTTP/1.1\r\nHost: edge\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while got.len() < want && Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    got
}

#[test]
fn a_static_pull_runs_without_viewers_and_serves_http_flv() {
    let origin = Relay::start(SHARDCAST, "pull-static-origin", ORIGIN_CONFIG, 1);
    let _encoder = Encoder(start_ffmpeg(&origin.url("st"), 20));
    origin
        .wait_published("live/st", Duration::from_secs(10))
        .expect("the origin accepted ffmpeg's publish");
    let config = format!(
        "{}pull_static = [\"st\"]\n",
        edge_config(&[origin.port], 1000)
    );
    let edge = Relay::start(SHARDCAST, "pull-static-edge", &config, 2);
    // Nobody watches the edge, yet it pulls.
    assert!(
        edge.wait_stream("live/st", Duration::from_secs(8), |s| {
            s.is_some_and(|s| s["upstream"]["state"] == "playing")
        })
        .is_some(),
        "the static pull plays"
    );
    assert_eq!(viewers(&origin, "st"), 1);
    let flv = http_flv(edge.http, "/live/st.flv", 100_000);
    let head_end = flv
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    assert!(flv.starts_with(b"HTTP/1.1 200"), "{:?}", &flv[..head_end]);
    // The body (chunked) starts with the FLV file header.
    assert!(
        flv[head_end..].windows(4).take(64).any(|w| w == b"FLV\x01"),
        "an FLV header"
    );
    assert!(flv.len() >= 100_000, "{} bytes of HTTP-FLV", flv.len());
    // Kept past the linger with nobody watching.
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(viewers(&origin, "st"), 1, "the static pull stays");
    assert_eq!(edge.metric("shardcast_pulls_active"), Some(1.0));
}

#[test]
fn an_edge_pulls_over_rtmps_trusting_its_ca_file() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    let cert = temp_path("pull-rtmps.crt");
    let key = temp_path("pull-rtmps.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let origin_config = format!(
        "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\n{ORIGIN_CONFIG}",
        cert.display(),
        key.display()
    );
    let origin = Relay::start_tls(SHARDCAST, "pull-rtmps-origin", &origin_config, 1);
    let _encoder = Encoder(start_ffmpeg(&origin.url("sec"), 15));
    origin
        .wait_published("live/sec", Duration::from_secs(10))
        .expect("the origin accepted ffmpeg's publish");
    let tls_port = origin.tls.unwrap().port();
    let edge_config = format!(
        "[app.live]\npull = [\"rtmps://127.0.0.1:{tls_port}/live\"]\npull_tls_ca_file = \"{}\"\n",
        cert.display()
    );
    let edge = Relay::start(SHARDCAST, "pull-rtmps-edge", &edge_config, 1);
    let v = Recorder::play(edge.port, "sec");
    assert!(
        v.wait_until(Duration::from_secs(8), got_video(25)),
        "the edge's viewer got the stream pulled over RTMPS"
    );
    let s = edge.stream("live/sec").unwrap();
    assert_eq!(s["upstream"]["state"], "playing");
    assert_eq!(
        s["upstream"]["url"],
        format!("rtmps://127.0.0.1:{tls_port}/live")
    );

    // An edge that does not trust the origin's certificate gets nothing, and says why.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let wrong_ca = temp_path("pull-rtmps-wrong.crt");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    let config = format!(
        "[app.live]\npull = [\"rtmps://127.0.0.1:{tls_port}/live\"]\npull_tls_ca_file = \"{}\"\npull_start_timeout_ms = 2000\n",
        wrong_ca.display()
    );
    let distrustful = Relay::start(SHARDCAST, "pull-rtmps-wrong", &config, 1);
    let mut refused = RtmpClient::connect(distrustful.port);
    refused.session.play("sec");
    refused.flush().unwrap();
    let got = refused.try_wait_for(
        Duration::from_secs(4),
        |e| matches!(e, ClientEvent::Status { level, .. } if level == "error"),
    );
    assert!(
        matches!(&got, Ok(ClientEvent::Status { code, .. }) if code == "NetStream.Play.StreamNotFound"),
        "{got:?}"
    );
    assert!(
        distrustful
            .wait_log(Duration::from_secs(1), |l| l
                .contains("upstream pull failed")
                && l.contains("TLS"))
            .is_some()
    );
}
