//! Names outside the cluster zone go to `[dns] upstreams` (here a dnsmasq on
//! loopback, never the system's resolver), and ExternalName targets outside
//! the zone are chased there. Skipped, with a message, where dnsmasq is not
//! installed (`.ci/run` installs `dnsmasq-base`).

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use hickory_resolver::proto::xfer::Protocol;

use crate::support::dns::{answers, lookup_ips, query, resolver, responder};
use crate::support::free_udp_port;
use crate::support::tools::{have, Dnsmasq};

const EXTERNAL: &str = r#"
[[services]]
name = "outside"
type = "ExternalName"
external_name = "www.example.test"
"#;

fn skip() -> bool {
    if have("dnsmasq") {
        return false;
    }
    eprintln!("SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base)");
    true
}

#[tokio::test]
async fn names_outside_the_zone_are_forwarded_to_the_upstream() {
    if skip() {
        return;
    }
    let upstream = Dnsmasq::start("127.0.53.1", &["/example.test/127.1.2.3"]).await;
    let dns = responder(EXTERNAL, vec![upstream.addr]).await;
    let r = resolver(dns.addr, Protocol::Udp);
    let found = lookup_ips(&r, "www.example.test.").await;
    assert_eq!(found, vec!["127.1.2.3".parse::<IpAddr>().unwrap()]);
    let m = query(dns.addr, "www.example.test.", RecordType::A).await;
    assert!(!m.authoritative(), "a forwarded answer is not ours");
    assert!(m.recursion_available());
    // The upstream's verdict is passed on as it is.
    let m = query(dns.addr, "other.invalid.", RecordType::A).await;
    assert_eq!(
        m.response_code(),
        ResponseCode::Refused,
        "dnsmasq refuses names it does not serve"
    );
}

#[tokio::test]
async fn an_external_name_outside_the_zone_is_chased_through_the_upstream() {
    if skip() {
        return;
    }
    let upstream = Dnsmasq::start("127.0.53.2", &["/example.test/127.1.2.3"]).await;
    let dns = responder(EXTERNAL, vec![upstream.addr]).await;
    let m = query(
        dns.addr,
        "outside.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        vec![
            "outside.default.svc.cluster.local. CNAME www.example.test.",
            "www.example.test. A 127.1.2.3",
        ]
    );
    let r = resolver(dns.addr, Protocol::Udp);
    let found = lookup_ips(&r, "outside.default.svc.cluster.local.").await;
    assert_eq!(found, vec!["127.1.2.3".parse::<IpAddr>().unwrap()]);
}

#[tokio::test]
async fn a_dead_upstream_is_skipped_for_the_next_one() {
    if skip() {
        return;
    }
    let upstream = Dnsmasq::start("127.0.53.3", &["/example.test/127.1.2.3"]).await;
    // Nothing listens on the first one: its query times out (2 s), the second answers.
    let dead =
        std::net::SocketAddr::new("127.0.53.4".parse().unwrap(), free_udp_port("127.0.53.4"));
    let dns = responder("", vec![dead, upstream.addr]).await;
    let m = query(dns.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(answers(&m), vec!["www.example.test. A 127.1.2.3"]);
}

#[tokio::test]
async fn no_answering_upstream_is_servfail() {
    let dead =
        std::net::SocketAddr::new("127.0.53.5".parse().unwrap(), free_udp_port("127.0.53.5"));
    let dns = responder("", vec![dead]).await;
    let m = query(dns.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::ServFail);
}
