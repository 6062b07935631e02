//! Publishers coming and going through the relay binary: an unpublish with its grace
//! period, a republish (on the same shard or another), and a second publisher refused
//! while the first is live.

use std::process::Stdio;
use std::time::{Duration, Instant};

use shardcast::rtmp::ClientEvent;
use shardcast::rtmp::command::status;
use shardcast_test_support::client::{Recorded, Recorder, RtmpClient, plain};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::script::{Script, Tag, check_stream, classify, summarize, video_frame};
use shardcast_test_support::tools::{tool, wait_output};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

const GRACE_MS: u64 = 1500;

fn config() -> String {
    format!(
        r#"
[viewer]
backlog_max_bytes = 67108864
backlog_max_ms = 600000
lag_disconnect_ms = 600000

[app.live]
unpublish_grace_ms = {GRACE_MS}
"#
    )
}

fn is_status(e: &ClientEvent, wanted: &str) -> bool {
    matches!(e, ClientEvent::Status { code, .. } if code == wanted)
}

/// When (after `since`) the viewer saw both the UnpublishNotify and the Stream EOF that
/// followed `since`, if it did.
fn told_unpublished(events: &[Recorded], since: Instant) -> Option<Duration> {
    let after: Vec<&Recorded> = events.iter().filter(|r| r.at >= since).collect();
    let notify = after
        .iter()
        .find(|r| is_status(&r.event, status::PLAY_UNPUBLISH_NOTIFY))?;
    let eof = after
        .iter()
        .find(|r| matches!(r.event, ClientEvent::StreamEof(_)))?;
    Some(notify.at.max(eof.at).duration_since(since))
}

/// A publisher goes away; its viewers (on both shards, `ClientSession`s and ffmpeg) are
/// told at once; a second publisher, on `second_shard`, comes back within the grace
/// period and reaches the same viewers; when it goes too, the viewers are closed once the
/// grace period is over.
fn unpublish_and_republish(name: &str, first_shard: usize, second_shard: usize) {
    let relay = Relay::start(SHARDCAST, name, &config(), 2);
    let first = Script::new(60);
    let mut publisher = RtmpClient::connect_on_shard(&relay, first_shard);
    publisher.start_publish("grace");
    first.send_headers(&mut publisher);
    first.send_frames(&mut publisher, 0..30, None);

    let viewers: Vec<Recorder> = [0, 0, 1, 1]
        .into_iter()
        .map(|shard| Recorder::play_on_shard(&relay, shard, "grace"))
        .collect();
    // Real players, told to copy (the synthetic frames are not decodable video); their
    // 15 s read timeout is far longer than the test waits for them to end.
    let players: Vec<std::process::Child> = (0..2)
        .map(|_| {
            tool("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-nostats"])
                .args(["-rw_timeout", "15000000", "-i"])
                .arg(relay.url("grace"))
                .args(["-map", "0", "-c", "copy", "-f", "null", "-"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(
        relay
            .wait_stream("live/grace", Duration::from_secs(10), |s| {
                s.is_some_and(|s| s["viewers"]["total"] == 6)
            })
            .is_some(),
        "the ffmpeg players started, beside the four ClientSession viewers"
    );
    first.send_frames(&mut publisher, 30..60, None);
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |events| events.iter().any(|r| {
                matches!(classify(&r.event), Some((Tag::Video { seq: 59, .. }, _)))
            })),
            "viewer {} got the first publisher's last frame",
            v.local
        );
    }

    // The first publisher vanishes (no FCUnpublish: the socket just closes).
    let left = Instant::now();
    drop(publisher);
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(2), |e| told_unpublished(e, left)
                .is_some()),
            "viewer {} was told within 2 s that the publisher left: {}",
            v.local,
            summarize(&plain(&v.events()))
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut players_done = Vec::new();
    for p in players {
        players_done.push(wait_output(p, Duration::from_secs(5)));
    }

    // Back within the grace period, with a clock that restarts at zero.
    let second = Script {
        first: 1000,
        ..Script::new(60)
    };
    let mut publisher = RtmpClient::connect_on_shard(&relay, second_shard);
    assert!(
        left.elapsed() < Duration::from_millis(GRACE_MS),
        "the test republishes within the grace period"
    );
    publisher.start_publish("grace");
    second.send_headers(&mut publisher);
    second.send_frames(&mut publisher, second.first..second.last() + 1, None);
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |events| events.iter().any(|r| {
                matches!(classify(&r.event), Some((Tag::Video { seq: 1059, .. }, _)))
            })),
            "viewer {} got the second publisher's last frame: {}",
            v.local,
            summarize(&plain(&v.events()))
        );
    }
    let left_again = Instant::now();
    drop(publisher);
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(2), |e| told_unpublished(e, left_again)
                .is_some()),
            "viewer {} was told within 2 s that the second publisher left: {}",
            v.local,
            summarize(
                &plain(&v.events())
                    .into_iter()
                    .filter(|e| classify(e).is_none())
                    .collect::<Vec<_>>()
            )
        );
    }
    for v in &viewers {
        assert!(
            v.wait_closed(Duration::from_millis(GRACE_MS) + Duration::from_secs(3)),
            "viewer {} was closed after the grace period",
            v.local
        );
    }
    let closed_after = left_again.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1000),
        "viewers were kept for the grace period, closed after {closed_after:?}"
    );
    assert!(
        relay
            .wait_stream("live/grace", Duration::from_secs(2), |s| s.is_none())
            .is_none(),
        "the stream ended with the grace period: the admin API no longer lists it"
    );

    for v in viewers {
        let local = v.local;
        let (events, closed) = v.finish();
        assert!(closed);
        let events = plain(&events);
        check_publication_sequence(&events, &first, &second)
            .unwrap_or_else(|e| panic!("viewer {local}: {e}\n{}", summarize(&events)));
    }
    // ffmpeg ends by itself when told the stream is unpublished (wait_output above
    // allowed 5 s, against its own 15 s read timeout); how it exits does not matter.
    assert_eq!(players_done.len(), 2);
}

