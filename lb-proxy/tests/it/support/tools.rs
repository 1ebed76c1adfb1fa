//! Programs the tests drive: finding them on PATH (tests that need one say
//! why they skip without it), `dig`, and a `dnsmasq` on loopback as a DNS
//! upstream or a UDP endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

use super::addr::{free_udp_port, AsIp};
use super::wait::eventually_async;

/// Where `program` is on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    which(program).is_some()
}

/// Whether a test that needs `program` runs: `true` when it is on PATH.
/// Without it the test says `SKIPPED` (with `install`, the Debian command
/// that brings it) and passes on a developer's machine, but fails under CI
/// (`CI=true`), where `.ci/run` installs every tool: there a missing tool
/// is a broken install step, not a reason to pass untested.
pub fn required(program: &str, install: &str) -> bool {
    if have(program) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{program} is not installed and CI=true: .ci/run must install it ({install})");
    }
    eprintln!("SKIPPED: {program} is not installed ({install})");
    false
}

/// `dig -p PORT @IP ARGS +time=2 +tries=1` against `server`: what it
/// printed on stdout (empty when it could not run or timed out).
pub async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .arg("-p")
        .arg(server.port().to_string())
        .arg(format!("@{}", server.ip()))
        .args(args)
        .args(["+time=2", "+tries=1"])
        .output()
        .await
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("timed out") {
        return String::new();
    }
    text
}

/// A dnsmasq on loopback answering `address` entries (`/example.test/127.1.2.3`)
/// and refusing everything else; killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    /// Where it answers.
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq on `ip` (a free port) with `--address=` entries; waits
    /// (at most 5 s) until it answers.
    pub async fn start(ip: impl AsIp, addresses: &[&str]) -> Dnsmasq {
        let ip = ip.as_ip();
        Self::start_on(SocketAddr::new(ip, free_udp_port(ip)), addresses).await
    }

    /// Starts dnsmasq on exactly `addr`.
    pub async fn start_on(addr: SocketAddr, addresses: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid: PathBuf = dir.path().join("dnsmasq.pid");
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-resolv",
            "--no-hosts",
            "--keep-in-foreground",
            "--bind-interfaces",
            "--conf-file=/dev/null",
            "--cache-size=0",
        ])
        .arg(format!("--listen-address={}", addr.ip()))
        .arg(format!("--port={}", addr.port()))
        .arg(format!("--pid-file={}", pid.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for a in addresses {
            cmd.arg(format!("--address={a}"));
        }
        let child = cmd.spawn().expect("dnsmasq starts");
        let d = Dnsmasq {
            addr,
            child,
            _dir: dir,
        };
        let answers = eventually_async(Duration::from_secs(5), || answers_a_query(addr)).await;
        assert!(answers, "dnsmasq did not answer on {addr} within 5 s");
        d
    }
}

/// Whether a DNS server at `addr` answers a question (any answer) within
/// 200 ms.
async fn answers_a_query(addr: SocketAddr) -> bool {
    let ask = async {
        let s = UdpSocket::bind("127.0.0.1:0").await.ok()?;
        s.connect(addr).await.ok()?;
        let mut m = Message::new();
        m.add_query(Query::query(
            Name::from_ascii("probe.invalid.").ok()?,
            RecordType::A,
        ));
        s.send(&m.to_vec().ok()?).await.ok()?;
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf))
            .await
            .ok()?
            .ok()
    };
    ask.await.is_some()
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian's `libnginx-mod-stream` puts nginx's stream module.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Whether a test that needs nginx with its stream module runs (as
/// [`required`]: skipped on a developer's machine without it, a failure
/// under `CI=true`).
pub fn nginx_stream_required() -> bool {
    const INSTALL: &str = "apt-get install nginx libnginx-mod-stream";
    if !required("nginx", INSTALL) {
        return false;
    }
    if std::path::Path::new(NGINX_STREAM_MODULE).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{NGINX_STREAM_MODULE} is missing and CI=true: .ci/run must install it ({INSTALL})");
    }
    eprintln!("SKIPPED: {NGINX_STREAM_MODULE} is missing ({INSTALL})");
    false
}

/// An nginx in the foreground with a `stream { }` block of the test's own,
/// in a temporary prefix; killed on drop. One process (`master_process
/// off`): a killed master would leave its workers running.
#[derive(Debug)]
pub struct NginxStream {
    child: Child,
    dir: tempfile::TempDir,
}

impl NginxStream {
    /// Starts nginx with `servers` inside `stream { }` and waits (at most
    /// 5 s) until `listening` accepts connections.
    pub async fn start(servers: &str, listening: SocketAddr) -> NginxStream {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("nginx.conf");
        let prefix = dir.path().display().to_string();
        std::fs::write(
            &conf,
            format!(
                "load_module {NGINX_STREAM_MODULE};\n\
                 master_process off;\n\
                 pid {prefix}/nginx.pid;\n\
                 error_log {prefix}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 stream {{\n{servers}\n}}\n"
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let nginx = NginxStream { child, dir };
        let up = eventually_async(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(listening).await.is_ok()
        })
        .await;
        assert!(
            up,
            "nginx did not listen on {listening} within 5 s: {}",
            nginx.error_log()
        );
        nginx
    }

    /// nginx's error log so far (for assertion messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
