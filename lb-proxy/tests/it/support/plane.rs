//! Data planes started in code: the node the tests run as, services built
//! by hand (TCP, UDP, weighted, pods), the [`Mode`] a scenario runs in
//! (forwarding engine and accept mode), the live counters of a frontend or
//! an endpoint, listening sockets as the kernel sees them, and a data plane
//! fed by a control plane whose probes decide readiness.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lb_core::health::{PodKey, ProbeAction, ProbeSpec};
use lb_core::stats::{EndpointStats, PortStats};
use lb_core::{
    AcceptMode, EndpointSpec, ForwardEngine, NodeSpec, PortSpec, Protocol, ProxySettings,
    ServiceSpec, Snapshot,
};
use lb_proxy::control::ControlPlane;
use lb_proxy::lifecycle::Tasks;
use lb_proxy::DataPlane;
use tokio::net::TcpStream;

use super::addr::ip;
use super::backend::Backend;
use super::client::fetch;
use super::init_tracing;

/// The node the tests run as: `node-1` at 127.0.1.1.
pub fn node() -> NodeSpec {
    NodeSpec {
        name: "node-1".into(),
        addresses: vec![ip("127.0.1.1")],
        zone: None,
    }
}

/// Settings with short dial timeouts, so failover tests stay fast.
pub fn settings() -> ProxySettings {
    ProxySettings {
        connect_timeouts: vec![Duration::from_millis(100); 3],
        drain_timeout: Duration::from_secs(2),
        ..ProxySettings::default()
    }
}

/// A single-port TCP ClusterIP service at `vip` over `endpoints`.
pub fn service(name: &str, vip: SocketAddr, endpoints: &[SocketAddr]) -> ServiceSpec {
    weighted_service(
        name,
        vip,
        &endpoints.iter().map(|e| (*e, 1)).collect::<Vec<_>>(),
    )
}

/// Like [`service`], with a weight per endpoint.
pub fn weighted_service(
    name: &str,
    vip: SocketAddr,
    endpoints: &[(SocketAddr, u32)],
) -> ServiceSpec {
    let mut port = PortSpec::tcp("", vip.port());
    for (addr, weight) in endpoints {
        port = port.with_endpoint(EndpointSpec::new(*addr).with_weight(*weight));
    }
    ServiceSpec::cluster_ip("default", name, vip.ip()).with_port(port)
}

/// A UDP port `name` at `port` over `endpoints`.
pub fn udp_port(name: &str, port: u16, endpoints: &[SocketAddr]) -> PortSpec {
    let mut spec = PortSpec {
        protocol: Protocol::Udp,
        ..PortSpec::tcp(name, port)
    };
    for e in endpoints {
        spec = spec.with_endpoint(EndpointSpec::new(*e));
    }
    spec
}

/// A single-port UDP ClusterIP service at `vip` over `endpoints`.
pub fn udp_service(name: &str, vip: SocketAddr, endpoints: &[SocketAddr]) -> ServiceSpec {
    ServiceSpec::cluster_ip("default", name, vip.ip()).with_port(udp_port(
        "",
        vip.port(),
        endpoints,
    ))
}

/// Builds a snapshot of `services` as the next one after `plane`'s current
/// table.
pub fn next_snapshot(plane: &DataPlane, services: Vec<ServiceSpec>) -> Snapshot {
    let current = plane.table().load();
    Snapshot::build(node(), services, Some(&current), SystemTime::now())
}

/// Starts a data plane serving `services` (default engine and accept mode).
pub async fn start(settings: ProxySettings, services: Vec<ServiceSpec>) -> DataPlane {
    start_on(node(), settings, services).await
}

/// Starts a data plane on `node` serving `services`.
pub async fn start_on(
    node: NodeSpec,
    settings: ProxySettings,
    services: Vec<ServiceSpec>,
) -> DataPlane {
    init_tracing();
    let snapshot = Snapshot::build(node, services, None, SystemTime::now());
    DataPlane::start(settings, snapshot).await
}

