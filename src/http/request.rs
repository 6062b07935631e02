//! The request head of a viewer's HTTP connection, and the route it asks for.
//!
//! HTTP/1.x framing is easy to get subtly wrong (header folding, bare CRs, odd
//! whitespace, request smuggling), so the head is parsed by `httparse`, the parser under
//! hyper, and this file only interprets the headers a viewer needs. Two caps keep a peer
//! from making us hold memory: the head must end within [`MAX_HEAD_BYTES`], and may carry
//! at most [`MAX_HEADERS`] headers; past either the answer is 431.
//!
//! Routing is deliberately narrow: one shape of path, `/{app}/{stream}.flv`, where `app`
//! and `stream` become RTMP names. Those names reach logs, the admin API and maybe file
//! names one day, so anything odd after one round of percent-decoding (`..`, a `/` or `\`
//! inside a segment, NUL and other control characters) is refused with 400 rather than
//! cleaned up: a real player never sends them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The most bytes a request head may take, request line to the blank line included.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines a request head may carry.
pub const MAX_HEADERS: usize = 64;
/// The longest `app` or `stream` name, in bytes after percent-decoding.
pub const MAX_SEGMENT_BYTES: usize = 256;

/// The HTTP version of a request. It decides the body framing: chunked for HTTP/1.1,
/// close-delimited for HTTP/1.0, which has no chunked encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
}

/// What the relay needs from a request head; the rest of the headers are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// As sent; methods are case-sensitive, so `get` is not `GET`.
    pub method: String,
    /// The request target up to its `?`, still percent-encoded (see [`route`]).
    pub path: String,
    /// What followed the `?`, without it; empty when there was none. Left to the relay
    /// (a token for authorisation, say): routing ignores it.
    pub query: String,
    pub version: HttpVersion,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub user_agent: Option<String>,
    /// `Sec-WebSocket-Key`, only when the request is a valid RFC 6455 opening handshake:
    /// `GET`, HTTP/1.1, `Upgrade: websocket`, `Connection: upgrade`,
    /// `Sec-WebSocket-Version: 13` and a key that is base64 of 16 bytes.
    pub websocket_key: Option<String>,
    /// `Upgrade` names `websocket`, valid handshake or not. Set with no `websocket_key`,
    /// the handshake is broken and [`route`] answers 400. Other upgrades (curl's `h2c`)
    /// are ignored, as RFC 9110 allows, and the request is served as HTTP/1.1.
    pub upgrade_requested: bool,
    /// Whether the client keeps the connection open after the response: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// A `Range` header was sent. A live stream has no ranges: the relay answers 200 with
    /// the whole body, which RFC 9110 allows, but may want to know.
    pub range: bool,
    /// The `Range` header's value, for a stored file's download (`range.rs`). Empty when
    /// the header came more than once, which `range::resolve` then ignores.
    pub range_value: Option<String>,
}

/// The outcome of [`parse_head`] on what has arrived so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    /// No complete head yet, and still under the caps: read more and call again with
    /// everything received so far.
    Incomplete,
    /// `consumed` bytes were the head. Bytes after them are the client's next words (for a
    /// WebSocket, its first frames): keep them.
    Complete { head: RequestHead, consumed: usize },
    /// Answer `response::error(err.status, ...)` and close.
    Rejected(HttpError),
}

/// An HTTP error to answer with: a status code and a short reason for the body and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}")]
pub struct HttpError {
    pub status: u16,
    pub reason: String,
}

impl HttpError {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }
}

