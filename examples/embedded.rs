//! Embedding lb in your own tokio program, with no file at all: build services
//! in code, start the data plane with your own shutdown signal, and push new
//! endpoint sets while it runs (for example from your service discovery).
//!
//! ```text
//! cargo run --example embedded
//! ```

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use lb_core::{EndpointSpec, NodeSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot};
use lb_proxy::dataplane::DataPlane;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers `name` and closes.
async fn backend(name: &'static str) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(name.as_bytes()).await;
        }
    });
    Ok(addr)
}

async fn ask(addr: SocketAddr) -> Result<String> {
    let mut conn = TcpStream::connect(addr).await.context("connect")?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(3), conn.read_to_string(&mut out)).await??;
    Ok(out)
}

/// The service as our own discovery would describe it.
fn service(vip: SocketAddr, backends: &[SocketAddr]) -> ServiceSpec {
    let mut port = PortSpec::tcp("app", vip.port());
    for b in backends {
        port = port.with_endpoint(EndpointSpec::new(*b));
    }
    ServiceSpec::cluster_ip("default", "app", vip.ip()).with_port(port)
}

/// Runs the demo until `shutdown` resolves or the demo ends; returns who answered.
pub(crate) async fn demo(shutdown: impl std::future::Future<Output = ()>) -> Result<Vec<String>> {
    let blue = backend("blue").await?;
    let green = backend("green").await?;
    let vip: SocketAddr = "127.97.0.1:7000".parse()?;
    let node = NodeSpec {
        name: "embedded".into(),
        addresses: vec!["127.0.0.1".parse()?],
        zone: None,
    };

    let first = Snapshot::build(
        node.clone(),
        vec![service(vip, &[blue])],
        None,
        SystemTime::now(),
    );
    let dataplane = DataPlane::start(ProxySettings::default(), first).await;
    let work = async {
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(ask(vip).await?);
        }
        // Discovery says: blue is gone, green is here. State (counters, affinity)
        // carries over; open connections to blue drain.
        dataplane
            .update(node.clone(), vec![service(vip, &[green])])
            .await;
        for _ in 0..2 {
            seen.push(ask(vip).await?);
        }
        anyhow::Ok(seen)
    };
    let seen = tokio::select! {
        seen = work => seen?,
        _ = shutdown => Vec::new(),
    };
    dataplane.shutdown().await;
    Ok(seen)
}

#[tokio::main]
async fn main() -> Result<()> {
    let seen = demo(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("answers: {}", seen.join(" "));
    Ok(())
}
