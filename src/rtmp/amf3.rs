//! AMF3, the newer serialization format, as RTMP carries it in message types 15 and 17 and
//! behind the AMF0 "switch to AMF3" marker.
//!
//! AMF3 is more compact than AMF0: integers use a variable-length 29-bit encoding (U29),
//! and strings, complex values and object traits (class name plus member names) are kept
//! in three reference tables, so a repeat costs one small index instead of a copy.
//!
//! Those references are what make AMF3 dangerous to decode from an untrusted peer: a few
//! bytes can point at a large earlier value again and again, or at values that are still
//! being decoded. The decoder resolves every reference into an owned copy, and charges each
//! copy against a per-decoder budget ([`MAX_DECODED_VALUES`], [`MAX_DECODED_BYTES`]) and
//! the nesting cap ([`MAX_DEPTH`]), so neither memory nor recursion can be blown up.
//! Reference tables are capped at [`MAX_REFERENCE_TABLE_LEN`] entries, and no length read
//! from the wire is allocated before the input has been checked to hold that many bytes.
//!
//! Vectors, dictionaries and externalizable objects need class-specific knowledge and do
//! not occur in RTMP commands; they are reported as [`AmfError::Unsupported`].

use crate::rtmp::amf0::{
    Amf0Value, AmfError, MAX_DEPTH, PREALLOCATION_LIMIT, read_bytes, read_f64, read_text, read_u8,
    truncate_to_char_boundary,
};

/// Most values one decoder produces, counting every copy made to resolve a reference and
/// the copies its reference table keeps. AMF0 decoding applies the same cap per call.
pub const MAX_DECODED_VALUES: usize = 1_000_000;

/// Most string and byte-array bytes one decoder produces, counting reference copies. RTMP
/// messages are at most 16 MiB, so honest input stays far below this.
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Most entries in each reference table (strings, complex values, traits).
pub const MAX_REFERENCE_TABLE_LEN: usize = 65_536;

/// Largest value a U29 can carry, and so the largest inline length or count.
const U29_MAX: u32 = (1 << 29) - 1;

/// Lengths are U29 values shifted left by one flag bit.
const MAX_INLINE_LEN: usize = (1 << 28) - 1;

/// AMF3 type markers.
pub mod marker {
    pub const UNDEFINED: u8 = 0x00;
    pub const NULL: u8 = 0x01;
    pub const FALSE: u8 = 0x02;
    pub const TRUE: u8 = 0x03;
    pub const INTEGER: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const STRING: u8 = 0x06;
    pub const XML_DOCUMENT: u8 = 0x07;
    pub const DATE: u8 = 0x08;
    pub const ARRAY: u8 = 0x09;
    pub const OBJECT: u8 = 0x0A;
    pub const XML: u8 = 0x0B;
    pub const BYTE_ARRAY: u8 = 0x0C;
    pub const VECTOR_INT: u8 = 0x0D;
    pub const VECTOR_UINT: u8 = 0x0E;
    pub const VECTOR_DOUBLE: u8 = 0x0F;
    pub const VECTOR_OBJECT: u8 = 0x10;
    pub const DICTIONARY: u8 = 0x11;
}

/// Smallest and largest numbers the AMF3 integer type can hold (29-bit two's complement).
pub const INTEGER_MIN: i32 = -(1 << 28);
pub const INTEGER_MAX: i32 = (1 << 28) - 1;

/// One decoded AMF3 value, with every reference already resolved into a copy.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf3Value {
    Undefined,
    Null,
    Boolean(bool),
    /// A 29-bit signed integer; encoding a number outside [`INTEGER_MIN`]..=[`INTEGER_MAX`]
    /// falls back to a double, as the format requires.
    Integer(i32),
    Double(f64),
    String(String),
    XmlDocument(String),
    /// Milliseconds since the Unix epoch, UTC.
    Date(f64),
    /// An ECMAScript array: named entries (`assoc`) and the indexed part (`dense`).
    Array {
        assoc: Vec<(String, Amf3Value)>,
        dense: Vec<Amf3Value>,
    },
    /// An object; `class_name` is `None` for anonymous objects. Sealed and dynamic members
    /// are merged into `properties`, sealed ones first, in wire order.
    Object {
        class_name: Option<String>,
        properties: Vec<(String, Amf3Value)>,
    },
    Xml(String),
    ByteArray(Vec<u8>),
}

