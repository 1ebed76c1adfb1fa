//! etcd for the tests that read from it: an etcd process started by the
//! test on loopback ports (optionally with TLS and client certificates made
//! at run time), lb-config's client driven from blocking tests, a relay that
//! can cut and hold watch streams, and the config of a node fed from etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backend::runtime;

use super::addr::{free_port, sa};
use super::wait::eventually_blocking;

/// A node's config file fed from etcd at `etcd_url` (key prefix
/// `/lbtest`), with `etcd_extra` lines appended to `[source.etcd]`. Cluster
/// IPs come from 127.97.0.0/20: allocated ones land anywhere in its upper
/// band (as Kubernetes picks them), clear of lb_app's 127.97.NET.0/24s.
pub fn node_config(name: &str, ip: &str, admin: u16, etcd_url: &str, etcd_extra: &str) -> String {
    format!(
        r#"
[node]
name = "{name}"
addresses = ["{ip}"]
[cluster]
service_cidr = "127.97.0.0/20"
[admin]
listen = "{ip}:{admin}"
[source.etcd]
endpoints = ["{etcd_url}"]
prefix = "/lbtest"
{etcd_extra}
"#
    )
}

/// A CA, a server certificate for one IP and two client certificates (one
/// from another CA), made at run time with rcgen and written as PEM files.
#[derive(Debug)]
pub struct TestCerts {
    /// Where the files are (removed on drop).
    _dir: tempfile::TempDir,
    /// The CA's certificate.
    pub ca: PathBuf,
    /// etcd's certificate, for the IP it listens on.
    pub server_cert: PathBuf,
    /// etcd's key.
    pub server_key: PathBuf,
    /// lb-proxy's client certificate, signed by the CA.
    pub client_cert: PathBuf,
    /// lb-proxy's client key.
    pub client_key: PathBuf,
    /// A client certificate signed by a CA etcd does not trust.
    pub stranger_cert: PathBuf,
    /// The stranger's key.
    pub stranger_key: PathBuf,
}

impl TestCerts {
    /// Makes the certificates, the server's for `server_ip`.
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
            _dir: dir,
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

    /// The client side's files, as lb-config's client takes them.
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
#[derive(Debug)]
pub struct Etcd {
    /// The process, while it runs.
    pub child: Option<Child>,
    /// Its data directory and log.
    pub dir: tempfile::TempDir,
    /// The loopback address it listens on.
    pub ip: String,
    /// Its client port.
    pub client_port: u16,
    /// Its peer port.
    pub peer_port: u16,
    /// Its certificates, when it serves clients over TLS.
    pub tls: Option<TestCerts>,
    /// User and password the test's own client logs in with (after
    /// `enable_auth`).
    pub login: Option<(String, String)>,
}

impl Etcd {
    /// Starts etcd on `ip` over plain http.
    pub fn start(ip: &str) -> Result<Etcd> {
        Etcd::start_with(ip, None)
    }

    /// Starts etcd on `ip`, over TLS with `tls`.
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

    /// Its client URL, for `[source.etcd] endpoints`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.client_port)
    }

