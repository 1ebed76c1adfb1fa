//! Frontends: the addresses a snapshot listens on, and the route each one
//! takes to its service port.
//!
//! Which frontends a service has follows from its type and addresses (cluster
//! IP, external IPs, LoadBalancer ingress, node ports); which traffic policy a
//! frontend applies follows from its kind.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::port::{Pick, ServicePort};
use super::Snapshot;
use crate::model::{Protocol, ServiceType, TrafficPolicy};
use crate::spec::ServiceSpec;

/// Where a listener is: address, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// Address and port to bind.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// How traffic reached a service port; decides which traffic policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    /// The cluster IP (internal traffic policy).
    ClusterIp,
    /// A node address at the node port (external traffic policy).
    NodePort,
    /// An entry of `external_ips` (external traffic policy).
    ExternalIp,
    /// A LoadBalancer ingress address (external traffic policy).
    LoadBalancer,
}

/// A frontend's route: the service port it serves and how.
#[derive(Debug, Clone)]
pub struct FrontendEntry {
    /// The service port.
    pub port: Arc<ServicePort>,
    /// Which kind of address this is.
    pub kind: FrontendKind,
    /// Whether the applicable traffic policy is Local (node-local endpoints only).
    pub local: bool,
    /// LoadBalancer frontends of a service with `load_balancer_source_ranges`:
    /// the client networks allowed in. `None` admits everyone, so the check on
    /// the data path is one branch for every other frontend.
    pub source_ranges: Option<Arc<[ipnet::IpNet]>>,
}

impl FrontendEntry {
    /// Whether `client` may use this frontend (`load_balancer_source_ranges`).
    pub fn admits(&self, client: IpAddr) -> bool {
        let Some(ranges) = &self.source_ranges else {
            return true;
        };
        // A v4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        ranges.iter().any(|net| net.contains(&client))
    }

    /// Whether a new connection here would find an endpoint. A TCP listener is
    /// kept closed while this is false, so clients get "connection refused".
    pub fn has_endpoints(&self) -> bool {
        !self.port.table(self.local).is_empty()
    }

    /// Chooses the endpoint for a new connection or flow from `client`.
    pub fn pick(&self, client: IpAddr, now: Instant) -> Option<Pick> {
        self.port.pick(self.local, client, now)
    }

    /// The endpoint to dial after `failed` did not answer; re-pins affinity.
    pub fn failover(&self, failed: usize, client: IpAddr, now: Instant) -> Option<usize> {
        self.port.failover(self.local, failed, client, now)
    }
}

impl FrontendKind {
    /// How users call this kind of address (`lb-proxy check`'s self-loop
    /// error names the frontend an endpoint would loop to).
    pub fn as_str(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "cluster IP",
            FrontendKind::NodePort => "node port",
            FrontendKind::ExternalIp => "external IP",
            FrontendKind::LoadBalancer => "LoadBalancer address",
        }
    }
}

impl ServiceSpec {
    /// Calls `f` with every frontend of this service on a node whose node
    /// ports listen on `node_addresses`: the port's index in `ports`, the
    /// address and protocol, and the kind. The one definition of which
    /// addresses a service listens on, shared by the snapshot and by
    /// validation (which refuses an endpoint that is one of them: a dial
    /// there would loop back into the proxy).
    pub fn for_each_frontend(
        &self,
        node_addresses: &[IpAddr],
        mut f: impl FnMut(usize, FrontendKey, FrontendKind),
    ) {
        if self.service_type == ServiceType::ExternalName {
            return;
        }
        for (i, port) in self.ports.iter().enumerate() {
            let mut add = |ip: IpAddr, number: u16, kind: FrontendKind| {
                let key = FrontendKey {
                    addr: SocketAddr::new(ip, number),
                    protocol: port.protocol,
                };
                f(i, key, kind);
            };
            if let Some(ip) = self.cluster_ip.ip() {
                add(ip, port.port, FrontendKind::ClusterIp);
                for ip in &self.external_ips {
                    add(*ip, port.port, FrontendKind::ExternalIp);
                }
                for ip in &self.load_balancer_ips {
                    add(*ip, port.port, FrontendKind::LoadBalancer);
                }
            }
            if self.service_type.has_node_ports() {
                if let Some(node_port) = port.node_port {
                    for ip in node_addresses {
                        add(*ip, node_port, FrontendKind::NodePort);
                    }
                }
            }
        }
    }
}