impl Amf3Value {
    /// The closest AMF0 value, for code that handles both encodings one way: numbers become
    /// Number, arrays without named entries StrictArray and others EcmaArray (indexed
    /// entries first, keyed by their index), objects Object or TypedObject, both XML kinds
    /// XmlDocument, and a byte array a StrictArray of Numbers, since AMF0 has no bytes type.
    pub fn to_amf0(&self) -> Amf0Value {
        match self {
            Amf3Value::Undefined => Amf0Value::Undefined,
            Amf3Value::Null => Amf0Value::Null,
            Amf3Value::Boolean(flag) => Amf0Value::Boolean(*flag),
            Amf3Value::Integer(number) => Amf0Value::Number(f64::from(*number)),
            Amf3Value::Double(number) => Amf0Value::Number(*number),
            Amf3Value::String(text) => Amf0Value::String(text.clone()),
            Amf3Value::XmlDocument(text) | Amf3Value::Xml(text) => {
                Amf0Value::XmlDocument(text.clone())
            }
            Amf3Value::Date(millis) => Amf0Value::Date {
                millis: *millis,
                timezone: 0,
            },
            Amf3Value::Array { assoc, dense } if assoc.is_empty() => {
                Amf0Value::StrictArray(dense.iter().map(Amf3Value::to_amf0).collect())
            }
            Amf3Value::Array { assoc, dense } => {
                let indexed = dense
                    .iter()
                    .enumerate()
                    .map(|(index, value)| (index.to_string(), value.to_amf0()));
                let named = assoc
                    .iter()
                    .map(|(key, value)| (key.clone(), value.to_amf0()));
                Amf0Value::EcmaArray(indexed.chain(named).collect())
            }
            Amf3Value::Object {
                class_name,
                properties,
            } => {
                let properties = properties
                    .iter()
                    .map(|(key, value)| (key.clone(), value.to_amf0()))
                    .collect();
                match class_name {
                    None => Amf0Value::Object(properties),
                    Some(class_name) => Amf0Value::TypedObject {
                        class_name: class_name.clone(),
                        properties,
                    },
                }
            }
            Amf3Value::ByteArray(bytes) => Amf0Value::StrictArray(
                bytes
                    .iter()
                    .map(|&byte| Amf0Value::Number(f64::from(byte)))
                    .collect(),
            ),
        }
    }
}

/// What is left of the expansion allowance. Kept apart from the decoder so that AMF0 can
/// hand one allowance from each embedded AMF3 value's fresh decoder to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodeBudget {
    values_left: usize,
    bytes_left: usize,
}

impl Default for DecodeBudget {
    fn default() -> Self {
        DecodeBudget {
            values_left: MAX_DECODED_VALUES,
            bytes_left: MAX_DECODED_BYTES,
        }
    }
}

impl DecodeBudget {
    pub(crate) fn charge(&mut self, values: usize, bytes: usize) -> Result<(), AmfError> {
        self.values_left = self
            .values_left
            .checked_sub(values)
            .ok_or(AmfError::TooLarge)?;
        self.bytes_left = self
            .bytes_left
            .checked_sub(bytes)
            .ok_or(AmfError::TooLarge)?;
        Ok(())
    }
}

/// How much a decoded complex value weighs, so a reference to it can be charged up front.
#[derive(Debug, Clone, Copy)]
struct ValueSize {
    values: usize,
    bytes: usize,
    /// Levels below the value itself; a reference must not push the tree past the cap.
    height: usize,
}

#[derive(Debug, Clone)]
struct ComplexEntry {
    value: Amf3Value,
    size: ValueSize,
}

#[derive(Debug, Clone)]
struct Traits {
    class_name: Option<String>,
    sealed_names: Vec<String>,
    dynamic: bool,
}

/// Decodes AMF3 values, keeping the reference tables that later values may point into.
///
/// In RTMP the tables live for one message, so use a fresh decoder per message body; the
/// expansion budget also runs out over a decoder's lifetime, not per value.
#[derive(Debug, Clone)]
pub struct Amf3Decoder {
    strings: Vec<String>,
    /// `None` marks a value still being decoded: a reference to it would be a cycle, which
    /// an owned tree cannot express.
    complex_values: Vec<Option<ComplexEntry>>,
    traits: Vec<Traits>,
    budget: DecodeBudget,
    /// Running totals of what went into returned trees; differences give a value's size.
    /// Copies held by the tables are charged to the budget but not counted here.
    produced_values: usize,
    produced_bytes: usize,
    /// Deepest level reached in the value being decoded, to learn each value's height.
    deepest: usize,
}

impl Default for Amf3Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Amf3Decoder {
    pub fn new() -> Self {
        Self::with_budget(DecodeBudget::default())
    }

    pub(crate) fn with_budget(budget: DecodeBudget) -> Self {
        Amf3Decoder {
            strings: Vec::new(),
            complex_values: Vec::new(),
            traits: Vec::new(),
            budget,
            produced_values: 0,
            produced_bytes: 0,
            deepest: 0,
        }
    }

    pub(crate) fn remaining_budget(&self) -> DecodeBudget {
        self.budget
    }