/// Parses the request head at the start of `buf`, everything received so far.
///
/// 431 when no complete head fits in [`MAX_HEAD_BYTES`] or it has more than
/// [`MAX_HEADERS`] headers; 505 for an HTTP version other than 1.0 and 1.1; 400 for
/// anything `httparse` refuses, a missing or repeated `Host` on HTTP/1.1, a repeated
/// header we read, a value that is not UTF-8, or a request body (`Content-Length` other
/// than 0, or any `Transfer-Encoding`): no route takes one, and skipping it would mean
/// trusting a peer's framing on a keep-alive connection.
pub fn parse_head(buf: &[u8]) -> HeadParse {
    // Only the first MAX_HEAD_BYTES are ever looked at, so parsing cost stays bounded
    // however much a client pipelines behind its head.
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(window) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_HEAD_BYTES {
                HeadParse::Rejected(HttpError::new(431, "request head too large"))
            } else {
                HeadParse::Incomplete
            }
        }
        Ok(httparse::Status::Complete(consumed)) => match interpret(&req) {
            Ok(head) => HeadParse::Complete { head, consumed },
            Err(e) => HeadParse::Rejected(e),
        },
        Err(httparse::Error::TooManyHeaders) => {
            HeadParse::Rejected(HttpError::new(431, "too many header fields"))
        }
        Err(httparse::Error::Version) if names_other_version(window) => {
            HeadParse::Rejected(HttpError::new(505, "only HTTP/1.0 and HTTP/1.1"))
        }
        Err(e) => HeadParse::Rejected(HttpError::bad_request(e.to_string())),
    }
}

/// Whether a request line `httparse` refused for its version is a well-formed line naming
/// another version (`GET / HTTP/2.0`: 505), rather than a malformed one whose version
/// slot holds something else (`GET /a b HTTP/1.1`: 400).
fn names_other_version(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\n')
        .find(|l| !l.is_empty() && *l != b"\r");
    let Some(line) = line else {
        return false;
    };
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    parts.len() == 3 && parts[2].starts_with(b"HTTP/")
}

/// Turns a complete `httparse` request into a [`RequestHead`].
fn interpret(req: &httparse::Request<'_, '_>) -> Result<RequestHead, HttpError> {
    // A complete parse always fills these three; refuse rather than unwrap all the same.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::bad_request("incomplete request line"));
    };
    let version = match minor {
        0 => HttpVersion::Http10,
        1 => HttpVersion::Http11,
        _ => return Err(HttpError::new(505, "only HTTP/1.0 and HTTP/1.1")),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };

    let mut host = None;
    let mut origin = None;
    let mut user_agent = None;
    let mut ws_key = None;
    let mut ws_version = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut upgrade_requested = false;
    let mut range = false;
    let mut range_value = None;

    for h in req.headers.iter() {
        let name = h.name;
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if !(is("host")
            || is("origin")
            || is("user-agent")
            || is("sec-websocket-key")
            || is("sec-websocket-version")
            || is("connection")
            || is("upgrade")
            || is("range")
            || is("content-length")
            || is("transfer-encoding"))
        {
            continue;
        }
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::bad_request(format!("{name} is not UTF-8")))?
            .trim_matches(|c: char| c == ' ' || c == '\t');
        if is("host") {
            set_once(&mut host, value, name)?;
        } else if is("origin") {
            set_once(&mut origin, value, name)?;
        } else if is("user-agent") {
            set_once(&mut user_agent, value, name)?;
        } else if is("sec-websocket-key") {
            set_once(&mut ws_key, value, name)?;
        } else if is("sec-websocket-version") {
            set_once(&mut ws_version, value, name)?;
        } else if is("connection") {
            // A comma-separated token list, possibly over several header lines.
            for token in tokens(value) {
                conn_close |= token.eq_ignore_ascii_case("close");
                conn_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                conn_upgrade |= token.eq_ignore_ascii_case("upgrade");
            }
        } else if is("upgrade") {
            upgrade_requested |= tokens(value).any(|t| t.eq_ignore_ascii_case("websocket"));
        } else if is("range") {
            range_value = Some(if range {
                String::new()
            } else {
                value.to_owned()
            });
            range = true;
        } else if is("content-length") {
            if value != "0" {
                return Err(HttpError::bad_request("request body not accepted"));
            }
        } else {
            // transfer-encoding
            return Err(HttpError::bad_request("request body not accepted"));
        }
    }

    if version == HttpVersion::Http11 && host.is_none() {
        return Err(HttpError::bad_request("HTTP/1.1 request without Host"));
    }

    let keep_alive = match version {
        HttpVersion::Http11 => !conn_close,
        HttpVersion::Http10 => conn_keep_alive && !conn_close,
    };

    let websocket_key = ws_key.filter(|key| {
        upgrade_requested
            && conn_upgrade
            && method == "GET"
            && version == HttpVersion::Http11
            && ws_version.as_deref() == Some("13")
            && valid_websocket_key(key)
    });

    Ok(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        version,
        host,
        origin,
        user_agent,
        websocket_key,
        upgrade_requested,
        keep_alive,
        range,
        range_value,
    })
}

