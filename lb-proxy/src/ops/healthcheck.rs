//! Health-check node ports: for a LoadBalancer service with
//! `external_traffic_policy = "Local"`, an HTTP server on every node address
//! at its `health_check_node_port`, answering every path and method as
//! kube-proxy does: 200 when this node has a ready endpoint of the service,
//! else 503, with the body
//! `{"service":{"namespace":"ns","name":"svc"},"localEndpoints":N}`.
//! External load balancers poll it to send traffic only to nodes that can
//! serve it without a second hop.
//!
//! The listeners follow the published table through
//! [`crate::control::follow`] (bind what a new snapshot adds, close what it
//! removes) and do not set SO_REUSEPORT, so a clash with another process is
//! an error (logged and retried every second), never a silent second
//! listener. Each answer reads the table of that moment. Every listener is
//! a child [`Tasks`] of the health checks', its connections tasks of it.
//!
//! The ports face the network, so their connections are bounded like the
//! admin API's: a request head within [`HEADER_READ_TIMEOUT`], one answer
//! per connection, and at most [`MAX_CONNECTIONS`] connections at once for
//! all the ports together (more are closed at the accept). They do not
//! check `Host`: load balancers probe them by node IP or by any name they
//! were given, and the answer (a count of local endpoints) is no secret a
//! rebinding page could want.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use lb_core::{ServiceKey, ServiceType, Snapshot, Table, TrafficPolicy};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::DropGuard;
use tracing::{info, warn};

use crate::control::follow::{follow, Follower, Reconciled};
use crate::dataplane::DataPlane;
use crate::handover::{Role, SocketKey, Sockets};
use crate::lifecycle::Tasks;
use crate::ops::http::{self, ConnectionOptions, ConnectionSlots};

/// How long a prober has to send its request head: half the admin API's
/// 10 s, as load balancers send a whole request at once and give up on an
/// answer within a few seconds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections all health-check ports hold at once (as the admin
/// API's [`crate::ops::admin::MAX_CONNECTIONS`]): a probe holds one for
/// milliseconds, so only a flood reaches it, and the flood then costs
/// descriptors up to this bound and not beyond.
pub const MAX_CONNECTIONS: usize = 256;

/// One answer per connection, closed after it (as kube-proxy's answers were
/// read before: to the end of the stream), and a request head within
/// [`HEADER_READ_TIMEOUT`]; the idle clock only covers the answer's flush.
const CONNECTIONS: ConnectionOptions = ConnectionOptions {
    keep_alive: false,
    header_timeout: HEADER_READ_TIMEOUT,
    idle_timeout: crate::ops::admin::IDLE_TIMEOUT,
};

/// The running health-check node ports. [`HealthChecks::stop`] closes them
/// and waits for every one of their tasks; dropping it closes them without
/// waiting.
#[derive(Debug)]
pub struct HealthChecks {
    tasks: Tasks,
    _cancel_on_drop: DropGuard,
}

impl HealthChecks {
    /// Serves the health-check node ports of `dataplane`'s table, following
    /// every snapshot it publishes, with every task spawned on `tasks`.
    pub fn start(dataplane: &DataPlane, tasks: Tasks) -> HealthChecks {
        let listeners = Listeners::new(
            dataplane,
            &tasks,
            CONNECTIONS,
            MAX_CONNECTIONS,
            Sockets::new(),
        );
        HealthChecks::follow(dataplane, tasks, listeners)
    }

    /// [`HealthChecks::start`] that first claims the ports a previous owner
    /// handed over in `sockets` (a takeover) and registers every port
    /// there; the ports of the current table are bound (or claimed) before
    /// it returns, so that what was handed over and not claimed can then
    /// be closed.
    pub async fn start_in(dataplane: &DataPlane, tasks: Tasks, sockets: &Sockets) -> HealthChecks {
        let mut listeners = Listeners::new(
            dataplane,
            &tasks,
            CONNECTIONS,
            MAX_CONNECTIONS,
            sockets.clone(),
        );
        listeners.reconcile(dataplane.table().load()).await;
        HealthChecks::follow(dataplane, tasks, listeners)
    }

    /// [`HealthChecks::start`] with other connection bounds (tests, which
    /// cannot wait the real ones out).
    #[cfg(test)]
    fn start_with(
        dataplane: &DataPlane,
        tasks: Tasks,
        options: ConnectionOptions,
        max_connections: usize,
    ) -> HealthChecks {
        let listeners = Listeners::new(dataplane, &tasks, options, max_connections, Sockets::new());
        HealthChecks::follow(dataplane, tasks, listeners)
    }

    fn follow(dataplane: &DataPlane, tasks: Tasks, mut listeners: Listeners) -> HealthChecks {
        let dataplane = dataplane.clone();
        let following = tasks.clone();
        tasks.spawn(async move { follow(&dataplane, following.token(), &mut listeners).await });
        HealthChecks {
            _cancel_on_drop: tasks.token().clone().drop_guard(),
            tasks,
        }
    }