    /// Its client address.
    pub fn client_addr(&self) -> SocketAddr {
        sa(&format!("{}:{}", self.ip, self.client_port))
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
        if !eventually_blocking(Duration::from_secs(20), || {
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

    /// Kills it (the data stays for a restart).
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
#[derive(Debug)]
pub struct EtcdClient {
    runtime: tokio::runtime::Runtime,
    client: lb_config::source::etcd::Client,
}

type EtcdResult<T> = Result<T, lb_config::source::etcd::EtcdError>;

impl EtcdClient {
    /// A client with `options`.
    pub fn new(options: lb_config::source::etcd::ClientOptions) -> EtcdClient {
        EtcdClient {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime"),
            client: lb_config::source::etcd::Client::new(options),
        }
    }

    /// Writes `key`; the revision.
    pub fn put(&self, key: &str, value: &[u8]) -> EtcdResult<i64> {
        self.runtime.block_on(self.client.put(key, value))
    }

    /// Reads `key`.
    pub fn get(&self, key: &str) -> EtcdResult<Option<lb_config::source::etcd::Kv>> {
        self.runtime.block_on(self.client.get(key))
    }

    /// Deletes `key`; the revision.
    pub fn delete(&self, key: &str) -> EtcdResult<i64> {
        self.runtime.block_on(self.client.delete(key))
    }

    /// Every key under `prefix`, and the revision read at.
    pub fn list(&self, prefix: &str) -> EtcdResult<(Vec<lb_config::source::etcd::Kv>, i64)> {
        self.runtime.block_on(self.client.list(prefix))
    }

    /// Whether etcd answers.
    pub fn ping(&self) -> EtcdResult<()> {
        self.runtime.block_on(self.client.ping())
    }
}

/// A TCP relay in front of etcd that can cut the watch streams passing
/// through it and hold new watch requests, so a test can make a watch
/// restart from a revision that was compacted meanwhile. Other requests
/// pass untouched. Runs on the support library's runtime; stops when
/// dropped.
#[derive(Debug)]
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<RelayState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct RelayState {
    /// Whether new watch requests are held.
    hold: watch::Sender<bool>,
    /// Watch requests held now.
    held: AtomicUsize,
    /// Cuts the connections that carry a watch request.
    watches: Mutex<CancellationToken>,
}

impl Relay {
    /// A relay on `ip` (any port) to `target`.
    pub fn start(ip: &str, target: SocketAddr) -> Result<Relay> {
        let std = std::net::TcpListener::bind((ip, 0))?;
        std.set_nonblocking(true)?;
        let addr = std.local_addr()?;
        let rt = runtime();
        let listener = {
            let _entered = rt.enter();
            tokio::net::TcpListener::from_std(std)?
        };
        let state = Arc::new(RelayState {
            hold: watch::channel(false).0,
            held: AtomicUsize::new(0),
            watches: Mutex::new(CancellationToken::new()),
        });
        let st = state.clone();
        let task = rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay_one(client, target, st.clone()));
            }
        });
        Ok(Relay { addr, state, task })
    }

    /// Its URL, for `[source.etcd] endpoints`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every watch stream now and holds new watch requests (not
    /// sent on to etcd) until `release_watches`.
    pub fn cut_and_hold_watches(&self) {
        self.state.hold.send_replace(true);
        let cut = std::mem::take(&mut *self.state.watches.lock().expect("relay lock"));
        cut.cancel();
    }

    /// How many watch requests are held.
    pub fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    /// Sends the held watch requests on, and every later one.
    pub fn release_watches(&self) {
        self.state.hold.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.release_watches();
        self.state.watches.lock().expect("relay lock").cancel();
    }
}

/// Relays one connection; a connection that carries a watch request can be
/// cut (both legs closed), and the request held before it goes on.
async fn relay_one(client: TcpStream, target: SocketAddr, st: Arc<RelayState>) {
    let Ok(Ok(upstream)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_up, mut to_up) = upstream.into_split();
    let mut down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_up, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    let mut cut: Option<CancellationToken> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from_client.read(&mut buf) => match read {
                Ok(n) => n,
                Err(_) => break,
            },
            () = cut_of(cut.clone()) => {
                down.abort();
                return;
            }
        };
        if n == 0 {
            let _ = to_up.shutdown().await;
            break;
        }
        if cut.is_none() && buf[..n].windows(14).any(|w| w == b"POST /v3/watch") {
            cut = Some(st.watches.lock().expect("relay lock").clone());
            let mut hold = st.hold.subscribe();
            if *hold.borrow() {
                st.held.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::time::timeout(Duration::from_secs(60), hold.wait_for(|held| !*held))
                    .await;
                st.held.fetch_sub(1, Ordering::SeqCst);
            }
        }
        if to_up.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    tokio::select! {
        _ = &mut down => {}
        () = cut_of(cut) => down.abort(),
    }
}

/// Resolves when `cut` is cancelled; never without one.
async fn cut_of(cut: Option<CancellationToken>) {
    match cut {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
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
