//! The parser, against headers written out by hand from the specification
//! and against `encode`.

use proptest::prelude::*;

use super::super::encode;
use super::*;

fn addresses(source: &str, destination: &str) -> Addresses {
    Addresses {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

fn tcp(source: &str, destination: &str) -> Header {
    Header::Proxy {
        transport: Transport::Stream,
        addresses: addresses(source, destination),
    }
}

/// A v2 header: signature, version and command, family and transport, the
/// block's length, the block (addresses and TLVs).
fn v2_header(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend([version_command, family]);
    h.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend(block);
    h
}

/// The 12-byte IPv4 block of 127.0.0.1:51000 → 127.0.0.2:80.
const TCP4_BLOCK: [u8; 12] = [127, 0, 0, 1, 127, 0, 0, 2, 0xc7, 0x38, 0, 80];

fn complete(buf: &[u8]) -> Parsed {
    match parse(buf) {
        Ok(Some(parsed)) => parsed,
        other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
    }
}

fn error(buf: &[u8]) -> ParseError {
    match parse(buf) {
        Err(e) => e,
        other => panic!("{:?} parsed: {other:?}", buf.escape_ascii().to_string()),
    }
}

#[test]
fn encoded_headers_round_trip_in_both_versions() {
    let cases = [
        (
            ProxyProtocol::V1,
            Transport::Stream,
            "127.0.0.1:51000",
            "127.0.0.2:80",
        ),
        (
            ProxyProtocol::V1,
            Transport::Stream,
            "[::1]:51000",
            "[2001:db8::2]:443",
        ),
        (
            ProxyProtocol::V2,
            Transport::Stream,
            "127.0.0.1:51000",
            "127.0.0.2:80",
        ),
        (
            ProxyProtocol::V2,
            Transport::Stream,
            "[::1]:51000",
            "[2001:db8::2]:443",
        ),
        (
            ProxyProtocol::V2,
            Transport::Datagram,
            "127.0.0.1:5353",
            "127.0.0.2:53",
        ),
        (
            ProxyProtocol::V2,
            Transport::Datagram,
            "[::1]:5353",
            "[2001:db8::2]:53",
        ),
    ];
    for (version, transport, source, destination) in cases {
        let a = addresses(source, destination);
        let bytes = encode(version, transport, &a);
        let parsed = complete(bytes.as_bytes());
        let want = Parsed {
            header: Header::Proxy {
                transport,
                addresses: a,
            },
            version,
            len: bytes.as_bytes().len(),
        };
        assert_eq!(
            parsed, want,
            "{version:?} {transport:?} {source} {destination}"
        );
    }
}

#[test]
fn mixed_families_come_back_as_ipv6_with_the_ipv4_one_mapped() {
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let bytes = encode(
            version,
            Transport::Stream,
            &addresses("127.0.0.1:4000", "[::1]:80"),
        );
        let header = complete(bytes.as_bytes()).header;
        assert_eq!(
            header,
            tcp("[::ffff:127.0.0.1]:4000", "[::1]:80"),
            "{version:?}"
        );
    }
}

#[test]
fn a_v1_line_ends_at_its_crlf_and_the_payload_after_it_is_not_read() {
    let line = b"PROXY TCP4 127.0.0.1 127.0.0.11 56324 443\r\n";
    let buf = [&line[..], b"GET / HTTP/1.1\r\nHost: 127.0.0.11\r\n\r\n"].concat();
    let parsed = complete(&buf);
    assert_eq!(parsed.header, tcp("127.0.0.1:56324", "127.0.0.11:443"));
    assert_eq!(
        (parsed.version, parsed.len),
        (ProxyProtocol::V1, line.len())
    );
    let ipv6 = complete(b"PROXY TCP6 ::ffff:127.0.0.1 0:0:0:0:0:0:0:1 0 65535\r\n");
    assert_eq!(ipv6.header, tcp("[::ffff:127.0.0.1]:0", "[::1]:65535"));
}

#[test]
fn a_v2_header_written_by_hand_is_read() {
    let buf = [&v2_header(0x21, 0x12, &TCP4_BLOCK)[..], b"payload"].concat();
    let parsed = complete(&buf);
    let addresses = addresses("127.0.0.1:51000", "127.0.0.2:80");
    let header = Header::Proxy {
        transport: Transport::Datagram,
        addresses,
    };
    assert_eq!(
        parsed,
        Parsed {
            header,
            version: ProxyProtocol::V2,
            len: 28
        }
    );
}

#[test]
fn v2_local_is_served_with_the_connections_own_addresses_whatever_it_carries() {
    let bare = complete(&v2_header(0x20, 0x00, &[]));
    assert_eq!((bare.header, bare.len), (Header::Local, 16));
    let with_addresses = complete(&v2_header(0x20, 0x11, &TCP4_BLOCK));
    assert_eq!(
        (with_addresses.header, with_addresses.len),
        (Header::Local, 28)
    );
    let short_block = complete(&v2_header(0x20, 0x21, &TCP4_BLOCK));
    assert_eq!(
        short_block.header,
        Header::Local,
        "LOCAL's family is ignored"
    );
}

#[test]
fn v2_unspec_and_unix_are_served_as_local() {
    for (family, block) in [
        (0x00, vec![]),
        (0x31, vec![0; 216]),
        (0x32, vec![7; 216]),
        (0x10, vec![]),
    ] {
        let parsed = complete(&v2_header(0x21, family, &block));
        assert_eq!(
            (parsed.header, parsed.len),
            (Header::Local, 16 + block.len()),
            "{family:#x}"
        );
    }
}

#[test]
fn v1_unknown_is_local_in_its_short_and_its_longest_form() {
    let short = complete(b"PROXY UNKNOWN\r\nSSH-2.0");
    assert_eq!(
        (short.header, short.version, short.len),
        (Header::Local, ProxyProtocol::V1, 15)
    );
    let ff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let longest = format!("PROXY UNKNOWN {ff} {ff} 65535 65535\r\n");
    assert_eq!(longest.len(), 107, "the specification's worst case");
    assert_eq!(complete(longest.as_bytes()).len, 107);
    let one_over = format!("PROXY UNKNOWN {ff} {ff} 65535 655350\r\n");
    assert_eq!(error(one_over.as_bytes()), ParseError::V1TooLong);
}

#[test]
fn tlvs_are_skipped_within_the_length() {
    let mut block = TCP4_BLOCK.to_vec();
    block.extend([0x04, 0, 3, 0, 0, 0]); // PP2_TYPE_NOOP, 3 bytes
    block.extend([0x02, 0, 7]); // PP2_TYPE_AUTHORITY
    block.extend(b"lb.test");
    let header = v2_header(0x21, 0x11, &block);
    let parsed = complete(&[&header[..], b"after"].concat());
    assert_eq!(parsed.header, tcp("127.0.0.1:51000", "127.0.0.2:80"));
    assert_eq!(parsed.len, header.len());
}

/// Valid headers of every kind, for the prefix test.
fn valid_headers() -> Vec<Vec<u8>> {
    let a4 = addresses("127.0.0.1:51000", "127.0.0.2:80");
    let a6 = addresses("[::1]:51000", "[::1]:80");
    let mut tlv = TCP4_BLOCK.to_vec();
    tlv.extend([0xe0, 0x01, 0x00]);
    tlv.extend([9; 256]);
    vec![
        encode(ProxyProtocol::V1, Transport::Stream, &a4)
            .as_bytes()
            .to_vec(),
        encode(ProxyProtocol::V1, Transport::Stream, &a6)
            .as_bytes()
            .to_vec(),
        encode(ProxyProtocol::V2, Transport::Stream, &a4)
            .as_bytes()
            .to_vec(),
        encode(ProxyProtocol::V2, Transport::Datagram, &a6)
            .as_bytes()
            .to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2_header(0x20, 0x00, &[]),
        v2_header(0x21, 0x11, &tlv),
    ]
}

#[test]
fn every_prefix_of_a_valid_header_asks_for_more() {
    for header in valid_headers() {
        for end in 0..header.len() {
            let prefix = &header[..end];
            let shown = prefix.escape_ascii().to_string();
            assert_eq!(parse(prefix), Ok(None), "{shown}");
            let Ok(Progress::Incomplete { at_least }) = progress(prefix) else {
                unreachable!()
            };
            assert!(
                at_least > end && at_least <= header.len(),
                "{shown}: {at_least}"
            );
            if end >= 16 && header[0] == b'\r' {
                assert_eq!(at_least, header.len(), "v2 knows its length: {shown}");
            }
        }
        assert!(parse(&header).unwrap().is_some());
    }
}

#[test]
fn bytes_that_are_no_header_are_rejected_as_soon_as_they_tell() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET / HTTP/1.1\r\n".to_vec(),
            "nor a v2 one: starts with \"GET / HTTP/1.1\\r\\n\"",
        ),
        (b"G".to_vec(), "neither a v1 header"),
        (b"proxy TCP4".to_vec(), "neither a v1 header"),
        (b"PROXY\r\n".to_vec(), "neither a v1 header"),
        (b"\r\n\r\n\0\r\nQUIX".to_vec(), "bad v2 signature"),
        (b"\r\nGET".to_vec(), "bad v2 signature"),
        (
            v2_header(0x11, 0x11, &TCP4_BLOCK)[..13].to_vec(),
            "v2 version 1, not 2",
        ),
        (
            v2_header(0x22, 0x11, &TCP4_BLOCK)[..13].to_vec(),
            "v2 command 2",
        ),
        (
            v2_header(0x21, 0x41, &TCP4_BLOCK)[..14].to_vec(),
            "v2 family and transport 0x41: unassigned",
        ),
        (v2_header(0x21, 0x13, &TCP4_BLOCK)[..14].to_vec(), "0x13"),
        (
            v2_header(0x21, 0x11, &[0; 5000])[..16].to_vec(),
            "v2 length 5000 over the 4096-byte bound",
        ),
        (
            v2_header(0x21, 0x21, &TCP4_BLOCK),
            "v2 length 12 too short for family 0x21's 36-byte",
        ),
        (v2_header(0x21, 0x31, &[0; 36]), "too short"),
    ];
    for (buf, message) in cases {
        let e = error(&buf).to_string();
        assert!(e.contains(message), "{}: {e}", buf.escape_ascii());
    }
}

