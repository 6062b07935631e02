//! Bad targets give clear errors: a closed port, a refused publish, and a server that
//! disconnects viewers (counted by reason while the run goes on).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use shardcast::rtmp::{ServerEvent, ServerSession, ServerSessionConfig};
use shardcast_test_support::loadgen::{LoadGenerator, run, serial, text};
use shardcast_test_support::tools::{free_port, wait_output};

const LOAD: LoadGenerator = LoadGenerator(env!("CARGO_BIN_EXE_shardcast-load"));

#[test]
fn closed_port_is_connection_refused() {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    let out = run(
        LOAD.command(&["--url", &url, "--duration", "2s"]),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains(&format!("connection refused to 127.0.0.1:{port}")),
        "stderr: {err}"
    );
}

#[test]
fn second_publisher_on_a_live_key_is_refused_with_bad_name() {
    let _serial = serial();
    let server = LOAD.start_relay("load-taken");
    let url = server.url("taken");
    let first = LOAD
        .command(&["--url", &url, "--viewers", "0", "--duration", "8s"])
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    let out = run(
        LOAD.command(&["--url", &url, "--viewers", "1", "--duration", "3s"]),
        Duration::from_secs(30),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("publish refused: NetStream.Publish.BadName"),
        "stderr: {err}"
    );
    let first = wait_output(first, Duration::from_secs(60));
    assert!(
        first.status.success(),
        "the first publisher ran on: {}",
        text(&first.stderr)
    );
}

#[test]
fn bad_play_url_fails_viewers_by_reason() {
    let _serial = serial();
    let server = LOAD.start_relay("load-bad-play");
    let closed = free_port();
    let play = format!("rtmp://127.0.0.1:{closed}/live/x");
    let (report, table) = LOAD.run_json(&[
        "--url",
        &server.url("x"),
        "--play-url",
        &play,
        "--viewers",
        "5",
        "--duration",
        "2s",
    ]);
    let reason = format!("connection refused to 127.0.0.1:{closed}");
    assert_eq!(
        report["viewers"]["failed_by_reason"][&reason], 5,
        "{report}"
    );
    assert!(table.contains(&reason), "{table}");
}

/// A server built from the protocol core that accepts everything, then closes each
/// viewer after a second: every other one after telling it the stream was unpublished.
fn disconnecting_server(listener: TcpListener) {
    let mut viewers = 0u32;
    for socket in listener.incoming() {
        let Ok(socket) = socket else { break };
        viewers += 1;
        let polite = viewers.is_multiple_of(2);
        thread::spawn(move || serve(socket, polite));
    }
}

fn serve(mut socket: TcpStream, polite: bool) {
    let mut session = ServerSession::new(ServerSessionConfig::default());
    let mut buf = vec![0u8; 64 * 1024];
    let mut playing: Option<(u32, std::time::Instant)> = None;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if session.feed(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                ServerEvent::PublishRequested { stream_id, .. } => {
                    session.accept_publish(stream_id)
                }
                ServerEvent::PlayRequested { stream_id, .. } => {
                    session.accept_play(stream_id, true, false);
                    playing = Some((stream_id, std::time::Instant::now()));
                }
                _ => {}
            }
        }
        if let Some((stream_id, since)) = playing
            && since.elapsed() > Duration::from_secs(1)
        {
            if polite {
                session.notify_unpublished(stream_id);
            }
            while let Some(out) = session.poll_transmit() {
                let _ = socket.write_all(&out);
            }
            return;
        }
        while let Some(out) = session.poll_transmit() {
            if socket.write_all(&out).is_err() {
                return;
            }
        }
    }
}

#[test]
fn viewers_the_server_disconnects_are_counted_by_reason_and_the_run_goes_on() {
    let _serial = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || disconnecting_server(listener));
    let url = format!("rtmp://127.0.0.1:{port}/live/d");
    let (report, table) = LOAD.run_json(&[
        "--url",
        &url,
        "--viewers",
        "10",
        "--ramp",
        "50",
        "--duration",
        "4s",
    ]);
    assert_eq!(report["viewers"]["connected"], 10, "{table}");
    assert_eq!(report["viewers"]["disconnected"], 10, "{table}");
    assert!(
        report["elapsed_s"].as_f64().unwrap() >= 3.9,
        "the run went on to its end"
    );
    let reasons = report["viewers"]["disconnected_by_reason"]
        .as_object()
        .unwrap();
    assert_eq!(
        reasons.get("connection closed by server after NetStream.Play.UnpublishNotify"),
        Some(&Value::from(5)),
        "{table}"
    );
    assert_eq!(
        reasons.get("connection closed by server"),
        Some(&Value::from(5)),
        "{table}"
    );
    assert!(table.contains("disconnected by reason:"), "{table}");
}
