//! Traffic policies and health-check node ports on loopback, with pods on
//! `node-1` and `node-2` and the proxy as `node-1`.
#![cfg(feature = "admin")]

mod health_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use health_support::*;
use lb_core::{ServiceSpec, ServiceType, TrafficPolicy};
use lb_proxy::ops::healthcheck::HealthChecks;
use support::{eventually, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn at(ip: &str) -> SocketAddr {
    SocketAddr::new(support::ip(ip), 0)
}

/// A port on the node address (127.0.1.1) that was free a moment ago.
fn node_port() -> u16 {
    std::net::TcpListener::bind("127.0.1.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn node_port_service(
    vip: SocketAddr,
    np: u16,
    pods: Vec<lb_core::EndpointSpec>,
    external: TrafficPolicy,
    internal: TrafficPolicy,
) -> ServiceSpec {
    let mut svc = pod_service("web", vip, pods);
    svc.service_type = ServiceType::NodePort;
    svc.ports[0].node_port = Some(np);
    svc.external_traffic_policy = external;
    svc.internal_traffic_policy = internal;
    svc
}

async fn answers(addr: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        seen.insert(try_fetch(addr).await.expect("answered"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policies_send_traffic_only_to_this_nodes_pods() {
    let here = answering(at("127.0.246.1"), "here").await;
    let there = answering(at("127.0.246.2"), "there").await;
    let vip = support::vip();
    let np = node_port();
    let node_addr = SocketAddr::new(support::ip("127.0.1.1"), np);
    let pods = || {
        vec![
            pod("here", here.addr, "node-1"),
            pod("there", there.addr, "node-2"),
        ]
    };
    let plane = support::start(
        no_ejection(),
        vec![node_port_service(
            vip,
            np,
            pods(),
            TrafficPolicy::Local,
            TrafficPolicy::Cluster,
        )],
    )
    .await;
    assert_eq!(answers(node_addr, 8).await, ["here".to_string()].into());
    assert_eq!(
        answers(vip, 8).await,
        ["here".to_string(), "there".to_string()].into(),
        "cluster IP traffic follows the internal policy (Cluster)"
    );

    plane
        .update(
            support::node(),
            vec![node_port_service(
                vip,
                np,
                pods(),
                TrafficPolicy::Local,
                TrafficPolicy::Local,
            )],
        )
        .await;
    assert_eq!(answers(vip, 8).await, ["here".to_string()].into());

    // No pod on this node: the Local frontends refuse, the Cluster one serves.
    plane
        .update(
            support::node(),
            vec![node_port_service(
                vip,
                np,
                vec![pod("there", there.addr, "node-2")],
                TrafficPolicy::Local,
                TrafficPolicy::Cluster,
            )],
        )
        .await;
    let refused = tokio::net::TcpStream::connect(node_addr).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "no local endpoint: the node port is closed"
    );
    assert_eq!(answers(vip, 4).await, ["there".to_string()].into());
}

/// `GET path` against `addr`: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .expect("answer in time")
        .unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_node_port_answers_200_with_a_local_ready_endpoint_else_503() {
    let here = answering(at("127.0.246.3"), "here").await;
    let there = answering(at("127.0.246.4"), "there").await;
    let vip = support::vip();
    let hc = node_port();
    let hc_addr = SocketAddr::new(support::ip("127.0.1.1"), hc);
    let lb = |here_serving: bool| {
        let mut local = pod("here", here.addr, "node-1");
        local.serving = here_serving;
        let mut svc = pod_service("lb", vip, vec![local, pod("there", there.addr, "node-2")]);
        // LoadBalancer is refused by lb-config until its release; the data
        // plane serves a hand-built one.
        svc.service_type = ServiceType::LoadBalancer;
        svc.external_traffic_policy = TrafficPolicy::Local;
        svc.health_check_node_port = hc;
        svc
    };
    let plane = support::start(no_ejection(), vec![lb(true)]).await;
    let _checks = HealthChecks::start(&plane, lb_proxy::lifecycle::Tasks::new());
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(hc_addr).is_ok()).await,
        "the health-check node port listens on the node address"
    );
    let (status, body) = get(hc_addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"service":{"namespace":"default","name":"lb"},"localEndpoints":1}"#
    );
    assert_eq!(get(hc_addr, "/any/path").await.0, 200, "every path answers");

    // Without SO_REUSEPORT, nobody can bind beside it.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    assert!(other.bind(&hc_addr.into()).is_err());

    plane.update(support::node(), vec![lb(false)]).await;
    let (status, body) = get(hc_addr, "/").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        r#"{"service":{"namespace":"default","name":"lb"},"localEndpoints":0}"#
    );

    // The service goes: so does its health-check port.
    plane.update(support::node(), Vec::new()).await;
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(hc_addr).is_err()).await,
        "closed with its service"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
