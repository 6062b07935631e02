//! An edge's pull of one stream from its origins: when to connect, to which origin, when to
//! fall over to the next, when to wait and when to give up, as a state machine that takes
//! the time as an argument.
//!
//! An application with `pull = [...]` origins is an edge: the first viewer of a stream this
//! host does not have makes its shard claim the stream's pull in the host's directory
//! (`directory.rs`, so there is one pull per host, never one per shard or per viewer), and
//! that shard keeps an [`UpstreamSource`] for it. The source says what to do as
//! [`PullStep`] values; the shard carries them out (`Shard::handle_upstream`), and the
//! driver's link (`src/net/upstream_link.rs`) does the socket work: it connects, speaks the
//! client role (`src/rtmp/client_session.rs`) and hands back what the origin says.
//!
//! The rules, in the order a pull meets them:
//!
//! - **Which origin.** The application's origins in the stream's rendezvous order
//!   (`cluster::OriginRing`): every edge asks the same origin first, and walks the ring in
//!   the same order when it fails.
//! - **Failover.** A connect error, a "stream not found" (`NetStream.Play.StreamNotFound`
//!   or `NetStream.Play.Failed`), a broken connection, or `pull_no_input_ms` without media
//!   (the first media included) moves the pull to the next origin. The pulled stream's
//!   viewers are not told: they stay, and continue from the next keyframe the new origin
//!   sends.
//! - **Backoff.** Every failure waits a little longer before the next attempt
//!   (`cluster::Backoff`, exponential with jitter, capped at `pull_backoff_max_ms`); media
//!   flowing again starts the schedule over.
//! - **The stream ended.** When the origin says the stream was unpublished
//!   (`NetStream.Play.UnpublishNotify`, `NetStream.Play.Stop`, Stream EOF) the edge's
//!   viewers get what a local publisher's unpublish gives them (the grace period); the
//!   pull keeps listening, and media from the origin again is a republish.
//! - **A loop.** An origin that refuses the pull with a description starting
//!   [`LOOP_DESCRIPTION`] (it is already on the pull's relay path) ends the pull at once:
//!   its waiting viewers are refused with that description, nothing is retried.
//! - **Nobody watches.** Retries stop as soon as the pull has no viewer; a pull that
//!   delivers stops `pull_linger_ms` after its last viewer left. A `pull_static` stream is
//!   pulled whatever its audience.

use std::time::{Duration, Instant};

use crate::cluster::{Backoff, OriginRing};
use crate::rtmp::RelayPath;
use crate::rtmp::relay_path::LOOP_DESCRIPTION;

use super::directory::StreamName;

/// The first wait after a failure (the backoff's base); later ones double up to the cap.
pub const FIRST_RETRY: Duration = Duration::from_millis(200);

/// How often a pull looks at its audience when nothing else is due (a viewer leaving on
/// another shard is seen through the directory, not told).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The longest `last_error` kept (a hostile origin's description is cut).
pub const MAX_ERROR_LEN: usize = 200;

/// An origin URL of `pull`: `rtmp://host[:port]/app` or `rtmps://host[:port]/app`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `rtmps://`: TLS to the origin.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The application on the origin (may contain `/`, e.g. `live/sub`).
    pub app: String,
    /// The `tcUrl` the pull sends: the URL as configured.
    pub tc_url: String,
}

impl UpstreamUrl {
    /// Parses a `pull` entry.
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("rtmp://") {
            (false, rest, 1935)
        } else if let Some(rest) = url.strip_prefix("rtmps://") {
            (true, rest, 443)
        } else {
            return Err("must start with rtmp:// or rtmps://".to_owned());
        };
        let (authority, app) = rest
            .split_once('/')
            .ok_or("must name the application: rtmp://host[:port]/app")?;
        let app = app.trim_end_matches('/');
        if app.is_empty() {
            return Err("must name the application: rtmp://host[:port]/app".to_owned());
        }
        if app.contains(['?', '#', ' ']) {
            return Err("the application may not carry a query".to_owned());
        }
        let parse_port = |port: &str| {
            port.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("bad port {port:?}"))
        };
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            // An IPv6 address: [::1] or [::1]:1935.
            let (host, after) = rest.split_once(']').ok_or("unclosed '[' in the host")?;
            match after.strip_prefix(':') {
                Some(port) => (host, parse_port(port)?),
                None if after.is_empty() => (host, default_port),
                None => return Err(format!("unexpected {after:?} after the host")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, parse_port(port)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err("must name a host".to_owned());
        }
        if host.contains('@') {
            return Err("credentials in the URL are not supported".to_owned());
        }
        Ok(UpstreamUrl {
            tls,
            host: host.to_owned(),
            port,
            app: app.to_owned(),
            tc_url: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// The timings of an application's pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullSettings {
    pub no_input: Duration,
    pub backoff_max: Duration,
    pub linger: Duration,
}

impl PullSettings {
    pub fn from_app(app: &crate::config::AppConfig) -> PullSettings {
        PullSettings {
            no_input: Duration::from_millis(app.pull_no_input_ms),
            backoff_max: Duration::from_millis(app.pull_backoff_max_ms),
            linger: Duration::from_millis(app.pull_linger_ms),
        }
    }
}

/// Where a pull is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamState {
    /// A link is open (or opening) and no media came on it yet.
    Connecting,
    /// Media comes.
    Playing,
    /// Waiting before the next attempt.
    Backoff,
    /// Over (nobody watches, or refused as a loop).
    Stopped,
}

impl UpstreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Connecting => "connecting",
            UpstreamState::Playing => "playing",
            UpstreamState::Backoff => "backoff",
            UpstreamState::Stopped => "stopped",
        }
    }
}

