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
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::io::BufferedFile;
use std::os::fd::{FromRawFd, IntoRawFd};

use super::vod_files::{DownloadFile, Opened};

use super::callback_client;
use super::mailbox::{Inbox, SendError, ShardSender};
use super::record_writer::RecordHandle;
use super::sockets::{SendNow, SocketTable};
use super::upstream_link::{self, LinkControl, LinkSpec};
use super::wakeup::{Latch, Signal};
use crate::access::callback::{CallbackAnswer, CallbackRequest, MAX_IN_FLIGHT_PER_SHARD};
use crate::access::query::redact_url;
use crate::performance::{INBOX_BATCH, VIEWERS_PER_YIELD};
use crate::relay::client::ClientId;
use crate::relay::message::{ShardId, ShardMessage};
use crate::relay::recorder::{RecordOp, RecordingId};
use crate::relay::shard::{Output, Shard};
use crate::relay::stream::StreamId;

pub struct ShardDriver {
    pub id: ShardId,
    pub relay: RefCell<Shard>,
    pub sockets: RefCell<SocketTable>,
    senders: Vec<ShardSender<ShardMessage>>,
    fan_out: Signal,
    /// When fan-out work was first queued since the fan-out task last started a pass.
    fan_out_queued: Cell<Option<Instant>>,
    /// Wakes the timer task when the relay's next deadline is earlier than its sleep.
    timer: Signal,
    /// What the timer task sleeps until, while it sleeps: `Some(None)` for "until woken".
    timer_target: Cell<Option<Option<Instant>>>,
    /// Open stored files, by the stream their source feeds: read on the blocking threads
    /// (`vod_files::read_at`).
    files: RefCell<HashMap<StreamId, std::sync::Arc<std::fs::File>>>,
    /// Stored files downloaded over HTTP, by client.
    downloads: RefCell<HashMap<ClientId, Rc<BufferedFile>>>,
    /// Set when shutdown starts: the accept loop stops, the shard winds down.
    pub shutting_down: Latch,
    /// Notified when a client's socket is gone: shutdown waits for the last one.
    pub client_gone: Signal,
    /// This shard's end of the recordings' disk writer.
    record: Option<RecordHandle>,
    /// Recordings stopped because the writer could not take more: their later operations
    /// (already decided by the relay) are dropped.
    failed_recordings: RefCell<HashSet<RecordingId>>,
    /// `on_*_done` notifications under way (bounded like the callbacks clients wait for).
    notifies_in_flight: Cell<usize>,
    /// What all shards share to admit a connection (per-address counts, TLS settings).
    pub admission: std::sync::Arc<super::admission::Admission>,
    /// The upstream links of this shard's pulls (`upstream_link.rs`), by link number.
    links: RefCell<HashMap<u64, Rc<LinkControl>>>,
}

impl ShardDriver {
    pub fn new(
        relay: Shard,
        senders: Vec<ShardSender<ShardMessage>>,
        record: Option<RecordHandle>,
        admission: std::sync::Arc<super::admission::Admission>,
    ) -> Rc<ShardDriver> {
        let driver = Rc::new(ShardDriver {
            id: relay.id,
            relay: RefCell::new(relay),
            sockets: RefCell::new(SocketTable::default()),
            senders,
            fan_out: Signal::default(),
            fan_out_queued: Cell::new(None),
            timer: Signal::default(),
            timer_target: Cell::new(None),
            files: RefCell::new(HashMap::new()),
            downloads: RefCell::new(HashMap::new()),
            shutting_down: Latch::default(),
            client_gone: Signal::default(),
            record,
            failed_recordings: RefCell::new(HashSet::new()),
            notifies_in_flight: Cell::new(0),
            admission,
            links: RefCell::new(HashMap::new()),
        });
        driver.read_wall_clock();
        driver
    }

    /// Starts the shard's own tasks: inbox, fan-out, timer.
    pub fn start(self: &Rc<Self>, inbox: Inbox<ShardMessage>) {
        glommio::spawn_local(self.clone().inbox_task(inbox)).detach();
        glommio::spawn_local(self.clone().fan_out_task()).detach();
        glommio::spawn_local(self.clone().timer_task()).detach();
        self.relay.borrow_mut().start_static_pulls(Instant::now());
        self.process();
    }

    /// A link's task ended: its handle goes.
    pub fn forget_link(&self, link: u64) {
        self.links.borrow_mut().remove(&link);
    }

