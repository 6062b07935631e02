//! FLV files: reading pre-recorded streams the server plays out, and writing what a viewer
//! received (tests save streams this way to compare or inspect them with other tools).
//!
//! An FLV file is a 9-byte header ("FLV", version, audio/video flags, header length), then a
//! 4-byte `PreviousTagSize0` of zero, then tags, each followed by a 4-byte back pointer
//! holding the tag's total size. A tag is an 11-byte header (type, 24-bit data size, 24-bit
//! timestamp plus an 8-bit extension holding the timestamp's top bits, 24-bit stream id that
//! is always zero) and then the data, which is exactly an RTMP audio/video/data message
//! payload. That shared tag layout is also how aggregate messages pack their sub-messages,
//! so `rtmp::aggregate` reuses [`FlvTagHeader`].
//!
//! [`FlvReader`] works on a whole file held in a `Bytes`; [`FlvStreamDecoder`] takes the
//! same bytes as they arrive, for files too big to load or FLV received over a socket.
//! Either way every tag payload handed out is a slice of the input buffer, not a copy.
//! Input may be truncated (a recording cut short) or crafted, so both check every length
//! against what is really there and report an error instead of panicking or reading past
//! the end.

use std::io::{self, Write};

use bytes::{Buf, Bytes, BytesMut};

/// Tag type of an audio tag (the same number as the RTMP audio message type).
pub const TAG_TYPE_AUDIO: u8 = 8;
/// Tag type of a video tag (the same number as the RTMP video message type).
pub const TAG_TYPE_VIDEO: u8 = 9;
/// Tag type of a script data tag such as `onMetaData` (RTMP AMF0 data message type).
pub const TAG_TYPE_SCRIPT_DATA: u8 = 18;

/// Length of a tag header, in bytes.
pub const TAG_HEADER_LEN: usize = 11;
/// Length of the back pointer (`PreviousTagSize`) that follows every tag.
pub const BACK_POINTER_LEN: usize = 4;
/// The largest data size a tag header can express (24 bits).
pub const MAX_TAG_DATA_LEN: usize = 0x00FF_FFFF;

const SIGNATURE: &[u8; 3] = b"FLV";
const FILE_HEADER_LEN: usize = 9;
const FLAG_AUDIO: u8 = 0x04;
const FLAG_VIDEO: u8 = 0x01;

/// The flags of an FLV file header. Many writers set them carelessly, so treat them as a
/// hint, not a promise about which tags follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlvHeader {
    pub has_audio: bool,
    pub has_video: bool,
}

/// One FLV tag: the same type id, timestamp and payload as the RTMP message it stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script data; kept raw (including the reserved and filter bits)
    /// so that a read-then-write round trip is lossless.
    pub tag_type: u8,
    /// Milliseconds; all 32 bits, the extension byte already folded in.
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Why an FLV file or buffer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("not an FLV file: the signature is not \"FLV\"")]
    BadSignature,
    #[error("FLV file header truncated: {available} of {needed} bytes")]
    TruncatedFileHeader { needed: usize, available: usize },
    #[error(
        "FLV header length {declared} is below 9 or past the end of the file ({file_len} bytes)"
    )]
    BadHeaderLength { declared: u32, file_len: usize },
    #[error("FLV header length {declared} is below the minimum of 9")]
    HeaderLengthBelowMinimum { declared: u32 },
    #[error("FLV tag header at offset {offset} truncated: {available} of 11 bytes")]
    TruncatedTagHeader { offset: usize, available: usize },
    #[error(
        "FLV tag at offset {offset} declares {declared} data bytes but only {available} remain"
    )]
    TruncatedTagData {
        offset: usize,
        declared: usize,
        available: usize,
    },
}

/// The fields of an 11-byte tag header, as used by FLV files and aggregate messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlvTagHeader {
    pub tag_type: u8,
    /// Length of the data that follows the header (at most [`MAX_TAG_DATA_LEN`]).
    pub data_len: usize,
    /// All 32 bits: the low 24 from the timestamp field, the top 8 from its extension byte.
    pub timestamp: u32,
    /// Always 0 in files; kept so a parser can report what it saw.
    pub stream_id: u32,
}

