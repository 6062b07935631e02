//! RTMPS against the relay binary with real clients: ffmpeg publishes and plays over
//! `rtmps://` with a test certificate made by rcgen; plain RTMP sent to the RTMPS port, and
//! a TLS ClientHello sent to the plain port, are refused with a log line saying so while the
//! relay goes on serving; and SIGHUP reloads the certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use shardcast_test_support::client::RtmpClient;
use shardcast_test_support::relay::Relay;
use shardcast_test_support::tools::{
    ffmpeg_publish, framecrc_counts, temp_path, tool, wait_output,
};

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, in PEM files.
fn test_certificate(name: &str) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    let cert = temp_path(&format!("{name}.crt"));
    let key = temp_path(&format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        r#"
[server]
tls_cert_file = "{}"
tls_key_file = "{}"

[app.live]
unpublish_grace_ms = 1000
"#,
        cert.display(),
        key.display()
    )
}

/// ffmpeg playing `url` for at most `seconds` of media, counting decoded frames.
fn ffmpeg_play_for(url: &str, seconds: u32) -> std::process::Command {
    let mut cmd = tool("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostats"])
        .args(["-rw_timeout", "15000000", "-i", url])
        .args(["-t", &seconds.to_string()])
        .args(["-map", "0:v:0", "-map", "0:a:0", "-f", "framecrc", "-"]);
    cmd
}

#[test]
fn ffmpeg_publishes_and_plays_over_rtmps() {
    let (cert, key) = test_certificate("rtmps-ffmpeg");
    let relay = Relay::start_tls(SHARDCAST, "rtmps-ffmpeg", &tls_config(&cert, &key), 2);
    let publisher = ffmpeg_publish(&relay.rtmps_url("secure"), 20, true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let published = relay.wait_published("live/secure", Duration::from_secs(15));
    assert!(
        published.is_some(),
        "ffmpeg's RTMPS publish shows in the API; log:\n{}",
        relay.log()
    );

    // A viewer over RTMPS and one over plain RTMP, both from the RTMPS publisher.
    let tls_viewer = ffmpeg_play_for(&relay.rtmps_url("secure"), 3)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let plain_viewer = ffmpeg_play_for(&relay.url("secure"), 3)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (name, viewer) in [("rtmps", tls_viewer), ("rtmp", plain_viewer)] {
        let out = wait_output(viewer, Duration::from_secs(30));
        let (video, audio) = framecrc_counts(&out.stdout);
        assert!(
            out.status.success() && video >= 50 && audio >= 50,
            "the {name} viewer decoded 3 s of video and audio: {video} video, {audio} audio frames, {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut publisher = publisher;
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[test]
fn plain_rtmp_on_the_rtmps_port_and_tls_on_the_plain_port_are_refused() {
    let (cert, key) = test_certificate("rtmps-wrong-port");
    let relay = Relay::start_tls(SHARDCAST, "rtmps-wrong-port", &tls_config(&cert, &key), 2);
    let tls_port = relay.tls.unwrap().port();

    // Plain RTMP (C0 = 3, then C1) to the RTMPS port: closed, with a line saying why.
    let mut plain = RtmpClient::connect(tls_port);
    assert!(
        plain.wait_closed(Duration::from_secs(10)),
        "plain RTMP on the RTMPS port is closed"
    );
    assert!(
        relay
            .wait_log(Duration::from_secs(5), |l| l
                .contains("plain RTMP on the RTMPS port"))
            .is_some(),
        "the log says plain RTMP came to the RTMPS port: {}",
        relay.log()
    );

    // A TLS ClientHello's record header to the plain port: closed too.
    let mut tls = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    tls.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0])
        .unwrap();
    tls.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "TLS on the plain port gets no answer but a close");
    assert!(
        relay
            .wait_log(Duration::from_secs(5), |l| l
                .contains("TLS on the plain RTMP port"))
            .is_some(),
        "the log says TLS came to the plain port: {}",
        relay.log()
    );

    // Neither disturbed the relay: it still publishes and plays on both ports.
    let mut publisher = ffmpeg_publish(&relay.rtmps_url("after"), 20, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        relay
            .wait_published("live/after", Duration::from_secs(15))
            .is_some(),
        "the relay still takes RTMPS publishers: {}",
        relay.log()
    );
    let out = wait_output(
        ffmpeg_play_for(&relay.url("after"), 2)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let (video, _) = framecrc_counts(&out.stdout);
    assert!(video >= 25, "a plain viewer still plays: {video} frames");
    let _ = publisher.kill();
    let _ = publisher.wait();
    assert!(relay.is_ready());
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let (cert, key) = test_certificate("rtmps-reload");
    let relay = Relay::start_tls(SHARDCAST, "rtmps-reload", &tls_config(&cert, &key), 1);
    // A key file that is not a key: the reload is refused, RTMPS goes on with the old one.
    std::fs::write(&key, "not a key").unwrap();
    relay.reload();
    assert!(
        relay
            .wait_log(Duration::from_secs(10), |l| l
                .contains("configuration refused")
                && l.contains("tls_key_file"))
            .is_some(),
        "the refused reload is logged: {}",
        relay.log()
    );
    // A new certificate and key: taken.
    let (new_cert, new_key) = test_certificate("rtmps-reload-new");
    std::fs::rename(&new_cert, &cert).unwrap();
    std::fs::rename(&new_key, &key).unwrap();
    relay.reload();
    assert!(
        relay
            .wait_log(Duration::from_secs(10), |l| l
                .contains("configuration reloaded"))
            .is_some(),
        "the reload is taken: {}",
        relay.log()
    );
    let mut publisher = ffmpeg_publish(&relay.rtmps_url("renewed"), 20, true)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        relay
            .wait_published("live/renewed", Duration::from_secs(15))
            .is_some(),
        "RTMPS works with the renewed certificate: {}",
        relay.log()
    );
    let _ = publisher.kill();
    let _ = publisher.wait();
}