/// Why a link failed, as the source tells them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkFailure {
    /// Connect error, broken connection, protocol error, refused connect or play.
    Error(String),
    /// The origin does not have the stream.
    NotFound(String),
    /// The origin refused the pull as a relay loop (description starts `relay loop`).
    Loop(String),
}

impl LinkFailure {
    /// Classifies an `onStatus` error or a refused `connect` by its code and description.
    pub fn from_status(code: &str, description: &str) -> LinkFailure {
        let text = format!("{code}: {description}");
        if description.starts_with(LOOP_DESCRIPTION) {
            LinkFailure::Loop(description.to_owned())
        } else if code == "NetStream.Play.StreamNotFound" || code == "NetStream.Play.Failed" {
            LinkFailure::NotFound(text)
        } else {
            LinkFailure::Error(text)
        }
    }

    fn text(&self) -> &str {
        match self {
            LinkFailure::Error(t) | LinkFailure::NotFound(t) | LinkFailure::Loop(t) => t,
        }
    }
}

/// What the shard must do for a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullStep {
    /// Open link number `link` to `url` and play the stream there.
    Connect { link: u64, url: String },
    /// Close link `link` (it failed, or the pull stopped).
    Disconnect { link: u64 },
    /// Refuse the stream's waiting viewers (on every shard) with this description.
    RefuseViewers(String),
    /// The pull is over: release its claim and forget it.
    Stop,
}

/// One stream's pull.
#[derive(Debug)]
pub struct UpstreamSource {
    pub name: StreamName,
    /// The stream's name on the origins (without the application).
    pub key: String,
    /// The origins, in the order this stream tries them.
    origins: Vec<String>,
    /// Index in `origins` of the current (or next) attempt.
    next: usize,
    pub state: UpstreamState,
    /// The current link's number (links are numbered so a late event of a closed one is
    /// recognised and dropped).
    pub link: u64,
    /// The relays this pull's media has passed (the requesting viewer's path and this
    /// node), sent in `connect` so an origin on it refuses the loop.
    pub relay_path: RelayPath,
    settings: PullSettings,
    backoff: Backoff,
    /// When the current state's deadline passes: no media yet / since the last media
    /// (Connecting, Playing), or the next attempt (Backoff).
    deadline: Option<Instant>,
    /// When the audience was last seen empty, while it is.
    idle_since: Option<Instant>,
    pub is_static: bool,
    /// Attempts after the first, across the pull's life.
    pub retries: u32,
    /// Media and data payload bytes received.
    pub bytes: u64,
    pub last_error: String,
    /// The URL of the current (or last) attempt.
    pub url: String,
    /// The pull is the live source of its stream (the shard sets and clears it).
    pub live: bool,
    /// The origin's `onMetaData` (timestamp, body), kept until the stream goes live.
    pub metadata: Option<(u32, bytes::Bytes)>,
    /// After a failover: the new origin's video is dropped until its first keyframe, so
    /// the viewers continue from a picture they can decode (the shard sets and clears it).
    pub awaiting_keyframe: bool,
}

