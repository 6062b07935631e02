//! Arbitrary bytes into `ServerSession::feed`, answered the way the relay answers.
//!
//! Input: one flags byte, then what `shardcast_fuzz::pieces` reads (a split byte and the
//! stream). Flags bit 0 puts a valid plain handshake (C0, C1, C2) in front of the stream,
//! so most inputs reach the chunk and command layers; without it the handshake itself is
//! fuzzed. Every `ConnectRequested`, `PublishRequested` and `PlayRequested` is accepted
//! (bits 1 to 3 reject them instead), so the paths after acceptance are reached; bit 4
//! also sends media, data and notifications to players, as the relay would. Media the
//! session delivers goes through `media::codec`'s inspection, as in the relay.
//!
//! Bit 6 switches to *message mode*: after a plain handshake and an accepted `connect`,
//! the rest of the input is read as records (chunk stream, type id, message stream,
//! timestamp step, 16-bit length, payload) that a `ChunkEncoder` turns into chunks, each
//! message fed on its own. The fuzzer then works on whole messages (with the dictionary,
//! on AMF commands) instead of having to get chunk headers right first.
//!
//! Checks: no panic; buffered bytes, chunk streams and reserved memory within the limits
//! and at most one partial header left unparsed after each feed; and everything the
//! server writes is a valid handshake answer followed by a chunk stream a client's
//! `ChunkDecoder` reads without error.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardcast::media::codec::{inspect_audio, inspect_video};
use shardcast::rtmp::amf0::Amf0Value;
use shardcast::rtmp::chunk::{
    ChunkDecoder, ChunkEncoder, DecoderLimits, EXACT_ALLOC_LIMIT, MAX_HEADER_LEN,
};
use shardcast::rtmp::command::Command;
use shardcast::rtmp::handshake::PACKET_LEN;
use shardcast::rtmp::message::RtmpMessage;
use shardcast::rtmp::{MediaKind, ServerEvent, ServerSession, ServerSessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let config = ServerSessionConfig::default();
    let limits = config.limits;
    let mut session = ServerSession::new(config);
    let mut output = Vec::new();
    if flags & 64 != 0 {
        message_mode(&mut session, flags, rest, &mut output);
        check_output(&session, &output);
        return;
    }
    if flags & 1 != 0 {
        let mut handshake = vec![3u8];
        handshake.resize(1 + 2 * PACKET_LEN, 0);
        if session.feed(Bytes::from(handshake)).is_err() {
            panic!("a plain handshake is accepted");
        }
        drain(&mut session, flags, &mut output);
    }
    for piece in shardcast_fuzz::pieces(rest) {
        if !feed_checked(&mut session, Bytes::copy_from_slice(piece), limits) {
            break;
        }
        drain(&mut session, flags, &mut output);
    }
    check_output(&session, &output);
});

/// Feeds one piece and checks the limits; false once the session has failed.
fn feed_checked(session: &mut ServerSession, piece: Bytes, limits: DecoderLimits) -> bool {
    if session.feed(piece).is_err() {
        return false;
    }
    assert!(session.buffered_bytes() <= limits.max_buffered_bytes);
    assert!(session.chunk_streams() <= limits.max_chunk_streams);
    assert!(
        session.reserved_bytes()
            <= 2 * session.buffered_bytes() + session.chunk_streams() * EXACT_ALLOC_LIMIT
    );
    assert!(session.unparsed_bytes() <= MAX_HEADER_LEN);
    true
}

fn message_mode(session: &mut ServerSession, flags: u8, mut rest: &[u8], output: &mut Vec<u8>) {
    let limits = DecoderLimits::default();
    let mut hello = vec![3u8];
    hello.resize(1 + 2 * PACKET_LEN, 0);
    assert!(session.feed(Bytes::from(hello)).is_ok());
    drain(session, flags, output);

    let mut enc = ChunkEncoder::new();
    let mut wire = BytesMut::new();
    let app = Amf0Value::object([("app", Amf0Value::String("live".into()))]);
    enc.encode(
        3,
        &Command::new("connect", 1.0, app).to_message(0),
        &mut wire,
    );
    assert!(session.feed(wire.split().freeze()).is_ok());
    drain(session, flags, output);

    let mut timestamp = 0u32;
    while let [csid, type_id, stream_id, step, len_lo, len_hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (payload, after) = tail.split_at(len);
        rest = after;
        timestamp = match step {
            0xFF => timestamp.wrapping_add(0xFF_FFF0),
            0xFE => timestamp.wrapping_sub(1000),
            _ => timestamp.wrapping_add(u32::from(*step) * 10),
        };
        let msg = RtmpMessage::new(
            *type_id,
            u32::from(*stream_id % 4),
            timestamp,
            Bytes::copy_from_slice(payload),
        );
        enc.encode(2 + u32::from(*csid), &msg, &mut wire);
        // Follow our own Set Chunk Size, as a real peer's encoder does.
        if *type_id == 1
            && let Some(size) = payload.first_chunk::<4>().map(|b| u32::from_be_bytes(*b))
            && (1..=0x7FFF_FFFF).contains(&size)
        {
            enc.set_chunk_size(size);
        }
        if !feed_checked(session, wire.split().freeze(), limits) {
            break;
        }
        drain(session, flags, output);
    }
}

