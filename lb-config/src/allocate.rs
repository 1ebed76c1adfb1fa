//! Cluster IPs and node ports for validated services, stable across reloads.
//!
//! Order, so that a running service is never renumbered (Kubernetes refuses
//! the newcomer instead):
//! 1. what each service (namespace/name; for node ports also protocol and
//!    port) holds in the previous [`Allocations`] stays its own, unless it
//!    now asks for another value: a cluster IP may not change once set (the
//!    reload fails; only a change to ExternalName releases it), a node port
//!    may (the old one is freed);
//! 2. every explicit request, refused in Kubernetes' words when another
//!    service holds the value;
//! 3. everything else, picked as Kubernetes picks: from the upper band of the
//!    range first, at a start spread from the service's name and
//!    `[cluster] allocation_seed`, in name order (so the same services get
//!    the same values whatever the file order).
//!
//! The result holds only the current services' values, so a service that goes
//! releases its addresses.

use std::net::IpAddr;

use lb_core::alloc::{spread, Allocations, IpAllocator, PortAllocator};
use lb_core::{ClusterIp, Protocol, ServiceKey};

use crate::config::{ClusterSettings, PendingAddress};
use crate::error::{BadValue, Errors, FieldError};
use crate::validation::{IpRequest, ServiceDraft};

/// The key of a service's cluster IP in [`Allocations::cluster_ips`].
pub(crate) fn ip_key(key: &ServiceKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// The key of a service port's node port in [`Allocations::node_ports`].
pub(crate) fn port_key(key: &ServiceKey, protocol: Protocol, port: u16) -> String {
    format!("{}/{}/{}/{}", key.namespace, key.name, protocol, port)
}

/// The name a service's health-check node port is spread from.
fn health_check_key(key: &ServiceKey) -> String {
    format!("{}/healthCheckNodePort", ip_key(key))
}

/// Fills in cluster IPs, node ports and LoadBalancer addresses; returns who
/// holds what now, and the LoadBalancer services left pending. `reserved` are ports of lb's own listeners (admin, DNS)
/// that a node port would take: never handed out (requested ones are
/// refused later, naming the listener).
pub(crate) fn allocate(
    drafts: &mut [ServiceDraft],
    cluster: &ClusterSettings,
    pools: &[lb_core::pool::IpPool],
    node_class: Option<&str>,
    reserved: &[u16],
    previous: &Allocations,
    errs: &mut Errors,
) -> (Allocations, Vec<PendingAddress>) {
    let mut out = Allocations::default();
    let mut pending = Vec::new();
    allocate_ips(drafts, cluster, previous, errs, &mut out);
    allocate_node_ports(drafts, cluster, reserved, previous, errs, &mut out);
    crate::pools::allocate(drafts, pools, node_class, previous, &mut out, &mut pending);
    (out, pending)
}

/// Indexes of `drafts` chosen by `pick`, in the order of `key`: dynamic
/// allocation walks services by name, not by their place in the file.
fn by_name(drafts: &[ServiceDraft], pick: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..drafts.len()).filter(|i| pick(*i)).collect();
    order.sort_by_key(|i| ip_key(&drafts[*i].spec.key));
    order
}

