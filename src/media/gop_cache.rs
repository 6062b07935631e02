//! The GOP cache: what a viewer who joins mid-stream is sent first so that playback can
//! start at once instead of after the publisher's next keyframe (often seconds away).
//!
//! Video can only be decoded from a keyframe onwards, so the cache holds the latest group
//! of pictures (GOP): the most recent video keyframe and every message since, including the
//! audio and data messages interleaved with it. When a new keyframe arrives, the previous
//! GOP is dropped; only one is kept, which is the smallest amount that lets a viewer start
//! decoding, and adds the least latency for that viewer.
//!
//! A publisher decides how long a GOP is and how big its frames are, so the cache is
//! bounded ([`GopCacheLimits`]): a GOP that grows past the byte or duration limit is thrown
//! away whole (a partial GOP is useless: it no longer starts at a keyframe) and caching
//! resumes at the next keyframe. Streams with no video at all (radio-style audio) have no
//! keyframes; for those the cache keeps the most recent audio and data within the same
//! limits, dropping the oldest first.
//!
//! The cache is generic over what it stores because the relay caches each message's shared
//! encoding (bytes encoded once and handed to every viewer), not the message itself. It
//! reads only the metadata in [`CachedMessage`]; sequence headers are expected to be kept
//! elsewhere, since they must outlive any single GOP.

use std::collections::VecDeque;
use std::collections::vec_deque;
use std::mem::size_of;

/// Bounds on how much one stream's GOP cache may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GopCacheLimits {
    /// Upper bound on the sum of the cached messages' sizes. Each message counts as at
    /// least the size of its [`CachedMessage`] record, so a flood of empty messages is
    /// bounded too.
    pub max_bytes: usize,
    /// Upper bound on the time from the oldest cached message to the newest, in
    /// milliseconds of stream time.
    pub max_duration_ms: u32,
}

/// A message as the GOP cache sees it: where it sits in time, what it costs, whether a
/// decoder can start at it, and the stored item itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedMessage<T> {
    /// Stream timestamp in milliseconds (wrapping at 2^32, like RTMP's).
    pub timestamp: u32,
    /// Bytes this message holds in memory; what `max_bytes` is measured against.
    pub size: usize,
    pub is_video: bool,
    /// A video keyframe that is not a sequence header (see `codec::VideoTagInfo::is_keyframe`).
    pub is_keyframe: bool,
    pub item: T,
}

/// Where the cache stands with respect to video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No video message yet: cache audio and data, oldest dropped first.
    AwaitingVideo,
    /// The cache holds a GOP that starts with a keyframe.
    InGop,
    /// Video has been seen but there is no usable GOP (none yet, or the last one outgrew
    /// the limits): cache nothing until the next keyframe.
    AwaitingKeyframe,
}

/// The latest GOP of one stream, bounded by [`GopCacheLimits`].
#[derive(Clone, Debug)]
pub struct GopCache<T> {
    limits: GopCacheLimits,
    messages: VecDeque<CachedMessage<T>>,
    /// Sum of the cached messages' `size`, as reported by [`GopCache::bytes`].
    bytes: usize,
    /// Sum of what each message is charged against `max_bytes` (see [`Self::charge`]).
    charged_bytes: usize,
    phase: Phase,
}

impl<T> GopCache<T> {
    pub fn new(limits: GopCacheLimits) -> Self {
        GopCache {
            limits,
            messages: VecDeque::new(),
            bytes: 0,
            charged_bytes: 0,
            phase: Phase::AwaitingVideo,
        }
    }

    pub fn limits(&self) -> GopCacheLimits {
        self.limits
    }

