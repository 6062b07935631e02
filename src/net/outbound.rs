//! Connections this relay opens to other servers: an edge's pull from an origin
//! (`upstream_link.rs`), a push to a target (`forward_link.rs`) and an HTTP callback
//! (`callback_client.rs`, plain TCP only). They resolve the
//! peer's host, connect with a timeout and, for `rtmps://`, start the client side of a TLS
//! session whose certificate must chain to a CA file; this module is that step, once.
//!
//! Host names and CA files come from the configuration; the peer's bytes only start to
//! flow once the caller has the socket. A resolver's answer is cut to a few addresses.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// How long a TCP connect to one of a peer's addresses may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most addresses of a host name tried, so a name with a long answer cannot hold a
/// link for long (each address may take [`CONNECT_TIMEOUT`]).
const MAX_ADDRESSES: usize = 8;

/// The system's CA bundle (Debian's ca-certificates), trusted by a push when
/// `[server] tls_ca_file` is "".
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Resolves `host` and connects to the first of its addresses that answers.
pub async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            // The system resolver blocks: off the shard's thread.
            let name = host.to_owned();
            glommio::executor()
                .spawn_blocking(move || {
                    (name.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.take(MAX_ADDRESSES).collect::<Vec<_>>())
                })
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
        }
    };
    let mut last = format!("{host} resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = format!("connect to {addr} failed: {e}"),
        }
    }
    Err(last)
}

/// The CA certificates (PEM) a peer's certificate must chain to, and where the file was
/// configured, for the errors (`pull_tls_ca_file`, `server.tls_ca_file`).
pub struct TrustedCas {
    pub file: PathBuf,
    pub source: &'static str,
}

/// The client side of a TLS session to `host`, checking its certificate against `cas` and
/// the host name. The file is read at each call, off the shard's thread: connections to
/// other servers are few, and a new file needs no restart.
pub async fn tls_client(host: &str, cas: TrustedCas) -> Result<ClientConnection, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host} is no TLS server name: {e}"))?;
    let roots = glommio::executor()
        .spawn_blocking(move || read_roots(&cas.file, cas.source))
        .await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))
}

/// The certificates of `file` that rustls can use (a system bundle may hold some it
/// cannot); an error when there is none.
fn read_roots(file: &Path, source: &str) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{source} {}: {e}", file.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{source} {}: no certificate in it", file.display()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_its_key() {
        let file = std::env::temp_dir().join(format!("outbound-empty-{}.pem", std::process::id()));
        std::fs::write(&file, "not a certificate\n").unwrap();
        let err = read_roots(&file, "pull_tls_ca_file").unwrap_err();
        let _ = std::fs::remove_file(&file);
        assert!(err.starts_with("pull_tls_ca_file "), "{err}");
        assert!(err.ends_with("no certificate in it"), "{err}");
        let missing = read_roots(Path::new("/nonexistent/ca.pem"), "server.tls_ca_file");
        assert!(
            missing
                .unwrap_err()
                .starts_with("server.tls_ca_file /nonexistent/ca.pem: ")
        );
    }
}
