//! Push (forward): every stream published in an application is sent on to other servers,
//! as nginx-rtmp's `push` and SRS's `forward` do, decided here and carried out by the
//! driver (`src/net/forward_link.rs`).
//!
//! **A forwarder is a viewer.** Once the target has accepted our `publish`, the
//! connection becomes an ordinary viewer of the stream on its origin shard: it joins like a
//! late viewer (metadata, the codec headers, then the GOP cache from its keyframe, which is
//! exactly what a server needs first from a new publisher), its write queue gathers the same
//! shared `Frame::bytes` every RTMP viewer writes (no re-encode, no copy per target), and
//! the fan-out writes it. A slow or dead target is therefore a slow viewer: the backlog
//! rules skip its video to the next keyframe and close it after `viewer.lag_disconnect_ms`,
//! and neither the publisher nor any other viewer waits for it.
//!
//! What makes the shared bytes right for a target:
//! - they are encoded for message stream [`SHARED_STREAM_ID`] (1); the target picks the
//!   stream id in its `createStream` answer, and nginx-rtmp, SRS and shardcast all answer 1.
//!   A target that answers otherwise is refused with a clear error (serving it would take
//!   an encoding of its own, or a rewrite of every message header on the write path);
//! - they are chunked at `[server] chunk_size`, which our client session announces (Set
//!   Chunk Size) right after the handshake;
//! - their chunk stream ids are the shared ones, separate from the ones the client session
//!   uses for its commands and control messages;
//! - the target gets the track class it declared in the answer to our `connect`, as a
//!   player does (`TrackFilter::for_rtmp`): everything for a server that forwards every
//!   codec (shardcast answers `fourCcList: ["*"]`), the legacy FLV form for one that
//!   declared nothing (nginx-rtmp).
//!
//! An `rtmps://` target gets the same bytes through a TLS session (`src/net/outbound.rs`,
//! `src/net/tls.rs`), its
//! certificate checked against `[server] tls_ca_file` (or the system's CAs): the
//! encryption is the one copy, as for an RTMPS viewer.
//!
//! Before that, the connection is the protocol's client role (`ClientSession`): handshake,
//! `connect` (carrying the [`RelayPath`] so a loop of pushes is refused by a shardcast
//! target), `releaseStream`, `FCPublish`, `createStream`, `publish name?query`.
//!
//! **Targets.** A `push` URL is `rtmp://host[:port]/app[/name][?query]`. `{stream}`
//! anywhere after the host is replaced by the stream's name; a URL without it gets `/name`
//! appended to its path (before any query), as nginx-rtmp does. The first path segment is
//! the application (the `tcUrl` is `rtmp://host:port/app`), the rest is the name we
//! publish, and the query goes with the name (`publish name?key=...`), as an encoder sends
//! its stream key. A URL is shown (API, logs) only through `redact_url`, so a `key=` never
//! leaks.
//!
//! **Retries.** A failed attempt (connect error, refusal, the link closing) waits a
//! [`Backoff`] delay (exponential, equal jitter, capped at `push_backoff_max_ms`) before
//! the next; the delay starts over once a target accepts the publish. A target that
//! refuses because of a relay loop is retried at the cap only: it will not change its
//! mind soon. Nothing here reads a clock or opens a socket: the shard passes the time in
//! and turns these decisions into timers and `Output::ForwardConnect`.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::client::ClientId;
use crate::access::query::redact_url;
use crate::cluster::Backoff;
use crate::rtmp::RelayPath;
use crate::rtmp::chunk::SHARED_STREAM_ID;

/// The longest wait before the first retry (later ones double, up to the cap).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest `push` URL taken, and the most targets per application.
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_TARGETS: usize = 16;
/// The most bytes of a target's error text kept (it is the peer's text).
const MAX_ERROR_LEN: usize = 300;

/// One `push` URL, checked, still with its `{stream}` placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    /// As configured (the API shows it redacted).
    pub template: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Where one stream goes for one target: the template filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The application, for `connect`.
    pub app: String,
    /// `rtmp://host:port/app`.
    pub tc_url: String,
    /// What `publish` names: `name` or `name?query`.
    pub publish_name: String,
    /// The whole URL with any secret in its query hidden, for the API and logs.
    pub shown: String,
}

