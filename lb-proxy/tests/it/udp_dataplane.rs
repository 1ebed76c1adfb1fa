//! UDP services on the wire: echo through cluster IPs and node ports (also on
//! a wildcard node address, IPv4 and IPv6, where the reply must come from the
//! address the client used), a session per client port, the sliding idle
//! timeout, TCP and UDP on one port number, 60 KB datagrams, drops without
//! endpoints, flows that move when their endpoint leaves, and failover after
//! ICMP unreachable. Everything runs on 127.0.0.0/8 and ::1 with bounded waits.
//!
//! Every scenario runs under the accept modes that place UDP relays
//! differently: `single` (the caller's runtime) and `percore` (two worker
//! threads), one module each at the end of this file.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::stats::{read, PortStats};
use lb_core::{
    AcceptMode, EndpointSpec, NodeSpec, PortSpec, Protocol, ProxySettings, ServiceSpec, ServiceType,
};
use lb_proxy::DataPlane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::process;
use crate::support::*;

/// A UDP NodePort service with one endpoint on a node whose only address is
/// the wildcard `any` (`0.0.0.0` or `::`), on a port free there (traffic only
/// ever goes to loopback addresses). Returns the data plane and the node port.
async fn start_wildcard_node_port(mode: Mode, any: &str, endpoint: SocketAddr) -> (DataPlane, u16) {
    let node_port = free_udp_port(ip(any));
    let node = NodeSpec {
        name: "node-1".into(),
        addresses: vec![ip(any)],
        zone: None,
    };
    let vip = vip();
    let mut svc = ServiceSpec::cluster_ip("default", "np", vip.ip());
    svc.service_type = ServiceType::NodePort;
    let mut port = udp_port("", vip.port(), &[endpoint]);
    port.node_port = Some(node_port);
    svc = svc.with_port(port);
    (
        mode.start_on(node, ProxySettings::default(), vec![svc])
            .await,
        node_port,
    )
}

async fn update(plane: &DataPlane, services: Vec<ServiceSpec>) {
    plane.update(node(), services).await;
}

fn udp_stats(plane: &DataPlane, frontend: SocketAddr) -> Arc<PortStats> {
    port_stats(plane, frontend, Protocol::Udp)
}

async fn echoes_through_a_cluster_ip_and_replies_from_it(mode: Mode) {
    let backend = udp_backend("127.0.60.1", "a");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[backend.addr])],
        )
        .await;
    let c = udp_client("127.0.0.1").await;
    let (reply, from) = udp_ask(&c, vip, b"hello").await;
    assert_eq!(reply, "a|hello");
    assert_eq!(
        from, vip,
        "the reply must come from the address the client sent to"
    );
    let stats = udp_stats(&plane, vip);
    assert_eq!(read(&stats.udp_forwarded), 1);
    // Counted right after the send, perhaps on another thread than the
    // client that already has the reply.
    assert!(eventually(WAIT, || read(&stats.udp_replied) == 1).await);
    assert_eq!(read(&stats.udp_sessions), 1);
    plane.shutdown().await;
}

async fn echoes_through_a_node_port_on_a_node_address(mode: Mode) {
    let backend = udp_backend("127.0.60.2", "a");
    let vip = vip();
    let node_port = free_udp_port("127.0.1.1");
    let mut svc = ServiceSpec::cluster_ip("default", "np", vip.ip());
    svc.service_type = ServiceType::NodePort;
    let mut port = udp_port("", vip.port(), &[backend.addr]);
    port.node_port = Some(node_port);
    svc = svc.with_port(port);
    let plane = mode.start(ProxySettings::default(), vec![svc]).await;
    let c = udp_client("127.0.0.1").await;
    let to = SocketAddr::new(ip("127.0.1.1"), node_port);
    let (reply, from) = udp_ask(&c, to, b"via node port").await;
    assert_eq!(reply, "a|via node port");
    assert_eq!(from, to);
    plane.shutdown().await;
}

async fn a_wildcard_node_address_replies_from_the_address_the_client_used(mode: Mode) {
    let backend = udp_backend("127.0.60.3", "a");
    let (plane, node_port) = start_wildcard_node_port(mode, "0.0.0.0", backend.addr).await;
    for target in ["127.0.0.1", "127.0.1.7", "127.5.6.7"] {
        let c = udp_client("127.0.0.1").await;
        let to = SocketAddr::new(ip(target), node_port);
        let (reply, from) = udp_ask(&c, to, target.as_bytes()).await;
        assert_eq!(reply, format!("a|{target}"));
        assert_eq!(
            from, to,
            "reply must come from {to}, the address the client sent to"
        );
    }
    plane.shutdown().await;
}

