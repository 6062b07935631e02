//! The shard as a state machine, tested without sockets or a real clock: real protocol
//! clients (`ClientSession`) talk to real shards through an in-memory wire, the shards'
//! messages to each other are delivered by hand, and time moves only when a test says so.
//! The module is declared under `#[cfg(test)]` in `relay/mod.rs`: it reads the real clock
//! once, for the fake clock's start.

use std::collections::{HashMap, HashSet};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::client::{ClientId, RoleKind};
use super::directory::StreamDirectory;
use super::message::ShardMessage;
use super::shard::{Output, Shard};
use super::snapshot::{ShardSnapshot, streams_across};
use super::write_queue::Transmit;
use crate::access::callback::{CallbackAnswer, CallbackRequest};
use crate::config::Config;
use crate::rtmp::command::status;
use crate::rtmp::{ClientEvent, ClientSession, ClientSessionConfig, MediaKind};

const AVC_HEADER: &[u8] = &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f];
const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

fn keyframe(n: u8) -> Bytes {
    Bytes::from(vec![0x17, 1, 0, 0, 0, n, n, n])
}

fn inter(n: u8) -> Bytes {
    Bytes::from(vec![0x27, 1, 0, 0, 0, n, n])
}

fn audio(n: u8) -> Bytes {
    Bytes::from(vec![0xAF, 1, n])
}

/// The sockets of every shard, in memory: what each client has been sent.
#[derive(Default)]
struct Wire {
    sent: HashMap<(usize, ClientId), BytesMut>,
    /// Clients whose socket takes nothing.
    full: HashSet<(usize, ClientId)>,
    /// Clients the relay closed (and whose socket is gone).
    closed: HashSet<(usize, ClientId)>,
    writes_to_closed: usize,
}

struct ShardWire<'a> {
    shard: usize,
    wire: &'a mut Wire,
}

impl Transmit for ShardWire<'_> {
    fn send(&mut self, client: ClientId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let key = (self.shard, client);
        if self.wire.closed.contains(&key) {
            self.wire.writes_to_closed += 1;
            return Err(io::ErrorKind::NotConnected.into());
        }
        if self.wire.full.contains(&key) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let out = self.wire.sent.entry(key).or_default();
        let mut n = 0;
        for b in bufs {
            out.extend_from_slice(b);
            n += b.len();
        }
        Ok(n)
    }
}

struct World {
    now: Instant,
    shards: Vec<Shard>,
    wire: Wire,
    files: HashMap<PathBuf, Bytes>,
    /// The file each HTTP download reads, by shard and client.
    downloads: HashMap<(usize, ClientId), PathBuf>,
    next_port: u16,
    /// Reads the shards asked for and have not been answered (to answer late).
    held_reads: Vec<(usize, Output)>,
    hold_reads: bool,
    /// Access callbacks asked for and not answered yet: (shard, client, ticket, request).
    callbacks: Vec<(usize, ClientId, u64, CallbackRequest)>,
    /// Fire-and-forget notifications asked for.
    notices: Vec<CallbackRequest>,
    /// Push connections asked for: (shard, stream, index, attempt, host, port).
    forward_connects: Vec<(usize, String, usize, u64, String, u16)>,
    /// Upstream links opened (shard, link, url, key) and closed (link), in order.
    upstream_opened: Vec<(usize, u64, String, String)>,
    upstream_closed: Vec<u64>,
}

struct TestClient {
    shard: usize,
    id: ClientId,
    session: ClientSession,
    events: Vec<ClientEvent>,
    closed: bool,
}

impl TestClient {
    fn statuses(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Status { code, .. } => Some(code.as_str()),
                _ => None,
            })
            .collect()
    }

    fn media(&self) -> Vec<(MediaKind, u32, Bytes)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Media {
                    kind,
                    timestamp,
                    payload,
                } => Some((*kind, *timestamp, payload.clone())),
                _ => None,
            })
            .collect()
    }

    fn has(&self, pred: impl Fn(&ClientEvent) -> bool) -> bool {
        self.events.iter().any(pred)
    }
}

const CONFIG: &str = r#"
[server]
handshake_timeout_ms = 5000
idle_connection_timeout_ms = 10000

[viewer]
backlog_max_bytes = 65536
backlog_max_ms = 1000
lag_disconnect_ms = 2000

[app.live]
unpublish_grace_ms = 3000
wait_for_publisher_ms = 4000
publisher_idle_timeout_ms = 6000
takeover_idle_ms = 1000
"#;

impl World {
    fn new(shards: usize) -> World {
        World::with_config(shards, CONFIG)
    }

    fn with_config(shards: usize, config: &str) -> World {
        let config = Arc::new(Config::from_toml_str(config).expect("test config"));
        let directory = Arc::new(StreamDirectory::new());
        let now = Instant::now();
        World {
            now,
            shards: (0..shards)
                .map(|id| Shard::new(id, shards, config.clone(), directory.clone(), now))
                .collect(),
            wire: Wire::default(),
            files: HashMap::new(),
            downloads: HashMap::new(),
            next_port: 40000,
            held_reads: Vec::new(),
            hold_reads: false,
            callbacks: Vec::new(),
            notices: Vec::new(),
            forward_connects: Vec::new(),
            upstream_opened: Vec::new(),
            upstream_closed: Vec::new(),
        }
    }

