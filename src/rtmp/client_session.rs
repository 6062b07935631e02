//! The client role: connect to an RTMP server and publish or play one stream.
//!
//! The mirror of `server.rs`, used by the bundled load generator and for relaying to other
//! servers. It speaks the sequence ffmpeg and OBS use, which nginx-rtmp, SRS and shardcast
//! all accept: handshake, `connect`, then `releaseStream` + `FCPublish` + `createStream` +
//! `publish`, or `createStream` + `play`. Like the server role it has no sockets and no
//! clock: feed it bytes, take events and bytes to write.

use std::collections::VecDeque;

use bytes::Bytes;

use super::SessionError;
use super::amf0::Amf0Value;
use super::capabilities::Capabilities;
use super::chunk::{DecoderLimits, SHARED_STREAM_ID};
use super::command::{Command, DataMessage, ON_METADATA, SET_DATA_FRAME, status};
use super::control::{ControlMessage, UserControlEvent};
use super::handshake::{ClientHandshake, ClientHandshakeMode};
use super::message::{MessageType, RtmpMessage, csid};
use super::relay_path::RelayPath;
use super::server_session::MediaKind;
use super::session::{Connection, Incoming};

/// Settings of one client session.
#[derive(Clone, Debug)]
pub struct ClientSessionConfig {
    pub epoch: u32,
    pub seed: u64,
    pub handshake: ClientHandshakeMode,
    /// The application, e.g. `live` for `rtmp://host/live/key`.
    pub app: String,
    /// The full URL of the application, e.g. `rtmp://127.0.0.1:1935/live`.
    pub tc_url: String,
    pub flash_ver: String,
    /// Outgoing chunk size, announced after the handshake.
    pub chunk_size: u32,
    pub window_ack_size: u32,
    pub limits: DecoderLimits,
    /// Enhanced RTMP `capsEx` to announce in `connect` (0: the field is left out).
    pub caps_ex: u32,
    /// Enhanced RTMP `fourCcList` to announce in `connect` (`"avc1"`, `"mp4a"`, `"*"`...;
    /// empty: the field is left out, and the server treats the client as undeclared).
    pub fourcc_list: Vec<String>,
    /// The relays behind this connection (`shardcastVia`/`shardcastHops` in `connect`),
    /// when the client is a relay pulling or pushing; empty for a plain client.
    pub relay_path: RelayPath,
}

impl ClientSessionConfig {
    pub fn new(app: &str, tc_url: &str) -> ClientSessionConfig {
        ClientSessionConfig {
            epoch: 0,
            seed: 0xc11e47,
            handshake: ClientHandshakeMode::Plain,
            app: app.to_owned(),
            tc_url: tc_url.to_owned(),
            flash_ver: "FMLE/3.0 (compatible; shardcast)".to_owned(),
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            limits: DecoderLimits::default(),
            caps_ex: 0,
            fourcc_list: Vec::new(),
            relay_path: RelayPath::default(),
        }
    }
}