    /// Offers the next message of the stream, in arrival order. A video keyframe starts a
    /// new GOP and drops the previous one; anything else joins the current GOP, is dropped
    /// while no GOP is being cached, or (before any video) joins the audio-only window.
    pub fn push(&mut self, message: CachedMessage<T>) {
        if message.is_video && message.is_keyframe {
            self.reset(Phase::InGop);
            self.append(message);
            self.abandon_gop_if_over_limits();
            return;
        }
        match self.phase {
            Phase::InGop => {
                self.append(message);
                self.abandon_gop_if_over_limits();
            }
            Phase::AwaitingKeyframe => {}
            Phase::AwaitingVideo if message.is_video => {
                // Video that does not start at a keyframe cannot be decoded, and from now on
                // the cache is for GOPs: the audio-only window has served its purpose.
                self.reset(Phase::AwaitingKeyframe);
            }
            Phase::AwaitingVideo => {
                let newest = message.timestamp;
                self.append(message);
                self.trim_front(newest);
            }
        }
    }

    /// What a new viewer is sent, oldest first: starting at the keyframe when there is a
    /// GOP, or the audio-only window when no video has been seen.
    pub fn iter(&self) -> vec_deque::Iter<'_, CachedMessage<T>> {
        self.messages.iter()
    }

    /// Empties the cache and forgets whether video was seen, as for a new publication.
    /// The deque keeps its capacity.
    pub fn clear(&mut self) {
        self.reset(Phase::AwaitingVideo);
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Sum of the cached messages' `size` fields.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a viewer sent [`Self::iter`] can start decoding video at once.
    pub fn starts_with_keyframe(&self) -> bool {
        self.messages
            .front()
            .is_some_and(|first| first.is_video && first.is_keyframe)
    }

    /// What a message counts against `max_bytes`: its size, but never less than the record
    /// that holds it, because zero-size messages still take memory.
    fn charge(message: &CachedMessage<T>) -> usize {
        message.size.max(size_of::<CachedMessage<T>>())
    }

    fn reset(&mut self, phase: Phase) {
        self.messages.clear();
        self.bytes = 0;
        self.charged_bytes = 0;
        self.phase = phase;
    }

    fn append(&mut self, message: CachedMessage<T>) {
        // Saturating: sizes are the caller's numbers, and a saturated sum is over any limit.
        self.bytes = self.bytes.saturating_add(message.size);
        self.charged_bytes = self.charged_bytes.saturating_add(Self::charge(&message));
        self.messages.push_back(message);
    }

    fn abandon_gop_if_over_limits(&mut self) {
        let (Some(first), Some(last)) = (self.messages.front(), self.messages.back()) else {
            return;
        };
        let elapsed = elapsed_ms(first.timestamp, last.timestamp);
        if self.charged_bytes > self.limits.max_bytes || elapsed > self.limits.max_duration_ms {
            self.reset(Phase::AwaitingKeyframe);
        }
    }

    /// Drops the oldest audio/data messages until the window fits the limits again. Each
    /// message is dropped at most once, so this is O(1) amortised per push.
    fn trim_front(&mut self, newest: u32) {
        while let Some(oldest) = self.messages.front() {
            let over_bytes = self.charged_bytes > self.limits.max_bytes;
            let over_duration = elapsed_ms(oldest.timestamp, newest) > self.limits.max_duration_ms;
            if !over_bytes && !over_duration {
                break;
            }
            if let Some(dropped) = self.messages.pop_front() {
                self.bytes = self.bytes.saturating_sub(dropped.size);
                self.charged_bytes = self.charged_bytes.saturating_sub(Self::charge(&dropped));
            }
        }
    }
}

