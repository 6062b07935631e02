//! Starting and stopping the relay: one pinned glommio executor per shard, each running
//! its [`ShardDriver`].
//!
//! Before any shard starts, the ingest port is checked with a plain bind (no
//! SO_REUSEPORT): if another process serves it, the relay refuses to start rather than
//! silently sharing the port with it. Then each shard's executor is created on its CPU with
//! a small `io_memory` (the relay does no file DMA), binds the port itself, and reports back
//! before the relay says it is listening. SIGINT and SIGTERM start a graceful shutdown:
//! `/readyz` turns false, clients that announced Enhanced RTMP reconnect support are asked
//! to reconnect (`ShardMessage::Drain`), the relay keeps serving, new clients included, for
//! `drain_delay_ms`, then shards stop accepting, tell every client, and the process exits 0
//! within the configured bound.
//!
//! SIGHUP reloads: the config file is read and validated again; an invalid one is refused
//! with its error logged and the running configuration kept. A valid one goes to every
//! shard by message (`ShardMessage::Reload`); the per-address cap and the RTMPS
//! certificate change at once; keys that need a restart are named in a warning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};
use thiserror::Error;

use super::admin_listener::AdminListener;
use super::admission::{Admission, PerIpLimits};
use super::listener::{Protocol, accept_loop};
use super::mailbox::{Inbox, ShardSender, mailbox};
use super::record_writer;
use super::shard_driver::ShardDriver;
use super::tls::TlsAcceptor;
use crate::admin::api::{ApiSettings, SharedApiSettings};
use crate::config::{Config, RecordMode};
use crate::performance::{BLOCKING_THREADS_PER_SHARD, INBOX_CAPACITY, SHARD_PREEMPT_TIMER};
use crate::relay::directory::StreamDirectory;
use crate::relay::message::ShardMessage;
use crate::relay::shard::Shard;

#[derive(Debug, Error)]
pub enum StartError {
    #[error(
        "{addr} is already in use by another process (stop it, or choose another address with --listen)"
    )]
    PortInUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "{addr} (the admin listener) is already in use by another process (stop it, or choose another address with --admin-listen, or turn the admin listener off with --admin-listen \"\")"
    )]
    AdminPortInUse { addr: SocketAddr },
    #[error(
        "{addr} (the HTTP-FLV listener) is already in use by another process (stop it, or choose another address with --http-listen, or turn it off with --http-listen \"\")"
    )]
    HttpPortInUse { addr: SocketAddr },
    #[error("{0}")]
    Admin(String),
    #[error("{0}")]
    Executor(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(
        "{addr} (the RTMPS listener) is already in use by another process (stop it, or choose another address with --tls-listen, or turn it off with --tls-listen \"\")"
    )]
    TlsPortInUse { addr: SocketAddr },
    #[error("RTMPS: {0}")]
    Tls(String),
}

/// Reads the configuration again for a SIGHUP reload (the file named on the command line,
/// with the command line's overrides applied), or says why it cannot.
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send>;

/// The locked-memory limit, in bytes (io_uring needs some), or None if unlimited.
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// The CPUs the calling thread may run on, in order (empty if the kernel will not say).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed; sched_getaffinity writes at
    // most the size it is given into it, and CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

fn executor_error(shard: usize, cpu: usize, e: impl std::fmt::Display) -> StartError {
    let memlock = match memlock_limit() {
        Some(bytes) => format!(
            " RLIMIT_MEMLOCK is {} KiB; io_uring needs locked memory: raise it with `ulimit -l unlimited`, or LimitMEMLOCK=infinity in the systemd unit (deploy/shardcast.service).",
            bytes / 1024
        ),
        None => String::new(),
    };
    StartError::Executor(format!(
        "cannot start shard {shard} on CPU {cpu}: {e}.{memlock}"
    ))
}

/// Runs the relay until SIGINT or SIGTERM, with no reload on SIGHUP. Returns once every
/// shard has finished (or the shutdown bound has passed).
pub fn run(config: Config) -> Result<(), StartError> {
    run_with_reload(config, None)
}

