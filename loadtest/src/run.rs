//! One run, start to end: executor threads, the phases of the run, and the report.
//!
//! Thread per core, like the server: `--threads` glommio executors (unpinned, so they do
//! not fight a relay pinned to the same machine's cores), each owning its publishers and
//! viewers and its own measurements. Publisher `p` runs on thread `p % threads`; viewer `i`
//! plays stream `i % streams` on thread `i % threads`, so every stream's viewers spread
//! over every thread. The main thread only watches: it starts the viewers once every
//! publisher is publishing, samples the server, draws the progress line, and ends the run
//! at `--duration` or on Ctrl-C (SIGINT or SIGTERM), reads the server's admin API
//! (`--admin`) while every connection is still up, then gathers each thread's numbers.
//!
//! Phases: publishers connect and publish (a refused or failed publish ends the run with
//! its error: viewers would measure nothing); viewers then start at `--ramp` per second;
//! the *steady state* runs from the last viewer's start to the end, and is the window the
//! server's CPU time is measured over.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glommio::timer::sleep;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::admin::{self, AdminView};
use crate::discard::Discarder;
use crate::multitrack;
use crate::report::{
    Crowd, Delivered, GeneratorThread, LatencyTrend, LoadGenerator, Messages, OwnCounts,
    Publishers, Report, RunSettings, SATURATED, Server, ServerApi, Summary, TrackReport, Tracks,
    Viewers, round3,
};
use crate::server_usage::{self, ProcSample};
use crate::settings::{Counting, Settings, SourceSpec, VodStart};
use crate::source::{FileSource, Source, SyntheticSource};
use crate::stats::{Shared, ThreadReport, ThreadStats, histogram, trend_window};
use crate::{clock, publisher, viewer};

/// Locked memory each executor reserves for io_uring buffers: the load generator does no
/// file I/O, so glommio's minimum is enough (and fits the default RLIMIT_MEMLOCK).
const IO_MEMORY: usize = 64 * 1024;
/// How often the main thread looks at the run.
const TICK: Duration = Duration::from_millis(100);

/// What every task on one executor thread shares.
pub struct ThreadContext {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub settings: Arc<Settings>,
    pub stats: RefCell<ThreadStats>,
    /// Drains the thread's byte-counting viewers.
    pub discarder: Rc<Discarder>,
}

/// Why a run could not produce a report.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn make_sources(settings: &Settings) -> Result<Vec<Source>, RunError> {
    if settings.vod_start.is_some() {
        // Viewers play stored files: nobody publishes.
        return Ok(Vec::new());
    }
    match &settings.source {
        SourceSpec::Synthetic(s) => Ok((0..settings.streams())
            .map(|_| Source::Synthetic(SyntheticSource::new(*s)))
            .collect()),
        SourceSpec::File(path) => {
            let file = FileSource::open(path).map_err(RunError)?;
            if !file.has_markers() {
                eprintln!(
                    "shardcast-load: {} is not AVC video: viewers cannot measure latency or loss",
                    path.display()
                );
            }
            Ok((0..settings.streams())
                .map(|_| Source::File(file.clone()))
                .collect())
        }
    }
}

/// Runs the load test and returns its report.
pub fn run(settings: Settings) -> Result<Report, RunError> {
    clock::epoch();
    let settings = Arc::new(settings);
    let threads = settings.threads;
    let mut shared = Shared::new(settings.streams(), threads, trend_window(settings.duration));
    shared.multitrack = settings.multitrack;
    shared.expected_tracks = multitrack::expected_tracks_mask(settings.multitrack_legacy_viewers);
    let shared = Arc::new(shared);
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())
            .map_err(|e| RunError(format!("cannot install signal handler: {e}")))?;
    }
    let mut sources: Vec<Option<Source>> = make_sources(&settings)?.into_iter().map(Some).collect();
    // Hand each thread its publishers' sources.
    let mut per_thread: Vec<Vec<(usize, Source)>> = (0..threads).map(|_| Vec::new()).collect();
    for (stream, source) in sources.iter_mut().enumerate() {
        if let Some(source) = source.take() {
            per_thread[stream % threads].push((stream, source));
        }
    }
    let per_thread = Arc::new(std::sync::Mutex::new(per_thread));

    let run_start = Instant::now();
    let next_index = Arc::new(AtomicUsize::new(0));
    let pool = {
        let shared = shared.clone();
        let settings = settings.clone();
        LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(threads))
            .io_memory(IO_MEMORY)
            .on_all_shards(move || {
                let index = next_index.fetch_add(1, Ordering::Relaxed);
                let publishers = per_thread
                    .lock()
                    .map(|mut p| std::mem::take(&mut p[index]))
                    .unwrap_or_default();
                let shared = shared.clone();
                let settings = settings.clone();
                async move { thread_main(index, shared, settings, publishers).await }
            })
            .map_err(|e| RunError(format!("cannot start executor threads: {e}")))?
    };

    let mut watch = Watch::new(&settings, &shared, run_start);
    let outcome = watch.run(&interrupted);
    shared.stop.store(true, Ordering::Relaxed);
    let mut merged: Option<ThreadReport> = None;
    for result in pool.join_all() {
        let report = result.map_err(|e| RunError(format!("an executor thread failed: {e}")))?;
        match &mut merged {
            Some(m) => m.merge(report),
            None => merged = Some(report),
        }
    }
    watch.progress.finish_and_clear();
    outcome?;
    let merged = merged.ok_or_else(|| RunError("no executor thread reported".into()))?;
    Ok(watch.report(merged))
}