#[test]
fn the_largest_v2_header_is_accepted_and_one_byte_more_is_not() {
    let largest = v2_header(0x21, 0x11, &[0; MAX_HEADER - 16]);
    assert_eq!(complete(&largest).len, MAX_HEADER);
    let over = v2_header(0x21, 0x11, &[0; MAX_HEADER - 15]);
    assert_eq!(error(&over[..16]), ParseError::V2TooLong(4097));
}

#[test]
fn a_v1_line_needs_its_crlf_within_107_bytes() {
    let long = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
    assert_eq!(error(&long[..106]), ParseError::V1TooLong);
    assert_eq!(parse(&long[..105]), Ok(None));
    assert_eq!(
        error(b"PROXY TCP4 127.0.0.1 127.0.0.2 1 2\n"),
        ParseError::V1LineEnd
    );
    assert_eq!(
        error(b"PROXY TCP4 127.0.0.1 127.0.0.2 1 2\rX"),
        ParseError::V1LineEnd
    );
    assert_eq!(error(b"PROXY UNKNOWN\n\r\n"), ParseError::V1LineEnd);
}

#[test]
fn v1_fields_must_be_exactly_as_the_specification_writes_them() {
    let cases: [(&[u8], &str); 13] = [
        (
            b"PROXY TCP5 127.0.0.1 127.0.0.2 1 2\r\n",
            "v1 protocol \"TCP5\": not TCP4, TCP6 or UNKNOWN",
        ),
        (
            b"PROXY tcp4 127.0.0.1 127.0.0.2 1 2\r\n",
            "v1 protocol \"tcp4\"",
        ),
        (b"PROXY TCP4\r\n", "0 fields"),
        (
            b"PROXY TCP4 127.0.0.1 127.0.0.2 1\r\n",
            "3 fields after the protocol, not 4",
        ),
        (b"PROXY TCP4 127.0.0.1 127.0.0.2 1 2 3\r\n", "5 fields"),
        (b"PROXY TCP4  127.0.0.1 127.0.0.2 1 2\r\n", "5 fields"),
        (
            b"PROXY TCP4 ::1 127.0.0.2 1 2\r\n",
            "v1 address not an IPv4 address: \"::1\"",
        ),
        (
            b"PROXY TCP4 127.0.0.01 127.0.0.2 1 2\r\n",
            "not an IPv4 address: \"127.0.0.01\"",
        ),
        (
            b"PROXY TCP6 ::1 127.0.0.2 1 2\r\n",
            "not an IPv6 address: \"127.0.0.2\"",
        ),
        (
            b"PROXY TCP6 ::1 fe80::1%lo 1 2\r\n",
            "not an IPv6 address: \"fe80::1%lo\"",
        ),
        (
            b"PROXY TCP4 127.0.0.1 127.0.0.2 080 2\r\n",
            "v1 port not a decimal 0..=65535 without leading zeros: \"080\"",
        ),
        (b"PROXY TCP4 127.0.0.1 127.0.0.2 1 +2\r\n", "\"+2\""),
        (b"PROXY TCP4 127.0.0.1 127.0.0.2 1 65536\r\n", "\"65536\""),
    ];
    for (buf, message) in cases {
        let e = error(buf).to_string();
        assert!(e.contains(message), "{}: {e}", buf.escape_ascii());
    }
}

