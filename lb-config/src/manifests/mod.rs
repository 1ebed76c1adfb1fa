//! Kubernetes manifests as a source (`--manifests PATH`): YAML documents of
//! kinds Service, Endpoints, EndpointSlice (discovery.k8s.io/v1), Pod, and
//! MetalLB's IPAddressPool and L2Advertisement, alone or in a `List`, mapped
//! onto the same raw structs as the TOML file so one validator serves both.
//!
//! Real manifests carry many fields lb has no use for, so unknown fields are
//! ignored with one warning per document (fields the API server fills in,
//! under `metadata` and `status`, silently); other kinds (Deployment,
//! ConfigMap, ...) are skipped with a warning. A value of the wrong type is an
//! error naming the file, the document and its kind/name.

mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::error::{ConfigErrors, FieldError};
use crate::raw::{
    RawClientIpConfig, RawContainerPort, RawEndpointAddress, RawEndpointPort, RawEndpointSubset,
    RawEndpoints, RawExecAction, RawHttpGetAction, RawIpPool, RawPod, RawProbe, RawService,
    RawServicePort, RawSessionAffinityConfig, RawTcpSocketAction,
};
use crate::source::{DesiredState, Origin, Source, Sourced};

/// MetalLB's annotation choosing the pool of a LoadBalancer service.
pub const ANNOTATION_ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
/// MetalLB's annotation: services with the same key may share an address.
pub const ANNOTATION_ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";
/// MetalLB's annotation requesting addresses (comma-separated).
pub const ANNOTATION_LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// The label that ties an EndpointSlice to its service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// `--manifests PATH`: a YAML file, or a directory whose `.yaml`/`.yml` files
/// are read in name order. Reads the files on every call (level-triggered).
#[derive(Debug, Clone)]
pub struct ManifestSource {
    path: PathBuf,
}

impl ManifestSource {
    /// A source reading `path` (file or directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ManifestSource { path: path.into() }
    }

    /// The file or directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files this source reads now, in order.
    pub fn files(&self) -> Result<Vec<PathBuf>, ConfigErrors> {
        manifest_files(&self.path)
    }

    /// The text of every file, for telling whether anything changed.
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        for f in self.files().unwrap_or_default() {
            out.push_str(&f.display().to_string());
            out.push('\0');
            out.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
            out.push('\0');
        }
        out
    }
}

impl Source for ManifestSource {
    fn name(&self) -> &str {
        "manifests"
    }
    fn desired(&self) -> Result<DesiredState, ConfigErrors> {
        load_path(&self.path)
    }
    fn watch(
        self: std::sync::Arc<Self>,
        changed: crate::source::Changed,
        stop: tokio_util::sync::CancellationToken,
    ) -> crate::source::WatchFuture {
        Box::pin(async move {
            let mut rx = match watch_manifests(self.path.clone(), WATCH_DEBOUNCE) {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(
                        "not watching {}: {e}; reload with SIGHUP",
                        self.path.display()
                    );
                    return;
                }
            };
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    got = rx.recv() => match got {
                        Some(()) => changed.notify(),
                        None => return,
                    },
                }
            }
        })
    }
}

/// How long changes to the manifests must be quiet before they are read.
const WATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(150);

fn read_error(path: &Path, e: impl std::fmt::Display) -> ConfigErrors {
    ConfigErrors::single(FieldError::parse(
        path.display().to_string(),
        format!("cannot read the manifests: {e}"),
    ))
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| read_error(path, e))? {
        let p = entry.map_err(|e| read_error(path, e))?.path();
        let yaml = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        // Skip hidden files (editor swap files, ConfigMap `..data` links).
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if yaml && !hidden && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a manifest file or directory into one desired state.
pub fn load_path(path: &Path) -> Result<DesiredState, ConfigErrors> {
    let mut acc = Acc::default();
    let mut errors = Vec::new();
    for f in manifest_files(path)? {
        let text = std::fs::read_to_string(&f).map_err(|e| read_error(&f, e))?;
        if let Err(mut e) = load_text(&text, &f.display().to_string(), &mut acc) {
            errors.append(&mut e.errors);
        }
    }
    if errors.is_empty() {
        Ok(finish(acc))
    } else {
        Err(ConfigErrors { errors })
    }
}

/// Parses the YAML documents of one file (named `file` in messages) into
/// `state`. Every document is read, so every error is reported at once.
pub fn load_str(text: &str, file: &str) -> Result<DesiredState, ConfigErrors> {
    let mut acc = Acc::default();
    load_text(text, file, &mut acc)?;
    Ok(finish(acc))
}

fn load_text(text: &str, file: &str, acc: &mut Acc) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                errors.push(FieldError::parse(
                    format!("{file}: document {document}"),
                    format!("not valid YAML: {e}"),
                ));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        let mut cx = Doc {
            file,
            document,
            acc,
            errors: &mut errors,
        };
        cx.object(value, "", 0);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { errors })
    }
}

