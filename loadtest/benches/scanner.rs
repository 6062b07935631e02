//! Throughput of a counting viewer's [`ChunkScanner`] (`src/scanner.rs`), the load
//! generator's per-byte cost once thousands of viewers play.
//!
//! The stream is what the relay sends a viewer: ten seconds of a 2.5 Mbit/s stream (30 fps
//! video of about 10 KB, an 80 KB keyframe every 2 s, 47 audio messages a second), shared
//! encodings at the relay's chunk size, with a Set Chunk Size first and a ping each second.
//! It is scanned in reads of 16 KiB (an every-frame viewer's `recv`) and 64 KiB (a batch
//! reader's), at chunk size 4096 (the relay's default) and 128 (the most headers per byte).
//! Throughput counts wire bytes.
//!
//! `loadtest` is a binary crate, so the scanner module is compiled in here by path; it
//! depends on nothing else of the crate.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shardcast::rtmp::chunk::{ChunkEncoder, encode_shared};
use shardcast::rtmp::control::{ControlMessage, UserControlEvent};
use shardcast::rtmp::message::csid;

#[allow(dead_code, unused_imports)]
#[path = "../src/scanner.rs"]
mod scanner;

use scanner::ChunkScanner;

/// Deterministic filler, so payloads are not all one byte.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// The wire bytes a viewer receives over ten seconds, and how many messages they hold.
fn viewer_stream(chunk_size: u32) -> (Vec<u8>, usize) {
    let mut out = BytesMut::new();
    let mut enc = ChunkEncoder::new();
    let mut messages = 0;
    let control = |enc: &mut ChunkEncoder, out: &mut BytesMut, c: ControlMessage| {
        enc.encode(csid::PROTOCOL_CONTROL, &c.to_message(), out);
    };
    control(&mut enc, &mut out, ControlMessage::SetChunkSize(chunk_size));
    enc.set_chunk_size(chunk_size);
    messages += 1;
    let (mut video_ms, mut audio_ms) = (0f64, 0f64);
    let (mut frame, mut sample) = (0u32, 0u32);
    while video_ms < 10_000.0 {
        if audio_ms <= video_ms {
            let p = payload(340, 1_000_000 + sample);
            out.extend_from_slice(&encode_shared(8, audio_ms as u32, &p, chunk_size));
            audio_ms += 1024.0 / 48.0;
            sample += 1;
        } else {
            let len = if frame % 60 == 0 { 80_000 } else { 10_000 };
            let p = payload(len, frame);
            out.extend_from_slice(&encode_shared(9, video_ms as u32, &p, chunk_size));
            if frame % 30 == 0 {
                let ping = UserControlEvent::PingRequest(video_ms as u32);
                control(&mut enc, &mut out, ControlMessage::UserControl(ping));
                messages += 1;
            }
            video_ms += 1000.0 / 30.0;
            frame += 1;
        }
        messages += 1;
    }
    (out.to_vec(), messages)
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    for (chunk_size, read_size) in [(4096u32, 16 * 1024), (4096, 64 * 1024), (128, 16 * 1024)] {
        let (wire, messages) = viewer_stream(chunk_size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let id = BenchmarkId::new(format!("chunk_{chunk_size}"), format!("read_{read_size}"));
        group.bench_with_input(id, &wire, |b, wire| {
            b.iter(|| {
                let mut scanner = ChunkScanner::default();
                let mut count = 0;
                let mut sum = 0u32;
                for read in wire.chunks(read_size) {
                    scanner
                        .scan(black_box(read), |m| {
                            count += 1;
                            sum = sum.wrapping_add(m.len + u32::from(m.prefix[0]));
                        })
                        .unwrap();
                }
                assert_eq!(count, messages);
                black_box(sum)
            })
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
    targets = scan
}
criterion_main!(benches);
