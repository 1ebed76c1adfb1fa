//! The endpoints controller: which addresses serve each service port.
//!
//! - A selector service takes the pods of its namespace whose labels match every
//!   selector pair, crossed with the pod port its `target_port` names (by
//!   container port name and protocol) or the number (a number needs no
//!   declared pod port). A pod without the named port contributes nothing.
//! - A selector-less service takes the `[[endpoints]]` of the same namespace and
//!   name: each subset's addresses (ready) and not-ready addresses, with their
//!   `serving` and `terminating` conditions, crossed with the subset ports
//!   whose name and protocol equal the service port's. A mismatch means no
//!   endpoints, not an error (as in Kubernetes). lb-core picks ready
//!   endpoints, and serving-and-terminating ones only while none is ready
//!   (kube-proxy's terminating fallback).
//!
//! `publish_not_ready_addresses` is applied by lb-core from the service spec.
//! Pods with a readiness probe resolve as not serving here; the probe results
//! live beside this desired state (lb-proxy's overlay) and are folded in when
//! the snapshot is built.

use crate::hash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::net::SocketAddr;

use lb_core::{EndpointHints, EndpointSpec, PortSpec, ServiceKey, ServiceType, TargetPort};

use crate::carry::Carry;
use crate::resolve::HostEndpoint;
use crate::validation::{Endpoints, ManualEndpoints, Pod, ServiceDraft};

/// Fills every port's endpoints; returns the addresses given by DNS name,
/// which the resolver adds later as an overlay (`crate::resolve`). A
/// selector that matches no pod, and a named `target_port` that no selected
/// pod declares, leave a port without endpoints, as in Kubernetes; both are
/// far more often a typo than a wish, so each gets a line in `warnings`.
///
/// A service made of the very objects the last good load served it from is
/// carried over as it was served (`carry`; see [`crate::carry`]).
pub(crate) fn resolve(
    drafts: &mut [ServiceDraft],
    pods: &[Pod],
    endpoints: &[ManualEndpoints],
    carry: &Carry,
    warnings: &mut Vec<String>,
) -> Vec<HostEndpoint> {
    let mut hosts = Vec::new();
    // Indexes, so that resolving N services is not N scans of every pod and
    // every `[[endpoints]]` (10,000 services took seconds that way).
    let manual_by_name: HashMap<(&str, &str), &ManualEndpoints> =
        endpoints.iter().map(|e| (e.id(), e)).collect();
    let pods_by_label = PodIndex::new(pods);
    for d in drafts.iter_mut() {
        let manual = match &d.selector {
            Some(_) => None,
            None => manual_by_name
                .get(&(d.spec.key.namespace.as_str(), d.spec.key.name.as_str()))
                .copied(),
        };
        d.manual = manual.map(|m| m.raw.clone());
        if let Some((spec, carried_hosts)) = carry.find(d, d.manual.as_ref()) {
            d.carried = Some(spec.clone());
            hosts.extend_from_slice(carried_hosts);
            continue;
        }
        if d.spec.service_type == ServiceType::ExternalName {
            continue;
        }
        let key = d.spec.key.clone();
        match &d.selector {
            Some(selector) => {
                let chosen: Vec<&Pod> = pods_by_label
                    .candidates(&key.namespace, selector)
                    .into_iter()
                    .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                    .collect();
                if chosen.is_empty() && !selector.is_empty() {
                    warnings.push(format!(
                        "{}.selector: {} matches no pod in namespace {:?}; the service has no endpoints until one does",
                        d.path,
                        selector_text(selector),
                        key.namespace
                    ));
                }
                for (i, port) in d.spec.ports.iter_mut().enumerate() {
                    let eps: Vec<EndpointSpec> = chosen
                        .iter()
                        .filter_map(|pod| from_pod(port, pod))
                        .collect();
                    if let TargetPort::Name(name) = &port.target_port {
                        if eps.is_empty() && !chosen.is_empty() {
                            warnings.push(format!(
                                "{}.ports[{i}].target_port: no pod selected by {} has a {} port named {name:?}; the port has no endpoints",
                                d.path,
                                selector_text(selector),
                                port.protocol
                            ));
                        }
                    }
                    port.endpoints = dedup(eps);
                }
            }
            None => {
                let manual = manual.and_then(ManualEndpoints::get);
                for port in &mut d.spec.ports {
                    port.endpoints =
                        dedup(manual.map(|m| from_manual(port, m)).unwrap_or_default());
                    if let Some(m) = manual {
                        hosts.extend(hosts_of(&key, port, m));
                    }
                }
            }
        }
    }
    hosts
}

/// A selector as kubectl prints it: `app=web,tier=front`.
/// Pods by namespace and by each of their labels, in the order they came:
/// a selector's candidates are the pods carrying its rarest pair, so a
/// service selects among a few pods rather than scanning all of them.
struct PodIndex<'a> {
    by_namespace: HashMap<&'a str, Vec<&'a Pod>>,
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Pod>>,
}

