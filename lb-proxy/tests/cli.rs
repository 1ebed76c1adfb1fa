//! The `lb-proxy` binary as an operator meets it: `check`, `run` with reloads
//! and signals, `get`. Each test uses its own 127.x addresses so tests can run
//! in parallel.
#![cfg(feature = "cli")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lb-proxy")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

fn check(text: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lb.toml");
    write(&path, text);
    Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run lb-proxy check")
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An echo backend on `addr` (port 0 picks one); returns its address.
fn echo_backend(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).expect("bind echo backend");
    let local = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = conn.shutdown(Shutdown::Write);
                            break;
                        }
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    local
}

/// A backend that answers every connection with `body` and closes.
fn answer_backend(addr: &str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(addr).expect("bind answer backend");
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

/// Reads what `addr` answers on a fresh connection.
fn ask(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Polls `f` every 50 ms until it returns true, for at most `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
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

/// A running `lb-proxy run`, killed on drop.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Proxy {
    fn start(config_text: &str, admin: &str) -> Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("lb.toml");
        write(&config, config_text);
        Self::start_at(dir, config, admin)
    }

    fn start_at(dir: tempfile::TempDir, config: PathBuf, admin: &str) -> Result<Proxy> {
        let child = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let admin: SocketAddr = admin.parse()?;
        let mut proxy = Proxy { child, dir, config };
        if !eventually(Duration::from_secs(10), || {
            matches!(http_get(admin, "/healthz"), Ok((200, _)))
        }) {
            let _ = proxy.child.kill();
            bail!("lb-proxy did not become healthy");
        }
        Ok(proxy)
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for exit for at most `limit`; returns the exit code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn service_toml(name: &str, cluster_ip: &str, port: u16, backend: SocketAddr) -> String {
    format!(
        r#"
[[services]]
name = "{name}"
cluster_ip = "{cluster_ip}"
[[services.ports]]
name = "tcp"
port = {port}
target_port = {backend_port}

[[endpoints]]
name = "{name}"
[[endpoints.subsets]]
addresses = [{{ ip = "{backend_ip}" }}]
ports = [{{ name = "tcp", port = {backend_port} }}]
"#,
        backend_ip = backend.ip(),
        backend_port = backend.port()
    )
}

fn base_toml(admin: &str) -> String {
    format!(
        r#"
[node]
name = "node-1"
addresses = ["127.0.0.1"]

[cluster]
service_cidr = "127.96.0.0/16"

[proxy]
drain_timeout = "5s"

[admin]
listen = "{admin}"
"#
    )
}

// === check ===

#[test]
fn check_accepts_the_empty_file() {
    let out = check("");
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
}

#[test]
fn check_reports_a_node_port_out_of_range_in_kubernetes_words() {
    let out = check(
        r#"
[[services]]
name = "nginx-service"
type = "NodePort"
[[services.ports]]
port = 80
node_port = 80
"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(combined(&out).contains(
        "services[nginx-service].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
    ), "{}", combined(&out));
}

#[test]
fn check_names_the_namespace_when_it_is_not_default_and_reports_every_error() {
    let out = check(
        r#"
[[services]]
name = "web"
namespace = "shop"
[[services.ports]]
port = 80
node_port = 30001
[[services.ports]]
name = "b"
port = 81
target_port = "Bad_Port"
"#,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = combined(&out);
    for line in [
        "services[shop/web].ports[0].name: Required value",
        "services[shop/web].ports[0].node_port: Forbidden: may not be used when `type` is 'ClusterIP'",
        "services[shop/web].ports[1].target_port: Invalid value: \"Bad_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn run_exits_1_on_an_invalid_file_and_prints_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    write(
        &path,
        "[[services]]\nname = \"Bad_Name\"\n[[services.ports]]\nport = 80\n",
    );
    let out = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        combined(&out).contains("services[Bad_Name].name: Invalid value: \"Bad_Name\""),
        "{}",
        combined(&out)
    );
}

// === run, reload, signals ===

#[test]
fn serves_a_cluster_ip_service_from_the_file() -> Result<()> {
    let backend = echo_backend("127.0.0.1:0");
    let admin = "127.0.50.1:10249";
    let text = base_toml(admin) + &service_toml("echo", "127.96.1.10", 8080, backend);
    let _proxy = Proxy::start(&text, admin)?;
    let mut s = TcpStream::connect("127.96.1.10:8080")?;
    s.write_all(b"hello")?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

fn reload_test(admin: &str, vip: &str, how: impl FnOnce(&Proxy, &str)) -> Result<()> {
    let a = answer_backend("127.0.0.1:0", "A");
    let b = answer_backend("127.0.0.1:0", "B");
    let front: SocketAddr = format!("{vip}:8080").parse()?;
    let proxy = Proxy::start(
        &(base_toml(admin) + &service_toml("web", vip, 8080, a)),
        admin,
    )?;
    assert_eq!(ask(front)?, "A");
    how(
        &proxy,
        &(base_toml(admin) + &service_toml("web", vip, 8080, b)),
    );
    assert!(
        eventually(Duration::from_secs(5), || ask(front)
            .map(|s| s == "B")
            .unwrap_or(false)),
        "the reload did not take effect"
    );
    Ok(())
}

#[test]
fn reloads_when_the_file_is_written_in_place() -> Result<()> {
    reload_test("127.0.50.2:10249", "127.96.2.10", |p, text| {
        write(&p.config, text)
    })
}

#[test]
fn reloads_when_the_file_is_replaced_by_a_rename() -> Result<()> {
    reload_test("127.0.50.3:10249", "127.96.3.10", |p, text| {
        let tmp = p.dir.path().join(".lb.toml.tmp");
        write(&tmp, text);
        std::fs::rename(&tmp, &p.config).unwrap();
    })
}

#[test]
fn reloads_on_sighup() -> Result<()> {
    // The file is changed through a hard link in another directory, which the
    // watcher does not see, so only SIGHUP can make the proxy notice.
    let other = tempfile::tempdir()?;
    let link = other.path().join("lb.toml");
    reload_test("127.0.50.4:10249", "127.96.4.10", |p, text| {
        std::fs::hard_link(&p.config, &link).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&link)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        drop(f);
        p.signal("HUP");
    })
}

#[test]
fn reloads_on_a_configmap_style_symlink_swap() -> Result<()> {
    let admin = "127.0.50.5:10249";
    let vip = "127.96.5.10";
    let a = answer_backend("127.0.0.1:0", "A");
    let b = answer_backend("127.0.0.1:0", "B");
    let front: SocketAddr = format!("{vip}:8080").parse()?;
    // Kubernetes mounts a ConfigMap as lb.toml -> ..data/lb.toml, ..data -> ..2024_1
    let dir = tempfile::tempdir()?;
    let v1 = dir.path().join("..v1");
    std::fs::create_dir(&v1)?;
    write(
        &v1.join("lb.toml"),
        &(base_toml(admin) + &service_toml("web", vip, 8080, a)),
    );
    std::os::unix::fs::symlink("..v1", dir.path().join("..data"))?;
    std::os::unix::fs::symlink("..data/lb.toml", dir.path().join("lb.toml"))?;
    let config = dir.path().join("lb.toml");
    let _proxy = Proxy::start_at(dir, config.clone(), admin)?;
    assert_eq!(ask(front)?, "A");
    let root = config.parent().unwrap();
    let v2 = root.join("..v2");
    std::fs::create_dir(&v2)?;
    write(
        &v2.join("lb.toml"),
        &(base_toml(admin) + &service_toml("web", vip, 8080, b)),
    );
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp"))?;
    std::fs::rename(root.join("..data_tmp"), root.join("..data"))?;
    assert!(eventually(Duration::from_secs(5), || ask(front)
        .map(|s| s == "B")
        .unwrap_or(false)));
    Ok(())
}

#[test]
fn an_invalid_reload_keeps_the_old_config_serving() -> Result<()> {
    let admin: SocketAddr = "127.0.50.6:10249".parse()?;
    let a = answer_backend("127.0.0.1:0", "A");
    let front: SocketAddr = "127.96.6.10:8080".parse()?;
    let proxy = Proxy::start(
        &(base_toml("127.0.50.6:10249") + &service_toml("web", "127.96.6.10", 8080, a)),
        "127.0.50.6:10249",
    )?;
    write(&proxy.config, "[[services]]\nname = \"Broken_Name\"\n");
    proxy.signal("HUP");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(ask(front)?, "A");
    assert_eq!(http_get(admin, "/healthz")?.0, 200);
    assert_eq!(http_get(admin, "/readyz")?.0, 200);
    Ok(())
}

#[test]
fn an_open_connection_survives_reloads() -> Result<()> {
    let admin = "127.0.50.7:10249";
    let backend = echo_backend("127.0.0.1:0");
    let other = answer_backend("127.0.0.1:0", "other");
    let proxy = Proxy::start(
        &(base_toml(admin) + &service_toml("echo", "127.96.7.10", 8080, backend)),
        admin,
    )?;
    let mut s = TcpStream::connect("127.96.7.10:8080")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    for round in 0..3 {
        // Add and remove another service around the open connection.
        let extra = if round % 2 == 0 {
            service_toml("other", "127.96.7.11", 8080, other)
        } else {
            String::new()
        };
        write(
            &proxy.config,
            &(base_toml(admin) + &service_toml("echo", "127.96.7.10", 8080, backend) + &extra),
        );
        proxy.signal("HUP");
        thread::sleep(Duration::from_millis(300));
        s.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
    }
    Ok(())
}

#[test]
fn sigterm_drains_open_connections_and_refuses_new_ones() -> Result<()> {
    let admin: SocketAddr = "127.0.50.8:10249".parse()?;
    let backend = echo_backend("127.0.0.1:0");
    let mut proxy = Proxy::start(
        &(base_toml("127.0.50.8:10249") + &service_toml("echo", "127.96.8.10", 8080, backend)),
        "127.0.50.8:10249",
    )?;
    let mut s = TcpStream::connect("127.96.8.10:8080")?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    proxy.signal("TERM");
    let start = Instant::now();
    assert!(
        eventually(Duration::from_millis(200), || TcpStream::connect(
            "127.96.8.10:8080"
        )
        .is_err()),
        "new connections still accepted {:?} after SIGTERM",
        start.elapsed()
    );
    assert_eq!(http_get(admin, "/healthz")?.0, 200);
    s.write_all(b"still")?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"still");
    assert_eq!(
        proxy.wait_exit(Duration::from_millis(300)),
        None,
        "exited while a connection was open"
    );
    drop(s);
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
    Ok(())
}

#[test]
fn a_second_sigterm_exits_at_once_with_an_error() -> Result<()> {
    let backend = echo_backend("127.0.0.1:0");
    let mut proxy = Proxy::start(
        &(base_toml("127.0.50.9:10249") + &service_toml("echo", "127.96.9.10", 8080, backend)),
        "127.0.50.9:10249",
    )?;
    let _s = TcpStream::connect("127.96.9.10:8080")?;
    thread::sleep(Duration::from_millis(100));
    proxy.signal("TERM");
    thread::sleep(Duration::from_millis(200));
    proxy.signal("TERM");
    let code = proxy.wait_exit(Duration::from_secs(1));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    Ok(())
}

#[test]
fn drain_timeout_bounds_the_wait() -> Result<()> {
    let backend = echo_backend("127.0.0.1:0");
    let text = base_toml("127.0.50.10:10249")
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"500ms\"")
        + &service_toml("echo", "127.96.10.10", 8080, backend);
    let mut proxy = Proxy::start(&text, "127.0.50.10:10249")?;
    let _s = TcpStream::connect("127.96.10.10:8080")?;
    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "exited before the drain timeout"
    );
    Ok(())
}

// === get ===

#[test]
fn get_prints_kubectl_style_tables_and_the_api_json() -> Result<()> {
    let admin = "127.0.50.11:10249";
    let backend = echo_backend("127.0.0.1:0");
    let _proxy = Proxy::start(
        &(base_toml(admin) + &service_toml("echo", "127.96.11.10", 8080, backend)),
        admin,
    )?;
    let out = Command::new(bin())
        .args(["get", "services", "--admin", admin])
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
    let table = String::from_utf8(out.stdout)?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert!(
        table.contains("echo") && table.contains("127.96.11.10") && table.contains("8080/TCP"),
        "{table}"
    );

    let out = Command::new(bin())
        .args(["get", "endpoints", "--admin", admin])
        .output()?;
    let table = String::from_utf8(out.stdout)?;
    assert!(table.contains(&backend.to_string()), "{table}");

    let out = Command::new(bin())
        .args(["get", "services", "-o", "json", "--admin", admin])
        .output()?;
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let (_, body) = http_get(admin.parse()?, "/api/v1/services")?;
    let api: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(printed, api);
    Ok(())
}

// === every validation rule, through `lb-proxy check` ===

/// Each case: a file, and the exact line `check` must print for it.
const RULES: &[(&str, &str, &str)] = &[
    (
        "service names are DNS-1035 labels",
        "[[services]]\nname = \"Nginx_svc\"\n[[services.ports]]\nport = 80\n",
        "services[Nginx_svc].name: Invalid value: \"Nginx_svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    ),
    (
        "port names are required when there are several ports",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nname = \"a\"\nport = 80\n[[services.ports]]\nport = 81\n",
        "services[web].ports[1].name: Required value",
    ),
    (
        "a (protocol, port) pair is used once",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nname = \"a\"\nport = 80\n[[services.ports]]\nname = \"b\"\nport = 80\n",
        "services[web].ports[1]: Duplicate value: \"80/TCP\"",
    ),
    (
        "a (protocol, node_port) pair is used once",
        "[[services]]\nname = \"web\"\ntype = \"NodePort\"\n[[services.ports]]\nname = \"a\"\nport = 80\nnode_port = 30001\n[[services.ports]]\nname = \"b\"\nport = 81\nnode_port = 30001\n",
        "services[web].ports[1].node_port: Duplicate value: 30001",
    ),
    (
        "a numeric target_port is a valid port number",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\ntarget_port = 0\n",
        "services[web].ports[0].target_port: Invalid value: 0: must be between 1 and 65535, inclusive",
    ),
    (
        "a named target_port is an IANA_SVC_NAME",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\ntarget_port = \"http-port-too-long-name\"\n",
        "services[web].ports[0].target_port: Invalid value: \"http-port-too-long-name\": must be no more than 15 characters",
    ),
    (
        "node_port only on NodePort and LoadBalancer",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\nnode_port = 30001\n",
        "services[web].ports[0].node_port: Forbidden: may not be used when `type` is 'ClusterIP'",
    ),
    (
        "node ports come from the node port range",
        "[[services]]\nname = \"nginx-service\"\ntype = \"NodePort\"\n[[services.ports]]\nport = 80\nnode_port = 80\n",
        "services[nginx-service].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    ),
    (
        "a node port is allocated once",
        "[[services]]\nname = \"a\"\ntype = \"NodePort\"\n[[services.ports]]\nport = 80\nnode_port = 30001\n[[services]]\nname = \"b\"\ntype = \"NodePort\"\n[[services.ports]]\nport = 80\nnode_port = 30001\n",
        "services[b].ports[0].node_port: Invalid value: 30001: provided port is already allocated",
    ),
    (
        "cluster IPs come from service_cidr",
        "[[services]]\nname = \"web\"\ncluster_ip = \"127.0.0.1\"\n[[services.ports]]\nport = 80\n",
        "services[web].cluster_ip: Invalid value: \"127.0.0.1\": the provided IP (127.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
    ),
    (
        "a cluster IP is allocated once",
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[[services]]\nname = \"a\"\ncluster_ip = \"127.96.0.10\"\n[[services.ports]]\nport = 80\n[[services]]\nname = \"b\"\ncluster_ip = \"127.96.0.10\"\n[[services.ports]]\nport = 80\n",
        "services[b].cluster_ip: Invalid value: \"127.96.0.10\": provided IP is already allocated",
    ),
    (
        "the ClientIP timeout is 1..86400 seconds",
        "[[services]]\nname = \"web\"\nsession_affinity = \"ClientIP\"\nsession_affinity_config = { client_ip = { timeout_seconds = 86401 } }\n[[services.ports]]\nport = 80\n",
        "services[web].session_affinity_config.client_ip.timeout_seconds: Invalid value: 86401: must be greater than 0 and less than 86400",
    ),
    (
        "session_affinity is None or ClientIP",
        "[[services]]\nname = \"web\"\nsession_affinity = \"Sticky\"\n[[services.ports]]\nport = 80\n",
        "services[web].session_affinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
    ),
    (
        "a port number is 1..65535",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 70000\n",
        "services[web].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    ),
    (
        "a name is used once per namespace and kind",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\n[[services]]\nname = \"web\"\n[[services.ports]]\nport = 81\n",
        "services[web].name: Duplicate value: \"web\"",
    ),
    (
        "durations are humantime strings",
        "[proxy]\ndrain_timeout = \"soon\"\n",
        "proxy.drain_timeout: Invalid value: \"soon\": must be a duration such as \"250ms\", \"30s\" or \"1h\" (expected number at 0)",
    ),
];

#[test]
fn check_prints_each_validation_rule_in_kubernetes_words_and_exits_1() {
    let mut failures = Vec::new();
    for (rule, file, line) in RULES {
        let out = check(file);
        let text = combined(&out);
        if out.status.code() != Some(1) || !text.lines().any(|l| l.starts_with(line)) {
            failures.push(format!(
                "{rule}: want {line:?}, exit 1; got exit {:?}:\n{text}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_rejects_unknown_keys() {
    let out = check("[[services]]\nname = \"web\"\nbogus = 1\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        combined(&out).contains("services[web].bogus: unknown field `bogus`"),
        "{}",
        combined(&out)
    );
}

// === endpoints and allocation, end to end ===

#[test]
fn a_selectorless_service_whose_port_names_do_not_match_has_no_endpoints() -> Result<()> {
    let admin = "127.0.50.12:10249";
    let backend = echo_backend("127.0.0.1:0");
    let matching = service_toml("good", "127.96.12.10", 8080, backend);
    let mismatched = service_toml("bad", "127.96.12.11", 8080, backend).replace(
        &format!("ports = [{{ name = \"tcp\", port = {} }}]", backend.port()),
        &format!(
            "ports = [{{ name = \"other\", port = {} }}]",
            backend.port()
        ),
    );
    let _proxy = Proxy::start(&(base_toml(admin) + &matching + &mismatched), admin)?;
    let mut s = TcpStream::connect("127.96.12.10:8080")?;
    s.write_all(b"ok")?;
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf)?;
    let err = TcpStream::connect("127.96.12.11:8080").expect_err("no endpoints: refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    Ok(())
}

fn api_services(admin: &str) -> Result<serde_json::Value> {
    let (_, body) = http_get(admin.parse()?, "/api/v1/services")?;
    Ok(serde_json::from_str(&body)?)
}

fn find_service<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn allocated_cluster_ips_and_node_ports_serve_and_survive_a_restart_with_a_state_file() -> Result<()>
{
    let admin = "127.0.50.13:10249";
    let backend = echo_backend("127.0.0.1:0");
    let node_port_service = |name: &str| {
        format!(
            r#"
[[services]]
name = "{name}"
type = "NodePort"
[[services.ports]]
name = "tcp"
port = 8080
target_port = {port}

[[endpoints]]
name = "{name}"
[[endpoints.subsets]]
addresses = [{{ ip = "127.0.0.1" }}]
ports = [{{ name = "tcp", port = {port} }}]
"#,
            port = backend.port()
        )
    };
    let text =
        base_toml(admin).replace("127.96.0.0/16", "127.98.13.0/24") + &node_port_service("web");
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("allocations.json");
    let config = dir.path().join("lb.toml");
    write(&config, &text);

    let start = |config: &Path| -> Result<Child> {
        let child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("--state-file")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if !eventually(Duration::from_secs(10), || {
            matches!(http_get(admin.parse().unwrap(), "/healthz"), Ok((200, _)))
        }) {
            bail!("not healthy");
        }
        Ok(child)
    };
    let mut first = start(&config)?;
    let svc = find_service(&api_services(admin)?, "web").clone();
    let ip = svc["cluster_ip"]
        .as_str()
        .context("cluster_ip")?
        .to_string();
    let node_port = svc["ports"][0]["node_port"].as_u64().context("node_port")?;
    assert!(ip.starts_with("127.98.13."), "{ip}");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    for addr in [format!("{ip}:8080"), format!("127.0.0.1:{node_port}")] {
        let mut s = TcpStream::connect(&addr).with_context(|| addr.clone())?;
        s.write_all(b"hi")?;
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf)?;
    }
    first.kill()?;
    first.wait()?;

    // A new service that sorts first must not take web's addresses after a restart.
    write(&config, &(text.clone() + &node_port_service("aaa")));
    let mut second = start(&config)?;
    let list = api_services(admin)?;
    let again = find_service(&list, "web");
    assert_eq!(again["cluster_ip"].as_str(), Some(ip.as_str()));
    assert_eq!(again["ports"][0]["node_port"].as_u64(), Some(node_port));
    assert_ne!(
        find_service(&list, "aaa")["cluster_ip"].as_str(),
        Some(ip.as_str())
    );
    second.kill()?;
    second.wait()?;
    Ok(())
}

#[test]
fn raises_the_soft_open_file_limit_to_the_hard_limit() -> Result<()> {
    let admin = "127.0.50.14:10249";
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("lb.toml");
    write(&config, &base_toml(admin));
    let script = format!(
        "ulimit -Sn 512 && exec {} --config {}",
        bin(),
        config.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let healthy = eventually(Duration::from_secs(10), || {
        matches!(http_get(admin.parse().unwrap(), "/healthz"), Ok((200, _)))
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))?;
    child.kill()?;
    child.wait()?;
    assert!(healthy);
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open files line")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "512", "{line}");
    Ok(())
}
