//! Command and data messages: the AMF-encoded layer of NetConnection and NetStream.
//!
//! A command message (type 20, or 17 when the peer speaks AMF3) is a command name, a
//! transaction id, a command object and optional arguments. A data message (type 18, or 15)
//! is a handler name (`@setDataFrame`, `onMetaData`, `onTextData`, `onCuePoint`, or anything
//! an application invents) followed by values. This file turns those payloads into
//! [`Command`] and [`DataMessage`] and builds the replies a server or client sends; the
//! decisions about *which* reply to send live in `server.rs` and `client.rs`.

use bytes::Bytes;
use thiserror::Error;

use super::amf0::{self, Amf0Value, AmfError};
use super::message::{MessageType, RtmpMessage};

/// Why a command or data message could not be read.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error("malformed AMF in {what}: {source}")]
    Amf {
        what: &'static str,
        #[source]
        source: AmfError,
    },
    #[error("{0} message is empty")]
    Empty(&'static str),
    #[error("command name is not a string")]
    NameNotString,
    #[error("message type {0} is not a command or data message")]
    WrongType(u8),
}

/// A decoded command message.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    /// The command object: an object for `connect`, null for most others.
    pub command_object: Amf0Value,
    pub args: Vec<Amf0Value>,
}

/// Strips the one-byte format marker AMF3 command and data messages start with. The values
/// after it are AMF0, switching to AMF3 per value with marker 0x11.
fn amf3_body<'a>(payload: &'a [u8], what: &'static str) -> Result<&'a [u8], CommandError> {
    match payload.split_first() {
        Some((0, rest)) => Ok(rest),
        // Some encoders omit the format byte; the AMF0 markers that can open a body are
        // never 0x00 followed by garbage, so a leading non-zero byte is taken as AMF0.
        Some(_) => Ok(payload),
        None => Err(CommandError::Empty(what)),
    }
}

/// Most top-level values read from one command or data message; the rest of the body is
/// ignored. No command or metadata message has more than a handful.
pub const MAX_VALUES: usize = 256;

/// Decodes AMF0 values until the body ends, with a cap on their number so a body made of
/// one-byte nulls cannot make us build millions of values. One expansion budget covers the
/// whole body.
fn decode_values(body: &[u8], what: &'static str) -> Result<Vec<Amf0Value>, CommandError> {
    amf0::decode_up_to(body, MAX_VALUES).map_err(|source| CommandError::Amf { what, source })
}

impl Command {
    /// Reads a command from a type 20 (AMF0) or type 17 (AMF3) message.
    pub fn parse(msg: &RtmpMessage) -> Result<Command, CommandError> {
        let body: &[u8] = match msg.message_type() {
            Some(MessageType::CommandAmf0) => &msg.payload,
            Some(MessageType::CommandAmf3) => amf3_body(&msg.payload, "command")?,
            _ => return Err(CommandError::WrongType(msg.type_id)),
        };
        let mut values = decode_values(body, "command")?.into_iter();
        let name = match values.next() {
            Some(v) => v
                .as_str()
                .map(str::to_owned)
                .ok_or(CommandError::NameNotString)?,
            None => return Err(CommandError::Empty("command")),
        };
        // Some clients omit the transaction id or command object on notifications.
        let transaction_id = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let command_object = values.next().unwrap_or(Amf0Value::Null);
        Ok(Command {
            name,
            transaction_id,
            command_object,
            args: values.collect(),
        })
    }

    pub fn new(name: &str, transaction_id: f64, command_object: Amf0Value) -> Command {
        Command {
            name: name.to_owned(),
            transaction_id,
            command_object,
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, value: impl Into<Amf0Value>) -> Command {
        self.args.push(value.into());
        self
    }

    /// The AMF0 body of this command.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(128);
        amf0::encode(&Amf0Value::String(self.name.clone()), &mut out);
        amf0::encode(&Amf0Value::Number(self.transaction_id), &mut out);
        amf0::encode(&self.command_object, &mut out);
        for arg in &self.args {
            amf0::encode(arg, &mut out);
        }
        Bytes::from(out)
    }

