//! Arbitrary bytes into `http::request::parse_head`, fed the way a socket delivers them
//! (see `pieces`), and every complete head into `route`.
//!
//! Checks: no panic; `Incomplete` only while under `MAX_HEAD_BYTES`; a complete head
//! consumed no more than it was given and no more than the cap; a parse is a function of
//! the bytes (what was `Complete` at one prefix stays the same head at a longer one); a
//! routed stream name is non-empty, not a dot segment, free of slashes, backslashes and
//! control characters, and within `MAX_SEGMENT_BYTES`; the error response for any
//! rejection is a valid HTTP head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::http::request::{
    HeadParse, MAX_HEAD_BYTES, MAX_SEGMENT_BYTES, Route, parse_head, route,
};
use shardcast::http::response::{Cors, error};
use shardcast_fuzz::pieces;

fuzz_target!(|data: &[u8]| {
    let mut received = Vec::new();
    let mut first_complete = None;
    for piece in pieces(data) {
        received.extend_from_slice(piece);
        match parse_head(&received) {
            HeadParse::Incomplete => {
                assert!(received.len() < MAX_HEAD_BYTES, "incomplete past the cap");
                assert!(
                    first_complete.is_none(),
                    "a complete head became incomplete"
                );
            }
            HeadParse::Rejected(e) => {
                check_error(e.status, &e.reason);
                break;
            }
            HeadParse::Complete { head, consumed } => {
                assert!(consumed <= received.len() && consumed <= MAX_HEAD_BYTES);
                if let Some((ref h, c)) = first_complete {
                    assert_eq!((h, c), (&head, consumed), "more input changed the head");
                } else {
                    match route(&head) {
                        Ok(Route::Flv { app, stream }) => {
                            check_name(&app);
                            check_name(&stream);
                        }
                        Ok(Route::Vod { app, name, file, .. }) => {
                            check_name(&app);
                            check_name(&name);
                            check_name(&file);
                        }
                        Ok(Route::Preflight) => assert_eq!(head.method, "OPTIONS"),
                        Err(e) => check_error(e.status, &e.reason),
                    }
                    first_complete = Some((head, consumed));
                }
            }
        }
    }
});

fn check_name(name: &str) {
    assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
    assert!(name.len() <= MAX_SEGMENT_BYTES);
    assert!(
        !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control()),
        "{name:?}"
    );
}

fn check_error(status: u16, reason: &str) {
    assert!((400..600).contains(&status));
    let bytes = error(status, reason, &Cors::default());
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    assert!(matches!(
        resp.parse(&bytes),
        Ok(httparse::Status::Complete(_))
    ));
    assert_eq!(resp.code, Some(status));
}
