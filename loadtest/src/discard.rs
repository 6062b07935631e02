//! The byte-counting viewers of one executor thread, drained by one task.
//!
//! A byte-counting viewer (`--counting bytes`) has nothing left to parse once it has its
//! first keyframe: it only has to take what arrives off the kernel's hands, count it, and
//! notice when the connection ends. Doing that from each viewer's own task would cost a
//! timer and a task wake-up per viewer per interval, which at 10,000 viewers is the
//! generator's largest user-space cost. So each thread has one [`Discarder`]: viewers
//! hand it their socket, and one loop visits them in `SLOTS` groups, one group every
//! `interval / SLOTS`, so every viewer is drained once per interval and the drains are
//! spread evenly over it. A drain is `recv(MSG_DONTWAIT | MSG_TRUNC)`, with which Linux
//! frees the received data without copying it, until a read comes back short.
//!
//! RTMP viewers also get their window acknowledgements sent from here (an acknowledgement
//! needs only the byte count). When the connection ends, or stays silent for the read
//! timeout, the viewer's task is told how, and reports it as any other viewer does.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalSender};
use glommio::timer::sleep;

use crate::stats::{Shared, ViewerRecord};
use crate::viewer::ControlReplies;

/// Groups a thread's viewers are drained in, one group per `interval / SLOTS`.
const SLOTS: usize = 10;
/// Bytes discarded per `recv`; a shorter answer means the socket is empty.
const DISCARD_SIZE: usize = 256 * 1024;

/// How a drained connection ended.
pub enum Ended {
    /// The server closed it (`recv` returned 0).
    Closed,
    /// Nothing arrived for the read timeout.
    Silent,
    Error(io::Error),
}

/// One viewer handed over to the discarder.
pub struct Handover {
    pub fd: RawFd,
    /// Spreads viewers over the slots.
    pub index: usize,
    pub record: Rc<RefCell<ViewerRecord>>,
    /// RTMP viewers: their acknowledgement state and the chunk-stream bytes so far.
    pub acks: Option<(ControlReplies, u64)>,
}

struct Entry {
    fd: RawFd,
    record: Rc<RefCell<ViewerRecord>>,
    acks: Option<(ControlReplies, u64)>,
    /// Acknowledgement bytes `send` did not take yet.
    unsent: Vec<u8>,
    last_data: Instant,
    done: LocalSender<Ended>,
}

/// One thread's byte-counting viewers (see the module doc).
pub struct Discarder {
    slots: RefCell<Vec<Vec<Entry>>>,
    interval: Duration,
    timeout: Duration,
    shared: Arc<Shared>,
    /// Handed to `recv`, which with `MSG_TRUNC` does not write it.
    buffer: RefCell<Box<[u8]>>,
}

impl Discarder {
    pub fn new(interval: Duration, timeout: Duration, shared: Arc<Shared>) -> Discarder {
        Discarder {
            slots: RefCell::new((0..SLOTS).map(|_| Vec::new()).collect()),
            interval,
            timeout,
            shared,
            buffer: RefCell::new(vec![0u8; DISCARD_SIZE].into_boxed_slice()),
        }
    }

    /// Takes `viewer` over until its connection ends, and says how. The caller keeps the
    /// socket open (it owns the `TcpStream`) and issues no read on it meanwhile.
    pub async fn drain(&self, viewer: Handover) -> Ended {
        let (done, ended) = local_channel::new_bounded(1);
        self.slots.borrow_mut()[viewer.index % SLOTS].push(Entry {
            fd: viewer.fd,
            record: viewer.record,
            acks: viewer.acks,
            unsent: Vec::new(),
            last_data: Instant::now(),
            done,
        });
        ended.recv().await.unwrap_or(Ended::Closed)
    }

    /// The thread's drain loop: runs until the executor ends.
    pub async fn run(self: Rc<Self>) {
        let tick = self.interval / SLOTS as u32;
        let mut next = Instant::now() + tick;
        let mut slot = 0;
        loop {
            sleep(next.saturating_duration_since(Instant::now())).await;
            next += tick;
            self.drain_slot(slot, Instant::now());
            slot = (slot + 1) % SLOTS;
        }
    }

    fn drain_slot(&self, slot: usize, now: Instant) {
        let mut slots = self.slots.borrow_mut();
        let entries = &mut slots[slot];
        let mut buffer = self.buffer.borrow_mut();
        let mut i = 0;
        while i < entries.len() {
            match self.drain_one(&mut entries[i], &mut buffer, now) {
                Ok(()) => i += 1,
                Err(how) => {
                    let entry = entries.swap_remove(i);
                    let _ = entry.done.try_send(how);
                }
            }
        }
    }

    fn drain_one(&self, e: &mut Entry, buffer: &mut [u8], now: Instant) -> Result<(), Ended> {
        let mut total = 0usize;
        loop {
            // SAFETY: `fd` stays open while the viewer's task waits in `drain`, and no
            // glommio read is pending on it; `buffer` is writable for its length (with
            // MSG_TRUNC the kernel does not write it at all).
            let n = unsafe {
                libc::recv(
                    e.fd,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if n == 0 {
                return Err(Ended::Closed);
            }
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(Ended::Error(err)),
                }
            }
            total += n as usize;
            if (n as usize) < buffer.len() {
                break;
            }
        }
        if total == 0 {
            return if now.saturating_duration_since(e.last_data) > self.timeout {
                Err(Ended::Silent)
            } else {
                Ok(())
            };
        }
        e.last_data = now;
        self.shared
            .live
            .bytes_received
            .fetch_add(total as u64, Ordering::Relaxed);
        {
            let mut r = e.record.borrow_mut();
            r.bytes_playing += total as u64;
            r.last_data = Some(now);
        }
        if let Some((control, chunk_bytes)) = e.acks.as_mut() {
            *chunk_bytes += total as u64;
            control.acknowledge(*chunk_bytes);
            if let Some(out) = control.take() {
                e.unsent.extend_from_slice(&out);
            }
        }
        if !e.unsent.is_empty() {
            // SAFETY: as above; `unsent` is readable for its length.
            let n = unsafe {
                libc::send(
                    e.fd,
                    e.unsent.as_ptr().cast(),
                    e.unsent.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                e.unsent.drain(..n as usize);
            } else if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::WouldBlock {
                    return Err(Ended::Error(err));
                }
            }
        }
        Ok(())
    }
}