fn drain(session: &mut ServerSession, flags: u8, output: &mut Vec<u8>) {
    while let Some(event) = session.poll_event() {
        match event {
            ServerEvent::ConnectRequested { .. } if flags & 2 != 0 => {
                session.reject_connect("fuzz")
            }
            ServerEvent::ConnectRequested { .. } => session.accept_connect(),
            ServerEvent::PublishRequested { stream_id, .. } if flags & 4 != 0 => {
                session.reject_publish(stream_id, "NetStream.Publish.BadName", "fuzz")
            }
            ServerEvent::PublishRequested { stream_id, .. } => session.accept_publish(stream_id),
            ServerEvent::PlayRequested { stream_id, .. } if flags & 8 != 0 => {
                session.reject_play(stream_id, "NetStream.Play.StreamNotFound", "fuzz")
            }
            ServerEvent::PlayRequested {
                stream_id, reset, ..
            } => {
                session.accept_play(stream_id, reset, flags & 32 != 0);
                if flags & 16 != 0 {
                    session.send_data(stream_id, 0, Bytes::from_static(b"\x02\x00\x01x"));
                    session.send_media(
                        stream_id,
                        MediaKind::Video,
                        40,
                        Bytes::from_static(b"\x17\x01"),
                    );
                    session.notify_unpublished(stream_id);
                    session.notify_republished(stream_id);
                    session.notify_play_stopped(stream_id);
                    session.send_ping(1);
                }
            }
            // The relay inspects every media message for sequence headers and keyframes.
            ServerEvent::Media {
                kind: MediaKind::Video,
                payload,
                ..
            } => {
                let _ = inspect_video(&payload);
            }
            ServerEvent::Media {
                kind: MediaKind::Audio,
                payload,
                ..
            } => {
                let _ = inspect_audio(&payload);
            }
            ServerEvent::Metadata { .. }
            | ServerEvent::Data { .. }
            | ServerEvent::HandshakeComplete { .. }
            | ServerEvent::Pause { .. }
            | ServerEvent::Seek { .. }
            | ServerEvent::StreamLengthRequested { .. }
            | ServerEvent::BufferLength { .. }
            | ServerEvent::ReceiveAudio { .. }
            | ServerEvent::ReceiveVideo { .. }
            | ServerEvent::StreamClosed { .. } => {}
        }
    }
    while let Some(out) = session.poll_transmit() {
        output.extend_from_slice(&out);
    }
}

/// The server's output must be S0+S1+S2 (once C0+C1 arrived), then well-formed chunks.
fn check_output(session: &ServerSession, output: &[u8]) {
    let handshake_len = 1 + 2 * PACKET_LEN;
    if output.len() < handshake_len {
        assert!(output.is_empty(), "a partial handshake answer");
        return;
    }
    assert_eq!(output[0], 3);
    let chunks = &output[handshake_len..];
    if !session.is_handshake_complete() {
        assert!(chunks.is_empty(), "chunks before the handshake completed");
        return;
    }
    let mut dec = ChunkDecoder::new(DecoderLimits::default());
    dec.feed(Bytes::copy_from_slice(chunks));
    loop {
        match dec.next_message() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("the server wrote a chunk stream a client cannot read: {e}"),
        }
    }
    assert_eq!(
        dec.unparsed_bytes(),
        0,
        "the server's output ends mid-chunk"
    );
    assert_eq!(
        dec.buffered_bytes(),
        0,
        "the server's output ends mid-message"
    );
}
