//! The `lb-proxy` binary's log at `RUST_LOG=info` (the shipped systemd
//! unit's) has no line per DNS question: hickory-server's request log and
//! the responder's own are debugging tools, brought back by naming them.
//!
//! The responder listens on 127.0.117.53 and .54, this file's alone.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::bin::{Run, Running};
use crate::support::dns::{exchange_tcp, query, question};
use crate::support::free_udp_port;

const NAME: &str = "web.default.svc.cluster.local.";

/// The binary answering DNS on `ip`, with `RUST_LOG=rust_log`, once it
/// listens.
async fn proxy(ip: &str, rust_log: &str) -> (Running, SocketAddr) {
    let ip: IpAddr = ip.parse().unwrap();
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    let proxy = Run::text(&format!(
        r#"
[cluster]
service_cidr = "127.96.0.0/16"
[admin]
listen = ""
[dns]
listen = "{listen}"
[[services]]
name = "web"
cluster_ip = "127.96.117.10"
ports = [{{ port = 80 }}]
"#
    ))
    .env("RUST_LOG", rust_log)
    .spawn()
    .expect("lb-proxy starts");
    // Logged once both sockets are bound.
    assert!(
        proxy.logged("dns responder listening", Duration::from_secs(10)),
        "{}",
        proxy.logs()
    );
    (proxy, listen)
}

/// Fifty questions over UDP (A, AAAA, ANY, a missing name) and one over TCP.
async fn burst(server: SocketAddr) {
    for i in 0..50 {
        let (name, qtype) = match i % 4 {
            0 => (NAME, RecordType::A),
            1 => (NAME, RecordType::AAAA),
            2 => (NAME, RecordType::ANY),
            _ => ("missing.default.svc.cluster.local.", RecordType::A),
        };
        query(server, name, qtype).await;
    }
    exchange_tcp(server, &question(NAME, RecordType::A, None)).await;
}

#[tokio::test]
async fn at_rust_log_info_a_burst_of_dns_questions_adds_no_log_line() {
    let (proxy, server) = proxy("127.0.117.53", "info").await;
    let before = proxy.logs();
    burst(server).await;
    // A line logged after the burst: whatever the questions logged is in
    // the file before it.
    proxy.signal("HUP");
    assert!(proxy.logged("SIGHUP: reloading", Duration::from_secs(10)));
    let logs = proxy.logs();
    let added = logs.get(before.len()..).unwrap_or_default();
    let first = added.lines().next().unwrap_or_default();
    assert!(
        first.contains("SIGHUP: reloading"),
        "nothing logged before the marker, got:\n{added}"
    );
    for needle in [
        "hickory_server",
        "web.default.svc",
        "missing.default",
        "dns question",
    ] {
        assert!(!added.contains(needle), "{needle:?} logged:\n{added}");
    }
}

#[tokio::test]
async fn naming_the_dns_targets_in_rust_log_brings_the_query_log_back() {
    let (proxy, server) = proxy(
        "127.0.117.54",
        "info,hickory_server=info,lb_proxy::ops::dns=debug",
    )
    .await;
    burst(server).await;
    assert!(
        proxy.logged("missing.default.svc.cluster.local", Duration::from_secs(10)),
        "{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert!(logs.contains("hickory_server"), "{logs}");
    assert!(logs.contains("dns question"), "{logs}");
}
