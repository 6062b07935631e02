//! The admin listener's HTTP server: hyper 1.x (HTTP/1.1, keep-alive) on a glommio executor.
//!
//! hyper parses and writes HTTP; this file gives it a socket and a handler. The socket is
//! glommio's `TcpStream`, which speaks futures' `AsyncRead`/`AsyncWrite`, not hyper's own
//! `rt::Read`/`rt::Write`, so a small adapter (`Io`) sits between them. Each request's
//! head and body are read here, turned into a plain [`AdminRequest`] and handed to the
//! [`AdminHandler`] (the admin API, `src/admin/`); its [`AdminResponse`] goes back out.
//!
//! Everything that reaches this port may be hostile, so every resource a client can make us
//! hold is capped ([`HttpLimits`]):
//! - connections: past the cap a new one is accepted and closed at once;
//! - the request head: hyper answers `431` past `max_head_bytes`;
//! - the body: `413` when its Content-Length says too much, or when its bytes turn out to;
//! - time: hyper's own timeouts need a `Send + Sync` timer, which glommio's are not, so each
//!   connection has a watchdog that closes it once no byte has moved for `idle_timeout`.
//!
//! A server that closes a socket with unread bytes in it makes the kernel send a reset,
//! and a reset can destroy the answer (a 431 or 413) before the client has read it. So a
//! connection hyper is done with is not just dropped: its write side is shut and what the
//! client still sends is read and thrown away for a short while (`linger`).

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};

use crate::admin::request::{AdminRequest, AdminResponse};

/// What handles each request (the admin API, in `src/admin/`). Runs on the admin thread's
/// executor, so its futures need not be `Send`.
pub trait AdminHandler {
    fn handle(&self, request: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse>>>;
}

/// What one client may make the server hold.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Connections open at once; past it a new one is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The request line and headers together; more gets `431`.
    pub max_head_bytes: usize,
    /// The request body; more gets `413`.
    pub max_body_bytes: usize,
    /// A connection that has read and written nothing for this long is closed (while the
    /// handler works on a request, the clock is stopped: that wait is ours, not the client's).
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    /// An operator's scripts and a dashboard or two need a handful of connections; the
    /// biggest admin request (a config or a list of keys) is kilobytes.
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 32,
            max_head_bytes: 16 << 10,
            max_body_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The longest a finished connection is drained before it is closed ([`linger`]): enough
/// for a client to read its answer, short enough that no client can hold it open for long.
const LINGER: Duration = Duration::from_secs(2);

/// hyper will not buffer less than this (it panics below it).
const HYPER_MIN_BUF: usize = 8192;

/// How much one read takes off the socket. Admin traffic is small; this is a stack buffer.
const READ_CHUNK: usize = 8192;

/// Serves `listener` forever: one glommio task per connection.
pub async fn serve(listener: TcpListener, handler: Rc<dyn AdminHandler>, limits: HttpLimits) {
    serve_until(listener, handler, limits, future::pending()).await
}

/// Serves `listener` until `stop` resolves, then stops accepting and returns. Connections
/// already open are not cut: each ends on its own, at the latest after `idle_timeout`.
pub async fn serve_until(
    listener: TcpListener,
    handler: Rc<dyn AdminHandler>,
    limits: HttpLimits,
    stop: impl Future<Output = ()>,
) {
    let limits = Rc::new(limits);
    let open = Rc::new(Cell::new(0usize));
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stop.as_mut().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!("admin http: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) => {
                tracing::debug!("admin http: connection gone before it was served: {e}");
                continue;
            }
        };
        if open.get() >= limits.max_connections {
            // Dropping the stream closes it: the cheapest answer we can give.
            tracing::warn!(
                %peer,
                "admin http: connection refused: {} connections open, the most allowed",
                open.get()
            );
            continue;
        }
        let slot = Slot::take(&open);
        glommio::spawn_local(connection(
            stream,
            peer,
            handler.clone(),
            limits.clone(),
            slot,
        ))
        .detach();
    }
    tracing::debug!("admin http: stopped accepting");
}