async fn thread_main(
    index: usize,
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    publishers: Vec<(usize, Source)>,
) -> ThreadReport {
    let ctx = Rc::new(ThreadContext {
        index,
        shared: shared.clone(),
        settings: settings.clone(),
        stats: RefCell::new(ThreadStats::default()),
        discarder: Rc::new(Discarder::new(
            settings.count_interval,
            settings.connect_timeout,
            shared.clone(),
        )),
    });
    if settings.counting == Counting::Bytes {
        glommio::spawn_local(ctx.discarder.clone().run()).detach();
    }
    if let Ok(mut ids) = shared.thread_ids.lock() {
        // SAFETY: gettid has no preconditions.
        ids.push((index, unsafe { libc::gettid() }));
    }
    for (stream, source) in publishers {
        let url = settings.publish_urls[stream].clone();
        glommio::spawn_local(publisher::run(ctx.clone(), stream, url, source)).detach();
    }
    while !shared.viewers_released.load(Ordering::Relaxed) && !shared.stopping() {
        sleep(Duration::from_millis(5)).await;
    }
    let base = Instant::now();
    let total = settings.total_viewers();
    let all = settings.all_viewers();
    let streams = settings.streams();
    let interval = Duration::from_secs_f64(1.0 / settings.ramp_per_second);
    let crowd_interval = Duration::from_secs_f64(1.0 / settings.crowd_ramp_per_second);
    let mut next = index;
    while !shared.stopping() {
        if next >= all {
            sleep(Duration::from_millis(20)).await;
            continue;
        }
        let crowd = next >= total;
        let due = if crowd {
            base + settings.crowd_at + crowd_interval.mul_f64((next - total) as f64)
        } else {
            base + interval.mul_f64(next as f64)
        };
        let now = Instant::now();
        if now < due {
            sleep((due - now).min(Duration::from_millis(20))).await;
            continue;
        }
        let stream = next % streams;
        // Crowd viewers never verify: the latency sample stays the viewers already
        // watching, whose trend shows what the crowd did to them.
        let verifying = !crowd
            && settings.verify_every > 0
            && next.is_multiple_of(settings.verify_every as usize);
        let spec = viewer::ViewerSpec {
            index: next,
            stream,
            url: settings.play_urls[stream].clone(),
            verifying,
            counts_bytes: crowd || (!verifying && settings.counting == Counting::Bytes),
            crowd,
        };
        glommio::spawn_local(viewer::run(ctx.clone(), spec)).detach();
        next += settings.threads;
    }
    let end = Instant::now();
    let lag_ms = settings.lag_threshold.as_millis().min(u128::from(u32::MAX)) as u32;
    let stats = std::mem::take(&mut *ctx.stats.borrow_mut());
    stats.finish(&shared, end, lag_ms)
}

/// The load generator's CPU time at one moment: the process, and each executor thread
/// (index, thread id, its time if readable).
#[derive(Clone, Debug)]
struct GeneratorSample {
    process: ProcSample,
    threads: Vec<(usize, i32, Option<ProcSample>)>,
}

