//! `[[pods]]` and `[[endpoints]]` validation into the typed objects the
//! endpoints controller reads.

use std::collections::BTreeMap;

use crate::hash::{HashSet, HashSetExt};
use std::net::IpAddr;
use std::sync::Arc;

use std::time::Duration;

use lb_core::health::{PodKey, ProbeAction, ProbeSpec};
use lb_core::{EndpointHints, NodeSpec, Protocol};

use super::fields::{labels, protocol};
use super::{names, settings::ip};
use crate::error::{object_path, At, Errors, FieldError};
use crate::raw::{IntOrString, RawEndpointAddress, RawEndpoints, RawPod, RawProbe};

/// A valid pod.
#[derive(Debug, Clone)]
pub(crate) struct Pod {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) ip: IpAddr,
    pub(crate) node: String,
    /// Its zone: as written, else this node's when it runs on this node.
    pub(crate) zone: Option<String>,
    pub(crate) hostname: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    /// Container ports: name (may be empty), number, protocol.
    pub(crate) ports: Vec<(String, u16, Protocol)>,
    pub(crate) weight: u32,
    pub(crate) ready: bool,
    pub(crate) terminating: bool,
    /// The readiness probe; when set, `ready` is ignored and the pod starts
    /// not ready until the probe passes.
    pub(crate) probe: Option<ProbeSpec>,
}

/// One `[[endpoints]]` object of a load: validated now, or, when it is the
/// very object the last good load validated, validated again only if a
/// service that is not carried over needs its addresses (see
/// [`crate::carry`]): 10,000 unchanged objects then cost nothing.
#[derive(Debug)]
pub(crate) struct ManualEndpoints {
    pub(crate) raw: Arc<RawEndpoints>,
    /// Its position among the `[[endpoints]]` (an unnamed object's path).
    index: usize,
    validated: std::cell::OnceCell<Option<Endpoints>>,
}

impl ManualEndpoints {
    /// `raw`, validated without error (`valid`), or not validated yet.
    pub(crate) fn new(raw: Arc<RawEndpoints>, index: usize, valid: Option<Endpoints>) -> Self {
        let validated = std::cell::OnceCell::new();
        if let Some(v) = valid {
            let _ = validated.set(Some(v));
        }
        ManualEndpoints {
            raw,
            index,
            validated,
        }
    }

    /// The namespace (`default` when unset) and name.
    pub(crate) fn id(&self) -> (&str, &str) {
        (
            self.raw.namespace.as_deref().unwrap_or("default"),
            &self.raw.name,
        )
    }

    /// The validated object. One deferred validates as it did at the last
    /// good load: without error (`None` would only follow a change to the
    /// rules within one process).
    pub(crate) fn get(&self) -> Option<&Endpoints> {
        self.validated
            .get_or_init(|| endpoints(&self.raw, self.index, &mut Errors::default()))
            .as_ref()
    }
}

/// A valid `[[endpoints]]` object.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) subsets: Vec<Subset>,
}

/// One subset of an Endpoints object.
#[derive(Debug, Clone)]
pub(crate) struct Subset {
    pub(crate) addresses: Vec<Address>,
    pub(crate) not_ready: Vec<Address>,
    /// Addresses by DNS name (`host`), ready or not, resolved later.
    pub(crate) hosts: Vec<HostAddress>,
    /// Ports: name (may be empty), number, protocol.
    pub(crate) ports: Vec<(String, u16, Protocol)>,
}

/// One endpoint address.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    /// Its position in the file's list (`addresses[INDEX]`), which host-name
    /// entries share: errors found after validation name it by this.
    pub(crate) index: usize,
    pub(crate) ip: IpAddr,
    pub(crate) hostname: Option<String>,
    pub(crate) node_name: Option<String>,
    pub(crate) weight: u32,
    pub(crate) conditions: Conditions,
    pub(crate) zone: Option<String>,
    pub(crate) hints: EndpointHints,
}

/// An address's EndpointSlice conditions: `ready` from the list it is in,
/// `serving` and `terminating` as written (defaults by list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conditions {
    pub(crate) ready: bool,
    pub(crate) serving: bool,
    pub(crate) terminating: bool,
}

/// One endpoint address given by DNS name.
#[derive(Debug, Clone)]
pub(crate) struct HostAddress {
    /// Lower-case, without a trailing dot.
    pub(crate) host: String,
    pub(crate) conditions: Conditions,
    pub(crate) hostname: Option<String>,
    pub(crate) node_name: Option<String>,
    pub(crate) weight: u32,
    pub(crate) zone: Option<String>,
    pub(crate) hints: EndpointHints,
}

