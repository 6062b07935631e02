//! The admin API against the relay binary with real clients: what it reports of a stream
//! ffmpeg publishes and ffmpeg, rtmpdump and `ClientSession` viewers play on both shards;
//! kicking a viewer and a publisher; putting a data message into a live stream; `/metrics`
//! as promtool reads it, and the Grafana dashboard's queries against it; `/readyz` through a graceful shutdown; and bad requests, which
//! change nothing.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use shardcast::rtmp::ClientEvent;
use shardcast::rtmp::amf0::{self, Amf0Value};
use shardcast::rtmp::command::status;
use shardcast_test_support::admin::{self, HttpAnswer, ReadyzWatch};
use shardcast_test_support::client::{Recorded, Recorder, RtmpClient, plain};
use shardcast_test_support::relay::Relay;
use shardcast_test_support::script::{Script, summarize};
use shardcast_test_support::tools::{ffmpeg_publish, tool, wait_output};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

const GRACE_MS: u64 = 1000;

fn config(extra: &str) -> String {
    format!(
        r#"
[viewer]
backlog_max_bytes = 67108864
backlog_max_ms = 600000
lag_disconnect_ms = 600000

[app.live]
unpublish_grace_ms = {GRACE_MS}
{extra}"#
    )
}

/// ffmpeg publishing the issue's test stream (640x360 at 25 fps, H.264 + AAC at 44.1 kHz)
/// to `url` for at most `seconds`, live-paced.
fn ffmpeg_publish_640x360(url: &str, seconds: u32) -> Child {
    let video = format!("testsrc=size=640x360:rate=25:duration={seconds}");
    let audio = format!("sine=sample_rate=44100:duration={seconds}");
    tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats", "-re"])
        .args(["-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// ffmpeg playing `url` and decoding it into nothing.
fn ffmpeg_viewer(url: &str) -> Child {
    tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats"])
        .args(["-rw_timeout", "15000000", "-i", url, "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// rtmpdump saving `url` to /dev/null.
fn rtmpdump_viewer(url: &str) -> Child {
    tool("rtmpdump")
        .args(["-q", "--live", "-r", url, "-o", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Stops a child that may still run.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `limit` for the admin API to list a viewer of `stream` that is not among
/// `known`, and returns it.
fn new_viewer(relay: &Relay, stream: &str, known: &HashSet<String>, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let found = relay.clients().into_iter().find(|c| {
            c["role"] == "viewer"
                && c["stream"] == stream
                && !known.contains(c["addr"].as_str().unwrap())
        });
        if let Some(c) = found {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no new viewer of {stream} listed: {:?}",
            relay.clients()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for a child to exit by itself; true if it did.
fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn request(
    relay: &Relay,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    admin::request(relay.admin, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Asserts an SRS-style error answer: `status`, and `{"code": status, "message": ...}`.
fn assert_error(answer: &HttpAnswer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    let json = answer.json();
    assert_eq!(json["code"], status, "{what}: {json}");
    assert!(json["message"].is_string(), "{what}: {json}");
}

fn media_count(events: &[Recorded]) -> usize {
    events
        .iter()
        .filter(|r| matches!(r.event, ClientEvent::Media { .. }))
        .count()
}

/// A synthetic publisher on a thread, sending live-paced frames until stopped.
struct Publishing {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<RtmpClient>>,
}

impl Publishing {
    /// Publishes `live/key` from `client` (or a new connection) at 25 frames a second.
    fn start(relay: &Relay, client: Option<RtmpClient>, key: &str) -> Publishing {
        let mut client = client.unwrap_or_else(|| RtmpClient::connect(relay.port));
        client.start_publish(key);
        let script = Script {
            keyframe_every: 25,
            interval: Duration::from_millis(40),
            ..Script::new(100_000)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                script.send_headers(&mut client);
                script.send_frames(&mut client, 0..script.frames, Some(&stop));
                client
            })
        };
        Publishing {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sending; the connection stays open.
    fn finish(mut self) -> RtmpClient {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn streams_clients_and_summaries_describe_ffmpeg_and_its_viewers() {
    let relay = Relay::start(SHARDCAST, "admin-describe", &config(""), 2);
    let publisher = ffmpeg_publish_640x360(&relay.url("x"), 30);
    let stream = relay
        .wait_stream("live/x", Duration::from_secs(10), |s| {
            s.is_some_and(|s| s["publish"]["active"] == true && !s["video"].is_null())
        })
        .expect("ffmpeg publishes live/x");
    let publisher_addr = stream["publisher"]["addr"].as_str().unwrap().to_owned();
    let mut known: HashSet<String> = HashSet::from([publisher_addr.clone()]);

    // An ffmpeg viewer, wherever it lands; then rtmpdump, until it lands on the other
    // shard (SO_REUSEPORT picks the shard from the connection's addresses).
    let mut player = ffmpeg_viewer(&relay.url("x"));
    let player_entry = new_viewer(&relay, "live/x", &known, Duration::from_secs(10));
    let player_shard = player_entry["shard"].as_u64().unwrap();
    known.insert(player_entry["addr"].as_str().unwrap().to_owned());
    let mut dumper = None;
    for _ in 0..20 {
        let child = rtmpdump_viewer(&relay.url("x"));
        let entry = new_viewer(&relay, "live/x", &known, Duration::from_secs(10));
        let addr = entry["addr"].as_str().unwrap().to_owned();
        if entry["shard"].as_u64().unwrap() != player_shard {
            known.insert(addr);
            dumper = Some((child, entry));
            break;
        }
        stop(child);
        let gone: SocketAddr = addr.parse().unwrap();
        assert!(relay.wait_client_gone(gone, Duration::from_secs(5)));
    }
    let (mut dumper, dumper_entry) =
        dumper.expect("rtmpdump landed on the other shard in 20 tries");

    // The stream, as the list of streams shows it.
    let listed = |relay: &Relay| -> Value {
        let answer = relay.api("/api/v1/streams");
        assert_eq!(answer["code"], 0, "{answer}");
        assert_eq!(answer["total"], 1, "{answer}");
        answer["streams"][0].clone()
    };
    let first = listed(&relay);
    assert_eq!(first["id"], "live/x");
    assert_eq!(first["app"], "live");
    assert_eq!(first["name"], "x");
    assert_eq!(first["video"]["codec"], "H264", "{first}");
    assert_eq!(first["video"]["width"], 640, "{first}");
    assert_eq!(first["video"]["height"], 360, "{first}");
    assert_eq!(first["video"]["fps"].as_f64(), Some(25.0), "{first}");
    assert_eq!(first["audio"]["codec"], "AAC", "{first}");
    assert_eq!(first["audio"]["sample_rate"], 44100, "{first}");
    assert_eq!(first["publish"]["active"], true);
    assert_eq!(first["viewers"]["total"], 2, "{first}");
    let per_shard: Vec<u64> = first["viewers"]["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(per_shard.len(), 2, "{first}");
    assert_eq!(per_shard.iter().sum::<u64>(), 2, "{first}");
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "viewers on both shards: {per_shard:?}"
    );
    assert_eq!(
        first["clients"], 3,
        "two viewers and the publisher: {first}"
    );

    // Its bytes grow, and after a few seconds it has a bitrate.
    thread::sleep(Duration::from_millis(1500));
    let second = listed(&relay);
    for key in ["recv_bytes", "send_bytes"] {
        assert!(
            second[key].as_u64().unwrap() > first[key].as_u64().unwrap(),
            "{key} grows: {} then {}",
            first[key],
            second[key]
        );
    }
    assert!(
        relay
            .wait_stream("live/x", Duration::from_secs(10), |s| s
                .is_some_and(|s| s["kbps"]["recv_30s"]
                    .as_u64()
                    .is_some_and(|k| k > 0)))
            .is_some(),
        "the stream has an incoming bitrate"
    );

    // The clients: the publisher and the two viewers, each where the stream says.
    let clients = relay.clients();
    assert_eq!(clients.len(), 3, "{clients:?}");
    let by_addr = |addr: &str| -> Value {
        clients
            .iter()
            .find(|c| c["addr"] == addr)
            .unwrap_or_else(|| panic!("{addr} is not listed: {clients:?}"))
            .clone()
    };
    let pub_entry = by_addr(&publisher_addr);
    assert_eq!(pub_entry["role"], "publisher");
    assert_eq!(pub_entry["type"], "fmle-publish");
    assert_eq!(pub_entry["publish"], true);
    assert_eq!(pub_entry["stream"], "live/x");
    assert_eq!(pub_entry["id"], second["publish"]["cid"]);
    assert_eq!(pub_entry["id"], second["publisher"]["id"]);
    for (entry, who) in [(&player_entry, "ffmpeg"), (&dumper_entry, "rtmpdump")] {
        let now = by_addr(entry["addr"].as_str().unwrap());
        assert_eq!(now["id"], entry["id"], "{who}");
        assert_eq!(now["role"], "viewer", "{who}");
        assert_eq!(now["type"], "rtmp-play", "{who}");
        assert_eq!(now["publish"], false, "{who}");
        assert_eq!(now["stream"], "live/x", "{who}");
        assert!(now["bytes_out"].as_u64().unwrap() > 0, "{who}: {now}");
    }
    let mut on_shard = [0u64; 2];
    for c in &clients {
        assert_eq!(c["ip"], "127.0.0.1", "{c}");
        let addr: SocketAddr = c["addr"].as_str().unwrap().parse().unwrap();
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{c}");
        assert_ne!(addr.port(), relay.port, "the client's own port: {c}");
        let shard = c["shard"].as_u64().unwrap();
        let id: u64 = c["id"].as_str().unwrap().parse().unwrap();
        assert!(shard < 2, "{c}");
        assert_eq!(id % 2, shard, "a client's id tells its shard: {c}");
        if c["role"] == "viewer" {
            on_shard[shard as usize] += 1;
        }
    }
    assert_eq!(
        on_shard.to_vec(),
        per_shard,
        "the clients' shards are the stream's"
    );

    // One client by id.
    for c in &clients {
        let id = c["id"].as_str().unwrap();
        let one = relay.api(&format!("/api/v1/clients/{id}"));
        assert_eq!(one["code"], 0);
        assert_eq!(one["client"]["id"], c["id"]);
        assert_eq!(one["client"]["addr"], c["addr"]);
        assert_eq!(one["client"]["role"], c["role"]);
    }

    // The summary counts connections by role.
    let summary = relay.api("/api/v1/summaries");
    let data = &summary["data"]["shardcast"];
    assert_eq!(data["shard_count"], 2, "{summary}");
    // No node_id in the file: one is picked at startup (host name, random suffix).
    let node_id = data["node_id"].as_str().unwrap_or_default();
    assert!(
        node_id.len() >= 8 && node_id.len() <= 64,
        "a node id is picked: {summary}"
    );
    assert_eq!(data["connections"]["total"], 3, "{summary}");
    assert_eq!(data["connections"]["by_role"]["publisher"], 1, "{summary}");
    assert_eq!(data["connections"]["by_role"]["viewer"], 2, "{summary}");
    assert_eq!(
        data["connections"]["by_role"]["recording_viewer"], 0,
        "{summary}"
    );
    assert_eq!(data["connections"]["by_role"]["client"], 0, "{summary}");
    assert_eq!(data["streams"], 1, "{summary}");
    let shards = data["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "{summary}");
    assert_eq!(
        shards
            .iter()
            .map(|s| s["connections"].as_u64().unwrap())
            .sum::<u64>(),
        3,
        "{summary}"
    );

    // The players kept playing all along.
    assert!(player.try_wait().unwrap().is_none(), "ffmpeg still plays");
    assert!(dumper.try_wait().unwrap().is_none(), "rtmpdump still plays");
    stop(player);
    stop(dumper);
    stop(publisher);
}

#[test]
fn kicking_a_viewer_closes_it_alone_and_kicking_the_publisher_ends_the_stream() {
    let relay = Relay::start(SHARDCAST, "admin-kick", &config(""), 2);
    let publisher = ffmpeg_publish(&relay.url("k"), 30, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stream = relay
        .wait_published("live/k", Duration::from_secs(10))
        .expect("ffmpeg publishes live/k");
    let known = HashSet::from([stream["publisher"]["addr"].as_str().unwrap().to_owned()]);
    let mut player = ffmpeg_viewer(&relay.url("k"));
    let player_entry = new_viewer(&relay, "live/k", &known, Duration::from_secs(10));
    // ClientSession viewers on both shards, which see every message.
    let viewers: Vec<Recorder> = (0..2)
        .map(|shard| Recorder::play_on_shard(&relay, shard, "k"))
        .collect();
    assert!(
        relay
            .wait_stream("live/k", Duration::from_secs(10), |s| s
                .is_some_and(|s| s["viewers"]["total"] == 3))
            .is_some(),
        "three viewers"
    );
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |e| media_count(e) > 0),
            "viewer {} receives media",
            v.local
        );
    }

    // Kick the ffmpeg viewer: it ends, the others play on.
    let id = player_entry["id"].as_str().unwrap();
    let answer = request(&relay, "DELETE", &format!("/api/v1/clients/{id}"), &[], b"");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["code"], 0);
    assert!(
        exits_within(&mut player, Duration::from_secs(10)),
        "the kicked ffmpeg viewer exited"
    );
    let player_addr: SocketAddr = player_entry["addr"].as_str().unwrap().parse().unwrap();
    assert!(
        relay.wait_client_gone(player_addr, Duration::from_secs(5)),
        "the kicked viewer is gone from the client list"
    );
    assert_eq!(
        admin::get(relay.admin, &format!("/api/v1/clients/{id}")).status,
        404,
        "the kicked viewer is gone"
    );
    let counts: Vec<usize> = viewers.iter().map(|v| media_count(&v.events())).collect();
    for (v, before) in viewers.iter().zip(&counts) {
        assert!(
            v.wait_until(Duration::from_secs(5), |e| media_count(e) > before + 25),
            "viewer {} still receives media after the kick",
            v.local
        );
        assert!(!v.is_closed(), "viewer {} is still connected", v.local);
    }
    let stream = relay.stream("live/k").unwrap();
    assert_eq!(stream["viewers"]["total"], 2, "{stream}");
    assert_eq!(stream["publish"]["active"], true, "{stream}");

    // Kick the publisher: the stream is unpublished at once, its viewers are told, and
    // closed once the grace period is over.
    let cid = stream["publish"]["cid"].as_str().unwrap().to_owned();
    let kicked = Instant::now();
    let answer = request(
        &relay,
        "DELETE",
        &format!("/api/v1/clients/{cid}"),
        &[],
        b"",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        relay
            .wait_stream("live/k", Duration::from_secs(5), |s| s
                .is_some_and(|s| s["publish"]["active"] == false))
            .is_some(),
        "the stream has no publisher after the kick"
    );
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(5), |e| e.iter().any(|r| {
                r.at >= kicked
                    && matches!(&r.event, ClientEvent::Status { code, .. }
                        if code == status::PLAY_UNPUBLISH_NOTIFY)
            })),
            "viewer {} was told the stream was unpublished: {}",
            v.local,
            summarize(&plain(&v.events()))
        );
    }
    // The kicked encoder's connection is closed: ffmpeg ends (how it exits is its own).
    wait_output(publisher, Duration::from_secs(10));
    for v in &viewers {
        assert!(
            v.wait_closed(Duration::from_millis(GRACE_MS) + Duration::from_secs(5)),
            "viewer {} was closed after the grace period",
            v.local
        );
    }
    // Not before: the grace period began when the relay took the kick, after `kicked`.
    assert!(
        kicked.elapsed() >= Duration::from_millis(GRACE_MS),
        "the viewers were kept for the grace period, closed after {:?}",
        kicked.elapsed()
    );
    assert!(
        relay
            .wait_stream("live/k", Duration::from_secs(5), |s| s.is_none())
            .is_none(),
        "the stream ended"
    );
    assert_eq!(relay.clients().len(), 0, "{:?}", relay.clients());
}

/// The `onTextData` messages among `events` whose text is `text`: where each is, and its
/// timestamp.
fn text_message(events: &[ClientEvent], text: &str) -> Vec<(usize, u32)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            ClientEvent::Data {
                timestamp, payload, ..
            } => {
                let values = amf0::decode_all(payload).ok()?;
                let handler = values.first().and_then(Amf0Value::as_str)?;
                let said = values.get(1)?.get("text").and_then(Amf0Value::as_str)?;
                (handler == "onTextData" && said == text).then_some((i, *timestamp))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_data_message_reaches_every_viewer_in_order_with_the_media() {
    let relay = Relay::start(SHARDCAST, "admin-data", &config(""), 2);
    let publishing = Publishing::start(&relay, Some(RtmpClient::connect_on_shard(&relay, 1)), "x");
    let viewers: Vec<Recorder> = [0, 1, 0, 1]
        .into_iter()
        .map(|shard| Recorder::play_on_shard(&relay, shard, "x"))
        .collect();
    // ffmpeg plays it too, copying (the synthetic frames are not decodable video).
    let mut player = tool("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostats"])
        .args(["-rw_timeout", "15000000", "-i"])
        .arg(relay.url("x"))
        .args(["-map", "0", "-c", "copy", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        relay
            .wait_stream("live/x", Duration::from_secs(10), |s| s
                .is_some_and(|s| s["viewers"]["total"] == 5))
            .is_some(),
        "four ClientSession viewers and ffmpeg play"
    );
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |e| media_count(e) >= 10),
            "viewer {} receives media",
            v.local
        );
    }

    let body = br#"{"handler":"onTextData","data":{"text":"hello"}}"#;
    let answer = request(&relay, "POST", "/api/v1/streams/live/x/data", &[], body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    assert_eq!(json["code"], 0, "{json}");
    let timestamp = json["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no timestamp: {json}")) as u32;
    assert!(timestamp > 0, "stamped with the stream's clock: {json}");

    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(5), |e| {
                let events = plain(e);
                text_message(&events, "hello")
                    .first()
                    .is_some_and(|&(at, _)| media_count(&e[at..]) >= 10)
            }),
            "viewer {} got the message and media after it: {}",
            v.local,
            summarize(&plain(&v.events()))
        );
    }
    assert!(
        player.try_wait().unwrap().is_none(),
        "ffmpeg plays on after the data message"
    );
    let _publisher = publishing.finish();

    for v in viewers {
        let local = v.local;
        let (events, closed) = v.finish();
        assert!(!closed, "viewer {local} is still connected");
        let events = plain(&events);
        let found = text_message(&events, "hello");
        assert_eq!(found.len(), 1, "viewer {local} got the message once");
        let (at, ts) = found[0];
        assert_eq!(ts, timestamp, "viewer {local}: stamped as the API answered");
        let media: Vec<(usize, u32)> = events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                ClientEvent::Media { timestamp, .. } => Some((i, *timestamp)),
                _ => None,
            })
            .collect();
        let (before, after): (Vec<_>, Vec<_>) = media.iter().partition(|(i, _)| *i < at);
        assert!(!before.is_empty() && !after.is_empty(), "viewer {local}");
        assert!(
            before.iter().all(|&(_, t)| t <= ts),
            "viewer {local}: media before the message (at {ts}) is not later: {:?}",
            &before[before.len().saturating_sub(5)..]
        );
        assert!(
            after.iter().all(|&(_, t)| t >= ts),
            "viewer {local}: media after the message (at {ts}) is not earlier: {:?}",
            &after[..after.len().min(5)]
        );
    }
    assert!(
        player.try_wait().unwrap().is_none(),
        "ffmpeg still plays after the data message"
    );
    stop(player);
}

/// Runs `promtool check metrics` on a scrape: its exit status and everything it printed.
fn promtool_check(scrape: &str) -> (bool, String) {
    let mut child = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// The label names used anywhere in a scrape.
fn label_names(scrape: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        // Values are quoted; names are what comes before each `="`.
        for part in labels.split("\",") {
            if let Some((name, _)) = part.split_once("=\"") {
                names.insert(name.trim_start_matches(',').to_owned());
            }
        }
    }
    names
}

/// The Grafana dashboard (`deploy/grafana/shardcast.json`) against a real scrape: every
/// metric its queries and variables name is one the relay serves, every label it groups by
/// is one the relay sets, and every query is PromQL that promtool parses (as a recording
/// rule, with Grafana's variables filled in as Grafana would).
fn check_grafana_dashboard(scrape: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/shardcast.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            // label_values(SELECTOR, LABEL): the selector is PromQL.
            let q = variable["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(selector, _)| selector)
                .unwrap_or_else(|| panic!("a label_values query: {q}"));
            queries.push(inner.to_owned());
        }
    }
    assert!(queries.len() > 30, "{} queries", queries.len());
    let families: HashSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut labels = label_names(scrape);
    // Set by Prometheus as it scrapes, or by the histogram's series.
    labels.extend(["instance", "job", "le"].map(str::to_owned));
    for query in &queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("shardcast_") || word.starts_with("process_")) {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .filter(|base| families.contains(base))
                .unwrap_or(word);
            assert!(
                families.contains(family),
                "the dashboard asks for {word}, which the relay does not serve: {query}"
            );
        }
        for clause in query.split(" by (").skip(1) {
            let (names, _) = clause.split_once(')').unwrap();
            for name in names.split(',').map(str::trim) {
                assert!(
                    labels.contains(name),
                    "the dashboard groups by {name}, a label the relay does not set: {query}"
                );
            }
        }
    }
    let rules: String = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$app", ".*")
                .replace("$stream", ".*");
            // A JSON string is a YAML double-quoted scalar.
            format!(
                "      - record: dashboard:query{i}\n        expr: {}\n",
                serde_json::to_string(&q).unwrap()
            )
        })
        .collect();
    let file = shardcast_test_support::tools::temp_path("grafana-rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let out = tool("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules on the dashboard's queries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn metrics_pass_promtool_and_follow_the_stream() {
    let relay = Relay::start(SHARDCAST, "admin-metrics", &config(""), 2);
    let publishing = Publishing::start(&relay, None, "m");
    let viewers: Vec<Recorder> = (0..2)
        .map(|shard| Recorder::play_on_shard(&relay, shard, "m"))
        .collect();
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |e| media_count(e) >= 10),
            "viewer {} receives media",
            v.local
        );
    }

    let first = relay.metrics();
    let (ok, printed) = promtool_check(&first);
    assert!(ok, "promtool check metrics failed: {printed}\n{first}");
    assert_eq!(printed.trim(), "", "promtool found problems:\n{first}");
    check_grafana_dashboard(&first);

    let stream_sent = r#"shardcast_stream_sent_bytes_total{app="live",stream="m"}"#;
    let value = |scrape: &str, series: &str| {
        admin::metric_value(scrape, series)
            .unwrap_or_else(|| panic!("no {series} in the scrape:\n{scrape}"))
    };
    assert_eq!(
        value(&first, r#"shardcast_stream_viewers{app="live",stream="m"}"#),
        2.0
    );
    assert_eq!(
        value(&first, r#"shardcast_stream_up{app="live",stream="m"}"#),
        1.0
    );
    assert_eq!(
        value(
            &first,
            r#"shardcast_connections{protocol="rtmp",role="viewer"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &first,
            r#"shardcast_connections{protocol="rtmp",role="publisher"}"#
        ),
        1.0
    );
    assert_eq!(value(&first, "shardcast_ready"), 1.0);
    assert_eq!(value(&first, "shardcast_shards"), 2.0);
    // Every media message the publisher sent was timed against its own pace.
    assert!(
        value(&first, "shardcast_ingest_read_delay_seconds_count") >= 1.0,
        "{first}"
    );
    assert!(
        value(
            &first,
            r#"shardcast_ingest_read_delay_seconds_bucket{le="+Inf"}"#
        ) == value(&first, "shardcast_ingest_read_delay_seconds_count")
    );
    thread::sleep(Duration::from_millis(500));
    let second = relay.metrics();
    for series in [
        "shardcast_sent_bytes_total",
        stream_sent,
        "shardcast_received_bytes_total",
    ] {
        assert!(
            value(&second, series) > value(&first, series),
            "{series} grows: {} then {}",
            value(&first, series),
            value(&second, series)
        );
    }

    // One shard's viewer gets the stream across cores: its inbox took messages, and the
    // senders rang its doorbell (how often depends on coalescing, so only that they did).
    let inbox = |scrape: &str, name: &str| {
        (0..2)
            .map(|shard| value(scrape, &format!("{name}{{shard=\"{shard}\"}}")))
            .sum::<f64>()
    };
    let received = inbox(&second, "shardcast_shard_inbox_received_total");
    assert!(
        received > inbox(&first, "shardcast_shard_inbox_received_total"),
        "{second}"
    );
    let wakeups = inbox(&second, "shardcast_shard_inbox_wakeups_total");
    assert!(wakeups >= 1.0, "{second}");

    // The fan-out passes that sent the stream were timed from queued to started (a
    // shard's stall shows there), each within the histogram's range.
    let passes = value(&second, "shardcast_fan_out_delay_seconds_count");
    assert!(passes > 0.0, "fan-out delays recorded:\n{second}");
    assert!(
        value(&second, "shardcast_fan_out_delay_seconds_sum") < passes,
        "no fan-out waited a second on average:\n{second}"
    );

    // No client's address or id is a label.
    for scrape in [&first, &second] {
        assert!(
            !scrape.contains("127.0.0.1"),
            "a client address in /metrics:\n{scrape}"
        );
        let names = label_names(scrape);
        assert!(
            names.contains("stream") && names.contains("shard"),
            "{names:?}"
        );
        for bad in ["addr", "ip", "peer", "client", "client_id", "id", "conn"] {
            assert!(!names.contains(bad), "label {bad:?} in /metrics:\n{scrape}");
        }
    }

    // The stream ends (its publisher leaves, its viewers are closed after the grace
    // period): its series go with it.
    let mut publisher = publishing.finish();
    publisher.session.close_stream();
    publisher.flush().unwrap();
    for v in &viewers {
        assert!(
            v.wait_closed(Duration::from_millis(GRACE_MS) + Duration::from_secs(5)),
            "viewer {} was closed after the grace period",
            v.local
        );
    }
    assert!(
        relay
            .wait_stream("live/m", Duration::from_secs(5), |s| s.is_none())
            .is_none(),
        "the stream ended"
    );
    let after = relay.metrics();
    assert!(
        !after.contains(r#"stream="m""#),
        "the ended stream's series are gone:\n{after}"
    );
    assert_eq!(value(&after, "shardcast_streams"), 0.0);
    assert!(
        value(&after, "shardcast_sent_bytes_total") >= value(&second, "shardcast_sent_bytes_total"),
        "a counter never goes back"
    );
    let (ok, printed) = promtool_check(&after);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool: {printed}\n{after}"
    );
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let relay = Relay::start(
        SHARDCAST,
        "admin-bad-input",
        &config("\n[admin]\ntoken = \"s3cret\"\n"),
        2,
    );
    let publishing = Publishing::start(&relay, None, "b");
    let viewers: Vec<Recorder> = (0..2)
        .map(|shard| Recorder::play_on_shard(&relay, shard, "b"))
        .collect();
    for v in &viewers {
        assert!(
            v.wait_until(Duration::from_secs(10), |e| media_count(e) >= 10),
            "viewer {} receives media",
            v.local
        );
    }
    let before = relay.stream("live/b").expect("live/b is listed");
    assert_eq!(before["viewers"]["total"], 2, "{before}");
    let auth: &[(&str, &str)] = &[("Authorization", "Bearer s3cret")];
    let data = "/api/v1/streams/live/b/data";
    let hello = br#"{"handler":"onTextData","data":{"text":"hello"}}"#;

    // Things that do not exist.
    let answer = request(&relay, "DELETE", "/api/v1/clients/999999", auth, b"");
    assert_error(&answer, 404, "kicking an unknown client");
    assert_error(
        &request(&relay, "GET", "/api/v1/clients/999999", &[], b""),
        404,
        "an unknown client",
    );
    assert_error(
        &request(&relay, "GET", "/api/v1/streams/live/nope", &[], b""),
        404,
        "an unknown stream",
    );
    assert_error(
        &request(
            &relay,
            "POST",
            "/api/v1/streams/live/nope/data",
            auth,
            hello,
        ),
        404,
        "data for an unknown stream",
    );
    assert_error(
        &request(&relay, "GET", "/api/v1/nothing", &[], b""),
        404,
        "an unknown path",
    );
    // Malformed or oversized requests.
    assert_error(
        &request(
            &relay,
            "POST",
            data,
            auth,
            b"{\"handler\": \"onTextData\", ",
        ),
        400,
        "malformed JSON",
    );
    assert_error(
        &request(
            &relay,
            "POST",
            data,
            auth,
            br#"{"data":{"text":"no handler"}}"#,
        ),
        400,
        "no handler",
    );
    // Sent whole before the answer is read, as a naive client does: the server must read
    // and drop what it refused, or closing makes a reset that can destroy its 413. 2 MiB
    // mostly fit in loopback's buffers; 32 MiB never do.
    for mib in [2, 32] {
        let big = vec![b' '; mib << 20];
        assert_error(
            &request(&relay, "POST", data, auth, &big),
            413,
            &format!("a {mib} MiB body"),
        );
    }
    let filler = "a".repeat(20 << 10);
    let answer = request(
        &relay,
        "GET",
        "/api/v1/streams",
        &[("X-Filler", &filler)],
        b"",
    );
    assert_eq!(answer.status, 431, "a 20 KiB header: {}", answer.body);
    let answer = request(&relay, "PUT", "/api/v1/streams", auth, b"{}");
    assert_error(&answer, 405, "PUT on the stream list");
    assert!(
        answer.header("allow").is_some_and(|a| a.contains("GET")),
        "405 says what is allowed: {:?}",
        answer.headers
    );
    assert_error(
        &request(&relay, "POST", "/api/v1/streams", auth, hello),
        405,
        "POST on the stream list",
    );

    // The token: changes need it, reads do not.
    let spare = RtmpClient::connect(relay.port);
    let spare_id = relay
        .client_by_addr(spare.local, Duration::from_secs(5))
        .expect("the spare client is listed")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let kick = format!("/api/v1/clients/{spare_id}");
    for (headers, what) in [
        (&[][..], "no token"),
        (&[("Authorization", "Bearer wrong")][..], "a wrong token"),
        (
            &[("Authorization", "s3cret")][..],
            "the token without Bearer",
        ),
        (&[("Authorization", "Bearer s3cret2")][..], "a longer token"),
    ] {
        assert_error(&request(&relay, "DELETE", &kick, headers, b""), 401, what);
        assert_error(&request(&relay, "POST", data, headers, hello), 401, what);
    }
    assert!(
        relay.client_by_addr(spare.local, Duration::ZERO).is_some(),
        "no refused kick closed the spare client"
    );
    for path in [
        "/api/v1/versions",
        "/api/v1/summaries",
        "/api/v1/streams",
        "/api/v1/streams/live/b",
        "/api/v1/clients",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        let answer = request(&relay, "GET", path, &[], b"");
        assert_eq!(
            answer.status, 200,
            "GET {path} without a token: {}",
            answer.body
        );
    }
    let answer = request(&relay, "POST", data, auth, hello);
    assert_eq!(answer.status, 200, "POST with the token: {}", answer.body);
    assert!(answer.json()["timestamp"].is_u64(), "{}", answer.body);
    let answer = request(&relay, "DELETE", &kick, auth, b"");
    assert_eq!(answer.status, 200, "DELETE with the token: {}", answer.body);
    assert!(
        relay.wait_client_gone(spare.local, Duration::from_secs(5)),
        "the kick with the token closed the spare client"
    );

    // The stream plays on as before.
    let after = relay.stream("live/b").expect("live/b is still listed");
    assert_eq!(after["viewers"]["total"], 2, "{after}");
    assert_eq!(after["publish"]["active"], true, "{after}");
    assert_eq!(
        after["publish"]["cid"], before["publish"]["cid"],
        "the same publisher"
    );
    thread::sleep(Duration::from_millis(300));
    let later = relay.stream("live/b").unwrap();
    assert!(
        later["send_bytes"].as_u64() > after["send_bytes"].as_u64(),
        "bytes still go out: {} then {}",
        after["send_bytes"],
        later["send_bytes"]
    );
    for v in &viewers {
        let got = media_count(&v.events());
        assert!(
            v.wait_until(Duration::from_secs(5), |e| media_count(e) > got + 10),
            "viewer {} still receives media",
            v.local
        );
        assert!(!v.is_closed());
    }
    drop(publishing);

    // The token never reached the log, the refusals did.
    let log = relay.log();
    assert!(
        !log.contains("s3cret"),
        "the admin token is in the log:\n{log}"
    );
    assert!(
        log.contains("admin request refused"),
        "the refusals are logged:\n{log}"
    );
}

#[test]
fn readyz_turns_503_through_a_graceful_shutdown_and_the_relay_exits_zero() {
    let mut relay = Relay::start(
        SHARDCAST,
        "admin-readyz",
        &config("\n[server]\nshutdown_timeout_ms = 3000\n"),
        2,
    );
    let publishing = Publishing::start(&relay, None, "r");
    let viewer = Recorder::play_on_shard(&relay, 1, "r");
    assert!(
        viewer.wait_until(Duration::from_secs(10), |e| media_count(e) > 0),
        "the viewer receives media"
    );
    for path in ["/healthz", "/readyz"] {
        let answer = request(&relay, "GET", path, &[], b"");
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    }
    assert_eq!(relay.metric("shardcast_ready"), Some(1.0));

    // /readyz asked as fast as it answers from before the SIGTERM until the process is
    // gone (the relay closes its few clients at once, so its shutdown takes milliseconds).
    let watch = ReadyzWatch::start(relay.admin, 3);
    thread::sleep(Duration::from_millis(100));
    let terminated = Instant::now();
    relay.terminate();
    let status = relay
        .wait_exit(Duration::from_secs(10))
        .expect("the relay exited within its shutdown timeout");
    let polled = watch.finish();
    assert!(status.success(), "exit status {status}");

    let mut said_503 = 0;
    for answers in &polled {
        let before: Vec<Option<u16>> = answers
            .iter()
            .filter(|(at, _)| *at < terminated)
            .map(|(_, s)| *s)
            .collect();
        assert!(
            !before.is_empty() && before.iter().all(|s| *s == Some(200)),
            "ready until the SIGTERM: {before:?}"
        );
        // One poller's answers come one after the other: once it was told "not ready",
        // it is never told "ready" again.
        let statuses: Vec<Option<u16>> = answers.iter().map(|(_, s)| *s).collect();
        let not_ready = statuses
            .iter()
            .position(|s| *s != Some(200))
            .unwrap_or(statuses.len());
        let tail = &statuses[not_ready..statuses.len().min(not_ready + 50)];
        assert!(
            statuses[not_ready..].iter().all(|s| *s != Some(200)),
            "ready again after it said not ready: {tail:?}"
        );
        said_503 += statuses.iter().filter(|s| **s == Some(503)).count();
    }
    assert!(
        said_503 > 0,
        "/readyz said 503 while the relay shut down: {:?}",
        polled
            .iter()
            .map(|a| a.iter().rev().take(30).map(|(_, s)| *s).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    assert!(
        viewer.wait_closed(Duration::from_secs(2)),
        "the viewer's connection was closed"
    );
    drop(publishing);
}
