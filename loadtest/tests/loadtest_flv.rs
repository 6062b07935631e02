//! shardcast-load's HTTP-FLV and WebSocket-FLV viewers against a real shardcast: 1 stream,
//! 10 viewers, 4 s. Every viewer plays and gets media (a first keyframe, a bitrate, not
//! lagging), nothing is lost, reordered or corrupted, the verifying sample checks payloads,
//! and latency is measured.

use shardcast_test_support::loadgen::{LoadGenerator, json_u64, serial};
use shardcast_test_support::relay::Relay;

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

/// Runs 1 stream x 10 viewers for 4 s, with the options `play` gives for the relay, and
/// checks the report.
/// Ten viewers, two of them verifying; the other eight count as `counting` says.
fn ten_viewers(name: &str, protocol: &str, counting: &str, play: impl Fn(&Relay) -> Vec<String>) {
    let _serial = serial();
    let server = LOAD.start_relay(name);
    let url = server.url("load-{n}");
    let play = play(&server);
    let mut args = vec![
        "--url",
        &url,
        "--protocol",
        protocol,
        "--viewers",
        "10",
        "--duration",
        "4s",
        "--verify-every",
        "5",
        "--counting",
        counting,
    ];
    args.extend(play.iter().map(String::as_str));
    let (report, table) = LOAD.run_json(&args);
    assert_eq!(report["settings"]["protocol"], protocol, "{table}");
    assert!(
        table.contains(&format!("viewers play: {protocol} ")),
        "{table}"
    );
    for (path, want) in [
        (&["viewers", "connected"][..], 10),
        (&["viewers", "failed"], 0),
        (&["viewers", "disconnected"], 0),
        (&["viewers", "playing_at_end"], 10),
        (&["viewers", "lagging"], 0),
        (&["messages", "lost"], 0),
        (&["messages", "reordered"], 0),
        (&["messages", "corrupted"], 0),
        (&["first_keyframe_ms", "count"], 10),
        (&["connect_ms", "count"], 10),
        (&["play_start_ms", "count"], 10),
        (&["viewer_bitrate_kbps", "count"], 10),
    ] {
        assert_eq!(
            json_u64(&report, path),
            want,
            "{}:\n{table}",
            path.join(".")
        );
    }
    assert!(
        json_u64(&report, &["messages", "verified"]) > 0,
        "the verifying viewers checked payloads:\n{table}"
    );
    assert!(json_u64(&report, &["messages", "audio"]) > 0, "{table}");
    let (counting_bytes, timed_viewers) = if counting == "bytes" { (8, 2) } else { (0, 10) };
    assert_eq!(
        json_u64(&report, &["viewers", "counting_bytes"]),
        counting_bytes,
        "{table}"
    );
    let latency_count = json_u64(&report, &["latency_ms", "count"]);
    assert!(
        latency_count > 50 * timed_viewers,
        "{timed_viewers} viewers x ~100 live frames: got {latency_count}\n{table}"
    );
    assert!(
        report["latency_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{table}"
    );
    // Every viewer got about the stream's 2.5 Mbit/s.
    let min_kbps = report["viewer_bitrate_kbps"]["min"].as_f64().unwrap();
    assert!(
        min_kbps > 1500.0,
        "slowest viewer {min_kbps} kbit/s:\n{table}"
    );
}

/// HTTP-FLV, playing the relay's HTTP-FLV URL template (`--play-url`), every viewer
/// walking every tag.
#[test]
fn http_flv_viewers_play_and_lose_nothing() {
    ten_viewers("load-http-flv", "http-flv", "headers", |relay| {
        vec!["--play-url".into(), relay.flv_url("load-{n}")]
    });
}

/// WebSocket-FLV, the play URL derived from `--url` and `--http-port`; all but the sample
/// count bytes once joined.
#[test]
fn ws_flv_viewers_play_and_lose_nothing() {
    ten_viewers("load-ws-flv", "ws-flv", "bytes", |relay| {
        vec!["--http-port".into(), relay.http.port().to_string()]
    });
}
