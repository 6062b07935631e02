//! The chunk-level state both roles share once the handshake is done.
//!
//! [`Connection`] owns the chunk decoder and the per-connection chunk encoder, keeps the
//! acknowledgement bookkeeping the specification asks of a receiver (send Acknowledgement
//! each time the peer's window of bytes has been received), answers pings, honours Set Peer
//! Bandwidth, and collects what is to be written in one output buffer. Control messages stop
//! here; everything else goes up to `server.rs` or `client.rs`.

use bytes::{Bytes, BytesMut};

use super::SessionError;
use super::chunk::{ChunkDecoder, ChunkEncoder, DecoderLimits};
use super::control::{ControlMessage, UserControlEvent};
use super::handshake::{Handshake, HandshakeError};
use super::message::{MessageType, RtmpMessage, csid};

/// What the connection hands up to the role after filtering out control traffic.
#[derive(Debug)]
pub(crate) enum Incoming {
    Message(RtmpMessage),
    /// User control events a role may care about (Stream Begin, Stream EOF, ...). Pings are
    /// answered here and not passed up.
    UserControl(UserControlEvent),
}

pub(crate) struct Connection {
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: BytesMut,
    /// The peer's Window Acknowledgement Size: we acknowledge every this many bytes.
    peer_window: u32,
    /// `decoder.bytes_received()` when we last sent an Acknowledgement.
    acked_at: u64,
    /// The window we last announced to the peer (Set Peer Bandwidth asks us to match it).
    announced_window: u32,
}

impl Connection {
    pub(crate) fn new(limits: DecoderLimits) -> Connection {
        Connection {
            decoder: ChunkDecoder::new(limits),
            encoder: ChunkEncoder::new(),
            out: BytesMut::with_capacity(4096),
            peer_window: 0,
            acked_at: 0,
            announced_window: 0,
        }
    }

    pub(crate) fn feed(&mut self, input: Bytes) {
        self.decoder.feed(input);
    }

    /// Decodes the next message that is not protocol control, handling control on the way.
    pub(crate) fn next_incoming(&mut self) -> Result<Option<Incoming>, SessionError> {
        loop {
            let msg = match self.decoder.next_message()? {
                Some(msg) => msg,
                None => {
                    self.maybe_acknowledge();
                    return Ok(None);
                }
            };
            self.maybe_acknowledge();
            let is_control = msg
                .message_type()
                .is_some_and(MessageType::is_protocol_control);
            if !is_control {
                return Ok(Some(Incoming::Message(msg)));
            }
            match ControlMessage::parse(&msg)? {
                // The decoder already applied Set Chunk Size and Abort; nothing else to do.
                Some(ControlMessage::SetChunkSize(_) | ControlMessage::Abort { .. }) => {}
                Some(ControlMessage::Acknowledgement { .. }) => {}
                Some(ControlMessage::WindowAckSize(size)) => self.peer_window = size,
                Some(ControlMessage::SetPeerBandwidth { size, .. })
                    if size != self.announced_window =>
                {
                    self.send_window_ack_size(size);
                }
                Some(ControlMessage::SetPeerBandwidth { .. }) => {}
                Some(ControlMessage::UserControl(UserControlEvent::PingRequest(t))) => {
                    self.send_control(ControlMessage::UserControl(UserControlEvent::PingResponse(
                        t,
                    )));
                }
                Some(ControlMessage::UserControl(UserControlEvent::PingResponse(_))) => {}
                Some(ControlMessage::UserControl(event)) => {
                    return Ok(Some(Incoming::UserControl(event)));
                }
                None => {}
            }
        }
    }

    fn maybe_acknowledge(&mut self) {
        let received = self.decoder.bytes_received();
        if self.peer_window > 0 && received - self.acked_at >= u64::from(self.peer_window) {
            self.acked_at = received;
            // The sequence number is the byte count so far, wrapping as the spec's u32 does.
            self.send_control(ControlMessage::Acknowledgement {
                sequence: received as u32,
            });
        }
    }

    pub(crate) fn send_window_ack_size(&mut self, size: u32) {
        self.announced_window = size;
        self.send_control(ControlMessage::WindowAckSize(size));
    }

    pub(crate) fn send_control(&mut self, control: ControlMessage) {
        let msg = control.to_message();
        self.encoder
            .encode(csid::PROTOCOL_CONTROL, &msg, &mut self.out);
    }

    /// Announces and switches to a new outgoing chunk size. The announcement itself goes out
    /// at the old size, as the peer still reads with it.
    pub(crate) fn set_outgoing_chunk_size(&mut self, size: u32) {
        self.send_control(ControlMessage::SetChunkSize(size));
        self.encoder.set_chunk_size(size);
    }

    pub(crate) fn outgoing_chunk_size(&self) -> u32 {
        self.encoder.chunk_size()
    }

    pub(crate) fn send(&mut self, chunk_stream: u32, msg: &RtmpMessage) {
        self.encoder.encode(chunk_stream, msg, &mut self.out);
    }

    /// Drives the handshake with `input`. Returns the bytes that follow it once it is
    /// complete (the first chunk-stream data), or None while it is still going.
    pub(crate) fn feed_handshake(
        &mut self,
        handshake: &mut impl Handshake,
        input: Bytes,
    ) -> Result<Option<Bytes>, HandshakeError> {
        let used = handshake.feed(&input)?;
        while let Some(out) = handshake.poll_transmit() {
            self.write_raw(&out);
        }
        Ok(handshake
            .is_complete()
            .then(|| input.slice(used.min(input.len())..)))
    }

    pub(crate) fn write_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    pub(crate) fn bytes_received(&self) -> u64 {
        self.decoder.bytes_received()
    }

    pub(crate) fn decoder(&self) -> &ChunkDecoder {
        &self.decoder
    }
}
