//! Helpers for the observability tests: an App started from a TOML file with
//! an admin listener, echo backends that can be killed, the admin API read
//! with `lb-proxy get`'s own client, and bounded waits (`wait`, shared with
//! the DNS tests). Loopback only; every wait is bounded.

#![allow(dead_code, unreachable_pub)]

mod wait;
#[allow(unused_imports)]
pub use wait::*;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lb_proxy::app::{App, AppOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for any single wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A distinct 127.77.x.y address per call (per process), for cluster IPs
/// and backends, so tests in one binary never collide.
pub fn addr() -> IpAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = (std::process::id() as usize % 50) * 200 + NEXT.fetch_add(1, Ordering::Relaxed);
    IpAddr::from([127, 77, (n / 250 + 1) as u8, (n % 250 + 1) as u8])
}

/// A port free on `ip` a moment ago.
pub fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// An echo backend on a fresh loopback address; abort the handle to kill it.
pub async fn echo_backend() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((addr(), 0)).await.expect("bind backend");
    let local = listener.local_addr().expect("backend address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (local, task)
}

/// One round trip through an open connection.
pub async fn echo(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.expect("write");
    let mut got = vec![0u8; payload.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got))
        .await
        .expect("echo within the bound")
        .expect("read echo");
    assert_eq!(got, payload);
}

/// `[[services]]` + `[[endpoints]]` for a selector-less TCP service.
pub fn service_toml(
    name: &str,
    cluster_ip: IpAddr,
    port: u16,
    backends: &[SocketAddr],
    extra: &str,
) -> String {
    let target = backends.first().map_or(port, |b| b.port());
    let addresses: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ ip = \"{}\" }}", b.ip()))
        .collect();
    format!(
        r#"
[[services]]
name = "{name}"
cluster_ip = "{cluster_ip}"
{extra}
[[services.ports]]
name = "tcp"
port = {port}
target_port = {target}

[[endpoints]]
name = "{name}"
[[endpoints.subsets]]
addresses = [{addresses}]
ports = [{{ name = "tcp", port = {target} }}]
"#,
        addresses = addresses.join(", ")
    )
}

/// The file's head: node, cluster range, short dial timeouts, an admin
/// listener on a free loopback port.
pub fn base_toml(admin: SocketAddr) -> String {
    format!(
        r#"
[node]
name = "node-1"
addresses = ["127.0.0.1"]

[cluster]
service_cidr = "127.77.0.0/16"

[proxy]
connect_timeouts_ms = [200, 200, 200]
drain_timeout = "2s"

[admin]
listen = "{admin}"
"#
    )
}

/// A running App and its file.
pub struct Proxy {
    pub app: App,
    pub admin: String,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts an App from `base_toml` + `services`.
    pub async fn start(services: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lb.toml");
        let ip = addr();
        let admin = SocketAddr::new(ip, free_port(ip));
        std::fs::write(&path, base_toml(admin) + services).expect("write config");
        let app = App::start(AppOptions::new(path.clone()))
            .await
            .expect("the App starts");
        let admin = app.admin_addr().expect("admin enabled").to_string();
        Proxy {
            app,
            admin,
            path,
            _dir: dir,
        }
    }

    /// Rewrites the file with `services` and reloads.
    pub async fn rewrite(&self, services: &str) -> bool {
        let admin: SocketAddr = self.admin.parse().expect("admin address");
        std::fs::write(&self.path, base_toml(admin) + services).expect("write config");
        self.app.reload(true).await
    }

    /// GET `path` on the admin API (off the runtime's worker).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let admin = self.admin.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || lb_proxy::cli::get::fetch_status(&admin, &path))
            .await
            .expect("join")
            .expect("the admin API answers")
    }

    /// GET `path` as JSON (200 expected).
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}