    /// Carries out every shard's outputs until none is left, as the driver would.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.shards.len() {
                while let Some(out) = self.shards[i].poll_output() {
                    busy = true;
                    self.carry_out(i, out);
                }
            }
            if !busy {
                break;
            }
        }
    }

    fn carry_out(&mut self, i: usize, out: Output) {
        let now = self.now;
        match out {
            Output::Send { to, message } => self.shards[to].handle_message(message, now),
            Output::FanOut => {
                let mut wire = ShardWire {
                    shard: i,
                    wire: &mut self.wire,
                };
                while self.shards[i].fan_out(now, &mut wire, 3) {}
            }
            Output::WaitWritable(_)
            | Output::Playing(_)
            | Output::CloseFile(_)
            | Output::Record(_) => {}
            Output::Callback {
                client,
                ticket,
                request,
            } => self.callbacks.push((i, client, ticket, request)),
            Output::Notify(request) => self.notices.push(request),
            Output::ForwardConnect {
                stream,
                index,
                attempt,
                host,
                port,
                ..
            } => self
                .forward_connects
                .push((i, stream.to_string(), index, attempt, host, port)),
            Output::OpenUpstream { link, url, key, .. } => {
                self.upstream_opened.push((i, link, url.tc_url, key))
            }
            Output::CloseUpstream { link } => self.upstream_closed.push(link),
            Output::Close(id) => {
                let mut wire = ShardWire {
                    shard: i,
                    wire: &mut self.wire,
                };
                self.shards[i].write_goodbye(id, &mut wire);
                self.shards[i].remove_client(id, now);
                self.wire.closed.insert((i, id));
            }
            Output::OpenVod {
                request,
                dir,
                candidates,
            } => {
                // The driver's lookup and index, from the in-memory files.
                let found = candidates.iter().find_map(|c| {
                    let path = dir.join(c);
                    let data = self.files.get(&path)?.clone();
                    let index = crate::media::vod_index::index_flv(
                        std::io::Cursor::new(data.clone()),
                        data.len() as u64,
                    )
                    .ok()?;
                    Some((Arc::from(path.as_path()), Arc::new(index)))
                });
                let mut wire = ShardWire {
                    shard: i,
                    wire: &mut self.wire,
                };
                self.shards[i].handle_vod_opened(request, Ok(found), now, &mut wire);
            }
            Output::OpenDownload { client, dir, file } => {
                let path = dir.join(&file);
                let len = self.files.get(&path).map(|d| d.len() as u64);
                self.downloads.insert((i, client), path);
                let mut wire = ShardWire {
                    shard: i,
                    wire: &mut self.wire,
                };
                let result = len.ok_or_else(|| "no such file".to_owned());
                self.shards[i].handle_download_opened(client, result, now, &mut wire);
            }
            Output::ReadDownload {
                client,
                offset,
                len,
            } => {
                let data = self
                    .downloads
                    .get(&(i, client))
                    .and_then(|p| self.files.get(p))
                    .cloned()
                    .unwrap_or_default();
                let start = (offset as usize).min(data.len());
                let end = (start + len).min(data.len());
                let mut wire = ShardWire {
                    shard: i,
                    wire: &mut self.wire,
                };
                self.shards[i].handle_download_read(
                    client,
                    offset,
                    Ok(data.slice(start..end)),
                    now,
                    &mut wire,
                );
            }
            read @ Output::ReadFile { .. } if self.hold_reads => self.held_reads.push((i, read)),
            Output::ReadFile {
                stream,
                path,
                offset,
                len,
            } => {
                let data = self.files.get(&*path).cloned().unwrap_or_default();
                let start = (offset as usize).min(data.len());
                let end = (start + len).min(data.len());
                let read = super::vod_source::FileBuffer::from(&data[start..end]);
                self.shards[i].handle_file_read(stream, offset, Ok(read), now);
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        // Small steps, so timers fire in order and the clients keep reading.
        let step = Duration::from_millis(10);
        let end = self.now + by;
        while self.now < end {
            self.now = (self.now + step).min(end);
            for s in &mut self.shards {
                s.handle_timeout(self.now);
            }
            self.settle();
        }
    }

    fn connect(&mut self, shard: usize) -> TestClient {
        self.next_port += 1;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.next_port));
        let id = self.shards[shard].accept(addr, self.now).expect("accepted");
        TestClient {
            shard,
            id,
            session: ClientSession::new(ClientSessionConfig::new("live", "rtmp://127.0.0.1/live")),
            events: Vec::new(),
            closed: false,
        }
    }

    /// Moves bytes both ways between the client and its shard until both are quiet.
    fn exchange(&mut self, c: &mut TestClient) {
        loop {
            let mut moved = false;
            if !self.wire.closed.contains(&(c.shard, c.id)) {
                while let Some(bytes) = c.session.poll_transmit() {
                    moved = true;
                    let mut wire = ShardWire {
                        shard: c.shard,
                        wire: &mut self.wire,
                    };
                    self.shards[c.shard].handle_input(c.id, bytes, self.now, &mut wire);
                    self.settle();
                }
            }
            if let Some(got) = self.wire.sent.get_mut(&(c.shard, c.id))
                && !got.is_empty()
            {
                moved = true;
                let bytes = got.split().freeze();
                c.session.feed(bytes).expect("the relay speaks RTMP");
                while let Some(ev) = c.session.poll_event() {
                    c.events.push(ev);
                }
            }
            if !moved {
                break;
            }
        }
        c.closed = self.wire.closed.contains(&(c.shard, c.id));
    }

    fn exchange_all(&mut self, clients: &mut [&mut TestClient]) {
        for c in clients.iter_mut() {
            self.exchange(c);
        }
    }

    fn publisher(&mut self, shard: usize, key: &str) -> TestClient {
        let mut c = self.connect(shard);
        c.session.publish(key);
        self.exchange(&mut c);
        c
    }

    fn viewer(&mut self, shard: usize, key: &str) -> TestClient {
        let mut c = self.connect(shard);
        c.session.play(key);
        self.exchange(&mut c);
        c
    }

    fn send(&mut self, c: &mut TestClient, kind: MediaKind, ts: u32, payload: Bytes) {
        c.session.send_media(kind, ts, payload);
        self.exchange(c);
    }

    /// Codec headers and a first keyframe.
    fn start_media(&mut self, c: &mut TestClient, ts: u32) {
        self.send(c, MediaKind::Video, ts, Bytes::from_static(AVC_HEADER));
        self.send(c, MediaKind::Audio, ts, Bytes::from_static(AAC_HEADER));
        self.send(c, MediaKind::Video, ts, keyframe(1));
    }

    /// The client goes away (its socket closed).
    fn disconnect(&mut self, c: &mut TestClient) {
        self.shards[c.shard].handle_read_end(c.id, "the peer closed the connection".into());
        self.settle();
        c.closed = true;
    }

    /// Answers the oldest pending callback, as the driver would once the backend replied.
    fn answer_callback(&mut self, answer: CallbackAnswer) {
        let (shard, client, ticket, _) = self.callbacks.remove(0);
        let mut wire = ShardWire {
            shard,
            wire: &mut self.wire,
        };
        self.shards[shard].handle_callback_answer(client, ticket, answer, self.now, &mut wire);
        self.settle();
    }

    fn snapshots(&self) -> Vec<ShardSnapshot> {
        self.shards
            .iter()
            .map(|s| s.snapshot(self.now, true))
            .collect()
    }
}

