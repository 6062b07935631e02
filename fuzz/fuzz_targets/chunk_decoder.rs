//! Arbitrary bytes, cut at arbitrary points, into a `ChunkDecoder` with default limits.
//!
//! Checks: no panic; the bytes held for partial messages never exceed the limit, nor the
//! chunk streams theirs, and the memory reserved stays within what `reserved_bytes`
//! promises; after `Ok(None)` at most one partial header is left unparsed; no message is longer than the
//! limit; an error poisons the decoder. Every decoded message is re-encoded with a
//! `ChunkEncoder` (following Set Chunk Size as a peer would) and must decode back equal.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardcast::rtmp::chunk::{
    ChunkDecoder, ChunkEncoder, DecoderLimits, EXACT_ALLOC_LIMIT, MAX_HEADER_LEN,
};
use shardcast::rtmp::message::{MessageType, RtmpMessage};

fuzz_target!(|data: &[u8]| {
    let limits = DecoderLimits::default();
    let mut dec = ChunkDecoder::new(limits);
    let mut messages = Vec::new();
    'feed: for piece in shardcast_fuzz::pieces(data) {
        dec.feed(Bytes::copy_from_slice(piece));
        loop {
            match dec.next_message() {
                Ok(Some(msg)) => {
                    assert!(msg.payload.len() <= limits.max_message_len as usize);
                    assert!(dec.buffered_bytes() <= limits.max_buffered_bytes);
                    messages.push(msg);
                }
                Ok(None) => {
                    assert!(dec.buffered_bytes() <= limits.max_buffered_bytes);
                    assert!(dec.unparsed_bytes() <= MAX_HEADER_LEN);
                    assert!(dec.chunk_streams() <= limits.max_chunk_streams);
                    assert!(
                        dec.reserved_bytes()
                            <= 2 * dec.buffered_bytes() + dec.chunk_streams() * EXACT_ALLOC_LIMIT
                    );
                    break;
                }
                Err(err) => {
                    assert_eq!(dec.next_message(), Err(err), "errors poison the decoder");
                    break 'feed;
                }
            }
        }
    }
    round_trip(&messages, limits);
});

/// What a decoder read must survive our encoder and a second decoder unchanged.
fn round_trip(messages: &[RtmpMessage], limits: DecoderLimits) {
    let mut enc = ChunkEncoder::new();
    let mut wire = BytesMut::new();
    for msg in messages {
        enc.encode(3, msg, &mut wire);
        if msg.type_id == MessageType::SetChunkSize.id()
            && let Some(b) = msg.payload.first_chunk::<4>()
        {
            // The decoder accepted it, so it is a valid size.
            enc.set_chunk_size(u32::from_be_bytes(*b));
        }
    }
    let mut dec = ChunkDecoder::new(limits);
    dec.feed(wire.freeze());
    for (i, msg) in messages.iter().enumerate() {
        match dec.next_message() {
            Ok(Some(again)) => assert_eq!(&again, msg, "message {i} changed in a round trip"),
            other => panic!("message {i} lost in a round trip: {other:?}"),
        }
    }
    assert_eq!(dec.next_message(), Ok(None));
}