impl PushTarget {
    /// Checks a `push` URL; the error says what is wrong (never repeating a secret).
    pub fn parse(url: &str) -> Result<PushTarget, String> {
        if url.len() > MAX_URL_LEN {
            return Err(format!("a push URL is at most {MAX_URL_LEN} bytes"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a push URL must not contain spaces or control characters".into());
        }
        let (tls, rest) = if let Some(rest) = url.strip_prefix("rtmp://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rtmps://") {
            (true, rest)
        } else {
            return Err(format!(
                "{}: a push URL starts with rtmp:// or rtmps://",
                redact_url(url)
            ));
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, port) = split_host_port(&rest[..authority_end], tls)
            .map_err(|why| format!("{}: {why}", redact_url(url)))?;
        let target = PushTarget {
            template: url.to_owned(),
            tls,
            host,
            port,
        };
        // The name must make a whole endpoint: try it with a name.
        target
            .endpoint("stream")
            .map_err(|why| format!("{}: {why}", redact_url(url)))?;
        Ok(target)
    }

    /// The template filled in for the stream `name` (its key, without the application).
    pub fn endpoint(&self, name: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls { "rtmps://" } else { "rtmp://" };
        let rest = &self.template[scheme.len()..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let after = &rest[authority_end..];
        let filled = if after.contains("{stream}") {
            after.replace("{stream}", name)
        } else {
            let (path, query) = match after.find('?') {
                Some(q) => after.split_at(q),
                None => (after, ""),
            };
            format!("{}/{name}{query}", path.trim_end_matches('/'))
        };
        let (path, query) = match filled.find('?') {
            Some(q) => (&filled[..q], &filled[q + 1..]),
            None => (filled.as_str(), ""),
        };
        let path = path.trim_start_matches('/');
        let (app, stream) = path.split_once('/').unwrap_or((path, ""));
        if app.is_empty() {
            return Err("the URL names no application (rtmp://host/app)".into());
        }
        if stream.is_empty() {
            return Err("the URL names no stream after the application".into());
        }
        let publish_name = if query.is_empty() {
            stream.to_owned()
        } else {
            format!("{stream}?{query}")
        };
        let host_part = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let tc_url = format!("{scheme}{host_part}:{}/{app}", self.port);
        Ok(Endpoint {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
            app: app.to_owned(),
            shown: redact_url(&format!("{tc_url}/{publish_name}")).into_owned(),
            tc_url,
            publish_name,
        })
    }
}

fn split_host_port(authority: &str, tls: bool) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user information in a push URL is not supported".into());
    }
    let default_port = if tls { 443 } else { 1935 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("an unclosed [ in the host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    if host.contains(['{', '}']) {
        return Err("{stream} may not stand in the host".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or("the port is not a number from 1 to 65535")?,
    };
    Ok((host.to_owned(), port))
}

/// Where a forwarder stands, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardState {
    /// Waiting for the next attempt (after a failure).
    Waiting,
    /// Connecting: TCP, handshake, `connect`, `publish`.
    Connecting,
    /// The target accepted the publish: media flows.
    Forwarding,
}

impl ForwardState {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardState::Waiting => "waiting",
            ForwardState::Connecting => "connecting",
            ForwardState::Forwarding => "forwarding",
        }
    }
}

/// What the shard must do after a forwarder's step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardStep {
    /// Connect now (attempt number for the driver's answer).
    Connect { attempt: u64 },
    /// Try again at this time.
    RetryAt(Instant),
    /// Nothing more to do.
    Nothing,
}

/// One stream's push to one target, on the stream's origin shard.
#[derive(Debug)]
pub struct Forwarder {
    pub endpoint: Endpoint,
    pub state: ForwardState,
    /// Reconnects after a failure (the first attempt is not one).
    pub retries: u64,
    /// Bytes written to the target by links that have closed.
    pub bytes_closed: u64,
    pub last_error: Option<String>,
    /// The link being tried or forwarding, once the driver connected it.
    pub client: Option<ClientId>,
    /// What our `connect` carries: the publisher's path continued through this server.
    pub relay_path: RelayPath,
    backoff: Backoff,
    cap: Duration,
    attempt: u64,
    /// When the next attempt is due, while waiting.
    pub retry_at: Option<Instant>,
}