/// What a client session reports.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    Connected,
    /// `connect` was answered with `_error`, or a call failed.
    ConnectFailed {
        code: String,
        description: String,
    },
    PublishStarted {
        stream_id: u32,
    },
    PlayStarted {
        stream_id: u32,
    },
    /// Any `onStatus` (including the ones that also produced the events above, and errors
    /// such as `NetStream.Publish.BadName`).
    Status {
        stream_id: u32,
        level: String,
        code: String,
        description: String,
    },
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// A data message (AMF0 or AMF3 type id kept as received).
    Data {
        type_id: u8,
        timestamp: u32,
        payload: Bytes,
    },
    /// `_result` of a call made with [`ClientSession::call`] (e.g. `getStreamLength`).
    CallResult {
        transaction_id: f64,
        value: crate::rtmp::amf0::Amf0Value,
    },
    StreamBegin(u32),
    StreamEof(u32),
    StreamDry(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Intent {
    None,
    Publish(String),
    Play(String),
}

/// Transaction ids of the calls this client makes, one each.
mod tid {
    pub const CONNECT: f64 = 1.0;
    pub const RELEASE_STREAM: f64 = 2.0;
    pub const FC_PUBLISH: f64 = 3.0;
    pub const CREATE_STREAM: f64 = 4.0;
    pub const PUBLISH_OR_PLAY: f64 = 5.0;
}

pub struct ClientSession {
    config: ClientSessionConfig,
    handshake: Option<ClientHandshake>,
    conn: Connection,
    connected: bool,
    intent: Intent,
    /// The NetStream id the server created for us.
    stream_id: Option<u32>,
    /// `play`'s start and duration arguments (ms; -2 and -1 as the protocol defines).
    play_range: (f64, f64),
    /// The Set Buffer Length sent with `play`.
    buffer_ms: u32,
    events: VecDeque<ClientEvent>,
    /// What the server declared in the `_result` of `connect` (Enhanced RTMP codecs,
    /// `capsEx`), once it came.
    server_capabilities: Option<Capabilities>,
}

impl ClientSession {
    /// A new session; its C0 and C1 are ready in `poll_transmit` at once.
    pub fn new(config: ClientSessionConfig) -> ClientSession {
        let mut handshake = ClientHandshake::new(config.epoch, config.seed, config.handshake);
        let mut conn = Connection::new(config.limits);
        if let Some(c0c1) = handshake.poll_transmit() {
            conn.write_raw(&c0c1);
        }
        ClientSession {
            handshake: Some(handshake),
            conn,
            connected: false,
            intent: Intent::None,
            stream_id: None,
            play_range: (-2.0, -1.0),
            buffer_ms: 3000,
            events: VecDeque::new(),
            server_capabilities: None,
            config,
        }
    }

    /// The server's Enhanced RTMP capabilities, from the `_result` of `connect` (None
    /// before it came).
    pub fn server_capabilities(&self) -> Option<&Capabilities> {
        self.server_capabilities.as_ref()
    }

    pub fn feed(&mut self, input: Bytes) -> Result<(), SessionError> {
        let input = match self.handshake.as_mut() {
            Some(hs) => match self.conn.feed_handshake(hs, input)? {
                None => return Ok(()),
                Some(rest) => {
                    self.handshake = None;
                    self.on_handshake_complete();
                    rest
                }
            },
            None => input,
        };
        if !input.is_empty() {
            self.conn.feed(input);
        }
        while let Some(incoming) = self.conn.next_incoming()? {
            match incoming {
                Incoming::Message(msg) => self.on_message(msg)?,
                Incoming::UserControl(event) => match event {
                    UserControlEvent::StreamBegin(id) => {
                        self.events.push_back(ClientEvent::StreamBegin(id))
                    }
                    UserControlEvent::StreamEof(id) => {
                        self.events.push_back(ClientEvent::StreamEof(id))
                    }
                    UserControlEvent::StreamDry(id) => {
                        self.events.push_back(ClientEvent::StreamDry(id))
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.conn.take_output()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The handshake is done (`connect` has been sent).
    pub fn is_handshake_complete(&self) -> bool {
        self.handshake.is_none()
    }

    /// Bytes received from the server, handshake included.
    pub fn bytes_received(&self) -> u64 {
        self.conn.bytes_received()
    }

    pub fn stream_id(&self) -> Option<u32> {
        self.stream_id
    }

    /// Publishes `stream_key` (which may carry `?query`), now or as soon as connected.
    pub fn publish(&mut self, stream_key: &str) {
        self.intent = Intent::Publish(stream_key.to_owned());
        if self.connected {
            self.start_intent();
        }
    }

    /// Plays `stream_key`, now or as soon as connected.
    pub fn play(&mut self, stream_key: &str) {
        self.intent = Intent::Play(stream_key.to_owned());
        if self.connected {
            self.start_intent();
        }
    }

    /// Plays `stream_key` from `start_ms` for `duration_ms` (a stored file's range; -2/-1
    /// mean "live or recorded" and "to the end"), telling the server the player buffers
    /// `buffer_ms`.
    pub fn play_range(
        &mut self,
        stream_key: &str,
        start_ms: f64,
        duration_ms: f64,
        buffer_ms: u32,
    ) {
        self.play_range = (start_ms, duration_ms);
        self.buffer_ms = buffer_ms;
        self.play(stream_key);
    }

    /// Calls `name` on message stream 0 with transaction id `transaction_id` (at least 10, to
    /// stay clear of the session's own calls); the answer comes as
    /// [`ClientEvent::CallResult`].
    pub fn call(
        &mut self,
        name: &str,
        transaction_id: f64,
        args: Vec<crate::rtmp::amf0::Amf0Value>,
    ) {
        let mut cmd = Command::new(name, transaction_id, Amf0Value::Null);
        for a in args {
            cmd = cmd.arg(a);
        }
        self.send_command(0, &cmd);
    }

    /// `seek` to `position_ms` on the played stream.
    pub fn seek(&mut self, position_ms: f64) {
        let id = self.stream_id.unwrap_or(SHARED_STREAM_ID);
        let cmd = Command::new("seek", 0.0, Amf0Value::Null).arg(position_ms);
        self.send_command(id, &cmd);
    }

    /// `pause` (or resume, `paused = false`) the played stream at `position_ms`.
    pub fn pause(&mut self, paused: bool, position_ms: f64) {
        let id = self.stream_id.unwrap_or(SHARED_STREAM_ID);
        let cmd = Command::new("pause", 0.0, Amf0Value::Null)
            .arg(Amf0Value::Boolean(paused))
            .arg(position_ms);
        self.send_command(id, &cmd);
    }

    /// Sends an audio or video message on the published stream.
    pub fn send_media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        let stream_id = self.stream_id.unwrap_or(SHARED_STREAM_ID);
        let chunk_stream = match kind {
            MediaKind::Audio => csid::AUDIO,
            MediaKind::Video => csid::VIDEO,
        };
        let msg = RtmpMessage::new(kind.type_id(), stream_id, timestamp, payload);
        self.conn.send(chunk_stream, &msg);
    }

    /// Sends an AMF0 data message body on the published stream.
    pub fn send_data(&mut self, timestamp: u32, payload: Bytes) {
        let stream_id = self.stream_id.unwrap_or(SHARED_STREAM_ID);
        let msg = RtmpMessage::new(MessageType::DataAmf0.id(), stream_id, timestamp, payload);
        self.conn.send(csid::DATA, &msg);
    }

    /// Sends `@setDataFrame onMetaData <properties>`, the way encoders set stream metadata.
    pub fn send_metadata(&mut self, properties: Vec<(String, Amf0Value)>) {
        let msg = DataMessage {
            name: SET_DATA_FRAME.to_owned(),
            values: vec![
                Amf0Value::String(ON_METADATA.to_owned()),
                Amf0Value::EcmaArray(properties),
            ],
        };
        self.send_data(0, msg.encode());
    }

    /// Ends the publish or play politely (`FCUnpublish`, `deleteStream`).
    pub fn close_stream(&mut self) {
        let Some(id) = self.stream_id.take() else {
            return;
        };
        if let Intent::Publish(key) = &self.intent {
            let cmd = Command::new("FCUnpublish", 0.0, Amf0Value::Null).arg(key.as_str());
            self.send_command(0, &cmd);
        }
        let cmd = Command::new("deleteStream", 0.0, Amf0Value::Null).arg(f64::from(id));
        self.send_command(0, &cmd);
    }

    /// Sends a Ping Request; `now_ms` is the caller's clock.
    pub fn send_ping(&mut self, now_ms: u32) {
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::PingRequest(
                now_ms,
            )));
    }

    fn send_command(&mut self, stream_id: u32, cmd: &Command) {
        let chunk_stream = if stream_id == 0 {
            csid::COMMAND
        } else {
            csid::STREAM_COMMAND
        };
        self.conn.send(chunk_stream, &cmd.to_message(stream_id));
    }

    fn on_handshake_complete(&mut self) {
        self.conn.set_outgoing_chunk_size(self.config.chunk_size);
        let mut fields = vec![
            ("app".into(), Amf0Value::String(self.config.app.clone())),
            ("type".into(), Amf0Value::String("nonprivate".into())),
            (
                "flashVer".into(),
                Amf0Value::String(self.config.flash_ver.clone()),
            ),
            (
                "tcUrl".into(),
                Amf0Value::String(self.config.tc_url.clone()),
            ),
            ("fpad".into(), Amf0Value::Boolean(false)),
            ("capabilities".into(), Amf0Value::Number(15.0)),
            ("audioCodecs".into(), Amf0Value::Number(4071.0)),
            ("videoCodecs".into(), Amf0Value::Number(252.0)),
            ("videoFunction".into(), Amf0Value::Number(1.0)),
        ];
        if self.config.caps_ex != 0 {
            fields.push((
                "capsEx".into(),
                Amf0Value::Number(f64::from(self.config.caps_ex)),
            ));
        }
        if !self.config.fourcc_list.is_empty() {
            fields.push((
                "fourCcList".into(),
                Amf0Value::StrictArray(
                    self.config
                        .fourcc_list
                        .iter()
                        .map(|f| Amf0Value::String(f.clone()))
                        .collect(),
                ),
            ));
        }
        fields.extend(self.config.relay_path.connect_properties());
        let obj = Amf0Value::Object(fields);
        self.send_command(0, &Command::new("connect", tid::CONNECT, obj));
    }

    fn start_intent(&mut self) {
        match self.intent.clone() {
            Intent::None => {}
            Intent::Publish(key) => {
                let release = Command::new("releaseStream", tid::RELEASE_STREAM, Amf0Value::Null)
                    .arg(key.as_str());
                self.send_command(0, &release);
                let fc =
                    Command::new("FCPublish", tid::FC_PUBLISH, Amf0Value::Null).arg(key.as_str());
                self.send_command(0, &fc);
                self.send_command(
                    0,
                    &Command::new("createStream", tid::CREATE_STREAM, Amf0Value::Null),
                );
            }
            Intent::Play(_) => {
                self.send_command(
                    0,
                    &Command::new("createStream", tid::CREATE_STREAM, Amf0Value::Null),
                );
            }
        }
    }

    fn on_message(&mut self, msg: RtmpMessage) -> Result<(), SessionError> {
        match msg.message_type() {
            Some(MessageType::CommandAmf0 | MessageType::CommandAmf3) => {
                let cmd = Command::parse(&msg)?;
                self.on_command(msg.stream_id, cmd);
            }
            Some(MessageType::Audio) => self.events.push_back(ClientEvent::Media {
                kind: MediaKind::Audio,
                timestamp: msg.timestamp,
                payload: msg.payload,
            }),
            Some(MessageType::Video) => self.events.push_back(ClientEvent::Media {
                kind: MediaKind::Video,
                timestamp: msg.timestamp,
                payload: msg.payload,
            }),
            Some(MessageType::DataAmf0 | MessageType::DataAmf3) => {
                self.events.push_back(ClientEvent::Data {
                    type_id: msg.type_id,
                    timestamp: msg.timestamp,
                    payload: msg.payload,
                })
            }
            Some(MessageType::Aggregate) => {
                let parts = crate::rtmp::aggregate::split_aggregate(&msg.payload, msg.timestamp)
                    .map_err(|e| SessionError::Protocol(format!("bad aggregate message: {e}")))?;
                for part in parts {
                    let sub =
                        RtmpMessage::new(part.type_id, msg.stream_id, part.timestamp, part.payload);
                    self.on_message(sub)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, stream_id: u32, cmd: Command) {
        let info = cmd.arg_at(0);
        let text = |key: &str| {
            info.and_then(|i| i.get(key))
                .and_then(Amf0Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match cmd.name.as_str() {
            "_result" if cmd.transaction_id == tid::CONNECT => {
                self.server_capabilities = Some(Capabilities::from_connect(&cmd.command_object));
                self.connected = true;
                self.events.push_back(ClientEvent::Connected);
                self.start_intent();
            }
            "_result" if cmd.transaction_id == tid::CREATE_STREAM => {
                let Some(id) = info.and_then(Amf0Value::as_f64) else {
                    return;
                };
                // A message stream id is a whole number from 1 (0 is the control stream);
                // anything else from a hostile or broken server ends the attempt here
                // instead of publishing on a truncated id.
                if !(id.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&id)) {
                    self.events.push_back(ClientEvent::ConnectFailed {
                        code: "NetConnection.Call.Failed".to_owned(),
                        description: format!("createStream answered with stream id {id}"),
                    });
                    return;
                }
                let id = id as u32;
                self.stream_id = Some(id);
                let call = match &self.intent {
                    Intent::Publish(key) => {
                        Command::new("publish", tid::PUBLISH_OR_PLAY, Amf0Value::Null)
                            .arg(key.as_str())
                            .arg("live")
                    }
                    Intent::Play(key) => {
                        Command::new("play", tid::PUBLISH_OR_PLAY, Amf0Value::Null)
                            .arg(key.as_str())
                            .arg(self.play_range.0)
                            .arg(self.play_range.1)
                    }
                    Intent::None => return,
                };
                self.send_command(id, &call);
                if matches!(self.intent, Intent::Play(_)) {
                    // Players tell the server how much they buffer, as ffmpeg does.
                    self.conn.send_control(ControlMessage::UserControl(
                        UserControlEvent::SetBufferLength {
                            stream_id: id,
                            buffer_ms: self.buffer_ms,
                        },
                    ));
                }
            }
            "_result" if cmd.transaction_id >= 10.0 => {
                self.events.push_back(ClientEvent::CallResult {
                    transaction_id: cmd.transaction_id,
                    value: info.cloned().unwrap_or(Amf0Value::Undefined),
                });
            }
            "_error" => {
                self.events.push_back(ClientEvent::ConnectFailed {
                    code: text("code"),
                    description: text("description"),
                });
            }
            "onStatus" => {
                let code = text("code");
                match code.as_str() {
                    status::PUBLISH_START => self
                        .events
                        .push_back(ClientEvent::PublishStarted { stream_id }),
                    status::PLAY_START => self
                        .events
                        .push_back(ClientEvent::PlayStarted { stream_id }),
                    _ => {}
                }
                self.events.push_back(ClientEvent::Status {
                    stream_id,
                    level: text("level"),
                    code,
                    description: text("description"),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::command::{on_status, status_info};
    use crate::rtmp::handshake::ServerHandshake;

    /// The server end of a connection, answering `createStream` with `stream_id`. It is not
    /// `ServerSession`, which always answers 1 first: other servers may number their streams
    /// as they like, and the client has to follow.
    struct FakeServer {
        handshake: Option<ServerHandshake>,
        conn: Connection,
        stream_id: u32,
        /// What `createStream` is answered with: `stream_id`, unless a test says otherwise.
        answer: f64,
        /// The message stream of each `publish` and media message received, in order.
        received: Vec<(String, u32)>,
    }

    impl FakeServer {
        fn new(stream_id: u32) -> FakeServer {
            FakeServer {
                handshake: Some(ServerHandshake::new(0, 7)),
                conn: Connection::new(DecoderLimits::default()),
                stream_id,
                answer: f64::from(stream_id),
                received: Vec::new(),
            }
        }

        fn feed(&mut self, input: Bytes) {
            let input = match self.handshake.as_mut() {
                Some(hs) => match self.conn.feed_handshake(hs, input).unwrap() {
                    None => return,
                    Some(rest) => {
                        self.handshake = None;
                        rest
                    }
                },
                None => input,
            };
            self.conn.feed(input);
            while let Some(incoming) = self.conn.next_incoming().unwrap() {
                let Incoming::Message(msg) = incoming else {
                    continue;
                };
                match msg.message_type() {
                    Some(MessageType::CommandAmf0) => self.on_command(&msg),
                    Some(MessageType::Audio) => self.received.push(("audio".into(), msg.stream_id)),
                    Some(MessageType::Video) => self.received.push(("video".into(), msg.stream_id)),
                    _ => {}
                }
            }
        }

        fn on_command(&mut self, msg: &RtmpMessage) {
            let cmd = Command::parse(msg).unwrap();
            let answer = match cmd.name.as_str() {
                "connect" => Command::new("_result", cmd.transaction_id, Amf0Value::Null).arg(
                    status_info("status", status::CONNECT_SUCCESS, "Connection succeeded."),
                ),
                "createStream" => {
                    Command::new("_result", cmd.transaction_id, Amf0Value::Null).arg(self.answer)
                }
                "publish" => {
                    self.received.push(("publish".into(), msg.stream_id));
                    let started = on_status("status", status::PUBLISH_START, "Publishing.");
                    self.conn
                        .send(csid::STREAM_COMMAND, &started.to_message(self.stream_id));
                    return;
                }
                _ => return,
            };
            self.conn.send(csid::COMMAND, &answer.to_message(0));
        }
    }

    /// Carries bytes both ways until neither side has anything to say.
    fn pump(client: &mut ClientSession, server: &mut FakeServer) {
        loop {
            let mut quiet = true;
            while let Some(bytes) = client.poll_transmit() {
                quiet = false;
                server.feed(bytes);
            }
            while let Some(bytes) = server.conn.take_output() {
                quiet = false;
                client.feed(bytes).unwrap();
            }
            if quiet {
                return;
            }
        }
    }

    #[test]
    fn publish_and_media_go_on_the_stream_id_the_server_gave() {
        let mut client = ClientSession::new(ClientSessionConfig::new(
            "live",
            "rtmp://127.0.0.1:1935/live",
        ));
        let mut server = FakeServer::new(5);
        client.publish("key");
        pump(&mut client, &mut server);
        assert_eq!(client.stream_id(), Some(5));
        let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(
            events.contains(&ClientEvent::PublishStarted { stream_id: 5 }),
            "{events:?}"
        );
        client.send_media(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]));
        client.send_media(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 0x21]));
        pump(&mut client, &mut server);
        assert_eq!(
            server.received,
            [
                ("publish".to_owned(), 5),
                ("video".to_owned(), 5),
                ("audio".to_owned(), 5)
            ]
        );
    }

    #[test]
    fn a_stream_id_that_is_no_whole_number_from_1_fails_the_attempt() {
        for answer in [0.0, -1.0, 1.5, f64::NAN, f64::INFINITY, 4_294_967_296.0] {
            let mut client = ClientSession::new(ClientSessionConfig::new(
                "live",
                "rtmp://127.0.0.1:1935/live",
            ));
            let mut server = FakeServer::new(1);
            server.answer = answer;
            client.publish("key");
            pump(&mut client, &mut server);
            assert_eq!(client.stream_id(), None, "{answer}");
            let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, ClientEvent::ConnectFailed { .. })),
                "{answer}: {events:?}"
            );
            assert!(server.received.is_empty(), "{answer}: nothing published");
        }
    }
}
