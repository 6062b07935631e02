//! AMF0, the serialization format of RTMP commands and metadata (message types 18 and 20).
//!
//! Every RTMP command (`connect`, `createStream`, `publish`, `onStatus`, ...) is a sequence
//! of AMF0 values: a command name string, a transaction id number, then objects and other
//! arguments. Stream metadata (`@setDataFrame` / `onMetaData`) is AMF0 too, usually an ECMA
//! array. A value starts with a one-byte type marker followed by a big-endian body.
//!
//! The decoder treats its input as hostile: it never panics, never allocates more than the
//! remaining input could justify, caps nesting at [`MAX_DEPTH`] and the number of values
//! per call at [`amf3::MAX_DECODED_VALUES`], and reports every problem as an [`AmfError`]. Where real encoders are known to bend the format it bends with them:
//! strings that are not UTF-8 (Latin-1 metadata is common) decode lossily, and an ECMA
//! array may lack its end marker at the very end of the input.
//!
//! The marker 0x11 switches one value to AMF3 (see [`crate::rtmp::amf3`]); the error type
//! here is shared with that module.

use crate::rtmp::amf3::{self, Amf3Decoder, Amf3Value, DecodeBudget};
use thiserror::Error;

/// Deepest nesting of objects and arrays either decoder accepts. Commands nest two or three
/// levels; the cap keeps recursion (and so the stack) bounded on hostile input.
pub const MAX_DEPTH: usize = 64;

/// Most elements reserved up front for an array, whatever its count says: the count is only
/// checked against the remaining input, and an element takes far more memory than its
/// smallest encoding, so larger arrays grow as their elements actually arrive.
pub(crate) const PREALLOCATION_LIMIT: usize = 4096;

/// AMF0 type markers.
pub mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIECLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const RECORDSET: u8 = 0x0E;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// Why AMF0 or AMF3 data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmfError {
    #[error("AMF input ended in the middle of a value")]
    Truncated,
    #[error("unknown AMF type marker 0x{0:02x}")]
    UnknownMarker(u8),
    #[error("reserved AMF0 type marker 0x{0:02x} (movieclip or recordset) cannot be decoded")]
    ReservedMarker(u8),
    #[error("AMF0 object-end marker where a value was expected")]
    UnexpectedObjectEnd,
    #[error("AMF values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("AMF data expands beyond the decoder's size limits")]
    TooLarge,
    #[error("AMF reference {0} does not point to a value decoded before it")]
    BadReference(u32),
    #[error("unsupported AMF3 feature: {0}")]
    Unsupported(&'static str),
}

/// One decoded AMF0 value. Object-like values keep their properties in wire order as a
/// `Vec`, because order is visible to peers and duplicates occur in the wild.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    String(String),
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// Index of an earlier complex value; kept as is rather than resolved, since RTMP
    /// commands never use it and resolving invites expansion attacks.
    Reference(u16),
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    Date {
        millis: f64,
        timezone: i16,
    },
    LongString(String),
    Unsupported,
    XmlDocument(String),
    TypedObject {
        class_name: String,
        properties: Vec<(String, Amf0Value)>,
    },
    /// A value that followed the "switch to AMF3" marker.
    Amf3(Amf3Value),
}

impl Amf0Value {
    /// An anonymous object with the given properties, in order; handy for command replies.
    pub fn object<K, I>(properties: I) -> Self
    where
        K: Into<String>,
        I: IntoIterator<Item = (K, Amf0Value)>,
    {
        Amf0Value::Object(collect_properties(properties))
    }

    /// An ECMA array with the given entries, in order; the usual shape of `onMetaData`.
    pub fn ecma_array<K, I>(entries: I) -> Self
    where
        K: Into<String>,
        I: IntoIterator<Item = (K, Amf0Value)>,
    {
        Amf0Value::EcmaArray(collect_properties(entries))
    }

