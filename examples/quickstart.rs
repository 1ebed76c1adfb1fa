//! The quickstart: the classic three-nginx demo, on loopback.
//!
//! ```text
//! cargo run --release -p lb-examples --example quickstart                      # demo, then serve until Ctrl-C
//! cargo run --release -p lb-examples --example quickstart -- --exit-after-demo # demo only
//! cargo build --release -p lb-proxy                             # the binary its hints run
//! ```
//!
//! The example shares the binary's release build (same dependency features,
//! see `examples/Cargo.toml`): building one after the other compiles only
//! what is new.
//!
//! It starts three in-process HTTP backends ("pods") answering `111`, `222`
//! and `333`, runs lb-proxy exactly as the binary does from
//! `examples/quickstart.toml` (a ClusterIP, a NodePort and a ClientIP-affinity
//! service over the pods), sends requests through each service and prints who
//! answered.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use lb_core::ServiceKey;
use lb_proxy::app::{App, AppOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// The pods of `quickstart.toml` and what each answers.
const PODS: [(&str, &str); 3] = [
    ("127.0.244.1:8080", "111"),
    ("127.0.244.2:8080", "222"),
    ("127.0.244.3:8080", "333"),
];

/// What the demo saw: one line per service, and the running proxy.
pub(crate) struct Demo {
    /// Printable report lines.
    pub(crate) lines: Vec<String>,
    /// Every answer received, in order.
    pub(crate) answers: Vec<String>,
    /// The running proxy (serves until dropped or shut down).
    pub(crate) app: App,
}

/// Starts one HTTP backend that answers `body` to every request.
async fn http_backend(addr: &str, body: &'static str) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding backend {addr}"))?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // Read the request head (a single read suffices for curl-sized requests).
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
                    body.len() + 1
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(())
}

/// One HTTP GET through `addr` from source address `from`; returns the body.
async fn get(addr: SocketAddr, from: IpAddr) -> Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let mut conn = tokio::time::timeout(Duration::from_secs(3), socket.connect(addr))
        .await
        .context("connect timed out")??;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: quickstart\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(3), conn.read_to_string(&mut reply))
        .await
        .context("read timed out")??;
    Ok(reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.toml")
}

/// Starts the pods and the proxy, sends requests through every service.
pub(crate) async fn demo() -> Result<Demo> {
    for (addr, body) in PODS {
        http_backend(addr, body).await?;
    }
    let app = App::start(AppOptions::new(config_path()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let snapshot = app.dataplane().table().load();
    let cluster_ip = |name: &str| -> Result<IpAddr> {
        snapshot
            .service(&ServiceKey::new("default", name))
            .and_then(|s| s.spec.cluster_ip.ip())
            .with_context(|| format!("service {name} has no cluster IP"))
    };
    let client: IpAddr = "127.0.0.1".parse()?;
    let mut lines = Vec::new();
    let mut answers = Vec::new();

    let targets = [
        (
            "ClusterIP",
            "nginx-service",
            SocketAddr::new(cluster_ip("nginx-service")?, 8080),
        ),
        ("NodePort ", "nginx-nodeport", "127.0.0.1:30080".parse()?),
        (
            "NodePort ",
            "nginx-nodeport",
            SocketAddr::new(cluster_ip("nginx-nodeport")?, 8080),
        ),
    ];
    for (kind, name, addr) in targets {
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(get(addr, client).await?);
        }
        lines.push(format!(
            "{kind}  {name:<15} {addr:<18} -> {}",
            got.join(" ")
        ));
        answers.extend(got);
    }

    let sticky = SocketAddr::new(cluster_ip("nginx-sticky")?, 8080);
    for last in [21u8, 22, 23] {
        let from = IpAddr::from([127, 0, 0, last]);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(get(sticky, from).await?);
        }
        lines.push(format!(
            "ClientIP   nginx-sticky    {sticky:<18} -> from {from:<11} {}",
            got.join(" ")
        ));
        answers.extend(got);
    }
    Ok(Demo {
        lines,
        answers,
        app,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let exit_after_demo = std::env::args().any(|a| a == "--exit-after-demo");
    println!("lb quickstart: pods nginx-1..3 at 127.0.244.1-3:8080 answer 111, 222, 333");
    println!("config: examples/quickstart.toml\n");
    let demo = demo().await?;
    for line in &demo.lines {
        println!("{line}");
    }
    let mut pods: Vec<&str> = demo.answers.iter().map(String::as_str).collect();
    pods.sort_unstable();
    pods.dedup();
    println!("\npods that answered: {}", pods.join(" "));
    if exit_after_demo {
        demo.app.shutdown().await;
        return Ok(());
    }
    println!(
        "\nServing until Ctrl-C. Try (the binary: cargo build --release -p lb-proxy):\n\
         \x20 curl http://127.96.0.10:8080/\n\
         \x20 curl http://127.0.0.1:30080/\n\
         \x20 curl --interface 127.0.0.21 http://127.96.0.12:8080/   # sticky: same answer every time\n\
         \x20 ./target/release/lb-proxy get services --admin 127.0.0.1:10249\n\
         \x20 ./target/release/lb-proxy get endpoints -o wide --admin 127.0.0.1:10249\n\
         \x20 curl http://127.0.0.1:10249/api/v1/services"
    );
    tokio::signal::ctrl_c().await?;
    println!("draining...");
    demo.app.shutdown().await;
    Ok(())
}
