//! RTMPS: RTMP inside TLS, with rustls, on the `[server] tls_listen` port.
//!
//! TLS here is a layer around a client's socket and nothing more: the relay above it sees
//! the same plaintext RTMP bytes, and writes through the same `Transmit` as for a plain
//! client (`src/net/sockets.rs`). A [`TlsStream`] is rustls's `ServerConnection` driven by
//! hand, not through an async wrapper, because the relay's writes are not async: the
//! fan-out writes to thousands of sockets from one task and never waits on any of them.
//!
//! - Reading: the client's task reads ciphertext into the shard's one read buffer and
//!   [`TlsStream::receive`] turns it into plaintext (rustls answers the handshake itself).
//! - Writing: [`TlsStream::send`] encrypts what the relay gathered and writes the records at
//!   once. rustls keeps what the socket did not take (at most one gathered write, its
//!   buffer limit); while it holds anything, `send` takes no more plaintext and answers
//!   `WouldBlock`, so a slow RTMPS viewer is throttled by the relay's own backlog rules
//!   exactly like a slow plain one, and the client's task finishes the flush when the
//!   socket drains.
//!
//! The certificate and key are read from PEM files at startup and again on SIGHUP
//! ([`TlsAcceptor::reload`]); a connection takes the configuration current when it was
//! accepted. A key never appears in a log line, only its file's path.
//!
//! What this costs: one copy and one AES-GCM or ChaCha20 pass per byte per viewer, since
//! every viewer's records are encrypted under its own key (the shared buffers of a plain
//! fan-out cannot be shared on the wire). `benches/RESULTS.md` has the measurement; kTLS
//! would move the encryption into the kernel's `sendmsg` and give back the shared buffers.

#![forbid(unsafe_code)]

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConnection;
use rustls::{ClientConnection, Connection, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The RTMPS listener's current rustls configuration, shared by every shard.
pub struct TlsAcceptor {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Reads the certificate chain and key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, String> {
        Ok(TlsAcceptor {
            current: RwLock::new(server_config(cert_file, key_file)?),
        })
    }

    /// Reads the files again (SIGHUP); on an error the running certificate stays.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), String> {
        let config = server_config(cert_file, key_file)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// A server side of one new connection.
    pub fn accept(&self) -> Result<TlsStream, String> {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ServerConnection::new(config)
            .map(|conn| TlsStream { conn: conn.into() })
            .map_err(|e| e.to_string())
    }
}

fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "server.tls_cert_file {}: cannot read a PEM certificate chain: {e}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls_cert_file {}: no certificate in it",
            cert_file.display()
        ));
    }
    // The error names the file, never what is in it.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        format!(
            "server.tls_key_file {}: cannot read a PEM private key: {e}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "server.tls_cert_file {} and server.tls_key_file {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// One connection's TLS session: the server side of an RTMPS client, or the client side
/// of a push to an `rtmps://` target.
pub struct TlsStream {
    conn: Connection,
}

/// What [`TlsStream::receive`] found besides plaintext.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Open,
    /// The client sent close_notify.
    Closed,
}

impl TlsStream {
    /// The client side of a push to an `rtmps://` target, from `outbound::tls_client`.
    pub fn client(conn: ClientConnection) -> TlsStream {
        TlsStream { conn: conn.into() }
    }

    /// Takes ciphertext the client sent and appends the plaintext in it to `plain`. An
    /// error is the client's fault (a bad record, a failed handshake) and ends it.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Received, String> {
        let mut state = Received::Open;
        while !ciphertext.is_empty() {
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("TLS: {e}")),
            }
            if let Err(e) = self.conn.process_new_packets() {
                return Err(format!("TLS: {e}"));
            }
            // Emptying the plaintext after every record batch keeps rustls's buffer
            // below its limit, so `read_tls` always takes more.
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match self.conn.reader().read(&mut chunk) {
                    Ok(0) => {
                        state = Received::Closed;
                        break;
                    }
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS: {e}")),
                }
            }
        }
        Ok(state)
    }

    /// Whether records wait to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Writes waiting records to `out` until it would block. Ok(true): nothing waits.
    pub fn flush(&mut self, out: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypts what it takes of `bufs` (all of it, up to rustls's buffer limit) and
    /// writes it to `out`; takes nothing (`WouldBlock`) while earlier records still wait.
    /// Returns how many plaintext bytes it took; records `out` did not take wait for
    /// [`TlsStream::flush`].
    pub fn send(&mut self, bufs: &[IoSlice<'_>], out: &mut dyn Write) -> io::Result<usize> {
        if !self.flush(out)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = self.conn.writer().write_vectored(bufs)?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush(out)?;
        Ok(taken)
    }

    /// Queues close_notify (written by the next flush).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}
