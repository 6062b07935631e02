//! The cheap load generator's sampling mode against full parsing, on the same relay and
//! the same load: 500 viewers of one stream, once with the default (1 viewer in 50 parses
//! everything, the rest join and then only count bytes discarded in the kernel) and once
//! with every viewer parsing everything (`--verify-every 1`). What both measure must agree:
//! every viewer plays and gets its first keyframe, nothing is lost, the bitrate each viewer
//! receives, and the latency the sample sees next to what all viewers see.
//!
//! Also: `--help` prints URL templates as they must be typed.

use std::time::Duration;

use serde_json::Value;
use shardcast_test_support::loadgen::{LoadGenerator, run, serial, text};

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

const VIEWERS: u64 = 500;

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in the report", path.join(".")))
}

/// One run of 500 viewers at 1 Mbit/s; `extra` picks the mode.
fn run_500(url: &str, pid: &str, extra: &[&str]) -> (Value, String) {
    let viewers = VIEWERS.to_string();
    let mut args = vec![
        "--url",
        url,
        "--viewers",
        &viewers,
        "--ramp",
        "500",
        "--duration",
        "7s",
        "--bitrate",
        "1000k",
        "--gop",
        "1s",
        "--server-pid",
        pid,
    ];
    args.extend_from_slice(extra);
    LOAD.run_json(&args)
}

#[test]
fn sampled_figures_agree_with_full_parsing_at_500_viewers() {
    let _serial = serial();
    let server = LOAD.start_relay("load-sampling");
    let url = server.url("sample-{n}");
    let pid = server.pid().to_string();
    let (sampled, sampled_table) = run_500(&url, &pid, &[]);
    let (full, full_table) = run_500(&url, &pid, &["--verify-every", "1"]);
    let both = format!("sampled:\n{sampled_table}\nfull:\n{full_table}");

    assert_eq!(sampled["settings"]["counting"], "bytes", "{both}");
    assert_eq!(
        num(&sampled, &["viewers", "counting_bytes"]),
        (VIEWERS - VIEWERS / 50) as f64,
        "all but the 1-in-50 sample count bytes: {both}"
    );
    assert_eq!(num(&full, &["viewers", "counting_bytes"]), 0.0, "{both}");
    for (name, r) in [("sampled", &sampled), ("full", &full)] {
        for path in [
            &["viewers", "connected"][..],
            &["viewers", "playing_at_end"],
            &["first_keyframe_ms", "count"],
        ] {
            assert_eq!(num(r, path), VIEWERS as f64, "{name} {path:?}: {both}");
        }
        for path in [
            &["viewers", "lagging"][..],
            &["viewers", "disconnected"],
            &["messages", "lost"],
            &["messages", "reordered"],
            &["messages", "corrupted"],
        ] {
            assert_eq!(num(r, path), 0.0, "{name} {path:?}: {both}");
        }
        assert!(num(r, &["messages", "verified"]) > 0.0, "{name}: {both}");
    }
    // The sample measured latency; full parsing measured it for 50 times as many viewers.
    let sampled_count = num(&sampled, &["latency_ms", "count"]);
    let full_count = num(&full, &["latency_ms", "count"]);
    assert!(sampled_count > 0.0, "{both}");
    assert!(
        full_count > 20.0 * sampled_count,
        "full parsing times every viewer's frames: {full_count} vs {sampled_count}\n{both}"
    );
    // Byte counting sees what parsing sees: the bitrate each viewer received agrees.
    for stat in ["p50", "mean"] {
        let a = num(&sampled, &["viewer_bitrate_kbps", stat]);
        let b = num(&full, &["viewer_bitrate_kbps", stat]);
        assert!(
            (a - b).abs() <= 0.1 * b,
            "viewer bitrate {stat}: sampled {a} vs full {b} kbit/s\n{both}"
        );
    }
    let a = num(&sampled, &["delivered", "bytes"]);
    let b = num(&full, &["delivered", "bytes"]);
    assert!(
        (a - b).abs() <= 0.1 * b,
        "delivered: sampled {a} vs full {b} bytes\n{both}"
    );
    // Latency: the sample's median is the population's, within what a shared 2-core machine
    // allows (the full-parsing run also loads the machine more, which only raises its own).
    let a = num(&sampled, &["latency_ms", "p50"]);
    let b = num(&full, &["latency_ms", "p50"]);
    assert!(
        a <= 2.0 * b + 20.0,
        "latency p50: sampled {a} ms vs full {b} ms\n{both}"
    );
}

#[test]
fn help_prints_url_templates_that_paste() {
    let out = run(LOAD.command(&["--help"]), Duration::from_secs(30));
    let help = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        help.contains("rtmp://127.0.0.1:1935/live/load-{n}"),
        "the default URL template reads as typed:\n{help}"
    );
    assert!(
        !help.contains('\u{2060}'),
        "no invisible character inside a template:\n{help}"
    );
    assert!(help.contains("--counting"), "{help}");
}
