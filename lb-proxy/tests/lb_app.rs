//! LoadBalancer services end to end on loopback, from a config file through
//! the App: the LB address, node port and cluster IP all answer; source ranges
//! reset (TCP) or drop (UDP) clients outside them and count them; external IPs
//! listen; a service whose pool is exhausted is `<pending>` but still serves;
//! the health-check node port of a Local LoadBalancer answers; `lb-proxy check`
//! refuses an address outside every pool. Each test has its own 127.x
//! addresses, so they can run in parallel.
#![cfg(feature = "cli")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lb_proxy::app::{App, AppOptions};
use support::{eventually, fetch_from, http_backend, ip, WAIT};
use tokio::io::AsyncReadExt;

/// A port on `at` that was free a moment ago (used as a node port, with a
/// node port range wide enough to hold it).
fn free_port(at: &str) -> u16 {
    std::net::TcpListener::bind((ip(at), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &Path, text: &str) -> App {
    let path = dir.join("lb.toml");
    std::fs::write(&path, text).unwrap();
    App::start(AppOptions::new(path))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `[node]`, `[cluster]` and `[admin]` for a test whose addresses are
/// 127.0.NET.x (node address 127.0.NET.1) and cluster IPs 127.97.NET.x.
fn head(net: u8) -> String {
    format!(
        "[node]\nname = \"node-1\"\naddresses = [\"127.0.{net}.1\"]\n\
         [cluster]\nservice_cidr = \"127.97.{net}.0/24\"\nnode_port_range = \"1024-65535\"\n\
         [admin]\nlisten = \"127.0.{net}.1:0\"\n"
    )
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("admin connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `lb-proxy get services --admin ADDR`, as a user would type it.
fn get_services(admin: SocketAddr) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["get", "services", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Connects from `src` and expects the connection to be closed without a
/// byte (the proxy resets clients outside the source ranges).
async fn refused_from(src: &str, addr: SocketAddr) -> bool {
    let Ok(mut stream) = support::connect_from(src, addr).await else {
        return true;
    };
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("neither answered nor closed within the bound"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_service_answers_at_its_lb_address_node_port_and_cluster_ip() {
    let backend = http_backend("127.0.124.1", "pong").await;
    let node_port = free_port("127.0.122.1");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.122.110-127.0.122.119\"]\n\
         [[services]]\nname = \"web\"\ntype = \"LoadBalancer\"\ncluster_ip = \"127.97.122.10\"\n\
         ports = [{{ port = 8080, node_port = {node_port} }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.1\" }}]\n\
         ports = [{{ port = {} }}]\n",
        head(122),
        backend.addr.port()
    );
    let app = start(dir.path(), &text).await;
    for addr in [
        "127.0.122.110:8080".to_string(),
        format!("127.0.122.1:{node_port}"),
        "127.97.122.10:8080".to_string(),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(fetch_from("127.0.0.1", addr).await, "pong", "at {addr}");
    }
    let admin = app.admin_addr().unwrap();
    let (status, body) = http_get(admin, "/api/v1/services");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let web = &v["items"][0];
    assert_eq!(
        web["load_balancer_ingress"],
        serde_json::json!(["127.0.122.110"])
    );
    assert_eq!(web["ip_pool"], "lb-ip-pool");
    let table = tokio::task::spawn_blocking(move || get_services(admin))
        .await
        .unwrap();
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        row.contains("LoadBalancer") && row.contains("127.0.122.110"),
        "{table}"
    );
    let wide = tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args([
                "get",
                "services",
                "-o",
                "wide",
                "--admin",
                &admin.to_string(),
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap();
    assert!(wide.lines().next().unwrap().ends_with("IP-POOL"), "{wide}");
    let row = wide.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.ends_with("lb-ip-pool"), "{wide}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_admit_clients_inside_and_reset_clients_outside() {
    let backend = http_backend("127.0.124.2", "inside").await;
    let node_port = free_port("127.0.126.1");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[ip_pools]]\nname = \"p\"\naddresses = [\"127.0.126.110/31\"]\n\
         [[services]]\nname = \"web\"\ntype = \"LoadBalancer\"\ncluster_ip = \"127.97.126.10\"\n\
         load_balancer_source_ranges = [\"127.0.0.5/32\"]\n\
         ports = [{{ port = 8080, node_port = {node_port} }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.2\" }}]\n\
         ports = [{{ port = {} }}]\n",
        head(126),
        backend.addr.port()
    );
    let app = start(dir.path(), &text).await;
    let lb: SocketAddr = "127.0.126.110:8080".parse().unwrap();
    assert_eq!(fetch_from("127.0.0.5", lb).await, "inside");
    let before = backend.accepted();
    assert!(refused_from("127.0.0.6", lb).await);
    assert!(refused_from("127.0.0.6", lb).await);
    assert_eq!(backend.accepted(), before, "no endpoint was reached");
    // Cluster IP and node port traffic is not filtered.
    assert_eq!(
        fetch_from("127.0.0.6", "127.97.126.10:8080".parse().unwrap()).await,
        "inside"
    );
    let np = SocketAddr::new(ip("127.0.126.1"), node_port);
    assert_eq!(fetch_from("127.0.0.6", np).await, "inside");
    let (_, metrics) = http_get(app.admin_addr().unwrap(), "/metrics");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("lb_rejected_connections_total{")
                && l.contains("service=\"web\"")
                && l.contains("reason=\"source_range\"")
        })
        .unwrap_or_else(|| panic!("no source_range series in\n{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_from_outside_the_source_ranges_are_dropped_and_counted() {
    // A UDP echo endpoint.
    let echo = UdpSocket::bind("127.0.124.3:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    echo.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        // Bounded by the stop flag and by a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[ip_pools]]\nname = \"p\"\naddresses = [\"127.0.127.110\"]\n\
         [[services]]\nname = \"dns\"\ntype = \"LoadBalancer\"\nallocate_load_balancer_node_ports = false\n\
         load_balancer_source_ranges = [\"127.0.0.5/32\"]\n\
         ports = [{{ port = 5353, protocol = \"UDP\" }}]\n\
         [[endpoints]]\nname = \"dns\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.3\" }}]\n\
         ports = [{{ port = {}, protocol = \"UDP\" }}]\n",
        head(127),
        echo_addr.port()
    );
    let app = start(dir.path(), &text).await;
    let lb: SocketAddr = "127.0.127.110:5353".parse().unwrap();
    let ask = move |src: &str| {
        let c = UdpSocket::bind((ip(src), 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // A few tries: the first datagram may race the frontend's bind.
        for _ in 0..5 {
            c.send_to(b"hello", lb).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((n, _)) = c.recv_from(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    };
    let inside = tokio::task::spawn_blocking(move || ask("127.0.0.5"));
    assert_eq!(inside.await.unwrap().as_deref(), Some(&b"hello"[..]));
    let outside = tokio::task::spawn_blocking(move || {
        let c = UdpSocket::bind((ip("127.0.0.6"), 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        for _ in 0..3 {
            c.send_to(b"hello", lb).unwrap();
        }
        let mut buf = [0u8; 64];
        c.recv_from(&mut buf).ok()
    });
    assert!(
        outside.await.unwrap().is_none(),
        "no answer outside the ranges"
    );
    let snapshot = app.dataplane().table().load();
    let port = snapshot
        .frontend(lb, lb_core::Protocol::Udp)
        .unwrap()
        .port
        .clone();
    let dropped = || {
        port.stats()
            .rejected_source_range
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(eventually(WAIT, || dropped() == 3).await, "{}", dropped());
    let (_, metrics) = http_get(app.admin_addr().unwrap(), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lb_udp_datagrams_total{")
                && l.contains("reason=\"source_range\"")
                && l.ends_with(" 3")),
        "{metrics}"
    );
    app.shutdown().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo_thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ips_listen_on_a_cluster_ip_service() {
    let backend = http_backend("127.0.124.4", "ext").await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[services]]\nname = \"web\"\nexternal_ips = [\"127.0.128.50\", \"127.0.128.51\"]\n\
         ports = [{{ port = 8080 }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.4\" }}]\n\
         ports = [{{ port = {} }}]\n",
        head(128),
        backend.addr.port()
    );
    let app = start(dir.path(), &text).await;
    for addr in ["127.0.128.50:8080", "127.0.128.51:8080"] {
        assert_eq!(fetch_from("127.0.0.1", addr.parse().unwrap()).await, "ext");
    }
    let table = {
        let admin = app.admin_addr().unwrap();
        tokio::task::spawn_blocking(move || get_services(admin))
            .await
            .unwrap()
    };
    assert!(table.contains("127.0.128.50,127.0.128.51"), "{table}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_left_without_an_address_is_pending_but_serves_its_cluster_ip() {
    let backend = http_backend("127.0.124.5", "still").await;
    let dir = tempfile::tempdir().unwrap();
    let service = |name: &str, cip: &str| {
        format!(
            "[[services]]\nname = \"{name}\"\ntype = \"LoadBalancer\"\ncluster_ip = \"{cip}\"\n\
             allocate_load_balancer_node_ports = false\nports = [{{ port = 8080 }}]\n\
             [[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.5\" }}]\n\
             ports = [{{ port = {} }}]\n",
            backend.addr.port()
        )
    };
    let text = format!(
        "{}[[ip_pools]]\nname = \"tiny\"\naddresses = [\"127.0.129.110-127.0.129.110\"]\n{}{}",
        head(129),
        service("first", "127.97.129.10"),
        service("second", "127.97.129.11"),
    );
    let app = start(dir.path(), &text).await;
    assert_eq!(
        fetch_from("127.0.0.1", "127.0.129.110:8080".parse().unwrap()).await,
        "still"
    );
    assert_eq!(
        fetch_from("127.0.0.1", "127.97.129.11:8080".parse().unwrap()).await,
        "still",
        "the pending service serves its cluster IP"
    );
    let admin = app.admin_addr().unwrap();
    let table = tokio::task::spawn_blocking(move || get_services(admin))
        .await
        .unwrap();
    let row = table.lines().find(|l| l.starts_with("second ")).unwrap();
    assert!(row.contains("<pending>"), "{table}");
    let row = table.lines().find(|l| l.starts_with("first ")).unwrap();
    assert!(row.contains("127.0.129.110"), "{table}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_load_balancer_answers_on_its_health_check_node_port() {
    let backend = http_backend("127.0.124.6", "local").await;
    let hc = free_port("127.0.130.1");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[[ip_pools]]\nname = \"p\"\naddresses = [\"127.0.130.110/32\"]\n\
         [[services]]\nname = \"web\"\ntype = \"LoadBalancer\"\nexternal_traffic_policy = \"Local\"\n\
         health_check_node_port = {hc}\nallocate_load_balancer_node_ports = false\nports = [{{ port = 8080 }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\n\
         addresses = [{{ ip = \"127.0.124.6\", node_name = \"node-1\" }}]\nports = [{{ port = {} }}]\n",
        head(130),
        backend.addr.port()
    );
    let app = start(dir.path(), &text).await;
    let addr = SocketAddr::new(ip("127.0.130.1"), hc);
    let got = tokio::task::spawn_blocking(move || {
        // Bounded retries while the health-check listener starts.
        for _ in 0..50 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Some(http_get(addr, "/"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap()
    .expect("the health-check node port listens");
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(
        got.1,
        "{\"service\":{\"namespace\":\"default\",\"name\":\"web\"},\"localEndpoints\":1}"
    );
    assert_eq!(
        fetch_from("127.0.0.1", "127.0.130.110:8080".parse().unwrap()).await,
        "local"
    );
    app.shutdown().await;
}

#[test]
fn check_rejects_a_load_balancer_ip_outside_every_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.122.110-127.0.122.119\"]\n\
         [[services]]\nname = \"web\"\nnamespace = \"shop\"\ntype = \"LoadBalancer\"\n\
         load_balancer_ip = \"127.0.99.1\"\nports = [{ port = 80 }]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.lines().any(|l| l
            == "services[shop/web].load_balancer_ip: Invalid value: \"127.0.99.1\": not in any ip_pool"),
        "{text}"
    );
}
