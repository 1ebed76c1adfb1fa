//! `/api/v1/pods`: the pods lb knows (`[[pods]]`, manifest Pods, etcd
//! Pods), with the readiness lb gives them: their probe's verdict when they
//! have a readiness probe, else what they declare.

use std::collections::BTreeMap;
use std::time::SystemTime;

use lb_core::health::PodKey;
use serde::{Deserialize, Serialize};

use super::conditions::Transitions;
use super::time::format_rfc3339;
use crate::control::probe::ProbeStatus;

/// Body of `GET /api/v1/pods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PodList {
    /// One entry per pod, in namespace/name order.
    pub items: Vec<PodView>,
}

/// One pod as lb sees it: where it is, its labels, and whether lb sends it
/// traffic (ready) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The pod's address.
    pub ip: String,
    /// The node it runs on, empty when not said.
    #[serde(default)]
    pub node: String,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ready as lb sees it: its readiness probe's verdict (not ready until
    /// the first probe passes), else as declared.
    pub ready: bool,
    /// `Running`, or `Terminating` for a pod being deleted (kubectl's
    /// STATUS).
    pub status: String,
    /// Whether a readiness probe decides `ready`.
    #[serde(default)]
    pub probed: bool,
    /// What its last probe found (`HTTP 500`, `not probed yet`); empty
    /// without a probe.
    #[serde(default)]
    pub probe: String,
    /// When its probe's verdict last changed, RFC 3339 in UTC; empty without
    /// a probe.
    #[serde(default)]
    pub since: String,
    /// When this proxy first saw it, RFC 3339 in UTC (for the AGE column);
    /// empty when unknown.
    #[serde(default)]
    pub created: String,
}

/// Builds the `/api/v1/pods` body from the config being served (`None`:
/// no control plane, no pods) and the probe verdicts; `transitions`
/// remembers when each pod was first seen (without, every pod is `now`).
pub fn pods_view(
    config: Option<&lb_config::Config>,
    probes: &BTreeMap<PodKey, ProbeStatus>,
    transitions: Option<&Transitions>,
    now: SystemTime,
) -> PodList {
    let Some(config) = config else {
        return PodList::default();
    };
    let mut pods: Vec<&lb_config::PodObject> = config.pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    pods.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
    let keys: Vec<PodKey> = pods
        .iter()
        .map(|p| PodKey::new(p.namespace.clone(), p.name.clone()))
        .collect();
    let created = match transitions {
        Some(t) => t.pods_seen(&keys, now),
        None => vec![now; keys.len()],
    };
    let items = pods
        .into_iter()
        .zip(keys)
        .zip(created)
        .map(|((p, key), created)| {
            let probe = probes.get(&key);
            let ready = if p.probed {
                probe.is_some_and(|s| s.ready)
            } else {
                p.ready
            };
            PodView {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ip: p.ip.to_string(),
                node: p.node.clone(),
                labels: p.labels.clone(),
                ready,
                status: if p.terminating {
                    "Terminating"
                } else {
                    "Running"
                }
                .to_string(),
                probed: p.probed,
                probe: match (p.probed, probe) {
                    (true, Some(s)) => s.message.clone(),
                    (true, None) => "not probed yet".to_string(),
                    (false, _) => String::new(),
                },
                since: probe.map(|s| format_rfc3339(s.since)).unwrap_or_default(),
                created: format_rfc3339(created),
            }
        })
        .collect();
    PodList { items }
}
