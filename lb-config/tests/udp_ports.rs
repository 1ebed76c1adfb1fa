//! UDP service ports: accepted beside TCP ones, with endpoints from pods and
//! from manual `[[endpoints]]` matched by protocol.

mod support;

use std::net::SocketAddr;

use lb_core::Protocol;
use support::{addrs, errors, load, port};

#[test]
fn a_udp_port_is_accepted() {
    let c = load("[[services]]\nname = \"dns\"\nports = [{ port = 53, protocol = \"UDP\" }]\n");
    assert_eq!(c.services[0].ports[0].protocol, Protocol::Udp);
}

#[test]
fn tcp_and_udp_may_share_a_port_number_on_one_service() {
    let c = load(
        "[[services]]\nname = \"dns\"\ntype = \"NodePort\"\nports = [\
         { name = \"dns-tcp\", port = 53, protocol = \"TCP\" },\
         { name = \"dns\", port = 53, protocol = \"UDP\" }]\n",
    );
    let tcp = port(&c, "dns", "dns-tcp");
    let udp = port(&c, "dns", "dns");
    assert_eq!((tcp.protocol, udp.protocol), (Protocol::Tcp, Protocol::Udp));
    assert!(tcp.node_port.is_some());
    assert_eq!(
        tcp.node_port, udp.node_port,
        "Kubernetes gives both protocols of one port number the same node port"
    );
}

#[test]
fn one_explicit_node_port_may_serve_tcp_and_udp_of_one_service() {
    let c = load(
        "[[services]]\nname = \"dns\"\ntype = \"NodePort\"\nports = [\
         { name = \"dns-tcp\", port = 53, protocol = \"TCP\", node_port = 30053 },\
         { name = \"dns\", port = 53, protocol = \"UDP\", node_port = 30053 }]\n",
    );
    assert_eq!(port(&c, "dns", "dns").node_port, Some(30053));
    assert_eq!(port(&c, "dns", "dns-tcp").node_port, Some(30053));
}

#[test]
fn the_same_port_and_protocol_twice_is_still_an_error() {
    let text =
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[[services]]\nname = \"dns\"\nports = [\
                { name = \"a\", port = 53, protocol = \"UDP\" },\
                { name = \"b\", port = 53, protocol = \"UDP\" }]\n";
    let lines = errors(text);
    assert!(
        lines
            .iter()
            .any(|l| l == "services[dns].ports[1]: Duplicate value: \"53/UDP\""),
        "{lines:?}"
    );
}

#[test]
fn udp_endpoints_come_from_udp_pod_ports() {
    let c = load(
        "[[pods]]\nname = \"dns-1\"\nip = \"127.0.244.9\"\nlabels = { app = \"dns\" }\n\
         ports = [{ name = \"dns\", container_port = 5353, protocol = \"UDP\" }, { name = \"dns-tcp\", container_port = 5354 }]\n\
         [[services]]\nname = \"dns\"\nselector = { app = \"dns\" }\nports = [\
         { name = \"dns\", port = 53, protocol = \"UDP\", target_port = \"dns\" },\
         { name = \"dns-tcp\", port = 53, protocol = \"TCP\", target_port = \"dns-tcp\" }]\n",
    );
    assert_eq!(
        addrs(port(&c, "dns", "dns")),
        vec!["127.0.244.9:5353".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        addrs(port(&c, "dns", "dns-tcp")),
        vec!["127.0.244.9:5354".parse::<SocketAddr>().unwrap()]
    );
}

#[test]
fn udp_endpoints_come_from_manual_subset_ports_with_protocol_udp() {
    let c = load(
        "[[services]]\nname = \"dns\"\nports = [{ name = \"dns\", port = 53, protocol = \"UDP\" }]\n\
         [[endpoints]]\nname = \"dns\"\n[[endpoints.subsets]]\naddresses = [{ ip = \"127.0.244.10\" }]\n\
         ports = [{ name = \"dns\", port = 5353, protocol = \"UDP\" }, { name = \"dns-tcp\", port = 5300, protocol = \"TCP\" }]\n",
    );
    assert_eq!(
        addrs(port(&c, "dns", "dns")),
        vec!["127.0.244.10:5353".parse::<SocketAddr>().unwrap()]
    );
}
