//! Traffic policies and health-check node ports on loopback, with pods on
//! `node-1` and `node-2` and the proxy as `node-1`.

use std::net::SocketAddr;

use lb_core::{ServiceSpec, ServiceType, TrafficPolicy};
use lb_proxy::ops::healthcheck::HealthChecks;

use crate::support::*;

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

/// [`answers`] from this async test, off the runtime's workers.
async fn answered(addr: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    tokio::task::spawn_blocking(move || answers(addr, n))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_policies_send_traffic_only_to_this_nodes_pods() {
    let here = http_backend("127.0.246.1", "here");
    let there = http_backend("127.0.246.2", "there");
    let vip = vip();
    let np = free_port("127.0.1.1");
    let node_addr = SocketAddr::new(ip("127.0.1.1"), np);
    let pods = || {
        vec![
            pod("here", here.addr, "node-1"),
            pod("there", there.addr, "node-2"),
        ]
    };
    let plane = start(
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
    assert_eq!(answered(node_addr, 8).await, ["here".to_string()].into());
    assert_eq!(
        answered(vip, 8).await,
        ["here".to_string(), "there".to_string()].into(),
        "cluster IP traffic follows the internal policy (Cluster)"
    );

    plane
        .update(
            node(),
            vec![node_port_service(
                vip,
                np,
                pods(),
                TrafficPolicy::Local,
                TrafficPolicy::Local,
            )],
        )
        .await;
    assert_eq!(answered(vip, 8).await, ["here".to_string()].into());

    // No pod on this node: the Local frontends refuse, the Cluster one serves.
    plane
        .update(
            node(),
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
    assert_eq!(answered(vip, 4).await, ["there".to_string()].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_node_port_answers_200_with_a_local_ready_endpoint_else_503() {
    let here = http_backend("127.0.246.3", "here");
    let there = http_backend("127.0.246.4", "there");
    let vip = vip();
    let hc = free_port("127.0.1.1");
    let hc_addr = SocketAddr::new(ip("127.0.1.1"), hc);
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
    let plane = start(no_ejection(), vec![lb(true)]).await;
    let _checks = HealthChecks::start(&plane, lb_proxy::lifecycle::Tasks::new());
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(hc_addr).is_ok()).await,
        "the health-check node port listens on the node address"
    );
    let (status, body) = http_get_async(hc_addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"service":{"namespace":"default","name":"lb"},"localEndpoints":1}"#
    );
    assert_eq!(
        http_get_async(hc_addr, "/any/path").await.0,
        200,
        "every path answers"
    );

    // Without SO_REUSEPORT, nobody can bind beside it.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    assert!(other.bind(&hc_addr.into()).is_err());

    plane.update(node(), vec![lb(false)]).await;
    let (status, body) = http_get_async(hc_addr, "/").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        r#"{"service":{"namespace":"default","name":"lb"},"localEndpoints":0}"#
    );

    // The service goes: so does its health-check port.
    plane.update(node(), Vec::new()).await;
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(hc_addr).is_err()).await,
        "closed with its service"
    );
}
