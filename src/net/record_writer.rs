//! The disk writer for recordings: one thread that carries out every shard's
//! [`RecordOp`]s, so no shard ever waits for a disk.
//!
//! A shard's driver hands each operation over with [`RecordHandle::submit`], which never
//! blocks: the channel is bounded in operations and in bytes queued (media held only by
//! their shared handles). When the disk falls that far behind, or a write fails (a full
//! disk, a file size limit, an I/O error), that recording stops: the writer logs the path
//! and the reason, keeps what was written (a valid file up to its last complete tag or
//! fragment), and tells the shard, which counts it in `shardcast_record_errors_total` and
//! shows it in the API. The live stream and its viewers never notice.
//!
//! On close an FLV file is rewritten once with its duration and keyframe index in
//! `onMetaData` (`media/flv_file.rs`): the new file is written beside it (`NAME.part`)
//! and renamed over it, so a crash in the middle leaves the unindexed original whole.
//! Closed files are synced to disk, then `on_record_done` is called, fire and forget.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::media::flv::TAG_TYPE_SCRIPT_DATA;
use crate::media::flv_file;
use crate::relay::message::ShardId;
use crate::relay::recorder::{FlvIndex, RecordOp, RecordingId};

/// Operations queued at most (a few per flush interval per recorded stream).
const QUEUE_OPS: usize = 4096;
/// Of which this many are kept for opens and closes, so a backed-up disk still gets its
/// files closed.
const CONTROL_RESERVE: usize = 512;
/// Bytes of media queued at most before recordings stop rather than hold more memory.
const QUEUE_BYTES: usize = 256 << 20;
/// How long `on_record_done` may take.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

struct Job {
    shard: ShardId,
    /// None: every shard has finished; write what is queued and end.
    op: Option<RecordOp>,
    bytes: usize,
}

/// Ends the writer once the shards are done: [`WriterEnd::finish`] queues the end behind
/// their last operations and waits (up to a bound) for the writer to get there.
pub struct WriterEnd {
    tx: Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl WriterEnd {
    /// Returns whether the writer finished within `limit`.
    pub fn finish(self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let job = Job {
            shard: 0,
            op: None,
            bytes: 0,
        };
        if self.tx.send_deadline(job, deadline).is_err() {
            return false;
        }
        while !self.thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.thread.join();
        true
    }
}

/// A shard's end of the writer.
pub struct RecordHandle {
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
    shard: ShardId,
    failures: Receiver<(RecordingId, String)>,
}

/// Starts the writer thread; one handle per shard.
pub fn start(shards: usize) -> io::Result<(Vec<RecordHandle>, WriterEnd)> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_OPS);
    let queued = Arc::new(AtomicUsize::new(0));
    let (fail_tx, fail_rx): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| crossbeam_channel::unbounded()).unzip();
    let writer = Writer {
        files: HashMap::new(),
        queued: queued.clone(),
        failures: fail_tx,
    };
    let thread = std::thread::Builder::new()
        .name("record-writer".into())
        .spawn(move || writer.run(rx))?;
    let handles = fail_rx
        .into_iter()
        .enumerate()
        .map(|(shard, failures)| RecordHandle {
            tx: tx.clone(),
            queued: queued.clone(),
            shard,
            failures,
        })
        .collect();
    Ok((handles, WriterEnd { tx, thread }))
}

impl RecordHandle {
    /// Queues `op` for the writer without waiting. An error says why it could not be
    /// queued: the recording must stop (the caller tells the relay).
    pub fn submit(&self, op: RecordOp) -> Result<(), String> {
        let bytes = match &op {
            RecordOp::Write { data, .. } => data.iter().map(|b| b.len()).sum(),
            _ => 0,
        };
        if bytes > 0 {
            let queued = self.queued.load(Ordering::Relaxed);
            if queued + bytes > QUEUE_BYTES || self.tx.len() + CONTROL_RESERVE >= QUEUE_OPS {
                return Err(format!(
                    "the disk is too slow: {} MiB of recordings wait to be written",
                    queued >> 20
                ));
            }
            self.queued.fetch_add(bytes, Ordering::Relaxed);
        }
        let job = Job {
            shard: self.shard,
            op: Some(op),
            bytes,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                self.queued.fetch_sub(job.bytes, Ordering::Relaxed);
                Err("the disk writer's queue is full".into())
            }
        }
    }

    /// The next recording the writer gave up on, with why.
    pub fn next_failure(&self) -> Option<(RecordingId, String)> {
        self.failures.try_recv().ok()
    }
}

struct OpenFile {
    shard: ShardId,
    path: PathBuf,
    /// None once a write failed: later writes are dropped, the close only forgets it.
    file: Option<BufWriter<File>>,
    app: Arc<str>,
    stream: Arc<str>,
    on_done: Option<Arc<str>>,
}

