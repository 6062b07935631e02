//! The RTMP handshake, for both the server and the client side, as a pure state machine.
//!
//! Before any chunk flows, each side sends a version byte (C0/S0, always 3 for plain RTMP)
//! and two 1536-byte packets: its own "1" packet (C1/S1: a 4-byte time, 4 more bytes, and
//! random filler) and an answer to the peer's (C2/S2). The answer ties the two sides
//! together: the peer can check that its packet was really received.
//!
//! Two flavours exist in the wild:
//!
//! * The *plain* handshake of the published specification: bytes 4..8 of the 1 packet are
//!   zero and the 2 packet echoes the peer's 1 packet.
//! * The *digest* handshake that Flash Player and Flash Media Server introduced (and that
//!   ffmpeg, librtmp, OBS and nginx-rtmp speak): the 1 packet hides an HMAC-SHA256 digest
//!   at an offset derived from four of its own bytes, keyed with a well-known "Genuine
//!   Adobe ..." string, and the 2 packet ends with an HMAC keyed by the peer's digest. Some
//!   players (ffmpeg when playing, Flash Player) refuse a server whose S1/S2 do not verify,
//!   so a server has to answer a digest C1 in kind.
//!
//! Nothing here touches a socket, a clock or a global random source: the caller hands in
//! received bytes with `feed`, takes bytes to send from `poll_transmit`, and supplies the
//! time field and a seed for the filler bytes at construction. That keeps the handshake
//! deterministic under test and usable from any I/O model.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Version byte of plain (unencrypted) RTMP, carried in C0 and S0.
pub const RTMP_VERSION: u8 = 3;

/// Version byte that asks for RTMPE, the obfuscated variant, which this relay does not speak.
pub const RTMPE_VERSION: u8 = 6;

/// Size of every C1, S1, C2 and S2 packet.
pub const PACKET_LEN: usize = 1536;

/// Size of an HMAC-SHA256 digest as embedded in handshake packets.
pub const DIGEST_LEN: usize = 32;

/// Offset of the response digest in C2/S2: it fills the packet's last 32 bytes.
const RESPONSE_DIGEST_OFFSET: usize = PACKET_LEN - DIGEST_LEN;

/// The public text part of the key a Flash Player client signs C1 with.
pub const FLASH_PLAYER_KEY_TEXT: &[u8; 30] = b"Genuine Adobe Flash Player 001";

/// The public text part of the key a Flash Media Server signs S1 with.
pub const MEDIA_SERVER_KEY_TEXT: &[u8; 36] = b"Genuine Adobe Flash Media Server 001";

/// The 32 bytes that follow the text in the full keys used for the C2/S2 response digests.
const KEY_SUFFIX: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
    0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];

/// Full Flash Player key (text + suffix, 62 bytes): the root of the client's C2 digest.
pub const FLASH_PLAYER_KEY: [u8; 62] = join_key(FLASH_PLAYER_KEY_TEXT);

/// Full Flash Media Server key (text + suffix, 68 bytes): the root of the server's S2 digest.
pub const MEDIA_SERVER_KEY: [u8; 68] = join_key(MEDIA_SERVER_KEY_TEXT);

/// What a server advertises in S1 bytes 4..8 of a digest handshake. Clients such as ffmpeg
/// only bother to verify S1/S2 when the first byte is at least 3, and verifying is what we
/// want them to do, so this must look like a real FMS version.
const SERVER_VERSION: [u8; 4] = [0x04, 0x05, 0x00, 0x01];

/// What our client advertises in C1 bytes 4..8 of a digest handshake. Servers key off a
/// non-zero value here to expect a digest, so it must not be zero.
const CLIENT_VERSION: [u8; 4] = [0x0A, 0x00, 0x2D, 0x02];

/// Builds a full key at compile time; a `const fn` so the keys are plain constants.
const fn join_key<const N: usize>(text: &[u8]) -> [u8; N] {
    let mut key = [0u8; N];
    let mut i = 0;
    while i < text.len() {
        key[i] = text[i];
        i += 1;
    }
    let mut j = 0;
    while j < KEY_SUFFIX.len() {
        key[text.len() + j] = KEY_SUFFIX[j];
        j += 1;
    }
    key
}

/// Why a handshake could not go on. Every error is final for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The peer's C0/S0 asked for a protocol version other than plain RTMP.
    #[error("unsupported RTMP version {0}{hint}", hint = version_hint(*.0))]
    UnsupportedVersion(u8),
}

/// Extra words for versions whose meaning is known, so logs say why a client failed.
fn version_hint(version: u8) -> &'static str {
    if version == RTMPE_VERSION {
        " (RTMPE, the encrypted handshake, is not supported)"
    } else {
        ""
    }
}

