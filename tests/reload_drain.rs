//! Live reload (SIGHUP) and draining (SIGTERM) against the relay binary with real clients:
//! a reload adds an application and changes a setting while a stream plays on
//! uninterrupted; an invalid file is refused and the running configuration kept; a drain
//! turns `/readyz` false at once, keeps serving new clients for `drain_delay_ms`, asks the
//! viewers that announced Enhanced RTMP reconnect support (capsEx) to reconnect, and exits 0
//! within the timeout.

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use shardcast::rtmp::ClientEvent;
use shardcast::rtmp::command::status;
use shardcast_test_support::admin;
use shardcast_test_support::client::{Recorded, Recorder, RtmpClient};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{ffmpeg_publish, wait_output};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

fn media_count(events: &[Recorded]) -> usize {
    events
        .iter()
        .filter(|r| matches!(r.event, ClientEvent::Media { .. }))
        .count()
}

fn is_reconnect_request(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::Status { code, .. } if code == status::CONNECT_RECONNECT_REQUEST)
}

const BASE: &str = r#"
[server]
drain_delay_ms = 1500
shutdown_timeout_ms = 3000

[app.live]
unpublish_grace_ms = 1000
"#;

#[test]
fn sighup_adds_an_application_and_changes_a_setting_while_a_stream_plays_on() {
    let mut relay = Relay::start(SHARDCAST, "reload-apps", BASE, 2);
    let mut publisher = ffmpeg_publish(&relay.url("running"), 30, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        relay
            .wait_published("live/running", Duration::from_secs(15))
            .is_some(),
        "{}",
        relay.log()
    );
    let viewer = Recorder::play(relay.port, "running");
    assert!(
        viewer.wait_until(Duration::from_secs(10), |e| media_count(e) > 20),
        "the viewer receives media before the reload"
    );

    // Before: no application `extra`; ffmpeg cannot publish there.
    let out = wait_output(
        ffmpeg_publish(
            &format!("rtmp://127.0.0.1:{}/extra/one", relay.port),
            2,
            false,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
        Duration::from_secs(20),
    );
    assert!(!out.status.success(), "publishing to an unknown app fails");

    // The new file: an application more, plays no longer allowed in `live`, a key that
    // needs a restart changed.
    let extra_keys = |two: &str| {
        format!(
            "\n[app.extra]\n\n[app.extra.auth]\npublish_keys = {{ one = \"k1\", two = \"{two}\" }}\n"
        )
    };
    let new = format!(
        "{}\nallow_play = false\n{}",
        BASE.replace(
            "shutdown_timeout_ms = 3000",
            "shutdown_timeout_ms = 3000\nio_memory = 131072"
        ),
        extra_keys("k2")
    );
    std::fs::write(&relay.config_path, &new).unwrap();
    let before = media_count(&viewer.events());
    relay.reload();
    assert!(
        relay
            .wait_log(Duration::from_secs(10), |l| l
                .contains("configuration reloaded"))
            .is_some(),
        "{}",
        relay.log()
    );
    assert!(
        relay
            .wait_log(Duration::from_secs(5), |l| l.contains("server.io_memory")
                && l.contains("restart"))
            .is_some(),
        "the key that needs a restart is named: {}",
        relay.log()
    );

    // After: `extra` takes a publisher with its key.
    let mut extra = ffmpeg_publish(
        &format!("rtmp://127.0.0.1:{}/extra/one?key=k1", relay.port),
        30,
        true,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    assert!(
        relay
            .wait_published("extra/one", Duration::from_secs(15))
            .is_some(),
        "the added application takes a publisher: {}",
        relay.log()
    );
    // A new viewer of `live` is refused under the new setting...
    let mut refused = RtmpClient::connect(relay.port);
    refused.session.play("running");
    refused.flush().unwrap();
    let answer = refused.try_wait_for(
        Duration::from_secs(10),
        |e| matches!(e, ClientEvent::Status { level, .. } if level == "error"),
    );
    assert!(
        answer.is_ok(),
        "a new play is refused after allow_play = false"
    );
    // ...while the viewer that was playing plays on, uninterrupted.
    assert!(
        viewer.wait_until(Duration::from_secs(10), |e| media_count(e) > before + 50),
        "the viewer keeps receiving after the reload"
    );
    assert!(!viewer.is_closed(), "the running viewer was not closed");

    // A key changed by a second reload: the old key no longer publishes, the new one does,
    // and the streams already running go on.
    std::fs::write(&relay.config_path, new.replace("\"k2\"", "\"k2-rotated\"")).unwrap();
    relay.reload();
    let reloaded_twice = std::time::Instant::now() + Duration::from_secs(10);
    while relay
        .log()
        .matches("SIGHUP: configuration reloaded")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < reloaded_twice,
            "the second reload is taken: {}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let publish_two = |key: &str| {
        ffmpeg_publish(
            &format!("rtmp://127.0.0.1:{}/extra/two?key={key}", relay.port),
            30,
            true,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    };
    let before_keys = media_count(&viewer.events());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut old_key = publish_two("k2");
    let refused_at = loop {
        if let Some(status) = old_key.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = old_key.kill();
    let _ = old_key.wait();
    assert!(
        refused_at.is_some_and(|s| !s.success()),
        "the rotated-out key is refused: {}",
        relay.log()
    );
    let mut new_key = publish_two("k2-rotated");
    assert!(
        relay
            .wait_published("extra/two", Duration::from_secs(15))
            .is_some(),
        "the new key publishes: {}",
        relay.log()
    );
    assert!(
        relay.stream("extra/one").is_some(),
        "the stream published before the key change goes on"
    );
    assert!(
        viewer.wait_until(Duration::from_secs(10), |e| media_count(e)
            > before_keys + 50),
        "the viewer keeps receiving across the second reload"
    );
    let _ = new_key.kill();
    let _ = new_key.wait();
    for p in [&mut publisher, &mut extra] {
        let _ = p.kill();
        let _ = p.wait();
    }
    relay.terminate();
    assert!(relay.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn an_invalid_file_on_sighup_keeps_the_running_configuration() {
    let relay = Relay::start(SHARDCAST, "reload-invalid", BASE, 1);
    std::fs::write(
        &relay.config_path,
        "[server]\nchunk_size = 1\n\n[app.other]\n",
    )
    .unwrap();
    relay.reload();
    let line = relay.wait_log(Duration::from_secs(10), |l| {
        l.contains("configuration refused")
    });
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("server.chunk_size")),
        "the refusal names the key: {line:?}\n{}",
        relay.log()
    );
    // `live` is still served, and `other` was not added.
    let _publisher = RtmpClient::publisher(relay.port, "still");
    assert!(
        relay
            .wait_published("live/still", Duration::from_secs(10))
            .is_some()
    );
    assert!(relay.is_ready());
}

#[test]
fn sigterm_drains_asks_capable_clients_to_reconnect_and_exits_zero() {
    let config = BASE.replace(
        "shutdown_timeout_ms = 3000",
        "shutdown_timeout_ms = 3000\nreconnect_tc_url = \"rtmp://other.example/live\"",
    );
    let mut relay = Relay::start(SHARDCAST, "drain", &config, 2);
    let _publisher = {
        let mut p = RtmpClient::publisher(relay.port, "drained");
        p.send_media(
            shardcast::rtmp::MediaKind::Video,
            0,
            bytes::Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3]),
        );
        p
    };
    // A viewer that announced reconnect support, and one that did not.
    let mut capable = RtmpClient::over(
        TcpStream::connect(("127.0.0.1", relay.port)).unwrap(),
        relay.port,
        1,
    );
    capable.start_play("drained");
    let capable = Recorder::start(capable);
    let plain = Recorder::play(relay.port, "drained");

    let started = Instant::now();
    relay.terminate();
    // /readyz false at once.
    let deadline = Instant::now() + Duration::from_secs(2);
    while relay.is_ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!relay.is_ready(), "/readyz answers 503 once draining");
    assert!(
        capable.wait_until(Duration::from_secs(5), |e| e
            .iter()
            .any(|r| is_reconnect_request(&r.event))),
        "the capsEx viewer is asked to reconnect: {:?}",
        capable.events()
    );
    // During the drain the relay still serves: a new client is accepted and listed.
    let late = RtmpClient::connect(relay.port);
    if started.elapsed() < Duration::from_millis(1200) {
        assert!(
            relay
                .client_by_addr(late.local, Duration::from_secs(2))
                .is_some(),
            "a client arriving during the drain is served"
        );
    }
    let status = relay.wait_exit(Duration::from_secs(15));
    let elapsed = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "the relay exits 0: {status:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(1400),
        "the relay served through drain_delay_ms before exiting ({elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_millis(1500 + 3000 + 3000),
        "the relay exits within the drain and the shutdown timeout ({elapsed:?})"
    );
    assert!(
        !plain
            .events()
            .iter()
            .any(|r| is_reconnect_request(&r.event)),
        "a viewer without capsEx is not asked to reconnect"
    );
    assert!(
        plain.wait_closed(Duration::from_secs(1)) && capable.wait_closed(Duration::from_secs(1))
    );
}

#[test]
fn sighup_rotates_the_admin_token() {
    let with_token = |token: &str| format!("{BASE}\n[admin]\ntoken = \"{token}\"\n");
    let relay = Relay::start(
        SHARDCAST,
        "reload-admin-token",
        &with_token("first-token"),
        1,
    );
    // A call that changes something needs the token; kicking a client nobody has is a 404
    // once the token passes, a 401 before.
    let kick = |token: &str| {
        admin::request(
            relay.admin,
            "DELETE",
            "/api/v1/clients/987654",
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
        .unwrap()
        .status
    };
    assert_eq!(kick("first-token"), 404);
    assert_eq!(kick("second-token"), 401);

    std::fs::write(&relay.config_path, with_token("second-token")).unwrap();
    relay.reload();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kick("second-token") != 404 {
        assert!(
            Instant::now() < deadline,
            "the new token never passed\n{}",
            relay.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(kick("first-token"), 401, "the old token is refused");
    assert_eq!(kick("second-token"), 404, "the new token passes");
    assert!(
        !relay.log().contains("second-token"),
        "the token never reaches the log"
    );
}
