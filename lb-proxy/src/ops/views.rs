//! The JSON shapes of `/api/v1/services` and `/api/v1/endpoints` and the
//! `kubectl get`-style tables printed from them.
//!
//! The shapes are part of the product contract: fields may be added, never
//! renamed. They derive `Deserialize` as well as `Serialize` because
//! `lb-proxy get` parses the admin API's answer back before printing a table, so
//! the CLI and the server can never disagree about a column. Fields that were
//! added after the contract's example carry `#[serde(default)]`, so a newer CLI
//! still reads an older proxy.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::time::Instant;

use lb_core::health::PodKey;
use lb_core::{ClusterIp, FrontendKey, Protocol, ServicePort, ServiceType, Snapshot, TargetPort};

use crate::control::probe::ProbeStatus;
use serde::{Deserialize, Serialize};

/// Body of `GET /api/v1/services`: a Kubernetes-style list, so tools that read
/// `kubectl get -o json` output find `items` where they expect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceList {
    /// One entry per service, in namespace/name order.
    pub items: Vec<ServiceView>,
}

/// One service as an operator sees it: its spec after allocation (so allocated
/// cluster IPs, node ports and pool addresses are visible) plus the frontends
/// that failed to bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// The cluster IP; `"None"` for a headless service and `""` for an
    /// ExternalName service, as the Kubernetes API shows them.
    pub cluster_ip: String,
    /// `spec.externalIPs`.
    pub external_ips: Vec<String>,
    /// LoadBalancer addresses assigned from a pool (empty while pending).
    pub load_balancer_ingress: Vec<String>,
    /// Pool the LoadBalancer address came from, or empty.
    pub ip_pool: String,
    /// `None` or `ClientIP`.
    pub session_affinity: String,
    /// Health check node port, 0 for none.
    pub health_check_node_port: u16,
    /// The service ports.
    pub ports: Vec<PortView>,
    /// Frontends of this service that could not be bound (they are retried);
    /// empty when every frontend listens.
    #[serde(default)]
    pub bind_errors: Vec<BindErrorView>,
    /// When the service first appeared, RFC 3339 in UTC (for the AGE column);
    /// empty when unknown.
    #[serde(default)]
    pub created: String,
    /// Target of an ExternalName service, else empty.
    #[serde(default)]
    pub external_name: String,
    /// `Cluster` or `Local`.
    #[serde(default)]
    pub external_traffic_policy: String,
    /// `Cluster` or `Local`.
    #[serde(default)]
    pub internal_traffic_policy: String,
}

/// One service port as configured and allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// Port name (may be empty for a single-port service).
    pub name: String,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// Port on the cluster IP and external addresses.
    pub port: u16,
    /// Target port as configured: a number or a container port name.
    pub target_port: TargetPort,
    /// Node port, 0 when none.
    pub node_port: u16,
}

/// A frontend that failed to bind, so an operator can see why an address does
/// not answer without reading logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindErrorView {
    /// `IP:PORT` (`[IP]:PORT` for IPv6).
    pub address: String,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// The error as the operating system reported it.
    pub error: String,
}

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
}

