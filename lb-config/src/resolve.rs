//! Endpoints known by name (`{ host = "db1.example.internal" }` in
//! `[[endpoints]]`): the pure part. The file yields [`HostEndpoint`]s beside
//! the services; whoever resolves the names (lb-proxy) applies the addresses
//! as an overlay with [`apply`], so a new answer never needs the file again,
//! and decides when to ask again with [`refresh_after`].

use std::collections::{BTreeMap, BTreeSet};

use crate::hash::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lb_core::{EndpointHints, EndpointSpec, Protocol, ServiceKey, ServiceSpec};

/// No name is asked again sooner than this, whatever its TTL says (a TTL of 0
/// must not mean a query per connection or a busy loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

/// No name is kept longer than this without asking again, so a long TTL
/// cannot hide a move for hours.
pub const MAX_REFRESH: Duration = Duration::from_secs(300);

/// One `host` address crossed with one matching endpoint port: every address
/// the name resolves to becomes an endpoint of `port_name`/`protocol` of the
/// service at `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    /// The service (same namespace and name as the `[[endpoints]]` object).
    pub service: ServiceKey,
    /// Name of the service port served (matched as in Kubernetes).
    pub port_name: String,
    /// Protocol of the service port served.
    pub protocol: Protocol,
    /// The DNS name, lower-case, without a trailing dot.
    pub host: String,
    /// Port on the resolved addresses.
    pub port: u16,
    /// EndpointSlice `ready`: `addresses` (true) or `not_ready_addresses`
    /// (false).
    pub ready: bool,
    /// EndpointSlice `serving`.
    pub serving: bool,
    /// EndpointSlice `terminating`.
    pub terminating: bool,
    /// Relative share of new connections, per resolved address.
    pub weight: u32,
    /// Node the addresses run on, when given.
    pub node: Option<String>,
    /// Hostname for DNS of headless services.
    pub hostname: Option<String>,
    /// EndpointSlice `zone` of the addresses, when given.
    pub zone: Option<String>,
    /// EndpointSlice `hints` of the addresses as written.
    pub hints: EndpointHints,
}

/// The distinct names to resolve.
pub fn host_names(hosts: &[HostEndpoint]) -> BTreeSet<String> {
    hosts.iter().map(|h| h.host.clone()).collect()
}

/// `services` with the resolved addresses of `hosts` added as endpoints. A
/// name not (yet) resolved adds nothing; an address already listed by IP (or
/// by an earlier name) keeps its first entry, as duplicate addresses do in
/// the endpoints controller.
///
/// Only the services that have host endpoints are copied (`Arc::make_mut`);
/// the others stay the desired state's own `Arc`s.
pub fn apply(
    mut services: Vec<Arc<ServiceSpec>>,
    hosts: &[HostEndpoint],
    resolved: &BTreeMap<String, Vec<IpAddr>>,
) -> Vec<Arc<ServiceSpec>> {
    if hosts.is_empty() {
        return services;
    }
    let named: HashSet<&ServiceKey> = hosts.iter().map(|h| &h.service).collect();
    for service in services.iter_mut().filter(|s| named.contains(&s.key)) {
        let service = Arc::make_mut(service);
        for port in &mut service.ports {
            let mine = hosts.iter().filter(|h| {
                h.service == service.key && h.port_name == port.name && h.protocol == port.protocol
            });
            let mut seen: HashSet<SocketAddr> = port.endpoints.iter().map(|e| e.addr).collect();
            let mut added = false;
            for h in mine {
                for ip in resolved.get(&h.host).into_iter().flatten() {
                    let addr = SocketAddr::new(*ip, h.port);
                    if !seen.insert(addr) {
                        continue;
                    }
                    port.endpoints.push(EndpointSpec {
                        addr,
                        node: h.node.clone(),
                        weight: h.weight,
                        ready: Some(h.ready),
                        serving: h.serving,
                        terminating: h.terminating,
                        pod: None,
                        hostname: h.hostname.clone(),
                        zone: h.zone.clone(),
                        hints: h.hints.clone(),
                    });
                    added = true;
                }
            }
            if added {
                port.endpoints.sort_by_key(|e| e.addr);
            }
        }
    }
    services
}

/// When to ask for a name again after an answer valid for `ttl`: the TTL,
/// held within [`MIN_REFRESH`] and [`MAX_REFRESH`].
pub fn refresh_after(ttl: Duration) -> Duration {
    ttl.clamp(MIN_REFRESH, MAX_REFRESH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::PortSpec;

    fn host(name: &str, serving: bool) -> HostEndpoint {
        HostEndpoint {
            service: ServiceKey::new("default", "db"),
            port_name: "sql".into(),
            protocol: Protocol::Tcp,
            host: name.into(),
            port: 3306,
            ready: serving,
            serving,
            terminating: false,
            weight: 1,
            node: None,
            hostname: None,
            zone: None,
            hints: EndpointHints::default(),
        }
    }

    fn db() -> ServiceSpec {
        ServiceSpec::cluster_ip("default", "db", "127.96.0.5".parse().unwrap()).with_port(
            PortSpec::tcp("sql", 3306)
                .with_endpoint(EndpointSpec::new("127.0.244.9:3306".parse().unwrap())),
        )
    }

    #[test]
    fn every_resolved_address_is_an_endpoint_and_listed_ones_win() {
        let resolved = BTreeMap::from([(
            "db1.example.test".to_string(),
            vec![
                "127.0.244.2".parse().unwrap(),
                "127.0.244.9".parse().unwrap(),
            ],
        )]);
        let out = apply(
            vec![Arc::new(db())],
            &[host("db1.example.test", false)],
            &resolved,
        );
        let eps = &out[0].ports[0].endpoints;
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].addr, "127.0.244.2:3306".parse().unwrap());
        assert!(!eps[0].serving);
        assert!(eps[1].serving, "the address listed by IP keeps its entry");
    }

    #[test]
    fn an_unresolved_name_adds_nothing() {
        let out = apply(
            vec![Arc::new(db())],
            &[host("db1.example.test", true)],
            &BTreeMap::new(),
        );
        assert_eq!(out, vec![Arc::new(db())]);
    }

    #[test]
    fn refreshes_are_bounded_whatever_the_ttl() {
        assert_eq!(refresh_after(Duration::ZERO), MIN_REFRESH);
        assert_eq!(
            refresh_after(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(refresh_after(Duration::from_secs(86400)), MAX_REFRESH);
    }
}
