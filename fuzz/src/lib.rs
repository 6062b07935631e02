//! Helpers the fuzz targets share: turning one fuzzer input into a byte stream cut at
//! input-chosen points, the way reads from a socket cut it.

/// Splits `data` into the pieces a socket might deliver. The first byte picks the cutting:
/// 0 feeds everything at once; otherwise it seeds a small generator and picks the largest
/// piece (1 to 2048 bytes), so the same stream is tried at many different splits.
pub fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let Some((&mode, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode == 0 {
        return vec![rest];
    }
    let max = 1usize << (mode % 12);
    let mut state = u32::from(mode) | 0x9E37_0000;
    let mut out = Vec::new();
    while !rest.is_empty() {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = 1 + (state as usize % max);
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}
