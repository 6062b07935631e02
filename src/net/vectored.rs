//! Vectored, non-blocking writes to a socket.
//!
//! glommio's `TcpStream` has no vectored write (its `write_vectored` sends only the first
//! slice), and the fan-out wants to hand the kernel every buffer a viewer is owed in one
//! call: fewer syscalls, and fewer, larger TCP segments. So the driver calls `sendmsg`
//! itself, through `socket2` on a borrow of the socket (no fd is copied or kept), with
//! `MSG_DONTWAIT` (never block the shard) and `MSG_NOSIGNAL` (a viewer that hung up gives
//! `EPIPE`, not a process-killing SIGPIPE). When the socket is full this returns
//! `WouldBlock`, and the client's task parks on writability through glommio.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

/// Writes the buffers in order with one `sendmsg`; returns how many bytes the kernel took.
pub fn send_vectored(socket: &impl AsRawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if bufs.is_empty() {
        return Ok(0);
    }
    let socket = socket2::SockRef::from(socket);
    loop {
        match socket.send_vectored_with_flags(bufs, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
