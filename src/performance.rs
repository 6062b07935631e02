//! Every performance knob of the relay in one place, each next to the measurement that
//! chose its value (in the manner of SRS's `srs_core_performance.hpp`).
//!
//! The numbers come from `benches/fanout.sh` runs on the project's 2-core machines; the runs
//! themselves, with the commands that reproduce them, are in `benches/RESULTS.md`. Change a
//! value here only with a new side-by-side run.

use std::time::Duration;

/// How long one task may run before the shard's executor polls for I/O and lets the other
/// tasks run (glommio's preemption timer; its default is 100 ms). The fan-out yields only when
/// this fires (`yield_if_needed`), and new connections' accepts and handshake bytes are only
/// seen when the executor polls its ring, so with the default a joining viewer waited up to
/// 100 ms per handshake round trip behind a busy fan-out: join p99 at 2,000 viewers was
/// 191-244 ms for HTTP-FLV and about 500 ms for RTMP (four round trips), while the server's own
/// histogram put every join under 5 ms once its request was read (RESULTS.md, issue 11). At
/// 5 ms, 2,000 RTMP viewers joining at 1,000/s on one core: join p99 57-60 ms against 141-151 ms
/// with the default, for 1.03x the CPU per delivered GB and latency p99 +10 % (RESULTS.md,
/// "The preemption timer").
pub const SHARD_PREEMPT_TIMER: Duration = Duration::from_millis(5);

/// Viewers one fan-out step serves before the shard's executor gets a chance to run other
/// tasks (publishers, the accept loop, other streams). 64 viewers cost about 0.7 ms of
/// `sendmsg` at 1,000 viewers (10.6 µs a send, RESULTS.md "perf stat"), short enough that a
/// publisher on the same core is never held for a frame interval.
pub const VIEWERS_PER_YIELD: usize = 64;

/// At most this many buffers go into one vectored write (Linux's IOV_MAX is 1024). A viewer
/// that keeps up needs 2-5 per frame; 512 lets one catching up send a whole second of media
/// in one call.
pub const MAX_IOVECS: usize = 512;

/// At most this many bytes go into one write, so one viewer's backlog cannot make a single
/// call monopolise the core.
pub const MAX_WRITE_BYTES: usize = 4 << 20;

/// The longest an audio or data message waits for a video frame to go out with
/// (`viewer.flush_on = "video"`): one frame interval down to 20 frames per second. Sends per
/// viewer per message went from 0.98 to 0.39 and CPU-s/GB from 1.87 to 1.02 at 1,000
/// viewers (RESULTS.md, issue 5).
pub const MAX_HOLD: Duration = Duration::from_millis(50);

/// A stream that has sent no video for this long is treated as audio-only: its audio is
/// written as it arrives instead of waiting for video that is not coming.
pub const VIDEO_GONE: Duration = Duration::from_secs(1);

/// Messages a shard's inbox holds before senders see it as full (then the receiving shard
/// sees a sequence gap and its viewers resume at a keyframe). 64 Ki handles of 40-odd bytes:
/// some 3 MB a shard, seconds of every stream's frames even at 50 streams.
pub const INBOX_CAPACITY: usize = 64 * 1024;

/// Messages the inbox task takes per wake-up before it lets other tasks run.
pub const INBOX_BATCH: usize = 256;

/// Bytes asked of the kernel per read, from the shard's one read buffer. Per-connection
/// buffers cost 85 KiB RSS per viewer at 1,000 viewers; one per shard, 12 KiB
/// (RESULTS.md, issue 5).
pub const READ_SIZE: usize = 64 * 1024;

/// The per-stream ring never holds more than this many bytes (entry records included), and
/// never less than [`RING_MIN_BYTES`]: twice the backlog a viewer may have before it skips
/// to a keyframe, so a viewer within its limits never falls off the ring.
pub const RING_BACKLOG_FACTOR: usize = 2;
/// See [`RING_BACKLOG_FACTOR`].
pub const RING_MIN_BYTES: usize = 1 << 20;

/// How far ahead of real time a stored file's tags are sent, so a player's buffer fills at
/// once (nginx-rtmp sends stored files ahead the same way).
pub const FILE_PREROLL: Duration = Duration::from_secs(1);

/// The most a stored file is sent ahead of real time, whatever buffer the player asks for
/// (Set Buffer Length): each viewer's lead sits in memory, and 500 viewers of a 5 Mbit/s
/// file at 5 s each are already 1.5 GB.
pub const VOD_MAX_LEAD: Duration = Duration::from_secs(5);

/// How much media a stored file's source releases at each wake-up: a viewer of a file is a
/// stream of its own, so each batch costs it one timer, one fan-out pass and one vectored
/// write, where releasing frame by frame cost that about 70 times a second (25 fps video
/// and its audio). The player's lead swings half a batch either side of [`FILE_PREROLL`] (or
/// its buffer), so this must stay at most twice the smallest lead. `benches/vod.sh`, 500
/// viewers of a 1 GB file at random positions, 15 s per side, quiet machine, VOD's CPU per
/// GB over live viewers' (RESULTS.md "VOD: batched pacing"): frame by frame 7.0-7.8x; 250 ms
/// 2.6x; 500 ms 2.1-2.2x; 1000 ms 1.7x.
pub const VOD_PACE_BATCH: Duration = Duration::from_millis(1000);
const _: () = assert!(VOD_PACE_BATCH.as_millis() <= 2 * FILE_PREROLL.as_millis());

/// The chunk size a viewer of a stored file is switched to (Set Chunk Size at its play),
/// when the server's `chunk_size` is smaller: a frame that fits one chunk goes out straight
/// from the file's read, its chunk header written over the FLV tag header before it
/// (`relay/vod_source.rs`); a longer one is copied into chunks. 65536 is the largest SRS
/// accepts from a peer (nginx-rtmp takes up to 10 MB; ffmpeg, librtmp and GStreamer have no
/// limit) and holds every frame of a 2.5 Mbit/s stream but the largest keyframes.
pub const VOD_CHUNK_SIZE: u32 = 65536;

/// Blocking threads each shard keeps, on its own CPU, for what would block it: opening and
/// indexing stored files, reading them for their viewers, resolving names. More than one,
/// so a long job (indexing a large file without a keyframe index, a slow DNS answer) does
/// not hold up the reads of the files already playing.
pub const BLOCKING_THREADS_PER_SHARD: usize = 2;

/// The most a stored file's source reads at once: a read covers the batch of media being
/// released ([`VOD_PACE_BATCH`]), one second of a 32 Mbit/s file within this.
pub const FILE_READ_MAX: usize = 4 << 20;

/// The least a stored file's source reads at once, when its batch is smaller (a
/// low-bitrate file). Reads sized to the batch, which then goes out whole and frees its
/// buffer, beat fixed reads: `benches/vod.sh`, 500 viewers, quiet machine, VOD's CPU per GB
/// over live viewers' (RESULTS.md "VOD: reads on the shard, frames sent from them"):
/// batch-sized reads 1.29-1.57x (0.46-0.49 CPU-s/GB); fixed 128 KiB reads 1.33-1.38x
/// (0.55-0.56); fixed 16-64 KiB reads were dearer still (more reads, same bytes).
pub const FILE_READ_SIZE: usize = 16 * 1024;

/// How often a stored file's reader looks again when its viewer is over its backlog.
pub const FILE_BACKPRESSURE_RETRY: Duration = Duration::from_millis(20);
