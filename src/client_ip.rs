//! Who the client is: the TCP peer, or, when that peer is a proxy we trust,
//! the first untrusted hop of `X-Forwarded-For` counted from the right.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The client of a request (the TCP peer, or what trusted proxies say), put
/// in its extensions by the server for the routes.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl fmt::Display for ClientIp {
    /// As `IpAddr` shows it. It is on every request's log line, so an IPv4
    /// address is spelled here without `core::fmt`'s integer formatting for
    /// each octet (a tenth of the line's cost).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let IpAddr::V4(v4) = self.0 else {
            return self.0.fmt(f);
        };
        let (mut text, mut len) = ([0u8; 15], 0);
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(octet).as_bytes();
            text[len..len + digits.len()].copy_from_slice(digits);
            len += digits.len();
        }
        f.pad(std::str::from_utf8(&text[..len]).expect("digits and dots"))
    }
}

/// A trusted proxy range. Accepts CIDR (`10.0.0.0/8`) or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Cidr)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The client address of a request from `peer` carrying these
/// `X-Forwarded-For` values (all header lines, in order).
///
/// A header from an untrusted peer is ignored: anyone can write one. From a
/// trusted peer we walk the list right to left, skipping trusted proxies; the
/// first address that is not one of ours is the client. Garbage stops the
/// walk at the last address we could vouch for.
pub fn resolve<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|c| c.0.contains(&canonical(*ip)));
    let mut client = canonical(peer);
    if !is_trusted(&client) {
        return client;
    }
    let hops = forwarded_for.rev().flat_map(|line| line.rsplit(','));
    for hop in hops {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The key one client is counted under, by the rate limits and the
/// connection cap. An IPv6 user usually controls a whole /64, so counting
/// single v6 addresses would let them rotate past any limit.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, common on dual-stack sockets) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_is_shown_as_its_address_is() {
        for addr in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let (client, addr) = (ClientIp(ip(addr)), ip(addr));
            assert_eq!(client.to_string(), addr.to_string());
            assert_eq!(
                format!("{client:>20}|{client:<16}|"),
                format!("{addr:>20}|{addr:<16}|")
            );
        }
    }

    fn trusted() -> Vec<Cidr> {
        vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1".parse().unwrap()]
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof() {
        let got = resolve(ip("203.0.113.9"), ["1.2.3.4"].into_iter(), &trusted());
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_yields_the_first_untrusted_hop_from_the_right() {
        // Client spoofed "6.6.6.6"; its real address was appended by our proxies.
        let got = resolve(
            ip("127.0.0.1"),
            ["6.6.6.6, 198.51.100.7, 10.1.1.1"].into_iter(),
            &trusted(),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let got = resolve(
            ip("10.0.0.2"),
            ["6.6.6.6", "198.51.100.7"].into_iter(),
            &trusted(),
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let got = resolve(
            ip("127.0.0.1"),
            ["nonsense, 10.2.2.2"].into_iter(),
            &trusted(),
        );
        assert_eq!(got, ip("10.2.2.2"));
    }

    #[test]
    fn no_header_from_a_trusted_peer_is_the_peer() {
        assert_eq!(
            resolve(ip("127.0.0.1"), std::iter::empty(), &trusted()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn bare_addresses_and_ranges_parse() {
        assert_eq!(
            "192.0.2.1".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy".parse::<Cidr>().is_err());
    }
}
