//! The validated, allocated configuration that the proxy runs.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use ipnet::IpNet;
use lb_core::health::ProbeSpec;
use lb_core::{NodeSpec, ProxySettings, ServiceSpec};

/// How virtual addresses (cluster IPs) are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VipMode {
    /// Plain `bind(2)`: the addresses must already be local (e.g. loopback).
    #[default]
    Bind,
    /// `IP_FREEBIND`: bind addresses that are not (yet) local.
    Freebind,
    /// lb-proxy adds the addresses it serves to `vip_interface` itself (and
    /// removes them when their service goes), announcing LoadBalancer
    /// addresses on `announce_interface` (MetalLB's layer-2 mode). Listeners
    /// bind with `IP_FREEBIND`, so binding never races the address.
    Interface,
}

impl VipMode {
    /// The spelling of the file (`bind`, `freebind`, `interface`).
    pub fn as_str(self) -> &'static str {
        match self {
            VipMode::Bind => "bind",
            VipMode::Freebind => "freebind",
            VipMode::Interface => "interface",
        }
    }
}

/// `[cluster]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Where cluster IPs are allocated from.
    pub service_cidr: IpNet,
    /// Where node ports are allocated from (inclusive).
    pub node_port_range: RangeInclusive<u16>,
    /// DNS zone of the cluster (`cluster.local`).
    pub domain: String,
    /// Seed of the pseudo-random start of dynamic allocation
    /// (`[cluster] allocation_seed`), so that it is repeatable.
    pub allocation_seed: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            service_cidr: IpNet::V4(
                ipnet::Ipv4Net::new([10, 96, 0, 0].into(), 12).unwrap_or_default(),
            ),
            node_port_range: 30000..=32767,
            domain: "cluster.local".into(),
            allocation_seed: 0,
        }
    }
}

/// Default admin listener (kube-proxy's metrics port).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:10249";

/// `[dns]`, typed: the cluster DNS responder. Present only when the file has a
/// `[dns]` section, so a proxy that is not asked to answer DNS binds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Where the responder answers, on UDP and TCP alike (clients retry over
    /// TCP when a UDP answer is truncated).
    pub listen: SocketAddr,
    /// TTL of the answers for the cluster zone, seconds. Short by default
    /// ([`DnsSettings::DEFAULT_TTL`]) because endpoints come and go and
    /// clients cache what they are told.
    pub ttl: u32,
    /// Where names outside the cluster zone are forwarded, tried in order;
    /// empty means such queries are REFUSED rather than sent anywhere.
    pub upstreams: Vec<SocketAddr>,
}

impl DnsSettings {
    /// CoreDNS's `kubernetes` plugin default TTL.
    pub const DEFAULT_TTL: u32 = 5;
    /// The port an upstream given as a bare IP is asked on.
    pub const DEFAULT_UPSTREAM_PORT: u16 = 53;
}

impl Config {
    /// The dummy device interface mode creates, as kube-proxy's IPVS mode
    /// creates `kube-ipvs0`.
    pub const DEFAULT_VIP_INTERFACE: &'static str = "lb-vips0";
}

