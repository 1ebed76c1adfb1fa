//! Proxied connections per second and proxied bytes per second, in process
//! over loopback, under each forwarding engine (copy, splice). The client,
//! the proxy and the backends share one tokio runtime and the machine's
//! cores, so these figures compare engines and versions of lb with each
//! other; the comparison with HAProxy and nginx is `benches/compare/`.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lb_benches::node;
use lb_benches::short::{answer_backend, connections, free};
use lb_core::{EndpointSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot};
use lb_proxy::dataplane::forward::ForwardEngine as Engine;
use lb_proxy::DataPlane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes sent through one connection per iteration of the throughput bench.
const BULK: usize = 16 << 20;

/// A backend that reads to EOF and answers one byte.
async fn sink_backend(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.write_all(b"k").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn plane(engine: Engine, vip: SocketAddr, backend: SocketAddr) -> DataPlane {
    let port = PortSpec::tcp("", vip.port()).with_endpoint(EndpointSpec::new(backend));
    let svc = ServiceSpec::cluster_ip("bench", engine.as_str(), vip.ip()).with_port(port);
    let snapshot = Snapshot::build(node(), vec![svc], None, std::time::SystemTime::now());
    let settings = ProxySettings {
        forward_engine: engine,
        ..ProxySettings::default()
    };
    DataPlane::start(settings, snapshot).await
}

async fn one_bulk(vip: SocketAddr, payload: &[u8]) {
    let mut s = TcpStream::connect(vip).await.expect("connect");
    s.write_all(payload).await.expect("send");
    s.shutdown().await.expect("fin");
    let mut k = Vec::new();
    s.read_to_end(&mut k).await.expect("answer");
    assert_eq!(k, b"k");
}

fn proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload = vec![7u8; BULK];
    for (n, engine) in [Engine::Copy, Engine::Splice, Engine::Auto]
        .into_iter()
        .enumerate()
    {
        let (vip_conn, vip_bulk) = (
            free(&format!("127.77.0.{}", 2 * n + 1)),
            free(&format!("127.77.0.{}", 2 * n + 2)),
        );
        let (_p1, _p2) = rt.block_on(async {
            let a = answer_backend("127.77.1.1").await;
            let b = sink_backend("127.77.1.2").await;
            (
                plane(engine, vip_conn, a).await,
                plane(engine, vip_bulk, b).await,
            )
        });
        let mut group = c.benchmark_group(format!("proxy_{}", engine.as_str()));
        group.throughput(Throughput::Elements(1));
        group.bench_function("connections", |b| {
            b.iter_custom(|iters| connections(&rt, vip_conn, iters))
        });
        group.throughput(Throughput::Bytes(BULK as u64));
        group.sample_size(20);
        group.bench_function("bytes_16MiB", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        one_bulk(vip_bulk, &payload).await;
                    }
                    start.elapsed()
                })
            })
        });
        group.finish();
        if engine != Engine::Copy {
            println!(
                "{} engine moved {} bytes by splice(2)",
                engine.as_str(),
                _p2.spliced_bytes() + _p1.spliced_bytes()
            );
        }
    }
}

criterion_group!(benches, proxy);
criterion_main!(benches);
