//! The stream directory: which shard is the origin of `app/key`, and who publishes it.
//!
//! The one structure every shard shares. It is consulted when a publisher or a viewer
//! arrives and when a publisher leaves, never per message, so a plain mutex is the honest
//! choice: arrivals are rare next to media, and the critical sections are a hash lookup.
//! The only per-message write is the publisher's last-media clock, an atomic the origin
//! stores to without the lock; a newcomer reads it to decide whether the current publisher
//! is half-dead and may be taken over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::message::ShardId;

/// `app/key`, shared cheaply between shards.
pub type StreamName = Arc<str>;

/// Identifies one connection in the whole process (shard id in the high bits).
pub type ConnId = u64;

/// The stream's clocks, shared by its publishers and origins across shards: when media last
/// arrived (to tell a half-dead publisher that may be taken over) and the newest timestamp
/// sent (so a new origin continues the timeline). Written once per ingested message without
/// the directory's lock; read on arrivals.
#[derive(Debug, Default)]
pub struct StreamClock {
    last_media_ms: AtomicU64,
    last_timestamp: AtomicU32,
}

impl StreamClock {
    pub fn touch(&self, now_ms: u64, timestamp: u32) {
        self.last_media_ms.store(now_ms, Ordering::Relaxed);
        self.last_timestamp.store(timestamp, Ordering::Relaxed);
    }

