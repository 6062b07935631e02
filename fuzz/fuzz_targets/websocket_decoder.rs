//! Arbitrary bytes into a `websocket::FrameDecoder`, fed the way a socket delivers them
//! (see `pieces`) after a byte that picks the data-frame cap.
//!
//! Checks: no panic; the decoder never holds more than its cap (or the 125 bytes of a
//! control frame) plus the 14-byte largest header; once it fails it keeps failing with
//! the same error, and once it has read a close it reports nothing more; every ping
//! payload fits a control frame; the same bytes fed whole give the same events and error
//! as fed in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::http::websocket::{
    FrameDecoder, MAX_CONTROL_PAYLOAD, MAX_HEADER_BYTES, WsEvent, pong_frame,
};
use shardcast_fuzz::pieces;

fuzz_target!(|data: &[u8]| {
    let Some((&cap_byte, rest)) = data.split_first() else {
        return;
    };
    // Caps from 0 to 2^15: small ones make oversize frames easy to find.
    let max_payload = (1usize << (cap_byte % 16)) - 1;
    let bound = max_payload.max(MAX_CONTROL_PAYLOAD) + MAX_HEADER_BYTES;

    let mut split = FrameDecoder::new(max_payload);
    let mut events = Vec::new();
    let mut failure = None;
    for piece in pieces(rest) {
        match split.feed(piece) {
            Ok(evs) => {
                assert!(failure.is_none(), "a failed decoder recovered");
                let is_close = |e: &WsEvent| matches!(e, WsEvent::Close { .. });
                assert!(
                    evs.is_empty() || !events.iter().any(is_close),
                    "events after a close"
                );
                if let Some(i) = evs.iter().position(is_close) {
                    assert_eq!(i + 1, evs.len(), "events after a close");
                }
                events.extend(evs);
            }
            Err(e) => {
                if let Some(first) = &failure {
                    assert_eq!(first, &e, "a failed decoder changed its error");
                }
                failure = Some(e);
            }
        }
        assert!(split.buffered() <= bound, "{} > {bound}", split.buffered());
    }
    for e in &events {
        if let WsEvent::Ping(p) = e {
            assert!(p.len() <= MAX_CONTROL_PAYLOAD);
            assert_eq!(&pong_frame(p)[2..], &p[..]);
        }
    }

    // Whole: the same bytes in one feed decode to the same outcome. (`pieces` drops the
    // split byte, so feed what it cut.)
    let all: Vec<u8> = pieces(rest).concat();
    let mut whole = FrameDecoder::new(max_payload);
    match whole.feed(&all) {
        Ok(evs) => {
            assert!(failure.is_none());
            assert_eq!(evs, events);
        }
        Err(e) => assert_eq!(Some(e), failure),
    }
});
