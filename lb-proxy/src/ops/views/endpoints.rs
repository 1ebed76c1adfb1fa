//! `/api/v1/endpoints`: every endpoint of every service port with its
//! EndpointSlice conditions, its live counters, and why it is out of
//! rotation (weight 0, terminating, a failing probe, an ejection) and since
//! when.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use lb_core::health::PodKey;
use lb_core::stats::CloseCause;
use lb_core::{Protocol, ServicePort, ServiceType, Snapshot};
use serde::{Deserialize, Serialize};

use super::time::format_rfc3339;
use crate::control::probe::ProbeStatus;

/// Body of `GET /api/v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EndpointsList {
    /// One entry per service that can have endpoints (every type but
    /// ExternalName), in namespace/name order.
    pub items: Vec<EndpointsView>,
}

/// The endpoints of one service, across all of its ports, with their
/// EndpointSlice conditions and live connection counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsView {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Every endpoint of every port, ready or not, port by port.
    pub endpoints: Vec<EndpointView>,
    /// When the service first appeared, RFC 3339 in UTC (for the AGE column).
    #[serde(default)]
    pub created: String,
}

/// One endpoint of one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// Endpoint address.
    pub ip: String,
    /// Endpoint port (the resolved target port).
    pub port: u16,
    /// Name of the service port it serves.
    pub port_name: String,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// Node it runs on, `""` when unknown.
    pub node: String,
    /// EndpointSlice `zone`, omitted when unknown: with
    /// `traffic_distribution` or zone hints, which endpoints this node's
    /// cluster traffic prefers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Relative share of new connections.
    pub weight: u32,
    /// EndpointSlice `ready`: takes new connections.
    pub ready: bool,
    /// EndpointSlice `serving`.
    pub serving: bool,
    /// EndpointSlice `terminating`.
    pub terminating: bool,
    /// Connections open to it now.
    pub active_connections: u64,
    /// `ready` (takes new connections), `not_ready`, `terminating`,
    /// `ejected` or `draining` (weight 0): one word for scripts.
    #[serde(default)]
    pub state: String,
    /// Why it takes no new connections (`probe failing: HTTP 500`, `ejected
    /// after ...`, `terminating`, `weight 0`, `not ready`); empty when it does.
    #[serde(default)]
    pub reason: String,
    /// When it entered this state, RFC 3339 in UTC.
    #[serde(default)]
    pub since: String,
    /// The last readiness probe result of its pod, empty without a probe.
    #[serde(default)]
    pub probe: String,
    /// Connections (TCP) established to it so far.
    #[serde(default)]
    pub connections_total: u64,
    /// Bytes from clients to it so far.
    #[serde(default)]
    pub bytes_rx: u64,
    /// Bytes from it to clients so far.
    #[serde(default)]
    pub bytes_tx: u64,
    /// Its dial failures, resets, failovers, peak and last probe result
    /// (flattened: the fields sit beside the ones above).
    #[serde(flatten)]
    pub detail: EndpointDetail,
}

/// The figures of an endpoint the status page shows beyond its connections
/// and bytes: what went wrong with it, how busy it got, and what its probe
/// last found. Every field defaults, so a newer CLI reads an older proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EndpointDetail {
    /// The service port's number (on the cluster IP), so an unnamed port
    /// can be shown as `80/TCP`.
    #[serde(default)]
    pub service_port: u16,
    /// Dials to it that failed or timed out.
    #[serde(default)]
    pub connect_errors: u64,
    /// Forwarded connections to it that ended in a reset (a leg failed).
    #[serde(default)]
    pub resets: u64,
    /// Client connections that moved on to another endpoint after a dial
    /// to this one failed.
    #[serde(default)]
    pub failovers: u64,
    /// The most connections open to it at once.
    #[serde(default)]
    pub peak_active: u64,
    /// The last readiness probe's result as HAProxy words it (`L4OK`,
    /// `L4CON`, `L7STS/500`, ...); empty without a probe or before the first.
    #[serde(default)]
    pub probe_check: String,
    /// How long the last readiness probe took, in milliseconds; absent
    /// without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_latency_ms: Option<u64>,
}

/// Builds the `/api/v1/endpoints` body from the snapshot's resolved endpoints
/// and their live counters (no probe results: see [`endpoints_view_with`]).
pub fn endpoints_view(snapshot: &Snapshot) -> EndpointsList {
    endpoints_view_with(snapshot, &BTreeMap::new())
}

