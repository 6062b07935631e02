//! Which origin an edge pulls a stream from: rendezvous (highest random weight) hashing.
//!
//! Every origin URL gets a weight per stream name, a hash of the two; the stream's
//! origins in order of decreasing weight are its ring. The first is the one every edge
//! asks (so a stream is pulled from one origin, which keeps one copy of it), and when
//! that one fails the edge walks on to the second, third... in an order that every edge
//! agrees on. Adding or removing an origin moves only the streams whose first choice it
//! was, as consistent hashing promises, with no virtual nodes to tune.
//!
//! The hash is FNV-1a over the URL, a separator and the name, finished with a 64-bit
//! mixer: stable across processes and versions (unlike std's `DefaultHasher`), which is
//! what makes different edges agree.

/// The configured origins of one application.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginRing {
    origins: Vec<String>,
}

impl OriginRing {
    pub fn new(origins: Vec<String>) -> OriginRing {
        OriginRing { origins }
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// The origins for `stream`, the one to ask first first.
    pub fn order_for(&self, stream: &str) -> Vec<&str> {
        let mut weighted: Vec<(u64, &str)> = self
            .origins
            .iter()
            .map(|url| (weight(url, stream), url.as_str()))
            .collect();
        // Ties (practically impossible) are broken by the URL, so the order is total.
        weighted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        weighted.into_iter().map(|(_, url)| url).collect()
    }

    /// The `attempt`-th origin to try for `stream` (0 is the first choice), wrapping
    /// around the ring.
    pub fn pick(&self, stream: &str, attempt: usize) -> Option<&str> {
        if self.origins.is_empty() {
            return None;
        }
        let order = self.order_for(stream);
        Some(order[attempt % order.len()])
    }
}

fn weight(origin: &str, stream: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in origin
        .bytes()
        .chain(std::iter::once(0))
        .chain(stream.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer: FNV's low bits alone cluster for similar names.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> OriginRing {
        OriginRing::new(
            (0..n)
                .map(|i| format!("rtmp://origin-{i}:1935/live"))
                .collect(),
        )
    }

    #[test]
    fn every_edge_orders_the_origins_alike() {
        let a = ring(3);
        let b = OriginRing::new(a.origins.iter().rev().cloned().collect());
        for name in ["a", "b", "stream-42", "x y"] {
            assert_eq!(a.order_for(name), b.order_for(name));
            assert_eq!(a.order_for(name).len(), 3);
        }
    }

    #[test]
    fn streams_spread_over_the_origins() {
        let r = ring(4);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let first = r.pick(&format!("s{i}"), 0).unwrap();
            let idx = r.origins.iter().position(|o| o == first).unwrap();
            counts[idx] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_an_origin_moves_only_its_streams() {
        let full = ring(4);
        let less = OriginRing::new(full.origins[..3].to_vec());
        for i in 0..1000 {
            let name = format!("s{i}");
            let before = full.pick(&name, 0).unwrap();
            if before != full.origins[3] {
                assert_eq!(less.pick(&name, 0).unwrap(), before);
            }
        }
    }

    #[test]
    fn failover_walks_the_ring_and_wraps() {
        let r = ring(3);
        let order = r.order_for("s");
        assert_eq!(r.pick("s", 1), Some(order[1]));
        assert_eq!(r.pick("s", 3), Some(order[0]));
        assert_eq!(OriginRing::default().pick("s", 0), None);
    }
}