/// Milliseconds from `earlier` to `later` on RTMP's wrapping clock. A difference of more
/// than 2^31 means `later` is really before `earlier` (audio stamped slightly ahead of the
/// keyframe it is interleaved with is common), which counts as no time at all.
fn elapsed_ms(earlier: u32, later: u32) -> u32 {
    let difference = later.wrapping_sub(earlier);
    if difference > i32::MAX as u32 {
        0
    } else {
        difference
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: GopCacheLimits = GopCacheLimits {
        max_bytes: 10_000,
        max_duration_ms: 5_000,
    };

    fn keyframe(timestamp: u32, size: usize, id: u32) -> CachedMessage<u32> {
        CachedMessage {
            timestamp,
            size,
            is_video: true,
            is_keyframe: true,
            item: id,
        }
    }

    fn inter(timestamp: u32, size: usize, id: u32) -> CachedMessage<u32> {
        CachedMessage {
            timestamp,
            size,
            is_video: true,
            is_keyframe: false,
            item: id,
        }
    }

    fn audio(timestamp: u32, size: usize, id: u32) -> CachedMessage<u32> {
        CachedMessage {
            timestamp,
            size,
            is_video: false,
            is_keyframe: false,
            item: id,
        }
    }

    fn items(cache: &GopCache<u32>) -> Vec<u32> {
        cache.iter().map(|message| message.item).collect()
    }

    #[test]
    fn keeps_the_gop_since_the_latest_keyframe() {
        let mut cache = GopCache::new(LIMITS);
        cache.push(keyframe(0, 1000, 1));
        cache.push(audio(10, 100, 2));
        cache.push(inter(33, 200, 3));
        assert_eq!(items(&cache), [1, 2, 3]);
        assert!(cache.starts_with_keyframe());
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 1300);

        cache.push(keyframe(66, 900, 4));
        cache.push(audio(70, 100, 5));
        assert_eq!(items(&cache), [4, 5]);
        assert_eq!(cache.bytes(), 1000);
        assert!(cache.starts_with_keyframe());
    }

    #[test]
    fn video_before_the_first_keyframe_is_not_cached() {
        let mut cache = GopCache::new(LIMITS);
        cache.push(audio(0, 100, 1));
        // A sequence header or inter frame: video exists, but no GOP yet.
        cache.push(inter(0, 100, 2));
        cache.push(audio(20, 100, 3));
        cache.push(inter(33, 100, 4));
        assert!(cache.is_empty());
        assert!(!cache.starts_with_keyframe());

        cache.push(keyframe(66, 100, 5));
        cache.push(audio(70, 100, 6));
        assert_eq!(items(&cache), [5, 6]);
        assert_eq!(cache.iter().next().map(|m| m.item), Some(5));
    }

    #[test]
    fn byte_cap_abandons_the_gop_until_the_next_keyframe() {
        let mut cache = GopCache::new(GopCacheLimits {
            max_bytes: 1000,
            max_duration_ms: 60_000,
        });
        cache.push(keyframe(0, 400, 1));
        cache.push(inter(33, 400, 2));
        assert_eq!(cache.len(), 2);
        cache.push(inter(66, 400, 3));
        assert!(
            cache.is_empty(),
            "1200 bytes > 1000: the GOP is dropped whole"
        );
        assert_eq!(cache.bytes(), 0);

        cache.push(inter(99, 10, 4));
        cache.push(audio(100, 10, 5));
        assert!(
            cache.is_empty(),
            "nothing is cached until the next keyframe"
        );

        cache.push(keyframe(132, 400, 6));
        assert_eq!(items(&cache), [6]);
    }

    #[test]
    fn oversized_keyframe_is_not_cached() {
        let mut cache = GopCache::new(GopCacheLimits {
            max_bytes: 1000,
            max_duration_ms: 60_000,
        });
        cache.push(keyframe(0, 1001, 1));
        assert!(cache.is_empty());
        cache.push(inter(33, 10, 2));
        assert!(cache.is_empty());
    }

    #[test]
    fn duration_cap_abandons_the_gop() {
        let mut cache = GopCache::new(GopCacheLimits {
            max_bytes: 1_000_000,
            max_duration_ms: 2000,
        });
        cache.push(keyframe(1000, 100, 1));
        cache.push(inter(3000, 100, 2));
        assert_eq!(cache.len(), 2, "exactly the limit is still within it");
        cache.push(audio(3001, 100, 3));
        assert!(cache.is_empty());
        cache.push(keyframe(3033, 100, 4));
        assert_eq!(items(&cache), [4]);
    }

    #[test]
    fn audio_stamped_before_the_keyframe_is_not_a_huge_duration() {
        let mut cache = GopCache::new(LIMITS);
        cache.push(keyframe(1000, 100, 1));
        cache.push(audio(990, 100, 2));
        assert_eq!(items(&cache), [1, 2]);
    }

    #[test]
    fn durations_follow_the_wrapping_clock() {
        let mut cache = GopCache::new(LIMITS);
        cache.push(keyframe(u32::MAX - 10, 100, 1));
        cache.push(inter(20, 100, 2));
        assert_eq!(cache.len(), 2, "31 ms across the wrap");
        cache.push(inter(5_000, 100, 3));
        assert!(cache.is_empty(), "5011 ms across the wrap");
    }

    #[test]
    fn audio_only_stream_keeps_a_bounded_window() {
        let mut cache = GopCache::new(GopCacheLimits {
            max_bytes: 1000,
            max_duration_ms: 100,
        });
        for (index, timestamp) in (0..5).zip((0..).step_by(23)) {
            cache.push(audio(timestamp, 300, index));
        }
        // 300-byte messages: only three fit in 1000 bytes.
        assert_eq!(items(&cache), [2, 3, 4]);
        assert_eq!(cache.bytes(), 900);
        assert!(!cache.starts_with_keyframe());

        // Jump ahead in time: everything older than 100 ms goes.
        cache.push(audio(180, 100, 5));
        assert_eq!(items(&cache), [4, 5]);
        cache.push(audio(400, 100, 6));
        assert_eq!(items(&cache), [6]);

        // A message bigger than the whole budget is not kept either.
        cache.push(audio(401, 5000, 7));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn empty_messages_are_still_bounded() {
        let mut cache = GopCache::new(GopCacheLimits {
            max_bytes: 1000,
            max_duration_ms: 1000,
        });
        for index in 0..10_000 {
            cache.push(audio(0, 0, index));
        }
        assert!(cache.len() <= 1000 / size_of::<CachedMessage<u32>>());
        assert!(!cache.is_empty());

        cache.push(keyframe(0, 0, 0));
        for index in 0..10_000 {
            cache.push(inter(0, 0, index));
        }
        assert!(cache.len() <= 1000 / size_of::<CachedMessage<u32>>());
    }

    #[test]
    fn clear_starts_over() {
        let mut cache = GopCache::new(LIMITS);
        cache.push(keyframe(0, 100, 1));
        cache.push(inter(33, 100, 2));
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        // After a clear the stream is treated as new: audio is cached again until video.
        cache.push(audio(50, 100, 3));
        assert_eq!(items(&cache), [3]);
    }

    #[test]
    fn works_with_shared_encodings() {
        let mut cache = GopCache::new(LIMITS);
        let encoded = bytes::Bytes::from_static(b"\x09encoded once");
        cache.push(CachedMessage {
            timestamp: 0,
            size: encoded.len(),
            is_video: true,
            is_keyframe: true,
            item: encoded.clone(),
        });
        assert_eq!(cache.iter().next().map(|m| &m.item), Some(&encoded));
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_stream(
            messages in proptest::collection::vec(
                (any::<u32>(), 0usize..3000, any::<bool>(), any::<bool>()),
                0..200,
            ),
        ) {
            let limits = GopCacheLimits { max_bytes: 8000, max_duration_ms: 3000 };
            let mut cache = GopCache::new(limits);
            let mut seen_video = false;
            for (timestamp, size, is_video, is_keyframe) in messages {
                seen_video |= is_video;
                cache.push(CachedMessage { timestamp, size, is_video, is_keyframe, item: () });
                let total: usize = cache.iter().map(|m| m.size).sum();
                prop_assert_eq!(total, cache.bytes());
                prop_assert!(cache.bytes() <= limits.max_bytes);
                if seen_video {
                    prop_assert!(cache.is_empty() || cache.starts_with_keyframe());
                }
            }
        }
    }
}
