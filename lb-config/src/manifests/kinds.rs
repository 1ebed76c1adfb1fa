//! Each YAML document onto the raw structs of the file, by kind: Service,
//! Endpoints, EndpointSlice, Pod, and MetalLB's IPAddressPool and
//! L2Advertisement, alone or in a `List`; then the steps across documents.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::types;
use super::{
    ANNOTATION_ACCEPT_PROXY_PROTOCOL, ANNOTATION_ADDRESS_POOL, ANNOTATION_ALLOW_SHARED_IP,
    ANNOTATION_LOAD_BALANCER_IPS, ANNOTATION_PROXY_PROTOCOL, ANNOTATION_SOURCE_ADDRESS,
    LABEL_SERVICE_NAME,
};
use crate::error::FieldError;
use crate::raw::{
    IntOrString, RawClientIpConfig, RawContainerPort, RawEndpointAddress, RawEndpointPort,
    RawEndpointSubset, RawEndpoints, RawExecAction, RawHttpGetAction, RawIpPool, RawPod, RawProbe,
    RawService, RawServicePort, RawSessionAffinityConfig, RawTcpSocketAction,
};
use crate::source::{DesiredState, Origin, Sourced};

/// Cross-document steps: EndpointSlices of one service become one
/// `[[endpoints]]`, replacing an Endpoints object of the same name (slices are
/// what kube-proxy reads); L2Advertisements naming unknown pools warn.
pub(super) fn finish(acc: Acc) -> DesiredState {
    let mut state = acc.state;
    let mut by_service: BTreeMap<(String, String), Vec<Sourced<RawEndpointSubset>>> =
        BTreeMap::new();
    for (k, s) in acc.slices {
        by_service.entry(k).or_default().push(s);
    }
    // One pass over the Endpoints objects, not one per sliced service
    // (10,000 services with slices made 10,000 passes over 10,000 objects).
    let mut replaced = BTreeSet::new();
    state.endpoints.retain(|e| {
        let key = (
            e.object
                .namespace
                .as_deref()
                .unwrap_or("default")
                .to_string(),
            e.object.name.clone(),
        );
        let sliced = by_service.contains_key(&key);
        if sliced {
            replaced.insert(key);
        }
        !sliced
    });
    for ((ns, name), subsets) in by_service {
        if replaced.contains(&(ns.clone(), name.clone())) {
            state.warnings.push(format!(
                "endpoints[{ns}/{name}]: the Endpoints object is ignored: EndpointSlices of the same service take its place"
            ));
        }
        let origin = subsets[0].origin.clone();
        state.endpoints.push(Sourced::new(
            RawEndpoints {
                name,
                namespace: Some(ns),
                // A slice with no endpoints is normal (a service with no
                // pods); it adds no subset, which must hold an address.
                subsets: subsets
                    .into_iter()
                    .map(|s| std::sync::Arc::unwrap_or_clone(s.object))
                    .filter(|s| !s.addresses.is_empty() || !s.not_ready_addresses.is_empty())
                    .collect(),
            },
            origin,
        ));
    }
    for (name, pools) in acc.l2 {
        for p in pools {
            if !state.ip_pools.iter().any(|q| q.object.name == p) {
                state.warnings.push(format!(
                    "L2Advertisement {name}: names the pool {p}, which no IPAddressPool in the manifests defines"
                ));
            }
        }
    }
    state
}

/// An EndpointSlice as a subset, with its (namespace, service name).
type Slice = ((String, String), Sourced<RawEndpointSubset>);

/// What the documents of one load add up to before [`finish`].
#[derive(Debug, Default)]
pub(super) struct Acc {
    state: DesiredState,
    /// EndpointSlices as subsets, by (namespace, service name).
    slices: Vec<Slice>,
    /// L2Advertisements: name and the pools they name.
    l2: Vec<(String, Vec<String>)>,
}

/// One file's documents, as an [`Acc`] holds them but in exact-size
/// storage: the manifests cache keeps one per file, 10,000 of them for a
/// directory of one file per service.
#[derive(Debug, PartialEq)]
pub(super) struct FileObjects {
    services: Box<[Sourced<RawService>]>,
    pods: Box<[Sourced<RawPod>]>,
    endpoints: Box<[Sourced<RawEndpoints>]>,
    ip_pools: Box<[Sourced<RawIpPool>]>,
    warnings: Box<[String]>,
    slices: Box<[Slice]>,
    l2: Box<[(String, Vec<String>)]>,
}

