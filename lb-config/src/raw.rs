//! The file as written: serde structs mirroring the TOML tables one to one,
//! before any validation. Their doc comments are the file's reference:
//! `docs/configuration.md` and the JSON Schema (`docs/lb.schema.json`) are
//! generated from them.
//!
//! Every struct denies unknown fields (a typo is an error, never a silently
//! ignored setting). Numbers are `i64` and addresses, durations and enums are
//! strings here, so that a value out of range or misspelt gets a Kubernetes-style
//! validation error with its path instead of a serde type error. Field names
//! mirror the Kubernetes API (Service, Endpoints, Pod) in snake_case.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod endpoints;
mod pod;

pub use endpoints::{RawEndpointAddress, RawEndpointPort, RawEndpointSubset, RawEndpoints};
pub use pod::{
    RawContainerPort, RawExecAction, RawHttpGetAction, RawPod, RawProbe, RawTcpSocketAction,
};

/// Most `node.addresses`: each node port binds once per address, so the
/// list multiplies every node port's listeners; a node has a handful.
pub const MAX_NODE_ADDRESSES: usize = 64;

/// Most `node.allowed_external_cidrs`: each external and LoadBalancer
/// address is checked against the list, at every load.
pub const MAX_ALLOWED_EXTERNAL_CIDRS: usize = 256;

/// Most `proxy.connect_timeouts_ms` entries: one dial per entry, each to the
/// next endpoint, so the list bounds how long and how many endpoints one
/// client connection may try (16 dials is far past any useful failover).
pub const MAX_CONNECT_TIMEOUTS: usize = 16;

/// Most `admin.allowed_hosts`: every admin request's `Host` is compared
/// with the list.
pub const MAX_ALLOWED_HOSTS: usize = 64;

/// Most `dns.upstreams`: CoreDNS's `forward` plugin's limit (15), the role
/// lb's responder plays.
pub const MAX_DNS_UPSTREAMS: usize = 15;

/// Most ports of one service: Kubernetes' bound on an EndpointSlice's ports
/// (100), which carries every port of a service (a Service with more has no
/// endpoints in Kubernetes).
pub const MAX_SERVICE_PORTS: usize = 100;

/// Most `external_ips` of one service: each opens a listener per port.
pub const MAX_EXTERNAL_IPS: usize = 64;

/// Most `load_balancer_source_ranges` of one service: every client of a
/// LoadBalancer address is checked against them.
pub const MAX_SOURCE_RANGES: usize = 256;

/// Most `for_zones` (and `for_nodes`) hints of one endpoint address:
/// Kubernetes' bound on an EndpointSlice endpoint's `hints.forZones` (8).
pub const MAX_ZONE_HINTS: usize = 8;

/// Most `addresses` (ranges or CIDRs) of one `[[ip_pools]]` entry: each is
/// compared with every other pool's for overlaps at every load.
pub const MAX_POOL_ADDRESSES: usize = 256;

/// The whole file. An empty file is valid: every section has defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[node]`: who this proxy is.
    pub node: RawNode,
    /// `[cluster]`: allocation ranges and DNS zone.
    pub cluster: RawCluster,
    /// `[proxy]`: data-plane settings.
    pub proxy: RawProxy,
    /// `[admin]`: the admin API listener.
    pub admin: RawAdmin,
    /// `[log]`: what lb-proxy writes to its log besides its own events.
    pub log: RawLog,
    /// `[dns]`: the optional cluster DNS responder.
    pub dns: Option<RawDns>,
    /// `[[ip_pools]]`: LoadBalancer address pools.
    pub ip_pools: Vec<Arc<RawIpPool>>,
    /// `[[pods]]`: backend instances.
    pub pods: Vec<Arc<RawPod>>,
    /// `[[services]]`: the services to proxy.
    pub services: Vec<Arc<RawService>>,
    /// `[[endpoints]]`: manual endpoints of selector-less services.
    pub endpoints: Vec<Arc<RawEndpoints>>,
    /// `[source]`: other sources of objects (etcd) and what the manifests may hold.
    pub source: Option<RawSource>,
}