/// Which handshake flavour a connection ended up using.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeKind {
    /// Echo-style handshake without digests.
    Plain,
    /// Digest handshake; `schema` 0 keeps the digest in the first 764-byte block of the
    /// 1 packet, schema 1 in the second.
    Digest { schema: u8 },
}

/// How a [`ClientHandshake`] builds its C1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientHandshakeMode {
    /// Zero version field and no digest, as in the published specification.
    Plain,
    /// Signed C1 as Flash Player sends it. `schema` 0 (what Flash Player and ffmpeg use)
    /// puts the digest in the first block; any other value puts it in the second block.
    Digest { schema: u8 },
}

/// The offset of a 1 packet's digest under `schema`, computed from the packet's own bytes.
///
/// Each 764-byte block starts (schema 0: after the 8-byte header) with four bytes whose sum
/// picks where in the rest of the block the 32 digest bytes sit.
pub fn digest_offset(packet: &[u8; PACKET_LEN], schema: u8) -> Option<usize> {
    let offset_field_start: usize = match schema {
        0 => 8,
        1 => 772,
        _ => return None,
    };
    let offset_field = packet.get(offset_field_start..offset_field_start + 4)?;
    let sum: usize = offset_field.iter().map(|&byte| usize::from(byte)).sum();
    Some(sum % 728 + offset_field_start + 4)
}

/// Creates an HMAC-SHA256 instance. HMAC accepts keys of every length (long keys are hashed
/// first), so the `InvalidLength` branch of the generic `KeyInit` API cannot happen here.
fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// HMAC over a 1 packet with the 32 bytes at `digest_offset` left out: the value that
/// belongs in those 32 bytes. `None` if the digest would not fit in the packet.
pub fn packet_digest(
    packet: &[u8; PACKET_LEN],
    digest_offset: usize,
    key: &[u8],
) -> Option<[u8; DIGEST_LEN]> {
    let before = packet.get(..digest_offset)?;
    let after = packet.get(digest_offset.checked_add(DIGEST_LEN)?..)?;
    let mut mac = hmac_sha256(key);
    mac.update(before);
    mac.update(after);
    Some(mac.finalize().into_bytes().into())
}

/// Looks for a valid digest signed with `key` in a 1 packet, trying schema 0 then schema 1.
/// Returns the schema and the digest's offset.
pub fn find_digest(packet: &[u8; PACKET_LEN], key: &[u8]) -> Option<(u8, usize)> {
    [0u8, 1].into_iter().find_map(|schema| {
        let offset = digest_offset(packet, schema)?;
        let embedded = packet.get(offset..offset + DIGEST_LEN)?;
        let expected = packet_digest(packet, offset, key)?;
        // The keys are public, so a constant-time comparison buys nothing here.
        (embedded == expected).then_some((schema, offset))
    })
}

/// The digest embedded in a 1 packet at `offset`, as found by [`find_digest`].
pub fn embedded_digest(packet: &[u8; PACKET_LEN], offset: usize) -> Option<[u8; DIGEST_LEN]> {
    packet
        .get(offset..offset.checked_add(DIGEST_LEN)?)?
        .try_into()
        .ok()
}

/// The trailing digest a C2/S2 should carry: HMAC over its first 1504 bytes, keyed with
/// HMAC(`full_key`, the digest from the peer's 1 packet).
pub fn response_digest(
    packet: &[u8; PACKET_LEN],
    full_key: &[u8],
    peer_digest: &[u8; DIGEST_LEN],
) -> [u8; DIGEST_LEN] {
    let mut key_mac = hmac_sha256(full_key);
    key_mac.update(peer_digest);
    let response_key = key_mac.finalize().into_bytes();
    let mut mac = hmac_sha256(&response_key);
    mac.update(packet.split_at(RESPONSE_DIGEST_OFFSET).0);
    mac.finalize().into_bytes().into()
}

/// Whether a C2/S2 ends with the digest [`response_digest`] expects.
pub fn response_digest_is_valid(
    packet: &[u8; PACKET_LEN],
    full_key: &[u8],
    peer_digest: &[u8; DIGEST_LEN],
) -> bool {
    packet.split_at(RESPONSE_DIGEST_OFFSET).1 == response_digest(packet, full_key, peer_digest)
}

/// SplitMix64: tiny, fast, and fine with any seed including 0. The filler bytes only need
/// to differ between connections, not to be secret, so no cryptographic generator is needed.
#[derive(Debug, Clone)]
struct FillerRng {
    state: u64,
}

impl FillerRng {
    fn new(seed: u64) -> Self {
        FillerRng { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            for (dst, src) in chunk.iter_mut().zip(self.next_u64().to_le_bytes()) {
                *dst = src;
            }
        }
    }
}

/// Collects one 1536-byte packet across as many `feed` calls as the network needs.
#[derive(Debug, Clone)]
struct PacketAssembler {
    bytes: Box<[u8; PACKET_LEN]>,
    filled: usize,
}

