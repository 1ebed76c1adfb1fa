//! The configuration in force, written back in the file's own shape: every
//! setting with its default filled in, and every object with what the load
//! allocated to it (cluster IPs, node ports, health-check node ports,
//! LoadBalancer addresses) written as if requested. This is what
//! `lb-proxy config dump` prints (as nginx -T and Envoy's config dump do):
//! a file that loads to the same services, and a place to read defaults
//! without reading the code. The schema's defaults are taken from here too,
//! so the reference cannot state a default lb does not apply.

use std::collections::HashMap;

use lb_core::{ClusterIp, ServiceSpec, ServiceType};

use crate::config::Config;
use crate::raw::{
    RawAdmin, RawCluster, RawConfig, RawDns, RawLog, RawNode, RawProxy, RawService, RawServicePort,
};

/// `raw` with its settings tables (`[node]`, `[cluster]`, `[proxy]`,
/// `[admin]`, `[log]`, `[dns]` when present) filled in from `config`, the
/// result of loading `raw`, and its services' allocations written in.
/// Settings whose default is "none" stay absent (TOML has no null).
pub fn effective(raw: &RawConfig, config: &Config) -> RawConfig {
    let mut out = raw.clone();
    out.node = node(&raw.node, config);
    out.cluster = cluster(config);
    out.proxy = proxy(config);
    out.admin = admin(config);
    out.log = log(&raw.log);
    out.dns = dns(config);
    // One index, not a search of every spec for every service (10,000
    // services made 50 million comparisons).
    let specs: HashMap<(&str, &str), &ServiceSpec> = config
        .services
        .iter()
        .map(|s| &**s)
        .chain(&config.not_proxied)
        .map(|s| ((s.key.namespace.as_str(), s.key.name.as_str()), s))
        .collect();
    for service in &mut out.services {
        let namespace = service.namespace.as_deref().unwrap_or("default");
        if let Some(spec) = specs.get(&(namespace, service.name.as_str())).copied() {
            allocated(std::sync::Arc::make_mut(service), spec);
        }
    }
    out
}

/// `raw` as the text of a config file (what [`crate::parse_str`] reads back
/// to `raw`).
pub fn to_toml(raw: &RawConfig) -> Result<String, toml::ser::Error> {
    toml::to_string(raw)
}

fn node(raw: &RawNode, config: &Config) -> RawNode {
    let announce = &config.announce_interface;
    let interface = config.vip_mode == crate::VipMode::Interface;
    RawNode {
        name: Some(config.node.name.clone()),
        addresses: Some(
            config
                .node
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
        ),
        allowed_external_cidrs: Some(raw.allowed_external_cidrs.clone().unwrap_or_default()),
        vip_mode: Some(config.vip_mode.as_str().to_string()),
        // Only interface mode may name interfaces (`Forbidden` otherwise).
        vip_interface: interface.then(|| config.vip_interface.clone()),
        announce_interface: (interface && !announce.is_empty()).then(|| announce.clone()),
        load_balancer_class: raw.load_balancer_class.clone(),
        service_proxy_name: Some(raw.service_proxy_name.clone().unwrap_or_default()),
        zone: config.node.zone.clone(),
    }
}

fn cluster(config: &Config) -> RawCluster {
    let c = &config.cluster;
    RawCluster {
        service_cidr: Some(c.service_cidr.to_string()),
        node_port_range: Some(format!(
            "{}-{}",
            c.node_port_range.start(),
            c.node_port_range.end()
        )),
        domain: Some(c.domain.clone()),
        allocation_seed: Some(c.allocation_seed),
    }
}

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn count(n: u32) -> Option<i64> {
    Some(i64::from(n))
}

fn proxy(config: &Config) -> RawProxy {
    let p = &config.proxy;
    RawProxy {
        connect_timeouts_ms: Some(
            p.connect_timeouts
                .iter()
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .collect(),
        ),
        tcp_idle_timeout: Some(p.tcp_idle_timeout.map_or_else(|| "0".into(), duration)),
        half_close_timeout: Some(duration(p.half_close_timeout)),
        udp_idle_timeout: Some(duration(p.udp_idle_timeout)),
        drain_timeout: Some(duration(p.drain_timeout)),
        max_connections: count(p.max_connections),
        outlier_consecutive_failures: count(p.outlier_consecutive_failures),
        outlier_base_ejection: Some(duration(p.outlier_base_ejection)),
        udp_max_flows: count(p.udp_max_flows),
        forward_engine: Some(p.forward_engine.as_str().to_string()),
        accept_mode: Some(p.accept_mode.as_str().to_string()),
        workers: count(p.workers),
        source_address: Some(p.source_address.as_str().to_string()),
        proxy_protocol_trusted_cidrs: Some(
            p.proxy_protocol_trusted_cidrs
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
    }
}

fn admin(config: &Config) -> RawAdmin {
    RawAdmin {
        listen: Some(
            config
                .admin_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
        allowed_hosts: Some(config.admin_allowed_hosts.clone()),
    }
}

fn log(raw: &RawLog) -> RawLog {
    RawLog {
        access: Some(raw.access.unwrap_or(false)),
    }
}

fn dns(config: &Config) -> Option<RawDns> {
    let d = config.dns.as_ref()?;
    Some(RawDns {
        listen: Some(d.listen.to_string()),
        ttl: Some(i64::from(d.ttl)),
        upstreams: Some(d.upstreams.iter().map(|u| u.to_string()).collect()),
    })
}

/// Writes what the load gave `service` as requests of its own, and the
/// defaults every type accepts (namespace, type, port protocols).
fn allocated(service: &mut RawService, spec: &ServiceSpec) {
    service.namespace = Some(spec.key.namespace.clone());
    service.service_type = Some(spec.service_type.as_str().to_string());
    if service.cluster_ip.is_none() && service.cluster_ips.is_none() {
        if let ClusterIp::Ip(ip) = spec.cluster_ip {
            service.cluster_ip = Some(ip.to_string());
        }
    }
    if spec.service_type == ServiceType::LoadBalancer && service.load_balancer_ip.is_none() {
        service.load_balancer_ip = spec.load_balancer_ips.first().map(|ip| ip.to_string());
    }
    if spec.health_check_node_port != 0 {
        service.health_check_node_port = Some(i64::from(spec.health_check_node_port));
    }
    for port in &mut service.ports {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let allocated = spec
            .ports
            .iter()
            .find(|p| i64::from(p.port) == port.port && p.protocol.as_str() == protocol);
        if let Some(p) = allocated {
            port_allocated(port, p.node_port);
        }
        port.protocol = Some(protocol);
    }
}

fn port_allocated(port: &mut RawServicePort, node_port: Option<u16>) {
    if let Some(n) = node_port.filter(|n| *n != 0) {
        port.node_port = Some(i64::from(n));
    }
}
