//! Helpers for the data-plane tests: backends that echo, answer a fixed body,
//! reset, or hand their sockets to the test; endpoints that refuse or never
//! answer; clients bound to a chosen 127.x source address; and services built
//! by hand. Everything listens and connects on 127.0.0.0/8 only, and every wait
//! is bounded.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lb_core::{EndpointSpec, NodeSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot};
use lb_proxy::DataPlane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The node the tests run as.
pub fn node() -> NodeSpec {
    NodeSpec {
        name: "node-1".into(),
        addresses: vec![ip("127.0.1.1")],
    }
}

/// A fresh virtual address for a frontend: a distinct 127.96.x.y per call, at a
/// port that was free a moment ago.
pub fn vip() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = (std::process::id() as usize % 40) * 500;
    let n = base + NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = IpAddr::from([127, 96, (n / 250 + 1) as u8, (n % 250 + 1) as u8]);
    let probe = std::net::TcpListener::bind((ip, 0)).unwrap();
    probe.local_addr().unwrap()
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

/// Builds a snapshot of `services` as the next one after `plane`'s current table.
pub fn next_snapshot(plane: &DataPlane, services: Vec<ServiceSpec>) -> Snapshot {
    let current = plane.table().load();
    Snapshot::build(node(), services, Some(&current), SystemTime::now())
}

/// Starts a data plane serving `services`.
pub async fn start(settings: ProxySettings, services: Vec<ServiceSpec>) -> DataPlane {
    init_tracing();
    let snapshot = Snapshot::build(node(), services, None, SystemTime::now());
    DataPlane::start(settings, snapshot).await
}

/// How a scenario runs: the forwarding engine and the accept mode (per-core
/// with two workers). The same scenarios run under each, in one binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub engine: lb_core::ForwardEngine,
    pub accept: lb_core::AcceptMode,
}

impl Mode {
    /// The defaults: engine `auto`, accept `single`.
    pub const DEFAULT: Mode = Mode {
        engine: lb_core::ForwardEngine::Auto,
        accept: lb_core::AcceptMode::Single,
    };

    /// The default accept mode under `engine`.
    pub const fn engine(engine: lb_core::ForwardEngine) -> Mode {
        Mode {
            engine,
            accept: lb_core::AcceptMode::Single,
        }
    }

    /// The default engine under `accept`.
    pub const fn accept(accept: lb_core::AcceptMode) -> Mode {
        Mode {
            engine: lb_core::ForwardEngine::Auto,
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
        start(self.settings(settings), services).await
    }

    /// How many listening sockets a TCP frontend has in this mode, on a
    /// runtime of `runtime_workers` threads.
    pub fn sockets_per_frontend(self, runtime_workers: usize) -> usize {
        match self.accept {
            lb_core::AcceptMode::Single => 1,
            lb_core::AcceptMode::Reuseport => runtime_workers,
            lb_core::AcceptMode::PerCore => 2,
        }
    }
}

/// Names of this process's threads that lb created (`lb-*`), from
/// /proc/self/task.
pub fn lb_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .filter(|n| n.starts_with("lb-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Starts a data plane serving `services` with bind `options`
/// (`IP_FREEBIND`).
pub async fn start_with(
    settings: ProxySettings,
    services: Vec<ServiceSpec>,
    options: lb_proxy::BindOptions,
) -> DataPlane {
    init_tracing();
    let snapshot = Snapshot::build(node(), services, None, SystemTime::now());
    DataPlane::start_with(settings, snapshot, options).await
}

// === backends ===

/// A backend listening on `addr`; stops listening when dropped.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(ip: &str, handler: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind((self::ip(ip), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler(stream));
        }
    });
    Backend {
        addr,
        accepted,
        task,
    }
}