impl PacketAssembler {
    fn new() -> Self {
        PacketAssembler {
            bytes: Box::new([0u8; PACKET_LEN]),
            filled: 0,
        }
    }

    /// Takes what is still missing from the front of `input`; returns how much it took.
    fn fill_from(&mut self, input: &[u8]) -> usize {
        let take = (PACKET_LEN - self.filled).min(input.len());
        if let (Some(dst), Some(src)) = (
            self.bytes.get_mut(self.filled..self.filled + take),
            input.get(..take),
        ) {
            dst.copy_from_slice(src);
            self.filled += take;
            take
        } else {
            0
        }
    }

    fn is_complete(&self) -> bool {
        self.filled == PACKET_LEN
    }

    fn packet(&self) -> &[u8; PACKET_LEN] {
        &self.bytes
    }

    fn reset(&mut self) {
        self.filled = 0;
    }
}

/// A 1 packet: our time, a version field, and filler from `rng`.
fn new_packet(time: u32, version: [u8; 4], rng: &mut FillerRng) -> Box<[u8; PACKET_LEN]> {
    let mut packet = Box::new([0u8; PACKET_LEN]);
    let (header, filler) = packet.split_at_mut(8);
    header[..4].copy_from_slice(&time.to_be_bytes());
    header[4..].copy_from_slice(&version);
    rng.fill(filler);
    packet
}

/// Writes a schema-`schema` digest keyed with `key` into a 1 packet; returns that digest.
fn sign_packet(packet: &mut [u8; PACKET_LEN], schema: u8, key: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let offset = digest_offset(packet, schema)?;
    let digest = packet_digest(packet, offset, key)?;
    packet
        .get_mut(offset..offset + DIGEST_LEN)?
        .copy_from_slice(&digest);
    Some(digest)
}

/// A plain 2 packet: the peer's 1 packet with our own time in the second time field, which
/// the specification defines as when we read the peer's packet. Without a clock the best
/// stand-in is the time field we were constructed with.
fn echo_packet(peer_packet: &[u8; PACKET_LEN], our_time: u32) -> Box<[u8; PACKET_LEN]> {
    let mut packet = Box::new(*peer_packet);
    packet[4..8].copy_from_slice(&our_time.to_be_bytes());
    packet
}

/// A digest 2 packet: our time and the peer's, filler, and the response digest at the end.
fn signed_response_packet(
    peer_packet: &[u8; PACKET_LEN],
    our_time: u32,
    full_key: &[u8],
    peer_digest: &[u8; DIGEST_LEN],
    rng: &mut FillerRng,
) -> Box<[u8; PACKET_LEN]> {
    let mut peer_time = [0u8; 4];
    peer_time.copy_from_slice(&peer_packet[..4]);
    let mut packet = new_packet(u32::from_be_bytes(peer_time), our_time.to_be_bytes(), rng);
    let digest = response_digest(&packet, full_key, peer_digest);
    packet[RESPONSE_DIGEST_OFFSET..].copy_from_slice(&digest);
    packet
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerStep {
    AwaitingC0,
    AwaitingC1,
    AwaitingC2,
    Complete,
}

/// The server side: reads C0+C1, answers with S0+S1+S2, then reads C2.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    epoch: u32,
    rng: FillerRng,
    step: ServerStep,
    incoming: PacketAssembler,
    kind: Option<HandshakeKind>,
    outgoing: Vec<u8>,
    failure: Option<HandshakeError>,
}

impl ServerHandshake {
    /// `epoch` goes into S1's time field; `seed` determines S1/S2's filler bytes.
    pub fn new(epoch: u32, seed: u64) -> Self {
        ServerHandshake {
            epoch,
            rng: FillerRng::new(seed),
            step: ServerStep::AwaitingC0,
            incoming: PacketAssembler::new(),
            kind: None,
            outgoing: Vec::new(),
            failure: None,
        }
    }