/// Any address, port zero to 65535.
fn socket_address() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// `a` as IPv6 (mapped when it is IPv4).
fn as_ipv6(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// Bytes that start like a header often enough to reach every branch.
fn header_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(vec![]),
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY TCP6 ".to_vec()),
        Just(SIGNATURE.to_vec()),
        Just([&SIGNATURE[..], &[0x21]].concat()),
        Just([&SIGNATURE[..], &[0x21, 0x11, 0]].concat()),
    ];
    (start, prop::collection::vec(any::<u8>(), 0..300))
        .prop_map(|(start, rest)| [start, rest].concat())
}

proptest! {
    #[test]
    fn any_address_pair_round_trips(
        source in socket_address(),
        destination in socket_address(),
        v2 in any::<bool>(),
        datagram in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (version, transport) = match (v2, datagram) {
            (false, _) => (ProxyProtocol::V1, Transport::Stream),
            (true, false) => (ProxyProtocol::V2, Transport::Stream),
            (true, true) => (ProxyProtocol::V2, Transport::Datagram),
        };
        let sent = Addresses { source, destination };
        let bytes = encode(version, transport, &sent);
        let addresses = if source.is_ipv4() == destination.is_ipv4() {
            sent
        } else {
            Addresses { source: as_ipv6(source), destination: as_ipv6(destination) }
        };
        let want = Parsed {
            header: Header::Proxy { transport, addresses },
            version,
            len: bytes.as_bytes().len(),
        };
        let buf = [bytes.as_bytes(), &payload].concat();
        prop_assert_eq!(parse(&buf), Ok(Some(want)));
    }

    #[test]
    fn parse_never_panics_and_never_claims_more_than_it_has(buf in header_like_bytes()) {
        match progress(&buf) {
            Ok(Progress::Complete(parsed)) => {
                prop_assert!(parsed.len <= buf.len() && parsed.len <= MAX_HEADER);
                prop_assert_eq!(parse(&buf[..parsed.len]), Ok(Some(parsed)), "the bytes after it do not matter");
            }
            Ok(Progress::Incomplete { at_least }) => {
                prop_assert!(at_least > buf.len() && at_least <= MAX_HEADER, "{}", at_least);
            }
            Err(_) => {}
        }
    }
}
