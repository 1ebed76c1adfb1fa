//! The header lb sends an endpoint, built in a fixed inline buffer: one per
//! connection (or datagram), so no allocation.

use std::fmt;
use std::io::Write;
use std::net::{SocketAddr, SocketAddrV6};

use super::{Addresses, ProxyProtocol, Transport, SIGNATURE};

/// Room for the longest header lb writes: a v1 `TCP6` line with two full
/// IPv6 addresses is 104 bytes, a v2 IPv6 header 52 (lb writes no TLVs).
const CAPACITY: usize = 108;

/// An encoded header, ready to be written before the payload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    bytes: [u8; CAPACITY],
    len: u8,
}

impl Encoded {
    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded(\"{}\")", self.as_bytes().escape_ascii())
    }
}

/// The v2 header of a `LOCAL` command with no addresses (version 2, LOCAL,
/// UNSPEC, length 0): "this connection is the proxy's own, not a client's",
/// what a health check sends to an endpoint that expects a header.
const V2_LOCAL: [u8; 16] = {
    let mut h = [0u8; 16];
    let mut i = 0;
    while i < 12 {
        h[i] = SIGNATURE[i];
        i += 1;
    }
    h[12] = 0x20;
    h
};

/// The header a connection that carries no client starts with: v2 `LOCAL`,
/// or v1 `PROXY UNKNOWN` (v1 has no LOCAL; receivers serve both with the
/// connection's own addresses). Readiness probes send it when asked.
pub(crate) fn local(version: ProxyProtocol) -> &'static [u8] {
    match version {
        ProxyProtocol::V1 => b"PROXY UNKNOWN\r\n",
        ProxyProtocol::V2 => &V2_LOCAL,
    }
}

/// Encodes the header lb sends an endpoint for a client's connection (or
/// datagram) described by `addresses`.
///
/// v1 can only say TCP (`ProxyProtocol::V1` is TCP only, and the
/// configuration is to refuse it on a UDP port), so v1 with
/// [`Transport::Datagram`] is a caller's bug: a `debug_assert!` catches it
/// in tests, and a release build writes the TCP line rather than panic on
/// the data path.
///
/// A header has one address family, so when the client and the address it
/// connected to differ (an IPv4 client of an IPv6 frontend or the reverse)
/// both are written as IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`), as
/// HAProxy does. Addresses are otherwise written as given: a caller that
/// wants a dual-stack socket's mapped pair written as IPv4 unmaps it first
/// (`IpAddr::to_canonical`).
pub(crate) fn encode(
    version: ProxyProtocol,
    transport: Transport,
    addresses: &Addresses,
) -> Encoded {
    let (source, destination) = one_family(addresses);
    let mut out = Encoded {
        bytes: [0; CAPACITY],
        len: 0,
    };
    let len = match version {
        ProxyProtocol::V1 => v1(&mut out.bytes, transport, source, destination),
        ProxyProtocol::V2 => v2(&mut out.bytes, transport, source, destination),
    };
    out.len = u8::try_from(len).expect("a header fits in 108 bytes");
    out
}

/// The source and destination in one family: both as given when they share
/// one, else both IPv6 with the IPv4 one mapped.
fn one_family(addresses: &Addresses) -> (SocketAddr, SocketAddr) {
    let mapped = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    };
    let (s, d) = (addresses.source, addresses.destination);
    if s.is_ipv4() == d.is_ipv4() {
        (s, d)
    } else {
        (mapped(s), mapped(d))
    }
}

