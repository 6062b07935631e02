//! Makes access-control callbacks (`src/access/callback.rs`) over HTTP/1.1, on the shard's
//! own executor, without ever blocking it.
//!
//! Each callback is a task of its own: hyper's client connection over a glommio socket,
//! raced against the callback's timeout, so a backend that hangs costs one parked task
//! and a socket, not a stalled core. Only the status and `Location` are read; the body is
//! dropped unread, as nginx-rtmp does. The connection comes from `outbound.rs`, as pulls' and
//! pushes' do: a host name resolved off the shard's thread, its addresses tried in turn.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};

use crate::access::callback::{CallbackAnswer, CallbackRequest};

/// Makes `request` and says how the backend answered, or why it did not in time.
pub async fn call(request: &CallbackRequest) -> CallbackAnswer {
    let timeout = request.timeout;
    let outcome = future::or(async { Some(exchange(request).await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await;
    match outcome {
        Some(Ok(answer)) => answer,
        Some(Err(e)) => CallbackAnswer::Failed(e.to_string()),
        None => CallbackAnswer::Failed(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn exchange(request: &CallbackRequest) -> io::Result<CallbackAnswer> {
    let uri: Uri = request
        .url
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = super::outbound::connect(&host, port)
        .await
        .map_err(io::Error::other)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(Io(stream))
        .await
        .map_err(io::Error::other)?;
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let http_request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, authority)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .header(header::USER_AGENT, HeaderValue::from_static("shardcast"))
        .header(header::CONNECTION, HeaderValue::from_static("close"))
        .body(Full::new(Bytes::from(request.body.clone())))
        .map_err(io::Error::other)?;
    // The connection is driven beside the request. With `Connection: close` it may end in
    // the same poll that hands the answer over, so when it ends first the answer is looked
    // for once more before calling it missing. Both go when this function returns (the
    // timeout drops them), and the socket with them.
    let mut answer = std::pin::pin!(sender.send_request(http_request));
    let first = future::or(async { Some((&mut answer).await) }, async {
        let _ = connection.await;
        None
    })
    .await;
    let response = match first {
        Some(response) => response,
        None => future::poll_once(&mut answer).await.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the backend closed the connection without answering",
            )
        })?,
    }
    .map_err(io::Error::other)?;
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(CallbackAnswer::Status {
        code: response.status().as_u16(),
        location,
    })
}

/// glommio's socket as hyper's I/O.
struct Io(TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // Through a buffer on the stack, so no unsafe code is needed to fill hyper's
        // uninitialised one; a callback's answer is small.
        let mut chunk = [0u8; 4096];
        let want = buf.remaining().min(chunk.len());
        match Pin::new(&mut self.0).poll_read(cx, &mut chunk[..want]) {
            Poll::Ready(Ok(n)) => {
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
