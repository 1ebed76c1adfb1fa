//! Shared fixtures for lb's criterion benchmarks (`cargo bench -p lb-benches`):
//! hand-built service tables of any size and loopback backends, so every
//! bench measures lb's own code paths and nothing else. The comparison
//! against HAProxy and nginx lives in `benches/compare/` (a script, not a
//! cargo bench), because it needs real processes and packages.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use lb_core::{EndpointSpec, NodeSpec, PortSpec, ServiceSpec, SessionAffinity, Snapshot};

/// The node every bench table is built for.
pub fn node() -> NodeSpec {
    NodeSpec {
        name: "bench".into(),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1))],
        zone: None,
    }
}

/// Cluster IP of service number `i` (10.96.0.0/12 style, never dialed: the
/// tables built from it are only looked up).
pub fn cluster_ip(i: usize) -> IpAddr {
    let i = i as u32;
    IpAddr::V4(Ipv4Addr::new(
        10,
        96 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ))
}

/// Endpoint `j` of service `i` (10.244.0.0/14 style, never dialed).
pub fn endpoint_addr(i: usize, j: usize) -> SocketAddr {
    let n = (i * 16 + j) as u32;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(
            10,
            244 + (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        )),
        8080,
    )
}

/// One TCP service at `vip` port 80 with `weights.len()` endpoints.
pub fn service(i: usize, vip: IpAddr, weights: &[u32], affinity: Option<Duration>) -> ServiceSpec {
    let mut port = PortSpec::tcp("http", 80);
    for (j, w) in weights.iter().enumerate() {
        port = port.with_endpoint(EndpointSpec::new(endpoint_addr(i, j)).with_weight(*w));
    }
    let mut spec = ServiceSpec::cluster_ip("bench", &format!("svc-{i}"), vip).with_port(port);
    if let Some(timeout) = affinity {
        spec = spec.with_affinity(SessionAffinity::ClientIp { timeout });
    }
    spec
}

/// `services` services of `endpoints` endpoints each, weight 1.
pub fn services(services: usize, endpoints: usize) -> Vec<ServiceSpec> {
    (0..services)
        .map(|i| service(i, cluster_ip(i), &vec![1; endpoints], None))
        .collect()
}

/// Builds a snapshot of `services` as a first generation.
pub fn snapshot(services: Vec<ServiceSpec>) -> Snapshot {
    Snapshot::build(node(), services, None, SystemTime::now())
}

/// The frontend address of service `i` in tables built by [`services`].
pub fn frontend(i: usize) -> SocketAddr {
    SocketAddr::new(cluster_ip(i), 80)
}

/// The p-th percentile (0..=100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Short connections through a proxy: a backend that answers 256 bytes and
/// closes, and timed rounds of connections that read the answer, so a bench
/// compares the per-connection cost of two settings (`access_log`,
/// `metrics_overhead`).
pub mod short {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::runtime::Runtime;

    /// Concurrent clients of a round.
    pub const CONCURRENCY: u64 = 8;
    const ANSWER: &[u8] = &[b'x'; 256];

    /// A backend on `ip` (an ephemeral port) that answers every connection
    /// with 256 bytes, then closes its side.
    pub async fn answer_backend(ip: &str) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(ANSWER).await;
                    let _ = s.shutdown().await;
                    let mut sink = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await;
                });
            }
        });
        addr
    }

    /// A free `IP:PORT` on `ip`, for a frontend.
    pub fn free(ip: &str) -> SocketAddr {
        let probe = std::net::TcpListener::bind((ip, 0)).expect("probe a free port");
        probe.local_addr().expect("probe address")
    }

    /// One connection that reads the whole answer (a connection the proxy
    /// could not take is skipped; one that delivers a short answer fails
    /// the bench, which would otherwise time a broken proxy).
    async fn one_connection(vip: SocketAddr) {
        let Ok(mut s) = TcpStream::connect(vip).await else {
            return;
        };
        let mut buf = [0u8; 512];
        let mut got = 0;
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
        assert_eq!(got, ANSWER.len(), "a whole answer through {vip}");
    }

    /// How long `iters` connections to `vip` take, [`CONCURRENCY`] at a time.
    pub fn connections(rt: &Runtime, vip: SocketAddr, iters: u64) -> Duration {
        rt.block_on(async {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for k in 0..CONCURRENCY {
                let share = iters / CONCURRENCY + u64::from(k < iters % CONCURRENCY);
                tasks.push(tokio::spawn(async move {
                    for _ in 0..share {
                        one_connection(vip).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            start.elapsed()
        })
    }
}