/// One client socket that sends to two addresses of a wildcard node port has
/// two flows (the address sent to is part of a flow's identity, as in
/// conntrack), so each reply comes from the address its request went to, even
/// when the replies arrive after both requests left.
async fn one_client_port_sending_to_two_node_addresses_gets_each_reply_from_its_address(
    mode: Mode,
) {
    // A backend that answers each datagram 200 ms late, from its own task.
    let backend = UdpSocket::bind((ip("127.0.60.5"), 0)).await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let backend = Arc::new(backend);
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, peer)) = backend.recv_from(&mut buf).await else {
                return;
            };
            seen.lock().unwrap().push(peer);
            let reply = buf[..n].to_vec();
            let socket = backend.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = socket.send_to(&reply, peer).await;
            });
        }
    });
    let (plane, node_port) = start_wildcard_node_port(mode, "0.0.0.0", backend_addr).await;
    let c = udp_client("127.0.0.1").await;
    let targets = [
        SocketAddr::new(ip("127.0.0.1"), node_port),
        SocketAddr::new(ip("127.0.0.2"), node_port),
    ];
    for to in targets {
        c.send_to(to.ip().to_string().as_bytes(), to).await.unwrap();
    }
    let mut buf = vec![0u8; 2048];
    for _ in targets {
        let (n, from) = tokio::time::timeout(WAIT, c.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        let sent_to = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            from,
            SocketAddr::new(ip(&sent_to), node_port),
            "the reply to a datagram sent to {sent_to} came from {from}"
        );
    }
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 2);
    assert_ne!(peers[0], peers[1], "two addresses sent to, two flows");
    server.abort();
    plane.shutdown().await;
}

/// The IPv6 side of the same rule (`IPV6_RECVPKTINFO` / `IPV6_PKTINFO`): a
/// node port on `::` answers an IPv6 client from `[::1]:node_port`, and the
/// endpoint may be IPv4 (the proxy relays datagrams, not packets). Loopback
/// has one IPv6 address, so this covers the IPv6 control messages and the
/// session; choosing among several addresses is the IPv4 test's part.
async fn a_wildcard_ipv6_node_address_replies_from_the_address_the_client_used(mode: Mode) {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let backend = udp_backend("127.0.60.4", "a");
    let (plane, node_port) = start_wildcard_node_port(mode, "::", backend.addr).await;
    let c = UdpSocket::bind("[::1]:0").await.unwrap();
    let to = SocketAddr::new(ip("::1"), node_port);
    for msg in ["first", "second"] {
        let (reply, from) = udp_ask(&c, to, msg.as_bytes()).await;
        assert_eq!(reply, format!("a|{msg}"));
        assert_eq!(
            from, to,
            "reply must come from {to}, the address the client sent to"
        );
    }
    assert_eq!(backend.received(), 2);
    assert_eq!(
        backend.peers()[0],
        backend.peers()[1],
        "one client port is one flow"
    );
    plane.shutdown().await;
}

async fn each_client_port_is_its_own_session(mode: Mode) {
    let backend = udp_backend("127.0.60.4", "a");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[backend.addr])],
        )
        .await;
    let c1 = udp_client("127.0.61.1").await;
    let c2 = udp_client("127.0.61.1").await;
    for _ in 0..3 {
        assert_eq!(udp_ask(&c1, vip, b"1").await.0, "a|1");
        assert_eq!(udp_ask(&c2, vip, b"2").await.0, "a|2");
    }
    assert_eq!(plane.udp_flows(), 2);
    let peers = backend.peers();
    assert_eq!(peers.len(), 6);
    // Each session keeps one socket toward the endpoint; the two differ.
    assert_eq!(peers[0], peers[2]);
    assert_eq!(peers[1], peers[3]);
    assert_ne!(peers[0], peers[1]);
    assert_eq!(read(&udp_stats(&plane, vip).udp_sessions), 2);
    plane.shutdown().await;
}

