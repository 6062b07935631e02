//! Fan-out through the relay binary: many viewers on two shards, and data messages, each
//! message accounted for. A `ClientSession` publisher sends numbered synthetic frames
//! (`shardcast_test_support::script::Script`); `ClientSession` viewers record what they get.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use shardcast::rtmp::ClientEvent;
use shardcast_test_support::client::{Recorded, Recorder, RtmpClient, plain};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::script::{Script, Tag, check_stream, classify, summarize};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// Limits generous enough that no viewer is ever skipped ahead on a loaded machine: these
/// tests are about the relay losing or reordering nothing, not about slow viewers.
const NO_SKIPPING: &str = r#"
[viewer]
backlog_max_bytes = 67108864
backlog_max_ms = 600000
lag_disconnect_ms = 600000

[app.live]
unpublish_grace_ms = 1000
"#;

fn saw_eof(events: &[Recorded]) -> bool {
    events
        .iter()
        .any(|r| matches!(r.event, ClientEvent::StreamEof(_)))
}

#[test]
fn fifty_viewers_on_two_shards_get_every_message_in_order() {
    let relay = Relay::start(SHARDCAST, "fanout-50", NO_SKIPPING, 2);
    let script = Script {
        interval: Duration::from_millis(12),
        ..Script::new(300)
    };
    // Ten viewers are waiting when the publisher arrives; the other forty join while it
    // sends, so they start from the GOP cache (on the origin's shard) or from the
    // origin's snapshot (on the other).
    let mut viewers: Vec<Recorder> = (0..10)
        .map(|_| Recorder::play_waiting(&relay, None, "fan"))
        .collect();
    let mut publisher = RtmpClient::connect_on_shard(&relay, 0);
    publisher.start_publish("fan");
    let publishing = std::thread::spawn(move || {
        script.send_headers(&mut publisher);
        script.send_frames(&mut publisher, 0..script.frames, None);
        publisher.session.close_stream();
        publisher.flush().unwrap();
        publisher
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..40 {
        viewers.push(Recorder::play(relay.port, "fan"));
        std::thread::sleep(Duration::from_millis(40));
    }
    // Each viewer's shard, while all of them are connected (the relay closes them once
    // the grace period after the publisher's end is over).
    let shard_of: BTreeMap<SocketAddr, u64> = relay
        .clients()
        .iter()
        .filter(|c| c["role"] == "viewer")
        .map(|c| {
            (
                c["addr"].as_str().unwrap().parse().unwrap(),
                c["shard"].as_u64().unwrap(),
            )
        })
        .collect();
    let _publisher = publishing.join().unwrap();
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), saw_eof),
            "viewer {} was not told the publisher left",
            v.local
        );
    }

    let mut shards = BTreeMap::new();
    for v in viewers {
        let local = v.local;
        let shard = *shard_of
            .get(&local)
            .unwrap_or_else(|| panic!("the admin API did not list viewer {local}"));
        *shards.entry(shard).or_insert(0) += 1;
        let (events, _) = v.finish();
        let events = plain(&events);
        if let Err(e) = check_stream(&events, &script, script.last()) {
            panic!("viewer {local} (shard {shard}): {e}");
        }
    }
    assert!(
        shards.contains_key(&0) && shards.contains_key(&1),
        "viewers landed on both shards: {shards:?}"
    );
}