impl Forwarder {
    /// A forwarder of one stream to `endpoint`; `seed` spreads the retries of forwarders
    /// that failed together.
    pub fn new(endpoint: Endpoint, relay_path: RelayPath, cap: Duration, seed: &str) -> Forwarder {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        endpoint.shown.hash(&mut h);
        Forwarder {
            endpoint,
            state: ForwardState::Waiting,
            retries: 0,
            bytes_closed: 0,
            last_error: None,
            client: None,
            relay_path,
            backoff: Backoff::new(FIRST_RETRY, cap, h.finish()),
            cap,
            attempt: 0,
            retry_at: None,
        }
    }

    /// The current attempt's number.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Starts an attempt now (the first, or a retry that came due).
    pub fn start(&mut self) -> ForwardStep {
        if self.attempt > 0 {
            self.retries += 1;
        }
        self.attempt += 1;
        self.retry_at = None;
        self.state = ForwardState::Connecting;
        ForwardStep::Connect {
            attempt: self.attempt,
        }
    }

    /// A retry timer fired: start if it is the one we wait for.
    pub fn retry_due(&mut self, attempt: u64, now: Instant) -> ForwardStep {
        match self.retry_at {
            Some(at) if self.state == ForwardState::Waiting && attempt == self.attempt => {
                if at > now {
                    return ForwardStep::RetryAt(at);
                }
                self.start()
            }
            _ => ForwardStep::Nothing,
        }
    }

    /// The driver connected the socket for `attempt`; false if that attempt is stale.
    pub fn connected(&mut self, attempt: u64, client: ClientId) -> bool {
        if attempt != self.attempt || self.state != ForwardState::Connecting {
            return false;
        }
        self.client = Some(client);
        true
    }

    /// The target accepted our publish on message stream `stream_id`: Err (a reason to
    /// close the link) if the shared encoding cannot serve it.
    pub fn publishing(&mut self, stream_id: u32) -> Result<(), String> {
        if stream_id != SHARED_STREAM_ID {
            return Err(format!(
                "the target gave message stream {stream_id} in its createStream answer; \
                 shardcast forwards on stream {SHARED_STREAM_ID} only"
            ));
        }
        self.state = ForwardState::Forwarding;
        self.backoff.reset();
        self.last_error = None;
        Ok(())
    }

    /// The attempt `attempt` failed, or its link closed, for `reason` (having written
    /// `bytes`); `loop_refused` when the target said the push would make a relay loop.
    /// Returns when to try again.
    pub fn failed(
        &mut self,
        attempt: u64,
        reason: &str,
        bytes: u64,
        loop_refused: bool,
        now: Instant,
    ) -> ForwardStep {
        if attempt != self.attempt || self.state == ForwardState::Waiting {
            return ForwardStep::Nothing;
        }
        self.client = None;
        self.bytes_closed += bytes;
        self.last_error = Some(bounded(reason));
        self.state = ForwardState::Waiting;
        let delay = if loop_refused {
            self.cap
        } else {
            self.backoff.next_delay()
        };
        let at = now + delay;
        self.retry_at = Some(at);
        ForwardStep::RetryAt(at)
    }

    /// Bytes written to the target so far, given what the live link has written.
    pub fn bytes(&self, live_link: u64) -> u64 {
        self.bytes_closed + live_link
    }
}

/// A peer's text, cut to a length fit for a log line and the API.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// A stream's forwarders: one per `push` URL of its application (a URL that cannot take
/// this stream's name is logged and left out).
pub fn forwarders_for(
    push: &[String],
    key: &str,
    relay_path: &RelayPath,
    cap: Duration,
    node_id: &str,
) -> Vec<Forwarder> {
    push.iter()
        .take(MAX_TARGETS)
        .filter_map(|url| {
            let target = PushTarget::parse(url)
                .inspect_err(|why| tracing::warn!(stream = key, "push target left out: {why}"))
                .ok()?;
            let endpoint = target
                .endpoint(key)
                .inspect_err(|why| tracing::warn!(stream = key, target = %redact_url(url), "push target left out: {why}"))
                .ok()?;
            Some(Forwarder::new(
                endpoint,
                relay_path.clone(),
                cap,
                &format!("{node_id}/{key}"),
            ))
        })
        .collect()
}