    /// The text of a String or LongString (AMF0 or AMF3).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(text) | Amf0Value::LongString(text) => Some(text),
            Amf0Value::Amf3(Amf3Value::String(text)) => Some(text),
            _ => None,
        }
    }

    /// The value of a Number, or of an AMF3 Integer or Double.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(number) => Some(*number),
            Amf0Value::Amf3(Amf3Value::Double(number)) => Some(*number),
            Amf0Value::Amf3(Amf3Value::Integer(number)) => Some(f64::from(*number)),
            _ => None,
        }
    }

    /// The value of a Boolean (AMF0 or AMF3).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(flag) => Some(*flag),
            Amf0Value::Amf3(Amf3Value::Boolean(flag)) => Some(*flag),
            _ => None,
        }
    }

    /// The properties of an Object, ECMA array or typed object.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(properties)
            | Amf0Value::EcmaArray(properties)
            | Amf0Value::TypedObject { properties, .. } => Some(properties),
            _ => None,
        }
    }

    /// The first property named `key` of an Object, ECMA array or typed object.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    /// Null or Undefined, in either AMF version; commands use both for "no argument".
    pub fn is_null_or_undefined(&self) -> bool {
        matches!(
            self,
            Amf0Value::Null
                | Amf0Value::Undefined
                | Amf0Value::Amf3(Amf3Value::Null | Amf3Value::Undefined)
        )
    }
}

fn collect_properties<K, I>(properties: I) -> Vec<(String, Amf0Value)>
where
    K: Into<String>,
    I: IntoIterator<Item = (K, Amf0Value)>,
{
    properties
        .into_iter()
        .map(|(key, value)| (key.into(), value))
        .collect()
}

impl From<&str> for Amf0Value {
    fn from(text: &str) -> Self {
        Amf0Value::String(text.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(text: String) -> Self {
        Amf0Value::String(text)
    }
}

impl From<f64> for Amf0Value {
    fn from(number: f64) -> Self {
        Amf0Value::Number(number)
    }
}

impl From<bool> for Amf0Value {
    fn from(flag: bool) -> Self {
        Amf0Value::Boolean(flag)
    }
}

/// Decodes one value from the front of `input` and advances it past the value. On error
/// `input` is left untouched, so a caller can tell where the bad value started.
pub fn decode(input: &mut &[u8]) -> Result<Amf0Value, AmfError> {
    let mut cursor = *input;
    let value = Amf0Decoder::new().value(&mut cursor, 0)?;
    *input = cursor;
    Ok(value)
}

/// Decodes values until `input` is used up, as for a command or data message body.
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    decode_up_to(input, usize::MAX)
}

/// Decodes values until `input` is used up or `max_values` top-level values have been
/// read; the rest of the input is ignored. All values share one expansion budget, as in
/// [`decode_all`]: decoding them one [`decode`] call at a time would give each its own, so
/// a body of many small expanding values could multiply the cap.
pub fn decode_up_to(input: &[u8], max_values: usize) -> Result<Vec<Amf0Value>, AmfError> {
    let mut cursor = input;
    let mut decoder = Amf0Decoder::new();
    let mut values = Vec::new();
    while !cursor.is_empty() && values.len() < max_values {
        values.push(decoder.value(&mut cursor, 0)?);
    }
    Ok(values)
}

/// How an object-like value may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectEnd {
    /// Objects and typed objects: the empty key + 0x09 marker is required.
    Required,
    /// ECMA arrays: nginx-rtmp and others accept input that stops where the end marker
    /// should be, and some encoders rely on that.
    OptionalAtEndOfInput,
}

/// State shared by the values of one decode call.
struct Amf0Decoder {
    /// Caps how many values one call may build: an AMF0 value can be a single byte but
    /// takes dozens in memory. AMF3 values embedded with the 0x11 marker each get fresh
    /// reference tables but draw on this same budget, so many of them cannot multiply it.
    budget: DecodeBudget,
}

impl Amf0Decoder {
    fn new() -> Self {
        Amf0Decoder {
            budget: DecodeBudget::default(),
        }
    }