    /// The command as a type 20 message on the given message stream.
    pub fn to_message(&self, stream_id: u32) -> RtmpMessage {
        RtmpMessage::new(MessageType::CommandAmf0.id(), stream_id, 0, self.encode())
    }

    /// The `n`th argument after the command object, if present.
    pub fn arg_at(&self, n: usize) -> Option<&Amf0Value> {
        self.args.get(n)
    }
}

/// A decoded data message: the handler name and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct DataMessage {
    pub name: String,
    pub values: Vec<Amf0Value>,
}

/// The handler name that asks the server to store the following data as stream metadata.
pub const SET_DATA_FRAME: &str = "@setDataFrame";
pub const ON_METADATA: &str = "onMetaData";

impl DataMessage {
    /// Reads a data message from a type 18 (AMF0) or type 15 (AMF3) message.
    pub fn parse(msg: &RtmpMessage) -> Result<DataMessage, CommandError> {
        let body: &[u8] = match msg.message_type() {
            Some(MessageType::DataAmf0) => &msg.payload,
            Some(MessageType::DataAmf3) => amf3_body(&msg.payload, "data")?,
            _ => return Err(CommandError::WrongType(msg.type_id)),
        };
        let mut values = decode_values(body, "data")?.into_iter();
        let name = match values.next() {
            Some(v) => v.as_str().map(str::to_owned).unwrap_or_default(),
            None => return Err(CommandError::Empty("data")),
        };
        Ok(DataMessage {
            name,
            values: values.collect(),
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(256);
        amf0::encode(&Amf0Value::String(self.name.clone()), &mut out);
        for v in &self.values {
            amf0::encode(v, &mut out);
        }
        Bytes::from(out)
    }

    /// For `@setDataFrame onMetaData {...}`: the message viewers should get instead,
    /// `onMetaData {...}`. Re-encoded as AMF0 so AMF3 publishers' metadata reaches AMF0
    /// players. `None` when this is not a metadata message.
    pub fn metadata_for_viewers(&self) -> Option<Bytes> {
        let (name, values) = if self.name == SET_DATA_FRAME {
            let (first, rest) = self.values.split_first()?;
            (first.as_str()?, rest)
        } else {
            (self.name.as_str(), &self.values[..])
        };
        if name != ON_METADATA {
            return None;
        }
        let msg = DataMessage {
            name: ON_METADATA.to_owned(),
            values: values.to_vec(),
        };
        Some(msg.encode())
    }
}

/// Builds the `info` object of an `onStatus` or `_result`.
pub fn status_info(level: &str, code: &str, description: &str) -> Amf0Value {
    Amf0Value::Object(vec![
        ("level".to_owned(), Amf0Value::String(level.to_owned())),
        ("code".to_owned(), Amf0Value::String(code.to_owned())),
        (
            "description".to_owned(),
            Amf0Value::String(description.to_owned()),
        ),
    ])
}

/// An `onStatus` command (transaction id 0, null command object, the info object).
pub fn on_status(level: &str, code: &str, description: &str) -> Command {
    Command::new("onStatus", 0.0, Amf0Value::Null).arg(status_info(level, code, description))
}

/// Status codes the relay and its clients use.
pub mod status {
    pub const CONNECT_SUCCESS: &str = "NetConnection.Connect.Success";
    pub const CONNECT_REJECTED: &str = "NetConnection.Connect.Rejected";
    pub const CONNECT_CLOSED: &str = "NetConnection.Connect.Closed";
    /// Enhanced RTMP: the server asks the client to reconnect (to `tcUrl`, if given).
    pub const CONNECT_RECONNECT_REQUEST: &str = "NetConnection.Connect.ReconnectRequest";
    pub const CALL_FAILED: &str = "NetConnection.Call.Failed";
    pub const PUBLISH_START: &str = "NetStream.Publish.Start";
    pub const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
    pub const PUBLISH_DENIED: &str = "NetStream.Publish.Denied";
    pub const UNPUBLISH_SUCCESS: &str = "NetStream.Unpublish.Success";
    pub const PLAY_RESET: &str = "NetStream.Play.Reset";
    pub const PLAY_START: &str = "NetStream.Play.Start";
    pub const PLAY_STOP: &str = "NetStream.Play.Stop";
    pub const PLAY_COMPLETE: &str = "NetStream.Play.Complete";
    pub const PLAY_FAILED: &str = "NetStream.Play.Failed";
    pub const PLAY_FORBIDDEN: &str = "NetStream.Play.Forbidden";
    pub const PLAY_STREAM_NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
    pub const PLAY_UNPUBLISH_NOTIFY: &str = "NetStream.Play.UnpublishNotify";
    pub const PLAY_PUBLISH_NOTIFY: &str = "NetStream.Play.PublishNotify";
    pub const PAUSE_NOTIFY: &str = "NetStream.Pause.Notify";
    pub const UNPAUSE_NOTIFY: &str = "NetStream.Unpause.Notify";
    pub const SEEK_NOTIFY: &str = "NetStream.Seek.Notify";
    pub const DATA_START: &str = "NetStream.Data.Start";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::amf0::marker;
    use crate::rtmp::amf3;

    fn data_message(payload: Vec<u8>) -> RtmpMessage {
        RtmpMessage::new(MessageType::DataAmf0.id(), 1, 0, payload)
    }

    fn command_message(payload: Vec<u8>) -> RtmpMessage {
        RtmpMessage::new(MessageType::CommandAmf0.id(), 0, 0, payload)
    }

    fn string(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        amf0::encode(&Amf0Value::String(text.into()), &mut out);
        out
    }

    #[test]
    fn value_count_is_capped_per_message() {
        let mut body = string("onTextData");
        body.resize(body.len() + 300, marker::NULL);
        let data = DataMessage::parse(&data_message(body.clone())).unwrap();
        // The name and 255 values; the rest of the body is not decoded.
        assert_eq!(data.values.len(), MAX_VALUES - 1);

        let mut body = string("call");
        body.resize(body.len() + 300, marker::NULL);
        let cmd = Command::parse(&command_message(body)).unwrap();
        // Name, transaction id (a null, read as 0), command object, then 253 arguments.
        assert_eq!(cmd.args.len(), MAX_VALUES - 3);
    }

    /// An AMF0 "switch to AMF3" value: a dense array of one `text_len`-byte string and
    /// `copies - 1` references to it. A few hundred bytes that expand to `copies *
    /// text_len` bytes once decoded.
    fn expanding_value(text_len: usize, copies: usize) -> Vec<u8> {
        let mut out = vec![marker::AVMPLUS, 0x09];
        amf3::write_u29(((copies as u32) << 1) | 1, &mut out);
        out.extend_from_slice(&[0x01, 0x06]);
        amf3::write_u29(((text_len as u32) << 1) | 1, &mut out);
        out.extend(std::iter::repeat_n(b'z', text_len));
        for _ in 1..copies {
            out.extend_from_slice(&[0x06, 0x00]);
        }
        out
    }

    /// Regression: each value of a message used to get a fresh expansion budget, so a
    /// message of many small expanding values could make us build gigabytes (a 4 MiB data
    /// message, 64 values of 64 MiB each). The budget now covers the whole message.
    #[test]
    fn expansion_budget_covers_the_whole_message() {
        let text_len = 1000;
        let copies = amf3::MAX_DECODED_BYTES / (3 * text_len);
        let one = expanding_value(text_len, copies);

        let mut fits = string("onTextData");
        fits.extend_from_slice(&one);
        assert!(DataMessage::parse(&data_message(fits)).is_ok());

        let mut too_much = string("onTextData");
        too_much.extend(one.repeat(3));
        assert!(matches!(
            DataMessage::parse(&data_message(too_much)),
            Err(CommandError::Amf {
                source: AmfError::TooLarge,
                ..
            })
        ));

        let mut command = string("call");
        command.extend(one.repeat(3));
        assert!(matches!(
            Command::parse(&command_message(command)),
            Err(CommandError::Amf {
                source: AmfError::TooLarge,
                ..
            })
        ));
    }
}
