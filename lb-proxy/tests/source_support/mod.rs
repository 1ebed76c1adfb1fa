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
        let mut p = Proxy::spawn(config, admin, extra, log)?;
        p.wait_up()?;
        Ok(p)
    }

    /// Runs `lb-proxy run --config CONFIG` plus `extra` args without
    /// waiting, so several nodes can start at the same moment.
    pub fn spawn(config: &Path, admin: SocketAddr, extra: &[&str], log: PathBuf) -> Result<Proxy> {
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()?;
        Ok(Proxy { child, admin, log })
    }

    /// Waits (20 s at most) until `/healthz` answers 200.
    pub fn wait_up(&mut self) -> Result<()> {
        let admin = self.admin;
        if !eventually(Duration::from_secs(20), || {
            matches!(http_get(admin, "/healthz"), Ok((200, _)))
        }) {
            let _ = self.child.kill();
            bail!("proxy did not come up: {}", self.logs());
        }
        Ok(())
    }

    /// `/readyz`'s status and body.
    pub fn readyz(&self) -> (u16, String) {
        http_get(self.admin, "/readyz").unwrap_or((0, String::new()))
    }

    /// One line of `/metrics` starting with `series` (name and labels), as
    /// a number.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(self.admin, "/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// The endpoints of service `name` from `/api/v1/endpoints`.
    pub fn endpoints(&self, name: &str) -> Vec<serde_json::Value> {
        let Ok((_, body)) = http_get(self.admin, "/api/v1/endpoints") else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["items"]
            .as_array()
            .and_then(|items| items.iter().find(|s| s["name"] == name))
            .and_then(|s| s["endpoints"].as_array().cloned())
            .unwrap_or_default()
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

/// A node's config file fed from etcd at `etcd_url` (key prefix
/// `/lbtest`), with `etcd_extra` lines appended to `[source.etcd]`.
pub fn node_config(name: &str, ip: &str, admin: u16, etcd_url: &str, etcd_extra: &str) -> String {
    format!(
        r#"
[node]
name = "{name}"
addresses = ["{ip}"]
[cluster]
service_cidr = "127.97.0.0/16"
[admin]
listen = "{ip}:{admin}"
[source.etcd]
endpoints = ["{etcd_url}"]
prefix = "/lbtest"
{etcd_extra}
"#
    )
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A CA, a server certificate for one IP and two client certificates (one
/// from another CA), made at run time with rcgen and written as PEM files.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by a CA etcd does not trust.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TestCerts {
    pub fn generate(server_ip: &str) -> Result<TestCerts> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let dir = tempfile::tempdir()?;
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let p = dir.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let ca = |cn: &str| -> Result<(String, Issuer<'static, KeyPair>)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.self_signed(&key)?;
            Ok((cert.pem(), Issuer::new(params, key)))
        };
        let leaf = |sans: Vec<String>,
                    cn: &str,
                    usage: Vec<ExtendedKeyUsagePurpose>,
                    issuer: &Issuer<'static, KeyPair>|
         -> Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = usage;
            let cert = params.signed_by(&key, issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (ca_pem, issuer) = ca("lb test CA")?;
        let (_, other) = ca("someone else's CA")?;
        let (server_cert, server_key) = leaf(
            vec![server_ip.to_string()],
            "etcd",
            // etcd's own gateway dials its gRPC port with the server
            // certificate as a client certificate.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            &issuer,
        )?;
        let (client_cert, client_key) = leaf(
            vec![],
            "lb-proxy",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            &issuer,
        )?;
        let (stranger_cert, stranger_key) = leaf(
            vec![],
            "stranger",
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            &other,
        )?;
        Ok(TestCerts {
            ca: write("ca.pem", ca_pem)?,
            server_cert: write("server.pem", server_cert)?,
            server_key: write("server-key.pem", server_key)?,
            client_cert: write("client.pem", client_cert)?,
            client_key: write("client-key.pem", client_key)?,
            stranger_cert: write("stranger.pem", stranger_cert)?,
            stranger_key: write("stranger-key.pem", stranger_key)?,
            dir,
        })
    }

    /// `[source.etcd]` lines that trust the CA and present the client
    /// certificate.
    pub fn etcd_lines(&self) -> String {
        format!(
            "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            self.ca, self.client_cert, self.client_key
        )
    }

    pub fn client_files(&self) -> lb_config::source::etcd::TlsFiles {
        lb_config::source::etcd::TlsFiles {
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
        }
    }
}

/// An etcd started for one test on loopback ports, data in a temp dir;
/// killed on drop. With `tls`, it serves clients over https and requires
/// a client certificate from the test CA.
pub struct Etcd {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ip: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub tls: Option<TestCerts>,
    /// User and password the test's own client logs in with (after
    /// `enable_auth`).
    pub login: Option<(String, String)>,
}

impl Etcd {
    pub fn start(ip: &str) -> Result<Etcd> {
        Etcd::start_with(ip, None)
    }

    pub fn start_with(ip: &str, tls: Option<TestCerts>) -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let mut e = Etcd {
            child: None,
            dir,
            ip: ip.to_string(),
            client_port: free_port(ip),
            peer_port: free_port(ip),
            tls,
            login: None,
        };
        e.restart()?;
        Ok(e)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    pub fn client_addr(&self) -> SocketAddr {
        addr(&format!("{}:{}", self.ip, self.client_port))
    }

    /// Starts (again) on the same ports and data directory, and waits until
    /// it answers.
    pub fn restart(&mut self) -> Result<()> {
        let client = self.url();
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))?;
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "lb-test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("lb-test={peer}")])
            .args(["--log-level", "error"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd (Debian package etcd-server)")?;
        self.child = Some(child);
        let mut last = None;
        let client = self.client();
        if !eventually(Duration::from_secs(20), || {
            last = client.ping().err();
            last.is_none()
        }) {
            bail!(
                "etcd did not start ({last:?}): {}",
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

    /// A client as the test (root after `enable_auth`, with the test's
    /// client certificate under TLS).
    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(lb_config::source::etcd::ClientOptions {
            endpoints: vec![self.url()],
            username: self.login.as_ref().map(|l| l.0.clone()),
            password: self.login.as_ref().map(|l| l.1.clone()),
            tls: self
                .tls
                .as_ref()
                .map(TestCerts::client_files)
                .unwrap_or_default(),
        })
    }

    /// POSTs `body` to the JSON gateway (plain http only) and returns the
    /// answer; `token` from `/v3/auth/authenticate` when auth is on.
    pub fn gateway(
        &self,
        path: &str,
        body: serde_json::Value,
        token: Option<&str>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}{path}", self.url());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut req = agent.post(&url);
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let mut resp = req.send(body.to_string())?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string()?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Turns on etcd's authentication: a `root` user (role root), and
    /// `user` with `password` whose role may read and write keys under
    /// `prefix` only. The test's own client logs in as root from now on.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) -> Result<()> {
        let end = lb_config::source::etcd::client::prefix_end(prefix);
        let root_pw = "root-secret";
        self.gateway(
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": root_pw}),
            None,
        )?;
        self.gateway(
            "/v3/auth/role/add",
            serde_json::json!({"name": "root"}),
            None,
        )?;
        self.gateway(
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
            None,
        )?;
        self.gateway(
            "/v3/auth/user/add",
            serde_json::json!({"name": user, "password": password}),
            None,
        )?;
        self.gateway("/v3/auth/role/add", serde_json::json!({"name": "lb"}), None)?;
        self.gateway(
            "/v3/auth/role/grant",
            serde_json::json!({"name": "lb", "perm": {
                "permType": "READWRITE", "key": b64(prefix.as_bytes()), "range_end": b64(&end)}}),
            None,
        )?;
        self.gateway(
            "/v3/auth/user/grant",
            serde_json::json!({"user": user, "role": "lb"}),
            None,
        )?;
        self.gateway("/v3/auth/enable", serde_json::json!({}), None)?;
        self.login = Some(("root".into(), root_pw.into()));
        Ok(())
    }

    /// Compacts the store up to `revision` (physically, so a watch from
    /// an older revision is refused).
    pub fn compact(&self, revision: i64) -> Result<()> {
        self.gateway(
            "/v3/kv/compaction",
            serde_json::json!({"revision": revision.to_string(), "physical": true}),
            None,
        )?;
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// lb-config's async etcd client, for the tests' synchronous steps: each
/// call runs on a one-thread runtime of the client's own.
pub struct EtcdClient {
    runtime: tokio::runtime::Runtime,
    client: lb_config::source::etcd::Client,
}

type EtcdResult<T> = Result<T, lb_config::source::etcd::EtcdError>;

impl EtcdClient {
    pub fn new(options: lb_config::source::etcd::ClientOptions) -> EtcdClient {
        EtcdClient {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime"),
            client: lb_config::source::etcd::Client::new(options),
        }
    }

    pub fn put(&self, key: &str, value: &[u8]) -> EtcdResult<i64> {
        self.runtime.block_on(self.client.put(key, value))
    }

    pub fn get(&self, key: &str) -> EtcdResult<Option<lb_config::source::etcd::Kv>> {
        self.runtime.block_on(self.client.get(key))
    }

    pub fn delete(&self, key: &str) -> EtcdResult<i64> {
        self.runtime.block_on(self.client.delete(key))
    }

    pub fn list(&self, prefix: &str) -> EtcdResult<(Vec<lb_config::source::etcd::Kv>, i64)> {
        self.runtime.block_on(self.client.list(prefix))
    }

    pub fn ping(&self) -> EtcdResult<()> {
        self.runtime.block_on(self.client.ping())
    }
}

/// Clients opening connections one after another (bounded in count and
/// time) until told to stop; every connection must get one of the
/// expected answers.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: thread::JoinHandle<TrafficReport>,
}

#[derive(Debug, Default)]
pub struct TrafficReport {
    pub answered: usize,
    pub failures: Vec<String>,
}

impl Traffic {
    /// At most `max` connections to `to`, one every 10 ms, for at most
    /// `limit`.
    pub fn start(
        to: SocketAddr,
        expected: &'static [&'static str],
        max: usize,
        limit: Duration,
    ) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let start = Instant::now();
            let mut report = TrafficReport::default();
            for i in 0..max {
                if flag.load(std::sync::atomic::Ordering::Relaxed) || start.elapsed() > limit {
                    break;
                }
                match ask(to) {
                    Ok(a) if expected.contains(&a.as_str()) => report.answered += 1,
                    Ok(a) => report
                        .failures
                        .push(format!("connection {i}: answered {a:?}")),
                    Err(e) => report.failures.push(format!("connection {i}: {e}")),
                }
                thread::sleep(Duration::from_millis(10));
            }
            report
        });
        Traffic { stop, handle }
    }

    pub fn finish(self) -> TrafficReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().expect("traffic thread")
    }
}

