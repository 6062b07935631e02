//! The PROXY protocol and the per-address cap against the relay binary: a test client plays
//! the load balancer, writing a version 1 or version 2 header before its RTMP bytes, and the
//! admin API must show the address from the header; from an address not in
//! `trusted_proxies` such a connection is refused; `max_connections_per_ip` counts the real
//! addresses, host-wide.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use shardcast::net::proxy_protocol::v2_header;
use shardcast_test_support::client::RtmpClient;
use shardcast_test_support::relay::Relay;

/// The relay binary under test.
const SHARDCAST: &str = env!("CARGO_BIN_EXE_shardcast");

fn config(server: &str) -> String {
    format!("[server]\n{server}\n\n[app.live]\nwait_for_publisher_ms = 30000\n")
}

/// A connection to the relay that starts with `header`, written in two pieces with a pause
/// between (a header may arrive split), then an RTMP client on it.
fn client_behind_proxy(port: u16, header: &[u8]) -> RtmpClient {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let cut = header.len() / 2;
    socket.write_all(&header[..cut]).unwrap();
    socket.flush().unwrap();
    thread::sleep(Duration::from_millis(50));
    socket.write_all(&header[cut..]).unwrap();
    RtmpClient::over(socket, port, 0)
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 {port} 1935\r\n").into_bytes()
}

#[test]
fn headers_from_a_trusted_proxy_set_the_client_address() {
    let relay = Relay::start(
        SHARDCAST,
        "proxy-trusted",
        &config(r#"trusted_proxies = ["127.0.0.0/8"]"#),
        2,
    );
    // Version 1, and a publisher behind it.
    let mut v1_client = client_behind_proxy(relay.port, &v1("203.0.113.7", 40000));
    v1_client.start_publish("proxied");
    let listed = relay.client_by_addr(
        "203.0.113.7:40000".parse().unwrap(),
        Duration::from_secs(10),
    );
    let listed = listed.unwrap_or_else(|| {
        panic!(
            "the API lists the v1 client by its header's address: {:?}\n{}",
            relay.clients(),
            relay.log()
        )
    });
    assert_eq!(listed["ip"], "203.0.113.7");

    // Version 2, IPv6, with the header and the RTMP bytes in one write.
    let source: SocketAddr = "[2001:db8::7]:40001".parse().unwrap();
    let header = v2_header(source, "[2001:db8::1]:1935".parse().unwrap());
    let mut socket = TcpStream::connect(("127.0.0.1", relay.port)).unwrap();
    socket.write_all(&header).unwrap();
    let mut v2_client = RtmpClient::over(socket, relay.port, 0);
    // It plays what the v1 client publishes.
    v2_client.start_play("proxied");
    let listed = relay
        .client_by_addr(source, Duration::from_secs(10))
        .expect("the API lists the v2 client by its header's address");
    assert_eq!(listed["ip"], "2001:db8::7");

    // From a trusted address the header is optional: a plain client is listed as itself.
    let direct = RtmpClient::connect(relay.port);
    assert!(
        relay
            .client_by_addr(direct.local, Duration::from_secs(10))
            .is_some(),
        "a client without a header is listed by its socket address"
    );
    assert!(
        relay
            .wait_published("live/proxied", Duration::from_secs(10))
            .is_some()
    );
}

#[test]
fn a_header_from_an_untrusted_address_is_refused() {
    let relay = Relay::start(
        SHARDCAST,
        "proxy-untrusted",
        &config(r#"trusted_proxies = ["10.0.0.0/8"]"#),
        1,
    );
    let mut forged = client_behind_proxy(relay.port, &v1("198.51.100.1", 40002));
    assert!(
        forged.wait_closed(Duration::from_secs(10)),
        "a PROXY header from an untrusted address closes the connection"
    );
    assert!(
        relay
            .clients()
            .iter()
            .all(|c| c["ip"].as_str() != Some("198.51.100.1")),
        "the forged address never shows in the API"
    );
    assert!(
        relay
            .wait_log(Duration::from_secs(5), |l| l
                .contains("not in server.trusted_proxies"))
            .is_some(),
        "the log says why: {}",
        relay.log()
    );
    // A version 2 header likewise.
    let header = v2_header(
        "198.51.100.2:40003".parse().unwrap(),
        "127.0.0.1:1935".parse().unwrap(),
    );
    let mut forged = client_behind_proxy(relay.port, &header);
    assert!(forged.wait_closed(Duration::from_secs(10)));
    // A malformed header from anyone is refused too, and the relay serves on.
    let mut bad = client_behind_proxy(relay.port, b"PROXY TCP4 nonsense\r\n");
    assert!(bad.wait_closed(Duration::from_secs(10)));
    let plain = RtmpClient::connect(relay.port);
    assert!(
        relay
            .client_by_addr(plain.local, Duration::from_secs(10))
            .is_some(),
        "a client without a header is still served"
    );
}

#[test]
fn max_connections_per_ip_counts_real_addresses() {
    let relay = Relay::start(
        SHARDCAST,
        "proxy-per-ip",
        &config("trusted_proxies = [\"127.0.0.0/8\"]\nmax_connections_per_ip = 2"),
        2,
    );
    let metric = r#"shardcast_connections_rejected_total{reason="too_many_per_ip"}"#;
    assert_eq!(relay.metric(metric), Some(0.0));
    let first = client_behind_proxy(relay.port, &v1("198.51.100.9", 41000));
    let _second = client_behind_proxy(relay.port, &v1("198.51.100.9", 41001));
    for port in [41000, 41001] {
        assert!(
            relay
                .client_by_addr(
                    SocketAddr::from(([198, 51, 100, 9], port)),
                    Duration::from_secs(10)
                )
                .is_some(),
            "connection {port} from 198.51.100.9 is admitted: {}",
            relay.log()
        );
    }
    let mut third = client_behind_proxy(relay.port, &v1("198.51.100.9", 41002));
    assert!(
        third.wait_closed(Duration::from_secs(10)),
        "a third connection from the same address is refused"
    );
    assert_eq!(relay.metric(metric), Some(1.0));
    // Another address is not affected.
    let _other = client_behind_proxy(relay.port, &v1("198.51.100.10", 41003));
    assert!(
        relay
            .client_by_addr(
                "198.51.100.10:41003".parse().unwrap(),
                Duration::from_secs(10)
            )
            .is_some()
    );
    // A connection that leaves gives its place back.
    drop(first);
    assert!(relay.wait_client_gone(
        "198.51.100.9:41000".parse().unwrap(),
        Duration::from_secs(10)
    ));
    let _again = client_behind_proxy(relay.port, &v1("198.51.100.9", 41004));
    assert!(
        relay
            .client_by_addr(
                "198.51.100.9:41004".parse().unwrap(),
                Duration::from_secs(10)
            )
            .is_some(),
        "after one left, the address may connect again: {}",
        relay.log()
    );
}
