//! Slow and hostile clients against the relay binary: each is dealt with on its own, and
//! a normal viewer on the same shard notices nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shardcast::rtmp::ClientEvent;
use shardcast_test_support::client::{ReadEnd, Recorder, RtmpClient, plain};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::script::{Script, Tag, check_stream, classify, summarize};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// The `dropped_frames` of each of `peers` the admin API still lists (a peer it does not
/// list has been closed).
fn dropped_frames(relay: &Relay, peers: &[SocketAddr]) -> HashMap<SocketAddr, u64> {
    relay
        .clients()
        .iter()
        .filter_map(|c| {
            let addr: SocketAddr = c["addr"].as_str()?.parse().ok()?;
            peers
                .contains(&addr)
                .then(|| (addr, c["dropped_frames"].as_u64().unwrap()))
        })
        .collect()
}

#[test]
fn stalled_and_slow_viewers_drop_to_keyframes_then_are_disconnected() {
    let config = r#"
[viewer]
backlog_max_bytes = 65536
backlog_max_ms = 500
lag_disconnect_ms = 2000
send_buffer_bytes = 8192

[app.live]
unpublish_grace_ms = 1000
"#;
    let relay = Relay::start(SHARDCAST, "stalled-viewer", config, 1);
    // Live-paced, about 75 KB/s: 25 frames a second, a keyframe every 10.
    let script = Script {
        keyframe_every: 10,
        interval: Duration::from_millis(40),
        video_size: 2000,
        keyframe_size: 8000,
        ..Script::new(150)
    };
    let mut publisher = RtmpClient::publisher(relay.port, "slow");
    script.send_headers(&mut publisher);
    script.send_frames(&mut publisher, 0..5, None);
    let normal = Recorder::play(relay.port, "slow");
    // The stalled viewer plays, then reads nothing more; its receive window is tiny.
    let mut stalled = RtmpClient::connect_with_rcvbuf(relay.port, Some(4096));
    stalled.start_play("slow");
    let stalled_peer = stalled.local;
    // The slow one reads at most 1 KB every 100 ms: less than half of what the keyframes
    // and audio alone take.
    let mut slow = RtmpClient::connect_with_rcvbuf(relay.port, Some(4096));
    slow.start_play("slow");
    let slow_peer = slow.local;
    let slow_reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match slow.read_at_most(1024, Duration::from_millis(50)) {
                Ok(events) => slow.seen.extend(events),
                Err(ReadEnd::Closed) => return (slow.seen, true),
                Err(ReadEnd::Timeout) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (slow.seen, false)
    });

    // Until the relay has closed both (the admin API lists neither), noting the frames
    // each lost while it was still listed: that count leaves with the client.
    let lagging = [stalled_peer, slow_peer];
    let mut dropped: HashMap<SocketAddr, u64> = HashMap::new();
    let mut sent = 5;
    while sent < script.frames {
        let listed = dropped_frames(&relay, &lagging);
        if listed.is_empty() {
            break;
        }
        for (peer, n) in listed {
            let seen = dropped.entry(peer).or_default();
            *seen = (*seen).max(n);
        }
        script.send_frames(&mut publisher, sent..sent + 1, None);
        sent += 1;
    }
    assert!(
        dropped_frames(&relay, &lagging).is_empty(),
        "the relay closed both lagging viewers before the publication's end"
    );
    // The slow viewer lost video frames while it was still connected. (The stalled one's
    // count stays 0: frames count as dropped when a write passes over them, and nothing
    // is written to a socket that takes nothing.)
    assert!(
        dropped.get(&slow_peer).is_some_and(|&n| n > 0),
        "the slow viewer {slow_peer} lost video frames before it was closed: {dropped:?}"
    );
    // Both were closed for lagging, and skipped video before that (the normal viewer,
    // which gets every frame, never does); the stream counts what its viewers lost, those
    // gone included.
    assert_eq!(
        relay.metric("shardcast_viewer_lag_disconnects_total"),
        Some(2.0),
        "two viewers disconnected for staying behind"
    );
    assert!(
        relay
            .metric("shardcast_viewer_skips_total")
            .is_some_and(|n| n >= 2.0),
        "both lagging viewers skipped video"
    );
    let stream = relay.stream("live/slow").expect("the stream is listed");
    let lost: u64 = dropped.values().sum();
    assert!(
        stream["dropped_frames"].as_u64().unwrap() >= lost,
        "the stream's dropped_frames ({}) counts what the closed viewers lost ({lost})",
        stream["dropped_frames"]
    );
    // The rest of the publication still reaches the normal viewer.
    script.send_frames(&mut publisher, sent..script.frames, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();
    assert!(
        stalled.wait_closed(Duration::from_secs(10)),
        "the relay closed the stalled viewer's connection"
    );

    // The slow viewer was sent keyframes and audio: every gap in its video ends at a
    // keyframe.
    let (seen, closed) = slow_reader.join().unwrap();
    assert!(closed, "the relay closed the slow viewer's connection");
    let mut previous: Option<u32> = None;
    let mut gaps = 0;
    for (tag, _) in seen.iter().filter_map(classify) {
        if let Tag::Video { seq, keyframe } = tag {
            if let Some(p) = previous
                && seq != p + 1
            {
                gaps += 1;
                assert!(
                    keyframe,
                    "after frame {p} the slow viewer got {seq}, not a keyframe"
                );
            }
            previous = Some(seq);
        }
    }
    assert!(
        gaps > 0,
        "the slow viewer skipped video: {}",
        summarize(&seen)
    );

    assert!(
        normal.wait_until(Duration::from_secs(10), |e| e
            .iter()
            .any(|r| matches!(r.event, ClientEvent::StreamEof(_)))),
        "the normal viewer saw the end"
    );
    let (events, closed) = normal.finish();
    assert!(!closed, "the normal viewer is still connected");
    check_stream(&plain(&events), &script, script.last())
        .unwrap_or_else(|e| panic!("the normal viewer: {e}"));
}

