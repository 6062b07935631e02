//! The admin listener's logic: what an operator asks over HTTP, and what the relay answers.
//!
//! Nothing here touches a socket. `src/net/admin_http.rs` serves HTTP (hyper on glommio)
//! and `src/net/admin_listener.rs` runs it on a thread of its own; each request reaches
//! this module as an [`AdminRequest`](request::AdminRequest) and goes back as an
//! [`AdminResponse`](request::AdminResponse). What an answer needs from the shards travels
//! by message (`relay::message::ShardMessage::{Inspect, Kick, InjectData}`), never a lock,
//! and is summed here, off the shards' cores.
//!
//! - `console.rs`: the web console at `/` (its files in `console/`, mpegts.js vendored).
//! - `api.rs`: the routes (SRS's JSON API, health checks, `/metrics`) and the bearer token.
//! - `metrics.rs`: the Prometheus text rendering; `nginx_stat.rs`: nginx-rtmp's `/stat` XML.
//! - `track.rs`: a stream's codecs, resolution and sample rate, as the API shows them.
//! - `data_message.rs`: a JSON request made into the AMF0 data message a stream carries.
//! - `request.rs`: the request and response as plain values, and JSON error answers.

pub mod api;
pub mod console;
pub mod data_message;
pub mod metrics;
pub mod nginx_stat;
pub mod request;
pub mod track;
