//! Per-core workers: with `AcceptMode::PerCore` (`LB_ACCEPT=percore`) the
//! data plane runs one current-thread runtime per worker thread
//! (`LB_WORKERS` of them), each with its own `SO_REUSEPORT` socket for every
//! TCP frontend; connections run on the worker that accepted them, and
//! closing the frontend closes every socket. This binary sets `LB_WORKERS=2`
//! for all of its tests (the whole data-plane suite also runs in this mode in
//! `.ci/run`, through `LB_ACCEPT`).

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a per-core data plane with two workers serving `services`.
async fn start_percore(services: Vec<lb_core::ServiceSpec>) -> lb_proxy::DataPlane {
    std::env::set_var("LB_WORKERS", "2");
    let options = lb_proxy::BindOptions {
        accept: Some(lb_proxy::AcceptMode::PerCore),
        ..Default::default()
    };
    start_with(settings(), services, options).await
}

/// Names of this process's threads that are per-core workers (stopping them
/// is tested beside `Workers`).
fn worker_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .filter(|n| n.starts_with("lb-worker-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn percore_binds_one_socket_per_worker_serves_all_and_closes_all() {
    let backend = http_backend("127.0.248.50", "hello").await;
    let vip = vip();
    let plane = start_percore(vec![service("percore", vip, &[backend.addr])]).await;
    // Every worker's socket is bound before start returns.
    assert_eq!(listeners_at(vip), 2, "one listener per worker");
    assert!(
        worker_threads().len() >= 2,
        "worker threads: {:?}",
        worker_threads()
    );
    serves_then_closes_every_socket(&plane, "percore", vip, &backend, "hello").await;
}

#[tokio::test]
async fn percore_drain_lets_an_open_connection_finish_on_its_worker() {
    let backend = echo_backend("127.0.248.51").await;
    let vip = vip();
    let plane = start_percore(vec![service("drain", vip, &[backend.addr])]).await;
    let mut conn = TcpStream::connect(vip).await.expect("connect");
    conn.write_all(b"before").await.expect("write");
    let mut buf = [0u8; 6];
    conn.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"before");
    let draining = {
        let plane = plane.clone();
        tokio::spawn(async move { plane.shutdown().await })
    };
    // Listeners close at once; the open connection still works.
    assert!(eventually(WAIT, || listeners_at(vip) == 0).await);
    conn.write_all(b"during")
        .await
        .expect("write while draining");
    conn.read_exact(&mut buf)
        .await
        .expect("echo while draining");
    assert_eq!(&buf, b"during");
    drop(conn);
    tokio::time::timeout(Duration::from_secs(5), draining)
        .await
        .expect("the drain ends once the connection closed")
        .expect("drain task");
    assert_eq!(plane.active_connections(), 0);
}
