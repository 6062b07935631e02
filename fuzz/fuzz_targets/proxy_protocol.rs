//! Arbitrary first bytes of a connection into `proxy_protocol::parse`: it never panics, a
//! header it finds is no longer than the input nor than `MAX_HEADER`, and feeding the same
//! bytes one more byte at a time never turns a decided answer back into "incomplete"
//! (admission reads until the answer is decided, so a flip would stall or misread a client).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::net::proxy_protocol::{MAX_HEADER, Preface, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Preface::Header { len, .. } = whole {
        assert!(len <= data.len() && len <= MAX_HEADER);
    }
    let mut decided = None;
    for end in 0..=data.len().min(MAX_HEADER + 16) {
        match parse(&data[..end]) {
            Preface::Incomplete => assert!(
                decided.is_none(),
                "decided at {decided:?} bytes, then incomplete at {end}"
            ),
            _ => {
                decided.get_or_insert(end);
            }
        }
    }
});