/// How a scenario runs: the forwarding engine and the accept mode (per-core
/// with two workers). The same scenarios run under each, in one binary; a
/// test in a mode that starts worker threads holds
/// [`process::shared`](super::process::shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// How bytes are moved.
    pub engine: ForwardEngine,
    /// How connections are accepted.
    pub accept: AcceptMode,
}

impl Mode {
    /// The defaults: engine `auto`, accept `single`.
    pub const DEFAULT: Mode = Mode {
        engine: ForwardEngine::Auto,
        accept: AcceptMode::Single,
    };

    /// The default accept mode under `engine`.
    pub const fn engine(engine: ForwardEngine) -> Mode {
        Mode {
            engine,
            accept: AcceptMode::Single,
        }
    }

    /// The default engine under `accept`.
    pub const fn accept(accept: AcceptMode) -> Mode {
        Mode {
            engine: ForwardEngine::Auto,
            accept,
        }
    }

    /// `settings` in this mode (two workers under `percore`).
    pub fn settings(self, settings: ProxySettings) -> ProxySettings {
        ProxySettings {
            forward_engine: self.engine,
            accept_mode: self.accept,
            workers: 2,
            ..settings
        }
    }

    /// Starts a data plane in this mode serving `services`.
    pub async fn start(self, settings: ProxySettings, services: Vec<ServiceSpec>) -> DataPlane {
        self.start_on(node(), settings, services).await
    }

    /// Starts a data plane in this mode on `node`.
    pub async fn start_on(
        self,
        node: NodeSpec,
        settings: ProxySettings,
        services: Vec<ServiceSpec>,
    ) -> DataPlane {
        start_on(node, self.settings(settings), services).await
    }

    /// How many listening sockets a TCP frontend has in this mode, on a
    /// runtime of `runtime_workers` threads.
    pub fn sockets_per_frontend(self, runtime_workers: usize) -> usize {
        match self.accept {
            AcceptMode::Single => 1,
            AcceptMode::Reuseport => runtime_workers,
            AcceptMode::PerCore => 2,
        }
    }
}

// === what the data plane counts ===

/// The live counters of the `protocol` frontend at `frontend`.
pub fn port_stats(plane: &DataPlane, frontend: SocketAddr, protocol: Protocol) -> Arc<PortStats> {
    plane
        .table()
        .load()
        .frontend(frontend, protocol)
        .expect("frontend")
        .port
        .stats()
        .clone()
}

/// The live counters of `endpoint` behind the TCP frontend `vip`, if both
/// are in the table.
pub fn try_endpoint_stats(
    plane: &DataPlane,
    vip: SocketAddr,
    endpoint: SocketAddr,
) -> Option<Arc<EndpointStats>> {
    let snapshot = plane.table().load();
    let port = &snapshot.frontend(vip, Protocol::Tcp)?.port;
    Some(port.endpoint(port.index_of(endpoint)?).stats.clone())
}

/// The live counters of `endpoint` behind the TCP frontend `vip`.
pub fn endpoint_stats(
    plane: &DataPlane,
    vip: SocketAddr,
    endpoint: SocketAddr,
) -> Arc<EndpointStats> {
    try_endpoint_stats(plane, vip, endpoint).expect("frontend and endpoint")
}

/// Listening TCP sockets bound exactly at `addr` (IPv4), from
/// /proc/net/tcp: how many `SO_REUSEPORT` siblings a frontend has.
pub fn listeners_at(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        return 0;
    };
    let want = format!("{:08X}:{:04X}", u32::from(*v4.ip()).swap_bytes(), v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
        .count()
}

/// What every multi-socket accept mode must do once its sockets are bound:
/// 100 fetches through `vip` all reach `backend` (which answers `body`);
/// then, with service `name` emptied, every socket at `vip` is closed and a
/// new connection is refused, not queued on a forgotten sibling.
pub async fn serves_then_closes_every_socket(
    plane: &DataPlane,
    name: &str,
    vip: SocketAddr,
    backend: &Backend,
    body: &str,
) {
    for _ in 0..100 {
        assert_eq!(fetch(vip).await, body);
    }
    assert_eq!(backend.accepted(), 100);
    plane
        .apply(next_snapshot(plane, vec![service(name, vip, &[])]))
        .await;
    assert_eq!(listeners_at(vip), 0);
    let refused = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(vip))
        .await
        .expect("connect answered within the bound")
        .expect_err("connect must be refused");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