    /// Decodes one value from the front of `input` and advances it past the value. On error
    /// `input` is left untouched; the decoder's tables may hold partial entries, so it should
    /// not be used for the rest of that message.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Amf3Value, AmfError> {
        self.decode_nested(input, 0)
    }

    /// Like [`decode`](Self::decode), for a value that sits `depth` levels deep inside AMF0,
    /// so the nesting cap covers both formats together.
    pub(crate) fn decode_nested(
        &mut self,
        input: &mut &[u8],
        depth: usize,
    ) -> Result<Amf3Value, AmfError> {
        let mut cursor = *input;
        self.deepest = depth;
        let value = self.value(&mut cursor, depth)?;
        *input = cursor;
        Ok(value)
    }

    fn charge_produced(&mut self, values: usize, bytes: usize) -> Result<(), AmfError> {
        self.budget.charge(values, bytes)?;
        self.produced_values = self.produced_values.saturating_add(values);
        self.produced_bytes = self.produced_bytes.saturating_add(bytes);
        Ok(())
    }

    fn value(&mut self, input: &mut &[u8], depth: usize) -> Result<Amf3Value, AmfError> {
        if depth > MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        self.deepest = self.deepest.max(depth);
        self.charge_produced(1, 0)?;
        let type_marker = read_u8(input)?;
        let value = match type_marker {
            marker::UNDEFINED => Amf3Value::Undefined,
            marker::NULL => Amf3Value::Null,
            marker::FALSE => Amf3Value::Boolean(false),
            marker::TRUE => Amf3Value::Boolean(true),
            marker::INTEGER => Amf3Value::Integer(u29_to_i32(read_u29(input)?)),
            marker::DOUBLE => Amf3Value::Double(read_f64(input)?),
            marker::STRING => Amf3Value::String(self.string(input)?),
            marker::XML_DOCUMENT
            | marker::DATE
            | marker::ARRAY
            | marker::OBJECT
            | marker::XML
            | marker::BYTE_ARRAY => self.complex(input, depth, type_marker)?,
            marker::VECTOR_INT => return Err(AmfError::Unsupported("Vector.<int> (0x0d)")),
            marker::VECTOR_UINT => return Err(AmfError::Unsupported("Vector.<uint> (0x0e)")),
            marker::VECTOR_DOUBLE => {
                return Err(AmfError::Unsupported("Vector.<Number> (0x0f)"));
            }
            marker::VECTOR_OBJECT => {
                return Err(AmfError::Unsupported("Vector.<Object> (0x10)"));
            }
            marker::DICTIONARY => return Err(AmfError::Unsupported("Dictionary (0x11)")),
            unknown => return Err(AmfError::UnknownMarker(unknown)),
        };
        Ok(value)
    }

    /// A string: inline (and then remembered unless empty) or a reference to a remembered one.
    fn string(&mut self, input: &mut &[u8]) -> Result<String, AmfError> {
        let header = read_u29(input)?;
        if header & 1 == 0 {
            let index = header >> 1;
            let len = self
                .strings
                .get(to_usize(index))
                .ok_or(AmfError::BadReference(index))?
                .len();
            self.charge_produced(0, len)?;
            return self
                .strings
                .get(to_usize(index))
                .cloned()
                .ok_or(AmfError::BadReference(index));
        }
        let text = read_text(input, to_usize(header >> 1))?;
        self.charge_produced(0, text.len())?;
        if !text.is_empty() {
            if self.strings.len() >= MAX_REFERENCE_TABLE_LEN {
                return Err(AmfError::TooLarge);
            }
            self.strings.push(text.clone());
        }
        Ok(text)
    }

    /// A value that goes through the complex-value reference table.
    fn complex(
        &mut self,
        input: &mut &[u8],
        depth: usize,
        type_marker: u8,
    ) -> Result<Amf3Value, AmfError> {
        let header = read_u29(input)?;
        if header & 1 == 0 {
            return self.complex_reference(header >> 1, depth);
        }
        let body_bits = header >> 1;
        // The slot is taken before the members are read: members that refer back count
        // this value among the earlier ones.
        let slot = self.complex_values.len();
        if slot >= MAX_REFERENCE_TABLE_LEN {
            return Err(AmfError::TooLarge);
        }
        self.complex_values.push(None);

        let values_before = self.produced_values;
        let bytes_before = self.produced_bytes;
        let enclosing_deepest = std::mem::replace(&mut self.deepest, depth);
        let decoded = match type_marker {
            marker::XML_DOCUMENT => Amf3Value::XmlDocument(self.inline_text(input, body_bits)?),
            marker::XML => Amf3Value::Xml(self.inline_text(input, body_bits)?),
            // The remaining header bits of a date carry nothing.
            marker::DATE => Amf3Value::Date(read_f64(input)?),
            marker::BYTE_ARRAY => {
                let bytes = read_bytes(input, to_usize(body_bits))?;
                self.charge_produced(0, bytes.len())?;
                Amf3Value::ByteArray(bytes.to_vec())
            }
            marker::ARRAY => self.array_members(input, depth, body_bits)?,
            marker::OBJECT => self.object_members(input, depth, body_bits)?,
            other => return Err(AmfError::UnknownMarker(other)),
        };
        let deepest_inside = self.deepest;
        self.deepest = enclosing_deepest.max(deepest_inside);

        let size = ValueSize {
            // Plus one for the value itself, charged before its marker was read.
            values: self.produced_values.saturating_sub(values_before) + 1,
            bytes: self.produced_bytes.saturating_sub(bytes_before),
            height: deepest_inside.saturating_sub(depth),
        };
        // The table keeps its own copy, which costs as much as the value.
        self.budget.charge(size.values, size.bytes)?;
        if let Some(entry) = self.complex_values.get_mut(slot) {
            *entry = Some(ComplexEntry {
                value: decoded.clone(),
                size,
            });
        }
        Ok(decoded)
    }

    fn complex_reference(&mut self, index: u32, depth: usize) -> Result<Amf3Value, AmfError> {
        let size = self
            .complex_values
            .get(to_usize(index))
            .and_then(Option::as_ref)
            .ok_or(AmfError::BadReference(index))?
            .size;
        let bottom = depth.saturating_add(size.height);
        if bottom > MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        // The reference itself was charged as one value already.
        self.charge_produced(size.values.saturating_sub(1), size.bytes)?;
        self.deepest = self.deepest.max(bottom);
        self.complex_values
            .get(to_usize(index))
            .and_then(Option::as_ref)
            .map(|entry| entry.value.clone())
            .ok_or(AmfError::BadReference(index))
    }

    fn inline_text(&mut self, input: &mut &[u8], len: u32) -> Result<String, AmfError> {
        let text = read_text(input, to_usize(len))?;
        self.charge_produced(0, text.len())?;
        Ok(text)
    }

    /// Named entries until the empty key, then `dense_count` indexed entries.
    fn array_members(
        &mut self,
        input: &mut &[u8],
        depth: usize,
        dense_count: u32,
    ) -> Result<Amf3Value, AmfError> {
        let mut assoc = Vec::new();
        loop {
            let key = self.string(input)?;
            if key.is_empty() {
                break;
            }
            let value = self.value(input, depth + 1)?;
            assoc.push((key, value));
        }
        let dense = self.counted_values(input, depth, to_usize(dense_count))?;
        Ok(Amf3Value::Array { assoc, dense })
    }

    fn counted_values(
        &mut self,
        input: &mut &[u8],
        depth: usize,
        count: usize,
    ) -> Result<Vec<Amf3Value>, AmfError> {
        // Each value takes at least one byte, so this bounds the allocation by the input.
        if count > input.len() {
            return Err(AmfError::Truncated);
        }
        let mut values = Vec::with_capacity(count.min(PREALLOCATION_LIMIT));
        for _ in 0..count {
            values.push(self.value(input, depth + 1)?);
        }
        Ok(values)
    }

    /// Traits (inline or by reference), then sealed member values, then dynamic members.
    fn object_members(
        &mut self,
        input: &mut &[u8],
        depth: usize,
        traits_bits: u32,
    ) -> Result<Amf3Value, AmfError> {
        let traits = if traits_bits & 1 == 0 {
            let index = traits_bits >> 1;
            let traits = self
                .traits
                .get(to_usize(index))
                .ok_or(AmfError::BadReference(index))?;
            // Checked before copying the member names: each needs a value byte.
            if traits.sealed_names.len() > input.len() {
                return Err(AmfError::Truncated);
            }
            traits.clone()
        } else {
            self.inline_traits(input, traits_bits >> 1)?
        };

        let mut properties = Vec::with_capacity(traits.sealed_names.len());
        for name in traits.sealed_names {
            let value = self.value(input, depth + 1)?;
            self.charge_produced(0, name.len())?;
            properties.push((name, value));
        }
        if traits.dynamic {
            loop {
                let key = self.string(input)?;
                if key.is_empty() {
                    break;
                }
                let value = self.value(input, depth + 1)?;
                properties.push((key, value));
            }
        }
        Ok(Amf3Value::Object {
            class_name: traits.class_name,
            properties,
        })
    }

    fn inline_traits(&mut self, input: &mut &[u8], flag_bits: u32) -> Result<Traits, AmfError> {
        if flag_bits & 1 != 0 {
            // Its members are written by class-specific code we cannot know.
            return Err(AmfError::Unsupported("externalizable object"));
        }
        let dynamic = flag_bits & 2 != 0;
        let sealed_count = to_usize(flag_bits >> 2);
        let class_name = self.string(input)?;
        // Each name takes at least one byte.
        if sealed_count > input.len() {
            return Err(AmfError::Truncated);
        }
        let mut sealed_names = Vec::with_capacity(sealed_count.min(PREALLOCATION_LIMIT));
        for _ in 0..sealed_count {
            sealed_names.push(self.string(input)?);
        }
        let traits = Traits {
            class_name: (!class_name.is_empty()).then_some(class_name),
            sealed_names,
            dynamic,
        };
        if self.traits.len() >= MAX_REFERENCE_TABLE_LEN {
            return Err(AmfError::TooLarge);
        }
        self.traits.push(traits.clone());
        Ok(traits)
    }
}