#[test]
fn data_messages_reach_viewers_in_order_with_the_media() {
    let relay = Relay::start(SHARDCAST, "fanout-data", NO_SKIPPING, 2);
    let script = Script {
        text_every: Some(3),
        interval: Duration::from_millis(10),
        audio_lag_ms: 20,
        ..Script::new(150)
    };
    // One viewer waiting on each shard before the publisher comes, and one joining each
    // shard mid-stream (which starts from the GOP cache, data messages included).
    let early: Vec<Recorder> = (0..2)
        .map(|shard| {
            let c = RtmpClient::connect_on_shard(&relay, shard);
            Recorder::play_waiting(&relay, Some(c), "data")
        })
        .collect();
    let mut publisher = RtmpClient::connect_on_shard(&relay, 1);
    publisher.start_publish("data");
    script.send_headers(&mut publisher);
    script.send_frames(&mut publisher, 0..70, None);
    let late: Vec<Recorder> = (0..2)
        .map(|shard| Recorder::play_on_shard(&relay, shard, "data"))
        .collect();
    script.send_frames(&mut publisher, 70..script.frames, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();

    for (which, v) in early.into_iter().chain(late).enumerate() {
        assert!(
            v.wait_until(Duration::from_secs(10), saw_eof),
            "viewer {} was not told the publisher left",
            v.local
        );
        let (events, _) = v.finish();
        let events = plain(&events);
        let texts = events
            .iter()
            .filter(|e| matches!(classify(e), Some((Tag::Text { .. }, _))))
            .count();
        let start = check_stream(&events, &script, script.last())
            .unwrap_or_else(|e| panic!("viewer {which}: {e}"));
        if which < 2 {
            assert_eq!(
                start, 0,
                "a viewer waiting for the publisher starts at frame 0"
            );
            assert_eq!(texts, 50, "every text message arrived");
        } else {
            assert!(
                start >= 60,
                "a late viewer starts at the current GOP, got {start}"
            );
        }
    }
}

/// Checks a viewer that joined mid-stream without a GOP to start from: its first video
/// frame is a keyframe, from there it got every video frame in order, and each kind's
/// timestamps (codec headers included) never go back.
fn check_joined_at_keyframe(events: &[ClientEvent], script: &Script) -> Result<u32, String> {
    let tagged: Vec<(Tag, u32)> = events.iter().filter_map(classify).collect();
    let first = tagged
        .iter()
        .find_map(|(t, _)| match t {
            Tag::Video { seq, keyframe } => Some((*seq, *keyframe)),
            _ => None,
        })
        .ok_or_else(|| format!("no video: {}", summarize(events)))?;
    if !first.1 {
        return Err(format!(
            "the first video frame ({}) is not a keyframe",
            first.0
        ));
    }
    let video: Vec<u32> = tagged
        .iter()
        .filter_map(|(t, _)| match t {
            Tag::Video { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let expected: Vec<u32> = (first.0..=script.last()).collect();
    if video != expected {
        return Err(format!(
            "video from {} not complete and in order: {video:?} {}",
            first.0,
            summarize(events)
        ));
    }
    let mut last = BTreeMap::new();
    for (tag, ts) in &tagged {
        let kind = match tag {
            Tag::Video { .. } | Tag::VideoHeader => "video",
            Tag::Audio { .. } | Tag::AudioHeader => "audio",
            _ => continue,
        };
        let prev = last.insert(kind, *ts).unwrap_or(0);
        if *ts < prev {
            return Err(format!("{kind} went back from {prev} to {ts} at {tag:?}"));
        }
    }
    Ok(first.0)
}

#[test]
fn without_a_gop_cache_a_joining_viewer_waits_for_a_keyframe() {
    let config = format!("{NO_SKIPPING}gop_cache = false\n");
    let relay = Relay::start(SHARDCAST, "fanout-no-gop", &config, 2);
    // Audio stamped a little behind the video, as encoders do.
    let script = Script {
        interval: Duration::from_millis(10),
        audio_lag_ms: 20,
        ..Script::new(120)
    };
    let mut publisher = RtmpClient::connect_on_shard(&relay, 0);
    publisher.start_publish("nogop");
    script.send_headers(&mut publisher);
    script.send_frames(&mut publisher, 0..45, None);
    // Mid-GOP (keyframes at 0, 30, 60, 90), one viewer on each shard.
    let viewers: Vec<Recorder> = (0..2)
        .map(|shard| Recorder::play_on_shard(&relay, shard, "nogop"))
        .collect();
    script.send_frames(&mut publisher, 45..script.frames, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();
    for v in viewers {
        assert!(v.wait_until(Duration::from_secs(10), saw_eof));
        let local = v.local;
        let (events, _) = v.finish();
        let start = check_joined_at_keyframe(&plain(&events), &script)
            .unwrap_or_else(|e| panic!("viewer {local}: {e}"));
        assert!(start >= 60, "viewer {local} started at {start}");
    }
}

#[test]
fn with_write_coalescing_every_message_still_arrives_in_order() {
    let config = NO_SKIPPING.replace("[viewer]\n", "[viewer]\nflush_interval_ms = 50\n");
    let relay = Relay::start(SHARDCAST, "fanout-coalesce", &config, 2);
    let script = Script {
        interval: Duration::from_millis(5),
        ..Script::new(120)
    };
    let viewers: Vec<Recorder> = (0..2)
        .map(|shard| {
            let c = RtmpClient::connect_on_shard(&relay, shard);
            Recorder::play_waiting(&relay, Some(c), "coalesce")
        })
        .collect();
    let mut publisher = RtmpClient::connect_on_shard(&relay, 0);
    publisher.start_publish("coalesce");
    script.send_headers(&mut publisher);
    script.send_frames(&mut publisher, 0..script.frames, None);
    publisher.session.close_stream();
    publisher.flush().unwrap();
    for v in viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), saw_eof),
            "viewer {} was not told the publisher left",
            v.local
        );
        let (events, _) = v.finish();
        let events = plain(&events);
        let start = check_stream(&events, &script, script.last())
            .unwrap_or_else(|e| panic!("coalescing viewer: {e}"));
        assert_eq!(
            start, 0,
            "a viewer waiting for the publisher starts at frame 0"
        );
    }
}