/// Stores a header's value, refusing a second copy: two `Host`s or two keys are a sign of
/// a confused proxy or an attack, and picking one would be a guess.
fn set_once(slot: &mut Option<String>, value: &str, name: &str) -> Result<(), HttpError> {
    if slot.is_some() {
        return Err(HttpError::bad_request(format!("repeated {name}")));
    }
    *slot = Some(value.to_owned());
    Ok(())
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// RFC 6455 §4.1: the key is base64 of 16 random bytes, so exactly 24 characters.
fn valid_websocket_key(key: &str) -> bool {
    key.len() == 24 && BASE64.decode(key).is_ok_and(|raw| raw.len() == 16)
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An FLV stream: over HTTP, or over WebSocket when `head.websocket_key` is set.
    /// Whether anyone publishes it is the relay's question (404 if not).
    Flv { app: String, stream: String },
    /// A stored file of `app`'s `vod_dir`, downloaded as it is: `/vod/{app}/{name}.flv`
    /// or `.mp4`. `file` is the file's name (`{name}.flv`), `name` without the extension.
    Vod {
        app: String,
        name: String,
        file: String,
        container: VodContainer,
    },
    /// A CORS preflight (`OPTIONS`, any path): answer `response::preflight`.
    Preflight,
}

/// The containers a stored file is served in, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VodContainer {
    Flv,
    Mp4,
}

impl VodContainer {
    pub fn content_type(self) -> &'static str {
        match self {
            VodContainer::Flv => "video/x-flv",
            VodContainer::Mp4 => "video/mp4",
        }
    }
}

/// Routes a parsed head.
///
/// - `OPTIONS` (any target) → [`Route::Preflight`].
/// - `GET` or `HEAD` `/{app}/{stream}.flv` → [`Route::Flv`]; the query is ignored here
///   (it stays in `head.query`).
/// - `GET` or `HEAD` `/vod/{app}/{name}.flv` or `.mp4` → [`Route::Vod`], the same checks
///   on each segment; any other extension there → 404.
/// - Any other method → 405 (answer with `Allow`, which `response::error` adds).
/// - A broken WebSocket handshake (`Upgrade: websocket` without a valid key, version 13,
///   `Connection: upgrade`, `GET` and HTTP/1.1) → 400.
/// - A path that is well formed but not `/{app}/{stream}.flv` (`/`, `/favicon.ico`,
///   `/live/cam.mp4`) → 404: there is nothing there, and nothing wrong with asking.
/// - A path that is malformed or suspicious → 400: not starting with `/`; more than two
///   segments (a trailing `/` counts); an empty `app` or `stream`; after decoding each
///   segment's percent-escapes once, a bad escape, bytes that are not UTF-8, `.` or `..`,
///   a `/` or `\`, NUL or any other control character, or more than
///   [`MAX_SEGMENT_BYTES`] bytes.
pub fn route(head: &RequestHead) -> Result<Route, HttpError> {
    match head.method.as_str() {
        "OPTIONS" => return Ok(Route::Preflight),
        "GET" | "HEAD" => {}
        _ => return Err(HttpError::new(405, "only GET, HEAD and OPTIONS")),
    }
    if head.upgrade_requested && head.websocket_key.is_none() {
        return Err(HttpError::bad_request("invalid WebSocket handshake"));
    }
    let Some(rest) = head.path.strip_prefix('/') else {
        return Err(HttpError::bad_request("path must start with /"));
    };
    if rest.is_empty() {
        return Err(not_found());
    }
    let raw: Vec<&str> = rest.split('/').collect();
    if raw.len() == 3 && raw[0] == "vod" {
        return vod_route(&raw[1..]);
    }
    if raw.len() > 2 {
        return Err(HttpError::bad_request("more than two path segments"));
    }
    let mut segments = Vec::with_capacity(raw.len());
    for seg in raw {
        segments.push(decode_segment(seg)?);
    }
    let [app, last] = <[String; 2]>::try_from(segments).map_err(|_| not_found())?;
    let Some(stream) = last.strip_suffix(".flv") else {
        return Err(not_found());
    };
    if stream.is_empty() || stream == "." || stream == ".." {
        return Err(HttpError::bad_request("empty or dot stream name"));
    }
    Ok(Route::Flv {
        stream: stream.to_owned(),
        app,
    })
}

