//! The server role: one RTMP connection from an encoder or a player, as a state machine.
//!
//! Bytes read from the socket go into [`ServerSession::feed`]; what the peer asked for comes
//! out of [`ServerSession::poll_event`]; what must be written comes out of
//! [`ServerSession::poll_transmit`]. The session answers everything that needs no decision
//! on its own (handshake, control messages, pings, `createStream`, `releaseStream`,
//! `FCPublish`, `getStreamLength`, unknown calls), and leaves the decisions — may this
//! client connect to this app, publish this key, play this stream — to the relay, which
//! answers through `accept_*` and `reject_*`. No sockets, no clock: the caller passes the
//! epoch and the randomness seed in, so a test can replay a session byte for byte.
//!
//! Media from a player's point of view never passes through here on the relay's hot path:
//! the relay writes each message's shared encoding (`chunk::encode_shared`) straight to the
//! socket, after draining this session's own output.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::SessionError;
use super::amf0::Amf0Value;
use super::chunk::DecoderLimits;
use super::command::{Command, DataMessage, SET_DATA_FRAME, on_status, status, status_info};
use super::connection::{Connection, Incoming};
use super::control::{BandwidthLimit, ControlMessage, UserControlEvent};
use super::handshake::ServerHandshake;
use super::message::{MessageType, RtmpMessage, csid};
use crate::media::aggregate::split_aggregate;

/// Settings of one server session.
#[derive(Clone, Debug)]
pub struct ServerSessionConfig {
    /// The server's time field in the handshake (milliseconds of some epoch).
    pub epoch: u32,
    /// Seed for the handshake's random bytes.
    pub seed: u64,
    /// Outgoing chunk size, announced right after `connect` is accepted. The relay's shared
    /// media encodings are made at this size, so every viewer must be told the same.
    pub chunk_size: u32,
    /// Window Acknowledgement Size and Set Peer Bandwidth we announce.
    pub window_ack_size: u32,
    pub limits: DecoderLimits,
    /// How many NetStreams one connection may create.
    pub max_streams: u32,
}

impl Default for ServerSessionConfig {
    fn default() -> Self {
        ServerSessionConfig {
            epoch: 0,
            seed: 0x5eed,
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            limits: DecoderLimits::default(),
            max_streams: 8,
        }
    }
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn type_id(self) -> u8 {
        match self {
            MediaKind::Audio => MessageType::Audio.id(),
            MediaKind::Video => MessageType::Video.id(),
        }
    }
}

/// The publish type the client asked for. The relay serves all three live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishMode {
    Live,
    Record,
    Append,
}