/// Validates the object's name and namespace; returns (namespace, path).
fn meta(
    kind: &str,
    name: &str,
    namespace: &Option<String>,
    index: usize,
    errs: &mut Errors,
) -> (String, String) {
    let namespace = namespace.clone().unwrap_or_else(|| "default".into());
    let path = object_path(kind, &namespace, name, index);
    if name.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.name"),
            "name is required",
        ));
    } else {
        for m in names::dns1123_subdomain(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, m));
        }
    }
    for m in names::dns1123_label(&namespace) {
        errs.push(FieldError::invalid(
            format!("{path}.namespace"),
            &namespace,
            m,
        ));
    }
    (namespace, path)
}

/// A weight: 0 (drain) up to `u32::MAX`, default 1.
fn weight(path: &(impl std::fmt::Display + ?Sized), value: Option<i64>, errs: &mut Errors) -> u32 {
    let w = value.unwrap_or(1);
    match u32::try_from(w) {
        Ok(w) => w,
        Err(_) => {
            errs.push(FieldError::invalid(
                path.to_string(),
                w,
                "must be greater than or equal to 0",
            ));
            0
        }
    }
}

/// An endpoint address: a valid, non-special IP (loopback allowed).
fn address_ip(
    path: &(impl std::fmt::Display + ?Sized),
    text: &str,
    errs: &mut Errors,
) -> Option<IpAddr> {
    let addr = ip(path, text, errs)?;
    let problems = names::non_special_ip(addr, text);
    let ok = problems.is_empty();
    for m in problems {
        errs.push(FieldError::invalid(path.to_string(), text, m));
    }
    ok.then_some(addr)
}

/// Validates one pod; `None` when it has errors. `node` is this node: a pod
/// without `node` runs on it, and a pod on it without `zone` is in its zone.
pub(crate) fn pod(raw: &RawPod, index: usize, node: &NodeSpec, errs: &mut Errors) -> Option<Pod> {
    let start = errs.len();
    let (namespace, path) = meta("pods", &raw.name, &raw.namespace, index, errs);
    let ip_path = format!("{path}.ip");
    let addr = if raw.ip.is_empty() {
        errs.push(FieldError::required(&ip_path, ""));
        None
    } else {
        address_ip(&ip_path, &raw.ip, errs)
    };
    if let Some(h) = &raw.hostname {
        for m in names::dns1123_label(h) {
            errs.push(FieldError::invalid(format!("{path}.hostname"), h, m));
        }
    }
    // An empty node (pods from etcd or manifests without one) is local
    // nowhere.
    if let Some(n) = raw.node.as_ref().filter(|n| !n.is_empty()) {
        for m in names::dns1123_subdomain(n) {
            errs.push(FieldError::invalid(format!("{path}.node"), n, m));
        }
    }
    let pod_node = raw.node.clone().unwrap_or_else(|| node.name.clone());
    let zone = super::topology::zone(&format!("{path}.zone"), raw.zone.as_deref(), errs)
        .or_else(|| node.zone.clone().filter(|_| pod_node == node.name));
    labels(&format!("{path}.labels"), &raw.labels, errs);
    let mut ports = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in raw.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        let name = p.name.clone().unwrap_or_default();
        if !name.is_empty() {
            for m in names::port_name(&name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), &name, m));
            }
            if !seen.insert(name.clone()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), &name));
            }
        }
        for m in names::port_num(p.container_port) {
            errs.push(FieldError::invalid(
                format!("{pp}.container_port"),
                p.container_port,
                m,
            ));
        }
        let proto = protocol(&format!("{pp}.protocol"), &p.protocol, errs);
        ports.push((name, u16::try_from(p.container_port).unwrap_or(0), proto));
    }
    let weight = weight(&format!("{path}.weight"), raw.weight, errs);
    let probe = raw.readiness_probe.as_ref().and_then(|p| {
        let key = PodKey::new(namespace.clone(), raw.name.clone());
        probe(
            &format!("{path}.readiness_probe"),
            p,
            key,
            addr?,
            &ports,
            errs,
        )
    });
    if errs.len() > start {
        return None;
    }
    Some(Pod {
        namespace,
        name: raw.name.clone(),
        ip: addr?,
        node: pod_node,
        zone,
        hostname: raw.hostname.clone(),
        labels: raw.labels.clone(),
        ports,
        weight,
        ready: raw.ready.unwrap_or(true),
        terminating: raw.terminating.unwrap_or(false),
        probe,
    })
}

