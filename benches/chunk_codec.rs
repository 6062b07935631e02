//! Throughput of the chunk codec on the relay's hot path: decoding a publisher's media,
//! encoding per connection, and the once-per-frame shared encoding every viewer reuses.
//!
//! The media stream is 20 KB video frames interleaved with 4 KB audio-sized messages, at the
//! default chunk size (128) and at 4096, which encoders such as OBS and ffmpeg switch to.
//! Decoding is fed in 64 KiB slices of one buffer, the way a socket reader hands them over;
//! `decode/memcpy_baseline` copies the same bytes into a `BytesMut`, which is what a decoder
//! keeping its input in one `BytesMut` would add on every feed. Throughput counts payload
//! bytes, so figures compare across chunk sizes.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shardcast::rtmp::chunk::{ChunkDecoder, ChunkEncoder, DecoderLimits, encode_shared};
use shardcast::rtmp::message::{RtmpMessage, csid};

const READ_SIZE: usize = 64 * 1024;

fn media_stream() -> Vec<RtmpMessage> {
    let mut msgs = Vec::new();
    for i in 0..32u32 {
        let video = vec![(i % 251) as u8; 20_000];
        let audio = vec![(i % 241) as u8; 4_000];
        msgs.push(RtmpMessage::new(9, 1, i * 33, video));
        msgs.push(RtmpMessage::new(8, 1, i * 33 + 1, audio));
    }
    msgs
}

fn payload_bytes(msgs: &[RtmpMessage]) -> u64 {
    msgs.iter().map(|m| m.payload.len() as u64).sum()
}

fn encode_stream(enc: &mut ChunkEncoder, msgs: &[RtmpMessage], out: &mut BytesMut) {
    for m in msgs {
        let chunk_stream = if m.type_id == 9 { 10 } else { 11 };
        enc.encode(chunk_stream, m, out);
    }
}

/// The wire bytes of `msgs` at `chunk_size`, announced by a Set Chunk Size first.
fn wire(msgs: &[RtmpMessage], chunk_size: u32) -> Bytes {
    let mut enc = ChunkEncoder::new();
    let mut out = BytesMut::new();
    let announce = RtmpMessage::new(1, 0, 0, chunk_size.to_be_bytes().to_vec());
    enc.encode(csid::PROTOCOL_CONTROL, &announce, &mut out);
    enc.set_chunk_size(chunk_size);
    encode_stream(&mut enc, msgs, &mut out);
    out.freeze()
}

fn decode(c: &mut Criterion) {
    let msgs = media_stream();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(payload_bytes(&msgs)));
    for chunk_size in [128u32, 4096] {
        let wire = wire(&msgs, chunk_size);
        let reads: Vec<Bytes> = (0..wire.len())
            .step_by(READ_SIZE)
            .map(|at| wire.slice(at..(at + READ_SIZE).min(wire.len())))
            .collect();
        group.bench_with_input(
            BenchmarkId::new("stream", chunk_size),
            &reads,
            |b, reads| {
                b.iter(|| {
                    let mut dec = ChunkDecoder::new(DecoderLimits::default());
                    let mut count = 0;
                    for read in reads {
                        dec.feed(read.clone());
                        while let Some(m) = dec.next_message().unwrap() {
                            black_box(&m);
                            count += 1;
                        }
                    }
                    assert_eq!(count, msgs.len() + 1);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("memcpy_baseline", chunk_size),
            &reads,
            |b, reads| {
                let mut buf = BytesMut::with_capacity(READ_SIZE);
                b.iter(|| {
                    for read in reads {
                        buf.clear();
                        buf.extend_from_slice(read);
                        black_box(&buf);
                    }
                })
            },
        );
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let msgs = media_stream();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(payload_bytes(&msgs)));
    for chunk_size in [128u32, 4096] {
        let mut out = BytesMut::with_capacity(wire(&msgs, chunk_size).len());
        group.bench_function(BenchmarkId::new("stream", chunk_size), |b| {
            b.iter(|| {
                let mut enc = ChunkEncoder::new();
                enc.set_chunk_size(chunk_size);
                out.clear();
                encode_stream(&mut enc, &msgs, &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn shared(c: &mut Criterion) {
    let frame = vec![0x17u8; 20_000];
    let mut group = c.benchmark_group("encode_shared");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    for chunk_size in [4096u32, 65_536] {
        group.bench_function(BenchmarkId::new("video_20k", chunk_size), |b| {
            b.iter(|| encode_shared(9, black_box(123_456), black_box(&frame), chunk_size))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = decode, encode, shared
}
criterion_main!(benches);
