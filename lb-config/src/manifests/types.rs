//! The Kubernetes objects lb reads, in their real apiVersion/kind/metadata/spec
//! shape (camelCase). Only the fields lb uses are declared: anything else is
//! reported by the caller as ignored. Bookkeeping the API server adds
//! (`uid`, `resourceVersion`, `managedFields`, ...) is declared as ignored so
//! that `kubectl get -o yaml` output loads without a wall of warnings.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::raw::IntOrString;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Meta {
    pub(crate) name: String,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) deletion_timestamp: Option<String>,
    uid: Option<IgnoredAny>,
    resource_version: Option<IgnoredAny>,
    creation_timestamp: Option<IgnoredAny>,
    generation: Option<IgnoredAny>,
    generate_name: Option<IgnoredAny>,
    managed_fields: Option<IgnoredAny>,
    owner_references: Option<IgnoredAny>,
    self_link: Option<IgnoredAny>,
    finalizers: Option<IgnoredAny>,
    deletion_grace_period_seconds: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Service {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    pub(crate) metadata: Meta,
    pub(crate) spec: ServiceSpec,
    status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServiceSpec {
    #[serde(rename = "type")]
    pub(crate) service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    pub(crate) cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub(crate) cluster_ips: Option<Vec<String>>,
    ip_families: Option<IgnoredAny>,
    ip_family_policy: Option<IgnoredAny>,
    pub(crate) selector: Option<BTreeMap<String, String>>,
    pub(crate) ports: Vec<ServicePort>,
    pub(crate) session_affinity: Option<String>,
    pub(crate) session_affinity_config: Option<SessionAffinityConfig>,
    pub(crate) external_traffic_policy: Option<String>,
    pub(crate) internal_traffic_policy: Option<String>,
    #[serde(rename = "externalIPs")]
    pub(crate) external_ips: Option<Vec<String>>,
    #[serde(rename = "loadBalancerIP")]
    pub(crate) load_balancer_ip: Option<String>,
    pub(crate) load_balancer_source_ranges: Option<Vec<String>>,
    pub(crate) external_name: Option<String>,
    pub(crate) publish_not_ready_addresses: Option<bool>,
    pub(crate) allocate_load_balancer_node_ports: Option<bool>,
    pub(crate) health_check_node_port: Option<i64>,
    pub(crate) load_balancer_class: Option<String>,
    pub(crate) traffic_distribution: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SessionAffinityConfig {
    #[serde(rename = "clientIP")]
    pub(crate) client_ip: Option<ClientIpConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ClientIpConfig {
    pub(crate) timeout_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServicePort {
    pub(crate) name: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) port: i64,
    pub(crate) target_port: Option<IntOrString>,
    pub(crate) node_port: Option<i64>,
    pub(crate) app_protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Endpoints {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    pub(crate) metadata: Meta,
    pub(crate) subsets: Vec<EndpointSubset>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct EndpointSubset {
    pub(crate) addresses: Vec<EndpointAddress>,
    pub(crate) not_ready_addresses: Vec<EndpointAddress>,
    pub(crate) ports: Vec<EndpointPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct EndpointAddress {
    pub(crate) ip: String,
    pub(crate) hostname: Option<String>,
    pub(crate) node_name: Option<String>,
    target_ref: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct EndpointPort {
    pub(crate) name: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) protocol: Option<String>,
    app_protocol: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct EndpointSlice {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    pub(crate) metadata: Meta,
    pub(crate) address_type: Option<String>,
    pub(crate) endpoints: Vec<SliceEndpoint>,
    pub(crate) ports: Vec<EndpointPort>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SliceEndpoint {
    pub(crate) addresses: Vec<String>,
    pub(crate) conditions: SliceConditions,
    pub(crate) node_name: Option<String>,
    pub(crate) hostname: Option<String>,
    target_ref: Option<IgnoredAny>,
    pub(crate) zone: Option<String>,
    pub(crate) hints: Option<SliceHints>,
}

/// `hints` of a slice endpoint: kube-proxy reads `forZones` and `forNodes`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SliceHints {
    pub(crate) for_zones: Vec<HintName>,
    pub(crate) for_nodes: Vec<HintName>,
}

/// One `forZones[]` or `forNodes[]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct HintName {
    pub(crate) name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SliceConditions {
    pub(crate) ready: Option<bool>,
    pub(crate) serving: Option<bool>,
    pub(crate) terminating: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Pod {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    pub(crate) metadata: Meta,
    pub(crate) spec: PodSpec,
    pub(crate) status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PodSpec {
    pub(crate) node_name: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) containers: Vec<Container>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Container {
    name: Option<IgnoredAny>,
    image: Option<IgnoredAny>,
    pub(crate) ports: Vec<ContainerPort>,
    pub(crate) readiness_probe: Option<Probe>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ContainerPort {
    pub(crate) name: Option<String>,
    pub(crate) container_port: i64,
    pub(crate) protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Probe {
    pub(crate) tcp_socket: Option<PortAction>,
    pub(crate) http_get: Option<HttpGetAction>,
    pub(crate) exec: Option<ExecAction>,
    pub(crate) initial_delay_seconds: Option<i64>,
    pub(crate) period_seconds: Option<i64>,
    pub(crate) timeout_seconds: Option<i64>,
    pub(crate) success_threshold: Option<i64>,
    pub(crate) failure_threshold: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PortAction {
    pub(crate) port: IntOrString,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpGetAction {
    #[serde(default)]
    pub(crate) path: Option<String>,
    pub(crate) port: IntOrString,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ExecAction {
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PodStatus {
    #[serde(rename = "podIP")]
    pub(crate) pod_ip: Option<String>,
    pub(crate) conditions: Option<Vec<PodCondition>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PodCondition {
    #[serde(rename = "type")]
    pub(crate) condition_type: String,
    pub(crate) status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct IpAddressPool {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    pub(crate) metadata: Meta,
    pub(crate) spec: IpAddressPoolSpec,
    status: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct IpAddressPoolSpec {
    pub(crate) addresses: Vec<String>,
    pub(crate) auto_assign: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct L2Advertisement {
    api_version: Option<IgnoredAny>,
    kind: Option<IgnoredAny>,
    pub(crate) metadata: Meta,
    pub(crate) spec: L2AdvertisementSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct L2AdvertisementSpec {
    pub(crate) ip_address_pools: Vec<String>,
}
