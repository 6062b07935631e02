//! shardcast-load against a real shardcast: 1 stream, 50 viewers, 5 s of the synthetic
//! source. Every viewer plays, nothing is lost or reordered, latency is measured by the
//! verifying sample, and the JSON report says what the table says.

use shardcast_test_support::loadgen::{LoadGenerator, json_u64, serial, table_value};

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

#[test]
fn fifty_viewers_of_one_stream_all_play_and_lose_nothing() {
    let _serial = serial();
    let server = LOAD.start_relay("load-fifty");
    let url = server.url("load-{n}");
    let pid = server.pid().to_string();
    let (report, table) = LOAD.run_json(&[
        "--url",
        &url,
        "--streams",
        "1",
        "--viewers",
        "50",
        "--ramp",
        "100",
        "--duration",
        "5s",
        "--source",
        "synthetic",
        "--server-pid",
        &pid,
    ]);

    let connected = json_u64(&report, &["viewers", "connected"]);
    assert_eq!(connected, 50, "every viewer connects:\n{table}");
    assert_eq!(json_u64(&report, &["viewers", "failed"]), 0, "{table}");
    assert_eq!(
        json_u64(&report, &["viewers", "disconnected"]),
        0,
        "{table}"
    );
    assert_eq!(
        json_u64(&report, &["viewers", "playing_at_end"]),
        50,
        "{table}"
    );
    assert_eq!(json_u64(&report, &["messages", "lost"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "reordered"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "corrupted"]), 0, "{table}");
    assert!(
        json_u64(&report, &["messages", "verified"]) > 0,
        "the verifying viewer checked payloads:\n{table}"
    );
    // Viewer 0 is the verifying sample (1 in 50); the other 49 join, then count bytes.
    assert_eq!(
        json_u64(&report, &["viewers", "counting_bytes"]),
        49,
        "{table}"
    );
    let latency_count = json_u64(&report, &["latency_ms", "count"]);
    assert!(
        latency_count > 80,
        "the sample's ~140 live frames: got {latency_count}\n{table}"
    );
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(json_u64(&report, &["connect_ms", "count"]), 50, "{table}");
    assert_eq!(
        json_u64(&report, &["first_keyframe_ms", "count"]),
        50,
        "{table}"
    );
    assert!(
        report["server"]["cpu_seconds_per_gb"].as_f64().is_some(),
        "{table}"
    );

    // The table shows the same numbers.
    for (name, path) in [
        ("connected", &["viewers", "connected"][..]),
        ("failed", &["viewers", "failed"]),
        ("lagging", &["viewers", "lagging"]),
        ("lost", &["messages", "lost"]),
        ("reordered", &["messages", "reordered"]),
        ("video", &["messages", "video"]),
        ("bytes", &["delivered", "bytes"]),
        ("latency ms", &["latency_ms", "count"]),
    ] {
        assert_eq!(
            table_value(&table, name),
            Some(json_u64(&report, path) as f64),
            "table line {name:?} vs JSON {}:\n{table}",
            path.join(".")
        );
    }
}

#[test]
fn batch_readers_lose_nothing_and_report_generator_cpu_and_trend() {
    let _serial = serial();
    let server = LOAD.start_relay("load-batch");
    let url = server.url("load-{n}");
    let pid = server.pid().to_string();
    let (report, table) = LOAD.run_json(&[
        "--url",
        &url,
        "--viewers",
        "20",
        "--duration",
        "4s",
        "--read-interval",
        "100ms",
        "--server-pid",
        &pid,
    ]);
    assert!(
        table.contains("read mode: batch readers, every 100 ms"),
        "{table}"
    );
    assert_eq!(
        json_u64(&report, &["viewers", "playing_at_end"]),
        20,
        "{table}"
    );
    assert_eq!(json_u64(&report, &["viewers", "lagging"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "lost"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "corrupted"]), 0, "{table}");
    assert_eq!(report["settings"]["read_interval_ms"].as_f64(), Some(100.0));
    // Messages wait for their reader: up to an interval, about half of one on average.
    let mean = report["latency_ms"]["mean"].as_f64().unwrap();
    assert!(
        (20.0..120.0).contains(&mean),
        "mean latency {mean}:\n{table}"
    );
    let trend = &report["latency_trend"]["windows"];
    assert!(trend.as_array().is_some_and(|w| w.len() >= 3), "{table}");
    let generator = &report["load_generator"];
    assert!(generator["cpu_seconds"].as_f64().unwrap() > 0.0, "{table}");
    assert!(
        !generator["threads"].as_array().unwrap().is_empty(),
        "{table}"
    );
    assert_eq!(
        json_u64(&report, &["first_keyframe_ms", "count"]),
        20,
        "{table}"
    );
}

#[test]
fn a_flash_crowd_joins_apart_from_the_viewers_already_watching() {
    let _serial = serial();
    let server = LOAD.start_relay("load-crowd");
    let url = server.url("crowd-{n}");
    let (report, table) = LOAD.run_json(&[
        "--url",
        &url,
        "--viewers",
        "20",
        "--verify-every",
        "1",
        "--ramp",
        "100",
        "--crowd",
        "200",
        "--crowd-at",
        "2s",
        "--duration",
        "6s",
    ]);
    assert_eq!(json_u64(&report, &["viewers", "target"]), 220, "{table}");
    assert_eq!(json_u64(&report, &["viewers", "connected"]), 220, "{table}");
    assert_eq!(json_u64(&report, &["viewers", "failed"]), 0, "{table}");
    // The crowd's joins are counted apart; the others' are the 20 watching viewers'.
    assert_eq!(
        json_u64(&report, &["crowd", "first_keyframe_ms", "count"]),
        200,
        "{table}"
    );
    assert_eq!(
        json_u64(&report, &["first_keyframe_ms", "count"]),
        20,
        "{table}"
    );
    assert!(
        report["crowd"]["during_p99_ms"].as_f64().is_some(),
        "the watching viewers' latency during the crowd: {table}"
    );
    assert!(table.contains("flash crowd: 200 viewers"), "{table}");
    assert_eq!(json_u64(&report, &["messages", "lost"]), 0, "{table}");
}
