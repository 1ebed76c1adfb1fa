//! What a source hands to the core: services that are already validated and
//! allocated, with their endpoints resolved. lb-config produces these from the
//! TOML file; an embedding program builds them in code.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::model::{
    Protocol, ProxyProtocol, ServiceKey, ServiceType, SessionAffinity, SourceAddress,
    TrafficDistribution, TrafficPolicy,
};

/// Who this proxy is: kube-proxy's node. Node ports listen on `addresses`, and
/// Local traffic policies compare endpoint nodes with `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name (default: the hostname).
    pub name: String,
    /// Addresses where node ports listen.
    pub addresses: Vec<IpAddr>,
    /// The node's `topology.kubernetes.io/zone`, when it has one: topology
    /// hints and `trafficDistribution` prefer endpoints of this zone.
    pub zone: Option<String>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            name: "localhost".into(),
            addresses: vec![IpAddr::from([0, 0, 0, 0])],
            zone: None,
        }
    }
}

/// `spec.clusterIP` after allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterIp {
    /// A virtual address the service listens on.
    Ip(IpAddr),
    /// Headless (`"None"`): exists in DNS only, opens no listener. Also what an
    /// ExternalName service has.
    None,
}

impl ClusterIp {
    /// The address, unless headless.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            ClusterIp::Ip(ip) => Some(ip),
            ClusterIp::None => None,
        }
    }
}

impl fmt::Display for ClusterIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterIp::Ip(ip) => ip.fmt(f),
            ClusterIp::None => f.write_str("None"),
        }
    }
}

/// `ports[].targetPort`: a number, or the name of a pod's container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number on the pod.
    Number(u16),
    /// A named container port (IANA_SVC_NAME).
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => n.fmt(f),
            TargetPort::Name(s) => f.write_str(s),
        }
    }
}

/// One validated, allocated service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// Allocated or given cluster IP, or headless.
    pub cluster_ip: ClusterIp,
    /// `spec.externalIPs`: more addresses the ports listen on.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress addresses (from a pool).
    pub load_balancer_ips: Vec<IpAddr>,
    /// Name of the pool the LoadBalancer address came from, or empty.
    pub ip_pool: String,
    /// `loadBalancerSourceRanges`: clients allowed to reach the LoadBalancer
    /// addresses (empty = everyone). Cluster IP and node port traffic is not
    /// filtered, as in kube-proxy.
    pub load_balancer_source_ranges: Vec<ipnet::IpNet>,
    /// Session affinity with its timeout.
    pub session_affinity: SessionAffinity,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `publishNotReadyAddresses`: not-ready endpoints count as ready.
    pub publish_not_ready_addresses: bool,
    /// `trafficDistribution`: prefer close endpoints for cluster traffic.
    pub traffic_distribution: Option<TrafficDistribution>,
    /// `externalName` for ExternalName services, else empty.
    pub external_name: String,
    /// `healthCheckNodePort`, 0 for none.
    pub health_check_node_port: u16,
    /// The PROXY protocol header sent to endpoints at the start of each
    /// connection (UDP: each datagram, v2 only), so that they see the
    /// client's address; `None` sends nothing (the default).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Every TCP connection to the service's frontends starts with a PROXY
    /// header (v1 or v2) from a trusted load balancer in front of lb, whose
    /// client address lb then uses as the client's.
    pub accept_proxy_protocol: bool,
    /// Where endpoints are dialed from; `None` follows `[proxy]
    /// source_address`.
    pub source_address: Option<SourceAddress>,
    /// The ports, each with its resolved endpoints.
    pub ports: Vec<PortSpec>,
}

impl ServiceSpec {
    /// A ClusterIP service with no ports, as a starting point for code that builds
    /// services by hand (embedders, tests).
    pub fn cluster_ip(namespace: &str, name: &str, ip: IpAddr) -> Self {
        ServiceSpec {
            key: ServiceKey::new(namespace, name),
            service_type: ServiceType::ClusterIP,
            cluster_ip: ClusterIp::Ip(ip),
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            ip_pool: String::new(),
            load_balancer_source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            publish_not_ready_addresses: false,
            traffic_distribution: None,
            external_name: String::new(),
            health_check_node_port: 0,
            proxy_protocol: None,
            accept_proxy_protocol: false,
            source_address: None,
            ports: Vec::new(),
        }
    }