impl UpstreamSource {
    /// A pull of `name` (`app/key`) from `origins`, not started yet (see [`Self::start`]).
    /// `seed` spreads the retries of different edges (a hash of the node id, say).
    pub fn new(
        name: StreamName,
        origins: &[String],
        settings: PullSettings,
        relay_path: RelayPath,
        is_static: bool,
        seed: u64,
    ) -> UpstreamSource {
        let key = name.split_once('/').map_or("", |(_, k)| k).to_owned();
        let ring = OriginRing::new(origins.to_vec());
        let origins: Vec<String> = ring
            .order_for(&key)
            .into_iter()
            .map(str::to_owned)
            .collect();
        UpstreamSource {
            name,
            key,
            url: origins.first().cloned().unwrap_or_default(),
            origins,
            next: 0,
            state: UpstreamState::Stopped,
            link: 0,
            relay_path,
            settings,
            backoff: Backoff::new(FIRST_RETRY, settings.backoff_max, seed),
            deadline: None,
            idle_since: None,
            is_static,
            retries: 0,
            bytes: 0,
            last_error: String::new(),
            live: false,
            metadata: None,
            awaiting_keyframe: false,
        }
    }

    /// The origins in this stream's order.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Opens the first link, numbered `link`.
    pub fn start(&mut self, link: u64, now: Instant) -> Vec<PullStep> {
        self.connect(link, now)
    }

    fn connect(&mut self, link: u64, now: Instant) -> Vec<PullStep> {
        let Some(url) = self
            .origins
            .get(self.next % self.origins.len().max(1))
            .cloned()
        else {
            self.state = UpstreamState::Stopped;
            return vec![
                PullStep::RefuseViewers("no origin to pull from".into()),
                PullStep::Stop,
            ];
        };
        self.link = link;
        self.url = url.clone();
        self.state = UpstreamState::Connecting;
        self.deadline = Some(now + self.settings.no_input);
        vec![PullStep::Connect { link, url }]
    }

    /// Media (or data) of `len` payload bytes came on `link`. Returns true when it is the
    /// first of this link: the pull's stream is live from here (a failover's first media
    /// continues it).
    pub fn on_media(&mut self, link: u64, len: usize, now: Instant) -> bool {
        if link != self.link || self.state == UpstreamState::Stopped {
            return false;
        }
        self.bytes += len as u64;
        self.deadline = Some(now + self.settings.no_input);
        if self.state == UpstreamState::Connecting {
            self.state = UpstreamState::Playing;
            self.backoff.reset();
            return true;
        }
        false
    }

    /// The origin said the stream was unpublished: media from it again starts the stream
    /// anew (its first media is a first again); the silence still counts, so a stream that
    /// moved to another origin is found there after `pull_no_input_ms`.
    pub fn on_unpublished(&mut self) {
        if self.state == UpstreamState::Playing {
            self.state = UpstreamState::Connecting;
        }
    }

    /// Link `link` failed (`failure`): fall over to the next origin after a backoff, or
    /// end the pull for a loop. A late failure of a link already replaced changes nothing.
    pub fn on_failure(&mut self, link: u64, failure: LinkFailure, now: Instant) -> Vec<PullStep> {
        if link != self.link
            || matches!(self.state, UpstreamState::Stopped | UpstreamState::Backoff)
        {
            return Vec::new();
        }
        self.last_error = cut(failure.text());
        let mut steps = vec![PullStep::Disconnect { link }];
        if let LinkFailure::Loop(why) = failure {
            self.state = UpstreamState::Stopped;
            self.deadline = None;
            steps.push(PullStep::RefuseViewers(cut(&why)));
            steps.push(PullStep::Stop);
            return steps;
        }
        self.next = self.next.wrapping_add(1);
        self.state = UpstreamState::Backoff;
        self.deadline = Some(now + self.backoff.next_delay());
        steps
    }

    /// Whatever is due at `now`, with `watchers` viewers of the stream on the whole host;
    /// `next_link` is the number a new link would get.
    pub fn poll(&mut self, now: Instant, watchers: usize, next_link: u64) -> Vec<PullStep> {
        if self.state == UpstreamState::Stopped {
            return Vec::new();
        }
        if watchers > 0 || self.is_static {
            self.idle_since = None;
        } else {
            let since = *self.idle_since.get_or_insert(now);
            // A pull that delivers lingers for a viewer who comes back; a pull still
            // looking for its stream stops at once.
            let linger = if self.state == UpstreamState::Playing {
                self.settings.linger
            } else {
                Duration::ZERO
            };
            if now.saturating_duration_since(since) >= linger {
                self.state = UpstreamState::Stopped;
                self.deadline = None;
                return vec![PullStep::Disconnect { link: self.link }, PullStep::Stop];
            }
        }
        let Some(deadline) = self.deadline else {
            return Vec::new();
        };
        if now < deadline {
            return Vec::new();
        }
        match self.state {
            UpstreamState::Connecting | UpstreamState::Playing => {
                let ms = self.settings.no_input.as_millis();
                let why = if self.state == UpstreamState::Connecting {
                    format!("no media within {ms} ms")
                } else {
                    format!("no media for {ms} ms")
                };
                self.on_failure(self.link, LinkFailure::Error(why), now)
            }
            UpstreamState::Backoff => {
                self.retries = self.retries.saturating_add(1);
                self.connect(next_link, now)
            }
            UpstreamState::Stopped => Vec::new(),
        }
    }

