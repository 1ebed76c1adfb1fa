//! `[[services]]` validation, after Kubernetes' `ValidateService`.

use std::collections::BTreeMap;

use crate::hash::{HashSet, HashSetExt};
use std::net::IpAddr;
use std::sync::Arc;

use lb_core::{
    ClusterIp, PortSpec, Protocol, ProxyProtocol, ServiceKey, ServiceSpec, ServiceType,
    SessionAffinity, SourceAddress, TargetPort, TrafficPolicy,
};

use super::fields::{at_most, labels, protocol};
use super::{names, settings::ip};
use crate::error::{object_path, BadValue, Errors, FieldError};
use crate::raw::{
    IntOrString, RawEndpoints, RawService, MAX_EXTERNAL_IPS, MAX_SERVICE_PORTS, MAX_SOURCE_RANGES,
};

/// Kubernetes' `MaxClientIPServiceAffinitySeconds`.
const MAX_AFFINITY_SECONDS: i64 = 86_400;

/// What a service asks of the cluster IP allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpRequest {
    /// Allocate one (omitted or `""`).
    Auto,
    /// No cluster IP: headless (`"None"`) or ExternalName.
    NoIp,
    /// This address.
    Fixed(IpAddr),
}

/// A valid service before allocation and endpoint resolution. `spec` has
/// `ClusterIp::None` and no node ports yet.
#[derive(Debug, Clone)]
pub(crate) struct ServiceDraft {
    /// `services[NAME]` / `services[NAMESPACE/NAME]`.
    pub(crate) path: String,
    /// The service, to be completed.
    pub(crate) spec: ServiceSpec,
    /// Cluster IP request.
    pub(crate) ip: IpRequest,
    /// Per port: `None` = no node port, `Some(None)` = allocate, `Some(Some(n))` = n.
    pub(crate) node_ports: Vec<Option<Option<u16>>>,
    /// Pod selector; `None` = endpoints from `[[endpoints]]`.
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// LoadBalancer services: what they ask of the address pools.
    pub(crate) lb: Option<LbDraft>,
    /// `labels` (validated): what decides whether this proxy serves it.
    pub(crate) labels: BTreeMap<String, String>,
    /// The raw object it was validated from, by which the next load knows
    /// it again (see [`crate::carry`]); `None` until the memo sets it.
    pub(crate) source: Option<Arc<RawService>>,
    /// The `[[endpoints]]` object its addresses came from, once resolved.
    pub(crate) manual: Option<Arc<RawEndpoints>>,
    /// The very service the last good load served, when nothing it is made
    /// of changed since: served as it is, not resolved again. `spec` holds
    /// the same service without its endpoints.
    pub(crate) carried: Option<Arc<ServiceSpec>>,
}

impl ServiceDraft {
    /// The ports as they will be served: the carried service's, else the
    /// ones resolved here.
    pub(crate) fn served_ports(&self) -> &[lb_core::PortSpec] {
        match &self.carried {
            Some(spec) => &spec.ports,
            None => &self.spec.ports,
        }
    }
}

/// What a LoadBalancer service asks of the pools (from its raw fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LbDraft {
    /// `load_balancer_ip`.
    pub(crate) requested: Option<IpAddr>,
    /// `ip_pool`.
    pub(crate) pool: Option<String>,
    /// `allow_shared_ip`.
    pub(crate) sharing_key: String,
    /// `load_balancer_class`; `None` = no class.
    pub(crate) class: Option<String>,
}

