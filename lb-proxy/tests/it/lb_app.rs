//! LoadBalancer services end to end on loopback, from a config file through
//! the App: the LB address, node port and cluster IP all answer; source ranges
//! reset (TCP) or drop (UDP) clients outside them and count them; external IPs
//! listen; a service whose pool is exhausted is `<pending>` but still serves;
//! the health-check node port of a Local LoadBalancer answers; an address
//! outside every pool or a class that is not this node's leaves only its
//! service pending (`lb-proxy check` warns and passes) and a service
//! labelled for another proxy is not served; an App running every part leaves
//! no task or thread once shut down; the admin API and DNS answer while the
//! runtime the data plane runs on is blocked (they run on the App's ops
//! runtime). Each test has its own 127.x addresses
//! (127.0.NET.x, 127.97.NET.x), so they can run in parallel.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::support::app::TestApp;
use crate::support::bin::{check, combined, lb};
use crate::support::process::{self, lb_threads, threads};
use crate::support::*;

/// `[node]`, `[cluster]` and `[admin]` for a test whose addresses are
/// 127.0.NET.x (node address 127.0.NET.1) and cluster IPs 127.97.NET.x.
fn head(net: u8) -> String {
    format!(
        "[node]\nname = \"node-1\"\naddresses = [\"127.0.{net}.1\"]\n\
         [cluster]\nservice_cidr = \"127.97.{net}.0/24\"\nnode_port_range = \"1024-65535\"\n\
         [admin]\nlisten = \"127.0.{net}.1:0\"\n"
    )
}

/// `lb-proxy get services [ARGS] --admin ADDR`, as a user would type it (on
/// a blocking thread).
async fn get_services(admin: SocketAddr, args: &[&'static str]) -> String {
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let out = lb(["get", "services"]
            .iter()
            .chain(&args)
            .map(|a| a.to_string())
            .chain(["--admin".to_string(), admin.to_string()]));
        assert!(out.status.success(), "{}", combined(&out));
        String::from_utf8(out.stdout).expect("UTF-8")
    })
    .await
    .expect("join")
}

