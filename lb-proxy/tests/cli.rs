//! The `lb-proxy` binary as an operator meets it: `check`, `run` with reloads
//! and signals, `get`. Each test uses its own 127.x addresses so tests can run
//! in parallel.

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
