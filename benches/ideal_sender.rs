//! The ideal sender: the floor the kernel sets for RTMP fan-out on this machine.
//!
//! A deliberately minimal relay for one stream, used by `benches/fanout.sh` beside
//! shardcast and nginx-rtmp: it accepts one publisher and any number of players (speaking
//! just enough RTMP through the library's `ServerSession` to get them playing), encodes each
//! media message once, and writes that buffer to every player with one `send` per message
//! per player — blocking until the player has taken it. Nothing else: no GOP cache, no
//! backlog rules, no batching across messages, no second thread. Whatever CPU it spends per
//! delivered gigabyte is what the kernel's loopback TCP path costs for that pattern, with
//! or without TCP_NODELAY.
//!
//! `cargo bench --bench ideal_sender -- --listen 127.0.0.1:19400 [--nodelay]`

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::Bytes;
use shardcast::rtmp::chunk::encode_shared;
use shardcast::rtmp::{ServerEvent, ServerSession, ServerSessionConfig};

struct Client {
    socket: TcpStream,
    session: ServerSession,
    playing: bool,
    publisher: bool,
}

fn main() -> io::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:19400".parse().unwrap();
    let mut nodelay = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .expect("--listen ADDR")
                    .parse()
                    .expect("address")
            }
            "--nodelay" => nodelay = true,
            // cargo bench passes --bench; nothing to do with it.
            _ => {}
        }
    }
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    eprintln!("ideal sender listening on {listen} (TCP_NODELAY {nodelay})");
    let chunk_size = 4096;
    let mut clients: HashMap<i32, Client> = HashMap::new();
    let mut headers: Vec<Bytes> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        loop {
            match listener.accept() {
                Ok((socket, _)) => {
                    socket.set_nodelay(nodelay)?;
                    socket.set_nonblocking(true)?;
                    let fd = socket.as_raw_fd();
                    let config = ServerSessionConfig {
                        chunk_size,
                        ..ServerSessionConfig::default()
                    };
                    clients.insert(
                        fd,
                        Client {
                            socket,
                            session: ServerSession::new(config),
                            playing: false,
                            publisher: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // Wait for input from anyone (publisher media, players' acks and commands).
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.keys().copied())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        let mut media: Vec<Bytes> = Vec::new();
        let mut gone = Vec::new();
        for p in fds.iter().skip(1).filter(|p| p.revents != 0) {
            let Some(c) = clients.get_mut(&p.fd) else {
                continue;
            };
            let n = match c.socket.read(&mut buf) {
                Ok(0) => {
                    gone.push(p.fd);
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    gone.push(p.fd);
                    continue;
                }
            };
            if c.session.feed(Bytes::copy_from_slice(&buf[..n])).is_err() {
                gone.push(p.fd);
                continue;
            }
            let mut started = false;
            while let Some(ev) = c.session.poll_event() {
                match ev {
                    ServerEvent::ConnectRequested { .. } => c.session.accept_connect(),
                    ServerEvent::PublishRequested { stream_id, .. } => {
                        c.session.accept_publish(stream_id);
                        c.publisher = true;
                    }
                    ServerEvent::PlayRequested { stream_id, .. } => {
                        c.session.accept_play(stream_id, true, false);
                        c.playing = true;
                        started = true;
                    }
                    ServerEvent::Media {
                        kind,
                        timestamp,
                        payload,
                        ..
                    } => {
                        let encoded =
                            encode_shared(kind.type_id(), timestamp, &payload, chunk_size);
                        let is_header = payload.get(1) == Some(&0);
                        if is_header && headers.len() < 2 {
                            headers.push(encoded.clone());
                        }
                        media.push(encoded);
                    }
                    _ => {}
                }
            }
            let mut out: Vec<Bytes> = Vec::new();
            while let Some(o) = c.session.poll_transmit() {
                out.push(o);
            }
            if started {
                // A player that has just been accepted gets the codec headers first.
                out.extend(headers.iter().cloned());
            }
            for o in out {
                if write_blocking(&mut c.socket, &o).is_err() {
                    gone.push(p.fd);
                    break;
                }
            }
        }
        for fd in gone {
            clients.remove(&fd);
        }
        // The measured part: each message, once, to every player, one send each.
        for m in &media {
            let mut dead = Vec::new();
            for (fd, c) in clients.iter_mut().filter(|(_, c)| c.playing) {
                if write_blocking(&mut c.socket, m).is_err() {
                    dead.push(*fd);
                }
            }
            for fd in dead {
                clients.remove(&fd);
            }
        }
    }
}

/// One `send` when the socket takes it all (the common case); otherwise waits and goes on.
fn write_blocking(socket: &mut TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