/// Connects from `src` and expects the connection to be closed without a
/// byte (the proxy resets clients outside the source ranges).
async fn refused_from(src: &str, addr: SocketAddr) -> bool {
    let Ok(mut stream) = connect_from(src, addr).await else {
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
    let backend = http_backend("127.0.124.1", "pong");
    let node_port = free_port("127.0.122.1");
    let text = format!(
        "{}[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.122.110-127.0.122.119\"]\n\
         [[services]]\nname = \"web\"\ntype = \"LoadBalancer\"\ncluster_ip = \"127.97.122.10\"\n\
         ports = [{{ port = 8080, node_port = {node_port} }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.1\" }}]\n\
         ports = [{{ port = {} }}]\n",
        head(122),
        backend.addr.port()
    );
    let app = TestApp::from_text(&text).await;
    for addr in [
        "127.0.122.110:8080".to_string(),
        format!("127.0.122.1:{node_port}"),
        "127.97.122.10:8080".to_string(),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(fetch_from("127.0.0.1", addr).await, "pong", "at {addr}");
    }
    let admin = app.admin();
    let (status, body) = app.get("/api/v1/services").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let web = &v["items"][0];
    assert_eq!(
        web["load_balancer_ingress"],
        serde_json::json!(["127.0.122.110"])
    );
    assert_eq!(web["ip_pool"], "lb-ip-pool");
    let table = get_services(admin, &[]).await;
    let row = table.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        row.contains("LoadBalancer") && row.contains("127.0.122.110"),
        "{table}"
    );
    let wide = get_services(admin, &["-o", "wide"]).await;
    assert!(wide.lines().next().unwrap().ends_with("IP-POOL"), "{wide}");
    let row = wide.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.ends_with("lb-ip-pool"), "{wide}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_admit_clients_inside_and_reset_clients_outside() {
    let backend = http_backend("127.0.124.2", "inside");
    let node_port = free_port("127.0.126.1");
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
    let app = TestApp::from_text(&text).await;
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
    let (_, metrics) = app.get("/metrics").await;
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
    let echo = udp_echo_backend("127.0.124.3");
    let echo_addr = echo.addr;
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
    let app = TestApp::from_text(&text).await;
    let lb: SocketAddr = "127.0.127.110:5353".parse().unwrap();
    let inside = udp_client("127.0.0.5").await;
    // A few tries: the first datagram may race the frontend's bind.
    let mut answer = None;
    for _ in 0..5 {
        answer = udp_ask_within(&inside, lb, b"hello", Duration::from_millis(300)).await;
        if answer.is_some() {
            break;
        }
    }
    assert_eq!(
        answer.map(|(bytes, _)| bytes).as_deref(),
        Some(&b"hello"[..])
    );
    let outside = udp_client("127.0.0.6").await;
    for _ in 0..3 {
        outside.send_to(b"hello", lb).await.unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), outside.recv_from(&mut buf))
            .await
            .is_err(),
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
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lb_udp_datagrams_total{")
                && l.contains("reason=\"source_range\"")
                && l.ends_with(" 3")),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_ips_listen_on_a_cluster_ip_service() {
    let backend = http_backend("127.0.124.4", "ext");
    let text = format!(
        "{}[[services]]\nname = \"web\"\nexternal_ips = [\"127.0.128.50\", \"127.0.128.51\"]\n\
         ports = [{{ port = 8080 }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.124.4\" }}]\n\
         ports = [{{ port = {} }}]\n",
        head(128),
        backend.addr.port()
    );
    let app = TestApp::from_text(&text).await;
    for addr in ["127.0.128.50:8080", "127.0.128.51:8080"] {
        assert_eq!(fetch_from("127.0.0.1", addr.parse().unwrap()).await, "ext");
    }
    let table = get_services(app.admin(), &[]).await;
    assert!(table.contains("127.0.128.50,127.0.128.51"), "{table}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_left_without_an_address_is_pending_but_serves_its_cluster_ip() {
    let backend = http_backend("127.0.124.5", "still");
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
    let app = TestApp::from_text(&text).await;
    assert_eq!(
        fetch_from("127.0.0.1", "127.0.129.110:8080".parse().unwrap()).await,
        "still"
    );
    assert_eq!(
        fetch_from("127.0.0.1", "127.97.129.11:8080".parse().unwrap()).await,
        "still",
        "the pending service serves its cluster IP"
    );
    let table = get_services(app.admin(), &[]).await;
    let row = table.lines().find(|l| l.starts_with("second ")).unwrap();
    assert!(row.contains("<pending>"), "{table}");
    let row = table.lines().find(|l| l.starts_with("first ")).unwrap();
    assert!(row.contains("127.0.129.110"), "{table}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_address_or_a_foreign_class_blocks_only_its_own_service_and_other_proxies_services_are_not_served(
) {
    let backend = http_backend("127.0.133.5", "here");
    let node_port = free_port("127.0.133.1");
    let endpoints = |name: &str| {
        format!(
            "[[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.133.5\" }}]\n\
             ports = [{{ port = {} }}]\n",
            backend.addr.port()
        )
    };
    let text = format!(
        "{}[[ip_pools]]\nname = \"one\"\naddresses = [\"127.0.133.110-127.0.133.110\"]\n\
         [[services]]\nname = \"outside\"\ntype = \"LoadBalancer\"\ncluster_ip = \"127.97.133.10\"\n\
         load_balancer_ip = \"127.0.99.1\"\nports = [{{ port = 8080, node_port = {node_port} }}]\n{}\
         [[services]]\nname = \"classy\"\ntype = \"LoadBalancer\"\ncluster_ip = \"127.97.133.11\"\n\
         load_balancer_class = \"example.com/other\"\nallocate_load_balancer_node_ports = false\n\
         ports = [{{ port = 8080 }}]\n{}\
         [[services]]\nname = \"mine\"\ntype = \"LoadBalancer\"\ncluster_ip = \"127.97.133.12\"\n\
         allocate_load_balancer_node_ports = false\nports = [{{ port = 8080 }}]\n{}\
         [[services]]\nname = \"theirs\"\ncluster_ip = \"127.97.133.13\"\n\
         labels = {{ \"service.kubernetes.io/service-proxy-name\" = \"other-proxy\" }}\n\
         ports = [{{ port = 8080 }}]\n{}",
        head(133),
        endpoints("outside"),
        endpoints("classy"),
        endpoints("mine"),
        endpoints("theirs"),
    );
    let app = TestApp::from_text(&text).await;
    for addr in [
        // The address outside the pools blocks nothing else: its cluster IP
        // and node port serve...
        "127.97.133.10:8080".to_string(),
        format!("127.0.133.1:{node_port}"),
        // ...as does the cluster IP of the service of another class...
        "127.97.133.11:8080".to_string(),
        // ...and the pool address goes to the service of our class.
        "127.0.133.110:8080".to_string(),
        "127.97.133.12:8080".to_string(),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(fetch_from("127.0.0.1", addr).await, "here", "at {addr}");
    }
    // Another proxy's service: no listener, not in the table.
    assert!(
        connect_from("127.0.0.1", "127.97.133.13:8080".parse().unwrap())
            .await
            .is_err(),
        "nothing listens on the cluster IP of another proxy's service"
    );
    let table = get_services(app.admin(), &[]).await;
    assert!(!table.lines().any(|l| l.starts_with("theirs ")), "{table}");
    for name in ["outside ", "classy "] {
        let row = table.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row.contains("<pending>"), "{table}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_load_balancer_answers_on_its_health_check_node_port() {
    let backend = http_backend("127.0.124.6", "local");
    let hc = free_port("127.0.130.1");
    let text = format!(
        "{}[[ip_pools]]\nname = \"p\"\naddresses = [\"127.0.130.110/32\"]\n\
         [[services]]\nname = \"web\"\ntype = \"LoadBalancer\"\nexternal_traffic_policy = \"Local\"\n\
         health_check_node_port = {hc}\nallocate_load_balancer_node_ports = false\nports = [{{ port = 8080 }}]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\n\
         addresses = [{{ ip = \"127.0.124.6\", node_name = \"node-1\" }}]\nports = [{{ port = {} }}]\n",
        head(130),
        backend.addr.port()
    );
    let app = TestApp::from_text(&text).await;
    let addr = SocketAddr::new(ip("127.0.130.1"), hc);
    // The health-check listener starts beside the App.
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(addr).is_ok()).await,
        "the health-check node port listens"
    );
    let got = http_get_async(addr, "/").await;
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
fn check_warns_of_a_load_balancer_ip_outside_every_pool_and_passes() {
    let out = check(
        "[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.122.110-127.0.122.119\"]\n\
         [[services]]\nname = \"web\"\nnamespace = \"shop\"\ntype = \"LoadBalancer\"\n\
         load_balancer_ip = \"127.0.99.1\"\nports = [{ port = 80 }]\n",
    );
    let text = combined(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // MetalLB's event, as `kubectl describe` shows it: the service is
    // created and stays `<pending>`.
    assert!(
        text.lines().any(|l| l
            == "warning: AllocationFailed Failed to allocate IP for \"shop/web\": \"127.0.99.1\" is not allowed in config"),
        "{text}"
    );
    assert!(text.contains("valid (1 services)"), "{text}");
}

// === lifecycle ===

/// Names of notify's file watcher threads now (`notify-rs inotify loop`,
/// cut to 15 bytes by the kernel).
fn watcher_threads() -> Vec<String> {
    threads()
        .into_iter()
        .filter(|n| n.starts_with("notify-rs"))
        .collect()
}

/// Every part an App can run, from one file: TCP and UDP services, a probed
/// pod, a Local LoadBalancer (its health-check node port), the DNS
/// responder, the admin API, and the file watcher; `extra` is appended.
fn every_part(dns: SocketAddr, hc: u16, web: SocketAddr, udp: SocketAddr, extra: &str) -> String {
    format!(
        r#"{head}
[dns]
listen = "{dns}"
[[ip_pools]]
name = "p"
addresses = ["127.0.131.110/32"]

[[pods]]
name = "web-1"
ip = "{web_ip}"
node = "node-1"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {web_port} }}]
[pods.readiness_probe]
tcp_socket = {{ port = "http" }}
period_seconds = 1

[[services]]
name = "web"
cluster_ip = "127.97.131.10"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 8080, target_port = "http" }}]

