//! A minimal H.264 (Baseline profile, CAVLC) bitstream writer for the synthetic source: a
//! real SPS and PPS, an IDR picture, P pictures, filler and SEI NAL units, all of which
//! ffmpeg decodes without complaint.
//!
//! The pictures are flat grey, which makes them tiny and easy to get right:
//! - an IDR slice codes every macroblock as `I_16x16` with DC prediction, no chroma and no
//!   luma AC (`mb_type` 3), `intra_chroma_pred_mode` DC and `mb_qp_delta` 0, and an empty
//!   Intra16x16 DC block (`coeff_token` "1"): 8 bits per macroblock. DC prediction without
//!   neighbours predicts 128, so the picture is mid-grey with no residual at all;
//! - a P slice skips every macroblock (one `mb_skip_run`), repeating the reference.
//!
//! The bitrate the load generator asks for is reached with filler-data NAL units (type 12),
//! which decoders discard. Every access unit may start with an SEI NAL unit carrying
//! `user_data_unregistered` (payload type 5), which decoders also ignore; the load
//! generator puts its sequence number and send time there (see `marker.rs`).

/// Width of the synthetic picture in pixels (16 macroblocks).
pub const WIDTH: u32 = 256;
/// Height of the synthetic picture in pixels (9 macroblocks).
pub const HEIGHT: u32 = 144;
const MB_COLS: u32 = WIDTH / 16;
const MB_ROWS: u32 = HEIGHT / 16;
const MB_COUNT: u32 = MB_COLS * MB_ROWS;
/// `log2_max_frame_num_minus4` = 0: frame_num counts modulo 16.
const MAX_FRAME_NUM: u32 = 16;

pub const PROFILE_BASELINE: u8 = 66;
/// constraint_set0 and constraint_set1: Constrained Baseline.
pub const CONSTRAINT_FLAGS: u8 = 0xC0;
/// Level 3.0: far above what 256x144 at 30 fps needs, so any frame rate we are asked for
/// stays within the level's limits.
pub const LEVEL: u8 = 30;

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_FILLER: u8 = 12;

/// Writes bits most significant first, with the Exp-Golomb codes H.264 uses.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    fn bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit && let Some(last) = self.bytes.last_mut() {
            *last |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn bits(&mut self, value: u32, count: u8) {
        for i in (0..count).rev() {
            self.bit(value >> i & 1 == 1);
        }
    }

    /// Unsigned Exp-Golomb, ue(v).
    fn ue(&mut self, value: u32) {
        let coded = u64::from(value) + 1;
        let len = 64 - coded.leading_zeros() as u8;
        for _ in 1..len {
            self.bit(false);
        }
        for i in (0..len).rev() {
            self.bit(coded >> i & 1 == 1);
        }
    }

    /// Signed Exp-Golomb, se(v).
    fn se(&mut self, value: i32) {
        let mapped = if value > 0 {
            (value as u32) * 2 - 1
        } else {
            value.unsigned_abs() * 2
        };
        self.ue(mapped);
    }

    /// `rbsp_trailing_bits`: a one, then zeros to the byte boundary.
    fn trailing(mut self) -> Vec<u8> {
        self.bit(true);
        self.used = 0;
        self.bytes
    }
}

/// Wraps an RBSP into a NAL unit: header byte, then the payload with emulation prevention
/// (a 0x03 after any two zero bytes followed by a byte of 0..=3).
pub fn nal_unit(nal_ref_idc: u8, nal_type: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    out.push((nal_ref_idc & 3) << 5 | (nal_type & 0x1F));
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// The sequence parameter set NAL unit.
pub fn sps() -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(u32::from(PROFILE_BASELINE), 8);
    w.bits(u32::from(CONSTRAINT_FLAGS), 8);
    w.bits(u32::from(LEVEL), 8);
    w.ue(0); // seq_parameter_set_id
    w.ue(0); // log2_max_frame_num_minus4
    w.ue(2); // pic_order_cnt_type 2: output order is decoding order
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    w.ue(MB_COLS - 1); // pic_width_in_mbs_minus1
    w.ue(MB_ROWS - 1); // pic_height_in_map_units_minus1
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    w.bit(false); // frame_cropping_flag
    w.bit(false); // vui_parameters_present_flag
    nal_unit(3, NAL_SPS, &w.trailing())
}

/// The picture parameter set NAL unit.
pub fn pps() -> Vec<u8> {
    let mut w = BitWriter::default();
    w.ue(0); // pic_parameter_set_id
    w.ue(0); // seq_parameter_set_id
    w.bit(false); // entropy_coding_mode_flag: CAVLC
    w.bit(false); // bottom_field_pic_order_in_frame_present_flag
    w.ue(0); // num_slice_groups_minus1
    w.ue(0); // num_ref_idx_l0_default_active_minus1
    w.ue(0); // num_ref_idx_l1_default_active_minus1
    w.bit(false); // weighted_pred_flag
    w.bits(0, 2); // weighted_bipred_idc
    w.se(0); // pic_init_qp_minus26
    w.se(0); // pic_init_qs_minus26
    w.se(0); // chroma_qp_index_offset
    w.bit(false); // deblocking_filter_control_present_flag
    w.bit(false); // constrained_intra_pred_flag
    w.bit(false); // redundant_pic_cnt_present_flag
    nal_unit(3, NAL_PPS, &w.trailing())
}

