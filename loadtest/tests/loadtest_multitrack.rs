//! shardcast-load `--multitrack` against a real shardcast: one E-RTMP v2 multitrack stream
//! (two H.264 video tracks in `ManyTracks` messages, two AAC audio tracks in `OneTrack`
//! messages) and 20 viewers that declare `fourCcList` and `capsEx` Multitrack, joining
//! over two seconds so most of them start from the relay's GOP cache. Every viewer must
//! get every track, each track's sequence header before its first frame, each video track
//! from a keyframe, nothing lost, reordered or corrupted on any track. And viewers that
//! declare nothing (as ffmpeg 5.1 or rtmpdump) get track 0 of each kind, in the legacy
//! FLV layout, whole and in order, and no other track.

use serde_json::Value;
use shardcast_test_support::loadgen::{LoadGenerator, serial};

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

const VIEWERS: u64 = 20;

fn count(track: &Value, key: &str) -> u64 {
    track[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {track}"))
}

#[test]
fn every_track_of_a_multitrack_stream_reaches_every_viewer_in_order() {
    let _serial = serial();
    let server = LOAD.start_relay("load-multitrack");
    let url = server.url("multi-{n}");
    let viewers = VIEWERS.to_string();
    let (report, table) = LOAD.run_json(&[
        "--url",
        &url,
        "--viewers",
        &viewers,
        "--ramp",
        "10",
        "--duration",
        "6s",
        "--bitrate",
        "1000k",
        "--gop",
        "1s",
        "--multitrack",
    ]);

    assert_eq!(report["viewers"]["connected"], VIEWERS, "{table}");
    assert_eq!(report["viewers"]["playing_at_end"], VIEWERS, "{table}");
    assert_eq!(report["settings"]["verify_every"], 1, "{table}");
    let tracks = &report["tracks"];
    assert_eq!(tracks["viewers_missing_a_track"], 0, "{table}");
    let list = tracks["tracks"].as_array().expect("a track list");
    let names: Vec<String> = list
        .iter()
        .map(|t| format!("{} {}", t["kind"].as_str().unwrap(), t["id"]))
        .collect();
    assert_eq!(
        names,
        ["video 0", "video 1", "audio 0", "audio 1"],
        "every track reported:\n{table}"
    );
    for track in list {
        let name = format!("{} {}", track["kind"], track["id"]);
        assert_eq!(count(track, "viewers"), VIEWERS, "{name}:\n{table}");
        assert_eq!(
            count(track, "sequence_headers"),
            VIEWERS,
            "one sequence header per viewer, {name}:\n{table}"
        );
        assert_eq!(
            count(track, "frames_before_header"),
            0,
            "{name} sequence header first:\n{table}"
        );
        assert_eq!(
            count(track, "started_without_keyframe"),
            0,
            "{name}:\n{table}"
        );
        for key in ["lost", "reordered", "corrupted"] {
            assert_eq!(count(track, key), 0, "{name} {key}:\n{table}");
        }
        // 20 viewers for 3 s on average: video 30 frames/s, audio about 47.
        assert!(
            count(track, "frames") > VIEWERS * 40,
            "{name} frames:\n{table}"
        );
    }
    println!("{table}");
    // Stream-wide numbers follow video track 0: every frame checked, latency measured.
    assert_eq!(report["messages"]["corrupted"], 0, "{table}");
    assert!(
        report["messages"]["verified"].as_u64().unwrap() > VIEWERS * 40,
        "{table}"
    );
    assert!(
        report["latency_ms"]["count"].as_u64().unwrap() > 0,
        "{table}"
    );
}

#[test]
fn undeclared_viewers_get_track_0_of_each_kind_as_legacy_flv() {
    let _serial = serial();
    let server = LOAD.start_relay("load-multitrack-legacy");
    let url = server.url("legacy-{n}");
    let viewers = VIEWERS.to_string();
    let (report, table) = LOAD.run_json(&[
        "--url",
        &url,
        "--viewers",
        &viewers,
        "--ramp",
        "10",
        "--duration",
        "5s",
        "--bitrate",
        "1000k",
        "--gop",
        "1s",
        "--multitrack",
        "--multitrack-legacy-viewers",
    ]);
    assert_eq!(report["viewers"]["playing_at_end"], VIEWERS, "{table}");
    let tracks = &report["tracks"];
    assert_eq!(tracks["viewers_missing_a_track"], 0, "{table}");
    let list = tracks["tracks"].as_array().expect("a track list");
    let names: Vec<String> = list
        .iter()
        .map(|t| format!("{} {}", t["kind"].as_str().unwrap(), t["id"]))
        .collect();
    assert_eq!(
        names,
        ["video 0", "audio 0"],
        "only track 0 of each kind:\n{table}"
    );
    for track in list {
        let name = format!("{} {}", track["kind"], track["id"]);
        assert_eq!(count(track, "viewers"), VIEWERS, "{name}:\n{table}");
        assert_eq!(
            count(track, "sequence_headers"),
            VIEWERS,
            "{name}:\n{table}"
        );
        for key in [
            "frames_before_header",
            "started_without_keyframe",
            "lost",
            "reordered",
            "corrupted",
        ] {
            assert_eq!(count(track, key), 0, "{name} {key}:\n{table}");
        }
        assert!(count(track, "frames") > VIEWERS * 30, "{name}:\n{table}");
    }
    // Track 0's legacy messages carry the stream's marker: verified whole, latency timed.
    assert_eq!(report["messages"]["corrupted"], 0, "{table}");
    assert!(
        report["messages"]["verified"].as_u64().unwrap() > VIEWERS * 30,
        "{table}"
    );
}