[[services]]
name = "local"
type = "LoadBalancer"
cluster_ip = "127.97.131.11"
external_traffic_policy = "Local"
health_check_node_port = {hc}
allocate_load_balancer_node_ports = false
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 8080, target_port = "http" }}]

[[services]]
name = "echo"
cluster_ip = "127.97.131.12"
ports = [{{ name = "udp", port = 5353, protocol = "UDP" }}]
[[endpoints]]
name = "echo"
[[endpoints.subsets]]
addresses = [{{ ip = "{udp_ip}" }}]
ports = [{{ name = "udp", port = {udp_port}, protocol = "UDP" }}]
{extra}"#,
        head = head(131),
        web_ip = web.ip(),
        web_port = web.port(),
        udp_ip = udp.ip(),
        udp_port = udp.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_leaves_no_task_or_thread_after_shutdown() {
    // Threads are process-wide: no other test starts an App meanwhile.
    let _alone = process::alone().await;
    assert!(
        eventually(WAIT, || lb_threads().is_empty()
            && watcher_threads().is_empty())
        .await,
        "threads of earlier tests: {:?}",
        threads()
    );
    let web = http_backend("127.0.124.7", "web");
    let udp = udp_echo_backend("127.0.124.8");
    let dns = SocketAddr::new(ip("127.0.131.53"), free_udp_port("127.0.131.53"));
    let hc = free_port("127.0.131.1");
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, every_part(dns, hc, web.addr, udp.addr, "")).unwrap();
    let app = lb_proxy::app::App::start(lb_proxy::app::AppOptions::new(path.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let watchers = watcher_threads();
    assert_eq!(watchers.len(), 1, "the file watcher runs: {:?}", threads());
    assert_eq!(
        lb_threads(),
        [lb_proxy::app::OPS_THREAD_NAME],
        "the ops runtime's thread runs (the App's only thread with this accept mode)"
    );

    // Traffic through every part: the probed pod once ready, UDP, the
    // health-check node port, DNS, the admin API.
    let vip: SocketAddr = "127.97.131.10:8080".parse().unwrap();
    assert!(
        eventually_async(WAIT, || async {
            try_fetch(vip).await.as_deref() == Ok("web")
        })
        .await,
        "the probed pod serves"
    );
    let client = udp_client("127.0.0.1").await;
    let echo: SocketAddr = "127.97.131.12:5353".parse().unwrap();
    assert_eq!(udp_ask(&client, echo, b"ping").await.0, "ping");
    let hc_addr = SocketAddr::new(ip("127.0.131.1"), hc);
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(hc_addr).is_ok()).await,
        "the health-check node port listens"
    );
    assert_eq!(http_get_async(hc_addr, "/").await.0, 200);
    let answer = crate::support::dns::query(
        dns,
        "web.default.svc.cluster.local.",
        hickory_proto::rr::RecordType::A,
    )
    .await;
    assert_eq!(crate::support::dns::ips(&answer), vec![ip("127.97.131.10")]);
    let admin = app.admin_addr().expect("the admin API");
    assert_eq!(http_get_async(admin, "/metrics").await.0, 200);

    // One reload: a service more.
    let more = "[[services]]\nname = \"more\"\ncluster_ip = \"127.97.131.13\"\n\
                ports = [{ port = 8081 }]\n";
    std::fs::write(&path, every_part(dns, hc, web.addr, udp.addr, more)).unwrap();
    assert!(app.reload(true).await, "the rewritten file applies");

    tokio::time::timeout(WAIT, app.shutdown())
        .await
        .expect("shutdown within the bound");
    drop(app);
    assert_eq!(lb_threads(), Vec::<String>::new());
    // notify's thread ends shortly after its watch is dropped.
    assert!(
        eventually(WAIT, || watcher_threads().is_empty()).await,
        "the file watcher's thread is left: {:?}",
        threads()
    );
    // The probe's and the traffic's connections end at the backends too;
    // then the runtime holds what it held before the App started.
    assert!(
        eventually(WAIT, || metrics.num_alive_tasks() == before).await,
        "{} tasks alive, {before} before the start",
        metrics.num_alive_tasks()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_admin_api_and_dns_answer_while_the_data_planes_runtime_is_blocked() {
    // The App's data and control planes run on this test's runtime, whose
    // one thread the test holds below; the operator surface runs on the
    // App's ops runtime and must not need it.
    let dns = SocketAddr::new(ip("127.0.160.53"), free_udp_port("127.0.160.53"));
    let app = TestApp::from_text(&format!(
        "{}[dns]\nlisten = \"{dns}\"\n\
         [[services]]\nname = \"web\"\ncluster_ip = \"127.97.160.10\"\nports = [{{ port = 8080 }}]\n",
        head(160)
    ))
    .await;
    let admin = app.admin();
    let (tx, rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let ask = |path| http_get(admin, path).map(|(status, body)| (status, body.len()));
        let health = http_get(admin, "/healthz");
        let metrics = ask("/metrics");
        let services = ask("/api/v1/services");
        let resolved = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| {
                rt.block_on(async {
                    let answer = crate::support::dns::query(
                        dns,
                        "web.default.svc.cluster.local.",
                        hickory_proto::rr::RecordType::A,
                    )
                    .await;
                    crate::support::dns::ips(&answer)
                })
            });
        let _ = tx.send((health, metrics, services, resolved));
    });
    // Blocks the data plane's runtime (its only thread) until the answers
    // come, or for WAIT.
    let answered = rx.recv_timeout(WAIT);
    let (health, metrics, services, resolved) =
        answered.expect("the admin API and DNS answer while the data plane's runtime is blocked");
    client.join().expect("the client ends");
    let (status, body) = health.expect("GET /healthz");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, len) = metrics.expect("GET /metrics");
    assert!(status == 200 && len > 0, "/metrics: {status}, {len} bytes");
    let (status, len) = services.expect("GET /api/v1/services");
    assert!(
        status == 200 && len > 0,
        "/api/v1/services: {status}, {len} bytes"
    );
    assert_eq!(resolved.expect("a runtime"), vec![ip("127.97.160.10")]);
    app.shutdown().await;
}