async fn a_session_slides_with_traffic_and_ends_after_the_idle_timeout(mode: Mode) {
    let backend = udp_backend("127.0.60.5", "a");
    let vip = vip();
    let settings = ProxySettings {
        udp_idle_timeout: Duration::from_millis(400),
        ..ProxySettings::default()
    };
    let plane = mode
        .start(settings, vec![udp_service("dns", vip, &[backend.addr])])
        .await;
    let c = udp_client("127.0.61.2").await;
    // Traffic every 150 ms for well over the timeout: one session throughout.
    for _ in 0..6 {
        udp_ask(&c, vip, b"x").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let peers = backend.peers();
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
    // Then quiet: the session goes, and the next datagram opens a new one.
    assert!(
        eventually(WAIT, || plane.udp_flows() == 0).await,
        "session did not expire"
    );
    udp_ask(&c, vip, b"y").await;
    assert_ne!(backend.peers().last(), Some(&peers[0]));
    plane.shutdown().await;
}

async fn tcp_and_udp_share_one_port_number(mode: Mode) {
    let udp = udp_backend("127.0.60.6", "udp");
    let tcp = echo_backend("127.0.60.6");
    let vip = vip();
    let svc = ServiceSpec::cluster_ip("default", "dns", vip.ip())
        .with_port(PortSpec::tcp("dns-tcp", vip.port()).with_endpoint(EndpointSpec::new(tcp.addr)))
        .with_port(udp_port("dns", vip.port(), &[udp.addr]));
    let plane = mode.start(ProxySettings::default(), vec![svc]).await;
    let c = udp_client("127.0.0.1").await;
    assert_eq!(udp_ask(&c, vip, b"q").await.0, "udp|q");
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(vip))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(b"over tcp").await.unwrap();
    let mut buf = [0u8; 8];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"over tcp");
    drop(stream);
    plane.shutdown().await;
}

async fn large_datagrams_pass_untruncated(mode: Mode) {
    let backend = udp_backend("127.0.60.7", "a");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[backend.addr])],
        )
        .await;
    let c = udp_client("127.0.0.1").await;
    for len in [60_000usize, 65_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let (reply, _) = udp_ask_within(&c, vip, &payload, WAIT)
            .await
            .expect("no reply");
        assert_eq!(reply.len(), len + 2, "{len} byte datagram truncated");
        assert_eq!(&reply[2..], &payload[..]);
    }
    // The largest datagram the client can send gets there whole; the echo
    // (two bytes longer) cannot exist, so only the forward way is checked.
    let payload = vec![7u8; lb_proxy::dataplane::udp::MAX_DATAGRAM];
    c.send_to(&payload, vip).await.unwrap();
    assert!(eventually(WAIT, || backend.received() == 3).await);
    plane.shutdown().await;
}

async fn datagrams_are_dropped_silently_without_endpoints_and_served_once_one_is_back(mode: Mode) {
    let vip = vip();
    let plane = mode
        .start(ProxySettings::default(), vec![udp_service("dns", vip, &[])])
        .await;
    let c = udp_client("127.0.0.1").await;
    assert!(
        udp_ask_within(&c, vip, b"anyone?", Duration::from_millis(300))
            .await
            .is_none()
    );
    let stats = udp_stats(&plane, vip);
    assert_eq!(read(&stats.udp_dropped_no_endpoints), 1);
    assert_eq!(plane.udp_flows(), 0);
    // The frontend stayed bound: an endpoint arriving is served at once.
    let backend = udp_backend("127.0.60.8", "a");
    update(&plane, vec![udp_service("dns", vip, &[backend.addr])]).await;
    assert_eq!(udp_ask(&c, vip, b"now").await.0, "a|now");
    plane.shutdown().await;
}

/// An endpoint that is the service's own frontend would send every datagram
/// back into lb, which would open a flow for it and send it on again: no
/// flow is made, the datagram is dropped and counted as a self-loop.
async fn a_datagram_whose_endpoint_is_the_proxys_own_frontend_is_dropped_and_counted(mode: Mode) {
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[vip])],
        )
        .await;
    let c = udp_client("127.0.0.1").await;
    assert!(udp_ask_within(&c, vip, b"me?", Duration::from_millis(300))
        .await
        .is_none());
    let stats = udp_stats(&plane, vip);
    assert_eq!(read(&stats.udp_dropped_self_loop), 1);
    assert_eq!(read(&stats.udp_forwarded), 0);
    assert_eq!(plane.udp_flows(), 0);
    plane.shutdown().await;
}

