//! Everything that touches the operating system: sockets, files, timers, tasks, threads.
//! The only code that does; it drives the deterministic relay (`src/relay/`) and protocol
//! (`src/rtmp/`) state machines.
//!
//! - `runtime.rs`: starting the admin listener and the shards (one pinned glommio executor
//!   per core), signals, shutdown.
//! - `shard_driver.rs`: one shard's driver: carries out the relay's outputs, runs its
//!   inbox, fan-out and timer tasks, reads stored files (and times how long queued fan-out
//!   work waits: `shardcast_fan_out_delay_seconds`).
//! - `vod_files.rs`: finding, confining, opening and indexing stored files, off the shard,
//!   for RTMP plays and HTTP downloads.
//! - `admission.rs`: a new RTMP/RTMPS connection's first bytes (PROXY header, plain or
//!   TLS) and the host-wide per-address cap, before the relay takes the client.
//! - `proxy_protocol.rs`: the PROXY protocol v1/v2 header (with the `ppp` crate).
//! - `tls.rs`: RTMPS, rustls driven by hand around a client's socket.
//! - `listener.rs`: the accept loop (every shard binds the ingest port with SO_REUSEPORT,
//!   so the kernel spreads connections over the cores).
//! - `client_task.rs`: one client connection's task: reads, and waits for a full socket.
//! - `forward_link.rs`: the outbound connections of pushes to other servers (resolve,
//!   connect, then served as a client by `client_task.rs`).
//! - `outbound.rs`: what a pull and a push do alike to reach another server: resolve,
//!   connect with a timeout, and the client side of TLS for `rtmps://`.
//! - `sockets.rs`: the shard's sockets by client id, and the writes through them.
//! - `vectored.rs`: the one vectored write every byte to a client goes through.
//! - `mailbox.rs`: the bounded cross-core channels between shards, and their doorbell.
//! - `wakeup.rs`: wake-ups between the tasks of one shard.
//! - `admin_listener.rs`: the admin API's thread, which asks the shards by message.
//! - `admin_http.rs`: the admin listener's HTTP server (hyper on glommio), with its caps on
//!   connections, head and body sizes, and idle time.
//! - `record_writer.rs`: the recordings' disk writer thread, fed by a bounded channel so
//!   a slow or full disk stops a recording, never a shard.
//! - `callback_client.rs`: access control's HTTP callbacks, each a task of its own with a
//!   timeout, so a shard never waits on a backend.
//! - `upstream_link.rs`: an edge's connection to an origin for a pull, driving the client
//!   role and feeding the shard what the origin sends.
//! - `process.rs`: the process's CPU time, memory and descriptors, from `/proc/self`.

pub mod admin_http;
pub mod admin_listener;
pub mod admission;
pub mod callback_client;
pub mod client_task;
pub mod forward_link;
pub mod listener;
pub mod mailbox;
pub mod outbound;
pub mod process;
pub mod proxy_protocol;
pub mod record_writer;
pub mod runtime;
pub mod shard_driver;
pub mod sockets;
pub mod tls;
pub mod upstream_link;
pub mod vectored;
pub mod vod_files;
pub mod wakeup;
