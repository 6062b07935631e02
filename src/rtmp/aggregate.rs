//! Splitting aggregate messages (RTMP message type 22) into the audio, video and data
//! messages they bundle.
//!
//! Some publishers and origin servers batch several media messages into one aggregate
//! message to save chunk overhead. Viewers and the GOP cache deal in individual messages,
//! so the relay unpacks aggregates on arrival. The payload is a run of FLV tags (see
//! `media::flv`): an 11-byte tag header, the sub-message's data, and a 4-byte back pointer.
//!
//! Timestamps: the sub-messages carry their own timestamps, but in the publisher's clock
//! rather than the stream's. The first sub-message is defined to sit at the aggregate's own
//! timestamp, and the others keep their distance from it, so each part's timestamp is
//! `aggregate timestamp + (sub timestamp - first sub timestamp)`, in wrapping arithmetic
//! like every RTMP timestamp.
//!
//! Parts are `Bytes::slice`s of the aggregate payload: unpacking copies no media. A
//! publisher controls every byte here, so each declared length is checked against what is
//! really left before slicing.

use bytes::Bytes;

use crate::media::flv::{BACK_POINTER_LEN, FlvTagHeader, TAG_HEADER_LEN};

/// One message unpacked from an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregatePart {
    /// The RTMP message type of the part (8 audio, 9 video, 18 data, in practice), taken
    /// verbatim from the tag header: the caller decides what to do with anything else.
    pub type_id: u8,
    /// Already rebased onto the aggregate message's timestamp.
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Why an aggregate message could not be unpacked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("aggregate sub-message header at offset {offset} truncated: {available} of 11 bytes")]
    TruncatedTagHeader { offset: usize, available: usize },
    #[error(
        "aggregate sub-message at offset {offset} declares {declared} data bytes but only {available} remain"
    )]
    TagOverrunsPayload {
        offset: usize,
        declared: usize,
        available: usize,
    },
}

/// Iterator over the parts of an aggregate message; see [`aggregate_parts`]. After an error
/// it yields nothing more, because once one length is wrong nothing after it can be trusted.
#[derive(Debug, Clone)]
pub struct AggregateParts {
    payload: Bytes,
    aggregate_timestamp: u32,
    /// The first sub-message's own timestamp, once seen: the origin of the rebasing.
    first_sub_timestamp: Option<u32>,
    /// Offset of the next tag header.
    position: usize,
    failed: bool,
}

/// Iterates over the parts of an aggregate message without collecting them.
pub fn aggregate_parts(payload: &Bytes, timestamp: u32) -> AggregateParts {
    AggregateParts {
        payload: payload.clone(),
        aggregate_timestamp: timestamp,
        first_sub_timestamp: None,
        position: 0,
        failed: false,
    }
}

/// Unpacks an aggregate message into its parts. A truncated header, or a tag whose data
/// runs past the end of the payload, fails the whole message. A missing (or cut short)
/// back pointer after the last tag is tolerated: it carries nothing a relay needs.
pub fn split_aggregate(
    payload: &Bytes,
    timestamp: u32,
) -> Result<Vec<AggregatePart>, AggregateError> {
    aggregate_parts(payload, timestamp).collect()
}

impl AggregateParts {
    fn read_part(&mut self) -> Result<AggregatePart, AggregateError> {
        let offset = self.position;
        let rest = self.payload.get(offset..).unwrap_or_default();
        let header = FlvTagHeader::parse(rest).ok_or(AggregateError::TruncatedTagHeader {
            offset,
            available: rest.len(),
        })?;
        let data_start = offset.saturating_add(TAG_HEADER_LEN);
        let available = self.payload.len().saturating_sub(data_start);
        if header.data_len > available {
            return Err(AggregateError::TagOverrunsPayload {
                offset,
                declared: header.data_len,
                available,
            });
        }
        let data_end = data_start + header.data_len;
        // Back pointers are not checked against the tag size: they are redundant, and
        // publishers that get them wrong still send perfectly good media.
        self.position = data_end
            .saturating_add(BACK_POINTER_LEN)
            .min(self.payload.len());

        let first_sub_timestamp = *self.first_sub_timestamp.get_or_insert(header.timestamp);
        let timestamp = self
            .aggregate_timestamp
            .wrapping_add(header.timestamp.wrapping_sub(first_sub_timestamp));
        Ok(AggregatePart {
            type_id: header.tag_type,
            timestamp,
            payload: self.payload.slice(data_start..data_end),
        })
    }
}

impl Iterator for AggregateParts {
    type Item = Result<AggregatePart, AggregateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.payload.len() {
            return None;
        }
        let item = self.read_part();
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appends one sub-message as an FLV tag, with or without its back pointer.
    fn push_tag(out: &mut Vec<u8>, type_id: u8, timestamp: u32, data: &[u8], back_pointer: bool) {
        let header = FlvTagHeader {
            tag_type: type_id,
            data_len: data.len(),
            timestamp,
            stream_id: 0,
        };
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(data);
        if back_pointer {
            let size = (TAG_HEADER_LEN + data.len()) as u32;
            out.extend_from_slice(&size.to_be_bytes());
        }
    }

