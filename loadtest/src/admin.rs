//! The server's own view of the run, from its admin HTTP API (`--admin URL`): the
//! SRS-style `/api/v1/summaries` and `/api/v1/streams`, read once as the run ends, while
//! every viewer is still connected, so the report can set the server's counts beside ours.
//!
//! Every field is `#[serde(default)]` and unknown fields are ignored: the server may add
//! fields, or leave some out, without this breaking the run. Only what makes the numbers
//! meaningless is an error: a failed request, a body that is not JSON, a `code` other than
//! 0, or a summary without `data.shardcast` (some other server answering).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole exchange must finish in this long, so an unreachable or wedged server costs
/// the run at most this much per request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin API is, from `--admin` and `--admin-token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTarget {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:1985`.
    pub url: String,
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

impl AdminTarget {
    /// Checks the base URL; ureq is built without TLS, so only `http://` is accepted.
    pub fn new(url: &str, token: Option<String>) -> Result<AdminTarget, String> {
        let trimmed = url.trim().trim_end_matches('/');
        if trimmed.starts_with("https://") {
            return Err(format!(
                "--admin {url}: https is not supported; use http:// (the admin API is meant for localhost or a private network)"
            ));
        }
        let Some(host) = trimmed.strip_prefix("http://") else {
            return Err(format!(
                "--admin {url}: expected http://host:port, e.g. http://127.0.0.1:1985"
            ));
        };
        if host.is_empty() {
            return Err(format!("--admin {url}: no host"));
        }
        Ok(AdminTarget {
            url: trimmed.to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }
}

/// `GET /api/v1/summaries`: `{"code":0,"server":"...","data":{"shardcast":{...}}}`.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct SummariesReply {
    code: i64,
    data: SummariesData,
}

#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct SummariesData {
    /// `None` tells a server without shardcast's section (SRS itself) from one whose
    /// counters are all zero.
    shardcast: Option<ShardcastSummary>,
}