impl From<Acc> for FileObjects {
    fn from(acc: Acc) -> FileObjects {
        let state = acc.state;
        FileObjects {
            services: state.services.into(),
            pods: state.pods.into(),
            endpoints: state.endpoints.into(),
            ip_pools: state.ip_pools.into(),
            warnings: state.warnings.into(),
            slices: acc.slices.into(),
            l2: acc.l2.into(),
        }
    }
}

impl Acc {
    /// Adds one file's objects, sharing them.
    pub(super) fn extend_from(&mut self, file: &FileObjects) {
        let to = &mut self.state;
        to.services.extend(file.services.iter().cloned());
        to.pods.extend(file.pods.iter().cloned());
        to.endpoints.extend(file.endpoints.iter().cloned());
        to.ip_pools.extend(file.ip_pools.iter().cloned());
        to.warnings.extend(file.warnings.iter().cloned());
        self.slices.extend(file.slices.iter().cloned());
        self.l2.extend(file.l2.iter().cloned());
    }
}

/// One document being read: where it is, and what it adds to.
pub(super) struct Doc<'a> {
    pub(super) file: &'a str,
    /// `file`, shared by every object's [`Origin`] (20,000 objects of
    /// 10,000 files held a copy each, and every read copied them again).
    pub(super) shared: &'a std::sync::Arc<str>,
    /// The whole file's text, where errors are located.
    pub(super) text: &'a str,
    pub(super) document: usize,
    pub(super) acc: &'a mut Acc,
    pub(super) errors: &'a mut Vec<FieldError>,
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

