//! The response heads a viewer's HTTP connection gets, and chunked-transfer framing.
//!
//! A live FLV body has no length, so HTTP/1.1 frames it with `Transfer-Encoding:
//! chunked`: each piece goes out as `{len:x}\r\n`, the bytes, `\r\n`, and `0\r\n\r\n`
//! ends the body (when the publisher leaves), leaving the connection reusable. HTTP/1.0
//! has no chunking: the body simply runs until we close the connection.
//!
//! Browser players fetch from another origin than the page's, so every answer carries
//! CORS headers, and `OPTIONS` preflights get [`preflight`]. The allowed origin comes from
//! the configuration; control characters are dropped from it when written, so even a bad
//! configuration cannot inject a header line.

use bytes::Bytes;

/// CORS settings: `allow_origin` is `*` or one configured origin
/// (`https://player.example.com`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cors<'a> {
    pub allow_origin: &'a str,
}

impl Default for Cors<'_> {
    fn default() -> Self {
        Self { allow_origin: "*" }
    }
}

impl Cors<'_> {
    /// Whether a request from `origin` may read our responses. Browsers enforce this for
    /// `fetch`, but not for WebSocket, where the server must check `Origin` itself (RFC
    /// 6455 §10.2): call this before upgrading. No `Origin` means no browser, so no page
    /// to protect: allowed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self.allow_origin == "*" || self.allow_origin.eq_ignore_ascii_case(o),
        }
    }

    /// Whether `value` is fit for `Access-Control-Allow-Origin`: `*` or one origin
    /// (`scheme://host[:port]`, visible ASCII, no path). For validating configuration.
    pub fn valid_origin(value: &str) -> bool {
        if value == "*" {
            return true;
        }
        let Some((scheme, host)) = value.split_once("://") else {
            return false;
        };
        !scheme.is_empty()
            && !host.is_empty()
            && !host.contains('/')
            && value.bytes().all(|b| b.is_ascii_graphic())
    }

    fn write(&self, out: &mut String) {
        out.push_str("Access-Control-Allow-Origin: ");
        push_header_value(out, self.allow_origin);
        // No `Vary: Origin`: the value is the configured one whatever the request's
        // `Origin`, so a cache may share it.
        out.push_str("\r\n");
    }
}

/// Response headers a player's JavaScript may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "Server, Content-Length, Content-Range";
/// Request headers preflights allow: what players and their fetch wrappers commonly add.
const ALLOW_HEADERS: &str = "Accept, Accept-Encoding, Authorization, Cache-Control, Content-Type, Origin, Range, X-Requested-With";
/// How long a browser may cache a preflight answer, in seconds (Chrome caps it at 7200).
const PREFLIGHT_MAX_AGE: u32 = 86_400;

/// The head of a 200 FLV response.
///
/// `chunked` (for an HTTP/1.1 client): `Transfer-Encoding: chunked` and `Connection:
/// keep-alive`; frame the body with [`chunk_prefix`] and [`CHUNK_SUFFIX`], end it with
/// [`LAST_CHUNK`]. Otherwise (HTTP/1.0): no length and `Connection: close`; the body ends
/// when the connection closes. The same head answers `HEAD`, with no body after it.
pub fn flv_head(cors: &Cors, chunked: bool) -> Bytes {
    let mut out = String::with_capacity(320);
    out.push_str("HTTP/1.1 200 OK\r\nServer: shardcast\r\nContent-Type: video/x-flv\r\n");
    out.push_str("Cache-Control: no-cache\r\nPragma: no-cache\r\n");
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n");
    } else {
        out.push_str("Connection: close\r\n");
    }
    cors.write(&mut out);
    out.push_str("Access-Control-Expose-Headers: ");
    out.push_str(EXPOSE_HEADERS);
    out.push_str("\r\n\r\n");
    Bytes::from(out)
}

/// The head of a stored file's download (`/vod/...`): 200 for the whole file, or 206 with
/// `Content-Range: bytes start-end/len` for `part` (`start..=end`); `Content-Length` of
/// what follows, `Accept-Ranges: bytes`, and `Connection: close` (one request per
/// connection, as for every answer here). The same head answers `HEAD`.
pub fn file_head(cors: &Cors, content_type: &str, len: u64, part: Option<(u64, u64)>) -> Bytes {
    let mut out = String::with_capacity(384);
    match part {
        Some((start, end)) => {
            out.push_str("HTTP/1.1 206 Partial Content\r\n");
            out.push_str(&format!(
                "Content-Range: bytes {start}-{end}/{len}\r\nContent-Length: {}\r\n",
                end + 1 - start
            ));
        }
        None => {
            out.push_str("HTTP/1.1 200 OK\r\n");
            out.push_str(&format!("Content-Length: {len}\r\n"));
        }
    }
    out.push_str("Server: shardcast\r\nContent-Type: ");
    push_header_value(&mut out, content_type);
    out.push_str("\r\nAccept-Ranges: bytes\r\nConnection: close\r\n");
    cors.write(&mut out);
    out.push_str("Access-Control-Expose-Headers: ");
    out.push_str(EXPOSE_HEADERS);
    out.push_str(", Accept-Ranges\r\n\r\n");
    Bytes::from(out)
}