/// `data.shardcast`: the relay's counters since it started.
#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct ShardcastSummary {
    pub connections: ConnectionCounts,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub shards: Vec<ShardSummary>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct ConnectionCounts {
    pub total: u64,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct ShardSummary {
    pub shard: u64,
    pub connections: u64,
    pub viewers: u64,
    pub bytes_out: u64,
}

/// `GET /api/v1/streams?count=1000`: `{"code":0,"server":"...","streams":[...]}`.
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct StreamsReply {
    code: i64,
    streams: Vec<StreamInfo>,
}

/// One stream as the server lists it; serialized back under the same names, so the JSON
/// report reads like the API.
#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct StreamInfo {
    pub app: String,
    pub name: String,
    pub viewers: StreamViewers,
    pub dropped_frames: u64,
    pub send_bytes: u64,
    pub kbps: StreamKbps,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct StreamViewers {
    pub total: u64,
    /// Viewers on each shard, shard 0 first.
    pub per_shard: Vec<u64>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(default)]
pub struct StreamKbps {
    /// Outgoing kbit/s over the last 30 s. A float, so either an SRS-style integer or a
    /// fractional value parses.
    pub send_30s: f64,
}

/// What the two requests returned; each part fails on its own.
#[derive(Debug, Clone)]
pub struct AdminView {
    pub url: String,
    pub summary: Result<ShardcastSummary, String>,
    pub streams: Result<Vec<StreamInfo>, String>,
}

/// Asks the server for both views. Never fails: what could not be had is an `Err` inside.
pub fn fetch(target: &AdminTarget) -> AdminView {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        // A 401 or 404 body usually says why; keep it for the report.
        .http_status_as_error(false)
        .build()
        .into();
    let summaries_url = format!("{}/api/v1/summaries", target.url);
    let summary = get(&agent, target, &summaries_url).and_then(|body| parse_summaries(&body));
    // A server that refused the first connection will refuse the second: one error line,
    // and no second wait for a timeout.
    let streams = match &summary {
        Err(e) if e.starts_with(UNREACHABLE) => Err(e.clone()),
        _ => {
            let streams_url = format!("{}/api/v1/streams?count=1000", target.url);
            get(&agent, target, &streams_url).and_then(|body| parse_streams(&body))
        }
    };
    AdminView {
        url: target.url.clone(),
        summary,
        streams,
    }
}

/// How an error that came before any HTTP answer starts.
const UNREACHABLE: &str = "cannot reach";

fn get(agent: &ureq::Agent, target: &AdminTarget, url: &str) -> Result<String, String> {
    let mut request = agent.get(url);
    if let Some(token) = &target.token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request
        .call()
        .map_err(|e| format!("{UNREACHABLE} {url}: {e}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: cannot read the answer: {e}"))?;
    if !status.is_success() {
        let body = body.trim();
        let shown: String = body.chars().take(200).collect();
        return Err(format!("{url}: HTTP {status}: {shown}"));
    }
    Ok(body)
}

fn parse_summaries(body: &str) -> Result<ShardcastSummary, String> {
    let reply: SummariesReply =
        serde_json::from_str(body).map_err(|e| format!("summaries: not the expected JSON: {e}"))?;
    if reply.code != 0 {
        return Err(format!(
            "summaries: the server answered code {}",
            reply.code
        ));
    }
    reply.data.shardcast.ok_or_else(|| {
        "summaries: no data.shardcast in the answer (not a shardcast server?)".into()
    })
}

fn parse_streams(body: &str) -> Result<Vec<StreamInfo>, String> {
    let reply: StreamsReply =
        serde_json::from_str(body).map_err(|e| format!("streams: not the expected JSON: {e}"))?;
    if reply.code != 0 {
        return Err(format!("streams: the server answered code {}", reply.code));
    }
    Ok(reply.streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARIES: &str = r#"{
        "code": 0,
        "server": "shardcast/0.1.0",
        "data": {
            "ok": true,
            "self": {"version": "0.1.0", "pid": 4242},
            "shardcast": {
                "connections": {"total": 53, "publishers": 1, "viewers": 52},
                "bytes_in": 1200000,
                "bytes_out": 61000000,
                "uptime_s": 12.5,
                "shards": [
                    {"shard": 0, "connections": 27, "viewers": 26, "bytes_out": 30000000},
                    {"shard": 1, "connections": 26, "viewers": 26}
                ]
            }
        }
    }"#;

    const STREAMS: &str = r#"{
        "code": 0,
        "server": "shardcast/0.1.0",
        "streams": [
            {
                "id": "live/load-0",
                "name": "load-0",
                "app": "live",
                "publish": {"active": true},
                "viewers": {"total": 50, "per_shard": [25, 25]},
                "dropped_frames": 3,
                "send_bytes": 60000000,
                "kbps": {"recv_30s": 2500, "send_30s": 125000}
            },
            {
                "name": "other",
                "app": "live",
                "viewers": {"total": 2}
            }
        ]
    }"#;

    #[test]
    fn summaries_parse_with_extra_and_missing_fields() {
        let s = parse_summaries(SUMMARIES).unwrap();
        assert_eq!(s.connections.total, 53);
        assert_eq!(s.bytes_in, 1_200_000);
        assert_eq!(s.bytes_out, 61_000_000);
        assert_eq!(s.shards.len(), 2);
        assert_eq!(
            s.shards[0],
            ShardSummary {
                shard: 0,
                connections: 27,
                viewers: 26,
                bytes_out: 30_000_000
            }
        );
        // Shard 1 has no bytes_out: zero, not an error.
        assert_eq!(s.shards[1].bytes_out, 0);
        assert_eq!(s.shards[1].viewers, 26);
    }

    #[test]
    fn streams_parse_with_extra_and_missing_fields() {
        let streams = parse_streams(STREAMS).unwrap();
        assert_eq!(streams.len(), 2);
        let s = &streams[0];
        assert_eq!((s.app.as_str(), s.name.as_str()), ("live", "load-0"));
        assert_eq!(s.viewers.total, 50);
        assert_eq!(s.viewers.per_shard, vec![25, 25]);
        assert_eq!(s.dropped_frames, 3);
        assert_eq!(s.send_bytes, 60_000_000);
        assert_eq!(s.kbps.send_30s, 125_000.0);
        // The second lists only its viewers: everything else defaults.
        let other = &streams[1];
        assert_eq!(other.viewers.total, 2);
        assert!(other.viewers.per_shard.is_empty());
        assert_eq!(other.kbps.send_30s, 0.0);
        assert_eq!(other.send_bytes, 0);
    }

    #[test]
    fn a_fractional_kbps_parses() {
        let streams =
            parse_streams(r#"{"code":0,"streams":[{"name":"a","kbps":{"send_30s":12.5}}]}"#)
                .unwrap();
        assert_eq!(streams[0].kbps.send_30s, 12.5);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = parse_summaries(r#"{"code":0,"server":"SRS/5","data":{"ok":true}}"#).unwrap_err();
        assert!(e.contains("no data.shardcast"), "{e}");
        let e = parse_summaries(r#"{"code":1001,"data":{}}"#).unwrap_err();
        assert!(e.contains("code 1001"), "{e}");
        let e = parse_streams("<html>").unwrap_err();
        assert!(e.starts_with("streams: not the expected JSON"), "{e}");
        let e = parse_streams(r#"{"code":2,"streams":[]}"#).unwrap_err();
        assert!(e.contains("code 2"), "{e}");
    }

    #[test]
    fn target_urls() {
        let t = AdminTarget::new("http://127.0.0.1:1985/", Some(String::new())).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:1985");
        assert_eq!(t.token, None);
        let t = AdminTarget::new("http://relay:1985", Some("s3cret".into())).unwrap();
        assert_eq!(t.token.as_deref(), Some("s3cret"));
        assert!(AdminTarget::new("https://relay:1985", None).is_err());
        assert!(AdminTarget::new("127.0.0.1:1985", None).is_err());
        assert!(AdminTarget::new("http://", None).is_err());
    }

    #[test]
    fn an_unreachable_server_is_one_error() {
        // Port 1 on localhost: nothing listens there, so the connect is refused at once.
        let target = AdminTarget::new("http://127.0.0.1:1", None).unwrap();
        let view = fetch(&target);
        let e = view.summary.unwrap_err();
        assert!(
            e.starts_with("cannot reach http://127.0.0.1:1/api/v1/summaries"),
            "{e}"
        );
        assert_eq!(view.streams.unwrap_err(), e);
    }

    /// A one-shot HTTP server: answers each connection with the next of `answers` (whole
    /// responses) and hands back the request lines and headers it saw.
    fn serve(answers: Vec<String>) -> (u16, std::thread::JoinHandle<Vec<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = Vec::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    request.push(line.trim().to_owned());
                }
                stream.write_all(answer.as_bytes()).unwrap();
                seen.push(request);
            }
            seen
        });
        (port, server)
    }

    fn answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn fetch_sends_the_token_and_reads_both_answers() {
        let (port, server) = serve(vec![answer("200 OK", SUMMARIES), answer("200 OK", STREAMS)]);
        let target =
            AdminTarget::new(&format!("http://127.0.0.1:{port}"), Some("tok".into())).unwrap();
        let view = fetch(&target);
        let seen = server.join().unwrap();
        assert_eq!(view.summary.unwrap().connections.total, 53);
        assert_eq!(view.streams.unwrap().len(), 2);
        assert!(seen[0][0].starts_with("GET /api/v1/summaries "), "{seen:?}");
        assert!(
            seen[1][0].starts_with("GET /api/v1/streams?count=1000 "),
            "{seen:?}"
        );
        for request in &seen {
            assert!(
                request
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case("authorization: Bearer tok")),
                "{request:?}"
            );
        }
    }

    #[test]
    fn an_http_error_keeps_the_status_and_body() {
        let refused = r#"{"code":401,"error":"missing or wrong bearer token"}"#;
        let (port, server) = serve(vec![
            answer("401 Unauthorized", refused),
            answer("200 OK", STREAMS),
        ]);
        let target = AdminTarget::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let view = fetch(&target);
        let seen = server.join().unwrap();
        let e = view.summary.unwrap_err();
        assert!(e.contains("HTTP 401"), "{e}");
        assert!(e.contains("wrong bearer token"), "{e}");
        // The streams answer still counts: each request stands on its own.
        assert_eq!(view.streams.unwrap().len(), 2);
        assert!(
            !seen[0]
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("authorization")),
            "no token, no header: {seen:?}"
        );
    }
}
