//! `POST /api/v1/streams/{id}/data`: a JSON request turned into the AMF0 data message a
//! live stream carries (chat, push notifications, cue points).
//!
//! `{"handler": "onTextData", "data": {"text": "hello"}}` becomes the AMF0 values
//! `"onTextData"` and `{text: "hello"}`: the shape ffmpeg, flv.js and Flash players read
//! for a text track. JSON objects become AMF0 objects, arrays strict arrays, numbers
//! doubles, and `null` null. The origin shard stamps it with the stream's current media
//! timestamp and sends it to every viewer like any data message.

use bytes::Bytes;
use serde_json::Value;

use crate::rtmp::amf0::{Amf0Value, encode};

/// The longest handler name accepted (names are method names, like `onTextData`).
const MAX_HANDLER_LEN: usize = 256;
/// JSON nesting deeper than this is refused (serde_json stops at 128 anyway).
const MAX_DEPTH: usize = 32;

/// Why a request's body cannot be made into a data message.
#[derive(Debug, PartialEq, Eq)]
pub struct BadDataMessage(pub String);

/// The AMF0 body of the data message that `body` (the request's JSON) describes.
pub fn data_message(body: &[u8]) -> Result<Bytes, BadDataMessage> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| BadDataMessage(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = request else {
        return Err(BadDataMessage(
            "the body must be a JSON object with \"handler\" and \"data\"".into(),
        ));
    };
    let handler = match fields.get("handler") {
        Some(Value::String(h)) => h,
        Some(_) => return Err(BadDataMessage("\"handler\" must be a string".into())),
        None => return Err(BadDataMessage("\"handler\" is missing".into())),
    };
    if handler.is_empty() || handler.len() > MAX_HANDLER_LEN {
        return Err(BadDataMessage(format!(
            "\"handler\" must be 1 to {MAX_HANDLER_LEN} bytes long"
        )));
    }
    if handler == "@setDataFrame" || handler == "onMetaData" {
        return Err(BadDataMessage(
            "\"handler\" may not be onMetaData or @setDataFrame: metadata comes from the publisher"
                .into(),
        ));
    }
    let mut out = Vec::new();
    encode(&Amf0Value::String(handler.clone()), &mut out);
    if let Some(data) = fields.get("data") {
        encode(&to_amf0(data, 0)?, &mut out);
    }
    Ok(Bytes::from(out))
}

fn to_amf0(value: &Value, depth: usize) -> Result<Amf0Value, BadDataMessage> {
    if depth > MAX_DEPTH {
        return Err(BadDataMessage(format!(
            "\"data\" is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(match value {
        Value::Null => Amf0Value::Null,
        Value::Bool(b) => Amf0Value::Boolean(*b),
        Value::Number(n) => Amf0Value::Number(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Amf0Value::String(s.clone()),
        Value::Array(items) => Amf0Value::StrictArray(
            items
                .iter()
                .map(|v| to_amf0(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => {
            let mut properties = Vec::with_capacity(fields.len());
            for (key, v) in fields {
                if key.len() > usize::from(u16::MAX) {
                    return Err(BadDataMessage("a key of \"data\" is too long".into()));
                }
                properties.push((key.clone(), to_amf0(v, depth + 1)?));
            }
            Amf0Value::Object(properties)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::amf0::decode_all;

    #[test]
    fn json_becomes_the_amf0_values_players_read() {
        let body = br#"{"handler": "onTextData", "data": {"text": "hi", "n": 2, "ok": true, "list": [1, null]}}"#;
        let values = decode_all(&data_message(body).unwrap()).unwrap();
        assert_eq!(values[0], Amf0Value::String("onTextData".into()));
        assert_eq!(values[1].get("text"), Some(&Amf0Value::String("hi".into())));
        assert_eq!(values[1].get("n"), Some(&Amf0Value::Number(2.0)));
        assert_eq!(values[1].get("ok"), Some(&Amf0Value::Boolean(true)));
        assert_eq!(
            values[1].get("list"),
            Some(&Amf0Value::StrictArray(vec![
                Amf0Value::Number(1.0),
                Amf0Value::Null
            ]))
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        for body in [
            &b"not json"[..],
            br#"[1, 2]"#,
            br#"{"data": {}}"#,
            br#"{"handler": 5}"#,
            br#"{"handler": ""}"#,
            br#"{"handler": "onMetaData", "data": {}}"#,
        ] {
            assert!(
                data_message(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!(
            "{{\"handler\": \"x\", \"data\": {}{}}}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(data_message(deep.as_bytes()).is_err());
    }
}