/// `[node]`: kube-proxy's node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawNode {
    /// Node name; default: the hostname.
    pub name: Option<String>,
    /// Addresses where node ports (and health-check node ports) listen;
    /// default `["0.0.0.0"]`. At most [`MAX_NODE_ADDRESSES`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_NODE_ADDRESSES)))]
    pub addresses: Option<Vec<String>>,
    /// CIDRs that external IPs and LoadBalancer addresses must lie in, from
    /// every source (this file, manifests, etcd), e.g.
    /// `["127.0.122.0/24"]`; default empty: anywhere, as in Kubernetes. A
    /// service's `external_ips` and its `load_balancer_ip` (or MetalLB's
    /// `loadBalancerIPs` annotation) outside them are refused on their field,
    /// and so is an `[[ip_pools]]` address range not wholly inside them, so
    /// no pool can hand out an address outside. Whoever can write etcd or a
    /// manifest can otherwise make lb listen on any local address (the shape
    /// of CVE-2020-8554); the admin, DNS and health-check addresses are
    /// refused to every service whatever this says. At most
    /// [`MAX_ALLOWED_EXTERNAL_CIDRS`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_ALLOWED_EXTERNAL_CIDRS)))]
    pub allowed_external_cidrs: Option<Vec<String>>,
    /// `bind` (default), `freebind` or `interface`.
    pub vip_mode: Option<String>,
    /// Interface mode: where VIPs are added.
    pub vip_interface: Option<String>,
    /// Interface mode: where LoadBalancer addresses are announced.
    pub announce_interface: Option<String>,
    /// Which LoadBalancer services this node gives pool addresses to, as
    /// MetalLB's `--lb-class`: omitted (the default), services without a
    /// `load_balancer_class`; set (a qualified name such as
    /// `example.com/lb`), only services with that class. The others are
    /// left `<pending>` (their cluster IP and node ports still serve) with
    /// a reason in [`crate::Config::pending_addresses`].
    pub load_balancer_class: Option<String>,
    /// Which services this proxy serves, by their
    /// `service.kubernetes.io/service-proxy-name` label: omitted or `""`
    /// (the default), those without the label, as kube-proxy; set, only
    /// those whose label has this value (as an alternative proxy does).
    /// Services labelled `service.kubernetes.io/headless` are never served
    /// (kube-proxy's informers skip them). A service that is not ours gets
    /// no listener and no table entry; its cluster IP and node ports stay
    /// allocated to it (see [`crate::Config::not_proxied`]).
    pub service_proxy_name: Option<String>,
    /// This node's zone (its `topology.kubernetes.io/zone` label, a label
    /// value), e.g. `"zone-a"`; default none. Services with
    /// `traffic_distribution` and endpoints with `for_zones` hints prefer
    /// endpoints of this zone for cluster traffic; without a zone no zone
    /// preference applies. Pods on this node are in this zone unless they
    /// say otherwise.
    pub zone: Option<String>,
}

/// `[cluster]`: the ranges cluster IPs and node ports are allocated from
/// (kube-apiserver's `--service-cluster-ip-range` and
/// `--service-node-port-range`) and the DNS zone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// ClusterIP allocation range; default `10.96.0.0/12`.
    pub service_cidr: Option<String>,
    /// Node port range `FIRST-LAST`; default `30000-32767`.
    pub node_port_range: Option<String>,
    /// DNS zone; default `cluster.local`.
    pub domain: Option<String>,
    /// Where dynamic allocation starts (default 0). Cluster IPs and node
    /// ports that are not requested are picked as Kubernetes picks them: at
    /// random from the upper part of the range first, keeping the lower part
    /// (min(max(16, size/16), 256) addresses, min(max(16, size/32), 128)
    /// ports) for explicit requests. lb's "random" is a hash of the service's
    /// `namespace/name` (and port) with this seed, so a restart without a
    /// state file gives the same values to the same services; nodes that
    /// share a config and seed agree. Change it to shuffle where services
    /// land; running services keep what they hold either way.
    pub allocation_seed: Option<u64>,
}

