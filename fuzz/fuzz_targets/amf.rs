//! Arbitrary bytes into `amf0::decode_all` and an `Amf3Decoder`; whatever decodes is
//! encoded again and must decode back to the same values.
//!
//! Decoding normalises a little (lossy UTF-8, AMF3 integers that only fit a double), so
//! the check is that the first re-encoding is a fixed point: encode(decode(encode(v))) ==
//! encode(v). Comparing encodings also treats NaN payloads as equal to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::rtmp::amf0;
use shardcast::rtmp::amf3::{self, Amf3Decoder};

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = amf0::decode_all(data) {
        let first = encode_amf0(&values);
        let again = amf0::decode_all(&first).expect("our AMF0 encoding decodes");
        assert_eq!(again.len(), values.len());
        assert_eq!(
            encode_amf0(&again),
            first,
            "AMF0 round trip changed the values"
        );
    }

    let mut input = data;
    let mut decoder = Amf3Decoder::new();
    while !input.is_empty() {
        let before = input.len();
        let Ok(value) = decoder.decode(&mut input) else {
            break;
        };
        assert!(input.len() < before, "a decoded value consumed no input");
        let mut first = Vec::new();
        amf3::encode(&value, &mut first);
        let mut cursor = first.as_slice();
        let again = Amf3Decoder::new()
            .decode(&mut cursor)
            .expect("our AMF3 encoding decodes");
        assert!(cursor.is_empty(), "our AMF3 encoding decodes whole");
        let mut second = Vec::new();
        amf3::encode(&again, &mut second);
        assert_eq!(second, first, "AMF3 round trip changed the value");
    }
});

fn encode_amf0(values: &[amf0::Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        amf0::encode(v, &mut out);
    }
    out
}
