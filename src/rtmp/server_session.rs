//! The server role: one RTMP connection from an encoder or a player, as a state machine.
//!
//! Bytes read from the socket go into [`ServerSession::feed`]; what the peer asked for comes
//! out of [`ServerSession::poll_event`]; what must be written comes out of
//! [`ServerSession::poll_transmit`]. The session answers everything that needs no decision
//! on its own (handshake, control messages, pings, `createStream`, `releaseStream`,
//! `FCPublish`, unknown calls), and leaves the decisions — may this client connect to this
//! app, publish this key, play this stream; how long is it, can it seek or pause — to the
//! relay, which answers through `accept_*`, `reject_*`, `notify_*` and
//! `answer_stream_length`. No sockets, no clock: the caller passes the
//! epoch and the randomness seed in, so a test can replay a session byte for byte.
//!
//! Media from a player's point of view never passes through here on the relay's hot path:
//! the relay writes each message's shared encoding (`chunk::encode_shared`) straight to the
//! socket, after draining this session's own output.

use std::collections::VecDeque;

use bytes::Bytes;

use super::SessionError;
use super::amf0::Amf0Value;
use super::capabilities::{self, Capabilities};
use super::chunk::DecoderLimits;
use super::command::{Command, DataMessage, SET_DATA_FRAME, on_status, status, status_info};
use super::control::{BandwidthLimit, ControlMessage, UserControlEvent};
use super::handshake::ServerHandshake;
use super::message::{MessageType, RtmpMessage, csid};
use super::relay_path::RelayPath;
use super::session::{Connection, Incoming};
use crate::rtmp::aggregate::split_aggregate;

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
        page_url: Option<String>,
        /// The relays behind this connection, if it is another relay's pull or push.
        relay_path: RelayPath,
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
    /// `pause`: answer with [`ServerSession::notify_pause`].
    Pause {
        stream_id: u32,
        paused: bool,
        position_ms: f64,
    },
    /// `seek`: answer with [`ServerSession::notify_seek`] (the relay knows whether the
    /// stream can seek).
    Seek {
        stream_id: u32,
        position_ms: f64,
    },
    /// `getStreamLength` with a transaction id: answer with
    /// [`ServerSession::answer_stream_length`].
    StreamLengthRequested {
        transaction_id: f64,
        stream_key: String,
    },
    /// Set Buffer Length: how much the player buffers on a stream.
    BufferLength {
        stream_id: u32,
        buffer_ms: u32,
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
    conn: Connection,
    connect: ConnectState,
    app: String,
    /// What the client declared in `connect` (Enhanced RTMP codecs, `capsEx`).
    capabilities: Capabilities,
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
            conn: Connection::new(config.limits),
            connect: ConnectState::AwaitingConnect,
            app: String::new(),
            capabilities: Capabilities::default(),
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
            Some(hs) => match self.conn.feed_handshake(hs, input)? {
                None => return Ok(()),
                Some(rest) => {
                    let digest = matches!(
                        hs.kind(),
                        Some(super::handshake::HandshakeKind::Digest { .. })
                    );
                    self.handshake = None;
                    self.events
                        .push_back(ServerEvent::HandshakeComplete { digest });
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
                // A stored file is paced a player's buffer ahead; live streams ignore it.
                Incoming::UserControl(UserControlEvent::SetBufferLength {
                    stream_id,
                    buffer_ms,
                }) => self.events.push_back(ServerEvent::BufferLength {
                    stream_id,
                    buffer_ms,
                }),
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

    /// What the client declared in `connect` (Enhanced RTMP codecs, `capsEx`).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The client's `capsEx` (0 when it sent none).
    pub fn caps_ex(&self) -> u32 {
        self.capabilities.caps_ex
    }

    /// The app the client connected to (empty before `connect`).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Whether the client said (capsEx bit 0x01) it reconnects when asked to.
    pub fn supports_reconnect(&self) -> bool {
        self.capabilities.reconnect()
    }

    /// Asks the client to reconnect (Enhanced RTMP): `onStatus`
    /// `NetConnection.Connect.ReconnectRequest` on the connection, with `tcUrl` naming where
    /// when given; the client reconnects and resumes on its own schedule.
    pub fn request_reconnect(&mut self, tc_url: Option<&str>, description: &str) {
        let mut info = match status_info("status", status::CONNECT_RECONNECT_REQUEST, description) {
            Amf0Value::Object(fields) => fields,
            _ => Vec::new(),
        };
        if let Some(url) = tc_url {
            info.push(("tcUrl".to_owned(), Amf0Value::String(url.to_owned())));
        }
        let cmd = Command::new("onStatus", 0.0, Amf0Value::Null).arg(Amf0Value::Object(info));
        self.send_command(0, &cmd);
    }

    pub fn bytes_received(&self) -> u64 {
        self.conn.bytes_received()
    }

    pub fn outgoing_chunk_size(&self) -> u32 {
        self.conn.outgoing_chunk_size()
    }

    /// Switches the chunks sent from here on to `size` (a viewer of a stored file gets
    /// larger ones), announcing it with Set Chunk Size; nothing when it is already so.
    pub fn set_outgoing_chunk_size(&mut self, size: u32) {
        if size != self.conn.outgoing_chunk_size() {
            self.conn.set_outgoing_chunk_size(size);
        }
    }

    /// Back to the configured chunk size, which live streams' shared frames are encoded at.
    pub fn restore_chunk_size(&mut self) {
        self.set_outgoing_chunk_size(self.config.chunk_size);
    }

    /// Bytes held for the peer's partial messages, which
    /// [`DecoderLimits::max_buffered_bytes`] caps.
    pub fn buffered_bytes(&self) -> usize {
        self.conn.decoder().buffered_bytes()
    }

    /// Memory reserved for the peer's partial messages; see
    /// [`ChunkDecoder::reserved_bytes`](super::chunk::ChunkDecoder::reserved_bytes).
    pub fn reserved_bytes(&self) -> usize {
        self.conn.decoder().reserved_bytes()
    }

    /// How many chunk streams the peer has used, which
    /// [`DecoderLimits::max_chunk_streams`] caps.
    pub fn chunk_streams(&self) -> usize {
        self.conn.decoder().chunk_streams()
    }

    /// Received chunk-stream bytes not parsed yet: after `feed` returns, at most one
    /// partial chunk header ([`chunk::MAX_HEADER_LEN`](super::chunk::MAX_HEADER_LEN)).
    pub fn unparsed_bytes(&self) -> usize {
        self.conn.decoder().unparsed_bytes()
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
            "getStreamLength" => {
                // Only a stored file has a length; the relay looks it up.
                if tid != 0.0 {
                    let name = cmd
                        .arg_at(0)
                        .and_then(Amf0Value::as_str)
                        .unwrap_or_default();
                    self.events.push_back(ServerEvent::StreamLengthRequested {
                        transaction_id: tid,
                        stream_key: split_query(name).0,
                    });
                }
            }
            "releaseStream" | "_checkbw" => {
                if tid != 0.0 {
                    self.send_result(tid, Amf0Value::Undefined);
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
                self.events.push_back(ServerEvent::Pause {
                    stream_id,
                    paused,
                    position_ms,
                });
            }
            "seek" => {
                let position_ms = cmd.arg_at(0).and_then(Amf0Value::as_f64).unwrap_or(0.0);
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
        self.capabilities = Capabilities::from_connect(obj);
        self.connect = ConnectState::Requested {
            transaction_id: cmd.transaction_id as u64,
            encoding: encoding as u64,
        };
        self.events.push_back(ServerEvent::ConnectRequested {
            app,
            query,
            tc_url: text("tcUrl"),
            flash_ver: text("flashVer"),
            page_url: text("pageUrl"),
            relay_path: RelayPath::from_connect(obj),
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
        let mut properties = vec![
            ("fmsVer".into(), Amf0Value::String("FMS/3,0,1,123".into())),
            ("capabilities".into(), Amf0Value::Number(31.0)),
            ("mode".into(), Amf0Value::Number(1.0)),
        ];
        // Enhanced RTMP: the codecs relayed, CanForward for any, and capsEx.
        properties.extend(capabilities::server_properties());
        let properties = Amf0Value::Object(properties);
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

    /// Answers `getStreamLength` with the length in seconds (0 for a live stream).
    pub fn answer_stream_length(&mut self, transaction_id: f64, seconds: f64) {
        self.send_result(transaction_id, Amf0Value::Number(seconds));
    }

    /// Answers `pause`: `NetStream.Pause.Notify` or `NetStream.Unpause.Notify`.
    pub fn notify_pause(&mut self, stream_id: u32, paused: bool) {
        let (code, description) = if paused {
            (status::PAUSE_NOTIFY, "paused")
        } else {
            (status::UNPAUSE_NOTIFY, "unpaused")
        };
        self.send_command(stream_id, &on_status("status", code, description));
    }

    /// Answers `seek`. A stored file restarts (`recorded`): Stream EOF, `NetStream.Seek.Notify`
    /// and Stream Begin, the order Flash Media Server uses, so the player flushes its buffer
    /// before the new position's media. A live stream cannot seek: the notification alone.
    pub fn notify_seek(&mut self, stream_id: u32, recorded: bool) {
        if recorded {
            self.conn
                .send_control(ControlMessage::UserControl(UserControlEvent::StreamEof(
                    stream_id,
                )));
        }
        self.send_command(stream_id, &on_status("status", status::SEEK_NOTIFY, "seek"));
        if recorded {
            self.conn
                .send_control(ControlMessage::UserControl(UserControlEvent::StreamBegin(
                    stream_id,
                )));
        }
    }

    /// Tells a player a recorded stream has played to its end: `onPlayStatus`
    /// `NetStream.Play.Complete` (a data message, what Flash players end on), Stream EOF and
    /// `NetStream.Play.Stop` (on which ffmpeg finishes).
    pub fn notify_play_stopped(&mut self, stream_id: u32) {
        let complete = DataMessage {
            name: "onPlayStatus".to_owned(),
            values: vec![Amf0Value::object([
                ("level", Amf0Value::String("status".into())),
                ("code", Amf0Value::String(status::PLAY_COMPLETE.into())),
            ])],
        };
        self.send_data(stream_id, 0, complete.encode());
        self.conn
            .send_control(ControlMessage::UserControl(UserControlEvent::StreamEof(
                stream_id,
            )));
        self.send_command(
            stream_id,
            &on_status("status", status::PLAY_STOP, "end of the recording"),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{AudioCodec, VideoCodec, inspect_audio, inspect_video};
    use crate::rtmp::amf0;
    use crate::rtmp::chunk::{
        ChunkDecoder, ChunkEncoder, ChunkError, EXACT_ALLOC_LIMIT, MAX_HEADER_LEN,
    };
    use crate::rtmp::client_session::{ClientEvent, ClientSession, ClientSessionConfig};
    use crate::rtmp::handshake::{
        FLASH_PLAYER_KEY_TEXT, MEDIA_SERVER_KEY, MEDIA_SERVER_KEY_TEXT, PACKET_LEN,
        embedded_digest, find_digest, response_digest_is_valid,
    };
    use bytes::BytesMut;
    use proptest::prelude::*;

    /// ffmpeg 5.1 publishing to a default-config session; see tests/data/README.md.
    const FFMPEG_PUBLISH: &[u8] = include_bytes!("../../tests/data/ffmpeg_publish.bin");
    const HANDSHAKE_LEN: usize = 1 + 2 * PACKET_LEN;

    /// Takes the session's events, answering them as the relay does: connect, publish and
    /// play are accepted at once.
    fn answer(session: &mut ServerSession, events: &mut Vec<ServerEvent>) {
        while let Some(event) = session.poll_event() {
            match &event {
                ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                ServerEvent::PublishRequested { stream_id, .. } => {
                    session.accept_publish(*stream_id)
                }
                ServerEvent::PlayRequested {
                    stream_id, reset, ..
                } => session.accept_play(*stream_id, *reset, false),
                _ => {}
            }
            events.push(event);
        }
    }

    fn take_output(session: &mut ServerSession) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = session.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Feeds `input` in pieces of the given sizes (cycled), answering after each piece;
    /// returns the events and everything the session wrote.
    fn replay(
        config: ServerSessionConfig,
        input: &[u8],
        piece_sizes: &[usize],
    ) -> (Vec<ServerEvent>, Vec<u8>) {
        let mut session = ServerSession::new(config);
        let mut events = Vec::new();
        let mut out = Vec::new();
        let mut rest = input;
        for &size in piece_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
            rest = tail;
            session
                .feed(Bytes::copy_from_slice(piece))
                .expect("ffmpeg's bytes are valid");
            answer(&mut session, &mut events);
            out.extend(take_output(&mut session));
        }
        (events, out)
    }

    /// Decodes a whole chunk stream as the peer would.
    fn decode_chunks(bytes: &[u8]) -> Vec<RtmpMessage> {
        let mut dec = ChunkDecoder::new(DecoderLimits::default());
        dec.feed(Bytes::copy_from_slice(bytes));
        let mut messages = Vec::new();
        while let Some(msg) = dec.next_message().expect("a valid chunk stream") {
            messages.push(msg);
        }
        assert_eq!(
            dec.unparsed_bytes(),
            0,
            "the stream ends on a chunk boundary"
        );
        messages
    }

    fn packet(bytes: &[u8]) -> &[u8; PACKET_LEN] {
        bytes.try_into().unwrap()
    }

    #[test]
    fn ffmpeg_publish_capture_gives_the_exact_event_sequence() {
        let (events, _) = replay(ServerSessionConfig::default(), FFMPEG_PUBLISH, &[1]);
        let (metadata, video_header, audio_header, audio_frame) = match events.as_slice() {
            [
                ServerEvent::HandshakeComplete { digest: true },
                ServerEvent::ConnectRequested {
                    app,
                    query,
                    tc_url,
                    flash_ver,
                    page_url: None,
                    ..
                },
                ServerEvent::PublishRequested {
                    stream_id: 1,
                    stream_key,
                    query: publish_query,
                    mode: PublishMode::Live,
                },
                ServerEvent::Metadata {
                    stream_id: 1,
                    timestamp: 0,
                    payload: metadata,
                },
                ServerEvent::Media {
                    stream_id: 1,
                    kind: MediaKind::Video,
                    timestamp: 0,
                    payload: video_header,
                },
                ServerEvent::Media {
                    stream_id: 1,
                    kind: MediaKind::Audio,
                    timestamp: 0,
                    payload: audio_header,
                },
                ServerEvent::Media {
                    stream_id: 1,
                    kind: MediaKind::Audio,
                    timestamp: 0,
                    payload: audio_frame,
                },
            ] => {
                assert_eq!(app, "live");
                assert_eq!(query, "");
                assert_eq!(tc_url.as_deref(), Some("rtmp://127.0.0.1:36153/live"));
                assert_eq!(
                    flash_ver.as_deref(),
                    Some("FMLE/3.0 (compatible; Lavf59.27.100)")
                );
                assert_eq!(stream_key, "test");
                assert_eq!(publish_query, "");
                (metadata, video_header, audio_header, audio_frame)
            }
            other => panic!("unexpected events: {other:#?}"),
        };

        // `@setDataFrame` is stripped: viewers get `onMetaData` and the array.
        assert_eq!(metadata.len(), 293);
        let values = amf0::decode_all(metadata).unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].as_str(), Some("onMetaData"));
        let field = |k: &str| values[1].get(k).and_then(Amf0Value::as_f64);
        assert_eq!(field("width"), Some(160.0));
        assert_eq!(field("height"), Some(120.0));
        assert_eq!(field("framerate"), Some(25.0));
        assert_eq!(field("videocodecid"), Some(7.0));
        assert_eq!(field("audiocodecid"), Some(10.0));
        assert_eq!(field("audiosamplerate"), Some(44100.0));

        assert_eq!(video_header.len(), 44);
        let video = inspect_video(video_header).unwrap();
        assert_eq!(video.codec, VideoCodec::Avc);
        assert!(video.is_sequence_header);
        assert_eq!(video.frame_type, crate::media::codec::VideoFrameType::Key);
        assert_eq!(audio_header.len(), 7);
        let audio = inspect_audio(audio_header).unwrap();
        assert_eq!(audio.codec, AudioCodec::Aac);
        assert!(audio.is_sequence_header);
        assert_eq!(audio_frame.len(), 282);
        assert!(!inspect_audio(audio_frame).unwrap().is_sequence_header);
    }

    #[test]
    fn ffmpeg_publish_capture_gives_the_same_events_at_any_small_split() {
        let (whole, out) = replay(ServerSessionConfig::default(), FFMPEG_PUBLISH, &[1]);
        // ffmpeg waited for each answer, so a piece may finish one command but must not
        // hold the whole next one: its smallest command after connect is 45 bytes.
        for sizes in [&[32][..], &[7, 1, 13], &[3, 29, 2, 31], &[17, 5, 32, 32, 1]] {
            let (events, again) = replay(ServerSessionConfig::default(), FFMPEG_PUBLISH, sizes);
            assert_eq!(events, whole, "split {sizes:?}");
            assert_eq!(again, out, "split {sizes:?}");
        }
    }

    #[test]
    fn ffmpeg_publish_capture_handshake_digests_verify() {
        let (_, out) = replay(ServerSessionConfig::default(), FFMPEG_PUBLISH, &[1]);
        let c1 = packet(&FFMPEG_PUBLISH[1..1 + PACKET_LEN]);
        let c2 = packet(&FFMPEG_PUBLISH[1 + PACKET_LEN..HANDSHAKE_LEN]);
        let (c1_schema, c1_offset) =
            find_digest(c1, FLASH_PLAYER_KEY_TEXT).expect("ffmpeg signs its C1");
        assert_eq!(c1_schema, 0);
        let c1_digest = embedded_digest(c1, c1_offset).unwrap();

        assert_eq!(out[0], 3, "S0");
        let s1 = packet(&out[1..1 + PACKET_LEN]);
        let s2 = packet(&out[1 + PACKET_LEN..HANDSHAKE_LEN]);
        // What ffmpeg checks when it plays: S1 signed with the server key (in the schema of
        // C1), S2 answering C1's digest.
        let (s1_schema, _) =
            find_digest(s1, MEDIA_SERVER_KEY_TEXT).expect("S1 carries a valid digest");
        assert_eq!(s1_schema, 0);
        assert!(response_digest_is_valid(s2, &MEDIA_SERVER_KEY, &c1_digest));
        // A publishing ffmpeg echoes S1 as its C2 (it signs C2 only when playing). The seed
        // and epoch are the capture's, so this S1 is the very one ffmpeg saw.
        assert_eq!(c2, s1);
        assert_eq!(
            &s1[..8],
            &[0, 0, 0, 0, 4, 5, 0, 1][..],
            "epoch 0, version 4.5.0.1"
        );
    }

    fn command_of(msg: &RtmpMessage) -> Command {
        assert_eq!(msg.type_id, MessageType::CommandAmf0.id(), "{msg:?}");
        Command::parse(msg).unwrap()
    }

    fn info_code(cmd: &Command) -> Option<&str> {
        cmd.arg_at(0)?.get("code")?.as_str()
    }

    #[test]
    fn ffmpeg_publish_capture_answers_are_what_ffmpeg_accepts() {
        let (_, out) = replay(ServerSessionConfig::default(), FFMPEG_PUBLISH, &[1]);
        let messages = decode_chunks(&out[HANDSHAKE_LEN..]);
        let calls: Vec<_> = messages
            .iter()
            .filter(|m| m.type_id == MessageType::CommandAmf0.id())
            .map(|m| {
                let c = command_of(m);
                let code = info_code(&c).map(str::to_owned);
                (m.stream_id, c.name, c.transaction_id, code)
            })
            .collect();
        let owned = |sid: u32, name: &str, tid: f64, code: Option<&str>| {
            (sid, name.to_owned(), tid, code.map(str::to_owned))
        };
        // ffmpeg's calls: connect (1), releaseStream (2), FCPublish (3), createStream (4),
        // `_checkbw` (5, its answer to onBWDone), publish (6, on stream 1).
        assert_eq!(
            calls,
            [
                owned(0, "_result", 1.0, Some(status::CONNECT_SUCCESS)),
                owned(0, "onBWDone", 0.0, None),
                owned(0, "_result", 2.0, None),
                owned(0, "onFCPublish", 0.0, Some(status::PUBLISH_START)),
                owned(0, "_result", 4.0, None),
                owned(0, "_result", 5.0, None),
                owned(1, "onStatus", 0.0, Some(status::PUBLISH_START)),
            ]
        );
        let control: Vec<_> = messages
            .iter()
            .filter(|m| m.type_id != MessageType::CommandAmf0.id())
            .map(|m| ControlMessage::parse(m).unwrap().unwrap())
            .collect();
        assert_eq!(
            control,
            [
                ControlMessage::WindowAckSize(2_500_000),
                ControlMessage::SetPeerBandwidth {
                    size: 2_500_000,
                    limit: BandwidthLimit::Dynamic
                },
                ControlMessage::SetChunkSize(4096),
                ControlMessage::UserControl(UserControlEvent::StreamBegin(1)),
            ]
        );
        // Window, bandwidth and chunk size come before the connect `_result`, and Stream
        // Begin before `NetStream.Publish.Start`.
        let types: Vec<u8> = messages.iter().map(|m| m.type_id).collect();
        assert_eq!(types, [5, 6, 1, 20, 20, 20, 20, 20, 20, 4, 20]);

        let connect = command_of(&messages[3]);
        assert_eq!(
            connect
                .command_object
                .get("fmsVer")
                .and_then(Amf0Value::as_str),
            Some("FMS/3,0,1,123")
        );
        // ffmpeg takes the stream id from the number after the null command object.
        let create = command_of(&messages[7]);
        assert_eq!(create.command_object, Amf0Value::Null);
        assert_eq!(create.arg_at(0), Some(&Amf0Value::Number(1.0)));
        // ffmpeg starts sending media on an `onStatus` with this code at level "status".
        let publish = command_of(&messages[10]);
        assert_eq!(
            publish
                .arg_at(0)
                .and_then(|i| i.get("level"))
                .and_then(Amf0Value::as_str),
            Some("status")
        );
    }

    /// A session past a plain handshake, its S0+S1+S2 taken.
    fn handshaken(config: ServerSessionConfig) -> ServerSession {
        let mut session = ServerSession::new(config);
        let mut hello = vec![3u8];
        hello.resize(HANDSHAKE_LEN, 0);
        session.feed(Bytes::from(hello)).unwrap();
        assert_eq!(
            session.poll_event(),
            Some(ServerEvent::HandshakeComplete { digest: false })
        );
        assert_eq!(take_output(&mut session).len(), HANDSHAKE_LEN);
        session
    }

    fn command_msg(stream_id: u32, cmd: &Command) -> RtmpMessage {
        cmd.to_message(stream_id)
    }

    /// Chunks messages as a client would, all on chunk stream 3.
    fn client_chunks(messages: &[RtmpMessage]) -> Bytes {
        let mut enc = ChunkEncoder::new();
        let mut out = BytesMut::new();
        for msg in messages {
            enc.encode(3, msg, &mut out);
        }
        out.freeze()
    }

    /// A handshaken session whose connect has been accepted, and what it wrote after the
    /// handshake.
    fn connected(config: ServerSessionConfig) -> (ServerSession, Vec<u8>) {
        let mut session = handshaken(config);
        let app = Amf0Value::object([("app", Amf0Value::String("live".into()))]);
        let connect = Command::new("connect", 1.0, app);
        session
            .feed(client_chunks(&[command_msg(0, &connect)]))
            .unwrap();
        let mut events = Vec::new();
        answer(&mut session, &mut events);
        assert!(matches!(
            events.as_slice(),
            [ServerEvent::ConnectRequested { .. }]
        ));
        let out = take_output(&mut session);
        (session, out)
    }

    /// The commands in a server's chunk stream, decoded from its start after the handshake.
    fn commands_in(out: &[u8]) -> Vec<Command> {
        decode_chunks(out)
            .iter()
            .filter(|m| m.type_id == MessageType::CommandAmf0.id())
            .map(command_of)
            .collect()
    }

    #[test]
    fn create_stream_is_capped_at_max_streams() {
        let config = ServerSessionConfig {
            max_streams: 3,
            ..ServerSessionConfig::default()
        };
        let (mut session, mut out) = connected(config);
        let create = |tid: f64| command_msg(0, &Command::new("createStream", tid, Amf0Value::Null));
        let delete = Command::new("deleteStream", 0.0, Amf0Value::Null).arg(2.0);
        let mut enc = ChunkEncoder::new();
        let mut wire = BytesMut::new();
        for msg in [create(2.0), create(3.0), create(4.0), create(5.0)] {
            enc.encode(3, &msg, &mut wire);
        }
        session.feed(wire.split().freeze()).unwrap();
        assert_eq!(session.stream_count(), 3);
        // Deleting a stream frees its id for the next createStream.
        for msg in [command_msg(0, &delete), create(6.0)] {
            enc.encode(3, &msg, &mut wire);
        }
        session.feed(wire.freeze()).unwrap();
        assert_eq!(session.stream_count(), 3);
        out.extend(take_output(&mut session));

        let replies: Vec<_> = commands_in(&out)
            .into_iter()
            .skip(2) // the connect `_result` and onBWDone
            .map(|c| {
                let code = info_code(&c).map(str::to_owned);
                (
                    c.name.clone(),
                    c.transaction_id,
                    c.arg_at(0).and_then(Amf0Value::as_f64),
                    code,
                )
            })
            .collect();
        let reply = |name: &str, tid: f64, id: Option<f64>, code: Option<&str>| {
            (name.to_owned(), tid, id, code.map(str::to_owned))
        };
        assert_eq!(
            replies,
            [
                reply("_result", 2.0, Some(1.0), None),
                reply("_result", 3.0, Some(2.0), None),
                reply("_result", 4.0, Some(3.0), None),
                reply("_error", 5.0, None, Some(status::CALL_FAILED)),
                reply("_result", 6.0, Some(2.0), None),
            ]
        );
    }

    fn small_limits() -> DecoderLimits {
        DecoderLimits {
            max_message_len: 1000,
            max_chunk_streams: 3,
            max_buffered_bytes: 1500,
        }
    }

    fn with_limits(limits: DecoderLimits) -> ServerSessionConfig {
        ServerSessionConfig {
            limits,
            ..ServerSessionConfig::default()
        }
    }

    /// A format-0 header on `csid` for a message of `len` bytes of type 9 on stream 1.
    fn header0(csid: u8, len: u32) -> Vec<u8> {
        let mut h = vec![csid, 0, 0, 0];
        h.extend_from_slice(&len.to_be_bytes()[1..]);
        h.push(9);
        h.extend_from_slice(&1u32.to_le_bytes());
        h
    }

    #[test]
    fn session_enforces_the_message_length_limit() {
        let mut at_limit = handshaken(with_limits(small_limits()));
        at_limit.feed(Bytes::from(header0(4, 1000))).unwrap();
        let mut session = handshaken(with_limits(small_limits()));
        let err = session.feed(Bytes::from(header0(5, 1001))).unwrap_err();
        assert!(
            matches!(
                err,
                SessionError::Chunk(ChunkError::MessageTooLong {
                    len: 1001,
                    limit: 1000
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn session_enforces_the_chunk_stream_limit() {
        let mut session = handshaken(with_limits(small_limits()));
        for csid in 4..7 {
            let mut chunk = header0(csid, 1);
            chunk.push(0x17);
            session.feed(Bytes::from(chunk)).unwrap();
        }
        let err = session.feed(Bytes::from(header0(7, 1))).unwrap_err();
        assert!(
            matches!(
                err,
                SessionError::Chunk(ChunkError::TooManyChunkStreams { limit: 3 })
            ),
            "{err}"
        );
    }

    #[test]
    fn session_enforces_the_buffered_bytes_limit() {
        let mut session = handshaken(with_limits(small_limits()));
        session.feed(Bytes::from(header0(4, 1000))).unwrap();
        session.feed(Bytes::from(vec![0u8; 128])).unwrap();
        let mut next = header0(5, 1000);
        next.extend_from_slice(&[0u8; 128]);
        session.feed(Bytes::from(next)).unwrap();
        assert_eq!(session.buffered_bytes(), 256);
        // Messages of 1000 bytes complete with their eighth chunk; six more chunks on each
        // stream would hold 1792 bytes, past the 1500 limit.
        let mut err = None;
        for round in 0..6 {
            for csid in [4u8, 5] {
                let mut chunk = vec![0xC0 | csid];
                chunk.extend_from_slice(&[round; 128]);
                if let Err(e) = session.feed(Bytes::from(chunk)) {
                    err = Some(e);
                    break;
                }
                assert!(session.buffered_bytes() <= 1500);
            }
        }
        let err = err.expect("the limit was hit");
        assert!(
            matches!(
                err,
                SessionError::Chunk(ChunkError::BufferedTooMuch { limit: 1500 })
            ),
            "{err}"
        );
    }

    #[test]
    fn session_errors_are_final() {
        let mut session = handshaken(with_limits(small_limits()));
        assert!(session.feed(Bytes::from(header0(5, 1001))).is_err());
        assert!(session.feed(Bytes::from(header0(4, 10))).is_err());
    }

    /// Plausible client messages: the commands of publishers and players with random
    /// arguments, media, data and control, on random chunk streams and message streams.
    fn arb_client_message() -> impl Strategy<Value = (u32, RtmpMessage)> {
        let name = prop_oneof![
            Just("connect"),
            Just("createStream"),
            Just("releaseStream"),
            Just("FCPublish"),
            Just("FCUnpublish"),
            Just("publish"),
            Just("play"),
            Just("play2"),
            Just("pause"),
            Just("seek"),
            Just("receiveAudio"),
            Just("closeStream"),
            Just("deleteStream"),
            Just("getStreamLength"),
            Just("nonsense"),
        ];
        let arg = prop_oneof![
            Just(Amf0Value::Null),
            prop_oneof![Just("key"), Just("key?token=1"), Just(""), Just("live")]
                .prop_map(|s| Amf0Value::String(s.into())),
            (0u8..4).prop_map(|n| Amf0Value::Number(f64::from(n))),
            any::<bool>().prop_map(Amf0Value::Boolean),
            Just(Amf0Value::object([
                ("app", Amf0Value::String("live/x?y".into())),
                ("objectEncoding", Amf0Value::Number(3.0)),
                ("streamName", Amf0Value::String("key".into())),
            ])),
        ];
        let command = (
            name,
            0u8..6,
            arg.clone(),
            proptest::collection::vec(arg, 0..4),
        )
            .prop_map(|(name, tid, obj, args)| {
                let mut cmd = Command::new(name, f64::from(tid), obj);
                cmd.args = args;
                (20u8, cmd.encode().to_vec())
            });
        let data = prop_oneof![
            Just(
                b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"
                    .to_vec()
            ),
            Just(b"\x02\x00\x0aonTextData\x02\x00\x01x".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ]
        .prop_map(|p| (18u8, p));
        let other = (
            prop_oneof![
                Just(1u8),
                Just(2),
                Just(3),
                Just(4),
                Just(5),
                Just(6),
                Just(8),
                Just(9),
                Just(15),
                Just(17),
                Just(22),
                any::<u8>()
            ],
            proptest::collection::vec(any::<u8>(), 0..300),
        );
        let body = prop_oneof![3 => command, 1 => data, 2 => other];
        (
            prop_oneof![Just(3u32), Just(4), Just(5), Just(8), 2u32..400],
            body,
            0u32..4,
            prop_oneof![any::<u32>(), 0u32..100],
        )
            .prop_map(|(csid, (type_id, payload), stream_id, timestamp)| {
                (
                    csid,
                    RtmpMessage::new(type_id, stream_id, timestamp, payload),
                )
            })
    }

    /// Pieces of `bytes` cut at `cuts` (positions taken modulo the length).
    fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
            .collect()
    }

    /// Feeds pieces until an error, checking the limits after every feed.
    fn feed_checked(
        mut session: ServerSession,
        pieces: Vec<Bytes>,
        limits: DecoderLimits,
    ) -> Result<(), TestCaseError> {
        let mut events = Vec::new();
        for piece in pieces {
            let result = session.feed(piece);
            prop_assert!(session.buffered_bytes() <= limits.max_buffered_bytes);
            prop_assert!(session.chunk_streams() <= limits.max_chunk_streams);
            prop_assert!(
                session.reserved_bytes()
                    <= 2 * session.buffered_bytes() + session.chunk_streams() * EXACT_ALLOC_LIMIT
            );
            if result.is_err() {
                break;
            }
            prop_assert!(session.unparsed_bytes() <= MAX_HEADER_LEN);
            answer(&mut session, &mut events);
            take_output(&mut session);
        }
        for event in &events {
            if let ServerEvent::Media { payload, .. } | ServerEvent::Data { payload, .. } = event {
                prop_assert!(payload.len() <= limits.max_message_len as usize);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_bytes_never_panic_nor_exceed_limits(
            handshake_first in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..6000),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let limits = small_limits();
            let session = if handshake_first {
                handshaken(with_limits(limits))
            } else {
                ServerSession::new(with_limits(limits))
            };
            feed_checked(session, cut(&bytes, &cuts), limits)?;
        }

        #[test]
        fn client_message_soup_never_panics_nor_exceeds_limits(
            messages in proptest::collection::vec(arb_client_message(), 0..40),
            chunk_size in prop_oneof![Just(128u32), 1u32..300],
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let limits = small_limits();
            let mut enc = ChunkEncoder::new();
            let mut wire = BytesMut::new();
            let connect = Command::new(
                "connect",
                1.0,
                Amf0Value::object([("app", Amf0Value::String("live".into()))]),
            );
            enc.encode(3, &connect.to_message(0), &mut wire);
            enc.encode(2, &ControlMessage::SetChunkSize(chunk_size).to_message(), &mut wire);
            enc.set_chunk_size(chunk_size);
            for (csid, msg) in &messages {
                // Keep each message within the limits, so the session gets past them.
                if msg.payload.len() <= limits.max_message_len as usize {
                    enc.encode(*csid, msg, &mut wire);
                }
            }
            let mut wire = wire.to_vec();
            if !wire.is_empty() {
                for (at, xor) in flips {
                    let n = wire.len();
                    wire[at % n] ^= xor;
                }
            }
            feed_checked(handshaken(with_limits(limits)), cut(&wire, &cuts), limits)?;
        }
    }

    /// Moves bytes both ways until both sides are quiet, answering the server's events as
    /// the relay does and cutting what the client sends at `cuts`.
    fn pump(
        client: &mut ClientSession,
        server: &mut ServerSession,
        server_events: &mut Vec<ServerEvent>,
        client_events: &mut Vec<ClientEvent>,
        cuts: &[usize],
    ) {
        loop {
            let mut moved = false;
            while let Some(bytes) = client.poll_transmit() {
                for piece in cut(&bytes, cuts) {
                    server.feed(piece).expect("the server accepts the client");
                    answer(server, server_events);
                }
                moved = true;
            }
            while let Some(bytes) = server.poll_transmit() {
                client.feed(bytes).expect("the client accepts the server");
                client_events.extend(std::iter::from_fn(|| client.poll_event()));
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn arb_chunk_size() -> impl Strategy<Value = u32> {
        prop_oneof![1u32..16, 16u32..600, Just(128), Just(4096), Just(65536)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn published_media_arrives_unchanged_through_a_loopback(
            media in proptest::collection::vec(
                (
                    any::<bool>(),
                    prop_oneof![0u32..100_000, any::<u32>()],
                    proptest::collection::vec(any::<u8>(), 0..700),
                ),
                0..30,
            ),
            client_chunk_size in arb_chunk_size(),
            server_chunk_size in arb_chunk_size(),
            digest in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut client_config = ClientSessionConfig::new("live", "rtmp://localhost/live");
            client_config.chunk_size = client_chunk_size;
            if digest {
                client_config.handshake =
                    crate::rtmp::handshake::ClientHandshakeMode::Digest { schema: 0 };
            }
            let mut client = ClientSession::new(client_config);
            let mut server = ServerSession::new(ServerSessionConfig {
                chunk_size: server_chunk_size,
                ..ServerSessionConfig::default()
            });
            let mut server_events = Vec::new();
            let mut client_events = Vec::new();
            client.publish("key");
            pump(&mut client, &mut server, &mut server_events, &mut client_events, &cuts);
            let stream_id = client.stream_id().expect("createStream answered");
            let started = ClientEvent::PublishStarted { stream_id };
            prop_assert!(client_events.contains(&started), "no PublishStarted");
            prop_assert_eq!(server.outgoing_chunk_size(), server_chunk_size);
            server_events.clear();

            let sent: Vec<ServerEvent> = media
                .into_iter()
                .map(|(audio, timestamp, payload)| ServerEvent::Media {
                    stream_id,
                    kind: if audio { MediaKind::Audio } else { MediaKind::Video },
                    timestamp,
                    payload: Bytes::from(payload),
                })
                .collect();
            for event in &sent {
                if let ServerEvent::Media { kind, timestamp, payload, .. } = event {
                    client.send_media(*kind, *timestamp, payload.clone());
                }
            }
            pump(&mut client, &mut server, &mut server_events, &mut client_events, &cuts);
            prop_assert_eq!(server_events, sent);
        }
    }
}
