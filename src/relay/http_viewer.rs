//! An HTTP-FLV or WebSocket-FLV client as the relay sees it: its request, and what its
//! connection still says once it plays.
//!
//! The request head arrives in pieces; [`HttpViewer::feed_head`] keeps them (capped by
//! `http::request::MAX_HEAD_BYTES`) until `http::request::parse_head` has a whole head,
//! and says what to do: answer and close (an error, a CORS preflight), or play a stream in
//! one of the FLV output formats. The shard decides whether that stream exists and when
//! the response starts (a stream nobody publishes yet makes the request wait). Once
//! playing, a WebSocket client's frames go through [`HttpViewer::feed_playing`]; a plain
//! HTTP client has nothing more to say and what it sends is dropped.

use bytes::{Bytes, BytesMut};

use super::output::OutputFormat;
use super::vod_download::DownloadRequest;
use crate::http::request::{HeadParse, HttpVersion, MAX_HEAD_BYTES, Route, parse_head, route};
use crate::http::response::{self, Cors};
use crate::http::websocket::{self, FrameDecoder, WsEvent};

/// Data frames a WebSocket viewer may send us (it has nothing to say; bounded anyway).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// What a complete request head asks of the shard.
#[derive(Debug)]
pub enum HttpRequest {
    /// Write this and close.
    Answer(Bytes),
    /// Play `app/stream` in `format`. `response_head` goes first when the stream starts;
    /// `head_only` (HEAD) ends there.
    Play {
        app: String,
        stream: String,
        /// The request's query (`?key=...`), for access control.
        query: String,
        format: OutputFormat,
        response_head: Bytes,
        head_only: bool,
    },
    /// Download a stored file (`/vod/{app}/{name}.flv|.mp4`); `query` is for access
    /// control.
    Vod {
        request: DownloadRequest,
        query: String,
    },
}

/// What a WebSocket viewer's frames call for.
#[derive(Debug, Default)]
pub struct WebSocketReply {
    /// Frames to send (pongs, a close).
    pub send: Vec<Bytes>,
    /// Close after sending them, and why.
    pub close: Option<String>,
}

#[derive(Debug, Default)]
pub struct HttpViewer {
    head: BytesMut,
    pub bytes_received: u64,
    /// Set once the head was read.
    pub format: Option<OutputFormat>,
    /// Sent when the stream starts (held while the viewer waits for a publisher).
    pub response_head: Option<Bytes>,
    pub head_only: bool,
    websocket: Option<FrameDecoder>,
}

impl HttpViewer {
    /// Takes more of the request head. None while it is incomplete.
    pub fn feed_head(&mut self, input: &[u8], cors: &Cors) -> Option<HttpRequest> {
        self.bytes_received += input.len() as u64;
        let room = (MAX_HEAD_BYTES + 1).saturating_sub(self.head.len());
        self.head.extend_from_slice(&input[..input.len().min(room)]);
        let (head, consumed) = match parse_head(&self.head) {
            HeadParse::Incomplete => return None,
            HeadParse::Rejected(e) => {
                return Some(HttpRequest::Answer(response::error(
                    e.status, &e.reason, cors,
                )));
            }
            HeadParse::Complete { head, consumed } => (head, consumed),
        };
        let rest = self.head.split_off(consumed);
        self.head = BytesMut::new();
        let (app, stream) = match route(&head) {
            Err(e) => {
                return Some(HttpRequest::Answer(response::error(
                    e.status, &e.reason, cors,
                )));
            }
            Ok(Route::Preflight) => return Some(HttpRequest::Answer(response::preflight(cors))),
            Ok(Route::Flv { app, stream }) => (app, stream),
            Ok(Route::Vod {
                app,
                name,
                file,
                container,
            }) => {
                return Some(HttpRequest::Vod {
                    request: DownloadRequest {
                        app,
                        name,
                        file,
                        content_type: container.content_type(),
                        range: head.range_value.clone(),
                        head_only: head.method == "HEAD",
                    },
                    query: head.query.clone(),
                });
            }
        };
        let (format, response_head) = match &head.websocket_key {
            Some(key) => {
                if !cors.allows(head.origin.as_deref()) {
                    return Some(HttpRequest::Answer(response::error(
                        403,
                        "this origin may not open a WebSocket here",
                        cors,
                    )));
                }
                let mut decoder = FrameDecoder::new(MAX_CLIENT_FRAME);
                // Frames sent right behind the handshake are its first words.
                if !rest.is_empty() && decoder.feed(&rest).is_err() {
                    return Some(HttpRequest::Answer(response::error(
                        400,
                        "a bad WebSocket frame came with the handshake",
                        cors,
                    )));
                }
                self.websocket = Some(decoder);
                (
                    OutputFormat::WebSocketFlv,
                    websocket::upgrade_response(key, cors),
                )
            }
            None if head.version == HttpVersion::Http10 => {
                (OutputFormat::HttpFlv, response::flv_head(cors, false))
            }
            None => (OutputFormat::HttpFlvChunked, response::flv_head(cors, true)),
        };
        let head_only = head.method == "HEAD";
        // A HEAD is answered and the connection closed: the head says so (not
        // `keep-alive`, which would invite a next request nobody reads).
        let response_head = if head_only {
            response::flv_head(cors, false)
        } else {
            response_head
        };
        self.format = Some(format);
        Some(HttpRequest::Play {
            app,
            stream,
            query: head.query.clone(),
            format,
            response_head,
            head_only,
        })
    }

    /// Takes what a playing client sent.
    pub fn feed_playing(&mut self, input: &[u8]) -> WebSocketReply {
        self.bytes_received += input.len() as u64;
        let Some(decoder) = self.websocket.as_mut() else {
            return WebSocketReply::default();
        };
        let mut reply = WebSocketReply::default();
        match decoder.feed(input) {
            Ok(events) => {
                for event in events {
                    match event {
                        WsEvent::Ping(payload) => reply.send.push(websocket::pong_frame(&payload)),
                        WsEvent::Pong | WsEvent::Data => {}
                        WsEvent::Close { code } => {
                            reply
                                .send
                                .push(websocket::close_frame(code.unwrap_or(1000), ""));
                            reply.close = Some("the WebSocket client closed".into());
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                reply
                    .send
                    .push(websocket::close_frame(e.close_code(), &e.to_string()));
                reply.close = Some(format!("WebSocket protocol error: {e}"));
            }
        }
        reply
    }

    /// The bytes that end the response cleanly: the last chunk, or a WebSocket close.
    pub fn ending(&self) -> Option<Bytes> {
        match self.format? {
            OutputFormat::HttpFlvChunked => Some(Bytes::from_static(response::LAST_CHUNK)),
            OutputFormat::WebSocketFlv => Some(websocket::close_frame(1001, "stream ended")),
            OutputFormat::HttpFlv | OutputFormat::Rtmp => None,
        }
    }
}
