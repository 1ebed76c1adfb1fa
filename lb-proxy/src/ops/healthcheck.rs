//! Health-check node ports: for a LoadBalancer service with
//! `external_traffic_policy = "Local"`, an HTTP server on every node address
//! at its `health_check_node_port`, answering every path as kube-proxy does:
//! 200 when this node has a ready endpoint of the service, else 503, with the
//! body `{"service":{"namespace":"ns","name":"svc"},"localEndpoints":N}`.
//! External load balancers poll it to send traffic only to nodes that can
//! serve it without a second hop.
//!
//! The listeners follow the published table (bind what a new snapshot adds,
//! close what it removes) and do not set SO_REUSEPORT, so a clash with
//! another process is an error (logged and retried every second), never a
//! silent second listener. Each answer reads the table of that moment.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lb_core::{ServiceKey, ServiceType, Snapshot, Table, TrafficPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::dataplane::DataPlane;

/// How often listeners that could not be bound are retried.
const RETRY: Duration = Duration::from_secs(1);
/// How long a client has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read; the answer does not depend on it.
const MAX_REQUEST: usize = 8192;

/// The running health-check node ports. Dropping it (or [`Self::stop`])
/// closes them.
pub struct HealthChecks {
    stop: CancellationToken,
    _guard: DropGuard,
}

impl fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecks")
            .field("stopped", &self.stop.is_cancelled())
            .finish()
    }
}

impl HealthChecks {
    /// Serves the health-check node ports of `dataplane`'s table, following
    /// every snapshot it publishes.
    pub fn spawn(dataplane: &DataPlane) -> HealthChecks {
        let stop = CancellationToken::new();
        tokio::spawn(follow(
            dataplane.table(),
            dataplane.subscribe(),
            stop.clone(),
        ));
        HealthChecks {
            _guard: stop.clone().drop_guard(),
            stop,
        }
    }

    /// Closes every health-check listener.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Where a health-check listener is and which service it answers for.
type Wanted = BTreeMap<SocketAddr, ServiceKey>;

/// The health-check listeners `snapshot` asks for.
fn wanted(snapshot: &Snapshot) -> Wanted {
    let mut out = BTreeMap::new();
    for entry in snapshot.services() {
        let spec = &entry.spec;
        if spec.service_type != ServiceType::LoadBalancer
            || spec.external_traffic_policy != TrafficPolicy::Local
            || spec.health_check_node_port == 0
        {
            continue;
        }
        for ip in &snapshot.node().addresses {
            out.entry(SocketAddr::new(*ip, spec.health_check_node_port))
                .or_insert_with(|| spec.key.clone());
        }
    }
    out
}

/// Ready endpoints of `key` on this node, counted by address as kube-proxy
/// counts them (one pod serving two ports is one endpoint).
pub fn local_endpoints(snapshot: &Snapshot, key: &ServiceKey) -> usize {
    let Some(entry) = snapshot.service(key) else {
        return 0;
    };
    let node = snapshot.node().name.as_str();
    let ips: HashSet<IpAddr> = entry
        .ports
        .iter()
        .flat_map(|p| p.endpoints().iter())
        .filter(|e| e.ready && e.node.as_deref() == Some(node))
        .map(|e| e.addr.ip())
        .collect();
    ips.len()
}

/// The answer for `key` now: status code and body.
pub fn answer(snapshot: &Snapshot, key: &ServiceKey) -> (u16, String) {
    let n = local_endpoints(snapshot, key);
    // Field order as kube-proxy writes it (serde_json's map would sort it).
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let body = format!(
        r#"{{"service":{{"namespace":{},"name":{}}},"localEndpoints":{n}}}"#,
        quote(&key.namespace),
        quote(&key.name)
    );
    (if n > 0 { 200 } else { 503 }, body)
}

struct Bound {
    service: ServiceKey,
    _stop: DropGuard,
    task: JoinHandle<()>,
}

async fn follow(
    table: Arc<Table>,
    mut generation: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let mut bound: BTreeMap<SocketAddr, Bound> = BTreeMap::new();
    let mut failing: BTreeMap<SocketAddr, String> = BTreeMap::new();
    let mut watching = true;
    loop {
        let want = wanted(&table.load());
        let gone: Vec<SocketAddr> = bound
            .iter()
            .filter(|(addr, b)| want.get(addr) != Some(&b.service))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in gone {
            if let Some(b) = bound.remove(&addr) {
                drop(b._stop);
                let _ = b.task.await;
                info!(%addr, "closed health-check node port");
            }
        }
        failing.retain(|addr, _| want.contains_key(addr));
        for (addr, service) in &want {
            if bound.contains_key(addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let token = CancellationToken::new();
                    let task = tokio::spawn(serve(
                        listener,
                        table.clone(),
                        service.clone(),
                        token.clone(),
                    ));
                    bound.insert(
                        *addr,
                        Bound {
                            service: service.clone(),
                            _stop: token.drop_guard(),
                            task,
                        },
                    );
                    failing.remove(addr);
                    info!(%addr, %service, "health-check node port listening");
                }
                Err(e) => {
                    let text = e.to_string();
                    if failing.get(addr) != Some(&text) {
                        warn!(%addr, %service, error = %text, "cannot bind health-check node port; retrying every second");
                    }
                    failing.insert(*addr, text);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = generation.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                }
            }
            () = tokio::time::sleep(RETRY), if !failing.is_empty() || !watching => {}
        }
    }
    for (_, b) in bound {
        drop(b._stop);
        let _ = b.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    table: Arc<Table>,
    service: ServiceKey,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(respond(stream, table.clone(), service.clone()));
            }
            Err(e) => {
                debug!(error = %e, "health-check accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads the request head (any method, any path) and answers once.
async fn respond(mut stream: TcpStream, table: Arc<Table>, service: ServiceKey) {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() >= MAX_REQUEST {
                return true;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let (status, body) = answer(&table.load(), &service);
    let reason = if status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        debug!(error = %e, "health-check answer not sent");
        return;
    }
    let _ = stream.shutdown().await;
}