/// 416 for a range a file of `len` bytes cannot satisfy: `Content-Range: bytes */len`,
/// so the client learns the length, and an empty body.
pub fn range_not_satisfiable(cors: &Cors, len: u64) -> Bytes {
    let mut out = String::with_capacity(256);
    out.push_str("HTTP/1.1 416 Range Not Satisfiable\r\nServer: shardcast\r\n");
    out.push_str(&format!(
        "Content-Range: bytes */{len}\r\nContent-Length: 0\r\nAccept-Ranges: bytes\r\n"
    ));
    out.push_str("Connection: close\r\n");
    cors.write(&mut out);
    out.push_str("\r\n");
    Bytes::from(out)
}

/// The answer to a CORS preflight: 204 allowing `GET, HEAD, OPTIONS` and the common
/// request headers, cacheable by the browser for a day. A 204 has no body and, by RFC
/// 9110, no `Content-Length`. `Connection: close`: the relay answers one request per
/// connection, so a client must not send its next request (the `GET` a preflight precedes)
/// on this one.
pub fn preflight(cors: &Cors) -> Bytes {
    let mut out = String::with_capacity(384);
    out.push_str("HTTP/1.1 204 No Content\r\nServer: shardcast\r\nConnection: close\r\n");
    cors.write(&mut out);
    out.push_str("Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n");
    out.push_str("Access-Control-Allow-Headers: ");
    out.push_str(ALLOW_HEADERS);
    out.push_str("\r\nAccess-Control-Max-Age: ");
    out.push_str(&PREFLIGHT_MAX_AGE.to_string());
    out.push_str("\r\n\r\n");
    Bytes::from(out)
}

/// An error response: a short `text/plain` body (`404 Not Found: no such stream`), its
/// `Content-Length`, and `Connection: close`, since after an error we stop reading. A 405
/// also carries `Allow`. `reason` is ours, not the peer's, but control characters are
/// dropped from it anyway, and it is cut to 256 bytes.
pub fn error(status: u16, reason: &str, cors: &Cors) -> Bytes {
    let phrase = status_text(status);
    let mut body = format!("{status} {phrase}");
    if !reason.is_empty() {
        body.push_str(": ");
        push_header_value(&mut body, truncate(reason, 256));
    }
    body.push('\n');

    let mut out = String::with_capacity(256 + body.len());
    out.push_str(&format!(
        "HTTP/1.1 {status} {phrase}\r\nServer: shardcast\r\n"
    ));
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str("Cache-Control: no-cache\r\nConnection: close\r\n");
    if status == 405 {
        out.push_str("Allow: GET, HEAD, OPTIONS\r\n");
    }
    cors.write(&mut out);
    out.push_str("\r\n");
    out.push_str(&body);
    Bytes::from(out)
}

/// The reason phrase for the statuses this server sends; others get `Error`.
pub fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The line in front of a chunk of `len` bytes: `{len:x}\r\n`. `len` must not be 0: a
/// zero-length chunk is [`LAST_CHUNK`] and would end the body, so skip empty pieces.
pub fn chunk_prefix(len: usize) -> Bytes {
    debug_assert!(len > 0, "an empty chunk ends the body");
    Bytes::from(format!("{len:x}\r\n"))
}