async fn flows_move_when_their_endpoint_is_removed(mode: Mode) {
    let a = udp_backend("127.0.60.9", "a");
    let b = udp_backend("127.0.60.10", "b");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[a.addr, b.addr])],
        )
        .await;
    let c = udp_client("127.0.0.1").await;
    let first = udp_ask(&c, vip, b"1").await.0;
    let (stays, leaves) = if first.starts_with("a|") {
        (&b, &a)
    } else {
        (&a, &b)
    };
    for _ in 0..3 {
        assert_eq!(
            udp_ask(&c, vip, b"1").await.0,
            first,
            "the flow keeps its endpoint"
        );
    }
    let before = leaves.received();
    update(&plane, vec![udp_service("dns", vip, &[stays.addr])]).await;
    let moved = udp_ask(&c, vip, b"2").await.0;
    assert_ne!(
        moved[..2],
        first[..2],
        "the flow must leave the removed endpoint"
    );
    assert_eq!(
        leaves.received(),
        before,
        "no datagram reaches a removed endpoint"
    );
    assert_eq!(plane.udp_flows(), 1);
    // No endpoint at all: the flow is closed and datagrams are dropped.
    update(&plane, vec![udp_service("dns", vip, &[])]).await;
    assert_eq!(plane.udp_flows(), 0);
    assert!(udp_ask_within(&c, vip, b"3", Duration::from_millis(200))
        .await
        .is_none());
    plane.shutdown().await;
}

async fn an_unreachable_endpoint_is_counted_and_the_flow_fails_over(mode: Mode) {
    // Endpoints are tried in address order: the closed port comes first.
    let dead = closed_udp_port("127.0.62.1");
    let live = udp_backend("127.0.62.2", "live");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[dead, live.addr])],
        )
        .await;
    let stats = udp_stats(&plane, vip);
    let c = udp_client("127.0.0.1").await;
    // The first datagram goes to the closed port.
    lost_and_counted_on_its_own(&c, vip, &stats).await;
    // The very next datagram of the flow fails over.
    let (reply, _) = udp_ask(&c, vip, b"q").await;
    assert_eq!(reply, "live|q");
    assert_eq!(read(&stats.udp_dropped_send_error), 1);
    assert_eq!(live.received(), 1);
    // One flow failed over: counted on the port and on the endpoint it left.
    assert_eq!(read(&stats.failovers), 1);
    let snapshot = plane.table().load();
    let port = &snapshot
        .frontend(vip, Protocol::Udp)
        .expect("frontend")
        .port;
    let left = |addr| {
        read(
            &port
                .endpoint(port.index_of(addr).expect("endpoint"))
                .stats
                .failovers,
        )
    };
    assert_eq!((left(dead), left(live.addr)), (1, 0));
    drop(snapshot);
    plane.shutdown().await;
}

/// Sends a datagram to `to` that meets a closed port: no answer comes, and
/// the ICMP port unreachable is counted (`send_error`) without any further
/// datagram.
async fn lost_and_counted_on_its_own(client: &UdpSocket, to: SocketAddr, stats: &PortStats) {
    assert!(
        udp_ask_within(client, to, b"lost", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        eventually(WAIT, || read(&stats.udp_dropped_send_error) == 1).await,
        "ICMP unreachable not counted on its own"
    );
}

/// An endpoint that was answering stops (its pod still counted ready): the
/// datagram that meets the closed port is lost, as UDP would lose it, but
/// the one after it is already answered by another endpoint.
async fn an_endpoint_that_stops_answering_costs_one_datagram(mode: Mode) {
    let first = udp_backend("127.0.62.3", "first");
    let second = udp_backend("127.0.62.4", "second");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[first.addr, second.addr])],
        )
        .await;
    let stats = udp_stats(&plane, vip);
    let c = udp_client("127.0.0.1").await;
    let (reply, _) = udp_ask(&c, vip, b"a").await;
    let (gone, stays) = if reply.starts_with("first|") {
        (first, second)
    } else {
        (second, first)
    };
    let gone_addr = gone.addr;
    drop(gone);
    // The aborted task's socket closes once the runtime has dropped it: then
    // its address can be bound again.
    assert!(
        eventually(WAIT, || std::net::UdpSocket::bind(gone_addr).is_ok()).await,
        "the stopped backend's socket never closed"
    );
    lost_and_counted_on_its_own(&c, vip, &stats).await;
    let (reply, _) = udp_ask(&c, vip, b"c").await;
    assert_eq!(reply, format!("{}|c", stays.name));
    plane.shutdown().await;
}