/// `[proxy]`: data-plane settings. Durations are strings such as
/// `"250ms"`, `"30s"`, `"1h"`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    /// One dial per entry (milliseconds), each to the next endpoint. At most
    /// [`MAX_CONNECT_TIMEOUTS`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_CONNECT_TIMEOUTS)))]
    pub connect_timeouts_ms: Option<Vec<i64>>,
    /// Idle timeout of a TCP connection (nothing moved either way; both
    /// legs then get a FIN); `"0"` = none.
    pub tcp_idle_timeout: Option<String>,
    /// After one side sends FIN, how long the direction still open may go
    /// without moving a byte before lb resets both legs (default `60s`).
    /// Counted from the FIN or that direction's last byte, whichever is
    /// later: a client that half-closes its request and downloads for an
    /// hour is never cut while the download moves.
    pub half_close_timeout: Option<String>,
    /// Idle timeout of a UDP flow (no datagram either way): the flow and
    /// its socket to the endpoint are dropped, and the client's next
    /// datagram starts a new flow (it may pick another endpoint).
    pub udp_idle_timeout: Option<String>,
    /// How long connections may drain at shutdown or endpoint removal;
    /// those still open then are reset on both legs (a cut, not an EOF).
    pub drain_timeout: Option<String>,
    /// Open connections per service port; 0 = unlimited.
    pub max_connections: Option<i64>,
    /// Dial failures in a row that eject an endpoint; 0 = off.
    pub outlier_consecutive_failures: Option<i64>,
    /// How long an endpoint stays ejected the first time
    /// `outlier_consecutive_failures` eject it; each ejection in a row
    /// doubles it.
    pub outlier_base_ejection: Option<String>,
    /// UDP flows, all services together; also bounds the flows' open
    /// sockets (a flow's socket closes when it is evicted).
    pub udp_max_flows: Option<i64>,
    /// `auto`, `splice` or `copy`: how TCP payload moves; default `auto`.
    pub forward_engine: Option<String>,
    /// `single`, `reuseport` or `percore`: how TCP frontends accept; default
    /// `single`.
    pub accept_mode: Option<String>,
    /// Worker threads of `accept_mode = "percore"`; 0 (the default) = one per
    /// CPU.
    pub workers: Option<i64>,
    /// The sources (CIDRs, e.g. `["127.0.90.0/24"]`) allowed to send a PROXY
    /// header to services with `accept_proxy_protocol`: the load balancers
    /// in front of lb. Default none: every such connection is reset.
    pub proxy_protocol_trusted_cidrs: Option<Vec<String>>,
    /// `"proxy"` (default) or `"client"`: where endpoints are dialed from
    /// for services that do not set `source_address`.
    pub source_address: Option<String>,
}

/// `[admin]`: the admin API (`/healthz`, `/metrics`, `/api/v1/...`, the
/// status page). Its connections have fixed bounds, not settings: a request
/// head within 10 s, 60 s idle between requests, 256 connections at once
/// (README, "The admin API").
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// `IP:PORT` of the admin API; `""` disables it; default `127.0.0.1:10249`.
    /// No service frontend, health-check node port or `dns.listen` may take
    /// it (`check` refuses the clash; port 0, an ephemeral port, never
    /// clashes).
    pub listen: Option<String>,
    /// Host headers accepted besides IP literals and localhost: host names
    /// (DNS-1123 subdomains, lowercase, no port; any port is accepted with
    /// them), e.g. `["lb.node-1.example"]`; default none. Any other `Host`
    /// is answered 421 without running the request, so that a web page
    /// whose name an attacker re-points at the admin address (DNS
    /// rebinding) cannot read the API from a browser. Takes effect at the
    /// next restart. At most [`MAX_ALLOWED_HOSTS`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_ALLOWED_HOSTS)))]
    pub allowed_hosts: Option<Vec<String>>,
}