// === pods and probes ===

/// A pod endpoint: `name` at `addr` on `node`.
pub fn pod(name: &str, addr: SocketAddr, node: &str) -> EndpointSpec {
    let mut e = EndpointSpec::new(addr);
    e.pod = Some(name.into());
    e.node = Some(node.into());
    e
}

/// A ClusterIP service `name` at `vip` over pod endpoints.
pub fn pod_service(name: &str, vip: SocketAddr, pods: Vec<EndpointSpec>) -> ServiceSpec {
    let mut port = PortSpec::tcp("", vip.port());
    for p in pods {
        port = port.with_endpoint(p);
    }
    ServiceSpec::cluster_ip("default", name, vip.ip()).with_port(port)
}

/// A fast probe of pod `name` (namespace `default`): every `period`, timeout
/// half of it, thresholds 1 and `failures`.
pub fn probe(
    name: &str,
    addr: SocketAddr,
    action: ProbeAction,
    period: Duration,
    failures: u32,
) -> ProbeSpec {
    ProbeSpec::new(PodKey::new("default", name), addr.ip(), action)
        .with_timing(period, period / 2)
        .with_thresholds(1, failures)
}

/// A TCP probe of the pod's own port.
pub fn tcp_probe(name: &str, addr: SocketAddr, period: Duration, failures: u32) -> ProbeSpec {
    probe(
        name,
        addr,
        ProbeAction::TcpSocket { port: addr.port() },
        period,
        failures,
    )
}

/// Settings for probe tests: short dials, ejection off (so only the probes
/// decide).
pub fn no_ejection() -> ProxySettings {
    ProxySettings {
        outlier_consecutive_failures: 0,
        ..settings()
    }
}

/// A data plane fed by a control plane whose desired state is `services`
/// and `probes`, given in code: the probe overlay decides readiness.
pub async fn start_probed(
    settings: ProxySettings,
    services: Vec<ServiceSpec>,
    probes: Vec<ProbeSpec>,
) -> (DataPlane, ControlPlane) {
    start_config(lb_config::Config {
        node: node(),
        proxy: settings,
        services: services.into_iter().map(std::sync::Arc::new).collect(),
        probes,
        ..lb_config::Config::default()
    })
    .await
}

/// A data plane fed by a control plane serving `config`.
pub async fn start_config(config: lb_config::Config) -> (DataPlane, ControlPlane) {
    init_tracing();
    let settings = config.proxy.clone();
    let (control, loaded) = ControlPlane::from_config(config, Tasks::new()).await;
    let plane = DataPlane::start(settings, loaded.snapshot).await;
    control.serve(&plane);
    (plane, control)
}

/// Conditions of the endpoint at `addr` of the service at `vip` now:
/// (ready, serving).
pub fn conditions(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> Option<(bool, bool)> {
    let snapshot = plane.table().load();
    let entry = snapshot.frontend(vip, Protocol::Tcp)?;
    let e = entry.port.endpoint(entry.port.index_of(addr)?);
    Some((e.ready, e.serving))
}

/// Whether the endpoint at `addr` takes new connections now.
pub fn is_ready(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> bool {
    conditions(plane, vip, addr).is_some_and(|(ready, _)| ready)
}

/// Dial failures counted against the endpoint at `addr` so far.
pub fn connect_errors(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> u64 {
    try_endpoint_stats(plane, vip, addr).map_or(0, |s| lb_core::stats::read(&s.connect_errors))
}

/// Whether the endpoint at `addr` is ejected now (after the panic rule).
pub fn is_ejected(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> bool {
    let snapshot = plane.table().load();
    let Some(entry) = snapshot.frontend(vip, Protocol::Tcp) else {
        return false;
    };
    let Some(i) = entry.port.index_of(addr) else {
        return false;
    };
    entry
        .port
        .ejection_in_force(false, i, tokio::time::Instant::now().into_std())
}