    /// Carries out everything the relay has asked for since the last call.
    pub fn process(self: &Rc<Self>) {
        if let Some(record) = &self.record {
            while let Some((id, reason)) = record.next_failure() {
                self.relay.borrow_mut().record_failed(id, reason);
            }
        }
        loop {
            let Some(out) = self.relay.borrow_mut().poll_output() else {
                break;
            };
            match out {
                Output::Send { to, message } => self.send(to, message),
                Output::FanOut => {
                    if self.fan_out_queued.get().is_none() {
                        self.fan_out_queued.set(Some(Instant::now()));
                    }
                    self.fan_out.notify();
                }
                Output::WaitWritable(id) => {
                    if let Some(s) = self.sockets.borrow().get(id)
                        && !s.want_write.replace(true)
                    {
                        s.wake();
                    }
                }
                Output::Close(id) => {
                    self.downloads.borrow_mut().remove(&id);
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
                    self.read_file(stream, path, offset, len);
                }
                Output::CloseFile(stream) => {
                    self.files.borrow_mut().remove(&stream);
                }
                Output::Record(op) => self.record(op),
                Output::Callback {
                    client,
                    ticket,
                    request,
                } => {
                    glommio::spawn_local(self.clone().callback(client, ticket, request)).detach();
                }
                Output::Notify(request) => self.notify(request),
                Output::ForwardConnect {
                    stream,
                    index,
                    attempt,
                    host,
                    port,
                    tls,
                } => {
                    let req = super::forward_link::ConnectRequest {
                        stream,
                        index,
                        attempt,
                        host,
                        port,
                        tls,
                    };
                    glommio::spawn_local(super::forward_link::run(self.clone(), req)).detach();
                }
                Output::OpenVod {
                    request,
                    dir,
                    candidates,
                } => {
                    glommio::spawn_local(self.clone().open_vod(request, dir, candidates)).detach();
                }
                Output::OpenDownload { client, dir, file } => {
                    glommio::spawn_local(self.clone().open_download(client, dir, file)).detach();
                }
                Output::ReadDownload {
                    client,
                    offset,
                    len,
                } => {
                    glommio::spawn_local(self.clone().read_download(client, offset, len)).detach();
                }
                Output::OpenUpstream {
                    link,
                    url,
                    key,
                    relay_path,
                    tls_ca_file,
                } => {
                    let control = Rc::new(LinkControl::default());
                    self.links.borrow_mut().insert(link, control.clone());
                    let spec = LinkSpec {
                        link,
                        url,
                        key,
                        relay_path,
                        tls_ca_file,
                    };
                    glommio::spawn_local(upstream_link::run(self.clone(), spec, control)).detach();
                }
                Output::CloseUpstream { link } => {
                    if let Some(control) = self.links.borrow_mut().remove(&link) {
                        control.close();
                    }
                }
            }
        }
        // The timer task sleeps for the relay's next deadline: wake it only when that
        // deadline moved earlier (or appeared), so it never sleeps too long. A deadline that
        // moved later (a held entry went out with its video frame) is left to the armed
        // sleep, which then wakes once for nothing and sleeps again. Waking it on every move
        // cost a timer-task pass per input, some 6,000 a second at 300 publishers (RESULTS.md,
        // "Ingest: where the io_uring submissions come from").
        let next = self.relay.borrow_mut().poll_timeout();
        if let Some(target) = self.timer_target.get()
            && rearm_timer(target, next)
        {
            self.timer.notify();
        }
        if self.relay.borrow().is_shutting_down() && !self.shutting_down.is_set() {
            self.shutting_down.set();
        }
    }