    fn value(&mut self, input: &mut &[u8], depth: usize) -> Result<Amf0Value, AmfError> {
        if depth > MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        self.budget.charge(1, 0)?;
        let type_marker = read_u8(input)?;
        let value = match type_marker {
            marker::NUMBER => Amf0Value::Number(read_f64(input)?),
            marker::BOOLEAN => Amf0Value::Boolean(read_u8(input)? != 0),
            marker::STRING => Amf0Value::String(read_short_string(input)?),
            marker::OBJECT => {
                Amf0Value::Object(self.properties(input, depth, ObjectEnd::Required)?)
            }
            marker::MOVIECLIP | marker::RECORDSET => {
                return Err(AmfError::ReservedMarker(type_marker));
            }
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED => Amf0Value::Undefined,
            marker::REFERENCE => Amf0Value::Reference(u16::from_be_bytes(read_array(input)?)),
            marker::ECMA_ARRAY => {
                // The count is advisory: encoders get it wrong, and trusting it for
                // allocation would let a peer reserve gigabytes with four bytes.
                let _advisory_count = read_array::<4>(input)?;
                Amf0Value::EcmaArray(self.properties(
                    input,
                    depth,
                    ObjectEnd::OptionalAtEndOfInput,
                )?)
            }
            marker::OBJECT_END => return Err(AmfError::UnexpectedObjectEnd),
            marker::STRICT_ARRAY => {
                let count = u32::from_be_bytes(read_array(input)?);
                // Every element takes at least one byte, so a count above the remaining
                // input can never be satisfied.
                let count = usize::try_from(count).map_err(|_| AmfError::Truncated)?;
                if count > input.len() {
                    return Err(AmfError::Truncated);
                }
                let mut elements = Vec::with_capacity(count.min(PREALLOCATION_LIMIT));
                for _ in 0..count {
                    elements.push(self.value(input, depth + 1)?);
                }
                Amf0Value::StrictArray(elements)
            }
            marker::DATE => Amf0Value::Date {
                millis: read_f64(input)?,
                timezone: i16::from_be_bytes(read_array(input)?),
            },
            marker::LONG_STRING => Amf0Value::LongString(read_long_string(input)?),
            marker::UNSUPPORTED => Amf0Value::Unsupported,
            marker::XML_DOCUMENT => Amf0Value::XmlDocument(read_long_string(input)?),
            marker::TYPED_OBJECT => {
                let class_name = read_short_string(input)?;
                let properties = self.properties(input, depth, ObjectEnd::Required)?;
                Amf0Value::TypedObject {
                    class_name,
                    properties,
                }
            }
            marker::AVMPLUS => {
                let mut amf3_decoder = Amf3Decoder::with_budget(self.budget);
                let value = amf3_decoder.decode_nested(input, depth)?;
                self.budget = amf3_decoder.remaining_budget();
                Amf0Value::Amf3(value)
            }
            unknown => return Err(AmfError::UnknownMarker(unknown)),
        };
        Ok(value)
    }

    fn properties(
        &mut self,
        input: &mut &[u8],
        depth: usize,
        end: ObjectEnd,
    ) -> Result<Vec<(String, Amf0Value)>, AmfError> {
        let end_may_be_missing = end == ObjectEnd::OptionalAtEndOfInput;
        let mut properties = Vec::new();
        loop {
            if input.is_empty() && end_may_be_missing {
                return Ok(properties);
            }
            let key = read_short_string(input)?;
            if key.is_empty() {
                match input.split_first() {
                    Some((&marker::OBJECT_END, rest)) => {
                        *input = rest;
                        return Ok(properties);
                    }
                    None if end_may_be_missing => return Ok(properties),
                    // An empty key followed by a real value is a property named "".
                    _ => {}
                }
            }
            let value = self.value(input, depth + 1)?;
            properties.push((key, value));
        }
    }
}

pub(crate) fn read_u8(input: &mut &[u8]) -> Result<u8, AmfError> {
    let (&byte, rest) = input.split_first().ok_or(AmfError::Truncated)?;
    *input = rest;
    Ok(byte)
}

pub(crate) fn read_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], AmfError> {
    let (head, rest) = input.split_first_chunk::<N>().ok_or(AmfError::Truncated)?;
    *input = rest;
    Ok(*head)
}

pub(crate) fn read_f64(input: &mut &[u8]) -> Result<f64, AmfError> {
    Ok(f64::from_be_bytes(read_array(input)?))
}

/// Takes `len` bytes; fails before anything is allocated if the input is shorter.
pub(crate) fn read_bytes<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], AmfError> {
    let (head, rest) = input.split_at_checked(len).ok_or(AmfError::Truncated)?;
    *input = rest;
    Ok(head)
}

/// Takes `len` bytes of text. Invalid UTF-8 is replaced rather than rejected: encoders
/// put Latin-1 into metadata, and dropping a stream over a title would be worse.
pub(crate) fn read_text(input: &mut &[u8], len: usize) -> Result<String, AmfError> {
    Ok(String::from_utf8_lossy(read_bytes(input, len)?).into_owned())
}

fn read_short_string(input: &mut &[u8]) -> Result<String, AmfError> {
    let len = u16::from_be_bytes(read_array(input)?);
    read_text(input, usize::from(len))
}