/// The CRLF after each chunk's bytes.
pub const CHUNK_SUFFIX: &[u8] = b"\r\n";
/// The end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `value` without control characters, so nothing can end the header line early.
fn push_header_value(out: &mut String, value: &str) {
    out.extend(value.chars().filter(|c| !c.is_control()));
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    /// Parses a response head with httparse: what we write must be valid HTTP.
    fn parse(b: &Bytes) -> (u16, Vec<(String, String)>, usize) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = resp.parse(b).unwrap() else {
            panic!("incomplete response head");
        };
        let hs = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (resp.code.unwrap(), hs, n)
    }

    fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
        hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn flv_head_chunked() {
        let b = flv_head(&Cors::default(), true);
        let (code, hs, n) = parse(&b);
        assert_eq!(code, 200);
        assert_eq!(n, b.len());
        assert_eq!(header(&hs, "content-type"), Some("video/x-flv"));
        assert_eq!(header(&hs, "transfer-encoding"), Some("chunked"));
        assert_eq!(header(&hs, "connection"), Some("keep-alive"));
        assert_eq!(header(&hs, "cache-control"), Some("no-cache"));
        assert_eq!(header(&hs, "access-control-allow-origin"), Some("*"));
        assert!(header(&hs, "access-control-expose-headers").is_some());
        assert_eq!(header(&hs, "content-length"), None);
    }

    #[test]
    fn flv_head_close_delimited() {
        let cors = Cors {
            allow_origin: "https://player.example.com",
        };
        let b = flv_head(&cors, false);
        let (_, hs, _) = parse(&b);
        assert_eq!(header(&hs, "transfer-encoding"), None);
        assert_eq!(header(&hs, "content-length"), None);
        assert_eq!(header(&hs, "connection"), Some("close"));
        assert_eq!(
            header(&hs, "access-control-allow-origin"),
            Some("https://player.example.com")
        );
    }

    #[test]
    fn preflight_head() {
        let b = preflight(&Cors::default());
        let (code, hs, n) = parse(&b);
        assert_eq!((code, n), (204, b.len()));
        assert_eq!(
            header(&hs, "access-control-allow-methods"),
            Some("GET, HEAD, OPTIONS")
        );
        assert!(
            header(&hs, "access-control-allow-headers")
                .unwrap()
                .contains("Range")
        );
        assert_eq!(header(&hs, "access-control-max-age"), Some("86400"));
        assert_eq!(header(&hs, "content-length"), None);
        assert_eq!(header(&hs, "connection"), Some("close"));
    }

    #[test]
    fn error_response() {
        let b = error(404, "no such stream", &Cors::default());
        let (code, hs, n) = parse(&b);
        assert_eq!(code, 404);
        assert!(text(&b).starts_with("HTTP/1.1 404 Not Found\r\n"));
        let body = &text(&b)[n..];
        assert_eq!(body, "404 Not Found: no such stream\n");
        assert_eq!(
            header(&hs, "content-length"),
            Some(&*body.len().to_string())
        );
        assert_eq!(header(&hs, "connection"), Some("close"));
        assert_eq!(header(&hs, "allow"), None);

        let b = error(405, "only GET", &Cors::default());
        assert_eq!(header(&parse(&b).1, "allow"), Some("GET, HEAD, OPTIONS"));
        let b = error(431, "", &Cors::default());
        assert!(text(&b).ends_with("\r\n\r\n431 Request Header Fields Too Large\n"));
    }

    #[test]
    fn no_header_injection() {
        let cors = Cors {
            allow_origin: "https://a\r\nSet-Cookie: x=1",
        };
        for b in [
            flv_head(&cors, true),
            preflight(&cors),
            error(400, "bad\r\nX-Evil: 1", &cors),
        ] {
            let (_, hs, _) = parse(&b);
            assert!(header(&hs, "set-cookie").is_none());
            assert!(header(&hs, "x-evil").is_none());
        }
        let long = "é".repeat(300);
        let b = error(400, &long, &Cors::default());
        parse(&b);
    }

    #[test]
    fn cors_checks() {
        assert!(Cors::default().allows(Some("http://anything")));
        let c = Cors {
            allow_origin: "https://player.example.com",
        };
        assert!(c.allows(None));
        assert!(c.allows(Some("https://player.example.com")));
        assert!(!c.allows(Some("https://evil.example.com")));
        assert!(Cors::valid_origin("*"));
        assert!(Cors::valid_origin("https://player.example.com:8443"));
        assert!(!Cors::valid_origin("player.example.com"));
        assert!(!Cors::valid_origin("https://a.com/path"));
        assert!(!Cors::valid_origin("https://a.com\r\nX: y"));
    }

    #[test]
    fn chunk_framing() {
        assert_eq!(&chunk_prefix(1)[..], b"1\r\n");
        assert_eq!(&chunk_prefix(255)[..], b"ff\r\n");
        assert_eq!(&chunk_prefix(0x1_0000)[..], b"10000\r\n");
        // A whole body, parsed back by hand: prefix, bytes, suffix; last chunk.
        let mut body = Vec::new();
        for piece in [&b"FLV\x01"[..], &[0u8; 300][..]] {
            body.extend_from_slice(&chunk_prefix(piece.len()));
            body.extend_from_slice(piece);
            body.extend_from_slice(CHUNK_SUFFIX);
        }
        body.extend_from_slice(LAST_CHUNK);
        assert!(body.starts_with(b"4\r\nFLV\x01\r\n12c\r\n"));
        assert!(body.ends_with(b"\r\n0\r\n\r\n"));
    }
}