    /// Closes every health-check listener and returns once none of their
    /// tasks runs.
    pub async fn stop(&self) {
        self.tasks.stop().await;
    }
}

/// The name of the service a health-check answer is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceName {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
}

/// The body kube-proxy answers with; fields in kube-proxy's order (derived
/// serialization keeps declaration order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The service asked about.
    pub service: ServiceName,
    /// Its ready endpoints on this node.
    #[serde(rename = "localEndpoints")]
    pub local_endpoints: usize,
}

impl Answer {
    /// 200 when this node can serve the service, else 503.
    pub fn status(&self) -> StatusCode {
        if self.local_endpoints > 0 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
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

/// The answer for `key` now.
pub fn answer(snapshot: &Snapshot, key: &ServiceKey) -> Answer {
    Answer {
        service: ServiceName {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        },
        local_endpoints: local_endpoints(snapshot, key),
    }
}

/// What one listener answers from: the live table and its service.
#[derive(Debug)]
struct Answering {
    table: Arc<Table>,
    service: ServiceKey,
}

/// Every path, every method: the answer of the moment.
async fn respond(State(answering): State<Arc<Answering>>) -> Response {
    let answer = answer(&answering.table.load(), &answering.service);
    (
        answer.status(),
        [(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        )],
        Json(answer),
    )
        .into_response()
}

/// One bound health-check listener.
struct Bound {
    service: ServiceKey,
    tasks: Tasks,
}

impl Listeners {
    fn new(
        dataplane: &DataPlane,
        tasks: &Tasks,
        options: ConnectionOptions,
        max_connections: usize,
        sockets: Sockets,
    ) -> Listeners {
        Listeners {
            table: dataplane.table(),
            tasks: tasks.clone(),
            options,
            slots: ConnectionSlots::new(max_connections),
            bound: BTreeMap::new(),
            failing: BTreeMap::new(),
            sockets,
        }
    }

    /// The port at `addr`: the one handed over if there is, else bound.
    async fn claim_or_bind(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        match self
            .sockets
            .take_tcp(Role::HealthCheck, addr)
            .into_iter()
            .next()
        {
            Some(listener) => TcpListener::from_std(listener),
            None => TcpListener::bind(addr).await,
        }
    }
}

/// The health-check listeners, kept in step with the table.
struct Listeners {
    table: Arc<Table>,
    /// The health checks' own; each listener is a child of it.
    tasks: Tasks,
    /// How every port treats its connections.
    options: ConnectionOptions,
    /// The connections all ports may hold together.
    slots: ConnectionSlots,
    bound: BTreeMap<SocketAddr, Bound>,
    /// Addresses that could not be bound, with the last error (logged once
    /// per distinct error).
    failing: BTreeMap<SocketAddr, String>,
    /// Where ports are claimed from (a takeover) and registered.
    sockets: Sockets,
}

impl Follower for Listeners {
    async fn reconcile(&mut self, snapshot: Arc<Snapshot>) -> Reconciled {
        let want = wanted(&snapshot);
        let gone: Vec<SocketAddr> = self
            .bound
            .iter()
            .filter(|(addr, b)| want.get(addr) != Some(&b.service))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in gone {
            if let Some(b) = self.bound.remove(&addr) {
                b.tasks.stop().await;
                info!(%addr, "closed health-check node port");
            }
        }
        self.failing.retain(|addr, _| want.contains_key(addr));
        for (addr, service) in want {
            if self.bound.contains_key(&addr) {
                continue;
            }
            match self.claim_or_bind(addr).await {
                Ok(listener) => {
                    let tasks = self.tasks.child();
                    let registration = self.sockets.register(
                        SocketKey::tcp(Role::HealthCheck, addr),
                        std::os::fd::AsFd::as_fd(&listener),
                    );
                    let router = Router::new()
                        .fallback(respond)
                        .with_state(Arc::new(Answering {
                            table: self.table.clone(),
                            service: service.clone(),
                        }));
                    let serving = tasks.clone();
                    let (options, slots) = (self.options, self.slots.clone());
                    tasks.spawn(async move {
                        // Dropped when serving ends, just after the listener
                        // closed: a takeover in between copies a closed or
                        // reused descriptor at worst, and the taker checks
                        // each one (a listening socket at the address).
                        let _registration = registration;
                        http::serve(listener, router, options, slots, &serving).await
                    });
                    self.failing.remove(&addr);
                    info!(%addr, %service, "health-check node port listening");
                    self.bound.insert(addr, Bound { service, tasks });
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.failing.get(&addr) != Some(&text) {
                        warn!(%addr, %service, error = %text, "cannot bind health-check node port; retrying every second");
                    }
                    self.failing.insert(addr, text);
                }
            }
        }
        if self.failing.is_empty() {
            Reconciled::Done
        } else {
            Reconciled::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use lb_core::{NodeSpec, ProxySettings, ServiceSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Asks `addr` once and reads the answer to its end.
    async fn ask(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("answered and closed within 10 s")
            .expect("read");
        answer
    }

    /// A data plane with one LoadBalancer + Local service whose health-check
    /// node port is a free port on `ip`, and that port's address.
    async fn one_port(ip: &str) -> (DataPlane, SocketAddr) {
        let ip: IpAddr = ip.parse().expect("address");
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let node = NodeSpec {
            name: "node-1".into(),
            addresses: vec![ip],
            zone: None,
        };
        let mut svc = ServiceSpec::cluster_ip("default", "lb", "127.97.0.1".parse().expect("ip"));
        svc.service_type = ServiceType::LoadBalancer;
        svc.external_traffic_policy = TrafficPolicy::Local;
        svc.health_check_node_port = port;
        let snapshot = Snapshot::build(node, vec![svc], None, SystemTime::now());
        let plane = DataPlane::start(ProxySettings::default(), snapshot).await;
        (plane, SocketAddr::new(ip, port))
    }

    /// Waits (bounded) until `addr` accepts connections.
    async fn listening(addr: SocketAddr) -> bool {
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_node_port_answers_every_path_and_stops_with_no_task_left() {
        let (plane, addr) = one_port("127.0.0.1").await;
        let runtime = tokio::runtime::Handle::current().metrics();
        let before = runtime.num_alive_tasks();

        let tasks = Tasks::new();
        let checks = HealthChecks::start(&plane, tasks.clone());
        assert!(listening(addr).await, "the health-check node port listens");
        for request in [
            "GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n",
            "POST /any/path HTTP/1.1\r\nHost: lb\r\nContent-Length: 0\r\n\r\n",
        ] {
            let answer = ask(addr, request).await;
            assert!(
                answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
                "{answer}"
            );
            let head = answer.to_ascii_lowercase();
            assert!(
                head.contains("content-type: application/json\r\n"),
                "{answer}"
            );
            assert!(
                head.contains("x-content-type-options: nosniff\r\n"),
                "{answer}"
            );
            assert!(answer.ends_with(
                "\r\n\r\n{\"service\":{\"namespace\":\"default\",\"name\":\"lb\"},\"localEndpoints\":0}"
            ), "{answer}");
        }
        // A client that connected and never asked is closed by the stop.
        let mut idle = TcpStream::connect(addr).await.expect("connect");

        checks.stop().await;
        assert_eq!(tasks.running(), 0);
        assert_eq!(runtime.num_alive_tasks(), before, "no task of it is left");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("the idle connection is closed, not left hanging");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the port is closed"
        );
        plane.shutdown().await;
    }

    /// Waits (bounded) until `tasks` runs exactly `n` tasks.
    async fn running(tasks: &Tasks, n: usize) -> bool {
        for _ in 0..400 {
            if tasks.running() == n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_node_port_cuts_a_half_sent_head_and_answers_any_host() {
        let (plane, addr) = one_port("127.0.71.20").await;
        let options = ConnectionOptions {
            header_timeout: Duration::from_millis(300),
            ..CONNECTIONS
        };
        let tasks = Tasks::new();
        let checks = HealthChecks::start_with(&plane, tasks.clone(), options, MAX_CONNECTIONS);
        assert!(listening(addr).await, "the health-check node port listens");

        // No Host check: a load balancer may probe by any name.
        let answer = ask(addr, "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");

        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), half.read(&mut buf))
            .await
            .expect("a half-sent head is cut within the bound");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        checks.stop().await;
        plane.shutdown().await;
    }

    #[tokio::test]
    async fn node_ports_close_connections_past_their_bound_at_the_accept() {
        let (plane, addr) = one_port("127.0.71.21").await;
        let tasks = Tasks::new();
        let checks = HealthChecks::start_with(&plane, tasks.clone(), CONNECTIONS, 2);
        assert!(listening(addr).await, "the health-check node port listens");
        // The follower and the accept loop, once the probes of `listening`
        // have ended.
        assert!(running(&tasks, 2).await, "quiet: {}", tasks.running());

        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\n").await.expect("send");
            held.push(s);
        }
        assert!(running(&tasks, 4).await, "both held: {}", tasks.running());
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
            .await
            .expect("the third connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(answer.is_empty(), "unanswered: {answer:?}");
        assert_eq!(tasks.running(), 4, "the held connections stay");

        checks.stop().await;
        assert_eq!(tasks.running(), 0);
        plane.shutdown().await;
    }

    #[test]
    fn the_body_is_kube_proxys_in_its_field_order() {
        let answer = Answer {
            service: ServiceName {
                namespace: "ns".into(),
                name: "svc".into(),
            },
            local_endpoints: 2,
        };
        assert_eq!(
            serde_json::to_string(&answer).expect("serializable"),
            r#"{"service":{"namespace":"ns","name":"svc"},"localEndpoints":2}"#
        );
        assert_eq!(answer.status(), StatusCode::OK);
        let none = Answer {
            local_endpoints: 0,
            ..answer
        };
        assert_eq!(none.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