/// `[log]`: what lb-proxy logs besides its own events.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// One line per forwarded connection when it ends (client, frontend,
    /// endpoint, pick reason, bytes each way, duration, close cause), as
    /// nginx's stream module and HAProxy log them, in the format of
    /// `--log-format`; default `false` (off, as in nginx stream and HAProxy:
    /// a busy proxy writes a line per connection).
    pub access: Option<bool>,
}

/// `[dns]`: the cluster DNS responder.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["listen"])))]
pub struct RawDns {
    /// `IP:PORT` to answer on, over UDP and TCP. It must not be
    /// `admin.listen`, a service frontend or a health-check node port of the
    /// same port and protocol (on a `0.0.0.0`/`::` address, at any address
    /// of that port).
    pub listen: Option<String>,
    /// TTL of the answers for the cluster zone, seconds (CoreDNS's
    /// `kubernetes` plugin default, short because endpoints come and go).
    pub ttl: Option<i64>,
    /// Where names outside the cluster zone go (`IP`, port 53, or
    /// `IP:PORT`), tried in order; none: such questions are answered
    /// REFUSED. At most [`MAX_DNS_UPSTREAMS`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_DNS_UPSTREAMS)))]
    pub upstreams: Option<Vec<String>>,
}

/// `[[ip_pools]]`: a MetalLB-style IPAddressPool.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["name"])))]
pub struct RawIpPool {
    /// Pool name (DNS-1123 subdomain).
    pub name: String,
    /// Ranges `A-B` or CIDRs; each wholly inside
    /// `node.allowed_external_cidrs` when that is set. At most
    /// [`MAX_POOL_ADDRESSES`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_POOL_ADDRESSES)))]
    pub addresses: Vec<String>,
    /// Whether services without `ip_pool` may take addresses from it;
    /// default true (MetalLB's `autoAssign`).
    pub auto_assign: Option<bool>,
}

