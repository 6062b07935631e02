//! HTTP-FLV and WebSocket-FLV viewers (`--protocol http-flv|ws-flv`).
//!
//! An HTTP-FLV viewer opens a TCP connection, sends `GET /{app}/{stream}.flv HTTP/1.1`,
//! and reads the response head (`httparse`; the status must be 200). The body (chunked,
//! or close-delimited) is the FLV stream. A WebSocket-FLV viewer sends the same request as
//! an RFC 6455 upgrade with a random `Sec-WebSocket-Key`, checks the `101` and its
//! `Sec-WebSocket-Accept`, and reads binary frames whose payloads, end to end, are the FLV
//! stream; it answers pings with masked pongs.
//!
//! Play starts with the response head (200 or 101); the connect time is the TCP connect
//! (there is no handshake before the request). From there the FLV stream goes through an
//! [`FlvWalker`], and every audio and video tag goes to the same bookkeeping as an RTMP
//! viewer's media messages ([`Viewer::on_video`], [`Viewer::on_audio`]): markers, latency,
//! loss, order, keyframes. As with RTMP, header-walking viewers keep only each tag's first
//! bytes (chunk-size lines, frame headers and tag headers are walked, payloads skipped where
//! they lie in the read buffer); verifying viewers (`--verify-every`) keep whole payloads and
//! check their checksums; byte-counting viewers walk tags until their first keyframe, then
//! only count bytes ([`Viewer::count_bytes`]).

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_lite::AsyncWriteExt;
use sha1::{Digest, Sha1};

use crate::clock;
use crate::flv::{BodyError, Dechunker, FlvTag, FlvWalker, OP_CLOSE, OP_PONG, WsEvent, WsFrames};
use crate::settings::HttpUrl;
use crate::viewer::{End, Viewer, ViewerSpec};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;

/// Plays `url` over HTTP-FLV, or WebSocket-FLV when `websocket`, until it ends.
pub(crate) async fn play(v: &mut Viewer, spec: &ViewerSpec, url: &HttpUrl, websocket: bool) -> End {
    let timeout = v.ctx.settings.connect_timeout;
    let (mut stream, mut batch) = match v.connect(spec, url.addr).await {
        Ok(connected) => connected,
        Err(end) => return end,
    };
    v.connected(Instant::now());
    let mut rng = Rng(spec.index as u64 ^ clock::micros(Instant::now()).rotate_left(32));
    let key = websocket
        .then(|| BASE64.encode([rng.next().to_le_bytes(), rng.next().to_le_bytes()].concat()));
    if let Err(e) = stream
        .write_all(request(url, key.as_deref()).as_bytes())
        .await
    {
        return End::Failed(format!("write failed: {e}"));
    }
    let mut buf = vec![0u8; Viewer::read_size(&batch)];
    let mut head: Vec<u8> = Vec::new();
    let mut body: Option<Body> = None;
    loop {
        let n = match v.read(&mut stream, batch.as_mut(), &mut buf).await {
            Ok(n) => n,
            Err(end) => return end,
        };
        let now = Instant::now();
        let rest;
        let data = match body {
            Some(_) => &buf[..n],
            None => {
                head.extend_from_slice(&buf[..n]);
                match parse_head(&head, key.as_deref()) {
                    Ok(Some((len, framing))) => {
                        v.start_playing(spec.stream, now);
                        body = Some(Body::new(framing, spec.verifying));
                        rest = head.split_off(len);
                        &rest[..]
                    }
                    Ok(None) if head.len() > MAX_HEAD => {
                        return End::Failed(format!("response head over {MAX_HEAD} bytes"));
                    }
                    Ok(None) if now.duration_since(v.started) > timeout => {
                        return v.play_timeout(timeout);
                    }
                    Ok(None) => continue,
                    Err(reason) => return End::Failed(reason),
                }
            }
        };
        let Some(b) = body.as_mut() else {
            continue;
        };
        let result = b.feed(data, &mut rng, |tag| match tag.tag_type {
            TAG_VIDEO => v.on_video(tag.prefix, tag.len, tag.timestamp, tag.whole, now),
            TAG_AUDIO => v.on_audio(tag.timestamp, None),
            _ => {}
        });
        if let Err(e) = result {
            return v.closed(&format!("protocol error: {e}"));
        }
        if !b.replies.is_empty() {
            let out = std::mem::take(&mut b.replies);
            if let Err(e) = stream.write_all(&out).await {
                return v.closed(&format!("write failed: {e}"));
            }
        }
        if let Some(how) = b.ended.take() {
            return v.closed(&format!("stream ended by server ({how})"));
        }
        if v.joined(spec) {
            return v.count_bytes(&mut stream, spec, None).await;
        }
    }
}