/// Validates a readiness probe as Kubernetes' `validateProbe` does (one
/// handler, non-negative numbers; zero means the default) and resolves a
/// named port against the pod's container ports.
fn probe(
    path: &str,
    raw: &RawProbe,
    pod: PodKey,
    ip: IpAddr,
    ports: &[(String, u16, Protocol)],
    errs: &mut Errors,
) -> Option<ProbeSpec> {
    let start = errs.len();
    let handlers = [
        ("tcp_socket", raw.tcp_socket.is_some()),
        ("http_get", raw.http_get.is_some()),
        ("exec", raw.exec.is_some()),
    ];
    let set: Vec<&str> = handlers.iter().filter(|h| h.1).map(|h| h.0).collect();
    if set.is_empty() {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    for extra in set.iter().skip(1) {
        errs.push(FieldError::forbidden(
            format!("{path}.{extra}"),
            "may not specify more than 1 handler type",
        ));
    }
    let port = |field: &str, value: &IntOrString, errs: &mut Errors| -> u16 {
        let fp = format!("{path}.{field}.port");
        match value {
            IntOrString::Int(n) => {
                for m in names::port_num(*n) {
                    errs.push(FieldError::invalid(&fp, *n, m));
                }
                u16::try_from(*n).unwrap_or(0)
            }
            IntOrString::Str(name) => {
                let problems = names::port_name(name);
                let ok = problems.is_empty();
                for m in problems {
                    errs.push(FieldError::invalid(&fp, name, m));
                }
                let found = ports
                    .iter()
                    .find(|(n, _, proto)| n == name && *proto == Protocol::Tcp);
                match found {
                    Some((_, number, _)) => *number,
                    None => {
                        if ok {
                            errs.push(FieldError::invalid(
                                &fp,
                                name,
                                "must be the name of a TCP container port of the pod",
                            ));
                        }
                        0
                    }
                }
            }
        }
    };
    // A LOCAL PROXY header first, for endpoints that expect one.
    let asked = raw
        .tcp_socket
        .as_ref()
        .map(|t| ("tcp_socket", &t.proxy_protocol))
        .or(raw
            .http_get
            .as_ref()
            .map(|h| ("http_get", &h.proxy_protocol)));
    let proxy_protocol = match asked {
        Some((_, None)) | None => None,
        Some((_, Some(v))) if v.is_empty() => None,
        Some((_, Some(v))) if v == "v1" => Some(lb_core::ProxyProtocol::V1),
        Some((_, Some(v))) if v == "v2" => Some(lb_core::ProxyProtocol::V2),
        Some((handler, Some(other))) => {
            errs.push(FieldError::not_supported(
                format!("{path}.{handler}.proxy_protocol"),
                other.as_str(),
                &["v1", "v2"],
            ));
            None
        }
    };
    let action = if let Some(t) = &raw.tcp_socket {
        ProbeAction::TcpSocket {
            port: port("tcp_socket", &t.port, errs),
        }
    } else if let Some(h) = &raw.http_get {
        let mut p = h.path.clone().unwrap_or_default();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errs.push(FieldError::invalid(
                format!("{path}.http_get.path"),
                p.as_str(),
                "must not contain whitespace or control characters",
            ));
        }
        ProbeAction::HttpGet {
            path: p,
            port: port("http_get", &h.port, errs),
        }
    } else if let Some(e) = &raw.exec {
        if e.command.is_empty() || e.command[0].is_empty() {
            errs.push(FieldError::required(format!("{path}.exec.command"), ""));
        }
        ProbeAction::Exec {
            command: e.command.clone(),
        }
    } else {
        return None;
    };
    let mut number = |field: &str, value: Option<i64>, default: i64| -> i64 {
        let v = value.unwrap_or(0);
        if v < 0 {
            errs.push(FieldError::invalid(
                format!("{path}.{field}"),
                v,
                "must be greater than or equal to 0",
            ));
        }
        if v <= 0 {
            default
        } else {
            v
        }
    };
    let initial_delay = number("initial_delay_seconds", raw.initial_delay_seconds, 0);
    let period = number("period_seconds", raw.period_seconds, 10);
    let timeout = number("timeout_seconds", raw.timeout_seconds, 1);
    let success = number("success_threshold", raw.success_threshold, 1);
    let failure = number("failure_threshold", raw.failure_threshold, 3);
    if errs.len() > start {
        return None;
    }
    let secs = |n: i64| Duration::from_secs(u64::try_from(n).unwrap_or(0));
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let mut spec = ProbeSpec::new(pod, ip, action)
        .with_initial_delay(secs(initial_delay))
        .with_timing(secs(period), secs(timeout))
        .with_thresholds(count(success), count(failure));
    spec.proxy_protocol = proxy_protocol;
    Some(spec)
}