/// `[[services]]`: a Kubernetes Service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["name"])))]
pub struct RawService {
    /// Service name (DNS-1035 label).
    pub name: String,
    /// Namespace; default `default`.
    pub namespace: Option<String>,
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// Omitted: allocated; `"None"`: headless; else an address in `service_cidr`.
    pub cluster_ip: Option<String>,
    /// Kubernetes' `clusterIPs`: when given with `cluster_ip`, its first
    /// value must be `cluster_ip` (`first value must match `clusterIP``);
    /// given alone, its first value is the cluster IP. Only the first address
    /// is served (one IP family); more are accepted with a warning.
    pub cluster_ips: Option<Vec<String>>,
    /// Pod labels to match; omitted or empty: endpoints come from `[[endpoints]]`.
    pub selector: Option<BTreeMap<String, String>>,
    /// `None` (default) or `ClientIP`.
    pub session_affinity: Option<String>,
    /// ClientIP timeout; only with `session_affinity = "ClientIP"` (with
    /// `None`, the default, it is `Forbidden`, as in Kubernetes).
    pub session_affinity_config: Option<RawSessionAffinityConfig>,
    /// `Cluster` (default) or `Local`.
    pub external_traffic_policy: Option<String>,
    /// `Cluster` (default) or `Local`.
    pub internal_traffic_policy: Option<String>,
    /// More addresses the ports listen on; each inside
    /// `node.allowed_external_cidrs` when that is set. At most
    /// [`MAX_EXTERNAL_IPS`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_EXTERNAL_IPS)))]
    pub external_ips: Option<Vec<String>>,
    /// LoadBalancer: requested address (inside `node.allowed_external_cidrs`
    /// when that is set). Outside every `ip_pool`, taken, or outside the
    /// named `ip_pool`, it leaves this service `<pending>` with MetalLB's
    /// reason (see [`crate::Config::pending_addresses`]), not the file
    /// refused.
    pub load_balancer_ip: Option<String>,
    /// LoadBalancer: allowed client CIDRs. At most
    /// [`MAX_SOURCE_RANGES`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_SOURCE_RANGES)))]
    pub load_balancer_source_ranges: Option<Vec<String>>,
    /// LoadBalancer: which pool (MetalLB's `metallb.io/address-pool`); an
    /// unknown or full pool leaves the service `<pending>`.
    pub ip_pool: Option<String>,
    /// LoadBalancer: sharing key (MetalLB's `allow-shared-ip`): services
    /// with the same key may share one address when their ports do not clash.
    pub allow_shared_ip: Option<String>,
    /// LoadBalancer: whether node ports are allocated too (default true).
    /// Set on another type, either value is `Forbidden`, as in Kubernetes.
    pub allocate_load_balancer_node_ports: Option<bool>,
    /// LoadBalancer with `external_traffic_policy = "Local"`: the node port
    /// that answers whether this node has a local endpoint (for the
    /// external load balancer's health checks); omitted or 0 = allocated.
    pub health_check_node_port: Option<i64>,
    /// Not-ready endpoints count as ready (DNS of headless services, as
    /// in Kubernetes); default false.
    pub publish_not_ready_addresses: Option<bool>,
    /// ExternalName target (DNS-1123 subdomain). On another type it is
    /// ignored with Kubernetes' warning.
    pub external_name: Option<String>,
    /// `PreferClose` or `PreferSameZone`: cluster traffic goes to ready
    /// endpoints in `node.zone` when there is one, else to all;
    /// `PreferSameNode`: to ready endpoints on this node, else in its zone,
    /// else all. As kube-proxy reads the hints the EndpointSlice controller
    /// derives from it: when any ready endpoint has no zone (no node zone
    /// for it), there is no zone preference. Local traffic policies win.
    /// Default none: every ready endpoint.
    pub traffic_distribution: Option<String>,
    /// `[[services.ports]]`. At most [`MAX_SERVICE_PORTS`].
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_SERVICE_PORTS)))]
    pub ports: Vec<RawServicePort>,
    /// The service's labels (`metadata.labels`), validated as Kubernetes
    /// labels. lb reads `service.kubernetes.io/service-proxy-name` (served
    /// only when it matches `[node] service_proxy_name`) and
    /// `service.kubernetes.io/headless` (never served), as kube-proxy does.
    pub labels: Option<BTreeMap<String, String>>,
    /// LoadBalancer only (`Forbidden` on other types): the load balancer
    /// implementation that should give it an address, a qualified name
    /// (`example.com/lb`). When it is not `[node] load_balancer_class`
    /// the service gets no pool address (`<pending>`) but its cluster IP
    /// and node ports serve, as with kube-proxy plus another controller.
    pub load_balancer_class: Option<String>,
    /// `"v1"` or `"v2"`: every connection to an endpoint starts with a
    /// PROXY protocol header (haproxy.org's proxy-protocol.txt) carrying
    /// the client's address and port and the frontend address and port it
    /// connected to, as HAProxy's `send-proxy` / `send-proxy-v2` and nginx
    /// stream's `proxy_protocol on` send it. On UDP ports (v2 only) each
    /// datagram to the endpoint starts with one; the backend must expect
    /// it. Health probes never send one. Omitted or `""`: none.
    /// Manifests: the annotation `lb-proxy/proxy-protocol`.
    pub proxy_protocol: Option<String>,
    /// Every TCP connection to the service's frontends must start with a
    /// PROXY protocol header, v1 or v2 (both detected), as from a load
    /// balancer in front of lb (HAProxy's `accept-proxy`, nginx's `listen
    /// ... proxy_protocol`), sent from an address in `[proxy]
    /// proxy_protocol_trusted_cidrs`, within 3 s. The header's client
    /// address is then the client's for everything: ClientIP affinity,
    /// `load_balancer_source_ranges`, the header `proxy_protocol` sends on,
    /// logs, `/api/v1/connections`. A `LOCAL` header (the balancer's health
    /// check) is served with the connection's own addresses. A connection
    /// without a valid header, or from an untrusted source, is reset and
    /// counted (`lb_rejected_connections_total{reason="proxy_protocol"}`).
    /// UDP ports are not affected. Default false. Manifests: the annotation
    /// `lb-proxy/accept-proxy-protocol: "true"`.
    pub accept_proxy_protocol: Option<bool>,
    /// `"proxy"` or `"client"`: where lb dials the endpoints from. `client`
    /// makes lb a transparent proxy (HAProxy's `usesrc clientip`): each
    /// connection to an endpoint leaves from the client's address
    /// (`IP_TRANSPARENT`), so the endpoint sees the client with no header.
    /// It needs `CAP_NET_ADMIN` (`lb-proxy check` says when it is missing;
    /// at run time a refused bind resets the client with an error line,
    /// never a silent dial from lb's own address) and a route that brings
    /// the endpoints' replies back through lb (README, "Transparent
    /// source"). TCP only. Omitted: `[proxy] source_address`.
    pub source_address: Option<String>,
}