/// The `AVCDecoderConfigurationRecord` (avcC) an FLV AVC sequence header carries, with
/// 4-byte NAL unit lengths.
pub fn avc_decoder_configuration() -> Vec<u8> {
    let (sps, pps) = (sps(), pps());
    let mut out = vec![
        1,
        PROFILE_BASELINE,
        CONSTRAINT_FLAGS,
        LEVEL,
        0xFF, // 6 reserved bits, lengthSizeMinusOne = 3
        0xE1, // 3 reserved bits, one SPS
    ];
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(&sps);
    out.push(1);
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(&pps);
    out
}

/// The slice NAL unit of picture `index` within its GOP (0 is the IDR picture).
/// `idr_pic_id` must differ between consecutive IDR pictures.
pub fn picture(index_in_gop: u32, idr_pic_id: u32) -> Vec<u8> {
    let mut w = BitWriter::default();
    let idr = index_in_gop == 0;
    w.ue(0); // first_mb_in_slice
    w.ue(if idr { 7 } else { 5 }); // slice_type: I or P, every slice of the picture
    w.ue(0); // pic_parameter_set_id
    w.bits(index_in_gop % MAX_FRAME_NUM, 4); // frame_num
    if idr {
        w.ue(idr_pic_id % 65536);
    }
    if !idr {
        w.bit(false); // num_ref_idx_active_override_flag
        w.bit(false); // ref_pic_list_modification_flag_l0
    }
    // dec_ref_pic_marking (nal_ref_idc != 0)
    if idr {
        w.bit(false); // no_output_of_prior_pics_flag
        w.bit(false); // long_term_reference_flag
    } else {
        w.bit(false); // adaptive_ref_pic_marking_mode_flag
    }
    w.se(0); // slice_qp_delta
    if idr {
        for _ in 0..MB_COUNT {
            w.ue(3); // mb_type I_16x16_2_0_0: DC prediction, no chroma, no luma AC
            w.ue(0); // intra_chroma_pred_mode: DC
            w.se(0); // mb_qp_delta
            w.bit(true); // Intra16x16DCLevel coeff_token: TotalCoeff 0 (nC 0)
        }
    } else {
        w.ue(MB_COUNT); // mb_skip_run: every macroblock
    }
    let rbsp = w.trailing();
    if idr {
        nal_unit(3, NAL_IDR, &rbsp)
    } else {
        nal_unit(2, NAL_SLICE, &rbsp)
    }
}

/// A filler-data NAL unit of exactly `len` bytes (at least 2): 0xFF bytes then the
/// trailing bits.
pub fn filler(len: usize) -> Vec<u8> {
    let mut out = vec![0xFF; len.max(2)];
    out[0] = NAL_FILLER;
    if let Some(last) = out.last_mut() {
        *last = 0x80;
    }
    out
}

/// An SEI NAL unit holding one `user_data_unregistered` message: the 16-byte UUID, then
/// `data`. The caller keeps `data` free of two zero bytes in a row so no emulation
/// prevention byte changes its layout, and shorter than 255 - 16 bytes.
pub fn sei_user_data(uuid: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let size = 16 + data.len();
    debug_assert!(size < 255);
    let mut rbsp = Vec::with_capacity(size + 3);
    rbsp.push(5); // payloadType: user_data_unregistered
    rbsp.push(size as u8); // payloadSize
    rbsp.extend_from_slice(uuid);
    rbsp.extend_from_slice(data);
    rbsp.push(0x80); // rbsp_trailing_bits
    nal_unit(0, NAL_SEI, &rbsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes() {
        let mut w = BitWriter::default();
        w.ue(0); // 1
        w.ue(1); // 010
        w.ue(3); // 00100
        w.se(-1); // 011
        w.bits(0b1, 1);
        // 1 010 00100 011 1 -> 1010 0010 0011 1 + trailing 1 -> 0xA2 0x3C
        assert_eq!(w.trailing(), vec![0xA2, 0x3C]);
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            nal_unit(0, 6, &[0, 0, 1, 0, 0, 0]),
            vec![6, 0, 0, 3, 1, 0, 0, 3, 0]
        );
    }

    #[test]
    fn idr_macroblocks_take_one_byte_each() {
        let idr = picture(0, 0);
        assert!(idr.len() > MB_COUNT as usize && idr.len() < MB_COUNT as usize + 12);
        assert_eq!(idr[0] & 0x1F, NAL_IDR);
        let p = picture(1, 0);
        assert!(p.len() < 12, "an all-skip P slice is a few bytes");
    }
}