impl GeneratorSample {
    fn take(shared: &Shared) -> GeneratorSample {
        let mut ids = shared
            .thread_ids
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default();
        ids.sort_unstable();
        GeneratorSample {
            process: server_usage::sample_self(),
            threads: ids
                .into_iter()
                .map(|(index, tid)| (index, tid, server_usage::sample_thread(tid).ok()))
                .collect(),
        }
    }
}

/// The main thread's view of the run.
struct Watch<'a> {
    settings: &'a Settings,
    shared: &'a Shared,
    run_start: Instant,
    viewers_start: Option<Instant>,
    steady_start: Option<Instant>,
    end: Option<Instant>,
    interrupted: bool,
    server_before_viewers: Option<ProcSample>,
    server_steady_start: Option<ProcSample>,
    server_end: Option<ProcSample>,
    generator_before_viewers: Option<GeneratorSample>,
    generator_steady_start: Option<GeneratorSample>,
    generator_end: Option<GeneratorSample>,
    bytes_at_steady_start: u64,
    /// Bytes viewers had received at `end`: the admin API is read after it, and what
    /// arrives meanwhile is outside the measured window.
    bytes_at_end: u64,
    server_error: Option<String>,
    /// The admin API's answers (`--admin`), and our counts as they were asked.
    admin: Option<(AdminView, OwnCounts)>,
    progress: ProgressBar,
    last_bytes: (Instant, u64),
    rate_gbps: f64,
    p99_ms: f64,
}

