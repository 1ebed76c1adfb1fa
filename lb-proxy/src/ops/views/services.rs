//! `/api/v1/services`: every service as an operator sees it, after
//! allocation, with the frontends that failed to bind and its conditions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use lb_core::{ClusterIp, FrontendKey, Protocol, ServiceType, Snapshot, TargetPort};
use serde::{Deserialize, Serialize};

use super::conditions::{observe, stamped, Frontends, ServiceStatus, Transitions};
use super::time::format_rfc3339;

/// Body of `GET /api/v1/services`: a Kubernetes-style list, so tools that read
/// `kubectl get -o json` output find `items` where they expect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceList {
    /// One entry per service, in namespace/name order.
    pub items: Vec<ServiceView>,
}

/// One service as an operator sees it: its spec after allocation (so allocated
/// cluster IPs, node ports and pool addresses are visible) plus the frontends
/// that failed to bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// The cluster IP; `"None"` for a headless service and `""` for an
    /// ExternalName service, as the Kubernetes API shows them.
    pub cluster_ip: String,
    /// `spec.externalIPs`.
    pub external_ips: Vec<String>,
    /// LoadBalancer addresses assigned from a pool (empty while pending).
    pub load_balancer_ingress: Vec<String>,
    /// Pool the LoadBalancer address came from, or empty.
    pub ip_pool: String,
    /// `None` or `ClientIP`.
    pub session_affinity: String,
    /// Health check node port, 0 for none.
    pub health_check_node_port: u16,
    /// The service ports.
    pub ports: Vec<PortView>,
    /// Frontends of this service that could not be bound (they are retried);
    /// empty when every frontend listens.
    #[serde(default)]
    pub bind_errors: Vec<BindErrorView>,
    /// When the service first appeared, RFC 3339 in UTC (for the AGE column);
    /// empty when unknown.
    #[serde(default)]
    pub created: String,
    /// Target of an ExternalName service, else empty.
    #[serde(default)]
    pub external_name: String,
    /// `Cluster` or `Local`.
    #[serde(default)]
    pub external_traffic_policy: String,
    /// `Cluster` or `Local`.
    #[serde(default)]
    pub internal_traffic_policy: String,
    /// Its conditions (`LoadBalancerAssigned`, `FrontendsBound`,
    /// `EndpointsAvailable`), as Kubernetes' `status.conditions`.
    #[serde(default)]
    pub status: ServiceStatus,
    /// `spec.selector` (empty for a selector-less service, or when the
    /// view was built without the config).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// `spec.loadBalancerSourceRanges`.
    #[serde(default)]
    pub load_balancer_source_ranges: Vec<String>,
    /// `metadata.labels` (empty when it has none, or when the view was
    /// built without the config).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The PROXY protocol header sent to endpoints (`v1` or `v2`); absent
    /// when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
    /// Whether every TCP connection must start with a PROXY header from a
    /// trusted balancer (`accept_proxy_protocol`); absent when not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_proxy_protocol: bool,
}

/// One service port as configured and allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// Port name (may be empty for a single-port service).
    pub name: String,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// Port on the cluster IP and external addresses.
    pub port: u16,
    /// Target port as configured: a number or a container port name.
    pub target_port: TargetPort,
    /// Node port, 0 when none.
    pub node_port: u16,
    /// Kubernetes' `appProtocol` as the object said it (lb forwards bytes
    /// whatever it is); absent when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Its live counters (`/api/v1/services` only: [`with_traffic`]);
    /// absent where a view shows the configuration alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<PortTraffic>,
}

/// The live counters of one service port as the status page shows them:
/// load against its limit, connections that went wrong and why, and its
/// endpoints' figures summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortTraffic {
    /// Connections open now.
    pub active: u64,
    /// The most connections open at once.
    pub peak_active: u64,
    /// `[proxy] max_connections` (open connections per service port), 0
    /// for no limit.
    pub max_connections: u64,
    /// Connections accepted from clients.
    pub accepted: u64,
    /// Connections that reached an endpoint only after the dial to an
    /// earlier pick failed.
    pub failovers: u64,
    /// Forwarded connections that ended in a reset (a leg failed).
    pub resets: u64,
    /// Connections refused, by why (the `reason` label of
    /// `lb_rejected_connections_total`).
    pub rejected: RejectedView,
    /// Its endpoints' dial failures, summed.
    pub connect_errors: u64,
    /// Bytes from clients to its endpoints, summed.
    pub bytes_rx: u64,
    /// Bytes from its endpoints to clients, summed.
    pub bytes_tx: u64,
}

