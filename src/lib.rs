//! shardcast: a thread-per-core RTMP edge relay.
//!
//! One media message's way from a publisher's socket to a viewer's, in six files, with no
//! return trip: net (read) → rtmp (decode) → relay (encode once, ring, across cores) → net
//! (write).
//!
//! 1. **Read** (`src/net/client_task.rs`). The encoder's connection lives on the shard
//!    whose SO_REUSEPORT listener the kernel picked. Its task reads the socket into the
//!    shard's one read buffer, copies what came into a `Bytes`, and hands it to the
//!    shard's relay state (`Shard::handle_input`).
//! 2. **Decode** (`src/rtmp/server_session.rs`). The client's `ServerSession` joins chunks
//!    into a message (a message that came in one chunk is a zero-copy slice of that
//!    `Bytes`) and emits `ServerEvent::Media`.
//! 3. **Encode once** (`src/relay/origin.rs`). The shard hands it to the stream's origin,
//!    which fixes the timestamp viewers see, notes whether it is a keyframe or a sequence
//!    header, and encodes it **once** into one shared `Bytes`: a `Frame`.
//! 4. **Ring, and across cores** (`src/relay/stream.rs`). The frame joins the stream's
//!    ring and GOP cache on this shard; its handle goes once to each other shard with
//!    viewers of the stream (an `Output::Send` the driver puts in that shard's mailbox)
//!    and joins that shard's ring the same way. A video frame queues a fan-out pass at
//!    once; audio waits for the next video frame, at most 50 ms.
//! 5. **Gather** (`src/relay/write_queue.rs`). The shard's fan-out walks the stream's
//!    viewers; each viewer's `WriteQueue` gathers what it is owed, the same shared
//!    buffers, into one `IoSlice` array. An HTTP-FLV or WebSocket-FLV viewer
//!    (`src/relay/http_viewer.rs`, on the media HTTP listener) gathers the frame's FLV
//!    encoding for its format instead, made once on this shard as the frame joined the
//!    ring (`src/relay/output.rs`).
//! 6. **Write** (`src/net/sockets.rs`). The driver writes that array with one `sendmsg` to
//!    the viewer's socket, found by the viewer's id. A full socket is left to the viewer's
//!    own task, which waits for it to drain: nothing a viewer does slows the publisher.
//!
//! On an edge, the publisher of step 1 may be another server: the first viewer of a stream
//! the host does not have makes its shard pull it from an origin (`src/relay/
//! upstream_source.rs` decides when and from where; `src/net/upstream_link.rs` speaks the
//! client role over a connection from `src/net/outbound.rs`, which pushes share), and what
//! the origin sends enters step 3 exactly as a publisher's messages do
//! (`src/relay/shard_pull.rs`).
//!
//! Recording branches off at step 3: on the origin shard, each frame also goes to the
//! stream's recorder (`src/relay/recorder.rs`), which decides files, segments and flushes
//! and hands its writes, the same shared buffers, to a disk writer thread
//! (`src/net/record_writer.rs`) through a bounded queue, so a disk never slows a shard.
//!
//! Pushing to other servers branches off at step 5: a push (`src/relay/forwarder.rs`) is
//! a viewer of the stream on its origin shard whose socket the driver opened to the target
//! (`src/net/forward_link.rs`); it publishes there with the protocol's client role, then
//! gathers the same shared bytes as every RTMP viewer, under the same backlog rules.
//!
//! Before any of this, a client is admitted (`src/net/admission.rs`: the PROXY protocol
//! header from a trusted balancer, the per-address cap, TLS for RTMPS in `src/net/tls.rs`)
//! and allowed (`src/access/`: stream keys, signed links, network rules, and the HTTP
//! callbacks the driver makes in `src/net/callback_client.rs` while the client waits). In
//! step 5 a viewer gathers the encoding of its output class: its format, and for Enhanced
//! RTMP the tracks it declared it can play (`src/rtmp/capabilities.rs`,
//! `src/media/multitrack.rs`), each class encoded once per shard. A stored file is a source
//! of its own per viewer (`src/relay/vod_source.rs`, a second of media at a time, each
//! frame sent straight from the read with its chunk header written over the FLV tag
//! header), found through a shared index (`src/media/vod_index.rs`) and read by the driver
//! (`src/net/vod_files.rs`: from the page cache on the shard, else on a blocking thread);
//! over HTTP it is also a plain download with byte
//! ranges (`src/relay/vod_download.rs`), read a chunk at a time as the client's socket
//! drains.
//!
//! `src/relay/` and `src/rtmp/` are deterministic (no sockets, clocks or tasks);
//! `src/net/` drives them. So is `src/http/`: the request parsing, response heads and
//! WebSocket framing for HTTP-FLV and WebSocket-FLV viewers. Operators see and steer all of
//! this through `src/admin/` (the JSON API, `/metrics`, health checks), served by
//! `src/net/admin_listener.rs` on a thread of its own that asks the shards by message and
//! sums their plain counters (`src/relay/stats.rs`) at scrape time. `src/performance.rs`
//! holds every performance knob with the measurement behind it; `src/config.rs` is the
//! configuration file's schema (re-read on SIGHUP); `loadtest/` is the bundled load
//! generator, built on the client role (`src/rtmp/client_session.rs`).

pub mod access;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod http;
pub mod media;
pub mod net;
pub mod performance;
pub mod relay;
pub mod rtmp;
