//! Arbitrary text where a client's URL goes: access control's query parsing, redaction,
//! signed-link check, and a callback's `Location`. Nothing may panic; redaction must
//! leave no value of `key`, `sig` or `token` behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::access::callback::{CallbackAnswer, verdict};
use shardcast::access::network_rules::Cidr;
use shardcast::access::query::{QueryArgs, SECRET_ARGS, query_of, redact_url};
use shardcast::access::{Action, signed_link};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args = QueryArgs::parse(&text);
    let url = format!("rtmp://h/live?{text}");
    let redacted = redact_url(&url);
    for (name, value) in QueryArgs::parse(query_of(&redacted)).iter() {
        if SECRET_ARGS.contains(&name) {
            assert_eq!(value, "***", "{name} was redacted");
        }
    }
    let _ = signed_link::verify(b"fuzzing-secret-16", Action::Play, "live", "x", &args, 1);
    let _ = text.parse::<Cidr>();
    let _ = verdict(&CallbackAnswer::Status {
        code: 302,
        location: Some(text.into_owned()),
    });
});
