//! Endpoints that are this proxy's own frontends. A dial to one is accepted
//! by lb itself, which dials again: one client connection multiplies until
//! every descriptor is used. Kubernetes forbids the same for the same reason
//! ("Endpoint IP addresses cannot be the cluster IPs of other Kubernetes
//! Services, because kube-proxy doesn't support virtual IPs as a
//! destination").
//!
//! Frontends are known only after allocation (cluster IPs, node ports and
//! LoadBalancer addresses are allocated), and endpoints only after the
//! endpoints controller, so this runs last, on the resolved services, and
//! traces an offending endpoint back to the pod or `[[endpoints]]` address
//! it came from. A node address of `0.0.0.0` or `::` listens on every local
//! address: here only loopback endpoints (127.0.0.0/8, ::1) are known to be
//! local; the data plane refuses the rest at dial time, as it does for
//! endpoints given by host name.

use crate::hash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::{IpAddr, SocketAddr};

use lb_core::{FrontendKey, FrontendKind, PortSpec, Protocol, ServiceKey};

use super::{ManualEndpoints, ServiceDraft};
use crate::error::{object_path, Errors, FieldError};

/// Refuses every endpoint of `services` (already allocated and resolved)
/// that is one of their frontends on a node listening on `node_addresses`;
/// the error is on the pod or the `[[endpoints]]` address it came from.
pub(crate) fn check(
    services: &[ServiceDraft],
    endpoints: &[ManualEndpoints],
    node_addresses: &[IpAddr],
    errs: &mut Errors,
) {
    let frontends = Frontends::of(services, node_addresses);
    if frontends.is_empty() {
        return;
    }
    let mut reported = HashSet::new();
    for d in services {
        for port in d.served_ports() {
            for e in &port.endpoints {
                let Some(hit) = frontends.reached_by(e.addr, port.protocol) else {
                    continue;
                };
                let path = match &e.pod {
                    Some(pod) => object_path("pods", &d.spec.key.namespace, pod, 0),
                    None => address_path(endpoints, &d.spec.key, port, e.addr),
                };
                if reported.insert((path.clone(), e.addr)) {
                    errs.push(FieldError::invalid(path, e.addr.to_string(), hit));
                }
            }
        }
    }
}

/// Every frontend of the services, by address and, for wildcard node
/// addresses, by port.
struct Frontends<'a> {
    /// Address and protocol → (service path, kind).
    exact: HashMap<FrontendKey, (&'a str, FrontendKind)>,
    /// (port, protocol, IPv6) of node ports on a wildcard node address →
    /// (service path, the wildcard address).
    wildcard: HashMap<(u16, Protocol, bool), (&'a str, IpAddr)>,
}

impl<'a> Frontends<'a> {
    fn of(services: &'a [ServiceDraft], node_addresses: &[IpAddr]) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for d in services {
            let path = d.path.as_str();
            d.spec.for_each_frontend(node_addresses, |_, key, kind| {
                let ip = key.addr.ip();
                if kind == FrontendKind::NodePort && ip.is_unspecified() {
                    wildcard
                        .entry((key.addr.port(), key.protocol, ip.is_ipv6()))
                        .or_insert((path, ip));
                } else {
                    exact.entry(key).or_insert((path, kind));
                }
            });
        }
        Frontends { exact, wildcard }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Why a connection to `addr` over `protocol` would reach this proxy's
    /// own frontend, or `None`.
    fn reached_by(&self, addr: SocketAddr, protocol: Protocol) -> Option<String> {
        // An IPv4-mapped IPv6 address is dialed as the IPv4 one.
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
            v4 => v4,
        };
        let addr = SocketAddr::new(ip, addr.port());
        if let Some((service, kind)) = self.exact.get(&FrontendKey { addr, protocol }) {
            return Some(format!(
                "must not be a frontend of this proxy: it is the {} {addr} of {service}, so connections to it would loop back into lb",
                kind.as_str()
            ));
        }
        if !ip.is_loopback() {
            return None;
        }
        let (service, node_address) = self.wildcard.get(&(addr.port(), protocol, ip.is_ipv6()))?;
        Some(format!(
            "must not be a frontend of this proxy: it reaches the node port {} of {service} (node address {node_address} listens on every local address), so connections to it would loop back into lb",
            SocketAddr::new(*node_address, addr.port())
        ))
    }
}

/// The path of the `[[endpoints]]` address that gave `port` of `service`
/// the endpoint `addr`: the first subset whose matching port has that
/// number and whose ready or not-ready addresses hold that IP.
fn address_path(
    endpoints: &[ManualEndpoints],
    service: &ServiceKey,
    port: &PortSpec,
    addr: SocketAddr,
) -> String {
    let object = object_path("endpoints", &service.namespace, &service.name, 0);
    let Some(manual) = endpoints
        .iter()
        .find(|e| e.id() == (service.namespace.as_str(), service.name.as_str()))
        .and_then(ManualEndpoints::get)
    else {
        return object;
    };
    for (i, subset) in manual.subsets.iter().enumerate() {
        let serves = subset.ports.iter().any(|(name, number, proto)| {
            *name == port.name && *proto == port.protocol && *number == addr.port()
        });
        if !serves {
            continue;
        }
        let lists = [
            ("addresses", &subset.addresses),
            ("not_ready_addresses", &subset.not_ready),
        ];
        for (field, list) in lists {
            if let Some(a) = list.iter().find(|a| a.ip == addr.ip()) {
                return format!("{object}.subsets[{i}].{field}[{}]", a.index);
            }
        }
    }
    object
}