fn allocate_ips(
    drafts: &mut [ServiceDraft],
    cluster: &ClusterSettings,
    previous: &Allocations,
    errs: &mut Errors,
    out: &mut Allocations,
) {
    let mut ips = IpAllocator::new(cluster.service_cidr);
    let mut got: Vec<Option<IpAddr>> = vec![None; drafts.len()];
    let mut refused = vec![false; drafts.len()];
    // Each service's key in the allocations, formatted once.
    let keys: Vec<String> = drafts.iter().map(|d| ip_key(&d.spec.key)).collect();
    // 1. Held addresses stay; asking for another is a change of an
    // immutable field. (A held address outside a changed service_cidr is
    // gone with the old range.)
    for (i, d) in drafts.iter().enumerate() {
        let Some(held) = previous.cluster_ips.get(&keys[i]).copied() else {
            continue;
        };
        if !ips.is_valid(held) {
            continue;
        }
        let changed_to = match d.ip {
            IpRequest::Auto => None,
            IpRequest::Fixed(ip) if ip == held => None,
            IpRequest::Fixed(ip) => Some(ip.to_string()),
            // An ExternalName service has no cluster IP: the address is
            // released, as Kubernetes releases it on a change of type.
            IpRequest::NoIp if d.spec.service_type == lb_core::ServiceType::ExternalName => {
                continue
            }
            // Headless now: Kubernetes refuses that change too.
            IpRequest::NoIp => Some("None".to_string()),
        };
        if let Some(new) = changed_to {
            // Kubernetes' immutableClusterIPs shows the new spec.clusterIPs.
            refused[i] = true;
            errs.push(FieldError::invalid(
                format!("{}.cluster_ip", d.path),
                BadValue::StrList(vec![new]),
                "may not change once set",
            ));
            continue;
        }
        if ips.allocate(held).is_ok() {
            got[i] = Some(held);
        }
    }
    // 2. Explicit requests.
    for (i, d) in drafts.iter().enumerate() {
        if got[i].is_some() || refused[i] {
            continue;
        }
        if let IpRequest::Fixed(ip) = d.ip {
            match ips.allocate(ip) {
                Ok(()) => got[i] = Some(ip),
                Err(e) => errs.push(FieldError::invalid(
                    format!("{}.cluster_ip", d.path),
                    BadValue::StrList(vec![ip.to_string()]),
                    format!("failed to allocate IP {ip}: {e}"),
                )),
            }
        }
    }
    // 3. Dynamic ones.
    let seed = cluster.allocation_seed;
    for i in by_name(drafts, |i| {
        drafts[i].ip == IpRequest::Auto && got[i].is_none()
    }) {
        let d = &drafts[i];
        match ips.allocate_next(spread(seed, &keys[i])) {
            Ok(ip) => got[i] = Some(ip),
            Err(e) => errs.push(FieldError::internal(
                format!("{}.cluster_ip", d.path),
                format!("failed to allocate a serviceIP: {e}"),
            )),
        }
    }
    for ((d, ip), key) in drafts.iter_mut().zip(got).zip(keys) {
        d.spec.cluster_ip = match ip {
            Some(ip) => {
                out.cluster_ips.insert(key, ip);
                ClusterIp::Ip(ip)
            }
            None => ClusterIp::None,
        };
    }
}

/// Whether the service already has node port `n` on another port: one
/// service may give the same node port to a TCP and a UDP port (DNS on
/// 53/TCP and 53/UDP), as Kubernetes allows; validation already refuses the
/// same (protocol, node port) twice.
fn own_node_port(d: &ServiceDraft, n: u16) -> bool {
    d.spec.ports.iter().any(|p| p.node_port == Some(n))
}

fn allocate_node_ports(
    drafts: &mut [ServiceDraft],
    cluster: &ClusterSettings,
    reserved: &[u16],
    previous: &Allocations,
    errs: &mut Errors,
    out: &mut Allocations,
) {
    let mut ports = PortAllocator::new(
        *cluster.node_port_range.start(),
        *cluster.node_port_range.end(),
    );
    let hc_held = keep_held_ports(drafts, &mut ports, reserved, previous);
    request_ports(drafts, &mut ports, &hc_held, errs);
    // lb's own listeners' ports, after the requests (a request of one is
    // refused by validation naming the listener, not as "already
    // allocated") and before anything is handed out. A port outside the
    // range, or requested, is no concern of the allocator.
    for port in reserved {
        let _ = ports.allocate(*port);
    }
    // 3. Dynamic ones; a port number that another protocol of the same
    // service already has a node port for shares it (as Kubernetes does).
    let seed = cluster.allocation_seed;
    let mut wanted: Vec<(String, usize, usize)> = Vec::new();
    for (s, d) in drafts.iter().enumerate() {
        for (i, request) in d.node_ports.iter().enumerate() {
            if *request == Some(None) && d.spec.ports[i].node_port.is_none() {
                let p = &d.spec.ports[i];
                wanted.push((port_key(&d.spec.key, p.protocol, p.port), s, i));
            }
        }
    }
    wanted.sort();
    for (key, s, i) in wanted {
        let d = &mut drafts[s];
        let number = d.spec.ports[i].port;
        let protocol = d.spec.ports[i].protocol;
        let sibling = d
            .spec
            .ports
            .iter()
            .find(|p| p.port == number && p.protocol != protocol && p.node_port.is_some())
            .and_then(|p| p.node_port);
        if let Some(n) = sibling {
            d.spec.ports[i].node_port = Some(n);
            continue;
        }
        match ports.allocate_next(spread(seed, &key)) {
            Ok(n) => d.spec.ports[i].node_port = Some(n),
            Err(_) => errs.push(FieldError::internal(
                format!("{}.ports[{i}].node_port", d.path),
                "failed to allocate a nodePort: range is full",
            )),
        }
    }
    for d in drafts.iter() {
        for p in &d.spec.ports {
            if let Some(n) = p.node_port {
                out.node_ports
                    .insert(port_key(&d.spec.key, p.protocol, p.port), n);
            }
        }
    }
    new_health_check_ports(drafts, &mut ports, seed, errs, out);
}