/// [`run`], reloading the configuration with `reload` on SIGHUP.
pub fn run_with_reload(mut config: Config, reload: Option<Reloader>) -> Result<(), StartError> {
    config.server.pick_node_id();
    let addr = config.server.listen;
    match std::net::TcpListener::bind(addr) {
        Ok(probe) => drop(probe),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(StartError::PortInUse { addr });
        }
        Err(source) => return Err(StartError::Bind { addr, source }),
    }
    let admin_addr = config.admin.listen_addr();
    if let Some(addr) = admin_addr {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartError::AdminPortInUse { addr });
            }
            Err(e) => return Err(StartError::Admin(format!("cannot listen on {addr}: {e}"))),
        }
    }
    if let Some(addr) = config.http.listen_addr() {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartError::HttpPortInUse { addr });
            }
            Err(e) => {
                return Err(StartError::Admin(format!(
                    "cannot listen on {addr} for HTTP-FLV: {e}"
                )));
            }
        }
    }
    if let Some(addr) = config.server.tls_listen_addr() {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(StartError::TlsPortInUse { addr });
            }
            Err(e) => return Err(StartError::Tls(format!("cannot listen on {addr}: {e}"))),
        }
    }
    let tls = match config.server.tls_listen_addr() {
        None => None,
        Some(_) => Some(Arc::new(
            TlsAcceptor::load(&config.server.tls_cert_file, &config.server.tls_key_file)
                .map_err(StartError::Tls)?,
        )),
    };
    let admission = Arc::new(Admission {
        per_ip: PerIpLimits::new(config.server.max_connections_per_ip),
        tls,
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shard_count = config.server.shard_count(cpus);
    // Pinned among the CPUs this process may run on (a container's cpuset need not be 0..n).
    let allowed = allowed_cpus();
    let shard_cpus: Vec<usize> = (0..shard_count)
        .map(|id| config.server.cpu_for_shard_among(id, &allowed))
        .collect();
    let config = Arc::new(config);
    let directory = Arc::new(StreamDirectory::new());
    let started = Instant::now();
    let (senders, inboxes): (Vec<ShardSender<ShardMessage>>, Vec<Inbox<ShardMessage>>) =
        (0..shard_count).map(|_| mailbox(INBOX_CAPACITY)).unzip();

    // The admin listener comes first and stays until the process exits: `/readyz` answers
    // "not ready" while the shards start and through a shutdown.
    let ready = Arc::new(AtomicBool::new(false));
    let api_settings: SharedApiSettings = Arc::new(ApiSettings::of(&config).into());
    if let Some(addr) = admin_addr {
        AdminListener {
            addr,
            settings: api_settings.clone(),
            senders: senders.clone(),
            ready: ready.clone(),
            started,
        }
        .start()
        .map_err(StartError::Admin)?;
        tracing::info!(%addr, "admin API listening (/api/v1, /metrics, /healthz, /readyz)");
    }

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(StartError::Signals)?;

    let cpus = &shard_cpus;
    for (id, cpu) in cpus.iter().enumerate() {
        if cpus[..id].contains(cpu) {
            tracing::warn!(
                shard = id,
                cpu,
                "CPU {cpu} runs more than one shard: they take turns instead of running in parallel"
            );
        }
    }

    for (name, app) in &config.apps {
        if app.uses_deprecated_recordings_dir() {
            tracing::warn!(
                app = %name,
                "app.{name}.recordings_dir is deprecated: rename it to vod_dir (same meaning; it now plays .mp4 too)"
            );
        }
    }

    // The recordings' disk writer: a thread of its own, so no shard waits for a disk. It
    // ends once every shard has dropped its handle, after their last closes.
    let records = config.apps.values().any(|a| a.record != RecordMode::Off);
    let (mut record_handles, record_thread) = if records {
        // A file size limit (ulimit -f) must fail the write, not kill the relay.
        // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let (handles, thread) = record_writer::start(shard_count)
            .map_err(|e| StartError::Executor(format!("cannot start the recording writer: {e}")))?;
        (handles.into_iter().map(Some).collect(), Some(thread))
    } else {
        ((0..shard_count).map(|_| None).collect::<Vec<_>>(), None)
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let record = record_handles[id].take();
        let cpu = shard_cpus[id];
        let config = config.clone();
        let senders = senders.clone();
        let directory = directory.clone();
        let admission = admission.clone();
        let ready = ready_tx.clone();
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .blocking_thread_pool_placement(PoolPlacement::Custom(vec![
                CpuSet::online()
                    .map_err(|e| StartError::Executor(format!(
                        "shard {id}: cannot list the online CPUs: {e}"
                    )))?
                    .filter(|l| l.cpu == cpu);
                BLOCKING_THREADS_PER_SHARD
            ]))
            .name(&format!("shard-{id}"))
            .io_memory(config.server.io_memory)
            .preempt_timer(SHARD_PREEMPT_TIMER);
        let handle = builder
            .spawn(move || async move {
                let relay = Shard::new(id, shard_count, config, directory, started);
                shard_main(
                    ShardDriver::new(relay, senders, record, admission),
                    inbox,
                    ready,
                )
                .await;
            })
            .map_err(|e| executor_error(id, cpu, e))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                shutdown(&senders);
                return Err(StartError::Executor(message));
            }
            Err(_) => {
                return Err(StartError::Executor(
                    "a shard stopped before it was ready (see the log above)".into(),
                ));
            }
        }
    }
    ready.store(true, Ordering::Release);
    match config.server.tls_listen_addr() {
        Some(tls) => {
            tracing::info!(%addr, %tls, shards = shard_count, "shardcast listening (RTMP, RTMPS)")
        }
        None => tracing::info!(%addr, shards = shard_count, "shardcast listening"),
    }

    let mut config = config;
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            config = reload_config(config, reload.as_deref(), &senders, &admission);
            let mut settings = api_settings
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *settings = settings.reloaded(&config);
            continue;
        }
        tracing::info!(
            signal,
            drain_delay_ms = config.server.drain_delay_ms,
            "shutting down: not ready any more, draining"
        );
        break;
    }
    ready.store(false, Ordering::Release);
    for tx in &senders {
        let _ = tx.send(ShardMessage::Drain);
    }
    // The drain: still serving while load balancers notice /readyz; a second signal ends it.
    let drain_end = Instant::now() + config.server.drain_delay();
    while Instant::now() < drain_end {
        if let Some(signal) = signals
            .pending()
            .find(|s| *s != signal_hook::consts::SIGHUP)
        {
            tracing::info!(signal, "second signal: ending the drain");
            break;
        }
        std::thread::sleep(
            drain_end
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
        );
    }
    shutdown(&senders);
    let deadline = Instant::now() + config.server.shutdown_timeout() + Duration::from_millis(500);
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
            tracing::debug!("shard thread joined");
        }
        let _ = done_tx.send(());
    });
    if done_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_err()
    {
        tracing::warn!("shards did not finish within the shutdown timeout; exiting anyway");
    } else if let Some(writer) = record_thread
        && !writer.finish(Duration::from_secs(10))
    {
        // The shards are done: the writer finishes what they queued (the last closes and
        // index rewrites) and ends, unless the disk is too slow even for that.
        tracing::warn!("the recording writer did not finish within 10 s; exiting anyway");
    }
    Ok(())
}