/// Refused connections of a service port by reason, named as the `reason`
/// label of `lb_rejected_connections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RejectedView {
    /// No endpoint could take it.
    pub no_endpoints: u64,
    /// `max_connections` was reached.
    pub limit: u64,
    /// Outside `load_balancer_source_ranges`.
    pub source_range: u64,
    /// The proxy was short of descriptors or local ports.
    pub local_resources: u64,
    /// Every endpoint left was one of lb's own frontends.
    pub self_loop: u64,
    /// `accept_proxy_protocol`: no valid PROXY header in time, or one from
    /// an untrusted source.
    #[serde(default)]
    pub proxy_protocol: u64,
}

impl RejectedView {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.no_endpoints
            .saturating_add(self.limit)
            .saturating_add(self.source_range)
            .saturating_add(self.local_resources)
            .saturating_add(self.self_loop)
            .saturating_add(self.proxy_protocol)
    }
}

/// Adds each port's live counters ([`PortTraffic`]) to a services view
/// built from `snapshot`, with `max_connections` the limit in force: what
/// `/api/v1/services` shows and the configuration views leave out.
pub fn with_traffic(list: &mut ServiceList, snapshot: &Snapshot, max_connections: u32) {
    use lb_core::stats::{read, CloseCause};
    for item in &mut list.items {
        let key = lb_core::ServiceKey::new(item.namespace.clone(), item.name.clone());
        let Some(entry) = snapshot.service(&key) else {
            continue;
        };
        for view in &mut item.ports {
            let Some(port) = entry
                .ports
                .iter()
                .find(|p| p.key().port == view.port && p.key().protocol == view.protocol)
            else {
                continue;
            };
            let st = port.stats();
            let mut traffic = PortTraffic {
                active: read(&st.active),
                peak_active: read(&st.peak_active),
                max_connections: u64::from(max_connections),
                accepted: read(&st.accepted),
                failovers: read(&st.failovers),
                resets: st.closed.get(CloseCause::Reset),
                rejected: RejectedView {
                    no_endpoints: read(&st.rejected_no_endpoints),
                    limit: read(&st.rejected_limit),
                    source_range: read(&st.rejected_source_range),
                    local_resources: read(&st.rejected_local_resources),
                    self_loop: read(&st.rejected_self_loop),
                    proxy_protocol: read(&st.rejected_proxy_protocol),
                },
                ..PortTraffic::default()
            };
            for e in port.endpoints() {
                traffic.connect_errors += read(&e.stats.connect_errors);
                traffic.bytes_rx += read(&e.stats.bytes_rx);
                traffic.bytes_tx += read(&e.stats.bytes_tx);
            }
            view.traffic = Some(traffic);
        }
    }
}

/// A frontend that failed to bind, so an operator can see why an address does
/// not answer without reading logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindErrorView {
    /// `IP:PORT` (`[IP]:PORT` for IPv6).
    pub address: String,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// The error as the operating system reported it.
    pub error: String,
}

/// Builds the `/api/v1/services` body. `bind_errors` holds every frontend that
/// failed to bind; each is reported under the service whose frontend it is in
/// `snapshot` (errors for frontends no longer in the snapshot are dropped:
/// nothing retries them any more). Conditions are stamped with now (see
/// [`services_view_with`] for remembered transition times).
pub fn services_view(
    snapshot: &Snapshot,
    bind_errors: &BTreeMap<FrontendKey, String>,
) -> ServiceList {
    services_view_with(snapshot, Some(bind_errors), None, None, SystemTime::now())
}

