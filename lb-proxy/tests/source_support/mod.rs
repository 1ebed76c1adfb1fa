//! Helpers for the source_* and manifest_* tests: the binary, backends,
//! polling, and an etcd started on loopback by the test itself.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lb-proxy")
}

/// A backend that answers every connection with `body` and closes (the
/// walkthrough's nginx pods answering 111, 222, 333).
pub fn answer_backend(addr: &str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let local = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let _ = conn.write_all(body.as_bytes());
            let _ = conn.shutdown(Shutdown::Write);
        }
    });
    local
}

/// What `addr` answers on a fresh connection.
pub fn ask(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Polls `f` every 50 ms until it returns true, for at most `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status: u16 = out
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

/// A free TCP port on `ip` (bound and released; good enough for tests that
/// each use their own 127.x address).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `lb-proxy run`, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Proxy {
    /// Runs `lb-proxy run --config CONFIG` plus `extra` args and waits for
    /// `/healthz` on `admin`.
    pub fn start(config: &Path, admin: SocketAddr, extra: &[&str], log: PathBuf) -> Result<Proxy> {
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()?;
        let mut p = Proxy { child, admin, log };
        if !eventually(Duration::from_secs(20), || {
            matches!(http_get(admin, "/healthz"), Ok((200, _)))
        }) {
            let _ = p.child.kill();
            bail!("proxy did not come up: {}", p.logs());
        }
        Ok(p)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn services(&self) -> serde_json::Value {
        let (_, body) = http_get(self.admin, "/api/v1/services").expect("services");
        serde_json::from_str(&body).expect("json")
    }

    /// The cluster IP and node ports of service `name`, from the admin API.
    pub fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.services()["items"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An etcd started for one test on loopback ports, data in a temp dir;
/// killed on drop.
pub struct Etcd {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl Etcd {
    pub fn start(ip: &str) -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let mut e = Etcd {
            child: None,
            dir,
            ip: ip.to_string(),
            client_port: free_port(ip),
            peer_port: free_port(ip),
        };
        e.restart()?;
        Ok(e)
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// Starts (again) on the same ports and data directory, and waits until
    /// it answers.
    pub fn restart(&mut self) -> Result<()> {
        let client = self.url();
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "lb-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("lb-test={peer}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd (Debian package etcd-server)")?;
        self.child = Some(child);
        let addr: SocketAddr = format!("{}:{}", self.ip, self.client_port).parse()?;
        if !eventually(Duration::from_secs(20), || {
            let client =
                lb_config::source::etcd::Client::new(lb_config::source::etcd::ClientOptions {
                    endpoints: vec![format!("http://{addr}")],
                    ..Default::default()
                });
            client.ping().is_ok()
        }) {
            bail!(
                "etcd did not start: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
        }
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> lb_config::source::etcd::Client {
        lb_config::source::etcd::Client::new(lb_config::source::etcd::ClientOptions {
            endpoints: vec![self.url()],
            ..Default::default()
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