/// SIGHUP: reads the configuration again and hands it to the shards; keeps `running` when
/// the new one cannot be read or is invalid. Returns the configuration now in force.
fn reload_config(
    running: Arc<Config>,
    reload: Option<&(dyn Fn() -> Result<Config, String> + Send)>,
    senders: &[ShardSender<ShardMessage>],
    admission: &Admission,
) -> Arc<Config> {
    let Some(reload) = reload else {
        tracing::warn!("SIGHUP: this relay was started without a config file to reload");
        return running;
    };
    let mut new = match reload() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: configuration refused, the running one stays: {e}");
            return running;
        }
    };
    new.server.keep_node_id(&running.server);
    let server = &new.server;
    if let Some(tls) = &admission.tls
        && !server.tls_listen.is_empty()
        && let Err(e) = tls.reload(&server.tls_cert_file, &server.tls_key_file)
    {
        tracing::error!("SIGHUP: configuration refused, the running one stays: {e}");
        return running;
    }
    let restart = crate::config::keys_needing_restart(&running, &new);
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "SIGHUP: these keys changed but take effect only after a restart"
        );
    }
    admission
        .per_ip
        .max
        .store(server.max_connections_per_ip, Ordering::Relaxed);
    let new = Arc::new(new);
    for tx in senders {
        if tx.send(ShardMessage::Reload(new.clone())).is_err() {
            tracing::warn!("SIGHUP: a shard's inbox is full; it keeps the old configuration");
        }
    }
    tracing::info!(
        apps = new.apps.len(),
        "SIGHUP: configuration reloaded; new connections use it"
    );
    new
}

fn shutdown(senders: &[ShardSender<ShardMessage>]) {
    for tx in senders {
        let _ = tx.send(ShardMessage::Shutdown);
    }
}

async fn shard_main(
    driver: std::rc::Rc<ShardDriver>,
    inbox: Inbox<ShardMessage>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let (id, addr, shutdown_timeout) = {
        let relay = driver.relay.borrow();
        (
            relay.id,
            relay.config.server.listen,
            relay.config.server.shutdown_timeout(),
        )
    };
    let http_addr = driver.relay.borrow().config.http.listen_addr();
    let tls_addr = driver.relay.borrow().config.server.tls_listen_addr();
    let listener = match super::listener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id} cannot listen on {addr}: {e}")));
            return;
        }
    };
    let http_listener = match http_addr.map(super::listener::bind) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            let addr = http_addr.expect("bound above");
            let _ = ready.send(Err(format!(
                "shard {id} cannot listen on {addr} for HTTP-FLV: {e}"
            )));
            return;
        }
    };
    let tls_listener = match tls_addr.map(super::listener::bind) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => {
            let addr = tls_addr.expect("bound above");
            let _ = ready.send(Err(format!(
                "shard {id} cannot listen on {addr} for RTMPS: {e}"
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    driver.start(inbox);
    glommio::spawn_local(accept_loop(driver.clone(), listener, Protocol::Rtmp)).detach();
    if let Some(l) = tls_listener {
        glommio::spawn_local(accept_loop(driver.clone(), l, Protocol::Rtmps)).detach();
    }
    if let Some(l) = http_listener {
        glommio::spawn_local(accept_loop(driver.clone(), l, Protocol::Http)).detach();
    }
    // Run until shutdown starts, then until the last client has gone (or the bound).
    driver.shutting_down.wait().await;
    let deadline = Instant::now() + shutdown_timeout;
    while driver.relay.borrow().client_count() > 0 && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        futures_lite::future::or(driver.client_gone.wait(), glommio::timer::sleep(left)).await;
    }
    tracing::debug!(shard = id, "shard finished");
}
