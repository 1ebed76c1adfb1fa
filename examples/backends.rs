//! Demo backends for a config: an HTTP server (TCP) or an echo of the pod's
//! name (UDP) at every endpoint address of every service, so that
//! `lb-proxy run` on `examples/quickstart.toml` or on the manifests has
//! someone to forward to.
//!
//! ```text
//! cargo run --release -p lb-examples --example backends -- --config examples/quickstart.toml
//! cargo run --release -p lb-examples --example backends -- --config examples/manifests/node.toml --manifests examples/manifests
//! ```
//!
//! Each backend answers with the name of its pod (or its address, for an
//! endpoint listed by hand), so `curl` through a service shows who answered.
//! Only loopback addresses (127.0.0.0/8, `::1`) are served: the config's
//! other endpoints are reported and skipped. A port below 1024 needs root
//! (or `CAP_NET_BIND_SERVICE`), as the manifests' port 80 does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use lb_core::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// One address a backend should answer at, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Wanted {
    pub(crate) addr: SocketAddr,
    pub(crate) protocol: Protocol,
    /// The pod's name, or the address for endpoints listed by hand.
    pub(crate) name: String,
}

/// What [`start`] did: the backends serving, and the endpoints it left alone
/// (not loopback, or the bind failed) with why.
pub(crate) struct Started {
    pub(crate) serving: Vec<Wanted>,
    pub(crate) skipped: Vec<(Wanted, String)>,
}

/// Every endpoint address of every service in the config (and the
/// manifests), deduplicated.
pub(crate) fn wanted(config: &Path, manifests: Option<&Path>) -> Result<Vec<Wanted>> {
    let config = lb_proxy::cli::check(config, manifests, None)
        .map_err(|e| anyhow!("invalid config:\n{e}"))?;
    let mut out = BTreeMap::new();
    for service in config
        .services
        .iter()
        .map(|s| &**s)
        .chain(&config.not_proxied)
    {
        for port in &service.ports {
            for ep in &port.endpoints {
                let name = ep.pod.clone().unwrap_or_else(|| ep.addr.to_string());
                out.entry((ep.addr, port.protocol)).or_insert(name);
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|((addr, protocol), name)| Wanted {
            addr,
            protocol,
            name,
        })
        .collect())
}

/// Starts a backend at every wanted loopback address; they serve until the
/// runtime ends.
pub(crate) async fn start(wanted: Vec<Wanted>) -> Started {
    let mut started = Started {
        serving: Vec::new(),
        skipped: Vec::new(),
    };
    for w in wanted {
        if !w.addr.ip().is_loopback() {
            started
                .skipped
                .push((w, "not a loopback address: left to the real backend".into()));
            continue;
        }
        let bound = match w.protocol {
            Protocol::Tcp => http(w.addr, w.name.clone()).await,
            Protocol::Udp => echo(w.addr, w.name.clone()).await,
        };
        match bound {
            Ok(()) => started.serving.push(w),
            Err(e) => started.skipped.push((w, format!("{e:#}"))),
        }
    }
    started
}

/// An HTTP server at `addr` answering `name` to every request.
async fn http(addr: SocketAddr, name: String) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}/TCP"))?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // One read holds a curl- or probe-sized request head.
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}\n",
                    name.len() + 1
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Ok(())
}

/// A UDP responder at `addr` answering `name` to every datagram.
async fn echo(addr: SocketAddr, name: String) -> Result<()> {
    let socket = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}/UDP"))?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(name.as_bytes(), from).await;
        }
    });
    Ok(())
}

/// `--config FILE [--manifests DIR]`.
fn args() -> Result<(PathBuf, Option<PathBuf>)> {
    let mut config = None;
    let mut manifests = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => config = it.next().map(PathBuf::from),
            "--manifests" => manifests = it.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("usage: backends --config FILE [--manifests DIR]");
                std::process::exit(0);
            }
            other => bail!(
                "unknown argument {other:?} (usage: backends --config FILE [--manifests DIR])"
            ),
        }
    }
    let config = config.context("--config FILE is required (e.g. examples/quickstart.toml)")?;
    Ok((config, manifests))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (config, manifests) = args()?;
    let started = start(wanted(&config, manifests.as_deref())?).await;
    for w in &started.serving {
        println!("{} {}/{}", w.name, w.addr, w.protocol);
    }
    for (w, why) in &started.skipped {
        eprintln!("skipped {} {}/{}: {why}", w.name, w.addr, w.protocol);
    }
    if started.serving.is_empty() {
        bail!("no backend could start");
    }
    println!(
        "\n{} backends answering with their pod's name until Ctrl-C",
        started.serving.len()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