/// Validates one service; `None` when it has errors (all pushed to `errs`).
/// What Kubernetes accepts with a warning goes to `warnings`.
pub(crate) fn service(
    raw: &RawService,
    index: usize,
    errs: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<ServiceDraft> {
    let start = errs.len();
    let namespace = raw.namespace.clone().unwrap_or_else(|| "default".into());
    let path = object_path("services", &namespace, &raw.name, index);

    if raw.name.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.name"),
            "name is required",
        ));
    }
    for m in names::dns1035_label(&raw.name)
        .into_iter()
        .filter(|_| !raw.name.is_empty())
    {
        errs.push(FieldError::invalid(format!("{path}.name"), &raw.name, m));
    }
    for m in names::dns1123_label(&namespace) {
        errs.push(FieldError::invalid(
            format!("{path}.namespace"),
            &namespace,
            m,
        ));
    }

    let service_type = match raw.service_type.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            errs.push(FieldError::not_supported(
                format!("{path}.type"),
                other,
                &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
            ));
            ServiceType::ClusterIP
        }
    };

    let ip_path = format!("{path}.cluster_ip");
    let cluster_ip = cluster_ip_text(raw, &path, service_type, errs, warnings);
    let ip_request = match cluster_ip {
        _ if service_type == ServiceType::ExternalName => {
            if raw.cluster_ip.as_deref().is_some_and(|s| !s.is_empty()) {
                errs.push(FieldError::forbidden(
                    &ip_path,
                    "may not be set for ExternalName services",
                ));
            }
            IpRequest::NoIp
        }
        None | Some("") => IpRequest::Auto,
        Some("None") => {
            if service_type.has_node_ports() {
                errs.push(FieldError::invalid(
                    &ip_path,
                    "None",
                    format!("may not be set to 'None' for {service_type} services"),
                ));
            }
            IpRequest::NoIp
        }
        Some(text) => ip(&ip_path, text, errs).map_or(IpRequest::Auto, IpRequest::Fixed),
    };

    let service_labels = raw.labels.clone().unwrap_or_default();
    labels(&format!("{path}.labels"), &service_labels, errs);

    let selector = match &raw.selector {
        Some(sel) if !sel.is_empty() => {
            labels(&format!("{path}.selector"), sel, errs);
            Some(sel.clone())
        }
        _ => None,
    };

    let affinity_path = format!("{path}.session_affinity_config.client_ip.timeout_seconds");
    let timeout = raw
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    let client_ip = raw.session_affinity.as_deref() == Some("ClientIP");
    if matches!(raw.session_affinity.as_deref(), None | Some("None"))
        && raw.session_affinity_config.is_some()
    {
        errs.push(FieldError::forbidden(
            format!("{path}.session_affinity_config"),
            "must not be set when session affinity is None",
        ));
    }
    if let Some(t) = timeout.filter(|_| client_ip) {
        if t <= 0 || t > MAX_AFFINITY_SECONDS {
            errs.push(FieldError::invalid(
                &affinity_path,
                t,
                format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}"),
            ));
        }
    }
    let session_affinity = match raw.session_affinity.as_deref() {
        None | Some("None") => SessionAffinity::None,
        Some("ClientIP") => SessionAffinity::ClientIp {
            timeout: timeout
                .filter(|t| *t > 0)
                .map_or(SessionAffinity::DEFAULT_TIMEOUT, |t| {
                    std::time::Duration::from_secs(t as u64)
                }),
        },
        Some(other) => {
            errs.push(FieldError::not_supported(
                format!("{path}.session_affinity"),
                other,
                &["ClientIP", "None"],
            ));
            SessionAffinity::None
        }
    };

    let traffic_distribution = super::topology::traffic_distribution(
        &format!("{path}.traffic_distribution"),
        raw.traffic_distribution.as_deref(),
        errs,
    );
    let external_traffic_policy = policy(
        &path,
        "external_traffic_policy",
        &raw.external_traffic_policy,
        errs,
    );
    let internal_traffic_policy = policy(
        &path,
        "internal_traffic_policy",
        &raw.internal_traffic_policy,
        errs,
    );

    let mut listed_ips = raw.external_ips.as_deref().unwrap_or_default();
    if !at_most(
        &format!("{path}.external_ips"),
        listed_ips.len(),
        MAX_EXTERNAL_IPS,
        errs,
    ) {
        listed_ips = &[];
    }
    let external_ips: Vec<IpAddr> = listed_ips
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let p = format!("{path}.external_ips[{i}]");
            let addr = ip(&p, text, errs)?;
            for m in names::non_special_ip(addr, text) {
                errs.push(FieldError::invalid(&p, text, m));
            }
            Some(addr)
        })
        .collect();

    let (lb, load_balancer_source_ranges) = load_balancer(raw, &path, service_type, errs);

    let mut external_name = raw.external_name.clone().unwrap_or_default();
    let en_path = format!("{path}.external_name");
    if service_type == ServiceType::ExternalName {
        let cname = external_name.trim_end_matches('.');
        if cname.is_empty() {
            errs.push(FieldError::required(&en_path, ""));
        } else {
            for m in names::dns1123_subdomain(cname) {
                errs.push(FieldError::invalid(&en_path, cname, m));
            }
        }
    } else if !external_name.is_empty() {
        // Kubernetes' warning (pkg/api/service/warnings.go), in lb's paths.
        warnings.push(format!(
            "{en_path} is ignored when {path}.type is not \"ExternalName\""
        ));
        external_name.clear();
    }

    let externally_accessible = service_type.has_node_ports()
        || (service_type == ServiceType::ClusterIP && !external_ips.is_empty());
    if external_traffic_policy == TrafficPolicy::Local && !externally_accessible {
        errs.push(FieldError::invalid(
            format!("{path}.external_traffic_policy"),
            "Local",
            "may only be set for externally-accessible services",
        ));
    }
    let health_check_node_port = raw.health_check_node_port.unwrap_or(0);
    let hc_path = format!("{path}.health_check_node_port");
    if health_check_node_port != 0 {
        if service_type != ServiceType::LoadBalancer
            || external_traffic_policy != TrafficPolicy::Local
        {
            errs.push(FieldError::invalid(
                &hc_path,
                health_check_node_port,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        }
        for m in names::port_num(health_check_node_port) {
            errs.push(FieldError::invalid(&hc_path, health_check_node_port, m));
        }
    }

    if raw.ports.is_empty() && ip_request != IpRequest::NoIp {
        errs.push(FieldError::required(format!("{path}.ports"), ""));
    }
    let mut listed_ports = raw.ports.as_slice();
    if !at_most(
        &format!("{path}.ports"),
        listed_ports.len(),
        MAX_SERVICE_PORTS,
        errs,
    ) {
        listed_ports = &[];
    }
    let mut ports = Vec::with_capacity(listed_ports.len());
    let mut node_ports = Vec::with_capacity(listed_ports.len());
    let mut port_names = HashSet::new();
    let mut seen_ports = HashSet::new();
    let mut seen_node_ports = HashSet::new();
    for (i, p) in listed_ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        let name = p.name.clone().unwrap_or_default();
        if raw.ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            for m in names::dns1123_label(&name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), &name, m));
            }
            if !port_names.insert(name.clone()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), &name));
            }
        }
        for m in names::port_num(p.port) {
            errs.push(FieldError::invalid(format!("{pp}.port"), p.port, m));
        }
        let proto = protocol(&format!("{pp}.protocol"), &p.protocol, errs);
        let port = u16::try_from(p.port).unwrap_or(0);
        if !seen_ports.insert((proto, port)) {
            errs.push(FieldError::duplicate(&pp, format!("{port}/{proto}")));
        }
        let tp_path = format!("{pp}.target_port");
        let target_port = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                for m in names::port_num(*n) {
                    errs.push(FieldError::invalid(&tp_path, *n, m));
                }
                TargetPort::Number(u16::try_from(*n).unwrap_or(0))
            }
            Some(IntOrString::Str(s)) => {
                for m in names::port_name(s) {
                    errs.push(FieldError::invalid(&tp_path, s, m));
                }
                TargetPort::Name(s.clone())
            }
        };
        let app_protocol = p.app_protocol.clone();
        if let Some(a) = &app_protocol {
            for m in names::qualified_name(a) {
                errs.push(FieldError::invalid(format!("{pp}.app_protocol"), a, m));
            }
        }
        let np_path = format!("{pp}.node_port");
        let requested = p.node_port.filter(|n| *n != 0);
        // `allocate_load_balancer_node_ports = false`: no node port unless one
        // is asked for (Kubernetes keeps explicitly requested ones).
        let allocate_node_ports = service_type != ServiceType::LoadBalancer
            || raw.allocate_load_balancer_node_ports.unwrap_or(true);
        let node_port = if service_type.has_node_ports() {
            match requested {
                None if !allocate_node_ports => None,
                None => Some(None),
                Some(n) => {
                    let mut ok = true;
                    for m in names::port_num(n) {
                        errs.push(FieldError::invalid(&np_path, n, m));
                        ok = false;
                    }
                    if ok && !seen_node_ports.insert((proto, n)) {
                        errs.push(FieldError::duplicate(&np_path, n));
                        ok = false;
                    }
                    Some(ok.then_some(n as u16))
                }
            }
        } else {
            if requested.is_some() {
                errs.push(FieldError::forbidden(
                    &np_path,
                    format!("may not be used when `type` is '{service_type}'"),
                ));
            }
            None
        };
        node_ports.push(node_port);
        ports.push(PortSpec {
            name,
            protocol: proto,
            port,
            target_port,
            node_port: None,
            app_protocol,
            endpoints: Vec::new(),
        });
    }

    let proxy_protocol = proxy_protocol(raw, &path, &ports, errs);
    let source_address = match raw.source_address.as_deref() {
        None => None,
        Some("proxy") => Some(SourceAddress::Proxy),
        Some("client") => Some(SourceAddress::Client),
        Some(other) => {
            errs.push(FieldError::not_supported(
                format!("{path}.source_address"),
                other,
                &["proxy", "client"],
            ));
            None
        }
    };

    if errs.len() > start {
        return None;
    }
    Some(ServiceDraft {
        path,
        spec: ServiceSpec {
            key: ServiceKey::new(namespace, raw.name.clone()),
            service_type,
            cluster_ip: ClusterIp::None,
            external_ips,
            load_balancer_ips: Vec::new(),
            ip_pool: String::new(),
            load_balancer_source_ranges,
            session_affinity,
            external_traffic_policy,
            internal_traffic_policy,
            publish_not_ready_addresses: raw.publish_not_ready_addresses.unwrap_or(false),
            traffic_distribution,
            external_name,
            health_check_node_port: u16::try_from(health_check_node_port).unwrap_or(0),
            proxy_protocol,
            accept_proxy_protocol: raw.accept_proxy_protocol.unwrap_or(false),
            source_address,
            ports,
        },
        ip: ip_request,
        node_ports,
        selector,
        lb,
        labels: service_labels,
        source: None,
        manual: None,
        carried: None,
    })
}

