//! Helpers for shardcast's integration tests (`tests/*.rs`) and the load generator's
//! (`loadtest/tests/*.rs`), one module per concern:
//!
//! - [`tools`]: the real client programs (ffmpeg, ffprobe, rtmpdump) as commands, free
//!   ports, temp paths, and waiting on child processes with a deadline;
//! - [`relay`]: one `shardcast` process run for a test ([`relay::Relay`]), and the
//!   helpers that ask its admin API what it did;
//! - [`admin`]: a small HTTP client for that API;
//! - [`client`]: a blocking RTMP client built from the library's `ClientSession`
//!   ([`client::RtmpClient`]) and a viewer that records in a thread of its own
//!   ([`client::Recorder`]);
//! - [`script`]: synthetic numbered media ([`script::Script`]) a test publishes, and the
//!   checks that every message of it reached a viewer in order;
//! - [`core_server`]: minimal RTMP servers built only from the protocol core and
//!   `std::net`, which capture a publish or replay it to a player;
//! - [`nginx`]: nginx with the RTMP module as a third-party peer ([`nginx::NginxRtmp`]);
//! - [`loadgen`]: running `shardcast-load` against a relay and reading its report.
//!
//! Cargo tells a package's own tests where its binaries are (`CARGO_BIN_EXE_<name>`) and
//! tells no other crate, so the helpers that start the relay take its binary's path: the
//! root package's tests pass `env!("CARGO_BIN_EXE_shardcast")`; the load generator's find
//! it beside `shardcast-load` ([`loadgen::LoadGenerator::shardcast_bin`]).

pub mod admin;
pub mod client;
pub mod core_server;
pub mod loadgen;
pub mod nginx;
pub mod relay;
pub mod script;
pub mod tools;