impl<'a> PodIndex<'a> {
    fn new(pods: &'a [Pod]) -> PodIndex<'a> {
        let mut by_namespace: HashMap<&str, Vec<&Pod>> = HashMap::new();
        let mut by_label: HashMap<(&str, &str, &str), Vec<&Pod>> = HashMap::new();
        for p in pods {
            by_namespace
                .entry(p.namespace.as_str())
                .or_default()
                .push(p);
            for (k, v) in &p.labels {
                by_label
                    .entry((p.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(p);
            }
        }
        PodIndex {
            by_namespace,
            by_label,
        }
    }

    /// The pods of `namespace` that may match `selector`, in their order:
    /// those with its rarest pair (all of the namespace for an empty one).
    fn candidates(
        &self,
        namespace: &str,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Vec<&'a Pod> {
        let none = Vec::new();
        let list = if selector.is_empty() {
            self.by_namespace.get(namespace).unwrap_or(&none)
        } else {
            selector
                .iter()
                .map(|(k, v)| {
                    self.by_label
                        .get(&(namespace, k.as_str(), v.as_str()))
                        .unwrap_or(&none)
                })
                .min_by_key(|l| l.len())
                .unwrap_or(&none)
        };
        list.clone()
    }
}

fn selector_text(selector: &std::collections::BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn hosts_of(key: &ServiceKey, port: &PortSpec, manual: &Endpoints) -> Vec<HostEndpoint> {
    let mut out = Vec::new();
    for subset in &manual.subsets {
        let matching = subset
            .ports
            .iter()
            .filter(|(name, _, proto)| *name == port.name && *proto == port.protocol);
        for (_, number, _) in matching {
            for h in &subset.hosts {
                out.push(HostEndpoint {
                    service: key.clone(),
                    port_name: port.name.clone(),
                    protocol: port.protocol,
                    host: h.host.clone(),
                    port: *number,
                    ready: h.conditions.ready,
                    serving: h.conditions.serving,
                    terminating: h.conditions.terminating,
                    weight: h.weight,
                    node: h.node_name.clone(),
                    hostname: h.hostname.clone(),
                    zone: h.zone.clone(),
                    hints: h.hints.clone(),
                });
            }
        }
    }
    out
}

fn from_pod(port: &PortSpec, pod: &Pod) -> Option<EndpointSpec> {
    let number = match &port.target_port {
        TargetPort::Number(n) => *n,
        TargetPort::Name(name) => {
            pod.ports
                .iter()
                .find(|(n, _, proto)| n == name && *proto == port.protocol)?
                .1
        }
    };
    Some(EndpointSpec {
        addr: SocketAddr::new(pod.ip, number),
        node: Some(pod.node.clone()),
        weight: pod.weight,
        // Derived from serving and terminating, as the EndpointSlice
        // controller does for a pod.
        ready: None,
        // A pod with a readiness probe is not ready until its first success;
        // lb-proxy's probe overlay turns it on.
        serving: pod.ready && pod.probe.is_none(),
        terminating: pod.terminating,
        pod: Some(pod.name.clone()),
        hostname: pod.hostname.clone(),
        zone: pod.zone.clone(),
        // Pods carry no hints: the service's `trafficDistribution` derives
        // them in lb-core, as the EndpointSlice controller would.
        hints: EndpointHints::default(),
    })
}

fn from_manual(port: &PortSpec, manual: &Endpoints) -> Vec<EndpointSpec> {
    let mut out = Vec::new();
    for subset in &manual.subsets {
        let matching = subset
            .ports
            .iter()
            .filter(|(name, _, proto)| *name == port.name && *proto == port.protocol);
        for (_, number, _) in matching {
            for a in subset.addresses.iter().chain(&subset.not_ready) {
                out.push(EndpointSpec {
                    addr: SocketAddr::new(a.ip, *number),
                    node: a.node_name.clone(),
                    weight: a.weight,
                    ready: Some(a.conditions.ready),
                    serving: a.conditions.serving,
                    terminating: a.conditions.terminating,
                    pod: None,
                    hostname: a.hostname.clone(),
                    zone: a.zone.clone(),
                    hints: a.hints.clone(),
                });
            }
        }
    }
    out
}

/// One endpoint per address (the first wins), sorted by address so the order
/// does not depend on the file's.
fn dedup(mut eps: Vec<EndpointSpec>) -> Vec<EndpointSpec> {
    let mut seen = HashSet::new();
    eps.retain(|e| seen.insert(e.addr));
    eps.sort_by_key(|e| e.addr);
    // Served for the config's life: no room for more (10 endpoints had
    // room for 16, 11 MB at 10,000 services).
    eps.shrink_to_fit();
    eps
}