impl FlvTagHeader {
    /// Reads a tag header from the start of `bytes`, or `None` if fewer than 11 bytes remain.
    pub fn parse(bytes: &[u8]) -> Option<FlvTagHeader> {
        let header: &[u8; TAG_HEADER_LEN] = bytes.get(..TAG_HEADER_LEN)?.try_into().ok()?;
        let [tag_type, s0, s1, s2, t0, t1, t2, t_ext, i0, i1, i2] = *header;
        Some(FlvTagHeader {
            tag_type,
            data_len: u32::from_be_bytes([0, s0, s1, s2]) as usize,
            timestamp: u32::from_be_bytes([t_ext, t0, t1, t2]),
            stream_id: u32::from_be_bytes([0, i0, i1, i2]),
        })
    }

    /// The 11 bytes of this header. `data_len` and `stream_id` are truncated to 24 bits, so
    /// check `data_len` against [`MAX_TAG_DATA_LEN`] first.
    pub fn encode(&self) -> [u8; TAG_HEADER_LEN] {
        let [_, s0, s1, s2] = (self.data_len as u32).to_be_bytes();
        let [t_ext, t0, t1, t2] = self.timestamp.to_be_bytes();
        let [_, i0, i1, i2] = self.stream_id.to_be_bytes();
        [self.tag_type, s0, s1, s2, t0, t1, t2, t_ext, i0, i1, i2]
    }
}

/// Reads the tags of an FLV file held in memory. Create it with [`FlvReader::new`], which
/// also returns the file header, then iterate: each item is a tag, or an error after which
/// iteration ends.
#[derive(Debug, Clone)]
pub struct FlvReader {
    data: Bytes,
    /// Offset of the next tag header.
    position: usize,
    /// Set once an error has been yielded, so the iterator stays ended.
    failed: bool,
}

impl FlvReader {
    /// Parses the file header and positions the reader on the first tag.
    pub fn new(data: Bytes) -> Result<(FlvHeader, FlvReader), FlvError> {
        let header_bytes: &[u8; FILE_HEADER_LEN] = data
            .get(..FILE_HEADER_LEN)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(FlvError::TruncatedFileHeader {
                needed: FILE_HEADER_LEN,
                available: data.len(),
            })?;
        let [s0, s1, s2, _version, flags, o0, o1, o2, o3] = *header_bytes;
        if [s0, s1, s2] != *SIGNATURE {
            return Err(FlvError::BadSignature);
        }
        // The version byte is not checked: only version 1 exists, and refusing a file over
        // it would help no one.
        let header = FlvHeader {
            has_audio: flags & FLAG_AUDIO != 0,
            has_video: flags & FLAG_VIDEO != 0,
        };
        let declared = u32::from_be_bytes([o0, o1, o2, o3]);
        let header_len = usize::try_from(declared).unwrap_or(usize::MAX);
        if header_len < FILE_HEADER_LEN || header_len > data.len() {
            return Err(FlvError::BadHeaderLength {
                declared,
                file_len: data.len(),
            });
        }
        // PreviousTagSize0 follows the header. Its value carries no information, and a file
        // that ends right here (or inside it) simply has no tags.
        let position = header_len.saturating_add(BACK_POINTER_LEN).min(data.len());
        Ok((
            header,
            FlvReader {
                data,
                position,
                failed: false,
            },
        ))
    }

    /// Offset in the file of the next tag to be read; useful in error reports and to resume.
    pub fn position(&self) -> usize {
        self.position
    }

    fn read_tag(&mut self) -> Result<FlvTag, FlvError> {
        let offset = self.position;
        let rest = self.data.get(offset..).unwrap_or_default();
        let header = FlvTagHeader::parse(rest).ok_or(FlvError::TruncatedTagHeader {
            offset,
            available: rest.len(),
        })?;
        let data_start = offset.saturating_add(TAG_HEADER_LEN);
        let available = self.data.len().saturating_sub(data_start);
        if header.data_len > available {
            return Err(FlvError::TruncatedTagData {
                offset,
                declared: header.data_len,
                available,
            });
        }
        let data_end = data_start + header.data_len;
        let payload = self.data.slice(data_start..data_end);
        // The back pointer is redundant (it repeats the tag's size) and writers get it wrong
        // often enough that players ignore it; a file cut off inside the last one still gave
        // us a complete tag.
        self.position = data_end
            .saturating_add(BACK_POINTER_LEN)
            .min(self.data.len());
        Ok(FlvTag {
            tag_type: header.tag_type,
            timestamp: header.timestamp,
            payload,
        })
    }
}