/// Builds the `/api/v1/services` body. `bind_errors` holds every frontend that
/// failed to bind; each is reported under the service whose frontend it is in
/// `snapshot` (errors for frontends no longer in the snapshot are dropped:
/// nothing retries them any more).
pub fn services_view(
    snapshot: &Snapshot,
    bind_errors: &BTreeMap<FrontendKey, String>,
) -> ServiceList {
    let mut errors_by_service: BTreeMap<&lb_core::ServiceKey, Vec<BindErrorView>> = BTreeMap::new();
    for (key, error) in bind_errors {
        if let Some(entry) = snapshot.frontend(key.addr, key.protocol) {
            errors_by_service
                .entry(&entry.port.key().service)
                .or_default()
                .push(BindErrorView {
                    address: key.addr.to_string(),
                    protocol: key.protocol,
                    error: error.clone(),
                });
        }
    }
    let items = snapshot
        .services()
        .map(|entry| {
            let spec = &entry.spec;
            let cluster_ip = match (spec.service_type, spec.cluster_ip) {
                (ServiceType::ExternalName, _) => String::new(),
                (_, ClusterIp::None) => "None".to_string(),
                (_, ClusterIp::Ip(ip)) => ip.to_string(),
            };
            ServiceView {
                namespace: spec.key.namespace.clone(),
                name: spec.key.name.clone(),
                service_type: spec.service_type.as_str().to_string(),
                cluster_ip,
                external_ips: spec.external_ips.iter().map(IpAddr::to_string).collect(),
                load_balancer_ingress: spec
                    .load_balancer_ips
                    .iter()
                    .map(IpAddr::to_string)
                    .collect(),
                ip_pool: spec.ip_pool.clone(),
                session_affinity: spec.session_affinity.as_str().to_string(),
                health_check_node_port: spec.health_check_node_port,
                ports: spec
                    .ports
                    .iter()
                    .map(|p| PortView {
                        name: p.name.clone(),
                        protocol: p.protocol,
                        port: p.port,
                        target_port: p.target_port.clone(),
                        node_port: p.node_port.unwrap_or(0),
                    })
                    .collect(),
                bind_errors: errors_by_service.remove(&spec.key).unwrap_or_default(),
                created: format_rfc3339(entry.created),
                external_name: spec.external_name.clone(),
                external_traffic_policy: spec.external_traffic_policy.as_str().to_string(),
                internal_traffic_policy: spec.internal_traffic_policy.as_str().to_string(),
            }
        })
        .collect();
    ServiceList { items }
}

/// Body of `GET /api/v1/config`: the configuration in force after
/// validation and allocation, so an operator sees which cluster IPs, node
/// ports and LoadBalancer addresses were assigned without reading the state
/// file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The snapshot generation being served.
    pub generation: u64,
    /// `[node]`: this proxy's name and node addresses.
    pub node: NodeView,
    /// `[proxy]` settings in force (durations as `250ms`, `30s`); empty when
    /// the source does not know them.
    pub proxy: BTreeMap<String, String>,
    /// Every service with its allocations, as `/api/v1/services` shows them.
    pub services: Vec<ServiceView>,
}

/// `[node]` in [`ConfigView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name (traffic policies compare endpoints' nodes with it).
    pub name: String,
    /// Where node ports listen.
    pub addresses: Vec<String>,
}

