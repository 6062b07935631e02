//! Network rules: which addresses may publish or play, as CIDR allow and deny lists.
//!
//! nginx-rtmp's `allow publish 10.0.0.0/8; deny publish all;` in two lists: an address in
//! the deny list is refused; when the allow list is not empty, an address not in it is
//! refused too. Deny wins, so an operator can carve a hole out of an allowed range. The
//! address checked is the one the client's connection is known by (after a PROXY protocol
//! header, the real client's), and an IPv4 client reaching an IPv6 socket
//! (`::ffff:10.0.0.1`) is checked as the IPv4 address it is.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Denial, DenialKind};

/// One entry of a list: a network (`10.0.0.0/8`, `2001:db8::/32`) or one address
/// (`192.0.2.7`, taken as `/32` or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is not an address or a network like 10.0.0.0/8"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Refuses `ip` if `deny` holds it, or if `allow` is not empty and does not.
pub fn check(allow: &[Cidr], deny: &[Cidr], ip: IpAddr) -> Result<(), Denial> {
    let ip = ip.to_canonical();
    if let Some(net) = deny.iter().find(|net| net.contains(ip)) {
        return Err(Denial::new(
            DenialKind::AddressDenied,
            format!("the address is in the deny list ({net})"),
        ));
    }
    if !allow.is_empty() && !allow.iter().any(|net| net.contains(ip)) {
        return Err(Denial::new(
            DenialKind::AddressDenied,
            "the address is not in the allow list",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<Cidr> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_single_addresses() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        for bad in ["", "10.0.0.0/33", "all", "10.0.0.0/8/8", "1.2.3"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_lists_allow_everyone() {
        assert_eq!(check(&[], &[], ip("203.0.113.9")), Ok(()));
    }

    #[test]
    fn deny_wins_over_allow() {
        let allow = list(&["10.0.0.0/8"]);
        let deny = list(&["10.9.0.0/16"]);
        assert_eq!(check(&allow, &deny, ip("10.1.0.1")), Ok(()));
        for refused in ["10.9.0.1", "11.0.0.1", "::1"] {
            let denied = check(&allow, &deny, ip(refused)).unwrap_err();
            assert_eq!(denied.kind, DenialKind::AddressDenied, "{refused}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_rules() {
        let deny = list(&["127.0.0.0/8"]);
        assert!(check(&[], &deny, ip("::ffff:127.0.0.1")).is_err());
        let allow = list(&["192.0.2.0/24"]);
        assert_eq!(check(&allow, &[], ip("::ffff:192.0.2.1")), Ok(()));
    }
}
