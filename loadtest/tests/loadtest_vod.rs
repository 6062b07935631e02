//! shardcast-load `--vod-start` against a real shardcast: viewers play a stored file (made
//! by ffmpeg) from their own random positions, nobody publishes, and every viewer plays
//! and gets a keyframe and media.

use std::time::Duration;

use serde_json::Value;
use shardcast_test_support::loadgen::{LOAD_LOG_FILTER, LoadGenerator, run, serial, text};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{ffmpeg_clip, temp_dir, temp_path};

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

#[test]
fn vod_viewers_play_a_stored_file_from_random_positions() {
    let _serial = serial();
    let dir = temp_path("load-vod-files");
    std::fs::create_dir_all(&dir).unwrap();
    ffmpeg_clip(&dir.join("movie.flv"), 20, &[]);
    let config = format!("[app.live]\nvod_dir = {:?}\n", dir.display().to_string());
    let server = Relay::start_logging(
        LOAD.shardcast_bin(),
        "load-vod",
        &config,
        1,
        LOAD_LOG_FILTER,
    );
    let url = server.url("movie");
    let json = temp_dir().join("load-vod.json");
    let mut cmd = LOAD.command(&[
        "--url",
        &url,
        "--viewers",
        "8",
        "--ramp",
        "50",
        "--duration",
        "4s",
        "--vod-start",
        "random:12000",
        "--verify-every",
        "2",
        "--json",
    ]);
    cmd.arg(&json);
    let out = run(cmd, Duration::from_secs(60));
    let table = text(&out.stdout);
    assert!(
        out.status.success(),
        "shardcast-load --vod-start failed: {}\n{table}\n{}",
        text(&out.stderr),
        server.log()
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        report["publishers"]["messages_sent"], 0,
        "nobody publishes:\n{table}"
    );
    assert_eq!(report["viewers"]["connected"], 8, "{table}");
    assert_eq!(report["viewers"]["playing_at_end"], 8, "{table}");
    assert!(
        report["settings"]["source"]
            .as_str()
            .unwrap()
            .contains("random positions"),
        "{table}"
    );
    assert_eq!(report["first_keyframe_ms"]["count"], 8, "{table}");
    // Four seconds of 25 fps for each of 8 viewers, and the buffer's lead on top.
    assert!(
        report["messages"]["video"].as_u64().unwrap() > 8 * 75,
        "{table}"
    );
}