/// `proxy_protocol`: `"v1"`, `"v2"`, or none (omitted or `""`). v1 is a
/// line of text for streams only, so a service with a UDP port takes v2.
fn proxy_protocol(
    raw: &RawService,
    path: &str,
    ports: &[PortSpec],
    errs: &mut Errors,
) -> Option<ProxyProtocol> {
    let p = format!("{path}.proxy_protocol");
    let version = match raw.proxy_protocol.as_deref() {
        None | Some("") => return None,
        Some("v1") => ProxyProtocol::V1,
        Some("v2") => ProxyProtocol::V2,
        Some(other) => {
            errs.push(FieldError::not_supported(&p, other, &["v1", "v2"]));
            return None;
        }
    };
    if version == ProxyProtocol::V1 && ports.iter().any(|port| port.protocol == Protocol::Udp) {
        errs.push(FieldError::invalid(
            &p,
            "v1",
            "v1 is for TCP only (a line of text at the start of a stream); a service with a UDP port takes \"v2\"",
        ));
    }
    Some(version)
}

/// The LoadBalancer fields: `load_balancer_ip`, `ip_pool`, `allow_shared_ip`,
/// `load_balancer_class`, `load_balancer_source_ranges`,
/// `allocate_load_balancer_node_ports`. Set on
/// another type they are errors, as in `ValidateService`.
fn load_balancer(
    raw: &RawService,
    path: &str,
    service_type: ServiceType,
    errs: &mut Errors,
) -> (Option<LbDraft>, Vec<ipnet::IpNet>) {
    let is_lb = service_type == ServiceType::LoadBalancer;
    let non_empty = |o: &Option<String>| o.clone().filter(|v| !v.trim().is_empty());
    let only_lb = |field: &str, errs: &mut Errors| {
        errs.push(FieldError::forbidden(
            format!("{path}.{field}"),
            "may only be used when `type` is 'LoadBalancer'",
        ))
    };
    let requested = non_empty(&raw.load_balancer_ip).and_then(|text| {
        let p = format!("{path}.load_balancer_ip");
        let addr = ip(&p, text.trim(), errs)?;
        for m in names::non_special_ip(addr, &text) {
            errs.push(FieldError::invalid(&p, text.as_str(), m));
        }
        Some(addr)
    });
    let pool = non_empty(&raw.ip_pool);
    let sharing_key = non_empty(&raw.allow_shared_ip).unwrap_or_default();
    // `validateLoadBalancerClassField`: a qualified name, on LoadBalancer
    // services only.
    let class_path = format!("{path}.load_balancer_class");
    let class = raw.load_balancer_class.clone();
    match &class {
        Some(c) if is_lb => {
            for m in names::qualified_name(c) {
                errs.push(FieldError::invalid(&class_path, c.as_str(), m));
            }
        }
        Some(_) => only_lb("load_balancer_class", errs),
        None => {}
    }

    let mut ranges = Vec::new();
    let mut listed = raw
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    if !at_most(
        &format!("{path}.load_balancer_source_ranges"),
        listed.len(),
        MAX_SOURCE_RANGES,
        errs,
    ) {
        listed = &[];
    }
    for (i, text) in listed.iter().enumerate() {
        match text.trim().parse::<ipnet::IpNet>() {
            Ok(net) => ranges.push(net.trunc()),
            Err(_) => errs.push(FieldError::invalid(
                format!("{path}.load_balancer_source_ranges[{i}]"),
                text.as_str(),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    // As in Kubernetes, `load_balancer_ip` and the MetalLB annotations
    // (`ip_pool`, `allow_shared_ip`) are ignored on other types, while source
    // ranges and `allocate_load_balancer_node_ports` (either value) are
    // refused.
    if !is_lb {
        if !ranges.is_empty() {
            only_lb("load_balancer_source_ranges", errs);
        }
        if raw.allocate_load_balancer_node_ports.is_some() {
            only_lb("allocate_load_balancer_node_ports", errs);
        }
        return (None, Vec::new());
    }
    (
        Some(LbDraft {
            requested,
            pool,
            sharing_key,
            class,
        }),
        ranges,
    )
}

/// The cluster IP a service asks for: `cluster_ip`, else the first of
/// `cluster_ips` (an object written with the plural field only). When both
/// are given the first of `cluster_ips` must be `cluster_ip`, as
/// `ValidateServiceClusterIPsRelatedFields` says; ExternalName services skip
/// the check, as there.
fn cluster_ip_text<'a>(
    raw: &'a RawService,
    path: &str,
    service_type: ServiceType,
    errs: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<&'a str> {
    let given = raw.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let ips = raw.cluster_ips.as_deref().unwrap_or_default();
    if service_type == ServiceType::ExternalName || ips.is_empty() {
        return given;
    }
    let ips_path = format!("{path}.cluster_ips");
    if given.is_some_and(|ip| ip != ips[0]) {
        errs.push(FieldError::invalid(
            &ips_path,
            BadValue::StrList(ips.to_vec()),
            "first value must match `clusterIP`",
        ));
    }
    if ips.len() > 1 {
        warnings.push(format!(
            "{ips_path}: only the first address is served (dual-stack comes later)"
        ));
    }
    given.or(Some(ips[0].as_str()))
}

fn policy(path: &str, field: &str, value: &Option<String>, errs: &mut Errors) -> TrafficPolicy {
    match value.as_deref() {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            errs.push(FieldError::not_supported(
                format!("{path}.{field}"),
                other,
                &["Cluster", "Local"],
            ));
            TrafficPolicy::Cluster
        }
    }
}