/// What a server session reports to the relay.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    HandshakeComplete {
        digest: bool,
    },
    /// `connect`: answer with `accept_connect` or `reject_connect`.
    ConnectRequested {
        app: String,
        /// What followed `?` in the app name, if anything (tokens, for example).
        query: String,
        tc_url: Option<String>,
        flash_ver: Option<String>,
    },
    /// `publish`: answer with `accept_publish` or `reject_publish`.
    PublishRequested {
        stream_id: u32,
        stream_key: String,
        query: String,
        mode: PublishMode,
    },
    /// `play` or `play2`: answer with `accept_play` (at once or when the stream appears) or
    /// `reject_play`.
    PlayRequested {
        stream_id: u32,
        stream_key: String,
        query: String,
        start: f64,
        duration: f64,
        reset: bool,
    },
    Media {
        stream_id: u32,
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// `@setDataFrame onMetaData` (or a bare `onMetaData`): the AMF0 body viewers get.
    Metadata {
        stream_id: u32,
        timestamp: u32,
        payload: Bytes,
    },
    /// Any other data message (`onTextData`, `onCuePoint`, application data), as the AMF0
    /// body of a type 18 message for viewers.
    Data {
        stream_id: u32,
        timestamp: u32,
        payload: Bytes,
    },
    Pause {
        stream_id: u32,
        paused: bool,
        position_ms: f64,
    },
    Seek {
        stream_id: u32,
        position_ms: f64,
    },
    ReceiveAudio {
        stream_id: u32,
        enabled: bool,
    },
    ReceiveVideo {
        stream_id: u32,
        enabled: bool,
    },
    /// The client ended a publish or play (`FCUnpublish`, `closeStream`, `deleteStream`).
    StreamClosed {
        stream_id: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamRole {
    Idle,
    PublishRequested,
    Publishing,
    PlayRequested,
    Playing,
}

#[derive(Debug)]
struct NetStream {
    id: u32,
    role: StreamRole,
}

#[derive(Debug, PartialEq, Eq)]
enum ConnectState {
    AwaitingConnect,
    Requested { transaction_id: u64, encoding: u64 },
    Connected,
    Rejected,
}

pub struct ServerSession {
    config: ServerSessionConfig,
    handshake: Option<ServerHandshake>,
    handshake_input: BytesMut,
    conn: Connection,
    connect: ConnectState,
    app: String,
    streams: Vec<NetStream>,
    events: VecDeque<ServerEvent>,
    closing: bool,
}

/// Splits `name?query` into its two parts.
fn split_query(name: &str) -> (String, String) {
    match name.split_once('?') {
        Some((n, q)) => (n.to_owned(), q.to_owned()),
        None => (name.to_owned(), String::new()),
    }
}

impl ServerSession {
    pub fn new(config: ServerSessionConfig) -> ServerSession {
        ServerSession {
            handshake: Some(ServerHandshake::new(config.epoch, config.seed)),
            handshake_input: BytesMut::new(),
            conn: Connection::new(config.limits),
            connect: ConnectState::AwaitingConnect,
            app: String::new(),
            streams: Vec::new(),
            events: VecDeque::new(),
            closing: false,
            config,
        }
    }

    /// Takes bytes read from the peer and processes everything they complete. An error means
    /// the peer broke the protocol or a limit: log it and close the connection.
    pub fn feed(&mut self, input: Bytes) -> Result<(), SessionError> {
        let input = match self.handshake.as_mut() {
            Some(hs) => {
                self.handshake_input.extend_from_slice(&input);
                loop {
                    let used = hs.feed(&self.handshake_input)?;
                    let _ = self.handshake_input.split_to(used);
                    if let Some(out) = hs.poll_transmit() {
                        self.conn.write_raw(&out);
                    }
                    if hs.is_complete() || used == 0 || self.handshake_input.is_empty() {
                        break;
                    }
                }
                if !hs.is_complete() {
                    return Ok(());
                }
                let digest = matches!(
                    hs.kind(),
                    Some(super::handshake::HandshakeKind::Digest { .. })
                );
                self.handshake = None;
                self.events
                    .push_back(ServerEvent::HandshakeComplete { digest });
                self.handshake_input.split().freeze()
            }
            None => input,
        };
        if !input.is_empty() {
            self.conn.feed(input);
        }
        while let Some(incoming) = self.conn.next_incoming()? {
            match incoming {
                Incoming::Message(msg) => self.on_message(msg)?,
                // Clients send Set Buffer Length; nothing for a live relay to do with it.
                Incoming::UserControl(_) => {}
            }
        }
        Ok(())
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.conn.take_output()
    }

    /// True once the session has decided to end the connection (connect rejected): write
    /// what `poll_transmit` still has, then close.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn is_handshake_complete(&self) -> bool {
        self.handshake.is_none()
    }

    /// The app the client connected to (empty before `connect`).
    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn bytes_received(&self) -> u64 {
        self.conn.bytes_received()
    }

    pub fn outgoing_chunk_size(&self) -> u32 {
        self.conn.outgoing_chunk_size()
    }

    /// Bytes held for the peer's partial messages, which
    /// [`DecoderLimits::max_buffered_bytes`] caps.
    pub fn buffered_bytes(&self) -> usize {
        self.conn.decoder().buffered_bytes()
    }

    /// Received chunk-stream bytes not parsed yet: after `feed` returns, at most one
    /// partial chunk header ([`chunk::MAX_HEADER_LEN`](super::chunk::MAX_HEADER_LEN)).
    pub fn unparsed_bytes(&self) -> usize {
        self.handshake_input.len() + self.conn.decoder().unparsed_bytes()
    }

    /// How many NetStreams the client has created and not deleted.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    fn on_message(&mut self, msg: RtmpMessage) -> Result<(), SessionError> {
        match msg.message_type() {
            Some(MessageType::CommandAmf0 | MessageType::CommandAmf3) => {
                let cmd = Command::parse(&msg)?;
                self.on_command(msg.stream_id, cmd)
            }
            Some(MessageType::Audio) => {
                self.on_media(msg.stream_id, MediaKind::Audio, msg.timestamp, msg.payload);
                Ok(())
            }
            Some(MessageType::Video) => {
                self.on_media(msg.stream_id, MediaKind::Video, msg.timestamp, msg.payload);
                Ok(())
            }
            Some(MessageType::DataAmf0 | MessageType::DataAmf3) => self.on_data(&msg),
            Some(MessageType::Aggregate) => {
                if !self.is_publishing(msg.stream_id) {
                    return Ok(());
                }
                let parts = split_aggregate(&msg.payload, msg.timestamp)
                    .map_err(|e| SessionError::Protocol(format!("bad aggregate message: {e}")))?;
                for part in parts {
                    let sub =
                        RtmpMessage::new(part.type_id, msg.stream_id, part.timestamp, part.payload);
                    match sub.message_type() {
                        Some(MessageType::Audio) => self.on_media(
                            sub.stream_id,
                            MediaKind::Audio,
                            sub.timestamp,
                            sub.payload,
                        ),
                        Some(MessageType::Video) => self.on_media(
                            sub.stream_id,
                            MediaKind::Video,
                            sub.timestamp,
                            sub.payload,
                        ),
                        Some(MessageType::DataAmf0 | MessageType::DataAmf3) => {
                            self.on_data(&sub)?
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            // Shared objects and unknown types carry nothing a relay serves.
            _ => Ok(()),
        }
    }

    fn is_publishing(&self, stream_id: u32) -> bool {
        self.streams
            .iter()
            .any(|s| s.id == stream_id && s.role == StreamRole::Publishing)
    }

    fn on_media(&mut self, stream_id: u32, kind: MediaKind, timestamp: u32, payload: Bytes) {
        // Media on a stream that is not (yet) publishing is dropped: the relay has not
        // decided it may publish, so it has nowhere to go.
        if self.is_publishing(stream_id) {
            self.events.push_back(ServerEvent::Media {
                stream_id,
                kind,
                timestamp,
                payload,
            });
        }
    }

    fn on_data(&mut self, msg: &RtmpMessage) -> Result<(), SessionError> {
        if !self.is_publishing(msg.stream_id) {
            return Ok(());
        }
        let data = DataMessage::parse(msg)?;
        if let Some(payload) = data.metadata_for_viewers() {
            self.events.push_back(ServerEvent::Metadata {
                stream_id: msg.stream_id,
                timestamp: msg.timestamp,
                payload,
            });
            return Ok(());
        }
        let payload = if msg.type_id == MessageType::DataAmf0.id() && data.name != SET_DATA_FRAME {
            // Already what an AMF0 viewer reads: pass the bytes through untouched.
            msg.payload.clone()
        } else if data.name == SET_DATA_FRAME {
            // `@setDataFrame name values...` is delivered to viewers as `name values...`.
            let Some((first, rest)) = data.values.split_first() else {
                return Ok(());
            };
            let name = first.as_str().unwrap_or_default().to_owned();
            DataMessage {
                name,
                values: rest.to_vec(),
            }
            .encode()
        } else {
            data.encode()
        };
        self.events.push_back(ServerEvent::Data {
            stream_id: msg.stream_id,
            timestamp: msg.timestamp,
            payload,
        });
        Ok(())
    }

    fn send_command(&mut self, stream_id: u32, cmd: &Command) {
        let chunk_stream = if stream_id == 0 {
            csid::COMMAND
        } else {
            csid::STREAM_COMMAND
        };
        self.conn.send(chunk_stream, &cmd.to_message(stream_id));
    }

    fn send_result(&mut self, transaction_id: f64, value: Amf0Value) {
        let cmd = Command::new("_result", transaction_id, Amf0Value::Null).arg(value);
        self.send_command(0, &cmd);
    }

    fn send_error(&mut self, transaction_id: f64, code: &str, description: &str) {
        let cmd = Command::new("_error", transaction_id, Amf0Value::Null).arg(status_info(
            "error",
            code,
            description,
        ));
        self.send_command(0, &cmd);
    }

    fn stream_mut(&mut self, stream_id: u32) -> Option<&mut NetStream> {
        self.streams.iter_mut().find(|s| s.id == stream_id)
    }

    fn on_command(&mut self, stream_id: u32, cmd: Command) -> Result<(), SessionError> {
        let tid = cmd.transaction_id;
        if self.connect != ConnectState::Connected && cmd.name != "connect" {
            if self.connect == ConnectState::AwaitingConnect {
                return Err(SessionError::Protocol(format!(
                    "command {:?} before connect",
                    cmd.name
                )));
            }
            // Rejected or awaiting the relay's answer: ignore.
            return Ok(());
        }
        match cmd.name.as_str() {
            "connect" => self.on_connect(cmd)?,
            "createStream" => {
                let used: Vec<u32> = self.streams.iter().map(|s| s.id).collect();
                match (1..=self.config.max_streams).find(|id| !used.contains(id)) {
                    Some(id) => {
                        self.streams.push(NetStream {
                            id,
                            role: StreamRole::Idle,
                        });
                        self.send_result(tid, Amf0Value::Number(f64::from(id)));
                    }
                    None => self.send_error(tid, status::CALL_FAILED, "too many streams"),
                }
            }
            "releaseStream" | "getStreamLength" | "_checkbw" => {
                if tid != 0.0 {
                    let value = if cmd.name == "getStreamLength" {
                        Amf0Value::Number(0.0)
                    } else {
                        Amf0Value::Undefined
                    };
                    self.send_result(tid, value);
                }
            }
            "FCPublish" => {
                let key = cmd
                    .arg_at(0)
                    .and_then(Amf0Value::as_str)
                    .unwrap_or_default();
                let reply = Command::new("onFCPublish", 0.0, Amf0Value::Null).arg(status_info(
                    "status",
                    status::PUBLISH_START,
                    key,
                ));
                self.send_command(0, &reply);
            }
            "FCUnpublish" => {
                let key = cmd
                    .arg_at(0)
                    .and_then(Amf0Value::as_str)
                    .unwrap_or_default();
                let reply = Command::new("onFCUnpublish", 0.0, Amf0Value::Null).arg(status_info(
                    "status",
                    status::UNPUBLISH_SUCCESS,
                    key,
                ));
                self.send_command(0, &reply);
                // FCUnpublish arrives on stream 0; it ends whatever this connection publishes.
                let publishing: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|s| s.role == StreamRole::Publishing)
                    .map(|s| s.id)
                    .collect();
                for id in publishing {
                    self.close_stream(id);
                }
            }
            "publish" => self.on_publish(stream_id, &cmd)?,
            "play" => self.on_play(stream_id, &cmd, false)?,
            "play2" => self.on_play(stream_id, &cmd, true)?,
            "pause" | "pauseRaw" => {
                let paused = cmd.arg_at(0).and_then(Amf0Value::as_bool).unwrap_or(true);
                let position_ms = cmd.arg_at(1).and_then(Amf0Value::as_f64).unwrap_or(0.0);
                let code = if paused {
                    status::PAUSE_NOTIFY
                } else {
                    status::UNPAUSE_NOTIFY
                };
                self.send_command(stream_id, &on_status("status", code, "paused"));
                self.events.push_back(ServerEvent::Pause {
                    stream_id,
                    paused,
                    position_ms,
                });
            }
            "seek" => {
                let position_ms = cmd.arg_at(0).and_then(Amf0Value::as_f64).unwrap_or(0.0);
                self.send_command(stream_id, &on_status("status", status::SEEK_NOTIFY, "seek"));
                self.events.push_back(ServerEvent::Seek {
                    stream_id,
                    position_ms,
                });
            }
            "receiveAudio" | "receiveVideo" => {
                let enabled = cmd.arg_at(0).and_then(Amf0Value::as_bool).unwrap_or(true);
                self.events.push_back(if cmd.name == "receiveAudio" {
                    ServerEvent::ReceiveAudio { stream_id, enabled }
                } else {
                    ServerEvent::ReceiveVideo { stream_id, enabled }
                });
            }
            "closeStream" => self.close_stream(stream_id),
            "deleteStream" => {
                let id = cmd
                    .arg_at(0)
                    .and_then(Amf0Value::as_f64)
                    .map(|n| n as u32)
                    .unwrap_or(stream_id);
                self.close_stream(id);
                self.streams.retain(|s| s.id != id);
            }
            // Replies and notifications a client may send us; none needs an answer.
            "_result" | "_error" | "onStatus" | "onBWDone" | "_checkbwDone" | "onBWCheck" => {}
            _ => {
                if tid != 0.0 {
                    let description = format!("Method not found ({})", cmd.name);
                    self.send_error(tid, status::CALL_FAILED, &description);
                }
            }
        }
        Ok(())
    }

    fn on_connect(&mut self, cmd: Command) -> Result<(), SessionError> {
        if self.connect != ConnectState::AwaitingConnect {
            return Err(SessionError::Protocol("second connect".into()));
        }
        let obj = &cmd.command_object;
        let app_full = obj
            .get("app")
            .and_then(Amf0Value::as_str)
            .unwrap_or_default();
        let (app, query) = split_query(app_full.trim_end_matches('/'));
        let encoding = obj
            .get("objectEncoding")
            .and_then(Amf0Value::as_f64)
            .unwrap_or(0.0);
        let text = |key: &str| obj.get(key).and_then(Amf0Value::as_str).map(str::to_owned);
        self.app = app.clone();
        self.connect = ConnectState::Requested {
            transaction_id: cmd.transaction_id as u64,
            encoding: encoding as u64,
        };
        self.events.push_back(ServerEvent::ConnectRequested {
            app,
            query,
            tc_url: text("tcUrl"),
            flash_ver: text("flashVer"),
        });
        Ok(())
    }

    fn on_publish(&mut self, stream_id: u32, cmd: &Command) -> Result<(), SessionError> {
        let name = cmd
            .arg_at(0)
            .and_then(Amf0Value::as_str)
            .unwrap_or_default();
        let mode = match cmd.arg_at(1).and_then(Amf0Value::as_str) {
            Some("record") => PublishMode::Record,
            Some("append") => PublishMode::Append,
            _ => PublishMode::Live,
        };
        let (stream_key, query) = split_query(name);
        let Some(stream) = self.stream_mut(stream_id) else {
            return Err(SessionError::Protocol(format!(
                "publish on stream {stream_id} that was never created"
            )));
        };
        if stream.role != StreamRole::Idle {
            return Err(SessionError::Protocol(format!(
                "publish on stream {stream_id} that is already in use"
            )));
        }
        stream.role = StreamRole::PublishRequested;
        if stream_key.is_empty() {
            self.reject_publish(stream_id, status::PUBLISH_BAD_NAME, "empty stream key");
            return Ok(());
        }
        self.events.push_back(ServerEvent::PublishRequested {
            stream_id,
            stream_key,
            query,
            mode,
        });
        Ok(())
    }

    fn on_play(&mut self, stream_id: u32, cmd: &Command, play2: bool) -> Result<(), SessionError> {
        let (name, start, duration, reset) = if play2 {
            let params = cmd.arg_at(0);
            let field = |k: &str| params.and_then(|p| p.get(k));
            (
                field("streamName")
                    .and_then(Amf0Value::as_str)
                    .unwrap_or_default(),
                field("start").and_then(Amf0Value::as_f64).unwrap_or(-2.0),
                field("len").and_then(Amf0Value::as_f64).unwrap_or(-1.0),
                true,
            )
        } else {
            (
                cmd.arg_at(0)
                    .and_then(Amf0Value::as_str)
                    .unwrap_or_default(),
                cmd.arg_at(1).and_then(Amf0Value::as_f64).unwrap_or(-2.0),
                cmd.arg_at(2).and_then(Amf0Value::as_f64).unwrap_or(-1.0),
                cmd.arg_at(3).and_then(Amf0Value::as_bool).unwrap_or(true),
            )
        };
        let (stream_key, query) = split_query(name);
        let Some(stream) = self.stream_mut(stream_id) else {
            return Err(SessionError::Protocol(format!(
                "play on stream {stream_id} that was never created"
            )));
        };
        match stream.role {
            StreamRole::Idle => {}
            // play2 switches the stream a player is already playing.
            StreamRole::Playing | StreamRole::PlayRequested if play2 => {}
            _ => {
                return Err(SessionError::Protocol(format!(
                    "play on stream {stream_id} that is already in use"
                )));
            }
        }
        stream.role = StreamRole::PlayRequested;
        if stream_key.is_empty() {
            self.reject_play(
                stream_id,
                status::PLAY_STREAM_NOT_FOUND,
                "empty stream name",
            );
            return Ok(());
        }
        self.events.push_back(ServerEvent::PlayRequested {
            stream_id,
            stream_key,
            query,
            start,
            duration,
            reset,
        });
        Ok(())
    }

    fn close_stream(&mut self, stream_id: u32) {
        if let Some(stream) = self.stream_mut(stream_id) {
            let was_active = stream.role != StreamRole::Idle;
            stream.role = StreamRole::Idle;
            if was_active {
                self.events
                    .push_back(ServerEvent::StreamClosed { stream_id });
            }
        }
    }

    /// Lets the pending `connect` succeed: announces the window, bandwidth and our chunk
    /// size (before any media), then answers `_result` with `NetConnection.Connect.Success`.
    pub fn accept_connect(&mut self) {
        let ConnectState::Requested {
            transaction_id,
            encoding,
        } = self.connect
        else {
            return;
        };
        self.connect = ConnectState::Connected;
        let window = self.config.window_ack_size;
        self.conn.send_window_ack_size(window);
        self.conn.send_control(ControlMessage::SetPeerBandwidth {
            size: window,
            limit: BandwidthLimit::Dynamic,
        });
        self.conn.set_outgoing_chunk_size(self.config.chunk_size);
        let properties = Amf0Value::Object(vec![
            ("fmsVer".into(), Amf0Value::String("FMS/3,0,1,123".into())),
            ("capabilities".into(), Amf0Value::Number(31.0)),
            ("mode".into(), Amf0Value::Number(1.0)),
        ]);
        let mut info = status_info("status", status::CONNECT_SUCCESS, "Connection succeeded.");
        if let Amf0Value::Object(fields) = &mut info {
            fields.push(("objectEncoding".into(), Amf0Value::Number(encoding as f64)));
        }
        let reply = Command::new("_result", transaction_id as f64, properties).arg(info);
        self.send_command(0, &reply);
        self.send_command(0, &Command::new("onBWDone", 0.0, Amf0Value::Null).arg(0.0));
    }

    /// Refuses the pending `connect` with `NetConnection.Connect.Rejected`; the connection
    /// should be closed once the reply is written.
    pub fn reject_connect(&mut self, description: &str) {
        let ConnectState::Requested { transaction_id, .. } = self.connect else {
            return;
        };
        self.connect = ConnectState::Rejected;
        self.send_error(transaction_id as f64, status::CONNECT_REJECTED, description);
        self.closing = true;
    }

    /// Lets a requested publish start: `NetStream.Publish.Start`.
    pub fn accept_publish(&mut self, stream_id: u32) {
        let Some(stream) = self.stream_mut(stream_id) else {
            return;
        };
        stream.role = StreamRole::Publishing;
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::StreamBegin(
                stream_id,
            )));
        self.send_command(
            stream_id,
            &on_status("status", status::PUBLISH_START, "Start publishing"),
        );
    }

    /// Refuses a publish (`code` is usually `NetStream.Publish.BadName`).
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        if let Some(stream) = self.stream_mut(stream_id) {
            stream.role = StreamRole::Idle;
        }
        self.send_command(stream_id, &on_status("error", code, description));
    }

    /// Starts a requested play: Stream Begin, `Play.Reset` (when asked), `Play.Start` and
    /// `|RtmpSampleAccess`. (No `NetStream.Data.Start` data message: players such as
    /// ffmpeg would open an empty data track for it.) The relay sends metadata, sequence
    /// headers and media after this. `recorded` marks a pre-recorded stream.
    pub fn accept_play(&mut self, stream_id: u32, reset: bool, recorded: bool) {
        let Some(stream) = self.stream_mut(stream_id) else {
            return;
        };
        stream.role = StreamRole::Playing;
        if recorded {
            self.conn.send_control(ControlMessage::UserControl(
                UserControlEvent::StreamIsRecorded(stream_id),
            ));
        }
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::StreamBegin(
                stream_id,
            )));
        if reset {
            self.send_command(
                stream_id,
                &on_status("status", status::PLAY_RESET, "Playing and resetting"),
            );
        }
        self.send_command(
            stream_id,
            &on_status("status", status::PLAY_START, "Start live"),
        );
        let mut access = Vec::new();
        for v in [
            Amf0Value::String("|RtmpSampleAccess".into()),
            Amf0Value::Boolean(true),
            Amf0Value::Boolean(true),
        ] {
            super::amf0::encode(&v, &mut access);
        }
        self.send_data(stream_id, 0, Bytes::from(access));
    }

    /// Refuses a play (`code` is usually `NetStream.Play.StreamNotFound`).
    pub fn reject_play(&mut self, stream_id: u32, code: &str, description: &str) {
        if let Some(stream) = self.stream_mut(stream_id) {
            stream.role = StreamRole::Idle;
        }
        self.send_command(stream_id, &on_status("error", code, description));
    }

    /// Tells a player its publisher left: `NetStream.Play.UnpublishNotify` and Stream EOF.
    pub fn notify_unpublished(&mut self, stream_id: u32) {
        self.send_command(
            stream_id,
            &on_status(
                "status",
                status::PLAY_UNPUBLISH_NOTIFY,
                "stream is now unpublished",
            ),
        );
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::StreamEof(
                stream_id,
            )));
    }

    /// Tells a waiting player its publisher came back: Stream Begin and
    /// `NetStream.Play.PublishNotify`.
    pub fn notify_republished(&mut self, stream_id: u32) {
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::StreamBegin(
                stream_id,
            )));
        self.send_command(
            stream_id,
            &on_status(
                "status",
                status::PLAY_PUBLISH_NOTIFY,
                "stream is now published",
            ),
        );
    }

    /// Sends an `onStatus` on a stream.
    pub fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.send_command(stream_id, &on_status(level, code, description));
    }

    /// Sends a media message through this connection's own encoder (for paths that do not
    /// use the shared encoding, such as a single test client).
    pub fn send_media(&mut self, stream_id: u32, kind: MediaKind, timestamp: u32, payload: Bytes) {
        let chunk_stream = match kind {
            MediaKind::Audio => csid::AUDIO,
            MediaKind::Video => csid::VIDEO,
        };
        let msg = RtmpMessage::new(kind.type_id(), stream_id, timestamp, payload);
        self.conn.send(chunk_stream, &msg);
    }

    /// Sends an AMF0 data message body (type 18) through this connection's own encoder.
    pub fn send_data(&mut self, stream_id: u32, timestamp: u32, payload: Bytes) {
        let msg = RtmpMessage::new(MessageType::DataAmf0.id(), stream_id, timestamp, payload);
        self.conn.send(csid::DATA, &msg);
    }

    /// Sends a Ping Request; `now_ms` is the caller's clock (the session has none).
    pub fn send_ping(&mut self, now_ms: u32) {
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::PingRequest(
                now_ms,
            )));
    }
}