impl Iterator for FlvReader {
    type Item = Result<FlvTag, FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.data.len() {
            return None;
        }
        let item = self.read_tag();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Writes an FLV file: the header and `PreviousTagSize0` on creation, then each tag with its
/// back pointer. Writes go straight to `W`, so wrap a file in a `BufWriter`.
#[derive(Debug)]
pub struct FlvWriter<W: Write> {
    writer: W,
}

impl<W: Write> FlvWriter<W> {
    /// Writes the file header and returns a writer ready for tags.
    pub fn new(mut writer: W, header: FlvHeader) -> io::Result<Self> {
        let mut flags = 0;
        if header.has_audio {
            flags |= FLAG_AUDIO;
        }
        if header.has_video {
            flags |= FLAG_VIDEO;
        }
        let [s0, s1, s2] = *SIGNATURE;
        let [l0, l1, l2, l3] = (FILE_HEADER_LEN as u32).to_be_bytes();
        writer.write_all(&[s0, s1, s2, 1, flags, l0, l1, l2, l3, 0, 0, 0, 0])?;
        Ok(FlvWriter { writer })
    }

    /// Writes one tag and its back pointer. Fails with `InvalidInput`, writing nothing, if
    /// the payload is longer than a tag can describe ([`MAX_TAG_DATA_LEN`]).
    pub fn write_tag(&mut self, tag: &FlvTag) -> io::Result<()> {
        if tag.payload.len() > MAX_TAG_DATA_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "FLV tag payload of {} bytes exceeds the 24-bit limit",
                    tag.payload.len()
                ),
            ));
        }
        let header = FlvTagHeader {
            tag_type: tag.tag_type,
            data_len: tag.payload.len(),
            timestamp: tag.timestamp,
            stream_id: 0,
        };
        // Cannot overflow: the payload fits in 24 bits.
        let back_pointer = (TAG_HEADER_LEN + tag.payload.len()) as u32;
        self.writer.write_all(&header.encode())?;
        self.writer.write_all(&tag.payload)?;
        self.writer.write_all(&back_pointer.to_be_bytes())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// Gives back the underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.writer
    }
}

/// Decodes FLV that arrives in pieces (a file read block by block, an HTTP-FLV body) with
/// the same results as [`FlvReader`], without holding the whole file.
///
/// Append what arrives to a `BytesMut` and call [`FlvStreamDecoder::decode`] until it
/// returns `Ok(None)` (more bytes needed). Tags are split off the front of the buffer and
/// frozen, so payloads are not copied. A tag is handed out once its header and data are
/// buffered; its back pointer is skipped as it arrives. The most a caller ever has to
/// buffer is one tag: 11 + 2^24 - 1 bytes, bounded by the format itself.
#[derive(Debug, Clone, Default)]
pub struct FlvStreamDecoder {
    header: Option<FlvHeader>,
    /// Bytes still to be dropped before the next tag header: the rest of an oversized file
    /// header, `PreviousTagSize0`, or a back pointer. Skipped as they arrive, so a huge
    /// declared header length costs no memory.
    skip_remaining: u64,
}

