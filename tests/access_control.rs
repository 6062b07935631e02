//! Access control (`[app.NAME.auth]`) against real clients: ffmpeg publishes and plays,
//! rtmpdump plays, an HTTP client asks for HTTP-FLV, and a callback backend written here
//! answers the relay's nginx-rtmp-style notifications. Every refusal must close the client
//! (ffmpeg exits with an error), publish nothing the API can see, be counted under its own
//! reason on `/metrics`, and leave no key or signature in the log.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shardcast::access::Action;
use shardcast::access::signed_link::signature;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    ffmpeg_play, ffmpeg_publish, framecrc_counts, tool, wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// Long enough for a loaded machine, short enough that a hang fails the test.
const REFUSED_WITHIN: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(30);

const PUBLISH_KEY: &str = "pubKEY-7f3a9c";
const WRONG_KEY: &str = "wrongKEY-55e1";
const PLAY_KEY: &str = "playKEY-c41d20";
const SECRET: &str = "link-secret-0123456789abcdef";

/// ffmpeg publishing `url` for `seconds`, quietly, in real time.
fn publisher(url: &str, seconds: u32) -> Child {
    ffmpeg_publish(url, seconds, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// ffmpeg publishing to `url`, expected to be refused: it must exit with an error, well
/// before its 10 s of input would have ended. Returns its output.
fn refused_publish(url: &str) -> Output {
    let started = Instant::now();
    let child = ffmpeg_publish(url, 10, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, REFUSED_WITHIN);
    assert!(
        !out.status.success(),
        "ffmpeg publishing {url} was refused and exits with an error"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "ffmpeg publishing {url} ended at once ({:?}), not after its input",
        started.elapsed()
    );
    out
}

/// ffmpeg playing `url` until the stream ends: the frames it decoded (video, audio).
fn play_frames(url: &str) -> (usize, usize) {
    let child = ffmpeg_play(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    framecrc_counts(&out.stdout)
}

/// rtmpdump playing `stream` (with its query) of `app`, expected to be refused.
fn refused_rtmpdump(relay: &Relay, app: &str, stream: &str) {
    let child = tool("rtmpdump")
        .args(["-q", "--live", "-r"])
        .arg(format!("rtmp://127.0.0.1:{}/{app}", relay.port))
        .args(["-y", stream, "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_output(child, REFUSED_WITHIN);
    assert!(
        !out.status.success(),
        "rtmpdump playing {app}/{stream} was refused"
    );
    assert!(
        out.stdout.len() < 64,
        "rtmpdump got no media from {app}/{stream}: {} bytes",
        out.stdout.len()
    );
}

/// The status of `GET path` on the media HTTP listener.
fn http_status(relay: &Relay, path: &str) -> u16 {
    let mut stream = TcpStream::connect(relay.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
}

/// The count of refusals for `reason`, waiting up to [`WAIT`] for it to reach `at_least`.
fn wait_rejected(relay: &Relay, reason: &str, at_least: f64) -> f64 {
    let series = format!(r#"shardcast_connections_rejected_total{{reason="{reason}"}}"#);
    let deadline = Instant::now() + WAIT;
    loop {
        let value = relay.metric(&series).unwrap_or(0.0);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn assert_log_lacks(relay: &Relay, secrets: &[&str]) {
    let log = relay.log();
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "the log does not contain {secret:?}:\n{log}"
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn stream_keys_let_the_right_key_in_and_refuse_the_rest() {
    let config = format!(
        r#"
[app.live]
unpublish_grace_ms = 0
[app.live.auth]
publish_keys = {{ demo = "{PUBLISH_KEY}" }}
play_keys = {{ demo = "{PLAY_KEY}" }}
"#
    );
    let relay = Relay::start(SHARDCAST, "access-keys", &config, 2);

    refused_publish(&relay.url(&format!("demo?key={WRONG_KEY}")));
    refused_publish(&relay.url("demo"));
    // A name the table does not list cannot be published, whatever the key.
    refused_publish(&relay.url(&format!("other?key={PUBLISH_KEY}")));
    assert!(
        relay.stream("live/demo").is_none() && relay.stream("live/other").is_none(),
        "nothing was published"
    );
    assert!(wait_rejected(&relay, "bad_key", 3.0) >= 3.0);

    let live = publisher(&relay.url(&format!("demo?key={PUBLISH_KEY}")), 8);
    assert!(
        relay.wait_published("live/demo", WAIT).is_some(),
        "the right key publishes"
    );
    // The publish key does not play; a wrong or missing play key neither.
    refused_rtmpdump(&relay, "live", &format!("demo?key={PUBLISH_KEY}"));
    refused_rtmpdump(&relay, "live", "demo");
    assert!(wait_rejected(&relay, "bad_key", 5.0) >= 5.0);
    // HTTP-FLV applies the play keys too.
    assert_eq!(
        http_status(&relay, &format!("/live/demo.flv?key={WRONG_KEY}")),
        403
    );
    let (video, audio) = play_frames(&relay.url(&format!("demo?key={PLAY_KEY}")));
    assert!(
        video > 10 && audio > 10,
        "the right play key plays: {video} video, {audio} audio frames"
    );
    let _ = wait_output(live, WAIT);
    assert_log_lacks(&relay, &[PUBLISH_KEY, WRONG_KEY, PLAY_KEY]);
}

#[test]
fn signed_links_allow_one_action_until_they_expire() {
    let config = format!(
        r#"
[app.live]
unpublish_grace_ms = 0
[app.live.auth]
secret = "{SECRET}"
sign_publish = true
sign_play = true
"#
    );
    let relay = Relay::start(SHARDCAST, "access-signed", &config, 2);
    let exp = unix_now() + 3600;
    let link = |action, stream: &str, exp: u64| {
        let sig = signature(SECRET.as_bytes(), action, "live", stream, exp);
        (format!("{stream}?exp={exp}&sig={sig}"), sig)
    };
    let (publish_link, publish_sig) = link(Action::Publish, "demo", exp);
    let (play_link, play_sig) = link(Action::Play, "demo", exp);
    let (expired_link, expired_sig) = link(Action::Publish, "demo", unix_now() - 10);

    refused_publish(&relay.url(&play_link));
    assert!(wait_rejected(&relay, "bad_signature", 1.0) >= 1.0);
    refused_publish(&relay.url(&expired_link));
    assert!(wait_rejected(&relay, "link_expired", 1.0) >= 1.0);
    refused_publish(&relay.url("demo"));
    assert!(relay.stream("live/demo").is_none(), "nothing was published");

    let live = publisher(&relay.url(&publish_link), 8);
    assert!(
        relay.wait_published("live/demo", WAIT).is_some(),
        "a signed publish link publishes"
    );
    refused_rtmpdump(&relay, "live", &publish_link);
    refused_rtmpdump(&relay, "live", "demo");
    assert!(wait_rejected(&relay, "bad_signature", 4.0) >= 4.0);
    assert_eq!(http_status(&relay, "/live/demo.flv"), 403);
    let (video, _) = play_frames(&relay.url(&play_link));
    assert!(video > 10, "a signed play link plays: {video} video frames");
    let _ = wait_output(live, WAIT);
    assert_log_lacks(&relay, &[SECRET, &publish_sig, &play_sig, &expired_sig]);
}

/// One request the callback backend received: its form fields.
type Fields = HashMap<String, String>;

/// A callback backend: answers by the `name` field (`allowed` and anything else: 200,
/// `renameme`: 302 to `renamed`, `refused`: 403, `hang`: never in time), and keeps every
/// request's fields.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Fields>>>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                thread::spawn(move || Backend::answer(stream, &record));
            }
        });
        Backend { addr, seen }
    }

    fn answer(mut stream: TcpStream, record: &Mutex<Vec<Fields>>) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        let mut first = String::new();
        if reader.read_line(&mut first).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut fields: Fields = form_urlencoded::parse(&body).into_owned().collect();
        fields.insert("(request line)".into(), first.trim().to_owned());
        let name = fields.get("name").cloned().unwrap_or_default();
        record.lock().unwrap().push(fields);
        let answer = match name.as_str() {
            "renameme" => "HTTP/1.1 302 Found\r\nLocation: renamed\r\nContent-Length: 0\r\n\r\n",
            "refused" => "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            "hang" => {
                thread::sleep(Duration::from_secs(15));
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            }
            _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        let _ = stream.write_all(answer.as_bytes());
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// The first request of `call` for `name`, waiting up to [`WAIT`] for it.
    fn wait_call(&self, call: &str, name: &str) -> Option<Fields> {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|f| {
                    f.get("call").map(String::as_str) == Some(call)
                        && f.get("name").map(String::as_str) == Some(name)
                })
                .cloned();
            if let Some(found) = found {
                return Some(found);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn callbacks_allow_rename_refuse_and_time_out() {
    let backend = Backend::start();
    let config = format!(
        r#"
[app.live]
unpublish_grace_ms = 0
[app.live.auth]
on_publish = "{}"
on_play = "{}"
on_publish_done = "{}"
callback_timeout_ms = 1500
"#,
        backend.url("on_publish"),
        backend.url("on_play"),
        backend.url("on_publish_done"),
    );
    let relay = Relay::start(SHARDCAST, "access-callbacks", &config, 2);

    let allowed = publisher(&relay.url("allowed?token=tok-9d8e&user=ann"), 12);
    let published = relay.wait_published("live/allowed", WAIT);
    assert!(published.is_some(), "a 200 from on_publish publishes");
    let fields = backend
        .wait_call("publish", "allowed")
        .expect("on_publish was called");
    assert_eq!(
        fields["(request line)"], "POST /on_publish HTTP/1.1",
        "{fields:?}"
    );
    assert_eq!(fields["app"], "live", "{fields:?}");
    assert_eq!(fields["addr"], "127.0.0.1", "{fields:?}");
    assert_eq!(fields["type"], "live", "{fields:?}");
    assert_eq!(fields["token"], "tok-9d8e", "{fields:?}");
    assert_eq!(fields["user"], "ann", "{fields:?}");
    assert!(fields["clientid"].parse::<u64>().is_ok(), "{fields:?}");
    assert!(
        fields["tcurl"].starts_with("rtmp://127.0.0.1:"),
        "{fields:?}"
    );
    assert!(!fields["flashver"].is_empty(), "{fields:?}");
    assert!(fields.contains_key("pageurl"), "{fields:?}");

    // A hanging backend refuses after the timeout, while the allowed stream goes on.
    let bytes_before = relay.stream("live/allowed").unwrap()["recv_bytes"]
        .as_u64()
        .unwrap_or(0);
    let started = Instant::now();
    let out = refused_publish(&relay.url("hang"));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "refused only at the timeout: {:?} ({})",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_rejected(&relay, "callback_failed", 1.0) >= 1.0);
    let bytes_after = relay.stream("live/allowed").unwrap()["recv_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        bytes_after > bytes_before,
        "the allowed stream kept going while the callback hung: {bytes_before} → {bytes_after}"
    );

    refused_publish(&relay.url("refused"));
    assert!(wait_rejected(&relay, "callback_refused", 1.0) >= 1.0);
    assert!(relay.stream("live/refused").is_none());
    assert!(relay.stream("live/hang").is_none());

    let renamed = publisher(&relay.url("renameme"), 6);
    assert!(
        relay.wait_published("live/renamed", WAIT).is_some(),
        "a 302 with Location: renamed publishes under the new name"
    );
    assert!(relay.stream("live/renameme").is_none());

    // on_play sees start and duration; its 200 plays.
    let (video, _) = play_frames(&relay.url("allowed"));
    assert!(
        video > 10,
        "on_play allowed the viewer: {video} video frames"
    );
    let play = backend
        .wait_call("play", "allowed")
        .expect("on_play was called");
    assert!(
        play.contains_key("start") && play.contains_key("duration"),
        "{play:?}"
    );

    let _ = wait_output(allowed, WAIT);
    let _ = wait_output(renamed, WAIT);
    assert!(
        backend.wait_call("publish_done", "allowed").is_some(),
        "on_publish_done was called when the publisher left"
    );
    assert_log_lacks(&relay, &["tok-9d8e"]);
}

#[test]
fn network_rules_refuse_addresses_outside_the_lists() {
    let config = r#"
[app.live]
unpublish_grace_ms = 0
[app.live.auth]
deny_publish = ["127.0.0.0/8"]
allow_play = ["10.0.0.0/8"]

[app.open]
unpublish_grace_ms = 0
[app.open.auth]
allow_publish = ["127.0.0.1", "::1"]
deny_play = ["192.0.2.0/24"]
"#;
    let relay = Relay::start(SHARDCAST, "access-networks", config, 2);
    refused_publish(&relay.url("demo"));
    assert!(relay.stream("live/demo").is_none());
    assert!(wait_rejected(&relay, "address_denied", 1.0) >= 1.0);

    let open_url = format!("rtmp://127.0.0.1:{}/open/demo", relay.port);
    let live = publisher(&open_url, 6);
    assert!(
        relay.wait_published("open/demo", WAIT).is_some(),
        "an address in the allow list publishes"
    );
    refused_rtmpdump(&relay, "live", "demo");
    assert_eq!(http_status(&relay, "/live/demo.flv"), 403);
    assert!(wait_rejected(&relay, "address_denied", 3.0) >= 3.0);
    let (video, _) = play_frames(&open_url);
    assert!(video > 10, "a deny list without the address plays: {video}");
    let _ = wait_output(live, WAIT);
}
