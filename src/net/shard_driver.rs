//! The driver of one shard: it carries out what the relay's [`Shard`] decides, with
//! glommio's sockets, files, timers and tasks.
//!
//! A [`ShardDriver`] owns the shard's relay state and its [`SocketTable`], and runs the
//! shard's tasks: the accept loop (`listener.rs`), one task per client (`client_task.rs`),
//! and three of its own, started by [`ShardDriver::start`]: the inbox (messages from other
//! shards), the fan-out (passes over a stream's viewers, a few dozen viewers at a time so
//! other tasks get the core), and the timer (whatever the relay asked to be woken for).
//! After every call into the relay the caller runs [`ShardDriver::process`], which empties
//! the relay's outputs. The clock is read here and only here, and passed in.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::io::BufferedFile;

use super::mailbox::{Inbox, SendError, ShardSender};
use super::sockets::{SendNow, SocketTable};
use super::wakeup::{Latch, Signal};
use crate::performance::{INBOX_BATCH, VIEWERS_PER_YIELD};
use crate::relay::message::{ShardId, ShardMessage};
use crate::relay::shard::{Output, Shard};
use crate::relay::stream::StreamId;

pub struct ShardDriver {
    pub id: ShardId,
    pub relay: RefCell<Shard>,
    pub sockets: RefCell<SocketTable>,
    senders: Vec<ShardSender<ShardMessage>>,
    fan_out: Signal,
    /// Wakes the timer task when the relay's next deadline is earlier than its sleep.
    timer: Signal,
    /// What the timer task sleeps until, while it sleeps: `Some(None)` for "until woken".
    timer_target: Cell<Option<Option<Instant>>>,
    /// Open stored files, by the stream their source feeds.
    files: RefCell<HashMap<StreamId, Rc<BufferedFile>>>,
    /// Set when shutdown starts: the accept loop stops, the shard winds down.
    pub shutting_down: Latch,
    /// Notified when a client's socket is gone: shutdown waits for the last one.
    pub client_gone: Signal,
    /// What all shards share to admit a connection (per-address counts, TLS settings).
    pub admission: std::sync::Arc<super::admission::Admission>,
}

impl ShardDriver {
    pub fn new(
        relay: Shard,
        senders: Vec<ShardSender<ShardMessage>>,
        admission: std::sync::Arc<super::admission::Admission>,
    ) -> Rc<ShardDriver> {
        Rc::new(ShardDriver {
            id: relay.id,
            relay: RefCell::new(relay),
            sockets: RefCell::new(SocketTable::default()),
            senders,
            fan_out: Signal::default(),
            timer: Signal::default(),
            timer_target: Cell::new(None),
            files: RefCell::new(HashMap::new()),
            shutting_down: Latch::default(),
            client_gone: Signal::default(),
            admission,
        })
    }

    /// Starts the shard's own tasks: inbox, fan-out, timer.
    pub fn start(self: &Rc<Self>, inbox: Inbox<ShardMessage>) {
        glommio::spawn_local(self.clone().inbox_task(inbox)).detach();
        glommio::spawn_local(self.clone().fan_out_task()).detach();
        glommio::spawn_local(self.clone().timer_task()).detach();
    }

