//! `[[endpoints]]`, the manual endpoints of selector-less services, as
//! written.

#[allow(unused_imports)] // what the derives and doc links of the types below use
use super::*;

/// `[[endpoints]]`: manual endpoints of a selector-less service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["name"])))]
pub struct RawEndpoints {
    /// Same name as the service.
    pub name: String,
    /// Same namespace as the service; default `default`.
    pub namespace: Option<String>,
    /// `[[endpoints.subsets]]`.
    pub subsets: Vec<RawEndpointSubset>,
}

/// One subset: addresses crossed with ports. It needs at least one address
/// (`addresses` or `not_ready_addresses`), as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawEndpointSubset {
    /// Ready addresses: EndpointSlice `ready = true`.
    pub addresses: Vec<RawEndpointAddress>,
    /// Not-ready addresses: `ready = false` (and, unless they say otherwise,
    /// not serving).
    pub not_ready_addresses: Vec<RawEndpointAddress>,
    /// Ports; each serves the service port of the same name.
    pub ports: Vec<RawEndpointPort>,
}

/// One endpoint address.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RawEndpointAddress {
    /// Address where connections to it go; either `ip` or `host`.
    pub ip: Option<String>,
    /// A DNS name instead of an address, re-resolved at its TTL.
    pub host: Option<String>,
    /// Hostname, for DNS of headless services.
    pub hostname: Option<String>,
    /// Node it runs on (no default).
    pub node_name: Option<String>,
    /// EndpointSlice `zone`: the zone it runs in (a label value; no default).
    pub zone: Option<String>,
    /// EndpointSlice `hints.forZones`: the zones whose nodes should send it
    /// cluster traffic, e.g. `["zone-a"]` (at most 8). Honoured as kube-proxy
    /// does: only when every ready endpoint of the port has zone hints and
    /// one names `node.zone`; otherwise every hint of the port is ignored.
    /// When no address states hints, the service's `traffic_distribution`
    /// derives them from `zone`.
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_ZONE_HINTS)))]
    pub for_zones: Option<Vec<String>>,
    /// EndpointSlice `hints.forNodes`: the nodes that should send it
    /// cluster traffic (at most 8), honoured like `for_zones` (every ready
    /// endpoint has them and one names this node), before zone hints.
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_ZONE_HINTS)))]
    pub for_nodes: Option<Vec<String>>,
    /// Relative share of new connections; default 1, 0 = drain.
    pub weight: Option<i64>,
    /// EndpointSlice `serving`: the address can take connections; default
    /// true in `addresses`, false in `not_ready_addresses`. Which list an
    /// address is in is its `ready`.
    pub serving: Option<bool>,
    /// EndpointSlice `terminating`: the address is shutting down; default
    /// false. As in kube-proxy, a not-ready address that is `serving` and
    /// `terminating` takes new connections only while the port has no ready
    /// endpoint (the terminating fallback), e.g.
    /// `not_ready_addresses = [{ ip = "10.0.0.5", serving = true,
    /// terminating = true }]`; a ready address stays ready whatever this says.
    pub terminating: Option<bool>,
}

/// One endpoint port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "schema", schemars(extend("required" = ["port"])))]
pub struct RawEndpointPort {
    /// Must equal the service port's name to serve it.
    pub name: Option<String>,
    /// Port number on the addresses.
    pub port: i64,
    /// `TCP` (default) or `UDP`.
    pub protocol: Option<String>,
}
