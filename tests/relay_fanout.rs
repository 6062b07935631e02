//! Fan-out through the relay binary: many viewers on two shards, and data messages, each
//! message accounted for. A `ClientSession` publisher sends numbered synthetic frames
//! (`support::Script`); `ClientSession` viewers record what they get.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use shardcast::rtmp::ClientEvent;
use support::*;

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
    let relay = Relay::start("fanout-50", NO_SKIPPING, 2);
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
        let line = relay
            .log_lines(&["viewer started", &format!("peer={local} ")])
            .pop()
            .or_else(|| {
                relay
                    .log()
                    .lines()
                    .find(|l| {
                        l.contains("viewer started")
                            && log_field(l, "peer") == Some(&local.to_string())
                    })
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no 'viewer started' line for {local}"));
        *shards
            .entry(log_field(&line, "shard").unwrap().to_owned())
            .or_insert(0) += 1;
        let (events, _) = v.finish();
        let events = plain(&events);
        if let Err(e) = check_stream(&events, &script, script.last()) {
            panic!(
                "viewer {local} (shard {:?}): {e}",
                log_field(&line, "shard")
            );
        }
    }
    assert!(
        shards.contains_key("0") && shards.contains_key("1"),
        "viewers landed on both shards: {shards:?}"
    );
}

#[test]
fn data_messages_reach_viewers_in_order_with_the_media() {
    let relay = Relay::start("fanout-data", NO_SKIPPING, 2);
    let script = Script {
        text_every: Some(3),
        interval: Duration::from_millis(10),
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
        .map(|shard| {
            let mut c = RtmpClient::connect_on_shard(&relay, shard);
            c.start_play("data");
            Recorder::start(c)
        })
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
