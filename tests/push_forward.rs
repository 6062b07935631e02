//! Push (forward) between separate processes on 127.0.0.1, with the real clients: ffmpeg
//! publishes to shardcast A, whose application pushes to shardcast B or to nginx-rtmp;
//! ffmpeg plays from the target and decodes the frames. Also: a target that comes up late,
//! a loop of pushes, and nginx-rtmp pushing to shardcast.

use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shardcast_test_support::client::RtmpClient;
use shardcast_test_support::nginx::NginxRtmp;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    error_lines, ffmpeg_play, ffmpeg_publish, framecrc_counts, free_port, free_ports, temp_path,
    wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// A target's application: short grace so a stream ends soon after its publisher.
const TARGET: &str = r#"
[app.live]
unpublish_grace_ms = 1000
"#;

/// A pushing relay's config: push to `urls`, retry at most every `cap_ms`.
fn pushing(urls: &[String], cap_ms: u64) -> String {
    let list = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[app.live]\nunpublish_grace_ms = 1000\npush = [{list}]\npush_backoff_max_ms = {cap_ms}\n"
    )
}

fn publish(url: &str, seconds: u32) -> Child {
    ffmpeg_publish(url, seconds, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn play(url: &str) -> Child {
    ffmpeg_play(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The first of the stream's `forwards`, once `pred` holds of it.
fn wait_forward(
    relay: &Relay,
    name: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    relay
        .wait_stream(name, limit, |s| {
            s.and_then(|s| s["forwards"].get(0)).is_some_and(&pred)
        })
        .map(|s| s["forwards"][0].clone())
}

/// ffmpeg ended well and decoded at least `min_video` video frames, with audio, and
/// reported no error.
fn assert_played(player: Child, min_video: usize, what: &str) {
    let played = wait_output(player, Duration::from_secs(40));
    let (video, audio) = framecrc_counts(&played.stdout);
    assert!(
        video >= min_video && audio >= min_video,
        "{what}: ffmpeg decoded {video} video and {audio} audio frames (wanted {min_video}); stderr: {}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert_eq!(
        error_lines(&played.stderr),
        Vec::<String>::new(),
        "{what}: ffmpeg reported errors"
    );
}

fn assert_published(publisher: Child, what: &str) {
    let published = wait_output(publisher, Duration::from_secs(40));
    assert!(
        published.status.success() && published.stderr.is_empty(),
        "{what}: the publisher noticed something: {}",
        String::from_utf8_lossy(&published.stderr)
    );
}

#[test]
fn a_stream_published_on_a_is_played_on_b_and_the_api_shows_the_push() {
    let b = Relay::start(SHARDCAST, "push-b", TARGET, 2);
    // The key travels in the query of the publish; it is never shown or logged.
    let url = format!("rtmp://127.0.0.1:{}/live/{{stream}}?key=s3cret", b.port);
    let a = Relay::start(SHARDCAST, "push-a", &pushing(&[url], 10_000), 2);
    let publisher = publish(&a.url("cam"), 8);
    a.wait_published("live/cam", Duration::from_secs(10))
        .expect("A accepted ffmpeg's publish");
    b.wait_published("live/cam", Duration::from_secs(10))
        .expect("A's push reached B as a publish of live/cam");
    let player = play(&b.url("cam"));

    let forward = wait_forward(&a, "live/cam", Duration::from_secs(5), |f| {
        f["state"] == "forwarding" && f["bytes"].as_u64().unwrap_or(0) > 50_000
    })
    .unwrap_or_else(|| {
        panic!(
            "A's API shows the push forwarding: {:?}",
            a.stream("live/cam")
        )
    });
    let shown = forward["url"].as_str().unwrap();
    assert!(
        shown.starts_with(&format!("rtmp://127.0.0.1:{}/live/cam?", b.port))
            && !shown.contains("s3cret"),
        "{shown}"
    );
    assert_eq!(forward["retries"], 0);
    assert!(forward["last_error"].is_null(), "{forward}");
    assert_eq!(a.metric("shardcast_forwards_active"), Some(1.0));
    assert!(a.metric("shardcast_forward_bytes_total").unwrap_or(0.0) > 50_000.0);
    // The push is one viewer of A's stream and one publisher on B.
    let on_b = b.stream("live/cam").unwrap();
    assert_eq!(on_b["publish"]["active"], true);

    assert_published(publisher, "publisher on A");
    // ffmpeg on B joined a second or two into the 8 s (200 frames): most of it is there.
    assert_played(player, 120, "viewer on B");
    assert!(!a.log().contains("s3cret"), "A's log shows the push key");
}

#[test]
fn a_target_that_comes_up_late_gets_the_stream_within_the_backoff_cap() {
    let port_b = free_port();
    let cap = Duration::from_millis(2000);
    let url = format!("rtmp://127.0.0.1:{port_b}/live");
    let a = Relay::start(SHARDCAST, "late-a", &pushing(&[url], 2000), 2);
    let publisher = publish(&a.url("late"), 12);
    a.wait_published("live/late", Duration::from_secs(10))
        .expect("A accepted ffmpeg's publish");
    let local = play(&a.url("late"));

    // B is down: the push fails, backs off, and says why.
    let failing = wait_forward(&a, "live/late", Duration::from_secs(5), |f| {
        f["retries"].as_u64().unwrap_or(0) >= 2 && !f["last_error"].is_null()
    })
    .unwrap_or_else(|| panic!("A retries the push: {:?}", a.stream("live/late")));
    assert_ne!(failing["state"], "forwarding", "{failing}");
    assert!(
        failing["last_error"].as_str().unwrap().contains("connect"),
        "{failing}"
    );

    let b = Relay::start_on_port(SHARDCAST, "late-b", TARGET, 1, port_b);
    let up = Instant::now();
    b.wait_published("live/late", cap + Duration::from_millis(1500))
        .unwrap_or_else(|| {
            panic!("B got the stream within the backoff cap ({cap:?}) of coming up")
        });
    let took = up.elapsed();
    let viewer_b = play(&b.url("late"));
    wait_forward(&a, "live/late", Duration::from_secs(3), |f| {
        f["state"] == "forwarding"
    })
    .expect("A's API shows the push forwarding");
    assert!(
        a.metric("shardcast_forward_reconnects_total")
            .unwrap_or(0.0)
            >= 2.0
    );

    // Neither the publisher nor A's own viewer noticed: the whole 12 s (300 frames),
    // decoded without an error.
    assert_published(publisher, "publisher on A");
    assert_played(local, 280, "viewer on A");
    assert_played(viewer_b, 60, "viewer on B");
    eprintln!("B had the stream {took:?} after it came up");
}

#[test]
fn a_loop_of_pushes_is_refused_not_amplified() {
    let [port_a, port_b] = free_ports::<2>();
    let a = Relay::start_on_port(
        SHARDCAST,
        "loop-a",
        &pushing(&[format!("rtmp://127.0.0.1:{port_b}/live")], 10_000),
        2,
        port_a,
    );
    let b = Relay::start_on_port(
        SHARDCAST,
        "loop-b",
        &pushing(&[format!("rtmp://127.0.0.1:{port_a}/live")], 10_000),
        2,
        port_b,
    );
    // Long enough to outlast the checks below (about 6 s, more on a loaded machine; 6 s of
    // media once failed in CI): when the publisher ends, both streams and the push go too.
    let publisher = publish(&a.url("loop"), 15);
    a.wait_published("live/loop", Duration::from_secs(10))
        .expect("A accepted ffmpeg's publish");
    b.wait_published("live/loop", Duration::from_secs(10))
        .expect("A's push reached B");
    // B's push back to A carries A's node id: A refuses it, and B waits the cap.
    let refused = wait_forward(&b, "live/loop", Duration::from_secs(5), |f| {
        f["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("relay loop"))
    })
    .unwrap_or_else(|| panic!("B's push to A is refused: {:?}", b.stream("live/loop")));
    assert_eq!(refused["state"], "waiting", "{refused}");
    thread::sleep(Duration::from_secs(3));
    let later = b.stream("live/loop").unwrap()["forwards"][0].clone();
    assert!(
        later["retries"].as_u64().unwrap() <= 1,
        "a loop refusal is not retried fast: {later}"
    );
    let loops = a
        .metric("shardcast_connections_rejected_total{reason=\"relay_loop\"}")
        .unwrap_or(0.0);
    assert!(
        (1.0..=2.0).contains(&loops),
        "A refused {loops} loop connections"
    );
    // A still has its one publisher, ffmpeg; A's own push to B is the only one running.
    let on_a = a.stream("live/loop").unwrap();
    assert_eq!(on_a["forwards"][0]["state"], "forwarding", "{on_a}");
    assert_eq!(b.metric("shardcast_forwards_active"), Some(0.0));
    assert_published(publisher, "publisher on A");
}

#[test]
fn shardcast_pushes_to_nginx_rtmp() {
    let nginx = NginxRtmp::start("");
    // A host name, resolved off the shard's thread (nginx listens on 127.0.0.1 only, so an
    // IPv6 answer for localhost is tried and passed over).
    let url = format!("rtmp://localhost:{}/live", nginx.port);
    let a = Relay::start(SHARDCAST, "to-nginx-a", &pushing(&[url], 10_000), 2);
    let publisher = publish(&a.url("cam"), 8);
    a.wait_published("live/cam", Duration::from_secs(10))
        .expect("A accepted ffmpeg's publish");
    wait_forward(&a, "live/cam", Duration::from_secs(5), |f| {
        f["state"] == "forwarding"
    })
    .unwrap_or_else(|| {
        panic!(
            "nginx accepted A's push: {:?}\nnginx: {}",
            a.stream("live/cam"),
            nginx.log()
        )
    });
    // Past the first keyframe interval, so nginx has a stream to give the player.
    thread::sleep(Duration::from_millis(500));
    let mut player = play(&nginx.url("cam"));
    assert_published(publisher, "publisher on A");
    // nginx-rtmp (publish_notify off) does not tell its players that the stream ended:
    // once what it had is out, the player is stopped.
    thread::sleep(Duration::from_secs(2));
    let _ = player.kill();
    assert_played(player, 100, "viewer on nginx-rtmp");
}

#[test]
fn nginx_rtmp_pushes_to_shardcast() {
    let b = Relay::start(SHARDCAST, "from-nginx-b", TARGET, 2);
    let nginx = NginxRtmp::start(&format!("push rtmp://127.0.0.1:{}/live;", b.port));
    let publisher = publish(&nginx.url("cam"), 8);
    b.wait_published("live/cam", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("nginx pushed live/cam to shardcast: {}", nginx.log()));
    let player = play(&b.url("cam"));
    assert_published(publisher, "publisher on nginx");
    assert_played(player, 120, "viewer on shardcast");
}

#[test]
fn a_push_to_an_rtmps_target_checks_its_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    let (cert, key) = (temp_path("push-tls.crt"), temp_path("push-tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let b = Relay::start_tls(
        SHARDCAST,
        "push-tls-b",
        &format!(
            "[server]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n{TARGET}",
            cert = cert.display().to_string(),
            key = key.display().to_string()
        ),
        1,
    );
    let tls_port = b.tls.unwrap().port();
    let trusted = format!("rtmps://127.0.0.1:{tls_port}/live");
    let a = Relay::start(
        SHARDCAST,
        "push-tls-a",
        &format!(
            "[server]\ntls_ca_file = {ca:?}\n{}",
            pushing(std::slice::from_ref(&trusted), 10_000),
            ca = cert.display().to_string()
        ),
        1,
    );
    // The system's CAs do not know the test certificate: that push is refused, and says so.
    let doubting = Relay::start(SHARDCAST, "push-tls-c", &pushing(&[trusted], 10_000), 1);
    let _held = RtmpClient::publisher(doubting.port, "sec");
    let refused = wait_forward(&doubting, "live/sec", Duration::from_secs(5), |f| {
        f["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate"))
    });
    assert!(
        refused.is_some(),
        "a push to an unknown certificate fails: {:?}",
        doubting.stream("live/sec")
    );
    let publisher = publish(&a.url("sec"), 6);
    b.wait_published("live/sec", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the rtmps push reached B: {:?}", a.stream("live/sec")));
    let player = play(&b.url("sec"));
    wait_forward(&a, "live/sec", Duration::from_secs(5), |f| {
        f["state"] == "forwarding"
    })
    .expect("A's API shows the rtmps push forwarding");
    assert_published(publisher, "publisher on A");
    assert_played(player, 60, "viewer on B of the rtmps push");
    let _ = (std::fs::remove_file(&cert), std::fs::remove_file(&key));
}
