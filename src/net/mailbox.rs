//! Cross-core mailboxes: how one shard hands message references to another.
//!
//! Each shard has one [`Inbox`]; every other shard holds a [`ShardSender`] to it. A message
//! is a small enum whose payloads are `Bytes` handles, so crossing cores copies a pointer
//! and a length, never media.
//!
//! The channel is a bounded crossbeam channel (an unbounded queue would let one stuck shard
//! eat the host's memory). A full inbox refuses the message and the sender decides what
//! that means: for media frames the receiver sees a gap in the frame sequence numbers and
//! its viewers skip to the next keyframe, as a slow viewer would; the publisher is never
//! made to wait.
//!
//! Waking: the receiving shard's inbox task parks in glommio with its waker registered in an
//! [`AtomicWaker`]. A sender pushes its message and then, only if the `notified` flag was
//! clear, sets it and wakes that waker. glommio turns a wake from a foreign thread into a
//! write to the executor's eventfd, so the receiving core leaves its io_uring wait at once
//! (well under a millisecond) without any spinning. The flag coalesces wakes: a publisher
//! pushing a hundred frames before the receiver runs costs one eventfd write, and the
//! receiver drains all hundred in one pass. The receiver clears the flag *before* draining,
//! so a message sent during the drain is either seen by that drain or triggers a new wake.
//!
//! Two running totals per inbox ([`InboxTotals`], in `/metrics`) price crossing cores: the
//! messages drained, and the doorbell rings (wakes that were not coalesced). The receiver
//! adds once per drain and a sender only when it really wakes, so neither puts another
//! contended atomic on the per-message path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

struct Doorbell {
    waker: AtomicWaker,
    notified: AtomicBool,
    received: AtomicU64,
    rings: AtomicU64,
}

/// What one inbox has taken in since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboxTotals {
    /// Messages the receiving shard drained.
    pub received: u64,
    /// Wakes the senders rang; fewer than `received` when wakes were coalesced.
    pub rings: u64,
}

/// The sending side of a shard's inbox. Cheap to clone; `Send`.
pub struct ShardSender<T> {
    tx: Sender<T>,
    doorbell: Arc<Doorbell>,
}

impl<T> Clone for ShardSender<T> {
    fn clone(&self) -> Self {
        ShardSender {
            tx: self.tx.clone(),
            doorbell: self.doorbell.clone(),
        }
    }
}

/// The receiving side, owned by the shard's inbox task.
pub struct Inbox<T> {
    rx: Receiver<T>,
    doorbell: Arc<Doorbell>,
}

/// A bounded mailbox of `capacity` messages.
pub fn mailbox<T>(capacity: usize) -> (ShardSender<T>, Inbox<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let doorbell = Arc::new(Doorbell {
        waker: AtomicWaker::new(),
        notified: AtomicBool::new(false),
        received: AtomicU64::new(0),
        rings: AtomicU64::new(0),
    });
    (
        ShardSender {
            tx,
            doorbell: doorbell.clone(),
        },
        Inbox { rx, doorbell },
    )
}

/// Why a message was not delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The receiving shard is behind by a whole inbox.
    Full,
    /// The receiving shard has stopped.
    Closed,
}

impl<T> ShardSender<T> {
    /// Queues `msg` without blocking and rings the receiver's doorbell if it is not already
    /// ringing.
    pub fn send(&self, msg: T) -> Result<(), SendError> {
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Disconnected(_) => SendError::Closed,
        })?;
        self.ring();
        Ok(())
    }

    /// Messages waiting in the inbox now (for the metrics' queue depth).
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// The inbox's running totals (for the metrics' cross-core counters).
    pub fn totals(&self) -> InboxTotals {
        InboxTotals {
            received: self.doorbell.received.load(Ordering::Relaxed),
            rings: self.doorbell.rings.load(Ordering::Relaxed),
        }
    }

    fn ring(&self) {
        if !self.doorbell.notified.swap(true, Ordering::AcqRel) {
            self.doorbell.rings.fetch_add(1, Ordering::Relaxed);
            self.doorbell.waker.wake();
        }
    }
}

impl<T> Inbox<T> {
    /// Waits until at least one message is queued, then moves every queued message into
    /// `batch` (up to `max`). Returns false when every sender is gone.
    pub async fn recv_batch(&self, batch: &mut Vec<T>, max: usize) -> bool {
        std::future::poll_fn(|cx| {
            self.doorbell.notified.store(false, Ordering::Release);
            let open = self.drain(batch, max);
            if !batch.is_empty() || !open {
                return Poll::Ready(!batch.is_empty());
            }
            self.doorbell.waker.register(cx.waker());
            // A message sent between the drain and the registration would have found the
            // flag clear and woken the *old* waker; look once more now that ours is in place.
            let open = self.drain(batch, max);
            if !batch.is_empty() || !open {
                return Poll::Ready(!batch.is_empty());
            }
            Poll::Pending
        })
        .await
    }

    /// Moves queued messages into `batch`; false once every sender is gone.
    fn drain(&self, batch: &mut Vec<T>, max: usize) -> bool {
        let before = batch.len();
        let mut open = true;
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let taken = batch.len() - before;
        if taken > 0 {
            self.doorbell
                .received
                .fetch_add(taken as u64, Ordering::Relaxed);
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_mailbox_refuses_instead_of_blocking() {
        let (tx, _rx) = mailbox::<u32>(2);
        assert_eq!(tx.send(1), Ok(()));
        assert_eq!(tx.send(2), Ok(()));
        assert_eq!(tx.send(3), Err(SendError::Full));
    }

    #[test]
    fn totals_count_drained_messages_and_coalesced_rings() {
        let (tx, rx) = mailbox::<u32>(16);
        assert_eq!(tx.totals(), InboxTotals::default());
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        // Five sends before the receiver ran: one ring, nothing drained yet.
        assert_eq!(
            tx.totals(),
            InboxTotals {
                received: 0,
                rings: 1
            }
        );
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(rx.recv_batch(&mut batch, 3)));
        assert_eq!(batch, vec![0, 1, 2]);
        batch.clear();
        assert!(futures_lite::future::block_on(
            rx.recv_batch(&mut batch, 16)
        ));
        assert_eq!(batch, vec![3, 4]);
        // The drain cleared the flag, so the next send rings again.
        tx.send(5).unwrap();
        assert_eq!(
            tx.totals(),
            InboxTotals {
                received: 5,
                rings: 2
            }
        );
    }

    #[test]
    fn closed_mailbox_says_so() {
        let (tx, rx) = mailbox::<u32>(2);
        drop(rx);
        assert_eq!(tx.send(1), Err(SendError::Closed));
    }

    #[test]
    fn a_foreign_thread_wakes_a_parked_glommio_executor() {
        let (tx, rx) = mailbox::<u32>(1024);
        let receiver = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(move || async move {
                let mut got = Vec::new();
                let mut batch = Vec::new();
                while got.len() < 1000 {
                    batch.clear();
                    if !rx.recv_batch(&mut batch, 256).await {
                        break;
                    }
                    got.extend_from_slice(&batch);
                }
                got
            })
            .expect("executor");
        let sender = std::thread::spawn(move || {
            for i in 0..1000u32 {
                while tx.send(i) == Err(SendError::Full) {
                    std::thread::yield_now();
                }
                if i % 100 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        sender.join().unwrap();
        let got = receiver.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>(), "in order, none lost");
    }
}