/// One place among the `max_connections`, given back when the connection's task ends,
/// however it ends.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(open: &Rc<Cell<usize>>) -> Slot {
        open.set(open.get() + 1);
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// What the idle watchdog watches: when a byte last moved, and whether the handler is busy
/// with a request (then the client is waiting for us, not idle).
struct Activity {
    last: Cell<Instant>,
    handling: Cell<usize>,
    /// Bytes came in after the last answer went out: a request is under way, so going
    /// quiet now is a client stalling, not a keep-alive connection at rest.
    mid_request: Cell<bool>,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Instant::now());
    }
}

/// Marks a request as in the handler's hands for as long as it lives.
struct Handling<'a>(&'a Activity);

impl<'a> Handling<'a> {
    fn start(activity: &'a Activity) -> Handling<'a> {
        activity.handling.set(activity.handling.get() + 1);
        Handling(activity)
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.handling.set(self.0.handling.get() - 1);
        // The client's idle time starts when our answer is ready, not when it asked.
        self.0.touch();
    }
}

/// How a connection's task ended.
enum Ended {
    Hyper(hyper::Result<()>),
    Idle,
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Rc<dyn AdminHandler>,
    limits: Rc<HttpLimits>,
    _slot: Slot,
) {
    // Answers are small and whole: send them now rather than wait for more to coalesce.
    let _ = stream.set_nodelay(true);
    // Shared with hyper's adapter so the socket outlives hyper's connection: see `linger`.
    let stream = Rc::new(RefCell::new(stream));
    let activity = Rc::new(Activity {
        last: Cell::new(Instant::now()),
        handling: Cell::new(0),
        // A browser opens connections ahead of need and may send nothing on them.
        mid_request: Cell::new(false),
    });
    let io = Io {
        stream: stream.clone(),
        activity: activity.clone(),
    };
    let service = {
        let activity = activity.clone();
        let limits = limits.clone();
        service_fn(move |request| {
            respond(
                request,
                peer,
                handler.clone(),
                limits.clone(),
                activity.clone(),
            )
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(HYPER_MIN_BUF))
        // It would need a timer hyper can share across threads; the watchdog does its job.
        .header_read_timeout(None);
    let ended = future::or(
        async { Ended::Hyper(builder.serve_connection(io, service).await) },
        async {
            idle_watch(&activity, limits.idle_timeout).await;
            Ended::Idle
        },
    )
    .await;
    match ended {
        Ended::Idle if activity.mid_request.get() => {
            tracing::info!(
                %peer,
                "admin http: connection closed: request not completed within {:?}",
                limits.idle_timeout
            );
            return;
        }
        Ended::Idle => {
            tracing::debug!(
                %peer,
                "admin http: connection closed: nothing read or written for {:?}",
                limits.idle_timeout
            );
            return;
        }
        Ended::Hyper(Ok(())) => {}
        Ended::Hyper(Err(e)) => {
            let reason = if e.is_parse_too_large() {
                format!(
                    "request head over {} bytes (answered 431)",
                    limits.max_head_bytes
                )
            } else if e.is_parse() {
                format!("malformed request (answered 400): {e}")
            } else if e.is_incomplete_message() {
                "closed in the middle of a request".to_string()
            } else {
                e.to_string()
            };
            // What a client got wrong is worth an operator's eye; the rest is a peer that
            // went away.
            if e.is_parse() || e.is_parse_too_large() || e.is_incomplete_message() {
                tracing::info!(%peer, "admin http: connection closed: {reason}");
            } else {
                tracing::debug!(%peer, "admin http: connection ended: {reason}");
            }
        }
    }
    // hyper's connection, and with it the adapter's handle on the socket, is gone by now.
    if let Ok(stream) = Rc::try_unwrap(stream) {
        linger(stream.into_inner(), limits.idle_timeout).await;
    }
}

/// Returns once the connection has been idle for `idle` with no request in the handler.
async fn idle_watch(activity: &Activity, idle: Duration) {
    loop {
        let quiet = activity.last.get().elapsed();
        let wait = if activity.handling.get() > 0 {
            idle
        } else if quiet >= idle {
            return;
        } else {
            idle - quiet
        };
        glommio::timer::sleep(wait).await;
    }
}

/// Closes a connection gracefully: shuts its write side (the client sees the end of our
/// answers) and reads what the client still sends, for at most [`LINGER`], so that closing
/// never finds unread bytes, which would make the kernel reset the connection and could
/// destroy the answer before the client has read it.
async fn linger(mut stream: TcpStream, idle: Duration) {
    // hyper may have shut it already, or the client reset it: then the reads below end at
    // once, so the result tells nothing we need.
    let _ = stream.shutdown(Shutdown::Write).await;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; READ_CHUNK];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let read = future::or(async { Some(stream.read(&mut sink).await) }, async {
            glommio::timer::sleep(left.min(idle)).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}

/// Answers one request: its body read (within the cap), then the handler's answer.
async fn respond(
    request: Request<Incoming>,
    peer: SocketAddr,
    handler: Rc<dyn AdminHandler>,
    limits: Rc<HttpLimits>,
    activity: Rc<Activity>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = match read_request(request, peer, limits.max_body_bytes).await {
        Ok(request) => {
            // Only the handler's time stops the clock: a client trickling its body in must
            // still be idle-checked.
            let _handling = Handling::start(&activity);
            handler.handle(request).await
        }
        Err(refusal) => refusal,
    };
    Ok(to_hyper(answer, peer))
}

/// The request as a plain value, its body read in full, or the answer that refuses it.
async fn read_request(
    request: Request<Incoming>,
    peer: SocketAddr,
    max_body: usize,
) -> Result<AdminRequest, AdminResponse> {
    let (head, body) = request.into_parts();
    // A Content-Length over the cap is refused before a byte of the body is read.
    let announced = body.size_hint().lower();
    if announced > max_body as u64 {
        tracing::debug!(%peer, "admin http: body of {announced} bytes announced (answered 413)");
        return Err(body_too_large(max_body));
    }
    // A chunked body says nothing in advance: count it as it comes.
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            tracing::debug!(%peer, "admin http: body over {max_body} bytes (answered 413)");
            return Err(body_too_large(max_body));
        }
        Err(e) => {
            tracing::debug!(%peer, "admin http: could not read the request body: {e}");
            let mut refusal = AdminResponse::error(400, "could not read the request body");
            refusal.headers.push(("Connection", "close".to_string()));
            return Err(refusal);
        }
    };
    Ok(AdminRequest {
        method: head.method.as_str().to_ascii_uppercase(),
        path: head.uri.path().to_string(),
        query: head.uri.query().unwrap_or("").to_string(),
        authorization: head
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string),
        body,
        peer,
    })
}

fn body_too_large(max_body: usize) -> AdminResponse {
    let mut refusal = AdminResponse::error(413, &format!("request body over {max_body} bytes"));
    // The rest of the body is still on its way: this connection cannot carry another request.
    refusal.headers.push(("Connection", "close".to_string()));
    refusal
}

fn to_hyper(answer: AdminResponse, peer: SocketAddr) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(answer.status).unwrap_or_else(|_| {
        tracing::warn!(%peer, "admin http: handler answered status {}; sent 500", answer.status);
        StatusCode::INTERNAL_SERVER_ERROR
    });
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    match HeaderValue::from_str(answer.content_type) {
        Ok(value) => {
            headers.insert(header::CONTENT_TYPE, value);
        }
        Err(_) => tracing::warn!(
            %peer,
            "admin http: invalid Content-Type {:?} left out",
            answer.content_type
        ),
    }
    for (name, value) in answer.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            // hyper sets it from the body; a second one would make the answer unreadable.
            (Ok(name), _) if name == header::CONTENT_LENGTH => {}
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => tracing::warn!(%peer, "admin http: invalid header {name}: {value:?} left out"),
        }
    }
    response
}