    /// Carries out everything the relay has asked for since the last call.
    pub fn process(self: &Rc<Self>) {
        loop {
            let Some(out) = self.relay.borrow_mut().poll_output() else {
                break;
            };
            match out {
                Output::Send { to, message } => self.send(to, message),
                Output::FanOut => self.fan_out.notify(),
                Output::WaitWritable(id) => {
                    if let Some(s) = self.sockets.borrow().get(id)
                        && !s.want_write.replace(true)
                    {
                        s.wake();
                    }
                }
                Output::Close(id) => {
                    if let Some(s) = self.sockets.borrow().get(id) {
                        s.close.set(true);
                        s.wake();
                    }
                }
                Output::Playing(id) => {
                    if let Some(s) = self.sockets.borrow().get(id) {
                        let config = self.relay.borrow().config.clone();
                        super::client_task::viewer_socket_options(&s.stream, &config.viewer);
                    }
                }
                Output::ReadFile {
                    stream,
                    path,
                    offset,
                    len,
                } => {
                    glommio::spawn_local(self.clone().read_file(stream, path, offset, len))
                        .detach();
                }
                Output::CloseFile(stream) => {
                    self.files.borrow_mut().remove(&stream);
                }
            }
        }
        // The timer task sleeps for the relay's next deadline: wake it when that deadline
        // moved, earlier (a new one) or later (a held entry went out with its video frame),
        // so it never sleeps too long nor wakes for nothing.
        let next = self.relay.borrow_mut().poll_timeout();
        if let Some(target) = self.timer_target.get()
            && next != target
        {
            self.timer.notify();
        }
        if self.relay.borrow().is_shutting_down() && !self.shutting_down.is_set() {
            self.shutting_down.set();
        }
    }

    fn send(&self, to: ShardId, message: ShardMessage) {
        let Some(tx) = self.senders.get(to) else {
            return;
        };
        match tx.send(message) {
            Ok(()) | Err(SendError::Closed) => {}
            Err(SendError::Full) => {
                tracing::warn!(shard = self.id, to, "shard inbox full; message dropped")
            }
        }
    }

    async fn inbox_task(self: Rc<Self>, inbox: Inbox<ShardMessage>) {
        let mut batch = Vec::with_capacity(INBOX_BATCH);
        loop {
            batch.clear();
            if !inbox.recv_batch(&mut batch, INBOX_BATCH).await {
                break;
            }
            let now = Instant::now();
            for msg in batch.drain(..) {
                self.relay.borrow_mut().handle_message(msg, now);
            }
            self.process();
        }
    }

    async fn fan_out_task(self: Rc<Self>) {
        loop {
            self.fan_out.wait().await;
            loop {
                let more = {
                    let sockets = self.sockets.borrow();
                    self.relay.borrow_mut().fan_out(
                        Instant::now(),
                        &mut SendNow(&sockets),
                        VIEWERS_PER_YIELD,
                    )
                };
                self.process();
                if !more {
                    break;
                }
                // One stream with thousands of viewers must not starve the shard's other
                // streams, its publishers or its accept loop.
                glommio::yield_if_needed().await;
            }
        }
    }

    async fn timer_task(self: Rc<Self>) {
        loop {
            let next = self.relay.borrow_mut().poll_timeout();
            self.timer_target.set(Some(next));
            match next {
                None => self.timer.wait().await,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        futures_lite::future::or(self.timer.wait(), glommio::timer::sleep(left))
                            .await;
                    }
                }
            }
            self.timer_target.set(None);
            self.relay.borrow_mut().handle_timeout(Instant::now());
            self.process();
        }
    }

    /// Reads a piece of a stored file for its source, through io_uring: the shard never
    /// blocks on the disk.
    async fn read_file(
        self: Rc<Self>,
        stream: StreamId,
        path: std::sync::Arc<std::path::Path>,
        offset: u64,
        len: usize,
    ) {
        let open = self.files.borrow().get(&stream).cloned();
        let file = match open {
            Some(f) => Ok(f),
            None => match BufferedFile::open(&*path).await {
                Ok(f) => {
                    let f = Rc::new(f);
                    self.files.borrow_mut().insert(stream, f.clone());
                    Ok(f)
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            },
        };
        let result = match file {
            Ok(f) => f
                .read_at(offset, len)
                .await
                .map(|data| Bytes::copy_from_slice(&data))
                .map_err(|e| std::io::Error::other(e.to_string())),
            Err(e) => Err(e),
        };
        self.relay
            .borrow_mut()
            .handle_file_read(stream, offset, result, Instant::now());
        if !self.relay.borrow().has_stream(stream) {
            // The viewer left while this read was in flight.
            self.files.borrow_mut().remove(&stream);
        }
        self.process();
    }
}