fn to_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Reads a U29: up to three bytes of 7 bits with a continuation flag, then a full byte.
fn read_u29(input: &mut &[u8]) -> Result<u32, AmfError> {
    let mut value: u32 = 0;
    for _ in 0..3 {
        let byte = read_u8(input)?;
        value = (value << 7) | u32::from(byte & 0x7F);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    let byte = read_u8(input)?;
    Ok((value << 8) | u32::from(byte))
}

/// Sign-extends a 29-bit two's complement number.
fn u29_to_i32(value: u32) -> i32 {
    ((value << 3) as i32) >> 3
}

/// Writes the low 29 bits of `value` as a U29.
pub(crate) fn write_u29(value: u32, out: &mut Vec<u8>) {
    let value = value & U29_MAX;
    if value < 0x80 {
        out.push(value as u8);
    } else if value < 0x4000 {
        out.extend_from_slice(&[(value >> 7) as u8 | 0x80, (value & 0x7F) as u8]);
    } else if value < 0x20_0000 {
        out.extend_from_slice(&[
            (value >> 14) as u8 | 0x80,
            ((value >> 7) & 0x7F) as u8 | 0x80,
            (value & 0x7F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            (value >> 22) as u8 | 0x80,
            ((value >> 15) & 0x7F) as u8 | 0x80,
            ((value >> 8) & 0x7F) as u8 | 0x80,
            (value & 0xFF) as u8,
        ]);
    }
}

/// Writes an inline length or count with its "inline" flag bit.
fn write_inline_header(len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len.min(MAX_INLINE_LEN)).unwrap_or(0);
    write_u29((len << 1) | 1, out);
}

/// Writes an inline string; text beyond 2^28 - 1 bytes cannot be expressed and is cut.
fn write_string(text: &str, out: &mut Vec<u8>) {
    let text = truncate_to_char_boundary(text, MAX_INLINE_LEN);
    write_inline_header(text.len(), out);
    out.extend_from_slice(text.as_bytes());
}

/// Appends the encoding of `value` to `out`, writing everything inline (no references).
///
/// Integers outside the 29-bit range are written as doubles. Named entries and dynamic
/// members with an empty key are skipped, because the empty key ends those lists on the
/// wire. Objects are written as dynamic objects without sealed members.
pub fn encode(value: &Amf3Value, out: &mut Vec<u8>) {
    match value {
        Amf3Value::Undefined => out.push(marker::UNDEFINED),
        Amf3Value::Null => out.push(marker::NULL),
        Amf3Value::Boolean(false) => out.push(marker::FALSE),
        Amf3Value::Boolean(true) => out.push(marker::TRUE),
        Amf3Value::Integer(number) if (INTEGER_MIN..=INTEGER_MAX).contains(number) => {
            out.push(marker::INTEGER);
            write_u29(*number as u32, out);
        }
        Amf3Value::Integer(number) => {
            out.push(marker::DOUBLE);
            out.extend_from_slice(&f64::from(*number).to_be_bytes());
        }
        Amf3Value::Double(number) => {
            out.push(marker::DOUBLE);
            out.extend_from_slice(&number.to_be_bytes());
        }
        Amf3Value::String(text) => {
            out.push(marker::STRING);
            write_string(text, out);
        }
        Amf3Value::XmlDocument(text) => {
            out.push(marker::XML_DOCUMENT);
            write_string(text, out);
        }
        Amf3Value::Date(millis) => {
            out.push(marker::DATE);
            write_inline_header(0, out);
            out.extend_from_slice(&millis.to_be_bytes());
        }
        Amf3Value::Array { assoc, dense } => {
            out.push(marker::ARRAY);
            let dense = dense.get(..MAX_INLINE_LEN).unwrap_or(dense);
            write_inline_header(dense.len(), out);
            write_named_members(assoc, out);
            for element in dense {
                encode(element, out);
            }
        }
        Amf3Value::Object {
            class_name,
            properties,
        } => {
            out.push(marker::OBJECT);
            // Inline object, inline traits, not externalizable, dynamic, no sealed members.
            write_u29(0b1011, out);
            write_string(class_name.as_deref().unwrap_or(""), out);
            write_named_members(properties, out);
        }
        Amf3Value::Xml(text) => {
            out.push(marker::XML);
            write_string(text, out);
        }
        Amf3Value::ByteArray(bytes) => {
            out.push(marker::BYTE_ARRAY);
            let bytes = bytes.get(..MAX_INLINE_LEN).unwrap_or(bytes);
            write_inline_header(bytes.len(), out);
            out.extend_from_slice(bytes);
        }
    }
}

/// Key/value pairs closed by the empty string, as arrays and dynamic objects use them.
fn write_named_members(members: &[(String, Amf3Value)], out: &mut Vec<u8>) {
    for (key, value) in members.iter().filter(|(key, _)| !key.is_empty()) {
        write_string(key, out);
        encode(value, out);
    }
    write_string("", out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_one(bytes: &[u8]) -> Result<Amf3Value, AmfError> {
        let mut input = bytes;
        let value = Amf3Decoder::new().decode(&mut input)?;
        assert!(input.is_empty(), "{} bytes left over", input.len());
        Ok(value)
    }

    fn encoded(value: &Amf3Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out);
        out
    }

    fn string(text: &str) -> Amf3Value {
        Amf3Value::String(text.to_owned())
    }

    #[test]
    fn integer_edge_cases() {
        let cases: [(i32, &[u8]); 12] = [
            (0, &[0x04, 0x00]),
            (1, &[0x04, 0x01]),
            (127, &[0x04, 0x7F]),
            (128, &[0x04, 0x81, 0x00]),
            (16_383, &[0x04, 0xFF, 0x7F]),
            (16_384, &[0x04, 0x81, 0x80, 0x00]),
            (2_097_151, &[0x04, 0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x04, 0x80, 0xC0, 0x80, 0x00]),
            ((1 << 28) - 1, &[0x04, 0xBF, 0xFF, 0xFF, 0xFF]),
            (-1, &[0x04, 0xFF, 0xFF, 0xFF, 0xFF]),
            (-2, &[0x04, 0xFF, 0xFF, 0xFF, 0xFE]),
            (-(1 << 28), &[0x04, 0xC0, 0x80, 0x80, 0x00]),
        ];
        for (number, bytes) in cases {
            assert_eq!(
                encoded(&Amf3Value::Integer(number)),
                bytes,
                "encoding {number}"
            );
            assert_eq!(
                decode_one(bytes),
                Ok(Amf3Value::Integer(number)),
                "decoding {number}"
            );
        }
        // Out of the 29-bit range: written as a double.
        let mut big = vec![0x05];
        big.extend_from_slice(&268_435_456f64.to_be_bytes());
        assert_eq!(encoded(&Amf3Value::Integer(1 << 28)), big);
        assert_eq!(decode_one(&big), Ok(Amf3Value::Double(268_435_456.0)));
        // A U29 never takes more than four bytes, even if the fourth has its high bit set.
        assert_eq!(
            decode_one(&[0x04, 0xFF, 0xFF, 0xFF]),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn simple_markers() {
        assert_eq!(decode_one(&[0x00]), Ok(Amf3Value::Undefined));
        assert_eq!(decode_one(&[0x01]), Ok(Amf3Value::Null));
        assert_eq!(decode_one(&[0x02]), Ok(Amf3Value::Boolean(false)));
        assert_eq!(decode_one(&[0x03]), Ok(Amf3Value::Boolean(true)));
        let mut double = vec![0x05];
        double.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(decode_one(&double), Ok(Amf3Value::Double(1.5)));
        assert_eq!(decode_one(b"\x06\x07abc"), Ok(string("abc")));
        assert_eq!(
            decode_one(b"\x07\x09<a/>"),
            Ok(Amf3Value::XmlDocument("<a/>".into()))
        );
        assert_eq!(
            decode_one(b"\x0B\x09<b/>"),
            Ok(Amf3Value::Xml("<b/>".into()))
        );
        let mut date = vec![0x08, 0x01];
        date.extend_from_slice(&1e12f64.to_be_bytes());
        assert_eq!(decode_one(&date), Ok(Amf3Value::Date(1e12)));
        assert_eq!(
            decode_one(b"\x0C\x07\x01\x02\xFF"),
            Ok(Amf3Value::ByteArray(vec![1, 2, 255]))
        );
        for (bytes, value) in [
            (&b"\x06\x07abc"[..], string("abc")),
            (
                b"\x0C\x07\x01\x02\xFF",
                Amf3Value::ByteArray(vec![1, 2, 255]),
            ),
            (&date, Amf3Value::Date(1e12)),
        ] {
            assert_eq!(encoded(&value), bytes);
        }
    }

    #[test]
    fn string_references() {
        // ["abc", ref 0, "", "", "xy", ref 1]: empty strings do not take a table slot.
        let bytes = b"\x09\x0D\x01\x06\x07abc\x06\x00\x06\x01\x06\x01\x06\x05xy\x06\x02";
        assert_eq!(
            decode_one(bytes),
            Ok(Amf3Value::Array {
                assoc: vec![],
                dense: vec![
                    string("abc"),
                    string("abc"),
                    string(""),
                    string(""),
                    string("xy"),
                    string("xy"),
                ],
            })
        );
        assert_eq!(decode_one(b"\x06\x00"), Err(AmfError::BadReference(0)));
        // Keys share the table with values.
        let keyed = b"\x09\x03\x07key\x06\x00\x01\x06\x00";
        assert_eq!(
            decode_one(keyed),
            Ok(Amf3Value::Array {
                assoc: vec![("key".into(), string("key"))],
                dense: vec![string("key")],
            })
        );
    }

    #[test]
    fn trait_references() {
        // Two objects of class "P" with sealed member "x"; the second refers to the
        // first one's traits.
        let bytes = b"\x09\x05\x01\x0A\x13\x03P\x03x\x04\x01\x0A\x01\x04\x02";
        let object = |x| Amf3Value::Object {
            class_name: Some("P".into()),
            properties: vec![("x".into(), Amf3Value::Integer(x))],
        };
        assert_eq!(
            decode_one(bytes),
            Ok(Amf3Value::Array {
                assoc: vec![],
                dense: vec![object(1), object(2)],
            })
        );
        // Dynamic object with sealed and dynamic members, anonymous class.
        let dynamic = b"\x0A\x1B\x01\x03a\x04\x05\x03b\x02\x01";
        assert_eq!(
            decode_one(dynamic),
            Ok(Amf3Value::Object {
                class_name: None,
                properties: vec![
                    ("a".into(), Amf3Value::Integer(5)),
                    ("b".into(), Amf3Value::Boolean(false)),
                ],
            })
        );
        assert_eq!(decode_one(b"\x0A\x05"), Err(AmfError::BadReference(1)));
        assert_eq!(
            decode_one(b"\x0A\x07\x03C"),
            Err(AmfError::Unsupported("externalizable object"))
        );
    }

    #[test]
    fn object_references_are_copied() {
        // [obj {a: 1}, ref to complex value 1 (the object; 0 is the array)]
        let bytes = b"\x09\x05\x01\x0A\x0B\x01\x03a\x04\x01\x01\x0A\x02";
        let object = Amf3Value::Object {
            class_name: None,
            properties: vec![("a".into(), Amf3Value::Integer(1))],
        };
        assert_eq!(
            decode_one(bytes),
            Ok(Amf3Value::Array {
                assoc: vec![],
                dense: vec![object.clone(), object],
            })
        );
        // Dates, byte arrays and XML take table slots too.
        let mut mixed = b"\x09\x09\x01\x0C\x03\x07\x08\x01".to_vec();
        mixed.extend_from_slice(&5f64.to_be_bytes());
        mixed.extend_from_slice(b"\x0C\x02\x08\x04");
        assert_eq!(
            decode_one(&mixed),
            Ok(Amf3Value::Array {
                assoc: vec![],
                dense: vec![
                    Amf3Value::ByteArray(vec![7]),
                    Amf3Value::Date(5.0),
                    Amf3Value::ByteArray(vec![7]),
                    Amf3Value::Date(5.0),
                ],
            })
        );
    }

    #[test]
    fn cycles_are_rejected() {
        // An array whose only element refers to the array itself.
        assert_eq!(
            decode_one(b"\x09\x03\x01\x09\x00"),
            Err(AmfError::BadReference(0))
        );
    }

    #[test]
    fn tables_persist_across_values_of_one_decoder() {
        let bytes = b"\x06\x07abc\x06\x00";
        let mut input = &bytes[..];
        let mut decoder = Amf3Decoder::new();
        assert_eq!(decoder.decode(&mut input), Ok(string("abc")));
        assert_eq!(decoder.decode(&mut input), Ok(string("abc")));
        assert!(input.is_empty());
    }

    #[test]
    fn unsupported_and_unknown_markers() {
        for marker in 0x0D..=0x11u8 {
            assert!(matches!(
                decode_one(&[marker, 0x01]),
                Err(AmfError::Unsupported(_))
            ));
        }
        assert_eq!(decode_one(&[0x12]), Err(AmfError::UnknownMarker(0x12)));
        assert_eq!(decode_one(&[0xFF]), Err(AmfError::UnknownMarker(0xFF)));
    }

    #[test]
    fn huge_lengths_fail_without_allocating() {
        // Length 2^28 - 1 with three bytes of input.
        assert_eq!(
            decode_one(b"\x06\xFF\xFF\xFF\xFFabc"),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_one(b"\x0C\xFF\xFF\xFF\xFFabc"),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_one(b"\x09\xFF\xFF\xFF\xFF\x01"),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode_one(b"\x0A\xFF\xFF\xFF\xF3\x01"),
            Err(AmfError::Truncated)
        );
        assert_eq!(decode_one(b""), Err(AmfError::Truncated));
        assert_eq!(decode_one(b"\x09\x01"), Err(AmfError::Truncated));
    }

    #[test]
    fn reference_bombs_hit_the_budget() {
        // Outer array of 30 arrays; each refers twice to the one before it, doubling the
        // expanded size each time while the input grows by six bytes.
        let levels = 30u8;
        let mut bytes = vec![0x09, (levels << 1) | 1, 0x01];
        bytes.extend_from_slice(b"\x09\x05\x01\x01\x01");
        for k in 1..levels {
            bytes.extend_from_slice(&[0x09, 0x05, 0x01, 0x09, k << 1, 0x09, k << 1]);
        }
        assert_eq!(decode_one(&bytes), Err(AmfError::TooLarge));

        // Byte amplification: one long string referenced over and over.
        let mut bytes = vec![0x09];
        write_u29((3000 << 1) | 1, &mut bytes);
        bytes.push(0x01);
        bytes.push(0x06);
        write_u29((60_000 << 1) | 1, &mut bytes);
        bytes.extend(std::iter::repeat_n(b'a', 60_000));
        for _ in 1..3000 {
            bytes.extend_from_slice(&[0x06, 0x00]);
        }
        assert_eq!(decode_one(&bytes), Err(AmfError::TooLarge));
    }

    #[test]
    fn reference_tables_are_capped() {
        // A dense array of `n` distinct strings: each one enters the string table.
        let strings = |n: usize| {
            let mut bytes = vec![0x09];
            write_u29(((n as u32) << 1) | 1, &mut bytes);
            bytes.push(0x01);
            for i in 0..n {
                let text = format!("{i:x}");
                bytes.push(0x06);
                write_u29(((text.len() as u32) << 1) | 1, &mut bytes);
                bytes.extend_from_slice(text.as_bytes());
            }
            bytes
        };
        assert!(decode_one(&strings(MAX_REFERENCE_TABLE_LEN)).is_ok());
        assert_eq!(
            decode_one(&strings(MAX_REFERENCE_TABLE_LEN + 1)),
            Err(AmfError::TooLarge)
        );
        // Empty byte arrays in an array: each, and the array itself, take a complex slot.
        let byte_arrays = |n: usize| {
            let mut bytes = vec![0x09];
            write_u29(((n as u32) << 1) | 1, &mut bytes);
            bytes.push(0x01);
            for _ in 0..n {
                bytes.extend_from_slice(&[0x0C, 0x01]);
            }
            bytes
        };
        assert!(decode_one(&byte_arrays(MAX_REFERENCE_TABLE_LEN - 1)).is_ok());
        assert_eq!(
            decode_one(&byte_arrays(MAX_REFERENCE_TABLE_LEN)),
            Err(AmfError::TooLarge)
        );
    }

    #[test]
    fn references_cannot_exceed_the_depth_cap() {
        let chain = |depth: usize, innermost: &[u8]| {
            let mut bytes = b"\x09\x03\x01".repeat(depth);
            bytes.extend_from_slice(innermost);
            bytes
        };
        // [X, Y]: X is 40 nested arrays, Y is 40 nested arrays around a reference to X.
        let mut bytes = b"\x09\x05\x01".to_vec();
        bytes.extend_from_slice(&chain(40, b"\x01"));
        bytes.extend_from_slice(&chain(40, b"\x09\x02"));
        assert_eq!(decode_one(&bytes), Err(AmfError::TooDeep));
        // Shallow enough: fine.
        let mut bytes = b"\x09\x05\x01".to_vec();
        bytes.extend_from_slice(&chain(20, b"\x01"));
        bytes.extend_from_slice(&chain(20, b"\x09\x02"));
        assert!(decode_one(&bytes).is_ok());
        // Plain nesting is capped too.
        assert_eq!(
            decode_one(&chain(MAX_DEPTH + 1, b"\x01")),
            Err(AmfError::TooDeep)
        );
        assert!(decode_one(&chain(MAX_DEPTH, b"\x01")).is_ok());
    }

    #[test]
    fn failed_decode_leaves_input_untouched() {
        let bytes = b"\x06\x09ab";
        let mut input = &bytes[..];
        assert_eq!(
            Amf3Decoder::new().decode(&mut input),
            Err(AmfError::Truncated)
        );
        assert_eq!(input, &bytes[..]);
    }

    #[test]
    fn converts_to_amf0() {
        assert_eq!(Amf3Value::Integer(3).to_amf0(), Amf0Value::Number(3.0));
        assert_eq!(
            Amf3Value::Array {
                assoc: vec![],
                dense: vec![Amf3Value::Null]
            }
            .to_amf0(),
            Amf0Value::StrictArray(vec![Amf0Value::Null])
        );
        assert_eq!(
            Amf3Value::Array {
                assoc: vec![("k".into(), Amf3Value::Boolean(true))],
                dense: vec![string("v")],
            }
            .to_amf0(),
            Amf0Value::ecma_array([("0", "v".into()), ("k", true.into())])
        );
        assert_eq!(
            Amf3Value::Object {
                class_name: Some("C".into()),
                properties: vec![("a".into(), Amf3Value::Double(0.5))],
            }
            .to_amf0(),
            Amf0Value::TypedObject {
                class_name: "C".into(),
                properties: vec![("a".into(), Amf0Value::Number(0.5))],
            }
        );
        assert_eq!(
            Amf3Value::Object {
                class_name: None,
                properties: vec![]
            }
            .to_amf0(),
            Amf0Value::Object(vec![])
        );
        assert_eq!(
            Amf3Value::Date(7.0).to_amf0(),
            Amf0Value::Date {
                millis: 7.0,
                timezone: 0
            }
        );
        assert_eq!(
            Amf3Value::ByteArray(vec![1, 2]).to_amf0(),
            Amf0Value::StrictArray(vec![1.0.into(), 2.0.into()])
        );
    }

    #[test]
    fn empty_keys_are_dropped_when_encoding() {
        let value = Amf3Value::Object {
            class_name: None,
            properties: vec![("".into(), Amf3Value::Null), ("a".into(), Amf3Value::Null)],
        };
        assert_eq!(
            decode_one(&encoded(&value)),
            Ok(Amf3Value::Object {
                class_name: None,
                properties: vec![("a".into(), Amf3Value::Null)],
            })
        );
    }

    /// Compares values with floats by bit pattern, so NaN equals itself.
    pub(crate) fn same_amf3(a: &Amf3Value, b: &Amf3Value) -> bool {
        use Amf3Value as V;
        let same_members = |a: &[(String, V)], b: &[(String, V)]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_amf3(va, vb))
        };
        match (a, b) {
            (V::Double(x), V::Double(y)) | (V::Date(x), V::Date(y)) => x.to_bits() == y.to_bits(),
            (
                V::Array {
                    assoc: a1,
                    dense: d1,
                },
                V::Array {
                    assoc: a2,
                    dense: d2,
                },
            ) => {
                same_members(a1, a2)
                    && d1.len() == d2.len()
                    && d1.iter().zip(d2).all(|(x, y)| same_amf3(x, y))
            }
            (
                V::Object {
                    class_name: c1,
                    properties: p1,
                },
                V::Object {
                    class_name: c2,
                    properties: p2,
                },
            ) => c1 == c2 && same_members(p1, p2),
            _ => a == b,
        }
    }

    /// Values that survive an encode/decode round trip unchanged: integers in range,
    /// non-empty member keys and class names.
    pub(crate) fn amf3_value() -> impl Strategy<Value = Amf3Value> {
        let number = prop_oneof![any::<f64>(), Just(f64::NAN), Just(-0.0)];
        let leaf = prop_oneof![
            Just(Amf3Value::Undefined),
            Just(Amf3Value::Null),
            any::<bool>().prop_map(Amf3Value::Boolean),
            (INTEGER_MIN..=INTEGER_MAX).prop_map(Amf3Value::Integer),
            number.clone().prop_map(Amf3Value::Double),
            "\\PC{0,12}".prop_map(Amf3Value::String),
            "\\PC{0,12}".prop_map(Amf3Value::XmlDocument),
            number.prop_map(Amf3Value::Date),
            "\\PC{0,12}".prop_map(Amf3Value::Xml),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Amf3Value::ByteArray),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let members = proptest::collection::vec(("\\PC{1,8}", inner.clone()), 0..5);
            prop_oneof![
                (members.clone(), proptest::collection::vec(inner, 0..5))
                    .prop_map(|(assoc, dense)| Amf3Value::Array { assoc, dense }),
                (proptest::option::of("\\PC{1,8}"), members).prop_map(
                    |(class_name, properties)| Amf3Value::Object {
                        class_name,
                        properties
                    }
                ),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(value in amf3_value()) {
            let bytes = encoded(&value);
            let decoded = decode_one(&bytes).unwrap();
            prop_assert!(same_amf3(&value, &decoded), "{:?} != {:?}", value, decoded);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut input = bytes.as_slice();
            let mut decoder = Amf3Decoder::new();
            while !input.is_empty() {
                if decoder.decode(&mut input).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn marker_heavy_bytes_never_panic(
            bytes in proptest::collection::vec(
                prop_oneof![0u8..0x0D, Just(0x00), Just(0x01), Just(0x02), any::<u8>()],
                0..512,
            )
        ) {
            let mut input = bytes.as_slice();
            let _ = Amf3Decoder::new().decode(&mut input);
        }
    }
}