/// A whole validated config: what `check` approves and `run` serves.
/// `Default` is an empty table with every setting at its default and no
/// admin listener, for programs that fill in services in code.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// This node: name and node-port addresses.
    pub node: NodeSpec,
    /// How cluster IPs are bound.
    pub vip_mode: VipMode,
    /// Interface mode: where service addresses are added (default
    /// [`Config::DEFAULT_VIP_INTERFACE`], a dummy device created when missing).
    pub vip_interface: String,
    /// Interface mode: where LoadBalancer addresses are announced (gratuitous
    /// ARP); empty = not announced.
    pub announce_interface: String,
    /// Allocation ranges and DNS zone.
    pub cluster: ClusterSettings,
    /// Data-plane settings.
    pub proxy: ProxySettings,
    /// Admin API address; `None` when disabled with `listen = ""`.
    pub admin_listen: Option<SocketAddr>,
    /// `Host` headers the admin API accepts besides IP literals and
    /// `localhost` (`admin.allowed_hosts`): names under which operators reach
    /// it, the DNS-rebinding guard's exceptions.
    pub admin_allowed_hosts: Vec<String>,
    /// The DNS responder, when the file has a `[dns]` section.
    pub dns: Option<DnsSettings>,
    /// Services with cluster IPs and node ports allocated and endpoints resolved,
    /// in file order. Shared (`Arc`) with the snapshots built from them, so a
    /// service is held once, not once here and once in the table.
    pub services: Vec<Arc<ServiceSpec>>,
    /// Services that are not this proxy's (`selection`: labelled for
    /// another proxy through `service.kubernetes.io/service-proxy-name`,
    /// or `service.kubernetes.io/headless`), allocated and resolved like
    /// `services` but never served: no listener, not in the table. They
    /// keep their cluster IP and node ports, as the API server keeps them
    /// whoever proxies the service.
    pub not_proxied: Vec<ServiceSpec>,
    /// Readiness probes of the pods that have one, in file order. Their pods'
    /// endpoints are not serving in `services` until a probe passes: the
    /// probe results are an overlay applied by whoever runs the probes.
    pub probes: Vec<ProbeSpec>,
    /// Endpoint addresses given by DNS name (`{ host = ... }`); they are not
    /// in `services` until resolved: an overlay applied with
    /// [`crate::resolve::apply`] by whoever resolves them.
    pub host_endpoints: Vec<crate::resolve::HostEndpoint>,
    /// Things worth a look that do not make the file invalid (one line each).
    pub warnings: Vec<String>,
    /// LoadBalancer services left without an address, and why: what
    /// Kubernetes reports as the service's `AllocationFailed` event and
    /// kubectl as `<pending>`. The services are in `services` all the same
    /// (their cluster IP and node ports serve); one entry per pending
    /// service, in file order.
    pub pending_addresses: Vec<PendingAddress>,
    /// Each service's selector, for `lb-proxy describe service` (Kubernetes
    /// shows it; the endpoints it chose are already in `services`). Services
    /// without a selector are absent.
    pub selectors:
        std::collections::BTreeMap<lb_core::ServiceKey, std::collections::BTreeMap<String, String>>,
    /// Each service's labels (`labels`, a manifest's `metadata.labels`), for
    /// `lb-proxy describe service` and `/api/v1/services` (Kubernetes shows
    /// them; lb reads only the proxy-name and headless ones). Services
    /// without labels are absent.
    pub labels:
        std::collections::BTreeMap<lb_core::ServiceKey, std::collections::BTreeMap<String, String>>,
    /// The pods of the file and the manifests, in file order, as declared:
    /// for `/api/v1/pods` (`lb-proxy get pods`), which shows them with the
    /// readiness their probes decide. Their endpoints are already in
    /// `services`.
    pub pods: Vec<PodObject>,
}

/// A pod as declared (`[[pods]]`, a manifest's Pod), kept so the operator
/// can list the pods lb knows and see the readiness lb gives them; the
/// endpoints controller has already turned them into endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodObject {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The pod's address.
    pub ip: std::net::IpAddr,
    /// The node it runs on, empty when not said.
    pub node: String,
    /// `metadata.labels`, what service selectors and `get -l` read.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Ready as declared (`ready`, a manifest's `Ready` condition); a pod
    /// with a readiness probe is ready when its probe says so instead.
    pub ready: bool,
    /// Being deleted (`terminating`, a manifest's `deletionTimestamp`).
    pub terminating: bool,
    /// Whether a readiness probe decides its readiness.
    pub probed: bool,
}

/// A LoadBalancer service that got no address at this load. Not an error:
/// MetalLB leaves such a service pending and keeps going, and so does lb.
/// Whoever reports status (the admin API's conditions and events) reads it
/// here rather than parsing logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAddress {
    /// The service.
    pub key: lb_core::ServiceKey,
    /// Kubernetes' event reason: always `AllocationFailed` (MetalLB's).
    pub reason: &'static str,
    /// MetalLB's event message: `Failed to allocate IP for "NS/NAME": WHY`.
    pub message: String,
}

impl PendingAddress {
    /// The event reason MetalLB gives a service it could not give an address.
    pub const ALLOCATION_FAILED: &'static str = "AllocationFailed";

    /// A pending address for `key`, because of `why` (lb-core's words).
    pub fn new(key: lb_core::ServiceKey, why: &str) -> PendingAddress {
        let message = format!(
            "Failed to allocate IP for \"{}/{}\": {why}",
            key.namespace, key.name
        );
        PendingAddress {
            key,
            reason: Self::ALLOCATION_FAILED,
            message,
        }
    }
}
