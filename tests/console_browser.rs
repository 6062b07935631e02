//! The web console in a real browser: a relay, ffmpeg publishing H.264 + AAC to it, and
//! headless Chromium (driven by playwright-core from `tests/browser/console.mjs`) opening
//! the console, clicking the stream and watching the page's `<video>` play past 3 s, over
//! HTTP-FLV and then WebSocket-FLV; then kicking the page's viewer with its button.
//! Screenshots land in `target/test-output/console.png` and `console-ws.png`.
//!
//! Needs node, Chromium (`/usr/bin/chromium`, or `CHROMIUM=`) and
//! `npm ci --prefix tests/browser`; `.ci/run` installs them. Missing ones fail the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{tool, tool_exists, wait_output};

const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "Chromium is not installed at {} (apt-get install chromium, or set CHROMIUM=; bash .ci/run installs it)",
        path.display()
    );
    path
}

fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        tool_exists("node"),
        "node is not installed (apt-get install nodejs npm; bash .ci/run installs it)"
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed in {}: run npm ci --prefix tests/browser (bash .ci/run does)",
        dir.display()
    );
    dir
}

#[test]
fn the_console_lists_a_stream_and_plays_it_over_http_flv_and_websocket_flv() {
    let chromium = chromium();
    let browser = browser_dir();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");

    let relay = Relay::start(SHARDCAST, "console-browser", "", 2);
    let mut publisher = tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "50"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-t", "120"])
        .args(["-f", "flv", &relay.url("demo")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    relay
        .wait_stream("live/demo", Duration::from_secs(15), |s| {
            s.is_some_and(|s| s["publish"]["active"] == true && !s["video"].is_null())
        })
        .expect("ffmpeg publishes live/demo");

    let node = Command::new("node")
        .current_dir(&browser)
        .arg("console.mjs")
        .arg(format!("http://{}/", relay.admin))
        .arg("live/demo")
        .arg(&out)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_output(node, Duration::from_secs(150));
    let _ = publisher.kill();
    let _ = publisher.wait();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    assert!(
        run.status.success() && stdout.trim_end().ends_with("ok"),
        "the browser run failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(out.join("console.png").exists());
}
