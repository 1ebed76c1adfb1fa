//! What one small question can buy: a UDP reply is at most 512 bytes
//! without EDNS and at most the client's payload size, capped at 1,232
//! bytes, with it; a larger answer is cut with TC set and served whole over
//! TCP. ANY is answered minimally (RFC 8482), never with every record of
//! the name.
//!
//! 127.0.116.0/24 is this file's alone: the headless service's endpoints,
//! 127.0.116.1 to 127.0.116.100, and the fake upstream's records only
//! appear in answers (nothing is sent to them); the fake upstream listens on
//! 127.0.116.200.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::support::dns::{exchange_tcp, exchange_udp, ips, question, responder, Responder};

/// How many ready endpoints the headless service has: 100 A records are
/// about 1,650 bytes, more than 512 and more than 1,232.
const ENDPOINTS: u8 = 100;

const NAME: &str = "many.default.svc.cluster.local";

fn endpoint(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 116, i))
}

/// A headless service with [`ENDPOINTS`] ready endpoints, and an
/// ExternalName alias of it.
async fn many() -> Responder {
    let addresses: Vec<String> = (1..=ENDPOINTS)
        .map(|i| format!("{{ ip = \"{}\" }}", endpoint(i)))
        .collect();
    responder(
        &format!(
            r#"
[[services]]
name = "many"
cluster_ip = "None"
ports = [{{ name = "http", port = 80 }}]
[[endpoints]]
name = "many"
[[endpoints.subsets]]
addresses = [{}]
ports = [{{ name = "http", port = 8080 }}]
[[services]]
name = "alias"
type = "ExternalName"
external_name = "{NAME}"
"#,
            addresses.join(", ")
        ),
        Vec::new(),
    )
    .await
}

fn every_endpoint() -> Vec<IpAddr> {
    (1..=ENDPOINTS).map(endpoint).collect()
}

#[tokio::test]
async fn a_reply_too_big_for_512_bytes_is_truncated_over_udp_and_whole_over_tcp() {
    let dns = many().await;
    let q = question(NAME, RecordType::A, None);

    let udp = exchange_udp(dns.addr, &q).await;
    let cut = Message::from_vec(&udp).unwrap();
    assert!(
        udp.len() <= 512,
        "{} bytes over UDP without EDNS",
        udp.len()
    );
    assert!(cut.truncated(), "TC set: the client retries over TCP");
    assert_eq!(cut.response_code(), ResponseCode::NoError);
    assert!(
        cut.extensions().is_none(),
        "no OPT record to a question without one"
    );
    // What fits is whole records of the answer.
    assert!(!cut.answers().is_empty());
    assert!(ips(&cut).iter().all(|ip| every_endpoint().contains(ip)));

    let tcp = Message::from_vec(&exchange_tcp(dns.addr, &q).await).unwrap();
    assert!(!tcp.truncated());
    assert_eq!(ips(&tcp), every_endpoint(), "every address over TCP");
}

#[tokio::test]
async fn an_edns_client_gets_its_payload_size_capped_at_1232_bytes_over_udp() {
    let dns = many().await;
    for (advertised, limit) in [(4096u16, 1232u16), (65535, 1232), (1232, 1232), (700, 700)] {
        let udp = exchange_udp(dns.addr, &question(NAME, RecordType::A, Some(advertised))).await;
        let cut = Message::from_vec(&udp).unwrap();
        assert!(
            udp.len() <= usize::from(limit),
            "EDNS {advertised}: {} bytes over UDP, at most {limit}",
            udp.len()
        );
        assert!(cut.truncated(), "EDNS {advertised}: TC set");
        let opt = cut
            .extensions()
            .as_ref()
            .expect("an OPT record in the reply");
        assert_eq!(
            opt.max_payload(),
            limit,
            "EDNS {advertised}: our payload size"
        );
    }
    // Over TCP the size rules do not apply.
    let tcp = exchange_tcp(dns.addr, &question(NAME, RecordType::A, Some(4096))).await;
    let tcp = Message::from_vec(&tcp).unwrap();
    assert!(!tcp.truncated());
    assert_eq!(ips(&tcp), every_endpoint());
}

