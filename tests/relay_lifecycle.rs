//! Starting and stopping the relay binary: SIGTERM with clients connected, a bad config,
//! `--check-config`, and a second instance on a port already served.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardcast::rtmp::ClientEvent;
use shardcast::rtmp::command::status;
use shardcast_test_support::admin::ReadyzWatch;
use shardcast_test_support::client::{Recorder, RtmpClient, plain};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::script::{Script, status_codes, summarize, video_frame};
use shardcast_test_support::tools::{
    ffmpeg_play, ffmpeg_publish, free_port, temp_path, wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

fn binary() -> Command {
    let mut cmd = Command::new(SHARDCAST);
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

#[test]
fn sigterm_closes_every_client_and_exits_zero() {
    let config = r#"
[server]
shutdown_timeout_ms = 2000
"#;
    let mut relay = Relay::start(SHARDCAST, "sigterm", config, 2);
    // An ffmpeg publisher and a ClientSession one.
    let ffmpeg_publisher = ffmpeg_publish(&relay.url("cam"), 60, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let script = Script {
        interval: Duration::from_millis(20),
        ..Script::new(u32::MAX / 2)
    };
    let mut publisher = RtmpClient::connect_on_shard(&relay, 1);
    publisher.start_publish("synthetic");
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            script.send_headers(&mut publisher);
            // Sends until the relay closes the connection (or the test gives up).
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let ts = script.timestamp(i);
                publisher.session.send_media(
                    shardcast::rtmp::MediaKind::Video,
                    ts,
                    video_frame(i, i % 30 == 0, 1500),
                );
                if publisher.flush().is_err() || publisher.drain().is_err() {
                    return true;
                }
                std::thread::sleep(script.interval);
            }
            false
        })
    };
    assert!(
        relay
            .wait_published("live/cam", Duration::from_secs(10))
            .is_some(),
        "ffmpeg publishes"
    );
    let viewers: Vec<Recorder> = [("cam", 0), ("cam", 1), ("synthetic", 0), ("synthetic", 1)]
        .into_iter()
        .map(|(key, shard)| Recorder::play_on_shard(&relay, shard, key))
        .collect();
    let player = ffmpeg_play(&relay.url("cam"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |e| e
                .iter()
                .any(|r| matches!(r.event, ClientEvent::Media { .. }))),
            "viewer {} receives media",
            v.local
        );
    }
    assert!(
        relay
            .wait_stream("live/cam", Duration::from_secs(10), |s| {
                s.is_some_and(|s| s["viewers"]["total"] == 3)
            })
            .is_some(),
        "the ffmpeg player plays, beside the two ClientSession viewers"
    );

    // The relay says it is shutting down: /readyz turns 503 until the process is gone.
    let readyz = ReadyzWatch::start(relay.admin, 3);
    relay.terminate();
    let status = relay
        .wait_exit(Duration::from_secs(6))
        .expect("the relay exited within its shutdown timeout");
    assert!(status.success(), "exit status {status}");
    let said = readyz.finish();
    assert!(
        said.iter().flatten().any(|(_, s)| *s == Some(503)),
        "/readyz said 503 through the shutdown"
    );

    for v in viewers {
        assert!(
            v.wait_closed(Duration::from_secs(2)),
            "viewer {} saw its connection close",
            v.local
        );
        let local = v.local;
        let (events, _) = v.finish();
        assert!(
            status_codes(&plain(&events)).contains(&status::PLAY_UNPUBLISH_NOTIFY.to_owned()),
            "viewer {local} was told the stream stopped: {}",
            summarize(&plain(&events))
        );
    }
    let publisher_saw_close = {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !publishing.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        publishing.join().unwrap()
    };
    assert!(
        publisher_saw_close,
        "the ClientSession publisher saw its connection close"
    );
    // The real clients end by themselves: ffmpeg's own timeouts are far longer.
    wait_output(ffmpeg_publisher, Duration::from_secs(5));
    wait_output(player, Duration::from_secs(5));
}

#[test]
fn a_bad_config_fails_at_start_naming_the_key() {
    for (name, text, key) in [
        (
            "bad-backlog",
            "[viewer]\nbacklog_max_bytes = 10\n",
            "viewer.backlog_max_bytes",
        ),
        (
            "bad-unknown",
            "[app.live]\nunpublish_grace = 5\n",
            "unpublish_grace",
        ),
    ] {
        let path = temp_path(&format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let port = free_port();
        let child = binary()
            .arg("--config")
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(key),
            "{name}: the error names {key}: {stderr}"
        );

        // --check-config gives the same verdict without starting.
        let out = binary().arg("--check-config").arg(&path).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(key));
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn check_config_says_the_default_config_is_ok() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/shardcast.toml");
    let out = binary().arg("--check-config").arg(path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("{path}: ok"));
}

#[test]
fn a_second_instance_on_the_same_port_fails_clearly() {
    let relay = Relay::start(SHARDCAST, "first-instance", "", 1);
    let child = binary()
        .arg("--config")
        .arg(&relay.config_path)
        .args(["--listen", &format!("127.0.0.1:{}", relay.port)])
        .args(["--shards", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second instance failed: {stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{} is already in use", relay.port)),
        "it says why: {stderr}"
    );
    // The first one still serves.
    let mut viewer = RtmpClient::connect(relay.port);
    viewer.wait_for(Duration::from_secs(5), |e| {
        matches!(e, ClientEvent::Connected)
    });
}