#[cfg(feature = "admin")]
async fn metrics_show_udp_sessions_and_datagrams(mode: Mode) {
    let backend = udp_backend("127.0.60.11", "a");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("dns", vip, &[backend.addr])],
        )
        .await;
    let c = udp_client("127.0.0.1").await;
    udp_ask(&c, vip, b"m").await;
    let text = lb_proxy::ops::metrics::render(&plane.table().load(), &Default::default());
    assert!(
        text.contains("lb_udp_sessions{namespace=\"default\",service=\"dns\",port=\""),
        "{text}"
    );
    assert!(
        text.contains(",protocol=\"UDP\",result=\"forwarded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(",protocol=\"UDP\",result=\"dropped\",reason=\"no_endpoints\"} 0"),
        "{text}"
    );
    plane.shutdown().await;
}

async fn replies_to_many_clients_at_once_each_reach_their_own_client(mode: Mode) {
    // Eight clients send in a burst before reading, so the relay finds
    // several flows' replies ready at one wake-up: each reply must still go
    // to the client whose query it answers, and every one is counted.
    let backend = udp_backend("127.0.60.30", "m");
    let vip = vip();
    let plane = mode
        .start(
            ProxySettings::default(),
            vec![udp_service("burst", vip, &[backend.addr])],
        )
        .await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(udp_client("127.0.0.1").await);
    }
    for (c, sock) in clients.iter().enumerate() {
        for q in 0..5 {
            sock.send_to(format!("c{c}q{q}").as_bytes(), vip)
                .await
                .expect("send");
        }
    }
    let mut buf = vec![0u8; 1500];
    for (c, sock) in clients.iter().enumerate() {
        let mut got = Vec::new();
        for _ in 0..5 {
            let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
                .await
                .expect("a reply within the bound")
                .expect("recv");
            assert_eq!(from, vip);
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got.sort();
        let want: Vec<String> = (0..5).map(|q| format!("m|c{c}q{q}")).collect();
        assert_eq!(got, want, "client {c} got another client's replies");
    }
    let stats = udp_stats(&plane, vip);
    assert!(eventually(WAIT, || read(&stats.udp_replied) == 40).await);
    assert_eq!(read(&stats.udp_forwarded), 40);
    plane.shutdown().await;
}

macro_rules! in_both_placements {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        mod single {
            use super::*;
            $($(#[$meta])*
            #[tokio::test]
            async fn $name() {
                super::$name(Mode::DEFAULT).await;
            })*
        }
        mod percore {
            use super::*;
            $($(#[$meta])*
            #[tokio::test]
            async fn $name() {
                // Per-core workers are threads, counted process-wide.
                let _shared = process::shared().await;
                super::$name(Mode::accept(AcceptMode::PerCore)).await;
            })*
        }
    };
}

in_both_placements! {
    echoes_through_a_cluster_ip_and_replies_from_it,
    echoes_through_a_node_port_on_a_node_address,
    a_wildcard_node_address_replies_from_the_address_the_client_used,
    one_client_port_sending_to_two_node_addresses_gets_each_reply_from_its_address,
    a_wildcard_ipv6_node_address_replies_from_the_address_the_client_used,
    each_client_port_is_its_own_session,
    a_session_slides_with_traffic_and_ends_after_the_idle_timeout,
    tcp_and_udp_share_one_port_number,
    large_datagrams_pass_untruncated,
    datagrams_are_dropped_silently_without_endpoints_and_served_once_one_is_back,
    a_datagram_whose_endpoint_is_the_proxys_own_frontend_is_dropped_and_counted,
    flows_move_when_their_endpoint_is_removed,
    an_unreachable_endpoint_is_counted_and_the_flow_fails_over,
    an_endpoint_that_stops_answering_costs_one_datagram,
    #[cfg(feature = "admin")]
    metrics_show_udp_sessions_and_datagrams,
    replies_to_many_clients_at_once_each_reach_their_own_client,
}