#[tokio::test]
async fn a_small_answer_is_not_truncated() {
    let dns = many().await;
    let host = format!("127-0-116-7.{NAME}");
    let udp = exchange_udp(dns.addr, &question(&host, RecordType::A, None)).await;
    let m = Message::from_vec(&udp).unwrap();
    assert!(!m.truncated());
    assert_eq!(ips(&m), vec![endpoint(7)]);
}

#[tokio::test]
async fn an_any_question_gets_one_hinfo_not_every_record() {
    let dns = many().await;
    for (q, protocol) in [
        (question(NAME, RecordType::ANY, None), "udp"),
        (question(NAME, RecordType::ANY, Some(4096)), "udp+edns"),
        (question(NAME, RecordType::ANY, None), "tcp"),
    ] {
        let bytes = match protocol {
            "tcp" => exchange_tcp(dns.addr, &q).await,
            _ => exchange_udp(dns.addr, &q).await,
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError, "{protocol}");
        assert!(!m.truncated(), "{protocol}");
        assert_eq!(m.answers().len(), 1, "{protocol}: {:?}", m.answers());
        match m.answers()[0].data() {
            RData::HINFO(hinfo) => {
                assert_eq!(hinfo.cpu(), b"RFC8482", "{protocol}");
                assert!(hinfo.os().is_empty(), "{protocol}");
            }
            other => panic!("{protocol}: HINFO RFC8482, not {other:?}"),
        }
        assert!(m.additionals().is_empty(), "{protocol}");
        assert!(bytes.len() < 128, "{protocol}: {} bytes", bytes.len());
    }
}

#[tokio::test]
async fn an_any_question_for_an_external_name_gets_its_cname_alone() {
    let dns = many().await;
    let alias = "alias.default.svc.cluster.local";
    let m =
        Message::from_vec(&exchange_udp(dns.addr, &question(alias, RecordType::ANY, None)).await)
            .unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers().len(), 1, "{:?}", m.answers());
    assert_eq!(m.answers()[0].record_type(), RecordType::CNAME);
    assert!(!m.truncated());
}

#[tokio::test]
async fn an_any_question_for_a_missing_name_is_nxdomain() {
    let dns = many().await;
    let missing = "nothing.default.svc.cluster.local";
    let m =
        Message::from_vec(&exchange_udp(dns.addr, &question(missing, RecordType::ANY, None)).await)
            .unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.answers().is_empty());
}

/// An upstream on 127.0.116.200 that answers every question with two
/// RRsets (two A records, one TXT) and an additional record, as an upstream
/// that answers ANY in full would.
async fn upstream_answering_everything() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.116.200:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.query().cloned() else {
                continue;
            };
            let name = query.name().clone();
            let record = |rdata| Record::from_rdata(name.clone(), 60, rdata);
            let mut reply = Message::new();
            reply
                .set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(q.recursion_desired())
                .set_recursion_available(true)
                .add_query(query.clone())
                .add_answer(record(RData::A(A::new(127, 0, 116, 201))))
                .add_answer(record(RData::TXT(TXT::new(vec!["x".repeat(200)]))))
                .add_answer(record(RData::A(A::new(127, 0, 116, 202))))
                .add_additional(record(RData::A(A::new(127, 0, 116, 203))));
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_forwarded_any_question_passes_on_one_rrset_of_the_upstreams_answer() {
    let upstream = upstream_answering_everything().await;
    let dns = responder("", vec![upstream]).await;
    let outside = "www.example.test.";
    let m =
        Message::from_vec(&exchange_udp(dns.addr, &question(outside, RecordType::ANY, None)).await)
            .unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        ips(&m),
        vec![
            "127.0.116.201".parse::<IpAddr>().unwrap(),
            "127.0.116.202".parse().unwrap()
        ],
        "the first RRset, whole"
    );
    assert!(
        m.answers().iter().all(|r| r.record_type() == RecordType::A),
        "no other RRset: {:?}",
        m.answers()
    );
    assert!(m.additionals().is_empty());
    // Other types are passed on as the upstream sent them.
    let m =
        Message::from_vec(&exchange_udp(dns.addr, &question(outside, RecordType::A, None)).await)
            .unwrap();
    assert_eq!(m.answers().len(), 3);
}