    /// Hands a recording operation to the disk writer; if it cannot take it now, the
    /// recording stops (never the shard), and its file is closed as it is.
    fn record(&self, op: RecordOp) {
        let Some(record) = &self.record else {
            return;
        };
        let id = op.id();
        if self.failed_recordings.borrow().contains(&id) {
            if let RecordOp::Close { .. } = op {
                self.failed_recordings.borrow_mut().remove(&id);
            }
            return;
        }
        if let Err(reason) = record.submit(op) {
            tracing::error!(shard = self.id, recording = id, %reason, "recording stopped");
            self.failed_recordings.borrow_mut().insert(id);
            // The file as written so far is closed (unindexed), unless even that cannot
            // be queued: then it stays open until the process ends.
            let _ = record.submit(RecordOp::Close { id, index: None });
            self.relay.borrow_mut().record_failed(id, reason);
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
            if let Some(queued) = self.fan_out_queued.get() {
                self.relay
                    .borrow_mut()
                    .record_fan_out_delay(queued.elapsed());
            }
            loop {
                // Work queued from here on is served by this loop, not waited for.
                self.fan_out_queued.set(None);
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
            self.read_wall_clock();
            self.relay.borrow_mut().handle_timeout(Instant::now());
            self.process();
        }
    }

    /// Tells the relay the unix time (for signed links' expiry). Read here, once a second
    /// or so while the shard has clients (the rate sampling timer), rather than per input:
    /// the relay adds the monotonic time since, which cannot drift from it in a second.
    fn read_wall_clock(&self) {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.relay.borrow_mut().set_wall_clock(Instant::now(), unix);
    }

    /// Makes an access-control callback for a waiting client and hands the answer back.
    async fn callback(self: Rc<Self>, client: ClientId, ticket: u64, request: CallbackRequest) {
        let answer = callback_client::call(&request).await;
        if let CallbackAnswer::Failed(why) = &answer {
            tracing::warn!(shard = self.id, call = request.call.as_str(), url = %redact_url(&request.url), "access callback failed: {why}");
        }
        {
            let sockets = self.sockets.borrow();
            self.relay.borrow_mut().handle_callback_answer(
                client,
                ticket,
                answer,
                Instant::now(),
                &mut SendNow(&sockets),
            );
        }
        self.process();
    }

    /// Looks a stored file up for the relay on glommio's blocking thread (`vod_files.rs`):
    /// resolving, checking and indexing may take long, and the shard goes on meanwhile.
    async fn open_vod(
        self: Rc<Self>,
        request: u64,
        dir: std::path::PathBuf,
        candidates: Vec<String>,
    ) {
        let opened = glommio::executor()
            .spawn_blocking(move || super::vod_files::open(&dir, &candidates))
            .await;
        let (result, file) = match opened {
            Opened::Found { path, index, file } => (Ok(Some((path, index))), Some(file)),
            Opened::Missing => (Ok(None), None),
            Opened::Refused(why) => {
                tracing::info!(shard = self.id, "stored file refused: {why}");
                (Err(why), None)
            }
        };
        let stream = {
            let sockets = self.sockets.borrow();
            self.relay.borrow_mut().handle_vod_opened(
                request,
                result,
                Instant::now(),
                &mut SendNow(&sockets),
            )
        };
        if let (Some(stream), Some(file)) = (stream, file) {
            // The source reads the descriptor that was checked.
            self.files
                .borrow_mut()
                .insert(stream, std::sync::Arc::new(file));
        }
        self.process();
    }

    /// Looks a stored file up for an HTTP download on glommio's blocking thread, confined
    /// to the application's `vod_dir` (`vod_files::open_download`).
    async fn open_download(
        self: Rc<Self>,
        client: ClientId,
        dir: std::path::PathBuf,
        file: String,
    ) {
        let opened = glommio::executor()
            .spawn_blocking(move || super::vod_files::open_download(&dir, &file))
            .await;
        let (result, file) = match opened {
            DownloadFile::Found { file, len } => (Ok(len), Some(file)),
            DownloadFile::Missing => (Err("no such file".to_owned()), None),
            DownloadFile::Refused(why) => (Err(why), None),
        };
        if let Some(file) = file {
            // SAFETY: `into_raw_fd` gives up ownership of an open descriptor, which the
            // BufferedFile takes over and closes.
            let file = unsafe { BufferedFile::from_raw_fd(file.into_raw_fd()) };
            self.downloads.borrow_mut().insert(client, Rc::new(file));
        }
        let goes_on = {
            let sockets = self.sockets.borrow();
            self.relay.borrow_mut().handle_download_opened(
                client,
                result,
                Instant::now(),
                &mut SendNow(&sockets),
            )
        };
        if !goes_on {
            self.downloads.borrow_mut().remove(&client);
        }
        self.process();
    }

    /// Reads a piece of a download through io_uring: the shard never blocks on the disk.
    async fn read_download(self: Rc<Self>, client: ClientId, offset: u64, len: usize) {
        let file = self.downloads.borrow().get(&client).cloned();
        let result = match file {
            Some(f) => f
                .read_at(offset, len)
                .await
                .map(|data| Bytes::copy_from_slice(&data))
                .map_err(|e| std::io::Error::other(e.to_string())),
            None => Err(std::io::Error::other("the file is no longer open")),
        };
        let goes_on = {
            let sockets = self.sockets.borrow();
            self.relay.borrow_mut().handle_download_read(
                client,
                offset,
                result,
                Instant::now(),
                &mut SendNow(&sockets),
            )
        };
        if !goes_on {
            self.downloads.borrow_mut().remove(&client);
        }
        self.process();
    }

    /// Makes a fire-and-forget callback (`on_*_done`), unless too many are under way.
    fn notify(self: &Rc<Self>, request: CallbackRequest) {
        if self.notifies_in_flight.get() >= MAX_IN_FLIGHT_PER_SHARD {
            tracing::warn!(shard = self.id, call = request.call.as_str(), url = %redact_url(&request.url), "access notification dropped: too many under way");
            return;
        }
        self.notifies_in_flight
            .set(self.notifies_in_flight.get() + 1);
        let driver = self.clone();
        glommio::spawn_local(async move {
            if let CallbackAnswer::Failed(why) = callback_client::call(&request).await {
                tracing::warn!(shard = driver.id, call = request.call.as_str(), url = %redact_url(&request.url), "access notification failed: {why}");
            }
            driver
                .notifies_in_flight
                .set(driver.notifies_in_flight.get() - 1);
        })
        .detach();
    }

    /// Reads a piece of a stored file for its source into a buffer the source then owns:
    /// here and now what the page cache holds (`vod_files::read_cached`, which never waits
    /// for the disk), else on a blocking thread (`read_file_blocking`). Either way the shard
    /// never blocks on the disk.
    fn read_file(
        self: &Rc<Self>,
        stream: StreamId,
        path: std::sync::Arc<std::path::Path>,
        offset: u64,
        len: usize,
    ) {
        let open = self.files.borrow().get(&stream).cloned();
        // Allocated (and later freed) on the shard's thread.
        let mut buf = bytes::BytesMut::with_capacity(len);
        if let Some(file) = &open {
            match super::vod_files::read_cached(file, offset, len, buf) {
                Ok((read, true)) => {
                    self.relay.borrow_mut().handle_file_read(
                        stream,
                        offset,
                        Ok(read),
                        Instant::now(),
                    );
                    return;
                }
                Ok((read, false)) => buf = read,
                // The filesystem may not take RWF_NOWAIT; the blocking read reports any
                // error the file itself has.
                Err(_) => buf = bytes::BytesMut::with_capacity(len),
            }
        }
        glommio::spawn_local(
            self.clone()
                .read_file_blocking(stream, path, open, offset, len, buf),
        )
        .detach();
    }

    /// The rest of [`ShardDriver::read_file`]'s read, on a blocking thread.
    async fn read_file_blocking(
        self: Rc<Self>,
        stream: StreamId,
        path: std::sync::Arc<std::path::Path>,
        open: Option<std::sync::Arc<std::fs::File>>,
        offset: u64,
        len: usize,
        buf: bytes::BytesMut,
    ) {
        let read = glommio::executor()
            .spawn_blocking(move || {
                let file = match open {
                    Some(f) => f,
                    None => std::sync::Arc::new(std::fs::File::open(&*path)?),
                };
                super::vod_files::read_at(&file, offset, len, buf).map(|data| (file, data))
            })
            .await;
        let result = match read {
            Ok((file, data)) => {
                self.files.borrow_mut().entry(stream).or_insert(file);
                Ok(data)
            }
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

/// Whether the timer task, asleep until `target` (`None`: until woken), must be woken to
/// sleep for `next` instead: only when `next` is earlier. A later (or no) deadline waits for
/// the armed sleep to end, which costs at most one wake-up that finds nothing due.
fn rearm_timer(target: Option<Instant>, next: Option<Instant>) -> bool {
    match (target, next) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(target), Some(next)) => next < target,
    }
}

#[cfg(test)]
mod tests {
    use super::rearm_timer;
    use std::time::{Duration, Instant};

    #[test]
    fn timer_is_rearmed_only_for_an_earlier_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_millis(50);
        assert!(rearm_timer(None, Some(now)));
        assert!(rearm_timer(Some(later), Some(now)));
        assert!(!rearm_timer(Some(now), Some(now)));
        assert!(!rearm_timer(Some(now), Some(later)));
        assert!(!rearm_timer(Some(now), None));
        assert!(!rearm_timer(None, None));
    }
}