/// Builds the `/api/v1/config` body.
pub fn config_view(
    snapshot: &Snapshot,
    settings: Option<&lb_core::ProxySettings>,
    bind_errors: &BTreeMap<FrontendKey, String>,
) -> ConfigView {
    let mut proxy = BTreeMap::new();
    if let Some(s) = settings {
        let ms: Vec<String> = s
            .connect_timeouts
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect();
        proxy.insert("connect_timeouts_ms".into(), format!("[{}]", ms.join(", ")));
        proxy.insert(
            "tcp_idle_timeout".into(),
            s.tcp_idle_timeout.map_or("0".into(), |d| format!("{d:?}")),
        );
        proxy.insert(
            "half_close_timeout".into(),
            format!("{:?}", s.half_close_timeout),
        );
        proxy.insert(
            "udp_idle_timeout".into(),
            format!("{:?}", s.udp_idle_timeout),
        );
        proxy.insert("drain_timeout".into(), format!("{:?}", s.drain_timeout));
        proxy.insert("max_connections".into(), s.max_connections.to_string());
        proxy.insert(
            "outlier_consecutive_failures".into(),
            s.outlier_consecutive_failures.to_string(),
        );
        proxy.insert(
            "outlier_base_ejection".into(),
            format!("{:?}", s.outlier_base_ejection),
        );
        proxy.insert("udp_max_flows".into(), s.udp_max_flows.to_string());
    }
    ConfigView {
        generation: snapshot.generation(),
        node: NodeView {
            name: snapshot.node().name.clone(),
            addresses: snapshot
                .node()
                .addresses
                .iter()
                .map(IpAddr::to_string)
                .collect(),
        },
        proxy,
        services: services_view(snapshot, bind_errors).items,
    }
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
        if port.is_ejected(false, index, now) {
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

/// What kubectl prints for an empty cell.
const NONE: &str = "<none>";

/// How many endpoints the ENDPOINTS column lists before `+ N more...`, as
/// kubectl.
const MAX_LISTED_ENDPOINTS: usize = 3;

/// Renders `lb-proxy get services` like `kubectl get svc`
/// (`NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE`), so operators read it
/// without learning a new format. A service outside `default` is shown as
/// `namespace/name`. `now` is a parameter so output is reproducible in tests.
pub fn services_table(list: &ServiceList, now: SystemTime) -> String {
    services_rows(list, now, false)
}

/// Renders `lb-proxy get services -o wide`: the table above plus IP-POOL,
/// the pool each LoadBalancer address came from (kubectl has no such column;
/// MetalLB users look it up in the Service's events).
pub fn services_wide_table(list: &ServiceList, now: SystemTime) -> String {
    services_rows(list, now, true)
}

fn services_rows(list: &ServiceList, now: SystemTime, wide: bool) -> String {
    let mut header = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if wide {
        header.push("IP-POOL");
    }
    let mut rows = vec![row(&header)];
    for s in &list.items {
        let mut cells = vec![
            display_name(&s.namespace, &s.name),
            s.service_type.clone(),
            or_none(s.cluster_ip.clone()),
            or_none(external_ip_column(s)),
            or_none(
                s.ports
                    .iter()
                    .map(|p| {
                        if p.node_port > 0 {
                            format!("{}:{}/{}", p.port, p.node_port, p.protocol)
                        } else {
                            format!("{}/{}", p.port, p.protocol)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            age(&s.created, now),
        ];
        if wide {
            cells.push(or_none(s.ip_pool.clone()));
        }
        rows.push(cells);
    }
    tabulate(&rows)
}

/// Renders `lb-proxy get endpoints` like `kubectl get ep`
/// (`NAME ENDPOINTS AGE`): ready endpoints only, at most three listed.
pub fn endpoints_table(list: &EndpointsList, now: SystemTime) -> String {
    let mut rows = vec![row(&["NAME", "ENDPOINTS", "AGE"])];
    for item in &list.items {
        let ready: Vec<String> = item
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| join_host_port(&e.ip, e.port))
            .collect();
        let column = if ready.len() > MAX_LISTED_ENDPOINTS {
            format!(
                "{} + {} more...",
                ready[..MAX_LISTED_ENDPOINTS].join(","),
                ready.len() - MAX_LISTED_ENDPOINTS
            )
        } else {
            ready.join(",")
        };
        rows.push(vec![
            display_name(&item.namespace, &item.name),
            or_none(column),
            age(&item.created, now),
        ]);
    }
    tabulate(&rows)
}

/// Renders `lb-proxy get endpoints -o wide`: one row per endpoint with its
/// state, why it is out of rotation and for how long
/// (`NAME ENDPOINT NODE STATE REASON SINCE`).
pub fn endpoints_wide_table(list: &EndpointsList, now: SystemTime) -> String {
    let mut rows = vec![row(&[
        "NAME", "ENDPOINT", "NODE", "STATE", "REASON", "SINCE",
    ])];
    for item in &list.items {
        for e in &item.endpoints {
            rows.push(vec![
                display_name(&item.namespace, &item.name),
                join_host_port(&e.ip, e.port),
                or_none(e.node.clone()),
                or_none(e.state.clone()),
                or_none(e.reason.clone()),
                age(&e.since, now),
            ]);
        }
    }
    tabulate(&rows)
}

/// Renders `lb-proxy get connections`: one row per open connection
/// (`NAME CLIENT ENDPOINT REASON RX TX AGE`; `-o wide` adds FRONTEND, PORT
/// and STARTED). AGE comes from the proxy's clock (`age_seconds`), so a CLI
/// on another host with a skewed clock still shows it right.
pub fn connections_table(
    list: &crate::dataplane::connections::ConnectionList,
    wide: bool,
) -> String {
    let mut header = vec!["NAME", "CLIENT", "ENDPOINT", "REASON", "RX", "TX", "AGE"];
    if wide {
        header.extend(["FRONTEND", "PORT", "STARTED"]);
    }
    let mut rows = vec![row(&header)];
    for c in &list.items {
        let mut r = vec![
            display_name(&c.namespace, &c.service),
            c.client.clone(),
            c.endpoint.clone(),
            c.pick_reason.clone(),
            c.bytes_rx.to_string(),
            c.bytes_tx.to_string(),
            human_duration(Duration::from_secs(c.age_seconds)),
        ];
        if wide {
            r.push(c.frontend.clone());
            r.push(format!("{}/{}", c.port, c.protocol));
            r.push(c.started.clone());
        }
        rows.push(r);
    }
    tabulate(&rows)
}

/// kubectl's EXTERNAL-IP column (`getServiceExternalIP`): LoadBalancer
/// ingress then external IPs, `<pending>` for a LoadBalancer without either,
/// the target for ExternalName. Unlike kubectl, long LoadBalancer lists are not
/// cut at 16 characters: there is no `-o wide` here to see the rest.
fn external_ip_column(s: &ServiceView) -> String {
    match s.service_type.as_str() {
        "LoadBalancer" => {
            let mut ingress = s.load_balancer_ingress.clone();
            ingress.sort();
            ingress.dedup();
            ingress.extend(s.external_ips.iter().cloned());
            if ingress.is_empty() {
                "<pending>".to_string()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => s.external_name.clone(),
        _ => s.external_ips.join(","),
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        NONE.to_string()
    } else {
        s
    }
}

/// `name` in namespace `default`, else `namespace/name` (the contract's naming
/// of objects everywhere in the CLI).
fn display_name(namespace: &str, name: &str) -> String {
    if namespace == "default" || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Go's `net.JoinHostPort`: brackets around IPv6 addresses.
fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The AGE column from an RFC 3339 creation time; `<unknown>` when the proxy
/// did not say (kubectl prints the same for a zero timestamp).
fn age(created: &str, now: SystemTime) -> String {
    match parse_rfc3339(created) {
        Some(created) => translate_timestamp_since(created, now),
        None => "<unknown>".to_string(),
    }
}

/// kubectl's `translateTimestampSince`: a clock slightly behind is `0s`, more
/// than a second behind is `<invalid>`.
fn translate_timestamp_since(created: SystemTime, now: SystemTime) -> String {
    match now.duration_since(created) {
        Ok(d) => human_duration(d),
        Err(e) if e.duration() < Duration::from_secs(2) => "0s".to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// kubectl's `duration.HumanDuration` (k8s.io/apimachinery): two or three
/// significant figures, so AGE reads the same here as in `kubectl get`.
/// `90s`, `5m30s`, `45m`, `3h10m`, `20h`, `3d4h`, `30d`, `2y45d`, `9y`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Aligns cells like kubectl's tabwriter (min width 6, padding 3, spaces): every
/// column but the last is padded to its widest cell plus three.
fn tabulate(rows: &[Vec<String>]) -> String {
    const MIN_WIDTH: usize = 6;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count() + PADDING)
                .max()
                .unwrap_or(0)
                .max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Formats a wall-clock time as RFC 3339 in UTC to the second
/// (`2024-05-01T12:00:00Z`), the way Kubernetes writes `creationTimestamp`.
/// Times before 1970 are shown as the epoch.
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses what [`format_rfc3339`] writes (also accepting fractional seconds
/// and a numeric UTC offset), so the CLI can compute AGE from the API's
/// `created`. `None` for anything else, including times before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rb[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_across_leap_years_and_centuries() {
        for secs in [
            0u64,
            951_782_400, // 2000-02-29
            1_700_000_000,
            4_107_542_400, // 2100-03-01
            1_709_251_199, // 2024-02-29T23:59:59Z
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t), "{secs}");
        }
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.123+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_251_199 - 3600))
        );
        assert_eq!(parse_rfc3339(""), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00"), None);
    }

    #[test]
    fn tabulate_pads_every_column_but_the_last() {
        let out = tabulate(&[row(&["A", "BBBBBBB", "C"]), row(&["DD", "E", "F"])]);
        assert_eq!(out, "A     BBBBBBB   C\nDD    E         F\n");
    }
}
