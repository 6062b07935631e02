//! Arbitrary bytes as a stored FLV and as a stored MP4: the indexers must refuse or index
//! them without panicking, and whatever index comes out must be usable: every frame lies
//! inside the file, and a start position anywhere maps to a frame of the index.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use shardcast::media::mp4::index_mp4;
use shardcast::media::vod_index::{VodIndex, index_flv};

fn check(index: VodIndex, len: u64) {
    for s in &index.samples {
        assert!(s.offset + u64::from(s.size) <= len);
    }
    for pos in [0, 1, index.duration_ms / 2, index.duration_ms, u32::MAX] {
        let i = index.start_at(pos);
        assert!(i <= index.samples.len());
    }
    if let Some(s) = index.samples.first() {
        let _ = index.payload(s, &[]);
    }
}

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(index) = index_flv(Cursor::new(data), len) {
        check(index, len);
    }
    if let Ok(index) = index_mp4(Cursor::new(data), len) {
        check(index, len);
    }
});