/// Whether a service gets a health-check node port (LoadBalancer + Local).
fn needs_health_check_port(d: &ServiceDraft) -> bool {
    d.spec.service_type == lb_core::ServiceType::LoadBalancer
        && d.spec.external_traffic_policy == lb_core::TrafficPolicy::Local
}

/// Step 1 for node ports and health-check node ports (one range, one
/// allocator, as in Kubernetes): what each port held stays its own unless it
/// now asks for another number, which frees the old one. A dynamic value
/// that is now the port of one of lb's own listeners (`reserved`: the admin
/// or DNS port moved onto it) is given up and allocated afresh. Returns, per
/// service, whether it kept its health-check node port.
fn keep_held_ports(
    drafts: &mut [ServiceDraft],
    ports: &mut PortAllocator,
    reserved: &[u16],
    previous: &Allocations,
) -> Vec<bool> {
    let mut hc_held = vec![false; drafts.len()];
    for (s, d) in drafts.iter_mut().enumerate() {
        for i in 0..d.node_ports.len() {
            let p = &d.spec.ports[i];
            let Some(held) = previous
                .node_ports
                .get(&port_key(&d.spec.key, p.protocol, p.port))
                .copied()
            else {
                continue;
            };
            let keeps = match d.node_ports[i] {
                Some(None) => !reserved.contains(&held),
                Some(Some(n)) => n == held,
                None => false,
            };
            if keeps && (own_node_port(d, held) || ports.allocate(held).is_ok()) {
                d.spec.ports[i].node_port = Some(held);
            }
        }
        if !needs_health_check_port(d) {
            continue;
        }
        let Some(held) = previous
            .health_check_node_ports
            .get(&ip_key(&d.spec.key))
            .copied()
        else {
            continue;
        };
        let requested = d.spec.health_check_node_port;
        let keeps = match requested {
            0 => !reserved.contains(&held),
            n => n == held,
        };
        if keeps && ports.allocate(held).is_ok() {
            d.spec.health_check_node_port = held;
            hc_held[s] = true;
        }
    }
    hc_held
}

/// Step 2: explicit node ports and health-check node ports not already held
/// by their own port, refused when taken.
fn request_ports(
    drafts: &mut [ServiceDraft],
    ports: &mut PortAllocator,
    hc_held: &[bool],
    errs: &mut Errors,
) {
    for d in drafts.iter_mut() {
        for i in 0..d.node_ports.len() {
            let Some(Some(n)) = d.node_ports[i] else {
                continue;
            };
            if d.spec.ports[i].node_port.is_some() {
                continue;
            }
            if own_node_port(d, n) {
                d.spec.ports[i].node_port = Some(n);
                continue;
            }
            match ports.allocate(n) {
                Ok(()) => d.spec.ports[i].node_port = Some(n),
                Err(e) => errs.push(FieldError::invalid(
                    format!("{}.ports[{i}].node_port", d.path),
                    i64::from(n),
                    e.to_string(),
                )),
            }
        }
    }
    for (d, held) in drafts.iter_mut().zip(hc_held) {
        let n = d.spec.health_check_node_port;
        if !needs_health_check_port(d) || n == 0 || *held {
            continue;
        }
        // Kubernetes' allocHealthCheckNodePort, whose error the REST
        // storage returns as an internal error.
        if let Err(e) = ports.allocate(n) {
            errs.push(FieldError::internal(
                format!("{}.health_check_node_port", d.path),
                format!("failed to allocate requested HealthCheck NodePort {n}: {e}"),
            ));
        }
    }
}

/// Step 3 for health-check node ports still missing; records them all in
/// `out`.
fn new_health_check_ports(
    drafts: &mut [ServiceDraft],
    ports: &mut PortAllocator,
    seed: u64,
    errs: &mut Errors,
    out: &mut Allocations,
) {
    for i in by_name(drafts, |i| {
        needs_health_check_port(&drafts[i]) && drafts[i].spec.health_check_node_port == 0
    }) {
        let d = &mut drafts[i];
        match ports.allocate_next(spread(seed, &health_check_key(&d.spec.key))) {
            Ok(n) => d.spec.health_check_node_port = n,
            Err(_) => errs.push(FieldError::internal(
                format!("{}.health_check_node_port", d.path),
                "failed to allocate a healthCheckNodePort: range is full",
            )),
        }
    }
    for d in drafts.iter().filter(|d| needs_health_check_port(d)) {
        if d.spec.health_check_node_port != 0 {
            out.health_check_node_ports
                .insert(ip_key(&d.spec.key), d.spec.health_check_node_port);
        }
    }
}
