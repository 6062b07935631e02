//! One publisher: connects, publishes its stream key, then sends its source's frames at
//! real-time pace (each frame when the wall clock reaches its timestamp), stamping every
//! AVC video frame with its marker just before the write.
//!
//! While waiting for the next frame it keeps reading the socket, so the session answers
//! the server's pings and notices a server that gives up on it.

use std::io;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use shardcast::rtmp::{ClientEvent, ClientSession, ClientSessionConfig, MediaKind};

use crate::clock;
use crate::run::ThreadContext;
use crate::settings::RtmpUrl;
use crate::source::Source;
use crate::viewer::connect_error;

/// Runs one publisher until the run ends; a failure goes into the shared error list.
pub async fn run(ctx: Rc<ThreadContext>, stream: usize, url: RtmpUrl, source: Source) {
    if let Err(e) = publish(&ctx, stream, &url, source).await {
        ctx.shared.streams[stream]
            .publishing
            .store(false, Ordering::Relaxed);
        if let Ok(mut errors) = ctx.shared.publisher_errors.lock() {
            errors.push(format!("publisher {url}: {e}"));
        }
    }
}

enum Wake {
    Read(io::Result<usize>),
    Due,
}

async fn publish(
    ctx: &ThreadContext,
    stream_index: usize,
    url: &RtmpUrl,
    mut source: Source,
) -> Result<(), String> {
    let timeout = ctx.settings.connect_timeout;
    let mut stream = TcpStream::connect_timeout(url.addr, timeout)
        .await
        .map_err(|e| connect_error(url.addr, &e.into(), timeout))?;
    let _ = stream.set_nodelay(true);
    let mut config = ClientSessionConfig::new(&url.app, &url.tc_url());
    config.seed = 0xB0B0_0000 ^ stream_index as u64;
    let mut session = ClientSession::new(config);
    session.publish(&url.key);
    flush(&mut stream, &mut session).await?;
    let progress = &ctx.shared.streams[stream_index];
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + timeout;

    // Until the server says NetStream.Publish.Start.
    'setup: loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wake =
            futures_lite::future::or(async { Wake::Read(stream.read(&mut buf).await) }, async {
                Timer::new(left).await;
                Wake::Due
            })
            .await;
        let n = match wake {
            Wake::Due => {
                return Err(format!(
                    "publish did not start within {:.1} s",
                    timeout.as_secs_f64()
                ));
            }
            Wake::Read(Ok(0)) => {
                return Err("connection closed by server before publishing started".into());
            }
            Wake::Read(Ok(n)) => n,
            Wake::Read(Err(e)) => return Err(format!("read failed: {e}")),
        };
        session
            .feed(bytes::Bytes::copy_from_slice(&buf[..n]))
            .map_err(|e| format!("protocol error: {e}"))?;
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::ConnectFailed { code, description } => {
                    return Err(format!("connect refused: {code} ({description})"));
                }
                ClientEvent::Status { level, code, .. } if level == "error" => {
                    return Err(format!("publish refused: {code}"));
                }
                ClientEvent::PublishStarted { .. } => break 'setup,
                _ => {}
            }
        }
        flush(&mut stream, &mut session).await?;
    }
    flush(&mut stream, &mut session).await?;

    session.send_metadata(source.metadata());
    for (kind, payload) in source.sequence_headers() {
        session.send_media(kind, 0, payload);
    }
    flush(&mut stream, &mut session).await?;
    progress.publishing.store(true, Ordering::Relaxed);

    let start = Instant::now();
    let mut frame = source.next_frame();
    loop {
        let due = start + Duration::from_millis(u64::from(frame.timestamp));
        let now = Instant::now();
        if now < due {
            let wake = futures_lite::future::or(
                async { Wake::Read(stream.read(&mut buf).await) },
                async {
                    Timer::new(due - now).await;
                    Wake::Due
                },
            )
            .await;
            match wake {
                Wake::Due => {}
                Wake::Read(Ok(0)) => return Err("connection closed by server".into()),
                Wake::Read(Ok(n)) => {
                    session
                        .feed(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .map_err(|e| format!("protocol error: {e}"))?;
                    while let Some(event) = session.poll_event() {
                        if let ClientEvent::Status { level, code, .. } = event
                            && level == "error"
                        {
                            return Err(format!("server stopped the publish: {code}"));
                        }
                    }
                    flush(&mut stream, &mut session).await?;
                }
                Wake::Read(Err(e)) => return Err(format!("read failed: {e}")),
            }
            continue;
        }
        let seq = if frame.takes_marker() {
            progress.markers_sent.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let (kind, timestamp) = (frame.kind, frame.timestamp);
        let payload = frame.into_payload(seq, clock::micros(Instant::now()));
        progress
            .bytes_sent
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        session.send_media(kind, timestamp, payload);
        flush(&mut stream, &mut session).await?;
        progress.messages_sent.fetch_add(1, Ordering::Relaxed);
        progress.last_timestamp.store(timestamp, Ordering::Relaxed);
        if kind == MediaKind::Video {
            glommio::yield_if_needed().await;
        }
        frame = source.next_frame();
    }
}

async fn flush(stream: &mut TcpStream, session: &mut ClientSession) -> Result<(), String> {
    while let Some(out) = session.poll_transmit() {
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
    }
    Ok(())
}
