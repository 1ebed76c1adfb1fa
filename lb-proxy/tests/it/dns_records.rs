//! The cluster DNS responder answers the records of the Kubernetes DNS
//! specification (schema 1.1.0) from the live table, asked by a real resolver
//! client (hickory-resolver) and by raw queries for exact flags and sections.

use std::time::SystemTime;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use hickory_resolver::proto::xfer::Protocol;
use lb_core::{ClusterIp, EndpointSpec, PortSpec, ServiceSpec};

use crate::support::dns::{answers, ips, lookup_ips, query, resolver, responder, table};
use crate::support::ip;

const CLUSTER: &str = r#"
[[pods]]
name = "web-1"
ip = "127.0.244.1"
hostname = "pet-1"
labels = { app = "web" }
ports = [{ name = "http", container_port = 8080 }, { name = "metrics", container_port = 9090 }]
[[pods]]
name = "web-2"
ip = "127.0.244.2"
labels = { app = "web" }
ports = [{ name = "http", container_port = 8080 }, { name = "metrics", container_port = 9090 }]
[[pods]]
name = "web-3"
ip = "127.0.244.3"
ready = false
labels = { app = "web" }
ports = [{ name = "http", container_port = 8080 }]
[[pods]]
name = "db-1"
namespace = "shop"
ip = "127.0.244.20"
ready = false
labels = { app = "db" }
ports = [{ name = "sql", container_port = 5432 }]

[[services]]
name = "web"
cluster_ip = "127.96.0.10"
selector = { app = "web" }
ports = [{ name = "http", port = 80, target_port = "http" }, { name = "metrics", port = 9090, target_port = "metrics" }]

[[services]]
name = "web-headless"
cluster_ip = "None"
selector = { app = "web" }
ports = [{ name = "http", port = 80, target_port = "http" }]

[[services]]
name = "db"
namespace = "shop"
cluster_ip = "None"
selector = { app = "db" }
ports = [{ name = "sql", port = 5432, target_port = "sql" }]

[[services]]
name = "db-all"
namespace = "shop"
cluster_ip = "None"
publish_not_ready_addresses = true
selector = { app = "db" }
ports = [{ name = "sql", port = 5432, target_port = "sql" }]

[[services]]
name = "single"
cluster_ip = "127.96.0.11"
selector = { app = "web" }
ports = [{ port = 8080 }]

[[services]]
name = "alias"
type = "ExternalName"
external_name = "web.default.svc.cluster.local"

[[services]]
name = "outside"
type = "ExternalName"
external_name = "www.example.test"
"#;

#[tokio::test]
async fn a_cluster_ip_service_resolves_to_its_cluster_ip_case_insensitively() {
    let dns = responder(CLUSTER, vec![]).await;
    let r = resolver(dns.addr, Protocol::Udp);
    let found = lookup_ips(&r, "Web.DEFAULT.svc.Cluster.Local.").await;
    assert_eq!(found, vec![ip("127.96.0.10")]);
    let m = query(dns.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative(), "answers for the zone are authoritative");
    assert_eq!(m.answers()[0].ttl(), 5, "the configured TTL");
}

#[tokio::test]
async fn the_responder_answers_over_tcp_too() {
    let dns = responder(CLUSTER, vec![]).await;
    let r = resolver(dns.addr, Protocol::Tcp);
    let found = lookup_ips(&r, "single.default.svc.cluster.local.").await;
    assert_eq!(found, vec![ip("127.96.0.11")]);
}