fn read_long_string(input: &mut &[u8]) -> Result<String, AmfError> {
    let len = u32::from_be_bytes(read_array(input)?);
    read_text(
        input,
        usize::try_from(len).map_err(|_| AmfError::Truncated)?,
    )
}

/// The longest prefix of `text` that fits in `max_len` bytes without splitting a
/// character; for length fields too small for the text.
pub(crate) fn truncate_to_char_boundary(text: &str, max_len: usize) -> &str {
    if text.len() <= max_len {
        return text;
    }
    let mut end = max_len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// Writes a u16-length string; text beyond 65535 bytes cannot be expressed and is cut.
fn write_short_string(text: &str, out: &mut Vec<u8>) {
    let text = truncate_to_char_boundary(text, usize::from(u16::MAX));
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Writes a u32-length string; text beyond 4 GiB cannot be expressed and is cut.
fn write_long_string(text: &str, out: &mut Vec<u8>) {
    let max_len = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
    let text = truncate_to_char_boundary(text, max_len);
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn write_properties(properties: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in properties {
        write_short_string(key, out);
        encode(value, out);
    }
    out.extend_from_slice(&[0x00, 0x00, marker::OBJECT_END]);
}

/// Appends the encoding of `value` to `out`. A `String` too long for AMF0's 16-bit length
/// is written as a long string, which is what every decoder expects.
pub fn encode(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(number) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&number.to_be_bytes());
        }
        Amf0Value::Boolean(flag) => {
            out.push(marker::BOOLEAN);
            out.push(u8::from(*flag));
        }
        Amf0Value::String(text) if text.len() > usize::from(u16::MAX) => {
            out.push(marker::LONG_STRING);
            write_long_string(text, out);
        }
        Amf0Value::String(text) => {
            out.push(marker::STRING);
            write_short_string(text, out);
        }
        Amf0Value::Object(properties) => {
            out.push(marker::OBJECT);
            write_properties(properties, out);
        }
        Amf0Value::Null => out.push(marker::NULL),
        Amf0Value::Undefined => out.push(marker::UNDEFINED),
        Amf0Value::Reference(index) => {
            out.push(marker::REFERENCE);
            out.extend_from_slice(&index.to_be_bytes());
        }
        Amf0Value::EcmaArray(entries) => {
            out.push(marker::ECMA_ARRAY);
            let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            write_properties(entries, out);
        }
        Amf0Value::StrictArray(elements) => {
            out.push(marker::STRICT_ARRAY);
            // A count cannot exceed u32; stop writing elements where the count stops so
            // the output stays decodable.
            let count = u32::try_from(elements.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            let written = usize::try_from(count).unwrap_or(usize::MAX);
            for element in elements.iter().take(written) {
                encode(element, out);
            }
        }
        Amf0Value::Date { millis, timezone } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&timezone.to_be_bytes());
        }
        Amf0Value::LongString(text) => {
            out.push(marker::LONG_STRING);
            write_long_string(text, out);
        }
        Amf0Value::Unsupported => out.push(marker::UNSUPPORTED),
        Amf0Value::XmlDocument(text) => {
            out.push(marker::XML_DOCUMENT);
            write_long_string(text, out);
        }
        Amf0Value::TypedObject {
            class_name,
            properties,
        } => {
            out.push(marker::TYPED_OBJECT);
            write_short_string(class_name, out);
            write_properties(properties, out);
        }
        Amf0Value::Amf3(value) => {
            out.push(marker::AVMPLUS);
            amf3::encode(value, out);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_one(bytes: &[u8]) -> Result<Amf0Value, AmfError> {
        let mut input = bytes;
        let value = decode(&mut input)?;
        assert!(input.is_empty(), "{} bytes left over", input.len());
        Ok(value)
    }

    fn encoded(value: &Amf0Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out);
        out
    }

    /// An ffmpeg-style `connect` command body, written out by hand from the AMF0 layout.
    const CONNECT_BODY: &[&[u8]] = &[
        b"\x02\x00\x07connect",
        b"\x00\x3F\xF0\x00\x00\x00\x00\x00\x00",
        b"\x03",
        b"\x00\x03app\x02\x00\x04live",
        b"\x00\x04type\x02\x00\x0Anonprivate",
        b"\x00\x08flashVer\x02\x00\x24FMLE/3.0 (compatible; Lavf59.27.100)",
        b"\x00\x05tcUrl\x02\x00\x1Artmp://127.0.0.1:1935/live",
        b"\x00\x00\x09",
    ];

    #[test]
    fn decodes_ffmpeg_connect_command() {
        let body = CONNECT_BODY.concat();
        let values = decode_all(&body).unwrap();
        let expected = vec![
            Amf0Value::from("connect"),
            Amf0Value::from(1.0),
            Amf0Value::object([
                ("app", "live".into()),
                ("type", "nonprivate".into()),
                ("flashVer", "FMLE/3.0 (compatible; Lavf59.27.100)".into()),
                ("tcUrl", "rtmp://127.0.0.1:1935/live".into()),
            ]),
        ];
        assert_eq!(values, expected);
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_f64(), Some(1.0));
        assert_eq!(
            values[2].get("app").and_then(Amf0Value::as_str),
            Some("live")
        );
        assert_eq!(values[2].get("missing"), None);

        let mut reencoded = Vec::new();
        for value in &expected {
            encode(value, &mut reencoded);
        }
        assert_eq!(reencoded, body);
    }

    #[test]
    fn decodes_set_data_frame_metadata() {
        let body = [
            b"\x02\x00\x0D@setDataFrame".as_slice(),
            b"\x02\x00\x0AonMetaData",
            b"\x08\x00\x00\x00\x04",
            b"\x00\x08duration\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x05width\x00\x40\x9E\x00\x00\x00\x00\x00\x00",
            b"\x00\x06height\x00\x40\x90\xE0\x00\x00\x00\x00\x00",
            b"\x00\x06stereo\x01\x01",
            b"\x00\x00\x09",
        ]
        .concat();
        let values = decode_all(&body).unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0].as_str(), Some("@setDataFrame"));
        assert_eq!(values[1].as_str(), Some("onMetaData"));
        let metadata = &values[2];
        assert!(matches!(metadata, Amf0Value::EcmaArray(entries) if entries.len() == 4));
        assert_eq!(
            metadata.get("duration").and_then(Amf0Value::as_f64),
            Some(0.0)
        );
        assert_eq!(
            metadata.get("width").and_then(Amf0Value::as_f64),
            Some(1920.0)
        );
        assert_eq!(
            metadata.get("height").and_then(Amf0Value::as_f64),
            Some(1080.0)
        );
        assert_eq!(
            metadata.get("stereo").and_then(Amf0Value::as_bool),
            Some(true)
        );
        // The count is written from the entries.
        let mut reencoded = Vec::new();
        for value in &values {
            encode(value, &mut reencoded);
        }
        assert_eq!(reencoded, body);
    }

    #[test]
    fn ecma_array_may_lack_its_end_marker_at_end_of_input() {
        let body = b"\x08\x00\x00\x00\x01\x00\x01a\x05";
        assert_eq!(
            decode_one(body).unwrap(),
            Amf0Value::ecma_array([("a", Amf0Value::Null)])
        );
        let with_empty_key_only = b"\x08\x00\x00\x00\x01\x00\x01a\x05\x00\x00";
        assert_eq!(
            decode_one(with_empty_key_only).unwrap(),
            Amf0Value::ecma_array([("a", Amf0Value::Null)])
        );
        // The count is ignored: it says 100 but one entry is present.
        let wrong_count = b"\x08\x00\x00\x00\x64\x00\x01a\x05\x00\x00\x09";
        assert_eq!(
            decode_one(wrong_count).unwrap(),
            Amf0Value::ecma_array([("a", Amf0Value::Null)])
        );
        // Cut in the middle of a key is still truncation.
        assert_eq!(
            decode_one(b"\x08\x00\x00\x00\x01\x00"),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_one(b"\x08\x00\x00\x00\x01\x00\x01a"),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn object_without_end_marker_is_truncated() {
        assert_eq!(decode_one(b"\x03\x00\x01a\x05"), Err(AmfError::Truncated));
        assert_eq!(
            decode_one(b"\x03\x00\x01a\x05\x00\x00"),
            Err(AmfError::Truncated)
        );
        assert_eq!(decode_one(b"\x03"), Err(AmfError::Truncated));
        let inner_ecma = b"\x03\x00\x01a\x08\x00\x00\x00\x00";
        assert_eq!(decode_one(inner_ecma), Err(AmfError::Truncated));
    }

    #[test]
    fn every_marker() {
        let cases: Vec<(&[u8], Result<Amf0Value, AmfError>)> = vec![
            (
                b"\x00\x40\x09\x21\xFB\x54\x44\x2D\x18",
                Ok(Amf0Value::Number(std::f64::consts::PI)),
            ),
            (b"\x01\x00", Ok(Amf0Value::Boolean(false))),
            (b"\x01\x01", Ok(Amf0Value::Boolean(true))),
            (b"\x01\x7F", Ok(Amf0Value::Boolean(true))),
            (b"\x02\x00\x00", Ok(Amf0Value::String(String::new()))),
            (b"\x02\x00\x02hi", Ok("hi".into())),
            (
                b"\x03\x00\x01k\x01\x01\x00\x00\x09",
                Ok(Amf0Value::object([("k", true.into())])),
            ),
            (b"\x04", Err(AmfError::ReservedMarker(0x04))),
            (b"\x05", Ok(Amf0Value::Null)),
            (b"\x06", Ok(Amf0Value::Undefined)),
            (b"\x07\x01\x02", Ok(Amf0Value::Reference(0x0102))),
            (
                b"\x08\x00\x00\x00\x00\x00\x00\x09",
                Ok(Amf0Value::EcmaArray(vec![])),
            ),
            (b"\x09", Err(AmfError::UnexpectedObjectEnd)),
            (
                b"\x0A\x00\x00\x00\x02\x05\x06",
                Ok(Amf0Value::StrictArray(vec![
                    Amf0Value::Null,
                    Amf0Value::Undefined,
                ])),
            ),
            (
                b"\x0B\x42\x70\x00\x00\x00\x00\x00\x00\xFF\xC4",
                Ok(Amf0Value::Date {
                    millis: 1_099_511_627_776.0,
                    timezone: -60,
                }),
            ),
            (
                b"\x0C\x00\x00\x00\x03abc",
                Ok(Amf0Value::LongString("abc".into())),
            ),
            (b"\x0D", Ok(Amf0Value::Unsupported)),
            (b"\x0E", Err(AmfError::ReservedMarker(0x0E))),
            (
                b"\x0F\x00\x00\x00\x04<a/>",
                Ok(Amf0Value::XmlDocument("<a/>".into())),
            ),
            (
                b"\x10\x00\x03Foo\x00\x01x\x05\x00\x00\x09",
                Ok(Amf0Value::TypedObject {
                    class_name: "Foo".into(),
                    properties: vec![("x".into(), Amf0Value::Null)],
                }),
            ),
            (
                b"\x11\x04\x7F",
                Ok(Amf0Value::Amf3(Amf3Value::Integer(127))),
            ),
            (
                b"\x11\x06\x05ab",
                Ok(Amf0Value::Amf3(Amf3Value::String("ab".into()))),
            ),
            (b"\x12", Err(AmfError::UnknownMarker(0x12))),
            (b"\xFF", Err(AmfError::UnknownMarker(0xFF))),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_one(bytes), expected, "decoding {bytes:02x?}");
            // 0x7F is a non-canonical true; every other case is what the encoder writes.
            if let Ok(value) = expected
                && bytes != b"\x01\x7F"
            {
                assert_eq!(encoded(&value), bytes, "encoding {value:?}");
            }
        }
    }

    #[test]
    fn truncated_inputs_for_every_marker() {
        for bytes in [
            &b"\x00\x40\x09"[..],
            b"\x01",
            b"\x02\x00",
            b"\x02\x00\x03ab",
            b"\x07\x01",
            b"\x08\x00\x00",
            b"\x0A\x00\x00\x00\x02\x05",
            b"\x0A\xFF\xFF\xFF\xFF",
            b"\x0B\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x0C\xFF\xFF\xFF\xFFabc",
            b"\x0F\x00\x00\x00\x05abc",
            b"\x10\x00\x03Fo",
            b"\x11",
            b"",
        ] {
            assert_eq!(decode_one(bytes), Err(AmfError::Truncated), "{bytes:02x?}");
        }
    }

    #[test]
    fn failed_decode_leaves_input_untouched() {
        let bytes = b"\x05\x02\x00\x09abc";
        let mut input = &bytes[..];
        assert_eq!(decode(&mut input), Ok(Amf0Value::Null));
        assert_eq!(decode(&mut input), Err(AmfError::Truncated));
        assert_eq!(input, &bytes[1..]);
    }

    #[test]
    fn latin1_strings_decode_lossily() {
        let value = decode_one(b"\x02\x00\x05caf\xE9!").unwrap();
        assert_eq!(value.as_str(), Some("caf\u{FFFD}!"));
    }

    #[test]
    fn empty_key_with_a_value_is_a_property() {
        let value = decode_one(b"\x03\x00\x00\x05\x00\x00\x09").unwrap();
        assert_eq!(value, Amf0Value::object([("", Amf0Value::Null)]));
    }

    #[test]
    fn nesting_is_capped() {
        let mut nested_ok = [0x0A, 0, 0, 0, 1].repeat(MAX_DEPTH);
        nested_ok.push(0x05);
        assert!(decode_one(&nested_ok).is_ok());
        let mut too_deep = [0x0A, 0, 0, 0, 1].repeat(MAX_DEPTH + 1);
        too_deep.push(0x05);
        assert_eq!(decode_one(&too_deep), Err(AmfError::TooDeep));
        let objects = [b"\x03\x00\x01k".repeat(MAX_DEPTH + 1), vec![0x05]].concat();
        assert_eq!(decode_one(&objects), Err(AmfError::TooDeep));
        // Depth carries on into an embedded AMF3 value.
        let mut mixed = [0x0A, 0, 0, 0, 1].repeat(MAX_DEPTH);
        mixed.extend_from_slice(b"\x11\x09\x03\x01\x01");
        assert_eq!(decode_one(&mixed), Err(AmfError::TooDeep));
    }

    #[test]
    fn long_strings_switch_marker_when_encoded() {
        let long = "x".repeat(70_000);
        let bytes = encoded(&Amf0Value::String(long.clone()));
        assert_eq!(bytes[0], marker::LONG_STRING);
        assert_eq!(&bytes[1..5], &70_000u32.to_be_bytes());
        assert_eq!(
            decode_one(&bytes).unwrap(),
            Amf0Value::LongString(long.clone())
        );
        let exact = "y".repeat(65_535);
        assert_eq!(encoded(&Amf0Value::String(exact))[0], marker::STRING);
        // Keys cannot switch; they are cut at a character boundary.
        let key = "é".repeat(40_000);
        let bytes = encoded(&Amf0Value::object([(key, Amf0Value::Null)]));
        let decoded = decode_one(&bytes).unwrap();
        let (decoded_key, _) = &decoded.properties().unwrap()[0];
        assert_eq!(decoded_key.len(), 65_534);
    }

    #[test]
    fn convenience_accessors() {
        assert!(Amf0Value::Null.is_null_or_undefined());
        assert!(Amf0Value::Undefined.is_null_or_undefined());
        assert!(Amf0Value::Amf3(Amf3Value::Null).is_null_or_undefined());
        assert!(!Amf0Value::from(false).is_null_or_undefined());
        assert_eq!(Amf0Value::LongString("a".into()).as_str(), Some("a"));
        assert_eq!(Amf0Value::Amf3(Amf3Value::Integer(-3)).as_f64(), Some(-3.0));
        assert_eq!(Amf0Value::Amf3(Amf3Value::Double(0.5)).as_f64(), Some(0.5));
        assert_eq!(
            Amf0Value::Amf3(Amf3Value::Boolean(true)).as_bool(),
            Some(true)
        );
        assert_eq!(Amf0Value::from(String::from("s")).as_f64(), None);
        let typed = Amf0Value::TypedObject {
            class_name: "C".into(),
            properties: vec![("a".into(), 1.0.into()), ("a".into(), 2.0.into())],
        };
        assert_eq!(typed.get("a"), Some(&Amf0Value::Number(1.0)));
        assert_eq!(Amf0Value::Null.get("a"), None);
    }

    #[test]
    fn value_count_is_capped() {
        let mut many_nulls = vec![marker::STRICT_ARRAY];
        let count = amf3::MAX_DECODED_VALUES;
        many_nulls.extend_from_slice(&(count as u32).to_be_bytes());
        many_nulls.resize(5 + count, marker::NULL);
        assert_eq!(decode_one(&many_nulls), Err(AmfError::TooLarge));
        many_nulls.truncate(5 + count - 1);
        many_nulls[1..5].copy_from_slice(&(count as u32 - 1).to_be_bytes());
        assert!(decode_one(&many_nulls).is_ok());
    }

    #[test]
    fn embedded_amf3_values_share_one_budget() {
        // One AMF3 dense array holding a string and then references to it, sized so one
        // such value fits the expansion budget and three do not.
        let text_len = 1000;
        let copies = amf3::MAX_DECODED_BYTES / (3 * text_len);
        let mut amf3_array = vec![0x09];
        amf3::write_u29(((copies as u32) << 1) | 1, &mut amf3_array);
        amf3_array.extend_from_slice(&[0x01, 0x06]);
        amf3::write_u29(((text_len as u32) << 1) | 1, &mut amf3_array);
        amf3_array.extend(std::iter::repeat_n(b'z', text_len));
        for _ in 1..copies {
            amf3_array.extend_from_slice(&[0x06, 0x00]);
        }
        let single = [&[marker::AVMPLUS][..], &amf3_array].concat();
        assert!(decode_all(&single).is_ok());
        let triple = single.repeat(3);
        assert_eq!(decode_all(&triple), Err(AmfError::TooLarge));
    }

    /// Compares values with floats by bit pattern, so NaN equals itself.
    pub(crate) fn same_amf0(a: &Amf0Value, b: &Amf0Value) -> bool {
        use Amf0Value as V;
        let same_props = |a: &[(String, V)], b: &[(String, V)]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_amf0(va, vb))
        };
        match (a, b) {
            (V::Number(x), V::Number(y)) => x.to_bits() == y.to_bits(),
            (V::Object(x), V::Object(y)) | (V::EcmaArray(x), V::EcmaArray(y)) => same_props(x, y),
            (V::StrictArray(x), V::StrictArray(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_amf0(x, y))
            }
            (
                V::Date {
                    millis: m1,
                    timezone: t1,
                },
                V::Date {
                    millis: m2,
                    timezone: t2,
                },
            ) => m1.to_bits() == m2.to_bits() && t1 == t2,
            (
                V::TypedObject {
                    class_name: c1,
                    properties: p1,
                },
                V::TypedObject {
                    class_name: c2,
                    properties: p2,
                },
            ) => c1 == c2 && same_props(p1, p2),
            (V::Amf3(x), V::Amf3(y)) => amf3::tests::same_amf3(x, y),
            _ => a == b,
        }
    }

    fn any_number() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(-0.0),
            Just(f64::INFINITY)
        ]
    }

    fn amf0_value() -> impl Strategy<Value = Amf0Value> {
        let key = "\\PC{0,8}";
        let leaf = prop_oneof![
            any_number().prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            "\\PC{0,12}".prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
            any::<u16>().prop_map(Amf0Value::Reference),
            (any_number(), any::<i16>())
                .prop_map(|(millis, timezone)| Amf0Value::Date { millis, timezone }),
            "\\PC{0,12}".prop_map(Amf0Value::LongString),
            Just(Amf0Value::Unsupported),
            "\\PC{0,12}".prop_map(Amf0Value::XmlDocument),
            amf3::tests::amf3_value().prop_map(Amf0Value::Amf3),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            let properties = proptest::collection::vec((key, inner.clone()), 0..6);
            prop_oneof![
                properties.clone().prop_map(Amf0Value::Object),
                properties.clone().prop_map(Amf0Value::EcmaArray),
                proptest::collection::vec(inner, 0..6).prop_map(Amf0Value::StrictArray),
                ("\\PC{0,8}", properties).prop_map(|(class_name, properties)| {
                    Amf0Value::TypedObject {
                        class_name,
                        properties,
                    }
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(values in proptest::collection::vec(amf0_value(), 1..4)) {
            let mut bytes = Vec::new();
            for value in &values {
                encode(value, &mut bytes);
            }
            let decoded = decode_all(&bytes).unwrap();
            prop_assert_eq!(decoded.len(), values.len());
            for (original, decoded) in values.iter().zip(&decoded) {
                prop_assert!(same_amf0(original, decoded), "{:?} != {:?}", original, decoded);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(&bytes);
            let mut input = bytes.as_slice();
            let before = input.len();
            if decode(&mut input).is_ok() {
                prop_assert!(input.len() < before);
            }
        }

        #[test]
        fn marker_heavy_bytes_never_panic(
            bytes in proptest::collection::vec(
                prop_oneof![0u8..0x12, Just(0x00), Just(0xFF), any::<u8>()],
                0..512,
            )
        ) {
            let _ = decode_all(&bytes);
        }
    }
}