/// Whether a refusal's description says the push would make a relay loop.
pub fn is_loop_refusal(description: &str) -> bool {
    description.starts_with(crate::rtmp::relay_path::LOOP_DESCRIPTION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str, name: &str) -> Endpoint {
        PushTarget::parse(url).unwrap().endpoint(name).unwrap()
    }

    #[test]
    fn a_url_without_placeholder_gets_the_name_appended() {
        let e = ep("rtmp://a.example/live", "cam1");
        assert_eq!(e.host, "a.example");
        assert_eq!(e.port, 1935);
        assert_eq!(e.app, "live");
        assert_eq!(e.tc_url, "rtmp://a.example:1935/live");
        assert_eq!(e.publish_name, "cam1");
        let e = ep("rtmp://10.0.0.1:1940/live/?key=abc", "cam1");
        assert_eq!(e.publish_name, "cam1?key=abc");
        assert_eq!(e.port, 1940);
    }

    #[test]
    fn the_placeholder_is_replaced_and_the_query_goes_with_the_name() {
        let e = ep("rtmps://b.example/app/{stream}?key=s3cret", "cam1");
        assert!(e.tls);
        assert_eq!(e.port, 443);
        assert_eq!(e.app, "app");
        assert_eq!(e.publish_name, "cam1?key=s3cret");
        assert!(!e.shown.contains("s3cret"), "{}", e.shown);
        let e = ep("rtmp://[::1]:2000/x/pre-{stream}-post", "n");
        assert_eq!(e.host, "::1");
        assert_eq!(e.tc_url, "rtmp://[::1]:2000/x");
        assert_eq!(e.publish_name, "pre-n-post");
    }

    #[test]
    fn bad_urls_are_refused_without_their_secret() {
        for url in [
            "http://a/live",
            "rtmp:///live",
            "rtmp://a",
            "rtmp://a:0/live",
            "rtmp://a:99999/live",
            "rtmp://{stream}/live",
            "rtmp://u:p@a/live",
            "rtmp://a/live x",
        ] {
            assert!(PushTarget::parse(url).is_err(), "{url}");
        }
        let err = PushTarget::parse("ftp://a/live?key=s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn failures_back_off_up_to_the_cap_and_reset_on_publish() {
        let cap = Duration::from_secs(4);
        let mut f = Forwarder::new(ep("rtmp://a/live", "s"), RelayPath::default(), cap, "n");
        let now = Instant::now();
        let ForwardStep::Connect { attempt } = f.start() else {
            panic!()
        };
        let mut last = Duration::ZERO;
        let mut attempt = attempt;
        for _ in 0..10 {
            let ForwardStep::RetryAt(at) = f.failed(attempt, "refused", 0, false, now) else {
                panic!()
            };
            last = at - now;
            assert!(last <= cap);
            // A stale answer changes nothing.
            assert_eq!(
                f.failed(attempt, "again", 0, false, now),
                ForwardStep::Nothing
            );
            let ForwardStep::Connect { attempt: next } = f.retry_due(attempt, at) else {
                panic!()
            };
            attempt = next;
        }
        assert!(last >= cap / 2);
        assert_eq!(f.retries, 10);
        let mut slab = crate::relay::slab::Slab::default();
        assert!(f.connected(attempt, ClientId(slab.insert(()))));
        f.publishing(1).unwrap();
        assert_eq!(f.state, ForwardState::Forwarding);
        let ForwardStep::RetryAt(at) = f.failed(attempt, "closed", 500, false, now) else {
            panic!()
        };
        assert!(
            at - now <= FIRST_RETRY,
            "backoff starts over after a success"
        );
        assert_eq!(f.bytes(0), 500);
    }

    #[test]
    fn a_loop_refusal_waits_the_cap_and_other_stream_ids_are_refused() {
        let cap = Duration::from_secs(10);
        let mut f = Forwarder::new(ep("rtmp://a/live", "s"), RelayPath::default(), cap, "n");
        let now = Instant::now();
        let ForwardStep::Connect { attempt } = f.start() else {
            panic!()
        };
        assert!(is_loop_refusal(
            "relay loop: this server is already on the path"
        ));
        assert_eq!(
            f.failed(attempt, "relay loop", 0, true, now),
            ForwardStep::RetryAt(now + cap)
        );
        let ForwardStep::Connect { attempt: _ } = f.retry_due(attempt, now + cap) else {
            panic!()
        };
        assert!(f.publishing(3).is_err());
    }
}