#[tokio::test]
async fn an_ipv6_cluster_ip_is_an_aaaa_record_and_an_ipv4_one_has_no_aaaa() {
    let mut dns = responder(CLUSTER, vec![]).await;
    let mut services = dns.config.services.clone();
    services.push(
        ServiceSpec::cluster_ip("default", "six", ip("::1"))
            .with_port(PortSpec::tcp("http", 80))
            .into(),
    );
    dns.table
        .rebuild(dns.config.node.clone(), services, SystemTime::now());
    let r = resolver(dns.addr, Protocol::Udp);
    let aaaa = r
        .ipv6_lookup("six.default.svc.cluster.local.")
        .await
        .unwrap();
    assert_eq!(
        aaaa.iter().map(|a| a.0).collect::<Vec<_>>(),
        vec!["::1".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    let reverse = format!("1.{}ip6.arpa.", "0.".repeat(31));
    let m = query(dns.addr, &reverse, RecordType::PTR).await;
    assert_eq!(
        answers(&m),
        vec![format!("{reverse} PTR six.default.svc.cluster.local.")]
    );
    // A name that exists without records of the asked type: NODATA, with the SOA.
    let m = query(dns.addr, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    dns.config.services.clear();
}

#[tokio::test]
async fn a_headless_service_resolves_to_its_ready_endpoints() {
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(
        dns.addr,
        "web-headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        ips(&m),
        vec![ip("127.0.244.1"), ip("127.0.244.2")],
        "web-3 is not ready"
    );
    let r = resolver(dns.addr, Protocol::Udp);
    let found = lookup_ips(&r, "web-headless.default.svc.cluster.local.").await;
    assert_eq!(found.len(), 2);
}

#[tokio::test]
async fn a_headless_service_without_ready_endpoints_is_nxdomain_unless_it_publishes_not_ready_ones()
{
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(dns.addr, "db.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    let m = query(dns.addr, "db-all.shop.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(ips(&m), vec![ip("127.0.244.20")]);
}

#[tokio::test]
async fn headless_endpoints_resolve_by_hostname_or_generated_name() {
    let dns = responder(CLUSTER, vec![]).await;
    let r = resolver(dns.addr, Protocol::Udp);
    let pet = lookup_ips(&r, "pet-1.web-headless.default.svc.cluster.local.").await;
    assert_eq!(pet, vec![ip("127.0.244.1")]);
    let generated = lookup_ips(&r, "127-0-244-2.web-headless.default.svc.cluster.local.").await;
    assert_eq!(generated, vec![ip("127.0.244.2")]);
    let m = query(
        dns.addr,
        "127-0-244-3.web-headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain, "not ready");
}

#[tokio::test]
async fn srv_records_name_the_service_or_each_ready_endpoint() {
    let dns = responder(CLUSTER, vec![]).await;
    let r = resolver(dns.addr, Protocol::Udp);
    let srv = r
        .srv_lookup("_http._tcp.web.default.svc.cluster.local.")
        .await
        .unwrap();
    let got: Vec<(u16, String)> = srv
        .iter()
        .map(|s| (s.port(), s.target().to_string()))
        .collect();
    assert_eq!(
        got,
        vec![(80, "web.default.svc.cluster.local.".to_string())]
    );

    let m = query(
        dns.addr,
        "_http._tcp.web-headless.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        answers(&m),
        vec![
            "_http._tcp.web-headless.default.svc.cluster.local. SRV 0 50 8080 127-0-244-2.web-headless.default.svc.cluster.local.",
            "_http._tcp.web-headless.default.svc.cluster.local. SRV 0 50 8080 pet-1.web-headless.default.svc.cluster.local.",
        ]
    );
    // The targets' addresses ride along in the additional section.
    let extra: Vec<String> = m
        .additionals()
        .iter()
        .map(|r| format!("{} {}", r.name(), r.data()))
        .collect();
    assert!(
        extra.contains(&"pet-1.web-headless.default.svc.cluster.local. 127.0.244.1".to_string()),
        "{extra:?}"
    );

    // Unnamed ports, unknown ports and the wrong protocol have no SRV.
    for name in [
        "_8080._tcp.single.default.svc.cluster.local.",
        "_metrics._udp.web.default.svc.cluster.local.",
        "_nope._tcp.web.default.svc.cluster.local.",
    ] {
        let m = query(dns.addr, name, RecordType::SRV).await;
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
    }
}

#[tokio::test]
async fn an_external_name_service_is_a_cname_followed_inside_the_zone_without_upstreams() {
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(dns.addr, "alias.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        vec![
            "alias.default.svc.cluster.local. CNAME web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. A 127.96.0.10",
        ]
    );
    let r = resolver(dns.addr, Protocol::Udp);
    let found = lookup_ips(&r, "alias.default.svc.cluster.local.").await;
    assert_eq!(found, vec![ip("127.96.0.10")]);
    // A target outside the zone, with no upstream: the CNAME alone.
    let m = query(
        dns.addr,
        "outside.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        vec!["outside.default.svc.cluster.local. CNAME www.example.test."]
    );
    let m = query(
        dns.addr,
        "outside.default.svc.cluster.local.",
        RecordType::CNAME,
    )
    .await;
    assert_eq!(answers(&m).len(), 1);
}

#[tokio::test]
async fn cluster_ips_and_headless_endpoints_have_ptr_records() {
    // Raw queries: hickory-resolver answers reverse lookups of loopback
    // addresses itself ("localhost.") without asking; dns_dig asks with dig.
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(dns.addr, "10.0.96.127.in-addr.arpa.", RecordType::PTR).await;
    assert!(m.authoritative());
    assert_eq!(
        answers(&m),
        vec!["10.0.96.127.in-addr.arpa. PTR web.default.svc.cluster.local."]
    );
    let m = query(dns.addr, "1.244.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        answers(&m),
        vec!["1.244.0.127.in-addr.arpa. PTR pet-1.web-headless.default.svc.cluster.local."]
    );
    let m = query(dns.addr, "2.244.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        answers(&m),
        vec!["2.244.0.127.in-addr.arpa. PTR 127-0-244-2.web-headless.default.svc.cluster.local."]
    );
    // An address we do not know is not ours: no upstream, so REFUSED.
    let m = query(dns.addr, "9.9.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.response_code(), ResponseCode::Refused);
}

#[tokio::test]
async fn the_schema_version_is_a_txt_record() {
    let dns = responder(CLUSTER, vec![]).await;
    let r = resolver(dns.addr, Protocol::Udp);
    let txt = r.txt_lookup("dns-version.cluster.local.").await.unwrap();
    let texts: Vec<String> = txt.iter().map(|t| t.to_string()).collect();
    assert_eq!(texts, vec!["1.1.0"]);
}

#[tokio::test]
async fn pod_names_resolve_to_the_address_they_spell() {
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(
        dns.addr,
        "127-0-244-1.default.pod.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(ips(&m), vec![ip("127.0.244.1")]);
    let m = query(dns.addr, "1-2-3-4.any.pod.cluster.local.", RecordType::A).await;
    assert_eq!(
        ips(&m),
        vec![ip("1.2.3.4")],
        "any well-formed address, as the spec allows"
    );
    let m = query(dns.addr, "1-2-3.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

#[tokio::test]
async fn unknown_names_in_the_zone_are_nxdomain_and_existing_ones_nodata() {
    let dns = responder(CLUSTER, vec![]).await;
    for name in [
        "nope.default.svc.cluster.local.",
        "web.nowhere.svc.cluster.local.",
        "nowhere.svc.cluster.local.",
        "x.y.z.cluster.local.",
    ] {
        let m = query(dns.addr, name, RecordType::A).await;
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(m.authoritative());
        let soa = &m.name_servers()[0];
        assert_eq!(soa.record_type(), RecordType::SOA, "{name}");
        assert_eq!(soa.name().to_string(), "cluster.local.");
    }
    for (name, qtype) in [
        ("web.default.svc.cluster.local.", RecordType::TXT),
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::A),
    ] {
        let m = query(dns.addr, name, qtype).await;
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        assert!(m.answers().is_empty(), "{name}");
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA, "{name}");
    }
    let m = query(dns.addr, "cluster.local.", RecordType::SOA).await;
    assert_eq!(m.answers()[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn names_outside_the_zone_are_refused_without_upstreams() {
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(dns.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::Refused);
    assert!(!m.recursion_available());
}

#[tokio::test]
async fn a_readiness_change_shows_in_the_next_headless_answer() {
    let dns = responder(CLUSTER, vec![]).await;
    let m = query(
        dns.addr,
        "web-headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(ips(&m).len(), 2);
    let mut services = dns.config.services.clone();
    for s in services.iter_mut().filter(|s| s.key.name == "web-headless") {
        for p in &mut std::sync::Arc::make_mut(s).ports {
            for e in p
                .endpoints
                .iter_mut()
                .filter(|e| e.addr.ip() == ip("127.0.244.1"))
            {
                e.serving = false;
            }
        }
    }
    dns.table
        .rebuild(dns.config.node.clone(), services.clone(), SystemTime::now());
    let m = query(
        dns.addr,
        "web-headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(ips(&m), vec![ip("127.0.244.2")]);
    let m = query(
        dns.addr,
        "pet-1.web-headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    // Every endpoint gone: NXDOMAIN for the service name.
    for s in services.iter_mut().filter(|s| s.key.name == "web-headless") {
        for p in &mut std::sync::Arc::make_mut(s).ports {
            p.endpoints.clear();
        }
    }
    dns.table
        .rebuild(dns.config.node.clone(), services, SystemTime::now());
    let m = query(
        dns.addr,
        "web-headless.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

#[tokio::test]
async fn a_service_added_by_an_embedder_resolves_at_once() {
    let dns = responder("", vec![]).await;
    let m = query(dns.addr, "late.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let mut headless = ServiceSpec::cluster_ip("default", "late", ip("127.96.0.99"));
    headless.cluster_ip = ClusterIp::None;
    headless = headless.with_port(
        PortSpec::tcp("http", 80)
            .with_endpoint(EndpointSpec::new("127.0.244.9:80".parse().unwrap())),
    );
    dns.table
        .rebuild(dns.config.node.clone(), vec![headless], SystemTime::now());
    let m = query(dns.addr, "late.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(ips(&m), vec![ip("127.0.244.9")]);
}

#[tokio::test]
async fn a_stopped_responder_leaves_no_task_and_frees_its_port() {
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let (table, config) = table(CLUSTER);
    let options = lb_proxy::ops::dns::DnsOptions {
        zone: config.cluster.domain.clone(),
        ttl: 5,
        upstreams: Vec::new(),
    };
    let tasks = lb_proxy::lifecycle::Tasks::new();
    let dns = lb_proxy::ops::dns::Dns::start(
        "127.0.0.1:0".parse().unwrap(),
        table,
        options,
        tasks.clone(),
    )
    .await
    .unwrap();
    let addr = dns.local_addr();
    let m = query(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(ips(&m), vec![ip("127.96.0.10")]);
    assert!(tasks.running() >= 1);

    dns.shutdown().await;
    assert_eq!(tasks.running(), 0);
    assert_eq!(runtime.num_alive_tasks(), before, "no task of it is left");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the TCP listener is closed"
    );
    std::net::UdpSocket::bind(addr).expect("the UDP port is free again");
}
