//! The admin API's routes: SRS's paths and field names where SRS has them, our additions
//! beside them, health checks and `/metrics`.
//!
//! [`AdminApi::handle`] turns one [`AdminRequest`] into one [`AdminResponse`]. What it
//! needs from the relay it asks through [`RunningRelay`], which the admin listener
//! (`src/net/admin_listener.rs`) implements with messages to the shards: reads take a
//! snapshot of every shard, a kick goes to the client's shard (its id says which), and a
//! data message goes to the stream's origin shard. Nothing here blocks a shard.
//!
//! Routes (ids are strings; a stream's id is its `app/stream` name, percent-encoded or
//! not):
//! - `GET /` (and `/console/...`): the web console (`console.rs`)
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /stat` (nginx-rtmp's XML)
//! - `GET /api/v1/versions`, `GET /api/v1/summaries`
//! - `GET /api/v1/streams?start=&count=`, `GET /api/v1/streams/{id}`,
//!   `POST /api/v1/streams/{id}/data`, `POST /api/v1/streams/{id}/record`
//!   (`{"action": "start"}` or `{"action": "stop"}`, in an application with `record` on);
//!   a stream carries `forwards`, its pushes to other servers (`src/relay/forwarder.rs`)
//! - `GET /api/v1/clients?start=&count=`, `GET /api/v1/clients/{id}`,
//!   `DELETE /api/v1/clients/{id}`
//!
//! With `[admin] token` set, every call that changes something (`POST`, `DELETE`) needs
//! `Authorization: Bearer <token>`; reads stay open, as health checks and scrapers expect.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use super::data_message::data_message;
use super::metrics::{self, ProcessStats, Scrape};
use super::request::{AdminRequest, AdminResponse};
use super::track::{StreamTracks, audio_codec_name, video_codec_name};
use crate::net::mailbox::InboxTotals;
use crate::relay::client::RoleKind;
use crate::relay::directory::{ConnId, StreamName};
use crate::relay::message::{AdminRefusal, ShardId};
use crate::relay::recorder::RecordStatus;
use crate::relay::snapshot::{
    ClientInfo, ConnectionCounts, PROTOCOLS, ShardSnapshot, StreamTotals, streams_across,
};

pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What the API asks of the running relay. The admin listener implements it with
/// messages to the shards; tests can implement it with canned snapshots.
pub trait RunningRelay {
    /// Every shard's snapshot (with its clients listed if `clients`), by shard id.
    fn inspect(&self, clients: bool) -> LocalFuture<'_, Vec<ShardSnapshot>>;
    /// Closes the client `conn` on `shard`.
    fn kick(&self, shard: ShardId, conn: ConnId) -> LocalFuture<'_, Result<(), AdminRefusal>>;
    /// Puts a data message into `stream` on its origin `shard`; answers its timestamp.
    fn inject(
        &self,
        shard: ShardId,
        stream: StreamName,
        payload: Bytes,
    ) -> LocalFuture<'_, Result<u32, AdminRefusal>>;
    /// Starts (`start`) or stops recording `stream` on its origin `shard`.
    fn record(
        &self,
        shard: ShardId,
        stream: StreamName,
        start: bool,
    ) -> LocalFuture<'_, Result<RecordStatus, AdminRefusal>>;
    fn shard_count(&self) -> usize;
    /// Messages waiting in each shard's inbox.
    fn inbox_depths(&self) -> Vec<usize>;
    /// What each shard's inbox has taken in since the start, by shard id.
    fn inbox_totals(&self) -> Vec<InboxTotals>;
    fn process(&self) -> ProcessStats;
    /// Accepting connections and not draining.
    fn ready(&self) -> bool;
    fn started(&self) -> Instant;
}

/// The admin API's settings.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub token: Option<String>,
    /// Streams that get per-stream series on `/metrics`.
    pub metrics_max_streams: usize,
    /// The configured applications, for nginx-rtmp's `/stat`.
    pub apps: Vec<String>,
    /// The media HTTP listener (HTTP-FLV, WebSocket-FLV), if on: the console plays from
    /// its port, and `/api/v1/summaries` says where it is.
    pub http_listen: Option<SocketAddr>,
    /// `[server] node_id` in force (picked at startup when the file leaves it empty), the
    /// name this server has in relay trees.
    pub node_id: String,
}

impl ApiSettings {
    /// The settings a configuration gives the admin API.
    pub fn of(config: &crate::config::Config) -> ApiSettings {
        ApiSettings {
            token: config.admin.token().map(str::to_owned),
            metrics_max_streams: config.admin.metrics_max_streams,
            apps: config.apps.keys().cloned().collect(),
            http_listen: config.http.listen_addr(),
            node_id: config.server.node_id.clone(),
        }
    }

    /// A reloaded configuration's settings, except what needs a restart (the media HTTP
    /// listener's address stays the one actually listening).
    pub fn reloaded(&self, config: &crate::config::Config) -> ApiSettings {
        ApiSettings {
            http_listen: self.http_listen,
            ..ApiSettings::of(config)
        }
    }
}

/// The admin API's settings as the listener thread reads them and SIGHUP replaces them
/// (the admin token rotates without a restart). Read once per request, off the media path.
pub type SharedApiSettings = std::sync::Arc<std::sync::RwLock<ApiSettings>>;

/// Default and largest page of `?count=`.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 10_000;

pub struct AdminApi<R> {
    relay: R,
    shared_settings: SharedApiSettings,
    /// The last CPU reading, for `cpu_percent` over the time since.
    cpu_sample: RefCell<Option<(Instant, f64)>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the server calls itself in SRS's envelopes.
fn server_id() -> String {
    format!("shardcast-{}", std::process::id())
}

fn ok(mut body: Value) -> AdminResponse {
    if let Value::Object(fields) = &mut body {
        fields.insert("code".into(), json!(0));
        fields.insert("server".into(), json!(server_id()));
    }
    AdminResponse::json(200, body.to_string())
}

fn role_name(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Client => "client",
        RoleKind::Publisher => "publisher",
        RoleKind::Viewer => "viewer",
        RoleKind::FileViewer => "recording_viewer",
    }
}

/// SRS's `type` of a client.
fn srs_type(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Client => "rtmp-connect",
        RoleKind::Publisher => "fmle-publish",
        RoleKind::Viewer | RoleKind::FileViewer => "rtmp-play",
    }
}

/// Decodes `%XX` escapes (and nothing else); None if an escape or the result is invalid.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `?start=&count=`, as SRS pages its lists.
fn page(query: &str) -> Result<(usize, usize), AdminResponse> {
    let number = |key: &str, default: usize| -> Result<usize, AdminResponse> {
        match query_param(query, key) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                AdminResponse::error(400, &format!("?{key}= must be a non-negative integer"))
            }),
        }
    };
    Ok((
        number("start", 0)?,
        number("count", DEFAULT_PAGE)?.min(MAX_PAGE),
    ))
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<R: RunningRelay> AdminApi<R> {
    pub fn new(relay: R, settings: ApiSettings) -> AdminApi<R> {
        AdminApi::with_shared_settings(relay, std::sync::Arc::new(settings.into()))
    }

    /// An API whose settings another thread may replace (SIGHUP).
    pub fn with_shared_settings(relay: R, shared_settings: SharedApiSettings) -> AdminApi<R> {
        AdminApi {
            relay,
            shared_settings,
            cpu_sample: RefCell::new(None),
        }
    }

    /// The settings in force now (a copy: a request must not hold the lock across awaits).
    fn settings(&self) -> ApiSettings {
        self.shared_settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Answers one request.
    pub async fn handle(&self, req: AdminRequest) -> AdminResponse {
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method.as_str()
        };
        // Decoded before splitting, so an escaped `/` in a stream id (`live%2Fdemo`) reads
        // like the plain one (`live/demo`).
        let Some(path) = percent_decode(&req.path) else {
            return AdminResponse::error(400, "the path is not valid percent-encoded UTF-8");
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mutating = matches!(method, "POST" | "DELETE" | "PUT" | "PATCH");
        if mutating && let Some(refusal) = self.check_token(&req) {
            tracing::warn!(peer = %req.peer, method, path = %req.path, "admin request refused: missing or wrong bearer token");
            return refusal;
        }
        match (method, segments.as_slice()) {
            ("GET", segs) if super::console::is_console_path(segs) => {
                super::console::serve(segs).expect("a console path")
            }
            ("GET", ["healthz"]) => AdminResponse::text(200, "text/plain", "ok\n"),
            ("GET", ["readyz"]) => {
                if self.relay.ready() {
                    AdminResponse::text(200, "text/plain", "ready\n")
                } else {
                    AdminResponse::text(503, "text/plain", "not ready\n")
                }
            }
            ("GET", ["metrics"]) => self.metrics().await,
            ("GET", ["stat"]) => {
                let shards = self.relay.inspect(true).await;
                let streams = streams_across(&shards);
                let xml = super::nginx_stat::render(
                    &self.settings().apps,
                    &shards,
                    &streams,
                    self.relay.started().elapsed(),
                );
                AdminResponse::text(200, "text/xml", xml)
            }
            ("GET", ["api"]) | ("GET", ["api", "v1"]) => ok(json!({
                "urls": {
                    "versions": "the version of shardcast",
                    "summaries": "the process, its connections and shards",
                    "streams": "the streams (?start=&count=); /streams/{id}; POST /streams/{id}/data; POST /streams/{id}/record",
                    "clients": "the clients (?start=&count=); /clients/{id}; DELETE /clients/{id}",
                    "console": "the web console, at /",
                },
            })),
            ("GET", ["api", "v1", "versions"]) => self.versions(),
            ("GET", ["api", "v1", "summaries"]) => self.summaries().await,
            ("GET", ["api", "v1", "streams"]) => self.streams(&req.query).await,
            ("POST", ["api", "v1", "streams", id @ .., "data"]) if !id.is_empty() => {
                self.inject(&id.join("/"), &req).await
            }
            ("POST", ["api", "v1", "streams", id @ .., "record"]) if !id.is_empty() => {
                self.record(&id.join("/"), &req).await
            }
            ("GET", ["api", "v1", "streams", id @ ..]) if !id.is_empty() => {
                self.stream(&id.join("/")).await
            }
            ("GET", ["api", "v1", "clients"]) => self.clients(&req.query).await,
            ("GET", ["api", "v1", "clients", id]) => self.client(id).await,
            ("DELETE", ["api", "v1", "clients", id]) => self.kick(id, &req).await,
            (_, segs) => {
                let allowed = allowed_methods(segs);
                if allowed.is_empty() {
                    AdminResponse::error(404, &format!("no such resource: {}", req.path))
                } else {
                    let mut r = AdminResponse::error(
                        405,
                        &format!("{} is not allowed on {}", req.method, req.path),
                    );
                    r.headers.push(("Allow", allowed.to_owned()));
                    r
                }
            }
        }
    }

    fn check_token(&self, req: &AdminRequest) -> Option<AdminResponse> {
        let settings = self.settings();
        let token = settings.token.as_deref()?;
        let given = req
            .authorization
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return None;
        }
        let mut r = AdminResponse::error(
            401,
            "this call needs the admin token: Authorization: Bearer <token>",
        );
        r.headers
            .push(("WWW-Authenticate", "Bearer realm=\"shardcast\"".into()));
        Some(r)
    }

    fn versions(&self) -> AdminResponse {
        let version = env!("CARGO_PKG_VERSION");
        let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
        ok(json!({
            "data": {
                "major": parts.next().unwrap_or(0),
                "minor": parts.next().unwrap_or(0),
                "revision": parts.next().unwrap_or(0),
                "version": version,
            },
        }))
    }

    async fn summaries(&self) -> AdminResponse {
        let shards = self.relay.inspect(false).await;
        let process = self.relay.process();
        let cpu_percent = self.cpu_percent(&process);
        let uptime = self.relay.started().elapsed();
        let inbox = self.relay.inbox_depths();
        let mut connections = ConnectionCounts::default();
        for s in &shards {
            connections.merge(&s.connections);
        }
        let streams = streams_across(&shards);
        let per_shard: Vec<Value> = shards
            .iter()
            .map(|s| {
                json!({
                    "shard": s.shard,
                    "connections": s.connections.total(),
                    "publishers": s.connections.publishers,
                    "viewers": s.connections.viewers + s.connections.file_viewers,
                    "streams": s.streams.iter().filter(|st| !st.file).count(),
                    "bytes_in": s.bytes_in,
                    "bytes_out": s.bytes_out,
                    "send_calls": s.stats.send_calls,
                    "inbox": inbox.get(s.shard).copied().unwrap_or(0),
                })
            })
            .collect();
        let sum = |f: fn(&ShardSnapshot) -> u64| shards.iter().map(f).sum::<u64>();
        ok(json!({
            "data": {
                "ok": true,
                "now_ms": unix_ms(SystemTime::now()),
                "self": {
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": process.pid,
                    "mem_kbyte": process.resident_bytes / 1024,
                    "cpu_percent": cpu_percent,
                    "srs_uptime": uptime.as_secs(),
                },
                "shardcast": {
                    "version": env!("CARGO_PKG_VERSION"),
                    "node_id": self.settings().node_id,
                    "pid": process.pid,
                    "uptime_seconds": uptime.as_secs_f64(),
                    "cpu_seconds": process.cpu_seconds,
                    "cpu_percent": cpu_percent,
                    "rss_bytes": process.resident_bytes,
                    "ready": self.relay.ready(),
                    "http_listen": self.settings().http_listen.map(|a| a.to_string()),
                    "http_port": self.settings().http_listen.map(|a| a.port()),
                    "shard_count": self.relay.shard_count(),
                    "answered_shards": shards.len(),
                    "connections": {
                        "total": connections.total(),
                        "by_role": {
                            "publisher": connections.publishers,
                            "viewer": connections.viewers,
                            "recording_viewer": connections.file_viewers,
                            "client": connections.idle,
                        },
                        "by_protocol": PROTOCOLS
                            .iter()
                            .enumerate()
                            .map(|(p, name)| ((*name).to_owned(), json!(connections.protocol_total(p))))
                            .collect::<serde_json::Map<String, Value>>(),
                    },
                    "streams": streams.len(),
                    "bytes_in": sum(|s| s.bytes_in),
                    "bytes_out": sum(|s| s.bytes_out),
                    "send_calls": sum(|s| s.stats.send_calls),
                    "viewer_skips": sum(|s| s.stats.viewer_skips),
                    "lag_disconnects": sum(|s| s.stats.lag_disconnects),
                    "shards": per_shard,
                },
            },
        }))
    }

    /// CPU use since the previous call, as a percentage of one core.
    fn cpu_percent(&self, process: &ProcessStats) -> f64 {
        let now = Instant::now();
        let mut last = self.cpu_sample.borrow_mut();
        let percent = match *last {
            Some((at, cpu)) if now > at => {
                (process.cpu_seconds - cpu).max(0.0) / (now - at).as_secs_f64() * 100.0
            }
            _ => {
                let up = self.relay.started().elapsed().as_secs_f64();
                if up > 0.0 {
                    process.cpu_seconds / up * 100.0
                } else {
                    0.0
                }
            }
        };
        *last = Some((now, process.cpu_seconds));
        (percent * 100.0).round() / 100.0
    }

    async fn streams(&self, query: &str) -> AdminResponse {
        let (start, count) = match page(query) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let shards = self.relay.inspect(false).await;
        let streams = streams_across(&shards);
        let list: Vec<Value> = streams
            .iter()
            .skip(start)
            .take(count)
            .map(stream_json)
            .collect();
        ok(json!({ "total": streams.len(), "streams": list }))
    }

    async fn stream(&self, id: &str) -> AdminResponse {
        let shards = self.relay.inspect(false).await;
        match streams_across(&shards).iter().find(|s| &*s.name == id) {
            Some(s) => ok(json!({ "stream": stream_json(s) })),
            None => AdminResponse::error(404, &format!("no stream {id:?}")),
        }
    }

    async fn inject(&self, id: &str, req: &AdminRequest) -> AdminResponse {
        let payload = match data_message(&req.body) {
            Ok(p) => p,
            Err(e) => return AdminResponse::error(400, &e.0),
        };
        let shards = self.relay.inspect(false).await;
        let Some(stream) = streams_across(&shards).into_iter().find(|s| &*s.name == id) else {
            return AdminResponse::error(404, &format!("no stream {id:?}"));
        };
        let Some(origin) = stream.origin.filter(|_| stream.publisher.is_some()) else {
            return AdminResponse::error(409, &format!("stream {id:?} has no publisher now"));
        };
        match self
            .relay
            .inject(origin, stream.name.clone(), payload)
            .await
        {
            Ok(timestamp) => {
                tracing::info!(peer = %req.peer, stream = %stream.name, timestamp, "data message put into the stream through the admin API");
                ok(json!({ "stream": id, "timestamp": timestamp }))
            }
            Err(AdminRefusal::NotFound) => AdminResponse::error(404, &format!("no stream {id:?}")),
            Err(AdminRefusal::NotLive) => {
                AdminResponse::error(409, &format!("stream {id:?} has no publisher now"))
            }
            Err(AdminRefusal::NotRecordable) => AdminResponse::error(
                409,
                &format!("stream {id:?} is in an application that does not record"),
            ),
        }
    }

    /// `POST /api/v1/streams/{id}/record` with `{"action": "start"}` or `{"action": "stop"}`.
    async fn record(&self, id: &str, req: &AdminRequest) -> AdminResponse {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return AdminResponse::error(400, &format!("the body is not JSON: {e}")),
        };
        let start = match body.get("action").and_then(Value::as_str) {
            Some("start") => true,
            Some("stop") => false,
            _ => {
                return AdminResponse::error(
                    400,
                    "the body must be {\"action\": \"start\"} or {\"action\": \"stop\"}",
                );
            }
        };
        let shards = self.relay.inspect(false).await;
        let Some(stream) = streams_across(&shards).into_iter().find(|s| &*s.name == id) else {
            return AdminResponse::error(404, &format!("no stream {id:?}"));
        };
        let Some(origin) = stream.origin.filter(|_| stream.publisher.is_some()) else {
            return AdminResponse::error(409, &format!("stream {id:?} has no publisher now"));
        };
        match self.relay.record(origin, stream.name.clone(), start).await {
            Ok(status) => {
                tracing::info!(peer = %req.peer, stream = %stream.name, start, "recording changed through the admin API");
                ok(json!({ "stream": id, "record": record_json(Some(&status)) }))
            }
            Err(AdminRefusal::NotFound) => AdminResponse::error(404, &format!("no stream {id:?}")),
            Err(AdminRefusal::NotLive) => {
                AdminResponse::error(409, &format!("stream {id:?} has no publisher now"))
            }
            Err(AdminRefusal::NotRecordable) => AdminResponse::error(
                409,
                &format!("stream {id:?} is in an application with record = \"off\""),
            ),
        }
    }

    async fn clients(&self, query: &str) -> AdminResponse {
        let (start, count) = match page(query) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let shards = self.relay.inspect(true).await;
        let mut clients: Vec<&ClientInfo> = shards.iter().flat_map(|s| &s.clients).collect();
        clients.sort_by_key(|c| c.id);
        let list: Vec<Value> = clients
            .iter()
            .skip(start)
            .take(count)
            .map(|c| client_json(c))
            .collect();
        ok(json!({ "total": clients.len(), "clients": list }))
    }

    /// A client id, and the shard it lives on (the id's remainder by the shard count).
    fn parse_client_id(&self, id: &str) -> Option<(ShardId, ConnId)> {
        let conn: ConnId = id.parse().ok()?;
        let shards = self.relay.shard_count().max(1) as u64;
        Some(((conn % shards) as ShardId, conn))
    }

    async fn client(&self, id: &str) -> AdminResponse {
        let Some((shard, conn)) = self.parse_client_id(id) else {
            return AdminResponse::error(404, &format!("no client {id:?}"));
        };
        let shards = self.relay.inspect(true).await;
        let found = shards
            .iter()
            .filter(|s| s.shard == shard)
            .flat_map(|s| &s.clients)
            .find(|c| c.id == conn);
        match found {
            Some(c) => ok(json!({ "client": client_json(c) })),
            None => AdminResponse::error(404, &format!("no client {id:?}")),
        }
    }

    async fn kick(&self, id: &str, req: &AdminRequest) -> AdminResponse {
        let Some((shard, conn)) = self.parse_client_id(id) else {
            return AdminResponse::error(404, &format!("no client {id:?}"));
        };
        match self.relay.kick(shard, conn).await {
            Ok(()) => {
                tracing::info!(peer = %req.peer, client = conn, shard, "client closed through the admin API");
                ok(json!({ "client": id }))
            }
            Err(_) => AdminResponse::error(404, &format!("no client {id:?}")),
        }
    }

    async fn metrics(&self) -> AdminResponse {
        let shards = self.relay.inspect(false).await;
        let streams = streams_across(&shards);
        let inbox = self.relay.inbox_depths();
        let inbox_totals = self.relay.inbox_totals();
        let process = self.relay.process();
        let body = metrics::render(&Scrape {
            version: env!("CARGO_PKG_VERSION"),
            shards: &shards,
            streams: &streams,
            inbox_depths: &inbox,
            inbox_totals: &inbox_totals,
            process: &process,
            ready: self.relay.ready(),
            max_streams: self.settings().metrics_max_streams,
        });
        AdminResponse::text(200, metrics::CONTENT_TYPE, body)
    }
}

/// The methods a known path takes, for `405`'s `Allow`; empty for an unknown path.
fn allowed_methods(segments: &[&str]) -> &'static str {
    if super::console::is_console_path(segments) {
        return "GET, HEAD";
    }
    match segments {
        ["healthz"] | ["readyz"] | ["metrics"] | ["stat"] | ["api"] | ["api", "v1"] => "GET, HEAD",
        [
            "api",
            "v1",
            "versions" | "summaries" | "streams" | "clients",
        ] => "GET, HEAD",
        ["api", "v1", "streams", id @ .., "data" | "record"] if !id.is_empty() => "POST",
        ["api", "v1", "streams", _, ..] => "GET, HEAD",
        ["api", "v1", "clients", _] => "GET, HEAD, DELETE",
        _ => "",
    }
}

fn stream_json(s: &StreamTotals) -> Value {
    let (app, key) = s.app_and_key();
    let tracks = StreamTracks::of(s);
    let now = SystemTime::now();
    let since = |d: Option<Duration>| d.and_then(|d| now.checked_sub(d)).map(unix_ms);
    let publisher = s.publisher.as_ref().map(|p| {
        json!({
            "id": p.id.to_string(),
            "ip": p.addr.ip().to_string(),
            "addr": p.addr.to_string(),
            "since_ms": since(Some(p.publishing_for)),
            "publishing_ms": p.publishing_for.as_millis() as u64,
        })
    });
    let video = tracks.video.as_ref().map(|v| {
        json!({
            "codec": v.codec.map(video_codec_name),
            "profile": v.profile,
            "level": v.level,
            "width": v.width,
            "height": v.height,
            "fps": v.fps,
        })
    });
    let audio = tracks.audio.as_ref().map(|a| {
        json!({
            "codec": a.codec.map(audio_codec_name),
            "profile": a.profile,
            "sample_rate": a.sample_rate,
            "channel": a.channels,
            "channels": a.channels,
        })
    });
    let viewers = s.viewers();
    let frames: u64 = s.frames.iter().sum();
    json!({
        "id": &*s.name,
        "name": key,
        "vhost": "__defaultVhost__",
        "app": app,
        "url": format!("/{}", s.name),
        "live_ms": unix_ms(now),
        "clients": viewers + usize::from(s.publisher.is_some()),
        "frames": frames,
        "send_bytes": s.bytes_out,
        "recv_bytes": s.bytes_in,
        "kbps": { "recv_30s": s.kbps_in, "send_30s": s.kbps_out },
        "publish": {
            "active": s.publisher.is_some(),
            "cid": s.publisher.as_ref().map(|p| p.id.to_string()),
        },
        "video": video,
        "audio": audio,
        "publisher": publisher,
        "viewers": {
            "total": viewers,
            "per_shard": s.viewers_per_shard,
            "waiting": s.waiting,
        },
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "frames_by_kind": {
            "audio": s.frames[0],
            "video": s.frames[1],
            "metadata": s.frames[2],
            "data": s.frames[3],
        },
        "dropped_frames": s.dropped_frames,
        "gop_cache_bytes": s.gop_cache_bytes,
        "live_since_ms": since(s.live_for),
        "origin_shard": s.origin,
        "record": record_json(s.record.as_ref()),
        "forwards": s.forwards.iter().map(|f| json!({
            "url": f.url,
            "state": f.state,
            "retries": f.retries,
            "bytes": f.bytes,
            "last_error": f.last_error,
        })).collect::<Vec<_>>(),
        "upstream": upstream_json(s.upstream.as_ref()),
    })
}

/// An edge's pull of the stream: `null` for a stream this host does not pull.
fn upstream_json(u: Option<&crate::relay::snapshot::UpstreamInfo>) -> Value {
    match u {
        None => Value::Null,
        Some(u) => json!({
            "url": u.url,
            "state": u.state,
            "retries": u.retries,
            "bytes": u.bytes,
            "last_error": u.last_error,
        }),
    }
}

/// A stream's recording: `null` in an application that does not record.
fn record_json(r: Option<&RecordStatus>) -> Value {
    match r {
        None => Value::Null,
        Some(r) => json!({
            "state": r.state,
            "file": r.file,
            "files": r.files,
            "error": r.error,
        }),
    }
}

fn client_json(c: &ClientInfo) -> Value {
    let now = SystemTime::now();
    let (name, url) = match &c.stream {
        Some(s) => (
            s.split_once('/').map_or(&**s, |(_, k)| k).to_owned(),
            format!("/{s}"),
        ),
        None => (String::new(), String::new()),
    };
    json!({
        "id": c.id.to_string(),
        "vhost": "__defaultVhost__",
        "stream": c.stream.as_deref(),
        "ip": c.addr.ip().to_string(),
        "addr": c.addr.to_string(),
        "url": url,
        "name": name,
        "app": c.app,
        "type": srs_type(c.role),
        "publish": c.role == RoleKind::Publisher,
        "alive": c.connected_for.as_secs_f64(),
        "send_bytes": c.bytes_out,
        "recv_bytes": c.bytes_in,
        "kbps": { "recv_30s": c.kbps_in, "send_30s": c.kbps_out },
        "role": role_name(c.role),
        "protocol": c.protocol,
        "shard": c.shard,
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "dropped_frames": c.dropped_frames,
        "track_filter": c.track_filter,
        "video_sent": c.video_sent,
        "video_withheld": c.video_withheld,
        "waiting": c.waiting,
        "since_ms": now.checked_sub(c.connected_for).map(unix_ms),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::relay::snapshot::{ClientInfo, PublisherInfo, StreamInfo};
    use crate::relay::stats::ShardStats;

    /// Two shards with one stream: its publisher on shard 0, a viewer on each shard.
    struct CannedRelay {
        kicked: Cell<Option<(ShardId, ConnId)>>,
        injected: RefCell<Vec<(ShardId, StreamName, Bytes)>>,
        ready: Cell<bool>,
    }

    fn client(id: ConnId, shard: ShardId, role: RoleKind, port: u16) -> ClientInfo {
        ClientInfo {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            role,
            protocol: "rtmp",
            app: "live".into(),
            stream: Some("live/demo".into()),
            shard,
            bytes_in: 10,
            bytes_out: 20,
            kbps_in: 1,
            kbps_out: 2,
            dropped_frames: 0,
            track_filter: "all",
            video_sent: 0,
            video_withheld: 0,
            connected_for: Duration::from_secs(5),
            waiting: false,
        }
    }

    fn stream(shard: ShardId, origin: bool) -> StreamInfo {
        StreamInfo {
            name: "live/demo".into(),
            shard,
            origin,
            publisher: origin.then(|| PublisherInfo {
                id: 2,
                addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
                publishing_for: Duration::from_secs(4),
            }),
            live: true,
            file: false,
            video: None,
            audio: None,
            video_header: None,
            audio_header: None,
            metadata: None,
            viewers: 1,
            waiting: 0,
            bytes_in: if origin { 1000 } else { 0 },
            bytes_out: 500,
            kbps_in: 8,
            kbps_out: 4,
            frames: [3, 2, 1, 0],
            dropped_frames: 1,
            gop_cache_bytes: 100,
            ring_memory: 0,
            live_for: Some(Duration::from_secs(4)),
            record: None,
            // The origin's view of its pushes is the stream's.
            forwards: if origin {
                vec![crate::relay::snapshot::ForwardInfo {
                    url: "rtmp://b.example:1935/live/demo?key=...".into(),
                    state: "waiting",
                    retries: 3,
                    bytes: 12345,
                    last_error: Some("connect to 10.0.0.2:1935 failed".into()),
                }]
            } else {
                Vec::new()
            },
            upstream: None,
        }
    }

    impl RunningRelay for CannedRelay {
        fn inspect(&self, clients: bool) -> LocalFuture<'_, Vec<ShardSnapshot>> {
            let snap = |shard: ShardId, list: Vec<ClientInfo>| ShardSnapshot {
                shard,
                clients: if clients { list } else { Vec::new() },
                streams: vec![stream(shard, shard == 0)],
                connections: ConnectionCounts::default(),
                bytes_in: 1,
                bytes_out: 2,
                stats: ShardStats::default(),
            };
            let shards = vec![
                snap(
                    0,
                    vec![
                        client(2, 0, RoleKind::Publisher, 5000),
                        client(4, 0, RoleKind::Viewer, 5001),
                    ],
                ),
                snap(1, vec![client(3, 1, RoleKind::Viewer, 5002)]),
            ];
            Box::pin(async move { shards })
        }

        fn kick(&self, shard: ShardId, conn: ConnId) -> LocalFuture<'_, Result<(), AdminRefusal>> {
            self.kicked.set(Some((shard, conn)));
            let found = [2, 3, 4].contains(&conn);
            Box::pin(async move {
                if found {
                    Ok(())
                } else {
                    Err(AdminRefusal::NotFound)
                }
            })
        }

        fn inject(
            &self,
            shard: ShardId,
            stream: StreamName,
            payload: Bytes,
        ) -> LocalFuture<'_, Result<u32, AdminRefusal>> {
            self.injected.borrow_mut().push((shard, stream, payload));
            Box::pin(async { Ok(1234) })
        }

        fn record(
            &self,
            _shard: ShardId,
            _stream: StreamName,
            start: bool,
        ) -> LocalFuture<'_, Result<RecordStatus, AdminRefusal>> {
            Box::pin(async move {
                Ok(RecordStatus {
                    state: if start { "waiting" } else { "off" },
                    ..RecordStatus::default()
                })
            })
        }

        fn shard_count(&self) -> usize {
            2
        }

        fn inbox_depths(&self) -> Vec<usize> {
            vec![0, 0]
        }

        fn inbox_totals(&self) -> Vec<InboxTotals> {
            vec![InboxTotals::default(); 2]
        }

        fn process(&self) -> ProcessStats {
            ProcessStats::default()
        }

        fn ready(&self) -> bool {
            self.ready.get()
        }

        fn started(&self) -> Instant {
            Instant::now()
        }
    }

    fn api(token: Option<&str>) -> AdminApi<CannedRelay> {
        AdminApi::new(
            CannedRelay {
                kicked: Cell::new(None),
                injected: RefCell::new(Vec::new()),
                ready: Cell::new(true),
            },
            ApiSettings {
                token: token.map(str::to_owned),
                metrics_max_streams: 10,
                apps: vec!["live".into()],
                http_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
                node_id: "test-node".into(),
            },
        )
    }

    fn call(
        api: &AdminApi<CannedRelay>,
        method: &str,
        target: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let req = AdminRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            authorization: auth.map(str::to_owned),
            body: Bytes::copy_from_slice(body.as_bytes()),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        let r = futures_lite::future::block_on(api.handle(req));
        let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, json)
    }

    #[test]
    fn streams_add_up_every_shard() {
        let a = api(None);
        let (status, body) = call(&a, "GET", "/api/v1/streams", None, "");
        assert_eq!(status, 200);
        assert_eq!(body["code"], 0);
        let s = &body["streams"][0];
        assert_eq!(s["id"], "live/demo");
        assert_eq!(s["app"], "live");
        assert_eq!(s["name"], "demo");
        assert_eq!(s["viewers"]["total"], 2);
        assert_eq!(s["viewers"]["per_shard"], json!([1, 1]));
        assert_eq!(s["clients"], 3, "SRS counts the publisher");
        assert_eq!(s["publish"]["active"], true);
        assert_eq!(s["publish"]["cid"], "2");
        assert_eq!(s["send_bytes"], 1000);
        assert_eq!(s["recv_bytes"], 1000);
        assert_eq!(s["dropped_frames"], 2);
        assert_eq!(
            s["forwards"],
            json!([{
                "url": "rtmp://b.example:1935/live/demo?key=...",
                "state": "waiting",
                "retries": 3,
                "bytes": 12345,
                "last_error": "connect to 10.0.0.2:1935 failed",
            }])
        );
        for path in ["/api/v1/streams/live/demo", "/api/v1/streams/live%2Fdemo"] {
            let (status, one) = call(&a, "GET", path, None, "");
            assert_eq!(status, 200, "{path}");
            assert_eq!(one["stream"]["id"], "live/demo");
        }
        let (status, missing) = call(&a, "GET", "/api/v1/streams/live/nope", None, "");
        assert_eq!((status, missing["code"].clone()), (404, json!(404)));
        let (_, paged) = call(&a, "GET", "/api/v1/streams?start=1&count=5", None, "");
        assert_eq!(paged["streams"], json!([]));
        assert_eq!(paged["total"], 1);
        let (status, _) = call(&a, "GET", "/api/v1/streams?count=many", None, "");
        assert_eq!(status, 400);
    }

    #[test]
    fn clients_are_listed_found_and_kicked_on_their_shard() {
        let a = api(None);
        let (_, body) = call(&a, "GET", "/api/v1/clients", None, "");
        let ids: Vec<&str> = body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["2", "3", "4"]);
        let (status, one) = call(&a, "GET", "/api/v1/clients/3", None, "");
        assert_eq!(status, 200);
        assert_eq!(one["client"]["shard"], 1);
        assert_eq!(one["client"]["ip"], "127.0.0.1");
        assert_eq!(one["client"]["addr"], "127.0.0.1:5002");
        assert_eq!(one["client"]["role"], "viewer");
        let (status, _) = call(&a, "DELETE", "/api/v1/clients/3", None, "");
        assert_eq!(status, 200);
        assert_eq!(a.relay.kicked.get(), Some((1, 3)), "asked shard 3 % 2");
        for id in ["99", "x"] {
            let (status, body) = call(&a, "DELETE", &format!("/api/v1/clients/{id}"), None, "");
            assert_eq!((status, body["code"].clone()), (404, json!(404)));
        }
    }

    #[test]
    fn data_goes_to_the_origin_shard_and_bad_json_changes_nothing() {
        let a = api(None);
        let body = r#"{"handler": "onTextData", "data": {"text": "hi"}}"#;
        let (status, answer) = call(&a, "POST", "/api/v1/streams/live/demo/data", None, body);
        assert_eq!(status, 200);
        assert_eq!(answer["timestamp"], 1234);
        assert_eq!(a.relay.injected.borrow()[0].0, 0, "shard 0 is the origin");
        let (status, _) = call(&a, "POST", "/api/v1/streams/live/demo/data", None, "{oops");
        assert_eq!(status, 400);
        let (status, _) = call(&a, "POST", "/api/v1/streams/live/nope/data", None, body);
        assert_eq!(status, 404);
        assert_eq!(a.relay.injected.borrow().len(), 1);
    }

    #[test]
    fn a_token_guards_every_change_but_no_read() {
        let a = api(Some("s3cret"));
        let body = r#"{"handler": "onCuePoint"}"#;
        let path = "/api/v1/streams/live/demo/data";
        assert_eq!(call(&a, "POST", path, None, body).0, 401);
        assert_eq!(call(&a, "POST", path, Some("Bearer wrong"), body).0, 401);
        assert_eq!(
            call(&a, "DELETE", "/api/v1/clients/2", Some("s3cret"), "").0,
            401
        );
        assert!(a.relay.injected.borrow().is_empty());
        assert_eq!(a.relay.kicked.get(), None);
        assert_eq!(call(&a, "POST", path, Some("Bearer s3cret"), body).0, 200);
        assert_eq!(call(&a, "GET", "/api/v1/clients", None, "").0, 200);
    }

    #[test]
    fn health_methods_and_unknown_paths() {
        let a = api(None);
        assert_eq!(call(&a, "GET", "/healthz", None, "").0, 200);
        assert_eq!(call(&a, "GET", "/readyz", None, "").0, 200);
        a.relay.ready.set(false);
        assert_eq!(call(&a, "GET", "/readyz", None, "").0, 503);
        assert_eq!(call(&a, "PUT", "/api/v1/streams", None, "").0, 405);
        assert_eq!(call(&a, "GET", "/api/v2/nothing", None, "").0, 404);
        assert_eq!(call(&a, "POST", "/", None, "").0, 405);
        assert_eq!(call(&a, "GET", "/console/nothing.js", None, "").0, 404);
        assert_eq!(
            call(&a, "GET", "/api/v1/versions", None, "").1["data"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        let (status, summary) = call(&a, "GET", "/api/v1/summaries", None, "");
        assert_eq!(status, 200);
        assert_eq!(summary["data"]["shardcast"]["http_port"], 8080);
        assert_eq!(summary["data"]["shardcast"]["http_listen"], "0.0.0.0:8080");
        assert_eq!(
            summary["data"]["shardcast"]["shards"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