struct Writer {
    files: HashMap<RecordingId, OpenFile>,
    queued: Arc<AtomicUsize>,
    failures: Vec<Sender<(RecordingId, String)>>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        // Ends when the runtime says the shards have finished (after their last closes,
        // queued before), or when every sender is gone.
        while let Ok(job) = rx.recv() {
            self.queued.fetch_sub(job.bytes, Ordering::Relaxed);
            let Some(op) = job.op else {
                break;
            };
            self.handle(job.shard, op);
        }
        for (_, f) in self.files.drain() {
            if let Some(mut file) = f.file {
                let _ = file.flush();
            }
        }
    }

    fn fail(&mut self, id: RecordingId, what: &str, error: io::Error) {
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let reason = format!("{what} {}: {error}", f.path.display());
        tracing::error!(path = %f.path.display(), %error, stream = %format!("{}/{}", f.app, f.stream), "recording stopped: {what} failed; the file keeps what was written before");
        f.file = None;
        if let Some(tx) = self.failures.get(f.shard) {
            let _ = tx.send((id, reason));
        }
    }

    fn handle(&mut self, shard: ShardId, op: RecordOp) {
        match op {
            RecordOp::Open {
                id,
                path,
                app,
                stream,
                on_done,
            } => {
                let (path, file, error) = match create_unique(&path) {
                    Ok((path, file)) => {
                        (path, Some(BufWriter::with_capacity(256 << 10, file)), None)
                    }
                    Err(e) => (path, None, Some(e)),
                };
                if error.is_none() {
                    tracing::info!(path = %path.display(), "recording to file");
                }
                self.files.insert(
                    id,
                    OpenFile {
                        shard,
                        path,
                        file,
                        app,
                        stream,
                        on_done,
                    },
                );
                if let Some(error) = error {
                    self.fail(id, "creating", error);
                }
            }
            RecordOp::Write { id, data } => {
                let Some(file) = self.files.get_mut(&id).and_then(|f| f.file.as_mut()) else {
                    return;
                };
                let result = data
                    .iter()
                    .try_for_each(|b| file.write_all(b))
                    .and_then(|()| file.flush());
                if let Err(e) = result {
                    self.fail(id, "writing", e);
                }
            }
            RecordOp::Close { id, index } => {
                let Some(f) = self.files.remove(&id) else {
                    return;
                };
                let Some(mut file) = f.file else {
                    return;
                };
                if let Err(e) = file.flush().and_then(|()| file.get_ref().sync_data()) {
                    tracing::error!(path = %f.path.display(), error = %e, "recording: the last writes failed");
                    return;
                }
                drop(file);
                if let Some(index) = index
                    && let Err(e) = rewrite_indexed(&f.path, &index)
                {
                    tracing::warn!(path = %f.path.display(), error = %e, "recording closed without its keyframe index (the file plays, but seeks slowly)");
                }
                tracing::info!(path = %f.path.display(), "recording closed");
                if let Some(url) = f.on_done {
                    notify_record_done(&url, &f.app, &f.stream, &f.path);
                }
            }
        }
    }
}

/// Creates `path` (and its directories), or `NAME-1.EXT`, `NAME-2.EXT`... if taken: a
/// recording never overwrites another.
fn create_unique(path: &Path) -> io::Result<(PathBuf, File)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut candidate = path.to_owned();
    for n in 1..1000 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                candidate = path.with_file_name(format!("{stem}-{n}{ext}"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "999 files of that name already",
    ))
}

/// Rewrites a closed FLV file with its duration and keyframe index in `onMetaData`.
fn rewrite_indexed(path: &Path, index: &FlvIndex) -> io::Result<()> {
    let mut original = File::open(path)?;
    let media_len = original.metadata()?.len().saturating_sub(index.media_start);
    let mut header = [0u8; 13];
    original.read_exact(&mut header)?;
    let body = flv_file::indexed_metadata(
        &index.metadata,
        index.duration_ms,
        media_len,
        &index.keyframes,
    );
    let mut part_name = path.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&part)?);
        out.write_all(&header)?;
        out.write_all(&flv_file::tag(TAG_TYPE_SCRIPT_DATA, 0, &body))?;
        original.seek(SeekFrom::Start(index.media_start))?;
        io::copy(&mut original, &mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&part, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// nginx-rtmp's `on_record_done`: an HTTP POST form with the file's path, fire and
/// forget on a short-lived thread of its own, so a slow endpoint never holds the disk
/// writer. The one place that calls out for recordings: point it at the shared HTTP
/// callback client once there is one.
pub fn notify_record_done(url: &str, app: &str, stream: &str, path: &Path) {
    let form = vec![
        ("call", "record_done".to_owned()),
        ("app", app.to_owned()),
        ("name", stream.to_owned()),
        ("path", path.display().to_string()),
        ("recorder", "default".to_owned()),
        ("addr", String::new()),
        ("clientid", String::new()),
        ("flashver", String::new()),
        ("swfurl", String::new()),
        ("tcurl", String::new()),
        ("pageurl", String::new()),
    ];
    let url = url.to_owned();
    let spawned = std::thread::Builder::new()
        .name("record-done".into())
        .spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(CALLBACK_TIMEOUT))
                .http_status_as_error(false)
                .build()
                .into();
            match agent.post(&url).send_form(form) {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%url, status = r.status().as_u16(), "on_record_done answered with an error"),
                Err(e) => tracing::warn!(%url, error = %e, "on_record_done failed"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "on_record_done not called: cannot start a thread");
    }
}
