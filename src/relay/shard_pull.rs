//! The shard's side of an edge pull: the audience it counts, the pull it claims, and the
//! pulled stream it serves as a source like a local publisher.
//!
//! A viewer of a stream in an application with `pull` origins is counted in the host's
//! directory; the first one, when no publisher has the stream, claims its pull for its
//! shard (`StreamDirectory::watch_and_claim_pull`), which then keeps the stream's
//! [`UpstreamSource`] and carries out its [`PullStep`]s: `Output::OpenUpstream` and
//! `Output::CloseUpstream` for the driver's links, a message to every shard to refuse
//! their waiting viewers after a loop, and the end of the pull.
//!
//! What a link brings in goes where a publisher's messages go. Its first media makes this
//! shard the stream's origin exactly as a publish does (a directory claim with the pull's
//! own connection id, `OriginMoved` to every shard, the waiting viewers started), and every
//! message then goes through `ingest_media`/`ingest_data`: encoded once, GOP cache, rings,
//! fan-out to every shard and format. A failover is invisible to the viewers (the next
//! link's first media continues the same origin, its clock rebased so timestamps keep
//! going forward); the origin saying the stream was unpublished is an unpublish, with its
//! grace period, and its media coming back is a republish.

use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::rtmp::command::DataMessage;
use crate::rtmp::{ClientEvent, MessageType, RelayPath, RtmpMessage};

/// What an upstream link tells its shard.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// What the origin said, as the client role decoded it.
    Session(ClientEvent),
    /// The link failed or ended: connect error, broken connection, protocol error (the
    /// reason names the peer).
    Failed(String),
}

