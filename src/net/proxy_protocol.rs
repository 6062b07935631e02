//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a TCP load balancer (AWS
//! NLB, HAProxy, nginx `stream`) puts before a client's first byte to say who the client
//! really is.
//!
//! Behind such a balancer every connection comes from the balancer's address, so logs, the
//! admin API, the network rules and the per-address cap would all see one client. The
//! header fixes that, but only when it comes from a balancer the operator listed in
//! `[server] trusted_proxies`: anyone else could write one and claim any address, so from
//! them a connection that starts with a header is refused (`src/net/admission.rs`).
//!
//! The parsing itself is the `ppp` crate's (both versions). This module only decides how
//! much of the first bytes is a header, with a cap: version 1 is at most 107 bytes by its
//! specification; version 2 may carry TLVs up to 64 KiB, but no balancer sends more than a
//! few hundred bytes, so anything over [`MAX_HEADER`] is refused rather than buffered.
//! A header may arrive split over reads, or together with the client's first RTMP or TLS
//! bytes: what follows it is handed on untouched.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use ppp::PartialResult;

/// The largest header accepted, in bytes (a version 2 header with a few TLVs).
pub const MAX_HEADER: usize = 512;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the first bytes of a connection say about a PROXY header.
#[derive(Debug, PartialEq, Eq)]
pub enum Preface {
    /// The bytes cannot start a header: the client's own data begins at once.
    Absent,
    /// They may be a header that is not complete yet: read more.
    Incomplete,
    /// A complete header of `len` bytes. `source` is the client's address, or None when
    /// the header carries none (a balancer's own health check: `LOCAL`, `UNKNOWN`).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// It is a header, but a malformed or oversized one.
    Invalid(String),
}

/// Looks at the first bytes a connection sent.
pub fn parse(bytes: &[u8]) -> Preface {
    let starts = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    if bytes.is_empty() {
        return Preface::Incomplete;
    }
    let v1 = starts(V1_PREFIX);
    let v2 = starts(V2_SIGNATURE);
    if !v1 && !v2 {
        return Preface::Absent;
    }
    // Only the bytes a header can take are looked at: the client's data after it is not
    // the parser's business.
    let window = &bytes[..bytes.len().min(MAX_HEADER)];
    if v2 {
        if window.len() < V2_SIGNATURE.len() {
            return Preface::Incomplete;
        }
        // The 16-byte fixed part ends with the length of what follows.
        if window.len() >= 16 {
            let declared = 16 + usize::from(u16::from_be_bytes([window[14], window[15]]));
            if declared > MAX_HEADER {
                return Preface::Invalid(format!(
                    "PROXY v2 header of {declared} bytes, more than {MAX_HEADER}"
                ));
            }
        }
        let result = ppp::v2::Header::try_from(window);
        if result.is_incomplete() {
            return Preface::Incomplete;
        }
        return match result {
            Ok(header) => Preface::Header {
                len: header.len(),
                source: match header.addresses {
                    ppp::v2::Addresses::IPv4(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    ppp::v2::Addresses::IPv6(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    _ => None,
                },
            },
            Err(e) => Preface::Invalid(format!("malformed PROXY v2 header: {e}")),
        };
    }
    if window.len() < V1_PREFIX.len() {
        return Preface::Incomplete;
    }
    // Version 1 is one line ending in CRLF, at most 107 bytes: it is parsed only once the
    // line has ended (ppp calls some cut-off lines, "PROXY T", invalid rather than partial).
    let ended = window.windows(2).any(|w| w == b"\r\n");
    if !ended {
        if window.len() >= 107 {
            return Preface::Invalid("PROXY v1 header longer than 107 bytes".into());
        }
        return Preface::Incomplete;
    }
    let result = ppp::v1::Header::try_from(window);
    if result.is_incomplete() {
        return Preface::Invalid("malformed PROXY v1 header".into());
    }
    match result {
        Ok(header) => Preface::Header {
            len: header.header.len(),
            source: match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(e) => Preface::Invalid(format!("malformed PROXY v1 header: {e}")),
    }
}

/// A version 2 header for `source` → `destination` (tests and the load generator).
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_with_data_after_it() {
        let mut bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 1935\r\n".to_vec();
        let len = bytes.len();
        bytes.extend_from_slice(&[3, 0, 0, 0]);
        assert_eq!(
            parse(&bytes),
            Preface::Header {
                len,
                source: Some("203.0.113.7:51000".parse().unwrap())
            }
        );
    }

    #[test]
    fn v1_split_is_incomplete_and_rtmp_is_absent() {
        assert_eq!(parse(b"PRO"), Preface::Incomplete);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Preface::Incomplete);
        assert_eq!(parse(&[3, 0, 0, 0]), Preface::Absent);
        assert_eq!(parse(&[0x16, 3, 1]), Preface::Absent);
        let bad = parse(b"PROXY TCP4 nonsense here\r\n");
        assert!(matches!(bad, Preface::Invalid(_)), "{bad:?}");
        assert!(matches!(parse(&[b'P'; 200]), Preface::Absent));
        assert!(matches!(parse(b"PROXY TCP4\r\n"), Preface::Invalid(_)));
        let mut long = b"PROXY ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert!(matches!(parse(&long), Preface::Invalid(_)));
    }

    #[test]
    fn v2_round_trip_split_anywhere() {
        let source: SocketAddr = "[2001:db8::5]:40000".parse().unwrap();
        let header = v2_header(source, "[2001:db8::1]:1935".parse().unwrap());
        for cut in 1..header.len() {
            assert_eq!(parse(&header[..cut]), Preface::Incomplete, "cut at {cut}");
        }
        let mut bytes = header.clone();
        bytes.push(3);
        assert_eq!(
            parse(&bytes),
            Preface::Header {
                len: header.len(),
                source: Some(source)
            }
        );
    }

    /// What the fuzz target checks, on a few inputs: once decided, more bytes never make
    /// the answer "incomplete" again (admission would stall on such a client).
    #[test]
    fn a_decided_prefix_stays_decided() {
        let v2 = v2_header(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        );
        let inputs: [&[u8]; 5] = [
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n\x03rest",
            b"PROXY TCP4 1.2.3.4x 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWN\r\n\x03",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x01",
            &v2,
        ];
        for data in inputs {
            let mut decided = None;
            for end in 0..=data.len() {
                match parse(&data[..end]) {
                    Preface::Incomplete => assert!(decided.is_none(), "{data:?} at {end}"),
                    _ => {
                        decided.get_or_insert(end);
                    }
                }
            }
        }
    }

    #[test]
    fn v2_oversized_is_refused() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&bytes), Preface::Invalid(_)));
    }
}
