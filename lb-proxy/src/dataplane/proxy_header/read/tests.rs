//! `read_header` on real loopback connections: what a client wrote, in one
//! piece or byte by byte, and what it left unsaid.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::{encode, Addresses, Header, ProxyProtocol, Transport};
use super::*;

/// A generous bound for the tests that expect a header.
const WAIT: Duration = Duration::from_secs(3);

/// A connected pair: (client, accepted server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

fn addresses() -> Addresses {
    Addresses {
        source: "127.0.0.1:40000".parse().unwrap(),
        destination: "127.0.0.2:443".parse().unwrap(),
    }
}

fn proxied() -> Header {
    Header::Proxy {
        transport: Transport::Stream,
        addresses: addresses(),
    }
}

/// Everything left in `server` after the header, until the client closes.
async fn rest(server: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, server.read_to_end(&mut rest))
        .await
        .expect("the client closes")
        .unwrap();
    rest
}

const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n";

#[tokio::test]
async fn a_header_and_payload_in_one_write_leave_the_payload_byte_for_byte() {
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let (mut client, mut server) = pair().await;
        let header = encode(version, Transport::Stream, &addresses());
        client
            .write_all(&[header.as_bytes(), PAYLOAD].concat())
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let parsed = read_header(&server, WAIT).await.unwrap();
        assert_eq!(parsed.header, proxied(), "{version:?}");
        assert_eq!(
            (parsed.version, parsed.len),
            (version, header.as_bytes().len())
        );
        assert_eq!(rest(&mut server).await, PAYLOAD, "{version:?}");
    }
}

#[tokio::test]
async fn a_header_sent_one_byte_at_a_time_is_still_read() {
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let (mut client, mut server) = pair().await;
        client.set_nodelay(true).unwrap();
        let header = encode(version, Transport::Stream, &addresses());
        let writer = tokio::spawn(async move {
            for byte in header.as_bytes() {
                client.write_all(&[*byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            client.write_all(PAYLOAD).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let parsed = read_header(&server, WAIT).await.unwrap();
        assert_eq!(parsed.header, proxied(), "{version:?}");
        assert_eq!(rest(&mut server).await, PAYLOAD, "{version:?}");
        drop(writer.await.unwrap());
    }
}

#[tokio::test]
async fn a_v2_header_longer_than_the_inline_buffer_is_read_whole() {
    let (mut client, mut server) = pair().await;
    let mut header = encode(ProxyProtocol::V2, Transport::Stream, &addresses())
        .as_bytes()
        .to_vec();
    let tlv = [&[0xe0, 0x03, 0xe8][..], &[7; 1000]].concat(); // a custom TLV, 1000 bytes
    header.extend(&tlv);
    let len = u16::try_from(header.len() - 16).unwrap();
    header[14..16].copy_from_slice(&len.to_be_bytes());
    client
        .write_all(&[&header[..], PAYLOAD].concat())
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    let parsed = read_header(&server, WAIT).await.unwrap();
    assert_eq!((parsed.header, parsed.len), (proxied(), header.len()));
    assert_eq!(rest(&mut server).await, PAYLOAD);
}

#[tokio::test]
async fn a_payload_without_a_header_is_invalid() {
    let (mut client, server) = pair().await;
    client.write_all(PAYLOAD).await.unwrap();
    let e = read_header(&server, WAIT).await.unwrap_err();
    assert!(
        matches!(e, ReadError::Invalid(ParseError::NotProxy(_))),
        "{e}"
    );
}

#[tokio::test]
async fn a_connection_closed_mid_header_is_closed() {
    let v2 = encode(ProxyProtocol::V2, Transport::Stream, &addresses());
    for sent in [&b"PROXY TCP4 127.0"[..], &v2.as_bytes()[..20], b""] {
        let (mut client, server) = pair().await;
        client.write_all(sent).await.unwrap();
        drop(client);
        let started = Instant::now();
        let e = read_header(&server, WAIT).await.unwrap_err();
        assert!(
            matches!(e, ReadError::Closed),
            "{}: {e}",
            sent.escape_ascii()
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "told at once, not at the timeout"
        );
    }
}

#[tokio::test]
async fn nothing_sent_times_out() {
    let (_client, server) = pair().await;
    let started = Instant::now();
    let e = read_header(&server, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::Timeout), "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_header_that_trickles_in_slower_than_the_timeout_times_out() {
    let (mut client, server) = pair().await;
    client.write_all(b"PROXY TCP4 ").await.unwrap();
    let e = read_header(&server, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, ReadError::Timeout), "{e}");
    drop(client);
}