/// `PROXY TCP4|TCP6 src dst sport dport\r\n`; the addresses as `inet_ntop`
/// writes them (what HAProxy sends, and what every receiver parses).
fn v1(
    out: &mut [u8; CAPACITY],
    transport: Transport,
    source: SocketAddr,
    destination: SocketAddr,
) -> usize {
    debug_assert_eq!(
        transport,
        Transport::Stream,
        "PROXY protocol v1 is for TCP only"
    );
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let mut rest = &mut out[..];
    write!(
        rest,
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .expect("a v1 line is at most 104 bytes");
    CAPACITY - rest.len()
}

/// The signature, PROXY (version 2), the family and transport, the address
/// block's length, the addresses, the ports: 28 bytes for IPv4, 52 for IPv6.
fn v2(
    out: &mut [u8; CAPACITY],
    transport: Transport,
    source: SocketAddr,
    destination: SocketAddr,
) -> usize {
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = 0x21;
    let protocol = match transport {
        Transport::Stream => 0x1,
        Transport::Datagram => 0x2,
    };
    let mut at = 16;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    let family = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            put(&s.ip().octets());
            put(&d.ip().octets());
            0x10
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            put(&s.ip().octets());
            put(&d.ip().octets());
            0x20
        }
        _ => unreachable!("one_family gave one family"),
    };
    put(&source.port().to_be_bytes());
    put(&destination.port().to_be_bytes());
    out[13] = family | protocol;
    let block = u16::try_from(at - 16).expect("36 bytes at most");
    out[14..16].copy_from_slice(&block.to_be_bytes());
    at
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Header, Parsed};
    use super::*;

    fn addresses(source: &str, destination: &str) -> Addresses {
        Addresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn v1_tcp4_is_the_line_of_the_specification() {
        let a = addresses("127.0.0.1:51000", "127.0.0.2:80");
        let e = encode(ProxyProtocol::V1, Transport::Stream, &a);
        assert_eq!(e.as_bytes(), b"PROXY TCP4 127.0.0.1 127.0.0.2 51000 80\r\n");
    }

    #[test]
    fn v1_tcp6_writes_addresses_compressed() {
        let a = addresses("[2001:db8::1]:65535", "[::1]:0");
        let e = encode(ProxyProtocol::V1, Transport::Stream, &a);
        assert_eq!(e.as_bytes(), b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
    }

    #[test]
    fn the_longest_v1_line_fits() {
        let full = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let e = encode(ProxyProtocol::V1, Transport::Stream, &addresses(full, full));
        assert_eq!(e.as_bytes().len(), 104, "the specification's TCP6 maximum");
    }

    #[test]
    fn v2_tcp4_byte_by_byte() {
        let a = addresses("127.0.0.1:51000", "127.0.0.2:80");
        let e = encode(ProxyProtocol::V2, Transport::Stream, &a);
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend([0x21, 0x11, 0, 12]); // version 2 PROXY, TCP over IPv4, 12 bytes
        want.extend([127, 0, 0, 1, 127, 0, 0, 2]);
        want.extend([0xc7, 0x38, 0, 80]); // 51000, 80
        assert_eq!(e.as_bytes(), &want[..]);
    }

    #[test]
    fn v2_udp6_byte_by_byte() {
        let a = addresses("[::1]:53", "[2001:db8::53]:5353");
        let e = encode(ProxyProtocol::V2, Transport::Datagram, &a);
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend([0x21, 0x22, 0, 36]); // version 2 PROXY, UDP over IPv6, 36 bytes
        want.extend([0; 15]);
        want.push(1);
        want.extend([0x20, 0x01, 0x0d, 0xb8]);
        want.extend([0; 11]);
        want.push(0x53);
        want.extend([0, 53, 0x14, 0xe9]);
        assert_eq!(e.as_bytes(), &want[..]);
    }

    #[test]
    fn mixed_families_are_both_written_as_ipv6_with_the_ipv4_one_mapped() {
        let client_v4 = addresses("127.0.0.1:4000", "[::1]:80");
        let e = encode(ProxyProtocol::V1, Transport::Stream, &client_v4);
        assert_eq!(e.as_bytes(), b"PROXY TCP6 ::ffff:127.0.0.1 ::1 4000 80\r\n");

        let frontend_v4 = addresses("[::1]:4000", "127.0.0.2:80");
        let e = encode(ProxyProtocol::V2, Transport::Stream, &frontend_v4);
        assert_eq!(e.as_bytes()[13], 0x21, "TCP over IPv6");
        let Parsed { header, .. } = parse(e.as_bytes()).unwrap().unwrap();
        let want = addresses("[::1]:4000", "[::ffff:127.0.0.2]:80");
        assert_eq!(
            header,
            Header::Proxy {
                transport: Transport::Stream,
                addresses: want
            }
        );
    }

    #[test]
    fn a_mapped_pair_is_written_as_given() {
        let a = addresses("[::ffff:127.0.0.1]:4000", "[::ffff:127.0.0.2]:80");
        let e = encode(ProxyProtocol::V1, Transport::Stream, &a);
        assert_eq!(
            e.as_bytes(),
            b"PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.2 4000 80\r\n"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "v1 is for TCP only")]
    fn v1_for_a_datagram_is_a_caller_bug() {
        let a = addresses("127.0.0.1:4000", "127.0.0.2:53");
        encode(ProxyProtocol::V1, Transport::Datagram, &a);
    }

    #[test]
    fn debug_shows_the_bytes() {
        let a = addresses("127.0.0.1:1", "127.0.0.2:2");
        let e = encode(ProxyProtocol::V1, Transport::Stream, &a);
        assert_eq!(
            format!("{e:?}"),
            r#"Encoded("PROXY TCP4 127.0.0.1 127.0.0.2 1 2\r\n")"#
        );
    }
}