/// `/vod/{app}/{file}`: `segments` are the last two, still encoded.
fn vod_route(segments: &[&str]) -> Result<Route, HttpError> {
    let app = decode_segment(segments[0])?;
    let file = decode_segment(segments[1])?;
    let (name, container) = if let Some(n) = file.strip_suffix(".flv") {
        (n, VodContainer::Flv)
    } else if let Some(n) = file.strip_suffix(".mp4") {
        (n, VodContainer::Mp4)
    } else {
        return Err(HttpError::new(404, "not /vod/{app}/{name}.flv or .mp4"));
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(HttpError::bad_request("empty or dot file name"));
    }
    Ok(Route::Vod {
        name: name.to_owned(),
        file: file.clone(),
        app,
        container,
    })
}

fn not_found() -> HttpError {
    HttpError::new(404, "not /{app}/{stream}.flv")
}

/// Percent-decodes one path segment once and checks what came out. Decoding only once is
/// the point: `%252e%252e` becomes the harmless name `%2e%2e`, never `..`.
fn decode_segment(seg: &str) -> Result<String, HttpError> {
    let bytes = seg.as_bytes();
    // Decoding only shrinks, so the raw length bounds the allocation (and the head is
    // already capped at MAX_HEAD_BYTES).
    let mut out = Vec::with_capacity(bytes.len().min(MAX_SEGMENT_BYTES + 1));
    let mut i = 0;
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex(c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(HttpError::bad_request("bad percent-escape in path"));
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            bytes[i - 1]
        };
        if b < 0x20 || b == 0x7f {
            return Err(HttpError::bad_request("control character in path"));
        }
        if b == b'/' || b == b'\\' {
            return Err(HttpError::bad_request(
                "slash or backslash inside a segment",
            ));
        }
        out.push(b);
        if out.len() > MAX_SEGMENT_BYTES {
            return Err(HttpError::bad_request("path segment too long"));
        }
    }
    let s = String::from_utf8(out).map_err(|_| HttpError::bad_request("path is not UTF-8"))?;
    // The byte check above sees only C0 and DEL; the C1 controls (U+0080 to U+009F) are
    // two bytes in UTF-8, so they show only once decoded.
    if s.chars().any(char::is_control) {
        return Err(HttpError::bad_request("control character in path"));
    }
    if s.is_empty() {
        return Err(HttpError::bad_request("empty path segment"));
    }
    if s == "." || s == ".." {
        return Err(HttpError::bad_request("dot segment in path"));
    }
    Ok(s)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(raw: &[u8]) -> (RequestHead, usize) {
        match parse_head(raw) {
            HeadParse::Complete { head, consumed } => (head, consumed),
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn rejected(raw: &[u8]) -> u16 {
        match parse_head(raw) {
            HeadParse::Rejected(e) => e.status,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn get(path: &str) -> RequestHead {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        complete(raw.as_bytes()).0
    }

    fn route_status(path: &str) -> u16 {
        route(&get(path)).expect_err(path).status
    }

    fn flv(app: &str, stream: &str) -> Route {
        Route::Flv {
            app: app.into(),
            stream: stream.into(),
        }
    }

    // curl 7.88: `curl -v http://127.0.0.1:8080/live/cam.flv?token=abc`
    const CURL: &[u8] = b"GET /live/cam.flv?token=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

    // ffmpeg 5.1 / ffplay: `ffplay http://127.0.0.1:8080/live/cam.flv`
    const FFMPEG: &[u8] = b"GET /live/cam.flv HTTP/1.1\r\nUser-Agent: Lavf/59.27.100\r\nAccept: */*\r\nRange: bytes=0-\r\nConnection: close\r\nHost: 127.0.0.1:8080\r\nIcy-MetaData: 1\r\n\r\n";

    // Chrome 120 running flv.js (fetch, cross-origin).
    const CHROME_FETCH: &[u8] = b"GET /live/cam.flv HTTP/1.1\r\nHost: media.example.com:8080\r\nConnection: keep-alive\r\nsec-ch-ua: \"Not_A Brand\";v=\"8\", \"Chromium\";v=\"120\"\r\nsec-ch-ua-mobile: ?0\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\nsec-ch-ua-platform: \"Linux\"\r\nAccept: */*\r\nOrigin: http://player.example.com\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\nReferer: http://player.example.com/\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n";

    // Chrome 120 opening `new WebSocket("ws://media.example.com:8080/live/cam.flv")`.
    const CHROME_WS: &[u8] = b"GET /live/cam.flv HTTP/1.1\r\nHost: media.example.com:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://player.example.com\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    // Chrome's CORS preflight (a player that adds a custom header forces one).
    const CHROME_PREFLIGHT: &[u8] = b"OPTIONS /live/cam.flv HTTP/1.1\r\nHost: media.example.com:8080\r\nConnection: keep-alive\r\nAccept: */*\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\nOrigin: http://player.example.com\r\nUser-Agent: Mozilla/5.0\r\nSec-Fetch-Mode: cors\r\n\r\n";

    #[test]
    fn curl() {
        let (head, consumed) = complete(CURL);
        assert_eq!(consumed, CURL.len());
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/live/cam.flv");
        assert_eq!(head.query, "token=abc");
        assert_eq!(head.version, HttpVersion::Http11);
        assert_eq!(head.host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(head.user_agent.as_deref(), Some("curl/7.88.1"));
        assert!(head.keep_alive && !head.upgrade_requested && !head.range);
        assert_eq!(head.websocket_key, None);
        assert_eq!(route(&head), Ok(flv("live", "cam")));
    }

    #[test]
    fn ffmpeg() {
        let (head, _) = complete(FFMPEG);
        assert!(!head.keep_alive);
        assert!(head.range);
        assert_eq!(route(&head), Ok(flv("live", "cam")));
    }

    #[test]
    fn chrome_fetch() {
        let (head, _) = complete(CHROME_FETCH);
        assert_eq!(head.origin.as_deref(), Some("http://player.example.com"));
        assert!(head.keep_alive);
        assert_eq!(route(&head), Ok(flv("live", "cam")));
    }

    #[test]
    fn chrome_websocket() {
        let (head, _) = complete(CHROME_WS);
        assert!(head.upgrade_requested);
        assert_eq!(
            head.websocket_key.as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(route(&head), Ok(flv("live", "cam")));
    }

    #[test]
    fn chrome_preflight() {
        let (head, _) = complete(CHROME_PREFLIGHT);
        assert_eq!(route(&head), Ok(Route::Preflight));
    }

    #[test]
    fn broken_websocket_handshakes_are_400() {
        let base = std::str::from_utf8(CHROME_WS).unwrap();
        for broken in [
            base.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            base.replace("Connection: Upgrade", "Connection: keep-alive"),
            base.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            base.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!"),
            base.replace("GET ", "HEAD "),
        ] {
            let (head, _) = complete(broken.as_bytes());
            assert!(head.upgrade_requested);
            assert_eq!(head.websocket_key, None, "{broken}");
            assert_eq!(route(&head).unwrap_err().status, 400);
        }
        // HTTP/1.0 cannot upgrade either.
        let v10 = base.replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(complete(v10.as_bytes()).0.websocket_key, None);
    }

    #[test]
    fn h2c_upgrade_is_ignored() {
        let raw = b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        let (head, _) = complete(raw);
        assert!(!head.upgrade_requested);
        assert_eq!(route(&head), Ok(flv("live", "cam")));
    }

    #[test]
    fn http10_keep_alive() {
        let (head, _) = complete(b"GET /a/b.flv HTTP/1.0\r\n\r\n");
        assert_eq!(head.version, HttpVersion::Http10);
        assert!(!head.keep_alive);
        assert_eq!(head.host, None);
        let (head, _) = complete(b"GET /a/b.flv HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(head.keep_alive);
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        for cut in 0..CURL.len() {
            assert_eq!(parse_head(&CURL[..cut]), HeadParse::Incomplete, "cut {cut}");
        }
    }

    #[test]
    fn pipelined_bytes_are_left() {
        let mut raw = CHROME_WS.to_vec();
        raw.extend_from_slice(&[0x89, 0x80, 1, 2, 3, 4]);
        let (_, consumed) = complete(&raw);
        assert_eq!(consumed, CHROME_WS.len());
    }

    #[test]
    fn head_too_large_is_431() {
        let mut raw = b"GET /a/b.flv HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        raw.resize(MAX_HEAD_BYTES - 1, b'a');
        assert_eq!(parse_head(&raw), HeadParse::Incomplete);
        raw.push(b'a');
        assert_eq!(rejected(&raw), 431);
        // A head that ends within the cap is fine even with more behind it.
        let mut ok = CURL.to_vec();
        ok.resize(MAX_HEAD_BYTES * 2, b'z');
        assert_eq!(complete(&ok).1, CURL.len());
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = b"GET /a/b.flv HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..MAX_HEADERS - 1 {
            raw.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        let mut exact = raw.clone();
        exact.extend_from_slice(b"\r\n");
        complete(&exact);
        raw.extend_from_slice(b"X-last: y\r\n\r\n");
        assert_eq!(rejected(&raw), 431);
    }

    #[test]
    fn malformed_heads() {
        assert_eq!(rejected(b"GET /a/b.flv HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(rejected(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(
            rejected(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            400
        );
        assert_eq!(rejected(b"GET /a/b.flv HTTP/1.1\r\n\r\n"), 400, "no Host");
        assert_eq!(
            rejected(b"GET /a/b.flv HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"GET /a/b.flv HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"),
            400
        );
        assert_eq!(
            rejected(b"GET /a/b.flv HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"GET /a/b.flv HTTP/1.1\r\nHost: \xff\r\n\r\n"),
            400
        );
        assert_eq!(rejected(b"GET /a b.flv HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        complete(b"GET /a/b.flv HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn methods() {
        let head =
            |m: &str| complete(format!("{m} /a/b.flv HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).0;
        assert_eq!(route(&head("HEAD")), Ok(flv("a", "b")));
        for m in ["POST", "PUT", "DELETE", "get", "PATCH"] {
            assert_eq!(route(&head(m)).unwrap_err().status, 405, "{m}");
        }
        // 405 wins over a bad path: the method is wrong whatever the path.
        let raw = b"POST /../x HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(&complete(raw).0).unwrap_err().status, 405);
    }

    #[test]
    fn paths() {
        assert_eq!(route(&get("/live/cam.flv")), Ok(flv("live", "cam")));
        assert_eq!(route(&get("/live/cam.v2.flv")), Ok(flv("live", "cam.v2")));
        assert_eq!(route(&get("/li%76e/c%41m.flv")), Ok(flv("live", "cAm")));
        assert_eq!(route(&get("/live/caf%C3%A9.flv")), Ok(flv("live", "café")));
        assert_eq!(route(&get("/live/a%20b.flv")), Ok(flv("live", "a b")));
        // Decoded once only: the result is a harmless name.
        assert_eq!(
            route(&get("/live/%252e%252e.flv")),
            Ok(flv("live", "%2e%2e"))
        );
        let long = "s".repeat(MAX_SEGMENT_BYTES - 4);
        assert_eq!(
            route(&get(&format!("/live/{long}.flv"))),
            Ok(flv("live", &long))
        );

        for p in [
            "/",
            "/favicon.ico",
            "/live/cam.mp4",
            "/live/cam",
            "/live/cam.FLV",
        ] {
            assert_eq!(route_status(p), 404, "{p}");
        }
        for p in [
            "live/cam.flv",
            "*",
            "/a/b/c.flv",
            "/live/cam.flv/",
            "/../cam.flv",
            "/%2e%2e/cam.flv",
            "/%2E%2E/cam.flv",
            "/./cam.flv",
            "/live/..flv",
            "/live/.flv",
            "//cam.flv",
            "/live/%2Fetc%2Fpasswd.flv",
            "/live/a%5Cb.flv",
            "/live/a\\b.flv",
            "/live/a%00.flv",
            "/live/a%0d%0a.flv",
            "/live/a%7f.flv",
            "/live/a%zz.flv",
            "/live/a%4.flv",
            "/live/a%.flv",
            "/live/%ff.flv",
            "/live/x%C3.flv",
            "/live//cam.flv",
        ] {
            assert_eq!(route_status(p), 400, "{p}");
        }
        let too_long = "s".repeat(MAX_SEGMENT_BYTES + 1);
        assert_eq!(route_status(&format!("/live/{too_long}.flv")), 400);
        assert_eq!(route_status(&format!("/{too_long}/cam.flv")), 400);
    }

    #[test]
    fn c1_control_characters_in_a_segment_are_refused() {
        // Found by the http_request fuzz target (minimised, split byte dropped): the raw
        // UTF-8 of U+008B, a C1 control, passed the per-byte check into the stream name.
        let (head, _) = complete(b"GET /live/pl\xc2\x8b=1.flv HTTP/1.1\r\nHost:(p\n\r\n");
        assert_eq!(route(&head).expect_err("C1 control").status, 400);
        for p in [
            "/live/a%C2%80.flv",
            "/live/a%c2%8b.flv",
            "/live/a%C2%9F.flv",
            "/a%C2%85/cam.flv",
            "/vod/live/a%C2%8B.mp4",
            "/vod/a%C2%8B/movie.flv",
        ] {
            assert_eq!(route_status(p), 400, "{p}");
        }
        // The first character past the C1 block is no control and still routes.
        assert_eq!(
            route(&get("/live/a%C2%A0.flv")).unwrap(),
            flv("live", "a\u{a0}")
        );
    }

    #[test]
    fn vod_routes_and_their_refusals() {
        assert_eq!(
            route(&get("/vod/live/movie.mp4")).unwrap(),
            Route::Vod {
                app: "live".into(),
                name: "movie".into(),
                file: "movie.mp4".into(),
                container: VodContainer::Mp4,
            }
        );
        assert_eq!(
            route(&get("/vod/live/a%20b.flv?x=1")).unwrap(),
            Route::Vod {
                app: "live".into(),
                name: "a b".into(),
                file: "a b.flv".into(),
                container: VodContainer::Flv,
            }
        );
        // Traversal, encoded or not, and slashes inside a segment: 400.
        for path in [
            "/vod/live/..",
            "/vod/../x.flv",
            "/vod/live/%2e%2e",
            "/vod/%2e%2e/x.mp4",
            "/vod/live/..%2fetc%2fpasswd.flv",
            "/vod/live/%2fetc%2fpasswd.flv",
            "/vod/live/.mp4",
            "/vod/live/%00.mp4",
        ] {
            assert_eq!(route_status(path), 400, "{path}");
        }
        // Other extensions, and deeper paths.
        assert_eq!(route_status("/vod/live/x.mkv"), 404);
        assert_eq!(route_status("/vod/live/sub/x.mp4"), 400);
        // The Range value is kept for the download.
        let raw = b"GET /vod/live/x.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n";
        assert_eq!(complete(raw).0.range_value.as_deref(), Some("bytes=5-9"));
        let twice =
            b"GET /vod/live/x.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\nRange: bytes=1-2\r\n\r\n";
        assert_eq!(complete(twice).0.range_value.as_deref(), Some(""));
    }

    proptest! {
        #[test]
        fn parse_and_route_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let HeadParse::Complete { head, consumed } = parse_head(&raw) {
                prop_assert!(consumed <= raw.len() && consumed <= MAX_HEAD_BYTES);
                let _ = route(&head);
            }
        }

        #[test]
        fn route_never_panics_on_any_path(path in "[!-~]{0,80}", tail in "(%[0-9a-fA-F]{0,2}|[a-z./\\\\]){0,20}") {
            let raw = format!("GET {path}{tail} HTTP/1.1\r\nHost: x\r\n\r\n");
            if let HeadParse::Complete { head, .. } = parse_head(raw.as_bytes())
                && let Ok(Route::Flv { app, stream }) = route(&head)
            {
                for name in [&app, &stream] {
                    prop_assert!(!name.is_empty() && name != "." && name != "..");
                    prop_assert!(!name.contains(['/', '\\', '\0']));
                    prop_assert!(!name.chars().any(char::is_control));
                    prop_assert!(name.len() <= MAX_SEGMENT_BYTES);
                }
            }
        }

        #[test]
        fn any_cut_of_a_real_head_is_incomplete(cut in 0..CHROME_WS.len()) {
            prop_assert_eq!(parse_head(&CHROME_WS[..cut]), HeadParse::Incomplete);
        }
    }
}