    pub fn touch_media(&self, now_ms: u64) {
        self.last_media_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_media_ms(&self) -> u64 {
        self.last_media_ms.load(Ordering::Relaxed)
    }

    pub fn last_timestamp(&self) -> u32 {
        self.last_timestamp.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Publisher {
    shard: ShardId,
    conn: ConnId,
}

#[derive(Debug)]
struct Entry {
    origin: ShardId,
    publisher: Option<Publisher>,
    clock: Arc<StreamClock>,
}

/// How to treat a publish request for a key that already has a publisher.
#[derive(Clone, Copy, Debug)]
pub struct TakeoverPolicy {
    /// Take over at once, whatever the current publisher does.
    pub immediate: bool,
    /// Take over when the current publisher has sent nothing for this long.
    pub idle_ms: u64,
}

/// The answer to a publish request.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new stream: this shard is its origin.
    New,
    /// The stream existed without a publisher (grace period): this shard is now its origin;
    /// `previous_origin` was.
    Resumed { previous_origin: ShardId },
    /// The current publisher was idle (or takeover is immediate) and is replaced.
    TookOver {
        previous_origin: ShardId,
        previous_conn: ConnId,
    },
    /// Someone is publishing this key and sending media.
    Busy,
}

/// The audience and the pull of a stream in an application that pulls (`pull = [...]`).
#[derive(Debug, Default)]
struct Demand {
    /// Viewers of the stream on every shard (playing or waiting).
    watchers: usize,
    /// The shard that pulls the stream, while one does.
    puller: Option<ShardId>,
}

#[derive(Debug, Default)]
pub struct StreamDirectory {
    entries: Mutex<HashMap<StreamName, Entry>>,
    /// Streams of pulling applications that have viewers or a pull: one pull per host, and
    /// the audience that keeps it going (changed on arrivals and departures only).
    demand: Mutex<HashMap<StreamName, Demand>>,
}

impl StreamDirectory {
    pub fn new() -> StreamDirectory {
        StreamDirectory::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Entry>> {
        // A panic elsewhere while holding the lock leaves the map consistent (every
        // critical section is a single insert/remove), so recover instead of spreading it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A publisher on `shard` wants `name`. On success the caller gets the stream's clock
    /// (new, or the one the stream had), already touched so the new publisher counts as
    /// active.
    pub fn claim(
        &self,
        name: &StreamName,
        shard: ShardId,
        conn: ConnId,
        now_ms: u64,
        policy: TakeoverPolicy,
    ) -> (Claim, Option<Arc<StreamClock>>) {
        let mut entries = self.lock();
        let publisher = Publisher { shard, conn };
        let Some(entry) = entries.get_mut(name) else {
            let clock = Arc::new(StreamClock::default());
            clock.touch_media(now_ms);
            entries.insert(
                name.clone(),
                Entry {
                    origin: shard,
                    publisher: Some(publisher),
                    clock: clock.clone(),
                },
            );
            return (Claim::New, Some(clock));
        };
        let previous_origin = entry.origin;
        let claim = match &entry.publisher {
            None => Claim::Resumed { previous_origin },
            Some(current) => {
                let idle = now_ms.saturating_sub(entry.clock.last_media_ms());
                if policy.immediate || idle >= policy.idle_ms {
                    Claim::TookOver {
                        previous_origin,
                        previous_conn: current.conn,
                    }
                } else {
                    return (Claim::Busy, None);
                }
            }
        };
        entry.origin = shard;
        entry.publisher = Some(publisher);
        entry.clock.touch_media(now_ms);
        (claim, Some(entry.clock.clone()))
    }

    /// The publisher `conn` left. The entry stays (with no publisher) so viewers wait out
    /// the grace period on the same origin. Returns false if `conn` was no longer the
    /// publisher (it had been taken over).
    pub fn release(&self, name: &StreamName, conn: ConnId) -> bool {
        let mut entries = self.lock();
        match entries.get_mut(name) {
            Some(entry) if entry.publisher.as_ref().is_some_and(|p| p.conn == conn) => {
                entry.publisher = None;
                true
            }
            _ => false,
        }
    }

    /// The grace period on `shard` ended: forget the stream unless a publisher came back or
    /// another shard became its origin. Returns true if it was removed.
    pub fn remove_if_unpublished(&self, name: &StreamName, shard: ShardId) -> bool {
        let mut entries = self.lock();
        match entries.get(name) {
            Some(entry) if entry.origin == shard && entry.publisher.is_none() => {
                entries.remove(name);
                true
            }
            _ => false,
        }
    }

    /// The origin shard of `name`, if the stream exists (published or in its grace period).
    pub fn origin(&self, name: &StreamName) -> Option<ShardId> {
        self.lock().get(name).map(|e| e.origin)
    }

    /// Whether `name` currently has a publisher, and on which shard.
    pub fn publisher_shard(&self, name: &StreamName) -> Option<ShardId> {
        self.lock()
            .get(name)
            .and_then(|e| e.publisher.as_ref().map(|p| p.shard))
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn demand(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Demand>> {
        self.demand.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A viewer of `name` (in an application that pulls) arrived on some shard. Returns
    /// true when nobody pulls the stream yet and the caller's shard now does (it must start
    /// the pull): the host's one pull of it.
    pub fn watch_and_claim_pull(&self, name: &StreamName, shard: ShardId) -> bool {
        let mut demand = self.demand();
        let d = demand.entry(name.clone()).or_default();
        d.watchers += 1;
        if d.puller.is_none() {
            d.puller = Some(shard);
            return true;
        }
        false
    }

    /// Claims the pull of `name` for `shard` without a viewer (`pull_static`). False if
    /// another shard pulls it.
    pub fn claim_pull(&self, name: &StreamName, shard: ShardId) -> bool {
        let mut demand = self.demand();
        let d = demand.entry(name.clone()).or_default();
        if d.puller.is_some() {
            return false;
        }
        d.puller = Some(shard);
        true
    }

    /// A viewer counted by [`Self::watch_and_claim_pull`] left.
    pub fn unwatch(&self, name: &StreamName) {
        let mut demand = self.demand();
        if let Some(d) = demand.get_mut(name) {
            d.watchers = d.watchers.saturating_sub(1);
            if d.watchers == 0 && d.puller.is_none() {
                demand.remove(name);
            }
        }
    }

    /// The pull of `name` by `shard` ended.
    pub fn release_pull(&self, name: &StreamName, shard: ShardId) {
        let mut demand = self.demand();
        if let Some(d) = demand.get_mut(name)
            && d.puller == Some(shard)
        {
            d.puller = None;
            if d.watchers == 0 {
                demand.remove(name);
            }
        }
    }

    /// Viewers of `name` on the whole host (in an application that pulls).
    pub fn watchers(&self, name: &StreamName) -> usize {
        self.demand().get(name).map_or(0, |d| d.watchers)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TakeoverPolicy = TakeoverPolicy {
        immediate: false,
        idle_ms: 3000,
    };

    #[test]
    fn busy_then_takeover_after_idle() {
        let dir = StreamDirectory::new();
        let name: StreamName = "live/a".into();
        let (claim, clock) = dir.claim(&name, 0, 1, 1000, POLICY);
        assert_eq!(claim, Claim::New);
        assert_eq!(dir.claim(&name, 1, 2, 2000, POLICY).0, Claim::Busy);
        clock.unwrap().touch(2500, 90);
        assert_eq!(dir.claim(&name, 1, 2, 4000, POLICY).0, Claim::Busy);
        let (claim, clock) = dir.claim(&name, 1, 2, 5600, POLICY);
        assert_eq!(
            claim,
            Claim::TookOver {
                previous_origin: 0,
                previous_conn: 1
            }
        );
        assert_eq!(
            clock.unwrap().last_timestamp(),
            90,
            "the timeline carries over"
        );
        assert_eq!(dir.origin(&name), Some(1));
        // The old publisher's late goodbye must not unpublish the new one.
        assert!(!dir.release(&name, 1));
        assert_eq!(dir.publisher_shard(&name), Some(1));
    }

    #[test]
    fn immediate_takeover() {
        let dir = StreamDirectory::new();
        let name: StreamName = "live/c".into();
        dir.claim(&name, 0, 1, 0, POLICY);
        let policy = TakeoverPolicy {
            immediate: true,
            idle_ms: 3000,
        };
        assert!(matches!(
            dir.claim(&name, 0, 2, 1, policy).0,
            Claim::TookOver { .. }
        ));
    }

    #[test]
    fn one_pull_per_host_whatever_the_viewers() {
        let dir = StreamDirectory::new();
        let name: StreamName = "live/p".into();
        assert!(dir.watch_and_claim_pull(&name, 1));
        assert!(
            !dir.watch_and_claim_pull(&name, 0),
            "shard 1 pulls it already"
        );
        assert!(!dir.watch_and_claim_pull(&name, 1));
        assert_eq!(dir.watchers(&name), 3);
        assert!(!dir.claim_pull(&name, 0));
        dir.unwatch(&name);
        dir.unwatch(&name);
        dir.unwatch(&name);
        assert_eq!(dir.watchers(&name), 0);
        dir.release_pull(&name, 0);
        assert!(!dir.claim_pull(&name, 0), "only the puller releases");
        dir.release_pull(&name, 1);
        assert!(dir.claim_pull(&name, 0));
    }

    #[test]
    fn release_keeps_the_origin_until_the_grace_period_ends() {
        let dir = StreamDirectory::new();
        let name: StreamName = "live/b".into();
        dir.claim(&name, 0, 1, 0, POLICY);
        assert!(dir.release(&name, 1));
        assert_eq!(dir.origin(&name), Some(0));
        assert_eq!(
            dir.claim(&name, 1, 5, 10, POLICY).0,
            Claim::Resumed { previous_origin: 0 }
        );
        assert!(!dir.remove_if_unpublished(&name, 0));
        assert!(dir.release(&name, 5));
        assert!(dir.remove_if_unpublished(&name, 1));
        assert!(dir.is_empty());
    }
}