/// Builds the `/api/v1/endpoints` body with the probe verdicts of `probes`
/// (keyed by pod), so each endpoint says why it is out of rotation and since
/// when.
pub fn endpoints_view_with(
    snapshot: &Snapshot,
    probes: &BTreeMap<PodKey, ProbeStatus>,
) -> EndpointsList {
    let now = tokio::time::Instant::now().into_std();
    let wall = SystemTime::now();
    let items = snapshot
        .services()
        .filter(|entry| entry.spec.service_type != ServiceType::ExternalName)
        .map(|entry| {
            let endpoints = entry
                .ports
                .iter()
                .flat_map(|port| {
                    let key = port.key();
                    let namespace = &entry.spec.key.namespace;
                    port.endpoints().iter().enumerate().map(move |(i, e)| {
                        let probe = e.pod.as_ref().and_then(|pod| {
                            probes.get(&PodKey::new(namespace.clone(), pod.clone()))
                        });
                        let (state, reason, since) = endpoint_state(port, i, probe, now, wall);
                        EndpointView {
                            ip: e.addr.ip().to_string(),
                            port: e.addr.port(),
                            port_name: key.port_name.clone(),
                            protocol: key.protocol,
                            node: e.node.clone().unwrap_or_default(),
                            zone: e.zone.clone(),
                            weight: e.weight,
                            ready: e.ready,
                            serving: e.serving,
                            terminating: e.terminating,
                            active_connections: lb_core::stats::read(&e.stats.active),
                            state: state.to_string(),
                            reason,
                            since: format_rfc3339(since),
                            probe: probe.map(|p| p.message.clone()).unwrap_or_default(),
                            connections_total: lb_core::stats::read(&e.stats.connections),
                            bytes_rx: lb_core::stats::read(&e.stats.bytes_rx),
                            bytes_tx: lb_core::stats::read(&e.stats.bytes_tx),
                            detail: EndpointDetail {
                                service_port: key.port,
                                connect_errors: lb_core::stats::read(&e.stats.connect_errors),
                                resets: e.stats.closed.get(CloseCause::Reset),
                                failovers: lb_core::stats::read(&e.stats.failovers),
                                peak_active: lb_core::stats::read(&e.stats.peak_active),
                                probe_check: probe.map(|p| p.check.clone()).unwrap_or_default(),
                                probe_latency_ms: probe
                                    .and_then(|p| p.latency)
                                    .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
                            },
                        }
                    })
                })
                .collect();
            EndpointsView {
                namespace: entry.spec.key.namespace.clone(),
                name: entry.spec.key.name.clone(),
                endpoints,
                created: format_rfc3339(entry.created),
            }
        })
        .collect();
    EndpointsList { items }
}

/// State word, reason and since-when of endpoint `index` of `port`. The first
/// cause that applies wins: weight 0, terminating, not serving (probe or
/// static), ejected (after the panic rule).
fn endpoint_state(
    port: &ServicePort,
    index: usize,
    probe: Option<&ProbeStatus>,
    now: Instant,
    wall: SystemTime,
) -> (&'static str, String, SystemTime) {
    let e = port.endpoint(index);
    if e.weight == 0 {
        return ("draining", "weight 0".into(), e.since);
    }
    if e.terminating && !e.ready {
        return ("terminating", "terminating".into(), e.since);
    }
    if !e.ready {
        return match probe {
            Some(p) => (
                "not_ready",
                format!("probe failing: {}", p.message),
                p.since,
            ),
            None => ("not_ready", "not ready".into(), e.since),
        };
    }
    if let Some(ejection) = e.health.ejection(now) {
        let until = wall + ejection.until.saturating_duration_since(now);
        if port.ejection_in_force(false, index, now) {
            return (
                "ejected",
                format!(
                    "ejected after consecutive dial failures (ejection {} in a row, until {})",
                    ejection.count,
                    format_rfc3339(until)
                ),
                ejection.since,
            );
        }
        return (
            "ready",
            "ejection ignored: every endpoint of the port is ejected (panic rule)".into(),
            ejection.since,
        );
    }
    let since = match probe {
        Some(p) => p.since.max(e.since),
        None => e.since,
    };
    ("ready", String::new(), since)
}
