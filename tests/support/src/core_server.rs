//! Minimal RTMP servers built only from the protocol core (`ServerSession`) and
//! `std::net`, for testing the core against real clients without the relay: one captures
//! what a publisher sends, one replays captured messages to a player.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardcast::rtmp::{MediaKind, ServerEvent, ServerSession, ServerSessionConfig};

/// One message a publisher sent, as the core server captured it.
#[derive(Clone, Debug)]
pub enum Captured {
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    Metadata(Bytes),
    Data(Bytes),
}

/// Drives one server session over a blocking std socket until the peer leaves, calling
/// `on_event` for each event (which may answer through the session).
pub fn drive_session(
    mut socket: TcpStream,
    mut on_event: impl FnMut(&mut ServerSession, ServerEvent) -> bool,
) -> ServerSession {
    let mut session = ServerSession::new(ServerSessionConfig::default());
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        session
            .feed(Bytes::copy_from_slice(&buf[..n]))
            .expect("the session accepts what a real client sends");
        let mut keep_going = true;
        while let Some(ev) = session.poll_event() {
            keep_going &= on_event(&mut session, ev);
        }
        while let Some(out) = session.poll_transmit() {
            if socket.write_all(&out).is_err() {
                return session;
            }
        }
        if !keep_going {
            break;
        }
    }
    session
}

/// A server that accepts one publisher and records what it sends.
pub fn capture_one_publish(listener: TcpListener) -> thread::JoinHandle<Vec<Captured>> {
    thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut captured = Vec::new();
        drive_session(socket, |session, ev| {
            match ev {
                ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                ServerEvent::PublishRequested { stream_id, .. } => {
                    session.accept_publish(stream_id)
                }
                ServerEvent::Media {
                    kind,
                    timestamp,
                    payload,
                    ..
                } => captured.push(Captured::Media {
                    kind,
                    timestamp,
                    payload,
                }),
                ServerEvent::Metadata { payload, .. } => captured.push(Captured::Metadata(payload)),
                ServerEvent::Data { payload, .. } => captured.push(Captured::Data(payload)),
                _ => {}
            }
            true
        });
        captured
    })
}

/// A server that answers one play by replaying `messages` through the session's own
/// encoder, then tells the player the stream ended and closes.
pub fn replay_to_one_player(
    listener: TcpListener,
    messages: Vec<Captured>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = socket.try_clone().unwrap();
        // The session runs on this thread; a reader thread feeds it bytes.
        thread::spawn(move || {
            let mut reader = reader;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    break;
                }
            }
        });
        let mut session = ServerSession::new(ServerSessionConfig::default());
        let mut playing = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while playing.is_none() && Instant::now() < deadline {
            let Ok(input) = rx.recv_timeout(Duration::from_secs(20)) else {
                return;
            };
            session.feed(input).expect("player input is valid");
            while let Some(ev) = session.poll_event() {
                match ev {
                    ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                    ServerEvent::PlayRequested { stream_id, .. } => {
                        session.accept_play(stream_id, true, false);
                        playing = Some(stream_id);
                    }
                    _ => {}
                }
            }
            while let Some(out) = session.poll_transmit() {
                socket.write_all(&out).unwrap();
            }
        }
        let stream_id = playing.expect("the player asked to play");
        for m in messages {
            match m {
                Captured::Media {
                    kind,
                    timestamp,
                    payload,
                } => session.send_media(stream_id, kind, timestamp, payload),
                Captured::Metadata(p) | Captured::Data(p) => session.send_data(stream_id, 0, p),
            }
            while let Some(out) = session.poll_transmit() {
                if socket.write_all(&out).is_err() {
                    return;
                }
            }
        }
        session.notify_unpublished(stream_id);
        session.send_status(stream_id, "status", "NetStream.Play.Stop", "done");
        while let Some(out) = session.poll_transmit() {
            let _ = socket.write_all(&out);
        }
        thread::sleep(Duration::from_millis(200));
        let _ = socket.shutdown(std::net::Shutdown::Both);
    })
}