/// glommio's socket as hyper's I/O, noting every byte that moves for the idle watchdog.
struct Io {
    /// Shared only so that the connection's task gets the socket back when hyper is done.
    stream: Rc<RefCell<TcpStream>>,
    activity: Rc<Activity>,
}

impl hyper::rt::Read for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Through a buffer on the stack, so no unsafe code is needed to fill hyper's
        // uninitialised one; the copy costs nothing at admin traffic's size.
        let mut chunk = [0u8; READ_CHUNK];
        let want = buf.remaining().min(READ_CHUNK);
        let mut stream = self.stream.borrow_mut();
        match Pin::new(&mut *stream).poll_read(cx, &mut chunk[..want]) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.activity.touch();
                    self.activity.mid_request.set(true);
                }
                buf.put_slice(&chunk[..n]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.touch();
            self.activity.mid_request.set(false);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // glommio's close shuts the write side only; the socket itself closes on drop.
        Pin::new(&mut *self.stream.borrow_mut()).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

    use super::*;

    /// Answers with what it was asked, so a test can see the mapping both ways.
    struct Echo;

    impl AdminHandler for Echo {
        fn handle(&self, request: AdminRequest) -> Pin<Box<dyn Future<Output = AdminResponse>>> {
            Box::pin(async move {
                if request.path == "/slow" {
                    glommio::timer::sleep(Duration::from_millis(700)).await;
                }
                let mut body = format!(
                    "{} {} q={} auth={:?} peer_is_local={} body=",
                    request.method,
                    request.path,
                    request.query,
                    request.authorization,
                    request.peer.ip().is_loopback(),
                )
                .into_bytes();
                body.extend_from_slice(&request.body);
                let mut answer = AdminResponse::text(200, "text/plain; charset=utf-8", body);
                answer.headers.push(("X-Echo", "yes".to_string()));
                answer
            })
        }
    }

    /// `serve_until` on its own executor thread, stopped and joined on drop.
    struct Server {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<ExecutorJoinHandle<()>>,
    }

    impl Server {
        fn start(limits: HttpLimits) -> Server {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            let stopping = stop.clone();
            let thread = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(64 << 10)
                .spawn(move || async move {
                    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                    tx.send(listener.local_addr().expect("addr")).expect("send");
                    let stopped = async move {
                        while !stopping.load(Ordering::Relaxed) {
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    serve_until(listener, Rc::new(Echo), limits, stopped).await;
                })
                .expect("executor");
            let addr = rx.recv().expect("address");
            Server {
                addr,
                stop,
                thread: Some(thread),
            }
        }

        fn connect(&self) -> std::net::TcpStream {
            let stream = std::net::TcpStream::connect(self.addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                thread.join().expect("server thread");
            }
        }
    }

    fn limits(idle: Duration) -> HttpLimits {
        HttpLimits {
            idle_timeout: idle,
            ..HttpLimits::default()
        }
    }

    struct Answer {
        status: u16,
        /// Lower-cased names.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one answer (it must have a Content-Length), leaving what follows in `pending`.
    fn read_answer(stream: &mut std::net::TcpStream, pending: &mut Vec<u8>) -> io::Result<Answer> {
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "closed before an answer",
                ));
            }
            pending.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(pending[..head_end].to_vec()).expect("ascii head");
        pending.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        while pending.len() < length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed mid-body"));
            }
            pending.extend_from_slice(&chunk[..n]);
        }
        let body = pending.drain(..length).collect();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn ask(stream: &mut std::net::TcpStream, request: &[u8]) -> Answer {
        stream.write_all(request).expect("write");
        read_answer(stream, &mut Vec::new()).expect("answer")
    }

    /// True when the server closed the connection (end of stream or reset), false when it
    /// is still open after the read timeout.
    fn closed_by_server(stream: &mut std::net::TcpStream) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    #[test]
    fn a_get_is_answered_with_the_handlers_status_body_and_headers() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        let answer = ask(
            &mut client,
            b"GET /api/v1/streams?a=1&b=%20 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n",
        );
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(answer.header("x-echo"), Some("yes"));
        assert_eq!(
            String::from_utf8(answer.body).unwrap(),
            "GET /api/v1/streams q=a=1&b=%20 auth=Some(\"Bearer t0k\") peer_is_local=true body="
        );
    }

    #[test]
    fn a_post_body_reaches_the_handler_and_keep_alive_serves_a_second_request() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        let mut pending = Vec::new();
        client
            .write_all(b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        let first = read_answer(&mut client, &mut pending).expect("first answer");
        client
            .write_all(b"DELETE /two?x HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let second = read_answer(&mut client, &mut pending).expect("second answer");
        assert_eq!(first.status, 200);
        assert_eq!(
            String::from_utf8(first.body).unwrap(),
            "POST /one q= auth=None peer_is_local=true body=hello"
        );
        assert_eq!(second.status, 200);
        assert_eq!(
            String::from_utf8(second.body).unwrap(),
            "DELETE /two q=x auth=None peer_is_local=true body="
        );
    }

    #[test]
    fn a_head_over_the_cap_gets_431_not_a_reset() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 20 << 10));
        request.extend_from_slice(b"\r\n\r\n");
        let answer = ask(&mut client, &request);
        assert_eq!(answer.status, 431);
        assert!(closed_by_server(&mut client), "closed after the 431");
    }

    #[test]
    fn a_head_under_the_cap_is_served() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 12 << 10));
        request.extend_from_slice(b"\r\n\r\n");
        assert_eq!(ask(&mut client, &request).status, 200);
    }

    #[test]
    fn a_malformed_request_gets_400() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        assert_eq!(
            ask(&mut client, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").status,
            400
        );
    }

    fn assert_413(answer: &Answer) {
        assert_eq!(answer.status, 413);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!(json["code"], 413);
        assert!(json["message"].as_str().unwrap().contains("1048576"));
    }

    #[test]
    fn a_body_announced_over_the_cap_gets_413_before_it_is_read() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        client
            .write_all(b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n")
            .unwrap();
        // The whole body goes out too, as a naive client would send it.
        client.write_all(&vec![b'x'; 2 << 20]).expect("body sent");
        let answer = read_answer(&mut client, &mut Vec::new()).expect("an answer, not a reset");
        assert_413(&answer);
        assert!(closed_by_server(&mut client));
    }

    #[test]
    fn a_body_too_big_for_the_socket_buffers_is_drained_so_its_413_still_arrives() {
        // 2 MiB fit in loopback's buffers, so a server that closed at once would go unseen
        // there; 32 MiB do not: without the drain the client's write meets a reset.
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        client
            .write_all(b"PUT /config HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n")
            .unwrap();
        client.write_all(&vec![b'x'; 32 << 20]).expect("body sent");
        let answer = read_answer(&mut client, &mut Vec::new()).expect("an answer, not a reset");
        assert_413(&answer);
    }

    #[test]
    fn a_chunked_body_over_the_cap_gets_413() {
        let server = Server::start(limits(Duration::from_secs(10)));
        let mut client = server.connect();
        client
            .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = vec![b'y'; 64 << 10];
        let mut sent = 0;
        while sent < 2 << 20 {
            let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
            piece.extend_from_slice(&chunk);
            piece.extend_from_slice(b"\r\n");
            if client.write_all(&piece).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = client.write_all(b"0\r\n\r\n");
        let answer = read_answer(&mut client, &mut Vec::new()).expect("an answer, not a reset");
        assert_413(&answer);
    }

    #[test]
    fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let server = Server::start(limits(Duration::from_millis(300)));
        let mut client = server.connect();
        let started = Instant::now();
        assert!(
            closed_by_server(&mut client),
            "closed within the read timeout"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "not before the timeout: {took:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "soon after the timeout: {took:?}"
        );
    }

    #[test]
    fn a_half_sent_head_is_closed_after_the_idle_timeout() {
        let server = Server::start(limits(Duration::from_millis(300)));
        let mut client = server.connect();
        client.write_all(b"GET / HTTP/1.1\r\nHost:").unwrap();
        let started = Instant::now();
        assert!(closed_by_server(&mut client));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_handler_slower_than_the_idle_timeout_still_answers() {
        let server = Server::start(limits(Duration::from_millis(300)));
        let mut client = server.connect();
        let answer = ask(&mut client, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(answer.status, 200);
        assert!(
            String::from_utf8(answer.body)
                .unwrap()
                .starts_with("GET /slow")
        );
    }

    #[test]
    fn connections_past_the_cap_are_closed_and_a_freed_place_is_reused() {
        let server = Server::start(HttpLimits {
            max_connections: 2,
            ..limits(Duration::from_secs(10))
        });
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        // An answer proves the server counted the connection.
        let mut first = server.connect();
        assert_eq!(ask(&mut first, request).status, 200);
        let mut second = server.connect();
        assert_eq!(ask(&mut second, request).status, 200);

        let mut third = server.connect();
        assert!(closed_by_server(&mut third), "the third is closed at once");
        // The first two are still served.
        assert_eq!(ask(&mut second, request).status, 200);

        drop(first);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut next = server.connect();
            if next.write_all(request).is_ok()
                && let Ok(answer) = read_answer(&mut next, &mut Vec::new())
            {
                assert_eq!(answer.status, 200);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the freed place was never reused"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