    #[test]
    fn splits_three_parts_and_rebases_timestamps() {
        let mut payload = Vec::new();
        push_tag(&mut payload, 9, 1000, b"\x17\x01video", true);
        push_tag(&mut payload, 8, 1010, b"\xAF\x01audio", true);
        push_tag(&mut payload, 18, 1040, b"data", true);
        let payload = Bytes::from(payload);

        let parts = split_aggregate(&payload, 50_000).unwrap();
        assert_eq!(
            parts,
            vec![
                AggregatePart {
                    type_id: 9,
                    timestamp: 50_000,
                    payload: Bytes::from_static(b"\x17\x01video"),
                },
                AggregatePart {
                    type_id: 8,
                    timestamp: 50_010,
                    payload: Bytes::from_static(b"\xAF\x01audio"),
                },
                AggregatePart {
                    type_id: 18,
                    timestamp: 50_040,
                    payload: Bytes::from_static(b"data"),
                },
            ]
        );
        // Zero copy: the parts point into the aggregate payload.
        let range = payload.as_ptr_range();
        assert!(
            parts
                .iter()
                .all(|part| range.contains(&part.payload.as_ptr()))
        );
    }

    #[test]
    fn timestamps_use_the_extended_byte() {
        let mut payload = Vec::new();
        // 0x01FF_FFFF needs the extension byte; the next one crosses into 0x0200_0000.
        push_tag(&mut payload, 9, 0x01FF_FFFF, b"a", true);
        push_tag(&mut payload, 9, 0x0200_0009, b"b", true);
        assert_eq!(payload[7], 0x01, "extension byte holds the top 8 bits");
        let parts = split_aggregate(&Bytes::from(payload), 100).unwrap();
        assert_eq!(parts[0].timestamp, 100);
        assert_eq!(parts[1].timestamp, 110);
    }

    #[test]
    fn rebasing_wraps_around() {
        let mut payload = Vec::new();
        push_tag(&mut payload, 8, u32::MAX - 5, b"a", true);
        push_tag(&mut payload, 8, 4, b"b", true);
        let parts = split_aggregate(&Bytes::from(payload), u32::MAX - 2).unwrap();
        assert_eq!(parts[0].timestamp, u32::MAX - 2);
        assert_eq!(parts[1].timestamp, 7);

        // A sub-message earlier than the first one lands earlier than the aggregate.
        let mut payload = Vec::new();
        push_tag(&mut payload, 8, 20, b"a", true);
        push_tag(&mut payload, 8, 15, b"b", true);
        let parts = split_aggregate(&Bytes::from(payload), 1).unwrap();
        assert_eq!(parts[1].timestamp, 1u32.wrapping_sub(5));
    }

    #[test]
    fn missing_or_short_final_back_pointer_is_tolerated() {
        let mut payload = Vec::new();
        push_tag(&mut payload, 9, 0, b"one", true);
        push_tag(&mut payload, 9, 40, b"two", false);
        let parts = split_aggregate(&Bytes::from(payload.clone()), 0).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].payload, Bytes::from_static(b"two"));

        payload.extend_from_slice(&[0, 0]);
        let parts = split_aggregate(&Bytes::from(payload), 0).unwrap();
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn empty_aggregate_has_no_parts() {
        assert_eq!(split_aggregate(&Bytes::new(), 7), Ok(vec![]));
    }

    #[test]
    fn truncated_header_is_an_error() {
        let mut payload = Vec::new();
        push_tag(&mut payload, 9, 0, b"one", true);
        let first_len = payload.len();
        payload.extend_from_slice(&[9, 0, 0, 3, 0]);
        assert_eq!(
            split_aggregate(&Bytes::from(payload), 0),
            Err(AggregateError::TruncatedTagHeader {
                offset: first_len,
                available: 5
            })
        );
    }

    #[test]
    fn oversized_tag_is_an_error() {
        let mut payload = Vec::new();
        push_tag(&mut payload, 9, 0, b"one", true);
        let first_len = payload.len();
        push_tag(&mut payload, 8, 0, b"0123456789", true);
        // Cut the second tag's data short.
        payload.truncate(first_len + TAG_HEADER_LEN + 4);
        assert_eq!(
            split_aggregate(&Bytes::from(payload.clone()), 0),
            Err(AggregateError::TagOverrunsPayload {
                offset: first_len,
                declared: 10,
                available: 4
            })
        );

        // The iterator still hands out the good part before the error, then stops.
        let payload = Bytes::from(payload);
        let mut parts = aggregate_parts(&payload, 0);
        assert!(parts.next().unwrap().is_ok());
        assert!(parts.next().unwrap().is_err());
        assert!(parts.next().is_none());
    }

    #[test]
    fn maximal_declared_size_is_an_error_not_an_allocation() {
        let payload = Bytes::from_static(&[9, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert!(matches!(
            split_aggregate(&payload, 0),
            Err(AggregateError::TagOverrunsPayload {
                declared: 0xFF_FFFF,
                available: 2,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), ts in any::<u32>()) {
            let payload = Bytes::from(bytes);
            let _ = split_aggregate(&payload, ts);
        }

        #[test]
        fn round_trips_generated_tags(
            tags in proptest::collection::vec(
                (any::<u8>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..50)),
                1..8,
            ),
            aggregate_timestamp in any::<u32>(),
        ) {
            let mut payload = Vec::new();
            for (type_id, timestamp, data) in &tags {
                push_tag(&mut payload, *type_id, *timestamp, data, true);
            }
            let parts = split_aggregate(&Bytes::from(payload), aggregate_timestamp).unwrap();
            prop_assert_eq!(parts.len(), tags.len());
            let first = tags[0].1;
            for (part, (type_id, timestamp, data)) in parts.iter().zip(&tags) {
                prop_assert_eq!(part.type_id, *type_id);
                prop_assert_eq!(
                    part.timestamp,
                    aggregate_timestamp.wrapping_add(timestamp.wrapping_sub(first))
                );
                prop_assert_eq!(&part.payload[..], &data[..]);
            }
        }
    }
}
