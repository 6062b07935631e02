//! The marker every video message a publisher sends carries, so viewers can detect loss and
//! reordering and measure relay latency.
//!
//! The marker is an H.264 SEI NAL unit (`user_data_unregistered`, which decoders ignore)
//! placed first in the access unit, right after the 5-byte FLV AVC header. Its UUID is the
//! ASCII text `shardcast-load:1`, and its 48 data bytes are ASCII hex:
//!
//! | bytes | field |
//! | --- | --- |
//! | 16 | sequence number of the video message within its stream, from 0 |
//! | 16 | the publisher's send time, microseconds on the process clock (`clock.rs`) |
//! | 8 | length of the whole message payload |
//! | 8 | FNV-1a checksum of the payload after the SEI NAL unit |
//!
//! Hex text never holds two zero bytes in a row, so no emulation prevention byte can shift
//! the fields, and the marker stays within the first [`MARKER_SEARCH_LEN`] bytes of the
//! payload: a viewer finds it from a short prefix without receiving the rest in one piece.

use bytes::{BufMut, Bytes, BytesMut};

use crate::h264;

pub const MARKER_UUID: &[u8; 16] = b"shardcast-load:1";
const DATA_LEN: usize = 48;
/// How far into a payload a viewer looks for the marker: the FLV header (5), a NAL length
/// (up to 4), the SEI header (3) and the UUID and data (64), with room to spare.
pub const MARKER_SEARCH_LEN: usize = 96;

/// What a viewer reads from a video message's marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub seq: u64,
    pub send_us: u64,
    pub payload_len: u32,
    pub checksum: u32,
}

/// FNV-1a, 32 bits: cheap, and enough to notice bytes that changed on the way.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811C_9DC5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Builds an AVC NALU video message: the 5-byte FLV header `flv_header` (frame type and
/// codec, packet type 1, composition time), the marker SEI with a `nal_length_size`-byte
/// length, then `rest`, the access unit's own length-prefixed NAL units.
pub fn stamp_avc(
    flv_header: [u8; 5],
    nal_length_size: usize,
    seq: u64,
    send_us: u64,
    rest: &[u8],
) -> Bytes {
    let sei_len = 3 + 16 + DATA_LEN + 1;
    let total = 5 + nal_length_size + sei_len + rest.len();
    let text = format!(
        "{seq:016x}{send_us:016x}{:08x}{:08x}",
        total as u32,
        checksum(rest)
    );
    let sei = h264::sei_user_data(MARKER_UUID, text.as_bytes());
    debug_assert_eq!(sei.len(), sei_len);
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(&flv_header);
    let len_bytes = (sei.len() as u32).to_be_bytes();
    out.put_slice(&len_bytes[4 - nal_length_size..]);
    out.put_slice(&sei);
    out.put_slice(rest);
    out.freeze()
}

/// Finds and reads the marker in the first bytes of a video payload.
pub fn find(prefix: &[u8]) -> Option<Marker> {
    let window = &prefix[..prefix.len().min(MARKER_SEARCH_LEN)];
    let at = window
        .windows(MARKER_UUID.len())
        .position(|w| w == MARKER_UUID)?;
    let data = prefix.get(at + 16..at + 16 + DATA_LEN)?;
    let hex = |range: std::ops::Range<usize>| {
        std::str::from_utf8(data.get(range)?)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    };
    Some(Marker {
        seq: hex(0..16)?,
        send_us: hex(16..32)?,
        payload_len: hex(32..40)? as u32,
        checksum: hex(40..48)? as u32,
    })
}

/// Where the checksummed part of a stamped payload starts: just after the marker's SEI.
pub fn checked_part(payload: &[u8]) -> Option<&[u8]> {
    let window = &payload[..payload.len().min(MARKER_SEARCH_LEN)];
    let at = window
        .windows(MARKER_UUID.len())
        .position(|w| w == MARKER_UUID)?;
    // UUID, data, then the SEI's trailing-bits byte.
    payload.get(at + 16 + DATA_LEN + 1..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_and_find_round_trip() {
        let rest = [0, 0, 0, 3, 0x65, 0x88, 0x80];
        for len_size in [1, 2, 4] {
            let payload = stamp_avc([0x17, 1, 0, 0, 0], len_size, 42, 1_234_567, &rest);
            let marker = find(&payload).unwrap();
            assert_eq!(marker.seq, 42);
            assert_eq!(marker.send_us, 1_234_567);
            assert_eq!(marker.payload_len as usize, payload.len());
            assert_eq!(checked_part(&payload).unwrap(), &rest);
            assert_eq!(marker.checksum, checksum(&rest));
        }
    }

    #[test]
    fn no_marker_in_other_payloads() {
        assert_eq!(find(&[0x17, 1, 0, 0, 0, 0, 0, 0, 5]), None);
    }
}