/// The seed of a pull's retry jitter: its stream and the node, so edges spread out.
fn seed(node_id: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

impl Shard {
    /// Counts `id`, a new viewer of `name`, in the host's audience of a pulled stream, and
    /// starts the pull when it is the first and nobody has the stream.
    pub(super) fn watch_pulled(&mut self, id: ClientId, name: &StreamName, now: Instant) {
        let Some(app) = self.config.app(app_of(name)).cloned() else {
            return;
        };
        if !app.pulls() || self.watching.contains_key(&id) {
            return;
        }
        self.watching.insert(id, name.clone());
        let claimed = self.directory.watch_and_claim_pull(name, self.id);
        if !claimed {
            return;
        }
        if self.directory.origin(name).is_some() && !self.pulls.contains_key(name) {
            // A local publisher (or its grace period) has the stream: no pull.
            self.directory.release_pull(name, self.id);
            return;
        }
        let path = self
            .clients
            .get(id.0)
            .map(|c| c.connect.relay_path.clone())
            .unwrap_or_default();
        self.start_pull(name, &app, path, false, now);
    }

    /// Starts the `pull_static` streams' pulls (the shard that claims each runs it).
    pub fn start_static_pulls(&mut self, now: Instant) {
        let config = self.config.clone();
        for (app_name, app) in &config.apps {
            for key in &app.pull_static {
                let name: StreamName = format!("{app_name}/{key}").into();
                if self.directory.claim_pull(&name, self.id) {
                    self.start_pull(&name, app, RelayPath::origin(), true, now);
                }
            }
        }
    }

    fn start_pull(
        &mut self,
        name: &StreamName,
        app: &AppConfig,
        viewer_path: RelayPath,
        is_static: bool,
        now: Instant,
    ) {
        let node_id = self.config.server.node_id.clone();
        let mut source = UpstreamSource::new(
            name.clone(),
            &app.pull,
            PullSettings::from_app(app),
            viewer_path.through(&node_id),
            is_static,
            seed(&node_id, name),
        );
        self.stats.pull_starts += 1;
        self.next_link += 1;
        let steps = source.start(self.next_link, now);
        tracing::info!(shard = self.id, stream = %name, origins = ?source.origins(), via = ?source.relay_path.nodes().join(","), is_static, "upstream pull started");
        self.pulls.insert(name.clone(), source);
        self.apply_pull_steps(name, steps, now);
        self.arm_pull(name, now);
    }

    fn arm_pull(&mut self, name: &StreamName, now: Instant) {
        let Some(at) = self.pulls.get(name).and_then(|p| p.next_deadline(now)) else {
            return;
        };
        if self.pull_timer.get(name).is_some_and(|&armed| armed <= at) {
            return;
        }
        self.pull_timer.insert(name.clone(), at);
        self.arm(at, Timer::Pull(name.clone()));
    }

    pub(super) fn poll_pull(&mut self, name: &StreamName, now: Instant) {
        let watchers = self.directory.watchers(name);
        let Some(source) = self.pulls.get_mut(name) else {
            return;
        };
        let steps = source.poll(now, watchers, self.next_link + 1);
        self.apply_pull_steps(name, steps, now);
        self.arm_pull(name, now);
    }

    fn apply_pull_steps(&mut self, name: &StreamName, steps: Vec<PullStep>, now: Instant) {
        for step in steps {
            match step {
                PullStep::Connect { link, url } => {
                    self.next_link = self.next_link.max(link);
                    let Some(source) = self.pulls.get(name) else {
                        continue;
                    };
                    let (key, relay_path) = (source.key.clone(), source.relay_path.clone());
                    match UpstreamUrl::parse(&url) {
                        Ok(url) => {
                            self.pull_links.insert(link, name.clone());
                            let tls_ca_file = url
                                .tls
                                .then(|| self.config.app(app_of(name)))
                                .flatten()
                                .map(|app| app.pull_tls_ca_file.clone());
                            self.outputs.push_back(Output::OpenUpstream {
                                link,
                                url,
                                key,
                                relay_path,
                                tls_ca_file,
                            });
                        }
                        Err(why) => {
                            // Validated at load; a reload cannot change a running pull.
                            self.pull_links.insert(link, name.clone());
                            self.handle_upstream(link, UpstreamEvent::Failed(why), now);
                        }
                    }
                }
                PullStep::Disconnect { link } => {
                    if self.pull_links.remove(&link).is_some() {
                        self.outputs.push_back(Output::CloseUpstream { link });
                    }
                }
                PullStep::RefuseViewers(why) => {
                    self.refuse_waiting(name, &why);
                    for shard in 0..self.shard_count {
                        self.send(
                            shard,
                            ShardMessage::UpstreamRefused {
                                stream: name.clone(),
                                why: why.clone(),
                            },
                        );
                    }
                }
                PullStep::Stop => self.stop_pull(name, now),
            }
        }
    }

    /// The pull of `name` is over: its claim goes, and a stream it fed ends.
    fn stop_pull(&mut self, name: &StreamName, now: Instant) {
        let Some(source) = self.pulls.remove(name) else {
            return;
        };
        self.pull_timer.remove(name);
        self.pull_links.retain(|_, n| n != name);
        self.directory.release_pull(name, self.id);
        tracing::info!(shard = self.id, stream = %name, url = %source.url, bytes = source.bytes, retries = source.retries, "upstream pull stopped");
        let conn = self.origins.get(name).and_then(|s| s.upstream);
        if let Some(conn) = conn {
            self.directory.release(name, conn);
            self.directory.remove_if_unpublished(name, self.id);
            self.end_stream(name, now);
        }
    }

    /// Something upstream link `link` reported.
    pub fn handle_upstream(&mut self, link: u64, event: UpstreamEvent, now: Instant) {
        let Some(name) = self.pull_links.get(&link).cloned() else {
            return;
        };
        let failure = match event {
            UpstreamEvent::Failed(why) => Some(LinkFailure::Error(why)),
            UpstreamEvent::Session(event) => match event {
                ClientEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => {
                    self.upstream_media(&name, link, kind, timestamp, payload, now);
                    None
                }
                ClientEvent::Data {
                    type_id,
                    timestamp,
                    payload,
                } => {
                    self.upstream_data(&name, type_id, timestamp, payload, now);
                    None
                }
                ClientEvent::ConnectFailed { code, description } => {
                    Some(LinkFailure::from_status(&code, &description))
                }
                ClientEvent::Status {
                    level,
                    code,
                    description,
                    ..
                } => {
                    if level == "error" {
                        Some(LinkFailure::from_status(&code, &description))
                    } else if code == status::PLAY_UNPUBLISH_NOTIFY || code == status::PLAY_STOP {
                        self.upstream_unpublished(&name, now);
                        None
                    } else {
                        None
                    }
                }
                ClientEvent::StreamEof(_) => {
                    self.upstream_unpublished(&name, now);
                    None
                }
                _ => None,
            },
        };
        if let Some(failure) = failure {
            let Some(source) = self.pulls.get_mut(&name) else {
                return;
            };
            let url = source.url.clone();
            let steps = source.on_failure(link, failure, now);
            if !steps.is_empty() {
                self.stats.pull_failures += 1;
                // The origin's words, as kept: cut to a bounded length.
                let why = source.last_error.clone();
                tracing::warn!(shard = self.id, stream = %name, upstream = %url, "upstream pull failed: {why}");
            }
            self.apply_pull_steps(&name, steps, now);
        }
        self.arm_pull(&name, now);
    }

    fn upstream_media(
        &mut self,
        name: &StreamName,
        link: u64,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
        now: Instant,
    ) {
        let Some(source) = self.pulls.get_mut(name) else {
            return;
        };
        let first = source.on_media(link, payload.len(), now);
        if first {
            let url = source.url.clone();
            tracing::info!(shard = self.id, stream = %name, upstream = %url, "upstream media flowing");
            if !self.upstream_live(name, now) {
                return;
            }
        }
        if !self.is_pulled_here(name) {
            return;
        }
        if kind == MediaKind::Video
            && let Some(source) = self.pulls.get_mut(name)
            && source.awaiting_keyframe
        {
            match inspect_video(&payload) {
                Some(info) if info.is_keyframe() => source.awaiting_keyframe = false,
                Some(info) if info.is_sequence_header => {}
                _ => return,
            }
        }
        self.ingest_media(name, kind, timestamp, payload, now);
    }

    fn upstream_data(
        &mut self,
        name: &StreamName,
        type_id: u8,
        timestamp: u32,
        payload: Bytes,
        now: Instant,
    ) {
        let msg = RtmpMessage::new(type_id, SHARED_STREAM_ID, timestamp, payload.clone());
        let Ok(data) = DataMessage::parse(&msg) else {
            return;
        };
        let (payload, metadata) = match data.metadata_for_viewers() {
            Some(meta) => (meta, true),
            None if type_id == MessageType::DataAmf0.id() => (payload, false),
            None => (data.encode(), false),
        };
        let pulled_here = self.is_pulled_here(name);
        if let Some(source) = self.pulls.get_mut(name) {
            source.bytes += payload.len() as u64;
            if metadata && !pulled_here {
                // Metadata comes before the first media: kept for when the stream starts.
                source.metadata = Some((timestamp, payload));
                return;
            }
        }
        if pulled_here {
            self.ingest_data(name, timestamp, payload, metadata, now);
        }
    }

    /// Whether this shard is the live origin of `name` with a pull as its source.
    fn is_pulled_here(&self, name: &StreamName) -> bool {
        self.pulls.get(name).is_some_and(|p| p.live)
            && self.origins.get(name).is_some_and(|s| s.upstream.is_some())
    }

    /// The first media of a link: the stream is live from the pull, as a publish makes it
    /// (or it continues, after a failover). False if a local publisher has the stream.
    fn upstream_live(&mut self, name: &StreamName, now: Instant) -> bool {
        let live = self.pulls.get(name).is_some_and(|p| p.live);
        if live
            && let Some(state) = self.origins.get_mut(name)
            && state.upstream.is_some()
        {
            // A failover: same stream, new origin; its clock follows the old one, and its
            // video starts at a keyframe.
            state.origin.republish();
            if let Some(source) = self.pulls.get_mut(name) {
                source.awaiting_keyframe = true;
            }
            return true;
        }
        let conn = match self.origins.get(name).and_then(|s| s.upstream) {
            Some(conn) => conn,
            None => {
                self.next_conn += 1;
                ((self.id as u64) << 48) | (1 << 47) | self.next_conn
            }
        };
        let policy = TakeoverPolicy {
            immediate: false,
            idle_ms: u64::MAX,
        };
        let (claim, clock) = self
            .directory
            .claim(name, self.id, conn, self.now_ms(now), policy);
        let Some(clock) = clock else {
            tracing::warn!(shard = self.id, stream = %name, "a local publisher has the stream: the pulled media is dropped");
            return false;
        };
        let (sid, state) = self.take_origin(name, &clock, &claim, now);
        state.upstream = Some(conn);
        if let Some(s) = self.streams.get_mut(sid.0) {
            s.become_origin();
        }
        let was_live = self.streams.get(sid.0).is_some_and(|s| s.live);
        if !was_live {
            let event = self
                .origins
                .get_mut(name)
                .map(|s| s.origin.event(StreamEvent::Republished));
            if let Some(event) = event {
                self.push_entry(name, event, now);
            }
        }
        let moved = match claim {
            Claim::Resumed { previous_origin }
            | Claim::TookOver {
                previous_origin, ..
            } => previous_origin != self.id,
            _ => false,
        };
        if matches!(claim, Claim::New) || moved {
            self.announce_origin(name);
        }
        if let Some(source) = self.pulls.get_mut(name) {
            source.live = true;
        }
        let metadata = self.pulls.get_mut(name).and_then(|p| p.metadata.take());
        if let Some((timestamp, payload)) = metadata {
            self.ingest_data(name, timestamp, payload, true, now);
        }
        self.start_waiting(sid, now);
        true
    }

    /// The origin said the stream was unpublished: the edge's viewers get an unpublish,
    /// with its grace period; the pull listens on (its media again is a republish).
    fn upstream_unpublished(&mut self, name: &StreamName, now: Instant) {
        if let Some(source) = self.pulls.get_mut(name) {
            source.on_unpublished();
            source.live = false;
        }
        let Some(conn) = self.origins.get(name).and_then(|s| s.upstream) else {
            return;
        };
        if !self.directory.release(name, conn) {
            return;
        }
        let Some(state) = self.origins.get_mut(name) else {
            return;
        };
        state.grace_epoch += 1;
        let epoch = state.grace_epoch;
        let event = state.origin.event(StreamEvent::Unpublished);
        tracing::info!(shard = self.id, stream = %name, "the origin unpublished the stream; viewers wait for the grace period");
        self.push_entry(name, event, now);
        let grace = self
            .config
            .app(app_of(name))
            .map(AppConfig::unpublish_grace)
            .unwrap_or(Duration::from_secs(5));
        self.arm(
            now + grace,
            Timer::Grace {
                name: name.clone(),
                epoch,
            },
        );
    }

    /// The pull of `name` was refused for good: its waiting viewers here are refused too.
    pub(super) fn refuse_waiting(&mut self, name: &StreamName, why: &str) {
        let Some(&sid) = self.stream_ids.get(name) else {
            return;
        };
        let Some(s) = self.streams.get_mut(sid.0) else {
            return;
        };
        let waiting = std::mem::take(&mut s.waiting);
        for id in waiting {
            let Some(c) = self.clients.get_mut(id.0) else {
                continue;
            };
            let Role::Viewer { stream_id, .. } = c.role else {
                continue;
            };
            if c.http.is_some() {
                let cors = Cors {
                    allow_origin: &self.config.http.cors_allow_origin,
                };
                c.queue.push_pending(response::error(502, why, &cors));
            } else {
                c.session.reject_play(stream_id, status::PLAY_FAILED, why);
                c.queue_session_output();
            }
            tracing::info!(shard = self.id, peer = %c.addr, stream = %name, "viewer refused: the upstream pull was refused: {why}");
            self.close(id, format!("upstream pull refused: {why}"));
        }
    }

    /// Closes every upstream link (shutdown).
    pub(super) fn close_upstreams(&mut self) {
        for (link, _) in self.pull_links.drain() {
            self.outputs.push_back(Output::CloseUpstream { link });
        }
    }

    /// What the API shows of the pull of `name`, when this shard runs it.
    pub(super) fn upstream_info(&self, name: &StreamName) -> Option<UpstreamInfo> {
        self.pulls.get(name).map(|p| UpstreamInfo {
            url: p.url.clone(),
            state: p.state.as_str(),
            retries: p.retries,
            bytes: p.bytes,
            last_error: p.last_error.clone(),
        })
    }

    /// Pulls this shard runs.
    pub(super) fn pulls_active(&self) -> usize {
        self.pulls.len()
    }
}