impl FlvStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The file header, once it has been decoded.
    pub fn header(&self) -> Option<FlvHeader> {
        self.header
    }

    /// Consumes the file header and any complete tag from the front of `buffer`. Returns
    /// the tag, or `Ok(None)` when more bytes are needed. After an error the stream is not
    /// FLV (or is corrupt) and should be abandoned. At the end of the input, bytes left in
    /// `buffer` are a tag that was cut short.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<FlvTag>, FlvError> {
        if self.header.is_none() {
            let Some(header_bytes) = buffer
                .get(..FILE_HEADER_LEN)
                .and_then(|bytes| <[u8; FILE_HEADER_LEN]>::try_from(bytes).ok())
            else {
                return Ok(None);
            };
            let [s0, s1, s2, _version, flags, o0, o1, o2, o3] = header_bytes;
            if [s0, s1, s2] != *SIGNATURE {
                return Err(FlvError::BadSignature);
            }
            let declared = u32::from_be_bytes([o0, o1, o2, o3]);
            if declared < FILE_HEADER_LEN as u32 {
                return Err(FlvError::HeaderLengthBelowMinimum { declared });
            }
            buffer.advance(FILE_HEADER_LEN);
            self.header = Some(FlvHeader {
                has_audio: flags & FLAG_AUDIO != 0,
                has_video: flags & FLAG_VIDEO != 0,
            });
            self.skip_remaining =
                u64::from(declared) - FILE_HEADER_LEN as u64 + BACK_POINTER_LEN as u64;
        }

        if self.skip_remaining > 0 {
            let skip = usize::try_from(self.skip_remaining)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            buffer.advance(skip);
            self.skip_remaining -= skip as u64;
            if self.skip_remaining > 0 {
                return Ok(None);
            }
        }

        let Some(header) = FlvTagHeader::parse(buffer) else {
            return Ok(None);
        };
        let tag_len = TAG_HEADER_LEN + header.data_len;
        if buffer.len() < tag_len {
            // No reserve for the declared size: a peer could declare 16 MiB and send 11
            // bytes. The buffer grows only with bytes that really arrive.
            return Ok(None);
        }
        let mut tag_bytes = buffer.split_to(tag_len);
        tag_bytes.advance(TAG_HEADER_LEN);
        self.skip_remaining = BACK_POINTER_LEN as u64;
        Ok(Some(FlvTag {
            tag_type: header.tag_type,
            timestamp: header.timestamp,
            payload: tag_bytes.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(tag_type: u8, timestamp: u32, payload: &'static [u8]) -> FlvTag {
        FlvTag {
            tag_type,
            timestamp,
            payload: Bytes::from_static(payload),
        }
    }

    fn write_file(header: FlvHeader, tags: &[FlvTag]) -> Vec<u8> {
        let mut writer = FlvWriter::new(Vec::new(), header).unwrap();
        for tag in tags {
            writer.write_tag(tag).unwrap();
        }
        writer.into_inner()
    }

    #[test]
    fn header_bytes_are_standard() {
        let file = write_file(
            FlvHeader {
                has_audio: true,
                has_video: true,
            },
            &[],
        );
        assert_eq!(file, b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
    }

    #[test]
    fn tag_bytes_are_standard() {
        let file = write_file(
            FlvHeader::default(),
            &[tag(TAG_TYPE_VIDEO, 0x1234_5678, b"\x17\x01")],
        );
        let tag_bytes = &file[13..];
        assert_eq!(
            tag_bytes,
            b"\x09\x00\x00\x02\x34\x56\x78\x12\x00\x00\x00\x17\x01\x00\x00\x00\x0D"
        );
    }

    #[test]
    fn write_then_read_round_trip() {
        let header = FlvHeader {
            has_audio: true,
            has_video: false,
        };
        let tags = vec![
            tag(TAG_TYPE_SCRIPT_DATA, 0, b"\x02\x00\x0AonMetaData"),
            tag(TAG_TYPE_AUDIO, 0, b"\xAF\x00\x12\x10"),
            tag(TAG_TYPE_VIDEO, 40, b"\x17\x01\x00\x00\x00data"),
            tag(TAG_TYPE_AUDIO, 0xFF00_0001, b""),
        ];
        let file = Bytes::from(write_file(header, &tags));
        let (read_header, reader) = FlvReader::new(file.clone()).unwrap();
        assert_eq!(read_header, header);
        let read: Vec<FlvTag> = reader.map(Result::unwrap).collect();
        assert_eq!(read, tags);
        // Zero copy: each payload points into the file buffer.
        let file_range = file.as_ptr_range();
        assert!(file_range.contains(&read[2].payload.as_ptr()));
    }

    #[test]
    fn rejects_bad_file_headers() {
        assert_eq!(
            FlvReader::new(Bytes::from_static(b"FLV\x01")).unwrap_err(),
            FlvError::TruncatedFileHeader {
                needed: 9,
                available: 4
            }
        );
        assert_eq!(
            FlvReader::new(Bytes::from_static(b"FLX\x01\x05\x00\x00\x00\x09")).unwrap_err(),
            FlvError::BadSignature
        );
        assert!(matches!(
            FlvReader::new(Bytes::from_static(b"FLV\x01\x05\x00\x00\x00\x08")),
            Err(FlvError::BadHeaderLength { declared: 8, .. })
        ));
        assert!(matches!(
            FlvReader::new(Bytes::from_static(b"FLV\x01\x05\xFF\xFF\xFF\xFF")),
            Err(FlvError::BadHeaderLength { .. })
        ));
    }

    #[test]
    fn honours_a_longer_header() {
        // Header length 12: three extra bytes to skip before PreviousTagSize0.
        let mut file = b"FLV\x01\x01\x00\x00\x00\x0C...\x00\x00\x00\x00".to_vec();
        file.extend_from_slice(b"\x08\x00\x00\x01\x00\x00\x05\x00\x00\x00\x00\x2F\x00\x00\x00\x0C");
        let (header, reader) = FlvReader::new(Bytes::from(file)).unwrap();
        assert!(header.has_video && !header.has_audio);
        let tags: Vec<_> = reader.collect();
        assert_eq!(tags, vec![Ok(tag(TAG_TYPE_AUDIO, 5, b"\x2F"))]);
    }

    #[test]
    fn header_only_file_has_no_tags() {
        let (_, mut reader) =
            FlvReader::new(Bytes::from_static(b"FLV\x01\x05\x00\x00\x00\x09")).unwrap();
        assert!(reader.next().is_none());
    }

    #[test]
    fn truncated_last_tag_ends_with_an_error() {
        let tags = [
            tag(TAG_TYPE_AUDIO, 0, b"\xAF\x01abc"),
            tag(TAG_TYPE_VIDEO, 33, b"\x27\x01\x00\x00\x00xyz"),
        ];
        let full = write_file(FlvHeader::default(), &tags);

        // Cut inside the second tag's data.
        let cut = Bytes::from(full[..full.len() - 6].to_vec());
        let (_, mut reader) = FlvReader::new(cut).unwrap();
        assert_eq!(reader.next(), Some(Ok(tags[0].clone())));
        assert!(matches!(
            reader.next(),
            Some(Err(FlvError::TruncatedTagData {
                declared: 8,
                available: 6,
                ..
            }))
        ));
        assert_eq!(reader.next(), None);

        // Cut inside the second tag's header.
        let first_tag_end = 13 + TAG_HEADER_LEN + 5 + BACK_POINTER_LEN;
        let cut = Bytes::from(full[..first_tag_end + 4].to_vec());
        let (_, mut reader) = FlvReader::new(cut).unwrap();
        assert!(reader.next().unwrap().is_ok());
        assert_eq!(
            reader.next(),
            Some(Err(FlvError::TruncatedTagHeader {
                offset: first_tag_end,
                available: 4
            }))
        );
        assert_eq!(reader.next(), None);

        // Cut inside the last back pointer: both tags are still complete.
        let cut = Bytes::from(full[..full.len() - 2].to_vec());
        let (_, reader) = FlvReader::new(cut).unwrap();
        let read: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(read, tags);
    }

    #[test]
    fn writer_refuses_oversized_payloads() {
        let mut writer = FlvWriter::new(Vec::new(), FlvHeader::default()).unwrap();
        let big = FlvTag {
            tag_type: TAG_TYPE_VIDEO,
            timestamp: 0,
            payload: Bytes::from(vec![0; MAX_TAG_DATA_LEN + 1]),
        };
        let error = writer.write_tag(&big).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            writer.into_inner().len(),
            13,
            "nothing written for the refused tag"
        );
    }

    #[test]
    fn tag_header_parse_and_encode_agree() {
        let header = FlvTagHeader {
            tag_type: 9,
            data_len: 0x01_0203,
            timestamp: 0xAABB_CCDD,
            stream_id: 0x00_0102,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [9, 1, 2, 3, 0xBB, 0xCC, 0xDD, 0xAA, 0, 1, 2]);
        assert_eq!(FlvTagHeader::parse(&bytes), Some(header));
        assert_eq!(FlvTagHeader::parse(&bytes[..10]), None);
    }

    /// Feeds `file` to a stream decoder in pieces of the given sizes (cycled), collecting
    /// every tag until the input is exhausted.
    fn decode_in_pieces(file: &[u8], piece_sizes: &[usize]) -> Result<Vec<FlvTag>, FlvError> {
        let mut decoder = FlvStreamDecoder::new();
        let mut buffer = BytesMut::new();
        let mut tags = Vec::new();
        let mut rest = file;
        let mut sizes = piece_sizes.iter().copied().cycle();
        loop {
            while let Some(tag) = decoder.decode(&mut buffer)? {
                tags.push(tag);
            }
            if rest.is_empty() {
                return Ok(tags);
            }
            let size = sizes.next().unwrap_or(1).clamp(1, rest.len());
            let (piece, remainder) = rest.split_at(size);
            buffer.extend_from_slice(piece);
            rest = remainder;
        }
    }

    #[test]
    fn stream_decoder_matches_the_reader_byte_by_byte() {
        let tags = vec![
            tag(TAG_TYPE_SCRIPT_DATA, 0, b"meta"),
            tag(TAG_TYPE_VIDEO, 0, b"\x17\x00config"),
            tag(TAG_TYPE_VIDEO, 0x0100_0000, b""),
            tag(TAG_TYPE_AUDIO, 7, b"\xAF\x01aac"),
        ];
        let file = write_file(FlvHeader::default(), &tags);
        assert_eq!(decode_in_pieces(&file, &[1]).unwrap(), tags);
        assert_eq!(decode_in_pieces(&file, &[file.len()]).unwrap(), tags);
    }

    #[test]
    fn stream_decoder_reports_its_header_and_skips_a_long_one() {
        let mut decoder = FlvStreamDecoder::new();
        let mut buffer = BytesMut::from(&b"FLV\x01\x04\x00\x00\x00\x0Bxy\x00\x00"[..]);
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        assert_eq!(
            decoder.header(),
            Some(FlvHeader {
                has_audio: true,
                has_video: false
            })
        );
        buffer.extend_from_slice(b"\x00\x00\x08\x00\x00\x01\x00\x00\x02\x00\x00\x00\x00\x2F");
        assert_eq!(
            decoder.decode(&mut buffer),
            Ok(Some(tag(TAG_TYPE_AUDIO, 2, b"\x2F")))
        );
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
    }

    #[test]
    fn stream_decoder_rejects_non_flv() {
        let mut decoder = FlvStreamDecoder::new();
        let mut short = BytesMut::from(&b"FLV"[..]);
        assert_eq!(
            decoder.decode(&mut short),
            Ok(None),
            "waits for the whole header"
        );
        let mut buffer = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(decoder.decode(&mut buffer), Err(FlvError::BadSignature));
        let mut buffer = BytesMut::from(&b"FLV\x01\x05\x00\x00\x00\x00"[..]);
        assert_eq!(
            FlvStreamDecoder::new().decode(&mut buffer),
            Err(FlvError::HeaderLengthBelowMinimum { declared: 0 })
        );
    }

    fn arbitrary_tag() -> impl Strategy<Value = FlvTag> {
        (
            any::<u8>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(tag_type, timestamp, payload)| FlvTag {
                tag_type,
                timestamp,
                payload: Bytes::from(payload),
            })
    }

    proptest! {
        #[test]
        fn round_trip_random_tags(
            has_audio in any::<bool>(),
            has_video in any::<bool>(),
            tags in proptest::collection::vec(arbitrary_tag(), 0..20),
        ) {
            let header = FlvHeader { has_audio, has_video };
            let file = Bytes::from(write_file(header, &tags));
            let (read_header, reader) = FlvReader::new(file).unwrap();
            prop_assert_eq!(read_header, header);
            let read: Vec<FlvTag> = reader.collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(read, tags);
        }

        #[test]
        fn stream_decoder_matches_the_reader_in_any_pieces(
            tags in proptest::collection::vec(arbitrary_tag(), 0..10),
            piece_sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let file = write_file(FlvHeader::default(), &tags);
            prop_assert_eq!(decode_in_pieces(&file, &piece_sizes).unwrap(), tags);
        }

        #[test]
        fn stream_decoder_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            piece_sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut file = b"FLV\x01\x05\x00\x00\x00\x09".to_vec();
            file.extend_from_slice(&bytes);
            let _ = decode_in_pieces(&file, &piece_sizes);
            let _ = decode_in_pieces(&bytes, &piece_sizes);
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok((_, reader)) = FlvReader::new(Bytes::from(bytes.clone())) {
                // Each item consumes at least one byte or ends iteration, so this terminates.
                for item in reader.take(bytes.len() + 1) {
                    let _ = item;
                }
            }
        }

        #[test]
        fn reader_never_panics_after_a_valid_header(
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut file = b"FLV\x01\x05\x00\x00\x00\x09".to_vec();
            file.extend_from_slice(&body);
            let (_, reader) = FlvReader::new(Bytes::from(file)).unwrap();
            let mut items = 0usize;
            for item in reader {
                items += 1;
                prop_assert!(items <= body.len() + 1, "the reader must make progress");
                let _ = item;
            }
        }
    }
}