#[test]
fn publish_play_leave() {
    let mut w = World::new(1);
    let mut p = w.publisher(0, "a");
    assert!(p.has(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    w.start_media(&mut p, 0);
    let mut v = w.viewer(0, "a");
    assert!(v.has(|e| matches!(e, ClientEvent::PlayStarted { .. })));
    let got = v.media();
    assert_eq!(got.len(), 3, "headers and the cached keyframe: {got:?}");
    assert_eq!(got[2].2, keyframe(1));
    w.send(&mut p, MediaKind::Video, 40, inter(2));
    w.send(&mut p, MediaKind::Audio, 50, audio(3));
    w.send(&mut p, MediaKind::Video, 80, inter(4));
    w.exchange(&mut v);
    let tail: Vec<Bytes> = v.media().into_iter().skip(3).map(|m| m.2).collect();
    assert_eq!(tail, vec![inter(2), audio(3), inter(4)]);

    let snap = &w.snapshots()[0];
    assert_eq!(snap.clients.len(), 2);
    assert!(snap.clients.iter().any(|c| c.role == RoleKind::Viewer));
    let stream = &snap.streams[0];
    assert_eq!(&*stream.name, "live/a");
    assert!(stream.origin && stream.live);
    assert_eq!(stream.viewers, 1);
    assert_eq!(
        stream.publisher.as_ref().map(|p| p.id),
        Some(snap.clients[0].id)
    );
    assert!(stream.bytes_in > 0 && stream.bytes_out > 0);

    w.disconnect(&mut v);
    let snap = &w.snapshots()[0];
    assert_eq!(snap.clients.len(), 1, "the viewer is gone");
    assert_eq!(snap.streams[0].viewers, 0);
    w.disconnect(&mut p);
    w.advance(Duration::from_secs(4));
    let snap = &w.snapshots()[0];
    assert!(
        snap.clients.is_empty() && snap.streams.is_empty(),
        "{snap:?}"
    );
    assert_eq!(w.wire.writes_to_closed, 0);
}

#[test]
fn a_viewer_waits_for_the_publisher_then_gives_up_at_its_deadline() {
    let mut w = World::new(1);
    let mut v = w.viewer(0, "b");
    assert!(!v.has(|e| matches!(e, ClientEvent::PlayStarted { .. })));
    assert!(w.snapshots()[0].clients.iter().any(|c| c.waiting));
    w.advance(Duration::from_secs(1));
    let mut p = w.publisher(0, "b");
    w.start_media(&mut p, 0);
    w.exchange(&mut v);
    assert!(v.has(|e| matches!(e, ClientEvent::PlayStarted { .. })));
    assert_eq!(v.media().len(), 3);

    let mut late = w.viewer(0, "nobody");
    w.advance(Duration::from_millis(3900));
    w.exchange(&mut late);
    assert!(!late.closed, "still within wait_for_publisher_ms");
    w.advance(Duration::from_millis(200));
    w.exchange(&mut late);
    assert!(late.closed);
    assert!(late.statuses().contains(&status::PLAY_STREAM_NOT_FOUND));
}

#[test]
fn viewers_on_another_shard_get_the_origins_frames_and_follow_it_when_it_moves() {
    let mut w = World::new(2);
    let mut p = w.publisher(0, "c");
    w.start_media(&mut p, 0);
    let mut v = w.viewer(1, "c");
    w.exchange(&mut v);
    assert!(v.has(|e| matches!(e, ClientEvent::PlayStarted { .. })));
    w.send(&mut p, MediaKind::Video, 40, inter(2));
    w.exchange(&mut v);
    assert_eq!(v.media().len(), 4);
    let totals = streams_across(&w.snapshots());
    assert_eq!(totals[0].viewers_per_shard, vec![0, 1]);
    assert_eq!(totals[0].origin, Some(0));

    // The publisher leaves; its replacement lands on shard 1 within the grace period.
    w.disconnect(&mut p);
    w.exchange(&mut v);
    assert!(v.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
    assert!(v.has(|e| matches!(e, ClientEvent::StreamEof(_))));
    w.advance(Duration::from_secs(1));
    let mut p2 = w.publisher(1, "c");
    assert!(p2.has(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    w.start_media(&mut p2, 0);
    w.send(&mut p2, MediaKind::Video, 40, inter(3));
    w.exchange(&mut v);
    assert!(v.statuses().contains(&status::PLAY_PUBLISH_NOTIFY));
    let media = v.media();
    assert_eq!(media.last().map(|m| m.2.clone()), Some(inter(3)));
    let video: Vec<u32> = media
        .iter()
        .filter(|m| m.0 == MediaKind::Video)
        .map(|m| m.1)
        .collect();
    assert!(
        video.windows(2).all(|p| p[0] <= p[1]),
        "timestamps keep going forward across the move: {video:?}"
    );
    assert_eq!(streams_across(&w.snapshots())[0].origin, Some(1));
    w.advance(Duration::from_secs(5));
    w.exchange(&mut v);
    assert!(!v.closed, "the stream lives on at its new origin");
}

#[test]
fn a_silent_publisher_is_taken_over_from_another_shard() {
    let mut w = World::new(2);
    let mut a = w.publisher(0, "d");
    w.start_media(&mut a, 0);
    let mut v = w.viewer(0, "d");
    let b = w.publisher(1, "d");
    assert!(
        b.statuses().contains(&status::PUBLISH_BAD_NAME),
        "an active publisher keeps its key"
    );
    w.advance(Duration::from_millis(1100));
    let mut b = w.publisher(1, "d");
    assert!(b.has(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    w.exchange(&mut a);
    assert!(a.closed, "the old publisher is closed");
    w.start_media(&mut b, 0);
    w.send(&mut b, MediaKind::Video, 40, inter(9));
    w.exchange(&mut v);
    assert!(!v.closed);
    assert_eq!(v.media().last().map(|m| m.2.clone()), Some(inter(9)));
    let totals = streams_across(&w.snapshots());
    assert_eq!(totals[0].origin, Some(1));
    assert!(totals[0].publisher.is_some());
}

#[test]
fn unpublish_grace_and_republish_to_the_same_viewers_then_the_end() {
    let mut w = World::new(1);
    let mut p = w.publisher(0, "e");
    w.start_media(&mut p, 1000);
    let mut v = w.viewer(0, "e");
    w.disconnect(&mut p);
    w.exchange(&mut v);
    assert!(v.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
    w.advance(Duration::from_secs(2));
    let mut p = w.publisher(0, "e");
    w.start_media(&mut p, 0);
    w.exchange(&mut v);
    assert!(v.statuses().contains(&status::PLAY_PUBLISH_NOTIFY));
    let last = v.media().last().cloned().unwrap();
    assert_eq!(last.2, keyframe(1));
    assert!(
        last.1 >= 1000,
        "the new publisher continues the clock: {}",
        last.1
    );

    w.disconnect(&mut p);
    w.advance(Duration::from_millis(2900));
    w.exchange(&mut v);
    assert!(!v.closed, "within the grace period");
    w.advance(Duration::from_millis(200));
    w.exchange(&mut v);
    assert!(v.closed, "the publisher did not come back");
    assert!(w.snapshots()[0].streams.is_empty());
}

#[test]
fn a_viewer_that_joins_in_the_grace_period_waits_and_gets_the_returning_publisher_whole() {
    let mut w = World::new(1);
    let mut p = w.publisher(0, "g");
    w.start_media(&mut p, 0);
    for i in 1..20u32 {
        w.send(&mut p, MediaKind::Video, 40 * i, inter(i as u8));
        w.send(
            &mut p,
            MediaKind::Audio,
            40 * i,
            Bytes::from_static(&[0xAF, 1, 7]),
        );
    }
    w.disconnect(&mut p);
    // In the unpublish grace period: the stream is known, its ring holds the old publish.
    let mut v = w.viewer(0, "g");
    w.exchange(&mut v);
    assert!(v.media().is_empty(), "nothing of the previous publish");
    let dropped = |w: &World| -> u64 {
        w.snapshots()[0]
            .clients
            .iter()
            .map(|c| c.dropped_frames)
            .sum()
    };
    assert_eq!(dropped(&w), 0, "a waiting viewer has dropped nothing");
    // The publisher comes back: the viewer gets its headers, its keyframe and every frame
    // after it (no wait for a later keyframe).
    let mut p = w.publisher(0, "g");
    w.start_media(&mut p, 1000);
    for i in 1..5u32 {
        w.send(
            &mut p,
            MediaKind::Video,
            1000 + 40 * i,
            inter(100 + i as u8),
        );
    }
    w.exchange(&mut v);
    let video: Vec<Bytes> = v
        .media()
        .into_iter()
        .filter(|(k, _, _)| *k == MediaKind::Video)
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(video.len(), 6, "header, keyframe and 4 inter frames");
    assert_eq!(video[1], keyframe(1));
    assert_eq!(video[5], inter(104));
    assert_eq!(dropped(&w), 0);
}

#[test]
fn stream_names_with_control_characters_are_refused() {
    let mut w = World::new(1);
    let p = w.publisher(0, "cam\n2026-01-01T00:00:00Z INFO forged");
    assert!(p.statuses().contains(&status::PUBLISH_BAD_NAME));
    let v = w.viewer(0, "cam\u{85}");
    assert!(v.statuses().contains(&status::PLAY_STREAM_NOT_FOUND));
    let snap = &w.snapshots()[0];
    assert!(snap.streams.is_empty(), "no stream was made");
    assert!(
        snap.clients.iter().all(|c| c.role == RoleKind::Client),
        "neither publishes nor plays"
    );
    // The connections stay, and may ask again with a plain name.
    let mut p = p;
    p.session.publish("cam");
    w.exchange(&mut p);
    assert!(p.statuses().contains(&status::PUBLISH_START));
}

#[test]
fn a_slow_viewer_skips_to_a_keyframe_then_is_disconnected() {
    let mut w = World::new(1);
    let mut p = w.publisher(0, "f");
    w.start_media(&mut p, 0);
    let mut fast = w.viewer(0, "f");
    let mut slow = w.viewer(0, "f");
    w.wire.full.insert((0, slow.id));
    // Inter frames of 16 KiB past a 64 KiB backlog limit, then a keyframe.
    for i in 0..8u32 {
        let mut f = vec![0x27, 1, 0, 0, 0];
        f.resize(16 * 1024, i as u8);
        w.send(&mut p, MediaKind::Video, 40 * (i + 1), Bytes::from(f));
    }
    w.send(&mut p, MediaKind::Video, 400, keyframe(7));
    w.wire.full.remove(&(0, slow.id));
    w.shards[0].write_blocked(
        slow.id,
        w.now,
        &mut ShardWire {
            shard: 0,
            wire: &mut w.wire,
        },
    );
    w.settle();
    w.exchange_all(&mut [&mut fast, &mut slow]);
    assert_eq!(
        fast.media().len(),
        3 + 8 + 1,
        "the fast viewer got every frame"
    );
    let slow_video: Vec<Bytes> = slow
        .media()
        .into_iter()
        .filter(|m| m.0 == MediaKind::Video)
        .map(|m| m.2)
        .collect();
    assert_eq!(
        slow_video.last(),
        Some(&keyframe(7)),
        "resumed at the keyframe"
    );
    assert!(
        slow_video.len() < 1 + 1 + 8 + 1,
        "inter frames were skipped"
    );
    let dropped: u64 = w.snapshots()[0]
        .clients
        .iter()
        .map(|c| c.dropped_frames)
        .sum();
    assert!(dropped > 0);

    // Stalled for good: disconnected after lag_disconnect_ms, the publisher unaffected.
    w.wire.full.insert((0, slow.id));
    for i in 0..40u32 {
        let mut f = vec![0x27, 1, 0, 0, 0];
        f.resize(16 * 1024, 1);
        w.send(&mut p, MediaKind::Video, 500 + 40 * i, Bytes::from(f));
        w.advance(Duration::from_millis(100));
    }
    w.exchange_all(&mut [&mut fast, &mut slow, &mut p]);
    assert!(slow.closed, "the stalled viewer is disconnected");
    assert!(!fast.closed && !p.closed);
    assert_eq!(fast.media().len(), 12 + 40);
}

#[test]
fn shutdown_tells_every_client_and_closes_them() {
    let mut w = World::new(2);
    let mut p = w.publisher(0, "g");
    w.start_media(&mut p, 0);
    let mut v0 = w.viewer(0, "g");
    let mut v1 = w.viewer(1, "g");
    w.exchange(&mut v1);
    for s in &mut w.shards {
        s.handle_message(ShardMessage::Shutdown, w.now);
    }
    w.settle();
    w.exchange_all(&mut [&mut p, &mut v0, &mut v1]);
    assert!(p.closed && v0.closed && v1.closed);
    assert!(p.statuses().contains(&status::UNPUBLISH_SUCCESS));
    assert!(v0.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
    assert!(v1.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
    assert!(w.shards.iter().all(|s| s.client_count() == 0));
    assert!(
        w.shards[0]
            .accept(SocketAddr::from(([127, 0, 0, 1], 1)), w.now)
            .is_none()
    );
}

/// An FLV file of `tags` video frames 40 ms apart, a keyframe every 10.
fn flv_file(tags: u32) -> Bytes {
    use crate::media::flv::{FlvHeader, FlvTag, FlvWriter, TAG_TYPE_VIDEO};
    let mut w = FlvWriter::new(
        Vec::new(),
        FlvHeader {
            has_audio: false,
            has_video: true,
        },
    )
    .unwrap();
    for i in 0..tags {
        let payload = if i % 10 == 0 {
            keyframe(i as u8)
        } else {
            inter(i as u8)
        };
        w.write_tag(&FlvTag {
            tag_type: TAG_TYPE_VIDEO,
            timestamp: i * 40,
            payload,
        })
        .unwrap();
    }
    w.into_inner().into()
}

fn file_dir() -> PathBuf {
    std::env::temp_dir().join(format!("shardcast-shard-tests-{}", std::process::id()))
}

fn file_world() -> World {
    let dir = file_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("clip.flv"), b"only is_file() reads this").unwrap();
    let config = format!("{CONFIG}recordings_dir = {:?}\n", dir.display().to_string());
    let mut w = World::with_config(1, &config);
    w.files.insert(dir.join("clip.flv"), flv_file(100));
    w
}

#[test]
fn a_stored_file_plays_in_real_time_and_ends_with_play_stop() {
    let mut w = file_world();
    let mut v = w.viewer(0, "clip");
    assert!(v.has(|e| matches!(e, ClientEvent::PlayStarted { .. })));
    let early = v.media().len();
    // The client role says it buffers 3 s (Set Buffer Length): that much is sent at once,
    // and half a batch more (`VOD_PACE_BATCH`).
    let ahead = 3.0 + crate::performance::VOD_PACE_BATCH.as_secs_f64() / 2.0;
    let expected = (ahead * 25.0) as usize;
    assert!(
        (expected - 2..=expected + 2).contains(&early),
        "the player's 3 s buffer and half a batch at 25 tags a second: {early}"
    );
    // Nothing more until the lead is down to 3 s less half a batch.
    w.advance(Duration::from_millis(200));
    w.exchange(&mut v);
    assert_eq!(v.media().len(), early, "paced in real time");
    let snap = &w.snapshots()[0];
    assert!(snap.streams[0].file && snap.clients[0].role == RoleKind::FileViewer);
    w.advance(Duration::from_secs(3));
    w.exchange(&mut v);
    assert_eq!(v.media().len(), 100);
    assert!(v.statuses().contains(&status::PLAY_STOP));
    assert!(v.closed, "closed once it has read the end");
    assert!(w.snapshots()[0].streams.is_empty());
}

#[test]
fn a_second_play_replaces_a_stored_files_playback() {
    let mut w = file_world();
    let mut v = w.viewer(0, "clip");
    w.advance(Duration::from_millis(500));
    v.session.play("clip");
    w.exchange(&mut v);
    w.advance(Duration::from_millis(500));
    let snap = &w.snapshots()[0];
    assert!(
        snap.streams.iter().filter(|s| s.file).count() <= 1,
        "one playback at most, never the old one beside a new one: {snap:?}"
    );
}

#[test]
fn a_file_read_that_returns_after_its_viewer_left_reaches_no_one() {
    let mut w = file_world();
    w.hold_reads = true;
    let mut v = w.viewer(0, "clip");
    assert_eq!(w.held_reads.len(), 1, "the first read is in flight");
    w.disconnect(&mut v);
    // A new client takes the slot the viewer had.
    let mut fresh = w.connect(0);
    assert_eq!(fresh.id.slot(), v.id.slot());
    assert_ne!(fresh.id, v.id);
    w.hold_reads = false;
    let (shard, read) = w.held_reads.pop().unwrap();
    w.carry_out(shard, read);
    w.settle();
    w.advance(Duration::from_secs(2));
    assert!(
        w.wire.sent.get(&(0, fresh.id)).is_none_or(|b| b.is_empty()),
        "nothing was written to the newcomer before it said anything"
    );
    fresh.session.play("other");
    w.exchange(&mut fresh);
    assert!(fresh.media().is_empty(), "{:?}", fresh.events);
    assert_eq!(w.wire.writes_to_closed, 0);
}

/// Sends `msg` (built around a reply that lands in the returned channel) to shard `i`.
fn ask<T: Send + 'static>(
    w: &mut World,
    i: usize,
    msg: impl FnOnce(super::message::Reply<T>) -> ShardMessage,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let reply = super::message::Reply::new(move |v| {
        let _ = tx.send(v);
    });
    let now = w.now;
    w.shards[i].handle_message(msg(reply), now);
    w.settle();
    rx.try_recv().expect("the shard answered at once")
}

#[test]
fn a_data_message_put_in_by_the_admin_api_reaches_viewers_on_every_shard_in_order() {
    let mut w = World::new(2);
    let mut p = w.publisher(0, "chat");
    w.start_media(&mut p, 1000);
    let mut local = w.viewer(0, "chat");
    let mut remote = w.viewer(1, "chat");
    w.send(&mut p, MediaKind::Video, 1040, inter(2));
    let payload = crate::admin::data_message::data_message(
        br#"{"handler": "onTextData", "data": {"text": "hello"}}"#,
    )
    .unwrap();
    let name: super::directory::StreamName = "live/chat".into();
    let ts = ask(&mut w, 0, |reply| ShardMessage::InjectData {
        stream: name.clone(),
        payload,
        reply,
    })
    .expect("the origin takes it");
    assert_eq!(
        ts, 1040,
        "stamped with the stream's current media timestamp"
    );
    w.send(&mut p, MediaKind::Video, 1080, inter(3));
    w.exchange_all(&mut [&mut local, &mut remote, &mut p]);
    for v in [&local, &remote] {
        // The data message sits between the frames stamped 1040 and 1080.
        let order: Vec<String> = v
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Media { timestamp, .. } => Some(format!("m{timestamp}")),
                ClientEvent::Data { payload, .. }
                    if crate::rtmp::amf0::decode_all(payload)
                        .ok()?
                        .first()?
                        .as_str()
                        == Some("onTextData") =>
                {
                    Some("text".into())
                }
                _ => None,
            })
            .collect();
        let at = order.iter().position(|e| e == "text").expect("received");
        assert_eq!(order[at - 1], "m1040", "{order:?}");
        assert_eq!(order[at + 1], "m1080", "{order:?}");
    }
    // Not the origin, or no such stream: refused, nothing sent.
    let refused = ask(&mut w, 1, |reply| ShardMessage::InjectData {
        stream: name.clone(),
        payload: Bytes::from_static(b"\x02\x00\x01x"),
        reply,
    });
    assert_eq!(refused, Err(super::message::AdminRefusal::NotFound));
}

#[test]
fn a_kicked_publisher_leaves_its_viewers_waiting_as_if_it_had_gone() {
    let mut w = World::new(1);
    let mut p = w.publisher(0, "k");
    w.start_media(&mut p, 0);
    let mut v = w.viewer(0, "k");
    let conn = w.snapshots()[0]
        .clients
        .iter()
        .find(|c| c.role == RoleKind::Publisher)
        .unwrap()
        .id;
    let kicked = ask(&mut w, 0, |reply| ShardMessage::Kick { conn, reply });
    assert_eq!(kicked, Ok(()));
    w.exchange_all(&mut [&mut p, &mut v]);
    assert!(p.closed, "the publisher is closed");
    assert!(!v.closed, "its viewer waits for the grace period");
    assert!(v.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
    let again = ask(&mut w, 0, |reply| ShardMessage::Kick { conn, reply });
    assert_eq!(again, Err(super::message::AdminRefusal::NotFound));
}

#[test]
fn counters_follow_what_happened() {
    let mut w = World::new(2);
    let mut p = w.publisher(0, "c");
    w.start_media(&mut p, 0);
    let mut v = w.viewer(1, "c");
    w.send(&mut p, MediaKind::Audio, 20, audio(1));
    w.send(&mut p, MediaKind::Video, 40, inter(2));
    w.exchange_all(&mut [&mut v]);
    let mut busy = w.publisher(1, "c");
    w.exchange(&mut busy);
    let snaps = w.snapshots();
    // Ids are unique across shards, and say their shard.
    for s in &snaps {
        for c in &s.clients {
            assert_eq!(c.id % 2, s.shard as u64);
        }
    }
    assert_eq!(snaps[0].stats.accepted + snaps[1].stats.accepted, 3);
    assert_eq!(
        snaps[1]
            .stats
            .rejected(super::stats::RejectReason::StreamBusy),
        1
    );
    let totals = &streams_across(&snaps)[0];
    // Video: header, keyframe, inter; audio: header, one frame.
    assert_eq!(totals.frames, [2, 3, 0, 0]);
    assert!(totals.bytes_in > 0 && totals.bytes_out > 0);
    assert!(totals.video_header.is_some() && totals.audio_header.is_some());
    assert_eq!(
        snaps[1].stats.join_time.count(),
        1,
        "the viewer's join was timed"
    );
    assert!(snaps[1].stats.relay_latency.count() > 0);
    assert!(snaps.iter().map(|s| s.stats.send_calls).sum::<u64>() > 0);
    assert_eq!(snaps[0].connections.publishers, 1);
    assert_eq!(snaps[1].connections.viewers, 1);
    let without_clients = w.shards[1].snapshot(w.now, false);
    assert!(without_clients.clients.is_empty());
    assert_eq!(without_clients.connections.total(), 2);
}

/// An HTTP client of shard `shard` that sent `request`.
fn http_client(w: &mut World, shard: usize, request: &str) -> ClientId {
    w.next_port += 1;
    let addr = SocketAddr::from(([127, 0, 0, 1], w.next_port));
    let id = w.shards[shard].accept_http(addr, w.now).expect("accepted");
    let mut wire = ShardWire {
        shard,
        wire: &mut w.wire,
    };
    w.shards[shard].handle_input(
        id,
        Bytes::copy_from_slice(request.as_bytes()),
        w.now,
        &mut wire,
    );
    w.settle();
    id
}

/// What an HTTP client has been sent so far.
fn http_received(w: &World, shard: usize, id: ClientId) -> Vec<u8> {
    w.wire
        .sent
        .get(&(shard, id))
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn an_http_flv_viewer_waits_for_the_publisher_then_gets_flv_in_chunks_until_the_end() {
    let mut w = World::new(2);
    let v = http_client(&mut w, 1, "GET /live/h.flv HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        http_received(&w, 1, v).is_empty(),
        "the answer waits for a publisher"
    );
    let mut p = w.publisher(0, "h");
    w.start_media(&mut p, 0);
    w.send(&mut p, MediaKind::Video, 40, inter(2));
    let got = http_received(&w, 1, v);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Content-Type: video/x-flv"));
    let body = find(&got, b"\r\n\r\n").unwrap() + 4;
    // The first chunk is the FLV header: "d\r\nFLV" (13 bytes).
    assert_eq!(&got[body..body + 6], b"d\r\nFLV");
    // The AVC header, the keyframe and the inter frame follow as FLV video tags.
    assert!(find(&got[body..], AVC_HEADER).is_some());
    assert!(find(&got[body..], &keyframe(1)).is_some());
    assert!(find(&got[body..], &inter(2)).is_some());
    let snaps = w.snapshots();
    let c = snaps[1]
        .clients
        .iter()
        .find(|c| c.role == RoleKind::Viewer)
        .unwrap();
    assert_eq!(c.protocol, "http_flv");
    assert_eq!(snaps[1].connections.by_protocol[1][1], 1);

    // The publisher leaves; after the grace period the body ends with the last chunk.
    w.disconnect(&mut p);
    w.advance(Duration::from_millis(3500));
    let got = http_received(&w, 1, v);
    assert!(got.ends_with(b"0\r\n\r\n"), "the chunked body ended");
    assert!(w.wire.closed.contains(&(1, v)));
}

#[test]
fn a_download_whose_peer_takes_nothing_is_closed_after_the_send_timeout() {
    let mut w = file_world();
    let request = "GET /vod/live/clip.flv HTTP/1.1\r\nHost: x\r\n\r\n";
    let start = |w: &mut World| {
        w.next_port += 1;
        let addr = SocketAddr::from(([127, 0, 0, 1], w.next_port));
        let id = w.shards[0].accept_http(addr, w.now).expect("accepted");
        w.wire.full.insert((0, id));
        let mut wire = ShardWire {
            shard: 0,
            wire: &mut w.wire,
        };
        w.shards[0].handle_input(id, Bytes::from_static(request.as_bytes()), w.now, &mut wire);
        w.settle();
        id
    };
    let stuck = start(&mut w);
    let paused = start(&mut w);
    // Past the idle timeout (10 s here), which a download does not answer to.
    w.advance(Duration::from_secs(50));
    assert!(!w.wire.closed.contains(&(0, stuck)));
    w.wire.full.remove(&(0, paused));
    w.shards[0].write_blocked(
        paused,
        w.now,
        &mut ShardWire {
            shard: 0,
            wire: &mut w.wire,
        },
    );
    w.settle();
    let got = http_received(&w, 0, paused);
    let body = find(&got, b"\r\n\r\n").expect("a head") + 4;
    assert_eq!(&got[body..], &w.files[&file_dir().join("clip.flv")][..]);
    assert!(w.wire.closed.contains(&(0, paused)), "closed once complete");
    w.advance(Duration::from_secs(11));
    assert!(
        w.wire.closed.contains(&(0, stuck)),
        "nothing taken for send_timeout_ms (60 s)"
    );
}

#[test]
fn http_requests_for_nothing_are_answered_and_closed() {
    let mut w = World::new(1);
    for (request, status) in [
        ("GET /nope/x.flv HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        ("POST /live/x.flv HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
        (
            "GET /live/..%2fsecret.flv HTTP/1.1\r\nHost: x\r\n\r\n",
            "400",
        ),
        ("OPTIONS /live/x.flv HTTP/1.1\r\nHost: x\r\n\r\n", "204"),
    ] {
        let id = http_client(&mut w, 0, request);
        let got = http_received(&w, 0, id);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {text}"
        );
        assert!(w.wire.closed.contains(&(0, id)), "{request:?} closed");
    }
    // A head that never ends is closed at the handshake deadline.
    let slow = http_client(&mut w, 0, "GET /live/x.flv HTTP/1.1\r\nHost:");
    w.advance(Duration::from_millis(5100));
    assert!(w.wire.closed.contains(&(0, slow)));
    // No publisher within wait_for_publisher_ms: 404.
    let waiting = http_client(&mut w, 0, "GET /live/late.flv HTTP/1.1\r\nHost: x\r\n\r\n");
    w.advance(Duration::from_millis(4100));
    let text = String::from_utf8_lossy(&http_received(&w, 0, waiting)).into_owned();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}

const CALLBACK_CONFIG: &str = r#"
[app.live]
unpublish_grace_ms = 0
[app.live.auth]
on_publish = "http://127.0.0.1:9/on_publish"
on_publish_done = "http://127.0.0.1:9/done"
callback_timeout_ms = 700
"#;

fn status(code: u16, location: Option<&str>) -> CallbackAnswer {
    CallbackAnswer::Status {
        code,
        location: location.map(str::to_owned),
    }
}

fn live_streams(w: &World) -> Vec<String> {
    let mut names: Vec<String> = w.snapshots()[0]
        .streams
        .iter()
        .filter(|s| s.publisher.is_some())
        .map(|s| s.name.to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn publishers_wait_for_their_callbacks_and_get_what_each_answer_says() {
    let mut w = World::with_config(1, CALLBACK_CONFIG);
    let mut first = w.publisher(0, "a?token=t1");
    let mut second = w.publisher(0, "b");
    assert_eq!(w.callbacks.len(), 2, "each publish asks the backend");
    assert_eq!(w.shards[0].callbacks_in_flight(), 2);
    let body = &w.callbacks[0].3.body;
    assert!(
        body.starts_with("call=publish&addr=127.0.0.1&clientid="),
        "{body}"
    );
    assert!(body.contains("&name=a&type=live&token=t1"), "{body}");
    assert_eq!(w.callbacks[0].3.timeout, Duration::from_millis(700));
    assert!(!first.has(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    assert!(
        live_streams(&w).is_empty(),
        "nothing is live before an answer"
    );

    // Answers come in any order; the second one renames.
    w.callbacks.swap(0, 1);
    w.answer_callback(status(302, Some("c")));
    w.exchange(&mut second);
    assert!(second.has(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    assert_eq!(live_streams(&w), ["live/c"]);

    w.answer_callback(CallbackAnswer::Failed("no answer within 700 ms".into()));
    w.exchange(&mut first);
    assert!(first.statuses().contains(&status::PUBLISH_BAD_NAME));
    assert!(first.closed, "a refused publisher is closed");
    assert_eq!(w.shards[0].callbacks_in_flight(), 0);
    assert_eq!(
        w.shards[0]
            .stats
            .rejected(super::stats::RejectReason::CallbackFailed),
        1
    );
    assert_eq!(live_streams(&w), ["live/c"]);

    // The renamed publisher leaves: on_publish_done names the stream it published.
    w.disconnect(&mut second);
    assert_eq!(w.notices.len(), 1);
    assert!(
        w.notices[0].body.starts_with("call=publish_done&"),
        "{}",
        w.notices[0].body
    );
    assert!(
        w.notices[0].body.contains("&name=c&"),
        "{}",
        w.notices[0].body
    );
}

#[test]
fn a_client_that_leaves_while_its_callback_is_pending_is_forgotten() {
    let mut w = World::with_config(1, CALLBACK_CONFIG);
    let mut p = w.publisher(0, "gone");
    assert_eq!(w.shards[0].callbacks_in_flight(), 1);
    w.disconnect(&mut p);
    assert_eq!(w.shards[0].callbacks_in_flight(), 0);
    assert_eq!(w.shards[0].client_count(), 0);
    // Its late answer finds nobody, and neither does it reach a client in the same slot.
    let mut next = w.publisher(0, "next");
    w.answer_callback(status(200, None));
    w.exchange(&mut next);
    assert!(
        live_streams(&w).is_empty(),
        "the stale answer started nothing"
    );
    assert!(!next.has(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    w.answer_callback(status(200, None));
    w.exchange(&mut next);
    assert_eq!(live_streams(&w), ["live/next"]);
}

/// A push target, as a real server session fed through the in-memory wire.
struct Target {
    id: ClientId,
    session: crate::rtmp::ServerSession,
    events: Vec<crate::rtmp::ServerEvent>,
}

impl World {
    /// Connects the push the shard asked for last, to a fresh target.
    fn connect_push(&mut self) -> Target {
        let (shard, stream, index, attempt, _, port) = self
            .forward_connects
            .last()
            .cloned()
            .expect("a push connect");
        let addr = SocketAddr::from(([10, 0, 0, 9], port));
        let id = self.shards[shard]
            .forward_connected(&stream.into(), index, attempt, addr, self.now)
            .expect("the attempt is current");
        let mut wire = ShardWire {
            shard,
            wire: &mut self.wire,
        };
        self.shards[shard].write_blocked(id, self.now, &mut wire);
        self.settle();
        Target {
            id,
            session: crate::rtmp::ServerSession::new(Default::default()),
            events: Vec::new(),
        }
    }

    /// Moves bytes between shard 0 and the target, which accepts whatever it is asked.
    fn exchange_target(&mut self, t: &mut Target) {
        use crate::rtmp::ServerEvent;
        loop {
            let mut moved = false;
            if let Some(got) = self.wire.sent.get_mut(&(0, t.id))
                && !got.is_empty()
            {
                moved = true;
                t.session
                    .feed(got.split().freeze())
                    .expect("the push speaks RTMP");
                while let Some(ev) = t.session.poll_event() {
                    match &ev {
                        ServerEvent::ConnectRequested { .. } => t.session.accept_connect(),
                        ServerEvent::PublishRequested { stream_id, .. } => {
                            t.session.accept_publish(*stream_id)
                        }
                        _ => {}
                    }
                    t.events.push(ev);
                }
            }
            if !self.wire.closed.contains(&(0, t.id)) {
                while let Some(bytes) = t.session.poll_transmit() {
                    moved = true;
                    let mut wire = ShardWire {
                        shard: 0,
                        wire: &mut self.wire,
                    };
                    self.shards[0].handle_input(t.id, bytes, self.now, &mut wire);
                    self.settle();
                }
            }
            if !moved {
                break;
            }
        }
    }
}

const PULL_CONFIG: &str = r#"
[app.live]
unpublish_grace_ms = 1000
pull = ["rtmp://origin-a/live", "rtmp://origin-b/live"]
pull_no_input_ms = 3000
pull_linger_ms = 2000
pull_start_timeout_ms = 5000
"#;

impl World {
    /// What upstream link `link` of shard `shard` says, as the driver hands it over.
    fn upstream(&mut self, shard: usize, link: u64, event: ClientEvent) {
        self.shards[shard].handle_upstream(
            link,
            super::shard::UpstreamEvent::Session(event),
            self.now,
        );
        self.settle();
    }

    fn upstream_media(
        &mut self,
        shard: usize,
        link: u64,
        kind: MediaKind,
        ts: u32,
        payload: Bytes,
    ) {
        self.upstream(
            shard,
            link,
            ClientEvent::Media {
                kind,
                timestamp: ts,
                payload,
            },
        );
    }
}

#[test]
fn a_push_retries_then_publishes_the_headers_and_gop_to_its_target() {
    use crate::rtmp::ServerEvent;
    let config = format!(
        "{CONFIG}push = [\"rtmp://10.0.0.9:1940/in/{{stream}}?key=k\"]\npush_backoff_max_ms = 2000\n"
    );
    let mut w = World::with_config(1, &config);
    let mut p = w.publisher(0, "s");
    w.start_media(&mut p, 1000);
    w.send(&mut p, MediaKind::Video, 1040, inter(2));
    assert_eq!(
        w.forward_connects,
        vec![(0, "live/s".into(), 0, 1, "10.0.0.9".into(), 1940)]
    );

    // The target is down: the push waits, then tries again within the cap.
    w.shards[0].forward_connect_failed(&"live/s".into(), 0, 1, "connection refused", w.now);
    w.settle();
    let forwards = &w.snapshots()[0].streams[0].forwards;
    assert_eq!(forwards[0].state, "waiting");
    assert_eq!(
        forwards[0].last_error.as_deref(),
        Some("connection refused")
    );
    assert!(!forwards[0].url.contains("=k"), "{}", forwards[0].url);
    w.advance(Duration::from_millis(2000));
    assert_eq!(w.forward_connects.len(), 2, "retried within the cap");
    assert_eq!(w.forward_connects[1].3, 2);

    // It comes up: connect (with our relay path), publish `s?key=k`, then what a late
    // viewer gets, on message stream 1.
    let mut t = w.connect_push();
    w.exchange_target(&mut t);
    let connect = t.events.iter().find_map(|e| match e {
        ServerEvent::ConnectRequested {
            app, relay_path, ..
        } => Some((app, relay_path)),
        _ => None,
    });
    let (app, path) = connect.expect("connect");
    assert_eq!(app, "in");
    assert_eq!(path.hops(), 1);
    assert!(t.events.iter().any(|e| matches!(e,
        ServerEvent::PublishRequested { stream_key, query, .. } if stream_key == "s" && query == "key=k")));
    w.send(&mut p, MediaKind::Video, 1080, inter(3));
    w.exchange_target(&mut t);
    let media: Vec<(MediaKind, Bytes)> = t
        .events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Media {
                stream_id: 1,
                kind,
                payload,
                ..
            } => Some((*kind, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        media,
        vec![
            (MediaKind::Video, Bytes::from_static(AVC_HEADER)),
            (MediaKind::Audio, Bytes::from_static(AAC_HEADER)),
            (MediaKind::Video, keyframe(1)),
            (MediaKind::Video, inter(2)),
            (MediaKind::Video, inter(3)),
        ]
    );
    let snap = w.snapshots();
    let f = &snap[0].streams[0].forwards[0];
    assert_eq!((f.state, f.retries), ("forwarding", 1));
    assert!(f.bytes > 0 && f.last_error.is_none());
    assert_eq!(snap[0].stats.forwards_active, 1);
    // A shardcast target declares every codec: the push gets the stream as published.
    let link = snap[0]
        .clients
        .iter()
        .find(|c| c.addr.port() == 1940)
        .unwrap();
    assert_eq!((link.role, link.track_filter), (RoleKind::Viewer, "all"));
    // The publisher was never told anything about it.
    assert!(!p.closed);

    // The link breaks: the backoff started over at the success, so the retry is quick.
    w.shards[0].handle_read_end(t.id, "the peer closed the connection".into());
    w.settle();
    w.advance(crate::relay::forwarder::FIRST_RETRY);
    assert_eq!(w.forward_connects.len(), 3);

    // The stream ends: the push goes with it, and tries nothing more.
    w.disconnect(&mut p);
    w.advance(Duration::from_secs(10));
    assert_eq!(w.forward_connects.len(), 3);
    assert!(w.snapshots()[0].streams.is_empty());
}

#[test]
fn one_pull_per_host_serves_viewers_on_every_shard_with_the_origins_timestamps() {
    let mut w = World::with_config(2, PULL_CONFIG);
    let mut v0 = w.viewer(0, "cam");
    let mut v1 = w.viewer(1, "cam");
    let mut v2 = w.viewer(1, "cam");
    assert_eq!(
        w.upstream_opened.len(),
        1,
        "one pull: {:?}",
        w.upstream_opened
    );
    let (shard, link, url, key) = w.upstream_opened[0].clone();
    assert_eq!((shard, key.as_str()), (0, "cam"));
    let ring = crate::cluster::OriginRing::new(vec![
        "rtmp://origin-a/live".into(),
        "rtmp://origin-b/live".into(),
    ]);
    assert_eq!(Some(url.as_str()), ring.pick("cam", 0));

    w.upstream_media(
        shard,
        link,
        MediaKind::Video,
        5000,
        Bytes::from_static(AVC_HEADER),
    );
    w.upstream_media(shard, link, MediaKind::Video, 5000, keyframe(1));
    w.upstream_media(shard, link, MediaKind::Video, 5040, inter(2));
    w.exchange_all(&mut [&mut v0, &mut v1, &mut v2]);
    for v in [&v0, &v1, &v2] {
        assert!(v.has(|e| matches!(e, ClientEvent::PlayStarted { .. })));
        let ts: Vec<u32> = v.media().iter().map(|m| m.1).collect();
        assert_eq!(ts, vec![5000, 5000, 5040], "the origin's timestamps");
    }
    let snaps = w.snapshots();
    let up = snaps[0].streams[0].upstream.clone().expect("shard 0 pulls");
    assert_eq!((up.state, up.url.as_str()), ("playing", url.as_str()));
    assert!(snaps[1].streams[0].upstream.is_none());

    // The origin dies: the pull falls over along the ring, the viewers stay.
    w.shards[shard].handle_upstream(
        link,
        super::shard::UpstreamEvent::Failed("connection reset".into()),
        w.now,
    );
    w.settle();
    assert_eq!(w.upstream_closed, vec![link]);
    w.advance(Duration::from_millis(300));
    assert_eq!(w.upstream_opened.len(), 2);
    let (_, link2, url2, _) = w.upstream_opened[1].clone();
    assert_ne!(url2, url, "the next origin on the ring");
    // The new origin's first picture is no keyframe: dropped, its keyframe is next.
    w.upstream_media(shard, link2, MediaKind::Video, 0, inter(7));
    w.upstream_media(shard, link2, MediaKind::Video, 0, keyframe(3));
    w.upstream_media(shard, link, MediaKind::Video, 9999, keyframe(9));
    w.exchange_all(&mut [&mut v0, &mut v1, &mut v2]);
    for v in [&v0, &v1, &v2] {
        assert!(!v.closed);
        assert!(!v.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
        let got = v.media();
        assert_eq!(
            got.len(),
            4,
            "the old link's late media and the new one's leading inter frame are dropped"
        );
        assert_eq!(got[3].2, keyframe(3));
        assert!(got[3].1 >= 5040, "timestamps keep going forward");
    }

    // The viewers leave: the pull lingers, then stops.
    for v in [&mut v0, &mut v1, &mut v2] {
        w.disconnect(v);
    }
    let mut t = 0;
    while t < 1500 {
        w.upstream_media(shard, link2, MediaKind::Video, 40 + t, inter(4));
        w.advance(Duration::from_millis(100));
        t += 100;
    }
    assert_eq!(w.upstream_closed, vec![link], "still lingering");
    w.advance(Duration::from_millis(800));
    assert_eq!(
        w.upstream_closed,
        vec![link, link2],
        "stopped after the linger"
    );
    assert!(w.snapshots().iter().all(|s| s.streams.is_empty()));
    assert_eq!(w.snapshots()[0].stats.pull_starts, 1);
}

#[test]
fn an_upstream_loop_refuses_the_waiting_viewers_on_every_shard() {
    let mut w = World::with_config(2, PULL_CONFIG);
    let mut v0 = w.viewer(0, "loop");
    let mut v1 = w.viewer(1, "loop");
    let (shard, link, _, _) = w.upstream_opened[0].clone();
    w.upstream(
        shard,
        link,
        ClientEvent::ConnectFailed {
            code: "NetConnection.Connect.Rejected".into(),
            description: "relay loop: this server is already on the path".into(),
        },
    );
    w.exchange_all(&mut [&mut v0, &mut v1]);
    for v in [&v0, &v1] {
        assert!(v.closed, "refused, not left waiting");
        assert!(v.statuses().contains(&status::PLAY_FAILED));
    }
    w.advance(Duration::from_secs(5));
    assert_eq!(w.upstream_opened.len(), 1, "no retry");
}

#[test]
fn the_origin_ending_the_stream_unpublishes_the_edge_viewers() {
    let mut w = World::with_config(1, PULL_CONFIG);
    let mut v = w.viewer(0, "end");
    let (shard, link, _, _) = w.upstream_opened[0].clone();
    w.upstream_media(shard, link, MediaKind::Video, 0, keyframe(1));
    w.upstream(
        shard,
        link,
        ClientEvent::Status {
            stream_id: 1,
            level: "status".into(),
            code: status::PLAY_UNPUBLISH_NOTIFY.into(),
            description: "gone".into(),
        },
    );
    w.exchange(&mut v);
    assert!(v.statuses().contains(&status::PLAY_UNPUBLISH_NOTIFY));
    assert!(!v.closed, "the grace period");
    w.advance(Duration::from_millis(1200));
    w.exchange(&mut v);
    assert!(v.closed, "closed after the grace period");
}
