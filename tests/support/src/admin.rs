//! A small HTTP client for the relay's admin API, over a plain `TcpStream`: enough for
//! tests to ask `/api/v1/...`, `/metrics` and the health checks, one request per
//! connection (`Connection: close`), with the status and body as they came; reading one
//! series out of a `/metrics` scrape ([`metric_value`]); and watching `/readyz` through a
//! shutdown ([`ReadyzWatch`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// One answer: the status code, the headers (lower-case names) and the body.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request with `extra` header lines and `body`, and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpAnswer> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

fn parse(raw: &[u8]) -> Option<HttpAnswer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> HttpAnswer {
    request(addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the series `series` (`name`, or `name{label="value",...}` exactly as the
/// relay writes it) in a scrape in Prometheus' text format; None if it is not there.
pub fn metric_value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// One poller's answers from `/readyz`, in order: when each came, and its status (None: no
/// answer, the listener was gone).
pub type ReadyzAnswers = Vec<(Instant, Option<u16>)>;

/// `/readyz` asked over and over by a few threads, each over a connection it keeps open,
/// until [`ReadyzWatch::finish`]: how a test sees a shutdown that takes milliseconds
/// (asking over kept connections, several at a time, answers every fraction of one).
pub struct ReadyzWatch {
    done: Arc<AtomicBool>,
    pollers: Vec<thread::JoinHandle<ReadyzAnswers>>,
}

impl ReadyzWatch {
    /// Starts `pollers` threads asking the admin listener at `addr`.
    pub fn start(addr: SocketAddr, pollers: usize) -> ReadyzWatch {
        let done = Arc::new(AtomicBool::new(false));
        let pollers = (0..pollers)
            .map(|_| {
                let done = done.clone();
                thread::spawn(move || poll_readyz(addr, &done))
            })
            .collect();
        ReadyzWatch { done, pollers }
    }

    /// Stops asking; each poller's answers.
    pub fn finish(mut self) -> Vec<ReadyzAnswers> {
        self.done.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.pollers)
            .into_iter()
            .map(|p| p.join().unwrap())
            .collect()
    }
}

impl Drop for ReadyzWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Asks `GET /readyz` over a kept-alive connection (a new one after each failure) until
/// `done`, noting when each answer came and its status (None: no answer).
fn poll_readyz(addr: SocketAddr, done: &AtomicBool) -> ReadyzAnswers {
    let ask = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut answers = Vec::new();
    let mut conn: Option<TcpStream> = None;
    while !done.load(Ordering::Relaxed) {
        let status = (|| -> Option<u16> {
            if conn.is_none() {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                conn = Some(s);
            }
            let s = conn.as_mut()?;
            s.write_all(ask.as_bytes()).ok()?;
            // The head, then as much body as it announces.
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let head_end = loop {
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
                got.extend_from_slice(&buf[..n]);
            };
            let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            while got.len() < head_end + length {
                let n = s.read(&mut buf).ok().filter(|&n| n > 0)?;
                got.extend_from_slice(&buf[..n]);
            }
            if head.contains("connection: close") {
                conn = None;
            }
            Some(status)
        })();
        answers.push((Instant::now(), status));
        if status.is_none() {
            conn = None;
            // The listener is gone or going: try again soon, not in a tight loop.
            thread::sleep(Duration::from_millis(1));
        }
    }
    answers
}
