//! Vectored, non-blocking writes straight to a socket's file descriptor.
//!
//! glommio's `TcpStream` has no vectored write (its `write_vectored` sends only the first
//! slice), and the fan-out wants to hand the kernel every buffer a viewer is owed in one
//! call: fewer syscalls, and fewer, larger TCP segments. So the fan-out calls `sendmsg`
//! itself with `MSG_DONTWAIT` (never block the shard) and `MSG_NOSIGNAL` (a viewer that
//! hung up gives `EPIPE`, not a process-killing SIGPIPE). When the socket is full this
//! returns `WouldBlock`, and the connection task parks on writability through glommio.

use std::io;
use std::os::fd::RawFd;

/// Writes the buffers in order with one `sendmsg`; returns how many bytes the kernel took.
pub fn send_vectored(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    if iov.is_empty() {
        return Ok(0);
    }
    // SAFETY: a zeroed msghdr is valid (no name, no control data); `msg_iov` points at
    // `iov`, which outlives the call, and the kernel only reads the buffers it describes.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    loop {
        // SAFETY: `msg` is a valid msghdr whose iovecs point at live `Bytes` the caller
        // holds for the duration of the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