/// Cross-document steps: EndpointSlices of one service become one
/// `[[endpoints]]`, replacing an Endpoints object of the same name (slices are
/// what kube-proxy reads); L2Advertisements naming unknown pools warn.
fn finish(acc: Acc) -> DesiredState {
    let mut state = acc.state;
    let mut by_service: BTreeMap<(String, String), Vec<Sourced<RawEndpointSubset>>> =
        BTreeMap::new();
    for (k, s) in acc.slices {
        by_service.entry(k).or_default().push(s);
    }
    for ((ns, name), subsets) in by_service {
        let before = state.endpoints.len();
        state.endpoints.retain(|e| {
            !(e.object.name == name && e.object.namespace.as_deref().unwrap_or("default") == ns)
        });
        if state.endpoints.len() != before {
            state.warnings.push(format!(
                "endpoints[{ns}/{name}]: the Endpoints object is ignored: EndpointSlices of the same service take its place"
            ));
        }
        let origin = subsets[0].origin.clone();
        state.endpoints.push(Sourced::new(
            RawEndpoints {
                name,
                namespace: Some(ns),
                subsets: subsets.into_iter().map(|s| s.object).collect(),
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

/// What the documents of one load add up to before [`finish`].
#[derive(Debug, Default)]
struct Acc {
    state: DesiredState,
    /// EndpointSlices as subsets, by (namespace, service name).
    slices: Vec<((String, String), Sourced<RawEndpointSubset>)>,
    /// L2Advertisements: name and the pools they name.
    l2: Vec<(String, Vec<String>)>,
}

struct Doc<'a> {
    file: &'a str,
    document: usize,
    acc: &'a mut Acc,
    errors: &'a mut Vec<FieldError>,
}

fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

impl Doc<'_> {
    fn origin(&self) -> Origin {
        Origin::Manifest {
            path: self.file.to_string(),
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

    fn object(&mut self, value: Value, item: &str, depth: usize) {
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
            self.errors.push(FieldError::required(
                format!("{at}.kind"),
                "kind is required",
            ));
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
                if let Some(s) = self.typed::<types::Service>(value, &at) {
                    self.service(s, &at);
                }
            }
            "Endpoints" if expect(&["v1"]) => {
                if let Some(e) = self.typed::<types::Endpoints>(value, &at) {
                    self.endpoints(e);
                }
            }
            "EndpointSlice" if expect(&["discovery.k8s.io/v1"]) => {
                if let Some(e) = self.typed::<types::EndpointSlice>(value, &at) {
                    self.endpoint_slice(e, &at);
                }
            }
            "Pod" if expect(&["v1"]) => {
                if let Some(p) = self.typed::<types::Pod>(value, &at) {
                    self.pod(p, &at);
                }
            }
            "IPAddressPool" if expect(&["metallb.io/v1beta1", "metallb.io/v1beta2"]) => {
                if let Some(p) = self.typed::<types::IpAddressPool>(value, &at) {
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
                if let Some(a) = self.typed::<types::L2Advertisement>(value, &at) {
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

    /// Deserializes into `T`, reporting ignored fields as one warning and a
    /// wrong type as an error with its path.
    fn typed<T: DeserializeOwned>(&mut self, value: Value, at: &str) -> Option<T> {
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
                self.errors.push(FieldError::parse(
                    format!("{at}.{path}"),
                    e.into_inner().to_string(),
                ));
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
        if let Some(ips) = &spec.cluster_ips {
            if ips.len() > 1 {
                self.acc.state.warnings.push(format!(
                    "{at}: spec.clusterIPs: only the first address is served (dual-stack comes later)"
                ));
            }
        }
        let cluster_ip = spec
            .cluster_ip
            .filter(|s| !s.is_empty())
            .or_else(|| spec.cluster_ips.and_then(|v| v.into_iter().next()));
        let raw = RawService {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            service_type: spec.service_type,
            cluster_ip,
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
            ports: spec
                .ports
                .into_iter()
                .map(|p| RawServicePort {
                    name: p.name.filter(|n| !n.is_empty()),
                    protocol: p.protocol,
                    port: p.port,
                    target_port: p.target_port,
                    node_port: p.node_port.filter(|n| *n != 0),
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
        };
        let raw = RawEndpoints {
            name: e.metadata.name,
            namespace: e.metadata.namespace,
            subsets: e
                .subsets
                .into_iter()
                .map(|s| RawEndpointSubset {
                    addresses: s.addresses.into_iter().map(addr).collect(),
                    not_ready_addresses: s.not_ready_addresses.into_iter().map(addr).collect(),
                    ports: s.ports.into_iter().map(endpoint_port).collect(),
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
            // As kube-proxy reads slices: ready unset counts as ready.
            // Serving-but-terminating endpoints have no place in the
            // Endpoints shape; they are listed as not ready.
            let ready =
                ep.conditions.ready.unwrap_or(true) && !ep.conditions.terminating.unwrap_or(false);
            let _ = ep.conditions.serving;
            for ip in ep.addresses {
                let a = RawEndpointAddress {
                    ip: Some(ip),
                    host: None,
                    hostname: ep.hostname.clone(),
                    node_name: ep.node_name.clone(),
                    weight: None,
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
        let ready = p.status.conditions.map(|c| {
            c.iter()
                .any(|c| c.condition_type == "Ready" && c.status == "True")
        });
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
                        tcp_socket: pr.tcp_socket.map(|a| RawTcpSocketAction { port: a.port }),
                        http_get: pr.http_get.map(|a| RawHttpGetAction {
                            path: a.path,
                            port: a.port,
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

/// Watches `--manifests PATH` like the config file: a file through
/// [`crate::watch_file`] (edits, renames, ConfigMap swaps), a directory
/// through a watch on the directory itself (files added, changed, removed).
/// Sends `()` after changes have been quiet for `debounce`.
pub fn watch_manifests(
    path: PathBuf,
    debounce: std::time::Duration,
) -> Result<tokio::sync::mpsc::Receiver<()>, crate::WatchError> {
    use notify::{EventKind, RecursiveMode, Watcher};
    if !path.is_dir() {
        return crate::watch_file(path, debounce);
    }
    let (event_tx, event_rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
    let notify_err = |source| crate::WatchError::Notify {
        path: path.display().to_string(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |e| {
        // The receiving thread may be gone; nothing to do then.
        let _ = event_tx.send(e);
    })
    .map_err(notify_err)?;
    watcher
        .watch(&path, RecursiveMode::NonRecursive)
        .map_err(notify_err)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let relevant = |e: &notify::Result<notify::Event>| match e {
        Ok(e) => !matches!(e.kind, EventKind::Access(_)),
        Err(_) => true,
    };
    std::thread::Builder::new()
        .name("lb-manifests-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            let poll = std::time::Duration::from_millis(500);
            loop {
                if tx.is_closed() {
                    return;
                }
                let first = match event_rx.recv_timeout(poll) {
                    Ok(e) => e,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return,
                };
                let mut fire = relevant(&first);
                loop {
                    match event_rx.recv_timeout(debounce) {
                        Ok(e) => fire |= relevant(&e),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(_) => return,
                    }
                }
                if fire {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(())
                    {
                        return;
                    }
                }
            }
        })
        .map_err(|e| crate::WatchError::Notify {
            path: "watch thread".into(),
            source: notify::Error::io(e),
        })?;
    Ok(rx)
}
