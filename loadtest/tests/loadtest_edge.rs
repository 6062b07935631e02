//! shardcast-load through a relay tree (issue 13): its publisher feeds an origin, its
//! viewers play from an edge that pulls the stream from that origin. Nothing is lost or
//! reordered on the way, the origin serves one pull whatever the viewer count, and the
//! load generator's latency includes the hop.

use shardcast_test_support::loadgen::{LOAD_LOG_FILTER, LoadGenerator, json_u64, serial};
use shardcast_test_support::relay::Relay;

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

#[test]
fn viewers_of_an_edge_lose_nothing_pulled_from_the_origin() {
    let _serial = serial();
    let bin = LOAD.shardcast_bin();
    let origin = Relay::start_logging(&bin, "load-edge-origin", "", 1, LOAD_LOG_FILTER);
    // The viewers may ask before the publisher is there: the pull waits for it on the
    // origin, so its silence limit is above the generator's start.
    let edge_config = format!(
        "[app.live]\npull = [\"rtmp://127.0.0.1:{}/live\"]\npull_no_input_ms = 10000\n",
        origin.port
    );
    let edge = Relay::start_logging(&bin, "load-edge-edge", &edge_config, 2, LOAD_LOG_FILTER);
    let (report, table) = LOAD.run_json(&[
        "--url",
        &origin.url("load-{n}"),
        "--play-url",
        &edge.url("load-{n}"),
        "--streams",
        "1",
        "--viewers",
        "20",
        "--ramp",
        "100",
        "--duration",
        "5s",
        "--source",
        "synthetic",
    ]);
    assert_eq!(
        json_u64(&report, &["viewers", "playing_at_end"]),
        20,
        "{table}"
    );
    assert_eq!(json_u64(&report, &["viewers", "failed"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "lost"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "reordered"]), 0, "{table}");
    assert_eq!(json_u64(&report, &["messages", "corrupted"]), 0, "{table}");
    assert!(
        json_u64(&report, &["messages", "verified"]) > 0,
        "the verifying viewer checked payloads through the edge:\n{table}"
    );
    assert!(json_u64(&report, &["latency_ms", "count"]) > 50, "{table}");
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
    // Publisher → origin → edge → viewer on loopback, on a shared CI machine: generous.
    assert!(
        p99 < 100.0,
        "p99 latency through the edge {p99} ms:\n{table}"
    );
    eprintln!("latency through one edge: p99 {p99} ms");
    // The origin saw the generator's publisher, its one probe (the admin check aside) and
    // one pull for the edge's 20 viewers: far fewer connections than viewers.
    let accepted = origin
        .metric("shardcast_connections_accepted_total{protocol=\"rtmp\"}")
        .unwrap();
    assert!(
        accepted <= 3.0,
        "the origin accepted {accepted} connections"
    );
    assert_eq!(edge.metric("shardcast_pull_starts_total"), Some(1.0));
}
