//! The vocabulary shared by every crate: what a service port is called and
//! which Kubernetes modes it runs in.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Transport protocol of a service port. TCP and UDP ports are separate service
/// ports even when they share a number (DNS on 53/TCP and 53/UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// Stream sockets.
    Tcp,
    /// Datagram sockets.
    Udp,
}

impl Protocol {
    /// The spelling Kubernetes uses (`TCP`, `UDP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            _ => Err(()),
        }
    }
}

/// A service's identity: stable across reloads, so allocations, affinity and
/// counters can follow a service that keeps its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Kubernetes namespace (`default` when not given).
    pub namespace: String,
    /// Service name (a DNS-1035 label).
    pub name: String,
}

impl ServiceKey {
    /// Builds a key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One service port: the unit that owns endpoints, a selector, an affinity
/// table and counters. All frontends of the port (cluster IP, node ports,
/// external addresses) share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePortKey {
    /// The service.
    pub service: ServiceKey,
    /// Port name (may be empty when the service has a single port).
    pub port_name: String,
    /// Port protocol.
    pub protocol: Protocol,
    /// Port number on the cluster IP; part of the key because an unnamed port is
    /// known by its number.
    pub port: u16,
}

impl fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_name.is_empty() {
            write!(f, "{}:{}/{}", self.service, self.port, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.service, self.port_name, self.protocol)
        }
    }
}

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ServiceType {
    /// Reachable on its cluster IP only.
    #[default]
    ClusterIP,
    /// Also on every node address at its node port.
    NodePort,
    /// Also on a LoadBalancer address from a pool.
    LoadBalancer,
    /// A DNS alias: no proxying at all.
    ExternalName,
}

impl ServiceType {
    /// The spelling Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        }
    }

    /// Whether the type opens node ports (NodePort and LoadBalancer).
    pub fn has_node_ports(self) -> bool {
        matches!(self, ServiceType::NodePort | ServiceType::LoadBalancer)
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.sessionAffinity` with its timeout folded in, so that "ClientIP without a
/// timeout" cannot be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAffinity {
    /// Every new connection is balanced on its own.
    #[default]
    None,
    /// A client IP keeps its endpoint while the endpoint is ready and the client
    /// has been seen within `timeout` (sliding).
    ClientIp {
        /// Sliding timeout (`session_affinity_config.client_ip.timeout_seconds`).
        timeout: Duration,
    },
}

impl SessionAffinity {
    /// Kubernetes' default ClientIP timeout: three hours.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10_800);

    /// The spelling Kubernetes uses (`None`, `ClientIP`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAffinity::None => "None",
            SessionAffinity::ClientIp { .. } => "ClientIP",
        }
    }
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any endpoint in the cluster.
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

impl TrafficPolicy {
    /// The spelling Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        }
    }
}

/// `spec.trafficDistribution`: a preference for close endpoints, which
/// kube-proxy honours through EndpointSlice hints (the EndpointSlice
/// controller derives them from each endpoint's zone and node; see
/// [`crate::topology`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrafficDistribution {
    /// Endpoints in this node's zone first (the original spelling of
    /// `PreferSameZone`).
    PreferClose,
    /// Endpoints in this node's zone first.
    PreferSameZone,
    /// Endpoints on this node first, then in its zone.
    PreferSameNode,
}

impl TrafficDistribution {
    /// The spelling Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficDistribution::PreferClose => "PreferClose",
            TrafficDistribution::PreferSameZone => "PreferSameZone",
            TrafficDistribution::PreferSameNode => "PreferSameNode",
        }
    }
}

/// Which PROXY protocol header (haproxy.org's proxy-protocol.txt) lb sends
/// an endpoint at the start of each connection (and, for UDP, of each
/// datagram), so that the backend sees the client's address and the
/// frontend it connected to rather than the proxy's. HAProxy's
/// `send-proxy` / `send-proxy-v2`, nginx stream's `proxy_protocol on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProxyProtocol {
    /// The human-readable header (`PROXY TCP4 ...\r\n`); TCP only.
    V1,
    /// The binary header; TCP and UDP.
    V2,
}

impl ProxyProtocol {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

/// Which address lb dials endpoints from: its own (the default, as every
/// user-space proxy), or the client's (`"client"`: a transparent proxy, as
/// HAProxy's `source 0.0.0.0 usesrc clientip`), so that the endpoint sees
/// the client's address with no header. The second needs `CAP_NET_ADMIN`
/// and a route that brings the endpoint's replies back through lb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SourceAddress {
    /// lb's own address (the kernel's choice).
    #[default]
    Proxy,
    /// The client's address (`IP_TRANSPARENT`).
    Client,
}

impl SourceAddress {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceAddress::Proxy => "proxy",
            SourceAddress::Client => "client",
        }
    }
}
