//! The admin listener's thread: an unpinned glommio executor of its own, serving the admin
//! API (`src/admin/`) over HTTP (`admin_http.rs`).
//!
//! It is not a shard and owns no stream: whatever it needs from the shards it asks by
//! message ([`RelayLink`]), and each shard answers on its own core when its inbox task
//! next runs. Answers come back through a channel and wake this executor with an
//! `AtomicWaker`, so a request waits without blocking anything; a shard that does not
//! answer within `ANSWER_LIMIT` is left out of that answer. A JSON listing of thousands
//! of clients is built here, off the shards' cores.
//!
//! The listener starts before the shards and stays up until the process exits, so
//! `/readyz` says "not ready" through a shutdown instead of refusing connections.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::Poll;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};

use super::admin_http::{AdminHandler, HttpLimits, serve};
use super::mailbox::{InboxTotals, ShardSender};
use super::process::process_stats;
use crate::admin::api::{AdminApi, LocalFuture, RunningRelay, SharedApiSettings};
use crate::admin::metrics::ProcessStats;
use crate::admin::request::{AdminRequest, AdminResponse};
use crate::relay::directory::{ConnId, StreamName};
use crate::relay::message::{AdminRefusal, Reply, ShardId, ShardMessage};
use crate::relay::recorder::RecordStatus;
use crate::relay::snapshot::ShardSnapshot;

/// How long a request waits for the shards' answers.
const ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// The admin thread's handle on the relay: the shards' mailboxes and the readiness flag.
pub struct RelayLink {
    senders: Vec<ShardSender<ShardMessage>>,
    ready: Arc<AtomicBool>,
    started: Instant,
}

impl RelayLink {
    /// Sends `ask(reply)` to each of `shards` and waits for their answers (or the limit).
    async fn gather<T: Send + 'static>(
        &self,
        shards: impl Iterator<Item = ShardId>,
        ask: impl Fn(Reply<T>) -> ShardMessage,
    ) -> Vec<T> {
        let (tx, rx) = crossbeam_channel::bounded(self.senders.len().max(1));
        let waker = Arc::new(AtomicWaker::new());
        let mut asked = 0;
        for shard in shards {
            let Some(sender) = self.senders.get(shard) else {
                continue;
            };
            let (tx, waker) = (tx.clone(), waker.clone());
            let reply = Reply::new(move |answer| {
                let _ = tx.try_send(answer);
                waker.wake();
            });
            if sender.send(ask(reply)).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let mut answers = Vec::with_capacity(asked);
        {
            let all = std::future::poll_fn(|cx| {
                waker.register(cx.waker());
                while let Ok(answer) = rx.try_recv() {
                    answers.push(answer);
                }
                if answers.len() >= asked {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            futures_lite::future::or(all, async {
                glommio::timer::sleep(ANSWER_LIMIT).await;
            })
            .await;
        }
        answers
    }
}

impl RunningRelay for RelayLink {
    fn inspect(&self, clients: bool) -> LocalFuture<'_, Vec<ShardSnapshot>> {
        Box::pin(async move {
            let mut shards = self
                .gather(0..self.senders.len(), |reply| ShardMessage::Inspect {
                    clients,
                    reply,
                })
                .await;
            shards.sort_by_key(|s| s.shard);
            shards
        })
    }

    fn kick(&self, shard: ShardId, conn: ConnId) -> LocalFuture<'_, Result<(), AdminRefusal>> {
        Box::pin(async move {
            self.gather(std::iter::once(shard), |reply| ShardMessage::Kick {
                conn,
                reply,
            })
            .await
            .pop()
            .unwrap_or(Err(AdminRefusal::NotFound))
        })
    }

    fn inject(
        &self,
        shard: ShardId,
        stream: StreamName,
        payload: Bytes,
    ) -> LocalFuture<'_, Result<u32, AdminRefusal>> {
        Box::pin(async move {
            self.gather(std::iter::once(shard), |reply| ShardMessage::InjectData {
                stream: stream.clone(),
                payload: payload.clone(),
                reply,
            })
            .await
            .pop()
            .unwrap_or(Err(AdminRefusal::NotFound))
        })
    }

    fn record(
        &self,
        shard: ShardId,
        stream: StreamName,
        start: bool,
    ) -> LocalFuture<'_, Result<RecordStatus, AdminRefusal>> {
        Box::pin(async move {
            self.gather(std::iter::once(shard), |reply| ShardMessage::Record {
                stream: stream.clone(),
                start,
                reply,
            })
            .await
            .pop()
            .unwrap_or(Err(AdminRefusal::NotFound))
        })
    }

    fn shard_count(&self) -> usize {
        self.senders.len()
    }

    fn inbox_depths(&self) -> Vec<usize> {
        self.senders.iter().map(ShardSender::queued).collect()
    }

    fn inbox_totals(&self) -> Vec<InboxTotals> {
        self.senders.iter().map(ShardSender::totals).collect()
    }

    fn process(&self) -> ProcessStats {
        process_stats()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn started(&self) -> Instant {
        self.started
    }
}

struct ApiHandler(Rc<AdminApi<RelayLink>>);

impl AdminHandler for ApiHandler {
    fn handle(
        &self,
        request: AdminRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdminResponse>>> {
        let api = self.0.clone();
        Box::pin(async move { api.handle(request).await })
    }
}

/// What starting the admin listener needs.
pub struct AdminListener {
    pub addr: SocketAddr,
    pub settings: SharedApiSettings,
    pub senders: Vec<ShardSender<ShardMessage>>,
    /// Set once every shard accepts; cleared when shutdown starts.
    pub ready: Arc<AtomicBool>,
    pub started: Instant,
}

impl AdminListener {
    /// Binds and starts serving on a thread of its own. Returns once it listens, or why
    /// it cannot.
    pub fn start(self) -> Result<(), String> {
        let AdminListener {
            addr,
            settings,
            senders,
            ready,
            started,
        } = self;
        let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("admin")
            .io_memory(64 * 1024)
            .spawn(move || async move {
                let listener = match super::listener::bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = bound_tx.send(Err(format!(
                            "cannot listen on {addr} for the admin API: {e}"
                        )));
                        return;
                    }
                };
                let _ = bound_tx.send(Ok(()));
                let link = RelayLink {
                    senders,
                    ready,
                    started,
                };
                let api = Rc::new(AdminApi::with_shared_settings(link, settings));
                serve(listener, Rc::new(ApiHandler(api)), HttpLimits::default()).await;
            })
            .map_err(|e| format!("cannot start the admin listener's thread: {e}"))?;
        bound_rx
            .recv()
            .unwrap_or_else(|_| Err("the admin listener stopped before it listened".into()))
    }
}