    /// Adds a port (builder style).
    pub fn with_port(mut self, port: PortSpec) -> Self {
        self.ports.push(port);
        self
    }

    /// Sends endpoints a PROXY protocol header (builder style).
    pub fn with_proxy_protocol(mut self, version: ProxyProtocol) -> Self {
        self.proxy_protocol = Some(version);
        self
    }

    /// Makes every connection start with a PROXY header (builder style).
    pub fn accepting_proxy_protocol(mut self) -> Self {
        self.accept_proxy_protocol = true;
        self
    }

    /// Sets session affinity (builder style).
    pub fn with_affinity(mut self, affinity: SessionAffinity) -> Self {
        self.session_affinity = affinity;
        self
    }
}

/// One validated service port with its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    /// Port name; may be empty for a single-port service.
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Port on the cluster IP, external and LoadBalancer addresses.
    pub port: u16,
    /// Target port as configured (shown in the admin API).
    pub target_port: TargetPort,
    /// Node port, when the service type has node ports.
    pub node_port: Option<u16>,
    /// `appProtocol` as configured: lb forwards bytes whatever it says, and
    /// shows it in the admin API so an operator sees what the object said.
    pub app_protocol: Option<String>,
    /// Resolved endpoints (the endpoints controller's output).
    pub endpoints: Vec<EndpointSpec>,
}

impl PortSpec {
    /// A TCP port whose target is the same number, with no endpoints yet.
    pub fn tcp(name: &str, port: u16) -> Self {
        PortSpec {
            name: name.into(),
            protocol: Protocol::Tcp,
            port,
            target_port: TargetPort::Number(port),
            node_port: None,
            app_protocol: None,
            endpoints: Vec::new(),
        }
    }

    /// Adds an endpoint (builder style).
    pub fn with_endpoint(mut self, endpoint: EndpointSpec) -> Self {
        self.endpoints.push(endpoint);
        self
    }
}

/// One endpoint of a service port, with its EndpointSlice conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Where connections go.
    pub addr: SocketAddr,
    /// Node the endpoint runs on, when known (Local traffic policies).
    pub node: Option<String>,
    /// Relative share of new connections; 0 drains it.
    pub weight: u32,
    /// EndpointSlice `ready` as the source states it (the `[[endpoints]]`
    /// list an address is in, a slice's condition); `None`: serving and not
    /// terminating, as the EndpointSlice controller derives it for a pod.
    /// kube-proxy takes a stated `ready` as it is, so a slice may keep a
    /// terminating endpoint ready (as it does under
    /// `publishNotReadyAddresses`).
    pub ready: Option<bool>,
    /// The probe passes (or, without a probe, the static readiness).
    pub serving: bool,
    /// The pod is shutting down.
    pub terminating: bool,
    /// Pod name, when the endpoint came from a pod (for views and DNS).
    pub pod: Option<String>,
    /// Pod hostname, for DNS of headless services.
    pub hostname: Option<String>,
    /// EndpointSlice `zone`: the zone the endpoint runs in, when known.
    pub zone: Option<String>,
    /// EndpointSlice `hints` as the source states them; empty when it
    /// states none (a service's `trafficDistribution` then derives them).
    pub hints: EndpointHints,
}

/// EndpointSlice `hints`: where kube-proxy should send this endpoint's
/// traffic from. Empty lists mean no hint, as `nil` and `[]` do in
/// Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointHints {
    /// `forZones[].name`: zones whose nodes should use this endpoint.
    pub for_zones: Vec<String>,
    /// `forNodes[].name`: nodes that should use this endpoint.
    pub for_nodes: Vec<String>,
}

impl EndpointHints {
    /// Whether no hint is stated.
    pub fn is_empty(&self) -> bool {
        self.for_zones.is_empty() && self.for_nodes.is_empty()
    }
}

impl EndpointSpec {
    /// A serving, non-terminating endpoint of weight 1 on no particular node.
    pub fn new(addr: SocketAddr) -> Self {
        EndpointSpec {
            addr,
            node: None,
            weight: 1,
            ready: None,
            serving: true,
            terminating: false,
            pod: None,
            hostname: None,
            zone: None,
            hints: EndpointHints::default(),
        }
    }

    /// Sets the weight (builder style).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the zone (builder style).
    pub fn with_zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_string());
        self
    }
}
