//! Fixtures shared by lb-core's tests: addresses from text, a node, a
//! ClusterIP service `web` at 127.96.0.10:80 over the endpoints given, and its
//! frontend.

use std::net::{IpAddr, SocketAddr};

use crate::model::{Protocol, SessionAffinity};
use crate::snapshot::{FrontendEntry, Snapshot};
use crate::spec::{EndpointSpec, NodeSpec, PortSpec, ServiceSpec};

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `node-1` at 127.0.1.1.
pub(crate) fn node() -> NodeSpec {
    NodeSpec {
        name: "node-1".into(),
        addresses: vec![ip("127.0.1.1")],
        zone: None,
    }
}

/// `default/web`, cluster IP 127.96.0.10, port `http` 80/TCP over `eps`.
pub(crate) fn web(eps: &[&str], affinity: SessionAffinity) -> ServiceSpec {
    let mut port = PortSpec::tcp("http", 80);
    for e in eps {
        port = port.with_endpoint(EndpointSpec::new(sa(e)));
    }
    ServiceSpec::cluster_ip("default", "web", ip("127.96.0.10"))
        .with_port(port)
        .with_affinity(affinity)
}

/// The route of `web`'s cluster IP frontend.
pub(crate) fn entry(s: &Snapshot) -> FrontendEntry {
    s.frontend(sa("127.96.0.10:80"), Protocol::Tcp)
        .unwrap()
        .clone()
}