    /// Consumes handshake bytes from the front of `input` and returns how many it took.
    ///
    /// Partial packets are buffered inside, so any split of the stream works, down to one
    /// byte per call. Bytes are only taken while the handshake still needs them: a return
    /// value smaller than `input.len()` means the handshake is complete and the rest
    /// belongs to the chunk stream. After an error the handshake stays failed.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let mut consumed = 0;
        while let Some(rest) = input.get(consumed..).filter(|rest| !rest.is_empty()) {
            match self.step {
                ServerStep::AwaitingC0 => {
                    let Some(&version) = rest.first() else { break };
                    if version != RTMP_VERSION {
                        let failure = HandshakeError::UnsupportedVersion(version);
                        self.failure = Some(failure.clone());
                        return Err(failure);
                    }
                    consumed += 1;
                    self.step = ServerStep::AwaitingC1;
                }
                ServerStep::AwaitingC1 => {
                    consumed += self.incoming.fill_from(rest);
                    if self.incoming.is_complete() {
                        self.answer_c1();
                        self.incoming.reset();
                        self.step = ServerStep::AwaitingC2;
                    }
                }
                ServerStep::AwaitingC2 => {
                    // C2 is not checked: plenty of clients send a sloppy one, and rejecting
                    // them would gain nothing, since the digest proves nothing secret.
                    consumed += self.incoming.fill_from(rest);
                    if self.incoming.is_complete() {
                        self.step = ServerStep::Complete;
                    }
                }
                ServerStep::Complete => break,
            }
        }
        Ok(consumed)
    }

    fn answer_c1(&mut self) {
        let c1 = self.incoming.packet();
        // The version field only hints at a digest; the digest itself decides, because
        // some clients set the field without signing and others sign without the field.
        let client_digest = find_digest(c1, FLASH_PLAYER_KEY_TEXT)
            .and_then(|(schema, offset)| Some((schema, embedded_digest(c1, offset)?)));
        let (s1, s2) = match client_digest {
            Some((schema, client_digest)) => {
                let mut s1 = new_packet(self.epoch, SERVER_VERSION, &mut self.rng);
                // Cannot fail: the schema came from `find_digest`.
                let _ = sign_packet(&mut s1, schema, MEDIA_SERVER_KEY_TEXT);
                let s2 = signed_response_packet(
                    c1,
                    self.epoch,
                    &MEDIA_SERVER_KEY,
                    &client_digest,
                    &mut self.rng,
                );
                self.kind = Some(HandshakeKind::Digest { schema });
                (s1, s2)
            }
            None => {
                let s1 = new_packet(self.epoch, [0; 4], &mut self.rng);
                let s2 = echo_packet(c1, self.epoch);
                self.kind = Some(HandshakeKind::Plain);
                (s1, s2)
            }
        };
        self.outgoing.reserve(1 + 2 * PACKET_LEN);
        self.outgoing.push(RTMP_VERSION);
        self.outgoing.extend_from_slice(&s1[..]);
        self.outgoing.extend_from_slice(&s2[..]);
    }

    /// Bytes to send to the client, if any are waiting: S0+S1+S2 in one piece once C0+C1
    /// have been fed.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.outgoing.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.outgoing)))
    }

    /// True once C2 has been consumed; chunk traffic may start.
    pub fn is_complete(&self) -> bool {
        self.step == ServerStep::Complete
    }

    /// The flavour the client chose, known once C1 has been fed.
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientStep {
    AwaitingS0,
    AwaitingS1,
    AwaitingS2,
    Complete,
}

/// The client side: sends C0+C1 at once, reads S0+S1, answers with C2, then reads S2.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    epoch: u32,
    rng: FillerRng,
    mode: ClientHandshakeMode,
    step: ClientStep,
    incoming: PacketAssembler,
    kind: Option<HandshakeKind>,
    outgoing: Vec<u8>,
    failure: Option<HandshakeError>,
}

impl ClientHandshake {
    /// `epoch` goes into C1's time field; `seed` determines C1/C2's filler bytes. C0+C1
    /// are ready in [`poll_transmit`](Self::poll_transmit) straight away.
    pub fn new(epoch: u32, seed: u64, mode: ClientHandshakeMode) -> Self {
        let mut rng = FillerRng::new(seed);
        let c1 = match mode {
            ClientHandshakeMode::Plain => new_packet(epoch, [0; 4], &mut rng),
            ClientHandshakeMode::Digest { schema } => {
                let mut c1 = new_packet(epoch, CLIENT_VERSION, &mut rng);
                // Cannot fail: the schema is 0 or 1.
                let _ = sign_packet(&mut c1, schema.min(1), FLASH_PLAYER_KEY_TEXT);
                c1
            }
        };
        let mut outgoing = Vec::with_capacity(1 + PACKET_LEN);
        outgoing.push(RTMP_VERSION);
        outgoing.extend_from_slice(&c1[..]);
        ClientHandshake {
            epoch,
            rng,
            mode,
            step: ClientStep::AwaitingS0,
            incoming: PacketAssembler::new(),
            kind: None,
            outgoing,
            failure: None,
        }
    }