impl Doc<'_> {
    fn origin(&self) -> Origin {
        Origin::Manifest {
            path: self.shared.clone(),
            document: self.document,
        }
    }

    fn where_(&self, item: &str, kind: &str, ns: &str, name: &str) -> String {
        let obj = if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        };
        format!(
            "{}: document {}{item} ({kind} {obj})",
            self.file, self.document
        )
    }

    /// Reads one object (`item` names it inside a `List`) by its kind.
    pub(super) fn object(&mut self, value: Value, item: &str, depth: usize) {
        if value.is_null() {
            return; // an empty document (`---` at the start or end)
        }
        let kind = str_field(&value, "kind").unwrap_or("").to_string();
        let api = str_field(&value, "apiVersion").unwrap_or("").to_string();
        let meta = value.get("metadata");
        let name = meta
            .and_then(|m| str_field(m, "name"))
            .unwrap_or("")
            .to_string();
        let ns = meta
            .and_then(|m| str_field(m, "namespace"))
            .unwrap_or("")
            .to_string();
        let at = self.where_(item, &kind, &ns, &name);
        if !value.is_mapping() {
            self.errors.push(FieldError::parse(
                format!("{}: document {}{item}", self.file, self.document),
                "expected a Kubernetes object (a mapping with apiVersion and kind)",
            ));
            return;
        }
        if kind.is_empty() {
            let error = FieldError::required(format!("{at}.kind"), "kind is required");
            let error = self.located(error, item, "kind");
            self.errors.push(error);
            return;
        }
        let expect = |want: &[&str]| want.contains(&api.as_str());
        match kind.as_str() {
            k if k.ends_with("List") && depth == 0 => {
                let items = match value.get("items") {
                    None => return,
                    Some(Value::Sequence(items)) => items.clone(),
                    Some(_) => {
                        self.errors.push(FieldError::parse(
                            format!("{at}.items"),
                            "invalid type: expected a sequence of objects",
                        ));
                        return;
                    }
                };
                for (i, v) in items.into_iter().enumerate() {
                    self.object(v, &format!(".items[{i}]"), depth + 1);
                }
            }
            "Service" if expect(&["v1"]) => {
                if let Some(s) = self.typed::<types::Service>(value, &at, item) {
                    self.service(s, &at);
                }
            }
            "Endpoints" if expect(&["v1"]) => {
                if let Some(e) = self.typed::<types::Endpoints>(value, &at, item) {
                    self.endpoints(e);
                }
            }
            "EndpointSlice" if expect(&["discovery.k8s.io/v1"]) => {
                if let Some(e) = self.typed::<types::EndpointSlice>(value, &at, item) {
                    self.endpoint_slice(e, &at);
                }
            }
            "Pod" if expect(&["v1"]) => {
                if let Some(p) = self.typed::<types::Pod>(value, &at, item) {
                    self.pod(p, &at);
                }
            }
            "IPAddressPool" if expect(&["metallb.io/v1beta1", "metallb.io/v1beta2"]) => {
                if let Some(p) = self.typed::<types::IpAddressPool>(value, &at, item) {
                    let origin = self.origin();
                    self.acc.state.ip_pools.push(Sourced::new(
                        RawIpPool {
                            name: p.metadata.name,
                            addresses: p.spec.addresses,
                            auto_assign: p.spec.auto_assign,
                        },
                        origin,
                    ));
                }
            }
            "L2Advertisement" if expect(&["metallb.io/v1beta1", "metallb.io/v1beta2"]) => {
                if let Some(a) = self.typed::<types::L2Advertisement>(value, &at, item) {
                    // Addresses of every pool are served on this node's
                    // addresses already; the advertisement is noted so a
                    // reader sees which pools it names.
                    let pools = if a.spec.ip_address_pools.is_empty() {
                        "all pools".to_string()
                    } else {
                        a.spec.ip_address_pools.join(", ")
                    };
                    self.acc
                        .l2
                        .push((a.metadata.name, a.spec.ip_address_pools.clone()));
                    tracing::debug!("{at}: L2Advertisement accepted for {pools}");
                }
            }
            _ => self.acc.state.warnings.push(format!(
                "{at}: skipped: kind {kind} ({api}) is not read by lb"
            )),
        }
    }

    /// `error` at `path` of this document (inside list item `item`, e.g.
    /// `.items[2]`), located in the file: `FILE:LINE:COLUMN: document N
    /// (Kind NAME).path: ...`. Left as it is when the path is not found.
    fn located(&self, mut error: FieldError, item: &str, path: &str) -> FieldError {
        let full = format!("{item}.{path}");
        let Some((line, column)) = crate::locate::yaml_position(self.text, self.document, &full)
        else {
            return error;
        };
        if let Some(rest) = error.path.strip_prefix(&format!("{}: ", self.file)) {
            error.path = rest.to_string();
        }
        error.at(crate::Location {
            file: self.file.to_string(),
            line,
            column,
        })
    }

    /// Deserializes into `T`, reporting ignored fields as one warning and a
    /// wrong type as an error with its path.
    fn typed<T: DeserializeOwned>(&mut self, value: Value, at: &str, item: &str) -> Option<T> {
        let mut ignored = Vec::new();
        let mut note = |p: serde_ignored::Path| ignored.push(p.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut note);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => {
                let shown: Vec<_> = ignored
                    .into_iter()
                    // `.?` marks fields declared as deliberately ignored.
                    .filter(|p| {
                        !p.starts_with("metadata") && !p.starts_with("status") && !p.ends_with(".?")
                    })
                    .collect();
                if !shown.is_empty() {
                    self.acc
                        .state
                        .warnings
                        .push(format!("{at}: ignored fields: {}", shown.join(", ")));
                }
                Some(v)
            }
            Err(e) => {
                let path = e.path().to_string();
                let message = crate::locate::in_words(&e.into_inner().to_string(), true);
                let error = FieldError::parse(format!("{at}.{path}"), message);
                self.errors.push(self.located(error, item, &path));
                None
            }
        }
    }

    fn service(&mut self, s: types::Service, at: &str) {
        let meta = s.metadata;
        let spec = s.spec;
        let ann = |k: &str| meta.annotations.get(k).cloned();
        let mut load_balancer_ip = spec.load_balancer_ip.filter(|s| !s.is_empty());
        if let Some(list) = ann(ANNOTATION_LOAD_BALANCER_IPS) {
            let ips: Vec<String> = list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if ips.len() > 1 {
                self.acc.state.warnings.push(format!(
                    "{at}: {ANNOTATION_LOAD_BALANCER_IPS}: only the first address is used (one address per service)"
                ));
            }
            if load_balancer_ip.is_none() {
                load_balancer_ip = ips.into_iter().next();
            }
        }
        let labels = (!meta.labels.is_empty()).then(|| meta.labels.clone());
        let raw = RawService {
            labels,
            load_balancer_class: spec.load_balancer_class,
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            service_type: spec.service_type,
            cluster_ip: spec.cluster_ip.filter(|s| !s.is_empty()),
            cluster_ips: spec.cluster_ips.filter(|v| !v.is_empty()),
            selector: spec.selector,
            session_affinity: spec.session_affinity,
            session_affinity_config: spec.session_affinity_config.map(|c| {
                RawSessionAffinityConfig {
                    client_ip: c.client_ip.map(|c| RawClientIpConfig {
                        timeout_seconds: c.timeout_seconds,
                    }),
                }
            }),
            external_traffic_policy: spec.external_traffic_policy,
            internal_traffic_policy: spec.internal_traffic_policy,
            external_ips: spec.external_ips,
            load_balancer_ip,
            load_balancer_source_ranges: spec.load_balancer_source_ranges,
            ip_pool: ann(ANNOTATION_ADDRESS_POOL),
            allow_shared_ip: ann(ANNOTATION_ALLOW_SHARED_IP),
            allocate_load_balancer_node_ports: spec.allocate_load_balancer_node_ports,
            health_check_node_port: spec.health_check_node_port.filter(|p| *p != 0),
            publish_not_ready_addresses: spec.publish_not_ready_addresses,
            external_name: spec.external_name,
            traffic_distribution: spec.traffic_distribution,
            proxy_protocol: ann(ANNOTATION_PROXY_PROTOCOL),
            accept_proxy_protocol: ann(ANNOTATION_ACCEPT_PROXY_PROTOCOL)
                .map(|v| v.trim().eq_ignore_ascii_case("true")),
            source_address: ann(ANNOTATION_SOURCE_ADDRESS),
            ports: spec
                .ports
                .into_iter()
                .map(|p| RawServicePort {
                    name: p.name.filter(|n| !n.is_empty()),
                    protocol: p.protocol,
                    port: p.port,
                    // Kubernetes' defaulting: `targetPort` 0 or "" is `port`.
                    target_port: p.target_port.filter(|t| {
                        !matches!(t, IntOrString::Int(0)) && *t != IntOrString::Str(String::new())
                    }),
                    node_port: p.node_port.filter(|n| *n != 0),
                    app_protocol: p.app_protocol,
                })
                .collect(),
        };
        let origin = self.origin();
        self.acc.state.services.push(Sourced::new(raw, origin));
    }

    fn endpoints(&mut self, e: types::Endpoints) {
        let addr = |a: types::EndpointAddress| RawEndpointAddress {
            ip: Some(a.ip),
            host: None,
            hostname: a.hostname,
            node_name: a.node_name,
            weight: None,
            serving: None,
            terminating: None,
            ..RawEndpointAddress::default()
        };
        let raw = RawEndpoints {
            name: e.metadata.name,
            namespace: e.metadata.namespace,
            subsets: e
                .subsets
                .into_iter()
                .map(|s| RawEndpointSubset {
                    addresses: exact(s.addresses.into_iter().map(addr)),
                    not_ready_addresses: exact(s.not_ready_addresses.into_iter().map(addr)),
                    ports: exact(s.ports.into_iter().map(endpoint_port)),
                })
                .collect(),
        };
        let origin = self.origin();
        self.acc.state.endpoints.push(Sourced::new(raw, origin));
    }

    fn endpoint_slice(&mut self, e: types::EndpointSlice, at: &str) {
        let Some(service) = e.metadata.labels.get(LABEL_SERVICE_NAME).cloned() else {
            self.acc.state.warnings.push(format!(
                "{at}: skipped: an EndpointSlice without the {LABEL_SERVICE_NAME} label belongs to no service"
            ));
            return;
        };
        if let Some(t) = e.address_type.as_deref().filter(|t| *t == "FQDN") {
            self.acc
                .state
                .warnings
                .push(format!("{at}: skipped: addressType {t} is not served"));
            return;
        }
        let mut subset = RawEndpointSubset {
            ports: e.ports.into_iter().map(endpoint_port).collect(),
            ..RawEndpointSubset::default()
        };
        for ep in e.endpoints {
            // As kube-proxy reads slices (the API's defaults): `ready` and
            // `serving` unset are true, `terminating` unset is false; `ready`
            // is taken as stated, and a not-ready endpoint that is serving
            // and terminating is the terminating fallback.
            let c = &ep.conditions;
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(true);
            let terminating = c.terminating.unwrap_or(false);
            let names = |list: &[types::HintName]| -> Option<Vec<String>> {
                let names: Vec<String> = list.iter().map(|h| h.name.clone()).collect();
                (!names.is_empty()).then_some(names)
            };
            let for_zones = ep.hints.as_ref().and_then(|h| names(&h.for_zones));
            let for_nodes = ep.hints.as_ref().and_then(|h| names(&h.for_nodes));
            // The API calls an endpoint's addresses fungible; kube-proxy
            // (and so lb) uses the first.
            for ip in ep.addresses.into_iter().take(1) {
                let a = RawEndpointAddress {
                    ip: Some(ip),
                    host: None,
                    hostname: ep.hostname.clone(),
                    node_name: ep.node_name.clone(),
                    weight: None,
                    serving: Some(serving),
                    terminating: Some(terminating),
                    zone: ep.zone.clone(),
                    for_zones: for_zones.clone(),
                    for_nodes: for_nodes.clone(),
                };
                if ready {
                    subset.addresses.push(a);
                } else {
                    subset.not_ready_addresses.push(a);
                }
            }
        }
        let ns = e.metadata.namespace;
        let origin = self.origin();
        self.acc.slices.push((
            (ns.unwrap_or_else(|| "default".into()), service),
            Sourced::new(subset, origin),
        ));
    }

    fn pod(&mut self, p: types::Pod, at: &str) {
        let Some(ip) = p.status.pod_ip.filter(|s| !s.is_empty()) else {
            self.acc.state.warnings.push(format!(
                "{at}: skipped: no status.podIP (the pod has no address yet)"
            ));
            return;
        };
        // As the EndpointSlice controller reads a pod: ready only when its
        // Ready condition is True; no conditions yet is not ready.
        let ready = Some(
            p.status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.condition_type == "Ready" && c.status == "True"),
        );
        let mut ports = Vec::new();
        let mut probe = None;
        let mut probes = 0;
        for c in p.spec.containers {
            ports.extend(c.ports.into_iter().map(|p| RawContainerPort {
                name: p.name,
                container_port: p.container_port,
                protocol: p.protocol,
            }));
            if let Some(pr) = c.readiness_probe {
                probes += 1;
                if probe.is_none() {
                    probe = Some(RawProbe {
                        tcp_socket: pr.tcp_socket.map(|a| RawTcpSocketAction {
                            port: a.port,
                            proxy_protocol: None,
                        }),
                        http_get: pr.http_get.map(|a| RawHttpGetAction {
                            path: a.path,
                            port: a.port,
                            proxy_protocol: None,
                        }),
                        exec: pr.exec.map(|a| RawExecAction { command: a.command }),
                        initial_delay_seconds: pr.initial_delay_seconds,
                        period_seconds: pr.period_seconds,
                        timeout_seconds: pr.timeout_seconds,
                        success_threshold: pr.success_threshold,
                        failure_threshold: pr.failure_threshold,
                    });
                }
            }
        }
        if probes > 1 {
            self.acc.state.warnings.push(format!(
                "{at}: only the first container's readiness probe is run"
            ));
        }
        let raw = RawPod {
            name: p.metadata.name,
            namespace: p.metadata.namespace,
            ip,
            // A pod with no node is local nowhere (as from etcd).
            node: Some(p.spec.node_name.unwrap_or_default()),
            // kube-proxy learns zones from slices, which take them from
            // Node objects; lb reads no Node, so a Pod on this node is in
            // `node.zone` (validation's default) and others in none.
            zone: None,
            hostname: p.spec.hostname,
            labels: p.metadata.labels,
            ports,
            weight: None,
            ready,
            terminating: p.metadata.deletion_timestamp.map(|_| true),
            readiness_probe: probe,
        };
        let origin = self.origin();
        self.acc.state.pods.push(Sourced::new(raw, origin));
    }
}

fn endpoint_port(p: types::EndpointPort) -> RawEndpointPort {
    RawEndpointPort {
        name: p.name.filter(|n| !n.is_empty()),
        port: p.port.unwrap_or(0),
        protocol: p.protocol,
    }
}

/// The items in a vector of their own size. `collect()` from a vector's
/// `into_iter()` reuses the source's buffer, which keeps the source items'
/// size: the manifest's addresses are larger than the raw ones, and 10,000
/// Endpoints objects of 10 addresses kept 19 MB where 13 would do.
fn exact<T>(items: impl ExactSizeIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    out.extend(items);
    out
}