/// A TCP relay in front of etcd that can cut the watch streams passing
/// through it and hold new watch requests, so a test can make a watch
/// restart from a revision that was compacted meanwhile. Other requests
/// pass untouched.
pub struct Relay {
    pub addr: SocketAddr,
    state: std::sync::Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    hold: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    held: std::sync::atomic::AtomicUsize,
    /// Both legs of every connection that carried a watch request.
    watches: std::sync::Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Relay {
    pub fn start(ip: &str, target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind((ip, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = std::sync::Arc::new(RelayState::default());
        let st = state.clone();
        thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            while !st.stop.load(Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let st = st.clone();
                        thread::spawn(move || {
                            let _ = relay_one(client, target, &st);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Relay { addr, state })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every watch stream now and holds new watch requests (not
    /// sent on to etcd) until `release_watches`.
    pub fn cut_and_hold_watches(&self) {
        self.state
            .hold
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let conns = std::mem::take(&mut *self.state.watches.lock().expect("relay lock"));
        for (a, b) in conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// How many watch requests are held.
    pub fn held(&self) -> usize {
        self.state.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn release_watches(&self) {
        self.state
            .hold
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.release_watches();
    }
}

fn relay_one(client: TcpStream, target: SocketAddr, st: &RelayState) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    client.set_nonblocking(false)?;
    let upstream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    let (mut from_up, mut to_client) = (upstream.try_clone()?, client.try_clone()?);
    thread::spawn(move || {
        let _ = std::io::copy(&mut from_up, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let (mut from_client, mut to_up) = (client.try_clone()?, upstream.try_clone()?);
    let mut buf = vec![0u8; 64 * 1024];
    let mut watch = false;
    loop {
        let n = from_client.read(&mut buf)?;
        if n == 0 {
            let _ = to_up.shutdown(Shutdown::Write);
            return Ok(());
        }
        if !watch && buf[..n].windows(14).any(|w| w == b"POST /v3/watch") {
            watch = true;
            st.watches
                .lock()
                .expect("relay lock")
                .push((client.try_clone()?, upstream.try_clone()?));
            if st.hold.load(Relaxed) {
                st.held.fetch_add(1, Relaxed);
                let start = Instant::now();
                while st.hold.load(Relaxed) && start.elapsed() < Duration::from_secs(60) {
                    thread::sleep(Duration::from_millis(10));
                }
                st.held.fetch_sub(1, Relaxed);
            }
        }
        to_up.write_all(&buf[..n])?;
    }
}

/// Standard base64 (the gateway's encoding of keys).
pub fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