/// Validates one Endpoints object; `None` when it has errors.
pub(crate) fn endpoints(raw: &RawEndpoints, index: usize, errs: &mut Errors) -> Option<Endpoints> {
    let start = errs.len();
    let (_, path) = meta("endpoints", &raw.name, &raw.namespace, index, errs);
    let mut subsets = Vec::new();
    for (i, s) in raw.subsets.iter().enumerate() {
        let sp = format!("{path}.subsets[{i}]");
        if s.addresses.is_empty() && s.not_ready_addresses.is_empty() {
            // Kubernetes' own words, field names and backticks included.
            errs.push(FieldError::required(
                &sp,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        let mut hosts = Vec::new();
        let sp_at = At::Text(&sp);
        let addresses = addresses_of(
            &sp_at.field("addresses"),
            &s.addresses,
            true,
            &mut hosts,
            errs,
        );
        let not_ready = addresses_of(
            &sp_at.field("not_ready_addresses"),
            &s.not_ready_addresses,
            false,
            &mut hosts,
            errs,
        );
        let mut ports = Vec::new();
        let mut seen = HashSet::new();
        for (k, p) in s.ports.iter().enumerate() {
            let pp = format!("{sp}.ports[{k}]");
            let name = p.name.clone().unwrap_or_default();
            if s.ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(format!("{pp}.name"), ""));
            } else if !name.is_empty() {
                for m in names::dns1123_label(&name) {
                    errs.push(FieldError::invalid(format!("{pp}.name"), &name, m));
                }
                if !seen.insert(name.clone()) {
                    errs.push(FieldError::duplicate(format!("{pp}.name"), &name));
                }
            }
            for m in names::port_num(p.port) {
                errs.push(FieldError::invalid(format!("{pp}.port"), p.port, m));
            }
            let proto = protocol(&format!("{pp}.protocol"), &p.protocol, errs);
            ports.push((name, u16::try_from(p.port).unwrap_or(0), proto));
        }
        subsets.push(Subset {
            addresses,
            not_ready,
            hosts,
            ports,
        });
    }
    if errs.len() > start {
        return None;
    }
    Some(Endpoints { subsets })
}

fn addresses_of(
    path: &At<'_>,
    raw: &[RawEndpointAddress],
    ready: bool,
    hosts: &mut Vec<HostAddress>,
    errs: &mut Errors,
) -> Vec<Address> {
    let mut out = Vec::with_capacity(raw.len());
    for (j, a) in raw.iter().enumerate() {
        let ap = path.index(j);
        let mut host = None;
        let addr = match (&a.ip, &a.host) {
            (Some(text), None) => address_ip(&ap.field("ip"), text, errs),
            (Some(_), Some(_)) => {
                errs.push(FieldError::forbidden(
                    ap.field("host").to_string(),
                    "may not be set together with `ip`",
                ));
                None
            }
            (None, Some(name)) => {
                // DNS names are case-insensitive; a trailing dot is allowed.
                let lower = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
                let problems = names::dns1123_subdomain(&lower);
                if problems.is_empty() {
                    host = Some(lower);
                }
                for m in problems {
                    errs.push(FieldError::invalid(ap.field("host").to_string(), name, m));
                }
                None
            }
            (None, None) => {
                errs.push(FieldError::required(ap.field("ip").to_string(), ""));
                None
            }
        };
        if let Some(h) = &a.hostname {
            for m in names::dns1123_label(h) {
                errs.push(FieldError::invalid(ap.field("hostname").to_string(), h, m));
            }
        }
        if let Some(n) = &a.node_name {
            for m in names::dns1123_subdomain(n) {
                errs.push(FieldError::invalid(ap.field("node_name").to_string(), n, m));
            }
        }
        let weight = weight(&ap.field("weight"), a.weight, errs);
        let zone = super::topology::zone(&ap.field("zone"), a.zone.as_deref(), errs);
        let hints =
            super::topology::hints(&ap, a.for_zones.as_deref(), a.for_nodes.as_deref(), errs);
        let conditions = Conditions {
            ready,
            serving: a.serving.unwrap_or(ready),
            terminating: a.terminating.unwrap_or(false),
        };
        if let Some(host) = host {
            hosts.push(HostAddress {
                host,
                conditions,
                hostname: a.hostname.clone(),
                node_name: a.node_name.clone(),
                weight,
                zone: zone.clone(),
                hints: hints.clone(),
            });
        }
        if let Some(ip) = addr {
            out.push(Address {
                index: j,
                ip,
                hostname: a.hostname.clone(),
                node_name: a.node_name.clone(),
                weight,
                conditions,
                zone,
                hints,
            });
        }
    }
    out
}