impl<'a> Watch<'a> {
    fn new(settings: &'a Settings, shared: &'a Shared, run_start: Instant) -> Watch<'a> {
        let target = if settings.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let progress = ProgressBar::with_draw_target(None, target);
        progress.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Watch {
            settings,
            shared,
            run_start,
            viewers_start: None,
            steady_start: None,
            end: None,
            interrupted: false,
            server_before_viewers: None,
            server_steady_start: None,
            server_end: None,
            generator_before_viewers: None,
            generator_steady_start: None,
            generator_end: None,
            bytes_at_steady_start: 0,
            bytes_at_end: 0,
            server_error: None,
            admin: None,
            progress,
            last_bytes: (run_start, 0),
            rate_gbps: 0.0,
            p99_ms: 0.0,
        }
    }

    fn sample_server(&mut self) -> Option<ProcSample> {
        if self.settings.server_pids.is_empty() {
            return None;
        }
        match server_usage::sample(&self.settings.server_pids) {
            Ok(s) => Some(s),
            Err(e) => {
                self.server_error.get_or_insert(e);
                None
            }
        }
    }

    /// Watches until the duration has passed or a signal came; `Err` if the publishers
    /// could not start.
    fn run(&mut self, interrupted: &AtomicBool) -> Result<(), RunError> {
        let deadline = self.run_start + self.settings.duration;
        let publish_deadline = self.run_start + self.settings.connect_timeout + TICK;
        loop {
            std::thread::sleep(TICK);
            let now = Instant::now();
            if interrupted.load(Ordering::Relaxed) {
                self.interrupted = true;
                break;
            }
            if let Ok(errors) = self.shared.publisher_errors.lock()
                && self.viewers_start.is_none()
                && !errors.is_empty()
            {
                return Err(RunError(errors.join("\n")));
            }
            if self.viewers_start.is_none() {
                let up = self
                    .shared
                    .streams
                    .iter()
                    .filter(|s| s.publishing.load(Ordering::Relaxed))
                    .count();
                if up == self.settings.streams() || self.settings.vod_start.is_some() {
                    self.server_before_viewers = self.sample_server();
                    self.generator_before_viewers = Some(GeneratorSample::take(self.shared));
                    self.viewers_start = Some(now);
                    self.shared
                        .viewers_start_us
                        .store(clock::micros(now), Ordering::Release);
                    self.shared.viewers_released.store(true, Ordering::Relaxed);
                } else if now > publish_deadline {
                    return Err(RunError(format!(
                        "only {up} of {} publishers started within {:.1} s",
                        self.settings.streams(),
                        self.settings.connect_timeout.as_secs_f64()
                    )));
                }
            }
            let live = &self.shared.live;
            if self.steady_start.is_none()
                && self.viewers_start.is_some()
                && live.viewers_started.load(Ordering::Relaxed) as usize
                    >= self.settings.total_viewers()
            {
                self.steady_start = Some(now);
                self.server_steady_start = self.sample_server();
                self.generator_steady_start = Some(GeneratorSample::take(self.shared));
                self.bytes_at_steady_start = live.bytes_received.load(Ordering::Relaxed);
            }
            self.draw(now);
            if now >= deadline {
                break;
            }
        }
        let now = Instant::now();
        self.end = Some(now);
        self.server_end = self.sample_server();
        self.generator_end = Some(GeneratorSample::take(self.shared));
        self.bytes_at_end = self.shared.live.bytes_received.load(Ordering::Relaxed);
        if self.steady_start.is_none() {
            // Keep the bytes counter consistent with the (absent) window.
            self.bytes_at_steady_start = self.bytes_at_end;
        }
        // Before the executors stop: once they do, every viewer disconnects and the
        // server's lists would show nothing of the run.
        if let Some(target) = &self.settings.admin {
            let ours = self.own_counts();
            self.admin = Some((admin::fetch(target), ours));
        }
        Ok(())
    }

    /// Our side of the admin comparison, now.
    fn own_counts(&self) -> OwnCounts {
        let streams = &self.shared.streams;
        let publishing = streams
            .iter()
            .filter(|s| s.publishing.load(Ordering::Relaxed))
            .count() as u64;
        let live = &self.shared.live;
        // Summed by name: a play URL without {n} has every stream's viewers on one stream.
        let mut playing: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (url, s) in self.settings.play_urls.iter().zip(streams) {
            // The server names a stream without the query (`key?token=...`).
            *playing
                .entry((url.app().to_owned(), url.stream_name().to_owned()))
                .or_default() += s.viewers_playing.load(Ordering::Relaxed);
        }
        OwnCounts {
            connections: publishing + live.viewers_playing.load(Ordering::Relaxed),
            bytes_in: streams
                .iter()
                .map(|s| s.bytes_sent.load(Ordering::Relaxed))
                .sum(),
            bytes_out: live.bytes_received.load(Ordering::Relaxed),
            streams: playing
                .into_iter()
                .map(|((app, name), n)| (app, name, n))
                .collect(),
        }
    }

    fn draw(&mut self, now: Instant) {
        let live = &self.shared.live;
        let bytes = live.bytes_received.load(Ordering::Relaxed);
        let (then, before) = self.last_bytes;
        let secs = now.duration_since(then).as_secs_f64();
        if secs >= 0.5 {
            self.rate_gbps = (bytes - before) as f64 * 8.0 / secs / 1e9;
            self.last_bytes = (now, bytes);
            let mut merged = histogram();
            for h in &self.shared.recent_latency {
                if let Ok(mut h) = h.lock() {
                    let _ = merged.add(&*h);
                    h.reset();
                }
            }
            if !merged.is_empty() {
                self.p99_ms = merged.value_at_quantile(0.99) as f64 / 1000.0;
            }
        }
        self.progress.set_message(format!(
            "viewers {}/{} playing | {:.3} Gbit/s | p99 latency {:.1} ms | failed {} | disconnected {}",
            live.viewers_playing.load(Ordering::Relaxed),
            self.settings.total_viewers(),
            self.rate_gbps,
            self.p99_ms,
            live.viewers_failed.load(Ordering::Relaxed),
            live.viewers_disconnected.load(Ordering::Relaxed),
        ));
        self.progress.tick();
    }

    fn report(&self, r: ThreadReport) -> Report {
        let s = self.settings;
        let end = self.end.unwrap_or_else(Instant::now);
        let live = &self.shared.live;
        let bytes = self.bytes_at_end;
        let viewers_secs = self
            .viewers_start
            .map_or(0.0, |v| end.duration_since(v).as_secs_f64());
        let steady_secs = self
            .steady_start
            .map(|v| end.duration_since(v).as_secs_f64());
        let steady_bytes = bytes.saturating_sub(self.bytes_at_steady_start);
        let gbps = |b: u64, secs: f64| {
            if secs > 0.0 {
                round3(b as f64 * 8.0 / secs / 1e9)
            } else {
                0.0
            }
        };
        let source = match &s.source {
            SourceSpec::Synthetic(x) => format!(
                "synthetic {} kbit/s {} fps GOP {} ms{}",
                x.bitrate / 1000,
                x.fps,
                x.gop_ms,
                match (x.multitrack, s.multitrack_legacy_viewers) {
                    (false, _) => "",
                    (true, false) => " multitrack (2 video, 2 audio tracks)",
                    (true, true) => {
                        " multitrack (2 video, 2 audio tracks), viewers declaring nothing"
                    }
                }
            ),
            SourceSpec::File(p) => format!("file {}", p.display()),
        };
        let source = match s.vod_start {
            Some(VodStart::At(ms)) => format!("stored files played from {ms} ms"),
            Some(VodStart::Random { max_ms }) => {
                format!("stored files played from random positions below {max_ms} ms")
            }
            None => source,
        };
        let mut publisher_messages = 0;
        let mut publisher_bytes = 0;
        for st in &self.shared.streams {
            publisher_messages += st.messages_sent.load(Ordering::Relaxed);
            publisher_bytes += st.bytes_sent.load(Ordering::Relaxed);
        }
        let server =
            (!s.server_pids.is_empty()).then(|| self.server_report(&r, steady_secs, steady_bytes));
        let latency_trend = LatencyTrend::of(
            &r.latency_trend_us,
            self.shared.trend_window_us as f64 / 1e6,
            viewers_secs,
            self.viewers_start
                .zip(self.steady_start)
                .map(|(v, st)| st.duration_since(v).as_secs_f64()),
        );
        Report {
            settings: RunSettings {
                scenario: s.scenario.clone(),
                description: s.description.clone(),
                url: s
                    .publish_urls
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                protocol: s.protocol.name().to_owned(),
                play_url: s
                    .play_urls
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                streams: s.streams(),
                viewers_per_stream: s.viewers_per_stream,
                ramp_per_second: s.ramp_per_second,
                duration_s: s.duration.as_secs_f64(),
                threads: s.threads,
                source,
                verify_every: s.verify_every,
                counting: s.counting.name().to_owned(),
                count_interval_ms: round3(s.count_interval.as_secs_f64() * 1000.0),
                lag_threshold_ms: s.lag_threshold.as_millis() as u64,
                read_interval_ms: round3(s.read_interval.as_secs_f64() * 1000.0),
                receive_buffer_bytes: s.receive_buffer,
            },
            elapsed_s: round3(end.duration_since(self.run_start).as_secs_f64()),
            interrupted: self.interrupted,
            publishers: Publishers {
                streams: s.streams(),
                messages_sent: publisher_messages,
                bytes_sent: publisher_bytes,
                errors: self
                    .shared
                    .publisher_errors
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_default(),
            },
            viewers: Viewers {
                target: s.all_viewers() as u64,
                started: live.viewers_started.load(Ordering::Relaxed),
                connected: r.connected,
                failed: r.failed.values().sum(),
                failed_by_reason: r.failed.clone(),
                disconnected: r.disconnected.values().sum(),
                disconnected_by_reason: r.disconnected.clone(),
                playing_at_end: r.playing_at_end,
                lagging: r.lagging,
                counting_bytes: r.counting_bytes,
            },
            messages: Messages {
                video: r.video_messages,
                audio: r.audio_messages,
                keyframes: r.keyframes,
                with_marker: r.markers,
                lost: r.lost,
                reordered: r.reordered,
                corrupted: r.corrupted,
                verified: r.verified,
            },
            tracks: s.multitrack.then(|| Tracks {
                viewers_missing_a_track: r.missing_tracks,
                tracks: r
                    .tracks
                    .iter()
                    .map(|((kind, id), counts)| TrackReport {
                        kind: kind.name().to_owned(),
                        id: *id,
                        counts: counts.clone(),
                    })
                    .collect(),
            }),
            delivered: Delivered {
                bytes,
                gbit_per_s: gbps(bytes, viewers_secs),
                steady_gbit_per_s: steady_secs.map(|secs| gbps(steady_bytes, secs)),
            },
            connect_ms: Summary::of(&r.connect_us, 1000.0),
            play_start_ms: Summary::of(&r.play_start_us, 1000.0),
            first_keyframe_ms: Summary::of(&r.first_keyframe_us, 1000.0),
            latency_ms: Summary::of(&r.latency_us, 1000.0),
            latency_trend: latency_trend.clone(),
            crowd: (s.crowd > 0).then(|| {
                Crowd::of(
                    s.crowd,
                    s.crowd_at.as_secs_f64(),
                    s.crowd as f64 / s.crowd_ramp_per_second,
                    Summary::of(&r.crowd_first_keyframe_us, 1000.0),
                    &latency_trend,
                )
            }),
            viewer_bitrate_kbps: Summary::of(&r.bitrate_kbps, 1.0),
            server,
            server_api: self
                .admin
                .clone()
                .map(|(view, ours)| ServerApi::of(view, &ours)),
            load_generator: self.generator_report(),
        }
    }

    /// The generator's CPU over the server's window: the steady state, or from the first
    /// viewer's start when the ramp did not finish.
    fn generator_report(&self) -> LoadGenerator {
        let end_at = self.end.unwrap_or_else(Instant::now);
        let (start, start_at, note) = match (&self.generator_steady_start, self.steady_start) {
            (Some(s), Some(at)) => (Some(s), Some(at), None),
            _ => (
                self.generator_before_viewers.as_ref(),
                self.viewers_start,
                Some("the ramp did not finish: measured from the first viewer's start".to_owned()),
            ),
        };
        let window = start_at.map_or(0.0, |s| end_at.duration_since(s).as_secs_f64());
        let cores = |secs: f64| {
            if window > 0.0 {
                round3(secs / window)
            } else {
                0.0
            }
        };
        let (Some(start), Some(end)) = (start, self.generator_end.as_ref()) else {
            return LoadGenerator {
                window_s: 0.0,
                user_seconds: 0.0,
                system_seconds: 0.0,
                cpu_seconds: 0.0,
                cpu_cores: 0.0,
                threads: Vec::new(),
                busiest_thread_cores: 0.0,
                saturated: false,
                note: Some("no viewers started: nothing measured".to_owned()),
            };
        };
        let user = (end.process.user_seconds - start.process.user_seconds).max(0.0);
        let system = (end.process.system_seconds - start.process.system_seconds).max(0.0);
        let threads: Vec<GeneratorThread> = end
            .threads
            .iter()
            .filter_map(|&(index, tid, at_end)| {
                let at_end = at_end?;
                let at_start = start.threads.iter().find(|t| t.1 == tid)?.2?;
                let u = (at_end.user_seconds - at_start.user_seconds).max(0.0);
                let s = (at_end.system_seconds - at_start.system_seconds).max(0.0);
                Some(GeneratorThread {
                    index,
                    tid,
                    user_seconds: round3(u),
                    system_seconds: round3(s),
                    cpu_cores: cores(u + s),
                })
            })
            .collect();
        let busiest = threads.iter().map(|t| t.cpu_cores).fold(0.0, f64::max);
        LoadGenerator {
            window_s: round3(window),
            user_seconds: round3(user),
            system_seconds: round3(system),
            cpu_seconds: round3(user + system),
            cpu_cores: cores(user + system),
            threads,
            busiest_thread_cores: busiest,
            saturated: busiest > SATURATED,
            note,
        }
    }

    fn server_report(
        &self,
        r: &ThreadReport,
        steady_secs: Option<f64>,
        steady_bytes: u64,
    ) -> Server {
        let end = self.server_end.unwrap_or_default();
        let before = self.server_before_viewers.unwrap_or_default();
        let (start, window, note) = match (self.server_steady_start, steady_secs) {
            (Some(start), Some(secs)) => (start, secs, None),
            _ => (
                before,
                self.viewers_start
                    .zip(self.end)
                    .map_or(0.0, |(v, e)| e.duration_since(v).as_secs_f64()),
                Some("the ramp did not finish: measured from the first viewer's start".to_owned()),
            ),
        };
        let note = match &self.server_error {
            Some(e) => Some(e.clone()),
            None => note,
        };
        let bytes = if note.is_some() && self.steady_start.is_none() {
            self.bytes_at_end
        } else {
            steady_bytes
        };
        let user = (end.user_seconds - start.user_seconds).max(0.0);
        let system = (end.system_seconds - start.system_seconds).max(0.0);
        let gb = bytes as f64 / 1e9;
        let viewers = r.playing_at_end;
        Server {
            pids: self.settings.server_pids.clone(),
            window_s: round3(window),
            cpu_seconds: round3(user + system),
            user_seconds: round3(user),
            system_seconds: round3(system),
            cpu_cores: if window > 0.0 {
                round3((user + system) / window)
            } else {
                0.0
            },
            delivered_gb: round3(gb),
            cpu_seconds_per_gb: (gb > 0.0).then(|| round3((user + system) / gb)),
            rss_bytes_before_viewers: before.rss_bytes,
            rss_bytes_at_end: end.rss_bytes,
            rss_bytes_per_viewer: (viewers > 0).then(|| {
                round3(end.rss_bytes.saturating_sub(before.rss_bytes) as f64 / viewers as f64)
            }),
            note,
        }
    }
}