/// [`services_view`] with everything the conditions need: the data plane's
/// bind errors (`None` when no data plane runs, as for `describe --config`:
/// `FrontendsBound` is then `Unknown`), the config being served (its
/// LoadBalancer services left pending, its selectors), and the
/// [`Transitions`] that remember when each condition last changed (without,
/// every condition is stamped `now`).
pub fn services_view_with(
    snapshot: &Snapshot,
    bind_errors: Option<&BTreeMap<FrontendKey, String>>,
    config: Option<&lb_config::Config>,
    transitions: Option<&Transitions>,
    now: SystemTime,
) -> ServiceList {
    let pending = config.map_or(&[][..], |c| &c.pending_addresses[..]);
    let no_errors = BTreeMap::new();
    let known = bind_errors.is_some();
    let bind_errors = bind_errors.unwrap_or(&no_errors);
    let mut errors_by_service: BTreeMap<&lb_core::ServiceKey, Vec<BindErrorView>> = BTreeMap::new();
    for (key, error) in bind_errors {
        if let Some(entry) = snapshot.frontend(key.addr, key.protocol) {
            errors_by_service
                .entry(&entry.port.key().service)
                .or_default()
                .push(BindErrorView {
                    address: key.addr.to_string(),
                    protocol: key.protocol,
                    error: error.clone(),
                });
        }
    }
    let pending: BTreeMap<&lb_core::ServiceKey, &str> = pending
        .iter()
        .map(|p| (&p.key, p.message.as_str()))
        .collect();
    let mut observed = Vec::new();
    let mut items: Vec<ServiceView> = snapshot
        .services()
        .map(|entry| {
            let spec = &entry.spec;
            let cluster_ip = match (spec.service_type, spec.cluster_ip) {
                (ServiceType::ExternalName, _) => String::new(),
                (_, ClusterIp::None) => "None".to_string(),
                (_, ClusterIp::Ip(ip)) => ip.to_string(),
            };
            let view = ServiceView {
                namespace: spec.key.namespace.clone(),
                name: spec.key.name.clone(),
                service_type: spec.service_type.as_str().to_string(),
                cluster_ip,
                external_ips: spec.external_ips.iter().map(IpAddr::to_string).collect(),
                load_balancer_ingress: spec
                    .load_balancer_ips
                    .iter()
                    .map(IpAddr::to_string)
                    .collect(),
                ip_pool: spec.ip_pool.clone(),
                session_affinity: spec.session_affinity.as_str().to_string(),
                health_check_node_port: spec.health_check_node_port,
                ports: spec
                    .ports
                    .iter()
                    .map(|p| PortView {
                        name: p.name.clone(),
                        protocol: p.protocol,
                        port: p.port,
                        target_port: p.target_port.clone(),
                        node_port: p.node_port.unwrap_or(0),
                        app_protocol: p.app_protocol.clone(),
                        traffic: None,
                    })
                    .collect(),
                bind_errors: errors_by_service.remove(&spec.key).unwrap_or_default(),
                status: ServiceStatus::default(),
                selector: config
                    .and_then(|c| c.selectors.get(&spec.key))
                    .cloned()
                    .unwrap_or_default(),
                labels: config
                    .and_then(|c| c.labels.get(&spec.key))
                    .cloned()
                    .unwrap_or_default(),
                load_balancer_source_ranges: spec
                    .load_balancer_source_ranges
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                created: format_rfc3339(entry.created),
                external_name: spec.external_name.clone(),
                external_traffic_policy: spec.external_traffic_policy.as_str().to_string(),
                internal_traffic_policy: spec.internal_traffic_policy.as_str().to_string(),
                proxy_protocol: spec.proxy_protocol.map(|v| v.as_str().to_string()),
                accept_proxy_protocol: spec.accept_proxy_protocol,
            };
            let frontends = if known {
                Frontends::Bound(&view.bind_errors)
            } else {
                Frontends::Unknown
            };
            observed.push((
                &spec.key,
                observe(entry, pending.get(&spec.key).copied(), frontends),
            ));
            view
        })
        .collect();
    let statuses: Vec<ServiceStatus> = match transitions {
        Some(t) => t.stamp(observed, now),
        None => observed
            .into_iter()
            .map(|(_, o)| ServiceStatus {
                conditions: o.into_iter().map(|o| stamped(o, now)).collect(),
            })
            .collect(),
    };
    // `observed` was filled in the order of `items`.
    for (item, status) in items.iter_mut().zip(statuses) {
        item.status = status;
    }
    ServiceList { items }
}
