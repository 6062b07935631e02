//! The HTTP side of viewing: HTTP-FLV and WebSocket-FLV, as pure functions over bytes.
//!
//! A browser player (flv.js, mpegts.js) or `ffplay http://host:8080/live/cam.flv` asks for a
//! stream with one HTTP request and then reads an endless FLV body, either as a chunked
//! (or, for HTTP/1.0, close-delimited) response or as binary WebSocket frames. Everything
//! here is deterministic, as in `src/rtmp/`: no sockets, no clocks, no tasks. The relay
//! reads a socket, hands what came to these functions, and writes the bytes they return.
//!
//! - `request.rs`: parsing the request head (with `httparse`, never by hand) under a size
//!   cap, and routing `/{app}/{stream}.flv`, rejecting path tricks.
//! - `response.rs`: the response heads (200 FLV, 204 preflight, errors) with CORS, and
//!   chunked-transfer framing.
//! - `range.rs`: the byte range a `Range` header asks of a stored file (`/vod/...`).
//! - `websocket.rs`: RFC 6455 for a server that only sends: the handshake answer, frame
//!   headers for what we send, and a decoder for what the client sends (pings, closes).
//!
//! A connection's life, as the relay drives it:
//!
//! 1. `request::parse_head` on everything received so far until it answers `Complete` (or
//!    `Rejected`: write `response::error` and close).
//! 2. `request::route`: `Flv` or `Preflight`, or an error to answer.
//! 3. For `Flv`: if `head.websocket_key` is set, `websocket::upgrade_response`, then each
//!    FLV piece behind `websocket::binary_frame_header`, and every byte the client sends
//!    (starting with `buf[consumed..]`) into a `websocket::FrameDecoder`. Otherwise
//!    `response::flv_head` and the body, chunked behind `response::chunk_prefix` when the
//!    client spoke HTTP/1.1, raw when HTTP/1.0. For `HEAD`, the head alone.
//!
//! A stored file (`GET /vod/{app}/{name}.flv|.mp4`, `request::Route::Vod`) is a plain
//! download instead: `range::resolve` picks the bytes, `response::file_head` (200 or 206)
//! or `response::range_not_satisfiable` (416) goes first, then the file's bytes.
//!
//! Network input is hostile: nothing here panics on it, and nothing allocates by a size a
//! peer names without checking it against a cap first. Fuzz targets in `fuzz/` and
//! proptests beside the unit tests hold us to that.

#![forbid(unsafe_code)]

pub mod range;
pub mod request;
pub mod response;
pub mod websocket;
