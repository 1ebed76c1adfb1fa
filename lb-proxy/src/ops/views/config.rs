//! `/api/v1/config`: the configuration in force after validation and
//! allocation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lb_core::{FrontendKey, Snapshot};
use serde::{Deserialize, Serialize};

use super::services::{services_view, ServiceView};

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
    /// This process: who owns the frontends below.
    pub process: ProcessView,
    /// Every address this proxy listens on (or tries to), with the service
    /// port and the owner, so two proxies that share a port by accident
    /// (`SO_REUSEPORT`) can be told apart by asking each.
    pub frontends: Vec<FrontendView>,
    /// The data plane's descriptor budget (limit, reserve, in use), so an
    /// operator sees how close clients are to being refused as
    /// `local_resources`; absent when the source has no data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors: Option<crate::dataplane::DescriptorBudget>,
}

/// The process serving the config, in [`ConfigView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessView {
    /// Its process id.
    pub pid: u32,
    /// The node it serves as (`node.name`).
    pub node: String,
    /// `lb-proxy --version`'s version and git revision.
    pub version: String,
    /// When the process started (RFC 3339, UTC); empty where /proc cannot
    /// tell.
    #[serde(default)]
    pub started: String,
}

impl ProcessView {
    /// This process: its pid, the node it serves as, its version and start.
    pub fn this(node: &str) -> ProcessView {
        let started = process_start_unix_seconds()
            .map(|secs| {
                super::time::format_rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs),
                )
            })
            .unwrap_or_default();
        ProcessView {
            pid: std::process::id(),
            node: node.to_string(),
            version: format!("{} ({})", env!("CARGO_PKG_VERSION"), crate::BUILD_REVISION),
            started,
        }
    }
}

/// One frontend in [`ConfigView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    /// `IP:PORT`.
    pub address: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// The service port it serves, `NAMESPACE/NAME:PORT/PROTOCOL`.
    pub service: String,
    /// `cluster IP`, `node port`, `external IP` or `LoadBalancer address`.
    pub kind: String,
    /// Who owns it: `node NODE, pid PID`.
    pub owner: String,
    /// Why it is not bound, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_error: Option<String>,
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
    descriptors: Option<crate::dataplane::DescriptorBudget>,
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
        proxy.insert("forward_engine".into(), s.forward_engine.as_str().into());
        proxy.insert("accept_mode".into(), s.accept_mode.as_str().into());
        proxy.insert("workers".into(), s.workers.to_string());
        // `[log] access`, kept with the data plane's settings.
        proxy.insert("access_log".into(), s.access_log.to_string());
    }
    let node = snapshot.node().name.clone();
    let pid = std::process::id();
    let owner = format!("node {node}, pid {pid}");
    let mut bound: Vec<_> = snapshot.frontends().collect();
    bound.sort_by_key(|(key, _)| **key);
    let frontends: Vec<FrontendView> = bound
        .into_iter()
        .map(|(key, entry)| FrontendView {
            address: key.addr.to_string(),
            protocol: key.protocol.to_string(),
            service: entry.port.key().to_string(),
            kind: entry.kind.as_str().into(),
            owner: owner.clone(),
            bind_error: bind_errors.get(key).cloned(),
        })
        .collect();
    ConfigView {
        process: ProcessView::this(&node),
        frontends,
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
        descriptors,
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every Linux architecture lb runs on).
const USER_HZ: f64 = 100.0;

/// When this process started, in seconds since the Unix epoch: starttime
/// (field 22 of /proc/self/stat, clock ticks after boot) dated by
/// /proc/stat's btime. `None` off Linux or when /proc cannot be read.
pub fn process_start_unix_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let started: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + started / USER_HZ)
}