/// A raw TCP client; returns true once the relay has closed it (EOF or reset) within
/// `limit`.
fn closed_by_relay(socket: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn bad_clients_are_closed_and_a_viewer_on_the_same_shard_notices_nothing() {
    let config = r#"
[server]
handshake_timeout_ms = 1000
max_message_size = 65536

[app.live]
unpublish_grace_ms = 1000
"#;
    let relay = Relay::start(SHARDCAST, "bad-clients", config, 1);
    let script = Script {
        interval: Duration::from_millis(15),
        ..Script::new(200)
    };
    let mut publisher = RtmpClient::publisher(relay.port, "calm");
    script.send_headers(&mut publisher);
    script.send_frames(&mut publisher, 0..10, None);
    let viewer = Recorder::play(relay.port, "calm");
    script.send_frames(&mut publisher, 10..40, None);

    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        .unwrap();
    garbage.write_all(&[0xAB; 3000]).unwrap();
    let garbage_peer = garbage.local_addr().unwrap();
    // C0 and half of C1, then nothing.
    let mut staller = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    staller.write_all(&[3]).unwrap();
    staller.write_all(&[0u8; 700]).unwrap();
    let staller_peer = staller.local_addr().unwrap();
    // A proper connect, then a chunk header announcing a 1 MiB video message.
    let mut oversized = RtmpClient::connect(relay.port);
    oversized.wait_for(Duration::from_secs(5), |e| {
        matches!(e, ClientEvent::Connected)
    });
    let oversized_peer = oversized.local;
    let length: u32 = 1 << 20;
    let mut header = vec![0x04, 0, 0, 0];
    header.extend_from_slice(&length.to_be_bytes()[1..]);
    header.push(9);
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&[0x17; 128]);
    oversized.socket.write_all(&header).unwrap();

    script.send_frames(&mut publisher, 40..120, None);
    assert!(
        closed_by_relay(&mut garbage, Duration::from_secs(5)),
        "the garbage client was closed"
    );
    assert!(
        closed_by_relay(&mut staller, Duration::from_secs(5)),
        "the stalled handshake was closed"
    );
    assert!(
        oversized.wait_closed(Duration::from_secs(5)),
        "the oversized message's sender was closed"
    );
    script.send_frames(&mut publisher, 120..script.frames, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();

    // The relay has let go of all three; why it closed each, only its log says.
    for (peer, why) in [
        (garbage_peer, "handshake"),
        (staller_peer, "handshake not completed within 1000 ms"),
        (oversized_peer, "65536"),
    ] {
        assert!(
            relay.wait_client_gone(peer, Duration::from_secs(2)),
            "the admin API no longer lists {peer}"
        );
        let line = relay
            .wait_log(Duration::from_secs(2), |l| {
                l.contains("connection closed") && l.contains(&format!(" peer={peer} "))
            })
            .unwrap_or_else(|| panic!("no closing line for {peer}"));
        assert!(
            line.contains(why),
            "{peer} closed for the right reason: {line}"
        );
    }
    assert_eq!(
        relay.clients().len(),
        2,
        "the publisher and the viewer are all that is left"
    );
    assert!(
        viewer.wait_until(Duration::from_secs(10), |e| e
            .iter()
            .any(|r| matches!(r.event, ClientEvent::StreamEof(_)))),
        "the viewer saw the end"
    );
    assert!(!viewer.is_closed(), "the viewer is still connected");
    let (events, _) = viewer.finish();
    check_stream(&plain(&events), &script, script.last())
        .unwrap_or_else(|e| panic!("the viewer: {e}"));
}