/// Echoes every byte back; passes the client's FIN back as its own FIN.
pub async fn echo_backend(ip: &str) -> Backend {
    serve(ip, |mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Answers every connection with `body` and closes (a tiny HTTP-ish server).
pub async fn http_backend(ip: &str, body: &'static str) -> Backend {
    serve(ip, move |mut stream| async move {
        let _ = stream.write_all(body.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Wait for the client's FIN so nothing unread turns the close into a reset.
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(WAIT, async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    })
    .await
}

/// Reads the request until the client's FIN, then answers `prefix` followed
/// by the byte count it read, and closes.
pub async fn read_to_eof_backend(ip: &str, prefix: &'static str) -> Backend {
    serve(ip, move |mut stream| async move {
        let mut request = Vec::new();
        if stream.read_to_end(&mut request).await.is_ok() {
            let answer = format!("{prefix}{}", request.len());
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

/// Reads one byte, then resets the connection (`SO_LINGER` 0 and close).
pub async fn reset_backend(ip: &str) -> Backend {
    serve(ip, |mut stream| async move {
        let mut byte = [0u8; 1];
        let _ = stream.read_exact(&mut byte).await;
        reset(stream);
    })
    .await
}

/// Hands every accepted socket to the test, which then plays the endpoint.
pub async fn capture_backend(ip: &str) -> (Backend, mpsc::UnboundedReceiver<TcpStream>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = serve(ip, move |stream| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(stream);
        }
    })
    .await;
    (backend, rx)
}

/// An address where nothing listens (connections are refused).
pub fn closed_port(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((self::ip(ip), 0)).unwrap();
    l.local_addr().unwrap()
}

/// An endpoint that never answers SYNs: a listener whose accept queue is full
/// and never drained. Holds the sockets that fill it.
#[derive(Debug)]
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

/// Builds a [`Blackhole`] on `ip`.
pub async fn blackhole(ip: &str) -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(self::ip(ip), 0).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the blackhole's queue: {e}"),
            Err(_) => {
                return Blackhole {
                    addr,
                    _listener: socket,
                    _fillers: fillers,
                }
            }
        }
    }
    panic!("the accept queue of {addr} never filled up");
}

// === clients ===

/// Connects to `addr` from the source address `src` (a 127.x address).
pub async fn connect_from(src: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(ip(src), 0))?;
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Connects from `src`, reads the whole answer, returns it.
pub async fn fetch_from(src: &str, addr: SocketAddr) -> String {
    let mut stream = connect_from(src, addr).await.expect("connect");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .expect("answer within the bound")
        .expect("read answer");
    answer
}

/// Connects from 127.0.0.1, reads the whole answer, returns it.
pub async fn fetch(addr: SocketAddr) -> String {
    fetch_from("127.0.0.1", addr).await
}

/// Writes `msg` and expects it echoed back.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo within the bound")
        .expect("read echo");
    assert_eq!(back, msg);
}

/// Reads until the peer closes; returns what the read ended with (`Ok(0)` for
/// a FIN, the error for a reset). Panics if neither comes within `bound`.
pub async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(0),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the connection was closed within the bound")
}

/// Closes `stream` with a reset.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Listening sockets bound exactly at `addr` (IPv4), from /proc/net/tcp: how
/// many `SO_REUSEPORT` siblings a frontend has.
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
/// 100 fetches through `vip` all reach `backend` (which answers `body`); then,
/// with service `name` emptied, every socket at `vip` is closed and a new
/// connection is refused, not queued on a forgotten sibling.
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

/// Polls `cond` every 10 ms until it holds or `bound` passes.
pub async fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The live counters of `endpoint` behind the TCP frontend `vip`.
pub fn endpoint_stats(
    plane: &DataPlane,
    vip: SocketAddr,
    endpoint: SocketAddr,
) -> Arc<lb_core::stats::EndpointStats> {
    let snapshot = plane.table().load();
    let port = &snapshot
        .frontend(vip, lb_core::Protocol::Tcp)
        .expect("frontend")
        .port;
    port.endpoint(port.index_of(endpoint).expect("endpoint"))
        .stats
        .clone()
}
