//! Cluster IPs and node ports for validated services, stable across reloads.
//!
//! Order, so that a service keeps what it had and requests win:
//! 1. every explicitly requested value (errors in the allocator's words);
//! 2. what the same service (namespace/name; for node ports also protocol and
//!    port) held in the previous [`Allocations`], if it is still free and valid;
//! 3. the lowest free value.
//!
//! The result holds only the current services' values, so a service that goes
//! releases its addresses.

use std::net::IpAddr;

use lb_core::alloc::{AllocError, Allocations, IpAllocator, PortAllocator};
use lb_core::{ClusterIp, Protocol, ServiceKey};

use crate::config::ClusterSettings;
use crate::error::{Errors, FieldError};
use crate::validation::{IpRequest, ServiceDraft};

/// The key of a service's cluster IP in [`Allocations::cluster_ips`].
pub(crate) fn ip_key(key: &ServiceKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// The key of a service port's node port in [`Allocations::node_ports`].
pub(crate) fn port_key(key: &ServiceKey, protocol: Protocol, port: u16) -> String {
    format!("{}/{}/{}/{}", key.namespace, key.name, protocol, port)
}

/// Fills in cluster IPs, node ports and LoadBalancer addresses; returns who
/// holds what now. `reserved` are ports of lb's own listeners (admin, DNS)
/// that a node port would take: never handed out (requested ones are
/// refused later, naming the listener).
pub(crate) fn allocate(
    drafts: &mut [ServiceDraft],
    cluster: &ClusterSettings,
    pools: &[lb_core::pool::IpPool],
    reserved: &[u16],
    previous: &Allocations,
    errs: &mut Errors,
) -> Allocations {
    let mut out = Allocations::default();
    allocate_ips(drafts, cluster, previous, errs, &mut out);
    allocate_node_ports(drafts, cluster, reserved, previous, errs, &mut out);
    crate::pools::allocate(drafts, pools, previous, &mut out);
    out
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
    for (i, d) in drafts.iter().enumerate() {
        if let IpRequest::Fixed(ip) = d.ip {
            match ips.allocate(ip) {
                Ok(()) => got[i] = Some(ip),
                Err(e) => errs.push(FieldError::invalid(
                    format!("{}.cluster_ip", d.path),
                    ip.to_string(),
                    e.to_string(),
                )),
            }
        }
    }
    for (i, d) in drafts.iter().enumerate() {
        if d.ip != IpRequest::Auto {
            continue;
        }
        if let Some(ip) = previous.cluster_ips.get(&ip_key(&d.spec.key)) {
            if ips.is_valid(*ip) && ips.allocate(*ip).is_ok() {
                got[i] = Some(*ip);
            }
        }
    }
    for (i, d) in drafts.iter().enumerate() {
        if d.ip != IpRequest::Auto || got[i].is_some() {
            continue;
        }
        match ips.allocate_next() {
            Ok(ip) => got[i] = Some(ip),
            Err(e) => errs.push(FieldError::internal(
                format!("{}.cluster_ip", d.path),
                format!("failed to allocate a serviceIP: {e}"),
            )),
        }
    }
    for (d, ip) in drafts.iter_mut().zip(got) {
        d.spec.cluster_ip = match ip {
            Some(ip) => {
                out.cluster_ips.insert(ip_key(&d.spec.key), ip);
                ClusterIp::Ip(ip)
            }
            None => ClusterIp::None,
        };
    }
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
    // Explicit requests first. One service may give the same node port to a
    // TCP and a UDP port (DNS on 53/TCP and 53/UDP), as Kubernetes allows:
    // validation already refuses the same (protocol, node port) twice.
    for d in drafts.iter_mut() {
        let mut own = Vec::new();
        for (i, request) in d.node_ports.iter().enumerate() {
            if let Some(Some(n)) = request {
                if own.contains(n) {
                    d.spec.ports[i].node_port = Some(*n);
                    continue;
                }
                match ports.allocate(*n) {
                    Ok(()) => {
                        own.push(*n);
                        d.spec.ports[i].node_port = Some(*n);
                    }
                    Err(e) => errs.push(FieldError::invalid(
                        format!("{}.ports[{i}].node_port", d.path),
                        i64::from(*n),
                        e.to_string(),
                    )),
                }
            }
        }
    }
    request_health_check_ports(drafts, &mut ports, errs);
    // lb's own listeners' ports, after the requests (a request of one is
    // refused by validation naming the listener, not as "already
    // allocated") and before anything is handed out. A port outside the
    // range, or requested, is no concern of the allocator.
    for port in reserved {
        let _ = ports.allocate(*port);
    }
    // Then what each port held before (health-check ports included, before
    // any new port is handed out: adding a service must never move another
    // service's ports).
    for d in drafts.iter_mut() {
        for (i, request) in d.node_ports.iter().enumerate() {
            if *request != Some(None) {
                continue;
            }
            let p = &d.spec.ports[i];
            let key = port_key(&d.spec.key, p.protocol, p.port);
            if let Some(n) = previous.node_ports.get(&key) {
                if ports.allocate(*n).is_ok() {
                    d.spec.ports[i].node_port = Some(*n);
                }
            }
        }
    }
    keep_health_check_ports(drafts, &mut ports, previous);
    // Then the lowest free port; a port number that another protocol of the
    // same service already has a node port for shares it (as Kubernetes does).
    for d in drafts.iter_mut() {
        for (i, request) in d.node_ports.iter().enumerate() {
            if *request != Some(None) || d.spec.ports[i].node_port.is_some() {
                continue;
            }
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
            match ports.allocate_next() {
                Ok(n) => d.spec.ports[i].node_port = Some(n),
                Err(AllocError::Full) | Err(_) => errs.push(FieldError::internal(
                    format!("{}.ports[{i}].node_port", d.path),
                    "failed to allocate a nodePort: range is full",
                )),
            }
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
    new_health_check_ports(drafts, &mut ports, errs, out);
}

/// Whether a service gets a health-check node port (LoadBalancer + Local).
fn needs_health_check_port(d: &ServiceDraft) -> bool {
    d.spec.service_type == lb_core::ServiceType::LoadBalancer
        && d.spec.external_traffic_policy == lb_core::TrafficPolicy::Local
}

/// Health-check node ports come from the same range and allocator as node
/// ports, as in Kubernetes, in the same order: requested ones (with the
/// requested node ports), then what the service held before (with the node
/// ports held before), then the lowest free port. This is the first step.
fn request_health_check_ports(
    drafts: &mut [ServiceDraft],
    ports: &mut PortAllocator,
    errs: &mut Errors,
) {
    for d in drafts.iter_mut().filter(|d| needs_health_check_port(d)) {
        let n = d.spec.health_check_node_port;
        if n != 0 {
            if let Err(e) = ports.allocate(n) {
                errs.push(FieldError::invalid(
                    format!("{}.health_check_node_port", d.path),
                    i64::from(n),
                    e.to_string(),
                ));
            }
        }
    }
}

/// The health-check node port each service held before, kept.
fn keep_health_check_ports(
    drafts: &mut [ServiceDraft],
    ports: &mut PortAllocator,
    previous: &Allocations,
) {
    for d in drafts.iter_mut().filter(|d| needs_health_check_port(d)) {
        if d.spec.health_check_node_port != 0 {
            continue;
        }
        if let Some(n) = previous.health_check_node_ports.get(&ip_key(&d.spec.key)) {
            if ports.allocate(*n).is_ok() {
                d.spec.health_check_node_port = *n;
            }
        }
    }
}

/// The lowest free port for the health-check ports still missing; records
/// them all in `out`.
fn new_health_check_ports(
    drafts: &mut [ServiceDraft],
    ports: &mut PortAllocator,
    errs: &mut Errors,
    out: &mut Allocations,
) {
    for d in drafts.iter_mut().filter(|d| needs_health_check_port(d)) {
        if d.spec.health_check_node_port != 0 {
            continue;
        }
        match ports.allocate_next() {
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