    /// Consumes S0, S1 and S2 from the front of `input`; same contract as
    /// [`ServerHandshake::feed`]. C2 is queued for sending as soon as S1 is in.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let mut consumed = 0;
        while let Some(rest) = input.get(consumed..).filter(|rest| !rest.is_empty()) {
            match self.step {
                ClientStep::AwaitingS0 => {
                    let Some(&version) = rest.first() else { break };
                    if version != RTMP_VERSION {
                        let failure = HandshakeError::UnsupportedVersion(version);
                        self.failure = Some(failure.clone());
                        return Err(failure);
                    }
                    consumed += 1;
                    self.step = ClientStep::AwaitingS1;
                }
                ClientStep::AwaitingS1 => {
                    consumed += self.incoming.fill_from(rest);
                    if self.incoming.is_complete() {
                        self.answer_s1();
                        self.incoming.reset();
                        self.step = ClientStep::AwaitingS2;
                    }
                }
                ClientStep::AwaitingS2 => {
                    // Lenient like the server: a server whose S2 does not verify still
                    // speaks RTMP well enough, and refusing it would only lose the stream.
                    consumed += self.incoming.fill_from(rest);
                    if self.incoming.is_complete() {
                        self.step = ClientStep::Complete;
                    }
                }
                ClientStep::Complete => break,
            }
        }
        Ok(consumed)
    }

    fn answer_s1(&mut self) {
        let s1 = self.incoming.packet();
        let server_digest = match self.mode {
            ClientHandshakeMode::Plain => None,
            ClientHandshakeMode::Digest { .. } => find_digest(s1, MEDIA_SERVER_KEY_TEXT)
                .and_then(|(schema, offset)| Some((schema, embedded_digest(s1, offset)?))),
        };
        // A digest client facing a server without a valid S1 digest falls back to the
        // plain echo, as librtmp does, instead of failing against old servers.
        let c2 = match server_digest {
            Some((schema, server_digest)) => {
                self.kind = Some(HandshakeKind::Digest { schema });
                signed_response_packet(
                    s1,
                    self.epoch,
                    &FLASH_PLAYER_KEY,
                    &server_digest,
                    &mut self.rng,
                )
            }
            None => {
                self.kind = Some(HandshakeKind::Plain);
                echo_packet(s1, self.epoch)
            }
        };
        self.outgoing.extend_from_slice(&c2[..]);
    }

    /// Bytes to send to the server, if any are waiting: C0+C1 first, C2 after S1 arrived.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.outgoing.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.outgoing)))
    }

    /// True once S2 has been consumed.
    pub fn is_complete(&self) -> bool {
        self.step == ClientStep::Complete
    }

    /// The flavour in use, known once S1 has been fed: `Digest` only if the server's S1
    /// carried a valid digest and we asked for one.
    pub fn kind(&self) -> Option<HandshakeKind> {
        self.kind
    }
}

/// What the sessions need of either role's handshake, so one driver serves both.
pub trait Handshake {
    /// Takes bytes from the peer; returns how many it used (all of them until the handshake
    /// completes; what it did not use is the first chunk-stream data).
    fn feed(&mut self, input: &[u8]) -> Result<usize, HandshakeError>;
    /// Bytes to send to the peer, if any.
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn is_complete(&self) -> bool;
}

impl Handshake for ServerHandshake {
    fn feed(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        ServerHandshake::feed(self, input)
    }

    fn poll_transmit(&mut self) -> Option<Bytes> {
        ServerHandshake::poll_transmit(self)
    }

    fn is_complete(&self) -> bool {
        ServerHandshake::is_complete(self)
    }
}

impl Handshake for ClientHandshake {
    fn feed(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        ClientHandshake::feed(self, input)
    }

    fn poll_transmit(&mut self) -> Option<Bytes> {
        ClientHandshake::poll_transmit(self)
    }

