//! Helpers for the health tests: services whose endpoints are pods, a data
//! plane with the probe overlay in front, views of one endpoint's state, and
//! backends that can be stopped so that dials hang. Loopback only; every wait
//! is bounded.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::health::{PodKey, ProbeAction, ProbeSpec};
use lb_core::{EndpointSpec, PortSpec, ProxySettings, ServiceSpec};
use lb_proxy::control::ControlPlane;
use lb_proxy::lifecycle::Tasks;
use lb_proxy::DataPlane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

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
        ..support::settings()
    }
}

/// A data plane fed by a control plane whose desired state is `services`
/// and `probes`, given in code: the probe overlay decides readiness.
pub async fn start(
    settings: ProxySettings,
    services: Vec<ServiceSpec>,
    probes: Vec<ProbeSpec>,
) -> (DataPlane, ControlPlane) {
    serve(lb_config::Config {
        node: support::node(),
        proxy: settings,
        services,
        probes,
        ..lb_config::Config::default()
    })
    .await
}

/// A data plane fed by a control plane serving `config`.
pub async fn serve(config: lb_config::Config) -> (DataPlane, ControlPlane) {
    let settings = config.proxy.clone();
    let (control, loaded) = ControlPlane::from_config(config, Tasks::new()).await;
    let plane = lb_proxy::DataPlane::start(settings, loaded.snapshot).await;
    control.serve(&plane);
    (plane, control)
}

/// Conditions of the endpoint at `addr` of the service at `vip` now:
/// (ready, serving).
pub fn conditions(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> Option<(bool, bool)> {
    let snapshot = plane.table().load();
    let entry = snapshot.frontend(vip, lb_core::Protocol::Tcp)?;
    let i = entry.port.index_of(addr)?;
    let e = entry.port.endpoint(i);
    Some((e.ready, e.serving))
}

/// Whether the endpoint at `addr` takes new connections now.
pub fn is_ready(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> bool {
    conditions(plane, vip, addr).is_some_and(|(ready, _)| ready)
}

/// Dial failures counted against the endpoint at `addr` so far.
pub fn connect_errors(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> u64 {
    let snapshot = plane.table().load();
    snapshot
        .frontend(vip, lb_core::Protocol::Tcp)
        .and_then(|e| {
            e.port
                .index_of(addr)
                .map(|i| e.port.endpoint(i).stats.clone())
        })
        .map_or(0, |s| lb_core::stats::read(&s.connect_errors))
}

/// Whether the endpoint at `addr` is ejected now (after the panic rule).
pub fn is_ejected(plane: &DataPlane, vip: SocketAddr, addr: SocketAddr) -> bool {
    let snapshot = plane.table().load();
    let Some(entry) = snapshot.frontend(vip, lb_core::Protocol::Tcp) else {
        return false;
    };
    let Some(i) = entry.port.index_of(addr) else {
        return false;
    };
    entry
        .port
        .ejection_in_force(false, i, tokio::time::Instant::now().into_std())
}

/// A stopped backend at a fixed address: the port is bound and listening but
/// its accept queue is full and never drained, so SYNs go unanswered and
/// dials hang (what a SIGSTOPped process looks like from outside).
#[derive(Debug)]
pub struct Stopped {
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

/// Stops the backend at `addr` (whose listener must be closed already).
pub async fn stopped_at(addr: SocketAddr) -> Stopped {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the accept queue of {addr}: {e}"),
            Err(_) => {
                return Stopped {
                    _listener: socket,
                    _fillers: fillers,
                }
            }
        }
    }
    panic!("the accept queue of {addr} never filled up");
}

/// A backend that answers every connection with a fixed text and closes;
/// stops listening when dropped (its port then refuses connections).
#[derive(Debug)]
pub struct Answering {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Answering {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops the backend and returns once its port refuses connections.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Answers `body` on `addr` (port 0 for any); reusing the address of a
/// backend that was just killed restarts it.
pub async fn answering(addr: SocketAddr, body: &'static str) -> Answering {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(support::WAIT, async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            });
        }
    });
    Answering {
        addr,
        accepted,
        task: Some(task),
    }
}

/// Fetches through `vip` from 127.0.0.1: the answer, or the error text.
pub async fn try_fetch(vip: SocketAddr) -> Result<String, String> {
    let mut stream = tokio::time::timeout(support::WAIT, TcpStream::connect(vip))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(support::WAIT, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(answer)
}