    /// When [`Self::poll`] next has something to do (at the latest: the audience check).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.state == UpstreamState::Stopped {
            return None;
        }
        let watch = now + WATCH_INTERVAL;
        Some(self.deadline.map_or(watch, |d| d.min(watch)))
    }
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings() -> PullSettings {
        PullSettings {
            no_input: 3000 * MS,
            backoff_max: 10_000 * MS,
            linger: 10_000 * MS,
        }
    }

    fn source(origins: &[&str]) -> UpstreamSource {
        let origins: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        UpstreamSource::new(
            "live/cam".into(),
            &origins,
            settings(),
            RelayPath::origin().through("edge-1"),
            false,
            7,
        )
    }

    #[test]
    fn urls_parse_and_bad_ones_are_refused() {
        let u = UpstreamUrl::parse("rtmp://origin-a:1936/live").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str()),
            ("origin-a", 1936, "live")
        );
        assert_eq!(u.tc_url, "rtmp://origin-a:1936/live");
        let u = UpstreamUrl::parse("rtmp://origin-b/live/sub/").unwrap();
        assert_eq!((u.port, u.app.as_str()), (1935, "live/sub"));
        let u = UpstreamUrl::parse("rtmp://[::1]:1936/live").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1936));
        let u = UpstreamUrl::parse("rtmp://[::1]/live").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1935));
        let u = UpstreamUrl::parse("rtmps://origin-c/live").unwrap();
        assert_eq!((u.tls, u.port, u.host.as_str()), (true, 443, "origin-c"));
        assert!(!UpstreamUrl::parse("rtmp://origin-c/live").unwrap().tls);
        for bad in [
            "http://a/live",
            "rtmp://a",
            "rtmp://a/",
            "rtmp://:1935/live",
            "rtmp://a:0/live",
            "rtmp://a:99999/live",
            "rtmp://a/live?x=1",
            "rtmps://a",
            "rtmp://[::1/live",
            "rtmp://[::1]x/live",
            "rtmp://user@o/live",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_origin_is_the_rings_choice() {
        let mut s = source(&["rtmp://a/live", "rtmp://b/live", "rtmp://c/live"]);
        let ring = OriginRing::new(s.origins().to_vec());
        let first = ring.pick("cam", 0).unwrap().to_owned();
        let t0 = Instant::now();
        assert_eq!(
            s.start(1, t0),
            vec![PullStep::Connect {
                link: 1,
                url: first
            }]
        );
        assert_eq!(s.state, UpstreamState::Connecting);
    }

    #[test]
    fn a_connect_error_falls_over_after_a_backoff() {
        let mut s = source(&["rtmp://a/live", "rtmp://b/live"]);
        let t0 = Instant::now();
        s.start(1, t0);
        let first = s.url.clone();
        let steps = s.on_failure(1, LinkFailure::Error("refused".into()), t0);
        assert_eq!(steps, vec![PullStep::Disconnect { link: 1 }]);
        assert_eq!(s.state, UpstreamState::Backoff);
        assert!(s.poll(t0 + MS, 1, 2).is_empty(), "waits for the backoff");
        let steps = s.poll(t0 + FIRST_RETRY, 1, 2);
        let PullStep::Connect { link: 2, url } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_ne!(*url, first, "the next origin on the ring");
        assert_eq!(s.retries, 1);
        // A late failure of the old link changes nothing.
        assert!(
            s.on_failure(1, LinkFailure::Error("late".into()), t0)
                .is_empty()
        );
    }

    #[test]
    fn no_media_counts_as_a_failure_and_media_resets_the_backoff() {
        let mut s = source(&["rtmp://a/live", "rtmp://b/live"]);
        let t0 = Instant::now();
        s.start(1, t0);
        assert!(s.poll(t0 + 2999 * MS, 1, 2).is_empty());
        let steps = s.poll(t0 + 3000 * MS, 1, 2);
        assert_eq!(steps, vec![PullStep::Disconnect { link: 1 }]);
        assert!(s.last_error.contains("no media within 3000 ms"));
        let t1 = t0 + 4000 * MS;
        s.poll(t1, 1, 2);
        assert_eq!(s.state, UpstreamState::Connecting);
        assert!(s.on_media(2, 100, t1), "first media of the link");
        assert!(!s.on_media(2, 100, t1));
        assert!(!s.on_media(1, 100, t1), "the old link is gone");
        assert_eq!((s.state, s.bytes), (UpstreamState::Playing, 200));
        // Silent for pull_no_input_ms while playing: fall over.
        let steps = s.poll(t1 + 3000 * MS, 1, 3);
        assert_eq!(steps, vec![PullStep::Disconnect { link: 2 }]);
    }

    #[test]
    fn a_loop_refuses_the_viewers_and_stops_without_retrying() {
        let mut s = source(&["rtmp://a/live"]);
        let t0 = Instant::now();
        s.start(1, t0);
        let failure = LinkFailure::from_status(
            "NetConnection.Connect.Rejected",
            "relay loop: this server is already on the path",
        );
        let steps = s.on_failure(1, failure, t0);
        assert_eq!(steps.len(), 3);
        assert!(
            matches!(&steps[1], PullStep::RefuseViewers(why) if why.starts_with(LOOP_DESCRIPTION))
        );
        assert_eq!(steps[2], PullStep::Stop);
        assert!(s.poll(t0 + 60_000 * MS, 1, 2).is_empty(), "no retry");
    }

    #[test]
    fn statuses_are_told_apart() {
        assert!(matches!(
            LinkFailure::from_status("NetStream.Play.StreamNotFound", "x"),
            LinkFailure::NotFound(_)
        ));
        assert!(matches!(
            LinkFailure::from_status("NetStream.Play.Failed", "relay loop: 9 hops"),
            LinkFailure::Loop(_)
        ));
        assert!(matches!(
            LinkFailure::from_status("NetConnection.Connect.Rejected", "no"),
            LinkFailure::Error(_)
        ));
    }

    #[test]
    fn a_pull_lingers_after_its_last_viewer_then_stops() {
        let mut s = source(&["rtmp://a/live"]);
        let t0 = Instant::now();
        s.start(1, t0);
        s.on_media(1, 10, t0);
        assert!(s.poll(t0 + MS, 0, 2).is_empty());
        s.on_media(1, 10, t0 + 2000 * MS);
        // A viewer came back: the linger starts over when it leaves.
        assert!(s.poll(t0 + 2500 * MS, 1, 2).is_empty());
        assert!(s.poll(t0 + 2600 * MS, 0, 2).is_empty());
        for i in 1..5 {
            s.on_media(1, 10, t0 + 2600 * MS + i * 2000 * MS);
        }
        assert!(s.poll(t0 + 12_599 * MS, 0, 2).is_empty());
        assert_eq!(
            s.poll(t0 + 12_600 * MS, 0, 2),
            vec![PullStep::Disconnect { link: 1 }, PullStep::Stop]
        );
        assert_eq!(s.state, UpstreamState::Stopped);
    }

    #[test]
    fn retries_stop_when_nobody_watches_but_static_pulls_go_on() {
        let t0 = Instant::now();
        let mut s = source(&["rtmp://a/live"]);
        s.start(1, t0);
        s.on_failure(1, LinkFailure::Error("down".into()), t0);
        let steps = s.poll(t0 + MS, 0, 2);
        assert_eq!(steps.last(), Some(&PullStep::Stop));

        let mut s = source(&["rtmp://a/live"]);
        s.is_static = true;
        s.start(1, t0);
        s.on_failure(1, LinkFailure::Error("down".into()), t0);
        let mut t = t0;
        for link in 2..40 {
            t += 20_000 * MS;
            let steps = s.poll(t, 0, link);
            assert!(steps.iter().all(|s| *s != PullStep::Stop));
        }
        assert!(s.retries > 0);
    }

    #[test]
    fn backoff_is_capped() {
        let mut s = source(&["rtmp://a/live"]);
        let mut t = Instant::now();
        s.start(1, t);
        for link in 2..30u64 {
            s.on_failure(link - 1, LinkFailure::Error("down".into()), t);
            let next = s.next_deadline(t).unwrap();
            assert!(next <= t + 10_000 * MS);
            // Walk to the retry.
            let mut steps = Vec::new();
            while steps.is_empty() {
                t += 100 * MS;
                steps = s.poll(t, 1, link);
            }
            assert!(matches!(steps[0], PullStep::Connect { .. }));
            assert!(t <= next + 100 * MS + 10_000 * MS);
        }
    }

    #[test]
    fn hostile_error_text_is_cut() {
        let mut s = source(&["rtmp://a/live"]);
        let t0 = Instant::now();
        s.start(1, t0);
        s.on_failure(1, LinkFailure::Error("é".repeat(10_000)), t0);
        assert!(s.last_error.len() <= MAX_ERROR_LEN);
    }
}