    fn is_complete(&self) -> bool {
        ClientHandshake::is_complete(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet_at(bytes: &[u8], start: usize) -> [u8; PACKET_LEN] {
        bytes[start..start + PACKET_LEN].try_into().unwrap()
    }

    /// Runs both sides against each other, feeding whatever each produced in one go.
    fn run(client: &mut ClientHandshake, server: &mut ServerHandshake) -> (Vec<u8>, Vec<u8>) {
        let mut client_sent = Vec::new();
        let mut server_sent = Vec::new();
        for _ in 0..4 {
            if let Some(bytes) = client.poll_transmit() {
                client_sent.extend_from_slice(&bytes);
                assert_eq!(server.feed(&bytes).unwrap(), bytes.len());
            }
            if let Some(bytes) = server.poll_transmit() {
                server_sent.extend_from_slice(&bytes);
                assert_eq!(client.feed(&bytes).unwrap(), bytes.len());
            }
        }
        assert!(client.is_complete());
        assert!(server.is_complete());
        (client_sent, server_sent)
    }

    #[test]
    fn full_keys_have_the_documented_lengths_and_suffix() {
        assert_eq!(FLASH_PLAYER_KEY.len(), 62);
        assert_eq!(MEDIA_SERVER_KEY.len(), 68);
        assert_eq!(&FLASH_PLAYER_KEY[..30], FLASH_PLAYER_KEY_TEXT);
        assert_eq!(&MEDIA_SERVER_KEY[..36], MEDIA_SERVER_KEY_TEXT);
        assert_eq!(&MEDIA_SERVER_KEY[36..], &KEY_SUFFIX);
        assert_eq!(FLASH_PLAYER_KEY[30], 0xF0);
        assert_eq!(FLASH_PLAYER_KEY[61], 0xAE);
    }

    #[test]
    fn plain_round_trip() {
        let mut client = ClientHandshake::new(1000, 1, ClientHandshakeMode::Plain);
        let mut server = ServerHandshake::new(2000, 2);
        let (client_sent, server_sent) = run(&mut client, &mut server);
        assert_eq!(client_sent.len(), 1 + 2 * PACKET_LEN);
        assert_eq!(server_sent.len(), 1 + 2 * PACKET_LEN);
        assert_eq!(server.kind(), Some(HandshakeKind::Plain));
        assert_eq!(client.kind(), Some(HandshakeKind::Plain));

        let c1 = packet_at(&client_sent, 1);
        let c2 = packet_at(&client_sent, 1 + PACKET_LEN);
        let s1 = packet_at(&server_sent, 1);
        let s2 = packet_at(&server_sent, 1 + PACKET_LEN);
        assert_eq!(client_sent[0], 3);
        assert_eq!(server_sent[0], 3);
        assert_eq!(&c1[..8], &[0, 0, 0x03, 0xE8, 0, 0, 0, 0]);
        assert_eq!(&s1[..8], &[0, 0, 0x07, 0xD0, 0, 0, 0, 0]);
        // S2 echoes C1's time and random part; time2 is the server's time.
        assert_eq!(&s2[..4], &c1[..4]);
        assert_eq!(&s2[4..8], &2000u32.to_be_bytes());
        assert_eq!(&s2[8..], &c1[8..]);
        assert_eq!(&c2[..4], &s1[..4]);
        assert_eq!(&c2[4..8], &1000u32.to_be_bytes());
        assert_eq!(&c2[8..], &s1[8..]);
        // The filler is not all zero, and the two sides' fillers differ.
        assert!(c1[8..].iter().any(|&b| b != 0));
        assert_ne!(&c1[8..], &s1[8..]);
    }

    #[test]
    fn seeds_drive_the_filler_deterministically() {
        let first = ServerHandshake::new(9, 7).poll_transmit();
        assert!(first.is_none(), "nothing to send before C0+C1");
        let c1 = [0u8; PACKET_LEN];
        let reply = |seed| {
            let mut server = ServerHandshake::new(9, seed);
            server.feed(&[3]).unwrap();
            server.feed(&c1).unwrap();
            server.poll_transmit().unwrap()
        };
        assert_eq!(reply(7), reply(7));
        assert_ne!(reply(7), reply(8));
    }

    fn digest_round_trip(schema: u8) {
        let mut client = ClientHandshake::new(5, 11, ClientHandshakeMode::Digest { schema });
        let mut server = ServerHandshake::new(6, 12);
        let (client_sent, server_sent) = run(&mut client, &mut server);
        assert_eq!(server.kind(), Some(HandshakeKind::Digest { schema }));
        assert_eq!(client.kind(), Some(HandshakeKind::Digest { schema }));

        let c1 = packet_at(&client_sent, 1);
        let c2 = packet_at(&client_sent, 1 + PACKET_LEN);
        let s1 = packet_at(&server_sent, 1);
        let s2 = packet_at(&server_sent, 1 + PACKET_LEN);
        assert_ne!(&c1[4..8], &[0; 4]);
        assert_ne!(&s1[4..8], &[0; 4]);
        assert!(s1[4] >= 3, "ffmpeg only verifies S1 when this byte is >= 3");

        let (c1_schema, c1_offset) = find_digest(&c1, FLASH_PLAYER_KEY_TEXT).unwrap();
        assert_eq!(c1_schema, schema);
        let (s1_schema, s1_offset) = find_digest(&s1, MEDIA_SERVER_KEY_TEXT).unwrap();
        assert_eq!(s1_schema, schema);
        // Each side signs with its own key only.
        assert_eq!(find_digest(&c1, MEDIA_SERVER_KEY_TEXT), None);
        assert_eq!(find_digest(&s1, FLASH_PLAYER_KEY_TEXT), None);

        let c1_digest = embedded_digest(&c1, c1_offset).unwrap();
        let s1_digest = embedded_digest(&s1, s1_offset).unwrap();
        assert!(response_digest_is_valid(&s2, &MEDIA_SERVER_KEY, &c1_digest));
        assert!(response_digest_is_valid(&c2, &FLASH_PLAYER_KEY, &s1_digest));
        assert!(!response_digest_is_valid(
            &s2,
            &FLASH_PLAYER_KEY,
            &c1_digest
        ));
        assert!(!response_digest_is_valid(
            &s2,
            &MEDIA_SERVER_KEY,
            &s1_digest
        ));
    }

    #[test]
    fn digest_round_trip_schema_0() {
        digest_round_trip(0);
    }

    #[test]
    fn digest_round_trip_schema_1() {
        digest_round_trip(1);
    }

    /// Builds a signed C1 by hand, straight from the description of the layout, so the
    /// offset arithmetic is checked independently of `sign_packet`.
    fn hand_signed_c1(schema: u8, offset_bytes: [u8; 4]) -> ([u8; PACKET_LEN], usize) {
        let mut c1 = [0x5Au8; PACKET_LEN];
        c1[4..8].copy_from_slice(&[0x80, 0x00, 0x07, 0x02]);
        let (field, base) = if schema == 0 { (8, 12) } else { (772, 776) };
        c1[field..field + 4].copy_from_slice(&offset_bytes);
        let sum: usize = offset_bytes.iter().map(|&b| b as usize).sum();
        let offset = sum % 728 + base;
        let mut mac = Hmac::<Sha256>::new_from_slice(FLASH_PLAYER_KEY_TEXT).unwrap();
        mac.update(&c1[..offset]);
        mac.update(&c1[offset + 32..]);
        let digest = mac.finalize().into_bytes();
        c1[offset..offset + 32].copy_from_slice(&digest);
        (c1, offset)
    }

    #[test]
    fn finds_hand_made_digests_at_the_documented_offsets() {
        let (c1, offset) = hand_signed_c1(0, [1, 2, 3, 4]);
        assert_eq!(offset, 22);
        assert_eq!(find_digest(&c1, FLASH_PLAYER_KEY_TEXT), Some((0, 22)));
        let (c1, offset) = hand_signed_c1(1, [200, 200, 200, 200]);
        assert_eq!(offset, 848);
        assert_eq!(find_digest(&c1, FLASH_PLAYER_KEY_TEXT), Some((1, 848)));
        // Largest offsets still leave room for the digest inside the block and packet.
        let (c1, offset) = hand_signed_c1(0, [255, 255, 217, 0]);
        assert_eq!(offset, 727 + 12);
        assert!(offset + 32 <= 772);
        assert_eq!(find_digest(&c1, FLASH_PLAYER_KEY_TEXT), Some((0, offset)));
        let (c1, offset) = hand_signed_c1(1, [255, 255, 217, 0]);
        assert_eq!(offset, 727 + 776);
        assert!(offset + 32 <= PACKET_LEN);
        assert_eq!(find_digest(&c1, FLASH_PLAYER_KEY_TEXT), Some((1, offset)));
    }

    #[test]
    fn server_answers_hand_made_digest_c1_in_kind() {
        for schema in [0, 1] {
            let (c1, offset) = hand_signed_c1(schema, [9, 8, 7, 6]);
            let mut server = ServerHandshake::new(42, 3);
            let mut input = vec![3];
            input.extend_from_slice(&c1);
            assert_eq!(server.feed(&input).unwrap(), input.len());
            assert_eq!(server.kind(), Some(HandshakeKind::Digest { schema }));
            let reply = server.poll_transmit().unwrap();
            assert_eq!(reply.len(), 1 + 2 * PACKET_LEN);
            let s1 = packet_at(&reply, 1);
            let s2 = packet_at(&reply, 1 + PACKET_LEN);
            assert_eq!(&s1[..4], &42u32.to_be_bytes());
            assert_eq!(
                find_digest(&s1, MEDIA_SERVER_KEY_TEXT).map(|f| f.0),
                Some(schema)
            );
            let c1_digest = embedded_digest(&c1, offset).unwrap();
            assert!(response_digest_is_valid(&s2, &MEDIA_SERVER_KEY, &c1_digest));
            assert!(server.poll_transmit().is_none());
        }
    }

    #[test]
    fn version_field_without_digest_gets_plain_reply() {
        let mut c1 = [7u8; PACKET_LEN];
        c1[4..8].copy_from_slice(&[0x80, 0, 7, 2]);
        let mut server = ServerHandshake::new(0, 0);
        server.feed(&[3]).unwrap();
        server.feed(&c1).unwrap();
        assert_eq!(server.kind(), Some(HandshakeKind::Plain));
        let reply = server.poll_transmit().unwrap();
        assert_eq!(&reply[1 + PACKET_LEN + 8..], &c1[8..]);
    }

    #[test]
    fn digest_client_falls_back_to_echo_against_plain_server() {
        let mut client = ClientHandshake::new(1, 2, ClientHandshakeMode::Digest { schema: 0 });
        let _c0c1 = client.poll_transmit().unwrap();
        let mut s1 = [0x33u8; PACKET_LEN];
        s1[4..8].copy_from_slice(&[0; 4]);
        let mut input = vec![3];
        input.extend_from_slice(&s1);
        assert_eq!(client.feed(&input).unwrap(), input.len());
        assert_eq!(client.kind(), Some(HandshakeKind::Plain));
        let c2 = client.poll_transmit().unwrap();
        assert_eq!(c2.len(), PACKET_LEN);
        assert_eq!(&c2[8..], &s1[8..]);
        assert!(!client.is_complete());
        assert_eq!(client.feed(&s1).unwrap(), PACKET_LEN);
        assert!(client.is_complete());
    }

    #[test]
    fn plain_client_ignores_server_digest() {
        let mut client = ClientHandshake::new(1, 2, ClientHandshakeMode::Plain);
        let mut server = ServerHandshake::new(3, 4);
        run(&mut client, &mut server);
        assert_eq!(client.kind(), Some(HandshakeKind::Plain));
        assert_eq!(server.kind(), Some(HandshakeKind::Plain));
    }

    #[test]
    fn server_rejects_bad_version() {
        let mut server = ServerHandshake::new(0, 0);
        assert_eq!(
            server.feed(&[4, 0, 0]),
            Err(HandshakeError::UnsupportedVersion(4))
        );
        // The failure sticks.
        assert_eq!(
            server.feed(&[3]),
            Err(HandshakeError::UnsupportedVersion(4))
        );
        assert!(server.poll_transmit().is_none());

        let mut server = ServerHandshake::new(0, 0);
        let err = server.feed(&[RTMPE_VERSION]).unwrap_err();
        assert!(err.to_string().contains("RTMPE"), "{err}");
        assert!(
            !HandshakeError::UnsupportedVersion(4)
                .to_string()
                .contains("RTMPE")
        );
    }

    #[test]
    fn client_rejects_bad_version() {
        let mut client = ClientHandshake::new(0, 0, ClientHandshakeMode::Plain);
        assert_eq!(
            client.feed(&[6]),
            Err(HandshakeError::UnsupportedVersion(6))
        );
    }

    #[test]
    fn one_byte_at_a_time() {
        for mode in [
            ClientHandshakeMode::Plain,
            ClientHandshakeMode::Digest { schema: 0 },
            ClientHandshakeMode::Digest { schema: 1 },
        ] {
            let mut client = ClientHandshake::new(10, 20, mode);
            let mut server = ServerHandshake::new(30, 40);
            let c0c1 = client.poll_transmit().unwrap();
            for byte in c0c1.iter() {
                assert_eq!(server.feed(std::slice::from_ref(byte)).unwrap(), 1);
            }
            let reply = server.poll_transmit().unwrap();
            for byte in reply.iter() {
                assert_eq!(client.feed(std::slice::from_ref(byte)).unwrap(), 1);
            }
            assert!(client.is_complete());
            let c2 = client.poll_transmit().unwrap();
            assert_eq!(c2.len(), PACKET_LEN);
            for byte in c2.iter() {
                assert!(!server.is_complete());
                assert_eq!(server.feed(std::slice::from_ref(byte)).unwrap(), 1);
            }
            assert!(server.is_complete());
            assert_eq!(server.kind(), client.kind());
            // Chunk data after the handshake is left for the caller.
            assert_eq!(server.feed(&[1, 2, 3]).unwrap(), 0);
            assert_eq!(client.feed(&[1, 2, 3]).unwrap(), 0);
        }
    }

    #[test]
    fn trailing_bytes_after_c2_are_not_consumed() {
        let mut client = ClientHandshake::new(0, 1, ClientHandshakeMode::Plain);
        let mut server = ServerHandshake::new(0, 2);
        let c0c1 = client.poll_transmit().unwrap();
        server.feed(&c0c1).unwrap();
        client.feed(&server.poll_transmit().unwrap()).unwrap();
        let mut c2_and_more = client.poll_transmit().unwrap().to_vec();
        c2_and_more.extend_from_slice(&[0xAA; 10]);
        assert_eq!(server.feed(&c2_and_more).unwrap(), PACKET_LEN);
        assert!(server.is_complete());
    }

    proptest! {
        #[test]
        fn server_never_panics_on_arbitrary_input(
            bytes in proptest::collection::vec(any::<u8>(), 0..4000),
            chunk_len in 1usize..2000,
            with_valid_c0 in any::<bool>(),
        ) {
            let mut server = ServerHandshake::new(1, 2);
            let mut input = bytes;
            if with_valid_c0 {
                input.insert(0, 3);
            }
            for chunk in input.chunks(chunk_len) {
                match server.feed(chunk) {
                    Ok(consumed) => prop_assert!(consumed <= chunk.len()),
                    Err(_) => break,
                }
                let _ = server.poll_transmit();
            }
        }

        #[test]
        fn client_never_panics_on_arbitrary_input(
            bytes in proptest::collection::vec(any::<u8>(), 0..4000),
            schema in 0u8..3,
        ) {
            let mut client = ClientHandshake::new(1, 2, ClientHandshakeMode::Digest { schema });
            let mut input = bytes;
            input.insert(0, 3);
            let consumed = client.feed(&input).unwrap();
            prop_assert!(consumed <= input.len());
        }
    }
}