/// `session_affinity_config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawSessionAffinityConfig {
    /// `client_ip = { timeout_seconds = N }`.
    pub client_ip: Option<RawClientIpConfig>,
}

/// `session_affinity_config.client_ip`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawClientIpConfig {
    /// Sliding affinity timeout, 1..=86400 seconds; default 10800.
    pub timeout_seconds: Option<i64>,
}

/// `[[services.ports]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["port"])))]
pub struct RawServicePort {
    /// Port name; required when the service has more than one port.
    pub name: Option<String>,
    /// `TCP` (default) or `UDP`.
    pub protocol: Option<String>,
    /// Port on the cluster IP (and on external and LoadBalancer
    /// addresses), 1-65535.
    pub port: i64,
    /// Number or pod port name; default = `port`.
    pub target_port: Option<IntOrString>,
    /// NodePort/LoadBalancer: omitted or 0: allocated.
    pub node_port: Option<i64>,
    /// Kubernetes' `appProtocol` (e.g. `"kubernetes.io/h2c"`, `"http"`): a
    /// qualified name, as Kubernetes validates it. lb moves bytes whatever it
    /// says; it is shown in the admin API's service view.
    pub app_protocol: Option<String>,
}

/// `[source]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawSource {
    /// `[source.etcd]`.
    pub etcd: Option<RawEtcd>,
    /// `[source.manifests]`: what the manifests (`--manifests`) may hold.
    pub manifests: Option<RawManifests>,
}

/// `[source.manifests]`: settings of the manifests source. Its path is the
/// `--manifests` flag; this table only says what the manifests may hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawManifests {
    /// Accept `exec` readiness probes from the manifests; default false: a
    /// Pod with one is a `Forbidden` error naming its file, document and
    /// object, as at `check`. An exec probe runs its command on this node as
    /// lb-proxy's user (often root), and manifests are often written by
    /// someone else (copied from a cluster, generated), so running their
    /// commands is the operator's explicit choice. Exec probes written in the
    /// TOML file itself are always accepted. Read at every load (a reload
    /// applies a change).
    pub allow_exec_probes: Option<bool>,
}

/// `[source.etcd]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["endpoints"])))]
pub struct RawEtcd {
    /// etcd client URLs (`http://` or `https://`), e.g.
    /// `["https://10.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix; default `/lb`.
    pub prefix: Option<String>,
    /// User name, when etcd has authentication enabled.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// CA bundle (PEM) that signs etcd's server certificate, for https
    /// endpoints; without it the public web roots are trusted.
    pub ca_file: Option<String>,
    /// Client certificate (PEM), when etcd checks clients
    /// (`--client-cert-auth`); with `key_file`.
    pub cert_file: Option<String>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<String>,
    /// Accept `exec` readiness probes from etcd; default false (they run
    /// commands as root on every node).
    pub allow_exec_probes: Option<bool>,
}

/// A number or a string, as Kubernetes' `IntOrString` (`target_port`, probe
/// `port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    /// A number (range-checked by validation).
    Int(i64),
    /// A name.
    Str(String),
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => s.serialize_i64(*n),
            IntOrString::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("port number out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number or a name, as Kubernetes' `IntOrString` schema says it: either
/// JSON type, nothing narrower (range and name syntax are validation's).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A port number (1-65535) or a port name (IANA_SVC_NAME, e.g. `http`).",
            "oneOf": [
                { "type": "integer" },
                { "type": "string" }
            ]
        })
    }
}
