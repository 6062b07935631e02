//! The shard's sockets, by client: the one owner of every client connection's socket.
//!
//! The relay keeps its clients in a slab by [`ClientId`]; this table keeps each client's
//! `TcpStream` under the same id, so the two come and go together. Whatever writes to a
//! client (the fan-out, the client's own task, a stored file's source) goes through the
//! relay, which reaches the socket only through [`Transmit`] with a client id, and the id
//! is checked against the slot's current occupant: a client that has gone has no socket
//! here, and a new client in the same slot has a different id. No fd is ever copied.
//!
//! An RTMPS client's socket carries its TLS session (`src/net/tls.rs`) beside it, and every
//! write to such a socket goes through the session; a plain client's writes stay one
//! `sendmsg` of the shared buffers, with no check beyond one `None`.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_lite::AsyncWrite;
use glommio::net::TcpStream;

use super::admission::IpSlot;
use super::tls::TlsStream;
use super::vectored::send_vectored;
use crate::relay::client::ClientId;
use crate::relay::write_queue::Transmit;

/// One client's socket and what its task has been asked to do.
pub struct Socket {
    id: ClientId,
    pub stream: TcpStream,
    /// The relay waits for this socket to drain (`Output::WaitWritable`).
    pub want_write: Cell<bool>,
    /// The relay closed this client (`Output::Close`).
    pub close: Cell<bool>,
    /// The client's task, woken for either.
    pub waker: Option<Waker>,
    /// The TLS session of an RTMPS client.
    pub tls: Option<RefCell<TlsStream>>,
    /// The client's place in the per-address count; given back when the socket goes.
    _ip_slot: Option<IpSlot>,
}

impl Socket {
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}

#[derive(Default)]
pub struct SocketTable {
    slots: Vec<Option<Socket>>,
}

impl SocketTable {
    pub fn insert(&mut self, id: ClientId, stream: TcpStream) {
        self.insert_with(id, stream, None, None);
    }

    /// Inserts a socket with its TLS session and its place in the per-address count.
    pub fn insert_with(
        &mut self,
        id: ClientId,
        stream: TcpStream,
        tls: Option<TlsStream>,
        ip_slot: Option<IpSlot>,
    ) {
        let slot = id.slot();
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, || None);
        }
        self.slots[slot] = Some(Socket {
            id,
            stream,
            want_write: Cell::new(false),
            close: Cell::new(false),
            waker: None,
            tls: tls.map(RefCell::new),
            _ip_slot: ip_slot,
        });
    }

    pub fn get(&self, id: ClientId) -> Option<&Socket> {
        self.slots.get(id.slot())?.as_ref().filter(|s| s.id == id)
    }

    pub fn get_mut(&mut self, id: ClientId) -> Option<&mut Socket> {
        self.slots
            .get_mut(id.slot())?
            .as_mut()
            .filter(|s| s.id == id)
    }

    /// Takes the socket out; dropping it closes the connection.
    pub fn remove(&mut self, id: ClientId) -> Option<TcpStream> {
        let slot = self.slots.get_mut(id.slot())?;
        if slot.as_ref().is_some_and(|s| s.id == id) {
            return slot.take().map(|s| s.stream);
        }
        None
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the client has no socket any more",
    )
}

/// Writes now, without waiting: the fan-out's and the reading task's write.
pub struct SendNow<'a>(pub &'a SocketTable);

impl Transmit for SendNow<'_> {
    fn send(&mut self, client: ClientId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.0.get(client) {
            Some(socket) => match &socket.tls {
                None => send_vectored(&socket.stream, bufs),
                Some(tls) => {
                    let mut tls = tls.borrow_mut();
                    let sent = tls.send(bufs, &mut FdWriter(&socket.stream));
                    // Records the socket did not take: the client's task finishes the
                    // flush, waiting for writability (nothing else would write them).
                    if tls.wants_write() {
                        socket.wake();
                    }
                    sent
                }
            },
            None => Err(gone()),
        }
    }
}

/// The write of a client whose socket was full: while the socket takes data it writes
/// like [`SendNow`]; when it is full again, the first buffer goes to glommio's
/// `poll_write`, which registers the client's task for writability (and writes, if the
/// socket drained meanwhile).
pub struct SendWhenWritable<'a, 'b> {
    pub cx: &'a mut Context<'b>,
    pub socket: &'a mut Socket,
    /// glommio will wake the task when the socket can take more. Until then a write that
    /// came back short has registered nothing, and the caller must write again.
    pub registered: bool,
}

impl Transmit for SendWhenWritable<'_, '_> {
    fn send(&mut self, client: ClientId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if client != self.socket.id {
            return Err(gone());
        }
        if let Some(tls) = &mut self.socket.tls {
            let mut out = PollWriter {
                stream: &mut self.socket.stream,
                cx: &mut *self.cx,
                registered: false,
            };
            let sent = tls.get_mut().send(bufs, &mut out);
            self.registered |= out.registered;
            return sent;
        }
        match send_vectored(&self.socket.stream, bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let Some(first) = bufs.first() else {
                    return Ok(0);
                };
                match Pin::new(&mut self.socket.stream).poll_write(self.cx, first) {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        self.registered = true;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                }
            }
            other => other,
        }
    }
}

/// Writes without waiting, as [`SendNow`] does: for TLS records.
pub struct FdWriter<'a>(pub &'a TcpStream);

impl Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_vectored(self.0, &[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes like [`FdWriter`]; when the socket is full, registers the task for writability
/// through glommio, as [`SendWhenWritable`] does for plain bytes.
pub struct PollWriter<'a, 'b> {
    pub stream: &'a mut TcpStream,
    pub cx: &'a mut Context<'b>,
    /// glommio will wake the task when the socket can take more.
    pub registered: bool,
}

impl Write for PollWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match send_vectored(&*self.stream, bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let Some(first) = bufs.iter().find(|b| !b.is_empty()) else {
                    return Ok(0);
                };
                match Pin::new(&mut *self.stream).poll_write(self.cx, first) {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        self.registered = true;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                }
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