/// The viewer got the first publication from its start keyframe to its end, then
/// UnpublishNotify and Stream EOF, then PublishNotify, the second publication's codec
/// headers and its frames in order from a keyframe, with timestamps never going back.
fn check_publication_sequence(
    events: &[ClientEvent],
    first: &Script,
    second: &Script,
) -> Result<(), String> {
    let unpublish = events
        .iter()
        .position(|e| is_status(e, status::PLAY_UNPUBLISH_NOTIFY))
        .ok_or("no UnpublishNotify")?;
    let (before, after) = events.split_at(unpublish);
    check_stream(before, first, first.last()).map_err(|e| format!("first publisher: {e}"))?;
    let republish = after
        .iter()
        .position(|e| is_status(e, status::PLAY_PUBLISH_NOTIFY))
        .ok_or("no PublishNotify after the republish")?;
    if !after[..republish]
        .iter()
        .any(|e| matches!(e, ClientEvent::StreamEof(_)))
    {
        return Err("no Stream EOF after the UnpublishNotify".into());
    }
    if let Some(stray) = after[..republish].iter().find(|e| classify(e).is_some()) {
        return Err(format!("{stray:?} between the two publications"));
    }
    let second_part = &after[republish..];
    let end = second_part
        .iter()
        .position(|e| is_status(e, status::PLAY_UNPUBLISH_NOTIFY))
        .unwrap_or(second_part.len());
    let second_part = &second_part[..end];
    let tagged: Vec<(Tag, u32)> = second_part.iter().filter_map(classify).collect();
    let first_frame = tagged
        .iter()
        .position(|(t, _)| matches!(t, Tag::Video { .. }))
        .ok_or("no video from the second publisher")?;
    for header in [Tag::VideoHeader, Tag::AudioHeader] {
        if !tagged[..first_frame].iter().any(|(t, _)| *t == header) {
            return Err(format!(
                "the second publisher's {header:?} did not come before its first frame"
            ));
        }
    }
    let Tag::Video {
        seq: start,
        keyframe: true,
    } = tagged[first_frame].0
    else {
        return Err(format!(
            "the second publication starts with {:?}, not a keyframe",
            tagged[first_frame].0
        ));
    };
    // Every viewer was there before the republish: it gets the new publisher's frames
    // from the very first.
    if start != second.first {
        return Err(format!(
            "the second publication starts at frame {start}, not {}",
            second.first
        ));
    }
    let got: Vec<Tag> = tagged[first_frame..]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| matches!(t, Tag::Video { .. } | Tag::Audio { .. }))
        .collect();
    let expected: Vec<Tag> = (start..=second.last())
        .flat_map(|i| second.frame_tags(i))
        .collect();
    if got != expected {
        return Err(format!(
            "second publication from {start}: got {} messages, expected {}",
            got.len(),
            expected.len()
        ));
    }
    // One timeline across both publishers, per kind.
    let mut last = std::collections::HashMap::new();
    for (tag, ts) in events.iter().filter_map(classify) {
        let kind = match tag {
            Tag::Video { .. } | Tag::VideoHeader => "video",
            Tag::Audio { .. } | Tag::AudioHeader => "audio",
            _ => continue,
        };
        let prev = last.insert(kind, ts).unwrap_or(0);
        if ts < prev {
            return Err(format!(
                "{kind} timestamp went back from {prev} to {ts} at {tag:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn a_republish_on_the_same_shard_reaches_the_waiting_viewers() {
    unpublish_and_republish("republish-same", 0, 0);
}

#[test]
fn a_republish_on_another_shard_reaches_the_waiting_viewers() {
    unpublish_and_republish("republish-other", 0, 1);
}

#[test]
fn a_second_publisher_on_a_live_key_is_refused() {
    let relay = Relay::start(SHARDCAST, "second-publisher", &config(), 2);
    let script = Script::new(150);
    let mut publisher = RtmpClient::connect_on_shard(&relay, 0);
    publisher.start_publish("busy");
    script.send_headers(&mut publisher);
    script.send_frames(&mut publisher, 0..40, None);
    let viewers: Vec<Recorder> = (0..2)
        .map(|shard| Recorder::play_on_shard(&relay, shard, "busy"))
        .collect();
    script.send_frames(&mut publisher, 40..60, None);

    // A second encoder on each shard asks for the same key while the first sends.
    for shard in 0..2 {
        let mut intruder = RtmpClient::connect_on_shard(&relay, shard);
        intruder.session.publish("busy");
        intruder.flush().unwrap();
        let refused = intruder.wait_for(Duration::from_secs(5), |e| {
            matches!(e, ClientEvent::Status { code, .. }
                if code == status::PUBLISH_BAD_NAME || code == status::PUBLISH_START)
        });
        assert!(
            is_status(&refused, status::PUBLISH_BAD_NAME),
            "the second publisher on shard {shard} was refused: {refused:?}"
        );
        // It may still send media; none of it must reach the viewers.
        intruder.send_media(
            shardcast::rtmp::MediaKind::Video,
            0,
            video_frame(9999, true, 100),
        );
        script.send_frames(
            &mut publisher,
            60 + shard as u32 * 20..80 + shard as u32 * 20,
            None,
        );
    }
    script.send_frames(&mut publisher, 100..150, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();

    for v in viewers {
        assert!(v.wait_until(Duration::from_secs(10), |e| {
            e.iter()
                .any(|r| matches!(r.event, ClientEvent::StreamEof(_)))
        }));
        let local = v.local;
        let (events, _) = v.finish();
        let events = plain(&events);
        check_stream(&events, &script, script.last())
            .unwrap_or_else(|e| panic!("viewer {local}: {e}"));
    }
    assert_eq!(
        relay.metric(r#"shardcast_connections_rejected_total{reason="stream_busy"}"#),
        Some(2.0),
        "both refusals counted"
    );
}

#[test]
fn a_stream_published_again_after_it_ended_serves_new_viewers() {
    let config = r#"
[app.live]
unpublish_grace_ms = 500
wait_for_publisher_ms = 20000
"#;
    let relay = Relay::start(SHARDCAST, "publish-after-end", config, 1);
    let first = Script::new(20);
    let mut publisher = RtmpClient::publisher(relay.port, "again");
    first.send_headers(&mut publisher);
    first.send_frames(&mut publisher, 0..20, None);
    drop(publisher);
    // A viewer arrives while the stream is in its grace period, and waits through its end
    // (the stream stays listed for its waiting viewer, without an origin).
    let waiting = Recorder::play_waiting(&relay, None, "again");
    let ended = relay
        .wait_stream("live/again", Duration::from_secs(5), |s| {
            s.is_some_and(|s| s["origin_shard"].is_null())
        })
        .expect("the stream ended after its grace period");
    assert_eq!(ended["publish"]["active"], false);
    assert_eq!(ended["viewers"]["waiting"], 1, "the viewer still waits");
    // A new publication starts the waiting viewer, which then leaves.
    let second = Script::new(90);
    let mut publisher = RtmpClient::publisher(relay.port, "again");
    second.send_headers(&mut publisher);
    second.send_frames(&mut publisher, 0..10, None);
    assert!(
        waiting.wait_until(Duration::from_secs(5), |e| e
            .iter()
            .any(|r| matches!(r.event, ClientEvent::PlayStarted { .. }))),
        "the waiting viewer started"
    );
    drop(waiting);
    second.send_frames(&mut publisher, 10..20, None);
    // Viewers arriving now get the whole stream as usual.
    let viewer = Recorder::play(relay.port, "again");
    second.send_frames(&mut publisher, 20..second.frames, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();
    assert!(
        viewer.wait_until(Duration::from_secs(10), |e| e
            .iter()
            .any(|r| matches!(r.event, ClientEvent::StreamEof(_)))),
        "the new viewer saw the end: {}",
        summarize(&plain(&viewer.events()))
    );
    let (events, _) = viewer.finish();
    check_stream(&plain(&events), &second, second.last())
        .unwrap_or_else(|e| panic!("the new viewer: {e}"));
}

#[test]
fn an_immediate_takeover_on_another_shard_continues_for_every_viewer() {
    let config = r#"
[viewer]
backlog_max_bytes = 67108864
backlog_max_ms = 600000
lag_disconnect_ms = 600000

[app.live]
takeover_immediate = true
"#;
    let relay = Relay::start(SHARDCAST, "takeover", config, 2);
    let first = Script::new(60);
    let mut publisher = RtmpClient::connect_on_shard(&relay, 0);
    publisher.start_publish("backup");
    first.send_headers(&mut publisher);
    first.send_frames(&mut publisher, 0..20, None);
    let viewers: Vec<Recorder> = [0, 1]
        .into_iter()
        .map(|shard| Recorder::play_on_shard(&relay, shard, "backup"))
        .collect();
    first.send_frames(&mut publisher, 20..40, None);

    // The backup encoder, on the other shard, takes the key over at once; its clock
    // starts at zero.
    let second = Script {
        first: 1000,
        ..Script::new(90)
    };
    let mut backup = RtmpClient::connect_on_shard(&relay, 1);
    backup.start_publish("backup");
    assert!(
        publisher.wait_closed(Duration::from_secs(5)),
        "the first publisher was disconnected"
    );
    second.send_headers(&mut backup);
    second.send_frames(&mut backup, second.first..second.last() + 1, None);
    backup.session.close_stream();
    backup.flush().unwrap();

    for v in viewers {
        assert!(v.wait_until(Duration::from_secs(10), |e| {
            e.iter()
                .any(|r| matches!(r.event, ClientEvent::StreamEof(_)))
        }));
        let local = v.local;
        let (events, closed) = v.finish();
        assert!(!closed);
        let tagged: Vec<(Tag, u32)> = plain(&events).iter().filter_map(classify).collect();
        let video: Vec<(u32, bool)> = tagged
            .iter()
            .filter_map(|(t, _)| match t {
                Tag::Video { seq, keyframe } => Some((*seq, *keyframe)),
                _ => None,
            })
            .collect();
        // The first publisher's frames, then the backup's from a keyframe to its end, in
        // order: nothing of either lost in between but the backup's frames before a
        // keyframe.
        let switch = video
            .iter()
            .position(|(seq, _)| *seq >= 1000)
            .unwrap_or_else(|| panic!("viewer {local} got no frame of the backup"));
        let (old, new) = video.split_at(switch);
        assert!(
            old.windows(2).all(|w| w[1].0 == w[0].0 + 1) && old.last().is_some_and(|f| f.0 >= 39),
            "viewer {local}: the first publisher's frames in order to the end: {old:?}"
        );
        assert!(
            new[0].1,
            "viewer {local}: the backup's first frame is a keyframe"
        );
        let expected: Vec<u32> = (new[0].0..=second.last()).collect();
        assert_eq!(
            new.iter().map(|f| f.0).collect::<Vec<_>>(),
            expected,
            "viewer {local}: the backup's frames in order"
        );
        assert!(new[0].0 <= 1030, "viewer {local} resumed at {}", new[0].0);
        let mut last = std::collections::HashMap::new();
        for (tag, ts) in &tagged {
            let kind = match tag {
                Tag::Video { .. } | Tag::VideoHeader => "video",
                Tag::Audio { .. } | Tag::AudioHeader => "audio",
                _ => continue,
            };
            let prev = last.insert(kind, *ts).unwrap_or(0);
            assert!(
                *ts >= prev,
                "viewer {local}: {kind} went back from {prev} to {ts}"
            );
        }
    }
}