impl Snapshot {
    /// Adds the frontends of `spec` (whose ports, in spec order, are `ports`)
    /// on this snapshot's node. An address already taken keeps its route: the
    /// service that sorts first by namespace/name wins a collision (validation
    /// should prevent one).
    pub(super) fn add_frontends(&mut self, spec: &ServiceSpec, ports: &[Arc<ServicePort>]) {
        let internal_local = spec.internal_traffic_policy == TrafficPolicy::Local;
        let external_local = spec.external_traffic_policy == TrafficPolicy::Local;
        let ranges: Option<Arc<[ipnet::IpNet]>> = (spec.service_type == ServiceType::LoadBalancer
            && !spec.load_balancer_source_ranges.is_empty())
        .then(|| spec.load_balancer_source_ranges.clone().into());
        // Borrowed out of `self` for the call (no copy per service), put back
        // after it.
        let node_addresses = std::mem::take(&mut self.node.addresses);
        spec.for_each_frontend(&node_addresses, |i, key, kind| {
            let Some(port) = ports.get(i) else {
                return;
            };
            let local = match kind {
                FrontendKind::ClusterIp => internal_local,
                _ => external_local,
            };
            let source_ranges = if kind == FrontendKind::LoadBalancer {
                ranges.clone()
            } else {
                None
            };
            self.frontends.entry(key).or_insert_with(|| FrontendEntry {
                port: port.clone(),
                kind,
                local,
                source_ranges,
            });
        });
        self.node.addresses = node_addresses;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::fixtures::{ip, node, sa, web};
    use crate::model::SessionAffinity;
    use crate::snapshot::Snapshot;

    #[test]
    fn source_ranges_filter_only_load_balancer_frontends() {
        let mut svc = web(&["127.0.244.1:8080"], SessionAffinity::None);
        svc.service_type = ServiceType::LoadBalancer;
        svc.load_balancer_ips = vec![ip("127.0.122.110")];
        svc.load_balancer_source_ranges = vec!["127.0.0.5/32".parse().unwrap()];
        svc.ports[0].node_port = Some(30080);
        let s = Snapshot::build(node(), vec![svc], None, SystemTime::now());
        let lb = s.frontend(sa("127.0.122.110:80"), Protocol::Tcp).unwrap();
        assert_eq!(lb.kind, FrontendKind::LoadBalancer);
        assert!(lb.admits(ip("127.0.0.5")));
        assert!(lb.admits(ip("::ffff:127.0.0.5")));
        assert!(!lb.admits(ip("127.0.0.6")));
        for other in ["127.96.0.10:80", "127.0.1.1:30080"] {
            let f = s.frontend(sa(other), Protocol::Tcp).unwrap();
            assert!(f.admits(ip("127.0.0.6")), "{other} must not filter");
        }
    }

    #[test]
    fn node_port_services_listen_on_every_node_address() {
        let mut spec = web(&["127.0.0.1:1"], SessionAffinity::None);
        spec.service_type = ServiceType::NodePort;
        spec.ports[0].node_port = Some(30001);
        let s = Snapshot::build(node(), vec![spec], None, SystemTime::now());
        let f = s.frontend(sa("127.0.1.1:30001"), Protocol::Tcp).unwrap();
        assert_eq!(f.kind, FrontendKind::NodePort);
        assert_eq!(s.frontends().count(), 2);
    }

    #[test]
    fn headless_and_external_name_services_have_no_frontends() {
        let mut headless = web(&["127.0.0.1:1"], SessionAffinity::None);
        headless.cluster_ip = crate::spec::ClusterIp::None;
        let s = Snapshot::build(node(), vec![headless], None, SystemTime::now());
        assert_eq!(s.frontends().count(), 0);
        assert_eq!(s.services().count(), 1);
    }
}