/// The request: a plain GET, or a WebSocket upgrade with `key`.
fn request(url: &HttpUrl, ws_key: Option<&str>) -> String {
    let mut out = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shardcast-load\r\nAccept: */*\r\n",
        url.target, url.authority
    );
    match ws_key {
        Some(key) => out.push_str(&format!(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {key}\r\n\r\n"
        )),
        None => out.push_str("Connection: keep-alive\r\n\r\n"),
    }
    out
}

/// `Sec-WebSocket-Accept` for `key`.
fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// How the body comes.
#[derive(Debug)]
enum Framing {
    Chunked(Dechunker),
    /// Close-delimited (HTTP/1.0 style), or a length we do not need.
    Raw,
    WebSocket(WsFrames),
}

/// Reads a response head: `None` while incomplete, else its length and the body's framing;
/// an error is why the viewer failed.
fn parse_head(head: &[u8], ws_key: Option<&str>) -> Result<Option<(usize, Framing)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad HTTP response: {e}")),
    };
    let code = response.code.unwrap_or_default();
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let expected = if ws_key.is_some() { 101 } else { 200 };
    if code != expected {
        return Err(format!(
            "play refused: HTTP {code} {}",
            response.reason.unwrap_or_default()
        ));
    }
    let framing = match ws_key {
        Some(key) => {
            let upgrade = header("upgrade").unwrap_or_default();
            if !upgrade.eq_ignore_ascii_case("websocket") {
                return Err(format!("101 without Upgrade: websocket ({upgrade:?})"));
            }
            if header("sec-websocket-accept").as_deref() != Some(&accept_key(key)) {
                return Err("101 with a wrong Sec-WebSocket-Accept".to_owned());
            }
            Framing::WebSocket(WsFrames::default())
        }
        None => {
            let chunked = header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            if chunked {
                Framing::Chunked(Dechunker::default())
            } else {
                Framing::Raw
            }
        }
    };
    Ok(Some((len, framing)))
}

/// The body after the head: its framing, the FLV walk, and what to send back.
struct Body {
    framing: Framing,
    walker: FlvWalker,
    /// Frames to send (pongs, a close).
    replies: Vec<u8>,
    /// Set when the server ended the stream (last chunk, close frame).
    ended: Option<String>,
}

impl Body {
    fn new(framing: Framing, verifying: bool) -> Body {
        Body {
            framing,
            walker: FlvWalker::new(verifying),
            replies: Vec::new(),
            ended: None,
        }
    }

    /// Walks `data`, calling `on_tag` for each FLV tag that ends in it.
    fn feed(
        &mut self,
        mut data: &[u8],
        rng: &mut Rng,
        mut on_tag: impl FnMut(FlvTag<'_>),
    ) -> Result<(), BodyError> {
        match &mut self.framing {
            Framing::Raw => self.walker.scan(data, &mut on_tag)?,
            Framing::Chunked(d) => {
                while let Some(piece) = d.next(&mut data)? {
                    self.walker.scan(piece, &mut on_tag)?;
                }
                if d.done() {
                    self.ended = Some("end of the chunked body".to_owned());
                }
            }
            Framing::WebSocket(w) => {
                while let Some(event) = w.next(&mut data)? {
                    match event {
                        WsEvent::Data(piece) => self.walker.scan(piece, &mut on_tag)?,
                        WsEvent::Ping(payload) => self.replies.extend(crate::flv::client_frame(
                            OP_PONG,
                            &payload,
                            rng.mask(),
                        )),
                        WsEvent::Pong => {}
                        WsEvent::Close(code) => {
                            let code_bytes = code.map(u16::to_be_bytes);
                            self.replies.extend(crate::flv::client_frame(
                                OP_CLOSE,
                                code_bytes.as_ref().map_or(&[][..], |c| &c[..]),
                                rng.mask(),
                            ));
                            self.ended = Some(match code {
                                Some(code) => format!("WebSocket close {code}"),
                                None => "WebSocket close".to_owned(),
                            });
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// splitmix64: keys and masks need to be unpredictable to caches in between, not secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.next() as u32).to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn response_heads() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\nFLV";
        let (len, framing) = parse_head(ok, None).unwrap().unwrap();
        assert_eq!(&ok[len..], b"FLV");
        assert!(matches!(framing, Framing::Chunked(_)));
        assert!(parse_head(&ok[..20], None).unwrap().is_none());
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: video/x-flv\r\n\r\n";
        assert!(matches!(
            parse_head(raw, None).unwrap().unwrap().1,
            Framing::Raw
        ));
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_head(missing, None).unwrap_err(),
            "play refused: HTTP 404 Not Found"
        );
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let upgraded = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(matches!(
            parse_head(upgraded, Some(key)).unwrap().unwrap().1,
            Framing::WebSocket(_)
        ));
        assert!(parse_head(upgraded, Some("AAAAAAAAAAAAAAAAAAAAAA==")).is_err());
        assert!(parse_head(ok, Some(key)).is_err());
    }

    #[test]
    fn requests() {
        let url = crate::settings::parse_http_url("http://127.0.0.1:8080/live/a.flv?t=1").unwrap();
        assert_eq!(
            request(&url, None),
            "GET /live/a.flv?t=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: shardcast-load\r\n\
             Accept: */*\r\nConnection: keep-alive\r\n\r\n"
        );
        assert!(request(&url, Some("k")).contains("Upgrade: websocket\r\n"));
    }
}
